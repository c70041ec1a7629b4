/*
 * shm.c - the shared-memory arena: layout, the master's task allocator and
 * result bookkeeping, the worker's result allocator (see shm.h).  All three
 * are first-fit page bitmaps; the shared ones use atomics because the worker
 * sets bits that the master clears.
 */
#define _GNU_SOURCE
#include "ipc/shm.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "core/common.h"

#define MIN_REGION ((uint64_t)1 << 20)

int pool__shm_layout(uint64_t bytes, int n, pool__shm_layout_t *lay)
{
    memset(lay, 0, sizeof *lay);
    if (n <= 0 || bytes < 4 * MIN_REGION)
        return -1;
    bytes &= ~(uint64_t)(POOL_SHM_PAGE - 1);
    uint64_t res_est = bytes / 2 / (uint64_t)n;
    uint64_t bm =
        ((res_est / POOL_SHM_PAGE + 63) / 64 * 8 + POOL_SHM_PAGE - 1) &
        ~(uint64_t)(POOL_SHM_PAGE - 1);
    uint64_t hdr = bm * (uint64_t)n;
    if (hdr >= bytes / 4)
        return -1;
    uint64_t rest = bytes - hdr;
    uint64_t task = (rest / 2) & ~(uint64_t)(POOL_SHM_PAGE - 1);
    uint64_t res =
        ((rest - task) / (uint64_t)n) & ~(uint64_t)(POOL_SHM_PAGE - 1);
    if (res / POOL_SHM_PAGE > bm * 8)
        res = bm * 8 * POOL_SHM_PAGE;
    if (task < MIN_REGION || res < MIN_REGION)
        return -1;
    lay->bm_bytes = bm;
    lay->task_off = hdr;
    lay->task_size = task;
    lay->res_off = hdr + task;
    lay->res_size = res;
    lay->nworkers = n;
    lay->size = hdr + task + res * (uint64_t)n;
    return 0;
}

/* ---- page bitmaps ------------------------------------------------------- */

static size_t pages_of(size_t len)
{
    return (len + POOL_SHM_PAGE - 1) / POOL_SHM_PAGE;
}

/* First run of `need` clear bits among nbits, or SIZE_MAX. */
static size_t find_run(_Atomic uint64_t *bm, size_t nbits, size_t need)
{
    size_t run = 0, start = 0;
    for (size_t i = 0; i < nbits;) {
        uint64_t w = atomic_load_explicit(&bm[i / 64], memory_order_acquire);
        if ((i & 63) == 0 && i + 64 <= nbits && (w == 0 || w == ~0ull)) {
            if (w == 0) {
                if (run == 0)
                    start = i;
                run += 64;
            } else {
                run = 0;
            }
            i += 64;
        } else {
            if ((w >> (i & 63)) & 1) {
                run = 0;
            } else {
                if (run == 0)
                    start = i;
                run++;
            }
            i++;
        }
        if (run >= need)
            return start;
    }
    return SIZE_MAX;
}

static void set_bits(_Atomic uint64_t *bm, size_t from, size_t n)
{
    while (n > 0) {
        size_t b = from & 63, k = 64 - b < n ? 64 - b : n;
        uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
        atomic_fetch_or_explicit(&bm[from / 64], mask, memory_order_relaxed);
        from += k;
        n -= k;
    }
}

/* Clears bits [from, from+n) that are set in keep == NULL ? all : ~keep. */
static void clr_bits(_Atomic uint64_t *bm, size_t from, size_t n,
                     _Atomic uint64_t *keep)
{
    while (n > 0) {
        size_t b = from & 63, k = 64 - b < n ? 64 - b : n;
        uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
        if (keep != NULL)
            mask &=
                ~atomic_load_explicit(&keep[from / 64], memory_order_relaxed);
        atomic_fetch_and_explicit(&bm[from / 64], ~mask, memory_order_release);
        from += k;
        n -= k;
    }
}

static int any_set(_Atomic uint64_t *bm, size_t from, size_t n)
{
    while (n > 0) {
        size_t b = from & 63, k = 64 - b < n ? 64 - b : n;
        uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << b;
        if (atomic_load_explicit(&bm[from / 64], memory_order_relaxed) & mask)
            return 1;
        from += k;
        n -= k;
    }
    return 0;
}

/* ---- master ------------------------------------------------------------- */

static _Atomic uint64_t *shared_bm(uint8_t *base, const pool__shm_layout_t *l,
                                   int slot)
{
    return (_Atomic uint64_t *)(base + (uint64_t)slot * l->bm_bytes);
}

pk_err_t pool__shm_open(pool__shm_t **out, int fd, uint64_t off,
                        const pool__shm_layout_t *lay, size_t threshold,
                        pk_error_t *err)
{
    *out = NULL;
    pool__shm_t *s = pk__calloc(1, sizeof *s);
    size_t task_words = (size_t)(lay->task_size / POOL_SHM_PAGE + 63) / 64;
    size_t held_words = (size_t)lay->bm_bytes / 8 * (size_t)lay->nworkers;
    if (s != NULL) {
        s->task_bm = pk__calloc(task_words, sizeof *s->task_bm);
        s->held = pk__calloc(held_words, sizeof *s->held);
    }
    if (s == NULL || s->task_bm == NULL || s->held == NULL) {
        if (s != NULL) {
            pk__free(s->task_bm);
            pk__free(s->held);
        }
        pk__free(s);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    void *m = mmap(NULL, lay->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                   (off_t)off);
    if (m == MAP_FAILED) {
        pk__free(s->task_bm);
        pk__free(s->held);
        pk__free(s);
        return pk__err_sys(err, PK_ESYS, errno, "mmap of the arena");
    }
    atomic_init(&s->refs, 1);
    s->base = m;
    s->lay = *lay;
    s->threshold = threshold;
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return PK_OK;
}

void pool__shm_ref(pool__shm_t *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void pool__shm_unref(pool__shm_t *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    munmap(s->base, s->lay.size);
    pthread_mutex_destroy(&s->mu);
    pk__free(s->task_bm);
    pk__free(s->held);
    pk__free(s);
}

uint64_t pool__shm_task_alloc(pool__shm_t *s, size_t len)
{
    size_t need = pages_of(len);
    if (len == 0 || need > s->lay.task_size / POOL_SHM_PAGE)
        return UINT64_MAX;
    pthread_mutex_lock(&s->mu);
    size_t at = find_run(s->task_bm, s->lay.task_size / POOL_SHM_PAGE, need);
    if (at != SIZE_MAX) {
        set_bits(s->task_bm, at, need);
        s->task_used += need * POOL_SHM_PAGE;
    }
    pthread_mutex_unlock(&s->mu);
    return at == SIZE_MAX ? UINT64_MAX
                          : s->lay.task_off + (uint64_t)at * POOL_SHM_PAGE;
}

void pool__shm_task_free(pool__shm_t *s, uint64_t off, size_t len)
{
    size_t at = (size_t)((off - s->lay.task_off) / POOL_SHM_PAGE);
    size_t n = pages_of(len);
    pthread_mutex_lock(&s->mu);
    clr_bits(s->task_bm, at, n, NULL);
    s->task_used -= n * POOL_SHM_PAGE;
    pthread_mutex_unlock(&s->mu);
}

/* Page index of a result block within its slot's region. */
static size_t res_page(const pool__shm_t *s, int slot, uint64_t off)
{
    return (size_t)((off - s->lay.res_off - (uint64_t)slot * s->lay.res_size) /
                    POOL_SHM_PAGE);
}

static _Atomic uint64_t *held_bm(pool__shm_t *s, int slot)
{
    return s->held + (size_t)slot * (size_t)(s->lay.bm_bytes / 8);
}

int pool__shm_res_accept(pool__shm_t *s, int slot, uint64_t off, size_t len)
{
    uint64_t lo = s->lay.res_off + (uint64_t)slot * s->lay.res_size;
    if (slot < 0 || slot >= s->lay.nworkers || off < lo ||
        off >= lo + s->lay.res_size || len > lo + s->lay.res_size - off ||
        (off - lo) % POOL_SHM_PAGE != 0 || len == 0)
        return -1;
    size_t at = res_page(s, slot, off), n = pages_of(len);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (any_set(held_bm(s, slot), at, n)) {
        rc = -1;
    } else {
        set_bits(held_bm(s, slot), at, n);
        s->res_held += n * POOL_SHM_PAGE;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void pool__shm_res_release(pool__shm_t *s, int slot, uint64_t off, size_t len,
                           int held)
{
    uint64_t lo = s->lay.res_off + (uint64_t)slot * s->lay.res_size;
    if (slot < 0 || slot >= s->lay.nworkers || off < lo ||
        off >= lo + s->lay.res_size || len > lo + s->lay.res_size - off ||
        (off - lo) % POOL_SHM_PAGE != 0 || len == 0)
        return;
    size_t at = res_page(s, slot, off), n = pages_of(len);
    pthread_mutex_lock(&s->mu);
    if (held) {
        clr_bits(held_bm(s, slot), at, n, NULL);
        clr_bits(shared_bm(s->base, &s->lay, slot), at, n, NULL);
        s->res_held -= n * POOL_SHM_PAGE;
    } else {
        clr_bits(shared_bm(s->base, &s->lay, slot), at, n, held_bm(s, slot));
    }
    pthread_mutex_unlock(&s->mu);
}

void pool__shm_res_reset(pool__shm_t *s, int slot)
{
    _Atomic uint64_t *sh = shared_bm(s->base, &s->lay, slot);
    _Atomic uint64_t *h = held_bm(s, slot);
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->lay.bm_bytes / 8; i++)
        atomic_store_explicit(&sh[i],
                              atomic_load_explicit(&h[i], memory_order_relaxed),
                              memory_order_release);
    pthread_mutex_unlock(&s->mu);
}

void pool__shm_usage(pool__shm_t *s, size_t *task_used, size_t *res_held,
                     size_t *res_alloc)
{
    size_t words = (size_t)(s->lay.bm_bytes / 8) * (size_t)s->lay.nworkers;
    _Atomic uint64_t *sh = shared_bm(s->base, &s->lay, 0);
    size_t bits = 0;
    pthread_mutex_lock(&s->mu);
    *task_used = s->task_used;
    *res_held = s->res_held;
    for (size_t i = 0; i < words; i++)
        bits += (size_t)__builtin_popcountll(
            atomic_load_explicit(&sh[i], memory_order_acquire));
    pthread_mutex_unlock(&s->mu);
    *res_alloc = bits * POOL_SHM_PAGE;
}

void pool__shm_prefault(const void *p, size_t len, int write)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(POOL_SHM_PAGE - 1);
    size_t n = (size_t)((uintptr_t)p + len - a);
    (void)madvise((void *)a, n,
                  write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

/* ---- worker ------------------------------------------------------------- */

uint64_t pool__shm_worker_alloc(uint8_t *base, const pool__shm_layout_t *lay,
                                int slot, size_t len)
{
    size_t nbits = (size_t)(lay->res_size / POOL_SHM_PAGE);
    size_t need = pages_of(len);
    if (len == 0 || need > nbits)
        return UINT64_MAX;
    _Atomic uint64_t *bm = shared_bm(base, lay, slot);
    size_t at = find_run(bm, nbits, need);
    if (at == SIZE_MAX)
        return UINT64_MAX;
    set_bits(bm, at, need);
    return lay->res_off + (uint64_t)slot * lay->res_size +
           (uint64_t)at * POOL_SHM_PAGE;
}
