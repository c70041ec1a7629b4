/*
 * test_pool_shared.c - arrays that are never copied (picklepool/shared.h):
 * the shared heap's allocator and its errors; maps over heap arrays that
 * copy nothing in and nothing out (counted by pool_shared_copies), with
 * results as arena views kept past their results and their pool; plain
 * arrays copied once; dtypes, shapes, strides and the read-only flag kept;
 * a worker SIGKILLed while it writes an output view; memory flat over
 * repeated maps; allocation failures injected into every step.
 *
 * Real worker processes, real ZeroMQ sockets, the examples plugin; no
 * mocks.  Every test runs in a child of its own with a hard time limit
 * (tests/lib/runner.h).
 *
 *   build/tests/test_pool_shared [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "picklepool.h"
#include "lib/pool_helpers.h"
#include "lib/procfs.h"
#include "lib/runner.h"

/* Internal (runtime/pool/job.c): arena bytes in use. */
int pool__shm_stats(pool_t *p, size_t *task_used, size_t *res_held,
                    size_t *res_alloc);

/* n float32 arrays of len floats in the shared heap, distinct values. */
static void heap_arrays(size_t n, size_t len, float **a)
{
    uint64_t s = 99;
    for (size_t i = 0; i < n; i++) {
        pk_error_t e;
        assert_int_equal(pool_shared_alloc(len * 4, (void **)&a[i], &e), PK_OK);
        assert_int_equal((uintptr_t)a[i] % 4096, 0);
        for (size_t j = 0; j < len; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            a[i][j] = (float)i + (float)(s >> 40) / (float)(1 << 20);
        }
    }
}

/* Borrowed read-only float32 ndarray values over a[i]. */
static pk_value_t **borrowed(pk_doc_t *doc, size_t n, float **a, size_t len)
{
    static pk_value_t *items[64];
    pk_dtype_t f4;
    assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
    int64_t shape = (int64_t)len;
    for (size_t i = 0; i < n; i++)
        assert_non_null(items[i] = pk_ndarray(doc, &f4, 1, &shape, a[i],
                                              PK_VF_BORROWED | PK_VF_READONLY));
    return items;
}

/* ---- the allocator ----------------------------------------------------- */

static void test_alloc_and_release(void **state)
{
    pk_error_t e;
    void *a = NULL, *b = NULL;
    size_t blocks = 9, bytes = 9;
    assert_int_equal(pool_shared_alloc(0, &a, &e), PK_EINVAL);
    assert_null(a);
    assert_int_equal(pool_shared_alloc(1, &a, &e), PK_OK);
    assert_int_equal(pool_shared_alloc(10000, &b, &e), PK_OK);
    assert_int_equal((uintptr_t)a % 4096, 0);
    assert_int_equal((uintptr_t)b % 4096, 0);
    pool_shared_usage(&blocks, &bytes);
    assert_int_equal(blocks, 2);
    assert_int_equal(bytes, 4096 + 12288);
    memset(b, 7, 10000);
    assert_true(pool_shared_contains(b, 10000));
    assert_true(pool_shared_contains((char *)b + 100, 9900));
    assert_false(pool_shared_contains((char *)b + 100, 9901));
    assert_false(pool_shared_contains(&e, 1));
    assert_false(pool_shared_contains(NULL, 1));
    assert_int_equal(pool_shared_release((char *)b + 1), PK_EINVAL);
    assert_int_equal(pool_shared_release(&e), PK_EINVAL);
    assert_int_equal(pool_shared_release(NULL), PK_EINVAL);
    assert_int_equal(pool_shared_release(b), PK_OK);
    assert_int_equal(pool_shared_release(b), PK_EINVAL); /* twice */
    assert_false(pool_shared_contains(b, 1));
    assert_int_equal(pool_shared_release(a), PK_OK);
    pool_shared_usage(&blocks, &bytes);
    assert_int_equal(blocks, 0);
    assert_int_equal(bytes, 0);
    /* a result view that is not one */
    assert_int_equal(pool_shared_keep(&e, 16, &e), PK_EINVAL);
    assert_non_null(strstr(e.msg, "not the start of a result"));
}

static void test_heap_size_from_env(void **state)
{
    pk_error_t e;
    void *a = NULL, *b = NULL;
    setenv("PICKLEPOOL_SHARED_BYTES", "12x", 1);
    assert_int_equal(pool_shared_alloc(100, &a, &e), PK_EINVAL);
    assert_non_null(strstr(e.msg, "PICKLEPOOL_SHARED_BYTES=12x"));
    setenv("PICKLEPOOL_SHARED_BYTES", "4194304", 1); /* tried again: 4 MiB */
    assert_int_equal(pool_shared_alloc(3u << 20, &a, &e), PK_OK);
    assert_int_equal(pool_shared_alloc(2u << 20, &b, &e), PK_ENOMEM);
    print_message("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "PICKLEPOOL_SHARED_BYTES"));
    assert_int_equal(pool_shared_release(a), PK_OK);
    assert_int_equal(pool_shared_alloc(4u << 20, &b, &e), PK_OK); /* all */
    assert_int_equal(pool_shared_release(b), PK_OK);
}

/* ---- maps without copies ------------------------------------------------ */

static void test_heap_arrays_zero_copy(void **state)
{
    enum { N = 12, LEN = 262144 }; /* 1 MiB each */
    float *a[N];
    heap_arrays(N, LEN, a);
    pool_t *p = tp_start_n(2);
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t **items = borrowed(doc, N, a, LEN);
    const float *kept = NULL;
    for (int rep = 0; rep < 3; rep++) {
        pool_results_t *r = tp_map_values(p, "normalize", items, N, NULL);
        for (size_t i = 0; i < N; i++) {
            const pool_item_t *it = pool_results_item(r, i);
            if (it->status != PK_OK)
                fail_msg("array %zu: %s", i, it->error);
            const pk_ndarray_t *nd = it->value->u.nd;
            assert_int_equal(nd->nbytes, LEN * 4);
            tp_expect_normalized(a[i], nd->data, LEN, i);
        }
        if (rep == 2) { /* one view outlives its results and its pool */
            kept = pool_results_item(r, 5)->value->u.nd->data;
            pk_error_t e;
            assert_int_equal(pool_shared_keep(kept, LEN * 4, &e), PK_OK);
            assert_int_equal(pool_shared_keep(kept, LEN * 4, &e), PK_EINVAL);
        }
        pool_results_free(&r);
    }
    uint64_t in = 9, out = 9;
    pool_shared_copies(p, &in, &out);
    print_message("copied in %llu bytes, out %llu bytes for %d x %d MiB\n",
                  (unsigned long long)in, (unsigned long long)out, 3 * N, 1);
    assert_int_equal(in, 0);  /* read in place */
    assert_int_equal(out, 0); /* built in place */
    size_t tu, rh, ra;
    pool__shm_stats(p, &tu, &rh, &ra);
    assert_int_equal(rh, LEN * 4); /* the kept view, nothing else */
    pool_destroy(&p);
    /* the mapping outlives the pool */
    tp_expect_normalized(a[5], kept, LEN, 5);
    assert_int_equal(pool_shared_release((void *)kept), PK_OK);
    assert_int_equal(pool_shared_release((void *)kept), PK_EINVAL);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(pool_shared_release(a[i]), PK_OK);
    pk_doc_free(&doc);
}

/* A kept view released before the results that delivered it are freed
 * (a Python array dropped while its iterator still holds the batch): it is
 * freed once, with the results, not twice. */
static void test_view_released_before_results(void **state)
{
    enum { N = 6, LEN = 262144 };
    float *a[N];
    heap_arrays(N, LEN, a);
    pool_t *p = tp_start_n(1);
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t **items = borrowed(doc, N, a, LEN);
    for (int rep = 0; rep < 4; rep++) {
        pool_results_t *r = tp_map_values(p, "normalize", items, N, NULL);
        pk_error_t e;
        const float *v[N];
        for (size_t i = 0; i < N; i++) {
            v[i] = pool_results_item(r, i)->value->u.nd->data;
            assert_int_equal(pool_shared_keep(v[i], LEN * 4, &e), PK_OK);
        }
        for (size_t i = 0; i < N; i += 2) { /* early, and only once */
            assert_int_equal(pool_shared_release((void *)v[i]), PK_OK);
            assert_int_equal(pool_shared_release((void *)v[i]), PK_EINVAL);
        }
        /* the results still hold it */
        tp_expect_normalized(a[0], v[0], LEN, 0);
        size_t tu, rh, ra;
        pool__shm_stats(p, &tu, &rh, &ra);
        assert_int_equal(rh, (size_t)N * LEN * 4);
        pool_results_free(&r);
        pool__shm_stats(p, &tu, &rh, &ra);
        assert_int_equal(rh, (size_t)N / 2 * LEN * 4); /* the odd ones */
        for (size_t i = 1; i < N; i += 2) {
            tp_expect_normalized(a[i], v[i], LEN, i);
            assert_int_equal(pool_shared_release((void *)v[i]), PK_OK);
        }
        tp_expect_arena_idle(p);
    }
    pool_destroy(&p);
    pk_doc_free(&doc);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(pool_shared_release(a[i]), PK_OK);
}

static void test_plain_arrays_copied_once(void **state)
{
    enum { N = 8, LEN = 262144 };
    float *a[N];
    for (size_t i = 0; i < N; i++) {
        a[i] = malloc(LEN * 4);
        for (size_t j = 0; j < LEN; j++)
            a[i][j] = (float)(i * 7 + j % 1000);
    }
    pool_t *p = tp_start_n(2);
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t **items = borrowed(doc, N, a, LEN);
    pool_results_t *r = tp_map_values(p, "normalize", items, N, NULL);
    for (size_t i = 0; i < N; i++)
        tp_expect_normalized(a[i], pool_results_item(r, i)->value->u.nd->data,
                             LEN, i);
    pool_results_free(&r);
    uint64_t in = 0, out = 9;
    pool_shared_copies(p, &in, &out);
    assert_int_equal(in, (uint64_t)N * LEN * 4); /* each once */
    assert_int_equal(out, 0);
    tp_expect_arena_idle(p);
    pool_destroy(&p);
    pk_doc_free(&doc);
    for (size_t i = 0; i < N; i++)
        free(a[i]);
}

/* examples.copy_of(a): a copy of ndarray a, same dtype, shape, order and
 * read-only flag. */
static pk_err_t copy_of(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v = pk_item(c->args, 0);
    const pk_ndarray_t *nd = v->u.nd;
    *result = pk_ndarray(c->doc, &nd->dtype, nd->ndim, nd->shape, nd->data,
                         v->flags & (PK_VF_FORTRAN | PK_VF_READONLY));
    return *result != NULL ? PK_OK : PK_ENOMEM;
}

/* dtypes, shapes, strides (C and Fortran order), read-only or not: a heap
 * array goes through "copy_of" and comes back the same (results are views
 * of the arena, read-only). */
static void test_dtypes_shapes_flags(void **state)
{
    assert_int_equal(pool_register("examples", "copy_of", copy_of, NULL),
                     PK_OK);
    static const char *const dts[] = {"<f8",  "<i4", "|u1",
                                      "<c16", ">f4", "<i8"};
    pool_t *p = tp_start_n(2);
    for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
        for (int fortran = 0; fortran < 2; fortran++) {
            pk_dtype_t dt;
            assert_int_equal(pk_dtype_parse(dts[d], &dt), PK_OK);
            int64_t shape[3] = {17, 33, 129};
            size_t nbytes = 17 * 33 * 129 * (size_t)dt.itemsize;
            uint8_t *mem;
            pk_error_t e;
            assert_int_equal(pool_shared_alloc(nbytes, (void **)&mem, &e),
                             PK_OK);
            for (size_t i = 0; i < nbytes; i++)
                mem[i] = (uint8_t)(i * 31 + d);
            pk_doc_t *doc = NULL;
            assert_int_equal(pk_doc_new(&doc), PK_OK);
            unsigned fl = PK_VF_BORROWED | (fortran ? PK_VF_FORTRAN : 0) |
                          (d % 2 ? PK_VF_READONLY : 0);
            pk_value_t *v = pk_ndarray(doc, &dt, 3, shape, mem, fl);
            assert_non_null(v);
            pool_results_t *r = tp_map_values(p, "copy_of", &v, 1, NULL);
            const pool_item_t *it = pool_results_item(r, 0);
            if (it->status != PK_OK)
                fail_msg("%s: %s", dts[d], it->error);
            const pk_ndarray_t *nd = it->value->u.nd;
            char got[16];
            pk_dtype_str(&nd->dtype, got, sizeof got);
            assert_string_equal(got, dts[d]);
            assert_int_equal(nd->ndim, 3);
            for (int k = 0; k < 3; k++) {
                assert_int_equal(nd->shape[k], shape[k]);
                assert_int_equal(nd->strides[k], v->u.nd->strides[k]);
            }
            assert_int_equal(!!(it->value->flags & PK_VF_FORTRAN), fortran);
            assert_int_equal(nd->nbytes, nbytes);
            assert_memory_equal(nd->data, mem, nbytes);
            pool_results_free(&r);
            pk_doc_free(&doc);
            assert_int_equal(pool_shared_release(mem), PK_OK);
        }
    }
    uint64_t in = 9, out = 9;
    pool_shared_copies(p, &in, &out);
    assert_int_equal(in, 0);
    assert_int_equal(out, 0);
    tp_expect_arena_idle(p);
    pool_destroy(&p);
}

/* ---- failures ------------------------------------------------------------ */

/* t.die_writing(a): builds its result array (in the worker's arena
 * region), writes half of it, and SIGKILLs its own worker when a[0] < 0. */
static pk_err_t die_writing(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v = pk_item(c->args, 0);
    const pk_ndarray_t *nd = v->u.nd;
    pk_value_t *out =
        pk_ndarray(c->doc, &nd->dtype, nd->ndim, nd->shape, NULL, PK_VF_UNINIT);
    if (out == NULL)
        return PK_ENOMEM;
    const float *in = nd->data;
    float *o = out->u.nd->data;
    size_t n = nd->nbytes / 4;
    for (size_t j = 0; j < n / 2; j++)
        o[j] = in[j] * 2;
    if (in[0] < 0)
        raise(SIGKILL);
    for (size_t j = n / 2; j < n; j++)
        o[j] = in[j] * 2;
    *result = out;
    return PK_OK;
}

static void test_worker_killed_writing_view(void **state)
{
    enum { N = 16, LEN = 262144, BAD = 9 };
    assert_int_equal(
        pool_register("examples", "die_writing", die_writing, NULL), PK_OK);
    float *a[N];
    heap_arrays(N, LEN, a);
    a[BAD][0] = -1;
    pool_t *p = tp_start_n(2);
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t **items = borrowed(doc, N, a, LEN);
    for (int rep = 0; rep < 2; rep++) {
        pool_results_t *r = tp_map_values(p, "die_writing", items, N, NULL);
        assert_int_equal(pool_results_failed(r), 1);
        tp_expect_fail(r, BAD, PK_ECRASHED, "SIGKILL");
        for (size_t i = 0; i < N; i++) {
            if (i == BAD)
                continue;
            const float *o = pool_results_item(r, i)->value->u.nd->data;
            for (size_t j = 0; j < LEN; j += 997)
                if (o[j] != a[i][j] * 2)
                    fail_msg("array %zu [%zu]: %g", i, j, o[j]);
        }
        pool_results_free(&r);
        tp_expect_arena_idle(p); /* the dead worker's half-written view too */
    }
    pool_destroy(&p);
    pk_doc_free(&doc);
    for (size_t i = 0; i < N; i++)
        pool_shared_release(a[i]);
}

/* Repeated maps over fresh heap arrays (allocated, mapped, released each
 * time, results dropped): the caller's memory stays flat. */
static void test_rss_flat(void **state)
{
    enum { LEN = 524288, REPS = 600 }; /* 2 MiB arrays */
    pool_t *p = tp_start_n(2);
    long base = 0;
    for (int rep = 0; rep < REPS; rep++) {
        float *a[2];
        heap_arrays(2, LEN, a);
        pk_doc_t *doc = NULL;
        assert_int_equal(pk_doc_new(&doc), PK_OK);
        pk_value_t **items = borrowed(doc, 2, a, LEN);
        pool_results_t *r = tp_map_values(p, "normalize", items, 2, NULL);
        assert_int_equal(pool_results_failed(r), 0);
        pool_results_free(&r);
        pk_doc_free(&doc);
        pool_shared_release(a[0]);
        pool_shared_release(a[1]);
        if (rep == 50)
            base = procfs_rss_kib();
    }
    long end = procfs_rss_kib();
    print_message("RSS after 50 maps %ld KiB, after %d: %ld KiB\n", base, REPS,
                  end);
    if (end - base > 16 * 1024)
        fail_msg("RSS grew by %ld KiB over %d maps", end - base, REPS - 50);
    size_t blocks, bytes;
    pool_shared_usage(&blocks, &bytes);
    assert_int_equal(blocks, 0);
    tp_expect_arena_idle(p);
    pool_destroy(&p);
}

/* ---- allocation failures --------------------------------------------------- */

static _Atomic long fail_at = -1; /* the allocation to fail (-1: none) */
static _Atomic long n_allocs;

static int fail_now(void)
{
    long n = ++n_allocs;
    return n == fail_at;
}
static void *f_malloc(size_t s)
{
    return fail_now() ? NULL : malloc(s);
}
static void *f_realloc(void *p, size_t s)
{
    return fail_now() ? NULL : realloc(p, s);
}
static const pk_allocator_t failing = {f_malloc, f_realloc, free};

/* Every allocation of alloc / map / keep / release fails once in turn: each
 * call returns a clear error or works, nothing crashes or leaks (ASan),
 * and once the failures stop the same steps work. */
static void test_views_under_alloc_failures(void **state)
{
    enum { LEN = 65536 };
    pool_t *p = tp_start_n(2);
    long fails = 0;
    for (long k = 1; k < 400; k++) {
        pk_set_allocator(&failing);
        n_allocs = 0;
        fail_at = k;
        float *a = NULL;
        pk_error_t e;
        pk_err_t rc = pool_shared_alloc(LEN * 4, (void **)&a, &e);
        if (rc != PK_OK) {
            assert_int_equal(rc, PK_ENOMEM);
            fails++;
            fail_at = -1;
            pk_set_allocator(NULL);
            continue;
        }
        for (size_t j = 0; j < LEN; j++)
            a[j] = (float)(j % 100);
        pk_doc_t *doc = NULL;
        pool_results_t *r = NULL;
        const float *view = NULL;
        if (pk_doc_new(&doc) == PK_OK) {
            pk_dtype_t f4;
            pk_dtype_parse("<f4", &f4);
            int64_t shape = LEN;
            pk_value_t *v = pk_ndarray(doc, &f4, 1, &shape, a, PK_VF_BORROWED);
            if (v != NULL && pool_map(p, "examples", "normalize",
                                      (const pk_value_t *const *)&v, 1, NULL,
                                      &r, &e) == PK_OK) {
                const pool_item_t *it = pool_results_item(r, 0);
                if (it->status == PK_OK)
                    view = it->value->u.nd->data;
            }
        }
        int kept = view != NULL && pool_shared_keep(view, LEN * 4, &e) == PK_OK;
        pool_results_free(&r);
        pk_doc_free(&doc);
        long made = n_allocs;
        fail_at = -1;
        pk_set_allocator(NULL);
        if (kept) {
            tp_expect_normalized(a, view, LEN, 0);
            assert_int_equal(pool_shared_release((void *)view), PK_OK);
        }
        assert_int_equal(pool_shared_release(a), PK_OK);
        if (made < k)
            break; /* every allocation of the steps was failed once */
    }
    print_message("%ld failed allocations refused cleanly\n", fails);
    size_t blocks, bytes;
    pool_shared_usage(&blocks, &bytes);
    assert_int_equal(blocks, 0);
    tp_expect_arena_idle(p);
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_alloc_and_release, 30),
    RUNNER_TEST(test_heap_size_from_env, 30),
    RUNNER_TEST(test_heap_arrays_zero_copy, 60),
    RUNNER_TEST(test_view_released_before_results, 60),
    RUNNER_TEST(test_plain_arrays_copied_once, 60),
    RUNNER_TEST(test_dtypes_shapes_flags, 60),
    RUNNER_TEST(test_worker_killed_writing_view, 120),
    RUNNER_TEST(test_rss_flat, 180),
    RUNNER_TEST(test_views_under_alloc_failures, 180),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
