/*
 * main.c - entry point of the `picklepool` command-line tool.
 *
 * Only main() and the command table live here: the tests link every other
 * file of cli/, so nothing they need may live in this one.  A subcommand is
 * one line in `commands` below plus its declaration in cli.h; main handles
 * `--help` for all of them and prints a command's usage line when it returns
 * PK_EXIT_USAGE.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "picklepool/pickle.h"
#include "picklepool/version.h"

static int cmd_version(int argc, char **argv);

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *args;    /* synopsis after the name */
    const char *summary; /* one line for the help */
} commands[] = {
    {"recode", pk__cmd_recode,
     "[--protocol N] [--encoding E] [--max-input SIZE] IN OUT",
     "decode a pickle (plain, gzip, bzip2 or xz) and write it again at "
     "protocol N\n      (2-5, default 5); OUT is compressed when it ends in "
     ".gz, .bz2 or .xz.\n      --encoding ASCII|latin1|bytes reads Python 2 "
     "str as pickle.load(encoding=)\n      does (default ASCII)"},
    {"inspect", pk__cmd_inspect, "[--globals] [--max-input SIZE] FILE",
     "list a pickle's opcodes like pickletools.dis, then each global it "
     "names with\n      what it is (data constructor, DANGEROUS call such as "
     "os.system, or unknown)\n      and a one-line verdict; --globals prints "
     "only that summary.  Exit status:\n      0 nothing refused, 3 would "
     "call what picklepool refuses, 4 a dangerous call"},
    {"topo", pk__cmd_topo,
     "[--workers N] [--placement compact|spread|none] [--topology SPEC]",
     "show the hwloc topology (packages, NUMA nodes, cores, PUs, allowed "
     "mask)\n      and the core / PUs each worker would be pinned to"},
    {"map", pk__cmd_map,
     "[--workers N] [--placement P] [--chunksize C] [--timeout S] "
     "[--plugin NAME|PATH]... [--encoding E] [--max-input SIZE] [--stream] "
     "MODULE.FUNC IN OUT\n"
     "  map --list [--plugin NAME|PATH]...",
     "map a native function over a pickled list of arguments (or, with "
     "--stream,\n      a stream of pickles) on pinned workers; OUT gets the "
     "results in input order,\n      a failed item as a builtins exception "
     "instance in its place (exit status 3).\n      Without --plugin, the "
     "plugin named MODULE is loaded when found (the installed\n      plugin "
     "directory, build/plugins, $PICKLEPOOL_PLUGIN_PATH).  --list prints the "
     "functions\n      the plugins offer (default: examples) with what each "
     "does"},
    {"demo", pk__cmd_demo,
     "[--arrays N] [--mib M] [--workers N] [--runs R] [--plugin PATH]",
     "the main job: normalise synthetic float32 arrays with a native kernel "
     "on\n      pinned workers, 1 worker against all cores (default 5 timed "
     "runs each\n      after an untimed warm-up); prints placement, every "
     "run, the medians,\n      the speed-up and a correctness check (exit 0 "
     "only when correct)"},
    {"keygen", pk__cmd_keygen, "[--name NAME] [--force] DIR",
     "make a CURVE key pair for tcp endpoints: DIR/NAME.key (secret, mode "
     "0600)\n      and DIR/NAME.pub (public), DIR made with mode 0700 when "
     "missing.  NAME\n      defaults to the short host name; --force "
     "replaces an existing pair.\n      Every NAME.pub in a directory is "
     "on its allow-list"},
    {"serve", pk__cmd_serve,
     "--bind tcp://HOST:PORT (--keys DIR | --insecure) [--heartbeat S] "
     "[--liveness N] [--max-message SIZE] [--max-queue N] [--max-peers N]",
     "the standalone master of a pool that spans machines: host agents\n"
     "      (picklepool worker) and remote pools (pool_opts_t.address, Python\n"
     "      Pool(address=...)) join it over tcp with CURVE keys; it sends "
     "every\n      client's batches to the hosts, fairly between clients, and "
     "sends again\n      what a host that went silent (--liveness heartbeats "
     "of --heartbeat\n      seconds, default 3 x 1) had.  DIR holds "
     "master.key and the .pub of\n      every peer it lets in"},
    {"worker", pk__cmd_worker,
     "--connect tcp://HOST:PORT (--keys DIR | --insecure) [--key NAME] "
     "[--workers N] [--placement P] [--plugin NAME|PATH]... [--python PATH] "
     "[--capacity N] [--name NAME]",
     "a host agent: runs a serve master's batches on this machine's pinned\n"
     "      workers (native kernels of the plugins; Python functions with\n"
     "      --python), joining again with backoff when the master goes "
     "away.\n      Under srun or mpirun it names itself after its rank and "
     "takes its\n      share of the node's cores.  DIR holds its key pair and "
     "master.pub"},
    {"version", cmd_version, "", "print the version"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static int cmd_version(int argc, char **argv)
{
    printf("picklepool %s (pickle protocols 0-%d read, 2-%d written)\n",
           pk_version(), PK_HIGHEST_PROTOCOL, PK_HIGHEST_PROTOCOL);
    return PK_EXIT_OK;
}

static void usage(FILE *fp)
{
    fputs("usage: picklepool COMMAND [ARGS...]\n\ncommands:\n", fp);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(fp, "  %s%s%s\n      %s\n", commands[i].name,
                commands[i].args[0] != '\0' ? " " : "", commands[i].args,
                commands[i].summary);
    fputs("\nA file name '-' means standard input or output.  "
          "'picklepool help COMMAND'\n(or 'picklepool COMMAND --help') "
          "describes one command.  Exit status: 0 done,\n1 failed, 2 bad "
          "usage.\n"
          "--max-input SIZE (bytes; suffix k, M, G or T for powers of 1024) "
          "caps the input\nread, after decompression (with --stream: one "
          "item); the default is a\nquarter of the memory available.  "
          "OUT is replaced atomically when it is a\nregular file, written in "
          "place when it is a device or FIFO, and a symlink\nis followed; "
          "SIGINT or SIGTERM leaves it as it was.\n",
          fp);
}

static void command_usage(FILE *fp, const struct command *c, int full)
{
    fprintf(fp, "usage: picklepool %s%s%s\n", c->name,
            c->args[0] != '\0' ? " " : "", c->args);
    if (full)
        fprintf(fp, "      %s\n", c->summary);
}

/* Non-zero if argv[1..] asks for help before any "--". */
static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : NULL;
    int status;

    if (name == NULL) {
        usage(stderr);
        return PK_EXIT_USAGE;
    }
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 ||
        strcmp(name, "help") == 0) {
        if (argc > 2) { /* help CMD */
            for (size_t i = 0; i < NCOMMANDS; i++)
                if (strcmp(argv[2], commands[i].name) == 0) {
                    command_usage(stdout, &commands[i], 1);
                    return PK_EXIT_OK;
                }
            fprintf(stderr, "picklepool: help: unknown command '%s'\n",
                    argv[2]);
            usage(stderr);
            return PK_EXIT_USAGE;
        }
        usage(stdout);
        return PK_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const struct command *c = &commands[i];
        if (strcmp(name, c->name) != 0)
            continue;
        if (wants_help(argc - 1, argv + 1)) {
            command_usage(stdout, c, 1);
            return PK_EXIT_OK;
        }
        status = c->run(argc - 1, argv + 1);
        if (status == PK_EXIT_USAGE)
            command_usage(stderr, c, 0);
        if (fflush(stdout) != 0 && status == PK_EXIT_OK) {
            perror("picklepool: standard output");
            status = PK_EXIT_FAIL;
        }
        return status;
    }
    fprintf(stderr, "picklepool: unknown command '%s'\n", name);
    usage(stderr);
    return PK_EXIT_USAGE;
}
