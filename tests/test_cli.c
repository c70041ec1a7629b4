/*
 * test_cli.c - the picklepool CLI: its file layer (compression found by
 * magic, written by suffix, concatenated streams, truncated / corrupt /
 * oversized input refused, atomic writes that leave nothing behind on
 * failure), the disassembler (listings of protocol 0 and 5 pickles, the
 * globals summary, truncation and unknown opcodes), and the binary itself
 * run through fork/exec (usage, refusal, nothing written).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/cli.h"
#include "core/common.h"
#include "picklepool/pickle.h"

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/pk_test_cli.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown_dir(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *path_in(const char *name)
{
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

/* Entries of tmpdir other than . and .. */
static int dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void write_raw(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static size_t read_raw(const char *path, uint8_t *buf, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    size_t n;
    assert_non_null(fp);
    n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

/* 300 KB of compressible, not trivially repetitive data. */
static uint8_t *sample(size_t *len)
{
    size_t n = 300 * 1000;
    uint8_t *p = malloc(n);
    uint32_t x = 12345;
    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)("pickle"[i % 6] + ((x >> 28) & 1));
    }
    *len = n;
    return p;
}

/* ---- compression -------------------------------------------------------- */

static void test_sniff_and_suffix(void **state)
{
    (void)state;
    assert_int_equal(pk__cli_sniff("\x1f\x8b\x08", 3), PK_COMPRESS_GZIP);
    assert_int_equal(pk__cli_sniff("BZh9", 4), PK_COMPRESS_BZIP2);
    assert_int_equal(pk__cli_sniff("\xfd"
                                   "7zXZ\0\0",
                                   7),
                     PK_COMPRESS_XZ);
    assert_int_equal(pk__cli_sniff("\x80\x05\x95", 3), PK_COMPRESS_NONE);
    assert_int_equal(pk__cli_sniff("\x1f", 1), PK_COMPRESS_NONE);
    assert_int_equal(pk__cli_sniff("", 0), PK_COMPRESS_NONE);
    assert_int_equal(pk__cli_compress_for_path("a.pkl.gz"), PK_COMPRESS_GZIP);
    assert_int_equal(pk__cli_compress_for_path("a.bz2"), PK_COMPRESS_BZIP2);
    assert_int_equal(pk__cli_compress_for_path("d/a.xz"), PK_COMPRESS_XZ);
    assert_int_equal(pk__cli_compress_for_path("a.pkl"), PK_COMPRESS_NONE);
    assert_int_equal(pk__cli_compress_for_path(".gz"), PK_COMPRESS_NONE);
    assert_string_equal(pk__cli_compress_name(PK_COMPRESS_XZ), "xz");
}

static void test_roundtrip_each_compression(void **state)
{
    static const struct {
        const char *name;
        pk_cli_compress_t kind;
    } cases[] = {{"x.pkl", PK_COMPRESS_NONE},
                 {"x.pkl.gz", PK_COMPRESS_GZIP},
                 {"x.pkl.bz2", PK_COMPRESS_BZIP2},
                 {"x.pkl.xz", PK_COMPRESS_XZ}};
    size_t len;
    uint8_t *data = sample(&len), head[8];
    (void)state;

    for (size_t i = 0; i < PK_ARRAY_LEN(cases); i++) {
        const char *p = path_in(cases[i].name);
        pk_buf_t b = {0};
        pk_error_t err;

        assert_int_equal(pk__cli_write_file(p, data, len, &err), PK_OK);
        assert_int_equal(read_raw(p, head, sizeof(head)), sizeof(head));
        assert_int_equal(pk__cli_sniff(head, sizeof(head)), cases[i].kind);
        assert_int_equal(pk__cli_read_file(p, SIZE_MAX, &b, &err), PK_OK);
        assert_int_equal(b.len, len);
        assert_memory_equal(b.data, data, len);
        pk_buf_free(&b);
        unlink(p);
    }
    free(data);
}

static void test_concatenated_streams(void **state)
{
    static const pk_cli_compress_t kinds[] = {
        PK_COMPRESS_GZIP, PK_COMPRESS_BZIP2, PK_COMPRESS_XZ};
    (void)state;

    for (size_t i = 0; i < PK_ARRAY_LEN(kinds); i++) {
        pk_buf_t z = {0}, out = {0};
        pk_error_t err;

        assert_int_equal(pk__cli_compress(kinds[i], "abc", 3, &z, &err), PK_OK);
        assert_int_equal(pk__cli_compress(kinds[i], "defg", 4, &z, &err),
                         PK_OK);
        assert_int_equal(
            pk__cli_decompress(kinds[i], z.data, z.len, 100, &out, &err),
            PK_OK);
        assert_int_equal(out.len, 7);
        assert_memory_equal(out.data, "abcdefg", 7);
        pk_buf_free(&z);
        pk_buf_free(&out);
    }
}

static void test_bad_compressed_input_refused(void **state)
{
    static const pk_cli_compress_t kinds[] = {
        PK_COMPRESS_GZIP, PK_COMPRESS_BZIP2, PK_COMPRESS_XZ};
    size_t len;
    uint8_t *data = sample(&len);
    (void)state;

    for (size_t i = 0; i < PK_ARRAY_LEN(kinds); i++) {
        pk_buf_t z = {0}, out = {0};
        pk_error_t err;

        assert_int_equal(pk__cli_compress(kinds[i], data, len, &z, &err),
                         PK_OK);
        /* Truncated: nothing appended, a clear message. */
        out.len = 0;
        assert_int_equal(pk__cli_decompress(kinds[i], z.data, z.len / 2,
                                            SIZE_MAX, &out, &err),
                         PK_EIO);
        assert_int_equal(out.len, 0);
        assert_non_null(strstr(err.msg, pk__cli_compress_name(kinds[i])));
        if (kinds[i] == PK_COMPRESS_GZIP)
            assert_non_null(strstr(err.msg, "truncated"));
        /* Over the size limit. */
        assert_int_equal(
            pk__cli_decompress(kinds[i], z.data, z.len, len - 1, &out, &err),
            PK_ELIMIT);
        assert_int_equal(out.len, 0);
        assert_int_equal(
            pk__cli_decompress(kinds[i], z.data, z.len, len, &out, &err),
            PK_OK);
        assert_int_equal(out.len, len);
        out.len = 0;
        /* Corrupt in the middle. */
        for (size_t k = z.len / 3; k < z.len / 3 + 64; k++)
            z.data[k] ^= 0x5a;
        assert_int_equal(
            pk__cli_decompress(kinds[i], z.data, z.len, SIZE_MAX, &out, &err),
            PK_EIO);
        assert_int_equal(out.len, 0);
        pk_buf_free(&z);
        pk_buf_free(&out);
    }
    free(data);
}

static void test_trailing_garbage_refused(void **state)
{
    pk_buf_t z = {0}, out = {0};
    pk_error_t err;
    (void)state;

    uint8_t buf[256];

    assert_int_equal(pk__cli_compress(PK_COMPRESS_GZIP, "abc", 3, &z, &err),
                     PK_OK);
    assert_true(z.len < sizeof(buf));
    memcpy(buf, z.data, z.len);
    buf[z.len] = 'x';
    assert_int_equal(
        pk__cli_decompress(PK_COMPRESS_GZIP, buf, z.len + 1, 100, &out, &err),
        PK_EIO);
    assert_non_null(strstr(err.msg, "trailing"));
    pk_buf_free(&z);
    pk_buf_free(&out);
}

static void test_read_file_errors(void **state)
{
    const char *p = path_in("short.gz");
    pk_buf_t b = {0}, z = {0};
    pk_error_t err;
    char line[512];
    (void)state;

    assert_int_equal(pk__cli_read_file(path_in("missing"), 100, &b, &err),
                     PK_ESYS);
    assert_int_equal(err.sys_errno, ENOENT);
    /* A truncated .gz is an error, not a short pickle. */
    assert_int_equal(
        pk__cli_compress(PK_COMPRESS_GZIP, "\x80\x05N.", 4, &z, &err), PK_OK);
    write_raw(p, z.data, z.len - 5);
    assert_int_equal(pk__cli_read_file(p, SIZE_MAX, &b, &err), PK_EIO);
    assert_int_equal(b.len, 0);
    pk_error_format(&err, line, sizeof(line));
    assert_non_null(strstr(line, "truncated gzip data"));
    /* The size limit applies to the raw bytes too. */
    write_raw(p, "0123456789", 10);
    assert_int_equal(pk__cli_read_file(p, 9, &b, &err), PK_ELIMIT);
    assert_int_equal(pk__cli_read_file(p, 10, &b, &err), PK_OK);
    assert_int_equal(b.len, 10);
    unlink(p);
    pk_buf_free(&b);
    pk_buf_free(&z);
}

/* ---- atomic writes ------------------------------------------------------- */

static void test_write_refused_leaves_nothing(void **state)
{
    const char *dir = path_in("adir");
    uint8_t buf[16];
    pk_error_t err;
    (void)state;

    assert_int_equal(dir_entries(), 0);
    /* Missing directory: fails before anything exists. */
    assert_int_equal(
        pk__cli_write_file(path_in("no/such/dir/x.pkl"), "ab", 2, &err),
        PK_ESYS);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_int_equal(dir_entries(), 0);
    /* The target is a directory: the rename fails, the temp file goes. */
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(pk__cli_write_file(dir, "ab", 2, &err), PK_ESYS);
    assert_int_equal(err.sys_errno, EISDIR);
    assert_int_equal(dir_entries(), 1);
    rmdir(dir);
    /* Success replaces the old contents whole. */
    write_raw(path_in("keep.pkl"), "old", 3);
    assert_int_equal(pk__cli_write_file(path_in("keep.pkl"), "new!", 4, &err),
                     PK_OK);
    assert_int_equal(read_raw(path_in("keep.pkl"), buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "new!", 4);
    unlink(path_in("keep.pkl"));
    assert_int_equal(dir_entries(), 0);
}

/* A write that fails half-way (file size limit) leaves neither a partial
 * file nor the temporary, and an existing target keeps its contents. */
static void test_write_fails_midway(void **state)
{
    pid_t pid;
    int status;
    (void)state;

    write_raw(path_in("old.pkl"), "old", 3);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {4096, 4096};
        static uint8_t big[100000];
        pk_error_t err;
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        _exit(pk__cli_write_file(path_in("new.pkl"), big, sizeof(big), &err) ==
                          PK_ESYS &&
                      err.sys_errno == EFBIG &&
                      pk__cli_write_file(path_in("old.pkl"), big, sizeof(big),
                                         &err) == PK_ESYS
                  ? 0
                  : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(access(path_in("new.pkl"), F_OK), -1);
    {
        uint8_t buf[8];
        assert_int_equal(read_raw(path_in("old.pkl"), buf, sizeof(buf)), 3);
        assert_memory_equal(buf, "old", 3);
    }
    unlink(path_in("old.pkl"));
    assert_int_equal(dir_entries(), 0);
}

/* ---- the disassembler --------------------------------------------------- */

/* Runs pk_disassemble into a string (free it). */
static char *listing(const void *p, size_t n, pk_err_t want, pk_error_t *err)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);

    assert_non_null(fp);
    assert_int_equal(pk_disassemble(p, n, fp, err), want);
    fclose(fp);
    return text;
}

/* pickle.dumps({'a': [1, 'x']}, protocol=0) */
static const char P0[] = "(dp0\nVa\np1\n(lp2\nI1\naVx\np3\nas.";
/* pickle.dumps({'a': [1, 'x']}, protocol=5) */
static const char P5[] = "\x80\x05\x95\x12\x00\x00\x00\x00\x00\x00\x00}\x94"
                         "\x8c\x01"
                         "a\x94]\x94(K\x01\x8c\x01x\x94"
                         "es.";
/* the classic: os.system('echo hi') */
static const char EVIL[] = "cos\nsystem\n(S'echo hi'\ntR.";

static void test_opcode_names(void **state)
{
    (void)state;
    assert_string_equal(pk_opcode_name('K'), "BININT1");
    assert_string_equal(pk_opcode_name(0x80), "PROTO");
    assert_string_equal(pk_opcode_name(0x98), "READONLY_BUFFER");
    assert_null(pk_opcode_name(0xff));
    assert_null(pk_opcode_name(-1));
    assert_null(pk_opcode_name(256));
}

static void test_dis_protocol0(void **state)
{
    pk_error_t err;
    char *t = listing(P0, sizeof(P0) - 1, PK_OK, &err);
    (void)state;

    assert_non_null(strstr(t, "    0: (    MARK\n"));
    assert_non_null(strstr(t, "    1: d        DICT       (MARK at 0)\n"));
    assert_non_null(strstr(t, "UNICODE    'a'"));
    assert_non_null(strstr(t, "INT        1\n"));
    assert_non_null(strstr(t, "SETITEM"));
    assert_non_null(strstr(t, ".    STOP\n"));
    assert_non_null(strstr(t, "highest protocol among opcodes = 0\n"));
    assert_non_null(strstr(t, "globals: none\n"));
    free(t);
}

static void test_dis_protocol5(void **state)
{
    pk_error_t err;
    char *t = listing(P5, sizeof(P5) - 1, PK_OK, &err);
    (void)state;

    assert_non_null(strstr(t, "    0: \\x80 PROTO      5\n"));
    assert_non_null(strstr(t, "    2: \\x95 FRAME      18\n"));
    assert_non_null(strstr(t, "SHORT_BINUNICODE 'a'"));
    assert_non_null(strstr(t, "MEMOIZE    (as 0)"));
    assert_non_null(strstr(t, "        BININT1    1\n")); /* inside a MARK */
    assert_non_null(strstr(t, "APPENDS    (MARK at 19)"));
    assert_non_null(strstr(t, "highest protocol among opcodes = 4\n"));
    free(t);
}

static void test_dis_globals(void **state)
{
    /* builtins.set called (allowed), collections.OrderedDict only named. */
    static const char OK[] = "cbuiltins\nset\n(]tRccollections\nOrderedDict\n"
                             "\x86.";
    pk_error_t err;
    char *t = listing(EVIL, sizeof(EVIL) - 1, PK_OK, &err);
    (void)state;

    assert_non_null(strstr(t, "GLOBAL     'os system'"));
    assert_non_null(strstr(
        t, "os.system: would call: refused (DANGEROUS call) (REDUCE at 24)"));
    assert_non_null(strstr(t, "verdict: DANGEROUS: would call os.system"));
    free(t);
    t = listing(OK, sizeof(OK) - 1, PK_OK, &err);
    assert_non_null(
        strstr(t, "builtins.set: would call: allowed (data constructor)"));
    assert_non_null(strstr(t, "verdict: safe: decoding calls only"));
    assert_non_null(
        strstr(t, "collections.OrderedDict: not called, kept as a reference"));
    free(t);
}

static void test_dis_truncated(void **state)
{
    pk_error_t err;
    (void)state;

    /* Every proper prefix fails cleanly with the listing so far. */
    for (size_t n = 0; n < sizeof(P5) - 1; n++) {
        char *t = listing(P5, n, PK_ETRUNC, &err);
        assert_int_equal(err.code, PK_ETRUNC);
        assert_true(err.offset >= 0 && (size_t)err.offset <= n);
        assert_null(strstr(t, "STOP"));
        free(t);
    }
    /* A length field that runs past the end. */
    {
        static const char LONGSTR[] = "\x80\x04\x8c\x09"
                                      "abc";
        char *t = listing(LONGSTR, sizeof(LONGSTR) - 1, PK_ETRUNC, &err);
        assert_int_equal(err.offset, 2);
        assert_int_equal(err.opcode, 0x8c);
        assert_non_null(strstr(t, "PROTO      4\n"));
        free(t);
    }
}

static void test_dis_malformed(void **state)
{
    pk_error_t err;
    char line[512];
    char *t;
    (void)state;

    t = listing("\x80\x05\xffN.", 5, PK_EPICKLE, &err);
    assert_int_equal(err.offset, 2);
    assert_int_equal(err.opcode, 0xff);
    assert_non_null(strstr(t, "PROTO      5\n"));
    pk_error_format(&err, line, sizeof(line));
    assert_non_null(strstr(line, "unknown opcode"));
    free(t);
    /* Stack underflow, missing MARK, unknown memo key. */
    free(listing("t.", 2, PK_EPICKLE, &err));
    assert_int_equal(err.opcode, 't');
    free(listing("N\x86.", 3, PK_EPICKLE, &err));
    free(listing("h\x05.", 3, PK_EPICKLE, &err));
    assert_non_null(strstr(err.msg, "memo key 5"));
    free(listing("\x80\x09N.", 4, PK_EUNSUPPORTED, &err));
}

/* ---- the binary --------------------------------------------------------- */

static char binary[512];

/* Runs the binary with argv (NULL-terminated) and stdout/stderr into files
 * of tmpdir; returns the exit status. */
static int run_cli(const char *const *argv)
{
    pid_t pid = fork();
    int status;

    assert_true(pid >= 0);
    if (pid == 0) {
        int out = open(path_in("stdout"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int errfd = open(path_in("stderr"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(out, 1);
        dup2(errfd, 2);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static size_t count_lines(const char *path)
{
    uint8_t buf[4096];
    size_t n = read_raw(path, buf, sizeof(buf)), lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    return lines;
}

static void test_binary(void **state)
{
    char in[256], out[256]; /* path_in() reuses its buffers */
    (void)state;

    snprintf(in, sizeof(in), "%s", path_in("evil.pkl"));
    snprintf(out, sizeof(out), "%s", path_in("out.pkl"));

    if (access(binary, X_OK) != 0)
        skip();
    {
        const char *argv[] = {binary, NULL};
        assert_int_equal(run_cli(argv), PK_EXIT_USAGE);
    }
    {
        const char *argv[] = {binary, "frobnicate", NULL};
        assert_int_equal(run_cli(argv), PK_EXIT_USAGE);
    }
    {
        const char *argv[] = {binary, "recode", "only-in", NULL};
        assert_int_equal(run_cli(argv), PK_EXIT_USAGE);
    }
    {
        const char *argv[] = {binary, "--help", NULL};
        assert_int_equal(run_cli(argv), PK_EXIT_OK);
    }
    /* A refused pickle: one line on stderr, nothing written. */
    write_raw(in, EVIL, sizeof(EVIL) - 1);
    {
        const char *argv[] = {binary, "recode", in, out, NULL};
        assert_int_equal(run_cli(argv), PK_EXIT_FAIL);
        assert_int_equal(count_lines(path_in("stderr")), 1);
        assert_int_equal(access(out, F_OK), -1);
    }
    {
        const char *argv[] = {binary, "inspect", in, NULL};
        assert_int_equal(run_cli(argv), 4); /* a dangerous call */
    }
    unlink(in);
    unlink(path_in("stdout"));
    unlink(path_in("stderr"));
}

int main(void)
{
    const char *build = getenv("PICKLEPOOL_BUILD");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff_and_suffix),
        cmocka_unit_test(test_roundtrip_each_compression),
        cmocka_unit_test(test_concatenated_streams),
        cmocka_unit_test(test_bad_compressed_input_refused),
        cmocka_unit_test(test_trailing_garbage_refused),
        cmocka_unit_test(test_read_file_errors),
        cmocka_unit_test(test_write_refused_leaves_nothing),
        cmocka_unit_test(test_write_fails_midway),
        cmocka_unit_test(test_opcode_names),
        cmocka_unit_test(test_dis_protocol0),
        cmocka_unit_test(test_dis_protocol5),
        cmocka_unit_test(test_dis_globals),
        cmocka_unit_test(test_dis_truncated),
        cmocka_unit_test(test_dis_malformed),
        cmocka_unit_test(test_binary),
    };

    alarm(120); /* hard timeout */
    snprintf(binary, sizeof(binary), "%s/picklepool",
             build != NULL ? build : "build");
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
