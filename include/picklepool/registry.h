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

/* Registers fn as module.name (both strings copied).  Registering an existing
 * name replaces it.  Returns PK_OK, PK_EINVAL (empty name or NULL fn),
 * PK_ELIMIT (module or name longer than 255 bytes) or PK_ENOMEM. */
PK_API pk_err_t pool_register(const char *module, const char *name,
                              pool_fn_t fn, void *udata);

/* Looks module.name up.  Returns the function and sets *udata, or NULL. */
PK_API pool_fn_t pool_lookup(const char *module, const char *name,
                             void **udata);

/* The symbol a plugin exports: it registers its functions with
 * pool_register() and returns PK_OK (or an error code, with err filled). */
#define POOL_PLUGIN_INIT_SYMBOL "picklepool_plugin_init"
typedef pk_err_t (*pool_plugin_init_t)(pk_error_t *err);

/* Loads a plugin .so (dlopen with RTLD_NOW | RTLD_LOCAL) and runs its init.
 * Loading the same path twice is a no-op.  The plugin stays loaded for the
 * life of the process.  Returns PK_OK, PK_EIO (dlopen failed: message has
 * dlerror()), PK_ENOFUNC (no init symbol) or what the init returned. */
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
