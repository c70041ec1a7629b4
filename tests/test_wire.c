/*
 * test_wire.c - the wire protocol's pure parts (runtime/ipc/wire.h): header
 * round trips for every kind, every malformed header / record / id form
 * refused with PK_EPROTO and a message saying what was wrong, and the fuzz
 * corpus seeds (tests/fuzz/corpus/wire) still parsing as they were made to.
 *
 *   build/tests/test_wire [test-name-glob]
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "picklepool/pickle.h"
#include "ipc/wire.h"

/* The fuzz target itself, so the seeds run through exactly its code. */
#include "fuzz/fuzz_wire.c"

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void enc(uint8_t *b, uint8_t kind, uint16_t flags, uint64_t batch,
                uint32_t count, uint32_t nbufs, uint64_t aux)
{
    pool__wire_hdr_t h = {kind, flags, batch, count, nbufs, aux};
    pool__wire_hdr_encode(&h, b);
}

/* Expects the header to be refused with a message containing `what`. */
static void refused(const uint8_t *b, size_t len, const char *what)
{
    pool__wire_hdr_t h;
    pk_error_t e;
    memset(&e, 0, sizeof e);
    assert_int_equal(pool__wire_hdr_parse(b, len, &h, &e), PK_EPROTO);
    assert_int_equal(e.code, PK_EPROTO);
    if (strstr(e.msg, what) == NULL)
        fail_msg("message \"%s\" does not mention \"%s\"", e.msg, what);
}

/* ---- refusals first ----------------------------------------------------- */

static void test_header_refusals(void **state)
{
    (void)state;
    uint8_t b[64];

    enc(b, POOL_WIRE_READY, 0, 0, 2, 0, 1);
    refused(b, 31, "header frame of 31 bytes");
    refused(b, 33, "header frame of 33 bytes");
    refused(b, 0, "header frame of 0 bytes");

    enc(b, POOL_WIRE_READY, 0, 0, 2, 0, 1);
    b[0] ^= 0xff;
    refused(b, 32, "bad magic");

    enc(b, POOL_WIRE_READY, 0, 0, 2, 0, 1);
    b[4] = 2;
    refused(b, 32, "unsupported protocol version 2");

    enc(b, 0, 0, 0, 0, 0, 0);
    refused(b, 32, "unknown message kind 0");
    enc(b, POOL_WIRE__KIND_MAX, 0, 0, 0, 0, 0);
    refused(b, 32, "unknown message kind");
    enc(b, 255, 0, 0, 0, 0, 0);
    refused(b, 32, "unknown message kind 255");

    enc(b, POOL_WIRE_TASK, 0x8000, 1, 1, 0, 0);
    refused(b, 32, "TASK with unknown flags 0x8000");
    enc(b, POOL_WIRE_READY, POOL_WIRE_F_RETIRING, 0, 1, 0, 0);
    refused(b, 32, "READY with unknown flags");
    enc(b, POOL_WIRE_RESULT, POOL_WIRE_F_STARARGS, 1, 1, 0, 0);
    refused(b, 32, "RESULT with unknown flags 0x0001");
    enc(b, POOL_WIRE_STOP, POOL_WIRE_F_VEC_I64, 0, 0, 0, 0);
    refused(b, 32, "STOP with unknown flags");

    enc(b, POOL_WIRE_TASK, POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64, 1, 1, 0,
        0);
    refused(b, 32, "both int64 and float64 vectors");
    enc(b, POOL_WIRE_TASK, POOL_WIRE_F_RES_I64 | POOL_WIRE_F_RES_F64, 1, 1, 0,
        0);
    refused(b, 32, "both int64 and float64 results");
    enc(b, POOL_WIRE_TASK, POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_STARARGS, 1, 1, 0,
        0);
    refused(b, 32, "vector of args tuples");
    enc(b, POOL_WIRE_RESULT, POOL_WIRE_F_VEC_F64, 1, 1, 2, 0);
    refused(b, 32, "vector with 2 out-of-band buffers");

    enc(b, POOL_WIRE_TASK, 0, 1, 1, POOL_WIRE_MAX_BUFS + 1, 0);
    refused(b, 32, "out-of-band buffers");
    enc(b, POOL_WIRE_TASK, 0, 1, 0, 0, 0);
    refused(b, 32, "TASK with 0 items");
    enc(b, POOL_WIRE_RESULT, 0, 1, POOL_WIRE_MAX_COUNT + 1, 0, 0);
    refused(b, 32, "RESULT with 16777217 items");
    enc(b, POOL_WIRE_TASK, 0, 0, 1, 0, 0);
    refused(b, 32, "TASK with batch id 0");

    enc(b, POOL_WIRE_READY, 0, 0, 0, 0, 0);
    refused(b, 32, "READY with credit 0");
    enc(b, POOL_WIRE_READY, 0, 0, 1025, 0, 0);
    refused(b, 32, "READY with credit 1025");
    enc(b, POOL_WIRE_READY, 0, 9, 1, 0, 0);
    refused(b, 32, "READY with a payload");
    enc(b, POOL_WIRE_FUNC, 0, 9, 1, 0, 0);
    refused(b, 32, "FUNC with an item count");
    enc(b, POOL_WIRE_STOP, 0, 0, 1, 0, 0);
    refused(b, 32, "STOP with a payload");
    enc(b, POOL_WIRE_HEARTBEAT, 0, 0, 0, 1, 0);
    refused(b, 32, "HEARTBEAT with a payload");
    enc(b, POOL_WIRE_HEARTBEAT, 0, 5, 0, 0, 0);
    refused(b, 32, "HEARTBEAT with a payload");
}

static void test_hello_refusals(void **state)
{
    (void)state;
    uint8_t b[64];
    pk_error_t e;

    enc(b, POOL_WIRE_HELLO, 0, 0, 1, 0, 0);
    refused(b, 32, "HELLO with roles 0x0000, not exactly one");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_HOST | POOL_WIRE_F_CLIENT, 0, 1, 0, 0);
    refused(b, 32, "not exactly one");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_HOST, 0, 0, 0, 0);
    refused(b, 32, "HELLO of a host with capacity 0");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_HOST, 0, 1025, 0, 0);
    refused(b, 32, "HELLO of a host with capacity 1025");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_CLIENT, 0, 3, 0, 0);
    refused(b, 32, "HELLO of a client with a count");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_HOST, 7, 2, 0, 0);
    refused(b, 32, "HELLO of a peer with a session");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_CLIENT, 0, 0, 1, 0);
    refused(b, 32, "HELLO with buffers");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_WELCOME, 0, 3, 0, 1000);
    refused(b, 32, "WELCOME without a session");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_WELCOME, 5, 3, 0, 0);
    refused(b, 32, "WELCOME without a session, heartbeat");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_WELCOME, 5, 1001, 0, 1);
    refused(b, 32, "liveness");
    enc(b, POOL_WIRE_HELLO, POOL_WIRE_F_WELCOME | POOL_WIRE_F_STARARGS, 5, 3, 0,
        1);
    refused(b, 32, "HELLO with unknown flags 0x0001");
    enc(b, POOL_WIRE_TASK, POOL_WIRE_F_HOST, 1, 1, 0, 0);
    refused(b, 32, "TASK with unknown flags 0x0100");

    /* names: printable ASCII, 1..255 bytes */
    char name[POOL_WIRE_NAME_MAX + 2];
    memset(name, 'a', sizeof name);
    assert_int_equal(pool__wire_name_check(name, 0, &e), PK_EPROTO);
    assert_non_null(strstr(e.msg, "name of 0 bytes"));
    assert_int_equal(pool__wire_name_check(name, POOL_WIRE_NAME_MAX + 1, &e),
                     PK_EPROTO);
    assert_non_null(strstr(e.msg, "name of 256 bytes"));
    assert_int_equal(pool__wire_name_check(name, POOL_WIRE_NAME_MAX, &e),
                     PK_OK);
    assert_int_equal(pool__wire_name_check("node-1 rank 0", 13, &e), PK_OK);
    assert_int_equal(pool__wire_name_check("ab\ncd", 5, &e), PK_EPROTO);
    assert_non_null(strstr(e.msg, "byte 0x0a at 2"));
    assert_int_equal(pool__wire_name_check("ab\xff"
                                           "cd",
                                           5, &e),
                     PK_EPROTO);
    assert_int_equal(pool__wire_name_check("\0", 1, &e), PK_EPROTO);
}

static void rec_refused(const uint8_t *p, size_t len, uint32_t count,
                        uint32_t nbufs, int outcomes, const char *what)
{
    pool__wire_rec_t r[8];
    pk_error_t e;
    memset(&e, 0, sizeof e);
    assert_int_equal(
        pool__wire_recs_parse(p, len, count, nbufs, outcomes, r, &e),
        PK_EPROTO);
    if (strstr(e.msg, what) == NULL)
        fail_msg("message \"%s\" does not mention \"%s\"", e.msg, what);
}

static size_t put_rec(uint8_t *p, const char *data, uint32_t nbufs,
                      uint32_t status)
{
    size_t n = strlen(data);
    pool__wire_rec_encode(p, (uint32_t)n, nbufs, status);
    memcpy(p + POOL_WIRE_REC_SIZE, data, n);
    return POOL_WIRE_REC_SIZE + n;
}

static void test_record_refusals(void **state)
{
    (void)state;
    uint8_t b[256] = {0};
    size_t n;

    rec_refused(b, 0, 1, 0, 0, "record 0 of 1 truncated at byte 0");
    n = put_rec(b, "abcd", 0, 0);
    rec_refused(b, 11, 1, 0, 0, "truncated");
    rec_refused(b, n - 1, 1, 0, 0, "record 0 claims 4 bytes, 3 left");
    rec_refused(b, n, 2, 0, 0, "record 1 of 2 truncated");
    rec_refused(b, n + 1, 1, 0, 0, "1 stray bytes after 1 records");

    put32(b, 0xffffffffu); /* a length far past the end */
    rec_refused(b, n, 1, 0, 0, "claims 4294967295 bytes");

    n = put_rec(b, "x", 0, PK_EFUNC);
    rec_refused(b, n, 1, 0, 0, "item record 0 with status 12");
    n = put_rec(b, "x", 0, PK__ERR_MAX);
    rec_refused(b, n, 1, 0, 1, "unknown status");
    n = put_rec(b, "x", 0, 0xffffffffu);
    rec_refused(b, n, 1, 0, 1, "unknown status 4294967295");
    n = put_rec(b, "x", 1, PK_EFUNC);
    rec_refused(b, n, 1, 1, 1, "failed record 0 with out-of-band buffers");

    n = put_rec(b, "x", 2, 0);
    rec_refused(b, n, 1, 1, 0, "uses 2 buffers, only 1 left");
    n = put_rec(b, "x", 0xffffffffu, 0);
    rec_refused(b, n, 1, 3, 0, "uses 4294967295 buffers");
    n = put_rec(b, "x", 1, 0);
    rec_refused(b, n, 1, 2, 0, "records use 1 buffers, header says 2");

    pk_error_t e;
    assert_int_equal(pool__wire_vec_check(15, 2, &e), PK_EPROTO);
    assert_non_null(strstr(e.msg, "vector of 15 bytes for 2 items"));
    assert_int_equal(pool__wire_vec_check(17, 2, &e), PK_EPROTO);
    assert_int_equal(pool__wire_vec_check(16, 2, &e), PK_OK);
}

static void test_id_refusals(void **state)
{
    (void)state;
    int slot;
    uint32_t gen;
    uint8_t id[POOL_WIRE_ID_SIZE + 1];

    pool__wire_id_encode(3, 5, id);
    assert_int_equal(pool__wire_id_parse(id, 7, &slot, &gen), PK_EPROTO);
    assert_int_equal(pool__wire_id_parse(id, 9, &slot, &gen), PK_EPROTO);
    id[0] = 0; /* ids libzmq makes up start with a zero byte */
    assert_int_equal(pool__wire_id_parse(id, 8, &slot, &gen), PK_EPROTO);
    pool__wire_id_encode(3, 5, id);
    id[1] = 1;
    assert_int_equal(pool__wire_id_parse(id, 8, &slot, &gen), PK_EPROTO);
}

/* ---- round trips -------------------------------------------------------- */

static void test_header_round_trip(void **state)
{
    (void)state;
    static const pool__wire_hdr_t cases[] = {
        {POOL_WIRE_READY, 0, 0, 2, 0, 4242},
        {POOL_WIRE_TASK, POOL_WIRE_F_STARARGS | POOL_WIRE_F_SAME_CALL,
         UINT64_MAX, POOL_WIRE_MAX_COUNT, POOL_WIRE_MAX_BUFS, 500000000},
        {POOL_WIRE_TASK, POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_RES_I64, 1, 1, 0, 0},
        {POOL_WIRE_TASK, POOL_WIRE_F_VEC_F64 | POOL_WIRE_F_RES_F64, 2, 7, 0, 1},
        {POOL_WIRE_RESULT, POOL_WIRE_F_RETIRING, 99, 3, 4, 123456789},
        {POOL_WIRE_RESULT, POOL_WIRE_F_VEC_I64, 100, 10, 0, 0},
        {POOL_WIRE_FUNC, 0, 77, 0, 2, 0},
        {POOL_WIRE_HEARTBEAT, 0, 0, 0, 0, UINT64_MAX},
        {POOL_WIRE_STOP, 0, 0, 0, 0, 0},
        {POOL_WIRE_HELLO, POOL_WIRE_F_HOST, 0, 1024, 0, 4242},
        {POOL_WIRE_HELLO, POOL_WIRE_F_CLIENT, 0, 0, 0, 1},
        {POOL_WIRE_HELLO, POOL_WIRE_F_WELCOME, UINT64_MAX, 1000, 0, 1},
    };
    static const size_t frames[] = {
        1, 3 + POOL_WIRE_MAX_BUFS, 3, 3, 6, 2, 4, 1, 1, 2, 2, 1};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t b[POOL_WIRE_HDR_SIZE];
        pool__wire_hdr_t h;
        pk_error_t e;
        pool__wire_hdr_encode(&cases[i], b);
        assert_int_equal(pool__wire_hdr_parse(b, sizeof b, &h, &e), PK_OK);
        assert_int_equal(h.kind, cases[i].kind);
        assert_int_equal(h.flags, cases[i].flags);
        assert_true(h.batch == cases[i].batch);
        assert_int_equal(h.count, cases[i].count);
        assert_int_equal(h.nbufs, cases[i].nbufs);
        assert_true(h.aux == cases[i].aux);
        assert_int_equal(pool__wire_nframes(&h), frames[i]);
    }
    /* the layout is the documented one: little-endian fields at fixed
     * offsets (docs/PROTOCOL.md) */
    uint8_t b[POOL_WIRE_HDR_SIZE];
    enc(b, POOL_WIRE_TASK, 0x0102, 0x1122334455667788ull, 0xa0b0c0d0u, 5, 0x99);
    static const uint8_t want[POOL_WIRE_HDR_SIZE] = {
        'P',  'K',  'W',  '1',  1,    2,    0x02, 0x01, 0x88, 0x77, 0x66,
        0x55, 0x44, 0x33, 0x22, 0x11, 0xd0, 0xc0, 0xb0, 0xa0, 5,    0,
        0,    0,    0x99, 0,    0,    0,    0,    0,    0,    0};
    assert_memory_equal(b, want, sizeof want);
    assert_string_equal(pool__wire_kind_name(POOL_WIRE_RESULT), "RESULT");
    assert_string_equal(pool__wire_kind_name(POOL_WIRE_HELLO), "HELLO");
    assert_string_equal(pool__wire_kind_name(0), "?");
    assert_string_equal(pool__wire_kind_name(200), "?");
}

static void test_records_round_trip(void **state)
{
    (void)state;
    uint8_t b[256];
    size_t n = 0;
    n += put_rec(b + n, "first", 2, 0);
    n += put_rec(b + n, "", 0, 0);
    n += put_rec(b + n, "unknown function examples.nope", 0, PK_ENOFUNC);
    n += put_rec(b + n, "x", 1, 0);
    pool__wire_rec_t r[4];
    pk_error_t e;
    assert_int_equal(pool__wire_recs_parse(b, n, 4, 3, 1, r, &e), PK_OK);
    assert_int_equal(r[0].len, 5);
    assert_memory_equal(r[0].data, "first", 5);
    assert_int_equal(r[0].nbufs, 2);
    assert_int_equal(r[0].buf0, 0);
    assert_int_equal(r[1].len, 0);
    assert_int_equal(r[2].status, PK_ENOFUNC);
    assert_int_equal(r[3].buf0, 2);
    assert_int_equal(r[3].nbufs, 1);
    /* validation without a table */
    assert_int_equal(pool__wire_recs_parse(b, n, 4, 3, 1, NULL, &e), PK_OK);
    /* as items, a status is refused */
    assert_int_equal(pool__wire_recs_parse(b, n, 4, 3, 0, NULL, &e), PK_EPROTO);

    int slot;
    uint32_t gen;
    uint8_t id[POOL_WIRE_ID_SIZE];
    pool__wire_id_encode(65535, UINT32_MAX, id);
    assert_int_equal(pool__wire_id_parse(id, sizeof id, &slot, &gen), PK_OK);
    assert_int_equal(slot, 65535);
    assert_true(gen == UINT32_MAX);
}

/* ---- the fuzz corpus ---------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    uint8_t *b = malloc(1 << 16);
    *len = b ? fread(b, 1, 1 << 16, f) : 0;
    fclose(f);
    return b;
}

static const char *corpus_dir(void)
{
    static char dir[512];
    const char *src = getenv("PICKLEPOOL_SRC");
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/wire", src ? src : ".");
    return dir;
}

/* Seeds named msg-* that are meant to be valid parse as whole messages;
 * every seed runs through the fuzz target without crashing. */
static void test_corpus_seeds(void **state)
{
    (void)state;
    static const char *const valid[] = {"msg-task-records", "msg-task-starargs",
                                        "msg-task-oob",     "msg-result-mixed",
                                        "msg-result-vec",   "msg-task-vec-f64"};
    static const char *const invalid[] = {"msg-truncated-record",
                                          "hdr-bad-magic", "hdr-bad-flags"};
    char path[600];
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        size_t len;
        snprintf(path, sizeof path, "%s/%s", corpus_dir(), valid[i]);
        uint8_t *b = slurp(path, &len);
        if (b == NULL)
            fail_msg("cannot read %s (run from the source root)", path);
        pool__wire_hdr_t h;
        pk_error_t e;
        assert_true(len > 1 + POOL_WIRE_HDR_SIZE);
        assert_int_equal(pool__wire_hdr_parse(b + 1, 32, &h, &e), PK_OK);
        const uint8_t *pl = b + 1 + POOL_WIRE_HDR_SIZE;
        size_t plen = len - 1 - POOL_WIRE_HDR_SIZE;
        if (h.flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64))
            assert_int_equal(pool__wire_vec_check(plen, h.count, &e), PK_OK);
        else if (pool__wire_recs_parse(pl, plen, h.count, h.nbufs,
                                       h.kind == POOL_WIRE_RESULT, NULL,
                                       &e) != PK_OK)
            fail_msg("%s: %s", valid[i], e.msg);
        LLVMFuzzerTestOneInput(b, len);
        free(b);
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        size_t len;
        snprintf(path, sizeof path, "%s/%s", corpus_dir(), invalid[i]);
        uint8_t *b = slurp(path, &len);
        assert_non_null(b);
        pool__wire_hdr_t h;
        pk_error_t e;
        pk_err_t rc = pool__wire_hdr_parse(b + 1, 32, &h, &e);
        if (rc == PK_OK)
            rc = pool__wire_recs_parse(b + 33, len - 33, h.count, h.nbufs, 0,
                                       NULL, &e);
        assert_int_equal(rc, PK_EPROTO);
        LLVMFuzzerTestOneInput(b, len);
        free(b);
    }
}

/* POOL_WIRE_F_SHM: the header rules, the frame count, and every malformed
 * buffer table refused (outside the region, overlapping its end, offset or
 * length overflow, misaligned, an arena buffer with a non-empty frame). */
static void shm_refused(const uint8_t *tab, size_t len, uint32_t nbufs,
                        const size_t *fl, const char *what)
{
    pk_error_t e;
    memset(&e, 0, sizeof e);
    assert_int_equal(
        pool__wire_shm_parse(tab, len, nbufs, 4096, 8192, 0, fl, NULL, &e),
        PK_EPROTO);
    if (strstr(e.msg, what) == NULL)
        fail_msg("message \"%s\" does not mention \"%s\"", e.msg, what);
}

static void test_shm_refusals(void **state)
{
    (void)state;
    uint8_t b[64], t[64];
    size_t fl[4] = {0, 0, 0, 0};

    enc(b, POOL_WIRE_TASK, POOL_WIRE_F_SHM, 1, 1, 0, 0);
    refused(b, 32, "TASK with a buffer table but no buffers");
    enc(b, POOL_WIRE_RESULT, POOL_WIRE_F_SHM | POOL_WIRE_F_VEC_I64, 1, 1, 0, 0);
    refused(b, 32, "buffer table but no buffers");
    enc(b, POOL_WIRE_READY, POOL_WIRE_F_SHM, 0, 1, 0, 0);
    refused(b, 32, "READY with unknown flags");
    enc(b, POOL_WIRE_FUNC, POOL_WIRE_F_SHM, 1, 0, 1, 0);
    refused(b, 32, "FUNC with unknown flags");

    pool__wire_shm_encode(t, 4096, 100);
    shm_refused(t, 15, 1, fl, "buffer table of 15 bytes for 1 buffers");
    shm_refused(t, 32, 1, fl, "buffer table of 32 bytes");
    pool__wire_shm_encode(t, 0, 100);
    shm_refused(t, 16, 1, fl, "outside the arena region");
    pool__wire_shm_encode(t, 8192, 1);
    shm_refused(t, 16, 1, fl, "outside the arena region");
    pool__wire_shm_encode(t, 8128, 65); /* overlaps the region's end */
    shm_refused(t, 16, 1, fl, "outside the arena region");
    pool__wire_shm_encode(t, 4096 + 64, UINT64_MAX - 64); /* wraps */
    shm_refused(t, 16, 1, fl, "outside the arena region");
    pool__wire_shm_encode(t, 4096 + 1, 10);
    shm_refused(t, 16, 1, fl, "misaligned");
    pool__wire_shm_encode(t, 4096, 0);
    shm_refused(t, 16, 1, fl, "outside the arena region");
    pool__wire_shm_encode(t, POOL_WIRE_SHM_INLINE, 5);
    shm_refused(t, 16, 1, fl, "inline buffer 0 with a length");
    pool__wire_shm_encode(t, POOL_WIRE_SHM_INLINE, 0);
    pool__wire_shm_encode(t + 16, 4096, 100);
    size_t fl2[2] = {0, 7};
    shm_refused(t, 32, 2, fl2, "arena buffer 1 with a 7-byte frame");
    /* heap entries: refused where no heap is allowed (heap 0), or past
     * its end, or with a frame */
    pool__wire_shm_encode(t, POOL_WIRE_SHM_HEAP + 3, 10);
    shm_refused(t, 16, 1, fl, "outside the arena region");
    pk_error_t e;
    memset(&e, 0, sizeof e);
    pool__wire_shm_encode(t, POOL_WIRE_SHM_HEAP + 4000, 97);
    assert_int_equal(
        pool__wire_shm_parse(t, 16, 1, 4096, 8192, 4096, fl, NULL, &e),
        PK_EPROTO);
    assert_non_null(strstr(e.msg, "outside the shared heap of 4096 bytes"));
    pool__wire_shm_encode(t, POOL_WIRE_SHM_HEAP + 3, 10);
    size_t fl1[1] = {5};
    assert_int_equal(
        pool__wire_shm_parse(t, 16, 1, 4096, 8192, 4096, fl1, NULL, &e),
        PK_EPROTO);
    assert_non_null(strstr(e.msg, "heap buffer 0 with a 5-byte frame"));
    /* accepted: any alignment, up to the heap's end */
    pool__wire_shm_t ent;
    pool__wire_shm_encode(t, POOL_WIRE_SHM_HEAP + 3, 4093);
    assert_int_equal(
        pool__wire_shm_parse(t, 16, 1, 4096, 8192, 4096, fl, &ent, &e), PK_OK);
    assert_true(ent.off == POOL_WIRE_SHM_HEAP + 3 && ent.len == 4093);
}

static void test_shm_round_trip(void **state)
{
    (void)state;
    uint8_t b[POOL_WIRE_HDR_SIZE], t[48];
    pool__wire_hdr_t h;
    pk_error_t e;
    enc(b, POOL_WIRE_TASK, POOL_WIRE_F_SHM | POOL_WIRE_F_STARARGS, 9, 2, 3, 0);
    assert_int_equal(pool__wire_hdr_parse(b, sizeof b, &h, &e), PK_OK);
    assert_int_equal(pool__wire_nframes(&h), 3 + 1 + 3);
    enc(b, POOL_WIRE_RESULT, POOL_WIRE_F_SHM | POOL_WIRE_F_RETIRING, 9, 2, 3,
        0);
    assert_int_equal(pool__wire_hdr_parse(b, sizeof b, &h, &e), PK_OK);
    assert_int_equal(pool__wire_nframes(&h), 2 + 1 + 3);

    pool__wire_shm_encode(t, 4096, 4096); /* exactly the whole region */
    pool__wire_shm_encode(t + 16, POOL_WIRE_SHM_INLINE, 0);
    pool__wire_shm_encode(t + 32, 8192 - 64, 64); /* ends at the end */
    size_t fl[3] = {0, 12345, 0};
    pool__wire_shm_t ents[3];
    assert_int_equal(
        pool__wire_shm_parse(t, sizeof t, 3, 4096, 8192, 0, fl, ents, &e),
        PK_OK);
    assert_int_equal(ents[0].off, 4096);
    assert_int_equal(ents[0].len, 4096);
    assert_true(ents[1].off == POOL_WIRE_SHM_INLINE);
    assert_int_equal(ents[2].off, 8192 - 64);
    /* the seeds exercise the fuzz target's table mode */
    static const char *const seeds[] = {"shm-table-ok", "shm-table-bad"};
    for (size_t i = 0; i < 2; i++) {
        char path[600];
        size_t len;
        snprintf(path, sizeof path, "%s/%s", corpus_dir(), seeds[i]);
        uint8_t *s = slurp(path, &len);
        if (s == NULL)
            fail_msg("cannot read %s (run from the source root)", path);
        LLVMFuzzerTestOneInput(s, len);
        free(s);
    }
}

int main(int argc, char **argv)
{
    alarm(60); /* hard timeout */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_refusals),
        cmocka_unit_test(test_record_refusals),
        cmocka_unit_test(test_id_refusals),
        cmocka_unit_test(test_hello_refusals),
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_records_round_trip),
        cmocka_unit_test(test_corpus_seeds),
        cmocka_unit_test(test_shm_refusals),
        cmocka_unit_test(test_shm_round_trip),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
