/*
 * worker.c - the native worker loop (see worker.h).
 *
 * One batch at a time: the call frame (function reference and kwargs) is
 * decoded once and cached while consecutive batches repeat it; items are
 * decoded one by one into a scratch doc, the function runs, and its result is
 * encoded at once into the outcome records (or stored in the raw vector the
 * convenience maps ask for), so a scratch doc can be recycled every few
 * thousand items and memory stays flat on huge batches.  Results' large
 * buffers travel out of band, zero-copy: the docs that own them are freed by
 * ZeroMQ's free callback once the frames are sent.
 *
 * The scoreboard slot is written with relaxed stores per item (the item's
 * start time only when the batch has a deadline, stored before the item
 * index with release order so the master never pairs a new index with an old
 * start time).
 */
#define _GNU_SOURCE
#include "proc/worker.h"

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "codec/value_int.h"
#include "core/common.h"
#include "picklepool/pickle.h"
#include "picklepool/registry.h"
#include "ipc/wire.h"

#define ROTATE_ITEMS 1024  /* recycle scratch docs this often */
#define OOB_MIN_BYTES 4096 /* smaller buffers stay in band */

/* Docs kept alive until every frame borrowing them has been sent. */
typedef struct holder {
    atomic_int refs;
    size_t ndocs, cap;
    pk_doc_t **docs;
} holder_t;

/* A call frame, decoded once and kept while the batches use it. */
typedef struct call_cache {
    uint8_t *bytes; /* the frame, NULL: none yet */
    size_t len;
    pk_doc_t *doc;
    pool_fn_t fn;
    void *udata;
    const pk_value_t *kwargs;
    pk_err_t rc;
    char msg[320];
} call_cache_t;

typedef struct worker {
    const pool__worker_cfg_t *cfg;
    void *sock;
    /* The socket's last call (which POOL_WIRE_F_SAME_CALL refers to) and
     * the fast lane's, kept apart so that a lane call never changes what
     * the master believes this worker holds; `call` is the batch's. */
    call_cache_t calls[2];
    call_cache_t *call;
    /* per batch */
    pk_buf_t out;
    pool__oob_list_t oob;
    pk_doc_t *res_doc;
    holder_t *holder;
    /* Result arrays a kernel built straight in this worker's arena region
     * (place_array): sent as they are, or freed when the batch ends. */
    struct placed {
        uint64_t off;
        size_t len;
        int sent;
    } * placed;
    size_t nplaced, capplaced;
    int lane_task; /* the batch running came through the fast lane */
    uint64_t items_total;
    unsigned logged; /* bit per kind: malformed message already logged */
} worker_t;

/* Logs a malformed message from the master, once per kind. */
#define LOG_ONCE(w, kind, ...)                                                 \
    do {                                                                       \
        char who_[48];                                                         \
        snprintf(who_, sizeof who_, "worker %d (pid %d)", (w)->cfg->slot,      \
                 (int)getpid());                                               \
        pool__wire_log_once(&(w)->logged, (kind), who_, __VA_ARGS__);          \
    } while (0)

/* ---- zero-copy frames ---------------------------------------------------- */

static void free_bytes(void *data, void *hint)
{
    PK_UNUSED(hint);
    pk__free(data);
}

static void holder_unref(void *data, void *hint)
{
    PK_UNUSED(data);
    holder_t *h = hint;
    if (atomic_fetch_sub(&h->refs, 1) != 1)
        return;
    for (size_t i = 0; i < h->ndocs; i++)
        pk_doc_free(&h->docs[i]);
    pk__free(h->docs);
    pk__free(h);
}

static int holder_keep(holder_t *h, pk_doc_t *doc)
{
    if (h->ndocs == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 4;
        pk_doc_t **d = pk__realloc(h->docs, nc * sizeof *d);
        if (d == NULL)
            return -1;
        h->docs = d;
        h->cap = nc;
    }
    h->docs[h->ndocs++] = doc;
    return 0;
}

/* Sends a frame of `len` bytes at data: copied when small, else handed over
 * with `ffn(data, hint)` to free it.  On failure the data is freed here. */
static int send_frame(void *sock, void *data, size_t len, zmq_free_fn *ffn,
                      void *hint, int more)
{
    zmq_msg_t m;
    int flags = more ? ZMQ_SNDMORE : 0;
    if (ffn == NULL || len < 256) {
        if (zmq_msg_init_size(&m, len) != 0)
            goto fail;
        if (len)
            memcpy(zmq_msg_data(&m), data, len);
        if (ffn != NULL)
            ffn(data, hint);
    } else if (zmq_msg_init_data(&m, data, len, ffn, hint) != 0) {
        goto fail;
    }
    while (zmq_msg_send(&m, sock, flags) < 0) {
        if (errno == EINTR)
            continue;
        zmq_msg_close(&m);
        return -1;
    }
    return 0;
fail:
    if (ffn != NULL)
        ffn(data, hint);
    return -1;
}

static int send_hdr(void *sock, const pool__wire_hdr_t *h, int more)
{
    uint8_t b[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_encode(h, b);
    return send_frame(sock, b, sizeof b, NULL, NULL, more);
}

/* ---- outcomes ----------------------------------------------------------- */

static int buffer_cb(void *ctx, const void *data, size_t len, int readonly)
{
    PK_UNUSED(readonly);
    worker_t *w = ctx;
    return pool__oob_take(&w->oob, data, len, OOB_MIN_BYTES);
}

static int out_reserve(pk_buf_t *b, size_t extra)
{
    return pk__grow_bytes(&b->data, &b->cap, b->len, extra, 4096);
}

static void put_error(worker_t *w, pk_err_t code, const char *msg)
{
    if (code == PK_OK || code >= PK__ERR_MAX)
        code = PK_EFUNC;
    if (msg == NULL || msg[0] == '\0')
        msg = pk_strerror(code);
    size_t len = strlen(msg);
    if (out_reserve(&w->out, POOL_WIRE_REC_SIZE + len) != 0)
        return; /* caught by the final size check */
    pool__wire_rec_encode(w->out.data + w->out.len, (uint32_t)len, 0,
                          (uint32_t)code);
    memcpy(w->out.data + w->out.len + POOL_WIRE_REC_SIZE, msg, len);
    w->out.len += POOL_WIRE_REC_SIZE + len;
}

/* Keeps a copy of a raw result's buffer for this batch's reply: straight
 * into the arena when it is big enough (and the reply is not for the fast
 * lane, which copies buffers itself), else into the result doc, which
 * lives until the frames are sent.  The handler's memory is only valid
 * until its next call.  Returns 0, or -1 when out of memory. */
static int keep_raw_buf(worker_t *w, const void *data, size_t len)
{
    const pool__worker_cfg_t *c = w->cfg;
    uint64_t off = POOL_WIRE_SHM_INLINE;
    if (c->shm != NULL && !w->lane_task && len >= c->shm_threshold)
        off = pool__shm_worker_alloc(c->shm, c->shm_lay, c->slot, len);
    const void *copy;
    if (off != POOL_WIRE_SHM_INLINE) {
        pool__shm_prefault(c->shm + off, len, 1);
        memcpy(c->shm + off, data, len);
        copy = c->shm + off;
        if (c->sb != NULL)
            atomic_fetch_add_explicit(&c->sb->copied, len,
                                      memory_order_relaxed);
    } else {
        void *d = pk_doc_alloc(w->res_doc, len ? len : 1);
        if (d == NULL)
            return -1;
        if (len)
            memcpy(d, data, len);
        copy = d;
    }
    if (!pool__oob_take(&w->oob, copy, len, 0))
        return -1;
    w->oob.v[w->oob.n - 1].shm = off;
    return 0;
}

/* A result record of what a raw handler returned. */
static void put_raw(worker_t *w, const pool_raw_out_t *o)
{
    size_t noob = w->oob.n;
    if (o->len > UINT32_MAX) {
        put_error(w, PK_ELIMIT, "the result is over 4 GiB");
        return;
    }
    if ((o->len > 0 && o->data == NULL) || (o->nbufs > 0 && o->bufs == NULL)) {
        put_error(w, PK_EFUNC, "the handler returned NULL bytes");
        return;
    }
    for (size_t k = 0; k < o->nbufs; k++)
        if (keep_raw_buf(w, o->bufs[k].data, o->bufs[k].len) != 0) {
            w->oob.n = noob; /* arena blocks go back with the batch */
            put_error(w, PK_ENOMEM, "out of memory for the result");
            return;
        }
    if (out_reserve(&w->out, POOL_WIRE_REC_SIZE + o->len) != 0) {
        w->oob.n = noob;
        put_error(w, PK_ENOMEM, "out of memory for the result");
        return;
    }
    pool__wire_rec_encode(w->out.data + w->out.len, (uint32_t)o->len,
                          (uint32_t)(w->oob.n - noob), 0);
    if (o->len)
        memcpy(w->out.data + w->out.len + POOL_WIRE_REC_SIZE, o->data, o->len);
    w->out.len += POOL_WIRE_REC_SIZE + o->len;
}

static void put_value(worker_t *w, const pk_value_t *v)
{
    size_t start = w->out.len, noob = w->oob.n;
    if (out_reserve(&w->out, POOL_WIRE_REC_SIZE + 64) != 0) {
        put_error(w, PK_ENOMEM, "out of memory encoding the result");
        return;
    }
    w->out.len += POOL_WIRE_REC_SIZE;
    pk_dump_opts_t o;
    pk_dump_opts_init(&o);
    o.buffer_cb = buffer_cb;
    o.buffer_ctx = w;
    pk_error_t e;
    pk_error_clear(&e);
    pk_err_t rc = pk_dumps(v, &o, &w->out, &e);
    if (rc != PK_OK) {
        w->out.len = start;
        w->oob.n = noob;
        char msg[300];
        snprintf(msg, sizeof msg, "cannot pickle the result: %s",
                 e.msg[0] ? e.msg : pk_strerror(rc));
        put_error(w, rc, msg);
        return;
    }
    size_t len = w->out.len - start - POOL_WIRE_REC_SIZE;
    pool__wire_rec_encode(w->out.data + start, (uint32_t)len,
                          (uint32_t)(w->oob.n - noob), 0);
}

/* pk__array_alloc_fn of result docs: a kernel's large result array is
 * built in this worker's arena region, so it is never copied on its way to
 * the caller (result_to_arena sends it where it is).  NULL (the doc's own
 * memory) for fast-lane replies, which copy their buffers, and when the
 * region is full. */
static void *place_array(void *ctx, size_t len)
{
    worker_t *w = ctx;
    const pool__worker_cfg_t *c = w->cfg;
    if (c->shm == NULL || w->lane_task || len < c->shm_threshold)
        return NULL;
    if (w->nplaced == w->capplaced) {
        size_t nc = w->capplaced ? w->capplaced * 2 : 8;
        struct placed *v = pk__realloc(w->placed, nc * sizeof *v);
        if (v == NULL)
            return NULL;
        w->placed = v;
        w->capplaced = nc;
    }
    uint64_t off = pool__shm_worker_alloc(c->shm, c->shm_lay, c->slot, len);
    if (off == UINT64_MAX)
        return NULL;
    pool__shm_prefault(c->shm + off, len, 1);
    w->placed[w->nplaced].off = off;
    w->placed[w->nplaced].len = len;
    w->placed[w->nplaced].sent = 0;
    w->nplaced++;
    return c->shm + off;
}

/* The placed array that is exactly [data, data+len) and not sent yet. */
static struct placed *placed_find(worker_t *w, const void *data, size_t len)
{
    const uint8_t *d = data;
    if (w->nplaced == 0 || d < w->cfg->shm)
        return NULL;
    for (size_t i = 0; i < w->nplaced; i++)
        if (w->placed[i].off == (uint64_t)(d - w->cfg->shm) &&
            w->placed[i].len == len && !w->placed[i].sent)
            return &w->placed[i];
    return NULL;
}

/* At the end of a batch: frees the placed arrays that were not sent (the
 * master owns the others now). */
static void placed_reset(worker_t *w)
{
    const pool__worker_cfg_t *c = w->cfg;
    for (size_t i = 0; i < w->nplaced; i++)
        if (!w->placed[i].sent)
            pool__shm_worker_free(c->shm, c->shm_lay, c->slot, w->placed[i].off,
                                  w->placed[i].len);
    w->nplaced = 0;
}

/* Starts a fresh result doc, keeping the old one alive if frames borrow it. */
static int rotate_res_doc(worker_t *w, size_t *noob_kept)
{
    if (w->res_doc != NULL) {
        if (w->oob.n > *noob_kept) {
            if (holder_keep(w->holder, w->res_doc) != 0)
                return -1;
            w->res_doc = NULL;
        } else {
            pk_doc_free(&w->res_doc);
        }
        *noob_kept = w->oob.n;
    }
    if (pk_doc_new(&w->res_doc) != PK_OK)
        return -1;
    pk__doc_set_array_alloc(w->res_doc, place_array, w, OOB_MIN_BYTES);
    return 0;
}

/* ---- the call frame ---------------------------------------------------- */

static void load_call(worker_t *w, call_cache_t *c, const void *data,
                      size_t len)
{
    if (c->bytes != NULL && len == c->len && memcmp(data, c->bytes, len) == 0)
        return;
    pk__free(c->bytes);
    pk_doc_free(&c->doc);
    c->bytes = NULL;
    c->fn = NULL;
    c->kwargs = NULL;
    c->rc = PK_OK;
    c->msg[0] = '\0';
    if (w->cfg->raw != NULL)
        goto cache; /* the handler reads the frame itself */
    pk_error_t e;
    pk_error_clear(&e);
    pk_value_t *v = NULL;
    if (pk_doc_new(&c->doc) != PK_OK) {
        c->rc = PK_ENOMEM;
        return; /* not cached: retried next batch */
    }
    size_t used = 0;
    pk_err_t rc = pk_loads(c->doc, data, len, NULL, &v, &used, &e);
    pk_value_t *kw = NULL;
    if (rc == PK_OK && used < len) {
        size_t used2 = 0;
        rc = pk_loads(c->doc, (const uint8_t *)data + used, len - used, NULL,
                      &kw, &used2, &e);
        if (rc == PK_OK && used + used2 != len)
            rc = pk__err(&e, PK_EPROTO, "%zu stray bytes after the kwargs",
                         len - used - used2);
    }
    if (rc != PK_OK) {
        c->rc = rc == PK_EPROTO ? rc : PK_EPROTO;
        snprintf(c->msg, sizeof c->msg, "bad call frame: %s",
                 e.msg[0] ? e.msg : pk_strerror(rc));
    } else if (v->type != PK_GLOBAL || (kw != NULL && kw->type != PK_DICT)) {
        c->rc = PK_EPROTO;
        snprintf(c->msg, sizeof c->msg,
                 "call frame is not a global and optional kwargs dict");
    } else {
        c->fn = pool_lookup(v->u.global.module, v->u.global.name, &c->udata);
        if (c->fn == NULL) {
            c->rc = PK_ENOFUNC;
            snprintf(c->msg, sizeof c->msg, "unknown function %s.%s",
                     v->u.global.module, v->u.global.name);
        }
        c->kwargs = kw != NULL && pk_len(kw) > 0 ? kw : NULL;
    }
cache:
    c->bytes = pk__malloc(len ? len : 1);
    if (c->bytes != NULL) {
        memcpy(c->bytes, data, len);
        c->len = len;
    }
}

/* ---- one batch ---------------------------------------------------------- */

typedef struct batch_in {
    const pool__wire_hdr_t *h;
    const uint8_t *items;
    size_t items_len;
    pool__wire_rec_t *recs; /* record path */
    pk_buffer_t *bufs;      /* out-of-band input buffers */
} batch_in_t;

/* Runs item i; returns its status and sets *res (PK_OK) or fills e. */
static pk_err_t run_item(worker_t *w, const batch_in_t *b, uint32_t i,
                         pk_doc_t *item_doc, pk_value_t *vec_args,
                         pk_value_t *vec_arg, pk_value_t **res, pk_error_t *e)
{
    const pool__wire_hdr_t *h = b->h;
    pk_value_t *args;
    if (h->flags & POOL_WIRE_F_VEC_I64) {
        vec_arg->u.i = (int64_t)pk__ld64(b->items + (size_t)i * 8);
        args = vec_args;
    } else if (h->flags & POOL_WIRE_F_VEC_F64) {
        uint64_t bits = pk__ld64(b->items + (size_t)i * 8);
        memcpy(&vec_arg->u.f, &bits, 8);
        args = vec_args;
    } else {
        const pool__wire_rec_t *r = &b->recs[i];
        pk_load_opts_t lo;
        pk_load_opts_init(&lo);
        lo.buffers = b->bufs + r->buf0;
        lo.nbuffers = r->nbufs;
        pk_value_t *v = NULL;
        pk_err_t rc = pk_loads(item_doc, r->data, r->len, &lo, &v, NULL, e);
        if (rc != PK_OK) {
            char m[sizeof e->msg];
            snprintf(m, sizeof m, "cannot unpickle the argument: %.200s",
                     e->msg);
            memcpy(e->msg, m, sizeof m);
            return rc;
        }
        if (h->flags & POOL_WIRE_F_STARARGS) {
            if (v->type != PK_TUPLE)
                return pk__err(e, PK_ETYPE,
                               "TypeError: arguments must be a tuple, not %s",
                               pk_type_name((pk_type_t)v->type));
            args = v;
        } else {
            args = pk_tuple_new(item_doc, 1);
            if (args == NULL)
                return pk__err(e, PK_ENOMEM, "out of memory");
            pk_tuple_set(args, 0, v);
        }
    }
    pool_call_t call = {.doc = w->res_doc,
                        .args = args,
                        .kwargs = w->call->kwargs,
                        .udata = w->call->udata,
                        .err = e};
    *res = NULL;
    pk_err_t rc = w->call->fn(&call, res);
    if (rc == PK_OK && *res == NULL)
        *res = pk_none();
    if (rc != PK_OK && e->msg[0] == '\0')
        pk__err(e, rc, "%s", pk_strerror(rc));
    return rc;
}

/* Runs record item i through the raw handler and writes its result or
 * error record. */
static void run_raw_item(worker_t *w, const batch_in_t *b, uint32_t i,
                         pk_error_t *e)
{
    const pool__wire_rec_t *r = &b->recs[i];
    pool_raw_call_t call = {.call = w->call->bytes,
                            .call_len = w->call->len,
                            .item = r->data,
                            .len = r->len,
                            .bufs = b->bufs + r->buf0,
                            .nbufs = r->nbufs,
                            .index = i};
    pool_raw_out_t out = {0};
    pk_err_t rc = w->cfg->raw(w->cfg->raw_ctx, &call, &out, e);
    if (rc == PK_OK)
        put_raw(w, &out);
    else
        put_error(w, rc, e->msg[0] ? e->msg : "the handler failed");
}

/* Points bufs[0..nbufs) at a TASK's buffers: its frames, or with
 * POOL_WIRE_F_SHM the arena blocks its table names (read-only mapping). */
static pk_err_t task_bufs(worker_t *w, const pool__wire_hdr_t *h,
                          zmq_msg_t *frames, pk_buffer_t *bufs, pk_error_t *e)
{
    int shm = (h->flags & POOL_WIRE_F_SHM) != 0;
    zmq_msg_t *bf = frames + 3 + shm;
    for (uint32_t k = 0; k < h->nbufs; k++) {
        bufs[k].data = zmq_msg_data(&bf[k]);
        bufs[k].len = zmq_msg_size(&bf[k]);
        bufs[k].readonly = 1;
    }
    if (!shm)
        return PK_OK;
    static const pool__shm_layout_t none;
    const pool__shm_layout_t *lay =
        w->cfg->shm != NULL ? w->cfg->shm_lay : &none;
    size_t *fl = pk__malloc((size_t)h->nbufs * sizeof *fl);
    pool__wire_shm_t *ents = pk__malloc((size_t)h->nbufs * sizeof *ents);
    pk_err_t rc = PK_ENOMEM;
    if (fl == NULL || ents == NULL) {
        pk__err(e, PK_ENOMEM, "out of memory");
    } else {
        for (uint32_t k = 0; k < h->nbufs; k++)
            fl[k] = bufs[k].len;
        rc = pool__wire_shm_parse(
            zmq_msg_data(&frames[3]), zmq_msg_size(&frames[3]), h->nbufs,
            lay->task_off, lay->task_off + lay->task_size,
            w->cfg->heap != NULL ? w->cfg->heap_size : 0, fl, ents, e);
    }
    for (uint32_t k = 0; rc == PK_OK && k < h->nbufs; k++) {
        if (ents[k].off == POOL_WIRE_SHM_INLINE)
            continue;
        if (ents[k].off >= POOL_WIRE_SHM_HEAP) { /* a caller's array */
            bufs[k].data = w->cfg->heap + (ents[k].off - POOL_WIRE_SHM_HEAP);
            bufs[k].len = (size_t)ents[k].len;
            pool__shm_prefault(bufs[k].data, bufs[k].len, 0);
            continue;
        }
        bufs[k].data = w->cfg->shm + ents[k].off;
        bufs[k].len = (size_t)ents[k].len;
        pool__shm_prefault(bufs[k].data, bufs[k].len, 0);
    }
    pk__free(fl);
    pk__free(ents);
    return rc;
}

/* Moves result buffers of at least the threshold into this worker's arena
 * region, filling tab (POOL_WIRE_SHM_ENT per buffer).  Returns how many
 * went there; the others (the region is full) stay socket frames. */
static size_t result_to_arena(worker_t *w, uint8_t *tab)
{
    const pool__worker_cfg_t *c = w->cfg;
    size_t moved = 0;
    for (size_t k = 0; k < w->oob.n; k++) {
        pool__oob_t *o = &w->oob.v[k];
        uint64_t off = POOL_WIRE_SHM_INLINE;
        if (o->shm != POOL_WIRE_SHM_INLINE) { /* a raw result's, placed */
            pool__wire_shm_encode(tab + k * POOL_WIRE_SHM_ENT, o->shm, o->len);
            moved++;
            continue;
        }
        struct placed *pl = placed_find(w, o->data, o->len);
        if (pl != NULL) { /* built in place by the kernel: no copy */
            pl->sent = 1;
            o->shm = pl->off;
            pool__wire_shm_encode(tab + k * POOL_WIRE_SHM_ENT, o->shm, o->len);
            moved++;
            continue;
        }
        if (c->shm != NULL && o->len >= c->shm_threshold)
            off = pool__shm_worker_alloc(c->shm, c->shm_lay, c->slot, o->len);
        if (off != POOL_WIRE_SHM_INLINE) {
            pool__shm_prefault(c->shm + off, o->len, 1);
            memcpy(c->shm + off, o->data, o->len);
            o->shm = off;
            moved++;
            if (c->sb != NULL)
                atomic_fetch_add_explicit(&c->sb->copied, o->len,
                                          memory_order_relaxed);
        }
        pool__wire_shm_encode(tab + k * POOL_WIRE_SHM_ENT, off,
                              off == POOL_WIRE_SHM_INLINE ? 0 : o->len);
    }
    return moved;
}

/* ---- the fast lane (lane.h): the worker's side ------------------------- */

/* Stores a lane state and wakes a caller sleeping on it. */
static void lane_set(pool__lane_t *l, uint32_t v)
{
    atomic_store(&l->state, v);
    if (atomic_load(&l->waiting) != 0)
        pool__lane_wake(l);
}

/* Writes the RESULT rh (payload w->out, buffers w->oob, all inline) into the
 * lane's reply area and sets DONE.  Returns -1 when it does not fit (then
 * nothing is set: the caller sends it over the socket). */
static int lane_reply(worker_t *w, const pool__wire_hdr_t *rh)
{
    pool__lane_t *l = w->cfg->lane;
    size_t pos = POOL_WIRE_HDR_SIZE;
    pool__wire_hdr_encode(rh, l->rep);
    if (pool__lane_put(l->rep, POOL_LANE_REP, &pos, w->out.data, w->out.len) !=
        0)
        return -1;
    for (size_t k = 0; k < w->oob.n; k++)
        if (pool__lane_put(l->rep, POOL_LANE_REP, &pos, w->oob.v[k].data,
                           w->oob.v[k].len) != 0)
            return -1;
    atomic_store_explicit(&l->rep_len, (uint32_t)pos, memory_order_relaxed);
    lane_set(l, POOL_LANE_TAG(atomic_load(&l->state)) | POOL_LANE_DONE);
    return 0;
}

static void run_batch(worker_t *w, const pool__wire_hdr_t *h, zmq_msg_t *frames)
{
    uint64_t t0 = pool__now_ns();
    pool__sb_slot_t *sb = w->cfg->sb;
    if (sb != NULL) {
        POOL_SB_STORE(sb->batch, h->batch);
        POOL_SB_STORE(sb->start_ns, t0);
        atomic_store_explicit(&sb->item, POOL_SB_DECODING,
                              memory_order_release);
        atomic_store_explicit(&sb->state, POOL_SB_BUSY, memory_order_release);
    }
    uint32_t n = h->count;
    int vec_in = (h->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) != 0;
    int res_i64 = (h->flags & POOL_WIRE_F_RES_I64) != 0;
    int res_f64 = (h->flags & POOL_WIRE_F_RES_F64) != 0;
    batch_in_t b = {.h = h,
                    .items = zmq_msg_data(&frames[2]),
                    .items_len = zmq_msg_size(&frames[2])};
    pk_error_t e;
    pk_error_clear(&e);
    pk_err_t batch_rc = PK_OK;
    char batch_msg[400] = "";

    w->out.len = 0;
    w->oob.n = 0;
    w->holder = pk__calloc(1, sizeof *w->holder);
    if (w->holder == NULL)
        _exit(70); /* cannot even reply: the master requeues the batch */
    atomic_init(&w->holder->refs, 1);

    w->call = &w->calls[w->lane_task ? 1 : 0];
    int same = (h->flags & POOL_WIRE_F_SAME_CALL) != 0;
    if (!same)
        load_call(w, w->call, zmq_msg_data(&frames[1]),
                  zmq_msg_size(&frames[1]));
    if (same && (w->lane_task || w->call->bytes == NULL)) {
        batch_rc = PK_EPROTO;
        snprintf(batch_msg, sizeof batch_msg,
                 "a TASK reuses a call this worker never received");
        LOG_ONCE(w, 28, "%s", batch_msg);
    } else if (w->cfg->raw != NULL && vec_in) {
        batch_rc = PK_EUNSUPPORTED;
        snprintf(batch_msg, sizeof batch_msg,
                 "vector maps need a native worker");
    } else if (w->call->rc != PK_OK) {
        batch_rc = w->call->rc;
        snprintf(batch_msg, sizeof batch_msg, "%s", w->call->msg);
    } else if (vec_in) {
        if (pool__wire_vec_check(b.items_len, n, &e) != PK_OK) {
            batch_rc = PK_EPROTO;
            snprintf(batch_msg, sizeof batch_msg, "%s", e.msg);
        }
    } else {
        b.recs = pk__malloc((size_t)n * sizeof *b.recs);
        b.bufs = pk__malloc(((size_t)h->nbufs + 1) * sizeof *b.bufs);
        if (b.recs == NULL || b.bufs == NULL) {
            batch_rc = PK_ENOMEM;
            snprintf(batch_msg, sizeof batch_msg, "out of memory");
        } else if (pool__wire_recs_parse(b.items, b.items_len, n, h->nbufs, 0,
                                         b.recs, &e) != PK_OK) {
            batch_rc = PK_EPROTO;
            snprintf(batch_msg, sizeof batch_msg, "malformed items: %s", e.msg);
            LOG_ONCE(w, 30, "%s", batch_msg);
        } else if ((batch_rc = task_bufs(w, h, frames, b.bufs, &e)) != PK_OK) {
            snprintf(batch_msg, sizeof batch_msg, "malformed buffers: %s",
                     e.msg);
            LOG_ONCE(w, 29, "%s", batch_msg);
        }
    }

    int64_t *vec = NULL;
    int vec_ok = (res_i64 || res_f64) && batch_rc == PK_OK;
    if (vec_ok) {
        vec = pk__malloc((size_t)n * 8);
        vec_ok = vec != NULL;
    }
    uint8_t *st = NULL; /* per-item status when the vector reply fails */
    char **msgs = NULL;
    pk_doc_t *item_doc = NULL;
    pk_value_t *vec_args = NULL, *vec_arg = NULL;
    size_t noob_kept = 0;
    int timed = h->aux != 0 && sb != NULL;

    for (uint32_t i = 0; i < n; i++) {
        if (batch_rc != PK_OK) {
            put_error(w, batch_rc, batch_msg);
            continue;
        }
        if (i % ROTATE_ITEMS == 0) {
            pk_doc_free(&item_doc);
            if (pk_doc_new(&item_doc) != PK_OK ||
                rotate_res_doc(w, &noob_kept) != 0) {
                batch_rc = PK_ENOMEM;
                snprintf(batch_msg, sizeof batch_msg, "out of memory");
                vec_ok = 0; /* the rest fail: no raw vector reply */
                i--;        /* this item gets the error */
                continue;
            }
            if (vec_in) {
                vec_args = pk_tuple_new(item_doc, 1);
                vec_arg = (h->flags & POOL_WIRE_F_VEC_I64)
                              ? pk_int(item_doc, 0)
                              : pk_float(item_doc, 0.0);
                if (vec_args == NULL || vec_arg == NULL) {
                    batch_rc = PK_ENOMEM;
                    snprintf(batch_msg, sizeof batch_msg, "out of memory");
                    i--;
                    continue;
                }
                pk_tuple_set(vec_args, 0, vec_arg);
            }
        }
        if (sb != NULL) {
            if (timed)
                POOL_SB_STORE(sb->start_ns, pool__now_ns());
            atomic_store_explicit(&sb->item, i, memory_order_release);
        }
        e.msg[0] = '\0';
        if (w->cfg->raw != NULL) {
            run_raw_item(w, &b, i, &e);
            continue;
        }
        pk_value_t *res = NULL;
        pk_err_t rc = run_item(w, &b, i, item_doc, vec_args, vec_arg, &res, &e);
        if (vec_ok || vec != NULL) {
            /* Vector reply wanted: convert now; remember failures. */
            if (rc == PK_OK) {
                pk_err_t crc;
                if (res_i64) {
                    int64_t x;
                    crc = pk_as_int(res, &x);
                    if (crc == PK_OK)
                        vec[i] = x;
                } else {
                    double d;
                    crc = pk_as_double(res, &d);
                    if (crc == PK_OK)
                        memcpy(&vec[i], &d, 8);
                }
                if (crc != PK_OK) {
                    rc = PK_ETYPE;
                    snprintf(e.msg, sizeof e.msg,
                             "TypeError: expected %s result, got %s",
                             res_i64 ? "an int" : "a float",
                             pk_type_name((pk_type_t)res->type));
                }
            }
            if (rc != PK_OK) {
                if (st == NULL) {
                    st = pk__calloc(n, 1);
                    msgs = pk__calloc(n, sizeof *msgs);
                }
                if (st == NULL || msgs == NULL) {
                    vec_ok = 0; /* fall back below with an error for all */
                    batch_rc = PK_ENOMEM;
                    snprintf(batch_msg, sizeof batch_msg, "out of memory");
                } else {
                    st[i] =
                        (uint8_t)(rc < PK__ERR_MAX && rc > 0 ? rc : PK_EFUNC);
                    msgs[i] = pk__strdup(e.msg);
                }
                vec_ok = 0;
            }
        } else if (rc == PK_OK) {
            put_value(w, res);
        } else {
            put_error(w, rc, e.msg);
        }
    }
    if (sb != NULL) {
        uint64_t t1 = pool__now_ns();
        atomic_fetch_add_explicit(&sb->items_done, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&sb->busy_ns, t1 - t0, memory_order_relaxed);
    }

    /* A vector reply that failed somewhere: records for every item. */
    if (vec != NULL && !vec_ok) {
        w->out.len = 0;
        w->oob.n = 0;
        pk_doc_t *d = NULL;
        if (pk_doc_new(&d) != PK_OK) {
            batch_rc = PK_ENOMEM;
            snprintf(batch_msg, sizeof batch_msg, "out of memory");
        }
        for (uint32_t i = 0; i < n; i++) {
            if (batch_rc != PK_OK) {
                put_error(w, batch_rc, batch_msg);
            } else if (st != NULL && st[i] != 0) {
                put_error(w, (pk_err_t)st[i], msgs[i]);
            } else {
                double dv;
                memcpy(&dv, &vec[i], 8);
                pk_value_t *v = res_i64 ? pk_int(d, vec[i]) : pk_float(d, dv);
                if (v == NULL)
                    put_error(w, PK_ENOMEM, "out of memory");
                else
                    put_value(w, v);
            }
        }
        pk_doc_free(&d);
        pk__free(vec);
        vec = NULL;
    }
    if (msgs != NULL)
        for (uint32_t i = 0; i < n; i++)
            pk__free(msgs[i]);
    pk__free(msgs);
    pk__free(st);
    pk_doc_free(&item_doc);
    pk__free(b.recs);
    pk__free(b.bufs);

    w->items_total += n;
    int retiring = 0;
    if (w->cfg->maxtasks && w->items_total >= w->cfg->maxtasks)
        retiring = 1;
    if (w->cfg->max_rss) {
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long sz, rss;
        if (f != NULL) {
            if (fscanf(f, "%lu %lu", &sz, &rss) == 2 &&
                (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE) >
                    w->cfg->max_rss)
                retiring = 1;
            fclose(f);
        }
    }

    pool__wire_hdr_t rh = {.kind = POOL_WIRE_RESULT,
                           .batch = h->batch,
                           .count = n,
                           .aux = pool__now_ns() - t0};
    if (retiring)
        rh.flags |= POOL_WIRE_F_RETIRING;
    int replied = 0;
    if (w->lane_task) {
        /* A retiring worker's reply must reach the master, so it knows the
         * exit is clean: like a reply too big for the lane, it goes as a
         * socket RESULT (WIRE first, so the caller waits on the master). */
        rh.nbufs = (uint32_t)w->oob.n;
        replied = vec == NULL && !retiring && lane_reply(w, &rh) == 0;
        if (!replied) {
            pool__lane_t *l = w->cfg->lane;
            lane_set(l, POOL_LANE_TAG(atomic_load(&l->state)) | POOL_LANE_WIRE);
        }
    }
    if (replied) {
        pk__free(vec);
    } else if (vec != NULL) {
        rh.flags |= res_i64 ? POOL_WIRE_F_VEC_I64 : POOL_WIRE_F_VEC_F64;
        send_hdr(w->sock, &rh, 1);
        send_frame(w->sock, vec, (size_t)n * 8, free_bytes, NULL, 0);
    } else {
        rh.nbufs = (uint32_t)w->oob.n;
        int zero_copy = 1;
        if (w->res_doc != NULL && w->oob.n > noob_kept) {
            if (holder_keep(w->holder, w->res_doc) == 0)
                w->res_doc = NULL;
            else
                zero_copy = 0; /* the doc dies below: copy its buffers */
        }
        uint8_t *tab = NULL;
        if (w->oob.n > 0 && w->cfg->shm != NULL) {
            tab = pk__malloc(w->oob.n * POOL_WIRE_SHM_ENT);
            if (tab != NULL && result_to_arena(w, tab) == 0) {
                pk__free(tab);
                tab = NULL;
            }
        }
        if (tab != NULL)
            rh.flags |= POOL_WIRE_F_SHM;
        send_hdr(w->sock, &rh, 1);
        /* The records buffer goes as is; a fresh one starts next batch. */
        uint8_t *rec = w->out.data;
        size_t rec_len = w->out.len;
        w->out.data = NULL;
        w->out.len = w->out.cap = 0;
        send_frame(w->sock, rec, rec_len, free_bytes, NULL, w->oob.n > 0);
        if (tab != NULL)
            send_frame(w->sock, tab, w->oob.n * POOL_WIRE_SHM_ENT, free_bytes,
                       NULL, 1);
        for (size_t k = 0; k < w->oob.n; k++) {
            if (w->oob.v[k].shm != POOL_WIRE_SHM_INLINE) {
                send_frame(w->sock, NULL, 0, NULL, NULL, k + 1 < w->oob.n);
                continue;
            }
            /* A placed array is freed when the batch ends, maybe before
             * ZeroMQ sent it: copy it. */
            int zc = zero_copy &&
                     placed_find(w, w->oob.v[k].data, w->oob.v[k].len) == NULL;
            if (zc)
                atomic_fetch_add(&w->holder->refs, 1);
            send_frame(w->sock, (void *)w->oob.v[k].data, w->oob.v[k].len,
                       zc ? holder_unref : NULL, w->holder, k + 1 < w->oob.n);
        }
    }
    holder_unref(NULL, w->holder);
    w->holder = NULL;
    pk_doc_free(&w->res_doc);
    placed_reset(w);
    if (sb != NULL)
        atomic_store_explicit(&sb->state,
                              retiring ? POOL_SB_EXITING : POOL_SB_IDLE,
                              memory_order_release);
    if (retiring)
        w->items_total = UINT64_MAX; /* the loop sees it and exits */
}

/* Runs the TASK a caller posted in the lane (state v, POSTED). */
static void lane_run(worker_t *w, uint32_t v)
{
    pool__lane_t *l = w->cfg->lane;
    atomic_store(&l->state, POOL_LANE_TAG(v) | POOL_LANE_RUNNING);
    size_t len = l->req_len;
    pool__wire_hdr_t h;
    pk_error_t e;
    pk_error_clear(&e);
    zmq_msg_t fr[3];
    size_t pos = POOL_WIRE_HDR_SIZE;
    int ok =
        len <= POOL_LANE_REQ && len >= POOL_WIRE_HDR_SIZE &&
        pool__wire_hdr_parse(l->req, POOL_WIRE_HDR_SIZE, &h, &e) == PK_OK &&
        h.kind == POOL_WIRE_TASK && h.nbufs == 0 &&
        !(h.flags & POOL_WIRE_F_SHM);
    zmq_msg_init_data(&fr[0], l->req, POOL_WIRE_HDR_SIZE, NULL, NULL);
    for (int i = 1; i < 3; i++) {
        const uint8_t *d = NULL;
        size_t n = 0;
        if (ok && pool__lane_get(l->req, len, &pos, &d, &n) != 0)
            ok = 0;
        zmq_msg_init_data(&fr[i], (void *)d, n, NULL, NULL);
    }
    if (ok && pos == len) {
        w->lane_task = 1;
        run_batch(w, &h, fr);
        w->lane_task = 0;
    } else {
        /* Only a corrupted mapping gets here: an empty reply makes the
         * caller fail the call as malformed. */
        LOG_ONCE(w, 28, "malformed lane request: %s",
                 e.msg[0] ? e.msg : "bad frame lengths");
        atomic_store_explicit(&l->rep_len, 0, memory_order_relaxed);
        lane_set(l, POOL_LANE_TAG(v) | POOL_LANE_DONE);
    }
    for (int i = 0; i < 3; i++)
        zmq_msg_close(&fr[i]);
}

static int sock_readable(worker_t *w)
{
    int ev = 0;
    size_t sz = sizeof ev;
    return zmq_getsockopt(w->sock, ZMQ_EVENTS, &ev, &sz) == 0 &&
           (ev & ZMQ_POLLIN);
}

/* While idle: polls the lane and runs what callers post there, until a
 * socket message waits, the worker retires, or spin_ns pass with nothing
 * to do.  Returns with the lane not ARMED, so nothing posted can wait on a
 * worker blocked in the socket. */
static void lane_idle(worker_t *w)
{
    pool__lane_t *l = w->cfg->lane;
    if (l == NULL || sock_readable(w))
        return;
    uint64_t end = pool__now_ns() + w->cfg->spin_ns;
    unsigned k = 0;
    for (;;) {
        uint32_t v = atomic_load_explicit(&l->state, memory_order_acquire);
        uint32_t st = POOL_LANE_ST(v);
        if (st == POOL_LANE_FREE) {
            atomic_compare_exchange_strong(&l->state, &v,
                                           POOL_LANE_TAG(v) | POOL_LANE_ARMED);
            continue;
        }
        if (st == POOL_LANE_POSTED) {
            lane_run(w, v);
            if (w->items_total == UINT64_MAX)
                return; /* retiring (its reply went as WIRE) */
            end = pool__now_ns() + w->cfg->spin_ns;
            continue;
        }
        if ((++k & 255) == 0 && (pool__now_ns() >= end || sock_readable(w)))
            break;
        pool__cpu_relax();
    }
    for (;;) {
        uint32_t v = atomic_load_explicit(&l->state, memory_order_acquire);
        uint32_t st = POOL_LANE_ST(v);
        if (st == POOL_LANE_ARMED) {
            if (atomic_compare_exchange_strong(
                    &l->state, &v, POOL_LANE_TAG(v) | POOL_LANE_FREE))
                return;
        } else if (st == POOL_LANE_CLAIMED) {
            pool__cpu_relax(); /* a caller is writing: it posts next */
        } else if (st == POOL_LANE_POSTED) {
            lane_run(w, v);
            if (w->items_total == UINT64_MAX)
                return;
        } else {
            return; /* FREE, or a reply its caller or the master collects */
        }
    }
}

/* ---- the loop ----------------------------------------------------------- */

/* Receives one whole multipart message into *frames (grown as needed). */
static int recv_msg(void *sock, zmq_msg_t **frames, size_t *cap, size_t *n)
{
    *n = 0;
    for (;;) {
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 8;
            zmq_msg_t *f = pk__realloc(*frames, nc * sizeof *f);
            if (f == NULL)
                return -1;
            *frames = f;
            *cap = nc;
        }
        zmq_msg_t *m = &(*frames)[*n];
        zmq_msg_init(m);
        int r;
        while ((r = zmq_msg_recv(m, sock, 0)) < 0 && errno == EINTR)
            ;
        if (r < 0) {
            zmq_msg_close(m);
            return -1;
        }
        (*n)++;
        if (!zmq_msg_more(m))
            return 0;
    }
}

/* pool_create asks for its workers before it binds the pool's socket (so
 * that they start meanwhile): connecting before the socket exists would
 * make ZeroMQ try again only after its reconnect interval.  So wait for
 * the socket file (a fresh directory's: it exists once bound), up to 5 s;
 * a pool that failed instead has this process killed meanwhile. */
static void wait_for_endpoint(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) != 0)
        return;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (access(endpoint + 6, F_OK) != 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec >= 5)
            return;
        usleep(100);
    }
}

/* The worker's ZeroMQ context and DEALER, made and (once the master's
 * socket exists) connected by pool__worker_preconnect, for this process
 * (pid) and worker; pool__worker_main takes them. */
static struct {
    void *ctx, *sock;
    pid_t pid;
    int slot;
    uint32_t gen;
    int connected;
} pre;

/* A context and a DEALER with the worker's routing id and options. */
static int open_socket(int slot, uint32_t gen, void **ctxp, void **sockp)
{
    void *ctx = zmq_ctx_new();
    if (ctx == NULL)
        return -1;
    zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (sock == NULL) {
        zmq_ctx_term(ctx);
        return -1;
    }
    uint8_t id[POOL_WIRE_ID_SIZE];
    pool__wire_id_encode(slot, gen, id);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_ROUTING_ID, id, sizeof id);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &zero, sizeof zero);
    /* The socket file exists (wait_for_endpoint) a few microseconds before
     * the master listens on it: a connection refused in between is tried
     * again soon, not after ZeroMQ's default 100 ms. */
    int retry_ms = 2;
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &retry_ms, sizeof retry_ms);
    *ctxp = ctx;
    *sockp = sock;
    return 0;
}

void pool__worker_preconnect(const char *endpoint, int slot, uint32_t gen)
{
    if (pre.sock != NULL && pre.pid == getpid())
        return;
    memset(&pre, 0, sizeof pre);
    if (open_socket(slot, gen, &pre.ctx, &pre.sock) != 0)
        return;
    pre.pid = getpid();
    pre.slot = slot;
    pre.gen = gen;
    /* Connect only if the master is there already: waiting for it is
     * pool__worker_main's, after the main's own start-up. */
    if (strncmp(endpoint, "ipc://", 6) == 0 && access(endpoint + 6, F_OK) == 0)
        pre.connected = zmq_connect(pre.sock, endpoint) == 0;
}

int pool__worker_main(const pool__worker_cfg_t *cfg)
{
    /* Big buffers come and go with every batch: keep freed memory in the
     * heap instead of returning it to the kernel and faulting it back in
     * (page faults, not copies, dominated large-array maps). */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    worker_t w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    void *ctx;
    int connected = 0;
    if (pre.sock != NULL && pre.pid == getpid() && pre.slot == cfg->slot &&
        pre.gen == cfg->gen) {
        ctx = pre.ctx;
        w.sock = pre.sock;
        connected = pre.connected;
    } else if (open_socket(cfg->slot, cfg->gen, &ctx, &w.sock) != 0) {
        return 1;
    }
    memset(&pre, 0, sizeof pre);
    if (!connected)
        wait_for_endpoint(cfg->endpoint);
    int rc = 1;
    if (!connected && zmq_connect(w.sock, cfg->endpoint) != 0) {
        fprintf(stderr, "picklepool: worker %d: cannot connect to %s: %s\n",
                cfg->slot, cfg->endpoint, zmq_strerror(errno));
        goto out;
    }
    if (cfg->sb != NULL)
        atomic_store_explicit(&cfg->sb->state, POOL_SB_IDLE,
                              memory_order_release);
    pool__wire_hdr_t ready = {
        .kind = POOL_WIRE_READY,
        .count = (uint32_t)(cfg->prefetch > 0 ? cfg->prefetch : 1),
        .aux = (uint64_t)getpid()};
    if (send_hdr(w.sock, &ready, 0) != 0)
        goto out;

    zmq_msg_t *frames = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        /* Polling starts after the first piece of work, not after READY:
         * while a pool starts, a spin here takes a core its other workers,
         * the fork server and the master need (and no caller has had a
         * result to follow up on yet). */
        if (w.items_total > 0)
            lane_idle(&w);
        if (w.items_total == UINT64_MAX) {
            rc = 0;
            break;
        }
        if (recv_msg(w.sock, &frames, &cap, &n) != 0) {
            rc = errno == ETERM ? 0 : 1;
            break;
        }
        pool__wire_hdr_t h;
        pk_error_t e;
        if (pool__wire_hdr_parse(zmq_msg_data(&frames[0]),
                                 zmq_msg_size(&frames[0]), &h, &e) != PK_OK) {
            LOG_ONCE(&w, 0, "dropped a malformed message: %s", e.msg);
        } else if (n != pool__wire_nframes(&h)) {
            LOG_ONCE(&w, h.kind, "dropped a %s with %zu frames, not %zu",
                     pool__wire_kind_name(h.kind), n, pool__wire_nframes(&h));
        } else if (h.kind == POOL_WIRE_TASK) {
            run_batch(&w, &h, frames);
        } else if (h.kind == POOL_WIRE_STOP) {
            rc = 0;
            for (size_t i = 0; i < n; i++)
                zmq_msg_close(&frames[i]);
            break;
        } else if (h.kind == POOL_WIRE_HEARTBEAT) {
            pool__wire_hdr_t hb = {.kind = POOL_WIRE_HEARTBEAT, .aux = h.aux};
            send_hdr(w.sock, &hb, 0);
        } else {
            LOG_ONCE(&w, h.kind, "ignored a %s message",
                     pool__wire_kind_name(h.kind));
        }
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
        if (w.items_total == UINT64_MAX) {
            rc = 0;
            break;
        }
    }
    pk__free(frames);
    /* Let the last RESULT (the retiring one) leave before the socket goes;
     * if the master is gone the fork server kills us anyway. */
    int linger = 5000;
    zmq_setsockopt(w.sock, ZMQ_LINGER, &linger, sizeof linger);
out:
    zmq_close(w.sock);
    zmq_ctx_term(ctx);
    for (int i = 0; i < 2; i++) {
        pk__free(w.calls[i].bytes);
        pk_doc_free(&w.calls[i].doc);
    }
    pk_buf_free(&w.out);
    pk__free(w.oob.v);
    return rc;
}
