/*
 * test_version.c - the version API and the library as a program linked with
 * -lpicklepool sees it.
 *
 * Unlike the other tests, this one is linked against build/libpicklepool.so
 * (found through the soname link beside it), not the static archive, and
 * includes only public headers: pk_version() must agree with version.h, the
 * soname must be libpicklepool.so.MAJOR, internal symbols must be out of
 * reach, and the examples plugin, which is built without linking the
 * library, must load and run both here and in pool workers, resolving its
 * pk_* / pool_* calls in the shared library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "picklepool.h"

static char plugin_path[PATH_MAX];
static char soname[64];

static void test_version_macros(void **state)
{
    char buf[64];

    (void)state;
    snprintf(buf, sizeof buf, "%d.%d.%d", PK_VERSION_MAJOR, PK_VERSION_MINOR,
             PK_VERSION_PATCH);
    assert_string_equal(PK_VERSION_STRING, buf);
    assert_int_equal(PK_VERSION_NUMBER, PK_VERSION_MAJOR * 10000 +
                                            PK_VERSION_MINOR * 100 +
                                            PK_VERSION_PATCH);
}

static void test_runtime_version(void **state)
{
    (void)state;
    assert_non_null(pk_version());
    assert_string_equal(pk_version(), PK_VERSION_STRING);
    assert_ptr_equal(pk_version(), pk_version()); /* one static string */
    assert_int_equal(pk_version_number(), PK_VERSION_NUMBER);
}

/* The library this process runs with is the shared one, loaded by its
 * soname, and that soname (readelf -d) is libpicklepool.so.MAJOR. */
static void test_soname(void **state)
{
    Dl_info info;
    char cmd[PATH_MAX + 64], line[512], want[128];
    int found = 0;

    (void)state;
    assert_int_not_equal(dladdr((void *)pk_version, &info), 0);
    assert_non_null(info.dli_fname);
    const char *base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    assert_string_equal(base, soname);

    snprintf(cmd, sizeof cmd, "readelf -d '%s'", info.dli_fname);
    FILE *fp = popen(cmd, "r");
    assert_non_null(fp);
    snprintf(want, sizeof want, "Library soname: [%s]", soname);
    while (fgets(line, sizeof line, fp))
        if (strstr(line, "(SONAME)") && strstr(line, want))
            found = 1;
    assert_int_equal(pclose(fp), 0);
    if (!found)
        fail_msg("%s has no SONAME %s", info.dli_fname, soname);
}

/* What plugins link against: public names resolve, internal ones do not. */
static void test_internal_symbols_hidden(void **state)
{
    (void)state;
    assert_non_null(dlsym(RTLD_DEFAULT, "pk_version"));
    assert_non_null(dlsym(RTLD_DEFAULT, "pool_register"));
    assert_null(dlsym(RTLD_DEFAULT, "pk__malloc"));
    assert_null(dlsym(RTLD_DEFAULT, "pk__err"));
}

static void test_plugin_in_process(void **state)
{
    pk_error_t err;
    pk_doc_t *doc = NULL;
    pk_value_t *res = NULL;
    int64_t n = 0;

    (void)state;
    if (pool_plugin_load(plugin_path, &err) != PK_OK)
        fail_msg("loading %s: %s", plugin_path, err.msg);
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t *args = pk_tuple_new(doc, 1);
    assert_non_null(args);
    pk_tuple_set(args, 0, pk_int(doc, 7));
    assert_int_equal(
        pool_call_local("examples", "square", doc, args, NULL, &res, &err),
        PK_OK);
    assert_int_equal(pk_as_int(res, &n), PK_OK);
    assert_int_equal(n, 49);
    pk_doc_free(&doc);
}

/* Workers forked from this process reach the plugin's functions too. */
static void test_plugin_in_pool(void **state)
{
    pool_opts_t o;
    pool_t *p = NULL;
    pk_error_t err;
    const char *plugins[1] = {plugin_path};
    int64_t in[64], out[64];
    size_t nfailed = 1;

    (void)state;
    pool_opts_init(&o);
    o.workers = 2;
    o.plugins = plugins;
    o.nplugins = 1;
    if (pool_create(&p, &o, &err) != PK_OK)
        fail_msg("pool_create: %s", err.msg);
    for (int i = 0; i < 64; i++)
        in[i] = i - 32;
    assert_int_equal(pool_map_i64(p, "examples", "square", in, out, 64, NULL,
                                  NULL, &nfailed, &err),
                     PK_OK);
    assert_int_equal(nfailed, 0);
    for (int i = 0; i < 64; i++)
        assert_int_equal(out[i], in[i] * in[i]);
    pool_destroy(&p);
    assert_int_equal(pool_global_fini(&err), PK_OK);
}

int main(void)
{
    alarm(120); /* hard timeout */
    const char *build = getenv("PICKLEPOOL_BUILD");
    snprintf(plugin_path, sizeof plugin_path, "%s/plugins/examples.so",
             build && *build ? build : "build");
    snprintf(soname, sizeof soname, "libpicklepool.so.%d", PK_VERSION_MAJOR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_macros),
        cmocka_unit_test(test_runtime_version),
        cmocka_unit_test(test_soname),
        cmocka_unit_test(test_internal_symbols_hidden),
        cmocka_unit_test(test_plugin_in_process),
        cmocka_unit_test(test_plugin_in_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
