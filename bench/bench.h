/*
 * bench.h - what the C benchmarks share: a monotonic clock and a sort
 * order for samples.  Header only (each bench .c file is its own program).
 */
#ifndef PK_BENCH_H
#define PK_BENCH_H

#include <time.h>

/* CLOCK_MONOTONIC, in seconds. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* qsort order of doubles, ascending. */
static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#endif /* PK_BENCH_H */
