/*
 * picklepool/placement.h - how workers are pinned to CPUs.
 *
 * The names follow OpenMP and MPI.  Used by pool_opts_t (pool.h) and by the
 * standalone worker's --placement option.
 *
 * Thread-safety: declarations only.  Fork-safe.
 */
#ifndef PICKLEPOOL_PLACEMENT_H
#define PICKLEPOOL_PLACEMENT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pool_placement {
    POOL_PLACE_COMPACT = 0, /* consecutive cores (OpenMP "close") */
    POOL_PLACE_SPREAD, /* spread over packages / NUMA nodes (hwloc_distrib) */
    POOL_PLACE_NONE    /* no binding: every worker may use every allowed CPU */
} pool_placement_t;

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_PLACEMENT_H */
