/*
 * pickler.c - the pickle encoder (pk_dumps), protocols 2-5.
 *
 * The output is what CPython 3.11's C pickler (Modules/_pickle.c) writes for
 * the same object graph, byte for byte: PROTO outside any frame, then frames
 * of about 64 KiB opened lazily on the first write and committed at the start
 * of the next value once they reach the target; payloads of 64 KiB or more are
 * written between frames.  The memo mirrors CPython's: every object CPython
 * memoizes gets the next index in the same order, including the temporaries
 * its reductions create (argument tuples, the list of a set below protocol 4),
 * which can never be fetched again and so take an index without a table slot.
 *
 * Object identity: a pk_value_t is identified by its address.  Objects that
 * CPython shares without the caller asking (the empty and one-character str
 * and bytes singletons, the classes and functions named by globals, the module
 * name strings of STACK_GLOBAL, numpy's builtin dtypes, the 'latin1' constant
 * of protocol-2 bytes) are identified by content instead, so that the second
 * occurrence becomes a memo GET as in CPython.
 *
 * ndarrays follow numpy 1.24's own __reduce_ex__ (see encode_ndarray).
 */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "codec/compat_names.h"
#include "codec/opcodes.h"
#include "picklepool/pickle.h"

#define FRAME_HEADER_SIZE 9 /* FRAME opcode + 8-byte length */
#define FRAME_SIZE_MIN 4    /* smaller frames are dropped at commit */
#define MAX_DEPTH 1000
#define NO_FRAME SIZE_MAX
#define NO_INDEX UINT32_MAX

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Memo keys.  Even keys are addresses (a pk_value_t, or a value's address + 4
 * for the dtype of an ndarray) and live in the hash table; odd keys name a
 * content-identified singleton in one of the small arrays below. */
#define KEY_ANON ((uintptr_t)0)
#define KEY_STRCHAR 1  /* str of one code point < 256; 256 = '' */
#define KEY_BYTECHAR 3 /* bytes of one byte; 256 = b'' */
#define KEY_LATIN1 5   /* the 'latin1' argument of _codecs.encode */
#define KEY_DTYPE 7    /* numpy builtin dtype, see dtype_singleton() */
#define KEY_TAG(k) ((k)&15)
#define KEY_ARG(k) ((k) >> 4)
#define MAKE_KEY(tag, arg) (((uintptr_t)(arg) << 4) | (tag))
#define NCHARS 257
#define NDTYPES (5 * 17)

typedef struct __attribute__((packed)) memo_ent {
    uintptr_t key; /* 0: empty */
    uint32_t idx;
} memo_ent_t; /* 12 bytes: the table is most of the encoder's memory */

/* Content-keyed memo for globals and STACK_GLOBAL module strings. */
enum name_kind {
    NAME_GLOBAL,       /* the object module.qualname */
    NAME_MOD_INTERNED, /* interned module string: static C types, whichmodule */
    NAME_MOD_OTHER,    /* the module's __name__: functions, Python classes */
    NAME_MOD_OWN       /* a string no other global shares (never memo-keyed) */
};
typedef struct name_ent {
    uint64_t hash; /* 0: empty */
    const char *module;
    const char *name; /* NULL for module strings */
    enum name_kind kind;
    uint32_t idx;
} name_ent_t;

typedef struct pickler {
    uint8_t *data; /* the caller's buffer, grown in place */
    size_t len;
    size_t cap;
    size_t lim; /* writes past lim take the slow path (grow, open frame) */
    size_t start_len;
    int proto;
    bool framing;
    size_t frame_start; /* offset of the open frame's header, or NO_FRAME */
    size_t frame_limit; /* len at which the open frame is committed */
    unsigned depth;
    const pk_dump_opts_t *opts;
    pk_error_t *err;

    memo_ent_t *memo; /* open addressing, linear probing, load <= 2/3 */
    size_t memo_mask;
    size_t memo_used;
    uint32_t memo_next; /* next memo index (CPython's memo size) */

    name_ent_t *names;
    size_t names_mask;
    size_t names_used;

    char **parents; /* parent qualnames made for getattr globals */
    size_t nparents;
    size_t parents_cap;

    /* Which of the content-keyed slots below hold an index: clearing 80
     * bytes per call instead of the 2.4 KiB of slots keeps pk_dumps cheap
     * for the pool's one-small-item pickles. */
    uint64_t small_set[(2 * NCHARS + 1 + NDTYPES + 63) / 64];
    uint32_t str_char[NCHARS];
    uint32_t byte_char[NCHARS];
    uint32_t dtypes[NDTYPES];
    uint32_t latin1;
} pickler_t;

/* ---- output ----------------------------------------------------------- */

static pk_err_t nomem(pickler_t *p)
{
    return pk__err(p->err, PK_ENOMEM, "out of memory while pickling");
}

static void update_lim(pickler_t *p)
{
    p->lim = (p->framing && p->frame_start == NO_FRAME) ? 0 : p->cap;
}

/* Output buffers from this size on come from and go to the block cache. */
#define CACHED_BUF (1u << 20)

/* Grows a buffer (*data, *cap holding len bytes) to at least need bytes:
 * doubling from 256, large ones from the block cache.  0 or -1 (ENOMEM). */
static int buf_grow(uint8_t **data, size_t *cap, size_t len, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap < 256 ? 256 : *cap;
    while (c < need) {
        if (c > SIZE_MAX / 2) {
            c = need;
            break;
        }
        c *= 2;
    }
    size_t got;
    uint8_t *d = c >= CACHED_BUF ? pk__cache_take(c, &got) : NULL;
    if (d != NULL) { /* already faulted in: see pk_buf_free */
        if (len != 0)
            memcpy(d, *data, len);
        if (*data != NULL)
            pk__cache_put(*data, *cap);
        *data = d;
        *cap = got;
        return 0;
    }
    d = pk__realloc(*data, c);
    if (d == NULL)
        return -1;
    *data = d;
    *cap = c;
    return 0;
}

static pk_err_t grow(pickler_t *p, size_t need)
{
    return buf_grow(&p->data, &p->cap, p->len, need) == 0 ? PK_OK : nomem(p);
}

/* Slow path of reserve(): open a frame if one is due, make room for n. */
static pk_err_t reserve_slow(pickler_t *p, size_t n)
{
    size_t hdr = 0;
    if (p->framing && p->frame_start == NO_FRAME)
        hdr = FRAME_HEADER_SIZE;
    if (n > SIZE_MAX - p->len - hdr)
        return nomem(p);
    pk_err_t rc = grow(p, p->len + hdr + n);
    if (rc != PK_OK)
        return rc;
    if (hdr) {
        p->frame_start = p->len;
        p->frame_limit = p->len + FRAME_HEADER_SIZE + PK_FRAME_SIZE_TARGET;
        p->len += FRAME_HEADER_SIZE;
    }
    update_lim(p);
    return PK_OK;
}

/* Makes room for n bytes at p->data + p->len (opening a frame when framing
 * and none is open, like _Pickler_Write); the caller writes them and adds n
 * to p->len. */
static inline pk_err_t reserve(pickler_t *p, size_t n)
{
    if (likely(p->len + n <= p->lim))
        return PK_OK;
    return reserve_slow(p, n);
}

static inline pk_err_t put1(pickler_t *p, uint8_t op)
{
    pk_err_t rc = reserve(p, 1);
    if (unlikely(rc != PK_OK))
        return rc;
    p->data[p->len++] = op;
    return PK_OK;
}

static inline pk_err_t put(pickler_t *p, const void *s, size_t n)
{
    pk_err_t rc = reserve(p, n);
    if (unlikely(rc != PK_OK))
        return rc;
    memcpy(p->data + p->len, s, n);
    p->len += n;
    return PK_OK;
}

static void commit_frame(pickler_t *p)
{
    if (p->frame_start == NO_FRAME)
        return;
    size_t flen = p->len - p->frame_start - FRAME_HEADER_SIZE;
    uint8_t *q = p->data + p->frame_start;
    if (flen >= FRAME_SIZE_MIN) {
        q[0] = PK_OP_FRAME;
        pk__st64(q + 1, (uint64_t)flen);
    } else {
        memmove(q, q + FRAME_HEADER_SIZE, flen);
        p->len -= FRAME_HEADER_SIZE;
    }
    p->frame_start = NO_FRAME;
    p->frame_limit = SIZE_MAX;
    update_lim(p);
}

/* Called before each value, like _Pickler_OpcodeBoundary. */
static inline void opcode_boundary(pickler_t *p)
{
    if (unlikely(p->len >= p->frame_limit))
        commit_frame(p);
}

/* A header and its payload; payloads of a frame's size or more go between
 * frames (_Pickler_write_bytes). */
static pk_err_t put_payload(pickler_t *p, const uint8_t *hdr, size_t hlen,
                            const void *data, size_t dlen)
{
    bool framing = p->framing;
    if (dlen >= PK_FRAME_SIZE_TARGET) {
        commit_frame(p);
        p->framing = false;
        update_lim(p);
    }
    pk_err_t rc = reserve(p, hlen + dlen);
    if (rc == PK_OK) {
        memcpy(p->data + p->len, hdr, hlen);
        if (dlen)
            memcpy(p->data + p->len + hlen, data, dlen);
        p->len += hlen + dlen;
    }
    p->framing = framing;
    update_lim(p);
    return rc;
}

/* ---- memo ------------------------------------------------------------- */

/* Like CPython's memo table, hash the address itself: values allocated one
 * after another land in neighbouring slots, so a pickle of a million fresh
 * strings walks the table almost sequentially instead of missing the cache
 * on every insert.  (A multiplicative hash measured 2x slower here.) */
static inline size_t ptr_hash(uintptr_t key)
{
    return (size_t)(key >> 3);
}
static memo_ent_t *memo_slot(const pickler_t *p, uintptr_t key)
{
    size_t i = ptr_hash(key) & p->memo_mask;
    for (;;) {
        memo_ent_t *e = &p->memo[i];
        if (e->key == key || e->key == 0)
            return e;
        i = (i + 1) & p->memo_mask;
    }
}

static pk_err_t memo_grow_to(pickler_t *p, size_t ncap)
{
    memo_ent_t *t = pk__calloc(ncap, sizeof(*t));
    if (t == NULL)
        return nomem(p);
    memo_ent_t *old = p->memo;
    size_t ocap = old ? p->memo_mask + 1 : 0;
    p->memo = t;
    p->memo_mask = ncap - 1;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].key != 0)
            *memo_slot(p, old[i].key) = old[i];
    }
    pk__free(old);
    return PK_OK;
}

/* Quadruples while small (fewer rehashes), then doubles. */
static pk_err_t memo_grow(pickler_t *p)
{
    size_t cap = p->memo ? p->memo_mask + 1 : 16;
    return memo_grow_to(p, cap * (cap < 65536 ? 4 : 2));
}

static inline bool memo_full(const pickler_t *p)
{
    return p->memo == NULL || (p->memo_used + 1) * 3 > (p->memo_mask + 1) * 2;
}

/* The table entry for key (empty when absent).  Valid until the next insert. */
static inline memo_ent_t *memo_find(pickler_t *p, uintptr_t key)
{
    static memo_ent_t none;
    if (unlikely(p->memo == NULL))
        return &none; /* key 0: absent, and memo_put grows before using it */
    return memo_slot(p, key);
}

static pk_err_t put_get(pickler_t *p, uint32_t idx)
{
    uint8_t b[5];
    if (idx < 256) {
        b[0] = PK_OP_BINGET;
        b[1] = (uint8_t)idx;
        return put(p, b, 2);
    }
    b[0] = PK_OP_LONG_BINGET;
    pk__st32(b + 1, idx);
    return put(p, b, 5);
}

/* Writes the op that stores the top of stack as memo index p->memo_next and
 * returns that index in *idx (memo_put without the table). */
static pk_err_t put_memoize(pickler_t *p, uint32_t *idx)
{
    uint32_t n = p->memo_next;
    if (n == NO_INDEX)
        return pk__err(p->err, PK_ELIMIT, "memo id too large");
    p->memo_next = n + 1;
    if (idx)
        *idx = n;
    if (p->proto >= 4)
        return put1(p, PK_OP_MEMOIZE);
    uint8_t b[5];
    if (n < 256) {
        b[0] = PK_OP_BINPUT;
        b[1] = (uint8_t)n;
        return put(p, b, 2);
    }
    b[0] = PK_OP_LONG_BINPUT;
    pk__st32(b + 1, n);
    return put(p, b, 5);
}

/* Where the index of a content-keyed singleton lives, or NULL for hashed keys.
 */
static uint32_t *memo_small(pickler_t *p, uintptr_t key, unsigned *bit)
{
    switch (KEY_TAG(key)) {
    case KEY_STRCHAR:
        *bit = (unsigned)KEY_ARG(key);
        return &p->str_char[KEY_ARG(key)];
    case KEY_BYTECHAR:
        *bit = NCHARS + (unsigned)KEY_ARG(key);
        return &p->byte_char[KEY_ARG(key)];
    case KEY_LATIN1:
        *bit = 2 * NCHARS;
        return &p->latin1;
    case KEY_DTYPE:
        *bit = 2 * NCHARS + 1 + (unsigned)KEY_ARG(key);
        return &p->dtypes[KEY_ARG(key)];
    default:
        return NULL;
    }
}

static uint32_t memo_lookup(pickler_t *p, uintptr_t key)
{
    if (key == KEY_ANON)
        return NO_INDEX;
    unsigned bit;
    uint32_t *s = memo_small(p, key, &bit);
    if (s)
        return (p->small_set[bit / 64] >> (bit % 64)) & 1 ? *s : NO_INDEX;
    memo_ent_t *e = memo_find(p, key);
    return e->key ? e->idx : NO_INDEX;
}

/* memo_put: writes the memoize op and records key (KEY_ANON: not recorded,
 * for temporaries nobody can refer to again). */
static pk_err_t memo_put(pickler_t *p, uintptr_t key)
{
    uint32_t idx;
    pk_err_t rc = put_memoize(p, &idx);
    if (rc != PK_OK || key == KEY_ANON)
        return rc;
    unsigned bit;
    uint32_t *s = memo_small(p, key, &bit);
    if (s) {
        *s = idx;
        p->small_set[bit / 64] |= 1ull << (bit % 64);
        return PK_OK;
    }
    if (memo_full(p)) {
        if ((rc = memo_grow(p)) != PK_OK)
            return rc;
    }
    memo_ent_t *e = memo_slot(p, key);
    assert(e->key == 0);
    e->key = key;
    e->idx = idx;
    p->memo_used++;
    return PK_OK;
}

/* Same as memo_put for a hashed key whose (empty) slot the caller found with
 * memo_find and has not invalidated since; one probe instead of two. */
static inline pk_err_t memo_put_at(pickler_t *p, memo_ent_t *e, uintptr_t key)
{
    if (unlikely(memo_full(p)))
        return memo_put(p, key);
    uint32_t idx;
    pk_err_t rc = put_memoize(p, &idx);
    if (rc != PK_OK)
        return rc;
    e->key = key;
    e->idx = idx;
    p->memo_used++;
    return PK_OK;
}

/* ---- content-keyed names ----------------------------------------------- */

static uint64_t name_hash(enum name_kind kind, const char *a, const char *b)
{
    uint64_t h = 0xcbf29ce484222325ull ^ kind;
    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 0x100000001b3ull;
    if (b) {
        h = (h ^ 0xff) * 0x100000001b3ull;
        for (; *b; b++)
            h = (h ^ (uint8_t)*b) * 0x100000001b3ull;
    }
    return h ? h : 1;
}

static name_ent_t *name_slot(name_ent_t *tab, size_t mask, uint64_t h,
                             enum name_kind kind, const char *a, const char *b)
{
    size_t i = (size_t)h & mask;
    for (;; i = (i + 1) & mask) {
        name_ent_t *e = &tab[i];
        if (e->hash == 0)
            return e;
        if (e->hash == h && e->kind == kind && strcmp(e->module, a) == 0 &&
            (b == NULL ? e->name == NULL
                       : (e->name != NULL && strcmp(e->name, b) == 0)))
            return e;
    }
}

static uint32_t name_lookup(pickler_t *p, enum name_kind kind, const char *a,
                            const char *b)
{
    if (p->names == NULL)
        return NO_INDEX;
    name_ent_t *e =
        name_slot(p->names, p->names_mask, name_hash(kind, a, b), kind, a, b);
    return e->hash ? e->idx : NO_INDEX;
}

/* Writes the memoize op and records the name. */
static pk_err_t name_put(pickler_t *p, enum name_kind kind, const char *a,
                         const char *b)
{
    pk_err_t rc;
    if (p->names == NULL || (p->names_used + 1) * 2 > p->names_mask + 1) {
        size_t ncap = p->names ? (p->names_mask + 1) * 2 : 16;
        name_ent_t *t = pk__calloc(ncap, sizeof(*t));
        if (t == NULL)
            return nomem(p);
        for (size_t i = 0; p->names && i <= p->names_mask; i++) {
            name_ent_t *o = &p->names[i];
            if (o->hash)
                *name_slot(t, ncap - 1, o->hash, o->kind, o->module, o->name) =
                    *o;
        }
        pk__free(p->names);
        p->names = t;
        p->names_mask = ncap - 1;
    }
    uint32_t idx;
    if ((rc = put_memoize(p, &idx)) != PK_OK)
        return rc;
    uint64_t h = name_hash(kind, a, b);
    name_ent_t *e = name_slot(p->names, p->names_mask, h, kind, a, b);
    e->hash = h;
    e->module = a;
    e->name = b;
    e->kind = kind;
    e->idx = idx;
    p->names_used++;
    return PK_OK;
}

/* ---- atoms ------------------------------------------------------------ */

static pk_err_t save_none(pickler_t *p)
{
    opcode_boundary(p);
    return put1(p, PK_OP_NONE);
}

static pk_err_t save_bool(pickler_t *p, int b)
{
    opcode_boundary(p);
    return put1(p, b ? PK_OP_NEWTRUE : PK_OP_NEWFALSE);
}

/* Writes the opcode of int x at q (at most 10 bytes); returns its length.
 * As CPython: BININT1, BININT2, BININT, else LONG1 with the minimal two's
 * complement (at least 5 bytes here). */
static size_t put_int_op(uint8_t *q, int64_t x)
{
    if ((uint64_t)x < 256) {
        q[0] = PK_OP_BININT1;
        q[1] = (uint8_t)x;
        return 2;
    }
    if ((uint64_t)x < 65536) {
        q[0] = PK_OP_BININT2;
        q[1] = (uint8_t)x;
        q[2] = (uint8_t)(x >> 8);
        return 3;
    }
    if (x >= INT32_MIN && x <= INT32_MAX) {
        q[0] = PK_OP_BININT;
        pk__st32(q + 1, (uint32_t)x);
        return 5;
    }
    unsigned n = 8;
    while (n > 5) {
        int64_t t = x >> (8 * (n - 1) - 1); /* top byte + next sign bit */
        if (t != 0 && t != -1)
            break;
        n--;
    }
    q[0] = PK_OP_LONG1;
    q[1] = (uint8_t)n;
    pk__st64(q + 2, (uint64_t)x);
    return 2 + n;
}

/* BINFLOAT: 9 bytes at q. */
static size_t put_float_op(uint8_t *q, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    q[0] = PK_OP_BINFLOAT;
    pk__st64(q + 1, __builtin_bswap64(u));
    return 9;
}

static pk_err_t save_int(pickler_t *p, int64_t x)
{
    opcode_boundary(p);
    pk_err_t rc = reserve(p, 10);
    if (unlikely(rc != PK_OK))
        return rc;
    p->len += put_int_op(p->data + p->len, x);
    return PK_OK;
}

static pk_err_t save_bigint(pickler_t *p, const uint8_t *b, size_t n)
{
    opcode_boundary(p);
    if (n <= 8) { /* not normalised: take the int64 path */
        uint64_t u = (n && (b[n - 1] & 0x80)) ? UINT64_MAX : 0;
        for (size_t i = 0; i < n; i++) {
            u &= ~((uint64_t)0xff << (8 * i));
            u |= (uint64_t)b[i] << (8 * i);
        }
        return save_int(p, (int64_t)u);
    }
    if (n > UINT32_MAX)
        return pk__err(p->err, PK_EUNSUPPORTED, "int too large to pickle");
    uint8_t h[5];
    size_t hl;
    if (n < 256) {
        h[0] = PK_OP_LONG1;
        h[1] = (uint8_t)n;
        hl = 2;
    } else {
        h[0] = PK_OP_LONG4;
        pk__st32(h + 1, (uint32_t)n);
        hl = 5;
    }
    /* CPython writes LONG payloads inside frames whatever their size. */
    pk_err_t rc = reserve(p, hl + n);
    if (rc != PK_OK)
        return rc;
    memcpy(p->data + p->len, h, hl);
    memcpy(p->data + p->len + hl, b, n);
    p->len += hl + n;
    return PK_OK;
}

static pk_err_t save_float(pickler_t *p, double f)
{
    opcode_boundary(p);
    pk_err_t rc = reserve(p, 9);
    if (unlikely(rc != PK_OK))
        return rc;
    p->len += put_float_op(p->data + p->len, f);
    return PK_OK;
}

/* ---- str and bytes ---------------------------------------------------- */

/* The key of CPython's shared '' and one-character (code point < 256) str
 * objects, or KEY_ANON. */
static inline uintptr_t str_char_key(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    if (n == 0)
        return MAKE_KEY(KEY_STRCHAR, 256);
    if (n == 1 && u[0] < 0x80)
        return MAKE_KEY(KEY_STRCHAR, u[0]);
    if (n == 2 && (u[0] == 0xC2 || u[0] == 0xC3) && (u[1] & 0xC0) == 0x80)
        return MAKE_KEY(KEY_STRCHAR, ((u[0] & 0x1F) << 6) | (u[1] & 0x3F));
    return KEY_ANON;
}

static inline uintptr_t bytes_char_key(const uint8_t *s, size_t n)
{
    if (n == 0)
        return MAKE_KEY(KEY_BYTECHAR, 256);
    if (n == 1)
        return MAKE_KEY(KEY_BYTECHAR, s[0]);
    return KEY_ANON;
}

/* SHORT_BINUNICODE / BINUNICODE / BINUNICODE8 and the UTF-8 payload
 * (write_unicode_binary; lone surrogates are already surrogatepass bytes). */
static pk_err_t write_str(pickler_t *p, const char *s, size_t n)
{
    uint8_t h[9];
    size_t hl;
    if (n <= 0xff && p->proto >= 4) {
        pk_err_t rc = reserve(p, 2 + n);
        if (unlikely(rc != PK_OK))
            return rc;
        uint8_t *q = p->data + p->len;
        q[0] = PK_OP_SHORT_BINUNICODE;
        q[1] = (uint8_t)n;
        memcpy(q + 2, s, n);
        p->len += 2 + n;
        return PK_OK;
    } else if (n <= 0xffffffffu) {
        h[0] = PK_OP_BINUNICODE;
        pk__st32(h + 1, (uint32_t)n);
        hl = 5;
    } else if (p->proto >= 4) {
        h[0] = PK_OP_BINUNICODE8;
        pk__st64(h + 1, (uint64_t)n);
        hl = 9;
    } else {
        return pk__err(p->err, PK_EUNSUPPORTED,
                       "str larger than 4 GiB needs protocol 4 or higher");
    }
    return put_payload(p, h, hl, s, n);
}

/* A str object identified by key (a singleton, a value address, or
 * KEY_ANON for a fresh temporary). */
static pk_err_t save_str(pickler_t *p, const char *s, size_t n, uintptr_t key)
{
    opcode_boundary(p);
    uintptr_t ck = str_char_key(s, n);
    if (ck != KEY_ANON)
        key = ck;
    uint32_t idx = memo_lookup(p, key);
    if (idx != NO_INDEX)
        return put_get(p, idx);
    pk_err_t rc = write_str(p, s, n);
    if (rc != PK_OK)
        return rc;
    return memo_put(p, key);
}

/* SHORT_BINBYTES / BINBYTES / BINBYTES8 (protocol 3+). */
static pk_err_t write_bytes(pickler_t *p, const void *s, size_t n)
{
    uint8_t h[9];
    size_t hl;
    if (n <= 0xff) {
        h[0] = PK_OP_SHORT_BINBYTES;
        h[1] = (uint8_t)n;
        hl = 2;
    } else if (n <= 0xffffffffu) {
        h[0] = PK_OP_BINBYTES;
        pk__st32(h + 1, (uint32_t)n);
        hl = 5;
    } else if (p->proto >= 4) {
        h[0] = PK_OP_BINBYTES8;
        pk__st64(h + 1, (uint64_t)n);
        hl = 9;
    } else {
        return pk__err(p->err, PK_EUNSUPPORTED,
                       "bytes larger than 4 GiB need protocol 4 or higher");
    }
    return put_payload(p, h, hl, s, n);
}

static pk_err_t write_bytearray(pickler_t *p, const void *s, size_t n)
{
    uint8_t h[9];
    h[0] = PK_OP_BYTEARRAY8;
    pk__st64(h + 1, (uint64_t)n);
    return put_payload(p, h, 9, s, n);
}

static pk_err_t save_global(pickler_t *p, const char *module,
                            const char *qualname, unsigned modkind);

/* After the callable and arguments of a REDUCE: memoize obj, or, if saving
 * the arguments memoized it (a cycle through them), drop the fresh copy and
 * fetch the memoized one (save_reduce). */
static pk_err_t finish_reduce(pickler_t *p, uintptr_t key)
{
    uint32_t idx = memo_lookup(p, key);
    if (idx != NO_INDEX) {
        pk_err_t rc = put1(p, PK_OP_POP);
        return rc != PK_OK ? rc : put_get(p, idx);
    }
    return memo_put(p, key);
}

/* Protocol 2 bytes: _codecs.encode(data.decode('latin1'), 'latin1'), or
 * bytes() when empty. */
static pk_err_t save_bytes_p2(pickler_t *p, const uint8_t *s, size_t n,
                              uintptr_t key)
{
    pk_err_t rc;
    if (n == 0) {
        if ((rc = save_global(p, "builtins", "bytes", NAME_MOD_INTERNED)))
            return rc;
        opcode_boundary(p); /* the empty argument tuple */
        if ((rc = put1(p, PK_OP_EMPTY_TUPLE)) || (rc = put1(p, PK_OP_REDUCE)))
            return rc;
        return finish_reduce(p, key);
    }
    if ((rc = save_global(p, "_codecs", "encode", NAME_MOD_OTHER)))
        return rc;
    opcode_boundary(p); /* the argument tuple */
    /* The latin-1 text as a str object. */
    opcode_boundary(p);
    uintptr_t tk = n == 1 ? MAKE_KEY(KEY_STRCHAR, s[0]) : KEY_ANON;
    uint32_t idx = memo_lookup(p, tk);
    if (idx != NO_INDEX) {
        rc = put_get(p, idx);
    } else {
        size_t ulen = n;
        for (size_t i = 0; i < n; i++)
            ulen += s[i] >> 7;
        if (ulen > 0xffffffffu)
            return pk__err(p->err, PK_EUNSUPPORTED,
                           "bytes larger than 4 GiB need protocol 4 or "
                           "higher");
        if ((rc = reserve(p, 5 + ulen)))
            return rc;
        uint8_t *q = p->data + p->len;
        *q++ = PK_OP_BINUNICODE;
        pk__st32(q, (uint32_t)ulen);
        q += 4;
        for (size_t i = 0; i < n; i++) {
            if (s[i] < 0x80) {
                *q++ = s[i];
            } else {
                *q++ = (uint8_t)(0xC0 | (s[i] >> 6));
                *q++ = (uint8_t)(0x80 | (s[i] & 0x3F));
            }
        }
        p->len += 5 + ulen;
        rc = memo_put(p, tk);
    }
    if (rc || (rc = save_str(p, "latin1", 6, MAKE_KEY(KEY_LATIN1, 0))) ||
        (rc = put1(p, PK_OP_TUPLE2)) || (rc = memo_put(p, KEY_ANON)) ||
        (rc = put1(p, PK_OP_REDUCE)))
        return rc;
    return finish_reduce(p, key);
}

/* A bytes object (a value, a singleton or a fresh temporary). */
static pk_err_t save_bytes(pickler_t *p, const void *data, size_t n,
                           uintptr_t key)
{
    opcode_boundary(p);
    uintptr_t ck = bytes_char_key(data, n);
    if (ck != KEY_ANON)
        key = ck;
    uint32_t idx = memo_lookup(p, key);
    if (idx != NO_INDEX)
        return put_get(p, idx);
    if (p->proto < 3)
        return save_bytes_p2(p, data, n, key);
    pk_err_t rc = write_bytes(p, data, n);
    return rc != PK_OK ? rc : memo_put(p, key);
}

/* ---- globals ---------------------------------------------------------- */

/* CPython's fix_imports below protocol 3: Python 3 names to Python 2 names. */
static void fix_imports(const char **module, const char **name)
{
    for (size_t i = 0; i < PK_ARRAY_LEN(PK_COMPAT_REVERSE_NAMES); i++) {
        if (strcmp(PK_COMPAT_REVERSE_NAMES[i][0], *module) == 0 &&
            strcmp(PK_COMPAT_REVERSE_NAMES[i][1], *name) == 0) {
            *module = PK_COMPAT_REVERSE_NAMES[i][2];
            *name = PK_COMPAT_REVERSE_NAMES[i][3];
            return;
        }
    }
    for (size_t i = 0; i < PK_ARRAY_LEN(PK_COMPAT_REVERSE_MODULES); i++) {
        if (strcmp(PK_COMPAT_REVERSE_MODULES[i][0], *module) == 0) {
            *module = PK_COMPAT_REVERSE_MODULES[i][1];
            return;
        }
    }
}

static bool in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], name) == 0)
            return true;
    }
    return false;
}

/* Which of CPython's module-name string objects a global of module.name
 * carries, as save_global finds it (__module__, else whichmodule's
 * sys.modules key).  builtins: static types, exceptions included, and the
 * singletons Ellipsis and NotImplemented share the interned 'builtins'; the
 * builtin functions share builtins.__name__, another object; a heap type
 * (ExceptionGroup) has its own (compat_names.h lists the last two groups).
 * numpy: its static types share the interned 'numpy', everything else
 * numpy.__name__.  Elsewhere all globals of a module share one string, as
 * they do for modules written in Python. */
static unsigned global_modkind(const char *module, const char *name)
{
    static const char *const numpy_types[] = {
        "ndarray", "dtype",      "generic",   "number",     "bool_",
        "int8",    "int16",      "int32",     "int64",      "uint8",
        "uint16",  "uint32",     "uint64",    "float16",    "float32",
        "float64", "longdouble", "complex64", "complex128", "clongdouble",
        "str_",    "bytes_",     "void",      "datetime64", "timedelta64",
        "object_", "matrix",     "ufunc",     "flatiter"};
    if (strchr(name, '.')) /* an attribute, not a module-level global */
        return NAME_MOD_OTHER;
    if (strcmp(module, "builtins") == 0) {
        if (in_list(PK_BUILTINS_BY_MODNAME,
                    PK_ARRAY_LEN(PK_BUILTINS_BY_MODNAME), name))
            return NAME_MOD_OTHER;
        if (in_list(PK_BUILTINS_OWN_MODNAME,
                    PK_ARRAY_LEN(PK_BUILTINS_OWN_MODNAME), name))
            return NAME_MOD_OWN;
        return NAME_MOD_INTERNED;
    }
    if (strcmp(module, "numpy") == 0 && name[0] != '_' &&
        in_list(numpy_types, PK_ARRAY_LEN(numpy_types), name))
        return NAME_MOD_INTERNED;
    return NAME_MOD_OTHER;
}

static int is_ascii(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s >= 0x80)
            return 0;
    }
    return 1;
}

/* GLOBAL module\nname\n (protocols 2 and 3). */
static pk_err_t write_global_op(pickler_t *p, const char *module,
                                const char *name)
{
    if (p->proto < 3) {
        fix_imports(&module, &name);
        if (!is_ascii(module) || !is_ascii(name))
            return pk__err(p->err, PK_EUNSUPPORTED,
                           "global %s.%s: non-ASCII names need protocol 3 "
                           "or higher",
                           module, name);
    }
    size_t ml = strlen(module), nl = strlen(name);
    if (memchr(module, '\n', ml) || memchr(name, '\n', nl))
        return pk__err(p->err, PK_EUNSUPPORTED,
                       "global name with a newline cannot be pickled below "
                       "protocol 4");
    pk_err_t rc = reserve(p, ml + nl + 3);
    if (rc != PK_OK)
        return rc;
    uint8_t *q = p->data + p->len;
    *q++ = PK_OP_GLOBAL;
    memcpy(q, module, ml);
    q[ml] = '\n';
    memcpy(q + ml + 1, name, nl);
    q[ml + 1 + nl] = '\n';
    p->len += ml + nl + 3;
    return PK_OK;
}

static pk_err_t save_modname(pickler_t *p, const char *module,
                             enum name_kind kind)
{
    opcode_boundary(p);
    if (kind == NAME_MOD_OWN) {
        pk_err_t rc = write_str(p, module, strlen(module));
        return rc != PK_OK ? rc : memo_put(p, KEY_ANON);
    }
    uint32_t idx = name_lookup(p, kind, module, NULL);
    if (idx != NO_INDEX)
        return put_get(p, idx);
    pk_err_t rc = write_str(p, module, strlen(module));
    return rc != PK_OK ? rc : name_put(p, kind, module, NULL);
}

/* The class or function module.qualname (save_global).  The strings must
 * live until pk_dumps returns (the name memo points at them). */
static pk_err_t save_global(pickler_t *p, const char *module,
                            const char *qualname, unsigned modkind)
{
    pk_err_t rc;
    opcode_boundary(p);
    uint32_t idx = name_lookup(p, NAME_GLOBAL, module, qualname);
    if (idx != NO_INDEX)
        return put_get(p, idx);
    const char *dot = strrchr(qualname, '.');
    if (p->proto >= 4) {
        size_t ql = strlen(qualname);
        if ((rc = save_modname(p, module, modkind)) ||
            (rc = save_str(p, qualname, ql, KEY_ANON)) ||
            (rc = put1(p, PK_OP_STACK_GLOBAL)))
            return rc;
    } else if (dot != NULL) {
        /* getattr(parent, lastname), the parent saved as a global itself. */
        size_t plen = (size_t)(dot - qualname);
        if (p->nparents == p->parents_cap) {
            size_t ncap = p->parents_cap ? p->parents_cap * 2 : 4;
            char **np = pk__realloc(p->parents, ncap * sizeof(*np));
            if (np == NULL)
                return nomem(p);
            p->parents = np;
            p->parents_cap = ncap;
        }
        char *parent = pk__malloc(plen + 1);
        if (parent == NULL)
            return nomem(p);
        memcpy(parent, qualname, plen);
        parent[plen] = '\0';
        p->parents[p->nparents++] = parent;
        if ((rc = save_global(p, "builtins", "getattr", NAME_MOD_OTHER)))
            return rc;
        opcode_boundary(p);
        if ((rc = save_global(p, module, parent, NAME_MOD_OTHER)) ||
            (rc = save_str(p, dot + 1, strlen(dot + 1), KEY_ANON)) ||
            (rc = put1(p, PK_OP_TUPLE2)) || (rc = memo_put(p, KEY_ANON)) ||
            (rc = put1(p, PK_OP_REDUCE)))
            return rc;
    } else if ((rc = write_global_op(p, module, qualname))) {
        return rc;
    }
    return name_put(p, NAME_GLOBAL, module, qualname);
}

/* ---- containers ------------------------------------------------------- */

static pk_err_t save(pickler_t *p, const pk_value_t *v);

static pk_err_t enter(pickler_t *p, const pk_value_t *v)
{
    if (unlikely(++p->depth > MAX_DEPTH))
        return pk__err(p->err, PK_ELIMIT, "%s nested deeper than %d levels",
                       pk_type_name((pk_type_t)v->type), MAX_DEPTH);
    return PK_OK;
}

/* save() with the common atoms inline: the per-item call of list, dict and
 * tuple loops. */
static inline pk_err_t save_item(pickler_t *p, const pk_value_t *v)
{
    if (v->type == PK_INT) {
        int64_t x = v->u.i;
        size_t len = p->len;
        if (likely(x >= INT32_MIN && x <= INT32_MAX && len + 5 <= p->lim &&
                   len < p->frame_limit)) {
            uint8_t *q = p->data + len;
            if ((uint64_t)x < 256) {
                q[0] = PK_OP_BININT1;
                q[1] = (uint8_t)x;
                p->len = len + 2;
            } else if ((uint64_t)x < 65536) {
                q[0] = PK_OP_BININT2;
                q[1] = (uint8_t)x;
                q[2] = (uint8_t)(x >> 8);
                p->len = len + 3;
            } else {
                q[0] = PK_OP_BININT;
                pk__st32(q + 1, (uint32_t)x);
                p->len = len + 5;
            }
            return PK_OK;
        }
        return save_int(p, x);
    }
    if (v->type == PK_FLOAT)
        return save_float(p, v->u.f);
    return save(p, v);
}

/* The items of a list after EMPTY_LIST (batch_list_exact): one item with
 * APPEND, else MARK ... APPENDS per batch of 1000. */
static pk_err_t batch_list(pickler_t *p, pk_value_t *const *items, size_t n)
{
    pk_err_t rc;
    if (n == 0)
        return PK_OK;
    if (n == 1) {
        if ((rc = save(p, items[0])))
            return rc;
        return put1(p, PK_OP_APPEND);
    }
    size_t i = 0;
    do {
        size_t end = n - i > PK_BATCHSIZE ? i + PK_BATCHSIZE : n;
        if ((rc = put1(p, PK_OP_MARK)))
            return rc;
        for (; i < end; i++) {
            if (unlikely(rc = save_item(p, items[i])))
                return rc;
        }
        if ((rc = put1(p, PK_OP_APPENDS)))
            return rc;
    } while (i < n);
    return PK_OK;
}

static pk_err_t save_dict_items(pickler_t *p, const pk_value_t *v)
{
    const pk_dict_entry_t *ents = v->u.dict.entries;
    size_t n = v->u.dict.len;
    pk_err_t rc;
    if (n == 1) {
        if ((rc = save(p, ents[0].key)) || (rc = save(p, ents[0].value)))
            return rc;
        return put1(p, PK_OP_SETITEM);
    }
    /* batch_dict_exact: a full last batch is followed by an empty one. */
    size_t i = 0, batch;
    do {
        if ((rc = put1(p, PK_OP_MARK)))
            return rc;
        for (batch = 0; batch < PK_BATCHSIZE && i < n; batch++, i++) {
            if (unlikely((rc = save_item(p, ents[i].key)) ||
                         (rc = save_item(p, ents[i].value))))
                return rc;
        }
        if ((rc = put1(p, PK_OP_SETITEMS)))
            return rc;
    } while (batch == PK_BATCHSIZE);
    return PK_OK;
}

/* The items a reduced object takes after its call, from a dict (SETITEMS)
 * or a list (APPENDS), as CPython's batch_dict / batch_list write them for
 * a type that is not exactly dict or list: MARK ... per batch of 1000, and
 * a lone last item with SETITEM / APPEND. */
static pk_err_t batch_reduced_items(pickler_t *p, const pk_value_t *c)
{
    int dict = c->type == PK_DICT;
    size_t n = dict ? c->u.dict.len : c->u.seq.len, i = 0;
    pk_err_t rc;

    if (!dict && c->type != PK_LIST)
        return pk__err(p->err, PK_EINVAL, "object items are a %s",
                       pk_type_name((pk_type_t)c->type));
    while (i < n) {
        size_t end = n - i > PK_BATCHSIZE ? i + PK_BATCHSIZE : n;
        int many = end - i > 1;
        if (many && (rc = put1(p, PK_OP_MARK)))
            return rc;
        for (; i < end; i++) {
            if (dict && (rc = save_item(p, c->u.dict.entries[i].key)))
                return rc;
            if ((rc = save_item(p, dict ? c->u.dict.entries[i].value
                                        : c->u.seq.items[i])))
                return rc;
        }
        if ((rc = put1(p, dict ? (many ? PK_OP_SETITEMS : PK_OP_SETITEM)
                               : (many ? PK_OP_APPENDS : PK_OP_APPEND))))
            return rc;
    }
    return PK_OK;
}

static pk_err_t save_set(pickler_t *p, const pk_value_t *v, memo_ent_t *e)
{
    pk_value_t *const *items = v->u.seq.items;
    size_t n = v->u.seq.len;
    pk_err_t rc;
    if ((rc = enter(p, v)))
        return rc;
    if (p->proto < 4) {
        /* (set, ([items],)) REDUCE */
        const char *name = v->type == PK_SET ? "set" : "frozenset";
        if ((rc = save_global(p, "builtins", name, NAME_MOD_INTERNED)))
            return rc;
        opcode_boundary(p); /* the argument tuple */
        opcode_boundary(p); /* the list */
        if ((rc = put1(p, PK_OP_EMPTY_LIST)) || (rc = memo_put(p, KEY_ANON)) ||
            (rc = batch_list(p, items, n)) || (rc = put1(p, PK_OP_TUPLE1)) ||
            (rc = memo_put(p, KEY_ANON)) || (rc = put1(p, PK_OP_REDUCE)) ||
            (rc = finish_reduce(p, (uintptr_t)v)))
            return rc;
    } else if (v->type == PK_SET) {
        if ((rc = put1(p, PK_OP_EMPTY_SET)) ||
            (rc = memo_put_at(p, e, (uintptr_t)v)))
            return rc;
        if (n > 0) {
            size_t i = 0, batch;
            do {
                if ((rc = put1(p, PK_OP_MARK)))
                    return rc;
                for (batch = 0; batch < PK_BATCHSIZE && i < n; batch++, i++) {
                    if ((rc = save(p, items[i])))
                        return rc;
                }
                if ((rc = put1(p, PK_OP_ADDITEMS)))
                    return rc;
            } while (batch == PK_BATCHSIZE);
        }
    } else {
        if ((rc = put1(p, PK_OP_MARK)))
            return rc;
        for (size_t i = 0; i < n; i++) {
            if ((rc = save(p, items[i])))
                return rc;
        }
        uint32_t idx = memo_lookup(p, (uintptr_t)v);
        if (idx != NO_INDEX) {
            if ((rc = put1(p, PK_OP_POP_MARK)))
                return rc;
            rc = put_get(p, idx);
        } else if ((rc = put1(p, PK_OP_FROZENSET)) == PK_OK) {
            rc = memo_put(p, (uintptr_t)v);
        }
        if (rc)
            return rc;
    }
    p->depth--;
    return PK_OK;
}

static pk_err_t save_tuple(pickler_t *p, const pk_value_t *v)
{
    static const uint8_t tuple_op[4] = {PK_OP_EMPTY_TUPLE, PK_OP_TUPLE1,
                                        PK_OP_TUPLE2, PK_OP_TUPLE3};
    pk_value_t *const *items = v->u.seq.items;
    size_t n = v->u.seq.len;
    pk_err_t rc;
    if (n == 0)
        return put1(p, PK_OP_EMPTY_TUPLE);
    if ((rc = enter(p, v)))
        return rc;
    if (n > 3 && (rc = put1(p, PK_OP_MARK)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (unlikely(rc = save_item(p, items[i])))
            return rc;
    }
    /* If saving the items memoized the tuple, it is recursive: drop what
     * was pushed and fetch the memoized one. */
    memo_ent_t *e = memo_find(p, (uintptr_t)v);
    if (unlikely(e->key != 0)) {
        if (n <= 3) {
            for (size_t i = 0; i < n; i++) {
                if ((rc = put1(p, PK_OP_POP)))
                    return rc;
            }
        } else if ((rc = put1(p, PK_OP_POP_MARK))) {
            return rc;
        }
        rc = put_get(p, e->idx);
    } else if ((rc = put1(p, n <= 3 ? tuple_op[n] : PK_OP_TUPLE)) == PK_OK) {
        rc = memo_put_at(p, e, (uintptr_t)v);
    }
    p->depth--;
    return rc;
}

/* ---- numpy ------------------------------------------------------------ */

/* What numpy 1.24's dtype.__reduce__ says about a dtype. */
typedef struct dtype_info {
    char typestr[16]; /* first argument of numpy.dtype(): "f8", "U3" */
    char byteorder;   /* '<', '>' or '|' as numpy normalises it */
    int64_t elsize, alignment, flags; /* state fields 5..7 */
    int singleton;                    /* index into pickler_t.dtypes, or -1 */
} dtype_info_t;

static pk_err_t dtype_info(pickler_t *p, const pk_dtype_t *dt, dtype_info_t *di)
{
    static const char kinds[] = "biufc";
    uint32_t sz = dt->itemsize;
    int ok;
    switch (dt->kind) {
    case 'b':
        ok = sz == 1;
        break;
    case 'i':
    case 'u':
        ok = sz == 1 || sz == 2 || sz == 4 || sz == 8;
        break;
    case 'f':
        ok = sz == 2 || sz == 4 || sz == 8 || sz == 16;
        break;
    case 'c':
        ok = sz == 8 || sz == 16 || sz == 32;
        break;
    case 'U':
        ok = sz % 4 == 0;
        break;
    case 'S':
    case 'V':
        ok = 1;
        break;
    default:
        ok = 0;
    }
    if (!ok ||
        (dt->byteorder != '<' && dt->byteorder != '>' && dt->byteorder != '|'))
        return pk__err(p->err, PK_EUNSUPPORTED,
                       "numpy dtype kind '%c' size %u cannot be pickled",
                       dt->kind, (unsigned)sz);
    uint32_t n = dt->kind == 'U' ? sz / 4 : sz;
    snprintf(di->typestr, sizeof(di->typestr), "%c%u", dt->kind, (unsigned)n);
    di->elsize = di->alignment = -1;
    di->flags = 0;
    di->singleton = -1;
    const char *k = strchr(kinds, dt->kind);
    if (k != NULL) {
        /* Numeric: one-byte types have no byte order; native-order ones are
         * numpy's builtin singletons, shared by every array. */
        di->byteorder = sz == 1 ? '|' : (dt->byteorder == '>' ? '>' : '<');
        if (di->byteorder != '>')
            di->singleton = (int)((k - kinds) * 17 + sz);
    } else if (dt->kind == 'U') {
        di->byteorder = dt->byteorder == '>' ? '>' : '<';
        di->elsize = sz;
        di->alignment = 4;
        di->flags = 8;
    } else {
        di->byteorder = '|';
        di->elsize = sz;
        di->alignment = 1;
    }
    return PK_OK;
}

/* numpy.dtype(typestr, False, True) REDUCE, then BUILD with the state
 * (3, byteorder, None, None, None, elsize, alignment, flags).  own_key
 * identifies a dtype that is not a builtin singleton. */
static pk_err_t save_dtype(pickler_t *p, const pk_dtype_t *dt,
                           uintptr_t own_key)
{
    dtype_info_t di;
    pk_err_t rc;
    opcode_boundary(p);
    if ((rc = dtype_info(p, dt, &di)))
        return rc;
    uintptr_t key =
        di.singleton >= 0 ? MAKE_KEY(KEY_DTYPE, di.singleton) : own_key;
    uint32_t idx = memo_lookup(p, key);
    if (idx != NO_INDEX)
        return put_get(p, idx);
    char bo[2] = {di.byteorder, 0};
    if ((rc = save_global(p, "numpy", "dtype", NAME_MOD_INTERNED)))
        return rc;
    opcode_boundary(p);
    if ((rc = save_str(p, di.typestr, strlen(di.typestr), KEY_ANON)) ||
        (rc = save_bool(p, 0)) || (rc = save_bool(p, 1)) ||
        (rc = put1(p, PK_OP_TUPLE3)) || (rc = memo_put(p, KEY_ANON)) ||
        (rc = put1(p, PK_OP_REDUCE)) || (rc = finish_reduce(p, key)))
        return rc;
    opcode_boundary(p);
    if ((rc = put1(p, PK_OP_MARK)) || (rc = save_int(p, 3)) ||
        (rc = save_str(p, bo, 1, KEY_ANON)) || (rc = save_none(p)) ||
        (rc = save_none(p)) || (rc = save_none(p)) ||
        (rc = save_int(p, di.elsize)) || (rc = save_int(p, di.alignment)) ||
        (rc = save_int(p, di.flags)) || (rc = put1(p, PK_OP_TUPLE)) ||
        (rc = memo_put(p, KEY_ANON)))
        return rc;
    return put1(p, PK_OP_BUILD);
}

/* A fresh tuple of ints (an array's shape). */
static pk_err_t save_shape(pickler_t *p, const int64_t *shape, int ndim)
{
    static const uint8_t tuple_op[4] = {PK_OP_EMPTY_TUPLE, PK_OP_TUPLE1,
                                        PK_OP_TUPLE2, PK_OP_TUPLE3};
    pk_err_t rc;
    opcode_boundary(p);
    if (ndim == 0)
        return put1(p, PK_OP_EMPTY_TUPLE);
    if (ndim > 3 && (rc = put1(p, PK_OP_MARK)))
        return rc;
    for (int i = 0; i < ndim; i++) {
        if ((rc = save_int(p, shape[i])))
            return rc;
    }
    if ((rc = put1(p, ndim <= 3 ? tuple_op[ndim] : PK_OP_TUPLE)))
        return rc;
    return memo_put(p, KEY_ANON);
}

/* Asks opts->buffer_cb where a protocol 5 buffer goes: 1 out of band, 0 in
 * band, or an error. */
static pk_err_t ask_buffer_cb(pickler_t *p, const void *data, size_t len,
                              int readonly, int *oob)
{
    *oob = 0;
    if (p->opts->buffer_cb == NULL)
        return PK_OK;
    int r = p->opts->buffer_cb(p->opts->buffer_ctx, data, len, readonly);
    if (r < 0)
        return pk__err(p->err, PK_ECANCELED, "buffer callback canceled");
    *oob = r > 0;
    return PK_OK;
}

/* A pickle.PickleBuffer at protocol 5 (save_picklebuffer): out of band it
 * is NEXT_BUFFER [READONLY_BUFFER] and not memoized; in band it is bytes
 * (read-only) or a bytearray, memoized under key. */
static pk_err_t save_picklebuffer(pickler_t *p, const void *data, size_t len,
                                  int readonly, uintptr_t key)
{
    int oob;
    pk_err_t rc = ask_buffer_cb(p, data, len, readonly, &oob);
    if (rc != PK_OK)
        return rc;
    if (oob) {
        if ((rc = put1(p, PK_OP_NEXT_BUFFER)))
            return rc;
        return readonly ? put1(p, PK_OP_READONLY_BUFFER) : PK_OK;
    }
    rc = readonly ? write_bytes(p, data, len) : write_bytearray(p, data, len);
    return rc != PK_OK ? rc : memo_put(p, key);
}

/* numpy's ndarray.__reduce_ex__ (1.24): protocol 5 with a non-empty item
 * size writes _frombuffer(PickleBuffer(data), dtype, shape, order); lower
 * protocols write _reconstruct(ndarray, (0,), b'b') and BUILD with
 * (1, shape, dtype, is_fortran, data bytes).  The model's arrays are always
 * contiguous, so numpy's non-contiguous fallback is never needed. */
static pk_err_t save_ndarray(pickler_t *p, const pk_value_t *v)
{
    const pk_ndarray_t *nd = v->u.nd;
    uintptr_t dkey = (uintptr_t)v | 4; /* the array's own dtype object */
    pk_err_t rc;
    if (v->flags & PK_VF_NPSCALAR) {
        /* multiarray.scalar(dtype, raw bytes) */
        if ((rc = save_global(p, "numpy.core.multiarray", "scalar",
                              NAME_MOD_OTHER)))
            return rc;
        opcode_boundary(p);
        if ((rc = save_dtype(p, &nd->dtype, dkey)) ||
            (rc = save_bytes(p, nd->data, nd->dtype.itemsize, KEY_ANON)) ||
            (rc = put1(p, PK_OP_TUPLE2)) || (rc = memo_put(p, KEY_ANON)) ||
            (rc = put1(p, PK_OP_REDUCE)))
            return rc;
        return finish_reduce(p, (uintptr_t)v);
    }
    /* numpy's C and F contiguity: an array with fewer than two dimensions
     * longer than 1, or no elements, is both; is_fortran means F only. */
    int longdims = 0, empty = 0;
    for (int i = 0; i < nd->ndim; i++) {
        longdims += nd->shape[i] > 1;
        empty |= nd->shape[i] == 0;
    }
    int fortran = (v->flags & PK_VF_FORTRAN) && longdims >= 2 && !empty;
    int readonly = (v->flags & PK_VF_READONLY) != 0;
    if (p->proto >= 5 && nd->dtype.itemsize > 0) {
        if ((rc = save_global(p, "numpy.core.numeric", "_frombuffer",
                              NAME_MOD_OTHER)))
            return rc;
        opcode_boundary(p);
        opcode_boundary(p); /* the PickleBuffer */
        if ((rc = put1(p, PK_OP_MARK)) ||
            (rc = save_picklebuffer(p, nd->data, nd->nbytes, readonly,
                                    KEY_ANON)) ||
            (rc = save_dtype(p, &nd->dtype, dkey)) ||
            (rc = save_shape(p, nd->shape, nd->ndim)) ||
            (rc = save_str(p, fortran ? "F" : "C", 1, KEY_ANON)) ||
            (rc = put1(p, PK_OP_TUPLE)) || (rc = memo_put(p, KEY_ANON)) ||
            (rc = put1(p, PK_OP_REDUCE)))
            return rc;
        return finish_reduce(p, (uintptr_t)v);
    }
    if ((rc = save_global(p, "numpy.core.multiarray", "_reconstruct",
                          NAME_MOD_OTHER)))
        return rc;
    opcode_boundary(p);
    if ((rc = save_global(p, "numpy", "ndarray", NAME_MOD_INTERNED)))
        return rc;
    opcode_boundary(p);
    if ((rc = save_int(p, 0)) || (rc = put1(p, PK_OP_TUPLE1)) ||
        (rc = memo_put(p, KEY_ANON)) || (rc = save_bytes(p, "b", 1, 0)) ||
        (rc = put1(p, PK_OP_TUPLE3)) || (rc = memo_put(p, KEY_ANON)) ||
        (rc = put1(p, PK_OP_REDUCE)) || (rc = finish_reduce(p, (uintptr_t)v)))
        return rc;
    opcode_boundary(p);
    if ((rc = put1(p, PK_OP_MARK)) || (rc = save_int(p, 1)) ||
        (rc = save_shape(p, nd->shape, nd->ndim)) ||
        (rc = save_dtype(p, &nd->dtype, dkey)) ||
        (rc = save_bool(p, fortran)) ||
        (rc = save_bytes(p, nd->data, nd->nbytes, KEY_ANON)) ||
        (rc = put1(p, PK_OP_TUPLE)) || (rc = memo_put(p, KEY_ANON)))
        return rc;
    return put1(p, PK_OP_BUILD);
}

/* ---- dispatch --------------------------------------------------------- */

static pk_err_t unsupported(pickler_t *p, const pk_value_t *v, int proto)
{
    return pk__err(p->err, PK_EUNSUPPORTED,
                   "%s cannot be pickled with protocol %d (needs %d)",
                   pk_type_name((pk_type_t)v->type), p->proto, proto);
}

static pk_err_t save(pickler_t *p, const pk_value_t *v)
{
    pk_err_t rc;
    memo_ent_t *e;

    opcode_boundary(p);
    switch ((pk_type_t)v->type) {
    /* Atoms are never memoized. */
    case PK_NONE:
        return put1(p, PK_OP_NONE);
    case PK_BOOL:
        return put1(p, v->u.b ? PK_OP_NEWTRUE : PK_OP_NEWFALSE);
    case PK_INT:
        return save_int(p, v->u.i);
    case PK_BIGINT:
        return save_bigint(p, v->u.big.bytes, v->u.big.len);
    case PK_FLOAT:
        return save_float(p, v->u.f);
    case PK_STR: {
        const char *s = v->u.str.ptr;
        size_t n = v->u.str.len;
        if (unlikely(n <= 2) && str_char_key(s, n) != KEY_ANON)
            return save_str(p, s, n, KEY_ANON);
        e = memo_find(p, (uintptr_t)v);
        if (e->key != 0)
            return put_get(p, e->idx);
        if ((rc = write_str(p, s, n)))
            return rc;
        return memo_put_at(p, e, (uintptr_t)v);
    }
    case PK_BYTES:
        return save_bytes(p, v->u.str.ptr, v->u.str.len, (uintptr_t)v);
    case PK_TUPLE:
        e = memo_find(p, (uintptr_t)v);
        if (e->key != 0)
            return put_get(p, e->idx);
        return save_tuple(p, v);
    case PK_LIST:
        e = memo_find(p, (uintptr_t)v);
        if (e->key != 0)
            return put_get(p, e->idx);
        if ((rc = put1(p, PK_OP_EMPTY_LIST)) ||
            (rc = memo_put_at(p, e, (uintptr_t)v)))
            return rc;
        if (v->u.seq.len == 0)
            return PK_OK;
        if ((rc = enter(p, v)) ||
            (rc = batch_list(p, v->u.seq.items, v->u.seq.len)))
            return rc;
        p->depth--;
        return PK_OK;
    case PK_DICT:
        e = memo_find(p, (uintptr_t)v);
        if (e->key != 0)
            return put_get(p, e->idx);
        if ((rc = put1(p, PK_OP_EMPTY_DICT)) ||
            (rc = memo_put_at(p, e, (uintptr_t)v)))
            return rc;
        if (v->u.dict.len == 0)
            return PK_OK;
        if ((rc = enter(p, v)) || (rc = save_dict_items(p, v)))
            return rc;
        p->depth--;
        return PK_OK;
    case PK_SET:
    case PK_FROZENSET:
        e = memo_find(p, (uintptr_t)v);
        if (e->key != 0)
            return put_get(p, e->idx);
        return save_set(p, v, e);
    default:
        break;
    }

    /* The rest are memoized objects whose encodings may recurse. */
    uint32_t idx = memo_lookup(p, (uintptr_t)v);
    if (idx != NO_INDEX)
        return put_get(p, idx);
    switch ((pk_type_t)v->type) {
    case PK_COMPLEX:
        /* copyreg's pickle_complex: complex(re, im) */
        if ((rc = save_global(p, "builtins", "complex", NAME_MOD_INTERNED)))
            return rc;
        opcode_boundary(p);
        if ((rc = save_float(p, v->u.c.re)) ||
            (rc = save_float(p, v->u.c.im)) || (rc = put1(p, PK_OP_TUPLE2)) ||
            (rc = memo_put(p, KEY_ANON)) || (rc = put1(p, PK_OP_REDUCE)))
            return rc;
        return finish_reduce(p, (uintptr_t)v);
    case PK_BYTEARRAY: {
        const void *s = v->u.str.ptr;
        size_t n = v->u.str.len;
        if (p->proto >= 5) {
            if ((rc = write_bytearray(p, s, n)))
                return rc;
            return memo_put(p, (uintptr_t)v);
        }
        /* bytearray() or bytearray(bytes) REDUCE */
        if ((rc = save_global(p, "builtins", "bytearray", NAME_MOD_INTERNED)))
            return rc;
        opcode_boundary(p);
        if (n == 0) {
            rc = put1(p, PK_OP_EMPTY_TUPLE);
        } else if ((rc = save_bytes(p, s, n, KEY_ANON)) == PK_OK &&
                   (rc = put1(p, PK_OP_TUPLE1)) == PK_OK) {
            rc = memo_put(p, KEY_ANON);
        }
        if (rc || (rc = put1(p, PK_OP_REDUCE)))
            return rc;
        return finish_reduce(p, (uintptr_t)v);
    }
    case PK_GLOBAL: {
        const char *m = v->u.global.module, *n = v->u.global.name;
        return save_global(p, m, n, global_modkind(m, n));
    }
    case PK_PICKLEBUFFER:
        if (p->proto < 5)
            return unsupported(p, v, 5);
        return save_picklebuffer(p, v->u.str.ptr, v->u.str.len,
                                 (v->flags & PK_VF_READONLY) != 0,
                                 (uintptr_t)v);
    case PK_NDARRAY:
        return save_ndarray(p, v);
    case PK_DTYPE:
        return save_dtype(p, v->u.dtype, (uintptr_t)v);
    case PK_OBJECT:
        /* save_reduce: callable, args, REDUCE (or NEWOBJ), memoize; then the
         * items (OrderedDict, deque), then BUILD state. */
        if ((rc = save(p, v->u.obj.callable)) ||
            (rc = save(p, v->u.obj.args)) ||
            (rc = put1(p, (v->flags & PK_VF_NEWOBJ) ? PK_OP_NEWOBJ
                                                    : PK_OP_REDUCE)) ||
            (rc = finish_reduce(p, (uintptr_t)v)))
            return rc;
        if (v->u.obj.items != NULL &&
            (rc = batch_reduced_items(p, v->u.obj.items)))
            return rc;
        if (v->u.obj.state == NULL)
            return PK_OK;
        if ((rc = save(p, v->u.obj.state)))
            return rc;
        return put1(p, PK_OP_BUILD);
    default:
        return pk__err(p->err, PK_EINVAL, "value of unknown type %d",
                       (int)v->type);
    }
}

/* Sizes the memo for a root container's items, most of which are usually
 * memoized (strings, tuples), sparing the rehashes of growing from small. */
static pk_err_t memo_presize(pickler_t *p, const pk_value_t *v)
{
    size_t n;
    switch ((pk_type_t)v->type) {
    case PK_LIST:
    case PK_TUPLE:
    case PK_SET:
    case PK_FROZENSET:
        n = v->u.seq.len;
        break;
    case PK_DICT:
        n = v->u.dict.len;
        break;
    default:
        return PK_OK;
    }
    if (n < 1024 || n > SIZE_MAX / 4)
        return PK_OK;
    size_t cap = 64;
    while (cap / 3 * 2 < n + 1)
        cap *= 2;
    return memo_grow_to(p, cap);
}

/* ---- public ----------------------------------------------------------- */

void pk_dump_opts_init(pk_dump_opts_t *opts)
{
    opts->protocol = PK_DEFAULT_PROTOCOL;
    opts->buffer_cb = NULL;
    opts->buffer_ctx = NULL;
}

void pk_buf_free(pk_buf_t *b)
{
    if (b == NULL)
        return;
    /* A big output buffer goes to the block cache for the next pk_dumps:
     * reusing faulted-in memory is most of the speed of a dumps loop. */
    if (b->cap >= CACHED_BUF)
        pk__cache_put(b->data, b->cap);
    else
        pk__free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* The whole pickle of an atom (None, bool, int64, float), without the
 * pickler's set-up: the pool's one-item pickles are mostly these.  The same
 * bytes as the general path: the same opcode helpers, then the framing rule
 * of commit_frame (a FRAME only around 4 bytes or more).  Returns 1 when
 * done (*rc set), 0 when v is not an atom. */
static int dumps_atom(const pk_value_t *v, int proto, pk_buf_t *out,
                      pk_error_t *err, pk_err_t *rc)
{
    uint8_t body[16];
    size_t n;
    switch ((pk_type_t)v->type) {
    case PK_NONE:
        body[0] = PK_OP_NONE;
        n = 1;
        break;
    case PK_BOOL:
        body[0] = v->u.b ? PK_OP_NEWTRUE : PK_OP_NEWFALSE;
        n = 1;
        break;
    case PK_INT:
        n = put_int_op(body, v->u.i);
        break;
    case PK_FLOAT:
        n = put_float_op(body, v->u.f);
        break;
    default:
        return 0;
    }
    body[n++] = PK_OP_STOP;
    int frame = proto >= 4 && n >= FRAME_SIZE_MIN;
    size_t need = 2 + (frame ? FRAME_HEADER_SIZE : 0) + n;
    if (out->cap - out->len < need &&
        buf_grow(&out->data, &out->cap, out->len, out->len + need) != 0) {
        *rc = pk__err(err, PK_ENOMEM, "out of memory");
        return 1;
    }
    uint8_t *q = out->data + out->len;
    q[0] = PK_OP_PROTO;
    q[1] = (uint8_t)proto;
    q += 2;
    if (frame) {
        q[0] = PK_OP_FRAME;
        pk__st64(q + 1, (uint64_t)n);
        q += FRAME_HEADER_SIZE;
    }
    memcpy(q, body, n);
    out->len += need;
    *rc = PK_OK;
    return 1;
}

pk_err_t pk_dumps(const pk_value_t *v, const pk_dump_opts_t *opts,
                  pk_buf_t *out, pk_error_t *err)
{
    pk_dump_opts_t defaults;
    if (opts == NULL) {
        pk_dump_opts_init(&defaults);
        opts = &defaults;
    }
    if (v == NULL || out == NULL)
        return pk__err(err, PK_EINVAL, "pk_dumps: NULL value or buffer");
    if (opts->protocol < 2 || opts->protocol > PK_HIGHEST_PROTOCOL)
        return pk__err(err, PK_EINVAL,
                       "pickle protocol %d is not supported (2..%d)",
                       opts->protocol, PK_HIGHEST_PROTOCOL);
    pk_err_t arc;
    if (dumps_atom(v, opts->protocol, out, err, &arc))
        return arc;

    pickler_t p;
    memset(&p, 0, offsetof(pickler_t, str_char)); /* small_set included */
    p.data = out->data;
    p.len = p.start_len = out->len;
    p.cap = out->cap;
    p.proto = opts->protocol;
    p.frame_start = NO_FRAME;
    p.frame_limit = SIZE_MAX;
    p.opts = opts;
    p.err = err;
    update_lim(&p);

    uint8_t hdr[2] = {PK_OP_PROTO, (uint8_t)p.proto};
    pk_err_t rc = put(&p, hdr, 2);
    if (rc == PK_OK)
        rc = memo_presize(&p, v);
    if (rc == PK_OK) {
        p.framing = p.proto >= 4;
        update_lim(&p);
        rc = save(&p, v);
    }
    if (rc == PK_OK && (rc = put1(&p, PK_OP_STOP)) == PK_OK)
        commit_frame(&p);

    pk__free(p.memo);
    pk__free(p.names);
    for (size_t i = 0; i < p.nparents; i++)
        pk__free(p.parents[i]);
    pk__free(p.parents);
    out->data = p.data;
    out->cap = p.cap;
    out->len = rc == PK_OK ? p.len : p.start_len;
    return rc;
}
