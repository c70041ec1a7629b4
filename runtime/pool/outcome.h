/*
 * outcome.h - turning the outcomes the master hands back into pool_item_t
 * entries (private).
 *
 * Thread-safety: a doc belongs to one thread at a time; outcomes are owned
 * by whoever holds them.
 */
#ifndef POOL_OUTCOME_H
#define POOL_OUTCOME_H

#include <stddef.h>

#include "picklepool/pool.h"
#include "pool/internal.h"

/* Fails *it with status st and a copy of msg[0..len) in doc. */
void pool__item_fail(pool_item_t *it, pk_doc_t *doc, pk_err_t st,
                     const char *msg, size_t len);

/* Decodes o's items into items[0..o->count) with values and messages in
 * doc; consumes o.  Values borrow the buffers, frames and arena blocks:
 * nothing is copied out, and the blocks stay allocated until doc is freed
 * (or a caller took one over: pool_shared_keep).  Returns the number of
 * failed items. */
size_t pool__outcome_decode(pool__outcome_t *o, pk_doc_t *doc,
                            pool_item_t *items);

/* The raw view of o (raw maps): res[0..o->count) point into o's frames and
 * arena blocks, messages are copied into doc, and *bufs receives the
 * buffer table the results point into (free it with pk__free).  o stays
 * owned by the caller and must outlive the results.  Returns the number of
 * failed items. */
size_t pool__outcome_raw(pool__outcome_t *o, pk_doc_t *doc,
                         pool_raw_result_t *res, pk_buffer_t **bufs);

#endif /* POOL_OUTCOME_H */
