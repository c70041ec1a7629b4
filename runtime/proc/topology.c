/*
 * topology.c - hwloc topology loading, worker placement and CPU binding.
 *
 * The only file of picklepool that includes hwloc.h.  A pool__topo_t holds two
 * hwloc topologies: `full`, the machine as hwloc sees it (printed by
 * `picklepool topo`, so that CPUs the process may not use still show), and
 * `topo`, a copy restricted to the allowed PUs (the cgroup cpuset and the
 * affinity mask the process was started with), on which placement and binding
 * work.  In the restricted copy logical indexes count allowed objects only, so
 * "core i" means the i-th core this process may use.  A synthetic topology has
 * no disallowed PUs: both handles are the same object.
 *
 * Placement policies (names from OpenMP / MPI):
 *   compact  worker i -> allowed core (i mod ncores), in logical order;
 *   spread   for n <= ncores, hwloc_distrib() picks n cores as far apart as
 *            the tree allows (packages, NUMA groups, shared caches), each set
 *            singlified to one core; the chosen cores are then ordered
 *            round-robin over the tree, so consecutive workers alternate
 *            packages (and NUMA nodes within them) and any prefix of the
 *            workers is itself spread.  For n > ncores every core is used in
 *            that round-robin order and the workers wrap round;
 *   none     every worker gets the whole allowed set, core -1.
 * A worker placed on a core gets all the allowed PUs of that core (its
 * hyperthreads): the kernel balances the PUs of one core between the workers
 * that share it when there are more workers than cores.
 */
#define _GNU_SOURCE
#include "proc/topology.h"

#include <errno.h>
#include <hwloc.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

struct pool__topo {
    hwloc_topology_t full; /* as loaded; == topo for synthetic topologies */
    hwloc_topology_t topo; /* restricted to the allowed PUs */
    int synthetic;
    int ncores; /* allowed "cores" (PUs when hwloc found no cores) */
    int npus;
    hwloc_obj_type_t core_type; /* HWLOC_OBJ_CORE, or HWLOC_OBJ_PU */
    hwloc_bitmap_t allowed;     /* allowed PUs (OS indexes) */
    int *spread_order;          /* ncores logical core indexes, round-robin */
};

/* ---- cpuset conversion ------------------------------------------------- */

static void cpuset_clear(pool__cpuset_t *s)
{
    memset(s, 0, sizeof *s);
}

static void cpuset_set(pool__cpuset_t *s, unsigned cpu)
{
    if (cpu < POOL_MAX_CPUS)
        s->bits[cpu / 64] |= UINT64_C(1) << (cpu % 64);
}

static int cpuset_isset(const pool__cpuset_t *s, unsigned cpu)
{
    return cpu < POOL_MAX_CPUS && (s->bits[cpu / 64] >> (cpu % 64)) & 1;
}

static int cpuset_first(const pool__cpuset_t *s)
{
    for (unsigned w = 0; w < PK_ARRAY_LEN(s->bits); w++)
        if (s->bits[w])
            return (int)(w * 64 + (unsigned)__builtin_ctzll(s->bits[w]));
    return -1;
}

static void cpuset_from_hwloc(pool__cpuset_t *s, hwloc_const_bitmap_t b)
{
    unsigned cpu;

    cpuset_clear(s);
    hwloc_bitmap_foreach_begin(cpu, b)
    {
        if (cpu >= POOL_MAX_CPUS)
            break;
        cpuset_set(s, cpu);
    }
    hwloc_bitmap_foreach_end();
}

static int cpuset_to_hwloc(hwloc_bitmap_t b, const pool__cpuset_t *s)
{
    hwloc_bitmap_zero(b);
    for (unsigned cpu = 0; cpu < POOL_MAX_CPUS; cpu++)
        if (cpuset_isset(s, cpu) && hwloc_bitmap_set(b, cpu) < 0)
            return -1;
    return 0;
}

const char *pool__cpuset_str(const pool__cpuset_t *s, char *buf, size_t size)
{
    size_t len = 0;
    int first = 1;

    if (size == 0)
        return buf;
    buf[0] = '\0';
    for (unsigned cpu = 0; cpu < POOL_MAX_CPUS; cpu++) {
        if (!cpuset_isset(s, cpu))
            continue;
        unsigned last = cpu;
        while (last + 1 < POOL_MAX_CPUS && cpuset_isset(s, last + 1))
            last++;
        int w;
        if (last == cpu)
            w = snprintf(buf + len, size - len, "%s%u", first ? "" : ",", cpu);
        else
            w = snprintf(buf + len, size - len, "%s%u-%u", first ? "" : ",",
                         cpu, last);
        if (w < 0 || (size_t)w >= size - len) {
            /* Truncated: end with "..." when there is room for it. */
            if (size >= 4)
                memcpy(buf + size - 4, "...", 4);
            else
                buf[size - 1] = '\0';
            return buf;
        }
        len += (size_t)w;
        first = 0;
        cpu = last;
    }
    return buf;
}

pk_err_t pool__cpuset_get_self(pool__cpuset_t *out, pk_error_t *err)
{
    /* Start with the glibc default (1024 CPUs) and grow when the kernel has
     * a larger mask (sched_getaffinity fails with EINVAL if ours is smaller).
     */
    for (size_t ncpus = 1024; ncpus <= (1u << 20); ncpus *= 2) {
        cpu_set_t *set = CPU_ALLOC(ncpus);
        size_t size = CPU_ALLOC_SIZE(ncpus);
        if (!set)
            return pk__err(err, PK_ENOMEM, "out of memory for a CPU mask");
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            cpuset_clear(out);
            for (size_t cpu = 0; cpu < ncpus && cpu < POOL_MAX_CPUS; cpu++)
                if (CPU_ISSET_S(cpu, size, set))
                    cpuset_set(out, (unsigned)cpu);
            CPU_FREE(set);
            return PK_OK;
        }
        int e = errno;
        CPU_FREE(set);
        if (e != EINVAL)
            return pk__err_sys(err, PK_ESYS, e, "sched_getaffinity");
    }
    return pk__err_sys(err, PK_ESYS, EINVAL, "sched_getaffinity");
}

/* ---- loading ----------------------------------------------------------- */

/* Round-robin order of the cores under obj (those with chosen[index] set, or
 * all when chosen is NULL): the orders of its children interleaved (first
 * core of child 0, first of child 1, ..., second of child 0, ...), so that
 * consecutive entries alternate between subtrees at every level.  Appends to
 * order[*n]. */
static int spread_walk(hwloc_obj_t obj, hwloc_obj_type_t core_type,
                       const char *chosen, int *order, int *n)
{
    if (obj->type == core_type) {
        if (!chosen || chosen[obj->logical_index])
            order[(*n)++] = (int)obj->logical_index;
        return 0;
    }
    if (obj->arity == 0)
        return 0;
    if (obj->arity == 1)
        return spread_walk(obj->children[0], core_type, chosen, order, n);

    int start = *n, total = 0;
    int *len = pk__calloc(obj->arity, sizeof *len);
    if (!len)
        return -1;
    for (unsigned c = 0; c < obj->arity; c++) {
        int before = *n;
        if (spread_walk(obj->children[c], core_type, chosen, order, n) < 0) {
            pk__free(len);
            return -1;
        }
        len[c] = *n - before;
        total += len[c];
    }
    int *tmp = pk__malloc((size_t)(total ? total : 1) * sizeof *tmp);
    if (!tmp) {
        pk__free(len);
        return -1;
    }
    int k = 0;
    for (int round = 0; k < total; round++) {
        int off = start;
        for (unsigned c = 0; c < obj->arity; c++) {
            if (round < len[c])
                tmp[k++] = order[off + round];
            off += len[c];
        }
    }
    memcpy(order + start, tmp, (size_t)total * sizeof *tmp);
    pk__free(tmp);
    pk__free(len);
    return 0;
}

static pk_err_t topo_index(pool__topo_t *t, pk_error_t *err)
{
    t->core_type = HWLOC_OBJ_CORE;
    t->ncores = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_CORE);
    if (t->ncores <= 0) { /* some VMs and platforms report PUs only */
        t->core_type = HWLOC_OBJ_PU;
        t->ncores = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_PU);
    }
    t->npus = hwloc_get_nbobjs_by_type(t->topo, HWLOC_OBJ_PU);
    if (t->ncores <= 0 || t->npus <= 0)
        return pk__err(err, PK_EUNSUPPORTED,
                       "hwloc found no usable processing unit");

    t->spread_order = pk__calloc((size_t)t->ncores, sizeof *t->spread_order);
    if (!t->spread_order)
        return pk__err(err, PK_ENOMEM, "out of memory for the topology");
    int n = 0;
    if (spread_walk(hwloc_get_root_obj(t->topo), t->core_type, NULL,
                    t->spread_order, &n) < 0)
        return pk__err(err, PK_ENOMEM, "out of memory for the topology");
    if (n != t->ncores)
        return pk__err(err, PK_EUNSUPPORTED,
                       "inconsistent hwloc topology (%d of %d cores)", n,
                       t->ncores);
    return PK_OK;
}

pk_err_t pool__topo_load(pool__topo_t **tp, const char *synthetic,
                         pk_error_t *err)
{
    pk_err_t rc;
    pool__topo_t *t = pk__calloc(1, sizeof *t);

    *tp = NULL;
    if (!t)
        return pk__err(err, PK_ENOMEM, "out of memory for the topology");
    t->allowed = hwloc_bitmap_alloc();
    if (!t->allowed) {
        rc = pk__err(err, PK_ENOMEM, "out of memory for the topology");
        goto fail;
    }
    if (hwloc_topology_init(&t->full) < 0) {
        t->full = NULL;
        rc = pk__err_sys(err, PK_ESYS, errno, "hwloc_topology_init");
        goto fail;
    }
    /* Keep the PUs the cgroup forbids in `full`, so that `topo` can show them
     * as not allowed; they are restricted away below. */
    if (!synthetic)
        hwloc_topology_set_flags(t->full,
                                 HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);

    if (synthetic) {
        t->synthetic = 1;
        if (hwloc_topology_set_synthetic(t->full, synthetic) < 0) {
            rc = pk__err(err, PK_EINVAL,
                         "invalid synthetic topology \"%s\" (want levels "
                         "like \"pack:2 numa:2 core:4 pu:2\", ending with pu)",
                         synthetic);
            goto fail;
        }
        if (hwloc_topology_load(t->full) < 0) {
            rc = pk__err_sys(err, PK_ESYS, errno, "hwloc_topology_load");
            goto fail;
        }
        t->topo = t->full;
        hwloc_bitmap_copy(t->allowed,
                          hwloc_topology_get_topology_cpuset(t->full));
    } else {
        /* Load the whole machine, then restrict a copy to what this process
         * may use: hwloc's allowed set (cgroup cpuset, offline CPUs removed)
         * intersected with our affinity mask (taskset, numactl, a parent's
         * binding).  Done by hand rather than with
         * HWLOC_TOPOLOGY_FLAG_RESTRICT_TO_CPUBINDING so that the result is
         * exactly the set pool__cpuset_get_self() reports. */
        pool__cpuset_t self;
        hwloc_bitmap_t mask = NULL;

        if (hwloc_topology_load(t->full) < 0) {
            rc = pk__err_sys(err, PK_ESYS, errno, "hwloc_topology_load");
            goto fail;
        }
        if ((rc = pool__cpuset_get_self(&self, err)) != PK_OK)
            goto fail;
        if (!(mask = hwloc_bitmap_alloc()) ||
            cpuset_to_hwloc(mask, &self) < 0) {
            hwloc_bitmap_free(mask);
            rc = pk__err(err, PK_ENOMEM, "out of memory for the topology");
            goto fail;
        }
        hwloc_bitmap_and(t->allowed, hwloc_topology_get_allowed_cpuset(t->full),
                         mask);
        hwloc_bitmap_and(t->allowed, t->allowed,
                         hwloc_topology_get_topology_cpuset(t->full));
        hwloc_bitmap_free(mask);
        if (hwloc_bitmap_iszero(t->allowed)) {
            rc = pk__err(err, PK_EUNSUPPORTED,
                         "no CPU of the topology is allowed");
            goto fail;
        }
        if (hwloc_topology_dup(&t->topo, t->full) < 0) {
            t->topo = NULL;
            rc = pk__err_sys(err, PK_ESYS, errno, "hwloc_topology_dup");
            goto fail;
        }
        if (!hwloc_bitmap_isequal(
                t->allowed, hwloc_topology_get_topology_cpuset(t->topo)) &&
            hwloc_topology_restrict(t->topo, t->allowed,
                                    HWLOC_RESTRICT_FLAG_REMOVE_CPULESS) < 0) {
            rc = pk__err_sys(err, PK_ESYS, errno, "hwloc_topology_restrict");
            goto fail;
        }
    }
    if ((rc = topo_index(t, err)) != PK_OK)
        goto fail;
    *tp = t;
    return PK_OK;

fail:
    pool__topo_free(&t);
    return rc;
}

void pool__topo_free(pool__topo_t **tp)
{
    pool__topo_t *t = tp ? *tp : NULL;

    if (!t)
        return;
    if (t->topo && t->topo != t->full)
        hwloc_topology_destroy(t->topo);
    if (t->full)
        hwloc_topology_destroy(t->full);
    hwloc_bitmap_free(t->allowed);
    pk__free(t->spread_order);
    pk__free(t);
    *tp = NULL;
}

int pool__topo_ncores(const pool__topo_t *t)
{
    return t->ncores;
}
int pool__topo_npus(const pool__topo_t *t)
{
    return t->npus;
}
int pool__topo_is_synthetic(const pool__topo_t *t)
{
    return t->synthetic;
}

/* ---- placement ----------------------------------------------------------- */

static void place_core(const pool__topo_t *t, int core, pool__place_t *p)
{
    hwloc_obj_t obj =
        hwloc_get_obj_by_type(t->topo, t->core_type, (unsigned)core);
    cpuset_from_hwloc(&p->cpus, obj->cpuset);
    p->core = core;
    p->pu = cpuset_first(&p->cpus);
}

/* The n (<= ncores) distinct cores spread chooses, in spread_order. */
static pk_err_t spread_pick(const pool__topo_t *t, int n, int *cores,
                            pk_error_t *err)
{
    hwloc_bitmap_t *sets = pk__calloc((size_t)n, sizeof *sets);
    char *chosen = pk__calloc((size_t)t->ncores, 1);
    hwloc_obj_t root = hwloc_get_root_obj(t->topo);
    int depth = hwloc_get_type_depth(t->topo, t->core_type);
    pk_err_t rc = PK_OK;

    if (!sets || !chosen) {
        rc = pk__err(err, PK_ENOMEM, "out of memory for placement");
        goto out;
    }
    /* hwloc_distrib allocates sets[i] itself (freed below). */
    if (hwloc_distrib(t->topo, &root, 1, sets, (unsigned)n, depth, 0) < 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "hwloc_distrib");
        goto out;
    }
    int extra = 0;
    for (int i = 0; i < n; i++) {
        hwloc_obj_t core = NULL;
        hwloc_bitmap_singlify(sets[i]);
        if (!hwloc_bitmap_iszero(sets[i]))
            core = hwloc_get_next_obj_covering_cpuset_by_type(
                t->topo, sets[i], t->core_type, NULL);
        if (core && !chosen[core->logical_index])
            chosen[core->logical_index] = 1;
        else
            extra++; /* distrib's rounding doubled up a core: fixed below */
    }
    /* If distrib (which weighs subtrees by PU count) doubled up on a core
     * where SMT is uneven, take the first unused cores in round-robin order
     * instead.  Then emit the chosen cores round-robin over the tree. */
    for (int j = 0; j < t->ncores && extra > 0; j++)
        if (!chosen[t->spread_order[j]]) {
            chosen[t->spread_order[j]] = 1;
            extra--;
        }
    int k = 0;
    if (spread_walk(root, t->core_type, chosen, cores, &k) < 0)
        rc = pk__err(err, PK_ENOMEM, "out of memory for placement");
    else if (k != n)
        rc = pk__err(err, PK_EUNSUPPORTED,
                     "inconsistent spread placement (%d of %d)", k, n);
out:
    if (sets)
        for (int i = 0; i < n; i++)
            hwloc_bitmap_free(sets[i]);
    pk__free(sets);
    pk__free(chosen);
    return rc;
}

pk_err_t pool__topo_place(const pool__topo_t *t, int n, pool_placement_t pl,
                          pool__place_t *out, pk_error_t *err)
{
    if (n < 1)
        return pk__err(err, PK_EINVAL,
                       "placement needs at least one worker, got %d", n);
    switch (pl) {
    case POOL_PLACE_COMPACT:
        for (int i = 0; i < n; i++)
            place_core(t, i % t->ncores, &out[i]);
        return PK_OK;
    case POOL_PLACE_SPREAD: {
        if (n >= t->ncores) {
            for (int i = 0; i < n; i++)
                place_core(t, t->spread_order[i % t->ncores], &out[i]);
            return PK_OK;
        }
        int *cores = pk__malloc((size_t)n * sizeof *cores);
        if (!cores)
            return pk__err(err, PK_ENOMEM, "out of memory for placement");
        pk_err_t rc = spread_pick(t, n, cores, err);
        if (rc == PK_OK)
            for (int i = 0; i < n; i++)
                place_core(t, cores[i], &out[i]);
        pk__free(cores);
        return rc;
    }
    case POOL_PLACE_NONE:
        for (int i = 0; i < n; i++) {
            cpuset_from_hwloc(&out[i].cpus, t->allowed);
            out[i].core = -1;
            out[i].pu = cpuset_first(&out[i].cpus);
        }
        return PK_OK;
    }
    return pk__err(err, PK_EINVAL, "unknown placement %d", (int)pl);
}

/* ---- binding ------------------------------------------------------------- */

pk_err_t pool__topo_bind_self(const pool__topo_t *t, const pool__cpuset_t *cpus,
                              pk_error_t *err)
{
    /* A synthetic topology describes an imaginary machine: its PU numbers
     * mean nothing here, so binding to them is skipped (pools built on one
     * exercise placement logic, not the kernel). */
    if (t->synthetic)
        return PK_OK;

    /* Plain memory and system calls only: safe in a child forked after the
     * topology was loaded (hwloc's Linux backend walks /proc/self/task and
     * calls sched_setaffinity for each thread of the process). */
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set || cpuset_to_hwloc(set, cpus) < 0) {
        hwloc_bitmap_free(set);
        return pk__err(err, PK_ENOMEM, "out of memory for a CPU set");
    }
    if (hwloc_bitmap_iszero(set)) {
        hwloc_bitmap_free(set);
        return pk__err_sys(err, PK_ESYS, EINVAL,
                           "cannot bind to an empty CPU set");
    }
    if (hwloc_set_cpubind(t->topo, set, HWLOC_CPUBIND_PROCESS) < 0) {
        int e = errno;
        char buf[128];
        hwloc_bitmap_free(set);
        return pk__err_sys(err, PK_ESYS, e, "binding to CPUs %s",
                           pool__cpuset_str(cpus, buf, sizeof buf));
    }
    hwloc_bitmap_free(set);
    return PK_OK;
}

/* ---- printing ------------------------------------------------------------ */

static void print_obj(const pool__topo_t *t, hwloc_obj_t obj, int indent,
                      FILE *fp)
{
    char buf[256];
    int shown = 0;

    switch (obj->type) {
    case HWLOC_OBJ_MACHINE:
    case HWLOC_OBJ_PACKAGE:
    case HWLOC_OBJ_GROUP:
    case HWLOC_OBJ_NUMANODE:
    case HWLOC_OBJ_CORE:
    case HWLOC_OBJ_PU: {
        pool__cpuset_t cs, al;
        int allowed =
            obj->cpuset && hwloc_bitmap_intersects(obj->cpuset, t->allowed);
        cpuset_from_hwloc(&cs, obj->cpuset ? obj->cpuset : t->allowed);
        fprintf(fp, "%*s%s L#%u", indent, "", hwloc_obj_type_string(obj->type),
                obj->logical_index);
        if (obj->os_index != HWLOC_UNKNOWN_INDEX &&
            obj->type != HWLOC_OBJ_MACHINE && obj->type != HWLOC_OBJ_GROUP)
            fprintf(fp, " P#%u", obj->os_index);
        if (obj->type == HWLOC_OBJ_NUMANODE && obj->attr)
            fprintf(
                fp, " (%llu MB)",
                (unsigned long long)(obj->attr->numanode.local_memory >> 20));
        if (obj->type != HWLOC_OBJ_PU) {
            fprintf(fp, " PUs %s", pool__cpuset_str(&cs, buf, sizeof buf));
            if (obj->cpuset && allowed &&
                !hwloc_bitmap_isincluded(obj->cpuset, t->allowed)) {
                hwloc_bitmap_t a = hwloc_bitmap_alloc();
                if (a) {
                    hwloc_bitmap_and(a, obj->cpuset, t->allowed);
                    cpuset_from_hwloc(&al, a);
                    fprintf(fp, " (allowed %s)",
                            pool__cpuset_str(&al, buf, sizeof buf));
                    hwloc_bitmap_free(a);
                }
            }
        }
        if (!allowed) {
            fprintf(fp, " [not allowed]");
        } else if (obj->type == t->core_type) {
            /* Its index among the allowed cores, as placement numbers them. */
            hwloc_bitmap_t a = hwloc_bitmap_alloc();
            hwloc_obj_t rc = NULL;
            if (a) {
                hwloc_bitmap_and(a, obj->cpuset, t->allowed);
                rc = hwloc_get_next_obj_covering_cpuset_by_type(
                    t->topo, a, t->core_type, NULL);
                hwloc_bitmap_free(a);
            }
            if (rc)
                fprintf(fp, " = core #%u", rc->logical_index);
        }
        fputc('\n', fp);
        shown = 1;
        break;
    }
    default:
        break; /* caches, dies, ... are not shown: their children move up */
    }
    /* A core lists its PUs on its own line; PUs of other parents (platforms
     * without cores) get a line each. */
    if (obj->type == HWLOC_OBJ_CORE)
        return;
    int child_indent = indent + (shown ? 2 : 0);
    for (hwloc_obj_t m = obj->memory_first_child; m; m = m->next_sibling)
        print_obj(t, m, child_indent, fp);
    for (unsigned c = 0; c < obj->arity; c++)
        print_obj(t, obj->children[c], child_indent, fp);
}

void pool__topo_print(const pool__topo_t *t, FILE *fp)
{
    char buf[512];
    pool__cpuset_t all, al;
    hwloc_topology_t full = t->full;

    cpuset_from_hwloc(&all, hwloc_topology_get_topology_cpuset(full));
    cpuset_from_hwloc(&al, t->allowed);
    fprintf(fp, "topology: %s\n",
            t->synthetic ? "synthetic" : "this machine (hwloc)");
    fprintf(fp, "  %d package(s), %d NUMA node(s), %d core(s), %d PU(s)\n",
            hwloc_get_nbobjs_by_type(full, HWLOC_OBJ_PACKAGE),
            hwloc_get_nbobjs_by_type(full, HWLOC_OBJ_NUMANODE),
            hwloc_get_nbobjs_by_type(full, t->core_type),
            hwloc_get_nbobjs_by_type(full, HWLOC_OBJ_PU));
    fprintf(fp, "  PUs %s", pool__cpuset_str(&all, buf, sizeof buf));
    fprintf(fp, ", allowed %s", pool__cpuset_str(&al, buf, sizeof buf));
    fprintf(fp, " (%d core(s), %d PU(s))\n", t->ncores, t->npus);
    print_obj(t, hwloc_get_root_obj(full), 2, fp);
}
