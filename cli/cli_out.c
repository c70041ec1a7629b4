/*
 * cli_out.c - where the picklepool CLI writes its output, and what an
 * interrupt does to it.
 *
 * OUT is what the user named, followed the way a shell's `>` follows it:
 *   - a device, FIFO, socket or other special file is opened and written in
 *     place (replacing /dev/null by a regular file would be data loss);
 *   - a symlink is followed to its target, and the target is written;
 *   - a regular file (or a missing one) is replaced atomically: the output
 *     goes to an unnamed file in the target's directory (O_TMPFILE), which
 *     is flushed to disk and only then given a name, so a reader sees the
 *     old file or the whole new one, and a process killed half-way (even by
 *     SIGKILL) leaves nothing behind.  Where the file system or a missing
 *     /proc refuses O_TMPFILE, a hidden named temporary ".NAME.XXXXXX" is
 *     used instead, removed on any failure and on SIGINT / SIGTERM.
 *
 * Interrupts: opening an output installs handlers for SIGINT and SIGTERM.
 * By default a signal removes the named temporary (if any), prints one line
 * ("picklepool: interrupted by SIGINT; OUT left as it was") and ends the
 * process by the same signal, so its parent sees how it ended.  A command
 * that can stop cleanly (map, while it waits on the pool) defers signals
 * around the waits (pk__cli_sig_defer) and polls pk__cli_sig_caught(); a
 * second signal while one is pending ends the process at once.
 *
 * Nothing here is thread-safe: it is the CLI's, which has one thread of its
 * own (the pool's threads never touch it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/common.h"

#define MAX_SYMLINKS 40 /* as the kernel's own limit on a path walk */

/* ---- interrupts ------------------------------------------------------- */

static volatile sig_atomic_t sig_defer;  /* a wait on the pool is under way */
static volatile sig_atomic_t sig_caught; /* deferred signal, 0: none */
static int sig_installed;
/* Built in normal context, read by the handler: the named temporary to
 * remove ("" none) and the end of the interrupt message. */
static char sig_tmp[PATH_MAX];
static char sig_note[PATH_MAX + 64];

static void put_str(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Async-signal-safe: removes the temporary, says why, dies by `sig`. */
static void die_by(int sig)
{
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    sigset_t ss;

    if (sig_tmp[0] != '\0')
        unlink(sig_tmp);
    put_str("picklepool: interrupted by ");
    put_str(name);
    put_str(sig_note);
    put_str("\n");
    signal(sig, SIG_DFL);
    sigemptyset(&ss);
    sigaddset(&ss, sig);
    sigprocmask(SIG_UNBLOCK, &ss, NULL);
    raise(sig);
    _exit(128 + sig); /* not reached */
}

static void on_signal(int sig)
{
    if (sig_defer && sig_caught == 0) {
        sig_caught = sig;
        return;
    }
    die_by(sig);
}

static void sig_install(void)
{
    static const int sigs[] = {SIGINT, SIGTERM};
    struct sigaction sa;

    if (sig_installed)
        return;
    sig_installed = 1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < PK_ARRAY_LEN(sigs); i++) {
        struct sigaction old;
        /* An ignored signal stays ignored (nohup, background jobs). */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(sigs[i], &sa, NULL);
    }
}

void pk__cli_sig_defer(int on)
{
    sig_defer = on;
}

int pk__cli_sig_caught(void)
{
    return sig_caught;
}

void pk__cli_sig_die(void)
{
    if (sig_caught != 0)
        die_by(sig_caught);
}

/* Sets what an interrupt leaves to say and to remove. */
static void sig_set(const char *note_path, const char *tmp)
{
    /* Written while the signals are blocked, so the handler never sees a
     * half-copied string. */
    sigset_t ss, old;
    sigemptyset(&ss);
    sigaddset(&ss, SIGINT);
    sigaddset(&ss, SIGTERM);
    sigprocmask(SIG_BLOCK, &ss, &old);
    if (note_path != NULL)
        snprintf(sig_note, sizeof sig_note, "; %s left as it was", note_path);
    else
        sig_note[0] = '\0';
    snprintf(sig_tmp, sizeof sig_tmp, "%s", tmp != NULL ? tmp : "");
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* ---- where OUT really is ---------------------------------------------- */

/* The path at the end of path's chain of symlinks (the path itself when it
 * is not one, or is missing), as a pk__malloc'd string; NULL with err
 * filled. */
static char *follow_links(const char *path, pk_error_t *err)
{
    char *cur = pk__strdup(path);

    for (int hops = 0; cur != NULL; hops++) {
        struct stat st;
        char target[PATH_MAX];
        ssize_t n;

        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode))
            return cur; /* missing (created where named) or not a link */
        if (hops == MAX_SYMLINKS) {
            pk__free(cur);
            pk__err_sys(err, PK_ESYS, ELOOP, "cannot follow");
            return NULL;
        }
        n = readlink(cur, target, sizeof target - 1);
        if (n < 0) {
            pk__err_sys(err, PK_ESYS, errno, "readlink");
            pk__free(cur);
            return NULL;
        }
        target[n] = '\0';
        const char *slash = strrchr(cur, '/');
        char *next;
        if (target[0] == '/' || slash == NULL) {
            next = pk__strdup(target);
        } else { /* relative to the link's own directory */
            size_t dl = (size_t)(slash - cur) + 1;
            next = pk__malloc(dl + (size_t)n + 1);
            if (next != NULL) {
                memcpy(next, cur, dl);
                memcpy(next + dl, target, (size_t)n + 1);
            }
        }
        pk__free(cur);
        cur = next;
    }
    pk__err(err, PK_ENOMEM, "out of memory");
    return NULL;
}

/* The directory part of `path` ("." when it has none), pk__malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *d = pk__malloc(n + 1);

    if (d != NULL) {
        memcpy(d, slash == NULL ? "." : path, n);
        d[n] = '\0';
    }
    return d;
}

/* A fresh temporary name beside `target`: "dir/.base.XXXXXX". */
static char *tmp_template(const char *target)
{
    const char *slash = strrchr(target, '/');
    size_t dl = slash != NULL ? (size_t)(slash - target) + 1 : 0;
    char *t = pk__malloc(strlen(target) + 16);

    if (t != NULL)
        sprintf(t, "%.*s.%s.XXXXXX", (int)dl, target, target + dl);
    return t;
}

/* O_TMPFILE files get their name through /proc/self/fd (or, with
 * CAP_DAC_READ_SEARCH, AT_EMPTY_PATH); without /proc a named temporary is
 * used from the start rather than finding out at the end. */
static int anon_linkable(void)
{
    return access("/proc/self/fd", X_OK) == 0;
}

pk_err_t pk__cli_out_open(pk_cli_out_t *o, const char *path, pk_error_t *err)
{
    struct stat st;
    mode_t um;

    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->path = path;
    if (strcmp(path, "-") == 0) {
        o->kind = PK_OUT_STDOUT;
        o->fd = STDOUT_FILENO;
        return PK_OK;
    }
    sig_install();
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode))
            return pk__err_sys(err, PK_ESYS, EISDIR, "cannot write");
        /* A device, FIFO or socket: written where it is. */
        o->fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (o->fd < 0)
            return pk__err_sys(err, PK_ESYS, errno, "cannot open");
        o->kind = PK_OUT_INPLACE;
        return PK_OK;
    }
    if ((o->target = follow_links(path, err)) == NULL)
        return err != NULL ? err->code : PK_ESYS;
    if (anon_linkable()) {
        char *dir = dir_of(o->target);
        if (dir == NULL) {
            pk__cli_out_abort(o);
            return pk__err(err, PK_ENOMEM, "out of memory");
        }
        o->fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
        pk__free(dir);
        if (o->fd >= 0) {
            o->kind = PK_OUT_ANON;
            sig_set(path, NULL);
            return PK_OK;
        }
        /* EOPNOTSUPP and the like: a named temporary, which also reports
         * the real error (a missing or read-only directory). */
    }
    if ((o->tmp = tmp_template(o->target)) == NULL) {
        pk__cli_out_abort(o);
        return pk__err(err, PK_ENOMEM, "out of memory");
    }
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        pk_err_t rc =
            pk__err_sys(err, PK_ESYS, errno, "cannot create a temporary file");
        pk__free(o->tmp);
        o->tmp = NULL;
        pk__cli_out_abort(o);
        return rc;
    }
    o->kind = PK_OUT_NAMED;
    sig_set(path, o->tmp);
    um = umask(0); /* the CLI is single-threaded */
    umask(um);
    if (fchmod(o->fd, 0666 & ~um) != 0) {
        pk_err_t rc = pk__err_sys(err, PK_ESYS, errno, "chmod");
        pk__cli_out_abort(o);
        return rc;
    }
    return PK_OK;
}

pk_err_t pk__cli_out_write(pk_cli_out_t *o, const void *data, size_t len,
                           pk_error_t *err)
{
    return pk__cli_write_all(o->fd, data, len, err);
}

/* Names the finished unnamed file o->fd as o->target.  linkat cannot
 * replace a file, so an existing target is replaced by a rename from a
 * fresh hidden name (removed by an interrupt in between). */
static pk_err_t name_anon(pk_cli_out_t *o, pk_error_t *err)
{
    char proc[64];
    int e;

    snprintf(proc, sizeof proc, "/proc/self/fd/%d", o->fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, o->target, AT_SYMLINK_FOLLOW) == 0)
        return PK_OK;
    if (errno != EEXIST)
        return pk__err_sys(err, PK_ESYS, errno, "cannot name the output");
    for (int tries = 0; tries < 100; tries++) {
        uint32_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint32_t)getpid() * 2654435761u + (uint32_t)tries;
        if ((o->tmp = tmp_template(o->target)) == NULL)
            return pk__err(err, PK_ENOMEM, "out of memory");
        snprintf(o->tmp + strlen(o->tmp) - 6, 7, "%06x", r & 0xffffff);
        sig_set(o->path, o->tmp);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, o->tmp, AT_SYMLINK_FOLLOW) == 0) {
            if (rename(o->tmp, o->target) == 0)
                return PK_OK;
            e = errno;
            unlink(o->tmp);
            return pk__err_sys(err, PK_ESYS, e, "rename");
        }
        e = errno;
        sig_set(o->path, NULL);
        pk__free(o->tmp);
        o->tmp = NULL;
        if (e != EEXIST)
            return pk__err_sys(err, PK_ESYS, e, "cannot name the output");
    }
    return pk__err_sys(err, PK_ESYS, EEXIST, "cannot name the output");
}

pk_err_t pk__cli_out_commit(pk_cli_out_t *o, pk_error_t *err)
{
    pk_err_t rc = PK_OK;

    switch (o->kind) {
    case PK_OUT_NONE:
    case PK_OUT_STDOUT:
        break;
    case PK_OUT_INPLACE:
        if (close(o->fd) != 0)
            rc = pk__err_sys(err, PK_ESYS, errno, "close");
        o->fd = -1;
        break;
    case PK_OUT_ANON:
    case PK_OUT_NAMED:
        if (fsync(o->fd) != 0 && errno != EINVAL && errno != EROFS) {
            rc = pk__err_sys(err, PK_ESYS, errno, "fsync");
            break;
        }
        if (o->kind == PK_OUT_ANON) {
            rc = name_anon(o, err);
        } else {
            if (close(o->fd) != 0) {
                o->fd = -1;
                rc = pk__err_sys(err, PK_ESYS, errno, "close");
                break;
            }
            o->fd = -1;
            if (rename(o->tmp, o->target) != 0)
                rc = pk__err_sys(err, PK_ESYS, errno, "rename");
        }
        if (rc == PK_OK) {
            pk__free(o->tmp); /* now the target's name: not to remove */
            o->tmp = NULL;
        }
        break;
    }
    if (rc == PK_OK && o->fd >= 0 && o->kind != PK_OUT_STDOUT) {
        if (close(o->fd) != 0)
            rc = pk__err_sys(err, PK_ESYS, errno, "close");
        o->fd = -1;
    }
    pk__cli_out_abort(o);
    if (rc == PK_OK)
        sig_set(NULL, NULL); /* OUT is written: nothing to say or remove */
    return rc;
}

void pk__cli_out_abort(pk_cli_out_t *o)
{
    if (o->fd >= 0 && o->kind != PK_OUT_STDOUT)
        close(o->fd);
    o->fd = -1;
    if (o->tmp != NULL)
        unlink(o->tmp);
    /* An interrupt from now on still has OUT as it was to report. */
    if (o->kind == PK_OUT_ANON || o->kind == PK_OUT_NAMED)
        sig_set(o->path, NULL);
    pk__free(o->tmp);
    pk__free(o->target);
    o->tmp = o->target = NULL;
    o->kind = PK_OUT_NONE;
}

/* ---- whole files -------------------------------------------------------- */

pk_err_t pk__cli_write_file(const char *path, const void *data, size_t len,
                            pk_error_t *err)
{
    pk_cli_out_t o;
    pk_err_t rc = pk__cli_out_open(&o, path, err);

    return rc == PK_OK ? pk__cli_write_out(&o, data, len, err) : rc;
}

pk_err_t pk__cli_write_out(pk_cli_out_t *o, const void *data, size_t len,
                           pk_error_t *err)
{
    pk_cli_compress_t kind = pk__cli_compress_for_path(o->path);
    pk_buf_t packed = {0};
    pk_err_t rc = PK_OK;

    if (kind != PK_COMPRESS_NONE) {
        rc = pk__cli_compress(kind, data, len, &packed, err);
        data = packed.data;
        len = packed.len;
    }
    if (rc == PK_OK)
        rc = pk__cli_out_write(o, data, len, err);
    pk_buf_free(&packed);
    if (rc == PK_OK)
        return pk__cli_out_commit(o, err);
    pk__cli_out_abort(o);
    return rc;
}
