#include "nndist/cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Option names match with '-' and '_' taken as the same character, so a
 * config file may say warmup_steps or warmup-steps. */
static bool same_name(const char *a, const char *b) {
    for (; *a && *b; ++a, ++b) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y) return false;
    }
    return *a == *b;
}

static const nd_cli_option *find(const nd_cli_option *opts, int n, const char *name) {
    for (int i = 0; i < n; ++i)
        if (same_name(opts[i].name, name)) return &opts[i];
    return NULL;
}

/* Edit distance (insertions, deletions, substitutions) of a and b, '-'
 * and '_' alike; names are short, so one row of at most 64 cells. */
static int distance(const char *a, const char *b) {
    enum { MAX = 64 };
    const int la = (int)strlen(a), lb = (int)strlen(b);
    if (la >= MAX || lb >= MAX) return MAX;
    int row[MAX + 1];
    for (int j = 0; j <= lb; ++j) row[j] = j;
    for (int i = 1; i <= la; ++i) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; ++j) {
            const char x = a[i - 1] == '_' ? '-' : a[i - 1], y = b[j - 1] == '_' ? '-' : b[j - 1];
            const int sub = diag + (x != y), del = row[j] + 1, ins = row[j - 1] + 1;
            diag = row[j];
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    }
    return row[lb];
}

/* The option name closest to a mistyped one (a prefix of exactly one
 * name, or within a third of its length in edits), or NULL. */
static const char *closest(const nd_cli_option *opts, int n, const char *name) {
    const char *best = NULL, *prefixed = NULL;
    int best_d = (int)strlen(name) / 3 + 1, prefixes = 0;
    for (int i = 0; i < n; ++i) {
        if (!strncmp(opts[i].name, name, strlen(name))) prefixes += 1, prefixed = opts[i].name;
        const int d = distance(name, opts[i].name);
        if (d < best_d) best_d = d, best = opts[i].name;
    }
    return best ? best : prefixes == 1 ? prefixed : NULL;
}

/* "unknown option" with a suggestion when one is close. */
static nd_status unknown_option(const nd_cli_option *opts, int n, const char *source, const char *name, nd_error *err) {
    const char *near = closest(opts, n, name), *dashes = source[0] ? "" : "--"; /* a file says `name = value` */
    if (near)
        return ND_FAIL(err, ND_ERR_ARG, "%sunknown option '%s%s': did you mean %s%s? (see --help)", source, dashes,
                       name, dashes, near);
    return ND_FAIL(err, ND_ERR_ARG, "%sunknown option '%s%s' (see --help)", source, dashes, name);
}

static nd_status parse_value(const nd_cli_option *o, void *cfg, const char *value, const char *source, nd_error *err) {
    char *field = (char *)cfg + o->offset;
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case ND_CLI_INT:
    case ND_CLI_LONG: {
        long long v = strtoll(value, &end, 10);
        long long lo = o->type == ND_CLI_INT ? INT32_MIN : INT64_MIN;
        long long hi = o->type == ND_CLI_INT ? INT32_MAX : INT64_MAX;
        if (!*value || *end || errno || v < lo || v > hi)
            return ND_FAIL(err, ND_ERR_ARG, "%s: '%s' is not an integer", source, value);
        if (o->type == ND_CLI_INT) *(int *)field = (int)v;
        else *(long *)field = (long)v;
        return ND_OK;
    }
    case ND_CLI_U64: {
        if (value[0] == '-') return ND_FAIL(err, ND_ERR_ARG, "%s: '%s' must not be negative", source, value);
        unsigned long long v = strtoull(value, &end, 10);
        if (!*value || *end || errno)
            return ND_FAIL(err, ND_ERR_ARG, "%s: '%s' is not a non-negative integer", source, value);
        *(uint64_t *)field = (uint64_t)v;
        return ND_OK;
    }
    case ND_CLI_FLOAT: {
        double v = strtod(value, &end);
        if (!*value || *end || errno || !isfinite(v) || fabs(v) > 3.0e38)
            return ND_FAIL(err, ND_ERR_ARG, "%s: '%s' is not a finite number", source, value);
        *(float *)field = (float)v;
        return ND_OK;
    }
    case ND_CLI_STR:
        if (strlen(value) >= o->size)
            return ND_FAIL(err, ND_ERR_ARG, "%s: value is longer than %zu characters", source, o->size - 1);
        memcpy(field, value, strlen(value) + 1);
        return ND_OK;
    case ND_CLI_ENUM:
        for (int k = 0; o->choices[k]; ++k)
            if (!strcmp(value, o->choices[k])) {
                *(int *)field = k;
                return ND_OK;
            }
        {
            char list[512] = "";
            for (int k = 0; o->choices[k]; ++k)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", o->choices[k]);
            return ND_FAIL(err, ND_ERR_ARG, "%s: '%s' is not one of %s", source, value, list);
        }
    case ND_CLI_BOOL:
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes") || !strcmp(value, "on"))
            *(bool *)field = true;
        else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no") || !strcmp(value, "off"))
            *(bool *)field = false;
        else return ND_FAIL(err, ND_ERR_ARG, "%s: '%s' is not a boolean (true/false)", source, value);
        return ND_OK;
    }
    return ND_FAIL(err, ND_ERR_STATE, "%s: option of unknown type", source);
}

nd_status nd_cli_defaults(const nd_cli_option *opts, int n, void *cfg, nd_error *err) {
    for (int i = 0; i < n; ++i) ND_TRY(parse_value(&opts[i], cfg, opts[i].def, opts[i].name, err));
    return ND_OK;
}

nd_status nd_cli_set(const nd_cli_option *opts, int n, void *cfg, const char *name, const char *value,
                     const char *source, nd_error *err) {
    const nd_cli_option *o = find(opts, n, name);
    if (!o) {
        char where[4400];
        snprintf(where, sizeof where, "%s: ", source);
        return unknown_option(opts, n, where, name, err);
    }
    return parse_value(o, cfg, value, source, err);
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) ++s;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

nd_status nd_cli_read_file(const nd_cli_option *opts, int n, void *cfg, const char *path, nd_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return ND_FAIL(err, ND_ERR_IO, "config file %s: %s", path, strerror(errno));
    char line[4096 + 256], source[4200];
    int lineno = 0;
    nd_status st = ND_OK;
    while (st == ND_OK && fgets(line, sizeof line, f)) {
        ++lineno;
        snprintf(source, sizeof source, "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: line too long", source);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: expected 'key = value', got '%s'", source, s);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (same_name(key, "config")) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: a config file cannot include another", source);
            break;
        }
        st = nd_cli_set(opts, n, cfg, key, value, source, err);
    }
    if (st == ND_OK && ferror(f)) st = ND_FAIL(err, ND_ERR_IO, "config file %s: read error", path);
    fclose(f);
    return st;
}

/* Splits "--name=value" or "--name"; returns the name in buf. */
static const char *option_name(const char *arg, char *buf, size_t cap, const char **inline_value) {
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    *inline_value = NULL;
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (len >= cap) len = cap - 1;
    memcpy(buf, name, len);
    buf[len] = '\0';
    if (eq) *inline_value = eq + 1;
    return buf;
}

nd_status nd_cli_parse(const nd_cli_option *opts, int n, void *cfg, int argc, char **argv, int *help, nd_error *err) {
    *help = 0;
    /* Pass 1: --help and --config, so the command line can override the file. */
    for (int i = 0; i < argc; ++i) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) *help = *help ? *help : 1;
        if (!strcmp(argv[i], "--help-all")) *help = 2; /* the hooks too */
        if (!strncmp(argv[i], "--config", 8) && (argv[i][8] == '\0' || argv[i][8] == '=')) {
            const char *path = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[i + 1] : NULL);
            if (!path) return ND_FAIL(err, ND_ERR_ARG, "--config: missing file name");
            ND_TRY(nd_cli_set(opts, n, cfg, "config", path, "--config", err));
            ND_TRY(nd_cli_read_file(opts, n, cfg, path, err));
        }
    }
    if (*help) return ND_OK;
    for (int i = 0; i < argc; ++i) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return ND_FAIL(err, ND_ERR_ARG, "unexpected argument '%s' (options start with --)", arg);
        char name[128], source[160];
        const char *value;
        option_name(arg, name, sizeof name, &value);
        snprintf(source, sizeof source, "--%s", name);
        const nd_cli_option *o = find(opts, n, name);
        if (!o && !strncmp(name, "no-", 3) && !value) {
            const nd_cli_option *neg = find(opts, n, name + 3);
            if (neg && neg->type == ND_CLI_BOOL) {
                ND_TRY(parse_value(neg, cfg, "false", source, err));
                continue;
            }
        }
        if (!o) return unknown_option(opts, n, "", name, err);
        if (same_name(name, "config")) {
            if (!value) ++i; /* already read in pass 1 */
            continue;
        }
        if (!value) {
            if (o->type == ND_CLI_BOOL) value = "true";
            else if (i + 1 < argc) value = argv[++i];
            else return ND_FAIL(err, ND_ERR_ARG, "%s: missing value", source);
        }
        ND_TRY(parse_value(o, cfg, value, source, err));
    }
    return ND_OK;
}

nd_status nd_cli_parse_command(const nd_cli_option *opts, int n, void *cfg, size_t size, int argc, char **argv,
                               const char *usage, FILE *help_out, int *help, nd_error *err) {
    memset(cfg, 0, size);
    ND_TRY(nd_cli_defaults(opts, n, cfg, err));
    ND_TRY(nd_cli_parse(opts, n, cfg, argc, argv, help, err));
    if (*help && help_out) {
        fprintf(help_out, "%s\n", usage);
        nd_cli_help(opts, n, NULL, 0, help_out, 1);
    }
    return ND_OK;
}

static void print_value(const nd_cli_option *o, const void *cfg, FILE *out, bool json) {
    const char *field = (const char *)cfg + o->offset;
    switch (o->type) {
    case ND_CLI_INT: fprintf(out, "%d", *(const int *)field); break;
    case ND_CLI_LONG: fprintf(out, "%ld", *(const long *)field); break;
    case ND_CLI_U64: fprintf(out, "%" PRIu64, *(const uint64_t *)field); break;
    case ND_CLI_FLOAT: {
        /* Shortest text that reads back as the same float: 0.01, not 0.00999999978. */
        const float v = *(const float *)field;
        char text[32];
        for (int digits = 6; digits <= 9; ++digits) {
            snprintf(text, sizeof text, "%.*g", digits, (double)v);
            if (strtof(text, NULL) == v) break;
        }
        fputs(text, out);
        break;
    }
    case ND_CLI_BOOL: fputs(*(const bool *)field ? "true" : "false", out); break;
    case ND_CLI_ENUM:
        if (json) nd_json_string(out, nd_cli_choice(o, *(const int *)field));
        else fputs(nd_cli_choice(o, *(const int *)field), out);
        break;
    case ND_CLI_STR:
        if (json) nd_json_string(out, field);
        else fputs(field, out);
        break;
    }
}

const char *nd_cli_choice(const nd_cli_option *o, int v) {
    if (o->type != ND_CLI_ENUM || v < 0) return "?";
    for (int k = 0; o->choices[k]; ++k)
        if (k == v) return o->choices[k];
    return "?";
}

/* Whether v lies in range ("[a, b)", "(a, b]", "> a", ">= a"); -1 when the
 * range text itself is malformed (a bug in a table, reported as such). */
static int in_range(const char *range, double v) {
    char *end;
    if (range[0] == '>') {
        const int closed = range[1] == '=';
        const double a = strtod(range + 1 + closed, &end);
        if (*end) return -1;
        return closed ? v >= a : v > a;
    }
    if (range[0] != '[' && range[0] != '(') return -1;
    const double a = strtod(range + 1, &end);
    if (*end != ',') return -1;
    const double b = strtod(end + 1, &end);
    if ((*end != ']' && *end != ')') || end[1]) return -1;
    const int lo_ok = range[0] == '[' ? v >= a : v > a, hi_ok = *end == ']' ? v <= b : v < b;
    return lo_ok && hi_ok;
}

nd_status nd_cli_check(const nd_cli_option *opts, int n, const void *cfg, nd_error *err) {
    for (int i = 0; i < n; ++i) {
        const nd_cli_option *o = &opts[i];
        const char *field = (const char *)cfg + o->offset;
        if (o->type == ND_CLI_ENUM && !strcmp(nd_cli_choice(o, *(const int *)field), "?"))
            return ND_FAIL(err, ND_ERR_ARG, "--%s: %d is not a valid choice", o->name, *(const int *)field);
        if (!o->range) continue;
        double v;
        if (o->type == ND_CLI_INT) v = *(const int *)field;
        else if (o->type == ND_CLI_LONG) v = (double)*(const long *)field;
        else if (o->type == ND_CLI_FLOAT) v = *(const float *)field;
        else return ND_FAIL(err, ND_ERR_STATE, "--%s: a range on an option that is not a number", o->name);
        const int ok = in_range(o->range, v);
        if (ok < 0)
            return ND_FAIL(err, ND_ERR_STATE, "--%s: malformed range '%s' in the option table", o->name, o->range);
        if (!ok) {
            char text[48];
            snprintf(text, sizeof text, "%.9g", v);
            return ND_FAIL(err, ND_ERR_ARG, "--%s: %s must be %s%s", o->name, text, o->range[0] == '>' ? "" : "in ",
                           o->range);
        }
    }
    return ND_OK;
}

void nd_cli_print(const nd_cli_option *opts, int n, const void *cfg, FILE *out, const char *indent) {
    for (int i = 0; i < n; ++i) {
        if (same_name(opts[i].name, "config")) continue; /* what was read, not a setting */
        fprintf(out, "%s%s = ", indent, opts[i].name);
        print_value(&opts[i], cfg, out, false);
        fputc('\n', out);
    }
}

/* An option's value as text into buf (cap bytes, cut if longer). */
static void value_text(const nd_cli_option *o, const void *cfg, char *buf, size_t cap) {
    buf[0] = '\0';
    FILE *f = fmemopen(buf, cap, "w");
    if (!f) return;
    print_value(o, cfg, f, false);
    fclose(f);
}

int nd_cli_print_changed(const nd_cli_option *opts, int n, const void *cfg, const void *base, FILE *out,
                         const char *indent) {
    int printed = 0;
    char now[4200], was[4200];
    for (int i = 0; i < n; ++i) {
        if (same_name(opts[i].name, "config")) continue;
        value_text(&opts[i], cfg, now, sizeof now);
        value_text(&opts[i], base, was, sizeof was);
        if (!strcmp(now, was)) continue;
        fprintf(out, "%s%s = %s\n", indent, opts[i].name, now);
        ++printed;
    }
    return printed;
}

void nd_cli_print_json(const nd_cli_option *opts, int n, const void *cfg, FILE *out) {
    for (int i = 0; i < n; ++i) {
        fprintf(out, "%s\"%s\": ", i ? ", " : "", opts[i].name);
        print_value(&opts[i], cfg, out, true);
    }
}

void nd_cli_help(const nd_cli_option *opts, int n, const nd_cli_topic *topics, int num_topics, FILE *out, int all) {
    int hidden = 0, hooks = 0;
    for (int i = 0; i < n; ++i) {
        for (int t = 0; t < num_topics; ++t)
            if (!strcmp(topics[t].first, opts[i].name)) {
                hooks = topics[t].hooks;
                if (!hooks || all) fprintf(out, "\n%s:\n", topics[t].heading);
            }
        if (hooks && !all) {
            ++hidden;
            continue;
        }
        char left[64];
        snprintf(left, sizeof left, "--%s%s", opts[i].name, opts[i].type == ND_CLI_BOOL ? "" : " V");
        fprintf(out, "  %-22s %s", left, opts[i].help);
        if (opts[i].type == ND_CLI_ENUM) {
            fputs(" {", out);
            for (int k = 0; opts[i].choices[k]; ++k) fprintf(out, "%s%s", k ? ", " : "", opts[i].choices[k]);
            fputc('}', out);
        }
        if (opts[i].range) fprintf(out, " (must be %s%s)", opts[i].range[0] == '>' ? "" : "in ", opts[i].range);
        if (opts[i].def[0]) fprintf(out, " [%s]", opts[i].def);
        fputc('\n', out);
    }
    if (hidden) fprintf(out, "\n(%d test and study hooks: --help-all)\n", hidden);
}

/* s as Markdown table text: '|' would end the cell; '*', '`', '<' and the
 * backslash are syntax anywhere, '_' where it is not inside a word. */
static void md_text(FILE *out, const char *s) {
    for (const char *p = s; *p; ++p) {
        const char c = *p;
        const bool inner_underscore = c == '_' && p > s && isalnum((unsigned char)p[-1]) &&
            isalnum((unsigned char)p[1]);
        if (c == '\n') fputc(' ', out);
        else if (strchr("|*`<\\", c) || (c == '_' && !inner_underscore)) fprintf(out, "\\%c", c);
        else fputc(c, out);
    }
}

/* s as a Markdown code span in a table cell: only `|` needs escaping. */
static void md_code(FILE *out, const char *s) {
    fputc('`', out);
    for (; *s; ++s) {
        if (*s == '|') fputc('\\', out);
        fputc(*s, out);
    }
    fputc('`', out);
}

void nd_cli_markdown(const nd_cli_option *opts, int n, FILE *out) {
    fputs("| option | default | meaning |\n|---|---|---|\n", out);
    for (int i = 0; i < n; ++i) {
        const nd_cli_option *o = &opts[i];
        char name[80];
        snprintf(name, sizeof name, "--%s%s", o->name, o->type == ND_CLI_BOOL ? "" : " V");
        fputs("| ", out);
        md_code(out, name);
        if (o->type == ND_CLI_BOOL && !strcmp(o->def, "true")) {
            snprintf(name, sizeof name, "--no-%s", o->name);
            fputs(" / ", out);
            md_code(out, name);
        }
        fputs(" | ", out);
        if (o->def[0]) md_code(out, o->def);
        fputs(" | ", out);
        md_text(out, o->help);
        if (o->type == ND_CLI_ENUM) {
            fputs("; one of: ", out);
            for (int k = 0; o->choices[k]; ++k) {
                if (k) fputs(", ", out);
                md_code(out, o->choices[k]);
            }
        }
        if (o->range) {
            fprintf(out, "; must be %s", o->range[0] == '>' ? "" : "in ");
            md_text(out, o->range);
        }
        fputs(" |\n", out);
    }
}

void nd_json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}
