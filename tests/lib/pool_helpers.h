/*
 * pool_helpers.h - what the pool tests (tests/test_pool_*.c) share: pools
 * with the examples plugin loaded, checked calls, int items and their
 * results, a generator for the streaming calls, a thread that SIGKILLs
 * working workers, and one that sends SIGINT later.  Names carry a tp_
 * prefix ("test pool"), so they cannot clash with the library's pk_ and
 * pool_ or with a dependency (test programs export their symbols).
 *
 * The plugin is $PICKLEPOOL_BUILD/plugins/examples.so (default build/); a
 * test that starts a pool skips when it is missing.  Failures are cmocka
 * failures (fail_msg), so these run inside a test.
 */
#ifndef PK_TEST_POOL_HELPERS_H
#define PK_TEST_POOL_HELPERS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "picklepool.h"

/* An item that only a timeout, terminate or destroy can end: if the pool
 * fails to end it, the call never returns and the test's hard time limit
 * fails the test.  No wall-clock bound is asserted (timing is bench/'s). */
#define HUNG_S 3600.0

double tp_now_s(void);     /* CLOCK_MONOTONIC, in seconds */
void tp_sleep_s(double s); /* sleeps s seconds, signals or not */

/* The examples plugin's path. */
const char *tp_plugin_path(void);
/* pool_opts_init, `workers` workers, and the examples plugin. */
void tp_opts_for(pool_opts_t *o, int workers);
/* A pool with options o (skips the test when the plugin is missing);
 * fails the test when pool_create fails. */
pool_t *tp_start(const pool_opts_t *o);
pool_t *tp_start_n(int workers);

/* Fails the test unless `call` returns PK_OK (and, for a vector map whose
 * trailing arguments are VEC_, unless every item passed).  E_ is the error
 * argument of the call; VEC_ the trailing arguments of a vector map (no
 * copts, no statuses, and a failed item fails the check). */
#define CHECK_OK(call)                                                         \
    do {                                                                       \
        pk_error_t e_;                                                         \
        size_t nf_ = 0;                                                        \
        pk_error_clear(&e_);                                                   \
        pk_err_t rc_ = (call);                                                 \
        if (rc_ != PK_OK)                                                      \
            fail_msg("%s -> %s: %s", #call, pk_errname(rc_), e_.msg);          \
        if (nf_ != 0)                                                          \
            fail_msg("%s: %zu item(s) failed: %s", #call, nf_, e_.msg);        \
    } while (0)
#define E_ (&e_)
#define VEC_ NULL, NULL, &nf_, E_

/* pool_stats into st[0..cap); returns the number of workers. */
size_t tp_stats(pool_t *p, pool_worker_stats_t *st, size_t cap);
/* Respawns of every slot together. */
unsigned tp_restarts(pool_t *p);
/* Items that came through the fast lane, every slot together. */
uint64_t tp_lane_items(pool_t *p);

/* A doc of n ints v[i]; *items (malloc'd, free it) points into it. */
pk_doc_t *tp_int_items(const int64_t *v, size_t n, pk_value_t ***items);
/* pool_map of examples.FUNC over items; fails the test unless the map ran
 * and gave n results. */
pool_results_t *tp_map_values(pool_t *p, const char *func,
                              pk_value_t *const *items, size_t n,
                              const pool_call_opts_t *co);
/* Checks that item i of r is PK_OK with an int equal to want. */
void tp_expect_int(const pool_results_t *r, size_t i, int64_t want);
/* Checks that item i failed with `status` and a message containing
 * `needle` (NULL: any). */
void tp_expect_fail(const pool_results_t *r, size_t i, pk_err_t status,
                    const char *needle);

/* pool_apply_async of examples.FUNC(arg) (arg and the args tuple in doc);
 * fails the test unless it returns a future. */
pool_future_t *tp_apply1(pool_t *p, const char *func, pk_value_t *arg,
                         pk_doc_t *doc);

/* Input for pool_imap: 0, 1, ... n-1, failing with PK_EINVAL when it gets
 * to fail_at (SIZE_MAX: never).  It records how far input ran ahead of
 * delivery (the caller counts `delivered`), and whether it was called on
 * another thread than `caller`. */
typedef struct tp_gen {
    size_t n, pulled, delivered, max_gap, fail_at;
    pthread_t caller;
    int foreign_thread;
} tp_gen_t;

pk_err_t tp_gen_next(void *ctx, pk_doc_t *doc, pk_value_t **item);

/* Input for pool_imap: make(doc, i, ctx) for i = 0, 1, ... n-1, built in
 * the runtime's doc when pulled (PK_ENOMEM when make returns NULL). */
typedef struct tp_stream {
    size_t next, n;
    pk_value_t *(*make)(pk_doc_t *doc, size_t i, void *ctx);
    void *ctx;
} tp_stream_t;

pk_err_t tp_stream_next(void *stream, pk_doc_t *doc, pk_value_t **item);

/* A thread (tp_killer_main) that, every few ms, SIGKILLs one worker (round
 * robin over the slots) that is mid-map: a process that has completed work
 * since it appeared.  (Killing processes that are still starting is a
 * different test: the pool rightly gives up on workers that keep dying
 * before they are ready.)  Zero it, set p, start it; set stop to end it. */
typedef struct tp_killer {
    pool_t *p;
    atomic_int stop;
    atomic_int kills;     /* read by the test while the thread counts */
    int pid[64];          /* the process last seen in each slot */
    int killed[64];       /* the process last killed in each slot: until its
                             death is reaped, stats may still show it, and
                             kill() succeeds on a zombie */
    uint64_t base[64];    /* the slot's items_done when that pid appeared */
    double slowest_stats; /* seconds of the slowest pool_stats call */
} tp_killer_t;

void *tp_killer_main(void *arg);

/* A thread that sends this process SIGINT after 0.3 s. */
void *tp_sigint_later(void *arg);

/* Fails unless out[0..len) is in[0..len) normalised to mean 0, std 1
 * (examples.normalize); i names the array in the message. */
void tp_expect_normalized(const float *in, const float *out, size_t len,
                          size_t i);

/* Fails unless p's arena is idle: no task block, no result block held by
 * the master or allocated by a worker.  Returns whether p has an arena. */
int tp_expect_arena_idle(pool_t *p);

#endif /* PK_TEST_POOL_HELPERS_H */
