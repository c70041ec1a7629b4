/*
 * scoreboard.h - the shared-memory slot each worker keeps up to date (private).
 *
 * The master creates one memfd per pool (MFD_CLOEXEC), sized for one
 * cache-line-aligned slot per worker, and the fork server hands it to every
 * worker it forks; both map it MAP_SHARED.  A worker is the only writer of
 * its slot's run fields (relaxed stores, a release store of `state` last);
 * the master reads them on its tick to enforce per-item deadlines, to find
 * which item a dead worker was running, and for pool_stats.  The master
 * resets a slot before spawning the next generation into it.
 *
 * Nothing here is trusted for safety: a slot is only ever a hint checked
 * against the master's own in-flight table (same generation, same batch).
 */
#ifndef POOL_SCOREBOARD_H
#define POOL_SCOREBOARD_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

enum pool__sb_state {
    POOL_SB_IDLE = 0, /* between batches */
    POOL_SB_BUSY = 1, /* running batch `batch`, item `item` */
    POOL_SB_EXITING = 2
};

#define POOL_SB_DECODING UINT32_MAX /* item value while decoding the batch */

typedef struct pool__sb_slot {
    _Atomic int32_t pid;
    _Atomic uint32_t gen;
    _Atomic uint32_t state;    /* pool__sb_state */
    _Atomic uint32_t item;     /* index within the batch */
    _Atomic uint64_t batch;    /* batch id */
    _Atomic uint64_t start_ns; /* CLOCK_MONOTONIC start of the item */
    _Atomic uint64_t items_done;
    _Atomic uint64_t busy_ns;
    _Atomic uint64_t copied; /* result bytes the worker copied into the
                                arena, all generations (not built there) */
    uint8_t pad[8];
} __attribute__((aligned(64))) pool__sb_slot_t;

_Static_assert(sizeof(pool__sb_slot_t) == 64, "one cache line per slot");

static inline uint64_t pool__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define POOL_SB_LOAD(f) atomic_load_explicit(&(f), memory_order_relaxed)
#define POOL_SB_STORE(f, v)                                                    \
    atomic_store_explicit(&(f), (v), memory_order_relaxed)

#endif /* POOL_SCOREBOARD_H */
