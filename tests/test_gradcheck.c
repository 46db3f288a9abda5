/* Analytic gradients of the dense layer, every activation and softmax
 * cross-entropy against centred finite differences of an independent
 * double-precision re-implementation of the forward pass. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/layers.h"
#include "nndist/loss.h"
#include "nndist/model.h"
#include "nndist/rng.h"

/* ---- double reference ---------------------------------------------------- */

static double ref_act(double x, nd_activation a) {
    switch (a.kind) {
    case ND_ACT_RELU: return x > 0 ? x : 0;
    case ND_ACT_LEAKY_RELU: return x > 0 ? x : a.alpha * x;
    case ND_ACT_TANH: return tanh(x);
    case ND_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case ND_ACT_ELU: return x > 0 ? x : a.alpha * expm1(x);
    default: return x;
    }
}

/* Sum over the batch of softmax cross-entropy of the MLP described by m,
 * with parameters p (m->num_params) in double. */
static double ref_loss(const nd_model *m, const double *p, const double *x, const int *y, int batch) {
    double total = 0.0;
    double a[2][64];
    for (int i = 0; i < batch; ++i) {
        const double *in = x + (size_t)i * m->spec.input_dim;
        double *out = a[0];
        for (int l = 0; l < m->num_layers; ++l) {
            const nd_layer *L = &m->layer[l];
            out = a[l % 2];
            for (int o = 0; o < L->out_dim; ++o) {
                double z = p[L->b.offset + o];
                for (int k = 0; k < L->in_dim; ++k) z += p[L->w.offset + (size_t)o * L->in_dim + k] * in[k];
                out[o] = ref_act(z, L->act);
            }
            in = out;
        }
        const int c = m->spec.num_classes;
        double mx = in[0], s = 0.0;
        for (int k = 1; k < c; ++k) mx = in[k] > mx ? in[k] : mx;
        for (int k = 0; k < c; ++k) s += exp(in[k] - mx);
        total += log(s) + mx - in[y[i]];
    }
    return total;
}

/* Checks every parameter's analytic gradient; returns the worst relative error. */
static double check_model(nd_act_kind act, int num_hidden, const int *hidden) {
    enum { IN = 5, CLASSES = 4, BATCH = 3 };
    nd_model_spec spec;
    nd_model_spec_plain(&spec, IN, hidden, num_hidden, (nd_activation){act, act == ND_ACT_ELU ? 0.7f : 0.1f}, CLASSES);
    nd_model m;
    nd_error err = {0};
    assert_int_equal(nd_model_create(&m, &spec, BATCH, &err), ND_OK);
    nd_model_init_params(&m, 7, ND_INIT_XAVIER);
    nd_rng rng;
    nd_rng_seed(&rng, 3, 0, 0);
    /* Random biases too, so ReLU kinks are unlikely to sit at zero. */
    for (int l = 0; l < m.num_layers; ++l)
        for (size_t k = 0; k < m.layer[l].b.length; ++k)
            m.param[m.layer[l].b.offset + k] = 0.3f * (float)nd_rng_normal(&rng);
    float x[BATCH * IN];
    double xd[BATCH * IN];
    int y[BATCH] = {0, 3, 1};
    for (int i = 0; i < BATCH * IN; ++i) xd[i] = x[i] = (float)nd_rng_normal(&rng);

    const float *logits = nd_model_forward(&m, x, BATCH, NULL);
    nd_model_zero_grad(&m);
    nd_loss_stats ls = nd_softmax_ce(nd_model_output_grad(&m), logits, y, BATCH, CLASSES);
    nd_model_backward(&m, x, BATCH);

    double *p = malloc(sizeof(double) * m.num_params);
    for (size_t i = 0; i < m.num_params; ++i) p[i] = m.param[i];
    /* The float forward agrees with the double reference. */
    assert_true(fabs(ls.loss_sum - ref_loss(&m, p, xd, y, BATCH)) < 1e-4 * (1.0 + fabs(ls.loss_sum)));

    double worst = 0.0;
    const double h = 1e-5;
    for (int l = 0; l < m.num_layers; ++l) {
        nd_span spans[2] = {m.layer[l].w, m.layer[l].b};
        for (int s = 0; s < 2; ++s)
            for (size_t k = 0; k < spans[s].length; ++k) {
                size_t i = spans[s].offset + k;
                const double keep = p[i];
                p[i] = keep + h;
                double up = ref_loss(&m, p, xd, y, BATCH);
                p[i] = keep - h;
                double down = ref_loss(&m, p, xd, y, BATCH);
                p[i] = keep;
                double num = (up - down) / (2 * h), ana = m.grad[i];
                double rel = fabs(num - ana) / fmax(fabs(num) + fabs(ana), 1e-3);
                if (rel > worst) worst = rel;
            }
    }
    free(p);
    nd_model_destroy(&m);
    return worst;
}

static void gradcheck_act(nd_act_kind act) {
    const int one[1] = {7}, two[2] = {6, 5};
    double e0 = check_model(act, 0, NULL);
    double e1 = check_model(act, 1, one);
    double e2 = check_model(act, 2, two);
    print_message("  %-10s max relative error: %.2e (0 hidden) %.2e (1) %.2e (2)\n", nd_activation_name(act), e0, e1,
                  e2);
    assert_true(e0 < 1e-3);
    assert_true(e1 < 1e-3);
    assert_true(e2 < 1e-3);
}

static void test_gradcheck_relu(void **state) {
    (void)state;
    gradcheck_act(ND_ACT_RELU);
}
static void test_gradcheck_leaky(void **state) {
    (void)state;
    gradcheck_act(ND_ACT_LEAKY_RELU);
}
static void test_gradcheck_tanh(void **state) {
    (void)state;
    gradcheck_act(ND_ACT_TANH);
}
static void test_gradcheck_sigmoid(void **state) {
    (void)state;
    gradcheck_act(ND_ACT_SIGMOID);
}
static void test_gradcheck_elu(void **state) {
    (void)state;
    gradcheck_act(ND_ACT_ELU);
}

/* Input gradient of a lone dense layer, and weight/bias accumulation. */
static void test_dense_backward_input_and_accumulate(void **state) {
    (void)state;
    enum { B = 2, IN = 3, OUT = 2 };
    const float w[OUT * IN] = {1, 2, 3, -1, 0.5f, 2};
    const float b[OUT] = {0.1f, -0.2f};
    const float x[B * IN] = {1, -1, 2, 0.5f, 0.25f, -1};
    float out[B * OUT], dout[B * OUT] = {1, -2, 0.5f, 3};
    nd_activation id = {ND_ACT_IDENTITY, 0};
    nd_dense_forward(out, x, w, b, id, B, IN, OUT);
    /* row 0: [1-2+6+0.1, -1-0.5+4-0.2] */
    assert_float_equal(out[0], 5.1f, 1e-6);
    assert_float_equal(out[1], 2.3f, 1e-6);
    float dw[OUT * IN] = {10, 10, 10, 10, 10, 10}, db[OUT] = {1, 1}, din[B * IN];
    nd_dense_backward(din, dw, db, dout, out, x, w, id, B, IN, OUT);
    /* dW = 10 + dout^T x; db = 1 + column sums; din = dout W */
    assert_float_equal(dw[0], 10 + 1 * 1 + 0.5f * 0.5f, 1e-6);
    assert_float_equal(dw[5], 10 + (-2) * 2 + 3 * (-1), 1e-6);
    assert_float_equal(db[0], 1 + 1.5f, 1e-6);
    assert_float_equal(db[1], 1 + 1.0f, 1e-6);
    assert_float_equal(din[0], 1 * 1 + (-2) * (-1), 1e-6);
    assert_float_equal(din[5], 0.5f * 3 + 3 * 2, 1e-6);
}

/* Huge logits do not overflow: the loss stays finite and exact. */
static void test_softmax_ce_stable(void **state) {
    (void)state;
    const float z[3 * 3] = {1000.0f, 0.0f, -1000.0f, 3e4f, 3e4f, 3e4f, -5.0f, 7.0f, 1.0f};
    const int y[3] = {1, 2, 1};
    float d[9];
    nd_loss_stats st = nd_softmax_ce(d, z, y, 3, 3);
    const double row2 = log(exp(-12.0) + 1.0 + exp(-6.0));
    assert_true(isfinite(st.loss_sum));
    assert_true(fabs(st.loss_sum - (1000.0 + log(3.0) + row2)) < 1e-3);
    assert_float_equal(d[0], 1.0f, 1e-6);
    assert_float_equal(d[1], -1.0f, 1e-6);
    assert_float_equal(d[3] + d[4] + d[5], 0.0f, 1e-6);
    assert_float_equal(d[5], 1.0f / 3.0f - 1.0f, 1e-6);
    /* Only row 2 predicts its label (row 1's three-way tie resolves to class 0). */
    assert_int_equal(st.correct, 1);
}

/* The distillation loss (Hinton et al. 2015) against centred differences
 * of its own value in double, for several T and alpha; alpha 0 is plain
 * softmax_ce bit for bit, and soft targets equal to softmax(z / T) leave
 * only the hard part. */
static void test_distill_gradient(void **state) {
    (void)state;
    enum { B = 3, K = 5 };
    const int y[B] = {2, 0, 4};
    float z[B * K], soft[B * K], d[B * K], zp[B * K];
    for (int i = 0; i < B * K; ++i) z[i] = (float)(1.7 * sin(1.3 * i + 0.4));
    memset(soft, 0, sizeof soft);
    float teacher[B * K];
    for (int i = 0; i < B * K; ++i) teacher[i] = (float)(2.0 * cos(0.9 * i));
    nd_softmax_temperature_add(soft, teacher, 3.0f, 0.5f, B, K); /* two "teachers" averaged */
    nd_softmax_temperature_add(soft, z, 3.0f, 0.5f, B, K);
    for (int i = 0; i < B; ++i) {
        double row = 0.0;
        for (int c = 0; c < K; ++c) row += soft[i * K + c];
        assert_true(fabs(row - 1.0) < 1e-6);
    }
    const float temps[3] = {1.0f, 2.5f, 8.0f}, alphas[3] = {0.3f, 0.9f, 1.0f};
    for (int a = 0; a < 3; ++a) {
        nd_loss_apply_distill(d, z, y, soft, temps[a], alphas[a], B, K);
        for (int i = 0; i < B * K; ++i) {
            const float h = 1e-2f;
            memcpy(zp, z, sizeof z);
            zp[i] = z[i] + h;
            const double up = nd_loss_apply_distill(NULL, zp, y, soft, temps[a], alphas[a], B, K).loss_sum;
            zp[i] = z[i] - h;
            const double down = nd_loss_apply_distill(NULL, zp, y, soft, temps[a], alphas[a], B, K).loss_sum;
            const double fd = (up - down) / (2.0 * h);
            if (fabs(fd - d[i]) > 2e-3 * (1.0 + fabs(fd)))
                fail_msg("T %g alpha %g: dL/dz[%d] = %g, centred difference %g", (double)temps[a], (double)alphas[a], i,
                         (double)d[i], fd);
        }
    }
    /* alpha 0: softmax_ce's loss and gradient, the same bits. */
    float d0[B * K];
    const nd_loss_stats ce = nd_softmax_ce(d0, z, y, B, K);
    const nd_loss_stats dz = nd_loss_apply_distill(d, z, y, soft, 4.0f, 0.0f, B, K);
    assert_memory_equal(d, d0, sizeof d);
    assert_true(ce.loss_sum == dz.loss_sum && ce.correct == dz.correct);
    /* Soft targets that are the student's own softmax(z / T): the soft
     * part's loss and gradient vanish; alpha 1 leaves nothing. */
    memset(soft, 0, sizeof soft);
    nd_softmax_temperature_add(soft, z, 2.0f, 1.0f, B, K);
    const nd_loss_stats self = nd_loss_apply_distill(d, z, y, soft, 2.0f, 1.0f, B, K);
    assert_true(fabs(self.loss_sum) < 1e-5);
    for (int i = 0; i < B * K; ++i) assert_true(fabsf(d[i]) < 1e-6f);
}

/* Each initialization has the spread its formula promises (one 400 x 300
 * layer: 120000 draws, so sample moments are within a few per cent). */
static void test_init_distributions(void **state) {
    (void)state;
    nd_model_spec spec;
    const int width[1] = {300};
    nd_model_spec_plain(&spec, 400, width, 1, (nd_activation){ND_ACT_RELU, 0}, 300);
    nd_model m;
    nd_error err = {0};
    assert_int_equal(nd_model_create(&m, &spec, 1, &err), ND_OK);
    const nd_init_kind kinds[4] = {ND_INIT_HE, ND_INIT_XAVIER, ND_INIT_LECUN, ND_INIT_SMALL};
    const double bound_x = sqrt(6.0 / 700.0), bound_l = 1.0 / sqrt(400.0); /* layer 0: 400 -> 300 */
    const double want_std[4] = {sqrt(2.0 / 400), bound_x / sqrt(3.0), bound_l / sqrt(3.0), 0.01};
    const double max_abs[4] = {INFINITY, bound_x, bound_l, INFINITY};
    for (int k = 0; k < 4; ++k) {
        nd_model_init_params(&m, 5, kinds[k]);
        if (k == 0) {
            /* He: the ReLU layer gets gain sqrt(2), the linear output layer 1. */
            const float *o = m.param + m.layer[1].w.offset;
            double osq = 0;
            for (size_t i = 0; i < m.layer[1].w.length; ++i) osq += (double)o[i] * o[i];
            const double ostd = sqrt(osq / m.layer[1].w.length);
            print_message("  he output layer std %.5f (want %.5f)\n", ostd, sqrt(1.0 / 300));
            assert_true(fabs(ostd / sqrt(1.0 / 300) - 1.0) < 0.03);
        }
        const float *w = m.param + m.layer[0].w.offset;
        const size_t n = m.layer[0].w.length;
        double sum = 0, sq = 0, top = 0;
        for (size_t i = 0; i < n; ++i) {
            sum += w[i], sq += (double)w[i] * w[i];
            top = fmax(top, fabs(w[i]));
        }
        const double mean = sum / n, std = sqrt(sq / n - mean * mean);
        print_message("  init %d: mean %.2e std %.5f (want %.5f) max |w| %.4f\n", k, mean, std, want_std[k], top);
        assert_true(fabs(mean) < 0.05 * want_std[k]);
        assert_true(fabs(std / want_std[k] - 1.0) < 0.03);
        assert_true(top <= max_abs[k]);
        for (size_t i = 0; i < m.layer[0].b.length; ++i) assert_true(m.param[m.layer[0].b.offset + i] == 0.0f);
    }
    /* Output biases from class counts: the initial softmax of a zero input
     * predicts the priors. */
    double counts[300] = {0};
    for (int c = 0; c < 300; ++c) counts[c] = 1 + c % 7;
    nd_model_bias_priors(&m, counts);
    const size_t ob = m.layer[1].b.offset;
    double total = 0, z = 0;
    for (int c = 0; c < 300; ++c) total += counts[c], z += exp(m.param[ob + c]);
    for (int c = 0; c < 300; c += 37) assert_float_equal(exp(m.param[ob + c]) / z, counts[c] / total, 1e-6);
    nd_init_kind k;
    assert_int_equal(nd_init_parse("lecun", &k), 0);
    assert_int_equal(k, ND_INIT_LECUN);
    assert_int_equal(nd_init_parse("orthogonal", &k), -1);
    nd_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_relu),    cmocka_unit_test(test_gradcheck_leaky),
        cmocka_unit_test(test_gradcheck_tanh),    cmocka_unit_test(test_gradcheck_sigmoid),
        cmocka_unit_test(test_gradcheck_elu),     cmocka_unit_test(test_dense_backward_input_and_accumulate),
        cmocka_unit_test(test_softmax_ce_stable), cmocka_unit_test(test_init_distributions),
        cmocka_unit_test(test_distill_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
