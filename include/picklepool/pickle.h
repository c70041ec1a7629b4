/*
 * picklepool/pickle.h - a safe, CPython-compatible pickle codec.
 *
 * Decoder: every opcode of protocols 0-5 into a pk_value_t graph.  It never
 * executes anything: a global used as a value stays a PK_GLOBAL reference, and
 * a global that the pickle would *call* (REDUCE, NEWOBJ, NEWOBJ_EX, BUILD) must
 * be one of a few pure constructors (set, frozenset, bytearray, bytes, complex,
 * _codecs.encode, numpy's array/dtype/scalar reconstructors, with their
 * protocol-2 spellings), or decoding fails with PK_EREFUSED and a message such
 * as "refusing to call os.system".  Every length field is checked against the
 * remaining input before anything is allocated; depth, memo, stack, opcode
 * count and input size are bounded by pk_load_opts_t.
 *
 * Encoder: protocols 2-5 (default 5).  For plain values (None, bool, int,
 * float, str, bytes, bytearray, tuple, list, dict, set, frozenset, complex,
 * globals) the output is byte-for-byte what CPython's C pickler writes for the
 * same object graph, including framing, memo and batching.  ndarrays encode in
 * the forms numpy itself uses so numpy 1.x and 2.x load them; at protocol 5
 * their data can travel out of band (see pk_dump_opts_t.buffer_cb).
 *
 * Thread-safety: reentrant; distinct calls on distinct docs may run in
 * parallel.  Fork-safe.
 */
#ifndef PICKLEPOOL_PICKLE_H
#define PICKLEPOOL_PICKLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "export.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PK_HIGHEST_PROTOCOL 5
#define PK_DEFAULT_PROTOCOL 5

/* How Python 2 STRING/BINSTRING/SHORT_BINSTRING decode (CPython's `encoding`
 * argument of pickle.loads). */
typedef enum pk_str_encoding {
    PK_ENC_ASCII = 0, /* default: decode as ASCII, error on bytes >= 0x80 */
    PK_ENC_LATIN1,    /* decode as latin-1 (numpy arrays from Python 2) */
    PK_ENC_BYTES      /* keep as bytes */
} pk_str_encoding_t;

/* An out-of-band buffer handed to the decoder (protocol 5 NEXT_BUFFER).  The
 * decoder does not copy it: values that use it borrow `data`, which must stay
 * valid until the doc is freed. */
typedef struct pk_buffer {
    const void *data;
    size_t len;
    int readonly; /* non-zero: values borrowing it are PK_VF_READONLY */
} pk_buffer_t;

typedef struct pk_load_opts {
    size_t max_depth; /* nesting of MARKs and containers as the opcodes
                            build them (default 1000).  A container filled
                            after it was memoized keeps the depth it had,
                            so a crafted pickle can nest lists deeper than
                            this (and cycles are unbounded anyway): code
                            that walks a decoded graph recursively must
                            bound its own depth, as pk_dumps, pk_equal,
                            pk_hash and pk_repr do. */
    size_t max_memo;  /* memo entries (default 1<<26) */
    size_t max_stack; /* values on the stack (default 1<<26) */
    size_t max_ops;   /* opcodes executed (default 1<<32 on 64-bit) */
    size_t max_bytes; /* input length accepted (default 1<<40) */
    pk_str_encoding_t encoding; /* Python 2 str decoding (default ASCII) */
    const pk_buffer_t *buffers; /* out-of-band buffers, in order */
    size_t nbuffers;
} pk_load_opts_t;

/* Fills *opts with the defaults above. */
PK_API void pk_load_opts_init(pk_load_opts_t *opts);

/* Decodes one pickle from data[0..len).  Values are allocated in `doc` and
 * *out receives the root (doc-owned).  `consumed`, if non-NULL, receives the
 * number of bytes up to and including STOP, so a stream of concatenated pickles
 * can be read one at a time; trailing bytes after STOP are not an error.
 * `opts` may be NULL for defaults.  On failure returns the code (PK_EPICKLE,
 * PK_ETRUNC, PK_ELIMIT, PK_EREFUSED, PK_EUNSUPPORTED, PK_ENOMEM, ...), fills
 * *err (may be NULL) with offset, opcode and reason, leaves *out untouched, and
 * the doc may hold unreachable garbage (freed with the doc).  Every buffer in
 * opts->buffers must be used exactly once by the pickle's NEXT_BUFFER opcodes;
 * a missing one is an error, unused ones are not. */
PK_API pk_err_t pk_loads(pk_doc_t *doc, const void *data, size_t len,
                         const pk_load_opts_t *opts, pk_value_t **out,
                         size_t *consumed, pk_error_t *err);

/* A growable byte buffer for encoder output.  Zero-initialise it
 * (pk_buf_t b = {0};) before first use; free with pk_buf_free. */
typedef struct pk_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} pk_buf_t;

/* Frees b->data and zeroes *b.  NULL is a no-op. */
PK_API void pk_buf_free(pk_buf_t *b);

/* Called by the encoder at protocol 5 for each buffer it may send out of band
 * (ndarray data, PK_PICKLEBUFFER).  Return 1 to take it out of band (the
 * encoder then writes NEXT_BUFFER and, for read-only data, READONLY_BUFFER;
 * `data` stays owned by the value's doc, so keep the doc alive until the buffer
 * is sent), 0 to keep it in band, or -1 to abort encoding with PK_ECANCELED.
 * Like the buffer_callback of pickle.dumps. */
typedef int (*pk_buffer_cb)(void *ctx, const void *data, size_t len,
                            int readonly);

typedef struct pk_dump_opts {
    int protocol;           /* 2..5, default 5 */
    pk_buffer_cb buffer_cb; /* NULL: everything in band */
    void *buffer_ctx;
} pk_dump_opts_t;

/* Fills *opts with the defaults (protocol 5, everything in band). */
PK_API void pk_dump_opts_init(pk_dump_opts_t *opts);

/* Encodes v and appends the pickle to *out (which the caller owns and frees
 * with pk_buf_free, on success and failure alike).  `opts` may be NULL.
 * Returns PK_OK, PK_EINVAL (bad protocol), PK_EUNSUPPORTED (a value that
 * protocol cannot carry), PK_ECANCELED (buffer_cb returned -1), PK_ELIMIT
 * (nesting deeper than 1000 outside cycles) or PK_ENOMEM; on failure out->len
 * is restored to its value at entry. */
PK_API pk_err_t pk_dumps(const pk_value_t *v, const pk_dump_opts_t *opts,
                         pk_buf_t *out, pk_error_t *err);

/* Writes a pickletools.dis-like listing of the pickle to `fp`: one line per
 * opcode with offset, name and argument, then the globals it names and for
 * each whether decoding would call it and whether pk_loads would allow that.
 * Never executes or decodes into values.  Returns PK_OK or the error that
 * stopped the listing (with *err filled, and the listing up to that point
 * written). */
PK_API pk_err_t pk_disassemble(const void *data, size_t len, FILE *fp,
                               pk_error_t *err);

/* What decoding a pickle would call, worst first wins. */
typedef enum pk_verdict {
    PK_VERDICT_SAFE = 0,     /* nothing, or allow-listed data constructors */
    PK_VERDICT_UNKNOWN = 1,  /* a callable pk_loads refuses */
    PK_VERDICT_DANGEROUS = 2 /* a known-dangerous call (os.system, eval,
                                subprocess.Popen...), refused too */
} pk_verdict_t;

/* pk_inspect flags: list only the globals and the verdict, no opcodes. */
#define PK_INSPECT_GLOBALS 0x1

/* pk_disassemble with `flags`, and *verdict (may be NULL) set to what
 * decoding would call.  Each global is listed under the name pk_loads
 * resolves it to (a protocol 0-2 pickle's Python 2 names as Python 3 reads
 * them, the name written beside), with what it is: data constructor,
 * DANGEROUS call, or unknown callable; then one line "verdict: ...".
 * Returns as pk_disassemble does (the verdict is set only when the listing
 * reached STOP). */
PK_API pk_err_t pk_inspect(const void *data, size_t len, FILE *fp,
                           unsigned flags, pk_verdict_t *verdict,
                           pk_error_t *err);

/* Name of a pickle opcode ("BININT1") or NULL if `op` is not an opcode. */
PK_API const char *pk_opcode_name(int op);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_PICKLE_H */
