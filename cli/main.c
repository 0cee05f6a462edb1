/*
 * strata - command-line entry point.
 *
 * Dispatches `strata <command> ...` to st_cmd_<command>() and
 * `strata bench <name> ...` to st_bench_<name>(). Only this layer may exit
 * the process; every command returns its exit code here.
 */
#include <stdio.h>
#include <string.h>

#define ST_CMD(n) int st_cmd_##n(int argc, char **argv); extern const char st_cmd_##n##_help[];
#include "st_cli_commands.h"
#undef ST_CMD
#define ST_BENCH(n) int st_bench_##n(int argc, char **argv); extern const char st_bench_##n##_help[];
#include "st_bench_commands.h"
#undef ST_BENCH

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cli_entry_t;

static const cli_entry_t commands[] = {
#define ST_CMD(n) {#n, st_cmd_##n, st_cmd_##n##_help},
#include "st_cli_commands.h"
#undef ST_CMD
    {NULL, NULL, NULL}
};

static const cli_entry_t benches[] = {
#define ST_BENCH(n) {#n, st_bench_##n, st_bench_##n##_help},
#include "st_bench_commands.h"
#undef ST_BENCH
    {NULL, NULL, NULL}
};

static void usage(FILE *f)
{
    fprintf(f, "usage: strata <command> [options]\n\ncommands:\n");
    for (const cli_entry_t *c = commands; c->name; c++) {
        char name[32];
        snprintf(name, sizeof(name), "%s", c->name);
        for (char *p = name; *p; p++)
            if (*p == '_')
                *p = '-';
        fprintf(f, "  %-14s %s\n", name, c->help);
    }
    fprintf(f, "  %-14s %s\n", "bench", "benchmarks: strata bench <name> (see below)");
    for (const cli_entry_t *c = benches; c->name; c++)
        fprintf(f, "    bench %-8s %s\n", c->name, c->help);
    fprintf(f, "\n`strata <command> --help` shows a command's options.\n");
}

/* Command names become C identifiers (st_cmd_encrypt_model), which cannot
 * hold '-'; on the command line '-' also matches '_' (encrypt-model). */
static int name_eq(const char *name, const char *arg)
{
    for (; *name && *arg; name++, arg++)
        if (*name != *arg && !(*name == '_' && *arg == '-'))
            return 0;
    return *name == *arg;
}

static int dispatch(const cli_entry_t *table, const char *what, int argc, char **argv)
{
    for (const cli_entry_t *c = table; c->name; c++)
        if (name_eq(c->name, argv[0]))
            return c->fn(argc, argv);
    fprintf(stderr, "strata: unknown %s '%s' (try `strata help`)\n", what, argv[0]);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("strata 0.1.0\n");
        return 0;
    }
    if (!strcmp(argv[1], "bench")) {
        if (argc < 3) {
            usage(stderr);
            return 2;
        }
        return dispatch(benches, "benchmark", argc - 2, argv + 2);
    }
    return dispatch(commands, "command", argc - 1, argv + 1);
}
