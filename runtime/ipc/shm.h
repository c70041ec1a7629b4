/*
 * shm.h - the pool's shared-memory arena for large out-of-band buffers
 * (private; docs/PROTOCOL.md "Shared-memory arena" is the wire side).
 *
 * The arena lives in the pool's scoreboard memfd, after the scoreboard at a
 * page-aligned offset, so the fork server hands it to every worker with the
 * scoreboard.  It is sparse: a page costs memory only once touched, and then
 * stays resident (and mapped, with no further faults) for the pool's life.
 * Layout, offsets from the arena's start, all page aligned:
 *
 *   [bitmaps]  one per worker slot: a bit per page of that slot's result
 *              region, set by the worker when it allocates, cleared by the
 *              master when it no longer needs the bytes
 *   [task]     task buffers, allocated and freed by the master (callers'
 *              threads copy buffers in; the blob that owns them frees them)
 *   [result 0] [result 1] ...  one region per slot, written by that worker
 *
 * Blocks are whole pages (so 64-byte aligned).  Allocation is first fit, so
 * the same hot pages are reused.  Task blocks: mutex-protected bitmap in the
 * master.  Result blocks: the worker sets bits (atomic OR, it alone sets
 * them); the master marks a block it accepted as held (private bitmap) and,
 * once the bytes are consumed, clears both (release order, after the last
 * read); a respawned slot's shared bitmap is reset to the held one, which
 * frees whatever the dead worker had allocated and nobody received.  Any
 * order of release is fine.  Nothing in the arena is trusted by the master:
 * descriptors are range-checked (wire.c) and checked against the held map.
 */
#ifndef POOL_SHM_H
#define POOL_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "picklepool/error.h"

#define POOL_SHM_PAGE 4096u
#define POOL_SHM_DEFAULT_BYTES ((size_t)4 << 30)      /* 4 GiB, sparse */
#define POOL_SHM_DEFAULT_THRESHOLD ((size_t)64 << 10) /* 64 KiB */

/* Where everything is, computed the same way by master and fork server. */
typedef struct pool__shm_layout {
    uint64_t size;     /* arena bytes (0: no arena) */
    uint64_t bm_bytes; /* one slot's bitmap (page multiple) */
    uint64_t task_off, task_size;
    uint64_t res_off, res_size; /* region of slot s at res_off + s*res_size */
    int nworkers;
} pool__shm_layout_t;

/* Computes the layout of an arena of about `bytes` for nworkers.  Returns 0,
 * or -1 (lay->size = 0) when it is too small to be worth having. */
int pool__shm_layout(uint64_t bytes, int nworkers, pool__shm_layout_t *lay);

/* The master's side (any thread unless said otherwise). */
typedef struct pool__shm {
    atomic_int refs;
    uint8_t *base; /* the arena's mapping */
    pool__shm_layout_t lay;
    size_t threshold; /* buffers of at least this many bytes use the arena */
    pthread_mutex_t mu;
    _Atomic uint64_t *task_bm;  /* under mu */
    _Atomic uint64_t *held;     /* nworkers bitmaps, under mu */
    size_t task_used;           /* bytes, under mu */
    size_t res_held;            /* bytes, under mu */
    pthread_cond_t freed;       /* a task block was freed (under mu) */
    _Atomic uint64_t copied_in; /* bytes callers copied into task blocks */
    /* Result blocks a caller took over (pool__shm_keep): freed once both
     * the outcome that delivered them and the caller let go, in either
     * order (owners: POOL_SHM_KEPT_* bits still holding it).  Under mu. */
    struct pool__shm_kept {
        uint64_t off, len;
        int slot;
        int owners;
    } * kept;
    size_t nkept, capkept;
    struct pool__shm *next_live; /* the list pool__shm_find searches */
} pool__shm_t;

#define POOL_SHM_KEPT_OUTCOME 1 /* the delivering outcome is not freed yet */
#define POOL_SHM_KEPT_CALLER 2  /* no pool__shm_kept_release yet */

/* Maps lay->size bytes of fd at offset off.  Returns PK_OK with *out owning
 * one reference (pool__shm_unref), PK_ESYS or PK_ENOMEM. */
pk_err_t pool__shm_open(pool__shm_t **out, int fd, uint64_t off,
                        const pool__shm_layout_t *lay, size_t threshold,
                        pk_error_t *err);
void pool__shm_ref(pool__shm_t *s);
void pool__shm_unref(pool__shm_t *s); /* NULL is fine; unmaps at the last */

/* The bytes a block of len bytes takes (whole pages). */
static inline size_t pool__shm_block_bytes(size_t len)
{
    return (len + POOL_SHM_PAGE - 1) & ~(size_t)(POOL_SHM_PAGE - 1);
}

/* A task block of len bytes: its arena offset, or UINT64_MAX when full. */
uint64_t pool__shm_task_alloc(pool__shm_t *s, size_t len);
/* As pool__shm_task_alloc, but when the region is full and blocks other
 * than the caller's own `pending` bytes are in use (they are freed as
 * batches finish), waits up to wait_ns for them: back-pressure instead of
 * the socket.  UINT64_MAX when there is still no room. */
uint64_t pool__shm_task_alloc_wait(pool__shm_t *s, size_t len, size_t pending,
                                   uint64_t wait_ns);
void pool__shm_task_free(pool__shm_t *s, uint64_t off, size_t len);

/* A result block from slot's worker, range-checked already: marks it held.
 * Returns 0, or -1 (misaligned, or overlapping a block still held). */
int pool__shm_res_accept(pool__shm_t *s, int slot, uint64_t off, size_t len);
/* Frees an accepted block (held = 1) or one never accepted (held = 0; only
 * the pages not held by anything else are freed). */
void pool__shm_res_release(pool__shm_t *s, int slot, uint64_t off, size_t len,
                           int held);
/* The caller takes over the accepted result block at p (a view it was
 * handed): the outcome that delivered it will not free it, and it stays
 * mapped (one reference on s) until pool__shm_kept_release.  The caller may
 * release it before that outcome is freed: the block is then freed with
 * the outcome.  Returns 0, or -1 when p is not the start of a result block
 * held now. */
int pool__shm_keep(pool__shm_t *s, const void *p, size_t *len);
/* Frees a block taken with pool__shm_keep and drops its reference.
 * Returns 0, or -1 when p is not one (nothing happens). */
int pool__shm_kept_release(pool__shm_t *s, const void *p);
/* The live arena whose mapping holds p, with a reference the caller drops
 * (pool__shm_unref), or NULL. */
pool__shm_t *pool__shm_find(const void *p);

/* Before spawning a new generation into slot (the old one is reaped). */
void pool__shm_res_reset(pool__shm_t *s, int slot);

/* Bytes in use: task blocks, result blocks held by the master, and result
 * blocks allocated by workers (held or not yet received). */
void pool__shm_usage(pool__shm_t *s, size_t *task_used, size_t *res_held,
                     size_t *res_alloc);

/* Maps the pages of an arena block into this process's page tables in one
 * call (MADV_POPULATE_READ / _WRITE) instead of a fault per page on first
 * touch.  Best effort: a kernel without it leaves the faults. */
void pool__shm_prefault(const void *p, size_t len, int write);

/* The worker's side: allocates len bytes in slot's result region of the
 * arena mapped at base.  Returns the arena offset, or UINT64_MAX when the
 * region has no room (the buffer then goes through the socket). */
uint64_t pool__shm_worker_alloc(uint8_t *base, const pool__shm_layout_t *lay,
                                int slot, size_t len);
/* Frees a block the worker allocated but never sent to the master. */
void pool__shm_worker_free(uint8_t *base, const pool__shm_layout_t *lay,
                           int slot, uint64_t off, size_t len);

/* ---- the shared heap ----------------------------------------------------
 * One per process, made on first use: a sparse memfd (default 16 GiB of
 * address space, PICKLEPOOL_SHARED_BYTES to change it) from which callers
 * allocate arrays (picklepool/shared.h) that every worker of every pool
 * maps read-only, so a map over them sends offsets, never bytes.  Only the
 * caller's process allocates; blocks are whole pages, first fit.  Pages
 * freed below POOL_SHM_HOT bytes stay resident for reuse; above it they go
 * back to the system at once. */
#define POOL_SHM_HEAP_DEFAULT ((uint64_t)16 << 30)
#define POOL_SHM_HOT ((uint64_t)256 << 20)

typedef struct pool__heap {
    int fd;        /* the memfd (passed to the fork server per pool) */
    uint8_t *base; /* read-write mapping in the caller's process */
    uint64_t size;
} pool__heap_t;

/* The process's heap, made on first call (any thread).  Returns PK_OK with
 * *h set, or PK_ESYS / PK_ENOMEM / PK_EINVAL (a bad
 * PICKLEPOOL_SHARED_BYTES) with err set; the next call tries again. */
pk_err_t pool__heap_get(pool__heap_t **h, pk_error_t *err);
/* Unmaps and closes the heap when no block is live (a later
 * pool__heap_get makes a new one). */
void pool__heap_fini(void);
/* The heap if it was made, else NULL. */
pool__heap_t *pool__heap_peek(void);
/* len bytes (page aligned), or NULL when the heap has no room, or (with
 * *nomem set) when this process is out of memory. */
void *pool__heap_alloc(size_t len, int *nomem);
/* Frees the block starting at p.  Returns 0, or -1 when p is not the
 * start of a live block (nothing happens). */
int pool__heap_free(const void *p);
/* The heap offset of [p, p+len) when it lies in one live block, else
 * UINT64_MAX. */
uint64_t pool__heap_find(const void *p, size_t len);
/* Live blocks and their bytes. */
void pool__heap_usage(size_t *blocks, size_t *bytes);

#endif /* POOL_SHM_H */
