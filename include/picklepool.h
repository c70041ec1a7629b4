/*
 * picklepool.h - umbrella header: include this one.
 *
 * picklepool is a multiprocessing worker-pool runtime: a master pickles tasks,
 * sends them over ZeroMQ to forked workers pinned to cores with hwloc, and
 * gathers the results in input order.  Modules:
 *   picklepool/version.h   the version of the headers and of the library
 *   picklepool/export.h    PK_API, the mark of an exported function
 *   picklepool/error.h     the error enum and detail struct
 *   picklepool/alloc.h     the allocator hook
 *   picklepool/value.h     the C value model (documents, values)
 *   picklepool/pickle.h    the safe CPython-compatible pickle codec
 *   picklepool/registry.h  native functions callable by workers, plugins
 *   picklepool/placement.h how workers are pinned to cores
 *   picklepool/pool.h      the worker pool: pool_map and friends
 *   picklepool/worker.h    exec'd workers (Python workers): pool_worker_serve
 *   picklepool/shared.h    arrays the workers read in place, result views
 */
#ifndef PICKLEPOOL_H
#define PICKLEPOOL_H

#include "picklepool/version.h"
#include "picklepool/error.h"
#include "picklepool/alloc.h"
#include "picklepool/value.h"
#include "picklepool/pickle.h"
#include "picklepool/registry.h"
#include "picklepool/placement.h"
#include "picklepool/pool.h"
#include "picklepool/worker.h"
#include "picklepool/shared.h"

#endif /* PICKLEPOOL_H */
