/*
 * host.c - the loop of `picklepool worker` (cmd_worker.c has its options):
 * a host agent that serves a `picklepool serve` master with the local
 * pools of its machine.
 *
 * It makes a local pool of native workers (the plugins loaded, pinned,
 * supervised, respawned; per-item timeouts and poison-item isolation as in
 * any pool), and on the first Python call a pool of Python workers (with
 * --python), then joins serve as a HOST of a given capacity.  Each TASK is
 * one raw map on the pool its call frame names - a pickled global for
 * native kernels, the Python front-end's (1, mode, function) tuple for
 * Python functions (python/picklepool/_protocol.py) - and is answered with
 * one RESULT holding a record per item.
 *
 * Threads.  The main thread owns the ZeroMQ socket (sockets are not
 * thread-safe): it reads TASKs, checks them, and queues them as jobs; a
 * runner thread per unit of capacity takes a job, runs its map (pool
 * calls are thread-safe) and queues the answer; the main thread sends it,
 * woken by an eventfd.  Lock order: agent.mu only (py_mu is taken alone,
 * never with mu held).  A job belongs to one thread at a time: the main
 * thread until it is queued, then a runner, then the main thread again.
 *
 * Sessions.  The main thread says HELLO and waits for WELCOME; heartbeats
 * go both ways at the interval WELCOME gave.  When the master has been
 * silent for `liveness` intervals, or ends the session (STOP), the agent
 * drops the session's work (a runner cancels a map whose session is over:
 * serve has given the batch to another host) and says HELLO again, on a
 * new socket after a backoff (0.1 s doubling to 5 s) when the master is
 * unreachable.  A refused key ends the agent: it cannot get better by
 * retrying.
 *
 * Fork discipline: the pools (and so the fork server) are made before any
 * thread or ZeroMQ context of this process exists.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <zmq.h>

#include "cli.h"
#include "core/common.h"
#include "ipc/remote.h"
#include "ipc/scoreboard.h"
#include "picklepool/pool.h"
#include "picklepool/value.h"
#include "pool/scaleout.h"

/* reconnects back off from 0.1 s (pool__link_t) ... */
#define BACKOFF_MAX_NS 5000000000ull /* ... doubling up to 5 s */
#define POLL_MS 100
#define RUN_POLL_S 0.2 /* how often a runner looks at its session */

enum route { ROUTE_NATIVE = 1, ROUTE_PYTHON };

/* A call frame of the session, shared by its jobs. */
typedef struct call {
    atomic_int refs;
    zmq_msg_t frame;
    enum route route;
    /* a bare global without kwargs: module.name, for the vector maps */
    char *module, *name;
} call_t;

/* One TASK and, once run, its RESULT. */
typedef struct job {
    struct job *next;
    uint64_t session;
    pool__wire_hdr_t h; /* the TASK's header */
    call_t *call;
    zmq_msg_t *frames; /* the items payload, then h.nbufs buffers */
    pool__wire_rec_t *recs;
    pk_buffer_t *bufs;
    /* the answer */
    uint16_t rflags;
    pk_buf_t out;     /* outcome records, or the raw vector */
    zmq_msg_t *obufs; /* result buffers */
    size_t nobufs, cap_obufs;
    uint64_t ns;
    int abandoned; /* its session ended while it ran */
} job_t;

typedef struct agent {
    const pk__host_cfg_t *cfg;
    pool_t *native, *python;
    pk_err_t py_rc; /* the Python pool could not be made */
    char py_msg[768];
    pthread_mutex_t py_mu;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *todo_head, *todo_tail, *done_head, *done_tail;
    atomic_int stopping;
    int efd;
    _Atomic uint64_t session; /* 0: none */
    pthread_t *runners;
    int nrunners;
    unsigned logged;
    int nworkers; /* of each local pool */
    int capacity; /* batches at once: the runner threads */
    char name[POOL_WIRE_NAME_MAX + 1];
} agent_t;

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
    stop_sig = sig;
}

#define WHO "picklepool worker"
#define say(...) pool__remote_say(WHO, __VA_ARGS__)
#define log_once(a, kind, ...)                                                 \
    pool__remote_log_once(&(a)->logged, (kind), WHO, __VA_ARGS__)

/* ---- calls and jobs ------------------------------------------------------------ */

/* Which pool a call frame is for: the Python front-end's frames are the
 * pickle of (1, "map" | "star" | "apply", bytes); anything else goes to
 * the native workers, which say what is wrong with a bad frame. */
static enum route route_of(call_t *c, const void *data, size_t len)
{
    pk_doc_t *doc = NULL;
    pk_value_t *v = NULL;
    size_t used = 0;
    enum route r = ROUTE_NATIVE;
    if (pk_doc_new(&doc) != PK_OK)
        return r;
    if (pk_loads(doc, data, len, NULL, &v, &used, NULL) == PK_OK &&
        v->type == PK_GLOBAL && used == len) {
        c->module = pk__strdup(v->u.global.module);
        c->name = pk__strdup(v->u.global.name);
        if (c->module == NULL || c->name == NULL) {
            pk__free(c->module);
            pk__free(c->name);
            c->module = c->name = NULL;
        }
    } else if (v != NULL && v->type == PK_TUPLE && pk_len(v) == 3) {
        const pk_value_t *ver = pk_item(v, 0), *mode = pk_item(v, 1),
                         *fn = pk_item(v, 2);
        if (ver->type == PK_INT && ver->u.i == 1 && mode->type == PK_STR &&
            fn->type == PK_BYTES &&
            (strcmp(mode->u.str.ptr, "map") == 0 ||
             strcmp(mode->u.str.ptr, "star") == 0 ||
             strcmp(mode->u.str.ptr, "apply") == 0))
            r = ROUTE_PYTHON;
    }
    pk_doc_free(&doc);
    return r;
}

static void call_unref(call_t *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    zmq_msg_close(&c->frame);
    pk__free(c->module);
    pk__free(c->name);
    pk__free(c);
}

static void job_free(job_t *j)
{
    if (j == NULL)
        return;
    if (j->frames != NULL)
        for (size_t i = 0; i < 1 + (size_t)j->h.nbufs; i++)
            zmq_msg_close(&j->frames[i]);
    for (size_t i = 0; i < j->nobufs; i++)
        zmq_msg_close(&j->obufs[i]);
    pk__free(j->obufs);
    pk__free(j->frames);
    pk__free(j->recs);
    pk__free(j->bufs);
    pk_buf_free(&j->out);
    call_unref(j->call);
    pk__free(j);
}

/* ---- building the answer --------------------------------------------------------- */

static int out_put(job_t *j, const void *data, size_t len)
{
    if (pk__grow_bytes(&j->out.data, &j->out.cap, j->out.len, len, 4096) != 0)
        return -1;
    if (len > 0)
        memcpy(j->out.data + j->out.len, data, len);
    j->out.len += len;
    return 0;
}

static int out_failure(job_t *j, pk_err_t status, const char *msg)
{
    uint8_t rec[POOL_WIRE_REC_SIZE];
    size_t n = strlen(msg);
    if (n > 4000)
        n = 4000;
    if (status == PK_OK)
        status = PK_EPROTO;
    pool__wire_rec_encode(rec, (uint32_t)n, 0, (uint32_t)status);
    return out_put(j, rec, sizeof rec) || out_put(j, msg, n) ? -1 : 0;
}

static int out_success(job_t *j, const pool_raw_result_t *r)
{
    uint8_t rec[POOL_WIRE_REC_SIZE];
    if (r->len > UINT32_MAX || r->nbufs > POOL_WIRE_MAX_BUFS)
        return out_failure(j, PK_ELIMIT, "result too large for one record");
    pool__wire_rec_encode(rec, (uint32_t)r->len, (uint32_t)r->nbufs, 0);
    if (out_put(j, rec, sizeof rec) || out_put(j, r->data, r->len))
        return -1;
    for (size_t k = 0; k < r->nbufs; k++) {
        if (j->nobufs == j->cap_obufs) {
            size_t nc = j->cap_obufs ? j->cap_obufs * 2 : 8;
            zmq_msg_t *x = pk__realloc(j->obufs, nc * sizeof *x);
            if (x == NULL)
                return -1;
            j->obufs = x;
            j->cap_obufs = nc;
        }
        zmq_msg_t *m = &j->obufs[j->nobufs];
        if (zmq_msg_init_size(m, r->bufs[k].len) != 0)
            return -1;
        if (r->bufs[k].len > 0)
            memcpy(zmq_msg_data(m), r->bufs[k].data, r->bufs[k].len);
        j->nobufs++;
    }
    return 0;
}

/* Reads a one-number pickle as the C and CPython picklers write them:
 * PROTO, an optional FRAME, one int, bool or float opcode, STOP.  Returns
 * 1 (int in *i), 2 (float in *d) or 0 (something else). */
static int tiny_number(const uint8_t *p, size_t n, int64_t *i, double *d)
{
    size_t at = 0;
    if (n >= 2 && p[0] == 0x80)
        at = 2;
    if (at < n && p[at] == 0x95) /* FRAME */
        at += 9;
    if (at >= n)
        return 0;
    uint8_t op = p[at++];
    size_t len;
    int kind = 1;
    switch (op) {
    case 'J':
        len = 4;
        break;
    case 'K':
        len = 1;
        break;
    case 'M':
        len = 2;
        break;
    case 0x8a: /* LONG1 */
        if (at >= n || p[at] > 8)
            return 0;
        len = p[at++];
        break;
    case 'G':
        len = 8;
        kind = 2;
        break;
    case 0x88:
    case 0x89: /* NEWTRUE, NEWFALSE */
        len = 0;
        break;
    default:
        return 0;
    }
    if (n - at != len + 1 || p[at + len] != '.')
        return 0;
    if (kind == 2) {
        uint64_t u = 0;
        for (size_t k = 0; k < 8; k++)
            u = u << 8 | p[at + k];
        memcpy(d, &u, sizeof *d);
        return 2;
    }
    if (op == 0x88 || op == 0x89) {
        *i = op == 0x88;
        return 1;
    }
    uint64_t u = 0;
    for (size_t k = 0; k < len; k++)
        u |= (uint64_t)p[at + k] << (8 * k);
    int sign = op == 'J' || op == 0x8a;
    if (sign && len > 0 && len < 8 && (p[at + len - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * len); /* sign-extend */
    *i = (int64_t)u;
    return 1;
}

/* Rewrites an all-successful record answer as the raw vector the TASK
 * asked for (RES_I64 / RES_F64), when every result is such a number. */
static void try_vector(job_t *j)
{
    int want_f = (j->h.flags & POOL_WIRE_F_RES_F64) != 0;
    if (!(j->h.flags & (POOL_WIRE_F_RES_I64 | POOL_WIRE_F_RES_F64)) ||
        j->nobufs != 0)
        return;
    pool__wire_rec_t *r = pk__malloc((size_t)j->h.count * sizeof *r);
    uint8_t *vec = pk__malloc((size_t)j->h.count * 8 + 1);
    pk_doc_t *doc = NULL;
    int ok = r != NULL && vec != NULL &&
             pool__wire_recs_parse(j->out.data, j->out.len, j->h.count, 0, 1, r,
                                   NULL) == PK_OK;
    for (uint32_t k = 0; ok && k < j->h.count; k++) {
        int64_t i = 0;
        double d = 0;
        int kind =
            r[k].status == 0 ? tiny_number(r[k].data, r[k].len, &i, &d) : -1;
        if (kind == 0) { /* not a tiny pickle: the decoder says */
            pk_value_t *v = NULL;
            if (doc == NULL && pk_doc_new(&doc) != PK_OK)
                kind = -1;
            else if (pk_loads(doc, r[k].data, r[k].len, NULL, &v, NULL, NULL) !=
                     PK_OK)
                kind = -1;
            else if (!want_f && pk_as_int(v, &i) == PK_OK)
                kind = 1;
            else if (want_f && pk_as_double(v, &d) == PK_OK)
                kind = 2;
            else
                kind = -1;
        }
        if (kind < 0 || (!want_f && kind != 1)) {
            ok = 0;
            break;
        }
        if (want_f && kind == 1)
            d = (double)i;
        uint64_t u;
        if (want_f)
            memcpy(&u, &d, 8);
        else
            u = (uint64_t)i;
        for (int b = 0; b < 8; b++)
            vec[(size_t)k * 8 + (size_t)b] = (uint8_t)(u >> (8 * b));
    }
    if (ok) {
        pk__free(j->out.data);
        j->out.data = vec;
        j->out.len = j->out.cap = (size_t)j->h.count * 8;
        j->rflags = want_f ? POOL_WIRE_F_VEC_F64 : POOL_WIRE_F_VEC_I64;
        vec = NULL;
    }
    pk_doc_free(&doc);
    pk__free(vec);
    pk__free(r);
}

/* ---- running a job ------------------------------------------------------------------ */

typedef struct src {
    job_t *j;
    uint32_t pos;
    uint8_t scratch[16];
} src_t;

/* The raw map's input: the TASK's records, or its numbers pickled one by
 * one (the pickles a C or CPython pickler writes for them). */
static pk_err_t next_item(void *ctx, pool_raw_item_t *item)
{
    src_t *s = ctx;
    job_t *j = s->j;
    if (s->pos == j->h.count)
        return PK_EOF;
    uint32_t k = s->pos++;
    memset(item, 0, sizeof *item);
    if (j->h.flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        const uint8_t *v =
            (const uint8_t *)zmq_msg_data(&j->frames[0]) + (size_t)k * 8;
        uint8_t *p = s->scratch;
        size_t n = 0;
        p[n++] = 0x80;
        p[n++] = 5;
        if (j->h.flags & POOL_WIRE_F_VEC_F64) {
            p[n++] = 'G'; /* BINFLOAT: big-endian */
            for (int b = 7; b >= 0; b--)
                p[n++] = v[b];
        } else {
            int64_t x = (int64_t)pk__ld64(v);
            if (x >= INT32_MIN && x <= INT32_MAX) {
                p[n++] = 'J';
                memcpy(p + n, v, 4);
                n += 4;
            } else {
                p[n++] = 0x8a; /* LONG1 of 8 bytes */
                p[n++] = 8;
                memcpy(p + n, v, 8);
                n += 8;
            }
        }
        p[n++] = '.';
        item->data = p;
        item->len = n;
        return PK_OK;
    }
    const pool__wire_rec_t *r = &j->recs[k];
    item->data = r->data;
    item->len = r->len;
    item->bufs = r->nbufs ? &j->bufs[r->buf0] : NULL;
    item->nbufs = r->nbufs;
    return PK_OK;
}

/* The Python pool, made on first use (after the threads exist: its
 * workers are forked by the fork server, made while this process was
 * single-threaded).  NULL with a->py_msg saying why. */
static pool_t *python_pool(agent_t *a)
{
    pthread_mutex_lock(&a->py_mu);
    if (a->python == NULL && a->py_rc == PK_OK) {
        pk_error_t err;
        pk_error_clear(&err);
        if (a->cfg->python == NULL) {
            a->py_rc = PK_ENOFUNC;
            snprintf(a->py_msg, sizeof a->py_msg,
                     "host %.200s runs no Python functions (start picklepool "
                     "worker with --python PATH)",
                     a->name);
        } else {
            pool_opts_t o;
            pool_opts_init(&o);
            o.workers = a->cfg->workers;
            o.placement = a->cfg->placement;
            o.worker_argv = a->cfg->py_argv;
            o.worker_env = a->cfg->py_env;
            a->py_rc = pool_create(&a->python, &o, &err);
            if (a->py_rc != PK_OK)
                snprintf(
                    a->py_msg, sizeof a->py_msg,
                    "host %.200s cannot start Python workers (%.200s): %.250s",
                    a->name, a->cfg->python, err.msg);
            else
                say("started %d Python workers (%s)", a->nworkers,
                    a->cfg->python);
        }
        if (a->py_rc != PK_OK)
            say("%s", a->py_msg);
    }
    pool_t *p = a->python;
    pthread_mutex_unlock(&a->py_mu);
    return p;
}

static void fail_rest(job_t *j, uint32_t from, pk_err_t rc, const char *msg)
{
    for (uint32_t k = from; k < j->h.count; k++)
        if (out_failure(j, rc, msg) != 0)
            break;
}

/* A vector batch of a plain native function: pool_map_i64 / _f64 on the
 * native pool, numbers in and out with no pickle per item.  Returns 1 when
 * every item succeeded and the answer is built; 0 to run the batch as a
 * raw map instead (some item failed: that path has each item's message). */
static int run_vector(agent_t *a, job_t *j, const pool_call_opts_t *co)
{
    int f64 = (j->h.flags & POOL_WIRE_F_VEC_F64) != 0;
    uint16_t res = f64 ? POOL_WIRE_F_RES_F64 : POOL_WIRE_F_RES_I64;
    if (j->call->module == NULL || !(j->h.flags & res))
        return 0;
    size_t n = j->h.count, nf = 0;
    void *in = pk__malloc(n * 8), *out = pk__malloc(n * 8);
    pk_error_t err;
    pk_error_clear(&err);
    pk_err_t rc = PK_ENOMEM;
    if (in != NULL && out != NULL) {
        memcpy(in, zmq_msg_data(&j->frames[0]), n * 8);
        rc = f64 ? pool_map_f64(a->native, j->call->module, j->call->name, in,
                                out, n, co, NULL, &nf, &err)
                 : pool_map_i64(a->native, j->call->module, j->call->name, in,
                                out, n, co, NULL, &nf, &err);
    }
    pk__free(in);
    if (rc != PK_OK || nf != 0) {
        pk__free(out);
        return 0;
    }
    pk__free(j->out.data);
    j->out.data = out;
    j->out.len = j->out.cap = n * 8;
    j->rflags = f64 ? POOL_WIRE_F_VEC_F64 : POOL_WIRE_F_VEC_I64;
    return 1;
}

static void run_job(agent_t *a, job_t *j)
{
    uint64_t t0 = pool__now_ns();
    pool_t *p = j->call->route == ROUTE_PYTHON ? python_pool(a) : a->native;
    if (p == NULL) {
        fail_rest(j, 0, a->py_rc != PK_OK ? a->py_rc : PK_ENOFUNC, a->py_msg);
        j->ns = pool__now_ns() - t0;
        return;
    }
    pool_call_opts_t co;
    pool_call_opts_init(&co);
    co.timeout = j->h.aux != 0 ? (double)j->h.aux / 1e9 : -1.0;
    /* The client sized the batch for the host as a whole: four pieces for
     * each local worker, rather than a new map's small first chunks. */
    size_t per = 4 * (size_t)(a->nworkers > 0 ? a->nworkers : 1);
    co.chunksize = (j->h.count + per - 1) / per;
    if (p == a->native &&
        (j->h.flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) &&
        run_vector(a, j, &co)) {
        j->ns = pool__now_ns() - t0;
        return;
    }
    src_t s = {.j = j};
    pool_iter_t *it = NULL;
    pk_error_t err;
    pk_error_clear(&err);
    pk_err_t rc = pool__imap_raw_flags(
        p, zmq_msg_data(&j->call->frame), zmq_msg_size(&j->call->frame),
        j->h.flags & POOL_WIRE_F_STARARGS, next_item, &s, 1, &co, &it, &err);
    uint32_t got = 0;
    if (rc != PK_OK) {
        fail_rest(j, 0, rc, err.msg[0] ? err.msg : pk_strerror(rc));
        j->ns = pool__now_ns() - t0;
        return;
    }
    int all_ok = 1;
    while (got < j->h.count) {
        pool_raw_result_t r;
        rc = pool_iter_next_raw(it, &r, RUN_POLL_S);
        if (rc == PK_ETIMEDOUT || (got % 4096 == 4095 && rc == PK_OK &&
                                   atomic_load(&a->session) != j->session)) {
            if (atomic_load(&a->session) != j->session ||
                atomic_load(&a->stopping)) {
                j->abandoned = 1; /* serve gave it to another host */
                break;
            }
            continue;
        }
        if (rc != PK_OK) {
            char msg[300];
            snprintf(msg, sizeof msg, "the host's pool stopped the map: %s",
                     rc == PK_EOF ? "too few results" : pk_strerror(rc));
            fail_rest(j, got, rc == PK_EOF ? PK_EPROTO : rc, msg);
            all_ok = 0;
            break;
        }
        int bad = r.status == PK_OK
                      ? out_success(j, &r)
                      : out_failure(j, r.status, r.error ? r.error : "failed");
        if (bad) {
            /* Out of memory: what is built is dropped, the client's items
             * fail as a whole rather than come back half. */
            j->out.len = 0;
            for (size_t i = 0; i < j->nobufs; i++)
                zmq_msg_close(&j->obufs[i]);
            j->nobufs = 0;
            fail_rest(j, 0, PK_ENOMEM, "the host ran out of memory");
            all_ok = 0;
            break;
        }
        all_ok &= r.status == PK_OK;
        got++;
    }
    pool_iter_free(&it);
    if (all_ok && !j->abandoned)
        try_vector(j);
    j->ns = pool__now_ns() - t0;
}

static void *runner_main(void *arg)
{
    agent_t *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (a->todo_head == NULL && !a->stopping)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stopping)
            break;
        job_t *j = a->todo_head;
        a->todo_head = j->next;
        if (a->todo_head == NULL)
            a->todo_tail = NULL;
        j->next = NULL;
        pthread_mutex_unlock(&a->mu);
        if (atomic_load(&a->session) == j->session)
            run_job(a, j);
        else
            j->abandoned = 1;
        pthread_mutex_lock(&a->mu);
        PK__LIST_APPEND(a->done_head, a->done_tail, j);
        uint64_t one = 1;
        if (write(a->efd, &one, sizeof one) < 0) {
            /* the counter is saturated: the main thread wakes anyway */
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the session ------------------------------------------------------------------- */

typedef struct conn {
    void *sock;
    pool__curve_watch_t *watch;
    enum { C_NONE, C_HELLO, C_SESSION } state;
    pool__link_t link;
    uint64_t hello_ns;
    call_t *call; /* the session's last call frame */
    int joined;   /* a session was had before */
    int told_wait;
} conn_t;

static void conn_close(agent_t *a, conn_t *c, uint64_t now, int backoff)
{
    pool__curve_watch_close(&c->watch);
    if (c->sock != NULL)
        zmq_close(c->sock);
    c->sock = NULL;
    c->state = C_NONE;
    call_unref(c->call);
    c->call = NULL;
    atomic_store(&a->session, 0);
    pool__link_closed(&c->link, now, backoff);
}

/* Drops the queued jobs of sessions that are over. */
static void purge_todo(agent_t *a)
{
    pthread_mutex_lock(&a->mu);
    job_t *j = a->todo_head;
    a->todo_head = a->todo_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (j != NULL) { /* none is of a live session: called at its end */
        job_t *n = j->next;
        job_free(j);
        j = n;
    }
}

static int send_hello(agent_t *a, conn_t *c, uint64_t now)
{
    c->state = C_HELLO;
    c->hello_ns = now;
    return pool__remote_hello(c->sock, POOL_WIRE_F_HOST, (uint32_t)a->capacity,
                              a->name);
}

/* Answers a TASK whose header was sound but whose body is not. */
static void answer_failed(conn_t *c, const pool__wire_hdr_t *h, pk_err_t rc,
                          const char *msg)
{
    job_t j;
    memset(&j, 0, sizeof j);
    j.h = *h;
    fail_rest(&j, 0, rc, msg);
    pool__wire_hdr_t rh = {
        .kind = POOL_WIRE_RESULT, .batch = h->batch, .count = h->count};
    if (j.out.len > 0 && pool__remote_send_hdr(c->sock, &rh, 1) == 0)
        pool__remote_send(c->sock, j.out.data, j.out.len, 0);
    pk_buf_free(&j.out);
}

static void on_task(agent_t *a, conn_t *c, const pool__wire_hdr_t *h,
                    pool__msg_t *m)
{
    char why[300] = "";
    pk_error_t e;
    pk_error_clear(&e);
    if (m->n != pool__wire_nframes(h) || m->truncated) {
        log_once(a, POOL_WIRE_TASK, "a TASK with %zu frames dropped", m->n);
        return;
    }
    int same = (h->flags & POOL_WIRE_F_SAME_CALL) != 0;
    if (h->flags & POOL_WIRE_F_SHM)
        snprintf(why, sizeof why, "a TASK with a shared-memory table");
    else if (same && (c->call == NULL || zmq_msg_size(&m->f[1]) != 0))
        snprintf(why, sizeof why, "a TASK reuses a call this host never got");
    else if ((h->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64))
                 ? pool__wire_vec_check(zmq_msg_size(&m->f[2]), h->count, &e)
                 : pool__wire_recs_parse(zmq_msg_data(&m->f[2]),
                                         zmq_msg_size(&m->f[2]), h->count,
                                         h->nbufs, 0, NULL, &e))
        snprintf(why, sizeof why, "malformed TASK: %s", e.msg);
    if (why[0] != '\0') {
        log_once(a, 30, "%s", why);
        answer_failed(c, h, PK_EPROTO, why);
        return;
    }
    if (!same) {
        call_t *nc = pk__calloc(1, sizeof *nc);
        if (nc == NULL) {
            answer_failed(c, h, PK_ENOMEM, "the host ran out of memory");
            return;
        }
        atomic_init(&nc->refs, 1);
        zmq_msg_init(&nc->frame);
        zmq_msg_move(&nc->frame, &m->f[1]);
        nc->route =
            route_of(nc, zmq_msg_data(&nc->frame), zmq_msg_size(&nc->frame));
        call_unref(c->call);
        c->call = nc;
    }
    job_t *j = pk__calloc(1, sizeof *j);
    size_t nfr = 1 + (size_t)h->nbufs;
    if (j != NULL) {
        j->frames = pk__malloc(nfr * sizeof *j->frames);
        j->bufs = pk__malloc(nfr * sizeof *j->bufs);
        if (!(h->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)))
            j->recs = pk__malloc((size_t)h->count * sizeof *j->recs);
    }
    if (j == NULL || j->frames == NULL || j->bufs == NULL ||
        (j->recs == NULL &&
         !(h->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)))) {
        if (j != NULL) {
            pk__free(j->frames);
            j->frames = NULL;
        }
        job_free(j);
        answer_failed(c, h, PK_ENOMEM, "the host ran out of memory");
        return;
    }
    j->h = *h;
    j->session = c->link.session;
    j->call = c->call;
    atomic_fetch_add(&c->call->refs, 1);
    for (size_t i = 0; i < nfr; i++) {
        zmq_msg_init(&j->frames[i]);
        zmq_msg_move(&j->frames[i], &m->f[2 + i]);
    }
    for (uint32_t k = 0; k < h->nbufs; k++) {
        j->bufs[k].data = zmq_msg_data(&j->frames[1 + k]);
        j->bufs[k].len = zmq_msg_size(&j->frames[1 + k]);
        j->bufs[k].readonly = 1;
    }
    if (j->recs != NULL)
        pool__wire_recs_parse(zmq_msg_data(&j->frames[0]),
                              zmq_msg_size(&j->frames[0]), h->count, h->nbufs,
                              0, j->recs, NULL); /* checked above */
    pthread_mutex_lock(&a->mu);
    PK__LIST_APPEND(a->todo_head, a->todo_tail, j);
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* One message from the master. */
static void on_message(agent_t *a, conn_t *c, pool__msg_t *m, uint64_t now)
{
    pool__wire_hdr_t h;
    pool__welcome_t w;
    pk_error_t e;
    pk_error_clear(&e);
    c->link.heard_ns = now;
    pk_err_t rc = pool__remote_welcome(m, &h, &w, &e);
    if (rc == PK_EPROTO) {
        log_once(a, 0, "malformed message from the master dropped: %s", e.msg);
        return;
    }
    if (rc == PK_OK) {
        if (c->state != C_HELLO)
            return;
        c->state = C_SESSION;
        pool__link_join(&c->link, &w, now);
        c->told_wait = 0;
        atomic_store(&a->session, w.session);
        say("joined the master at %s%s as '%s' (session %llu, capacity %d, "
            "heartbeat %g s x %u)",
            a->cfg->connect, c->joined ? " again" : "", a->name,
            (unsigned long long)w.session, a->capacity,
            (double)w.heartbeat_ns / 1e9, w.liveness);
        c->joined = 1;
        return;
    }
    switch (h.kind) {
    case POOL_WIRE_HEARTBEAT:
        break;
    case POOL_WIRE_STOP:
        if (c->state == C_SESSION) {
            say("the master ended our session; saying HELLO again");
            atomic_store(&a->session, 0);
            call_unref(c->call);
            c->call = NULL;
            purge_todo(a);
            send_hello(a, c, now);
        } else if (c->state == C_HELLO) {
            /* it refuses our HELLO (too many peers): later, anew */
            say("the master refused our HELLO; trying again later");
            conn_close(a, c, now, 1);
        }
        break;
    case POOL_WIRE_TASK:
        if (c->state == C_SESSION)
            on_task(a, c, &h, m);
        break;
    default:
        log_once(a, h.kind, "unexpected %s from the master dropped",
                 pool__wire_kind_name(h.kind));
        break;
    }
}

/* Sends the answers the runners finished, for the session they are of. */
static void send_done(agent_t *a, conn_t *c)
{
    uint64_t cnt;
    if (read(a->efd, &cnt, sizeof cnt) < 0) {
        /* nothing pending (EAGAIN) */
    }
    pthread_mutex_lock(&a->mu);
    job_t *j = a->done_head;
    a->done_head = a->done_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (j != NULL) {
        job_t *n = j->next;
        if (!j->abandoned && c->state == C_SESSION &&
            j->session == c->link.session) {
            pool__wire_hdr_t rh = {.kind = POOL_WIRE_RESULT,
                                   .flags = j->rflags,
                                   .batch = j->h.batch,
                                   .count = j->h.count,
                                   .nbufs = (uint32_t)j->nobufs,
                                   .aux = j->ns};
            if (pool__remote_send_hdr(c->sock, &rh, 1) == 0 &&
                pool__remote_send(c->sock, j->out.data, j->out.len,
                                  j->nobufs > 0) == 0)
                for (size_t k = 0; k < j->nobufs; k++)
                    if (pool__remote_send_msg(c->sock, &j->obufs[k],
                                              k + 1 < j->nobufs) != 0)
                        break;
        }
        job_free(j);
        j = n;
    }
}

/* Follows the handshake watch: a refusal ends the agent (returns -1); a
 * new connection while a HELLO waits gets the HELLO again (the first one
 * went down with the connection it was sent on). */
static int watch(agent_t *a, conn_t *c, uint64_t now)
{
    pool__curve_event_t ev;
    pk_error_t e;
    while (c->watch != NULL &&
           pool__curve_watch_next(c->watch, 0, &ev, &e) == PK_OK &&
           ev.kind != POOL_CURVE_EV_NONE) {
        if (pool__curve_ev_failed(ev.kind)) {
            char msg[400];
            say("%s", pool__curve_describe(&ev, "the master", msg, sizeof msg));
            return -1;
        }
        if (ev.kind == POOL_CURVE_EV_OK && c->state == C_HELLO &&
            now - c->hello_ns > POOL_LINK_HELLO_AGAIN_NS)
            send_hello(a, c, now);
    }
    return 0;
}

static int connect_master(agent_t *a, conn_t *c, void *zctx,
                          const pool__remote_sec_t *sec, uint64_t now)
{
    pk_error_t e;
    pk_error_clear(&e);
    if (pool__remote_dealer(zctx, a->cfg->connect, sec, "the master", &c->sock,
                            &c->watch, &e) != PK_OK) {
        pk__cli_report("worker", &e);
        return -1;
    }
    c->link.heard_ns = now;
    send_hello(a, c, now);
    return 0;
}

int pk__host_run(const pk__host_cfg_t *cfg)
{
    agent_t a;
    pool__remote_sec_t sec;
    pk_error_t err;
    int status = PK_EXIT_OK;
    void *zctx = NULL;
    conn_t c;
    pool__msg_t msg = {0};

    memset(&a, 0, sizeof a);
    memset(&c, 0, sizeof c);
    memset(&sec, 0, sizeof sec);
    a.cfg = cfg;
    a.efd = -1;
    snprintf(a.name, sizeof a.name, "%s", cfg->name);
    pthread_mutex_init(&a.mu, NULL);
    pthread_mutex_init(&a.py_mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    pk_error_clear(&err);
    if (pool__remote_sec_load(cfg->connect, 0, cfg->keys, cfg->key_name,
                              cfg->insecure, &sec, &err) != PK_OK) {
        pk__cli_report("worker", &err);
        return PK_EXIT_FAIL;
    }

    /* The pools first: the fork server is forked while this process is
     * still single-threaded. */
    pool_opts_t o;
    pool_opts_init(&o);
    o.workers = cfg->workers;
    o.placement = cfg->placement;
    o.plugins = cfg->plugins;
    o.nplugins = cfg->nplugins;
    if (pool_create(&a.native, &o, &err) != PK_OK) {
        pk__cli_report("worker: cannot start the native workers", &err);
        status = PK_EXIT_FAIL;
        goto out;
    }
    size_t nw = 0;
    pool_stats(a.native, NULL, 0, &nw);
    a.nworkers = (int)nw;
    a.capacity = cfg->capacity > 0 ? cfg->capacity
                 : a.nworkers < 2  ? 2
                                   : a.nworkers;
    say("'%s': %d native workers (%s), %zu plugin%s%s%s, capacity %d", a.name,
        a.nworkers, cfg->placement_name, cfg->nplugins,
        cfg->nplugins == 1 ? "" : "s",
        cfg->python ? ", Python: " : ", no Python",
        cfg->python ? cfg->python : "", a.capacity);

    a.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    a.runners = pk__calloc((size_t)a.capacity, sizeof *a.runners);
    zctx = zmq_ctx_new();
    if (a.efd < 0 || a.runners == NULL || zctx == NULL) {
        pk__err_sys(&err, PK_ESYS, errno, "cannot set up");
        pk__cli_report("worker", &err);
        status = PK_EXIT_FAIL;
        goto out;
    }
    zmq_ctx_set(zctx, ZMQ_BLOCKY, 0);
    for (int i = 0; i < a.capacity; i++) {
        if (pthread_create(&a.runners[i], NULL, runner_main, &a) != 0)
            break;
        a.nrunners++;
    }
    if (a.nrunners == 0) {
        say("cannot start a thread");
        status = PK_EXIT_FAIL;
        goto out;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pool__link_init(&c.link, BACKOFF_MAX_NS);
    while (!stop_sig) {
        uint64_t now = pool__now_ns();
        if (c.sock == NULL && now >= c.link.retry_at &&
            connect_master(&a, &c, zctx, &sec, now) != 0) {
            status = PK_EXIT_FAIL;
            break;
        }
        zmq_pollitem_t it[2] = {{c.sock, 0, ZMQ_POLLIN, 0},
                                {NULL, a.efd, ZMQ_POLLIN, 0}};
        int nit = c.sock != NULL ? 2 : 1;
        zmq_pollitem_t *pit = c.sock != NULL ? it : it + 1;
        if (zmq_poll(pit, nit, POLL_MS) < 0 && errno != EINTR)
            break;
        now = pool__now_ns();
        if (watch(&a, &c, now) != 0) {
            status = PK_EXIT_FAIL;
            break;
        }
        while (c.sock != NULL) {
            pk_err_t rc = pool__msg_recv(c.sock, &msg, POOL_REMOTE_MAX_FRAMES,
                                         ZMQ_DONTWAIT, &err);
            if (rc != PK_OK)
                break;
            on_message(&a, &c, &msg, now);
            pool__msg_clear(&msg);
        }
        send_done(&a, &c);
        /* timers */
        if (c.state == C_SESSION) {
            if (pool__link_beat(&c.link, c.sock, now)) {
                say("no word from the master for %.1f s; joining again",
                    (double)(now - c.link.heard_ns) / 1e9);
                conn_close(&a, &c, now, 0);
                purge_todo(&a);
            }
        } else if (c.state == C_HELLO &&
                   now - c.hello_ns > POOL_LINK_WELCOME_WAIT_NS) {
            if (!c.told_wait)
                say("no answer from the master at %s yet; still trying",
                    cfg->connect);
            c.told_wait = 1;
            conn_close(&a, &c, now, 1);
        }
    }
    if (c.sock != NULL && c.state == C_SESSION) {
        /* Say goodbye, so serve sends our batches elsewhere at once. */
        int linger = 200;
        pool__wire_hdr_t bye = {.kind = POOL_WIRE_STOP};
        zmq_setsockopt(c.sock, ZMQ_LINGER, &linger, sizeof linger);
        pool__remote_send_hdr(c.sock, &bye, 0);
    }
    if (stop_sig)
        say("stopping (%s)", stop_sig == SIGINT ? "SIGINT" : "SIGTERM");
out:
    atomic_store(&a.session, 0);
    pthread_mutex_lock(&a.mu);
    a.stopping = 1;
    pthread_cond_broadcast(&a.cv);
    pthread_mutex_unlock(&a.mu);
    for (int i = 0; i < a.nrunners; i++)
        pthread_join(a.runners[i], NULL);
    purge_todo(&a);
    c.state = C_NONE;
    if (a.efd >= 0)
        send_done(&a, &c); /* frees what the runners finished */
    conn_close(&a, &c, 0, 0);
    pool__msg_free(&msg);
    if (zctx != NULL)
        zmq_ctx_term(zctx);
    pool_destroy(&a.python);
    pool_destroy(&a.native);
    if (a.efd >= 0)
        close(a.efd);
    pk__free(a.runners);
    pool__remote_sec_free(&sec);
    pthread_cond_destroy(&a.cv);
    pthread_mutex_destroy(&a.mu);
    pthread_mutex_destroy(&a.py_mu);
    return status;
}
