/* Model creation: the shapes of every layer, the arena layout, the table
 * of named tensors and the workspace (model.h). The passes are in
 * model_pass.c. */
#include "nndist/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nndist/rng.h"

void nd_model_spec_plain(nd_model_spec *spec, int input_dim, const int *widths, int num_hidden, nd_activation act,
                         int num_classes) {
    memset(spec, 0, sizeof *spec);
    spec->input_dim = input_dim;
    spec->num_hidden = num_hidden;
    spec->num_classes = num_classes;
    for (int l = 0; l < num_hidden && l < ND_MAX_LAYERS - 1; ++l)
        spec->hidden[l] = (nd_hidden_spec){.width = widths[l], .act = act, .pieces = 1};
}

static int is_image(nd_image_shape s) { return s.c > 0; }

int nd_spec_is_convolutional(const nd_model_spec *spec) {
    for (int l = 0; l < spec->num_hidden; ++l)
        if (spec->hidden[l].kind != ND_LAYER_DENSE) return 1;
    return 0;
}

/* The shapes of layer l from its spec and its input; one line naming the
 * layer and the shapes if it does not fit. */
static nd_status shape_layer(nd_layer *L, int l, const nd_hidden_spec *h, nd_image_shape in, int in_dim,
                             nd_error *err) {
    char label[48];
    nd_arch_group_text(h, label, sizeof label);
    L->kind = h->kind;
    L->in_dim = in_dim;
    L->in_shape = in;
    L->act = h->act;
    L->pieces = 1;
    L->batch_norm = h->batch_norm;
    L->drop = h->drop;
    L->drop_channels = h->drop_channels;
    L->drop_connect = h->drop_connect;
    L->res_from = -1;
    if (!(h->drop >= 0.0f && h->drop < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): dropout %g must be in [0, 1)", l + 1, label,
                       (double)h->drop);
    if (h->kind == ND_LAYER_DENSE) {
        const int pieces = h->act.kind == ND_ACT_MAXOUT ? h->pieces : 1;
        if (h->width <= 0 || pieces < 1 || pieces > 64 || (h->act.kind == ND_ACT_MAXOUT && pieces < 2))
            return ND_FAIL(err, ND_ERR_ARG, "model: layer %d has width %d and %d maxout pieces", l + 1, h->width,
                           pieces);
        if (h->drop_channels)
            return ND_FAIL(err, ND_ERR_ARG,
                           "model: layer %d (%s): channel dropout needs a convolution or pooling layer", l + 1, label);
        if (!(h->drop_connect >= 0.0f && h->drop_connect < 1.0f))
            return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): DropConnect %g must be in [0, 1)", l + 1, label,
                           (double)h->drop_connect);
        L->pieces = pieces;
        L->width = h->width;
        L->out_dim = h->width * pieces;
        L->fan_in = in_dim;
        return ND_OK;
    }
    if (h->drop_connect > 0.0f)
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): DropConnect is for dense layers", l + 1, label);
    if (!is_image(in))
        return ND_FAIL(err, ND_ERR_ARG,
                       "model: layer %d (%s) needs an image input (C x H x W), but its input is %d flat features%s",
                       l + 1, label, in_dim,
                       l == 0 ? " (start the architecture with the image shape, like 1x28x28, on data that has one)"
                              : "");
    if (h->act.kind == ND_ACT_MAXOUT)
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): maxout is for dense layers", l + 1, label);
    nd_conv_geom *g = &L->geom;
    *g = (nd_conv_geom){.c = in.c, .h = in.h, .w = in.w, .kernel = h->kernel, .stride = h->stride, .pad = h->pad};
    if (h->kind == ND_LAYER_GLOBAL_POOL) g->kernel = in.h > in.w ? in.h : in.w, g->stride = 1, g->pad = 0;
    g->out_c = h->kind == ND_LAYER_CONV ? h->width : in.c;
    if (h->kind == ND_LAYER_CONV && h->width <= 0)
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): a convolution needs at least one output channel", l + 1,
                       label);
    if (h->kind == ND_LAYER_GLOBAL_POOL) {
        g->out_h = g->out_w = 1;
    } else if (nd_conv_geom_finish(g) != 0) {
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): a %dx%d kernel%s does not fit its %dx%dx%d input", l + 1,
                       label, h->kernel, h->kernel, h->pad ? " with its padding" : "", in.c, in.h, in.w);
    }
    if (h->kind != ND_LAYER_CONV && h->pad > h->kernel / 2)
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): padding %d is more than half the kernel", l + 1, label,
                       h->pad);
    L->out_shape = (nd_image_shape){g->out_c, g->out_h, g->out_w};
    L->out_dim = L->width = g->out_c * g->out_h * g->out_w;
    L->fan_in = h->kind == ND_LAYER_CONV ? in.c * h->kernel * h->kernel : 0;
    if (h->kind != ND_LAYER_CONV && h->batch_norm)
        return ND_FAIL(err, ND_ERR_ARG, "model: layer %d (%s): batch norm goes after a dense or convolution layer",
                       l + 1, label);
    return ND_OK;
}

/* The skip path of a block that ends at layer l and began at the input of
 * layer `from`: identity when the shapes agree, else a 1x1 convolution whose
 * stride maps the block's input onto the body's output. */
static nd_status shape_skip(nd_layer *L, int l, int from, const nd_layer *first, nd_error *err) {
    L->res_from = from;
    const nd_image_shape a = first->in_shape, b = L->out_shape;
    if (first->in_dim == L->width && (!is_image(a) || (a.c == b.c && a.h == b.h && a.w == b.w))) return ND_OK;
    if (!is_image(a) || !is_image(b))
        return ND_FAIL(err, ND_ERR_ARG,
                       "model: the residual block of layers %d-%d turns %d values into %d: a dense block must keep "
                       "its width",
                       from + 1, l + 1, first->in_dim, L->width);
    for (int s = 1; s <= a.h && s <= a.w; ++s) {
        nd_conv_geom g = {.c = a.c, .h = a.h, .w = a.w, .out_c = b.c, .kernel = 1, .stride = s, .pad = 0};
        nd_conv_geom_finish(&g);
        if (g.out_h == b.h && g.out_w == b.w) {
            L->proj = 1;
            L->proj_geom = g;
            return ND_OK;
        }
    }
    return ND_FAIL(err, ND_ERR_ARG,
                   "model: the residual block of layers %d-%d turns %dx%dx%d into %dx%dx%d, which no strided 1x1 "
                   "projection matches",
                   from + 1, l + 1, a.c, a.h, a.w, b.c, b.h, b.w);
}

static void reserve_bn(nd_bn_site *bn, int channels, int spatial, size_t *total, size_t *weights) {
    bn->channels = channels;
    bn->spatial = spatial;
    bn->gamma = nd_span_reserve(total, (size_t)channels);
    bn->beta = nd_span_reserve(total, (size_t)channels);
    *weights += 2 * (size_t)channels;
}

static void add_tensor(nd_model *m, int l, const char *prefix, const char *leaf, nd_span s, nd_tensor_role role,
                       int ndims, const int *dims) {
    nd_tensor *t = &m->tensor[m->num_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s%d/%s", prefix, l, leaf);
    t->span = s;
    t->role = role;
    t->layer = l;
    t->ndims = ndims;
    for (int d = 0; d < ndims; ++d) t->dims[d] = dims[d];
}

static void add_bn_tensors(nd_model *m, int l, const char *prefix, const nd_bn_site *bn) {
    const int d[1] = {bn->channels};
    add_tensor(m, l, prefix, "gamma", bn->gamma, ND_TENSOR_BN_SCALE, 1, d);
    add_tensor(m, l, prefix, "beta", bn->beta, ND_TENSOR_BN_SHIFT, 1, d);
    add_tensor(m, l, prefix, "running_mean", bn->run_mean, ND_TENSOR_BN_MEAN, 1, d);
    add_tensor(m, l, prefix, "running_var", bn->run_var, ND_TENSOR_BN_VAR, 1, d);
}

/* The table, layer by layer: W, b, batch norm, then the projection. For an
 * MLP this is the order of checkpoint format 2 (dense<l>, bn<l>). */
static void name_tensors(nd_model *m) {
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        if (L->kind == ND_LAYER_DENSE) {
            const int wd[2] = {L->out_dim, L->in_dim}, bd[1] = {L->out_dim};
            add_tensor(m, l, "dense", "W", L->w, ND_TENSOR_WEIGHT, 2, wd);
            add_tensor(m, l, "dense", "b", L->b, ND_TENSOR_BIAS, 1, bd);
        } else if (L->kind == ND_LAYER_CONV) {
            const nd_conv_geom *g = &L->geom;
            const int wd[4] = {g->out_c, g->c, g->kernel, g->kernel}, bd[1] = {g->out_c};
            add_tensor(m, l, "conv", "W", L->w, ND_TENSOR_WEIGHT, 4, wd);
            add_tensor(m, l, "conv", "b", L->b, ND_TENSOR_BIAS, 1, bd);
        }
        if (L->batch_norm) add_bn_tensors(m, l, "bn", &L->bn);
        if (L->proj) {
            const nd_conv_geom *g = &L->proj_geom;
            const int wd[4] = {g->out_c, g->c, 1, 1}, bd[1] = {g->out_c};
            add_tensor(m, l, "proj", "W", L->proj_w, ND_TENSOR_WEIGHT, 4, wd);
            add_tensor(m, l, "proj", "b", L->proj_b, ND_TENSOR_BIAS, 1, bd);
            if (L->proj_bn.channels) add_bn_tensors(m, l, "projbn", &L->proj_bn);
        }
    }
}

/* Every layer's shape and its parameters' place in the arena: trainable
 * spans first, running statistics after them, so the optimizer, clipping
 * and the norm cover one prefix of the arena. */
static nd_status lay_out(nd_model *model, const nd_model_spec *spec, nd_error *err) {
    size_t total = 0;
    nd_image_shape shape = spec->image;
    int in = spec->input_dim, block = -1;
    for (int l = 0; l < model->num_layers; ++l) {
        const int hidden = l < spec->num_hidden;
        const nd_hidden_spec h = hidden
            ? spec->hidden[l]
            : (nd_hidden_spec){.kind = ND_LAYER_DENSE, .width = spec->num_classes, .pieces = 1};
        nd_layer *L = &model->layer[l];
        ND_TRY(shape_layer(L, l, &h, shape, in, err));
        if (h.res_begin) {
            if (block >= 0)
                return ND_FAIL(err, ND_ERR_ARG, "model: layer %d opens a residual block inside another", l + 1);
            block = l;
        }
        if (h.res_end) {
            if (block < 0)
                return ND_FAIL(err, ND_ERR_ARG, "model: layer %d closes a residual block never opened", l + 1);
            ND_TRY(shape_skip(L, l, block, &model->layer[block], err));
            L->res_act = h.res_act;
            block = -1;
        }
        if (L->kind == ND_LAYER_DENSE || L->kind == ND_LAYER_CONV) {
            const size_t units = L->kind == ND_LAYER_CONV ? (size_t)L->geom.out_c : (size_t)L->out_dim;
            L->w = nd_span_reserve(&total, units * (size_t)L->fan_in);
            L->b = nd_span_reserve(&total, units);
            model->num_weights += units * (size_t)L->fan_in + units;
            if (L->batch_norm)
                reserve_bn(&L->bn, (int)units, L->kind == ND_LAYER_CONV ? L->geom.out_h * L->geom.out_w : 1, &total,
                           &model->num_weights);
        }
        if (L->proj) {
            const nd_conv_geom *g = &L->proj_geom;
            L->proj_w = nd_span_reserve(&total, (size_t)g->out_c * g->c);
            L->proj_b = nd_span_reserve(&total, (size_t)g->out_c);
            model->num_weights += (size_t)g->out_c * g->c + g->out_c;
            if (L->batch_norm) reserve_bn(&L->proj_bn, g->out_c, g->out_h * g->out_w, &total, &model->num_weights);
        }
        shape = L->kind == ND_LAYER_DENSE ? (nd_image_shape){0, 0, 0} : L->out_shape;
        in = L->width;
    }
    if (block >= 0)
        return ND_FAIL(err, ND_ERR_ARG, "model: the residual block opened at layer %d is never closed", block + 1);
    model->num_trainable = nd_span_reserve(&total, 0).offset;
    for (int l = 0; l < model->num_layers; ++l) {
        nd_bn_site *sites[2] = {&model->layer[l].bn, &model->layer[l].proj_bn};
        for (int k = 0; k < 2; ++k) {
            if (!sites[k]->channels) continue;
            sites[k]->run_mean = nd_span_reserve(&total, (size_t)sites[k]->channels);
            sites[k]->run_var = nd_span_reserve(&total, (size_t)sites[k]->channels);
        }
    }
    model->num_params = total;
    return ND_OK;
}

/* The workspace: sized in the same order as the views are handed out. */
static nd_status plan_workspace(nd_model *model, nd_error *err) {
    const nd_model_spec *spec = &model->spec;
    size_t acts = 0, col = 0;
    const size_t B = (size_t)model->max_batch;
    int widest = spec->input_dim, skip = 0;
    nd_span zs[ND_MAX_LAYERS], xh[ND_MAX_LAYERS], bb[ND_MAX_LAYERS], as[ND_MAX_LAYERS];
    nd_span pz[ND_MAX_LAYERS], pxh[ND_MAX_LAYERS], pbb[ND_MAX_LAYERS];
    nd_span dout[ND_MAX_LAYERS + 1], dmask[ND_MAX_LAYERS + 1], dcw[ND_MAX_LAYERS], dcm[ND_MAX_LAYERS];
    const nd_span none = {0, 0};
    for (int l = 0; l <= model->num_layers; ++l) { /* dropout slot l: input (0) or layer l-1 */
        const float p = l == 0 ? spec->input_drop : model->layer[l - 1].drop;
        const int w = l == 0 ? spec->input_dim : model->layer[l - 1].width;
        dout[l] = p > 0.0f ? nd_span_reserve(&acts, B * w) : none;
        dmask[l] = p > 0.0f ? nd_span_reserve(&acts, B * w) : none;
    }
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_layer *L = &model->layer[l];
        zs[l] = nd_span_reserve(&acts, B * L->out_dim);
        xh[l] = L->batch_norm ? nd_span_reserve(&acts, B * L->out_dim) : none;
        bb[l] = L->batch_norm ? nd_span_reserve(&acts, 3 * (size_t)L->bn.channels + 1) : none;
        as[l] = L->pieces > 1 || L->res_from >= 0 ? nd_span_reserve(&acts, B * L->width) : none;
        pz[l] = L->proj ? nd_span_reserve(&acts, B * L->out_dim) : none;
        pxh[l] = L->proj_bn.channels ? nd_span_reserve(&acts, B * L->out_dim) : none;
        pbb[l] = L->proj_bn.channels ? nd_span_reserve(&acts, 3 * (size_t)L->proj_bn.channels + 1) : none;
        dcw[l] = L->drop_connect > 0.0f ? nd_span_reserve(&acts, L->w.length) : none; /* a weight's size, any batch */
        dcm[l] = L->drop_connect > 0.0f ? nd_span_reserve(&acts, L->w.length) : none;
        if (L->out_dim > widest) widest = L->out_dim;
        if (L->in_dim > widest) widest = L->in_dim;
        if (L->res_from >= 0 && model->layer[L->res_from].in_dim > skip) skip = model->layer[L->res_from].in_dim;
        if (L->kind == ND_LAYER_CONV && nd_conv_scratch_floats(&L->geom) > col) col = nd_conv_scratch_floats(&L->geom);
        if (L->proj && nd_conv_scratch_floats(&L->proj_geom) > col) col = nd_conv_scratch_floats(&L->proj_geom);
    }
    nd_span d0 = nd_span_reserve(&acts, B * widest), d1 = nd_span_reserve(&acts, B * widest);
    nd_span sg = nd_span_reserve(&acts, B * skip), cs = nd_span_reserve(&acts, col);
    model->max_width = widest;
    model->workspace = nd_buffer_alloc(acts);
    model->workspace_floats = acts;
    if (!model->workspace)
        return ND_FAIL(err, ND_ERR_NOMEM, "model: cannot allocate %zu workspace floats (%.0f MiB) for batch %d", acts,
                       acts * 4.0 / 1048576.0, model->max_batch);
    float *ws = model->workspace;
#define VIEW(s) ((s).length ? ws + (s).offset : NULL)
    for (int l = 0; l <= model->num_layers; ++l) {
        model->drop_out[l] = VIEW(dout[l]);
        model->drop_mask[l] = VIEW(dmask[l]);
    }
    for (int l = 0; l < model->num_layers; ++l) {
        model->z[l] = ws + zs[l].offset;
        model->xhat[l] = VIEW(xh[l]);
        model->bn_buf[l] = VIEW(bb[l]);
        model->act[l] = as[l].length ? ws + as[l].offset : model->z[l];
        model->proj[l] = VIEW(pz[l]);
        model->proj_xhat[l] = VIEW(pxh[l]);
        model->proj_bn_buf[l] = VIEW(pbb[l]);
        model->dc_w[l] = VIEW(dcw[l]);
        model->dc_mask[l] = VIEW(dcm[l]);
    }
    model->delta[0] = ws + d0.offset;
    model->delta[1] = ws + d1.offset;
    model->skip_grad = VIEW(sg);
    model->col = VIEW(cs);
    model->col_floats = col;
#undef VIEW
    size_t ints = 0;
    nd_span args[ND_MAX_LAYERS];
    for (int l = 0; l < model->num_layers; ++l)
        args[l] = nd_span_reserve(&ints, model->layer[l].kind == ND_LAYER_MAXPOOL ? B * model->layer[l].out_dim : 0);
    if (!(model->int_workspace = nd_buffer_alloc_i32(ints)))
        return ND_FAIL(err, ND_ERR_NOMEM, "model: cannot allocate %zu pooling indices", ints);
    for (int l = 0; l < model->num_layers; ++l)
        model->pool_arg[l] = args[l].length ? model->int_workspace + args[l].offset : NULL;
    return ND_OK;
}

nd_status nd_model_create(nd_model *model, const nd_model_spec *spec, int max_batch, nd_error *err) {
    memset(model, 0, sizeof *model);
    if (spec->input_dim <= 0 || spec->num_classes <= 0)
        return ND_FAIL(err, ND_ERR_ARG, "model: input and output widths must be positive (got %d and %d)",
                       spec->input_dim, spec->num_classes);
    if (spec->num_hidden < 0 || spec->num_hidden > ND_MAX_LAYERS - 1)
        return ND_FAIL(err, ND_ERR_ARG, "model: %d hidden layers, at most %d are supported", spec->num_hidden,
                       ND_MAX_LAYERS - 1);
    if (is_image(spec->image) &&
        (spec->image.h <= 0 || spec->image.w <= 0 ||
         (long)spec->image.c * spec->image.h * spec->image.w != spec->input_dim))
        return ND_FAIL(err, ND_ERR_ARG, "model: the input image %dx%dx%d does not hold %d features", spec->image.c,
                       spec->image.h, spec->image.w, spec->input_dim);
    if (max_batch <= 0) return ND_FAIL(err, ND_ERR_ARG, "model: batch must be positive");
    if (!(spec->input_drop >= 0.0f && spec->input_drop < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "model: input dropout %g must be in [0, 1)", (double)spec->input_drop);
    model->spec = *spec;
    if (!(model->spec.bn_eps > 0.0f)) model->spec.bn_eps = 1e-5f;
    model->num_layers = spec->num_hidden + 1;
    model->max_batch = max_batch;
    ND_TRY(lay_out(model, spec, err));
    name_tensors(model);
    nd_model_set_grad_block(model, ND_GRAD_BLOCK_FLOATS);
    model->param = nd_buffer_alloc(model->num_params);
    model->grad = nd_buffer_alloc(model->num_params + ND_GRAD_TAIL);
    if (!model->param || !model->grad) {
        nd_model_destroy(model);
        return ND_FAIL(err, ND_ERR_NOMEM, "model: cannot allocate %zu parameters", model->num_params);
    }
    const nd_status st = plan_workspace(model, err);
    if (st != ND_OK) nd_model_destroy(model);
    return st;
}

void nd_model_destroy(nd_model *model) {
    nd_buffer_free(model->param);
    nd_buffer_free(model->grad);
    nd_buffer_free(model->workspace);
    nd_buffer_free(model->int_workspace);
    memset(model, 0, sizeof *model);
}

const char *const nd_init_names[] = {[ND_INIT_HE] = "he",       [ND_INIT_XAVIER] = "xavier", [ND_INIT_LECUN] = "lecun",
                                     [ND_INIT_SMALL] = "small", [ND_INIT_ZERO] = "zero",     NULL};

int nd_init_parse(const char *name, nd_init_kind *kind) {
    for (int k = 0; nd_init_names[k]; ++k)
        if (!strcmp(name, nd_init_names[k])) {
            *kind = (nd_init_kind)k;
            return 0;
        }
    return -1;
}

/* He's gain for an activation (as PyTorch's calculate_gain): sqrt(2) for
 * ReLU, 1 for a linear map, so the initial logits stay small and the
 * initial loss near ln C. */
static double init_gain(nd_activation act) {
    switch (act.kind) {
    case ND_ACT_RELU: return sqrt(2.0);
    case ND_ACT_LEAKY_RELU: return sqrt(2.0 / (1.0 + (double)act.alpha * act.alpha));
    case ND_ACT_TANH: return 5.0 / 3.0;
    case ND_ACT_ELU: return sqrt(2.0); /* behaves like ReLU for x > 0 */
    case ND_ACT_SIGMOID:
    case ND_ACT_MAXOUT:
    case ND_ACT_IDENTITY: break;
    }
    return 1.0;
}

/* w (length) drawn by `init` from stream (seed, 0x1417, stream); fan_in
 * and fan_out count the inputs and outputs of a unit (times the kernel's
 * area for a convolution, as PyTorch). */
static void init_weights(float *w, size_t length, uint64_t seed, uint64_t stream, nd_init_kind init, double fan_in,
                         double fan_out, double gain) {
    nd_rng rng;
    nd_rng_seed(&rng, seed, 0x1417u, stream);
    for (size_t i = 0; i < length; ++i) {
        double x;
        switch (init) {
        case ND_INIT_XAVIER: x = sqrt(6.0 / (fan_in + fan_out)) * (2.0 * nd_rng_uniform(&rng) - 1.0); break;
        case ND_INIT_LECUN: x = (2.0 * nd_rng_uniform(&rng) - 1.0) / sqrt(fan_in); break;
        case ND_INIT_SMALL: x = 0.01 * nd_rng_normal(&rng); break;
        case ND_INIT_ZERO: x = 0.0; break;
        case ND_INIT_HE:
        default: x = gain / sqrt(fan_in) * nd_rng_normal(&rng); break;
        }
        w[i] = (float)x;
    }
}

static void init_bn(float *param, const nd_bn_site *bn) {
    for (int j = 0; j < bn->channels; ++j) {
        param[bn->gamma.offset + j] = 1.0f;
        param[bn->run_var.offset + j] = 1.0f;
    }
}

void nd_model_init_params(nd_model *model, uint64_t seed, nd_init_kind init) {
    memset(model->param, 0, model->num_params * sizeof(float));
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_layer *L = &model->layer[l];
        if (L->w.length) {
            const double area = L->kind == ND_LAYER_CONV ? (double)L->geom.kernel * L->geom.kernel : 1.0;
            const double fan_out = L->kind == ND_LAYER_CONV ? L->geom.out_c * area : L->out_dim;
            /* one stream per layer */
            init_weights(model->param + L->w.offset, L->w.length, seed, (uint64_t)l, init, L->fan_in, fan_out,
                         init_gain(L->act));
        }
        if (L->proj) /* a linear map on the skip path: gain 1, a stream of its own */
            init_weights(model->param + L->proj_w.offset, L->proj_w.length, seed, 0x10000u + (uint64_t)l, init,
                         L->proj_geom.c, L->proj_geom.out_c, 1.0);
        if (L->batch_norm) init_bn(model->param, &L->bn);
        if (L->proj_bn.channels) init_bn(model->param, &L->proj_bn);
    }
}

void nd_model_jitter(nd_model *model, uint64_t seed, float spread) {
    nd_rng rng;
    nd_rng_seed(&rng, seed, 0x9cb, 0);
    for (int t = 0; t < model->num_tensors; ++t) {
        const nd_tensor *T = &model->tensor[t];
        const int scale = T->role == ND_TENSOR_BN_SCALE;
        if (T->role != ND_TENSOR_BIAS && T->role != ND_TENSOR_BN_SHIFT && !scale) continue;
        for (size_t i = 0; i < T->span.length; ++i)
            model->param[T->span.offset + i] = (scale ? 1.0f : 0.0f) + spread * (float)nd_rng_normal(&rng);
    }
}

void nd_model_bias_priors(nd_model *model, const double *counts) {
    const nd_layer *L = &model->layer[model->num_layers - 1];
    double total = 0.0;
    for (int c = 0; c < L->out_dim; ++c) total += counts[c];
    float *b = model->param + L->b.offset;
    for (int c = 0; c < L->out_dim; ++c) /* an absent class gets a very low, finite prior */
        b[c] = (float)log(counts[c] > 0 ? counts[c] / total : 1e-6 / (total > 0 ? total : 1.0));
}

nd_status nd_model_freeze(nd_model *model, int layers, nd_error *err) {
    if (layers < 0 || layers >= model->num_layers)
        return ND_FAIL(err, ND_ERR_ARG, "model: cannot freeze %d of %d layers: the output layer must stay trainable",
                       layers, model->num_layers);
    size_t end = model->num_trainable;
    for (int t = 0; t < model->num_tensors; ++t) {
        const nd_tensor *T = &model->tensor[t];
        const int stats = T->role == ND_TENSOR_BN_MEAN || T->role == ND_TENSOR_BN_VAR;
        if (!stats && T->layer >= layers && T->span.offset < end) end = T->span.offset;
    }
    model->frozen_layers = layers;
    model->frozen_end = end;
    return ND_OK;
}

void nd_model_bias_log_odds(nd_model *model, const double *positives, double rows) {
    const nd_layer *L = &model->layer[model->num_layers - 1];
    float *b = model->param + L->b.offset;
    for (int c = 0; c < L->out_dim; ++c) { /* an attribute never (or always) on gets a large, finite bias */
        const double p = fmin(fmax(rows > 0 ? positives[c] / rows : 0.5, 1e-6), 1.0 - 1e-6);
        b[c] = (float)log(p / (1.0 - p));
    }
}

void nd_model_set_grad_block(nd_model *model, size_t floats) {
    for (int l = 0; l < model->num_layers; ++l) {
        nd_layer *L = &model->layer[l];
        if (L->kind == ND_LAYER_CONV) { /* the gradient sums over the samples: final only at the end */
            L->grad_rows = L->geom.out_c;
            continue;
        }
        if (L->kind != ND_LAYER_DENSE) {
            L->grad_rows = 0;
            continue;
        }
        size_t rows = floats > 0 ? (floats + (size_t)L->in_dim - 1) / (size_t)L->in_dim : 1;
        if (rows >= 16) rows = (rows + 15) / 16 * 16; /* whole register tiles of the GEMM kernels */
        L->grad_rows = rows < (size_t)L->out_dim ? (int)rows : L->out_dim;
    }
}

double nd_model_train_flops_per_sample(const nd_model *model) {
    double flops = 0.0;
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_layer *L = &model->layer[l];
        double macs = 0.0; /* multiply-adds of the forward GEMMs */
        if (L->kind == ND_LAYER_DENSE) macs = (double)L->in_dim * L->out_dim;
        else if (L->kind == ND_LAYER_CONV) macs = (double)L->fan_in * L->out_dim;
        const double proj = L->proj ? (double)L->proj_geom.c * L->out_dim : 0.0;
        flops += (l > 0 ? 6.0 : 4.0) * macs + 6.0 * proj;
    }
    return flops;
}

void nd_model_zero_grad(nd_model *model) { memset(model->grad, 0, (model->num_params + ND_GRAD_TAIL) * sizeof(float)); }

const float *nd_model_activation(const nd_model *model, int l) { return model->act[l]; }

void nd_model_running_deltas(const nd_model *model, const float *param, float *grad, double rows, float momentum) {
    for (int l = model->frozen_layers; l < model->num_layers; ++l) { /* a frozen layer's stay */
        const nd_bn_site *sites[2] = {&model->layer[l].bn, &model->layer[l].proj_bn};
        for (int k = 0; k < 2; ++k) {
            const nd_bn_site *bn = sites[k];
            if (!bn->channels) continue;
            float *g1 = grad + bn->run_mean.offset, *g2 = grad + bn->run_var.offset;
            const float *rm = param + bn->run_mean.offset, *rv = param + bn->run_var.offset;
            const double count = rows * bn->spatial; /* values per channel in the global batch */
            for (int j = 0; j < bn->channels; ++j) {
                const double mean = g1[j] / rows;
                const double var = fmax(g2[j] / rows - mean * mean, 0.0) * (count > 1 ? count / (count - 1) : 1.0);
                g1[j] = momentum * (float)(mean - rm[j]);
                g2[j] = momentum * (float)(var - rv[j]);
            }
        }
    }
}

void nd_model_apply_running(const nd_model *model, float *param, float *grad, size_t lo, size_t hi) {
    if (lo < model->num_trainable) lo = model->num_trainable;
    if (hi > model->num_params) hi = model->num_params;
    for (size_t i = lo; i < hi; ++i) {
        param[i] += grad[i];
        grad[i] = 0.0f;
    }
}
