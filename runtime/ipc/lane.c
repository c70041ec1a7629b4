/*
 * lane.c - the fast lane's shared-memory mailbox (see lane.h): the futex
 * helpers and the frame encoding both sides use.  The caller's side is in
 * pool/lane_call.c, the worker's in proc/worker.c, the master's (deaths,
 * WIRE replies, deadlines, abandoned futures) in pool/master.c.
 */
#define _GNU_SOURCE
#include "ipc/lane.h"

#include <errno.h>
#include <linux/futex.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"

/* ---- shared helpers ------------------------------------------------------ */

void pool__lane_wake(pool__lane_t *l)
{
    syscall(SYS_futex, &l->state, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void pool__lane_sleep(pool__lane_t *l, uint32_t seen, uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    syscall(SYS_futex, &l->state, FUTEX_WAIT, seen, &ts, NULL, 0);
}

int pool__lane_put(uint8_t *area, size_t cap, size_t *pos, const void *data,
                   size_t len)
{
    size_t at = (*pos + 7) & ~(size_t)7;
    if (at > cap || cap - at < 4 || cap - at - 4 < len || len > UINT32_MAX)
        return -1;
    pk__st32(area + at, (uint32_t)len);
    if (len)
        memcpy(area + at + 4, data, len);
    *pos = at + 4 + len;
    return 0;
}

int pool__lane_get(const uint8_t *area, size_t len, size_t *pos,
                   const uint8_t **data, size_t *flen)
{
    size_t at = (*pos + 7) & ~(size_t)7;
    if (at > len || len - at < 4)
        return -1;
    uint32_t n = pk__ld32(area + at);
    if (len - at - 4 < n)
        return -1;
    *data = area + at + 4;
    *flen = n;
    *pos = at + 4 + n;
    return 0;
}
