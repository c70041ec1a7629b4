/*
 * serve.c - pool_worker_serve (picklepool/worker.h): the process a pool
 * exec'd reads PICKLEPOOL_WORKER, maps its shared memory from the
 * descriptor named there, and runs the worker loop with the caller's
 * handler for items.
 */
#define _GNU_SOURCE
#include "picklepool/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/common.h"
#include "ipc/scoreboard.h"
#include "proc/attach.h"
#include "proc/worker.h"

/* The shared heap as this worker maps it (set once, before the loop). */
static const uint8_t *serve_heap;
static uint64_t serve_heap_size;

int pool_worker_in_shared(const void *p, size_t len)
{
    const uint8_t *b = p;
    return serve_heap != NULL && b >= serve_heap && len > 0 &&
           (uint64_t)(b - serve_heap) < serve_heap_size &&
           len <= serve_heap_size - (uint64_t)(b - serve_heap);
}

pk_err_t pool_worker_serve(pool_raw_fn fn, void *ctx, int *exit_status,
                           pk_error_t *err)
{
    if (fn == NULL)
        return pk__err(err, PK_EINVAL, "pool_worker_serve: NULL handler");
    /* Static: the loop keeps pointers into it (the endpoint, the layout). */
    static pool__fs_pool_cfg_t cfg;
    int slot = 0, fd = -1;
    uint32_t gen = 0;
    pk_err_t rc = pool__worker_env_parse(getenv(POOL_WORKER_ENV), &cfg, &slot,
                                         &gen, &fd, err);
    if (rc != PK_OK)
        return rc;
    pool__worker_cfg_t wc;
    pool__worker_attach(&cfg, fd, slot, gen, &wc);
    if (wc.sb == NULL)
        return pk__err_sys(err, PK_ESYS, EBADF,
                           "cannot map the pool's scoreboard from fd %d", fd);
    close(fd);
    if (cfg.heap_fd >= 0)
        close(cfg.heap_fd); /* mapped (or not: the heap is then copied) */
    /* Workers of its children, if the handler starts any, are not ours. */
    unsetenv(POOL_WORKER_ENV);
    POOL_SB_STORE(wc.sb->pid, (int32_t)getpid());
    wc.raw = fn;
    wc.raw_ctx = ctx;
    serve_heap = wc.heap;
    serve_heap_size = wc.heap_size;
    int st = pool__worker_main(&wc);
    if (exit_status != NULL)
        *exit_status = st;
    return PK_OK;
}
