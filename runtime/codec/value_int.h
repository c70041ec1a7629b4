/*
 * value_int.h - the value model's private bulk helpers (value.c), used by the
 * decoder and pickletools to build large containers in one step.
 */
#ifndef PK_VALUE_INT_H
#define PK_VALUE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "picklepool/value.h"

/* Inserts n key/value pairs into a dict as pk_dict_set would, one after the
 * other: key i is items[2*i*stride], its value items[(2*i+1)*stride] (stride
 * in pointers, for callers whose pairs sit in wider slots).  Faster than n
 * calls for large n (value.c). */
pk_err_t pk__dict_set_batch(pk_doc_t *doc, pk_value_t *dict,
                            pk_value_t *const *items, size_t stride, size_t n);
/* A keyed (per-process secret) 64-bit mix for hash tables whose keys come
 * from untrusted input, such as memo ids (value.c). */
uint64_t pk__hash_u64(uint64_t key);
/* Appends n items to a list as n pk_list_append calls would, growing it
 * once: item i is items[i*stride] (value.c). */
pk_err_t pk__list_extend(pk_doc_t *doc, pk_value_t *list,
                         pk_value_t *const *items, size_t stride, size_t n);

/* Storage for a doc's large ndarrays: returns len bytes, 64-byte aligned,
 * owned by whoever installed the hook (not freed with the doc), or NULL to
 * let the doc allocate them as usual. */
typedef void *(*pk__array_alloc_fn)(void *ctx, size_t len);
/* Makes pk_ndarray in doc take the data of arrays of at least min_bytes
 * from fn (NULL: from the doc, the default).  The worker uses it to build
 * a kernel's result arrays straight in its shared-memory region (value.c). */
void pk__doc_set_array_alloc(pk_doc_t *doc, pk__array_alloc_fn fn, void *ctx,
                             size_t min_bytes);
#endif /* PK_VALUE_INT_H */
