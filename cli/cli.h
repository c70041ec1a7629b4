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
 * cli_io.c is the file layer shared by the subcommands: whole-file reads that
 * undo gzip / bzip2 / xz compression found by magic bytes, atomic writes that
 * compress by file-name suffix, and the one-line error reporter.  cmd_map.c
 * also holds the option parsing, clock and default-plugin helpers that
 * `map` and `demo` share (declared below).
 *
 * Nothing here is thread-safe or meant for the library: it is the CLI's.
 */
#ifndef PK_CLI_H
#define PK_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "picklepool/error.h"
#include "picklepool/pickle.h"

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

/* Reads all of `fp` and appends it to *out (caller-owned: pk_buf_free it on
 * success and failure alike), decompressed when it starts with a known
 * magic.  At most `max` bytes are accepted, before and after
 * decompression (PK_ELIMIT beyond).  Returns PK_OK, PK_ESYS (read error,
 * errno kept), PK_EIO, PK_ELIMIT or PK_ENOMEM; out->len restored on failure. */
pk_err_t pk__cli_read_stream(FILE *fp, size_t max, pk_buf_t *out,
                             pk_error_t *err);

/* Same for the file at `path`; "-" reads standard input. */
pk_err_t pk__cli_read_file(const char *path, size_t max, pk_buf_t *out,
                           pk_error_t *err);

/* Writes all of data[0..len) to `fd`, retrying short writes and EINTR.
 * Returns PK_OK or PK_ESYS (errno kept). */
pk_err_t pk__cli_write_all(int fd, const void *data, size_t len,
                           pk_error_t *err);

/* Writes data[0..len) to `path`, compressed as its suffix says, atomically:
 * into a fresh temporary file in the same directory, flushed to disk, then
 * renamed over `path` (mode 0666 & ~umask).  On failure the temporary file is
 * removed and `path` is as it was: absent, or with its old contents.  "-"
 * writes standard output (not atomically).  Returns PK_OK, PK_ESYS (errno
 * kept), PK_EIO or PK_ENOMEM. */
pk_err_t pk__cli_write_file(const char *path, const void *data, size_t len,
                            pk_error_t *err);

#endif /* PK_CLI_H */
