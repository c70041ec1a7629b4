/*
 * pool.c - the public pool API (pool.h): creation and shutdown, and the
 * caller's side of every map.
 *
 * The caller's thread does the heavy lifting of its own call: it pickles
 * items into batches lazily, keeping a bounded window of items in flight
 * (so pool_map returns control quickly and imap stays flat on unbounded
 * input), hands batches to the master thread (master.c), and decodes the
 * outcomes the master hands back.  The master only moves bytes.
 *
 * Batch size adapts unless fixed: the first batches are small, then each
 * aims at TARGET_BATCH_NS of work per the item time the workers measure,
 * capped so that every worker gets at least four batches of a known-length
 * map, and so that a batch of big items (arrays) holds about BATCH_BYTES.  The
 * convenience maps send raw int64/float64 vectors that workers read without a
 * pickle per item, straight from the caller's array.
 *
 * Interrupts: while a caller blocks, SIGINT and SIGTERM whose disposition is
 * the default get a temporary handler that sets a flag; the blocked call
 * then cancels its job (queued batches dropped, workers still running it
 * killed after a short grace) and returns PK_EINTR.  The previous
 * disposition is restored when the last blocked call returns.
 */
#define _GNU_SOURCE
#include "picklepool/pool.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "proc/forkserver.h"
#include "pool/master.h"
#include "picklepool/pickle.h"
#include "picklepool/registry.h"
#include "ipc/wire.h"

#define TARGET_BATCH_NS 3000000ull /* aim: ~3 ms of work per batch */
#define FIRST_CHUNK 4
#define BATCH_BYTES ((size_t)8 << 20) /* big items: about this much a batch */
#define MAX_CHUNK (1u << 20)
#define OOB_MIN 1024          /* smaller buffers are pickled in band */
#define CREATE_TIMEOUT_S 60.0 /* for every worker to say READY */

/* ---- interrupts ------------------------------------------------------------
 */

static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static int sig_users;
static int sig_installed[2];
static struct sigaction sig_old[2];
static const int sig_nums[2] = {SIGINT, SIGTERM};
static volatile sig_atomic_t sig_flag;

static void on_signal(int s)
{
    PK_UNUSED(s);
    sig_flag = 1;
}

static void block_enter(void)
{
    pthread_mutex_lock(&sig_mu);
    if (sig_users++ == 0) {
        sig_flag = 0;
        for (int i = 0; i < 2; i++) {
            struct sigaction cur;
            sig_installed[i] = 0;
            if (sigaction(sig_nums[i], NULL, &cur) != 0 ||
                (cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL)
                continue;
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_signal;
            sigemptyset(&sa.sa_mask);
            if (sigaction(sig_nums[i], &sa, &sig_old[i]) == 0)
                sig_installed[i] = 1;
        }
    }
    pthread_mutex_unlock(&sig_mu);
}

static void block_leave(void)
{
    pthread_mutex_lock(&sig_mu);
    if (--sig_users == 0) {
        for (int i = 0; i < 2; i++)
            if (sig_installed[i])
                sigaction(sig_nums[i], &sig_old[i], NULL);
        sig_installed[0] = sig_installed[1] = 0;
    }
    pthread_mutex_unlock(&sig_mu);
}

static int interrupts_watched(void)
{
    return sig_installed[0] || sig_installed[1];
}

/* ---- time -------------------------------------------------------------------
 */

static struct timespec deadline_in(double s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (s < 0 || s > 1e9)
        s = 1e9;
    double sec = floor(s);
    ts.tv_sec += (time_t)sec;
    ts.tv_nsec += (long)((s - sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec ||
           (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Waits on p->cv (p->mu held) until signalled, `deadline` (NULL: none) or an
 * interrupt.  Returns PK_OK, PK_ETIMEDOUT or PK_EINTR. */
static pk_err_t cv_wait(pool_t *p, const struct timespec *deadline)
{
    if (sig_flag)
        return PK_EINTR;
    struct timespec until;
    int watched = interrupts_watched();
    if (watched) {
        until = deadline_in(0.02); /* look at the flag every 20 ms */
        if (deadline != NULL && ts_before(deadline, &until))
            until = *deadline;
    } else if (deadline != NULL) {
        until = *deadline;
    } else {
        pthread_cond_wait(&p->cv, &p->mu);
        return sig_flag ? PK_EINTR : PK_OK;
    }
    int r = pthread_cond_timedwait(&p->cv, &p->mu, &until);
    if (sig_flag)
        return PK_EINTR;
    if (r == ETIMEDOUT && deadline != NULL) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!ts_before(&now, deadline))
            return PK_ETIMEDOUT;
    }
    return PK_OK;
}

/* ---- options, init, create -------------------------------------------------
 */

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

pk_err_t pool_global_init(pk_error_t *err)
{
    return pool__fs_init(err);
}

pk_err_t pool_global_fini(pk_error_t *err)
{
    if (atomic_load(&live_pools) != 0)
        return pk__err(err, PK_EINVAL,
                       "pool_global_fini: %d pool(s) still exist; destroy "
                       "them first",
                       atomic_load(&live_pools));
    pool__fs_fini();
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
    if (pool__shm_layout(bytes ? bytes : POOL_SHM_DEFAULT_BYTES, p->cfg.nworkers,
                         lay) != 0)
        return;
    uint64_t off = ((uint64_t)p->cfg.sb_size + POOL_SHM_PAGE - 1) &
                   ~(uint64_t)(POOL_SHM_PAGE - 1);
    if (ftruncate(p->cfg.memfd, (off_t)(off + lay->size)) != 0 ||
        pool__shm_open(&p->cfg.shm, p->cfg.memfd, off, lay, threshold, NULL) != PK_OK) {
        p->cfg.shm = NULL;
        memset(lay, 0, sizeof *lay);
        return;
    }
    p->cfg.shm_off = off;
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
        return pk__err(err, PK_EINVAL, "timeout must be >= 0 seconds");
    if (o->spin_us > 1000000)
        return pk__err(err, PK_EINVAL, "spin_us must be at most 1000000");
    if (o->shm_threshold > ((size_t)1 << 40))
        return pk__err(err, PK_EINVAL, "shm_threshold is too large");
    if (o->nplugins > 0 && o->plugins == NULL)
        return pk__err(err, PK_EINVAL, "nplugins without plugins");
    for (size_t i = 0; i < o->nplugins; i++)
        if (o->plugins[i] == NULL || o->plugins[i][0] == '\0')
            return pk__err(err, PK_EINVAL, "plugin %zu has no path", i);
    return PK_OK;
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
        if (user->size < offsetof(pool_opts_t, workers) + sizeof user->workers ||
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
    p->cfg.chunksize = opts->chunksize;
    p->cfg.timeout = opts->timeout;

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
    rc = pool__topo_place(topo, p->cfg.nworkers, opts->placement, p->cfg.places, err);
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
    snprintf(p->cfg.endpoint, sizeof p->cfg.endpoint, "ipc://%s/pool.sock", p->cfg.dir);

    /* The scoreboard, then (unless opted out) the fast lanes. */
    if (opts->spin_us >= 0) {
        p->cfg.spin_ns = (uint64_t)(opts->spin_us ? opts->spin_us
                                              : POOL_LANE_DEFAULT_SPIN_US) *
                     1000u;
        p->cfg.sb_size = (size_t)pool__lanes_end(p->cfg.nworkers);
        p->lk.lane_recs = pk__calloc((size_t)p->cfg.nworkers, sizeof *p->lk.lane_recs);
        if (p->lk.lane_recs == NULL) {
            rc = pk__err(err, PK_ENOMEM, "out of memory");
            goto fail;
        }
    } else {
        p->cfg.sb_size = sizeof(pool__sb_slot_t) * (size_t)p->cfg.nworkers;
    }
    p->cfg.memfd = memfd_create("picklepool-scoreboard", MFD_CLOEXEC);
    if (p->cfg.memfd < 0 || ftruncate(p->cfg.memfd, (off_t)p->cfg.sb_size) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "memfd for the scoreboard");
        goto fail;
    }
    pool__shm_layout_t lay;
    size_t shm_threshold =
        opts->shm_threshold ? opts->shm_threshold : POOL_SHM_DEFAULT_THRESHOLD;
    open_arena(p, opts->shm_bytes, shm_threshold, &lay);
    p->cfg.sb =
        mmap(NULL, p->cfg.sb_size, PROT_READ | PROT_WRITE, MAP_SHARED, p->cfg.memfd, 0);
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
    rc = pool__fs_open_pool(&cfg, p->cfg.memfd, &p->m.chan, err);
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
        rc = pk__err_sys(err, PK_ESYS, errno, "cannot bind %s", p->cfg.endpoint);
        goto fail;
    }
    int terr = pthread_create(&p->cfg.thread, NULL, pool__master_main, p);
    if (terr != 0) {
        rc = pk__err_sys(err, PK_ESYS, terr, "cannot start the master thread");
        goto fail;
    }
    p->cfg.thread_started = 1;

    struct timespec dl = deadline_in(CREATE_TIMEOUT_S);
    pthread_mutex_lock(&p->mu);
    while (p->lk.nready < p->cfg.nworkers && p->lk.broken == PK_OK) {
        if (pthread_cond_timedwait(&p->cv, &p->mu, &dl) == ETIMEDOUT)
            break;
    }
    if (p->lk.broken != PK_OK)
        rc = pk__err(err, p->lk.broken, "%s", p->lk.broken_msg);
    else if (p->lk.nready < p->cfg.nworkers)
        rc = pk__err(err, PK_ETIMEDOUT,
                     "%d of %d workers were ready after %g s", p->lk.nready,
                     p->cfg.nworkers, CREATE_TIMEOUT_S);
    pthread_mutex_unlock(&p->mu);
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

/* ---- close, join, terminate, destroy --------------------------------------
 */

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
    struct timespec dl = deadline_in(timeout);
    block_enter();
    pthread_mutex_lock(&p->mu);
    if (!p->lk.closed && !p->lk.terminate_req) {
        rc = PK_EINVAL; /* multiprocessing: "Pool is still running" */
    } else {
        while (!p->lk.exited && rc == PK_OK)
            rc = cv_wait(p, timeout < 0 ? NULL : &dl);
    }
    pthread_mutex_unlock(&p->mu);
    block_leave();
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

/* ---- encoding batches ------------------------------------------------------
 */

typedef struct enc {
    pk_buf_t buf;
    pool__oob_list_t bufs;
    int oob;          /* take large buffers out of band */
    pool__shm_t *shm; /* copy those of shm->threshold bytes there, or NULL */
} enc_t;

static int enc_cb(void *ctx, const void *data, size_t len, int readonly)
{
    PK_UNUSED(readonly);
    enc_t *e = ctx;
    if (!e->oob || !pool__oob_take(&e->bufs, data, len, OOB_MIN))
        return 0;
    if (e->shm != NULL && len >= e->shm->threshold) {
        /* One copy into the arena now, none through the socket later. */
        uint64_t off = pool__shm_task_alloc(e->shm, len);
        if (off != UINT64_MAX) {
            pool__oob_t *o = &e->bufs.v[e->bufs.n - 1];
            pool__shm_prefault(e->shm->base + off, len, 1);
            memcpy(e->shm->base + off, data, len);
            o->data = e->shm->base + off;
            o->shm = off;
        }
    }
    return 1;
}

/* Forgets buffers [from, n), freeing their arena blocks. */
static void enc_drop_bufs(enc_t *e, size_t from)
{
    for (size_t i = from; i < e->bufs.n; i++)
        if (e->bufs.v[i].shm != POOL_WIRE_SHM_INLINE)
            pool__shm_task_free(e->shm, e->bufs.v[i].shm, e->bufs.v[i].len);
    e->bufs.n = from;
}

static pk_err_t enc_item(enc_t *e, const pk_value_t *v, pk_error_t *err)
{
    size_t start = e->buf.len, nb = e->bufs.n;
    if (e->buf.cap - e->buf.len < POOL_WIRE_REC_SIZE) {
        size_t nc = e->buf.cap ? e->buf.cap * 2 : 1024;
        uint8_t *d = pk__realloc(e->buf.data, nc);
        if (d == NULL)
            return pk__err(err, PK_ENOMEM, "out of memory");
        e->buf.data = d;
        e->buf.cap = nc;
    }
    e->buf.len += POOL_WIRE_REC_SIZE;
    pk_dump_opts_t o;
    pk_dump_opts_init(&o);
    o.buffer_cb = enc_cb;
    o.buffer_ctx = e;
    pk_err_t rc = pk_dumps(v, &o, &e->buf, err);
    if (rc != PK_OK) {
        e->buf.len = start;
        enc_drop_bufs(e, nb);
        return rc;
    }
    size_t len = e->buf.len - start - POOL_WIRE_REC_SIZE;
    if (len > UINT32_MAX) {
        e->buf.len = start;
        enc_drop_bufs(e, nb);
        return pk__err(err, PK_ELIMIT, "an item pickles to %zu bytes", len);
    }
    pool__wire_rec_encode(e->buf.data + start, (uint32_t)len,
                          (uint32_t)(e->bufs.n - nb), 0);
    return PK_OK;
}

static void enc_free(enc_t *e)
{
    enc_drop_bufs(e, 0);
    pk_buf_free(&e->buf);
    pk__free(e->bufs.v);
}

/* Turns the encoder's output into a batch (the blob takes the bytes). */
static pool__batch_t *enc_batch(pool__job_t *j, enc_t *e, pk_doc_t **doc,
                                size_t first, uint32_t count)
{
    pool__batch_t *b = pk__calloc(1, sizeof *b);
    pool__blob_t *blob = b ? pool__blob_new(j) : NULL;
    if (blob == NULL) {
        pk__free(b);
        return NULL;
    }
    blob->bytes = e->buf.data;
    blob->bufs = e->bufs.v;
    blob->nbufs = e->bufs.n;
    for (size_t i = 0; i < e->bufs.n && blob->shm == NULL; i++)
        if (e->bufs.v[i].shm != POOL_WIRE_SHM_INLINE) {
            blob->shm = e->shm;
            pool__shm_ref(e->shm);
        }
    if (doc != NULL) {
        blob->doc = *doc;
        *doc = NULL;
    }
    b->job = j;
    pool__job_ref(j);
    b->blob = blob;
    b->first = first;
    b->count = count;
    b->flags = j->flags;
    b->items = e->buf.data;
    b->items_len = e->buf.len;
    b->bufs = e->bufs.v;
    b->nbufs = (uint32_t)e->bufs.n;
    memset(e, 0, sizeof *e);
    return b;
}

static pk_err_t make_call(const char *module, const char *func,
                          const pk_value_t *kwargs, pool__job_t *j,
                          pk_error_t *err)
{
    if (module == NULL || func == NULL || module[0] == '\0' || func[0] == '\0')
        return pk__err(err, PK_EINVAL, "module and func must be named");
    if (kwargs != NULL && kwargs->type != PK_DICT)
        return pk__err(err, PK_EINVAL, "kwargs must be a dict, not %s",
                       pk_type_name((pk_type_t)kwargs->type));
    pk_doc_t *d = NULL;
    if (pk_doc_new(&d) != PK_OK)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pk_buf_t b = {0};
    pk_value_t *g = pk_global(d, module, func);
    pk_err_t rc = g ? pk_dumps(g, NULL, &b, err)
                    : pk__err(err, PK_ENOMEM, "out of memory");
    if (rc == PK_OK && kwargs != NULL && pk_len(kwargs) > 0)
        rc = pk_dumps(kwargs, NULL, &b, err);
    pk_doc_free(&d);
    if (rc != PK_OK) {
        pk_buf_free(&b);
        return rc;
    }
    j->call = b.data;
    j->call_len = b.len;
    return PK_OK;
}

/* ---- jobs and the caller's driver -----------------------------------------
 */

enum src_kind { SRC_VALUES, SRC_NEXT, SRC_I64, SRC_F64, SRC_F32, SRC_APPLY };

typedef struct drive {
    pool_t *p;
    pool__job_t *j;
    int src;
    const pk_value_t *const *items;
    pool_next_fn next;
    void *ctx;
    const void *vec; /* int64 / double input */
    const float *const *f32;
    const size_t *lens;
    size_t n;   /* input length when known */
    size_t pos; /* next input index */
    int eof;
    size_t submitted, completed;
    size_t held;       /* completed but not yet delivered (reorder buffer) */
    pk_err_t input_rc; /* the input function failed */
    pk_error_t input_err;
    int borrows;            /* batches borrow the caller's memory */
    pool__outcome_t *local; /* outcomes made on this side */
    size_t item_bytes;      /* encoded bytes per item of the last batch */
    pool__lane_ticket_t lane; /* an apply posted on a fast lane */
} drive_t;

static pk_err_t job_start(drive_t *d, pool_t *p, int kind, uint16_t flags,
                          const char *module, const char *func,
                          const pk_value_t *kwargs,
                          const pool_call_opts_t *copts, size_t total,
                          pk_error_t *err)
{
    pool__job_t *j = pk__calloc(1, sizeof *j);
    if (j == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    atomic_init(&j->refs, 1);
    atomic_init(&j->item_ns, 0);
    j->p = p;
    j->kind = kind;
    j->flags = flags;
    j->total = total;
    double to = p->cfg.timeout;
    j->chunksize = p->cfg.chunksize;
    if (copts != NULL && (copts->size < offsetof(pool_call_opts_t, timeout) +
                                            sizeof copts->timeout ||
                          copts->size > sizeof *copts)) {
        pk__free(j);
        return pk__err(err, PK_EINVAL,
                       "pool_call_opts_t.size is %zu, not %zu: fill the "
                       "options with pool_call_opts_init()",
                       copts->size, sizeof *copts);
    }
    if (copts != NULL) {
        if (copts->chunksize)
            j->chunksize = copts->chunksize;
        if (copts->timeout > 0)
            to = copts->timeout;
        else if (copts->timeout < 0)
            to = 0;
    }
    if (j->chunksize > POOL_WIRE_MAX_COUNT)
        j->chunksize = POOL_WIRE_MAX_COUNT;
    j->timeout_ns = to > 0 ? (uint64_t)(to * 1e9) : 0;
    if (j->timeout_ns == 0 && to > 0)
        j->timeout_ns = 1;
    pk_err_t rc = make_call(module, func, kwargs, j, err);
    if (rc != PK_OK) {
        pk__free(j);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    if (p->lk.closed)
        rc = pk__err(err, PK_ECLOSED, "the pool is closed");
    else if (p->lk.broken != PK_OK)
        rc = pk__err(err, p->lk.broken, "%s", p->lk.broken_msg);
    else {
        j->active = 1;
        p->lk.active_jobs++;
        p->lk.open_drives++;
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != PK_OK) {
        pool__job_unref(j);
        return rc;
    }
    memset(d, 0, sizeof *d);
    d->p = p;
    d->j = j;
    d->lane.slot = -1;
    return PK_OK;
}

static size_t pick_chunk(drive_t *d)
{
    pool__job_t *j = d->j;
    if (d->src == SRC_APPLY)
        return 1;
    size_t c = j->chunksize;
    if (c == 0) {
        uint64_t ns = atomic_load(&j->item_ns);
        c = ns == 0 ? FIRST_CHUNK : (size_t)(TARGET_BATCH_NS / ns);
        if (c > MAX_CHUNK)
            c = MAX_CHUNK;
        if (j->total != SIZE_MAX) {
            size_t per = 4 * (size_t)d->p->cfg.nworkers;
            size_t cap = (j->total + per - 1) / per;
            if (c > cap)
                c = cap;
        }
        /* Big items (arrays): a few MiB a batch, so the window (and the
         * arena pages it touches) stays small even before item times are
         * known. */
        size_t ib = d->src == SRC_F32 && d->pos < d->n ? d->lens[d->pos] * 4
                                                       : d->item_bytes;
        if (ib > 0 && c > BATCH_BYTES / ib)
            c = BATCH_BYTES / ib;
        if (c < 1)
            c = 1;
    }
    return c;
}

static void local_outcome(drive_t *d, size_t first, size_t count,
                          pk_err_t status, const char *msg)
{
    while (count > 0) {
        uint32_t c = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        pool__outcome_t *o = pool__outcome_synth(d->j, first, c, status, msg);
        if (o == NULL)
            return;
        o->next = d->local;
        d->local = o;
        d->submitted += c;
        first += c;
        count -= c;
    }
}

/* Encodes one batch of up to `chunk` items from the input.  Returns the
 * batch, or NULL at the end of input, on an input error (d->input_rc) or when
 * an item could not be pickled (it gets a local outcome). */
static pool__batch_t *make_batch(drive_t *d, size_t chunk)
{
    pool__job_t *j = d->j;
    size_t first = d->pos;
    if (d->src == SRC_I64 || d->src == SRC_F64) {
        size_t c = d->n - d->pos < chunk ? d->n - d->pos : chunk;
        pool__batch_t *b = pk__calloc(1, sizeof *b);
        pool__blob_t *blob = b ? pool__blob_new(j) : NULL;
        if (blob == NULL) {
            pk__free(b);
            d->input_rc = pk__err(&d->input_err, PK_ENOMEM, "out of memory");
            d->eof = 1;
            return NULL;
        }
        b->job = j;
        pool__job_ref(j);
        b->blob = blob;
        b->first = first;
        b->count = (uint32_t)c;
        b->flags = j->flags;
        b->items = (const uint8_t *)d->vec + first * 8;
        b->items_len = c * 8;
        d->pos += c;
        if (d->pos == d->n)
            d->eof = 1;
        return b;
    }
    enc_t e;
    memset(&e, 0, sizeof e);
    e.oob = d->src != SRC_APPLY;
    e.shm = d->p->cfg.shm;
    pk_doc_t *doc = NULL;
    if ((d->src == SRC_NEXT || d->src == SRC_F32) &&
        pk_doc_new(&doc) != PK_OK) {
        d->input_rc = pk__err(&d->input_err, PK_ENOMEM, "out of memory");
        d->eof = 1;
        return NULL;
    }
    uint32_t count = 0;
    while (count < chunk && !d->eof) {
        const pk_value_t *v = NULL;
        pk_error_t ie;
        pk_error_clear(&ie);
        if (d->src == SRC_NEXT) {
            pk_value_t *x = NULL;
            pk_err_t rc = d->next(d->ctx, doc, &x);
            if (rc != PK_OK) {
                d->input_rc = rc;
                d->input_err = ie;
                if (ie.msg[0] == '\0')
                    pk__err(&d->input_err, rc, "the input function failed: %s",
                            pk_strerror(rc));
                d->eof = 1;
                break;
            }
            if (x == NULL) {
                d->eof = 1;
                break;
            }
            v = x;
        } else if (d->src == SRC_F32) {
            static const pk_dtype_t f4 = {'f', '<', 0, 4};
            int64_t shape = (int64_t)d->lens[d->pos];
            v = pk_ndarray(doc, &f4, 1, &shape, (void *)d->f32[d->pos],
                           PK_VF_BORROWED | PK_VF_READONLY);
            if (v == NULL) {
                d->input_rc =
                    pk__err(&d->input_err, PK_ENOMEM, "out of memory");
                d->eof = 1;
                break;
            }
        } else {
            v = d->items[d->pos];
        }
        pk_err_t rc =
            v ? enc_item(&e, v, &ie) : pk__err(&ie, PK_EINVAL, "item is NULL");
        size_t idx = d->pos++;
        if (d->src != SRC_NEXT && d->pos == d->n)
            d->eof = 1;
        if (rc != PK_OK) {
            /* This item alone fails; the batch so far goes out first. */
            char msg[300];
            snprintf(msg, sizeof msg, "cannot pickle item %zu: %s", idx,
                     ie.msg[0] ? ie.msg : pk_strerror(rc));
            if (count > 0) {
                pool__batch_t *b = enc_batch(j, &e, &doc, first, count);
                if (b == NULL)
                    local_outcome(d, first, count, PK_ENOMEM, "out of memory");
                local_outcome(d, idx, 1, rc, msg);
                enc_free(&e);
                pk_doc_free(&doc);
                return b;
            }
            local_outcome(d, idx, 1, rc, msg);
            first = d->pos;
            continue;
        }
        count++;
    }
    pool__batch_t *b = NULL;
    if (count > 0) {
        size_t bytes = e.buf.len;
        for (size_t i = 0; i < e.bufs.n; i++)
            bytes += e.bufs.v[i].len;
        d->item_bytes = bytes / count;
        b = enc_batch(j, &e, &doc, first, count);
        if (b == NULL)
            local_outcome(d, first, count, PK_ENOMEM, "out of memory");
    }
    enc_free(&e);
    pk_doc_free(&doc);
    return b;
}

/* Items a streaming job may have submitted and not yet delivered: enough to
 * keep every worker's credit full twice over, and no more (backpressure). */
static size_t window_of(const drive_t *d, size_t chunk)
{
    return 2 * (size_t)d->p->cfg.nworkers * (size_t)d->p->cfg.prefetch * chunk;
}

/* The job takes no more of the master's attention (p->mu held). */
static void job_deactivate(pool_t *p, pool__job_t *j)
{
    if (j->active) {
        j->active = 0;
        p->lk.active_jobs--;
    }
}

/* Submits batches while the window allows.  Called without p->mu. */
static void feed(drive_t *d)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    if (d->eof)
        return;
    pool__batch_t *h = NULL, *t = NULL;
    size_t nsub = 0;
    for (;;) {
        if (d->eof)
            break;
        size_t chunk = pick_chunk(d);
        if (d->submitted + nsub - d->completed + d->held >= window_of(d, chunk))
            break;
        pool__batch_t *b = make_batch(d, chunk);
        if (b == NULL)
            continue;
        nsub += b->count;
        if (t)
            t->next = b;
        else
            h = b;
        t = b;
        if (d->src == SRC_APPLY)
            break;
    }
    /* A single call goes straight to an idle worker's lane if one polls:
     * the master need not even wake up (unless a close waits on it). */
    int laned = d->src == SRC_APPLY && h != NULL &&
                pool__lane_post(p, h, &d->lane);
    if (laned)
        h = t = NULL;
    pthread_mutex_lock(&p->mu);
    if (h != NULL) {
        if (p->lk.subq_tail)
            p->lk.subq_tail->next = h;
        else
            p->lk.subq_head = h;
        p->lk.subq_tail = t;
    }
    if (d->eof)
        job_deactivate(p, j);
    int wake = h != NULL || (d->eof && (!laned || p->lk.closed));
    pthread_mutex_unlock(&p->mu);
    d->submitted += nsub;
    if (wake)
        pool__master_wake(p);
}

/* Stops the job: no more input, the master drops what is left of it. */
static void job_cancel(drive_t *d)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    pthread_mutex_lock(&p->mu);
    if (!j->canceled) {
        j->canceled = 1;
        j->cancel_ns = pool__now_ns();
        p->lk.cancel_pending = 1;
    }
    job_deactivate(p, j);
    pool__outcome_t *o = j->done_head;
    j->done_head = j->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    d->eof = 1;
    pool__master_wake(p);
    while (o != NULL) {
        pool__outcome_t *n = o->next;
        pool__outcome_free(o);
        o = n;
    }
    while (d->local != NULL) {
        pool__outcome_t *n = d->local->next;
        pool__outcome_free(d->local);
        d->local = n;
    }
}

/* Ends the job; with borrowed caller memory, waits until nothing refers to
 * it any more.  Frees the drive's job reference. */
static void job_end(drive_t *d)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    if (j == NULL)
        return;
    if (d->completed < d->submitted || !d->eof)
        job_cancel(d);
    pthread_mutex_lock(&p->mu);
    job_deactivate(p, j);
    if (d->borrows)
        while (j->blobs > 0)
            pthread_cond_wait(&p->cv, &p->mu);
    p->lk.open_drives--;
    pthread_mutex_unlock(&p->mu);
    pool__master_wake(p);
    pool__job_unref(j);
    d->j = NULL;
}

/* Feeds input and waits for outcomes.  Returns PK_OK with *got the list
 * (NULL when the map is complete), PK_ETIMEDOUT, PK_EINTR, or the pool's
 * failure (PK_ECRASHED when workers keep dying) with err filled. */
static pk_err_t pump(drive_t *d, pool__outcome_t **got,
                     const struct timespec *deadline, pk_error_t *err)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    *got = NULL;
    for (;;) {
        if (d->local != NULL) {
            *got = d->local;
            d->local = NULL;
            for (pool__outcome_t *o = *got; o; o = o->next)
                d->completed += o->count;
            return PK_OK;
        }
        feed(d);
        if (d->local != NULL)
            continue;
        pthread_mutex_lock(&p->mu);
        pk_err_t rc = PK_OK;
        for (;;) {
            if (j->done_head != NULL) {
                *got = j->done_head;
                j->done_head = j->done_tail = NULL;
                break;
            }
            if (p->lk.broken != PK_OK) {
                rc = pk__err(err, p->lk.broken, "%s", p->lk.broken_msg);
                break;
            }
            if (d->eof && d->completed >= d->submitted)
                break;
            if (!d->eof && p->lk.terminate_req) {
                /* Nothing more will run: cancel the rest of the input. */
                pthread_mutex_unlock(&p->mu);
                if (d->src == SRC_NEXT || d->src == SRC_APPLY) {
                    d->eof = 1;
                } else {
                    local_outcome(d, d->pos, d->n - d->pos, PK_ECANCELED,
                                  "the pool was terminated");
                    d->pos = d->n;
                    d->eof = 1;
                }
                pthread_mutex_lock(&p->mu);
                job_deactivate(p, j);
                break;
            }
            if (!d->eof && d->submitted - d->completed + d->held <
                               window_of(d, pick_chunk(d)))
                break; /* room to feed more */
            rc = cv_wait(p, deadline);
            if (rc != PK_OK)
                break;
        }
        pthread_mutex_unlock(&p->mu);
        if (rc == PK_EINTR)
            pk__err(err, PK_EINTR, "interrupted by a signal");
        else if (rc == PK_ETIMEDOUT)
            pk__err(err, PK_ETIMEDOUT, "no outcome within the timeout");
        if (rc != PK_OK)
            return rc;
        if (*got != NULL) {
            for (pool__outcome_t *o = *got; o; o = o->next)
                d->completed += o->count;
            return PK_OK;
        }
        if (d->local != NULL)
            continue;
        if (d->eof && d->completed >= d->submitted)
            return PK_OK;
    }
}

/* ---- decoding outcomes ----------------------------------------------------
 */

static void close_frames(void *arg)
{
    pool__outcome_t *o = arg;
    o->job = NULL; /* the job reference was dropped already */
    pool__outcome_free(o);
}

static const char *doc_strdup(pk_doc_t *doc, const char *s, size_t len)
{
    char *c = pk_doc_alloc(doc, len + 1);
    if (c == NULL)
        return "out of memory";
    memcpy(c, s, len);
    c[len] = '\0';
    return c;
}

static void item_fail(pool_item_t *it, pk_doc_t *doc, pk_err_t st,
                      const char *msg, size_t len)
{
    it->status = st;
    it->value = NULL;
    it->error = doc_strdup(doc, msg, len);
}

/* Decodes o's items into items[0..o->count) with values and messages in doc;
 * consumes o.  Values borrow the buffers: frames, and arena blocks too with
 * borrow_shm (which then stay allocated until doc is freed: for a scratch doc
 * freed at once); otherwise arena blocks are copied into doc and released
 * now.  Returns the number of failed items. */
static size_t decode_outcome(pool__outcome_t *o, pk_doc_t *doc,
                             pool_item_t *items, int borrow_shm)
{
    size_t failed = 0, count = o->count;
    for (size_t i = 0; i < count; i++) {
        items[i].index = o->first + i;
        items[i].value = NULL;
        items[i].error = NULL;
    }
    if (o->frames == NULL) {
        const char *m = o->msg ? o->msg : pk_strerror(o->status);
        const char *dm = doc_strdup(doc, m, strlen(m));
        for (size_t i = 0; i < count; i++) {
            items[i].status = o->status;
            items[i].error = dm;
        }
        failed = o->status != PK_OK ? count : 0;
        pool__outcome_free(o);
        return failed;
    }
    const uint8_t *data = zmq_msg_data(&o->frames[0]);
    size_t len = zmq_msg_size(&o->frames[0]);
    if (o->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        for (size_t i = 0; i < count; i++) {
            uint64_t bits = pk__ld64(data + i * 8);
            pk_value_t *v;
            if (o->flags & POOL_WIRE_F_VEC_I64) {
                v = pk_int(doc, (int64_t)bits);
            } else {
                double f;
                memcpy(&f, &bits, 8);
                v = pk_float(doc, f);
            }
            if (v == NULL) {
                item_fail(&items[i], doc, PK_ENOMEM, "out of memory", 13);
                failed++;
            } else {
                items[i].status = PK_OK;
                items[i].value = v;
            }
        }
        pool__outcome_free(o);
        return failed;
    }
    pool__wire_rec_t *r = pk__malloc(count * sizeof *r);
    pk_buffer_t *bufs = pk__malloc(((size_t)o->nbufs + 1) * sizeof *bufs);
    int ok = r != NULL && bufs != NULL &&
             pool__wire_recs_parse(data, len, o->count, o->nbufs, 1, r, NULL) ==
                 PK_OK;
    if (ok && o->nbufs > 0) {
        /* Values will borrow the buffer frames: they live as long as doc
         * (the outcome's job reference is not needed for that). */
        pool__job_unref(o->job);
        o->job = NULL;
        if (pk_doc_on_free(doc, close_frames, o) != PK_OK) {
            ok = 0;
        }
    }
    if (!ok) {
        for (size_t i = 0; i < count; i++)
            item_fail(&items[i], doc, PK_ENOMEM, "out of memory", 13);
        pk__free(r);
        pk__free(bufs);
        pool__outcome_free(o);
        return count;
    }
    for (uint32_t k = 0; k < o->nbufs; k++) {
        bufs[k].data = zmq_msg_data(&o->frames[1 + k]);
        bufs[k].len = zmq_msg_size(&o->frames[1 + k]);
        bufs[k].readonly = 1;
    }
    if (o->ents != NULL) {
        int borrowed = 0;
        for (uint32_t k = 0; k < o->nbufs; k++) {
            if (o->ents[k].off == POOL_WIRE_SHM_INLINE)
                continue;
            const uint8_t *src = o->shm->base + o->ents[k].off;
            size_t n = (size_t)o->ents[k].len;
            void *c = borrow_shm ? NULL : pk_doc_alloc(doc, n);
            if (c != NULL)
                memcpy(c, src, n);
            else
                borrowed = 1; /* released when doc is freed */
            bufs[k].data = c != NULL ? c : src;
            bufs[k].len = n;
        }
        if (!borrowed)
            pool__outcome_shm_release(o);
    }
    for (size_t i = 0; i < count; i++) {
        if (r[i].status != 0) {
            item_fail(&items[i], doc, (pk_err_t)r[i].status,
                      (const char *)r[i].data, r[i].len);
            failed++;
            continue;
        }
        pk_load_opts_t lo;
        pk_load_opts_init(&lo);
        lo.buffers = bufs + r[i].buf0;
        lo.nbuffers = r[i].nbufs;
        pk_value_t *v = NULL;
        pk_error_t e;
        pk_error_clear(&e);
        pk_err_t rc = pk_loads(doc, r[i].data, r[i].len, &lo, &v, NULL, &e);
        if (rc != PK_OK) {
            char m[300];
            int n =
                snprintf(m, sizeof m, "cannot unpickle the result: %s", e.msg);
            item_fail(&items[i], doc, rc, m,
                      (size_t)(n < (int)sizeof m ? n : (int)sizeof m - 1));
            failed++;
            continue;
        }
        items[i].status = PK_OK;
        items[i].value = v;
    }
    pk__free(r);
    pk__free(bufs);
    if (o->nbufs == 0)
        pool__outcome_free(o);
    return failed;
}

/* ---- pool_map and results ---------------------------------------------------
 */

struct pool_results {
    size_t n, nfailed;
    pool_item_t *items;
    pk_doc_t *doc;
};

size_t pool_results_len(const pool_results_t *r)
{
    return r->n;
}
size_t pool_results_failed(const pool_results_t *r)
{
    return r->nfailed;
}

const pool_item_t *pool_results_item(const pool_results_t *r, size_t i)
{
    return i < r->n ? &r->items[i] : NULL;
}

void pool_results_free(pool_results_t **rp)
{
    if (rp == NULL || *rp == NULL)
        return;
    pool_results_t *r = *rp;
    *rp = NULL;
    pk_doc_free(&r->doc);
    pk__free(r->items);
    pk__free(r);
}

/* Runs a whole map on the caller's thread; `sink` consumes each outcome. */
typedef void (*sink_fn)(void *ctx, pool__outcome_t *o);

static pk_err_t run_all(drive_t *d, sink_fn sink, void *ctx, pk_error_t *err)
{
    pk_err_t rc = PK_OK;
    block_enter();
    for (;;) {
        pool__outcome_t *got = NULL;
        rc = pump(d, &got, NULL, err);
        if (rc != PK_OK)
            break;
        if (got == NULL)
            break;
        while (got != NULL) {
            pool__outcome_t *n = got->next;
            got->next = NULL;
            sink(ctx, got);
            got = n;
        }
        if (d->input_rc != PK_OK)
            break;
    }
    block_leave();
    if (rc == PK_OK && d->input_rc != PK_OK) {
        rc = d->input_rc;
        if (err != NULL)
            *err = d->input_err;
    }
    if (rc != PK_OK)
        job_cancel(d);
    job_end(d);
    return rc;
}

typedef struct map_sink {
    pool_results_t *r;
} map_sink_t;

static void map_sink(void *ctx, pool__outcome_t *o)
{
    map_sink_t *s = ctx;
    if (o->first + o->count > s->r->n) {
        pool__outcome_free(o);
        return;
    }
    s->r->nfailed += decode_outcome(o, s->r->doc, s->r->items + o->first, 0);
}

pk_err_t pool_map(pool_t *p, const char *module, const char *func,
                  const pk_value_t *const *items, size_t n,
                  const pool_call_opts_t *copts, pool_results_t **out,
                  pk_error_t *err)
{
    if (p == NULL || out == NULL || (items == NULL && n > 0))
        return pk__err(err, PK_EINVAL, "pool_map: NULL argument");
    pool_results_t *r = pk__calloc(1, sizeof *r);
    if (r == NULL || pk_doc_new(&r->doc) != PK_OK ||
        (r->items = pk__calloc(n ? n : 1, sizeof *r->items)) == NULL) {
        pool_results_free(&r);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    r->n = n;
    drive_t d;
    pk_err_t rc =
        job_start(&d, p, POOL_JOB_MAP, 0, module, func, NULL, copts, n, err);
    if (rc != PK_OK) {
        pool_results_free(&r);
        return rc;
    }
    d.src = SRC_VALUES;
    d.items = items;
    d.n = n;
    d.eof = n == 0;
    d.borrows = 1;
    map_sink_t s = {r};
    rc = run_all(&d, map_sink, &s, err);
    if (rc != PK_OK) {
        pool_results_free(&r);
        return rc;
    }
    *out = r;
    return PK_OK;
}

/* ---- convenience maps
 * -------------------------------------------------------- */

typedef struct vec_sink {
    int kind; /* SRC_I64, SRC_F64, SRC_F32 */
    void *out;
    float *const *f32_out;
    const size_t *lens;
    pk_err_t *status; /* per item, or NULL */
    size_t nfailed;
    size_t first_fail; /* lowest failed index */
    pk_err_t first_rc;
    char first_msg[256];
    pk_doc_t *scratch;
} vec_sink_t;

static void vec_fail(vec_sink_t *s, size_t idx, pk_err_t rc, const char *msg,
                     size_t len)
{
    s->nfailed++;
    if (s->status != NULL)
        s->status[idx] = rc;
    if (s->first_rc == PK_OK || idx < s->first_fail) {
        s->first_fail = idx;
        s->first_rc = rc;
        if (len >= sizeof s->first_msg)
            len = sizeof s->first_msg - 1;
        memcpy(s->first_msg, msg, len);
        s->first_msg[len] = '\0';
    }
}

static void vec_store(vec_sink_t *s, size_t idx, const pk_value_t *v)
{
    if (s->kind == SRC_I64) {
        int64_t x;
        if (pk_as_int(v, &x) == PK_OK)
            ((int64_t *)s->out)[idx] = x;
        else
            vec_fail(s, idx, PK_ETYPE, "TypeError: expected an int result", 34);
    } else if (s->kind == SRC_F64) {
        double x;
        if (pk_as_double(v, &x) == PK_OK)
            ((double *)s->out)[idx] = x;
        else
            vec_fail(s, idx, PK_ETYPE, "TypeError: expected a float result",
                     35);
    } else {
        const pk_ndarray_t *nd = v->type == PK_NDARRAY ? v->u.nd : NULL;
        if (nd == NULL || nd->dtype.kind != 'f' || nd->dtype.itemsize != 4 ||
            nd->dtype.byteorder == '>' || nd->nbytes != s->lens[idx] * 4) {
            char m[160];
            int n = snprintf(m, sizeof m,
                             "TypeError: expected a float32 array of %zu "
                             "items, got %s",
                             s->lens[idx], pk_type_name((pk_type_t)v->type));
            vec_fail(s, idx, PK_ETYPE, m, (size_t)n);
        } else if (nd->ndim > 1 && (v->flags & PK_VF_FORTRAN)) {
            vec_fail(s, idx, PK_ETYPE,
                     "TypeError: expected a C-contiguous result", 41);
        } else if (nd->nbytes) {
            memcpy(s->f32_out[idx], nd->data, nd->nbytes);
        }
    }
}

static void vec_sink(void *ctx, pool__outcome_t *o)
{
    vec_sink_t *s = ctx;
    if (o->frames == NULL) {
        const char *m = o->msg ? o->msg : pk_strerror(o->status);
        for (uint32_t i = 0; i < o->count; i++)
            vec_fail(s, o->first + i, o->status, m, strlen(m));
        pool__outcome_free(o);
        return;
    }
    if (o->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        /* Raw results straight into the output array. */
        memcpy((uint8_t *)s->out + o->first * 8, zmq_msg_data(&o->frames[0]),
               (size_t)o->count * 8);
        pool__outcome_free(o);
        return;
    }
    /* Records: decode each result on its own into a scratch doc. */
    pool_item_t *items = pk__malloc((size_t)o->count * sizeof *items);
    pk_doc_t *doc = NULL;
    if (items == NULL || pk_doc_new(&doc) != PK_OK) {
        for (uint32_t i = 0; i < o->count; i++)
            vec_fail(s, o->first + i, PK_ENOMEM, "out of memory", 13);
        pk__free(items);
        pool__outcome_free(o);
        return;
    }
    size_t first = o->first, count = o->count;
    decode_outcome(o, doc, items, 1); /* doc is scratch: no copy */
    for (size_t i = 0; i < count; i++) {
        if (items[i].status == PK_OK)
            vec_store(s, first + i, items[i].value);
        else
            vec_fail(s, first + i, items[i].status, items[i].error,
                     strlen(items[i].error));
    }
    pk_doc_free(&doc);
    pk__free(items);
}

static pk_err_t vec_map(pool_t *p, const char *module, const char *func,
                        int kind, const void *in, void *out,
                        const float *const *f32_in, float *const *f32_out,
                        const size_t *lens, size_t n,
                        const pool_call_opts_t *copts, pk_err_t *status,
                        size_t *nfailed, pk_error_t *err)
{
    if (nfailed != NULL)
        *nfailed = 0;
    if (p == NULL ||
        (n > 0 &&
         (kind == SRC_F32 ? (f32_in == NULL || f32_out == NULL || lens == NULL)
                          : (in == NULL || out == NULL))))
        return pk__err(err, PK_EINVAL, "NULL argument");
    uint16_t flags = kind == SRC_I64 ? POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_RES_I64
                     : kind == SRC_F64
                         ? POOL_WIRE_F_VEC_F64 | POOL_WIRE_F_RES_F64
                         : 0;
    drive_t d;
    pk_err_t rc = job_start(&d, p, POOL_JOB_MAP, flags, module, func, NULL,
                            copts, n, err);
    if (rc != PK_OK)
        return rc;
    if (status != NULL)
        for (size_t i = 0; i < n; i++)
            status[i] = PK_OK;
    d.src = kind;
    d.vec = in;
    d.f32 = f32_in;
    d.lens = lens;
    d.n = n;
    d.eof = n == 0;
    d.borrows = 1;
    vec_sink_t s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.out = out;
    s.f32_out = f32_out;
    s.lens = lens;
    s.status = status;
    rc = run_all(&d, vec_sink, &s, err);
    if (rc != PK_OK)
        return rc;
    if (nfailed != NULL)
        *nfailed = s.nfailed;
    if (s.nfailed > 0)
        pk__err(err, s.first_rc, "%zu item%s failed; item %zu: %s",
                s.nfailed, s.nfailed == 1 ? "" : "s", s.first_fail,
                s.first_msg);
    return PK_OK;
}

pk_err_t pool_map_i64(pool_t *p, const char *module, const char *func,
                      const int64_t *in, int64_t *out, size_t n,
                      const pool_call_opts_t *copts, pk_err_t *status,
                      size_t *nfailed, pk_error_t *err)
{
    return vec_map(p, module, func, SRC_I64, in, out, NULL, NULL, NULL, n,
                   copts, status, nfailed, err);
}

pk_err_t pool_map_f64(pool_t *p, const char *module, const char *func,
                      const double *in, double *out, size_t n,
                      const pool_call_opts_t *copts, pk_err_t *status,
                      size_t *nfailed, pk_error_t *err)
{
    return vec_map(p, module, func, SRC_F64, in, out, NULL, NULL, NULL, n,
                   copts, status, nfailed, err);
}

pk_err_t pool_map_f32_arrays(pool_t *p, const char *module, const char *func,
                             const float *const *in, float *const *out,
                             const size_t *lens, size_t n,
                             const pool_call_opts_t *copts, pk_err_t *status,
                             size_t *nfailed, pk_error_t *err)
{
    return vec_map(p, module, func, SRC_F32, NULL, NULL, in, out, lens, n,
                   copts, status, nfailed, err);
}

/* ---- iterators
 * ----------------------------------------------------------------- */

struct pool_iter {
    drive_t d;
    int ordered;
    pool__outcome_t *pending; /* sorted by first when ordered */
    size_t next_index;
    pk_doc_t *cdoc;
    pool_item_t *citems;
    size_t ccount, cpos;
    int ended;
    pk_err_t final;
    pk_error_t ferr;
};

static pk_err_t imap_start(pool_t *p, const char *module, const char *func,
                           pool_next_fn next, void *ctx,
                           const pool_call_opts_t *copts, pool_iter_t **itp,
                           int ordered, pk_error_t *err)
{
    if (p == NULL || next == NULL || itp == NULL)
        return pk__err(err, PK_EINVAL, "pool_imap: NULL argument");
    pool_iter_t *it = pk__calloc(1, sizeof *it);
    if (it == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pk_err_t rc =
        job_start(&it->d, p, ordered ? POOL_JOB_IMAP : POOL_JOB_IMAP_UNORDERED,
                  0, module, func, NULL, copts, SIZE_MAX, err);
    if (rc != PK_OK) {
        pk__free(it);
        return rc;
    }
    it->d.src = SRC_NEXT;
    it->d.next = next;
    it->d.ctx = ctx;
    it->ordered = ordered;
    feed(&it->d); /* prime the window */
    *itp = it;
    return PK_OK;
}

pk_err_t pool_imap(pool_t *p, const char *module, const char *func,
                   pool_next_fn next, void *ctx, const pool_call_opts_t *copts,
                   pool_iter_t **it, pk_error_t *err)
{
    return imap_start(p, module, func, next, ctx, copts, it, 1, err);
}

pk_err_t pool_imap_unordered(pool_t *p, const char *module, const char *func,
                             pool_next_fn next, void *ctx,
                             const pool_call_opts_t *copts, pool_iter_t **it,
                             pk_error_t *err)
{
    return imap_start(p, module, func, next, ctx, copts, it, 0, err);
}

static void pending_add(pool_iter_t *it, pool__outcome_t *o)
{
    pool__outcome_t **pp = &it->pending;
    if (it->ordered)
        while (*pp != NULL && (*pp)->first < o->first)
            pp = &(*pp)->next;
    else
        while (*pp != NULL)
            pp = &(*pp)->next;
    o->next = *pp;
    *pp = o;
}

static void chunk_clear(pool_iter_t *it)
{
    pk_doc_free(&it->cdoc);
    pk__free(it->citems);
    it->citems = NULL;
    it->ccount = it->cpos = 0;
}

pk_err_t pool_iter_next(pool_iter_t *it, pool_item_t *item, double timeout)
{
    if (it == NULL || item == NULL)
        return PK_EINVAL;
    struct timespec dl = deadline_in(timeout);
    for (;;) {
        if (it->cpos < it->ccount) {
            *item = it->citems[it->cpos++];
            return PK_OK;
        }
        chunk_clear(it);
        if (it->ended)
            return it->final;
        pool__outcome_t *o = it->pending;
        if (o != NULL && (!it->ordered || o->first == it->next_index)) {
            it->pending = o->next;
            o->next = NULL;
            it->d.held -= o->count;
            it->citems = pk__malloc((size_t)o->count * sizeof *it->citems);
            if (it->citems == NULL || pk_doc_new(&it->cdoc) != PK_OK) {
                pool__outcome_free(o);
                it->ended = 1;
                it->final = PK_ENOMEM;
                job_end(&it->d);
                continue;
            }
            it->ccount = o->count;
            it->next_index = o->first + o->count;
            decode_outcome(o, it->cdoc, it->citems, 0);
            continue;
        }
        if (it->d.input_rc != PK_OK) {
            it->ended = 1;
            it->final = it->d.input_rc;
            it->ferr = it->d.input_err;
            job_cancel(&it->d);
            job_end(&it->d);
            continue;
        }
        pool__outcome_t *got = NULL;
        pk_error_t e;
        block_enter();
        pk_err_t rc = pump(&it->d, &got, timeout < 0 ? NULL : &dl, &e);
        block_leave();
        if (rc == PK_ETIMEDOUT)
            return rc;
        if (rc != PK_OK) {
            it->ended = 1;
            it->final = rc;
            it->ferr = e;
            job_cancel(&it->d);
            job_end(&it->d);
            continue;
        }
        if (got == NULL) {
            if (it->pending != NULL) {
                /* Cannot happen: every index is covered once. */
                it->pending->first = it->next_index;
                continue;
            }
            if (it->d.input_rc != PK_OK)
                continue;
            it->ended = 1;
            it->final = PK_EOF;
            job_end(&it->d);
            continue;
        }
        while (got != NULL) {
            pool__outcome_t *n = got->next;
            it->d.held += got->count; /* the window counts them until
                                         they are delivered */
            pending_add(it, got);
            got = n;
        }
    }
}

void pool_iter_free(pool_iter_t **itp)
{
    if (itp == NULL || *itp == NULL)
        return;
    pool_iter_t *it = *itp;
    *itp = NULL;
    chunk_clear(it);
    while (it->pending != NULL) {
        pool__outcome_t *n = it->pending->next;
        pool__outcome_free(it->pending);
        it->pending = n;
    }
    if (it->d.j != NULL) {
        job_cancel(&it->d);
        job_end(&it->d);
    }
    pk__free(it);
}

/* ---- apply and futures
 * --------------------------------------------------------- */

struct pool_future {
    drive_t d;
    const pk_value_t *args;
    int done;
    pk_doc_t *doc;
    pool_item_t item;
};

pk_err_t pool_apply_async(pool_t *p, const char *module, const char *func,
                          const pk_value_t *args, const pk_value_t *kwargs,
                          pool_future_t **fut, pk_error_t *err)
{
    if (p == NULL || args == NULL || fut == NULL)
        return pk__err(err, PK_EINVAL, "pool_apply_async: NULL argument");
    if (args->type != PK_TUPLE)
        return pk__err(err, PK_EINVAL, "args must be a tuple, not %s",
                       pk_type_name((pk_type_t)args->type));
    pool_future_t *f = pk__calloc(1, sizeof *f);
    if (f == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pk_err_t rc = job_start(&f->d, p, POOL_JOB_APPLY, POOL_WIRE_F_STARARGS,
                            module, func, kwargs, NULL, 1, err);
    if (rc != PK_OK) {
        pk__free(f);
        return rc;
    }
    const pk_value_t *items[1] = {args};
    f->d.src = SRC_APPLY;
    f->d.items = items;
    f->d.n = 1;
    feed(&f->d); /* pickled in band now: the caller may free args */
    f->d.items = NULL;
    *fut = f;
    return PK_OK;
}

pk_err_t pool_future_wait(pool_future_t *f, double timeout, pool_item_t *item)
{
    if (f == NULL || item == NULL)
        return PK_EINVAL;
    struct timespec dl = deadline_in(timeout);
    uint64_t dl_ns = timeout < 0 ? 0 : (uint64_t)dl.tv_sec * 1000000000u +
                                           (uint64_t)dl.tv_nsec;
    while (!f->done) {
        pool__outcome_t *got = NULL;
        pk_error_t e;
        pk_err_t rc = PK_OK;
        block_enter();
        if (f->d.lane.slot >= 0) {
            rc = pool__lane_wait(f->d.p, &f->d.lane, dl_ns, &sig_flag, &got);
            if (got != NULL)
                f->d.completed += got->count;
        }
        if (rc == PK_OK && got == NULL)
            rc = pump(&f->d, &got, timeout < 0 ? NULL : &dl, &e);
        block_leave();
        if (rc == PK_ETIMEDOUT || rc == PK_EINTR)
            return rc;
        if (pk_doc_new(&f->doc) != PK_OK) {
            while (got) {
                pool__outcome_t *n = got->next;
                pool__outcome_free(got);
                got = n;
            }
            return PK_ENOMEM;
        }
        f->done = 1;
        f->item.index = 0;
        if (rc != PK_OK || got == NULL) {
            pk_err_t st = rc != PK_OK ? rc : PK_ECANCELED;
            const char *m = rc != PK_OK ? e.msg : pk_strerror(st);
            item_fail(&f->item, f->doc, st, m, strlen(m));
        } else {
            pool__outcome_t *rest = got->next;
            got->next = NULL;
            decode_outcome(got, f->doc, &f->item, 0);
            while (rest) {
                pool__outcome_t *n = rest->next;
                pool__outcome_free(rest);
                rest = n;
            }
        }
        job_end(&f->d);
    }
    *item = f->item;
    return PK_OK;
}

void pool_future_free(pool_future_t **fp)
{
    if (fp == NULL || *fp == NULL)
        return;
    pool_future_t *f = *fp;
    *fp = NULL;
    if (f->d.j != NULL) {
        job_cancel(&f->d);
        job_end(&f->d);
    }
    pk_doc_free(&f->doc);
    pk__free(f);
}

/* ---- statistics
 * ------------------------------------------------------------------ */

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
