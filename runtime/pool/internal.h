/*
 * internal.h - the pool layer's shared data: the pool, its jobs, batches,
 * blobs and outcomes, and the calls between the callers' side (lifecycle.c,
 * driver.c, the front-ends map.c, imap.c, apply.c) and the master thread
 * (master.c) (private).
 *
 * Threads and locks.  Each pool has one master thread that owns the ROUTER
 * socket, the fork-server channel, the batch queue and the in-flight tables
 * (struct pool's `m`); it alone touches them, without locks.  API calls run
 * on callers' threads: they pickle items into batches (pool__batch_t,
 * holding a reference on a pool__blob_t that owns or borrows the bytes),
 * append them to p->lk.subq under p->mu and write p->cfg.efd; the master
 * moves them to its queue.  Outcomes
 * travel back as pool__outcome_t lists appended to the job under p->mu, with
 * a broadcast of p->cv.  Lock order: p->mu is the only lock and is never held
 * across a socket call.
 *
 * Lifetimes.  A job is reference counted: its caller, every batch, blob and
 * outcome of it hold one; the last unref frees it.  A blob is referenced by
 * its batches and by every zero-copy frame ZeroMQ still holds; `blobs` counts
 * live blobs per job so a call whose blobs borrow the caller's memory can
 * wait until none is left before returning.
 */
#ifndef POOL_INTERNAL_H
#define POOL_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "proc/forkserver.h"
#include "ipc/lane.h"
#include "picklepool/pool.h"
#include "ipc/scoreboard.h"
#include "ipc/shm.h"
#include "proc/topology.h"
#include "ipc/wire.h"

typedef struct pool__job pool__job_t;

typedef struct pool__blob {
    atomic_int refs;
    pool__job_t *job;  /* holds a job reference */
    pk_doc_t *doc;     /* freed with the blob (imap items), or NULL */
    uint8_t *bytes;    /* owned encoded records, or NULL */
    pool__oob_t *bufs; /* owned table of out-of-band buffers, or NULL */
    size_t nbufs;
    pool__shm_t *shm; /* holds a reference when some bufs are arena blocks,
                         freed with the blob */
} pool__blob_t;

typedef struct pool__batch {
    struct pool__batch *next;
    pool__job_t *job;
    uint64_t id;  /* wire id of its current dispatch, 0 before */
    size_t first; /* input index of its first item */
    uint32_t count;
    uint32_t crashes; /* worker deaths it caused as a whole */
    uint16_t flags;   /* TASK flags */
    pool__blob_t *blob;
    const uint8_t *items;
    size_t items_len;
    const pool__oob_t *bufs;
    uint32_t nbufs;
} pool__batch_t;

/* Outcomes of `count` consecutive items.  Either frames of a RESULT
 * (payload + buffers) or one synthetic status for every item. */
typedef struct pool__outcome {
    struct pool__outcome *next;
    pool__job_t *job; /* holds a job reference */
    int slot;         /* worker that produced it, -1 */
    size_t first;
    uint32_t count;
    uint16_t flags; /* RESULT flags */
    uint32_t nbufs;
    zmq_msg_t *frames; /* 1 + nbufs, or NULL when synthetic */
    pk_err_t status;   /* synthetic */
    char *msg;         /* synthetic message (pk__strdup) */
    /* POOL_WIRE_F_SHM results: buffer k is ents[k] in slot's arena region
     * (its frame is empty) unless ents[k].off is POOL_WIRE_SHM_INLINE.
     * Accepted blocks are released by pool__outcome_shm_release (at the
     * latest by pool__outcome_free).  shm holds a reference. */
    pool__shm_t *shm;
    pool__wire_shm_t *ents;
} pool__outcome_t;

enum pool__job_kind {
    POOL_JOB_MAP,
    POOL_JOB_IMAP,
    POOL_JOB_IMAP_UNORDERED,
    POOL_JOB_APPLY
};

struct pool__job {
    pool_t *p;
    atomic_int refs;
    enum pool__job_kind kind;
    uint16_t flags;   /* TASK flags for its batches */
    uint8_t *call;    /* call frame bytes (pickles) */
    uint64_t call_id; /* unique per job: which call a worker holds */
    size_t call_len;
    uint64_t timeout_ns;      /* per item, 0: none */
    size_t chunksize;         /* fixed, 0: adaptive */
    size_t total;             /* items, when known (SIZE_MAX: streaming) */
    _Atomic uint64_t item_ns; /* measured ns per item (EWMA), 0: unknown */
    /* under p->mu */
    pool__outcome_t *done_head, *done_tail;
    int canceled; /* the caller gave up: drop its batches */
    int lost;     /* the master could not allocate an outcome of it: the
                     call fails with PK_ENOMEM */
    uint64_t cancel_ns;
    int active; /* counted in p->active_jobs */
    int blobs;  /* live blobs */
    /* master thread only */
    int m_canceled;
    uint64_t m_cancel_ns;
};

enum pool__wstate {
    POOL_W_DEAD = 0, /* no process (maybe waiting to respawn) */
    POOL_W_SPAWNING, /* SPAWN sent */
    POOL_W_STARTING, /* forked, no READY yet */
    POOL_W_READY,    /* takes work */
    POOL_W_DRAINING  /* retiring / stopping / killed: no more work */
};

/* Why the master killed a worker (for all but a stall, it is not the
 * worker's batch's fault). */
enum pool__kill_reason {
    POOL_KILL_NONE = 0,
    POOL_KILL_TIMEOUT, /* item kill_item of batch kill_batch ran too long */
    POOL_KILL_CANCEL,  /* its job was canceled and the grace ran out */
    POOL_KILL_RETIRE,  /* it said it was retiring */
    POOL_KILL_STALL    /* it held batches and made no progress (recovery.h):
                          judged like a death at its scoreboard position */
};

typedef struct pool__mworker {
    enum pool__wstate state;
    uint32_t gen;
    int32_t pid;
    int ready_seen;          /* this generation said READY */
    int ever_ready;          /* some generation of this slot said READY */
    int productive;          /* this generation returned a result */
    int unreachable;         /* a send to it failed */
    pool__batch_t *inflight; /* list, oldest first */
    int ninflight;
    enum pool__kill_reason kill_reason;
    uint64_t kill_batch;
    uint32_t kill_item;
    uint64_t spawn_ns;
    uint64_t sent_call;    /* call_id of the last call frame sent to this
                           generation (it then gets POOL_WIRE_F_SAME_CALL) */
    uint64_t respawn_at;   /* 0: none pending */
    unsigned quick_deaths; /* consecutive deaths soon after spawn */
    /* Stall watch (recovery.h): its last sign of progress, and its
     * scoreboard slot as the master last saw it. */
    uint64_t progress_ns;
    uint64_t stall_bound_ns; /* the bound it was killed for, for messages */
    uint32_t seen_state, seen_item;
    uint64_t seen_batch, seen_done;
} pool__mworker_t;

/* The batch a worker's fast lane carries (lane.h), under p->mu. */
typedef struct pool__lane_rec {
    pool__batch_t *b;
} pool__lane_rec_t;

/* What a caller keeps of a call it posted on a lane. */
typedef struct pool__lane_ticket {
    int slot;     /* -1: not on a lane (any more) */
    uint32_t tag; /* the claim's tag */
    uint64_t id;  /* the batch's lane id */
} pool__lane_ticket_t;

typedef struct pool__slot_stats {
    int32_t pid;
    unsigned restarts;
    uint64_t items_done;
    uint64_t busy_base_ns;
    uint64_t lane_items;
} pool__slot_stats_t;

/* Set by pool_create before the master thread starts and never changed
 * after: any thread may read it without the lock. */
typedef struct pool__cfg {
    int nworkers, prefetch, retries;
    size_t chunksize;       /* pool default, 0: adaptive */
    double timeout;         /* pool default per item, 0: none */
    uint64_t stall_ns;      /* stall bound (recovery.h), 0: none */
    uint64_t spin_ns;       /* busy-poll budget of lanes (0: no lanes) */
    int bind;               /* workers bind to their places */
    pool__place_t *places;  /* nworkers */
    pool__topo_t *own_topo; /* synthetic topology, or NULL */
    char dir[256];          /* the private 0700 ipc directory */
    char endpoint[300];     /* ipc://<dir>/pool.sock */
    int efd;                /* eventfd: API -> master */
    int memfd;              /* scoreboard, then the arena at shm_off */
    pool__sb_slot_t *sb;    /* the scoreboard mapping (workers write) */
    size_t sb_size;         /* the scoreboard and the lanes */
    pool__lane_t *lanes;    /* one per slot, in the sb mapping; or NULL */
    pool__shm_t *shm;       /* the arena, or NULL */
    int heap;               /* the workers map the shared heap (ipc/shm.h) */
    int remote;             /* a remote pool: functions live on the hosts
                               (pool/scaleout.h) */
    uint64_t shm_off;
    void *zctx;       /* the master's ZeroMQ context */
    pthread_t thread; /* the master thread */
    int thread_started;
    int counted;      /* counted in the live pools (global_fini) */
    uint64_t reg_gen; /* registry generation before the workers were forked:
                         later registrations are not theirs */
} pool__cfg_t;

/* Shared between API calls and the master thread: only under pool->mu. */
typedef struct pool__locked {
    pool__batch_t *subq_head, *subq_tail; /* submissions for the master */
    pool__lane_rec_t *lane_recs;          /* per slot, with lanes */
    pool__slot_stats_t *stats;            /* per slot */
    int closed;                           /* no new calls */
    int terminate_req;
    int shutdown_req;   /* destroy: master exits when workers are gone */
    int cancel_pending; /* some job got canceled */
    int active_jobs;
    int open_drives; /* maps, iterators and futures not yet ended */
    int nready;      /* slots whose worker said READY once since creation */
    int nlive;       /* processes alive or being spawned */
    int exited;      /* after close/terminate: every worker is gone */
    pk_err_t broken; /* PK_ECRASHED once workers keep dying at start-up
                           or the fork server died; PK_OK before */
    char broken_msg[256];
} pool__locked_t;

/* The master thread's own: nothing else touches it after pool_create. */
typedef struct pool__mstate {
    void *router;                   /* the ROUTER socket */
    int chan;                       /* the fork-server channel */
    pool__mworker_t *w;             /* per slot */
    pool__batch_t *q_head, *q_tail; /* the batch queue */
    uint64_t next_batch_id;
    int stop_sent;
    int terminating;
    uint64_t terminate_ns;
    unsigned startup_deaths; /* consecutive deaths before READY */
    uint64_t stall_look_ns;  /* when the stall watch last looked, 0: never */
    uint64_t stall_wake_ns;  /* when it wants to look next, 0: nothing held */
    unsigned logged;         /* malformed-message kinds already logged */
} pool__mstate_t;

/* A pool: ownership of each part is in its type. */
struct pool {
    pool__cfg_t cfg;       /* immutable after pool_create */
    pthread_mutex_t mu;    /* the only lock; never held across a socket
                                call */
    pthread_cond_t cv;     /* broadcast when jobs get outcomes or the
                                pool's state changes */
    pool__locked_t lk;     /* under mu */
    pool__mstate_t m;      /* master thread only */
    _Atomic int lane_hint; /* the slot a lane call went to last */
    _Atomic uint64_t lane_next_id;
};

/* Master thread body (master.c). */
void *pool__master_main(void *arg);

/* The SPAWN messages of every worker of a new pool, in msgs[nworkers], and
 * the state they imply (master.c).  pool_create sends them with the pool
 * itself (pool__fs_open_pool), so the fork server forks at once, while
 * pool_create sets up ZeroMQ and the master thread (the workers wait for
 * the pool's socket to exist before they connect); the master thread,
 * started after, owns their state from then on. */
void pool__master_first_spawns(pool_t *p, pool__fs_msg_t *msgs);

/* Wakes the master (eventfd write).  Any thread. */
void pool__master_wake(pool_t *p);

/* Reference counting and freeing (job.c).  Any thread. */
void pool__job_ref(pool__job_t *j);
void pool__job_unref(pool__job_t *j);
pool__blob_t *pool__blob_new(pool__job_t *j); /* refs = 1; NULL on ENOMEM */
void pool__blob_ref(pool__blob_t *b);
void pool__blob_unref(pool__blob_t *b);
/* A zmq_free_fn for frames that borrow a blob's bytes (hint: the blob). */
void pool__blob_zc_free(void *data, void *hint);
void pool__outcome_free(pool__outcome_t *o);
/* Gives back the arena pages of a RESULT's buffer table v[0..n) of worker
 * `slot` (entries below `held` were accepted, the rest only reserved) and
 * frees the table. */
void pool__shm_ents_release(pool__shm_t *shm, int slot, pool__wire_shm_t *v,
                            uint32_t n, uint32_t held);
/* Frees o's arena blocks (after their bytes were copied out). */
void pool__outcome_shm_release(pool__outcome_t *o);
/* Arena bytes in use (all 0 without an arena): task blocks, result blocks
 * the master still holds, result blocks workers have allocated.  Returns
 * non-zero when the pool has an arena.  For tests and diagnostics. */
int pool__shm_stats(pool_t *p, size_t *task_used, size_t *res_held,
                    size_t *res_alloc);
void pool__batch_free(pool__batch_t *b);

/* An outcome giving `status` and a copy of msg to items [first, first +
 * count) of j (holds a job reference), or NULL when out of memory. */
pool__outcome_t *pool__outcome_synth(pool__job_t *j, size_t first,
                                     uint32_t count, pk_err_t status,
                                     const char *msg);

/* Checks a RESULT for batch b: item count, frame count nf, that a raw vector
 * reply is the one b asked for, and the payload.  PK_OK or PK_EPROTO. */
pk_err_t pool__result_check(const pool__batch_t *b, const pool__wire_hdr_t *h,
                            size_t nf, const void *payload, size_t plen,
                            pk_error_t *e);

/* The caller's side of the fast lane (lane_call.c).  pool__lane_post offers a
 * single-item batch without buffers to an idle, polling worker: it returns
 * 1 when the batch is gone (on a lane, t->slot >= 0, or already requeued by
 * the master, t->slot < 0), 0 when no lane took it (b is untouched: submit
 * it as usual).  pool__lane_wait polls, then sleeps, until the lane's reply
 * is there: PK_OK with *out its outcome, or PK_OK with *out NULL when the
 * outcome will come through the job (t->slot is then -1); PK_ETIMEDOUT at
 * the monotonic `deadline` ns (0: none); PK_EINTR when *intr is set. */
int pool__lane_post(pool_t *p, pool__batch_t *b, pool__lane_ticket_t *t);
pk_err_t pool__lane_wait(pool_t *p, pool__lane_ticket_t *t, uint64_t deadline,
                         const volatile sig_atomic_t *intr,
                         pool__outcome_t **out);

#endif /* POOL_INTERNAL_H */
