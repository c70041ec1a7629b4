/*
 * picklepool/registry.h - native functions that workers can call, and plugins.
 *
 * A function is named by (module, name), exactly as a pickle names a global, so
 * a Python caller refers to it with an ordinary pickled global and a C caller
 * with two strings.  Functions registered in the process before the first pool
 * is created reach forked workers by inheritance; functions registered later,
 * and plugins loaded later, are forwarded to the fork server so that workers
 * forked afterwards see them too.  Plugins (a .so exporting
 * `picklepool_plugin_init`) are how exec'd and remote workers and the Python
 * front-end reach native kernels.
 *
 * Thread-safety: registration and lookup are serialised by an internal lock;
 * register before submitting work that uses the function.  Fork-safe: the
 * registry is plain memory that children inherit.
 */
#ifndef PICKLEPOOL_REGISTRY_H
#define PICKLEPOOL_REGISTRY_H

#include "error.h"
#include "export.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a native function receives.  The arguments belong to the task's doc
 * and are valid during the call only; build the result in `doc` (the result
 * doc, owned by the runtime).  On failure return a non-PK_OK code (PK_EFUNC
 * for "the function failed", PK_ETYPE for a bad argument) and describe it in
 * `err` with pk_error-style text such as "ValueError: expected float32". */
typedef struct pool_call {
    pk_doc_t *doc;            /* where to allocate the result */
    const pk_value_t *args;   /* PK_TUPLE of positional arguments */
    const pk_value_t *kwargs; /* PK_DICT of keyword arguments, or NULL */
    void *udata;              /* as given to pool_register */
    pk_error_t *err;          /* fill on failure (never NULL) */
} pool_call_t;

/* A native function.  Returns PK_OK and sets *result (a value in call->doc, or
 * pk_none()), or an error code with call->err filled. */
typedef pk_err_t (*pool_fn_t)(pool_call_t *call, pk_value_t **result);

/* ---- helpers for kernels ------------------------------------------------
 * Reading arguments: pk_item(call->args, i), then pk_as_int, pk_as_double,
 * pk_as_str (str or bytes) from value.h; naming a bad argument's type:
 * pk_value_type_name. */

/* Fails the call: fills call->err with `code` and the printf-formatted
 * message, and returns `code`, so that a kernel writes
 *   return pool_fail(call, PK_ETYPE, "TypeError: f() takes a str, got %s",
 *                    pk_value_type_name(v));
 * Start the message with a Python exception class name and ": " (TypeError,
 * ValueError...): Python callers and `picklepool map` raise that class. */
PK_API pk_err_t pool_fail(pool_call_t *call, pk_err_t code, const char *fmt,
                          ...) __attribute__((format(printf, 3, 4)));

/* Checks that the call has exactly `n` positional and no keyword arguments;
 * otherwise fails it with PK_ETYPE and Python's message ("TypeError: f()
 * takes exactly 1 argument (2 given)", `fname` naming the function) and
 * returns that. */
PK_API pk_err_t pool_want_args(pool_call_t *call, const char *fname, size_t n);

/* Registers fn as module.name (both strings copied).  Registering an existing
 * name replaces it.  Returns PK_OK, PK_EINVAL (empty name or NULL fn),
 * PK_ELIMIT (module or name longer than 255 bytes) or PK_ENOMEM. */
PK_API pk_err_t pool_register(const char *module, const char *name,
                              pool_fn_t fn, void *udata);

/* One function of a table for pool_register_all. */
typedef struct pool_fn_def {
    const char *name;
    pool_fn_t fn;
    void *udata;
} pool_fn_def_t;

/* Registers defs[0..n) as module.<name>, in order, as pool_register does
 * (a plugin's init in one call).  Returns PK_OK, or the first failure with
 * err (may be NULL) naming the function ("cannot register
 * examples.square: ..."); functions registered before it stay. */
PK_API pk_err_t pool_register_all(const char *module, const pool_fn_def_t *defs,
                                  size_t n, pk_error_t *err);

/* Looks module.name up.  Returns the function and sets *udata, or NULL. */
PK_API pool_fn_t pool_lookup(const char *module, const char *name,
                             void **udata);

/* The symbol a plugin exports: it registers its functions with
 * pool_register() and returns PK_OK (or an error code, with err filled). */
#define POOL_PLUGIN_INIT_SYMBOL "picklepool_plugin_init"
typedef pk_err_t (*pool_plugin_init_t)(pk_error_t *err);

/* Optional: a plugin may also export a NULL-terminated table of one line per
 * function, "NAME(ARGS) -> RESULT  what it does", which `picklepool map
 * --list` prints. */
#define POOL_PLUGIN_DOC_SYMBOL "picklepool_plugin_doc"

/* Finds the plugin called `name` ("examples"): the first readable NAME.so in
 *   1. each directory of $PICKLEPOOL_PLUGIN_PATH (colon-separated),
 *   2. <directory of libpicklepool.so>/picklepool/plugins, where
 *      `make install` puts them (PREFIX/lib/picklepool/plugins), and
 *      <directory of libpicklepool.so>/plugins (the build tree),
 *   3. <directory of the program>/../lib/picklepool/plugins (an installed
 *      program linked statically), and <directory of the program>/plugins
 *      (the build tree: build/plugins beside build/picklepool).
 * A name with a slash is a path, taken as it is.  Writes the path into
 * path[0..size).  Returns PK_OK, PK_EINVAL, PK_ELIMIT (path too long) or
 * PK_EIO with a message naming every directory looked in. */
PK_API pk_err_t pool_plugin_find(const char *name, char *path, size_t size,
                                 pk_error_t *err);

/* Loads a plugin .so (dlopen with RTLD_NOW | RTLD_LOCAL) and runs its init.
 * `path` is a file path (with a slash), a plain plugin name ("examples",
 * found by pool_plugin_find), or a library file name ("libfoo.so", searched
 * by dlopen).  Loading the same file twice is a no-op.  The plugin stays
 * loaded for the life of the process.  Returns PK_OK, PK_EIO (not found, or
 * dlopen failed: message has dlerror()), PK_ENOFUNC (no init symbol) or
 * what the init returned. */
PK_API pk_err_t pool_plugin_load(const char *path, pk_error_t *err);

/* Calls module.name in the current process (what a worker does), for tests
 * and for running a map serially.  Returns PK_ENOFUNC with a message naming
 * the function when it is not registered, else what the function returns. */
PK_API pk_err_t pool_call_local(const char *module, const char *name,
                                pk_doc_t *doc, const pk_value_t *args,
                                const pk_value_t *kwargs, pk_value_t **result,
                                pk_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_REGISTRY_H */
