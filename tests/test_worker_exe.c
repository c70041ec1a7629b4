/*
 * test_worker_exe.c - the standalone worker, build/picklepool-worker, run
 * as an exec'd process against a master played by the test itself: a
 * ZeroMQ ROUTER bound on ipc:// in a fresh 0700 directory.
 *
 * The refusals come first: bad usage exits 2 with one line on stderr naming
 * the option, a plugin that cannot be loaded exits 2 naming its path, and
 * an unknown function fails every item of its batch with PK_ENOFUNC instead
 * of crashing.  Then the real thing: READY with the routing id and credit
 * asked for, TASKs built with the wire helpers whose items are pickled with
 * pk_dumps, the RESULTs checked value by value, malformed frames that must
 * leave the worker alive and answering, the --cpus binding seen by every
 * thread (so ZeroMQ's too), and exit status 0 after STOP or retirement.
 *
 *   build/tests/test_worker_exe
 *
 * The binary and plugin are $PICKLEPOOL_BUILD/picklepool-worker and
 * $PICKLEPOOL_BUILD/plugins/examples.so (default build/).  Each test arms an
 * alarm; a hang kills the worker, removes the directory and fails the run.
 * Teardown kills and reaps a worker a failed test left, and the worker is
 * started with PR_SET_PDEATHSIG, so none outlives the runner.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "ipc/wire.h"
#include "picklepool/pickle.h"
#include "picklepool/value.h"

#define TEST_LIMIT_S 30 /* alarm per test */
#define RECV_LIMIT_MS 10000
#define EXIT_LIMIT_S 10.0
#define MAX_FRAMES 16

static char g_bin[PATH_MAX], g_plugin[PATH_MAX];
static char g_dir[64];
static char g_sock[128], g_out[128], g_err[128], g_junk[128];
static char g_endpoint[160];
static void *g_ctx, *g_router;
static volatile pid_t g_pid; /* the worker running, or 0 */

/* ---- the directory and the worker process ------------------------------ */

static void remove_dir(void)
{
    if (g_dir[0] == '\0')
        return;
    unlink(g_sock);
    unlink(g_out);
    unlink(g_err);
    unlink(g_junk);
    rmdir(g_dir);
}

static void on_alarm(int sig)
{
    static const char msg[] =
        "test_worker_exe: the test ran past its time limit\n";
    (void)sig;
    if (g_pid > 0)
        kill(g_pid, SIGKILL);
    remove_dir(); /* unlink and rmdir only: async-signal-safe */
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        _exit(124);
    _exit(124);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Starts the worker with extra arguments (NULL-terminated), its stdout and
 * stderr going to files in the directory. */
static void spawn(const char *const *extra)
{
    const char *argv[32];
    int n = 0;

    argv[n++] = g_bin;
    while (*extra != NULL && n < 31)
        argv[n++] = *extra++;
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int out = open(g_out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(g_err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 ||
            prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
            _exit(126);
        execv(g_bin, (char *const *)argv);
        _exit(127);
    }
    g_pid = pid;
}

/* Waits for the worker to exit by itself and returns its exit status. */
static int wait_exit(void)
{
    double end = now_s() + EXIT_LIMIT_S;
    int st = 0;
    pid_t r;

    while ((r = waitpid(g_pid, &st, WNOHANG)) == 0 && now_s() < end)
        usleep(5000);
    assert_int_equal(r, g_pid); /* else it did not exit in time */
    g_pid = 0;
    if (WIFSIGNALED(st))
        fail_msg("the worker was killed by signal %d", WTERMSIG(st));
    return WEXITSTATUS(st);
}

static void assert_alive(void)
{
    int st;
    assert_int_equal(waitpid(g_pid, &st, WNOHANG), 0);
}

/* Runs the worker to completion with these arguments; its exit status. */
static int run_worker(const char *const *extra)
{
    spawn(extra);
    return wait_exit();
}

/* The whole of a small file as a string (in a static buffer). */
static const char *slurp(const char *path)
{
    static char buf[8192];
    size_t n = 0;
    FILE *fp = fopen(path, "r");

    buf[0] = '\0';
    if (fp != NULL) {
        n = fread(buf, 1, sizeof buf - 1, fp);
        fclose(fp);
    }
    buf[n] = '\0';
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- the master's side ------------------------------------------------- */

typedef struct msg {
    zmq_msg_t f[MAX_FRAMES];
    int n;
} msg_t;

static void msg_close(msg_t *m)
{
    for (int i = 0; i < m->n; i++)
        zmq_msg_close(&m->f[i]);
    m->n = 0;
}

/* Receives one whole message from the ROUTER (its frame 0 is the routing
 * id); fails the test after RECV_LIMIT_MS. */
static void recv_msg(msg_t *m)
{
    int more = 1;

    m->n = 0;
    while (more) {
        assert_true(m->n < MAX_FRAMES);
        zmq_msg_t *f = &m->f[m->n];
        zmq_msg_init(f);
        int r;
        while ((r = zmq_msg_recv(f, g_router, 0)) < 0 && errno == EINTR)
            ;
        if (r < 0) {
            zmq_msg_close(f);
            msg_close(m);
            fail_msg("no message from the worker: %s", zmq_strerror(errno));
        }
        m->n++;
        more = zmq_msg_more(f);
    }
}

/* Non-zero when a message arrives within ms milliseconds. */
static int something_arrives(int ms)
{
    zmq_pollitem_t it = {g_router, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&it, 1, ms) > 0;
}

static void parse_hdr(const msg_t *m, pool__wire_hdr_t *h)
{
    pk_error_t e;
    assert_true(m->n >= 2);
    pk_error_clear(&e);
    if (pool__wire_hdr_parse(zmq_msg_data((zmq_msg_t *)&m->f[1]),
                             zmq_msg_size((zmq_msg_t *)&m->f[1]), h,
                             &e) != PK_OK)
        fail_msg("bad header from the worker: %s", e.msg);
}

/* Sends frames to the worker whose routing id is id. */
static void send_frames(const uint8_t *id, const void *const *data,
                        const size_t *len, int n)
{
    assert_int_equal(zmq_send(g_router, id, POOL_WIRE_ID_SIZE, ZMQ_SNDMORE),
                     POOL_WIRE_ID_SIZE);
    for (int i = 0; i < n; i++)
        assert_int_equal(
            zmq_send(g_router, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0),
            (int)len[i]);
}

static void send_hdr_only(const uint8_t *id, const pool__wire_hdr_t *h)
{
    uint8_t b[POOL_WIRE_HDR_SIZE];
    const void *d[1] = {b};
    size_t l[1] = {sizeof b};

    pool__wire_hdr_encode(h, b);
    send_frames(id, d, l, 1);
}

/* Waits for READY and checks it: routing id {slot, gen}, credit, the pid.
 * Fills id for the replies. */
static void expect_ready(int slot, uint32_t gen, uint32_t credit,
                         uint8_t id[POOL_WIRE_ID_SIZE])
{
    msg_t m;
    pool__wire_hdr_t h;
    int s;
    uint32_t g;

    recv_msg(&m);
    assert_int_equal(m.n, 2);
    assert_int_equal(zmq_msg_size(&m.f[0]), POOL_WIRE_ID_SIZE);
    memcpy(id, zmq_msg_data(&m.f[0]), POOL_WIRE_ID_SIZE);
    assert_int_equal(pool__wire_id_parse(id, POOL_WIRE_ID_SIZE, &s, &g), PK_OK);
    assert_int_equal(s, slot);
    assert_int_equal(g, gen);
    parse_hdr(&m, &h);
    assert_int_equal(h.kind, POOL_WIRE_READY);
    assert_int_equal(h.count, credit);
    assert_int_equal(h.aux, (uint64_t)g_pid);
    msg_close(&m);
}

/* Appends a {len, nbufs 0, status 0} record holding the pickle of v. */
static void put_item(pk_buf_t *items, const pk_value_t *v)
{
    pk_buf_t p = {0};
    uint8_t rec[POOL_WIRE_REC_SIZE];

    assert_int_equal(pk_dumps(v, NULL, &p, NULL), PK_OK);
    pool__wire_rec_encode(rec, (uint32_t)p.len, 0, 0);
    items->data = realloc(items->data, items->len + sizeof rec + p.len);
    assert_non_null(items->data);
    memcpy(items->data + items->len, rec, sizeof rec);
    memcpy(items->data + items->len + sizeof rec, p.data, p.len);
    items->len += sizeof rec + p.len;
    pk_buf_free(&p);
}

/* Appends the records of the ints first .. first + n - 1. */
static void int_items(pk_doc_t *doc, pk_buf_t *items, int64_t first, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        put_item(items, pk_int(doc, first + (int64_t)i));
}

/* Sends the TASK [hdr][call][items] for module.func over `count` records
 * already in items (as the master's send_task does, without arena); with
 * module NULL, an empty call frame and POOL_WIRE_F_SAME_CALL. */
static void send_task(const uint8_t *id, uint64_t batch, const char *module,
                      const char *func, const pk_buf_t *items, uint32_t count)
{
    pk_doc_t *doc = NULL;
    pk_buf_t call = {0};
    uint8_t hb[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_t h = {.kind = POOL_WIRE_TASK,
                          .flags = module ? 0 : POOL_WIRE_F_SAME_CALL,
                          .batch = batch,
                          .count = count};

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    if (module != NULL)
        assert_int_equal(
            pk_dumps(pk_global(doc, module, func), NULL, &call, NULL), PK_OK);
    pool__wire_hdr_encode(&h, hb);
    const void *d[3] = {hb, call.data, items->data};
    size_t l[3] = {sizeof hb, call.len, items->len};
    send_frames(id, d, l, 3);
    pk_buf_free(&call);
    pk_doc_free(&doc);
}

/* One outcome of a RESULT. */
typedef struct outcome {
    uint32_t status;
    pk_value_t *value; /* status 0: in the caller's doc */
    char msg[256];     /* otherwise */
} outcome_t;

/* Receives the RESULT of `batch` with `count` record outcomes and decodes
 * them into out (values in doc).  Returns the header's flags. */
static uint16_t recv_result(uint64_t batch, uint32_t count, pk_doc_t *doc,
                            outcome_t *out)
{
    msg_t m;
    pool__wire_hdr_t h;
    pool__wire_rec_t recs[64];
    pk_error_t e;

    assert_true(count <= 64);
    recv_msg(&m);
    parse_hdr(&m, &h);
    assert_int_equal(h.kind, POOL_WIRE_RESULT);
    assert_int_equal(h.batch, batch);
    assert_int_equal(h.count, count);
    assert_int_equal(h.nbufs, 0);
    assert_int_equal(m.n, 3);
    pk_error_clear(&e);
    if (pool__wire_recs_parse(zmq_msg_data(&m.f[2]), zmq_msg_size(&m.f[2]),
                              count, 0, 1, recs, &e) != PK_OK)
        fail_msg("bad outcomes: %s", e.msg);
    for (uint32_t i = 0; i < count; i++) {
        out[i].status = recs[i].status;
        out[i].value = NULL;
        out[i].msg[0] = '\0';
        if (recs[i].status == 0)
            assert_int_equal(pk_loads(doc, recs[i].data, recs[i].len, NULL,
                                      &out[i].value, NULL, &e),
                             PK_OK);
        else
            snprintf(out[i].msg, sizeof out[i].msg, "%.*s", (int)recs[i].len,
                     (const char *)recs[i].data);
    }
    msg_close(&m);
    return h.flags;
}

/* Sends examples.square over first..first+n-1 as one batch and checks
 * every result. */
static void square_round(const uint8_t *id, uint64_t batch, int64_t first,
                         uint32_t n)
{
    pk_doc_t *doc = NULL;
    pk_buf_t items = {0};
    outcome_t out[64];

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    int_items(doc, &items, first, n);
    send_task(id, batch, "examples", "square", &items, n);
    assert_int_equal(recv_result(batch, n, doc, out), 0);
    for (uint32_t i = 0; i < n; i++) {
        int64_t x = first + (int64_t)i, got;
        assert_int_equal(out[i].status, PK_OK);
        assert_int_equal(pk_as_int(out[i].value, &got), PK_OK);
        assert_int_equal(got, x * x);
    }
    free(items.data);
    pk_doc_free(&doc);
}

/* Starts the worker as `slot` with the examples plugin and the extra
 * arguments (NULL-terminated), and waits for its READY, which must announce
 * generation gen and credit `credit`.  Fills id. */
static void start_worker(int slot, uint32_t gen, uint32_t credit,
                         const char *const *extra,
                         uint8_t id[POOL_WIRE_ID_SIZE])
{
    char num[16];
    const char *argv[24] = {"--connect", g_endpoint, "--slot",
                            num,         "--plugin", g_plugin};
    int n = 6;

    snprintf(num, sizeof num, "%d", slot);
    while (*extra != NULL && n < 23)
        argv[n++] = *extra++;
    argv[n] = NULL;
    spawn(argv);
    expect_ready(slot, gen, credit, id);
}

static void send_stop(const uint8_t *id)
{
    pool__wire_hdr_t h = {.kind = POOL_WIRE_STOP};
    send_hdr_only(id, &h);
}

/* ---- fixtures ----------------------------------------------------------- */

static int setup(void **state)
{
    int zero = 0, one = 1, tmo = RECV_LIMIT_MS;
    (void)state;

    alarm(TEST_LIMIT_S);
    strcpy(g_dir, "/tmp/pk_test_wexe.XXXXXX");
    if (mkdtemp(g_dir) == NULL) { /* mode 0700 */
        g_dir[0] = '\0';
        return -1;
    }
    snprintf(g_sock, sizeof g_sock, "%s/master.sock", g_dir);
    snprintf(g_out, sizeof g_out, "%s/stdout", g_dir);
    snprintf(g_err, sizeof g_err, "%s/stderr", g_dir);
    snprintf(g_junk, sizeof g_junk, "%s/junk.so", g_dir);
    snprintf(g_endpoint, sizeof g_endpoint, "ipc://%s", g_sock);
    if ((g_ctx = zmq_ctx_new()) == NULL ||
        (g_router = zmq_socket(g_ctx, ZMQ_ROUTER)) == NULL)
        return -1;
    zmq_setsockopt(g_router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(g_router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(g_router, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(g_router, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    return zmq_bind(g_router, g_endpoint) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (g_pid > 0) { /* a failed test's worker */
        kill(g_pid, SIGKILL);
        waitpid(g_pid, NULL, 0);
        g_pid = 0;
    }
    if (g_router != NULL)
        zmq_close(g_router);
    if (g_ctx != NULL)
        zmq_ctx_term(g_ctx);
    g_router = g_ctx = NULL;
    remove_dir();
    g_dir[0] = '\0';
    alarm(0);
    return 0;
}

/* ---- refusals ------------------------------------------------------------ */

static void test_bad_usage_exits_2(void **state)
{
    static const struct {
        const char *argv[8];
        const char *needle; /* the option the message must name */
    } cases[] = {
        {{NULL}, "--connect"},
        {{"--connect", "ipc:///tmp/x", NULL}, "--slot"},
        {{"--slot", "1", NULL}, "--connect"},
        {{"--connect", "tcp://127.0.0.1:5555", "--slot", "1", NULL}, "tcp://"},
        {{"--connect", "inproc://x", "--slot", "1", NULL}, "--connect"},
        {{"--connect", "ipc:///tmp/x", "--slot", "65536", NULL}, "--slot"},
        {{"--connect", "ipc:///tmp/x", "--slot", "-1", NULL}, "--slot"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--gen", "x", NULL},
         "--gen"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--prefetch", "0", NULL},
         "--prefetch"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--maxtasks", "1.5",
          NULL},
         "--maxtasks"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--max-rss", "12Q", NULL},
         "--max-rss"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--cpus", "3-1", NULL},
         "--cpus"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--cpus", "0,,1", NULL},
         "--cpus"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--cpus", "1023", NULL},
         "--cpus"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "--frobnicate", NULL},
         "--frobnicate"},
        {{"--connect", "ipc:///tmp/x", "--slot", NULL}, "--slot"},
        {{"--connect", "ipc:///tmp/x", "--slot", "1", "stray", NULL}, "stray"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = run_worker(cases[i].argv);
        const char *err = slurp(g_err);
        if (st != 2 || count_lines(err) != 1 ||
            strstr(err, cases[i].needle) == NULL)
            fail_msg("case %zu: status %d, stderr '%s' (want 2 and one line "
                     "naming %s)",
                     i, st, err, cases[i].needle);
    }
    /* --help: usage on stdout, status 0. */
    const char *help[] = {"--help", NULL};
    assert_int_equal(run_worker(help), 0);
    assert_non_null(strstr(slurp(g_out), "usage: picklepool-worker"));
    assert_non_null(strstr(slurp(g_out), "--connect ENDPOINT"));
    assert_string_equal(slurp(g_err), "");
    assert_false(something_arrives(0));
}

static void test_bad_plugin_exits_2(void **state)
{
    char missing[160];
    (void)state;

    /* A path that does not exist, then a file that is not a plugin. */
    snprintf(missing, sizeof missing, "%s/no-such-plugin.so", g_dir);
    const char *a1[] = {"--connect", g_endpoint, "--slot", "0",
                        "--plugin",  missing,    NULL};
    assert_int_equal(run_worker(a1), 2);
    assert_int_equal(count_lines(slurp(g_err)), 1);
    assert_non_null(strstr(slurp(g_err), missing));

    FILE *fp = fopen(g_junk, "w");
    assert_non_null(fp);
    fputs("not an ELF file\n", fp);
    fclose(fp);
    const char *a2[] = {"--connect", g_endpoint, "--slot", "0", "--plugin",
                        g_plugin,    "--plugin", g_junk,   NULL};
    assert_int_equal(run_worker(a2), 2);
    assert_int_equal(count_lines(slurp(g_err)), 1);
    assert_non_null(strstr(slurp(g_err), g_junk));

    /* Refused before connecting: the master never heard of it. */
    assert_false(something_arrives(100));
}

static void test_unknown_function_fails_items(void **state)
{
    uint8_t id[POOL_WIRE_ID_SIZE];
    pk_doc_t *doc = NULL;
    pk_buf_t items = {0};
    outcome_t out[3];
    (void)state;

    const char *none[] = {NULL};
    start_worker(2, 1, 2, none, id);
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    int_items(doc, &items, 0, 3);
    send_task(id, 7, "examples", "nope", &items, 3);
    recv_result(7, 3, doc, out);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out[i].status, PK_ENOFUNC);
        assert_non_null(strstr(out[i].msg, "examples.nope"));
    }
    /* A module no plugin registered, then a known function: still fine. */
    send_task(id, 8, "nosuchmodule", "square", &items, 3);
    recv_result(8, 3, doc, out);
    for (int i = 0; i < 3; i++)
        assert_int_equal(out[i].status, PK_ENOFUNC);
    square_round(id, 9, -5, 10);
    /* SAME_CALL: the call this worker last received (square) again */
    send_task(id, 10, NULL, NULL, &items, 3);
    recv_result(10, 3, doc, out);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out[i].status, 0);
        assert_int_equal(out[i].value->u.i, (int64_t)i * i);
    }
    send_stop(id);
    assert_int_equal(wait_exit(), 0);
    /* a fresh worker that never got a call refuses SAME_CALL per item */
    start_worker(2, 1, 2, none, id);
    send_task(id, 11, NULL, NULL, &items, 3);
    recv_result(11, 3, doc, out);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out[i].status, PK_EPROTO);
        assert_non_null(strstr(out[i].msg, "never received"));
    }
    square_round(id, 12, 1, 4); /* and goes on */
    send_stop(id);
    assert_int_equal(wait_exit(), 0);
    free(items.data);
    pk_doc_free(&doc);
}

/* ---- the real thing ------------------------------------------------------ */

static void test_tasks_garbage_and_stop(void **state)
{
    uint8_t id[POOL_WIRE_ID_SIZE], hb[POOL_WIRE_HDR_SIZE];
    pk_doc_t *doc = NULL;
    pk_buf_t items = {0}, call = {0};
    outcome_t out[4];
    msg_t m;
    pool__wire_hdr_t h;
    (void)state;

    const char *more[] = {"--gen", "7", "--prefetch", "4", NULL};
    start_worker(3, 7, 4, more, id);

    /* A real batch, with a result past 64 bits and a per-item error. */
    square_round(id, 1, -20, 41);
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    put_item(&items, pk_int(doc, 3037000500)); /* square > INT64_MAX */
    put_item(&items, pk_cstr(doc, "x"));
    put_item(&items, pk_int(doc, 12));
    send_task(id, 2, "examples", "square", &items, 3);
    recv_result(2, 3, doc, out);
    assert_int_equal(out[0].status, PK_OK);
    assert_int_equal(out[0].value->type, PK_BIGINT);
    assert_int_equal(out[1].status, PK_ETYPE);
    assert_non_null(strstr(out[1].msg, "TypeError"));
    assert_int_equal(out[2].status, PK_OK);
    int64_t v;
    assert_int_equal(pk_as_int(out[2].value, &v), PK_OK);
    assert_int_equal(v, 144);

    /* Garbage: none of it may kill the worker. */
    {
        const void *d[1] = {"short"};
        size_t l[1] = {5};
        send_frames(id, d, l, 1); /* header of the wrong size */
    }
    {
        uint8_t junk[POOL_WIRE_HDR_SIZE];
        memset(junk, 0xa5, sizeof junk);
        const void *d[3] = {junk, "x", "y"};
        size_t l[3] = {sizeof junk, 1, 1};
        send_frames(id, d, l, 3); /* bad magic */
    }
    pool__wire_hdr_t task1 = {.kind = POOL_WIRE_TASK, .batch = 50, .count = 1};
    send_hdr_only(id, &task1); /* a TASK without its frames */
    pool__wire_hdr_t ready = {.kind = POOL_WIRE_READY, .count = 1};
    send_hdr_only(id, &ready); /* a kind only workers send */
    /* Sound headers over broken payloads: every item fails EPROTO. */
    pool__wire_hdr_t task2 = {.kind = POOL_WIRE_TASK, .batch = 51, .count = 2};
    pool__wire_hdr_encode(&task2, hb);
    assert_int_equal(
        pk_dumps(pk_global(doc, "examples", "square"), NULL, &call, NULL),
        PK_OK);
    {
        const void *d[3] = {hb, call.data, "\x01\x02\x03"};
        size_t l[3] = {sizeof hb, call.len, 3};
        send_frames(id, d, l, 3); /* records that do not parse */
    }
    recv_result(51, 2, doc, out);
    assert_int_equal(out[0].status, PK_EPROTO);
    assert_int_equal(out[1].status, PK_EPROTO);
    task2.batch = 52;
    pool__wire_hdr_encode(&task2, hb);
    pk_buf_t two = {0};
    put_item(&two, pk_int(doc, 1));
    put_item(&two, pk_int(doc, 2));
    {
        const void *d[3] = {hb, "\x80\x05garbage", two.data};
        size_t l[3] = {sizeof hb, 9, two.len};
        send_frames(id, d, l, 3); /* a call frame that is no pickle */
    }
    recv_result(52, 2, doc, out);
    assert_int_equal(out[0].status, PK_EPROTO);
    assert_non_null(strstr(out[0].msg, "call frame"));
    assert_int_equal(out[1].status, PK_EPROTO);
    free(two.data);
    /* One item whose pickle is truncated: only that item fails. */
    pk_buf_t mixed = {0};
    put_item(&mixed, pk_int(doc, 5));
    uint8_t rec[POOL_WIRE_REC_SIZE + 3];
    pool__wire_rec_encode(rec, 3, 0, 0);
    memcpy(rec + POOL_WIRE_REC_SIZE, "\x80\x05K", 3);
    mixed.data = realloc(mixed.data, mixed.len + sizeof rec);
    assert_non_null(mixed.data);
    memcpy(mixed.data + mixed.len, rec, sizeof rec);
    mixed.len += sizeof rec;
    put_item(&mixed, pk_int(doc, 6));
    send_task(id, 53, "examples", "square", &mixed, 3);
    recv_result(53, 3, doc, out);
    assert_int_equal(out[0].status, PK_OK);
    assert_int_not_equal(out[1].status, PK_OK);
    assert_non_null(strstr(out[1].msg, "unpickle"));
    assert_int_equal(out[2].status, PK_OK);
    assert_int_equal(pk_as_int(out[2].value, &v), PK_OK);
    assert_int_equal(v, 36);
    free(mixed.data);

    /* Still alive and answering: a heartbeat echoed, then a real batch. */
    assert_alive();
    pool__wire_hdr_t beat = {.kind = POOL_WIRE_HEARTBEAT, .aux = 424242};
    send_hdr_only(id, &beat);
    recv_msg(&m);
    assert_int_equal(m.n, 2);
    parse_hdr(&m, &h);
    assert_int_equal(h.kind, POOL_WIRE_HEARTBEAT);
    assert_int_equal(h.aux, 424242);
    msg_close(&m);
    square_round(id, 100, 1000, 64);
    assert_alive();
    assert_non_null(strstr(slurp(g_err), "malformed"));

    send_stop(id);
    assert_int_equal(wait_exit(), 0);
    assert_false(something_arrives(0));
    free(items.data);
    pk_buf_free(&call);
    pk_doc_free(&doc);
}

static void test_maxtasks_retires(void **state)
{
    uint8_t id[POOL_WIRE_ID_SIZE];
    pk_doc_t *doc = NULL;
    pk_buf_t items = {0};
    outcome_t out[3];
    (void)state;

    const char *more[] = {"--maxtasks", "3", NULL};
    start_worker(0, 1, 2, more, id);
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    int_items(doc, &items, 1, 3);
    send_task(id, 1, "examples", "square", &items, 3);
    assert_true(recv_result(1, 3, doc, out) & POOL_WIRE_F_RETIRING);
    assert_int_equal(out[2].status, PK_OK);
    assert_int_equal(wait_exit(), 0); /* no STOP needed */
    free(items.data);
    pk_doc_free(&doc);
}

/* The CPUs thread tid of the worker may run on, from /proc. */
static void task_cpus(pid_t pid, const char *tid, char *buf, size_t size)
{
    char path[320], line[512];
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%d/task/%s/status", (int)pid, tid);
    buf[0] = '\0';
    assert_non_null(fp = fopen(path, "r"));
    while (fgets(line, sizeof line, fp) != NULL)
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            snprintf(buf, size, "%s", line + 18 + strspn(line + 18, " \t"));
            buf[strcspn(buf, "\n")] = '\0';
        }
    fclose(fp);
}

static void test_cpus_binds_every_thread(void **state)
{
    uint8_t id[POOL_WIRE_ID_SIZE];
    cpu_set_t self;
    char cpu[16], got[64];
    int last = -1, nthreads = 0;
    (void)state;

    /* The last CPU we may use: unlike CPU 0 it is rarely the default. */
    assert_int_equal(sched_getaffinity(0, sizeof self, &self), 0);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &self))
            last = c;
    assert_true(last >= 0);
    snprintf(cpu, sizeof cpu, "%d", last);
    const char *more[] = {"--cpus", cpu, NULL};
    start_worker(1, 1, 2, more, id); /* its ZeroMQ threads exist by now */
    square_round(id, 1, 0, 8);

    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)g_pid);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        task_cpus(g_pid, e->d_name, got, sizeof got);
        if (strcmp(got, cpu) != 0) {
            closedir(d);
            fail_msg("thread %s runs on CPUs %s, not %s", e->d_name, got, cpu);
        }
        nthreads++;
    }
    closedir(d);
    assert_true(nthreads >= 2); /* the worker and ZeroMQ's I/O thread */
    send_stop(id);
    assert_int_equal(wait_exit(), 0);
}

int main(void)
{
    const char *build = getenv("PICKLEPOOL_BUILD");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_usage_exits_2, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_plugin_exits_2, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unknown_function_fails_items,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_tasks_garbage_and_stop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_maxtasks_retires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpus_binds_every_thread, setup,
                                        teardown),
    };

    if (build == NULL || build[0] == '\0')
        build = "build";
    snprintf(g_bin, sizeof g_bin, "%s/picklepool-worker", build);
    snprintf(g_plugin, sizeof g_plugin, "%s/plugins/examples.so", build);
    if (access(g_bin, X_OK) != 0 || access(g_plugin, R_OK) != 0) {
        fprintf(stderr,
                "test_worker_exe: %s or %s is missing (run `make all`)\n",
                g_bin, g_plugin);
        return 1;
    }
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
