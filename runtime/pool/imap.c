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
    pool__outcome_t *pending; /* sorted by first when ordered */
    size_t next_index;
    pk_doc_t *cdoc;
    pool_item_t *citems;
    size_t ccount, cpos;
    int ended;
    pk_err_t final;
    pk_error_t ferr;
};

static pk_err_t imap_start(pool_t *p, const char *module, const char *func,
                           pool_next_fn next, void *ctx,
                           const pool_call_opts_t *copts, pool_iter_t **itp,
                           int ordered, pk_error_t *err)
{
    if (p == NULL || next == NULL || itp == NULL)
        return pk__err(err, PK_EINVAL, "pool_imap: NULL argument");
    pool_iter_t *it = pk__calloc(1, sizeof *it);
    if (it == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    pk_err_t rc = pool__drive_start(
        &it->d, p, ordered ? POOL_JOB_IMAP : POOL_JOB_IMAP_UNORDERED, 0,
        &src_pull, module, func, NULL, copts, SIZE_MAX, err);
    if (rc != PK_OK) {
        pk__free(it);
        return rc;
    }
    it->d.in.pull.fn = next;
    it->d.in.pull.ctx = ctx;
    it->ordered = ordered;
    pool__drive_feed(&it->d); /* prime the window */
    *itp = it;
    return PK_OK;
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
    it->citems = NULL;
    it->ccount = it->cpos = 0;
}

pk_err_t pool_iter_next(pool_iter_t *it, pool_item_t *item, double timeout)
{
    if (it == NULL || item == NULL)
        return PK_EINVAL;
    struct timespec dl = pool__deadline_in(timeout);
    for (;;) {
        if (it->cpos < it->ccount) {
            *item = it->citems[it->cpos++];
            return PK_OK;
        }
        chunk_clear(it);
        if (it->ended)
            return it->final;
        pool__outcome_t *o = it->pending;
        if (o != NULL && (!it->ordered || o->first == it->next_index)) {
            it->pending = o->next;
            o->next = NULL;
            it->d.held -= o->count;
            it->citems = pk__malloc((size_t)o->count * sizeof *it->citems);
            if (it->citems == NULL || pk_doc_new(&it->cdoc) != PK_OK) {
                pool__outcome_free(o);
                it->ended = 1;
                it->final = PK_ENOMEM;
                pool__drive_end(&it->d);
                continue;
            }
            it->ccount = o->count;
            it->next_index = o->first + o->count;
            pool__outcome_decode(o, it->cdoc, it->citems, 0);
            continue;
        }
        if (it->d.input_rc != PK_OK) {
            it->ended = 1;
            it->final = it->d.input_rc;
            it->ferr = it->d.input_err;
            pool__drive_cancel(&it->d);
            pool__drive_end(&it->d);
            continue;
        }
        pool__outcome_t *got = NULL;
        pk_error_t e;
        pool__intr_enter();
        pk_err_t rc =
            pool__drive_pump(&it->d, &got, timeout < 0 ? NULL : &dl, &e);
        pool__intr_leave();
        if (rc == PK_ETIMEDOUT)
            return rc;
        if (rc != PK_OK) {
            it->ended = 1;
            it->final = rc;
            it->ferr = e;
            pool__drive_cancel(&it->d);
            pool__drive_end(&it->d);
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
            it->ended = 1;
            it->final = PK_EOF;
            pool__drive_end(&it->d);
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
