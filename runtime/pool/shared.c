/*
 * shared.c - the public face of the shared heap and of result views
 * (picklepool/shared.h); the memory itself is ipc/shm.c's.
 */
#include "picklepool/shared.h"

#include <stdint.h>

#include "core/common.h"
#include "ipc/shm.h"
#include "pool/internal.h"

pk_err_t pool_shared_alloc(size_t len, void **ptr, pk_error_t *err)
{
    *ptr = NULL;
    if (len == 0)
        return pk__err(err, PK_EINVAL, "pool_shared_alloc of 0 bytes");
    pool__heap_t *h;
    pk_err_t rc = pool__heap_get(&h, err);
    if (rc != PK_OK)
        return rc;
    int nomem;
    *ptr = pool__heap_alloc(len, &nomem);
    if (nomem)
        return pk__err(err, PK_ENOMEM, "out of memory");
    if (*ptr == NULL) {
        size_t blocks, bytes;
        pool__heap_usage(&blocks, &bytes);
        return pk__err(err, PK_ENOMEM,
                       "the shared heap has no room for %zu bytes (%zu of "
                       "%llu bytes in use in %zu blocks; set "
                       "PICKLEPOOL_SHARED_BYTES for a bigger one)",
                       len, bytes, (unsigned long long)h->size, blocks);
    }
    return PK_OK;
}

pk_err_t pool_shared_keep(const void *ptr, size_t len, pk_error_t *err)
{
    pool__shm_t *s = ptr != NULL ? pool__shm_find(ptr) : NULL;
    int rc = s != NULL && len > 0 ? pool__shm_keep(s, ptr, &len) : -1;
    pool__shm_unref(s);
    if (rc != 0)
        return pk__err(err, PK_EINVAL,
                       "pool_shared_keep: %p is not the start of a result "
                       "held in a pool's arena (or it is kept already)",
                       ptr);
    return PK_OK;
}

pk_err_t pool_shared_release(void *ptr)
{
    if (ptr == NULL)
        return PK_EINVAL;
    if (pool__heap_free(ptr) == 0)
        return PK_OK;
    pool__shm_t *s = pool__shm_find(ptr);
    int rc = s != NULL ? pool__shm_kept_release(s, ptr) : -1;
    pool__shm_unref(s);
    return rc == 0 ? PK_OK : PK_EINVAL;
}

int pool_shared_contains(const void *ptr, size_t len)
{
    return ptr != NULL && len > 0 && pool__heap_find(ptr, len) != UINT64_MAX;
}

void pool_shared_usage(size_t *blocks, size_t *bytes)
{
    pool__heap_usage(blocks, bytes);
}

void pool_shared_copies(pool_t *p, uint64_t *in, uint64_t *out)
{
    uint64_t i = 0, o = 0;
    if (p->cfg.shm != NULL)
        i = atomic_load_explicit(&p->cfg.shm->copied_in, memory_order_relaxed);
    for (int s = 0; s < p->cfg.nworkers; s++)
        o += POOL_SB_LOAD(p->cfg.sb[s].copied);
    if (in != NULL)
        *in = i;
    if (out != NULL)
        *out = o;
}
