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
    {"recode", pk__cmd_recode, "[--protocol N] [--max-input SIZE] IN OUT",
     "decode a pickle (plain, gzip, bzip2 or xz) and write it again at "
     "protocol N\n      (2-5, default 5); OUT is compressed when it ends in "
     ".gz, .bz2 or .xz"},
    {"inspect", pk__cmd_inspect, "[--max-input SIZE] FILE",
     "list a pickle's opcodes like pickletools.dis, then the globals it "
     "names,\n      whether decoding would call them and whether picklepool "
     "allows it"},
    {"topo", pk__cmd_topo,
     "[--workers N] [--placement compact|spread|none] [--topology SPEC]",
     "show the hwloc topology (packages, NUMA nodes, cores, PUs, allowed "
     "mask)\n      and the core / PUs each worker would be pinned to"},
    {"map", pk__cmd_map,
     "[--workers N] [--placement P] [--chunksize C] [--timeout S] "
     "[--plugin PATH]... [--max-input SIZE] [--stream] MODULE.FUNC IN OUT",
     "map a native function over a pickled list of arguments (or, with "
     "--stream,\n      a stream of pickles) on pinned workers; OUT gets the "
     "results in input order,\n      a failed item as a builtins exception "
     "instance in its place (exit status 3).\n      Without --plugin, "
     "<dir of picklepool>/plugins/MODULE.so is loaded if it exists"},
    {"demo", pk__cmd_demo,
     "[--arrays N] [--mib M] [--workers N] [--runs R] [--plugin PATH]",
     "the main job: normalise synthetic float32 arrays with a native kernel "
     "on\n      pinned workers, 1 worker against all cores (default 5 timed "
     "runs each\n      after an untimed warm-up); prints placement, every "
     "run, the medians,\n      the speed-up and a correctness check (exit 0 "
     "only when correct)"},
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
          "'picklepool COMMAND --help'\ndescribes one command.  Exit status: "
          "0 done, 1 failed, 2 bad usage.\n"
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
