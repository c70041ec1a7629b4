/*
 * wire.h - the wire protocol between the master's ROUTER and the workers'
 * DEALERs (private; docs/PROTOCOL.md is the full description).
 *
 * Every message is multipart.  Frame 1 is a fixed 32-byte little-endian
 * header; what follows depends on the kind:
 *
 *   READY     worker -> master   [hdr]             (count = credit, aux = pid)
 *   TASK      master -> worker   [hdr][call][items][buf]...
 *   RESULT    worker -> master   [hdr][outcomes][buf]...
 *   FUNC      master -> worker   [hdr][pickle]     (reserved: by-value fns)
 *   HEARTBEAT either way         [hdr]
 *   STOP      master -> worker   [hdr]
 *
 * Between `picklepool serve` and its peers (hosts and clients, over tcp)
 * the same kinds travel, plus:
 *
 *   HELLO     peer -> serve      [hdr][name]       (HOST: count = capacity;
 *                                                   CLIENT; aux = pid)
 *   HELLO     serve -> peer      [hdr]             (WELCOME: batch = session,
 *                                                   count = liveness,
 *                                                   aux = heartbeat ns)
 *   STOP      either way         [hdr]             (the session is over)
 *
 * `call` is a pickle of the global module.func, optionally followed by a
 * second pickle: the dict of keyword arguments.
 * `items` is a sequence of `count` records {u32 len, u32 nbufs, u32 status}
 * each followed by `len` bytes of pickle (the item, or its args tuple with
 * POOL_WIRE_F_STARARGS); or, with POOL_WIRE_F_VEC_I64 / _F64, `count` raw
 * little-endian int64 / float64 values, each the single argument of a call.
 * `outcomes` is `count` records of the same shape: status 0 and the result's
 * pickle, or a pk_err_t status and a UTF-8 message; or, with
 * POOL_WIRE_F_VEC_I64 / _F64, `count` raw results (every item succeeded).
 * The record's nbufs out-of-band buffers (pickle protocol 5) follow as the
 * frames after the payload, in record order; hdr.nbufs is their total.
 * With POOL_WIRE_F_SHM a buffer table frame comes first, and the buffers it
 * places in the shared-memory arena (shm.h) have empty frames.
 *
 * Everything here is pure: parsing never trusts a length, never allocates
 * except into caller-provided arrays, and returns PK_EPROTO with a message
 * naming what was wrong.  Thread-safe and fork-safe.
 */
#ifndef POOL_WIRE_H
#define POOL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "picklepool/error.h"

#define POOL_WIRE_MAGIC 0x31574b50u /* "PKW1" read little-endian */
#define POOL_WIRE_VERSION 1
#define POOL_WIRE_HDR_SIZE 32
#define POOL_WIRE_REC_SIZE 12

/* Bounds a peer can never exceed (checked by the parsers). */
#define POOL_WIRE_MAX_COUNT (1u << 24) /* items per batch */
#define POOL_WIRE_MAX_BUFS (1u << 20)  /* out-of-band frames per message */

typedef enum pool__wire_kind {
    POOL_WIRE_READY = 1,
    POOL_WIRE_TASK = 2,
    POOL_WIRE_RESULT = 3,
    POOL_WIRE_FUNC = 4,
    POOL_WIRE_HEARTBEAT = 5,
    POOL_WIRE_STOP = 6,
    POOL_WIRE_HELLO = 7, /* scale-out only: a peer of `picklepool serve` */
    POOL_WIRE__KIND_MAX
} pool__wire_kind_t;

/* Header flags. */
#define POOL_WIRE_F_STARARGS 0x0001 /* TASK: each record is an args tuple */
#define POOL_WIRE_F_VEC_I64 0x0002  /* TASK/RESULT: raw int64 payload */
#define POOL_WIRE_F_VEC_F64 0x0004  /* TASK/RESULT: raw float64 payload */
/* TASK: the call frame is empty; the call is the one the worker last
 * received over the socket (the master sends each job's call once per
 * worker generation, not with every batch). */
#define POOL_WIRE_F_SAME_CALL 0x0008
#define POOL_WIRE_F_RETIRING 0x0010 /* RESULT/READY: the worker exits now */
#define POOL_WIRE_F_RES_I64 0x0020  /* TASK: results must be ints; reply vec */
#define POOL_WIRE_F_RES_F64                                                    \
    0x0040 /* TASK: results must be floats; reply vec \
                                     */
#define POOL_WIRE_F_SHM                                                        \
    0x0080 /* TASK/RESULT: a buffer table frame follows \
                                  the payload (shared-memory arena) */

/* HELLO roles (exactly one is set).  HOST: a host agent offering `count`
 * batches of capacity (1..1024); CLIENT: a pool that submits work (count
 * 0); WELCOME: serve's answer, opening session `batch` (non-zero), with the
 * heartbeat interval in aux (ns, > 0) and the intervals of silence after
 * which a peer is declared gone in count (1..1000).  HOST and CLIENT carry
 * one more frame: the peer's name (1..POOL_WIRE_NAME_MAX bytes of printable
 * ASCII, checked by pool__wire_name_check). */
#define POOL_WIRE_F_HOST 0x0100
#define POOL_WIRE_F_CLIENT 0x0200
#define POOL_WIRE_F_WELCOME 0x0400
#define POOL_WIRE_NAME_MAX 255

/* The buffer table of a POOL_WIRE_F_SHM message: hdr.nbufs entries of 16
 * bytes {u64 off, u64 len}.  off == POOL_WIRE_SHM_INLINE (len 0): buffer k
 * is its frame, as without the flag; otherwise buffer k is len bytes at
 * arena offset off (64-byte aligned, inside the region the receiver allows)
 * and its frame is empty.  In a TASK, off may instead be
 * POOL_WIRE_SHM_HEAP + o: len bytes at offset o of the shared heap (any
 * alignment; a caller's array, see picklepool/shared.h). */
#define POOL_WIRE_SHM_ENT 16
#define POOL_WIRE_SHM_INLINE UINT64_MAX
#define POOL_WIRE_SHM_HEAP ((uint64_t)1 << 62)

typedef struct pool__wire_shm {
    uint64_t off; /* POOL_WIRE_SHM_INLINE, or an arena offset */
    uint64_t len;
} pool__wire_shm_t;

typedef struct pool__wire_hdr {
    uint8_t kind;   /* pool__wire_kind_t */
    uint16_t flags; /* POOL_WIRE_F_* allowed for the kind */
    uint64_t batch; /* TASK/RESULT: batch id; FUNC: function id */
    uint32_t count; /* TASK/RESULT: items (>= 1); READY: credit */
    uint32_t nbufs; /* out-of-band frames after the payload */
    uint64_t aux;   /* TASK: per-item timeout ns (0: none); RESULT: ns
                       spent running the batch; READY: worker pid;
                       HEARTBEAT: sender's monotonic ns */
} pool__wire_hdr_t;

/* One record of an items or outcomes payload, as parsed. */
typedef struct pool__wire_rec {
    const uint8_t *data; /* pickle or message bytes */
    uint32_t len;
    uint32_t nbufs;  /* out-of-band frames this record uses */
    uint32_t status; /* 0 or a pk_err_t (outcomes only) */
    uint32_t buf0;   /* index of its first frame among the buffers */
} pool__wire_rec_t;

/* Writes h into out[POOL_WIRE_HDR_SIZE]. */
void pool__wire_hdr_encode(const pool__wire_hdr_t *h, uint8_t *out);

/* Parses and validates a header frame: exact size, magic, version, a known
 * kind, flags allowed for that kind, count/nbufs within bounds and zero where
 * the kind has no payload.  Returns PK_OK or PK_EPROTO (err says why). */
pk_err_t pool__wire_hdr_parse(const void *data, size_t len, pool__wire_hdr_t *h,
                              pk_error_t *err);

/* The number of frames a message with header h must have in all (with
 * POOL_WIRE_F_SHM, one more: the buffer table after the payload). */
size_t pool__wire_nframes(const pool__wire_hdr_t *h);

/* Checks a HELLO's name frame: 1..POOL_WIRE_NAME_MAX bytes, each printable
 * ASCII (0x20..0x7e).  Returns PK_OK or PK_EPROTO. */
pk_err_t pool__wire_name_check(const void *data, size_t len, pk_error_t *err);

/* Appends a record header {len, nbufs, status} to *out-of-buffer bytes at p. */
void pool__wire_rec_encode(uint8_t *p, uint32_t len, uint32_t nbufs,
                           uint32_t status);

/* Parses a record payload that must hold exactly `count` records whose nbufs
 * add up to exactly `nbufs`.  `outcomes` non-zero: statuses may be any
 * pk_err_t code (a non-zero status needs no buffers); zero: every status must
 * be 0.  recs has count entries (may be NULL to validate only).  Returns PK_OK
 * or PK_EPROTO. */
pk_err_t pool__wire_recs_parse(const void *data, size_t len, uint32_t count,
                               uint32_t nbufs, int outcomes,
                               pool__wire_rec_t *recs, pk_error_t *err);

/* Writes the table entry for buffer k at p (POOL_WIRE_SHM_ENT bytes). */
void pool__wire_shm_encode(uint8_t *p, uint64_t off, uint64_t len);

/* Parses a buffer table of exactly nbufs entries.  Every arena entry must be
 * 64-byte aligned with 1 <= len and [off, off+len) inside [lo, hi), or a
 * heap entry inside a heap of `heap` bytes (0: none allowed); frame_len
 * (nbufs entries, the sizes of the buffer frames) must be 0 for those.  ents
 * has nbufs entries (may be NULL to validate only).  Returns PK_OK or
 * PK_EPROTO. */
pk_err_t pool__wire_shm_parse(const void *data, size_t len, uint32_t nbufs,
                              uint64_t lo, uint64_t hi, uint64_t heap,
                              const size_t *frame_len, pool__wire_shm_t *ents,
                              pk_error_t *err);

/* Checks a raw vector payload: exactly count * 8 bytes.  PK_OK or PK_EPROTO. */
pk_err_t pool__wire_vec_check(size_t len, uint32_t count, pk_error_t *err);

/* An out-of-band buffer as collected by an encoder's buffer callback. */
typedef struct pool__oob {
    const void *data;
    size_t len;
    uint64_t shm; /* arena offset of data, or POOL_WIRE_SHM_INLINE */
} pool__oob_t;

/* A growable list of them (zero-initialise). */
typedef struct pool__oob_list {
    pool__oob_t *v;
    size_t n, cap;
} pool__oob_list_t;

/* The shared body of the encoders' pk_buffer_cb: takes buffers of at least
 * min_len bytes out of band by appending them to l (returns 1), keeps the
 * others (and any it cannot record for lack of memory) in band (0). */
int pool__oob_take(pool__oob_list_t *l, const void *data, size_t len,
                   size_t min_len);

/* Logs "picklepool: <who>: <message>" to stderr the first time a kind of
 * malformed message is seen: *logged keeps one bit per kind. */
void pool__wire_log_once(unsigned *logged, int kind, const char *who,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Static name of a kind ("TASK"), "?" when unknown. */
const char *pool__wire_kind_name(int kind);

/* Routing ids: 8 bytes {'W', 0, u16 slot, u32 generation}.  The leading
 * non-zero byte keeps clear of ids libzmq reserves. */
#define POOL_WIRE_ID_SIZE 8
void pool__wire_id_encode(int slot, uint32_t gen, uint8_t *out);
/* PK_OK with *slot, *gen set, or PK_EPROTO. */
pk_err_t pool__wire_id_parse(const void *data, size_t len, int *slot,
                             uint32_t *gen);

#endif /* POOL_WIRE_H */
