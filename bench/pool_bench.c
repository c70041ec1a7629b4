/*
 * pool_bench.c - throughput, efficiency and latency of the worker pool, with
 * Python's multiprocessing.Pool measured side by side in the same run.
 *
 *   build/bench/pool_bench [--reps N] [--workers N] [--quick] [--no-peer]
 *                          [--plugin PATH] [--python PATH]
 *
 * Run it from the repository root (or from build/bench/ of a build tree) so
 * that it finds bench/pool_peer.py; --quick shrinks every workload ~4x.
 *
 * Workloads (examples plugin), each repeated --reps times (median [min-max]):
 *   1M tiny items      examples.square via pool_map_i64 and via pool_map on
 *                      values: items/s and wall ns per item
 *   400 x 5 ms items   examples.spin: parallel efficiency against the serial
 *                      loop (pool_call_local) measured in this run,
 *                      serial time / (parallel time * workers)
 *   32 x 8 MiB arrays  examples.normalize via pool_map_f32_arrays: MB/s of
 *                      input, speed-up over the serial loop
 *   2,000 round trips  pool_apply_async + pool_future_wait of square: p50/p99,
 *                      with the fast lane (default) and without (spin_us -1)
 *   start-up           pool_create until every worker is ready (median of
 *                      at least 5)
 * The peer is bench/pool_peer.py run with /usr/bin/python3 (fork context,
 * same worker count); its figures and the ratio picklepool / peer are printed
 * in the last columns.  This is a program, not a test: it checks nothing.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "picklepool.h"
#include "bench.h"

/* Median, min and max of n samples (sorted in place). */
typedef struct spread {
    double med, min, max;
    int have;
} spread_t;

static spread_t spread_of(double *v, size_t n)
{
    spread_t s = {0, 0, 0, n > 0};
    if (n == 0)
        return s;
    qsort(v, n, sizeof *v, cmp_double);
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.min = v[0];
    s.max = v[n - 1];
    return s;
}

static void die(const char *what, pk_err_t rc, const pk_error_t *err)
{
    fprintf(stderr, "pool_bench: %s: %s: %s\n", what, pk_errname(rc),
            err ? err->msg : "");
    exit(1);
}

/* Runs a call; dies when it fails, or when a vector map ran with failed
 * items (nfailed, which those maps set). */
#define TRY(what, call)                                                        \
    do {                                                                       \
        nfailed = 0;                                                           \
        pk_err_t rc_ = (call);                                                 \
        if (rc_ == PK_OK && nfailed > 0)                                       \
            rc_ = err.code;                                                    \
        if (rc_ != PK_OK)                                                      \
            die(what, rc_, &err);                                              \
    } while (0)

static pk_error_t err;
static size_t nfailed;

typedef struct bench_cfg {
    int reps, workers, quick, peer;
    const char *plugin;
    const char *python;
    char peer_script[PATH_MAX + 64];
    size_t n_square, n_spin, n_arrays, array_floats, n_rt;
} bench_cfg_t;

static pool_t *make_pool(const bench_cfg_t *c, int spin_us, double *took)
{
    pool_opts_t o;
    pool_t *p = NULL;
    pool_opts_init(&o);
    o.workers = c->workers;
    o.spin_us = spin_us;
    o.plugins = &c->plugin;
    o.nplugins = 1;
    double t0 = now_s();
    TRY("pool_create", pool_create(&p, &o, &err));
    if (took)
        *took = now_s() - t0;
    return p;
}

/* ---- the peer ------------------------------------------------------------ */

typedef struct peer {
    int ok;
    spread_t startup, square, spin_serial, spin, norm_serial, norm;
    double rt_p50_us, rt_p99_us;
} peer_t;

static void run_peer(const bench_cfg_t *c, int workers, peer_t *pr)
{
    char cmd[PATH_MAX * 2 + 128], line[256];
    FILE *f;

    memset(pr, 0, sizeof *pr);
    if (access(c->peer_script, R_OK) != 0 || access(c->python, X_OK) != 0) {
        fprintf(stderr, "pool_bench: no peer (%s or %s missing)\n",
                c->peer_script, c->python);
        return;
    }
    snprintf(cmd, sizeof cmd, "'%s' '%s' --workers %d --reps %d%s", c->python,
             c->peer_script, workers, c->reps, c->quick ? " --quick" : "");
    fprintf(stderr, "pool_bench: running the peer: %s\n", cmd);
    if ((f = popen(cmd, "r")) == NULL)
        return;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        double a, b, m;
        int k = sscanf(line, "%63s %lf %lf %lf", name, &a, &b, &m);
        spread_t s = {a, b, m, 1};
        if (k >= 3 && strcmp(name, "apply_rt") == 0) {
            pr->rt_p50_us = a;
            pr->rt_p99_us = b;
            continue;
        }
        if (k != 4)
            continue;
        if (!strcmp(name, "startup"))
            pr->startup = s;
        else if (!strcmp(name, "square_map"))
            pr->square = s;
        else if (!strcmp(name, "spin_serial"))
            pr->spin_serial = s;
        else if (!strcmp(name, "spin_map"))
            pr->spin = s;
        else if (!strcmp(name, "normalize_serial"))
            pr->norm_serial = s;
        else if (!strcmp(name, "normalize_map"))
            pr->norm = s;
    }
    pr->ok = pclose(f) == 0;
    if (!pr->ok)
        fprintf(stderr,
                "pool_bench: the peer failed; its figures are partial\n");
}

/* ---- workloads -------------------------------------------------------- */

typedef struct results {
    int workers;
    spread_t startup, sq_i64, sq_val, spin, spin_serial, norm, norm_serial;
    spread_t norm_shm;                     /* arrays in the shared heap */
    double copies_f32, copies_shm;         /* copies per item, each path */
    double rt_p50_us, rt_p99_us;           /* fast lane on (default) */
    double rt_sock_p50_us, rt_sock_p99_us; /* spin_us -1 */
} results_t;

static void bench_square(pool_t *p, const bench_cfg_t *c, results_t *r)
{
    size_t n = c->n_square;
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    double *t = calloc((size_t)c->reps, sizeof *t);
    pk_doc_t *doc = NULL;
    pk_value_t **items = malloc(n * sizeof *items);

    if (!in || !out || !t || !items || pk_doc_new(&doc) != PK_OK) {
        fprintf(stderr, "pool_bench: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        in[i] = (int64_t)i;
        if ((items[i] = pk_int(doc, (int64_t)i)) == NULL)
            die("pk_int", PK_ENOMEM, NULL);
    }
    TRY("warm-up", pool_map_i64(p, "examples", "square", in, out, n / 10, NULL,
                                NULL, &nfailed, &err));
    for (int k = 0; k < c->reps; k++) {
        double t0 = now_s();
        TRY("pool_map_i64", pool_map_i64(p, "examples", "square", in, out, n,
                                         NULL, NULL, &nfailed, &err));
        t[k] = now_s() - t0;
        if (out[n - 1] != (int64_t)(n - 1) * (int64_t)(n - 1))
            die("pool_map_i64: wrong result", PK_EINVAL, NULL);
    }
    r->sq_i64 = spread_of(t, (size_t)c->reps);
    for (int k = 0; k < c->reps; k++) {
        pool_results_t *res = NULL;
        double t0 = now_s();
        TRY("pool_map",
            pool_map(p, "examples", "square", (const pk_value_t *const *)items,
                     n, NULL, &res, &err));
        t[k] = now_s() - t0;
        if (pool_results_failed(res) != 0)
            die("pool_map: items failed", PK_EFUNC, NULL);
        pool_results_free(&res);
    }
    r->sq_val = spread_of(t, (size_t)c->reps);
    pk_doc_free(&doc);
    free(items);
    free(in);
    free(out);
    free(t);
}

static void bench_spin(pool_t *p, const bench_cfg_t *c, results_t *r)
{
    size_t n = c->n_spin;
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    double *t = calloc((size_t)c->reps, sizeof *t), ts[1];
    pk_doc_t *doc = NULL;

    for (size_t i = 0; i < n; i++)
        in[i] = 5000;
    for (int k = 0; k < c->reps; k++) {
        double t0 = now_s();
        TRY("pool_map_i64 spin", pool_map_i64(p, "examples", "spin", in, out, n,
                                              NULL, NULL, &nfailed, &err));
        t[k] = now_s() - t0;
    }
    r->spin = spread_of(t, (size_t)c->reps);

    /* the serial loop, in this process, once */
    if (pk_doc_new(&doc) != PK_OK)
        die("pk_doc_new", PK_ENOMEM, NULL);
    pk_value_t *args = pk_tuple_new(doc, 1), *res;
    pk_tuple_set(args, 0, pk_int(doc, 5000));
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        TRY("pool_call_local spin",
            pool_call_local("examples", "spin", doc, args, NULL, &res, &err));
    ts[0] = now_s() - t0;
    r->spin_serial = spread_of(ts, 1);
    pk_doc_free(&doc);
    free(in);
    free(out);
    free(t);
}

static void bench_normalize(pool_t *p, const bench_cfg_t *c, results_t *r)
{
    size_t n = c->n_arrays, len = c->array_floats;
    float **in = calloc(n, sizeof *in), **out = calloc(n, sizeof *out);
    size_t *lens = calloc(n, sizeof *lens);
    double *t = calloc((size_t)c->reps, sizeof *t);
    double *tser = calloc((size_t)c->reps, sizeof *tser);
    double *tshm = calloc((size_t)c->reps, sizeof *tshm);
    uint64_t s = 88172645463325252ull;
    pk_dtype_t f4;
    float **shm_in = calloc(n, sizeof *shm_in);

    for (size_t i = 0; i < n; i++) {
        in[i] = malloc(len * sizeof(float));
        out[i] = malloc(len * sizeof(float));
        if (!in[i] || !out[i])
            die("malloc", PK_ENOMEM, NULL);
        lens[i] = len;
        for (size_t j = 0; j < len; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            in[i][j] = (float)(s >> 40) * (1.0f / 16777216.0f) + (float)i;
        }
    }
    /* The same arrays in the shared heap (picklepool/shared.h), filled
     * once: the workers read them in place and build their results in the
     * arena, which come back as views (freed with the results). */
    pk_doc_t *shm_doc = NULL;
    pk_value_t **shm_items = calloc(n, sizeof *shm_items);
    pk_dtype_parse("<f4", &f4);
    if (pk_doc_new(&shm_doc) != PK_OK || shm_items == NULL)
        die("pk_doc_new", PK_ENOMEM, NULL);
    for (size_t i = 0; i < n; i++) {
        int64_t shape = (int64_t)len;
        TRY("pool_shared_alloc",
            pool_shared_alloc(len * sizeof(float), (void **)&shm_in[i], &err));
        memcpy(shm_in[i], in[i], len * sizeof(float));
        shm_items[i] = pk_ndarray(shm_doc, &f4, 1, &shape, shm_in[i],
                                  PK_VF_BORROWED | PK_VF_READONLY);
    }
    TRY("warm-up", pool_map_f32_arrays(p, "examples", "normalize",
                                       (const float *const *)in, out, lens, 2,
                                       NULL, NULL, &nfailed, &err));
    pool_results_t *mres = NULL;
    TRY("warm-up",
        pool_map(p, "examples", "normalize",
                 (const pk_value_t *const *)shm_items, 2, NULL, &mres, &err));
    pool_results_free(&mres);
    uint64_t in0, out0, in1, out1, in2, out2;
    for (int k = 0; k < c->reps; k++) {
        pool_shared_copies(p, &in0, &out0);
        double t0 = now_s();
        TRY("pool_map_f32_arrays",
            pool_map_f32_arrays(p, "examples", "normalize",
                                (const float *const *)in, out, lens, n, NULL,
                                NULL, &nfailed, &err));
        t[k] = now_s() - t0;
        pool_shared_copies(p, &in1, &out1);

        t0 = now_s();
        TRY("pool_map over shared arrays",
            pool_map(p, "examples", "normalize",
                     (const pk_value_t *const *)shm_items, n, NULL, &mres,
                     &err));
        if (pool_results_failed(mres) != 0)
            die("pool_map over shared arrays", PK_EFUNC, NULL);
        pool_results_free(&mres);
        tshm[k] = now_s() - t0;
        pool_shared_copies(p, &in2, &out2);
        /* pool_map_f32_arrays also copies each result into out[i] */
        r->copies_f32 = (double)(in1 - in0 + out1 - out0) /
                            ((double)n * (double)len * sizeof(float)) +
                        1;
        r->copies_shm = (double)(in2 - in1 + out2 - out1) /
                        ((double)n * (double)len * sizeof(float));

        /* serial: the same kernel in this process, arrays borrowed */
        t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            pk_doc_t *doc = NULL;
            int64_t shape = (int64_t)len;
            pk_value_t *args, *res;
            if (pk_doc_new(&doc) != PK_OK)
                die("pk_doc_new", PK_ENOMEM, NULL);
            args = pk_tuple_new(doc, 1);
            pk_tuple_set(
                args, 0,
                pk_ndarray(doc, &f4, 1, &shape, in[i], PK_VF_BORROWED));
            TRY("pool_call_local normalize",
                pool_call_local("examples", "normalize", doc, args, NULL, &res,
                                &err));
            pk_doc_free(&doc);
        }
        tser[k] = now_s() - t0;
    }
    r->norm = spread_of(t, (size_t)c->reps);
    r->norm_serial = spread_of(tser, (size_t)c->reps);
    r->norm_shm = spread_of(tshm, (size_t)c->reps);
    for (size_t i = 0; i < n; i++) {
        free(in[i]);
        free(out[i]);
        pool_shared_release(shm_in[i]);
    }
    free(shm_in);
    free(shm_items);
    free(tshm);
    pk_doc_free(&shm_doc);
    free(in);
    free(out);
    free(lens);
    free(t);
    free(tser);
}

static void bench_apply(pool_t *p, const bench_cfg_t *c, double *p50_us,
                        double *p99_us)
{
    size_t n = c->n_rt;
    double *lat = calloc(n, sizeof *lat);
    pk_doc_t *doc = NULL;
    pool_item_t item;

    if (lat == NULL || pk_doc_new(&doc) != PK_OK)
        die("alloc", PK_ENOMEM, NULL);
    pk_value_t *args = pk_tuple_new(doc, 1);
    pk_tuple_set(args, 0, pk_int(doc, 12345));
    for (size_t i = 0; i < n + 100; i++) { /* the first 100 warm up */
        pool_future_t *f = NULL;
        double t0 = now_s();
        TRY("pool_apply_async",
            pool_apply_async(p, "examples", "square", args, NULL, &f, &err));
        TRY("pool_future_wait", pool_future_wait(f, -1, &item));
        if (i >= 100)
            lat[i - 100] = now_s() - t0;
        pool_future_free(&f);
    }
    qsort(lat, n, sizeof *lat, cmp_double);
    *p50_us = lat[n / 2] * 1e6;
    *p99_us = lat[n * 99 / 100 < n ? n * 99 / 100 : n - 1] * 1e6;
    free(lat);
    pk_doc_free(&doc);
}

static void bench_startup(const bench_cfg_t *c, results_t *r)
{
    int k = c->reps < 5 ? 5 : c->reps;
    double *t = calloc((size_t)k, sizeof *t);
    for (int i = 0; i < k; i++) {
        pool_t *p = make_pool(c, 0, &t[i]);
        pool_destroy(&p);
    }
    r->startup = spread_of(t, (size_t)k);
    free(t);
}

/* ---- report ------------------------------------------------------------- */

static const char *fmt_rate(double per_s, char *buf, size_t size)
{
    if (per_s >= 1e6)
        snprintf(buf, size, "%.2fM", per_s / 1e6);
    else if (per_s >= 1e3)
        snprintf(buf, size, "%.1fk", per_s / 1e3);
    else
        snprintf(buf, size, "%.1f", per_s);
    return buf;
}

/* "median [min-max]" of a rate derived from times: count / time. */
static const char *rate_spread(double count, spread_t s, char *buf, size_t size)
{
    char a[32], b[32], c[32];
    if (!s.have)
        return "-";
    snprintf(buf, size, "%s [%s-%s]", fmt_rate(count / s.med, a, sizeof a),
             fmt_rate(count / s.max, b, sizeof b),
             fmt_rate(count / s.min, c, sizeof c));
    return buf;
}

static void row(const char *label, const char *pp, const char *peer,
                double ratio)
{
    char rb[32] = "-";
    if (ratio < 0)
        snprintf(rb, sizeof rb, "ratio");
    else if (ratio > 0)
        snprintf(rb, sizeof rb, "%.2fx", ratio);
    printf("%-38s %-30s %-16s %s\n", label, pp, peer, rb);
}

static void print_report(const bench_cfg_t *c, const results_t *r,
                         const peer_t *pr)
{
    char a[96], b[96], label[64];
    double w = r->workers, nsq = (double)c->n_square;
    double mb = (double)c->n_arrays * (double)c->array_floats * 4 / 1e6;

    printf("\npicklepool pool_bench: %d workers, %d reps, median [min-max]; "
           "peer: multiprocessing.Pool(%d) (fork)\n",
           r->workers, c->reps, r->workers);
    printf("ratio = peer time / picklepool time (higher: picklepool faster)"
           "\n\n");
    row("workload", "picklepool", "mp.Pool", -1);

    snprintf(label, sizeof label, "%zuk square, pool_map_i64 items/s",
             c->n_square / 1000);
    row(label, rate_spread(nsq, r->sq_i64, a, sizeof a),
        pr->square.have ? fmt_rate(nsq / pr->square.med, b, sizeof b) : "-",
        pr->square.have ? pr->square.med / r->sq_i64.med : 0);
    snprintf(a, sizeof a, "%.1f", r->sq_i64.med / nsq * 1e9);
    snprintf(b, sizeof b, "%.1f", pr->square.med / nsq * 1e9);
    row("  wall ns per item", a, pr->square.have ? b : "-", 0);
    snprintf(label, sizeof label, "%zuk square, pool_map values items/s",
             c->n_square / 1000);
    row(label, rate_spread(nsq, r->sq_val, a, sizeof a),
        pr->square.have ? fmt_rate(nsq / pr->square.med, b, sizeof b) : "-",
        pr->square.have ? pr->square.med / r->sq_val.med : 0);
    snprintf(a, sizeof a, "%.1f", r->sq_val.med / nsq * 1e9);
    snprintf(b, sizeof b, "%.1f", pr->square.med / nsq * 1e9);
    row("  wall ns per item", a, pr->square.have ? b : "-", 0);

    double eff = r->spin_serial.med / (r->spin.med * w);
    snprintf(a, sizeof a, "%.1f%% [%.1f-%.1f]", eff * 100,
             r->spin_serial.med / (r->spin.max * w) * 100,
             r->spin_serial.med / (r->spin.min * w) * 100);
    snprintf(b, sizeof b, "%.1f%%",
             pr->spin.have ? pr->spin_serial.med / (pr->spin.med * w) * 100
                           : 0);
    snprintf(label, sizeof label, "%zu x 5 ms spin, efficiency", c->n_spin);
    row(label, a, pr->spin.have ? b : "-",
        pr->spin.have ? pr->spin.med / r->spin.med : 0);
    snprintf(a, sizeof a, "%.3f s, serial %.3f s", r->spin.med,
             r->spin_serial.med);
    snprintf(b, sizeof b, "%.3f s", pr->spin.med);
    row("  time", a, pr->spin.have ? b : "-", 0);

    snprintf(a, sizeof a, "%.0f [%.0f-%.0f]", mb / r->norm.med,
             mb / r->norm.max, mb / r->norm.min);
    snprintf(b, sizeof b, "%.0f", pr->norm.have ? mb / pr->norm.med : 0);
    snprintf(label, sizeof label, "%zu x 8 MiB normalize MB/s", c->n_arrays);
    row(label, a, pr->norm.have ? b : "-",
        pr->norm.have ? pr->norm.med / r->norm.med : 0);
    snprintf(a, sizeof a, "%.2fx (serial %.0f MB/s)",
             r->norm_serial.med / r->norm.med, mb / r->norm_serial.med);
    snprintf(b, sizeof b, "%.2fx",
             pr->norm.have ? pr->norm_serial.med / pr->norm.med : 0);
    row("  speed-up over serial", a, pr->norm.have ? b : "-", 0);
    snprintf(a, sizeof a, "%.1f", r->copies_f32);
    row("  copies per item", a, "-", 0);
    snprintf(a, sizeof a, "%.0f [%.0f-%.0f]", mb / r->norm_shm.med,
             mb / r->norm_shm.max, mb / r->norm_shm.min);
    snprintf(b, sizeof b, "%.0f", pr->norm.have ? mb / pr->norm.med : 0);
    snprintf(label, sizeof label, "%zu x 8 MiB normalize, shared MB/s",
             c->n_arrays);
    row(label, a, pr->norm.have ? b : "-",
        pr->norm.have ? pr->norm.med / r->norm_shm.med : 0);
    snprintf(a, sizeof a, "%.2fx", r->norm_serial.med / r->norm_shm.med);
    row("  speed-up over serial", a, "-", 0);
    snprintf(a, sizeof a, "%.1f", r->copies_shm);
    row("  copies per item", a, "-", 0);

    snprintf(a, sizeof a, "%.1f / %.1f", r->rt_p50_us, r->rt_p99_us);
    snprintf(b, sizeof b, "%.1f / %.1f", pr->rt_p50_us, pr->rt_p99_us);
    snprintf(label, sizeof label, "%zu apply round trips p50/p99 us", c->n_rt);
    row(label, a, pr->rt_p50_us > 0 ? b : "-",
        pr->rt_p50_us > 0 ? pr->rt_p50_us / r->rt_p50_us : 0);
    snprintf(a, sizeof a, "%.1f / %.1f", r->rt_sock_p50_us, r->rt_sock_p99_us);
    row("  socket path (spin_us -1)", a, pr->rt_p50_us > 0 ? b : "-",
        pr->rt_p50_us > 0 ? pr->rt_p50_us / r->rt_sock_p50_us : 0);

    snprintf(a, sizeof a, "%.1f [%.1f-%.1f]", r->startup.med * 1e3,
             r->startup.min * 1e3, r->startup.max * 1e3);
    snprintf(b, sizeof b, "%.1f", pr->startup.med * 1e3);
    row("pool start-up ms", a, pr->startup.have ? b : "-",
        pr->startup.have ? pr->startup.med / r->startup.med : 0);

    printf("\ntargets: >= 10M tiny items/s: %s; >= 97%% efficiency at 5 ms: "
           "%s; p50 round trip <= 40 us: %s; shared-array normalize >= 1.0x "
           "serial: %s\n",
           nsq / r->sq_i64.med >= 10e6 ? "met" : "MISSED",
           eff >= 0.97 ? "met" : "MISSED",
           r->rt_p50_us <= 40 ? "met" : "MISSED",
           r->norm_serial.med / r->norm_shm.med >= 1.0 ? "met" : "MISSED");
}

/* ---- main --------------------------------------------------------------- */

static void exe_dir(char *buf, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    char *slash;
    if (n <= 0 || (buf[n] = '\0', slash = strrchr(buf, '/')) == NULL) {
        snprintf(buf, size, ".");
        return;
    }
    *slash = '\0';
}

int main(int argc, char **argv)
{
    bench_cfg_t c = {.reps = 3, .peer = 1, .python = "/usr/bin/python3"};
    char dir[PATH_MAX], plugin[PATH_MAX + 64];
    results_t r;
    peer_t pr;

    exe_dir(dir, sizeof dir);
    snprintf(plugin, sizeof plugin, "%s/../plugins/examples.so", dir);
    c.plugin = plugin;
    snprintf(c.peer_script, sizeof c.peer_script, "%s/../../bench/pool_peer.py",
             dir);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            c.reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            c.workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--plugin") && i + 1 < argc)
            c.plugin = argv[++i];
        else if (!strcmp(argv[i], "--python") && i + 1 < argc)
            c.python = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            c.quick = 1;
        else if (!strcmp(argv[i], "--no-peer"))
            c.peer = 0;
        else {
            fprintf(stderr,
                    "usage: pool_bench [--reps N] [--workers N] [--quick] "
                    "[--no-peer] [--plugin PATH] [--python PATH]\n");
            return 2;
        }
    }
    if (c.reps < 1)
        c.reps = 1;
    if (access(c.peer_script, R_OK) != 0) /* not in a build tree: try cwd */
        snprintf(c.peer_script, sizeof c.peer_script, "bench/pool_peer.py");
    c.n_square = c.quick ? 100000 : 1000000;
    c.n_spin = c.quick ? 100 : 400;
    c.n_arrays = c.quick ? 8 : 32;
    c.array_floats = (8u << 20) / sizeof(float);
    c.n_rt = c.quick ? 500 : 2000;

    TRY("pool_global_init", pool_global_init(&err));
    TRY("plugin", pool_plugin_load(c.plugin, &err));
    memset(&r, 0, sizeof r);
    fprintf(stderr, "pool_bench: start-up\n");
    bench_startup(&c, &r);
    pool_t *p = make_pool(&c, 0, NULL);
    pool_worker_stats_t st[1];
    size_t nw = 0;
    pool_stats(p, st, 1, &nw);
    r.workers = (int)nw;
    fprintf(stderr, "pool_bench: square\n");
    bench_square(p, &c, &r);
    fprintf(stderr, "pool_bench: spin\n");
    bench_spin(p, &c, &r);
    fprintf(stderr, "pool_bench: normalize\n");
    bench_normalize(p, &c, &r);
    fprintf(stderr, "pool_bench: round trips\n");
    bench_apply(p, &c, &r.rt_p50_us, &r.rt_p99_us);
    pool_destroy(&p);
    fprintf(stderr, "pool_bench: round trips without the fast lane\n");
    p = make_pool(&c, -1, NULL);
    bench_apply(p, &c, &r.rt_sock_p50_us, &r.rt_sock_p99_us);
    pool_destroy(&p);

    memset(&pr, 0, sizeof pr);
    if (c.peer)
        run_peer(&c, r.workers, &pr);
    print_report(&c, &r, &pr);
    return 0;
}
