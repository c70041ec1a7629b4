/*
 * cmd_serve.c - `picklepool serve`: the standalone master that host agents
 * (`picklepool worker`) and remote pools join over tcp.
 *
 *   picklepool serve --bind tcp://HOST:PORT (--keys DIR | --insecure)
 *                    [--heartbeat S] [--liveness N] [--max-message SIZE]
 *                    [--max-queue N] [--max-peers N]
 *
 * This file reads the options; serve.c runs the master.  The key directory
 * holds serve's pair master.key / master.pub and the NAME.pub of every host
 * and client it lets in (curve.h; README, "Keys for tcp endpoints").  Exit
 * status: 0 after SIGINT or SIGTERM, 1 when it cannot start (one line says
 * why), 2 bad usage.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ipc/remote.h"

#define MAX_HEARTBEAT_S 3600.0

int pk__cmd_serve(int argc, char **argv)
{
    pk__serve_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.heartbeat_ns = POOL_REMOTE_HEARTBEAT_NS;
    cfg.liveness = POOL_REMOTE_LIVENESS;
    cfg.max_message = (size_t)1 << 30;
    cfg.max_queue = 4096;

    for (int i = 1; i < argc; i++) {
        const char *v;
        int missing = 0;
        long l;
        double d;

        if (strcmp(argv[i], "--insecure") == 0) {
            cfg.insecure = 1;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--bind", &missing))) {
            cfg.bind = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--keys", &missing))) {
            if (v[0] == '\0')
                return pk__cli_usage_error("serve: --keys wants a directory");
            cfg.keys = v;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--heartbeat",
                                         &missing))) {
            if (pk__cli_parse_double(v, 0.001, &d) < 0 || d > MAX_HEARTBEAT_S)
                return pk__cli_usage_error(
                    "serve: --heartbeat wants seconds from 0.001 to %g, not "
                    "'%s'",
                    MAX_HEARTBEAT_S, v);
            cfg.heartbeat_ns = (uint64_t)(d * 1e9);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--liveness",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, 1000, &l) < 0)
                return pk__cli_usage_error(
                    "serve: --liveness wants a number of heartbeats from 1 "
                    "to 1000, not '%s'",
                    v);
            cfg.liveness = (int)l;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--max-message",
                                         &missing))) {
            if (pk__cli_parse_size(v, &cfg.max_message) < 0 ||
                cfg.max_message > (size_t)INT64_MAX)
                return pk__cli_usage_error(
                    "serve: --max-message wants a size such as 64M, not '%s'",
                    v);
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--max-queue",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, 1 << 20, &l) < 0)
                return pk__cli_usage_error(
                    "serve: --max-queue wants a number of batches from 1 to "
                    "%d, not '%s'",
                    1 << 20, v);
            cfg.max_queue = (int)l;
        } else if ((v = pk__cli_take_opt(argc, argv, &i, "--max-peers",
                                         &missing))) {
            if (pk__cli_parse_long(v, 1, INT_MAX, &l) < 0)
                return pk__cli_usage_error(
                    "serve: --max-peers wants a positive number, not '%s'", v);
            cfg.max_peers = (int)l;
        } else if (missing) {
            return pk__cli_usage_error("serve: %s needs a value", argv[i]);
        } else if (argv[i][0] == '-') {
            return pk__cli_usage_error("serve: unknown option '%s'", argv[i]);
        } else {
            return pk__cli_usage_error("serve: unexpected argument '%s'",
                                       argv[i]);
        }
    }
    if (cfg.bind == NULL)
        return pk__cli_usage_error(
            "serve: where to listen? (--bind tcp://HOST:PORT)");
    if (cfg.keys != NULL && cfg.insecure)
        return pk__cli_usage_error(
            "serve: --keys and --insecure together: choose one");
    return pk__serve_run(&cfg);
}
