/*
 * cmd_demo.c - `picklepool demo`, the README's main job.
 *
 *   picklepool demo [--arrays N] [--mib M] [--workers N] [--plugin PATH]
 *
 * examples.normalize over N synthetic float32 arrays of M MiB on pinned
 * workers, first on one worker then on all of them; prints the placement,
 * the throughput and the speed-up, and checks every result independently.
 * Exit status 0 only when every result is correct.  Without --plugin it
 * loads <directory of the executable>/plugins/examples.so.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "picklepool/pool.h"

/* Array i holds uniform noise scaled by s_i around o_i, except for four
 * marker elements: x[0] = o_i, x[1] = o_i + (i + 1) s_i, x[2] = o_i,
 * x[3] = o_i + s_i.  Normalisation is affine, so in any correct result
 * (y[1] - y[0]) / (y[3] - y[2]) = i + 1: the index survives and tells
 * whether results came back in input order. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void demo_fill(float *x, size_t n, size_t i)
{
    uint64_t s = 0x5eed0000ull + i;
    float o = (float)((int)(i % 17) - 8), sc = (float)(1 + i % 5);

    for (size_t j = 0; j < n; j++) {
        double u = (double)(splitmix(&s) >> 11) * 0x1.0p-53; /* [0, 1) */
        x[j] = o + sc * (float)(2 * u - 1);
    }
    x[0] = o;
    x[1] = o + (float)(i + 1) * sc;
    x[2] = o;
    x[3] = o + sc;
}

/* Checks result y of input x (array i): mean ~ 0, std ~ 1, equal to an
 * independent double-precision normalisation, index marker i + 1.  Returns
 * 0 or -1 with why filled. */
static int demo_check(const float *x, const float *y, size_t n, size_t i,
                      char *why, size_t size)
{
    double sx = 0, sxx = 0, sy = 0, syy = 0, maxdiff = 0;

    for (size_t j = 0; j < n; j++)
        sx += x[j];
    double mx = sx / (double)n;
    for (size_t j = 0; j < n; j++)
        sxx += (x[j] - mx) * (x[j] - mx);
    double sdx = sqrt(sxx / (double)n);
    for (size_t j = 0; j < n; j++) {
        double want = (x[j] - mx) / sdx, d = fabs(y[j] - want);
        if (!(d <= maxdiff)) /* also NaN */
            maxdiff = isnan(d) ? INFINITY : d;
        sy += y[j];
    }
    double my = sy / (double)n;
    for (size_t j = 0; j < n; j++)
        syy += (y[j] - my) * (y[j] - my);
    double sdy = sqrt(syy / (double)n);
    double mark = (y[1] - y[0]) / (y[3] - y[2]);

    if (!(fabs(my) < 1e-4 && fabs(sdy - 1) < 1e-4)) {
        snprintf(why, size, "array %zu: mean %.3g std %.6f", i, my, sdy);
        return -1;
    }
    if (!(maxdiff < 1e-3)) {
        snprintf(why, size, "array %zu: differs from the reference by %.3g", i,
                 maxdiff);
        return -1;
    }
    if (!(fabs(mark - (double)(i + 1)) < 0.01)) {
        snprintf(why, size,
                 "array %zu: carries the index marker of array %.2f (out of "
                 "order)",
                 i, mark - 1);
        return -1;
    }
    return 0;
}

typedef struct demo_run {
    double seconds;
    size_t failed;
    size_t nworkers;
    pool_worker_stats_t stats[64];
} demo_run_t;

/* One timed map of normalize over the arrays on a fresh pool of `workers`
 * (0: one per core); the pool's start-up and a small warm-up map are not
 * timed. */
static int demo_map(const char *plugin, int workers, float **in, float **out,
                    const size_t *lens, size_t n, demo_run_t *run)
{
    pool_opts_t opts;
    pool_t *p = NULL;
    pk_error_t err;
    size_t nf = 0;
    int status = PK_EXIT_FAIL;

    pool_opts_init(&opts);
    opts.workers = workers;
    opts.plugins = &plugin;
    opts.nplugins = 1;
    pk_error_clear(&err);
    if (pool_create(&p, &opts, &err) != PK_OK) {
        pk__cli_report("demo: cannot start the pool", &err);
        return PK_EXIT_FAIL;
    }
    size_t warm = n < 4 ? n : 4;
    if (pool_map_f32_arrays(p, "examples", "normalize",
                            (const float *const *)in, out, lens, warm, &nf,
                            &err) != PK_OK) {
        pk__cli_report("demo: normalize", &err);
        goto done;
    }
    double t0 = pk__cli_now_s();
    pk_err_t rc =
        pool_map_f32_arrays(p, "examples", "normalize",
                            (const float *const *)in, out, lens, n, &nf, &err);
    run->seconds = pk__cli_now_s() - t0;
    run->failed = nf;
    if (rc != PK_OK) {
        pk__cli_report("demo: normalize", &err);
        goto done;
    }
    if (pool_stats(p, run->stats, 64, &run->nworkers) != PK_OK) {
        fprintf(stderr, "picklepool: demo: pool_stats failed\n");
        goto done;
    }
    status = PK_EXIT_OK;
done:
    pool_destroy(&p);
    return status;
}

static int demo_verify(float **in, float **out, const size_t *lens, size_t n,
                       const char *label)
{
    char why[200];

    for (size_t i = 0; i < n; i++)
        if (demo_check(in[i], out[i], lens[i], i, why, sizeof why) < 0) {
            fprintf(stderr, "picklepool: demo: %s: wrong result: %s\n", label,
                    why);
            return -1;
        }
    return 0;
}

int pk__cmd_demo(int argc, char **argv)
{
    long narrays = 256, mib = 1, workers = 0;
    const char *plugin = NULL;
    char defplugin[PATH_MAX];
    int status = PK_EXIT_FAIL;

    for (int i = 1; i < argc; i++) {
        const char *v;
        int missing = 0;
        if ((v = pk__cli_take_opt(argc, argv, &i, "--arrays", &missing))) {
            if (pk__cli_parse_long(v, 1, 1 << 20, &narrays) < 0)
                return pk__cli_usage_error("demo: bad --arrays '%s'", v);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--mib", &missing))) {
            if (pk__cli_parse_long(v, 1, 1024, &mib) < 0)
                return pk__cli_usage_error("demo: bad --mib '%s'", v);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--workers",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, 64, &workers) < 0)
                return pk__cli_usage_error("demo: bad --workers '%s'", v);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--plugin",
                                         &missing))) {
            plugin = v;
        } else if (missing) {
            return pk__cli_usage_error("demo: %s needs a value", argv[i]);
        } else {
            return pk__cli_usage_error("demo: unexpected argument '%s'",
                                       argv[i]);
        }
    }
    if (plugin == NULL) {
        if (!pk__cli_default_plugin("examples", defplugin, sizeof defplugin)) {
            fprintf(stderr,
                    "picklepool: demo: cannot find %s (build it with `make`, "
                    "or pass --plugin PATH)\n",
                    defplugin);
            return PK_EXIT_FAIL;
        }
        plugin = defplugin;
    }

    size_t n = (size_t)narrays, len = (size_t)mib * (1u << 20) / sizeof(float);
    float **in = calloc(n, sizeof *in), **out = calloc(n, sizeof *out);
    size_t *lens = calloc(n, sizeof *lens);
    demo_run_t *one = calloc(1, sizeof *one), *all = calloc(1, sizeof *all);
    if (!in || !out || !lens || !one || !all)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        in[i] = malloc(len * sizeof(float));
        out[i] = malloc(len * sizeof(float));
        if (!in[i] || !out[i])
            goto oom;
        lens[i] = len;
        demo_fill(in[i], len, i);
        memset(out[i], 0, len * sizeof(float)); /* fault it in: untimed */
    }
    double mb = (double)n * (double)len * sizeof(float) / 1e6;

    printf("picklepool demo: examples.normalize over %zu float32 arrays of "
           "%ld MiB (%.0f MB)\n",
           n, mib, mb);
    if (demo_map(plugin, 1, in, out, lens, n, one) != PK_EXIT_OK)
        goto done;
    if (one->failed || demo_verify(in, out, lens, n, "1 worker") < 0) {
        if (one->failed)
            fprintf(stderr, "picklepool: demo: %zu arrays failed\n",
                    one->failed);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        memset(out[i], 0, len * sizeof(float));
    if (demo_map(plugin, (int)workers, in, out, lens, n, all) != PK_EXIT_OK)
        goto done;
    if (all->failed || demo_verify(in, out, lens, n, "all workers") < 0) {
        if (all->failed)
            fprintf(stderr, "picklepool: demo: %zu arrays failed\n",
                    all->failed);
        goto done;
    }

    printf("\nplacement (%zu workers, compact):\n", all->nworkers);
    printf("  %-6s %-8s %-5s %-8s %8s %8s\n", "worker", "pid", "core", "cpus",
           "arrays", "busy s");
    for (size_t k = 0; k < all->nworkers && k < 64; k++) {
        const pool_worker_stats_t *w = &all->stats[k];
        printf("  %-6d %-8d %-5d %-8s %8llu %8.3f\n", w->slot, w->pid, w->core,
               w->cpus, (unsigned long long)w->items_done, w->busy_s);
    }
    printf("\n  %-12s %10s %12s %10s\n", "workers", "seconds", "MB/s",
           "arrays/s");
    printf("  %-12d %10.3f %12.0f %10.0f\n", 1, one->seconds, mb / one->seconds,
           (double)n / one->seconds);
    printf("  %-12zu %10.3f %12.0f %10.0f\n", all->nworkers, all->seconds,
           mb / all->seconds, (double)n / all->seconds);
    printf("\nspeed-up over one worker: %.2fx on %zu workers\n",
           one->seconds / all->seconds, all->nworkers);
    printf("check: %zu results with mean 0 and std 1, equal to an independent "
           "normalisation, in input order: OK\n",
           n);
    status = PK_EXIT_OK;
    goto done;
oom:
    fprintf(stderr, "picklepool: demo: out of memory\n");
done:
    for (size_t i = 0; in && out && i < n; i++) {
        free(in[i]);
        free(out[i]);
    }
    free(in);
    free(out);
    free(lens);
    free(one);
    free(all);
    return status;
}
