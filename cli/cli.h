/*
 * cli.h - private interface of the `picklepool` command-line tool.
 *
 * main.c holds only main() and the table of subcommands; each subcommand is a
 * function `int pk__cmd_NAME(int argc, char **argv)` in its own cli/cmd_*.c
 * file, declared below, with one line in main.c's table.  A subcommand gets
 * argv[0] == its name and returns the process exit status: PK_EXIT_OK,
 * PK_EXIT_FAIL (it ran and failed; it has printed one line saying why), or
 * PK_EXIT_USAGE (bad arguments; it has printed what was wrong and main then
 * prints the command's usage line).  `--help` is handled by main before the
 * subcommand runs.
 *
 * cli_io.c is the input side shared by the subcommands: reads that undo gzip /
 * bzip2 / xz compression found by magic bytes (whole files, or a stream read
 * piece by piece), under an input limit, compression by suffix, and the
 * one-line error reporter; cli_out.c the output side: where OUT really is
 * (special files, symlinks), atomic replacement, and what SIGINT / SIGTERM
 * do to an output being written.  cmd_map.c
 * also holds the option parsing, clock and default-plugin helpers that
 * `map` and `demo` share (declared below).
 *
 * Nothing here is thread-safe or meant for the library: it is the CLI's.
 */
#ifndef PK_CLI_H
#define PK_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "picklepool/error.h"
#include "picklepool/pickle.h"
#include "picklepool/placement.h"

/* Exit statuses of the tool and of every pk__cmd_* function. */
#define PK_EXIT_OK 0
#define PK_EXIT_FAIL 1
#define PK_EXIT_USAGE 2

/* ---- subcommands (one line each in main.c's table) ------------------- */

int pk__cmd_recode(int argc, char **argv);  /* cmd_codec.c */
int pk__cmd_inspect(int argc, char **argv); /* cmd_codec.c */
int pk__cmd_topo(int argc, char **argv);    /* cmd_topo.c */
int pk__cmd_map(int argc, char **argv);     /* cmd_map.c */
int pk__cmd_demo(int argc, char **argv);    /* cmd_demo.c */
int pk__cmd_keygen(int argc, char **argv);  /* cmd_keygen.c */
int pk__cmd_serve(int argc, char **argv);   /* cmd_serve.c */
int pk__cmd_worker(int argc, char **argv);  /* cmd_worker.c */

/* ---- the host agent (host.c) -------------------------------------------- */

/* What `picklepool worker` runs with (cmd_worker.c fills it). */
typedef struct pk__host_cfg {
    const char *connect;  /* serve's endpoint */
    const char *keys;     /* key directory, or NULL */
    const char *key_name; /* own pair's name, NULL: the one in keys */
    int insecure;
    const char *name; /* how it calls itself (HELLO) */
    int workers;      /* local workers (resolved: >= 1) */
    pool_placement_t placement;
    const char *placement_name;
    const char *const *plugins;
    size_t nplugins;
    const char *python;         /* interpreter for Python functions */
    const char *const *py_argv; /* its worker command (NULL-ended) */
    const char *const *py_env;  /* and environment (NULL-ended) */
    int capacity;               /* batches at once (>= 1) */
} pk__host_cfg_t;

/* Runs the host agent until SIGINT or SIGTERM: makes the local pools, joins
 * serve, runs its batches (host.c's top comment).  Returns PK_EXIT_OK after a
 * signal, PK_EXIT_FAIL when it cannot start or its key is refused (one line
 * says why). */
int pk__host_run(const pk__host_cfg_t *cfg);

/* ---- serve (serve.c) ---------------------------------------------------- */

/* What `picklepool serve` runs with (cmd_serve.c fills it). */
typedef struct pk__serve_cfg {
    const char *bind;      /* endpoint to bind: tcp://HOST:PORT (or ipc://) */
    const char *keys;      /* key directory, or NULL */
    int insecure;          /* plain tcp, asked for */
    uint64_t heartbeat_ns; /* interval of heartbeats both ways */
    int liveness;          /* silent intervals before a peer is gone */
    size_t max_message;    /* bytes of one frame; libzmq drops a peer
                              sending more */
    int max_queue;         /* batches one client may have at the master */
    int max_peers;         /* sessions at once; 0: no bound */
} pk__serve_cfg_t;

/* Runs serve until SIGINT or SIGTERM: binds, then carries batches from
 * clients to hosts (serve.c's top comment).  Prints one line on stdout once
 * it listens ("picklepool serve: listening on ENDPOINT ...") and one line
 * per join, departure and refusal on stderr.  Returns PK_EXIT_OK after a
 * signal, PK_EXIT_FAIL when it could not start (one line says why). */
int pk__serve_run(const pk__serve_cfg_t *cfg);

/* ---- reporting -------------------------------------------------------- */

/* Prints "picklepool: <what>: <pk_error_format(err)>\n" on stderr, one line.
 * `what` names the file or command concerned (NULL: left out). */
void pk__cli_report(const char *what, const pk_error_t *err);

/* Prints "picklepool: <printf message>\n" on stderr and returns
 * PK_EXIT_USAGE, for argument errors: `return pk__cli_usage_error(...)`. */
int pk__cli_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* ---- options, clock, default plugin (cmd_map.c) ---------------------- */

/* Value of option `name` at argv[*i] as "--name value" or "--name=value"
 * (advancing *i past a separate value); NULL when argv[*i] is another
 * option.  A missing value sets *missing. */
const char *pk__cli_take_opt(int argc, char **argv, int *i, const char *name,
                             int *missing);

/* Parses a Python 2 str encoding as pickle.load(encoding=...) names it:
 * "ASCII", "latin1" (or "latin-1", "iso-8859-1"), "bytes", any case.
 * Returns 0, or -1 (out untouched). */
int pk__cli_parse_encoding(const char *s, pk_str_encoding_t *out);

/* Parses a whole decimal number in [lo, hi] into *out.  Returns 0, or -1
 * (out untouched) for anything else. */
int pk__cli_parse_long(const char *s, long lo, long hi, long *out);

/* Parses a whole decimal or floating number >= lo (not infinite, not NaN)
 * into *out.  Returns 0, or -1 (out untouched). */
int pk__cli_parse_double(const char *s, double lo, double *out);

/* Parses a placement name: compact, spread or none.  Returns 0, or -1. */
int pk__cli_parse_placement(const char *s, pool_placement_t *out);

/* Parses a byte count: a whole number with an optional suffix k, M, G or T
 * (powers of 1024; "KiB", "MB"... read the same), at least 1.  Returns 0,
 * or -1 (out untouched) for anything else or an overflow. */
int pk__cli_parse_size(const char *s, size_t *out);

/* CLOCK_MONOTONIC in seconds. */
double pk__cli_now_s(void);

/* The default plugin for `module`, found by name with pool_plugin_find.
 * Returns 1 and fills buf, or 0 with *err saying every place looked in. */
int pk__cli_default_plugin(const char *module, char *buf, size_t size,
                           pk_error_t *err);

/* ---- plugins (plugins.c) ---------------------------------------------- */

/* `picklepool map --list`: loads the plugins named (NULL/0: "examples") and
 * prints each one's functions from its POOL_PLUGIN_DOC_SYMBOL table. */
int pk__cli_list_plugins(const char *const *names, size_t n);

/* Non-zero when `name` is a builtins exception class (TypeError...). */
int pk__cli_builtin_exception(const char *name);

/* ---- compressed file I/O (cli_io.c) ------------------------------------ */

typedef enum pk_cli_compress {
    PK_COMPRESS_NONE = 0,
    PK_COMPRESS_GZIP,  /* 1f 8b, ".gz" */
    PK_COMPRESS_BZIP2, /* "BZh", ".bz2" */
    PK_COMPRESS_XZ     /* fd 37 7a 58 5a 00, ".xz" */
} pk_cli_compress_t;

/* The compression whose magic bytes start data[0..len) (PK_COMPRESS_NONE when
 * none does; a pickle never starts with any of them). */
pk_cli_compress_t pk__cli_sniff(const void *data, size_t len);

/* The compression chosen by the suffix of `path` (".gz", ".bz2", ".xz"). */
pk_cli_compress_t pk__cli_compress_for_path(const char *path);

/* Static name of `c`: "none", "gzip", "bzip2", "xz". */
const char *pk__cli_compress_name(pk_cli_compress_t c);

/* Appends the decompression of data[0..len), stored in format `c`, to *out
 * (caller-owned, freed with pk_buf_free).  Concatenated streams (as `cat a.gz
 * b.gz` makes) decode as one.  Output beyond `max_out` bytes is PK_ELIMIT.
 * Returns PK_OK, PK_EIO (corrupt or truncated data, or trailing bytes that
 * are not another stream), PK_ELIMIT or PK_ENOMEM; on failure out->len is
 * restored to its value at entry. */
pk_err_t pk__cli_decompress(pk_cli_compress_t c, const void *data, size_t len,
                            size_t max_out, pk_buf_t *out, pk_error_t *err);

/* Appends data[0..len) compressed in format `c` (not NONE) to *out.  Returns
 * PK_OK, PK_EIO or PK_ENOMEM; on failure out->len is restored. */
pk_err_t pk__cli_compress(pk_cli_compress_t c, const void *data, size_t len,
                          pk_buf_t *out, pk_error_t *err);

/* Makes room for at least `want` more bytes after b->len (growing by half,
 * overflow-checked).  Returns PK_OK or PK_ENOMEM with err filled. */
pk_err_t pk__cli_buf_reserve(pk_buf_t *b, size_t want, pk_error_t *err);

/* ---- the input limit and reading (cli_io.c) --------------------------- */

/* The default input limit is the machine's available memory (MemAvailable,
 * and RLIMIT_AS / RLIMIT_DATA where set) divided by this, and at least
 * PK_CLI_MIN_MAX_INPUT: input past it fails instead of running the machine
 * out of memory (a decompression bomb, /dev/zero).  --max-input sets it. */
#define PK_CLI_MAX_INPUT_SHARE 4
#define PK_CLI_MIN_MAX_INPUT ((size_t)64 << 20)

/* The default input limit, in bytes (see above). */
size_t pk__cli_default_max_input(void);

/* n as "512 bytes" or "1.5 GiB". */
void pk__cli_format_size(size_t n, char *buf, size_t size);

/* Fills err with PK_ELIMIT: "<what> is larger than the input limit of
 * <max> (... bytes); --max-input raises it".  Returns PK_ELIMIT. */
pk_err_t pk__cli_limit_error(pk_error_t *err, const char *what, size_t max);

/* A reader of a file's contents, decompressed on the fly when the file
 * starts with a known magic: memory stays at two small buffers however
 * large the input.  Concatenated streams (as `cat a.gz b.gz` makes) read as
 * one; corrupt or truncated data and trailing bytes that are not another
 * stream are PK_EIO. */
typedef struct pk_cli_reader pk_cli_reader_t;

/* Starts reading fp (borrowed: it must outlive the reader).  Returns PK_OK
 * with *r owned (pk__cli_reader_close), PK_ESYS, PK_EIO or PK_ENOMEM. */
pk_err_t pk__cli_reader_open(pk_cli_reader_t **r, FILE *fp, pk_error_t *err);

/* The compression the reader found. */
pk_cli_compress_t pk__cli_reader_kind(const pk_cli_reader_t *r);

/* Reads up to `want` bytes of content into dst; *got is 0 only at the end.
 * Returns PK_OK, PK_ESYS (errno kept), PK_EIO or PK_ENOMEM. */
pk_err_t pk__cli_reader_read(pk_cli_reader_t *r, void *dst, size_t want,
                             size_t *got, pk_error_t *err);

/* Frees *r and sets it to NULL; NULL is a no-op. */
void pk__cli_reader_close(pk_cli_reader_t **r);

/* Reads all of `fp` and appends it to *out (caller-owned: pk_buf_free it on
 * success and failure alike), decompressed when it starts with a known
 * magic.  At most `max` bytes of content are accepted (PK_ELIMIT beyond,
 * from pk__cli_limit_error), and the buffer never grows past max + 1 bytes
 * for it.  Returns PK_OK, PK_ESYS (read error, errno kept), PK_EIO,
 * PK_ELIMIT or PK_ENOMEM; out->len restored on failure. */
pk_err_t pk__cli_read_stream(FILE *fp, size_t max, pk_buf_t *out,
                             pk_error_t *err);

/* Same for the file at `path`; "-" reads standard input. */
pk_err_t pk__cli_read_file(const char *path, size_t max, pk_buf_t *out,
                           pk_error_t *err);

/* Writes all of data[0..len) to `fd`, retrying short writes and EINTR.
 * Returns PK_OK or PK_ESYS (errno kept). */
pk_err_t pk__cli_write_all(int fd, const void *data, size_t len,
                           pk_error_t *err);

/* ---- output files and interrupts (cli_out.c) --------------------------- */

typedef enum pk_cli_out_kind {
    PK_OUT_NONE = 0,
    PK_OUT_STDOUT,  /* "-" */
    PK_OUT_INPLACE, /* a device, FIFO or socket, written where it is */
    PK_OUT_ANON,    /* an unnamed O_TMPFILE file, named at commit */
    PK_OUT_NAMED    /* a hidden named temporary, renamed at commit */
} pk_cli_out_kind_t;

/* An output being written: open it, write it, then commit or abort it. */
typedef struct pk_cli_out {
    pk_cli_out_kind_t kind;
    int fd;
    const char *path; /* as given (borrowed) */
    char *target;     /* path with its symlinks followed (owned) */
    char *tmp;        /* the temporary's name, PK_OUT_NAMED (owned) */
} pk_cli_out_t;

/* Opens `path` for output as cli_out.c says: "-" is standard output, a
 * special file is written in place, a symlink is followed, a regular file
 * (or a missing one) is replaced atomically at commit.  It is the check
 * that OUT can be written at all: call it before any long work.  Installs
 * the SIGINT / SIGTERM handlers (see pk__cli_sig_defer).  Returns PK_OK, or
 * PK_ESYS (errno kept: a missing or read-only directory, a directory
 * named) or PK_ENOMEM with nothing left behind and *o needing no abort. */
pk_err_t pk__cli_out_open(pk_cli_out_t *o, const char *path, pk_error_t *err);

/* Writes data[0..len) to o.  Returns PK_OK or PK_ESYS (errno kept). */
pk_err_t pk__cli_out_write(pk_cli_out_t *o, const void *data, size_t len,
                           pk_error_t *err);

/* Finishes o: flushed to disk and put in place (mode 0666 & ~umask).  On
 * failure the temporary is gone and OUT is as it was.  Either way o is
 * closed.  Returns PK_OK, PK_ESYS (errno kept) or PK_ENOMEM. */
pk_err_t pk__cli_out_commit(pk_cli_out_t *o, pk_error_t *err);

/* Throws o away: closed, its temporary removed, OUT as it was.  Idempotent
 * after an open that succeeded or failed. */
void pk__cli_out_abort(pk_cli_out_t *o);

/* Writes data[0..len), compressed as o->path's suffix says, to the open o
 * and commits it (aborts it on failure). */
pk_err_t pk__cli_write_out(pk_cli_out_t *o, const void *data, size_t len,
                           pk_error_t *err);

/* pk__cli_out_open of `path`, then pk__cli_write_out. */
pk_err_t pk__cli_write_file(const char *path, const void *data, size_t len,
                            pk_error_t *err);

/* While `on`, SIGINT / SIGTERM are only noted (pk__cli_sig_caught) instead
 * of ending the process: for waits the caller ends cleanly itself.  A second
 * signal ends the process at once. */
void pk__cli_sig_defer(int on);

/* The signal noted while deferred (SIGINT or SIGTERM), or 0. */
int pk__cli_sig_caught(void);

/* When a signal was noted: prints the interrupt line, removes any named
 * temporary and ends the process by that signal.  Returns otherwise. */
void pk__cli_sig_die(void);

#endif /* PK_CLI_H */
