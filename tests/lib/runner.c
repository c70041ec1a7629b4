/*
 * runner.c - the fork-per-test runner of the pool tests (see runner.h):
 * a child per test with alarm() armed, the parent's own deadline a little
 * later, and the test's process group killed once it is over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"

static const char *prog = "test";
static char alarm_msg[256];
static size_t alarm_len;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_alarm(int sig)
{
    (void)sig;
    if (write(STDERR_FILENO, alarm_msg, alarm_len) < 0)
        _exit(124);
    _exit(124);
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]) != NULL)
            return 1;
    return 0;
}

/* Runs one test in a child of its own; returns 0 when it passed. */
static int run_one(const runner_test_t *t, CMFixtureFunction teardown)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        struct CMUnitTest one[1] = {{t->name, t->fn, NULL, teardown, NULL}};
        setpgid(0, 0);
        signal(SIGALRM, on_alarm);
        alarm(t->timeout);
        int rc = _cmocka_run_group_tests(t->name, one, 1, NULL, NULL);
        fflush(stdout);
        fflush(stderr);
        if (rc == 0)
            exit(0); /* a passed test destroyed its pools: let LSan look */
        _exit(1);    /* a failed one may have left threads running */
    }
    setpgid(pid, pid);
    double deadline = mono_s() + t->timeout + 15;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            perror("waitpid");
            return 1;
        }
        if (mono_s() > deadline) {
            fprintf(stderr, "%s: %s hung; killing its process group\n", prog,
                    t->name);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 1;
        }
        struct timespec tick = {0, 10000000};
        nanosleep(&tick, NULL);
    }
    kill(-pid, SIGKILL); /* whatever the test left in its group */
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "%s: %s: killed by signal %d\n", prog, t->name,
                WTERMSIG(status));
        return 1;
    }
    return WEXITSTATUS(status) != 0;
}

int runner_main(int argc, char **argv, const runner_test_t *tests, size_t n,
                CMFixtureFunction teardown)
{
    size_t ran = 0, failed = 0;
    const char **failures = calloc(n ? n : 1, sizeof *failures);

    if (failures == NULL) {
        perror("calloc");
        return 1;
    }
    if (argc > 0 && argv[0] != NULL) {
        const char *slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    snprintf(alarm_msg, sizeof alarm_msg,
             "%s: the test ran past its time limit\n", prog);
    alarm_len = strlen(alarm_msg);
    for (size_t i = 0; i < n; i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        ran++;
        if (run_one(&tests[i], teardown) != 0)
            failures[failed++] = tests[i].name;
    }
    printf("\n%s: %zu of %zu tests passed\n", prog, ran - failed, ran);
    for (size_t i = 0; i < failed; i++)
        printf("  FAILED: %s\n", failures[i]);
    free(failures);
    if (ran == 0) {
        fprintf(stderr, "%s: no test matches\n", prog);
        return 1;
    }
    return failed ? 1 : 0;
}
