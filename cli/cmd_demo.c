/*
 * cmd_demo.c - `picklepool demo`, the README's main job.
 *
 *   picklepool demo [--arrays N] [--mib M] [--workers N] [--runs R]
 *                   [--plugin PATH]
 *
 * examples.normalize over N synthetic float32 arrays of M MiB on pinned
 * workers: one pool of one worker against one of N workers (default one per
 * core).  The arrays live in the shared heap (picklepool/shared.h): the
 * workers read them in place and build their results in the pool's arena,
 * which the demo reads as views - no array is copied, and the demo prints
 * the bytes pool_shared_copies counted to show it.  Each pool first runs the map once untimed, so that neither column
 * pays for faulting in its pool's memory, then the two take turns for R
 * timed runs (default 5); the demo prints every run, the medians, the
 * throughput and the speed-up of median over median, and checks every
 * result of every run independently (values, and input order through a
 * marker each array carries).  Exit status 0 only when every result is
 * correct.  Without --plugin it loads the plugin `examples`,
 * found by name (pool_plugin_find).
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "picklepool/pool.h"
#include "picklepool/shared.h"

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

#define DEMO_MAX_WORKERS 64

/* One configuration of the comparison: a pool and its timings. */
typedef struct demo_cfg {
    int workers; /* asked for (0: one per core) */
    pool_t *pool;
    size_t nworkers; /* what it got */
    char label[24];  /* "1 worker", "2 workers" */
    double warm_s;   /* the untimed first run (shown, not counted) */
    double *run_s;   /* the timed runs */
} demo_cfg_t;

/* Checks every result of r (views of the arena) against its input. */
static int demo_verify(float **in, const pool_results_t *r, const size_t *lens,
                       size_t n, const char *label)
{
    char why[200];

    for (size_t i = 0; i < n; i++) {
        const pool_item_t *it = pool_results_item(r, i);
        const pk_value_t *v = it->value;
        if (v == NULL || v->type != PK_NDARRAY ||
            v->u.nd->nbytes != lens[i] * sizeof(float)) {
            fprintf(stderr,
                    "picklepool: demo: %s: result %zu is not a "
                    "float32 array of the input's length\n",
                    label, i);
            return -1;
        }
        if (demo_check(in[i], v->u.nd->data, lens[i], i, why, sizeof why) < 0) {
            fprintf(stderr, "picklepool: demo: %s: wrong result: %s\n", label,
                    why);
            return -1;
        }
    }
    return 0;
}

static int demo_start(const char *plugin, demo_cfg_t *c)
{
    pool_opts_t opts;
    pool_worker_stats_t st[DEMO_MAX_WORKERS];
    pk_error_t err;

    pool_opts_init(&opts);
    opts.workers = c->workers;
    opts.plugins = &plugin;
    opts.nplugins = 1;
    pk_error_clear(&err);
    if (pool_create(&c->pool, &opts, &err) != PK_OK) {
        pk__cli_report("demo: cannot start the pool", &err);
        return PK_EXIT_FAIL;
    }
    if (pool_stats(c->pool, st, DEMO_MAX_WORKERS, &c->nworkers) != PK_OK) {
        fprintf(stderr, "picklepool: demo: pool_stats failed\n");
        return PK_EXIT_FAIL;
    }
    snprintf(c->label, sizeof c->label, "%zu worker%s", c->nworkers,
             c->nworkers == 1 ? "" : "s");
    return PK_EXIT_OK;
}

/* One map of normalize over every array (items: ndarrays borrowing in[i])
 * on c's pool, timed from the call to its return, then checked.  Each
 * run's results are fresh views, freed after the check. */
static int demo_run(demo_cfg_t *c, float **in, const pk_value_t *const *items,
                    const size_t *lens, size_t n, double *seconds)
{
    pk_error_t err;
    pool_results_t *r = NULL;

    pk_error_clear(&err);
    double t0 = pk__cli_now_s();
    pk_err_t rc =
        pool_map(c->pool, "examples", "normalize", items, n, NULL, &r, &err);
    *seconds = pk__cli_now_s() - t0;
    size_t nf = rc == PK_OK ? pool_results_failed(r) : 0;
    if (rc != PK_OK || nf != 0) {
        if (nf) {
            for (size_t i = 0; i < n; i++)
                if (pool_results_item(r, i)->status != PK_OK) {
                    fprintf(stderr,
                            "picklepool: demo: %s: %zu arrays failed, the "
                            "first (%zu): %s\n",
                            c->label, nf, i, pool_results_item(r, i)->error);
                    break;
                }
        } else {
            pk__cli_report("demo: normalize", &err);
        }
        pool_results_free(&r);
        return PK_EXIT_FAIL;
    }
    int ok = demo_verify(in, r, lens, n, c->label) == 0;
    pool_results_free(&r);
    return ok ? PK_EXIT_OK : PK_EXIT_FAIL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (n >= 1; v is left as it was). */
static double median(const double *v, size_t n)
{
    double s[100];

    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static void demo_report(const demo_cfg_t *c, size_t runs, size_t n, double mb)
{
    pool_worker_stats_t st[DEMO_MAX_WORKERS];
    size_t nw = 0;
    const demo_cfg_t *one = &c[0], *all = &c[1];

    if (pool_stats(all->pool, st, DEMO_MAX_WORKERS, &nw) == PK_OK) {
        printf("\nplacement (%zu workers, compact; arrays and busy time over "
               "all %zu runs):\n",
               nw, runs + 1);
        printf("  %-6s %-8s %-5s %-8s %8s %8s\n", "worker", "pid", "core",
               "cpus", "arrays", "busy s");
        for (size_t k = 0; k < nw && k < DEMO_MAX_WORKERS; k++)
            printf("  %-6d %-8d %-5d %-8s %8llu %8.3f\n", st[k].slot, st[k].pid,
                   st[k].core, st[k].cpus, (unsigned long long)st[k].items_done,
                   st[k].busy_s);
    }
    printf("\n  %-10s %12s %12s   (seconds per map of all %zu arrays)\n", "run",
           one->label, all->label, n);
    printf("  %-10s %12.3f %12.3f   untimed: first touch of each pool's "
           "memory\n",
           "warm-up", one->warm_s, all->warm_s);
    for (size_t r = 0; r < runs; r++)
        printf("  %-10zu %12.3f %12.3f\n", r + 1, one->run_s[r], all->run_s[r]);
    double m1 = median(one->run_s, runs), ma = median(all->run_s, runs);
    printf("  %-10s %12.3f %12.3f\n", "median", m1, ma);
    printf("  %-10s %12.0f %12.0f\n", "MB/s", mb / m1, mb / ma);
    printf("  %-10s %12.0f %12.0f\n", "arrays/s", (double)n / m1,
           (double)n / ma);
    printf("\nspeed-up over one worker: %.2fx on %s (median of %zu timed "
           "run%s each)\n",
           m1 / ma, all->label, runs, runs == 1 ? "" : "s");
    uint64_t cin = 0, cout = 0;
    for (int k = 0; k < 2; k++) {
        uint64_t i1, o1;
        pool_shared_copies(c[k].pool, &i1, &o1);
        cin += i1;
        cout += o1;
    }
    printf("copies: %llu bytes of input and %llu bytes of results copied over "
           "all %zu maps (arrays read in place from the shared heap, results "
           "built in the arena and read as views)\n",
           (unsigned long long)cin, (unsigned long long)cout, 2 * (runs + 1));
    printf("check: %zu results with mean 0 and std 1, equal to an "
           "independent normalisation, in input order, after every run: OK\n",
           n);
}

/* The demo's numbers, by option. */
typedef struct demo_args {
    long arrays, mib, workers, runs;
    const char *plugin; /* NULL: the default one */
} demo_args_t;

static int parse_demo_args(int argc, char **argv, demo_args_t *a)
{
    const struct {
        const char *name;
        long lo, hi;
        long *dest;
    } nums[] = {
        {"--arrays", 1, 1 << 20, &a->arrays},
        {"--mib", 1, 1024, &a->mib},
        {"--workers", 1, DEMO_MAX_WORKERS, &a->workers},
        {"--runs", 1, 99, &a->runs},
    };

    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int missing = 0;
        size_t k;
        for (k = 0; k < sizeof nums / sizeof nums[0] && v == NULL; k++)
            v = pk__cli_take_opt(argc, argv, &i, nums[k].name, &missing);
        if (v != NULL) {
            k--;
            if (pk__cli_parse_long(v, nums[k].lo, nums[k].hi, nums[k].dest) < 0)
                return pk__cli_usage_error(
                    "demo: %s wants a number from %ld to %ld, not '%s'",
                    nums[k].name, nums[k].lo, nums[k].hi, v);
        } else if (!missing && (v = pk__cli_take_opt(argc, argv, &i, "--plugin",
                                                     &missing))) {
            a->plugin = v;
        } else if (missing) {
            return pk__cli_usage_error("demo: %s needs a value", argv[i]);
        } else {
            return pk__cli_usage_error("demo: unexpected argument '%s'",
                                       argv[i]);
        }
    }
    return PK_EXIT_OK;
}

int pk__cmd_demo(int argc, char **argv)
{
    demo_args_t a = {.arrays = 256, .mib = 1, .workers = 0, .runs = 5};
    const char *plugin;
    char defplugin[PATH_MAX];
    pk_error_t err;
    int status = parse_demo_args(argc, argv, &a);

    if (status != PK_EXIT_OK)
        return status;
    status = PK_EXIT_FAIL;
    plugin = a.plugin;
    if (plugin == NULL) {
        if (!pk__cli_default_plugin("examples", defplugin, sizeof defplugin,
                                    &err)) {
            pk__cli_report("demo", &err);
            return PK_EXIT_FAIL;
        }
        plugin = defplugin;
    }
    /* The fork server is a fork of this process: start it before the arrays
     * exist, or their pages are shared copy-on-write with it and whichever
     * run writes them first pays a page copy per 4 KiB, which once made one
     * worker look 5x slower than two. */
    pk_error_clear(&err);
    if (pool_global_init(&err) != PK_OK) {
        pk__cli_report("demo: cannot start the fork server", &err);
        return PK_EXIT_FAIL;
    }

    size_t n = (size_t)a.arrays, nr = (size_t)a.runs;
    size_t len = (size_t)a.mib * (1u << 20) / sizeof(float);
    demo_cfg_t cfg[2] = {{.workers = 1}, {.workers = (int)a.workers}};
    float **in = calloc(n, sizeof *in);
    pk_value_t **items = calloc(n, sizeof *items);
    size_t *lens = calloc(n, sizeof *lens);
    pk_doc_t *doc = NULL;
    pk_dtype_t f4;
    cfg[0].run_s = calloc(nr, sizeof(double));
    cfg[1].run_s = calloc(nr, sizeof(double));
    if (!in || !items || !lens || !cfg[0].run_s || !cfg[1].run_s ||
        pk_doc_new(&doc) != PK_OK || pk_dtype_parse("<f4", &f4) != PK_OK)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        int64_t shape = (int64_t)len;
        if (pool_shared_alloc(len * sizeof(float), (void **)&in[i], &err) !=
            PK_OK) {
            pk__cli_report("demo: cannot allocate the arrays", &err);
            goto done;
        }
        lens[i] = len;
        demo_fill(in[i], len, i);
        items[i] = pk_ndarray(doc, &f4, 1, &shape, in[i],
                              PK_VF_BORROWED | PK_VF_READONLY);
        if (items[i] == NULL)
            goto oom;
    }
    double mb = (double)n * (double)len * sizeof(float) / 1e6;

    printf("picklepool demo: examples.normalize over %zu float32 arrays of "
           "%ld MiB (%.0f MB)\n"
           "each pool runs the map once untimed, then %zu timed runs, the "
           "two pools in turn;\nevery run's results are checked\n",
           n, a.mib, mb, nr);
    const pk_value_t *const *vals = (const pk_value_t *const *)items;
    for (int k = 0; k < 2; k++)
        if (demo_start(plugin, &cfg[k]) != PK_EXIT_OK ||
            demo_run(&cfg[k], in, vals, lens, n, &cfg[k].warm_s) != PK_EXIT_OK)
            goto done;
    /* In turn, so that a neighbour's load on a shared machine falls on both
     * columns alike. */
    for (size_t r = 0; r < nr; r++)
        for (int k = 0; k < 2; k++)
            if (demo_run(&cfg[k], in, vals, lens, n, &cfg[k].run_s[r]) !=
                PK_EXIT_OK)
                goto done;
    demo_report(cfg, nr, n, mb);
    status = PK_EXIT_OK;
    goto done;
oom:
    fprintf(stderr, "picklepool: demo: out of memory\n");
done:
    for (int k = 0; k < 2; k++) {
        pool_destroy(&cfg[k].pool);
        free(cfg[k].run_s);
    }
    for (size_t i = 0; in && i < n; i++)
        if (in[i] != NULL)
            pool_shared_release(in[i]);
    free(in);
    free(items);
    pk_doc_free(&doc);
    free(lens);
    return status;
}
