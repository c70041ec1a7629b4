/*
 * error.c - the error convention: names and default messages of the closed
 * pk_err_t enum (generated from PK_ERRNO_MAP in error.h), the pk_error_t
 * helpers, and the internal setters pk__err / pk__err_sys that every module
 * uses to fill a caller's pk_error_t.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"

const char *pk_strerror(pk_err_t code)
{
    switch (code) {
#define PK__ERR_MSG(name, num, msg)                                            \
    case PK_##name:                                                            \
        return msg;
        PK_ERRNO_MAP(PK__ERR_MSG)
#undef PK__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *pk_errname(pk_err_t code)
{
    switch (code) {
#define PK__ERR_NAME(name, num, msg)                                           \
    case PK_##name:                                                            \
        return #name;
        PK_ERRNO_MAP(PK__ERR_NAME)
#undef PK__ERR_NAME
    default:
        return "EUNKNOWN";
    }
}

void pk_error_clear(pk_error_t *err)
{
    if (err == NULL)
        return;
    err->code = PK_OK;
    err->sys_errno = 0;
    err->offset = -1;
    err->opcode = -1;
    err->msg[0] = '\0';
}

const char *pk_error_format(const pk_error_t *err, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    if (err == NULL) {
        snprintf(buf, size, "%s", pk_strerror(PK_OK));
        return buf;
    }
    size_t n = 0;
#define APPEND(...)                                                            \
    do {                                                                       \
        if (n < size) {                                                        \
            int w_ = snprintf(buf + n, size - n, __VA_ARGS__);                 \
            n += w_ > 0 ? (size_t)w_ : 0;                                      \
        }                                                                      \
    } while (0)
    APPEND("%s", pk_strerror(err->code));
    if (err->offset >= 0)
        APPEND(" at offset %lld", err->offset);
    if (err->opcode >= 0 && err->opcode <= 255) {
        if (err->opcode >= 0x20 && err->opcode < 0x7f && err->opcode != '\'')
            APPEND(" (opcode '%c')", err->opcode);
        else
            APPEND(" (opcode 0x%02x)", err->opcode);
    }
    if (err->msg[0] != '\0')
        APPEND(": %s", err->msg);
#undef APPEND
    return buf;
}

static void set_common(pk_error_t *err, pk_err_t code, int errnum,
                       const char *fmt, va_list ap)
{
    err->code = code;
    err->sys_errno = errnum;
    err->offset = -1;
    err->opcode = -1;
    err->msg[0] = '\0';
    if (fmt != NULL)
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

pk_err_t pk__err(pk_error_t *err, pk_err_t code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    set_common(err, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

pk_err_t pk__err_sys(pk_error_t *err, pk_err_t code, int errnum,
                     const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    set_common(err, code, errnum, fmt, ap);
    va_end(ap);

    /* strerror_r: strerror() is not thread-safe and this runs on any thread. */
    char sys[128];
    if (strerror_r(errnum, sys, sizeof sys) != 0)
        snprintf(sys, sizeof sys, "errno %d", errnum);
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof err->msg - n, "%s%s", n ? ": " : "", sys);
    return code;
}
