/*
 * value.c - the value model: documents (arenas), value constructors, container
 * mutation and lookup, Python equality and hashing, numpy dtypes and arrays,
 * and a Python-like repr.
 *
 * A document is a chunked bump allocator.  Small allocations come from chunks
 * (64 KiB first, doubling up to 8 MiB) and are never freed one by one.  Any
 * allocation of BIG bytes or more gets its own "block" from pk__malloc, kept
 * on a doubly-linked list so that it can be reallocated or freed on its own
 * and is freed with the doc.  Container arrays (items, dict entries, hash
 * indexes) are always allocated with exactly cap * elemsize bytes, so whether
 * an array is a block follows from its size alone: arrays below BIG grow by
 * copying inside the arena (the waste is bounded by BIG per container), arrays
 * at BIG or more grow with pk__realloc in place.
 *
 * Dicts, sets and frozensets keep items in insertion order plus an
 * open-addressing index with linear probing: slot s holds the pair
 * (entry index + 1, 32-bit hash), 0 meaning empty.  There is no deletion.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "codec/value_int.h"
#include "core/common.h"

#define BIG 8192 /* own-block threshold; never changes */
#define CHUNK_FIRST (64u * 1024)
#define CHUNK_MAX (8u * 1024 * 1024)
/* pk_value_t.reserved bit: a tuple whose hash is cached in seq.index_cap. */
#define TUPLE_HASHED 0x1
#define MAX_DEPTH 1000           /* recursion guard for equal/hash/repr */
#define MAX_TABLE_LEN (1u << 31) /* dict/set entries (index is uint32) */

/* Work budgets: a graph that shares one tuple many times ((t, t) nested n
 * deep) makes hashing and comparing exponential in n, as in CPython.  The
 * budgets turn that into an error (hash) or an identity comparison (equal)
 * instead of a hang; no realistic value comes near them. */
#define HASH_BUDGET (1ull << 26)
#define EQUAL_BUDGET (1ull << 28)

typedef struct block {
    struct block *prev, *next;
    void *raw;   /* what pk__malloc returned (differs for aligned blocks) */
    size_t size; /* usable bytes after the header */
} block_t;

typedef struct chunk {
    struct chunk *next;
    size_t size;
} chunk_t;

typedef struct on_free {
    void (*fn)(void *arg);
    void *arg;
} on_free_t;

struct pk_doc {
    char *cur, *end; /* free part of the current chunk */
    chunk_t *chunks;
    size_t chunk_size; /* size of the next chunk */
    block_t blocks;    /* sentinel of the circular list of blocks */
    size_t held;
    on_free_t *cbs;
    size_t ncbs, cbcap;
    /* Where ndarray data of at least array_min bytes goes (value_int.h). */
    pk__array_alloc_fn array_alloc;
    void *array_ctx;
    size_t array_min;
};

_Static_assert(sizeof(block_t) % 16 == 0, "block data alignment");
_Static_assert(sizeof(chunk_t) % 16 == 0, "chunk data alignment");
/* Sets use u.seq and dicts u.dict; the table code reads len, cap, index and
 * index_cap through u.dict for both. */
_Static_assert(
    offsetof(pk_value_t, u.seq.items) == offsetof(pk_value_t, u.dict.entries) &&
        offsetof(pk_value_t, u.seq.len) == offsetof(pk_value_t, u.dict.len) &&
        offsetof(pk_value_t, u.seq.cap) == offsetof(pk_value_t, u.dict.cap) &&
        offsetof(pk_value_t, u.seq.index) ==
            offsetof(pk_value_t, u.dict.index) &&
        offsetof(pk_value_t, u.seq.index_cap) ==
            offsetof(pk_value_t, u.dict.index_cap),
    "seq and dict table fields must overlap");

static pk_value_t none_value = {.type = PK_NONE};
static pk_value_t false_value = {.type = PK_BOOL, .u.b = 0};
static pk_value_t true_value = {.type = PK_BOOL, .u.b = 1};

/* ---- arena ------------------------------------------------------------ */

pk_err_t pk_doc_new(pk_doc_t **docp)
{
    pk_doc_t *doc = pk__malloc(sizeof *doc);
    if (doc == NULL)
        return PK_ENOMEM;
    memset(doc, 0, sizeof *doc);
    doc->chunk_size = CHUNK_FIRST;
    doc->blocks.prev = doc->blocks.next = &doc->blocks;
    doc->held = sizeof *doc;
    *docp = doc;
    return PK_OK;
}

void pk_doc_free(pk_doc_t **docp)
{
    if (docp == NULL || *docp == NULL)
        return;
    pk_doc_t *doc = *docp;
    *docp = NULL;
    /* Callbacks first: they may still look at values that borrow memory. */
    for (size_t i = doc->ncbs; i-- > 0;)
        doc->cbs[i].fn(doc->cbs[i].arg);
    pk__free(doc->cbs);
    for (block_t *b = doc->blocks.next, *next; b != &doc->blocks; b = next) {
        next = b->next;
        pk__free(b->raw);
    }
    /* Chunks go back to the allocator's block cache: the next doc reuses
     * memory that is already faulted in (alloc.c). */
    for (chunk_t *c = doc->chunks, *next; c != NULL; c = next) {
        next = c->next;
        pk__cache_put(c, sizeof(chunk_t) + c->size);
    }
    pk__free(doc);
}

void pk__doc_set_array_alloc(pk_doc_t *doc, pk__array_alloc_fn fn, void *ctx,
                             size_t min_bytes)
{
    doc->array_alloc = fn;
    doc->array_ctx = ctx;
    doc->array_min = min_bytes;
}

pk_err_t pk_doc_on_free(pk_doc_t *doc, void (*fn)(void *arg), void *arg)
{
    assert(fn != NULL);
    if (doc->ncbs == doc->cbcap) {
        size_t ncap = doc->cbcap ? doc->cbcap * 2 : 4;
        on_free_t *n = pk__realloc(doc->cbs, ncap * sizeof *n);
        if (n == NULL)
            return PK_ENOMEM;
        doc->held += (ncap - doc->cbcap) * sizeof *n;
        doc->cbs = n;
        doc->cbcap = ncap;
    }
    doc->cbs[doc->ncbs].fn = fn;
    doc->cbs[doc->ncbs].arg = arg;
    doc->ncbs++;
    return PK_OK;
}

size_t pk_doc_size(const pk_doc_t *doc)
{
    return doc->held;
}

static void link_block(pk_doc_t *doc, block_t *b)
{
    b->prev = &doc->blocks;
    b->next = doc->blocks.next;
    b->next->prev = b;
    doc->blocks.next = b;
}

/* A block whose data is `align`-aligned (align is 16 or 64). */
static void *block_alloc(pk_doc_t *doc, size_t size, size_t align)
{
    size_t slack = align > 16 ? align - 1 : 0;
    if (size > SIZE_MAX - sizeof(block_t) - slack)
        return NULL;
    size_t total = sizeof(block_t) + size + slack;
    char *raw = pk__malloc(total);
    if (raw == NULL)
        return NULL;
    char *data = raw + sizeof(block_t);
    if (slack)
        data = (char *)(((uintptr_t)data + slack) & ~(uintptr_t)slack);
    block_t *b = (block_t *)(data - sizeof(block_t));
    b->raw = raw;
    b->size = size;
    link_block(doc, b);
    doc->held += total;
    pk__advise_huge(raw, total);
    return data;
}

static block_t *block_of(void *data)
{
    return (block_t *)((char *)data - sizeof(block_t));
}

/* Resizes a 16-aligned block; on failure the old block is untouched. */
static void *block_realloc(pk_doc_t *doc, void *data, size_t size)
{
    block_t *b = block_of(data);
    assert(b->raw == (void *)b);
    if (size > SIZE_MAX - sizeof(block_t))
        return NULL;
    size_t old = b->size;
    block_t *n = pk__realloc(b, sizeof(block_t) + size);
    if (n == NULL)
        return NULL;
    n->raw = n;
    n->size = size;
    pk__advise_huge(n, sizeof(block_t) + size);
    n->prev->next = n;
    n->next->prev = n;
    doc->held = doc->held - old + size;
    return n + 1;
}

static void block_free(pk_doc_t *doc, void *data)
{
    block_t *b = block_of(data);
    b->prev->next = b->next;
    b->next->prev = b->prev;
    assert(b->raw == (void *)b);
    doc->held -= sizeof(block_t) + b->size;
    pk__free(b->raw);
}

static __attribute__((noinline)) void *alloc_slow(pk_doc_t *doc, size_t size)
{
    if (size >= BIG)
        return block_alloc(doc, size, 16);
    size = (size + 7) & ~(size_t)7;
    size_t csize = doc->chunk_size, got;
    chunk_t *c = pk__cache_take(sizeof(chunk_t) + csize, &got);
    if (c != NULL) {
        csize = got - sizeof(chunk_t);
        c->size = csize;
    } else {
        c = pk__malloc(sizeof(chunk_t) + csize);
        if (c == NULL)
            return NULL;
        c->size = csize;
    }
    c->next = doc->chunks;
    doc->chunks = c;
    doc->held += sizeof(chunk_t) + csize;
    if (doc->chunk_size < CHUNK_MAX)
        doc->chunk_size *= 2;
    char *p = (char *)(c + 1);
    doc->cur = p + size;
    doc->end = p + csize;
    return p;
}

/* The hot path: a bump of 8-byte-rounded size.  `avail` is a multiple of 8
 * and size < BIG, so the rounding can neither overflow nor overrun.  size is
 * never 0 (an empty doc has cur == end == NULL). */
static inline void *doc_alloc(pk_doc_t *doc, size_t size)
{
    assert(size > 0);
    size_t avail = (size_t)(doc->end - doc->cur);
    if (size <= avail && size < BIG) {
        void *p = doc->cur;
        doc->cur += (size + 7) & ~(size_t)7;
        return p;
    }
    return alloc_slow(doc, size);
}

void *pk_doc_alloc(pk_doc_t *doc, size_t size)
{
    return doc_alloc(doc, size ? size : 1);
}

/* 64-byte aligned storage (ndarray data), for SIMD kernels. */
static void *doc_alloc64(pk_doc_t *doc, size_t size)
{
    if (size < BIG - 56) {
        char *p = doc_alloc(doc, size + 56);
        if (p == NULL)
            return NULL;
        return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    }
    return block_alloc(doc, size, 64);
}

/* Frees an array of `bytes` bytes if it is a block (see the file comment);
 * arena arrays stay until the doc is freed. */
static void array_free(pk_doc_t *doc, void *arr, size_t bytes)
{
    if (arr != NULL && bytes >= BIG)
        block_free(doc, arr);
}

/* Grows the array *arrp of *capp elements of `elem` bytes, holding `len`, to
 * at least `need` elements.  On failure nothing changes. */
static int array_grow(pk_doc_t *doc, void **arrp, size_t len, size_t *capp,
                      size_t elem, size_t need)
{
    size_t cap = *capp;
    size_t ncap = cap < 4 ? 4 : (cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2);
    if (ncap < need)
        ncap = need;
    if (ncap > SIZE_MAX / elem)
        return -1;
    size_t obytes = cap * elem, nbytes = ncap * elem;
    void *p;
    if (obytes >= BIG) {
        p = block_realloc(doc, *arrp, nbytes);
    } else {
        p = doc_alloc(doc, nbytes);
        if (p != NULL && len != 0)
            memcpy(p, *arrp, len * elem);
    }
    if (p == NULL)
        return -1;
    *arrp = p;
    *capp = ncap;
    return 0;
}

/* ---- scalar constructors --------------------------------------------- */

/* Bytes a value of `type` occupies: the header plus the union member its type
 * uses, so an int or float costs 16 bytes rather than sizeof(pk_value_t).
 * This is why value.h says never to copy a pk_value_t by value. */
static inline size_t value_size(pk_type_t type)
{
    const size_t head = offsetof(pk_value_t, u);
    switch (type) {
    case PK_NONE:
    case PK_BOOL:
    case PK_INT:
    case PK_FLOAT:
    case PK_NDARRAY:
    case PK_DTYPE:
        return head + 8;
    case PK_COMPLEX:
    case PK_BIGINT:
    case PK_STR:
    case PK_BYTES:
    case PK_BYTEARRAY:
    case PK_PICKLEBUFFER:
    case PK_GLOBAL:
        return head + 16;
    case PK_OBJECT:
        return head + 32;
    default:
        return sizeof(pk_value_t);
    }
}

/* The `extra` bytes allocated after a value by new_value. */
#define TAIL(v) ((void *)((char *)(v) + value_size((pk_type_t)(v)->type)))

static inline pk_value_t *new_value(pk_doc_t *doc, pk_type_t type, size_t extra)
{
    size_t size = value_size(type);
    if (extra > SIZE_MAX - size - 8)
        return NULL;
    pk_value_t *v = doc_alloc(doc, size + extra);
    if (v != NULL) {
        v->type = (uint8_t)type;
        v->flags = 0;
        v->reserved = 0;
        v->reserved2 = 0;
    }
    return v;
}

pk_value_t *pk_none(void)
{
    return &none_value;
}

pk_value_t *pk_bool(int b)
{
    return b ? &true_value : &false_value;
}

pk_value_t *pk_int(pk_doc_t *doc, int64_t i)
{
    pk_value_t *v = new_value(doc, PK_INT, 0);
    if (v != NULL)
        v->u.i = i;
    return v;
}

/* Length of the minimal two's-complement form of b[0..len): redundant sign
 * extension bytes dropped, one kept where the sign needs it (LONG1's form). */
static size_t big_minimal(const uint8_t *b, size_t len)
{
    while (len > 1) {
        uint8_t top = b[len - 1], below = b[len - 2];
        if ((top == 0x00 && !(below & 0x80)) || (top == 0xff && (below & 0x80)))
            len--;
        else
            break;
    }
    if (len == 1 && b[0] == 0)
        len = 0;
    return len;
}

pk_value_t *pk_bigint(pk_doc_t *doc, const void *le_bytes, size_t len)
{
    const uint8_t *b = le_bytes;
    len = big_minimal(b, len);
    if (len <= 8) {
        uint64_t u = 0;
        for (size_t i = 0; i < len; i++)
            u |= (uint64_t)b[i] << (8 * i);
        if (len > 0 && len < 8 && (b[len - 1] & 0x80))
            u |= ~(uint64_t)0 << (8 * len);
        return pk_int(doc, (int64_t)u);
    }
    pk_value_t *v = new_value(doc, PK_BIGINT, len);
    if (v == NULL)
        return NULL;
    uint8_t *copy = (uint8_t *)TAIL(v);
    memcpy(copy, b, len);
    v->u.big.bytes = copy;
    v->u.big.len = len;
    return v;
}

pk_value_t *pk_float(pk_doc_t *doc, double f)
{
    pk_value_t *v = new_value(doc, PK_FLOAT, 0);
    if (v != NULL)
        v->u.f = f;
    return v;
}

pk_value_t *pk_complex(pk_doc_t *doc, double re, double im)
{
    pk_value_t *v = new_value(doc, PK_COMPLEX, 0);
    if (v != NULL) {
        v->u.c.re = re;
        v->u.c.im = im;
    }
    return v;
}

static pk_value_t *new_bytes(pk_doc_t *doc, pk_type_t type, const void *data,
                             size_t len)
{
    if (len >= SIZE_MAX - sizeof(pk_value_t) - 64)
        return NULL;
    /* Small payloads sit right after the value; binary payloads of a page or
     * more get 64-byte aligned storage of their own, because numpy arrays
     * pickled in band become views of them (npy.c) and kernels want SIMD
     * alignment. */
    int own = len >= 4096 && type != PK_STR;
    pk_value_t *v = new_value(doc, type, own ? 0 : len + 1);
    if (v == NULL)
        return NULL;
    char *copy = own ? doc_alloc64(doc, len + 1) : (char *)TAIL(v);
    if (copy == NULL)
        return NULL;
    if (len != 0)
        memcpy(copy, data, len);
    copy[len] = '\0';
    v->u.str.ptr = copy;
    v->u.str.len = len;
    return v;
}

pk_value_t *pk_str(pk_doc_t *doc, const char *utf8, size_t len)
{
    return new_bytes(doc, PK_STR, utf8, len);
}

pk_value_t *pk_cstr(pk_doc_t *doc, const char *utf8)
{
    return new_bytes(doc, PK_STR, utf8, strlen(utf8));
}

/* UTF-8 as CPython's "surrogatepass" accepts it: well-formed sequences, no
 * overlongs, nothing above U+10FFFF, but U+D800..U+DFFF allowed. */
static int utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i < n)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff)
            return 0;
        i += n;
    }
    return 1;
}

/* Not yet declared in value.h (its comment names it); see the report. */
pk_value_t *pk_str_checked(pk_doc_t *doc, const char *utf8, size_t len,
                           pk_err_t *err);
pk_value_t *pk_str_checked(pk_doc_t *doc, const char *utf8, size_t len,
                           pk_err_t *err)
{
    if (!utf8_valid((const uint8_t *)utf8, len)) {
        if (err != NULL)
            *err = PK_EINVAL;
        return NULL;
    }
    pk_value_t *v = pk_str(doc, utf8, len);
    if (err != NULL)
        *err = v != NULL ? PK_OK : PK_ENOMEM;
    return v;
}

pk_value_t *pk_bytes(pk_doc_t *doc, const void *data, size_t len)
{
    return new_bytes(doc, PK_BYTES, data, len);
}

pk_value_t *pk_bytearray(pk_doc_t *doc, const void *data, size_t len)
{
    return new_bytes(doc, PK_BYTEARRAY, data, len);
}

pk_value_t *pk_picklebuffer(pk_doc_t *doc, const void *data, size_t len,
                            unsigned flags)
{
    pk_value_t *v;
    if (flags & PK_VF_BORROWED) {
        v = new_value(doc, PK_PICKLEBUFFER, 0);
        if (v == NULL)
            return NULL;
        v->u.str.ptr = data;
        v->u.str.len = len;
    } else {
        v = new_bytes(doc, PK_PICKLEBUFFER, data, len);
        if (v == NULL)
            return NULL;
    }
    v->flags = (uint8_t)(flags & (PK_VF_BORROWED | PK_VF_READONLY));
    return v;
}

pk_value_t *pk_object(pk_doc_t *doc, pk_value_t *callable, pk_value_t *args,
                      pk_value_t *state)
{
    if (callable == NULL || callable->type != PK_GLOBAL || args == NULL ||
        args->type != PK_TUPLE)
        return NULL;
    pk_value_t *v = new_value(doc, PK_OBJECT, 0);
    if (v == NULL)
        return NULL;
    v->u.obj.callable = callable;
    v->u.obj.args = args;
    v->u.obj.state = state;
    v->u.obj.items = NULL;
    return v;
}

pk_value_t *pk_global(pk_doc_t *doc, const char *module, const char *name)
{
    size_t ml = strlen(module), nl = strlen(name);
    if (ml > SIZE_MAX / 4 || nl > SIZE_MAX / 4)
        return NULL;
    pk_value_t *v = new_value(doc, PK_GLOBAL, ml + nl + 2);
    if (v == NULL)
        return NULL;
    char *m = (char *)TAIL(v), *n = m + ml + 1;
    memcpy(m, module, ml + 1);
    memcpy(n, name, nl + 1);
    v->u.global.module = m;
    v->u.global.name = n;
    return v;
}

/* ---- containers -------------------------------------------------------- */

/* Tuples, lists, sets and dicts share one layout (asserted at the top): an
 * array of cap elements of `elem` bytes, len, cap and the hash index. */
static pk_value_t *new_container(pk_doc_t *doc, pk_type_t type, size_t cap,
                                 size_t elem)
{
    if (cap > SIZE_MAX / elem)
        return NULL;
    pk_value_t *v = new_value(doc, type, 0);
    if (v == NULL)
        return NULL;
    void *arr = NULL;
    if (cap != 0 && (arr = doc_alloc(doc, cap * elem)) == NULL)
        return NULL;
    if (type == PK_DICT)
        v->u.dict.entries = arr;
    else
        v->u.seq.items = arr;
    v->u.dict.len = 0;
    v->u.dict.cap = cap;
    v->u.dict.index = NULL;
    v->u.dict.index_cap = 0;
    return v;
}

static pk_value_t *new_seq(pk_doc_t *doc, pk_type_t type, size_t cap)
{
    return new_container(doc, type, cap, sizeof(pk_value_t *));
}

pk_value_t *pk_tuple_new(pk_doc_t *doc, size_t len)
{
    pk_value_t *v = new_seq(doc, PK_TUPLE, len);
    if (v != NULL && len != 0) {
        memset(v->u.seq.items, 0, len * sizeof(pk_value_t *));
        v->u.seq.len = len;
    }
    return v;
}

pk_value_t *pk_list_new(pk_doc_t *doc, size_t cap)
{
    return new_seq(doc, PK_LIST, cap);
}

pk_value_t *pk_set_new(pk_doc_t *doc, size_t cap)
{
    return new_seq(doc, PK_SET, cap);
}

pk_value_t *pk_frozenset_new(pk_doc_t *doc, size_t cap)
{
    return new_seq(doc, PK_FROZENSET, cap);
}

pk_value_t *pk_dict_new(pk_doc_t *doc, size_t cap)
{
    return new_container(doc, PK_DICT, cap, sizeof(pk_dict_entry_t));
}

static __attribute__((noinline)) pk_err_t
append_slow(pk_doc_t *doc, pk_value_t *seq, pk_value_t *item)
{
    if (seq->type == PK_SET || seq->type == PK_FROZENSET)
        return pk_set_add(doc, seq, item);
    if (seq->type != PK_LIST && seq->type != PK_TUPLE)
        return PK_ETYPE;
    void *arr = seq->u.seq.items;
    if (array_grow(doc, &arr, seq->u.seq.len, &seq->u.seq.cap,
                   sizeof(pk_value_t *), seq->u.seq.len + 1) != 0)
        return PK_ENOMEM;
    seq->u.seq.items = arr;
    seq->u.seq.items[seq->u.seq.len++] = item;
    seq->reserved &= (uint16_t)~TUPLE_HASHED;
    return PK_OK;
}

pk_err_t pk_list_append(pk_doc_t *doc, pk_value_t *list, pk_value_t *item)
{
    if (list->type == PK_LIST && list->u.seq.len < list->u.seq.cap) {
        list->u.seq.items[list->u.seq.len++] = item;
        return PK_OK;
    }
    return append_slow(doc, list, item);
}

pk_err_t pk__list_extend(pk_doc_t *doc, pk_value_t *list,
                         pk_value_t *const *items, size_t stride, size_t n)
{
    if (list->type != PK_LIST)
        return PK_ETYPE;
    size_t len = list->u.seq.len;
    if (n > SIZE_MAX - len)
        return PK_ENOMEM;
    if (len + n > list->u.seq.cap) {
        void *arr = list->u.seq.items;
        if (array_grow(doc, &arr, len, &list->u.seq.cap, sizeof(pk_value_t *),
                       len + n) != 0)
            return PK_ENOMEM;
        list->u.seq.items = arr;
    }
    pk_value_t **dst = list->u.seq.items + len;
    for (size_t i = 0; i < n; i++)
        dst[i] = items[i * stride];
    list->u.seq.len = len + n;
    return PK_OK;
}

void pk_tuple_set(pk_value_t *tuple, size_t i, pk_value_t *item)
{
    assert(tuple->type == PK_TUPLE && i < tuple->u.seq.len);
    tuple->u.seq.items[i] = item;
    tuple->reserved &= (uint16_t)~TUPLE_HASHED;
}

/* ---- hashing ------------------------------------------------------------ */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* Keys come from untrusted pickles: a per-process secret seed keeps an
 * attacker from choosing keys that all land in one probe run (hash flooding).
 * Forked children share it, which is harmless. */
static uint64_t hash_seed;

__attribute__((constructor)) static void seed_hash(void)
{
    if (getrandom(&hash_seed, sizeof hash_seed, GRND_NONBLOCK) !=
        (ssize_t)sizeof hash_seed)
        hash_seed = mix64((uint64_t)time(NULL) ^ (uint64_t)getpid() << 32 ^
                          (uintptr_t)&hash_seed);
}

uint64_t pk__hash_u64(uint64_t key)
{
    return mix64(key ^ hash_seed);
}

static uint64_t hash_mem(const void *p, size_t len, uint64_t seed)
{
    const uint8_t *s = p;
    uint64_t h = seed ^ hash_seed ^ (len * 0x9e3779b97f4a7c15ull);
    while (len >= 8) {
        h = (h ^ mix64(pk__ld64(s))) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
        s += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, s, len);
    h = (h ^ mix64(tail ^ len)) * 0x9e3779b97f4a7c15ull;
    return mix64(h);
}

#define SEED_STR 0x5f3759df12345678ull
#define SEED_BYTES 0x243f6a8885a308d3ull
#define SEED_BIG 0x13198a2e03707344ull
#define SEED_FLOAT 0xa4093822299f31d0ull
#define SEED_TUPLE 0x082efa98ec4e6c89ull
#define SEED_FSET 0x452821e638d01377ull
#define SEED_GLOBAL 0xbe5466cf34e90c6cull
#define SEED_DTYPE 0xc0ac29b7c97c50ddull
#define SEED_OBJECT 0x8a3c5e7f1d2b4a69ull
#define SEED_COMPLEX 0x3f84d5b5b5470917ull

static inline uint64_t hash_i64(int64_t i)
{
    return mix64((uint64_t)i ^ hash_seed);
}

/* A finite integral double at or beyond 2**63 in magnitude as the minimal
 * two's-complement bytes of its value; returns the length (<= 130). */
static size_t double_to_big(double f, uint8_t *out)
{
    int e;
    double m = frexp(fabs(f), &e); /* |f| = m * 2**e, m in [0.5, 1) */
    uint64_t mant = (uint64_t)ldexp(m, 53);
    int shift = e - 53; /* >= 10 here */
    size_t n = (size_t)e / 8 + 2;
    memset(out, 0, n);
    for (int bit = 0; bit < 53; bit++) {
        if (mant >> bit & 1) {
            int pos = bit + shift;
            out[pos / 8] |= (uint8_t)(1u << (pos % 8));
        }
    }
    if (f < 0) {
        unsigned carry = 1;
        for (size_t i = 0; i < n; i++) {
            unsigned b = (uint8_t)~out[i] + carry;
            out[i] = (uint8_t)b;
            carry = b >> 8;
        }
    }
    return big_minimal(out, n);
}

static int double_is_i64(double f, int64_t *out)
{
    if (f >= -9223372036854775808.0 && f < 9223372036854775808.0 &&
        f == trunc(f)) {
        *out = (int64_t)f;
        return 1;
    }
    return 0;
}

/* NaN is equal only to itself, so it hashes by identity (as CPython 3.10+):
 * one hash for every NaN would make n distinct NaN keys cost n^2 probes. */
static uint64_t hash_double(double f, const void *id)
{
    int64_t i = 0;
    if (double_is_i64(f, &i))
        return hash_i64(i);
    if (isfinite(f) && f == trunc(f)) {
        uint8_t buf[136];
        size_t n = double_to_big(f, buf);
        return hash_mem(buf, n, SEED_BIG);
    }
    if (isnan(f))
        return mix64((uint64_t)(uintptr_t)id ^ SEED_FLOAT ^ hash_seed);
    uint64_t bits;
    memcpy(&bits, &f, 8);
    return mix64(bits ^ SEED_FLOAT ^ hash_seed);
}

static pk_err_t hash_rec(const pk_value_t *v, uint64_t *out, int depth,
                         uint64_t *budget)
{
    if (depth > MAX_DEPTH || *budget == 0)
        return PK_EUNHASHABLE;
    --*budget;
    switch ((pk_type_t)v->type) {
    case PK_NONE:
        *out = mix64(0x6e6f6e65ull);
        return PK_OK;
    case PK_BOOL:
        *out = hash_i64(v->u.b);
        return PK_OK;
    case PK_INT:
        *out = hash_i64(v->u.i);
        return PK_OK;
    case PK_BIGINT:
        *out = hash_mem(v->u.big.bytes, v->u.big.len, SEED_BIG);
        return PK_OK;
    case PK_FLOAT:
        *out = hash_double(v->u.f, v);
        return PK_OK;
    case PK_COMPLEX:
        if (v->u.c.im == 0)
            *out = hash_double(v->u.c.re, v);
        else
            *out = mix64(hash_double(v->u.c.re, v) * 0x9e3779b97f4a7c15ull ^
                         hash_double(v->u.c.im, v) ^ SEED_COMPLEX);
        return PK_OK;
    case PK_STR:
        *out = hash_mem(v->u.str.ptr, v->u.str.len, SEED_STR);
        return PK_OK;
    case PK_BYTES:
        *out = hash_mem(v->u.str.ptr, v->u.str.len, SEED_BYTES);
        return PK_OK;
    case PK_TUPLE: {
        /* A tuple is immutable once built, so its hash is computed once and
         * kept (in index_cap, which tuples do not use; the HASHED mark is
         * published after it).  Without this, a tuple shared n levels deep
         * ((t, t) of (t, t) ...) costs 2^n per insert, and a pickle can
         * insert it again with every 2-byte GET. */
        if (__atomic_load_n(&v->reserved, __ATOMIC_ACQUIRE) & TUPLE_HASHED) {
            *out = __atomic_load_n(&v->u.seq.index_cap, __ATOMIC_RELAXED);
            return PK_OK;
        }
        uint64_t h = SEED_TUPLE ^ v->u.seq.len;
        for (size_t i = 0; i < v->u.seq.len; i++) {
            uint64_t hi;
            const pk_value_t *it = v->u.seq.items[i];
            if (it == NULL)
                return PK_EUNHASHABLE;
            pk_err_t rc = hash_rec(it, &hi, depth + 1, budget);
            if (rc != PK_OK)
                return rc;
            h = mix64(h ^ hi) * 0x9e3779b97f4a7c15ull + i;
        }
        *out = mix64(h);
        pk_value_t *w = (pk_value_t *)v; /* doc-owned, never static */
        __atomic_store_n(&w->u.seq.index_cap, (size_t)*out, __ATOMIC_RELAXED);
        __atomic_fetch_or(&w->reserved, (uint16_t)TUPLE_HASHED,
                          __ATOMIC_RELEASE);
        return PK_OK;
    }
    case PK_FROZENSET: {
        /* A sum of mixed item hashes does not depend on order. */
        uint64_t h = 0;
        for (size_t i = 0; i < v->u.seq.len; i++) {
            uint64_t hi;
            pk_err_t rc = hash_rec(v->u.seq.items[i], &hi, depth + 1, budget);
            if (rc != PK_OK)
                return rc;
            h += mix64(hi ^ SEED_FSET);
        }
        *out = mix64(h ^ SEED_FSET ^ v->u.seq.len);
        return PK_OK;
    }
    case PK_GLOBAL:
        *out = mix64(
            hash_mem(v->u.global.module, strlen(v->u.global.module),
                     SEED_GLOBAL) ^
            hash_mem(v->u.global.name, strlen(v->u.global.name), SEED_STR));
        return PK_OK;
    case PK_OBJECT: {
        /* The immutable data objects (date, Decimal, UUID...) are dict keys
         * in real pickles.  Objects holding items (OrderedDict, deque) are
         * not hashable, as in Python.  The state (UUID's {'int': n}) is a
         * dict: its hashable values are summed, which does not depend on
         * the order of its keys, as equality does not. */
        uint64_t h, hi;
        pk_err_t rc;
        if (v->u.obj.items != NULL)
            return PK_EUNHASHABLE;
        if ((rc = hash_rec(v->u.obj.callable, &h, depth + 1, budget)) ||
            (rc = hash_rec(v->u.obj.args, &hi, depth + 1, budget)))
            return rc;
        h = mix64(h ^ SEED_OBJECT) + hi;
        const pk_value_t *st = v->u.obj.state;
        if (st != NULL && st->type == PK_DICT)
            for (size_t i = 0; i < st->u.dict.len; i++)
                if (hash_rec(st->u.dict.entries[i].value, &hi, depth + 1,
                             budget) == PK_OK)
                    h += mix64(hi ^ SEED_OBJECT);
        *out = mix64(h);
        return PK_OK;
    }
    case PK_DTYPE:
        *out = mix64(SEED_DTYPE ^ (uint64_t)(uint8_t)v->u.dtype->kind << 40 ^
                     (uint64_t)(uint8_t)v->u.dtype->byteorder << 32 ^
                     v->u.dtype->itemsize);
        return PK_OK;
    default:
        return PK_EUNHASHABLE;
    }
}

pk_err_t pk_hash(const pk_value_t *v, uint64_t *out)
{
    uint64_t budget = HASH_BUDGET;
    return hash_rec(v, out, 0, &budget);
}

static inline uint32_t fold32(uint64_t h)
{
    return (uint32_t)(h ^ (h >> 32));
}

/* ---- equality ----------------------------------------------------------- */

static int is_number(int t)
{
    return t == PK_BOOL || t == PK_INT || t == PK_BIGINT || t == PK_FLOAT ||
           t == PK_COMPLEX;
}

/* The real part of a number whose imaginary part is zero; 0 for complex
 * numbers with a non-zero imaginary part. */
static int real_part(const pk_value_t *v, const pk_value_t **re_v, double *re)
{
    if (v->type == PK_COMPLEX) {
        if (v->u.c.im != 0)
            return 0;
        *re_v = NULL;
        *re = v->u.c.re;
        return 1;
    }
    *re_v = v;
    return 1;
}

static int int_eq_double(int64_t i, double f)
{
    int64_t fi = 0;
    return double_is_i64(f, &fi) && fi == i;
}

static int big_eq_double(const pk_value_t *b, double f)
{
    if (!isfinite(f) || f != trunc(f))
        return 0;
    uint8_t buf[136];
    size_t n = double_to_big(f, buf);
    return n == b->u.big.len && memcmp(buf, b->u.big.bytes, n) == 0;
}

/* Exact Python comparison of real numbers; a NULL value stands for `d`. */
static int real_eq(const pk_value_t *a, double ad, const pk_value_t *b,
                   double bd)
{
    if (a != NULL && a->type != PK_FLOAT && b != NULL && b->type != PK_FLOAT) {
        if (a->type == PK_BIGINT || b->type == PK_BIGINT)
            return a->type == b->type && a->u.big.len == b->u.big.len &&
                   memcmp(a->u.big.bytes, b->u.big.bytes, a->u.big.len) == 0;
        int64_t ai = a->type == PK_BOOL ? a->u.b : a->u.i;
        int64_t bi = b->type == PK_BOOL ? b->u.b : b->u.i;
        return ai == bi;
    }
    if (a != NULL && a->type == PK_FLOAT)
        ad = a->u.f, a = NULL;
    if (b != NULL && b->type == PK_FLOAT)
        bd = b->u.f, b = NULL;
    if (a == NULL && b == NULL)
        return ad == bd;
    if (a == NULL) { /* make `a` the integer side */
        a = b;
        bd = ad;
    }
    if (a->type == PK_BIGINT)
        return big_eq_double(a, bd);
    return int_eq_double(a->type == PK_BOOL ? a->u.b : a->u.i, bd);
}

static int numbers_equal(const pk_value_t *a, const pk_value_t *b)
{
    if (a->type == PK_COMPLEX && b->type == PK_COMPLEX)
        return a->u.c.re == b->u.c.re && a->u.c.im == b->u.c.im;
    const pk_value_t *ar, *br;
    double ad = 0, bd = 0;
    if (!real_part(a, &ar, &ad) || !real_part(b, &br, &bd))
        return 0;
    return real_eq(ar, ad, br, bd);
}

static int equal_rec(const pk_value_t *a, const pk_value_t *b, int depth,
                     uint64_t *budget);

/* Two optional parts of an object (state, items): both absent, or equal. */
static int equal_opt(const pk_value_t *a, const pk_value_t *b, int depth,
                     uint64_t *budget)
{
    return a == b ||
           (a != NULL && b != NULL && equal_rec(a, b, depth + 1, budget));
}
static size_t table_find(const pk_value_t *t, const pk_value_t *key, uint32_t h,
                         size_t *slotp);

static int is_bytes_like(int t)
{
    return t == PK_BYTES || t == PK_BYTEARRAY;
}

static int table_has(const pk_value_t *t, const pk_value_t *key, size_t *entry)
{
    uint64_t h;
    if (t->u.dict.index == NULL || pk_hash(key, &h) != PK_OK)
        return 0;
    size_t slot;
    *entry = table_find(t, key, fold32(h), &slot);
    return *entry != SIZE_MAX;
}

static int dtype_equal(const pk_dtype_t *a, const pk_dtype_t *b)
{
    return a->kind == b->kind && a->byteorder == b->byteorder &&
           a->itemsize == b->itemsize;
}

static int ndarray_equal(const pk_ndarray_t *a, const pk_ndarray_t *b)
{
    if (!dtype_equal(&a->dtype, &b->dtype) || a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    if (a->nbytes == 0)
        return 1;
    if (a->ndim == 0 ||
        memcmp(a->strides, b->strides, (size_t)a->ndim * sizeof(int64_t)) == 0)
        return memcmp(a->data, b->data, a->nbytes) == 0;
    /* Different layouts (C vs Fortran): walk the elements in C order. */
    int64_t idx[PK_MAXDIMS] = {0};
    size_t items = a->nbytes / a->dtype.itemsize;
    for (size_t n = 0; n < items; n++) {
        int64_t oa = 0, ob = 0;
        for (int d = 0; d < a->ndim; d++) {
            oa += idx[d] * a->strides[d];
            ob += idx[d] * b->strides[d];
        }
        if (memcmp((const char *)a->data + oa, (const char *)b->data + ob,
                   a->dtype.itemsize) != 0)
            return 0;
        for (int d = a->ndim - 1; d >= 0; d--) {
            if (++idx[d] < a->shape[d])
                break;
            idx[d] = 0;
        }
    }
    return 1;
}

static int equal_rec(const pk_value_t *a, const pk_value_t *b, int depth,
                     uint64_t *budget)
{
    if (a == b)
        return 1;
    if (a == NULL || b == NULL)
        return 0;
    if (is_number(a->type) && is_number(b->type))
        return numbers_equal(a, b);
    if (is_bytes_like(a->type) && is_bytes_like(b->type))
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
    int sa = a->type == PK_SET || a->type == PK_FROZENSET;
    int sb = b->type == PK_SET || b->type == PK_FROZENSET;
    if (a->type != b->type && !(sa && sb))
        return 0;
    /* Past the guards, containers compare by identity, which was false. */
    if (depth > MAX_DEPTH || *budget == 0)
        return 0;
    --*budget;
    switch ((pk_type_t)a->type) {
    case PK_NONE:
        return 1;
    case PK_STR:
    case PK_PICKLEBUFFER:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
    case PK_TUPLE:
    case PK_LIST:
        if (a->u.seq.len != b->u.seq.len)
            return 0;
        for (size_t i = 0; i < a->u.seq.len; i++)
            if (!equal_rec(a->u.seq.items[i], b->u.seq.items[i], depth + 1,
                           budget))
                return 0;
        return 1;
    case PK_SET:
    case PK_FROZENSET: {
        if (a->u.seq.len != b->u.seq.len)
            return 0;
        size_t e;
        for (size_t i = 0; i < a->u.seq.len; i++)
            if (!table_has(b, a->u.seq.items[i], &e))
                return 0;
        return 1;
    }
    case PK_DICT: {
        if (a->u.dict.len != b->u.dict.len)
            return 0;
        size_t e;
        for (size_t i = 0; i < a->u.dict.len; i++) {
            const pk_dict_entry_t *ea = &a->u.dict.entries[i];
            if (!table_has(b, ea->key, &e) ||
                !equal_rec(ea->value, b->u.dict.entries[e].value, depth + 1,
                           budget))
                return 0;
        }
        return 1;
    }
    case PK_GLOBAL:
        return strcmp(a->u.global.module, b->u.global.module) == 0 &&
               strcmp(a->u.global.name, b->u.global.name) == 0;
    case PK_DTYPE:
        return dtype_equal(a->u.dtype, b->u.dtype);
    case PK_NDARRAY:
        return ndarray_equal(a->u.nd, b->u.nd);
    case PK_OBJECT:
        return (a->flags & PK_VF_NEWOBJ) == (b->flags & PK_VF_NEWOBJ) &&
               equal_rec(a->u.obj.callable, b->u.obj.callable, depth + 1,
                         budget) &&
               equal_rec(a->u.obj.args, b->u.obj.args, depth + 1, budget) &&
               equal_opt(a->u.obj.state, b->u.obj.state, depth, budget) &&
               equal_opt(a->u.obj.items, b->u.obj.items, depth, budget);
    default:
        return 0;
    }
}

int pk_equal(const pk_value_t *a, const pk_value_t *b)
{
    uint64_t budget = EQUAL_BUDGET;
    return equal_rec(a, b, 0, &budget);
}

/* ---- dict and set tables ------------------------------------------------ */

static inline pk_value_t *table_key(const pk_value_t *t, size_t i)
{
    return t->type == PK_DICT ? t->u.dict.entries[i].key : t->u.seq.items[i];
}

/* Returns the entry index of key, or SIZE_MAX with *slotp the empty slot
 * where it would go.  The table's index must exist. */
static size_t table_find(const pk_value_t *t, const pk_value_t *key, uint32_t h,
                         size_t *slotp)
{
    const uint32_t *ix = t->u.dict.index;
    size_t mask = t->u.dict.index_cap - 1;
    for (size_t s = h & mask;; s = (s + 1) & mask) {
        uint32_t e = ix[2 * s];
        if (e == 0) {
            *slotp = s;
            return SIZE_MAX;
        }
        if (ix[2 * s + 1] == h) {
            const pk_value_t *k = table_key(t, e - 1);
            if (k == key || pk_equal(k, key))
                return e - 1;
        }
    }
}

/* Makes room in the index for one more entry, keeping the load at most 1/2
 * (linear probing degrades fast beyond that). */
static pk_err_t table_reserve(pk_doc_t *doc, pk_value_t *t, size_t extra)
{
    size_t len = t->u.dict.len, old_cap = t->u.dict.index_cap;
    if (len >= MAX_TABLE_LEN || extra > MAX_TABLE_LEN - len)
        return PK_ENOMEM;
    if ((len + extra) * 2 <= old_cap)
        return PK_OK;
    size_t want = t->u.dict.cap > len + extra ? t->u.dict.cap : len + extra;
    size_t cap = old_cap ? old_cap * 2 : 8;
    while (cap < want * 2)
        cap *= 2;
    uint32_t *ix = doc_alloc(doc, cap * 2 * sizeof(uint32_t));
    if (ix == NULL)
        return PK_ENOMEM;
    memset(ix, 0, cap * 2 * sizeof(uint32_t));
    uint32_t *old = t->u.dict.index;
    size_t mask = cap - 1;
    for (size_t s = 0; s < old_cap; s++) {
        uint32_t e = old[2 * s], h = old[2 * s + 1];
        if (e == 0)
            continue;
        size_t n = h & mask;
        while (ix[2 * n] != 0)
            n = (n + 1) & mask;
        ix[2 * n] = e;
        ix[2 * n + 1] = h;
    }
    array_free(doc, old, old_cap * 2 * sizeof(uint32_t));
    t->u.dict.index = ix;
    t->u.dict.index_cap = cap;
    return PK_OK;
}

/* Finds key or reserves the slot and entry for it: returns PK_OK with
 * *entry set (found) or SIZE_MAX and *slotp and *hp ready for table_commit. */
static pk_err_t table_prepare(pk_doc_t *doc, pk_value_t *t,
                              const pk_value_t *key, size_t *entry,
                              size_t *slotp, uint32_t *hp)
{
    uint64_t h64;
    pk_err_t rc = pk_hash(key, &h64);
    if (rc != PK_OK)
        return rc;
    rc = table_reserve(doc, t, 1);
    if (rc != PK_OK)
        return rc;
    *hp = fold32(h64);
    *entry = table_find(t, key, *hp, slotp);
    return PK_OK;
}

static void table_commit(pk_value_t *t, size_t slot, uint32_t h)
{
    t->u.dict.index[2 * slot] = (uint32_t)t->u.dict.len + 1;
    t->u.dict.index[2 * slot + 1] = h;
    t->u.dict.len++;
}

pk_err_t pk_dict_set(pk_doc_t *doc, pk_value_t *dict, pk_value_t *key,
                     pk_value_t *value)
{
    if (dict->type != PK_DICT)
        return PK_ETYPE;
    size_t entry, slot;
    uint32_t h;
    pk_err_t rc = table_prepare(doc, dict, key, &entry, &slot, &h);
    if (rc != PK_OK)
        return rc;
    if (entry != SIZE_MAX) {
        dict->u.dict.entries[entry].value = value;
        return PK_OK;
    }
    if (dict->u.dict.len == dict->u.dict.cap) {
        void *arr = dict->u.dict.entries;
        if (array_grow(doc, &arr, dict->u.dict.len, &dict->u.dict.cap,
                       sizeof(pk_dict_entry_t), dict->u.dict.len + 1) != 0)
            return PK_ENOMEM;
        dict->u.dict.entries = arr;
    }
    dict->u.dict.entries[dict->u.dict.len].key = key;
    dict->u.dict.entries[dict->u.dict.len].value = value;
    table_commit(dict, slot, h);
    return PK_OK;
}

/* SETITEMS hands the decoder up to a thousand pairs at once.  Inserting them
 * one by one waits on a cache miss per key (the index is probed at random);
 * hashing a run of keys first lets the slot of key i + PREFETCH be fetched
 * while key i is inserted.  Same result as pk_dict_set in order. */
#define BATCH_RUN 256
#define PREFETCH 8

pk_err_t pk__dict_set_batch(pk_doc_t *doc, pk_value_t *dict,
                            pk_value_t *const *items, size_t stride, size_t n)
{
    if (dict->type != PK_DICT)
        return PK_ETYPE;
    uint32_t hs[BATCH_RUN];
    while (n > 0) {
        size_t m = n < BATCH_RUN ? n : BATCH_RUN, ok = m;
        pk_err_t rc = PK_OK, hrc = PK_OK;
        for (size_t j = 0; j < m; j++) {
            uint64_t h64;
            if ((hrc = pk_hash(items[2 * j * stride], &h64)) != PK_OK) {
                ok = j; /* insert the pairs before it, then report */
                break;
            }
            hs[j] = fold32(h64);
        }
        if ((rc = table_reserve(doc, dict, ok)) != PK_OK)
            return rc;
        if (dict->u.dict.len + ok > dict->u.dict.cap) {
            void *arr = dict->u.dict.entries;
            if (array_grow(doc, &arr, dict->u.dict.len, &dict->u.dict.cap,
                           sizeof(pk_dict_entry_t), dict->u.dict.len + ok) != 0)
                return PK_ENOMEM;
            dict->u.dict.entries = arr;
        }
        const uint32_t *ix = dict->u.dict.index;
        size_t mask = dict->u.dict.index_cap - 1;
        for (size_t j = 0; j < ok && j < PREFETCH; j++)
            __builtin_prefetch(&ix[2 * (hs[j] & mask)]);
        for (size_t j = 0; j < ok; j++) {
            if (j + PREFETCH < ok)
                __builtin_prefetch(&ix[2 * (hs[j + PREFETCH] & mask)]);
            pk_value_t *key = items[2 * j * stride];
            pk_value_t *value = items[(2 * j + 1) * stride];
            size_t slot, entry = table_find(dict, key, hs[j], &slot);
            if (entry != SIZE_MAX) {
                dict->u.dict.entries[entry].value = value;
                continue;
            }
            dict->u.dict.entries[dict->u.dict.len].key = key;
            dict->u.dict.entries[dict->u.dict.len].value = value;
            table_commit(dict, slot, hs[j]);
        }
        if (hrc != PK_OK)
            return hrc;
        items += 2 * m * stride;
        n -= m;
    }
    return PK_OK;
}

pk_err_t pk_set_add(pk_doc_t *doc, pk_value_t *set, pk_value_t *item)
{
    if (set->type != PK_SET && set->type != PK_FROZENSET)
        return PK_ETYPE;
    size_t entry, slot;
    uint32_t h;
    pk_err_t rc = table_prepare(doc, set, item, &entry, &slot, &h);
    if (rc != PK_OK || entry != SIZE_MAX)
        return rc;
    if (set->u.seq.len == set->u.seq.cap) {
        void *arr = set->u.seq.items;
        if (array_grow(doc, &arr, set->u.seq.len, &set->u.seq.cap,
                       sizeof(pk_value_t *), set->u.seq.len + 1) != 0)
            return PK_ENOMEM;
        set->u.seq.items = arr;
    }
    set->u.seq.items[set->u.seq.len] = item;
    table_commit(set, slot, h);
    return PK_OK;
}

/* ---- access -------------------------------------------------------------- */

pk_value_t *pk_dict_get(const pk_value_t *dict, const pk_value_t *key)
{
    size_t e;
    if (dict->type != PK_DICT || !table_has(dict, key, &e))
        return NULL;
    return dict->u.dict.entries[e].value;
}

pk_value_t *pk_dict_get_str(const pk_value_t *dict, const char *key)
{
    pk_value_t k = {.type = PK_STR};
    k.u.str.ptr = key;
    k.u.str.len = strlen(key);
    return pk_dict_get(dict, &k);
}

int pk_set_contains(const pk_value_t *set, const pk_value_t *item)
{
    size_t e;
    if (set->type != PK_SET && set->type != PK_FROZENSET)
        return 0;
    return table_has(set, item, &e);
}

size_t pk_len(const pk_value_t *v)
{
    switch ((pk_type_t)v->type) {
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
    case PK_FROZENSET:
        return v->u.seq.len;
    case PK_DICT:
        return v->u.dict.len;
    case PK_STR:
    case PK_BYTES:
    case PK_BYTEARRAY:
    case PK_PICKLEBUFFER:
        return v->u.str.len;
    default:
        return 0;
    }
}

pk_value_t *pk_item(const pk_value_t *v, size_t i)
{
    switch ((pk_type_t)v->type) {
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
    case PK_FROZENSET:
        return i < v->u.seq.len ? v->u.seq.items[i] : NULL;
    default:
        return NULL;
    }
}

pk_err_t pk_as_int(const pk_value_t *v, int64_t *out)
{
    if (v->type == PK_BOOL)
        *out = v->u.b;
    else if (v->type == PK_INT)
        *out = v->u.i;
    else
        return PK_ETYPE;
    return PK_OK;
}

/* Correctly rounded conversion of a bigint: the top 64 significant bits with
 * a sticky bit for the rest, rounded once by the hardware, then scaled.  A
 * minimal form longer than 130 bytes is at least 2**1031, past DBL_MAX. */
static pk_err_t big_to_double(const uint8_t *b, size_t len, double *out)
{
    if (len > 130)
        return PK_ELIMIT;
    int neg = (b[len - 1] & 0x80) != 0;
    uint8_t mag[130];
    unsigned carry = 1;
    for (size_t i = 0; i < len; i++) {
        if (neg) {
            unsigned x = (uint8_t)~b[i] + carry;
            mag[i] = (uint8_t)x;
            carry = x >> 8;
        } else {
            mag[i] = b[i];
        }
    }
    size_t top = len;
    while (top > 0 && mag[top - 1] == 0)
        top--;
    if (top == 0) { /* not minimal; cannot come from pk_bigint */
        *out = 0;
        return PK_OK;
    }
    size_t bits = (top - 1) * 8;
    for (uint8_t t = mag[top - 1]; t; t >>= 1)
        bits++;
    uint64_t hi = 0;
    int sticky = 0;
    size_t shift = bits > 64 ? bits - 64 : 0;
    for (size_t bit = 0; bit < bits; bit++) {
        int set = mag[bit / 8] >> (bit % 8) & 1;
        if (bit < shift)
            sticky |= set;
        else
            hi |= (uint64_t)set << (bit - shift);
    }
    hi |= (uint64_t)sticky;
    double d = ldexp((double)hi, (int)shift);
    if (isinf(d))
        return PK_ELIMIT;
    *out = neg ? -d : d;
    return PK_OK;
}

pk_err_t pk_as_double(const pk_value_t *v, double *out)
{
    switch ((pk_type_t)v->type) {
    case PK_BOOL:
        *out = v->u.b;
        return PK_OK;
    case PK_INT:
        *out = (double)v->u.i;
        return PK_OK;
    case PK_FLOAT:
        *out = v->u.f;
        return PK_OK;
    case PK_BIGINT:
        return big_to_double(v->u.big.bytes, v->u.big.len, out);
    default:
        return PK_ETYPE;
    }
}

pk_err_t pk_as_str(const pk_value_t *v, const char **ptr, size_t *len)
{
    if (v->type != PK_STR && v->type != PK_BYTES && v->type != PK_BYTEARRAY)
        return PK_ETYPE;
    *ptr = v->u.str.ptr;
    *len = v->u.str.len;
    return PK_OK;
}

const char *pk_value_type_name(const pk_value_t *v)
{
    if (v->type == PK_OBJECT) /* type(x).__name__, as Python says it */
        return v->u.obj.callable->u.global.name;
    return pk_type_name((pk_type_t)v->type);
}

const char *pk_type_name(pk_type_t t)
{
    static const char *const names[PK__TYPE_MAX] = {
        [PK_NONE] = "NoneType",
        [PK_BOOL] = "bool",
        [PK_INT] = "int",
        [PK_BIGINT] = "int",
        [PK_FLOAT] = "float",
        [PK_COMPLEX] = "complex",
        [PK_STR] = "str",
        [PK_BYTES] = "bytes",
        [PK_BYTEARRAY] = "bytearray",
        [PK_TUPLE] = "tuple",
        [PK_LIST] = "list",
        [PK_DICT] = "dict",
        [PK_SET] = "set",
        [PK_FROZENSET] = "frozenset",
        [PK_GLOBAL] = "global",
        [PK_NDARRAY] = "numpy.ndarray",
        [PK_DTYPE] = "numpy.dtype",
        [PK_PICKLEBUFFER] = "pickle.PickleBuffer",
        [PK_OBJECT] = "object",
    };
    if ((unsigned)t >= PK__TYPE_MAX)
        return "unknown";
    return names[t];
}

/* ---- numpy dtypes and arrays -------------------------------------------- */

static int dtype_valid(const pk_dtype_t *dt)
{
    uint32_t n = dt->itemsize;
    switch (dt->kind) {
    case 'b':
        return n == 1 && dt->byteorder == '|';
    case 'i':
    case 'u':
        if (n == 1)
            return dt->byteorder == '|';
        return (n == 2 || n == 4 || n == 8) &&
               (dt->byteorder == '<' || dt->byteorder == '>');
    case 'f':
        /* f16/c32 (long double) are refused: their layout differs between
         * x86-64 (80-bit) and aarch64 (IEEE quad). */
        return (n == 2 || n == 4 || n == 8) &&
               (dt->byteorder == '<' || dt->byteorder == '>');
    case 'c':
        return (n == 8 || n == 16) &&
               (dt->byteorder == '<' || dt->byteorder == '>');
    case 'S':
    case 'V':
        return n >= 1 && n <= INT32_MAX && dt->byteorder == '|';
    case 'U':
        return n >= 4 && n % 4 == 0 && n <= INT32_MAX &&
               (dt->byteorder == '<' || dt->byteorder == '>');
    default:
        return 0;
    }
}

pk_err_t pk_dtype_parse(const char *str, pk_dtype_t *dt)
{
    const char *p = str;
    char order = '=';
    if (*p == '<' || *p == '>' || *p == '|' || *p == '=')
        order = *p++;
    char kind = *p++;
    if (kind == '\0' || strchr("biufcSUV", kind) == NULL)
        return PK_EUNSUPPORTED;
    if (*p < '0' || *p > '9')
        return PK_EUNSUPPORTED;
    uint64_t count = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        count = count * 10 + (uint64_t)(*p - '0');
        if (count > INT32_MAX)
            return PK_EUNSUPPORTED;
    }
    if (*p != '\0')
        return PK_EUNSUPPORTED;
    if (kind == 'U')
        count *= 4;
    if (count == 0 || count > INT32_MAX)
        return PK_EUNSUPPORTED;
    pk_dtype_t d = {.kind = kind, .itemsize = (uint32_t)count};
    /* numpy's normal form: '|' where order means nothing, '=' is the native
     * '<', and '|' on a multi-byte number means native too. */
    if (count == 1 || kind == 'b' || kind == 'S' || kind == 'V')
        d.byteorder = '|';
    else if (order == '>')
        d.byteorder = '>';
    else
        d.byteorder = '<';
    if (!dtype_valid(&d))
        return PK_EUNSUPPORTED;
    *dt = d;
    return PK_OK;
}

const char *pk_dtype_str(const pk_dtype_t *dt, char *buf, size_t size)
{
    uint32_t count = dt->kind == 'U' ? dt->itemsize / 4 : dt->itemsize;
    if (size > 0)
        snprintf(buf, size, "%c%c%u", dt->byteorder, dt->kind, count);
    return buf;
}

pk_value_t *pk_dtype_value(pk_doc_t *doc, const pk_dtype_t *dt)
{
    pk_value_t *v = new_value(doc, PK_DTYPE, sizeof(pk_dtype_t));
    if (v == NULL)
        return NULL;
    pk_dtype_t *copy = (pk_dtype_t *)TAIL(v);
    *copy = *dt;
    copy->reserved = 0;
    v->u.dtype = copy;
    return v;
}

pk_value_t *pk_ndarray(pk_doc_t *doc, const pk_dtype_t *dt, int ndim,
                       const int64_t *shape, void *data, unsigned flags)
{
    if (ndim < 0 || ndim > PK_MAXDIMS || (ndim > 0 && shape == NULL) ||
        !dtype_valid(dt) || ((flags & PK_VF_NPSCALAR) && ndim != 0))
        return NULL;
    int64_t strides[PK_MAXDIMS];
    /* numpy's strides: zero-length axes do not scale the next stride. */
    int64_t stride = dt->itemsize;
    uint64_t count = 1;
    for (int k = 0; k < ndim; k++) {
        int d = (flags & PK_VF_FORTRAN) ? k : ndim - 1 - k;
        if (shape[d] < 0)
            return NULL;
        strides[d] = stride;
        if (shape[d] != 0 && __builtin_mul_overflow(stride, shape[d], &stride))
            return NULL;
        if (__builtin_mul_overflow(count, (uint64_t)shape[d], &count))
            return NULL;
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(count, (uint64_t)dt->itemsize, &nbytes) ||
        nbytes > (uint64_t)INT64_MAX || nbytes > SIZE_MAX)
        return NULL;
    /* An empty out-of-band buffer may well have no address. */
    if ((flags & PK_VF_BORROWED) && data == NULL && nbytes != 0)
        return NULL;
    size_t dims = (size_t)ndim * sizeof(int64_t);
    pk_value_t *v = new_value(doc, PK_NDARRAY, sizeof(pk_ndarray_t) + 2 * dims);
    if (v == NULL)
        return NULL;
    pk_ndarray_t *nd = (pk_ndarray_t *)TAIL(v);
    int64_t *sh = (int64_t *)(nd + 1), *st = sh + ndim;
    if (ndim > 0) {
        memcpy(sh, shape, dims);
        memcpy(st, strides, dims);
    }
    nd->dtype = *dt;
    nd->dtype.reserved = 0;
    nd->ndim = ndim;
    nd->shape = sh;
    nd->strides = st;
    nd->nbytes = (size_t)nbytes;
    if (flags & PK_VF_BORROWED) {
        nd->data = data;
    } else {
        nd->data = NULL;
        if (doc->array_alloc != NULL && nbytes >= doc->array_min)
            nd->data = doc->array_alloc(doc->array_ctx, (size_t)nbytes);
        if (nd->data == NULL)
            nd->data = doc_alloc64(doc, (size_t)nbytes);
        if (nd->data == NULL)
            return NULL;
        if (data != NULL)
            memcpy(nd->data, data, (size_t)nbytes);
        else if (!(flags & PK_VF_UNINIT))
            memset(nd->data, 0, (size_t)nbytes);
    }
    v->flags = (uint8_t)(flags & (PK_VF_READONLY | PK_VF_BORROWED |
                                  PK_VF_NPSCALAR | PK_VF_FORTRAN));
    v->u.nd = nd;
    return v;
}

int pk_ndarray_c_contiguous(const pk_ndarray_t *nd)
{
    int64_t want = nd->dtype.itemsize;
    for (int k = nd->ndim - 1; k >= 0; k--) {
        if (nd->shape[k] == 0)
            return 1;
        if (nd->shape[k] != 1 && nd->strides[k] != want)
            return 0;
        want *= nd->shape[k];
    }
    return 1;
}

/* ---- repr --------------------------------------------------------------- */

typedef struct writer {
    char *buf;
    size_t size, pos;
    int full;
    const pk_value_t *stack[64]; /* containers being printed, for cycles */
    int depth;
} writer_t;

static void put(writer_t *w, const char *s, size_t n)
{
    if (w->full)
        return;
    size_t room = w->size - 1 - w->pos;
    if (n > room) {
        n = room;
        w->full = 1;
    }
    memcpy(w->buf + w->pos, s, n);
    w->pos += n;
}

static void puts_(writer_t *w, const char *s)
{
    put(w, s, strlen(s));
}

static void putf(writer_t *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void putf(writer_t *w, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(w, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Python's float repr: the shortest digits that round-trip, fixed notation
 * for exponents -4..15, else d.ddde+XX.  `force_point` adds ".0" to integral
 * values (float repr does, complex parts do not). */
static void put_double(writer_t *w, double f, int force_point)
{
    if (isnan(f)) {
        puts_(w, "nan");
        return;
    }
    if (isinf(f)) {
        puts_(w, f < 0 ? "-inf" : "inf");
        return;
    }
    char e[40];
    for (int prec = 0; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, f);
        if (strtod(e, NULL) == f)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    char out[64];
    size_t o = 0;
    if (neg)
        out[o++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int z = -1; z > exp; z--)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        } else {
            for (int i = 0; i <= exp; i++)
                out[o++] = (size_t)i < nd ? digits[i] : '0';
            if ((size_t)exp + 1 < nd) {
                out[o++] = '.';
                memcpy(out + o, digits + exp + 1, nd - (size_t)exp - 1);
                o += nd - (size_t)exp - 1;
            } else if (force_point) {
                out[o++] = '.';
                out[o++] = '0';
            }
        }
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "e%c%02d",
                              exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    put(w, out, o);
}

/* Decimal digits of a bigint by repeated division by 10**9. */
static void put_bigint(writer_t *w, const uint8_t *b, size_t len)
{
    if (len > 1024) {
        putf(w, "<int of %zu bytes>", len);
        return;
    }
    size_t nl = (len + 3) / 4;
    uint32_t limbs[256 + 1];
    int neg = (b[len - 1] & 0x80) != 0;
    unsigned carry = 1;
    memset(limbs, 0, sizeof limbs);
    for (size_t i = 0; i < len; i++) {
        unsigned x = b[i];
        if (neg) {
            x = (uint8_t)~b[i] + carry;
            carry = x >> 8;
            x &= 0xff;
        }
        limbs[i / 4] |= (uint32_t)x << (8 * (i % 4));
    }
    char dec[2500 + 16];
    size_t pos = sizeof dec;
    dec[--pos] = '\0';
    while (nl > 0) {
        uint64_t rem = 0;
        for (size_t i = nl; i-- > 0;) {
            uint64_t cur = (rem << 32) | limbs[i];
            limbs[i] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        while (nl > 0 && limbs[nl - 1] == 0)
            nl--;
        for (int k = 0; k < 9 && (nl > 0 || rem != 0); k++) {
            dec[--pos] = (char)('0' + rem % 10);
            rem /= 10;
        }
    }
    if (dec[pos] == '\0')
        dec[--pos] = '0';
    if (neg)
        dec[--pos] = '-';
    puts_(w, dec + pos);
}

static void put_quoted(writer_t *w, const char *s, size_t len, int is_str)
{
    const uint8_t *u = (const uint8_t *)s;
    int squote = memchr(s, '\'', len) != NULL;
    int dquote = memchr(s, '"', len) != NULL;
    char q = squote && !dquote ? '"' : '\'';
    put(w, &q, 1);
    for (size_t i = 0; i < len && !w->full; i++) {
        uint8_t c = u[i];
        if (c == (uint8_t)q || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(w, esc, 2);
        } else if (c == '\n') {
            puts_(w, "\\n");
        } else if (c == '\r') {
            puts_(w, "\\r");
        } else if (c == '\t') {
            puts_(w, "\\t");
        } else if (c < 0x20 || c == 0x7f || (!is_str && c >= 0x80)) {
            putf(w, "\\x%02x", c);
        } else if (c < 0x80) {
            put(w, (const char *)&u[i], 1);
        } else if (c == 0xc2 && i + 1 < len && u[i + 1] >= 0x80 &&
                   u[i + 1] < 0xa0) {
            putf(w, "\\x%02x", u[++i]); /* C1 controls */
        } else if (c == 0xed && i + 2 < len && u[i + 1] >= 0xa0) {
            unsigned cp = 0xd000u | (u[i + 1] & 0x3fu) << 6 | (u[i + 2] & 0x3f);
            putf(w, "\\u%04x", cp); /* lone surrogate */
            i += 2;
        } else {
            size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
            if (n == 0 || i + n > len) {
                putf(w, "\\x%02x", c);
            } else {
                put(w, s + i, n);
                i += n - 1;
            }
        }
    }
    put(w, &q, 1);
}

static void repr_rec(writer_t *w, const pk_value_t *v);

static void repr_items(writer_t *w, pk_value_t *const *items, size_t n)
{
    for (size_t i = 0; i < n && !w->full; i++) {
        if (i)
            puts_(w, ", ");
        repr_rec(w, items[i]);
    }
}

static void repr_container(writer_t *w, const pk_value_t *v)
{
    switch ((pk_type_t)v->type) {
    case PK_TUPLE:
        puts_(w, "(");
        repr_items(w, v->u.seq.items, v->u.seq.len);
        puts_(w, v->u.seq.len == 1 ? ",)" : ")");
        break;
    case PK_LIST:
        puts_(w, "[");
        repr_items(w, v->u.seq.items, v->u.seq.len);
        puts_(w, "]");
        break;
    case PK_SET:
    case PK_FROZENSET: {
        int frozen = v->type == PK_FROZENSET;
        if (v->u.seq.len == 0) {
            puts_(w, frozen ? "frozenset()" : "set()");
            break;
        }
        puts_(w, frozen ? "frozenset({" : "{");
        repr_items(w, v->u.seq.items, v->u.seq.len);
        puts_(w, frozen ? "})" : "}");
        break;
    }
    case PK_DICT:
        puts_(w, "{");
        for (size_t i = 0; i < v->u.dict.len && !w->full; i++) {
            if (i)
                puts_(w, ", ");
            repr_rec(w, v->u.dict.entries[i].key);
            puts_(w, ": ");
            repr_rec(w, v->u.dict.entries[i].value);
        }
        puts_(w, "}");
        break;
    default:
        break;
    }
}

static void repr_rec(writer_t *w, const pk_value_t *v)
{
    if (w->full)
        return;
    if (v == NULL) {
        puts_(w, "<NULL>");
        return;
    }
    char tmp[32];
    switch ((pk_type_t)v->type) {
    case PK_NONE:
        puts_(w, "None");
        return;
    case PK_BOOL:
        puts_(w, v->u.b ? "True" : "False");
        return;
    case PK_INT:
        putf(w, "%lld", (long long)v->u.i);
        return;
    case PK_BIGINT:
        put_bigint(w, v->u.big.bytes, v->u.big.len);
        return;
    case PK_FLOAT:
        put_double(w, v->u.f, 1);
        return;
    case PK_COMPLEX:
        if (v->u.c.re == 0 && !signbit(v->u.c.re)) {
            put_double(w, v->u.c.im, 0);
            puts_(w, "j");
        } else {
            puts_(w, "(");
            put_double(w, v->u.c.re, 0);
            if (!(v->u.c.im < 0 || (v->u.c.im == 0 && signbit(v->u.c.im))) ||
                isnan(v->u.c.im))
                puts_(w, "+");
            put_double(w, v->u.c.im, 0);
            puts_(w, "j)");
        }
        return;
    case PK_STR:
        put_quoted(w, v->u.str.ptr, v->u.str.len, 1);
        return;
    case PK_BYTES:
        puts_(w, "b");
        put_quoted(w, v->u.str.ptr, v->u.str.len, 0);
        return;
    case PK_BYTEARRAY:
        puts_(w, "bytearray(b");
        put_quoted(w, v->u.str.ptr, v->u.str.len, 0);
        puts_(w, ")");
        return;
    case PK_PICKLEBUFFER:
        puts_(w, "PickleBuffer(b");
        put_quoted(w, v->u.str.ptr, v->u.str.len, 0);
        puts_(w, ")");
        return;
    case PK_GLOBAL:
        puts_(w, v->u.global.module);
        puts_(w, ".");
        puts_(w, v->u.global.name);
        return;
    case PK_OBJECT:
        repr_rec(w, v->u.obj.callable);
        if (v->u.obj.items != NULL) { /* OrderedDict({...}), deque([...]) */
            puts_(w, "(");
            repr_rec(w, v->u.obj.items);
            puts_(w, ")");
        } else {
            repr_rec(w, v->u.obj.args);
        }
        return;
    case PK_DTYPE:
        putf(w, "dtype('%s')", pk_dtype_str(v->u.dtype, tmp, sizeof tmp));
        return;
    case PK_NDARRAY: {
        const pk_ndarray_t *nd = v->u.nd;
        putf(w, "%s(dtype='%s', shape=(",
             (v->flags & PK_VF_NPSCALAR) ? "scalar" : "array",
             pk_dtype_str(&nd->dtype, tmp, sizeof tmp));
        for (int d = 0; d < nd->ndim; d++)
            putf(w, d ? ", %lld" : "%lld", (long long)nd->shape[d]);
        puts_(w, nd->ndim == 1 ? ",))" : "))");
        return;
    }
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
    case PK_FROZENSET:
    case PK_DICT:
        break;
    default:
        putf(w, "<type %d>", v->type);
        return;
    }
    for (int i = 0; i < w->depth; i++) {
        if (w->stack[i] == v) {
            puts_(w, v->type == PK_LIST    ? "[...]"
                     : v->type == PK_TUPLE ? "(...)"
                                           : "{...}");
            return;
        }
    }
    if (w->depth == (int)PK_ARRAY_LEN(w->stack)) {
        puts_(w, "...");
        return;
    }
    w->stack[w->depth++] = v;
    repr_container(w, v);
    w->depth--;
}

const char *pk_repr(const pk_value_t *v, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    writer_t w = {.buf = buf, .size = size};
    repr_rec(&w, v);
    buf[w.pos] = '\0';
    if (w.full && size >= 4) {
        /* End on "...", without splitting a UTF-8 sequence. */
        size_t p = w.pos >= 3 ? w.pos - 3 : 0;
        while (p > 0 && ((uint8_t)buf[p] & 0xc0) == 0x80)
            p--;
        memcpy(buf + p, "...", 4);
    }
    return buf;
}
