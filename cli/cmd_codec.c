/*
 * cmd_codec.c - the codec subcommands of the picklepool CLI.
 *
 *   recode [--protocol N] [--encoding E] IN OUT
 *                  decode IN, encode it again at protocol N
 *   inspect [--globals] FILE
 *                  disassemble, and say what decoding would call: exit 0
 *                  when nothing refused, 3 when something picklepool does
 *                  not allow, 4 when a known-dangerous call
 *
 * Both read plain or gzip / bzip2 / xz files (cli_io.c).  recode decodes with
 * the safe decoder, so a pickle that would call anything outside the
 * allow-list is refused before a byte is written; OUT is written atomically,
 * so any failure leaves it as it was.  inspect never decodes at all.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/common.h"
#include "codec/opcodes.h"
#include "picklepool/pickle.h"

/* Parses a protocol number for recode; -1 if `s` is not one. */
static int parse_protocol(const char *s)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > INT_MAX)
        return -1;
    return (int)v;
}

/* Decodes every pickle in in[0..len) (files written by repeated pickle.dump
 * hold several) and appends each, re-encoded, to *out. */
static int recode_all(const char *in_path, const char *out_path,
                      const pk_buf_t *in, const pk_load_opts_t *lo,
                      const pk_dump_opts_t *dopt, pk_buf_t *out)
{
    size_t off = 0;

    do {
        pk_doc_t *doc = NULL;
        pk_value_t *v = NULL;
        pk_error_t err;
        size_t used = 0;
        pk_err_t rc;

        pk_error_clear(&err);
        rc = pk_doc_new(&doc);
        if (rc == PK_OK)
            rc = pk_loads(doc, in->data + off, in->len - off, lo, &v, &used,
                          &err);
        else
            err.code = rc;
        if (rc != PK_OK) {
            if (err.offset >= 0)
                err.offset += (long long)off;
            if (err.opcode == PK_OP_NEXT_BUFFER) {
                size_t n = strlen(err.msg);
                snprintf(err.msg + n, sizeof(err.msg) - n, "%s",
                         "; the pickle needs out-of-band buffers, and a "
                         "pickle file carries none");
            }
            pk__cli_report(in_path, &err);
            pk_doc_free(&doc);
            return PK_EXIT_FAIL;
        }
        rc = pk_dumps(v, dopt, out, &err);
        pk_doc_free(&doc);
        if (rc != PK_OK) {
            char what[PATH_MAX + 32];
            snprintf(what, sizeof(what), "%s (protocol %d)", out_path,
                     dopt->protocol);
            pk__cli_report(what, &err);
            return PK_EXIT_FAIL;
        }
        if (used == 0)
            break;
        off += used;
    } while (off < in->len);
    return PK_EXIT_OK;
}

static int bad_size(const char *cmd, const char *val)
{
    return pk__cli_usage_error("%s: --max-input wants a size in bytes (suffix "
                               "k, M, G or T for powers of 1024), not '%s'",
                               cmd, val);
}

int pk__cmd_recode(int argc, char **argv)
{
    const char *paths[2] = {NULL, NULL};
    int npaths = 0, protocol = PK_DEFAULT_PROTOCOL, opts_done = 0, status;
    pk_str_encoding_t encoding = PK_ENC_ASCII;
    pk_load_opts_t lo;
    pk_dump_opts_t dopt;
    pk_buf_t in = {0}, out = {0};
    pk_cli_out_t o;
    size_t max_input = 0;
    pk_error_t err;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        int missing = 0;
        if (!opts_done && strcmp(a, "--") == 0) {
            opts_done = 1;
            continue;
        }
        if (!opts_done && strncmp(a, "--protocol", 10) == 0 &&
            (a[10] == '\0' || a[10] == '=')) {
            val = a[10] == '=' ? a + 11 : (i + 1 < argc ? argv[++i] : NULL);
            if (val == NULL)
                return pk__cli_usage_error("recode: --protocol needs a value");
            protocol = parse_protocol(val);
            if (protocol < 2 || protocol > PK_HIGHEST_PROTOCOL)
                return pk__cli_usage_error(
                    "recode: protocol '%s' cannot be written (2 to %d can)",
                    val, PK_HIGHEST_PROTOCOL);
            continue;
        }
        if (!opts_done &&
            (val = pk__cli_take_opt(argc, argv, &i, "--encoding", &missing))) {
            if (pk__cli_parse_encoding(val, &encoding) < 0)
                return pk__cli_usage_error(
                    "recode: --encoding wants ASCII, latin1 or bytes, not "
                    "'%s'",
                    val);
            continue;
        }
        if (!opts_done && !missing &&
            (val = pk__cli_take_opt(argc, argv, &i, "--max-input", &missing))) {
            if (pk__cli_parse_size(val, &max_input) < 0)
                return bad_size("recode", val);
            continue;
        }
        if (missing)
            return pk__cli_usage_error("recode: %s needs a value", a);
        if (!opts_done && a[0] == '-' && a[1] != '\0')
            return pk__cli_usage_error("recode: unknown option '%s'", a);
        if (npaths == 2)
            return pk__cli_usage_error("recode: unexpected argument '%s'", a);
        paths[npaths++] = a;
    }
    if (npaths < 2)
        return pk__cli_usage_error("recode: needs %s",
                                   npaths == 0 ? "IN and OUT" : "OUT");

    pk_load_opts_init(&lo);
    lo.encoding = encoding;
    pk_dump_opts_init(&dopt);
    dopt.protocol = protocol;
    pk_error_clear(&err);
    if (max_input == 0)
        max_input = pk__cli_default_max_input();
    /* OUT first: a path that cannot be written is known before the work,
     * and the interrupt handlers are in place from here on. */
    if (pk__cli_out_open(&o, paths[1], &err) != PK_OK) {
        pk__cli_report(paths[1], &err);
        return PK_EXIT_FAIL;
    }
    if (pk__cli_read_file(paths[0], max_input, &in, &err) != PK_OK) {
        pk__cli_report(paths[0], &err);
        pk_buf_free(&in);
        pk__cli_out_abort(&o);
        return PK_EXIT_FAIL;
    }
    status = recode_all(paths[0], paths[1], &in, &lo, &dopt, &out);
    pk_buf_free(&in);
    if (status == PK_EXIT_OK &&
        pk__cli_write_out(&o, out.data, out.len, &err) != PK_OK) {
        pk__cli_report(paths[1], &err);
        status = PK_EXIT_FAIL;
    }
    pk__cli_out_abort(&o);
    pk_buf_free(&out);
    return status;
}

/* inspect's exit statuses beyond 0, 1 and 2: what decoding would call. */
#define PK_EXIT_REFUSED 3   /* something picklepool does not allow */
#define PK_EXIT_DANGEROUS 4 /* a known-dangerous call (os.system, eval...) */

int pk__cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int opts_done = 0;
    unsigned flags = 0;
    pk_verdict_t verdict = PK_VERDICT_SAFE;
    size_t max_input = 0;
    pk_buf_t in = {0};
    pk_error_t err;
    pk_err_t rc;

    for (int i = 1; i < argc; i++) {
        const char *val;
        int missing = 0;
        if (!opts_done && strcmp(argv[i], "--") == 0) {
            opts_done = 1;
            continue;
        }
        if (!opts_done && strcmp(argv[i], "--globals") == 0) {
            flags |= PK_INSPECT_GLOBALS;
            continue;
        }
        if (!opts_done &&
            (val = pk__cli_take_opt(argc, argv, &i, "--max-input", &missing))) {
            if (pk__cli_parse_size(val, &max_input) < 0)
                return bad_size("inspect", val);
            continue;
        }
        if (missing)
            return pk__cli_usage_error("inspect: %s needs a value", argv[i]);
        if (!opts_done && argv[i][0] == '-' && argv[i][1] != '\0')
            return pk__cli_usage_error("inspect: unknown option '%s'", argv[i]);
        if (path != NULL)
            return pk__cli_usage_error("inspect: unexpected argument '%s'",
                                       argv[i]);
        path = argv[i];
    }
    if (path == NULL)
        return pk__cli_usage_error("inspect: needs FILE");

    pk_error_clear(&err);
    if (max_input == 0)
        max_input = pk__cli_default_max_input();
    if (pk__cli_read_file(path, max_input, &in, &err) != PK_OK) {
        pk__cli_report(path, &err);
        pk_buf_free(&in);
        return PK_EXIT_FAIL;
    }
    rc = pk_inspect(in.data, in.len, stdout, flags, &verdict, &err);
    pk_buf_free(&in);
    /* The listing so far goes out before the error line. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        pk__err_sys(&err, PK_ESYS, errno, "write");
        pk__cli_report("standard output", &err);
        return PK_EXIT_FAIL;
    }
    if (rc != PK_OK) {
        pk__cli_report(path, &err);
        return PK_EXIT_FAIL;
    }
    return verdict == PK_VERDICT_DANGEROUS ? PK_EXIT_DANGEROUS
           : verdict == PK_VERDICT_UNKNOWN ? PK_EXIT_REFUSED
                                           : PK_EXIT_OK;
}
