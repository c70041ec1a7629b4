/*
 * cli_io.c - the file layer of the picklepool CLI: whole-file reads that undo
 * gzip / bzip2 / xz compression found by magic bytes, atomic writes that
 * compress by file-name suffix, and the one-line error reporter.
 *
 * The three compressors sit behind one small step interface (init / step /
 * end), so a single driver owns output growth, the size limit, concatenated
 * streams and the truncation check.  Their allocations go through the
 * picklepool allocator hook like every other allocation.
 */
#include <bzlib.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lzma.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cli.h"
#include "core/common.h"

/* ---- reporting -------------------------------------------------------- */

/* Writes s with control characters escaped: messages quote names taken from
 * untrusted pickles and paths, and must stay one harmless line. */
static void put_clean(FILE *fp, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            fprintf(fp, "\\x%02x", c);
        else
            fputc(c, fp);
    }
}

void pk__cli_report(const char *what, const pk_error_t *err)
{
    char line[512];

    pk_error_format(err, line, sizeof(line));
    fputs("picklepool: ", stderr);
    if (what != NULL) {
        put_clean(stderr, what);
        fputs(": ", stderr);
    }
    put_clean(stderr, line);
    fputc('\n', stderr);
}

int pk__cli_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("picklepool: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return PK_EXIT_USAGE;
}

/* ---- growable output ---------------------------------------------------- */

/* Makes room for at least `want` more bytes after b->len, growing by at least
 * half so appends stay amortised O(1). */
pk_err_t pk__cli_buf_reserve(pk_buf_t *b, size_t want, pk_error_t *err)
{
    size_t need, cap;
    uint8_t *p;

    if (want <= b->cap - b->len)
        return PK_OK;
    if (want > SIZE_MAX - b->len)
        return pk__err(err, PK_ENOMEM, "buffer size overflow");
    need = b->len + want;
    cap = b->cap < 4096 ? 4096 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap + cap / 2;
    p = pk__realloc(b->data, cap);
    if (p == NULL)
        return pk__err(err, PK_ENOMEM, "cannot allocate %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    return PK_OK;
}

/* ---- magic and suffix ------------------------------------------------- */

static const struct {
    pk_cli_compress_t kind;
    const char *name;
    const char *suffix;
    const char *magic;
    size_t magic_len;
} formats[] = {
    {PK_COMPRESS_NONE, "none", NULL, NULL, 0},
    {PK_COMPRESS_GZIP, "gzip", ".gz", "\x1f\x8b", 2},
    {PK_COMPRESS_BZIP2, "bzip2", ".bz2", "BZh", 3},
    {PK_COMPRESS_XZ, "xz", ".xz",
     "\xfd"
     "7zXZ\0",
     6},
};

pk_cli_compress_t pk__cli_sniff(const void *data, size_t len)
{
    for (size_t i = 1; i < PK_ARRAY_LEN(formats); i++)
        if (len >= formats[i].magic_len &&
            memcmp(data, formats[i].magic, formats[i].magic_len) == 0)
            return formats[i].kind;
    return PK_COMPRESS_NONE;
}

pk_cli_compress_t pk__cli_compress_for_path(const char *path)
{
    size_t n = strlen(path);

    for (size_t i = 1; i < PK_ARRAY_LEN(formats); i++) {
        size_t k = strlen(formats[i].suffix);
        if (n > k && strcmp(path + n - k, formats[i].suffix) == 0)
            return formats[i].kind;
    }
    return PK_COMPRESS_NONE;
}

const char *pk__cli_compress_name(pk_cli_compress_t c)
{
    if ((size_t)c < PK_ARRAY_LEN(formats))
        return formats[c].name;
    return "unknown";
}

/* ---- the three codecs behind one step interface ----------------------- */

typedef enum step_rc { STEP_MORE, STEP_END, STEP_FAIL } step_rc_t;

typedef struct zcodec {
    pk_cli_compress_t kind;
    int compress;
    int live; /* init succeeded, end() owed */
    union {
        z_stream z;
        bz_stream bz;
        lzma_stream xz;
    } s;
    lzma_allocator xz_alloc;
} zcodec_t;

static void *z_alloc(void *opaque, unsigned items, unsigned size)
{
    return pk__calloc(items, size);
}
static void z_free(void *opaque, void *p)
{
    pk__free(p);
}
static void *bz_alloc(void *opaque, int items, int size)
{
    if (items < 0 || size < 0)
        return NULL;
    return pk__calloc((size_t)items, (size_t)size);
}
static void *xz_alloc(void *opaque, size_t items, size_t size)
{
    return pk__calloc(items, size);
}

static pk_err_t codec_init(zcodec_t *c, pk_cli_compress_t kind, int compress,
                           pk_error_t *err)
{
    const char *name = pk__cli_compress_name(kind);
    int ok = 0, oom = 0;

    memset(c, 0, sizeof(*c));
    c->kind = kind;
    c->compress = compress;
    switch (kind) {
    case PK_COMPRESS_GZIP: {
        int zr;
        c->s.z.zalloc = z_alloc;
        c->s.z.zfree = z_free;
        /* windowBits 15 + 16: gzip wrapper, not zlib's. */
        zr = compress ? deflateInit2(&c->s.z, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                                     15 + 16, 8, Z_DEFAULT_STRATEGY)
                      : inflateInit2(&c->s.z, 15 + 16);
        ok = zr == Z_OK;
        oom = zr == Z_MEM_ERROR;
        break;
    }
    case PK_COMPRESS_BZIP2: {
        int br;
        c->s.bz.bzalloc = bz_alloc;
        c->s.bz.bzfree = z_free;
        br = compress ? BZ2_bzCompressInit(&c->s.bz, 9, 0, 0)
                      : BZ2_bzDecompressInit(&c->s.bz, 0, 0);
        ok = br == BZ_OK;
        oom = br == BZ_MEM_ERROR;
        break;
    }
    case PK_COMPRESS_XZ: {
        lzma_ret xr;
        lzma_stream init = LZMA_STREAM_INIT;
        c->s.xz = init;
        c->xz_alloc.alloc = xz_alloc;
        c->xz_alloc.free = z_free;
        c->s.xz.allocator = &c->xz_alloc;
        xr = compress
                 ? lzma_easy_encoder(&c->s.xz, LZMA_PRESET_DEFAULT,
                                     LZMA_CHECK_CRC64)
                 : lzma_stream_decoder(&c->s.xz, UINT64_MAX, LZMA_CONCATENATED);
        ok = xr == LZMA_OK;
        oom = xr == LZMA_MEM_ERROR;
        break;
    }
    case PK_COMPRESS_NONE:
    default:
        return pk__err(err, PK_EINVAL, "no such compression format");
    }
    if (oom)
        return pk__err(err, PK_ENOMEM, "cannot start %s", name);
    if (!ok)
        return pk__err(err, PK_EIO, "cannot start %s", name);
    c->live = 1;
    return PK_OK;
}

static void codec_end(zcodec_t *c)
{
    if (!c->live)
        return;
    c->live = 0;
    switch (c->kind) {
    case PK_COMPRESS_GZIP:
        if (c->compress)
            deflateEnd(&c->s.z);
        else
            inflateEnd(&c->s.z);
        break;
    case PK_COMPRESS_BZIP2:
        if (c->compress)
            BZ2_bzCompressEnd(&c->s.bz);
        else
            BZ2_bzDecompressEnd(&c->s.bz);
        break;
    case PK_COMPRESS_XZ:
        lzma_end(&c->s.xz);
        break;
    default:
        break;
    }
}

/* One call of the codec: consumes from *in / *inlen, produces into *out /
 * *outlen (both advanced).  `finish`: the input given is all there is.  zlib
 * and bzip2 count in 32-bit units, so their windows are clamped. */
static step_rc_t codec_step(zcodec_t *c, const uint8_t **in, size_t *inlen,
                            uint8_t **out, size_t *outlen, int finish,
                            pk_error_t *err)
{
    const char *name = pk__cli_compress_name(c->kind);
    unsigned ni = *inlen > UINT_MAX ? UINT_MAX : (unsigned)*inlen;
    unsigned no = *outlen > UINT_MAX ? UINT_MAX : (unsigned)*outlen;
    int last = finish && ni == *inlen;
    size_t used_in, made;
    step_rc_t rc = STEP_MORE;

    switch (c->kind) {
    case PK_COMPRESS_GZIP: {
        z_stream *z = &c->s.z;
        int r;
        z->next_in = (Bytef *)*in;
        z->avail_in = ni;
        z->next_out = *out;
        z->avail_out = no;
        r = c->compress ? deflate(z, last ? Z_FINISH : Z_NO_FLUSH)
                        : inflate(z, Z_NO_FLUSH);
        used_in = ni - z->avail_in;
        made = no - z->avail_out;
        if (r == Z_STREAM_END)
            rc = STEP_END;
        else if (r == Z_MEM_ERROR)
            rc =
                (pk__err(err, PK_ENOMEM, "%s: out of memory", name), STEP_FAIL);
        else if (r != Z_OK && r != Z_BUF_ERROR)
            rc = (pk__err(err, PK_EIO, "corrupt %s data: %s", name,
                          z->msg != NULL ? z->msg : "unknown error"),
                  STEP_FAIL);
        break;
    }
    case PK_COMPRESS_BZIP2: {
        bz_stream *bz = &c->s.bz;
        int r;
        bz->next_in = (char *)*in;
        bz->avail_in = ni;
        bz->next_out = (char *)*out;
        bz->avail_out = no;
        r = c->compress ? BZ2_bzCompress(bz, last ? BZ_FINISH : BZ_RUN)
                        : BZ2_bzDecompress(bz);
        used_in = ni - bz->avail_in;
        made = no - bz->avail_out;
        if (r == BZ_STREAM_END)
            rc = STEP_END;
        else if (r == BZ_MEM_ERROR)
            rc =
                (pk__err(err, PK_ENOMEM, "%s: out of memory", name), STEP_FAIL);
        else if (r < 0)
            rc = (pk__err(err, PK_EIO, "corrupt %s data (error %d)", name, r),
                  STEP_FAIL);
        break;
    }
    case PK_COMPRESS_XZ: {
        lzma_stream *x = &c->s.xz;
        lzma_ret r;
        x->next_in = *in;
        x->avail_in = *inlen;
        x->next_out = *out;
        x->avail_out = *outlen;
        r = lzma_code(x, finish ? LZMA_FINISH : LZMA_RUN);
        used_in = *inlen - x->avail_in;
        made = *outlen - x->avail_out;
        if (r == LZMA_STREAM_END)
            rc = STEP_END;
        else if (r == LZMA_MEM_ERROR)
            rc =
                (pk__err(err, PK_ENOMEM, "%s: out of memory", name), STEP_FAIL);
        else if (r != LZMA_OK && r != LZMA_BUF_ERROR)
            rc = (pk__err(err, PK_EIO, "corrupt %s data (error %d)", name,
                          (int)r),
                  STEP_FAIL);
        break;
    }
    default:
        return (pk__err(err, PK_EINVAL, "no such compression format"),
                STEP_FAIL);
    }
    *in += used_in;
    *inlen -= used_in;
    *out += made;
    *outlen -= made;
    return rc;
}

/* Runs the codec over all of data[0..len), appending to *out.  Decoding
 * restarts on a further stream of the same format and fails on truncation. */
static pk_err_t codec_run(pk_cli_compress_t kind, int compress,
                          const void *data, size_t len, size_t max_out,
                          pk_buf_t *out, pk_error_t *err)
{
    const char *name = pk__cli_compress_name(kind);
    const uint8_t *in = data;
    size_t inlen = len, start = out->len;
    zcodec_t c;
    pk_err_t rc = codec_init(&c, kind, compress, err);

    while (rc == PK_OK) {
        size_t room, left, want = len / 2 + 65536;
        uint8_t *o;
        step_rc_t s;

        if (out->len - start > max_out)
            break; /* reported below */
        /* One byte past the limit is enough to see the limit crossed. */
        left = max_out - (out->len - start);
        if (want > left && left < SIZE_MAX)
            want = left + 1;
        if ((rc = pk__cli_buf_reserve(out, want, err)) != PK_OK)
            break;
        o = out->data + out->len;
        /* zlib and bzip2 count in 32 bits: keep `room` what the codec saw. */
        room = out->cap - out->len;
        if (room > UINT_MAX)
            room = UINT_MAX;
        s = codec_step(&c, &in, &inlen, &o, &room, 1, err);
        out->len = (size_t)(o - out->data);
        if (s == STEP_FAIL) {
            rc = err != NULL ? err->code : PK_EIO;
            break;
        }
        if (s == STEP_END) {
            codec_end(&c);
            if (inlen == 0)
                break;
            if (pk__cli_sniff(in, inlen) != kind) {
                rc = pk__err(err, PK_EIO,
                             "%zu bytes of trailing garbage after %s data",
                             inlen, name);
                break;
            }
            rc = codec_init(&c, kind, compress, err);
            continue;
        }
        /* Still short of the stream's end with all input taken and output
         * room to spare: the data stops early. */
        if (!compress && inlen == 0 && room > 0)
            rc = pk__err(err, PK_EIO, "truncated %s data", name);
    }
    if (rc == PK_OK && out->len - start > max_out)
        rc = pk__err(err, PK_ELIMIT, "%s data expands past %zu bytes", name,
                     max_out);
    codec_end(&c);
    if (rc != PK_OK)
        out->len = start;
    return rc;
}

pk_err_t pk__cli_decompress(pk_cli_compress_t c, const void *data, size_t len,
                            size_t max_out, pk_buf_t *out, pk_error_t *err)
{
    return codec_run(c, 0, data, len, max_out, out, err);
}

pk_err_t pk__cli_compress(pk_cli_compress_t c, const void *data, size_t len,
                          pk_buf_t *out, pk_error_t *err)
{
    return codec_run(c, 1, data, len, SIZE_MAX - 1, out, err);
}

/* ---- the input limit ----------------------------------------------------- */

void pk__cli_format_size(size_t n, char *buf, size_t size)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB",
                                        "TiB",   "PiB", "EiB"};
    double v = (double)n;
    size_t u = 0;

    while (v >= 1024 && u + 1 < PK_ARRAY_LEN(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%zu bytes", n);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

/* MemAvailable from /proc/meminfo, in bytes; 0 when unknown. */
static size_t mem_available(void)
{
    FILE *fp = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;

    if (fp == NULL)
        return 0;
    while (fgets(line, sizeof line, fp) != NULL)
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(fp);
    return kb > SIZE_MAX / 1024 ? SIZE_MAX : (size_t)kb * 1024;
}

size_t pk__cli_default_max_input(void)
{
    size_t avail = mem_available(), lim;
    struct rlimit rl;

    if (avail == 0) { /* no /proc: a quarter of the RAM */
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz / 2
                                     : PK_CLI_MIN_MAX_INPUT * 2;
    }
    lim = avail / PK_CLI_MAX_INPUT_SHARE;
    /* An address-space or data limit caps what can be allocated at all. */
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / PK_CLI_MAX_INPUT_SHARE < lim)
        lim = rl.rlim_cur / PK_CLI_MAX_INPUT_SHARE;
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / PK_CLI_MAX_INPUT_SHARE < lim)
        lim = rl.rlim_cur / PK_CLI_MAX_INPUT_SHARE;
    return lim < PK_CLI_MIN_MAX_INPUT ? PK_CLI_MIN_MAX_INPUT : lim;
}

pk_err_t pk__cli_limit_error(pk_error_t *err, const char *what, size_t max)
{
    char lim[32];

    pk__cli_format_size(max, lim, sizeof lim);
    return pk__err(err, PK_ELIMIT,
                   "%s is larger than the input limit of %s (%zu bytes); "
                   "--max-input raises it",
                   what, lim, max);
}

/* ---- reading, piece by piece ------------------------------------------- */

#define RAW_CHUNK ((size_t)1 << 16) /* compressed bytes read at a time */
#define MAGIC_MAX 6                 /* the longest magic (xz) */

struct pk_cli_reader {
    FILE *fp;
    pk_cli_compress_t kind;
    zcodec_t c;
    uint8_t *in; /* RAW_CHUNK bytes read ahead */
    size_t in_pos, in_len;
    int in_eof; /* fp is at its end (or failed) */
    int ended;  /* the codec finished a stream */
    int eof;    /* nothing more to give */
};

/* Moves what is left of r->in to its start and reads more after it. */
static pk_err_t raw_fill(pk_cli_reader_t *r, pk_error_t *err)
{
    size_t n, ask;

    if (r->in_pos > 0) {
        memmove(r->in, r->in + r->in_pos, r->in_len - r->in_pos);
        r->in_len -= r->in_pos;
        r->in_pos = 0;
    }
    if (r->in_eof || r->in_len == RAW_CHUNK)
        return PK_OK;
    ask = RAW_CHUNK - r->in_len;
    n = fread(r->in + r->in_len, 1, ask, r->fp);
    r->in_len += n;
    if (n < ask) {
        if (ferror(r->fp))
            return pk__err_sys(err, PK_ESYS, errno, "read");
        r->in_eof = 1;
    }
    return PK_OK;
}

pk_err_t pk__cli_reader_open(pk_cli_reader_t **rp, FILE *fp, pk_error_t *err)
{
    pk_cli_reader_t *r = pk__calloc(1, sizeof *r);
    pk_err_t rc;

    *rp = NULL;
    if (r == NULL || (r->in = pk__malloc(RAW_CHUNK)) == NULL) {
        pk__free(r);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    r->fp = fp;
    /* Enough bytes to tell the compression by its magic. */
    while (r->in_len < MAGIC_MAX && !r->in_eof)
        if ((rc = raw_fill(r, err)) != PK_OK) {
            pk__cli_reader_close(&r);
            return rc;
        }
    r->kind = pk__cli_sniff(r->in, r->in_len);
    if (r->kind != PK_COMPRESS_NONE &&
        (rc = codec_init(&r->c, r->kind, 0, err)) != PK_OK) {
        pk__cli_reader_close(&r);
        return rc;
    }
    *rp = r;
    return PK_OK;
}

pk_cli_compress_t pk__cli_reader_kind(const pk_cli_reader_t *r)
{
    return r->kind;
}

/* Plain input: what is read ahead, then straight from the file. */
static pk_err_t plain_read(pk_cli_reader_t *r, uint8_t *dst, size_t want,
                           size_t *got, pk_error_t *err)
{
    size_t n = r->in_len - r->in_pos;

    if (n > 0) {
        if (n > want)
            n = want;
        memcpy(dst, r->in + r->in_pos, n);
        r->in_pos += n;
        *got = n;
        return PK_OK;
    }
    if (r->in_eof) {
        r->eof = 1;
        return PK_OK;
    }
    n = fread(dst, 1, want, r->fp);
    *got = n;
    if (n < want) {
        if (ferror(r->fp))
            return pk__err_sys(err, PK_ESYS, errno, "read");
        r->in_eof = 1;
    }
    if (n == 0)
        r->eof = 1;
    return PK_OK;
}

pk_err_t pk__cli_reader_read(pk_cli_reader_t *r, void *dst, size_t want,
                             size_t *got, pk_error_t *err)
{
    const char *name = pk__cli_compress_name(r->kind);
    pk_err_t rc;

    *got = 0;
    if (r->eof || want == 0)
        return PK_OK;
    if (r->kind == PK_COMPRESS_NONE)
        return plain_read(r, dst, want, got, err);
    if (want > UINT_MAX) /* zlib and bzip2 count in 32 bits */
        want = UINT_MAX;
    while (*got == 0 && !r->eof) {
        if ((r->in_pos == r->in_len ||
             (r->ended && r->in_len - r->in_pos < MAGIC_MAX)) &&
            !r->in_eof && (rc = raw_fill(r, err)) != PK_OK)
            return rc;
        if (r->ended) {
            /* The end of a stream: another of the same format may follow
             * (`cat a.gz b.gz`), anything else is an error. */
            if (r->in_pos == r->in_len) {
                r->eof = 1;
                break;
            }
            if (pk__cli_sniff(r->in + r->in_pos, r->in_len - r->in_pos) !=
                r->kind)
                return pk__err(err, PK_EIO, "trailing garbage after %s data",
                               name);
            if ((rc = codec_init(&r->c, r->kind, 0, err)) != PK_OK)
                return rc;
            r->ended = 0;
        }
        const uint8_t *ip = r->in + r->in_pos;
        size_t il = r->in_len - r->in_pos, ol = want;
        uint8_t *op = dst;
        step_rc_t s = codec_step(&r->c, &ip, &il, &op, &ol, r->in_eof, err);
        r->in_pos = (size_t)(ip - r->in);
        *got = want - ol;
        if (s == STEP_FAIL)
            return err != NULL ? err->code : PK_EIO;
        if (s == STEP_END) {
            codec_end(&r->c);
            r->ended = 1;
        } else if (r->in_eof && r->in_pos == r->in_len && ol > 0) {
            /* All input taken, room to spare, no end of stream. */
            return pk__err(err, PK_EIO, "truncated %s data", name);
        }
    }
    return PK_OK;
}

void pk__cli_reader_close(pk_cli_reader_t **rp)
{
    pk_cli_reader_t *r = *rp;

    if (r == NULL)
        return;
    codec_end(&r->c);
    pk__free(r->in);
    pk__free(r);
    *rp = NULL;
}

/* ---- reading whole files -------------------------------------------------- */

pk_err_t pk__cli_read_stream(FILE *fp, size_t max, pk_buf_t *out,
                             pk_error_t *err)
{
    size_t start = out->len;
    pk_cli_reader_t *r = NULL;
    pk_err_t rc = pk__cli_reader_open(&r, fp, err);

    while (rc == PK_OK) {
        size_t got = 0, held = out->len - start;
        if (held > max) {
            rc = pk__cli_limit_error(err,
                                     r->kind == PK_COMPRESS_NONE
                                         ? "the input"
                                         : "the decompressed input",
                                     max);
            break;
        }
        /* Grow towards one byte past the limit, no further: the limit is
         * what the input may cost in memory. */
        if (out->cap - out->len < 4096) {
            size_t cap = out->cap < 65536 ? 65536 : out->cap + out->cap / 2;
            size_t top = max - held < SIZE_MAX - out->len - 1
                             ? out->len + (max - held) + 1
                             : SIZE_MAX;
            if (cap > top)
                cap = top;
            if (cap <= out->len)
                cap = out->len + 1;
            uint8_t *p = pk__realloc(out->data, cap);
            if (p == NULL) {
                rc = pk__err(err, PK_ENOMEM, "cannot allocate %zu bytes", cap);
                break;
            }
            out->data = p;
            out->cap = cap;
        }
        rc = pk__cli_reader_read(r, out->data + out->len, out->cap - out->len,
                                 &got, err);
        out->len += got;
        if (rc == PK_OK && got == 0)
            break;
    }
    pk__cli_reader_close(&r);
    if (rc != PK_OK)
        out->len = start;
    return rc;
}

pk_err_t pk__cli_read_file(const char *path, size_t max, pk_buf_t *out,
                           pk_error_t *err)
{
    FILE *fp;
    pk_err_t rc;

    if (strcmp(path, "-") == 0)
        return pk__cli_read_stream(stdin, max, out, err);
    fp = fopen(path, "rb");
    if (fp == NULL)
        return pk__err_sys(err, PK_ESYS, errno, "cannot open");
    rc = pk__cli_read_stream(fp, max, out, err);
    fclose(fp); /* read-only: nothing to lose on close */
    return rc;
}

/* ---- writing ------------------------------------------------------------ */

pk_err_t pk__cli_write_all(int fd, const void *data, size_t len,
                           pk_error_t *err)
{
    const uint8_t *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pk__err_sys(err, PK_ESYS, errno, "write");
        p += n;
        len -= (size_t)n;
    }
    return PK_OK;
}
