/*
 * forkserver.c - the fork server (see forkserver.h for the discipline and the
 * channels) and the master-side calls that talk to it.
 *
 * The server is one poll loop over the control channel, a signalfd for
 * SIGCHLD and one channel per pool.  It keeps, per pool, the pid and
 * generation of each slot's live worker, so a KILL can only ever reach one of
 * that pool's own children (a pid is not reused before the server reaps it).
 * Worker exits are reported on the owning pool's channel as soon as waitpid
 * returns them.
 */
#define _GNU_SOURCE
#include "proc/forkserver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/common.h"
#include "ipc/lane.h"
#include "ipc/scoreboard.h"
#include "proc/attach.h"
#include "proc/registry_int.h"
#include "proc/worker.h"

/* ---- control-channel messages ------------------------------------------ */

enum ctl_type {
    CTL_NEWPOOL = 1, /* + SCM_RIGHTS {channel, memfd}; acked */
    CTL_PLUGIN,      /* path; acked when `ack` */
    CTL_REGISTER,    /* module, name, fn, udata */
    CTL_ACK
};

typedef struct ctl_msg {
    uint32_t type;
    int32_t code; /* ACK: pk_err_t */
    int32_t ack;  /* PLUGIN: reply wanted */
    int32_t pad;
    union {
        pool__fs_pool_cfg_t pool;
        char path[4096];
        struct {
            char module[256];
            char name[256];
            pool_fn_t fn;
            void *udata;
        } reg;
        char msg[256]; /* ACK */
    } u;
} ctl_msg_t;

/* ---- master side state -------------------------------------------------- */

static pthread_mutex_t fs_mu = PTHREAD_MUTEX_INITIALIZER;
static int fs_ctl = -1; /* master end of the control channel */
static pid_t fs_owner;  /* the process that started it */
static pid_t fs_pid;    /* the fork server, reaped when it is lost */
static pool__topo_t *fs_topology;
/* The worker main the fork server was started with (NULL: none): in the
 * master, the running fork server's; in the fork server and its workers,
 * their own copy, taken when it was forked. */
static pool_worker_main_fn fs_main_fn;
static void (*fs_main_at_fork)(void);

/* ---- fork-server side state ------------------------------------------- */

typedef struct fs_worker {
    pid_t pid; /* 0: none */
    uint32_t gen;
} fs_worker_t;

typedef struct fs_pool {
    int chan;
    int memfd;
    pool__fs_pool_cfg_t cfg;
    fs_worker_t *w; /* cfg.nworkers */
} fs_pool_t;

#define FS_MAX_POOLS 256
static fs_pool_t *fs_pools[FS_MAX_POOLS];
static int fs_ctl_srv = -1;
static int fs_sigfd = -1;

/* ---- helpers ------------------------------------------------------------ */

static ssize_t send_fds(int sock, const void *buf, size_t len, const int *fds,
                        int nfds)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 3)];
        struct cmsghdr align;
    } cm;
    if (nfds > 0) {
        memset(&cm, 0, sizeof cm);
        mh.msg_control = cm.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t r;
    do
        r = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r;
}

/* Receives one datagram and up to 3 fds (set to -1 when absent). */
static ssize_t recv_fds(int sock, void *buf, size_t len, int *fds)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 3)];
        struct cmsghdr align;
    } cm;
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = cm.buf,
                        .msg_controllen = sizeof cm.buf};
    fds[0] = fds[1] = fds[2] = -1;
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int got[8];
        if (n > 8)
            n = 8;
        memcpy(got, CMSG_DATA(c), n * sizeof(int));
        for (size_t i = 0; i < n; i++) {
            if (i < 3 && fds[i] < 0)
                fds[i] = got[i];
            else
                close(got[i]);
        }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        for (int i = 0; i < 3; i++)
            if (fds[i] >= 0)
                close(fds[i]), fds[i] = -1;
        errno = EMSGSIZE;
        return -1;
    }
    return r;
}

pk_err_t pool__fs_send(int chan, const pool__fs_msg_t *m)
{
    if (send_fds(chan, m, sizeof *m, NULL, 0) != (ssize_t)sizeof *m)
        return PK_ESYS;
    return PK_OK;
}

int pool__fs_recv(int chan, pool__fs_msg_t *m)
{
    ssize_t r;
    do
        r = recv(chan, m, sizeof *m, MSG_DONTWAIT | MSG_TRUNC);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
    if (r != (ssize_t)sizeof *m)
        return -1;
    return 1;
}

/* Removes every entry of dir (one level: the pool only creates sockets) and
 * the directory itself. */
static void remove_dir(const char *dir)
{
    if (dir[0] == '\0')
        return;
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* ---- the fork server ---------------------------------------------------- */

/* Splits a NUL-separated list (ending with an empty string) into v[0..max)
 * with a NULL after the last; returns the count, or -1 when too many. */
static int split_list(char *list, char **v, int max)
{
    int n = 0;
    for (char *p = list; *p != '\0'; p += strlen(p) + 1) {
        if (n + 1 >= max)
            return -1;
        v[n++] = p;
    }
    v[n] = NULL;
    return n;
}

/* The environment of an exec'd or main-running worker: PICKLEPOOL_WORKER
 * says what to map (the memfd is at descriptor fd, the shared heap at
 * fp->cfg.heap_fd), then the pool's own variables.  Returns 0, or -1 when
 * they do not fit. */
static int fs_worker_env(fs_pool_t *fp, const pool__fs_msg_t *m, int fd)
{
    static char *envv[256];
    char val[1024];
    if (pool__worker_env_format(&fp->cfg, m->slot, m->gen, fd, val,
                                sizeof val) != 0 ||
        setenv(POOL_WORKER_ENV, val, 1) != 0 ||
        split_list(fp->cfg.exec_env, envv, 256) < 0)
        return -1;
    for (int i = 0; envv[i] != NULL; i++)
        if (putenv(envv[i]) != 0)
            return -1;
    return 0;
}

/* The exec'd worker's side of fs_child: keep the memfd at descriptor 3,
 * the shared heap's at 4, and nothing else, bind, set the environment, and
 * exec the pool's command (which calls pool_worker_serve). */
static void fs_exec(fs_pool_t *fp, const pool__fs_msg_t *m)
{
    static char *argv[256];
    if (fp->cfg.heap_fd == 3 && (fp->cfg.heap_fd = fcntl(3, F_DUPFD, 5)) < 0)
        _exit(127); /* out of the way of the memfd */
    if (fp->memfd != 3 && dup2(fp->memfd, 3) != 3)
        _exit(127);
    fcntl(3, F_SETFD, 0);
    if (fp->cfg.heap_fd >= 0) {
        if (fp->cfg.heap_fd != 4 && dup2(fp->cfg.heap_fd, 4) != 4)
            _exit(127);
        fcntl(4, F_SETFD, 0);
        fp->cfg.heap_fd = 4;
    }
    if (syscall(SYS_close_range, 5u, ~0u, 0u) != 0) {
        for (int fd = 5; fd < 1024; fd++)
            close(fd);
    }
    if (m->bind && fs_topology != NULL)
        (void)pool__topo_bind_self(fs_topology, &m->cpus, NULL);
    if (fs_worker_env(fp, m, 3) != 0 ||
        split_list(fp->cfg.exec_argv, argv, 256) < 1)
        _exit(127);
    execv(argv[0], argv);
    fprintf(stderr, "picklepool: cannot run worker %s: %s\n", argv[0],
            strerror(errno));
    _exit(127);
}

/* The main-running worker's side of fs_child: the exec'd worker's set-up
 * without the exec.  The fork server's own descriptors are closed (the
 * master's are /dev/null already, see fs_hold_fds); the memfd and the
 * shared heap's stay at their numbers, which PICKLEPOOL_WORKER names.  at_fork comes last, right before
 * the main: it makes the copied interpreter usable, and nothing of the
 * caller's may run before it. */
static void fs_run_main(fs_pool_t *fp, const pool__fs_msg_t *m)
{
    close(fs_ctl_srv);
    close(fs_sigfd);
    for (int i = 0; i < FS_MAX_POOLS; i++) {
        if (fs_pools[i] == NULL)
            continue;
        close(fs_pools[i]->chan);
        if (fs_pools[i] != fp) {
            close(fs_pools[i]->memfd);
            if (fs_pools[i]->cfg.heap_fd >= 0)
                close(fs_pools[i]->cfg.heap_fd);
        }
    }
    if (m->bind && fs_topology != NULL)
        (void)pool__topo_bind_self(fs_topology, &m->cpus, NULL);
    if (fs_worker_env(fp, m, fp->memfd) != 0)
        _exit(127);
    /* ZeroMQ's threads start here, bound as this process is: the
     * connection is made while the main starts (worker.h) */
    pool__worker_preconnect(fp->cfg.endpoint, m->slot, m->gen);
    if (fs_main_at_fork != NULL)
        fs_main_at_fork();
    int rc = fs_main_fn(fp->cfg.worker_main_arg);
    fflush(NULL);
    _exit(rc);
}

static void fs_child(fs_pool_t *fp, const pool__fs_msg_t *m, pid_t server)
{
    /* In the order forkserver.h gives, and why: die with the server; start
     * from clean signal state; keep only the scoreboard mapping; bind before
     * any thread exists; run the user's initializer; then ZeroMQ. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != server)
        _exit(127);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        signal(s, SIG_DFL);
    }
    if (fp->cfg.worker_main != NULL && fp->cfg.worker_main == fs_main_fn)
        fs_run_main(fp, m); /* does not return */
    if (fp->cfg.exec_argv[0] != '\0')
        fs_exec(fp, m); /* does not return */
    if (fp->cfg.worker_main != NULL)
        _exit(127); /* a main this fork server cannot run, nothing to exec */
    pool__worker_cfg_t wc;
    pool__worker_attach(&fp->cfg, fp->memfd, m->slot, m->gen, &wc);
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    }
    if (m->bind && fs_topology != NULL)
        (void)pool__topo_bind_self(fs_topology, &m->cpus, NULL);
    if (wc.sb != NULL)
        POOL_SB_STORE(wc.sb->pid, (int32_t)getpid());
    if (fp->cfg.initializer != NULL)
        fp->cfg.initializer(fp->cfg.initarg);
    int rc = pool__worker_main(&wc);
    fflush(NULL);
    _exit(rc);
}

static void fs_spawn(fs_pool_t *fp, const pool__fs_msg_t *m)
{
    pool__fs_msg_t r = {.slot = m->slot, .gen = m->gen};
    if (m->slot < 0 || m->slot >= fp->cfg.nworkers || fp->w[m->slot].pid != 0) {
        r.type = POOL_FS_SPAWN_FAILED;
        r.arg = EINVAL;
        pool__fs_send(fp->chan, &r);
        return;
    }
    pid_t server = getpid();
    pid_t pid = fork();
    if (pid == 0)
        fs_child(fp, m, server);
    if (pid < 0) {
        r.type = POOL_FS_SPAWN_FAILED;
        r.arg = errno;
    } else {
        fp->w[m->slot].pid = pid;
        fp->w[m->slot].gen = m->gen;
        r.type = POOL_FS_SPAWNED;
        r.pid = pid;
    }
    pool__fs_send(fp->chan, &r);
}

static void fs_pool_close(int i)
{
    fs_pool_t *fp = fs_pools[i];
    for (int s = 0; s < fp->cfg.nworkers; s++)
        if (fp->w[s].pid > 0)
            kill(fp->w[s].pid, SIGKILL);
    for (int s = 0; s < fp->cfg.nworkers; s++) {
        if (fp->w[s].pid > 0) {
            while (waitpid(fp->w[s].pid, NULL, 0) < 0 && errno == EINTR)
                ;
            fp->w[s].pid = 0;
        }
    }
    remove_dir(fp->cfg.dir);
    close(fp->chan);
    close(fp->memfd);
    if (fp->cfg.heap_fd >= 0)
        close(fp->cfg.heap_fd);
    free(fp->w);
    free(fp);
    fs_pools[i] = NULL;
}

static void fs_pool_msg(int i)
{
    fs_pool_t *fp = fs_pools[i];
    pool__fs_msg_t m;
    int r = pool__fs_recv(fp->chan, &m);
    if (r == 0 || r == -2) {
        fs_pool_close(i);
        return;
    }
    if (r < 0)
        return;
    switch (m.type) {
    case POOL_FS_SPAWN:
        fs_spawn(fp, &m);
        break;
    case POOL_FS_KILL:
        if (m.slot >= 0 && m.slot < fp->cfg.nworkers && m.pid > 0 &&
            fp->w[m.slot].pid == m.pid && m.arg > 0 && m.arg < NSIG)
            kill(m.pid, m.arg);
        break;
    default:
        break;
    }
}

static void fs_close_all_and_exit(void)
{
    for (int i = 0; i < FS_MAX_POOLS; i++)
        if (fs_pools[i] != NULL)
            fs_pool_close(i);
    _exit(0);
}

static void fs_reap(void)
{
    struct signalfd_siginfo si;
    while (read(fs_sigfd, &si, sizeof si) == (ssize_t)sizeof si)
        if (si.ssi_signo == SIGTERM)
            fs_close_all_and_exit(); /* the master died (PDEATHSIG) */
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0)
            break;
        for (int i = 0; i < FS_MAX_POOLS; i++) {
            fs_pool_t *fp = fs_pools[i];
            if (fp == NULL)
                continue;
            for (int s = 0; s < fp->cfg.nworkers; s++) {
                if (fp->w[s].pid != pid)
                    continue;
                pool__fs_msg_t m = {.type = POOL_FS_DIED,
                                    .slot = s,
                                    .gen = fp->w[s].gen,
                                    .pid = pid,
                                    .arg = st};
                fp->w[s].pid = 0;
                pool__fs_send(fp->chan, &m);
            }
        }
    }
}

static void fs_ack(pk_err_t code, const char *msg)
{
    ctl_msg_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return;
    a->type = CTL_ACK;
    a->code = code;
    snprintf(a->u.msg, sizeof a->u.msg, "%s", msg ? msg : "");
    send_fds(fs_ctl_srv, a, sizeof *a, NULL, 0);
    free(a);
}

static void fs_ctl_msg(ctl_msg_t *m)
{
    int fds[3];
    ssize_t r = recv_fds(fs_ctl_srv, m, sizeof *m, fds);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EMSGSIZE))
        fs_close_all_and_exit();
    if (r != (ssize_t)sizeof *m) {
        for (int i = 0; i < 3; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return;
    }
    switch (m->type) {
    case CTL_NEWPOOL: {
        int slot = -1;
        for (int i = 0; i < FS_MAX_POOLS && slot < 0; i++)
            if (fs_pools[i] == NULL)
                slot = i;
        fs_pool_t *fp = NULL;
        if (fds[0] < 0 || fds[1] < 0 || slot < 0 || m->u.pool.nworkers < 1 ||
            m->u.pool.nworkers > 65535 ||
            (fp = calloc(1, sizeof *fp)) == NULL ||
            (fp->w = calloc((size_t)m->u.pool.nworkers, sizeof *fp->w)) ==
                NULL) {
            if (fp != NULL)
                free(fp);
            for (int i = 0; i < 3; i++)
                if (fds[i] >= 0)
                    close(fds[i]);
            fs_ack(PK_ELIMIT, "fork server cannot take another pool");
            return;
        }
        fp->chan = fds[0];
        fp->memfd = fds[1];
        fp->cfg = m->u.pool;
        fp->cfg.heap_fd = fds[2];
        if (fds[2] < 0)
            fp->cfg.heap_size = 0;
        fp->cfg.dir[sizeof fp->cfg.dir - 1] = '\0';
        /* NUL-separated lists end with an empty string, whatever came. */
        memset(fp->cfg.exec_argv + sizeof fp->cfg.exec_argv - 2, 0, 2);
        memset(fp->cfg.exec_env + sizeof fp->cfg.exec_env - 2, 0, 2);
        fp->cfg.endpoint[sizeof fp->cfg.endpoint - 1] = '\0';
        fcntl(fp->chan, F_SETFL, O_NONBLOCK);
        fs_pools[slot] = fp;
        fs_ack(PK_OK, NULL);
        break;
    }
    case CTL_PLUGIN: {
        pk_error_t e;
        pk_error_clear(&e);
        m->u.path[sizeof m->u.path - 1] = '\0';
        pk_err_t rc = pool_plugin_load(m->u.path, &e);
        if (m->ack)
            fs_ack(rc, e.msg);
        break;
    }
    case CTL_REGISTER:
        m->u.reg.module[sizeof m->u.reg.module - 1] = '\0';
        m->u.reg.name[sizeof m->u.reg.name - 1] = '\0';
        pool_register(m->u.reg.module, m->u.reg.name, m->u.reg.fn,
                      m->u.reg.udata);
        break;
    default:
        break;
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0 && m->type != CTL_NEWPOOL)
            close(fds[i]);
}

/* Closes every descriptor but stdio and ctl. */
static void fs_close_fds(int ctl)
{
    if (ctl > 3)
        syscall(SYS_close_range, 3u, (unsigned)ctl - 1, 0u);
    syscall(SYS_close_range, (unsigned)ctl + 1, ~0u, 0u);
}

/* For a fork server with a worker main: turns every descriptor but stdio
 * and ctl into /dev/null at the same number (close-on-exec), so that the
 * master's files are closed here but their numbers stay taken (see
 * forkserver.h).  Without /dev/null or /proc, closes them instead. */
static void fs_hold_fds(int ctl)
{
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    DIR *d = nul >= 0 ? opendir("/proc/self/fd") : NULL;
    if (d == NULL) {
        if (nul >= 0)
            close(nul);
        fs_close_fds(ctl);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || fd < 3 || fd == ctl ||
            fd == nul || fd == dirfd(d) || fd > INT_MAX)
            continue;
        if (dup3(nul, (int)fd, O_CLOEXEC) < 0)
            close((int)fd);
    }
    closedir(d);
    close(nul);
}

static void fs_main(int ctl, pid_t master, int pdeath)
{
    setpgid(0, 0);
    /* Hold nothing of the master's but stdio and the control channel: a
     * socket or pipe end kept open here would outlive the master's use. */
    if (fs_main_fn != NULL)
        fs_hold_fds(ctl);
    else
        fs_close_fds(ctl);
    /* Terminal signals are the master's business.  SIGCHLD and SIGTERM come
     * through the signalfd: SIGTERM is the parent-death signal, so that a
     * SIGKILLed master still gets its workers killed and its ipc
     * directories removed here (a death signal of SIGKILL would kill the
     * fork server before it could clean up). */
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* Forked with fs_mu held (pool__fs_init forks inside it), maybe from a
     * process whose registry already forwards registrations: here they are
     * final, not forwarded.  fs_mu is unlocked, not re-initialised: this
     * thread is the copy of the one that locked it, and only an unlock tells
     * ThreadSanitizer that it is no longer held.  Re-initialised, TSan kept
     * it held for ever here, so pool_plugin_load below (plugin_lock) looked
     * like fs_mu -> plugin_lock against the master's plugin_lock -> fs_mu
     * (a plugin's init registering, on_register): a lock-order inversion
     * that cannot happen, since no thread holds fs_mu around a plugin load
     * in the master and the fork server never takes fs_mu. */
    pthread_mutex_unlock(&fs_mu);
    pool__registry_set_listener(NULL);
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGCHLD);
    sigaddset(&ss, SIGTERM);
    sigprocmask(SIG_BLOCK, &ss, NULL);
    fs_sigfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fs_sigfd < 0)
        _exit(1);
    if (pdeath &&
        (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != master))
        fs_close_all_and_exit();
    fs_ctl_srv = ctl;
    ctl_msg_t *m = malloc(sizeof *m);
    if (m == NULL)
        _exit(1);
    struct pollfd pfd[FS_MAX_POOLS + 2];
    int idx[FS_MAX_POOLS + 2];
    for (;;) {
        int n = 0;
        pfd[n].fd = fs_ctl_srv, pfd[n].events = POLLIN, idx[n++] = -1;
        pfd[n].fd = fs_sigfd, pfd[n].events = POLLIN, idx[n++] = -2;
        for (int i = 0; i < FS_MAX_POOLS; i++) {
            if (fs_pools[i] == NULL)
                continue;
            pfd[n].fd = fs_pools[i]->chan;
            pfd[n].events = POLLIN;
            idx[n++] = i;
        }
        int r = poll(pfd, (nfds_t)n, -1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        /* Deaths first, so a DIED never trails a later message. */
        if (pfd[1].revents)
            fs_reap();
        for (int k = 2; k < n; k++)
            if (pfd[k].revents && fs_pools[idx[k]] != NULL)
                fs_pool_msg(idx[k]);
        if (pfd[0].revents)
            fs_ctl_msg(m);
    }
}

/* ---- master side -------------------------------------------------------- */

static void on_register(const char *module, const char *name, pool_fn_t fn,
                        void *udata, const char *plugin_path)
{
    if (plugin_path != NULL) {
        /* On the stack (4 KiB): a forwarding that could fail for want of
         * memory would leave later workers without the function. */
        ctl_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = CTL_PLUGIN;
        snprintf(m.u.path, sizeof m.u.path, "%s", plugin_path);
        pthread_mutex_lock(&fs_mu);
        if (fs_ctl >= 0 && fs_owner == getpid())
            send_fds(fs_ctl, &m, sizeof m, NULL, 0);
        pthread_mutex_unlock(&fs_mu);
        return;
    }
    pool__fs_register(module, name, fn, udata);
}

/* Forgets the fork server (fs_mu held): closing the control channel makes
 * a live one kill every worker and exit; then it is reaped. */
static void fs_lost(void)
{
    fs_main_fn = NULL;
    fs_main_at_fork = NULL;
    if (fs_ctl < 0)
        return;
    close(fs_ctl);
    fs_ctl = -1;
    if (fs_owner == getpid() && fs_pid > 0)
        while (waitpid(fs_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    fs_pid = 0;
}

/* Non-zero when the fork server hung up (it died, or was killed). */
static int fs_hung_up(void)
{
    struct pollfd pfd = {.fd = fs_ctl, .events = POLLIN};
    if (poll(&pfd, 1, 0) <= 0)
        return 0;
    if (pfd.revents & (POLLHUP | POLLERR))
        return 1;
    return 0;
}

/* Every worker's first ZeroMQ context looks up a protocol (OpenPGM's
 * initialisation, inside zmq_ctx_new), and a process's first lookup reads
 * nsswitch.conf and searches the library path for each service module
 * (about 150 failing stats where libnss_db is not installed).  Done once
 * here, before the fork server is forked, every worker inherits the
 * loaded configuration and starts that much faster. */
static void warm_resolver(void)
{
    struct protoent pe, *res = NULL;
    char buf[1024];
    (void)getprotobyname_r("tcp", &pe, buf, sizeof buf, &res);
}

pk_err_t pool__fs_init(pool_worker_main_fn main, void (*at_fork)(void),
                       pk_error_t *err)
{
    pk_err_t rc = PK_OK;
    pthread_mutex_lock(&fs_mu);
    if (fs_ctl >= 0 && fs_owner == getpid() && fs_hung_up())
        fs_lost(); /* start a new one below */
    if (fs_ctl >= 0 && fs_owner == getpid())
        goto out;
    if (fs_ctl >= 0) {
        /* A child of the process that started it: that one is not ours. */
        close(fs_ctl);
        fs_ctl = -1;
    }
    if (fs_topology == NULL) {
        rc = pool__topo_load(&fs_topology, NULL, err);
        if (rc != PK_OK)
            goto out;
        warm_resolver();
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "socketpair");
        goto out;
    }
    fflush(NULL);
    pid_t master = getpid();
    int pdeath = (pid_t)syscall(SYS_gettid) == master;
    fs_main_fn = main; /* before the fork: the fork server's copy */
    fs_main_at_fork = at_fork;
    pid_t pid = fork();
    if (pid < 0) {
        rc = pk__err_sys(err, PK_ESYS, errno, "fork of the fork server");
        fs_main_fn = NULL;
        fs_main_at_fork = NULL;
        close(sv[0]);
        close(sv[1]);
        goto out;
    }
    if (pid == 0) {
        close(sv[0]);
        fs_main(sv[1], master, pdeath);
        _exit(0);
    }
    close(sv[1]);
    fs_ctl = sv[0];
    fs_owner = master;
    fs_pid = pid;
    pthread_mutex_unlock(&fs_mu);
    pool__registry_set_listener(on_register);
    return PK_OK;
out:
    pthread_mutex_unlock(&fs_mu);
    return rc;
}

void pool__fs_fini(void)
{
    pool__registry_set_listener(NULL);
    pthread_mutex_lock(&fs_mu);
    if (fs_owner == getpid())
        fs_lost();
    else if (fs_ctl >= 0) {
        close(fs_ctl); /* inherited from a parent: not ours to reap */
        fs_ctl = -1;
    }
    pool__topo_free(&fs_topology);
    pthread_mutex_unlock(&fs_mu);
}

const pool__topo_t *pool__fs_topo(void)
{
    return fs_topology;
}

/* Sends m and, when want_ack, waits for the ACK.  Called with fs_mu held. */
static pk_err_t ctl_call(ctl_msg_t *m, const int *fds, int nfds, int want_ack,
                         pk_error_t *err)
{
    if (fs_ctl < 0 || fs_owner != getpid())
        return pk__err(err, PK_EIO, "the fork server is not running");
    if (send_fds(fs_ctl, m, sizeof *m, fds, nfds) != (ssize_t)sizeof *m) {
        int e = errno;
        fs_lost(); /* the next pool__fs_init starts a new one */
        return pk__err_sys(err, PK_EIO, e, "cannot talk to the fork server");
    }
    if (!want_ack)
        return PK_OK;
    for (;;) {
        int got[3];
        ssize_t r = recv_fds(fs_ctl, m, sizeof *m, got);
        for (int i = 0; i < 3; i++)
            if (got[i] >= 0)
                close(got[i]);
        if (r == 0 || r < 0) {
            fs_lost(); /* the next pool__fs_init starts a new one */
            return pk__err(err, PK_EIO, "the fork server is gone");
        }
        if (r == (ssize_t)sizeof *m && m->type == CTL_ACK)
            break;
    }
    if (m->code != PK_OK)
        return pk__err(err, (pk_err_t)m->code, "%s", m->u.msg);
    return PK_OK;
}

/* First SPAWNs queued on a pool's channel before the fork server has it:
 * 16 x 152 bytes, far below any socket buffer. */
#define FS_EARLY_SPAWNS 16

pk_err_t pool__fs_open_pool(pool__fs_pool_cfg_t *cfg, int memfd, int heapfd,
                            const pool__fs_msg_t *first, int nfirst, int *chan,
                            pk_error_t *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return pk__err_sys(err, PK_ESYS, errno, "socketpair");
    /* Queued before the pool: the fork server reads them as soon as it has
     * taken the pool, without waiting to be woken again.  Only a few: no
     * one reads the channel yet, and a full socket buffer would block us
     * for ever; the rest go once the fork server has it (below). */
    int early = nfirst < FS_EARLY_SPAWNS ? nfirst : FS_EARLY_SPAWNS;
    for (int i = 0; i < early; i++) {
        if (pool__fs_send(sv[0], &first[i]) != PK_OK) {
            int e = errno;
            close(sv[0]);
            close(sv[1]);
            return pk__err_sys(err, PK_ESYS, e, "queueing the first spawns");
        }
    }
    ctl_msg_t *m = pk__calloc(1, sizeof *m);
    if (m == NULL) {
        close(sv[0]);
        close(sv[1]);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    m->type = CTL_NEWPOOL;
    int fds[3] = {sv[1], memfd, heapfd};
    pk_err_t rc = PK_OK;
    pthread_mutex_lock(&fs_mu);
    /* The main runs only in a fork server started with it (under fs_mu:
     * the one this message goes to); else the workers are exec'd. */
    if (cfg->worker_main != NULL && cfg->worker_main != fs_main_fn) {
        cfg->worker_main = NULL;
        if (cfg->exec_argv[0] == '\0')
            rc = pk__err(err, PK_EINVAL,
                         "worker_main: the fork server was not started by "
                         "pool_global_init_main with it, and there is no "
                         "worker_argv to exec instead");
    }
    if (rc == PK_OK) {
        m->u.pool = *cfg;
        rc = ctl_call(m, fds, heapfd >= 0 ? 3 : 2, 1, err);
    }
    pthread_mutex_unlock(&fs_mu);
    pk__free(m);
    close(sv[1]);
    for (int i = early; i < nfirst && rc == PK_OK; i++)
        if (pool__fs_send(sv[0], &first[i]) != PK_OK)
            rc = pk__err_sys(err, PK_ESYS, errno, "sending the first spawns");
    if (rc != PK_OK) {
        close(sv[0]);
        return rc;
    }
    *chan = sv[0];
    return PK_OK;
}

pk_err_t pool__fs_plugin(const char *path, pk_error_t *err)
{
    ctl_msg_t *m = pk__calloc(1, sizeof *m);
    if (m == NULL)
        return pk__err(err, PK_ENOMEM, "out of memory");
    if (strlen(path) >= sizeof m->u.path) {
        pk__free(m);
        return pk__err(err, PK_EINVAL, "plugin path too long");
    }
    m->type = CTL_PLUGIN;
    m->ack = 1;
    strcpy(m->u.path, path);
    pthread_mutex_lock(&fs_mu);
    pk_err_t rc = ctl_call(m, NULL, 0, 1, err);
    pthread_mutex_unlock(&fs_mu);
    pk__free(m);
    return rc;
}

void pool__fs_register(const char *module, const char *name, pool_fn_t fn,
                       void *udata)
{
    ctl_msg_t m; /* on the stack: see on_register */
    memset(&m, 0, sizeof m);
    if (strlen(module) < sizeof m.u.reg.module &&
        strlen(name) < sizeof m.u.reg.name) {
        m.type = CTL_REGISTER;
        strcpy(m.u.reg.module, module);
        strcpy(m.u.reg.name, name);
        m.u.reg.fn = fn;
        m.u.reg.udata = udata;
        pthread_mutex_lock(&fs_mu);
        if (fs_ctl >= 0 && fs_owner == getpid())
            (void)ctl_call(&m, NULL, 0, 0, NULL);
        pthread_mutex_unlock(&fs_mu);
    }
}

int pool__fs_pid_stopped(int pid)
{
    char path[64], buf[512];
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* "pid (comm) S ...": comm may hold anything, so the state is after the
     * last ')'. */
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && rp[2] == 'T';
}
