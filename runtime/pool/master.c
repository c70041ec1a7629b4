/*
 * master.c - the scheduler thread of a pool (see master.h for threads, locks
 * and lifetimes).
 *
 * One zmq_poll loop over the ROUTER, the fork-server channel and the eventfd
 * the API writes when it queues work.  Each turn: take submissions, read the
 * fork server's reports (SPAWNED, DIED), read worker messages (READY,
 * RESULT), run the tick (deadlines, cancel grace, respawn backoff, terminate
 * escalation) only when something needs it, dispatch queued batches to
 * workers with credit (at most `prefetch` in flight each), then hand the
 * turn's outcomes to their jobs under one lock.  No timer runs while nothing
 * has a deadline, so an idle pool sleeps and an apply wakes it at once.
 *
 * Failure invariants: a batch is in exactly one place (a caller's hands, the
 * submission list, the queue, one worker's in-flight list, one worker's
 * fast lane (lane.h), or freed);
 * requeueing gives it a new wire id at its next dispatch, so a late RESULT
 * for an old dispatch finds nothing and is dropped - no item is lost or
 * delivered twice.
 */
#define _GNU_SOURCE
#include "pool/internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/common.h"
#include "ipc/wire.h"
#include "pool/recovery.h"
#include "proc/forkserver.h"

#define TICK_MS 10
#define CANCEL_GRACE_NS 200000000ull /* before killing a canceled batch */
#define TERM_GRACE_NS 300000000ull   /* SIGTERM -> SIGKILL on terminate */
#define MAX_RECV_PER_TURN 4096
#define STALL_LOOK_MAX_NS 1000000000ull /* the stall watch's longest nap */

void pool__master_wake(pool_t *p)
{
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(p->cfg.efd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
}

/* ---- turn state ---------------------------------------------------------- */

typedef struct turn {
    pool__outcome_t *out_head, *out_tail; /* to deliver */
    uint64_t now;
    int timed_sent; /* a batch with a deadline went out this turn */
} turn_t;

static void deliver(turn_t *t, pool__outcome_t *o)
{
    PK__LIST_APPEND(t->out_head, t->out_tail, o);
}

static void synth(turn_t *t, pool__job_t *j, size_t first, uint32_t count,
                  pk_err_t status, const char *msg)
{
    pool__outcome_t *o = pool__outcome_synth(j, first, count, status, msg);
    if (o != NULL) {
        deliver(t, o);
        return;
    }
    /* No memory for the outcome: rather than leave its caller waiting for
     * items that will never come, the whole call fails (no allocation). */
    pthread_mutex_lock(&j->p->mu);
    j->lost = 1;
    pthread_cond_broadcast(&j->p->cv);
    pthread_mutex_unlock(&j->p->mu);
}

static void fail_batch(turn_t *t, pool__batch_t *b, pk_err_t status,
                       const char *msg)
{
    synth(t, b->job, b->first, b->count, status, msg);
    pool__batch_free(b);
}

/* ---- batch lists -------------------------------------------------------- */

typedef struct blist {
    pool__batch_t *head, *tail;
} blist_t;

static void bl_push(blist_t *l, pool__batch_t *b)
{
    PK__LIST_APPEND(l->head, l->tail, b);
}

/* Puts the list in front of the queue (requeued work goes first). */
static void q_prepend(pool_t *p, blist_t *l)
{
    if (l->head == NULL)
        return;
    l->tail->next = p->m.q_head;
    if (p->m.q_head == NULL)
        p->m.q_tail = l->tail;
    p->m.q_head = l->head;
    l->head = l->tail = NULL;
}

/* A new batch of items [from, to) of b, sharing its blob. */
static pool__batch_t *batch_slice(const pool__batch_t *b, uint32_t from,
                                  uint32_t to, uint32_t crashes)
{
    pool__batch_t *s = pk__calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->job = b->job;
    s->first = b->first + from;
    s->count = to - from;
    s->crashes = crashes;
    s->flags = b->flags;
    s->blob = b->blob;
    if (b->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        s->items = b->items + (size_t)from * 8;
        s->items_len = (size_t)(to - from) * 8;
    } else {
        pool__wire_rec_t *r = pk__malloc((size_t)b->count * sizeof *r);
        if (r == NULL || pool__wire_recs_parse(b->items, b->items_len, b->count,
                                               b->nbufs, 0, r, NULL) != PK_OK) {
            pk__free(r);
            pk__free(s);
            return NULL;
        }
        const uint8_t *start = r[from].data - POOL_WIRE_REC_SIZE;
        const uint8_t *end = to == b->count ? b->items + b->items_len
                                            : r[to].data - POOL_WIRE_REC_SIZE;
        uint32_t buf_end = to == b->count ? b->nbufs : r[to].buf0;
        s->items = start;
        s->items_len = (size_t)(end - start);
        s->bufs = b->bufs + r[from].buf0;
        s->nbufs = buf_end - r[from].buf0;
        pk__free(r);
    }
    pool__job_ref(s->job);
    pool__blob_ref(s->blob);
    return s;
}

/* Appends the slice [from, to) to l, or fails those items when memory
 * runs out. */
static void push_slice(turn_t *t, blist_t *l, const pool__batch_t *b,
                       uint32_t from, uint32_t to, uint32_t crashes)
{
    if (from >= to)
        return;
    pool__batch_t *s = batch_slice(b, from, to, crashes);
    if (s == NULL) {
        synth(t, b->job, b->first + from, to - from, PK_ENOMEM,
              "out of memory splitting a batch");
        return;
    }
    bl_push(l, s);
}

/* ---- talking to workers -------------------------------------------------- */

/* Logs a malformed message from worker `slot`, once per kind per pool. */
#define LOG_ONCE(p, kind, slot, ...)                                           \
    do {                                                                       \
        char who_[32];                                                         \
        snprintf(who_, sizeof who_, "worker %d", (slot));                      \
        pool__wire_log_once(&(p)->m.logged, (kind), who_, __VA_ARGS__);        \
    } while (0)

static int send_copy(void *sock, const void *data, size_t len, int more)
{
    int r;
    while ((r = zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0)) < 0 &&
           errno == EINTR)
        ;
    return r < 0 ? -1 : 0;
}

static int send_zc(void *sock, const void *data, size_t len, pool__blob_t *b,
                   int more)
{
    if (len < 1024)
        return send_copy(sock, data, len, more);
    zmq_msg_t m;
    pool__blob_ref(b);
    if (zmq_msg_init_data(&m, (void *)data, len, pool__blob_zc_free, b) != 0) {
        pool__blob_unref(b);
        return -1;
    }
    while (zmq_msg_send(&m, sock, more ? ZMQ_SNDMORE : 0) < 0) {
        if (errno == EINTR)
            continue;
        zmq_msg_close(&m);
        return -1;
    }
    return 0;
}

static int send_ctl(pool_t *p, int slot, int kind)
{
    uint8_t id[POOL_WIRE_ID_SIZE], hb[POOL_WIRE_HDR_SIZE];
    pool__wire_id_encode(slot, p->m.w[slot].gen, id);
    pool__wire_hdr_t h = {.kind = (uint8_t)kind};
    pool__wire_hdr_encode(&h, hb);
    if (send_copy(p->m.router, id, sizeof id, 1) != 0)
        return -1;
    return send_copy(p->m.router, hb, sizeof hb, 0);
}

/* What send_task did. */
enum send_rc { SEND_OK = 0, SEND_UNREACHABLE, SEND_NOMEM };
#define SEND_TAB_STACK 64 /* arena buffer table entries kept on the stack */

static enum send_rc send_task(pool_t *p, int slot, pool__batch_t *b,
                              uint64_t now)
{
    pool__mworker_t *w = &p->m.w[slot];
    uint8_t id[POOL_WIRE_ID_SIZE], hb[POOL_WIRE_HDR_SIZE];
    pool__wire_id_encode(slot, w->gen, id);
    b->id = ++p->m.next_batch_id;
    /* The call frame travels once per job and worker generation. */
    int same = w->sent_call == b->job->call_id;
    pool__wire_hdr_t h = {.kind = POOL_WIRE_TASK,
                          .flags =
                              b->flags | (same ? POOL_WIRE_F_SAME_CALL : 0),
                          .batch = b->id,
                          .count = b->count,
                          .nbufs = b->nbufs,
                          .aux = b->job->timeout_ns};
    pool__wire_hdr_encode(&h, hb);
    /* Only the first frame can fail (EHOSTUNREACH: the peer is gone);
     * after it the message is committed.  The arena's buffer table is on
     * the stack for the usual few buffers. */
    uint8_t stack_tab[SEND_TAB_STACK * POOL_WIRE_SHM_ENT];
    uint8_t *tab = NULL;
    for (uint32_t i = 0; i < b->nbufs && tab == NULL; i++)
        if (b->bufs[i].shm != POOL_WIRE_SHM_INLINE) {
            tab = b->nbufs <= SEND_TAB_STACK
                      ? stack_tab
                      : pk__malloc((size_t)b->nbufs * POOL_WIRE_SHM_ENT);
            if (tab == NULL)
                return SEND_NOMEM;
        }
    if (tab != NULL) {
        h.flags |= POOL_WIRE_F_SHM;
        pool__wire_hdr_encode(&h, hb);
        for (uint32_t i = 0; i < b->nbufs; i++) {
            uint64_t off = b->bufs[i].shm;
            pool__wire_shm_encode(tab + (size_t)i * POOL_WIRE_SHM_ENT, off,
                                  off == POOL_WIRE_SHM_INLINE ? 0
                                                              : b->bufs[i].len);
        }
    }
    if (send_copy(p->m.router, id, sizeof id, 1) != 0) {
        if (tab != stack_tab)
            pk__free(tab);
        return SEND_UNREACHABLE;
    }
    send_copy(p->m.router, hb, sizeof hb, 1);
    send_copy(p->m.router, b->job->call, same ? 0 : b->job->call_len, 1);
    w->sent_call = b->job->call_id;
    send_zc(p->m.router, b->items, b->items_len, b->blob, b->nbufs > 0);
    if (tab != NULL)
        send_copy(p->m.router, tab, (size_t)b->nbufs * POOL_WIRE_SHM_ENT, 1);
    if (tab != stack_tab)
        pk__free(tab);
    for (uint32_t i = 0; i < b->nbufs; i++) {
        int more = i + 1 < b->nbufs;
        if (b->bufs[i].shm != POOL_WIRE_SHM_INLINE)
            send_copy(p->m.router, NULL, 0, more);
        else
            send_zc(p->m.router, b->bufs[i].data, b->bufs[i].len, b->blob,
                    more);
    }
    return SEND_OK;
}

static void kill_worker(pool_t *p, int slot, int sig)
{
    pool__mworker_t *w = &p->m.w[slot];
    if (w->pid <= 0)
        return;
    pool__fs_msg_t m = {.type = POOL_FS_KILL,
                        .slot = slot,
                        .gen = w->gen,
                        .pid = w->pid,
                        .arg = sig};
    pool__fs_send(p->m.chan, &m);
}

/* Kills worker `slot` for `reason` (item `item` of batch `batch`, for a
 * timeout); it takes no more work. */
static void kill_for(pool_t *p, int slot, enum pool__kill_reason reason,
                     uint64_t batch, uint32_t item)
{
    pool__mworker_t *w = &p->m.w[slot];
    w->kill_reason = reason;
    w->kill_batch = batch;
    w->kill_item = item;
    w->state = POOL_W_DRAINING;
    kill_worker(p, slot, SIGKILL);
}

/* What spawning slot sets up (its state, its scoreboard slot, nlive), and
 * its SPAWN message in *m. */
static void spawn_prepare(pool_t *p, int slot, uint64_t now, pool__fs_msg_t *m)
{
    pool__mworker_t *w = &p->m.w[slot];
    if (w->gen > 0) {
        pthread_mutex_lock(&p->mu);
        p->lk.stats[slot].restarts++;
        pthread_mutex_unlock(&p->mu);
    }
    w->gen++;
    w->sent_call = 0; /* a new process holds no call */
    w->productive = 0;
    w->state = POOL_W_SPAWNING;
    w->pid = 0;
    w->ready_seen = 0;
    w->unreachable = 0;
    w->kill_reason = POOL_KILL_NONE;
    w->respawn_at = 0;
    w->spawn_ns = now;
    w->progress_ns = now;
    w->seen_state = POOL_SB_IDLE;
    w->seen_item = 0;
    w->seen_batch = w->seen_done = 0;
    pool__sb_slot_t *sb = &p->cfg.sb[slot];
    POOL_SB_STORE(sb->pid, 0);
    POOL_SB_STORE(sb->state, POOL_SB_IDLE);
    POOL_SB_STORE(sb->batch, 0);
    POOL_SB_STORE(sb->item, 0);
    POOL_SB_STORE(sb->items_done, 0);
    POOL_SB_STORE(sb->busy_ns, 0);
    if (p->cfg.shm != NULL)
        pool__shm_res_reset(p->cfg.shm, slot); /* the old process is reaped */
    atomic_store_explicit(&sb->gen, w->gen, memory_order_release);
    *m = (pool__fs_msg_t){.type = POOL_FS_SPAWN,
                          .slot = slot,
                          .gen = w->gen,
                          .bind = p->cfg.bind,
                          .cpus = p->cfg.places[slot].cpus};
    pthread_mutex_lock(&p->mu);
    p->lk.nlive++;
    pthread_mutex_unlock(&p->mu);
}

static void spawn(pool_t *p, int slot, uint64_t now)
{
    pool__mworker_t *w = &p->m.w[slot];
    pool__fs_msg_t m;
    spawn_prepare(p, slot, now, &m);
    if (pool__fs_send(p->m.chan, &m) != PK_OK) {
        /* The channel is gone; the EOF handler marks the pool broken. */
        w->state = POOL_W_DEAD;
        pthread_mutex_lock(&p->mu);
        p->lk.nlive--;
        pthread_mutex_unlock(&p->mu);
    }
}

void pool__master_first_spawns(pool_t *p, pool__fs_msg_t *msgs)
{
    uint64_t now = pool__now_ns();
    for (int s = 0; s < p->cfg.nworkers; s++)
        spawn_prepare(p, s, now, &msgs[s]);
}

static void set_broken(pool_t *p, turn_t *t, const char *msg);

/* ---- fast lanes (lane.h): the master's part ------------------------------
 * The master takes a lane's batch back when its worker died before
 * finishing it, when the reply went over the socket (WIRE), and when its
 * caller gave up on a finished one; it enforces deadlines and cancel grace
 * on lane batches as on in-flight ones. */

/* Copies a job's cancel mark to the master's own (p->mu held). */
static void lane_mark(pool__batch_t *b)
{
    if (b != NULL && b->job->canceled && !b->job->m_canceled) {
        b->job->m_canceled = 1;
        b->job->m_cancel_ns = b->job->cancel_ns;
    }
}

/* For a worker that is gone: unless it finished (DONE, which its caller
 * consumes as usual), the lane goes back to FREE (ORPHAN while a caller
 * holds its claim: that caller frees it), its caller is woken to wait on
 * the job instead, and its batch (if registered) is returned. */
static pool__batch_t *lane_take_unfinished(pool_t *p, int slot)
{
    if (p->cfg.lanes == NULL)
        return NULL;
    pool__lane_t *l = &p->cfg.lanes[slot];
    pool__batch_t *b = NULL;
    pthread_mutex_lock(&p->mu);
    uint32_t v = atomic_load(&l->state);
    for (;;) {
        uint32_t st = POOL_LANE_ST(v);
        if (st == POOL_LANE_DONE)
            break;
        uint32_t to = st == POOL_LANE_CLAIMED || st == POOL_LANE_ORPHAN
                          ? POOL_LANE_ORPHAN
                          : POOL_LANE_FREE;
        if (atomic_compare_exchange_weak(&l->state, &v, POOL_LANE_TAG(v) | to))
            break;
    }
    if (POOL_LANE_ST(v) != POOL_LANE_DONE) {
        b = p->lk.lane_recs[slot].b;
        p->lk.lane_recs[slot].b = NULL;
        lane_mark(b);
    }
    pthread_mutex_unlock(&p->mu);
    pool__lane_wake(l);
    return b;
}

/* The batch whose reply came over the socket as `id` (the worker set WIRE
 * first), or NULL. */
static pool__batch_t *lane_take_wire(pool_t *p, int slot, uint64_t id)
{
    if (p->cfg.lanes == NULL)
        return NULL;
    pool__lane_t *l = &p->cfg.lanes[slot];
    pthread_mutex_lock(&p->mu);
    pool__batch_t *b = p->lk.lane_recs[slot].b;
    uint32_t v = atomic_load(&l->state);
    if (b == NULL || b->id != id || POOL_LANE_ST(v) != POOL_LANE_WIRE) {
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    p->lk.lane_recs[slot].b = NULL;
    lane_mark(b);
    atomic_store(&l->state, POOL_LANE_TAG(v) | POOL_LANE_FREE);
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* Deadlines and cancel grace of lane batches; frees finished ones nobody
 * waits for.  Returns non-zero while some lane batch needs the tick. */
static int lane_tick(pool_t *p, turn_t *t)
{
    if (p->cfg.lanes == NULL)
        return 0;
    int need = 0;
    pool__batch_t *drop = NULL;
    pthread_mutex_lock(&p->mu);
    for (int s = 0; s < p->cfg.nworkers; s++) {
        pool__batch_t *b = p->lk.lane_recs[s].b;
        if (b == NULL)
            continue;
        pool__mworker_t *w = &p->m.w[s];
        pool__lane_t *l = &p->cfg.lanes[s];
        int alive = w->kill_reason == POOL_KILL_NONE && w->pid > 0;
        if (b->job->canceled) {
            uint32_t v = atomic_load(&l->state);
            if (POOL_LANE_ST(v) == POOL_LANE_DONE) {
                p->lk.lane_recs[s].b = NULL;
                atomic_store(&l->state, POOL_LANE_TAG(v) | POOL_LANE_FREE);
                b->next = drop;
                drop = b;
                continue;
            }
            need = 1;
            if (alive &&
                pool__rec_overdue(t->now, b->job->cancel_ns, CANCEL_GRACE_NS))
                kill_for(p, s, POOL_KILL_CANCEL, 0, 0);
            continue;
        }
        if (b->job->timeout_ns == 0 ||
            POOL_LANE_ST(atomic_load(&l->state)) == POOL_LANE_DONE)
            continue; /* finished: its caller collects it when it likes */
        need = 1;
        pool__sb_slot_t *sb = &p->cfg.sb[s];
        if (!alive ||
            atomic_load_explicit(&sb->state, memory_order_acquire) !=
                POOL_SB_BUSY ||
            POOL_SB_LOAD(sb->batch) != b->id)
            continue;
        uint32_t item = atomic_load_explicit(&sb->item, memory_order_acquire);
        uint64_t start = POOL_SB_LOAD(sb->start_ns);
        if (item < b->count &&
            pool__rec_overdue(t->now, start, b->job->timeout_ns))
            kill_for(p, s, POOL_KILL_TIMEOUT, b->id, item);
    }
    pthread_mutex_unlock(&p->mu);
    while (drop != NULL) {
        pool__batch_t *n = drop->next;
        pool__batch_free(drop);
        drop = n;
    }
    return need;
}

/* Does some lane carry a batch a worker has still to finish?  A finished
 * one (DONE) needs no worker: its reply is in the master's mapping, so a
 * close need not wait for its caller to collect it. */
static int lane_busy(pool_t *p)
{
    int busy = 0;
    if (p->cfg.lanes == NULL)
        return 0;
    pthread_mutex_lock(&p->mu);
    for (int s = 0; s < p->cfg.nworkers && !busy; s++)
        busy =
            p->lk.lane_recs[s].b != NULL &&
            POOL_LANE_ST(atomic_load(&p->cfg.lanes[s].state)) != POOL_LANE_DONE;
    pthread_mutex_unlock(&p->mu);
    return busy;
}

/* At exit, every worker gone: what lanes still hold nobody will collect. */
static void lane_drop_all(pool_t *p, turn_t *t)
{
    for (int s = 0; p->cfg.lanes != NULL && s < p->cfg.nworkers; s++) {
        pthread_mutex_lock(&p->mu);
        pool__batch_t *b = p->lk.lane_recs[s].b;
        p->lk.lane_recs[s].b = NULL;
        pthread_mutex_unlock(&p->mu);
        if (b != NULL)
            fail_batch(t, b, PK_ECANCELED, "the pool was destroyed");
    }
}

/* ---- deaths ------------------------------------------------------------- */

static void describe_exit(char *buf, size_t size, int slot, int pid, int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *ab = sigabbrev_np(sig);
        snprintf(buf, size,
                 "worker %d (pid %d) was killed by signal %d (SIG%s)", slot,
                 pid, sig, ab ? ab : "?");
    } else {
        snprintf(buf, size, "worker %d (pid %d) exited with status %d", slot,
                 pid, WIFEXITED(status) ? WEXITSTATUS(status) : status);
    }
}

/* Carries out the recovery plan for batch b of a dead worker (recovery.h):
 * requeued pieces go to l, failed items get their outcome.  Consumes b. */
static void recover_batch(turn_t *t, blist_t *l, pool__batch_t *b,
                          const pool__rec_plan_t *plan, const char *how)
{
    if (plan->kind == POOL_REC_KEEP) {
        b->next = NULL;
        bl_push(l, b);
        return;
    }
    for (int i = 0; i < plan->npieces; i++) {
        const pool__rec_piece_t *x = &plan->piece[i];
        char msg[400];
        switch (x->action) {
        case POOL_REC_REQUEUE:
            push_slice(t, l, b, x->from, x->to, x->crashes);
            break;
        case POOL_REC_CRASHED:
            /* The index travels beside the message (pool_item_t.index):
             * callers prefix it, so the text does not repeat it. */
            snprintf(msg, sizeof msg, "%s while running it", how);
            synth(t, b->job, b->first + x->from, 1, PK_ECRASHED, msg);
            break;
        case POOL_REC_TIMEDOUT:
            snprintf(msg, sizeof msg, "timed out after %g s",
                     (double)b->job->timeout_ns / 1e9);
            synth(t, b->job, b->first + x->from, 1, PK_ETIMEDOUT, msg);
            break;
        }
    }
    pool__batch_free(b);
}

static void on_death(pool_t *p, turn_t *t, int slot, uint32_t gen, int pid,
                     int status)
{
    pool__mworker_t *w = &p->m.w[slot];
    if (gen != w->gen || w->state == POOL_W_DEAD)
        return;
    pool__sb_slot_t *sb = &p->cfg.sb[slot];
    uint32_t sbs = atomic_load_explicit(&sb->state, memory_order_acquire);
    uint32_t sbi = atomic_load_explicit(&sb->item, memory_order_acquire);
    uint64_t sbb = POOL_SB_LOAD(sb->batch);
    /* Status 0 is a clean exit only when the worker was asked to go (STOP)
     * or said it was retiring; a function that calls exit(0) mid-item is a
     * crash like any other, or its batch would be re-sent for ever. */
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                w->state == POOL_W_DRAINING;
    char how[256];
    if (w->kill_reason == POOL_KILL_STALL)
        snprintf(how, sizeof how,
                 "worker %d (pid %d) made no progress for %g s and was "
                 "killed",
                 slot, pid, (double)w->stall_bound_ns / 1e9);
    else
        describe_exit(how, sizeof how, slot, pid, status);

    /* A lane batch it had not finished is one more of its in-flight ones. */
    pool__batch_t *lb = lane_take_unfinished(p, slot);
    if (lb != NULL && p->m.terminating) {
        fail_batch(t, lb, PK_ECANCELED, "the pool was terminated");
    } else if (lb != NULL && p->lk.broken) {
        fail_batch(t, lb, PK_ECRASHED, p->lk.broken_msg);
    } else if (lb != NULL) {
        lb->next = w->inflight;
        w->inflight = lb;
    }

    blist_t l = {0};
    pool__batch_t *b = w->inflight;
    while (b != NULL) {
        pool__batch_t *next = b->next;
        pool__rec_batch_t rb = {
            .count = b->count,
            .crashes = b->crashes,
            .canceled = b->job->m_canceled,
            .timed_out =
                w->kill_reason == POOL_KILL_TIMEOUT && b->id == w->kill_batch,
            .timeout_item = w->kill_item,
            .blamed = !clean &&
                      (w->kill_reason == POOL_KILL_NONE ||
                       w->kill_reason == POOL_KILL_STALL) &&
                      sbs == POOL_SB_BUSY && sbb == b->id,
            .running = sbi,
            .retries = p->cfg.retries,
        };
        pool__rec_plan_t plan;
        pool__rec_plan_batch(&rb, &plan);
        if (plan.kind == POOL_REC_DROP)
            pool__batch_free(b);
        else
            recover_batch(t, &l, b, &plan, how);
        b = next;
    }
    w->inflight = NULL;
    w->ninflight = 0;
    q_prepend(p, &l);

    pool__rec_death_t d = {
        .was_ready = w->ready_seen,
        .clean = clean,
        .killed = w->kill_reason != POOL_KILL_NONE,
        .productive = w->productive,
        .lived_ns = t->now - w->spawn_ns,
        .nworkers = p->cfg.nworkers,
        .quick_deaths = w->quick_deaths,
        .startup_deaths = p->m.startup_deaths,
    };
    w->state = POOL_W_DEAD;
    w->pid = 0;
    pthread_mutex_lock(&p->mu);
    p->lk.nlive--;
    p->lk.stats[slot].pid = 0;
    p->lk.stats[slot].busy_base_ns += POOL_SB_LOAD(sb->busy_ns);
    POOL_SB_STORE(sb->busy_ns, 0);
    pthread_mutex_unlock(&p->mu);

    if (p->m.terminating || p->m.stop_sent || p->lk.broken)
        return;
    pool__rec_respawn_t r;
    pool__rec_respawn(&d, &r);
    p->m.startup_deaths = r.startup_deaths;
    w->quick_deaths = r.quick_deaths;
    if (r.broken) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "workers keep dying at start-up (%u in a row; last: %s)",
                 p->m.startup_deaths, how);
        set_broken(p, t, msg);
        return;
    }
    if (r.delay_ns == 0)
        spawn(p, slot, t->now);
    else
        w->respawn_at = t->now + r.delay_ns;
}

static void fail_all(pool_t *p, turn_t *t, pk_err_t code, const char *msg)
{
    pool__batch_t *b = p->m.q_head;
    p->m.q_head = p->m.q_tail = NULL;
    while (b != NULL) {
        pool__batch_t *n = b->next;
        fail_batch(t, b, code, msg);
        b = n;
    }
    for (int s = 0; s < p->cfg.nworkers; s++) {
        pool__mworker_t *w = &p->m.w[s];
        b = w->inflight;
        w->inflight = NULL;
        w->ninflight = 0;
        while (b != NULL) {
            pool__batch_t *n = b->next;
            fail_batch(t, b, code, msg);
            b = n;
        }
    }
}

static void set_broken(pool_t *p, turn_t *t, const char *msg)
{
    pthread_mutex_lock(&p->mu);
    if (p->lk.broken == PK_OK) {
        p->lk.broken = PK_ECRASHED;
        snprintf(p->lk.broken_msg, sizeof p->lk.broken_msg, "%s", msg);
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fail_all(p, t, PK_ECRASHED, msg);
    for (int s = 0; s < p->cfg.nworkers; s++)
        p->m.w[s].respawn_at = 0;
}

/* ---- fork-server reports ------------------------------------------------- */

static void on_fs(pool_t *p, turn_t *t, int *chan_ok)
{
    for (;;) {
        pool__fs_msg_t m;
        int r = pool__fs_recv(p->m.chan, &m);
        if (r == -1)
            return;
        if (r == 0 || r == -2) {
            /* The fork server is gone, and with it every worker. */
            *chan_ok = 0;
            pthread_mutex_lock(&p->mu);
            p->lk.nlive = 0;
            pthread_mutex_unlock(&p->mu);
            for (int s = 0; s < p->cfg.nworkers; s++)
                p->m.w[s].state = POOL_W_DEAD;
            set_broken(p, t, "the fork server died");
            return;
        }
        if (m.slot < 0 || m.slot >= p->cfg.nworkers)
            continue;
        pool__mworker_t *w = &p->m.w[m.slot];
        switch (m.type) {
        case POOL_FS_SPAWNED:
            if (m.gen != w->gen || w->state != POOL_W_SPAWNING)
                break;
            w->pid = m.pid;
            w->state = POOL_W_STARTING;
            pthread_mutex_lock(&p->mu);
            p->lk.stats[m.slot].pid = m.pid;
            pthread_mutex_unlock(&p->mu);
            if (p->m.terminating)
                kill_worker(p, m.slot, SIGKILL);
            break;
        case POOL_FS_SPAWN_FAILED:
            if (m.gen != w->gen)
                break;
            w->state = POOL_W_DEAD;
            pthread_mutex_lock(&p->mu);
            p->lk.nlive--;
            pthread_mutex_unlock(&p->mu);
            if (!p->m.terminating && !p->m.stop_sent) {
                char msg[300];
                snprintf(msg, sizeof msg, "cannot start worker %d: %s", m.slot,
                         strerror(m.arg));
                set_broken(p, t, msg);
            }
            break;
        case POOL_FS_DIED:
            on_death(p, t, m.slot, m.gen, m.pid, m.arg);
            break;
        default:
            break;
        }
    }
}

/* ---- worker messages ---------------------------------------------------- */

static pool__batch_t *take_inflight(pool__mworker_t *w, uint64_t id)
{
    pool__batch_t **pp = &w->inflight;
    while (*pp != NULL) {
        if ((*pp)->id == id) {
            pool__batch_t *b = *pp;
            *pp = b->next;
            b->next = NULL;
            w->ninflight--;
            return b;
        }
        pp = &(*pp)->next;
    }
    return NULL;
}

/* Validates a POOL_WIRE_F_SHM RESULT's buffer table and accepts its arena
 * blocks (*ents, nbufs entries, owned by the caller).  On failure nothing
 * stays accepted, *ents is NULL and the blocks the table named are freed
 * when nothing else holds them. */
static pk_err_t shm_take(pool_t *p, int slot, const pool__wire_hdr_t *h,
                         zmq_msg_t *f, size_t nf, pool__wire_shm_t **ents,
                         pk_error_t *e)
{
    *ents = NULL;
    if (p->cfg.shm == NULL)
        return pk__err(e, PK_EPROTO, "arena buffers, but the pool has none");
    if (nf != pool__wire_nframes(h))
        return pk__err(e, PK_EPROTO, "RESULT with %zu frames, not %zu", nf,
                       pool__wire_nframes(h));
    const pool__shm_layout_t *l = &p->cfg.shm->lay;
    uint64_t lo = l->res_off + (uint64_t)slot * l->res_size;
    size_t *fl = pk__malloc((size_t)h->nbufs * sizeof *fl);
    pool__wire_shm_t *v = pk__malloc((size_t)h->nbufs * sizeof *v);
    if (fl == NULL || v == NULL) {
        pk__free(fl);
        pk__free(v);
        /* Free what the table names straight from the frame (release
         * checks every range), or the worker's blocks would stay taken. */
        const uint8_t *t = zmq_msg_data(&f[2]);
        if (zmq_msg_size(&f[2]) == (size_t)h->nbufs * POOL_WIRE_SHM_ENT)
            for (uint32_t k = 0; k < h->nbufs; k++) {
                pool__wire_shm_t one;
                if (pool__wire_shm_parse(
                        t + (size_t)k * POOL_WIRE_SHM_ENT, POOL_WIRE_SHM_ENT, 1,
                        lo, lo + l->res_size, 0, NULL, &one, NULL) == PK_OK &&
                    one.off != POOL_WIRE_SHM_INLINE)
                    pool__shm_res_release(p->cfg.shm, slot, one.off,
                                          (size_t)one.len, 0);
            }
        return pk__err(e, PK_ENOMEM, "out of memory");
    }
    for (uint32_t k = 0; k < h->nbufs; k++)
        fl[k] = zmq_msg_size(&f[3 + k]);
    pk_err_t rc =
        pool__wire_shm_parse(zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), h->nbufs,
                             lo, lo + l->res_size, 0, fl, v, e);
    pk__free(fl);
    if (rc != PK_OK) {
        pk__free(v);
        return rc;
    }
    uint32_t k = 0;
    for (; k < h->nbufs; k++)
        if (v[k].off != POOL_WIRE_SHM_INLINE &&
            pool__shm_res_accept(p->cfg.shm, slot, v[k].off,
                                 (size_t)v[k].len) != 0)
            break;
    if (k == h->nbufs) {
        *ents = v;
        return PK_OK;
    }
    rc = pk__err(e, PK_EPROTO, "arena buffer %u overlaps one still in use", k);
    pool__shm_ents_release(p->cfg.shm, slot, v, h->nbufs, k);
    return rc;
}

static void shm_drop(pool_t *p, int slot, uint32_t n, pool__wire_shm_t **ents)
{
    if (*ents == NULL)
        return;
    pool__shm_ents_release(p->cfg.shm, slot, *ents, n, n);
    *ents = NULL;
}

/* The raw-vector reply a batch's TASK asked for (0: none).  A worker that
 * answers a plain task with a vector, or with the wrong one, would make the
 * caller copy into an output it never gave: that is a malformed RESULT. */
static uint16_t vec_reply_allowed(const pool__batch_t *b)
{
    if (b->flags & POOL_WIRE_F_RES_I64)
        return POOL_WIRE_F_VEC_I64;
    if (b->flags & POOL_WIRE_F_RES_F64)
        return POOL_WIRE_F_VEC_F64;
    return 0;
}

pk_err_t pool__result_check(const pool__batch_t *b, const pool__wire_hdr_t *h,
                            size_t nf, const void *payload, size_t plen,
                            pk_error_t *e)
{
    const uint16_t vec = POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64;
    if (h->count != b->count)
        return pk__err(e, PK_EPROTO, "RESULT with %u items for a batch of %u",
                       h->count, b->count);
    if (nf != pool__wire_nframes(h))
        return pk__err(e, PK_EPROTO, "RESULT with %zu frames, not %zu", nf,
                       pool__wire_nframes(h));
    if ((h->flags & vec) != 0 && (h->flags & vec) != vec_reply_allowed(b))
        return pk__err(
            e, PK_EPROTO,
            "RESULT encoding (flags 0x%x) is not what the task asked",
            (unsigned)h->flags);
    if (h->flags & vec)
        return pool__wire_vec_check(plen, h->count, e);
    return pool__wire_recs_parse(payload, plen, h->count, h->nbufs, 1, NULL, e);
}

static void on_result(pool_t *p, turn_t *t, int slot, const pool__wire_hdr_t *h,
                      zmq_msg_t *f, size_t nf)
{
    pool__mworker_t *w = &p->m.w[slot];
    pk_error_t e;
    pk_error_clear(&e);
    pk_err_t rc = PK_OK;
    int shm = (h->flags & POOL_WIRE_F_SHM) != 0;
    pool__wire_shm_t *ents = NULL;
    if (shm)
        rc = shm_take(p, slot, h, f, nf, &ents, &e);
    pool__batch_t *b = take_inflight(w, h->batch);
    if (b == NULL && (h->batch & POOL_LANE_ID_BIT))
        b = lane_take_wire(p, slot, h->batch);
    if (b == NULL) {
        shm_drop(p, slot, h->nbufs, &ents);
        return; /* a dispatch we no longer wait for */
    }
    w->progress_ns = t->now;
    if (rc == PK_OK)
        rc = pool__result_check(b, h, nf, zmq_msg_data(&f[1]),
                                zmq_msg_size(&f[1]), &e);
    if (rc == PK_ENOMEM) {
        /* our own shortage, not the worker's fault */
        shm_drop(p, slot, h->nbufs, &ents);
        fail_batch(t, b, PK_ENOMEM, "out of memory receiving a result");
    } else if (rc != PK_OK) {
        shm_drop(p, slot, h->nbufs, &ents);
        LOG_ONCE(p, POOL_WIRE_RESULT, slot, "malformed RESULT dropped: %s",
                 e.msg);
        char msg[300];
        snprintf(msg, sizeof msg, "malformed result from worker %d: %s", slot,
                 e.msg);
        fail_batch(t, b, PK_EPROTO, msg);
    } else if (b->job->m_canceled) {
        shm_drop(p, slot, h->nbufs, &ents);
        pool__batch_free(b);
    } else {
        pool__outcome_t *o = pk__calloc(1, sizeof *o);
        zmq_msg_t *fr = pk__malloc((1 + (size_t)h->nbufs) * sizeof *fr);
        if (o == NULL || fr == NULL) {
            pk__free(o);
            pk__free(fr);
            shm_drop(p, slot, h->nbufs, &ents);
            fail_batch(t, b, PK_ENOMEM, "out of memory receiving a result");
        } else {
            /* frames[0] is the payload, frames[1 + k] buffer k's frame (the
             * buffer table, if any, is in ents). */
            for (size_t i = 0; i < 1 + (size_t)h->nbufs; i++) {
                zmq_msg_init(&fr[i]);
                zmq_msg_move(&fr[i], &f[1 + (i > 0 ? (size_t)shm : 0) + i]);
            }
            if (ents != NULL) {
                o->ents = ents;
                o->shm = p->cfg.shm;
                pool__shm_ref(p->cfg.shm);
            }
            o->job = b->job;
            pool__job_ref(b->job);
            o->slot = slot;
            o->first = b->first;
            o->count = b->count;
            o->flags = h->flags;
            o->nbufs = h->nbufs;
            o->frames = fr;
            /* Item time for adaptive chunking: what the worker measured. */
            uint64_t per = h->aux / h->count;
            uint64_t old = atomic_load(&b->job->item_ns);
            atomic_store(&b->job->item_ns,
                         old == 0 ? (per ? per : 1) : (old * 3 + per) / 4);
            deliver(t, o);
            pool__batch_free(b);
            w->productive = 1;
        }
    }
    if (h->flags & POOL_WIRE_F_RETIRING) {
        /* It runs nothing more: its other batches go back to the queue. */
        blist_t l = {0};
        pool__batch_t *x = w->inflight;
        while (x != NULL) {
            pool__batch_t *n = x->next;
            bl_push(&l, x);
            x = n;
        }
        w->inflight = NULL;
        w->ninflight = 0;
        q_prepend(p, &l);
        w->state = POOL_W_DRAINING;
        w->kill_reason = POOL_KILL_RETIRE;
    }
}

static void on_message(pool_t *p, turn_t *t, zmq_msg_t *f, size_t nf)
{
    int slot;
    uint32_t gen;
    if (pool__wire_id_parse(zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), &slot,
                            &gen) != PK_OK ||
        slot >= p->cfg.nworkers)
        return;
    pool__mworker_t *w = &p->m.w[slot];
    if (gen != w->gen || w->state == POOL_W_DEAD)
        return; /* a previous generation's last words */
    if (nf < 2)
        return;
    pool__wire_hdr_t h;
    pk_error_t e;
    if (pool__wire_hdr_parse(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), &h,
                             &e) != PK_OK) {
        LOG_ONCE(p, 0, slot, "malformed message dropped: %s", e.msg);
        return;
    }
    switch (h.kind) {
    case POOL_WIRE_READY:
        if (nf != 2)
            LOG_ONCE(p, h.kind, slot, "READY with %zu frames dropped", nf - 1);
        if (w->state != POOL_W_STARTING && w->state != POOL_W_SPAWNING)
            break;
        w->state = POOL_W_READY;
        w->ready_seen = 1;
        w->pid = (int32_t)h.aux > 0 && w->pid == 0 ? (int32_t)h.aux : w->pid;
        p->m.startup_deaths = 0;
        pthread_mutex_lock(&p->mu);
        p->lk.stats[slot].pid = w->pid; /* READY may beat SPAWNED */
        if (!w->ever_ready) /* a respawned worker's READY is not another */
            p->lk.nready++;
        w->ever_ready = 1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (p->m.stop_sent) {
            w->state = POOL_W_DRAINING;
            send_ctl(p, slot, POOL_WIRE_STOP);
        }
        break;
    case POOL_WIRE_RESULT:
        on_result(p, t, slot, &h, f + 1, nf - 1);
        break;
    case POOL_WIRE_HEARTBEAT:
        break;
    default:
        LOG_ONCE(p, h.kind, slot, "unexpected %s dropped",
                 pool__wire_kind_name(h.kind));
        break;
    }
}

static void on_router(pool_t *p, turn_t *t, zmq_msg_t **fr, size_t *cap)
{
    for (int k = 0; k < MAX_RECV_PER_TURN; k++) {
        size_t n = 0;
        int more = 1;
        while (more) {
            if (n == *cap) {
                size_t nc = *cap * 2;
                zmq_msg_t *x = pk__realloc(*fr, nc * sizeof *x);
                if (x == NULL) {
                    /* drain the rest of this message into one frame */
                    zmq_msg_t junk;
                    zmq_msg_init(&junk);
                    while (zmq_msg_more(&(*fr)[n - 1]) &&
                           zmq_msg_recv(&junk, p->m.router, 0) >= 0 &&
                           zmq_msg_more(&junk))
                        ;
                    zmq_msg_close(&junk);
                    more = 0;
                    break;
                }
                *fr = x;
                *cap = nc;
            }
            zmq_msg_t *m = &(*fr)[n];
            zmq_msg_init(m);
            int r = zmq_msg_recv(m, p->m.router, n == 0 ? ZMQ_DONTWAIT : 0);
            if (r < 0) {
                zmq_msg_close(m);
                if (n == 0 && (errno == EAGAIN || errno == EINTR))
                    return;
                if (n == 0)
                    return;
                break;
            }
            n++;
            more = zmq_msg_more(m);
        }
        if (n > 0)
            on_message(p, t, *fr, n);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&(*fr)[i]);
    }
}

/* ---- submissions, cancels, ticks ---------------------------------------- */

static void take_submissions(pool_t *p, turn_t *t, int *terminate,
                             int *shutdown, int *closed, int *active_jobs)
{
    pthread_mutex_lock(&p->mu);
    pool__batch_t *h = p->lk.subq_head;
    p->lk.subq_head = p->lk.subq_tail = NULL;
    int cancel = p->lk.cancel_pending;
    p->lk.cancel_pending = 0;
    if (cancel) {
        /* Copy the cancel marks into master-only fields. */
        for (pool__batch_t *b = p->m.q_head; b; b = b->next)
            if (b->job->canceled && !b->job->m_canceled) {
                b->job->m_canceled = 1;
                b->job->m_cancel_ns = b->job->cancel_ns;
            }
        for (int s = 0; s < p->cfg.nworkers; s++)
            for (pool__batch_t *b = p->m.w[s].inflight; b; b = b->next)
                if (b->job->canceled && !b->job->m_canceled) {
                    b->job->m_canceled = 1;
                    b->job->m_cancel_ns = b->job->cancel_ns;
                }
    }
    for (pool__batch_t *b = h; b; b = b->next)
        if (b->job->canceled)
            b->job->m_canceled = 1;
    *terminate = p->lk.terminate_req;
    *shutdown = p->lk.shutdown_req;
    *closed = p->lk.closed;
    *active_jobs = p->lk.active_jobs;
    pk_err_t broken = p->lk.broken;
    pthread_mutex_unlock(&p->mu);

    while (h != NULL) {
        pool__batch_t *n = h->next;
        h->next = NULL;
        if (h->job->m_canceled)
            pool__batch_free(h);
        else if (broken != PK_OK)
            fail_batch(t, h, PK_ECRASHED, p->lk.broken_msg);
        else if (p->m.terminating)
            fail_batch(t, h, PK_ECANCELED, "the pool was terminated");
        else
            PK__LIST_APPEND(p->m.q_head, p->m.q_tail, h);
        h = n;
    }
    if (cancel) {
        pool__batch_t **pp = &p->m.q_head;
        p->m.q_tail = NULL;
        while (*pp != NULL) {
            pool__batch_t *b = *pp;
            if (b->job->m_canceled) {
                *pp = b->next;
                pool__batch_free(b);
            } else {
                p->m.q_tail = b;
                pp = &b->next;
            }
        }
    }
}

/* The stall watch (recovery.h, "Stalled workers"): kills a worker that
 * holds batches and shows no progress within its bound, and sets when it
 * wants to look next (p->m.stall_wake_ns, 0 while nothing is held). */
static void stall_watch(pool_t *p, turn_t *t)
{
    uint64_t wake = 0, last = p->m.stall_look_ns;
    for (int s = 0; s < p->cfg.nworkers; s++) {
        pool__mworker_t *w = &p->m.w[s];
        if (w->inflight == NULL || w->kill_reason != POOL_KILL_NONE ||
            w->pid <= 0)
            continue;
        uint64_t tmo = 0;
        for (pool__batch_t *b = w->inflight; b; b = b->next)
            if (b->job->timeout_ns && (tmo == 0 || b->job->timeout_ns < tmo))
                tmo = b->job->timeout_ns;
        uint64_t bound = pool__rec_stall_bound(p->cfg.stall_ns, tmo);
        if (bound == 0)
            continue;
        pool__sb_slot_t *sb = &p->cfg.sb[s];
        uint32_t st = atomic_load_explicit(&sb->state, memory_order_acquire);
        uint32_t item = atomic_load_explicit(&sb->item, memory_order_acquire);
        uint64_t bid = POOL_SB_LOAD(sb->batch);
        uint64_t done = POOL_SB_LOAD(sb->items_done);
        if (st != w->seen_state || item != w->seen_item ||
            bid != w->seen_batch || done != w->seen_done) {
            w->seen_state = st;
            w->seen_item = item;
            w->seen_batch = bid;
            w->seen_done = done;
            w->progress_ns = t->now;
        }
        /* A master that did not run for long (itself stopped, the machine
         * suspended) cannot tell what the workers did meanwhile: a fresh
         * clock for each, rather than a kill for all. */
        if (last != 0 && t->now - last > bound / 2)
            w->progress_ns = t->now;
        pool__rec_stall_t f = {
            .now_ns = t->now,
            .progress_ns = w->progress_ns,
            .bound_ns = bound,
            .holds_work = 1,
            .running_item = st == POOL_SB_BUSY && item != POOL_SB_DECODING,
            .stopped = -1,
        };
        enum pool__rec_stall_verdict v = pool__rec_stall(&f);
        if (v == POOL_REC_LOOK) {
            f.stopped = pool__fs_pid_stopped(w->pid);
            v = pool__rec_stall(&f);
            if (v == POOL_REC_LIVE)
                w->progress_ns = t->now; /* a long item: look again later */
        }
        if (v == POOL_REC_STALLED) {
            w->stall_bound_ns = bound;
            kill_for(p, s, POOL_KILL_STALL, 0, 0);
            continue;
        }
        /* Look again at its deadline, and often enough meanwhile that a
         * change of its slot is seen. */
        uint64_t look =
            bound / 4 < STALL_LOOK_MAX_NS ? bound / 4 + 1 : STALL_LOOK_MAX_NS;
        uint64_t due = w->progress_ns + bound + 1;
        if (due > t->now + look)
            due = t->now + look;
        if (wake == 0 || due < wake)
            wake = due;
    }
    p->m.stall_look_ns = wake != 0 ? t->now : 0;
    p->m.stall_wake_ns = wake;
}

/* Deadlines and cancel grace.  Returns non-zero when a tick is needed. */
static int tick(pool_t *p, turn_t *t)
{
    int need = 0;
    for (int s = 0; s < p->cfg.nworkers; s++) {
        pool__mworker_t *w = &p->m.w[s];
        if (w->inflight == NULL || w->kill_reason != POOL_KILL_NONE ||
            w->pid <= 0)
            continue;
        for (pool__batch_t *b = w->inflight; b; b = b->next) {
            if (b->job->m_canceled) {
                need = 1;
                if (pool__rec_overdue(t->now, b->job->m_cancel_ns,
                                      CANCEL_GRACE_NS)) {
                    kill_for(p, s, POOL_KILL_CANCEL, 0, 0);
                    break;
                }
            }
            if (b->job->timeout_ns)
                need = 1;
        }
        if (w->kill_reason != POOL_KILL_NONE)
            continue;
        pool__sb_slot_t *sb = &p->cfg.sb[s];
        if (atomic_load_explicit(&sb->state, memory_order_acquire) !=
            POOL_SB_BUSY)
            continue;
        uint32_t item = atomic_load_explicit(&sb->item, memory_order_acquire);
        uint64_t start = POOL_SB_LOAD(sb->start_ns);
        uint64_t bid = POOL_SB_LOAD(sb->batch);
        if (item == POOL_SB_DECODING)
            continue;
        for (pool__batch_t *b = w->inflight; b; b = b->next) {
            if (b->id != bid || b->job->timeout_ns == 0 || item >= b->count)
                continue;
            if (pool__rec_overdue(t->now, start, b->job->timeout_ns))
                kill_for(p, s, POOL_KILL_TIMEOUT, bid, item);
            break;
        }
    }
    stall_watch(p, t);
    return need | lane_tick(p, t);
}

static void dispatch(pool_t *p, turn_t *t)
{
    if (p->m.q_head == NULL || p->m.terminating)
        return;
    int progress = 1;
    while (progress && p->m.q_head != NULL) {
        progress = 0;
        for (int s = 0; s < p->cfg.nworkers && p->m.q_head != NULL; s++) {
            pool__mworker_t *w = &p->m.w[s];
            if (w->state != POOL_W_READY || w->unreachable ||
                w->ninflight >= p->cfg.prefetch)
                continue;
            pool__batch_t *b = p->m.q_head;
            p->m.q_head = b->next;
            if (p->m.q_head == NULL)
                p->m.q_tail = NULL;
            b->next = NULL;
            enum send_rc sr = send_task(p, s, b, t->now);
            if (sr == SEND_NOMEM) {
                fail_batch(t, b, PK_ENOMEM, "out of memory sending a batch");
                progress = 1;
                continue;
            }
            if (sr == SEND_UNREACHABLE) {
                w->unreachable = 1;
                blist_t l = {b, b};
                q_prepend(p, &l);
                continue;
            }
            /* Its stall clock starts when it gets work to hold. */
            if (w->ninflight == 0)
                w->progress_ns = t->now;
            /* append to in-flight, oldest first */
            pool__batch_t **pp = &w->inflight;
            while (*pp)
                pp = &(*pp)->next;
            *pp = b;
            w->ninflight++;
            progress = 1;
            if (b->job->timeout_ns)
                t->timed_sent = 1;
        }
    }
}

static void flush(pool_t *p, turn_t *t)
{
    if (t->out_head == NULL)
        return;
    pool__outcome_t *drop = NULL;
    pthread_mutex_lock(&p->mu);
    pool__outcome_t *o = t->out_head;
    while (o != NULL) {
        pool__outcome_t *n = o->next;
        o->next = NULL;
        pool__job_t *j = o->job;
        if (o->slot >= 0 && o->frames != NULL)
            p->lk.stats[o->slot].items_done += o->count;
        if (j->canceled) {
            o->next = drop;
            drop = o;
        } else {
            PK__LIST_APPEND(j->done_head, j->done_tail, o);
        }
        o = n;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    t->out_head = t->out_tail = NULL;
    while (drop != NULL) {
        pool__outcome_t *n = drop->next;
        pool__outcome_free(drop);
        drop = n;
    }
}

/* No batch queued or in flight on a socket (lanes are asked apart). */
static int nothing_queued(pool_t *p)
{
    if (p->m.q_head != NULL)
        return 0;
    for (int s = 0; s < p->cfg.nworkers; s++)
        if (p->m.w[s].inflight != NULL)
            return 0;
    return 1;
}

void *pool__master_main(void *arg)
{
    pool_t *p = arg;
    turn_t t = {0};
    t.now = pool__now_ns();
    size_t cap = 16;
    zmq_msg_t *fr = pk__malloc(cap * sizeof *fr);
    if (fr == NULL)
        cap = 0;
    int chan_ok = 1;
    int killed_all = 0;
    int need_tick = 0;
    for (;;) {
        long tmo = -1;
        if (need_tick || p->m.terminating)
            tmo = TICK_MS;
        if (p->m.stall_wake_ns) {
            uint64_t at = p->m.stall_wake_ns;
            long ms = at > t.now ? (long)((at - t.now) / 1000000) + 1 : 0;
            if (tmo < 0 || ms < tmo)
                tmo = ms;
        }
        for (int s = 0; s < p->cfg.nworkers; s++) {
            uint64_t at = p->m.w[s].respawn_at;
            if (at) {
                long ms = at > t.now ? (long)((at - t.now) / 1000000) + 1 : 0;
                if (tmo < 0 || ms < tmo)
                    tmo = ms;
            }
        }
        zmq_pollitem_t it[3] = {
            {.socket = p->m.router, .events = ZMQ_POLLIN},
            {.fd = p->cfg.efd, .events = ZMQ_POLLIN},
            {.fd = chan_ok ? p->m.chan : -1,
             .events = chan_ok ? ZMQ_POLLIN : 0},
        };
        int r = zmq_poll(it, chan_ok ? 3 : 2, tmo);
        if (r < 0 && errno != EINTR)
            break; /* ETERM: cannot happen before we close it */
        t.now = pool__now_ns();
        if (it[1].revents) {
            uint64_t v;
            while (read(p->cfg.efd, &v, sizeof v) < 0 && errno == EINTR)
                ;
        }
        int terminate, shutdown, closed, active;
        take_submissions(p, &t, &terminate, &shutdown, &closed, &active);
        if (chan_ok)
            on_fs(p, &t, &chan_ok);
        if (cap)
            on_router(p, &t, &fr, &cap);

        if (terminate && !p->m.terminating) {
            p->m.terminating = 1;
            p->m.terminate_ns = t.now;
            fail_all(p, &t, PK_ECANCELED, "the pool was terminated");
            for (int s = 0; s < p->cfg.nworkers; s++) {
                p->m.w[s].respawn_at = 0;
                if (p->m.w[s].state != POOL_W_DEAD)
                    kill_worker(p, s, SIGTERM);
            }
        }
        if (p->m.terminating && !killed_all &&
            t.now - p->m.terminate_ns > TERM_GRACE_NS) {
            killed_all = 1;
            for (int s = 0; s < p->cfg.nworkers; s++)
                if (p->m.w[s].state != POOL_W_DEAD)
                    kill_worker(p, s, SIGKILL);
        }
        for (int s = 0; s < p->cfg.nworkers; s++) {
            pool__mworker_t *w = &p->m.w[s];
            if (w->respawn_at && w->respawn_at <= t.now &&
                w->state == POOL_W_DEAD) {
                if (p->m.terminating || p->m.stop_sent || p->lk.broken)
                    w->respawn_at = 0;
                else
                    spawn(p, s, t.now);
            }
        }
        need_tick = tick(p, &t);
        t.timed_sent = 0;
        dispatch(p, &t);
        need_tick |= t.timed_sent; /* its deadline needs the tick too */
        flush(p, &t);

        /* A call still running on a fast lane finishes without telling
         * the master (its caller collects it): after close, look again on
         * the tick until the lanes are done, or STOP would never go out. */
        int stop_due = closed && !p->m.stop_sent && !p->m.terminating &&
                       active == 0 && nothing_queued(p);
        if (stop_due && lane_busy(p)) {
            need_tick = 1;
            stop_due = 0;
        }
        if (stop_due) {
            p->m.stop_sent = 1;
            for (int s = 0; s < p->cfg.nworkers; s++) {
                pool__mworker_t *w = &p->m.w[s];
                w->respawn_at = 0;
                if (w->state == POOL_W_READY) {
                    w->state = POOL_W_DRAINING;
                    send_ctl(p, s, POOL_WIRE_STOP);
                }
            }
        }
        pthread_mutex_lock(&p->mu);
        int nlive = p->lk.nlive;
        if ((p->m.stop_sent || p->m.terminating || p->lk.broken) &&
            nlive == 0 && !p->lk.exited) {
            p->lk.exited = 1;
            pthread_cond_broadcast(&p->cv);
        }
        pthread_mutex_unlock(&p->mu);
        if (shutdown && nlive == 0)
            break;
    }
    /* Anything still queued belongs to jobs nobody waits for any more. */
    fail_all(p, &t, PK_ECANCELED, "the pool was destroyed");
    lane_drop_all(p, &t);
    flush(p, &t);
    pk__free(fr);
    return NULL;
}
