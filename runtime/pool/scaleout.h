/*
 * scaleout.h - what the pool layer gives the scale-out programs (private):
 * remote pools (pool_opts_t.address: a pool whose one "worker" is a
 * forwarder to `picklepool serve`), and the raw maps with TASK flags that
 * the host agent (`picklepool worker`) runs the batches it receives with.
 *
 * A remote pool reuses the whole local machinery - driver, master,
 * reorder buffer, cancellation - with one exec'd worker: `picklepool-worker
 * --forward ENDPOINT`, which speaks the worker protocol to this pool's
 * master and the client protocol to serve (workers/forward.c).  Before
 * starting it, pool_create connects to serve itself and waits for the
 * handshake's verdict (pool__remote_check), so a refused key or an
 * unreachable serve is a clear error from pool_create within seconds.
 *
 * Thread-safety: as pool.h.  Fork-safety: none of it in a forked child.
 */
#ifndef POOL_SCALEOUT_H
#define POOL_SCALEOUT_H

#include <stddef.h>
#include <stdint.h>

#include "picklepool/pool.h"

/* pool_imap_raw with TASK flags for its batches: 0 or POOL_WIRE_F_STARARGS
 * (each item is an args tuple, for native workers: func(*item)).  Returns
 * as pool_imap_raw, and PK_EINVAL for other flags. */
pk_err_t pool__imap_raw_flags(pool_t *p, const void *call, size_t call_len,
                              uint16_t flags, pool_raw_next_fn next, void *ctx,
                              int ordered, const pool_call_opts_t *copts,
                              pool_iter_t **it, pk_error_t *err);

#endif /* POOL_SCALEOUT_H */
