/*
 * common.h - the core layer's private helpers, shared by every layer above:
 * the allocator hook (every allocation goes through it, so tests can fail the
 * Nth one), the block cache, the error setters, little-endian load/store and
 * UTF-8 encoding.
 */
#ifndef PK_COMMON_H
#define PK_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "picklepool/alloc.h"
#include "picklepool/error.h"

/* Allocation through the hook installed by pk_set_allocator() (alloc.c). */
void *pk__malloc(size_t size);
void *pk__calloc(size_t n, size_t size); /* overflow-checked, zeroed */
void *pk__realloc(void *ptr, size_t size);
void pk__free(void *ptr);
char *pk__strdup(const char *s);
/* Makes room for `extra` more bytes after the `len` used of *data (*cap
 * bytes, pk__realloc'd; NULL/0 to start): doubles from `first`.  Returns
 * 0, or -1 (nothing changed) when out of memory or the size overflows. */
int pk__grow_bytes(uint8_t **data, size_t *cap, size_t len, size_t extra,
                   size_t first);
/* Asks for transparent huge pages on a big buffer (>= 4 MiB; alloc.c). */
void pk__advise_huge(void *p, size_t size);
/* Non-zero while the default allocator (malloc) is installed. */
int pk__alloc_is_default(void);
/* The block cache (alloc.c): pk__cache_take returns a cached block of at
 * least `min` bytes (its real size in *size), or NULL; pk__cache_put keeps a
 * block from pk__malloc of `size` bytes for reuse, or frees it when the cache
 * is full or a non-default allocator is installed.  Thread-safe. */
void *pk__cache_take(size_t min, size_t *size);
void pk__cache_put(void *p, size_t size);
void pk__cache_flush(void);

/* Sets err (may be NULL) to code with a printf-style message; offset and
 * opcode are set to -1.  Returns code, so callers can `return pk__err(...)`. */
pk_err_t pk__err(pk_error_t *err, pk_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, keeping errno (PK_ESYS / PK_EIO): message gets ": strerror(errno)". */
pk_err_t pk__err_sys(pk_error_t *err, pk_err_t code, int errnum,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Cuts path (a buffer of at least 2 bytes) at its last slash, keeping "/"
 * for the root; "." when it has none: the directory a file is in. */
static inline void pk__path_dir(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash == NULL)
        strcpy(path, ".");
    else
        slash[slash == path] = '\0';
}

static inline uint16_t pk__ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t pk__ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v; /* x86-64 / aarch64 little-endian hosts only (checked below) */
}
static inline uint64_t pk__ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void pk__st32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static inline void pk__st64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "picklepool assumes a little-endian host"
#endif

/* Writes code point cp (<= 0x10FFFF; surrogates too, as "surrogatepass"
 * does) as UTF-8 at d and returns the number of bytes (1 to 4). */
static inline size_t pk__utf8_put(uint8_t *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (uint8_t)(0xC0 | cp >> 6);
        d[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (uint8_t)(0xE0 | cp >> 12);
        d[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        d[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    d[0] = (uint8_t)(0xF0 | cp >> 18);
    d[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    d[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    d[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

#define PK_UNUSED(x) ((void)(x))
#define PK_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Appends x to the singly linked list head..tail (x->next is cleared). */
#define PK__LIST_APPEND(head, tail, x)                                         \
    do {                                                                       \
        (x)->next = NULL;                                                      \
        if ((tail) != NULL)                                                    \
            (tail)->next = (x);                                                \
        else                                                                   \
            (head) = (x);                                                      \
        (tail) = (x);                                                          \
    } while (0)

#endif /* PK_COMMON_H */
