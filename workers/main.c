/*
 * main.c - picklepool-worker, the standalone native worker.
 *
 *   picklepool-worker --connect ENDPOINT --slot N [--gen G] [--prefetch N]
 *                     [--maxtasks N] [--max-rss BYTES] [--plugin PATH]...
 *                     [--cpus LIST]
 *
 * What a worker the fork server did not fork runs: workers exec'd by the
 * Python front-end, started on other hosts, or by hand against a master.  It
 * runs the same loop as a forked worker (proc/worker.h) and speaks the same
 * protocol (docs/PROTOCOL.md), without the pool's shared memory: no
 * scoreboard, arena or fast lane, everything crosses the socket.
 *
 * Set-up order, and why: the arguments are checked before anything happens,
 * so a bad command line changes nothing and exits 2; then the process binds
 * itself to --cpus (HWLOC_CPUBIND_PROCESS) while it is still single-threaded;
 * then it loads the plugins, whose init may start threads or touch memory
 * that should already live on those CPUs; and only then does the loop create
 * the ZeroMQ context, whose I/O threads inherit the binding.  Only ipc://
 * endpoints are accepted: machines join over tcp through `picklepool
 * worker` and `picklepool serve` (DESIGN.md, "Scale-out").
 *
 *   picklepool-worker --forward tcp://HOST:PORT (--keys DIR | --insecure)
 *                     [--key NAME] [--give-up S]
 *
 * is the other use: the one worker of a remote pool (pool_opts_t.address),
 * which pool_create starts as an exec'd worker; it carries the pool's
 * batches to serve and the results back (forward.h).
 *
 * The executable links only the layers below pool (the Makefile's
 * WORKER_LIB) and exports them (-rdynamic), so plugins resolve pk_* and
 * pool_register here.  Exit status: 0 after STOP or retirement, 1 when the
 * worker could not bind or its loop failed, 2 for bad usage (one line on
 * stderr naming the option) or a plugin that cannot be loaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "ipc/curve.h"
#include "picklepool/error.h"
#include "picklepool/registry.h"
#include "picklepool/version.h"
#include "proc/topology.h"
#include "proc/worker.h"

#define PROG "picklepool-worker"
#define MAX_PLUGINS 64

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

typedef struct args {
    pool__worker_cfg_t cfg;
    pk__forward_cfg_t fwd; /* --forward: a remote pool's forwarder */
    const char *plugins[MAX_PLUGINS];
    int nplugins;
    const char *cpus_arg; /* NULL: not bound */
    pool__cpuset_t cpus;
} args_t;

static const char usage_text[] =
    "usage: " PROG " --connect ENDPOINT --slot N [options]\n"
    "\n"
    "Runs one picklepool worker for the master at ENDPOINT: says READY, runs\n"
    "the TASK batches it is sent with the native functions of the plugins,\n"
    "and exits after STOP or when a retirement limit is reached.\n"
    "\n"
    "  --connect ENDPOINT  the master's socket, ipc://PATH (tcp:// needs\n"
    "                      CURVE keys and is not supported yet)\n"
    "  --slot N            this worker's slot, 0 to 65535 (with the\n"
    "                      generation, its routing id)\n"
    "  --gen G             its generation, 0 to 4294967295 (default 1)\n"
    "  --prefetch N        batches it can queue, announced in READY, 1 to\n"
    "                      1024 (default 2)\n"
    "  --maxtasks N        retire after N items (default 0: never)\n"
    "  --max-rss BYTES     retire once its RSS exceeds BYTES; a K, M or G\n"
    "                      suffix multiplies by 1024^1..3 (default 0: never)\n"
    "  --plugin PATH       load this plugin .so before connecting; repeat\n"
    "                      for more\n"
    "  --cpus LIST         bind to these CPUs, e.g. 0-3,8, before any thread\n"
    "                      starts (default: not bound)\n"
    "  --help              print this and exit\n"
    "\n"
    "or, as the one worker of a remote pool (pool_opts_t.address), which\n"
    "pool_create starts:\n"
    "\n"
    "  --forward ENDPOINT  carry the pool's batches to the picklepool serve\n"
    "                      master at ENDPOINT (tcp://HOST:PORT)\n"
    "  --keys DIR          the key directory (its own pair and master.pub)\n"
    "  --key NAME          the pair to use when DIR holds several\n"
    "  --insecure          plain tcp, without keys\n"
    "  --give-up S         fail batches no master answered for S seconds\n"
    "                      (default 60; 0: never)\n"
    "  --version           print the version and exit\n"
    "\n"
    "Exit status: 0 after STOP or retirement, 1 failed, 2 bad usage or a\n"
    "plugin that cannot be loaded.\n";

/* Prints one line "picklepool-worker: <message> (see --help)" on stderr and
 * returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see " PROG " --help)\n", stderr);
    return EXIT_USAGE;
}

/* A decimal number in [lo, hi], optionally followed by K, M or G when
 * `suffixes` is set.  strtoull alone would take "-1" and " 5". */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, int suffixes,
                     uint64_t *out)
{
    char *end;
    uint64_t v, mul = 1;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    if (suffixes && *end != '\0' && end[1] == '\0') {
        const char *units = "KMG";
        const char *u = strchr(units, *end);
        if (u == NULL)
            return -1;
        for (long k = 0; k <= u - units; k++)
            mul *= 1024;
        end++;
        if (v > UINT64_MAX / mul)
            return -1;
        v *= mul;
    }
    if (*end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void cpu_set(pool__cpuset_t *s, unsigned cpu)
{
    s->bits[cpu / 64] |= (uint64_t)1 << (cpu % 64);
}

static int cpu_isset(const pool__cpuset_t *s, unsigned cpu)
{
    return (s->bits[cpu / 64] >> (cpu % 64)) & 1;
}

/* Parses a CPU list as the kernel and taskset print it ("0-3,8": OS
 * processor numbers, ranges inclusive) into *out.  Returns 0, or -1 for bad
 * syntax, a reversed range or a number >= POOL_MAX_CPUS. */
static int parse_cpus(const char *s, pool__cpuset_t *out)
{
    memset(out, 0, sizeof *out);
    for (;;) {
        uint64_t a, b;
        char num[16];
        size_t n = strspn(s, "0123456789");

        if (n == 0 || n >= sizeof num)
            return -1;
        memcpy(num, s, n);
        num[n] = '\0';
        if (parse_u64(num, 0, POOL_MAX_CPUS - 1, 0, &a) < 0)
            return -1;
        s += n;
        b = a;
        if (*s == '-') {
            n = strspn(++s, "0123456789");
            if (n == 0 || n >= sizeof num)
                return -1;
            memcpy(num, s, n);
            num[n] = '\0';
            if (parse_u64(num, a, POOL_MAX_CPUS - 1, 0, &b) < 0)
                return -1;
            s += n;
        }
        for (uint64_t c = a; c <= b; c++)
            cpu_set(out, (unsigned)c);
        if (*s == '\0')
            return 0;
        if (*s++ != ',')
            return -1;
    }
}

/* Refuses --cpus naming a CPU this process may not run on (a binding that
 * silently dropped it would put two workers on one core). */
static int check_cpus_allowed(const args_t *a)
{
    pool__cpuset_t self, bad;
    pk_error_t err;
    char badstr[256], selfstr[256];
    int nbad = 0;

    pk_error_clear(&err);
    if (pool__cpuset_get_self(&self, &err) != PK_OK) {
        fprintf(stderr, PROG ": cannot read the CPU mask: %s\n", err.msg);
        return EXIT_FAIL;
    }
    memset(&bad, 0, sizeof bad);
    for (unsigned c = 0; c < POOL_MAX_CPUS; c++)
        if (cpu_isset(&a->cpus, c) && !cpu_isset(&self, c)) {
            cpu_set(&bad, c);
            nbad++;
        }
    if (nbad == 0)
        return EXIT_OK;
    return usage_error("--cpus %s: %s %s %s not available to this process "
                       "(allowed: %s)",
                       a->cpus_arg, nbad > 1 ? "CPUs" : "CPU",
                       pool__cpuset_str(&bad, badstr, sizeof badstr),
                       nbad > 1 ? "are" : "is",
                       pool__cpuset_str(&self, selfstr, sizeof selfstr));
}

/* The numeric options, by index: range, whether a K, M or G suffix is
 * allowed, and what the message says they want. */
enum { N_SLOT, N_GEN, N_PREFETCH, N_MAXTASKS, N_MAXRSS, N_COUNT };
static const struct numopt {
    uint64_t lo, hi;
    int suffixes;
    const char *want;
} numopts[N_COUNT] = {
    [N_SLOT] = {0, 65535, 0, "a number from 0 to 65535"},
    [N_GEN] = {0, UINT32_MAX, 0, "a number from 0 to 4294967295"},
    [N_PREFETCH] = {1, 1024, 0, "a number from 1 to 1024"},
    [N_MAXTASKS] = {0, UINT64_MAX, 0, "a number of items (0: never)"},
    [N_MAXRSS] = {0, UINT64_MAX, 1,
                  "a number of bytes (with an optional K, M or G)"},
};

/* Fills *a from the command line.  Returns EXIT_OK, EXIT_USAGE (message
 * printed), or -1 after printing --help or --version (exit 0). */
static int parse_args(int argc, char **argv, args_t *a)
{
    enum {
        O_CONNECT = 256,
        O_PLUGIN,
        O_CPUS,
        O_HELP,
        O_VERSION,
        O_FORWARD,
        O_KEYS,
        O_KEY,
        O_INSECURE,
        O_GIVE_UP
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, O_CONNECT},
        {"slot", required_argument, NULL, N_SLOT},
        {"gen", required_argument, NULL, N_GEN},
        {"prefetch", required_argument, NULL, N_PREFETCH},
        {"maxtasks", required_argument, NULL, N_MAXTASKS},
        {"max-rss", required_argument, NULL, N_MAXRSS},
        {"plugin", required_argument, NULL, O_PLUGIN},
        {"cpus", required_argument, NULL, O_CPUS},
        {"help", no_argument, NULL, O_HELP},
        {"forward", required_argument, NULL, O_FORWARD},
        {"keys", required_argument, NULL, O_KEYS},
        {"key", required_argument, NULL, O_KEY},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"give-up", required_argument, NULL, O_GIVE_UP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    uint64_t num[N_COUNT] = {[N_GEN] = 1, [N_PREFETCH] = 2};
    int have_slot = 0, o, idx;

    memset(a, 0, sizeof *a);
    a->fwd.give_up_s = 60;
    opterr = 0; /* our own one-line messages */
    while ((o = getopt_long(argc, argv, ":h", longopts, &idx)) != -1) {
        if (o >= 0 && o < N_COUNT) {
            const struct numopt *n = &numopts[o];
            if (parse_u64(optarg, n->lo, n->hi, n->suffixes, &num[o]) < 0)
                return usage_error("--%s wants %s, not '%s'",
                                   longopts[idx].name, n->want, optarg);
            have_slot |= o == N_SLOT;
            continue;
        }
        switch (o) {
        case O_CONNECT:
            if (strncmp(optarg, "ipc://", 6) == 0 && optarg[6] != '\0')
                a->cfg.endpoint = optarg;
            else if (strncmp(optarg, "tcp://", 6) == 0)
                return usage_error("--connect %s: tcp:// needs CURVE keys, "
                                   "not supported yet; use ipc://PATH",
                                   optarg);
            else
                return usage_error("--connect wants ipc://PATH, not '%s'",
                                   optarg);
            break;
        case O_PLUGIN:
            if (optarg[0] == '\0')
                return usage_error("--plugin wants a path, not ''");
            if (a->nplugins == MAX_PLUGINS)
                return usage_error("more than %d --plugin options",
                                   MAX_PLUGINS);
            a->plugins[a->nplugins++] = optarg;
            break;
        case O_CPUS:
            if (parse_cpus(optarg, &a->cpus) < 0)
                return usage_error("--cpus wants a list of CPUs such as "
                                   "0-3,8 (each below %d), not '%s'",
                                   POOL_MAX_CPUS, optarg);
            a->cpus_arg = optarg;
            break;
        case O_FORWARD: {
            pk_error_t e;
            if (pool__endpoint_parse(optarg, 0, NULL, &e) != PK_OK)
                return usage_error("--forward: %s", e.msg);
            a->fwd.endpoint = optarg;
            break;
        }
        case O_KEYS:
            if (optarg[0] == '\0')
                return usage_error("--keys wants a directory, not ''");
            a->fwd.keys = optarg;
            break;
        case O_KEY:
            if (!pool__curve_name_ok(optarg))
                return usage_error("--key wants the name of a key pair, not "
                                   "'%s'",
                                   optarg);
            a->fwd.key_name = optarg;
            break;
        case O_INSECURE:
            a->fwd.insecure = 1;
            break;
        case O_GIVE_UP: {
            char *end;
            double d = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(d >= 0) || d > 1e9)
                return usage_error("--give-up wants seconds from 0 to 1e9, "
                                   "not '%s'",
                                   optarg);
            a->fwd.give_up_s = d;
            break;
        }
        case 'h':
        case O_HELP:
            fputs(usage_text, stdout);
            return -1;
        case O_VERSION:
            printf(PROG " %s\n", pk_version());
            return -1;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            if (optopt != 0)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (a->fwd.endpoint != NULL) {
        if (a->cfg.endpoint != NULL || have_slot || a->nplugins > 0 ||
            a->cpus_arg != NULL)
            return usage_error("--forward takes none of --connect, --slot, "
                               "--plugin, --cpus");
        if (a->fwd.keys != NULL && a->fwd.insecure)
            return usage_error("--keys and --insecure together: choose one");
        return EXIT_OK;
    }
    if (a->fwd.keys != NULL || a->fwd.key_name != NULL || a->fwd.insecure)
        return usage_error("--keys, --key and --insecure go with --forward");
    if (a->cfg.endpoint == NULL)
        return usage_error("--connect ENDPOINT is required");
    if (!have_slot)
        return usage_error("--slot N is required");
    a->cfg.slot = (int)num[N_SLOT];
    a->cfg.gen = (uint32_t)num[N_GEN];
    a->cfg.prefetch = (int)num[N_PREFETCH];
    a->cfg.maxtasks = num[N_MAXTASKS];
    a->cfg.max_rss = num[N_MAXRSS];
    return EXIT_OK;
}

/* Binds the process to a->cpus (see the file comment for when). */
static int bind_cpus(const args_t *a)
{
    pool__topo_t *topo = NULL;
    pk_error_t err;
    char line[512];
    int status = EXIT_OK;

    pk_error_clear(&err);
    if (pool__topo_load(&topo, NULL, &err) != PK_OK ||
        pool__topo_bind_self(topo, &a->cpus, &err) != PK_OK) {
        fprintf(stderr, PROG ": cannot bind to CPUs %s: %s\n", a->cpus_arg,
                pk_error_format(&err, line, sizeof line));
        status = EXIT_FAIL;
    }
    pool__topo_free(&topo);
    return status;
}

/* Loads the plugins in order.  One that cannot be opened or is no plugin
 * is a usage error (exit 2); one whose own init fails is a failure (1). */
static int load_plugins(const args_t *a)
{
    for (int i = 0; i < a->nplugins; i++) {
        pk_error_t err;
        pk_err_t rc;

        pk_error_clear(&err);
        rc = pool_plugin_load(a->plugins[i], &err);
        if (rc == PK_OK)
            continue;
        fprintf(stderr, PROG ": --plugin %s: %s\n", a->plugins[i],
                err.msg[0] != '\0' ? err.msg : pk_strerror(rc));
        return rc == PK_EIO || rc == PK_ENOFUNC || rc == PK_EINVAL ? EXIT_USAGE
                                                                   : EXIT_FAIL;
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    args_t a;
    int status = parse_args(argc, argv, &a);

    if (status < 0)
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
    if (status == EXIT_OK && a.fwd.endpoint != NULL)
        return pk__forward_main(&a.fwd);
    if (status == EXIT_OK && a.cpus_arg != NULL)
        status = check_cpus_allowed(&a);
    if (status == EXIT_OK && a.cpus_arg != NULL)
        status = bind_cpus(&a);
    if (status == EXIT_OK)
        status = load_plugins(&a);
    if (status != EXIT_OK)
        return status;
    return pool__worker_main(&a.cfg) == 0 ? EXIT_OK : EXIT_FAIL;
}
