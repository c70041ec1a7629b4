/*
 * test_value.c - the value model: documents, every constructor and accessor,
 * dict/set semantics (1 == True == 1.0 collapse, positions kept, unhashable
 * keys refused), Python equality and hashing, cycles, bigint normalisation,
 * numpy dtypes and arrays, repr, and allocation-failure injection with leak
 * accounting.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/faultsim.h"

#include "picklepool/value.h"

/* Declared by value.h's comment but not yet in the header. */
pk_value_t *pk_str_checked(pk_doc_t *doc, const char *utf8, size_t len,
                           pk_err_t *err);

static char rbuf[4096];

static const char *repr(const pk_value_t *v)
{
    return pk_repr(v, rbuf, sizeof rbuf);
}

static int doc_setup(void **state)
{
    pk_doc_t *doc = NULL;
    if (pk_doc_new(&doc) != PK_OK)
        return -1;
    *state = doc;
    return 0;
}

static int doc_teardown(void **state)
{
    pk_doc_t *doc = *state;
    pk_doc_free(&doc);
    return 0;
}

static uint64_t hash_of(const pk_value_t *v)
{
    uint64_t h = 0;
    assert_int_equal(pk_hash(v, &h), PK_OK);
    return h;
}

/* ---- documents ------------------------------------------------------- */

static int cb_order[8];
static int cb_count;

static void record_cb(void *arg)
{
    cb_order[cb_count++] = (int)(intptr_t)arg;
}

static void test_doc_lifecycle(void **state)
{
    (void)state;
    pk_doc_t *doc = NULL;
    pk_doc_free(NULL);
    pk_doc_free(&doc); /* NULL doc: no-op */
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_non_null(doc);
    cb_count = 0;
    for (int i = 1; i <= 5; i++)
        assert_int_equal(pk_doc_on_free(doc, record_cb, (void *)(intptr_t)i),
                         PK_OK);
    pk_doc_free(&doc);
    assert_null(doc);
    pk_doc_free(&doc); /* idempotent */
    assert_int_equal(cb_count, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(cb_order[i], 5 - i); /* reverse order */
}

static void test_doc_alloc(void **state)
{
    pk_doc_t *doc = *state;
    size_t before = pk_doc_size(doc);
    for (size_t n = 0; n < 100; n++) {
        char *p = pk_doc_alloc(doc, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 8, 0);
        memset(p, 0xab, n);
    }
    char *big = pk_doc_alloc(doc, 1 << 20);
    assert_non_null(big);
    assert_int_equal((uintptr_t)big % 8, 0);
    memset(big, 1, 1 << 20);
    assert_true(pk_doc_size(doc) >= before + (1 << 20));
    assert_null(pk_doc_alloc(doc, SIZE_MAX));
    assert_null(pk_doc_alloc(doc, SIZE_MAX - 16));
}

/* ---- scalars ------------------------------------------------------------ */

static void test_singletons(void **state)
{
    (void)state;
    assert_int_equal(pk_none()->type, PK_NONE);
    assert_ptr_equal(pk_none(), pk_none());
    assert_int_equal(pk_bool(1)->type, PK_BOOL);
    assert_int_equal(pk_bool(7)->u.b, 1);
    assert_int_equal(pk_bool(0)->u.b, 0);
    assert_ptr_equal(pk_bool(1), pk_bool(2));
    assert_ptr_not_equal(pk_bool(1), pk_bool(0));
    /* Used in two docs, freed with neither. */
    pk_doc_t *a = NULL, *b = NULL;
    assert_int_equal(pk_doc_new(&a), PK_OK);
    assert_int_equal(pk_doc_new(&b), PK_OK);
    pk_value_t *la = pk_list_new(a, 0), *lb = pk_list_new(b, 0);
    assert_int_equal(pk_list_append(a, la, pk_none()), PK_OK);
    assert_int_equal(pk_list_append(b, lb, pk_none()), PK_OK);
    pk_doc_free(&a);
    pk_doc_free(&b);
    assert_int_equal(pk_none()->type, PK_NONE);
    assert_string_equal(repr(pk_none()), "None");
    assert_string_equal(repr(pk_bool(1)), "True");
    assert_string_equal(repr(pk_bool(0)), "False");
}

static void test_scalars(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *v = pk_int(doc, -42);
    assert_int_equal(v->type, PK_INT);
    assert_int_equal(v->u.i, -42);
    v = pk_float(doc, 2.5);
    assert_int_equal(v->type, PK_FLOAT);
    assert_true(v->u.f == 2.5);
    v = pk_complex(doc, 1, -2);
    assert_int_equal(v->type, PK_COMPLEX);
    assert_true(v->u.c.re == 1 && v->u.c.im == -2);

    v = pk_str(doc, "a\0b", 3);
    assert_int_equal(v->type, PK_STR);
    assert_int_equal(pk_len(v), 3);
    assert_memory_equal(v->u.str.ptr, "a\0b", 4); /* NUL-terminated */
    v = pk_cstr(doc, "h\xc3\xa9llo");
    assert_int_equal(v->u.str.len, 6);
    assert_string_equal(v->u.str.ptr, "h\xc3\xa9llo");
    v = pk_str(doc, NULL, 0);
    assert_int_equal(v->u.str.len, 0);
    assert_string_equal(v->u.str.ptr, "");

    char src[] = "xyz";
    v = pk_bytes(doc, src, 3);
    src[0] = 'Q'; /* copied */
    assert_int_equal(v->type, PK_BYTES);
    assert_string_equal(v->u.str.ptr, "xyz");
    v = pk_bytearray(doc, "\x00\xff", 2);
    assert_int_equal(v->type, PK_BYTEARRAY);
    assert_int_equal(pk_len(v), 2);

    v = pk_global(doc, "numpy.core.multiarray", "_reconstruct");
    assert_int_equal(v->type, PK_GLOBAL);
    assert_string_equal(v->u.global.module, "numpy.core.multiarray");
    assert_string_equal(v->u.global.name, "_reconstruct");
    assert_int_equal(pk_len(v), 0);

    static const char ext[] = "borrowed";
    v = pk_picklebuffer(doc, ext, 8, PK_VF_BORROWED | PK_VF_READONLY);
    assert_int_equal(v->type, PK_PICKLEBUFFER);
    assert_ptr_equal(v->u.str.ptr, ext);
    assert_int_equal(v->flags, PK_VF_BORROWED | PK_VF_READONLY);
    assert_int_equal(pk_len(v), 8);
    v = pk_picklebuffer(doc, ext, 8, 0);
    assert_ptr_not_equal(v->u.str.ptr, ext);
    assert_int_equal(v->flags, 0);
    assert_string_equal(v->u.str.ptr, "borrowed");
}

static void test_str_checked(void **state)
{
    pk_doc_t *doc = *state;
    pk_err_t err = PK_OK;
    static const struct {
        const char *s;
        size_t len;
        int ok;
    } cases[] = {
        {"plain", 5, 1},
        {"\xc3\xa9", 2, 1},
        {"\xed\xa0\x80", 3, 1},     /* lone surrogate (surrogatepass) */
        {"\xf0\x9f\x98\x80", 4, 1}, /* U+1F600 */
        {"\xc3", 1, 0},             /* truncated */
        {"\xc0\x80", 2, 0},         /* overlong NUL */
        {"\xe0\x80\x80", 3, 0},     /* overlong */
        {"\xf4\x90\x80\x80", 4, 0}, /* > U+10FFFF */
        {"\xff", 1, 0},
        {"\x80", 1, 0},
        {"a\xc3(", 3, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pk_value_t *v = pk_str_checked(doc, cases[i].s, cases[i].len, &err);
        if (cases[i].ok) {
            assert_non_null(v);
            assert_int_equal(err, PK_OK);
        } else {
            assert_null(v);
            assert_int_equal(err, PK_EINVAL);
        }
    }
}

static void test_bigint_normalisation(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *v = pk_bigint(doc, "", 0);
    assert_int_equal(v->type, PK_INT);
    assert_int_equal(v->u.i, 0);
    v = pk_bigint(doc, "\xff", 1);
    assert_int_equal(v->type, PK_INT);
    assert_int_equal(v->u.i, -1);
    v = pk_bigint(doc, "\xff\x00", 2);
    assert_int_equal(v->u.i, 255);
    v = pk_bigint(doc, "\x00\x80", 2);
    assert_int_equal(v->u.i, -32768);
    v = pk_bigint(doc, "\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00\x00", 11);
    assert_int_equal(v->type, PK_INT);
    assert_true(v->u.i == INT64_MAX);
    v = pk_bigint(doc, "\x00\x00\x00\x00\x00\x00\x00\x80\xff\xff", 10);
    assert_int_equal(v->type, PK_INT);
    assert_true(v->u.i == INT64_MIN);
    uint8_t zeros[40] = {0};
    v = pk_bigint(doc, zeros, sizeof zeros);
    assert_int_equal(v->type, PK_INT);
    assert_int_equal(v->u.i, 0);

    /* 2**63: needs a 0x00 sign byte. */
    v = pk_bigint(doc, "\x00\x00\x00\x00\x00\x00\x00\x80\x00\x00\x00", 11);
    assert_int_equal(v->type, PK_BIGINT);
    assert_int_equal(v->u.big.len, 9);
    assert_memory_equal(v->u.big.bytes, "\x00\x00\x00\x00\x00\x00\x00\x80\x00",
                        9);
    assert_string_equal(repr(v), "9223372036854775808");
    /* -2**63 - 1 */
    v = pk_bigint(doc, "\xff\xff\xff\xff\xff\xff\xff\x7f\xff\xff", 10);
    assert_int_equal(v->type, PK_BIGINT);
    assert_int_equal(v->u.big.len, 9);
    assert_string_equal(repr(v), "-9223372036854775809");
    /* 2**64 */
    v = pk_bigint(doc, "\x00\x00\x00\x00\x00\x00\x00\x00\x01", 9);
    assert_int_equal(v->type, PK_BIGINT);
    assert_string_equal(repr(v), "18446744073709551616");
    double d = 0;
    assert_int_equal(pk_as_double(v, &d), PK_OK);
    assert_true(d == 18446744073709551616.0);
    int64_t i = 0;
    assert_int_equal(pk_as_int(v, &i), PK_ETYPE);
    /* -(2**64) */
    v = pk_bigint(doc, "\x00\x00\x00\x00\x00\x00\x00\x00\xff", 9);
    assert_string_equal(repr(v), "-18446744073709551616");
    assert_int_equal(pk_as_double(v, &d), PK_OK);
    assert_true(d == -18446744073709551616.0);
    /* 10**30 = 0xc9f2c9cd04674edea40000000 */
    static const uint8_t e30[] = {0x00, 0x00, 0x00, 0x40, 0xea, 0xed, 0x74,
                                  0x46, 0xd0, 0x9c, 0x2c, 0x9f, 0x0c};
    v = pk_bigint(doc, e30, sizeof e30);
    assert_string_equal(repr(v), "1000000000000000000000000000000");
    assert_int_equal(pk_as_double(v, &d), PK_OK);
    assert_true(d == 1e30);
    /* Rounding: 2**64 + 2**11 + 1 rounds up to 2**64 + 2**12. */
    v = pk_bigint(doc, "\x01\x08\x00\x00\x00\x00\x00\x00\x01", 9);
    assert_int_equal(pk_as_double(v, &d), PK_OK);
    assert_true(d == 18446744073709551616.0 + 4096.0);
    /* Too large for a double. */
    uint8_t huge[200];
    memset(huge, 0, sizeof huge);
    huge[198] = 1;
    v = pk_bigint(doc, huge, sizeof huge);
    assert_int_equal(v->type, PK_BIGINT);
    assert_int_equal(v->u.big.len, 199);
    assert_int_equal(pk_as_double(v, &d), PK_ELIMIT);
}

static void test_as_number(void **state)
{
    pk_doc_t *doc = *state;
    int64_t i = 0;
    double d = 0;
    assert_int_equal(pk_as_int(pk_str(doc, "1", 1), &i), PK_ETYPE);
    assert_int_equal(pk_as_int(pk_float(doc, 1.0), &i), PK_ETYPE);
    assert_int_equal(pk_as_int(pk_none(), &i), PK_ETYPE);
    assert_int_equal(pk_as_int(pk_bool(1), &i), PK_OK);
    assert_int_equal(i, 1);
    assert_int_equal(pk_as_int(pk_int(doc, INT64_MIN), &i), PK_OK);
    assert_true(i == INT64_MIN);
    assert_int_equal(pk_as_double(pk_complex(doc, 1, 0), &d), PK_ETYPE);
    assert_int_equal(pk_as_double(pk_str(doc, "1", 1), &d), PK_ETYPE);
    assert_int_equal(pk_as_double(pk_bool(1), &d), PK_OK);
    assert_true(d == 1.0);
    assert_int_equal(pk_as_double(pk_int(doc, -3), &d), PK_OK);
    assert_true(d == -3.0);
    assert_int_equal(pk_as_double(pk_float(doc, 0.25), &d), PK_OK);
    assert_true(d == 0.25);
}

/* ---- containers --------------------------------------------------------- */

static void test_sequences(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *t = pk_tuple_new(doc, 3);
    assert_int_equal(t->type, PK_TUPLE);
    assert_int_equal(pk_len(t), 3);
    for (size_t i = 0; i < 3; i++)
        assert_null(pk_item(t, i));
    pk_tuple_set(t, 0, pk_int(doc, 1));
    pk_tuple_set(t, 1, pk_none());
    pk_tuple_set(t, 2, pk_cstr(doc, "x"));
    assert_null(pk_item(t, 3));
    assert_string_equal(repr(t), "(1, None, 'x')");
    assert_string_equal(repr(pk_tuple_new(doc, 0)), "()");
    pk_value_t *t1 = pk_tuple_new(doc, 1);
    pk_tuple_set(t1, 0, pk_int(doc, 5));
    assert_string_equal(repr(t1), "(5,)");

    pk_value_t *l = pk_list_new(doc, 0);
    assert_int_equal(l->type, PK_LIST);
    assert_int_equal(pk_len(l), 0);
    for (int64_t i = 0; i < 100000; i++)
        assert_int_equal(pk_list_append(doc, l, pk_int(doc, i)), PK_OK);
    assert_int_equal(pk_len(l), 100000);
    for (size_t i = 0; i < 100000; i += 997)
        assert_int_equal(pk_item(l, i)->u.i, (int64_t)i);
    assert_null(pk_item(l, 100000));
    assert_null(pk_item(pk_int(doc, 1), 0));

    pk_value_t *pre = pk_list_new(doc, 10);
    assert_int_equal(pk_len(pre), 0);
    assert_true(pre->u.seq.cap >= 10);

    /* Append routes sets through the hash; non-sequences are refused. */
    pk_value_t *s = pk_set_new(doc, 0);
    assert_int_equal(pk_list_append(doc, s, pk_int(doc, 1)), PK_OK);
    assert_int_equal(pk_list_append(doc, s, pk_bool(1)), PK_OK);
    assert_int_equal(pk_len(s), 1);
    assert_int_equal(pk_list_append(doc, pk_dict_new(doc, 0), pk_none()),
                     PK_ETYPE);
    assert_int_equal(pk_list_append(doc, pk_int(doc, 1), pk_none()), PK_ETYPE);
    /* Tuples grow while decoding. */
    pk_value_t *t0 = pk_tuple_new(doc, 0);
    assert_int_equal(pk_list_append(doc, t0, pk_int(doc, 1)), PK_OK);
    assert_int_equal(pk_len(t0), 1);
}

static void test_list_growth_memory(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *l = pk_list_new(doc, 0);
    pk_value_t *one = pk_int(doc, 1);
    size_t before = pk_doc_size(doc);
    for (int i = 0; i < 1000000; i++)
        assert_int_equal(pk_list_append(doc, l, one), PK_OK);
    /* 8 MB of pointers; in-place growth keeps the total near that. */
    assert_true(pk_doc_size(doc) - before < 20u * 1000 * 1000);

    /* Many small lists: linear, not quadratic. */
    before = pk_doc_size(doc);
    for (int i = 0; i < 100000; i++) {
        pk_value_t *s = pk_list_new(doc, 0);
        for (int k = 0; k < 20; k++)
            assert_int_equal(pk_list_append(doc, s, one), PK_OK);
    }
    /* 48 + 32 + 64 + 128 + 256 bytes each, plus one partly used chunk. */
    assert_true(pk_doc_size(doc) - before < 100000u * 600 + (8u << 20));
}

static void test_dict_semantics(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *d = pk_dict_new(doc, 0);
    assert_int_equal(d->type, PK_DICT);
    pk_value_t *one = pk_int(doc, 1);
    assert_int_equal(pk_dict_set(doc, d, one, pk_cstr(doc, "int")), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, pk_bool(1), pk_cstr(doc, "bool")),
                     PK_OK);
    assert_int_equal(
        pk_dict_set(doc, d, pk_float(doc, 1.0), pk_cstr(doc, "float")), PK_OK);
    assert_int_equal(
        pk_dict_set(doc, d, pk_complex(doc, 1, 0), pk_cstr(doc, "complex")),
        PK_OK);
    assert_int_equal(pk_len(d), 1);
    assert_ptr_equal(d->u.dict.entries[0].key, one); /* original key kept */
    assert_string_equal(repr(d), "{1: 'complex'}");
    assert_string_equal(pk_dict_get(d, pk_bool(1))->u.str.ptr, "complex");
    assert_null(pk_dict_get(d, pk_int(doc, 2)));
    assert_null(pk_dict_get(d, pk_float(doc, 1.5)));
    assert_null(pk_dict_get(d, pk_cstr(doc, "1")));

    /* An equal key keeps its position. */
    assert_int_equal(pk_dict_set(doc, d, pk_cstr(doc, "b"), pk_int(doc, 2)),
                     PK_OK);
    assert_int_equal(pk_dict_set(doc, d, pk_cstr(doc, "c"), pk_int(doc, 3)),
                     PK_OK);
    assert_int_equal(pk_dict_set(doc, d, pk_cstr(doc, "b"), pk_int(doc, 4)),
                     PK_OK);
    assert_string_equal(repr(d), "{1: 'complex', 'b': 4, 'c': 3}");
    assert_int_equal(pk_dict_get_str(d, "b")->u.i, 4);
    assert_null(pk_dict_get_str(d, "zz"));
    /* False and 0 and 0.0 and -0.0 are one key; None is another. */
    assert_int_equal(pk_dict_set(doc, d, pk_bool(0), pk_none()), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, pk_float(doc, -0.0), pk_none()),
                     PK_OK);
    assert_int_equal(pk_dict_set(doc, d, pk_none(), pk_none()), PK_OK);
    assert_int_equal(pk_len(d), 5);
    assert_string_equal(repr(d), "{1: 'complex', 'b': 4, 'c': 3, False: None, "
                                 "None: None}");
    /* Tuples, frozensets, bytes, globals and dtypes are keys. */
    pk_value_t *tk = pk_tuple_new(doc, 2);
    pk_tuple_set(tk, 0, pk_int(doc, 1));
    pk_tuple_set(tk, 1, pk_cstr(doc, "a"));
    assert_int_equal(pk_dict_set(doc, d, tk, pk_int(doc, 10)), PK_OK);
    pk_value_t *tk2 = pk_tuple_new(doc, 2);
    pk_tuple_set(tk2, 0, pk_float(doc, 1.0));
    pk_tuple_set(tk2, 1, pk_cstr(doc, "a"));
    assert_int_equal(pk_dict_get(d, tk2)->u.i, 10);
    assert_int_equal(pk_dict_set(doc, d, pk_bytes(doc, "b", 1), pk_none()),
                     PK_OK);
    assert_int_equal(pk_len(d), 7); /* b'b' is not 'b' */
    assert_int_equal(pk_dict_set(doc, d, pk_global(doc, "m", "f"), pk_none()),
                     PK_OK);
    pk_dtype_t dt;
    assert_int_equal(pk_dtype_parse("<f8", &dt), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, pk_dtype_value(doc, &dt), pk_none()),
                     PK_OK);
    assert_int_equal(pk_len(d), 9);
}

static void test_unhashable(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *d = pk_dict_new(doc, 4);
    pk_value_t *s = pk_set_new(doc, 4);
    pk_value_t *lst = pk_list_new(doc, 0);
    pk_value_t *tup = pk_tuple_new(doc, 1);
    pk_tuple_set(tup, 0, lst);
    pk_value_t *fs = pk_frozenset_new(doc, 0);
    int64_t shape[1] = {2};
    pk_dtype_t dt;
    assert_int_equal(pk_dtype_parse("<i4", &dt), PK_OK);
    pk_value_t *keys[] = {
        lst,
        pk_dict_new(doc, 0),
        pk_set_new(doc, 0),
        pk_bytearray(doc, "x", 1),
        pk_ndarray(doc, &dt, 1, shape, NULL, 0),
        pk_picklebuffer(doc, "x", 1, 0),
        tup,
        fs,
    };
    pk_value_t *inner = pk_tuple_new(doc, 1);
    pk_tuple_set(inner, 0, tup);
    /* frozenset holding a tuple holding a list cannot be built with
     * pk_set_add; fill the frozenset "fs" by hand as a decoder bug might. */
    fs->u.seq.items = pk_doc_alloc(doc, sizeof(pk_value_t *));
    fs->u.seq.items[0] = lst;
    fs->u.seq.len = fs->u.seq.cap = 1;
    uint64_t h;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        assert_non_null(keys[i]);
        assert_int_equal(pk_hash(keys[i], &h), PK_EUNHASHABLE);
        assert_int_equal(pk_dict_set(doc, d, keys[i], pk_none()),
                         PK_EUNHASHABLE);
        assert_int_equal(pk_set_add(doc, s, keys[i]), PK_EUNHASHABLE);
        assert_null(pk_dict_get(d, keys[i]));
        assert_false(pk_set_contains(s, keys[i]));
    }
    assert_int_equal(pk_hash(inner, &h), PK_EUNHASHABLE);
    assert_int_equal(pk_len(d), 0);
    assert_int_equal(pk_len(s), 0);
    /* Wrong container type. */
    assert_int_equal(pk_dict_set(doc, s, pk_none(), pk_none()), PK_ETYPE);
    assert_int_equal(pk_set_add(doc, d, pk_none()), PK_ETYPE);
    assert_null(pk_dict_get(s, pk_none()));
    assert_false(pk_set_contains(d, pk_none()));
    /* A tuple that contains itself is refused, not a stack overflow. */
    pk_value_t *self = pk_tuple_new(doc, 1);
    pk_tuple_set(self, 0, self);
    assert_int_equal(pk_hash(self, &h), PK_EUNHASHABLE);
    /* A tuple with an unset slot is unhashable too. */
    assert_int_equal(pk_hash(pk_tuple_new(doc, 2), &h), PK_EUNHASHABLE);
}

static void test_dict_many(void **state)
{
    pk_doc_t *doc = *state;
    enum { N = 100000 };
    pk_value_t *d = pk_dict_new(doc, 0);
    char key[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(key, sizeof key, "key%d", i);
        assert_int_equal(
            pk_dict_set(doc, d, pk_str(doc, key, (size_t)n), pk_int(doc, i)),
            PK_OK);
    }
    assert_int_equal(pk_len(d), N);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "key%d", i);
        pk_value_t *v = pk_dict_get_str(d, key);
        assert_non_null(v);
        assert_int_equal(v->u.i, i);
        assert_string_equal(d->u.dict.entries[i].key->u.str.ptr, key);
    }
    assert_null(pk_dict_get_str(d, "key100000"));
    /* Integer keys with a pattern that defeats a weak hash. */
    pk_value_t *di = pk_dict_new(doc, 0);
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(
            pk_dict_set(doc, di, pk_int(doc, i << 20), pk_int(doc, i)), PK_OK);
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(pk_dict_get(di, pk_float(doc, (double)(i << 20)))->u.i,
                         i);
    /* Overwrite all: length unchanged. */
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(pk_dict_set(doc, di, pk_int(doc, i << 20), pk_none()),
                         PK_OK);
    assert_int_equal(pk_len(di), N);
    pk_value_t *s = pk_set_new(doc, 0);
    for (int64_t i = 0; i < N; i++)
        assert_int_equal(pk_set_add(doc, s, pk_int(doc, i % 1000)), PK_OK);
    assert_int_equal(pk_len(s), 1000);
    for (int64_t i = 0; i < 1000; i++)
        assert_true(pk_set_contains(s, pk_float(doc, (double)i)));
    assert_false(pk_set_contains(s, pk_int(doc, 1000)));
}

static void test_sets(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *a = pk_set_new(doc, 0), *b = pk_frozenset_new(doc, 0);
    assert_int_equal(a->type, PK_SET);
    assert_int_equal(b->type, PK_FROZENSET);
    assert_string_equal(repr(a), "set()");
    assert_string_equal(repr(b), "frozenset()");
    assert_true(pk_equal(a, b)); /* set() == frozenset() */
    for (int64_t i = 1; i <= 3; i++)
        assert_int_equal(pk_set_add(doc, a, pk_int(doc, i)), PK_OK);
    for (int64_t i = 3; i >= 1; i--)
        assert_int_equal(pk_set_add(doc, b, pk_float(doc, (double)i)), PK_OK);
    assert_int_equal(pk_set_add(doc, a, pk_bool(1)), PK_OK);
    assert_int_equal(pk_len(a), 3);
    assert_string_equal(repr(a), "{1, 2, 3}");
    assert_string_equal(repr(b), "frozenset({3.0, 2.0, 1.0})");
    assert_true(pk_equal(a, b));
    assert_true(pk_set_contains(a, pk_complex(doc, 2, 0)));
    assert_false(pk_set_contains(a, pk_complex(doc, 2, 1)));
    assert_ptr_equal(pk_item(a, 0)->type, PK_INT);
    /* frozenset hash does not depend on insertion order. */
    pk_value_t *c = pk_frozenset_new(doc, 0);
    for (int64_t i = 1; i <= 3; i++)
        assert_int_equal(pk_set_add(doc, c, pk_int(doc, i)), PK_OK);
    assert_true(hash_of(b) == hash_of(c));
    uint64_t h;
    assert_int_equal(pk_hash(a, &h), PK_EUNHASHABLE);
    /* frozensets as dict keys and set items. */
    pk_value_t *d = pk_dict_new(doc, 0);
    assert_int_equal(pk_dict_set(doc, d, b, pk_int(doc, 1)), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, c, pk_int(doc, 2)), PK_OK);
    assert_int_equal(pk_len(d), 1);
    assert_int_equal(pk_dict_get(d, c)->u.i, 2);
    pk_value_t *c2 = pk_frozenset_new(doc, 0);
    assert_int_equal(pk_set_add(doc, c2, pk_int(doc, 1)), PK_OK);
    assert_false(pk_equal(c, c2));
    assert_null(pk_dict_get(d, c2));
}

/* ---- equality and hashing ----------------------------------------------- */

static void test_numeric_equality(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *vals[] = {pk_bool(1), pk_int(doc, 1), pk_float(doc, 1.0),
                          pk_complex(doc, 1.0, 0.0)};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++) {
            assert_true(pk_equal(vals[i], vals[j]));
            assert_true(hash_of(vals[i]) == hash_of(vals[j]));
        }
    assert_false(pk_equal(pk_int(doc, 1), pk_complex(doc, 1.0, 1.0)));
    assert_false(pk_equal(pk_int(doc, 1), pk_float(doc, 1.5)));
    assert_false(pk_equal(pk_int(doc, 1), pk_cstr(doc, "1")));
    assert_false(pk_equal(pk_none(), pk_bool(0)));
    assert_true(pk_equal(pk_int(doc, 0), pk_float(doc, -0.0)));
    assert_true(hash_of(pk_int(doc, 0)) == hash_of(pk_float(doc, -0.0)));
    assert_true(pk_equal(pk_complex(doc, 1, 2), pk_complex(doc, 1, 2)));
    assert_true(hash_of(pk_complex(doc, 1, 2)) ==
                hash_of(pk_complex(doc, 1, 2)));

    /* Exact int/float comparison: 2**53 + 1 != float(2**53). */
    int64_t p53 = (int64_t)1 << 53;
    assert_false(pk_equal(pk_int(doc, p53 + 1), pk_float(doc, (double)p53)));
    assert_true(pk_equal(pk_int(doc, p53), pk_float(doc, (double)p53)));
    assert_true(pk_equal(pk_int(doc, INT64_MIN), pk_float(doc, -0x1p63)));
    assert_true(hash_of(pk_int(doc, INT64_MIN)) ==
                hash_of(pk_float(doc, -0x1p63)));
    assert_false(pk_equal(pk_int(doc, INT64_MAX), pk_float(doc, 0x1p63)));

    /* 2**64 as bigint and float. */
    pk_value_t *big = pk_bigint(doc, "\x00\x00\x00\x00\x00\x00\x00\x00\x01", 9);
    pk_value_t *fbig = pk_float(doc, 0x1p64);
    assert_true(pk_equal(big, fbig));
    assert_true(pk_equal(fbig, big));
    assert_true(pk_equal(big, pk_complex(doc, 0x1p64, 0)));
    assert_true(hash_of(big) == hash_of(fbig));
    assert_true(hash_of(big) == hash_of(pk_complex(doc, 0x1p64, 0)));
    pk_value_t *fneg = pk_float(doc, -0x1p64);
    pk_value_t *bneg =
        pk_bigint(doc, "\x00\x00\x00\x00\x00\x00\x00\x00\xff", 9);
    assert_true(pk_equal(bneg, fneg));
    assert_true(hash_of(bneg) == hash_of(fneg));
    /* -2**63 - 2048 is exactly a double. */
    pk_value_t *b2 = pk_bigint(doc, "\x00\xf8\xff\xff\xff\xff\xff\x7f\xff", 9);
    assert_int_equal(b2->type, PK_BIGINT);
    assert_true(pk_equal(b2, pk_float(doc, -0x1p63 - 2048.0)));
    assert_true(hash_of(b2) == hash_of(pk_float(doc, -0x1p63 - 2048.0)));
    assert_false(pk_equal(big, pk_float(doc, INFINITY)));
    assert_false(pk_equal(big, bneg));
    assert_false(pk_equal(big, pk_int(doc, 0)));
    /* float 1e300 equals its exact integer. */
    double e300 = 1e300;
    assert_true(pk_equal(pk_float(doc, e300), pk_float(doc, e300)));
    pk_value_t *d = pk_dict_new(doc, 0);
    assert_int_equal(pk_dict_set(doc, d, big, pk_none()), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, fbig, pk_none()), PK_OK);
    assert_int_equal(pk_len(d), 1);

    /* NaN equals itself only by identity. */
    pk_value_t *n1 = pk_float(doc, NAN), *n2 = pk_float(doc, NAN);
    assert_true(pk_equal(n1, n1));
    assert_false(pk_equal(n1, n2));
    assert_int_equal(pk_dict_set(doc, d, n1, pk_none()), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, n1, pk_none()), PK_OK);
    assert_int_equal(pk_dict_set(doc, d, n2, pk_none()), PK_OK);
    assert_int_equal(pk_len(d), 3);
    pk_value_t *l1 = pk_list_new(doc, 0), *l2 = pk_list_new(doc, 0);
    pk_list_append(doc, l1, n1);
    pk_list_append(doc, l2, n1);
    assert_true(pk_equal(l1, l2)); /* [x] == [x] with x = nan */
    assert_false(pk_equal(pk_complex(doc, NAN, 0), pk_complex(doc, NAN, 0)));
    assert_false(pk_equal(pk_float(doc, INFINITY), pk_float(doc, -INFINITY)));
    assert_true(pk_equal(pk_float(doc, INFINITY), pk_float(doc, INFINITY)));
}

static void test_equality_other(void **state)
{
    pk_doc_t *doc = *state;
    assert_true(pk_equal(pk_cstr(doc, "ab"), pk_cstr(doc, "ab")));
    assert_false(pk_equal(pk_cstr(doc, "ab"), pk_cstr(doc, "abc")));
    assert_false(pk_equal(pk_cstr(doc, "ab"), pk_bytes(doc, "ab", 2)));
    assert_true(pk_equal(pk_bytes(doc, "ab", 2), pk_bytearray(doc, "ab", 2)));
    assert_true(pk_equal(pk_bytearray(doc, "ab", 2), pk_bytes(doc, "ab", 2)));
    assert_true(hash_of(pk_cstr(doc, "x")) == hash_of(pk_cstr(doc, "x")));
    assert_true(pk_equal(pk_global(doc, "a", "b"), pk_global(doc, "a", "b")));
    assert_false(pk_equal(pk_global(doc, "a", "b"), pk_global(doc, "a", "c")));
    assert_false(
        pk_equal(pk_global(doc, "a.b", "c"), pk_global(doc, "a", "b.c")));
    assert_true(hash_of(pk_global(doc, "a", "b")) ==
                hash_of(pk_global(doc, "a", "b")));
    assert_true(pk_equal(pk_picklebuffer(doc, "ab", 2, 0),
                         pk_picklebuffer(doc, "ab", 2, PK_VF_BORROWED)));
    assert_false(
        pk_equal(pk_picklebuffer(doc, "ab", 2, 0), pk_bytes(doc, "ab", 2)));
    assert_false(pk_equal(NULL, pk_none()));
    assert_true(pk_equal(NULL, NULL));

    /* Lists vs tuples; dicts in any order. */
    pk_value_t *l = pk_list_new(doc, 0), *t = pk_tuple_new(doc, 1);
    pk_list_append(doc, l, pk_int(doc, 1));
    pk_tuple_set(t, 0, pk_int(doc, 1));
    assert_false(pk_equal(l, t));
    pk_value_t *l2 = pk_list_new(doc, 0);
    pk_list_append(doc, l2, pk_float(doc, 1.0));
    assert_true(pk_equal(l, l2));
    pk_list_append(doc, l2, pk_none());
    assert_false(pk_equal(l, l2));
    pk_value_t *d1 = pk_dict_new(doc, 0), *d2 = pk_dict_new(doc, 0);
    pk_dict_set(doc, d1, pk_cstr(doc, "a"), pk_int(doc, 1));
    pk_dict_set(doc, d1, pk_cstr(doc, "b"), l);
    pk_dict_set(doc, d2, pk_cstr(doc, "b"), l2);
    pk_dict_set(doc, d2, pk_cstr(doc, "a"), pk_int(doc, 1));
    assert_false(pk_equal(d1, d2));
    pk_dict_set(doc, d2, pk_cstr(doc, "b"), l);
    assert_true(pk_equal(d1, d2));
    pk_dict_set(doc, d2, pk_cstr(doc, "a"), pk_int(doc, 2));
    assert_false(pk_equal(d1, d2));
    pk_value_t *d3 = pk_dict_new(doc, 0);
    pk_dict_set(doc, d3, pk_cstr(doc, "a"), pk_int(doc, 1));
    pk_dict_set(doc, d3, pk_cstr(doc, "c"), l);
    assert_false(pk_equal(d1, d3));
    assert_false(pk_equal(d1, pk_dict_new(doc, 0)));
    pk_dtype_t f8, i8;
    pk_dtype_parse("<f8", &f8);
    pk_dtype_parse("<i8", &i8);
    assert_true(pk_equal(pk_dtype_value(doc, &f8), pk_dtype_value(doc, &f8)));
    assert_false(pk_equal(pk_dtype_value(doc, &f8), pk_dtype_value(doc, &i8)));
}

static void test_cycles(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *a = pk_list_new(doc, 0);
    assert_int_equal(pk_list_append(doc, a, a), PK_OK);
    assert_string_equal(repr(a), "[[...]]");
    assert_true(pk_equal(a, a));
    pk_value_t *b = pk_list_new(doc, 0);
    assert_int_equal(pk_list_append(doc, b, b), PK_OK);
    assert_false(pk_equal(a, b)); /* terminates (Python would raise) */
    pk_value_t *d = pk_dict_new(doc, 0);
    pk_dict_set(doc, d, pk_cstr(doc, "self"), d);
    pk_dict_set(doc, d, pk_cstr(doc, "list"), a);
    assert_string_equal(repr(d), "{'self': {...}, 'list': [[...]]}");
    assert_true(pk_equal(d, d));
    /* Mutual recursion through a tuple. */
    pk_value_t *l = pk_list_new(doc, 0), *t = pk_tuple_new(doc, 1);
    pk_tuple_set(t, 0, l);
    pk_list_append(doc, l, t);
    assert_string_equal(repr(l), "[([...],)]");
    /* Deep nesting: repr and equal are bounded. */
    pk_value_t *deep = pk_list_new(doc, 0), *cur = deep;
    pk_value_t *deep2 = pk_list_new(doc, 0), *cur2 = deep2;
    for (int i = 0; i < 5000; i++) {
        pk_value_t *n = pk_list_new(doc, 0), *n2 = pk_list_new(doc, 0);
        pk_list_append(doc, cur, n);
        pk_list_append(doc, cur2, n2);
        cur = n;
        cur2 = n2;
    }
    repr(deep);
    assert_false(pk_equal(deep, deep2));
    pk_list_append(doc, cur2, cur);
    pk_list_append(doc, cur, cur);
    assert_false(pk_equal(deep, deep2));
    /* Exponential sharing: ((t, t), (t, t)) nested 64 deep. */
    pk_value_t *s = pk_tuple_new(doc, 0);
    for (int i = 0; i < 64; i++) {
        pk_value_t *n = pk_tuple_new(doc, 2);
        pk_tuple_set(n, 0, s);
        pk_tuple_set(n, 1, s);
        s = n;
    }
    /* Tuple hashes are cached, so this takes 64 steps, not 2^64. */
    uint64_t h, h2;
    assert_int_equal(pk_hash(s, &h), PK_OK);
    assert_int_equal(pk_hash(s, &h2), PK_OK);
    assert_int_equal(h, h2);
    repr(s);
}

/* ---- repr ---------------------------------------------------------------- */

static void test_repr(void **state)
{
    pk_doc_t *doc = *state;
    static const struct {
        double f;
        const char *s;
    } floats[] = {
        {1.0, "1.0"},
        {-2.0, "-2.0"},
        {0.1, "0.1"},
        {0.1 + 0.2, "0.30000000000000004"},
        {1e16, "1e+16"},
        {1e15, "1000000000000000.0"},
        {1.5e-7, "1.5e-07"},
        {1e-4, "0.0001"},
        {1e-5, "1e-05"},
        {123.456, "123.456"},
        {-0.0, "-0.0"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {5e-324, "5e-324"},
        {INFINITY, "inf"},
        {-INFINITY, "-inf"},
        {NAN, "nan"},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        assert_string_equal(repr(pk_float(doc, floats[i].f)), floats[i].s);
    assert_string_equal(repr(pk_complex(doc, 1, 2)), "(1+2j)");
    assert_string_equal(repr(pk_complex(doc, 0, 2)), "2j");
    assert_string_equal(repr(pk_complex(doc, 0, 0)), "0j");
    assert_string_equal(repr(pk_complex(doc, 1.5, -2.5)), "(1.5-2.5j)");
    assert_string_equal(repr(pk_complex(doc, -0.0, 1)), "(-0+1j)");
    assert_string_equal(repr(pk_complex(doc, 1, -0.0)), "(1-0j)");
    assert_string_equal(repr(pk_int(doc, INT64_MIN)), "-9223372036854775808");

    assert_string_equal(repr(pk_cstr(doc, "it's")), "\"it's\"");
    assert_string_equal(repr(pk_cstr(doc, "a'\"b")), "'a\\'\"b'");
    assert_string_equal(repr(pk_cstr(doc, "t\tn\nr\r\\\x01\x7f")),
                        "'t\\tn\\nr\\r\\\\\\x01\\x7f'");
    assert_string_equal(repr(pk_cstr(doc, "h\xc3\xa9")), "'h\xc3\xa9'");
    assert_string_equal(repr(pk_cstr(doc, "\xed\xa0\x80")), "'\\ud800'");
    assert_string_equal(repr(pk_cstr(doc, "\xc2\x85")), "'\\x85'");
    assert_string_equal(repr(pk_bytes(doc, "a\x00\xff'", 4)),
                        "b\"a\\x00\\xff'\"");
    assert_string_equal(repr(pk_bytearray(doc, "ab", 2)), "bytearray(b'ab')");
    assert_string_equal(repr(pk_picklebuffer(doc, "ab", 2, 0)),
                        "PickleBuffer(b'ab')");
    assert_string_equal(repr(pk_global(doc, "builtins", "print")),
                        "builtins.print");
    assert_string_equal(repr(pk_list_new(doc, 0)), "[]");
    assert_string_equal(repr(pk_dict_new(doc, 0)), "{}");
    assert_string_equal(repr(NULL), "<NULL>");

    /* Truncation ends in "..." and never overflows. */
    pk_value_t *l = pk_list_new(doc, 0);
    for (int i = 0; i < 1000; i++)
        pk_list_append(doc, l, pk_int(doc, i));
    char small[16];
    memset(small, 'Z', sizeof small);
    pk_repr(l, small, sizeof small);
    assert_int_equal(strlen(small), 15);
    assert_string_equal(small, "[0, 1, 2, 3,...");
    assert_string_equal(pk_repr(pk_int(doc, 1234), small, 5), "1234");
    assert_string_equal(pk_repr(pk_int(doc, 12345), small, 5), "1...");
    assert_string_equal(pk_repr(pk_int(doc, 12345), small, 2), "1");
    small[0] = 'Z';
    pk_repr(l, small, 0);
    assert_int_equal(small[0], 'Z');
    /* No UTF-8 sequence is split. */
    pk_value_t *u = pk_cstr(doc, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9");
    pk_repr(u, small, 9);
    assert_string_equal(small, "'\xc3\xa9\xc3\xa9...");
}

/* ---- numpy -------------------------------------------------------------- */

static void test_dtype(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
        char kind;
        uint32_t itemsize;
    } ok[] = {
        {"<f4", "<f4", 'f', 4},    {">f8", ">f8", 'f', 8},
        {"f8", "<f8", 'f', 8},     {"=i8", "<i8", 'i', 8},
        {"|f8", "<f8", 'f', 8},    {"<f2", "<f2", 'f', 2},
        {"|u1", "|u1", 'u', 1},    {"<u1", "|u1", 'u', 1},
        {">i1", "|i1", 'i', 1},    {"<i2", "<i2", 'i', 2},
        {">u4", ">u4", 'u', 4},    {"|b1", "|b1", 'b', 1},
        {"<b1", "|b1", 'b', 1},    {"<c8", "<c8", 'c', 8},
        {">c16", ">c16", 'c', 16}, {"|S3", "|S3", 'S', 3},
        {"<S3", "|S3", 'S', 3},    {"S10", "|S10", 'S', 10},
        {"<U8", "<U8", 'U', 32},   {">U1", ">U1", 'U', 4},
        {"U2", "<U2", 'U', 8},     {"|V16", "|V16", 'V', 16},
        {"<V4", "|V4", 'V', 4},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        pk_dtype_t dt;
        char buf[16];
        memset(&dt, 0xcc, sizeof dt);
        assert_int_equal(pk_dtype_parse(ok[i].in, &dt), PK_OK);
        assert_int_equal(dt.kind, ok[i].kind);
        assert_int_equal(dt.itemsize, ok[i].itemsize);
        assert_string_equal(pk_dtype_str(&dt, buf, sizeof buf), ok[i].out);
        pk_dtype_t again;
        assert_int_equal(pk_dtype_parse(buf, &again), PK_OK);
        assert_memory_equal(&again, &dt, sizeof dt);
        assert_true(dt.byteorder != '=');
    }
    static const char *const bad[] = {
        "",
        "<",
        "f",
        "<f",
        "<f16",
        "<c32",
        "<x4",
        "<i3",
        "<i16",
        "<f8x",
        "O",
        "|O8",
        "<M8[ns]",
        "<m8",
        "|S0",
        "<U0",
        "<U1073741824",
        "|S99999999999",
        "b",
        "i",
        "?",
        "bool",
        "float32",
        "<<f8",
        "f 8",
        "<f-8",
        "|b2",
        "<u3",
        "<c4",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pk_dtype_t dt = {.kind = 'x'};
        assert_int_equal(pk_dtype_parse(bad[i], &dt), PK_EUNSUPPORTED);
        assert_int_equal(dt.kind, 'x'); /* untouched */
    }
}

/* pk_ndarray_c_contiguous: C order yes, Fortran order no unless the
 * other axes have length <= 1, empty arrays yes. */
static void test_ndarray_c_contiguous(void **state)
{
    (void)state;
    pk_doc_t *doc = NULL;
    pk_dtype_t f8;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pk_dtype_parse("<f8", &f8), PK_OK);
    const int64_t s23[2] = {2, 3}, s13[2] = {1, 3}, s03[2] = {0, 3};
    assert_true(
        pk_ndarray_c_contiguous(pk_ndarray(doc, &f8, 2, s23, NULL, 0)->u.nd));
    assert_false(pk_ndarray_c_contiguous(
        pk_ndarray(doc, &f8, 2, s23, NULL, PK_VF_FORTRAN)->u.nd));
    assert_true(pk_ndarray_c_contiguous(
        pk_ndarray(doc, &f8, 2, s13, NULL, PK_VF_FORTRAN)->u.nd));
    assert_true(pk_ndarray_c_contiguous(
        pk_ndarray(doc, &f8, 2, s03, NULL, PK_VF_FORTRAN)->u.nd));
    assert_true(
        pk_ndarray_c_contiguous(pk_ndarray(doc, &f8, 0, NULL, NULL, 0)->u.nd));
    pk_doc_free(&doc);
}

static void test_ndarray(void **state)
{
    pk_doc_t *doc = *state;
    pk_dtype_t f4, f8, u1;
    assert_int_equal(pk_dtype_parse("<f4", &f4), PK_OK);
    assert_int_equal(pk_dtype_parse("<f8", &f8), PK_OK);
    assert_int_equal(pk_dtype_parse("|u1", &u1), PK_OK);

    int64_t shape[3] = {2, 3, 4};
    pk_value_t *a = pk_ndarray(doc, &f4, 3, shape, NULL, 0);
    assert_non_null(a);
    assert_int_equal(a->type, PK_NDARRAY);
    const pk_ndarray_t *nd = a->u.nd;
    assert_int_equal(nd->ndim, 3);
    assert_int_equal(nd->nbytes, 96);
    assert_int_equal(nd->strides[0], 48);
    assert_int_equal(nd->strides[1], 16);
    assert_int_equal(nd->strides[2], 4);
    assert_int_equal(nd->shape[2], 4);
    assert_int_equal((uintptr_t)nd->data % 64, 0);
    for (size_t i = 0; i < nd->nbytes; i++)
        assert_int_equal(((uint8_t *)nd->data)[i], 0);
    assert_string_equal(repr(a), "array(dtype='<f4', shape=(2, 3, 4))");
    assert_int_equal(pk_len(a), 0);

    pk_value_t *f = pk_ndarray(doc, &f4, 3, shape, NULL, PK_VF_FORTRAN);
    assert_int_equal(f->u.nd->strides[0], 4);
    assert_int_equal(f->u.nd->strides[1], 8);
    assert_int_equal(f->u.nd->strides[2], 24);
    assert_int_equal(f->flags, PK_VF_FORTRAN);

    /* Zero-length axes do not scale strides (numpy: (3, 0) f8 -> (8, 8)). */
    int64_t z[2] = {3, 0};
    pk_value_t *e = pk_ndarray(doc, &f8, 2, z, NULL, 0);
    assert_int_equal(e->u.nd->nbytes, 0);
    assert_int_equal(e->u.nd->strides[0], 8);
    assert_int_equal(e->u.nd->strides[1], 8);
    assert_string_equal(repr(e), "array(dtype='<f8', shape=(3, 0))");

    /* 0-d and scalars. */
    double x = 2.5;
    pk_value_t *s = pk_ndarray(doc, &f8, 0, NULL, &x, PK_VF_NPSCALAR);
    assert_non_null(s);
    assert_int_equal(s->u.nd->nbytes, 8);
    assert_true(*(double *)s->u.nd->data == 2.5);
    assert_ptr_not_equal(s->u.nd->data, &x);
    assert_string_equal(repr(s), "scalar(dtype='<f8', shape=())");
    int64_t one[1] = {1};
    assert_null(pk_ndarray(doc, &f8, 1, one, &x, PK_VF_NPSCALAR));
    assert_string_equal(repr(pk_ndarray(doc, &f8, 1, one, &x, 0)),
                        "array(dtype='<f8', shape=(1,))");

    /* Borrowed and copied data. */
    uint8_t raw[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[2] = {2, 3};
    pk_value_t *bw =
        pk_ndarray(doc, &u1, 2, s23, raw, PK_VF_BORROWED | PK_VF_READONLY);
    assert_ptr_equal(bw->u.nd->data, raw);
    assert_int_equal(bw->flags, PK_VF_BORROWED | PK_VF_READONLY);
    pk_value_t *cp = pk_ndarray(doc, &u1, 2, s23, raw, 0);
    assert_ptr_not_equal(cp->u.nd->data, raw);
    assert_true(pk_equal(bw, cp));
    uint64_t h;
    assert_int_equal(pk_hash(cp, &h), PK_EUNHASHABLE);
    /* The same logical array in Fortran order. */
    uint8_t fraw[6] = {1, 4, 2, 5, 3, 6};
    pk_value_t *fo = pk_ndarray(doc, &u1, 2, s23, fraw, PK_VF_FORTRAN);
    assert_true(pk_equal(cp, fo));
    fraw[0] = 9;
    pk_value_t *fo2 = pk_ndarray(doc, &u1, 2, s23, fraw, PK_VF_FORTRAN);
    assert_false(pk_equal(cp, fo2));
    int64_t s32[2] = {3, 2};
    assert_false(pk_equal(cp, pk_ndarray(doc, &u1, 2, s32, raw, 0)));
    assert_false(pk_equal(cp, pk_ndarray(doc, &f8, 0, NULL, NULL, 0)));

    /* Big arrays come from their own 64-byte aligned block. */
    int64_t big[1] = {1 << 20};
    pk_value_t *bg = pk_ndarray(doc, &f8, 1, big, NULL, 0);
    assert_int_equal((uintptr_t)bg->u.nd->data % 64, 0);
    assert_int_equal(bg->u.nd->nbytes, 8u << 20);
    assert_int_equal(((double *)bg->u.nd->data)[(1 << 20) - 1], 0);

    /* Refusals. */
    int64_t neg[2] = {2, -1};
    assert_null(pk_ndarray(doc, &f8, 2, neg, NULL, 0));
    int64_t ovf[2] = {INT64_C(1) << 62, 4};
    assert_null(pk_ndarray(doc, &f8, 2, ovf, NULL, 0));
    int64_t ovf2[3] = {0, INT64_C(1) << 40, INT64_C(1) << 40};
    assert_null(pk_ndarray(doc, &f8, 3, ovf2, NULL, 0)); /* strides overflow */
    int64_t ovf3[1] = {INT64_MAX};
    assert_null(pk_ndarray(doc, &f8, 1, ovf3, NULL, 0));
    int64_t dims[PK_MAXDIMS + 1];
    for (int i = 0; i <= PK_MAXDIMS; i++)
        dims[i] = 1;
    assert_non_null(pk_ndarray(doc, &u1, PK_MAXDIMS, dims, NULL, 0));
    assert_null(pk_ndarray(doc, &u1, PK_MAXDIMS + 1, dims, NULL, 0));
    assert_null(pk_ndarray(doc, &u1, -1, dims, NULL, 0));
    assert_null(pk_ndarray(doc, &u1, 1, NULL, NULL, 0));
    assert_null(pk_ndarray(doc, &u1, 1, dims, NULL, PK_VF_BORROWED));
    pk_dtype_t junk = {.kind = 'O', .byteorder = '|', .itemsize = 8};
    assert_null(pk_ndarray(doc, &junk, 1, dims, NULL, 0));

    pk_value_t *dv = pk_dtype_value(doc, &f4);
    assert_int_equal(dv->type, PK_DTYPE);
    assert_int_equal(dv->u.dtype->kind, 'f');
    assert_string_equal(repr(dv), "dtype('<f4')");
}

static void test_type_names(void **state)
{
    (void)state;
    for (int t = 0; t < PK__TYPE_MAX; t++) {
        assert_non_null(pk_type_name((pk_type_t)t));
        assert_string_not_equal(pk_type_name((pk_type_t)t), "unknown");
    }
    assert_string_equal(pk_type_name(PK_LIST), "list");
    assert_string_equal(pk_type_name(PK_BIGINT), "int");
    assert_string_equal(pk_type_name(PK_NDARRAY), "numpy.ndarray");
    assert_string_equal(pk_type_name(PK__TYPE_MAX), "unknown");
    assert_string_equal(pk_type_name((pk_type_t)-1), "unknown");
}

/* ---- allocation failure injection --------------------------------------- */

static void on_free_counter(void *arg)
{
    ++*(int *)arg;
}

/* Builds {"k<i>": [i, "s<i>", 2**70, <f8 array>, {"n": (i, 1.5)}], ...} with
 * 1000 entries, a set, and an on-free callback. */
static pk_err_t build(pk_doc_t **docp, pk_value_t **rootp, int *freed)
{
    pk_doc_t *doc = NULL;
    pk_err_t rc = pk_doc_new(&doc);
    if (rc != PK_OK)
        return rc;
#define CHECK(x)                                                               \
    do {                                                                       \
        if ((x) == NULL) {                                                     \
            rc = PK_ENOMEM;                                                    \
            goto fail;                                                         \
        }                                                                      \
    } while (0)
#define CHECKRC(x)                                                             \
    do {                                                                       \
        if ((rc = (x)) != PK_OK)                                               \
            goto fail;                                                         \
    } while (0)
    CHECKRC(pk_doc_on_free(doc, on_free_counter, freed));
    pk_value_t *root, *set;
    CHECK(root = pk_dict_new(doc, 0));
    CHECK(set = pk_set_new(doc, 0));
    CHECKRC(pk_dict_set(doc, root, pk_cstr(doc, "set"), set));
    pk_dtype_t f8;
    pk_dtype_parse("<f8", &f8);
    static const uint8_t b70[] = {0, 0, 0, 0, 0, 0, 0, 0, 0x40};
    for (int i = 0; i < 1000; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%d", i);
        pk_value_t *key, *l, *inner, *t, *v;
        CHECK(key = pk_str(doc, k, (size_t)n));
        CHECK(l = pk_list_new(doc, 0));
        CHECK(v = pk_int(doc, i));
        CHECKRC(pk_list_append(doc, l, v));
        CHECK(v = pk_cstr(doc, k));
        CHECKRC(pk_list_append(doc, l, v));
        CHECK(v = pk_bigint(doc, b70, sizeof b70));
        CHECKRC(pk_list_append(doc, l, v));
        int64_t shape[1] = {i % 7 == 0 ? 2048 : 3};
        CHECK(v = pk_ndarray(doc, &f8, 1, shape, NULL, 0));
        CHECKRC(pk_list_append(doc, l, v));
        CHECK(inner = pk_dict_new(doc, 0));
        CHECK(t = pk_tuple_new(doc, 2));
        CHECK(v = pk_int(doc, i));
        pk_tuple_set(t, 0, v);
        CHECK(v = pk_float(doc, 1.5));
        pk_tuple_set(t, 1, v);
        CHECK(key = pk_cstr(doc, "n"));
        CHECKRC(pk_dict_set(doc, inner, key, t));
        CHECKRC(pk_list_append(doc, l, inner));
        CHECK(key = pk_str(doc, k, (size_t)n));
        CHECKRC(pk_dict_set(doc, root, key, l));
        CHECKRC(pk_set_add(doc, set, t));
    }
    *docp = doc;
    *rootp = root;
    return PK_OK;
fail:
    pk_doc_free(&doc);
    return rc;
#undef CHECK
#undef CHECKRC
}

static void test_alloc_failures(void **state)
{
    (void)state;
    int ok = 0;
    long n;
    faultsim_install();
    for (n = 1; n < 100000 && !ok; n++) {
        faultsim_reset(n);
        int freed = 0;
        pk_doc_t *doc = NULL;
        pk_value_t *root = NULL;
        pk_err_t rc = build(&doc, &root, &freed);
        if (rc == PK_OK) {
            ok = 1;
            assert_int_equal(pk_len(pk_dict_get_str(root, "set")), 1000);
            assert_int_equal(pk_len(root), 1001);
        }
        assert_true(rc == PK_OK || rc == PK_ENOMEM);
        assert_true(rc != PK_OK || doc != NULL);
        pk_doc_free(&doc);
        /* The callback ran iff it was registered. */
        assert_true(freed == 0 || freed == 1);
        assert_int_equal(faultsim_live(), 0);
    }
    faultsim_remove();
    assert_true(ok);
    assert_true(n > 20); /* many distinct failure points were exercised */
}

/* Realloc failures of a block keep the container intact. */
static void test_alloc_failure_keeps_state(void **state)
{
    (void)state;
    pk_doc_t *doc = NULL;
    faultsim_install();
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t *l = pk_list_new(doc, 0);
    pk_value_t *d = pk_dict_new(doc, 0);
    pk_value_t *one = pk_int(doc, 1);
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(pk_list_append(doc, l, one), PK_OK);
        assert_int_equal(pk_dict_set(doc, d, pk_int(doc, i), one), PK_OK);
    }
    size_t cap = l->u.seq.cap;
    while (l->u.seq.len < cap)
        assert_int_equal(pk_list_append(doc, l, one), PK_OK);
    faultsim_fail_at(1);
    assert_int_equal(pk_list_append(doc, l, one), PK_ENOMEM);
    assert_int_equal(pk_len(l), cap);
    int64_t i = 5000;
    pk_err_t rc;
    do {
        faultsim_fail_at(1);
        rc = pk_dict_set(doc, d, pk_int(doc, i), one);
        if (rc == PK_OK)
            i++;
        else
            assert_int_equal(rc, PK_ENOMEM);
    } while (rc == PK_OK);
    faultsim_fail_at(0);
    assert_int_equal(pk_len(d), (size_t)i);
    for (int64_t k = 0; k < i; k++)
        assert_non_null(pk_dict_get(d, pk_int(doc, k)));
    faultsim_fail_at(1);
    assert_int_equal(pk_doc_on_free(doc, on_free_counter, &cb_count),
                     PK_ENOMEM);
    faultsim_fail_at(0);
    pk_doc_free(&doc);
    assert_int_equal(faultsim_live(), 0);
    faultsim_remove();
}

int main(void)
{
    alarm(120); /* hard timeout */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doc_lifecycle),
        cmocka_unit_test_setup_teardown(test_doc_alloc, doc_setup,
                                        doc_teardown),
        cmocka_unit_test(test_singletons),
        cmocka_unit_test_setup_teardown(test_scalars, doc_setup, doc_teardown),
        cmocka_unit_test_setup_teardown(test_str_checked, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_bigint_normalisation, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_as_number, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_sequences, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_list_growth_memory, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_dict_semantics, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_unhashable, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_dict_many, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_sets, doc_setup, doc_teardown),
        cmocka_unit_test_setup_teardown(test_numeric_equality, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_equality_other, doc_setup,
                                        doc_teardown),
        cmocka_unit_test_setup_teardown(test_cycles, doc_setup, doc_teardown),
        cmocka_unit_test_setup_teardown(test_repr, doc_setup, doc_teardown),
        cmocka_unit_test(test_dtype),
        cmocka_unit_test_setup_teardown(test_ndarray, doc_setup, doc_teardown),
        cmocka_unit_test(test_ndarray_c_contiguous),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_alloc_failure_keeps_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
