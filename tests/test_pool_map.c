/*
 * test_pool_map.c - maps of values and of plain C vectors:
 * a million items back in input order (pool_map and pool_map_i64, an empty
 * map), unknown functions and modules (one PK_ENOFUNC for the call), and
 * per-item errors:
 * a function's own error (PK_EFUNC with its message) and a bad argument
 * (PK_ETYPE), each failing its item alone while the pool keeps serving.
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_map [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <inttypes.h>
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

/* ---- ordering at scale -------------------------------------------------- */

static void test_map_1m_in_order(void **state)
{
    const size_t n = 1000000;
    pool_t *p = tp_start_n(0);
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    size_t nf = 12345;

    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        in[i] = (int64_t)i - 500000;
        out[i] = INT64_MIN;
    }
    CHECK_OK(
        pool_map_i64(p, "examples", "square", in, out, n, NULL, NULL, &nf, E_));
    assert_int_equal(nf, 0);
    for (size_t i = 0; i < n; i++)
        if (out[i] != in[i] * in[i])
            fail_msg("pool_map_i64 item %zu: square(%" PRId64 ") gave %" PRId64,
                     i, in[i], out[i]);

    pk_value_t **items;
    pk_doc_t *doc = tp_int_items(in, n, &items);
    pool_results_t *r = tp_map_values(p, "square", items, n, NULL);
    pk_doc_free(&doc); /* the results must not depend on the input doc */
    assert_int_equal(pool_results_failed(r), 0);
    for (size_t i = 0; i < n; i++)
        tp_expect_int(r, i, in[i] * in[i]);
    pool_results_free(&r);
    assert_null(r);

    /* n == 0 is an empty map, not an error */
    CHECK_OK(pool_map(p, "examples", "square", NULL, 0, NULL, &r, E_));
    assert_int_equal(pool_results_len(r), 0);
    pool_results_free(&r);

    free(items);
    free(in);
    free(out);
    pool_destroy(&p);
    assert_null(p);
}

/* ---- function errors ------------------------------------------------------
 */

/* A function the workers cannot have fails the whole call, once, with a
 * message naming it and the plugins loaded: no per-item errors. */
static void expect_enofunc(pk_err_t rc, const pk_error_t *err,
                           const char *needle)
{
    if (rc != PK_ENOFUNC)
        fail_msg("want PK_ENOFUNC, got %s", pk_errname(rc));
    assert_int_equal(err->code, PK_ENOFUNC);
    if (strstr(err->msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, err->msg);
}

static pk_err_t later_fn(pool_call_t *call, pk_value_t **result)
{
    *result = pk_int(call->doc, 42);
    return *result ? PK_OK : PK_ENOMEM;
}

static void test_unknown_function(void **state)
{
    const size_t n = 50;
    pool_t *p = tp_start_n(0);
    int64_t v[50], out[50];
    pk_value_t **items;
    pk_error_t err;
    pool_results_t *r = NULL;

    for (size_t i = 0; i < n; i++)
        v[i] = (int64_t)i;
    pk_doc_t *doc = tp_int_items(v, n, &items);

    pk_err_t rc = pool_map(p, "examples", "no_such_function",
                           (const pk_value_t *const *)items, n, NULL, &r, &err);
    expect_enofunc(rc, &err, "examples.no_such_function is not registered");
    expect_enofunc(rc, &err, "plugins loaded: ");
    expect_enofunc(rc, &err, "examples.so");
    assert_null(r);

    rc = pool_map(p, "no_such_module", "square",
                  (const pk_value_t *const *)items, n, NULL, &r, &err);
    expect_enofunc(rc, &err, "no_such_module.square");
    assert_null(r);

    size_t nf = 0;
    rc = pool_map_i64(p, "examples", "nope", v, out, n, NULL, NULL, &nf, &err);
    expect_enofunc(rc, &err, "examples.nope");

    /* Registered after the pool forked its workers: refused for this pool,
     * with the reason, and usable by a pool created afterwards. */
    assert_int_equal(pool_register("later", "fn", later_fn, NULL), PK_OK);
    rc = pool_map(p, "later", "fn", (const pk_value_t *const *)items, n, NULL,
                  &r, &err);
    expect_enofunc(rc, &err, "registered after this pool was created");
    assert_null(r);
    pool_t *p2 = tp_start_n(1);
    CHECK_OK(pool_map(p2, "later", "fn", (const pk_value_t *const *)items, n,
                      NULL, &r, E_));
    for (size_t i = 0; i < n; i++)
        tp_expect_int(r, i, 42);
    pool_results_free(&r);
    pool_destroy(&p2);

    /* the pool still serves */
    r = tp_map_values(p, "square", items, n, NULL);
    for (size_t i = 0; i < n; i++)
        tp_expect_int(r, i, v[i] * v[i]);
    pool_results_free(&r);

    pk_doc_free(&doc);
    free(items);
    pool_destroy(&p);
}

static void test_function_error(void **state)
{
    const size_t n = 100;
    pool_t *p = tp_start_n(0);
    pk_doc_t *doc = NULL;
    pk_value_t *items[100];
    char msg[64];

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    for (size_t i = 0; i < n; i++) {
        snprintf(msg, sizeof msg, "boom number %zu", i);
        items[i] = i % 3 ? pk_cstr(doc, msg) : pk_int(doc, (int64_t)i);
    }
    /* fail() fails on anything: strings with their text, ints with repr */
    pool_results_t *r = tp_map_values(p, "fail", items, n, NULL);
    assert_int_equal(pool_results_failed(r), n);
    for (size_t i = 0; i < n; i++) {
        if (i % 3 == 0) {
            snprintf(msg, sizeof msg, "%zu", i);
            tp_expect_fail(r, i, PK_EFUNC, msg);
        } else {
            snprintf(msg, sizeof msg, "ValueError: boom number %zu", i);
            tp_expect_fail(r, i, PK_EFUNC, msg);
        }
    }
    pool_results_free(&r);

    /* a bad argument is the item's error too */
    r = tp_map_values(p, "square", items, 6, NULL);
    tp_expect_int(r, 0, 0);
    tp_expect_fail(r, 1, PK_ETYPE, "square");
    tp_expect_int(r, 3, 9);
    pool_results_free(&r);

    pk_doc_free(&doc);
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_map_1m_in_order, 120),
    RUNNER_TEST(test_unknown_function, 30),
    RUNNER_TEST(test_function_error, 30),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
