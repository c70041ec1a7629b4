/*
 * cmd_worker.c - `picklepool worker`: a host agent that joins a `picklepool
 * serve` master and runs its batches on this machine's cores.
 *
 *   picklepool worker --connect tcp://HOST:PORT (--keys DIR | --insecure)
 *                     [--key NAME] [--workers N] [--placement P]
 *                     [--plugin NAME|PATH]... [--python PATH]
 *                     [--capacity N] [--name NAME]
 *
 * This file reads the options and what the launcher says; host.c runs the
 * agent.  Launchers: under `srun` (SLURM_PROCID, SLURM_LOCALID and the
 * node's task count) or `mpirun` (OMPI_COMM_WORLD_RANK, _LOCAL_RANK,
 * _LOCAL_SIZE) the agent calls itself "HOST rank R", and when several
 * ranks share a node and the launcher did not bind them to CPUs of their
 * own, each takes an equal contiguous share of the node's CPUs (its CPU
 * mask is narrowed before the pools are made, so --workers defaults to the
 * cores of its share and placement stays within it).  The workers see
 * PICKLEPOOL_HOST (the agent's name) in their environment.
 *
 * Exit status: 0 after SIGINT or SIGTERM, 1 when it cannot start or its key
 * is refused (one line says why), 2 bad usage.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ipc/remote.h"
#include "picklepool/pool.h"

#define MAX_PLUGINS 64
#define MAX_CAPACITY 256

/* Narrows this process's CPU mask to its share of the node when several
 * ranks of a launcher share it and none was bound by the launcher (each
 * rank's mask is then the whole set).  Says what it did on stderr. */
static void take_share(const pool__launch_t *l)
{
    cpu_set_t set;
    if (l->local_size < 2 || l->local_rank < 0 ||
        l->local_rank >= l->local_size ||
        sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    long have = CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    const char *on_node = getenv("SLURM_CPUS_ON_NODE");
    long slurm_cpus = on_node != NULL ? strtol(on_node, NULL, 10) : -1;
    /* A launcher that bound its ranks gave each fewer CPUs than the node
     * (or the allocation) has: their masks are already shares. */
    if (have < online && have != slurm_cpus)
        return;
    if (have < l->local_size) {
        fprintf(stderr,
                "picklepool worker: %ld ranks on this node share %ld CPU%s\n",
                l->local_size, have, have == 1 ? "" : "s");
        return;
    }
    long from = have * l->local_rank / l->local_size;
    long to = have * (l->local_rank + 1) / l->local_size;
    cpu_set_t mine;
    CPU_ZERO(&mine);
    long k = 0, first = -1, last = -1;
    for (int c = 0; c < CPU_SETSIZE && k < to; c++) {
        if (!CPU_ISSET(c, &set))
            continue;
        if (k >= from) {
            CPU_SET(c, &mine);
            if (first < 0)
                first = c;
            last = c;
        }
        k++;
    }
    if (first >= 0 && sched_setaffinity(0, sizeof mine, &mine) == 0)
        fprintf(stderr,
                "picklepool worker: local rank %ld of %ld takes CPUs %ld-%ld "
                "of %ld\n",
                l->local_rank, l->local_size, first, last, have);
}

/* The directory of this program ("" when unknown) into buf. */
static void exe_dir(char *buf, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    buf[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        buf[0] = '\0';
}

int pk__cmd_worker(int argc, char **argv)
{
    pk__host_cfg_t cfg;
    static const char *plugins[MAX_PLUGINS];
    char name[POOL_WIRE_NAME_MAX + 1];
    memset(&cfg, 0, sizeof cfg);
    cfg.placement = POOL_PLACE_COMPACT;
    cfg.placement_name = "compact";
    cfg.plugins = plugins;

    for (int i = 1; i < argc; i++) {
        const char *v;
        int missing = 0;
        long l;

        if (strcmp(argv[i], "--insecure") == 0) {
            cfg.insecure = 1;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--connect",
                                         &missing))) {
            cfg.connect = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--keys", &missing))) {
            if (v[0] == '\0')
                return pk__cli_usage_error("worker: --keys wants a directory");
            cfg.keys = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--key", &missing))) {
            if (!pool__curve_name_ok(v))
                return pk__cli_usage_error(
                    "worker: --key wants the name of a key pair (NAME of "
                    "NAME.key), not '%s'",
                    v);
            cfg.key_name = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--workers",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, POOL_MAX_WORKERS, &l) < 0)
                return pk__cli_usage_error(
                    "worker: --workers wants a number from 1 to %d, not '%s'",
                    POOL_MAX_WORKERS, v);
            cfg.workers = (int)l;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--placement",
                                         &missing))) {
            if (pk__cli_parse_placement(v, &cfg.placement) < 0)
                return pk__cli_usage_error(
                    "worker: --placement wants compact, spread or none, not "
                    "'%s'",
                    v);
            cfg.placement_name = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--plugin",
                                         &missing))) {
            if (v[0] == '\0')
                return pk__cli_usage_error("worker: --plugin wants a name or "
                                           "a path");
            if (cfg.nplugins == MAX_PLUGINS)
                return pk__cli_usage_error("worker: more than %d --plugin "
                                           "options",
                                           MAX_PLUGINS);
            plugins[cfg.nplugins++] = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--python",
                                         &missing))) {
            if (strchr(v, '/') == NULL || access(v, X_OK) != 0)
                return pk__cli_usage_error(
                    "worker: --python wants the path of an interpreter this "
                    "user can run, not '%s'",
                    v);
            cfg.python = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--capacity",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, MAX_CAPACITY, &l) < 0)
                return pk__cli_usage_error(
                    "worker: --capacity wants a number of batches from 1 to "
                    "%d, not '%s'",
                    MAX_CAPACITY, v);
            cfg.capacity = (int)l;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--name", &missing))) {
            pk_error_t e;
            if (pool__wire_name_check(v, strlen(v), &e) != PK_OK)
                return pk__cli_usage_error(
                    "worker: --name wants 1 to %d printable ASCII "
                    "characters, not '%s'",
                    POOL_WIRE_NAME_MAX, v);
            cfg.name = v;
        } else if (missing) {
            return pk__cli_usage_error("worker: %s needs a value", argv[i]);
        } else if (argv[i][0] == '-') {
            return pk__cli_usage_error("worker: unknown option '%s'", argv[i]);
        } else {
            return pk__cli_usage_error("worker: unexpected argument '%s'",
                                       argv[i]);
        }
    }
    if (cfg.connect == NULL)
        return pk__cli_usage_error(
            "worker: which master? (--connect tcp://HOST:PORT)");
    if (cfg.keys != NULL && cfg.insecure)
        return pk__cli_usage_error(
            "worker: --keys and --insecure together: choose one");
    pk_error_t e;
    pk_error_clear(&e);
    if (pool__endpoint_parse(cfg.connect, 0, NULL, &e) != PK_OK)
        return pk__cli_usage_error("worker: %s", e.msg);

    pool__launch_t launch;
    pool__launch_get(&launch);
    take_share(&launch);
    if (cfg.name == NULL)
        cfg.name = pool__remote_default_name(name, sizeof name);
    setenv("PICKLEPOOL_HOST", cfg.name, 1);

    /* Python workers: `PATH -m picklepool.worker`, with the package of this
     * build tree (python/ beside build/) and its library when there are
     * some; an installed package is on the interpreter's own path. */
    static const char *py_argv[5];
    static const char *py_env[3];
    static char pypath[2 * PATH_MAX + 64], pylib[PATH_MAX + 128];
    if (cfg.python != NULL) {
        char dir[PATH_MAX], probe[PATH_MAX + 64];
        size_t ne = 0;
        exe_dir(dir, sizeof dir - 64);
        py_argv[0] = cfg.python;
        py_argv[1] = "-m";
        py_argv[2] = "picklepool.worker";
        snprintf(probe, sizeof probe, "%s/../python/picklepool/worker.py", dir);
        if (dir[0] != '\0' && access(probe, R_OK) == 0) {
            const char *old = getenv("PYTHONPATH");
            snprintf(pypath, sizeof pypath, "PYTHONPATH=%s/../python%s%s", dir,
                     old != NULL && old[0] ? ":" : "", old != NULL ? old : "");
            py_env[ne++] = pypath;
        }
        snprintf(probe, sizeof probe, "%s/libpicklepool.so", dir);
        if (getenv("PICKLEPOOL_LIB") == NULL && dir[0] != '\0' &&
            access(probe, R_OK) == 0) {
            snprintf(pylib, sizeof pylib, "PICKLEPOOL_LIB=%s", probe);
            py_env[ne++] = pylib;
        }
        cfg.py_argv = py_argv;
        cfg.py_env = ne > 0 ? py_env : NULL;
    }
    return pk__host_run(&cfg);
}
