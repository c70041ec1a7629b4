/*
 * alloc.c - the allocator hook.  Every allocation picklepool makes goes
 * through pk__malloc/pk__calloc/pk__realloc/pk__free, which call the functions
 * installed by pk_set_allocator() (malloc/realloc/free by default).  Tests use
 * the hook to fail the Nth allocation and to count what is still outstanding;
 * embedders use it to route memory to their own heap.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "core/common.h"

static pk_allocator_t current = {malloc, realloc, free};

int pk__alloc_is_default(void)
{
    return current.malloc == malloc;
}

void pk_set_allocator(const pk_allocator_t *a)
{
    /* Cached blocks belong to the allocator that made them. */
    pk__cache_flush();
    if (a == NULL) {
        current.malloc = malloc;
        current.realloc = realloc;
        current.free = free;
        return;
    }
    assert(a->malloc != NULL && a->realloc != NULL && a->free != NULL);
    current = *a;
}

/* A zero-byte request still gets a unique pointer, so that NULL always means
 * out of memory to the caller. */
void *pk__malloc(size_t size)
{
    return current.malloc(size ? size : 1);
}

void *pk__calloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *p = pk__malloc(n * size);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

void *pk__realloc(void *ptr, size_t size)
{
    return current.realloc(ptr, size ? size : 1);
}

int pk__grow_bytes(uint8_t **data, size_t *cap, size_t len, size_t extra,
                   size_t first)
{
    if (*cap - len >= extra)
        return 0;
    if (extra > SIZE_MAX - len)
        return -1;
    size_t nc = *cap ? *cap : first;
    while (nc - len < extra) {
        if (nc > SIZE_MAX / 2) {
            nc = len + extra;
            break;
        }
        nc *= 2;
    }
    uint8_t *d = pk__realloc(*data, nc);
    if (d == NULL)
        return -1;
    *data = d;
    *cap = nc;
    return 0;
}

void pk__free(void *ptr)
{
    if (ptr != NULL)
        current.free(ptr);
}

char *pk__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = pk__malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* Big buffers touched at random (hash indexes) or written once through
 * (encoder output) pay a page fault per 4 KiB, and on a virtual machine each
 * fault and TLB miss is dear; huge pages cut both by 512.  Advice only, on the
 * 2 MiB-aligned interior: harmless where transparent huge pages are off. */
#define HUGE_PAGE (2u * 1024 * 1024)
#define HUGE_MIN (4u * 1024 * 1024)

void pk__advise_huge(void *p, size_t size)
{
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t hi = ((uintptr_t)p + size) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (size >= HUGE_MIN && hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

/* ---- block cache ---------------------------------------------------------
 * Big blocks freed by one document or encoder buffer are kept, up to a bound,
 * for the next: a stream of docs (a decode loop, the pool's batches) or of
 * pk_dumps outputs then reuses memory that is already faulted in, instead of
 * glibc unmapping it and the next user paying a page fault per 4 KiB (dear on
 * a virtual machine).  Only with the default allocator, so that a test's
 * counting allocator sees every block come back (pk_set_allocator flushes). */
#define CACHE_MAX (64u * 1024 * 1024)
#define CACHE_SLOTS 64

static struct {
    pthread_mutex_t mu;
    size_t bytes;
    _Atomic size_t n; /* peeked without the lock: an empty cache costs none */
    struct {
        void *p;
        size_t size;
    } slot[CACHE_SLOTS];
} cache = {.mu = PTHREAD_MUTEX_INITIALIZER};
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

/* A child forked while another thread held the lock gets it unlocked. */
static void cache_lock(void)
{
    pthread_mutex_lock(&cache.mu);
}
static void cache_unlock(void)
{
    pthread_mutex_unlock(&cache.mu);
}
static void cache_init(void)
{
    pthread_atfork(cache_lock, cache_unlock, cache_unlock);
}

void *pk__cache_take(size_t min, size_t *size)
{
    if (!pk__alloc_is_default() ||
        atomic_load_explicit(&cache.n, memory_order_relaxed) == 0)
        return NULL;
    pthread_once(&cache_once, cache_init);
    cache_lock();
    size_t best = CACHE_SLOTS; /* the smallest block that fits */
    for (size_t i = 0; i < cache.n; i++)
        if (cache.slot[i].size >= min &&
            (best == CACHE_SLOTS || cache.slot[i].size < cache.slot[best].size))
            best = i;
    void *p = NULL;
    if (best != CACHE_SLOTS) {
        p = cache.slot[best].p;
        *size = cache.slot[best].size;
        cache.bytes -= *size;
        cache.slot[best] = cache.slot[--cache.n];
    }
    cache_unlock();
    return p;
}

void pk__cache_put(void *p, size_t size)
{
    if (p != NULL && pk__alloc_is_default()) {
        pthread_once(&cache_once, cache_init);
        cache_lock();
        if (cache.n < CACHE_SLOTS && size <= CACHE_MAX - cache.bytes) {
            cache.slot[cache.n].p = p;
            cache.slot[cache.n].size = size;
            cache.n++;
            cache.bytes += size;
            p = NULL;
        }
        cache_unlock();
    }
    pk__free(p);
}

void pk__cache_flush(void)
{
    pthread_once(&cache_once, cache_init);
    for (;;) {
        cache_lock();
        void *p = cache.n ? cache.slot[--cache.n].p : NULL;
        if (p != NULL)
            cache.bytes -= cache.slot[cache.n].size;
        cache_unlock();
        if (p == NULL)
            return;
        pk__free(p);
    }
}
