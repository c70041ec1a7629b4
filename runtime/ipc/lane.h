/*
 * lane.h - the fast lane: a shared-memory mailbox per worker for single
 * calls (pool_apply_async), so an apply round trip costs no blocking
 * wake-up at all (private; docs/PROTOCOL.md "Fast lane" is the full story).
 *
 * Why.  Through the socket an apply crosses about eight blocking wake-ups
 * (caller -> master thread -> two ZeroMQ I/O threads -> worker, and back),
 * and one costs ~40 us on a small VM.  The lane skips all of them: a worker
 * with nothing to do busy-polls its lane for a bounded time (spin_us), the
 * caller writes the TASK straight into it and busy-polls for the RESULT for
 * the same bounded time, then sleeps on a futex.  Only idle, polling workers
 * take lane tasks, so the lane never queues work behind a batch.
 *
 * Layout.  The lanes live in the pool's scoreboard memfd after the
 * scoreboard slots, one POOL_LANE_BYTES region per worker slot (page
 * aligned; a worker maps only its own).  Each region is a control cache
 * line, then the request area (a TASK: header + call + items frames), then
 * the reply area (a RESULT: header + payload + buffer frames), each frame
 * after the header written as {u32 len, bytes} at an 8-byte boundary.
 *
 * The control word `state` is a futex word: the low 8 bits are a state, the
 * high 24 bits a tag that every claim increments (so a caller can tell its
 * own claim from a later one, whatever happened in between).
 *
 *   FREE    --worker-->  ARMED      the worker polls and takes lane work
 *   ARMED   --worker-->  FREE       it stops polling (time up, or a socket
 *                                   message to serve first)
 *   ARMED   --caller-->  CLAIMED    tag + 1: the caller owns the request area
 *   CLAIMED --caller-->  POSTED     request written, batch registered
 *   POSTED  --worker-->  RUNNING
 *   RUNNING --worker-->  DONE       reply written in the lane
 *   RUNNING --worker-->  WIRE       reply too big for the lane (or the worker
 *                                   is retiring): it goes as a socket RESULT
 *   DONE    --caller-->  FREE       reply consumed
 *   WIRE    --master-->  FREE       the socket RESULT arrived
 *   any but DONE, CLAIMED --master--> FREE   the worker died (its batch
 *                                   is handled like any in-flight batch of a
 *                                   dead worker)
 *   CLAIMED --master-->  ORPHAN     the worker died while a caller wrote the
 *                                   request: no worker arms the lane until
 *   ORPHAN  --caller-->  FREE       its claimant, whose POSTED CAS failed,
 *                                   has taken its batch back (or found the
 *                                   master requeued it)
 *
 * The batch a lane carries is registered in the master's private
 * pool__lane_rec_t of that slot (under p->mu) from before POSTED until the
 * caller consumes DONE, the master takes it (death, WIRE, or an abandoned
 * future), so a batch is never lost.  The master's tick enforces per-item
 * timeouts and cancel grace on lane batches as on socket ones.
 *
 * Nothing a worker writes here is trusted: the caller range-checks the reply
 * and validates it like a socket RESULT.
 */
#ifndef POOL_LANE_H
#define POOL_LANE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc/scoreboard.h"
#include "ipc/shm.h"

#define POOL_LANE_BYTES ((size_t)64 << 10) /* per slot, page multiple */
#define POOL_LANE_CTL 64
#define POOL_LANE_REQ ((size_t)16 << 10) /* request area */
#define POOL_LANE_REP (POOL_LANE_BYTES - POOL_LANE_CTL - POOL_LANE_REQ)
#define POOL_LANE_ID_BIT ((uint64_t)1 << 63) /* lane batch ids have it */
#define POOL_LANE_DEFAULT_SPIN_US 200

enum pool__lane_state {
    POOL_LANE_FREE = 0,
    POOL_LANE_ARMED,
    POOL_LANE_CLAIMED,
    POOL_LANE_POSTED,
    POOL_LANE_RUNNING,
    POOL_LANE_DONE,
    POOL_LANE_WIRE,
    POOL_LANE_ORPHAN
};

#define POOL_LANE_ST(v) ((v)&0xffu)
#define POOL_LANE_TAG(v) ((v) & ~0xffu)
#define POOL_LANE_NEXT_TAG(v) (((v) & ~0xffu) + 0x100u)

typedef struct pool__lane {
    _Atomic uint32_t state;   /* futex word: tag | state */
    _Atomic uint32_t waiting; /* callers sleeping on `state` (a count:
                                 one from an earlier claim may still be
                                 leaving) */
    uint32_t req_len;         /* bytes of the request (caller, < POSTED) */
    _Atomic uint32_t rep_len; /* bytes of the reply (worker, < DONE) */
    uint8_t pad[POOL_LANE_CTL - 16];
    uint8_t req[POOL_LANE_REQ];
    uint8_t rep[POOL_LANE_REP];
} pool__lane_t;

_Static_assert(sizeof(pool__lane_t) == POOL_LANE_BYTES, "lane layout");

/* The offset of the lanes in the scoreboard memfd, and where they end (the
 * arena may start there).  Same on both sides of the fork. */
static inline uint64_t pool__lanes_off(int nworkers)
{
    uint64_t sb = sizeof(pool__sb_slot_t) * (uint64_t)nworkers;
    return (sb + POOL_SHM_PAGE - 1) & ~(uint64_t)(POOL_SHM_PAGE - 1);
}

static inline uint64_t pool__lanes_end(int nworkers)
{
    return pool__lanes_off(nworkers) + POOL_LANE_BYTES * (uint64_t)nworkers;
}

/* Futex helpers on a lane's state word (shared, not private, futexes).
 * pool__lane_sleep returns after a wake, a change of the word, a signal or
 * `ns` nanoseconds. */
void pool__lane_wake(pool__lane_t *l);
void pool__lane_sleep(pool__lane_t *l, uint32_t seen, uint64_t ns);

/* A spin-wait hint to the CPU. */
static inline void pool__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- the frame encoding shared by requests and replies ---------------- */

/* Appends frame bytes at *pos of area (cap bytes) as {u32 len, bytes},
 * 8-byte aligned.  Returns 0, or -1 when it does not fit. */
int pool__lane_put(uint8_t *area, size_t cap, size_t *pos, const void *data,
                   size_t len);

/* Reads the next frame of a message of `len` bytes at *pos.  Returns 0 with
 * *data, *flen set, or -1 when the bytes there are not a whole frame. */
int pool__lane_get(const uint8_t *area, size_t len, size_t *pos,
                   const uint8_t **data, size_t *flen);

#endif /* POOL_LANE_H */
