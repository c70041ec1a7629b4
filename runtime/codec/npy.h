/*
 * npy.h - numpy and builtins knowledge shared by the pickle decoder and
 * encoder (private).
 *
 * The allow-list of globals that a pickle may *call* lives here, as one
 * X-macro, so that pk_loads (which calls them), pk_disassemble (which says
 * whether pk_loads would) and the encoder (which writes the same names) agree.
 * Every other global that a pickle calls is refused.  The npy.c helpers build
 * the values those callables produce: ndarrays, dtypes and numpy scalars from
 * the argument tuples and BUILD states numpy 1.x and 2.x write.
 *
 * Helpers return PK_OK or an error with `err` filled by pk__err (offset and
 * opcode left at -1 for the caller to set).  Values they return belong to doc.
 */
#ifndef PK_NPY_H
#define PK_NPY_H

#include "core/common.h"
#include "picklepool/pickle.h"

/* What an allowed callable does. */
typedef enum pk__callable {
    PK__CALL_NONE = 0,       /* not allowed: refuse */
    PK__CALL_SET,            /* set(iterable=()) */
    PK__CALL_FROZENSET,      /* frozenset(iterable=()) */
    PK__CALL_BYTEARRAY,      /* bytearray(), (bytes), (str, 'latin-1') */
    PK__CALL_BYTES,          /* bytes(), (bytes), (str, 'latin-1') */
    PK__CALL_COMPLEX,        /* complex(re=0, im=0) */
    PK__CALL_CODECS_ENCODE,  /* _codecs.encode(str, 'latin1') -> bytes */
    PK__CALL_NP_RECONSTRUCT, /* multiarray._reconstruct(ndarray, shape, b) */
    PK__CALL_NP_FROMBUFFER,  /* numeric._frombuffer(buf, dtype, shape, ord) */
    PK__CALL_NP_DTYPE,       /* numpy.dtype(typestr, align, copy) */
    PK__CALL_NP_SCALAR,      /* multiarray.scalar(dtype, bytes) */
    PK__CALL_EXCEPTION,      /* builtins.<exception class>(*args) */
    PK__CALL_STDLIB,         /* a plain data type of the standard library
                                (stdlib.c): builds a PK_OBJECT */
    PK__CALL_STDLIB_NEWOBJ,  /* the same, made by NEWOBJ only (uuid.UUID) */
    PK__CALL_RECONSTRUCTOR   /* copyreg._reconstructor(cls, object, None):
                                protocols 0-1 spelling of NEWOBJ */
} pk__callable_t;

/* Module names, for the encoder and the decoder alike.  numpy 1.x writes
 * numpy.core.*, numpy 2.x numpy._core.*; both load both (numpy >= 1.26). */
#define PK__NPY_MULTIARRAY "numpy.core.multiarray"
#define PK__NPY_MULTIARRAY2 "numpy._core.multiarray"
#define PK__NPY_NUMERIC "numpy.core.numeric"
#define PK__NPY_NUMERIC2 "numpy._core.numeric"

/* X(kind, module, name): every global pk_loads will call.  builtins appear
 * under their protocol 0-2 module name too (CPython's fix_imports). */
#define PK__CALLABLE_MAP(X)                                                    \
    X(SET, "builtins", "set")                                                  \
    X(SET, "__builtin__", "set")                                               \
    X(FROZENSET, "builtins", "frozenset")                                      \
    X(FROZENSET, "__builtin__", "frozenset")                                   \
    X(BYTEARRAY, "builtins", "bytearray")                                      \
    X(BYTEARRAY, "__builtin__", "bytearray")                                   \
    X(BYTES, "builtins", "bytes")                                              \
    X(BYTES, "__builtin__", "bytes")                                           \
    X(COMPLEX, "builtins", "complex")                                          \
    X(COMPLEX, "__builtin__", "complex")                                       \
    X(CODECS_ENCODE, "_codecs", "encode")                                      \
    X(NP_RECONSTRUCT, PK__NPY_MULTIARRAY, "_reconstruct")                      \
    X(NP_RECONSTRUCT, PK__NPY_MULTIARRAY2, "_reconstruct")                     \
    X(NP_FROMBUFFER, PK__NPY_NUMERIC, "_frombuffer")                           \
    X(NP_FROMBUFFER, PK__NPY_NUMERIC2, "_frombuffer")                          \
    X(NP_DTYPE, "numpy", "dtype")                                              \
    X(NP_SCALAR, PK__NPY_MULTIARRAY, "scalar")                                 \
    X(NP_SCALAR, PK__NPY_MULTIARRAY2, "scalar")                                \
    X(RECONSTRUCTOR, "copyreg", "_reconstructor")

/* CPython's fix_imports for pickles below protocol 3: renames a Python 2
 * module.name to its Python 3 spelling in place (pointers to static
 * strings), using _compat_pickle's tables (compat_names.h). */
void pk__fix_import(const char **module, const char **name);

/* The kind of module.name, PK__CALL_NONE when calling it must be refused.
 * Besides the map above, builtins exception classes are allowed
 * (PK__CALL_EXCEPTION, from compat_names.h) and the standard library's plain
 * data types (pk__stdlib_lookup): they build a PK_OBJECT. */
pk__callable_t pk__callable_lookup(const char *module, const char *name);

/* The standard library's plain data types (stdlib.c): PK__CALL_STDLIB or
 * PK__CALL_STDLIB_NEWOBJ for module.name, PK__CALL_NONE for anything else. */
pk__callable_t pk__stdlib_lookup(const char *module, const char *name);

/* Builds the PK_OBJECT for the stdlib class `cls` (a PK_GLOBAL that
 * pk__stdlib_lookup allows) called with the tuple `args` (newobj: made by
 * NEWOBJ, or by copyreg._reconstructor), after checking the arguments'
 * number and types against what CPython writes.  OrderedDict and deque get
 * their items (an iterable argument moves there, as CPython 3 pickles
 * them).  PK_EPICKLE for arguments CPython would not have written. */
pk_err_t pk__stdlib_call(pk_doc_t *doc, pk_value_t *cls, const pk_value_t *args,
                         int newobj, pk_value_t **out, pk_error_t *err);

/* Non-zero when module.name is numpy.ndarray (the _reconstruct class). */
int pk__npy_is_ndarray(const char *module, const char *name);

/* Calls the allowed callable `kind` with the tuple `args` (and, for
 * NEWOBJ_EX, a dict `kwargs` that must be empty; NULL otherwise).  `what`
 * ("module.name") is used in messages.  On success *out is a new doc value.
 * PK_EREFUSED for arguments the allow-list does not cover (_codecs.encode
 * with another encoding), PK_EUNSUPPORTED for numpy features the value model
 * lacks (object, structured, datetime dtypes), PK_EPICKLE for bad
 * arguments. */
pk_err_t pk__call(pk_doc_t *doc, pk__callable_t kind, const char *what,
                  const pk_value_t *args, const pk_value_t *kwargs,
                  pk_value_t **out, pk_error_t *err);

/* BUILD on a value produced by pk__call: applies a numpy ndarray or dtype
 * state in place (the value may already be memoized, so it keeps its
 * identity), or records the state (None or a dict) of a PK_OBJECT.
 * PK_EUNSUPPORTED for BUILD on anything else. */
pk_err_t pk__build(pk_doc_t *doc, pk_value_t *inst, const pk_value_t *state,
                   pk_error_t *err);

/* Encodes UTF-8 text (as PK_STR holds it) to latin-1: the length it will
 * have in *outlen, and the bytes into dst when dst is non-NULL (dst holds
 * *outlen bytes).  Returns 0, or -1 for a character above U+00FF or invalid
 * UTF-8.  This is how numpy reads Python 2 data decoded with
 * encoding='latin1', and what _codecs.encode(s, 'latin1') does. */
int pk__latin1_encode(const char *utf8, size_t len, uint8_t *dst,
                      size_t *outlen);

#endif /* PK_NPY_H */
