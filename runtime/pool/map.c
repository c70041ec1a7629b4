/*
 * map.c - pool_map and the convenience maps over plain C data (pool.h):
 * their input sources for the driver (driver.h), and sinks that decode
 * each outcome into the results or straight into the caller's arrays.
 */
#include "picklepool/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "ipc/wire.h"
#include "pool/driver.h"
#include "pool/outcome.h"

static const pool__src_ops_t src_values = {.next = pool__src_items_next};

/* ---- pool_map and results ---------------------------------------------- */

struct pool_results {
    size_t n, nfailed;
    pool_item_t *items;
    pk_doc_t *doc;
};

size_t pool_results_len(const pool_results_t *r)
{
    return r->n;
}
size_t pool_results_failed(const pool_results_t *r)
{
    return r->nfailed;
}

const pool_item_t *pool_results_item(const pool_results_t *r, size_t i)
{
    return i < r->n ? &r->items[i] : NULL;
}

void pool_results_free(pool_results_t **rp)
{
    if (rp == NULL || *rp == NULL)
        return;
    pool_results_t *r = *rp;
    *rp = NULL;
    pk_doc_free(&r->doc);
    pk__free(r->items);
    pk__free(r);
}

typedef struct map_sink {
    pool_results_t *r;
} map_sink_t;

static void map_sink(void *ctx, pool__outcome_t *o)
{
    map_sink_t *s = ctx;
    if (o->first + o->count > s->r->n) {
        pool__outcome_free(o);
        return;
    }
    s->r->nfailed += pool__outcome_decode(o, s->r->doc, s->r->items + o->first);
}

pk_err_t pool_map(pool_t *p, const char *module, const char *func,
                  const pk_value_t *const *items, size_t n,
                  const pool_call_opts_t *copts, pool_results_t **out,
                  pk_error_t *err)
{
    if (p == NULL || out == NULL || (items == NULL && n > 0))
        return pk__err(err, PK_EINVAL, "pool_map: NULL argument");
    pool_results_t *r = pk__calloc(1, sizeof *r);
    if (r == NULL || pk_doc_new(&r->doc) != PK_OK ||
        (r->items = pk__calloc(n ? n : 1, sizeof *r->items)) == NULL) {
        pool_results_free(&r);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    r->n = n;
    pool__drive_t d;
    pk_err_t rc = pool__drive_start(&d, p, POOL_JOB_MAP, 0, &src_values, module,
                                    func, NULL, NULL, copts, n, err);
    if (rc != PK_OK) {
        pool_results_free(&r);
        return rc;
    }
    d.in.items = items;
    d.borrows = 1;
    map_sink_t s = {r};
    rc = pool__drive_run(&d, map_sink, &s, err);
    if (rc != PK_OK) {
        pool_results_free(&r);
        return rc;
    }
    *out = r;
    return PK_OK;
}

/* ---- convenience maps: sources straight from the caller's C data -------- */

enum vec_kind { VEC_I64, VEC_F64, VEC_F32 };

/* int64 / float64 vectors: batches point into the caller's array, and
 * workers read the numbers without a pickle per item. */
static pool__batch_t *raw_batch(pool__drive_t *d, size_t chunk)
{
    pool__job_t *j = d->j;
    size_t c = d->n - d->pos < chunk ? d->n - d->pos : chunk;
    pool__batch_t *b = pk__calloc(1, sizeof *b);
    pool__blob_t *blob = b ? pool__blob_new(j) : NULL;
    if (blob == NULL) {
        pk__free(b);
        return NULL;
    }
    b->job = j;
    pool__job_ref(j);
    b->blob = blob;
    b->first = d->pos;
    b->count = (uint32_t)c;
    b->flags = j->flags;
    b->items = (const uint8_t *)d->in.vec + d->pos * 8;
    b->items_len = c * 8;
    d->pos += c;
    return b;
}

static const pool__src_ops_t src_raw = {.raw_batch = raw_batch};

/* float32 arrays: each a borrowed, read-only ndarray pickled out of band
 * (into the arena when big). */
static pk_err_t f32_next(pool__drive_t *d, pk_doc_t *doc, const pk_value_t **v,
                         pk_error_t *err)
{
    static const pk_dtype_t f4 = {'f', '<', 0, 4};
    if (d->pos >= d->n)
        return PK_EOF;
    int64_t shape = (int64_t)d->in.f32.lens[d->pos];
    *v = pk_ndarray(doc, &f4, 1, &shape, (void *)d->in.f32.arrays[d->pos],
                    PK_VF_BORROWED | PK_VF_READONLY);
    return *v != NULL ? PK_OK : pk__err(err, PK_ENOMEM, "out of memory");
}

static size_t f32_bytes(const pool__drive_t *d)
{
    return d->in.f32.lens[d->pos] * 4;
}

static const pool__src_ops_t src_f32 = {
    .flags = POOL_SRC_DOC, .next = f32_next, .item_bytes = f32_bytes};

typedef struct vec_sink {
    enum vec_kind kind;
    void *out;
    float *const *f32_out;
    const size_t *lens;
    pk_err_t *status; /* per item, or NULL */
    size_t nfailed;
    size_t first_fail; /* lowest failed index */
    pk_err_t first_rc;
    char first_msg[256];
    pk_doc_t *scratch;
} vec_sink_t;

static void vec_fail(vec_sink_t *s, size_t idx, pk_err_t rc, const char *msg,
                     size_t len)
{
    s->nfailed++;
    if (s->status != NULL)
        s->status[idx] = rc;
    if (s->first_rc == PK_OK || idx < s->first_fail) {
        s->first_fail = idx;
        s->first_rc = rc;
        if (len >= sizeof s->first_msg)
            len = sizeof s->first_msg - 1;
        memcpy(s->first_msg, msg, len);
        s->first_msg[len] = '\0';
    }
}

static void vec_store(vec_sink_t *s, size_t idx, const pk_value_t *v)
{
    if (s->kind == VEC_I64) {
        int64_t x;
        if (pk_as_int(v, &x) == PK_OK)
            ((int64_t *)s->out)[idx] = x;
        else
            vec_fail(s, idx, PK_ETYPE, "TypeError: expected an int result", 34);
    } else if (s->kind == VEC_F64) {
        double x;
        if (pk_as_double(v, &x) == PK_OK)
            ((double *)s->out)[idx] = x;
        else
            vec_fail(s, idx, PK_ETYPE, "TypeError: expected a float result",
                     35);
    } else {
        const pk_ndarray_t *nd = v->type == PK_NDARRAY ? v->u.nd : NULL;
        if (nd == NULL || nd->dtype.kind != 'f' || nd->dtype.itemsize != 4 ||
            nd->dtype.byteorder == '>' || nd->nbytes != s->lens[idx] * 4) {
            char m[160];
            int n = snprintf(m, sizeof m,
                             "TypeError: expected a float32 array of %zu "
                             "items, got %s",
                             s->lens[idx], pk_type_name((pk_type_t)v->type));
            vec_fail(s, idx, PK_ETYPE, m, (size_t)n);
        } else if (nd->ndim > 1 && (v->flags & PK_VF_FORTRAN)) {
            vec_fail(s, idx, PK_ETYPE,
                     "TypeError: expected a C-contiguous result", 41);
        } else if (nd->nbytes) {
            memcpy(s->f32_out[idx], nd->data, nd->nbytes);
        }
    }
}

static void vec_sink(void *ctx, pool__outcome_t *o)
{
    vec_sink_t *s = ctx;
    if (o->frames == NULL) {
        const char *m = o->msg ? o->msg : pk_strerror(o->status);
        for (uint32_t i = 0; i < o->count; i++)
            vec_fail(s, o->first + i, o->status, m, strlen(m));
        pool__outcome_free(o);
        return;
    }
    if (o->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        /* Raw results straight into the output array. */
        memcpy((uint8_t *)s->out + o->first * 8, zmq_msg_data(&o->frames[0]),
               (size_t)o->count * 8);
        pool__outcome_free(o);
        return;
    }
    /* Records: decode each result on its own into a scratch doc. */
    pool_item_t *items = pk__malloc((size_t)o->count * sizeof *items);
    pk_doc_t *doc = NULL;
    if (items == NULL || pk_doc_new(&doc) != PK_OK) {
        for (uint32_t i = 0; i < o->count; i++)
            vec_fail(s, o->first + i, PK_ENOMEM, "out of memory", 13);
        pk__free(items);
        pool__outcome_free(o);
        return;
    }
    size_t first = o->first, count = o->count;
    pool__outcome_decode(o, doc, items);
    for (size_t i = 0; i < count; i++) {
        if (items[i].status == PK_OK)
            vec_store(s, first + i, items[i].value);
        else
            vec_fail(s, first + i, items[i].status, items[i].error,
                     strlen(items[i].error));
    }
    pk_doc_free(&doc);
    pk__free(items);
}

static pk_err_t vec_map(pool_t *p, const char *module, const char *func,
                        enum vec_kind kind, const void *in, void *out,
                        const float *const *f32_in, float *const *f32_out,
                        const size_t *lens, size_t n,
                        const pool_call_opts_t *copts, pk_err_t *status,
                        size_t *nfailed, pk_error_t *err)
{
    if (nfailed != NULL)
        *nfailed = 0;
    if (p == NULL ||
        (n > 0 &&
         (kind == VEC_F32 ? (f32_in == NULL || f32_out == NULL || lens == NULL)
                          : (in == NULL || out == NULL))))
        return pk__err(err, PK_EINVAL, "NULL argument");
    static const uint16_t flags[] = {
        [VEC_I64] = POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_RES_I64,
        [VEC_F64] = POOL_WIRE_F_VEC_F64 | POOL_WIRE_F_RES_F64,
        [VEC_F32] = 0};
    static const pool__src_ops_t *const srcs[] = {
        [VEC_I64] = &src_raw, [VEC_F64] = &src_raw, [VEC_F32] = &src_f32};
    pool__drive_t d;
    pk_err_t rc =
        pool__drive_start(&d, p, POOL_JOB_MAP, flags[kind], srcs[kind], module,
                          func, NULL, NULL, copts, n, err);
    if (rc != PK_OK)
        return rc;
    if (status != NULL)
        for (size_t i = 0; i < n; i++)
            status[i] = PK_OK;
    if (kind == VEC_F32) {
        d.in.f32.arrays = f32_in;
        d.in.f32.lens = lens;
    } else {
        d.in.vec = in;
    }
    d.borrows = 1;
    vec_sink_t s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.out = out;
    s.f32_out = f32_out;
    s.lens = lens;
    s.status = status;
    rc = pool__drive_run(&d, vec_sink, &s, err);
    if (rc != PK_OK)
        return rc;
    if (nfailed != NULL)
        *nfailed = s.nfailed;
    if (s.nfailed > 0)
        pk__err(err, s.first_rc, "%zu item%s failed; item %zu: %s", s.nfailed,
                s.nfailed == 1 ? "" : "s", s.first_fail, s.first_msg);
    return PK_OK;
}

pk_err_t pool_map_i64(pool_t *p, const char *module, const char *func,
                      const int64_t *in, int64_t *out, size_t n,
                      const pool_call_opts_t *copts, pk_err_t *status,
                      size_t *nfailed, pk_error_t *err)
{
    return vec_map(p, module, func, VEC_I64, in, out, NULL, NULL, NULL, n,
                   copts, status, nfailed, err);
}

pk_err_t pool_map_f64(pool_t *p, const char *module, const char *func,
                      const double *in, double *out, size_t n,
                      const pool_call_opts_t *copts, pk_err_t *status,
                      size_t *nfailed, pk_error_t *err)
{
    return vec_map(p, module, func, VEC_F64, in, out, NULL, NULL, NULL, n,
                   copts, status, nfailed, err);
}

pk_err_t pool_map_f32_arrays(pool_t *p, const char *module, const char *func,
                             const float *const *in, float *const *out,
                             const size_t *lens, size_t n,
                             const pool_call_opts_t *copts, pk_err_t *status,
                             size_t *nfailed, pk_error_t *err)
{
    return vec_map(p, module, func, VEC_F32, NULL, NULL, in, out, lens, n,
                   copts, status, nfailed, err);
}
