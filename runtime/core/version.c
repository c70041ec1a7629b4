/*
 * version.c - the version the library was built as, for pk_version() and
 * pk_version_number(): the PK_VERSION_* macros of version.h as they were when
 * this file was compiled, which a program built against other headers can
 * compare with its own.
 */
#include "picklepool/version.h"

const char *pk_version(void)
{
    return PK_VERSION_STRING;
}

int pk_version_number(void)
{
    return PK_VERSION_NUMBER;
}
