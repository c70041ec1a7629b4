/*
 * test_pool.c - the worker pool end to end: real worker processes, real
 * ZeroMQ sockets, real pinning, the examples plugin; no mocks.
 *
 * Every test runs in a child of its own (forked from this still
 * single-threaded runner, in a process group of its own), so each gets a
 * fresh fork server and a crash, a hang or a leak stays in its test.  The
 * child arms alarm() with the test's limit; the runner also kills the whole
 * group when a child overruns, and sweeps the group after every test.
 *
 *   build/tests/test_pool [NAME-SUBSTRING...]
 *
 * The plugin is $PICKLEPOOL_BUILD/plugins/examples.so (default build/); the
 * tests skip when it is missing.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hwloc.h>

#include "picklepool.h"

/* ---- helpers ------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static const char *plugin_path(void)
{
    static char buf[PATH_MAX];
    const char *build = getenv("PICKLEPOOL_BUILD");

    snprintf(buf, sizeof buf, "%s/plugins/examples.so",
             build && *build ? build : "build");
    return buf;
}

static const char *g_plugins[1];

static void opts_for(pool_opts_t *o, int workers)
{
    pool_opts_init(o);
    o->workers = workers;
    g_plugins[0] = plugin_path();
    o->plugins = g_plugins;
    o->nplugins = 1;
}

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
/* E_ is the error argument of the call checked by CHECK_OK; VEC_ the
 * trailing arguments of a vector map there (no copts, no statuses, and a
 * failed item fails the check). */
#define E_ (&e_)
#define VEC_ NULL, NULL, &nf_, E_

static pool_t *start(const pool_opts_t *o)
{
    pool_t *p = NULL;
    pk_error_t err;

    if (access(o->plugins ? o->plugins[0] : plugin_path(), R_OK) != 0)
        skip();
    pk_error_clear(&err);
    pk_err_t rc = pool_create(&p, o, &err);
    if (rc != PK_OK)
        fail_msg("pool_create: %s: %s", pk_errname(rc), err.msg);
    assert_non_null(p);
    return p;
}

static pool_t *start_n(int workers)
{
    pool_opts_t o;
    opts_for(&o, workers);
    return start(&o);
}

static size_t stats(pool_t *p, pool_worker_stats_t *st, size_t cap)
{
    size_t n = 0;
    pk_err_t rc = pool_stats(p, st, cap, &n);
    if (rc != PK_OK)
        fail_msg("pool_stats: %s", pk_errname(rc));
    return n;
}

static unsigned total_restarts(pool_t *p)
{
    pool_worker_stats_t st[64];
    size_t n = stats(p, st, 64);
    unsigned r = 0;
    for (size_t i = 0; i < n && i < 64; i++)
        r += st[i].restarts;
    return r;
}

/* A doc of n ints v[i]; items[] points into it. */
static pk_doc_t *int_items(const int64_t *v, size_t n, pk_value_t ***items)
{
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    *items = malloc(n * sizeof **items);
    assert_non_null(*items);
    for (size_t i = 0; i < n; i++)
        assert_non_null((*items)[i] = pk_int(doc, v[i]));
    return doc;
}

static pool_results_t *map_values(pool_t *p, const char *func,
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

/* Checks that item i of r is PK_OK with an int equal to want. */
static void expect_int(const pool_results_t *r, size_t i, int64_t want)
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

/* Checks that item i failed with `status` and a message containing `needle`. */
static void expect_fail(const pool_results_t *r, size_t i, pk_err_t status,
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

/* ---- /proc ------------------------------------------------------------ */

typedef struct cpuset {
    uint64_t bits[16];
} cpuset_t;

static int cpuset_parse(const char *s, cpuset_t *out)
{
    memset(out, 0, sizeof *out);
    while (*s && *s != '\n') {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s)
            return -1;
        if (*end == '-')
            b = strtol(end + 1, &end, 10);
        for (long c = a; c <= b && c < 1024; c++)
            out->bits[c / 64] |= UINT64_C(1) << (c % 64);
        s = *end == ',' ? end + 1 : end;
    }
    return 0;
}

static const char *cpuset_fmt(const cpuset_t *s)
{
    static char bufs[4][256];
    static int k;
    char *b = bufs[k = (k + 1) % 4];
    size_t len = 0;

    b[0] = '\0';
    for (int c = 0; c < 1024; c++) {
        if (!(s->bits[c / 64] >> (c % 64) & 1))
            continue;
        int e = c;
        while (e + 1 < 1024 && (s->bits[(e + 1) / 64] >> ((e + 1) % 64) & 1))
            e++;
        len += (size_t)snprintf(b + len, 256 - len, len ? ",%d" : "%d", c);
        if (e > c)
            len += (size_t)snprintf(b + len, 256 - len, "-%d", e);
        c = e;
    }
    return b;
}

/* Cpus_allowed_list of a process. */
static int proc_cpus(int pid, cpuset_t *out)
{
    char path[64], line[512];
    FILE *f;
    int rc = -1;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            rc = cpuset_parse(line + 18 + strspn(line + 18, " \t"), out);
            break;
        }
    fclose(f);
    return rc;
}

static void self_cpus(cpuset_t *out)
{
    cpu_set_t aff;
    memset(out, 0, sizeof *out);
    assert_int_equal(sched_getaffinity(0, sizeof aff, &aff), 0);
    for (int c = 0; c < CPU_SETSIZE && c < 1024; c++)
        if (CPU_ISSET(c, &aff))
            out->bits[c / 64] |= UINT64_C(1) << (c % 64);
}

static int cpuset_empty(const cpuset_t *s)
{
    for (int i = 0; i < 16; i++)
        if (s->bits[i])
            return 0;
    return 1;
}

/* The cores this process may use, in hwloc's logical order, each as its
 * allowed PUs: what compact placement hands out, worker k getting entry
 * k % n.  Returns n. */
static int allowed_cores(cpuset_t *cores, int max)
{
    hwloc_topology_t t;
    cpuset_t self;
    int n = 0;

    self_cpus(&self);
    assert_int_equal(hwloc_topology_init(&t), 0);
    assert_int_equal(hwloc_topology_load(t), 0);
    hwloc_obj_type_t type = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) > 0
                                ? HWLOC_OBJ_CORE
                                : HWLOC_OBJ_PU;
    int total = hwloc_get_nbobjs_by_type(t, type);
    for (int i = 0; i < total && n < max; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t, type, (unsigned)i);
        cpuset_t s;
        unsigned pu;
        memset(&s, 0, sizeof s);
        hwloc_bitmap_foreach_begin(pu, o->cpuset)
        {
            if (pu < 1024 && (self.bits[pu / 64] >> (pu % 64) & 1))
                s.bits[pu / 64] |= UINT64_C(1) << (pu % 64);
        }
        hwloc_bitmap_foreach_end();
        if (!cpuset_empty(&s))
            cores[n++] = s;
    }
    hwloc_topology_destroy(t);
    return n;
}

typedef struct proc_entry {
    int pid, ppid;
    char state;
} proc_entry_t;

/* Every process on the machine: pid, parent and state. */
static size_t proc_list(proc_entry_t *out, size_t cap)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    size_t n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL && n < cap) {
        char path[300], buf[1024];
        int pid = atoi(de->d_name), fd;
        ssize_t len;
        if (pid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');
        if (rp == NULL ||
            sscanf(rp + 1, " %c %d", &out[n].state, &out[n].ppid) != 2)
            continue;
        out[n++].pid = pid;
    }
    closedir(d);
    return n;
}

/* Descendants of `root` (not root itself), with their states, into out. */
static size_t descendants(int root, proc_entry_t *out, size_t cap)
{
    static proc_entry_t all[65536];
    size_t n = proc_list(all, 65536), k = 0;
    int changed = 1;
    char *mark = calloc(n, 1);

    assert_non_null(mark);
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (mark[i])
                continue;
            int parent_in = all[i].ppid == root;
            for (size_t j = 0; j < n && !parent_in; j++)
                parent_in = mark[j] && all[j].pid == all[i].ppid;
            if (parent_in) {
                mark[i] = 1;
                changed = 1;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (mark[i] && k < cap)
            out[k++] = all[i];
    free(mark);
    return k;
}

static int proc_alive(int pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

typedef struct fd_list {
    size_t n;
    int fd[1024];
    char target[1024][128];
} fd_list_t;

static void fd_snapshot(fd_list_t *l)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;

    assert_non_null(d);
    l->n = 0;
    while ((de = readdir(d)) != NULL && l->n < 1024) {
        char path[300];
        int fd = atoi(de->d_name);
        if (de->d_name[0] == '.' || fd == dirfd(d))
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, l->target[l->n], 127);
        l->target[l->n][len > 0 ? len : 0] = '\0';
        l->fd[l->n++] = fd;
    }
    closedir(d);
}

/* Failure message listing fds in `b` that are not (same number and target)
 * in `a`; NULL when none. */
static const char *fd_extra(const fd_list_t *a, const fd_list_t *b)
{
    static char msg[2048];
    size_t len = 0;

    msg[0] = '\0';
    for (size_t i = 0; i < b->n; i++) {
        int found = 0;
        for (size_t j = 0; j < a->n && !found; j++)
            found = a->fd[j] == b->fd[i] && !strcmp(a->target[j], b->target[i]);
        if (!found && len < sizeof msg - 200)
            len += (size_t)snprintf(msg + len, sizeof msg - len, " %d->%s",
                                    b->fd[i], b->target[i]);
    }
    return len ? msg : NULL;
}

/* Paths of the unix sockets this process has bound (its fds matched
 * against /proc/net/unix by inode): the pool's ipc endpoints. */
static size_t bound_unix_paths(char paths[][256], size_t cap)
{
    fd_list_t *fds = malloc(sizeof *fds);
    FILE *f = fopen("/proc/net/unix", "r");
    char line[1024];
    size_t n = 0;

    assert_non_null(fds);
    fd_snapshot(fds);
    if (f == NULL) {
        free(fds);
        return 0;
    }
    if (fgets(line, sizeof line, f) == NULL) /* header */
        line[0] = '\0';
    while (fgets(line, sizeof line, f) && n < cap) {
        unsigned long inode;
        char path[512] = "";
        if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu %511s", &inode, path) <
                2 ||
            path[0] != '/')
            continue;
        char want[64];
        snprintf(want, sizeof want, "socket:[%lu]", inode);
        for (size_t i = 0; i < fds->n; i++)
            if (strcmp(fds->target[i], want) == 0) {
                snprintf(paths[n++], 256, "%.255s", path);
                break;
            }
    }
    fclose(f);
    free(fds);
    return n;
}

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

    opts_for(&o, -1);
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    opts_for(&o, POOL_MAX_WORKERS + 1);
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "workers must be"));
    assert_null(p);

    opts_for(&o, 1);
    o.placement = (pool_placement_t)42;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    opts_for(&o, 1);
    o.timeout = -1;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    opts_for(&o, 1);
    o.shm_threshold = (size_t)1 << 41;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    opts_for(&o, 1);
    o.topology = "not a topology";
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    opts_for(&o, 1);
    o.plugins = bad_plugin;
    pk_error_clear(&err);
    assert_int_equal(pool_create(&p, &o, &err), PK_EIO);
    assert_null(p);
    if (strstr(err.msg, "nope.so") == NULL)
        fail_msg("plugin error does not name the file: '%s'", err.msg);

    pool_destroy(&p); /* NULL: no-op */
    pool_destroy(NULL);
}

/* ---- ordering at scale -------------------------------------------------- */

static void test_map_1m_in_order(void **state)
{
    const size_t n = 1000000;
    pool_t *p = start_n(0);
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    size_t nf = 12345;

    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        in[i] = (int64_t)i - 500000;
        out[i] = INT64_MIN;
    }
    CHECK_OK(pool_map_i64(p, "examples", "square", in, out, n, NULL, NULL, &nf, E_));
    assert_int_equal(nf, 0);
    for (size_t i = 0; i < n; i++)
        if (out[i] != in[i] * in[i])
            fail_msg("pool_map_i64 item %zu: square(%" PRId64 ") gave %" PRId64,
                     i, in[i], out[i]);

    pk_value_t **items;
    pk_doc_t *doc = int_items(in, n, &items);
    pool_results_t *r = map_values(p, "square", items, n, NULL);
    pk_doc_free(&doc); /* the results must not depend on the input doc */
    assert_int_equal(pool_results_failed(r), 0);
    for (size_t i = 0; i < n; i++)
        expect_int(r, i, in[i] * in[i]);
    pool_results_free(&r);
    assert_null(r);

    /* n == 0 is an empty map, not an error */
    CHECK_OK(pool_map(p, "examples", "square", NULL, 0, NULL, &r, E_));
    assert_int_equal(pool_results_len(r), 0);
    pool_results_free(&r);

    free(items);
    free(in);
    free(out);
    pool_destroy(&p);
    assert_null(p);
}

/* ---- worker death ------------------------------------------------------- */

typedef struct killer {
    pool_t *p;
    atomic_int stop;
    int kills;
    int pid[64];          /* the process last seen in each slot */
    int killed[64];       /* the process last killed in each slot: until its
                             death is reaped, stats may still show it, and
                             kill() succeeds on a zombie */
    uint64_t base[64];    /* the slot's items_done when that pid appeared */
    double slowest_stats; /* seconds of the slowest pool_stats call */
} killer_t;

/* Every few ms, SIGKILL one worker (round robin over the slots) that is
 * mid-map: a process that has completed work since it appeared.  (Killing
 * processes that are still starting is a different test: the pool rightly
 * gives up on workers that keep dying before they are ready.) */
static void *killer_main(void *arg)
{
    killer_t *k = arg;
    pool_worker_stats_t st[64];
    unsigned turn = 0;

    while (!atomic_load(&k->stop) && k->kills < 200) {
        sleep_s(0.003);
        size_t n = 0;
        double t0 = now_s();
        if (pool_stats(k->p, st, 64, &n) != PK_OK || n == 0)
            continue;
        if (now_s() - t0 > k->slowest_stats)
            k->slowest_stats = now_s() - t0;
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

static void test_kill_workers_mid_map(void **state)
{
    const size_t n = 2000;
    pool_opts_t o;
    opts_for(&o, 0);
    o.retries = 1000000; /* outside kills must never fail an item */
    pool_t *p = start(&o);
    int64_t *us = malloc(n * sizeof *us);
    pk_value_t **items;
    killer_t k;
    pthread_t th;

    for (size_t i = 0; i < n; i++)
        us[i] = 200 + (int64_t)i; /* distinct: a misplaced result shows */
    pk_doc_t *doc = int_items(us, n, &items);
    memset(&k, 0, sizeof k);
    k.p = p;
    assert_int_equal(pthread_create(&th, NULL, killer_main, &k), 0);
    pool_results_t *r = map_values(p, "spin", items, n, NULL);
    atomic_store(&k.stop, 1);
    pthread_join(th, NULL);

    if (k.kills < 10)
        fail_msg("only %d workers killed during the map (slowest pool_stats "
                 "call %.3f s: does pool_stats wait for the map?)",
                 k.kills, k.slowest_stats);
    assert_int_equal(pool_results_failed(r), 0);
    for (size_t i = 0; i < n; i++)
        expect_int(r, i, us[i]);
    pool_results_free(&r);

    /* every killed process was replaced (a respawn may still be under way) */
    double t0 = now_s();
    while (total_restarts(p) < (unsigned)k.kills && now_s() - t0 < 5)
        sleep_s(0.01);
    if (total_restarts(p) < (unsigned)k.kills)
        fail_msg("%d workers killed, %u restarts counted", k.kills,
                 total_restarts(p));
    print_message("%d workers killed, %u restarts\n", k.kills,
                  total_restarts(p));

    /* and the pool still serves */
    r = map_values(p, "square", items, 100, NULL);
    for (size_t i = 0; i < 100; i++)
        expect_int(r, i, us[i] * us[i]);
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
    pk_doc_t *doc = int_items(v, n, &items);
    pool_results_t *r = map_values(p, func, items, n, NULL);
    assert_int_equal(pool_results_failed(r), 1);
    for (size_t i = 0; i < n; i++)
        if (i == bad)
            expect_fail(r, i, status, needle);
        else
            expect_int(r, i, v[i]);
    print_message("%s item: %s\n", func, pool_results_item(r, bad)->error);
    pool_results_free(&r);
    pk_doc_free(&doc);
    free(items);
}

static void test_poison_item(void **state)
{
    const size_t n = 1000, bad = 617;
    pool_t *p = start_n(0);
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
    pool_t *p = start_n(0);
    check_lone_failure(p, "exit0", v, 200, 77, PK_ECRASHED, "status 0");
    pool_destroy(&p);
}

/* ---- timeouts ----------------------------------------------------------- */

/* An item that only a timeout, terminate or destroy can end: if the pool
 * fails to end it, the call never returns and the test's hard time limit
 * fails the test.  No wall-clock bound is asserted (timing is bench/'s). */
#define HUNG_S 3600.0

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
    pool_results_t *r = map_values(p, "sleep", items, n, co);
    assert_int_equal(pool_results_failed(r), 1);
    for (size_t i = 0; i < n; i++) {
        if (i == hung) {
            expect_fail(r, i, PK_ETIMEDOUT, NULL);
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

typedef struct sleeps {
    size_t next, n, hung;
} sleeps_t;

static pk_err_t sleeps_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    sleeps_t *g = ctx;
    *item = NULL;
    if (g->next == g->n)
        return PK_OK;
    *item = pk_float(doc, g->next++ == g->hung ? HUNG_S : 0.01);
    return *item ? PK_OK : PK_ENOMEM;
}

/* The same through pool_imap: the deadline holds for streamed items too,
 * in a long input and in one read to its end at once. */
static void check_hung_imap(pool_t *p, const pool_call_opts_t *co, size_t n,
                            size_t hung)
{
    sleeps_t g = {0, n, hung};
    pool_iter_t *it = NULL;
    pool_item_t item;
    size_t got = 0;
    pk_err_t rc;

    double t0 = now_s();
    CHECK_OK(pool_imap(p, "examples", "sleep", sleeps_next, &g, co, &it, E_));
    while ((rc = pool_iter_next(it, &item, 60)) == PK_OK) {
        if (item.index != got++)
            fail_msg("imap delivered item %zu at %zu", item.index, got - 1);
        if (item.index == g.hung && item.status != PK_ETIMEDOUT)
            fail_msg("imap: hung item: %s after %.1f s (want ETIMEDOUT)",
                     pk_errname(item.status), now_s() - t0);
        if (item.index != g.hung && item.status != PK_OK)
            fail_msg("imap: item %zu: %s", item.index, pk_errname(item.status));
    }
    assert_int_equal(rc, PK_EOF);
    assert_int_equal(got, n);
    pool_iter_free(&it);
}

static void test_hung_item_times_out(void **state)
{
    pool_call_opts_t co = {sizeof co, 0, 0.5};
    pool_t *p = start_n(0);

    check_hung(p, &co); /* per-call timeout */
    check_hung_imap(p, &co, 20, 7);
    check_hung_imap(p, &co, 3, 1);
    int64_t v[3] = {1, 2, 3}, out[3];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[2], 9);
    pool_destroy(&p);

    pool_opts_t o;
    opts_for(&o, 0);
    o.timeout = 0.5;
    p = start(&o);
    check_hung(p, NULL); /* the pool's timeout */
    check_hung_imap(p, NULL, 20, 7);
    check_hung_imap(p, NULL, 3, 1);
    pool_destroy(&p);
}

/* ---- function errors ---------------------------------------------------- */

static void test_unknown_function(void **state)
{
    const size_t n = 50;
    pool_t *p = start_n(0);
    int64_t v[50], out[50];
    pk_value_t **items;

    for (size_t i = 0; i < n; i++)
        v[i] = (int64_t)i;
    pk_doc_t *doc = int_items(v, n, &items);

    pool_results_t *r = map_values(p, "no_such_function", items, n, NULL);
    assert_int_equal(pool_results_failed(r), n);
    for (size_t i = 0; i < n; i++)
        expect_fail(r, i, PK_ENOFUNC, "no_such_function");
    pool_results_free(&r);

    CHECK_OK(pool_map(p, "no_such_module", "square",
                      (const pk_value_t *const *)items, n, NULL, &r, E_));
    for (size_t i = 0; i < n; i++)
        expect_fail(r, i, PK_ENOFUNC, "no_such_module");
    pool_results_free(&r);

    size_t nf = 0;
    pk_err_t rc =
        pool_map_i64(p, "examples", "nope", v, out, n, NULL, NULL, &nf, NULL);
    if (rc != PK_OK)
        fail_msg("pool_map_i64 of an unknown function: %s", pk_errname(rc));
    assert_int_equal(nf, n);

    /* the pool still serves */
    r = map_values(p, "square", items, n, NULL);
    for (size_t i = 0; i < n; i++)
        expect_int(r, i, v[i] * v[i]);
    pool_results_free(&r);

    pk_doc_free(&doc);
    free(items);
    pool_destroy(&p);
}

static void test_function_error(void **state)
{
    const size_t n = 100;
    pool_t *p = start_n(0);
    pk_doc_t *doc = NULL;
    pk_value_t *items[100];
    char msg[64];

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    for (size_t i = 0; i < n; i++) {
        snprintf(msg, sizeof msg, "boom number %zu", i);
        items[i] = i % 3 ? pk_cstr(doc, msg) : pk_int(doc, (int64_t)i);
    }
    /* fail() fails on anything: strings with their text, ints with repr */
    pool_results_t *r = map_values(p, "fail", items, n, NULL);
    assert_int_equal(pool_results_failed(r), n);
    for (size_t i = 0; i < n; i++) {
        if (i % 3 == 0) {
            snprintf(msg, sizeof msg, "%zu", i);
            expect_fail(r, i, PK_EFUNC, msg);
        } else {
            snprintf(msg, sizeof msg, "ValueError: boom number %zu", i);
            expect_fail(r, i, PK_EFUNC, msg);
        }
    }
    pool_results_free(&r);

    /* a bad argument is the item's error too */
    r = map_values(p, "square", items, 6, NULL);
    expect_int(r, 0, 0);
    expect_fail(r, 1, PK_ETYPE, "square");
    expect_int(r, 3, 9);
    pool_results_free(&r);

    pk_doc_free(&doc);
    pool_destroy(&p);
}

/* ---- placement ---------------------------------------------------------- */

/* Each worker's real affinity equals what compact placement predicts. */
static void check_compact(pool_t *p, int nworkers)
{
    cpuset_t cores[1024], got, claimed;
    int nc = allowed_cores(cores, 1024);
    pool_worker_stats_t st[64];
    size_t n = stats(p, st, 64);

    assert_int_equal(n, (size_t)nworkers);
    for (size_t k = 0; k < n; k++) {
        const cpuset_t *want = &cores[k % (size_t)nc];
        if (st[k].slot != (int)k)
            fail_msg("stats entry %zu is slot %d", k, st[k].slot);
        if (st[k].pid <= 0)
            fail_msg("worker %zu has no pid", k);
        if (proc_cpus(st[k].pid, &got) < 0)
            fail_msg("worker %zu (pid %d): cannot read its affinity", k,
                     st[k].pid);
        if (memcmp(&got, want, sizeof got) != 0)
            fail_msg(
                "worker %zu (pid %d) may run on CPUs %s, compact placement "
                "gives it %s",
                k, st[k].pid, cpuset_fmt(&got), cpuset_fmt(want));
        if (st[k].core != (int)(k % (size_t)nc))
            fail_msg("worker %zu reports core %d, want %zu", k, st[k].core,
                     k % (size_t)nc);
        if (cpuset_parse(st[k].cpus, &claimed) < 0 ||
            memcmp(&claimed, want, sizeof claimed) != 0)
            fail_msg("worker %zu reports cpus '%s', want %s", k, st[k].cpus,
                     cpuset_fmt(want));
    }
}

static void test_placement_compact(void **state)
{
    cpuset_t cores[1024];
    int nc = allowed_cores(cores, 1024);
    pool_t *p = start_n(0);

    check_compact(p, nc); /* default: one worker per allowed core */
    pool_destroy(&p);
}

static void test_placement_spread_and_none(void **state)
{
    cpuset_t cores[1024], self, got;
    int nc = allowed_cores(cores, 1024);
    pool_opts_t o;
    pool_worker_stats_t st[64];

    opts_for(&o, 0);
    o.placement = POOL_PLACE_NONE;
    pool_t *p = start(&o);
    self_cpus(&self);
    size_t n = stats(p, st, 64);
    assert_int_equal(n, (size_t)nc);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(proc_cpus(st[k].pid, &got), 0);
        if (memcmp(&got, &self, sizeof got) != 0)
            fail_msg("placement none: worker %zu may run on %s, want all of %s",
                     k, cpuset_fmt(&got), cpuset_fmt(&self));
        assert_int_equal(st[k].core, -1);
    }
    pool_destroy(&p);

    /* spread: one whole allowed core each, all different */
    opts_for(&o, 0);
    o.placement = POOL_PLACE_SPREAD;
    p = start(&o);
    n = stats(p, st, 64);
    assert_int_equal(n, (size_t)nc);
    int used[1024] = {0};
    for (size_t k = 0; k < n; k++) {
        int which = -1;
        assert_int_equal(proc_cpus(st[k].pid, &got), 0);
        for (int c = 0; c < nc; c++)
            if (memcmp(&got, &cores[c], sizeof got) == 0)
                which = c;
        if (which < 0)
            fail_msg("placement spread: worker %zu may run on %s, not one core",
                     k, cpuset_fmt(&got));
        if (used[which]++)
            fail_msg("placement spread: two workers on core %d", which);
    }
    pool_destroy(&p);
}

static void test_more_workers_than_cores(void **state)
{
    const size_t n = 200000;
    pool_t *p = start_n(5);
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);

    check_compact(p, 5); /* wraps round: cores 0, 1, 0, 1, 0 on 2 cores */
    for (size_t i = 0; i < n; i++)
        in[i] = (int64_t)i * 3 - 7;
    CHECK_OK(pool_map_i64(p, "examples", "square", in, out, n, VEC_));
    for (size_t i = 0; i < n; i++)
        if (out[i] != in[i] * in[i])
            fail_msg("item %zu wrong", i);

    pool_worker_stats_t st[64];
    size_t nw = stats(p, st, 64);
    uint64_t done = 0;
    for (size_t k = 0; k < nw; k++)
        done += st[k].items_done;
    if (done < n)
        fail_msg("workers report %" PRIu64 " items done, %zu were mapped", done,
                 n);
    free(in);
    free(out);
    pool_destroy(&p);
}

/* A synthetic topology (nothing is bound) still decides each worker's core
 * and CPU list as pool_stats reports them. */
static void test_placement_synthetic(void **state)
{
    static const char *const compact[4] = {"0-1", "2-3", "4-5", "6-7"};
    pool_opts_t o;
    pool_worker_stats_t st[64];

    opts_for(&o, 4);
    o.topology = "pack:2 core:2 pu:2";
    pool_t *p = start(&o);
    size_t n = stats(p, st, 64);
    assert_int_equal(n, 4);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(st[k].core, (int)k);
        assert_string_equal(st[k].cpus, compact[k]);
    }
    int64_t v[3] = {1, 2, 3}, out[3];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[2], 9);
    pool_destroy(&p);

    /* spread: 2 workers land on different packages */
    opts_for(&o, 2);
    o.topology = "pack:2 core:2 pu:2";
    o.placement = POOL_PLACE_SPREAD;
    p = start(&o);
    n = stats(p, st, 64);
    assert_int_equal(n, 2);
    if (st[0].core / 2 == st[1].core / 2)
        fail_msg("spread put both workers on package %d (cores %d, %d)",
                 st[0].core / 2, st[0].core, st[1].core);
    pool_destroy(&p);
}

/* The pool honours the affinity mask it was started with. */
static void test_placement_honours_affinity(void **state)
{
    cpuset_t self, got;
    cpu_set_t one;
    int last = -1;

    self_cpus(&self);
    for (int c = 0; c < 1024; c++)
        if (self.bits[c / 64] >> (c % 64) & 1)
            last = c;
    CPU_ZERO(&one);
    CPU_SET(last, &one);
    /* before the first pool of this (per-test) process: the fork server and
     * the topology are loaded afterwards */
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    pool_t *p = start_n(0);
    pool_worker_stats_t st[64];
    size_t n = stats(p, st, 64);
    assert_int_equal(n, 1);
    assert_int_equal(proc_cpus(st[0].pid, &got), 0);
    if (!(got.bits[last / 64] >> (last % 64) & 1) ||
        got.bits[last / 64] != (UINT64_C(1) << (last % 64)))
        fail_msg("worker may run on %s, the process was limited to CPU %d",
                 cpuset_fmt(&got), last);
    int64_t v[2] = {5, 6}, out[2];
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 2, VEC_));
    assert_int_equal(out[1], 36);
    pool_destroy(&p);
}

/* ---- nothing left behind ------------------------------------------------ */

static void test_destroy_leaves_nothing(void **state)
{
    static fd_list_t before, after;
    static proc_entry_t d0[256], d1[256], live[256];
    char ipc[16][256];
    int pids[256];
    size_t npids = 0, nipc = 0;
    pk_error_t err;

    if (access(plugin_path(), R_OK) != 0)
        skip();
    /* the fork server is the process's, not a pool's: start it first */
    pk_error_clear(&err);
    if (pool_global_init(&err) != PK_OK)
        fail_msg("pool_global_init: %s", err.msg);
    assert_int_equal(pool_global_init(&err), PK_OK); /* idempotent */
    fd_snapshot(&before);
    size_t nd0 = descendants(getpid(), d0, 256);
    size_t shm0 = dir_count("/dev/shm");

    for (int round = 0; round < 3; round++) {
        pool_t *p = start_n(round == 1 ? 3 : 0);
        pool_worker_stats_t st[64];
        int64_t v[1000], out[1000];
        for (int i = 0; i < 1000; i++)
            v[i] = i;
        CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 1000, VEC_));

        size_t n = stats(p, st, 64);
        for (size_t k = 0; k < n && npids < 256; k++)
            pids[npids++] = st[k].pid;
        if (round == 0) {
            nipc = bound_unix_paths(ipc, 16);
            /* a killed worker is respawned: its zombie must be reaped too */
            kill(st[0].pid, SIGKILL);
            double t0 = now_s();
            while (total_restarts(p) < 1 && now_s() - t0 < 5)
                sleep_s(0.01);
            n = stats(p, st, 64);
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
        if (pids[i] > 0 && proc_alive(pids[i]))
            fail_msg("worker pid %d still exists after pool_destroy", pids[i]);
    size_t nd1 = descendants(getpid(), d1, 256);
    size_t nlive = 0;
    for (size_t i = 0; i < nd1; i++) {
        int old = 0;
        for (size_t j = 0; j < nd0 && !old; j++)
            old = d0[j].pid == d1[i].pid;
        if (!old || d1[i].state == 'Z')
            live[nlive++] = d1[i];
    }
    if (nlive)
        fail_msg("%zu process(es) left behind, e.g. pid %d (parent %d, state "
                 "%c)",
                 nlive, live[0].pid, live[0].ppid, live[0].state);
    if (nd1 != nd0)
        fail_msg("%zu descendants before the pools, %zu after", nd0, nd1);

    /* no new fd */
    fd_snapshot(&after);
    const char *extra = fd_extra(&before, &after);
    if (extra)
        fail_msg("fds left open after pool_destroy:%s", extra);

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

/* ---- streaming ---------------------------------------------------------- */

typedef struct gen {
    size_t n, pulled, delivered, max_gap, fail_at;
    pthread_t caller;
    int foreign_thread;
} gen_t;

static pk_err_t gen_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    gen_t *g = ctx;

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

/* Destroying a pool with an iterator still open is misuse: it must stop
 * loudly (abort with a message), not leave a use-after-free for later. */
static void test_destroy_with_open_iterator_aborts(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pool_t *p = start_n(1);
        gen_t g = {.n = 100000, .fail_at = SIZE_MAX,
                   .caller = pthread_self()};
        pool_iter_t *it = NULL;
        pool_item_t item;
        if (pool_imap(p, "examples", "square", gen_next, &g, NULL, &it,
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

static void check_imap(pool_t *p, int ordered)
{
    const size_t n = 100000, bound = 10000;
    pool_call_opts_t co = {sizeof co, 100, 0};
    gen_t g = {.n = n, .fail_at = SIZE_MAX, .caller = pthread_self()};
    pool_iter_t *it = NULL;
    pool_item_t item;
    unsigned char *seen = calloc(n, 1);
    pk_err_t rc;

    assert_non_null(seen);
    if (ordered)
        CHECK_OK(
            pool_imap(p, "examples", "square", gen_next, &g, &co, &it, E_));
    else
        CHECK_OK(pool_imap_unordered(p, "examples", "square", gen_next, &g, &co,
                                     &it, E_));
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
    pool_t *p = start_n(0);

    check_imap(p, 1);
    check_imap(p, 0);
    pool_destroy(&p);
}

/* Items of random length, one per batch, finish out of order on two
 * workers: imap must still deliver in order, imap_unordered each once. */
typedef struct spins {
    size_t next, n;
} spins_t;

static int64_t spin_us(size_t i)
{
    return (int64_t)((i * 2654435761u) % 400); /* 0..399 us, scrambled */
}

static pk_err_t spins_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    spins_t *g = ctx;
    *item = NULL;
    if (g->next == g->n)
        return PK_OK;
    *item = pk_int(doc, spin_us(g->next++));
    return *item ? PK_OK : PK_ENOMEM;
}

static void test_imap_reorders(void **state)
{
    const size_t n = 2000;
    pool_call_opts_t co = {sizeof co, 1, 0};
    pool_t *p = start_n(0);
    unsigned char *seen = calloc(n, 1);

    for (int ordered = 1; ordered >= 0; ordered--) {
        spins_t g = {0, n};
        pool_iter_t *it = NULL;
        pool_item_t item;
        size_t got = 0, out_of_order = 0, last = 0;
        pk_err_t rc;
        memset(seen, 0, n);
        if (ordered)
            CHECK_OK(
                pool_imap(p, "examples", "spin", spins_next, &g, &co, &it, E_));
        else
            CHECK_OK(pool_imap_unordered(p, "examples", "spin", spins_next, &g,
                                         &co, &it, E_));
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
    pool_t *p = start_n(0);
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
    pool_t *p = start_n(0);
    pool_iter_t *it = NULL;
    pool_item_t item;
    gen_t g = {.n = 100000, .fail_at = 500, .caller = pthread_self()};
    pk_err_t rc;
    size_t got = 0;

    /* the generator's error stops the map and comes out of pool_iter_next */
    CHECK_OK(pool_imap(p, "examples", "square", gen_next, &g, NULL, &it, E_));
    while ((rc = pool_iter_next(it, &item, 30)) == PK_OK)
        got++;
    if (rc != PK_EINVAL)
        fail_msg("generator failing at item 500: pool_iter_next gave %s after "
                 "%zu items",
                 pk_errname(rc), got);
    assert_true(got <= 500);
    pool_iter_free(&it);

    /* abandoning an iterator mid-map leaves no stray result behind */
    gen_t g2 = {.n = 100000, .fail_at = SIZE_MAX, .caller = pthread_self()};
    CHECK_OK(pool_imap(p, "examples", "square", gen_next, &g2, NULL, &it, E_));
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

/* ---- futures ------------------------------------------------------------ */

static pool_future_t *apply1(pool_t *p, const char *func, pk_value_t *arg,
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

static void test_apply_async(void **state)
{
    pool_t *p = start_n(0);
    pk_doc_t *doc = NULL;
    pool_item_t item;
    pool_future_t *f, *fs[100];

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    f = apply1(p, "square", pk_int(doc, 7), doc);
    CHECK_OK(pool_future_wait(f, 10, &item));
    assert_int_equal(item.status, PK_OK);
    assert_int_equal(item.value->u.i, 49);
    pool_future_free(&f);
    assert_null(f);

    f = apply1(p, "sleep", pk_float(doc, 1.0), doc);
    double t0 = now_s();
    assert_int_equal(pool_future_wait(f, 0.05, &item), PK_ETIMEDOUT);
    double waited = now_s() - t0;
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

    f = apply1(p, "fail", pk_cstr(doc, "apply went wrong"), doc);
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

    f = apply1(p, "missing_fn", pk_int(doc, 1), doc);
    CHECK_OK(pool_future_wait(f, 10, &item));
    assert_int_equal(item.status, PK_ENOFUNC);
    pool_future_free(&f);

    for (int i = 0; i < 100; i++)
        fs[i] = apply1(p, "square", pk_int(doc, i), doc);
    for (int i = 99; i >= 0; i--) {
        CHECK_OK(pool_future_wait(fs[i], 10, &item));
        assert_int_equal(item.status, PK_OK);
        assert_int_equal(item.value->u.i, i * i);
        pool_future_free(&fs[i]);
    }
    pk_doc_free(&doc);
    pool_destroy(&p);
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
    pool_t *p = start_n(0);
    pool_future_t *f = apply1(p, "sleep", pk_float(doc, 0.3), doc);
    double t0 = now_s();
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
    if (now_s() - t0 < 0.2)
        fail_msg("join returned after %.3f s, before the 0.3 s task could end",
                 now_s() - t0);
    CHECK_OK(pool_future_wait(f, 0, &item));
    assert_int_equal(item.status, PK_OK);
    pool_future_free(&f);
    assert_int_equal(pool_join(p, 1), PK_OK); /* again: still joined */
    pool_destroy(&p);

    /* terminate: in-flight work is canceled at once */
    p = start_n(0);
    f = apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    sleep_s(0.2);
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
    p = start_n(1);
    assert_int_equal(pool_join(p, 0.2), PK_EINVAL);

    /* destroy with work in flight returns promptly */
    f = apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    pool_future_free(&f);
    pool_destroy(&p); /* kills the worker: never waits for the task */
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
    opts_for(&o, 3);
    o.initializer = init_marker;
    o.initarg = g_initdir;
    pool_t *p = start(&o);
    size_t n = stats(p, st, 64);
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

static void test_maxtasksperchild(void **state)
{
    const size_t n = 2000;
    pool_opts_t o;
    pool_worker_stats_t st0[64], st[64];
    pool_call_opts_t co = {sizeof co, 10, 0};
    int64_t v[2000];
    pk_value_t **items;

    make_initdir();
    opts_for(&o, 2);
    o.maxtasksperchild = 100;
    o.initializer = init_marker;
    o.initarg = g_initdir;
    pool_t *p = start(&o);
    size_t n0 = stats(p, st0, 64);
    for (size_t i = 0; i < n; i++)
        v[i] = (int64_t)i;
    pk_doc_t *doc = int_items(v, n, &items);
    pool_results_t *r = map_values(p, "square", items, n, &co);
    assert_int_equal(pool_results_failed(r), 0);
    for (size_t i = 0; i < n; i++)
        expect_int(r, i, v[i] * v[i]);
    pool_results_free(&r);

    unsigned restarts = total_restarts(p);
    if (restarts < 15)
        fail_msg("%zu items at most 100 per worker: %u restarts counted", n,
                 restarts);
    size_t n1 = stats(p, st, 64);
    for (size_t a = 0; a < n1; a++)
        for (size_t b = 0; b < n0; b++)
            if (st[a].pid == st0[b].pid)
                fail_msg("worker pid %d still serving after %u recycles",
                         st[a].pid, restarts);
    /* every process ran the initializer: the first workers plus each
     * replacement (the last replacement may still be starting) */
    double t0 = now_s();
    while (dir_count(g_initdir) < 2 + total_restarts(p) && now_s() - t0 < 5)
        sleep_s(0.01);
    if (dir_count(g_initdir) != 2 + total_restarts(p))
        fail_msg("%zu initializer runs for 2 workers and %u restarts",
                 dir_count(g_initdir), total_restarts(p));
    print_message("2000 items, maxtasksperchild 100: %u restarts\n", restarts);
    pk_doc_free(&doc);
    free(items);
    pool_destroy(&p);
    rm_tree_flat(g_initdir);
}

/* ---- arrays and floats -------------------------------------------------- */

/* out[0..len) is in[0..len) normalised to mean 0, std 1. */
static void expect_normalized(const float *in, const float *out, size_t len,
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

static void test_map_arrays(void **state)
{
    static const size_t lens[] = {1, 7, 1000, 65536, 100003, 8, 4096, 250000};
    const size_t n = sizeof lens / sizeof lens[0];
    float *in[8], *out[8];
    uint64_t s = 12345;
    pool_t *p = start_n(0);
    size_t nf = 99;

    for (size_t i = 0; i < n; i++) {
        in[i] = malloc(lens[i] * sizeof(float));
        out[i] = malloc(lens[i] * sizeof(float));
        for (size_t j = 0; j < lens[i]; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            in[i][j] = (float)(i * 10) + (float)(s >> 40) / (float)(1 << 24);
        }
    }
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)in, out, lens, n, NULL, NULL, &nf,
                                 E_));
    assert_int_equal(nf, 0);
    for (size_t i = 0; i < n; i++)
        expect_normalized(in[i], out[i], lens[i], i);

    /* the same arrays as ndarray values through pool_map */
    pk_doc_t *doc = NULL;
    pk_value_t *items[8];
    pk_dtype_t f4;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
    for (size_t i = 0; i < n; i++) {
        int64_t shape = (int64_t)lens[i];
        assert_non_null(items[i] = pk_ndarray(doc, &f4, 1, &shape, in[i], 0));
    }
    pool_results_t *r = map_values(p, "normalize", items, n, NULL);
    for (size_t i = 0; i < n; i++) {
        const pool_item_t *it = pool_results_item(r, i);
        if (it->status != PK_OK)
            fail_msg("array %zu: %s", i, it->error);
        assert_int_equal(it->value->type, PK_NDARRAY);
        const pk_ndarray_t *nd = it->value->u.nd;
        assert_int_equal(nd->ndim, 1);
        assert_int_equal(nd->shape[0], (int64_t)lens[i]);
        assert_int_equal(nd->dtype.kind, 'f');
        assert_int_equal(nd->nbytes, lens[i] * sizeof(float));
        if (memcmp(nd->data, out[i], nd->nbytes) != 0)
            fail_msg("array %zu: pool_map and pool_map_f32_arrays differ", i);
    }
    pool_results_free(&r);
    pk_doc_free(&doc);

    /* doubles: spin returns its argument */
    double din[64], dout[64];
    for (int i = 0; i < 64; i++) {
        din[i] = i * 0.75;
        dout[i] = -1;
    }
    CHECK_OK(pool_map_f64(p, "examples", "spin", din, dout, 64, VEC_));
    for (int i = 0; i < 64; i++)
        assert_true(dout[i] == din[i]);

    for (size_t i = 0; i < n; i++) {
        free(in[i]);
        free(out[i]);
    }
    pool_destroy(&p);
}

/* ---- the shared-memory arena ------------------------------------------- */

/* Internal (runtime/pool/master.h): arena bytes in use. */
int pool__shm_stats(pool_t *p, size_t *task_used, size_t *res_held,
                    size_t *res_alloc);

/* Every arena block is free again once a map has returned (the pool is
 * idle): task blocks, result blocks held, result blocks workers allocated. */
static void expect_arena_idle(pool_t *p, int has_arena)
{
    size_t tu = 1, rh = 1, ra = 1;
    assert_int_equal(pool__shm_stats(p, &tu, &rh, &ra), has_arena);
    if (tu != 0 || rh != 0 || ra != 0)
        fail_msg("arena leak: %zu task bytes, %zu result bytes held, %zu "
                 "allocated by workers",
                 tu, rh, ra);
}

/* n arrays, big ones (about len floats) mixed with small ones that stay on
 * the socket; distinct values so a misplaced result shows. */
static size_t *arrays_new(size_t n, size_t len, float **in, float **out)
{
    size_t *lens = malloc(n * sizeof *lens);
    uint64_t s = 777;
    for (size_t i = 0; i < n; i++) {
        lens[i] = i % 5 == 3 ? 100 + i : len + i;
        in[i] = malloc(lens[i] * sizeof(float));
        out[i] = calloc(lens[i], sizeof(float));
        for (size_t j = 0; j < lens[i]; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            in[i][j] = (float)i + (float)(s >> 40) / (float)(1 << 20);
        }
    }
    return lens;
}

static void arrays_free(size_t n, size_t *lens, float **in, float **out)
{
    for (size_t i = 0; i < n; i++) {
        free(in[i]);
        free(out[i]);
    }
    free(lens);
}

static void test_map_arrays_shm(void **state)
{
    enum { N = 24 };
    float *in[N], *out[N], *ref[N];
    size_t *lens = arrays_new(N, 262144, in, out); /* 1 MiB arrays */
    size_t nf = 99;

    /* no arena: the reference */
    pool_opts_t o;
    opts_for(&o, 0);
    o.shm_bytes = SIZE_MAX;
    pool_t *p = start(&o);
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)in, out, lens, N, NULL, NULL, &nf,
                                 E_));
    assert_int_equal(nf, 0);
    expect_arena_idle(p, 0);
    pool_destroy(&p);
    for (size_t i = 0; i < N; i++) {
        expect_normalized(in[i], out[i], lens[i], i);
        ref[i] = out[i];
        out[i] = calloc(lens[i], sizeof(float));
    }

    /* the default arena, then one so small that buffers must fall back to
     * the socket whenever it is full; both give the same bytes, in order */
    for (int round = 0; round < 2; round++) {
        opts_for(&o, 0);
        if (round == 1) {
            o.shm_bytes = 8u << 20;
            o.shm_threshold = 4096;
        }
        p = start(&o);
        for (int rep = 0; rep < 3; rep++) {
            for (size_t i = 0; i < N; i++)
                memset(out[i], 0, lens[i] * sizeof(float));
            CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                         (const float *const *)in, out, lens, N,
                                         NULL, NULL, &nf, E_));
            assert_int_equal(nf, 0);
            for (size_t i = 0; i < N; i++)
                if (memcmp(out[i], ref[i], lens[i] * sizeof(float)) != 0)
                    fail_msg("round %d: array %zu differs from the socket "
                             "path's",
                             round, i);
            expect_arena_idle(p, 1);
        }
        /* as ndarray values through pool_map: results are copied out */
        pk_doc_t *doc = NULL;
        pk_value_t *items[N];
        pk_dtype_t f4;
        assert_int_equal(pk_doc_new(&doc), PK_OK);
        assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
        for (size_t i = 0; i < N; i++) {
            int64_t shape = (int64_t)lens[i];
            assert_non_null(items[i] =
                                pk_ndarray(doc, &f4, 1, &shape, in[i], 0));
        }
        pool_results_t *r = map_values(p, "normalize", items, N, NULL);
        expect_arena_idle(p, 1); /* even while the results live */
        for (size_t i = 0; i < N; i++) {
            const pool_item_t *it = pool_results_item(r, i);
            if (it->status != PK_OK)
                fail_msg("array %zu: %s", i, it->error);
            const pk_ndarray_t *nd = it->value->u.nd;
            assert_int_equal(nd->nbytes, lens[i] * sizeof(float));
            if (memcmp(nd->data, ref[i], nd->nbytes) != 0)
                fail_msg("round %d: pool_map array %zu differs", round, i);
        }
        pool_results_free(&r);
        pk_doc_free(&doc);
        pool_destroy(&p);
    }
    for (size_t i = 0; i < N; i++)
        free(ref[i]);
    arrays_free(N, lens, in, out);
}

/* Workers SIGKILLed mid-map while they hold arena blocks (task blocks of
 * their in-flight batches, result blocks they allocated but never sent):
 * every item still comes back right, and nothing stays allocated. */
static void test_kill_workers_holding_arena(void **state)
{
    enum { N = 160 };
    float *in[N], *out[N];
    size_t *lens = arrays_new(N, 131072, in, out); /* 512 KiB arrays */
    pool_opts_t o;
    opts_for(&o, 0);
    o.retries = 1000000;
    pool_t *p = start(&o);
    killer_t k;
    pthread_t th;
    memset(&k, 0, sizeof k);
    k.p = p;
    assert_int_equal(pthread_create(&th, NULL, killer_main, &k), 0);
    for (int rep = 0; rep < 20 && (rep < 2 || k.kills < 5); rep++) {
        size_t nf = 99;
        CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                     (const float *const *)in, out, lens, N,
                                     NULL, NULL, &nf, E_));
        assert_int_equal(nf, 0);
        for (size_t i = 0; i < N; i++)
            expect_normalized(in[i], out[i], lens[i], i);
    }
    atomic_store(&k.stop, 1);
    pthread_join(th, NULL);
    print_message("%d workers killed\n", k.kills);
    if (k.kills == 0)
        fail_msg("no worker was killed during the maps");
    /* respawns may still be under way */
    double t0 = now_s();
    while (total_restarts(p) < (unsigned)k.kills && now_s() - t0 < 5)
        sleep_s(0.01);
    expect_arena_idle(p, 1);
    /* and the respawned workers' regions serve again */
    size_t nf = 99;
    CHECK_OK(pool_map_f32_arrays(p, "examples", "normalize",
                                 (const float *const *)in, out, lens, N, NULL, NULL, &nf,
                                 E_));
    assert_int_equal(nf, 0);
    expect_arena_idle(p, 1);
    pool_destroy(&p);
    arrays_free(N, lens, in, out);
}

/* ---- Ctrl-C ------------------------------------------------------------- */

static void *sigint_later(void *arg)
{
    sleep_s(0.3);
    kill(getpid(), SIGINT);
    return NULL;
}

static void test_sigint_interrupts_map(void **state)
{
    pool_t *p = start_n(0);
    pk_doc_t *doc = NULL;
    pk_value_t *items[40];
    pool_results_t *r = NULL;
    pk_error_t err;
    pthread_t th;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    for (int i = 0; i < 40; i++)
        items[i] = pk_float(doc, HUNG_S); /* only SIGINT can end the map */
    assert_int_equal(pthread_create(&th, NULL, sigint_later, NULL), 0);
    double t0 = now_s();
    pk_err_t rc =
        pool_map(p, "examples", "sleep", (const pk_value_t *const *)items, 40,
                 NULL, &r, &err);
    double took = now_s() - t0;
    pthread_join(th, NULL);
    if (rc != PK_EINTR)
        fail_msg("SIGINT during pool_map: %s after %.2f s", pk_errname(rc),
                 took);
    assert_null(r);
    pool_destroy(&p); /* kills the sleeping workers */
    pk_doc_free(&doc);
}

/* ---- the fast lane (runtime/ipc/lane.h) ------------------------------------- */

static uint64_t lane_items(pool_t *p)
{
    pool_worker_stats_t st[64];
    size_t n = stats(p, st, 64);
    uint64_t sum = 0;
    for (size_t i = 0; i < n && i < 64; i++)
        sum += st[i].lane_items;
    return sum;
}

static unsigned restarts_of(pool_t *p)
{
    pool_worker_stats_t st[64];
    size_t n = stats(p, st, 64);
    unsigned sum = 0;
    for (size_t i = 0; i < n && i < 64; i++)
        sum += st[i].restarts;
    return sum;
}

/* n sequential applies of square(base + i), each checked. */
static void square_calls(pool_t *p, pk_doc_t *doc, int64_t base, int n)
{
    pool_item_t item;
    for (int i = 0; i < n; i++) {
        pool_future_t *f = apply1(p, "square", pk_int(doc, base + i), doc);
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
    pool_t *p = start_n(2);
    square_calls(p, doc, -100, 500);
    uint64_t laned = lane_items(p);
    print_message("500 sequential applies: %" PRIu64 " through the lane\n",
                  laned);
    /* Back-to-back calls find the last worker still polling. */
    assert_true(laned > 0);
    pool_destroy(&p);

    /* Opted out: the same calls, all through the socket. */
    pool_opts_t o;
    opts_for(&o, 2);
    o.spin_us = -1;
    p = start(&o);
    square_calls(p, doc, 7, 200);
    assert_int_equal(lane_items(p), 0);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

/* An idle worker polls its lane; kill it there, then crash one mid-call. */
static void test_lane_worker_deaths(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_n(2);
    unsigned kills = 0;
    for (int round = 0; round < 5; round++) {
        square_calls(p, doc, round * 10, 20);
        /* Until the last kill's respawn is counted and its pid is in the
         * stats, slot 0 shows the dead worker's pid (a zombie takes a
         * signal too, with no death behind it) or none at all. Both are
         * read from one snapshot, so the pid is the respawned one. */
        pool_worker_stats_t st[2];
        stats(p, st, 2);
        while (st[0].restarts + st[1].restarts < kills || st[0].pid <= 0) {
            sleep_s(0.01);
            stats(p, st, 2);
        }
        if (kill(st[0].pid, SIGKILL) == 0)
            kills++;
        square_calls(p, doc, round * 10, 20);
    }
    assert_int_equal(kills, 5); /* every round killed a polling worker */
    /* A call that kills its worker (crash(x) SIGKILLs itself for x < 0)
     * is retried, then fails alone naming the signal; the lane survives. */
    uint64_t before = lane_items(p);
    pool_future_t *f = apply1(p, "crash", pk_int(doc, -1), doc);
    CHECK_OK(pool_future_wait(f, 60, &item));
    assert_int_equal(item.status, PK_ECRASHED);
    assert_non_null(strstr(item.error, "SIGKILL"));
    pool_future_free(&f);
    square_calls(p, doc, 3, 200);
    assert_true(lane_items(p) > before);
    /* Every death is followed by a respawn (the time limit bounds this). */
    while (restarts_of(p) < kills + 3)
        sleep_s(0.01);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

static void test_lane_timeout_and_interrupt(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_opts_t o;
    opts_for(&o, 2);
    o.timeout = 0.3;
    pool_t *p = start(&o);
    square_calls(p, doc, 0, 50); /* the workers poll */
    /* Only the timeout can end it (else the test's time limit fails it). */
    pool_future_t *f = apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    CHECK_OK(pool_future_wait(f, -1, &item));
    assert_int_equal(item.status, PK_ETIMEDOUT);
    assert_non_null(strstr(item.error, "timed out"));
    pool_future_free(&f);
    square_calls(p, doc, 0, 50);
    assert_true(restarts_of(p) >= 1);
    pool_destroy(&p);

    /* SIGINT ends a wait on a lane call; the future stays valid. */
    p = start_n(2);
    square_calls(p, doc, 0, 50);
    pthread_t th;
    f = apply1(p, "sleep", pk_float(doc, 0.8), doc);
    assert_int_equal(pthread_create(&th, NULL, sigint_later, NULL), 0);
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
    pool_t *p = start_n(2);
    static const int64_t sizes[] = {0, 1000, 40000, 100000, 3000000, 10};
    for (int rep = 0; rep < 20; rep++) {
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            pool_future_t *f = apply1(p, "big", pk_int(doc, sizes[k]), doc);
            CHECK_OK(pool_future_wait(f, 30, &item));
            check_big(&item, sizes[k]);
            pool_future_free(&f);
        }
    }
    print_message("120 applies of big(): %" PRIu64 " replies in the lane\n",
                  lane_items(p));
    assert_true(lane_items(p) > 0);
    pool_destroy(&p);

    /* A retiring worker's reply goes over the socket, so the master knows
     * its exit is clean: no call fails, every worker retires in turn. */
    pool_opts_t o;
    opts_for(&o, 2);
    o.maxtasksperchild = 1;
    p = start(&o);
    square_calls(p, doc, 0, 60);
    print_message("60 applies, maxtasksperchild 1: %u restarts\n",
                  restarts_of(p));
    assert_true(restarts_of(p) >= 50);
    pool_destroy(&p);
    pk_doc_free(&doc);
}

/* Futures freed unwaited: the master reclaims their lanes. */
static void test_lane_abandoned_calls(void **state)
{
    pk_doc_t *doc = NULL;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_n(2);
    for (int i = 0; i < 50; i++) {
        square_calls(p, doc, i, 5);
        pool_future_t *f = apply1(p, "square", pk_int(doc, i), doc);
        pool_future_free(&f); /* finished or not, nobody collects it */
        f = apply1(p, "sleep", pk_float(doc, 0.002), doc);
        pool_future_free(&f);
    }
    /* A hung call given up on: cancel grace kills its worker. */
    pool_future_t *f = apply1(p, "sleep", pk_float(doc, HUNG_S), doc);
    pool_future_free(&f);
    sleep_s(0.5);
    uint64_t before = lane_items(p);
    square_calls(p, doc, 0, 300);
    assert_true(lane_items(p) > before); /* the lanes were freed */
    pool_destroy(&p); /* must not wait on the hung call */
    pk_doc_free(&doc);
}

/* multiprocessing's order: apply, close, join, then get.  A finished lane
 * call needs no worker, so join must not wait for it to be collected. */
static void test_lane_close_join_then_wait(void **state)
{
    pk_doc_t *doc = NULL;
    pool_item_t item;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pool_t *p = start_n(2);
    square_calls(p, doc, 0, 50); /* the workers poll */
    uint64_t before = lane_items(p);
    pool_future_t *f = apply1(p, "square", pk_int(doc, 7), doc);
    pool_future_t *g = apply1(p, "sleep", pk_float(doc, 0.2), doc);
    CHECK_OK(pool_close(p));
    CHECK_OK(pool_join(p, -1)); /* never returned while a reply waited */
    CHECK_OK(pool_future_wait(f, -1, &item));
    assert_int_equal(item.status, PK_OK);
    assert_int_equal(item.value->u.i, 49);
    CHECK_OK(pool_future_wait(g, -1, &item));
    assert_int_equal(item.status, PK_OK);
    assert_true(item.value->u.f == 0.2);
    print_message("close/join/wait: %" PRIu64 " of 2 through the lane\n",
                  lane_items(p) - before);
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
        pk_err_t rc = pool_apply_async(t->p, "examples", "square", args, NULL,
                                       &f, NULL);
        if (rc == PK_OK)
            rc = pool_future_wait(f, 30, &item);
        if (rc != PK_OK || item.status != PK_OK || item.value->u.i != x * x) {
            t->failed = 1;
            snprintf(t->why, sizeof t->why, "square(%" PRId64 "): %s %s %s",
                     x, pk_errname(rc), rc ? "" : pk_errname(item.status),
                     rc == PK_OK && item.error ? item.error : "");
        }
        pool_future_free(&f);
    }
    pk_doc_free(&doc);
    return NULL;
}

static volatile int killer_stop;

static void *killer(void *arg)
{
    pool_t *p = arg;
    unsigned k = 0;
    uint64_t seen[2] = {0, 0};
    while (!killer_stop) {
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
        sleep_s(0.003);
    }
    return NULL;
}

static void test_lane_threads_race(void **state)
{
    pool_t *p = start_n(2);
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
                  lane_items(p));
    pool_destroy(&p);

    /* The same while working workers are killed every few ms: claims,
     * posts and deaths interleave in many orders, and no call is lost or
     * wrong (retries are high so an unlucky item is not failed as a
     * poison). */
    pool_opts_t o;
    opts_for(&o, 2);
    o.retries = 1000;
    p = start(&o);
    pthread_t kt;
    killer_stop = 0;
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
    killer_stop = 1;
    pthread_join(kt, NULL);
    print_message("the same under kills: %u restarts, %" PRIu64
                  " through the lane\n",
                  restarts_of(p), lane_items(p));
    pool_destroy(&p);
}

/* ---- runner ------------------------------------------------------------- */

typedef struct pool_test {
    const char *name;
    CMUnitTestFunction fn;
    unsigned timeout; /* seconds */
} pool_test_t;

/* ---- the API's rules ------------------------------------------------------ */

/* The parent of a worker is the fork server. */
static pid_t fork_server_of(pool_t *p)
{
    pool_worker_stats_t st[1];
    stats(p, st, 1);
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", st[0].pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
    assert_non_null(rp);
    char state;
    int ppid = 0;
    assert_int_equal(sscanf(rp + 1, " %c %d", &state, &ppid), 2);
    assert_true(ppid > 1 && ppid != getpid());
    return (pid_t)ppid;
}

static void test_api_rules(void **state)
{
    pk_error_t err;
    pool_t *p = NULL;
    pool_opts_t o;

    /* options not filled by pool_opts_init are refused, naming it */
    opts_for(&o, 1);
    o.size = 0;
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_non_null(strstr(err.msg, "pool_opts_init"));
    o.size = sizeof o + 8; /* a newer header than this library */
    assert_int_equal(pool_create(&p, &o, &err), PK_EINVAL);
    assert_null(p);

    p = start_n(1);
    int64_t v[3] = {1, 2, 3}, out[3];
    pk_err_t st[3] = {PK_EIO, PK_EIO, PK_EIO};
    size_t nf = 99;
    pool_call_opts_t co = {0, 0, 0}; /* size 0: not from pool_call_opts_init */
    assert_int_equal(pool_map_i64(p, "examples", "square", v, out, 3, &co, st,
                                  &nf, &err),
                     PK_EINVAL);
    assert_non_null(strstr(err.msg, "pool_call_opts_init"));
    pool_call_opts_init(&co);
    co.chunksize = 1;
    assert_int_equal(pool_map_i64(p, "examples", "square", v, out, 3, &co, st,
                                  &nf, &err),
                     PK_OK);
    assert_int_equal(nf, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(st[i], PK_OK);
        assert_int_equal(out[i], v[i] * v[i]);
    }

    /* the iterator's end is its own code, and stays */
    pk_value_t **items = NULL;
    pk_doc_t *doc = int_items(v, 3, &items);
    gen_t g = {.n = 3, .fail_at = SIZE_MAX, .caller = pthread_self()};
    pool_iter_t *it = NULL;
    pool_item_t item;
    CHECK_OK(pool_imap(p, "examples", "square", gen_next, &g, NULL, &it, E_));
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
    p = start_n(1); /* a new fork server */
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
        sleep_s(0.05);
    }
    assert_int_equal(rc, PK_ECRASHED);
    assert_non_null(strstr(err.msg, "fork server"));
    pool_destroy(&p);
    p = start_n(1);
    assert_int_not_equal(fork_server_of(p), fs);
    CHECK_OK(pool_map_i64(p, "examples", "square", v, out, 3, VEC_));
    assert_int_equal(out[1], 4);
    pool_destroy(&p);
    CHECK_OK(pool_global_fini(E_));
    pk_doc_free(&doc);
    free(items);
}

#define TEST(fn, secs)                                                         \
    {                                                                          \
#fn, fn, secs                                                          \
    }

static const pool_test_t tests[] = {
    TEST(test_create_refusals, 30),
    TEST(test_api_rules, 60),
    TEST(test_map_1m_in_order, 120),
    TEST(test_kill_workers_mid_map, 120),
    TEST(test_poison_item, 60),
    TEST(test_exit0_item, 60),
    TEST(test_destroy_with_open_iterator_aborts, 60),
    TEST(test_hung_item_times_out, 60),
    TEST(test_unknown_function, 30),
    TEST(test_function_error, 30),
    TEST(test_placement_compact, 30),
    TEST(test_placement_spread_and_none, 30),
    TEST(test_more_workers_than_cores, 60),
    TEST(test_placement_synthetic, 30),
    TEST(test_placement_honours_affinity, 30),
    TEST(test_destroy_leaves_nothing, 60),
    TEST(test_imap_bounded, 120),
    TEST(test_imap_reorders, 60),
    TEST(test_imap_bounded_behind_slow_item, 60),
    TEST(test_imap_errors_and_abandon, 60),
    TEST(test_lane_round_trips, 60),
    TEST(test_lane_worker_deaths, 120),
    TEST(test_lane_timeout_and_interrupt, 60),
    TEST(test_lane_big_reply_and_retiring, 120),
    TEST(test_lane_abandoned_calls, 60),
    TEST(test_lane_close_join_then_wait, 60),
    TEST(test_lane_threads_race, 180),
    TEST(test_apply_async, 30),
    TEST(test_close_join_terminate, 60),
    TEST(test_initializer, 30),
    TEST(test_maxtasksperchild, 60),
    TEST(test_map_arrays, 60),
    TEST(test_map_arrays_shm, 60),
    TEST(test_kill_workers_holding_arena, 120),
    TEST(test_sigint_interrupts_map, 30),
};

/* Runs after every test, passed or failed: removes its scratch files. */
static int teardown_scratch(void **state)
{
    if (g_initdir[0] != '\0')
        rm_tree_flat(g_initdir);
    g_initdir[0] = '\0';
    return 0;
}

static void on_alarm(int sig)
{
    static const char msg[] = "test_pool: the test ran past its time limit\n";
    (void)sig;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        _exit(124);
    _exit(124);
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]) != NULL)
            return 1;
    return 0;
}

/* Runs one test in a child of its own; returns 0 when it passed. */
static int run_one(const pool_test_t *t)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        struct CMUnitTest one[1] = {
            {t->name, t->fn, NULL, teardown_scratch, NULL}};
        setpgid(0, 0);
        signal(SIGALRM, on_alarm);
        alarm(t->timeout);
        int rc = _cmocka_run_group_tests(t->name, one, 1, NULL, NULL);
        fflush(stdout);
        fflush(stderr);
        if (rc == 0)
            exit(0); /* a passed test destroyed its pools: let LSan look */
        _exit(1);    /* a failed one may have left threads running */
    }
    setpgid(pid, pid);
    double deadline = now_s() + t->timeout + 15;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            perror("waitpid");
            return 1;
        }
        if (now_s() > deadline) {
            fprintf(stderr, "test_pool: %s hung; killing its process group\n",
                    t->name);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 1;
        }
        sleep_s(0.01);
    }
    kill(-pid, SIGKILL); /* whatever the test left in its group */
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "test_pool: %s: killed by signal %d\n", t->name,
                WTERMSIG(status));
        return 1;
    }
    return WEXITSTATUS(status) != 0;
}

int main(int argc, char **argv)
{
    size_t ran = 0, failed = 0;
    const char *failures[sizeof tests / sizeof tests[0]];

    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        ran++;
        if (run_one(&tests[i]) != 0)
            failures[failed++] = tests[i].name;
    }
    printf("\ntest_pool: %zu of %zu tests passed\n", ran - failed, ran);
    for (size_t i = 0; i < failed; i++)
        printf("  FAILED: %s\n", failures[i]);
    if (ran == 0) {
        fprintf(stderr, "test_pool: no test matches\n");
        return 1;
    }
    return failed ? 1 : 0;
}
