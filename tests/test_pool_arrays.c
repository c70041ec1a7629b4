/*
 * test_pool_arrays.c - maps over arrays: pool_map_f32_arrays
 * and ndarray values through pool_map (lengths from 1 to 250000 floats),
 * pool_map_f64, and the shared-memory arena behind big buffers: the same
 * bytes with no arena, the default one and one too small to hold a map;
 * every arena block free again once a map returns, also after workers were
 * SIGKILLed holding blocks.
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_arrays [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "picklepool.h"
#include "lib/pool_helpers.h"
#include "lib/runner.h"

/* ---- arrays and floats -------------------------------------------------- */

static void test_map_arrays(void **state)
{
    static const size_t lens[] = {1, 7, 1000, 65536, 100003, 8, 4096, 250000};
    const size_t n = sizeof lens / sizeof lens[0];
    float *in[8], *out[8];
    uint64_t s = 12345;
    pool_t *p = tp_start_n(0);
    size_t nf = 99;

    for (size_t i = 0; i < n; i++) {
        in[i] = malloc(lens[i] * sizeof(float));
        out[i] = malloc(lens[i] * sizeof(float));
        for (size_t j = 0; j < lens[i]; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            in[i][j] = (float)(i * 10) + (float)(s >> 40) / (float)(1 << 24);
        }
    }
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)in, out, lens, n, NULL,
                                 NULL, &nf, E_));
    assert_int_equal(nf, 0);
    for (size_t i = 0; i < n; i++)
        tp_expect_normalized(in[i], out[i], lens[i], i);

    /* the same arrays as ndarray values through pool_map */
    pk_doc_t *doc = NULL;
    pk_value_t *items[8];
    pk_dtype_t f4;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
    for (size_t i = 0; i < n; i++) {
        int64_t shape = (int64_t)lens[i];
        assert_non_null(items[i] = pk_ndarray(doc, &f4, 1, &shape, in[i], 0));
    }
    pool_results_t *r = tp_map_values(p, "normalize", items, n, NULL);
    for (size_t i = 0; i < n; i++) {
        const pool_item_t *it = pool_results_item(r, i);
        if (it->status != PK_OK)
            fail_msg("array %zu: %s", i, it->error);
        assert_int_equal(it->value->type, PK_NDARRAY);
        const pk_ndarray_t *nd = it->value->u.nd;
        assert_int_equal(nd->ndim, 1);
        assert_int_equal(nd->shape[0], (int64_t)lens[i]);
        assert_int_equal(nd->dtype.kind, 'f');
        assert_int_equal(nd->nbytes, lens[i] * sizeof(float));
        if (memcmp(nd->data, out[i], nd->nbytes) != 0)
            fail_msg("array %zu: pool_map and pool_map_f32_arrays differ", i);
    }
    pool_results_free(&r);
    pk_doc_free(&doc);

    /* doubles: spin returns its argument */
    double din[64], dout[64];
    for (int i = 0; i < 64; i++) {
        din[i] = i * 0.75;
        dout[i] = -1;
    }
    CHECK_OK(pool_map_f64(p, "examples", "spin", din, dout, 64, VEC_));
    for (int i = 0; i < 64; i++)
        assert_true(dout[i] == din[i]);

    for (size_t i = 0; i < n; i++) {
        free(in[i]);
        free(out[i]);
    }
    pool_destroy(&p);
}

/* ---- the shared-memory arena ------------------------------------------- */

/* Internal (runtime/pool/job.c): arena bytes in use. */
int pool__shm_stats(pool_t *p, size_t *task_used, size_t *res_held,
                    size_t *res_alloc);

static void expect_arena_idle(pool_t *p, int has_arena)
{
    assert_int_equal(tp_expect_arena_idle(p), has_arena);
}

/* n arrays, big ones (about len floats) mixed with small ones that stay on
 * the socket; distinct values so a misplaced result shows. */
static size_t *arrays_new(size_t n, size_t len, float **in, float **out)
{
    size_t *lens = malloc(n * sizeof *lens);
    uint64_t s = 777;
    for (size_t i = 0; i < n; i++) {
        lens[i] = i % 5 == 3 ? 100 + i : len + i;
        in[i] = malloc(lens[i] * sizeof(float));
        out[i] = calloc(lens[i], sizeof(float));
        for (size_t j = 0; j < lens[i]; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            in[i][j] = (float)i + (float)(s >> 40) / (float)(1 << 20);
        }
    }
    return lens;
}

static void arrays_free(size_t n, size_t *lens, float **in, float **out)
{
    for (size_t i = 0; i < n; i++) {
        free(in[i]);
        free(out[i]);
    }
    free(lens);
}

static void test_map_arrays_shm(void **state)
{
    enum { N = 24 };
    float *in[N], *out[N], *ref[N];
    size_t *lens = arrays_new(N, 262144, in, out); /* 1 MiB arrays */
    size_t nf = 99;

    /* no arena: the reference */
    pool_opts_t o;
    tp_opts_for(&o, 0);
    o.shm_bytes = SIZE_MAX;
    pool_t *p = tp_start(&o);
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)in, out, lens, N, NULL,
                                 NULL, &nf, E_));
    assert_int_equal(nf, 0);
    expect_arena_idle(p, 0);
    pool_destroy(&p);
    for (size_t i = 0; i < N; i++) {
        tp_expect_normalized(in[i], out[i], lens[i], i);
        ref[i] = out[i];
        out[i] = calloc(lens[i], sizeof(float));
    }

    /* the default arena, then one so small that buffers must fall back to
     * the socket whenever it is full; both give the same bytes, in order */
    for (int round = 0; round < 2; round++) {
        tp_opts_for(&o, 0);
        if (round == 1) {
            o.shm_bytes = 8u << 20;
            o.shm_threshold = 4096;
        }
        p = tp_start(&o);
        for (int rep = 0; rep < 3; rep++) {
            for (size_t i = 0; i < N; i++)
                memset(out[i], 0, lens[i] * sizeof(float));
            CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                         (const float *const *)in, out, lens, N,
                                         NULL, NULL, &nf, E_));
            assert_int_equal(nf, 0);
            for (size_t i = 0; i < N; i++)
                if (memcmp(out[i], ref[i], lens[i] * sizeof(float)) != 0)
                    fail_msg("round %d: array %zu differs from the socket "
                             "path's",
                             round, i);
            expect_arena_idle(p, 1);
        }
        /* as ndarray values through pool_map: results are views of the
         * arena, held while the results live, free once they are freed */
        pk_doc_t *doc = NULL;
        pk_value_t *items[N];
        pk_dtype_t f4;
        assert_int_equal(pk_doc_new(&doc), PK_OK);
        assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
        for (size_t i = 0; i < N; i++) {
            int64_t shape = (int64_t)lens[i];
            assert_non_null(items[i] =
                                pk_ndarray(doc, &f4, 1, &shape, in[i], 0));
        }
        pool_results_t *r = tp_map_values(p, "normalize", items, N, NULL);
        size_t tu = 1, rh = 0, ra = 0;
        pool__shm_stats(p, &tu, &rh, &ra);
        assert_int_equal(tu, 0);
        assert_true(rh > 0 && ra == rh);
        for (size_t i = 0; i < N; i++) {
            const pool_item_t *it = pool_results_item(r, i);
            if (it->status != PK_OK)
                fail_msg("array %zu: %s", i, it->error);
            const pk_ndarray_t *nd = it->value->u.nd;
            assert_int_equal(nd->nbytes, lens[i] * sizeof(float));
            if (memcmp(nd->data, ref[i], nd->nbytes) != 0)
                fail_msg("round %d: pool_map array %zu differs", round, i);
        }
        pool_results_free(&r);
        expect_arena_idle(p, 1);
        pk_doc_free(&doc);
        pool_destroy(&p);
    }
    for (size_t i = 0; i < N; i++)
        free(ref[i]);
    arrays_free(N, lens, in, out);
}

/* Workers SIGKILLed mid-map while they hold arena blocks (task blocks of
 * their in-flight batches, result blocks they allocated but never sent):
 * every item still comes back right, and nothing stays allocated. */
static void test_kill_workers_holding_arena(void **state)
{
    enum { N = 160 };
    float *in[N], *out[N];
    size_t *lens = arrays_new(N, 131072, in, out); /* 512 KiB arrays */
    pool_opts_t o;
    tp_opts_for(&o, 0);
    o.retries = 1000000;
    pool_t *p = tp_start(&o);
    tp_killer_t k;
    pthread_t th;
    memset(&k, 0, sizeof k);
    k.p = p;
    assert_int_equal(pthread_create(&th, NULL, tp_killer_main, &k), 0);
    for (int rep = 0; rep < 20 && (rep < 2 || k.kills < 5); rep++) {
        size_t nf = 99;
        CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                     (const float *const *)in, out, lens, N,
                                     NULL, NULL, &nf, E_));
        assert_int_equal(nf, 0);
        for (size_t i = 0; i < N; i++)
            tp_expect_normalized(in[i], out[i], lens[i], i);
    }
    atomic_store(&k.stop, 1);
    pthread_join(th, NULL);
    print_message("%d workers killed\n", atomic_load(&k.kills));
    if (k.kills == 0)
        fail_msg("no worker was killed during the maps");
    /* respawns may still be under way */
    double t0 = tp_now_s();
    while (tp_restarts(p) < (unsigned)k.kills && tp_now_s() - t0 < 5)
        tp_sleep_s(0.01);
    expect_arena_idle(p, 1);
    /* and the respawned workers' regions serve again */
    size_t nf = 99;
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)in, out, lens, N, NULL,
                                 NULL, &nf, E_));
    assert_int_equal(nf, 0);
    expect_arena_idle(p, 1);
    pool_destroy(&p);
    arrays_free(N, lens, in, out);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_map_arrays, 60),
    RUNNER_TEST(test_map_arrays_shm, 60),
    RUNNER_TEST(test_kill_workers_holding_arena, 120),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
