/*
 * test_pool_lifecycle.c - a pool's life from pool_create to
 * pool_destroy: options refused with the documented codes, the API's rules
 * (sized options, PK_EOF, pool_global_fini, a killed fork server),
 * close/join/terminate as in multiprocessing, SIGINT ending a blocked map,
 * initializers, pool_create that does not wait for its workers
 * (start_nowait, pool_wait_ready), maxtasksperchild recycling, destroy with an iterator
 * still open (an abort), and nothing left behind by pool_destroy: no
 * process, zombie, fd, ipc path or shared-memory segment.
 *
 * Real worker processes, real ZeroMQ sockets, real pinning, the examples
 * plugin; no mocks.  Every test runs in a child of its own with a hard time
 * limit (tests/lib/runner.h); the shared helpers are tests/lib/
 * pool_helpers.h.
 *
 *   build/tests/test_pool_lifecycle [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "picklepool.h"
#include "lib/pool_helpers.h"
#include "lib/runner.h"
#include "lib/procfs.h"

/* ---- scratch directories ------------------------------------------------ */

static size_t dir_count(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    size_t n = 0;

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void rm_tree_flat(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        char p[PATH_MAX + 256];
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(path);
}

/* ---- refusals ----------------------------------------------------------- */

static void test_create_refusals(void **state)
{
    pool_opts_t o;
    pool_t *p = NULL;
    pk_error_t err;
    const char *bad_plugin[1] = {"/nonexistent/picklepool/nope.so"};

    tp_opts_for(&o, -1);
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    tp_opts_for(&o, POOL_MAX_WORKERS + 1);
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "workers must be"));
    assert_null(p);

    tp_opts_for(&o, 1);
    o.placement = (pool_placement_t)42;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    tp_opts_for(&o, 1);
    o.timeout = -1;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    tp_opts_for(&o, 1);
    o.shm_threshold = (size_t)1 << 41;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    tp_opts_for(&o, 1);
    o.topology = "not a topology";
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    tp_opts_for(&o, 1);
    o.plugins = bad_plugin;
    pk_error_clear(&err);
    assert_int_equal(pool_create(&p, &o, &err), PK_EIO);
    assert_null(p);
    if (strstr(err.msg, "nope.so") == NULL)
        fail_msg("plugin error does not name the file: '%s'", err.msg);

    pool_destroy(&p); /* NULL: no-op */
    pool_destroy(NULL);
}

/* ---- the API's rules ------------------------------------------------------ */

/* The parent of a worker is the fork server. */
static pid_t fork_server_of(pool_t *p)
{
    pool_worker_stats_t st[1];
    procfs_proc_t pr;
    tp_stats(p, st, 1);
    assert_int_equal(procfs_stat(st[0].pid, &pr), 0);
    assert_true(pr.ppid > 1 && pr.ppid != getpid());
    return (pid_t)pr.ppid;
}

static void test_api_rules(void **state)
{
    pk_error_t err;
    pool_t *p = NULL;
    pool_opts_t o;

    /* options not filled by pool_opts_init are refused, naming it */
    tp_opts_for(&o, 1);
    o.size = 0;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "pool_opts_init"));
    o.size = sizeof o + 8; /* a newer header than this library */
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    p = tp_start_n(1);
    int64_t v[3] = {1, 2, 3}, out[3];
    pk_err_t st[3] = {PK_EIO, PK_EIO, PK_EIO};
    size_t nf = 99;
    pool_call_opts_t co = {0, 0, 0}; /* size 0: not from pool_call_opts_init */
    assert_int_equal(
        pool_map_i64(p, "examples", "square", v, out, 3, &co, st, &nf, &err),
        PK_EINVAL);
    assert_non_null(strstr(err.msg, "pool_call_opts_init"));
    pool_call_opts_init(&co);
    co.chunksize = 1;
    assert_int_equal(
        pool_map_i64(p, "examples", "square", v, out, 3, &co, st, &nf, &err),
        PK_OK);
    assert_int_equal(nf, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(st[i], PK_OK);
        assert_int_equal(out[i], v[i] * v[i]);
    }

    /* the iterator's end is its own code, and stays */
    pk_value_t **items = NULL;
    pk_doc_t *doc = tp_int_items(v, 3, &items);
    tp_gen_t g = {.n = 3, .fail_at = SIZE_MAX, .caller = pthread_self()};
    pool_iter_t *it = NULL;
    pool_item_t item;
    CHECK_OK(
        pool_imap(p, "examples", "square", tp_gen_next, &g, NULL, &it, E_));
    size_t got = 0;
    pk_err_t rc;
    while ((rc = pool_iter_next(it, &item, 30)) == PK_OK)
        got++;
    assert_int_equal(rc, PK_EOF);
    assert_int_equal(got, 3);
    assert_int_equal(pool_iter_next(it, &item, 0), PK_EOF);
    pool_iter_free(&it);

    /* pool_global_fini refuses while a pool exists */
    assert_int_equal(pool_global_fini(&err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "still exist"));
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    pool_destroy(&p);
    CHECK_OK(pool_global_fini(E_));
    CHECK_OK(pool_global_fini(E_)); /* idempotent */
    p = tp_start_n(1);              /* a new fork server */
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[2], 9);

    /* a killed fork server: the pool says so, and a new pool works */
    pid_t fs = fork_server_of(p);
    assert_int_equal(kill(fs, SIGKILL), 0);
    pool_results_t *r = NULL;
    for (int tries = 0; tries < 200; tries++) {
        rc = pool_map(p, "examples", "square", (const pk_value_t *const *)items,
                      3, NULL, &r, &err);
        pool_results_free(&r);
        if (rc != PK_OK)
            break;
        tp_sleep_s(0.05);
    }
    assert_int_equal(rc, PK_ECRASHED);
    assert_non_null(strstr(err.msg, "fork server"));
    pool_destroy(&p);
    p = tp_start_n(1);
    assert_int_not_equal(fork_server_of(p), fs);
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[1], 4);
    pool_destroy(&p);
    CHECK_OK(pool_global_fini(E_));
    pk_doc_free(&doc);
    free(items);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void test_close_join_terminate(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    pool_results_t *r = NULL;
    pk_value_t *one;
    pk_error_t err;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    one = pk_int(doc, 3);

    /* close: no new work, submitted work finishes, join sees workers exit */
    pool_t *p = tp_start_n(0);
    pool_future_t *f = tp_apply1(p, "sleep", pk_float(doc, 0.3), doc);
    double t0 = tp_now_s();
    CHECK_OK(pool_close(p));
    assert_int_equal(pool_map(p, "examples", "square",
                              (const pk_value_t *const *)&one, 1, NULL, &r,
                              &err),
                     PK_ECLOSED);
    assert_null(r);
    pool_future_t *g = NULL;
    pk_value_t *args = pk_tuple_new(doc, 1);
    pk_tuple_set(args, 0, one);
    assert_int_equal(
        pool_apply_async(p, "examples", "square", args, NULL, &g, &err),
        PK_ECLOSED);
    assert_null(g);
    CHECK_OK(pool_join(p, 10));
    if (tp_now_s() - t0 < 0.2)
        fail_msg("join returned after %.3f s, before the 0.3 s task could end",
                 tp_now_s() - t0);
    CHECK_OK(pool_future_wait(f, 0, &item));
    assert_int_equal(item.status, PK_OK);
    pool_future_free(&f);
    assert_int_equal(pool_join(p, 1), PK_OK); /* again: still joined */
    pool_destroy(&p);

    /* terminate: in-flight work is canceled at once */
    p = tp_start_n(0);
    f = tp_apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    tp_sleep_s(0.2);
    pool_terminate(p);
    CHECK_OK(pool_future_wait(f, -1, &item)); /* only terminate ends it */
    assert_int_equal(item.status, PK_ECANCELED);
    CHECK_OK(pool_join(p, -1));
    assert_int_equal(pool_map(p, "examples", "square",
                              (const pk_value_t *const *)&one, 1, NULL, &r,
                              &err),
                     PK_ECLOSED);
    pool_future_free(&f);
    pool_destroy(&p);

    /* join on a running pool that was neither closed nor terminated is
     * refused rather than waiting for ever */
    p = tp_start_n(1);
    assert_int_equal(pool_join(p, 0.2), PK_EINVAL);

    /* destroy with work in flight returns promptly */
    f = tp_apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    pool_future_free(&f);
    pool_destroy(&p); /* kills the worker: never waits for the task */
    pk_doc_free(&doc);
}

/* ---- Ctrl-C ------------------------------------------------------------- */

static void test_sigint_interrupts_map(void **state)
{
    pool_t *p = tp_start_n(0);
    pk_doc_t *doc = NULL;
    pk_value_t *items[40];
    pool_results_t *r = NULL;
    pk_error_t err;
    pthread_t th;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    for (int i = 0; i < 40; i++)
        items[i] = pk_float(doc, HUNG_S); /* only SIGINT can end the map */
    assert_int_equal(pthread_create(&th, NULL, tp_sigint_later, NULL), 0);
    double t0 = tp_now_s();
    pk_err_t rc =
        pool_map(p, "examples", "sleep", (const pk_value_t *const *)items, 40,
                 NULL, &r, &err);
    double took = tp_now_s() - t0;
    pthread_join(th, NULL);
    if (rc != PK_EINTR)
        fail_msg("SIGINT during pool_map: %s after %.2f s", pk_errname(rc),
                 took);
    assert_null(r);
    pool_destroy(&p); /* kills the sleeping workers */
    pk_doc_free(&doc);
}

/* ---- recycling and initializer ------------------------------------------ */

static char g_initdir[PATH_MAX]; /* static: the fork server has a copy */

static void init_marker(void *arg)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%d", (const char *)arg, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write(fd, "ok\n", 3) != 3)
            unlink(path);
        close(fd);
    }
}

static void make_initdir(void)
{
    snprintf(g_initdir, sizeof g_initdir, "/tmp/picklepool-test-init-XXXXXX");
    assert_non_null(mkdtemp(g_initdir));
}

static void test_initializer(void **state)
{
    pool_opts_t o;
    pool_worker_stats_t st[64];
    char path[PATH_MAX + 32];

    make_initdir();
    tp_opts_for(&o, 3);
    o.initializer = init_marker;
    o.initarg = g_initdir;
    pool_t *p = tp_start(&o);
    size_t n = tp_stats(p, st, 64);
    assert_int_equal(n, 3);
    /* create returns when workers are ready, so each ran its initializer */
    for (size_t k = 0; k < n; k++) {
        snprintf(path, sizeof path, "%s/%d", g_initdir, st[k].pid);
        if (access(path, F_OK) != 0)
            fail_msg("worker %zu (pid %d) did not run the initializer", k,
                     st[k].pid);
    }
    assert_int_equal(dir_count(g_initdir), 3);
    pool_destroy(&p);
    rm_tree_flat(g_initdir);
}

static void init_dies(void *arg)
{
    _exit(3);
}

/* The first worker to run it waits (up to 30 s) for g_initdir/go to
 * exist: that slot stays starting while the test looks. */
static void init_first_waits(void *arg)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/first", (const char *)arg);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    close(fd);
    snprintf(path, sizeof path, "%s/go", (const char *)arg);
    for (int i = 0; i < 3000 && access(path, F_OK) != 0; i++)
        usleep(10000);
}

/* pool_wait_ready counts slots, not READYs: a worker recycled after every
 * item says READY again and again while another slot still starts; and it
 * returns PK_ECANCELED, not never, when the pool is terminated first. */
static void test_wait_ready_counts_slots(void **state)
{
    pool_opts_t o;
    int64_t v[8], out[8];
    pk_error_t err;
    char go[PATH_MAX + 32];

    make_initdir();
    snprintf(go, sizeof go, "%s/go", g_initdir);
    tp_opts_for(&o, 2);
    o.initializer = init_first_waits;
    o.initarg = g_initdir;
    o.start_nowait = 1;
    o.maxtasksperchild = 1;
    pool_t *p = tp_start(&o);
    for (int i = 0; i < 8; i++)
        v[i] = i;
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.chunksize = 1;
    /* every item runs on the other slot, a new worker each time */
    CHECK_OK(
        pool_map_i64(p, "examples", "square", v, out, 8, &co, NULL, NULL, E_));
    assert_true(tp_restarts(p) >= 7);
    pk_error_clear(&err);
    assert_int_equal(pool_wait_ready(p, 0, &err), PK_ETIMEDOUT);
    int fd = open(go, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    close(fd);
    CHECK_OK(pool_wait_ready(p, 30, E_));
    pool_destroy(&p);

    /* terminated while a slot still starts: the wait ends */
    unlink(go);
    snprintf(go, sizeof go, "%s/first", g_initdir);
    unlink(go);
    p = tp_start(&o);
    pool_terminate(p);
    pk_error_clear(&err);
    assert_int_equal(pool_wait_ready(p, -1, &err), PK_ECANCELED);
    assert_non_null(strstr(err.msg, "terminated"));
    pool_destroy(&p);
    rm_tree_flat(g_initdir);
}

/* start_nowait: pool_create returns while the workers start; a map made at
 * once runs on them, pool_wait_ready waits for them all (each ran its
 * initializer, each has its pid in the stats); workers that keep dying at
 * start-up fail the waiting work and pool_wait_ready, and do not hang. */
static void test_start_nowait(void **state)
{
    pool_opts_t o;
    pool_worker_stats_t st[64];
    char path[PATH_MAX + 32];
    int64_t v[100], out[100];
    pk_error_t err;

    pk_error_clear(&err);
    assert_int_equal(pool_wait_ready(NULL, 1, &err), PK_EINVAL);
    make_initdir();
    tp_opts_for(&o, 3);
    o.initializer = init_marker;
    o.initarg = g_initdir;
    o.start_nowait = 1;
    pool_t *p = tp_start(&o);
    for (int i = 0; i < 100; i++)
        v[i] = i;
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 100, VEC_));
    for (int i = 0; i < 100; i++)
        assert_int_equal(out[i], (int64_t)i * i);
    CHECK_OK(pool_wait_ready(p, 30, E_));
    CHECK_OK(pool_wait_ready(p, 0, E_)); /* ready stays ready */
    size_t n = tp_stats(p, st, 64);
    assert_int_equal(n, 3);
    for (size_t k = 0; k < n; k++) {
        assert_true(st[k].pid > 0);
        snprintf(path, sizeof path, "%s/%d", g_initdir, st[k].pid);
        if (access(path, F_OK) != 0)
            fail_msg("worker %zu (pid %d) did not run the initializer", k,
                     st[k].pid);
    }
    pool_destroy(&p);

    /* workers that never start: the work and the wait fail, no hang, and
     * an iterator says why it stopped (pool_iter_error) */
    tp_opts_for(&o, 2);
    o.initializer = init_dies;
    o.start_nowait = 1;
    p = tp_start(&o);
    tp_gen_t g = {.n = 50, .fail_at = SIZE_MAX, .caller = pthread_self()};
    pool_iter_t *it = NULL;
    pool_item_t item;
    pk_error_clear(&err);
    pk_err_t rc =
        pool_imap(p, "examples", "square", tp_gen_next, &g, NULL, &it, &err);
    if (rc == PK_OK) {
        assert_int_equal(pool_iter_error(it, &err), PK_OK); /* going on */
        while ((rc = pool_iter_next(it, &item, 30)) == PK_OK)
            assert_int_not_equal(item.status, PK_OK);
        pk_error_clear(&err);
        assert_int_equal(pool_iter_error(it, &err), rc == PK_EOF ? PK_OK : rc);
        if (rc != PK_EOF) {
            assert_int_equal(rc, PK_ECRASHED);
            assert_non_null(strstr(err.msg, "start-up"));
        }
        pool_iter_free(&it);
    } else {
        assert_int_equal(rc, PK_ECRASHED);
    }
    assert_int_equal(pool_iter_error(NULL, NULL), PK_EINVAL);
    size_t nf = 0;
    pk_error_clear(&err);
    rc = pool_map_i64(p, "examples", "square", v, out, 100, NULL, NULL, &nf,
                      &err);
    if (rc == PK_OK && nf == 0)
        fail_msg("a map on workers that never start succeeded");
    assert_int_equal(rc == PK_OK ? PK_ECRASHED : rc, PK_ECRASHED);
    assert_non_null(strstr(err.msg, "start-up"));
    pk_error_clear(&err);
    assert_int_equal(pool_wait_ready(p, 30, &err), PK_ECRASHED);
    assert_non_null(strstr(err.msg, "start-up"));
    pool_destroy(&p);
    rm_tree_flat(g_initdir);
}

static void test_maxtasksperchild(void **state)
{
    const size_t n = 2000;
    pool_opts_t o;
    pool_worker_stats_t st0[64], st[64];
    pool_call_opts_t co = {sizeof co, 10, 0};
    int64_t v[2000];
    pk_value_t **items;

    make_initdir();
    tp_opts_for(&o, 2);
    o.maxtasksperchild = 100;
    o.initializer = init_marker;
    o.initarg = g_initdir;
    pool_t *p = tp_start(&o);
    size_t n0 = tp_stats(p, st0, 64);
    for (size_t i = 0; i < n; i++)
        v[i] = (int64_t)i;
    pk_doc_t *doc = tp_int_items(v, n, &items);
    pool_results_t *r = tp_map_values(p, "square", items, n, &co);
    assert_int_equal(pool_results_failed(r), 0);
    for (size_t i = 0; i < n; i++)
        tp_expect_int(r, i, v[i] * v[i]);
    pool_results_free(&r);

    unsigned restarts = tp_restarts(p);
    if (restarts < 15)
        fail_msg("%zu items at most 100 per worker: %u restarts counted", n,
                 restarts);
    size_t n1 = tp_stats(p, st, 64);
    for (size_t a = 0; a < n1; a++)
        for (size_t b = 0; b < n0; b++)
            if (st[a].pid == st0[b].pid)
                fail_msg("worker pid %d still serving after %u recycles",
                         st[a].pid, restarts);
    /* every process ran the initializer: the first workers plus each
     * replacement (the last replacement may still be starting) */
    double t0 = tp_now_s();
    while (dir_count(g_initdir) < 2 + tp_restarts(p) && tp_now_s() - t0 < 5)
        tp_sleep_s(0.01);
    if (dir_count(g_initdir) != 2 + tp_restarts(p))
        fail_msg("%zu initializer runs for 2 workers and %u restarts",
                 dir_count(g_initdir), tp_restarts(p));
    print_message("2000 items, maxtasksperchild 100: %u restarts\n", restarts);
    pk_doc_free(&doc);
    free(items);
    pool_destroy(&p);
    rm_tree_flat(g_initdir);
}

/* ---- misuse and leftovers ---------------------------------------------- */

/* Destroying a pool with an iterator still open is misuse: it must stop
 * loudly (abort with a message), not leave a use-after-free for later. */
static void test_destroy_with_open_iterator_aborts(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pool_t *p = tp_start_n(1);
        tp_gen_t g = {
            .n = 100000, .fail_at = SIZE_MAX, .caller = pthread_self()};
        pool_iter_t *it = NULL;
        pool_item_t item;
        if (pool_imap(p, "examples", "square", tp_gen_next, &g, NULL, &it,
                      NULL) != PK_OK ||
            pool_iter_next(it, &item, -1) != PK_OK)
            _exit(2);
        pool_destroy(&p); /* aborts */
        _exit(3);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
        fail_msg("child ended with status 0x%x, not SIGABRT", st);
}

static void test_destroy_leaves_nothing(void **state)
{
    static procfs_held_t before;
    char ipc[16][256];
    int pids[256];
    size_t npids = 0, nipc = 0;
    pk_error_t err;

    if (access(tp_plugin_path(), R_OK) != 0)
        skip();
    /* the fork server is the process's, not a pool's: start it first */
    pk_error_clear(&err);
    if (pool_global_init(&err) != PK_OK)
        fail_msg("pool_global_init: %s", err.msg);
    assert_int_equal(pool_global_init(&err), PK_OK); /* idempotent */
    procfs_held_snapshot(&before);
    size_t shm0 = dir_count("/dev/shm");

    for (int round = 0; round < 3; round++) {
        pool_t *p = tp_start_n(round == 1 ? 3 : 0);
        pool_worker_stats_t st[64];
        int64_t v[1000], out[1000];
        for (int i = 0; i < 1000; i++)
            v[i] = i;
        CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 1000, VEC_));

        size_t n = tp_stats(p, st, 64);
        for (size_t k = 0; k < n && npids < 256; k++)
            pids[npids++] = st[k].pid;
        if (round == 0) {
            nipc = procfs_bound_unix_paths(ipc, 16);
            /* a killed worker is respawned: its zombie must be reaped too */
            kill(st[0].pid, SIGKILL);
            double t0 = tp_now_s();
            while (tp_restarts(p) < 1 && tp_now_s() - t0 < 5)
                tp_sleep_s(0.01);
            n = tp_stats(p, st, 64);
            for (size_t k = 0; k < n && npids < 256; k++)
                pids[npids++] = st[k].pid;
        }
        /* an iterator abandoned mid-map and a future never waited for */
        pk_doc_t *doc = NULL;
        pool_future_t *f = NULL;
        assert_int_equal(pk_doc_new(&doc), PK_OK);
        pk_value_t *args = pk_tuple_new(doc, 1);
        pk_tuple_set(args, 0, pk_float(doc, 0.2));
        CHECK_OK(pool_apply_async(p, "examples", "sleep", args, NULL, &f, E_));
        pool_future_free(&f);
        assert_null(f);
        pk_doc_free(&doc);

        pool_destroy(&p);
        assert_null(p);
        pool_destroy(&p);
    }

    /* no worker survives, none is a zombie */
    for (size_t i = 0; i < npids; i++)
        if (pids[i] > 0 && procfs_alive(pids[i]))
            fail_msg("worker pid %d still exists after pool_destroy", pids[i]);
    /* no other new or zombie descendant, no new fd */
    const char *extra = procfs_held_extra(&before);
    if (extra)
        fail_msg("after pool_destroy: %s", extra);

    /* no ipc endpoint, no ipc directory, no shared-memory segment */
    if (nipc == 0)
        print_message("note: the pool bound no unix socket path\n");
    for (size_t i = 0; i < nipc; i++) {
        char dir[256];
        struct stat sb;
        if (stat(ipc[i], &sb) == 0)
            fail_msg("ipc endpoint %s still exists", ipc[i]);
        snprintf(dir, sizeof dir, "%s", ipc[i]);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            if (strcmp(dir, "/tmp") && strcmp(dir, "/run") &&
                stat(dir, &sb) == 0)
                fail_msg("ipc directory %s still exists", dir);
        }
    }
    if (dir_count("/dev/shm") > shm0)
        fail_msg("/dev/shm holds %zu entries, %zu before the pools",
                 dir_count("/dev/shm"), shm0);
}

/* Runs after every test, passed or failed: removes its scratch files. */
static int teardown_scratch(void **state)
{
    if (g_initdir[0] != '\0')
        rm_tree_flat(g_initdir);
    g_initdir[0] = '\0';
    return 0;
}

/* ---- runner ------------------------------------------------------------- */

static const runner_test_t tests[] = {
    RUNNER_TEST(test_create_refusals, 30),
    RUNNER_TEST(test_api_rules, 60),
    RUNNER_TEST(test_destroy_with_open_iterator_aborts, 60),
    RUNNER_TEST(test_destroy_leaves_nothing, 60),
    RUNNER_TEST(test_close_join_terminate, 60),
    RUNNER_TEST(test_initializer, 30),
    RUNNER_TEST(test_start_nowait, 60),
    RUNNER_TEST(test_wait_ready_counts_slots, 60),
    RUNNER_TEST(test_maxtasksperchild, 60),
    RUNNER_TEST(test_sigint_interrupts_map, 30),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests),
                       teardown_scratch);
}
