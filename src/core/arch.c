/* The compact architecture text (model.h, docs/architecture.md): parsing
 * and the canonical form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/model.h"

/* Reads a positive number at *p; -1 if there is none. */
static long read_width(const char **p) {
    if (**p < '0' || **p > '9') return -1;
    char *end;
    long v = strtol(*p, &end, 10);
    *p = end;
    return v > 0 && v <= 1 << 24 ? v : -1;
}

/* A token's number after its name: "drop0.3" -> 0.3; none: def. */
static int token_number(const char *tok, size_t name_len, size_t len, double def, double *out) {
    if (len == name_len) {
        *out = def;
        return 0;
    }
    char buf[32];
    if (len - name_len >= sizeof buf) return -1;
    memcpy(buf, tok + name_len, len - name_len);
    buf[len - name_len] = '\0';
    char *end;
    *out = strtod(buf, &end);
    return *end ? -1 : 0;
}

static int starts(const char *tok, size_t len, const char *name) {
    const size_t n = strlen(name);
    return len >= n && !strncmp(tok, name, n);
}

/* What a ":token" may set: the input group takes only dropN, a pooling
 * group dropout, the part after a residual block's ')' an activation and
 * dropout. */
enum { TOK_INPUT, TOK_LAYER, TOK_POOL, TOK_BLOCK_END };

/* One ":token" of a group. act receives the activation (the group's, or
 * the block's after ')'). */
static int parse_token(const char *tok, size_t len, int where, nd_hidden_spec *h, nd_activation *act, float *drop,
                       int *has_act, char *why, size_t cap) {
    double v;
    const int cdrop = starts(tok, len, "cdrop");
    if (starts(tok, len, "drop") || cdrop) {
        if (token_number(tok, cdrop ? 5 : 4, len, -1, &v) != 0 || !(v >= 0.0 && v < 1.0)) {
            snprintf(why, cap, "'%.*s': dropout takes a probability in [0, 1), like drop0.3", (int)len, tok);
            return -1;
        }
        if (cdrop && where == TOK_INPUT) {
            snprintf(why, cap, "'%.*s': the input takes dropN, not channel dropout", (int)len, tok);
            return -1;
        }
        *drop = (float)v;
        if (h) h->drop_channels = cdrop;
        return 0;
    }
    if (where == TOK_INPUT) {
        snprintf(why, cap, "'%.*s': the input group takes only dropN", (int)len, tok);
        return -1;
    }
    if (starts(tok, len, "dc")) {
        if (where != TOK_LAYER || h->kind != ND_LAYER_DENSE) {
            snprintf(why, cap, "'%.*s': DropConnect is for dense layers", (int)len, tok);
            return -1;
        }
        if (token_number(tok, 2, len, -1, &v) != 0 || !(v >= 0.0 && v < 1.0)) {
            snprintf(why, cap, "'%.*s': DropConnect takes a probability in [0, 1), like dc0.5", (int)len, tok);
            return -1;
        }
        h->drop_connect = (float)v;
        return 0;
    }
    if (len == 2 && !strncmp(tok, "bn", 2)) {
        if (where != TOK_LAYER) {
            snprintf(why, cap, "'bn' goes after a dense or convolution layer, not %s",
                     where == TOK_POOL ? "a pooling layer" : "a residual block's ')'");
            return -1;
        }
        if (*has_act) { /* written after it, it would silently move before it */
            snprintf(why, cap, "'bn' after the activation: nndist normalizes before it; write bn first, like bn:relu");
            return -1;
        }
        h->batch_norm = 1;
        return 0;
    }
    static const struct {
        const char *name;
        nd_act_kind kind;
        double alpha;
    } acts[] = {{"leaky_relu", ND_ACT_LEAKY_RELU, 0.01},
                {"relu", ND_ACT_RELU, 0},
                {"elu", ND_ACT_ELU, 1.0},
                {"tanh", ND_ACT_TANH, 0},
                {"sigmoid", ND_ACT_SIGMOID, 0},
                {"identity", ND_ACT_IDENTITY, 0},
                {"maxout", ND_ACT_MAXOUT, 2}};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; ++a) {
        const size_t n = strlen(acts[a].name);
        if (!starts(tok, len, acts[a].name)) continue;
        const int numbered = acts[a].kind == ND_ACT_LEAKY_RELU || acts[a].kind == ND_ACT_ELU ||
            acts[a].kind == ND_ACT_MAXOUT;
        if (len > n && !numbered) break;
        if (where == TOK_POOL) {
            snprintf(why, cap, "'%.*s': a pooling layer has no activation", (int)len, tok);
            return -1;
        }
        if (*has_act) {
            snprintf(why, cap, "'%.*s': a layer has one activation", (int)len, tok);
            return -1;
        }
        if (token_number(tok, n, len, acts[a].alpha, &v) != 0) break;
        *has_act = 1;
        act->kind = acts[a].kind;
        if (acts[a].kind == ND_ACT_MAXOUT) {
            if (where != TOK_LAYER || h->kind != ND_LAYER_DENSE) {
                snprintf(why, cap, "'%.*s': maxout is for dense layers", (int)len, tok);
                return -1;
            }
            if (!(v >= 2 && v <= 64) || v != (int)v) { /* range first: (int) of a huge v is undefined */
                snprintf(why, cap, "'%.*s': maxout takes 2 to 64 pieces, like maxout2", (int)len, tok);
                return -1;
            }
            h->pieces = (int)v;
        } else {
            const int leaky = acts[a].kind == ND_ACT_LEAKY_RELU;
            if (numbered && !(v > 0.0 && (!leaky || v < 1.0))) {
                snprintf(why, cap, "'%.*s': the slope must be %s", (int)len, tok, leaky ? "in (0, 1)" : "positive");
                return -1;
            }
            act->alpha = (float)v;
        }
        return 0;
    }
    snprintf(why, cap,
             "'%.*s' is not bn, dcP, dropP, cdropP, relu, leaky_relu[A], elu[A], tanh, sigmoid, identity or maxoutK",
             (int)len, tok);
    return -1;
}

/* Reads "<letter><number>" options such as k3, s2, p1 after a conv or
 * pooling name; each at most once. */
static int read_geometry(const char **p, const char *letters, int *values, const char *group, char *why, size_t cap) {
    while (**p && strchr(letters, **p)) {
        const int at = (int)(strchr(letters, **p) - letters);
        const char letter = *(*p)++;
        const int zero_ok = letter == 'p';
        long v;
        if (zero_ok && **p == '0') v = 0, ++*p;
        else v = read_width(p);
        if (v < 0 || v > 4096) {
            snprintf(why, cap, "'%s': '%c' takes a %s number", group, letter, zero_ok ? "whole" : "positive");
            return -1;
        }
        if (values[at] >= 0) {
            snprintf(why, cap, "'%s': '%c' given twice", group, letter);
            return -1;
        }
        values[at] = (int)v;
    }
    return 0;
}

/* The leading token of a hidden group at *p: a dense width (or fcN), a
 * convolution cOkK[sS][pP] or a pooling mpK[sS], apK[sS], gap. */
static int parse_layer(const char **p, nd_hidden_spec *g, char *why, size_t cap) {
    char group[40];
    size_t glen = strcspn(*p, ":-)");
    snprintf(group, sizeof group, "%.*s", (int)(glen < 32 ? glen : 32), *p);
    int geo[3] = {-1, -1, -1}; /* k, s, p */
    if (**p >= '0' && **p <= '9') {
        g->kind = ND_LAYER_DENSE;
    } else if (!strncmp(*p, "fc", 2)) {
        g->kind = ND_LAYER_DENSE, *p += 2;
    } else if (!strncmp(*p, "gap", 3)) {
        g->kind = ND_LAYER_GLOBAL_POOL, *p += 3;
        return 0;
    } else if (!strncmp(*p, "mp", 2) || !strncmp(*p, "ap", 2)) {
        g->kind = **p == 'm' ? ND_LAYER_MAXPOOL : ND_LAYER_AVGPOOL;
        *p += 2;
        const long k = read_width(p);
        if (k < 0 || k > 4096) {
            snprintf(why, cap, "'%s': pooling takes a window size, like mp2 or mp3s2", group);
            return -1;
        }
        if (read_geometry(p, "s", &geo[1], group, why, cap) != 0) return -1;
        g->kernel = (int)k;
        g->stride = geo[1] > 0 ? geo[1] : (int)k;
        goto end;
    } else if (**p == 'c' && (*p)[1] >= '0' && (*p)[1] <= '9') {
        g->kind = ND_LAYER_CONV, ++*p;
        const long w = read_width(p);
        if (read_geometry(p, "ksp", geo, group, why, cap) != 0) return -1;
        if (w < 0 || geo[0] < 1) {
            snprintf(why, cap, "'%s': a convolution is cOkK[sS][pP], like c32k3p1 (32 channels, 3x3, padding 1)",
                     group);
            return -1;
        }
        g->width = (int)w;
        g->kernel = geo[0];
        g->stride = geo[1] > 0 ? geo[1] : 1;
        g->pad = geo[2] > 0 ? geo[2] : 0;
        goto end;
    } else {
        snprintf(why, cap, "'%s' is not a layer: a width (dense), cOkK[sS][pP], mpK, apK, gap or res(...)", group);
        return -1;
    }
    {
        const long w = read_width(p);
        if (w < 0) {
            snprintf(why, cap, "'%s' does not start with a positive width", group);
            return -1;
        }
        g->width = (int)w;
    }
end:
    if (**p && !strchr(":-)", **p)) {
        snprintf(why, cap, "'%s': unexpected '%c'", group, **p);
        return -1;
    }
    return 0;
}

/* The input group: a width or CxHxW. */
static int parse_input(const char **p, nd_model_spec *spec, char *why, size_t cap) {
    long d[3] = {read_width(p), 0, 0};
    int n = 1;
    while (d[0] > 0 && n < 3 && **p == 'x') ++*p, d[n++] = read_width(p);
    if (d[0] < 0 || (n > 1 && (n != 3 || d[1] < 0 || d[2] < 0)) || (**p && !strchr(":-", **p))) {
        snprintf(why, cap, "the input group is a width or an image shape CxHxW, like 784 or 1x28x28");
        return -1;
    }
    if (n == 3) {
        if (d[0] * d[1] * d[2] > 1 << 24) {
            snprintf(why, cap, "the input image %ldx%ldx%ld is too large", d[0], d[1], d[2]);
            return -1;
        }
        spec->image = (nd_image_shape){(int)d[0], (int)d[1], (int)d[2]};
        spec->input_dim = (int)(d[0] * d[1] * d[2]);
    } else {
        spec->input_dim = (int)d[0];
    }
    return 0;
}

int nd_arch_parse(const char *text, nd_activation default_act, nd_model_spec *spec, char *why, size_t cap) {
    memset(spec, 0, sizeof *spec);
    const char *p = text;
    if (parse_input(&p, spec, why, cap) != 0) return -1;
    float drop = 0.0f;
    int has_act = 0;
    while (*p == ':') {
        const char *tok = ++p;
        while (*p && *p != ':' && *p != '-') ++p;
        if (parse_token(tok, (size_t)(p - tok), TOK_INPUT, NULL, NULL, &drop, &has_act, why, cap) != 0) return -1;
    }
    spec->input_drop = drop;
    nd_hidden_spec h[ND_MAX_LAYERS + 1];
    int groups = 0, in_block = 0, tokens = 0, block_end = 0;
    while (*p) {
        if (*p++ != '-') {
            snprintf(why, cap, "unexpected '%c' after group %d (groups are joined by '-')", p[-1], groups + 1);
            return -1;
        }
        if (groups == ND_MAX_LAYERS) {
            snprintf(why, cap, "more than %d layers", ND_MAX_LAYERS);
            return -1;
        }
        nd_hidden_spec *g = &h[groups];
        *g = (nd_hidden_spec){.act = default_act, .pieces = 1};
        if (!strncmp(p, "res(", 4)) {
            if (in_block) {
                snprintf(why, cap, "group %d: residual blocks do not nest", groups + 1);
                return -1;
            }
            in_block = g->res_begin = 1;
            p += 4;
        }
        if (parse_layer(&p, g, why, cap) != 0) return -1;
        const int pool = g->kind != ND_LAYER_DENSE && g->kind != ND_LAYER_CONV;
        if (pool) g->act = (nd_activation){ND_ACT_IDENTITY, 0.0f};
        has_act = tokens = block_end = 0;
        for (int part = 0; part < 2; ++part) { /* the group's tokens, then those after a ')' */
            while (*p == ':') {
                ++tokens;
                const char *tok = ++p;
                while (*p && *p != ':' && *p != '-' && *p != ')') ++p;
                const int where = part ? TOK_BLOCK_END : pool ? TOK_POOL : TOK_LAYER;
                if (parse_token(tok, (size_t)(p - tok), where, g, part ? &g->res_act : &g->act, &g->drop, &has_act, why,
                                cap) != 0)
                    return -1;
            }
            if (part || *p != ')') break;
            if (!in_block) {
                snprintf(why, cap, "group %d: ')' without 'res('", groups + 1);
                return -1;
            }
            if (g->drop > 0.0f) {
                snprintf(why, cap, "group %d: dropout inside a residual block's last layer goes after its ')'",
                         groups + 1);
                return -1;
            }
            /* The last layer's own activation defaults to none: the
             * block's, after the add, is written after the ')'. */
            if (!has_act && !pool) g->act = (nd_activation){ND_ACT_IDENTITY, 0.0f};
            g->res_end = block_end = 1;
            in_block = has_act = 0;
            g->res_act = default_act;
            ++p;
        }
        ++groups;
    }
    if (in_block) {
        snprintf(why, cap, "a residual block 'res(' is never closed with ')'");
        return -1;
    }
    if (groups < 1) {
        snprintf(why, cap, "needs at least an input and an output width, like 784-10");
        return -1;
    }
    const nd_hidden_spec *out = &h[groups - 1];
    if (out->kind != ND_LAYER_DENSE || tokens > 0 || out->res_begin || block_end) {
        snprintf(why, cap, "the output group (the last) is a plain width, like 10: a dense layer without options");
        return -1;
    }
    spec->num_hidden = groups - 1;
    for (int l = 0; l < spec->num_hidden; ++l) spec->hidden[l] = h[l];
    spec->num_classes = out->width;
    return 0;
}

void nd_arch_group_text(const nd_hidden_spec *h, char *out, size_t cap) {
    switch (h->kind) {
    case ND_LAYER_DENSE: snprintf(out, cap, "%d", h->width); return;
    case ND_LAYER_CONV:
        snprintf(out, cap, "c%dk%d%s%.0d%s%.0d", h->width, h->kernel, h->stride != 1 ? "s" : "",
                 h->stride != 1 ? h->stride : 0, h->pad ? "p" : "", h->pad);
        return;
    case ND_LAYER_MAXPOOL:
    case ND_LAYER_AVGPOOL:
        snprintf(out, cap, "%s%d%s%.0d", h->kind == ND_LAYER_MAXPOOL ? "mp" : "ap", h->kernel,
                 h->stride != h->kernel ? "s" : "", h->stride != h->kernel ? h->stride : 0);
        return;
    case ND_LAYER_GLOBAL_POOL: snprintf(out, cap, "gap"); return;
    }
    snprintf(out, cap, "?");
}

static void format_act(char *out, size_t cap, nd_activation act, int pieces) {
    switch (act.kind) {
    case ND_ACT_LEAKY_RELU: snprintf(out, cap, ":leaky_relu%g", (double)act.alpha); break;
    case ND_ACT_ELU: snprintf(out, cap, ":elu%g", (double)act.alpha); break;
    case ND_ACT_MAXOUT: snprintf(out, cap, ":maxout%d", pieces); break;
    default: snprintf(out, cap, ":%s", nd_activation_name(act.kind));
    }
}

void nd_arch_format(const nd_model_spec *spec, char *out, size_t cap) {
    size_t used = 0;
#define PUT(...) (used += used < cap ? (size_t)snprintf(out + used, cap - used, __VA_ARGS__) : 0)
    if (spec->image.c > 0) PUT("%dx%dx%d", spec->image.c, spec->image.h, spec->image.w);
    else PUT("%d", spec->input_dim);
    if (spec->input_drop > 0.0f) PUT(":drop%g", (double)spec->input_drop);
    for (int l = 0; l < spec->num_hidden; ++l) {
        const nd_hidden_spec *h = &spec->hidden[l];
        char text[48], act[40];
        nd_arch_group_text(h, text, sizeof text);
        PUT("-%s%s", h->res_begin ? "res(" : "", text);
        const int pool = h->kind != ND_LAYER_DENSE && h->kind != ND_LAYER_CONV;
        if (h->drop_connect > 0.0f) PUT(":dc%g", (double)h->drop_connect);
        if (h->batch_norm) PUT(":bn");
        format_act(act, sizeof act, h->act, h->pieces);
        if (!pool) PUT("%s", act);
        if (h->res_end) {
            format_act(act, sizeof act, h->res_act, 1);
            PUT(")%s", act);
        }
        if (h->drop > 0.0f) PUT(":%s%g", h->drop_channels ? "cdrop" : "drop", (double)h->drop);
    }
    PUT("-%d", spec->num_classes);
#undef PUT
}
