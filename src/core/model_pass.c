/* The forward and backward passes of a model (model.h). Each layer is its
 * linear part (dense, convolution, pooling), then batch norm, the
 * activation, the residual add and dropout; backward walks the same steps
 * in reverse with two ping-pong gradient buffers and, for a residual
 * block, one buffer carrying the skip path's gradient down to the block's
 * input. */
#include <string.h>

#include "nndist/model.h"

/* Layers fuse an element-wise activation into their bias pass unless batch
 * norm or maxout comes between. */
static nd_activation fused_act(const nd_layer *L) {
    if (L->batch_norm || L->act.kind == ND_ACT_MAXOUT) return (nd_activation){ND_ACT_IDENTITY, 0.0f};
    return L->act;
}

/* The input of layer l (batch x in_dim): after the dropout before it, which
 * only a training pass applies (inference leaves drop_out stale). */
static const float *layer_input(const nd_model *m, int l, const float *x) {
    if (l == 0) return m->trained && m->spec.input_drop > 0.0f ? m->drop_out[0] : x;
    return m->trained && m->layer[l - 1].drop > 0.0f ? m->drop_out[l] : m->act[l - 1];
}

/* Dropout slot `slot` (0: input, l+1: layer l) on a training pass: its
 * stream mixes the step and the slot, its rows are the samples. Channel
 * dropout draws one value per channel of an image. */
static const float *dropout(nd_model *m, int slot, const float *x, int batch, int width, float p, int channels,
                            nd_image_shape shape) {
    if (!m->trained || p <= 0.0f) return x;
    const uint64_t stream = ((uint64_t)m->pass.step * (ND_MAX_LAYERS + 1) + (uint64_t)slot) ^ 0xd809000000000000ull;
    if (channels && shape.c > 0)
        nd_dropout_channels_forward(m->drop_out[slot], m->drop_mask[slot], x, batch, shape.c, shape.h * shape.w, p,
                                    m->pass.seed, stream, m->pass.row_ids);
    else
        nd_dropout_forward(m->drop_out[slot], m->drop_mask[slot], x, batch, width, p, m->pass.seed, stream,
                           m->pass.row_ids);
    return m->drop_out[slot];
}

/* The weights dense layer l multiplies by: on a training pass with
 * DropConnect, the step's masked copy (one mask per step, drawn from
 * (seed, step, layer): every rank and micro-batch of a step shares it);
 * otherwise the weights themselves. */
static const float *dense_weights(nd_model *m, int l) {
    const nd_layer *L = &m->layer[l];
    const float *w = m->param + L->w.offset;
    if (!m->trained || L->drop_connect <= 0.0f) return w;
    const uint64_t stream = ((uint64_t)m->pass.step * ND_MAX_LAYERS + (uint64_t)l) ^ 0xdc0c000000000000ull;
    nd_dropconnect_forward(m->dc_w[l], m->dc_mask[l], w, L->out_dim, L->in_dim, L->drop_connect, m->pass.seed, stream);
    return m->dc_w[l];
}

/* Batch norm of x (batch x channels x spatial) in place, then a ReLU if
 * relu: on a training pass of a layer not frozen with the batch's statistics, whose share rides in the gradient
 * buffer's statistics region for the running averages; otherwise with the
 * running statistics. */
static void bn_forward(nd_model *m, int l, const nd_bn_site *bn, float *x, float *xhat, float *buf, int relu,
                       int batch) {
    const float *p = m->param;
    if (!m->trained || l < m->frozen_layers) {
        nd_bn_forward_eval(x, p + bn->gamma.offset, p + bn->beta.offset, p + bn->run_mean.offset,
                           p + bn->run_var.offset, m->spec.bn_eps, batch, bn->channels, bn->spatial);
        if (relu) nd_activation_forward(x, (size_t)batch * bn->channels * bn->spatial, (nd_activation){ND_ACT_RELU, 0});
        return;
    }
    float *sums = buf + bn->channels;
    if (nd_bn_forward_train(x, xhat, buf, sums, p + bn->gamma.offset, p + bn->beta.offset, m->spec.bn_eps, batch,
                            bn->channels, bn->spatial, relu, m->pass.reduce, m->pass.reduce_ctx) != 0)
        m->pass_failed = 1;
    /* For the running statistics, this rank's share of the batch sums rides
     * in the gradient buffer, so the step's one allreduce adds them (sums
     * now holds the mean, the sum of squares and the count, global with
     * --sync-bn): batch/count of the sums of squares, per sample, which add
     * up to the global per-sample figures again. */
    float *g1 = m->grad + bn->run_mean.offset, *g2 = m->grad + bn->run_var.offset;
    const float share = (float)batch / sums[2 * (size_t)bn->channels];
    for (int j = 0; j < bn->channels; ++j) {
        g1[j] += sums[j] * (float)batch;
        g2[j] += sums[bn->channels + j] * share;
    }
}

/* The skip path of a block ending at layer l: its input, or the input
 * projected by a 1x1 convolution (and batch norm). */
static const float *skip_forward(nd_model *m, int l, const float *x, int batch) {
    const nd_layer *L = &m->layer[l];
    const float *in = layer_input(m, L->res_from, x);
    if (!L->proj) return in;
    const float *p = m->param;
    nd_conv_forward(m->proj[l], in, p + L->proj_w.offset, p + L->proj_b.offset, (nd_activation){ND_ACT_IDENTITY, 0},
                    m->col, &L->proj_geom, batch);
    if (L->proj_bn.channels) bn_forward(m, l, &L->proj_bn, m->proj[l], m->proj_xhat[l], m->proj_bn_buf[l], 0, batch);
    return m->proj[l];
}

const float *nd_model_forward(nd_model *model, const float *x, int batch, const nd_train_pass *pass) {
    model->trained = pass != NULL;
    model->pass_failed = 0;
    if (pass) model->pass = *pass;
    const nd_image_shape image = model->spec.image;
    const float *in = dropout(model, 0, x, batch, model->spec.input_dim, model->spec.input_drop, 0, image);
    const float *p = model->param;
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_layer *L = &model->layer[l];
        float *z = model->z[l];
        switch (L->kind) {
        case ND_LAYER_DENSE:
            nd_dense_forward(z, in, dense_weights(model, l), p + L->b.offset, fused_act(L), batch, L->in_dim,
                             L->out_dim);
            break;
        case ND_LAYER_CONV:
            nd_conv_forward(z, in, p + L->w.offset, p + L->b.offset, fused_act(L), model->col, &L->geom, batch);
            break;
        case ND_LAYER_MAXPOOL:
            nd_maxpool_forward(z, model->trained ? model->pool_arg[l] : NULL, in, &L->geom, batch);
            break;
        case ND_LAYER_AVGPOOL: nd_avgpool_forward(z, in, &L->geom, batch); break;
        case ND_LAYER_GLOBAL_POOL: nd_global_avgpool_forward(z, in, batch, L->geom.c, L->geom.h * L->geom.w); break;
        }
        if (L->batch_norm) {
            const int relu = L->act.kind == ND_ACT_RELU; /* fused into the normalization's pass */
            bn_forward(model, l, &L->bn, z, model->xhat[l], model->bn_buf[l], relu, batch);
            if (!relu) nd_activation_forward(z, (size_t)batch * L->out_dim, L->act);
        }
        if (L->act.kind == ND_ACT_MAXOUT) nd_maxout_forward(model->act[l], z, batch, L->width, L->pieces);
        if (L->res_from >= 0) { /* act = res_act(body output + skip) */
            const float *skip = skip_forward(model, l, x, batch);
            float *out = model->act[l];
            const size_t n = (size_t)batch * L->width;
            for (size_t i = 0; i < n; ++i) out[i] = z[i] + skip[i];
            nd_activation_forward(out, n, L->res_act);
        }
        in = l + 1 < model->num_layers
            ? dropout(model, l + 1, model->act[l], batch, L->width, L->drop, L->drop_channels, L->out_shape)
            : model->act[l];
    }
    return model->act[model->num_layers - 1];
}

float *nd_model_output_grad(nd_model *model) { return model->delta[0]; }

/* The skip path's backward at the end of a block: d (batch x width) is
 * dL/d(body output + skip); the gradient it sends to the block's input goes
 * to skip_grad (not needed when the block starts at the model's input).
 * scratch (batch x width) is free. */
static void skip_backward(nd_model *m, int l, const float *x, const float *d, float *scratch, int batch) {
    const nd_layer *L = &m->layer[l];
    const size_t n = (size_t)batch * L->width;
    float *to = L->res_from > 0 ? m->skip_grad : NULL;
    if (!L->proj) {
        if (to) memcpy(to, d, sizeof(float) * n);
        return;
    }
    float *g = m->grad;
    memcpy(scratch, d, sizeof(float) * n);
    if (L->proj_bn.channels) {
        const nd_bn_site *bn = &L->proj_bn;
        if (nd_bn_backward(scratch, g + bn->gamma.offset, g + bn->beta.offset, m->proj_bn_buf[l] + bn->channels,
                           m->proj_xhat[l], m->proj_bn_buf[l], m->param + bn->gamma.offset, NULL, batch, bn->channels,
                           bn->spatial, m->pass.reduce, m->pass.reduce_ctx) != 0)
            m->pass_failed = 1;
    }
    const nd_activation identity = {ND_ACT_IDENTITY, 0.0f};
    nd_conv_backward_bias(scratch, scratch, g + L->proj_b.offset, identity, &L->proj_geom, batch);
    nd_conv_backward(to, g + L->proj_w.offset, scratch, layer_input(m, L->res_from, x), m->param + L->proj_w.offset,
                     m->col, &L->proj_geom, batch);
}

/* DropConnect's backward of dense layer l (its bias done): the input
 * gradient through the masked weights first, then their buffer becomes the
 * scratch of each block of the masked weights' gradient, which reaches
 * the weights' gradient through the mask (grad accumulates, as plain
 * backward does). */
static void dropconnect_backward(nd_model *m, int l, const float *in, const float *d, float *din, int batch) {
    const nd_layer *L = &m->layer[l];
    const nd_grad_ready_fn ready = m->pass.grad_ready;
    float *gw = m->grad + L->w.offset, *scratch = m->dc_w[l];
    const float *mask = m->dc_mask[l];
    if (din) nd_dense_backward_input(din, d, m->dc_w[l], batch, L->in_dim, L->out_dim);
    for (int r1 = L->out_dim; r1 > 0;) {
        const int r0 = r1 > L->grad_rows ? r1 - L->grad_rows : 0;
        const size_t lo = (size_t)r0 * L->in_dim, hi = (size_t)r1 * L->in_dim;
        memset(scratch + lo, 0, sizeof(float) * (hi - lo));
        nd_dense_backward_weights(scratch, d, in, batch, L->in_dim, L->out_dim, r0, r1);
        for (size_t i = lo; i < hi; ++i) gw[i] += mask[i] * scratch[i];
        if (ready) ready(m->pass.ready_ctx, L->w.offset + lo);
        r1 = r0;
    }
}

/* The weights, bias and input gradient of layer l's linear part; d is
 * dL/d(its output) after the activation's and batch norm's backward. din
 * (batch x in_dim) is written, NULL for the first layer. */
static void linear_backward(nd_model *m, int l, const float *in, float *d, float *din, int batch) {
    const nd_layer *L = &m->layer[l];
    const float *p = m->param;
    float *g = m->grad;
    const nd_grad_ready_fn ready = m->trained ? m->pass.grad_ready : NULL;
    switch (L->kind) {
    case ND_LAYER_DENSE:
        nd_dense_backward_bias(d, m->z[l], g + L->b.offset, fused_act(L), batch, L->out_dim);
        if (m->trained && L->drop_connect > 0.0f) {
            dropconnect_backward(m, l, in, d, din, batch);
            return;
        }
        /* Weight rows last to first, so the final part of the arena grows
         * downwards without gaps: each block can go on the wire while the
         * next block and the input gradient are computed. The blocks are
         * the same with or without the hook (grad_rows is fixed by the
         * layer's shape), so an overlapped step issues the very GEMMs of a
         * plain one: the bits cannot differ whatever kernel the BLAS picks. */
        for (int r1 = L->out_dim; r1 > 0;) {
            const int r0 = r1 > L->grad_rows ? r1 - L->grad_rows : 0;
            nd_dense_backward_weights(g + L->w.offset, d, in, batch, L->in_dim, L->out_dim, r0, r1);
            if (ready) ready(m->pass.ready_ctx, L->w.offset + (size_t)r0 * L->in_dim);
            r1 = r0;
        }
        if (din) nd_dense_backward_input(din, d, p + L->w.offset, batch, L->in_dim, L->out_dim);
        return;
    case ND_LAYER_CONV:
        nd_conv_backward_bias(d, m->z[l], g + L->b.offset, fused_act(L), &L->geom, batch);
        nd_conv_backward(din, g + L->w.offset, d, in, p + L->w.offset, m->col, &L->geom, batch);
        if (ready) ready(m->pass.ready_ctx, L->w.offset);
        return;
    case ND_LAYER_MAXPOOL:
        if (din) nd_maxpool_backward(din, d, m->pool_arg[l], &L->geom, batch);
        return;
    case ND_LAYER_AVGPOOL:
        if (din) nd_avgpool_backward(din, d, &L->geom, batch);
        return;
    case ND_LAYER_GLOBAL_POOL:
        if (din) nd_global_avgpool_backward(din, d, batch, L->geom.c, L->geom.h * L->geom.w);
        return;
    }
}

void nd_model_backward(nd_model *model, const float *x, int batch) {
    int cur = 0;
    int block_from = -1; /* the layer whose input receives skip_grad */
    float *g = model->grad;
    for (int l = model->num_layers - 1; l >= model->frozen_layers; --l) {
        const nd_layer *L = &model->layer[l];
        float *d = model->delta[cur];
        const size_t nw = (size_t)batch * L->width, nz = (size_t)batch * L->out_dim;
        if (l + 1 < model->num_layers && L->drop > 0.0f) {
            const float *mask = model->drop_mask[l + 1];
            for (size_t i = 0; i < nw; ++i) d[i] *= mask[i];
        }
        if (L->res_from >= 0) {
            nd_activation_backward(d, model->act[l], nw, L->res_act);
            skip_backward(model, l, x, d, model->delta[1 - cur], batch);
            block_from = L->res_from;
        }
        if (L->act.kind == ND_ACT_MAXOUT) {
            nd_maxout_backward(model->delta[1 - cur], d, model->z[l], batch, L->width, L->pieces);
            cur = 1 - cur;
            d = model->delta[cur];
        } else if (L->batch_norm && L->act.kind != ND_ACT_RELU) { /* a ReLU is fused into bn's backward */
            nd_activation_backward(d, model->z[l], nz, L->act);
        }
        if (L->batch_norm) {
            const nd_bn_site *bn = &L->bn;
            const float *relu_out = L->act.kind == ND_ACT_RELU ? model->z[l] : NULL;
            if (nd_bn_backward(d, g + bn->gamma.offset, g + bn->beta.offset, model->bn_buf[l] + bn->channels,
                               model->xhat[l], model->bn_buf[l], model->param + bn->gamma.offset, relu_out, batch,
                               bn->channels, bn->spatial, model->pass.reduce, model->pass.reduce_ctx) != 0)
                model->pass_failed = 1;
        }
        float *din = l > model->frozen_layers ? model->delta[1 - cur] : NULL; /* none into a frozen layer */
        linear_backward(model, l, layer_input(model, l, x), d, din, batch);
        if (l == block_from) {
            if (din) {
                const size_t n = (size_t)batch * L->in_dim;
                for (size_t i = 0; i < n; ++i) din[i] += model->skip_grad[i];
            }
            block_from = -1;
        }
        cur = 1 - cur;
    }
}
