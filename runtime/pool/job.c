/*
 * job.c - lifetimes of the pool layer's shared objects (internal.h): jobs,
 * blobs, batches and outcomes are reference counted or owned as internal.h
 * says, and freed here, from whichever thread drops the last reference.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "ipc/wire.h"
#include "pool/internal.h"

void pool__job_ref(pool__job_t *j)
{
    atomic_fetch_add(&j->refs, 1);
}

void pool__job_unref(pool__job_t *j)
{
    if (j == NULL || atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    /* Outcomes hold references, so none can be left in done_head. */
    pk__free(j->call);
    pk__free(j);
}

pool__blob_t *pool__blob_new(pool__job_t *j)
{
    pool__blob_t *b = pk__calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->job = j;
    pool__job_ref(j);
    pthread_mutex_lock(&j->p->mu);
    j->blobs++;
    pthread_mutex_unlock(&j->p->mu);
    return b;
}

void pool__blob_ref(pool__blob_t *b)
{
    atomic_fetch_add(&b->refs, 1);
}

void pool__blob_unref(pool__blob_t *b)
{
    if (b == NULL || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    pk_doc_free(&b->doc);
    pk__free(b->bytes);
    if (b->shm != NULL) {
        for (size_t i = 0; i < b->nbufs; i++)
            if (b->bufs[i].shm < POOL_WIRE_SHM_HEAP) /* a task block */
                pool__shm_task_free(b->shm, b->bufs[i].shm, b->bufs[i].len);
        pool__shm_unref(b->shm);
    }
    pk__free(b->bufs);
    pool__job_t *j = b->job;
    pool_t *p = j->p;
    pthread_mutex_lock(&p->mu);
    if (--j->blobs == 0)
        pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pk__free(b);
    pool__job_unref(j);
}

void pool__blob_zc_free(void *data, void *hint)
{
    PK_UNUSED(data);
    pool__blob_unref(hint);
}

void pool__batch_free(pool__batch_t *b)
{
    if (b == NULL)
        return;
    pool__blob_unref(b->blob);
    pool__job_unref(b->job);
    pk__free(b);
}

void pool__shm_ents_release(pool__shm_t *shm, int slot, pool__wire_shm_t *v,
                            uint32_t n, uint32_t held)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i].off != POOL_WIRE_SHM_INLINE)
            pool__shm_res_release(shm, slot, v[i].off, (size_t)v[i].len,
                                  i < held);
    pk__free(v);
}

void pool__outcome_shm_release(pool__outcome_t *o)
{
    if (o->ents == NULL)
        return;
    pool__shm_ents_release(o->shm, o->slot, o->ents, o->nbufs, o->nbufs);
    o->ents = NULL;
}

int pool__shm_stats(pool_t *p, size_t *task_used, size_t *res_held,
                    size_t *res_alloc)
{
    *task_used = *res_held = *res_alloc = 0;
    if (p->cfg.shm != NULL)
        pool__shm_usage(p->cfg.shm, task_used, res_held, res_alloc);
    return p->cfg.shm != NULL;
}

void pool__outcome_free(pool__outcome_t *o)
{
    if (o == NULL)
        return;
    pool__outcome_shm_release(o);
    pool__shm_unref(o->shm);
    if (o->frames != NULL) {
        for (uint32_t i = 0; i < 1 + o->nbufs; i++)
            zmq_msg_close(&o->frames[i]);
        pk__free(o->frames);
    }
    pk__free(o->msg);
    pool__job_unref(o->job);
    pk__free(o);
}

pool__outcome_t *pool__outcome_synth(pool__job_t *j, size_t first,
                                     uint32_t count, pk_err_t status,
                                     const char *msg)
{
    pool__outcome_t *o = pk__calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->job = j;
    pool__job_ref(j);
    o->slot = -1;
    o->first = first;
    o->count = count;
    o->status = status;
    o->msg = pk__strdup(msg);
    return o;
}
