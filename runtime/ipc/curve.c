/*
 * curve.c - CURVE for tcp endpoints (see curve.h): endpoint rules, key files
 * and directories, key generation, the ZAP handler thread, socket set-up and
 * the handshake watch over a socket monitor.
 *
 * Everything a key file, a ZAP request or a monitor frame holds is checked
 * before use: a bad one is an error naming what was wrong (key files) or a
 * refusal (ZAP), never a crash.  Secret keys are wiped from every buffer
 * that held them once they are no longer needed.
 */
#define _GNU_SOURCE
#include "ipc/curve.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <zmq.h>

#include "core/common.h"

/* libzmq 4.3 takes this option (ZMQ_ZAP_ENFORCE_DOMAIN) but declares it only
 * in its draft API; a library that does not know it refuses it with EINVAL,
 * and the ZAP handler that server set-up insists on still guards the door. */
#define ZAP_ENFORCE_DOMAIN_OPT 93
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_KEEP_FRAMES 7 /* version ... one credential */

/* Endpoints shown in messages are cut to this many characters. */
#define SHOW "%.120s"

/* ---- endpoints ----------------------------------------------------------- */

int pool__endpoint_is_tcp(const char *ep)
{
    return ep != NULL && strncmp(ep, "tcp://", 6) == 0;
}

static int host_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static pk_err_t parse_tcp(const char *ep, const char *rest, int for_bind,
                          pool__endpoint_t *out, pk_error_t *err)
{
    char host[256];
    const char *colon;
    size_t hlen;

    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": '[' without ']'", ep);
        hlen = (size_t)(close - rest - 1);
        if (hlen == 0 || hlen >= sizeof host)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": bad IPv6 address", ep);
        memcpy(host, rest + 1, hlen);
        host[hlen] = '\0';
        char *scope = strchr(host, '%');
        char addr[256];
        memcpy(addr, host, hlen + 1);
        if (scope != NULL)
            addr[scope - host] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, addr, &a6) != 1)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW
                           "\": \"%s\" is not an IPv6 address",
                           ep, host);
        colon = close + 1;
        if (*colon != ':')
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": wants tcp://[ADDRESS]:PORT",
                           ep);
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL)
            return pk__err(
                err, PK_EINVAL,
                "endpoint \"" SHOW "\": no port (wants tcp://HOST:PORT)", ep);
        hlen = (size_t)(colon - rest);
        if (hlen == 0)
            return pk__err(
                err, PK_EINVAL,
                "endpoint \"" SHOW "\": no host (wants tcp://HOST:PORT)", ep);
        if (hlen > 253)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": host name longer than "
                           "253 characters",
                           ep);
        memcpy(host, rest, hlen);
        host[hlen] = '\0';
        if (strcmp(host, "*") == 0) {
            if (!for_bind)
                return pk__err(err, PK_EINVAL,
                               "endpoint \"" SHOW
                               "\": cannot connect to host '*' (it means "
                               "every interface, for binding)",
                               ep);
        } else {
            for (size_t i = 0; i < hlen; i++)
                if (!host_char((unsigned char)host[i]))
                    return pk__err(err, PK_EINVAL,
                                   "endpoint \"" SHOW
                                   "\": character '%c' in host \"%s\"",
                                   ep, host[i], host);
        }
    }

    const char *port = colon + 1;
    long pn;
    if (strcmp(port, "*") == 0) {
        pn = 0;
    } else {
        char *end;
        if (port[0] < '0' || port[0] > '9')
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": port \"%.16s\" is not "
                           "a number",
                           ep, port);
        errno = 0;
        pn = strtol(port, &end, 10);
        if (errno != 0 || *end != '\0' || pn > 65535)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": port \"%.16s\" is not "
                           "a number from 1 to 65535",
                           ep, port);
    }
    if (pn == 0 && !for_bind)
        return pk__err(err, PK_EINVAL,
                       "endpoint \"" SHOW "\": cannot connect to port %s "
                       "(it asks for any free port, for binding)",
                       ep, port);
    if (out != NULL) {
        out->kind = POOL_EP_TCP;
        memcpy(out->host, host, hlen + 1);
        out->port = (int)pn;
    }
    return PK_OK;
}

pk_err_t pool__endpoint_parse(const char *ep, int for_bind,
                              pool__endpoint_t *out, pk_error_t *err)
{
    if (ep == NULL || ep[0] == '\0')
        return pk__err(err, PK_EINVAL, "empty endpoint");
    const char *sep = strstr(ep, "://");
    if (sep == NULL)
        return pk__err(err, PK_EINVAL,
                       "\"" SHOW "\" is not an endpoint (wants "
                       "tcp://HOST:PORT, ipc://PATH or inproc://NAME)",
                       ep);
    const char *rest = sep + 3;
    size_t slen = (size_t)(sep - ep);

    if (slen == 3 && memcmp(ep, "tcp", 3) == 0)
        return parse_tcp(ep, rest, for_bind, out, err);
    if (slen == 3 && memcmp(ep, "ipc", 3) == 0) {
        struct sockaddr_un sun;
        if (rest[0] == '\0' || (rest[0] == '@' && rest[1] == '\0'))
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": no socket path", ep);
        if (strcmp(rest, "*") == 0 && !for_bind)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": cannot connect to "
                           "ipc://* (it asks for a new path, for binding)",
                           ep);
        if (strlen(rest) >= sizeof sun.sun_path)
            return pk__err(err, PK_EINVAL,
                           "endpoint \"" SHOW "\": socket path longer "
                           "than %zu bytes",
                           ep, sizeof sun.sun_path - 1);
        if (out != NULL) {
            out->kind = POOL_EP_IPC;
            out->host[0] = '\0';
            out->port = 0;
        }
        return PK_OK;
    }
    if (slen == 6 && memcmp(ep, "inproc", 6) == 0) {
        if (rest[0] == '\0')
            return pk__err(err, PK_EINVAL, "endpoint \"" SHOW "\": no name",
                           ep);
        if (out != NULL) {
            out->kind = POOL_EP_INPROC;
            out->host[0] = '\0';
            out->port = 0;
        }
        return PK_OK;
    }
    return pk__err(err, PK_EINVAL,
                   "endpoint \"" SHOW "\": unsupported transport \"%.*s\" "
                   "(use tcp://, ipc:// or inproc://)",
                   ep, (int)(slen > 16 ? 16 : slen), ep);
}

pk_err_t pool__net_mode(const char *ep, int for_bind, int have_keys,
                        int insecure, pool__net_mode_t *mode, pk_error_t *err)
{
    pool__endpoint_t e;
    pk_err_t rc = pool__endpoint_parse(ep, for_bind, &e, err);
    if (rc != PK_OK)
        return rc;
    if (e.kind != POOL_EP_TCP) {
        if (have_keys || insecure)
            return pk__err(
                err, PK_EINVAL,
                "endpoint \"" SHOW "\": %s only for tcp:// "
                "endpoints (ipc:// and inproc:// stay on this "
                "machine)",
                ep, have_keys ? "CURVE keys are" : "--insecure is meant");
        *mode = POOL_NET_LOCAL;
        return PK_OK;
    }
    if (have_keys && insecure)
        return pk__err(err, PK_EINVAL,
                       "endpoint \"" SHOW "\": CURVE keys and --insecure "
                       "exclude each other",
                       ep);
    if (!have_keys && !insecure)
        return pk__err(err, PK_EINVAL,
                       "endpoint \"" SHOW "\": tcp needs CURVE keys (a key "
                       "directory: --keys DIR) or, for plain text on a "
                       "network you trust, an explicit --insecure",
                       ep);
    *mode = have_keys ? POOL_NET_CURVE : POOL_NET_INSECURE;
    return PK_OK;
}

/* ---- key files ----------------------------------------------------------- */

int pool__curve_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > POOL_CURVE_NAME_MAX || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!host_char((unsigned char)name[i]))
            return 0;
    return 1;
}

int pool__curve_available(void)
{
    return zmq_has("curve") != 0;
}

static int z85_char(int c)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz"
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   ".-:+=^!/*?&<>()[]{}@%$#";
    return c != '\0' && strchr(alphabet, c) != NULL;
}

/* Checks that z85 is 40 Z85 characters that decode to a key (into bin, may
 * be NULL).  Returns 0, or -1 with why[] saying what is wrong. */
static int z85_check(const char *z85, size_t len, uint8_t *bin, char *why,
                     size_t whysize)
{
    uint8_t tmp[POOL_CURVE_KEY_BYTES];
    char s[POOL_CURVE_Z85_LEN + 1];

    if (len != POOL_CURVE_Z85_LEN) {
        snprintf(why, whysize, "a key is %d Z85 characters, this one has %zu",
                 POOL_CURVE_Z85_LEN, len);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if (!z85_char((unsigned char)z85[i])) {
            unsigned char c = (unsigned char)z85[i];
            if (c >= 0x21 && c < 0x7f)
                snprintf(why, whysize, "character '%c' is not Z85", c);
            else
                snprintf(why, whysize, "byte 0x%02x is not Z85", c);
            return -1;
        }
    memcpy(s, z85, len);
    s[len] = '\0';
    uint8_t *ok = zmq_z85_decode(bin != NULL ? bin : tmp, s);
    explicit_bzero(s, sizeof s);
    explicit_bzero(tmp, sizeof tmp);
    if (ok == NULL) {
        snprintf(why, whysize, "not a Z85 encoding (a group is out of range)");
        return -1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Owner and mode rules shared by directories and files: returns PK_OK or
 * PK_EINVAL naming `path`. */
static pk_err_t check_owner_mode(const char *path, const struct stat *st,
                                 int secret, pk_error_t *err)
{
    unsigned mode = (unsigned)(st->st_mode & 07777);
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return pk__err(err, PK_EINVAL,
                       "%s: owned by uid %u, not by this user (uid %u) or "
                       "root; refusing to trust it",
                       path, (unsigned)st->st_uid, (unsigned)geteuid());
    if (S_ISDIR(st->st_mode) && (mode & 022))
        return pk__err(err, PK_EINVAL,
                       "%s: key directory writable by group or others "
                       "(mode %04o): whoever can write there can add a key "
                       "to the allow-list; run chmod go-w %s",
                       path, mode, path);
    if (secret && (mode & 077))
        return pk__err(err, PK_EINVAL,
                       "%s: secret key open to group or others (mode %04o); "
                       "run chmod 600 %s",
                       path, mode, path);
    if (mode & 022)
        return pk__err(err, PK_EINVAL,
                       "%s: key file writable by group or others (mode "
                       "%04o); run chmod go-w %s",
                       path, mode, path);
    return PK_OK;
}

pk_err_t pool__curve_check_dir(const char *dir, pk_error_t *err)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return pk__err_sys(err, PK_ESYS, errno, "key directory %s", dir);
    if (!S_ISDIR(st.st_mode))
        return pk__err(err, PK_EINVAL, "%s: not a directory", dir);
    return check_owner_mode(dir, &st, 0, err);
}

/* Finds the one key line of text[0..len).  Returns PK_OK with *key and *klen,
 * or PK_EINVAL naming path. */
static pk_err_t find_key_line(const char *path, const char *text, size_t len,
                              const char **key, size_t *klen, pk_error_t *err)
{
    size_t line = 0, found_line = 0;
    *key = NULL;
    *klen = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        size_t a = i, b = j;
        line++;
        while (a < b && (text[a] == ' ' || text[a] == '\t'))
            a++;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' ||
                         text[b - 1] == '\r'))
            b--;
        /* No key starts with '#': a Z85 group's first digit is at most
         * '%' (85^5 > 2^32), so a '#' line is always a comment. */
        int comment = a < b && text[a] == '#';
        if (a < b && !comment) {
            if (*key != NULL)
                return pk__err(err, PK_EINVAL,
                               "%s: line %zu: a second key (the first is "
                               "on line %zu); a key file holds one",
                               path, line, found_line);
            *key = text + a;
            *klen = b - a;
            found_line = line;
        }
        i = j + 1;
    }
    if (*key == NULL)
        return pk__err(err, PK_EINVAL,
                       "%s: no key in it (only comments or blank lines)", path);
    char why[96];
    if (z85_check(*key, *klen, NULL, why, sizeof why) != 0)
        return pk__err(err, PK_EINVAL, "%s: line %zu: %s", path, found_line,
                       why);
    return PK_OK;
}

pk_err_t pool__curve_read_key(const char *path, char *z85, uint8_t *bin,
                              pk_error_t *err)
{
    char buf[POOL_CURVE_FILE_MAX + 1];
    size_t len = 0;
    struct stat st;
    pk_err_t rc;
    int secret = ends_with(path, ".key");

    z85[0] = '\0';
    /* O_NONBLOCK: a FIFO put there must not hang the open. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return pk__err_sys(err, PK_ESYS, errno, "%s", path);
    if (fstat(fd, &st) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "%s", path);
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return pk__err(err, PK_EINVAL, "%s: not a regular file", path);
    }
    rc = check_owner_mode(path, &st, secret, err);
    if (rc == PK_OK && st.st_size > POOL_CURVE_FILE_MAX)
        rc =
            pk__err(err, PK_EINVAL, "%s: %lld bytes, more than a key file's %d",
                    path, (long long)st.st_size, POOL_CURVE_FILE_MAX);
    while (rc == PK_OK && len < sizeof buf) {
        ssize_t got = read(fd, buf + len, sizeof buf - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            rc = pk__err_sys(err, PK_ESYS, errno, "%s", path);
        else if (got == 0)
            break;
        else
            len += (size_t)got;
    }
    close(fd);
    if (rc == PK_OK && len > POOL_CURVE_FILE_MAX)
        rc = pk__err(err, PK_EINVAL, "%s: more than a key file's %d bytes",
                     path, POOL_CURVE_FILE_MAX);
    const char *key = NULL;
    size_t klen = 0;
    if (rc == PK_OK)
        rc = find_key_line(path, buf, len, &key, &klen, err);
    if (rc == PK_OK) {
        memcpy(z85, key, klen);
        z85[klen] = '\0';
        if (bin != NULL && zmq_z85_decode(bin, z85) == NULL)
            rc = pk__err(err, PK_EINVAL, "%s: not a Z85 key", path);
    }
    explicit_bzero(buf, sizeof buf);
    if (rc != PK_OK) {
        explicit_bzero(z85, POOL_CURVE_Z85_LEN + 1);
        if (bin != NULL)
            explicit_bzero(bin, POOL_CURVE_KEY_BYTES);
    }
    return rc;
}

static char *join_path(const char *dir, const char *name, const char *suffix)
{
    size_t n = strlen(dir) + 1 + strlen(name) + strlen(suffix) + 1;
    char *p = pk__malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s%s", dir, name, suffix);
    return p;
}

static int cmp_pub(const void *a, const void *b)
{
    const pool__curve_pub_t *x = a, *y = b;
    int c = memcmp(x->key, y->key, POOL_CURVE_KEY_BYTES);
    return c != 0 ? c : strcmp(x->name, y->name);
}

/* Loads the own pair NAME.key (and NAME.pub when present) into k. */
static pk_err_t load_pair(pool__curve_keys_t *k, const char *dir,
                          const char *name, pk_error_t *err)
{
    char pub[POOL_CURVE_Z85_LEN + 1];
    char *kp = join_path(dir, name, ".key");
    char *pp = join_path(dir, name, ".pub");
    pk_err_t rc = PK_OK;

    if (kp == NULL || pp == NULL) {
        rc = pk__err(err, PK_ENOMEM, "out of memory");
        goto out;
    }
    rc = pool__curve_read_key(kp, k->secret_z85, NULL, err);
    if (rc == PK_ESYS && err != NULL && err->sys_errno == ENOENT)
        rc = pk__err_sys(err, PK_ESYS, ENOENT,
                         "%s: no secret key \"%s\" (make one with picklepool "
                         "keygen --name %s %s)",
                         kp, name, name, dir);
    if (rc != PK_OK)
        goto out;
    if (zmq_curve_public(k->public_z85, k->secret_z85) != 0) {
        rc = pk__err(err, PK_EINVAL, "%s: not a CURVE secret key", kp);
        goto out;
    }
    snprintf(k->name, sizeof k->name, "%s", name);
    struct stat st;
    if (stat(pp, &st) != 0) {
        if (errno != ENOENT)
            rc = pk__err_sys(err, PK_ESYS, errno, "%s", pp);
        goto out; /* a pair's .pub is optional */
    }
    rc = pool__curve_read_key(pp, pub, NULL, err);
    if (rc == PK_OK && strcmp(pub, k->public_z85) != 0)
        rc = pk__err(err, PK_EINVAL,
                     "%s does not match %s (whose public key is %s)", pp, kp,
                     k->public_z85);
out:
    pk__free(kp);
    pk__free(pp);
    return rc;
}

/* Appends every NAME.pub of dir to k's allow-list. */
static pk_err_t load_allow(pool__curve_keys_t *k, const char *dir,
                           pk_error_t *err)
{
    DIR *d = opendir(dir);
    size_t cap = 0;
    pk_err_t rc = PK_OK;

    if (d == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "key directory %s", dir);
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0)
                rc = pk__err_sys(err, PK_ESYS, errno, "key directory %s", dir);
            break;
        }
        const char *n = e->d_name;
        if (n[0] == '.' || !ends_with(n, ".pub"))
            continue;
        size_t stem = strlen(n) - 4;
        char name[POOL_CURVE_NAME_MAX + 1];
        if (stem > POOL_CURVE_NAME_MAX) {
            rc = pk__err(err, PK_EINVAL,
                         "%s/%.80s: a key name has at most %d characters", dir,
                         n, POOL_CURVE_NAME_MAX);
            break;
        }
        memcpy(name, n, stem);
        name[stem] = '\0';
        if (!pool__curve_name_ok(name)) {
            rc = pk__err(err, PK_EINVAL,
                         "%s/%s: a public key file is NAME.pub, NAME made "
                         "of letters, digits, '.', '_' and '-'",
                         dir, n);
            break;
        }
        if (k->nallow == POOL_CURVE_MAX_KEYS) {
            rc = pk__err(err, PK_ELIMIT,
                         "key directory %s: more than %d public keys", dir,
                         POOL_CURVE_MAX_KEYS);
            break;
        }
        if (k->nallow == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            pool__curve_pub_t *a =
                pk__realloc(k->allow, ncap * sizeof *k->allow);
            if (a == NULL) {
                rc = pk__err(err, PK_ENOMEM, "out of memory");
                break;
            }
            k->allow = a;
            cap = ncap;
        }
        pool__curve_pub_t *p = &k->allow[k->nallow];
        char *path = join_path(dir, name, ".pub");
        if (path == NULL) {
            rc = pk__err(err, PK_ENOMEM, "out of memory");
            break;
        }
        rc = pool__curve_read_key(path, p->z85, p->key, err);
        pk__free(path);
        if (rc != PK_OK)
            break;
        memcpy(p->name, name, stem + 1);
        k->nallow++;
    }
    closedir(d);
    if (rc == PK_OK && k->nallow > 1)
        qsort(k->allow, k->nallow, sizeof *k->allow, cmp_pub);
    return rc;
}

pk_err_t pool__curve_keys_load(const char *dir, const char *name,
                               pool__curve_keys_t **out, pk_error_t *err)
{
    pk_err_t rc;
    *out = NULL;
    if (!pool__curve_available())
        return pk__err(err, PK_EUNSUPPORTED,
                       "this libzmq was built without CURVE (libsodium)");
    if (dir == NULL || dir[0] == '\0')
        return pk__err(err, PK_EINVAL, "no key directory given");
    if (name != NULL && !pool__curve_name_ok(name))
        return pk__err(err, PK_EINVAL,
                       "key name \"%.80s\": wants 1 to %d letters, digits, "
                       "'.', '_' or '-', not starting with '.'",
                       name, POOL_CURVE_NAME_MAX);
    rc = pool__curve_check_dir(dir, err);
    if (rc != PK_OK)
        return rc;
    pool__curve_keys_t *k = pk__calloc(1, sizeof *k);
    if (k == NULL || (k->dir = pk__strdup(dir)) == NULL) {
        pk__free(k);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    rc = name != NULL ? load_pair(k, dir, name, err) : PK_OK;
    if (rc == PK_OK)
        rc = load_allow(k, dir, err);
    if (rc != PK_OK) {
        pool__curve_keys_free(&k);
        return rc;
    }
    *out = k;
    return PK_OK;
}

void pool__curve_keys_free(pool__curve_keys_t **kp)
{
    if (kp == NULL || *kp == NULL)
        return;
    pool__curve_keys_t *k = *kp;
    explicit_bzero(k->secret_z85, sizeof k->secret_z85);
    pk__free(k->dir);
    pk__free(k->allow);
    pk__free(k);
    *kp = NULL;
}

const pool__curve_pub_t *pool__curve_keys_find(const pool__curve_keys_t *k,
                                               const char *name)
{
    if (k == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < k->nallow; i++)
        if (strcmp(k->allow[i].name, name) == 0)
            return &k->allow[i];
    return NULL;
}

static int cmp_key_only(const void *key, const void *elem)
{
    return memcmp(key, ((const pool__curve_pub_t *)elem)->key,
                  POOL_CURVE_KEY_BYTES);
}

const pool__curve_pub_t *pool__curve_keys_allowed(const pool__curve_keys_t *k,
                                                  const uint8_t *key)
{
    if (k == NULL || k->nallow == 0)
        return NULL;
    return bsearch(key, k->allow, k->nallow, sizeof *k->allow, cmp_key_only);
}

/* ---- key generation ------------------------------------------------------ */

/* Writes text to a new temporary file in dir with `mode`; its name goes to
 * *tmp (owned).  Returns PK_OK or PK_ESYS with nothing left behind. */
static pk_err_t write_tmp(const char *dir, const char *text, mode_t mode,
                          char **tmp, pk_error_t *err)
{
    char *path = join_path(dir, ".keygen.", "XXXXXX");
    size_t len = strlen(text), done = 0;
    pk_err_t rc = PK_OK;

    *tmp = NULL;
    if (path == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    int fd = mkostemp(path, O_CLOEXEC); /* mode 0600 */
    if (fd < 0) {
        rc =
            pk__err_sys(err, PK_ESYS, errno, "cannot create a file in %s", dir);
        pk__free(path);
        return rc;
    }
    if (fchmod(fd, mode) != 0)
        rc = pk__err_sys(err, PK_ESYS, errno, "chmod %s", path);
    while (rc == PK_OK && done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            rc = pk__err_sys(err, PK_ESYS, errno, "write %s", path);
        else
            done += (size_t)w;
    }
    if (rc == PK_OK && fsync(fd) != 0)
        rc = pk__err_sys(err, PK_ESYS, errno, "fsync %s", path);
    if (close(fd) != 0 && rc == PK_OK)
        rc = pk__err_sys(err, PK_ESYS, errno, "close %s", path);
    if (rc != PK_OK) {
        unlink(path);
        pk__free(path);
        return rc;
    }
    *tmp = path;
    return PK_OK;
}

/* Writes the key file of pair `name` holding `z85` (the secret key when
 * `secret`, mode 0600; else the public one, 0644) as a temporary in dir. */
static pk_err_t write_key_tmp(const char *dir, const char *name,
                              const char *z85, int secret, char **tmp,
                              pk_error_t *err)
{
    char text[512];
    snprintf(text, sizeof text, "# picklepool CURVE %s key \"%s\": %s\n%s\n",
             secret ? "secret" : "public", name,
             secret ? "keep it on this machine, readable by its owner only"
                    : "copy it to the peers that must trust it",
             z85);
    pk_err_t rc = write_tmp(dir, text, secret ? 0600 : 0644, tmp, err);
    explicit_bzero(text, sizeof text);
    return rc;
}

/* Puts tmp at final: without force only where nothing is (link fails on
 * an existing name, so two keygens cannot both win). */
static pk_err_t place(const char *tmp, const char *final, int force,
                      pk_error_t *err)
{
    if (force) {
        if (rename(tmp, final) != 0)
            return pk__err_sys(err, PK_ESYS, errno, "rename to %s", final);
        return PK_OK;
    }
    if (link(tmp, final) != 0) {
        if (errno == EEXIST)
            return pk__err(err, PK_EINVAL,
                           "%s already exists (--force replaces it)", final);
        return pk__err_sys(err, PK_ESYS, errno, "link to %s", final);
    }
    unlink(tmp);
    return PK_OK;
}

pk_err_t pool__curve_keygen(const char *dir, const char *name, int force,
                            char *public_z85, pk_error_t *err)
{
    char pub[POOL_CURVE_Z85_LEN + 1], sec[POOL_CURVE_Z85_LEN + 1];
    char *kp = NULL, *pp = NULL, *ktmp = NULL, *ptmp = NULL;
    int placed_key = 0;
    pk_err_t rc;

    if (!pool__curve_available())
        return pk__err(err, PK_EUNSUPPORTED,
                       "this libzmq was built without CURVE (libsodium)");
    if (!pool__curve_name_ok(name))
        return pk__err(err, PK_EINVAL,
                       "key name \"%.80s\": wants 1 to %d letters, digits, "
                       "'.', '_' or '-', not starting with '.'",
                       name != NULL ? name : "", POOL_CURVE_NAME_MAX);
    if (dir == NULL || dir[0] == '\0')
        return pk__err(err, PK_EINVAL, "no key directory given");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return pk__err_sys(err, PK_ESYS, errno, "cannot create %s", dir);
    rc = pool__curve_check_dir(dir, err);
    if (rc != PK_OK)
        return rc;
    kp = join_path(dir, name, ".key");
    pp = join_path(dir, name, ".pub");
    if (kp == NULL || pp == NULL) {
        rc = pk__err(err, PK_ENOMEM, "out of memory");
        goto out;
    }
    if (!force) {
        struct stat st;
        const char *clash = lstat(kp, &st) == 0   ? kp
                            : lstat(pp, &st) == 0 ? pp
                                                  : NULL;
        if (clash != NULL) {
            rc = pk__err(err, PK_EINVAL,
                         "%s already exists (--force replaces it)", clash);
            goto out;
        }
    }
    if (zmq_curve_keypair(pub, sec) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "zmq_curve_keypair");
        goto out;
    }
    rc = write_key_tmp(dir, name, sec, 1, &ktmp, err);
    if (rc != PK_OK)
        goto out;
    rc = write_key_tmp(dir, name, pub, 0, &ptmp, err);
    if (rc != PK_OK)
        goto out;
    rc = place(ktmp, kp, force, err);
    if (rc != PK_OK)
        goto out;
    placed_key = 1;
    pk__free(ktmp);
    ktmp = NULL;
    rc = place(ptmp, pp, force, err);
    if (rc != PK_OK)
        goto out;
    pk__free(ptmp);
    ptmp = NULL;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the renames reach the disk too */
        close(dfd);
    }
    if (public_z85 != NULL)
        memcpy(public_z85, pub, sizeof pub);
out:
    if (rc != PK_OK && placed_key)
        unlink(kp); /* never a secret key without its public one */
    if (ktmp != NULL)
        unlink(ktmp);
    if (ptmp != NULL)
        unlink(ptmp);
    explicit_bzero(sec, sizeof sec);
    pk__free(ktmp);
    pk__free(ptmp);
    pk__free(kp);
    pk__free(pp);
    return rc;
}

/* ---- the ZAP handler ----------------------------------------------------- */

struct pool__zap {
    void *sock; /* REP, used by the thread only once it runs */
    int efd;    /* eventfd: stop */
    pthread_t thread;
    pool__curve_keys_t allow; /* the allow-list only (no secret) */
    char domain[256];
    pool__zap_log_fn log;
    void *log_arg;
    _Atomic uint64_t n_allowed, n_refused, n_malformed;
};

/* Copies b[0..n) as printable text into out (size > 0). */
static void printable(const void *b, size_t n, char *out, size_t size)
{
    const unsigned char *s = b;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < size; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f)
            out[o++] = (char)s[i];
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", s[i]);
    }
    out[o] = '\0';
}

static int frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/* One ZAP reply: version, request id, status, text, user id, metadata. */
static void zap_reply(void *sock, zmq_msg_t *reqid, const char *status,
                      const char *text, const char *user, const void *meta,
                      size_t metalen)
{
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    if (reqid != NULL)
        zmq_send(sock, zmq_msg_data(reqid), zmq_msg_size(reqid), ZMQ_SNDMORE);
    else
        zmq_send(sock, "", 0, ZMQ_SNDMORE);
    zmq_send(sock, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(sock, meta, metalen, 0);
}

/* Decides on one request of `n` frames (the first `kept` in f[]).  Fills
 * the answer; returns the status (200, 400, 500). */
static int zap_decide(pool__zap_t *z, zmq_msg_t *f, size_t kept, size_t n,
                      const pool__curve_pub_t **who, char *why, size_t wsize)
{
    *who = NULL;
    if (n < 1 || !frame_is(&f[0], "1.0")) {
        snprintf(why, wsize, "malformed ZAP request: version is not 1.0");
        return 500;
    }
    if (n < 6) {
        snprintf(why, wsize,
                 "malformed ZAP request: %zu frames, at least 6 wanted", n);
        return 500;
    }
    size_t dl = zmq_msg_size(&f[2]);
    if (dl != strlen(z->domain) || memcmp(zmq_msg_data(&f[2]), z->domain, dl)) {
        char d[64];
        printable(zmq_msg_data(&f[2]), dl, d, sizeof d);
        snprintf(why, wsize, "domain \"%s\" is not \"%.60s\"", d, z->domain);
        return 400;
    }
    if (!frame_is(&f[5], "CURVE")) {
        char m[32];
        printable(zmq_msg_data(&f[5]), zmq_msg_size(&f[5]), m, sizeof m);
        snprintf(why, wsize, "mechanism \"%s\" is not allowed (CURVE only)", m);
        return 400;
    }
    if (n != 7 || kept < 7 || zmq_msg_size(&f[6]) != POOL_CURVE_KEY_BYTES) {
        snprintf(why, wsize,
                 "malformed ZAP request: a CURVE request has one 32-byte "
                 "key (got %zu credential frames%s)",
                 n - 6, n == 7 ? " of another size" : "");
        return 500;
    }
    *who = pool__curve_keys_allowed(&z->allow, zmq_msg_data(&f[6]));
    if (*who == NULL) {
        char z85[POOL_CURVE_Z85_LEN + 1];
        zmq_z85_encode(z85, zmq_msg_data(&f[6]), POOL_CURVE_KEY_BYTES);
        snprintf(why, wsize, "key %s is not allow-listed", z85);
        return 400;
    }
    snprintf(why, wsize, "key \"%s\" is allow-listed", (*who)->name);
    return 200;
}

/* Serves every request waiting on the socket; returns -1 when the socket
 * fails for good (the context is ending). */
static int zap_serve(pool__zap_t *z)
{
    for (;;) {
        zmq_msg_t f[ZAP_KEEP_FRAMES];
        size_t n = 0, kept = 0;
        int more = 1;

        while (more) {
            zmq_msg_t scratch;
            zmq_msg_t *m = kept < ZAP_KEEP_FRAMES ? &f[kept] : &scratch;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, z->sock, ZMQ_DONTWAIT) < 0) {
                int e = errno;
                zmq_msg_close(m);
                if (n == 0) {
                    if (e == EAGAIN || e == EINTR)
                        return 0;
                    return -1;
                }
                break; /* a message's parts arrive together: not reached */
            }
            more = zmq_msg_more(m);
            if (m == &scratch)
                zmq_msg_close(m);
            else
                kept++;
            n++;
        }

        const pool__curve_pub_t *who;
        char why[160], addr[64], user[POOL_CURVE_Z85_LEN + 1] = "";
        int status = zap_decide(z, f, kept, n, &who, why, sizeof why);
        addr[0] = '\0';
        if (kept > 3)
            printable(zmq_msg_data(&f[3]), zmq_msg_size(&f[3]), addr,
                      sizeof addr);
        /* Count and log before answering, so that whoever sees the answer
         * (the handshake, a test) also sees the count. */
        if (status != 200 && kept == 7 &&
            zmq_msg_size(&f[6]) == POOL_CURVE_KEY_BYTES)
            zmq_z85_encode(user, zmq_msg_data(&f[6]), POOL_CURVE_KEY_BYTES);
        atomic_fetch_add(status == 200   ? &z->n_allowed
                         : status == 400 ? &z->n_refused
                                         : &z->n_malformed,
                         1);
        if (z->log != NULL)
            z->log(z->log_arg, status, addr, who != NULL ? who->name : user,
                   why);
        if (status == 200) {
            /* metadata: the property X-Curve-Public = the key's Z85 */
            uint8_t meta[1 + 14 + 4 + POOL_CURVE_Z85_LEN];
            meta[0] = 14;
            memcpy(meta + 1, "X-Curve-Public", 14);
            meta[15] = meta[16] = meta[17] = 0;
            meta[18] = POOL_CURVE_Z85_LEN;
            memcpy(meta + 19, who->z85, POOL_CURVE_Z85_LEN);
            zap_reply(z->sock, &f[1], "200", "OK", who->name, meta,
                      sizeof meta);
        } else {
            zap_reply(z->sock, kept > 1 ? &f[1] : NULL,
                      status == 400 ? "400" : "500", why, "", "", 0);
        }
        for (size_t i = 0; i < kept; i++)
            zmq_msg_close(&f[i]);
    }
}

static void *zap_main(void *arg)
{
    pool__zap_t *z = arg;
    for (;;) {
        zmq_pollitem_t it[2] = {{z->sock, 0, ZMQ_POLLIN, 0},
                                {NULL, z->efd, ZMQ_POLLIN, 0}};
        if (zmq_poll(it, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (it[1].revents)
            break;
        if (it[0].revents && zap_serve(z) < 0)
            break;
    }
    /* Unbind first: a close alone frees the name only once the reaper gets
     * to it, and a handler started right after would find it taken. */
    zmq_unbind(z->sock, ZAP_ENDPOINT);
    zmq_close(z->sock); /* this thread's socket, closed by it */
    z->sock = NULL;
    return NULL;
}

pk_err_t pool__zap_start(void *zctx, const pool__curve_keys_t *keys,
                         const char *domain, pool__zap_log_fn log, void *arg,
                         pool__zap_t **out, pk_error_t *err)
{
    pk_err_t rc;
    *out = NULL;
    if (domain == NULL)
        domain = POOL_CURVE_DOMAIN;
    if (domain[0] == '\0' || strlen(domain) > 254)
        return pk__err(err, PK_EINVAL, "a ZAP domain has 1 to 254 characters");
    pool__zap_t *z = pk__calloc(1, sizeof *z);
    if (z == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    z->efd = -1;
    snprintf(z->domain, sizeof z->domain, "%s", domain);
    z->log = log;
    z->log_arg = arg;
    if (keys != NULL && keys->nallow > 0) {
        z->allow.allow = pk__malloc(keys->nallow * sizeof *keys->allow);
        if (z->allow.allow == NULL) {
            rc = pk__err(err, PK_ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(z->allow.allow, keys->allow, keys->nallow * sizeof *keys->allow);
        z->allow.nallow = keys->nallow;
    }
    z->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (z->efd < 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "eventfd");
        goto fail;
    }
    z->sock = zmq_socket(zctx, ZMQ_REP);
    if (z->sock == NULL) {
        rc = pk__err_sys(err, PK_ESYS, errno, "zmq_socket (ZAP handler)");
        goto fail;
    }
    int zero = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(z->sock, ZAP_ENDPOINT) != 0) {
        if (errno == EADDRINUSE)
            rc = pk__err(err, PK_EINVAL,
                         "a ZAP handler already runs in this ZeroMQ "
                         "context (" ZAP_ENDPOINT " is bound)");
        else
            rc = pk__err_sys(err, PK_ESYS, errno, "bind " ZAP_ENDPOINT);
        goto fail;
    }
    /* The thread takes no signal: they belong to the caller's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int terr = pthread_create(&z->thread, NULL, zap_main, z);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (terr != 0) {
        rc = pk__err_sys(err, PK_ESYS, terr, "cannot start the ZAP thread");
        goto fail;
    }
    *out = z;
    return PK_OK;
fail:
    if (z->sock != NULL)
        zmq_close(z->sock);
    if (z->efd >= 0)
        close(z->efd);
    pk__free(z->allow.allow);
    pk__free(z);
    return rc;
}

void pool__zap_stop(pool__zap_t **zp)
{
    if (zp == NULL || *zp == NULL)
        return;
    pool__zap_t *z = *zp;
    uint64_t one = 1;
    while (write(z->efd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    pthread_join(z->thread, NULL);
    close(z->efd);
    pk__free(z->allow.allow);
    pk__free(z);
    *zp = NULL;
}

void pool__zap_stats(const pool__zap_t *z, pool__zap_stats_t *out)
{
    out->allowed = atomic_load(&z->n_allowed);
    out->refused = atomic_load(&z->n_refused);
    out->malformed = atomic_load(&z->n_malformed);
}

const char *pool__zap_domain(const pool__zap_t *z)
{
    return z->domain;
}

/* ---- socket set-up ------------------------------------------------------- */

static pk_err_t setopt(void *sock, int opt, const void *v, size_t len,
                       const char *what, pk_error_t *err)
{
    if (zmq_setsockopt(sock, opt, v, len) != 0)
        return pk__err_sys(err, PK_ESYS, errno, "zmq_setsockopt %s", what);
    return PK_OK;
}

static pk_err_t need_pair(const pool__curve_keys_t *keys, pk_error_t *err)
{
    if (keys == NULL || keys->secret_z85[0] == '\0')
        return pk__err(err, PK_EINVAL,
                       "key directory %s: no key pair loaded (NAME.key)",
                       keys != NULL && keys->dir != NULL ? keys->dir : "-");
    return PK_OK;
}

pk_err_t pool__curve_server_setup(void *sock, const pool__curve_keys_t *keys,
                                  const pool__zap_t *zap, pk_error_t *err)
{
    int one = 1;
    pk_err_t rc = need_pair(keys, err);
    if (rc != PK_OK)
        return rc;
    if (zap == NULL)
        return pk__err(err, PK_EINVAL,
                       "a CURVE server needs a running ZAP handler (without "
                       "one libzmq lets every key in)");
    if ((rc = setopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one,
                     "ZMQ_CURVE_SERVER", err)) != PK_OK ||
        (rc = setopt(sock, ZMQ_CURVE_SECRETKEY, keys->secret_z85,
                     POOL_CURVE_Z85_LEN, "ZMQ_CURVE_SECRETKEY", err)) !=
            PK_OK ||
        (rc = setopt(sock, ZMQ_ZAP_DOMAIN, zap->domain, strlen(zap->domain),
                     "ZMQ_ZAP_DOMAIN", err)) != PK_OK)
        return rc;
    if (zmq_setsockopt(sock, ZAP_ENFORCE_DOMAIN_OPT, &one, sizeof one) != 0 &&
        errno != EINVAL)
        return pk__err_sys(err, PK_ESYS, errno,
                           "zmq_setsockopt ZMQ_ZAP_ENFORCE_DOMAIN");
    return PK_OK;
}

pk_err_t pool__curve_client_setup(void *sock, const pool__curve_keys_t *keys,
                                  const char *server_z85, pk_error_t *err)
{
    char why[96];
    pk_err_t rc = need_pair(keys, err);
    if (rc != PK_OK)
        return rc;
    if (server_z85 == NULL ||
        z85_check(server_z85, strlen(server_z85), NULL, why, sizeof why))
        return pk__err(err, PK_EINVAL, "server public key: %s",
                       server_z85 == NULL ? "none given" : why);
    if ((rc = setopt(sock, ZMQ_CURVE_SERVERKEY, server_z85, POOL_CURVE_Z85_LEN,
                     "ZMQ_CURVE_SERVERKEY", err)) != PK_OK ||
        (rc = setopt(sock, ZMQ_CURVE_PUBLICKEY, keys->public_z85,
                     POOL_CURVE_Z85_LEN, "ZMQ_CURVE_PUBLICKEY", err)) !=
            PK_OK ||
        (rc = setopt(sock, ZMQ_CURVE_SECRETKEY, keys->secret_z85,
                     POOL_CURVE_Z85_LEN, "ZMQ_CURVE_SECRETKEY", err)) != PK_OK)
        return rc;
    return PK_OK;
}

/* ---- the handshake watch ------------------------------------------------- */

struct pool__curve_watch {
    void *sock; /* the watched socket (borrowed) */
    void *pair; /* our end of its monitor */
    char peer[64];
    unsigned retries; /* connection attempts that failed */
    int connected;    /* a tcp connection was made */
    char last_ep[256];
};

int pool__curve_ev_failed(pool__curve_ev_t kind)
{
    return kind == POOL_CURVE_EV_REFUSED || kind == POOL_CURVE_EV_AUTH ||
           kind == POOL_CURVE_EV_PROTOCOL || kind == POOL_CURVE_EV_DROPPED;
}

const char *pool__curve_describe(const pool__curve_event_t *ev,
                                 const char *peer, char *buf, size_t size)
{
    const char *p = peer != NULL ? peer : "the server";
    const char *ep = ev->endpoint[0] != '\0' ? ev->endpoint : "?";

    switch (ev->kind) {
    case POOL_CURVE_EV_REFUSED:
        snprintf(buf, size,
                 "%s refused our key: not allow-listed (ZAP status 400 from "
                 "%s)",
                 p, ep);
        break;
    case POOL_CURVE_EV_AUTH:
        if (ev->value == 300)
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: its authenticator "
                     "could not decide for now (ZAP status 300)",
                     p, ep);
        else
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: its authenticator "
                     "failed (ZAP status %d)",
                     p, ep, ev->value);
        break;
    case POOL_CURVE_EV_PROTOCOL:
        if (ev->value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: one side uses CURVE "
                     "and the other does not (a key missing, or --insecure "
                     "on one side only)",
                     p, ep);
        else if (ev->value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC ||
                 ev->value == ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE)
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: the CURVE "
                     "handshake did not decrypt (a wrong server public "
                     "key?)",
                     p, ep);
        else if ((ev->value & 0x20000000) == 0x20000000)
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: its authenticator "
                     "gave a malformed answer (protocol error 0x%x)",
                     p, ep, (unsigned)ev->value);
        else
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: handshake protocol "
                     "error 0x%x",
                     p, ep, (unsigned)ev->value);
        break;
    case POOL_CURVE_EV_DROPPED:
        if (ev->curve)
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: it closed the "
                     "connection during the CURVE handshake (a wrong server "
                     "public key, or a server without CURVE?)",
                     p, ep);
        else
            snprintf(buf, size,
                     "cannot authenticate with %s at %s: it closed the "
                     "connection during the handshake (it may want CURVE "
                     "keys, and we use none)",
                     p, ep);
        break;
    case POOL_CURVE_EV_OK:
        snprintf(buf, size, "authenticated with %s at %s", p, ep);
        break;
    default:
        snprintf(buf, size, "no handshake result from %s at %s yet", p, ep);
        break;
    }
    return buf;
}

pk_err_t pool__curve_watch_open(void *zctx, void *sock, const char *peer,
                                pool__curve_watch_t **out, pk_error_t *err)
{
    static atomic_uint counter;
    char addr[96];
    pk_err_t rc;

    *out = NULL;
    pool__curve_watch_t *w = pk__calloc(1, sizeof *w);
    if (w == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    w->sock = sock;
    snprintf(w->peer, sizeof w->peer, "%s", peer != NULL ? peer : "the server");
    snprintf(addr, sizeof addr, "inproc://picklepool.curve-watch.%d.%u",
             (int)getpid(), atomic_fetch_add(&counter, 1));
    if (zmq_socket_monitor(sock, addr, ZMQ_EVENT_ALL) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "zmq_socket_monitor");
        pk__free(w);
        return rc;
    }
    w->pair = zmq_socket(zctx, ZMQ_PAIR);
    if (w->pair == NULL) {
        rc = pk__err_sys(err, PK_ESYS, errno, "zmq_socket (monitor)");
        zmq_socket_monitor(sock, NULL, 0);
        pk__free(w);
        return rc;
    }
    int zero = 0;
    zmq_setsockopt(w->pair, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(w->pair, addr) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "connect %s", addr);
        zmq_close(w->pair);
        zmq_socket_monitor(sock, NULL, 0);
        pk__free(w);
        return rc;
    }
    *out = w;
    return PK_OK;
}

static pool__curve_ev_t kind_of(int event, int value)
{
    switch (event) {
    case ZMQ_EVENT_CONNECTED:
        return POOL_CURVE_EV_CONNECTED;
    case ZMQ_EVENT_ACCEPTED:
        return POOL_CURVE_EV_ACCEPTED;
    case ZMQ_EVENT_CONNECT_RETRIED:
        return POOL_CURVE_EV_RETRY;
    case ZMQ_EVENT_DISCONNECTED:
        return POOL_CURVE_EV_CLOSED;
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        return POOL_CURVE_EV_OK;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        return value == 400 ? POOL_CURVE_EV_REFUSED : POOL_CURVE_EV_AUTH;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return POOL_CURVE_EV_PROTOCOL;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return POOL_CURVE_EV_DROPPED;
    default:
        return POOL_CURVE_EV_OTHER; /* listening, closed, delayed... */
    }
}

pk_err_t pool__curve_watch_next(pool__curve_watch_t *w, int timeout_ms,
                                pool__curve_event_t *ev, pk_error_t *err)
{
    memset(ev, 0, sizeof *ev);
    for (;;) {
        zmq_pollitem_t it = {w->pair, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, timeout_ms);
        if (n < 0)
            return pk__err_sys(err, PK_ESYS, errno, "zmq_poll (monitor)");
        if (n == 0)
            return PK_OK; /* kind NONE */
        /* Frame 1: u16 event, u32 value (host order); frame 2: endpoint. */
        uint8_t head[8];
        int got = zmq_recv(w->pair, head, sizeof head, 0);
        if (got < 0)
            return pk__err_sys(err, PK_ESYS, errno, "zmq_recv (monitor)");
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(w->pair, ZMQ_RCVMORE, &more, &ml);
        char ep[sizeof ev->endpoint];
        int eplen = 0;
        while (more) { /* the endpoint, then anything else: dropped */
            int r = zmq_recv(w->pair, eplen == 0 ? (void *)ep : (void *)head,
                             eplen == 0 ? sizeof ep - 1 : sizeof head, 0);
            if (r < 0)
                return pk__err_sys(err, PK_ESYS, errno, "zmq_recv (monitor)");
            if (eplen == 0)
                eplen = r > (int)sizeof ep - 1 ? (int)sizeof ep - 1 : r;
            zmq_getsockopt(w->pair, ZMQ_RCVMORE, &more, &ml);
        }
        if (got != 6)
            continue; /* not a monitor event: nothing we know */
        uint16_t event;
        uint32_t value;
        memcpy(&event, head, 2);
        memcpy(&value, head + 2, 4);
        ev->zmq_event = event;
        ev->value = (int)value;
        int mech = 0;
        size_t mlen = sizeof mech;
        ev->curve = zmq_getsockopt(w->sock, ZMQ_MECHANISM, &mech, &mlen) == 0 &&
                    mech == ZMQ_CURVE;
        ev->kind = kind_of(event, (int)value);
        ep[eplen] = '\0';
        printable(ep, (size_t)eplen, ev->endpoint, sizeof ev->endpoint);
        if (ev->kind == POOL_CURVE_EV_RETRY)
            w->retries++;
        if (ev->kind == POOL_CURVE_EV_CONNECTED ||
            ev->kind == POOL_CURVE_EV_ACCEPTED)
            w->connected = 1;
        if (ev->endpoint[0] != '\0')
            memcpy(w->last_ep, ev->endpoint, sizeof w->last_ep);
        return PK_OK;
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

pk_err_t pool__curve_watch_handshake(pool__curve_watch_t *w, int timeout_ms,
                                     pool__curve_event_t *last, pk_error_t *err)
{
    pool__curve_event_t ev;
    double end = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        int left = timeout_ms < 0 ? -1 : (int)(end - now_ms());
        if (timeout_ms >= 0 && left < 0)
            left = 0;
        pk_err_t rc = pool__curve_watch_next(w, left, &ev, err);
        if (rc != PK_OK)
            return rc;
        if (ev.kind == POOL_CURVE_EV_NONE)
            break; /* time up */
        if (ev.kind == POOL_CURVE_EV_OK || pool__curve_ev_failed(ev.kind)) {
            if (last != NULL)
                *last = ev;
            if (ev.kind == POOL_CURVE_EV_OK)
                return PK_OK;
            char msg[sizeof err->msg];
            pool__curve_describe(&ev, w->peer, msg, sizeof msg);
            return pk__err(err, PK_EPROTO, "%s", msg);
        }
    }
    if (last != NULL)
        memset(last, 0, sizeof *last);
    const char *ep = w->last_ep[0] != '\0' ? w->last_ep : "its endpoint";
    if (w->connected)
        return pk__err(err, PK_ETIMEDOUT,
                       "connected to %s at %s, but no handshake finished "
                       "within %d ms (is it a picklepool endpoint?)",
                       w->peer, ep, timeout_ms);
    if (w->retries > 0)
        return pk__err(err, PK_ETIMEDOUT,
                       "cannot reach %s at %s: %u connection attempts "
                       "failed within %d ms (is it running, and is the "
                       "address right?)",
                       w->peer, ep, w->retries, timeout_ms);
    return pk__err(err, PK_ETIMEDOUT, "no connection to %s within %d ms",
                   w->peer, timeout_ms);
}

void pool__curve_watch_close(pool__curve_watch_t **wp)
{
    if (wp == NULL || *wp == NULL)
        return;
    pool__curve_watch_t *w = *wp;
    zmq_socket_monitor(w->sock, NULL, 0);
    zmq_close(w->pair);
    pk__free(w);
    *wp = NULL;
}
