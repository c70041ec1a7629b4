/*
 * serve.c - the loop of `picklepool serve` (cmd_serve.c has its options):
 * a standalone master with one ROUTER that host agents and clients join,
 * carrying batches from clients to hosts and results back, as
 * docs/PROTOCOL.md ("Scale-out") describes.  Which batch goes where, and
 * what becomes of batches when a peer goes away, is runtime/pool/sched.h's
 * policy; this file is its mechanism: sessions, heartbeats, message checks
 * and the frames themselves.
 *
 * Untrusted input.  A peer gets here only through CURVE and the ZAP
 * allow-list (or with --insecure, asked for explicitly).  Still, every
 * frame is checked before use: header, frame count, the peer's session and
 * role, records, batch ids.  A malformed message is dropped and logged once
 * per peer and kind; a TASK whose header is sound but whose body is not is
 * answered with a RESULT failing its items (the client is not left
 * waiting); frames over --max-message make libzmq drop the connection.
 * Nothing a peer sends can crash serve or make it deliver a result twice.
 *
 * One thread: the ROUTER, the scheduler and the peers are this loop's; the
 * ZAP handler runs on a thread of its own (curve.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "cli.h"
#include "core/common.h"
#include "ipc/remote.h"
#include "ipc/scoreboard.h"
#include "pool/sched.h"

#define RID_MAX 256           /* routing ids libzmq gives are 5 bytes */
#define PEER_BUCKETS 256      /* hash buckets of the peer table */
#define POLL_MAX_MS 100       /* longest nap: SIGINT is seen this fast */
#define MAX_MSGS_PER_TURN 256 /* then dispatch and timers get a turn */

/* A call frame as a client sent it, shared by its batches. */
typedef struct call {
    int refs;
    uint64_t id; /* serve-wide, never reused */
    zmq_msg_t frame;
} call_t;

typedef struct peer peer_t;

/* A client's batch: the scheduler's part first. */
typedef struct batch {
    pool__sbatch_t s;
    uint16_t flags; /* the TASK's, without SAME_CALL */
    uint32_t count, nbufs;
    uint64_t aux; /* per-item timeout ns */
    call_t *call;
    zmq_msg_t *frames; /* items, then nbufs buffers */
} batch_t;

struct peer {
    peer_t *hnext; /* hash chain */
    uint8_t rid[RID_MAX];
    size_t ridlen;
    uint16_t role; /* POOL_WIRE_F_HOST or POOL_WIRE_F_CLIENT */
    uint64_t session;
    uint64_t seen_ns; /* its last message */
    char name[POOL_WIRE_NAME_MAX + 1];
    char key[POOL_CURVE_NAME_MAX + 1]; /* its key's name ("" insecure) */
    char addr[64];
    pool__sclient_t *client;
    pool__shost_t *host;
    call_t *last_call;  /* client: its last full call */
    uint64_t sent_call; /* host: id of the call it holds */
    unsigned logged;    /* malformed-message kinds logged for this peer */
    uint64_t results;   /* host: results delivered; client: received */
};

typedef struct serve {
    const pk__serve_cfg_t *cfg;
    void *zctx, *router;
    pool__zap_t *zap;
    pool__sched_t *sched;
    peer_t *buckets[PEER_BUCKETS];
    size_t npeers;
    uint64_t next_session, next_call;
    uint64_t hb_ns, dead_ns, next_hb;
    pool__msg_t msg;
    unsigned logged_unknown; /* kinds from peers without a session */
    uint64_t delivered, malformed;
} serve_t;

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
    stop_sig = sig;
}

#define say(...) pool__remote_say("picklepool serve", __VA_ARGS__)

/* "host 'n1 rank 0' (key n1, tcp://10.0.0.2)" into buf. */
static const char *who(const peer_t *p, char *buf, size_t size)
{
    snprintf(buf, size, "%s '%.100s' (%s%.64s%s%.60s)",
             p->role == POOL_WIRE_F_HOST ? "host" : "client", p->name,
             p->key[0] ? "key " : "no key", p->key, p->addr[0] ? ", " : "",
             p->addr);
    return buf;
}

/* Logs a malformed message from p once per kind (p NULL: a peer without a
 * session). */
static void log_once(serve_t *s, peer_t *p, int kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_once(serve_t *s, peer_t *p, int kind, const char *fmt, ...)
{
    unsigned *bits = p != NULL ? &p->logged : &s->logged_unknown;
    unsigned bit = 1u << (kind & 31);
    s->malformed++;
    if (*bits & bit)
        return;
    *bits |= bit;
    char msg[512], w[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p != NULL)
        say("%s: %s (logged once)", who(p, w, sizeof w), msg);
    else
        say("a peer without a session: %s (logged once)", msg);
}

/* ---- calls and batches ------------------------------------------------------ */

static void call_unref(call_t *c)
{
    if (c == NULL || --c->refs > 0)
        return;
    zmq_msg_close(&c->frame);
    pk__free(c);
}

static void batch_free(batch_t *b)
{
    if (b == NULL)
        return;
    if (b->frames != NULL)
        for (size_t i = 0; i < 1 + (size_t)b->nbufs; i++)
            zmq_msg_close(&b->frames[i]);
    pk__free(b->frames);
    call_unref(b->call);
    pk__free(b);
}

static void on_drop(void *arg, pool__sbatch_t *sb)
{
    (void)arg;
    batch_free((batch_t *)sb);
}

/* ---- the peer table ---------------------------------------------------------- */

static unsigned rid_hash(const uint8_t *rid, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ rid[i]) * 16777619u;
    return h % PEER_BUCKETS;
}

static peer_t *peer_find(serve_t *s, const zmq_msg_t *rid)
{
    size_t len = zmq_msg_size((zmq_msg_t *)rid);
    const uint8_t *d = zmq_msg_data((zmq_msg_t *)rid);
    if (len == 0 || len > RID_MAX)
        return NULL;
    for (peer_t *p = s->buckets[rid_hash(d, len)]; p != NULL; p = p->hnext)
        if (p->ridlen == len && memcmp(p->rid, d, len) == 0)
            return p;
    return NULL;
}

/* Sends a header-only message (HEARTBEAT, STOP, WELCOME) to routing id
 * rid; a peer that is gone is no error. */
static void send_ctl(serve_t *s, const uint8_t *rid, size_t ridlen,
                     const pool__wire_hdr_t *h)
{
    uint8_t b[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_encode(h, b);
    if (zmq_send(s->router, rid, ridlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    zmq_send(s->router, b, sizeof b, ZMQ_DONTWAIT);
}

static void send_stop(serve_t *s, const uint8_t *rid, size_t ridlen)
{
    pool__wire_hdr_t h = {.kind = POOL_WIRE_STOP};
    send_ctl(s, rid, ridlen, &h);
}

/* Ends p's session: its batches as the scheduler's rules say, then p
 * itself; `stop`: tell it so.  `why` NULL: it left; QUIET: serve is
 * stopping (nothing logged). */
#define QUIET ((const char *)1)
static void peer_remove(serve_t *s, peer_t *p, const char *why, int stop)
{
    char w[400];
    if (why == QUIET) {
        if (p->host != NULL)
            pool__sched_host_remove(s->sched, p->host);
        else if (p->client != NULL)
            pool__sched_client_remove(s->sched, p->client);
    } else if (p->host != NULL) {
        size_t n = pool__sched_host_remove(s->sched, p->host);
        if (why != NULL || n > 0)
            say("%s %s; %zu batch%s in flight there requeued",
                who(p, w, sizeof w), why != NULL ? why : "left", n,
                n == 1 ? "" : "es");
        else
            say("%s left", who(p, w, sizeof w));
    } else if (p->client != NULL) {
        size_t n = pool__sched_client_remove(s->sched, p->client);
        say("%s %s; %zu batch%s dropped", who(p, w, sizeof w),
            why != NULL ? why : "left", n, n == 1 ? "" : "es");
    }
    if (stop)
        send_stop(s, p->rid, p->ridlen);
    peer_t **pp = &s->buckets[rid_hash(p->rid, p->ridlen)];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    call_unref(p->last_call);
    pk__free(p);
    s->npeers--;
}

/* ---- messages from peers ------------------------------------------------------ */

/* A HELLO from the peer at routing id f[0]: a new session (ending the one
 * it had, if any). */
static void on_hello(serve_t *s, peer_t *p, const pool__wire_hdr_t *h,
                     zmq_msg_t *f, size_t nf)
{
    pk_error_t e;
    if (h->flags == POOL_WIRE_F_WELCOME) {
        log_once(s, p, POOL_WIRE_HELLO, "a WELCOME sent to serve dropped");
        return;
    }
    if (nf != 3) {
        log_once(s, p, POOL_WIRE_HELLO, "HELLO with %zu frames dropped",
                 nf - 1);
        return;
    }
    if (pool__wire_name_check(zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), &e) !=
        PK_OK) {
        log_once(s, p, POOL_WIRE_HELLO, "%s; dropped", e.msg);
        return;
    }
    if (p != NULL)
        peer_remove(s, p, "said HELLO again", 0);
    if (s->cfg->max_peers > 0 && s->npeers >= (size_t)s->cfg->max_peers) {
        log_once(s, NULL, POOL_WIRE_HELLO, "more than %d peers: refused",
                 s->cfg->max_peers);
        send_stop(s, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
        return;
    }
    p = pk__calloc(1, sizeof *p);
    if (p == NULL) {
        say("out of memory for a new peer");
        return;
    }
    p->ridlen = zmq_msg_size(&f[0]);
    memcpy(p->rid, zmq_msg_data(&f[0]), p->ridlen);
    p->role = h->flags;
    p->session = ++s->next_session;
    p->seen_ns = pool__now_ns();
    memcpy(p->name, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]));
    const char *uid = zmq_msg_gets(&f[1], "User-Id");
    const char *addr = zmq_msg_gets(&f[1], "Peer-Address");
    snprintf(p->key, sizeof p->key, "%s", uid != NULL ? uid : "");
    snprintf(p->addr, sizeof p->addr, "%s", addr != NULL ? addr : "");
    if (p->role == POOL_WIRE_F_HOST)
        p->host = pool__sched_host_add(s->sched, h->count, p);
    else
        p->client = pool__sched_client_add(s->sched, p);
    if (p->host == NULL && p->client == NULL) {
        pk__free(p);
        say("out of memory for a new peer");
        return;
    }
    unsigned b = rid_hash(p->rid, p->ridlen);
    p->hnext = s->buckets[b];
    s->buckets[b] = p;
    s->npeers++;
    char w[400];
    if (p->role == POOL_WIRE_F_HOST)
        say("%s joined with capacity %u (pid %llu)", who(p, w, sizeof w),
            h->count, (unsigned long long)h->aux);
    else
        say("%s joined (pid %llu)", who(p, w, sizeof w),
            (unsigned long long)h->aux);
    pool__wire_hdr_t wh = {.kind = POOL_WIRE_HELLO,
                           .flags = POOL_WIRE_F_WELCOME,
                           .batch = p->session,
                           .count = (uint32_t)s->cfg->liveness,
                           .aux = s->hb_ns};
    send_ctl(s, p->rid, p->ridlen, &wh);
}

/* Answers a client's batch with a RESULT failing each of its count items
 * with `status` and msg (its header was sound, its body not, or serve
 * cannot take it). */
static void fail_task(serve_t *s, peer_t *c, uint64_t batch, uint32_t count,
                      pk_err_t status, const char *msg)
{
    size_t ml = strlen(msg);
    if (ml > 1000)
        ml = 1000;
    size_t rec = POOL_WIRE_REC_SIZE + ml;
    if (count > 0 && rec > ((size_t)1 << 30) / count)
        count = 0; /* cannot be: the header said at most 2^24 items */
    uint8_t *pl = pk__malloc(rec * count + 1);
    if (pl == NULL)
        return;
    for (uint32_t i = 0; i < count; i++) {
        pool__wire_rec_encode(pl + rec * i, (uint32_t)ml, 0, (uint32_t)status);
        memcpy(pl + rec * i + POOL_WIRE_REC_SIZE, msg, ml);
    }
    pool__wire_hdr_t h = {
        .kind = POOL_WIRE_RESULT, .batch = batch, .count = count};
    uint8_t hb[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_encode(&h, hb);
    if (count > 0 &&
        zmq_send(s->router, c->rid, c->ridlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) >=
            0 &&
        zmq_send(s->router, hb, sizeof hb, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send(s->router, pl, rec * count, ZMQ_DONTWAIT);
    pk__free(pl);
}

/* A TASK from client c: frames f[1] header, f[2] call, f[3] items, then
 * buffers. */
static void on_task(serve_t *s, peer_t *c, const pool__wire_hdr_t *h,
                    zmq_msg_t *f, size_t nf)
{
    pk_error_t e;
    pk_error_clear(&e);
    char why[400];
    why[0] = '\0';
    if (h->flags & POOL_WIRE_F_SHM)
        snprintf(why, sizeof why,
                 "a TASK with a shared-memory buffer table cannot cross the "
                 "network");
    else if (nf - 1 != pool__wire_nframes(h))
        snprintf(why, sizeof why, "TASK with %zu frames, not %zu", nf - 1,
                 pool__wire_nframes(h));
    else if ((h->flags & POOL_WIRE_F_SAME_CALL) &&
             (c->last_call == NULL || zmq_msg_size(&f[2]) != 0))
        snprintf(why, sizeof why,
                 c->last_call == NULL
                     ? "TASK with SAME_CALL before any call was sent"
                     : "TASK with SAME_CALL and a call frame");
    else if ((h->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64))
                 ? pool__wire_vec_check(zmq_msg_size(&f[3]), h->count, &e)
                 : pool__wire_recs_parse(zmq_msg_data(&f[3]),
                                         zmq_msg_size(&f[3]), h->count,
                                         h->nbufs, 0, NULL, &e))
        snprintf(why, sizeof why, "malformed TASK: %s", e.msg);
    if (why[0] != '\0') {
        log_once(s, c, POOL_WIRE_TASK, "%s", why);
        if (nf - 1 == pool__wire_nframes(h) || (h->flags & POOL_WIRE_F_SHM))
            fail_task(s, c, h->batch, h->count, PK_EPROTO, why);
        return;
    }
    size_t held =
        pool__sclient_queued(c->client) + pool__sclient_inflight(c->client);
    if (held >= (size_t)s->cfg->max_queue) {
        snprintf(why, sizeof why,
                 "the master holds %zu batches of this client already (at "
                 "most %d)",
                 held, s->cfg->max_queue);
        log_once(s, c, 30, "%s: refused", why);
        fail_task(s, c, h->batch, h->count, PK_ELIMIT, why);
        return;
    }
    batch_t *b = pk__calloc(1, sizeof *b);
    zmq_msg_t *fr = pk__malloc((1 + (size_t)h->nbufs) * sizeof *fr);
    call_t *call = NULL;
    if (b != NULL && fr != NULL && !(h->flags & POOL_WIRE_F_SAME_CALL)) {
        call = pk__calloc(1, sizeof *call);
        if (call != NULL) {
            call->refs = 1;
            call->id = ++s->next_call;
            zmq_msg_init(&call->frame);
            zmq_msg_move(&call->frame, &f[2]);
            call_unref(c->last_call);
            c->last_call = call; /* the client's reference */
            call->refs++;        /* and the batch's */
        }
    } else if (b != NULL && fr != NULL) {
        call = c->last_call;
        call->refs++;
    }
    if (b == NULL || fr == NULL || call == NULL) {
        pk__free(b);
        pk__free(fr);
        fail_task(s, c, h->batch, h->count, PK_ENOMEM,
                  "the master ran out of memory");
        return;
    }
    b->s.client_batch = h->batch;
    b->s.payload = b;
    b->flags = h->flags & (uint16_t)~POOL_WIRE_F_SAME_CALL;
    b->count = h->count;
    b->nbufs = h->nbufs;
    b->aux = h->aux;
    b->call = call;
    b->frames = fr;
    for (size_t i = 0; i < 1 + (size_t)h->nbufs; i++) {
        zmq_msg_init(&fr[i]);
        zmq_msg_move(&fr[i], &f[3 + i]);
    }
    pool__sched_submit(s->sched, c->client, &b->s);
}

/* Checks a host's RESULT for batch b (count, frames, a vector only when
 * asked, records).  PK_OK or PK_EPROTO. */
static pk_err_t check_result(const batch_t *b, const pool__wire_hdr_t *h,
                             zmq_msg_t *f, size_t nf, pk_error_t *e)
{
    const uint16_t vec = POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64;
    uint16_t asked = (b->flags & POOL_WIRE_F_RES_I64)   ? POOL_WIRE_F_VEC_I64
                     : (b->flags & POOL_WIRE_F_RES_F64) ? POOL_WIRE_F_VEC_F64
                                                        : 0;
    if (h->flags & (POOL_WIRE_F_SHM | POOL_WIRE_F_RETIRING))
        return pk__err(e, PK_EPROTO, "RESULT with flags 0x%04x",
                       (unsigned)h->flags);
    if (h->count != b->count)
        return pk__err(e, PK_EPROTO, "RESULT with %u items for a batch of %u",
                       h->count, b->count);
    if (nf - 1 != pool__wire_nframes(h))
        return pk__err(e, PK_EPROTO, "RESULT with %zu frames, not %zu", nf - 1,
                       pool__wire_nframes(h));
    if ((h->flags & vec) != 0 && (h->flags & vec) != asked)
        return pk__err(e, PK_EPROTO, "a vector RESULT the task did not ask");
    if (h->flags & vec)
        return pool__wire_vec_check(zmq_msg_size(&f[2]), h->count, e);
    return pool__wire_recs_parse(zmq_msg_data(&f[2]), zmq_msg_size(&f[2]),
                                 h->count, h->nbufs, 1, NULL, e);
}

/* A RESULT from host p: frames f[1] header, f[2] outcomes, then buffers. */
static void on_result(serve_t *s, peer_t *p, const pool__wire_hdr_t *h,
                      zmq_msg_t *f, size_t nf)
{
    pool__sbatch_t *sb;
    enum pool__sched_match m =
        pool__sched_result(s->sched, p->host, h->batch, &sb);
    if (m == POOL_SCHED_UNKNOWN) {
        log_once(s, p, 29,
                 "RESULT for batch %llu, not in flight there: dropped (late "
                 "or duplicate)",
                 (unsigned long long)h->batch);
        return;
    }
    batch_t *b = (batch_t *)sb;
    if (m == POOL_SCHED_ORPHAN) {
        batch_free(b);
        return;
    }
    peer_t *c = pool__sclient_tag(sb->client);
    pk_error_t e;
    pk_error_clear(&e);
    if (check_result(b, h, f, nf, &e) != PK_OK) {
        char msg[600], w[300];
        log_once(s, p, POOL_WIRE_RESULT, "malformed RESULT: %s", e.msg);
        snprintf(msg, sizeof msg, "malformed result from %.290s: %.290s",
                 who(p, w, sizeof w), e.msg);
        fail_task(s, c, b->s.client_batch, b->count, PK_EPROTO, msg);
        batch_free(b);
        return;
    }
    pool__wire_hdr_t out = *h;
    out.batch = b->s.client_batch;
    uint8_t hb[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_encode(&out, hb);
    int ok = zmq_send(s->router, c->rid, c->ridlen,
                      ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
             zmq_send(s->router, hb, sizeof hb,
                      (nf > 2 ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) >= 0;
    for (size_t i = 2; ok && i < nf; i++)
        ok = zmq_msg_send(&f[i], s->router,
                          (i + 1 < nf ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) >= 0;
    p->results++;
    c->results++;
    s->delivered++;
    batch_free(b);
}

static void on_message(serve_t *s, zmq_msg_t *f, size_t nf, int truncated)
{
    peer_t *p = peer_find(s, &f[0]);
    pool__wire_hdr_t h;
    pk_error_t e;
    if (p != NULL)
        p->seen_ns = pool__now_ns();
    if (nf < 2) {
        log_once(s, p, 0, "an empty message dropped");
        return;
    }
    if (pool__wire_hdr_parse(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &h,
                             &e) != PK_OK) {
        log_once(s, p, 0, "malformed message dropped: %s", e.msg);
        return;
    }
    if (truncated) {
        log_once(s, p, h.kind, "%s with more than %zu frames dropped",
                 pool__wire_kind_name(h.kind), POOL_REMOTE_MAX_FRAMES);
        return;
    }
    if (h.kind == POOL_WIRE_HELLO) {
        on_hello(s, p, &h, f, nf);
        return;
    }
    if (p == NULL) {
        /* No session (never had one, or declared gone): say so, so that it
         * says HELLO again - unless it is leaving anyway. */
        if (h.kind != POOL_WIRE_STOP && zmq_msg_size(&f[0]) <= RID_MAX)
            send_stop(s, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
        return;
    }
    switch (h.kind) {
    case POOL_WIRE_HEARTBEAT:
        if (nf != 2)
            log_once(s, p, h.kind, "HEARTBEAT with %zu frames", nf - 1);
        break;
    case POOL_WIRE_STOP:
        peer_remove(s, p, NULL, 0);
        break;
    case POOL_WIRE_TASK:
        if (p->role != POOL_WIRE_F_CLIENT)
            log_once(s, p, h.kind, "a TASK from a host dropped");
        else
            on_task(s, p, &h, f, nf);
        break;
    case POOL_WIRE_RESULT:
        if (p->role != POOL_WIRE_F_HOST)
            log_once(s, p, h.kind, "a RESULT from a client dropped");
        else
            on_result(s, p, &h, f, nf);
        break;
    default:
        log_once(s, p, h.kind, "unexpected %s dropped",
                 pool__wire_kind_name(h.kind));
        break;
    }
}

/* ---- dispatch and timers ------------------------------------------------------- */

/* Sends batch b to host p as a TASK of dispatch id `id`.  0 or -1. */
static int send_task(serve_t *s, peer_t *p, batch_t *b, uint64_t id)
{
    int same = p->sent_call == b->call->id;
    pool__wire_hdr_t h = {
        .kind = POOL_WIRE_TASK,
        .flags = (uint16_t)(b->flags | (same ? POOL_WIRE_F_SAME_CALL : 0)),
        .batch = id,
        .count = b->count,
        .nbufs = b->nbufs,
        .aux = b->aux};
    uint8_t hb[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_encode(&h, hb);
    if (zmq_send(s->router, p->rid, p->ridlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    /* From here the message is under way: every part goes, even when one
     * copy fails (an empty frame then stands in for it). */
    zmq_send(s->router, hb, sizeof hb, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (!same)
        zmq_msg_copy(&m, &b->call->frame);
    zmq_msg_send(&m, s->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_close(&m);
    for (size_t i = 0; i < 1 + (size_t)b->nbufs; i++) {
        zmq_msg_init(&m);
        zmq_msg_copy(&m, &b->frames[i]);
        zmq_msg_send(&m, s->router,
                     (i < b->nbufs ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
        zmq_msg_close(&m);
    }
    p->sent_call = b->call->id;
    return 0;
}

static void dispatch(serve_t *s)
{
    pool__shost_t *h;
    pool__sbatch_t *sb;
    while (pool__sched_next(s->sched, &h, &sb)) {
        peer_t *p = pool__shost_tag(h);
        if (send_task(s, p, (batch_t *)sb, sb->id) == 0)
            continue;
        /* libzmq no longer knows the host (it disconnected) */
        pool__sched_undo(s->sched, sb);
        peer_remove(s, p, "is unreachable", 0);
    }
}

/* Heartbeats to every peer, and the end of those silent for too long. */
static void timers(serve_t *s, uint64_t now)
{
    if (now < s->next_hb)
        return;
    s->next_hb = now + s->hb_ns;
    pool__wire_hdr_t hb = {.kind = POOL_WIRE_HEARTBEAT, .aux = now};
    for (int b = 0; b < PEER_BUCKETS; b++) {
        peer_t *p = s->buckets[b];
        while (p != NULL) {
            peer_t *next = p->hnext;
            if (now - p->seen_ns > s->dead_ns) {
                char why[96];
                snprintf(why, sizeof why,
                         "sent nothing for %.1f s: declared gone",
                         (double)(now - p->seen_ns) / 1e9);
                peer_remove(s, p, why, 1);
            } else {
                send_ctl(s, p->rid, p->ridlen, &hb);
            }
            p = next;
        }
    }
}

/* ---- set-up and the loop -------------------------------------------------------- */

static void zap_log(void *arg, int status, const char *address, const char *key,
                    const char *reason)
{
    (void)arg;
    /* A refused peer retries its handshake every few seconds: each
     * refusal of an address is said once. */
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static char seen[16][160];
    static int nseen;
    if (status == 200)
        return;
    char k[160];
    snprintf(k, sizeof k, "%.60s %.90s", address, key);
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nseen && i < 16; i++)
        if (strcmp(seen[i], k) == 0) {
            pthread_mutex_unlock(&mu);
            return;
        }
    snprintf(seen[nseen++ % 16], sizeof seen[0], "%s", k);
    pthread_mutex_unlock(&mu);
    say("refused a peer at %s: %s (ZAP status %d)", address[0] ? address : "?",
        reason, status);
}

static pk_err_t start(serve_t *s, pool__remote_sec_t *sec, pk_error_t *err)
{
    pk_err_t rc;
    int zero = 0, one = 1;
    if ((rc = pool__sched_new(on_drop, s, &s->sched)) != PK_OK)
        return pk__err(err, rc, "out of memory");
    s->zctx = zmq_ctx_new();
    if (s->zctx == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "zmq_ctx_new");
    zmq_ctx_set(s->zctx, ZMQ_BLOCKY, 0);
    if (sec->mode == POOL_NET_CURVE &&
        (rc = pool__zap_start(s->zctx, sec->keys, NULL, zap_log, s, &s->zap,
                              err)) != PK_OK)
        return rc;
    s->router = zmq_socket(s->zctx, ZMQ_ROUTER);
    if (s->router == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "zmq_socket");
    int64_t maxmsg = (int64_t)s->cfg->max_message;
    zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->router, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s->router, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (sec->mode == POOL_NET_CURVE &&
        (rc = pool__curve_server_setup(s->router, sec->keys, s->zap, err)) !=
            PK_OK)
        return rc;
    if (zmq_bind(s->router, s->cfg->bind) != 0)
        return pk__err_sys(err, PK_ESYS, errno, "cannot bind %.200s",
                           s->cfg->bind);
    return PK_OK;
}

int pk__serve_run(const pk__serve_cfg_t *cfg)
{
    serve_t s;
    pool__remote_sec_t sec;
    pk_error_t err;
    int status = PK_EXIT_OK;

    memset(&s, 0, sizeof s);
    s.cfg = cfg;
    s.hb_ns = cfg->heartbeat_ns;
    s.dead_ns = cfg->heartbeat_ns * (uint64_t)cfg->liveness;
    pk_error_clear(&err);
    if (pool__remote_sec_load(cfg->bind, 1, cfg->keys, NULL, cfg->insecure,
                              &sec, &err) != PK_OK) {
        pk__cli_report("serve", &err);
        return PK_EXIT_FAIL;
    }
    if (start(&s, &sec, &err) != PK_OK) {
        pk__cli_report("serve", &err);
        status = PK_EXIT_FAIL;
        goto out;
    }
    char ep[300] = "";
    size_t eplen = sizeof ep;
    zmq_getsockopt(s.router, ZMQ_LAST_ENDPOINT, ep, &eplen);
    printf("picklepool serve: listening on %s (%s)\n", ep,
           sec.mode == POOL_NET_CURVE   ? "CURVE, keys of the allow-list"
           : sec.mode == POOL_NET_LOCAL ? "this machine only"
                                        : "INSECURE: plain tcp, anyone may "
                                          "join");
    fflush(stdout);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    s.next_hb = pool__now_ns() + s.hb_ns;
    while (!stop_sig) {
        uint64_t now = pool__now_ns();
        long wait_ms =
            s.next_hb > now ? (long)((s.next_hb - now) / 1000000) + 1 : 0;
        if (wait_ms > POLL_MAX_MS)
            wait_ms = POLL_MAX_MS;
        zmq_pollitem_t it = {s.router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, wait_ms) < 0 && errno != EINTR) {
            pk__err_sys(&err, PK_ESYS, errno, "zmq_poll");
            pk__cli_report("serve", &err);
            status = PK_EXIT_FAIL;
            break;
        }
        for (int k = 0; k < MAX_MSGS_PER_TURN && !stop_sig; k++) {
            pk_err_t rc = pool__msg_recv(
                s.router, &s.msg, POOL_REMOTE_MAX_FRAMES, ZMQ_DONTWAIT, &err);
            if (rc == PK_EOF)
                break;
            if (rc == PK_ENOMEM) {
                say("out of memory reading a message: dropped");
                continue;
            }
            if (rc != PK_OK) {
                pk__cli_report("serve", &err);
                status = PK_EXIT_FAIL;
                stop_sig = SIGTERM;
                break;
            }
            if (s.msg.n > 0)
                on_message(&s, s.msg.f, s.msg.n, s.msg.truncated);
            pool__msg_clear(&s.msg);
        }
        timers(&s, pool__now_ns());
        dispatch(&s);
    }
    if (stop_sig == SIGINT || stop_sig == SIGTERM) {
        pool__sched_stats_t st;
        pool__sched_stats(s.sched, &st);
        say("stopping (%s): %llu batches delivered, %llu requeued, %llu late "
            "results dropped, %llu malformed messages",
            stop_sig == SIGINT ? "SIGINT" : "SIGTERM",
            (unsigned long long)s.delivered, (unsigned long long)st.requeued,
            (unsigned long long)st.unknown, (unsigned long long)s.malformed);
    }
out:
    /* Tell every peer its session is over, then let go of everything. */
    for (int b = 0; b < PEER_BUCKETS; b++)
        while (s.buckets[b] != NULL)
            peer_remove(&s, s.buckets[b], QUIET, 1);
    pool__msg_free(&s.msg);
    pool__sched_free(&s.sched);
    if (s.router != NULL)
        zmq_close(s.router);
    pool__zap_stop(&s.zap);
    if (s.zctx != NULL)
        zmq_ctx_term(s.zctx);
    pool__remote_sec_free(&sec);
    return status;
}
