/*
 * scaleout.c - remote pools (see scaleout.h): the options a remote pool
 * takes, its forwarder's command line, where picklepool-worker lives, and
 * the connection check pool_create makes before it starts anything.
 */
#define _GNU_SOURCE
#include "pool/scaleout.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "core/common.h"
#include "ipc/remote.h"

#define WORKER_PROGRAM "picklepool-worker"
#define WORKER_ENV "PICKLEPOOL_WORKER_PROGRAM"
#define REMOTE_PREFETCH_MUL 32
#define GIVE_UP_DEFAULT_S 60.0

/* Tries dir/rel: PK_OK with out filled when it is an executable. */
static int try_exe(const char *dir, const char *rel, char *out, size_t size,
                   char *looked, size_t lsize)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s" WORKER_PROGRAM, dir, rel);
    if (access(p, X_OK) == 0 && strlen(p) < size) {
        strcpy(out, p);
        return 1;
    }
    size_t n = strlen(looked);
    if (n + 4 < lsize)
        snprintf(looked + n, lsize - n, "%s%s", n ? ", " : "", p);
    return 0;
}

pk_err_t pool__worker_program(char *out, size_t size, pk_error_t *err)
{
    char dir[PATH_MAX], looked[1024] = "";
    const char *env = getenv(WORKER_ENV);
    if (env != NULL && env[0] != '\0') {
        if (access(env, X_OK) != 0)
            return pk__err_sys(err, PK_EIO, errno, "%s=%.200s", WORKER_ENV,
                               env);
        if (snprintf(out, size, "%s", env) >= (int)size)
            return pk__err(err, PK_ELIMIT, "%s is too long", WORKER_ENV);
        return PK_OK;
    }
    /* Beside the library: build/ in the tree, PREFIX/lib -> PREFIX/bin
     * installed (for a program linked statically, dladdr names it). */
    Dl_info info;
    if (dladdr((void *)pool__worker_program, &info) != 0 &&
        info.dli_fname != NULL && strlen(info.dli_fname) < sizeof dir) {
        strcpy(dir, info.dli_fname);
        pk__path_dir(dir);
        if (try_exe(dir, "", out, size, looked, sizeof looked) ||
            try_exe(dir, "../bin/", out, size, looked, sizeof looked) ||
            try_exe(dir, "../", out, size, looked, sizeof looked))
            return PK_OK;
    }
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n > 0) {
        dir[n] = '\0';
        pk__path_dir(dir);
        if (try_exe(dir, "", out, size, looked, sizeof looked) ||
            try_exe(dir, "../", out, size, looked, sizeof looked) ||
            try_exe(dir, "../bin/", out, size, looked, sizeof looked))
            return PK_OK;
    }
    return pk__err(err, PK_EIO,
                   "cannot find " WORKER_PROGRAM
                   " for the remote pool: looked at %s (set " WORKER_ENV
                   " to its path)",
                   looked[0] ? looked : "nothing");
}

pk_err_t pool__remote_check(const char *address, const char *keys, int insecure,
                            int timeout_ms, pk_error_t *err)
{
    pool__remote_sec_t sec;
    pk_err_t rc =
        pool__remote_sec_load(address, 0, keys, NULL, insecure, &sec, err);
    if (rc != PK_OK)
        return rc;
    if (sec.mode == POOL_NET_LOCAL) {
        pool__remote_sec_free(&sec);
        return PK_OK; /* ipc: nothing to authenticate */
    }
    void *zctx = zmq_ctx_new(), *sock = NULL;
    pool__curve_watch_t *w = NULL;
    if (zctx == NULL) {
        pool__remote_sec_free(&sec);
        return pk__err_sys(err, PK_ESYS, errno, "zmq_ctx_new");
    }
    zmq_ctx_set(zctx, ZMQ_BLOCKY, 0);
    rc = pool__remote_dealer(zctx, address, &sec, "the master", &sock, &w, err);
    if (rc == PK_OK)
        rc = pool__curve_watch_handshake(w, timeout_ms, NULL, err);
    pool__curve_watch_close(&w);
    if (sock != NULL)
        zmq_close(sock);
    zmq_ctx_term(zctx);
    pool__remote_sec_free(&sec);
    return rc;
}

pk_err_t pool__remote_prepare(pool_opts_t *o, pool__remote_argv_t *ra,
                              pk_error_t *err)
{
    const char *what = NULL;
    if (o->workers > 1)
        what = "workers (the hosts' --workers)";
    else if (o->worker_argv != NULL || o->worker_env != NULL)
        what = "worker_argv (the hosts run the workers)";
    else if (o->nplugins > 0)
        what = "plugins (load them on the hosts: picklepool worker --plugin)";
    else if (o->initializer != NULL)
        what = "an initializer (it cannot run on other machines)";
    else if (o->maxtasksperchild != 0 || o->max_rss != 0)
        what = "maxtasksperchild or max_rss (the hosts' workers)";
    if (what != NULL)
        return pk__err(err, PK_EINVAL,
                       "a remote pool (address %.200s) takes no %s", o->address,
                       what);
    pool__endpoint_t ep;
    pk_err_t rc = pool__endpoint_parse(o->address, 0, &ep, err);
    if (rc != PK_OK)
        return rc;
    if (ep.kind != POOL_EP_TCP && ep.kind != POOL_EP_IPC)
        return pk__err(err, PK_EINVAL,
                       "a remote pool's address is tcp://HOST:PORT, not "
                       "%.200s",
                       o->address);
    pool__net_mode_t mode;
    rc = pool__net_mode(o->address, 0, o->keys != NULL && o->keys[0] != '\0',
                        o->insecure, &mode, err);
    if (rc != PK_OK)
        return rc;
    memset(ra, 0, sizeof *ra);
    rc = pool__worker_program(ra->exe, sizeof ra->exe, err);
    if (rc != PK_OK)
        return rc;
    if (snprintf(ra->address, sizeof ra->address, "%s", o->address) >=
        (int)sizeof ra->address)
        return pk__err(err, PK_ELIMIT, "the address is too long");
    /* The forwarder starts where the fork server runs: the key directory
     * must not depend on this thread's working directory. */
    if (mode == POOL_NET_CURVE && realpath(o->keys, ra->keys) == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "key directory %.200s",
                           o->keys);
    double give_up = o->stall_timeout > 0    ? o->stall_timeout
                     : o->stall_timeout == 0 ? GIVE_UP_DEFAULT_S
                                             : 0;
    snprintf(ra->give_up, sizeof ra->give_up, "%.17g", give_up);
    size_t n = 0;
    ra->argv[n++] = ra->exe;
    ra->argv[n++] = "--forward";
    ra->argv[n++] = ra->address;
    if (mode == POOL_NET_CURVE) {
        ra->argv[n++] = "--keys";
        ra->argv[n++] = ra->keys;
    } else if (mode == POOL_NET_INSECURE) {
        ra->argv[n++] = "--insecure";
    }
    ra->argv[n++] = "--give-up";
    ra->argv[n++] = ra->give_up;
    ra->argv[n] = NULL;

    rc = pool__remote_check(
        o->address, mode == POOL_NET_CURVE ? ra->keys : NULL,
        mode == POOL_NET_INSECURE, POOL_REMOTE_HANDSHAKE_MS, err);
    if (rc != PK_OK)
        return rc;
    o->workers = 1;
    o->worker_argv = ra->argv;
    o->worker_env = NULL;
    o->shm_bytes = SIZE_MAX;
    o->spin_us = -1;
    int pf = (o->prefetch ? o->prefetch : 2) * REMOTE_PREFETCH_MUL;
    o->prefetch = pf > 1024 ? 1024 : pf;
    o->stall_timeout = -1; /* its forwarder is always "running an item" */
    return PK_OK;
}
