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

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "picklepool/pool.h"

/* The forwarder's command line, and the storage it points into. */
typedef struct pool__remote_argv {
    char exe[PATH_MAX];
    char address[320];
    char keys[PATH_MAX];
    char give_up[32];
    const char *argv[10];
} pool__remote_argv_t;

/* Turns the options of a remote pool (o->address set) into those of a
 * local pool of one forwarder: refuses what a remote pool cannot take
 * (PK_EINVAL naming it), decides the security (pool__net_mode's errors),
 * finds picklepool-worker (PK_EIO naming where it looked), then checks the
 * connection (pool__remote_check) and rewrites *o: one worker running
 * ra->argv, no arena, no lanes, prefetch x 32.  ra must outlive the
 * pool_create that uses o.  Call after pool_global_init (it makes a ZeroMQ
 * context). */
pk_err_t pool__remote_prepare(pool_opts_t *o, pool__remote_argv_t *ra,
                              pk_error_t *err);

/* Connects to serve at `address` with the keys of `keys` (NULL with
 * insecure) and waits up to timeout_ms for the handshake's verdict.
 * Returns PK_OK; PK_EPROTO with curve.h's message when the master refused
 * us (key not allow-listed, CURVE on one side only, wrong master key);
 * PK_ETIMEDOUT saying what was seen (nothing, refused connections);
 * pool__remote_sec_load's errors (no keys, no master.pub...). */
pk_err_t pool__remote_check(const char *address, const char *keys, int insecure,
                            int timeout_ms, pk_error_t *err);

/* The path of picklepool-worker: $PICKLEPOOL_WORKER_PROGRAM, else beside
 * the library (or ../bin from it), else beside the program (or ../, or
 * ../bin).  Returns PK_OK with out filled, PK_EIO naming every place
 * looked at, or PK_ELIMIT. */
pk_err_t pool__worker_program(char *out, size_t size, pk_error_t *err);

/* pool_imap_raw with TASK flags for its batches: 0 or POOL_WIRE_F_STARARGS
 * (each item is an args tuple, for native workers: func(*item)).  Returns
 * as pool_imap_raw, and PK_EINVAL for other flags. */
pk_err_t pool__imap_raw_flags(pool_t *p, const void *call, size_t call_len,
                              uint16_t flags, pool_raw_next_fn next, void *ctx,
                              int ordered, const pool_call_opts_t *copts,
                              pool_iter_t **it, pk_error_t *err);

#endif /* POOL_SCALEOUT_H */
