/*
 * test_registry.c - the function registry, plugins, and the examples plugin.
 *
 * Loads $PICKLEPOOL_BUILD/plugins/examples.so (default build/) and calls each
 * of its functions through pool_call_local, error paths included; crash() runs
 * in a forked child.  Plugins without an init symbol, with a failing init, and
 * missing files are refused with the documented codes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "picklepool/registry.h"
#include "proc/registry_int.h"

/* ---- helpers ------------------------------------------------------------- */

static char plugin_path[PATH_MAX];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A tuple of the given values (NULL-terminated list). */
static pk_value_t *tuple(pk_doc_t *doc, ...)
{
    pk_value_t *items[8];
    size_t n = 0;
    va_list ap;

    va_start(ap, doc);
    for (pk_value_t *v; (v = va_arg(ap, pk_value_t *)) != NULL && n < 8;)
        items[n++] = v;
    va_end(ap);
    pk_value_t *t = pk_tuple_new(doc, n);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++)
        pk_tuple_set(t, i, items[i]);
    return t;
}

/* Calls examples.fn(args) and returns its code; *res and err filled. */
static pk_err_t call(const char *fn, pk_doc_t *doc, pk_value_t *args,
                     pk_value_t **res, pk_error_t *err)
{
    return pool_call_local("examples", fn, doc, args, NULL, res, err);
}

/* examples.fn(arg): the one-argument case. */
static pk_err_t call1(const char *fn, pk_doc_t *doc, pk_value_t *arg,
                      pk_value_t **res, pk_error_t *err)
{
    return call(fn, doc, tuple(doc, arg, NULL), res, err);
}

static void load_examples(void)
{
    pk_error_t err;
    if (pool_plugin_load(plugin_path, &err) != PK_OK)
        fail_msg("loading %s: %s", plugin_path, err.msg);
}

/* Fixture of the examples tests: the plugin loaded, *state a fresh doc. */
static int examples_setup(void **state)
{
    pk_doc_t *doc = NULL;
    load_examples();
    if (pk_doc_new(&doc) != PK_OK)
        return -1;
    *state = doc;
    return 0;
}

static int examples_teardown(void **state)
{
    pk_doc_t *doc = *state;
    pk_doc_free(&doc);
    return 0;
}

/* ---- test functions ------------------------------------------------------ */

static pk_err_t fn_one(pool_call_t *c, pk_value_t **r)
{
    *r = pk_int(c->doc, 1 + (int64_t)(intptr_t)c->udata);
    return PK_OK;
}

static pk_err_t fn_two(pool_call_t *c, pk_value_t **r)
{
    *r = pk_int(c->doc, 2);
    return PK_OK;
}

static pk_err_t fn_nargs(pool_call_t *c, pk_value_t **r)
{
    *r = pk_int(c->doc, (int64_t)pk_len(c->args) +
                            (c->kwargs ? 100 * (int64_t)pk_len(c->kwargs) : 0));
    return PK_OK;
}

static pk_err_t fn_none(pool_call_t *c, pk_value_t **r)
{
    *r = NULL; /* no result at all: the caller sees None */
    return PK_OK;
}

static pk_err_t fn_silent_fail(pool_call_t *c, pk_value_t **r)
{
    return PK_EFUNC; /* no message: the registry supplies one */
}

/* ---- refusals first ------------------------------------------------------ */

static void test_refusals(void **state)
{
    void *ud = (void *)1;

    assert_int_equal(pool_register("", "f", fn_one, NULL), PK_EINVAL);
    assert_int_equal(pool_register("m", "", fn_one, NULL), PK_EINVAL);
    assert_int_equal(pool_register(NULL, "f", fn_one, NULL), PK_EINVAL);
    assert_int_equal(pool_register("m", "f", NULL, NULL), PK_EINVAL);
    assert_null(pool_lookup("m", "f", &ud));
    assert_null(ud);
    assert_null(pool_lookup("no", "such", NULL));
}

static void test_unknown_function(void **state)
{
    pk_doc_t *doc = NULL;
    pk_value_t *res = (pk_value_t *)1;
    pk_error_t err;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(call("nope", doc, tuple(doc, NULL), &res, &err),
                     PK_ENOFUNC);
    assert_null(res);
    assert_int_equal(err.code, PK_ENOFUNC);
    assert_string_equal(err.msg, "unknown function examples.nope");
    /* err may be NULL */
    assert_int_equal(call("nope", doc, NULL, &res, NULL), PK_ENOFUNC);
    pk_doc_free(&doc);
}

/* pool_register_all: a table in one call, in order; the first failure
 * stops it and is named, the functions before it stay. */
static void test_register_all(void **state)
{
    (void)state;
    pk_error_t e;
    void *ud = NULL;
    static int tag;
    const pool_fn_def_t ok[] = {{"one", fn_one, NULL}, {"two", fn_two, &tag}};
    assert_int_equal(pool_register_all("tab", ok, 2, &e), PK_OK);
    assert_true(pool_lookup("tab", "one", NULL) == fn_one);
    assert_true(pool_lookup("tab", "two", &ud) == fn_two);
    assert_ptr_equal(ud, &tag);
    const pool_fn_def_t bad[] = {
        {"three", fn_one, NULL}, {"", fn_two, NULL}, {"four", fn_one, NULL}};
    assert_int_equal(pool_register_all("tab", bad, 3, &e), PK_EINVAL);
    assert_int_equal(e.code, PK_EINVAL);
    assert_non_null(strstr(e.msg, "cannot register tab.: invalid argument"));
    assert_true(pool_lookup("tab", "three", NULL) == fn_one);
    assert_null(pool_lookup("tab", "four", NULL));
    assert_int_equal(pool_register_all("tab", bad, 1, NULL), PK_OK);
}

static void test_register_lookup_replace(void **state)
{
    void *ud = NULL;
    pk_doc_t *doc = NULL;
    pk_value_t *res;
    pk_error_t err;

    assert_int_equal(pool_register("t", "f", fn_one, (void *)41), PK_OK);
    assert_ptr_equal(pool_lookup("t", "f", &ud), fn_one);
    assert_ptr_equal(ud, (void *)41);
    /* module and name are separate: "t.f" is not "" + "t.f" nor "t." + "f" */
    assert_null(pool_lookup("t.f", "", NULL));
    assert_null(pool_lookup("t", "f.", NULL));
    assert_null(pool_lookup("tf", "", NULL));

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pool_call_local("t", "f", doc, NULL, NULL, &res, &err),
                     PK_OK);
    assert_int_equal(res->type, PK_INT);
    assert_int_equal(res->u.i, 42);

    assert_int_equal(pool_register("t", "f", fn_two, NULL),
                     PK_OK); /* replace */
    assert_ptr_equal(pool_lookup("t", "f", &ud), fn_two);
    assert_null(ud);
    assert_int_equal(pool_call_local("t", "f", doc, NULL, NULL, &res, &err),
                     PK_OK);
    assert_int_equal(res->u.i, 2);

    /* Many names (the table grows) and long ones (beyond the stack key:
     * module and name may be 255 bytes each; longer is refused, since the
     * fork server could not be told). */
    char mod[257], name[32];
    memset(mod, 'm', 256);
    mod[256] = '\0';
    assert_int_equal(pool_register(mod, "f", fn_one, NULL), PK_ELIMIT);
    assert_int_equal(pool_register("t", mod, fn_one, NULL), PK_ELIMIT);
    mod[255] = '\0';
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "f%d", i);
        assert_int_equal(pool_register(i % 2 ? "many" : mod, name, fn_one,
                                       (void *)(intptr_t)i),
                         PK_OK);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof name, "f%d", i);
        assert_ptr_equal(pool_lookup(i % 2 ? "many" : mod, name, &ud), fn_one);
        assert_ptr_equal(ud, (void *)(intptr_t)i);
        assert_null(pool_lookup(i % 2 ? mod : "many", name, NULL));
    }
    pk_doc_free(&doc);
}

static void test_call_local(void **state)
{
    pk_doc_t *doc = NULL;
    pk_value_t *res;
    pk_error_t err;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pool_register("t", "nargs", fn_nargs, NULL), PK_OK);
    assert_int_equal(pool_register("t", "none", fn_none, NULL), PK_OK);
    assert_int_equal(pool_register("t", "silent", fn_silent_fail, NULL), PK_OK);

    /* arguments must be a tuple, keywords a dict */
    pk_value_t *list = pk_list_new(doc, 0);
    assert_int_equal(pool_call_local("t", "nargs", doc, list, NULL, &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "must be a tuple, got list"));
    assert_int_equal(
        pool_call_local("t", "nargs", doc, tuple(doc, NULL), list, &res, &err),
        PK_ETYPE);
    assert_int_equal(
        pool_call_local("t", "nargs", NULL, NULL, NULL, &res, &err), PK_EINVAL);

    pk_value_t *kw = pk_dict_new(doc, 1);
    assert_int_equal(pk_dict_set(doc, kw, pk_cstr(doc, "k"), pk_none()), PK_OK);
    pk_value_t *args = tuple(doc, pk_int(doc, 1), pk_int(doc, 2), NULL);
    assert_int_equal(pool_call_local("t", "nargs", doc, args, kw, &res, &err),
                     PK_OK);
    assert_int_equal(res->u.i, 102);
    assert_int_equal(pool_call_local("t", "nargs", doc, NULL, NULL, &res, &err),
                     PK_OK);
    assert_int_equal(res->u.i, 0);

    assert_int_equal(pool_call_local("t", "none", doc, NULL, NULL, &res, &err),
                     PK_OK);
    assert_ptr_equal(res, pk_none());

    assert_int_equal(
        pool_call_local("t", "silent", doc, NULL, NULL, &res, &err), PK_EFUNC);
    assert_int_equal(err.code, PK_EFUNC);
    assert_non_null(strstr(err.msg, "t.silent"));
    pk_doc_free(&doc);
}

/* ---- listener ------------------------------------------------------------ */

static int heard;
static char heard_plugin[PATH_MAX];

static void listen(const char *module, const char *name, pool_fn_t fn,
                   void *udata, const char *plugin)
{
    heard++;
    if (plugin)
        snprintf(heard_plugin, sizeof heard_plugin, "%s", plugin);
    if (strcmp(module, "t") == 0) {
        assert_string_equal(name, "heard");
        assert_ptr_equal(fn, fn_two);
        assert_ptr_equal(udata, (void *)7);
        assert_null(plugin);
    }
}

static void test_listener_and_plugin_load(void **state)
{
    pk_error_t err;
    const char **paths;
    char real[PATH_MAX];

    pool__registry_set_listener(listen);
    heard = 0;
    assert_int_equal(pool_register("t", "heard", fn_two, (void *)7), PK_OK);
    assert_int_equal(heard, 1);
    assert_int_equal(pool_register("", "x", fn_two, NULL), PK_EINVAL);
    assert_int_equal(heard, 1); /* refusals are not forwarded */

    size_t before = pool__registry_plugins(&paths);
    heard = 0;
    load_examples();
    assert_int_equal(heard, 6); /* one per examples function */
    assert_non_null(realpath(plugin_path, real));
    assert_string_equal(heard_plugin, real);
    assert_int_equal(pool__registry_plugins(&paths), before + 1);
    assert_string_equal(paths[before], real);

    /* Loading again, by the same or another name, is a no-op. */
    assert_int_equal(pool_plugin_load(plugin_path, &err), PK_OK);
    assert_int_equal(pool_plugin_load(real, &err), PK_OK);
    assert_int_equal(heard, 6);
    assert_int_equal(pool__registry_plugins(NULL), before + 1);
    pool__registry_set_listener(NULL);
    assert_non_null(pool_lookup("examples", "square", NULL));
}

static void test_plugin_refusals(void **state)
{
    pk_error_t err;
    size_t n = pool__registry_plugins(NULL);

    assert_int_equal(pool_plugin_load("/nonexistent/dir/nothing.so", &err),
                     PK_EIO);
    assert_int_equal(err.code, PK_EIO);
    assert_non_null(strstr(err.msg, "nothing.so"));
    assert_non_null(strstr(err.msg, "cannot open shared object file"));
    assert_int_equal(pool_plugin_load("", &err), PK_EINVAL);
    assert_int_equal(pool_plugin_load(NULL, NULL), PK_EINVAL);

    /* A real library that is no plugin. */
    assert_int_equal(pool_plugin_load("libm.so.6", &err), PK_ENOFUNC);
    assert_non_null(strstr(err.msg, POOL_PLUGIN_INIT_SYMBOL));
    assert_int_equal(pool__registry_plugins(NULL), n);
}

/* A plugin whose init fails, built on the fly. */
static void test_plugin_init_fails(void **state)
{
    char dir[] = "/tmp/pk_test_registry.XXXXXX", src[PATH_MAX + 16],
         so[PATH_MAX + 16], cmd[3 * PATH_MAX];
    pk_error_t err;

    assert_non_null(mkdtemp(dir));
    snprintf(src, sizeof src, "%s/bad.c", dir);
    snprintf(so, sizeof so, "%s/bad.so", dir);
    FILE *fp = fopen(src, "w");
    assert_non_null(fp);
    fputs("#include <stdio.h>\n"
          "#include \"picklepool/registry.h\"\n"
          "static pk_err_t f(pool_call_t *c, pk_value_t **r)\n"
          "{ *r = pk_int(c->doc, 5); return PK_OK; }\n"
          "pk_err_t picklepool_plugin_init(pk_error_t *err) {\n"
          "    pool_register(\"bad\", \"f\", f, NULL);\n"
          "    err->code = PK_EFUNC;\n"
          "    snprintf(err->msg, sizeof err->msg, \"bad plugin refuses\");\n"
          "    return PK_EFUNC;\n"
          "}\n",
          fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "cc -shared -fPIC -Iinclude -o %s %s 2>&1", so,
             src);
    if (system(cmd) != 0) {
        unlink(src);
        rmdir(dir);
        skip();
    }
    size_t n = pool__registry_plugins(NULL);
    assert_int_equal(pool_plugin_load(so, &err), PK_EFUNC);
    assert_int_equal(err.code, PK_EFUNC);
    assert_string_equal(err.msg, "bad plugin refuses");
    assert_int_equal(pool__registry_plugins(NULL), n); /* not listed */
    /* What it registered before failing still works (its code stays mapped). */
    pk_doc_t *doc = NULL;
    pk_value_t *res;
    assert_int_equal(pk_doc_new(&doc), PK_OK);
    assert_int_equal(pool_call_local("bad", "f", doc, NULL, NULL, &res, &err),
                     PK_OK);
    assert_int_equal(res->u.i, 5);
    pk_doc_free(&doc);
    unlink(so);
    unlink(src);
    rmdir(dir);
}

/* ---- the examples plugin ------------------------------------------------- */

static void test_examples_square(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *res;
    pk_error_t err;

    assert_int_equal(call1("square", doc, pk_int(doc, -7), &res, &err), PK_OK);
    assert_int_equal(res->type, PK_INT);
    assert_int_equal(res->u.i, 49);
    assert_int_equal(call1("square", doc, pk_bool(1), &res, &err), PK_OK);
    assert_int_equal(res->u.i, 1);
    assert_int_equal(call1("square", doc, pk_int(doc, 3037000499), &res, &err),
                     PK_OK);
    assert_int_equal(res->type, PK_INT);
    assert_int_equal(res->u.i, INT64_C(9223372030926249001));

    /* Past int64 the result is a Python long. */
    __int128 big = (__int128)INT64_MIN * INT64_MIN;
    assert_int_equal(call1("square", doc, pk_int(doc, INT64_MIN), &res, &err),
                     PK_OK);
    assert_int_equal(res->type, PK_BIGINT);
    assert_true(pk_equal(res, pk_bigint(doc, &big, sizeof big)));
    big = (__int128)3037000500 * 3037000500;
    assert_int_equal(call1("square", doc, pk_int(doc, 3037000500), &res, &err),
                     PK_OK);
    assert_true(pk_equal(res, pk_bigint(doc, &big, sizeof big)));

    /* Refusals: bigint and non-int arguments, arity, keywords. */
    unsigned char b9[9] = {0, 0, 0, 0, 0, 0, 0, 0, 1}; /* 2**64 */
    assert_int_equal(call1("square", doc, pk_bigint(doc, b9, 9), &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "fits in 64 bits"));
    assert_int_equal(call1("square", doc, pk_float(doc, 2.0), &res, &err),
                     PK_ETYPE);
    assert_string_equal(err.msg,
                        "TypeError: square() expects an int, got float");
    assert_int_equal(call("square", doc, tuple(doc, NULL), &res, &err),
                     PK_ETYPE);
    assert_string_equal(
        err.msg, "TypeError: square() takes exactly 1 argument (0 given)");
    assert_int_equal(call("square", doc,
                          tuple(doc, pk_int(doc, 1), pk_int(doc, 2), NULL),
                          &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "(2 given)"));
    pk_value_t *kw = pk_dict_new(doc, 1);
    pk_dict_set(doc, kw, pk_cstr(doc, "x"), pk_int(doc, 1));
    assert_int_equal(pool_call_local("examples", "square", doc,
                                     tuple(doc, pk_int(doc, 1), NULL), kw, &res,
                                     &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "no keyword arguments"));
}

static void test_examples_spin_sleep(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *res;
    pk_error_t err;

    double t0 = now();
    assert_int_equal(call1("spin", doc, pk_int(doc, 20000), &res, &err), PK_OK);
    assert_true(now() - t0 >= 0.020);
    assert_int_equal(res->type, PK_INT);
    assert_int_equal(res->u.i, 20000);
    assert_int_equal(call1("spin", doc, pk_float(doc, 1.5), &res, &err), PK_OK);
    assert_int_equal(res->type, PK_FLOAT);
    assert_true(res->u.f == 1.5);
    assert_int_equal(call1("spin", doc, pk_int(doc, -1), &res, &err), PK_EFUNC);
    assert_non_null(strstr(err.msg, "ValueError"));
    assert_int_equal(call1("spin", doc, pk_cstr(doc, "1"), &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "got str"));

    t0 = now();
    assert_int_equal(call1("sleep", doc, pk_float(doc, 0.05), &res, &err),
                     PK_OK);
    assert_true(now() - t0 >= 0.05);
    assert_int_equal(res->type, PK_FLOAT);
    assert_true(res->u.f == 0.05);
    assert_int_equal(call1("sleep", doc, pk_int(doc, 0), &res, &err), PK_OK);
    assert_int_equal(res->type, PK_INT);
    assert_int_equal(res->u.i, 0);
    assert_int_equal(call1("sleep", doc, pk_float(doc, -0.5), &res, &err),
                     PK_EFUNC);
    assert_int_equal(call1("sleep", doc, pk_float(doc, NAN), &res, &err),
                     PK_EFUNC);
    assert_int_equal(call("sleep", doc, tuple(doc, NULL), &res, &err),
                     PK_ETYPE);
}

static void on_usr1(int sig)
{
    (void)sig;
}

/* A signal that interrupts sleep() does not cut it short. */
static void test_examples_sleep_eintr(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *res;
    pk_error_t err;
    struct sigaction sa, old;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART: nanosleep returns EINTR */
    sigaction(SIGUSR1, &sa, &old);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct timespec d = {0, 50 * 1000 * 1000};
        for (int i = 0; i < 3; i++) {
            nanosleep(&d, NULL);
            kill(parent, SIGUSR1);
        }
        _exit(0);
    }
    double t0 = now();
    assert_int_equal(call1("sleep", doc, pk_float(doc, 0.3), &res, &err),
                     PK_OK);
    assert_true(now() - t0 >= 0.3);
    waitpid(pid, NULL, 0);
    sigaction(SIGUSR1, &old, NULL);
}

static pk_value_t *f32(pk_doc_t *doc, int ndim, const int64_t *shape,
                       const float *data, unsigned flags)
{
    pk_dtype_t dt;
    assert_int_equal(pk_dtype_parse("<f4", &dt), PK_OK);
    pk_value_t *v = pk_ndarray(doc, &dt, ndim, shape, (void *)data, flags);
    assert_non_null(v);
    return v;
}

static void test_examples_normalize(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *res;
    pk_error_t err;

    /* 2x2: mean 2.5, population std sqrt(1.25) */
    const float x4[] = {1, 2, 3, 4};
    int64_t s22[] = {2, 2};
    assert_int_equal(
        call1("normalize", doc, f32(doc, 2, s22, x4, 0), &res, &err), PK_OK);
    assert_int_equal(res->type, PK_NDARRAY);
    assert_int_equal(res->u.nd->ndim, 2);
    assert_int_equal(res->u.nd->shape[0], 2);
    assert_int_equal(res->u.nd->shape[1], 2);
    assert_int_equal(res->u.nd->dtype.kind, 'f');
    assert_int_equal(res->u.nd->dtype.itemsize, 4);
    const float *y = res->u.nd->data;
    for (int i = 0; i < 4; i++)
        assert_true(fabs(y[i] - (x4[i] - 2.5) / sqrt(1.25)) < 1e-6);

    /* Long (not a multiple of 8), large offset: still zero mean, unit var. */
    enum { N = 100003 };
    float *big = malloc(N * sizeof *big);
    assert_non_null(big);
    for (int i = 0; i < N; i++)
        big[i] = 10000.0f + (float)((i * 7919) % 1000) / 1000.0f;
    int64_t sn[] = {N};
    assert_int_equal(
        call1("normalize", doc, f32(doc, 1, sn, big, 0), &res, &err), PK_OK);
    y = res->u.nd->data;
    double m = 0, v = 0;
    for (int i = 0; i < N; i++)
        m += y[i];
    m /= N;
    for (int i = 0; i < N; i++)
        v += (y[i] - m) * (y[i] - m);
    v /= N;
    assert_true(fabs(m) < 1e-3);
    assert_true(fabs(v - 1) < 1e-3);
    free(big);

    /* Constant input: all zeros.  Empty input: empty output. */
    const float c3[] = {5, 5, 5};
    int64_t s3[] = {3};
    assert_int_equal(
        call1("normalize", doc, f32(doc, 1, s3, c3, 0), &res, &err), PK_OK);
    for (int i = 0; i < 3; i++)
        assert_true(((const float *)res->u.nd->data)[i] == 0.0f);
    int64_t s0[] = {0};
    assert_int_equal(
        call1("normalize", doc, f32(doc, 1, s0, NULL, 0), &res, &err), PK_OK);
    assert_int_equal(res->u.nd->shape[0], 0);

    /* A 1-D Fortran-ordered array is C-contiguous too; a 2-D one is not. */
    assert_int_equal(
        call1("normalize", doc, f32(doc, 1, s3, x4, PK_VF_FORTRAN), &res, &err),
        PK_OK);
    int64_t s23[] = {2, 3};
    const float x6[] = {1, 2, 3, 4, 5, 6};
    assert_int_equal(call1("normalize", doc,
                           f32(doc, 2, s23, x6, PK_VF_FORTRAN), &res, &err),
                     PK_ETYPE);
    assert_non_null(
        strstr(err.msg, "normalize expects a C-contiguous float32 ndarray"));
    assert_non_null(strstr(err.msg, "non-contiguous <f4"));

    /* Wrong dtypes and types. */
    pk_dtype_t f8, bf4;
    assert_int_equal(pk_dtype_parse("<f8", &f8), PK_OK);
    assert_int_equal(pk_dtype_parse(">f4", &bf4), PK_OK);
    assert_int_equal(call1("normalize", doc,
                           pk_ndarray(doc, &f8, 1, s3, NULL, 0), &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(
        err.msg, "normalize expects a C-contiguous float32 ndarray, got <f8"));
    assert_int_equal(call1("normalize", doc,
                           pk_ndarray(doc, &bf4, 1, s3, NULL, 0), &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "got >f4"));
    assert_int_equal(call1("normalize", doc, pk_list_new(doc, 0), &res, &err),
                     PK_ETYPE);
    assert_non_null(strstr(err.msg, "got list"));
}

static void test_examples_fail(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *res;
    pk_error_t err;

    assert_int_equal(call1("fail", doc, pk_cstr(doc, "boom"), &res, &err),
                     PK_EFUNC);
    assert_int_equal(err.code, PK_EFUNC);
    assert_string_equal(err.msg, "ValueError: boom");
    assert_int_equal(call1("fail", doc, pk_int(doc, 3), &res, &err), PK_EFUNC);
    assert_string_equal(err.msg, "ValueError: 3");
    assert_int_equal(call("fail", doc, tuple(doc, NULL), &res, &err), PK_ETYPE);
}

static void test_examples_crash(void **state)
{
    pk_doc_t *doc = *state;
    pk_value_t *res;
    pk_error_t err;

    assert_int_equal(call1("crash", doc, pk_int(doc, 3), &res, &err), PK_OK);
    assert_int_equal(res->u.i, 3);
    assert_int_equal(call1("crash", doc, pk_cstr(doc, "x"), &res, &err),
                     PK_ETYPE);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        call1("crash", doc, pk_int(doc, -1), &res, &err);
        _exit(0); /* not reached */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);
}

/* ---- threads and fork ---------------------------------------------------- */

static void *registerer(void *arg)
{
    char name[32];
    int base = (int)(intptr_t)arg;
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "g%d", base + i);
        if (pool_register("threads", name, fn_one,
                          (void *)(intptr_t)(base + i)) != PK_OK)
            return (void *)1;
        if (!pool_lookup("threads", name, NULL))
            return (void *)1;
    }
    return NULL;
}

static void test_threads_and_fork(void **state)
{
    pthread_t th[3];
    for (int k = 0; k < 3; k++)
        assert_int_equal(pthread_create(&th[k], NULL, registerer,
                                        (void *)(intptr_t)(k * 100000)),
                         0);
    /* Fork while the others register: children must never find the lock
     * held or the table half-grown. */
    for (int k = 0; k < 20; k++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(10);
            int ok = pool_register("child", "f", fn_two, NULL) == PK_OK &&
                     pool_lookup("child", "f", NULL) == fn_two &&
                     pool_lookup("t", "heard", NULL) == fn_two;
            _exit(ok ? 0 : 1);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    for (int k = 0; k < 3; k++) {
        void *r;
        assert_int_equal(pthread_join(th[k], &r), 0);
        assert_null(r);
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 3000; i += 97) {
            char name[32];
            void *ud;
            snprintf(name, sizeof name, "g%d", k * 100000 + i);
            assert_ptr_equal(pool_lookup("threads", name, &ud), fn_one);
            assert_ptr_equal(ud, (void *)(intptr_t)(k * 100000 + i));
        }
}

/* ---- kernel helpers and plugins by name (issue 13) ---------------------- */

static void test_kernel_helpers(void **state)
{
    pk_doc_t *doc = NULL;
    pk_error_t err;
    const char *p;
    size_t n;
    (void)state;

    assert_int_equal(pk_doc_new(&doc), PK_OK);
    pk_value_t *args = pk_tuple_new(doc, 2);
    pk_tuple_set(args, 0, pk_cstr(doc, "name"));
    pk_tuple_set(args, 1, pk_bytes(doc, "ab\0c", 4));
    pool_call_t call = {doc, args, NULL, NULL, &err};

    /* refusals first: wrong count, wrong type */
    assert_int_equal(pool_want_args(&call, "f", 1), PK_ETYPE);
    assert_string_equal(err.msg,
                        "TypeError: f() takes exactly 1 argument (2 given)");
    assert_int_equal(err.code, PK_ETYPE);
    assert_int_equal(pk_as_str(pk_int(doc, 1), &p, &n), PK_ETYPE);
    assert_int_equal(pool_fail(&call, PK_EFUNC, "ValueError: %s %d", "x", 7),
                     PK_EFUNC);
    assert_string_equal(err.msg, "ValueError: x 7");
    assert_int_equal(err.code, PK_EFUNC);

    assert_int_equal(pool_want_args(&call, "f", 2), PK_OK);
    assert_int_equal(pk_as_str(pk_item(args, 0), &p, &n), PK_OK);
    assert_int_equal(n, 4);
    assert_string_equal(p, "name");
    assert_int_equal(pk_as_str(pk_item(args, 1), &p, &n), PK_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(p, "ab\0c", 4);

    assert_string_equal(pk_value_type_name(pk_item(args, 0)), "str");
    assert_string_equal(pk_value_type_name(pk_none()), "NoneType");
    pk_value_t *g = pk_global(doc, "datetime", "date");
    pk_value_t *obj = pk_object(doc, g, pk_tuple_new(doc, 0), NULL);
    assert_string_equal(pk_value_type_name(obj), "date");
    pk_doc_free(&doc);
}

static void test_plugin_find(void **state)
{
    char path[PATH_MAX], dir[PATH_MAX];
    pk_error_t err;
    (void)state;

    assert_int_equal(pool_plugin_find("", path, sizeof path, &err), PK_EINVAL);
    /* Not found: the message names every directory looked in. */
    setenv("PICKLEPOOL_PLUGIN_PATH", "/nonexistent/a:/nonexistent/b", 1);
    assert_int_equal(pool_plugin_find("nope", path, sizeof path, &err), PK_EIO);
    assert_non_null(strstr(err.msg, "no plugin 'nope': looked for nope.so in "
                                    "/nonexistent/a, /nonexistent/b"));
    /* Found by name through the path, and loaded by name. */
    snprintf(dir, sizeof dir, "%s", plugin_path);
    *strrchr(dir, '/') = '\0';
    setenv("PICKLEPOOL_PLUGIN_PATH", dir, 1);
    assert_int_equal(pool_plugin_find("examples", path, sizeof path, &err),
                     PK_OK);
    assert_non_null(strstr(path, "/examples.so"));
    assert_int_equal(pool_plugin_load("examples", &err), PK_OK);
    assert_non_null(pool_lookup("examples", "square", NULL));
    unsetenv("PICKLEPOOL_PLUGIN_PATH");
}

int main(void)
{
    alarm(120); /* hard timeout */
    const char *build = getenv("PICKLEPOOL_BUILD");
    snprintf(plugin_path, sizeof plugin_path, "%s/plugins/examples.so",
             build && *build ? build : "build");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_unknown_function),
        cmocka_unit_test(test_register_lookup_replace),
        cmocka_unit_test(test_register_all),
        cmocka_unit_test(test_call_local),
        cmocka_unit_test(test_listener_and_plugin_load),
        cmocka_unit_test(test_plugin_refusals),
        cmocka_unit_test(test_plugin_init_fails),
        cmocka_unit_test(test_kernel_helpers),
        cmocka_unit_test(test_plugin_find),
#define EXAMPLES_TEST(f)                                                       \
    cmocka_unit_test_setup_teardown(f, examples_setup, examples_teardown)
        EXAMPLES_TEST(test_examples_square),
        EXAMPLES_TEST(test_examples_spin_sleep),
        EXAMPLES_TEST(test_examples_sleep_eintr),
        EXAMPLES_TEST(test_examples_normalize),
        EXAMPLES_TEST(test_examples_fail),
        EXAMPLES_TEST(test_examples_crash),
        cmocka_unit_test(test_threads_and_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
