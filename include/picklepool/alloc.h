/*
 * picklepool/alloc.h - the allocator every picklepool allocation goes through.
 *
 * For failure injection in tests (fail the Nth allocation) and for embedding
 * picklepool in a program with its own allocator.
 *
 * Thread-safety: see pk_set_allocator.  Fork-safe: a forked child keeps the
 * allocator that was installed in its parent.
 */
#ifndef PICKLEPOOL_ALLOC_H
#define PICKLEPOOL_ALLOC_H

#include <stddef.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pk_allocator {
    void *(*malloc)(size_t size);
    void *(*realloc)(void *ptr, size_t size);
    void (*free)(void *ptr);
} pk_allocator_t;

/* Replaces the allocator used by every picklepool allocation (NULL restores
 * malloc/realloc/free).  Not thread-safe: call it while no other picklepool
 * call is running, and free what was allocated with the old allocator first. */
PK_API void pk_set_allocator(const pk_allocator_t *a);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_ALLOC_H */
