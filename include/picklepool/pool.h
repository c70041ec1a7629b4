/*
 * picklepool/pool.h - the worker pool: pool_map and its siblings.
 *
 * A pool is a set of worker processes, one per core by default, each pinned to
 * its core with hwloc.  The caller's process is the master: the library runs
 * the scheduler on a background thread of its own; these calls talk to it.
 * Items are pickled into batches, sent over ZeroMQ, run by workers that call a
 * registered native function (see registry.h), and the results come back in
 * input order (or as completed, for the unordered variants) with a status per
 * item.  A worker that dies (any signal, OOM) is noticed at once, its batches
 * re-queued, and it is respawned; a batch that keeps killing workers is split
 * until the poison item is isolated and only that item fails.
 *
 * Fork discipline: the first pool_create() (or pool_global_init()) loads the
 * hwloc topology and forks a fork server before any ZeroMQ context or
 * library thread exists; workers are forked from that clean, single-threaded
 * process, set PR_SET_PDEATHSIG, bind themselves to their core, and only then
 * create their own ZeroMQ context (so its I/O threads inherit the binding).
 * Programs that start threads of their own before their first pool should call
 * pool_global_init() first, while still single-threaded.  Pools of exec'd
 * workers (worker_argv) may have them forked from the fork server instead,
 * running a main of the caller's (worker_main, pool_global_init_main).
 *
 * Thread-safety: one pool may be used from several threads at once (calls are
 * serialised internally), except pool_destroy, which must not race other calls
 * on the same pool.  Results, iterators and futures are owned by the caller and
 * are not shared.  Fork-safety: do not use a pool in a child forked after its
 * creation; the child must create its own.
 */
#ifndef PICKLEPOOL_POOL_H
#define PICKLEPOOL_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "export.h"
#include "pickle.h"
#include "placement.h"
#include "value.h"
#include "worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pool pool_t;
typedef struct pool_results pool_results_t;
typedef struct pool_iter pool_iter_t;
typedef struct pool_future pool_future_t;

/* Most workers one pool may have. */
#define POOL_MAX_WORKERS 256

/* Options of a pool.  The struct may grow in later versions, at its end
 * only: `size` says which version the caller was built with.  Always fill
 * it with pool_opts_init() and then set fields; pool_create refuses a size
 * it does not know (PK_EINVAL), and gives fields past a smaller (older)
 * size their defaults. */
typedef struct pool_opts {
    size_t size;                /* sizeof(pool_opts_t), set by pool_opts_init */
    int workers;                /* 0: one per core the process may use (at
                                   most POOL_MAX_WORKERS) */
    pool_placement_t placement; /* default compact */
    int prefetch;               /* batches in flight per worker (default 2) */
    size_t chunksize;           /* items per batch; 0: adaptive (default) */
    double timeout;             /* per-item seconds, at most 1e9; 0: none
                                   (default) */
    int retries;                /* crashes an item may survive (default 2) */
    size_t maxtasksperchild;    /* items before a worker retires; 0: never */
    size_t max_rss;             /* bytes; retire a worker above it; 0: none */
    void (*initializer)(void *arg); /* run in each worker once, may be NULL */
    void *initarg;
    const char *const *plugins; /* plugin .so paths, loaded everywhere */
    size_t nplugins;
    const char *topology; /* hwloc synthetic topology (tests), or NULL */
    /* Shared-memory arena for large out-of-band buffers (numpy arrays): one
     * memfd per pool, mapped by the master and every worker, so an input
     * buffer of at least shm_threshold bytes is copied once into it
     * instead of going through the socket (arrays in the shared heap, see
     * picklepool/shared.h, are not copied at all), and a kernel's large
     * result arrays are built in it and come back as views.  It is
     * sparse: it costs memory only for pages in use; freed pages stay
     * resident for reuse in the first 256 MiB of inputs and of each
     * worker's results, and go back to the system above.  shm_bytes 0:
     * 4 GiB of address space (default); SIZE_MAX: no arena (every buffer
     * uses the socket); other values are rounded down to pages (too small:
     * no arena).  shm_threshold 0: 64 KiB (default).  When the arena is
     * full, a map waits (up to 5 s) for the blocks of its running batches
     * to be freed; a buffer that still does not fit, or a result that does
     * not fit in its worker's region, takes the socket. */
    size_t shm_bytes;
    size_t shm_threshold;
    /* Fast lane for single calls (pool_apply_async): a worker that has
     * finished a piece of work and has nothing more to do busy-polls a
     * shared-memory mailbox for up to spin_us microseconds (a fresh worker
     * does not, until its first piece of work: a pool's first call takes
     * the socket), and a caller waiting on a future polls for the reply as
     * long before it sleeps, so a short apply round trip takes no blocking
     * wake-up.  0: 200 us (default); < 0: no fast lane (every call goes
     * through the scheduler thread and the socket).  Costs: each idle
     * worker burns up to spin_us of CPU after its last piece of work. */
    int spin_us;
    /* Exec'd workers (picklepool/worker.h): NULL (default) forks native
     * workers from the fork server.  Otherwise each worker runs this
     * command (argv[0] a path, run with execv: no PATH search;
     * NULL-terminated), with the variables of worker_env ("NAME=value",
     * NULL-terminated, may be NULL) added to its environment; the command
     * must call pool_worker_serve.  Such workers run raw maps
     * (pool_imap_raw) only.  Both lists are copied by pool_create and take
     * at most 8 KiB each.  The initializer is not run in them. */
    const char *const *worker_argv;
    const char *const *worker_env;
    /* Stalled workers: a worker that holds dispatched batches but shows no
     * progress for this many seconds (no result, its slot unchanged, and
     * not running an item, or its process stopped) is killed and replaced,
     * and its batches are sent again; with a per-item timeout smaller than
     * this, the timeout is the bound.  A worker running an item is never
     * stalled (only a timeout bounds an item).  0: 60 s (default); < 0:
     * never; at most 1e9. */
    double stall_timeout;
    /* Remote pools (scale-out): address, when not NULL, is the endpoint of
     * a `picklepool serve` master, "tcp://HOST:PORT", whose host agents
     * (`picklepool worker`) run the work on their machines; the pool has
     * then no local worker but one forwarder process (picklepool-worker
     * --forward, found beside the library or the program, or at
     * $PICKLEPOOL_WORKER_PROGRAM) that carries its batches to the master
     * and the results back.  Every map, iterator and apply works the same
     * (ordering, per-item status, timeouts enforced on the hosts, a host
     * that dies has its batches run elsewhere); functions are found on the
     * hosts (their plugins, or Python there).  keys is the key directory
     * (its own key pair and the master's master.pub; see README, "Keys
     * for tcp endpoints"); insecure non-zero asks for plain tcp instead,
     * and exactly one of the two is required for tcp.  pool_create first
     * connects to the master itself and fails within seconds when it
     * cannot authenticate (PK_EPROTO: "the master refused our key: not
     * allow-listed ...") or reach it (PK_ETIMEDOUT).  A remote pool takes
     * none of workers (but 0 or 1), worker_argv, plugins, initializer,
     * maxtasksperchild, max_rss: those belong to the hosts (PK_EINVAL
     * says so); it has no shared memory (arrays travel by copy) and no
     * fast lane; prefetch counts for 32 (default: 64 batches in flight at
     * the master); stall_timeout (default 60 s) is how long batches wait
     * for an unreachable master before they fail with PK_EIO; pool_stats
     * shows the forwarder as the one worker.  address and keys are
     * copied. */
    const char *address;
    const char *keys;
    int insecure;
    /* Forked workers (picklepool/worker.h): NULL (default) as above.
     * Otherwise each worker is forked from the fork server and calls
     * worker_main(worker_main_arg) instead of exec'ing worker_argv, with
     * the same set-up and worker_env in its environment, when the fork
     * server was started by pool_global_init_main with this very main
     * (and its at_fork hook).  Any other fork server (started by
     * pool_global_init or pool_create, or a later one that replaced it)
     * cannot run it: the workers are then exec'd from worker_argv, and
     * without worker_argv pool_create fails with PK_EINVAL.  The pool
     * chooses once, at pool_create, for its whole life.  worker_main_arg
     * must be valid in the fork server: data that existed when it was
     * started.  The initializer is not run in such workers either.  The
     * worker's ZeroMQ context (and its threads) exists before main is
     * called, so that it connects while main starts. */
    pool_worker_main_fn worker_main;
    void *worker_main_arg;
    /* Start-up: 0 (default): pool_create returns when every worker is
     * ready.  Non-zero: it returns as soon as the workers are being
     * started, so that the caller's next steps (building its first map)
     * overlap their start-up, as multiprocessing.Pool's do; work
     * submitted meanwhile waits for them and goes to the first ready.
     * Workers that keep dying at start-up then fail that work (PK_ECRASHED,
     * "workers keep dying at start-up ...") instead of pool_create;
     * pool_stats shows pid 0 for a worker not yet forked, and
     * pool_wait_ready waits for all of them to be ready. */
    int start_nowait;
    /* New fields go here, at the end: pool_opts_t.size tells the library
     * which fields a caller built against an older header knows. */
} pool_opts_t;

/* Fills *opts with the defaults, size included.  Thread- and fork-safe. */
PK_API void pool_opts_init(pool_opts_t *opts);

/* Starts the fork server early (see above) and makes the shared heap
 * (picklepool/shared.h).  Idempotent; pool_create calls it.  Returns PK_OK
 * or PK_ESYS.  Call it while the process is single-threaded. */
PK_API pk_err_t pool_global_init(pk_error_t *err);

/* pool_global_init for workers forked from the fork server instead of
 * exec'd (pool_opts_t.worker_main): when no fork server runs yet, starts
 * one that may run `main` (not NULL) in the workers of pools whose
 * worker_main is main, calling at_fork (may be NULL) first in each.  The
 * fork server is a copy of this process at this call, and each such
 * worker a copy of that copy: main, at_fork, what they use and every
 * worker_main_arg must exist before this call, and what the process does
 * later (imports, new data) is not in them.  Call it while
 * the process can be copied safely: single-threaded, or with its own
 * threads at a safe point (an interpreter calls it holding its global
 * lock, so its state is consistent in the copy).  at_fork is for such an
 * interpreter: it runs before main, before anything else of the caller's
 * code, to make its copied state usable in the single-threaded child
 * (CPython: PyOS_AfterFork_Child, which the GIL's copy requires before any
 * bytecode runs).  When a fork server already runs (started by
 * pool_global_init, pool_create or an earlier call), this does nothing:
 * that one keeps the main it was started with (none, for the first two),
 * and pools fall back to worker_argv.  Returns PK_OK (a fork server runs),
 * PK_EINVAL (main is NULL) or PK_ESYS.  Thread-safe; the rules of the
 * copy are the caller's to keep. */
PK_API pk_err_t pool_global_init_main(pool_worker_main_fn main,
                                      void (*at_fork)(void), pk_error_t *err);

/* Undoes pool_global_init: stops the fork server, waits for it to exit,
 * frees the topology and unmaps the shared heap (picklepool/shared.h)
 * unless arrays from it are still held, so that nothing of picklepool is
 * left running (for
 * programs that unload the library or check for leaks).  A later
 * pool_global_init or pool_create starts a new fork server.  Idempotent.
 * Returns PK_OK, or PK_EINVAL (nothing done) while a pool still exists. */
PK_API pk_err_t pool_global_fini(pk_error_t *err);

/* Creates a pool and returns when every worker is ready (opts NULL: the
 * defaults; see start_nowait for not waiting).  On success *pp owns the pool (free with pool_destroy); on
 * failure *pp is untouched.  Returns PK_OK, PK_EINVAL (bad options, or a
 * size pool_opts_init did not set), PK_EIO (a plugin failed to load, or the
 * fork server is gone), PK_ECRASHED (workers died before they were ready),
 * PK_ETIMEDOUT (workers not ready within 60 s), PK_ESYS or PK_ENOMEM. */
PK_API pk_err_t pool_create(pool_t **pp, const pool_opts_t *opts,
                            pk_error_t *err);

/* Waits until the worker of every slot of p has been ready once
 * (pool_create's own wait, for pools made with start_nowait), up to timeout
 * seconds (< 0: for ever).  Returns PK_OK, PK_ECRASHED (the workers keep
 * dying at start-up, or the fork server died: err says which),
 * PK_ECANCELED (the pool was terminated, or closed and finished, first),
 * PK_ETIMEDOUT, or PK_EINVAL (p NULL).  Thread-safe. */
PK_API pk_err_t pool_wait_ready(pool_t *p, double timeout, pk_error_t *err);

/* Terminates the workers if still running, reaps them, removes the ipc
 * directory, frees everything and sets *pp to NULL.  Idempotent.  Free every
 * iterator and unfinished future of the pool first (pool_iter_free,
 * pool_future_free): destroying a pool that still has some is a programming
 * error and aborts with a message. */
PK_API void pool_destroy(pool_t **pp);

/* multiprocessing semantics: close() refuses new work and lets submitted work
 * finish; join() waits (up to timeout seconds, < 0 for ever) for the workers
 * to exit after close or terminate: PK_OK or PK_ETIMEDOUT; terminate() stops
 * everything now (in-flight items fail with PK_ECANCELED). */
PK_API pk_err_t pool_close(pool_t *p);
PK_API pk_err_t pool_join(pool_t *p, double timeout);
PK_API void pool_terminate(pool_t *p);

/* Per-call options; a NULL pointer means the pool's.  Like pool_opts_t the
 * struct may grow at its end: fill it with pool_call_opts_init(). */
typedef struct pool_call_opts {
    size_t size;      /* sizeof(pool_call_opts_t), set by pool_call_opts_init */
    size_t chunksize; /* 0: the pool's */
    double timeout;   /* per-item seconds, at most 1e9; 0: the pool's,
                         < 0: none */
} pool_call_opts_t;

/* Fills *copts with "the pool's" for every field, size included. */
PK_API void pool_call_opts_init(pool_call_opts_t *copts);

/* One item's outcome.  `value` and `error` are owned by whoever returned the
 * item (the results object, the iterator until its next call, the future). */
typedef struct pool_item {
    size_t index;            /* position in the input */
    pk_err_t status;         /* PK_OK, PK_EFUNC, PK_ECRASHED, PK_ETIMEDOUT,
                                PK_ENOFUNC, PK_ECANCELED, ... */
    const pk_value_t *value; /* the result when status == PK_OK, else NULL */
    const char *error;       /* message when status != PK_OK, else NULL */
} pool_item_t;

/* Partial failure, one rule for every map call: a map returns PK_OK when it
 * ran, whatever happened to single items, and reports a status per item.
 * It returns an error only when it could not run as a whole (PK_EINVAL,
 * PK_ECLOSED, PK_EINTR on SIGINT/SIGTERM, PK_ENOMEM, PK_ECRASHED when the
 * pool broke, an input function's error), and then no item result is
 * returned. */

/* Maps module.func over items[0..n) (values of any docs; they are pickled
 * before this returns control to the scheduler, so the caller may free them
 * after the call).  Blocks until every item has an outcome.  On PK_OK *out
 * owns the results (free with pool_results_free) even when some items
 * failed (pool_results_failed). */
PK_API pk_err_t pool_map(pool_t *p, const char *module, const char *func,
                         const pk_value_t *const *items, size_t n,
                         const pool_call_opts_t *copts, pool_results_t **out,
                         pk_error_t *err);

PK_API size_t pool_results_len(const pool_results_t *r);
/* Number of items whose status is not PK_OK. */
PK_API size_t pool_results_failed(const pool_results_t *r);
/* Item i (i < len), valid until pool_results_free. */
PK_API const pool_item_t *pool_results_item(const pool_results_t *r, size_t i);
PK_API void pool_results_free(pool_results_t **r);

/* Streaming input: called from the caller's thread (inside pool_imap and
 * pool_iter_next) to fetch the next item, built in `doc` (which the runtime
 * frees once the item is pickled).  Set *item and return PK_OK; set *item to
 * NULL at the end of input; any other return aborts the map with that error. */
typedef pk_err_t (*pool_next_fn)(void *ctx, pk_doc_t *doc, pk_value_t **item);

/* Starts a lazy map: input is pulled only to keep a bounded window in flight,
 * so memory stays flat however long the input.  pool_imap delivers in input
 * order, pool_imap_unordered as completed.  On PK_OK *it owns the iterator. */
PK_API pk_err_t pool_imap(pool_t *p, const char *module, const char *func,
                          pool_next_fn next, void *ctx,
                          const pool_call_opts_t *copts, pool_iter_t **it,
                          pk_error_t *err);
PK_API pk_err_t pool_imap_unordered(pool_t *p, const char *module,
                                    const char *func, pool_next_fn next,
                                    void *ctx, const pool_call_opts_t *copts,
                                    pool_iter_t **it, pk_error_t *err);
/* Waits up to timeout seconds (< 0: for ever) for the next outcome.  Returns
 * PK_OK with *item filled (valid until the next call or pool_iter_free),
 * PK_EOF at the end of the map (and on every later call), PK_ETIMEDOUT (call
 * again), or the error that stopped the map (PK_EINTR, PK_ECRASHED, the
 * input function's error; later calls return it again). */
PK_API pk_err_t pool_iter_next(pool_iter_t *it, pool_item_t *item,
                               double timeout);
PK_API void pool_iter_free(pool_iter_t **it);
/* The error that stopped the map of `it` (pool_iter_next or
 * pool_iter_next_raw returned it), with its message in *err (may be NULL):
 * say, why the pool broke.  PK_OK while the map goes on or after it ended
 * with PK_EOF; PK_EINVAL for a NULL it.  Not thread-safe against calls on
 * the same iterator. */
PK_API pk_err_t pool_iter_error(const pool_iter_t *it, pk_error_t *err);

/* One call module.func(*args, **kwargs) (kwargs may be NULL).  On PK_OK *fut
 * owns the future.  When a worker is idle and polling (pool_opts_t.spin_us)
 * and the pickled call is small (under 16 KiB), the call goes straight into
 * that worker's shared-memory lane and pool_future_wait polls for the reply
 * before it sleeps: a round trip of a few microseconds.  Otherwise, and for
 * replies over ~48 KiB, it takes the scheduler and the socket; either way
 * timeouts, crashes, retries and cancellation behave the same. */
PK_API pk_err_t pool_apply_async(pool_t *p, const char *module,
                                 const char *func, const pk_value_t *args,
                                 const pk_value_t *kwargs, pool_future_t **fut,
                                 pk_error_t *err);
/* Waits up to timeout seconds (< 0: for ever).  PK_OK with *item filled
 * (valid until pool_future_free), PK_ETIMEDOUT, or PK_EINTR when SIGINT or
 * SIGTERM arrived during the wait (the future stays valid: wait again or
 * free it). */
PK_API pk_err_t pool_future_wait(pool_future_t *f, double timeout,
                                 pool_item_t *item);
PK_API void pool_future_free(pool_future_t **f);

/* Raw maps: items and results travel as bytes the runtime does not read,
 * for pools of exec'd workers (pool_opts_t.worker_argv), whose handler
 * (pool_worker_serve) gets each item's bytes and the call frame as given
 * here.  Scheduling, ordering, retries, poison-item isolation, timeouts and
 * cancellation are the same as for every map.  Python's front-end ships
 * CPython pickles this way. */
typedef struct pool_raw_item {
    const void *data; /* the item's bytes (copied at once) */
    size_t len;
    /* Out-of-band buffers of the item: copied into the shared arena when
     * big enough, else sent from the caller's memory, which must then stay
     * valid until that item's outcome was delivered or the iterator is
     * freed. */
    const pk_buffer_t *bufs;
    size_t nbufs;
} pool_raw_item_t;

/* Called from the caller's thread (inside pool_imap_raw and
 * pool_iter_next_raw) for the next item: fill *item and return PK_OK,
 * return PK_EOF at the end of input, or another code to stop the map with
 * it. */
typedef pk_err_t (*pool_raw_next_fn)(void *ctx, pool_raw_item_t *item);

/* Starts a lazy raw map (as pool_imap) calling `call` (the call frame's
 * bytes, copied) on each item; ordered non-zero delivers in input order,
 * else as completed.  On PK_OK *it owns the iterator: read it with
 * pool_iter_next_raw, free it with pool_iter_free. */
PK_API pk_err_t pool_imap_raw(pool_t *p, const void *call, size_t call_len,
                              pool_raw_next_fn next, void *ctx, int ordered,
                              const pool_call_opts_t *copts, pool_iter_t **it,
                              pk_error_t *err);

/* One raw outcome.  Pointers are valid until the next call on the iterator
 * or pool_iter_free. */
typedef struct pool_raw_result {
    size_t index;     /* position in the input */
    pk_err_t status;  /* PK_OK or the item's error */
    const void *data; /* PK_OK: the result's bytes */
    size_t len;
    const pk_buffer_t *bufs; /* PK_OK: its out-of-band buffers */
    size_t nbufs;
    const char *error; /* not PK_OK: the message */
} pool_raw_result_t;

/* pool_iter_next for raw maps: same returns (PK_OK, PK_EOF, PK_ETIMEDOUT,
 * or the error that stopped the map).  PK_EINVAL on an iterator of
 * pool_imap. */
PK_API pk_err_t pool_iter_next_raw(pool_iter_t *it, pool_raw_result_t *res,
                                   double timeout);

/* One raw call (as pool_apply_async for raw maps): item's bytes are copied
 * at once (its buffers as for pool_imap_raw: keep them valid until the
 * future was waited for or freed); a small call without buffers takes an
 * idle worker's fast lane.  On PK_OK *fut owns the future: wait for it
 * with pool_future_wait_raw, free it with pool_future_free. */
PK_API pk_err_t pool_apply_raw(pool_t *p, const void *call, size_t call_len,
                               const pool_raw_item_t *item, pool_future_t **fut,
                               pk_error_t *err);

/* pool_future_wait for raw calls: PK_OK with *res filled (pointers valid
 * until pool_future_free), PK_ETIMEDOUT or PK_EINTR (wait again), or
 * PK_EINVAL on a future of pool_apply_async. */
PK_API pk_err_t pool_future_wait_raw(pool_future_t *f, double timeout,
                                     pool_raw_result_t *res);

/* Convenience maps over plain C data, for module.func taking one number and
 * returning one; workers read the numbers straight from `in`, without a
 * pickle per item.  out has n entries.  The rule above holds: PK_OK when the
 * map ran; then status[i] (status may be NULL) is PK_OK or item i's error,
 * a failed item leaves out[i] unchanged, *nfailed (may be NULL) counts the
 * failures, and when some failed, err (may be NULL) describes the failure
 * of the lowest index (err->code its status) although the call returned
 * PK_OK.  copts may be NULL. */
PK_API pk_err_t pool_map_i64(pool_t *p, const char *module, const char *func,
                             const int64_t *in, int64_t *out, size_t n,
                             const pool_call_opts_t *copts, pk_err_t *status,
                             size_t *nfailed, pk_error_t *err);
PK_API pk_err_t pool_map_f64(pool_t *p, const char *module, const char *func,
                             const double *in, double *out, size_t n,
                             const pool_call_opts_t *copts, pk_err_t *status,
                             size_t *nfailed, pk_error_t *err);
/* Maps over n float32 arrays (in[i] has lens[i] floats) with a function
 * taking and returning a float32 ndarray; results are written to out[i]
 * (lens[i] floats each).  Statuses as for pool_map_i64. */
PK_API pk_err_t pool_map_f32_arrays(pool_t *p, const char *module,
                                    const char *func, const float *const *in,
                                    float *const *out, const size_t *lens,
                                    size_t n, const pool_call_opts_t *copts,
                                    pk_err_t *status, size_t *nfailed,
                                    pk_error_t *err);

/* Per-worker statistics. */
typedef struct pool_worker_stats {
    int slot;            /* 0..workers-1 */
    int pid;             /* current process, 0 while respawning */
    int core;            /* logical core index it is pinned to, -1: none */
    char cpus[64];       /* its allowed CPU list, "3" or "0-1" */
    uint64_t items_done; /* items completed by this slot, all generations */
    double busy_s;       /* seconds spent running items */
    unsigned restarts;   /* respawns of this slot */
    uint64_t lane_items; /* of items_done, those that came through the fast
                            lane (see pool_opts_t.spin_us) */
} pool_worker_stats_t;

/* Fills up to cap entries; *n receives the number of workers. */
PK_API pk_err_t pool_stats(pool_t *p, pool_worker_stats_t *out, size_t cap,
                           size_t *n);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_POOL_H */
