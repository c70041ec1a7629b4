/*
 * recovery.h - the pool's recovery policy: what to do with a dead worker's
 * batches, when to respawn it, and when a pool is broken (private).
 *
 * Mechanism and policy are apart (DESIGN.md, "Layers").  The fork server
 * and the master's death handler (master.c) know how to reap, requeue,
 * split and fail; this module only decides, from plain facts, with no
 * process, socket or lock in sight, so that every rule is tested with a
 * table (tests/test_recovery.c).  The rules:
 *
 *   - A canceled job's batch is dropped.
 *   - A worker the master killed because item k of a batch ran past its
 *     deadline: item k fails with PK_ETIMEDOUT, the items around it are
 *     requeued with no crash counted against them.
 *   - A worker that died on its own (signal, OOM, exit mid-item) while the
 *     scoreboard says it ran item k of a batch: item k alone is retried
 *     (its crash count one higher; a batch of one keeps its count), the
 *     items around it are requeued clean.  Once an item has crashed more
 *     than `retries` times it fails with PK_ECRASHED.
 *   - Died while decoding a batch (no item known): the batch is split in
 *     halves, each carrying one more crash, until the poison item is alone.
 *   - Anything else in flight (batches it had not started, a worker killed
 *     for cancel or retirement, a clean exit) is requeued as it was.
 *   - A worker the master killed because it stalled (see "Stalled workers"
 *     below) counts as one that died on its own at the scoreboard's
 *     position: an item it was running is retried alone with one more crash,
 *     a batch it was decoding is split, batches it had not started are
 *     requeued as they were.  So a batch that stalls every worker it reaches
 *     is isolated and fails like a crash, and nothing else is blamed.
 *   - Respawn at once after a death, except for a worker that keeps dying
 *     soon after it was spawned without producing anything: then back off
 *     exponentially (20 ms << n, at most 2 s).  Deaths before any READY
 *     that keep coming (2 x workers in a row, at least 5) break the pool.
 *
 * Stalled workers.  A worker may hold dispatched batches (at most
 * `prefetch`) and never run them: stopped (SIGSTOP), swapping, stuck in a
 * decode.  Progress, as the master sees it, is a RESULT from the worker, a
 * batch dispatched to it while it held none, or a change of its scoreboard
 * slot (state, batch, item, items done) between two looks of the master's
 * tick.  The rule (pool__rec_stall):
 *   - A worker that holds nothing, or whose slot says BUSY on an item (not
 *     decoding), is live: an item may rightly run for hours, and only a
 *     per-item timeout bounds it.  The one exception is a process that is
 *     stopped (job-control stop, state T): it runs nothing, whatever its
 *     slot says, so once it is overdue the master looks (POOL_REC_LOOK).
 *   - Any other worker that holds batches (idle with work sent to it,
 *     decoding a batch) and has shown no progress for the bound is stalled:
 *     the master kills and replaces it and re-dispatches its batches.
 *   - The bound is pool_opts_t.stall_timeout (default 60 s, far beyond the
 *     milliseconds a healthy worker spends between receiving a batch and
 *     running its first item), or the per-item timeout of a batch it holds
 *     when that is smaller: with a timeout, an item's deadline also runs
 *     from its dispatch (or the worker's last progress, if later), not only
 *     from when the worker starts it.
 * Calls on the fast lane (pool_apply) are bounded by their own timeout only.
 *
 * Thread-safety: pure functions.  Fork-safe.
 */
#ifndef POOL_RECOVERY_H
#define POOL_RECOVERY_H

#include <stdint.h>

/* What the master knows of one in-flight batch when its worker died. */
typedef struct pool__rec_batch {
    uint32_t count;   /* items in the batch (>= 1) */
    uint32_t crashes; /* deaths it already caused as a whole */
    int canceled;     /* its job was canceled */
    int timed_out;    /* the master killed the worker for item timeout_item
                         of this batch */
    uint32_t timeout_item;
    int blamed;       /* the worker died on its own (not clean, not killed
                         by the master) while running this batch */
    uint32_t running; /* the scoreboard's item when blamed; >= count:
                         it was decoding the batch */
    int retries;      /* crashes an item may survive (pool_opts_t.retries) */
} pool__rec_batch_t;

enum pool__rec_action {
    POOL_REC_REQUEUE = 1, /* requeue the items with `crashes` */
    POOL_REC_CRASHED,     /* fail the item with PK_ECRASHED */
    POOL_REC_TIMEDOUT     /* fail the item with PK_ETIMEDOUT */
};

typedef struct pool__rec_piece {
    uint32_t from, to; /* items [from, to) of the batch, never empty */
    enum pool__rec_action action;
    uint32_t crashes; /* for POOL_REC_REQUEUE */
} pool__rec_piece_t;

/* The plan for one batch: keep it whole (requeue as it is), drop it, or
 * replace it by pieces that cover [0, count) in order, once each. */
typedef struct pool__rec_plan {
    enum { POOL_REC_KEEP, POOL_REC_DROP, POOL_REC_PIECES } kind;
    int npieces;
    pool__rec_piece_t piece[3];
} pool__rec_plan_t;

/* Decides what becomes of batch `b` of a dead worker. */
void pool__rec_plan_batch(const pool__rec_batch_t *b, pool__rec_plan_t *plan);

/* What the master knows of a worker slot when its process died. */
typedef struct pool__rec_death {
    int was_ready;     /* this generation said READY */
    int clean;         /* exit status 0 after STOP or retirement */
    int killed;        /* the master killed it (timeout, cancel, retire) */
    int productive;    /* this generation returned a result */
    uint64_t lived_ns; /* from spawn to death */
    int nworkers;
    unsigned quick_deaths;   /* the slot's count so far */
    unsigned startup_deaths; /* the pool's consecutive deaths before READY */
} pool__rec_death_t;

typedef struct pool__rec_respawn {
    int broken;              /* stop respawning: the pool is broken */
    uint64_t delay_ns;       /* respawn after this long (0: at once) */
    unsigned quick_deaths;   /* the slot's new count */
    unsigned startup_deaths; /* the pool's new count */
} pool__rec_respawn_t;

/* Decides when (and whether) a dead worker's slot is respawned. */
void pool__rec_respawn(const pool__rec_death_t *d, pool__rec_respawn_t *out);

/* What the master knows of a worker when it looks for a stall. */
typedef struct pool__rec_stall {
    uint64_t now_ns;
    uint64_t progress_ns; /* its last sign of progress */
    uint64_t bound_ns;    /* the bound for what it holds; 0: none */
    int holds_work;       /* batches were dispatched to it */
    int running_item;     /* its slot says BUSY on an item, not decoding */
    int stopped;          /* its process is stopped: 1; not: 0; not looked
                             at yet: -1 */
} pool__rec_stall_t;

enum pool__rec_stall_verdict {
    POOL_REC_LIVE = 0, /* nothing to do */
    POOL_REC_STALLED,  /* kill it, re-dispatch what it holds */
    POOL_REC_LOOK      /* look whether its process is stopped, then ask
                          again with `stopped` set */
};

/* Decides whether a worker has stalled (see "Stalled workers" above).  A
 * LIVE answer to an overdue worker running an item (stopped 0) means the
 * master restarts its clock: it looks again one bound later. */
enum pool__rec_stall_verdict pool__rec_stall(const pool__rec_stall_t *s);

/* The stall bound for a worker holding batches whose smallest per-item
 * timeout is timeout_ns (0: none), with stall_ns the pool's bound (0:
 * none). */
uint64_t pool__rec_stall_bound(uint64_t stall_ns, uint64_t timeout_ns);

/* Non-zero when an item started at start_ns has run past timeout_ns (0:
 * none) at now_ns. */
int pool__rec_overdue(uint64_t now_ns, uint64_t start_ns, uint64_t timeout_ns);

#endif /* POOL_RECOVERY_H */
