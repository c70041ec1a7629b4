/*
 * test_error.c - the error convention: every code has a distinct name and
 * message, unknown codes are named, pk_error_t is cleared and formatted as
 * documented, and the internal setters pk__err / pk__err_sys fill it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/common.h"
#include "picklepool/error.h"

static const pk_err_t all_codes[] = {
#define CODE(name, num, msg) PK_##name,
    PK_ERRNO_MAP(CODE)
#undef CODE
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])

static void test_unknown_codes(void **state)
{
    (void)state;
    assert_string_equal(pk_errname(PK__ERR_MAX), "EUNKNOWN");
    assert_string_equal(pk_errname((pk_err_t)-1), "EUNKNOWN");
    assert_string_equal(pk_strerror(PK__ERR_MAX), "unknown error");
    assert_string_equal(pk_strerror((pk_err_t)12345), "unknown error");
}

static void test_names_and_messages(void **state)
{
    (void)state;
    assert_int_equal(NCODES, PK__ERR_MAX);
    assert_int_equal(PK_OK, 0);
    assert_string_equal(pk_errname(PK_OK), "OK");
    assert_string_equal(pk_errname(PK_ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(pk_strerror(PK_ENOMEM), "out of memory");
    for (size_t i = 0; i < NCODES; i++) {
        assert_int_equal(all_codes[i], (pk_err_t)i); /* dense, in order */
        const char *n = pk_errname(all_codes[i]);
        const char *m = pk_strerror(all_codes[i]);
        assert_non_null(n);
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        assert_string_not_equal(n, "EUNKNOWN");
        assert_string_not_equal(m, "unknown error");
        if (i > 0)
            assert_int_equal(n[0], 'E');
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(n, pk_errname(all_codes[j]));
            assert_string_not_equal(m, pk_strerror(all_codes[j]));
        }
    }
}

static void test_clear(void **state)
{
    (void)state;
    pk_error_t e;
    memset(&e, 0x5a, sizeof e);
    pk_error_clear(&e);
    assert_int_equal(e.code, PK_OK);
    assert_int_equal(e.sys_errno, 0);
    assert_int_equal(e.offset, -1);
    assert_int_equal(e.opcode, -1);
    assert_string_equal(e.msg, "");
    pk_error_clear(NULL);
}

static void test_format(void **state)
{
    (void)state;
    char buf[300];
    pk_error_t e;
    pk_error_clear(&e);
    assert_string_equal(pk_error_format(&e, buf, sizeof buf), "success");
    e.code = PK_EPICKLE;
    e.offset = 12;
    e.opcode = 'K';
    strcpy(e.msg, "bad thing");
    assert_string_equal(
        pk_error_format(&e, buf, sizeof buf),
        "malformed pickle at offset 12 (opcode 'K'): bad thing");
    e.opcode = 0x95;
    assert_string_equal(
        pk_error_format(&e, buf, sizeof buf),
        "malformed pickle at offset 12 (opcode 0x95): bad thing");
    e.opcode = -1;
    e.offset = -1;
    e.msg[0] = '\0';
    assert_string_equal(pk_error_format(&e, buf, sizeof buf),
                        "malformed pickle");
    /* Truncation keeps the buffer terminated. */
    e.offset = 123456789;
    strcpy(e.msg, "x");
    char small[10];
    memset(small, 'Z', sizeof small);
    pk_error_format(&e, small, sizeof small);
    assert_int_equal(strlen(small), 9);
    assert_memory_equal(small, "malformed", 9);
    small[0] = 'Q';
    pk_error_format(&e, small, 0);
    assert_int_equal(small[0], 'Q');
    assert_string_equal(pk_error_format(NULL, buf, sizeof buf), "success");
}

static void test_setters(void **state)
{
    (void)state;
    pk_error_t e;
    memset(&e, 0x5a, sizeof e);
    assert_int_equal(pk__err(&e, PK_ELIMIT, "depth %d > %d", 1001, 1000),
                     PK_ELIMIT);
    assert_int_equal(e.code, PK_ELIMIT);
    assert_int_equal(e.sys_errno, 0);
    assert_int_equal(e.offset, -1);
    assert_int_equal(e.opcode, -1);
    assert_string_equal(e.msg, "depth 1001 > 1000");
    assert_int_equal(pk__err(NULL, PK_ETYPE, "ignored"), PK_ETYPE);

    assert_int_equal(pk__err_sys(&e, PK_ESYS, ENOENT, "open %s", "/x"),
                     PK_ESYS);
    assert_int_equal(e.code, PK_ESYS);
    assert_int_equal(e.sys_errno, ENOENT);
    char want[300];
    snprintf(want, sizeof want, "open /x: %s", strerror(ENOENT));
    assert_string_equal(e.msg, want);
    assert_int_equal(pk__err_sys(NULL, PK_EIO, EIO, "x"), PK_EIO);

    /* Long messages are cut at the buffer, still terminated. */
    char longs[600];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    pk__err(&e, PK_EINVAL, "%s", longs);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    pk__err_sys(&e, PK_ESYS, EPERM, "%s", longs);
    assert_int_equal(strlen(e.msg), sizeof e.msg - 1);
    assert_int_equal(e.sys_errno, EPERM);
}

int main(void)
{
    alarm(60); /* hard timeout */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_names_and_messages),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_setters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
