/*
 * curve.h - CURVE security for tcp endpoints (private): key files, socket
 * set-up, the ZAP handler that allow-lists public keys, a watch that turns
 * ZeroMQ's silent handshake retries into an error, and the endpoint rules
 * (which transport needs which security).
 *
 * Key directory.  A directory of text files, each holding one Z85 key (40
 * characters) on a line of its own; blank lines and lines starting with
 * '#' are comments (no Z85 key starts with '#').  A key pair is named
 * NAME (letters, digits, '.', '_', '-'; not starting with '.'; at most
 * POOL_CURVE_NAME_MAX characters):
 *
 *   NAME.key   the secret key, mode 0600 (only its owner reads it)
 *   NAME.pub   the public key, to hand to the peers
 *
 * The allow-list of a directory is every NAME.pub in it (hidden files and
 * other names are ignored).  A directory can thus hold a server's pair and
 * the public keys of every host and client it lets in, and a client's
 * directory its own pair and the server's NAME.pub.  Loading is strict, the
 * way ssh is with its keys, because whoever can write to the directory can
 * let themselves in: the directory and every key file must belong to the
 * caller's effective user (or root) and be writable by nobody else, and a
 * secret key must be readable by nobody else.  Anything else is refused with
 * a message naming the file and what to run (`chmod 600 ...`).
 *
 * Servers.  A tcp socket that binds sets CURVE_SERVER with its secret key and
 * a ZAP domain, and relies on a ZAP handler running in the same ZeroMQ
 * context: without one libzmq accepts any client key.  The server set-up
 * therefore takes the running handler, and also asks libzmq to enforce the
 * domain (ZMQ_ZAP_ENFORCE_DOMAIN where the library takes it), so that a
 * missing handler refuses every client instead of accepting them all.  A
 * peer that fails the handshake never gets a frame to the server socket.
 *
 * Clients.  A refused client is not told by ZeroMQ: it retries for ever,
 * quietly.  pool__curve_watch_* reads the socket's monitor events, so a
 * client learns within one round trip that the server refused its key (ZAP
 * status 400), that one side has no CURVE at all (mechanism mismatch), or
 * that the server dropped the handshake (a wrong server public key), and
 * can stop with a message saying which.
 *
 * Thread-safety: key sets are immutable after loading and may be shared by
 * threads.  A ZAP handler runs on its own thread; start and stop it from the
 * thread that owns the context's life.  A watch belongs to the thread that
 * owns the watched socket, like the socket itself.  Fork-safety: none of
 * these objects survives a fork; a child never touches them (DESIGN.md,
 * "Fork discipline").
 */
#ifndef POOL_CURVE_H
#define POOL_CURVE_H

#include <stddef.h>
#include <stdint.h>

#include "picklepool/error.h"

#define POOL_CURVE_KEY_BYTES 32  /* a binary CURVE key */
#define POOL_CURVE_Z85_LEN 40    /* its Z85 text, without the NUL */
#define POOL_CURVE_NAME_MAX 64   /* characters of a key pair's NAME */
#define POOL_CURVE_MAX_KEYS 4096 /* public keys a directory may hold */
#define POOL_CURVE_FILE_MAX 4096 /* bytes of a key file */

/* The ZAP domain picklepool's servers use unless told otherwise. */
#define POOL_CURVE_DOMAIN "picklepool"

/* ---- endpoints ----------------------------------------------------------- */

typedef enum pool__ep_kind {
    POOL_EP_TCP = 1,
    POOL_EP_IPC,
    POOL_EP_INPROC
} pool__ep_kind_t;

typedef struct pool__endpoint {
    pool__ep_kind_t kind;
    char host[256]; /* tcp: host name, IPv4, IPv6 without brackets, or "*" */
    int port;       /* tcp: 1..65535, or 0 for "*" / "0" (bind only) */
} pool__endpoint_t;

/* Non-zero when `ep` starts with "tcp://" (whether valid or not).  NULL is
 * 0.  Pure. */
int pool__endpoint_is_tcp(const char *ep);

/* Checks `ep` and splits it into *out (may be NULL).  Accepted:
 *   tcp://HOST:PORT   HOST a host name, IPv4 address, [IPv6] address, or
 *                     (when binding) "*" or an interface name; PORT 1..65535,
 *                     or (when binding) "*" or 0 for a port the system picks
 *   ipc://PATH        PATH non-empty and short enough for a socket address
 *                     ("@name" is Linux's abstract namespace)
 *   inproc://NAME     NAME non-empty
 * `for_bind` is non-zero for an endpoint to bind, zero for one to connect to.
 * Returns PK_OK, or PK_EINVAL with err naming the endpoint and what is wrong
 * with it.  Pure; out is untouched on failure. */
pk_err_t pool__endpoint_parse(const char *ep, int for_bind,
                              pool__endpoint_t *out, pk_error_t *err);

/* How a socket on an endpoint is secured. */
typedef enum pool__net_mode {
    POOL_NET_LOCAL = 1, /* ipc:// or inproc://: this machine only */
    POOL_NET_CURVE,     /* tcp:// with CURVE keys */
    POOL_NET_INSECURE   /* tcp:// in plain text, asked for explicitly */
} pool__net_mode_t;

/* Decides how `ep` is secured: a valid tcp endpoint needs exactly one of
 * `have_keys` (a key directory was given) and `insecure` (plain tcp asked
 * for explicitly); ipc and inproc endpoints are POOL_NET_LOCAL and take
 * neither.  Returns PK_OK with *mode set, or PK_EINVAL with err saying what
 * is missing or conflicting (the endpoint's own faults as
 * pool__endpoint_parse says them).  Pure. */
pk_err_t pool__net_mode(const char *ep, int for_bind, int have_keys,
                        int insecure, pool__net_mode_t *mode, pk_error_t *err);

/* ---- keys ---------------------------------------------------------------- */

/* A public key of the allow-list. */
typedef struct pool__curve_pub {
    uint8_t key[POOL_CURVE_KEY_BYTES];
    char z85[POOL_CURVE_Z85_LEN + 1];
    char name[POOL_CURVE_NAME_MAX + 1]; /* its file name without ".pub" */
} pool__curve_pub_t;

/* A loaded key directory.  Read-only once loaded; free it with
 * pool__curve_keys_free (which wipes the secret key from memory). */
typedef struct pool__curve_keys {
    char *dir;                               /* as given (owned) */
    char name[POOL_CURVE_NAME_MAX + 1];      /* own pair, "" if none */
    char public_z85[POOL_CURVE_Z85_LEN + 1]; /* own pair ("" if none) */
    char secret_z85[POOL_CURVE_Z85_LEN + 1];
    size_t nallow;            /* public keys in the directory */
    pool__curve_pub_t *allow; /* sorted by key (owned; NULL when none) */
} pool__curve_keys_t;

/* Non-zero when `name` may name a key pair (see the top of this file).
 * Pure. */
int pool__curve_name_ok(const char *name);

/* Non-zero when this libzmq can do CURVE (it was built with libsodium or
 * tweetnacl).  Thread-safe. */
int pool__curve_available(void);

/* Checks that `dir` may hold keys: an existing directory owned by this
 * effective user or root, writable by nobody else.  Returns PK_OK, PK_ESYS
 * (errno kept: missing, not readable) or PK_EINVAL (not a directory, wrong
 * owner, too open: the message says which and what to run).  Thread-safe. */
pk_err_t pool__curve_check_dir(const char *dir, pk_error_t *err);

/* Reads the key file at `path` into z85 (40 characters and a NUL) and, when
 * `bin` is not NULL, its 32 binary bytes.  A file whose name ends in ".key"
 * is a secret key and must be readable by its owner alone; any key file
 * must be a regular file owned by this effective user or root and writable
 * by nobody else.  Returns PK_OK, PK_ESYS (errno kept: cannot open or read),
 * or PK_EINVAL naming the file and its fault (permissions, size over
 * POOL_CURVE_FILE_MAX, no key, two keys, not 40 Z85 characters).  z85 and
 * bin are wiped on failure.  Thread-safe. */
pk_err_t pool__curve_read_key(const char *path, char *z85, uint8_t *bin,
                              pk_error_t *err);

/* Loads the key directory `dir`: the pair NAME.key / NAME.pub when `name`
 * is not NULL (NAME.key is required; NAME.pub is optional but must match
 * it), and the allow-list of every *.pub.  Every rule above is checked;
 * one bad file fails the whole load (no allow-list is ever partial).
 * Returns PK_OK with *out owned by the caller (pool__curve_keys_free),
 * PK_ESYS (errno kept), PK_EINVAL (message naming the file and the fault),
 * PK_ELIMIT (more than POOL_CURVE_MAX_KEYS public keys), PK_EUNSUPPORTED
 * (no CURVE in this libzmq) or PK_ENOMEM; *out is NULL on failure.
 * Thread-safe. */
pk_err_t pool__curve_keys_load(const char *dir, const char *name,
                               pool__curve_keys_t **out, pk_error_t *err);

/* Frees *k after wiping its secret, and sets *k to NULL.  NULL or *k NULL
 * is a no-op. */
void pool__curve_keys_free(pool__curve_keys_t **k);

/* The allow-listed key whose file is NAME.pub, or NULL.  The pointer lives
 * as long as k.  Thread-safe (k is read-only). */
const pool__curve_pub_t *pool__curve_keys_find(const pool__curve_keys_t *k,
                                               const char *name);

/* The allow-list entry of the binary key `key` (POOL_CURVE_KEY_BYTES), or
 * NULL when it is not allow-listed.  O(log n).  Thread-safe. */
const pool__curve_pub_t *pool__curve_keys_allowed(const pool__curve_keys_t *k,
                                                  const uint8_t *key);

/* Makes a new key pair with zmq_curve_keypair and writes it as dir/NAME.key
 * (mode 0600) and dir/NAME.pub (mode 0644), each written in full to a
 * temporary file and renamed into place, the public key last.  `dir` is
 * created with mode 0700 when missing (its parent must exist), and must
 * pass pool__curve_check_dir.  Without `force` an existing NAME.key or
 * NAME.pub is left alone and the call fails.  On success public_z85 (41
 * bytes, may be NULL) gets the new public key.  Returns PK_OK, PK_EINVAL
 * (bad name, directory refused, a file exists: the message names it and
 * says --force replaces it), PK_ESYS (errno kept), or PK_EUNSUPPORTED; on
 * failure nothing new is left in dir except the directory itself.
 * Thread-safe. */
pk_err_t pool__curve_keygen(const char *dir, const char *name, int force,
                            char *public_z85, pk_error_t *err);

/* ---- the ZAP handler ----------------------------------------------------- */

typedef struct pool__zap pool__zap_t;

/* What the handler has answered so far. */
typedef struct pool__zap_stats {
    uint64_t allowed;   /* 200: an allow-listed CURVE key */
    uint64_t refused;   /* 400: a well-formed request that is not allowed */
    uint64_t malformed; /* 500: a request that breaks the ZAP protocol */
} pool__zap_stats_t;

/* Called by the handler's thread before each answer: `status` is 200, 400 or
 * 500, `address` the peer's address as libzmq gave it ("" when unknown),
 * `who` the key's name for 200 and the key's Z85 (or "") otherwise, and
 * `reason` one line saying why.  The strings live for the call only.  It
 * must not block for long: handshakes wait on it. */
typedef void (*pool__zap_log_fn)(void *arg, int status, const char *address,
                                 const char *who, const char *reason);

/* Starts a ZAP handler (ZeroMQ RFC 27) in the context `zctx`: a REP socket
 * bound to inproc://zeromq.zap.01, served by a thread of its own, which
 * answers 200 to a CURVE request of domain `domain` (NULL:
 * POOL_CURVE_DOMAIN) whose key is allow-listed in `keys`, 400 to any other
 * well-formed request (another mechanism, domain or key), and 500 to a
 * malformed one; it never stops on bad input.  A 200 answer's User-Id is
 * the key's name, and it carries the property "X-Curve-Public" with the
 * key's Z85, both readable with zmq_msg_gets on every message from that
 * peer.  The allow-list is copied: `keys` may be freed afterwards.  `log`
 * (may be NULL) is called as said above, with `arg`.  Returns PK_OK with
 * *out owned by the caller (pool__zap_stop before the context ends),
 * PK_EINVAL (a handler already runs in zctx, or a bad domain), PK_ESYS
 * (errno kept) or PK_ENOMEM. */
pk_err_t pool__zap_start(void *zctx, const pool__curve_keys_t *keys,
                         const char *domain, pool__zap_log_fn log, void *arg,
                         pool__zap_t **out, pk_error_t *err);

/* Stops the handler: wakes its thread, waits for it, closes its socket (so
 * the context can end and another handler may start), frees *z and sets it
 * to NULL.  NULL or *z NULL is a no-op.  Returns within milliseconds. */
void pool__zap_stop(pool__zap_t **z);

/* The handler's answers so far.  Thread-safe. */
void pool__zap_stats(const pool__zap_t *z, pool__zap_stats_t *out);

/* The ZAP domain it serves (static for the handler's life). */
const char *pool__zap_domain(const pool__zap_t *z);

/* ---- socket set-up ------------------------------------------------------- */

/* Makes `sock` (not yet bound) a CURVE server with keys' own secret key and
 * the ZAP domain of the running handler `zap` (started in the same context
 * as sock), enforcing the domain where libzmq allows it.  Returns PK_OK,
 * PK_EINVAL (keys without a pair) or PK_ESYS (errno kept).  Call it from the
 * socket's thread. */
pk_err_t pool__curve_server_setup(void *sock, const pool__curve_keys_t *keys,
                                  const pool__zap_t *zap, pk_error_t *err);

/* Makes `sock` (not yet connected) a CURVE client with keys' own pair,
 * trusting the server whose public key is `server_z85` (40 Z85 characters,
 * usually pool__curve_keys_find(keys, NAME)->z85).  Returns PK_OK, PK_EINVAL
 * (keys without a pair, a malformed server key) or PK_ESYS (errno kept).
 * Call it from the socket's thread. */
pk_err_t pool__curve_client_setup(void *sock, const pool__curve_keys_t *keys,
                                  const char *server_z85, pk_error_t *err);

/* ---- the handshake watch ------------------------------------------------- */

typedef struct pool__curve_watch pool__curve_watch_t;

typedef enum pool__curve_ev {
    POOL_CURVE_EV_NONE = 0,  /* no event within the wait */
    POOL_CURVE_EV_CONNECTED, /* tcp connected (handshake next) */
    POOL_CURVE_EV_ACCEPTED,  /* a server accepted a tcp connection */
    POOL_CURVE_EV_RETRY,     /* connect failed or was delayed; retrying */
    POOL_CURVE_EV_CLOSED,    /* an established connection went away */
    POOL_CURVE_EV_OK,        /* handshake done (authenticated, if CURVE) */
    POOL_CURVE_EV_REFUSED,   /* ZAP said 400: the key is not allowed */
    POOL_CURVE_EV_AUTH,      /* ZAP said 300 or 500 */
    POOL_CURVE_EV_PROTOCOL,  /* handshake protocol error (value: which) */
    POOL_CURVE_EV_DROPPED,   /* connection lost during the handshake */
    POOL_CURVE_EV_OTHER      /* any other event (listening, closed...) */
} pool__curve_ev_t;

typedef struct pool__curve_event {
    pool__curve_ev_t kind;
    int zmq_event;      /* the ZMQ_EVENT_* it came from (0 for NONE) */
    int value;          /* ZAP status, ZMQ_PROTOCOL_ERROR_*, errno... */
    int curve;          /* the watched socket uses CURVE */
    char endpoint[256]; /* the endpoint (or peer address) concerned */
} pool__curve_event_t;

/* Non-zero for the kinds that end a handshake in failure (REFUSED, AUTH,
 * PROTOCOL, DROPPED).  Pure. */
int pool__curve_ev_failed(pool__curve_ev_t kind);

/* One line for a handshake failure seen by a client, with `peer` naming the
 * other side ("the master"; NULL: "the server"): e.g. "the master refused
 * our key: not allow-listed (ZAP status 400 from tcp://10.0.0.1:5555)".
 * Always NUL-terminates buf (size > 0).  Returns buf.  Pure. */
const char *pool__curve_describe(const pool__curve_event_t *ev,
                                 const char *peer, char *buf, size_t size);

/* Starts watching the handshakes of `sock` (a socket of context `zctx`):
 * its monitor, read through a PAIR socket the watch owns.  `peer` (copied;
 * NULL: "the server") names the other side in messages.  Start it before
 * the socket connects or binds, so no event is missed.  libzmq keeps one
 * monitor per socket: a second watch (or any zmq_socket_monitor) on the
 * same socket replaces the first, which then sees nothing.  Returns PK_OK with
 * *out owned by the caller (pool__curve_watch_close, before sock closes),
 * PK_ESYS (errno kept) or PK_ENOMEM. */
pk_err_t pool__curve_watch_open(void *zctx, void *sock, const char *peer,
                                pool__curve_watch_t **out, pk_error_t *err);

/* Takes the next event, waiting up to timeout_ms (0: no wait; -1: for
 * ever).  Returns PK_OK with *ev filled (kind NONE when none came in time),
 * or PK_ESYS (errno kept, e.g. ETERM when the context is ending). */
pk_err_t pool__curve_watch_next(pool__curve_watch_t *w, int timeout_ms,
                                pool__curve_event_t *ev, pk_error_t *err);

/* Waits up to timeout_ms for the socket's next handshake to finish.
 * Returns PK_OK when it succeeded; PK_EPROTO when it failed, with err's
 * message from pool__curve_describe ("the master refused our key: not
 * allow-listed ..."); PK_ETIMEDOUT when none finished in time, saying what
 * was seen (nothing, connection attempts refused, connected but no answer);
 * PK_ESYS as pool__curve_watch_next.  The event that ended the wait goes to
 * *last (may be NULL; kind NONE on a time-out).  After a failure ZeroMQ
 * goes on reconnecting (and being refused) until the socket is closed or
 * disconnected: a caller that gives up closes it. */
pk_err_t pool__curve_watch_handshake(pool__curve_watch_t *w, int timeout_ms,
                                     pool__curve_event_t *last,
                                     pk_error_t *err);

/* Stops the monitor (the watched socket must still be open), closes the
 * watch's socket, frees *w and sets it to NULL.  NULL or *w NULL is a
 * no-op. */
void pool__curve_watch_close(pool__curve_watch_t **w);

#endif /* POOL_CURVE_H */
