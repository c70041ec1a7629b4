/*
 * wait.c - how a caller blocks (see wait.h): deadlines on the monotonic
 * clock, and SIGINT / SIGTERM turned into PK_EINTR while it waits.
 */
#define _GNU_SOURCE
#include "pool/wait.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/common.h"

static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static int sig_users;
static int sig_installed[2];
static struct sigaction sig_old[2];
static const int sig_nums[2] = {SIGINT, SIGTERM};
volatile sig_atomic_t pool__intr_flag;

static void on_signal(int s)
{
    PK_UNUSED(s);
    pool__intr_flag = 1;
}

void pool__intr_enter(void)
{
    pthread_mutex_lock(&sig_mu);
    if (sig_users++ == 0) {
        pool__intr_flag = 0;
        for (int i = 0; i < 2; i++) {
            struct sigaction cur;
            sig_installed[i] = 0;
            if (sigaction(sig_nums[i], NULL, &cur) != 0 ||
                (cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL)
                continue;
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_signal;
            sigemptyset(&sa.sa_mask);
            if (sigaction(sig_nums[i], &sa, &sig_old[i]) == 0)
                sig_installed[i] = 1;
        }
    }
    pthread_mutex_unlock(&sig_mu);
}

void pool__intr_leave(void)
{
    pthread_mutex_lock(&sig_mu);
    if (--sig_users == 0) {
        for (int i = 0; i < 2; i++)
            if (sig_installed[i])
                sigaction(sig_nums[i], &sig_old[i], NULL);
        sig_installed[0] = sig_installed[1] = 0;
    }
    pthread_mutex_unlock(&sig_mu);
}

static int interrupts_watched(void)
{
    return sig_installed[0] || sig_installed[1];
}

struct timespec pool__deadline_in(double s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (s < 0 || s > 1e9)
        s = 1e9;
    double sec = floor(s);
    ts.tv_sec += (time_t)sec;
    ts.tv_nsec += (long)((s - sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec ||
           (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Waits on p->cv (p->mu held) until signalled, `deadline` (NULL: none) or an
 * interrupt.  Returns PK_OK, PK_ETIMEDOUT or PK_EINTR. */
pk_err_t pool__cv_wait(pool_t *p, const struct timespec *deadline)
{
    if (pool__intr_flag)
        return PK_EINTR;
    struct timespec until;
    int watched = interrupts_watched();
    if (watched) {
        until = pool__deadline_in(0.02); /* look at the flag every 20 ms */
        if (deadline != NULL && ts_before(deadline, &until))
            until = *deadline;
    } else if (deadline != NULL) {
        until = *deadline;
    } else {
        pthread_cond_wait(&p->cv, &p->mu);
        return pool__intr_flag ? PK_EINTR : PK_OK;
    }
    int r = pthread_cond_timedwait(&p->cv, &p->mu, &until);
    if (pool__intr_flag)
        return PK_EINTR;
    if (r == ETIMEDOUT && deadline != NULL) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!ts_before(&now, deadline))
            return PK_ETIMEDOUT;
    }
    return PK_OK;
}
