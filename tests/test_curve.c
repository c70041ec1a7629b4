/*
 * test_curve.c - CURVE security for tcp endpoints (runtime/ipc/curve.h),
 * against real ZeroMQ sockets on 127.0.0.1 ephemeral ports: an allow-listed
 * key gets its messages through (with its name as User-Id); a key that is
 * not allow-listed, a client without CURVE and a client with the wrong
 * server key never deliver a frame and learn so within seconds; the ZAP
 * handler answers malformed requests and keeps serving; key files and
 * directories with a fault are refused with a message naming it; endpoints
 * are checked and tcp needs keys or an explicit insecure mode.
 *
 *   build/tests/test_curve [NAME-SUBSTRING...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "ipc/curve.h"
#include "lib/faultsim.h"
#include "lib/runner.h"

/* Handshake results must come well within this (ZeroMQ alone never
 * reports them at all). */
#define HANDSHAKE_MS 5000
/* How long a refused peer is watched for frames that must never come. */
#define QUIET_MS 500

static char tmpdir[64];

static const char *path_in(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static const char *path_in(const char *fmt, ...)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    char rel[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(p, 512, "%s/%s", tmpdir, rel);
    return p;
}

static void make_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/pk_test_curve.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static int teardown(void **state)
{
    char cmd[256];
    (void)state;
    if (tmpdir[0] == '\0')
        return 0;
    snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'",
             tmpdir, tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void mkdir_ok(const char *path)
{
    assert_int_equal(mkdir(path, 0700), 0);
}

/* Makes the pair NAME in dir (dir made when missing); its public key goes
 * to pub (41 bytes) when not NULL. */
static void keygen(const char *dir, const char *name, char *pub)
{
    pk_error_t err;
    char z[POOL_CURVE_Z85_LEN + 1];
    pk_error_clear(&err);
    if (pool__curve_keygen(dir, name, 0, z, &err) != PK_OK)
        fail_msg("keygen %s/%s: %s", dir, name, err.msg);
    if (pub != NULL)
        memcpy(pub, z, sizeof z);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* Expects `rc` with err.msg containing `what`. */
static void expect_err(pk_err_t got, const pk_error_t *err, pk_err_t want,
                       const char *what)
{
    if (got != want)
        fail_msg("got %s (\"%s\"), wanted %s", pk_errname(got), err->msg,
                 pk_errname(want));
    assert_int_equal(err->code, want);
    if (strstr(err->msg, what) == NULL)
        fail_msg("message \"%s\" does not mention \"%s\"", err->msg, what);
}

static pool__curve_keys_t *load(const char *dir, const char *name)
{
    pool__curve_keys_t *k = NULL;
    pk_error_t err;
    pk_error_clear(&err);
    if (pool__curve_keys_load(dir, name, &k, &err) != PK_OK)
        fail_msg("load %s (%s): %s", dir, name ? name : "-", err.msg);
    return k;
}

/* ---- endpoints ---------------------------------------------------------- */

static void test_endpoint_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *ep;
        int bind;
        const char *what;
    } bad[] = {
        {"", 0, "empty endpoint"},
        {"localhost:5555", 0, "is not an endpoint"},
        {"udp://1.2.3.4:5", 0, "unsupported transport \"udp\""},
        {"tcp://", 0, "no port"},
        {"tcp://host", 0, "no port"},
        {"tcp://:5555", 0, "no host"},
        {"tcp://host:", 0, "is not a number"},
        {"tcp://host:http", 0, "is not a number"},
        {"tcp://host:65536", 0, "from 1 to 65535"},
        {"tcp://host:12x", 0, "from 1 to 65535"},
        {"tcp://host:-1", 0, "is not a number"},
        {"tcp://host:0", 0, "cannot connect to port 0"},
        {"tcp://host:*", 0, "cannot connect to port *"},
        {"tcp://*:5555", 0, "cannot connect to host '*'"},
        {"tcp://a b:5555", 0, "character ' '"},
        {"tcp://10.0.0.1;10.0.0.2:5555", 0, "character ';'"},
        {"tcp://[::1:5555", 0, "'[' without ']'"},
        {"tcp://[]:5555", 0, "bad IPv6 address"},
        {"tcp://[zz::1]:5555", 0, "is not an IPv6 address"},
        {"tcp://[::1]5555", 0, "wants tcp://[ADDRESS]:PORT"},
        {"ipc://", 0, "no socket path"},
        {"ipc://@", 0, "no socket path"},
        {"ipc://*", 0, "cannot connect to ipc://*"},
        {"inproc://", 0, "no name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pk_error_t err;
        pool__endpoint_t e = {0};
        pk_error_clear(&err);
        pk_err_t rc = pool__endpoint_parse(bad[i].ep, bad[i].bind, &e, &err);
        if (rc != PK_EINVAL || strstr(err.msg, bad[i].what) == NULL)
            fail_msg("\"%s\": got %s \"%s\", wanted \"%s\"", bad[i].ep,
                     pk_errname(rc), err.msg, bad[i].what);
        assert_int_equal(e.kind, 0); /* untouched on failure */
    }
    char longpath[200] = "ipc:///";
    memset(longpath + 7, 'x', 150);
    pk_error_t err;
    expect_err(pool__endpoint_parse(longpath, 1, NULL, &err), &err, PK_EINVAL,
               "socket path longer than");
    expect_err(pool__endpoint_parse(NULL, 1, NULL, &err), &err, PK_EINVAL,
               "empty endpoint");
    assert_false(pool__endpoint_is_tcp(NULL));
    assert_false(pool__endpoint_is_tcp("ipc:///tmp/x"));
    assert_false(pool__endpoint_is_tcp("tcp:/x"));
    assert_true(pool__endpoint_is_tcp("tcp://x"));
}

static void test_endpoint_accepted(void **state)
{
    (void)state;
    pool__endpoint_t e;
    pk_error_t err;

    assert_int_equal(pool__endpoint_parse("tcp://10.0.0.1:5555", 0, &e, &err),
                     PK_OK);
    assert_int_equal(e.kind, POOL_EP_TCP);
    assert_string_equal(e.host, "10.0.0.1");
    assert_int_equal(e.port, 5555);
    assert_int_equal(
        pool__endpoint_parse("tcp://node-3.cluster_a:1", 0, &e, &err), PK_OK);
    assert_string_equal(e.host, "node-3.cluster_a");
    assert_int_equal(e.port, 1);
    assert_int_equal(pool__endpoint_parse("tcp://*:*", 1, &e, &err), PK_OK);
    assert_string_equal(e.host, "*");
    assert_int_equal(e.port, 0);
    assert_int_equal(pool__endpoint_parse("tcp://eth0:0", 1, &e, &err), PK_OK);
    assert_int_equal(e.port, 0);
    assert_int_equal(
        pool__endpoint_parse("tcp://[fe80::1%eth0]:65535", 0, &e, &err), PK_OK);
    assert_string_equal(e.host, "fe80::1%eth0");
    assert_int_equal(e.port, 65535);
    assert_int_equal(pool__endpoint_parse("ipc:///tmp/a.sock", 0, &e, &err),
                     PK_OK);
    assert_int_equal(e.kind, POOL_EP_IPC);
    assert_int_equal(pool__endpoint_parse("ipc://@abstract", 0, &e, &err),
                     PK_OK);
    assert_int_equal(pool__endpoint_parse("inproc://x", 0, &e, &err), PK_OK);
    assert_int_equal(e.kind, POOL_EP_INPROC);
}

static void test_net_mode(void **state)
{
    (void)state;
    pool__net_mode_t m = 0;
    pk_error_t err;

    expect_err(pool__net_mode("tcp://h:1", 0, 0, 0, &m, &err), &err, PK_EINVAL,
               "tcp needs CURVE keys");
    expect_err(pool__net_mode("tcp://h:1", 0, 1, 1, &m, &err), &err, PK_EINVAL,
               "exclude each other");
    expect_err(pool__net_mode("ipc:///tmp/x", 0, 1, 0, &m, &err), &err,
               PK_EINVAL, "CURVE keys are only for tcp://");
    expect_err(pool__net_mode("inproc://x", 0, 0, 1, &m, &err), &err, PK_EINVAL,
               "--insecure is meant only for tcp://");
    expect_err(pool__net_mode("tcp://h", 0, 1, 0, &m, &err), &err, PK_EINVAL,
               "no port");
    assert_int_equal(m, 0);
    assert_int_equal(pool__net_mode("tcp://h:1", 0, 1, 0, &m, &err), PK_OK);
    assert_int_equal(m, POOL_NET_CURVE);
    assert_int_equal(pool__net_mode("tcp://*:1", 1, 0, 1, &m, &err), PK_OK);
    assert_int_equal(m, POOL_NET_INSECURE);
    assert_int_equal(pool__net_mode("ipc:///tmp/x", 0, 0, 0, &m, &err), PK_OK);
    assert_int_equal(m, POOL_NET_LOCAL);
}

/* ---- keys --------------------------------------------------------------- */

static void test_keygen_files(void **state)
{
    (void)state;
    struct stat st;
    pk_error_t err;
    char pub[POOL_CURVE_Z85_LEN + 1], pub2[POOL_CURVE_Z85_LEN + 1];
    char before[POOL_CURVE_Z85_LEN + 1];

    make_tmpdir();
    assert_true(pool__curve_available());
    const char *dir = path_in("keys");
    keygen(dir, "master", pub);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(path_in("keys/master.key"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(path_in("keys/master.pub"), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);

    /* the pair loads, and the public key is the one printed */
    pool__curve_keys_t *k = load(dir, "master");
    assert_string_equal(k->public_z85, pub);
    assert_string_equal(k->name, "master");
    assert_int_equal(k->nallow, 1);
    assert_non_null(pool__curve_keys_find(k, "master"));
    assert_string_equal(pool__curve_keys_find(k, "master")->z85, pub);
    assert_null(pool__curve_keys_find(k, "other"));
    pool__curve_keys_free(&k);
    assert_null(k);
    pool__curve_keys_free(&k); /* idempotent */

    /* no overwrite without force: both files stay as they were */
    assert_int_equal(
        pool__curve_read_key(path_in("keys/master.pub"), before, NULL, &err),
        PK_OK);
    expect_err(pool__curve_keygen(dir, "master", 0, NULL, &err), &err,
               PK_EINVAL, "master.key already exists (--force replaces it)");
    assert_int_equal(
        pool__curve_read_key(path_in("keys/master.pub"), pub2, NULL, &err),
        PK_OK);
    assert_string_equal(pub2, before);
    /* a lone NAME.pub blocks too (its owner may hold the secret elsewhere) */
    copy_file(path_in("keys/master.pub"), path_in("keys/host1.pub"));
    expect_err(pool__curve_keygen(dir, "host1", 0, NULL, &err), &err, PK_EINVAL,
               "host1.pub already exists");
    assert_int_equal(stat(path_in("keys/host1.key"), &st), -1);

    /* force replaces the pair */
    assert_int_equal(pool__curve_keygen(dir, "master", 1, pub2, &err), PK_OK);
    assert_string_not_equal(pub2, before);
    k = load(dir, "master");
    assert_string_equal(k->public_z85, pub2);
    pool__curve_keys_free(&k);

    /* no temporary left behind */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q keygen", dir);
    assert_int_not_equal(system(cmd), 0);

    /* refusals */
    expect_err(pool__curve_keygen(dir, ".hidden", 0, NULL, &err), &err,
               PK_EINVAL, "key name \".hidden\"");
    expect_err(pool__curve_keygen(dir, "a/b", 0, NULL, &err), &err, PK_EINVAL,
               "key name \"a/b\"");
    expect_err(pool__curve_keygen(dir, "", 0, NULL, &err), &err, PK_EINVAL,
               "key name");
    expect_err(pool__curve_keygen(path_in("no/such"), "x", 0, NULL, &err), &err,
               PK_ESYS, "cannot create");
    assert_int_equal(err.sys_errno, ENOENT);
    mkdir_ok(path_in("open"));
    assert_int_equal(chmod(path_in("open"), 0777), 0);
    expect_err(pool__curve_keygen(path_in("open"), "x", 0, NULL, &err), &err,
               PK_EINVAL, "writable by group or others");
    write_file(path_in("file"), "x", 0600);
    expect_err(pool__curve_keygen(path_in("file"), "x", 0, NULL, &err), &err,
               PK_EINVAL, "not a directory");
}

/* A key directory with the pair "me" and one more public key. */
static const char *fresh_dir(const char *name)
{
    static char dirs[4][512];
    static int k;
    char *d = dirs[k++ % 4];
    snprintf(d, 512, "%s", path_in("%s", name));
    keygen(d, "me", NULL);
    return d;
}

static void test_keydir_refusals(void **state)
{
    (void)state;
    pool__curve_keys_t *k = (void *)1;
    pk_error_t err;
    char pub[POOL_CURVE_Z85_LEN + 1], z[POOL_CURVE_Z85_LEN + 1];

    make_tmpdir();
    keygen(path_in("ok"), "peer", pub);

    /* the directory */
    expect_err(pool__curve_keys_load(path_in("missing"), "me", &k, &err), &err,
               PK_ESYS, "missing");
    assert_int_equal(err.sys_errno, ENOENT);
    assert_null(k);
    expect_err(pool__curve_keys_load("", "me", &k, &err), &err, PK_EINVAL,
               "no key directory");
    write_file(path_in("plain"), "x", 0600);
    expect_err(pool__curve_keys_load(path_in("plain"), "me", &k, &err), &err,
               PK_EINVAL, "not a directory");
    const char *d = fresh_dir("d1");
    assert_int_equal(chmod(d, 0770), 0);
    expect_err(pool__curve_keys_load(d, "me", &k, &err), &err, PK_EINVAL,
               "key directory writable by group or others (mode 0770)");
    assert_int_equal(chmod(d, 0755), 0);
    k = load(d, "me"); /* readable by others is fine */
    pool__curve_keys_free(&k);
    expect_err(pool__curve_keys_load(d, "../x", &k, &err), &err, PK_EINVAL,
               "key name \"../x\"");

    /* the pair */
    expect_err(pool__curve_keys_load(d, "nobody", &k, &err), &err, PK_ESYS,
               "no secret key \"nobody\" (make one with picklepool keygen");
    assert_int_equal(chmod(path_in("d1/me.key"), 0640), 0);
    expect_err(pool__curve_keys_load(d, "me", &k, &err), &err, PK_EINVAL,
               "secret key open to group or others (mode 0640); run chmod "
               "600");
    assert_int_equal(chmod(path_in("d1/me.key"), 0604), 0);
    expect_err(pool__curve_keys_load(d, "me", &k, &err), &err, PK_EINVAL,
               "secret key open to group or others");
    assert_int_equal(chmod(path_in("d1/me.key"), 0600), 0);
    /* a NAME.pub that is not the secret's public key */
    copy_file(path_in("ok/peer.pub"), path_in("d1/me.pub"));
    expect_err(pool__curve_keys_load(d, "me", &k, &err), &err, PK_EINVAL,
               "me.pub does not match");
    /* without it the pair loads: the .pub is derived */
    assert_int_equal(unlink(path_in("d1/me.pub")), 0);
    k = load(d, "me");
    assert_int_equal(k->nallow, 0);
    assert_int_equal(strlen(k->public_z85), 40);
    pool__curve_keys_free(&k);
    /* a secret key that is not one: Z85 fine, not 40 characters */
    write_file(path_in("d1/bad.key"), "abc\n", 0600);
    expect_err(pool__curve_keys_load(d, "bad", &k, &err), &err, PK_EINVAL,
               "line 1: a key is 40 Z85 characters, this one has 3");

    /* the public keys: each fault fails the whole load, naming the file */
    static const struct {
        const char *text;
        const char *what;
    } badpub[] = {
        {"", "no key in it"},
        {"# only a comment\n\n", "no key in it"},
        {"0123456789012345678901234567890123456789~\n", "this one has 41"},
        {"012345678901234567890123456789012345678~\n",
         "character '~' is not Z85"},
        {"0123456789012345678901234567890123456789\n"
         "0123456789012345678901234567890123456789\n",
         "line 2: a second key (the first is on line 1)"},
        {"%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%\n", "not a Z85 encoding"},
        {"01234567890123456789\x01"
         "0123456789012345678\n",
         "byte 0x01 is not Z85"},
    };
    const char *d2 = fresh_dir("d2");
    for (size_t i = 0; i < sizeof badpub / sizeof badpub[0]; i++) {
        write_file(path_in("d2/x.pub"), badpub[i].text, 0644);
        expect_err(pool__curve_keys_load(d2, "me", &k, &err), &err, PK_EINVAL,
                   badpub[i].what);
        if (strstr(err.msg, "d2/x.pub") == NULL)
            fail_msg("\"%s\" does not name the file", err.msg);
        assert_null(k);
        /* the same check reading the file alone, which wipes z on failure */
        memset(z, 'q', sizeof z);
        assert_int_equal(
            pool__curve_read_key(path_in("d2/x.pub"), z, NULL, &err),
            PK_EINVAL);
        assert_int_equal(z[0], '\0');
    }
    /* comments, blanks, spaces and CRLF around the key are fine */
    char text[256];
    snprintf(text, sizeof text, "# peer\r\n\n  %s \r\n# end\n", pub);
    write_file(path_in("d2/x.pub"), text, 0644);
    k = load(d2, "me");
    assert_int_equal(k->nallow, 2);
    assert_string_equal(pool__curve_keys_find(k, "x")->z85, pub);
    pool__curve_keys_free(&k);
    /* too big */
    char big[POOL_CURVE_FILE_MAX + 100];
    memset(big, '#', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_file(path_in("d2/x.pub"), big, 0644);
    expect_err(pool__curve_keys_load(d2, "me", &k, &err), &err, PK_EINVAL,
               "more than a key file's 4096");
    /* writable by others */
    write_file(path_in("d2/x.pub"), text, 0666);
    expect_err(pool__curve_keys_load(d2, "me", &k, &err), &err, PK_EINVAL,
               "x.pub: key file writable by group or others (mode 0666)");
    assert_int_equal(unlink(path_in("d2/x.pub")), 0);
    /* a name that is not a key name */
    write_file(path_in("d2/a b.pub"), text, 0644);
    expect_err(pool__curve_keys_load(d2, "me", &k, &err), &err, PK_EINVAL,
               "a b.pub: a public key file is NAME.pub");
    assert_int_equal(unlink(path_in("d2/a b.pub")), 0);
    /* not a regular file: a directory, and a FIFO (which must not hang) */
    mkdir_ok(path_in("d2/sub.pub"));
    expect_err(pool__curve_keys_load(d2, "me", &k, &err), &err, PK_EINVAL,
               "sub.pub: not a regular file");
    assert_int_equal(rmdir(path_in("d2/sub.pub")), 0);
    assert_int_equal(mkfifo(path_in("d2/f.pub"), 0644), 0);
    expect_err(pool__curve_keys_load(d2, "me", &k, &err), &err, PK_EINVAL,
               "f.pub: not a regular file");
    assert_int_equal(unlink(path_in("d2/f.pub")), 0);
    /* hidden files and other names are not keys: ignored */
    write_file(path_in("d2/.hidden.pub"), "junk", 0644);
    write_file(path_in("d2/notes.txt"), "junk", 0644);
    k = load(d2, "me");
    assert_int_equal(k->nallow, 1);
    pool__curve_keys_free(&k);
    /* an allow-list alone (no pair) */
    k = load(d2, NULL);
    assert_int_equal(k->nallow, 1);
    assert_string_equal(k->name, "");
    assert_string_equal(k->secret_z85, "");
    pool__curve_keys_free(&k);
}

static void test_keys_lookup(void **state)
{
    (void)state;
    char pubs[6][POOL_CURVE_Z85_LEN + 1];
    char name[16];

    make_tmpdir();
    const char *d = path_in("many");
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "host%d", i);
        keygen(d, name, pubs[i]);
    }
    pool__curve_keys_t *k = load(d, "host0");
    assert_int_equal(k->nallow, 6);
    for (int i = 0; i < 6; i++) {
        uint8_t bin[32];
        snprintf(name, sizeof name, "host%d", i);
        assert_non_null(zmq_z85_decode(bin, pubs[i]));
        const pool__curve_pub_t *p = pool__curve_keys_allowed(k, bin);
        assert_non_null(p);
        assert_string_equal(p->name, name);
        assert_string_equal(pool__curve_keys_find(k, name)->z85, pubs[i]);
    }
    for (size_t i = 1; i < k->nallow; i++)
        assert_true(memcmp(k->allow[i - 1].key, k->allow[i].key, 32) < 0);
    char other[41], sec[41];
    uint8_t bin[32];
    assert_int_equal(zmq_curve_keypair(other, sec), 0);
    assert_non_null(zmq_z85_decode(bin, other));
    assert_null(pool__curve_keys_allowed(k, bin));
    pool__curve_keys_free(&k);
}

/* ---- servers and clients over tcp ---------------------------------------- */

/* What the ZAP handler's thread logged (under mu: the test reads it from
 * its own thread). */
typedef struct zap_log {
    pthread_mutex_t mu;
    int calls, last_status;
    char who[64], reason[160];
} zap_log_t;

static void on_zap(void *arg, int status, const char *address, const char *who,
                   const char *reason)
{
    zap_log_t *l = arg;
    (void)address;
    pthread_mutex_lock(&l->mu);
    l->calls++;
    l->last_status = status;
    snprintf(l->who, sizeof l->who, "%s", who);
    snprintf(l->reason, sizeof l->reason, "%s", reason);
    pthread_mutex_unlock(&l->mu);
}

/* A copy of *l taken under its lock. */
static zap_log_t log_now(zap_log_t *l)
{
    zap_log_t c;
    pthread_mutex_lock(&l->mu);
    c = *l;
    pthread_mutex_unlock(&l->mu);
    return c;
}

typedef struct server {
    void *ctx, *sock;
    pool__zap_t *zap;
    pool__curve_keys_t *keys;
    char ep[128];
    char pub[POOL_CURVE_Z85_LEN + 1];
    zap_log_t log;
} server_t;

/* A ROUTER on tcp://127.0.0.1:<ephemeral>, CURVE with the pair "master" of
 * dir (with its ZAP handler) or plain when dir is NULL. */
static void server_start(server_t *s, const char *dir)
{
    pk_error_t err;
    int zero = 0;
    size_t len;

    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->log.mu, NULL);
    s->ctx = zmq_ctx_new();
    assert_non_null(s->ctx);
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (dir != NULL) {
        s->keys = load(dir, "master");
        memcpy(s->pub, s->keys->public_z85, sizeof s->pub);
        assert_int_equal(pool__zap_start(s->ctx, s->keys, NULL, on_zap, &s->log,
                                         &s->zap, &err),
                         PK_OK);
        assert_string_equal(pool__zap_domain(s->zap), POOL_CURVE_DOMAIN);
        assert_int_equal(
            pool__curve_server_setup(s->sock, s->keys, s->zap, &err), PK_OK);
    }
    assert_int_equal(zmq_bind(s->sock, "tcp://127.0.0.1:*"), 0);
    len = sizeof s->ep;
    assert_int_equal(zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->ep, &len),
                     0);
}

static void server_stop(server_t *s)
{
    zmq_close(s->sock);
    pool__zap_stop(&s->zap);
    assert_null(s->zap);
    pool__curve_keys_free(&s->keys);
    assert_int_equal(zmq_ctx_term(s->ctx), 0);
}

/* Receives one message (routing id, then payload) on the server within
 * timeout_ms; returns the payload's length (-1: nothing came) and copies
 * the User-Id and X-Curve-Public properties. */
static int server_recv(server_t *s, int timeout_ms, char *buf, size_t size,
                       char *user, char *curve_pub)
{
    zmq_pollitem_t it = {s->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return -1;
    zmq_msg_t id, m;
    zmq_msg_init(&id);
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&id, s->sock, 0) >= 0);
    assert_true(zmq_msg_more(&id));
    int n = zmq_msg_recv(&m, s->sock, 0);
    assert_true(n >= 0);
    memcpy(buf, zmq_msg_data(&m), (size_t)n < size ? (size_t)n : size);
    if (user != NULL) {
        const char *u = zmq_msg_gets(&m, "User-Id");
        snprintf(user, 64, "%s", u ? u : "");
    }
    if (curve_pub != NULL) {
        const char *p = zmq_msg_gets(&m, "X-Curve-Public");
        snprintf(curve_pub, 64, "%s", p ? p : "");
    }
    /* reply to the sender */
    zmq_msg_send(&id, s->sock, ZMQ_SNDMORE);
    zmq_send(s->sock, "pong", 4, 0);
    zmq_msg_close(&m);
    return n;
}

typedef struct client {
    void *ctx, *sock;
    pool__curve_watch_t *watch;
    pool__curve_keys_t *keys;
} client_t;

/* A DEALER with the pair `name` of dir trusting server key `server_pub`
 * (NULL: dir's master.pub; plain when dir is NULL), watched, connected to
 * ep, "hello" queued. */
static void client_start(client_t *c, const char *dir, const char *name,
                         const char *server_pub, const char *ep)
{
    pk_error_t err;
    int zero = 0;

    memset(c, 0, sizeof *c);
    c->ctx = zmq_ctx_new();
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (dir != NULL) {
        c->keys = load(dir, name);
        if (server_pub == NULL)
            server_pub = pool__curve_keys_find(c->keys, "master")->z85;
        assert_int_equal(
            pool__curve_client_setup(c->sock, c->keys, server_pub, &err),
            PK_OK);
    }
    assert_int_equal(
        pool__curve_watch_open(c->ctx, c->sock, "the master", &c->watch, &err),
        PK_OK);
    assert_int_equal(zmq_connect(c->sock, ep), 0);
    zmq_send(c->sock, "hello", 5, ZMQ_DONTWAIT);
}

static void client_stop(client_t *c)
{
    pool__curve_watch_close(&c->watch);
    assert_null(c->watch);
    pool__curve_watch_close(&c->watch); /* idempotent */
    zmq_close(c->sock);
    pool__curve_keys_free(&c->keys);
    assert_int_equal(zmq_ctx_term(c->ctx), 0);
}

/* A master's directory (pair "master", plus the public key of "client")
 * and a client's (pair "client", plus master.pub). */
static void two_dirs(const char **srv, const char **cli)
{
    *srv = path_in("srv");
    *cli = path_in("cli");
    keygen(*srv, "master", NULL);
    keygen(*cli, "client", NULL);
    copy_file(path_in("cli/client.pub"), path_in("srv/client.pub"));
    copy_file(path_in("srv/master.pub"), path_in("cli/master.pub"));
}

static void test_allowed_key_gets_through(void **state)
{
    (void)state;
    const char *srv, *cli;
    server_t s;
    client_t c;
    pk_error_t err;
    pool__curve_event_t last;
    char buf[16], user[64], cpub[64];

    make_tmpdir();
    two_dirs(&srv, &cli);
    server_start(&s, srv);
    pool__curve_keys_t *ck = load(cli, "client");
    client_start(&c, cli, "client", pool__curve_keys_find(ck, "master")->z85,
                 s.ep);
    double t0 = now_ms();
    if (pool__curve_watch_handshake(c.watch, HANDSHAKE_MS, &last, &err) !=
        PK_OK)
        fail_msg("handshake: %s", err.msg);
    assert_int_equal(last.kind, POOL_CURVE_EV_OK);
    assert_string_equal(last.endpoint, s.ep);
    assert_true(now_ms() - t0 < HANDSHAKE_MS);

    int n = server_recv(&s, HANDSHAKE_MS, buf, sizeof buf, user, cpub);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_string_equal(user, "client");
    assert_string_equal(cpub, ck->public_z85);
    /* and back */
    zmq_pollitem_t it = {c.sock, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, HANDSHAKE_MS), 1);
    assert_int_equal(zmq_recv(c.sock, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "pong", 4);

    pool__zap_stats_t st;
    pool__zap_stats(s.zap, &st);
    assert_int_equal(st.allowed, 1);
    assert_int_equal(st.refused, 0);
    assert_int_equal(st.malformed, 0);
    zap_log_t l = log_now(&s.log);
    assert_int_equal(l.last_status, 200);
    assert_string_equal(l.who, "client");
    pool__curve_keys_free(&ck);
    client_stop(&c);
    server_stop(&s);
}

static char last_refusal[256];

/* Expects the client's handshake to fail with `what` within HANDSHAKE_MS,
 * and the server to receive nothing. */
static void expect_refused(server_t *s, client_t *c, pool__curve_ev_t kind,
                           const char *what)
{
    pk_error_t err;
    pool__curve_event_t last;
    char buf[16];

    double t0 = now_ms();
    pk_err_t rc =
        pool__curve_watch_handshake(c->watch, HANDSHAKE_MS, &last, &err);
    double took = now_ms() - t0;
    if (rc != PK_EPROTO)
        fail_msg("handshake: %s \"%s\", wanted a refusal", pk_errname(rc),
                 err.msg);
    if (kind != POOL_CURVE_EV_NONE)
        assert_int_equal(last.kind, kind);
    assert_true(pool__curve_ev_failed(last.kind));
    if (strstr(err.msg, what) == NULL)
        fail_msg("message \"%s\" does not mention \"%s\"", err.msg, what);
    snprintf(last_refusal, sizeof last_refusal, "%s", err.msg);
    print_message("refused in %.0f ms: %s\n", took, err.msg);
    assert_true(took < HANDSHAKE_MS);
    /* whatever the client queued never reaches the server */
    assert_int_equal(server_recv(s, QUIET_MS, buf, sizeof buf, NULL, NULL), -1);
}

/* The last refusal's message says CURVE is the difference. */
static void expect_curve_said(void)
{
    if (strstr(last_refusal, "one side uses CURVE and the other does not (a "
                             "key missing, or --insecure on one side "
                             "only)") == NULL &&
        strstr(last_refusal, "it may want CURVE keys, and we use none") ==
            NULL &&
        strstr(last_refusal, "or a server without CURVE?") == NULL)
        fail_msg("\"%s\" does not say that CURVE is missing", last_refusal);
}

/* A client the server must refuse, and what the client must be told. */
typedef struct refusal {
    int plain_server;      /* the server has no CURVE (an insecure one) */
    int stop_zap;          /* the server's ZAP handler is gone */
    const char *pair;      /* the client's pair in cli/, NULL: no CURVE */
    int wrong_server_key;  /* the client trusts another server key */
    pool__curve_ev_t kind; /* the failure (NONE: any, it is a race) */
    const char *what;      /* in the client's message */
    int says_curve;        /* the message says CURVE is the difference */
} refusal_t;

/* Runs r against fresh directories; *s and *c stay up for more checks
 * (end_refusal ends them).  Nothing the client sent reaches the server. */
static void run_refusal(const refusal_t *r, server_t *s, client_t *c)
{
    const char *srv, *cli;
    char other[41], sec[41];

    make_tmpdir();
    two_dirs(&srv, &cli);
    keygen(cli, "stranger", NULL); /* not in srv */
    server_start(s, r->plain_server ? NULL : srv);
    if (r->stop_zap)
        pool__zap_stop(&s->zap);
    assert_int_equal(zmq_curve_keypair(other, sec), 0);
    client_start(c, r->pair != NULL ? cli : NULL, r->pair,
                 r->wrong_server_key ? other : NULL, s->ep);
    expect_refused(s, c, r->kind, r->what);
    if (r->says_curve)
        expect_curve_said();
    if (s->zap != NULL) {
        pool__zap_stats_t st;
        pool__zap_stats(s->zap, &st);
        assert_int_equal(st.allowed, 0);
    }
}

static void end_refusal(server_t *s, client_t *c)
{
    client_stop(c);
    server_stop(s);
}

static void test_unlisted_key_refused(void **state)
{
    (void)state;
    server_t s;
    client_t c;
    char stranger[POOL_CURVE_Z85_LEN + 1];
    pk_error_t err;
    const refusal_t r = {0,
                         0,
                         "stranger",
                         0,
                         POOL_CURVE_EV_REFUSED,
                         "the master refused our key: not allow-listed (ZAP "
                         "status 400 from tcp://127.0.0.1:",
                         0};

    run_refusal(&r, &s, &c);
    assert_int_equal(
        pool__curve_read_key(path_in("cli/stranger.pub"), stranger, NULL, &err),
        PK_OK);
    pool__zap_stats_t st;
    pool__zap_stats(s.zap, &st);
    assert_true(st.refused >= 1);
    zap_log_t l = log_now(&s.log);
    assert_int_equal(l.last_status, 400);
    assert_string_equal(l.who, stranger);
    assert_non_null(strstr(l.reason, "is not allow-listed"));
    end_refusal(&s, &c);
}

/* The server sees the mismatch and hangs up: whether the client reads the
 * server's greeting first (PROTOCOL) or not (DROPPED) is a race. */
static void test_client_without_key_refused(void **state)
{
    (void)state;
    server_t s;
    client_t c;
    const refusal_t r = {0,
                         0,
                         NULL,
                         0,
                         POOL_CURVE_EV_NONE,
                         "cannot authenticate with the master at tcp://",
                         1};
    run_refusal(&r, &s, &c);
    end_refusal(&s, &c);
}

static void test_wrong_server_key_refused(void **state)
{
    (void)state;
    server_t s;
    client_t c;
    const refusal_t r = {
        0,
        0,
        "client",
        1,
        POOL_CURVE_EV_NONE,
        "cannot authenticate with the master at tcp://127.0.0.1:",
        0};
    run_refusal(&r, &s, &c); /* allowed key: it never got as far as ZAP */
    end_refusal(&s, &c);
}

/* A CURVE client to a plain tcp server (the "--insecure on one side only"
 * mistake) fails as clearly; two plain sockets talk. */
static void test_insecure_is_separate(void **state)
{
    (void)state;
    server_t s;
    client_t c;
    pool__net_mode_t mode;
    pk_error_t err;
    char buf[16];
    const refusal_t r = {1,
                         0,
                         "client",
                         0,
                         POOL_CURVE_EV_NONE,
                         "cannot authenticate with the master at tcp://",
                         1};

    run_refusal(&r, &s, &c);
    client_stop(&c);
    assert_int_equal(pool__net_mode(s.ep, 1, 0, 1, &mode, &err), PK_OK);
    assert_int_equal(mode, POOL_NET_INSECURE);
    client_start(&c, NULL, NULL, NULL, s.ep);
    assert_int_equal(
        pool__curve_watch_handshake(c.watch, HANDSHAKE_MS, NULL, &err), PK_OK);
    assert_int_equal(server_recv(&s, HANDSHAKE_MS, buf, sizeof buf, NULL, NULL),
                     5);
    end_refusal(&s, &c);
}

/* With the ZAP handler gone, the server refuses everyone (libzmq alone
 * would let every key in). */
static void test_no_handler_refuses_all(void **state)
{
    (void)state;
    server_t s;
    client_t c;
    const refusal_t r = {
        0, 1, "client", 0, POOL_CURVE_EV_NONE, "cannot authenticate", 0};
    run_refusal(&r, &s, &c);
    end_refusal(&s, &c);
}

static void test_setup_refusals(void **state)
{
    (void)state;
    pk_error_t err;
    pool__zap_t *zap = NULL, *zap2 = (void *)1;

    make_tmpdir();
    keygen(path_in("d"), "master", NULL);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    pool__curve_keys_t *pair = load(path_in("d"), "master");
    pool__curve_keys_t *nopair = load(path_in("d"), NULL);

    expect_err(pool__curve_server_setup(sock, pair, NULL, &err), &err,
               PK_EINVAL, "needs a running ZAP handler");
    assert_int_equal(pool__zap_start(ctx, pair, NULL, NULL, NULL, &zap, &err),
                     PK_OK);
    expect_err(pool__curve_server_setup(sock, nopair, zap, &err), &err,
               PK_EINVAL, "no key pair loaded");
    expect_err(pool__curve_client_setup(sock, nopair, pair->public_z85, &err),
               &err, PK_EINVAL, "no key pair loaded");
    expect_err(pool__curve_client_setup(sock, pair, "short", &err), &err,
               PK_EINVAL, "server public key: a key is 40 Z85 characters");
    expect_err(pool__curve_client_setup(sock, pair, NULL, &err), &err,
               PK_EINVAL, "server public key: none given");
    /* one handler per context */
    expect_err(pool__zap_start(ctx, pair, NULL, NULL, NULL, &zap2, &err), &err,
               PK_EINVAL, "already runs in this ZeroMQ context");
    assert_null(zap2);
    pool__zap_stop(&zap);
    assert_null(zap);
    pool__zap_stop(&zap); /* idempotent */
    pool__zap_stop(NULL); /* no-op */
    /* and another may start once it stopped */
    assert_int_equal(
        pool__zap_start(ctx, NULL, "other", NULL, NULL, &zap, &err), PK_OK);
    assert_string_equal(pool__zap_domain(zap), "other");
    pool__zap_stop(&zap);
    expect_err(pool__zap_start(ctx, pair, "", NULL, NULL, &zap, &err), &err,
               PK_EINVAL, "ZAP domain");
    pool__curve_keys_free(&pair);
    pool__curve_keys_free(&nopair);
    zmq_close(sock);
    assert_int_equal(zmq_ctx_term(ctx), 0);
}

/* ---- the ZAP handler against malformed requests ------------------------- */

typedef struct frames {
    int n;
    const void *data[12];
    size_t len[12];
} frames_t;

/* Sends f behind an empty delimiter (as a REQ would) and reads the reply:
 * returns its status (e.g. 200) and copies its frames' text; -1 when no
 * reply came within 2 s. */
static int zap_ask(void *dealer, const frames_t *f, char reply[6][128])
{
    zmq_send(dealer, "", 0, ZMQ_SNDMORE);
    for (int i = 0; i < f->n; i++)
        zmq_send(dealer, f->data[i], f->len[i], i + 1 < f->n ? ZMQ_SNDMORE : 0);
    zmq_pollitem_t it = {dealer, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 2000) != 1)
        return -1;
    int part = -1, more = 1;
    while (more) {
        char b[128];
        int r = zmq_recv(dealer, b, sizeof b - 1, 0);
        assert_true(r >= 0);
        if (r > (int)sizeof b - 1)
            r = sizeof b - 1;
        b[r] = '\0';
        if (part >= 0 && part < 6)
            memcpy(reply[part], b, (size_t)r + 1);
        part++;
        size_t ml = sizeof more;
        zmq_getsockopt(dealer, ZMQ_RCVMORE, &more, &ml);
    }
    assert_int_equal(part, 6); /* version, id, status, text, user, meta */
    assert_string_equal(reply[0], "1.0");
    return atoi(reply[2]);
}

#define FR(s) s, sizeof(s) - 1

static void test_zap_malformed_requests(void **state)
{
    (void)state;
    pk_error_t err;
    pool__zap_t *zap;
    zap_log_t log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    char reply[6][128];
    char pub[41];
    uint8_t key[32], other[32] = {1, 2, 3};
    static uint8_t huge[1 << 20];

    make_tmpdir();
    keygen(path_in("d"), "w1", pub);
    assert_non_null(zmq_z85_decode(key, pub));
    pool__curve_keys_t *k = load(path_in("d"), "w1");
    void *ctx = zmq_ctx_new();
    assert_int_equal(pool__zap_start(ctx, k, NULL, on_zap, &log, &zap, &err),
                     PK_OK);
    pool__curve_keys_free(&k); /* the handler keeps its own copy */
    void *d = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(d, "inproc://zeromq.zap.01"), 0);

    const struct {
        frames_t f;
        int status;
        const char *what;
    } cases[] = {
        {{1, {"1.0"}, {3}}, 500, "1 frames, at least 6 wanted"},
        {{7,
          {"2.0", "7", "picklepool", "a", "", "CURVE", key},
          {3, 1, 10, 1, 0, 5, 32}},
         500,
         "version is not 1.0"},
        {{0 + 1, {""}, {0}}, 500, "version is not 1.0"},
        {{6, {"1.0", "7", "picklepool", "a", "", "CURVE"}, {3, 1, 10, 1, 0, 5}},
         500,
         "got 0 credential frames"},
        {{7,
          {"1.0", "7", "picklepool", "a", "", "CURVE", key},
          {3, 1, 10, 1, 0, 5, 31}},
         500,
         "of another size"},
        {{9,
          {"1.0", "7", "picklepool", "a", "", "CURVE", key, key, key},
          {3, 1, 10, 1, 0, 5, 32, 32, 32}},
         500,
         "got 3 credential frames"},
        {{7,
          {"1.0", "7", "picklepool", "a", "", "CURVE", huge},
          {3, 1, 10, 1, 0, 5, sizeof huge}},
         500,
         "of another size"},
        {{7,
          {"1.0", "7", "elsewhere", "a", "", "CURVE", key},
          {3, 1, 9, 1, 0, 5, 32}},
         400,
         "domain \"elsewhere\" is not \"picklepool\""},
        {{7,
          {"1.0", "7", "pick\x01", "a", "", "CURVE", key},
          {3, 1, 5, 1, 0, 5, 32}},
         400,
         "domain \"pick\\x01\""},
        {{6, {"1.0", "7", "picklepool", "a", "", "NULL"}, {3, 1, 10, 1, 0, 4}},
         400,
         "mechanism \"NULL\" is not allowed"},
        {{8,
          {"1.0", "7", "picklepool", "a", "", "PLAIN", "u", "p"},
          {3, 1, 10, 1, 0, 5, 1, 1}},
         400,
         "mechanism \"PLAIN\" is not allowed"},
        {{7,
          {"1.0", "7", "picklepool", "a", "", "CURVE", other},
          {3, 1, 10, 1, 0, 5, 32}},
         400,
         "is not allow-listed"},
    };
    int n500 = 0, n400 = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = zap_ask(d, &cases[i].f, reply);
        if (st != cases[i].status || strstr(reply[3], cases[i].what) == NULL)
            fail_msg("case %zu: status %d \"%s\", wanted %d \"%s\"", i, st,
                     reply[3], cases[i].status, cases[i].what);
        if (cases[i].f.n >= 2)
            assert_memory_equal(reply[1], "7", 2); /* request id echoed */
        assert_string_equal(reply[4], "");         /* no user id */
        n500 += st == 500;
        n400 += st == 400;
    }
    /* 40 frames: the surplus is dropped, the answer still comes */
    frames_t many = {12, {"1.0", "id", "picklepool", "a", "", "CURVE"}, {0}};
    many.len[0] = 3;
    many.len[1] = 2;
    many.len[2] = 10;
    many.len[3] = 1;
    many.len[5] = 5;
    for (int i = 6; i < 12; i++) {
        many.data[i] = key;
        many.len[i] = 32;
    }
    assert_int_equal(zap_ask(d, &many, reply), 500);
    assert_string_equal(reply[1], "id");
    n500++;
    /* a message without the envelope's delimiter: the REP socket drops
     * it, and no reply comes */
    zmq_send(d, "1.0", 3, 0);
    zmq_pollitem_t it = {d, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 200), 0);

    /* after all that, a good request is served */
    frames_t good = {7,
                     {"1.0", "42", "picklepool", "10.0.0.9", "", "CURVE", key},
                     {3, 2, 10, 8, 0, 5, 32}};
    assert_int_equal(zap_ask(d, &good, reply), 200);
    assert_string_equal(reply[1], "42");
    assert_string_equal(reply[3], "OK");
    assert_string_equal(reply[4], "w1");
    /* metadata: X-Curve-Public = the key */
    assert_int_equal(reply[5][0], 14);
    assert_memory_equal(reply[5] + 1, "X-Curve-Public", 14);
    assert_memory_equal(reply[5] + 19, pub, 40);

    pool__zap_stats_t st;
    pool__zap_stats(zap, &st);
    assert_int_equal(st.allowed, 1);
    assert_int_equal(st.refused, (uint64_t)n400);
    assert_int_equal(st.malformed, (uint64_t)n500);
    zap_log_t l = log_now(&log);
    assert_int_equal(l.calls, 1 + n400 + n500);
    assert_int_equal(l.last_status, 200);
    assert_string_equal(l.who, "w1");

    zmq_close(d);
    pool__zap_stop(&zap);
    assert_int_equal(zmq_ctx_term(ctx), 0);
}

/* ---- the watch when nothing answers ------------------------------------- */

static void test_watch_timeouts(void **state)
{
    (void)state;
    pk_error_t err;
    client_t c;
    pool__curve_event_t last;
    char ep[64];

    make_tmpdir();
    keygen(path_in("d"), "client", NULL);
    char srvpub[41], srvsec[41];
    assert_int_equal(zmq_curve_keypair(srvpub, srvsec), 0);

    /* a port nobody listens on: attempts fail, the time-out says so */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    client_start(&c, path_in("d"), "client", srvpub, ep); /* not listening */
    double t0 = now_ms();
    expect_err(pool__curve_watch_handshake(c.watch, 800, &last, &err), &err,
               PK_ETIMEDOUT, "cannot reach the master at tcp://127.0.0.1:");
    assert_int_equal(last.kind, POOL_CURVE_EV_NONE);
    assert_non_null(strstr(err.msg, "connection attempts failed within"));
    double took = now_ms() - t0;
    assert_true(took >= 700 && took < 3000);
    client_stop(&c);

    /* a listener that accepts and never speaks */
    assert_int_equal(listen(fd, 4), 0);
    client_start(&c, path_in("d"), "client", srvpub, ep);
    expect_err(pool__curve_watch_handshake(c.watch, 800, NULL, &err), &err,
               PK_ETIMEDOUT, "connected to the master at tcp://127.0.0.1:");
    assert_non_null(strstr(err.msg, "but no handshake finished"));
    /* whatever is still queued is no failure, and the queue ends */
    pool__curve_event_t ev;
    do {
        assert_int_equal(pool__curve_watch_next(c.watch, 0, &ev, &err), PK_OK);
        assert_false(pool__curve_ev_failed(ev.kind));
    } while (ev.kind != POOL_CURVE_EV_NONE);
    client_stop(&c);
    close(fd);

    /* describe covers every failure kind */
    static const struct {
        pool__curve_ev_t kind;
        int value;
        const char *what;
    } d[] = {
        {POOL_CURVE_EV_REFUSED, 400, "refused our key: not allow-listed"},
        {POOL_CURVE_EV_AUTH, 300, "could not decide for now"},
        {POOL_CURVE_EV_AUTH, 500, "its authenticator failed (ZAP status 500)"},
        {POOL_CURVE_EV_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC,
         "did not decrypt"},
        {POOL_CURVE_EV_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZAP_BAD_VERSION,
         "malformed answer"},
        {POOL_CURVE_EV_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND,
         "handshake protocol error 0x10000001"},
        {POOL_CURVE_EV_DROPPED, 0, "closed the connection during the CURVE"},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        pool__curve_event_t e = {d[i].kind, 0, d[i].value, 1, "tcp://h:1"};
        char buf[256];
        pool__curve_describe(&e, NULL, buf, sizeof buf);
        if (strstr(buf, d[i].what) == NULL || strstr(buf, "the server") == NULL)
            fail_msg("\"%s\" lacks \"%s\"", buf, d[i].what);
        assert_true(pool__curve_ev_failed(d[i].kind));
    }
    assert_false(pool__curve_ev_failed(POOL_CURVE_EV_OK));
    assert_false(pool__curve_ev_failed(POOL_CURVE_EV_CLOSED));
}

/* Every allocation of load, keygen, the ZAP start and the watch fails in
 * turn: PK_ENOMEM, nothing out, nothing leaked; then each succeeds. */
static void test_allocation_failures(void **state)
{
    (void)state;
    char name[16];
    pk_error_t err;

    make_tmpdir();
    const char *d = path_in("d");
    for (int i = 0; i < 10; i++) { /* past the allow-list's first growth */
        snprintf(name, sizeof name, "h%d", i);
        keygen(d, name, NULL);
    }
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);

    faultsim_install();
    int steps[4] = {0};
    for (int what = 0; what < 4; what++) {
        for (long n = 1;; n++) {
            pool__curve_keys_t *k = (void *)1;
            pool__zap_t *zap = (void *)1;
            pool__curve_watch_t *w = (void *)1;
            pk_err_t rc;
            faultsim_reset(n);
            switch (what) {
            case 0:
                rc = pool__curve_keys_load(d, "h3", &k, &err);
                break;
            case 1:
                snprintf(name, sizeof name, "new%d", (int)n);
                rc = pool__curve_keygen(d, name, 0, NULL, &err);
                break;
            case 2:
                k = NULL;
                faultsim_fail_at(0);
                assert_int_equal(pool__curve_keys_load(d, NULL, &k, &err),
                                 PK_OK);
                faultsim_fail_at(n);
                rc = pool__zap_start(ctx, k, NULL, NULL, NULL, &zap, &err);
                break;
            default:
                rc = pool__curve_watch_open(ctx, sock, NULL, &w, &err);
                break;
            }
            int fired = faultsim_fired();
            faultsim_fail_at(0);
            if (rc == PK_OK) {
                assert_false(fired);
                steps[what] = (int)n;
                if (what == 0 || what == 2)
                    pool__curve_keys_free(&k);
                if (what == 2)
                    pool__zap_stop(&zap);
                if (what == 3)
                    pool__curve_watch_close(&w);
                assert_int_equal(faultsim_live(), 0);
                break;
            }
            assert_true(fired);
            assert_int_equal(rc, PK_ENOMEM);
            assert_int_equal(err.code, PK_ENOMEM);
            if (what == 0)
                assert_null(k);
            if (what == 2) {
                assert_null(zap);
                pool__curve_keys_free(&k);
            }
            if (what == 3)
                assert_null(w);
            assert_int_equal(faultsim_live(), 0);
            assert_true(n < 1000);
        }
    }
    faultsim_remove();
    /* each had allocations to fail (the keygen failures left no file) */
    for (int what = 0; what < 4; what++)
        assert_true(steps[what] > 1);
    pool__curve_keys_t *k = load(d, NULL);
    assert_int_equal(k->nallow, 11); /* h0..h9 and the one keygen made */
    pool__curve_keys_free(&k);
    zmq_close(sock);
    assert_int_equal(zmq_ctx_term(ctx), 0);
}

static const runner_test_t tests[] = {
    RUNNER_TEST(test_endpoint_refusals, 10),
    RUNNER_TEST(test_endpoint_accepted, 10),
    RUNNER_TEST(test_net_mode, 10),
    RUNNER_TEST(test_keygen_files, 20),
    RUNNER_TEST(test_keydir_refusals, 20),
    RUNNER_TEST(test_keys_lookup, 20),
    RUNNER_TEST(test_allowed_key_gets_through, 30),
    RUNNER_TEST(test_unlisted_key_refused, 30),
    RUNNER_TEST(test_client_without_key_refused, 30),
    RUNNER_TEST(test_wrong_server_key_refused, 30),
    RUNNER_TEST(test_insecure_is_separate, 30),
    RUNNER_TEST(test_no_handler_refuses_all, 30),
    RUNNER_TEST(test_setup_refusals, 30),
    RUNNER_TEST(test_zap_malformed_requests, 30),
    RUNNER_TEST(test_watch_timeouts, 30),
    RUNNER_TEST(test_allocation_failures, 60),
};

int main(int argc, char **argv)
{
    return runner_main(argc, argv, tests, RUNNER_COUNT(tests), teardown);
}
