/*
 * wire.c - encoding and validation of the wire protocol's fixed parts: the
 * 32-byte header, the item/outcome records and the routing ids.  Everything a
 * peer sends passes through these pure functions before any other code looks
 * at it, which is why they are fuzzed (tests/fuzz/fuzz_wire.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "ipc/wire.h"

static const uint16_t allowed_flags[POOL_WIRE__KIND_MAX] = {
    [POOL_WIRE_READY] = 0,
    [POOL_WIRE_TASK] = POOL_WIRE_F_STARARGS | POOL_WIRE_F_VEC_I64 |
                       POOL_WIRE_F_VEC_F64 | POOL_WIRE_F_SAME_CALL |
                       POOL_WIRE_F_RES_I64 | POOL_WIRE_F_RES_F64 |
                       POOL_WIRE_F_SHM,
    [POOL_WIRE_RESULT] = POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64 |
                         POOL_WIRE_F_RETIRING | POOL_WIRE_F_SHM,
    [POOL_WIRE_FUNC] = 0,
    [POOL_WIRE_HEARTBEAT] = 0,
    [POOL_WIRE_STOP] = 0,
    [POOL_WIRE_HELLO] =
        POOL_WIRE_F_HOST | POOL_WIRE_F_CLIENT | POOL_WIRE_F_WELCOME,
};

static const char *const kind_names[POOL_WIRE__KIND_MAX] = {
    [POOL_WIRE_READY] = "READY",         [POOL_WIRE_TASK] = "TASK",
    [POOL_WIRE_RESULT] = "RESULT",       [POOL_WIRE_FUNC] = "FUNC",
    [POOL_WIRE_HEARTBEAT] = "HEARTBEAT", [POOL_WIRE_STOP] = "STOP",
    [POOL_WIRE_HELLO] = "HELLO",
};

const char *pool__wire_kind_name(int kind)
{
    if (kind <= 0 || kind >= POOL_WIRE__KIND_MAX)
        return "?";
    return kind_names[kind];
}

void pool__wire_hdr_encode(const pool__wire_hdr_t *h, uint8_t *out)
{
    pk__st32(out, POOL_WIRE_MAGIC);
    out[4] = POOL_WIRE_VERSION;
    out[5] = h->kind;
    out[6] = (uint8_t)(h->flags & 0xff);
    out[7] = (uint8_t)(h->flags >> 8);
    pk__st64(out + 8, h->batch);
    pk__st32(out + 16, h->count);
    pk__st32(out + 20, h->nbufs);
    pk__st64(out + 24, h->aux);
}

pk_err_t pool__wire_hdr_parse(const void *data, size_t len, pool__wire_hdr_t *h,
                              pk_error_t *err)
{
    const uint8_t *p = data;
    if (len != POOL_WIRE_HDR_SIZE)
        return pk__err(err, PK_EPROTO, "header frame of %zu bytes, not %d", len,
                       POOL_WIRE_HDR_SIZE);
    if (pk__ld32(p) != POOL_WIRE_MAGIC)
        return pk__err(err, PK_EPROTO, "bad magic 0x%08x", pk__ld32(p));
    if (p[4] != POOL_WIRE_VERSION)
        return pk__err(err, PK_EPROTO, "unsupported protocol version %u", p[4]);
    pool__wire_hdr_t v;
    v.kind = p[5];
    v.flags = pk__ld16(p + 6);
    v.batch = pk__ld64(p + 8);
    v.count = pk__ld32(p + 16);
    v.nbufs = pk__ld32(p + 20);
    v.aux = pk__ld64(p + 24);
    if (v.kind == 0 || v.kind >= POOL_WIRE__KIND_MAX)
        return pk__err(err, PK_EPROTO, "unknown message kind %u", v.kind);
    const char *kn = kind_names[v.kind];
    if (v.flags & ~allowed_flags[v.kind])
        return pk__err(err, PK_EPROTO, "%s with unknown flags 0x%04x", kn,
                       v.flags & ~allowed_flags[v.kind]);
    if ((v.flags & POOL_WIRE_F_VEC_I64) && (v.flags & POOL_WIRE_F_VEC_F64))
        return pk__err(err, PK_EPROTO, "%s with both int64 and float64 vectors",
                       kn);
    if ((v.flags & POOL_WIRE_F_RES_I64) && (v.flags & POOL_WIRE_F_RES_F64))
        return pk__err(err, PK_EPROTO,
                       "%s asking for both int64 and float64 results", kn);
    int vec = (v.flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) != 0;
    if (vec && (v.flags & POOL_WIRE_F_STARARGS))
        return pk__err(err, PK_EPROTO, "%s with a vector of args tuples", kn);
    if (vec && v.nbufs != 0)
        return pk__err(err, PK_EPROTO, "%s vector with %u out-of-band buffers",
                       kn, v.nbufs);
    if ((v.flags & POOL_WIRE_F_SHM) && v.nbufs == 0)
        return pk__err(err, PK_EPROTO, "%s with a buffer table but no buffers",
                       kn);
    if (v.nbufs > POOL_WIRE_MAX_BUFS)
        return pk__err(err, PK_EPROTO, "%s with %u out-of-band buffers", kn,
                       v.nbufs);
    switch (v.kind) {
    case POOL_WIRE_TASK:
    case POOL_WIRE_RESULT:
        if (v.count == 0 || v.count > POOL_WIRE_MAX_COUNT)
            return pk__err(err, PK_EPROTO, "%s with %u items", kn, v.count);
        if (v.batch == 0)
            return pk__err(err, PK_EPROTO, "%s with batch id 0", kn);
        break;
    case POOL_WIRE_READY:
        if (v.count == 0 || v.count > 1024)
            return pk__err(err, PK_EPROTO, "READY with credit %u", v.count);
        if (v.nbufs != 0 || v.batch != 0)
            return pk__err(err, PK_EPROTO, "READY with a payload");
        break;
    case POOL_WIRE_FUNC:
        if (v.count != 0)
            return pk__err(err, PK_EPROTO, "FUNC with an item count");
        break;
    case POOL_WIRE_HELLO:
        if (v.flags != POOL_WIRE_F_HOST && v.flags != POOL_WIRE_F_CLIENT &&
            v.flags != POOL_WIRE_F_WELCOME)
            return pk__err(err, PK_EPROTO,
                           "HELLO with roles 0x%04x, not exactly one", v.flags);
        if (v.nbufs != 0)
            return pk__err(err, PK_EPROTO, "HELLO with buffers");
        if (v.flags == POOL_WIRE_F_HOST && (v.count == 0 || v.count > 1024))
            return pk__err(err, PK_EPROTO, "HELLO of a host with capacity %u",
                           v.count);
        if (v.flags == POOL_WIRE_F_CLIENT && v.count != 0)
            return pk__err(err, PK_EPROTO, "HELLO of a client with a count");
        if (v.flags != POOL_WIRE_F_WELCOME && v.batch != 0)
            return pk__err(err, PK_EPROTO, "HELLO of a peer with a session");
        if (v.flags == POOL_WIRE_F_WELCOME &&
            (v.batch == 0 || v.aux == 0 || v.count == 0 || v.count > 1000))
            return pk__err(err, PK_EPROTO,
                           "WELCOME without a session, heartbeat or liveness");
        break;
    default: /* HEARTBEAT, STOP */
        if (v.count != 0 || v.nbufs != 0 || v.batch != 0)
            return pk__err(err, PK_EPROTO, "%s with a payload", kn);
        break;
    }
    *h = v;
    return PK_OK;
}

size_t pool__wire_nframes(const pool__wire_hdr_t *h)
{
    size_t table = (h->flags & POOL_WIRE_F_SHM) ? 1 : 0;
    switch (h->kind) {
    case POOL_WIRE_TASK:
        return 3 + table + (size_t)h->nbufs;
    case POOL_WIRE_RESULT:
        return 2 + table + (size_t)h->nbufs;
    case POOL_WIRE_FUNC:
        return 2 + (size_t)h->nbufs;
    case POOL_WIRE_HELLO:
        return h->flags == POOL_WIRE_F_WELCOME ? 1 : 2;
    default:
        return 1;
    }
}

pk_err_t pool__wire_name_check(const void *data, size_t len, pk_error_t *err)
{
    const uint8_t *p = data;
    if (len == 0 || len > POOL_WIRE_NAME_MAX)
        return pk__err(err, PK_EPROTO, "HELLO with a name of %zu bytes", len);
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return pk__err(err, PK_EPROTO,
                           "HELLO name with byte 0x%02x at %zu (printable "
                           "ASCII only)",
                           p[i], i);
    return PK_OK;
}

void pool__wire_rec_encode(uint8_t *p, uint32_t len, uint32_t nbufs,
                           uint32_t status)
{
    pk__st32(p, len);
    pk__st32(p + 4, nbufs);
    pk__st32(p + 8, status);
}

pk_err_t pool__wire_recs_parse(const void *data, size_t len, uint32_t count,
                               uint32_t nbufs, int outcomes,
                               pool__wire_rec_t *recs, pk_error_t *err)
{
    const uint8_t *p = data;
    size_t off = 0;
    uint64_t bufs = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < POOL_WIRE_REC_SIZE)
            return pk__err(err, PK_EPROTO,
                           "record %u of %u truncated at byte %zu", i, count,
                           off);
        uint32_t rlen = pk__ld32(p + off);
        uint32_t rbufs = pk__ld32(p + off + 4);
        uint32_t status = pk__ld32(p + off + 8);
        off += POOL_WIRE_REC_SIZE;
        if (rlen > len - off)
            return pk__err(err, PK_EPROTO,
                           "record %u claims %u bytes, %zu left", i, rlen,
                           len - off);
        if (!outcomes && status != 0)
            return pk__err(err, PK_EPROTO, "item record %u with status %u", i,
                           status);
        if (status >= (uint32_t)PK__ERR_MAX)
            return pk__err(err, PK_EPROTO, "record %u with unknown status %u",
                           i, status);
        if (status != 0 && rbufs != 0)
            return pk__err(err, PK_EPROTO,
                           "failed record %u with out-of-band buffers", i);
        if (rbufs > nbufs - bufs)
            return pk__err(err, PK_EPROTO,
                           "record %u uses %u buffers, only %llu left", i,
                           rbufs, (unsigned long long)(nbufs - bufs));
        if (recs != NULL) {
            recs[i].data = p + off;
            recs[i].len = rlen;
            recs[i].nbufs = rbufs;
            recs[i].status = status;
            recs[i].buf0 = (uint32_t)bufs;
        }
        bufs += rbufs;
        off += rlen;
    }
    if (off != len)
        return pk__err(err, PK_EPROTO, "%zu stray bytes after %u records",
                       len - off, count);
    if (bufs != nbufs)
        return pk__err(err, PK_EPROTO,
                       "records use %llu buffers, header says %u",
                       (unsigned long long)bufs, nbufs);
    return PK_OK;
}

void pool__wire_shm_encode(uint8_t *p, uint64_t off, uint64_t len)
{
    pk__st64(p, off);
    pk__st64(p + 8, len);
}

pk_err_t pool__wire_shm_parse(const void *data, size_t len, uint32_t nbufs,
                              uint64_t lo, uint64_t hi, uint64_t heap,
                              const size_t *frame_len, pool__wire_shm_t *ents,
                              pk_error_t *err)
{
    const uint8_t *p = data;
    if (len != (size_t)nbufs * POOL_WIRE_SHM_ENT)
        return pk__err(err, PK_EPROTO,
                       "buffer table of %zu bytes for %u buffers", len, nbufs);
    for (uint32_t k = 0; k < nbufs; k++) {
        uint64_t off = pk__ld64(p + (size_t)k * POOL_WIRE_SHM_ENT);
        uint64_t n = pk__ld64(p + (size_t)k * POOL_WIRE_SHM_ENT + 8);
        if (off == POOL_WIRE_SHM_INLINE) {
            if (n != 0)
                return pk__err(err, PK_EPROTO,
                               "inline buffer %u with a length in the table",
                               k);
        } else if (off >= POOL_WIRE_SHM_HEAP &&
                   off < POOL_WIRE_SHM_HEAP + heap) {
            uint64_t o = off - POOL_WIRE_SHM_HEAP;
            if (n == 0 || n > heap - o)
                return pk__err(err, PK_EPROTO,
                               "buffer %u [%llu, +%llu) outside the shared "
                               "heap of %llu bytes",
                               k, (unsigned long long)o, (unsigned long long)n,
                               (unsigned long long)heap);
            if (frame_len != NULL && frame_len[k] != 0)
                return pk__err(err, PK_EPROTO,
                               "heap buffer %u with a %zu-byte frame", k,
                               frame_len[k]);
        } else {
            if (n == 0 || off % 64 != 0 || off < lo || off >= hi ||
                n > hi - off)
                return pk__err(err, PK_EPROTO,
                               "buffer %u [%llu, +%llu) outside the arena "
                               "region [%llu, %llu) or misaligned",
                               k, (unsigned long long)off,
                               (unsigned long long)n, (unsigned long long)lo,
                               (unsigned long long)hi);
            if (frame_len != NULL && frame_len[k] != 0)
                return pk__err(err, PK_EPROTO,
                               "arena buffer %u with a %zu-byte frame", k,
                               frame_len[k]);
        }
        if (ents != NULL) {
            ents[k].off = off;
            ents[k].len = n;
        }
    }
    return PK_OK;
}

pk_err_t pool__wire_vec_check(size_t len, uint32_t count, pk_error_t *err)
{
    if (len != (size_t)count * 8)
        return pk__err(err, PK_EPROTO, "vector of %zu bytes for %u items", len,
                       count);
    return PK_OK;
}

void pool__wire_id_encode(int slot, uint32_t gen, uint8_t *out)
{
    out[0] = 'W';
    out[1] = 0;
    out[2] = (uint8_t)(slot & 0xff);
    out[3] = (uint8_t)((slot >> 8) & 0xff);
    pk__st32(out + 4, gen);
}

pk_err_t pool__wire_id_parse(const void *data, size_t len, int *slot,
                             uint32_t *gen)
{
    const uint8_t *p = data;
    if (len != POOL_WIRE_ID_SIZE || p[0] != 'W' || p[1] != 0)
        return PK_EPROTO;
    *slot = (int)pk__ld16(p + 2);
    *gen = pk__ld32(p + 4);
    return PK_OK;
}

int pool__oob_take(pool__oob_list_t *l, const void *data, size_t len,
                   size_t min_len)
{
    if (len < min_len)
        return 0;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        pool__oob_t *v = pk__realloc(l->v, nc * sizeof *v);
        if (v == NULL)
            return 0;
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n].data = data;
    l->v[l->n].len = len;
    l->v[l->n].shm = POOL_WIRE_SHM_INLINE;
    l->n++;
    return 1;
}

void pool__wire_log_once(unsigned *logged, int kind, const char *who,
                         const char *fmt, ...)
{
    unsigned bit = 1u << (kind & 31);
    if (*logged & bit)
        return;
    *logged |= bit;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "picklepool: %s: %s\n", who, buf);
}
