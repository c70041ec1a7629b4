/*
 * preprocess.c - the `preprocess` plugin: native kernels of an image
 * preprocessing pipeline (examples/digits_pipeline.py runs them), each
 * taking a batch and returning a new array of the same shape, built where
 * the runtime puts large results (a pool's shared arena), so nothing is
 * copied on its way back.
 *
 *   preprocess.standardize(a) -> a'    per sample: (x - mean) / std of each
 *                                      a[i] of a C-contiguous float32 array
 *                                      (the whole array when 1-D); a
 *                                      constant sample gives zeros
 *   preprocess.hflip(a) -> a'          a with its last axis reversed: any
 *                                      dtype, C or Fortran order (kept)
 *   preprocess.augment((a, seed[, shift[, flip_p[, sigma]]])) -> a'
 *                                      for a C-contiguous float32 batch of
 *                                      images (n, h, w): each image mirrored
 *                                      with probability flip_p (0), moved by
 *                                      dy, dx in [-shift, shift] (crop and
 *                                      zero pad; shift 1 by default), plus
 *                                      Gaussian noise of std sigma (0)
 *
 * augment's draws are a pure function of (seed, image index, pixel), so a
 * batch gives the same output in any worker, any order, any run; the
 * stream is splitmix64's (k-th draw: mix(seed + (k + 1) * golden)), and
 * image i of h * w = n pixels uses draws i * (3 + ceil(n / 2)) onwards:
 * dy, dx, flip, then one per two pixels (Box-Muller on its two 32-bit
 * halves: the cosine for the even pixel, the sine for the odd one).  The
 * pipeline's numpy twin reproduces it (examples/digits_pipeline.py:
 * np_augment).
 *
 * As examples.c: built without linking libpicklepool, public API only.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "picklepool/registry.h"

pk_err_t picklepool_plugin_init(pk_error_t *err);

static pk_err_t done(pool_call_t *c, pk_value_t *r, pk_value_t **result)
{
    if (!r)
        return pool_fail(c, PK_ENOMEM, "MemoryError: out of memory");
    *result = r;
    return PK_OK;
}

/* The one argument as a C-contiguous float32 ndarray of at least min_ndim
 * dimensions (exactly min_ndim when exact). */
static pk_err_t f32_arg(pool_call_t *c, const char *fn, const pk_value_t *v,
                        int min_ndim, int exact, const pk_ndarray_t **out)
{
    char dts[16] = "?";
    if (v->type != PK_NDARRAY)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: %s expects a C-contiguous float32 "
                         "ndarray, got %s",
                         fn, pk_value_type_name(v));
    const pk_ndarray_t *nd = v->u.nd;
    pk_dtype_str(&nd->dtype, dts, sizeof dts);
    if (nd->dtype.kind != 'f' || nd->dtype.itemsize != 4 ||
        nd->dtype.byteorder == '>' || !pk_ndarray_c_contiguous(nd))
        return pool_fail(
            c, PK_ETYPE,
            "TypeError: %s expects a C-contiguous float32 "
            "ndarray, got %s%s",
            fn, pk_ndarray_c_contiguous(nd) ? "" : "a non-contiguous ", dts);
    if (nd->ndim < min_ndim || (exact && nd->ndim != min_ndim))
        return pool_fail(c, PK_EFUNC,
                         "ValueError: %s expects an array of %s%d "
                         "dimensions, got %d",
                         fn, exact ? "" : "at least ", min_ndim, nd->ndim);
    *out = nd;
    return PK_OK;
}

/* ---- standardize --------------------------------------------------------- */

static void standardize_one(const float *restrict x, float *restrict y,
                            size_t n)
{
    if (n == 0)
        return;
    double k = x[0], s1 = 0, s2 = 0; /* shifted: no cancellation */
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - k;
        s1 += d;
        s2 += d * d;
    }
    double m = s1 / (double)n, var = s2 / (double)n - m * m;
    if (!(var > 0) && !isnan(var)) {
        memset(y, 0, n * sizeof *y);
        return;
    }
    double mean = k + m, inv = 1.0 / sqrt(var);
    for (size_t i = 0; i < n; i++)
        y[i] = (float)(((double)x[i] - mean) * inv);
}

static pk_err_t pp_standardize(pool_call_t *c, pk_value_t **result)
{
    const pk_ndarray_t *nd;
    pk_err_t rc = pool_want_args(c, "standardize", 1);
    if (rc == PK_OK)
        rc = f32_arg(c, "standardize", pk_item(c->args, 0), 1, 0, &nd);
    if (rc != PK_OK)
        return rc;
    pk_value_t *out =
        pk_ndarray(c->doc, &nd->dtype, nd->ndim, nd->shape, NULL, PK_VF_UNINIT);
    if (!out)
        return done(c, NULL, result);
    size_t total = nd->nbytes / sizeof(float);
    size_t nsamp = nd->ndim == 1 ? 1 : (size_t)nd->shape[0];
    size_t per = nsamp ? total / nsamp : 0;
    const float *x = nd->data;
    float *y = out->u.nd->data;
    for (size_t i = 0; i < nsamp; i++)
        standardize_one(x + i * per, y + i * per, per);
    return done(c, out, result);
}

/* ---- hflip --------------------------------------------------------------- */

/* Reverses the last axis: for each line along it (the other indices walked
 * as an odometer), element j of the output is element len-1-j of the
 * input.  The output has the input's strides (same order). */
static void flip_lines(const pk_ndarray_t *in, uint8_t *dst)
{
    int last = in->ndim - 1;
    size_t isz = in->dtype.itemsize;
    int64_t len = in->shape[last], st = in->strides[last];
    int64_t idx[PK_MAXDIMS] = {0};
    const uint8_t *src = in->data;
    for (;;) {
        int64_t off = 0;
        for (int k = 0; k < last; k++)
            off += idx[k] * in->strides[k];
        for (int64_t j = 0; j < len; j++)
            memcpy(dst + off + j * st, src + off + (len - 1 - j) * st, isz);
        int k = last - 1;
        while (k >= 0 && ++idx[k] == in->shape[k])
            idx[k--] = 0;
        if (k < 0)
            return;
    }
}

static pk_err_t pp_hflip(pool_call_t *c, pk_value_t **result)
{
    pk_err_t rc = pool_want_args(c, "hflip", 1);
    if (rc != PK_OK)
        return rc;
    const pk_value_t *v = pk_item(c->args, 0);
    if (v->type != PK_NDARRAY || v->u.nd->ndim < 1)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: hflip expects an ndarray of at least "
                         "one dimension, got %s",
                         v->type == PK_NDARRAY ? "a 0-d array"
                                               : pk_value_type_name(v));
    const pk_ndarray_t *nd = v->u.nd;
    pk_value_t *out = pk_ndarray(
        c->doc, &nd->dtype, nd->ndim, nd->shape, NULL,
        PK_VF_UNINIT | (v->flags & PK_VF_FORTRAN ? PK_VF_FORTRAN : 0));
    if (!out)
        return done(c, NULL, result);
    if (nd->nbytes > 0)
        flip_lines(nd, out->u.nd->data);
    return done(c, out, result);
}

/* ---- augment ------------------------------------------------------------- */

#define GOLDEN 0x9E3779B97F4A7C15ull

/* The k-th draw of splitmix64's stream from seed. */
static uint64_t draw(uint64_t seed, uint64_t k)
{
    uint64_t z = seed + (k + 1) * GOLDEN;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Two standard normals from one draw: Box-Muller on its two 32-bit
 * halves, both outputs, in single precision (twice as fast as double, and
 * far finer than the noise needs). */
static void normals(uint64_t z, float *a, float *b)
{
    float u1 = (float)(((double)(z >> 32) + 0.5) * (1.0 / 4294967296.0));
    float u2 =
        (float)(((double)(z & 0xffffffffu) + 0.5) * (1.0 / 4294967296.0));
    float r = sqrtf(-2.0f * logf(u1)), t = 2.0f * (float)M_PI * u2;
    *a = r * cosf(t);
    *b = r * sinf(t);
}

typedef struct aug {
    uint64_t seed;
    int64_t shift;
    double flip_p, sigma;
} aug_t;

static void augment_one(const aug_t *a, uint64_t i, const float *x, float *y,
                        int64_t h, int64_t w)
{
    int64_t n = h * w;
    uint64_t k0 = i * (uint64_t)(3 + (n + 1) / 2);
    int64_t span = 2 * a->shift + 1;
    int64_t dy = (int64_t)(draw(a->seed, k0) % (uint64_t)span) - a->shift;
    int64_t dx = (int64_t)(draw(a->seed, k0 + 1) % (uint64_t)span) - a->shift;
    double u = (double)(draw(a->seed, k0 + 2) >> 11) * 0x1p-53;
    int flip = u < a->flip_p;
    /* output (r, q) is the mirrored image's pixel (r - dy, q - dx), zero
     * outside it */
    for (int64_t r = 0; r < h; r++)
        for (int64_t q = 0; q < w; q++) {
            int64_t sr = r - dy, sq = q - dx;
            y[r * w + q] = sr >= 0 && sr < h && sq >= 0 && sq < w
                               ? x[sr * w + (flip ? w - 1 - sq : sq)]
                               : 0.0f;
        }
    if (!(a->sigma > 0))
        return;
    for (int64_t p = 0; p < n; p += 2) { /* pixels p, p+1: one draw */
        float g0, g1;
        normals(draw(a->seed, k0 + 3 + (uint64_t)(p / 2)), &g0, &g1);
        y[p] += (float)(a->sigma * g0);
        if (p + 1 < n)
            y[p + 1] += (float)(a->sigma * g1);
    }
}

static pk_err_t pp_augment(pool_call_t *c, pk_value_t **result)
{
    pk_err_t rc = pool_want_args(c, "augment", 1);
    if (rc != PK_OK)
        return rc;
    const pk_value_t *t = pk_item(c->args, 0);
    size_t n = t->type == PK_TUPLE ? pk_len(t) : 0;
    if (n < 2 || n > 5)
        return pool_fail(c, PK_ETYPE,
                         "TypeError: augment expects a tuple (batch, seed[, "
                         "shift[, flip_p[, sigma]]]), got %s",
                         t->type == PK_TUPLE ? "a tuple of another length"
                                             : pk_value_type_name(t));
    const pk_ndarray_t *nd;
    rc = f32_arg(c, "augment", pk_item(t, 0), 3, 1, &nd);
    if (rc != PK_OK)
        return rc;
    aug_t a = {0, 1, 0.0, 0.0};
    int64_t seed = 0;
    if (pk_as_int(pk_item(t, 1), &seed) != PK_OK ||
        (n > 2 && pk_as_int(pk_item(t, 2), &a.shift) != PK_OK) ||
        (n > 3 && pk_as_double(pk_item(t, 3), &a.flip_p) != PK_OK) ||
        (n > 4 && pk_as_double(pk_item(t, 4), &a.sigma) != PK_OK))
        return pool_fail(c, PK_ETYPE,
                         "TypeError: augment: seed and shift are ints, "
                         "flip_p and sigma numbers");
    if (a.shift < 0 || a.shift > 1 << 20 || !(a.flip_p >= 0) || !(a.sigma >= 0))
        return pool_fail(c, PK_EFUNC,
                         "ValueError: augment: shift, flip_p and sigma must "
                         "be non-negative");
    a.seed = (uint64_t)seed;
    pk_value_t *out =
        pk_ndarray(c->doc, &nd->dtype, nd->ndim, nd->shape, NULL, PK_VF_UNINIT);
    if (!out)
        return done(c, NULL, result);
    int64_t h = nd->shape[1], w = nd->shape[2];
    const float *x = nd->data;
    float *y = out->u.nd->data;
    for (int64_t i = 0; i < nd->shape[0]; i++)
        augment_one(&a, (uint64_t)i, x + i * h * w, y + i * h * w, h, w);
    return done(c, out, result);
}

/* What `picklepool map --list` prints (POOL_PLUGIN_DOC_SYMBOL). */
const char *const picklepool_plugin_doc[] = {
    "standardize(a) -> a'       (x - mean) / std of each sample a[i] of a "
    "float32 array",
    "hflip(a) -> a'             a with its last axis reversed (any dtype)",
    "augment((a, seed[, shift[, flip_p[, sigma]]])) -> a'  shifted, "
    "mirrored and noisy copies of a float32 batch (n, h, w)",
    NULL,
};

pk_err_t picklepool_plugin_init(pk_error_t *err)
{
    static const pool_fn_def_t fns[] = {
        {"standardize", pp_standardize, NULL},
        {"hflip", pp_hflip, NULL},
        {"augment", pp_augment, NULL},
    };
    return pool_register_all("preprocess", fns, sizeof fns / sizeof fns[0],
                             err);
}
