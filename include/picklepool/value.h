/*
 * picklepool/value.h - the C value model for everything a Python job ships.
 *
 * A value graph lives in a document (pk_doc_t): an arena that owns every value,
 * string and array allocated in it and frees them all at once in pk_doc_free().
 * Values are therefore never freed one by one, shared references are plain
 * pointer sharing (the same list twice is one pk_value_t), and cycles (a list
 * that contains itself) need no special care.
 *
 * The struct layout is public so that kernels can read values without a call per
 * field; treat it as read-only and build values with the constructors below.
 * Never copy a pk_value_t by value (`*a = *b`): a scalar occupies only the
 * bytes its type uses (an int takes 16, not sizeof(pk_value_t)).
 * Ownership rule for every constructor: the returned value belongs to `doc` and
 * lives until pk_doc_free(doc).  A container may hold values of the same doc
 * only.
 *
 * The NULL contract, one rule for the whole header:
 *   - A NULL doc or value pointer where the declaration asks for one is a
 *     programming error, as it is for libc's string functions: it is not
 *     checked and crashes.  (pk_doc_free and pk_repr accept NULL, as they say.)
 *   - A constructor returns NULL when memory runs out.  The few that check
 *     their arguments' contents (pk_str_checked, pk_object, pk_ndarray) also
 *     return NULL for invalid contents, as each one's comment says;
 *     pk_str_checked tells the two apart in *err.
 *   - Calls returning pk_err_t report a value of the wrong type as PK_ETYPE
 *     and out of memory as PK_ENOMEM; lookups (pk_item, pk_dict_get) return
 *     NULL when there is no such item, the value is not a container of that
 *     kind, or the key is unhashable.
 *
 * Strings are UTF-8.  Lone surrogates (which CPython writes with the
 * "surrogatepass" error handler) are kept as their 3-byte encodings so that a
 * round trip is exact.
 *
 * Out-of-band buffers: an ndarray or pickle buffer may borrow memory it does not
 * own (PK_VF_BORROWED).  Whoever supplied that memory keeps it alive until the
 * doc is freed; pk_doc_on_free() registers a release callback for that.
 *
 * Thread-safety: a doc and its values may be used by one thread at a time;
 * distinct docs are independent.  Reading a doc from several threads at once is
 * safe while nobody modifies it.  Fork-safe (plain memory).
 */
#ifndef PICKLEPOOL_VALUE_H
#define PICKLEPOOL_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "error.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* clang-format off */
typedef enum pk_type {
    PK_NONE = 0,
    PK_BOOL,
    PK_INT,      /* fits in int64_t */
    PK_BIGINT,   /* arbitrary precision, does not fit in int64_t */
    PK_FLOAT,    /* double */
    PK_COMPLEX,  /* two doubles */
    PK_STR,      /* UTF-8 (surrogatepass) */
    PK_BYTES,
    PK_BYTEARRAY,
    PK_TUPLE,
    PK_LIST,
    PK_DICT,     /* insertion ordered, any hashable key */
    PK_SET,
    PK_FROZENSET,
    PK_GLOBAL,   /* a reference to module.qualname, never resolved here */
    PK_NDARRAY,  /* numpy.ndarray (or numpy scalar when PK_VF_NPSCALAR) */
    PK_DTYPE,    /* numpy.dtype on its own */
    PK_PICKLEBUFFER, /* pickle.PickleBuffer (protocol 5 out-of-band buffer) */
    PK_OBJECT,   /* callable(*args), items appended, then BUILD state: an
                    instance the pickle reconstructs by calling a global
                    (only allow-listed ones decode to this: builtins
                    exceptions, and the standard library's plain data types:
                    collections.OrderedDict and deque, datetime's date, time,
                    datetime, timedelta and timezone, decimal.Decimal,
                    uuid.UUID, range, slice) */
    PK__TYPE_MAX
} pk_type_t;
/* clang-format on */

/* pk_value_t.flags */
#define PK_VF_READONLY 0x01 /* buffer/array data must not be written */
#define PK_VF_BORROWED 0x02 /* data points into memory the doc does not own */
#define PK_VF_NPSCALAR 0x04 /* PK_NDARRAY that is a numpy scalar (ndim 0) */
#define PK_VF_FORTRAN 0x08  /* PK_NDARRAY in Fortran (column-major) order */
/* PK_OBJECT made by callable.__new__(callable, *args) (pickle's NEWOBJ, as
 * uuid.UUID is) rather than by calling callable(*args) (REDUCE). */
#define PK_VF_NEWOBJ 0x10
/* Constructor flag only (never stored): pk_ndarray with data == NULL leaves the
 * storage uninitialised instead of zeroing it, for kernels that overwrite it. */
#define PK_VF_UNINIT 0x80

/* Maximum number of array dimensions (numpy's own limit is 64 since 2.0). */
#define PK_MAXDIMS 64

typedef struct pk_value pk_value_t;
typedef struct pk_doc pk_doc_t;

/* numpy dtype for the supported kinds: b (bool), i, u, f, c, S, U, V (raw). */
/* clang-format off */
typedef struct pk_dtype {
    char kind;         /* 'b','i','u','f','c','S','U','V' */
    char byteorder;    /* '<', '>' or '|' (not applicable); never '=' */
    uint16_t reserved;
    uint32_t itemsize; /* bytes per element (for 'U': 4 * characters) */
} pk_dtype_t;
/* clang-format on */

/* clang-format off */
typedef struct pk_ndarray {
    pk_dtype_t dtype;
    int ndim;                /* 0..PK_MAXDIMS */
    const int64_t *shape;    /* ndim entries (doc-owned) */
    const int64_t *strides;  /* ndim entries in bytes, C or Fortran contiguous */
    void *data;              /* nbytes bytes; borrowed when PK_VF_BORROWED */
    size_t nbytes;           /* product(shape) * itemsize */
} pk_ndarray_t;
/* clang-format on */

typedef struct pk_dict_entry {
    pk_value_t *key;
    pk_value_t *value;
} pk_dict_entry_t;

/* clang-format off */
struct pk_value {
    uint8_t type;  /* pk_type_t */
    uint8_t flags; /* PK_VF_* */
    uint16_t reserved;
    uint32_t reserved2;
    union {
        int b;                        /* PK_BOOL: 0 or 1 */
        int64_t i;                    /* PK_INT */
        double f;                     /* PK_FLOAT */
        struct { double re, im; } c;  /* PK_COMPLEX */
        struct {                      /* PK_BIGINT: two's complement, */
            const uint8_t *bytes;     /* little endian, minimal length */
            size_t len;               /* (the LONG1 payload) */
        } big;
        struct {                      /* PK_STR (UTF-8, NUL-terminated */
            const char *ptr;          /* for convenience; len excludes it), */
            size_t len;               /* PK_BYTES, PK_BYTEARRAY, */
        } str;                        /* PK_PICKLEBUFFER */
        /* seq and dict: items/entries, cap and index are internal; change
         * them only through the constructors and mutators below. */
        struct {                      /* PK_TUPLE, PK_LIST, PK_SET, */
            pk_value_t **items;       /* PK_FROZENSET: items in order */
            size_t len;
            size_t cap;
            uint32_t *index;          /* sets: hash index (internal) */
            size_t index_cap;
        } seq;
        struct {                      /* PK_DICT */
            pk_dict_entry_t *entries; /* insertion order */
            size_t len;
            size_t cap;
            uint32_t *index;          /* hash index (internal) */
            size_t index_cap;
        } dict;
        struct {                      /* PK_GLOBAL */
            const char *module;       /* NUL-terminated UTF-8 */
            const char *name;         /* qualname, may contain dots */
        } global;
        struct {                      /* PK_OBJECT */
            pk_value_t *callable;     /* PK_GLOBAL */
            pk_value_t *args;         /* PK_TUPLE */
            pk_value_t *state;        /* BUILD state, or NULL */
            pk_value_t *items;        /* appended after the call, or NULL:
                                         a PK_DICT (OrderedDict's items) or
                                         a PK_LIST (deque's) */
        } obj;
        pk_ndarray_t *nd;             /* PK_NDARRAY */
        pk_dtype_t *dtype;            /* PK_DTYPE */
    } u;
};
/* clang-format on */

/* ---- documents --------------------------------------------------------- */

/* Creates an empty document.  On success *docp owns it (free with
 * pk_doc_free).  Returns PK_OK or PK_ENOMEM. */
PK_API pk_err_t pk_doc_new(pk_doc_t **docp);

/* Frees the document, every value in it, and runs its on-free callbacks in
 * reverse registration order.  Sets *docp to NULL; NULL or *docp == NULL is a
 * no-op. */
PK_API void pk_doc_free(pk_doc_t **docp);

/* Registers fn(arg) to run when the doc is freed (for example to release an
 * out-of-band buffer that values borrow).  Returns PK_OK or PK_ENOMEM (and
 * then fn is not registered and not called). */
PK_API pk_err_t pk_doc_on_free(pk_doc_t *doc, void (*fn)(void *arg), void *arg);

/* Allocates `size` bytes (8-byte aligned, uninitialised) owned by doc.
 * Returns NULL when memory runs out. */
PK_API void *pk_doc_alloc(pk_doc_t *doc, size_t size);

/* Bytes currently held by the doc's arena (for statistics and limits). */
PK_API size_t pk_doc_size(const pk_doc_t *doc);

/* ---- constructors (all return doc-owned values, NULL on ENOMEM) -------- */

/* None, True and False are static singletons that belong to no doc and may be
 * used in any doc. */
PK_API pk_value_t *pk_none(void);
PK_API pk_value_t *pk_bool(int b);

PK_API pk_value_t *pk_int(pk_doc_t *doc, int64_t i);
/* Two's complement little-endian bytes (any length, copied); the result is
 * normalised: PK_INT when it fits in int64, else a minimal PK_BIGINT. */
PK_API pk_value_t *pk_bigint(pk_doc_t *doc, const void *le_bytes, size_t len);
PK_API pk_value_t *pk_float(pk_doc_t *doc, double f);
PK_API pk_value_t *pk_complex(pk_doc_t *doc, double re, double im);

/* Copies `len` bytes.  pk_str does not validate UTF-8; pk_str_checked does and
 * returns NULL with *err = PK_EINVAL for invalid input (surrogates allowed),
 * or NULL with *err = PK_ENOMEM. */
PK_API pk_value_t *pk_str(pk_doc_t *doc, const char *utf8, size_t len);
PK_API pk_value_t *pk_str_checked(pk_doc_t *doc, const char *utf8, size_t len,
                                  pk_err_t *err);
/* Like pk_str for a NUL-terminated string. */
PK_API pk_value_t *pk_cstr(pk_doc_t *doc, const char *utf8);
PK_API pk_value_t *pk_bytes(pk_doc_t *doc, const void *data, size_t len);
PK_API pk_value_t *pk_bytearray(pk_doc_t *doc, const void *data, size_t len);

/* Containers are created empty with room for `cap` items. */
PK_API pk_value_t *pk_tuple_new(pk_doc_t *doc, size_t len); /* len NULL slots */
PK_API pk_value_t *pk_list_new(pk_doc_t *doc, size_t cap);
PK_API pk_value_t *pk_dict_new(pk_doc_t *doc, size_t cap);
PK_API pk_value_t *pk_set_new(pk_doc_t *doc, size_t cap);
PK_API pk_value_t *pk_frozenset_new(pk_doc_t *doc, size_t cap);

/* A reference to module.name; both strings are copied. */
PK_API pk_value_t *pk_global(pk_doc_t *doc, const char *module,
                             const char *name);

/* An object the pickle rebuilds as callable(*args), then BUILD with state when
 * state is non-NULL (pickle's REDUCE).  callable must be a PK_GLOBAL and args
 * a PK_TUPLE of the same doc.  The encoder writes it as is; the decoder makes
 * one only for allow-listed callables (builtins exception classes), so a C
 * program can hand a Python reader a real exception instance.  Returns NULL
 * on ENOMEM or wrong argument types. */
PK_API pk_value_t *pk_object(pk_doc_t *doc, pk_value_t *callable,
                             pk_value_t *args, pk_value_t *state);

/* A pickle buffer of `len` bytes.  With PK_VF_BORROWED in `flags` the bytes are
 * referenced, not copied (keep them alive until the doc is freed); otherwise
 * they are copied.  PK_VF_READONLY marks it read-only. */
PK_API pk_value_t *pk_picklebuffer(pk_doc_t *doc, const void *data, size_t len,
                                   unsigned flags);

/* An ndarray of dtype `dt` (e.g. from pk_dtype_parse("<f4")) and shape.
 * With data == NULL the doc allocates zeroed storage (64-byte aligned;
 * uninitialised with PK_VF_UNINIT);
 * otherwise `data` is copied, or borrowed when PK_VF_BORROWED is in flags.
 * PK_VF_FORTRAN selects column-major strides.  Returns NULL on ENOMEM or an
 * invalid shape (negative, too many dims, size overflow), PK_VF_NPSCALAR with
 * ndim != 0, or PK_VF_BORROWED with NULL data for a non-empty array. */
PK_API pk_value_t *pk_ndarray(pk_doc_t *doc, const pk_dtype_t *dt, int ndim,
                              const int64_t *shape, void *data, unsigned flags);
PK_API pk_value_t *pk_dtype_value(pk_doc_t *doc, const pk_dtype_t *dt);

/* Parses a numpy type string ("<f4", "|u1", "<U8", "|S3", "|b1", "f8"...) into
 * *dt.  Returns PK_OK or PK_EUNSUPPORTED. */
PK_API pk_err_t pk_dtype_parse(const char *str, pk_dtype_t *dt);
/* Writes the numpy type string for dt ("<f4") into buf (>= 16 bytes). */
PK_API const char *pk_dtype_str(const pk_dtype_t *dt, char *buf, size_t size);

/* 1 when nd's elements lie in C order (numpy's rule: axes of length <= 1
 * may have any stride; an empty array is), else 0 (Fortran order).  For
 * kernels that walk the data flat.  Thread- and fork-safe. */
PK_API int pk_ndarray_c_contiguous(const pk_ndarray_t *nd);

/* ---- mutation -------------------------------------------------------- */

/* Appends item to a list or tuple; for a set or frozenset it is pk_set_add
 * (and may return PK_EUNHASHABLE).  Returns PK_OK, PK_ETYPE (any other type)
 * or PK_ENOMEM. */
PK_API pk_err_t pk_list_append(pk_doc_t *doc, pk_value_t *list,
                               pk_value_t *item);
/* Sets slot i of a tuple created with pk_tuple_new (i < len). */
PK_API void pk_tuple_set(pk_value_t *tuple, size_t i, pk_value_t *item);
/* Inserts or replaces key -> value (Python semantics: an equal key keeps its
 * position and original key object, the value is replaced).  Returns PK_OK,
 * PK_EUNHASHABLE (key is a list, dict, set, bytearray, ndarray, or a tuple
 * holding one), PK_ETYPE or PK_ENOMEM (also past 2^31 entries). */
PK_API pk_err_t pk_dict_set(pk_doc_t *doc, pk_value_t *dict, pk_value_t *key,
                            pk_value_t *value);
/* Adds item to a set or frozenset (no-op if an equal item is present).  Same
 * returns as pk_dict_set. */
PK_API pk_err_t pk_set_add(pk_doc_t *doc, pk_value_t *set, pk_value_t *item);

/* ---- access ------------------------------------------------------------ */

/* Looks key up in a dict; returns the value or NULL if absent/unhashable. */
PK_API pk_value_t *pk_dict_get(const pk_value_t *dict, const pk_value_t *key);
/* Convenience for string keys. */
PK_API pk_value_t *pk_dict_get_str(const pk_value_t *dict, const char *key);
/* Non-zero if set/frozenset contains item. */
PK_API int pk_set_contains(const pk_value_t *set, const pk_value_t *item);

/* Number of items of a tuple, list, set, frozenset or dict; length in bytes of
 * str/bytes/bytearray/picklebuffer; 0 otherwise. */
PK_API size_t pk_len(const pk_value_t *v);
/* Item i of a tuple/list/set/frozenset, or NULL when out of range / not one. */
PK_API pk_value_t *pk_item(const pk_value_t *v, size_t i);

/* Reads a number as int64 / double.  pk_as_int accepts bool and int (PK_ETYPE
 * otherwise); pk_as_double accepts bool, int, bigint and float (PK_ELIMIT for
 * a bigint beyond the double range). */
PK_API pk_err_t pk_as_int(const pk_value_t *v, int64_t *out);
PK_API pk_err_t pk_as_double(const pk_value_t *v, double *out);

/* Reads the text of a str, bytes or bytearray: *ptr (NUL-terminated for
 * str and bytes, valid while the value is) and *len in bytes (UTF-8 for a
 * str).  Returns PK_OK, or PK_ETYPE for any other type (ptr and len
 * untouched).  What a kernel taking a name, a path or a blob calls. */
PK_API pk_err_t pk_as_str(const pk_value_t *v, const char **ptr, size_t *len);

/* Static name of a type ("int", "list", "numpy.ndarray", ...). */
PK_API const char *pk_type_name(pk_type_t t);

/* The Python type name of v, for messages: pk_type_name of its type ("int",
 * "numpy.ndarray"), and for a PK_OBJECT its class's name as Python's
 * type(v).__name__ says it ("date", "OrderedDict", "ValueError").  No cast
 * needed.  The string is static, or lives as long as v's doc. */
PK_API const char *pk_value_type_name(const pk_value_t *v);

/* Python equality for hashable and unhashable values alike (1 == 1.0 == True,
 * containers compared element-wise, ndarrays by dtype, shape and bytes).
 * Cycles compare by identity at depth > 1000.  Non-zero when equal. */
PK_API int pk_equal(const pk_value_t *a, const pk_value_t *b);

/* Hash consistent with pk_equal for hashable values (not CPython's hash()).
 * Seeded once per process from getrandom (keys come from untrusted pickles),
 * so hashes differ between unrelated processes.  Returns PK_OK or
 * PK_EUNHASHABLE (also past a nesting depth of 1000 or 2^26 nodes). */
PK_API pk_err_t pk_hash(const pk_value_t *v, uint64_t *out);

/* Writes a Python-like repr of v into buf (truncated with "..." past size);
 * for diagnostics and tests; a NULL v prints "<NULL>".  Returns buf. */
PK_API const char *pk_repr(const pk_value_t *v, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_VALUE_H */
