/*
 * outcome.c - decoding outcomes (see outcome.h): a RESULT's records and
 * out-of-band buffers, raw vectors or a synthetic status, into pool_item_t
 * entries with values in a caller's doc.
 */
#include "pool/outcome.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "ipc/wire.h"
#include "picklepool/pickle.h"

static void close_frames(void *arg)
{
    pool__outcome_t *o = arg;
    o->job = NULL; /* the job reference was dropped already */
    pool__outcome_free(o);
}

static const char *doc_strdup(pk_doc_t *doc, const char *s, size_t len)
{
    char *c = pk_doc_alloc(doc, len + 1);
    if (c == NULL)
        return "out of memory";
    memcpy(c, s, len);
    c[len] = '\0';
    return c;
}

void pool__item_fail(pool_item_t *it, pk_doc_t *doc, pk_err_t st,
                     const char *msg, size_t len)
{
    it->status = st;
    it->value = NULL;
    it->error = doc_strdup(doc, msg, len);
}

size_t pool__outcome_decode(pool__outcome_t *o, pk_doc_t *doc,
                            pool_item_t *items)
{
    size_t failed = 0, count = o->count;
    for (size_t i = 0; i < count; i++) {
        items[i].index = o->first + i;
        items[i].value = NULL;
        items[i].error = NULL;
    }
    if (o->frames == NULL) {
        const char *m = o->msg ? o->msg : pk_strerror(o->status);
        const char *dm = doc_strdup(doc, m, strlen(m));
        for (size_t i = 0; i < count; i++) {
            items[i].status = o->status;
            items[i].error = dm;
        }
        failed = o->status != PK_OK ? count : 0;
        pool__outcome_free(o);
        return failed;
    }
    const uint8_t *data = zmq_msg_data(&o->frames[0]);
    size_t len = zmq_msg_size(&o->frames[0]);
    if (o->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        for (size_t i = 0; i < count; i++) {
            uint64_t bits = pk__ld64(data + i * 8);
            pk_value_t *v;
            if (o->flags & POOL_WIRE_F_VEC_I64) {
                v = pk_int(doc, (int64_t)bits);
            } else {
                double f;
                memcpy(&f, &bits, 8);
                v = pk_float(doc, f);
            }
            if (v == NULL) {
                pool__item_fail(&items[i], doc, PK_ENOMEM, "out of memory", 13);
                failed++;
            } else {
                items[i].status = PK_OK;
                items[i].value = v;
            }
        }
        pool__outcome_free(o);
        return failed;
    }
    pool__wire_rec_t *r = pk__malloc(count * sizeof *r);
    pk_buffer_t *bufs = pk__malloc(((size_t)o->nbufs + 1) * sizeof *bufs);
    int ok = r != NULL && bufs != NULL &&
             pool__wire_recs_parse(data, len, o->count, o->nbufs, 1, r, NULL) ==
                 PK_OK;
    if (ok && o->nbufs > 0) {
        /* Values will borrow the buffer frames: they live as long as doc
         * (the outcome's job reference is not needed for that). */
        pool__job_unref(o->job);
        o->job = NULL;
        if (pk_doc_on_free(doc, close_frames, o) != PK_OK) {
            ok = 0;
        }
    }
    if (!ok) {
        for (size_t i = 0; i < count; i++)
            pool__item_fail(&items[i], doc, PK_ENOMEM, "out of memory", 13);
        pk__free(r);
        pk__free(bufs);
        pool__outcome_free(o);
        return count;
    }
    for (uint32_t k = 0; k < o->nbufs; k++) {
        bufs[k].data = zmq_msg_data(&o->frames[1 + k]);
        bufs[k].len = zmq_msg_size(&o->frames[1 + k]);
        bufs[k].readonly = 1;
    }
    if (o->ents != NULL) {
        /* Views of the arena, released when doc is freed (close_frames). */
        for (uint32_t k = 0; k < o->nbufs; k++) {
            if (o->ents[k].off == POOL_WIRE_SHM_INLINE)
                continue;
            bufs[k].data = o->shm->base + o->ents[k].off;
            bufs[k].len = (size_t)o->ents[k].len;
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (r[i].status != 0) {
            pool__item_fail(&items[i], doc, (pk_err_t)r[i].status,
                            (const char *)r[i].data, r[i].len);
            failed++;
            continue;
        }
        pk_load_opts_t lo;
        pk_load_opts_init(&lo);
        lo.buffers = bufs + r[i].buf0;
        lo.nbuffers = r[i].nbufs;
        pk_value_t *v = NULL;
        pk_error_t e;
        pk_error_clear(&e);
        pk_err_t rc = pk_loads(doc, r[i].data, r[i].len, &lo, &v, NULL, &e);
        if (rc != PK_OK) {
            char m[300];
            int n =
                snprintf(m, sizeof m, "cannot unpickle the result: %s", e.msg);
            pool__item_fail(
                &items[i], doc, rc, m,
                (size_t)(n < (int)sizeof m ? n : (int)sizeof m - 1));
            failed++;
            continue;
        }
        items[i].status = PK_OK;
        items[i].value = v;
    }
    pk__free(r);
    pk__free(bufs);
    if (o->nbufs == 0)
        pool__outcome_free(o);
    return failed;
}

size_t pool__outcome_raw(pool__outcome_t *o, pk_doc_t *doc,
                         pool_raw_result_t *res, pk_buffer_t **bufs)
{
    size_t failed = 0, count = o->count;
    *bufs = NULL;
    for (size_t i = 0; i < count; i++) {
        memset(&res[i], 0, sizeof res[i]);
        res[i].index = o->first + i;
    }
    const char *why = NULL;
    pk_err_t st = PK_OK;
    if (o->frames == NULL) {
        st = o->status;
        why = o->msg ? o->msg : pk_strerror(o->status);
    } else if (o->flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
        /* raw vectors: each result is its 8 little-endian bytes */
        const uint8_t *data = zmq_msg_data(&o->frames[0]);
        for (size_t i = 0; i < count; i++) {
            res[i].data = data + i * 8;
            res[i].len = 8;
        }
        return 0;
    } else {
        pool__wire_rec_t *r = pk__malloc(count * sizeof *r);
        pk_buffer_t *b = pk__malloc(((size_t)o->nbufs + 1) * sizeof *b);
        if (r == NULL || b == NULL) {
            st = PK_ENOMEM;
            why = "out of memory";
        } else if (pool__wire_recs_parse(zmq_msg_data(&o->frames[0]),
                                         zmq_msg_size(&o->frames[0]), o->count,
                                         o->nbufs, 1, r, NULL) != PK_OK) {
            st = PK_EPROTO; /* checked by the master: cannot happen */
            why = "malformed result records";
        }
        if (st != PK_OK) {
            pk__free(r);
            pk__free(b);
        } else {
            for (uint32_t k = 0; k < o->nbufs; k++) {
                int in_arena =
                    o->ents != NULL && o->ents[k].off != POOL_WIRE_SHM_INLINE;
                b[k].data = in_arena ? o->shm->base + o->ents[k].off
                                     : zmq_msg_data(&o->frames[1 + k]);
                b[k].len = in_arena ? (size_t)o->ents[k].len
                                    : zmq_msg_size(&o->frames[1 + k]);
                b[k].readonly = 1;
            }
            for (size_t i = 0; i < count; i++) {
                if (r[i].status != 0) {
                    res[i].status = (pk_err_t)r[i].status;
                    res[i].error =
                        doc_strdup(doc, (const char *)r[i].data, r[i].len);
                    failed++;
                } else {
                    res[i].data = r[i].data;
                    res[i].len = r[i].len;
                    res[i].bufs = b + r[i].buf0;
                    res[i].nbufs = r[i].nbufs;
                }
            }
            pk__free(r);
            *bufs = b;
            return failed;
        }
    }
    const char *m = doc_strdup(doc, why, strlen(why));
    for (size_t i = 0; i < count; i++) {
        res[i].status = st;
        res[i].error = m;
    }
    return st != PK_OK ? count : 0;
}
