/*
 * faultsim.h - allocation failure injection for the tests (after SQLite's
 * faultsim): an allocator that fails the Nth allocation and counts the ones
 * still live, so a test can run an operation with N = 1, 2, ... until it
 * succeeds and check at each step the error and that nothing leaked.
 *
 * Threads and processes: only allocations made by the thread that armed
 * the failure (the caller of faultsim_fail_at / faultsim_reset) are counted
 * as attempts and can fail; other threads' (a pool's master thread) never
 * fail, and neither do a forked child's (a fork server or worker that
 * inherited the hook), so a run is deterministic as far as the armed
 * thread's own allocations are.  faultsim_fail_others_at turns this round:
 * then only the other threads of this process count and fail (a pool's
 * master thread, whose allocations follow its messages' timing).  The live
 * count covers every thread of this process and is atomic.  Install and
 * remove the hook while no other picklepool call runs (pk_set_allocator's
 * rule).
 */
#ifndef PK_TEST_FAULTSIM_H
#define PK_TEST_FAULTSIM_H

/* Installs the counting allocator (pk_set_allocator) with nothing failing
 * and the counters at zero.  Free what the default allocator made first. */
void faultsim_install(void);
/* Restores the default allocator. */
void faultsim_remove(void);
/* From now on, the n-th allocation or reallocation made by the calling
 * thread fails (0: none); the attempt count restarts, the live count is
 * kept. */
void faultsim_fail_at(long n);
/* The same for the allocations of every other thread of this process
 * (never the caller's); faultsim_fail_at(0) disarms it. */
void faultsim_fail_others_at(long n);
/* faultsim_fail_at(n) and the live count back to zero too. */
void faultsim_reset(long n);
/* Allocations the armed thread(s) attempted since the last arming call
 * with n > 0 (with n == 0 nothing is counted). */
long faultsim_calls(void);
/* Whether the armed failure happened (faultsim_calls() reached n). */
int faultsim_fired(void);
/* Allocations made through the hook and not yet freed, since the last
 * faultsim_install / faultsim_reset, by any thread of this process. */
long faultsim_live(void);

#endif /* PK_TEST_FAULTSIM_H */
