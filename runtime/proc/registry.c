/*
 * registry.c - the process-wide table of native functions, and plugins.
 *
 * Functions live in an open-addressing hash table keyed by "module\0name"
 * (a NUL cannot occur in either part, so the key is unambiguous), grown at
 * 3/4 load.  Entries are never removed, only replaced.  The table, its keys
 * and the plugin list are process-lifetime state allocated with libc malloc,
 * not the pk_set_allocator() hook: they outlive any allocator a program or a
 * test installs and later removes.
 *
 * Locks: `reg_lock` guards the table and the listener and is never held while
 * calling out (functions, listeners and plugin inits run unlocked), so a
 * function may register others.  `plugin_lock` serialises plugin loading
 * (dlopen + init, which itself takes reg_lock through pool_register) so that
 * one path is initialised once; lock order is plugin_lock -> reg_lock.
 *
 * Fork: a pthread_atfork handler takes reg_lock around fork(), so a child
 * forked while another thread is registering gets a consistent table and an
 * unlocked mutex.  plugin_lock is held across dlopen and foreign init code
 * (which may itself fork), so the child instead re-initialises it: a child
 * forked during another thread's plugin load sees the plugin list as it was
 * before that load.  The fork server is forked single-threaded anyway.
 */
#define _GNU_SOURCE
#include "proc/registry_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"

typedef struct entry {
    char *key;     /* "module\0name\0", NULL for an empty slot */
    size_t keylen; /* bytes up to and including the NUL after name */
    uint64_t hash;
    pool_fn_t fn;
    void *udata;
    uint64_t gen; /* registry generation of its last registration */
} entry_t;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t plugin_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static entry_t *table; /* cap slots, cap a power of two (or 0) */
static size_t cap, count;
static uint64_t generation; /* registrations so far */
static pool__registry_listener_t listener;

static const char *plugin_paths[POOL__MAX_PLUGINS];
static void *plugin_handles[POOL__MAX_PLUGINS];
static size_t nplugins;

/* The plugin whose init is running in this thread (for the listener). */
static __thread const char *loading_plugin;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
}
static void atfork_parent(void)
{
    pthread_mutex_unlock(&reg_lock);
}
static void atfork_child(void)
{
    pthread_mutex_unlock(&reg_lock);
    pthread_mutex_init(&plugin_lock, NULL);
}
static void atfork_install(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void reg_lock_acquire(void)
{
    pthread_once(&atfork_once, atfork_install);
    pthread_mutex_lock(&reg_lock);
}

static void plugin_lock_acquire(void)
{
    pthread_once(&atfork_once, atfork_install);
    pthread_mutex_lock(&plugin_lock);
}

/* FNV-1a over the whole key, NULs included. */
static uint64_t key_hash(const char *key, size_t len)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* Builds "module\0name\0" in buf (or a malloc'd block when it does not fit;
 * *heap then holds it). */
static char *key_make(const char *module, const char *name, char *buf,
                      size_t size, size_t *len, char **heap)
{
    size_t ml = strlen(module), nl = strlen(name);
    char *k = buf;

    *heap = NULL;
    *len = ml + 1 + nl + 1;
    if (*len > size) {
        if (!(k = *heap = malloc(*len)))
            return NULL;
    }
    memcpy(k, module, ml + 1);
    memcpy(k + ml + 1, name, nl + 1);
    return k;
}

/* Slot for key: the entry holding it, or the empty slot where it belongs.
 * Requires cap > count. */
static entry_t *slot_find(entry_t *tab, size_t tcap, const char *key,
                          size_t len, uint64_t h)
{
    for (size_t i = (size_t)h & (tcap - 1);; i = (i + 1) & (tcap - 1)) {
        entry_t *e = &tab[i];
        if (!e->key ||
            (e->hash == h && e->keylen == len && memcmp(e->key, key, len) == 0))
            return e;
    }
}

static int table_grow(void)
{
    size_t ncap = cap ? cap * 2 : 64;
    entry_t *ntab = calloc(ncap, sizeof *ntab);

    if (!ntab)
        return -1;
    for (size_t i = 0; i < cap; i++)
        if (table[i].key)
            *slot_find(ntab, ncap, table[i].key, table[i].keylen,
                       table[i].hash) = table[i];
    free(table);
    table = ntab;
    cap = ncap;
    return 0;
}

pk_err_t pool_register(const char *module, const char *name, pool_fn_t fn,
                       void *udata)
{
    char buf[256], *heap, *key;
    size_t len;
    pool__registry_listener_t notify;

    if (!module || !name || !*module || !*name || !fn)
        return PK_EINVAL;
    /* Names must fit the fork server's forwarding message, or workers
     * forked later would silently lack the function. */
    if (strlen(module) > POOL__NAME_MAX || strlen(name) > POOL__NAME_MAX)
        return PK_ELIMIT;
    if (!(key = key_make(module, name, buf, sizeof buf, &len, &heap)))
        return PK_ENOMEM;
    uint64_t h = key_hash(key, len);

    reg_lock_acquire();
    if ((count + 1) * 4 > cap * 3 && table_grow() < 0) {
        pthread_mutex_unlock(&reg_lock);
        free(heap);
        return PK_ENOMEM;
    }
    entry_t *e = slot_find(table, cap, key, len, h);
    if (!e->key) {
        char *owned = heap ? heap : malloc(len);
        if (!owned) {
            pthread_mutex_unlock(&reg_lock);
            return PK_ENOMEM;
        }
        if (!heap)
            memcpy(owned, key, len);
        heap = NULL;
        e->key = owned;
        e->keylen = len;
        e->hash = h;
        count++;
    }
    e->fn = fn;
    e->udata = udata;
    e->gen = ++generation;
    notify = listener;
    pthread_mutex_unlock(&reg_lock);
    free(heap);

    if (notify)
        notify(module, name, fn, udata, loading_plugin);
    return PK_OK;
}

pk_err_t pool_register_all(const char *module, const pool_fn_def_t *defs,
                           size_t n, pk_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        pk_err_t rc =
            pool_register(module, defs[i].name, defs[i].fn, defs[i].udata);
        if (rc != PK_OK)
            return pk__err(err, rc, "cannot register %s.%s: %s",
                           module ? module : "(null)",
                           defs[i].name ? defs[i].name : "(null)",
                           pk_strerror(rc));
    }
    return PK_OK;
}

pool_fn_t pool_lookup(const char *module, const char *name, void **udata)
{
    return pool__registry_lookup(module, name, udata, NULL);
}

pool_fn_t pool__registry_lookup(const char *module, const char *name,
                                void **udata, uint64_t *gen)
{
    char buf[256], *heap, *key;
    size_t len;
    pool_fn_t fn = NULL;

    if (udata)
        *udata = NULL;
    if (gen)
        *gen = 0;
    if (!module || !name)
        return NULL;
    if (!(key = key_make(module, name, buf, sizeof buf, &len, &heap)))
        return NULL;
    uint64_t h = key_hash(key, len);

    reg_lock_acquire();
    if (cap) {
        entry_t *e = slot_find(table, cap, key, len, h);
        if (e->key) {
            fn = e->fn;
            if (udata)
                *udata = e->udata;
            if (gen)
                *gen = e->gen;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    free(heap);
    return fn;
}

uint64_t pool__registry_generation(void)
{
    uint64_t g;

    reg_lock_acquire();
    g = generation;
    pthread_mutex_unlock(&reg_lock);
    return g;
}

void pool__registry_set_listener(pool__registry_listener_t fn)
{
    reg_lock_acquire();
    listener = fn;
    pthread_mutex_unlock(&reg_lock);
}

size_t pool__registry_plugins(const char ***paths)
{
    size_t n;

    reg_lock_acquire();
    n = nplugins;
    pthread_mutex_unlock(&reg_lock);
    if (paths)
        *paths = plugin_paths;
    return n;
}

/* ---- plugins ------------------------------------------------------------- */

static int plugin_known(const char *path, void *handle)
{
    for (size_t i = 0; i < nplugins; i++)
        if ((path && strcmp(plugin_paths[i], path) == 0) ||
            (handle && plugin_handles[i] == handle))
            return 1;
    return 0;
}

/* Plugins are built without linking libpicklepool: they resolve its API in
 * the global scope.  A program linked with it has it there; one that loaded
 * it with dlopen(RTLD_LOCAL) (Python's ctypes does) does not, so promote
 * the library to the global scope once before the first plugin (called
 * with plugin_lock held). */
static void promote_self(void)
{
    static int done;
    Dl_info info;
    if (done)
        return;
    done = 1;
    if (dladdr((void *)promote_self, &info) == 0 || info.dli_fname == NULL)
        return;
    void *self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    if (self != NULL)
        dlclose(self); /* the promotion stays; drop the extra reference */
}

/* Appends base + suffix to the search list (resolved when it exists),
 * unless it is too long or already there. */
static void add_dir(char dirs[][PATH_MAX], size_t *n, size_t max,
                    const char *base, const char *suffix)
{
    char dir[PATH_MAX], real[PATH_MAX];
    size_t bl = strlen(base), sl = strlen(suffix);

    if (*n == max || bl == 0 || bl + sl >= sizeof dir)
        return;
    memcpy(dir, base, bl);
    memcpy(dir + bl, suffix, sl + 1);
    const char *d = realpath(dir, real) != NULL ? real : dir;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(dirs[i], d) == 0)
            return;
    memcpy(dirs[(*n)++], d, strlen(d) + 1);
}

/* The plugin directories, in search order (see registry.h). */
static size_t plugin_dirs(char dirs[][PATH_MAX], size_t max)
{
    char buf[PATH_MAX];
    size_t n = 0;
    const char *env = getenv("PICKLEPOOL_PLUGIN_PATH");
    Dl_info info;

    while (env != NULL && *env) {
        size_t len = strcspn(env, ":");
        if (len > 0 && len < sizeof buf) {
            memcpy(buf, env, len);
            buf[len] = '\0';
            add_dir(dirs, &n, max, buf, "");
        }
        env += len + (env[len] == ':');
    }
    /* Beside the shared library: <libdir>/picklepool/plugins when
     * installed, <libdir>/plugins in the build tree (build/plugins beside
     * build/libpicklepool.so: what a Python caller of the tree loads). */
    if (dladdr((void *)plugin_dirs, &info) != 0 && info.dli_fname != NULL &&
        strstr(info.dli_fname, "libpicklepool.so") != NULL &&
        strlen(info.dli_fname) < sizeof buf) {
        strcpy(buf, info.dli_fname);
        pk__path_dir(buf);
        add_dir(dirs, &n, max, buf, "/picklepool/plugins");
        add_dir(dirs, &n, max, buf, "/plugins");
    }
    /* An installed program: <prefix>/bin/../lib/picklepool/plugins; one in
     * the build tree: build/plugins beside build/picklepool. */
    ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (len > 0) {
        buf[len] = '\0';
        pk__path_dir(buf);
        add_dir(dirs, &n, max, buf, "/../lib/picklepool/plugins");
        add_dir(dirs, &n, max, buf, "/plugins");
    }
    return n;
}

#define MAX_PLUGIN_DIRS 16

pk_err_t pool_plugin_find(const char *name, char *path, size_t size,
                          pk_error_t *err)
{
    char dirs[MAX_PLUGIN_DIRS][PATH_MAX], looked[200];
    size_t n, len = 0;

    if (!name || !*name || !path || size == 0)
        return pk__err(err, PK_EINVAL, "plugin_find: empty name or buffer");
    if (strchr(name, '/') != NULL) {
        if (snprintf(path, size, "%s", name) >= (int)size)
            return pk__err(err, PK_ELIMIT, "plugin path too long");
        if (access(name, R_OK) != 0)
            return pk__err_sys(err, PK_EIO, errno, "plugin %s", name);
        return PK_OK;
    }
    n = plugin_dirs(dirs, MAX_PLUGIN_DIRS);
    looked[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (snprintf(path, size, "%s/%s.so", dirs[i], name) < (int)size &&
            access(path, R_OK) == 0)
            return PK_OK;
        if (len < sizeof looked)
            len += (size_t)snprintf(looked + len, sizeof looked - len, "%s%s",
                                    i ? ", " : "", dirs[i]);
    }
    path[0] = '\0';
    return pk__err(err, PK_EIO,
                   "no plugin '%s': looked for %s.so in %s%s "
                   "(PICKLEPOOL_PLUGIN_PATH adds directories)",
                   name, name, n ? "" : "no directory", looked);
}

pk_err_t pool_plugin_load(const char *path, pk_error_t *err)
{
    char resolved[PATH_MAX], found[PATH_MAX];
    const char *key = path;
    pk_err_t rc;

    if (!path || !*path)
        return pk__err(err, PK_EINVAL, "empty plugin path");
    /* A plain name ("examples") is a plugin found in the plugin
     * directories; a library file name ("libfoo.so") is searched by dlopen
     * and kept as given. */
    if (!strchr(path, '/') && !strstr(path, ".so")) {
        if ((rc = pool_plugin_find(path, found, sizeof found, err)) != PK_OK)
            return rc;
        path = key = found;
    }
    /* A path with a slash names a file: store it absolute so that another
     * process (the fork server, a worker started elsewhere) loads the same
     * file whatever its working directory. */
    if (strchr(path, '/') && realpath(path, resolved))
        key = resolved;

    plugin_lock_acquire();
    if (plugin_known(key, NULL)) {
        pthread_mutex_unlock(&plugin_lock);
        return PK_OK;
    }
    if (nplugins == POOL__MAX_PLUGINS) {
        pthread_mutex_unlock(&plugin_lock);
        return pk__err(err, PK_ELIMIT,
                       "cannot load %s: %d plugins already loaded", path,
                       POOL__MAX_PLUGINS);
    }

    promote_self();
    dlerror();
    void *h = dlopen(key, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        pthread_mutex_unlock(&plugin_lock);
        return pk__err(err, PK_EIO, "cannot load plugin: %s", why ? why : path);
    }
    if (plugin_known(NULL, h)) { /* same file by another name */
        dlclose(h);
        pthread_mutex_unlock(&plugin_lock);
        return PK_OK;
    }
    pool_plugin_init_t init;
    void *sym = dlsym(h, POOL_PLUGIN_INIT_SYMBOL);
    memcpy(&init, &sym, sizeof init); /* object pointer to function pointer */
    if (!sym) {
        dlclose(h);
        pthread_mutex_unlock(&plugin_lock);
        return pk__err(err, PK_ENOFUNC, "plugin %s has no %s function", path,
                       POOL_PLUGIN_INIT_SYMBOL);
    }
    char *stored = strdup(key);
    if (!stored) {
        dlclose(h);
        pthread_mutex_unlock(&plugin_lock);
        return pk__err(err, PK_ENOMEM, "out of memory loading %s", path);
    }

    pk_error_t local;
    pk_error_t *e = err ? err : &local;
    pk_error_clear(e);
    loading_plugin = stored;
    rc = init(e);
    loading_plugin = NULL;
    if (rc != PK_OK) {
        /* Functions it registered before failing stay registered, and their
         * code must stay mapped: the handle is kept open, just not listed. */
        if (!e->msg[0])
            pk__err(e, rc, "plugin %s: init failed: %s", path, pk_strerror(rc));
        e->code = rc;
        free(stored);
        pthread_mutex_unlock(&plugin_lock);
        return rc;
    }
    reg_lock_acquire();
    plugin_paths[nplugins] = stored;
    plugin_handles[nplugins] = h;
    nplugins++;
    pthread_mutex_unlock(&reg_lock);
    pthread_mutex_unlock(&plugin_lock);
    return PK_OK;
}

/* ---- calling ------------------------------------------------------------- */

pk_err_t pool_call_local(const char *module, const char *name, pk_doc_t *doc,
                         const pk_value_t *args, const pk_value_t *kwargs,
                         pk_value_t **result, pk_error_t *err)
{
    pk_error_t local;
    pk_error_t *e = err ? err : &local;
    void *udata;
    pk_err_t rc;

    *result = NULL;
    pool_fn_t fn = pool_lookup(module, name, &udata);
    if (!fn)
        return pk__err(err, PK_ENOFUNC, "unknown function %s.%s",
                       module ? module : "(null)", name ? name : "(null)");
    if (!doc)
        return pk__err(err, PK_EINVAL, "pool_call_local needs a result doc");
    if (!args && !(args = pk_tuple_new(doc, 0)))
        return pk__err(err, PK_ENOMEM, "out of memory");
    if (args->type != PK_TUPLE)
        return pk__err(err, PK_ETYPE,
                       "arguments of %s.%s must be a tuple, got %s", module,
                       name, pk_type_name((pk_type_t)args->type));
    if (kwargs && kwargs->type != PK_DICT)
        return pk__err(err, PK_ETYPE,
                       "keyword arguments of %s.%s must be a dict, got %s",
                       module, name, pk_type_name((pk_type_t)kwargs->type));

    pool_call_t call = {doc, args, kwargs, udata, e};
    pk_value_t *res = NULL;
    pk_error_clear(e);
    rc = fn(&call, &res);
    if (rc != PK_OK) {
        if (!e->msg[0])
            pk__err(e, rc, "%s.%s failed: %s", module, name, pk_strerror(rc));
        e->code = rc;
        return rc;
    }
    *result = res ? res : pk_none();
    return PK_OK;
}

/* ---- helpers for kernels ------------------------------------------------ */

pk_err_t pool_fail(pool_call_t *call, pk_err_t code, const char *fmt, ...)
{
    va_list ap;

    pk_error_clear(call->err);
    call->err->code = code;
    va_start(ap, fmt);
    vsnprintf(call->err->msg, sizeof call->err->msg, fmt, ap);
    va_end(ap);
    return code;
}

pk_err_t pool_want_args(pool_call_t *call, const char *fname, size_t n)
{
    size_t got = pk_len(call->args);

    if (got != n)
        return pool_fail(call, PK_ETYPE,
                         "TypeError: %s() takes exactly %zu argument%s (%zu "
                         "given)",
                         fname, n, n == 1 ? "" : "s", got);
    if (call->kwargs != NULL && pk_len(call->kwargs) > 0)
        return pool_fail(call, PK_ETYPE,
                         "TypeError: %s() takes no keyword arguments", fname);
    return PK_OK;
}
