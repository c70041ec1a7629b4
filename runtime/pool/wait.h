/*
 * wait.h - how a caller blocks in the pool layer (private).
 *
 * Interrupts: while a caller blocks, SIGINT and SIGTERM whose disposition
 * is the default get a temporary handler that sets pool__intr_flag; the
 * blocked call then cancels its job (queued batches dropped, workers still
 * running it killed after a short grace) and returns PK_EINTR.  The
 * previous disposition is restored when the last blocked call returns.
 * Handlers the program installed itself are left alone.
 *
 * Thread-safety: any thread; enter/leave nest and count across threads.
 */
#ifndef POOL_WAIT_H
#define POOL_WAIT_H

#include <signal.h>
#include <time.h>

#include "pool/internal.h"

/* Set by the temporary handler; cleared by the first pool__intr_enter. */
extern volatile sig_atomic_t pool__intr_flag;

/* Brackets a blocking wait: the first enter installs the handlers (where
 * the disposition is the default), the last leave restores them. */
void pool__intr_enter(void);
void pool__intr_leave(void);

/* The CLOCK_MONOTONIC time s seconds from now (s < 0 or huge: ~31 years). */
struct timespec pool__deadline_in(double s);

/* Waits on p->cv (p->mu held) until signalled, `deadline` (NULL: none) or
 * an interrupt.  Returns PK_OK, PK_ETIMEDOUT or PK_EINTR. */
pk_err_t pool__cv_wait(pool_t *p, const struct timespec *deadline);

#endif /* POOL_WAIT_H */
