/*
 * test_pool_faultsim.c - running out of memory inside the pool's calls
 * (after SQLite's faultsim; the hook is tests/lib/faultsim.h).  For N = 1,
 * 2, ... until the call succeeds, the caller's Nth allocation fails inside
 * pool_create, pool_map (int items, and ndarray items that travel out of
 * band and through the arena), pool_map_i64, pool_map_f32_arrays,
 * pool_imap and pool_imap_unordered with pool_iter_next, and
 * pool_apply_async with pool_future_wait (through the socket and through
 * the fast lane), and pool_register once the fork server runs.  Every
 * time:
 *   - the call fails cleanly with what its header promises: PK_ENOMEM, or
 *     for a map PK_OK with each item either its right result or PK_ENOMEM
 *     alone; an iterator ends with PK_ENOMEM (and says so again) or PK_EOF;
 *   - once the pool is destroyed, nothing is left: every allocation made
 *     through the hook is freed, no new fd is open, no process is left
 *     (tests/lib/procfs.h);
 *   - a pool that was created still serves a normal map afterwards.
 *
 * Only the calling thread's allocations fail: the master thread's and the
 * forked fork server's and workers' never do (faultsim.h), so a step is
 * deterministic but for the order in which results arrive, and a fixed
 * chunksize keeps the batches the same from step to step.  Each step gets
 * a fresh one-worker pool, made and destroyed with the hook in place and
 * nothing failing.  test_master_out_of_memory then fails the master
 * thread's Nth allocation instead, under the same checks; its steps follow
 * the master's timing and vary a little from run to run.
 *
 * They found five runtime bugs, now fixed, and fail on each again: a
 * future that lost its outcome, a master that lost one (the map never
 * ended), arena buffers sent empty, the master's own shortage reported as a
 * malformed result, and a registration silently not forwarded.
 *
 * Real processes and sockets, as in every test_pool_* program; each test
 * runs in a child of its own with a hard time limit (tests/lib/runner.h).
 *
 *   build/tests/test_pool_faultsim [NAME-SUBSTRING...]
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
#include <unistd.h>

#include <cmocka.h>

#include "picklepool.h"
#include "lib/faultsim.h"
#include "lib/pool_helpers.h"
#include "lib/procfs.h"
#include "lib/runner.h"

#define NITEMS 10 /* items of each map */
#define CHUNK 3   /* items per batch: 4 batches, the last one short */

/* ---- the steps' frame ---------------------------------------------------- */

static procfs_held_t g_before; /* fds and processes before the steps */
static long g_live;            /* the test's own allocations meanwhile */
static const char *g_call;     /* the call under test, for messages */
static long g_n;               /* its allocation that fails */
static int g_none_ok;          /* the call may make no allocation at all */

/* The message fmt, ... prefixed with the call and the allocation that
 * failed, into buf. */
static void fs_where(char *buf, size_t size, const char *fmt, va_list ap)
{
    char msg[400];
    vsnprintf(msg, sizeof msg, fmt, ap);
    snprintf(buf, size, "%s with allocation %ld failing: %s", g_call, g_n, msg);
}

/* Fails the test, naming the call and the allocation that failed. */
static void fs_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fs_fail(const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    fs_where(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fail_msg("%s", buf);
}

/* Sets up what the first pool of a process sets up for good (the fork
 * server, the plugin in the registry) before the hook goes in, so that it
 * counts neither as live nor as the step's allocations; then installs the
 * hook, and fills *o for the steps' one-worker pools.  The fork server
 * forked before it never sees the hook. */
static void fs_begin(pool_opts_t *o)
{
    if (access(tp_plugin_path(), R_OK) != 0)
        skip();
    pool_t *p = tp_start_n(1);
    int64_t v[2] = {1, 2}, out[2];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 2, VEC_));
    pool_destroy(&p);
    procfs_held_snapshot(&g_before);
    faultsim_install();
    tp_opts_for(o, 1);
}

/* Removes the hook. */
static void fs_end(void)
{
    faultsim_remove();
}

/* The next N to try.  Every N is tried: the calls here make at most a few
 * hundred allocations, so the whole range costs seconds. */
static long fs_next(long n)
{
    return n + 1;
}

/* Arms the failure of allocation n for the step of `call`: of the calling
 * thread's allocations, or with `master` of the other threads' (the pool's
 * master thread is the only one that allocates through the hook). */
static void fs_arm(const char *call, long n, int master)
{
    g_call = call;
    g_n = n;
    if (master)
        faultsim_fail_others_at(n);
    else
        faultsim_fail_at(n);
}

/* Disarms it; returns whether it happened. */
static int fs_disarm(void)
{
    int fired = faultsim_fired();
    faultsim_fail_at(0);
    return fired;
}

/* A normal map, nothing failing, on a pool that went through a step. */
static void fs_serves(pool_t *p)
{
    int64_t v[5] = {-2, 3, 5, 7, 11}, out[5];
    size_t nf = 99;
    pk_error_t err;
    pk_error_clear(&err);
    pk_err_t rc =
        pool_map_i64(p, "examples", "square", v, out, 5, NULL, NULL, &nf, &err);
    if (rc != PK_OK || nf != 0)
        fs_fail("the pool no longer serves: pool_map_i64 %s, %zu failed: %s",
                pk_errname(rc), nf, err.msg);
    for (int i = 0; i < 5; i++)
        if (out[i] != v[i] * v[i])
            fs_fail("the pool no longer serves: square(%" PRId64
                    ") gave %" PRId64,
                    v[i], out[i]);
}

/* Records what the test itself holds through the hook (its input docs)
 * before the steps; fs_nothing_left expects that much live. */
static void fs_baseline(void)
{
    g_live = faultsim_live();
}

/* After pool_destroy (and every result freed): nothing left. */
static void fs_nothing_left(void)
{
    long live = faultsim_live();
    if (live != g_live)
        fs_fail("%ld allocation(s) still live after pool_destroy",
                live - g_live);
    const char *extra = procfs_held_extra(&g_before);
    if (extra)
        fs_fail("after pool_destroy: %s", extra);
}

/* One step: runs the call under test on *pp with allocation n failing
 * (its own fs_arm / fs_disarm) and checks its outcome; returns whether the
 * failure happened (0: the call ran through, the last step).  A step of
 * pool_create gets *pp NULL and sets it when the pool was made. */
typedef int (*fs_step_fn)(pool_t **pp, long n, void *ctx);

/* Steps N = 1, 2, ... until the call runs through, each on a fresh pool
 * with options o (NULL: none, for pool_create), which must still serve
 * afterwards and leave nothing behind.  Returns the number of failing
 * steps. */
static long fs_steps(const pool_opts_t *o, fs_step_fn step, void *ctx)
{
    long n = 1, failures = 0;
    fs_baseline();
    for (;; n = fs_next(n)) {
        pool_t *p = o ? tp_start(o) : NULL;
        int fired = step(&p, n, ctx);
        if (p != NULL) {
            fs_serves(p);
            pool_destroy(&p);
        }
        fs_nothing_left();
        if (!fired)
            break;
        failures++;
    }
    print_message("%s: %ld steps with an allocation failing\n", g_call,
                  failures);
    if (failures == 0 && !g_none_ok)
        fs_fail("%s", "the call made no allocation in the failing thread");
    return failures;
}

/* ---- results ---------------------------------------------------------- */

/* A result check: whether v is the right result of item i. */
typedef int (*fs_want_fn)(const pk_value_t *v, size_t i, void *ctx);

static int want_square(const pk_value_t *v, size_t i, void *ctx)
{
    (void)ctx;
    return v->type == PK_INT && v->u.i == (int64_t)(i * i);
}

static int want_int(const pk_value_t *v, size_t i, void *ctx)
{
    (void)i;
    return v->type == PK_INT && v->u.i == *(const int64_t *)ctx;
}

/* Checks an item of a call that ran while allocation N failed: its right
 * result, or PK_ENOMEM with a message and no value.  Returns whether it
 * failed. */
static int fs_item(const pool_item_t *it, size_t i, fs_want_fn want, void *ctx)
{
    if (it == NULL || it->index != i)
        fs_fail("item %zu is missing or misplaced", i);
    if (it->status == PK_OK) {
        if (it->value == NULL || !want(it->value, i, ctx))
            fs_fail("item %zu: PK_OK with a wrong result", i);
        return 0;
    }
    if (it->status != PK_ENOMEM)
        fs_fail("item %zu: %s (%s), want PK_OK or PK_ENOMEM", i,
                pk_errname(it->status), it->error ? it->error : "no message");
    if (it->value != NULL || it->error == NULL || it->error[0] == '\0')
        fs_fail("item %zu failed with a value or without a message", i);
    return 1;
}

/* The outcome of a whole map call: PK_OK (each item checked by the
 * caller), or PK_ENOMEM when the failure happened. */
static void fs_map_rc(pk_err_t rc, int fired, const pk_error_t *err)
{
    if (rc == PK_OK)
        return;
    if (!fired)
        fs_fail("%s (%s) with nothing failing", pk_errname(rc), err->msg);
    if (rc != PK_ENOMEM)
        fs_fail("%s (%s), want PK_OK or PK_ENOMEM", pk_errname(rc), err->msg);
    if (err->code != PK_ENOMEM || err->msg[0] == '\0')
        fs_fail("PK_ENOMEM, but the error says %s '%s'", pk_errname(err->code),
                err->msg);
}

/* ---- pool_create ------------------------------------------------------- */

typedef struct create_case {
    const char *call; /* for messages */
    pool_opts_t o;
} create_case_t;

static int step_create(pool_t **pp, long n, void *ctx)
{
    create_case_t *c = ctx;
    pk_error_t err;
    pk_error_clear(&err);
    fs_arm(c->call, n, 0);
    pk_err_t rc = pool_create(pp, &c->o, &err);
    int fired = fs_disarm();
    if (rc != PK_OK && *pp != NULL)
        fs_fail("%s, and *pp was set", pk_errname(rc));
    if (!fired && rc != PK_OK)
        fs_fail("%s (%s) with nothing failing", pk_errname(rc), err.msg);
    /* PK_OK with the failure: an allocation it can do without */
    if (rc != PK_OK && rc != PK_ENOMEM)
        fs_fail("%s (%s), want PK_ENOMEM", pk_errname(rc), err.msg);
    if (rc == PK_ENOMEM && err.msg[0] == '\0')
        fs_fail("%s", "PK_ENOMEM without a message");
    return fired;
}

static void test_create_out_of_memory(void **state)
{
    create_case_t c = {.call = "pool_create"};
    fs_begin(&c.o); /* everything: the plugin, lanes, the arena */
    fs_steps(NULL, step_create, &c);

    /* a synthetic topology of its own, two workers, no lanes, no arena */
    c.call = "pool_create (synthetic topology)";
    tp_opts_for(&c.o, 2);
    c.o.topology = "pack:1 core:2 pu:1";
    c.o.spin_us = -1;
    c.o.shm_bytes = SIZE_MAX;
    fs_steps(NULL, step_create, &c);
    fs_end();
}

/* ---- pool_map ---------------------------------------------------------- */

typedef struct map_case {
    const char *call; /* for messages */
    const char *func;
    pk_value_t **items;
    size_t n;
    fs_want_fn want;
    void *want_ctx;
    pool_call_opts_t co;
} map_case_t;

static int step_map(pool_t **pp, long n, void *ctx)
{
    pool_t *p = *pp;
    map_case_t *c = ctx;
    pool_results_t *r = NULL;
    pk_error_t err;
    pk_error_clear(&err);
    fs_arm(c->call, n, 0);
    pk_err_t rc =
        pool_map(p, "examples", c->func, (const pk_value_t *const *)c->items,
                 c->n, &c->co, &r, &err);
    int fired = fs_disarm();
    fs_map_rc(rc, fired, &err);
    if (rc != PK_OK) {
        if (r != NULL)
            fs_fail("%s", "failed, and *out was set");
        return fired;
    }
    if (r == NULL || pool_results_len(r) != c->n)
        fs_fail("PK_OK without %zu results", c->n);
    size_t failed = 0;
    for (size_t i = 0; i < c->n; i++)
        failed +=
            (size_t)fs_item(pool_results_item(r, i), i, c->want, c->want_ctx);
    if (failed != pool_results_failed(r))
        fs_fail("%zu items failed, pool_results_failed says %zu", failed,
                pool_results_failed(r));
    if (!fired && failed != 0)
        fs_fail("%zu items failed with nothing failing", failed);
    pool_results_free(&r);
    return fired;
}

static void test_map_out_of_memory(void **state)
{
    int64_t v[NITEMS];
    pk_value_t **items;
    pool_opts_t o;

    fs_begin(&o);
    for (size_t i = 0; i < NITEMS; i++)
        v[i] = (int64_t)i;
    pk_doc_t *doc = tp_int_items(v, NITEMS, &items);
    map_case_t c = {.call = "pool_map",
                    .func = "square",
                    .items = items,
                    .n = NITEMS,
                    .want = want_square};
    pool_call_opts_init(&c.co);
    c.co.chunksize = CHUNK;
    fs_steps(&o, step_map, &c);
    pk_doc_free(&doc);
    free(items);
    fs_end();
}

/* ---- arrays: out of band, through the arena ----------------------------- */

/* Float32 arrays, two big enough for the arena (64 KiB and up) and two
 * small enough to be pickled in band, and their results as a map with
 * nothing failing gave them. */
#define NARRAYS 4
static const size_t g_lens[NARRAYS] = {70000, 5, 20000, 100};

typedef struct arrays {
    float *in[NARRAYS], *out[NARRAYS], *ref[NARRAYS];
} arrays_t;

static void arrays_make(arrays_t *a)
{
    uint64_t s = 4242;
    memset(a, 0, sizeof *a);
    for (size_t i = 0; i < NARRAYS; i++) {
        a->in[i] = malloc(g_lens[i] * sizeof(float));
        a->out[i] = malloc(g_lens[i] * sizeof(float));
        a->ref[i] = malloc(g_lens[i] * sizeof(float));
        assert_true(a->in[i] && a->out[i] && a->ref[i]);
        for (size_t j = 0; j < g_lens[i]; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            a->in[i][j] = (float)i + (float)(s >> 40) / (float)(1 << 20);
        }
    }
    /* the reference, with the hook in and nothing failing */
    pool_t *p = tp_start_n(1);
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)a->in, a->ref, g_lens,
                                 NARRAYS, VEC_));
    pool_destroy(&p);
}

static void arrays_free(arrays_t *a)
{
    for (size_t i = 0; i < NARRAYS; i++) {
        free(a->in[i]);
        free(a->out[i]);
        free(a->ref[i]);
    }
}

static int want_normalized(const pk_value_t *v, size_t i, void *ctx)
{
    const arrays_t *a = ctx;
    const pk_ndarray_t *nd = v->type == PK_NDARRAY ? v->u.nd : NULL;
    return nd != NULL && nd->nbytes == g_lens[i] * sizeof(float) &&
           memcmp(nd->data, a->ref[i], nd->nbytes) == 0;
}

static void test_map_arrays_out_of_memory(void **state)
{
    arrays_t a;
    pk_value_t *items[NARRAYS];
    pk_dtype_t f4;
    pool_opts_t o;

    fs_begin(&o);
    arrays_make(&a);
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
    for (size_t i = 0; i < NARRAYS; i++) {
        int64_t shape = (int64_t)g_lens[i];
        assert_non_null(items[i] = pk_ndarray(doc, &f4, 1, &shape, a.in[i], 0));
    }
    map_case_t c = {.call = "pool_map (ndarrays)",
                    .func = "normalize",
                    .items = items,
                    .n = NARRAYS,
                    .want = want_normalized,
                    .want_ctx = &a};
    pool_call_opts_init(&c.co);
    c.co.chunksize = 2;
    fs_steps(&o, step_map, &c);
    pk_doc_free(&doc);
    arrays_free(&a);
    fs_end();
}

/* ---- the vector maps ----------------------------------------------------- */

#define SENTINEL INT64_C(-777)

/* Item i of a vector map that ran while allocation N failed: PK_OK with
 * the right output, or PK_ENOMEM with its output untouched.  Returns
 * whether it failed. */
static int fs_vec_item(size_t i, pk_err_t st, int right, int untouched)
{
    if (st == PK_OK && !right)
        fs_fail("item %zu: PK_OK with a wrong result", i);
    if (st != PK_OK && st != PK_ENOMEM)
        fs_fail("item %zu: %s, want PK_OK or PK_ENOMEM", i, pk_errname(st));
    if (st != PK_OK && !untouched)
        fs_fail("item %zu failed but its output was written", i);
    return st != PK_OK;
}

/* The counts of a vector map that ran: *nfailed, and err naming a failure
 * when there was one. */
static void fs_vec_end(size_t failed, size_t nf, const pk_error_t *err,
                       int fired)
{
    if (nf != failed)
        fs_fail("%zu items failed, *nfailed says %zu", failed, nf);
    if (failed > 0 && err->code != PK_ENOMEM)
        fs_fail("%zu items failed, and err says %s", failed,
                pk_errname(err->code));
    if (!fired && failed != 0)
        fs_fail("%zu items failed with nothing failing", failed);
}

static int step_map_i64(pool_t **pp, long n, void *ctx)
{
    pool_t *p = *pp;
    int64_t in[NITEMS], out[NITEMS];
    pk_err_t st[NITEMS];
    size_t nf = 99;
    pk_error_t err;
    pool_call_opts_t co;

    pool_call_opts_init(&co);
    co.chunksize = CHUNK;
    for (size_t i = 0; i < NITEMS; i++) {
        in[i] = (int64_t)i + 1;
        out[i] = SENTINEL;
        st[i] = PK_EIO;
    }
    pk_error_clear(&err);
    fs_arm("pool_map_i64", n, 0);
    pk_err_t rc = pool_map_i64(p, "examples", "square", in, out, NITEMS, &co,
                               st, &nf, &err);
    int fired = fs_disarm();
    fs_map_rc(rc, fired, &err);
    if (rc != PK_OK)
        return fired;
    size_t failed = 0;
    for (size_t i = 0; i < NITEMS; i++)
        failed += (size_t)fs_vec_item(i, st[i], out[i] == in[i] * in[i],
                                      out[i] == SENTINEL);
    fs_vec_end(failed, nf, &err, fired);
    return fired;
}

static int step_map_f32(pool_t **pp, long n, void *ctx)
{
    pool_t *p = *pp;
    arrays_t *a = ctx;
    pk_err_t st[NARRAYS];
    size_t nf = 99;
    pk_error_t err;
    pool_call_opts_t co;

    pool_call_opts_init(&co);
    co.chunksize = 2;
    for (size_t i = 0; i < NARRAYS; i++) {
        memset(a->out[i], 0xff, g_lens[i] * sizeof(float)); /* NaNs */
        st[i] = PK_EIO;
    }
    pk_error_clear(&err);
    fs_arm("pool_map_f32_arrays", n, 0);
    pk_err_t rc = pool_map_f32_arrays(p, "examples", "normalize",
                                      (const float *const *)a->in, a->out,
                                      g_lens, NARRAYS, &co, st, &nf, &err);
    int fired = fs_disarm();
    fs_map_rc(rc, fired, &err);
    if (rc != PK_OK)
        return fired;
    size_t failed = 0;
    for (size_t i = 0; i < NARRAYS; i++) {
        size_t bytes = g_lens[i] * sizeof(float), j = 0;
        const unsigned char *o = (const unsigned char *)a->out[i];
        while (j < bytes && o[j] == 0xff)
            j++;
        failed += (size_t)fs_vec_item(
            i, st[i], memcmp(a->out[i], a->ref[i], bytes) == 0, j == bytes);
    }
    fs_vec_end(failed, nf, &err, fired);
    return fired;
}

static void test_vector_maps_out_of_memory(void **state)
{
    arrays_t a;
    pool_opts_t o;

    fs_begin(&o);
    fs_steps(&o, step_map_i64, NULL);
    arrays_make(&a);
    fs_steps(&o, step_map_f32, &a);
    arrays_free(&a);
    fs_end();
}

/* ---- pool_imap --------------------------------------------------------- */

static pk_value_t *make_int(pk_doc_t *doc, size_t i, void *ctx)
{
    return pk_int(doc, (int64_t)i);
}

/* examples.sleep of 1 ms, but item HUNG_AT hangs (only its deadline can
 * end it) */
#define HUNG_AT 4
static pk_value_t *make_sleep(pk_doc_t *doc, size_t i, void *ctx)
{
    return pk_float(doc, i == HUNG_AT ? HUNG_S : 0.001);
}

static int want_sleep(const pk_value_t *v, size_t i, void *ctx)
{
    (void)ctx;
    return i != HUNG_AT && v->type == PK_FLOAT && v->u.f == 0.001;
}

static pk_value_t *make_array(pk_doc_t *doc, size_t i, void *ctx)
{
    static const pk_dtype_t f4 = {'f', '<', 0, 4};
    int64_t shape = (int64_t)g_lens[i];
    const arrays_t *a = ctx;
    return pk_ndarray(doc, &f4, 1, &shape, a->in[i], 0);
}

typedef struct imap_case {
    const char *call; /* for messages */
    int ordered;
    int master; /* fail the master thread's allocations */
    const char *func;
    size_t n; /* items, at most NITEMS */
    pk_value_t *(*make)(pk_doc_t *doc, size_t i, void *ctx);
    fs_want_fn want;
    void *want_ctx; /* want's context, and make's */
    size_t hung;    /* index of an item that must time out, or SIZE_MAX */
    pool_call_opts_t co;
} imap_case_t;

static int step_imap(pool_t **pp, long n, void *ctx)
{
    pool_t *p = *pp;
    imap_case_t *c = ctx;
    tp_stream_t g = {0, c->n, c->make, c->want_ctx};
    pool_iter_t *it = NULL;
    pool_item_t item;
    pk_error_t err;
    unsigned char seen[NITEMS] = {0};
    size_t got = 0;

    pk_error_clear(&err);
    fs_arm(c->call, n, c->master);
    pk_err_t rc =
        c->ordered ? pool_imap(p, "examples", c->func, tp_stream_next, &g,
                               &c->co, &it, &err)
                   : pool_imap_unordered(p, "examples", c->func, tp_stream_next,
                                         &g, &c->co, &it, &err);
    if (rc != PK_OK) {
        int fired = fs_disarm();
        fs_map_rc(rc, fired, &err);
        if (it != NULL)
            fs_fail("%s", "failed, and *it was set");
        return fired;
    }
    /* Every item takes milliseconds, a hung one its 0.2 s deadline: five
     * seconds without an outcome is a map that stopped. */
    while ((rc = pool_iter_next(it, &item, 5)) == PK_OK) {
        if (item.index >= c->n || seen[item.index]++)
            fs_fail("index %zu delivered twice or out of range", item.index);
        if (c->ordered && item.index != got)
            fs_fail("index %zu delivered at position %zu", item.index, got);
        if (item.index == c->hung && item.status != PK_ETIMEDOUT &&
            item.status != PK_ENOMEM)
            fs_fail("hung item %zu: %s, want PK_ETIMEDOUT (or PK_ENOMEM)",
                    item.index, pk_errname(item.status));
        if (c->master && item.status == PK_EPICKLE && item.error &&
            strstr(item.error, "buffer has 0 bytes"))
            fs_fail("item %zu: %s", item.index, item.error);
        else if (c->master && item.status == PK_EPROTO && item.error &&
                 strstr(item.error, "out of memory"))
            fs_fail("item %zu: %s", item.index, item.error);
        else if (item.index != c->hung)
            fs_item(&item, item.index, c->want, c->want_ctx);
        got++;
    }
    int fired = fs_disarm();
    if (rc == PK_ETIMEDOUT && fired && c->master) {
        /* freeing the iterator cancels the rest */
        fs_fail("no outcome for 5 s after %zu of %zu "
                "items",
                got, c->n);
    } else if (rc == PK_EOF) {
        if (got != c->n)
            fs_fail("PK_EOF after %zu of %zu items", got, c->n);
    } else if (rc == PK_ENOMEM && fired) {
        if (pool_iter_next(it, &item, 0) != PK_ENOMEM)
            fs_fail("%s", "pool_iter_next does not say PK_ENOMEM again");
    } else {
        fs_fail("pool_iter_next: %s after %zu items", pk_errname(rc), got);
    }
    pool_iter_free(&it);
    return fired;
}

/* A case of n items made by make, mapped with examples.FUNC, whose
 * results want checks (with ctx, make's context too); chunks of `chunk`,
 * no timeout, no hung item. */
static void imap_case(imap_case_t *c, const char *call, int ordered, int master,
                      const char *func, size_t n,
                      pk_value_t *(*make)(pk_doc_t *, size_t, void *),
                      fs_want_fn want, void *ctx, size_t chunk)
{
    *c = (imap_case_t){call, ordered, master, func,     n,
                       make, want,    ctx,    SIZE_MAX, {0}};
    pool_call_opts_init(&c->co);
    c->co.chunksize = chunk;
}

/* The steps of the plain case: NITEMS ints squared. */
static void imap_steps(const pool_opts_t *o, const char *call, int ordered,
                       int master)
{
    imap_case_t c;
    imap_case(&c, call, ordered, master, "square", NITEMS, make_int,
              want_square, NULL, CHUNK);
    fs_steps(o, step_imap, &c);
}

static void test_imap_out_of_memory(void **state)
{
    pool_opts_t o;
    fs_begin(&o);
    imap_steps(&o, "pool_imap", 1, 0);
    imap_steps(&o, "pool_imap_unordered", 0, 0);
    fs_end();
}

/* ---- pool_apply_async --------------------------------------------------- */

static long g_laned; /* steps whose call went through the lane */

/* ctx: whether the call is meant for the lane.  A fresh pool's idle worker
 * polls its lane once it is ready (spin_us after its start, then after each
 * piece of work); a moment's pause makes sure it got there. */
static int step_apply(pool_t **pp, long n, void *ctx)
{
    pool_t *p = *pp;
    int lane = *(const int *)ctx;
    pool_future_t *f = NULL;
    pool_item_t item;
    pk_error_t err;
    pk_doc_t *doc = NULL;
    int64_t want = 81;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t *args = pk_tuple_new(doc, 1);
    assert_non_null(args);
    pk_tuple_set(args, 0, pk_int(doc, 9));
    if (lane)
        tp_sleep_s(0.01);
    uint64_t laned = tp_lane_items(p);
    pk_error_clear(&err);
    fs_arm(lane ? "pool_apply_async (lane)" : "pool_apply_async", n, 0);
    pk_err_t rc =
        pool_apply_async(p, "examples", "square", args, NULL, &f, &err);
    pk_err_t wrc = rc == PK_OK ? pool_future_wait(f, 30, &item) : PK_OK;
    int fired = fs_disarm();
    g_laned += tp_lane_items(p) > laned;
    if (rc != PK_OK) {
        fs_map_rc(rc, fired, &err);
        if (f != NULL)
            fs_fail("%s", "failed, and *fut was set");
        pk_doc_free(&doc);
        return fired;
    }
    if (wrc == PK_ENOMEM && fired) {
        pk_err_t again = pool_future_wait(f, 30, &item);
        fs_fail("pool_future_wait returned PK_ENOMEM; waiting again "
                "gave %s with an item %s (%s)",
                pk_errname(again),
                again == PK_OK ? pk_errname(item.status) : "-",
                again == PK_OK && item.error ? item.error : "");
        pool_future_free(&f);
        pk_doc_free(&doc);
        return fired;
    }
    if (wrc != PK_OK)
        fs_fail("pool_future_wait: %s, want PK_OK (an item of its own "
                "status)",
                pk_errname(wrc));
    fs_item(&item, 0, want_int, &want);
    if (!fired && item.status != PK_OK)
        fs_fail("%s with nothing failing", pk_errname(item.status));
    pool_future_free(&f);
    pk_doc_free(&doc);
    return fired;
}

static void test_apply_out_of_memory(void **state)
{
    pool_opts_t o;
    int lane = 0;

    fs_begin(&o);
    /* through the scheduler and the socket */
    o.spin_us = -1;
    fs_steps(&o, step_apply, &lane);
    /* through the fast lane */
    o.spin_us = 200000;
    lane = 1;
    g_laned = 0;
    long steps = fs_steps(&o, step_apply, &lane) + 1;
    print_message("%ld of %ld calls went through the lane\n", g_laned, steps);
    /* A future's doc is made with it: waiting never allocates. */
    fs_end();
}

/* ---- pool_register --------------------------------------------------------
 */

static pk_err_t twice_fn(pool_call_t *call, pk_value_t **result)
{
    int64_t x = 0;
    if (pk_as_int(pk_item(call->args, 0), &x) != PK_OK)
        return PK_ETYPE;
    *result = pk_int(call->doc, 2 * x);
    return *result ? PK_OK : PK_ENOMEM;
}

static int want_twice(const pk_value_t *v, size_t i, void *ctx)
{
    (void)ctx;
    return v->type == PK_INT && v->u.i == 2 * (int64_t)i;
}

/* Registers a new name (the fork server exists already, so it is told
 * too), then maps it on a pool made afterwards: whatever pool_register
 * said PK_OK to, the workers must be able to call.  ctx: the options. */
static int step_register(pool_t **pp, long n, void *ctx)
{
    char name[32];
    int64_t v[3] = {0, 1, 2};
    pk_value_t **items;

    snprintf(name, sizeof name, "twice_%ld", n);
    fs_arm("pool_register", n, 0);
    pk_err_t rc = pool_register("examples", name, twice_fn, NULL);
    int fired = fs_disarm();
    if (rc != PK_OK && (rc != PK_ENOMEM || !fired))
        fs_fail("%s, want PK_OK or PK_ENOMEM", pk_errname(rc));
    if (rc != PK_OK)
        return fired;
    *pp = tp_start(ctx);
    pk_doc_t *doc = tp_int_items(v, 3, &items);
    pool_results_t *r = tp_map_values(*pp, name, items, 3, NULL);
    const pool_item_t *it = pool_results_item(r, 0);
    if (fired && it->status == PK_ENOFUNC)
        fs_fail("PK_OK, then examples.%s: %s", name, it->error);
    else
        for (size_t i = 0; i < 3; i++)
            fs_item(pool_results_item(r, i), i, want_twice, NULL);
    pool_results_free(&r);
    pk_doc_free(&doc);
    free(items);
    return fired;
}

static void test_register_out_of_memory(void **state)
{
    pool_opts_t o;
    fs_begin(&o);
    /* The registry keeps its table in plain malloc memory (it outlives any
     * allocator a program installs), and forwarding a registration to the
     * fork server allocates nothing: there may be no step at all, but a
     * registration must never be lost. */
    g_none_ok = 1;
    fs_steps(NULL, step_register, &o);
    fs_end();
}

/* ---- the master thread -------------------------------------------------- */

/* The same checks with the master thread's Nth allocation failing instead:
 * receiving results, splitting batches, timing out an item.  Its
 * allocations follow the timing of its messages, so the steps differ a
 * little from run to run; pool_iter_next's timeout turns a lost outcome
 * into a failure instead of a hang. */
static void test_master_out_of_memory(void **state)
{
    imap_case_t c;
    pool_opts_t o;

    fs_begin(&o);
    imap_steps(&o, "pool_imap (master)", 1, 1);

    /* arrays: results in the arena, one to a batch */
    arrays_t a;
    arrays_make(&a);
    imap_case(&c, "pool_imap (master, arrays)", 1, 1, "normalize", NARRAYS,
              make_array, want_normalized, &a, 1);
    fs_steps(&o, step_imap, &c);
    arrays_free(&a);

    /* item HUNG_AT times out: its worker is killed and respawned, its
     * batch split around it */
    imap_case(&c, "pool_imap_unordered (master, a timeout)", 0, 1, "sleep",
              NITEMS, make_sleep, want_sleep, NULL, 2);
    c.hung = HUNG_AT;
    c.co.timeout = 0.2;
    fs_steps(&o, step_imap, &c);
    /* A master that cannot allocate an outcome fails the whole call with
     * PK_ENOMEM instead of leaving it waiting; an arena buffer table is on
     * its stack; its own shortage on a RESULT is PK_ENOMEM, not a malformed
     * result. */
    fs_end();
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_create_out_of_memory, 120),
    RUNNER_TEST(test_map_out_of_memory, 120),
    RUNNER_TEST(test_map_arrays_out_of_memory, 120),
    RUNNER_TEST(test_vector_maps_out_of_memory, 120),
    RUNNER_TEST(test_imap_out_of_memory, 120),
    RUNNER_TEST(test_apply_out_of_memory, 120),
    RUNNER_TEST(test_register_out_of_memory, 60),
    RUNNER_TEST(test_master_out_of_memory, 300),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
