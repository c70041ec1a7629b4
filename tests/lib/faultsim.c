/*
 * faultsim.c - the failing, counting allocator the codec tests install with
 * pk_set_allocator (see faultsim.h).
 */
#include <stdlib.h>

#include "picklepool/value.h"
#include "faultsim.h"

static long fail_at; /* 0: never */
static long calls;
static long live;

static void *fs_malloc(size_t n)
{
    if (fail_at && ++calls == fail_at)
        return NULL;
    void *p = malloc(n);
    live += p != NULL;
    return p;
}

static void *fs_realloc(void *ptr, size_t n)
{
    if (fail_at && ++calls == fail_at)
        return NULL;
    void *p = realloc(ptr, n);
    live += ptr == NULL && p != NULL;
    return p;
}

static void fs_free(void *p)
{
    live -= p != NULL;
    free(p);
}

static const pk_allocator_t hook = {fs_malloc, fs_realloc, fs_free};

void faultsim_install(void)
{
    faultsim_reset(0);
    pk_set_allocator(&hook);
}

void faultsim_remove(void)
{
    pk_set_allocator(NULL);
    fail_at = 0;
}

void faultsim_fail_at(long n)
{
    fail_at = n;
    calls = 0;
}

void faultsim_reset(long n)
{
    faultsim_fail_at(n);
    live = 0;
}

long faultsim_calls(void)
{
    return calls;
}

long faultsim_live(void)
{
    return live;
}
