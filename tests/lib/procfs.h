/*
 * procfs.h - what this process holds, read from /proc, for the tests that
 * check that a pool gives everything back: its open fds (with what each
 * points to), its descendant processes (with their states, so a zombie
 * shows), and the unix socket paths it has bound.
 *
 * The fd and process lists are big (a few hundred KiB): keep them static
 * or on the heap, not on a test's stack.
 */
#ifndef PK_TEST_PROCFS_H
#define PK_TEST_PROCFS_H

#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#define PROCFS_MAX_FDS 1024
#define PROCFS_MAX_KIDS 256

typedef struct procfs_fds {
    size_t n;
    int fd[PROCFS_MAX_FDS];
    char target[PROCFS_MAX_FDS][128];
} procfs_fds_t;

typedef struct procfs_proc {
    int pid, ppid;
    char state; /* as in /proc/PID/stat: R, S, Z, ... */
} procfs_proc_t;

/* This process's resident set in KiB (0 when /proc cannot say).  Header
 * only: bench/shared_rss.c uses it too. */
static inline long procfs_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long sz = 0, rss = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &sz, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* This process's open fds and their readlink() targets. */
void procfs_fd_snapshot(procfs_fds_t *l);

/* A message listing the fds in `after` that are not (same number and
 * target) in `before`; NULL when none.  The message is a static buffer. */
const char *procfs_fd_extra(const procfs_fds_t *before,
                            const procfs_fds_t *after);

/* Process pid's parent and state into *out: 0, or -1 when it is gone. */
int procfs_stat(int pid, procfs_proc_t *out);

/* Descendants of `root` (not root itself), with their states, into out;
 * returns how many (at most cap). */
size_t procfs_descendants(int root, procfs_proc_t *out, size_t cap);

/* Whether pid exists (a zombie too). */
int procfs_alive(int pid);

/* Paths of the unix sockets this process has bound (its fds matched
 * against /proc/net/unix by inode): a pool's ipc endpoints. */
size_t procfs_bound_unix_paths(char paths[][256], size_t cap);

/* What a pool must give back: fds and descendants, before and after. */
typedef struct procfs_held {
    procfs_fds_t fds;
    size_t nkids;
    procfs_proc_t kids[PROCFS_MAX_KIDS];
} procfs_held_t;

/* Records this process's fds and descendants in *h. */
void procfs_held_snapshot(procfs_held_t *h);

/* Compares the process now with the snapshot `before`: a message naming
 * the first difference (a descendant that is new or a zombie, a different
 * number of descendants, an fd that is new), NULL when there is none.  The
 * message is a static buffer. */
const char *procfs_held_extra(const procfs_held_t *before);

#endif /* PK_TEST_PROCFS_H */
