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
#include <string.h>

#include "common.h"

static pk_allocator_t current = {malloc, realloc, free};

int pk__alloc_is_default(void)
{
    return current.malloc == malloc;
}

void pk_set_allocator(const pk_allocator_t *a)
{
    /* Cached arena chunks belong to the allocator that made them. */
    pk__arena_cache_flush();
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
