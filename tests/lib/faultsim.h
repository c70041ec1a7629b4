/*
 * faultsim.h - allocation failure injection for the tests (after SQLite's
 * faultsim): an allocator that fails the Nth allocation and counts the ones
 * still live, so a test can run an operation with N = 1, 2, ... until it
 * succeeds and check at each step the error and that nothing leaked.
 * Not thread-safe; for single-threaded codec tests.
 */
#ifndef PK_TEST_FAULTSIM_H
#define PK_TEST_FAULTSIM_H

/* Installs the counting allocator (pk_set_allocator) with nothing failing
 * and the counters at zero.  Free what the default allocator made first. */
void faultsim_install(void);
/* Restores the default allocator. */
void faultsim_remove(void);
/* From now on, the n-th allocation or reallocation fails (0: none); the
 * attempt count restarts, the live count is kept. */
void faultsim_fail_at(long n);
/* faultsim_fail_at(n) and the live count back to zero too. */
void faultsim_reset(long n);
/* Allocations attempted since the last faultsim_fail_at / faultsim_reset. */
long faultsim_calls(void);
/* Allocations made through the hook and not yet freed, since the last
 * faultsim_install / faultsim_reset. */
long faultsim_live(void);

#endif /* PK_TEST_FAULTSIM_H */
