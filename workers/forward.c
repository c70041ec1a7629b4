/*
 * forward.c - the forwarder of remote pools (see forward.h): the worker
 * protocol to the pool's master on one side, the client protocol to serve
 * on the other, one thread and two sockets.
 */
#define _GNU_SOURCE
#include "forward.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "core/common.h"
#include "ipc/remote.h"
#include "ipc/scoreboard.h"
#include "proc/attach.h"

#define PROG "picklepool-worker --forward"
#define BACKOFF_MAX_NS 2000000000ull
#define POLL_MS 100

/* A call frame, shared by the batches that use it. */
typedef struct call {
    int refs;
    zmq_msg_t frame;
} call_t;

/* A batch of the local master, held until its result comes back. */
typedef struct held {
    struct held *next;
    pool__wire_hdr_t h; /* as the master sent it, SAME_CALL cleared */
    call_t *call;
    zmq_msg_t *frames; /* items, then h.nbufs buffers */
    uint64_t since_ns; /* when it came, or was last sent */
} held_t;

typedef struct fwd {
    const pk__forward_cfg_t *cfg;
    void *zctx, *local, *remote;
    pool__curve_watch_t *watch;
    pool__remote_sec_t sec;
    enum { S_NONE, S_HELLO, S_SESSION } state;
    pool__link_t link;
    uint64_t hello_ns, lost_ns;
    int ready_sent, joined, told;
    call_t *cur_call;  /* the last call the master sent */
    call_t *sess_call; /* the last call sent in this session */
    held_t *head, *tail;
    unsigned logged;
    char name[POOL_WIRE_NAME_MAX + 1];
} fwd_t;

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
    stop_sig = sig;
}

#define WHO "picklepool: remote pool"
#define say(...) pool__remote_say(WHO, __VA_ARGS__)
#define log_once(f, kind, ...)                                                 \
    pool__remote_log_once(&(f)->logged, (kind), WHO, __VA_ARGS__)

static void call_unref(call_t *c)
{
    if (c == NULL || --c->refs > 0)
        return;
    zmq_msg_close(&c->frame);
    pk__free(c);
}

static void held_free(held_t *b)
{
    for (size_t i = 0; b->frames != NULL && i < 1 + (size_t)b->h.nbufs; i++)
        zmq_msg_close(&b->frames[i]);
    pk__free(b->frames);
    call_unref(b->call);
    pk__free(b);
}

/* ---- answering the local master ----------------------------------------------- */

/* A RESULT failing every item of h with rc and msg, to the master. */
static void fail_local(fwd_t *f, const pool__wire_hdr_t *h, pk_err_t rc,
                       const char *msg)
{
    size_t ml = strlen(msg), rec = POOL_WIRE_REC_SIZE + ml;
    uint8_t *pl = pk__malloc(rec * h->count + 1);
    if (pl == NULL)
        return; /* the master's stall watch has the last word */
    for (uint32_t i = 0; i < h->count; i++) {
        pool__wire_rec_encode(pl + rec * i, (uint32_t)ml, 0, (uint32_t)rc);
        memcpy(pl + rec * i + POOL_WIRE_REC_SIZE, msg, ml);
    }
    pool__wire_hdr_t rh = {
        .kind = POOL_WIRE_RESULT, .batch = h->batch, .count = h->count};
    if (pool__remote_send_hdr(f->local, &rh, 1) == 0)
        pool__remote_send(f->local, pl, rec * h->count, 0);
    pk__free(pl);
}

/* ---- talking to serve ----------------------------------------------------------- */

static int send_remote(fwd_t *f, held_t *b)
{
    int same = f->sess_call == b->call;
    pool__wire_hdr_t h = b->h;
    if (same)
        h.flags |= POOL_WIRE_F_SAME_CALL;
    if (pool__remote_send_hdr(f->remote, &h, 1) != 0)
        return -1;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (!same)
        zmq_msg_copy(&m, &b->call->frame);
    pool__remote_send_msg(f->remote, &m, 1);
    zmq_msg_close(&m);
    for (size_t i = 0; i < 1 + (size_t)b->h.nbufs; i++) {
        zmq_msg_init(&m);
        zmq_msg_copy(&m, &b->frames[i]);
        pool__remote_send_msg(f->remote, &m, i < b->h.nbufs);
        zmq_msg_close(&m);
    }
    f->sess_call = b->call;
    b->since_ns = pool__now_ns();
    return 0;
}

static void remote_close(fwd_t *f, uint64_t now, int backoff)
{
    pool__curve_watch_close(&f->watch);
    if (f->remote != NULL)
        zmq_close(f->remote);
    f->remote = NULL;
    if (f->state == S_SESSION)
        f->lost_ns = now;
    f->state = S_NONE;
    f->sess_call = NULL;
    pool__link_closed(&f->link, now, backoff);
}

static int hello(fwd_t *f, uint64_t now)
{
    f->state = S_HELLO;
    f->hello_ns = now;
    f->sess_call = NULL;
    return pool__remote_hello(f->remote, POOL_WIRE_F_CLIENT, 0, f->name);
}

static int remote_open(fwd_t *f, uint64_t now)
{
    pk_error_t e;
    pk_error_clear(&e);
    if (pool__remote_dealer(f->zctx, f->cfg->endpoint, &f->sec, "the master",
                            &f->remote, &f->watch, &e) != PK_OK) {
        say("%s", e.msg);
        return -1;
    }
    f->link.heard_ns = now;
    return hello(f, now);
}

/* ---- messages ---------------------------------------------------------------- */

static void on_local_task(fwd_t *f, const pool__wire_hdr_t *h, pool__msg_t *m)
{
    if (m->n != pool__wire_nframes(h) || m->truncated) {
        log_once(f, POOL_WIRE_TASK, "a TASK with %zu frames dropped", m->n);
        return;
    }
    if (h->flags & POOL_WIRE_F_SHM) {
        fail_local(f, h, PK_EPROTO,
                   "shared-memory buffers cannot cross the network");
        return;
    }
    if (h->flags & POOL_WIRE_F_SAME_CALL) {
        if (f->cur_call == NULL) {
            fail_local(f, h, PK_EPROTO,
                       "a TASK reuses a call this worker never received");
            return;
        }
    } else {
        call_t *c = pk__calloc(1, sizeof *c);
        if (c == NULL) {
            fail_local(f, h, PK_ENOMEM, "out of memory");
            return;
        }
        c->refs = 1;
        zmq_msg_init(&c->frame);
        zmq_msg_move(&c->frame, &m->f[1]);
        call_unref(f->cur_call);
        f->cur_call = c;
    }
    held_t *b = pk__calloc(1, sizeof *b);
    size_t nfr = 1 + (size_t)h->nbufs;
    if (b != NULL)
        b->frames = pk__malloc(nfr * sizeof *b->frames);
    if (b == NULL || b->frames == NULL) {
        pk__free(b);
        fail_local(f, h, PK_ENOMEM, "out of memory");
        return;
    }
    b->h = *h;
    b->h.flags &= (uint16_t)~POOL_WIRE_F_SAME_CALL;
    b->call = f->cur_call;
    b->call->refs++;
    for (size_t i = 0; i < nfr; i++) {
        zmq_msg_init(&b->frames[i]);
        zmq_msg_move(&b->frames[i], &m->f[2 + i]);
    }
    b->since_ns = pool__now_ns();
    if (f->tail != NULL)
        f->tail->next = b;
    else
        f->head = b;
    f->tail = b;
    if (f->state == S_SESSION)
        send_remote(f, b);
}

/* Returns 1 when the master said STOP: the forwarder ends. */
static int on_local(fwd_t *f, pool__msg_t *m)
{
    pool__wire_hdr_t h;
    pk_error_t e;
    if (m->n == 0 ||
        pool__wire_hdr_parse(zmq_msg_data(&m->f[0]), zmq_msg_size(&m->f[0]), &h,
                             &e) != PK_OK) {
        log_once(f, 0, "malformed message from the pool dropped");
        return 0;
    }
    switch (h.kind) {
    case POOL_WIRE_TASK:
        on_local_task(f, &h, m);
        return 0;
    case POOL_WIRE_STOP:
        return 1;
    case POOL_WIRE_HEARTBEAT: {
        pool__wire_hdr_t hb = {.kind = POOL_WIRE_HEARTBEAT, .aux = h.aux};
        pool__remote_send_hdr(f->local, &hb, 0);
        return 0;
    }
    default:
        log_once(f, h.kind, "unexpected %s from the pool dropped",
                 pool__wire_kind_name(h.kind));
        return 0;
    }
}

static void on_result(fwd_t *f, const pool__wire_hdr_t *h, pool__msg_t *m)
{
    held_t **pp = &f->head, *prev = NULL;
    while (*pp != NULL && (*pp)->h.batch != h->batch) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return; /* answered already, or failed: none is delivered twice */
    held_t *b = *pp;
    *pp = b->next;
    if (f->tail == b)
        f->tail = prev;
    for (size_t i = 0; i < m->n; i++)
        if (pool__remote_send_msg(f->local, &m->f[i], i + 1 < m->n) != 0)
            break;
    held_free(b);
}

static void on_remote(fwd_t *f, pool__msg_t *m, uint64_t now)
{
    pool__wire_hdr_t h;
    pool__welcome_t w;
    pk_error_t e;
    pk_error_clear(&e);
    f->link.heard_ns = now;
    pk_err_t rc = pool__remote_welcome(m, &h, &w, &e);
    if (rc == PK_EPROTO) {
        log_once(f, 1, "malformed message from the master dropped: %s", e.msg);
        return;
    }
    if (rc == PK_OK) {
        if (f->state != S_HELLO)
            return;
        f->state = S_SESSION;
        pool__link_join(&f->link, &w, now);
        f->lost_ns = 0;
        if (f->joined) {
            size_t n = 0;
            for (held_t *b = f->head; b != NULL; b = b->next, n++)
                send_remote(f, b);
            say("joined the master at %s again; %zu batch%s sent again",
                f->cfg->endpoint, n, n == 1 ? "" : "es");
        } else {
            for (held_t *b = f->head; b != NULL; b = b->next)
                send_remote(f, b);
        }
        f->joined = 1;
        f->told = 0;
        return;
    }
    switch (h.kind) {
    case POOL_WIRE_RESULT:
        if (f->state == S_SESSION)
            on_result(f, &h, m);
        break;
    case POOL_WIRE_HEARTBEAT:
        break;
    case POOL_WIRE_STOP:
        if (f->state == S_SESSION) {
            say("the master at %s ended our session; joining again",
                f->cfg->endpoint);
            f->lost_ns = now;
            hello(f, now);
        } else if (f->state == S_HELLO) {
            remote_close(f, now, 1);
        }
        break;
    default:
        log_once(f, h.kind, "unexpected %s from the master dropped",
                 pool__wire_kind_name(h.kind));
        break;
    }
}

/* Fails what has waited for a master longer than --give-up allows. */
static void give_up(fwd_t *f, uint64_t now)
{
    if (f->cfg->give_up_s <= 0 || f->state == S_SESSION || f->head == NULL)
        return;
    uint64_t limit = (uint64_t)(f->cfg->give_up_s * 1e9);
    uint64_t since = f->lost_ns ? f->lost_ns : f->head->since_ns;
    if (now - since < limit)
        return;
    char msg[400];
    snprintf(msg, sizeof msg,
             "no answer from the master at %.200s for %g s (is `picklepool "
             "serve` running?)",
             f->cfg->endpoint, f->cfg->give_up_s);
    size_t n = 0;
    while (f->head != NULL) {
        held_t *b = f->head;
        f->head = b->next;
        fail_local(f, &b->h, PK_EIO, msg);
        held_free(b);
        n++;
    }
    f->tail = NULL;
    f->lost_ns = now;
    say("%s: %zu batch%s failed", msg, n, n == 1 ? "" : "es");
}

/* ---- set-up and the loop ------------------------------------------------------- */

/* A refusal ends the forwarder (returns -1); a new connection while a
 * HELLO waits gets the HELLO again (the first went down with the
 * connection it was sent on). */
static int check_watch(fwd_t *f, uint64_t now)
{
    pool__curve_event_t ev;
    pk_error_t e;
    while (f->watch != NULL &&
           pool__curve_watch_next(f->watch, 0, &ev, &e) == PK_OK &&
           ev.kind != POOL_CURVE_EV_NONE) {
        if (pool__curve_ev_failed(ev.kind)) {
            char msg[400];
            say("%s", pool__curve_describe(&ev, "the master", msg, sizeof msg));
            return -1;
        }
        if (ev.kind == POOL_CURVE_EV_OK && f->state == S_HELLO &&
            now - f->hello_ns > POOL_LINK_HELLO_AGAIN_NS)
            hello(f, now);
    }
    return 0;
}

int pk__forward_main(const pk__forward_cfg_t *cfg)
{
    static pool__fs_pool_cfg_t pc;
    int slot = 0, fd = -1, status = 0, zero = 0;
    uint32_t gen = 0;
    pk_error_t e;
    fwd_t f;
    pool__msg_t msg = {0};

    memset(&f, 0, sizeof f);
    f.cfg = cfg;
    pk_error_clear(&e);
    if (pool__worker_env_parse(getenv(POOL_WORKER_ENV), &pc, &slot, &gen, &fd,
                               &e) != PK_OK) {
        fprintf(stderr,
                PROG ": %s (it runs as the worker of a remote pool, started "
                     "by pool_create)\n",
                e.msg);
        return 2;
    }
    pool__worker_cfg_t wc;
    pool__worker_attach(&pc, fd, slot, gen, &wc);
    close(fd);
    if (pc.heap_fd >= 0)
        close(pc.heap_fd);
    unsetenv(POOL_WORKER_ENV);
    if (wc.sb != NULL) {
        POOL_SB_STORE(wc.sb->pid, (int32_t)getpid());
        POOL_SB_STORE(wc.sb->batch, 0);
        POOL_SB_STORE(wc.sb->start_ns, pool__now_ns());
        atomic_store_explicit(&wc.sb->item, 0, memory_order_release);
        atomic_store_explicit(&wc.sb->state, POOL_SB_BUSY,
                              memory_order_release);
    }
    pool__remote_default_name(f.name, sizeof f.name);
    size_t nl = strlen(f.name);
    snprintf(f.name + nl, sizeof f.name - nl, " pid %d", (int)getpid());
    if (pool__remote_sec_load(cfg->endpoint, 0, cfg->keys, cfg->key_name,
                              cfg->insecure, &f.sec, &e) != PK_OK) {
        say("%s", e.msg);
        return 1;
    }

    f.zctx = zmq_ctx_new();
    if (f.zctx == NULL) {
        say("zmq_ctx_new: %s", strerror(errno));
        pool__remote_sec_free(&f.sec);
        return 1;
    }
    zmq_ctx_set(f.zctx, ZMQ_BLOCKY, 0);
    f.local = zmq_socket(f.zctx, ZMQ_DEALER);
    uint8_t id[POOL_WIRE_ID_SIZE];
    pool__wire_id_encode(slot, gen, id);
    if (f.local == NULL ||
        zmq_setsockopt(f.local, ZMQ_ROUTING_ID, id, sizeof id) != 0 ||
        zmq_setsockopt(f.local, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(f.local, ZMQ_SNDHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(f.local, ZMQ_RCVHWM, &zero, sizeof zero) != 0 ||
        zmq_connect(f.local, pc.endpoint) != 0) {
        say("cannot connect to the pool at %s: %s", pc.endpoint,
            strerror(errno));
        status = 1;
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    pool__link_init(&f.link, BACKOFF_MAX_NS);
    while (!stop_sig) {
        uint64_t now = pool__now_ns();
        if (f.remote == NULL && now >= f.link.retry_at &&
            remote_open(&f, now) != 0) {
            status = 1;
            break;
        }
        zmq_pollitem_t it[2] = {{f.local, 0, ZMQ_POLLIN, 0},
                                {f.remote, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, f.remote != NULL ? 2 : 1, POLL_MS) < 0 &&
            errno != EINTR)
            break;
        now = pool__now_ns();
        if (check_watch(&f, now) != 0) {
            status = 1;
            break;
        }
        int stop = 0;
        while (!stop && pool__msg_recv(f.local, &msg, POOL_REMOTE_MAX_FRAMES,
                                       ZMQ_DONTWAIT, &e) == PK_OK) {
            stop = on_local(&f, &msg);
            pool__msg_clear(&msg);
        }
        if (stop)
            break;
        while (f.remote != NULL &&
               pool__msg_recv(f.remote, &msg, POOL_REMOTE_MAX_FRAMES,
                              ZMQ_DONTWAIT, &e) == PK_OK) {
            on_remote(&f, &msg, now);
            pool__msg_clear(&msg);
        }
        if (f.state == S_SESSION && !f.ready_sent) {
            /* Ready for the pool only once the master took us in. */
            pool__wire_hdr_t r = {
                .kind = POOL_WIRE_READY,
                .count = (uint32_t)(pc.prefetch > 0 ? pc.prefetch : 1),
                .aux = (uint64_t)getpid()};
            if (r.count > 1024)
                r.count = 1024;
            pool__remote_send_hdr(f.local, &r, 0);
            f.ready_sent = 1;
        }
        if (f.state == S_SESSION) {
            if (pool__link_beat(&f.link, f.remote, now)) {
                say("no word from the master at %s for %.1f s; joining again",
                    cfg->endpoint, (double)(now - f.link.heard_ns) / 1e9);
                remote_close(&f, now, 0);
            }
        } else if (f.state == S_HELLO &&
                   now - f.hello_ns > POOL_LINK_WELCOME_WAIT_NS) {
            if (!f.told)
                say("no answer from the master at %s yet; still trying",
                    cfg->endpoint);
            f.told = 1;
            remote_close(&f, now, 1);
        }
        give_up(&f, now);
    }
out:
    if (f.remote != NULL && f.state == S_SESSION) {
        /* Say goodbye, so serve drops what it holds of ours at once. */
        int linger = 200;
        pool__wire_hdr_t bye = {.kind = POOL_WIRE_STOP};
        zmq_setsockopt(f.remote, ZMQ_LINGER, &linger, sizeof linger);
        pool__remote_send_hdr(f.remote, &bye, 0);
    }
    while (f.head != NULL) {
        held_t *b = f.head;
        f.head = b->next;
        held_free(b);
    }
    call_unref(f.cur_call);
    pool__msg_free(&msg);
    pool__curve_watch_close(&f.watch);
    if (f.remote != NULL)
        zmq_close(f.remote);
    if (f.local != NULL)
        zmq_close(f.local);
    zmq_ctx_term(f.zctx);
    pool__remote_sec_free(&f.sec);
    if (wc.sb != NULL)
        atomic_store_explicit(&wc.sb->state, POOL_SB_EXITING,
                              memory_order_release);
    return status;
}
