/* The recipe's layers and losses: every architecture/activation/loss
 * combination against the double-precision checker (which must also catch
 * a broken backward), dropout and batch-norm semantics, the architecture
 * text, and the losses against hand-computed values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/gradcheck.h"
#include "nndist/layers.h"
#include "nndist/loss.h"
#include "nndist/model.h"
#include "nndist/rng.h"

enum { IN = 7, ROWS = 6, K = 4 };

static void parse(const char *arch, nd_model_spec *spec) {
    char why[200] = "";
    if (nd_arch_parse(arch, (nd_activation){ND_ACT_RELU, 0.0f}, spec, why, sizeof why) != 0)
        fail_msg("%s: %s", arch, why);
}

/* A model of arch with seeded weights, biases and batch-norm parameters
 * away from their symmetric start; data x (ROWS x IN), labels and 0/1 or
 * real targets. */
typedef struct {
    nd_model m;
    float x[ROWS * IN], t[ROWS * K];
    int y[ROWS];
} fixture;

static void setup(fixture *f, const char *arch, int binary_targets) {
    nd_model_spec spec;
    parse(arch, &spec);
    nd_error err = {0};
    assert_int_equal(nd_model_create(&f->m, &spec, ROWS, &err), ND_OK);
    nd_model_init_params(&f->m, 3, ND_INIT_XAVIER);
    nd_rng rng;
    nd_rng_seed(&rng, 11, 0, 0);
    for (int l = 0; l < f->m.num_layers; ++l) {
        const nd_layer *L = &f->m.layer[l];
        for (size_t i = 0; i < L->b.length; ++i) f->m.param[L->b.offset + i] = 0.3f * (float)nd_rng_normal(&rng);
        for (size_t i = 0; i < L->bn.gamma.length; ++i) {
            f->m.param[L->bn.gamma.offset + i] = 1.0f + 0.3f * (float)nd_rng_normal(&rng);
            f->m.param[L->bn.beta.offset + i] = 0.3f * (float)nd_rng_normal(&rng);
        }
    }
    for (int i = 0; i < ROWS * IN; ++i) f->x[i] = (float)nd_rng_normal(&rng);
    for (int i = 0; i < ROWS; ++i) f->y[i] = (int)nd_rng_below(&rng, K);
    for (int i = 0; i < ROWS * K; ++i)
        f->t[i] = binary_targets ? (float)nd_rng_below(&rng, 2) : (float)nd_rng_normal(&rng);
}

/* Analytic gradient of a training pass at step `step` into m.grad. */
static void backprop(fixture *f, nd_loss_kind loss, long step) {
    const nd_train_pass pass = {.seed = 5, .step = step};
    nd_model_zero_grad(&f->m);
    const float *out = nd_model_forward(&f->m, f->x, ROWS, &pass);
    nd_loss_apply(loss, nd_model_output_grad(&f->m), out, f->y, f->t, ROWS, K);
    nd_model_backward(&f->m, f->x, ROWS);
}

static double worst_error(fixture *f, nd_loss_kind loss, int *groups) {
    nd_gradcheck_group g[ND_GRADCHECK_MAX_GROUPS];
    *groups = nd_gradcheck_run(&f->m, f->m.grad, f->x, ROWS, loss, f->y, f->t, 25, 1, 1e-5, 1e-2, 1e-2, g);
    double worst = 0.0;
    for (int i = 0; i < *groups; ++i) {
        assert_true(g[i].checked > 0);
        worst = fmax(worst, g[i].max_rel);
    }
    if (worst > ND_GRADCHECK_FAIL_ABOVE)
        for (int i = 0; i < *groups; ++i)
            print_message("    %s: %d checked, %d at kinks, worst %.2e\n", g[i].name, g[i].checked, g[i].kinks,
                          g[i].max_rel);
    return worst;
}

static const char *const archs[] = {
    "7-5:relu-4",
    "7-6:leaky_relu0.1-5:elu0.7-4",
    "7-6:tanh-5:sigmoid-4",
    "7-5:maxout3-4",
    "7-6:bn:relu-5:bn:elu-4",
    "7-6:bn:tanh-5:bn:maxout2-4",
    "7-5:bn:sigmoid-4",
    "7:drop0.25-6:bn:relu:drop0.5-5:leaky_relu:drop0.2-4",
    "7:drop0.1-6:maxout2:drop0.3-4",
    "7-6:dc0.4:relu-5:dc0.3:bn:tanh:drop0.2-4",
};

static void test_gradcheck_every_combination(void **state) {
    (void)state;
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; ++a)
        for (int loss = ND_LOSS_SOFTMAX_CE; loss <= ND_LOSS_BINARY_HINGE; ++loss) {
            fixture f;
            setup(&f, archs[a], nd_loss_multilabel((nd_loss_kind)loss));
            backprop(&f, (nd_loss_kind)loss, 3);
            int groups = 0;
            const double worst = worst_error(&f, (nd_loss_kind)loss, &groups);
            int expect = 2; /* both penalties */
            for (int l = 0; l < f.m.num_layers; ++l) expect += f.m.layer[l].batch_norm ? 4 : 2;
            print_message("  %-52s %-13s %d groups, worst %.2e\n", archs[a], nd_loss_name((nd_loss_kind)loss), groups,
                          worst);
            assert_int_equal(groups, expect); /* every layer's W, b (and gamma, beta) */
            assert_true(worst <= ND_GRADCHECK_FAIL_ABOVE);
            nd_model_destroy(&f.m);
        }
}

/* The checker is not blind: a batch-norm scale gradient off by 2%, a
 * dropout backward that uses another step's masks, and a hinge gradient
 * with one sign flipped are each reported above the pass mark. */
static void test_gradcheck_catches_broken_backward(void **state) {
    (void)state;
    fixture f;
    int groups;
    setup(&f, "7-6:bn:relu-5:bn:elu-4", 0);
    backprop(&f, ND_LOSS_SOFTMAX_CE, 3);
    const nd_span gs = f.m.layer[1].bn.gamma;
    for (size_t i = 0; i < gs.length; ++i) f.m.grad[gs.offset + i] *= 1.02f;
    const double e1 = worst_error(&f, ND_LOSS_SOFTMAX_CE, &groups);
    nd_model_destroy(&f.m);

    setup(&f, "7:drop0.3-6:relu:drop0.5-4", 0);
    backprop(&f, ND_LOSS_SOFTMAX_CE, 4); /* gradient of step 4's masks ... */
    float saved[512];
    assert_true(f.m.num_params <= 512);
    memcpy(saved, f.m.grad, sizeof(float) * f.m.num_params);
    const nd_train_pass pass = {.seed = 5, .step = 3};
    nd_model_forward(&f.m, f.x, ROWS, &pass); /* ... checked against step 3's */
    memcpy(f.m.grad, saved, sizeof(float) * f.m.num_params);
    const double e2 = worst_error(&f, ND_LOSS_SOFTMAX_CE, &groups);
    nd_model_destroy(&f.m);

    setup(&f, "7-5:relu-4", 0);
    backprop(&f, ND_LOSS_HINGE, 0);
    f.m.grad[f.m.layer[1].b.offset + 2] *= -1.0f;
    const double e3 = worst_error(&f, ND_LOSS_HINGE, &groups);
    nd_model_destroy(&f.m);
    print_message("  broken backward: bn gamma x1.02 -> %.2e, other dropout masks -> %.2e, flipped sign -> %.2e\n", e1,
                  e2, e3);
    assert_true(e1 > ND_GRADCHECK_FAIL_ABOVE);
    assert_true(e2 > ND_GRADCHECK_FAIL_ABOVE);
    assert_true(e3 > ND_GRADCHECK_FAIL_ABOVE);
}

/* Inference ignores dropout: the output equals the same network built
 * without it, bit for bit. Training draws masks per (seed, step, row). */
static void test_dropout_inference_and_training(void **state) {
    (void)state;
    fixture a, b;
    setup(&a, "7:drop0.4-6:tanh:drop0.5-5:relu:drop0.3-4", 0);
    setup(&b, "7-6:tanh-5:relu-4", 0);
    assert_int_equal(a.m.num_params, b.m.num_params);
    memcpy(b.m.param, a.m.param, sizeof(float) * a.m.num_params);
    const float *oa = nd_model_forward(&a.m, a.x, ROWS, NULL);
    const float *ob = nd_model_forward(&b.m, a.x, ROWS, NULL);
    assert_memory_equal(oa, ob, sizeof(float) * ROWS * K);
    /* A training pass differs, and repeats exactly for the same step. */
    float first[ROWS * K];
    const nd_train_pass pass = {.seed = 9, .step = 17};
    memcpy(first, nd_model_forward(&a.m, a.x, ROWS, &pass), sizeof first);
    assert_true(memcmp(first, ob, sizeof first) != 0);
    assert_memory_equal(first, nd_model_forward(&a.m, a.x, ROWS, &pass), sizeof first);
    nd_model_destroy(&a.m);
    nd_model_destroy(&b.m);

    /* Expected activation unchanged: E[x * mask] = x, P(mask = 0) = p. */
    enum { R = 400, N = 500 };
    float *x = malloc(sizeof(float) * R * N), *out = malloc(sizeof(float) * R * N),
          *mask = malloc(sizeof(float) * R * N);
    for (int i = 0; i < R * N; ++i) x[i] = 1.0f + (float)(i % 7);
    long ids[R];
    for (int i = 0; i < R; ++i) ids[i] = 1000 + i;
    nd_dropout_forward(out, mask, x, R, N, 0.3f, 42, 7, ids);
    double sum_in = 0, sum_out = 0, zeros = 0;
    for (int i = 0; i < R * N; ++i) sum_in += x[i], sum_out += out[i], zeros += mask[i] == 0.0f;
    print_message("  dropout p=0.3: mean out/in %.4f, dropped %.4f\n", sum_out / sum_in, zeros / (R * N));
    assert_true(fabs(sum_out / sum_in - 1.0) < 0.01);
    assert_true(fabs(zeros / (R * N) - 0.3) < 0.005);
    for (int i = 0; i < R * N; ++i) assert_true(mask[i] == 0.0f || mask[i] == 1.0f / 0.7f);
    /* A row's mask depends on its sample id, not its position in the batch. */
    float out2[N], mask2[N];
    const long id = ids[123];
    nd_dropout_forward(out2, mask2, x + 123 * N, 1, N, 0.3f, 42, 7, &id);
    assert_memory_equal(mask2, mask + 123 * N, sizeof mask2);
    free(x), free(out), free(mask);
}

/* Training normalizes with the batch; inference with the running
 * statistics; the running update takes the batch mean and unbiased
 * variance with the given momentum. */
/* DropConnect against a direct computation: one mask for the batch, its
 * values 0 or 1/(1-p) and a pure function of (seed, step, layer); the
 * training pass equals a plain network whose weights are the masked ones,
 * whose weight gradient, masked, is DropConnect's; inference is the plain
 * network on the unmasked weights, bit for bit. */
static void test_dropconnect(void **state) {
    (void)state;
    fixture f, plain;
    setup(&f, "7-9:dc0.5:tanh-4", 0);
    setup(&plain, "7-9:tanh-4", 0);
    assert_int_equal(f.m.num_params, plain.m.num_params);
    const nd_layer *L = &f.m.layer[0];
    const size_t nw = L->w.length;
    const nd_train_pass pass = {.seed = 5, .step = 3};
    const float *out = nd_model_forward(&f.m, f.x, ROWS, &pass);
    float *mask = malloc(sizeof(float) * nw), *dc_out = malloc(sizeof(float) * ROWS * K);
    memcpy(mask, f.m.dc_mask[0], sizeof(float) * nw);
    memcpy(dc_out, out, sizeof(float) * ROWS * K);
    size_t dropped = 0;
    for (size_t i = 0; i < nw; ++i) {
        assert_true(mask[i] == 0.0f || mask[i] == 2.0f);
        dropped += mask[i] == 0.0f;
    }
    print_message("  dc0.5: %zu of %zu weights dropped\n", dropped, nw);
    assert_true(dropped > nw / 5 && dropped < nw * 4 / 5);
    /* The hidden activation, directly: tanh(b + sum_k W M x) for every row. */
    const float *act = nd_model_activation(&f.m, 0), *w = f.m.param + L->w.offset, *b = f.m.param + L->b.offset;
    for (int i = 0; i < ROWS; ++i)
        for (int o = 0; o < L->out_dim; ++o) {
            double s = b[o];
            for (int k = 0; k < IN; ++k) s += (double)w[o * IN + k] * mask[o * IN + k] * f.x[i * IN + k];
            assert_float_equal(act[i * L->out_dim + o], tanh(s), 1e-5);
        }
    /* The same step draws the same mask; another step another. */
    nd_model_forward(&f.m, f.x, ROWS, &pass);
    assert_memory_equal(mask, f.m.dc_mask[0], sizeof(float) * nw);
    const nd_train_pass next = {.seed = 5, .step = 4};
    nd_model_forward(&f.m, f.x, ROWS, &next);
    assert_true(memcmp(mask, f.m.dc_mask[0], sizeof(float) * nw) != 0);
    /* Backward: against the plain network holding the masked weights. */
    backprop(&f, ND_LOSS_SOFTMAX_CE, 3);
    memcpy(plain.m.param, f.m.param, sizeof(float) * f.m.num_params);
    for (size_t i = 0; i < nw; ++i) plain.m.param[L->w.offset + i] = w[i] * mask[i];
    backprop(&plain, ND_LOSS_SOFTMAX_CE, 3);
    const float *plain_out = nd_model_activation(&plain.m, 1);
    for (int i = 0; i < ROWS * K; ++i) assert_float_equal(plain_out[i], dc_out[i], 1e-6);
    for (size_t i = 0; i < f.m.num_params; ++i) {
        const int in_w = i >= L->w.offset && i < L->w.offset + nw;
        const double want = in_w ? (double)plain.m.grad[i] * mask[i - L->w.offset] : plain.m.grad[i];
        assert_float_equal(f.m.grad[i], want, 1e-6);
    }
    /* Inference: the unmasked weights, as a network without DropConnect. */
    memcpy(plain.m.param, f.m.param, sizeof(float) * f.m.num_params);
    const float *a = nd_model_forward(&f.m, f.x, ROWS, NULL);
    memcpy(dc_out, a, sizeof(float) * ROWS * K);
    assert_memory_equal(dc_out, nd_model_forward(&plain.m, plain.x, ROWS, NULL), sizeof(float) * ROWS * K);
    free(mask), free(dc_out);
    nd_model_destroy(&f.m), nd_model_destroy(&plain.m);
}

static void test_batch_norm_modes(void **state) {
    (void)state;
    fixture f;
    setup(&f, "7-3:bn:identity-4", 0);
    nd_model *m = &f.m;
    const nd_layer *L = &m->layer[0];
    for (int j = 0; j < 3; ++j) m->param[L->bn.gamma.offset + j] = 1.0f, m->param[L->bn.beta.offset + j] = 0.0f;
    const nd_train_pass pass = {.seed = 1};
    nd_model_zero_grad(m);
    nd_model_forward(m, f.x, ROWS, &pass);
    const float *a = nd_model_activation(m, 0);
    double dense[ROWS][3];
    for (int i = 0; i < ROWS; ++i)
        for (int j = 0; j < 3; ++j) {
            double z = m->param[L->b.offset + j];
            for (int k = 0; k < IN; ++k) z += (double)m->param[L->w.offset + j * IN + k] * f.x[i * IN + k];
            dense[i][j] = z;
        }
    for (int j = 0; j < 3; ++j) {
        double mean = 0, var = 0, zm = 0, zv = 0;
        for (int i = 0; i < ROWS; ++i) mean += a[i * 3 + j], zm += dense[i][j];
        mean /= ROWS, zm /= ROWS;
        for (int i = 0; i < ROWS; ++i) var += pow(a[i * 3 + j] - mean, 2), zv += pow(dense[i][j] - zm, 2);
        assert_true(fabs(mean) < 1e-5);
        assert_true(fabs(var / ROWS - zv / ROWS / (zv / ROWS + 1e-5)) < 1e-4);
    }
    /* The running update with momentum 1 lands on the batch's statistics. */
    nd_model_running_deltas(m, m->param, m->grad, ROWS, 1.0f);
    nd_model_apply_running(m, m->param, m->grad, 0, m->num_params);
    for (int j = 0; j < 3; ++j) {
        double zm = 0, zv = 0;
        for (int i = 0; i < ROWS; ++i) zm += dense[i][j];
        zm /= ROWS;
        for (int i = 0; i < ROWS; ++i) zv += pow(dense[i][j] - zm, 2);
        assert_float_equal(m->param[L->bn.run_mean.offset + j], zm, 1e-4);
        assert_float_equal(m->param[L->bn.run_var.offset + j], zv / (ROWS - 1), 1e-3 * (1 + zv));
        assert_true(m->grad[L->bn.run_mean.offset + j] == 0.0f && m->grad[L->bn.run_var.offset + j] == 0.0f);
    }
    /* Inference: (z - running mean) / sqrt(running var + eps) * gamma + beta. */
    for (int j = 0; j < 3; ++j) {
        m->param[L->bn.run_mean.offset + j] = 0.5f * j;
        m->param[L->bn.run_var.offset + j] = 2.0f + j;
        m->param[L->bn.gamma.offset + j] = 1.5f;
        m->param[L->bn.beta.offset + j] = -0.25f;
    }
    nd_model_forward(m, f.x, ROWS, NULL);
    a = nd_model_activation(m, 0);
    for (int i = 0; i < ROWS; ++i)
        for (int j = 0; j < 3; ++j) {
            const double want = 1.5 * (dense[i][j] - 0.5 * j) / sqrt(2.0 + j + 1e-5) - 0.25;
            assert_float_equal(a[i * 3 + j], want, 1e-5 * (1 + fabs(want)));
        }
    nd_model_destroy(m);
}

static void test_arch_text(void **state) {
    (void)state;
    nd_model_spec s;
    parse("784:drop0.2-1024:bn:relu:drop0.3-512:maxout3-256:elu0.5-10", &s);
    assert_int_equal(s.input_dim, 784);
    assert_true(s.input_drop == 0.2f);
    assert_int_equal(s.num_hidden, 3);
    assert_int_equal(s.hidden[0].width, 1024);
    assert_int_equal(s.hidden[0].batch_norm, 1);
    assert_true(s.hidden[0].drop == 0.3f);
    assert_int_equal(s.hidden[1].act.kind, ND_ACT_MAXOUT);
    assert_int_equal(s.hidden[1].pieces, 3);
    assert_true(s.hidden[2].act.kind == ND_ACT_ELU && s.hidden[2].act.alpha == 0.5f);
    assert_int_equal(s.num_classes, 10);
    char text[512];
    nd_arch_format(&s, text, sizeof text);
    assert_string_equal(text, "784:drop0.2-1024:bn:relu:drop0.3-512:maxout3-256:elu0.5-10");
    nd_model_spec back;
    parse(text, &back);
    assert_memory_equal(&s, &back, sizeof s);
    /* DropConnect's token goes with the dense part, before batch norm. */
    parse("784-64:bn:relu:dc0.5-10", &s);
    assert_true(s.hidden[0].drop_connect == 0.5f);
    nd_arch_format(&s, text, sizeof text);
    assert_string_equal(text, "784-64:dc0.5:bn:relu-10");
    /* The default activation fills in; a maxout layer's dense part is wider. */
    char why[200];
    assert_int_equal(nd_arch_parse("5-3-2", (nd_activation){ND_ACT_TANH, 0}, &s, why, sizeof why), 0);
    assert_int_equal(s.hidden[0].act.kind, ND_ACT_TANH);
    nd_model m;
    nd_error err = {0};
    parse("5-3:maxout4-2", &s);
    assert_int_equal(nd_model_create(&m, &s, 2, &err), ND_OK);
    assert_int_equal(m.layer[0].out_dim, 12);
    assert_int_equal(m.layer[1].in_dim, 3);
    nd_model_destroy(&m);
    static const struct {
        const char *text, *why;
    } bad[] = {{"784", "at least an input and an output"},
               {"784-10:relu", "output group"},
               {"784-x-10", "is not a layer"},
               {"784-64:drop1.5-10", "probability in [0, 1)"},
               {"784-64:swish-10", "is not bn"},
               {"784-64:maxout1-10", "2 to 64 pieces"},
               {"784:bn-10", "input group takes only"},
               {"784-64:relu:tanh-10", "one activation"},
               {"784-64:leaky_relu2-10", "in (0, 1)"},
               {"784-64;10", "unexpected"},
               {"784-64:dc1.5-10", "DropConnect takes a probability in [0, 1)"},
               {"1x4x4-mp2:dc0.5-10", "DropConnect is for dense layers"},
               {"784-64:maxout5105510000-10", "2 to 64 pieces"}}; /* found by fuzz_config: no int overflow first */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        why[0] = '\0';
        assert_int_equal(nd_arch_parse(bad[i].text, (nd_activation){ND_ACT_RELU, 0}, &s, why, sizeof why), -1);
        if (!strstr(why, bad[i].why)) fail_msg("'%s': '%s' lacks '%s'", bad[i].text, why, bad[i].why);
    }
}

/* CS231n's worked SVM example, and closed forms for the others. */
static void test_losses_by_hand(void **state) {
    (void)state;
    const float z[9] = {3.2f, 5.1f, -1.7f, 1.3f, 4.9f, 2.0f, 2.2f, 2.5f, -3.1f};
    const int y[3] = {0, 1, 2};
    float d[9];
    nd_loss_stats h = nd_loss_apply(ND_LOSS_HINGE, d, z, y, NULL, 3, 3);
    assert_float_equal(h.loss_sum, 2.9 + 0.0 + 12.9, 1e-5);
    assert_true(h.correct == 1.0); /* only the middle row's top score is its class */
    /* row 0: margins for classes 1 (2.9 > 0) and 2 (-3.9): d = [-1, 1, 0] */
    assert_true(d[0] == -1.0f && d[1] == 1.0f && d[2] == 0.0f);
    nd_loss_stats sq = nd_loss_apply(ND_LOSS_SQUARED_HINGE, d, z, y, NULL, 3, 3);
    assert_float_equal(sq.loss_sum, 2.9 * 2.9 + 6.3 * 6.3 + 6.6 * 6.6, 1e-4);
    assert_float_equal(d[1], 2 * 2.9, 1e-5);
    const float zero[4] = {0, 0, 0, 0}, t[4] = {1, 0, 0.5f, 2};
    nd_loss_stats b = nd_loss_apply(ND_LOSS_SIGMOID_BCE, d, zero, NULL, t, 1, 3);
    assert_float_equal(b.loss_sum, 3 * log(2.0), 1e-6);
    assert_float_equal(d[0], -0.5f, 1e-7);
    assert_float_equal(d[1], 0.5f, 1e-7);
    const float big[2] = {80.0f, -80.0f}, tb[2] = {1, 1};
    b = nd_loss_apply(ND_LOSS_SIGMOID_BCE, d, big, NULL, tb, 1, 2);
    assert_float_equal(b.loss_sum, 80.0, 1e-6); /* log(1 + e^80) - 80 ~ 0, and 80 for the wrong one */
    assert_float_equal(b.correct, 0.5, 1e-12);
    nd_loss_stats l2 = nd_loss_apply(ND_LOSS_L2, d, zero, NULL, t, 1, 4);
    assert_float_equal(l2.loss_sum, 1 + 0 + 0.25 + 4, 1e-6);
    assert_float_equal(d[3], -4.0f, 1e-6);
    nd_loss_stats l1 = nd_loss_apply(ND_LOSS_L1, d, zero, NULL, t, 1, 4);
    assert_float_equal(l1.loss_sum, 3.5, 1e-6);
    assert_true(d[0] == -1.0f && d[1] == 0.0f);
    /* Binary hinge, labels +-1 from 0/1: z = (2, 0.5, -0.3, -1) against
     * t = (1, 1, 0, 1): margins 1-2 < 0, 1-0.5, 1-0.3, 1+1 -> 0.5 + 0.7 + 2;
     * the gradient -(2t-1) where the margin is positive, else 0; the
     * attributes right (signs 1, 1, 0, 0 vs 1, 1, 0, 1): 3 of 4. */
    const float zh[4] = {2.0f, 0.5f, -0.3f, -1.0f}, th[4] = {1, 1, 0, 1};
    nd_loss_stats bh = nd_loss_apply(ND_LOSS_BINARY_HINGE, d, zh, NULL, th, 1, 4);
    assert_float_equal(bh.loss_sum, 0.5 + 0.7 + 2.0, 1e-6);
    assert_true(d[0] == 0.0f && d[1] == -1.0f && d[2] == 1.0f && d[3] == -1.0f);
    assert_float_equal(bh.correct, 0.75, 1e-12);
    bh = nd_loss_apply(ND_LOSS_BINARY_HINGE, d, zero, NULL, th, 1, 4);
    assert_float_equal(bh.loss_sum, nd_loss_expected_initial(ND_LOSS_BINARY_HINGE, 4), 0); /* every margin 1 */
    assert_true(nd_loss_multilabel(ND_LOSS_BINARY_HINGE) && nd_loss_takes_targets(ND_LOSS_BINARY_HINGE));
    assert_string_equal(nd_loss_metric_name(ND_LOSS_BINARY_HINGE), "attribute_accuracy");
    assert_float_equal(nd_loss_expected_initial(ND_LOSS_HINGE, 10), 9.0, 0);
    nd_loss_kind k;
    assert_int_equal(nd_loss_parse("squared_hinge", &k), 0);
    assert_int_equal(k, ND_LOSS_SQUARED_HINGE);
    assert_int_equal(nd_loss_parse("binary_hinge", &k), 0);
    assert_int_equal(k, ND_LOSS_BINARY_HINGE);
    assert_int_equal(nd_loss_parse("huber", &k), -1);
}

/* The ensemble of one model is the model: on float targets
 * nd_loss_of_average of one member's nd_loss_average_add gives
 * nd_loss_apply's loss and metric (what eval and --ensemble report against
 * what training reports), and two members average what each loss averages. */
static void test_loss_of_average_targets(void **state) {
    (void)state;
    const float z[2 * 3] = {1.5f, -0.4f, 0.2f, -2.0f, 0.7f, -0.1f}, t[2 * 3] = {1, 0, 0, 0, 1, 1};
    const nd_loss_kind kinds[4] = {ND_LOSS_L2, ND_LOSS_L1, ND_LOSS_SIGMOID_BCE, ND_LOSS_BINARY_HINGE};
    for (int i = 0; i < 4; ++i) {
        double sum[6] = {0};
        nd_loss_average_add(kinds[i], z, 2, 3, sum);
        const nd_loss_stats one = nd_loss_of_average(kinds[i], sum, 1, NULL, t, 2, 3, NULL);
        const nd_loss_stats ref = nd_loss_apply(kinds[i], NULL, z, NULL, t, 2, 3);
        assert_float_equal(one.loss_sum, ref.loss_sum, 1e-5);
        assert_float_equal(one.correct, ref.correct, 1e-5);
    }
    /* binary_hinge averages scores: members +-1 on an attribute of 1 give
     * score 0, margin 1, and the attribute wrong (score > 0 is 1). */
    const float a[1] = {1.0f}, b[1] = {-1.0f}, one_t[1] = {1};
    double sum[1] = {0};
    nd_loss_average_add(ND_LOSS_BINARY_HINGE, a, 1, 1, sum);
    nd_loss_average_add(ND_LOSS_BINARY_HINGE, b, 1, 1, sum);
    const nd_loss_stats avg = nd_loss_of_average(ND_LOSS_BINARY_HINGE, sum, 2, NULL, one_t, 1, 1, NULL);
    assert_float_equal(avg.loss_sum, 1.0, 1e-12);
    assert_float_equal(avg.correct, 0.0, 1e-12);
    assert_string_equal(nd_loss_average_name(ND_LOSS_BINARY_HINGE), "scores");
    assert_string_equal(nd_loss_average_name(ND_LOSS_L2), "outputs");
}

static void test_maxout_by_hand(void **state) {
    (void)state;
    const float in[2 * 6] = {1, 3, -2, -5, 0.5f, 0.25f, 2, 2, 7, -1, -3, 4};
    float out[4], din[12];
    nd_maxout_forward(out, in, 2, 2, 3);
    assert_true(out[0] == 3 && out[1] == 0.5f && out[2] == 7 && out[3] == 4);
    const float dout[4] = {10, 20, 30, 40};
    nd_maxout_backward(din, dout, in, 2, 2, 3);
    const float want[12] = {0, 10, 0, 0, 20, 0, 0, 0, 30, 0, 0, 40};
    assert_memory_equal(din, want, sizeof want);
}

/* The overlap hook: backward in weight-row blocks with a call after each
 * gives the very same gradient, and the calls report a final region that
 * only grows downwards, from inside the trainable prefix to 0. */
typedef struct {
    size_t lows[256];
    int calls;
} ready_log;

static void log_ready(void *ctx, size_t lo) {
    ready_log *log = ctx;
    if (log->calls < 256) log->lows[log->calls] = lo;
    log->calls += 1;
}

static void test_backward_in_blocks(void **state) {
    (void)state;
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; ++a) {
        fixture f;
        setup(&f, archs[a], 0);
        nd_model_set_grad_block(&f.m, 10); /* blocks of ceil(10 / in_dim) rows, for the plain pass too */
        backprop(&f, ND_LOSS_SOFTMAX_CE, 3);
        const size_t n = f.m.num_params;
        float *whole = malloc(sizeof(float) * n);
        memcpy(whole, f.m.grad, sizeof(float) * n);
        ready_log log = {.calls = 0};
        const nd_train_pass pass = {.seed = 5, .step = 3, .grad_ready = log_ready, .ready_ctx = &log};
        nd_model_zero_grad(&f.m);
        const float *out = nd_model_forward(&f.m, f.x, ROWS, &pass);
        nd_loss_apply(ND_LOSS_SOFTMAX_CE, nd_model_output_grad(&f.m), out, f.y, f.t, ROWS, K);
        nd_model_backward(&f.m, f.x, ROWS);
        assert_memory_equal(whole, f.m.grad, sizeof(float) * n);
        free(whole);
        /* more calls than layers */
        assert_true(log.calls > f.m.num_layers && log.calls <= 256);
        assert_true(log.lows[0] < f.m.num_trainable);
        for (int i = 1; i < log.calls; ++i) assert_true(log.lows[i] < log.lows[i - 1]);
        assert_int_equal(log.lows[log.calls - 1], 0);
        nd_model_destroy(&f.m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_every_combination),
        cmocka_unit_test(test_gradcheck_catches_broken_backward),
        cmocka_unit_test(test_dropout_inference_and_training),
        cmocka_unit_test(test_dropconnect),
        cmocka_unit_test(test_batch_norm_modes),
        cmocka_unit_test(test_arch_text),
        cmocka_unit_test(test_losses_by_hand),
        cmocka_unit_test(test_loss_of_average_targets),
        cmocka_unit_test(test_maxout_by_hand),
        cmocka_unit_test(test_backward_in_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
