/*
 * picklepool/shared.h - arrays the workers read where they are.
 *
 * For parallel preprocessing of large arrays.  Memory from
 * pool_shared_alloc lies in the process's shared heap, which every worker
 * of every pool maps (read-only): fill it here, pass it to a map (as an
 * ndarray's data in pool_map / pool_imap, or a raw item's buffer in
 * pool_imap_raw / pool_apply_raw), and the workers read it in place: the
 * task carries an offset, never the bytes.  Any other buffer of at least
 * pool_opts_t.shm_threshold bytes is copied once, into the pool's arena.
 *
 * Results come back the same way: a kernel's large result arrays are built
 * in the worker's region of the pool's arena and handed to the caller as
 * views (an ndarray value whose data points into the arena), valid as long
 * as the results that hold them (pool_results_free, the next
 * pool_iter_next, pool_future_free).  pool_shared_keep takes one over, so it
 * outlives them until pool_shared_release; it also outlives the pool (the
 * mapping stays until the last kept view is released).
 *
 * The heap is a sparse memfd of 16 GiB of address space (the environment
 * variable PICKLEPOOL_SHARED_BYTES, read once, changes it): it costs memory
 * only for pages in use.  Pages freed in its first 256 MiB stay resident
 * for the next allocation; freed pages above go back to the system at once.
 * Pools created before the first pool_shared_alloc map the heap too: it is
 * made with the first pool.
 *
 * Thread-safety: every function here may be called from any thread.
 * Fork-safety: not in a forked child (other than the pool's own workers):
 * the child would share the memory but not the allocator's bookkeeping.
 */
#ifndef PICKLEPOOL_SHARED_H
#define PICKLEPOOL_SHARED_H

#include <stddef.h>

#include <stdint.h>

#include "error.h"
#include "export.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates len bytes (len >= 1) in the shared heap, page aligned (4096
 * bytes: any dtype's alignment), contents undefined.  Returns PK_OK with
 * *ptr set (owned by the caller: pool_shared_release), PK_EINVAL (len 0),
 * PK_ENOMEM when the heap has no room (err names its size and the
 * variable that changes it), or PK_ESYS when the heap cannot be made. */
PK_API pk_err_t pool_shared_alloc(size_t len, void **ptr, pk_error_t *err);

/* Takes over the result view [ptr, ptr+len) - the data of a result's
 * ndarray, or a raw result's buffer - so that it stays valid after the
 * results, iterator or future that delivered it are freed, and after its
 * pool is destroyed, until pool_shared_release(ptr).  Releasing it while
 * those results are still alive is fine too: it is then freed with them.
 * Returns PK_OK, or
 * PK_EINVAL when ptr is not the start of a result held in a pool's arena
 * (small buffers travel through the socket instead: copy those), or is
 * kept already. */
PK_API pk_err_t pool_shared_keep(const void *ptr, size_t len, pk_error_t *err);

/* Releases memory from pool_shared_alloc or a view taken with
 * pool_shared_keep.  Returns PK_OK, or PK_EINVAL (nothing happens) when
 * ptr is neither (NULL included).  Release nothing a map still reads. */
PK_API pk_err_t pool_shared_release(void *ptr);

/* Whether [ptr, ptr+len) lies inside one block from pool_shared_alloc,
 * so that a map passes it without a copy: 1 or 0. */
PK_API int pool_shared_contains(const void *ptr, size_t len);

/* What the heap holds now: live blocks and their bytes (whole pages). */
PK_API void pool_shared_usage(size_t *blocks, size_t *bytes);

/* Bytes of out-of-band buffers pool p copied since it was created: *in,
 * inputs copied into its arena (not in the shared heap); *out, results
 * its workers copied into the arena (not built there by a kernel: a raw
 * handler's or a Python function's results, or a kernel's arrays that did
 * not fit).  Buffers below shm_threshold, which travel in the socket's
 * frames, are not counted.  Either pointer may be NULL. */
PK_API void pool_shared_copies(pool_t *p, uint64_t *in, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_SHARED_H */
