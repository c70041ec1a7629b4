/*
 * test_topology.c - hwloc topology loading, worker placement and binding.
 *
 * Placement is checked core by core on synthetic topologies (so a 2-core CI
 * box exercises 2-package, NUMA and 16-core machines); binding is checked for
 * real on this machine, each in a forked child that reads its affinity back
 * with sched_getaffinity.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "proc/topology.h"

static pool__topo_t *load(const char *synthetic)
{
    pool__topo_t *t = NULL;
    pk_error_t err;
    pk_err_t rc = pool__topo_load(&t, synthetic, &err);
    if (rc != PK_OK)
        fail_msg("pool__topo_load(%s): %s", synthetic ? synthetic : "real",
                 err.msg);
    assert_non_null(t);
    return t;
}

/* cpus as a list string, for readable comparisons. */
static const char *str(const pool__cpuset_t *s)
{
    static char bufs[4][256];
    static int k;
    k = (k + 1) % 4;
    return pool__cpuset_str(s, bufs[k], sizeof bufs[k]);
}

static pool__cpuset_t set_of(int first, int last)
{
    pool__cpuset_t s;
    memset(&s, 0, sizeof s);
    for (int c = first; c <= last; c++)
        s.bits[c / 64] |= UINT64_C(1) << (c % 64);
    return s;
}

/* Places n workers and checks their cores against want[0..n); with
 * pus_per_core > 0 also checks each gets exactly that core's PUs (OS index
 * core * pus_per_core ...). */
static void check_place(const char *topo, pool_placement_t pl, int n,
                        const int *want, int pus_per_core)
{
    pool__topo_t *t = load(topo);
    pool__place_t *p = calloc((size_t)n, sizeof *p);
    pk_error_t err;

    assert_non_null(p);
    assert_int_equal(pool__topo_place(t, n, pl, p, &err), PK_OK);
    for (int i = 0; i < n; i++) {
        if (p[i].core != want[i])
            fail_msg(
                "%s placement %d, %d workers: worker %d on core %d, want %d",
                topo, (int)pl, n, i, p[i].core, want[i]);
        if (pus_per_core > 0) {
            pool__cpuset_t exp =
                set_of(want[i] * pus_per_core,
                       want[i] * pus_per_core + pus_per_core - 1);
            assert_string_equal(str(&p[i].cpus), str(&exp));
            assert_int_equal(p[i].pu, want[i] * pus_per_core);
        }
    }
    free(p);
    pool__topo_free(&t);
    assert_null(t);
}

/* ---- refusals first ------------------------------------------------------ */

static void test_refusals(void **state)
{
    pool__topo_t *t = NULL;
    pk_error_t err;
    pool__place_t p[1];

    assert_int_equal(pool__topo_load(&t, "bogus:2 frob", &err), PK_EINVAL);
    assert_null(t);
    assert_int_equal(err.code, PK_EINVAL);
    assert_non_null(strstr(err.msg, "bogus:2 frob"));

    t = load("core:2 pu:1");
    assert_int_equal(pool__topo_place(t, 0, POOL_PLACE_COMPACT, p, &err),
                     PK_EINVAL);
    assert_int_equal(pool__topo_place(t, -3, POOL_PLACE_SPREAD, p, &err),
                     PK_EINVAL);
    assert_int_equal(pool__topo_place(t, 1, (pool_placement_t)42, p, &err),
                     PK_EINVAL);
    pool__topo_free(&t);
    pool__topo_free(&t); /* idempotent */
    pool__topo_free(NULL);
}

static void test_cpuset_str(void **state)
{
    pool__cpuset_t s;
    char buf[64], tiny[6];

    memset(&s, 0, sizeof s);
    assert_string_equal(pool__cpuset_str(&s, buf, sizeof buf), "");
    s = set_of(0, 3);
    s.bits[0] |= 1u << 8;
    s.bits[1] |= 1u << 1;            /* 65 */
    s.bits[15] |= UINT64_C(1) << 63; /* 1023 */
    assert_string_equal(pool__cpuset_str(&s, buf, sizeof buf), "0-3,8,65,1023");
    pool__cpuset_str(&s, tiny, sizeof tiny);
    assert_string_equal(tiny, "0-...");
}

/* ---- synthetic placements --------------------------------------------- */

static void test_counts(void **state)
{
    static const struct {
        const char *topo;
        int cores, pus;
    } cases[] = {
        {"pack:2 core:4 pu:2", 8, 16},
        {"pack:2 numa:2 core:4 pu:2", 16, 32},
        {"core:2 pu:1", 2, 2},
        {"pack:1 core:16 pu:2", 16, 32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pool__topo_t *t = load(cases[i].topo);
        assert_int_equal(pool__topo_ncores(t), cases[i].cores);
        assert_int_equal(pool__topo_npus(t), cases[i].pus);
        assert_true(pool__topo_is_synthetic(t));
        pool__topo_free(&t);
    }
}

static void test_compact(void **state)
{
    static const int w3[] = {0, 1, 2};
    static const int w10[] = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1};
    static const int w5[] = {0, 1, 0, 1, 0};
    static const int w18[] = {0, 1,  2,  3,  4,  5,  6,  7, 8,
                              9, 10, 11, 12, 13, 14, 15, 0, 1};

    check_place("pack:2 core:4 pu:2", POOL_PLACE_COMPACT, 3, w3, 2);
    check_place("pack:2 core:4 pu:2", POOL_PLACE_COMPACT, 10, w10, 2);
    check_place("pack:2 numa:2 core:4 pu:2", POOL_PLACE_COMPACT, 18, w18, 2);
    check_place("core:2 pu:1", POOL_PLACE_COMPACT, 5, w5, 1);
    check_place("pack:1 core:16 pu:2", POOL_PLACE_COMPACT, 3, w3, 2);
}

static void test_spread(void **state)
{
    /* Two packages of four cores: fewer workers than cores are spread evenly
     * over packages and within them, and consecutive workers alternate. */
    static const int p2w2[] = {0, 4};
    static const int p2w3[] = {0, 4, 2};
    static const int p2w4[] = {0, 4, 2, 6};
    static const int p2w5[] = {0, 4, 1, 6, 2};
    static const int p2w8[] = {0, 4, 1, 5, 2, 6, 3, 7};
    static const int p2w11[] = {0, 4, 1, 5, 2, 6, 3, 7, 0, 4, 1};
    check_place("pack:2 core:4 pu:2", POOL_PLACE_SPREAD, 2, p2w2, 2);
    check_place("pack:2 core:4 pu:2", POOL_PLACE_SPREAD, 3, p2w3, 2);
    check_place("pack:2 core:4 pu:2", POOL_PLACE_SPREAD, 4, p2w4, 2);
    check_place("pack:2 core:4 pu:2", POOL_PLACE_SPREAD, 5, p2w5, 2);
    check_place("pack:2 core:4 pu:2", POOL_PLACE_SPREAD, 8, p2w8, 2);
    check_place("pack:2 core:4 pu:2", POOL_PLACE_SPREAD, 11, p2w11, 2);

    /* Packages first, then the NUMA nodes inside them. */
    static const int n4[] = {0, 8, 4, 12};
    static const int n6[] = {0, 8, 4, 12, 2, 10};
    static const int n17[] = {0,  8, 4,  12, 1,  9, 5,  13, 2,
                              10, 6, 14, 3,  11, 7, 15, 0};
    check_place("pack:2 numa:2 core:4 pu:2", POOL_PLACE_SPREAD, 4, n4, 2);
    check_place("pack:2 numa:2 core:4 pu:2", POOL_PLACE_SPREAD, 6, n6, 2);
    check_place("pack:2 numa:2 core:4 pu:2", POOL_PLACE_SPREAD, 17, n17, 2);

    static const int c1[] = {0};
    static const int c2[] = {0, 1};
    static const int c3[] = {0, 1, 0};
    check_place("core:2 pu:1", POOL_PLACE_SPREAD, 1, c1, 1);
    check_place("core:2 pu:1", POOL_PLACE_SPREAD, 2, c2, 1);
    check_place("core:2 pu:1", POOL_PLACE_SPREAD, 3, c3, 1);

    /* One package of 16 cores: evenly strided, like OpenMP spread. */
    static const int f2[] = {0, 8};
    static const int f4[] = {0, 4, 8, 12};
    static const int f8[] = {0, 2, 4, 6, 8, 10, 12, 14};
    static const int f17[] = {0, 1,  2,  3,  4,  5,  6,  7, 8,
                              9, 10, 11, 12, 13, 14, 15, 0};
    check_place("pack:1 core:16 pu:2", POOL_PLACE_SPREAD, 2, f2, 2);
    check_place("pack:1 core:16 pu:2", POOL_PLACE_SPREAD, 4, f4, 2);
    check_place("pack:1 core:16 pu:2", POOL_PLACE_SPREAD, 8, f8, 2);
    check_place("pack:1 core:16 pu:2", POOL_PLACE_SPREAD, 17, f17, 2);
}

/* Whatever n, spread never doubles up a core before every core has a
 * worker, and consecutive workers are on different packages while both
 * packages still have free cores. */
static void test_spread_properties(void **state)
{
    const char *topos[] = {"pack:2 core:4 pu:2", "pack:2 numa:2 core:4 pu:2",
                           "pack:2 core:3 pu:1"};
    for (size_t k = 0; k < sizeof topos / sizeof topos[0]; k++) {
        pool__topo_t *t = load(topos[k]);
        int nc = pool__topo_ncores(t), half = nc / 2;
        pool__place_t p[40];
        pk_error_t err;
        for (int n = 1; n <= 2 * nc + 1; n++) {
            assert_int_equal(pool__topo_place(t, n, POOL_PLACE_SPREAD, p, &err),
                             PK_OK);
            int used[64] = {0}, per_pack[2] = {0};
            for (int i = 0; i < n; i++) {
                assert_in_range(p[i].core, 0, nc - 1);
                if (i < nc) {
                    assert_int_equal(used[p[i].core], 0);
                    per_pack[p[i].core >= half]++;
                }
                used[p[i].core]++;
                if (i > 0 && i < nc && (i % 2) == 1)
                    assert_int_not_equal(p[i].core >= half,
                                         p[i - 1].core >= half);
            }
            int m = n < nc ? n : nc;
            assert_in_range(per_pack[0] - per_pack[1], 0, 1);
            assert_int_equal(per_pack[0] + per_pack[1], m);
        }
        pool__topo_free(&t);
    }
}

static void test_none(void **state)
{
    pool__topo_t *t = load("pack:2 core:4 pu:2");
    pool__place_t p[3];
    pk_error_t err;
    pool__cpuset_t all = set_of(0, 15);

    assert_int_equal(pool__topo_place(t, 3, POOL_PLACE_NONE, p, &err), PK_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(p[i].core, -1);
        assert_int_equal(p[i].pu, 0);
        assert_string_equal(str(&p[i].cpus), str(&all));
    }
    /* Binding with an imaginary machine is skipped. */
    assert_int_equal(pool__topo_bind_self(t, &p[0].cpus, &err), PK_OK);
    pool__topo_free(&t);
}

static void test_print(void **state)
{
    pool__topo_t *t = load("pack:2 numa:2 core:2 pu:2");
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);

    assert_non_null(fp);
    pool__topo_print(t, fp);
    fclose(fp);
    assert_non_null(
        strstr(text, "2 package(s), 4 NUMA node(s), 8 core(s), 16 PU(s)"));
    assert_non_null(strstr(text, "allowed 0-15"));
    assert_non_null(strstr(text, "Package L#1"));
    assert_non_null(strstr(text, "NUMANode L#3"));
    assert_non_null(strstr(text, "Core L#7 P#7 PUs 14-15 = core #7"));
    free(text);
    pool__topo_free(&t);
}

/* ---- the real machine ---------------------------------------------------- */

/* Runs fn in a forked child; the child's exit status 0 means it passed. */
static void in_child(int (*fn)(void *), void *arg, const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s: child failed (status %#x)", what, st);
}

typedef struct bind_case {
    const pool__topo_t *t;
    pool__cpuset_t cpus;
} bind_case_t;

static int child_bind(void *arg)
{
    bind_case_t *c = arg;
    pool__cpuset_t got;
    pk_error_t err;
    char a[256], b[256];

    if (pool__topo_bind_self(c->t, &c->cpus, &err) != PK_OK) {
        fprintf(stderr, "bind: %s\n", err.msg);
        return 1;
    }
    if (pool__cpuset_get_self(&got, &err) != PK_OK ||
        memcmp(&got, &c->cpus, sizeof got) != 0) {
        fprintf(stderr, "bound to %s, affinity is %s\n",
                pool__cpuset_str(&c->cpus, a, sizeof a),
                pool__cpuset_str(&got, b, sizeof b));
        return 1;
    }
    return 0;
}

static void test_real_bind(void **state)
{
    pool__topo_t *t = load(NULL);
    pool__cpuset_t self;
    pk_error_t err;
    int nc = pool__topo_ncores(t);

    assert_false(pool__topo_is_synthetic(t));
    assert_true(nc >= 1);
    assert_true(pool__topo_npus(t) >= nc);
    assert_int_equal(pool__cpuset_get_self(&self, &err), PK_OK);

    const pool_placement_t pls[] = {POOL_PLACE_COMPACT, POOL_PLACE_SPREAD,
                                    POOL_PLACE_NONE};
    for (size_t k = 0; k < 3; k++) {
        int n = nc + 1; /* more workers than cores: some share */
        pool__place_t *p = calloc((size_t)n, sizeof *p);
        assert_non_null(p);
        assert_int_equal(pool__topo_place(t, n, pls[k], p, &err), PK_OK);
        for (int i = 0; i < n; i++) {
            char what[64];
            bind_case_t c = {t, p[i].cpus};
            /* Every placement stays inside what the process may use. */
            for (size_t w = 0; w < sizeof self.bits / sizeof self.bits[0]; w++)
                assert_int_equal(p[i].cpus.bits[w] & ~self.bits[w], 0);
            if (pls[k] == POOL_PLACE_NONE)
                assert_memory_equal(&p[i].cpus, &self, sizeof self);
            snprintf(what, sizeof what, "placement %d worker %d", (int)pls[k],
                     i);
            in_child(child_bind, &c, what);
        }
        free(p);
    }
    pool__topo_free(&t);
}

/* A process started with a narrower affinity mask (taskset) sees only those
 * CPUs: the topology is restricted and every placement stays inside. */
static int child_restricted(void *arg)
{
    pool__cpuset_t self, one;
    pk_error_t err;
    cpu_set_t cs;

    if (pool__cpuset_get_self(&self, &err) != PK_OK)
        return 10;
    int last = -1;
    for (int c = 0; c < POOL_MAX_CPUS; c++)
        if ((self.bits[c / 64] >> (c % 64)) & 1)
            last = c;
    CPU_ZERO(&cs);
    CPU_SET(last, &cs);
    if (sched_setaffinity(0, sizeof cs, &cs) != 0)
        return 11;
    one = set_of(last, last);

    pool__topo_t *t = NULL;
    if (pool__topo_load(&t, NULL, &err) != PK_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 12;
    }
    if (pool__topo_ncores(t) != 1 || pool__topo_npus(t) != 1)
        return 13;
    pool__place_t p[3];
    for (int pl = 0; pl < 3; pl++) {
        if (pool__topo_place(t, 3, (pool_placement_t)pl, p, &err) != PK_OK)
            return 14;
        for (int i = 0; i < 3; i++)
            if (memcmp(&p[i].cpus, &one, sizeof one) != 0 ||
                p[i].core != (pl == POOL_PLACE_NONE ? -1 : 0) ||
                p[i].pu != last)
                return 15;
    }
    if (pool__topo_bind_self(t, &one, &err) != PK_OK)
        return 16;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    pool__topo_print(t, fp);
    fclose(fp);
    int ok = strstr(text, "(1 core(s), 1 PU(s))") != NULL;
    free(text);
    pool__topo_free(&t);
    return ok ? 0 : 17;
}

static void test_real_restricted(void **state)
{
    in_child(child_restricted, NULL, "restricted affinity");
}

static void test_bind_empty(void **state)
{
    pool__topo_t *t = load(NULL);
    pool__cpuset_t none;
    pk_error_t err;

    memset(&none, 0, sizeof none);
    assert_int_equal(pool__topo_bind_self(t, &none, &err), PK_ESYS);
    assert_int_equal(err.code, PK_ESYS);
    pool__topo_free(&t);
}

int main(void)
{
    alarm(120); /* hard timeout: a hung test fails instead of blocking CI */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_cpuset_str),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_compact),
        cmocka_unit_test(test_spread),
        cmocka_unit_test(test_spread_properties),
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_real_bind),
        cmocka_unit_test(test_real_restricted),
        cmocka_unit_test(test_bind_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
