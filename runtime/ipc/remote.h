/*
 * remote.h - what `picklepool serve` and its peers (host agents, remote
 * pools' forwarders) share (private): which keys each side loads, their
 * sockets, whole multipart messages, and the HELLO / WELCOME / STOP /
 * HEARTBEAT exchanges of docs/PROTOCOL.md ("Scale-out").
 *
 * Keys.  serve binds and holds the pair named POOL_REMOTE_SERVER_NAME
 * ("master") in its key directory, whose every NAME.pub is its allow-list.
 * A connecting side's directory holds its own pair and the master's public
 * key, master.pub: its pair is the one NAME.key there that is not
 * master.key (or the one named explicitly), so `picklepool keygen DIR` on
 * each machine and a copy of master.pub is the whole set-up (README, "Keys
 * for tcp endpoints").  Plain tcp needs an explicit insecure flag, and an
 * ipc:// endpoint needs neither (curve.h, pool__net_mode).
 *
 * Sessions.  A peer connects a DEALER, says HELLO (HOST with its capacity,
 * or CLIENT) with its name, and serve answers WELCOME with a session id, the
 * heartbeat interval and the liveness (intervals of silence after which
 * either side declares the other gone).  Both sides send a HEARTBEAT every
 * interval; any message counts as a sign of life.  STOP from serve ends a
 * session (or says a peer has none: it must say HELLO again); STOP from a
 * peer says it leaves.
 *
 * Thread-safety: key sets are read-only once loaded; a socket and the
 * messages read from it belong to one thread.  Fork-safety: nothing here
 * survives a fork (DESIGN.md, "Fork discipline").
 */
#ifndef POOL_REMOTE_H
#define POOL_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "ipc/curve.h"
#include "ipc/wire.h"
#include "picklepool/error.h"

/* The name of serve's key pair; peers trust NAME.pub of this name. */
#define POOL_REMOTE_SERVER_NAME "master"

/* Defaults of serve's heartbeat (WELCOME tells the peers). */
#define POOL_REMOTE_HEARTBEAT_NS 1000000000ull
#define POOL_REMOTE_LIVENESS 3

/* How long a connecting side waits for a handshake's verdict. */
#define POOL_REMOTE_HANDSHAKE_MS 5000

/* The most frames serve reads of one message (a TASK of the most buffers,
 * its header and routing id); the rest of a longer one is dropped. */
#define POOL_REMOTE_MAX_FRAMES ((size_t)POOL_WIRE_MAX_BUFS + 8)

/* ---- security ------------------------------------------------------------ */

/* How one side secures its socket. */
typedef struct pool__remote_sec {
    pool__net_mode_t mode;
    pool__curve_keys_t *keys;                /* CURVE: loaded (owned) */
    char server_z85[POOL_CURVE_Z85_LEN + 1]; /* CURVE client: master.pub */
} pool__remote_sec_t;

/* Decides how `endpoint` is secured (pool__net_mode) and loads what that
 * needs into *out: for a CURVE server (for_bind non-zero) the pair `name`
 * (NULL: "master") and the allow-list of keydir; for a CURVE client the
 * pair `name` (NULL: the one NAME.key of keydir that is not master.key)
 * and master.pub.  Returns PK_OK with *out filled (free it with
 * pool__remote_sec_free), or an error naming the endpoint, the directory
 * or the file and what to do: PK_EINVAL (no keys and no insecure, both,
 * no pair or several, no master.pub), and pool__curve_keys_load's errors.
 * *out needs no free on failure.  Thread-safe. */
pk_err_t pool__remote_sec_load(const char *endpoint, int for_bind,
                               const char *keydir, const char *name,
                               int insecure, pool__remote_sec_t *out,
                               pk_error_t *err);

/* Frees what *s holds (wiping the secret key).  Idempotent. */
void pool__remote_sec_free(pool__remote_sec_t *s);

/* ---- sockets ---------------------------------------------------------------- */

/* A DEALER of context zctx connected to `endpoint` as `sec` says, with a
 * handshake watch (curve.h) started before it connects, naming the other
 * side `peer` in messages ("the master").  Linger 0, no high-water marks
 * (credit is the flow control), reconnects every 100 ms growing to 2 s.
 * Returns PK_OK with *sock and *watch owned by the caller (close the watch
 * with pool__curve_watch_close, then the socket with zmq_close), or
 * PK_ESYS / PK_EINVAL / PK_ENOMEM with nothing left open. */
pk_err_t pool__remote_dealer(void *zctx, const char *endpoint,
                             const pool__remote_sec_t *sec, const char *peer,
                             void **sock, pool__curve_watch_t **watch,
                             pk_error_t *err);

/* ---- messages ---------------------------------------------------------------- */

/* A multipart message as read: frames f[0..n). */
typedef struct pool__msg {
    zmq_msg_t *f;
    size_t n, cap;
    int truncated; /* frames past `max` were read and dropped */
} pool__msg_t;

/* Reads the next whole message from sock into m (whose frames must have
 * been released with pool__msg_clear), keeping at most max frames (the
 * rest are read and dropped, and m->truncated set).  flags: 0 or
 * ZMQ_DONTWAIT for the first frame.  Returns PK_OK, PK_EOF when nothing was
 * waiting (DONTWAIT) or the wait was interrupted, PK_ENOMEM (the message
 * was drained and dropped) or PK_ESYS (errno kept, e.g. ETERM). */
pk_err_t pool__msg_recv(void *sock, pool__msg_t *m, size_t max, int flags,
                        pk_error_t *err);

/* Closes the frames of m (keeps its array for the next message). */
void pool__msg_clear(pool__msg_t *m);

/* pool__msg_clear, then frees the array.  Idempotent. */
void pool__msg_free(pool__msg_t *m);

/* Sends len bytes of data (copied) as one frame, with ZMQ_SNDMORE when
 * `more`.  Returns 0 or -1 (errno set by ZeroMQ). */
int pool__remote_send(void *sock, const void *data, size_t len, int more);

/* Sends the header h as one frame (ZMQ_SNDMORE when `more`).  0 or -1. */
int pool__remote_send_hdr(void *sock, const pool__wire_hdr_t *h, int more);

/* Sends frame *m (moved: *m is empty afterwards, even on failure) with
 * ZMQ_SNDMORE when `more`.  0 or -1. */
int pool__remote_send_msg(void *sock, zmq_msg_t *m, int more);

/* ---- logs ------------------------------------------------------------------------ */

/* Prints "WHO: message" on stderr as one line (message cut at 700 bytes).
 * Thread-safe (one write per line). */
void pool__remote_say(const char *who, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The same with " (logged once)" appended, the first time a kind (0..31)
 * is seen in *logged only: malformed input is said once, not flooded. */
void pool__remote_log_once(unsigned *logged, int kind, const char *who,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- sessions ------------------------------------------------------------------ */

/* Sends a peer's HELLO: role POOL_WIRE_F_HOST (capacity 1..1024) or
 * POOL_WIRE_F_CLIENT (capacity 0), its name (printable ASCII, cut to
 * POOL_WIRE_NAME_MAX bytes) and pid.  Returns 0 or -1. */
int pool__remote_hello(void *sock, uint16_t role, uint32_t capacity,
                       const char *name);

/* What a WELCOME said. */
typedef struct pool__welcome {
    uint64_t session;
    uint64_t heartbeat_ns;
    uint32_t liveness;
} pool__welcome_t;

/* Reads a WELCOME out of a message received from serve (frames m->f[0..]
 * with no routing id).  Returns PK_OK with *w filled, PK_EINVAL when the
 * message is a valid other kind (h filled: the caller decides), or
 * PK_EPROTO when it is malformed (err says how). */
pk_err_t pool__remote_welcome(const pool__msg_t *m, pool__wire_hdr_t *h,
                              pool__welcome_t *w, pk_error_t *err);

/* The clocks of a peer's link to serve (the host agent's and the
 * forwarder's): the session and its heartbeats both ways, and reconnects
 * that back off, doubling from 0.1 s up to backoff_max_ns, while serve
 * does not answer.  The owner sets heard_ns when a message comes. */
/* A HELLO unanswered this long is reported ("still trying"); a connection
 * (re)made this long after the last HELLO gets a new one. */
#define POOL_LINK_WELCOME_WAIT_NS 10000000000ull
#define POOL_LINK_HELLO_AGAIN_NS 50000000ull

typedef struct pool__link {
    uint64_t session;           /* 0: none yet */
    uint64_t hb_ns, dead_ns;    /* heartbeat interval; silence that ends it */
    uint64_t heard_ns, sent_ns; /* last message from serve, to serve */
    uint64_t backoff_ns, backoff_max_ns, retry_at;
} pool__link_t;

void pool__link_init(pool__link_t *l, uint64_t backoff_max_ns);
/* A WELCOME taken: its session and heartbeat; the backoff starts over. */
void pool__link_join(pool__link_t *l, const pool__welcome_t *w, uint64_t now);
/* The connection was closed: connect again at once, or (backoff) after the
 * current delay, which then doubles. */
void pool__link_closed(pool__link_t *l, uint64_t now, int backoff);
/* In a session: 1 when serve was silent longer than the session allows
 * (the caller ends it); else 0, after sending a HEARTBEAT on sock when one
 * is due. */
int pool__link_beat(pool__link_t *l, void *sock, uint64_t now);

/* The name a host or client gives itself: "HOST" or "HOST rank R" when a
 * launcher says which rank this process is (SLURM_PROCID, else
 * OMPI_COMM_WORLD_RANK, else PMIX_RANK), written into buf.  Returns buf. */
const char *pool__remote_default_name(char *buf, size_t size);

/* The rank layout a launcher gives this process. */
typedef struct pool__launch {
    const char *launcher; /* "slurm", "mpi" or NULL (none) */
    long rank, size;      /* -1 when unknown */
    long local_rank;      /* rank among the processes on this node, -1 */
    long local_size;      /* processes on this node, -1 when unknown */
} pool__launch_t;

/* Reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (and the node's task
 * count from SLURM_TASKS_PER_NODE with SLURM_NODEID, or SLURM_NTASKS over
 * SLURM_NNODES), or OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK /
 * _LOCAL_SIZE.  Values that are not plain numbers are ignored.  Pure but
 * for getenv. */
void pool__launch_get(pool__launch_t *out);

#endif /* POOL_REMOTE_H */
