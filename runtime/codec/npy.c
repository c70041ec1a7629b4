/*
 * npy.c - the callables a pickle may call, and numpy reconstruction.
 *
 * pk_loads never runs code: REDUCE/NEWOBJ/NEWOBJ_EX on a global of the
 * allow-list in npy.h lands here, and builds the value CPython would have
 * built - a set, bytes, a complex, or an ndarray/dtype/numpy scalar from the
 * argument tuples numpy's __reduce__ writes:
 *
 *   dtype:   numpy.dtype(typestr, align, copy), then BUILD with
 *            (3|4, byteorder, subarray, names, fields, elsize, align, flags
 *            [, metadata])
 *   array:   multiarray._reconstruct(ndarray, (0,), b'b'), then BUILD with
 *            (1, shape, dtype, is_fortran, rawdata)  (protocols 0-4, and 5
 *            for non-contiguous arrays)
 *            numeric._frombuffer(buffer, dtype, shape, order)  (protocol 5;
 *            the buffer may be out of band, then the array borrows it)
 *   scalar:  multiarray.scalar(dtype, bytes)
 *
 * BUILD mutates the value in place because the pickle may have memoized it
 * between REDUCE and BUILD.
 */
#include <string.h>

#include "codec/npy.h"
#include "codec/compat_names.h"

static const struct {
    pk__callable_t kind;
    const char *module;
    const char *name;
} callables[] = {
#define PK__CALL_ROW(kind, module, name) {PK__CALL_##kind, module, name},
    PK__CALLABLE_MAP(PK__CALL_ROW)
#undef PK__CALL_ROW
};

void pk__fix_import(const char **module, const char **name)
{
    for (size_t i = 0; i < PK_ARRAY_LEN(PK_COMPAT_NAMES); i++)
        if (strcmp(*module, PK_COMPAT_NAMES[i][0]) == 0 &&
            strcmp(*name, PK_COMPAT_NAMES[i][1]) == 0) {
            *module = PK_COMPAT_NAMES[i][2];
            *name = PK_COMPAT_NAMES[i][3];
            return;
        }
    for (size_t i = 0; i < PK_ARRAY_LEN(PK_COMPAT_MODULES); i++)
        if (strcmp(*module, PK_COMPAT_MODULES[i][0]) == 0) {
            *module = PK_COMPAT_MODULES[i][1];
            return;
        }
}

pk__callable_t pk__callable_lookup(const char *module, const char *name)
{
    for (size_t i = 0; i < PK_ARRAY_LEN(callables); i++)
        if (strcmp(callables[i].name, name) == 0 &&
            strcmp(callables[i].module, module) == 0)
            return callables[i].kind;
    if (strcmp(module, "builtins") == 0)
        for (size_t i = 0; i < PK_ARRAY_LEN(PK_BUILTIN_EXCEPTIONS); i++)
            if (strcmp(PK_BUILTIN_EXCEPTIONS[i], name) == 0)
                return PK__CALL_EXCEPTION;
    return pk__stdlib_lookup(module, name);
}

int pk__npy_is_ndarray(const char *module, const char *name)
{
    return strcmp(module, "numpy") == 0 && strcmp(name, "ndarray") == 0;
}

int pk__latin1_encode(const char *utf8, size_t len, uint8_t *dst,
                      size_t *outlen)
{
    const uint8_t *s = (const uint8_t *)utf8, *end = s + len;
    size_t n = 0;
    while (s < end) {
        uint8_t c = *s++;
        if (c >= 0x80) {
            /* Only U+0080..U+00FF fit: lead byte 0xC2 or 0xC3. */
            if ((c != 0xC2 && c != 0xC3) || s == end || (*s & 0xC0) != 0x80)
                return -1;
            c = (uint8_t)(((c & 0x03) << 6) | (*s++ & 0x3F));
        }
        if (dst != NULL)
            dst[n] = c;
        n++;
    }
    *outlen = n;
    return 0;
}

/* ---- argument helpers --------------------------------------------------- */

static size_t tuple_len(const pk_value_t *t)
{
    return t->type == PK_TUPLE ? t->u.seq.len : 0;
}

static const pk_value_t *arg(const pk_value_t *t, size_t i)
{
    return t->u.seq.items[i];
}

/* str or bytes, as CPython accepts both for numpy type strings when a Python 2
 * pickle is read with encoding='bytes'. */
static int text_of(const pk_value_t *v, const char **s, size_t *n)
{
    if (v->type != PK_STR && v->type != PK_BYTES)
        return 0;
    *s = v->u.str.ptr;
    *n = v->u.str.len;
    return 1;
}

static int text_is(const pk_value_t *v, const char *lit)
{
    const char *s;
    size_t n;
    return text_of(v, &s, &n) && n == strlen(lit) && memcmp(s, lit, n) == 0;
}

static int is_latin1_name(const pk_value_t *v)
{
    static const char *const names[] = {"latin1",     "latin-1",   "latin_1",
                                        "iso-8859-1", "iso8859-1", "iso_8859_1",
                                        "l1",         "iso8859_1"};
    const char *s;
    size_t n;
    char low[16];
    if (v->type != PK_STR || (text_of(v, &s, &n), n >= sizeof(low)))
        return 0;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
    low[n] = '\0';
    for (size_t i = 0; i < PK_ARRAY_LEN(names); i++)
        if (strcmp(low, names[i]) == 0)
            return 1;
    return 0;
}

/* A bytes-like value or latin-1 str as bytes.  For str the bytes go to a
 * pk__malloc'ed *scratch the caller frees. */
static pk_err_t bytes_of(const pk_value_t *v, const uint8_t **data, size_t *len,
                         uint8_t **scratch, const char *what, pk_error_t *err)
{
    *scratch = NULL;
    switch (v->type) {
    case PK_BYTES:
    case PK_BYTEARRAY:
    case PK_PICKLEBUFFER:
        *data = (const uint8_t *)v->u.str.ptr;
        *len = v->u.str.len;
        return PK_OK;
    case PK_STR: {
        /* Latin-1 is never longer than the UTF-8 it comes from: one pass. */
        size_t n;
        *scratch = pk__malloc(v->u.str.len ? v->u.str.len : 1);
        if (*scratch == NULL)
            return pk__err(err, PK_ENOMEM, "out of memory");
        if (pk__latin1_encode(v->u.str.ptr, v->u.str.len, *scratch, &n) != 0) {
            pk__free(*scratch);
            *scratch = NULL;
            return pk__err(err, PK_EPICKLE,
                           "%s: str data has a character above U+00FF", what);
        }
        *data = *scratch;
        *len = n;
        return PK_OK;
    }
    default:
        return pk__err(err, PK_EPICKLE, "%s: expected bytes, got %s", what,
                       pk_type_name((pk_type_t)v->type));
    }
}

static pk_err_t nomem(pk_error_t *err)
{
    return pk__err(err, PK_ENOMEM, "out of memory");
}

/* ---- builtins ----------------------------------------------------------- */

static pk_err_t call_set(pk_doc_t *doc, int frozen, const char *what,
                         const pk_value_t *args, pk_value_t **out,
                         pk_error_t *err)
{
    size_t n = tuple_len(args);
    if (n > 1)
        return pk__err(err, PK_EPICKLE, "%s takes at most 1 argument", what);
    const pk_value_t *it = n ? arg(args, 0) : NULL;
    size_t cnt = 0;
    if (it != NULL) {
        if (it->type == PK_DICT)
            cnt = it->u.dict.len;
        else if (it->type == PK_LIST || it->type == PK_TUPLE ||
                 it->type == PK_SET || it->type == PK_FROZENSET)
            cnt = it->u.seq.len;
        else
            return pk__err(err, PK_EPICKLE, "%s: argument of type %s", what,
                           pk_type_name((pk_type_t)it->type));
    }
    pk_value_t *s = frozen ? pk_frozenset_new(doc, cnt) : pk_set_new(doc, cnt);
    if (s == NULL)
        return nomem(err);
    for (size_t i = 0; i < cnt; i++) {
        pk_value_t *x = it->type == PK_DICT ? it->u.dict.entries[i].key
                                            : it->u.seq.items[i];
        pk_err_t rc = pk_set_add(doc, s, x);
        if (rc != PK_OK)
            return pk__err(err, rc, "%s: cannot add a %s", what,
                           pk_type_name((pk_type_t)x->type));
    }
    *out = s;
    return PK_OK;
}

static pk_err_t call_bytes(pk_doc_t *doc, int array, const char *what,
                           const pk_value_t *args, pk_value_t **out,
                           pk_error_t *err)
{
    size_t n = tuple_len(args);
    const uint8_t *data = (const uint8_t *)"";
    size_t len = 0;
    uint8_t *scratch = NULL;
    pk_value_t *v;

    if (n == 1) {
        const pk_value_t *a = arg(args, 0);
        if (a->type == PK_LIST || a->type == PK_TUPLE) {
            len = a->u.seq.len;
            scratch = pk__malloc(len);
            if (scratch == NULL)
                return nomem(err);
            for (size_t i = 0; i < len; i++) {
                const pk_value_t *x = a->u.seq.items[i];
                if (x->type != PK_INT || x->u.i < 0 || x->u.i > 255) {
                    pk__free(scratch);
                    return pk__err(err, PK_EPICKLE,
                                   "%s: bytes must be in range(0, 256)", what);
                }
                scratch[i] = (uint8_t)x->u.i;
            }
            data = scratch;
        } else if (a->type == PK_BYTES || a->type == PK_BYTEARRAY ||
                   a->type == PK_PICKLEBUFFER) {
            data = (const uint8_t *)a->u.str.ptr;
            len = a->u.str.len;
        } else {
            return pk__err(err, PK_EPICKLE, "%s: argument of type %s", what,
                           pk_type_name((pk_type_t)a->type));
        }
    } else if (n == 2 || n == 3) {
        const pk_value_t *s = arg(args, 0);
        if (s->type != PK_STR)
            return pk__err(err, PK_EPICKLE, "%s: expected str, got %s", what,
                           pk_type_name((pk_type_t)s->type));
        if (!is_latin1_name(arg(args, 1)) ||
            (n == 3 && !text_is(arg(args, 2), "strict")))
            return pk__err(err, PK_EREFUSED,
                           "refusing to call %s with an encoding other than "
                           "latin-1",
                           what);
        pk_err_t rc = bytes_of(s, &data, &len, &scratch, what, err);
        if (rc != PK_OK)
            return rc;
    } else if (n != 0) {
        return pk__err(err, PK_EPICKLE, "%s takes at most 3 arguments", what);
    }
    v = array ? pk_bytearray(doc, data, len) : pk_bytes(doc, data, len);
    pk__free(scratch);
    if (v == NULL)
        return nomem(err);
    *out = v;
    return PK_OK;
}

static pk_err_t call_codecs_encode(pk_doc_t *doc, const char *what,
                                   const pk_value_t *args, pk_value_t **out,
                                   pk_error_t *err)
{
    size_t n = tuple_len(args);
    if (n < 2 || n > 3 || !is_latin1_name(arg(args, 1)) ||
        (n == 3 && !text_is(arg(args, 2), "strict")))
        return pk__err(err, PK_EREFUSED,
                       "refusing to call %s with an encoding other than "
                       "latin1",
                       what);
    return call_bytes(doc, 0, what, args, out, err);
}

static int number_of(const pk_value_t *v, double *re, double *im)
{
    if (v->type == PK_COMPLEX) {
        *re = v->u.c.re;
        *im = v->u.c.im;
        return 1;
    }
    *im = 0;
    return pk_as_double(v, re) == PK_OK;
}

static pk_err_t call_complex(pk_doc_t *doc, const char *what,
                             const pk_value_t *args, pk_value_t **out,
                             pk_error_t *err)
{
    size_t n = tuple_len(args);
    double ar = 0, ai = 0, br = 0, bi = 0;
    if (n > 2 || (n >= 1 && !number_of(arg(args, 0), &ar, &ai)) ||
        (n == 2 && !number_of(arg(args, 1), &br, &bi)))
        return pk__err(err, PK_EPICKLE, "%s: expected up to two numbers", what);
    /* complex(a, b) is a + b*1j, but CPython only does that arithmetic on
     * parts that are complex: complex(1.0, -0.0) keeps its -0.0. */
    int a_c = n >= 1 && arg(args, 0)->type == PK_COMPLEX;
    int b_c = n == 2 && arg(args, 1)->type == PK_COMPLEX;
    double re = ar, im = n == 2 ? br : ai;
    if (b_c)
        re -= bi;
    if (a_c && n == 2)
        im += ai;
    *out = pk_complex(doc, re, im);
    return *out ? PK_OK : nomem(err);
}

/* ---- numpy -------------------------------------------------------------- */

/* Shape from a tuple (or list) of non-negative ints, or a single int. */
static pk_err_t shape_of(const pk_value_t *v, int64_t *shape, int *ndim,
                         const char *what, pk_error_t *err)
{
    if (v->type == PK_INT) {
        if (v->u.i < 0)
            return pk__err(err, PK_EPICKLE, "%s: negative dimension", what);
        shape[0] = v->u.i;
        *ndim = 1;
        return PK_OK;
    }
    if (v->type != PK_TUPLE && v->type != PK_LIST)
        return pk__err(err, PK_EPICKLE, "%s: shape is a %s, not a tuple", what,
                       pk_type_name((pk_type_t)v->type));
    if (v->u.seq.len > PK_MAXDIMS)
        return pk__err(err, PK_EUNSUPPORTED, "%s: more than %d dimensions",
                       what, PK_MAXDIMS);
    for (size_t i = 0; i < v->u.seq.len; i++) {
        const pk_value_t *d = v->u.seq.items[i];
        if (d->type != PK_INT || d->u.i < 0)
            return pk__err(err, PK_EPICKLE, "%s: bad dimension", what);
        shape[i] = d->u.i;
    }
    *ndim = (int)v->u.seq.len;
    return PK_OK;
}

/* product(shape) * itemsize, or -1 on overflow. */
static int nbytes_of(const int64_t *shape, int ndim, uint32_t itemsize,
                     size_t *out)
{
    size_t n = itemsize;
    int zero = 0;
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0)
            zero = 1;
    if (zero) {
        *out = 0;
        return 0;
    }
    for (int i = 0; i < ndim; i++) {
        if ((uint64_t)shape[i] > SIZE_MAX ||
            (n != 0 && (size_t)shape[i] > SIZE_MAX / n))
            return -1;
        n *= (size_t)shape[i];
    }
    if (n > (size_t)INT64_MAX)
        return -1;
    *out = n;
    return 0;
}

static pk_err_t call_dtype(pk_doc_t *doc, const char *what,
                           const pk_value_t *args, pk_value_t **out,
                           pk_error_t *err)
{
    const char *s;
    size_t n;
    char buf[32];
    pk_dtype_t dt;

    if (tuple_len(args) < 1 || tuple_len(args) > 3 ||
        !text_of(arg(args, 0), &s, &n))
        return pk__err(err, PK_EPICKLE, "%s: expected a type string", what);
    if (n == 0 || n >= sizeof(buf) || memchr(s, '\0', n) != NULL)
        return pk__err(err, PK_EUNSUPPORTED, "unsupported numpy dtype");
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (buf[0] == 'O')
        return pk__err(err, PK_EUNSUPPORTED,
                       "numpy object arrays (dtype 'O') are not supported");
    if (buf[0] == 'M' || buf[0] == 'm')
        return pk__err(err, PK_EUNSUPPORTED,
                       "numpy datetime/timedelta dtype '%s' is not supported",
                       buf);
    if (pk_dtype_parse(buf, &dt) != PK_OK)
        return pk__err(err, PK_EUNSUPPORTED,
                       "numpy dtype '%s' is not supported", buf);
    if (dt.byteorder == '=')
        dt.byteorder = '<';
    *out = pk_dtype_value(doc, &dt);
    return *out ? PK_OK : nomem(err);
}

static pk_err_t call_reconstruct(pk_doc_t *doc, const char *what,
                                 const pk_value_t *args, pk_value_t **out,
                                 pk_error_t *err)
{
    int64_t shape[PK_MAXDIMS];
    int ndim;
    size_t nb;
    const pk_value_t *cls;
    static const pk_dtype_t i1 = {'i', '|', 0, 1};

    if (tuple_len(args) != 3)
        return pk__err(err, PK_EPICKLE, "%s takes 3 arguments", what);
    cls = arg(args, 0);
    if (cls->type != PK_GLOBAL ||
        !pk__npy_is_ndarray(cls->u.global.module, cls->u.global.name))
        return pk__err(err, PK_EUNSUPPORTED,
                       "%s: only numpy.ndarray is supported, not %s%s%s", what,
                       cls->type == PK_GLOBAL ? cls->u.global.module
                                              : pk_type_name(cls->type),
                       cls->type == PK_GLOBAL ? "." : "",
                       cls->type == PK_GLOBAL ? cls->u.global.name : "");
    pk_err_t rc = shape_of(arg(args, 1), shape, &ndim, what, err);
    if (rc != PK_OK)
        return rc;
    /* numpy passes (0,): the data comes with BUILD.  Anything bigger would
     * allocate memory the input does not pay for. */
    if (nbytes_of(shape, ndim, 1, &nb) != 0 || nb != 0)
        return pk__err(err, PK_EUNSUPPORTED, "%s with a non-empty shape", what);
    *out = pk_ndarray(doc, &i1, ndim, shape, NULL, 0);
    return *out ? PK_OK : nomem(err);
}

/* Whether data may be read as elements of dt in place.  Out-of-band buffers
 * are the caller's memory; ZeroMQ, for one, hands small frames as pointers
 * into its receive buffer at any offset.  Such data is copied instead. */
static int aligned_for(const void *data, const pk_dtype_t *dt)
{
    size_t a = dt->itemsize;
    if (dt->kind == 'c')
        a /= 2; /* complex: two floats */
    else if (dt->kind == 'U')
        a = 4;
    else if (dt->kind == 'S' || dt->kind == 'V' || a > 16 || (a & (a - 1)))
        a = 1;
    return a <= 1 || ((uintptr_t)data % a) == 0;
}

static pk_err_t call_frombuffer(pk_doc_t *doc, const char *what,
                                const pk_value_t *args, pk_value_t **out,
                                pk_error_t *err)
{
    int64_t shape[PK_MAXDIMS];
    int ndim;
    size_t nb;
    unsigned flags = 0;

    if (tuple_len(args) != 4)
        return pk__err(err, PK_EPICKLE, "%s takes 4 arguments", what);
    const pk_value_t *buf = arg(args, 0), *dt = arg(args, 1);
    if (buf->type != PK_PICKLEBUFFER && buf->type != PK_BYTES &&
        buf->type != PK_BYTEARRAY)
        return pk__err(err, PK_EPICKLE, "%s: buffer is a %s", what,
                       pk_type_name((pk_type_t)buf->type));
    if (dt->type != PK_DTYPE)
        return pk__err(err, PK_EPICKLE, "%s: dtype is a %s", what,
                       pk_type_name((pk_type_t)dt->type));
    pk_err_t rc = shape_of(arg(args, 2), shape, &ndim, what, err);
    if (rc != PK_OK)
        return rc;
    if (text_is(arg(args, 3), "F"))
        flags |= PK_VF_FORTRAN;
    else if (!text_is(arg(args, 3), "C"))
        return pk__err(err, PK_EPICKLE, "%s: order must be 'C' or 'F'", what);
    if (nbytes_of(shape, ndim, dt->u.dtype->itemsize, &nb) != 0 ||
        nb != buf->u.str.len)
        return pk__err(err, PK_EPICKLE,
                       "%s: buffer has %zu bytes, the shape needs more or less",
                       what, buf->u.str.len);
    if (buf->type == PK_BYTES || (buf->flags & PK_VF_READONLY))
        flags |= PK_VF_READONLY;
    /* Zero copy, as numpy's frombuffer is a view: the array shares the
     * buffer (out of band: the caller's memory, O(1) whatever its size; in
     * band: the bytes the decoder already copied into this doc, which are
     * 64-byte aligned from a page up).  Small unaligned in-band data is
     * copied so every array the doc owns is 64-byte aligned. */
    int share = buf->type == PK_PICKLEBUFFER
                    ? aligned_for(buf->u.str.ptr, dt->u.dtype)
                    : ((uintptr_t)buf->u.str.ptr % 64) == 0;
    if (!share) {
        *out = pk_ndarray(doc, dt->u.dtype, ndim, shape, (void *)buf->u.str.ptr,
                          flags);
        return *out ? PK_OK : nomem(err);
    }
    pk_value_t *v = pk_ndarray(doc, dt->u.dtype, ndim, shape,
                               (void *)buf->u.str.ptr, flags | PK_VF_BORROWED);
    if (v == NULL)
        return nomem(err);
    if (!(buf->flags & PK_VF_BORROWED))
        v->flags &= (uint8_t)~PK_VF_BORROWED; /* the doc owns the bytes */
    *out = v;
    return PK_OK;
}

static pk_err_t call_scalar(pk_doc_t *doc, const char *what,
                            const pk_value_t *args, pk_value_t **out,
                            pk_error_t *err)
{
    const uint8_t *data;
    size_t len;
    uint8_t *scratch;

    if (tuple_len(args) != 2 || arg(args, 0)->type != PK_DTYPE)
        return pk__err(err, PK_EPICKLE, "%s: expected (dtype, bytes)", what);
    const pk_dtype_t *dt = arg(args, 0)->u.dtype;
    pk_err_t rc = bytes_of(arg(args, 1), &data, &len, &scratch, what, err);
    if (rc != PK_OK)
        return rc;
    if (len != dt->itemsize) {
        pk__free(scratch);
        return pk__err(err, PK_EPICKLE, "%s: %zu bytes for an item of %u", what,
                       len, (unsigned)dt->itemsize);
    }
    pk_value_t *v = pk_ndarray(doc, dt, 0, NULL, (void *)data, 0);
    pk__free(scratch);
    if (v == NULL)
        return nomem(err);
    v->flags |= PK_VF_NPSCALAR;
    *out = v;
    return PK_OK;
}

pk_err_t pk__call(pk_doc_t *doc, pk__callable_t kind, const char *what,
                  const pk_value_t *args, const pk_value_t *kwargs,
                  pk_value_t **out, pk_error_t *err)
{
    if (args->type != PK_TUPLE)
        return pk__err(err, PK_EPICKLE, "%s: arguments are a %s, not a tuple",
                       what, pk_type_name((pk_type_t)args->type));
    if (kwargs != NULL && (kwargs->type != PK_DICT || kwargs->u.dict.len))
        return pk__err(err, PK_EUNSUPPORTED,
                       "%s: keyword arguments are not supported", what);
    switch (kind) {
    case PK__CALL_SET:
    case PK__CALL_FROZENSET:
        return call_set(doc, kind == PK__CALL_FROZENSET, what, args, out, err);
    case PK__CALL_BYTEARRAY:
    case PK__CALL_BYTES:
        return call_bytes(doc, kind == PK__CALL_BYTEARRAY, what, args, out,
                          err);
    case PK__CALL_COMPLEX:
        return call_complex(doc, what, args, out, err);
    case PK__CALL_CODECS_ENCODE:
        return call_codecs_encode(doc, what, args, out, err);
    case PK__CALL_NP_DTYPE:
        return call_dtype(doc, what, args, out, err);
    case PK__CALL_NP_RECONSTRUCT:
        return call_reconstruct(doc, what, args, out, err);
    case PK__CALL_NP_FROMBUFFER:
        return call_frombuffer(doc, what, args, out, err);
    case PK__CALL_NP_SCALAR:
        return call_scalar(doc, what, args, out, err);
    case PK__CALL_EXCEPTION: {
        /* An instance to hand back, never a live exception: keep the call.
         * `what` is "builtins.<name>" (pk__callable_lookup checked it). */
        pk_value_t *g = pk_global(doc, "builtins", what + sizeof "builtins");
        *out = g ? pk_object(doc, g, (pk_value_t *)args, NULL) : NULL;
        return *out ? PK_OK : nomem(err);
    }
    case PK__CALL_STDLIB: /* the decoder calls stdlib.c for these */
    case PK__CALL_STDLIB_NEWOBJ:
    case PK__CALL_RECONSTRUCTOR:
    case PK__CALL_NONE:
        break;
    }
    return pk__err(err, PK_EREFUSED, "refusing to call %s", what);
}

/* ---- BUILD -------------------------------------------------------------- */

static int is_none(const pk_value_t *v)
{
    return v->type == PK_NONE;
}

static pk_err_t build_dtype(pk_value_t *inst, const pk_value_t *state,
                            pk_error_t *err)
{
    size_t n = tuple_len(state);
    const char *s;
    size_t sl;
    pk_dtype_t dt = *inst->u.dtype;

    if (n < 2 || !text_of(arg(state, 1), &s, &sl) || sl != 1 ||
        !memchr("<>|=", s[0], 4))
        return pk__err(err, PK_EPICKLE, "bad numpy dtype state");
    if (n >= 5 && !is_none(arg(state, 2)))
        return pk__err(err, PK_EUNSUPPORTED,
                       "numpy subarray dtypes are not supported");
    if (n >= 5 && (!is_none(arg(state, 3)) || !is_none(arg(state, 4))))
        return pk__err(err, PK_EUNSUPPORTED,
                       "numpy structured dtypes (with fields) are not "
                       "supported");
    if (n >= 6 && (dt.kind == 'S' || dt.kind == 'U' || dt.kind == 'V')) {
        const pk_value_t *el = arg(state, 5);
        if (el->type != PK_INT || el->u.i > (int64_t)INT32_MAX ||
            (dt.kind == 'U' && el->u.i % 4 != 0))
            return pk__err(err, PK_EPICKLE, "bad numpy dtype item size");
        if (el->u.i > 0)
            dt.itemsize = (uint32_t)el->u.i;
    }
    /* Normalise (and validate) through the type string: '=' and '|' on a
     * multi-byte number mean native, '<'. */
    char str[32];
    dt.byteorder = s[0];
    if (pk_dtype_parse(pk_dtype_str(&dt, str, sizeof(str)), &dt) != PK_OK)
        return pk__err(err, PK_EPICKLE, "bad numpy dtype state for '%s'", str);
    *inst->u.dtype = dt;
    return PK_OK;
}

static pk_err_t build_ndarray(pk_doc_t *doc, pk_value_t *inst,
                              const pk_value_t *state, pk_error_t *err)
{
    size_t n = tuple_len(state), o;
    int64_t shape[PK_MAXDIMS];
    int ndim;
    size_t nb, len;
    const uint8_t *data;
    uint8_t *scratch;

    if (n != 4 && n != 5)
        return pk__err(err, PK_EPICKLE, "bad numpy array state");
    o = n - 4; /* the version is optional */
    const pk_value_t *dt = arg(state, o + 1), *fo = arg(state, o + 2),
                     *raw = arg(state, o + 3);
    pk_err_t rc = shape_of(arg(state, o), shape, &ndim, "ndarray", err);
    if (rc != PK_OK)
        return rc;
    if (dt->type != PK_DTYPE)
        return pk__err(err, PK_EPICKLE, "numpy array state: dtype is a %s",
                       pk_type_name((pk_type_t)dt->type));
    if (fo->type != PK_BOOL && fo->type != PK_INT)
        return pk__err(err, PK_EPICKLE, "numpy array state: bad is_fortran");
    if (raw->type == PK_LIST)
        return pk__err(err, PK_EUNSUPPORTED,
                       "numpy object arrays are not supported");
    if (nbytes_of(shape, ndim, dt->u.dtype->itemsize, &nb) != 0)
        return pk__err(err, PK_EPICKLE, "numpy array state: size overflows");
    rc = bytes_of(raw, &data, &len, &scratch, "numpy array state", err);
    if (rc != PK_OK)
        return rc;
    if (len != nb) {
        pk__free(scratch);
        return pk__err(err, PK_EPICKLE,
                       "numpy array state: %zu data bytes for an array of %zu "
                       "bytes",
                       len, nb);
    }
    unsigned flags =
        (fo->type == PK_BOOL ? fo->u.b : fo->u.i != 0) ? PK_VF_FORTRAN : 0;
    pk_value_t *v =
        pk_ndarray(doc, dt->u.dtype, ndim, shape, (void *)data, flags);
    pk__free(scratch);
    if (v == NULL)
        return nomem(err);
    inst->flags = v->flags;
    inst->u.nd = v->u.nd;
    return PK_OK;
}

pk_err_t pk__build(pk_doc_t *doc, pk_value_t *inst, const pk_value_t *state,
                   pk_error_t *err)
{
    if (inst->type == PK_DTYPE)
        return build_dtype(inst, state, err);
    if (inst->type == PK_NDARRAY && !(inst->flags & PK_VF_NPSCALAR))
        return build_ndarray(doc, inst, state, err);
    if (inst->type == PK_OBJECT && inst->u.obj.state == NULL &&
        (state->type == PK_NONE || state->type == PK_DICT)) {
        inst->u.obj.state = (pk_value_t *)state;
        return PK_OK;
    }
    return pk__err(err, PK_EUNSUPPORTED, "BUILD on a %s is not supported",
                   pk_type_name((pk_type_t)inst->type));
}
