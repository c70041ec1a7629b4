/*
 * lifecycle.c - a pool's life (pool.h): options, the fork server's
 * start and stop, creation (ipc directory, scoreboard and lanes, arena,
 * fork-server channel, ROUTER socket, master thread, then waiting for every
 * worker's READY), close / join / terminate / destroy, and statistics.
 */
#define _GNU_SOURCE
#include "picklepool/pool.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/common.h"
#include "picklepool/registry.h"
#include "pool/internal.h"
#include "pool/scaleout.h"
#include "pool/wait.h"
#include "proc/forkserver.h"
#include "proc/registry_int.h"

#define CREATE_TIMEOUT_S 60.0                /* for every worker to say READY */
#define POOL_STALL_DEFAULT_NS 60000000000ull /* stall bound (recovery.h) */

/* ---- options, init, create ---------------------------------------------- */

void pool_opts_init(pool_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->placement = POOL_PLACE_COMPACT;
    opts->prefetch = 2;
    opts->retries = 2;
}

void pool_call_opts_init(pool_call_opts_t *copts)
{
    memset(copts, 0, sizeof *copts);
    copts->size = sizeof *copts;
}

/* Pools alive in this process (pool_global_fini refuses while any is). */
static atomic_int live_pools;

/* Both inits: the shared heap is per process too (best effort: without
 * it pools work, and pool_shared_alloc says why there is none), made
 * before the fork server so that it is not copied into it half made. */
static pk_err_t global_init(pool_worker_main_fn main, void (*at_fork)(void),
                            pk_error_t *err)
{
    pool__heap_t *heap;
    (void)pool__heap_get(&heap, NULL);
    return pool__fs_init(main, at_fork, err);
}

pk_err_t pool_global_init(pk_error_t *err)
{
    return global_init(NULL, NULL, err);
}

pk_err_t pool_global_init_main(pool_worker_main_fn main, void (*at_fork)(void),
                               pk_error_t *err)
{
    if (main == NULL)
        return pk__err(err, PK_EINVAL, "pool_global_init_main: NULL main");
    return global_init(main, at_fork, err);
}

pk_err_t pool_global_fini(pk_error_t *err)
{
    if (atomic_load(&live_pools) != 0)
        return pk__err(err, PK_EINVAL,
                       "pool_global_fini: %d pool(s) still exist; destroy "
                       "them first",
                       atomic_load(&live_pools));
    pool__fs_fini();
    pool__heap_fini(); /* unless arrays from it are still held */
    return PK_OK;
}

static void pool_free(pool_t *p)
{
    if (p->m.router != NULL)
        zmq_close(p->m.router);
    if (p->cfg.zctx != NULL)
        zmq_ctx_term(p->cfg.zctx);
    if (p->m.chan >= 0)
        close(p->m.chan); /* the fork server reaps and removes the dir */
    if (p->cfg.dir[0] != '\0') {
        char sock[320];
        snprintf(sock, sizeof sock, "%s/pool.sock", p->cfg.dir);
        unlink(sock);
        rmdir(p->cfg.dir);
    }
    if (p->cfg.sb != NULL)
        munmap(p->cfg.sb, p->cfg.sb_size);
    pool__shm_unref(p->cfg.shm); /* unmapped when no blob or outcome uses it */
    if (p->cfg.memfd >= 0)
        close(p->cfg.memfd);
    if (p->cfg.efd >= 0)
        close(p->cfg.efd);
    while (p->lk.subq_head != NULL) {
        pool__batch_t *n = p->lk.subq_head->next;
        pool__batch_free(p->lk.subq_head);
        p->lk.subq_head = n;
    }
    pool__topo_free(&p->cfg.own_topo);
    pk__free(p->cfg.places);
    pk__free(p->lk.stats);
    pk__free(p->m.w);
    pk__free(p->lk.lane_recs);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pk__free(p);
}

/* The arena goes in the scoreboard memfd after the scoreboard (shm.h).
 * Without one (opted out, too small, or the memfd cannot grow) every
 * buffer takes the socket. */
static void open_arena(pool_t *p, size_t bytes, size_t threshold,
                       pool__shm_layout_t *lay)
{
    memset(lay, 0, sizeof *lay);
    if (bytes == SIZE_MAX)
        return;
    if (pool__shm_layout(bytes ? bytes : POOL_SHM_DEFAULT_BYTES,
                         p->cfg.nworkers, lay) != 0)
        return;
    uint64_t off = ((uint64_t)p->cfg.sb_size + POOL_SHM_PAGE - 1) &
                   ~(uint64_t)(POOL_SHM_PAGE - 1);
    if (ftruncate(p->cfg.memfd, (off_t)(off + lay->size)) != 0 ||
        pool__shm_open(&p->cfg.shm, p->cfg.memfd, off, lay, threshold, NULL) !=
            PK_OK) {
        p->cfg.shm = NULL;
        memset(lay, 0, sizeof *lay);
        return;
    }
    p->cfg.shm_off = off;
}

/* Packs a NULL-terminated list as NUL-separated strings ending with an
 * empty one into out[size].  Returns 0, or -1 when it does not fit. */
static int pack_list(const char *const *v, char *out, size_t size)
{
    size_t at = 0;
    for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
        size_t n = strlen(v[i]) + 1;
        if (n == 1 || at + n + 1 > size)
            return -1;
        memcpy(out + at, v[i], n);
        at += n;
    }
    if (at + 1 > size)
        return -1;
    out[at] = '\0';
    return 0;
}

static pk_err_t check_opts(const pool_opts_t *o, pk_error_t *err)
{
    /* The fork server reports deaths on a non-blocking channel with room
     * for a few hundred messages; past this bound a burst could overflow it
     * (an outgoing queue there would lift the limit). */
    if (o->workers < 0 || o->workers > POOL_MAX_WORKERS)
        return pk__err(err, PK_EINVAL, "workers must be 0..%d, not %d",
                       POOL_MAX_WORKERS, o->workers);
    if (o->placement != POOL_PLACE_COMPACT &&
        o->placement != POOL_PLACE_SPREAD && o->placement != POOL_PLACE_NONE)
        return pk__err(err, PK_EINVAL, "unknown placement %d",
                       (int)o->placement);
    if (o->prefetch < 0 || o->prefetch > 1024)
        return pk__err(err, PK_EINVAL, "prefetch must be 0..1024, not %d",
                       o->prefetch);
    if (o->retries < 0)
        return pk__err(err, PK_EINVAL, "retries must be >= 0, not %d",
                       o->retries);
    if (!(o->timeout >= 0) || o->timeout > 1e9)
        return pk__err(err, PK_EINVAL,
                       "timeout must be from 0 to 1e9 seconds, not %g",
                       o->timeout);
    if (!(o->stall_timeout <= 1e9))
        return pk__err(err, PK_EINVAL,
                       "stall_timeout must be at most 1e9 seconds, not %g",
                       o->stall_timeout);
    if (o->spin_us > 1000000)
        return pk__err(err, PK_EINVAL, "spin_us must be at most 1000000");
    if (o->shm_threshold > ((size_t)1 << 40))
        return pk__err(err, PK_EINVAL, "shm_threshold is too large");
    if (o->nplugins > 0 && o->plugins == NULL)
        return pk__err(err, PK_EINVAL, "nplugins without plugins");
    for (size_t i = 0; i < o->nplugins; i++)
        if (o->plugins[i] == NULL || o->plugins[i][0] == '\0')
            return pk__err(err, PK_EINVAL, "plugin %zu has no path", i);
    if (o->worker_argv != NULL) {
        if (o->worker_argv[0] == NULL || strchr(o->worker_argv[0], '/') == NULL)
            return pk__err(err, PK_EINVAL,
                           "worker_argv[0] must be a path to the worker "
                           "program (it is run with execv, without a PATH "
                           "search)");
    } else if (o->worker_env != NULL && o->worker_main == NULL) {
        return pk__err(err, PK_EINVAL,
                       "worker_env without worker_argv or worker_main");
    }
    if (o->worker_argv != NULL || o->worker_main != NULL) {
        char tmp[POOL_FS_EXEC_BYTES];
        if (pack_list(o->worker_argv, tmp, sizeof tmp) != 0 ||
            pack_list(o->worker_env, tmp, sizeof tmp) != 0)
            return pk__err(err, PK_EINVAL,
                           "worker_argv and worker_env must have non-empty "
                           "strings and fit in %d bytes each",
                           POOL_FS_EXEC_BYTES);
    }
    return PK_OK;
}

static pk_err_t pool_create_opts(pool_t **pp, const pool_opts_t *opts,
                                 pk_error_t *err);

/* Until every worker has been ready once, the pool broke or was
 * terminated, or timeout_s (< 0: no limit) passed. */
static pk_err_t wait_ready(pool_t *p, double timeout_s, pk_error_t *err)
{
    pk_err_t rc = PK_OK;
    struct timespec dl = pool__deadline_in(timeout_s < 0 ? 0 : timeout_s);
    pthread_mutex_lock(&p->mu);
    while (p->lk.nready < p->cfg.nworkers && p->lk.broken == PK_OK &&
           !p->lk.terminate_req && !p->lk.exited) {
        if (timeout_s < 0)
            pthread_cond_wait(&p->cv, &p->mu);
        else if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT)
            break;
    }
    if (p->lk.nready >= p->cfg.nworkers)
        rc = PK_OK;
    else if (p->lk.broken != PK_OK)
        rc = pk__err(err, p->lk.broken, "%s", p->lk.broken_msg);
    else if (p->lk.terminate_req || p->lk.exited)
        rc = pk__err(err, PK_ECANCELED,
                     "the pool was terminated (or closed and done) before "
                     "%d of its %d workers were ready",
                     p->cfg.nworkers - p->lk.nready, p->cfg.nworkers);
    else
        rc =
            pk__err(err, PK_ETIMEDOUT, "%d of %d workers were ready after %g s",
                    p->lk.nready, p->cfg.nworkers, timeout_s);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

pk_err_t pool_wait_ready(pool_t *p, double timeout, pk_error_t *err)
{
    if (p == NULL)
        return pk__err(err, PK_EINVAL, "pool_wait_ready: NULL pool");
    return wait_ready(p, timeout, err);
}

pk_err_t pool_create(pool_t **pp, const pool_opts_t *user, pk_error_t *err)
{
    if (pp == NULL)
        return pk__err(err, PK_EINVAL, "pool_create: NULL pool pointer");
    /* Fields past the caller's size (built against an older header) keep
     * their defaults. */
    pool_opts_t o;
    pool_opts_init(&o);
    if (user != NULL) {
        if (user->size <
                offsetof(pool_opts_t, workers) + sizeof user->workers ||
            user->size > sizeof o)
            return pk__err(err, PK_EINVAL,
                           "pool_opts_t.size is %zu, not %zu: fill the options "
                           "with pool_opts_init()",
                           user->size, sizeof o);
        memcpy(&o, user, user->size);
        o.size = sizeof o;
    }
    const pool_opts_t *opts = &o;
    pk_err_t rc = check_opts(opts, err);
    if (rc != PK_OK)
        return rc;
    rc = pool_global_init(err);
    if (rc != PK_OK)
        return rc;
    /* A remote pool is a local pool of one forwarder (scaleout.h). */
    pool__remote_argv_t *ra = NULL;
    if (o.address != NULL) {
        ra = pk__malloc(sizeof *ra);
        if (ra == NULL)
            return pk__err(err, PK_ENOMEM, "out of memory");
        rc = pool__remote_prepare(&o, ra, err);
        if (rc == PK_OK)
            rc = check_opts(opts, err);
        if (rc != PK_OK) {
            pk__free(ra);
            return rc;
        }
    }
    rc = pool_create_opts(pp, opts, err);
    pk__free(ra);
    return rc;
}

/* pool_create with checked options (o->address handled). */
static pk_err_t pool_create_opts(pool_t **pp, const pool_opts_t *opts,
                                 pk_error_t *err)
{
    pk_err_t rc;
    for (size_t i = 0; i < opts->nplugins; i++) {
        rc = pool_plugin_load(opts->plugins[i], err);
        if (rc == PK_OK)
            rc = pool__fs_plugin(opts->plugins[i], err);
        if (rc != PK_OK)
            return rc;
    }

    pool_t *p = pk__calloc(1, sizeof *p);
    if (p == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    p->cfg.efd = p->cfg.memfd = p->m.chan = -1;
    p->cfg.prefetch = opts->prefetch ? opts->prefetch : 2;
    p->cfg.retries = opts->retries;
    p->cfg.reg_gen = pool__registry_generation();
    p->cfg.chunksize = opts->chunksize;
    p->cfg.timeout = opts->timeout;
    p->cfg.stall_ns = opts->stall_timeout < 0 ? 0
                      : opts->stall_timeout == 0
                          ? POOL_STALL_DEFAULT_NS
                          : (uint64_t)(opts->stall_timeout * 1e9);
    if (opts->stall_timeout > 0 && p->cfg.stall_ns == 0)
        p->cfg.stall_ns = 1;

    const pool__topo_t *topo = pool__fs_topo();
    if (opts->topology != NULL) {
        rc = pool__topo_load(&p->cfg.own_topo, opts->topology, err);
        if (rc != PK_OK)
            goto fail;
        topo = p->cfg.own_topo;
    }
    p->cfg.nworkers = opts->workers ? opts->workers : pool__topo_ncores(topo);
    if (p->cfg.nworkers > POOL_MAX_WORKERS)
        p->cfg.nworkers = POOL_MAX_WORKERS;
    p->cfg.places = pk__calloc((size_t)p->cfg.nworkers, sizeof *p->cfg.places);
    p->lk.stats = pk__calloc((size_t)p->cfg.nworkers, sizeof *p->lk.stats);
    p->m.w = pk__calloc((size_t)p->cfg.nworkers, sizeof *p->m.w);
    if (p->cfg.places == NULL || p->lk.stats == NULL || p->m.w == NULL) {
        rc = pk__err(err, PK_ENOMEM, "out of memory");
        goto fail;
    }
    rc = pool__topo_place(topo, p->cfg.nworkers, opts->placement, p->cfg.places,
                          err);
    if (rc != PK_OK)
        goto fail;
    p->cfg.bind = opts->placement != POOL_PLACE_NONE && opts->topology == NULL;

    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    if (snprintf(p->cfg.dir, sizeof p->cfg.dir, "%s/picklepool-XXXXXX", tmp) >=
            (int)sizeof p->cfg.dir - 16 ||
        strlen(p->cfg.dir) + sizeof "/pool.sock" > 100) {
        p->cfg.dir[0] = '\0';
        rc = pk__err(err, PK_EINVAL, "TMPDIR is too long for an ipc path");
        goto fail;
    }
    if (mkdtemp(p->cfg.dir) == NULL) {
        rc = pk__err_sys(err, PK_ESYS, errno, "mkdtemp %s", p->cfg.dir);
        p->cfg.dir[0] = '\0';
        goto fail;
    }
    snprintf(p->cfg.endpoint, sizeof p->cfg.endpoint, "ipc://%s/pool.sock",
             p->cfg.dir);

    /* The scoreboard, then (unless opted out) the fast lanes. */
    if (opts->spin_us >= 0) {
        p->cfg.spin_ns = (uint64_t)(opts->spin_us ? opts->spin_us
                                                  : POOL_LANE_DEFAULT_SPIN_US) *
                         1000u;
        p->cfg.sb_size = (size_t)pool__lanes_end(p->cfg.nworkers);
        p->lk.lane_recs =
            pk__calloc((size_t)p->cfg.nworkers, sizeof *p->lk.lane_recs);
        if (p->lk.lane_recs == NULL) {
            rc = pk__err(err, PK_ENOMEM, "out of memory");
            goto fail;
        }
    } else {
        p->cfg.sb_size = sizeof(pool__sb_slot_t) * (size_t)p->cfg.nworkers;
    }
    p->cfg.memfd = memfd_create("picklepool-scoreboard", MFD_CLOEXEC);
    if (p->cfg.memfd < 0 ||
        ftruncate(p->cfg.memfd, (off_t)p->cfg.sb_size) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "memfd for the scoreboard");
        goto fail;
    }
    pool__shm_layout_t lay;
    size_t shm_threshold =
        opts->shm_threshold ? opts->shm_threshold : POOL_SHM_DEFAULT_THRESHOLD;
    open_arena(p, opts->shm_bytes, shm_threshold, &lay);
    p->cfg.sb = mmap(NULL, p->cfg.sb_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                     p->cfg.memfd, 0);
    if (p->cfg.sb == MAP_FAILED) {
        p->cfg.sb = NULL;
        rc = pk__err_sys(err, PK_ESYS, errno, "mmap of the scoreboard");
        goto fail;
    }
    if (p->cfg.spin_ns > 0)
        p->cfg.lanes = (pool__lane_t *)((uint8_t *)p->cfg.sb +
                                        pool__lanes_off(p->cfg.nworkers));
    p->cfg.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->cfg.efd < 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "eventfd");
        goto fail;
    }

    pool__fs_pool_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.dir, sizeof cfg.dir, "%s", p->cfg.dir);
    snprintf(cfg.endpoint, sizeof cfg.endpoint, "%s", p->cfg.endpoint);
    cfg.nworkers = p->cfg.nworkers;
    cfg.prefetch = p->cfg.prefetch;
    cfg.maxtasks = opts->maxtasksperchild;
    cfg.max_rss = opts->max_rss;
    cfg.initializer = opts->initializer;
    cfg.initarg = opts->initarg;
    if (p->cfg.shm != NULL) {
        cfg.shm = lay;
        cfg.shm_off = p->cfg.shm_off;
        cfg.shm_threshold = shm_threshold;
    }
    cfg.spin_ns = p->cfg.spin_ns;
    if (opts->worker_argv != NULL || opts->worker_main != NULL) {
        /* checked by check_opts; worker_main is kept by
         * pool__fs_open_pool only if the fork server can run it */
        pack_list(opts->worker_argv, cfg.exec_argv, sizeof cfg.exec_argv);
        pack_list(opts->worker_env, cfg.exec_env, sizeof cfg.exec_env);
        cfg.worker_main = opts->worker_main;
        cfg.worker_main_arg = opts->worker_main_arg;
    }
    /* Callers' shared arrays (picklepool/shared.h): without the heap the
     * pool works, and pool_shared_alloc says why there is none. */
    pool__heap_t *heap = NULL;
    if (opts->address == NULL) /* a forwarder reads no memory of ours */
        (void)pool__heap_get(&heap, NULL);
    cfg.heap_fd = -1;
    cfg.heap_size = heap != NULL ? heap->size : 0;
    p->cfg.heap = heap != NULL;
    p->cfg.remote = opts->address != NULL;
    /* The workers are asked for with the pool itself: the fork server
     * forks them at once, while this thread sets up ZeroMQ and the master
     * thread (about half a millisecond); each waits for the pool's socket
     * to exist before it connects (worker.c). */
    pool__fs_msg_t *spawns =
        pk__calloc((size_t)p->cfg.nworkers, sizeof *spawns);
    if (spawns == NULL) {
        rc = pk__err(err, PK_ENOMEM, "out of memory");
        goto fail;
    }
    pool__master_first_spawns(p, spawns);
    rc = pool__fs_open_pool(&cfg, p->cfg.memfd, heap != NULL ? heap->fd : -1,
                            spawns, p->cfg.nworkers, &p->m.chan, err);
    pk__free(spawns);
    if (rc != PK_OK)
        goto fail;

    /* ZeroMQ only now: the fork server exists (see forkserver.h). */
    p->cfg.zctx = zmq_ctx_new();
    if (p->cfg.zctx == NULL) {
        rc = pk__err_sys(err, PK_ESYS, errno, "zmq_ctx_new");
        goto fail;
    }
    zmq_ctx_set(p->cfg.zctx, ZMQ_BLOCKY, 0);
    p->m.router = zmq_socket(p->cfg.zctx, ZMQ_ROUTER);
    if (p->m.router == NULL) {
        rc = pk__err_sys(err, PK_ESYS, errno, "zmq_socket");
        goto fail;
    }
    int zero = 0, one = 1;
    zmq_setsockopt(p->m.router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->m.router, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(p->m.router, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(p->m.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (zmq_bind(p->m.router, p->cfg.endpoint) != 0) {
        rc =
            pk__err_sys(err, PK_ESYS, errno, "cannot bind %s", p->cfg.endpoint);
        goto fail;
    }
    int terr = pthread_create(&p->cfg.thread, NULL, pool__master_main, p);
    if (terr != 0) {
        rc = pk__err_sys(err, PK_ESYS, terr, "cannot start the master thread");
        goto fail;
    }
    p->cfg.thread_started = 1;

    if (!opts->start_nowait)
        rc = wait_ready(p, CREATE_TIMEOUT_S, err);
    if (rc != PK_OK) {
        pool_destroy(&p);
        return rc;
    }
    p->cfg.counted = 1;
    *pp = p;
    atomic_fetch_add(&live_pools, 1);
    return PK_OK;
fail:
    pool_free(p);
    return rc;
}

/* ---- close, join, terminate, destroy ------------------------------------ */

pk_err_t pool_close(pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->lk.closed = 1;
    pthread_mutex_unlock(&p->mu);
    pool__master_wake(p);
    return PK_OK;
}

pk_err_t pool_join(pool_t *p, double timeout)
{
    pk_err_t rc = PK_OK;
    struct timespec dl = pool__deadline_in(timeout);
    pool__intr_enter();
    pthread_mutex_lock(&p->mu);
    if (!p->lk.closed && !p->lk.terminate_req) {
        rc = PK_EINVAL; /* multiprocessing: "Pool is still running" */
    } else {
        while (!p->lk.exited && rc == PK_OK)
            rc = pool__cv_wait(p, timeout < 0 ? NULL : &dl);
    }
    pthread_mutex_unlock(&p->mu);
    pool__intr_leave();
    return rc;
}

void pool_terminate(pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->lk.closed = 1;
    p->lk.terminate_req = 1;
    pthread_mutex_unlock(&p->mu);
    pool__master_wake(p);
    /* Synchronous like multiprocessing's: returns once workers are gone. */
    pthread_mutex_lock(&p->mu);
    while (!p->lk.exited)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void pool_destroy(pool_t **pp)
{
    if (pp == NULL || *pp == NULL)
        return;
    pool_t *p = *pp;
    *pp = NULL;
    /* Misuse, not a condition to report: an open iterator or future would
     * touch the freed pool when the caller frees it (see pool.h). */
    pthread_mutex_lock(&p->mu);
    int open = p->lk.open_drives;
    pthread_mutex_unlock(&p->mu);
    if (open != 0) {
        fprintf(stderr,
                "picklepool: pool_destroy with %d iterator(s) or future(s) "
                "still open; free them first\n",
                open);
        abort();
    }
    if (p->cfg.thread_started) {
        pthread_mutex_lock(&p->mu);
        p->lk.closed = 1;
        if (!p->lk.exited)
            p->lk.terminate_req = 1;
        p->lk.shutdown_req = 1;
        pthread_mutex_unlock(&p->mu);
        pool__master_wake(p);
        pthread_join(p->cfg.thread, NULL);
    }
    int counted = p->cfg.counted;
    pool_free(p);
    if (counted)
        atomic_fetch_sub(&live_pools, 1);
}

/* ---- statistics --------------------------------------------------------- */

pk_err_t pool_stats(pool_t *p, pool_worker_stats_t *out, size_t cap, size_t *n)
{
    if (p == NULL)
        return PK_EINVAL;
    if (n != NULL)
        *n = (size_t)p->cfg.nworkers;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < cap && i < (size_t)p->cfg.nworkers; i++) {
        pool_worker_stats_t *s = &out[i];
        memset(s, 0, sizeof *s);
        s->slot = (int)i;
        s->pid = p->lk.stats[i].pid;
        s->core = p->cfg.places[i].core;
        pool__cpuset_str(&p->cfg.places[i].cpus, s->cpus, sizeof s->cpus);
        s->items_done = p->lk.stats[i].items_done;
        s->busy_s = (double)(p->lk.stats[i].busy_base_ns +
                             POOL_SB_LOAD(p->cfg.sb[i].busy_ns)) /
                    1e9;
        s->restarts = p->lk.stats[i].restarts;
        s->lane_items = p->lk.stats[i].lane_items;
    }
    pthread_mutex_unlock(&p->mu);
    return PK_OK;
}
