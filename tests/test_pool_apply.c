/*
 * test_pool_apply.c - single calls: pool_apply_async and its
 * futures, through the socket and through the fast lane (ipc/lane.h):
 * waits with timeouts, function errors, keyword arguments, many futures
 * at once; workers killed while they poll their lane or mid-call, timeouts
 * and SIGINT during a lane wait, replies too big for the lane, retiring
 * workers, abandoned futures, close/join before wait, and threads racing
 * each other and a worker killer.
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_apply [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <signal.h>
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

/* ---- futures ------------------------------------------------------------ */

/* A pool whose idle workers poll their lane for 200 ms after each call
 * (not the default 200 us), so that calls take the lane even on a loaded
 * machine: the tests that assert the lane was used are about its path,
 * not its speed. */
static pool_t *start_polling(int workers)
{
    pool_opts_t o;
    tp_opts_for(&o, workers);
    o.spin_us = 200000;
    return tp_start(&o);
}

static void test_apply_async(void **state)
{
    pool_t *p = tp_start_n(0);
    pk_doc_t *doc = NULL;
    pool_item_t item;
    pool_future_t *f, *fs[100];

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    f = tp_apply1(p, "square", pk_int(doc, 7), doc);
    CHECK_OK(pool_future_wait(f, 10, &item));
    assert_int_equal(item.status, PK_OK);
    assert_int_equal(item.value->u.i, 49);
    pool_future_free(&f);
    assert_null(f);

    f = tp_apply1(p, "sleep", pk_float(doc, 1.0), doc);
    double t0 = tp_now_s();
    assert_int_equal(pool_future_wait(f, 0.05, &item), PK_ETIMEDOUT);
    double waited = tp_now_s() - t0;
    if (waited < 0.04) /* not before its timeout */
        fail_msg("pool_future_wait(0.05) returned after %.3f s", waited);
    assert_int_equal(pool_future_wait(f, 0, &item), PK_ETIMEDOUT);
    CHECK_OK(pool_future_wait(f, 10, &item));
    assert_int_equal(item.status, PK_OK);
    assert_int_equal(item.value->type, PK_FLOAT);
    assert_true(item.value->u.f == 1.0);
    /* waiting again gives the same outcome */
    CHECK_OK(pool_future_wait(f, 0, &item));
    assert_int_equal(item.status, PK_OK);
    pool_future_free(&f);

    f = tp_apply1(p, "fail", pk_cstr(doc, "apply went wrong"), doc);
    CHECK_OK(pool_future_wait(f, 10, &item));
    assert_int_equal(item.status, PK_EFUNC);
    assert_non_null(strstr(item.error, "apply went wrong"));
    assert_null(item.value);
    pool_future_free(&f);

    /* keyword arguments travel: examples.square refuses any */
    pk_value_t *args = pk_tuple_new(doc, 1), *kw = pk_dict_new(doc, 1);
    pk_tuple_set(args, 0, pk_int(doc, 2));
    assert_int_equal(pk_dict_set(doc, kw, pk_cstr(doc, "base"), pk_int(doc, 3)),
                     PK_OK);
    CHECK_OK(pool_apply_async(p, "examples", "square", args, kw, &f, E_));
    CHECK_OK(pool_future_wait(f, 10, &item));
    assert_int_equal(item.status, PK_ETYPE);
    assert_non_null(strstr(item.error, "keyword"));
    pool_future_free(&f);

    /* an unknown function is refused at the call, not by a worker */
    pk_value_t *one = pk_tuple_new(doc, 1);
    pk_tuple_set(one, 0, pk_int(doc, 1));
    pk_error_t err;
    f = NULL;
    assert_int_equal(
        pool_apply_async(p, "examples", "missing_fn", one, NULL, &f, &err),
        PK_ENOFUNC);
    assert_null(f);
    assert_non_null(strstr(err.msg, "examples.missing_fn is not registered"));

    for (int i = 0; i < 100; i++)
        fs[i] = tp_apply1(p, "square", pk_int(doc, i), doc);
    for (int i = 99; i >= 0; i--) {
        CHECK_OK(pool_future_wait(fs[i], 10, &item));
        assert_int_equal(item.status, PK_OK);
        assert_int_equal(item.value->u.i, i * i);
        pool_future_free(&fs[i]);
    }
    pk_doc_free(&doc);
    pool_destroy(&p);
}

/* ---- the fast lane (runtime/ipc/lane.h) ------------------------------------- */

/* n sequential applies of square(base + i), each checked. */
static void square_calls(pool_t *p, pk_doc_t *doc, int64_t base, int n)
{
    pool_item_t item;
    for (int i = 0; i < n; i++) {
        pool_future_t *f = tp_apply1(p, "square", pk_int(doc, base + i), doc);
        CHECK_OK(pool_future_wait(f, 30, &item));
        if (item.status != PK_OK || item.value->type != PK_INT ||
            item.value->u.i != (base + i) * (base + i))
            fail_msg("square(%" PRId64 "): %s %s", base + i,
                     pk_errname(item.status), item.error ? item.error : "");
        pool_future_free(&f);
    }
}

static void test_lane_round_trips(void **state)
{
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_polling(2);
    square_calls(p, doc, -100, 500);
    uint64_t laned = tp_lane_items(p);
    print_message("500 sequential applies: %" PRIu64 " through the lane\n",
                  laned);
    /* Back-to-back calls find the last worker still polling. */
    assert_true(laned > 0);
    pool_destroy(&p);

    /* Opted out: the same calls, all through the socket. */
    pool_opts_t o;
    tp_opts_for(&o, 2);
    o.spin_us = -1;
    p = tp_start(&o);
    square_calls(p, doc, 7, 200);
    assert_int_equal(tp_lane_items(p), 0);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

/* An idle worker polls its lane; kill it there, then crash one mid-call. */
static void test_lane_worker_deaths(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_polling(2);
    unsigned kills = 0;
    for (int round = 0; round < 5; round++) {
        square_calls(p, doc, round * 10, 20);
        /* Until the last kill's respawn is counted and its pid is in the
         * stats, slot 0 shows the dead worker's pid (a zombie takes a
         * signal too, with no death behind it) or none at all. Both are
         * read from one snapshot, so the pid is the respawned one. */
        pool_worker_stats_t st[2];
        tp_stats(p, st, 2);
        while (st[0].restarts + st[1].restarts < kills || st[0].pid <= 0) {
            tp_sleep_s(0.01);
            tp_stats(p, st, 2);
        }
        if (kill(st[0].pid, SIGKILL) == 0)
            kills++;
        square_calls(p, doc, round * 10, 20);
    }
    assert_int_equal(kills, 5); /* every round killed a polling worker */
    /* A call that kills its worker (crash(x) SIGKILLs itself for x < 0)
     * is retried, then fails alone naming the signal; the lane survives. */
    uint64_t before = tp_lane_items(p);
    pool_future_t *f = tp_apply1(p, "crash", pk_int(doc, -1), doc);
    CHECK_OK(pool_future_wait(f, 60, &item));
    assert_int_equal(item.status, PK_ECRASHED);
    assert_non_null(strstr(item.error, "SIGKILL"));
    pool_future_free(&f);
    /* The lane survives: calls take it again.  Only while a worker polls
     * (within spin_us of its last work): on a loaded machine a round may
     * find none, so rounds repeat (the test's time limit bounds them). */
    for (int r = 0; r < 100 && tp_lane_items(p) <= before; r++)
        square_calls(p, doc, 3, 200);
    assert_true(tp_lane_items(p) > before);
    /* Every death is followed by a respawn (the time limit bounds this). */
    while (tp_restarts(p) < kills + 3)
        tp_sleep_s(0.01);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

static void test_lane_timeout_and_interrupt(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_opts_t o;
    tp_opts_for(&o, 2);
    o.timeout = 0.3;
    pool_t *p = tp_start(&o);
    square_calls(p, doc, 0, 50); /* the workers poll */
    /* Only the timeout can end it (else the test's time limit fails it). */
    pool_future_t *f = tp_apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    CHECK_OK(pool_future_wait(f, -1, &item));
    assert_int_equal(item.status, PK_ETIMEDOUT);
    assert_non_null(strstr(item.error, "timed out"));
    pool_future_free(&f);
    square_calls(p, doc, 0, 50);
    assert_true(tp_restarts(p) >= 1);
    pool_destroy(&p);

    /* SIGINT ends a wait on a lane call; the future stays valid. */
    p = tp_start_n(2);
    square_calls(p, doc, 0, 50);
    pthread_t th;
    f = tp_apply1(p, "sleep", pk_float(doc, 0.8), doc);
    assert_int_equal(pthread_create(&th, NULL, tp_sigint_later, NULL), 0);
    pk_err_t rc = pool_future_wait(f, -1, &item);
    pthread_join(th, NULL);
    assert_int_equal(rc, PK_EINTR);
    CHECK_OK(pool_future_wait(f, -1, &item));
    assert_int_equal(item.status, PK_OK);
    assert_true(item.value->u.f == 0.8);
    pool_future_free(&f);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

/* big(n) -> a str of n bytes 'a' + (i % 26): too big for the lane's reply
 * area at 100 kB, so it goes back over the socket. */
static pk_err_t big_fn(pool_call_t *call, pk_value_t **result)
{
    int64_t n = 0;
    if (pk_as_int(pk_item(call->args, 0), &n) != PK_OK || n < 0)
        return PK_ETYPE;
    char *b = malloc((size_t)n + 1);
    if (b == NULL)
        return PK_ENOMEM;
    for (int64_t i = 0; i < n; i++)
        b[i] = (char)('a' + i % 26);
    *result = pk_str(call->doc, b, (size_t)n);
    free(b);
    return *result ? PK_OK : PK_ENOMEM;
}

static void check_big(const pool_item_t *item, int64_t n)
{
    if (item->status != PK_OK)
        fail_msg("big(%" PRId64 "): %s %s", n, pk_errname(item->status),
                 item->error ? item->error : "");
    assert_int_equal(item->value->type, PK_STR);
    size_t len = item->value->u.str.len;
    const char *s = item->value->u.str.ptr;
    assert_int_equal(len, (size_t)n);
    for (int64_t i = 0; i < n; i++)
        if (s[i] != (char)('a' + i % 26))
            fail_msg("big(%" PRId64 ") differs at %" PRId64, n, i);
}

static void test_lane_big_reply_and_retiring(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pool_register("examples", "big", big_fn, NULL), PK_OK);
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_polling(2);
    static const int64_t sizes[] = {0, 1000, 40000, 100000, 3000000, 10};
    for (int rep = 0; rep < 20; rep++) {
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            pool_future_t *f = tp_apply1(p, "big", pk_int(doc, sizes[k]), doc);
            CHECK_OK(pool_future_wait(f, 30, &item));
            check_big(&item, sizes[k]);
            pool_future_free(&f);
        }
    }
    print_message("120 applies of big(): %" PRIu64 " replies in the lane\n",
                  tp_lane_items(p));
    assert_true(tp_lane_items(p) > 0);
    pool_destroy(&p);

    /* A retiring worker's reply goes over the socket, so the master knows
     * its exit is clean: no call fails, every worker retires in turn. */
    pool_opts_t o;
    tp_opts_for(&o, 2);
    o.maxtasksperchild = 1;
    p = tp_start(&o);
    square_calls(p, doc, 0, 60);
    print_message("60 applies, maxtasksperchild 1: %u restarts\n",
                  tp_restarts(p));
    assert_true(tp_restarts(p) >= 50);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

/* Futures freed unwaited: the master reclaims their lanes. */
static void test_lane_abandoned_calls(void **state)
{
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_polling(2);
    for (int i = 0; i < 50; i++) {
        square_calls(p, doc, i, 5);
        pool_future_t *f = tp_apply1(p, "square", pk_int(doc, i), doc);
        pool_future_free(&f); /* finished or not, nobody collects it */
        f = tp_apply1(p, "sleep", pk_float(doc, 0.002), doc);
        pool_future_free(&f);
    }
    /* A hung call given up on: cancel grace kills its worker. */
    pool_future_t *f = tp_apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    pool_future_free(&f);
    tp_sleep_s(0.5);
    uint64_t before = tp_lane_items(p);
    square_calls(p, doc, 0, 300);
    assert_true(tp_lane_items(p) > before); /* the lanes were freed */
    pool_destroy(&p);                       /* must not wait on the hung call */
    pk_doc_free(&doc);
}

/* multiprocessing's order: apply, close, join, then get.  A finished lane
 * call needs no worker, so join must not wait for it to be collected. */
static void test_lane_close_join_then_wait(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    /* Long polling puts both calls on lanes: the sleeping one is still
     * running when close and join come, and join must end once it is done
     * (the master used to wait for a wake-up that never came). */
    pool_t *p = start_polling(2);
    square_calls(p, doc, 0, 50); /* the workers poll */
    uint64_t before = tp_lane_items(p);
    pool_future_t *f = tp_apply1(p, "square", pk_int(doc, 7), doc);
    pool_future_t *g = tp_apply1(p, "sleep", pk_float(doc, 0.2), doc);
    CHECK_OK(pool_close(p));
    CHECK_OK(pool_join(p, -1)); /* never returned while a reply waited */
    CHECK_OK(pool_future_wait(f, -1, &item));
    assert_int_equal(item.status, PK_OK);
    assert_int_equal(item.value->u.i, 49);
    CHECK_OK(pool_future_wait(g, -1, &item));
    assert_int_equal(item.status, PK_OK);
    assert_true(item.value->u.f == 0.2);
    print_message("close/join/wait: %" PRIu64 " of 2 through the lane\n",
                  tp_lane_items(p) - before);
    pool_future_free(&f);
    pool_future_free(&g);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

typedef struct lane_thread {
    pool_t *p;
    int64_t base;
    int failed;
    char why[200];
} lane_thread_t;

static void *lane_thread(void *arg)
{
    lane_thread_t *t = arg;
    pk_doc_t *doc = NULL;
    if (pk_doc_new(&doc) != PK_OK) {
        t->failed = 1;
        return NULL;
    }
    for (int i = 0; i < 400 && !t->failed; i++) {
        pk_value_t *args = pk_tuple_new(doc, 1);
        pool_future_t *f = NULL;
        pool_item_t item;
        int64_t x = t->base + i;
        pk_tuple_set(args, 0, pk_int(doc, x));
        pk_err_t rc =
            pool_apply_async(t->p, "examples", "square", args, NULL, &f, NULL);
        if (rc == PK_OK)
            rc = pool_future_wait(f, 30, &item);
        if (rc != PK_OK || item.status != PK_OK || item.value->u.i != x * x) {
            t->failed = 1;
            snprintf(t->why, sizeof t->why, "square(%" PRId64 "): %s %s %s", x,
                     pk_errname(rc), rc ? "" : pk_errname(item.status),
                     rc == PK_OK && item.error ? item.error : "");
        }
        pool_future_free(&f);
    }
    pk_doc_free(&doc);
    return NULL;
}

static atomic_int killer_stop; /* set by the test, read by the killer */

static void *killer(void *arg)
{
    pool_t *p = arg;
    unsigned k = 0;
    uint64_t seen[2] = {0, 0};
    while (!atomic_load(&killer_stop)) {
        pool_worker_stats_t st[2];
        size_t n = 0;
        unsigned s = k++ % 2;
        /* Only a worker that has served since its last kill: killing them
         * at start-up over and over is how a pool declares itself broken. */
        if (pool_stats(p, st, 2, &n) == PK_OK && st[s].pid > 0 &&
            st[s].items_done > seen[s]) {
            seen[s] = st[s].items_done;
            kill(st[s].pid, SIGKILL);
        }
        tp_sleep_s(0.003);
    }
    return NULL;
}

static void test_lane_threads_race(void **state)
{
    pool_t *p = tp_start_n(2);
    lane_thread_t t[6];
    pthread_t th[6];
    for (int i = 0; i < 6; i++) {
        t[i] = (lane_thread_t){p, (int64_t)i * 100000, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, lane_thread, &t[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        if (t[i].failed)
            fail_msg("thread %d: %s", i, t[i].why);
    }
    print_message("6 threads x 400 applies: %" PRIu64 " through the lane\n",
                  tp_lane_items(p));
    pool_destroy(&p);

    /* The same while working workers are killed every few ms: claims,
     * posts and deaths interleave in many orders, and no call is lost or
     * wrong (retries are high so an unlucky item is not failed as a
     * poison). */
    pool_opts_t o;
    tp_opts_for(&o, 2);
    o.retries = 1000;
    p = tp_start(&o);
    pthread_t kt;
    atomic_store(&killer_stop, 0);
    assert_int_equal(pthread_create(&kt, NULL, killer, p), 0);
    for (int i = 0; i < 6; i++) {
        t[i] = (lane_thread_t){p, (int64_t)i * 100000, 0, ""};
        assert_int_equal(pthread_create(&th[i], NULL, lane_thread, &t[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        if (t[i].failed)
            fail_msg("thread %d: %s", i, t[i].why);
    }
    atomic_store(&killer_stop, 1);
    pthread_join(kt, NULL);
    print_message("the same under kills: %u restarts, %" PRIu64
                  " through the lane\n",
                  tp_restarts(p), tp_lane_items(p));
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_lane_round_trips, 60),
    RUNNER_TEST(test_lane_worker_deaths, 120),
    RUNNER_TEST(test_lane_timeout_and_interrupt, 60),
    RUNNER_TEST(test_lane_big_reply_and_retiring, 120),
    RUNNER_TEST(test_lane_abandoned_calls, 60),
    RUNNER_TEST(test_lane_close_join_then_wait, 60),
    RUNNER_TEST(test_lane_threads_race, 180),
    RUNNER_TEST(test_apply_async, 30),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
