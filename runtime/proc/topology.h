/*
 * topology.h - hwloc topology and worker placement (private).
 *
 * The only file that includes hwloc.h is topology.c.  A cpuset crosses this
 * interface as a plain bitmask (pool__cpuset_t) so the rest of the runtime and
 * the fork server never touch hwloc objects: the fork server's children bind
 * themselves with pool__topo_bind_self() using a topology loaded before the
 * fork (hwloc topologies are plain memory and usable in a forked child).
 */
#ifndef POOL_TOPOLOGY_H
#define POOL_TOPOLOGY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "picklepool/error.h"
#include "picklepool/placement.h"

#define POOL_MAX_CPUS 1024

typedef struct pool__cpuset {
    uint64_t bits[POOL_MAX_CPUS / 64]; /* OS processor indices (PUs) */
} pool__cpuset_t;

typedef struct pool__topo pool__topo_t;

/* What one worker gets. */
typedef struct pool__place {
    pool__cpuset_t cpus; /* the PUs it is bound to (all allowed PUs for none) */
    int core;            /* logical index of its core, -1 for placement none */
    int pu;              /* first OS PU index in cpus, -1 if empty */
} pool__place_t;

/* Loads the machine's topology, restricted to the CPUs this process may use
 * (cgroup / affinity mask), or a synthetic one ("pack:2 core:4 pu:2") for
 * tests when `synthetic` is non-NULL.  Returns PK_OK, PK_EINVAL (bad synthetic
 * string) or PK_ESYS. */
pk_err_t pool__topo_load(pool__topo_t **tp, const char *synthetic,
                         pk_error_t *err);
void pool__topo_free(pool__topo_t **tp);

/* Number of cores (not PUs) the process may use; >= 1. */
int pool__topo_ncores(const pool__topo_t *t);
/* Number of PUs the process may use; >= 1. */
int pool__topo_npus(const pool__topo_t *t);
/* Non-zero for a synthetic topology (its PUs are imaginary: binding to them
 * is skipped, see pool__topo_bind_self). */
int pool__topo_is_synthetic(const pool__topo_t *t);

/* Placement of n workers: compact (consecutive cores, wrapping round when n
 * exceeds the cores), spread (hwloc_distrib over the allowed cores, singlified
 * to one core each), none (every worker gets the whole allowed set, core -1).
 * `out` has n entries.  Returns PK_OK or PK_EINVAL (n < 1). */
pk_err_t pool__topo_place(const pool__topo_t *t, int n, pool_placement_t pl,
                          pool__place_t *out, pk_error_t *err);

/* Binds the calling process (HWLOC_CPUBIND_PROCESS, so threads it starts later
 * inherit the binding) to `cpus`.  Safe in a forked child.  With a synthetic
 * topology nothing is bound and PK_OK is returned.  Returns PK_OK or
 * PK_ESYS. */
pk_err_t pool__topo_bind_self(const pool__topo_t *t, const pool__cpuset_t *cpus,
                              pk_error_t *err);

/* The CPU set the calling process is currently allowed to run on (read with
 * sched_getaffinity; no hwloc needed). */
pk_err_t pool__cpuset_get_self(pool__cpuset_t *out, pk_error_t *err);

/* Formats a cpuset as a list "0-3,8" into buf.  Returns buf. */
const char *pool__cpuset_str(const pool__cpuset_t *s, char *buf, size_t size);

/* Writes a human-readable description of the topology (packages, NUMA nodes,
 * cores, PUs; which are allowed) to fp, as `picklepool topo` prints it. */
void pool__topo_print(const pool__topo_t *t, FILE *fp);

#endif /* POOL_TOPOLOGY_H */
