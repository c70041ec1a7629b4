/*
 * picklepool/worker.h - exec'd workers: a process the pool starts with a
 * command of its own (pool_opts_t.worker_argv), such as a Python interpreter
 * running `picklepool.worker`, that serves the pool through the same worker
 * loop as native workers: pinned, supervised, its scoreboard slot, the
 * shared-memory arena and the fast lane all as for a forked native worker.
 *
 * The difference is who runs an item.  A native worker decodes each item's
 * pickle in C and calls a registered function; an exec'd worker hands each
 * item's pickle bytes, untouched, to a handler (pool_raw_fn) and sends back
 * the bytes the handler returns.  What the bytes mean is between the caller
 * (pool_imap_raw) and the handler: picklepool's Python front-end ships
 * CPython pickles of chunks of Python items both ways.
 *
 * Forked instead of exec'd: a pool may also name a worker main
 * (pool_opts_t.worker_main, see pool_global_init_main in pool.h) that the
 * fork server calls in a forked copy of the caller instead of exec'ing the
 * command, after the same set-up; the main calls pool_worker_serve just the
 * same.  An interpreter embedded in the caller (Python's front-end) so
 * starts its workers without starting an interpreter in each.
 *
 * Thread-safety: pool_worker_serve runs the calling process as a worker
 * until it should exit; call it once, from one thread.  Fork-safety: call
 * it in the process the pool exec'd, or in its worker main, not in a fork
 * of either.
 */
#ifndef PICKLEPOOL_WORKER_H
#define PICKLEPOOL_WORKER_H

#include <stddef.h>

#include "error.h"
#include "export.h"
#include "pickle.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A forked worker's main (pool_opts_t.worker_main): the whole life of a
 * worker process the fork server forked instead of exec'ing worker_argv.
 * It runs in a copy of the fork server, itself a copy of the caller's
 * process when pool_global_init_main started it: single-threaded, pinned,
 * with PR_SET_PDEATHSIG, default signal dispositions, PICKLEPOOL_WORKER and
 * the pool's worker_env set in its environment (setenv; environment copies
 * an interpreter made earlier do not see them), the pool's shared memory
 * open at the descriptor PICKLEPOOL_WORKER names, and none of the caller's
 * other descriptors: those open when the fork server was started are
 * /dev/null at the same numbers (so an inherited object that closes "its"
 * descriptor closes nothing of the worker's), every other one is closed.
 * It should call pool_worker_serve and return the exit status that gives;
 * the process then _exit()s with the return value, without atexit
 * handlers or stdio flushing of its own (fflush(NULL) is called).  arg is
 * pool_opts_t.worker_main_arg. */
typedef int (*pool_worker_main_fn)(void *arg);

/* One item for a handler.  Everything is borrowed for the call only. */
typedef struct pool_raw_call {
    const void *call; /* the call frame the caller gave (pool_imap_raw) */
    size_t call_len;
    const void *item; /* the item's bytes */
    size_t len;
    const pk_buffer_t *bufs; /* its out-of-band buffers */
    size_t nbufs;
    size_t index; /* the item's position in its map */
} pool_raw_call_t;

/* What a handler returns for one item: the result's bytes and its
 * out-of-band buffers.  All of it must stay valid until the handler is
 * called again or pool_worker_serve returns: the loop copies it before
 * that (big buffers straight into the pool's shared-memory arena). */
typedef struct pool_raw_out {
    const void *data;
    size_t len;
    const pk_buffer_t *bufs;
    size_t nbufs;
} pool_raw_out_t;

/* Runs one item.  On success returns PK_OK with *out filled.  On failure
 * returns an error code (PK_EFUNC for "the call raised") with err->msg
 * describing it; that item alone fails. */
typedef pk_err_t (*pool_raw_fn)(void *ctx, const pool_raw_call_t *call,
                                pool_raw_out_t *out, pk_error_t *err);

/* Serves the pool that exec'd this process, reading where to connect and
 * which shared memory to map from the environment the pool set
 * (PICKLEPOOL_WORKER) and the descriptor it left open, and returns when the
 * worker should exit (STOP, retirement, or the master gone): PK_OK with
 * *exit_status (may be NULL) the status to exit with.  Returns PK_EINVAL
 * (with err filled) when the process was not started by a pool, or
 * PK_ESYS when the shared memory cannot be mapped. */
PK_API pk_err_t pool_worker_serve(pool_raw_fn fn, void *ctx, int *exit_status,
                                  pk_error_t *err);

/* In a process serving through pool_worker_serve (from a handler): 1 when
 * [p, p+len) lies in the caller's shared heap (picklepool/shared.h) -
 * memory the caller owns and this worker maps read-only, which stays
 * mapped and unchanged after the call for as long as the caller keeps it
 * and does not write to it - else 0 (the call's other buffers are valid
 * during the call only).  A handler may then hand a read-only argument to
 * its code as a view instead of a copy.  Thread-safe. */
PK_API int pool_worker_in_shared(const void *p, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_WORKER_H */
