/*
 * test_pool_stream.c - the streaming maps, pool_imap and
 * pool_imap_unordered: input pulled lazily on the caller's thread within a
 * bounded window (also behind one slow item), ordered delivery despite
 * out-of-order completion, each index exactly once when unordered, the
 * input function's error ending the map, and an iterator abandoned
 * mid-map.
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_stream [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <inttypes.h>
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

/* ---- streaming ---------------------------------------------------------- */

static void check_imap(pool_t *p, int ordered)
{
    const size_t n = 100000, bound = 10000;
    pool_call_opts_t co = {sizeof co, 100, 0};
    tp_gen_t g = {.n = n, .fail_at = SIZE_MAX, .caller = pthread_self()};
    pool_iter_t *it = NULL;
    pool_item_t item;
    unsigned char *seen = calloc(n, 1);
    pk_err_t rc;

    assert_non_null(seen);
    if (ordered)
        CHECK_OK(
            pool_imap(p, "examples", "square", tp_gen_next, &g, &co, &it, E_));
    else
        CHECK_OK(pool_imap_unordered(p, "examples", "square", tp_gen_next, &g,
                                     &co, &it, E_));
    while ((rc = pool_iter_next(it, &item, 30)) == PK_OK) {
        if (item.index >= n || seen[item.index]++)
            fail_msg("index %zu delivered twice or out of range", item.index);
        if (ordered && item.index != g.delivered)
            fail_msg("ordered imap delivered index %zu at position %zu",
                     item.index, g.delivered);
        if (item.status != PK_OK || item.value->type != PK_INT ||
            item.value->u.i != (int64_t)(item.index * item.index))
            fail_msg("index %zu: wrong result (%s)", item.index,
                     pk_errname(item.status));
        g.delivered++;
        if (item.index >= g.pulled)
            fail_msg("index %zu delivered before being pulled", item.index);
    }
    if (rc != PK_EOF)
        fail_msg("pool_iter_next at the end: %s", pk_errname(rc));
    assert_int_equal(g.delivered, n);
    assert_int_equal(pool_iter_next(it, &item, 0), PK_EOF);
    pool_iter_free(&it);
    assert_null(it);
    if (g.foreign_thread)
        fail_msg("the generator ran %d times on another thread",
                 g.foreign_thread);
    if (g.max_gap > bound)
        fail_msg("%s: up to %zu items pulled and not delivered (bound %zu)",
                 ordered ? "imap" : "imap_unordered", g.max_gap, bound);
    print_message("%s: at most %zu items pulled ahead\n",
                  ordered ? "imap" : "imap_unordered", g.max_gap);
    free(seen);
}

static void test_imap_bounded(void **state)
{
    pool_t *p = tp_start_n(0);

    check_imap(p, 1);
    check_imap(p, 0);
    pool_destroy(&p);
}

/* Items of random length, one per batch, finish out of order on two
 * workers: imap must still deliver in order, imap_unordered each once. */
static int64_t spin_us(size_t i)
{
    return (int64_t)((i * 2654435761u) % 400); /* 0..399 us, scrambled */
}

static pk_value_t *make_spin(pk_doc_t *doc, size_t i, void *ctx)
{
    return pk_int(doc, spin_us(i));
}

static void test_imap_reorders(void **state)
{
    const size_t n = 2000;
    pool_call_opts_t co = {sizeof co, 1, 0};
    pool_t *p = tp_start_n(0);
    unsigned char *seen = calloc(n, 1);

    for (int ordered = 1; ordered >= 0; ordered--) {
        tp_stream_t g = {0, n, make_spin, NULL};
        pool_iter_t *it = NULL;
        pool_item_t item;
        size_t got = 0, out_of_order = 0, last = 0;
        pk_err_t rc;
        memset(seen, 0, n);
        if (ordered)
            CHECK_OK(pool_imap(p, "examples", "spin", tp_stream_next, &g, &co,
                               &it, E_));
        else
            CHECK_OK(pool_imap_unordered(p, "examples", "spin", tp_stream_next,
                                         &g, &co, &it, E_));
        while ((rc = pool_iter_next(it, &item, 30)) == PK_OK) {
            if (item.index >= n || seen[item.index]++)
                fail_msg("index %zu twice or out of range", item.index);
            if (ordered && item.index != got)
                fail_msg("imap delivered %zu at position %zu", item.index, got);
            if (item.status != PK_OK || item.value->u.i != spin_us(item.index))
                fail_msg("index %zu: wrong result", item.index);
            out_of_order += got > 0 && item.index < last;
            last = item.index;
            got++;
        }
        assert_int_equal(rc, PK_EOF);
        assert_int_equal(got, n);
        pool_iter_free(&it);
        if (!ordered)
            print_message("imap_unordered: %zu of %zu delivered before an "
                          "earlier index\n",
                          out_of_order, n);
    }
    free(seen);
    pool_destroy(&p);
}

/* Ordered imap behind one slow item: results after it must wait in the
 * reorder buffer, and input must not be pulled for them meanwhile (the
 * window counts what is undelivered, not only what is running). */
typedef struct slow_first {
    size_t n, pulled, delivered, max_gap;
} slow_first_t;

static pk_err_t slow_first_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    slow_first_t *g = ctx;
    *item = NULL;
    if (g->pulled == g->n)
        return PK_OK;
    *item = pk_int(doc, g->pulled == 0 ? 300000 : 0); /* spin us */
    if (*item == NULL)
        return PK_ENOMEM;
    g->pulled++;
    if (g->pulled - g->delivered > g->max_gap)
        g->max_gap = g->pulled - g->delivered;
    return PK_OK;
}

static void test_imap_bounded_behind_slow_item(void **state)
{
    const size_t bound = 10000;
    pool_call_opts_t co = {sizeof co, 100, 0};
    slow_first_t g = {.n = 100000};
    pool_t *p = tp_start_n(0);
    pool_iter_t *it = NULL;
    pool_item_t item;
    pk_err_t rc;

    CHECK_OK(
        pool_imap(p, "examples", "spin", slow_first_next, &g, &co, &it, E_));
    while ((rc = pool_iter_next(it, &item, 30)) == PK_OK) {
        if (item.index != g.delivered || item.status != PK_OK)
            fail_msg("imap delivered %zu (%s) at position %zu", item.index,
                     pk_errname(item.status), g.delivered);
        g.delivered++;
    }
    assert_int_equal(rc, PK_EOF);
    assert_int_equal(g.delivered, g.n);
    pool_iter_free(&it);
    if (g.max_gap > bound)
        fail_msg("ordered imap pulled up to %zu items ahead of delivery while "
                 "item 0 ran for 0.3 s (bound %zu): the reorder buffer grows "
                 "without limit behind a slow item",
                 g.max_gap, bound);
    print_message("imap behind a slow item: at most %zu items pulled ahead\n",
                  g.max_gap);
    pool_destroy(&p);
}

static void test_imap_errors_and_abandon(void **state)
{
    pool_t *p = tp_start_n(0);
    pool_iter_t *it = NULL;
    pool_item_t item;
    tp_gen_t g = {.n = 100000, .fail_at = 500, .caller = pthread_self()};
    pk_err_t rc;
    size_t got = 0;

    /* the generator's error stops the map and comes out of pool_iter_next */
    CHECK_OK(
        pool_imap(p, "examples", "square", tp_gen_next, &g, NULL, &it, E_));
    while ((rc = pool_iter_next(it, &item, 30)) == PK_OK)
        got++;
    if (rc != PK_EINVAL)
        fail_msg("generator failing at item 500: pool_iter_next gave %s after "
                 "%zu items",
                 pk_errname(rc), got);
    assert_true(got <= 500);
    pool_iter_free(&it);

    /* abandoning an iterator mid-map leaves no stray result behind */
    tp_gen_t g2 = {.n = 100000, .fail_at = SIZE_MAX, .caller = pthread_self()};
    CHECK_OK(
        pool_imap(p, "examples", "square", tp_gen_next, &g2, NULL, &it, E_));
    for (int i = 0; i < 10; i++)
        assert_int_equal(pool_iter_next(it, &item, 30), PK_OK);
    pool_iter_free(&it); /* must not wait for the rest of the input */

    int64_t v[5000], out[5000];
    for (int i = 0; i < 5000; i++)
        v[i] = 5000 - i;
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 5000, VEC_));
    for (int i = 0; i < 5000; i++)
        if (out[i] != v[i] * v[i])
            fail_msg("after an abandoned imap, item %d is %" PRId64, i, out[i]);
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_imap_bounded, 120),
    RUNNER_TEST(test_imap_reorders, 60),
    RUNNER_TEST(test_imap_bounded_behind_slow_item, 60),
    RUNNER_TEST(test_imap_errors_and_abandon, 60),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
