/*
 * pickle_bench.c - the C pickle codec against CPython's pickle, same payloads,
 * same run.
 *
 * The program forks and execs the CPython peer (bench/pickle_peer.py under
 * $PYTHON, default /usr/bin/python3), which builds each payload, writes its
 * protocol-5 pickle (and out-of-band buffers) to a private temporary directory
 * and times pickle.loads / pickle.dumps.  Only after the peer has exited (so
 * the two never compete for the CPU) does this side read the same bytes and
 * time pk_loads (into a fresh doc per repetition; freeing the doc is not
 * timed, as dropping the Python result is not) and pk_dumps of the decoded
 * graph.  It checks that the C encoding equals CPython's bytes and prints one
 * row per payload: medians with [min-max] spread, and ratios CPython / C
 * (above 1: C is faster).
 *
 *   pickle_bench [--reps N] [--quick] [--python PATH] [--peer PATH]
 *
 * Decoding into fresh docs pays the page faults of fresh memory whenever the
 * allocator maps and unmaps large chunks per doc; running with
 * MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 (both
 * sides inherit it) shows the figures with a warm heap.
 *
 * Exit status: 0, or 1 when the peer fails or a plain payload's C encoding
 * differs from CPython's bytes (that is a codec bug, not a timing).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "picklepool/pickle.h"

#define MAX_REPS 1000
#define MAX_BUFS 8

typedef struct stats {
    double med, min, max;
} stats_t;

typedef struct row {
    char name[64];
    int plain;
    int nbufs;
    stats_t py_loads, py_dumps, c_loads, c_dumps;
    size_t pickle_bytes, oob_bytes;
    const char *same; /* "yes", "NO", or "-" when not checked */
} row_t;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static stats_t summarize(double *t, int n)
{
    stats_t s = {0, 0, 0};
    if (n <= 0)
        return s;
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    s.min = t[0];
    s.max = t[n - 1];
    s.med = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    return s;
}

static int parse_times(char *field, double *t, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(field, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save))
        t[n++] = strtod(tok, NULL);
    return n;
}

/* Reads a whole file into a malloc'd buffer (freed by the caller). */
static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    void *p = malloc(n ? n : 1);
    if (p && fread(p, 1, n, f) != n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *len = n;
    return p;
}

/* Runs the peer with stdout captured into a malloc'd string; 0 on success. */
static int run_peer(const char *python, const char *peer, const char *dir,
                    int reps, int quick, char **out)
{
    int fd[2];
    if (pipe(fd) != 0) {
        perror("pipe");
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        char nreps[32];
        snprintf(nreps, sizeof nreps, "%d", reps);
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        char *argv[] = {(char *)python,
                        (char *)peer,
                        "--dir",
                        (char *)dir,
                        "--reps",
                        nreps,
                        quick ? "--quick" : NULL,
                        NULL};
        execv(python, argv);
        fprintf(stderr, "pickle_bench: cannot run %s: %s\n", python,
                strerror(errno));
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        ssize_t r = read(fd[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!buf)
        return -1;
    buf[len] = '\0';
    *out = buf;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "pickle_bench: peer %s failed (status %d)\n", peer,
                status);
        return -1;
    }
    return 0;
}

typedef struct oob_sink {
    size_t count, bytes;
} oob_sink_t;

static int take_oob(void *ctx, const void *data, size_t len, int readonly)
{
    oob_sink_t *s = ctx;
    (void)data;
    (void)readonly;
    s->count++;
    s->bytes += len;
    return 1;
}

static void report_err(const char *what, const char *name, pk_error_t *err)
{
    char msg[512];
    fprintf(stderr, "pickle_bench: %s of '%s' failed: %s\n", what, name,
            pk_error_format(err, msg, sizeof msg));
}

/* Times the C side of one payload; returns 0, or -1 when the codec failed. */
static int bench_c(row_t *row, const char *dir, int idx, int reps)
{
    char path[PATH_MAX + 32];
    size_t len = 0;
    int rc = -1;
    snprintf(path, sizeof path, "%s/%d.pkl", dir, idx);
    uint8_t *data = read_file(path, &len);
    pk_buffer_t bufs[MAX_BUFS];
    void *bufmem[MAX_BUFS] = {0};
    int nb = row->nbufs < MAX_BUFS ? row->nbufs : MAX_BUFS;
    if (!data) {
        fprintf(stderr, "pickle_bench: cannot read %s\n", path);
        return -1;
    }
    row->pickle_bytes = len;
    unlink(path);
    for (int k = 0; k < nb; k++) {
        snprintf(path, sizeof path, "%s/%d.buf%d", dir, idx, k);
        bufmem[k] = read_file(path, &bufs[k].len);
        if (!bufmem[k]) {
            fprintf(stderr, "pickle_bench: cannot read %s\n", path);
            goto out;
        }
        unlink(path);
        bufs[k].data = bufmem[k];
        bufs[k].readonly = 0;
        row->oob_bytes += bufs[k].len;
    }

    pk_load_opts_t lo;
    pk_load_opts_init(&lo);
    lo.buffers = nb ? bufs : NULL;
    lo.nbuffers = (size_t)nb;
    pk_dump_opts_t dopts;
    pk_dump_opts_init(&dopts);
    oob_sink_t sink = {0, 0};
    if (nb) {
        dopts.buffer_cb = take_oob;
        dopts.buffer_ctx = &sink;
    }

    double t[MAX_REPS];
    pk_error_t err;
    pk_value_t *root = NULL;
    pk_doc_t *doc = NULL;
    for (int r = -1; r < reps; r++) { /* r == -1: warm-up */
        if (pk_doc_new(&doc) != PK_OK)
            goto out;
        double t0 = now_ms();
        pk_err_t e = pk_loads(doc, data, len, &lo, &root, NULL, &err);
        double t1 = now_ms();
        pk_doc_free(&doc);
        if (e != PK_OK) {
            report_err("pk_loads", row->name, &err);
            goto out;
        }
        if (r >= 0)
            t[r] = t1 - t0;
    }
    row->c_loads = summarize(t, reps);

    if (pk_doc_new(&doc) != PK_OK)
        goto out;
    if (pk_loads(doc, data, len, &lo, &root, NULL, &err) != PK_OK) {
        report_err("pk_loads", row->name, &err);
        goto out;
    }
    for (int r = -1; r < reps; r++) {
        pk_buf_t b = {0};
        sink.count = sink.bytes = 0;
        double t0 = now_ms();
        pk_err_t e = pk_dumps(root, &dopts, &b, &err);
        double t1 = now_ms();
        if (e != PK_OK) {
            pk_buf_free(&b);
            report_err("pk_dumps", row->name, &err);
            goto out;
        }
        if (r == -1) {
            int same = b.len == len && memcmp(b.data, data, len) == 0 &&
                       sink.count == (size_t)nb;
            row->same = same ? "yes" : "NO";
        }
        pk_buf_free(&b);
        if (r >= 0)
            t[r] = t1 - t0;
    }
    row->c_dumps = summarize(t, reps);
    rc = 0;
out:
    pk_doc_free(&doc);
    free(data);
    for (int k = 0; k < nb; k++)
        free(bufmem[k]);
    return rc;
}

/* "12.3 [11.9-13.1]" with a precision that suits the magnitude. */
static const char *fmt_ms(char *buf, size_t size, stats_t s)
{
    double m = s.med;
    int p = m >= 100 ? 0 : m >= 10 ? 1 : m >= 1 ? 2 : m >= 0.01 ? 3 : 4;
    snprintf(buf, size, "%.*f [%.*f-%.*f]", p, m, p, s.min, p, s.max);
    return buf;
}

static const char *fmt_ratio(char *buf, size_t size, stats_t py, stats_t c)
{
    if (c.med <= 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "x%.2f", py.med / c.med);
    return buf;
}

static const char *fmt_size(char *buf, size_t size, size_t n)
{
    if (n >= (1u << 20))
        snprintf(buf, size, "%.1f MiB", n / 1048576.0);
    else
        snprintf(buf, size, "%.1f KiB", n / 1024.0);
    return buf;
}

static void print_row(const row_t *r)
{
    char a[48], b[48], c[48], d[48], e[16], f[16], g[32];
    size_t total = r->pickle_bytes + r->oob_bytes;
    printf("%-26s %10s | %24s %24s %7s | %24s %24s %7s | %s\n", r->name,
           fmt_size(g, sizeof g, total), fmt_ms(a, sizeof a, r->py_loads),
           fmt_ms(b, sizeof b, r->c_loads),
           fmt_ratio(e, sizeof e, r->py_loads, r->c_loads),
           fmt_ms(c, sizeof c, r->py_dumps), fmt_ms(d, sizeof d, r->c_dumps),
           fmt_ratio(f, sizeof f, r->py_dumps, r->c_dumps), r->same);
    fflush(stdout);
}

/* The peer script: --peer, $PICKLEPOOL_PEER, then next to the sources relative
 * to this executable (build/bench or build/<sanitizer>/bench), then ./bench. */
static const char *find_peer(const char *given, char *buf, size_t size)
{
    if (given)
        return given;
    const char *env = getenv("PICKLEPOOL_PEER");
    if (env && *env)
        return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        const char *dir = dirname(exe);
        const char *up[] = {"../..", "../../.."};
        for (size_t i = 0; i < sizeof up / sizeof up[0]; i++) {
            snprintf(buf, size, "%s/%s/bench/pickle_peer.py", dir, up[i]);
            if (access(buf, R_OK) == 0)
                return buf;
        }
    }
    return "bench/pickle_peer.py";
}

static void usage(const char *argv0)
{
    fprintf(
        stderr,
        "usage: %s [--reps N] [--quick] [--python PATH] [--peer PATH]\n"
        "  --reps N     timed repetitions per side (default 5; one extra\n"
        "               warm-up each)\n"
        "  --quick      100k-element payloads and 8 MiB arrays (smoke run)\n"
        "  --python     CPython to run the peer ($PYTHON, /usr/bin/python3)\n"
        "  --peer       path of pickle_peer.py\n",
        argv0);
}

int main(int argc, char **argv)
{
    int reps = 5, quick = 0;
    const char *python = getenv("PYTHON");
    const char *peer_arg = NULL;
    if (!python || !*python)
        python = "/usr/bin/python3";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--python") && i + 1 < argc) {
            python = argv[++i];
        } else if (!strcmp(argv[i], "--peer") && i + 1 < argc) {
            peer_arg = argv[++i];
        } else {
            usage(argv[0]);
            return !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ? 0 : 2;
        }
    }
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "pickle_bench: --reps must be 1..%d\n", MAX_REPS);
        return 2;
    }
    char peerbuf[PATH_MAX];
    const char *peer = find_peer(peer_arg, peerbuf, sizeof peerbuf);

    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/pickle_bench.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }

    fprintf(stderr, "pickle_bench: running CPython peer %s %s (%d reps)...\n",
            python, peer, reps);
    char *out = NULL;
    int failed = run_peer(python, peer, dir, reps, quick, &out) != 0;

    printf("pickle codec: C (libpicklepool) vs CPython %s, protocol 5, "
           "%d reps after 1 warm-up, median [min-max] ms;\n"
           "ratio = CPython median / C median (above 1: C faster); "
           "same = C encoding byte-identical to CPython's\n\n",
           python, reps);
    printf("%-26s %10s | %24s %24s %7s | %24s %24s %7s | %s\n", "payload",
           "size", "CPython loads", "C loads", "decode", "CPython dumps",
           "C dumps", "encode", "same");

    int idx = 0, mismatch = 0;
    for (char *save = NULL, *line = out ? strtok_r(out, "\n", &save) : NULL;
         line; line = strtok_r(NULL, "\n", &save), idx++) {
        char *f[5];
        int nf = 0;
        for (char *s2 = NULL, *tok = strtok_r(line, "\t", &s2); tok && nf < 5;
             tok = strtok_r(NULL, "\t", &s2))
            f[nf++] = tok;
        if (nf != 5) {
            fprintf(stderr, "pickle_bench: bad peer line %d\n", idx);
            failed = 1;
            continue;
        }
        row_t row;
        memset(&row, 0, sizeof row);
        snprintf(row.name, sizeof row.name, "%s", f[0]);
        row.plain = atoi(f[1]);
        row.nbufs = atoi(f[2]);
        row.same = "-";
        double t[MAX_REPS];
        row.py_loads = summarize(t, parse_times(f[3], t, MAX_REPS));
        row.py_dumps = summarize(t, parse_times(f[4], t, MAX_REPS));
        if (bench_c(&row, dir, idx, reps) != 0) {
            failed = 1;
            continue;
        }
        if (row.plain && strcmp(row.same, "yes") != 0)
            mismatch = 1;
        print_row(&row);
    }
    free(out);

    /* Whatever the peer left behind (a failed run). */
    char path[PATH_MAX + 32];
    for (int i = 0; i < 64; i++) {
        snprintf(path, sizeof path, "%s/%d.pkl", dir, i);
        unlink(path);
        for (int k = 0; k < MAX_BUFS; k++) {
            snprintf(path, sizeof path, "%s/%d.buf%d", dir, i, k);
            unlink(path);
        }
    }
    rmdir(dir);
    if (mismatch)
        fprintf(stderr, "pickle_bench: C encoding differs from CPython's bytes "
                        "for a plain payload (codec bug)\n");
    return failed || mismatch;
}
