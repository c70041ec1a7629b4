/*
 * remote_bench.c - remote pools (pool_opts_t.address) against local ones,
 * side by side in one run: a local pool on ipc, the same work through
 * `picklepool serve` and one host agent over tcp with CURVE, and over tcp
 * with --insecure (the cost of CURVE itself).
 *
 *   build/bench/remote_bench [--reps N] [--items N] [--applies N]
 *                            [--workers N]
 *
 * Workloads (pool_bench's): pool_map_i64 of examples.square over --items
 * ints (default 1M), in items/s; and --applies (default 1000) round trips
 * of pool_apply_async(examples.square), in microseconds, p50 and p99.
 * Every pool has --workers workers (default 2): the local pool its own, a
 * remote pool its host's.  The master, the host and the client share this
 * machine and talk over loopback, so a remote figure is the cost of the
 * hops (client -> forwarder -> serve -> host -> its pool, and back), not of
 * a network.  Each figure is the median over --reps repetitions (default
 * 5), with [min-max]; the pools take turns within each repetition.
 *
 * It runs build/picklepool (beside this program's directory) for keygen,
 * serve and worker, in a temporary directory it removes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "picklepool.h"
#include "bench.h"

#define NPOOLS 4
#define MAX_REPS 50

static const char *names[NPOOLS] = {"local ipc", "local ipc, no lane",
                                    "tcp + CURVE", "tcp --insecure"};

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static char cli[PATH_MAX];

/* Runs the CLI with argv (NULL-terminated after argv[0] = "picklepool");
 * with `line`, reads its first stdout line into it and leaves it running.
 * Returns its pid. */
static pid_t run_cli(char *const argv[], char *line, size_t size)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        int devnull = open("/dev/null", 1);
        if (devnull >= 0 && getenv("REMOTE_BENCH_VERBOSE") == NULL)
            dup2(devnull, 2);
        execv(cli, argv);
        _exit(127);
    }
    close(fds[1]);
    if (line != NULL) {
        size_t n = 0;
        while (n + 1 < size && read(fds[0], line + n, 1) == 1 &&
               line[n] != '\n')
            n++;
        line[n] = '\0';
    } else {
        int st;
        waitpid(pid, &st, 0);
    }
    close(fds[0]);
    return pid;
}

static int copy_file(const char *from, const char *to)
{
    char buf[256];
    FILE *in = fopen(from, "r"), *out = fopen(to, "w");
    int ok = in != NULL && out != NULL;
    size_t n = ok ? fread(buf, 1, sizeof buf, in) : 0;
    ok = ok && fwrite(buf, 1, n, out) == n;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* serve on loopback (CURVE with keys, else --insecure); fills ep. */
static pid_t start_serve(const char *keys, char *ep, size_t size)
{
    char line[400];
    char *argv[] = {"picklepool",
                    "serve",
                    "--bind",
                    "tcp://127.0.0.1:*",
                    keys ? "--keys" : "--insecure",
                    (char *)keys,
                    NULL};
    pid_t pid = run_cli(argv, line, sizeof line);
    const char *at = strstr(line, "tcp://");
    if (at == NULL)
        return -1;
    snprintf(ep, size, "%.*s", (int)strcspn(at, " "), at);
    return pid;
}

static pid_t start_host(const char *ep, const char *keys, const char *plugin,
                        const char *workers)
{
    char *argv[] = {"picklepool",
                    "worker",
                    "--connect",
                    (char *)ep,
                    "--plugin",
                    (char *)plugin,
                    "--workers",
                    (char *)workers,
                    keys ? "--keys" : "--insecure",
                    (char *)keys,
                    NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        if (devnull >= 0 && getenv("REMOTE_BENCH_VERBOSE") == NULL)
            dup2(devnull, 2);
        execv(cli, argv);
        _exit(127);
    }
    return pid;
}

static double map_rate(pool_t *p, const int64_t *in, int64_t *out, size_t n)
{
    pk_error_t e;
    size_t nf = 0;
    double t = now_s();
    pk_err_t rc =
        pool_map_i64(p, "examples", "square", in, out, n, NULL, NULL, &nf, &e);
    t = now_s() - t;
    if (rc != PK_OK || nf != 0 || out[n - 1] != in[n - 1] * in[n - 1]) {
        fprintf(stderr, "remote_bench: map failed: %s\n", e.msg);
        exit(1);
    }
    return (double)n / t;
}

/* p50 and p99 of n apply round trips, in microseconds. */
static void applies(pool_t *p, int n, double *p50, double *p99)
{
    double *lat = malloc((size_t)n * sizeof *lat);
    pk_doc_t *d = NULL;
    if (lat == NULL || pk_doc_new(&d) != PK_OK)
        exit(1);
    pk_value_t *args = pk_tuple_new(d, 1);
    pk_tuple_set(args, 0, pk_int(d, 7));
    for (int i = 0; i < n; i++) {
        pool_future_t *f = NULL;
        pool_item_t it;
        pk_error_t e;
        double t = now_s();
        if (pool_apply_async(p, "examples", "square", args, NULL, &f, &e) !=
                PK_OK ||
            pool_future_wait(f, 60, &it) != PK_OK || it.status != PK_OK) {
            fprintf(stderr, "remote_bench: apply failed\n");
            exit(1);
        }
        lat[i] = (now_s() - t) * 1e6;
        pool_future_free(&f);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    *p50 = lat[n / 2];
    *p99 = lat[(size_t)((double)n * 0.99)];
    pk_doc_free(&d);
    free(lat);
}

static void show_rate(double v)
{
    if (v >= 1e6)
        printf("%.2fM", v / 1e6);
    else
        printf("%.0fk", v / 1e3);
}

int main(int argc, char **argv)
{
    int reps = 5, napplies = 1000, workers = 2;
    size_t nitems = 1000000;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--reps") == 0 && v)
            reps = atoi(v), i++;
        else if (strcmp(argv[i], "--items") == 0 && v)
            nitems = (size_t)atol(v), i++;
        else if (strcmp(argv[i], "--applies") == 0 && v)
            napplies = atoi(v), i++;
        else if (strcmp(argv[i], "--workers") == 0 && v)
            workers = atoi(v), i++;
        else {
            fprintf(stderr, "usage: remote_bench [--reps N] [--items N] "
                            "[--applies N] [--workers N]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > MAX_REPS || nitems < 1 || napplies < 1 ||
        workers < 1 || workers > POOL_MAX_WORKERS) {
        fprintf(stderr, "remote_bench: --reps 1..%d, the rest positive\n",
                MAX_REPS);
        return 2;
    }
    char exe[PATH_MAX], plugin[PATH_MAX + 32], wstr[16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(cli, sizeof cli, "%.4000s/../picklepool", exe);
    snprintf(plugin, sizeof plugin, "%.4000s/../plugins/examples.so", exe);
    snprintf(wstr, sizeof wstr, "%d", workers);
    if (access(cli, X_OK) != 0 || access(plugin, R_OK) != 0) {
        fprintf(stderr, "remote_bench: needs %s and %s (run make)\n", cli,
                plugin);
        return 1;
    }

    /* keys: the master's, the host's and the client's */
    char tmp[] = "/tmp/pp-rbench-XXXXXX", m[64], h[64], c[64], a[200], b[200];
    if (mkdtemp(tmp) == NULL)
        return 1;
    snprintf(m, sizeof m, "%s/master", tmp);
    snprintf(h, sizeof h, "%s/host", tmp);
    snprintf(c, sizeof c, "%s/client", tmp);
    char *kg[][6] = {{"picklepool", "keygen", "--name", "master", m, NULL},
                     {"picklepool", "keygen", "--name", "host", h, NULL},
                     {"picklepool", "keygen", "--name", "client", c, NULL}};
    for (int i = 0; i < 3; i++)
        run_cli(kg[i], NULL, 0);
    int bad = 0;
    const char *peers[2][2] = {{h, "host"}, {c, "client"}};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/master.pub", m);
        snprintf(b, sizeof b, "%s/master.pub", peers[i][0]);
        bad |= copy_file(a, b);
        snprintf(a, sizeof a, "%s/%s.pub", peers[i][0], peers[i][1]);
        snprintf(b, sizeof b, "%s/%s.pub", m, peers[i][1]);
        bad |= copy_file(a, b);
    }
    char ep_curve[300], ep_plain[300];
    pid_t kids[4];
    kids[0] = start_serve(m, ep_curve, sizeof ep_curve);
    kids[1] = start_serve(NULL, ep_plain, sizeof ep_plain);
    kids[2] = start_host(ep_curve, h, plugin, wstr);
    kids[3] = start_host(ep_plain, NULL, plugin, wstr);
    if (bad || kids[0] < 0 || kids[1] < 0) {
        fprintf(stderr, "remote_bench: cannot start serve\n");
        return 1;
    }

    pool_t *pools[NPOOLS] = {0};
    pk_error_t e;
    const char *plugins[1] = {plugin};
    for (int k = 0; k < NPOOLS; k++) {
        pool_opts_t o;
        pool_opts_init(&o);
        if (k < 2) {
            o.workers = workers;
            o.plugins = plugins;
            o.nplugins = 1;
            o.spin_us = k == 1 ? -1 : 0;
        } else {
            o.address = k == 2 ? ep_curve : ep_plain;
            o.keys = k == 2 ? c : NULL;
            o.insecure = k == 3;
        }
        if (pool_create(&pools[k], &o, &e) != PK_OK) {
            fprintf(stderr, "remote_bench: %s: %s\n", names[k], e.msg);
            return 1;
        }
    }
    int64_t *in = malloc(nitems * 8), *out = malloc(nitems * 8);
    if (in == NULL || out == NULL)
        return 1;
    for (size_t i = 0; i < nitems; i++)
        in[i] = (int64_t)i;
    for (int k = 0; k < NPOOLS; k++) { /* warm up: the hosts join */
        map_rate(pools[k], in, out, nitems < 10000 ? nitems : 10000);
        double x, y;
        applies(pools[k], 20, &x, &y);
    }
    double rate[NPOOLS][MAX_REPS], p50[NPOOLS][MAX_REPS], p99[NPOOLS][MAX_REPS];
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < NPOOLS; k++) {
            rate[k][r] = map_rate(pools[k], in, out, nitems);
            applies(pools[k], napplies, &p50[k][r], &p99[k][r]);
        }

    printf("remote_bench: %d worker%s per pool, %zu items, %d applies, %d "
           "repetitions; medians [min-max]\n\n",
           workers, workers == 1 ? "" : "s", nitems, napplies, reps);
    printf("| pool | square, pool_map_i64 (items/s) | apply p50 (us) | "
           "apply p99 (us) |\n|---|---|---|---|\n");
    double med_rate[NPOOLS], med_p50[NPOOLS];
    for (int k = 0; k < NPOOLS; k++) {
        double lo = rate[k][0], hi = rate[k][0];
        for (int r = 0; r < reps; r++) {
            lo = rate[k][r] < lo ? rate[k][r] : lo;
            hi = rate[k][r] > hi ? rate[k][r] : hi;
        }
        med_rate[k] = median(rate[k], reps);
        printf("| %s | ", names[k]);
        show_rate(med_rate[k]);
        printf(" [");
        show_rate(lo);
        printf("-");
        show_rate(hi);
        med_p50[k] = median(p50[k], reps);
        double q50lo = p50[k][0], q50hi = p50[k][reps - 1];
        printf("] | %.0f [%.0f-%.0f] | %.0f |\n", med_p50[k], q50lo, q50hi,
               median(p99[k], reps));
    }
    printf("\ntcp + CURVE against local ipc: %.2fx the items/s, %.1fx the "
           "apply p50 (no lane: %.1fx)\n",
           med_rate[2] / med_rate[0], med_p50[2] / med_p50[0],
           med_p50[2] / med_p50[1]);
    printf("CURVE against --insecure: %.2fx the items/s, %.2fx the apply "
           "p50\n",
           med_rate[2] / med_rate[3], med_p50[2] / med_p50[3]);

    for (int k = 0; k < NPOOLS; k++)
        pool_destroy(&pools[k]);
    for (int k = 3; k >= 0; k--) {
        int st;
        kill(kids[k], SIGTERM);
        waitpid(kids[k], &st, 0);
    }
    free(in);
    free(out);
    char rm[200];
    snprintf(rm, sizeof rm, "rm -rf '%s'", tmp);
    if (system(rm) != 0)
        fprintf(stderr, "remote_bench: could not remove %s\n", tmp);
    return pool_global_fini(NULL) == PK_OK ? 0 : 1;
}
