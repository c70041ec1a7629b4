/*
 * cmd_topo.c - `picklepool topo`: show the hwloc topology the pool sees and
 * where each worker would be pinned.
 *
 *   picklepool topo [--workers N] [--placement compact|spread|none]
 *                   [--topology "pack:2 core:4 pu:2"]
 *
 * Loads the topology exactly as pool_create() does (restricted to the CPUs
 * this process may use, or synthetic with --topology), prints it, then the
 * placement of N workers (default: one per allowed core).  Nothing is bound.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "picklepool/pool.h"
#include "proc/topology.h"

#define TOPO_MAX_WORKERS POOL_MAX_WORKERS /* what a pool may have */

/* Value of option `name` at argv[*i], as "--name value" or "--name=value";
 * NULL when argv[*i] is not that option.  Sets *missing when the value is
 * absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name,
                             int *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static int parse_placement(const char *s, pool_placement_t *pl)
{
    static const struct {
        const char *name;
        pool_placement_t pl;
    } names[] = {
        {"compact", POOL_PLACE_COMPACT},
        {"spread", POOL_PLACE_SPREAD},
        {"none", POOL_PLACE_NONE},
    };
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (strcmp(s, names[k].name) == 0) {
            *pl = names[k].pl;
            return 0;
        }
    return -1;
}

static const char *placement_name(pool_placement_t pl)
{
    return pl == POOL_PLACE_SPREAD ? "spread"
           : pl == POOL_PLACE_NONE ? "none"
                                   : "compact";
}

int pk__cmd_topo(int argc, char **argv)
{
    int workers = 0;
    pool_placement_t pl = POOL_PLACE_COMPACT;
    const char *synthetic = NULL;

    for (int i = 1; i < argc; i++) {
        const char *v;
        int missing = 0;

        if ((v = opt_value(argc, argv, &i, "--workers", &missing))) {
            char *end;
            errno = 0;
            long w = strtol(v, &end, 10);
            if (errno || end == v || *end || w < 1 || w > TOPO_MAX_WORKERS)
                return pk__cli_usage_error(
                    "topo: --workers wants a number from 1 to %d, got \"%s\"",
                    TOPO_MAX_WORKERS, v);
            workers = (int)w;
        } else if (!missing &&
                   (v = opt_value(argc, argv, &i, "--placement", &missing))) {
            if (parse_placement(v, &pl) < 0)
                return pk__cli_usage_error("topo: --placement wants compact, "
                                           "spread or none, got \"%s\"",
                                           v);
        } else if (!missing &&
                   (v = opt_value(argc, argv, &i, "--topology", &missing))) {
            synthetic = v;
        } else if (missing) {
            return pk__cli_usage_error("topo: %s needs a value", argv[i]);
        } else {
            return pk__cli_usage_error("topo: unknown argument \"%s\"",
                                       argv[i]);
        }
    }

    pk_error_t err;
    pool__topo_t *t = NULL;
    pk_error_clear(&err);
    pk_err_t rc = pool__topo_load(&t, synthetic, &err);
    if (rc == PK_EINVAL)
        return pk__cli_usage_error("topo: %s", err.msg);
    if (rc != PK_OK) {
        pk__cli_report("topo", &err);
        return PK_EXIT_FAIL;
    }
    if (workers == 0)
        workers = pool__topo_ncores(t);

    pool__place_t *places = calloc((size_t)workers, sizeof *places);
    if (!places) {
        pool__topo_free(&t);
        pk_error_clear(&err);
        err.code = PK_ENOMEM;
        snprintf(err.msg, sizeof err.msg, "out of memory");
        pk__cli_report("topo", &err);
        return PK_EXIT_FAIL;
    }
    rc = pool__topo_place(t, workers, pl, places, &err);
    if (rc != PK_OK) {
        free(places);
        pool__topo_free(&t);
        pk__cli_report("topo", &err);
        return PK_EXIT_FAIL;
    }

    pool__topo_print(t, stdout);
    printf("placement: %s, %d worker%s on %d core%s\n", placement_name(pl),
           workers, workers == 1 ? "" : "s", pool__topo_ncores(t),
           pool__topo_ncores(t) == 1 ? "" : "s");
    for (int i = 0; i < workers; i++) {
        char buf[256];
        pool__cpuset_str(&places[i].cpus, buf, sizeof buf);
        if (places[i].core < 0)
            printf("  worker %d: not bound, PUs %s\n", i, buf);
        else
            printf("  worker %d: core #%d, PUs %s\n", i, places[i].core, buf);
    }
    free(places);
    pool__topo_free(&t);
    return fflush(stdout) == 0 ? PK_EXIT_OK : PK_EXIT_FAIL;
}
