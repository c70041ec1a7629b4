/*
 * runner.h - a fork-per-test runner for cmocka tests that start processes
 * and threads (the pool tests, tests/test_pool_*.c).
 *
 * Every test runs in a child of its own, forked from the still
 * single-threaded runner and put in a process group of its own, so each
 * gets a fresh fork server and a crash, a hang or a leak stays in its test.
 * The child arms alarm() with the test's limit; the runner also kills the
 * whole group when a child overruns, and sweeps the group after every test.
 * A test program is its table and one call:
 *
 *   static const runner_test_t tests[] = {RUNNER_TEST(test_x, 30), ...};
 *   int main(int argc, char **argv)
 *   {
 *       return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
 *   }
 *
 * and runs as `PROGRAM [NAME-SUBSTRING...]` (no argument: every test).
 */
#ifndef PK_TEST_RUNNER_H
#define PK_TEST_RUNNER_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct runner_test {
    const char *name;
    CMUnitTestFunction fn;
    unsigned timeout; /* seconds */
} runner_test_t;

#define RUNNER_TEST(fn, secs)                                                  \
    {                                                                          \
#fn, fn, secs                                                          \
    }
#define RUNNER_COUNT(table) (sizeof(table) / sizeof((table)[0]))

/* Runs the tests of tests[0..n) whose names contain one of argv[1..] (every
 * test when there is none), each in a child of its own under cmocka, with
 * `teardown` (may be NULL) run in the child after the test, passed or
 * failed.  Prints "PROGRAM: X of Y tests passed" and the failed names.
 * Returns main's exit status: 0 when every test run passed, 1 when one
 * failed or when no test matches. */
int runner_main(int argc, char **argv, const runner_test_t *tests, size_t n,
                CMFixtureFunction teardown);

#endif /* PK_TEST_RUNNER_H */
