/*
 * remote.c - what serve and its peers share (see remote.h): the keys each
 * side loads, the DEALER a peer connects, whole messages, HELLO / WELCOME,
 * and the names and rank layout launchers give a process.
 */
#define _GNU_SOURCE
#include "ipc/remote.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"

/* ---- security ------------------------------------------------------------ */

/* The one NAME.key of dir that is not master.key, into name.  Returns PK_OK,
 * or PK_EINVAL (none, or several: the message names them and the way out)
 * or PK_ESYS. */
static pk_err_t own_pair(const char *dir, char *name, size_t size,
                         pk_error_t *err)
{
    DIR *d = opendir(dir);
    char found[2][POOL_CURVE_NAME_MAX + 1];
    int n = 0;

    if (d == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "key directory %s", dir);
    for (;;) {
        struct dirent *e = readdir(d);
        if (e == NULL)
            break;
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || len - 4 > POOL_CURVE_NAME_MAX ||
            strcmp(e->d_name + len - 4, ".key") != 0)
            continue;
        char stem[POOL_CURVE_NAME_MAX + 1];
        memcpy(stem, e->d_name, len - 4);
        stem[len - 4] = '\0';
        if (strcmp(stem, POOL_REMOTE_SERVER_NAME) == 0 ||
            !pool__curve_name_ok(stem))
            continue;
        if (n < 2)
            memcpy(found[n], stem, len - 3);
        n++;
    }
    closedir(d);
    if (n == 0)
        return pk__err(err, PK_EINVAL,
                       "key directory %s has no key pair of its own (a "
                       "NAME.key other than %s.key): make one with "
                       "picklepool keygen %s",
                       dir, POOL_REMOTE_SERVER_NAME, dir);
    if (n > 1)
        return pk__err(err, PK_EINVAL,
                       "key directory %s has %d key pairs (%s.key, %s.key%s): "
                       "name the one to use",
                       dir, n, found[0], found[1], n > 2 ? ", ..." : "");
    snprintf(name, size, "%s", found[0]);
    return PK_OK;
}

pk_err_t pool__remote_sec_load(const char *endpoint, int for_bind,
                               const char *keydir, const char *name,
                               int insecure, pool__remote_sec_t *out,
                               pk_error_t *err)
{
    memset(out, 0, sizeof *out);
    int have_keys = keydir != NULL && keydir[0] != '\0';
    pk_err_t rc = pool__net_mode(endpoint, for_bind, have_keys, insecure,
                                 &out->mode, err);
    if (rc != PK_OK || out->mode != POOL_NET_CURVE)
        return rc;
    char own[POOL_CURVE_NAME_MAX + 1];
    if (name == NULL && for_bind)
        name = POOL_REMOTE_SERVER_NAME;
    if (name == NULL) {
        if ((rc = pool__curve_check_dir(keydir, err)) != PK_OK ||
            (rc = own_pair(keydir, own, sizeof own, err)) != PK_OK)
            return rc;
        name = own;
    }
    rc = pool__curve_keys_load(keydir, name, &out->keys, err);
    if (rc != PK_OK)
        return rc;
    if (!for_bind) {
        const pool__curve_pub_t *m =
            pool__curve_keys_find(out->keys, POOL_REMOTE_SERVER_NAME);
        if (m == NULL) {
            pool__remote_sec_free(out);
            return pk__err(err, PK_EINVAL,
                           "key directory %s has no %s.pub: copy the "
                           "master's public key there (it trusts the master "
                           "by it)",
                           keydir, POOL_REMOTE_SERVER_NAME);
        }
        memcpy(out->server_z85, m->z85, sizeof out->server_z85);
    }
    return PK_OK;
}

void pool__remote_sec_free(pool__remote_sec_t *s)
{
    if (s == NULL)
        return;
    pool__curve_keys_free(&s->keys);
    memset(s->server_z85, 0, sizeof s->server_z85);
}

/* ---- sockets ---------------------------------------------------------------- */

pk_err_t pool__remote_dealer(void *zctx, const char *endpoint,
                             const pool__remote_sec_t *sec, const char *peer,
                             void **sockp, pool__curve_watch_t **watchp,
                             pk_error_t *err)
{
    int zero = 0, ivl = 100, ivl_max = 2000;
    pool__curve_watch_t *w = NULL;
    pk_err_t rc;

    *sockp = NULL;
    *watchp = NULL;
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (s == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "zmq_socket");
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (sec->mode == POOL_NET_CURVE &&
        (rc = pool__curve_client_setup(s, sec->keys, sec->server_z85, err)) !=
            PK_OK)
        goto fail;
    if ((rc = pool__curve_watch_open(zctx, s, peer, &w, err)) != PK_OK)
        goto fail;
    if (zmq_connect(s, endpoint) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "cannot connect to %.200s",
                         endpoint);
        goto fail;
    }
    *sockp = s;
    *watchp = w;
    return PK_OK;
fail:
    pool__curve_watch_close(&w);
    zmq_close(s);
    return rc;
}

/* ---- messages ---------------------------------------------------------------- */

pk_err_t pool__msg_recv(void *sock, pool__msg_t *m, size_t max, int flags,
                        pk_error_t *err)
{
    zmq_msg_t junk;
    int more = 1;

    m->n = 0;
    m->truncated = 0;
    while (more) {
        if (m->n == m->cap && m->n < max) {
            size_t nc = m->cap ? m->cap * 2 : 8;
            if (nc > max)
                nc = max;
            zmq_msg_t *x = pk__realloc(m->f, nc * sizeof *x);
            if (x == NULL) {
                /* drain what is left of it, then drop the whole message */
                zmq_msg_init(&junk);
                while (m->n > 0 && zmq_msg_recv(&junk, sock, 0) >= 0 &&
                       zmq_msg_more(&junk))
                    ;
                zmq_msg_close(&junk);
                pool__msg_clear(m);
                return pk__err(err, PK_ENOMEM,
                               "out of memory reading a message");
            }
            m->f = x;
            m->cap = nc;
        }
        zmq_msg_t *f = m->n < max ? &m->f[m->n] : &junk;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, sock, m->n == 0 && !m->truncated ? flags : 0) < 0) {
            int e = errno;
            zmq_msg_close(f);
            if (m->n == 0 && !m->truncated && (e == EAGAIN || e == EINTR))
                return PK_EOF;
            pool__msg_clear(m);
            return pk__err_sys(err, PK_ESYS, e, "zmq_msg_recv");
        }
        more = zmq_msg_more(f);
        if (f == &junk) {
            zmq_msg_close(f);
            m->truncated = 1;
        } else {
            m->n++;
        }
    }
    return PK_OK;
}

void pool__msg_clear(pool__msg_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        zmq_msg_close(&m->f[i]);
    m->n = 0;
}

void pool__msg_free(pool__msg_t *m)
{
    pool__msg_clear(m);
    pk__free(m->f);
    m->f = NULL;
    m->cap = 0;
}

int pool__remote_send(void *sock, const void *data, size_t len, int more)
{
    return zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0 ? -1 : 0;
}

int pool__remote_send_hdr(void *sock, const pool__wire_hdr_t *h, int more)
{
    uint8_t b[POOL_WIRE_HDR_SIZE];
    pool__wire_hdr_encode(h, b);
    return pool__remote_send(sock, b, sizeof b, more);
}

int pool__remote_send_msg(void *sock, zmq_msg_t *m, int more)
{
    if (zmq_msg_send(m, sock, more ? ZMQ_SNDMORE : 0) < 0) {
        int e = errno;
        zmq_msg_close(m);
        zmq_msg_init(m);
        errno = e;
        return -1;
    }
    return 0;
}

/* ---- logs ------------------------------------------------------------------------ */

static void vsay(const char *who, const char *suffix, const char *fmt,
                 va_list ap)
{
    char line[768];
    vsnprintf(line, sizeof line - 32, fmt, ap);
    fprintf(stderr, "%s: %s%s\n", who, line, suffix);
}

void pool__remote_say(const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(who, "", fmt, ap);
    va_end(ap);
}

void pool__remote_log_once(unsigned *logged, int kind, const char *who,
                           const char *fmt, ...)
{
    unsigned bit = 1u << (kind & 31);
    if (*logged & bit)
        return;
    *logged |= bit;
    va_list ap;
    va_start(ap, fmt);
    vsay(who, " (logged once)", fmt, ap);
    va_end(ap);
}

/* ---- sessions ------------------------------------------------------------------ */

int pool__remote_hello(void *sock, uint16_t role, uint32_t capacity,
                       const char *name)
{
    char clean[POOL_WIRE_NAME_MAX + 1];
    size_t n = 0;
    for (; name != NULL && name[n] != '\0' && n < POOL_WIRE_NAME_MAX; n++)
        clean[n] = name[n] >= 0x20 && name[n] <= 0x7e ? name[n] : '?';
    if (n == 0)
        clean[n++] = '?';
    pool__wire_hdr_t h = {
        .kind = POOL_WIRE_HELLO,
        .flags = role,
        .count = role == POOL_WIRE_F_HOST ? capacity : 0,
        .aux = (uint64_t)getpid(),
    };
    if (pool__remote_send_hdr(sock, &h, 1) != 0)
        return -1;
    return pool__remote_send(sock, clean, n, 0);
}

pk_err_t pool__remote_welcome(const pool__msg_t *m, pool__wire_hdr_t *h,
                              pool__welcome_t *w, pk_error_t *err)
{
    if (m->n == 0)
        return pk__err(err, PK_EPROTO, "an empty message");
    pk_err_t rc = pool__wire_hdr_parse(zmq_msg_data(&m->f[0]),
                                       zmq_msg_size(&m->f[0]), h, err);
    if (rc != PK_OK)
        return rc;
    if (m->n != pool__wire_nframes(h) || m->truncated)
        return pk__err(err, PK_EPROTO, "%s with %zu frames, not %zu",
                       pool__wire_kind_name(h->kind), m->n,
                       pool__wire_nframes(h));
    if (h->kind != POOL_WIRE_HELLO)
        return PK_EINVAL;
    if (h->flags != POOL_WIRE_F_WELCOME)
        return pk__err(err, PK_EPROTO, "a HELLO that is not a WELCOME");
    w->session = h->batch;
    w->heartbeat_ns = h->aux;
    w->liveness = h->count;
    return PK_OK;
}

#define LINK_BACKOFF_MIN_NS 100000000ull /* 0.1 s */

void pool__link_init(pool__link_t *l, uint64_t backoff_max_ns)
{
    memset(l, 0, sizeof *l);
    l->backoff_ns = LINK_BACKOFF_MIN_NS;
    l->backoff_max_ns = backoff_max_ns;
}

void pool__link_join(pool__link_t *l, const pool__welcome_t *w, uint64_t now)
{
    l->session = w->session;
    l->hb_ns = w->heartbeat_ns;
    l->dead_ns = w->heartbeat_ns * w->liveness;
    l->sent_ns = now;
    l->backoff_ns = LINK_BACKOFF_MIN_NS;
}

void pool__link_closed(pool__link_t *l, uint64_t now, int backoff)
{
    l->retry_at = backoff ? now + l->backoff_ns : now;
    if (backoff)
        l->backoff_ns = l->backoff_ns * 2 > l->backoff_max_ns
                            ? l->backoff_max_ns
                            : l->backoff_ns * 2;
}

int pool__link_beat(pool__link_t *l, void *sock, uint64_t now)
{
    if (now - l->heard_ns > l->dead_ns)
        return 1;
    if (now - l->sent_ns >= l->hb_ns) {
        pool__wire_hdr_t hb = {.kind = POOL_WIRE_HEARTBEAT, .aux = now};
        pool__remote_send_hdr(sock, &hb, 0);
        l->sent_ns = now;
    }
    return 0;
}

/* ---- names and ranks -------------------------------------------------------- */

/* getenv(name) as a whole non-negative number, or -1. */
static long env_num(const char *name)
{
    const char *s = getenv(name);
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0)
        return -1;
    return v;
}

/* The task count of node `node` in a SLURM_TASKS_PER_NODE value such as
 * "2(x3),1", or -1. */
static long slurm_tasks_on(const char *s, long node)
{
    long at = 0;
    while (s != NULL && *s != '\0') {
        char *end;
        if (*s < '0' || *s > '9')
            return -1;
        long tasks = strtol(s, &end, 10), rep = 1;
        s = end;
        if (*s == '(') {
            if (s[1] != 'x' || s[2] < '0' || s[2] > '9')
                return -1;
            rep = strtol(s + 2, &end, 10);
            if (*end != ')' || rep < 1)
                return -1;
            s = end + 1;
        }
        if (node < at + rep)
            return tasks;
        at += rep;
        if (*s == ',')
            s++;
        else if (*s != '\0')
            return -1;
    }
    return -1;
}

void pool__launch_get(pool__launch_t *out)
{
    memset(out, 0, sizeof *out);
    out->rank = out->size = out->local_rank = out->local_size = -1;
    if ((out->rank = env_num("SLURM_PROCID")) >= 0) {
        out->launcher = "slurm";
        out->size = env_num("SLURM_NTASKS");
        out->local_rank = env_num("SLURM_LOCALID");
        long node = env_num("SLURM_NODEID");
        const char *tpn = getenv("SLURM_STEP_TASKS_PER_NODE");
        if (tpn == NULL)
            tpn = getenv("SLURM_TASKS_PER_NODE");
        if (node >= 0)
            out->local_size = slurm_tasks_on(tpn, node);
        long nodes = env_num("SLURM_NNODES");
        if (out->local_size < 0 && nodes == 1)
            out->local_size = out->size;
        return;
    }
    if ((out->rank = env_num("OMPI_COMM_WORLD_RANK")) >= 0 ||
        (out->rank = env_num("PMIX_RANK")) >= 0) {
        out->launcher = "mpi";
        out->size = env_num("OMPI_COMM_WORLD_SIZE");
        out->local_rank = env_num("OMPI_COMM_WORLD_LOCAL_RANK");
        out->local_size = env_num("OMPI_COMM_WORLD_LOCAL_SIZE");
    }
}

const char *pool__remote_default_name(char *buf, size_t size)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
        snprintf(host, sizeof host, "host");
    host[sizeof host - 1] = '\0';
    pool__launch_t l;
    pool__launch_get(&l);
    if (l.rank >= 0)
        snprintf(buf, size, "%.200s rank %ld", host, l.rank);
    else
        snprintf(buf, size, "%.200s", host);
    return buf;
}
