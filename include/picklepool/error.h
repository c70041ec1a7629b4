/*
 * picklepool/error.h - the one error convention of picklepool.
 *
 * Every fallible call returns a pk_err_t: PK_OK (0) on success, or one code of a
 * small closed enum.  Calls that can say more also fill a caller-supplied
 * pk_error_t with a human-readable message and, for the pickle decoder, the byte
 * offset and opcode where decoding stopped.  Operating-system failures are
 * PK_ESYS, always with the errno kept in pk_error_t.sys_errno; PK_EIO may
 * carry one too (0 when the failure had no errno, such as dlopen's).
 *
 * Thread-safety: everything here is pure and reentrant.  Fork-safe.
 */
#ifndef PICKLEPOOL_ERROR_H
#define PICKLEPOOL_ERROR_H

#include <stddef.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X-macro: code, name, default message.  Codes never change value once released. */
#define PK_ERRNO_MAP(X)                                                        \
    X(OK, 0, "success")                                                        \
    X(ENOMEM, 1, "out of memory")                                              \
    X(EINVAL, 2, "invalid argument")                                           \
    X(ESYS, 3, "system call failed")                                           \
    X(EPICKLE, 4, "malformed pickle")                                          \
    X(ETRUNC, 5, "truncated pickle")                                           \
    X(ELIMIT, 6, "limit exceeded")                                             \
    X(EREFUSED, 7, "refused to call a global")                                 \
    X(EUNSUPPORTED, 8, "unsupported")                                          \
    X(ETYPE, 9, "value of the wrong type")                                     \
    X(EUNHASHABLE, 10, "unhashable value")                                     \
    X(ENOFUNC, 11, "unknown function")                                         \
    X(EFUNC, 12, "function raised an error")                                   \
    X(ECRASHED, 13, "worker crashed")                                          \
    X(ETIMEDOUT, 14, "timed out")                                              \
    X(ECLOSED, 15, "pool is closed")                                           \
    X(EINTR, 16, "interrupted")                                                \
    X(EPROTO, 17, "wire protocol error")                                       \
    X(EIO, 18, "input/output error")                                           \
    X(ECANCELED, 19, "canceled")                                               \
    X(EOF, 20, "end of iteration")

typedef enum pk_err {
#define PK__ERR_ENUM(name, code, msg) PK_##name = code,
    PK_ERRNO_MAP(PK__ERR_ENUM)
#undef PK__ERR_ENUM
        PK__ERR_MAX
} pk_err_t;

/* Detail of a failure.  Filled by calls that take a `pk_error_t *err`
 * argument (which may always be NULL when the caller does not want it). */
typedef struct pk_error {
    pk_err_t code;    /* same as the returned code */
    int sys_errno;    /* errno for PK_ESYS / PK_EIO, else 0 */
    long long offset; /* decoder: byte offset of the failing opcode, else -1 */
    int opcode;       /* decoder: the opcode byte (0..255), else -1 */
    char msg[256];    /* one line, NUL-terminated, no trailing newline */
} pk_error_t;

/* Returns the static default message for `code` ("unknown error" for codes
 * outside the enum).  Never NULL; the string is static. */
PK_API const char *pk_strerror(pk_err_t code);

/* Returns the symbolic name of `code` without the PK_ prefix, e.g. "ETIMEDOUT".
 * Static string; "EUNKNOWN" for codes outside the enum. */
PK_API const char *pk_errname(pk_err_t code);

/* Resets `err` to PK_OK, offset -1, opcode -1, empty message.  NULL is a no-op. */
PK_API void pk_error_clear(pk_error_t *err);

/* Formats `err` as one line into `buf` (always NUL-terminated when size > 0):
 * "malformed pickle at offset 12 (opcode 'K'): <msg>".  Returns `buf`. */
PK_API const char *pk_error_format(const pk_error_t *err, char *buf,
                                   size_t size);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_ERROR_H */
