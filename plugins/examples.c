/*
 * examples.c - the `examples` plugin: small native functions for tests,
 * benchmarks and demos, and a model of how to write a plugin.
 *
 * Built into build/plugins/examples.so without linking libpicklepool: the
 * pk_* and pool_register symbols it uses resolve from the host executable
 * (built with -rdynamic) or from libpicklepool.so loaded in the host.  Only the
 * public API is used.
 *
 *   examples.square(n: int) -> int     n * n; a product beyond int64 comes back
 *                                      as a Python long (PK_BIGINT), like
 *                                      Python; a bigint argument is refused
 *   examples.spin(us) -> us            busy-waits `us` microseconds of wall
 *                                      time on the CPU (clock_gettime loop)
 *   examples.sleep(s) -> s             sleeps s seconds (int or float)
 *   examples.normalize(a) -> a'        (a - mean) / std for a C-contiguous
 *                                      float32 ndarray (population std, double
 *                                      accumulators); std 0 gives zeros
 *   examples.crash(x) -> x             SIGKILLs its own process when x < 0
 *   examples.fail(msg) -> raises       always fails: "ValueError: <msg>"
 *
 * Argument errors are PK_ETYPE (PK_EFUNC for bad values) with Python-style
 * text ("TypeError: square() takes exactly 1 argument (2 given)").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "picklepool/registry.h"

pk_err_t picklepool_plugin_init(pk_error_t *err);

/* Checks for exactly one positional and no keyword argument, and sets *v to
 * it.  (Every examples function takes one argument.) */
static pk_err_t one_arg(pool_call_t *c, const char *fn, const pk_value_t **v)
{
    pk_err_t rc = pool_want_args(c, fn, 1);
    if (rc == PK_OK)
        *v = pk_item(c->args, 0);
    return rc;
}

/* Hands r over as the result; NULL means a constructor ran out of memory. */
static pk_err_t done(pool_call_t *c, pk_value_t *r, pk_value_t **result)
{
    if (!r)
        return pool_fail(c, PK_ENOMEM, "MemoryError: out of memory");
    *result = r;
    return PK_OK;
}

/* The one argument, a non-negative number of seconds / microseconds (int or
 * float): *v is the value, *out the number. */
static pk_err_t duration_arg(pool_call_t *c, const char *fn,
                             const pk_value_t **v, double *out)
{
    pk_err_t rc = one_arg(c, fn, v);
    if (rc != PK_OK)
        return rc;
    if ((*v)->type != PK_INT && (*v)->type != PK_BOOL && (*v)->type != PK_FLOAT)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: %s() expects an int or a float, got %s",
                         fn, pk_value_type_name(*v));
    pk_as_double(*v, out);
    if (!(*out >= 0)) /* also NaN */
        return pool_fail(c, PK_EFUNC,
                         "ValueError: %s() length must be non-negative", fn);
    return PK_OK;
}

/* The same number in the result doc (NULL when memory runs out). */
static pk_value_t *copy_number(pool_call_t *c, const pk_value_t *v)
{
    switch (v->type) {
    case PK_BOOL:
        return pk_bool(v->u.b);
    case PK_INT:
        return pk_int(c->doc, v->u.i);
    case PK_FLOAT:
        return pk_float(c->doc, v->u.f);
    case PK_BIGINT:
        return pk_bigint(c->doc, v->u.big.bytes, v->u.big.len);
    default:
        return pk_none();
    }
}

static pk_err_t ex_square(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v;
    pk_err_t rc = one_arg(c, "square", &v);
    if (rc != PK_OK)
        return rc;
    if (v->type == PK_BIGINT)
        return pool_fail(
            c, PK_ETYPE,
            "TypeError: square() expects an int that fits in 64 bits, "
            "got a %zu-byte int",
            v->u.big.len);
    int64_t x;
    if (pk_as_int(v, &x) != PK_OK)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: square() expects an int, got %s",
                         pk_value_type_name(v));
    int64_t sq;
    if (!__builtin_mul_overflow(x, x, &sq))
        return done(c, pk_int(c->doc, sq), result);
    __int128 wide = (__int128)x * x; /* fits: |x| <= 2^63 */
    return done(c, pk_bigint(c->doc, &wide, sizeof wide), result);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static pk_err_t ex_spin(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v;
    double us;
    pk_err_t rc = duration_arg(c, "spin", &v, &us);
    if (rc != PK_OK)
        return rc;
    double end = now_us() + us;
    while (now_us() < end)
        ;
    return done(c, copy_number(c, v), result);
}

static pk_err_t ex_sleep(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v;
    double s;
    pk_err_t rc = duration_arg(c, "sleep", &v, &s);
    if (rc != PK_OK)
        return rc;
    if (s > 1e9)
        return pool_fail(c, PK_EFUNC,
                         "OverflowError: sleep length is too large");
    struct timespec req, rem;
    req.tv_sec = (time_t)s;
    req.tv_nsec = (long)((s - (double)req.tv_sec) * 1e9);
    if (req.tv_nsec > 999999999L)
        req.tv_nsec = 999999999L;
    while (nanosleep(&req, &rem) < 0 && errno == EINTR)
        req = rem; /* a signal handler ran: sleep the rest */
    return done(c, copy_number(c, v), result);
}

/* Shifted-data statistics: subtracting the first element keeps the sum of
 * squares free of cancellation when the mean is large against the spread.
 * Eight independent accumulators in fixed blocks let the compiler vectorise
 * the loop at -O2 without reassociating floating point itself. */
static void stats(const float *x, size_t n, double *mean, double *var)
{
    double k = x[0], s1[8] = {0}, s2[8] = {0};
    size_t i = 0;

    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double d = (double)x[i + j] - k;
            s1[j] += d;
            s2[j] += d * d;
        }
    for (; i < n; i++) {
        double d = (double)x[i] - k;
        s1[0] += d;
        s2[0] += d * d;
    }
    double a = 0, b = 0;
    for (int j = 0; j < 8; j++) {
        a += s1[j];
        b += s2[j];
    }
    double m = a / (double)n;
    *mean = k + m;
    *var = b / (double)n - m * m;
}

/* Blocks of a fixed 8 elements: -O2's very cheap vectoriser cost model
 * takes fixed-count loops only (no epilogue). */
static void scale(const float *restrict x, float *restrict y, size_t n,
                  double mean, double inv)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            y[i + j] = (float)(((double)x[i + j] - mean) * inv);
    for (; i < n; i++)
        y[i] = (float)(((double)x[i] - mean) * inv);
}

static pk_err_t ex_normalize(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v;
    pk_err_t rc = one_arg(c, "normalize", &v);
    if (rc != PK_OK)
        return rc;
    if (v->type != PK_NDARRAY)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: normalize expects a C-contiguous float32 "
                         "ndarray, got %s",
                         pk_value_type_name(v));
    const pk_ndarray_t *nd = v->u.nd;
    char dts[16];
    pk_dtype_str(&nd->dtype, dts, sizeof dts);
    if (nd->dtype.kind != 'f' || nd->dtype.itemsize != 4 ||
        nd->dtype.byteorder == '>')
        return pool_fail(c, PK_ETYPE,
                         "TypeError: normalize expects a C-contiguous float32 "
                         "ndarray, got %s",
                         dts);
    if (!pk_ndarray_c_contiguous(nd))
        return pool_fail(c, PK_ETYPE,
                         "TypeError: normalize expects a C-contiguous float32 "
                         "ndarray, got a non-contiguous %s",
                         dts);

    /* Uninitialised: every element is written below (zeroing 8 MiB first
     * was a fifth of the kernel's time). */
    pk_value_t *out = pk_ndarray(c->doc, &nd->dtype, nd->ndim, nd->shape, NULL,
                                 (v->flags & PK_VF_NPSCALAR) | PK_VF_UNINIT);
    if (!out)
        return done(c, NULL, result);
    size_t n = nd->nbytes / sizeof(float);
    if (n > 0) {
        double mean, var;
        stats(nd->data, n, &mean, &var);
        if (isnan(var))
            scale(nd->data, out->u.nd->data, n, NAN, 0); /* NaN in, NaN out */
        else if (var > 0)
            scale(nd->data, out->u.nd->data, n, mean, 1.0 / sqrt(var));
        else /* constant input: all zeros */
            memset(out->u.nd->data, 0, n * sizeof(float));
    }
    return done(c, out, result);
}

static pk_err_t ex_crash(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v;
    pk_err_t rc = one_arg(c, "crash", &v);
    if (rc != PK_OK)
        return rc;
    double x;
    if (pk_as_double(v, &x) != PK_OK)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: crash() expects a number, got %s",
                         pk_value_type_name(v));
    if (x < 0)
        raise(SIGKILL);
    return done(c, copy_number(c, v), result);
}

static pk_err_t ex_fail(pool_call_t *c, pk_value_t **result)
{
    const pk_value_t *v;
    pk_err_t rc = one_arg(c, "fail", &v);
    if (rc != PK_OK)
        return rc;
    char buf[200];
    const char *s;
    size_t len;
    if (v->type == PK_STR && pk_as_str(v, &s, &len) == PK_OK)
        return pool_fail(c, PK_EFUNC, "ValueError: %.*s",
                         (int)(len > 230 ? 230 : len), s);
    return pool_fail(c, PK_EFUNC, "ValueError: %s",
                     pk_repr(v, buf, sizeof buf));
}

/* What `picklepool map --list` prints (POOL_PLUGIN_DOC_SYMBOL). */
const char *const picklepool_plugin_doc[] = {
    "square(n: int) -> int      n * n (a Python long beyond 64 bits)",
    "spin(us) -> us             busy-waits us microseconds on the CPU",
    "sleep(s) -> s              sleeps s seconds (int or float)",
    "normalize(a) -> a'         (a - mean) / std of a C-contiguous float32 "
    "ndarray",
    "crash(x) -> x              kills its worker with SIGKILL when x < 0",
    "fail(msg) -> raises        always fails with ValueError(msg)",
    NULL,
};

pk_err_t picklepool_plugin_init(pk_error_t *err)
{
    static const pool_fn_def_t fns[] = {
        {"square", ex_square, NULL}, {"spin", ex_spin, NULL},
        {"sleep", ex_sleep, NULL},   {"normalize", ex_normalize, NULL},
        {"crash", ex_crash, NULL},   {"fail", ex_fail, NULL},
    };
    return pool_register_all("examples", fns, sizeof fns / sizeof fns[0], err);
}
