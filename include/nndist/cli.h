/* Table-driven options: one table per command gives the defaults, the
 * command-line parser, the `--config FILE` reader (`key = value`, the same
 * names without dashes), `--help`, and the printed resolved configuration.
 * Values land in a plain struct through offsetof, so nothing here allocates. */
#ifndef NNDIST_CLI_H
#define NNDIST_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "nndist/status.h"

typedef enum { ND_CLI_INT, ND_CLI_LONG, ND_CLI_U64, ND_CLI_FLOAT, ND_CLI_STR, ND_CLI_BOOL, ND_CLI_ENUM } nd_cli_type;

typedef struct {
    const char *name; /* without dashes; on the command line as --name */
    nd_cli_type type;
    size_t offset; /* of the field in the config struct */
    size_t size;   /* of the field (char arrays: capacity) */
    /* ND_CLI_ENUM: the names of the values 0, 1, ... (NULL-terminated); the
     * field is a C enum (int-sized) holding the index. */
    const char *const *choices;
    /* INT, LONG, FLOAT: the values allowed, checked by nd_cli_check: "[a, b]"
     * with either bracket open, "> a" or ">= a"; NULL: any. */
    const char *range;
    const char *def; /* default value, as text */
    const char *help;
} nd_cli_option;

/* A heading of --help: it covers the options from `first` up to the next
 * topic's first, in table order; `hooks`: test and study hooks, listed by
 * --help-all only. */
typedef struct {
    const char *first;
    const char *heading;
    bool hooks;
} nd_cli_topic;

/* The middle of a table entry {"name", ND_CLI_FIELD(...), "default", "help"}. */
#define ND_CLI_FIELD(type_, s, f) ND_CLI_##type_, offsetof(s, f), sizeof(((s *)0)->f), NULL, NULL
/* A number that must lie in range (see nd_cli_option.range). */
#define ND_CLI_RANGED(type_, s, f, range_) ND_CLI_##type_, offsetof(s, f), sizeof(((s *)0)->f), NULL, range_
/* An enum field whose values are named by choices. */
#define ND_CLI_CHOICE(s, f, choices_) ND_CLI_ENUM, offsetof(s, f), sizeof(((s *)0)->f), choices_, NULL

/* Writes every default into cfg. */
nd_status nd_cli_defaults(const nd_cli_option *opts, int n, void *cfg, nd_error *err);

/* Sets one option from its text value, with the source (e.g. "--lr",
 * "file.cfg:3") for the error message. */
nd_status nd_cli_set(const nd_cli_option *opts, int n, void *cfg, const char *name, const char *value,
                     const char *source, nd_error *err);

/* Reads `key = value` lines ('#' starts a comment) from path into cfg. */
nd_status nd_cli_read_file(const nd_cli_option *opts, int n, void *cfg, const char *path, nd_error *err);

/* Parses argv[0..argc) (options only, the command words already consumed):
 * first any --config FILE, then every --name value / --name=value / --flag
 * (booleans also take --no-flag), so the command line overrides the file.
 * Sets *help to 1 when --help or -h is present, 2 for --help-all. */
nd_status nd_cli_parse(const nd_cli_option *opts, int n, void *cfg, int argc, char **argv, int *help, nd_error *err);

/* A subcommand's whole parse: zeroes cfg (size bytes), writes the
 * defaults, parses argv; on --help prints usage and the option list to
 * help_out (NULL: print nothing, e.g. on ranks other than 0). */
nd_status nd_cli_parse_command(const nd_cli_option *opts, int n, void *cfg, size_t size, int argc, char **argv,
                               const char *usage, FILE *help_out, int *help, nd_error *err);

/* Every option's value within its range (see nd_cli_option.range), for
 * a struct filled by hand as well as by the parser: the first one outside
 * gives "--name: value must be in [a, b)". */
nd_status nd_cli_check(const nd_cli_option *opts, int n, const void *cfg, nd_error *err);

/* The name of value v of an ND_CLI_ENUM option ("?" when out of range). */
const char *nd_cli_choice(const nd_cli_option *o, int v);

/* `  name = value` for every option, in table order. */
void nd_cli_print(const nd_cli_option *opts, int n, const void *cfg, FILE *out, const char *indent);
/* The same, only the options whose value differs from base's (the
 * defaults); returns how many it printed. */
int nd_cli_print_changed(const nd_cli_option *opts, int n, const void *cfg, const void *base, FILE *out,
                         const char *indent);

/* The same as one JSON object's members (no braces), for summaries. */
void nd_cli_print_json(const nd_cli_option *opts, int n, const void *cfg, FILE *out);

/* Usage text: one line per option with its default and help. */
/* The options as help text, under the headings of topics (NULL: none);
 * the hooks' topics only with all. */
void nd_cli_help(const nd_cli_option *opts, int n, const nd_cli_topic *topics, int num_topics, FILE *out, int all);

/* The same list as a Markdown table `| option | default | meaning |`, one
 * row per option in table order: `--name V` (booleans bare, with
 * `--no-name` beside those that default to true), the default, the help
 * and, where the table gives them, the choices and the range. Characters
 * Markdown would take as syntax (`|` among them) are escaped. */
void nd_cli_markdown(const nd_cli_option *opts, int n, FILE *out);

/* Writes s as a JSON string literal (quotes and escapes included). */
void nd_json_string(FILE *out, const char *s);

#endif
