/* `nndist show-weights`: a layer's weights as a PNG grid of tiles: each
 * unit's incoming weights of a dense layer whose input is an image (the
 * first layer of an MLP on 28x28 images: one 28x28 tile per unit), or
 * each filter of a convolution (k x k; 1 input channel gray, 3 RGB). Each
 * tile is scaled on its own: its smallest weight is 0, its largest 255 (a
 * constant tile is 128); the tiles are separated by 1-pixel black lines. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/checkpoint.h"
#include "nndist/cli.h"
#include "nndist/commands.h"
#include "nndist/model.h"
#include "nndist/plan.h"
#include "nndist/png.h"

typedef struct {
    char config[ND_PATH_MAX];
    char checkpoint[ND_PATH_MAX];
    char out[ND_PATH_MAX];
    int layer;
    int max_tiles;
    int zoom;
    char weights[8];
} show_config;

#define FS(type, field) ND_CLI_FIELD(type, show_config, field)
static const nd_cli_option show_options[] = {
    {"config", FS(STR, config), "", "read options from FILE (key = value)"},
    {"checkpoint", FS(STR, checkpoint), "", "checkpoint file (or give it as the first argument) [required]"},
    {"out", FS(STR, out), "", "PNG file to write (default: the checkpoint's name with .weights.png)"},
    {"layer", FS(INT, layer), "1", "the Nth layer with weights (1: the first); its input must be an image"},
    {"max-tiles", FS(INT, max_tiles), "256", "draw at most this many units or filters (the first ones)"},
    {"zoom", FS(INT, zoom), "1", "draw each weight as a ZOOM x ZOOM block of pixels"},
    {"weights", FS(STR, weights), "raw", "raw, or ema: the moving average a run with --ema saved beside them"},
};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* How the chosen layer's weights become tiles: n tiles of c planes
 * (1 or 3) of h x w; tile t's plane p pixel (y, x) is w[t * stride + p * h * w + y * w + x]. */
typedef struct {
    int n, c, h, w;
    size_t stride;
} tiling;

/* The tiles of layer l of m, or a one-line refusal. */
static nd_status choose_tiling(const nd_model *m, const nd_model_spec *spec, int l, int nth, tiling *t, nd_error *err) {
    const nd_layer *L = &m->layer[l];
    if (L->kind == ND_LAYER_CONV) {
        const nd_conv_geom *g = &L->geom;
        const int c = g->c;
        if (c != 1 && c != 3)
            return ND_FAIL(
                err, ND_ERR_ARG,
                "show-weights: --layer %d is a convolution over %d channels; only filters over 1 (gray) or 3 "
                "(RGB) channels can be drawn",
                nth, c);
        *t = (tiling){
            .n = g->out_c, .c = c, .h = g->kernel, .w = g->kernel, .stride = (size_t)c * g->kernel * g->kernel};
        return ND_OK;
    }
    /* Dense: each unit's row of in_dim weights, drawn in the shape of its input. */
    nd_image_shape s = L->in_shape;
    if (s.c == 0 && l == 0) s = spec->image;
    if (s.c == 0 && l == 0) { /* flat features: a square gray image if in_dim is a square */
        const int side = (int)lround(sqrt((double)L->in_dim));
        if (side * side == L->in_dim) s = (nd_image_shape){1, side, side};
    }
    if (s.c == 0 || s.c * s.h * s.w != L->in_dim || (s.c != 1 && s.c != 3))
        return ND_FAIL(err, ND_ERR_ARG,
                       "show-weights: --layer %d: its %d inputs have no image shape to draw its units' weights in "
                       "(an image of 1 or 3 channels, or a square number of flat features, at the first layer)",
                       nth, L->in_dim);
    *t = (tiling){.n = L->out_dim, .c = s.c, .h = s.h, .w = s.w, .stride = (size_t)L->in_dim};
    return ND_OK;
}

/* Draws the first n tiles of w into a grid of `cols` columns; pixels
 * (height x width x channels) start black (the separators). */
static void draw(const float *w, const tiling *t, int n, int cols, int zoom, unsigned char *pixels, int width) {
    const int th = t->h * zoom, tw = t->w * zoom, plane = t->h * t->w;
    for (int i = 0; i < n; ++i) {
        const float *tile = w + (size_t)i * t->stride;
        float lo = INFINITY, hi = -INFINITY;
        for (int k = 0; k < t->c * plane; ++k) lo = fminf(lo, tile[k]), hi = fmaxf(hi, tile[k]);
        const double range = (double)hi - lo;
        const int y0 = (i / cols) * (th + 1), x0 = (i % cols) * (tw + 1);
        for (int y = 0; y < th; ++y)
            for (int x = 0; x < tw; ++x)
                for (int p = 0; p < t->c; ++p) {
                    const float v = tile[p * plane + (y / zoom) * t->w + x / zoom];
                    const long level = range > 0 ? lround(((double)v - lo) / range * 255.0) : 128;
                    pixels[((size_t)(y0 + y) * width + x0 + x) * t->c + p] = (unsigned char)level;
                }
    }
}

/* The weights layer: the Nth layer that has any. */
static int weight_layer(const nd_model *m, int nth) {
    for (int l = 0, seen = 0; l < m->num_layers; ++l)
        if (m->layer[l].w.length > 0 && ++seen == nth) return l;
    return -1;
}

nd_status nd_cmd_show_weights(int argc, char **argv, nd_error *err) {
    show_config c;
    int help = 0;
    const char *positional = argc > 0 && argv[0][0] != '-' ? argv[0] : NULL;
    ND_TRY(nd_cli_parse_command(show_options, COUNT(show_options), &c, sizeof c, argc - !!positional,
                                argv + !!positional,
                                "usage: nndist show-weights CKPT [--out FILE.png] [--layer 1] [--weights raw|ema]",
                                stdout, &help, err));
    if (help) return ND_OK;
    if (positional) {
        if (c.checkpoint[0])
            return ND_FAIL(err, ND_ERR_ARG, "show-weights: give the checkpoint once (%s or --checkpoint)", positional);
        if (strlen(positional) >= sizeof c.checkpoint)
            return ND_FAIL(err, ND_ERR_ARG, "show-weights: %s: path too long", positional);
        strcpy(c.checkpoint, positional);
    }
    if (!c.checkpoint[0]) return ND_FAIL(err, ND_ERR_ARG, "show-weights: give a checkpoint (nndist show-weights CKPT)");
    if (c.layer < 1) return ND_FAIL(err, ND_ERR_ARG, "--layer: %d must be >= 1", c.layer);
    if (c.max_tiles < 1) return ND_FAIL(err, ND_ERR_ARG, "--max-tiles: %d must be >= 1", c.max_tiles);
    if (c.zoom < 1 || c.zoom > 64) return ND_FAIL(err, ND_ERR_ARG, "--zoom: %d must be in [1, 64]", c.zoom);
    if (strcmp(c.weights, "raw") && strcmp(c.weights, "ema"))
        return ND_FAIL(err, ND_ERR_ARG, "--weights: '%s' is not one of raw, ema", c.weights);
    if (!c.out[0]) {
        const char *dot = strrchr(c.checkpoint, '.'), *slash = strrchr(c.checkpoint, '/');
        const int stem = dot && (!slash || dot > slash) ? (int)(dot - c.checkpoint) : (int)strlen(c.checkpoint);
        if (snprintf(c.out, sizeof c.out, "%.*s.weights.png", stem, c.checkpoint) >= (int)sizeof c.out)
            return ND_FAIL(err, ND_ERR_ARG, "show-weights: %s: path too long", c.checkpoint);
    }
    const int use_ema = !strcmp(c.weights, "ema");
    nd_ckpt_info info;
    memset(&info, 0, sizeof info);
    ND_TRY(nd_checkpoint_probe(c.checkpoint, &info, err));
    nd_model model;
    ND_TRY(nd_model_create(&model, &info.spec, 1, err));
    const int cols_in = info.spec.input_dim;
    float *mean = nd_buffer_alloc((size_t)cols_in), *inv_std = nd_buffer_alloc((size_t)cols_in);
    float *ema = use_ema ? nd_buffer_alloc(model.num_params) : NULL;
    unsigned char *pixels = NULL;
    nd_status st = ND_OK;
    if (!mean || !inv_std || (use_ema && !ema)) st = ND_FAIL(err, ND_ERR_NOMEM, "show-weights: out of memory");
    if (st == ND_OK) st = nd_checkpoint_read(c.checkpoint, &model, NULL, mean, inv_std, ema, &info, err);
    if (st == ND_OK && use_ema && !info.has_ema)
        st = ND_FAIL(err, ND_ERR_ARG, "--weights ema: %s holds no /ema (the run had no --ema)", c.checkpoint);
    const float *param = use_ema ? ema : model.param;
    const int l = weight_layer(&model, c.layer);
    if (st == ND_OK && l < 0)
        st = ND_FAIL(err, ND_ERR_ARG, "--layer %d: %s's model has fewer layers with weights", c.layer, c.checkpoint);
    tiling t = {0};
    if (st == ND_OK) st = choose_tiling(&model, &info.spec, l, c.layer, &t, err);
    if (st == ND_OK) {
        const int n = t.n < c.max_tiles ? t.n : c.max_tiles;
        int cols = (int)ceil(sqrt((double)n));
        const int rows = (n + cols - 1) / cols;
        const int width = cols * (t.w * c.zoom + 1) - 1, height = rows * (t.h * c.zoom + 1) - 1;
        pixels = calloc((size_t)width * height * t.c, 1);
        if (!pixels) st = ND_FAIL(err, ND_ERR_NOMEM, "show-weights: out of memory for a %dx%d image", width, height);
        if (st == ND_OK) {
            draw(param + model.layer[l].w.offset, &t, n, cols, c.zoom, pixels, width);
            st = nd_png_write(c.out, pixels, width, height, t.c, err);
        }
        if (st == ND_OK)
            printf("wrote %s: layer %d, %d of %d %s as %dx%d%s tiles (%dx%d pixels; each tile scaled to 0..255 on its "
                   "own)\n",
                   c.out, c.layer, n, t.n, model.layer[l].kind == ND_LAYER_CONV ? "filters" : "units", t.h, t.w,
                   t.c == 3 ? " RGB" : "", width, height);
    }
    free(pixels);
    nd_buffer_free(ema);
    nd_buffer_free(mean);
    nd_buffer_free(inv_std);
    nd_model_destroy(&model);
    return st;
}
