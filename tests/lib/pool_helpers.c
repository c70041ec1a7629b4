/*
 * pool_helpers.c - the pool tests' shared helpers (see pool_helpers.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

#include "pool_helpers.h"

double tp_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tp_sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

const char *tp_plugin_path(void)
{
    static char buf[PATH_MAX];
    const char *build = getenv("PICKLEPOOL_BUILD");

    snprintf(buf, sizeof buf, "%s/plugins/examples.so",
             build && *build ? build : "build");
    return buf;
}

static const char *g_plugins[1];

void tp_opts_for(pool_opts_t *o, int workers)
{
    pool_opts_init(o);
    o->workers = workers;
    g_plugins[0] = tp_plugin_path();
    o->plugins = g_plugins;
    o->nplugins = 1;
}

pool_t *tp_start(const pool_opts_t *o)
{
    pool_t *p = NULL;
    pk_error_t err;

    if (access(o->plugins ? o->plugins[0] : tp_plugin_path(), R_OK) != 0)
        skip();
    pk_error_clear(&err);
    pk_err_t rc = pool_create(&p, o, &err);
    if (rc != PK_OK)
        fail_msg("pool_create: %s: %s", pk_errname(rc), err.msg);
    assert_non_null(p);
    return p;
}

pool_t *tp_start_n(int workers)
{
    pool_opts_t o;
    tp_opts_for(&o, workers);
    return tp_start(&o);
}

size_t tp_stats(pool_t *p, pool_worker_stats_t *st, size_t cap)
{
    size_t n = 0;
    pk_err_t rc = pool_stats(p, st, cap, &n);
    if (rc != PK_OK)
        fail_msg("pool_stats: %s", pk_errname(rc));
    return n;
}

/* Respawns and fast-lane items of every slot together. */
static void totals(pool_t *p, unsigned *restarts, uint64_t *lane_items)
{
    pool_worker_stats_t st[64];
    size_t n = tp_stats(p, st, 64);
    *restarts = 0;
    *lane_items = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        *restarts += st[i].restarts;
        *lane_items += st[i].lane_items;
    }
}

unsigned tp_restarts(pool_t *p)
{
    unsigned r;
    uint64_t l;
    totals(p, &r, &l);
    return r;
}

uint64_t tp_lane_items(pool_t *p)
{
    unsigned r;
    uint64_t l;
    totals(p, &r, &l);
    return l;
}

pk_doc_t *tp_int_items(const int64_t *v, size_t n, pk_value_t ***items)
{
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    *items = malloc(n * sizeof **items);
    assert_non_null(*items);
    for (size_t i = 0; i < n; i++)
        assert_non_null((*items)[i] = pk_int(doc, v[i]));
    return doc;
}

pool_results_t *tp_map_values(pool_t *p, const char *func,
                              pk_value_t *const *items, size_t n,
                              const pool_call_opts_t *co)
{
    pool_results_t *r = NULL;
    pk_error_t err;
    pk_error_clear(&err);
    pk_err_t rc = pool_map(p, "examples", func,
                           (const pk_value_t *const *)items, n, co, &r, &err);
    if (rc != PK_OK)
        fail_msg("pool_map(examples.%s, %zu items): %s: %s", func, n,
                 pk_errname(rc), err.msg);
    assert_non_null(r);
    assert_int_equal(pool_results_len(r), n);
    return r;
}

void tp_expect_int(const pool_results_t *r, size_t i, int64_t want)
{
    const pool_item_t *it = pool_results_item(r, i);
    char buf[128];

    if (it == NULL)
        fail_msg("item %zu: missing", i);
    if (it->index != i)
        fail_msg("item %zu: index %zu", i, it->index);
    if (it->status != PK_OK)
        fail_msg("item %zu: %s: %s", i, pk_errname(it->status),
                 it->error ? it->error : "(no message)");
    if (it->value == NULL || it->value->type != PK_INT ||
        it->value->u.i != want)
        fail_msg("item %zu: want %" PRId64 ", got %s", i, want,
                 it->value ? pk_repr(it->value, buf, sizeof buf) : "NULL");
}

void tp_expect_fail(const pool_results_t *r, size_t i, pk_err_t status,
                    const char *needle)
{
    const pool_item_t *it = pool_results_item(r, i);

    if (it == NULL)
        fail_msg("item %zu: missing", i);
    if (it->index != i)
        fail_msg("item %zu: index %zu", i, it->index);
    if (it->status != status)
        fail_msg("item %zu: want %s, got %s (%s)", i, pk_errname(status),
                 pk_errname(it->status), it->error ? it->error : "no message");
    if (it->value != NULL)
        fail_msg("item %zu: failed but has a value", i);
    if (needle && (it->error == NULL || strstr(it->error, needle) == NULL))
        fail_msg("item %zu: message '%s' does not mention '%s'", i,
                 it->error ? it->error : "(null)", needle);
}

pool_future_t *tp_apply1(pool_t *p, const char *func, pk_value_t *arg,
                         pk_doc_t *doc)
{
    pool_future_t *f = NULL;
    pk_value_t *args = pk_tuple_new(doc, 1);

    assert_non_null(args);
    pk_tuple_set(args, 0, arg);
    CHECK_OK(pool_apply_async(p, "examples", func, args, NULL, &f, E_));
    assert_non_null(f);
    return f;
}

pk_err_t tp_gen_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    tp_gen_t *g = ctx;

    if (!pthread_equal(pthread_self(), g->caller))
        g->foreign_thread++;
    if (g->pulled == g->n) {
        *item = NULL;
        return PK_OK;
    }
    if (g->pulled == g->fail_at)
        return PK_EINVAL;
    if ((*item = pk_int(doc, (int64_t)g->pulled)) == NULL)
        return PK_ENOMEM;
    g->pulled++;
    if (g->pulled - g->delivered > g->max_gap)
        g->max_gap = g->pulled - g->delivered;
    return PK_OK;
}

pk_err_t tp_stream_next(void *stream, pk_doc_t *doc, pk_value_t **item)
{
    tp_stream_t *g = stream;
    *item = NULL;
    if (g->next == g->n)
        return PK_OK;
    *item = g->make(doc, g->next++, g->ctx);
    return *item ? PK_OK : PK_ENOMEM;
}

void *tp_killer_main(void *arg)
{
    tp_killer_t *k = arg;
    pool_worker_stats_t st[64];
    unsigned turn = 0;

    while (!atomic_load(&k->stop) && k->kills < 200) {
        tp_sleep_s(0.003);
        size_t n = 0;
        double t0 = tp_now_s();
        if (pool_stats(k->p, st, 64, &n) != PK_OK || n == 0)
            continue;
        if (tp_now_s() - t0 > k->slowest_stats)
            k->slowest_stats = tp_now_s() - t0;
        for (size_t i = 0; i < n && i < 64; i++)
            if (st[i].pid != k->pid[i]) {
                k->pid[i] = st[i].pid;
                k->base[i] = st[i].items_done;
            }
        size_t s = turn++ % n;
        if (st[s].pid <= 0 || st[s].pid == k->killed[s] ||
            st[s].items_done == k->base[s])
            continue;
        if (kill(st[s].pid, SIGKILL) == 0) {
            k->kills++;
            k->killed[s] = st[s].pid;
            k->pid[s] = -1; /* killed: wait for its replacement */
        }
    }
    return NULL;
}

void *tp_sigint_later(void *arg)
{
    (void)arg;
    tp_sleep_s(0.3);
    kill(getpid(), SIGINT);
    return NULL;
}

void tp_expect_normalized(const float *in, const float *out, size_t len,
                          size_t i)
{
    double m = 0, v = 0;
    for (size_t j = 0; j < len; j++)
        m += in[j];
    m /= (double)len;
    for (size_t j = 0; j < len; j++)
        v += (in[j] - m) * (in[j] - m);
    double sd = sqrt(v / (double)len);
    for (size_t j = 0; j < len; j++) {
        double want = sd > 0 ? (in[j] - m) / sd : 0;
        if (fabs(out[j] - want) > 1e-3)
            fail_msg("array %zu [%zu]: %g, want %g", i, j, out[j], want);
    }
}

/* Internal (runtime/pool/job.c): arena bytes in use. */
int pool__shm_stats(pool_t *p, size_t *task_used, size_t *res_held,
                    size_t *res_alloc);

int tp_expect_arena_idle(pool_t *p)
{
    size_t tu = 1, rh = 1, ra = 1;
    int has = pool__shm_stats(p, &tu, &rh, &ra);
    if (tu != 0 || rh != 0 || ra != 0)
        fail_msg("arena leak: %zu task bytes, %zu result bytes held, %zu "
                 "allocated by workers",
                 tu, rh, ra);
    return has;
}
