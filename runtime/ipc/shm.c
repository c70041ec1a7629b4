/*
 * shm.c - the shared-memory arena: layout, the master's task allocator and
 * result bookkeeping, the worker's result allocator (see shm.h).  All three
 * are first-fit page bitmaps; the shared ones use atomics because the worker
 * sets bits that the master clears.
 */
#define _GNU_SOURCE
#include "ipc/shm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"

#define MIN_REGION ((uint64_t)1 << 20)
#define RES_HOT ((uint64_t)256 << 20) /* of each slot's result region */

/* Gives the pages of [p, p+len) back to the system (they read as zeros
 * after), for freed blocks past a region's hot part.  Best effort. */
static void punch(void *p, size_t len)
{
    (void)madvise(p, len, MADV_REMOVE);
}

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

/* Doubles the capacity of the array *v of *cap elements of `elem` bytes.
 * Returns 0, or -1 (nothing changed) when out of memory. */
static int grow(void **v, size_t *cap, size_t elem)
{
    size_t nc = *cap ? *cap * 2 : 16;
    void *n = pk__realloc(*v, nc * elem);
    if (n == NULL)
        return -1;
    *v = n;
    *cap = nc;
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

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pool__shm_t *live_head; /* arenas mapped in this process */

static void live_add(pool__shm_t *s)
{
    pthread_mutex_lock(&live_mu);
    s->next_live = live_head;
    live_head = s;
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(pool__shm_t *s)
{
    pthread_mutex_lock(&live_mu);
    for (pool__shm_t **pp = &live_head; *pp != NULL; pp = &(*pp)->next_live)
        if (*pp == s) {
            *pp = s->next_live;
            break;
        }
    pthread_mutex_unlock(&live_mu);
}

pool__shm_t *pool__shm_find(const void *p)
{
    const uint8_t *b = p;
    pthread_mutex_lock(&live_mu);
    pool__shm_t *s = live_head;
    while (s != NULL && !(b >= s->base && b < s->base + s->lay.size))
        s = s->next_live;
    if (s != NULL)
        pool__shm_ref(s);
    pthread_mutex_unlock(&live_mu);
    return s;
}

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
    pthread_cond_init(&s->freed, NULL);
    live_add(s);
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
    live_remove(s);
    munmap(s->base, s->lay.size);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->freed);
    pk__free(s->kept);
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

uint64_t pool__shm_task_alloc_wait(pool__shm_t *s, size_t len, size_t pending,
                                   uint64_t wait_ns)
{
    uint64_t off = pool__shm_task_alloc(s, len);
    if (off != UINT64_MAX || pages_of(len) > s->lay.task_size / POOL_SHM_PAGE)
        return off;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    uint64_t ns = (uint64_t)dl.tv_nsec + wait_ns;
    dl.tv_sec += (time_t)(ns / 1000000000u);
    dl.tv_nsec = (long)(ns % 1000000000u);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        size_t at = find_run(s->task_bm, s->lay.task_size / POOL_SHM_PAGE,
                             pages_of(len));
        if (at != SIZE_MAX) {
            set_bits(s->task_bm, at, pages_of(len));
            s->task_used += pages_of(len) * POOL_SHM_PAGE;
            off = s->lay.task_off + (uint64_t)at * POOL_SHM_PAGE;
            break;
        }
        /* Only the caller's own blocks in use: nothing will free room. */
        if (s->task_used <= pending ||
            pthread_cond_timedwait(&s->freed, &s->mu, &dl) != 0)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    return off;
}

void pool__shm_task_free(pool__shm_t *s, uint64_t off, size_t len)
{
    size_t at = (size_t)((off - s->lay.task_off) / POOL_SHM_PAGE);
    size_t n = pages_of(len);
    if (off + n * POOL_SHM_PAGE > s->lay.task_off + POOL_SHM_HOT)
        punch(s->base + off, n * POOL_SHM_PAGE);
    pthread_mutex_lock(&s->mu);
    clr_bits(s->task_bm, at, n, NULL);
    s->task_used -= n * POOL_SHM_PAGE;
    pthread_cond_broadcast(&s->freed);
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

static ssize_t kept_index(const pool__shm_t *s, uint64_t off)
{
    for (size_t i = 0; i < s->nkept; i++)
        if (s->kept[i].off == off)
            return (ssize_t)i;
    return -1;
}

/* Frees the pages of a held block (under mu). */
static void res_free_held(pool__shm_t *s, int slot, uint64_t off, size_t len)
{
    uint64_t lo = s->lay.res_off + (uint64_t)slot * s->lay.res_size;
    size_t at = res_page(s, slot, off), n = pages_of(len);
    if (off + n * POOL_SHM_PAGE > lo + RES_HOT)
        punch(s->base + off, n * POOL_SHM_PAGE);
    clr_bits(held_bm(s, slot), at, n, NULL);
    clr_bits(shared_bm(s->base, &s->lay, slot), at, n, NULL);
    s->res_held -= n * POOL_SHM_PAGE;
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
    ssize_t i = -1;
    int last = 0;
    pthread_mutex_lock(&s->mu);
    if (held && s->nkept > 0 && (i = kept_index(s, off)) >= 0) {
        /* taken over by a caller: freed here only if it let go already */
        s->kept[i].owners &= ~POOL_SHM_KEPT_OUTCOME;
        last = s->kept[i].owners == 0;
        if (last) {
            res_free_held(s, s->kept[i].slot, off, (size_t)s->kept[i].len);
            s->kept[i] = s->kept[--s->nkept];
        }
    } else if (held) {
        res_free_held(s, slot, off, len);
    } else {
        clr_bits(shared_bm(s->base, &s->lay, slot), at, n, held_bm(s, slot));
    }
    pthread_mutex_unlock(&s->mu);
    if (last)
        pool__shm_unref(s); /* the keep's; the outcome holds its own */
}

int pool__shm_keep(pool__shm_t *s, const void *p, size_t *len)
{
    const uint8_t *b = p;
    if (b < s->base + s->lay.res_off || b >= s->base + s->lay.size ||
        (uint64_t)(b - s->base - s->lay.res_off) % POOL_SHM_PAGE != 0)
        return -1;
    uint64_t off = (uint64_t)(b - s->base);
    int slot = (int)((off - s->lay.res_off) / s->lay.res_size);
    size_t at = res_page(s, slot, off);
    _Atomic uint64_t *h = held_bm(s, slot);
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (any_set(h, at, 1) && kept_index(s, off) < 0 &&
        (s->nkept < s->capkept ||
         grow((void **)&s->kept, &s->capkept, sizeof *s->kept) == 0)) {
        /* The held map has no block boundaries: the length is the
         * caller's view's, which the outcome named. */
        s->kept[s->nkept].off = off;
        s->kept[s->nkept].len = *len;
        s->kept[s->nkept].slot = slot;
        s->kept[s->nkept].owners = POOL_SHM_KEPT_OUTCOME | POOL_SHM_KEPT_CALLER;
        s->nkept++;
        pool__shm_ref(s);
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int pool__shm_kept_release(pool__shm_t *s, const void *p)
{
    const uint8_t *b = p;
    if (b < s->base || b >= s->base + s->lay.size)
        return -1;
    pthread_mutex_lock(&s->mu);
    ssize_t i = kept_index(s, (uint64_t)(b - s->base));
    int last = 0;
    if (i >= 0 && !(s->kept[i].owners & POOL_SHM_KEPT_CALLER)) {
        i = -1; /* released twice */
    } else if (i >= 0) {
        /* Still named by the outcome that delivered it: freeing it now
         * would let a worker reuse the pages before that outcome's release
         * (which would then free them a second time). */
        s->kept[i].owners &= ~POOL_SHM_KEPT_CALLER;
        last = s->kept[i].owners == 0;
        if (last) {
            res_free_held(s, s->kept[i].slot, s->kept[i].off,
                          (size_t)s->kept[i].len);
            s->kept[i] = s->kept[--s->nkept];
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (i < 0)
        return -1;
    if (last)
        pool__shm_unref(s);
    return 0;
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

void pool__shm_worker_free(uint8_t *base, const pool__shm_layout_t *lay,
                           int slot, uint64_t off, size_t len)
{
    uint64_t lo = lay->res_off + (uint64_t)slot * lay->res_size;
    if (off < lo || off >= lo + lay->res_size || len == 0)
        return;
    clr_bits(shared_bm(base, lay, slot), (size_t)((off - lo) / POOL_SHM_PAGE),
             pages_of(len), NULL);
}

/* ---- the shared heap ------------------------------------------------------ */

typedef struct heap_block {
    uint64_t off, len; /* len: the caller's bytes (pages: pages_of(len)) */
} heap_block_t;

static struct {
    pthread_mutex_t mu;
    int state; /* 0: not tried, 1: made, -1: failed */
    pool__heap_t h;
    pk_error_t why; /* state -1 */
    _Atomic uint64_t *bm;
    heap_block_t *blocks; /* sorted by off */
    size_t n, cap;
    size_t bytes;
} heap = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pk_err_t heap_make(pk_error_t *err)
{
    uint64_t size = POOL_SHM_HEAP_DEFAULT;
    const char *env = getenv("PICKLEPOOL_SHARED_BYTES");
    if (env != NULL && *env != '\0') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(env, &end, 10);
        if (errno != 0 || *end != '\0' || v < MIN_REGION ||
            v > ((uint64_t)1 << 46))
            return pk__err(err, PK_EINVAL,
                           "PICKLEPOOL_SHARED_BYTES=%s: want a number of bytes "
                           "from %llu to 2^46",
                           env, (unsigned long long)MIN_REGION);
        size = (uint64_t)v & ~(uint64_t)(POOL_SHM_PAGE - 1);
    }
    int fd = memfd_create("picklepool-shared", MFD_CLOEXEC);
    if (fd < 0)
        return pk__err_sys(err, PK_ESYS, errno, "memfd for the shared heap");
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return pk__err_sys(err, PK_ESYS, e, "sizing the shared heap");
    }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        close(fd);
        return pk__err_sys(err, PK_ESYS, e, "mmap of the shared heap");
    }
    heap.bm =
        pk__calloc((size_t)(size / POOL_SHM_PAGE + 63) / 64, sizeof *heap.bm);
    if (heap.bm == NULL) {
        munmap(m, size);
        close(fd);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    heap.h.fd = fd;
    heap.h.base = m;
    heap.h.size = size;
    return PK_OK;
}

pk_err_t pool__heap_get(pool__heap_t **h, pk_error_t *err)
{
    pk_err_t rc = PK_OK;
    pthread_mutex_lock(&heap.mu);
    if (heap.state == 0) {
        pk_error_clear(&heap.why);
        if (heap_make(&heap.why) == PK_OK)
            heap.state = 1;
        else /* tried again next time */
            rc = heap.why.code;
        if (rc != PK_OK && err != NULL)
            *err = heap.why;
    }
    pthread_mutex_unlock(&heap.mu);
    *h = rc == PK_OK ? &heap.h : NULL;
    return rc;
}

void pool__heap_fini(void)
{
    pthread_mutex_lock(&heap.mu);
    if (heap.state == 1 && heap.n == 0) {
        munmap(heap.h.base, heap.h.size);
        close(heap.h.fd);
        pk__free(heap.bm);
        pk__free(heap.blocks);
        heap.bm = NULL;
        heap.blocks = NULL;
        heap.cap = 0;
        heap.bytes = 0;
        memset(&heap.h, 0, sizeof heap.h);
        heap.state = 0;
    }
    pthread_mutex_unlock(&heap.mu);
}

pool__heap_t *pool__heap_peek(void)
{
    pthread_mutex_lock(&heap.mu);
    pool__heap_t *h = heap.state == 1 ? &heap.h : NULL;
    pthread_mutex_unlock(&heap.mu);
    return h;
}

/* Index of the first block with off >= o (under mu). */
static size_t heap_lower(uint64_t o)
{
    size_t lo = 0, hi = heap.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (heap.blocks[mid].off < o)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void *pool__heap_alloc(size_t len, int *nomem)
{
    void *p = NULL;
    *nomem = 0;
    pthread_mutex_lock(&heap.mu);
    size_t nbits = heap.state == 1 ? (size_t)(heap.h.size / POOL_SHM_PAGE) : 0;
    size_t need = pages_of(len);
    if (len > 0 && need <= nbits && heap.n == heap.cap &&
        grow((void **)&heap.blocks, &heap.cap, sizeof *heap.blocks) != 0)
        *nomem = 1;
    else if (len > 0 && need <= nbits) {
        size_t at = find_run(heap.bm, nbits, need);
        if (at != SIZE_MAX) {
            set_bits(heap.bm, at, need);
            uint64_t off = (uint64_t)at * POOL_SHM_PAGE;
            size_t i = heap_lower(off);
            memmove(&heap.blocks[i + 1], &heap.blocks[i],
                    (heap.n - i) * sizeof *heap.blocks);
            heap.blocks[i].off = off;
            heap.blocks[i].len = len;
            heap.n++;
            heap.bytes += need * POOL_SHM_PAGE;
            p = heap.h.base + off;
        }
    }
    pthread_mutex_unlock(&heap.mu);
    return p;
}

int pool__heap_free(const void *p)
{
    int rc = -1;
    pthread_mutex_lock(&heap.mu);
    const uint8_t *b = p;
    if (heap.state == 1 && b >= heap.h.base && b < heap.h.base + heap.h.size) {
        uint64_t off = (uint64_t)(b - heap.h.base);
        size_t i = heap_lower(off);
        if (i < heap.n && heap.blocks[i].off == off) {
            size_t n = pages_of((size_t)heap.blocks[i].len);
            if (off + n * POOL_SHM_PAGE > POOL_SHM_HOT)
                punch(heap.h.base + off, n * POOL_SHM_PAGE);
            clr_bits(heap.bm, (size_t)(off / POOL_SHM_PAGE), n, NULL);
            memmove(&heap.blocks[i], &heap.blocks[i + 1],
                    (heap.n - i - 1) * sizeof *heap.blocks);
            heap.n--;
            heap.bytes -= n * POOL_SHM_PAGE;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&heap.mu);
    return rc;
}

uint64_t pool__heap_find(const void *p, size_t len)
{
    uint64_t r = UINT64_MAX;
    pthread_mutex_lock(&heap.mu);
    const uint8_t *b = p;
    if (heap.state == 1 && heap.n > 0 && b >= heap.h.base &&
        b < heap.h.base + heap.h.size) {
        uint64_t off = (uint64_t)(b - heap.h.base);
        size_t i = heap_lower(off + 1); /* first block after off */
        if (i > 0) {
            const heap_block_t *k = &heap.blocks[i - 1];
            if (off - k->off < k->len && len <= k->len - (off - k->off))
                r = off;
        }
    }
    pthread_mutex_unlock(&heap.mu);
    return r;
}

void pool__heap_usage(size_t *blocks, size_t *bytes)
{
    pthread_mutex_lock(&heap.mu);
    *blocks = heap.n;
    *bytes = heap.bytes;
    pthread_mutex_unlock(&heap.mu);
}
