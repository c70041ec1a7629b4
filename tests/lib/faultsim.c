/*
 * faultsim.c - the failing, counting allocator the tests install with
 * pk_set_allocator (see faultsim.h).  The arming thread is known by its
 * kernel thread id: unlike pthread_self(), a forked child's thread gets a
 * new one, so a child that inherited the hook never matches.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include "picklepool/alloc.h"
#include "faultsim.h"

static _Atomic long fail_at; /* 0: never */
static _Atomic long calls;
static _Atomic long live;
static _Atomic pid_t armed_tid, armed_pid;
static atomic_int others; /* count the other threads', not the armer's */

/* Whether this allocation is the one to fail (counting it if armed). */
static int should_fail(void)
{
    long n = atomic_load(&fail_at);
    if (n == 0)
        return 0;
    int mine = gettid() == atomic_load(&armed_tid);
    if (atomic_load(&others) ? mine || getpid() != atomic_load(&armed_pid)
                             : !mine)
        return 0;
    return atomic_fetch_add(&calls, 1) + 1 == n;
}

static void *fs_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    void *p = malloc(n);
    if (p != NULL)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *fs_realloc(void *ptr, size_t n)
{
    if (should_fail())
        return NULL;
    void *p = realloc(ptr, n);
    if (ptr == NULL && p != NULL)
        atomic_fetch_add(&live, 1);
    return p;
}

static void fs_free(void *p)
{
    if (p != NULL)
        atomic_fetch_sub(&live, 1);
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
    atomic_store(&fail_at, 0);
}

static void arm(long n, int other_threads)
{
    atomic_store(&fail_at, 0);
    atomic_store(&calls, 0);
    atomic_store(&armed_tid, gettid());
    atomic_store(&armed_pid, getpid());
    atomic_store(&others, other_threads);
    atomic_store(&fail_at, n);
}

void faultsim_fail_at(long n)
{
    arm(n, 0);
}

void faultsim_fail_others_at(long n)
{
    arm(n, 1);
}

void faultsim_reset(long n)
{
    faultsim_fail_at(n);
    atomic_store(&live, 0);
}

long faultsim_calls(void)
{
    return atomic_load(&calls);
}

int faultsim_fired(void)
{
    long n = atomic_load(&fail_at);
    return n > 0 && atomic_load(&calls) >= n;
}

long faultsim_live(void)
{
    return atomic_load(&live);
}
