/*
 * cmd_map.c - `picklepool map`, and the argument and plugin helpers that
 * `picklepool demo` (cmd_demo.c) shares with it through cli.h.
 *
 *   picklepool map [--workers N] [--placement compact|spread|none]
 *                  [--chunksize C] [--timeout S] [--plugin NAME|PATH]...
 *                  [--encoding ASCII|latin1|bytes] [--max-input SIZE] [--stream]
 *                  MODULE.FUNC IN OUT
 *   picklepool map --list [--plugin NAME|PATH]...
 *
 * Maps a registered native function over a pickled list (IN) and writes the
 * pickled list of results (OUT) in input order.  With --stream, IN is a
 * sequence of concatenated pickles, one item each (what repeated pickle.dump
 * writes), pulled lazily through pool_imap, and OUT receives one pickle per
 * result in input order: memory stays bounded however long the input is,
 * compressed or not (it is decompressed as it is read), by the largest item,
 * which --max-input caps.  Compression of IN is found by magic
 * bytes and of OUT by suffix, as everywhere in the CLI; a compressed streamed
 * OUT is a sequence of compressed members, which gzip, bzip2 and xz readers
 * take as one stream.  "-" is standard input / output.
 *
 * A failed item keeps its place in OUT as a builtins exception instance
 * (RuntimeError for crashes and function errors, TimeoutError, LookupError
 * for unknown functions) whose message is "picklepool: item N: <why>", so a
 * Python reader tells it apart with isinstance(x, BaseException).  Exit
 * status: 0 when every item succeeded, 3 when some failed, 1 when the map
 * could not run (I/O, pool start-up), 2 for bad arguments.
 *
 * Without --plugin, the plugin named MODULE is loaded when pool_plugin_find
 * finds it (the installed plugin directory, or build/plugins in the tree);
 * --plugin takes a path or a name.  --list prints what the plugins offer
 * (cli/plugins.c).  --encoding reads Python 2 str as pickle.load does.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "core/common.h"
#include "picklepool/pickle.h"
#include "picklepool/pool.h"
#include "picklepool/registry.h"
#include "picklepool/value.h"

#define PK_EXIT_ITEMS 3 /* the map ran; some items failed */
#define MAP_MAX_PLUGINS 64
#define MAP_MAX_TIMEOUT 1e9 /* seconds, what pool_opts_t.timeout takes */
#define STREAM_READ_MIN                                                        \
    ((size_t)1 << 20)                  /* bytes per read of a streamed IN      \
                                        */
#define STREAM_FLUSH ((size_t)1 << 20) /* buffered output before a write */

/* ---- helpers shared with cmd_demo.c (declared in cli.h) ----------------- */

double pk__cli_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *pk__cli_take_opt(int argc, char **argv, int *i, const char *name,
                             int *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

int pk__cli_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int pk__cli_parse_size(const char *s, size_t *out)
{
    static const char units[] = "kmgt";
    char *end;
    unsigned long long v;
    int shift = 0;

    errno = 0;
    if (*s < '0' || *s > '9')
        return -1;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    if (*end != '\0') {
        const char *u = strchr(units, tolower((unsigned char)*end));
        if (u == NULL)
            return -1;
        shift = 10 * (int)(u - units + 1);
        end++;
        /* "k", "KiB", "KB": all powers of 1024. */
        if (strcmp(end, "") != 0 && strcasecmp(end, "ib") != 0 &&
            strcasecmp(end, "b") != 0)
            return -1;
    }
    if (v == 0 || v > (unsigned long long)(SIZE_MAX >> shift))
        return -1;
    *out = (size_t)v << shift;
    return 0;
}

int pk__cli_parse_double(const char *s, double lo, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo) || isinf(v))
        return -1;
    *out = v;
    return 0;
}

int pk__cli_parse_placement(const char *s, pool_placement_t *out)
{
    if (strcmp(s, "compact") == 0)
        *out = POOL_PLACE_COMPACT;
    else if (strcmp(s, "spread") == 0)
        *out = POOL_PLACE_SPREAD;
    else if (strcmp(s, "none") == 0)
        *out = POOL_PLACE_NONE;
    else
        return -1;
    return 0;
}

int pk__cli_parse_encoding(const char *s, pk_str_encoding_t *out)
{
    if (strcasecmp(s, "ascii") == 0)
        *out = PK_ENC_ASCII;
    else if (strcasecmp(s, "latin1") == 0 || strcasecmp(s, "latin-1") == 0 ||
             strcasecmp(s, "iso-8859-1") == 0)
        *out = PK_ENC_LATIN1;
    else if (strcasecmp(s, "bytes") == 0)
        *out = PK_ENC_BYTES;
    else
        return -1;
    return 0;
}

int pk__cli_default_plugin(const char *module, char *buf, size_t size,
                           pk_error_t *err)
{
    return pool_plugin_find(module, buf, size, err) == PK_OK;
}

typedef struct map_args {
    pool_opts_t opts;
    pool_call_opts_t copts;
    pk_load_opts_t lopts;
    const char *plugins[MAP_MAX_PLUGINS];
    char default_plugin[PATH_MAX];
    pk_error_t no_plugin; /* why no default plugin was found */
    int stream, list;
    char module[256];
    const char *func;
    const char *in, *out;
    size_t max_input; /* bytes of input (an item, with --stream) */
} map_args_t;

static int parse_map_args(int argc, char **argv, map_args_t *a)
{
    const char *pos[3];
    int npos = 0;

    memset(a, 0, sizeof *a);
    pool_opts_init(&a->opts);
    pool_call_opts_init(&a->copts);
    pk_load_opts_init(&a->lopts);
    pk_error_clear(&a->no_plugin);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v;
        int missing = 0;
        long l;
        double d;

        if (npos < 3 && (arg[0] != '-' || arg[1] == '\0')) { /* "-": stdio */
            pos[npos++] = arg;
        } else if (strcmp(arg, "--") == 0) {
            while (++i < argc && npos < 3)
                pos[npos++] = argv[i];
            if (i < argc)
                return pk__cli_usage_error("map: unexpected argument '%s'",
                                           argv[i]);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--workers",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, POOL_MAX_WORKERS, &l) < 0)
                return pk__cli_usage_error(
                    "map: --workers wants a number from 1 to %d, not '%s'",
                    POOL_MAX_WORKERS, v);
            a->opts.workers = (int)l;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--placement",
                                         &missing))) {
            if (pk__cli_parse_placement(v, &a->opts.placement) < 0)
                return pk__cli_usage_error(
                    "map: --placement wants compact, spread or none, not '%s'",
                    v);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--chunksize",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, LONG_MAX, &l) < 0)
                return pk__cli_usage_error(
                    "map: --chunksize wants a positive number, not '%s'", v);
            a->copts.chunksize = (size_t)l;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--timeout",
                                         &missing))) {
            if (pk__cli_parse_double(v, 0, &d) < 0 || d == 0 ||
                d > MAP_MAX_TIMEOUT)
                return pk__cli_usage_error(
                    "map: --timeout wants a number of seconds above 0 and up "
                    "to %g, not '%s'",
                    MAP_MAX_TIMEOUT, v);
            a->copts.timeout = d;
            a->opts.timeout = d;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--plugin",
                                         &missing))) {
            if (a->opts.nplugins == MAP_MAX_PLUGINS)
                return pk__cli_usage_error("map: more than %d --plugin options",
                                           MAP_MAX_PLUGINS);
            a->plugins[a->opts.nplugins++] = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--encoding",
                                         &missing))) {
            if (pk__cli_parse_encoding(v, &a->lopts.encoding) < 0)
                return pk__cli_usage_error(
                    "map: --encoding wants ASCII, latin1 or bytes, not '%s'",
                    v);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--max-input",
                                         &missing))) {
            if (pk__cli_parse_size(v, &a->max_input) < 0)
                return pk__cli_usage_error(
                    "map: --max-input wants a size in bytes (suffix k, M, G "
                    "or T for powers of 1024), not '%s'",
                    v);
        } else if (strcmp(arg, "--stream") == 0) {
            a->stream = 1;
        } else if (strcmp(arg, "--list") == 0) {
            a->list = 1;
        } else if (missing) {
            return pk__cli_usage_error("map: %s needs a value", arg);
        } else if (arg[0] == '-') {
            return pk__cli_usage_error("map: unknown option '%s'", arg);
        } else {
            return pk__cli_usage_error("map: unexpected argument '%s'", arg);
        }
        if (missing)
            return pk__cli_usage_error("map: %s needs a value", arg);
    }
    if (a->list) {
        if (npos > 0)
            return pk__cli_usage_error("map: --list takes no MODULE.FUNC");
        a->opts.plugins = a->plugins;
        return PK_EXIT_OK;
    }
    if (npos < 3)
        return pk__cli_usage_error("map: needs MODULE.FUNC IN OUT");
    if (a->max_input == 0)
        a->max_input = pk__cli_default_max_input();

    const char *dot = strrchr(pos[0], '.');
    if (dot == NULL || dot == pos[0] || dot[1] == '\0' ||
        (size_t)(dot - pos[0]) >= sizeof a->module)
        return pk__cli_usage_error(
            "map: '%s' is not MODULE.FUNC (e.g. examples.square)", pos[0]);
    memcpy(a->module, pos[0], (size_t)(dot - pos[0]));
    a->module[dot - pos[0]] = '\0';
    a->func = dot + 1;
    a->in = pos[1];
    a->out = pos[2];

    if (a->opts.nplugins == 0 &&
        pk__cli_default_plugin(a->module, a->default_plugin,
                               sizeof a->default_plugin, &a->no_plugin))
        a->plugins[a->opts.nplugins++] = a->default_plugin;
    a->opts.plugins = a->plugins;
    return PK_EXIT_OK;
}

/* ---- results into the output doc ---------------------------------------- */

/* Pointer-keyed memo of copied containers, so that shared references stay
 * shared and cycles terminate. */
typedef struct copy_memo {
    const pk_value_t **from;
    pk_value_t **to;
    size_t cap, len; /* cap is 0 or a power of two */
} copy_memo_t;

static size_t memo_slot(const copy_memo_t *m, const pk_value_t *v)
{
    size_t h = ((uintptr_t)v >> 4) * (size_t)0x9E3779B97F4A7C15ull;
    size_t i = h & (m->cap - 1);

    while (m->from[i] != NULL && m->from[i] != v)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static pk_value_t *memo_get(const copy_memo_t *m, const pk_value_t *v)
{
    if (m->cap == 0)
        return NULL;
    return m->to[memo_slot(m, v)];
}

static int memo_put(copy_memo_t *m, const pk_value_t *v, pk_value_t *copy)
{
    if ((m->len + 1) * 2 > m->cap) {
        copy_memo_t g = {0};
        g.cap = m->cap ? m->cap * 2 : 64;
        g.from = pk__calloc(g.cap, sizeof *g.from);
        g.to = pk__calloc(g.cap, sizeof *g.to);
        if (g.from == NULL || g.to == NULL) {
            pk__free(g.from);
            pk__free(g.to);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->from[i] != NULL) {
                size_t s = memo_slot(&g, m->from[i]);
                g.from[s] = m->from[i];
                g.to[s] = m->to[i];
            }
        g.len = m->len;
        pk__free(m->from);
        pk__free(m->to);
        *m = g;
    }
    size_t s = memo_slot(m, v);
    m->from[s] = v;
    m->to[s] = copy;
    m->len++;
    return 0;
}

static void memo_reset(copy_memo_t *m)
{
    pk__free(m->from);
    pk__free(m->to);
    memset(m, 0, sizeof *m);
}

/* Deep copy of v into doc (a result outlives the iterator step that returned
 * it only as a copy).  NULL when memory runs out. */
static pk_value_t *copy_value(pk_doc_t *doc, const pk_value_t *v,
                              copy_memo_t *memo)
{
    pk_value_t *c = NULL;
    size_t n;

    switch ((pk_type_t)v->type) {
    case PK_NONE:
    case PK_BOOL:
        return (pk_value_t *)v; /* static singletons */
    case PK_INT:
        return pk_int(doc, v->u.i);
    case PK_BIGINT:
        return pk_bigint(doc, v->u.big.bytes, v->u.big.len);
    case PK_FLOAT:
        return pk_float(doc, v->u.f);
    case PK_COMPLEX:
        return pk_complex(doc, v->u.c.re, v->u.c.im);
    case PK_STR:
        return pk_str(doc, v->u.str.ptr, v->u.str.len);
    case PK_BYTES:
        return pk_bytes(doc, v->u.str.ptr, v->u.str.len);
    case PK_BYTEARRAY:
        return pk_bytearray(doc, v->u.str.ptr, v->u.str.len);
    case PK_PICKLEBUFFER:
        return pk_picklebuffer(doc, v->u.str.ptr, v->u.str.len,
                               v->flags & PK_VF_READONLY);
    case PK_GLOBAL:
        return pk_global(doc, v->u.global.module, v->u.global.name);
    case PK_DTYPE:
        return pk_dtype_value(doc, v->u.dtype);
    case PK_NDARRAY: {
        const pk_ndarray_t *nd = v->u.nd;
        c = pk_ndarray(doc, &nd->dtype, nd->ndim, nd->shape, nd->data,
                       v->flags & PK_VF_FORTRAN);
        if (c != NULL)
            c->flags |= v->flags & (PK_VF_NPSCALAR | PK_VF_READONLY);
        return c;
    }
    case PK_TUPLE:
    case PK_LIST:
    case PK_SET:
    case PK_FROZENSET:
    case PK_DICT:
    case PK_OBJECT:
        break;
    default:
        return NULL;
    }

    if ((c = memo_get(memo, v)) != NULL)
        return c;
    if (v->type == PK_OBJECT) { /* acyclic through its args tuple */
        pk_value_t *f = copy_value(doc, v->u.obj.callable, memo);
        pk_value_t *args = copy_value(doc, v->u.obj.args, memo);
        pk_value_t *st =
            v->u.obj.state ? copy_value(doc, v->u.obj.state, memo) : NULL;
        if (f == NULL || args == NULL || (v->u.obj.state && st == NULL))
            return NULL;
        if ((c = pk_object(doc, f, args, st)) == NULL ||
            memo_put(memo, v, c) < 0)
            return NULL;
        return c;
    }
    n = pk_len(v);
    switch ((pk_type_t)v->type) {
    case PK_TUPLE:
        c = pk_tuple_new(doc, n);
        break;
    case PK_LIST:
        c = pk_list_new(doc, n);
        break;
    case PK_SET:
        c = pk_set_new(doc, n);
        break;
    case PK_FROZENSET:
        c = pk_frozenset_new(doc, n);
        break;
    default:
        c = pk_dict_new(doc, n);
        break;
    }
    if (c == NULL || memo_put(memo, v, c) < 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        pk_value_t *k, *x;
        pk_err_t rc = PK_OK;
        if (v->type == PK_DICT) {
            k = copy_value(doc, v->u.dict.entries[i].key, memo);
            x = copy_value(doc, v->u.dict.entries[i].value, memo);
            if (k == NULL || x == NULL)
                return NULL;
            rc = pk_dict_set(doc, c, k, x);
        } else {
            if ((x = copy_value(doc, v->u.seq.items[i], memo)) == NULL)
                return NULL;
            if (v->type == PK_TUPLE)
                pk_tuple_set(c, i, x);
            else if (v->type == PK_LIST)
                rc = pk_list_append(doc, c, x);
            else
                rc = pk_set_add(doc, c, x);
        }
        if (rc != PK_OK)
            return NULL;
    }
    return c;
}

/* The value that stands for a failed item in OUT: an instance of a builtins
 * exception class, builtins.<kind>("picklepool: item N: <why>"), which
 * CPython's pickle loads without importing anything, so a Python reader
 * tells failures apart with isinstance(x, BaseException).  RuntimeError for
 * crashes, function errors and the rest, TimeoutError for timeouts,
 * LookupError for unknown functions.  This is the only place that decides
 * the marker's shape. */
static pk_value_t *failure_marker(pk_doc_t *doc, size_t index, pk_err_t status,
                                  const char *why)
{
    const char *kind;
    char msg[512];
    pk_value_t *cls, *args, *text;

    switch (status) {
    case PK_ETIMEDOUT:
        kind = "TimeoutError";
        break;
    case PK_ENOFUNC:
        kind = "LookupError";
        break;
    default:
        kind = "RuntimeError";
        break; /* crashes, function errors... */
    }
    /* A kernel's "TypeError: text" comes back as TypeError("... text"). */
    char cls_name[64];
    size_t cl = why ? strcspn(why, ": ") : 0;
    if (cl > 0 && cl < sizeof cls_name && why[cl] == ':' &&
        why[cl + 1] == ' ') {
        memcpy(cls_name, why, cl);
        cls_name[cl] = '\0';
        if (pk__cli_builtin_exception(cls_name)) {
            kind = cls_name;
            why += cl + 2;
        }
    }
    snprintf(msg, sizeof msg, "picklepool: item %zu: %s", index,
             why && *why ? why : pk_strerror(status));
    cls = pk_global(doc, "builtins", kind);
    args = pk_tuple_new(doc, 1);
    text = pk_cstr(doc, msg);
    if (cls == NULL || args == NULL || text == NULL)
        return NULL;
    pk_tuple_set(args, 0, text);
    return pk_object(doc, cls, args, NULL);
}

/* ---- streamed input ----------------------------------------------------- */

/* Reads concatenated pickles from a file, refilling a buffer as it goes:
 * pk_loads reports PK_ETRUNC for a pickle cut by the end of the buffer, and
 * the read size doubles with the buffered length so that a large item costs
 * a logarithmic number of retries.  Compressed input is decompressed as it
 * is read (cli_io's reader), so memory stays bounded either way: by the
 * largest item, which the input limit caps. */
typedef struct stream_in {
    const char *path;
    FILE *fp;
    pk_cli_reader_t *rd;
    size_t max; /* the input limit: bytes one item may take */
    pk_buf_t buf;
    size_t pos;   /* next unread byte in buf */
    int eof;      /* nothing more to read into buf */
    size_t items; /* items returned so far */
    const pk_load_opts_t *lopts;
    pk_error_t err; /* why the input stopped early */
    pk_err_t rc;
} stream_in_t;

/* Appends up to `want` bytes of content; sets eof at the end of the file. */
static pk_err_t stream_read(stream_in_t *s, size_t want)
{
    if (s->buf.len > s->max)
        return pk__cli_limit_error(&s->err, "an item", s->max);
    if (want > s->max + 1 - s->buf.len)
        want = s->max + 1 - s->buf.len; /* one byte past shows the limit */
    if (pk__cli_buf_reserve(&s->buf, want, &s->err) != PK_OK)
        return s->err.code;
    while (want > 0 && !s->eof) {
        size_t n = 0;
        pk_err_t rc = pk__cli_reader_read(s->rd, s->buf.data + s->buf.len, want,
                                          &n, &s->err);
        if (rc != PK_OK)
            return rc;
        s->buf.len += n;
        want -= n;
        if (n == 0)
            s->eof = 1;
    }
    return PK_OK;
}

static pk_err_t stream_open(stream_in_t *s, const char *path, size_t max)
{
    memset(s, 0, sizeof *s);
    pk_error_clear(&s->err);
    s->path = path;
    s->max = max;
    if (strcmp(path, "-") == 0) {
        s->fp = stdin;
    } else if ((s->fp = fopen(path, "rb")) == NULL) {
        return pk__err_sys(&s->err, PK_ESYS, errno, "cannot open");
    }
    return pk__cli_reader_open(&s->rd, s->fp, &s->err);
}

static void stream_close(stream_in_t *s)
{
    pk__cli_reader_close(&s->rd);
    if (s->fp != NULL && s->fp != stdin)
        fclose(s->fp);
    s->fp = NULL;
    pk_buf_free(&s->buf);
}

/* pool_next_fn over a stream_in_t. */
static pk_err_t stream_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    stream_in_t *s = ctx;
    pk_err_t rc;

    for (;;) {
        if (s->pos < s->buf.len) {
            size_t used = 0;
            pk_error_t e;
            rc = pk_loads(doc, s->buf.data + s->pos, s->buf.len - s->pos,
                          s->lopts, item, &used, &e);
            if (rc == PK_OK) {
                s->pos += used;
                s->items++;
                return PK_OK;
            }
            if (rc != PK_ETRUNC || s->eof) {
                s->err = e;
                s->rc = rc;
                return rc;
            }
        } else if (s->eof) {
            *item = NULL;
            return PK_OK;
        }
        /* Drop what was consumed, then read at least as much as is held. */
        if (s->pos > 0) {
            memmove(s->buf.data, s->buf.data + s->pos, s->buf.len - s->pos);
            s->buf.len -= s->pos;
            s->pos = 0;
        }
        size_t want =
            s->buf.len > STREAM_READ_MIN ? s->buf.len : STREAM_READ_MIN;
        if ((rc = stream_read(s, want)) != PK_OK) {
            s->rc = rc;
            return rc;
        }
    }
}

/* pool_next_fn over the items of a decoded list or tuple. */
typedef struct list_in {
    const pk_value_t *list;
    size_t next;
} list_in_t;

static pk_err_t list_next(void *ctx, pk_doc_t *doc, pk_value_t **item)
{
    list_in_t *l = ctx;

    (void)doc; /* the items live in the input doc, which outlives the map */
    *item = l->next < pk_len(l->list) ? pk_item(l->list, l->next++) : NULL;
    return PK_OK;
}

/* ---- streamed output ---------------------------------------------------- */

/* Pickles written one after another, compressed by OUT's suffix one member
 * per flush, into OUT as cli_out.c opens it (atomically for a file). */
typedef struct stream_out {
    pk_cli_out_t o;
    pk_cli_compress_t kind;
    pk_buf_t buf;
    pk_buf_t z;
} stream_out_t;

static pk_err_t out_open(stream_out_t *o, const char *path, pk_error_t *err)
{
    memset(o, 0, sizeof *o);
    o->kind = strcmp(path, "-") == 0 ? PK_COMPRESS_NONE
                                     : pk__cli_compress_for_path(path);
    return pk__cli_out_open(&o->o, path, err);
}

static pk_err_t out_flush(stream_out_t *o, pk_error_t *err)
{
    pk_err_t rc;

    if (o->buf.len == 0)
        return PK_OK;
    if (o->kind == PK_COMPRESS_NONE) {
        rc = pk__cli_out_write(&o->o, o->buf.data, o->buf.len, err);
    } else {
        o->z.len = 0;
        rc = pk__cli_compress(o->kind, o->buf.data, o->buf.len, &o->z, err);
        if (rc == PK_OK)
            rc = pk__cli_out_write(&o->o, o->z.data, o->z.len, err);
    }
    o->buf.len = 0;
    return rc;
}

static pk_err_t out_put(stream_out_t *o, const pk_value_t *v, pk_error_t *err)
{
    pk_err_t rc = pk_dumps(v, NULL, &o->buf, err);

    if (rc == PK_OK && o->buf.len >= STREAM_FLUSH)
        rc = out_flush(o, err);
    return rc;
}

/* Finishes OUT (rc == PK_OK: flush and commit) or throws it away. */
static pk_err_t out_close(stream_out_t *o, pk_err_t rc, pk_error_t *err)
{
    if (rc == PK_OK)
        rc = out_flush(o, err);
    if (rc == PK_OK)
        rc = pk__cli_out_commit(&o->o, err);
    else
        pk__cli_out_abort(&o->o);
    pk_buf_free(&o->buf);
    pk_buf_free(&o->z);
    return rc;
}

/* ---- progress ----------------------------------------------------------- */

typedef struct progress {
    int on; /* stderr is a terminal */
    double t0, last;
    size_t total; /* 0: unknown */
} progress_t;

static void progress_show(progress_t *p, size_t done, int final)
{
    double t = pk__cli_now_s();

    if (!p->on || (!final && t - p->last < 0.2))
        return;
    p->last = t;
    double rate = t > p->t0 ? (double)done / (t - p->t0) : 0;
    if (p->total)
        fprintf(stderr, "\rpicklepool: map: %zu/%zu items, %.0f items/s   ",
                done, p->total, rate);
    else
        fprintf(stderr, "\rpicklepool: map: %zu items, %.0f items/s   ", done,
                rate);
    if (final)
        fputc('\n', stderr);
}

/* ---- map ---------------------------------------------------------------- */

typedef struct map_tally {
    size_t done, failed;
    size_t first_index;
    char first_msg[300];
} map_tally_t;

static void tally_item(map_tally_t *t, const pool_item_t *it)
{
    t->done++;
    if (it->status == PK_OK)
        return;
    if (t->failed++ == 0) {
        t->first_index = it->index;
        snprintf(t->first_msg, sizeof t->first_msg, "%s",
                 it->error ? it->error : pk_strerror(it->status));
    }
}

/* Drains `it`, handing each outcome to emit(); returns the map's error, if
 * any, with *err filled. */
typedef pk_err_t (*emit_fn)(void *ctx, const pool_item_t *item,
                            pk_error_t *err);

static pk_err_t drain(pool_iter_t *it, progress_t *prog, map_tally_t *tally,
                      emit_fn emit, void *ctx, pk_error_t *err)
{
    pool_item_t item;
    pk_err_t rc;

    for (;;) {
        /* SIGINT / SIGTERM are only noted while the pool is waited on (the
         * map then stops cleanly); the wait is sliced to look at them. */
        pk__cli_sig_defer(1);
        rc = pool_iter_next(it, &item, 0.2);
        pk__cli_sig_defer(0);
        if (pk__cli_sig_caught())
            return pk__err(err, PK_EINTR, "%s", "");
        if (rc == PK_ETIMEDOUT) {
            progress_show(prog, tally->done, 0);
            continue;
        }
        if (rc == PK_EOF)
            return PK_OK; /* end of the map */
        if (rc == PK_ECRASHED)
            return pk__err(err, rc,
                           "the pool stopped: its workers keep dying at "
                           "start-up, or its fork server died");
        if (rc != PK_OK) /* pk_error_format names the code: nothing to add */
            return pk__err(err, rc, "%s", "");
        tally_item(tally, &item);
        if ((rc = emit(ctx, &item, err)) != PK_OK)
            return rc;
        progress_show(prog, tally->done, 0);
    }
}

typedef struct list_out {
    pk_doc_t *doc;
    pk_value_t *list;
    copy_memo_t memo;
} list_out_t;

static pk_err_t emit_list(void *ctx, const pool_item_t *item, pk_error_t *err)
{
    list_out_t *o = ctx;
    pk_value_t *v;

    if (item->status == PK_OK) {
        v = copy_value(o->doc, item->value, &o->memo);
        memo_reset(&o->memo);
    } else {
        v = failure_marker(o->doc, item->index, item->status, item->error);
    }
    if (v == NULL || pk_list_append(o->doc, o->list, v) != PK_OK)
        return pk__err(err, PK_ENOMEM, "out of memory");
    return PK_OK;
}

typedef struct pickles_out {
    stream_out_t out;
    pk_doc_t *scratch; /* for failure markers */
} pickles_out_t;

static pk_err_t emit_stream(void *ctx, const pool_item_t *item, pk_error_t *err)
{
    pickles_out_t *o = ctx;
    pk_err_t rc;

    if (item->status == PK_OK)
        return out_put(&o->out, item->value, err);
    pk_value_t *v =
        failure_marker(o->scratch, item->index, item->status, item->error);
    rc =
        v ? out_put(&o->out, v, err) : pk__err(err, PK_ENOMEM, "out of memory");
    pk_doc_free(&o->scratch); /* markers are rare: a fresh doc each */
    if (pk_doc_new(&o->scratch) != PK_OK && rc == PK_OK)
        rc = pk__err(err, PK_ENOMEM, "out of memory");
    return rc;
}

/* Exit status after a map that ran; reports failed items in one line. */
static int map_status(const map_tally_t *t)
{
    if (t->failed == 0)
        return PK_EXIT_OK;
    fprintf(stderr,
            "picklepool: map: %zu of %zu items failed (first: item %zu: %s)\n",
            t->failed, t->done, t->first_index, t->first_msg);
    return PK_EXIT_ITEMS;
}

/* The map could not run: says why, and for an unknown function where its
 * plugin was looked for; nothing when an interrupt stopped it (its line
 * comes when the process ends by the signal, after the clean-up). */
static void report_map_error(const map_args_t *a, const pk_error_t *err)
{
    if (pk__cli_sig_caught())
        return;
    pk__cli_report("map", err);
    if (err->code == PK_ENOFUNC && a->no_plugin.msg[0] != '\0')
        pk__cli_report("map", &a->no_plugin);
}

static int start_pool(const map_args_t *a, pool_t **pp)
{
    pk_error_t err;

    pk_error_clear(&err);
    if (pool_create(pp, &a->opts, &err) != PK_OK) {
        pk__cli_report("map: cannot start the pool", &err);
        return PK_EXIT_FAIL;
    }
    return PK_EXIT_OK;
}

static int map_list(const map_args_t *a)
{
    pk_buf_t in = {0};
    pk_doc_t *idoc = NULL;
    pk_value_t *root = NULL;
    pool_t *p = NULL;
    pool_iter_t *it = NULL;
    list_out_t lo = {0};
    map_tally_t tally = {0};
    progress_t prog = {0};
    pk_buf_t out = {0};
    pk_cli_out_t o;
    pk_error_t err;
    size_t used = 0;
    int status = PK_EXIT_FAIL;

    pk_error_clear(&err);
    /* OUT first: finding out after the work that it cannot be written
     * would throw every result away. */
    if (pk__cli_out_open(&o, a->out, &err) != PK_OK) {
        pk__cli_report(a->out, &err);
        return PK_EXIT_FAIL;
    }
    if (pk__cli_read_file(a->in, a->max_input, &in, &err) != PK_OK) {
        pk__cli_report(a->in, &err);
        goto done;
    }
    if (pk_doc_new(&idoc) != PK_OK || pk_doc_new(&lo.doc) != PK_OK) {
        pk__err(&err, PK_ENOMEM, "out of memory");
        pk__cli_report("map", &err);
        goto done;
    }
    if (pk_loads(idoc, in.data, in.len, &a->lopts, &root, &used, &err) !=
        PK_OK) {
        pk__cli_report(a->in, &err);
        goto done;
    }
    if (root->type != PK_LIST && root->type != PK_TUPLE) {
        fprintf(stderr,
                "picklepool: %s: expected a pickled list of arguments, got %s "
                "(use --stream for one pickle per item)\n",
                a->in, pk_type_name((pk_type_t)root->type));
        goto done;
    }
    if (used < in.len) {
        fprintf(stderr,
                "picklepool: %s: more than one pickle (%zu trailing bytes); "
                "use --stream for one pickle per item\n",
                a->in, in.len - used);
        goto done;
    }
    if ((lo.list = pk_list_new(lo.doc, pk_len(root))) == NULL) {
        pk__err(&err, PK_ENOMEM, "out of memory");
        pk__cli_report("map", &err);
        goto done;
    }
    if (start_pool(a, &p) != PK_EXIT_OK)
        goto done;

    list_in_t li = {root, 0};
    prog.on = isatty(STDERR_FILENO);
    prog.t0 = pk__cli_now_s();
    prog.total = pk_len(root);
    if (pool_imap(p, a->module, a->func, list_next, &li, &a->copts, &it,
                  &err) != PK_OK ||
        drain(it, &prog, &tally, emit_list, &lo, &err) != PK_OK) {
        report_map_error(a, &err);
        goto done;
    }
    progress_show(&prog, tally.done, 1);
    pool_iter_free(&it);
    pool_destroy(&p); /* workers gone before the (possibly slow) write */
    if (pk_dumps(lo.list, NULL, &out, &err) != PK_OK) {
        pk__cli_report("map: cannot pickle the results", &err);
        goto done;
    }
    if (pk__cli_write_out(&o, out.data, out.len, &err) != PK_OK) {
        pk__cli_report(a->out, &err);
        goto done;
    }
    status = map_status(&tally);
done:
    pool_iter_free(&it);
    pool_destroy(&p);
    pk__cli_out_abort(&o);
    memo_reset(&lo.memo);
    pk_buf_free(&out);
    pk_buf_free(&in);
    pk_doc_free(&idoc);
    pk_doc_free(&lo.doc);
    pk__cli_sig_die(); /* an interrupt: everything is cleaned up */
    return status;
}

static int map_stream(const map_args_t *a)
{
    stream_in_t in;
    pickles_out_t po;
    pool_t *p = NULL;
    pool_iter_t *it = NULL;
    map_tally_t tally = {0};
    progress_t prog = {0};
    pk_error_t err;
    pk_err_t rc;
    int status = PK_EXIT_FAIL;

    pk_error_clear(&err);
    memset(&po, 0, sizeof po);
    if (out_open(&po.out, a->out, &err) != PK_OK) {
        pk__cli_report(a->out, &err);
        return PK_EXIT_FAIL;
    }
    if (stream_open(&in, a->in, a->max_input) != PK_OK) {
        pk__cli_report(a->in, &in.err);
        out_close(&po.out, PK_EIO, &err);
        stream_close(&in);
        return PK_EXIT_FAIL;
    }
    in.lopts = &a->lopts;
    if (pk_doc_new(&po.scratch) != PK_OK) {
        pk__err(&err, PK_ENOMEM, "out of memory");
        pk__cli_report("map", &err);
        out_close(&po.out, PK_ENOMEM, &err);
        goto done;
    }
    if (start_pool(a, &p) != PK_EXIT_OK) {
        out_close(&po.out, PK_EIO, &err);
        goto done;
    }
    prog.on = isatty(STDERR_FILENO);
    prog.t0 = pk__cli_now_s();
    rc = pool_imap(p, a->module, a->func, stream_next, &in, &a->copts, &it,
                   &err);
    if (rc == PK_OK)
        rc = drain(it, &prog, &tally, emit_stream, &po, &err);
    if (rc != PK_OK) {
        if (in.rc != PK_OK) { /* the input stopped the map */
            char what[PATH_MAX + 32];
            snprintf(what, sizeof what, "%s: item %zu", a->in, in.items);
            pk__cli_report(what, &in.err);
        } else {
            report_map_error(a, &err);
        }
        out_close(&po.out, rc, &err);
        goto done;
    }
    progress_show(&prog, tally.done, 1);
    if (out_close(&po.out, PK_OK, &err) != PK_OK) {
        pk__cli_report(a->out, &err);
        goto done;
    }
    status = map_status(&tally);
done:
    pool_iter_free(&it);
    pool_destroy(&p);
    pk_doc_free(&po.scratch);
    stream_close(&in);
    pk__cli_sig_die(); /* an interrupt: everything is cleaned up */
    return status;
}

int pk__cmd_map(int argc, char **argv)
{
    map_args_t a;
    int rc = parse_map_args(argc, argv, &a);

    if (rc != PK_EXIT_OK)
        return rc;
    if (a.list)
        return pk__cli_list_plugins(a.plugins, a.opts.nplugins);
    return a.stream ? map_stream(&a) : map_list(&a);
}
