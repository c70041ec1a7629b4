/*
 * pickletools.c - the pickle disassembler (pk_disassemble) and opcode names.
 *
 * A listing in the shape of Python's pickletools.dis: offset, opcode byte,
 * name indented by MARK depth, argument.  Alongside it runs a symbolic stack
 * that knows only what the security summary needs: marks, strings (the
 * operands of STACK_GLOBAL), globals, and which global made an object.  From
 * that it tells, for every global the pickle names, whether decoding would
 * call it (callable of REDUCE / NEWOBJ / NEWOBJ_EX / INST / OBJ, or the maker
 * of a BUILD target) and whether pk_loads would allow the call.  Nothing is
 * executed and no value is built; every length is checked against the input
 * before it is read, and the symbolic stack and memo hold at most one entry
 * per opcode, so memory stays linear in the input.
 */
#include <inttypes.h>
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

/* ---- opcode table -------------------------------------------------------- */

typedef struct opdesc {
    const char *name;
    uint8_t arg;   /* enum pk__argkind */
    uint8_t proto; /* protocol that introduced it */
} opdesc_t;

static const opdesc_t optable[256] = {
#define PK__OP_DESC(name, byte, arg, proto)                                    \
    [(unsigned char)(byte)] = {#name, arg, proto},
    PK_OPCODE_MAP(PK__OP_DESC)
#undef PK__OP_DESC
};

const char *pk_opcode_name(int op)
{
    if (op < 0 || op > 255)
        return NULL;
    return optable[op].name;
}

/* ---- symbolic stack values ---------------------------------------------- */

enum sv_kind {
    SV_MARK,   /* a MARK; `off` is where it was */
    SV_ANY,    /* anything the summary does not care about */
    SV_STR,    /* a str whose UTF-8 bytes are s[0..n) (inside the input) */
    SV_GLOBAL, /* global number g */
    SV_OBJ     /* result of a call; g: the global called, or NO_GLOBAL */
};

#define NO_GLOBAL UINT32_MAX

typedef struct sval {
    enum sv_kind kind;
    uint32_t g;
    const uint8_t *s;
    size_t n;
    long long off;
} sval_t;

typedef struct gref {
    char *module;
    char *name;
    const char *call_op; /* first opcode that calls it, or NULL */
    long long call_off;
    size_t ncalls;
} gref_t;

/* Open-addressing map from a 64-bit key to a 32-bit index (the memo, and the
 * global table by name hash). */
typedef struct imap {
    uint64_t *keys;
    uint32_t *vals; /* UINT32_MAX: empty slot */
    size_t cap;     /* power of two, or 0 */
    size_t n;
} imap_t;

typedef struct dis {
    const uint8_t *base, *end;
    FILE *fp;
    pk_error_t *err;
    sval_t *stack;
    size_t sp, scap, depth; /* depth: marks on the stack */
    sval_t *memo;           /* memo values, indexed through memo_map */
    size_t nmemo, memocap;
    imap_t memo_map;
    gref_t *globals;
    size_t nglobals, gcap;
    imap_t global_map;
    const char *bad_op; /* first call whose callable is not a global */
    long long bad_off;
    size_t nbad;
    int maxproto;
    int proto;      /* from PROTO (0 without one): below 3 names are renamed */
    unsigned flags; /* PK_INSPECT_* */
    const uint8_t *frame_end; /* end of the last FRAME, or NULL */
} dis_t;

static void imap_free(imap_t *m)
{
    pk__free(m->keys);
    pk__free(m->vals);
    memset(m, 0, sizeof(*m));
}

static pk_err_t imap_grow(imap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *keys = pk__calloc(cap, sizeof(*keys));
    uint32_t *vals = pk__malloc(cap * sizeof(*vals));

    if (keys == NULL || vals == NULL) {
        pk__free(keys);
        pk__free(vals);
        return PK_ENOMEM;
    }
    memset(vals, 0xff, cap * sizeof(*vals));
    for (size_t i = 0; i < m->cap; i++) {
        size_t j;
        if (m->vals[i] == UINT32_MAX)
            continue;
        for (j = pk__hash_u64(m->keys[i]) & (cap - 1); vals[j] != UINT32_MAX;
             j = (j + 1) & (cap - 1))
            ;
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    pk__free(m->keys);
    pk__free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return PK_OK;
}

/* Visits the slots holding `key`, starting after *slot (SIZE_MAX: from the
 * start); returns 1 with *slot set, or 0 with *slot = the empty slot that
 * ends the probe (where the key may be inserted). */
static int imap_next(const imap_t *m, uint64_t key, size_t *slot)
{
    size_t mask = m->cap - 1;
    /* keyed: memo ids and name hashes come from the pickle */
    size_t j =
        *slot == SIZE_MAX ? pk__hash_u64(key) & mask : (*slot + 1) & mask;

    if (m->cap == 0)
        return 0;
    for (; m->vals[j] != UINT32_MAX; j = (j + 1) & mask) {
        if (m->keys[j] == key) {
            *slot = j;
            return 1;
        }
    }
    *slot = j;
    return 0;
}

static pk_err_t imap_put(imap_t *m, uint64_t key, uint32_t val)
{
    size_t slot = SIZE_MAX;

    if ((m->n + 1) * 2 > m->cap && imap_grow(m) != PK_OK)
        return PK_ENOMEM;
    while (imap_next(m, key, &slot))
        ;
    m->keys[slot] = key;
    m->vals[slot] = val;
    m->n++;
    return PK_OK;
}

/* ---- errors ------------------------------------------------------------- */

static pk_err_t fail(dis_t *d, pk_err_t code, const uint8_t *at,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static pk_err_t fail(dis_t *d, pk_err_t code, const uint8_t *at,
                     const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pk__err(d->err, code, "%s", msg);
    if (d->err != NULL && at != NULL) {
        d->err->offset = at - d->base;
        d->err->opcode = at < d->end ? *at : -1;
    }
    return code;
}

static pk_err_t oom(dis_t *d, const uint8_t *at)
{
    return fail(d, PK_ENOMEM, at, "out of memory");
}

/* ---- argument rendering (Python repr, abridged for long data) ------------ */

#define SHOW_MAX 64 /* bytes of a long argument shown before "..." */

static void put_escaped_byte(FILE *fp, unsigned c)
{
    switch (c) {
    case '\\':
        fputs("\\\\", fp);
        break;
    case '\n':
        fputs("\\n", fp);
        break;
    case '\r':
        fputs("\\r", fp);
        break;
    case '\t':
        fputs("\\t", fp);
        break;
    default:
        if (c < 0x20 || c >= 0x7f)
            fprintf(fp, "\\x%02x", c);
        else
            fputc((int)c, fp);
    }
}

/* A name from the pickle (module, qualname): as it is, but with control
 * characters escaped so that no pickle can drive the reader's terminal. */
static void put_name(FILE *fp, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            put_escaped_byte(fp, c);
        else
            fputc(c, fp);
    }
}

static char pick_quote(const uint8_t *s, size_t n)
{
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    return sq && !dq ? '"' : '\'';
}

static void put_tail(FILE *fp, size_t n)
{
    if (n > SHOW_MAX)
        fprintf(fp, "... (%zu bytes)", n);
}

/* b'...' */
static void put_bytes(FILE *fp, const uint8_t *s, size_t n)
{
    size_t shown = n > SHOW_MAX ? SHOW_MAX : n;
    char q = pick_quote(s, shown);

    fprintf(fp, "b%c", q);
    for (size_t i = 0; i < shown; i++) {
        if (s[i] == (uint8_t)q)
            fprintf(fp, "\\%c", q);
        else
            put_escaped_byte(fp, s[i]);
    }
    fputc(q, fp);
    put_tail(fp, n);
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (surrogates allowed,
 * as CPython writes them) and its code point, or 0 if malformed. */
static size_t utf8_seq(const uint8_t *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t c = s[0], min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xe0) == 0xc0)
        len = 2, c &= 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, c &= 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
        len = 4, c &= 0x07, min = 0x10000;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff)
        return 0;
    *cp = c;
    return len;
}

/* '...' for UTF-8 text: printable characters as they are, the rest escaped
 * as Python's repr does; malformed bytes as \xNN.  The first SHOW_MAX
 * characters are shown; `total` is the size to report when that is not all
 * (the source may be longer than s[0..n), see put_raw_unicode). */
static void put_str_of(FILE *fp, const uint8_t *s, size_t n, size_t total)
{
    size_t i = 0, chars = 0;
    char q = pick_quote(s, n < 4 * SHOW_MAX ? n : 4 * SHOW_MAX);

    fputc(q, fp);
    for (; i < n && chars < SHOW_MAX; chars++) {
        uint32_t cp;
        size_t k = utf8_seq(s + i, n - i, &cp);
        if (k == 0) {
            fprintf(fp, "\\x%02x", s[i]);
            i++;
            continue;
        }
        if (cp == (uint8_t)q)
            fprintf(fp, "\\%c", q);
        else if (cp < 0x80)
            put_escaped_byte(fp, cp);
        else if (cp <= 0xa0 || cp == 0xad)
            fprintf(fp, "\\x%02x", (unsigned)cp);
        else if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0x2028 ||
                 cp == 0x2029 || cp == 0xfeff)
            fprintf(fp, "\\u%04x", (unsigned)cp);
        else
            fwrite(s + i, 1, k, fp);
        i += k;
    }
    fputc(q, fp);
    if (i < n || total > n)
        fprintf(fp, "... (%zu bytes)", total);
}

static void put_str(FILE *fp, const uint8_t *s, size_t n)
{
    put_str_of(fp, s, n, n);
}

/* The text of a protocol 0 UNICODE line: raw-unicode-escape, that is
 * latin-1 with \uXXXX and \UXXXXXXXX escapes. */
static void put_raw_unicode(FILE *fp, const uint8_t *s, size_t n)
{
    uint8_t buf[4 * (SHOW_MAX + 1)];
    size_t i = 0, o = 0, chars = 0;

    for (; i < n && chars <= SHOW_MAX; chars++) {
        uint32_t cp = s[i];
        size_t k = 1, digits = 0;
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U'))
            digits = s[i + 1] == 'u' ? 4 : 8;
        if (digits > 0 && n - i >= 2 + digits) {
            uint32_t v = 0;
            size_t j;
            for (j = 0; j < digits; j++) {
                int c = s[i + 2 + j], h;
                h = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
                if (h < 0)
                    break;
                v = v << 4 | (uint32_t)h;
            }
            if (j == digits && v <= 0x10ffff) {
                cp = v;
                k = 2 + digits;
            }
        }
        o += pk__utf8_put(buf + o, cp);
        i += k;
    }
    put_str_of(fp, buf, o, i < n ? n : o);
}

/* Python's float repr: the shortest digits that read back the same, in
 * fixed notation for exponents -4..15 and scientific otherwise. */
static void put_float(FILE *fp, double x)
{
    char buf[40], digits[20];
    int prec, exp10, nd = 0;
    const char *p;

    if (isnan(x)) {
        fputs("nan", fp);
        return;
    }
    if (isinf(x)) {
        fputs(x < 0 ? "-inf" : "inf", fp);
        return;
    }
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    p = buf;
    if (*p == '-') {
        fputc('-', fp);
        p++;
    }
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (exp10 < -4 || exp10 >= 16) {
        fprintf(fp, "%c", digits[0]);
        if (nd > 1)
            fprintf(fp, ".%.*s", nd - 1, digits + 1);
        fprintf(fp, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        fputs("0.", fp);
        for (int i = exp10 + 1; i < 0; i++)
            fputc('0', fp);
        fprintf(fp, "%.*s", nd, digits);
    } else if (nd <= exp10 + 1) {
        fprintf(fp, "%.*s", nd, digits);
        for (int i = nd; i <= exp10; i++)
            fputc('0', fp);
        fputs(".0", fp);
    } else {
        fprintf(fp, "%.*s.%.*s", exp10 + 1, digits, nd - exp10 - 1,
                digits + exp10 + 1);
    }
}

/* A two's complement little-endian integer (LONG1 / LONG4), in decimal up to
 * 256 bytes, abridged beyond. */
static void put_long(FILE *fp, const uint8_t *s, size_t n)
{
    uint8_t mag[256];
    char dec[640];
    size_t nd = 0, len = n;
    int neg = n > 0 && (s[n - 1] & 0x80);

    if (n == 0) {
        fputc('0', fp);
        return;
    }
    if (n > sizeof(mag)) {
        fprintf(fp, "%s<%zu-byte integer>", neg ? "-" : "", n);
        return;
    }
    /* Magnitude, little endian. */
    for (size_t i = 0, carry = 1; i < n; i++) {
        unsigned v = neg ? (uint8_t)~s[i] + (unsigned)carry : s[i];
        mag[i] = (uint8_t)v;
        carry = neg && v > 0xff;
    }
    while (len > 0 && mag[len - 1] == 0)
        len--;
    do { /* repeated division by 10, most significant byte first */
        unsigned rem = 0;
        for (size_t i = len; i-- > 0;) {
            unsigned cur = (rem << 8) | mag[i];
            mag[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
        }
        dec[nd++] = (char)('0' + rem);
        while (len > 0 && mag[len - 1] == 0)
            len--;
    } while (len > 0);
    if (neg)
        fputc('-', fp);
    while (nd > 0)
        fputc(dec[--nd], fp);
}

/* ---- the symbolic stack ------------------------------------------------- */

static pk_err_t push(dis_t *d, sval_t v, const uint8_t *at)
{
    if (d->sp == d->scap) {
        size_t cap = d->scap ? d->scap * 2 : 64;
        sval_t *s = pk__realloc(d->stack, cap * sizeof(*s));
        if (s == NULL)
            return oom(d, at);
        d->stack = s;
        d->scap = cap;
    }
    d->stack[d->sp++] = v;
    if (v.kind == SV_MARK)
        d->depth++;
    return PK_OK;
}

static pk_err_t push_kind(dis_t *d, uint8_t kind, uint32_t g, const uint8_t *at)
{
    sval_t v = {kind, g, NULL, 0, -1};
    return push(d, v, at);
}

/* Checks that the top `n` entries exist and are no marks. */
static pk_err_t need(dis_t *d, size_t n, const uint8_t *at)
{
    if (d->sp < n)
        return fail(d, PK_EPICKLE, at, "%s needs %zu stack items, has %zu",
                    optable[*at].name, n, d->sp);
    for (size_t i = d->sp - n; i < d->sp; i++)
        if (d->stack[i].kind == SV_MARK)
            return fail(d, PK_EPICKLE, at, "%s meets a MARK on the stack",
                        optable[*at].name);
    return PK_OK;
}

/* Finds the topmost mark: *pos its stack index.  `below`: items the opcode
 * needs under the mark (the list of APPENDS, the dict of SETITEMS). */
static pk_err_t find_mark(dis_t *d, size_t below, size_t *pos,
                          const uint8_t *at)
{
    size_t i = d->sp;

    while (i > 0 && d->stack[i - 1].kind != SV_MARK)
        i--;
    if (i == 0)
        return fail(d, PK_EPICKLE, at, "%s without a MARK", optable[*at].name);
    *pos = i - 1;
    if (below > 0) {
        d->sp = *pos; /* check what lies under the mark */
        if (need(d, below, at) != PK_OK)
            return d->err != NULL ? d->err->code : PK_EPICKLE;
    }
    return PK_OK;
}

/* Pops the topmost mark and everything above it. */
static void pop_to(dis_t *d, size_t pos)
{
    d->sp = pos;
    d->depth--;
}

/* ---- globals ------------------------------------------------------------ */

static uint64_t name_hash(const uint8_t *m, size_t mn, const uint8_t *n,
                          size_t nn)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < mn; i++)
        h = (h ^ m[i]) * 0x100000001b3ULL;
    h = (h ^ 0xff) * 0x100000001b3ULL; /* separator no UTF-8 text holds */
    for (size_t i = 0; i < nn; i++)
        h = (h ^ n[i]) * 0x100000001b3ULL;
    return h;
}

static char *dup_bytes(const uint8_t *s, size_t n)
{
    char *p = pk__malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Pushes the global module.name, adding it to the table on first sight. */
static pk_err_t push_global(dis_t *d, const uint8_t *m, size_t mn,
                            const uint8_t *n, size_t nn, const uint8_t *at)
{
    uint64_t h = name_hash(m, mn, n, nn);
    size_t slot = SIZE_MAX;
    gref_t *g;

    while (imap_next(&d->global_map, h, &slot)) {
        uint32_t i = d->global_map.vals[slot];
        g = &d->globals[i];
        if (strlen(g->module) == mn && memcmp(g->module, m, mn) == 0 &&
            strlen(g->name) == nn && memcmp(g->name, n, nn) == 0)
            return push_kind(d, SV_GLOBAL, i, at);
    }
    if (d->nglobals == d->gcap) {
        size_t cap = d->gcap ? d->gcap * 2 : 16;
        gref_t *gs = pk__realloc(d->globals, cap * sizeof(*gs));
        if (gs == NULL)
            return oom(d, at);
        d->globals = gs;
        d->gcap = cap;
    }
    g = &d->globals[d->nglobals];
    memset(g, 0, sizeof(*g));
    g->module = dup_bytes(m, mn);
    g->name = dup_bytes(n, nn);
    if (g->module == NULL || g->name == NULL ||
        imap_put(&d->global_map, h, (uint32_t)d->nglobals) != PK_OK) {
        pk__free(g->module);
        pk__free(g->name);
        return oom(d, at);
    }
    return push_kind(d, SV_GLOBAL, (uint32_t)d->nglobals++, at);
}

/* Records that opcode `at` calls global g (NO_GLOBAL: a value that is no
 * global, which the decoder never calls). */
static void note_call(dis_t *d, uint32_t g, const uint8_t *at)
{
    if (g == NO_GLOBAL) {
        if (d->nbad++ == 0) {
            d->bad_op = optable[*at].name;
            d->bad_off = at - d->base;
        }
        return;
    }
    if (d->globals[g].ncalls++ == 0) {
        d->globals[g].call_op = optable[*at].name;
        d->globals[g].call_off = at - d->base;
    }
}

/* The call made by REDUCE / NEWOBJ / INST...: records it and pushes its
 * result, which remembers the global for a later BUILD. */
static pk_err_t push_call_result(dis_t *d, const sval_t *callee,
                                 const uint8_t *at)
{
    uint32_t g = callee->kind == SV_GLOBAL ? callee->g : NO_GLOBAL;

    note_call(d, g, at);
    return push_kind(d, SV_OBJ, g, at);
}

/* ---- the memo ----------------------------------------------------------- */

static pk_err_t memo_put(dis_t *d, uint64_t key, const uint8_t *at)
{
    size_t slot = SIZE_MAX;

    if (d->sp == 0 || d->stack[d->sp - 1].kind == SV_MARK)
        return fail(d, PK_EPICKLE, at, "%s with %s on top of the stack",
                    optable[*at].name, d->sp == 0 ? "nothing" : "a MARK");
    if (imap_next(&d->memo_map, key, &slot)) { /* redefined: overwrite */
        d->memo[d->memo_map.vals[slot]] = d->stack[d->sp - 1];
        return PK_OK;
    }
    if (d->nmemo == d->memocap) {
        size_t cap = d->memocap ? d->memocap * 2 : 64;
        sval_t *m = pk__realloc(d->memo, cap * sizeof(*m));
        if (m == NULL)
            return oom(d, at);
        d->memo = m;
        d->memocap = cap;
    }
    if (imap_put(&d->memo_map, key, (uint32_t)d->nmemo) != PK_OK)
        return oom(d, at);
    d->memo[d->nmemo++] = d->stack[d->sp - 1];
    return PK_OK;
}

static pk_err_t memo_get(dis_t *d, uint64_t key, const uint8_t *at)
{
    size_t slot = SIZE_MAX;

    if (!imap_next(&d->memo_map, key, &slot))
        return fail(d, PK_EPICKLE, at,
                    "memo key %" PRIu64 " has never been stored into", key);
    return push(d, d->memo[d->memo_map.vals[slot]], at);
}

/* ---- reading arguments -------------------------------------------------- */

typedef struct arg {
    int has;    /* an argument to print */
    uint64_t u; /* integer arguments, lengths */
    int64_t i;
    double f;
    const uint8_t *s; /* byte arguments, lines (without '\n') */
    size_t n;
    const uint8_t *s2; /* second line of TWOLINES */
    size_t n2;
} arg_t;

/* Parses the argument of the opcode at `at`; *next: the following opcode. */
static pk_err_t read_arg(dis_t *d, const uint8_t *at, arg_t *a,
                         const uint8_t **next)
{
    const uint8_t *p = at + 1;
    size_t left = (size_t)(d->end - p), width = 0;
    const opdesc_t *od = &optable[*at];

    memset(a, 0, sizeof(*a));
    a->has = od->arg != PK_ARG_NONE;
    switch (od->arg) {
    case PK_ARG_NONE:
        break;
    case PK_ARG_U1:
    case PK_ARG_U2:
    case PK_ARG_I4:
    case PK_ARG_U4:
    case PK_ARG_U8:
    case PK_ARG_F8:
        width = od->arg == PK_ARG_U1                           ? 1
                : od->arg == PK_ARG_U2                         ? 2
                : od->arg == PK_ARG_U8 || od->arg == PK_ARG_F8 ? 8
                                                               : 4;
        if (left < width)
            goto trunc;
        if (width == 1)
            a->u = p[0];
        else if (width == 2)
            a->u = pk__ld16(p);
        else if (width == 4)
            a->u = pk__ld32(p);
        else
            a->u = pk__ld64(p);
        a->i = od->arg == PK_ARG_I4 ? (int32_t)(uint32_t)a->u : (int64_t)a->u;
        if (od->arg == PK_ARG_F8) { /* big-endian on the wire */
            uint64_t be = __builtin_bswap64(a->u);
            memcpy(&a->f, &be, 8);
        }
        p += width;
        break;
    case PK_ARG_LINE:
    case PK_ARG_TWOLINES: {
        const uint8_t *nl = memchr(p, '\n', left);
        if (nl == NULL)
            goto trunc;
        a->s = p;
        a->n = (size_t)(nl - p);
        p = nl + 1;
        if (od->arg == PK_ARG_TWOLINES) {
            nl = memchr(p, '\n', (size_t)(d->end - p));
            if (nl == NULL)
                goto trunc;
            a->s2 = p;
            a->n2 = (size_t)(nl - p);
            p = nl + 1;
        }
        break;
    }
    case PK_ARG_BYTES1:
    case PK_ARG_LONG1:
    case PK_ARG_BYTES4:
    case PK_ARG_LONG4:
    case PK_ARG_BYTES8:
        width = od->arg == PK_ARG_BYTES1 || od->arg == PK_ARG_LONG1   ? 1
                : od->arg == PK_ARG_BYTES4 || od->arg == PK_ARG_LONG4 ? 4
                                                                      : 8;
        if (left < width)
            goto trunc;
        a->u = width == 1 ? p[0] : width == 4 ? pk__ld32(p) : pk__ld64(p);
        if ((*at == PK_OP_BINSTRING || *at == PK_OP_LONG4) &&
            (int32_t)(uint32_t)a->u < 0)
            return fail(d, PK_EPICKLE, at, "%s with negative length %" PRId32,
                        od->name, (int32_t)(uint32_t)a->u);
        if (a->u > left - width)
            return fail(d, PK_ETRUNC, at,
                        "%s argument of %" PRIu64 " bytes, only %zu left",
                        od->name, a->u, left - width);
        a->s = p + width;
        a->n = (size_t)a->u;
        p += width + a->n;
        break;
    default:
        return fail(d, PK_EPICKLE, at, "bad argument kind");
    }
    *next = p;
    return PK_OK;
trunc:
    return fail(d, PK_ETRUNC, at, "truncated %s argument", od->name);
}

/* Parses a decimal memo index of GET / PUT. */
static pk_err_t line_index(dis_t *d, const arg_t *a, const uint8_t *at,
                           uint64_t *key)
{
    uint64_t k = 0;

    if (a->n == 0 || a->n > 19)
        goto bad;
    for (size_t i = 0; i < a->n; i++) {
        if (a->s[i] < '0' || a->s[i] > '9')
            goto bad;
        k = k * 10 + (uint64_t)(a->s[i] - '0');
    }
    *key = k;
    return PK_OK;
bad:
    return fail(d, PK_EPICKLE, at, "%s needs a decimal memo index",
                optable[*at].name);
}

/* A text argument as written (escaped where not printable), without the
 * trailing 'L' of a Python 2 LONG. */
static void put_text(FILE *fp, const uint8_t *s, size_t n, int drop_l)
{
    if (drop_l && n > 0 && s[n - 1] == 'L')
        n--;
    for (size_t i = 0; i < n && i < SHOW_MAX; i++)
        put_escaped_byte(fp, s[i]);
    put_tail(fp, n);
}

static void put_arg(dis_t *d, const uint8_t *at, const arg_t *a)
{
    FILE *fp = d->fp;
    const opdesc_t *od = &optable[*at];

    switch (od->arg) {
    case PK_ARG_U1:
    case PK_ARG_U2:
    case PK_ARG_U4:
    case PK_ARG_U8:
        fprintf(fp, "%" PRIu64, a->u);
        break;
    case PK_ARG_I4:
        fprintf(fp, "%" PRId64, a->i);
        break;
    case PK_ARG_F8:
        put_float(fp, a->f);
        break;
    case PK_ARG_LONG1:
    case PK_ARG_LONG4:
        put_long(fp, a->s, a->n);
        break;
    case PK_ARG_TWOLINES: { /* 'module name', as pickletools shows it */
        char q =
            memchr(a->s, '\'', a->n) || memchr(a->s2, '\'', a->n2) ? '"' : '\'';
        fputc(q, fp);
        put_name(fp, (const char *)a->s, a->n);
        fputc(' ', fp);
        put_name(fp, (const char *)a->s2, a->n2);
        fputc(q, fp);
        break;
    }
    case PK_ARG_LINE:
        if (*at == PK_OP_INT && a->n == 2 && a->s[0] == '0' &&
            (a->s[1] == '0' || a->s[1] == '1'))
            fputs(a->s[1] == '1' ? "True" : "False", fp);
        else if (*at == PK_OP_UNICODE)
            put_raw_unicode(fp, a->s, a->n);
        else if (*at == PK_OP_PERSID)
            put_str(fp, a->s, a->n);
        else /* INT, LONG, FLOAT, GET, PUT, STRING: the text as written */
            put_text(fp, a->s, a->n, *at == PK_OP_LONG);
        break;
    case PK_ARG_BYTES1:
    case PK_ARG_BYTES4:
    case PK_ARG_BYTES8:
        if (*at == PK_OP_BINBYTES || *at == PK_OP_SHORT_BINBYTES ||
            *at == PK_OP_BINBYTES8) {
            put_bytes(fp, a->s, a->n);
        } else if (*at == PK_OP_BYTEARRAY8) {
            fputs("bytearray(", fp);
            put_bytes(fp, a->s, a->n);
            fputc(')', fp);
        } else { /* unicode, and Python 2 str shown as text */
            put_str(fp, a->s, a->n);
        }
        break;
    default:
        break;
    }
}

/* ---- one opcode's stack effect ------------------------------------------ */

/* Applies the opcode at `at` to the symbolic stack.  *note receives the
 * "(MARK at N)" / "(as N)" remark, if any. */
static pk_err_t step(dis_t *d, const uint8_t *at, const arg_t *a, char *note,
                     size_t notesz)
{
    pk_err_t rc = PK_OK;
    size_t pos;
    sval_t v;

#define TRY(x)                                                                 \
    do {                                                                       \
        if ((rc = (x)) != PK_OK)                                               \
            return rc;                                                         \
    } while (0)
#define MARK_NOTE(pos_)                                                        \
    snprintf(note, notesz, "(MARK at %lld)", d->stack[pos_].off)

    switch (*at) {
    case PK_OP_MARK:
        v = (sval_t){SV_MARK, NO_GLOBAL, NULL, 0, at - d->base};
        return push(d, v, at);
    case PK_OP_STOP:
        return need(d, 1, at);
    case PK_OP_POP:
        if (d->sp > 0 && d->stack[d->sp - 1].kind == SV_MARK) {
            MARK_NOTE(d->sp - 1);
            pop_to(d, d->sp - 1);
            return PK_OK;
        }
        TRY(need(d, 1, at));
        d->sp--;
        return PK_OK;
    case PK_OP_POP_MARK:
        TRY(find_mark(d, 0, &pos, at));
        MARK_NOTE(pos);
        pop_to(d, pos);
        return PK_OK;
    case PK_OP_DUP:
        TRY(need(d, 1, at));
        return push(d, d->stack[d->sp - 1], at);
    case PK_OP_STRING:
    case PK_OP_UNICODE:
    case PK_OP_BINSTRING:
    case PK_OP_SHORT_BINSTRING:
    case PK_OP_BINUNICODE:
    case PK_OP_SHORT_BINUNICODE:
    case PK_OP_BINUNICODE8:
        v = (sval_t){SV_STR, NO_GLOBAL, a->s, a->n, -1};
        if (*at == PK_OP_STRING && a->n >= 2) { /* drop the quotes */
            v.s++;
            v.n -= 2;
        }
        return push(d, v, at);
    case PK_OP_FLOAT:
    case PK_OP_INT:
    case PK_OP_LONG:
    case PK_OP_BININT:
    case PK_OP_BININT1:
    case PK_OP_BININT2:
    case PK_OP_NONE:
    case PK_OP_BINFLOAT:
    case PK_OP_NEWTRUE:
    case PK_OP_NEWFALSE:
    case PK_OP_LONG1:
    case PK_OP_LONG4:
    case PK_OP_BINBYTES:
    case PK_OP_SHORT_BINBYTES:
    case PK_OP_BINBYTES8:
    case PK_OP_BYTEARRAY8:
    case PK_OP_EMPTY_DICT:
    case PK_OP_EMPTY_LIST:
    case PK_OP_EMPTY_TUPLE:
    case PK_OP_EMPTY_SET:
    case PK_OP_PERSID:
    case PK_OP_NEXT_BUFFER:
        return push_kind(d, SV_ANY, NO_GLOBAL, at);
    case PK_OP_BINPERSID:
    case PK_OP_TUPLE1:
        TRY(need(d, 1, at));
        d->sp -= 1;
        return push_kind(d, SV_ANY, NO_GLOBAL, at);
    case PK_OP_TUPLE2:
    case PK_OP_TUPLE3:
        TRY(need(d, *at == PK_OP_TUPLE2 ? 2 : 3, at));
        d->sp -= *at == PK_OP_TUPLE2 ? 2 : 3;
        return push_kind(d, SV_ANY, NO_GLOBAL, at);
    case PK_OP_READONLY_BUFFER:
        return need(d, 1, at);
    case PK_OP_APPEND:
        TRY(need(d, 2, at));
        d->sp -= 1;
        return PK_OK;
    case PK_OP_SETITEM:
        TRY(need(d, 3, at));
        d->sp -= 2;
        return PK_OK;
    case PK_OP_APPENDS:
    case PK_OP_SETITEMS:
    case PK_OP_ADDITEMS:
        TRY(find_mark(d, 1, &pos, at));
        MARK_NOTE(pos);
        pop_to(d, pos);
        return PK_OK;
    case PK_OP_LIST:
    case PK_OP_TUPLE:
    case PK_OP_DICT:
    case PK_OP_FROZENSET:
        TRY(find_mark(d, 0, &pos, at));
        MARK_NOTE(pos);
        pop_to(d, pos);
        return push_kind(d, SV_ANY, NO_GLOBAL, at);
    case PK_OP_GLOBAL:
        return push_global(d, a->s, a->n, a->s2, a->n2, at);
    case PK_OP_STACK_GLOBAL: {
        sval_t m, n;
        TRY(need(d, 2, at));
        m = d->stack[d->sp - 2];
        n = d->stack[d->sp - 1];
        if (m.kind != SV_STR || n.kind != SV_STR)
            return fail(d, PK_EPICKLE, at,
                        "STACK_GLOBAL needs a module and a name that are str");
        d->sp -= 2;
        return push_global(d, m.s, m.n, n.s, n.n, at);
    }
    case PK_OP_INST:
        TRY(find_mark(d, 0, &pos, at));
        MARK_NOTE(pos);
        pop_to(d, pos);
        TRY(push_global(d, a->s, a->n, a->s2, a->n2, at));
        v = d->stack[--d->sp];
        return push_call_result(d, &v, at);
    case PK_OP_OBJ:
        TRY(find_mark(d, 0, &pos, at));
        if (d->sp - pos < 2)
            return fail(d, PK_EPICKLE, at, "OBJ without a class after MARK");
        MARK_NOTE(pos);
        v = d->stack[pos + 1];
        pop_to(d, pos);
        return push_call_result(d, &v, at);
    case PK_OP_REDUCE:
    case PK_OP_NEWOBJ:
    case PK_OP_NEWOBJ_EX: {
        size_t k = *at == PK_OP_NEWOBJ_EX ? 3 : 2;
        TRY(need(d, k, at));
        v = d->stack[d->sp - k];
        d->sp -= k;
        return push_call_result(d, &v, at);
    }
    case PK_OP_BUILD:
        TRY(need(d, 2, at));
        d->sp -= 1;
        v = d->stack[d->sp - 1]; /* its maker's __setstate__ runs */
        note_call(d, v.kind == SV_OBJ ? v.g : NO_GLOBAL, at);
        return PK_OK;
    case PK_OP_GET:
    case PK_OP_PUT: {
        uint64_t key = 0;
        TRY(line_index(d, a, at, &key));
        return *at == PK_OP_GET ? memo_get(d, key, at) : memo_put(d, key, at);
    }
    case PK_OP_BINGET:
    case PK_OP_LONG_BINGET:
        return memo_get(d, a->u, at);
    case PK_OP_BINPUT:
    case PK_OP_LONG_BINPUT:
        return memo_put(d, a->u, at);
    case PK_OP_MEMOIZE:
        snprintf(note, notesz, "(as %zu)", d->nmemo);
        return memo_put(d, d->nmemo, at);
    case PK_OP_EXT1:
    case PK_OP_EXT2:
    case PK_OP_EXT4: { /* a global from the copyreg extension registry */
        char code[24];
        int n = snprintf(code, sizeof(code), "%" PRIu64, a->u);
        return push_global(d, (const uint8_t *)"<extension code>", 16,
                           (const uint8_t *)code, (size_t)n, at);
    }
    case PK_OP_PROTO:
        if (a->u > PK_HIGHEST_PROTOCOL)
            return fail(d, PK_EUNSUPPORTED, at,
                        "unsupported pickle protocol %" PRIu64, a->u);
        d->proto = (int)a->u;
        return PK_OK;
    case PK_OP_FRAME: {
        /* The decoder's own checks (unpickle.c), so that inspect refuses
         * what recode refuses. */
        const uint8_t *after = at + 9; /* the opcode and its 8-byte length */
        if (d->frame_end != NULL && after < d->frame_end)
            return fail(d, PK_EPICKLE, at,
                        "beginning of a new frame before end of current "
                        "frame");
        if (a->u > (uint64_t)(d->end - after))
            return fail(d, PK_ETRUNC, at,
                        "frame of %" PRIu64
                        " bytes is longer than the %zu bytes left",
                        a->u, (size_t)(d->end - after));
        d->frame_end = after + a->u;
        return PK_OK;
    }
    default:
        return fail(d, PK_EPICKLE, at, "unknown opcode 0x%02x", *at);
    }
#undef TRY
#undef MARK_NOTE
}

/* ---- the listing -------------------------------------------------------- */

#define INDENT_MAX 32 /* mark levels shown as indentation */

static void put_line(dis_t *d, const uint8_t *at, const arg_t *a,
                     const char *note, size_t depth)
{
    FILE *fp = d->fp;
    const opdesc_t *od = &optable[*at];
    char code[8];
    int pad;

    if (*at >= 0x20 && *at < 0x7f)
        snprintf(code, sizeof(code), "%c", *at);
    else
        snprintf(code, sizeof(code), "\\x%02x", *at);
    if (depth > INDENT_MAX)
        depth = INDENT_MAX;
    fprintf(fp, "%5lld: %-4s %*s%s", (long long)(at - d->base), code,
            (int)(4 * depth), "", od->name);
    if (a->has || note[0] != '\0') {
        pad = 10 - (int)strlen(od->name);
        fprintf(fp, "%*s", pad > 0 ? pad : 0, "");
        if (a->has) {
            fputc(' ', fp);
            put_arg(d, at, a);
        }
        if (note[0] != '\0')
            fprintf(fp, " %s", note);
    }
    fputc('\n', fp);
}

/* g's name as pk_loads resolves it: the same Python 2 renames (below
 * protocol 3) as the decoder. */
static void resolved_name(const dis_t *d, const gref_t *g, const char **m,
                          const char **n)
{
    *m = g->module;
    *n = g->name;
    if (d->proto < 3)
        pk__fix_import(m, n);
}

/* Calls that run code or touch the system when a pickle makes them: the
 * classic payloads.  A module listed with a NULL name is dangerous whole. */
static const char *const dangerous[][2] = {
    {"os", NULL},
    {"posix", NULL},
    {"nt", NULL},
    {"subprocess", NULL},
    {"pty", NULL},
    {"shutil", NULL},
    {"socket", NULL},
    {"ctypes", NULL},
    {"importlib", NULL},
    {"runpy", NULL},
    {"code", NULL},
    {"codeop", NULL},
    {"pickle", NULL},
    {"_pickle", NULL},
    {"marshal", NULL},
    {"sys", NULL},
    {"webbrowser", NULL},
    {"commands", NULL},
    {"builtins", "eval"},
    {"builtins", "exec"},
    {"builtins", "compile"},
    {"builtins", "open"},
    {"builtins", "getattr"},
    {"builtins", "setattr"},
    {"builtins", "delattr"},
    {"builtins", "__import__"},
    {"builtins", "globals"},
    {"builtins", "input"},
    {"builtins", "breakpoint"},
    {"operator", "attrgetter"},
    {"operator", "methodcaller"},
    {"functools", "partial"},
    {"numpy", "load"},
    {"numpy.testing._private.utils", "runstring"},
};

static int is_dangerous(const char *m, const char *n)
{
    size_t ml;
    for (size_t i = 0; i < PK_ARRAY_LEN(dangerous); i++) {
        ml = strlen(dangerous[i][0]);
        if (strncmp(m, dangerous[i][0], ml) != 0 ||
            (m[ml] != '\0' && m[ml] != '.'))
            continue;
        if (dangerous[i][1] == NULL || strcmp(n, dangerous[i][1]) == 0)
            return 1;
    }
    return 0;
}

/* What calling g would be: PK_VERDICT_SAFE for an allow-listed data
 * constructor, PK_VERDICT_DANGEROUS for a known-dangerous call, else
 * PK_VERDICT_UNKNOWN. */
static pk_verdict_t classify(const dis_t *d, const gref_t *g)
{
    const char *m, *n;
    resolved_name(d, g, &m, &n);
    if (pk__callable_lookup(m, n) != PK__CALL_NONE)
        return PK_VERDICT_SAFE;
    return is_dangerous(m, n) ? PK_VERDICT_DANGEROUS : PK_VERDICT_UNKNOWN;
}

static void put_global_name(FILE *fp, const dis_t *d, const gref_t *g)
{
    const char *m, *n;
    resolved_name(d, g, &m, &n);
    put_name(fp, m, strlen(m));
    fputc('.', fp);
    put_name(fp, n, strlen(n));
    if (m != g->module || n != g->name) { /* renamed from Python 2 */
        fputs(" (written as ", fp);
        put_name(fp, g->module, strlen(g->module));
        fputc('.', fp);
        put_name(fp, g->name, strlen(g->name));
        fputc(')', fp);
    }
}

static pk_verdict_t put_summary(dis_t *d, const uint8_t *stop_end)
{
    static const char *const what[] = {
        [PK_VERDICT_SAFE] = "allowed (data constructor)",
        [PK_VERDICT_UNKNOWN] = "refused (unknown callable)",
        [PK_VERDICT_DANGEROUS] = "refused (DANGEROUS call)",
    };
    FILE *fp = d->fp;
    pk_verdict_t verdict = PK_VERDICT_SAFE;
    const gref_t *worst = NULL;
    size_t ncalled = 0;

    if (!(d->flags & PK_INSPECT_GLOBALS)) {
        fprintf(fp, "highest protocol among opcodes = %d\n", d->maxproto);
        if (stop_end < d->end)
            fprintf(fp, "%lld bytes follow STOP (another pickle, or garbage)\n",
                    (long long)(d->end - stop_end));
    }
    fputs(d->nglobals == 0 && d->nbad == 0 ? "globals: none\n" : "globals:\n",
          fp);
    for (size_t i = 0; i < d->nglobals; i++) {
        const gref_t *g = &d->globals[i];
        fputs("    ", fp);
        put_global_name(fp, d, g);
        if (g->ncalls == 0) {
            fputs(": not called, kept as a reference\n", fp);
            continue;
        }
        pk_verdict_t v = classify(d, g);
        ncalled++;
        if (v > verdict || worst == NULL) {
            if (v >= verdict)
                worst = g;
            if (v > verdict)
                verdict = v;
        }
        fprintf(fp, ": would call: %s (%s at %lld%s)\n", what[v], g->call_op,
                g->call_off, g->ncalls > 1 ? ", and more" : "");
    }
    if (d->nbad > 0) {
        fprintf(fp,
                "    a value that is not a global: would call: refused "
                "(%s at %lld%s)\n",
                d->bad_op, d->bad_off, d->nbad > 1 ? ", and more" : "");
        if (verdict == PK_VERDICT_SAFE)
            verdict = PK_VERDICT_UNKNOWN;
    }
    fputs("verdict: ", fp);
    if (verdict == PK_VERDICT_SAFE) {
        fprintf(fp, "safe: %s\n",
                ncalled ? "decoding calls only allow-listed data constructors"
                        : "decoding calls nothing");
    } else {
        fputs(verdict == PK_VERDICT_DANGEROUS
                  ? "DANGEROUS: would call "
                  : "refused: would call what picklepool does not allow, ",
              fp);
        if (worst != NULL)
            put_global_name(fp, d, worst);
        else
            fputs("a value that is not a global", fp);
        fputs(" (picklepool refuses to decode it; CPython's pickle.load "
              "would run it)\n",
              fp);
    }
    return verdict;
}

static void dis_free(dis_t *d)
{
    for (size_t i = 0; i < d->nglobals; i++) {
        pk__free(d->globals[i].module);
        pk__free(d->globals[i].name);
    }
    pk__free(d->globals);
    pk__free(d->stack);
    pk__free(d->memo);
    imap_free(&d->memo_map);
    imap_free(&d->global_map);
}

pk_err_t pk_disassemble(const void *data, size_t len, FILE *fp, pk_error_t *err)
{
    return pk_inspect(data, len, fp, 0, NULL, err);
}

pk_err_t pk_inspect(const void *data, size_t len, FILE *fp, unsigned flags,
                    pk_verdict_t *verdict, pk_error_t *err)
{
    dis_t d;
    const uint8_t *p;
    pk_err_t rc = PK_OK;

    memset(&d, 0, sizeof(d));
    d.base = data;
    d.end = d.base + len;
    d.fp = fp;
    d.err = err;
    d.flags = flags;
    if (verdict != NULL)
        *verdict = PK_VERDICT_SAFE;
    pk_error_clear(err);
    for (p = d.base;;) {
        const uint8_t *at = p;
        char note[48] = "";
        size_t depth;
        arg_t a;

        if (at >= d.end) {
            rc = fail(&d, PK_ETRUNC, NULL, "pickle ends before STOP");
            if (err != NULL)
                err->offset = (long long)len;
            break;
        }
        if (optable[*at].name == NULL) {
            rc = fail(&d, PK_EPICKLE, at, "unknown opcode 0x%02x", *at);
            break;
        }
        if ((rc = read_arg(&d, at, &a, &p)) != PK_OK)
            break;
        depth = d.depth;
        rc = step(&d, at, &a, note, sizeof(note));
        if (!(flags & PK_INSPECT_GLOBALS)) /* depth before, as pickletools */
            put_line(&d, at, &a, note, depth);
        if (rc != PK_OK)
            break;
        if (optable[*at].proto > d.maxproto)
            d.maxproto = optable[*at].proto;
        if (*at == PK_OP_STOP) {
            pk_verdict_t v = put_summary(&d, p);
            if (verdict != NULL)
                *verdict = v;
            break;
        }
    }
    dis_free(&d);
    return rc;
}
