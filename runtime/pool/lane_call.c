/*
 * lane_call.c - the caller's side of the fast lane (ipc/lane.h): posting a
 * single call on an idle worker's lane, and waiting for, validating and
 * consuming its reply.  The mailbox itself is ipc/lane.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "ipc/lane.h"
#include "pool/internal.h"

/* ---- the caller's side --------------------------------------------------- */

int pool__lane_post(pool_t *p, pool__batch_t *b, pool__lane_ticket_t *t)
{
    t->slot = -1;
    pool__job_t *j = b->job;
    if (p->cfg.lanes == NULL || b->nbufs != 0 || b->count != 1 ||
        POOL_WIRE_HDR_SIZE + 24 + j->call_len + b->items_len > POOL_LANE_REQ)
        return 0;
    int n = p->cfg.nworkers;
    int start = atomic_load_explicit(&p->lane_hint, memory_order_relaxed);
    int slot = -1;
    uint32_t claimed = 0;
    for (int i = 0; i < n && slot < 0; i++) {
        int s = (start + i) % n;
        pool__lane_t *l = &p->cfg.lanes[s];
        uint32_t v = atomic_load_explicit(&l->state, memory_order_relaxed);
        if (POOL_LANE_ST(v) != POOL_LANE_ARMED)
            continue;
        uint32_t c = POOL_LANE_NEXT_TAG(v) | POOL_LANE_CLAIMED;
        if (atomic_compare_exchange_strong_explicit(
                &l->state, &v, c, memory_order_acquire, memory_order_relaxed)) {
            slot = s;
            claimed = c;
        }
    }
    if (slot < 0)
        return 0;
    atomic_store_explicit(&p->lane_hint, slot, memory_order_relaxed);

    /* The request area is ours until POSTED. */
    pool__lane_t *l = &p->cfg.lanes[slot];
    b->id = POOL_LANE_ID_BIT | atomic_fetch_add(&p->lane_next_id, 1);
    pool__wire_hdr_t h = {.kind = POOL_WIRE_TASK,
                          .flags = b->flags,
                          .batch = b->id,
                          .count = 1,
                          .aux = j->timeout_ns};
    pool__wire_hdr_encode(&h, l->req);
    size_t pos = POOL_WIRE_HDR_SIZE;
    pool__lane_put(l->req, POOL_LANE_REQ, &pos, j->call, j->call_len);
    pool__lane_put(l->req, POOL_LANE_REQ, &pos, b->items, b->items_len);
    l->req_len = (uint32_t)pos;

    pthread_mutex_lock(&p->mu);
    p->lk.lane_recs[slot].b = b;
    pthread_mutex_unlock(&p->mu);
    uint32_t want = claimed;
    uint32_t posted = POOL_LANE_TAG(claimed) | POOL_LANE_POSTED;
    if (!atomic_compare_exchange_strong_explicit(&l->state, &want, posted,
                                                 memory_order_release,
                                                 memory_order_relaxed)) {
        /* The worker died under us: the master made the lane ORPHAN, so
         * nobody else has used it.  If the master took the batch it
         * requeued it; otherwise it is ours.  Then the lane is free. */
        pthread_mutex_lock(&p->mu);
        int ours = p->lk.lane_recs[slot].b == b;
        if (ours)
            p->lk.lane_recs[slot].b = NULL;
        pthread_mutex_unlock(&p->mu);
        uint32_t orphan = POOL_LANE_TAG(claimed) | POOL_LANE_ORPHAN;
        atomic_compare_exchange_strong(&l->state, &orphan,
                                       POOL_LANE_TAG(claimed) | POOL_LANE_FREE);
        if (ours) {
            b->id = 0;
            return 0;
        }
        return 1; /* t->slot stays -1: wait on the job */
    }
    t->slot = slot;
    t->tag = POOL_LANE_TAG(claimed);
    t->id = b->id;
    if (j->timeout_ns)
        pool__master_wake(p); /* its tick enforces the deadline */
    return 1;
}

/* Builds the outcome of lane `slot`'s reply to batch b (DONE, ours). */
static pool__outcome_t *lane_outcome(pool_t *p, int slot, pool__batch_t *b)
{
    pool__lane_t *l = &p->cfg.lanes[slot];
    size_t len = atomic_load_explicit(&l->rep_len, memory_order_relaxed);
    pk_error_t e;
    pk_error_clear(&e);
    pool__wire_hdr_t h;
    zmq_msg_t *fr = NULL;
    size_t nf = 0, nmade = 0;
    pk_err_t rc = PK_OK;
    if (len > POOL_LANE_REP || len < POOL_WIRE_HDR_SIZE)
        rc = pk__err(&e, PK_EPROTO, "a lane reply of %zu bytes", len);
    else if ((rc = pool__wire_hdr_parse(l->rep, POOL_WIRE_HDR_SIZE, &h, &e)) !=
             PK_OK)
        ;
    else if (h.kind != POOL_WIRE_RESULT || h.batch != b->id)
        rc = pk__err(&e, PK_EPROTO, "the lane holds a %s for batch %llu",
                     pool__wire_kind_name(h.kind), (unsigned long long)h.batch);
    else if (h.flags & POOL_WIRE_F_SHM)
        rc = pk__err(&e, PK_EPROTO, "arena buffers in a lane reply");
    else if ((fr = pk__malloc((1 + (size_t)h.nbufs) * sizeof *fr)) == NULL)
        rc = pk__err(&e, PK_ENOMEM, "out of memory");
    if (rc == PK_OK) {
        nf = 2 + (size_t)h.nbufs;
        size_t pos = POOL_WIRE_HDR_SIZE;
        for (; nmade < nf - 1; nmade++) {
            const uint8_t *d;
            size_t n;
            if (pool__lane_get(l->rep, len, &pos, &d, &n) != 0) {
                rc = pk__err(&e, PK_EPROTO, "lane reply frame %zu is cut short",
                             nmade + 1);
                break;
            }
            if (zmq_msg_init_size(&fr[nmade], n) != 0) {
                rc = pk__err(&e, PK_ENOMEM, "out of memory");
                break;
            }
            memcpy(zmq_msg_data(&fr[nmade]), d, n);
        }
        if (rc == PK_OK && pos != len)
            rc = pk__err(&e, PK_EPROTO, "%zu stray bytes after a lane reply",
                         len - pos);
        if (rc == PK_OK)
            rc = pool__result_check(b, &h, nf, zmq_msg_data(&fr[0]),
                                    zmq_msg_size(&fr[0]), &e);
    }
    /* The bytes are ours now: the worker may arm again. */
    atomic_store_explicit(
        &l->state, POOL_LANE_TAG(atomic_load(&l->state)) | POOL_LANE_FREE,
        memory_order_release);
    pool__outcome_t *o = NULL;
    if (rc == PK_OK && (o = pk__calloc(1, sizeof *o)) != NULL) {
        o->job = b->job;
        pool__job_ref(b->job);
        o->slot = slot;
        o->first = b->first;
        o->count = b->count;
        o->flags = h.flags;
        o->nbufs = h.nbufs;
        o->frames = fr;
        return o;
    }
    for (size_t i = 0; i < nmade; i++)
        zmq_msg_close(&fr[i]);
    pk__free(fr);
    char msg[300];
    if (rc == PK_OK)
        snprintf(msg, sizeof msg, "out of memory receiving a result");
    else
        snprintf(msg, sizeof msg, "malformed result from worker %d: %s", slot,
                 e.msg);
    return pool__outcome_synth(b->job, b->first, b->count,
                               rc == PK_OK ? PK_ENOMEM : rc, msg);
}

pk_err_t pool__lane_wait(pool_t *p, pool__lane_ticket_t *t, uint64_t deadline,
                         const volatile sig_atomic_t *intr,
                         pool__outcome_t **out)
{
    *out = NULL;
    if (t->slot < 0)
        return PK_OK;
    pool__lane_t *l = &p->cfg.lanes[t->slot];
    uint64_t now = pool__now_ns();
    uint64_t spin_end = now + p->cfg.spin_ns;
    unsigned k = 0;
    for (;;) {
        uint32_t v = atomic_load_explicit(&l->state, memory_order_acquire);
        uint32_t st = POOL_LANE_ST(v);
        if (POOL_LANE_TAG(v) != t->tag ||
            (st != POOL_LANE_POSTED && st != POOL_LANE_RUNNING &&
             st != POOL_LANE_DONE))
            break; /* WIRE, or the master took it: its outcome is the job's */
        if (st == POOL_LANE_DONE) {
            pthread_mutex_lock(&p->mu);
            pool__batch_t *b = p->lk.lane_recs[t->slot].b;
            int ours = b != NULL && b->id == t->id;
            if (ours) {
                p->lk.lane_recs[t->slot].b = NULL;
                p->lk.stats[t->slot].items_done += b->count;
                p->lk.stats[t->slot].lane_items += b->count;
            }
            pthread_mutex_unlock(&p->mu);
            if (ours) {
                *out = lane_outcome(p, t->slot, b);
                pool__batch_free(b);
            }
            break;
        }
        if ((++k & 63) == 0)
            now = pool__now_ns();
        if (deadline && now >= deadline)
            return PK_ETIMEDOUT;
        if (now < spin_end) {
            pool__cpu_relax();
            continue;
        }
        if (*intr)
            return PK_EINTR;
        /* Sleep in slices so a signal flag or the deadline is seen. */
        uint64_t slice = 20000000u;
        if (deadline && deadline - now < slice)
            slice = deadline - now;
        atomic_fetch_add(&l->waiting, 1);
        if (atomic_load(&l->state) == v)
            pool__lane_sleep(l, v, slice);
        atomic_fetch_sub(&l->waiting, 1);
        now = pool__now_ns();
    }
    t->slot = -1;
    return PK_OK;
}
