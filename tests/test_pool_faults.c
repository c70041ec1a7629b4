/*
 * test_pool_faults.c - workers that die and items that hang:
 * workers SIGKILLed from outside mid-map (no item may fail), a poison item
 * that kills every worker it reaches (isolated, failed alone with
 * PK_ECRASHED naming the signal), a function that exit(0)s its worker, and
 * items past their deadline (PK_ETIMEDOUT, per call and per pool, through
 * pool_map and pool_imap), and workers stopped (SIGSTOP) while idle or mid
 * item, which must not keep their work (recovery.h, "Stalled workers").
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_faults [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
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
#include "lib/runner.h"

/* ---- worker death ------------------------------------------------------- */

static void test_kill_workers_mid_map(void **state)
{
    const size_t n = 2000;
    pool_opts_t o;
    tp_opts_for(&o, 0);
    o.retries = 1000000; /* outside kills must never fail an item */
    pool_t *p = tp_start(&o);
    int64_t *us = malloc(n * sizeof *us);
    pk_value_t **items;
    tp_killer_t k;
    pthread_t th;

    for (size_t i = 0; i < n; i++)
        us[i] = 200 + (int64_t)i; /* distinct: a misplaced result shows */
    pk_doc_t *doc = tp_int_items(us, n, &items);
    memset(&k, 0, sizeof k);
    k.p = p;
    assert_int_equal(pthread_create(&th, NULL, tp_killer_main, &k), 0);
    pool_results_t *r = tp_map_values(p, "spin", items, n, NULL);
    atomic_store(&k.stop, 1);
    pthread_join(th, NULL);

    if (k.kills < 10)
        fail_msg("only %d workers killed during the map (slowest pool_stats "
                 "call %.3f s: does pool_stats wait for the map?)",
                 k.kills, k.slowest_stats);
    assert_int_equal(pool_results_failed(r), 0);
    for (size_t i = 0; i < n; i++)
        tp_expect_int(r, i, us[i]);
    pool_results_free(&r);

    /* every killed process was replaced (a respawn may still be under way) */
    double t0 = tp_now_s();
    while (tp_restarts(p) < (unsigned)k.kills && tp_now_s() - t0 < 5)
        tp_sleep_s(0.01);
    if (tp_restarts(p) < (unsigned)k.kills)
        fail_msg("%d workers killed, %u restarts counted", k.kills,
                 tp_restarts(p));
    print_message("%d workers killed, %u restarts\n", k.kills, tp_restarts(p));

    /* and the pool still serves */
    r = tp_map_values(p, "square", items, 100, NULL);
    for (size_t i = 0; i < 100; i++)
        tp_expect_int(r, i, us[i] * us[i]);
    pool_results_free(&r);

    pk_doc_free(&doc);
    free(items);
    free(us);
    pool_destroy(&p);
}

/* Maps examples.FUNC over 0..n-1 with item `bad` set to -1 (which makes
 * FUNC end its worker) and checks that only that item failed, with `status`
 * and a message containing `needle`, and every other result in place. */
static void check_lone_failure(pool_t *p, const char *func, int64_t *v,
                               size_t n, size_t bad, pk_err_t status,
                               const char *needle)
{
    pk_value_t **items;
    for (size_t i = 0; i < n; i++)
        v[i] = i == bad ? -1 : (int64_t)i;
    pk_doc_t *doc = tp_int_items(v, n, &items);
    pool_results_t *r = tp_map_values(p, func, items, n, NULL);
    assert_int_equal(pool_results_failed(r), 1);
    for (size_t i = 0; i < n; i++)
        if (i == bad)
            tp_expect_fail(r, i, status, needle);
        else
            tp_expect_int(r, i, v[i]);
    print_message("%s item: %s\n", func, pool_results_item(r, bad)->error);
    pool_results_free(&r);
    pk_doc_free(&doc);
    free(items);
}

static void test_poison_item(void **state)
{
    const size_t n = 1000, bad = 617;
    pool_t *p = tp_start_n(0);
    int64_t v[1000], out[1000];

    check_lone_failure(p, "crash", v, n, bad, PK_ECRASHED, "SIGKILL");

    /* the same through the plain-C convenience map */
    size_t nf = 0;
    pk_err_t *st = malloc(n * sizeof *st);
    pk_error_t e;
    assert_non_null(st);
    for (size_t i = 0; i < n; i++)
        out[i] = -7;
    pk_err_t rc =
        pool_map_i64(p, "examples", "crash", v, out, n, NULL, st, &nf, &e);
    if (rc != PK_OK)
        fail_msg("pool_map_i64 with a poison item: %s", pk_errname(rc));
    assert_int_equal(nf, 1);
    assert_int_equal(e.code, PK_ECRASHED);
    assert_non_null(strstr(e.msg, "item 617"));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i], i == bad ? -7 : v[i]);
        assert_int_equal(st[i], i == bad ? PK_ECRASHED : PK_OK);
    }
    free(st);
    pool_destroy(&p);
}

/* A function that ends its own process with status 0 mid-item: not a clean
 * retirement, so the item fails alone instead of being re-sent for ever. */
static pk_err_t exit0_fn(pool_call_t *call, pk_value_t **result)
{
    int64_t x = 0;
    if (pk_as_int(pk_item(call->args, 0), &x) != PK_OK)
        return PK_ETYPE;
    if (x < 0)
        _exit(0);
    *result = pk_int(call->doc, x);
    return *result ? PK_OK : PK_ENOMEM;
}

static void test_exit0_item(void **state)
{
    int64_t v[200];
    assert_int_equal(pool_register("examples", "exit0", exit0_fn, NULL), PK_OK);
    pool_t *p = tp_start_n(0);
    check_lone_failure(p, "exit0", v, 200, 77, PK_ECRASHED, "status 0");
    pool_destroy(&p);
}

/* ---- timeouts ----------------------------------------------------------- */

static void check_hung(pool_t *p, const pool_call_opts_t *co)
{
    const size_t n = 20, hung = 7;
    pk_doc_t *doc = NULL;
    pk_value_t *items[20];

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    for (size_t i = 0; i < n; i++)
        items[i] = pk_float(doc, i == hung ? HUNG_S : 0.01);
    /* Only the timeout can end the hung item: if it fails to, the map never
     * returns and the test's hard time limit fails the test. */
    pool_results_t *r = tp_map_values(p, "sleep", items, n, co);
    assert_int_equal(pool_results_failed(r), 1);
    for (size_t i = 0; i < n; i++) {
        if (i == hung) {
            tp_expect_fail(r, i, PK_ETIMEDOUT, NULL);
            continue;
        }
        const pool_item_t *it = pool_results_item(r, i);
        if (it->status != PK_OK || it->value->type != PK_FLOAT ||
            it->value->u.f != 0.01)
            fail_msg("item %zu: %s %s", i, pk_errname(it->status),
                     it->error ? it->error : "");
    }
    print_message("hung item: %s\n", pool_results_item(r, hung)->error);
    pool_results_free(&r);
    pk_doc_free(&doc);
}

/* Item i of a stream: 0.01 s of sleep, or HUNG_S for item *hung. */
static pk_value_t *make_sleep(pk_doc_t *doc, size_t i, void *hung)
{
    return pk_float(doc, i == *(const size_t *)hung ? HUNG_S : 0.01);
}

/* The same through pool_imap: the deadline holds for streamed items too,
 * in a long input and in one read to its end at once. */
static void check_hung_imap(pool_t *p, const pool_call_opts_t *co, size_t n,
                            size_t hung)
{
    tp_stream_t g = {0, n, make_sleep, &hung};
    pool_iter_t *it = NULL;
    pool_item_t item;
    size_t got = 0;
    pk_err_t rc;

    double t0 = tp_now_s();
    CHECK_OK(
        pool_imap(p, "examples", "sleep", tp_stream_next, &g, co, &it, E_));
    while ((rc = pool_iter_next(it, &item, 60)) == PK_OK) {
        if (item.index != got++)
            fail_msg("imap delivered item %zu at %zu", item.index, got - 1);
        if (item.index == hung && item.status != PK_ETIMEDOUT)
            fail_msg("imap: hung item: %s after %.1f s (want ETIMEDOUT)",
                     pk_errname(item.status), tp_now_s() - t0);
        if (item.index != hung && item.status != PK_OK)
            fail_msg("imap: item %zu: %s", item.index, pk_errname(item.status));
    }
    assert_int_equal(rc, PK_EOF);
    assert_int_equal(got, n);
    pool_iter_free(&it);
}

static void test_hung_item_times_out(void **state)
{
    pool_call_opts_t co = {sizeof co, 0, 0.5};
    pool_t *p = tp_start_n(0);

    check_hung(p, &co); /* per-call timeout */
    check_hung_imap(p, &co, 20, 7);
    check_hung_imap(p, &co, 3, 1);
    int64_t v[3] = {1, 2, 3}, out[3];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[2], 9);
    pool_destroy(&p);

    pool_opts_t o;
    tp_opts_for(&o, 0);
    o.timeout = 0.5;
    p = tp_start(&o);
    check_hung(p, NULL); /* the pool's timeout */
    check_hung_imap(p, NULL, 20, 7);
    check_hung_imap(p, NULL, 3, 1);
    pool_destroy(&p);
}

/* ---- stalled workers ---------------------------------------------------- */

/* The pid of worker `slot`, once it is up. */
static int worker_pid(pool_t *p, size_t slot)
{
    pool_worker_stats_t st[8];
    double t0 = tp_now_s();
    for (;;) {
        size_t n = tp_stats(p, st, 8);
        if (slot < n && st[slot].pid > 0)
            return st[slot].pid;
        if (tp_now_s() - t0 > 10)
            fail_msg("worker %zu has no pid", slot);
        tp_sleep_s(0.01);
    }
}

/* Maps examples.sleep over n items of `secs` each and checks every one
 * came back in place.  Only the stall watch can end the map when a worker
 * holding work is stopped: if it fails to, the test's time limit fails the
 * test. */
static void map_sleeps(pool_t *p, size_t n, double secs,
                       const pool_call_opts_t *co)
{
    pk_doc_t *doc = NULL;
    pk_value_t *items[64];
    assert_true(n <= 64);
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    for (size_t i = 0; i < n; i++)
        items[i] = pk_float(doc, secs);
    pool_results_t *r = tp_map_values(p, "sleep", items, n, co);
    for (size_t i = 0; i < n; i++) {
        const pool_item_t *it = pool_results_item(r, i);
        if (it->status != PK_OK)
            fail_msg("item %zu: %s %s", i, pk_errname(it->status),
                     it->error ? it->error : "");
    }
    pool_results_free(&r);
    pk_doc_free(&doc);
}

/* A worker stopped while idle is sent work it never starts: the batches
 * go to another worker and the stopped one is replaced - with the pool's
 * stall bound, and (default bound) with a per-item timeout, whose deadline
 * then runs from dispatch.  No item fails: none of them ran. */
static void test_stopped_idle_worker(void **state)
{
    pool_opts_t o;
    tp_opts_for(&o, 2);
    o.stall_timeout = 0.5;
    o.spin_us = -1; /* idle means blocked in its socket, not the lane */
    pool_t *p = tp_start(&o);
    int pid = worker_pid(p, 0);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    map_sleeps(p, 40, 0.01, NULL);
    assert_true(tp_restarts(p) >= 1);
    assert_true(worker_pid(p, 0) != pid);
    pool_destroy(&p);

    tp_opts_for(&o, 2);
    o.spin_us = -1;
    p = tp_start(&o); /* the default bound: 60 s, past the time limit */
    pid = worker_pid(p, 1);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.timeout = 1;
    map_sleeps(p, 40, 0.01, &co);
    assert_true(tp_restarts(p) >= 1);
    pool_destroy(&p);
}

/* SIGSTOPs the process *arg once it is 0.3 s into an item. */
static void *stop_later(void *arg)
{
    tp_sleep_s(0.3);
    kill(*(int *)arg, SIGSTOP);
    return NULL;
}

/* A worker stopped in the middle of an item is not running it: it is
 * replaced and the item runs again elsewhere, without a timeout.  A worker
 * running an item longer than the bound is left alone. */
static void test_stopped_busy_worker(void **state)
{
    pool_opts_t o;
    tp_opts_for(&o, 2);
    o.stall_timeout = 0.3;
    pool_t *p = tp_start(&o);

    map_sleeps(p, 2, 1.0, NULL); /* 1 s items, bound 0.3 s: healthy */
    assert_int_equal(tp_restarts(p), 0);

    static int pid;
    pid = worker_pid(p, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_later, &pid), 0);
    map_sleeps(p, 2, 1.0, NULL);
    pthread_join(th, NULL);
    assert_true(tp_restarts(p) >= 1);
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_kill_workers_mid_map, 120),
    RUNNER_TEST(test_poison_item, 60),
    RUNNER_TEST(test_exit0_item, 60),
    RUNNER_TEST(test_hung_item_times_out, 60),
    RUNNER_TEST(test_stopped_idle_worker, 40),
    RUNNER_TEST(test_stopped_busy_worker, 40),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
