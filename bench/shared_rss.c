/*
 * shared_rss.c - the caller's memory over many maps of large arrays.
 *
 *   build/bench/shared_rss [--maps N] [--mib M] [--workers N] [--plugin PATH]
 *
 * Each map gets a fresh float32 array of M MiB (default 8) allocated in the
 * shared heap (picklepool/shared.h) and filled, runs examples.normalize on
 * it, reads the result (a view of the pool's arena), frees the results and
 * releases the array: N maps (default 10000).  It prints the caller's RSS
 * (/proc/self/statm) every N/10 maps, the heap's and the arena's use at the
 * end, and the bytes pool_shared_copies counted.  Flat RSS means the heap
 * and the arena hand their pages back or reuse them.  Exit status 0 when
 * every result was right.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "picklepool.h"
#include "bench.h"
#include "../tests/lib/procfs.h" /* procfs_rss_kib, header only */

static int die(const char *what, const pk_error_t *err)
{
    fprintf(stderr, "shared_rss: %s: %s\n", what, err ? err->msg : "failed");
    return 1;
}

int main(int argc, char **argv)
{
    long maps = 10000, mib = 8, workers = 0;
    /* default: the examples plugin of this build tree (build/plugins) */
    char defplugin[4096];
    ssize_t n = readlink("/proc/self/exe", defplugin, sizeof defplugin - 64);
    const char *plugin = "examples";
    if (n > 0) {
        defplugin[n] = '\0';
        char *slash = strrchr(defplugin, '/');
        if (slash != NULL) {
            strcpy(slash, "/../plugins/examples.so");
            if (access(defplugin, R_OK) == 0)
                plugin = defplugin;
        }
    }
    static const struct option lo[] = {
        {"maps", required_argument, NULL, 'n'},
        {"mib", required_argument, NULL, 'm'},
        {"workers", required_argument, NULL, 'w'},
        {"plugin", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        if (c == 'n')
            maps = atol(optarg);
        else if (c == 'm')
            mib = atol(optarg);
        else if (c == 'w')
            workers = atol(optarg);
        else if (c == 'p')
            plugin = optarg;
        else {
            fprintf(stderr, "usage: shared_rss [--maps N] [--mib M] "
                            "[--workers N] [--plugin PATH]\n");
            return 2;
        }
    }
    if (maps < 10 || mib < 1 || mib > 1024) {
        fprintf(stderr, "shared_rss: --maps at least 10, --mib 1 to 1024\n");
        return 2;
    }
    pk_error_t err;
    pk_error_clear(&err);
    pool_opts_t o;
    pool_opts_init(&o);
    o.workers = (int)workers;
    o.plugins = &plugin;
    o.nplugins = 1;
    pool_t *p = NULL;
    if (pool_create(&p, &o, &err) != PK_OK)
        return die("pool_create", &err);
    size_t len = (size_t)mib * (1u << 20) / sizeof(float);
    pk_dtype_t f4;
    pk_dtype_parse("<f4", &f4);
    long first = 0, step = maps / 10;
    double t0 = now_s();
    printf("shared_rss: %ld maps of one %ld MiB float32 array each "
           "(examples.normalize)\n",
           maps, mib);
    for (long k = 0; k < maps; k++) {
        float *a = NULL;
        if (pool_shared_alloc(len * sizeof(float), (void **)&a, &err) != PK_OK)
            return die("pool_shared_alloc", &err);
        for (size_t j = 0; j < len; j++)
            a[j] = (float)((j * 2654435761u + (size_t)k) % 1000);
        pk_doc_t *doc = NULL;
        pool_results_t *r = NULL;
        int64_t shape = (int64_t)len;
        if (pk_doc_new(&doc) != PK_OK)
            return die("pk_doc_new", NULL);
        const pk_value_t *v =
            pk_ndarray(doc, &f4, 1, &shape, a, PK_VF_BORROWED | PK_VF_READONLY);
        if (v == NULL || pool_map(p, "examples", "normalize", &v, 1, NULL, &r,
                                  &err) != PK_OK)
            return die("pool_map", &err);
        const pool_item_t *it = pool_results_item(r, 0);
        if (it->status != PK_OK)
            return die("normalize", NULL);
        const float *y = it->value->u.nd->data;
        double s = 0;
        for (size_t j = 0; j < len; j += 4096)
            s += y[j];
        if (!isfinite(s))
            return die("a result that is not finite", NULL);
        pool_results_free(&r);
        pk_doc_free(&doc);
        pool_shared_release(a);
        if (k + 1 == 10)
            first = procfs_rss_kib();
        if ((k + 1) % step == 0)
            printf("  after %6ld maps: RSS %7ld KiB\n", k + 1,
                   procfs_rss_kib());
    }
    double t = now_s() - t0;
    long last = procfs_rss_kib();
    size_t blocks, bytes;
    uint64_t cin, cout;
    pool_shared_usage(&blocks, &bytes);
    pool_shared_copies(p, &cin, &cout);
    printf("RSS after 10 maps %ld KiB, after %ld maps %ld KiB (%+ld KiB); "
           "heap: %zu blocks, %zu bytes in use; copied: %llu bytes in, %llu "
           "out; %.0f MB/s\n",
           first, maps, last, last - first, blocks, bytes,
           (unsigned long long)cin, (unsigned long long)cout,
           (double)maps * (double)len * 4 / 1e6 / t);
    pool_destroy(&p);
    return 0;
}
