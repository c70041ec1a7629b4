/*
 * test_pool_exec.c - exec'd workers (picklepool/worker.h) and raw maps
 * (pool_imap_raw): a pool whose workers are this very program, exec'd by
 * the fork server with `--worker`, serving items through
 * pool_worker_serve with a handler that reverses each item's bytes, fails
 * on "fail", dies on "die" and hangs on "hang".  Ordering, per-item errors,
 * a poison item, a timeout, out-of-band buffers through the arena and the
 * socket, and refusals, against real processes.  Then the same workers
 * forked instead (pool_opts_t.worker_main, pool_global_init_main): the
 * handler says how its worker started ("how"), what it finds in its
 * environment ("env") and at a descriptor of the caller's ("fd"); the
 * fallback to exec'ing when the fork server cannot run the main.
 *
 *   build/tests/test_pool_exec [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/pool_helpers.h"
#include "lib/procfs.h"
#include "lib/runner.h"
#include "picklepool.h"

/* ---- the worker side ---------------------------------------------------- */

/* How this worker started: set by forked_main (a forked worker), not in an
 * exec'd one.  held_fd: a descriptor the caller had open when it started
 * the fork server (static: the fork server has a copy). */
static int in_forked_main, at_fork_ran, held_fd = -1;
static int forked_main_arg;

/* Answers the items that ask about the worker itself; returns the length
 * written to out, or 0 for an ordinary item. */
static size_t about_me(const char *in, size_t len, char *out, size_t size)
{
    if (len == 3 && memcmp(in, "how", 3) == 0)
        return (size_t)snprintf(out, size, "%s",
                                in_forked_main ? "main" : "exec");
    if (len == 3 && memcmp(in, "env", 3) == 0) {
        const char *v = getenv("PK_TEST_ENV");
        return (size_t)snprintf(out, size, "%s", v ? v : "(unset)");
    }
    if (len == 6 && memcmp(in, "memfds", 6) == 0) {
        /* pools' memfds still open here (each worker closes its own once
         * mapped, and must hold no other pool's) */
        int n = 0;
        for (int fd = 0; fd < 1024; fd++) {
            char link[64], target[128];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            ssize_t k = readlink(link, target, sizeof target - 1);
            if (k > 0 && (target[k] = '\0', strstr(target, "memfd:")))
                n++;
        }
        return (size_t)snprintf(out, size, "%d", n);
    }
    if (len == 2 && memcmp(in, "fd", 2) == 0) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", held_fd);
        ssize_t n = readlink(link, out, size - 1);
        if (n < 0)
            n = snprintf(out, size, "(closed)");
        out[n] = '\0';
        return (size_t)n;
    }
    return 0;
}

/* Reverses the item's bytes, appending the call frame and, for each
 * out-of-band buffer, its length and byte sum: "olleh|frame|4096:1234". */
static pk_err_t handler(void *ctx, const pool_raw_call_t *c,
                        pool_raw_out_t *res, pk_error_t *err)
{
    static char out[1 << 16];
    static unsigned char big[1 << 20], small[300];
    static pk_buffer_t bufs[2];
    (void)ctx;
    const char *in = c->item;
    if (c->len == 4 && memcmp(in, "fail", 4) == 0) {
        snprintf(err->msg, sizeof err->msg, "ValueError: item %zu said fail",
                 c->index);
        return PK_EFUNC;
    }
    if (c->len == 3 && memcmp(in, "die", 3) == 0)
        raise(SIGKILL);
    if (c->len == 4 && memcmp(in, "hang", 4) == 0)
        for (;;)
            pause();
    size_t n = about_me(in, c->len, out, sizeof out);
    if (n > 0) {
        res->data = out;
        res->len = n;
        return PK_OK;
    }
    for (size_t i = 0; i < c->len && n < sizeof out - 1; i++)
        out[n++] = in[c->len - 1 - i];
    n += (size_t)snprintf(out + n, sizeof out - n, "|%.*s", (int)c->call_len,
                          (const char *)c->call);
    for (size_t k = 0; k < c->nbufs; k++) {
        unsigned long sum = 0;
        const unsigned char *b = c->bufs[k].data;
        for (size_t i = 0; i < c->bufs[k].len; i++)
            sum += b[i];
        n += (size_t)snprintf(out + n, sizeof out - n, "|%zu:%lu",
                              c->bufs[k].len, sum);
    }
    res->data = out;
    res->len = n;
    if (c->len == 4 && memcmp(in, "bufs", 4) == 0) {
        /* two result buffers: a big one for the arena, a small one for
         * the socket, filled from the item's index so a mix-up shows */
        memset(big, (int)('A' + c->index % 26), sizeof big);
        memset(small, (int)('a' + c->index % 26), sizeof small);
        bufs[0] = (pk_buffer_t){big, sizeof big, 1};
        bufs[1] = (pk_buffer_t){small, sizeof small, 1};
        res->bufs = bufs;
        res->nbufs = 2;
    }
    return PK_OK;
}

static int worker_main(void)
{
    int status = 1;
    pk_error_t err;
    if (pool_worker_serve(handler, NULL, &status, &err) != PK_OK) {
        fprintf(stderr, "test_pool_exec worker: %s\n", err.msg);
        return 2;
    }
    return status;
}

static void forked_at_fork(void)
{
    at_fork_ran = 1;
}

/* The worker main of forked workers: at_fork must have run, and arg is
 * the pool's worker_main_arg. */
static int forked_main(void *arg)
{
    if (!at_fork_ran || arg != &forked_main_arg)
        return 3;
    in_forked_main = 1;
    return worker_main();
}

/* Another main, that no fork server here is started with. */
static int other_main(void *arg)
{
    (void)arg;
    return 4;
}

/* ---- the caller side ---------------------------------------------------- */

static char self_path[PATH_MAX];
static const char *worker_argv[3];

static void exec_opts(pool_opts_t *o, int workers)
{
    pool_opts_init(o);
    o->workers = workers;
    if (realpath("/proc/self/exe", self_path) == NULL)
        fail_msg("realpath /proc/self/exe");
    worker_argv[0] = self_path;
    worker_argv[1] = "--worker";
    worker_argv[2] = NULL;
    o->worker_argv = worker_argv;
}

typedef struct items {
    const char *const *v;
    size_t n, pos;
    const pk_buffer_t *bufs; /* for every item, or NULL */
    size_t nbufs;
} items_t;

static pk_err_t items_next(void *ctx, pool_raw_item_t *item)
{
    items_t *s = ctx;
    if (s->pos == s->n)
        return PK_EOF;
    const char *v = s->v[s->pos++];
    item->data = v;
    item->len = strlen(v);
    item->bufs = s->bufs;
    item->nbufs = s->bufs ? s->nbufs : 0;
    return PK_OK;
}

static pool_iter_t *start_raw(pool_t *p, items_t *s, int ordered,
                              const pool_call_opts_t *co)
{
    pool_iter_t *it = NULL;
    CHECK_OK(pool_imap_raw(p, "F", 1, items_next, s, ordered, co, &it, E_));
    return it;
}

static void expect_reversed(const pool_raw_result_t *r, const char *in,
                            const char *tail)
{
    char want[256];
    size_t n = strlen(in);
    for (size_t i = 0; i < n; i++)
        want[i] = in[n - 1 - i];
    snprintf(want + n, sizeof want - n, "|F%s", tail);
    if (r->status != PK_OK)
        fail_msg("item %zu: %s: %s", r->index, pk_errname(r->status),
                 r->error ? r->error : "");
    if (r->len != strlen(want) || memcmp(r->data, want, r->len) != 0)
        fail_msg("item %zu: got '%.*s', want '%s'", r->index, (int)r->len,
                 (const char *)r->data, want);
}

static void test_exec_raw_map(void **state)
{
    pool_opts_t o;
    exec_opts(&o, 2);
    pool_t *p = tp_start(&o);
    char names[200][24];
    const char *v[200];
    for (int i = 0; i < 200; i++) {
        snprintf(names[i], sizeof names[i], "item-%d", i);
        v[i] = names[i];
    }
    for (int ordered = 1; ordered >= 0; ordered--) {
        items_t s = {v, 200, 0, NULL, 0};
        pool_iter_t *it = start_raw(p, &s, ordered, NULL);
        pool_raw_result_t r;
        unsigned char seen[200] = {0};
        size_t got = 0;
        pk_err_t rc;
        while ((rc = pool_iter_next_raw(it, &r, 30)) == PK_OK) {
            assert_true(r.index < 200 && !seen[r.index]++);
            if (ordered)
                assert_int_equal(r.index, got);
            expect_reversed(&r, v[r.index], "");
            got++;
        }
        assert_int_equal(rc, PK_EOF);
        assert_int_equal(got, 200);
        /* a raw iterator is not read as a decoded one, nor the reverse */
        pool_item_t item;
        assert_int_equal(pool_iter_next(it, &item, 0), PK_EINVAL);
        pool_iter_free(&it);
    }
    /* the workers really are exec'd: their pids run this program */
    pool_worker_stats_t st[2];
    tp_stats(p, st, 2);
    for (int i = 0; i < 2; i++) {
        char exe[64], path[PATH_MAX];
        snprintf(exe, sizeof exe, "/proc/%d/exe", st[i].pid);
        ssize_t n = readlink(exe, path, sizeof path - 1);
        assert_true(n > 0);
        path[n] = '\0';
        assert_string_equal(path, self_path);
    }
    pool_destroy(&p);
}

/* On a pool with retries = 1: a failing item, a poison item and a hung
 * one (timed out) fail alone, and the respawned workers serve. */
static void expect_failures_alone(pool_t *p)
{
    const char *v[] = {"a", "fail", "b", "die", "c", "hang", "d"};
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.chunksize = 1;
    co.timeout = 0.5;
    items_t s = {v, 7, 0, NULL, 0};
    pool_iter_t *it = start_raw(p, &s, 1, &co);
    pool_raw_result_t r;
    size_t got = 0;
    pk_err_t rc;
    while ((rc = pool_iter_next_raw(it, &r, 60)) == PK_OK) {
        assert_int_equal(r.index, got);
        if (got == 1) {
            assert_int_equal(r.status, PK_EFUNC);
            assert_string_equal(r.error, "ValueError: item 0 said fail");
        } else if (got == 3) {
            assert_int_equal(r.status, PK_ECRASHED);
            assert_non_null(strstr(r.error, "SIGKILL"));
        } else if (got == 5) {
            assert_int_equal(r.status, PK_ETIMEDOUT);
        } else {
            expect_reversed(&r, v[got], "");
        }
        got++;
    }
    assert_int_equal(rc, PK_EOF);
    assert_int_equal(got, 7);
    pool_iter_free(&it);
    assert_true(tp_restarts(p) >= 2); /* the poison item's, the timeout's */
    /* the respawned workers serve */
    const char *w[] = {"again"};
    items_t s2 = {w, 1, 0, NULL, 0};
    it = start_raw(p, &s2, 1, NULL);
    CHECK_OK(pool_iter_next_raw(it, &r, 30));
    expect_reversed(&r, "again", "");
    pool_iter_free(&it);
}

static void test_exec_failures(void **state)
{
    pool_opts_t o;
    exec_opts(&o, 2);
    o.retries = 1;
    pool_t *p = tp_start(&o);
    expect_failures_alone(p);
    pool_destroy(&p);
}

/* Buffers reach the handler out of band: a big one through the arena, a
 * small one through the socket, both with their bytes intact. */
static void test_exec_buffers(void **state)
{
    pool_opts_t o;
    exec_opts(&o, 1);
    pool_t *p = tp_start(&o);
    static unsigned char big[1 << 20], small[100];
    unsigned long sbig = 0, ssmall = 0;
    for (size_t i = 0; i < sizeof big; i++)
        sbig += big[i] = (unsigned char)(i * 7);
    for (size_t i = 0; i < sizeof small; i++)
        ssmall += small[i] = (unsigned char)i;
    pk_buffer_t bufs[2] = {{big, sizeof big, 1}, {small, sizeof small, 1}};
    const char *v[] = {"x", "yz"};
    items_t s = {v, 2, 0, bufs, 2};
    pool_iter_t *it = start_raw(p, &s, 1, NULL);
    char tail[128];
    snprintf(tail, sizeof tail, "|%zu:%lu|%zu:%lu", sizeof big, sbig,
             sizeof small, ssmall);
    pool_raw_result_t r;
    for (int i = 0; i < 2; i++) {
        CHECK_OK(pool_iter_next_raw(it, &r, 30));
        expect_reversed(&r, v[i], tail);
    }
    assert_int_equal(pool_iter_next_raw(it, &r, 30), PK_EOF);
    pool_iter_free(&it);

    /* result buffers come back, big ones through the arena */
    const char *w[] = {"bufs", "bufs", "bufs"};
    items_t s2 = {w, 3, 0, NULL, 0};
    it = start_raw(p, &s2, 1, NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(pool_iter_next_raw(it, &r, 30));
        expect_reversed(&r, "bufs", "");
        assert_int_equal(r.nbufs, 2);
        const unsigned char *b0 = r.bufs[0].data, *b1 = r.bufs[1].data;
        assert_int_equal(r.bufs[0].len, 1 << 20);
        assert_int_equal(r.bufs[1].len, 300);
        /* the handler numbers by index in its batch: all of one letter */
        for (size_t k = 1; k < r.bufs[0].len; k++)
            assert_int_equal(b0[k], b0[0]);
        for (size_t k = 1; k < r.bufs[1].len; k++)
            assert_int_equal(b1[k], b1[0]);
        assert_int_equal(b1[0] - 'a', b0[0] - 'A');
    }
    pool_iter_free(&it);
    pool_destroy(&p);
}

/* One raw call: through the fast lane when a worker polls, else the
 * socket; both give the handler's bytes back. */
static void test_exec_apply_raw(void **state)
{
    pool_opts_t o;
    exec_opts(&o, 2);
    o.spin_us = 200000; /* workers poll long enough for the lane to be used */
    pool_t *p = tp_start(&o);
    pool_raw_result_t r;
    for (int i = 0; i < 50; i++) {
        char in[32];
        snprintf(in, sizeof in, "call-%d", i);
        pool_raw_item_t item = {.data = in, .len = strlen(in)};
        pool_future_t *f = NULL;
        CHECK_OK(pool_apply_raw(p, "F", 1, &item, &f, E_));
        memset(in, 'x', sizeof in); /* copied at once: no longer needed */
        snprintf(in, sizeof in, "call-%d", i);
        CHECK_OK(pool_future_wait_raw(f, 30, &r));
        expect_reversed(&r, in, "");
        pool_item_t item2;
        assert_int_equal(pool_future_wait(f, 0, &item2), PK_EINVAL);
        pool_future_free(&f);
    }
    assert_true(tp_lane_items(p) > 0);
    /* its errors are the item's */
    pool_raw_item_t bad = {.data = "fail", .len = 4};
    pool_future_t *f = NULL;
    CHECK_OK(pool_apply_raw(p, "F", 1, &bad, &f, E_));
    CHECK_OK(pool_future_wait_raw(f, 30, &r));
    assert_int_equal(r.status, PK_EFUNC);
    assert_string_equal(r.error, "ValueError: item 0 said fail");
    pool_future_free(&f);
    pool_destroy(&p);
}

static void test_exec_refusals(void **state)
{
    pool_opts_t o;
    pool_t *p = NULL;
    pk_error_t err;
    const char *bare[] = {"python3", NULL};
    const char *env[] = {"X=1", NULL};

    pool_opts_init(&o);
    o.worker_argv = bare; /* no path: execv would not search PATH */
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "worker_argv[0]"));
    pool_opts_init(&o);
    o.worker_env = env;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    /* a command that does not run: the pool says its workers keep dying */
    const char *missing[] = {"/nonexistent/picklepool-worker", NULL};
    pool_opts_init(&o);
    o.workers = 1;
    o.worker_argv = missing;
    assert_int_equal(pool_create(&p, &o, &err), PK_ECRASHED);
    assert_non_null(strstr(err.msg, "start-up"));
    assert_null(p);
    /* pool_worker_serve in a process no pool started */
    int st = -1;
    unsetenv("PICKLEPOOL_WORKER");
    assert_int_equal(pool_worker_serve(handler, NULL, &st, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "PICKLEPOOL_WORKER"));
    setenv("PICKLEPOOL_WORKER", "v1;slot=x", 1);
    assert_int_equal(pool_worker_serve(handler, NULL, &st, &err), PK_EINVAL);
    assert_int_equal(st, -1);
    /* a raw map is refused by a NULL iterator pointer, as every call */
    exec_opts(&o, 1);
    p = tp_start(&o);
    items_t s = {NULL, 0, 0, NULL, 0};
    assert_int_equal(
        pool_imap_raw(p, "F", 1, items_next, &s, 1, NULL, NULL, &err),
        PK_EINVAL);
    pool_destroy(&p);
}

/* ---- forked workers ------------------------------------------------------ */

static const char *forked_env[] = {"PK_TEST_ENV=hello", NULL};

/* exec_opts, and workers forked to run forked_main when they can. */
static void forked_opts(pool_opts_t *o, int workers)
{
    exec_opts(o, workers);
    o->worker_main = forked_main;
    o->worker_main_arg = &forked_main_arg;
    o->worker_env = forked_env;
}

/* The raw result of one item: it must succeed; its bytes into out. */
static void ask(pool_t *p, const char *what, char *out, size_t size)
{
    const char *v[] = {what};
    items_t s = {v, 1, 0, NULL, 0};
    pool_iter_t *it = start_raw(p, &s, 1, NULL);
    pool_raw_result_t r;
    CHECK_OK(pool_iter_next_raw(it, &r, 30));
    if (r.status != PK_OK)
        fail_msg("%s: %s: %s", what, pk_errname(r.status), r.error);
    snprintf(out, size, "%.*s", (int)r.len, (const char *)r.data);
    pool_iter_free(&it);
}

/* /proc/PID/cmdline, NULs as spaces; empty once the process has exited. */
static void cmdline_of(int pid, char *out, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f != NULL) { /* NULL: reaped already */
        n = fread(out, 1, size - 1, f);
        fclose(f);
    }
    for (size_t i = 0; i < n; i++)
        if (out[i] == '\0')
            out[i] = ' ';
    out[n] = '\0';
}

/* Asks every worker of p (n of them, a chunk of one item each) how it
 * started; fails unless each says want.  Also checks that a forked
 * worker runs this program's command line, not --worker. */
static void expect_started(pool_t *p, int n, const char *want)
{
    char v[8][8];
    const char *items[8];
    for (int i = 0; i < n * 4 && i < 8; i++) {
        snprintf(v[i], sizeof v[i], "how");
        items[i] = v[i];
    }
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.chunksize = 1;
    items_t s = {items, (size_t)(n * 4 < 8 ? n * 4 : 8), 0, NULL, 0};
    pool_iter_t *it = start_raw(p, &s, 1, &co);
    pool_raw_result_t r;
    pk_err_t rc;
    while ((rc = pool_iter_next_raw(it, &r, 30)) == PK_OK) {
        assert_int_equal(r.status, PK_OK);
        if (r.len != strlen(want) || memcmp(r.data, want, r.len) != 0)
            fail_msg("item %zu: worker started by '%.*s', not '%s'", r.index,
                     (int)r.len, (const char *)r.data, want);
    }
    assert_int_equal(rc, PK_EOF);
    pool_iter_free(&it);
    pool_worker_stats_t st[8];
    char mine[512], theirs[512];
    cmdline_of(getpid(), mine, sizeof mine);
    for (size_t i = 0; i < tp_stats(p, st, 8); i++) {
        cmdline_of(st[i].pid, theirs, sizeof theirs);
        if (theirs[0] == '\0')
            continue; /* it has exited since (retired): a zombie's is empty */
        if ((strcmp(want, "main") == 0) != (strcmp(mine, theirs) == 0))
            fail_msg("worker %d runs '%s' (this test: '%s')", st[i].pid, theirs,
                     mine);
    }
}

static void test_forked_raw_map(void **state)
{
    pk_error_t err;
    /* the refusal first: a main is needed */
    assert_int_equal(pool_global_init_main(NULL, NULL, &err), PK_EINVAL);
    /* a pipe of the caller's, open when the fork server is started */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    held_fd = pfd[1];
    CHECK_OK(pool_global_init_main(forked_main, forked_at_fork, E_));
    CHECK_OK(pool_global_init_main(forked_main, forked_at_fork, E_));
    pool_opts_t o;
    forked_opts(&o, 1);
    pool_t *other = tp_start(&o); /* its fds are the fork server's too */
    forked_opts(&o, 2);
    pool_t *p = tp_start(&o);
    expect_started(p, 2, "main");
    /* the same raw maps as exec'd workers serve */
    const char *v[] = {"abc", "fail", "de", "bufs"};
    items_t s = {v, 4, 0, NULL, 0};
    pool_iter_t *it = start_raw(p, &s, 1, NULL);
    pool_raw_result_t r;
    for (int i = 0; i < 4; i++) {
        CHECK_OK(pool_iter_next_raw(it, &r, 30));
        if (i == 1)
            assert_int_equal(r.status, PK_EFUNC);
        else
            expect_reversed(&r, v[i], "");
        if (i == 3)
            assert_int_equal(r.nbufs, 2);
    }
    pool_iter_free(&it);
    /* worker_env is in the environment; the caller's pipe end is
     * /dev/null there, so the caller alone holds it: closing it ends the
     * pipe although the workers live */
    char got[256];
    ask(p, "env", got, sizeof got);
    assert_string_equal(got, "hello");
    ask(p, "fd", got, sizeof got);
    assert_string_equal(got, "/dev/null");
    ask(p, "memfds", got, sizeof got);
    assert_string_equal(got, "0");
    pool_destroy(&other);
    close(pfd[1]);
    char c;
    assert_int_equal(read(pfd[0], &c, 1), 0);
    close(pfd[0]);
    pool_destroy(&p);
}

/* Forked workers are supervised as every worker: a poison item, a
 * timeout and retirement replace them, with forked workers again. */
static void test_forked_respawn(void **state)
{
    CHECK_OK(pool_global_init_main(forked_main, forked_at_fork, E_));
    pool_opts_t o;
    forked_opts(&o, 2);
    o.retries = 1;
    o.maxtasksperchild = 3;
    pool_t *p = tp_start(&o);
    expect_failures_alone(p);
    assert_true(tp_restarts(p) >= 3); /* and retirements */
    expect_started(p, 2, "main");
    pool_destroy(&p);
}

/* A fork server that was not started with the main (pool_global_init,
 * or with another main, or a replacement after its death) cannot run it:
 * the pool execs worker_argv, or is refused without one. */
static void test_forked_fallback(void **state)
{
    pk_error_t err;
    pool_opts_t o;
    pool_t *p = NULL;

    CHECK_OK(pool_global_init(E_));
    /* too late: the fork server runs, without a main */
    CHECK_OK(pool_global_init_main(forked_main, forked_at_fork, E_));
    forked_opts(&o, 1);
    p = tp_start(&o);
    expect_started(p, 1, "exec");
    char got[256];
    ask(p, "env", got, sizeof got); /* worker_env reaches exec'd ones too */
    assert_string_equal(got, "hello");
    pool_destroy(&p);
    forked_opts(&o, 1);
    o.worker_argv = NULL;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "pool_global_init_main"));
    assert_null(p);

    /* started with another main */
    CHECK_OK(pool_global_fini(E_));
    CHECK_OK(pool_global_init_main(other_main, NULL, E_));
    forked_opts(&o, 1);
    p = tp_start(&o);
    expect_started(p, 1, "exec");

    /* started with it, then killed: the next pool gets a plain fork
     * server, and execs */
    pool_destroy(&p);
    CHECK_OK(pool_global_fini(E_));
    CHECK_OK(pool_global_init_main(forked_main, forked_at_fork, E_));
    forked_opts(&o, 1);
    p = tp_start(&o);
    expect_started(p, 1, "main");
    pool_worker_stats_t st[1];
    procfs_proc_t pr;
    tp_stats(p, st, 1);
    assert_int_equal(procfs_stat(st[0].pid, &pr), 0);
    int fs = pr.ppid;
    assert_int_equal(kill(fs, SIGKILL), 0);
    /* dead (a zombie until the library reaps it): its channel is closed,
     * so the next pool_create sees that it is gone */
    for (int tries = 0; tries < 1000; tries++) {
        if (procfs_stat(fs, &pr) != 0 || pr.state == 'Z')
            break;
        tp_sleep_s(0.01);
    }
    pool_destroy(&p);
    forked_opts(&o, 1);
    p = tp_start(&o);
    expect_started(p, 1, "exec");
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

/* clang-format off */
static const runner_test_t tests[] = {
    RUNNER_TEST(test_exec_raw_map, 60),
    RUNNER_TEST(test_exec_failures, 90),
    RUNNER_TEST(test_exec_buffers, 60),
    RUNNER_TEST(test_exec_apply_raw, 60),
    RUNNER_TEST(test_exec_refusals, 60),
    RUNNER_TEST(test_forked_raw_map, 60),
    RUNNER_TEST(test_forked_respawn, 90),
    RUNNER_TEST(test_forked_fallback, 90),
};
/* clang-format on */

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--worker") == 0)
        return worker_main();
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
