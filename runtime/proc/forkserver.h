/*
 * forkserver.h - the fork server: the one process that forks workers (private).
 *
 * Fork discipline.  A process that has started threads, or created a ZeroMQ
 * context, cannot safely fork a child that goes on to do real work: the
 * child gets copies of locks held by threads that no longer exist, and
 * zmq_ctx_term() on an inherited context can spin on EINTR for ever.  So
 * pool_global_init(), the first time it runs in a process, (1) loads the
 * hwloc topology, (2) flushes stdio, and (3) forks the fork server, all
 * before libpicklepool creates any thread or ZeroMQ context.  The fork
 * server stays single-threaded and never touches ZeroMQ.  It moves into its
 * own process group (a Ctrl-C at the terminal reaches the master, which
 * decides), and, when forked from the main thread, sets PR_SET_PDEATHSIG
 * and re-checks getppid() (the death signal follows the forking *thread*,
 * so from another thread it relies on the control channel's EOF alone).
 * Its death signal is SIGTERM, read from its signalfd, not SIGKILL: it must
 * outlive the master long enough to kill and reap the workers and remove
 * the ipc directories.  Workers are forked from the fork server and
 * do their setup in this order: PR_SET_PDEATHSIG(SIGKILL) and a getppid()
 * re-check (so they die with the fork server), default signal dispositions
 * and an empty mask, map the pool's scoreboard and arena (read-only but for
 * the worker's own bitmap and result region; see shm.h), close every inherited
 * fd but stdio, bind to their CPUs with HWLOC_CPUBIND_PROCESS, run the pool's
 * initializer, and only then create their own ZeroMQ context, whose I/O
 * threads inherit the binding.  Exec'd workers and workers running a main
 * (pool_global_init_main) do the same up to the binding, keeping only the
 * memfd, then set their environment and exec or call the main; a worker
 * running a main makes its ZeroMQ context (bound, as above) just before
 * the main's at_fork hook, so that its connection is made while the
 * interpreter starts (pool__worker_preconnect, worker.h): the main's own
 * code, an interpreter's initializer included, runs with ZeroMQ's threads
 * already there (a Python initializer that forks forks a threaded
 * process, as a task that forks always did).  A fork
 * server started with a main keeps each descriptor the master had open as
 * /dev/null at the same number, not closed: a main runs the master's
 * copied code and objects, and one of those closing "its" descriptor must
 * not close one the worker opened since under that number.  The initializer, its argument and in-process
 * registrations are inherited from the fork server's copy of the master's
 * memory, taken when the fork server was forked; registrations and plugin
 * loads made later are forwarded over the control channel.
 *
 * Channels.  The master talks to the fork server over a SOCK_SEQPACKET
 * control channel (pool creation, plugin loads, registrations; calls on it
 * are serialised by a mutex).  Every pool gets a private channel, one end of
 * a fresh socketpair passed over the control channel with SCM_RIGHTS, on
 * which the pool's master thread sends SPAWN / KILL and receives SPAWNED,
 * SPAWN_FAILED and DIED.  The fork server reaps with a signalfd(SIGCHLD) and
 * reports each death at once.  When a pool channel closes (the pool was
 * destroyed, or the master process died) the fork server SIGKILLs and reaps
 * that pool's workers and removes its ipc directory; when the control
 * channel closes it does so for every pool and exits.  No orphan process or
 * socket file survives even a SIGKILLed master.
 *
 * Thread-safety: everything here may be called from any thread.  In a child
 * forked from a process that had a fork server, pool__fs_init() starts a new
 * one (the inherited channel belongs to the parent).
 */
#ifndef POOL_FORKSERVER_H
#define POOL_FORKSERVER_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "picklepool/error.h"
#include "picklepool/registry.h"
#include "picklepool/worker.h"
#include "ipc/shm.h"
#include "proc/topology.h"

#define POOL_FS_EXEC_BYTES 8192 /* an exec'd worker's argv, and its env */

/* What the fork server needs to know about a pool (sent once, by value). */
typedef struct pool__fs_pool_cfg {
    char dir[256];      /* the pool's 0700 ipc directory (removed at close) */
    char endpoint[300]; /* "ipc://<dir>/pool.sock" */
    int nworkers;
    int prefetch;
    uint64_t maxtasks; /* items per worker before it retires; 0: never */
    uint64_t max_rss;  /* bytes; 0: no limit */
    void (*initializer)(void *arg);
    void *initarg;
    pool__shm_layout_t shm; /* the arena (size 0: none) */
    uint64_t shm_off;       /* its offset in the scoreboard memfd */
    uint64_t shm_threshold; /* result buffers this big go through it */
    uint64_t spin_ns;       /* fast lanes' busy-poll budget (0: no lanes) */
    uint64_t heap_size;     /* the shared heap's bytes (0: none; shm.h) */
    int heap_fd; /* its descriptor where it is mapped from: set by the fork
                    server and the exec'd worker, not by the master */
    /* Exec'd workers (picklepool/worker.h): the command, as NUL-separated
     * arguments ending with an empty one, and variables added to its
     * environment ("NAME=value", the same way); exec_argv[0] == '\0':
     * native workers forked from the fork server. */
    char exec_argv[POOL_FS_EXEC_BYTES];
    char exec_env[POOL_FS_EXEC_BYTES];
    /* Forked workers running a main (pool_opts_t.worker_main) instead of
     * exec_argv; NULL: none.  pool__fs_open_pool keeps it only when the
     * fork server was started with this main, and the fork server checks
     * again against its own copy. */
    pool_worker_main_fn worker_main;
    void *worker_main_arg;
} pool__fs_pool_cfg_t;

/* Pool-channel messages (fixed size, one per SEQPACKET datagram). */
enum pool__fs_type {
    POOL_FS_SPAWN = 1,    /* master -> fs: slot, gen, bind, cpus */
    POOL_FS_KILL,         /* master -> fs: slot, gen, pid, arg = signal */
    POOL_FS_SPAWNED,      /* fs -> master: slot, gen, pid */
    POOL_FS_SPAWN_FAILED, /* fs -> master: slot, gen, arg = errno */
    POOL_FS_DIED          /* fs -> master: slot, gen, pid, arg = wait status */
};

typedef struct pool__fs_msg {
    uint32_t type; /* pool__fs_type */
    int32_t slot;
    uint32_t gen;
    int32_t pid;
    int32_t arg;
    int32_t bind; /* SPAWN: non-zero to bind to cpus */
    pool__cpuset_t cpus;
} pool__fs_msg_t;

/* Loads the topology and starts the fork server (once per process; later
 * calls return at once, unless the fork server was found dead since: then
 * they start a new one).  A fork server started here with main != NULL
 * may fork workers that call main (after at_fork, when not NULL) instead
 * of exec'ing; one started with NULL never does.  Returns PK_OK or
 * PK_ESYS. */
pk_err_t pool__fs_init(pool_worker_main_fn main, void (*at_fork)(void),
                       pk_error_t *err);

/* Stops the fork server (which kills the workers of every pool it still
 * serves, and exits), reaps it and frees the topology.  A later
 * pool__fs_init starts a new one.  Call it when no pool exists. */
void pool__fs_fini(void);

/* The machine topology loaded before the fork server was forked (valid after
 * a successful pool__fs_init). */
const pool__topo_t *pool__fs_topo(void);

/* Opens a pool's private channel: sends cfg, the scoreboard memfd and the
 * shared heap's (heapfd, -1: none) (which the fork server dups; the caller
 * keeps its own) and returns the master's
 * end of the channel in *chan (SOCK_CLOEXEC; close it to end the pool).
 * first[0..nfirst) (may be NULL when 0) are queued on the channel before
 * the pool is sent: the pool's first SPAWNs, which the fork server then
 * reads as soon as it has taken the pool.

 * cfg->worker_main is cleared when the fork server was not started with
 * it (its workers are then exec'd).  Returns PK_OK, PK_ESYS, PK_EINVAL
 * (cleared, and no exec_argv to fall back to) or PK_EIO (the fork server
 * is gone). */
pk_err_t pool__fs_open_pool(pool__fs_pool_cfg_t *cfg, int memfd, int heapfd,
                            const pool__fs_msg_t *first, int nfirst, int *chan,
                            pk_error_t *err);

/* Makes the fork server load a plugin too, so later workers have it.
 * Returns PK_OK or what pool_plugin_load returned there. */
pk_err_t pool__fs_plugin(const char *path, pk_error_t *err);

/* Forwards a registration made in the master after the fork server started
 * (no-op when there is none).  fn and udata must be valid in the fork
 * server: code and data that existed when it was forked, or in a plugin it
 * has loaded at the same address. */
void pool__fs_register(const char *module, const char *name, pool_fn_t fn,
                       void *udata);

/* Sends / receives one pool-channel message.  Send returns PK_OK or PK_ESYS;
 * receive returns 1 (got one), 0 (EOF: the fork server is gone), -1 (EAGAIN
 * or a malformed datagram, nothing read) or -2 (error). */
pk_err_t pool__fs_send(int chan, const pool__fs_msg_t *m);
int pool__fs_recv(int chan, pool__fs_msg_t *m);

/* 1 when process `pid` is in a job-control stop (SIGSTOP, SIGTSTP: state
 * T in /proc/PID/stat), 0 when it is not or cannot be looked at (a traced
 * process, stopped in a debugger, counts as not stopped). */
int pool__fs_pid_stopped(int pid);

#endif /* POOL_FORKSERVER_H */
