/*
 * test_pool_place.c - the pool's placement of its workers:
 * compact, spread and none checked against each worker's real affinity
 * (/proc/PID/status) and the cores hwloc sees, more workers than cores,
 * synthetic topologies, and the affinity mask the process started with.
 * pool_stats' core and CPU list must agree with what the kernel says.
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_place [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hwloc.h>

#include "picklepool.h"
#include "lib/pool_helpers.h"
#include "lib/runner.h"

/* ---- CPU sets, from /proc and hwloc ----------------------------------- */

typedef struct cpuset {
    uint64_t bits[16];
} cpuset_t;

static int cpuset_parse(const char *s, cpuset_t *out)
{
    memset(out, 0, sizeof *out);
    while (*s && *s != '\n') {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s)
            return -1;
        if (*end == '-')
            b = strtol(end + 1, &end, 10);
        for (long c = a; c <= b && c < 1024; c++)
            out->bits[c / 64] |= UINT64_C(1) << (c % 64);
        s = *end == ',' ? end + 1 : end;
    }
    return 0;
}

static const char *cpuset_fmt(const cpuset_t *s)
{
    static char bufs[4][256];
    static int k;
    char *b = bufs[k = (k + 1) % 4];
    size_t len = 0;

    b[0] = '\0';
    for (int c = 0; c < 1024; c++) {
        if (!(s->bits[c / 64] >> (c % 64) & 1))
            continue;
        int e = c;
        while (e + 1 < 1024 && (s->bits[(e + 1) / 64] >> ((e + 1) % 64) & 1))
            e++;
        len += (size_t)snprintf(b + len, 256 - len, len ? ",%d" : "%d", c);
        if (e > c)
            len += (size_t)snprintf(b + len, 256 - len, "-%d", e);
        c = e;
    }
    return b;
}

/* Cpus_allowed_list of a process. */
static int proc_cpus(int pid, cpuset_t *out)
{
    char path[64], line[512];
    FILE *f;
    int rc = -1;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            rc = cpuset_parse(line + 18 + strspn(line + 18, " \t"), out);
            break;
        }
    fclose(f);
    return rc;
}

static void self_cpus(cpuset_t *out)
{
    cpu_set_t aff;
    memset(out, 0, sizeof *out);
    assert_int_equal(sched_getaffinity(0, sizeof aff, &aff), 0);
    for (int c = 0; c < CPU_SETSIZE && c < 1024; c++)
        if (CPU_ISSET(c, &aff))
            out->bits[c / 64] |= UINT64_C(1) << (c % 64);
}

static int cpuset_empty(const cpuset_t *s)
{
    for (int i = 0; i < 16; i++)
        if (s->bits[i])
            return 0;
    return 1;
}

/* The cores this process may use, in hwloc's logical order, each as its
 * allowed PUs: what compact placement hands out, worker k getting entry
 * k % n.  Returns n. */
static int allowed_cores(cpuset_t *cores, int max)
{
    hwloc_topology_t t;
    cpuset_t self;
    int n = 0;

    self_cpus(&self);
    assert_int_equal(hwloc_topology_init(&t), 0);
    assert_int_equal(hwloc_topology_load(t), 0);
    hwloc_obj_type_t type = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) > 0
                                ? HWLOC_OBJ_CORE
                                : HWLOC_OBJ_PU;
    int total = hwloc_get_nbobjs_by_type(t, type);
    for (int i = 0; i < total && n < max; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t, type, (unsigned)i);
        cpuset_t s;
        unsigned pu;
        memset(&s, 0, sizeof s);
        hwloc_bitmap_foreach_begin(pu, o->cpuset)
        {
            if (pu < 1024 && (self.bits[pu / 64] >> (pu % 64) & 1))
                s.bits[pu / 64] |= UINT64_C(1) << (pu % 64);
        }
        hwloc_bitmap_foreach_end();
        if (!cpuset_empty(&s))
            cores[n++] = s;
    }
    hwloc_topology_destroy(t);
    return n;
}

/* ---- placement ---------------------------------------------------------- */

/* Each worker's real affinity equals what compact placement predicts. */
static void check_compact(pool_t *p, int nworkers)
{
    cpuset_t cores[1024], got, claimed;
    int nc = allowed_cores(cores, 1024);
    pool_worker_stats_t st[64];
    size_t n = tp_stats(p, st, 64);

    assert_int_equal(n, (size_t)nworkers);
    for (size_t k = 0; k < n; k++) {
        const cpuset_t *want = &cores[k % (size_t)nc];
        if (st[k].slot != (int)k)
            fail_msg("stats entry %zu is slot %d", k, st[k].slot);
        if (st[k].pid <= 0)
            fail_msg("worker %zu has no pid", k);
        if (proc_cpus(st[k].pid, &got) < 0)
            fail_msg("worker %zu (pid %d): cannot read its affinity", k,
                     st[k].pid);
        if (memcmp(&got, want, sizeof got) != 0)
            fail_msg(
                "worker %zu (pid %d) may run on CPUs %s, compact placement "
                "gives it %s",
                k, st[k].pid, cpuset_fmt(&got), cpuset_fmt(want));
        if (st[k].core != (int)(k % (size_t)nc))
            fail_msg("worker %zu reports core %d, want %zu", k, st[k].core,
                     k % (size_t)nc);
        if (cpuset_parse(st[k].cpus, &claimed) < 0 ||
            memcmp(&claimed, want, sizeof claimed) != 0)
            fail_msg("worker %zu reports cpus '%s', want %s", k, st[k].cpus,
                     cpuset_fmt(want));
    }
}

static void test_placement_compact(void **state)
{
    cpuset_t cores[1024];
    int nc = allowed_cores(cores, 1024);
    pool_t *p = tp_start_n(0);

    check_compact(p, nc); /* default: one worker per allowed core */
    pool_destroy(&p);
}

static void test_placement_spread_and_none(void **state)
{
    cpuset_t cores[1024], self, got;
    int nc = allowed_cores(cores, 1024);
    pool_opts_t o;
    pool_worker_stats_t st[64];

    tp_opts_for(&o, 0);
    o.placement = POOL_PLACE_NONE;
    pool_t *p = tp_start(&o);
    self_cpus(&self);
    size_t n = tp_stats(p, st, 64);
    assert_int_equal(n, (size_t)nc);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(proc_cpus(st[k].pid, &got), 0);
        if (memcmp(&got, &self, sizeof got) != 0)
            fail_msg("placement none: worker %zu may run on %s, want all of %s",
                     k, cpuset_fmt(&got), cpuset_fmt(&self));
        assert_int_equal(st[k].core, -1);
    }
    pool_destroy(&p);

    /* spread: one whole allowed core each, all different */
    tp_opts_for(&o, 0);
    o.placement = POOL_PLACE_SPREAD;
    p = tp_start(&o);
    n = tp_stats(p, st, 64);
    assert_int_equal(n, (size_t)nc);
    int used[1024] = {0};
    for (size_t k = 0; k < n; k++) {
        int which = -1;
        assert_int_equal(proc_cpus(st[k].pid, &got), 0);
        for (int c = 0; c < nc; c++)
            if (memcmp(&got, &cores[c], sizeof got) == 0)
                which = c;
        if (which < 0)
            fail_msg("placement spread: worker %zu may run on %s, not one core",
                     k, cpuset_fmt(&got));
        if (used[which]++)
            fail_msg("placement spread: two workers on core %d", which);
    }
    pool_destroy(&p);
}

static void test_more_workers_than_cores(void **state)
{
    const size_t n = 200000;
    pool_t *p = tp_start_n(5);
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);

    check_compact(p, 5); /* wraps round: cores 0, 1, 0, 1, 0 on 2 cores */
    for (size_t i = 0; i < n; i++)
        in[i] = (int64_t)i * 3 - 7;
    CHECK_OK(pool_map_i64(p, "examples", "square", in, out, n, VEC_));
    for (size_t i = 0; i < n; i++)
        if (out[i] != in[i] * in[i])
            fail_msg("item %zu wrong", i);

    pool_worker_stats_t st[64];
    size_t nw = tp_stats(p, st, 64);
    uint64_t done = 0;
    for (size_t k = 0; k < nw; k++)
        done += st[k].items_done;
    if (done < n)
        fail_msg("workers report %" PRIu64 " items done, %zu were mapped", done,
                 n);
    free(in);
    free(out);
    pool_destroy(&p);
}

/* A synthetic topology (nothing is bound) still decides each worker's core
 * and CPU list as pool_stats reports them. */
static void test_placement_synthetic(void **state)
{
    static const char *const compact[4] = {"0-1", "2-3", "4-5", "6-7"};
    pool_opts_t o;
    pool_worker_stats_t st[64];

    tp_opts_for(&o, 4);
    o.topology = "pack:2 core:2 pu:2";
    pool_t *p = tp_start(&o);
    size_t n = tp_stats(p, st, 64);
    assert_int_equal(n, 4);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(st[k].core, (int)k);
        assert_string_equal(st[k].cpus, compact[k]);
    }
    int64_t v[3] = {1, 2, 3}, out[3];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[2], 9);
    pool_destroy(&p);

    /* spread: 2 workers land on different packages */
    tp_opts_for(&o, 2);
    o.topology = "pack:2 core:2 pu:2";
    o.placement = POOL_PLACE_SPREAD;
    p = tp_start(&o);
    n = tp_stats(p, st, 64);
    assert_int_equal(n, 2);
    if (st[0].core / 2 == st[1].core / 2)
        fail_msg("spread put both workers on package %d (cores %d, %d)",
                 st[0].core / 2, st[0].core, st[1].core);
    pool_destroy(&p);
}

/* The pool honours the affinity mask it was started with. */
static void test_placement_honours_affinity(void **state)
{
    cpuset_t self, got;
    cpu_set_t one;
    int last = -1;

    self_cpus(&self);
    for (int c = 0; c < 1024; c++)
        if (self.bits[c / 64] >> (c % 64) & 1)
            last = c;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    /* before the first pool of this (per-test) process: the fork server and
     * the topology are loaded afterwards */
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    pool_t *p = tp_start_n(0);
    pool_worker_stats_t st[64];
    size_t n = tp_stats(p, st, 64);
    assert_int_equal(n, 1);
    assert_int_equal(proc_cpus(st[0].pid, &got), 0);
    if (!(got.bits[last / 64] >> (last % 64) & 1) ||
        got.bits[last / 64] != (UINT64_C(1) << (last % 64)))
        fail_msg("worker may run on %s, the process was limited to CPU %d",
                 cpuset_fmt(&got), last);
    int64_t v[2] = {5, 6}, out[2];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 2, VEC_));
    assert_int_equal(out[1], 36);
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_placement_compact, 30),
    RUNNER_TEST(test_placement_spread_and_none, 30),
    RUNNER_TEST(test_more_workers_than_cores, 60),
    RUNNER_TEST(test_placement_synthetic, 30),
    RUNNER_TEST(test_placement_honours_affinity, 30),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
