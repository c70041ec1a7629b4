/*
 * picklepool/version.h - the version of the headers and of the library.
 *
 * MAJOR.MINOR.PATCH: MAJOR changes when the ABI breaks (it is the soname,
 * libpicklepool.so.MAJOR), MINOR when the API grows, PATCH for fixes.  The
 * three PK_VERSION_* lines below are the only place the version is written:
 * the Makefile reads them for the soname, the installed file names,
 * picklepool.pc and the CLI.
 *
 * The macros describe the headers a program was compiled with; pk_version()
 * and pk_version_number() the library it runs with, which may be a newer one
 * of the same MAJOR.
 *
 * Thread-safety: everything here is pure and reentrant.  Fork-safe.
 */
#ifndef PICKLEPOOL_VERSION_H
#define PICKLEPOOL_VERSION_H

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PK_VERSION_MAJOR 0
#define PK_VERSION_MINOR 1
#define PK_VERSION_PATCH 0

#if PK_VERSION_MINOR > 99 || PK_VERSION_PATCH > 99
#error "PK_VERSION_NUMBER has two digits for MINOR and PATCH"
#endif

#define PK__STR(x) #x
#define PK__XSTR(x) PK__STR(x)

/* "MAJOR.MINOR.PATCH", e.g. "0.1.0". */
#define PK_VERSION_STRING                                                      \
    PK__XSTR(PK_VERSION_MAJOR)                                                 \
    "." PK__XSTR(PK_VERSION_MINOR) "." PK__XSTR(PK_VERSION_PATCH)

/* MAJOR * 10000 + MINOR * 100 + PATCH, e.g. 100 for 0.1.0, so that versions
 * compare as numbers: `#if PK_VERSION_NUMBER >= 200` means 0.2.0 or later. */
#define PK_VERSION_NUMBER                                                      \
    (PK_VERSION_MAJOR * 10000 + PK_VERSION_MINOR * 100 + PK_VERSION_PATCH)

/* Returns the running library's PK_VERSION_STRING: a static string, never
 * NULL, the same pointer on every call.  Needs no initialisation; thread-
 * and fork-safe. */
PK_API const char *pk_version(void);

/* Returns the running library's PK_VERSION_NUMBER.  Thread- and fork-safe. */
PK_API int pk_version_number(void);

#ifdef __cplusplus
}
#endif
#endif /* PICKLEPOOL_VERSION_H */
