/*
 * unpickle.c - pk_loads, the pickle decoder (protocols 0-5).
 *
 * One pass over the input with a switch on the opcode byte, like CPython's
 * _pickle.c: an object stack split from a mark stack (the top mark is the
 * "fence" that non-mark opcodes may not pop below), and a memo kept as a flat
 * array indexed by memo id.  Ids far beyond anything the input could have
 * produced in order (CPython numbers them 0, 1, 2...) go to a small hash
 * table instead, so a 10-byte pickle cannot make us allocate gigabytes.
 *
 * Nothing is executed: calls go to npy.c's allow-list.  Every length is
 * checked against the bytes left before anything is allocated, and the
 * scratch arrays (stack, marks, memo, text buffer) are freed on every path;
 * values live in the caller's doc.
 *
 * Depth: each stack slot and memo entry carries the nesting depth of its
 * value (0 for scalars, 1 + deepest item for containers), checked against
 * max_depth when containers are built or filled.  A container filled after
 * it was memoized keeps its memo-time depth in the memo; cycles make depth
 * unbounded anyway, so consumers that recurse must stop on their own.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/value_int.h"
#include "core/common.h"
#include "codec/npy.h"
#include "codec/opcodes.h"
#include "picklepool/pickle.h"

/* CPython's sys.int_info.default_max_str_digits: longer INT/LONG text is an
 * error there too, and converting it would be quadratic. */
#define MAX_INT_DIGITS 4300

void pk_load_opts_init(pk_load_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->max_depth = 1000;
    opts->max_memo = (size_t)1 << 26;
    opts->max_stack = (size_t)1 << 26;
#if SIZE_MAX > 0xffffffffu
    opts->max_ops = (size_t)1 << 32;
    opts->max_bytes = (size_t)1 << 40;
#else
    opts->max_ops = SIZE_MAX;
    opts->max_bytes = SIZE_MAX;
#endif
    opts->encoding = PK_ENC_ASCII;
}

typedef struct slot {
    pk_value_t *v;
    size_t depth;
} slot_t;

/* pk__dict_set_batch reads keys and values straight from stack slots. */
#define SLOT_STRIDE (sizeof(slot_t) / sizeof(pk_value_t *))
_Static_assert(offsetof(slot_t, v) == 0 &&
                   sizeof(slot_t) % sizeof(pk_value_t *) == 0,
               "slot_t layout");

typedef struct hent {
    uint64_t key;
    slot_t s; /* s.v == NULL: empty */
} hent_t;

typedef struct loader {
    pk_doc_t *doc;
    const pk_load_opts_t *o;
    pk_error_t *err;
    const uint8_t *base, *p, *end;
    const uint8_t *frame_end; /* NULL outside a frame */

    slot_t *stack;
    size_t sp, scap, fence;
    size_t *marks;
    size_t nmarks, mcap;

    slot_t *memo; /* flat part: ids < memo_cap (<= flat_limit) */
    size_t memo_cap, flat_limit, memo_len;
    hent_t *hmemo; /* ids >= flat_limit */
    size_t hcap, hlen;

    size_t nbuf; /* out-of-band buffers used */
    int proto;
    char *tmp; /* text scratch */
    size_t tmpcap;
    pk_value_t *empty_tuple; /* shared, as CPython's () is: a pickle of
                                millions of them costs one value */
} loader_t;

static pk_err_t fail(loader_t *L, pk_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static pk_err_t fail(loader_t *L, pk_err_t code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return pk__err(L->err, code, "%s", msg);
}

static pk_err_t nomem(loader_t *L)
{
    return fail(L, PK_ENOMEM, "out of memory");
}

static pk_err_t truncated(loader_t *L)
{
    return fail(L, PK_ETRUNC, "pickle data was truncated");
}

static pk_err_t underflow(loader_t *L)
{
    return fail(L, PK_EPICKLE, "unpickling stack underflow");
}

static pk_err_t too_deep(loader_t *L)
{
    return fail(L, PK_ELIMIT, "nesting deeper than max_depth (%zu)",
                L->o->max_depth);
}

/* ---- scratch ------------------------------------------------------------- */

static pk_err_t tmp_reserve(loader_t *L, size_t n)
{
    if (n <= L->tmpcap)
        return PK_OK;
    size_t cap = L->tmpcap ? L->tmpcap : 256;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    char *t = pk__realloc(L->tmp, cap);
    if (t == NULL)
        return nomem(L);
    L->tmp = t;
    L->tmpcap = cap;
    return PK_OK;
}

static pk_err_t stack_grow(loader_t *L)
{
    if (L->sp >= L->o->max_stack)
        return fail(L, PK_ELIMIT,
                    "more than max_stack (%zu) values on the "
                    "stack",
                    L->o->max_stack);
    size_t cap = L->scap ? L->scap * 2 : 64;
    if (cap > L->o->max_stack)
        cap = L->o->max_stack;
    slot_t *s = pk__realloc(L->stack, cap * sizeof(*s));
    if (s == NULL)
        return nomem(L);
    L->stack = s;
    L->scap = cap;
    return PK_OK;
}

static inline pk_err_t push(loader_t *L, pk_value_t *v, size_t depth)
{
    if (v == NULL)
        return nomem(L);
    if (L->sp == L->scap) {
        pk_err_t rc = stack_grow(L);
        if (rc != PK_OK)
            return rc;
    }
    L->stack[L->sp].v = v;
    L->stack[L->sp].depth = depth;
    L->sp++;
    return PK_OK;
}

static pk_err_t push_mark(loader_t *L)
{
    if (L->nmarks >= L->o->max_depth)
        return too_deep(L);
    if (L->nmarks == L->mcap) {
        size_t cap = L->mcap ? L->mcap * 2 : 16;
        size_t *m = pk__realloc(L->marks, cap * sizeof(*m));
        if (m == NULL)
            return nomem(L);
        L->marks = m;
        L->mcap = cap;
    }
    L->marks[L->nmarks++] = L->sp;
    L->fence = L->sp;
    return PK_OK;
}

/* Pops the top mark into *x (the stack index of the first item after it). */
static pk_err_t pop_mark(loader_t *L, size_t *x)
{
    if (L->nmarks == 0)
        return fail(L, PK_EPICKLE, "could not find MARK");
    *x = L->marks[--L->nmarks];
    L->fence = L->nmarks ? L->marks[L->nmarks - 1] : 0;
    return PK_OK;
}

/* ---- memo ---------------------------------------------------------------- */

static uint64_t hslot(uint64_t key, size_t cap)
{
    return pk__hash_u64(key) & (cap - 1); /* keyed: ids are the attacker's */
}

static hent_t *hfind(loader_t *L, uint64_t key)
{
    if (L->hcap == 0)
        return NULL;
    for (uint64_t i = hslot(key, L->hcap);; i = (i + 1) & (L->hcap - 1)) {
        hent_t *e = &L->hmemo[i];
        if (e->s.v == NULL || e->key == key)
            return e;
    }
}

static pk_err_t hgrow(loader_t *L)
{
    size_t cap = L->hcap ? L->hcap * 2 : 64;
    hent_t *h = pk__calloc(cap, sizeof(*h));
    if (h == NULL)
        return nomem(L);
    hent_t *old = L->hmemo;
    size_t ocap = L->hcap;
    L->hmemo = h;
    L->hcap = cap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].s.v != NULL)
            *hfind(L, old[i].key) = old[i];
    pk__free(old);
    return PK_OK;
}

static slot_t *memo_get(loader_t *L, uint64_t idx)
{
    if (idx < L->memo_cap)
        return L->memo[idx].v ? &L->memo[idx] : NULL;
    hent_t *e = hfind(L, idx);
    return e && e->s.v ? &e->s : NULL;
}

static pk_err_t memo_put(loader_t *L, uint64_t idx, const slot_t *s)
{
    slot_t *dst = memo_get(L, idx);
    if (dst != NULL) { /* replacing an entry */
        *dst = *s;
        return PK_OK;
    }
    if (L->memo_len >= L->o->max_memo)
        return fail(L, PK_ELIMIT, "more than max_memo (%zu) memo entries",
                    L->o->max_memo);
    if (idx < L->memo_cap) {
        dst = &L->memo[idx];
    } else if (idx < L->flat_limit) {
        size_t cap = L->memo_cap ? L->memo_cap * 2 : 64;
        if (cap <= idx)
            cap = (size_t)idx + 1;
        if (cap > L->flat_limit)
            cap = L->flat_limit;
        slot_t *m = pk__realloc(L->memo, cap * sizeof(*m));
        if (m == NULL)
            return nomem(L);
        memset(m + L->memo_cap, 0, (cap - L->memo_cap) * sizeof(*m));
        L->memo = m;
        L->memo_cap = cap;
        dst = &m[idx];
    } else {
        if (2 * (L->hlen + 1) > L->hcap) {
            pk_err_t rc = hgrow(L);
            if (rc != PK_OK)
                return rc;
        }
        hent_t *e = hfind(L, idx);
        e->key = idx;
        L->hlen++;
        dst = &e->s;
    }
    L->memo_len++;
    *dst = *s;
    return PK_OK;
}

/* ---- text ---------------------------------------------------------------- */

/* Reads a protocol-0 argument line; *n excludes the '\n'. */
static pk_err_t readline(loader_t *L, const uint8_t **s, size_t *n)
{
    const uint8_t *nl = memchr(L->p, '\n', (size_t)(L->end - L->p));
    *s = L->p;
    *n = 0;
    if (nl == NULL)
        return truncated(L);
    *s = L->p;
    *n = (size_t)(nl - L->p);
    L->p = nl + 1;
    return PK_OK;
}

/* Length of the valid UTF-8 prefix (CPython's "surrogatepass": encoded
 * surrogates are accepted). */
static size_t utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (n - i <= need || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += need + 1;
    }
    return n;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Non-zero when s[0..n) is all ASCII: the common case, checked a word at a
 * time with overlapping loads for the ragged ends. */
static inline int is_ascii(const uint8_t *s, size_t n)
{
    uint64_t acc = 0, w;
    uint32_t h;
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            acc |= w;
        }
        memcpy(&w, s + n - 8, 8);
        acc |= w;
    } else if (n >= 4) {
        memcpy(&h, s, 4);
        acc = h;
        memcpy(&h, s + n - 4, 4);
        acc |= h;
    } else {
        for (size_t i = 0; i < n; i++)
            acc |= s[i];
    }
    return (acc & 0x8080808080808080ull) == 0;
}

static pk_err_t push_utf8(loader_t *L, const uint8_t *s, size_t n)
{
    if (!is_ascii(s, n) && utf8_valid_prefix(s, n) != n)
        return fail(L, PK_EPICKLE, "invalid UTF-8 in a str");
    return push(L, pk_str(L->doc, (const char *)s, n), 0);
}

/* A Python 2 str (STRING, BINSTRING, SHORT_BINSTRING), decoded as
 * opts->encoding says. */
static pk_err_t push_py2str(loader_t *L, const uint8_t *s, size_t n)
{
    switch (L->o->encoding) {
    case PK_ENC_BYTES:
        return push(L, pk_bytes(L->doc, s, n), 0);
    case PK_ENC_LATIN1: {
        size_t hi = 0;
        for (size_t i = 0; i < n; i++)
            hi += s[i] >> 7;
        if (hi == 0)
            return push(L, pk_str(L->doc, (const char *)s, n), 0);
        pk_err_t rc = tmp_reserve(L, n + hi);
        if (rc != PK_OK)
            return rc;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += pk__utf8_put((uint8_t *)L->tmp + k, s[i]);
        return push(L, pk_str(L->doc, L->tmp, k), 0);
    }
    default:
        for (size_t i = 0; i < n; i++)
            if (s[i] >= 0x80)
                return fail(L, PK_EPICKLE,
                            "'ascii' codec can't decode byte 0x%02x in a "
                            "Python 2 str (decode with encoding latin1 or "
                            "bytes)",
                            s[i]);
        return push(L, pk_str(L->doc, (const char *)s, n), 0);
    }
}

/* STRING: a quoted Python 2 repr, decoded like PyBytes_DecodeEscape. */
static pk_err_t load_string(loader_t *L)
{
    const uint8_t *s = NULL;
    size_t n = 0;
    pk_err_t rc = readline(L, &s, &n);
    if (rc != PK_OK)
        return rc;
    if (n < 2 || s[0] != s[n - 1] || (s[0] != '\'' && s[0] != '"'))
        return fail(L, PK_EPICKLE, "the STRING opcode argument must be quoted");
    s++;
    n -= 2;
    /* Decode into the top of tmp: push_py2str's latin-1 -> UTF-8 writes at
     * most 2 bytes per byte read from the bottom up, so it neither needs to
     * grow tmp nor overtakes what it reads. */
    if ((rc = tmp_reserve(L, 3 * n + 1)) != PK_OK)
        return rc;
    uint8_t *d = (uint8_t *)L->tmp + 2 * n + 1;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i++];
        if (c != '\\') {
            d[k++] = c;
            continue;
        }
        if (i == n)
            return fail(L, PK_EPICKLE, "trailing \\ in a STRING");
        c = s[i++];
        switch (c) {
        case '\n':
            break;
        case '\\':
            d[k++] = '\\';
            break;
        case '\'':
            d[k++] = '\'';
            break;
        case '"':
            d[k++] = '"';
            break;
        case 'b':
            d[k++] = '\b';
            break;
        case 'f':
            d[k++] = '\f';
            break;
        case 't':
            d[k++] = '\t';
            break;
        case 'n':
            d[k++] = '\n';
            break;
        case 'r':
            d[k++] = '\r';
            break;
        case 'v':
            d[k++] = '\v';
            break;
        case 'a':
            d[k++] = '\a';
            break;
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7': {
            unsigned v = (unsigned)(c - '0');
            for (int j = 0; j < 2 && i < n && s[i] >= '0' && s[i] <= '7'; j++)
                v = v * 8 + (unsigned)(s[i++] - '0');
            d[k++] = (uint8_t)v;
            break;
        }
        case 'x':
            if (n - i < 2 || hexval(s[i]) < 0 || hexval(s[i + 1]) < 0)
                return fail(L, PK_EPICKLE, "invalid \\x escape in a STRING");
            d[k++] = (uint8_t)(hexval(s[i]) * 16 + hexval(s[i + 1]));
            i += 2;
            break;
        default:
            d[k++] = '\\';
            d[k++] = c;
        }
    }
    return push_py2str(L, d, k);
}

/* UNICODE: raw-unicode-escape (latin-1 bytes, \uXXXX and \UXXXXXXXX). */
static pk_err_t load_unicode(loader_t *L)
{
    const uint8_t *s = NULL;
    size_t n = 0;
    pk_err_t rc = readline(L, &s, &n);
    if (rc != PK_OK)
        return rc;
    if ((rc = tmp_reserve(L, 2 * n + 4)) != PK_OK)
        return rc;
    char *d = L->tmp;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i++];
        if (c != '\\' || i == n || (s[i] != 'u' && s[i] != 'U')) {
            k += pk__utf8_put((uint8_t *)d + k, c);
            if (c == '\\' && i < n) /* "\\x" stays as is */
                k += pk__utf8_put((uint8_t *)d + k, s[i++]);
            continue;
        }
        size_t cnt = s[i++] == 'u' ? 4 : 8;
        uint32_t cp = 0;
        if (n - i < cnt)
            return fail(L, PK_EPICKLE, "truncated \\uXXXX escape in UNICODE");
        for (size_t j = 0; j < cnt; j++) {
            int h = hexval(s[i++]);
            if (h < 0)
                return fail(L, PK_EPICKLE,
                            "truncated \\uXXXX escape in UNICODE");
            cp = cp << 4 | (uint32_t)h;
        }
        if (cp > 0x10FFFF)
            return fail(L, PK_EPICKLE, "\\Uxxxxxxxx out of range in UNICODE");
        k += pk__utf8_put((uint8_t *)d + k, cp);
    }
    return push(L, pk_str(L->doc, d, k), 0);
}

/* Parses the text of INT/LONG (sign, optional 0x/0o/0b, digits, as
 * PyLong_FromString with base 0 accepts them; leading zeros are read as
 * decimal) into a value. */
static pk_err_t parse_int(loader_t *L, const uint8_t *s, size_t n,
                          pk_value_t **out)
{
    uint32_t limbs[MAX_INT_DIGITS / 8 + 4];
    uint8_t le[sizeof(limbs) + 1];
    size_t nl = 0;
    int neg = 0;
    unsigned base = 10;

    while (n && (s[0] == ' ' || s[0] == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    if (n && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++, n--;
    }
    if (n > 2 && s[0] == '0') {
        uint8_t b = (uint8_t)(s[1] | 0x20);
        base = b == 'x' ? 16 : b == 'o' ? 8 : b == 'b' ? 2 : 10;
        if (base != 10)
            s += 2, n -= 2;
    }
    if (n == 0)
        return fail(L, PK_EPICKLE, "could not convert string to int");
    if (n > MAX_INT_DIGITS)
        return fail(L, PK_ELIMIT, "integer text longer than %d digits",
                    MAX_INT_DIGITS);
    uint64_t small = 0;
    int fits = 1;
    for (size_t i = 0; i < n; i++) {
        int dv = hexval(s[i]);
        if (dv < 0 || (unsigned)dv >= base)
            return fail(L, PK_EPICKLE, "could not convert string to int");
        if (fits && small <= (UINT64_MAX - (unsigned)dv) / base)
            small = small * base + (unsigned)dv;
        else
            fits = 0;
        /* limbs = limbs * base + dv */
        uint64_t carry = (unsigned)dv;
        for (size_t j = 0; j < nl; j++) {
            uint64_t t = (uint64_t)limbs[j] * base + carry;
            limbs[j] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry)
            limbs[nl++] = (uint32_t)carry;
    }
    if (fits &&
        (small <= INT64_MAX || (neg && small == (uint64_t)INT64_MAX + 1))) {
        *out = pk_int(L->doc, neg ? (int64_t)(0 - small) : (int64_t)small);
        return *out ? PK_OK : nomem(L);
    }
    size_t nb = nl * 4;
    for (size_t j = 0; j < nl; j++)
        pk__st32(le + 4 * j, limbs[j]);
    le[nb++] = 0; /* sign byte: the magnitude is non-negative */
    if (neg) {
        unsigned c = 1;
        for (size_t j = 0; j < nb; j++) {
            c += (uint8_t)~le[j];
            le[j] = (uint8_t)c;
            c >>= 8;
        }
    }
    *out = pk_bigint(L->doc, le, nb);
    return *out ? PK_OK : nomem(L);
}

static pk_err_t load_float_text(loader_t *L)
{
    const uint8_t *s = NULL;
    size_t n = 0;
    pk_err_t rc = readline(L, &s, &n);
    if (rc != PK_OK)
        return rc;
    if (n == 0)
        return fail(L, PK_EPICKLE, "could not convert string to float");
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789+-.eEinfatyINFATY", s[i]) || s[i] == 0)
            return fail(L, PK_EPICKLE, "could not convert string to float");
    if ((rc = tmp_reserve(L, n + 1)) != PK_OK)
        return rc;
    memcpy(L->tmp, s, n);
    L->tmp[n] = '\0';
    char *endp;
    double d = strtod(L->tmp, &endp);
    if (endp != L->tmp + n)
        return fail(L, PK_EPICKLE, "could not convert string to float");
    return push(L, pk_float(L->doc, d), 0);
}

/* Parses a decimal memo index (PUT, GET). */
static pk_err_t parse_index(loader_t *L, const char *op, uint64_t *idx)
{
    const uint8_t *s = NULL;
    size_t n = 0;
    pk_err_t rc = readline(L, &s, &n);
    if (rc != PK_OK)
        return rc;
    uint64_t v = 0;
    if (n == 0 || n > 19)
        return fail(L, PK_EPICKLE, "bad %s argument", op);
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(L, PK_EPICKLE, "bad %s argument", op);
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *idx = v;
    return PK_OK;
}

/* ---- globals and calls --------------------------------------------------- */

static pk_err_t push_global(loader_t *L, const char *module, size_t ml,
                            const char *name, size_t nl)
{
    /* CPython refuses these too ("pickle data was truncated" for GLOBAL,
     * "Empty module name" for STACK_GLOBAL): a global named '' is no name. */
    if (ml == 0 || nl == 0)
        return fail(L, PK_EPICKLE, "global with an empty %s name",
                    ml == 0 ? "module" : "attribute");
    if (memchr(module, '\0', ml) || memchr(name, '\0', nl) ||
        utf8_valid_prefix((const uint8_t *)module, ml) != ml ||
        utf8_valid_prefix((const uint8_t *)name, nl) != nl)
        return fail(L, PK_EPICKLE, "bad global name");
    pk_err_t rc = tmp_reserve(L, ml + nl + 2);
    if (rc != PK_OK)
        return rc;
    memcpy(L->tmp, module, ml);
    L->tmp[ml] = '\0';
    memcpy(L->tmp + ml + 1, name, nl);
    L->tmp[ml + 1 + nl] = '\0';
    const char *m = L->tmp, *nm = L->tmp + ml + 1;
    if (L->proto < 3)
        pk__fix_import(&m, &nm);
    return push(L, pk_global(L->doc, m, nm), 0);
}

static int is_class(pk__callable_t k)
{
    return k == PK__CALL_SET || k == PK__CALL_FROZENSET ||
           k == PK__CALL_BYTEARRAY || k == PK__CALL_BYTES ||
           k == PK__CALL_COMPLEX || k == PK__CALL_NP_DTYPE;
}

/* The doc's one empty tuple for this load, or NULL on ENOMEM. */
static pk_value_t *empty_tuple(loader_t *L)
{
    if (L->empty_tuple == NULL)
        L->empty_tuple = pk_tuple_new(L->doc, 0);
    return L->empty_tuple;
}

/* copyreg._reconstructor(cls, builtins.object, None), how protocols 0 and 1
 * spell cls.__new__(cls): allowed for the classes NEWOBJ may build. */
static pk_err_t reconstructor(loader_t *L, const char *what,
                              const pk_value_t *args, pk_value_t **out)
{
    const pk_value_t *cls, *base;
    if (args->type != PK_TUPLE || args->u.seq.len != 3 ||
        (cls = args->u.seq.items[0])->type != PK_GLOBAL ||
        (base = args->u.seq.items[1])->type != PK_GLOBAL ||
        strcmp(base->u.global.module, "builtins") != 0 ||
        strcmp(base->u.global.name, "object") != 0 ||
        args->u.seq.items[2]->type != PK_NONE)
        return fail(L, PK_EREFUSED,
                    "refusing to call %s other than as (class, object, None)",
                    what);
    if (pk__stdlib_lookup(cls->u.global.module, cls->u.global.name) !=
        PK__CALL_STDLIB_NEWOBJ)
        return fail(L, PK_EREFUSED, "refusing to call %s for %s.%s", what,
                    cls->u.global.module, cls->u.global.name);
    pk_value_t *noargs = empty_tuple(L);
    if (noargs == NULL)
        return nomem(L);
    return pk__stdlib_call(L->doc, (pk_value_t *)cls, noargs, 1, out, L->err);
}

/* REDUCE (newobj 0), NEWOBJ (1), NEWOBJ_EX (1 with kwargs). */
static pk_err_t call(loader_t *L, const pk_value_t *fn, const pk_value_t *args,
                     const pk_value_t *kwargs, int newobj, pk_value_t **out)
{
    char what[240];
    if (fn->type != PK_GLOBAL)
        return fail(L, PK_EPICKLE, "the callable is a %s, not a global",
                    pk_type_name((pk_type_t)fn->type));
    snprintf(what, sizeof(what), "%.110s.%.110s", fn->u.global.module,
             fn->u.global.name);
    pk__callable_t k =
        pk__callable_lookup(fn->u.global.module, fn->u.global.name);
    if (k == PK__CALL_NONE)
        return fail(L, PK_EREFUSED, "refusing to call %s", what);
    if (k == PK__CALL_STDLIB || k == PK__CALL_STDLIB_NEWOBJ) {
        if (kwargs != NULL && (kwargs->type != PK_DICT || kwargs->u.dict.len))
            return fail(L, PK_EUNSUPPORTED,
                        "%s: keyword arguments are not supported", what);
        if (args->type != PK_TUPLE)
            return fail(L, PK_EPICKLE, "%s: arguments are a %s, not a tuple",
                        what, pk_type_name((pk_type_t)args->type));
        return pk__stdlib_call(L->doc, (pk_value_t *)fn, args, newobj, out,
                               L->err);
    }
    if (k == PK__CALL_RECONSTRUCTOR && !newobj)
        return reconstructor(L, what, args, out);
    if (newobj) {
        if (!is_class(k))
            return fail(L, PK_EPICKLE, "NEWOBJ class argument %s isn't a type",
                        what);
        /* cls.__new__ ignores the arguments of set and bytearray: their
         * __init__ (not called by NEWOBJ) fills them. */
        if (k == PK__CALL_SET || k == PK__CALL_BYTEARRAY) {
            static const pk_value_t empty = {.type = PK_TUPLE};
            args = &empty;
        }
    }
    return pk__call(L->doc, k, what, args, kwargs, out, L->err);
}

/* ---- containers --------------------------------------------------------- */

static pk_err_t check_depth(loader_t *L, size_t d)
{
    return d > L->o->max_depth ? too_deep(L) : PK_OK;
}

/* Items stack[x..sp) into a new container of `type`, replacing them. */
static pk_err_t build_from(loader_t *L, size_t x, pk_type_t type)
{
    size_t n = L->sp - x, d = 0;
    slot_t *it = n != 0 ? L->stack + x : NULL; /* no stack yet: NULL */
    pk_value_t *c;
    pk_err_t rc = PK_OK;

    for (size_t i = 0; i < n; i++)
        if (it[i].depth > d)
            d = it[i].depth;
    if ((rc = check_depth(L, d + 1)) != PK_OK)
        return rc;
    switch (type) {
    case PK_TUPLE:
        if ((c = n ? pk_tuple_new(L->doc, n) : empty_tuple(L)) == NULL)
            return nomem(L);
        for (size_t i = 0; i < n; i++)
            pk_tuple_set(c, i, it[i].v);
        break;
    case PK_LIST:
        if ((c = pk_list_new(L->doc, n)) == NULL)
            return nomem(L);
        for (size_t i = 0; i < n && rc == PK_OK; i++)
            rc = pk_list_append(L->doc, c, it[i].v);
        break;
    case PK_DICT:
        if (n % 2)
            return fail(L, PK_EPICKLE, "odd number of items for DICT");
        if ((c = pk_dict_new(L->doc, n / 2)) == NULL)
            return nomem(L);
        if (n != 0) /* an empty stack may not exist yet */
            rc = pk__dict_set_batch(L->doc, c, &it[0].v, SLOT_STRIDE, n / 2);
        break;
    default: /* PK_FROZENSET */
        if ((c = pk_frozenset_new(L->doc, n)) == NULL)
            return nomem(L);
        for (size_t i = 0; i < n && rc == PK_OK; i++)
            rc = pk_set_add(L->doc, c, it[i].v);
        break;
    }
    if (rc == PK_ENOMEM)
        return nomem(L);
    if (rc != PK_OK)
        return fail(L, rc, "cannot build a %s: %s (unhashable key)",
                    pk_type_name(type), pk_strerror(rc));
    L->sp = x;
    return push(L, c, d + 1);
}

/* APPENDS/SETITEMS/ADDITEMS: items stack[x..sp) into the container at
 * stack[x-1] (and APPEND/SETITEM with x = sp-1 / sp-2). */
static pk_err_t add_items(loader_t *L, size_t x, pk_type_t type, const char *op)
{
    if (x == 0 || x > L->sp)
        return underflow(L);
    slot_t *cs = &L->stack[x - 1], *it = L->stack + x;
    pk_value_t *c = cs->v;
    size_t n = L->sp - x, d = cs->depth;
    pk_err_t rc = PK_OK;

    /* An OrderedDict or deque takes its items as a dict or list would. */
    if (c->type == PK_OBJECT && c->u.obj.items != NULL)
        c = c->u.obj.items;
    if (c->type != type)
        return fail(L, PK_EPICKLE, "%s on a %s", op,
                    pk_type_name((pk_type_t)c->type));
    for (size_t i = 0; i < n; i++)
        if (it[i].depth + 1 > d)
            d = it[i].depth + 1;
    if ((rc = check_depth(L, d)) != PK_OK)
        return rc;
    if (type == PK_DICT) {
        if (n % 2)
            return fail(L, PK_EPICKLE, "odd number of items for %s", op);
        if (n != 0) /* an empty stack may not exist yet */
            rc = pk__dict_set_batch(L->doc, c, &it[0].v, SLOT_STRIDE, n / 2);
    } else if (type == PK_LIST) {
        if (n != 0)
            rc = pk__list_extend(L->doc, c, &it[0].v, SLOT_STRIDE, n);
    } else {
        for (size_t i = 0; i < n && rc == PK_OK; i++)
            rc = pk_set_add(L->doc, c, it[i].v);
    }
    if (rc == PK_ENOMEM)
        return nomem(L);
    if (rc != PK_OK)
        return fail(L, rc, "%s: %s (unhashable item)", op, pk_strerror(rc));
    cs->depth = d;
    L->sp = x;
    return PK_OK;
}

static pk_err_t tuple_n(loader_t *L, size_t n)
{
    if (L->sp - L->fence < n)
        return underflow(L);
    return build_from(L, L->sp - n, PK_TUPLE);
}

/* ---- the loop ----------------------------------------------------------- */

#define NEED(k)                                                                \
    do {                                                                       \
        if ((uint64_t)(L->end - L->p) < (uint64_t)(k)) {                       \
            rc = truncated(L);                                                 \
            goto out;                                                          \
        }                                                                      \
    } while (0)
#define CHECK(expr)                                                            \
    do {                                                                       \
        if ((rc = (expr)) != PK_OK)                                            \
            goto out;                                                          \
    } while (0)
#define FAIL(...)                                                              \
    do {                                                                       \
        rc = fail(L, __VA_ARGS__);                                             \
        goto out;                                                              \
    } while (0)
/* At least k values above the fence. */
#define ABOVE(k)                                                               \
    do {                                                                       \
        if (L->sp - L->fence < (k)) {                                          \
            rc = underflow(L);                                                 \
            goto out;                                                          \
        }                                                                      \
    } while (0)

static pk_err_t run(loader_t *L, pk_value_t **out, size_t *consumed,
                    const uint8_t **op_at)
{
    pk_err_t rc = PK_OK;
    size_t nops = 0;
    uint64_t n;
    slot_t *top;

    for (;;) {
        if (L->p >= L->end) {
            *op_at = L->end;
            return truncated(L);
        }
        *op_at = L->p;
        uint8_t op = *L->p++;
        if (++nops > L->o->max_ops)
            FAIL(PK_ELIMIT, "more than max_ops (%zu) opcodes", L->o->max_ops);
        switch (op) {
        case PK_OP_BININT1:
            NEED(1);
            CHECK(push(L, pk_int(L->doc, L->p[0]), 0));
            L->p += 1;
            break;
        case PK_OP_BININT2:
            NEED(2);
            CHECK(push(L, pk_int(L->doc, pk__ld16(L->p)), 0));
            L->p += 2;
            break;
        case PK_OP_BININT:
            NEED(4);
            CHECK(push(L, pk_int(L->doc, (int32_t)pk__ld32(L->p)), 0));
            L->p += 4;
            break;
        case PK_OP_BINFLOAT: {
            NEED(8);
            uint64_t b = __builtin_bswap64(pk__ld64(L->p));
            double d;
            memcpy(&d, &b, 8);
            CHECK(push(L, pk_float(L->doc, d), 0));
            L->p += 8;
            break;
        }
        case PK_OP_SHORT_BINUNICODE:
            NEED(1);
            n = L->p[0];
            NEED(1 + n);
            L->p += 1 + n;
            CHECK(push_utf8(L, L->p - n, (size_t)n));
            break;
        case PK_OP_BINUNICODE:
            NEED(4);
            n = pk__ld32(L->p);
            NEED(4 + n);
            L->p += 4 + n;
            CHECK(push_utf8(L, L->p - n, (size_t)n));
            break;
        case PK_OP_BINUNICODE8:
            NEED(8);
            n = pk__ld64(L->p);
            L->p += 8;
            NEED(n);
            L->p += n;
            CHECK(push_utf8(L, L->p - n, (size_t)n));
            break;
        case PK_OP_SHORT_BINBYTES:
            NEED(1);
            n = L->p[0];
            NEED(1 + n);
            L->p += 1 + n;
            CHECK(push(L, pk_bytes(L->doc, L->p - n, (size_t)n), 0));
            break;
        case PK_OP_BINBYTES:
            NEED(4);
            n = pk__ld32(L->p);
            NEED(4 + n);
            L->p += 4 + n;
            CHECK(push(L, pk_bytes(L->doc, L->p - n, (size_t)n), 0));
            break;
        case PK_OP_BINBYTES8:
        case PK_OP_BYTEARRAY8:
            NEED(8);
            n = pk__ld64(L->p);
            L->p += 8;
            NEED(n);
            L->p += n;
            CHECK(push(L,
                       op == PK_OP_BINBYTES8
                           ? pk_bytes(L->doc, L->p - n, (size_t)n)
                           : pk_bytearray(L->doc, L->p - n, (size_t)n),
                       0));
            break;
        case PK_OP_SHORT_BINSTRING:
            NEED(1);
            n = L->p[0];
            NEED(1 + n);
            L->p += 1 + n;
            CHECK(push_py2str(L, L->p - n, (size_t)n));
            break;
        case PK_OP_BINSTRING: {
            NEED(4);
            int32_t sn = (int32_t)pk__ld32(L->p);
            if (sn < 0)
                FAIL(PK_EPICKLE, "BINSTRING pickle has negative byte count");
            NEED(4 + (uint64_t)sn);
            L->p += 4 + (size_t)sn;
            CHECK(push_py2str(L, L->p - sn, (size_t)sn));
            break;
        }
        case PK_OP_LONG1:
        case PK_OP_LONG4: {
            size_t hl = op == PK_OP_LONG1 ? 1 : 4;
            NEED(hl);
            if (hl == 1) {
                n = L->p[0];
            } else {
                int32_t sn = (int32_t)pk__ld32(L->p);
                if (sn < 0)
                    FAIL(PK_EPICKLE, "LONG pickle has negative byte count");
                n = (uint64_t)sn;
            }
            NEED(hl + n);
            L->p += hl + n;
            CHECK(push(L, pk_bigint(L->doc, L->p - n, (size_t)n), 0));
            break;
        }
        case PK_OP_NONE:
            CHECK(push(L, pk_none(), 0));
            break;
        case PK_OP_NEWTRUE:
        case PK_OP_NEWFALSE:
            CHECK(push(L, pk_bool(op == PK_OP_NEWTRUE), 0));
            break;
        case PK_OP_INT:
        case PK_OP_LONG: {
            const uint8_t *s = NULL;
            size_t sl = 0;
            pk_value_t *v;
            CHECK(readline(L, &s, &sl));
            if (op == PK_OP_INT && sl == 2 && s[0] == '0' &&
                (s[1] == '0' || s[1] == '1')) {
                CHECK(push(L, pk_bool(s[1] == '1'), 0));
                break;
            }
            if (op == PK_OP_LONG && sl && s[sl - 1] == 'L')
                sl--;
            CHECK(parse_int(L, s, sl, &v));
            CHECK(push(L, v, 0));
            break;
        }
        case PK_OP_FLOAT:
            CHECK(load_float_text(L));
            break;
        case PK_OP_STRING:
            CHECK(load_string(L));
            break;
        case PK_OP_UNICODE:
            CHECK(load_unicode(L));
            break;

        case PK_OP_EMPTY_LIST:
            CHECK(push(L, pk_list_new(L->doc, 0), 1));
            break;
        case PK_OP_EMPTY_DICT:
            CHECK(push(L, pk_dict_new(L->doc, 0), 1));
            break;
        case PK_OP_EMPTY_SET:
            CHECK(push(L, pk_set_new(L->doc, 0), 1));
            break;
        case PK_OP_EMPTY_TUPLE:
            CHECK(push(L, empty_tuple(L), 1));
            break;
        case PK_OP_TUPLE1:
        case PK_OP_TUPLE2:
        case PK_OP_TUPLE3:
            CHECK(tuple_n(L, (size_t)(op - PK_OP_TUPLE1 + 1)));
            break;

        case PK_OP_MARK:
            CHECK(push_mark(L));
            break;
        case PK_OP_TUPLE:
        case PK_OP_LIST:
        case PK_OP_DICT:
        case PK_OP_FROZENSET: {
            size_t x;
            CHECK(pop_mark(L, &x));
            CHECK(build_from(L, x,
                             op == PK_OP_TUPLE  ? PK_TUPLE
                             : op == PK_OP_LIST ? PK_LIST
                             : op == PK_OP_DICT ? PK_DICT
                                                : PK_FROZENSET));
            break;
        }
        case PK_OP_APPENDS:
        case PK_OP_SETITEMS:
        case PK_OP_ADDITEMS: {
            size_t x;
            CHECK(pop_mark(L, &x));
            CHECK(add_items(L, x,
                            op == PK_OP_APPENDS    ? PK_LIST
                            : op == PK_OP_SETITEMS ? PK_DICT
                                                   : PK_SET,
                            op == PK_OP_APPENDS    ? "APPENDS"
                            : op == PK_OP_SETITEMS ? "SETITEMS"
                                                   : "ADDITEMS"));
            break;
        }
        case PK_OP_APPEND:
            ABOVE(2);
            CHECK(add_items(L, L->sp - 1, PK_LIST, "APPEND"));
            break;
        case PK_OP_SETITEM:
            ABOVE(3);
            CHECK(add_items(L, L->sp - 2, PK_DICT, "SETITEM"));
            break;

        case PK_OP_POP:
            if (L->nmarks && L->marks[L->nmarks - 1] == L->sp) {
                size_t x;
                CHECK(pop_mark(L, &x));
            } else {
                ABOVE(1);
                L->sp--;
            }
            break;
        case PK_OP_POP_MARK: {
            size_t x;
            CHECK(pop_mark(L, &x));
            L->sp = x;
            break;
        }
        case PK_OP_DUP:
            ABOVE(1);
            top = &L->stack[L->sp - 1];
            CHECK(push(L, top->v, top->depth));
            break;

        case PK_OP_BINPUT:
            NEED(1);
            n = L->p[0];
            L->p += 1;
            goto put;
        case PK_OP_LONG_BINPUT:
            NEED(4);
            n = pk__ld32(L->p);
            L->p += 4;
            goto put;
        case PK_OP_PUT:
            CHECK(parse_index(L, "PUT", &n));
            goto put;
        case PK_OP_MEMOIZE:
            n = L->memo_len;
        put:
            ABOVE(1);
            CHECK(memo_put(L, n, &L->stack[L->sp - 1]));
            break;
        case PK_OP_BINGET:
            NEED(1);
            n = L->p[0];
            L->p += 1;
            goto get;
        case PK_OP_LONG_BINGET:
            NEED(4);
            n = pk__ld32(L->p);
            L->p += 4;
            goto get;
        case PK_OP_GET:
            CHECK(parse_index(L, "GET", &n));
        get : {
            slot_t *m = memo_get(L, n);
            if (m == NULL)
                FAIL(PK_EPICKLE, "memo value not found at index %llu",
                     (unsigned long long)n);
            CHECK(push(L, m->v, m->depth));
            break;
        }

        case PK_OP_GLOBAL: {
            const uint8_t *m = NULL, *nm = NULL;
            size_t ml = 0, nl = 0;
            CHECK(readline(L, &m, &ml));
            CHECK(readline(L, &nm, &nl));
            CHECK(push_global(L, (const char *)m, ml, (const char *)nm, nl));
            break;
        }
        case PK_OP_STACK_GLOBAL: {
            ABOVE(2);
            pk_value_t *m = L->stack[L->sp - 2].v, *nm = L->stack[L->sp - 1].v;
            if (m->type != PK_STR || nm->type != PK_STR)
                FAIL(PK_EPICKLE, "STACK_GLOBAL requires str");
            L->sp -= 2;
            CHECK(push_global(L, m->u.str.ptr, m->u.str.len, nm->u.str.ptr,
                              nm->u.str.len));
            break;
        }
        case PK_OP_REDUCE:
        case PK_OP_NEWOBJ:
        case PK_OP_NEWOBJ_EX: {
            size_t k = op == PK_OP_NEWOBJ_EX ? 3 : 2;
            pk_value_t *res;
            ABOVE(k);
            slot_t *a = &L->stack[L->sp - k];
            CHECK(call(L, a[0].v, a[1].v, k == 3 ? a[2].v : NULL,
                       op != PK_OP_REDUCE, &res));
            size_t d = a[1].depth;
            L->sp -= k;
            CHECK(push(L, res, d));
            break;
        }
        case PK_OP_BUILD:
            ABOVE(2);
            CHECK(pk__build(L->doc, L->stack[L->sp - 2].v,
                            L->stack[L->sp - 1].v, L->err));
            L->sp--;
            break;

        case PK_OP_PROTO:
            NEED(1);
            if (L->p[0] > PK_HIGHEST_PROTOCOL)
                FAIL(PK_EPICKLE, "unsupported pickle protocol: %d", L->p[0]);
            L->proto = L->p[0];
            L->p += 1;
            break;
        case PK_OP_FRAME:
            NEED(8);
            n = pk__ld64(L->p);
            L->p += 8;
            if (L->frame_end != NULL && L->p < L->frame_end)
                FAIL(PK_EPICKLE,
                     "beginning of a new frame before end of current frame");
            if (n > (uint64_t)(L->end - L->p))
                FAIL(PK_ETRUNC,
                     "frame of %llu bytes is longer than the %zu bytes left",
                     (unsigned long long)n, (size_t)(L->end - L->p));
            L->frame_end = L->p + n;
            break;

        case PK_OP_NEXT_BUFFER: {
            if (L->nbuf >= L->o->nbuffers)
                FAIL(PK_EPICKLE,
                     "pickle stream refers to out-of-band buffer %zu but only "
                     "%zu were given",
                     L->nbuf, L->o->nbuffers);
            const pk_buffer_t *b = &L->o->buffers[L->nbuf++];
            CHECK(push(L,
                       pk_picklebuffer(L->doc, b->data, b->len,
                                       PK_VF_BORROWED |
                                           (b->readonly ? PK_VF_READONLY : 0)),
                       0));
            break;
        }
        case PK_OP_READONLY_BUFFER: {
            ABOVE(1);
            pk_value_t *v = L->stack[L->sp - 1].v;
            if (v->type != PK_PICKLEBUFFER && v->type != PK_BYTES &&
                v->type != PK_BYTEARRAY)
                FAIL(PK_EPICKLE, "READONLY_BUFFER on a %s",
                     pk_type_name((pk_type_t)v->type));
            if (v->type != PK_BYTES)
                v->flags |= PK_VF_READONLY;
            break;
        }

        case PK_OP_STOP:
            ABOVE(1);
            *out = L->stack[--L->sp].v;
            *consumed = (size_t)(L->p - L->base);
            return PK_OK;

        case PK_OP_PERSID:
        case PK_OP_BINPERSID:
            FAIL(PK_EUNSUPPORTED, "persistent IDs are not supported");
        case PK_OP_EXT1:
        case PK_OP_EXT2:
        case PK_OP_EXT4:
            FAIL(PK_EUNSUPPORTED,
                 "extension registry codes (EXT1/EXT2/EXT4) are not "
                 "supported");
        case PK_OP_INST:
        case PK_OP_OBJ:
            FAIL(PK_EUNSUPPORTED,
                 "INST/OBJ (protocol 0-1 class instances) are not "
                 "supported");
        default:
            if (op >= 0x20 && op < 0x7f)
                FAIL(PK_EPICKLE, "invalid load key, '%c'", op);
            FAIL(PK_EPICKLE, "invalid load key, '\\x%02x'", op);
        }
    }
out:
    return rc;
}

/* A pickle of one atom (int, float, None, bool): the pool's one-item
 * pickles are mostly these, and decoding them needs no loader, stack or
 * memo.  The same opcodes and constructors as run(); anything else, or
 * anything unusual (a bad protocol, a frame that does not hold the atom
 * and STOP, a stricter max_ops), is left to the general path, which also
 * reports the errors.  Returns 1 with *out and *used set, else 0. */
static int loads_atom(pk_doc_t *doc, const uint8_t *base, size_t len,
                      const pk_load_opts_t *o, pk_value_t **out, size_t *used)
{
    const uint8_t *p = base, *end = base + len;
    if (o->max_ops < 4 || o->max_stack < 1)
        return 0;
    if (end - p >= 2 && p[0] == PK_OP_PROTO) {
        if (p[1] > PK_HIGHEST_PROTOCOL)
            return 0;
        p += 2;
    }
    if (end - p >= 9 && p[0] == PK_OP_FRAME) {
        uint64_t fl = pk__ld64(p + 1);
        p += 9;
        if (fl > (uint64_t)(end - p))
            return 0;
        end = p + fl;
    }
    if (p >= end)
        return 0;
    /* clang-format off */
    uint8_t op = *p++;
    size_t arg;
    switch (op) {
    case PK_OP_BININT1: arg = 1; break;
    case PK_OP_BININT2: arg = 2; break;
    case PK_OP_BININT: arg = 4; break;
    case PK_OP_BINFLOAT: arg = 8; break;
    case PK_OP_LONG1: arg = p < end ? 1 + (size_t)p[0] : 1; break;
    case PK_OP_NONE:
    case PK_OP_NEWTRUE:
    case PK_OP_NEWFALSE: arg = 0; break;
    default: return 0;
    }
    if ((size_t)(end - p) < arg + 1 || p[arg] != PK_OP_STOP)
        return 0;
    pk_value_t *v;
    switch (op) {
    case PK_OP_BININT1: v = pk_int(doc, p[0]); break;
    case PK_OP_BININT2: v = pk_int(doc, pk__ld16(p)); break;
    case PK_OP_BININT: v = pk_int(doc, (int32_t)pk__ld32(p)); break;
    case PK_OP_BINFLOAT: {
        uint64_t b = __builtin_bswap64(pk__ld64(p));
        double d;
        memcpy(&d, &b, 8);
        v = pk_float(doc, d);
        break;
    }
    case PK_OP_LONG1: v = pk_bigint(doc, p + 1, arg - 1); break;
    case PK_OP_NONE: v = pk_none(); break;
    default: v = pk_bool(op == PK_OP_NEWTRUE); break;
    }
    /* clang-format on */
    if (v == NULL)
        return 0;
    *out = v;
    *used = (size_t)(p + arg + 1 - base);
    return 1;
}

pk_err_t pk_loads(pk_doc_t *doc, const void *data, size_t len,
                  const pk_load_opts_t *opts, pk_value_t **out,
                  size_t *consumed, pk_error_t *err)
{
    pk_load_opts_t defaults;
    loader_t L;
    pk_value_t *root = NULL;
    size_t used = 0;
    const uint8_t *op_at;

    if (opts == NULL) {
        pk_load_opts_init(&defaults);
        opts = &defaults;
    }
    if (doc == NULL || out == NULL || (data == NULL && len != 0))
        return pk__err(err, PK_EINVAL, "pk_loads: NULL argument");
    if (len > opts->max_bytes) {
        pk__err(err, PK_ELIMIT, "pickle of %zu bytes is over max_bytes (%zu)",
                len, opts->max_bytes);
        if (err != NULL) {
            err->offset = 0;
            err->opcode = *(const uint8_t *)data;
        }
        return PK_ELIMIT;
    }
    if (len <= 32 && loads_atom(doc, data, len, opts, out, &used)) {
        if (consumed != NULL)
            *consumed = used;
        return PK_OK;
    }
    memset(&L, 0, sizeof(L));
    L.doc = doc;
    L.o = opts;
    L.err = err;
    L.base = L.p = data ? data : (const void *)"";
    L.end = L.base + len;
    L.flat_limit = len + 1024;

    pk_err_t rc = run(&L, &root, &used, &op_at);
    pk__free(L.stack);
    pk__free(L.marks);
    pk__free(L.memo);
    pk__free(L.hmemo);
    pk__free(L.tmp);
    if (rc != PK_OK) {
        if (err != NULL) {
            err->offset = (long long)(op_at - L.base);
            err->opcode = op_at < L.end ? *op_at : -1;
        }
        return rc;
    }
    *out = root;
    if (consumed != NULL)
        *consumed = used;
    return PK_OK;
}
