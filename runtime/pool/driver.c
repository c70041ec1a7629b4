/*
 * driver.c - the map driver (see driver.h): pickling items into batches,
 * the window of items in flight, handing batches to the master, and
 * collecting outcomes and interrupts on the caller's thread.
 */
#define _GNU_SOURCE
#include "pool/driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "ipc/wire.h"
#include "picklepool/pickle.h"
#include "pool/wait.h"
#include "proc/registry_int.h"

#define TARGET_BATCH_NS 3000000ull /* aim: ~3 ms of work per batch */
#define FIRST_CHUNK 4
/* A remote pool's batch crosses four hops and is split again on its host,
 * so its first batches, made before any item time is known, are bigger. */
#define REMOTE_FIRST_CHUNK 256
#define BATCH_BYTES ((size_t)8 << 20) /* big items: about this much a batch */
#define MAX_CHUNK (1u << 20)
#define OOB_MIN 1024 /* smaller buffers are pickled in band */

/* ---- encoding batches --------------------------------------------------- */

typedef struct enc {
    pk_buf_t buf;
    pool__oob_list_t bufs;
    int oob;          /* take large buffers out of band */
    pool__shm_t *shm; /* copy those of shm->threshold bytes there, or NULL */
    int heap;         /* the workers map the shared heap */
    size_t pending;   /* bytes of task blocks this encoder holds */
} enc_t;

/* How long a map waits for room in a full arena before a big buffer takes
 * the socket instead (only while blocks of other batches are in use). */
#define ARENA_WAIT_NS 5000000000ull

/* Takes a buffer of at least min bytes out of band (1): a caller's array in
 * the shared heap by reference, others copied into the arena when big
 * enough (waiting for room while other batches hold it); else keeps it in
 * band (0). */
static int enc_buf(enc_t *e, const void *data, size_t len, size_t min)
{
    if (!pool__oob_take(&e->bufs, data, len, min))
        return 0;
    uint64_t hoff =
        e->heap && len > 0 ? pool__heap_find(data, len) : UINT64_MAX;
    if (hoff != UINT64_MAX) {
        /* No copy: the workers read the caller's memory in place. */
        e->bufs.v[e->bufs.n - 1].shm = POOL_WIRE_SHM_HEAP + hoff;
    } else if (e->shm != NULL && len >= e->shm->threshold) {
        /* One copy into the arena now, none through the socket later. */
        uint64_t off =
            pool__shm_task_alloc_wait(e->shm, len, e->pending, ARENA_WAIT_NS);
        if (off != UINT64_MAX) {
            e->pending += pool__shm_block_bytes(len);
            pool__oob_t *o = &e->bufs.v[e->bufs.n - 1];
            pool__shm_prefault(e->shm->base + off, len, 1);
            memcpy(e->shm->base + off, data, len);
            atomic_fetch_add_explicit(&e->shm->copied_in, len,
                                      memory_order_relaxed);
            o->data = e->shm->base + off;
            o->shm = off;
        }
    }
    return 1;
}

static int enc_cb(void *ctx, const void *data, size_t len, int readonly)
{
    PK_UNUSED(readonly);
    enc_t *e = ctx;
    return e->oob ? enc_buf(e, data, len, OOB_MIN) : 0;
}

/* Forgets buffers [from, n), freeing their arena blocks. */
static void enc_drop_bufs(enc_t *e, size_t from)
{
    for (size_t i = from; i < e->bufs.n; i++)
        if (e->bufs.v[i].shm < POOL_WIRE_SHM_HEAP) { /* a task block */
            pool__shm_task_free(e->shm, e->bufs.v[i].shm, e->bufs.v[i].len);
            e->pending -= pool__shm_block_bytes(e->bufs.v[i].len);
        }
    e->bufs.n = from;
}

/* Makes room for `extra` more bytes of records. */
static int enc_reserve(enc_t *e, size_t extra)
{
    return pk__grow_bytes(&e->buf.data, &e->buf.cap, e->buf.len, extra, 1024);
}

/* Appends a record of an item given as bytes and buffers (raw sources):
 * the bytes are copied, every buffer goes out of band (into the arena when
 * big, else borrowed from the caller: the drive then borrows). */
static pk_err_t enc_raw(enc_t *e, const pool_raw_item_t *it, pk_error_t *err)
{
    size_t nb = e->bufs.n;
    if (it->len > UINT32_MAX)
        return pk__err(err, PK_ELIMIT, "an item of %zu bytes", it->len);
    if ((it->len > 0 && it->data == NULL) ||
        (it->nbufs > 0 && it->bufs == NULL))
        return pk__err(err, PK_EINVAL, "item bytes or buffers are NULL");
    if (enc_reserve(e, POOL_WIRE_REC_SIZE + it->len) != 0)
        return pk__err(err, PK_ENOMEM, "out of memory");
    for (size_t i = 0; i < it->nbufs; i++)
        if (!enc_buf(e, it->bufs[i].data, it->bufs[i].len, 0)) {
            enc_drop_bufs(e, nb);
            return pk__err(err, PK_ENOMEM, "out of memory");
        }
    pool__wire_rec_encode(e->buf.data + e->buf.len, (uint32_t)it->len,
                          (uint32_t)(e->bufs.n - nb), 0);
    if (it->len)
        memcpy(e->buf.data + e->buf.len + POOL_WIRE_REC_SIZE, it->data,
               it->len);
    e->buf.len += POOL_WIRE_REC_SIZE + it->len;
    return PK_OK;
}

static pk_err_t enc_item(enc_t *e, const pk_value_t *v, pk_error_t *err)
{
    size_t start = e->buf.len, nb = e->bufs.n;
    if (enc_reserve(e, POOL_WIRE_REC_SIZE) != 0)
        return pk__err(err, PK_ENOMEM, "out of memory");
    e->buf.len += POOL_WIRE_REC_SIZE;
    pk_dump_opts_t o;
    pk_dump_opts_init(&o);
    o.buffer_cb = enc_cb;
    o.buffer_ctx = e;
    pk_err_t rc = pk_dumps(v, &o, &e->buf, err);
    if (rc != PK_OK) {
        e->buf.len = start;
        enc_drop_bufs(e, nb);
        return rc;
    }
    size_t len = e->buf.len - start - POOL_WIRE_REC_SIZE;
    if (len > UINT32_MAX) {
        e->buf.len = start;
        enc_drop_bufs(e, nb);
        return pk__err(err, PK_ELIMIT, "an item pickles to %zu bytes", len);
    }
    pool__wire_rec_encode(e->buf.data + start, (uint32_t)len,
                          (uint32_t)(e->bufs.n - nb), 0);
    return PK_OK;
}

static void enc_free(enc_t *e)
{
    enc_drop_bufs(e, 0);
    pk_buf_free(&e->buf);
    pk__free(e->bufs.v);
}

/* Turns the encoder's output into a batch (the blob takes the bytes). */
static pool__batch_t *enc_batch(pool__job_t *j, enc_t *e, pk_doc_t **doc,
                                size_t first, uint32_t count)
{
    pool__batch_t *b = pk__calloc(1, sizeof *b);
    pool__blob_t *blob = b ? pool__blob_new(j) : NULL;
    if (blob == NULL) {
        pk__free(b);
        return NULL;
    }
    blob->bytes = e->buf.data;
    blob->bufs = e->bufs.v;
    blob->nbufs = e->bufs.n;
    for (size_t i = 0; i < e->bufs.n && blob->shm == NULL; i++)
        if (e->bufs.v[i].shm < POOL_WIRE_SHM_HEAP) {
            blob->shm = e->shm;
            pool__shm_ref(e->shm);
        }
    if (doc != NULL) {
        blob->doc = *doc;
        *doc = NULL;
    }
    b->job = j;
    pool__job_ref(j);
    b->blob = blob;
    b->first = first;
    b->count = count;
    b->flags = j->flags;
    b->items = e->buf.data;
    b->items_len = e->buf.len;
    b->bufs = e->bufs.v;
    b->nbufs = (uint32_t)e->bufs.n;
    memset(e, 0, sizeof *e);
    return b;
}

/* The whole call fails, once, when the pool's workers cannot have the
 * function: not registered in this process (which loaded every plugin of
 * the pool), or registered after the pool forked its workers.  A remote
 * pool's functions are the hosts' business. */
static pk_err_t check_function(const pool_t *p, const char *module,
                               const char *func, pk_error_t *err)
{
    uint64_t gen;
    const char **paths;
    char loaded[200];
    size_t n, len = 0;

    if (p->cfg.remote)
        return PK_OK; /* the hosts have the functions, and say when not */
    if (pool__registry_lookup(module, func, NULL, &gen) != NULL) {
        if (gen <= p->cfg.reg_gen)
            return PK_OK;
        return pk__err(err, PK_ENOFUNC,
                       "%s.%s was registered after this pool was created: "
                       "its workers do not have it (register it before "
                       "pool_create, or create a new pool)",
                       module, func);
    }
    n = pool__registry_plugins(&paths);
    loaded[0] = '\0';
    for (size_t i = 0; i < n && len < sizeof loaded; i++)
        len += (size_t)snprintf(loaded + len, sizeof loaded - len, "%s%s",
                                i ? ", " : "", paths[i]);
    return pk__err(err, PK_ENOFUNC,
                   "%s.%s is not registered, and no loaded plugin "
                   "registers it (%s%s)",
                   module, func, n ? "plugins loaded: " : "no plugin loaded",
                   loaded);
}

static pk_err_t make_call(const char *module, const char *func,
                          const pk_value_t *kwargs, const pool_raw_item_t *raw,
                          pool__job_t *j, pk_error_t *err)
{
    if (raw != NULL) { /* a call frame the caller made (raw maps) */
        j->call = pk__malloc(raw->len ? raw->len : 1);
        if (j->call == NULL)
            return pk__err(err, PK_ENOMEM, "out of memory");
        if (raw->len)
            memcpy(j->call, raw->data, raw->len);
        j->call_len = raw->len;
        return PK_OK;
    }
    if (module == NULL || func == NULL || module[0] == '\0' || func[0] == '\0')
        return pk__err(err, PK_EINVAL, "module and func must be named");
    if (kwargs != NULL && kwargs->type != PK_DICT)
        return pk__err(err, PK_EINVAL, "kwargs must be a dict, not %s",
                       pk_type_name((pk_type_t)kwargs->type));
    pk_doc_t *d = NULL;
    if (pk_doc_new(&d) != PK_OK)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pk_buf_t b = {0};
    pk_value_t *g = pk_global(d, module, func);
    pk_err_t rc = g ? pk_dumps(g, NULL, &b, err)
                    : pk__err(err, PK_ENOMEM, "out of memory");
    if (rc == PK_OK && kwargs != NULL && pk_len(kwargs) > 0)
        rc = pk_dumps(kwargs, NULL, &b, err);
    pk_doc_free(&d);
    if (rc != PK_OK) {
        pk_buf_free(&b);
        return rc;
    }
    j->call = b.data;
    j->call_len = b.len;
    return PK_OK;
}

/* ---- jobs and the caller's driver --------------------------------------- */

pk_err_t pool__drive_start(pool__drive_t *d, pool_t *p,
                           enum pool__job_kind kind, uint16_t flags,
                           const pool__src_ops_t *src, const char *module,
                           const char *func, const pk_value_t *kwargs,
                           const pool_raw_item_t *raw_call,
                           const pool_call_opts_t *copts, size_t total,
                           pk_error_t *err)
{
    pool__job_t *j = pk__calloc(1, sizeof *j);
    if (j == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    static _Atomic uint64_t next_call_id;
    atomic_init(&j->refs, 1);
    atomic_init(&j->item_ns, 0);
    j->call_id = atomic_fetch_add(&next_call_id, 1) + 1;
    j->p = p;
    j->kind = kind;
    j->flags = flags;
    j->total = total;
    double to = p->cfg.timeout;
    j->chunksize = p->cfg.chunksize;
    if (copts != NULL && (copts->size < offsetof(pool_call_opts_t, timeout) +
                                            sizeof copts->timeout ||
                          copts->size > sizeof *copts)) {
        pk__free(j);
        return pk__err(err, PK_EINVAL,
                       "pool_call_opts_t.size is %zu, not %zu: fill the "
                       "options with pool_call_opts_init()",
                       copts->size, sizeof *copts);
    }
    if (copts != NULL && copts->timeout > 1e9) {
        pk__free(j);
        return pk__err(err, PK_EINVAL,
                       "timeout must be from 0 to 1e9 seconds, not %g",
                       copts->timeout);
    }
    if (copts != NULL) {
        if (copts->chunksize)
            j->chunksize = copts->chunksize;
        if (copts->timeout > 0)
            to = copts->timeout;
        else if (copts->timeout < 0)
            to = 0;
    }
    if (j->chunksize > POOL_WIRE_MAX_COUNT)
        j->chunksize = POOL_WIRE_MAX_COUNT;
    j->timeout_ns = to > 0 ? (uint64_t)(to * 1e9) : 0;
    if (j->timeout_ns == 0 && to > 0)
        j->timeout_ns = 1;
    pk_err_t rc = raw_call == NULL && module != NULL && func != NULL
                      ? check_function(p, module, func, err)
                      : PK_OK;
    if (rc == PK_OK)
        rc = make_call(module, func, kwargs, raw_call, j, err);
    if (rc != PK_OK) {
        pk__free(j);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    if (p->lk.closed)
        rc = pk__err(err, PK_ECLOSED, "the pool is closed");
    else if (p->lk.broken != PK_OK)
        rc = pk__err(err, p->lk.broken, "%s", p->lk.broken_msg);
    else {
        j->active = 1;
        p->lk.active_jobs++;
        p->lk.open_drives++;
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != PK_OK) {
        pool__job_unref(j);
        return rc;
    }
    memset(d, 0, sizeof *d);
    d->p = p;
    d->j = j;
    d->src = src;
    d->n = total;
    d->eof = total == 0;
    d->lane.slot = -1;
    return PK_OK;
}

static size_t pick_chunk(pool__drive_t *d)
{
    pool__job_t *j = d->j;
    if (d->src->flags & POOL_SRC_SINGLE)
        return 1;
    size_t c = j->chunksize;
    if (c == 0) {
        uint64_t ns = atomic_load(&j->item_ns);
        c = ns == 0 ? (d->p->cfg.remote ? REMOTE_FIRST_CHUNK : FIRST_CHUNK)
                    : (size_t)(TARGET_BATCH_NS / ns);
        if (c > MAX_CHUNK)
            c = MAX_CHUNK;
        if (j->total != SIZE_MAX) {
            size_t per = 4 * (size_t)d->p->cfg.nworkers;
            size_t cap = (j->total + per - 1) / per;
            if (c > cap)
                c = cap;
        }
        /* Big items (arrays): a few MiB a batch, so the window (and the
         * arena pages it touches) stays small even before item times are
         * known. */
        size_t ib = d->src->item_bytes != NULL && d->pos < d->n
                        ? d->src->item_bytes(d)
                        : d->item_bytes;
        if (ib > 0 && c > BATCH_BYTES / ib)
            c = BATCH_BYTES / ib;
        if (c < 1)
            c = 1;
    }
    return c;
}

static void local_outcome(pool__drive_t *d, size_t first, size_t count,
                          pk_err_t status, const char *msg)
{
    while (count > 0) {
        uint32_t c = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        pool__outcome_t *o = pool__outcome_synth(d->j, first, c, status, msg);
        if (o == NULL)
            return;
        o->next = d->local;
        d->local = o;
        d->submitted += c;
        first += c;
        count -= c;
    }
}

/* Encodes one batch of up to `chunk` items from the input.  Returns the
 * batch, or NULL at the end of input, on an input error (d->input_rc) or when
 * an item could not be pickled (it gets a local outcome). */
static pool__batch_t *make_batch(pool__drive_t *d, size_t chunk)
{
    pool__job_t *j = d->j;
    size_t first = d->pos;
    if (d->src->raw_batch != NULL) {
        pool__batch_t *b = d->src->raw_batch(d, chunk);
        if (b == NULL) {
            d->input_rc = pk__err(&d->input_err, PK_ENOMEM, "out of memory");
            d->eof = 1;
        } else if (d->pos == d->n) {
            d->eof = 1;
        }
        return b;
    }
    enc_t e;
    memset(&e, 0, sizeof e);
    e.oob = !(d->src->flags & POOL_SRC_SINGLE);
    e.shm = d->p->cfg.shm;
    e.heap = d->p->cfg.heap;
    pk_doc_t *doc = NULL;
    if ((d->src->flags & POOL_SRC_DOC) && pk_doc_new(&doc) != PK_OK) {
        d->input_rc = pk__err(&d->input_err, PK_ENOMEM, "out of memory");
        d->eof = 1;
        return NULL;
    }
    uint32_t count = 0;
    while (count < chunk && !d->eof) {
        const pk_value_t *v = NULL;
        pool_raw_item_t raw = {0};
        pk_error_t ie;
        pk_error_clear(&ie);
        pk_err_t in = d->src->next_raw != NULL ? d->src->next_raw(d, &raw, &ie)
                                               : d->src->next(d, doc, &v, &ie);
        if (in == PK_EOF) {
            d->eof = 1;
            break;
        }
        if (in != PK_OK) {
            d->input_rc = in;
            d->input_err = ie;
            if (ie.msg[0] == '\0')
                pk__err(&d->input_err, in, "the input function failed: %s",
                        pk_strerror(in));
            d->eof = 1;
            break;
        }
        pk_err_t rc = d->src->next_raw != NULL ? enc_raw(&e, &raw, &ie)
                      : v != NULL              ? enc_item(&e, v, &ie)
                                  : pk__err(&ie, PK_EINVAL, "item is NULL");
        size_t idx = d->pos++;
        if (!(d->src->flags & POOL_SRC_STREAM) && d->pos == d->n)
            d->eof = 1;
        if (rc != PK_OK) {
            /* This item alone fails; the batch so far goes out first. */
            char msg[300];
            snprintf(msg, sizeof msg, "cannot pickle it: %s",
                     ie.msg[0] ? ie.msg : pk_strerror(rc));
            if (count > 0) {
                pool__batch_t *b = enc_batch(j, &e, &doc, first, count);
                if (b == NULL)
                    local_outcome(d, first, count, PK_ENOMEM, "out of memory");
                local_outcome(d, idx, 1, rc, msg);
                enc_free(&e);
                pk_doc_free(&doc);
                return b;
            }
            local_outcome(d, idx, 1, rc, msg);
            first = d->pos;
            continue;
        }
        count++;
    }
    pool__batch_t *b = NULL;
    if (count > 0) {
        size_t bytes = e.buf.len;
        for (size_t i = 0; i < e.bufs.n; i++)
            bytes += e.bufs.v[i].len;
        d->item_bytes = bytes / count;
        b = enc_batch(j, &e, &doc, first, count);
        if (b == NULL)
            local_outcome(d, first, count, PK_ENOMEM, "out of memory");
    }
    enc_free(&e);
    pk_doc_free(&doc);
    return b;
}

/* Items a streaming job may have submitted and not yet delivered: enough to
 * keep every worker's credit full twice over, and no more (backpressure). */
static size_t window_of(const pool__drive_t *d, size_t chunk)
{
    return 2 * (size_t)d->p->cfg.nworkers * (size_t)d->p->cfg.prefetch * chunk;
}

/* The job takes no more of the master's attention (p->mu held). */
static void job_deactivate(pool_t *p, pool__job_t *j)
{
    if (j->active) {
        j->active = 0;
        p->lk.active_jobs--;
    }
}

/* Submits batches while the window allows.  Called without p->mu. */
void pool__drive_feed(pool__drive_t *d)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    if (d->eof)
        return;
again:;
    pool__batch_t *h = NULL, *t = NULL;
    size_t nsub = 0;
    int more = 0;
    for (;;) {
        if (d->eof)
            break;
        size_t chunk = pick_chunk(d);
        if (d->submitted + nsub - d->completed + d->held >= window_of(d, chunk))
            break;
        pool__batch_t *b = make_batch(d, chunk);
        if (b == NULL)
            continue;
        nsub += b->count;
        if (t)
            t->next = b;
        else
            h = b;
        t = b;
        if (d->src->flags & POOL_SRC_SINGLE)
            break;
        if (b->blob->shm != NULL) {
            /* It holds arena blocks: out it goes before the next batch may
             * wait for room in the arena (which only submitted batches
             * free). */
            more = 1;
            break;
        }
    }
    /* A single call goes straight to an idle worker's lane if one polls:
     * the master need not even wake up (unless a close waits on it). */
    int laned = (d->src->flags & POOL_SRC_SINGLE) && h != NULL &&
                pool__lane_post(p, h, &d->lane);
    if (laned)
        h = t = NULL;
    pthread_mutex_lock(&p->mu);
    if (h != NULL) {
        if (p->lk.subq_tail)
            p->lk.subq_tail->next = h;
        else
            p->lk.subq_head = h;
        p->lk.subq_tail = t;
    }
    if (d->eof)
        job_deactivate(p, j);
    int wake = h != NULL || (d->eof && (!laned || p->lk.closed));
    pthread_mutex_unlock(&p->mu);
    d->submitted += nsub;
    if (wake)
        pool__master_wake(p);
    if (more)
        goto again;
}

/* Stops the job: no more input, the master drops what is left of it. */
void pool__drive_cancel(pool__drive_t *d)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    pthread_mutex_lock(&p->mu);
    if (!j->canceled) {
        j->canceled = 1;
        j->cancel_ns = pool__now_ns();
        p->lk.cancel_pending = 1;
    }
    job_deactivate(p, j);
    pool__outcome_t *o = j->done_head;
    j->done_head = j->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    d->eof = 1;
    pool__master_wake(p);
    while (o != NULL) {
        pool__outcome_t *n = o->next;
        pool__outcome_free(o);
        o = n;
    }
    while (d->local != NULL) {
        pool__outcome_t *n = d->local->next;
        pool__outcome_free(d->local);
        d->local = n;
    }
}

/* Ends the job; with borrowed caller memory, waits until nothing refers to
 * it any more.  Frees the drive's job reference. */
void pool__drive_end(pool__drive_t *d)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    if (j == NULL)
        return;
    if (d->completed < d->submitted || !d->eof)
        pool__drive_cancel(d);
    pthread_mutex_lock(&p->mu);
    job_deactivate(p, j);
    if (d->borrows)
        while (j->blobs > 0)
            pthread_cond_wait(&p->cv, &p->mu);
    p->lk.open_drives--;
    pthread_mutex_unlock(&p->mu);
    pool__master_wake(p);
    pool__job_unref(j);
    d->j = NULL;
}

/* Feeds input and waits for outcomes.  Returns PK_OK with *got the list
 * (NULL when the map is complete), PK_ETIMEDOUT, PK_EINTR, or the pool's
 * failure (PK_ECRASHED when workers keep dying) with err filled. */
pk_err_t pool__drive_pump(pool__drive_t *d, pool__outcome_t **got,
                          const struct timespec *deadline, pk_error_t *err)
{
    pool_t *p = d->p;
    pool__job_t *j = d->j;
    *got = NULL;
    for (;;) {
        if (d->local != NULL) {
            *got = d->local;
            d->local = NULL;
            for (pool__outcome_t *o = *got; o; o = o->next)
                d->completed += o->count;
            return PK_OK;
        }
        pool__drive_feed(d);
        if (d->local != NULL)
            continue;
        pthread_mutex_lock(&p->mu);
        pk_err_t rc = PK_OK;
        for (;;) {
            if (j->done_head != NULL) {
                *got = j->done_head;
                j->done_head = j->done_tail = NULL;
                break;
            }
            if (p->lk.broken != PK_OK) {
                rc = pk__err(err, p->lk.broken, "%s", p->lk.broken_msg);
                break;
            }
            if (j->lost) {
                rc = pk__err(err, PK_ENOMEM,
                             "out of memory in the pool's master thread: "
                             "outcomes of this call were lost");
                break;
            }
            if (d->eof && d->completed >= d->submitted)
                break;
            if (!d->eof && p->lk.terminate_req) {
                /* Nothing more will run: cancel the rest of the input. */
                pthread_mutex_unlock(&p->mu);
                if (d->src->flags & (POOL_SRC_STREAM | POOL_SRC_SINGLE)) {
                    d->eof = 1;
                } else {
                    local_outcome(d, d->pos, d->n - d->pos, PK_ECANCELED,
                                  "the pool was terminated");
                    d->pos = d->n;
                    d->eof = 1;
                }
                pthread_mutex_lock(&p->mu);
                job_deactivate(p, j);
                break;
            }
            if (!d->eof && d->submitted - d->completed + d->held <
                               window_of(d, pick_chunk(d)))
                break; /* room to pool__drive_feed more */
            rc = pool__cv_wait(p, deadline);
            if (rc != PK_OK)
                break;
        }
        pthread_mutex_unlock(&p->mu);
        if (rc == PK_EINTR)
            pk__err(err, PK_EINTR, "interrupted by a signal");
        else if (rc == PK_ETIMEDOUT)
            pk__err(err, PK_ETIMEDOUT, "no outcome within the timeout");
        if (rc != PK_OK)
            return rc;
        if (*got != NULL) {
            for (pool__outcome_t *o = *got; o; o = o->next)
                d->completed += o->count;
            return PK_OK;
        }
        if (d->local != NULL)
            continue;
        if (d->eof && d->completed >= d->submitted)
            return PK_OK;
    }
}

/* Runs a whole map on the caller's thread; `sink` consumes each outcome. */
pk_err_t pool__drive_run(pool__drive_t *d, pool__sink_fn sink, void *ctx,
                         pk_error_t *err)
{
    pk_err_t rc = PK_OK;
    pool__intr_enter();
    for (;;) {
        pool__outcome_t *got = NULL;
        rc = pool__drive_pump(d, &got, NULL, err);
        if (rc != PK_OK)
            break;
        if (got == NULL)
            break;
        while (got != NULL) {
            pool__outcome_t *n = got->next;
            got->next = NULL;
            sink(ctx, got);
            got = n;
        }
        if (d->input_rc != PK_OK)
            break;
    }
    pool__intr_leave();
    if (rc == PK_OK && d->input_rc != PK_OK) {
        rc = d->input_rc;
        if (err != NULL)
            *err = d->input_err;
    }
    if (rc != PK_OK)
        pool__drive_cancel(d);
    pool__drive_end(d);
    return rc;
}

pk_err_t pool__src_items_next(pool__drive_t *d, pk_doc_t *doc,
                              const pk_value_t **v, pk_error_t *err)
{
    PK_UNUSED(doc);
    PK_UNUSED(err);
    if (d->pos >= d->n)
        return PK_EOF;
    *v = d->in.items[d->pos];
    return PK_OK;
}
