#include "nndist/model.h"

#include <math.h>
#include <string.h>

#include "nndist/rng.h"

/* Dense layers fuse an element-wise activation into their bias pass unless
 * batch norm or maxout comes between. */
static nd_activation fused_act(const nd_dense_layer *L) {
    if (L->batch_norm || L->act.kind == ND_ACT_MAXOUT) return (nd_activation){ND_ACT_IDENTITY, 0.0f};
    return L->act;
}

void nd_model_spec_plain(nd_model_spec *spec, int input_dim, const int *widths, int num_hidden, nd_activation act,
                         int num_classes) {
    memset(spec, 0, sizeof *spec);
    spec->input_dim = input_dim;
    spec->num_hidden = num_hidden;
    spec->num_classes = num_classes;
    for (int l = 0; l < num_hidden && l < ND_MAX_LAYERS - 1; ++l)
        spec->hidden[l] = (nd_hidden_spec){.width = widths[l], .act = act, .pieces = 1};
}

nd_status nd_model_create(nd_model *model, const nd_model_spec *spec, int max_batch, nd_error *err) {
    memset(model, 0, sizeof *model);
    if (spec->input_dim <= 0 || spec->num_classes <= 0)
        return ND_FAIL(err, ND_ERR_ARG, "model: input and output widths must be positive (got %d and %d)",
                       spec->input_dim, spec->num_classes);
    if (spec->num_hidden < 0 || spec->num_hidden > ND_MAX_LAYERS - 1)
        return ND_FAIL(err, ND_ERR_ARG, "model: %d hidden layers, at most %d are supported", spec->num_hidden,
                       ND_MAX_LAYERS - 1);
    if (max_batch <= 0) return ND_FAIL(err, ND_ERR_ARG, "model: batch must be positive");
    if (!(spec->input_drop >= 0.0f && spec->input_drop < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "model: input dropout %g must be in [0, 1)", (double)spec->input_drop);
    model->spec = *spec;
    if (!(model->spec.bn_eps > 0.0f)) model->spec.bn_eps = 1e-5f;
    model->num_layers = spec->num_hidden + 1;
    model->max_batch = max_batch;

    /* Trainable spans first, running statistics after them: the optimizer,
     * clipping and the norm then cover one prefix of the arena. */
    size_t total = 0;
    int in = spec->input_dim, widest = in;
    for (int l = 0; l < model->num_layers; ++l) {
        const int hidden = l < spec->num_hidden;
        const nd_hidden_spec h = hidden ? spec->hidden[l]
                                        : (nd_hidden_spec){spec->num_classes, {ND_ACT_IDENTITY, 0}, 1, 0, 0};
        const int pieces = h.act.kind == ND_ACT_MAXOUT ? h.pieces : 1;
        if (h.width <= 0 || pieces < 1 || pieces > 64 || (h.act.kind == ND_ACT_MAXOUT && pieces < 2))
            return ND_FAIL(err, ND_ERR_ARG, "model: layer %d has width %d and %d maxout pieces", l, h.width, pieces);
        if (!(h.drop >= 0.0f && h.drop < 1.0f))
            return ND_FAIL(err, ND_ERR_ARG, "model: layer %d dropout %g must be in [0, 1)", l, (double)h.drop);
        nd_dense_layer *L = &model->layer[l];
        L->in_dim = in;
        L->width = h.width;
        L->pieces = pieces;
        L->out_dim = h.width * pieces;
        L->act = h.act;
        L->batch_norm = h.batch_norm;
        L->drop = h.drop;
        L->w = nd_span_reserve(&total, (size_t)L->out_dim * in);
        L->b = nd_span_reserve(&total, (size_t)L->out_dim);
        model->num_weights += (size_t)L->out_dim * in + L->out_dim;
        if (L->batch_norm) {
            L->gamma = nd_span_reserve(&total, (size_t)L->out_dim);
            L->beta = nd_span_reserve(&total, (size_t)L->out_dim);
            model->num_weights += 2 * (size_t)L->out_dim;
        }
        if (L->out_dim > widest) widest = L->out_dim;
        in = h.width;
    }
    nd_model_set_grad_block(model, ND_GRAD_BLOCK_FLOATS);
    model->num_trainable = nd_span_reserve(&total, 0).offset;
    for (int l = 0; l < model->num_layers; ++l) {
        nd_dense_layer *L = &model->layer[l];
        if (!L->batch_norm) continue;
        L->run_mean = nd_span_reserve(&total, (size_t)L->out_dim);
        L->run_var = nd_span_reserve(&total, (size_t)L->out_dim);
    }
    model->num_params = total;
    model->max_width = widest;

    /* Workspace: sized in the same order as the views are handed out. */
    size_t acts = 0;
    const size_t B = (size_t)max_batch;
    nd_span zs[ND_MAX_LAYERS], xh[ND_MAX_LAYERS], bb[ND_MAX_LAYERS], as[ND_MAX_LAYERS];
    nd_span dout[ND_MAX_LAYERS + 1], dmask[ND_MAX_LAYERS + 1];
    const nd_span none = {0, 0};
    for (int l = 0; l <= model->num_layers; ++l) { /* dropout slot l: input (0) or layer l-1 */
        const float p = l == 0 ? spec->input_drop : model->layer[l - 1].drop;
        const int w = l == 0 ? spec->input_dim : model->layer[l - 1].width;
        dout[l] = p > 0.0f ? nd_span_reserve(&acts, B * w) : none;
        dmask[l] = p > 0.0f ? nd_span_reserve(&acts, B * w) : none;
    }
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_dense_layer *L = &model->layer[l];
        zs[l] = nd_span_reserve(&acts, B * L->out_dim);
        xh[l] = L->batch_norm ? nd_span_reserve(&acts, B * L->out_dim) : none;
        bb[l] = L->batch_norm ? nd_span_reserve(&acts, 3 * (size_t)L->out_dim + 1) : none;
        as[l] = L->pieces > 1 ? nd_span_reserve(&acts, B * L->width) : none;
    }
    const size_t delta_len = B * widest;
    nd_span d0 = nd_span_reserve(&acts, delta_len);
    nd_span d1 = nd_span_reserve(&acts, delta_len);

    model->param = nd_buffer_alloc(total);
    model->grad = nd_buffer_alloc(total + ND_GRAD_TAIL);
    model->workspace = nd_buffer_alloc(acts);
    model->workspace_floats = acts;
    if (!model->param || !model->grad || !model->workspace) {
        nd_model_destroy(model);
        return ND_FAIL(err, ND_ERR_NOMEM, "model: cannot allocate %zu parameters and %zu workspace floats", total,
                       acts);
    }
    float *ws = model->workspace;
    for (int l = 0; l <= model->num_layers; ++l) {
        model->drop_out[l] = dout[l].length ? ws + dout[l].offset : NULL;
        model->drop_mask[l] = dmask[l].length ? ws + dmask[l].offset : NULL;
    }
    for (int l = 0; l < model->num_layers; ++l) {
        model->z[l] = ws + zs[l].offset;
        model->xhat[l] = xh[l].length ? ws + xh[l].offset : NULL;
        model->bn_buf[l] = bb[l].length ? ws + bb[l].offset : NULL;
        model->act[l] = as[l].length ? ws + as[l].offset : model->z[l];
    }
    model->delta[0] = ws + d0.offset;
    model->delta[1] = ws + d1.offset;
    return ND_OK;
}

void nd_model_destroy(nd_model *model) {
    nd_buffer_free(model->param);
    nd_buffer_free(model->grad);
    nd_buffer_free(model->workspace);
    memset(model, 0, sizeof *model);
}

const char *const nd_init_names[] =
    {[ND_INIT_HE] = "he", [ND_INIT_XAVIER] = "xavier", [ND_INIT_LECUN] = "lecun", [ND_INIT_SMALL] = "small", NULL};

int nd_init_parse(const char *name, nd_init_kind *kind) {
    for (int k = 0; nd_init_names[k]; ++k)
        if (!strcmp(name, nd_init_names[k])) {
            *kind = (nd_init_kind)k;
            return 0;
        }
    return -1;
}

void nd_model_init_params(nd_model *model, uint64_t seed, nd_init_kind init) {
    memset(model->param, 0, model->num_params * sizeof(float));
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_dense_layer *L = &model->layer[l];
        nd_rng rng;
        nd_rng_seed(&rng, seed, 0x1417u, (uint64_t)l); /* one stream per layer */
        float *w = model->param + L->w.offset;
        const double fan_in = L->in_dim, fan_out = L->out_dim;
        /* He's gain for the layer's own activation (as PyTorch's
         * calculate_gain): sqrt(2) for ReLU, 1 for the linear output layer,
         * so the initial logits stay small and the initial loss near ln C. */
        double gain = 1.0;
        switch (L->act.kind) {
        case ND_ACT_RELU: gain = sqrt(2.0); break;
        case ND_ACT_LEAKY_RELU: gain = sqrt(2.0 / (1.0 + (double)L->act.alpha * L->act.alpha)); break;
        case ND_ACT_TANH: gain = 5.0 / 3.0; break;
        case ND_ACT_ELU: gain = sqrt(2.0); break; /* behaves like ReLU for x > 0 */
        case ND_ACT_SIGMOID:
        case ND_ACT_MAXOUT:
        case ND_ACT_IDENTITY: break;
        }
        for (size_t i = 0; i < L->w.length; ++i) {
            double x;
            switch (init) {
            case ND_INIT_XAVIER: x = sqrt(6.0 / (fan_in + fan_out)) * (2.0 * nd_rng_uniform(&rng) - 1.0); break;
            case ND_INIT_LECUN: x = (2.0 * nd_rng_uniform(&rng) - 1.0) / sqrt(fan_in); break;
            case ND_INIT_SMALL: x = 0.01 * nd_rng_normal(&rng); break;
            case ND_INIT_HE:
            default: x = gain / sqrt(fan_in) * nd_rng_normal(&rng); break;
            }
            w[i] = (float)x;
        }
        if (L->batch_norm)
            for (int j = 0; j < L->out_dim; ++j) {
                model->param[L->gamma.offset + j] = 1.0f;
                model->param[L->run_var.offset + j] = 1.0f;
            }
    }
}

void nd_model_bias_priors(nd_model *model, const double *counts) {
    const nd_dense_layer *L = &model->layer[model->num_layers - 1];
    double total = 0.0;
    for (int c = 0; c < L->out_dim; ++c) total += counts[c];
    float *b = model->param + L->b.offset;
    for (int c = 0; c < L->out_dim; ++c) /* an absent class gets a very low, finite prior */
        b[c] = (float)log(counts[c] > 0 ? counts[c] / total : 1e-6 / (total > 0 ? total : 1.0));
}

/* Dropout slot `slot` (0: input, l+1: layer l) on a training pass: its
 * stream mixes the step and the slot, its rows are the samples. */
static const float *dropout(nd_model *m, int slot, const float *x, int batch, int width, float p) {
    if (!m->trained || p <= 0.0f) return x;
    const uint64_t stream = (uint64_t)m->pass.step * (ND_MAX_LAYERS + 1) + (uint64_t)slot;
    nd_dropout_forward(m->drop_out[slot], m->drop_mask[slot], x, batch, width, p, m->pass.seed,
                       stream ^ 0xd809000000000000ull, m->pass.row_ids);
    return m->drop_out[slot];
}

const float *nd_model_forward(nd_model *model, const float *x, int batch, const nd_train_pass *pass) {
    model->trained = pass != NULL;
    model->pass_failed = 0;
    if (pass) model->pass = *pass;
    const float *in = dropout(model, 0, x, batch, model->spec.input_dim, model->spec.input_drop);
    const float *p = model->param;
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_dense_layer *L = &model->layer[l];
        float *z = model->z[l];
        nd_dense_forward(z, in, p + L->w.offset, p + L->b.offset, fused_act(L), batch, L->in_dim, L->out_dim);
        if (L->batch_norm && pass) {
            float *sums = model->bn_buf[l] + L->out_dim;
            if (nd_bn_forward_train(z, model->xhat[l], model->bn_buf[l], sums, p + L->gamma.offset, p + L->beta.offset,
                                    model->spec.bn_eps, batch, L->out_dim, pass->reduce, pass->reduce_ctx) != 0)
                model->pass_failed = 1;
            /* For the running statistics, this rank's share of the batch
             * sums rides in the gradient buffer, so the step's one allreduce
             * adds them (sums now holds the mean, the sum of squares and
             * the row count, global with --sync-bn): rows/batch of the
             * global sums each, which add up to the global sums again. */
            float *g1 = model->grad + L->run_mean.offset, *g2 = model->grad + L->run_var.offset;
            const float share = (float)batch / sums[2 * (size_t)L->out_dim];
            for (int j = 0; j < L->out_dim; ++j) {
                g1[j] += sums[j] * (float)batch;
                g2[j] += sums[L->out_dim + j] * share;
            }
        } else if (L->batch_norm) {
            nd_bn_forward_eval(z, p + L->gamma.offset, p + L->beta.offset, p + L->run_mean.offset,
                               p + L->run_var.offset, model->spec.bn_eps, batch, L->out_dim);
        }
        if (L->act.kind == ND_ACT_MAXOUT) nd_maxout_forward(model->act[l], z, batch, L->width, L->pieces);
        else if (L->batch_norm) nd_activation_forward(z, (size_t)batch * L->out_dim, L->act);
        in = l + 1 < model->num_layers ? dropout(model, l + 1, model->act[l], batch, L->width, L->drop) : model->act[l];
    }
    return model->act[model->num_layers - 1];
}

float *nd_model_output_grad(nd_model *model) { return model->delta[0]; }

const float *nd_model_activation(const nd_model *model, int l) { return model->act[l]; }

void nd_model_set_grad_block(nd_model *model, size_t floats) {
    for (int l = 0; l < model->num_layers; ++l) {
        nd_dense_layer *L = &model->layer[l];
        size_t rows = floats > 0 ? (floats + (size_t)L->in_dim - 1) / (size_t)L->in_dim : 1;
        if (rows >= 16) rows = (rows + 15) / 16 * 16; /* whole register tiles of the GEMM kernels */
        L->grad_rows = rows < (size_t)L->out_dim ? (int)rows : L->out_dim;
    }
}

void nd_model_backward(nd_model *model, const float *x, int batch) {
    int cur = 0;
    const float *p = model->param;
    float *g = model->grad;
    for (int l = model->num_layers - 1; l >= 0; --l) {
        const nd_dense_layer *L = &model->layer[l];
        float *d = model->delta[cur];
        const size_t nw = (size_t)batch * L->width, nz = (size_t)batch * L->out_dim;
        if (l + 1 < model->num_layers && L->drop > 0.0f) {
            const float *mask = model->drop_mask[l + 1];
            for (size_t i = 0; i < nw; ++i) d[i] *= mask[i];
        }
        if (L->act.kind == ND_ACT_MAXOUT) {
            nd_maxout_backward(model->delta[1 - cur], d, model->z[l], batch, L->width, L->pieces);
            cur = 1 - cur;
            d = model->delta[cur];
        } else if (L->batch_norm) {
            nd_activation_backward(d, model->z[l], nz, L->act);
        }
        if (L->batch_norm &&
            nd_bn_backward(d, g + L->gamma.offset, g + L->beta.offset, model->bn_buf[l] + L->out_dim, model->xhat[l],
                           model->bn_buf[l], p + L->gamma.offset, batch, L->out_dim, model->pass.reduce,
                           model->pass.reduce_ctx) != 0)
            model->pass_failed = 1;
        const float *in = l > 0 ? (L[-1].drop > 0.0f ? model->drop_out[l] : model->act[l - 1])
                                : (model->spec.input_drop > 0.0f ? model->drop_out[0] : x);
        nd_dense_backward_bias(d, model->z[l], g + L->b.offset, fused_act(L), batch, L->out_dim);
        /* Weight rows last to first, so the final part of the arena grows
         * downwards without gaps: each block can go on the wire while the
         * next block and the input gradient are computed. The blocks are the
         * same with or without the hook (grad_rows is fixed by the layer's
         * shape), so an overlapped step issues the very GEMMs of a plain one:
         * the bits cannot differ whatever kernel the BLAS picks. */
        const nd_grad_ready_fn ready = model->trained ? model->pass.grad_ready : NULL;
        for (int r1 = L->out_dim; r1 > 0;) {
            const int r0 = r1 > L->grad_rows ? r1 - L->grad_rows : 0;
            nd_dense_backward_weights(g + L->w.offset, d, in, batch, L->in_dim, L->out_dim, r0, r1);
            if (ready) ready(model->pass.ready_ctx, L->w.offset + (size_t)r0 * L->in_dim);
            r1 = r0;
        }
        if (l > 0) nd_dense_backward_input(model->delta[1 - cur], d, p + L->w.offset, batch, L->in_dim, L->out_dim);
        cur = 1 - cur;
    }
}

double nd_model_train_flops_per_sample(const nd_model *model) {
    double flops = 0.0;
    for (int l = 0; l < model->num_layers; ++l)
        flops += (l > 0 ? 6.0 : 4.0) * model->layer[l].in_dim * model->layer[l].out_dim;
    return flops;
}

void nd_model_zero_grad(nd_model *model) { memset(model->grad, 0, (model->num_params + ND_GRAD_TAIL) * sizeof(float)); }

void nd_model_running_deltas(const nd_model *model, const float *param, float *grad, double rows, float momentum) {
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_dense_layer *L = &model->layer[l];
        if (!L->batch_norm) continue;
        float *g1 = grad + L->run_mean.offset, *g2 = grad + L->run_var.offset;
        const float *rm = param + L->run_mean.offset, *rv = param + L->run_var.offset;
        for (int j = 0; j < L->out_dim; ++j) {
            const double mean = g1[j] / rows;
            const double var = fmax(g2[j] / rows - mean * mean, 0.0) * (rows > 1 ? rows / (rows - 1) : 1.0);
            g1[j] = momentum * (float)(mean - rm[j]);
            g2[j] = momentum * (float)(var - rv[j]);
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
