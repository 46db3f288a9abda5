#include "nndist/model.h"

#include <math.h>
#include <string.h>

#include "nndist/rng.h"

nd_status nd_model_create(nd_model *model, const nd_model_spec *spec, int max_batch,
                          nd_error *err) {
    memset(model, 0, sizeof *model);
    if (spec->input_dim <= 0 || spec->num_classes <= 0)
        return ND_FAIL(err, ND_ERR_ARG, "model: input and output widths must be positive (got %d and %d)",
                       spec->input_dim, spec->num_classes);
    if (spec->num_hidden < 0 || spec->num_hidden > ND_MAX_LAYERS - 1)
        return ND_FAIL(err, ND_ERR_ARG, "model: %d hidden layers, at most %d are supported",
                       spec->num_hidden, ND_MAX_LAYERS - 1);
    if (max_batch <= 0) return ND_FAIL(err, ND_ERR_ARG, "model: batch must be positive");
    model->spec = *spec;
    model->num_layers = spec->num_hidden + 1;
    model->max_batch = max_batch;

    size_t total = 0, acts = 0;
    int in = spec->input_dim, widest = in;
    for (int l = 0; l < model->num_layers; ++l) {
        int out = l < spec->num_hidden ? spec->hidden[l] : spec->num_classes;
        if (out <= 0)
            return ND_FAIL(err, ND_ERR_ARG, "model: layer %d has width %d, must be positive", l, out);
        nd_dense_layer *L = &model->layer[l];
        L->in_dim = in;
        L->out_dim = out;
        L->w = nd_span_reserve(&total, (size_t)out * in);
        L->b = nd_span_reserve(&total, (size_t)out);
        L->act = l < spec->num_hidden ? spec->act : (nd_activation){ND_ACT_IDENTITY, 0.0f};
        model->num_weights += (size_t)out * in + out;
        nd_span_reserve(&acts, (size_t)max_batch * out);
        if (out > widest) widest = out;
        in = out;
    }
    model->num_params = total;
    model->max_width = widest;
    size_t delta_len = (size_t)max_batch * widest;
    nd_span d0 = nd_span_reserve(&acts, delta_len);
    nd_span d1 = nd_span_reserve(&acts, delta_len);

    model->param = nd_buffer_alloc(total);
    model->grad = nd_buffer_alloc(total + ND_GRAD_TAIL);
    model->workspace = nd_buffer_alloc(acts);
    if (!model->param || !model->grad || !model->workspace) {
        nd_model_destroy(model);
        return ND_FAIL(err, ND_ERR_NOMEM, "model: cannot allocate %zu parameters and %zu workspace floats",
                       total, acts);
    }
    size_t off = 0;
    for (int l = 0; l < model->num_layers; ++l) {
        nd_span s = nd_span_reserve(&off, (size_t)max_batch * model->layer[l].out_dim);
        model->out[l] = model->workspace + s.offset;
    }
    model->delta[0] = model->workspace + d0.offset;
    model->delta[1] = model->workspace + d1.offset;
    return ND_OK;
}

void nd_model_destroy(nd_model *model) {
    nd_buffer_free(model->param);
    nd_buffer_free(model->grad);
    nd_buffer_free(model->workspace);
    memset(model, 0, sizeof *model);
}

int nd_init_parse(const char *name, nd_init_kind *kind) {
    static const char *const names[] = {"he", "xavier", "lecun", "small"};
    for (int k = 0; k < 4; ++k)
        if (!strcmp(name, names[k])) {
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
        case ND_ACT_SIGMOID:
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

const float *nd_model_forward(nd_model *model, const float *x, int batch) {
    const float *in = x;
    for (int l = 0; l < model->num_layers; ++l) {
        const nd_dense_layer *L = &model->layer[l];
        nd_dense_forward(model->out[l], in, model->param + L->w.offset,
                         model->param + L->b.offset, L->act, batch, L->in_dim, L->out_dim);
        in = model->out[l];
    }
    return model->out[model->num_layers - 1];
}

float *nd_model_output_grad(nd_model *model) { return model->delta[0]; }

void nd_model_backward(nd_model *model, const float *x, int batch) {
    int cur = 0;
    for (int l = model->num_layers - 1; l >= 0; --l) {
        const nd_dense_layer *L = &model->layer[l];
        const float *in = l > 0 ? model->out[l - 1] : x;
        float *din = l > 0 ? model->delta[1 - cur] : NULL;
        nd_dense_backward(din, model->grad + L->w.offset, model->grad + L->b.offset,
                          model->delta[cur], model->out[l], in, model->param + L->w.offset,
                          L->act, batch, L->in_dim, L->out_dim);
        cur = 1 - cur;
    }
}

void nd_model_zero_grad(nd_model *model) {
    memset(model->grad, 0, (model->num_params + ND_GRAD_TAIL) * sizeof(float));
}
