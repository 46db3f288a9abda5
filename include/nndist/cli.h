/* Table-driven options: one table per command gives the defaults, the
 * command-line parser, the `--config FILE` reader (`key = value`, the same
 * names without dashes), `--help`, and the printed resolved configuration.
 * Values land in a plain struct through offsetof, so nothing here allocates. */
#ifndef NNDIST_CLI_H
#define NNDIST_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "nndist/status.h"

typedef enum { ND_CLI_INT, ND_CLI_LONG, ND_CLI_U64, ND_CLI_FLOAT, ND_CLI_STR, ND_CLI_BOOL } nd_cli_type;

typedef struct {
    const char *name;   /* without dashes; on the command line as --name */
    nd_cli_type type;
    size_t offset;      /* of the field in the config struct */
    size_t size;        /* of the field (char arrays: capacity) */
    const char *def;    /* default value, as text */
    const char *help;
} nd_cli_option;

#define ND_CLI_FIELD(type_, s, f) ND_CLI_##type_, offsetof(s, f), sizeof(((s *)0)->f)

/* Writes every default into cfg. */
nd_status nd_cli_defaults(const nd_cli_option *opts, int n, void *cfg, nd_error *err);

/* Sets one option from its text value, with the source (e.g. "--lr",
 * "file.cfg:3") for the error message. */
nd_status nd_cli_set(const nd_cli_option *opts, int n, void *cfg, const char *name,
                     const char *value, const char *source, nd_error *err);

/* Reads `key = value` lines ('#' starts a comment) from path into cfg. */
nd_status nd_cli_read_file(const nd_cli_option *opts, int n, void *cfg, const char *path,
                           nd_error *err);

/* Parses argv[0..argc) (options only, the command words already consumed):
 * first any --config FILE, then every --name value / --name=value / --flag
 * (booleans also take --no-flag), so the command line overrides the file.
 * Sets *help when --help or -h is present. */
nd_status nd_cli_parse(const nd_cli_option *opts, int n, void *cfg, int argc, char **argv,
                       int *help, nd_error *err);

/* A subcommand's whole parse: zeroes cfg (size bytes), writes the
 * defaults, parses argv; on --help prints usage and the option list to
 * help_out (NULL: print nothing, e.g. on ranks other than 0). */
nd_status nd_cli_parse_command(const nd_cli_option *opts, int n, void *cfg, size_t size, int argc, char **argv,
                               const char *usage, FILE *help_out, int *help, nd_error *err);

/* `  name = value` for every option, in table order. */
void nd_cli_print(const nd_cli_option *opts, int n, const void *cfg, FILE *out,
                  const char *indent);

/* The same as one JSON object's members (no braces), for summaries. */
void nd_cli_print_json(const nd_cli_option *opts, int n, const void *cfg, FILE *out);

/* Usage text: one line per option with its default and help. */
void nd_cli_help(const nd_cli_option *opts, int n, FILE *out);

/* Writes s as a JSON string literal (quotes and escapes included). */
void nd_json_string(FILE *out, const char *s);

#endif
