/*
 * attach.h - how a worker process joins its pool's shared memory (private).
 *
 * A native worker forked by the fork server and an exec'd worker
 * (picklepool/worker.h) map the same things the same way: their scoreboard
 * slot, their fast lane, and the arena (read-only but for their own bitmap
 * and result region; see ipc/shm.h).  The fork server tells an exec'd
 * worker what to map in one environment variable, PICKLEPOOL_WORKER, and
 * leaves the pool's memfd open at a descriptor named there.
 */
#ifndef POOL_ATTACH_H
#define POOL_ATTACH_H

#include <stddef.h>
#include <stdint.h>

#include "picklepool/error.h"
#include "proc/forkserver.h"
#include "proc/worker.h"

#define POOL_WORKER_ENV "PICKLEPOOL_WORKER"

/* Maps what worker `slot` of the pool described by cfg uses from memfd and
 * fills *wc to run it (endpoint, limits, shared memory).  Pieces that
 * cannot be mapped are left out (NULL): the worker still runs, through the
 * socket.  wc->endpoint points into cfg, which must outlive the worker. */
void pool__worker_attach(const pool__fs_pool_cfg_t *cfg, int memfd, int slot,
                         uint32_t gen, pool__worker_cfg_t *wc);

/* Writes the PICKLEPOOL_WORKER value for worker slot/gen of the pool cfg,
 * whose memfd it will find at descriptor fd.  Returns 0, or -1 when it does
 * not fit in size bytes. */
int pool__worker_env_format(const pool__fs_pool_cfg_t *cfg, int slot,
                            uint32_t gen, int fd, char *buf, size_t size);

/* Parses a PICKLEPOOL_WORKER value into *cfg (the fields an exec'd worker
 * needs), *slot, *gen and *fd.  Returns PK_OK or PK_EINVAL naming what was
 * wrong. */
pk_err_t pool__worker_env_parse(const char *s, pool__fs_pool_cfg_t *cfg,
                                int *slot, uint32_t *gen, int *fd,
                                pk_error_t *err);

#endif /* POOL_ATTACH_H */
