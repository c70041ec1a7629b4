/*
 * attach.c - a worker joins its pool's shared memory (see attach.h), and
 * the one environment variable that tells an exec'd worker how.
 */
#define _GNU_SOURCE
#include "proc/attach.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/common.h"
#include "ipc/lane.h"
#include "ipc/scoreboard.h"

#define POOL_MAX_SLOTS_ENV 65536 /* sanity bound on slot numbers read */

void pool__worker_attach(const pool__fs_pool_cfg_t *cfg, int memfd, int slot,
                         uint32_t gen, pool__worker_cfg_t *wc)
{
    memset(wc, 0, sizeof *wc);
    size_t sbsize = sizeof(pool__sb_slot_t) * (size_t)cfg->nworkers;
    void *map =
        mmap(NULL, sbsize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (map != MAP_FAILED)
        wc->sb = (pool__sb_slot_t *)map + slot;
    if (cfg->spin_ns > 0) {
        void *lm = mmap(NULL, POOL_LANE_BYTES, PROT_READ | PROT_WRITE,
                        MAP_SHARED, memfd,
                        (off_t)(pool__lanes_off(cfg->nworkers) +
                                POOL_LANE_BYTES * (uint64_t)slot));
        if (lm != MAP_FAILED)
            wc->lane = lm;
    }
    const pool__shm_layout_t *lay = &cfg->shm;
    if (lay->size > 0) {
        void *a = mmap(NULL, lay->size, PROT_READ, MAP_SHARED, memfd,
                       (off_t)cfg->shm_off);
        uint64_t own = lay->res_off + (uint64_t)slot * lay->res_size;
        if (a != MAP_FAILED &&
            (mprotect((uint8_t *)a + (uint64_t)slot * lay->bm_bytes,
                      lay->bm_bytes, PROT_READ | PROT_WRITE) != 0 ||
             mprotect((uint8_t *)a + own, lay->res_size,
                      PROT_READ | PROT_WRITE) != 0)) {
            munmap(a, lay->size);
            a = MAP_FAILED;
        }
        if (a != MAP_FAILED) {
            wc->shm = a;
            wc->shm_lay = lay;
        }
    }
    if (cfg->heap_size > 0 && cfg->heap_fd >= 0) {
        /* callers' arrays: read-only here, whoever wrote them */
        void *h =
            mmap(NULL, cfg->heap_size, PROT_READ, MAP_SHARED, cfg->heap_fd, 0);
        if (h != MAP_FAILED) {
            wc->heap = h;
            wc->heap_size = cfg->heap_size;
        }
    }
    wc->endpoint = cfg->endpoint;
    wc->slot = slot;
    wc->gen = gen;
    wc->prefetch = cfg->prefetch;
    wc->maxtasks = cfg->maxtasks;
    wc->max_rss = cfg->max_rss;
    wc->shm_threshold = (size_t)cfg->shm_threshold;
    wc->spin_ns = wc->lane != NULL ? cfg->spin_ns : 0;
}

/* ---- PICKLEPOOL_WORKER -------------------------------------------------- */

/* "v1;endpoint=...;slot=..;..." with the arena layout as six numbers. */
int pool__worker_env_format(const pool__fs_pool_cfg_t *cfg, int slot,
                            uint32_t gen, int fd, char *buf, size_t size)
{
    const pool__shm_layout_t *l = &cfg->shm;
    int n =
        snprintf(buf, size,
                 "v1;slot=%d;gen=%" PRIu32 ";fd=%d;nworkers=%d;prefetch=%d;"
                 "maxtasks=%" PRIu64 ";max_rss=%" PRIu64 ";spin_ns=%" PRIu64
                 ";shm_off=%" PRIu64 ";shm_threshold=%" PRIu64 ";shm=%" PRIu64
                 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                 ";heap_fd=%d;heap_size=%" PRIu64 ";endpoint=%s",
                 slot, gen, fd, cfg->nworkers, cfg->prefetch, cfg->maxtasks,
                 cfg->max_rss, cfg->spin_ns, cfg->shm_off, cfg->shm_threshold,
                 l->size, l->bm_bytes, l->task_off, l->task_size, l->res_off,
                 l->res_size, cfg->heap_size > 0 ? cfg->heap_fd : -1,
                 cfg->heap_size > 0 ? cfg->heap_size : 0, cfg->endpoint);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int num(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || (*end != '\0' && *end != ';' && *end != ','))
        return -1;
    *out = x;
    return 0;
}

pk_err_t pool__worker_env_parse(const char *s, pool__fs_pool_cfg_t *cfg,
                                int *slot, uint32_t *gen, int *fd,
                                pk_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->heap_fd = -1;
    if (s == NULL)
        return pk__err(err, PK_EINVAL,
                       "%s is not set: this process was not started by a "
                       "pool",
                       POOL_WORKER_ENV);
    if (strncmp(s, "v1;", 3) != 0)
        return pk__err(err, PK_EINVAL, "%s: unknown version in '%.40s'",
                       POOL_WORKER_ENV, s);
    uint64_t v[6];
    int seen = 0;
    for (const char *p = s + 3; *p != '\0';) {
        const char *eq = strchr(p, '=');
        if (eq == NULL)
            return pk__err(err, PK_EINVAL, "%s: no '=' in '%.40s'",
                           POOL_WORKER_ENV, p);
        size_t klen = (size_t)(eq - p);
        const char *val = eq + 1;
        uint64_t x = 0;
        int bad = 0;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(p, k, klen) == 0)
        if (KEY("endpoint")) {
            /* the last field: the rest of the string */
            if (strlen(val) >= sizeof cfg->endpoint)
                return pk__err(err, PK_EINVAL, "%s: endpoint too long",
                               POOL_WORKER_ENV);
            strcpy(cfg->endpoint, val);
            seen |= 1;
            break;
        } else if (KEY("heap_fd")) {
            /* -1: no heap */
            if (strncmp(val, "-1", 2) == 0 && (val[2] == ';' || !val[2]))
                cfg->heap_fd = -1;
            else if ((bad = num(val, &x) != 0 || x >= 65536) == 0)
                cfg->heap_fd = (int)x;
        } else if (KEY("shm")) {
            const char *q = val;
            for (int i = 0; i < 6 && !bad; i++) {
                bad = num(q, &v[i]) != 0;
                q = strpbrk(q, ",;");
                if (i < 5 && (q == NULL || *q != ','))
                    bad = 1;
                else if (q != NULL)
                    q++;
            }
            if (!bad) {
                cfg->shm.size = v[0];
                cfg->shm.bm_bytes = v[1];
                cfg->shm.task_off = v[2];
                cfg->shm.task_size = v[3];
                cfg->shm.res_off = v[4];
                cfg->shm.res_size = v[5];
            }
        } else if ((bad = num(val, &x) != 0) == 0) {
            if (KEY("slot") && x < POOL_MAX_SLOTS_ENV)
                *slot = (int)x, seen |= 2;
            else if (KEY("gen") && x <= UINT32_MAX)
                *gen = (uint32_t)x, seen |= 4;
            else if (KEY("fd") && x < 65536)
                *fd = (int)x, seen |= 8;
            else if (KEY("nworkers") && x >= 1 && x <= POOL_MAX_SLOTS_ENV)
                cfg->nworkers = (int)x, seen |= 16;
            else if (KEY("prefetch") && x <= 1024)
                cfg->prefetch = (int)x;
            else if (KEY("maxtasks"))
                cfg->maxtasks = x;
            else if (KEY("max_rss"))
                cfg->max_rss = x;
            else if (KEY("spin_ns"))
                cfg->spin_ns = x;
            else if (KEY("shm_off"))
                cfg->shm_off = x;
            else if (KEY("shm_threshold"))
                cfg->shm_threshold = x;
            else if (KEY("heap_size"))
                cfg->heap_size = x;
            else
                bad = 1;
        }
#undef KEY
        if (bad)
            return pk__err(err, PK_EINVAL, "%s: bad field '%.*s'",
                           POOL_WORKER_ENV, (int)klen, p);
        p = strchr(val, ';');
        if (p == NULL)
            break;
        p++;
    }
    if (seen != 31 || *slot >= cfg->nworkers)
        return pk__err(err, PK_EINVAL,
                       "%s: slot, gen, fd, nworkers and endpoint are needed",
                       POOL_WORKER_ENV);
    cfg->shm.nworkers = cfg->nworkers;
    return PK_OK;
}
