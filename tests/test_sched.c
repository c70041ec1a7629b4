/*
 * test_sched.c - serve's scheduler (runtime/pool/sched.h) without sockets:
 * fair queueing between clients, round-robin over hosts within their
 * capacity, requeue in submission order when a host dies, late and
 * duplicate results dropped, departed clients' batches dropped or
 * orphaned, and allocation failures.
 *
 *   build/tests/test_sched [test-name-glob]
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/faultsim.h"
#include "pool/sched.h"

/* The batches a test made, and which the drop callback was given. */
typedef struct world {
    pool__sched_t *s;
    pool__sbatch_t b[64];
    int dropped[64];
    int ndropped;
} world_t;

static void on_drop(void *arg, pool__sbatch_t *b)
{
    world_t *w = arg;
    ptrdiff_t i = b - w->b;
    assert_true(i >= 0 && i < 64);
    assert_int_equal(w->dropped[i], 0); /* dropped once at most */
    w->dropped[i] = 1;
    w->ndropped++;
}

static void world_init(world_t *w)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(pool__sched_new(on_drop, w, &w->s), PK_OK);
}

/* Submits batch slot i for client c, its client id 100 + i. */
static void submit(world_t *w, pool__sclient_t *c, int i)
{
    w->b[i].client_batch = 100 + (uint64_t)i;
    w->b[i].payload = &w->b[i];
    pool__sched_submit(w->s, c, &w->b[i]);
}

/* The next dispatch, which must exist; returns its batch slot. */
static int next(world_t *w, pool__shost_t **h)
{
    pool__sbatch_t *b = NULL;
    pool__shost_t *hh = NULL;
    assert_int_equal(pool__sched_next(w->s, &hh, &b), 1);
    assert_non_null(b);
    assert_true(b->id != 0);
    assert_ptr_equal(b->host, hh);
    if (h != NULL)
        *h = hh;
    return (int)(b - w->b);
}

static void no_next(world_t *w)
{
    pool__sbatch_t *b = NULL;
    pool__shost_t *h = NULL;
    assert_int_equal(pool__sched_next(w->s, &h, &b), 0);
}

/* Host h answers slot i's current dispatch: it must be DONE. */
static void done(world_t *w, pool__shost_t *h, int i)
{
    pool__sbatch_t *b = NULL;
    assert_int_equal(pool__sched_result(w->s, h, w->b[i].id, &b),
                     POOL_SCHED_DONE);
    assert_ptr_equal(b, &w->b[i]);
    assert_null(b->host);
}

/* ---- refusals first: nothing to dispatch, unknown results ------------- */

static void test_nothing_to_do(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    no_next(&w); /* no client, no host */
    pool__sclient_t *c = pool__sched_client_add(w.s, NULL);
    submit(&w, c, 0);
    no_next(&w); /* work, but no host */
    pool__shost_t *h = pool__sched_host_add(w.s, 1, NULL);
    pool__sbatch_t *b;
    /* results for ids never dispatched, and id 0 */
    assert_int_equal(pool__sched_result(w.s, h, 0, &b), POOL_SCHED_UNKNOWN);
    assert_null(b);
    assert_int_equal(pool__sched_result(w.s, h, 12345, &b), POOL_SCHED_UNKNOWN);
    int i = next(&w, NULL);
    assert_int_equal(i, 0);
    no_next(&w); /* capacity 1 used */
    done(&w, h, 0);
    /* the same answer again: a duplicate */
    assert_int_equal(pool__sched_result(w.s, h, w.b[0].id, &b),
                     POOL_SCHED_UNKNOWN);
    no_next(&w); /* nothing queued */
    pool__sched_stats_t st;
    pool__sched_stats(w.s, &st);
    assert_int_equal(st.submitted, 1);
    assert_int_equal(st.dispatched, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.unknown, 3);
    pool__sched_free(&w.s);
    assert_null(w.s);
    pool__sched_free(&w.s); /* idempotent */
    pool__sched_free(NULL);
    assert_int_equal(w.ndropped, 0);
}

/* ---- fairness --------------------------------------------------------------- */

static void test_fair_between_clients(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *a = pool__sched_client_add(w.s, "a");
    pool__sclient_t *b = pool__sched_client_add(w.s, "b");
    pool__shost_t *h = pool__sched_host_add(w.s, 1, NULL);
    for (int i = 0; i < 10; i++) /* a: a long map */
        submit(&w, a, i);
    for (int i = 10; i < 12; i++) /* b: two batches, submitted later */
        submit(&w, b, i);
    /* one host of capacity 1: the order of service alternates while both
     * have work, and each client's own order is kept */
    int order[12];
    for (int k = 0; k < 12; k++) {
        order[k] = next(&w, NULL);
        no_next(&w);
        done(&w, h, order[k]);
    }
    int seen_b = 0, last_a = -1, last_b = 9;
    for (int k = 0; k < 12; k++) {
        int i = order[k];
        if (i >= 10) {
            assert_true(i > last_b);
            last_b = i;
            seen_b++;
        } else {
            assert_true(i > last_a);
            last_a = i;
        }
    }
    assert_int_equal(seen_b, 2);
    /* b's two batches went within the first four dispatches, the clients
     * taking turns while both had work */
    int b_by_4 = 0;
    for (int k = 0; k < 4; k++)
        b_by_4 += order[k] >= 10;
    assert_int_equal(b_by_4, 2);
    for (int k = 0; k < 3; k++)
        assert_true((order[k] >= 10) != (order[k + 1] >= 10));
    assert_int_equal(pool__sclient_queued(a), 0);
    assert_int_equal(pool__sclient_inflight(a), 0);
    pool__sched_free(&w.s);
}

static void test_three_clients_round_robin(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *c[3];
    for (int k = 0; k < 3; k++)
        c[k] = pool__sched_client_add(w.s, NULL);
    for (int i = 0; i < 12; i++)
        submit(&w, c[i % 3], i);
    pool__shost_t *h = pool__sched_host_add(w.s, 100, NULL);
    /* in any window of three dispatches, each client appears once */
    int per[3] = {0, 0, 0};
    for (int k = 0; k < 12; k++) {
        int i = next(&w, NULL);
        per[i % 3]++;
        if (k % 3 == 2) {
            assert_int_equal(per[0], k / 3 + 1);
            assert_int_equal(per[1], k / 3 + 1);
            assert_int_equal(per[2], k / 3 + 1);
        }
    }
    no_next(&w);
    assert_int_equal(pool__shost_inflight(h), 12);
    assert_int_equal(pool__shost_capacity(h), 100);
    pool__sched_free(&w.s); /* in-flight batches are dropped */
    assert_int_equal(w.ndropped, 12);
}

static void test_hosts_round_robin_within_capacity(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *c = pool__sched_client_add(w.s, NULL);
    pool__shost_t *h1 = pool__sched_host_add(w.s, 2, "h1");
    pool__shost_t *h2 = pool__sched_host_add(w.s, 1, "h2");
    assert_string_equal((const char *)pool__shost_tag(h1), "h1");
    for (int i = 0; i < 6; i++)
        submit(&w, c, i);
    pool__shost_t *got[3];
    for (int k = 0; k < 3; k++)
        next(&w, &got[k]);
    no_next(&w); /* 2 + 1 in flight: both hosts full */
    int n1 = (got[0] == h1) + (got[1] == h1) + (got[2] == h1);
    assert_int_equal(n1, 2);
    assert_true(got[0] != got[1]); /* alternating while both have room */
    assert_int_equal(pool__shost_inflight(h1), 2);
    assert_int_equal(pool__shost_inflight(h2), 1);
    assert_int_equal(pool__sclient_inflight(c), 3);
    assert_int_equal(pool__sclient_queued(c), 3);
    /* a result frees a place on that host only */
    pool__sbatch_t *b = h2 == got[0]   ? &w.b[0]
                        : h2 == got[1] ? &w.b[1]
                                       : &w.b[2];
    done(&w, h2, (int)(b - w.b));
    pool__shost_t *h;
    next(&w, &h);
    assert_ptr_equal(h, h2);
    pool__sched_free(&w.s);
}

/* ---- a host dies -------------------------------------------------------------- */

static void test_requeue_on_host_death(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *c = pool__sched_client_add(w.s, NULL);
    pool__shost_t *h1 = pool__sched_host_add(w.s, 2, NULL);
    pool__shost_t *h2 = pool__sched_host_add(w.s, 2, NULL);
    for (int i = 0; i < 8; i++)
        submit(&w, c, i);
    pool__shost_t *where[8] = {0};
    for (int k = 0; k < 4; k++) {
        pool__shost_t *h;
        int i = next(&w, &h);
        where[i] = h;
    }
    /* batches 0-3 in flight, two on each host; 4-7 queued */
    uint64_t old_id[8];
    for (int i = 0; i < 8; i++)
        old_id[i] = w.b[i].id;
    int on_h1[2], n = 0;
    for (int i = 0; i < 4; i++)
        if (where[i] == h1)
            on_h1[n++] = i;
    assert_int_equal(n, 2);
    assert_int_equal(pool__sched_host_remove(w.s, h1), 2);
    assert_int_equal(pool__sched_nhosts(w.s), 1);
    /* h1's batches are queued again, ahead of 4-7, in submission order */
    assert_int_equal(pool__sclient_queued(c), 6);
    assert_int_equal(pool__sclient_inflight(c), 2);
    assert_non_null(pool__sched_queued(c, 100 + (uint64_t)on_h1[0]));
    assert_int_equal(w.b[on_h1[0]].id, 0);
    /* h2 answers one of its own; the next dispatch is h1's first */
    int mine = where[0] == h2 ? 0 : where[1] == h2 ? 1 : 2;
    done(&w, h2, mine);
    pool__shost_t *h;
    assert_int_equal(next(&w, &h), on_h1[0]);
    assert_ptr_equal(h, h2);
    assert_true(w.b[on_h1[0]].id != old_id[on_h1[0]]); /* a new id */
    assert_int_equal(w.b[on_h1[0]].dispatches, 2);
    /* a late answer from a new host for the old id is unknown */
    pool__shost_t *h3 = pool__sched_host_add(w.s, 4, NULL);
    pool__sbatch_t *b;
    assert_int_equal(pool__sched_result(w.s, h3, old_id[on_h1[0]], &b),
                     POOL_SCHED_UNKNOWN);
    assert_int_equal(pool__sched_result(w.s, h2, old_id[on_h1[1]], &b),
                     POOL_SCHED_UNKNOWN);
    /* everything completes exactly once */
    int completed[8] = {0};
    completed[mine] = 1;
    for (;;) {
        pool__sbatch_t *x;
        pool__shost_t *hh;
        if (!pool__sched_next(w.s, &hh, &x)) {
            /* answer everything in flight, then try again */
            int any = 0;
            for (int i = 0; i < 8; i++)
                if (w.b[i].host != NULL) {
                    pool__shost_t *on = w.b[i].host;
                    done(&w, on, i);
                    assert_int_equal(completed[i], 0);
                    completed[i] = 1;
                    any = 1;
                }
            if (!any)
                break;
        }
    }
    for (int i = 0; i < 8; i++)
        assert_int_equal(completed[i], 1);
    pool__sched_stats_t st;
    pool__sched_stats(w.s, &st);
    assert_int_equal(st.requeued, 2);
    assert_int_equal(st.completed, 8);
    assert_int_equal(st.dispatched, 10);
    assert_int_equal(st.unknown, 2);
    assert_int_equal(w.ndropped, 0);
    pool__sched_free(&w.s);
}

static void test_requeue_keeps_order_across_deaths(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *c = pool__sched_client_add(w.s, NULL);
    pool__shost_t *h1 = pool__sched_host_add(w.s, 1, NULL);
    for (int i = 0; i < 4; i++)
        submit(&w, c, i);
    assert_int_equal(next(&w, NULL), 0); /* 0 on h1 */
    pool__shost_t *h2 = pool__sched_host_add(w.s, 1, NULL);
    assert_int_equal(next(&w, NULL), 1); /* 1 on h2 */
    /* h2 dies first, then h1: the queue is 0, 1, 2, 3 again */
    assert_int_equal(pool__sched_host_remove(w.s, h2), 1);
    assert_int_equal(pool__sched_host_remove(w.s, h1), 1);
    no_next(&w);
    pool__shost_t *h3 = pool__sched_host_add(w.s, 1, NULL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(next(&w, NULL), i);
        done(&w, h3, i);
    }
    pool__sched_free(&w.s);
}

static void test_undo_puts_back_in_front(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *c = pool__sched_client_add(w.s, NULL);
    pool__shost_t *h = pool__sched_host_add(w.s, 1, NULL);
    for (int i = 0; i < 3; i++)
        submit(&w, c, i);
    assert_int_equal(next(&w, NULL), 0);
    uint64_t id = w.b[0].id;
    pool__sched_undo(w.s, &w.b[0]); /* the send failed */
    assert_int_equal(w.b[0].id, 0);
    assert_int_equal(pool__shost_inflight(h), 0);
    pool__sbatch_t *b;
    assert_int_equal(pool__sched_result(w.s, h, id, &b), POOL_SCHED_UNKNOWN);
    assert_int_equal(next(&w, NULL), 0);
    assert_int_equal(w.b[0].dispatches, 1);
    pool__sched_undo(w.s, &w.b[2]); /* not in flight: no-op */
    assert_int_equal(pool__sclient_queued(c), 2);
    pool__sched_free(&w.s);
}

/* ---- a client leaves ----------------------------------------------------------- */

static void test_client_gone(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *a = pool__sched_client_add(w.s, NULL);
    pool__sclient_t *b = pool__sched_client_add(w.s, NULL);
    pool__shost_t *h = pool__sched_host_add(w.s, 2, NULL);
    submit(&w, a, 0);
    submit(&w, a, 1);
    submit(&w, a, 2);
    submit(&w, b, 3);
    int first = next(&w, NULL), second = next(&w, NULL);
    int a_inflight = (first < 3) + (second < 3);
    assert_int_equal(a_inflight, 1);
    int a_slot = first < 3 ? first : second;
    int b_slot = first < 3 ? second : first;
    /* a leaves: its queue is dropped, its in-flight batch orphaned */
    assert_int_equal(pool__sched_client_remove(w.s, a), 3);
    assert_int_equal(w.ndropped, 2);
    assert_int_equal(w.dropped[a_slot], 0);
    assert_int_equal(pool__sched_nclients(w.s), 1);
    no_next(&w); /* the orphan still holds its place on h */
    pool__sbatch_t *x;
    assert_int_equal(pool__sched_result(w.s, h, w.b[a_slot].id, &x),
                     POOL_SCHED_ORPHAN);
    assert_ptr_equal(x, &w.b[a_slot]);
    assert_null(x->client);
    assert_int_equal(pool__shost_inflight(h), 1);
    done(&w, h, b_slot);
    pool__sched_stats_t st;
    pool__sched_stats(w.s, &st);
    assert_int_equal(st.orphaned, 1);
    assert_int_equal(st.completed, 1);
    pool__sched_free(&w.s);
}

static void test_orphans_of_a_dead_host_are_dropped(void **state)
{
    (void)state;
    world_t w;
    world_init(&w);
    pool__sclient_t *a = pool__sched_client_add(w.s, NULL);
    pool__shost_t *h = pool__sched_host_add(w.s, 4, NULL);
    submit(&w, a, 0);
    submit(&w, a, 1);
    next(&w, NULL);
    next(&w, NULL);
    assert_int_equal(pool__sched_client_remove(w.s, a), 2);
    assert_int_equal(w.ndropped, 0);
    assert_int_equal(pool__sched_host_remove(w.s, h), 0); /* none requeued */
    assert_int_equal(w.ndropped, 2);
    pool__sched_free(&w.s);
}

/* ---- allocation failures -------------------------------------------------------- */

static void test_out_of_memory(void **state)
{
    (void)state;
    faultsim_install();
    pool__sched_t *s = (pool__sched_t *)1;
    faultsim_fail_at(1);
    assert_int_equal(pool__sched_new(NULL, NULL, &s), PK_ENOMEM);
    assert_null(s);
    faultsim_fail_at(0);
    assert_int_equal(pool__sched_new(NULL, NULL, &s), PK_OK);
    faultsim_fail_at(1);
    assert_null(pool__sched_client_add(s, NULL));
    faultsim_fail_at(1);
    assert_null(pool__sched_host_add(s, 1, NULL));
    faultsim_fail_at(0);
    assert_int_equal(pool__sched_nclients(s), 0);
    assert_int_equal(pool__sched_nhosts(s), 0);
    pool__sched_free(&s);
    assert_int_equal(faultsim_live(), 0);
    faultsim_remove();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_to_do),
        cmocka_unit_test(test_fair_between_clients),
        cmocka_unit_test(test_three_clients_round_robin),
        cmocka_unit_test(test_hosts_round_robin_within_capacity),
        cmocka_unit_test(test_requeue_on_host_death),
        cmocka_unit_test(test_requeue_keeps_order_across_deaths),
        cmocka_unit_test(test_undo_puts_back_in_front),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_orphans_of_a_dead_host_are_dropped),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
