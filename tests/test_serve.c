/*
 * test_serve.c - `picklepool serve` (cli/serve.c), host agents (cli/host.c)
 * and remote pools (pool_opts_t.address) against each other on loopback,
 * each in a process of its own, so the sanitizer builds check all three.
 *
 *   - serve refuses keys that are not allow-listed and peers without
 *     CURVE, and survives an authenticated peer that sends garbage: junk
 *     frames, messages before HELLO (it answers STOP), bad HELLOs, TASKs
 *     with wrong frame counts, truncated records, shared-memory tables or
 *     SAME_CALL without a call (each answered with a RESULT failing its
 *     items), RESULTs from a client, unknown kinds, a storm of random
 *     frames, and a frame over --max-message (libzmq drops the peer); then
 *     it still welcomes a new client, and stops cleanly (exit 0, which
 *     under ASan means no leak);
 *   - the C API over a remote pool: pool_map_i64, maps of values with
 *     per-item errors, a per-item timeout enforced on the host, apply; and
 *     pool_create's refusals (a stranger's key within seconds, no keys,
 *     options a remote pool cannot take);
 *   - a host killed mid-map: the map completes in order on the other;
 *   - a master gone for good: a remote pool's batches fail with PK_EIO
 *     after its stall_timeout, saying so.
 *
 *   build/tests/test_serve [test-name-substring]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "cli/cli.h"
#include "ipc/remote.h"
#include "lib/pool_helpers.h"
#include "lib/runner.h"
#include "picklepool.h"

typedef struct keys {
    char root[64];
    char master[96], h0[96], h1[96], client[96], stranger[96];
} keys_t;

static void copy_pub(const char *from_dir, const char *name, const char *to_dir)
{
    char src[256], dst[256], buf[256];
    snprintf(src, sizeof src, "%s/%s.pub", from_dir, name);
    snprintf(dst, sizeof dst, "%s/%s.pub", to_dir, name);
    FILE *in = fopen(src, "r"), *out = fopen(dst, "w");
    assert_non_null(in);
    assert_non_null(out);
    size_t n = fread(buf, 1, sizeof buf, in);
    assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

/* master allow-lists h0, h1 and client; everyone trusts master.pub; the
 * stranger's pair is not allow-listed. */
static void make_keys(keys_t *k)
{
    pk_error_t e;
    snprintf(k->root, sizeof k->root, "/tmp/pp-serve-XXXXXX");
    assert_non_null(mkdtemp(k->root));
    struct {
        char *dir;
        const char *name;
    } all[] = {{k->master, "master"},
               {k->h0, "h0"},
               {k->h1, "h1"},
               {k->client, "client"},
               {k->stranger, "stranger"}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        snprintf(all[i].dir, 96, "%s/%s", k->root, all[i].name);
        if (pool__curve_keygen(all[i].dir, all[i].name, 0, NULL, &e) != PK_OK)
            fail_msg("keygen: %s", e.msg);
        if (i > 0) {
            copy_pub(k->master, "master", all[i].dir);
            if (i < 4)
                copy_pub(all[i].dir, all[i].name, k->master);
        }
    }
}

static void rm_keys(keys_t *k)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", k->root);
    if (system(cmd) != 0)
        fprintf(stderr, "test_serve: could not remove %s\n", k->root);
}

/* Runs a CLI command (pk__cmd_serve / pk__cmd_worker) in a child; its
 * stdout's first line (serve: "listening on EP ...") is read into line
 * when line is not NULL.  Returns the child's pid. */
static pid_t spawn(int (*cmd)(int, char **), char **argv, char *line,
                   size_t size)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        int argc = 0;
        while (argv[argc] != NULL)
            argc++;
        int st = cmd(argc, argv);
        fflush(stdout);
        _exit(st);
    }
    close(fds[1]);
    if (line != NULL) {
        size_t n = 0;
        while (n + 1 < size) {
            ssize_t r = read(fds[0], line + n, 1);
            if (r <= 0 || line[n] == '\n')
                break;
            n++;
        }
        line[n] = '\0';
    }
    close(fds[0]);
    return pid;
}

/* serve on loopback, any port; fills ep. */
static pid_t start_serve(const keys_t *k, char *ep, size_t size)
{
    char *argv[] = {"serve",  "--bind",          "tcp://127.0.0.1:*",
                    "--keys", (char *)k->master, "--heartbeat",
                    "0.2",    "--max-message",   "64K",
                    NULL};
    char line[400];
    pid_t pid = spawn(pk__cmd_serve, argv, line, sizeof line);
    const char *at = strstr(line, "tcp://");
    if (at == NULL)
        fail_msg("serve did not start: '%s'", line);
    snprintf(ep, size, "%.*s", (int)strcspn(at, " "), at);
    return pid;
}

static pid_t start_host(const char *ep, const char *keydir, const char *name)
{
    char *argv[] = {"worker",
                    "--connect",
                    (char *)ep,
                    "--keys",
                    (char *)keydir,
                    "--plugin",
                    (char *)tp_plugin_path(),
                    "--workers",
                    "1",
                    "--name",
                    (char *)name,
                    NULL};
    return spawn(pk__cmd_worker, argv, NULL, 0);
}

/* SIGTERM, then the exit status, which must be 0 (a clean stop: under
 * ASan, no leak either). */
static void stop_child(pid_t pid, const char *what)
{
    int st;
    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s ended with status 0x%x", what, st);
}

/* ---- a raw peer ------------------------------------------------------------- */

typedef struct peer {
    void *ctx, *sock;
    pool__curve_watch_t *w;
    pool__remote_sec_t sec;
} peer_t;

/* A DEALER with the keys of dir (NULL: plain tcp); returns the handshake's
 * verdict. */
static pk_err_t peer_open(peer_t *p, const char *ep, const char *dir,
                          pk_error_t *e)
{
    memset(p, 0, sizeof *p);
    p->ctx = zmq_ctx_new();
    assert_non_null(p->ctx);
    assert_int_equal(
        pool__remote_sec_load(ep, 0, dir, NULL, dir == NULL, &p->sec, e),
        PK_OK);
    assert_int_equal(
        pool__remote_dealer(p->ctx, ep, &p->sec, "serve", &p->sock, &p->w, e),
        PK_OK);
    return pool__curve_watch_handshake(p->w, 5000, NULL, e);
}

static void peer_close(peer_t *p)
{
    pool__curve_watch_close(&p->w);
    if (p->sock != NULL)
        zmq_close(p->sock);
    zmq_ctx_term(p->ctx);
    pool__remote_sec_free(&p->sec);
}

/* Sends frames f[0..n) (lengths len[]). */
static void sendv(peer_t *p, const void *const *f, const size_t *len, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pool__remote_send(p->sock, f[i], len[i], i + 1 < n),
                         0);
}

/* The next message within ms, parsed: its header (kind 0 when none came). */
static pool__wire_hdr_t recv_hdr(peer_t *p, int ms, pool__msg_t *m)
{
    pool__wire_hdr_t h;
    pk_error_t e;
    double end = tp_now_s() + ms / 1e3;
    for (;;) {
        zmq_pollitem_t it = {p->sock, 0, ZMQ_POLLIN, 0};
        int left = (int)((end - tp_now_s()) * 1e3);
        memset(&h, 0, sizeof h); /* heartbeats do not count */
        if (left < 0 || zmq_poll(&it, 1, left) <= 0)
            return h;
        pool__msg_clear(m);
        if (pool__msg_recv(p->sock, m, 1000, ZMQ_DONTWAIT, &e) != PK_OK)
            return h;
        assert_int_equal(pool__wire_hdr_parse(zmq_msg_data(&m->f[0]),
                                              zmq_msg_size(&m->f[0]), &h, &e),
                         PK_OK);
        if (h.kind != POOL_WIRE_HEARTBEAT)
            return h;
    }
}

static void hdr(uint8_t *b, uint8_t kind, uint16_t flags, uint64_t batch,
                uint32_t count, uint32_t nbufs)
{
    pool__wire_hdr_t h = {kind, flags, batch, count, nbufs, 0};
    pool__wire_hdr_encode(&h, b);
}

/* A RESULT for `batch` must come, every item failed with `status` and a
 * message containing `what`. */
static void expect_failed(peer_t *p, uint64_t batch, uint32_t count,
                          pk_err_t status, const char *what)
{
    pool__msg_t m = {0};
    pool__wire_hdr_t h = recv_hdr(p, 3000, &m);
    pool__wire_rec_t r[8];
    pk_error_t e;
    assert_int_equal(h.kind, POOL_WIRE_RESULT);
    assert_true(h.batch == batch);
    assert_int_equal(h.count, count);
    assert_int_equal(m.n, 2);
    assert_int_equal(pool__wire_recs_parse(zmq_msg_data(&m.f[1]),
                                           zmq_msg_size(&m.f[1]), count, 0, 1,
                                           r, &e),
                     PK_OK);
    for (uint32_t i = 0; i < count; i++) {
        assert_int_equal(r[i].status, status);
        char msg[400];
        snprintf(msg, sizeof msg, "%.*s", (int)r[i].len,
                 (const char *)r[i].data);
        if (strstr(msg, what) == NULL)
            fail_msg("\"%s\" does not say \"%s\"", msg, what);
    }
    pool__msg_free(&m);
}

static void expect_nothing(peer_t *p, int ms)
{
    pool__msg_t m = {0};
    pool__wire_hdr_t h = recv_hdr(p, ms, &m);
    if (h.kind != 0)
        fail_msg("unexpected %s", pool__wire_kind_name(h.kind));
    pool__msg_free(&m);
}

static void say_hello(peer_t *p)
{
    uint8_t h[32];
    hdr(h, POOL_WIRE_HELLO, POOL_WIRE_F_CLIENT, 0, 0, 0);
    const void *f[] = {h, "tester"};
    size_t l[] = {32, 6};
    sendv(p, f, l, 2);
    pool__msg_t m = {0};
    pool__wire_hdr_t w = recv_hdr(p, 3000, &m);
    assert_int_equal(w.kind, POOL_WIRE_HELLO);
    assert_int_equal(w.flags, POOL_WIRE_F_WELCOME);
    assert_true(w.batch != 0);
    assert_int_equal(w.count, 3);       /* liveness */
    assert_true(w.aux == 200000000ull); /* --heartbeat 0.2 */
    pool__msg_free(&m);
}

/* ---- refusals and garbage ----------------------------------------------------- */

static void test_serve_refusals_and_garbage(void **state)
{
    (void)state;
    keys_t k;
    char ep[300];
    pk_error_t e;
    peer_t p;
    make_keys(&k);
    pid_t serve = start_serve(&k, ep, sizeof ep);

    /* a key not allow-listed, and no CURVE at all: refused at once */
    assert_int_equal(peer_open(&p, ep, k.stranger, &e), PK_EPROTO);
    assert_non_null(strstr(e.msg, "not allow-listed"));
    peer_close(&p);
    assert_int_equal(peer_open(&p, ep, NULL, &e), PK_EPROTO);
    peer_close(&p);

    assert_int_equal(peer_open(&p, ep, k.client, &e), PK_OK);
    uint8_t h[32], junk[64];
    memset(junk, 0xa5, sizeof junk);
    uint8_t rec[POOL_WIRE_REC_SIZE + 4];
    pool__wire_rec_encode(rec, 4, 0, 0);
    memcpy(rec + POOL_WIRE_REC_SIZE, "\x80\x05K\x07", 4); /* wrong: no STOP */

    /* junk, and a TASK before any HELLO: STOP says "no session" */
    {
        const void *f[] = {junk};
        size_t l[] = {sizeof junk};
        sendv(&p, f, l, 1);
        expect_nothing(&p, 200);
        hdr(h, POOL_WIRE_TASK, 0, 9, 1, 0);
        const void *t[] = {h, "", rec};
        size_t tl[] = {32, 0, sizeof rec};
        sendv(&p, t, tl, 3);
        pool__msg_t m = {0};
        assert_int_equal(recv_hdr(&p, 3000, &m).kind, POOL_WIRE_STOP);
        pool__msg_free(&m);
    }
    /* HELLOs that are not: a bad name, a WELCOME, a missing name */
    {
        hdr(h, POOL_WIRE_HELLO, POOL_WIRE_F_CLIENT, 0, 0, 0);
        const void *f[] = {h, "bad\nname"};
        size_t l[] = {32, 8};
        sendv(&p, f, l, 2);
        expect_nothing(&p, 200);
        sendv(&p, f, l, 1);
        expect_nothing(&p, 200);
        hdr(h, POOL_WIRE_HELLO, POOL_WIRE_F_WELCOME, 5, 3, 0);
        ((uint8_t *)h)[24] = 1; /* aux */
        sendv(&p, f, l, 1);
        expect_nothing(&p, 200);
    }
    say_hello(&p);
    /* TASKs with a sound header but a bad body: their items fail */
    {
        hdr(h, POOL_WIRE_TASK, 0, 11, 1, 0);
        const void *f[] = {h, "", rec, "extra"};
        size_t l[] = {32, 0, sizeof rec, 5};
        sendv(&p, f, l, 4); /* one frame too many: dropped */
        expect_nothing(&p, 200);
        hdr(h, POOL_WIRE_TASK, 0, 12, 2, 0); /* 2 items, 1 record */
        size_t l3[] = {32, 0, sizeof rec};
        sendv(&p, f, l3, 3);
        expect_failed(&p, 12, 2, PK_EPROTO, "record 1 of 2 truncated");
        hdr(h, POOL_WIRE_TASK, POOL_WIRE_F_SAME_CALL, 13, 1, 0);
        sendv(&p, f, l3, 3);
        expect_failed(&p, 13, 1, PK_EPROTO, "SAME_CALL before any call");
        uint8_t tab[16];
        pool__wire_shm_encode(tab, 4096, 64);
        uint8_t rb[POOL_WIRE_REC_SIZE];
        pool__wire_rec_encode(rb, 0, 1, 0);
        hdr(h, POOL_WIRE_TASK, POOL_WIRE_F_SHM, 14, 1, 1);
        const void *s[] = {h, "c", rb, tab, ""};
        size_t sl[] = {32, 1, sizeof rb, 16, 0};
        sendv(&p, s, sl, 5);
        expect_failed(&p, 14, 1, PK_EPROTO, "shared-memory");
    }
    /* kinds a client does not send */
    {
        hdr(h, POOL_WIRE_RESULT, 0, 15, 1, 0);
        const void *f[] = {h, rec};
        size_t l[] = {32, sizeof rec};
        sendv(&p, f, l, 2);
        hdr(h, POOL_WIRE_READY, 0, 0, 1, 0);
        sendv(&p, f, l, 1);
        hdr(h, POOL_WIRE_FUNC, 0, 1, 0, 0);
        const void *g[] = {h, "x"};
        size_t gl[] = {32, 1};
        sendv(&p, g, gl, 2);
        expect_nothing(&p, 300);
    }
    /* a storm of random frames */
    srand(42);
    for (int i = 0; i < 300; i++) {
        uint8_t b[48];
        size_t n = (size_t)(rand() % 48);
        for (size_t j = 0; j < n; j++)
            b[j] = (uint8_t)rand();
        if (n >= 6 && (i & 1)) { /* a plausible header start */
            memcpy(b, "PKW1\x01", 5);
            b[5] = (uint8_t)(1 + rand() % 8);
            n = 32;
        }
        const void *f[] = {b, b};
        size_t l[] = {n, (size_t)(rand() % 8)};
        sendv(&p, f, l, 1 + (size_t)(i % 2));
    }
    /* serve still answers this peer: a good task gets an answer (no host:
     * it waits in the queue, so leaving drops it) */
    {
        pool__msg_t m = {0};
        hdr(h, POOL_WIRE_HEARTBEAT, 0, 0, 0, 0);
        const void *f[] = {h};
        size_t l[] = {32};
        sendv(&p, f, l, 1);
        hdr(h, POOL_WIRE_TASK, 0, 16, 1, 0);
        const void *t[] = {h, "", rec};
        size_t tl[] = {32, 0, sizeof rec};
        sendv(&p, t, tl, 3);
        expect_nothing(&p, 200); /* queued: no host */
        pool__msg_free(&m);
    }
    /* a frame over --max-message: libzmq drops the connection */
    {
        size_t big = 100 << 10;
        uint8_t *b = calloc(1, big);
        assert_non_null(b);
        hdr(h, POOL_WIRE_TASK, 0, 17, 1, 0);
        const void *f[] = {h, "", b};
        size_t l[] = {32, 0, big};
        sendv(&p, f, l, 3);
        free(b);
    }
    peer_close(&p);
    /* and it still welcomes a new client */
    assert_int_equal(peer_open(&p, ep, k.client, &e), PK_OK);
    say_hello(&p);
    peer_close(&p);
    stop_child(serve, "serve");
    rm_keys(&k);
}

/* ---- the C API over a remote pool -------------------------------------------- */

/* Keys, serve and nhosts (1 or 2) host agents h0, h1 on it (their pids in
 * hosts), and this process's fork server: what a remote pool test needs.
 * Returns serve's pid; skips the test without the examples plugin. */
static pid_t start_cluster(keys_t *k, char *ep, size_t cap, pid_t *hosts,
                           int nhosts)
{
    if (access(tp_plugin_path(), R_OK) != 0)
        skip();
    make_keys(k);
    pid_t serve = start_serve(k, ep, cap);
    hosts[0] = start_host(ep, k->h0, "h0");
    if (nhosts > 1)
        hosts[1] = start_host(ep, k->h1, "h1");
    assert_int_equal(pool_global_init(NULL), PK_OK);
    return serve;
}

/* A pool on serve's hosts (stall_timeout 0: the default). */
static pool_t *remote_pool(const char *ep, const char *keydir,
                           double stall_timeout)
{
    pool_opts_t o;
    pool_t *p = NULL;
    pk_error_t e;
    pool_opts_init(&o);
    o.address = ep;
    o.keys = keydir;
    o.stall_timeout = stall_timeout;
    if (pool_create(&p, &o, &e) != PK_OK)
        fail_msg("pool_create: %s", e.msg);
    return p;
}

static void test_remote_pool_c_api(void **state)
{
    (void)state;
    keys_t k;
    char ep[300];
    pid_t host;
    pid_t serve = start_cluster(&k, ep, sizeof ep, &host, 1);

    /* refusals first */
    pool_opts_t o;
    pool_t *p = NULL;
    pk_error_t e;
    pool_opts_init(&o);
    o.address = ep;
    o.keys = k.stranger;
    double t0 = tp_now_s();
    assert_int_equal(pool_create(&p, &o, &e), PK_EPROTO);
    assert_non_null(strstr(e.msg, "not allow-listed"));
    assert_true(tp_now_s() - t0 < 6.0);
    o.keys = NULL;
    assert_int_equal(pool_create(&p, &o, &e), PK_EINVAL);
    o.keys = k.client;
    o.workers = 2;
    assert_int_equal(pool_create(&p, &o, &e), PK_EINVAL);
    assert_non_null(strstr(e.msg, "takes no workers"));
    tp_opts_for(&o, 0);
    o.address = ep;
    o.keys = k.client;
    assert_int_equal(pool_create(&p, &o, &e), PK_EINVAL);
    assert_non_null(strstr(e.msg, "takes no plugins"));
    assert_null(p);

    p = remote_pool(ep, k.client, 0);
    enum { N = 20000 };
    static int64_t in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i - 100;
    size_t nf = 0;
    CHECK_OK(
        pool_map_i64(p, "examples", "square", in, out, N, NULL, NULL, &nf, E_));
    assert_int_equal(nf, 0);
    for (int i = 0; i < N; i++)
        assert_true(out[i] == (int64_t)(i - 100) * (i - 100));

    /* values, with an item that fails on the host */
    pk_doc_t *d = NULL;
    assert_int_equal(pk_doc_new(&d), PK_OK);
    pk_value_t *items[3] = {pk_str(d, "boom", 4), pk_int(d, 7),
                            pk_str(d, "again", 5)};
    pool_results_t *r = NULL;
    CHECK_OK(pool_map(p, "examples", "fail", (const pk_value_t *const *)items,
                      3, NULL, &r, E_));
    assert_int_equal(pool_results_failed(r), 3);
    assert_int_equal(pool_results_item(r, 0)->status, PK_EFUNC);
    assert_string_equal(pool_results_item(r, 0)->error, "ValueError: boom");
    assert_string_equal(pool_results_item(r, 1)->error, "ValueError: 7");
    pool_results_free(&r);
    /* an unknown function is the host's to say */
    CHECK_OK(pool_map(p, "examples", "nope", (const pk_value_t *const *)items,
                      1, NULL, &r, E_));
    assert_int_equal(pool_results_item(r, 0)->status, PK_ENOFUNC);
    pool_results_free(&r);
    /* a per-item timeout, enforced where the item runs */
    pk_value_t *naps[3] = {pk_float(d, 0.01), pk_float(d, 30.0),
                           pk_float(d, 0.02)};
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.timeout = 0.5;
    co.chunksize = 3;
    t0 = tp_now_s();
    CHECK_OK(pool_map(p, "examples", "sleep", (const pk_value_t *const *)naps,
                      3, &co, &r, E_));
    assert_true(tp_now_s() - t0 < 20.0);
    assert_int_equal(pool_results_item(r, 0)->status, PK_OK);
    assert_int_equal(pool_results_item(r, 1)->status, PK_ETIMEDOUT);
    assert_int_equal(pool_results_item(r, 2)->status, PK_OK);
    pool_results_free(&r);
    /* one call */
    pool_future_t *f = NULL;
    pk_value_t *args = pk_tuple_new(d, 1);
    pk_tuple_set(args, 0, pk_int(d, 12));
    CHECK_OK(pool_apply_async(p, "examples", "square", args, NULL, &f, E_));
    pool_item_t it;
    assert_int_equal(pool_future_wait(f, 30, &it), PK_OK);
    assert_int_equal(it.status, PK_OK);
    int64_t v;
    assert_int_equal(pk_as_int(it.value, &v), PK_OK);
    assert_int_equal(v, 144);
    pool_future_free(&f);
    pk_doc_free(&d);
    pool_destroy(&p);
    stop_child(host, "host");
    stop_child(serve, "serve");
    rm_keys(&k);
}

/* ---- a host dies mid-map -------------------------------------------------------- */

static pk_err_t nap_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    int *left = ctx;
    *item = *left > 0 ? pk_float(doc, 0.05) : NULL;
    (*left)--;
    return PK_OK;
}

static void test_host_killed_mid_map(void **state)
{
    (void)state;
    keys_t k;
    char ep[300];
    pid_t hosts[2];
    pid_t serve = start_cluster(&k, ep, sizeof ep, hosts, 2);
    pid_t h0 = hosts[0], h1 = hosts[1];
    pool_t *p = remote_pool(ep, k.client, 0);
    tp_sleep_s(0.5); /* both hosts joined */
    int left = 40;
    pool_iter_t *it = NULL;
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.chunksize = 1;
    pk_error_t e;
    assert_int_equal(
        pool_imap(p, "examples", "sleep", nap_next, &left, &co, &it, &e),
        PK_OK);
    size_t got = 0;
    pool_item_t item;
    while (pool_iter_next(it, &item, 30) == PK_OK) {
        assert_int_equal(item.index, got);
        if (item.status != PK_OK)
            fail_msg("item %zu: %s", item.index, item.error);
        if (++got == 6)
            kill(h0, SIGKILL); /* no goodbye: serve finds out by silence */
    }
    assert_int_equal(got, 40);
    pool_iter_free(&it);
    pool_destroy(&p);
    int st;
    assert_int_equal(waitpid(h0, &st, 0), h0);
    stop_child(h1, "host h1");
    stop_child(serve, "serve");
    rm_keys(&k);
}

/* ---- the master goes away for good ----------------------------------------------- */

static void test_master_gone_gives_up(void **state)
{
    (void)state;
    keys_t k;
    char ep[300];
    pid_t host;
    pid_t serve = start_cluster(&k, ep, sizeof ep, &host, 1);
    pool_t *p = remote_pool(ep, k.client, 1.0); /* gives up after 1 s */
    pk_error_t e;
    int64_t in[3] = {1, 2, 3}, out[3] = {0, 0, 0};
    size_t nf = 0;
    CHECK_OK(
        pool_map_i64(p, "examples", "square", in, out, 3, NULL, NULL, &nf, E_));
    assert_int_equal(nf, 0);
    assert_true(out[2] == 9);
    int st;
    kill(serve, SIGKILL); /* no goodbye */
    assert_int_equal(waitpid(serve, &st, 0), serve);
    /* the batches wait for a master, then fail saying why */
    pk_err_t status[3];
    double t0 = tp_now_s();
    assert_int_equal(pool_map_i64(p, "examples", "square", in, out, 3, NULL,
                                  status, &nf, &e),
                     PK_OK);
    assert_true(tp_now_s() - t0 < 20.0);
    assert_int_equal(nf, 3);
    assert_int_equal(status[0], PK_EIO);
    assert_non_null(strstr(e.msg, "no answer from the master"));
    pool_destroy(&p);
    stop_child(host, "host");
    rm_keys(&k);
}

int main(int argc, char **argv)
{
    static const runner_test_t tests[] = {
        RUNNER_TEST(test_serve_refusals_and_garbage, 60),
        RUNNER_TEST(test_remote_pool_c_api, 90),
        RUNNER_TEST(test_host_killed_mid_map, 90),
        RUNNER_TEST(test_master_gone_gives_up, 60),
    };
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), NULL);
}
