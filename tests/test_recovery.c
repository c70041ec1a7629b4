/*
 * test_recovery.c - the pool's recovery policy (runtime/pool/recovery.h),
 * with tables and no process: what becomes of a dead worker's batch, when
 * its slot is respawned, and when a pool gives up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pool/recovery.h"

#define R POOL_REC_REQUEUE
#define C POOL_REC_CRASHED
#define T POOL_REC_TIMEDOUT

typedef struct plan_case {
    const char *what;
    pool__rec_batch_t in;
    int kind; /* POOL_REC_KEEP, _DROP, _PIECES */
    int npieces;
    pool__rec_piece_t want[3];
} plan_case_t;

/* One case a paragraph: the table is the test. */
/* clang-format off */
static const plan_case_t plans[] = {
    {"canceled job: dropped, whatever else is true",
     {.count = 8, .canceled = 1, .blamed = 1, .running = 3, .retries = 2},
     POOL_REC_DROP, 0, {{0}}},
    {"a stalled worker killed while idle: batches it held kept whole",
     {.count = 8, .crashes = 1, .blamed = 0, .retries = 2},
     POOL_REC_KEEP, 0, {{0}}},
    {"a stalled worker killed while decoding: split like a crash there",
     {.count = 8, .crashes = 0, .blamed = 1, .running = UINT32_MAX,
      .retries = 2},
     POOL_REC_PIECES, 2, {{0, 4, R, 1}, {4, 8, R, 1}}},
    {"not started, or a worker killed for cancel/retire: kept whole",
     {.count = 8, .crashes = 1, .retries = 2},
     POOL_REC_KEEP, 0, {{0}}},
    {"timeout of item 3: it fails, the rest go back clean",
     {.count = 8, .crashes = 1, .timed_out = 1, .timeout_item = 3,
      .retries = 2},
     POOL_REC_PIECES, 3,
     {{0, 3, R, 0}, {3, 4, T, 0}, {4, 8, R, 0}}},
    {"timeout of the first item",
     {.count = 4, .timed_out = 1, .timeout_item = 0, .retries = 2},
     POOL_REC_PIECES, 2, {{0, 1, T, 0}, {1, 4, R, 0}}},
    {"timeout of the last item",
     {.count = 4, .timed_out = 1, .timeout_item = 3, .retries = 2},
     POOL_REC_PIECES, 2, {{0, 3, R, 0}, {3, 4, T, 0}}},
    {"a timeout index past the batch (stale): kept whole",
     {.count = 4, .timed_out = 1, .timeout_item = 9, .retries = 2},
     POOL_REC_KEEP, 0, {{0}}},
    {"crash on item 5 of 8: item 5 retried alone with one crash",
     {.count = 8, .crashes = 0, .blamed = 1, .running = 5, .retries = 2},
     POOL_REC_PIECES, 3,
     {{0, 5, R, 0}, {5, 6, R, 1}, {6, 8, R, 0}}},
    {"a batch's own count is not the item's: a split batch starts at 1",
     {.count = 8, .crashes = 2, .blamed = 1, .running = 0, .retries = 2},
     POOL_REC_PIECES, 2, {{0, 1, R, 1}, {1, 8, R, 0}}},
    {"a lone item crashing again within the retries: retried",
     {.count = 1, .crashes = 1, .blamed = 1, .running = 0, .retries = 2},
     POOL_REC_PIECES, 1, {{0, 1, R, 2}}},
    {"a lone item past its retries: fails as crashed",
     {.count = 1, .crashes = 2, .blamed = 1, .running = 0, .retries = 2},
     POOL_REC_PIECES, 1, {{0, 1, C, 0}}},
    {"retries 0: the first crash fails the item",
     {.count = 3, .blamed = 1, .running = 1, .retries = 0},
     POOL_REC_PIECES, 3, {{0, 1, R, 0}, {1, 2, C, 0}, {2, 3, R, 0}}},
    {"died decoding a batch of 7: halves, one more crash each",
     {.count = 7, .crashes = 1, .blamed = 1, .running = UINT32_MAX,
      .retries = 2},
     POOL_REC_PIECES, 2, {{0, 3, R, 2}, {3, 7, R, 2}}},
    {"died decoding a batch of one: that item is the poison",
     {.count = 1, .crashes = 2, .blamed = 1, .running = UINT32_MAX,
      .retries = 2},
     POOL_REC_PIECES, 1, {{0, 1, C, 0}}},
};
/* clang-format on */

static void test_plans(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof plans / sizeof plans[0]; i++) {
        const plan_case_t *c = &plans[i];
        pool__rec_plan_t got;
        memset(&got, 0xAB, sizeof got);
        pool__rec_plan_batch(&c->in, &got);
        if ((int)got.kind != c->kind || got.npieces != c->npieces)
            fail_msg("%s: kind %d with %d pieces, want %d with %d", c->what,
                     (int)got.kind, got.npieces, c->kind, c->npieces);
        uint32_t covered = 0;
        for (int k = 0; k < got.npieces; k++) {
            const pool__rec_piece_t *g = &got.piece[k], *w = &c->want[k];
            if (g->from != w->from || g->to != w->to ||
                g->action != w->action || g->crashes != w->crashes)
                fail_msg("%s: piece %d is [%u,%u) action %d crashes %u, "
                         "want [%u,%u) action %d crashes %u",
                         c->what, k, g->from, g->to, (int)g->action, g->crashes,
                         w->from, w->to, (int)w->action, w->crashes);
            /* pieces cover the batch in order, once each, never empty */
            assert_int_equal(g->from, covered);
            assert_true(g->to > g->from);
            covered = g->to;
        }
        if (got.kind == POOL_REC_PIECES)
            assert_int_equal(covered, c->in.count);
    }
}

/* Isolation terminates: splitting a batch that keeps dying while decoding
 * ends with its poison item failed, in about log2(n) + retries rounds, and
 * no other item ever fails. */
static void test_split_isolates(void **state)
{
    (void)state;
    const uint32_t n = 1000, poison = 617;
    pool__rec_batch_t b = {
        .count = n, .blamed = 1, .running = UINT32_MAX, .retries = 2};
    uint32_t first = 0;
    int rounds = 0;
    for (;;) {
        pool__rec_plan_t plan;
        pool__rec_plan_batch(&b, &plan);
        assert_int_equal(plan.kind, POOL_REC_PIECES);
        int next = -1;
        for (int k = 0; k < plan.npieces; k++) {
            const pool__rec_piece_t *x = &plan.piece[k];
            int has = first + x->from <= poison && poison < first + x->to;
            if (x->action == POOL_REC_CRASHED) {
                assert_true(has);
                assert_true(rounds < 15);
                return;
            }
            if (has)
                next = k;
        }
        assert_true(next >= 0);
        first += plan.piece[next].from;
        b.count = plan.piece[next].to - plan.piece[next].from;
        b.crashes = plan.piece[next].crashes;
        rounds++;
        assert_true(rounds < 40);
    }
}

typedef struct respawn_case {
    const char *what;
    pool__rec_death_t in;
    int broken;
    uint64_t delay_ns;
    unsigned quick, startup;
} respawn_case_t;

#define MS 1000000ull

/* clang-format off */
static const respawn_case_t respawns[] = {
    {"a worker killed from outside after it worked: at once",
     {.was_ready = 1, .productive = 1, .lived_ns = 50 * MS, .nworkers = 2,
      .quick_deaths = 3},
     0, 0, 0, 0},
    {"killed by the master (timeout): at once, no quick death",
     {.was_ready = 1, .killed = 1, .lived_ns = 5 * MS, .nworkers = 2,
      .quick_deaths = 5},
     0, 0, 0, 0},
    {"a long-lived idle worker: at once",
     {.was_ready = 1, .lived_ns = 5000 * MS, .nworkers = 2,
      .quick_deaths = 6},
     0, 0, 0, 0},
    {"third quick death: still at once",
     {.was_ready = 1, .lived_ns = 5 * MS, .nworkers = 2, .quick_deaths = 2},
     0, 0, 3, 0},
    {"fourth quick death: 40 ms",
     {.was_ready = 1, .lived_ns = 5 * MS, .nworkers = 2, .quick_deaths = 3},
     0, 40 * MS, 4, 0},
    {"sixth quick death: 160 ms",
     {.was_ready = 1, .lived_ns = 5 * MS, .nworkers = 2, .quick_deaths = 5},
     0, 160 * MS, 6, 0},
    {"many quick deaths: capped at 2 s",
     {.was_ready = 1, .lived_ns = 5 * MS, .nworkers = 2, .quick_deaths = 40},
     0, 2000 * MS, 41, 0},
    {"death before READY counts toward the start-up limit",
     {.was_ready = 0, .lived_ns = 5 * MS, .nworkers = 2, .startup_deaths = 3},
     0, 0, 1, 4},
    {"the fifth start-up death in a row (2 workers: limit 5) breaks it",
     {.was_ready = 0, .lived_ns = 5 * MS, .nworkers = 2, .startup_deaths = 4},
     1, 0, 0, 5},
    {"8 workers: the limit is 16",
     {.was_ready = 0, .lived_ns = 5 * MS, .nworkers = 8, .startup_deaths = 14},
     0, 0, 1, 15},
    {"a clean exit before READY is not a start-up death",
     {.was_ready = 0, .clean = 1, .lived_ns = 5000 * MS, .nworkers = 2,
      .startup_deaths = 4},
     0, 0, 0, 4},
};
/* clang-format on */

static void test_respawn(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof respawns / sizeof respawns[0]; i++) {
        const respawn_case_t *c = &respawns[i];
        pool__rec_respawn_t got;
        pool__rec_respawn(&c->in, &got);
        if (got.broken != c->broken ||
            (!c->broken &&
             (got.delay_ns != c->delay_ns || got.quick_deaths != c->quick)) ||
            got.startup_deaths != c->startup)
            fail_msg("%s: broken %d delay %llu quick %u startup %u; want "
                     "%d %llu %u %u",
                     c->what, got.broken, (unsigned long long)got.delay_ns,
                     got.quick_deaths, got.startup_deaths, c->broken,
                     (unsigned long long)c->delay_ns, c->quick, c->startup);
    }
}

static void test_overdue(void **state)
{
    (void)state;
    assert_false(pool__rec_overdue(100, 0, 0));   /* no deadline */
    assert_false(pool__rec_overdue(100, 50, 50)); /* exactly at it */
    assert_true(pool__rec_overdue(101, 50, 50));
    /* a start stamped after the turn's clock (the worker wrote it since)
     * is not overdue, however the subtraction would wrap */
    assert_false(pool__rec_overdue(100, 200, 50));
}

/* Stalled workers (recovery.h): one case a row. */
typedef struct stall_case {
    const char *what;
    pool__rec_stall_t in;
    enum pool__rec_stall_verdict want;
} stall_case_t;

#define S_ 1000000000ull /* one second */

/* clang-format off */
static const stall_case_t stalls[] = {
    {"holds nothing: live, however long idle",
     {.now_ns = 100 * S_, .progress_ns = 0, .bound_ns = S_, .holds_work = 0,
      .stopped = -1},
     POOL_REC_LIVE},
    {"no bound (stall_timeout < 0, no item timeout): never stalled",
     {.now_ns = 100 * S_, .progress_ns = 0, .bound_ns = 0, .holds_work = 1,
      .stopped = -1},
     POOL_REC_LIVE},
    {"holds work, idle, within the bound: live",
     {.now_ns = 10 * S_, .progress_ns = 9 * S_, .bound_ns = S_,
      .holds_work = 1, .stopped = -1},
     POOL_REC_LIVE},
    {"holds work, idle or decoding past the bound: stalled",
     {.now_ns = 10 * S_ + 1, .progress_ns = 9 * S_, .bound_ns = S_,
      .holds_work = 1, .stopped = -1},
     POOL_REC_STALLED},
    {"running an item past the bound: look whether it is stopped",
     {.now_ns = 100 * S_, .progress_ns = 0, .bound_ns = S_, .holds_work = 1,
      .running_item = 1, .stopped = -1},
     POOL_REC_LOOK},
    {"running an item for hours, not stopped: live (only a timeout bounds "
     "an item)",
     {.now_ns = 7200 * S_, .progress_ns = 0, .bound_ns = S_, .holds_work = 1,
      .running_item = 1, .stopped = 0},
     POOL_REC_LIVE},
    {"running an item, process stopped, past the bound: stalled",
     {.now_ns = 100 * S_, .progress_ns = 0, .bound_ns = S_, .holds_work = 1,
      .running_item = 1, .stopped = 1},
     POOL_REC_STALLED},
    {"stopped but within the bound: live for now",
     {.now_ns = S_, .progress_ns = S_ / 2, .bound_ns = S_, .holds_work = 1,
      .running_item = 1, .stopped = 1},
     POOL_REC_LIVE},
    {"progress stamped after the turn's clock: live",
     {.now_ns = S_, .progress_ns = 2 * S_, .bound_ns = 1, .holds_work = 1,
      .stopped = -1},
     POOL_REC_LIVE},
};
/* clang-format on */

static void test_stall(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof stalls / sizeof stalls[0]; i++) {
        enum pool__rec_stall_verdict got = pool__rec_stall(&stalls[i].in);
        if (got != stalls[i].want)
            fail_msg("%s: verdict %d, want %d", stalls[i].what, (int)got,
                     (int)stalls[i].want);
    }
    /* The bound: the pool's, or a smaller per-item timeout of what the
     * worker holds (its deadline runs from dispatch). */
    assert_int_equal(pool__rec_stall_bound(60 * S_, 0), 60 * S_);
    assert_int_equal(pool__rec_stall_bound(60 * S_, S_), S_);
    assert_int_equal(pool__rec_stall_bound(S_, 60 * S_), S_);
    assert_int_equal(pool__rec_stall_bound(0, S_), S_);
    assert_int_equal(pool__rec_stall_bound(0, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plans),   cmocka_unit_test(test_split_isolates),
        cmocka_unit_test(test_respawn), cmocka_unit_test(test_overdue),
        cmocka_unit_test(test_stall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
