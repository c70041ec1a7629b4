/*
 * imap.c - pool_imap and pool_imap_unordered (pool.h): a lazy map over a
 * pull function.  The driver keeps a bounded window in flight; the iterator
 * keeps a reorder buffer (outcomes sorted by first index) and decodes one
 * outcome's items at a time as the caller asks for them.
 */
#include "picklepool/pool.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "pool/driver.h"
#include "pool/outcome.h"
#include "pool/scaleout.h"
#include "pool/wait.h"

/* The source: the caller's pull function, whose items are built in the
 * batch's doc and freed with it once pickled. */
static pk_err_t pull_next(pool__drive_t *d, pk_doc_t *doc, const pk_value_t **v,
                          pk_error_t *err)
{
    PK_UNUSED(err);
    pk_value_t *x = NULL;
    pk_err_t rc = d->in.pull.fn(d->in.pull.ctx, doc, &x);
    if (rc != PK_OK)
        return rc;
    if (x == NULL)
        return PK_EOF;
    *v = x;
    return PK_OK;
}

static const pool__src_ops_t src_pull = {
    .flags = POOL_SRC_STREAM | POOL_SRC_DOC, .next = pull_next};

struct pool_iter {
    pool__drive_t d;
    int ordered;
    int raw;                  /* a raw map: read with pool_iter_next_raw */
    pool__outcome_t *pending; /* sorted by first when ordered */
    size_t next_index;
    /* the outcome being handed out, one item per call */
    pk_doc_t *cdoc;
    pool_item_t *citems;     /* decoded maps */
    pool_raw_result_t *craw; /* raw maps: pointing into cur */
    pk_buffer_t *cbufs;      /* raw maps: buffer table of cur */
    pool__outcome_t *cur;    /* raw maps */
    size_t ccount, cpos;
    int ended;
    pk_err_t final;
    pk_error_t ferr;
};

static pk_err_t iter_start(pool_t *p, pool_iter_t **itp, int ordered,
                           uint16_t flags, const pool__src_ops_t *src,
                           const char *module, const char *func,
                           const pool_raw_item_t *raw_call,
                           const pool_call_opts_t *copts, pk_error_t *err)
{
    pool_iter_t *it = pk__calloc(1, sizeof *it);
    if (it == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pk_err_t rc = pool__drive_start(
        &it->d, p, ordered ? POOL_JOB_IMAP : POOL_JOB_IMAP_UNORDERED, flags,
        src, module, func, NULL, raw_call, copts, SIZE_MAX, err);
    if (rc != PK_OK) {
        pk__free(it);
        return rc;
    }
    it->ordered = ordered;
    it->raw = raw_call != NULL;
    *itp = it;
    return PK_OK;
}

static pk_err_t imap_start(pool_t *p, const char *module, const char *func,
                           pool_next_fn next, void *ctx,
                           const pool_call_opts_t *copts, pool_iter_t **itp,
                           int ordered, pk_error_t *err)
{
    if (p == NULL || next == NULL || itp == NULL)
        return pk__err(err, PK_EINVAL, "pool_imap: NULL argument");
    pool_iter_t *it = NULL;
    pk_err_t rc = iter_start(p, &it, ordered, 0, &src_pull, module, func, NULL,
                             copts, err);
    if (rc != PK_OK)
        return rc;
    it->d.in.pull.fn = next;
    it->d.in.pull.ctx = ctx;
    pool__drive_feed(&it->d); /* prime the window */
    *itp = it;
    return PK_OK;
}

/* The raw source: the caller's function gives bytes and buffers, which may
 * borrow its memory (so the drive borrows). */
static pk_err_t raw_next(pool__drive_t *d, pool_raw_item_t *item,
                         pk_error_t *err)
{
    PK_UNUSED(err);
    memset(item, 0, sizeof *item);
    return d->in.raw.fn(d->in.raw.ctx, item);
}

static const pool__src_ops_t src_raw = {.flags = POOL_SRC_STREAM,
                                        .next_raw = raw_next};

pk_err_t pool__imap_raw_flags(pool_t *p, const void *call, size_t call_len,
                              uint16_t flags, pool_raw_next_fn next, void *ctx,
                              int ordered, const pool_call_opts_t *copts,
                              pool_iter_t **itp, pk_error_t *err)
{
    if (p == NULL || next == NULL || itp == NULL ||
        (call == NULL && call_len > 0))
        return pk__err(err, PK_EINVAL, "pool_imap_raw: NULL argument");
    if (flags & (uint16_t)~POOL_WIRE_F_STARARGS)
        return pk__err(err, PK_EINVAL, "pool_imap_raw: flags 0x%04x",
                       (unsigned)flags);
    pool_raw_item_t frame = {.data = call, .len = call_len};
    pool_iter_t *it = NULL;
    pk_err_t rc = iter_start(p, &it, ordered != 0, flags, &src_raw, NULL, NULL,
                             &frame, copts, err);
    if (rc != PK_OK)
        return rc;
    it->d.in.raw.fn = next;
    it->d.in.raw.ctx = ctx;
    it->d.borrows = 1;
    pool__drive_feed(&it->d);
    *itp = it;
    return PK_OK;
}

pk_err_t pool_imap_raw(pool_t *p, const void *call, size_t call_len,
                       pool_raw_next_fn next, void *ctx, int ordered,
                       const pool_call_opts_t *copts, pool_iter_t **itp,
                       pk_error_t *err)
{
    return pool__imap_raw_flags(p, call, call_len, 0, next, ctx, ordered, copts,
                                itp, err);
}

pk_err_t pool_imap(pool_t *p, const char *module, const char *func,
                   pool_next_fn next, void *ctx, const pool_call_opts_t *copts,
                   pool_iter_t **it, pk_error_t *err)
{
    return imap_start(p, module, func, next, ctx, copts, it, 1, err);
}

pk_err_t pool_imap_unordered(pool_t *p, const char *module, const char *func,
                             pool_next_fn next, void *ctx,
                             const pool_call_opts_t *copts, pool_iter_t **it,
                             pk_error_t *err)
{
    return imap_start(p, module, func, next, ctx, copts, it, 0, err);
}

static void pending_add(pool_iter_t *it, pool__outcome_t *o)
{
    pool__outcome_t **pp = &it->pending;
    if (it->ordered)
        while (*pp != NULL && (*pp)->first < o->first)
            pp = &(*pp)->next;
    else
        while (*pp != NULL)
            pp = &(*pp)->next;
    o->next = *pp;
    *pp = o;
}

static void chunk_clear(pool_iter_t *it)
{
    pk_doc_free(&it->cdoc);
    pk__free(it->citems);
    pk__free(it->craw);
    pk__free(it->cbufs);
    pool__outcome_free(it->cur);
    it->citems = NULL;
    it->craw = NULL;
    it->cbufs = NULL;
    it->cur = NULL;
    it->ccount = it->cpos = 0;
}

/* Ends the iteration with `code` (and its detail). */
static void iter_end(pool_iter_t *it, pk_err_t code, const pk_error_t *e)
{
    it->ended = 1;
    it->final = code;
    if (e != NULL)
        it->ferr = *e;
    if (code != PK_EOF)
        pool__drive_cancel(&it->d);
    pool__drive_end(&it->d);
}

/* Opens the outcome that comes next (in input order when ordered) as the
 * current chunk, waiting until the deadline (NULL: none) for it.  Returns
 * PK_OK, PK_ETIMEDOUT, or (it->ended set) the map's end or error. */
static pk_err_t open_next(pool_iter_t *it, const struct timespec *dl)
{
    for (;;) {
        if (it->ended)
            return it->final;
        pool__outcome_t *o = it->pending;
        if (o != NULL && (!it->ordered || o->first == it->next_index)) {
            it->pending = o->next;
            o->next = NULL;
            size_t count = o->count;
            it->d.held -= count;
            it->next_index = o->first + count;
            int ok = pk_doc_new(&it->cdoc) == PK_OK;
            if (ok && it->raw) {
                it->craw = pk__malloc((size_t)o->count * sizeof *it->craw);
                ok = it->craw != NULL;
                if (ok) {
                    pool__outcome_raw(o, it->cdoc, it->craw, &it->cbufs);
                    it->cur = o;
                    o = NULL;
                }
            } else if (ok) {
                it->citems = pk__malloc((size_t)o->count * sizeof *it->citems);
                ok = it->citems != NULL;
                if (ok) {
                    pool__outcome_decode(o, it->cdoc, it->citems);
                    o = NULL;
                }
            }
            if (!ok) {
                pool__outcome_free(o);
                chunk_clear(it);
                iter_end(it, PK_ENOMEM, NULL);
                continue;
            }
            it->ccount = count;
            return PK_OK;
        }
        if (it->d.input_rc != PK_OK) {
            iter_end(it, it->d.input_rc, &it->d.input_err);
            continue;
        }
        pool__outcome_t *got = NULL;
        pk_error_t e;
        pool__intr_enter();
        pk_err_t rc = pool__drive_pump(&it->d, &got, dl, &e);
        pool__intr_leave();
        if (rc == PK_ETIMEDOUT)
            return rc;
        if (rc != PK_OK) {
            iter_end(it, rc, &e);
            continue;
        }
        if (got == NULL) {
            if (it->pending != NULL) {
                /* Cannot happen: every index is covered once. */
                it->pending->first = it->next_index;
                continue;
            }
            if (it->d.input_rc != PK_OK)
                continue;
            iter_end(it, PK_EOF, NULL);
            continue;
        }
        while (got != NULL) {
            pool__outcome_t *n = got->next;
            it->d.held += got->count; /* the window counts them until
                                         they are delivered */
            pending_add(it, got);
            got = n;
        }
    }
}

/* Makes the current chunk hold an item at it->cpos, opening outcomes as
 * they come: PK_OK, or the map's end, error or timeout. */
static pk_err_t iter_step(pool_iter_t *it, double timeout)
{
    struct timespec dl = pool__deadline_in(timeout);
    while (it->cpos >= it->ccount) {
        chunk_clear(it);
        pk_err_t rc = open_next(it, timeout < 0 ? NULL : &dl);
        if (rc != PK_OK)
            return rc;
    }
    return PK_OK;
}

pk_err_t pool_iter_next(pool_iter_t *it, pool_item_t *item, double timeout)
{
    if (it == NULL || item == NULL || it->raw)
        return PK_EINVAL;
    pk_err_t rc = iter_step(it, timeout);
    if (rc == PK_OK)
        *item = it->citems[it->cpos++];
    return rc;
}

pk_err_t pool_iter_next_raw(pool_iter_t *it, pool_raw_result_t *res,
                            double timeout)
{
    if (it == NULL || res == NULL || !it->raw)
        return PK_EINVAL;
    pk_err_t rc = iter_step(it, timeout);
    if (rc == PK_OK)
        *res = it->craw[it->cpos++];
    return rc;
}

pk_err_t pool_iter_error(const pool_iter_t *it, pk_error_t *err)
{
    if (it == NULL)
        return pk__err(err, PK_EINVAL, "pool_iter_error: NULL iterator");
    if (!it->ended || it->final == PK_EOF)
        return PK_OK;
    if (err != NULL && it->ferr.code == it->final)
        *err = it->ferr;
    else
        pk__err(err, it->final, "%s", pk_errname(it->final));
    return it->final;
}

void pool_iter_free(pool_iter_t **itp)
{
    if (itp == NULL || *itp == NULL)
        return;
    pool_iter_t *it = *itp;
    *itp = NULL;
    chunk_clear(it);
    while (it->pending != NULL) {
        pool__outcome_t *n = it->pending->next;
        pool__outcome_free(it->pending);
        it->pending = n;
    }
    if (it->d.j != NULL) {
        pool__drive_cancel(&it->d);
        pool__drive_end(&it->d);
    }
    pk__free(it);
}
