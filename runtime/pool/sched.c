/*
 * sched.c - the scheduler of `picklepool serve` (see sched.h for the
 * rules).  Pure bookkeeping: lists of clients, hosts and batches.
 */
#include "pool/sched.h"

#include <string.h>

#include "core/common.h"

struct pool__sclient {
    struct pool__sclient *prev, *next;
    void *tag;
    pool__sbatch_t *qhead, *qtail; /* queued, ordered by seq */
    size_t nqueued, ninflight;
};

struct pool__shost {
    struct pool__shost *prev, *next;
    void *tag;
    uint32_t capacity, ninflight;
    pool__sbatch_t *inflight; /* dispatch order */
};

struct pool__sched {
    pool__sched_drop_fn drop;
    void *arg;
    pool__sclient_t *clients, *ccur; /* list, and the next to serve */
    pool__shost_t *hosts, *hcur;
    size_t nclients, nhosts;
    uint64_t next_id, next_seq;
    pool__sched_stats_t st;
};

pk_err_t pool__sched_new(pool__sched_drop_fn drop, void *arg,
                         pool__sched_t **out)
{
    pool__sched_t *s = pk__calloc(1, sizeof *s);
    *out = s;
    if (s == NULL)
        return PK_ENOMEM;
    s->drop = drop;
    s->arg = arg;
    return PK_OK;
}

static void drop(pool__sched_t *s, pool__sbatch_t *b)
{
    b->next = NULL;
    s->st.dropped++;
    if (s->drop != NULL)
        s->drop(s->arg, b);
}

void pool__sched_free(pool__sched_t **sp)
{
    if (sp == NULL || *sp == NULL)
        return;
    pool__sched_t *s = *sp;
    while (s->hosts != NULL) {
        pool__shost_t *h = s->hosts;
        /* everything in flight is dropped, not requeued */
        for (pool__sbatch_t *b = h->inflight; b != NULL;) {
            pool__sbatch_t *n = b->next;
            if (b->client != NULL)
                b->client->ninflight--;
            drop(s, b);
            b = n;
        }
        h->inflight = NULL;
        s->hosts = h->next;
        pk__free(h);
    }
    while (s->clients != NULL) {
        pool__sclient_t *c = s->clients;
        for (pool__sbatch_t *b = c->qhead; b != NULL;) {
            pool__sbatch_t *n = b->next;
            drop(s, b);
            b = n;
        }
        s->clients = c->next;
        pk__free(c);
    }
    pk__free(s);
    *sp = NULL;
}

/* ---- queues --------------------------------------------------------------- */

/* Puts b into c's queue at its place by seq (requeued batches go ahead of
 * later submissions). */
static void queue_insert(pool__sclient_t *c, pool__sbatch_t *b)
{
    pool__sbatch_t **pp = &c->qhead;
    while (*pp != NULL && (*pp)->seq < b->seq)
        pp = &(*pp)->next;
    b->next = *pp;
    *pp = b;
    if (b->next == NULL)
        c->qtail = b;
    c->nqueued++;
}

static void requeue(pool__sbatch_t *b)
{
    pool__sclient_t *c = b->client;
    b->id = 0;
    b->host = NULL;
    c->ninflight--;
    queue_insert(c, b);
}

/* ---- clients --------------------------------------------------------------- */

pool__sclient_t *pool__sched_client_add(pool__sched_t *s, void *tag)
{
    pool__sclient_t *c = pk__calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->tag = tag;
    c->next = s->clients;
    if (s->clients != NULL)
        s->clients->prev = c;
    s->clients = c;
    s->nclients++;
    return c;
}

size_t pool__sched_client_remove(pool__sched_t *s, pool__sclient_t *c)
{
    size_t n = 0;
    for (pool__sbatch_t *b = c->qhead; b != NULL;) {
        pool__sbatch_t *next = b->next;
        drop(s, b);
        n++;
        b = next;
    }
    for (pool__shost_t *h = s->hosts; h != NULL && c->ninflight > 0;
         h = h->next)
        for (pool__sbatch_t *b = h->inflight; b != NULL; b = b->next)
            if (b->client == c) {
                b->client = NULL; /* an orphan: it keeps its host's place */
                c->ninflight--;
                n++;
            }
    if (s->ccur == c)
        s->ccur = c->next;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nclients--;
    pk__free(c);
    return n;
}

/* ---- hosts ----------------------------------------------------------------- */

pool__shost_t *pool__sched_host_add(pool__sched_t *s, uint32_t capacity,
                                    void *tag)
{
    pool__shost_t *h = pk__calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->tag = tag;
    h->capacity = capacity ? capacity : 1;
    h->next = s->hosts;
    if (s->hosts != NULL)
        s->hosts->prev = h;
    s->hosts = h;
    s->nhosts++;
    return h;
}

size_t pool__sched_host_remove(pool__sched_t *s, pool__shost_t *h)
{
    size_t n = 0;
    for (pool__sbatch_t *b = h->inflight; b != NULL;) {
        pool__sbatch_t *next = b->next;
        if (b->client == NULL) {
            drop(s, b);
        } else {
            requeue(b);
            s->st.requeued++;
            n++;
        }
        b = next;
    }
    if (s->hcur == h)
        s->hcur = h->next;
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        s->hosts = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    s->nhosts--;
    pk__free(h);
    return n;
}

/* ---- dispatch -------------------------------------------------------------- */

void pool__sched_submit(pool__sched_t *s, pool__sclient_t *c, pool__sbatch_t *b)
{
    b->next = NULL;
    b->id = 0;
    b->seq = ++s->next_seq;
    b->client = c;
    b->host = NULL;
    b->dispatches = 0;
    if (c->qtail != NULL)
        c->qtail->next = b;
    else
        c->qhead = b;
    c->qtail = b;
    c->nqueued++;
    s->st.submitted++;
}

int pool__sched_next(pool__sched_t *s, pool__shost_t **hp, pool__sbatch_t **bp)
{
    pool__sclient_t *c = s->ccur != NULL ? s->ccur : s->clients;
    size_t i;
    for (i = 0; i < s->nclients && c->qhead == NULL; i++)
        c = c->next != NULL ? c->next : s->clients;
    if (i == s->nclients)
        return 0;
    pool__shost_t *h = s->hcur != NULL ? s->hcur : s->hosts;
    for (i = 0; i < s->nhosts && h->ninflight >= h->capacity; i++)
        h = h->next != NULL ? h->next : s->hosts;
    if (i == s->nhosts)
        return 0;

    pool__sbatch_t *b = c->qhead;
    c->qhead = b->next;
    if (c->qhead == NULL)
        c->qtail = NULL;
    c->nqueued--;
    c->ninflight++;
    b->next = NULL;
    b->id = ++s->next_id;
    b->host = h;
    b->dispatches++;
    pool__sbatch_t **pp = &h->inflight;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = b;
    h->ninflight++;
    s->st.dispatched++;
    /* the next turn starts after the ones served now */
    s->ccur = c->next;
    s->hcur = h->next;
    *hp = h;
    *bp = b;
    return 1;
}

/* Unlinks dispatch `id` from h's in-flight list; NULL when not there. */
static pool__sbatch_t *take(pool__shost_t *h, uint64_t id)
{
    for (pool__sbatch_t **pp = &h->inflight; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            pool__sbatch_t *b = *pp;
            *pp = b->next;
            b->next = NULL;
            h->ninflight--;
            return b;
        }
    return NULL;
}

void pool__sched_undo(pool__sched_t *s, pool__sbatch_t *b)
{
    if (b->host == NULL || take(b->host, b->id) != b)
        return;
    b->dispatches--;
    s->st.dispatched--;
    if (b->client == NULL) {
        drop(s, b);
        return;
    }
    requeue(b);
}

enum pool__sched_match pool__sched_result(pool__sched_t *s, pool__shost_t *h,
                                          uint64_t id, pool__sbatch_t **bp)
{
    *bp = NULL;
    pool__sbatch_t *b = id != 0 ? take(h, id) : NULL;
    if (b == NULL) {
        s->st.unknown++;
        return POOL_SCHED_UNKNOWN;
    }
    b->host = NULL;
    *bp = b;
    if (b->client == NULL) {
        s->st.orphaned++;
        return POOL_SCHED_ORPHAN;
    }
    b->client->ninflight--;
    s->st.completed++;
    return POOL_SCHED_DONE;
}

/* ---- questions ------------------------------------------------------------- */

pool__sbatch_t *pool__sched_queued(const pool__sclient_t *c, uint64_t cb)
{
    for (pool__sbatch_t *b = c->qhead; b != NULL; b = b->next)
        if (b->client_batch == cb)
            return b;
    return NULL;
}

size_t pool__sclient_queued(const pool__sclient_t *c)
{
    return c->nqueued;
}

size_t pool__sclient_inflight(const pool__sclient_t *c)
{
    return c->ninflight;
}

uint32_t pool__shost_inflight(const pool__shost_t *h)
{
    return h->ninflight;
}

uint32_t pool__shost_capacity(const pool__shost_t *h)
{
    return h->capacity;
}

void *pool__sclient_tag(const pool__sclient_t *c)
{
    return c->tag;
}

void *pool__shost_tag(const pool__shost_t *h)
{
    return h->tag;
}

void pool__sched_stats(const pool__sched_t *s, pool__sched_stats_t *out)
{
    *out = s->st;
}

size_t pool__sched_nclients(const pool__sched_t *s)
{
    return s->nclients;
}

size_t pool__sched_nhosts(const pool__sched_t *s)
{
    return s->nhosts;
}
