/*
 * procfs.c - this process's fds, descendants and bound unix sockets, read
 * from /proc (see procfs.h).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>

#include <cmocka.h>

#include "procfs.h"

void procfs_fd_snapshot(procfs_fds_t *l)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;

    assert_non_null(d);
    l->n = 0;
    while ((de = readdir(d)) != NULL && l->n < PROCFS_MAX_FDS) {
        char path[300];
        int fd = atoi(de->d_name);
        if (de->d_name[0] == '.' || fd == dirfd(d))
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(path, l->target[l->n], 127);
        l->target[l->n][len > 0 ? len : 0] = '\0';
        l->fd[l->n++] = fd;
    }
    closedir(d);
}

const char *procfs_fd_extra(const procfs_fds_t *a, const procfs_fds_t *b)
{
    static char msg[2048];
    size_t len = 0;

    msg[0] = '\0';
    for (size_t i = 0; i < b->n; i++) {
        int found = 0;
        for (size_t j = 0; j < a->n && !found; j++)
            found = a->fd[j] == b->fd[i] && !strcmp(a->target[j], b->target[i]);
        if (!found && len < sizeof msg - 200)
            len += (size_t)snprintf(msg + len, sizeof msg - len, " %d->%s",
                                    b->fd[i], b->target[i]);
    }
    return len ? msg : NULL;
}

int procfs_stat(int pid, procfs_proc_t *out)
{
    char path[64], buf[1024];
    int fd;
    ssize_t len;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0)
        return -1;
    buf[len] = '\0';
    /* "pid (comm) state ppid ...": comm may hold anything */
    char *rp = strrchr(buf, ')');
    if (rp == NULL || sscanf(rp + 1, " %c %d", &out->state, &out->ppid) != 2)
        return -1;
    out->pid = pid;
    return 0;
}

/* Every process on the machine: pid, parent and state. */
static size_t proc_list(procfs_proc_t *out, size_t cap)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    size_t n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL && n < cap) {
        int pid = atoi(de->d_name);
        if (pid > 0 && procfs_stat(pid, &out[n]) == 0)
            n++;
    }
    closedir(d);
    return n;
}

size_t procfs_descendants(int root, procfs_proc_t *out, size_t cap)
{
    static procfs_proc_t all[65536];
    size_t n = proc_list(all, 65536), k = 0;
    int changed = 1;
    char *mark = calloc(n, 1);

    assert_non_null(mark);
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (mark[i])
                continue;
            int parent_in = all[i].ppid == root;
            for (size_t j = 0; j < n && !parent_in; j++)
                parent_in = mark[j] && all[j].pid == all[i].ppid;
            if (parent_in) {
                mark[i] = 1;
                changed = 1;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (mark[i] && k < cap)
            out[k++] = all[i];
    free(mark);
    return k;
}

int procfs_alive(int pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

size_t procfs_bound_unix_paths(char paths[][256], size_t cap)
{
    procfs_fds_t *fds = malloc(sizeof *fds);
    FILE *f = fopen("/proc/net/unix", "r");
    char line[1024];
    size_t n = 0;

    assert_non_null(fds);
    procfs_fd_snapshot(fds);
    if (f == NULL) {
        free(fds);
        return 0;
    }
    if (fgets(line, sizeof line, f) == NULL) /* header */
        line[0] = '\0';
    while (fgets(line, sizeof line, f) && n < cap) {
        unsigned long inode;
        char path[512] = "";
        if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu %511s", &inode, path) <
                2 ||
            path[0] != '/')
            continue;
        char want[64];
        snprintf(want, sizeof want, "socket:[%lu]", inode);
        for (size_t i = 0; i < fds->n; i++)
            if (strcmp(fds->target[i], want) == 0) {
                snprintf(paths[n++], 256, "%.255s", path);
                break;
            }
    }
    fclose(f);
    free(fds);
    return n;
}

void procfs_held_snapshot(procfs_held_t *h)
{
    procfs_fd_snapshot(&h->fds);
    h->nkids = procfs_descendants(getpid(), h->kids, PROCFS_MAX_KIDS);
}

const char *procfs_held_extra(const procfs_held_t *before)
{
    static procfs_held_t now;
    static procfs_proc_t live[PROCFS_MAX_KIDS];
    static char msg[2200];

    /* no process is new, none is a zombie */
    procfs_held_snapshot(&now);
    size_t nlive = 0;
    for (size_t i = 0; i < now.nkids; i++) {
        int old = 0;
        for (size_t j = 0; j < before->nkids && !old; j++)
            old = before->kids[j].pid == now.kids[i].pid;
        if (!old || now.kids[i].state == 'Z')
            live[nlive++] = now.kids[i];
    }
    if (nlive) {
        snprintf(msg, sizeof msg,
                 "%zu process(es) left behind, e.g. pid %d (parent %d, "
                 "state %c)",
                 nlive, live[0].pid, live[0].ppid, live[0].state);
        return msg;
    }
    if (now.nkids != before->nkids) {
        snprintf(msg, sizeof msg, "%zu descendants before, %zu after",
                 before->nkids, now.nkids);
        return msg;
    }
    /* no new fd */
    const char *extra = procfs_fd_extra(&before->fds, &now.fds);
    if (extra) {
        snprintf(msg, sizeof msg, "fds left open:%s", extra);
        return msg;
    }
    return NULL;
}
