/*
 * apply.c - pool_apply_async and futures (pool.h): one call, pickled in
 * band at once (the caller may free its arguments), offered to an idle
 * worker's fast lane (lane_call.c) and otherwise sent like a one-item map.
 */
#include "picklepool/pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "ipc/wire.h"
#include "pool/driver.h"
#include "pool/outcome.h"
#include "pool/wait.h"

static const pool__src_ops_t src_call = {.flags = POOL_SRC_SINGLE,
                                         .next = pool__src_items_next};

/* The raw call's source: its one item, then the end. */
static pk_err_t one_raw_next(pool__drive_t *d, pool_raw_item_t *item,
                             pk_error_t *err)
{
    PK_UNUSED(err);
    if (d->pos >= 1)
        return PK_EOF;
    *item = *(const pool_raw_item_t *)d->in.raw.ctx;
    return PK_OK;
}

static const pool__src_ops_t src_call_raw = {.flags = POOL_SRC_SINGLE,
                                             .next_raw = one_raw_next};

struct pool_future {
    pool__drive_t d;
    int done;
    int raw;       /* made by pool_apply_raw */
    pk_doc_t *doc; /* the outcome's, made with the future so that waiting
                      never has to allocate it (and lose the outcome) */
    pool_item_t item;
    /* raw futures: the result points into cur (and cbufs) */
    pool__outcome_t *cur;
    pk_buffer_t *cbufs;
    pool_raw_result_t rres;
};

static pool_future_t *future_new(pk_error_t *err)
{
    pool_future_t *f = pk__calloc(1, sizeof *f);
    if (f == NULL || pk_doc_new(&f->doc) != PK_OK) {
        pk__free(f);
        pk__err(err, PK_ENOMEM, "out of memory");
        return NULL;
    }
    return f;
}

static void future_free(pool_future_t *f)
{
    if (f->d.j != NULL) {
        pool__drive_cancel(&f->d);
        pool__drive_end(&f->d);
    }
    pool__outcome_free(f->cur);
    pk__free(f->cbufs);
    pk_doc_free(&f->doc);
    pk__free(f);
}

pk_err_t pool_apply_raw(pool_t *p, const void *call, size_t call_len,
                        const pool_raw_item_t *item, pool_future_t **fut,
                        pk_error_t *err)
{
    if (p == NULL || item == NULL || fut == NULL ||
        (call == NULL && call_len > 0))
        return pk__err(err, PK_EINVAL, "pool_apply_raw: NULL argument");
    pool_future_t *f = future_new(err);
    if (f == NULL)
        return PK_ENOMEM;
    pool_raw_item_t frame = {.data = call, .len = call_len};
    pk_err_t rc = pool__drive_start(&f->d, p, POOL_JOB_APPLY, 0, &src_call_raw,
                                    NULL, NULL, NULL, &frame, NULL, 1, err);
    if (rc != PK_OK) {
        pk_doc_free(&f->doc);
        pk__free(f);
        return rc;
    }
    f->raw = 1;
    f->d.borrows = item->nbufs > 0;
    f->d.in.raw.ctx = (void *)item;
    pool__drive_feed(&f->d); /* the bytes are copied now */
    f->d.in.raw.ctx = NULL;
    if (f->d.input_rc != PK_OK) {
        rc = f->d.input_rc;
        if (err != NULL)
            *err = f->d.input_err;
        future_free(f);
        return rc;
    }
    *fut = f;
    return PK_OK;
}

pk_err_t pool_apply_async(pool_t *p, const char *module, const char *func,
                          const pk_value_t *args, const pk_value_t *kwargs,
                          pool_future_t **fut, pk_error_t *err)
{
    if (p == NULL || args == NULL || fut == NULL)
        return pk__err(err, PK_EINVAL, "pool_apply_async: NULL argument");
    if (args->type != PK_TUPLE)
        return pk__err(err, PK_EINVAL, "args must be a tuple, not %s",
                       pk_type_name((pk_type_t)args->type));
    pool_future_t *f = future_new(err);
    if (f == NULL)
        return PK_ENOMEM;
    pk_err_t rc =
        pool__drive_start(&f->d, p, POOL_JOB_APPLY, POOL_WIRE_F_STARARGS,
                          &src_call, module, func, kwargs, NULL, NULL, 1, err);
    if (rc != PK_OK) {
        pk_doc_free(&f->doc);
        pk__free(f);
        return rc;
    }
    const pk_value_t *items[1] = {args};
    f->d.in.items = items;
    pool__drive_feed(&f->d); /* pickled in band now: the caller may free args */
    f->d.in.items = NULL;
    *fut = f;
    return PK_OK;
}

/* Waits for the outcome and opens it into f->item or f->rres. */
static pk_err_t future_settle(pool_future_t *f, double timeout)
{
    struct timespec dl = pool__deadline_in(timeout);
    uint64_t dl_ns =
        timeout < 0 ? 0
                    : (uint64_t)dl.tv_sec * 1000000000u + (uint64_t)dl.tv_nsec;
    while (!f->done) {
        pool__outcome_t *got = NULL;
        pk_error_t e;
        pk_err_t rc = PK_OK;
        pool__intr_enter();
        if (f->d.lane.slot >= 0) {
            rc = pool__lane_wait(f->d.p, &f->d.lane, dl_ns, &pool__intr_flag,
                                 &got);
            if (got != NULL)
                f->d.completed += got->count;
        }
        if (rc == PK_OK && got == NULL)
            rc = pool__drive_pump(&f->d, &got, timeout < 0 ? NULL : &dl, &e);
        pool__intr_leave();
        if (rc == PK_ETIMEDOUT || rc == PK_EINTR)
            return rc;
        f->done = 1;
        f->item.index = 0;
        if (rc != PK_OK || got == NULL) {
            pk_err_t st = rc != PK_OK ? rc : PK_ECANCELED;
            const char *m = rc != PK_OK ? e.msg : pk_strerror(st);
            pool__item_fail(&f->item, f->doc, st, m, strlen(m));
            f->rres.status = st;
            f->rres.error = f->item.error;
        } else {
            pool__outcome_t *rest = got->next;
            got->next = NULL;
            if (f->raw) {
                pool__outcome_raw(got, f->doc, &f->rres, &f->cbufs);
                f->cur = got;
            } else {
                pool__outcome_decode(got, f->doc, &f->item);
            }
            while (rest) {
                pool__outcome_t *n = rest->next;
                pool__outcome_free(rest);
                rest = n;
            }
        }
        pool__drive_end(&f->d);
    }
    return PK_OK;
}

pk_err_t pool_future_wait(pool_future_t *f, double timeout, pool_item_t *item)
{
    if (f == NULL || item == NULL || f->raw)
        return PK_EINVAL;
    pk_err_t rc = future_settle(f, timeout);
    if (rc == PK_OK)
        *item = f->item;
    return rc;
}

pk_err_t pool_future_wait_raw(pool_future_t *f, double timeout,
                              pool_raw_result_t *res)
{
    if (f == NULL || res == NULL || !f->raw)
        return PK_EINVAL;
    pk_err_t rc = future_settle(f, timeout);
    if (rc == PK_OK)
        *res = f->rres;
    return rc;
}

void pool_future_free(pool_future_t **fp)
{
    if (fp == NULL || *fp == NULL)
        return;
    pool_future_t *f = *fp;
    *fp = NULL;
    future_free(f);
}
