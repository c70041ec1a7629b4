/*
 * worker.h - the native worker loop (private).
 *
 * pool__worker_main() is what a worker process runs after the fork server
 * forked it and it finished its setup (see proc/forkserver.h for the
 * order).  It creates the worker's own ZeroMQ context (or takes the one
 * pool__worker_preconnect made), connects a DEALER to
 * the master's ROUTER with routing id {slot, generation}, says READY, then
 * runs TASK batches until STOP, a retirement limit, or death: it decodes
 * each item's pickle, calls the registered native function (registry.h),
 * encodes the outcome, and keeps its scoreboard slot current per item.
 * Malformed messages are logged once per kind and dropped (or, for a TASK
 * whose header is sound, every item fails with PK_EPROTO) - never a crash.
 */
#ifndef POOL_WORKER_H
#define POOL_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "ipc/lane.h"
#include "picklepool/worker.h"
#include "ipc/scoreboard.h"
#include "ipc/shm.h"

typedef struct pool__worker_cfg {
    const char
        *endpoint; /* master's ROUTER, e.g. "ipc:///tmp/pp-x/pool.sock" */
    int slot;
    uint32_t gen;
    int prefetch;        /* credit announced in READY */
    uint64_t maxtasks;   /* items before retiring; 0: never */
    uint64_t max_rss;    /* bytes of RSS before retiring; 0: never */
    pool__sb_slot_t *sb; /* this worker's scoreboard slot, or NULL */
    uint8_t *shm;        /* the pool's arena (see shm.h), or NULL */
    const pool__shm_layout_t *shm_lay; /* its layout when shm != NULL */
    const uint8_t *heap; /* the shared heap, read-only (shm.h), or NULL */
    uint64_t heap_size;
    size_t shm_threshold; /* result buffers this big go through the arena */
    pool__lane_t *lane;   /* this worker's fast lane (lane.h), or NULL */
    uint64_t spin_ns;     /* how long it polls the lane when idle */
    pool_raw_fn raw;      /* exec'd workers: items go to this handler as
                             bytes (picklepool/worker.h); NULL: native */
    void *raw_ctx;
} pool__worker_cfg_t;

/* Runs the worker until it should exit; returns the process exit status
 * (0 after STOP or retirement, 1 when the context or socket failed). */
int pool__worker_main(const pool__worker_cfg_t *cfg);

/* For a worker that runs a main of the caller's (forkserver.h) before its
 * loop: makes its ZeroMQ context and DEALER now, and connects it when the
 * master's socket exists already, so that the connection's handshake runs
 * on ZeroMQ's thread while the main starts (an interpreter's after-fork
 * and start-up: a millisecond or more); pool__worker_main, called later
 * in this process for the same slot and generation, takes them.  On any
 * failure it leaves nothing, and pool__worker_main makes its own. */
void pool__worker_preconnect(const char *endpoint, int slot, uint32_t gen);

#endif /* POOL_WORKER_H */
