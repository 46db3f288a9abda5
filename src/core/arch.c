/* The compact architecture text (model.h): parsing and the canonical form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/model.h"

/* Reads a positive width at *p; -1 if there is none. */
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

/* One ":token" of a hidden group (or of the input when h is NULL). */
static int parse_token(const char *tok, size_t len, nd_hidden_spec *h, float *drop, int *has_act, char *why,
                       size_t cap) {
    double v;
    if (starts(tok, len, "drop")) {
        if (token_number(tok, 4, len, -1, &v) != 0 || !(v >= 0.0 && v < 1.0)) {
            snprintf(why, cap, "'%.*s': dropout takes a probability in [0, 1), like drop0.3", (int)len, tok);
            return -1;
        }
        *drop = (float)v;
        return 0;
    }
    if (!h) {
        snprintf(why, cap, "'%.*s': the input group takes only dropN", (int)len, tok);
        return -1;
    }
    if (len == 2 && !strncmp(tok, "bn", 2)) {
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
        if (*has_act) {
            snprintf(why, cap, "'%.*s': a layer has one activation", (int)len, tok);
            return -1;
        }
        if (token_number(tok, n, len, acts[a].alpha, &v) != 0) break;
        *has_act = 1;
        h->act.kind = acts[a].kind;
        if (acts[a].kind == ND_ACT_MAXOUT) {
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
            h->act.alpha = (float)v;
        }
        return 0;
    }
    snprintf(why, cap, "'%.*s' is not bn, dropP, relu, leaky_relu[A], elu[A], tanh, sigmoid, identity or maxoutK",
             (int)len, tok);
    return -1;
}

int nd_arch_parse(const char *text, nd_activation default_act, nd_model_spec *spec, char *why, size_t cap) {
    memset(spec, 0, sizeof *spec);
    const char *p = text;
    int groups = 0;
    nd_hidden_spec h[ND_MAX_LAYERS + 1];
    float drops[ND_MAX_LAYERS + 1];
    int tokens = 0; /* of the latest group */
    for (;;) {
        if (groups == ND_MAX_LAYERS + 1) {
            snprintf(why, cap, "more than %d layers", ND_MAX_LAYERS);
            return -1;
        }
        nd_hidden_spec *g = &h[groups];
        *g = (nd_hidden_spec){.act = default_act, .pieces = 1};
        drops[groups] = 0.0f;
        long w = read_width(&p);
        if (w < 0) {
            snprintf(why, cap, "group %d does not start with a positive width", groups + 1);
            return -1;
        }
        g->width = (int)w;
        int has_act = 0;
        tokens = 0;
        while (*p == ':') {
            ++tokens;
            const char *tok = ++p;
            while (*p && *p != ':' && *p != '-') ++p;
            if (parse_token(tok, (size_t)(p - tok), groups ? g : NULL, &drops[groups], &has_act, why, cap) != 0)
                return -1;
        }
        g->drop = drops[groups];
        ++groups;
        if (!*p) break;
        if (*p++ != '-') {
            snprintf(why, cap, "unexpected '%c' after group %d (groups are joined by '-')", p[-1], groups);
            return -1;
        }
    }
    if (groups < 2) {
        snprintf(why, cap, "needs at least an input and an output width, like 784-10");
        return -1;
    }
    const nd_hidden_spec *out = &h[groups - 1];
    if (tokens > 0) {
        snprintf(why, cap, "the output group (%d) takes no options: it is a plain dense layer", out->width);
        return -1;
    }
    spec->input_dim = h[0].width;
    spec->input_drop = h[0].drop;
    spec->num_hidden = groups - 2;
    for (int l = 0; l < spec->num_hidden; ++l) spec->hidden[l] = h[l + 1];
    spec->num_classes = out->width;
    return 0;
}

void nd_arch_format(const nd_model_spec *spec, char *out, size_t cap) {
    size_t used = (size_t)snprintf(out, cap, "%d", spec->input_dim);
#define PUT(...) (used += used < cap ? (size_t)snprintf(out + used, cap - used, __VA_ARGS__) : 0)
    if (spec->input_drop > 0.0f) PUT(":drop%g", (double)spec->input_drop);
    for (int l = 0; l < spec->num_hidden; ++l) {
        const nd_hidden_spec *h = &spec->hidden[l];
        PUT("-%d", h->width);
        if (h->batch_norm) PUT(":bn");
        switch (h->act.kind) {
        case ND_ACT_LEAKY_RELU: PUT(":leaky_relu%g", (double)h->act.alpha); break;
        case ND_ACT_ELU: PUT(":elu%g", (double)h->act.alpha); break;
        case ND_ACT_MAXOUT: PUT(":maxout%d", h->pieces); break;
        default: PUT(":%s", nd_activation_name(h->act.kind));
        }
        if (h->drop > 0.0f) PUT(":drop%g", (double)h->drop);
    }
    PUT("-%d", spec->num_classes);
#undef PUT
}
