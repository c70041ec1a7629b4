/*
 * fuzz_wire.c - libFuzzer target for the wire protocol parsers (wire.h).
 *
 * The first input byte picks what the rest is fed to, the way a peer's
 * frames reach the master or a worker:
 *   0  a header frame (pool__wire_hdr_parse), re-encoded and re-parsed when
 *      it is valid, which must give the same header back;
 *   1  a routing id (pool__wire_id_parse);
 *   2  a whole message: a 32-byte header then the payload, interpreted as
 *      the master and the worker do: records (task or outcome form) or a
 *      raw vector, then every successful record's pickle decoded with its
 *      out-of-band buffers (fake ones of the right count); for a HELLO,
 *      the payload is its name frame (pool__wire_name_check);
 *   3  a record payload with count and nbufs taken from its first bytes;
 *      with the mode byte's top bit set instead a POOL_WIRE_F_SHM buffer
 *      table (pool__wire_shm_parse): nbufs from the next byte, then frame
 *      sizes (one byte each), then the table, checked against an arena
 *      region [4096, 4096 + 1 MiB); every entry accepted must lie inside it.
 * Any crash, sanitizer report, hang or leak is a bug.  Built by
 * `make fuzz`; replayed over tests/fuzz/corpus/wire by `make test`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "picklepool/pickle.h"
#include "ipc/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_records(const pool__wire_rec_t *r, uint32_t count,
                           uint32_t nbufs, int outcomes)
{
    static const uint8_t fake[64];
    pk_buffer_t *bufs = calloc((size_t)nbufs + 1, sizeof *bufs);
    pk_doc_t *doc = NULL;
    if (bufs == NULL || pk_doc_new(&doc) != PK_OK) {
        free(bufs);
        return;
    }
    for (uint32_t k = 0; k < nbufs; k++) {
        bufs[k].data = fake;
        bufs[k].len = sizeof fake;
        bufs[k].readonly = (int)(k & 1);
    }
    for (uint32_t i = 0; i < count && i < 64; i++) {
        if (outcomes && r[i].status != 0)
            continue; /* a message: plain bytes */
        pk_load_opts_t o;
        pk_load_opts_init(&o);
        o.max_ops = 1u << 16;
        o.max_memo = 1u << 12;
        o.max_stack = 1u << 12;
        o.buffers = bufs + r[i].buf0;
        o.nbuffers = r[i].nbufs;
        pk_value_t *v = NULL;
        pk_error_t err;
        (void)pk_loads(doc, r[i].data, r[i].len, &o, &v, NULL, &err);
    }
    pk_doc_free(&doc);
    free(bufs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] & 3, top = data[0] & 0x80;
    data++;
    size--;
    pk_error_t err;
    pool__wire_hdr_t h;
    switch (mode) {
    case 0:
        if (pool__wire_hdr_parse(data, size, &h, &err) == PK_OK) {
            uint8_t b[POOL_WIRE_HDR_SIZE];
            pool__wire_hdr_t h2;
            pool__wire_hdr_encode(&h, b);
            if (pool__wire_hdr_parse(b, sizeof b, &h2, &err) != PK_OK ||
                memcmp(b, data, sizeof b) != 0 || h2.kind != h.kind ||
                h2.flags != h.flags || h2.batch != h.batch ||
                h2.count != h.count || h2.nbufs != h.nbufs || h2.aux != h.aux)
                abort();
            (void)pool__wire_nframes(&h);
            (void)pool__wire_kind_name(h.kind);
        }
        break;
    case 1: {
        int slot;
        uint32_t gen;
        if (pool__wire_id_parse(data, size, &slot, &gen) == PK_OK) {
            uint8_t id[POOL_WIRE_ID_SIZE];
            pool__wire_id_encode(slot, gen, id);
            if (memcmp(id, data, sizeof id) != 0)
                abort();
        }
        break;
    }
    case 2: {
        if (size < POOL_WIRE_HDR_SIZE ||
            pool__wire_hdr_parse(data, POOL_WIRE_HDR_SIZE, &h, &err) != PK_OK)
            break;
        const uint8_t *pl = data + POOL_WIRE_HDR_SIZE;
        size_t plen = size - POOL_WIRE_HDR_SIZE;
        if (h.kind == POOL_WIRE_HELLO) {
            /* the rest is the peer's name frame, as serve reads it */
            if (pool__wire_name_check(pl, plen, &err) == PK_OK)
                for (size_t i = 0; i < plen; i++)
                    if (pl[i] < 0x20 || pl[i] > 0x7e)
                        abort();
            break;
        }
        if (h.kind != POOL_WIRE_TASK && h.kind != POOL_WIRE_RESULT)
            break;
        if (h.flags & (POOL_WIRE_F_VEC_I64 | POOL_WIRE_F_VEC_F64)) {
            (void)pool__wire_vec_check(plen, h.count, &err);
            break;
        }
        if (h.count > 4096)
            break; /* keep the record table small */
        pool__wire_rec_t *r = malloc(h.count * sizeof *r);
        int outcomes = h.kind == POOL_WIRE_RESULT;
        if (r != NULL && pool__wire_recs_parse(pl, plen, h.count, h.nbufs,
                                               outcomes, r, &err) == PK_OK) {
            /* Everything claimed must lie inside the payload. */
            for (uint32_t i = 0; i < h.count; i++)
                if (r[i].data < pl || r[i].data + r[i].len > pl + plen ||
                    r[i].buf0 + (uint64_t)r[i].nbufs > h.nbufs)
                    abort();
            decode_records(r, h.count, h.nbufs, outcomes);
        }
        free(r);
        break;
    }
    default: {
        if (top) {
            if (size < 1)
                break;
            uint32_t nbufs = 1 + data[0] % 16;
            if (size < 1 + nbufs)
                break;
            size_t fl[16];
            pool__wire_shm_t ents[16];
            for (uint32_t k = 0; k < nbufs; k++)
                fl[k] = data[1 + k] & 1 ? data[1 + k] : 0;
            const uint64_t lo = 4096, hi = 4096 + (1u << 20);
            if (pool__wire_shm_parse(data + 1 + nbufs, size - 1 - nbufs, nbufs,
                                     lo, hi, 1u << 20, fl, ents, &err) == PK_OK)
                for (uint32_t k = 0; k < nbufs; k++) {
                    uint64_t o = ents[k].off, n = ents[k].len;
                    if (o == POOL_WIRE_SHM_INLINE)
                        continue;
                    if (o >= POOL_WIRE_SHM_HEAP
                            ? (n == 0 || o - POOL_WIRE_SHM_HEAP + n > 1u << 20)
                            : (o < lo || n == 0 || o + n > hi))
                        abort();
                    if (fl[k] != 0)
                        abort();
                }
            break;
        }
        if (size < 3)
            break;
        uint32_t count = 1 + data[0] % 64, nbufs = data[1] % 8;
        int outcomes = data[2] & 1;
        pool__wire_rec_t r[64];
        (void)pool__wire_recs_parse(data + 3, size - 3, count, nbufs, outcomes,
                                    r, &err);
        break;
    }
    }
    return 0;
}
