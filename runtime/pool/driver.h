/*
 * driver.h - the caller's side of every call: the map driver (private).
 *
 * A drive runs one job on the caller's thread.  It pulls input from a
 * source, pickles items into batches lazily, keeping a bounded window of
 * items in flight (so pool_map returns control quickly and imap stays flat
 * on unbounded input), hands batches to the master thread, and collects
 * the outcomes the master hands back; the front-ends (map.c, imap.c,
 * apply.c) decode them (outcome.h).  The master only moves bytes.
 *
 * Where items come from is a source: an ops table (pool__src_ops_t) with
 * the input state in the drive.  The front-ends define theirs: values
 * (pool_map), a pull function (imap), raw int64/float64 vectors and float32
 * arrays (the convenience maps), one call (apply).
 *
 * Batch size adapts unless fixed: the first batches are small, then each
 * aims at ~3 ms of work per the item time the workers measure, capped so
 * that every worker gets at least four batches of a known-length map, and
 * so that a batch of big items (arrays) holds about 8 MiB.
 *
 * Thread-safety: a drive belongs to one caller thread at a time.
 */
#ifndef POOL_DRIVER_H
#define POOL_DRIVER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "picklepool/pool.h"
#include "pool/internal.h"

typedef struct pool__drive pool__drive_t;

/* What a source is. */
enum pool__src_flags {
    POOL_SRC_STREAM = 1, /* length unknown until next() says PK_EOF */
    POOL_SRC_SINGLE = 2, /* one call: one item a batch, pickled in band,
                            offered to an idle worker's fast lane */
    POOL_SRC_DOC = 4     /* next() builds its items in a doc per batch */
};

typedef struct pool__src_ops {
    unsigned flags; /* pool__src_flags */
    /* The next item at d->pos: PK_OK with *v (NULL: that item fails as
     * "item is NULL"), PK_EOF at the end of input, or an input error with
     * err filled, which ends the call.  doc is the batch's doc with
     * POOL_SRC_DOC, else NULL.  NULL for raw sources. */
    pk_err_t (*next)(pool__drive_t *d, pk_doc_t *doc, const pk_value_t **v,
                     pk_error_t *err);
    /* Sources of items given as bytes (raw maps): the next item, PK_EOF at
     * the end, or an input error.  Used instead of next when set. */
    pk_err_t (*next_raw)(pool__drive_t *d, pool_raw_item_t *item,
                         pk_error_t *err);
    /* Vector sources: a batch of up to `chunk` items read straight from the
     * caller's memory, or NULL when memory runs out.  NULL otherwise. */
    pool__batch_t *(*raw_batch)(pool__drive_t *d, size_t chunk);
    /* Bytes of the item at d->pos when the source knows them before
     * pickling (for batch sizing), else 0.  May be NULL. */
    size_t (*item_bytes)(const pool__drive_t *d);
} pool__src_ops_t;

struct pool__drive {
    pool_t *p;
    pool__job_t *j;
    const pool__src_ops_t *src;
    union { /* the source's input, as its front-end set it */
        const pk_value_t *const *items; /* values, one call */
        struct {
            pool_next_fn fn;
            void *ctx;
        } pull;
        const void *vec; /* int64 / float64 */
        struct {
            const float *const *arrays;
            const size_t *lens;
        } f32;
        struct {
            pool_raw_next_fn fn;
            void *ctx;
        } raw;
    } in;
    size_t n;   /* input length when known */
    size_t pos; /* next input index */
    int eof;
    size_t submitted, completed;
    size_t held;       /* completed but not yet delivered (reorder buffer) */
    pk_err_t input_rc; /* the input failed */
    pk_error_t input_err;
    int borrows;              /* batches borrow the caller's memory */
    pool__outcome_t *local;   /* outcomes made on this side */
    size_t item_bytes;        /* encoded bytes per item of the last batch */
    pool__lane_ticket_t lane; /* a call posted on a fast lane */
};

/* Starts a job of `kind` with TASK `flags` calling module.func (with
 * kwargs, for one call), or with the call frame raw_call (raw maps; module
 * and func NULL), over `total` items (SIZE_MAX: unknown) from `src`, and
 * sets up *d for it.  Returns PK_OK, PK_EINVAL (bad names or options),
 * PK_ECLOSED, PK_ENOMEM or the pool's breakage (PK_ECRASHED). */
pk_err_t pool__drive_start(pool__drive_t *d, pool_t *p,
                           enum pool__job_kind kind, uint16_t flags,
                           const pool__src_ops_t *src, const char *module,
                           const char *func, const pk_value_t *kwargs,
                           const pool_raw_item_t *raw_call,
                           const pool_call_opts_t *copts, size_t total,
                           pk_error_t *err);

/* Submits batches while the window allows.  Without p->mu. */
void pool__drive_feed(pool__drive_t *d);

/* Feeds input and waits until `deadline` (NULL: none) for outcomes.
 * Returns PK_OK with *got a list (NULL when the map is complete),
 * PK_ETIMEDOUT, PK_EINTR, or the pool's failure with err filled. */
pk_err_t pool__drive_pump(pool__drive_t *d, pool__outcome_t **got,
                          const struct timespec *deadline, pk_error_t *err);

/* Stops the job: no more input; the master drops what is left of it. */
void pool__drive_cancel(pool__drive_t *d);

/* Ends the job (cancelling it if unfinished); with borrowed caller memory,
 * waits until nothing refers to it any more.  Drops the drive's job
 * reference; idempotent. */
void pool__drive_end(pool__drive_t *d);

/* Runs a whole job on the caller's thread, handing each outcome to `sink`
 * (which consumes it), then ends it.  Returns PK_OK, or the error that
 * stopped it (PK_EINTR, PK_ECRASHED, the input's error) with err filled. */
typedef void (*pool__sink_fn)(void *ctx, pool__outcome_t *o);
pk_err_t pool__drive_run(pool__drive_t *d, pool__sink_fn sink, void *ctx,
                         pk_error_t *err);

/* The `next` of sources over d->in.items[0..n). */
pk_err_t pool__src_items_next(pool__drive_t *d, pk_doc_t *doc,
                              const pk_value_t **v, pk_error_t *err);

#endif /* POOL_DRIVER_H */
