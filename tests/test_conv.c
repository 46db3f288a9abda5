/* Convolution, pooling, channel batch norm, channel dropout and residual
 * blocks: the kernels against direct loops in double written here, every
 * combination through the double-precision checker (gradcheck.c), and the
 * architecture text's new groups with their refusals. */
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

static float *random_floats(size_t n, uint64_t seed) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    nd_rng rng;
    nd_rng_seed(&rng, seed, 0, 0);
    for (size_t i = 0; i < n; ++i) v[i] = (float)nd_rng_normal(&rng);
    return v;
}

/* x (c x h x w) at (ch, y, x), 0 in the padding. */
static double at(const float *x, const nd_conv_geom *g, int ch, int y, int xo) {
    return y < 0 || y >= g->h || xo < 0 || xo >= g->w ? 0.0 : x[((size_t)ch * g->h + y) * g->w + xo];
}

/* Forward, bias gradient, weight gradient and input gradient of one
 * geometry against the definitions, summed in double. */
static void check_conv(nd_conv_geom g, int batch) {
    assert_int_equal(nd_conv_geom_finish(&g), 0);
    const int k = g.kernel, S = g.out_h * g.out_w;
    const size_t in_len = (size_t)g.c * g.h * g.w, out_len = (size_t)g.out_c * S, wlen = (size_t)g.out_c * g.c * k * k;
    float *x = random_floats(batch * in_len, 1), *w = random_floats(wlen, 2), *b = random_floats(g.out_c, 3);
    float *dout = random_floats(batch * out_len, 4), *out = calloc(batch * out_len, sizeof(float));
    float *dw = calloc(wlen, sizeof(float)), *db = calloc(g.out_c, sizeof(float));
    float *dx = random_floats(batch * in_len, 5); /* overwritten, not added to */
    float *col = calloc(nd_conv_scratch_floats(&g) + 1, sizeof(float));
    const nd_activation identity = {ND_ACT_IDENTITY, 0};
    nd_conv_forward(out, x, w, b, identity, col, &g, batch);
    double worst = 0.0;
    for (int i = 0; i < batch; ++i)
        for (int o = 0; o < g.out_c; ++o)
            for (int y = 0; y < g.out_h; ++y)
                for (int xo = 0; xo < g.out_w; ++xo) {
                    double s = b[o];
                    for (int c = 0; c < g.c; ++c)
                        for (int ki = 0; ki < k; ++ki)
                            for (int kj = 0; kj < k; ++kj)
                                s += w[((o * g.c + c) * k + ki) * k + kj] *
                                    at(x + i * in_len, &g, c, y * g.stride - g.pad + ki, xo * g.stride - g.pad + kj);
                    worst = fmax(worst, fabs(s - out[i * out_len + ((size_t)o * g.out_h + y) * g.out_w + xo]));
                }
    assert_true(worst < 1e-4);
    nd_conv_backward_bias(dout, out, db, identity, &g, batch);
    nd_conv_backward(dx, dw, dout, x, w, col, &g, batch);
    double wworst = 0.0, xworst = 0.0, bworst = 0.0;
    double *dxr = calloc(batch * in_len, sizeof(double));
    for (int o = 0; o < g.out_c; ++o) {
        double sb = 0.0;
        for (int i = 0; i < batch; ++i)
            for (int s = 0; s < S; ++s) sb += dout[i * out_len + (size_t)o * S + s];
        bworst = fmax(bworst, fabs(sb - db[o]));
        for (int c = 0; c < g.c; ++c)
            for (int ki = 0; ki < k; ++ki)
                for (int kj = 0; kj < k; ++kj) {
                    double s = 0.0;
                    for (int i = 0; i < batch; ++i)
                        for (int y = 0; y < g.out_h; ++y)
                            for (int xo = 0; xo < g.out_w; ++xo) {
                                const int iy = y * g.stride - g.pad + ki, ix = xo * g.stride - g.pad + kj;
                                const double d = dout[i * out_len + ((size_t)o * g.out_h + y) * g.out_w + xo];
                                s += d * at(x + i * in_len, &g, c, iy, ix);
                                if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                                    dxr[i * in_len + ((size_t)c * g.h + iy) * g.w + ix] += d *
                                        w[((o * g.c + c) * k + ki) * k + kj];
                            }
                    wworst = fmax(wworst, fabs(s - dw[((o * g.c + c) * k + ki) * k + kj]));
                }
    }
    for (size_t i = 0; i < batch * in_len; ++i) xworst = fmax(xworst, fabs(dxr[i] - dx[i]));
    print_message("  conv %dx%dx%d -> %dx%dx%d k%d s%d p%d: forward %.1e, db %.1e, dW %.1e, dx %.1e\n", g.c, g.h, g.w,
                  g.out_c, g.out_h, g.out_w, k, g.stride, g.pad, worst, bworst, wworst, xworst);
    assert_true(bworst < 1e-3 && wworst < 1e-3 && xworst < 1e-4);
    free(x), free(w), free(b), free(dout), free(out), free(dw), free(db), free(dx), free(col), free(dxr);
}

static void test_conv_against_loops(void **state) {
    (void)state;
    check_conv((nd_conv_geom){.c = 2, .h = 6, .w = 6, .out_c = 3, .kernel = 3, .stride = 1, .pad = 1}, 3);
    check_conv((nd_conv_geom){.c = 3, .h = 7, .w = 5, .out_c = 4, .kernel = 3, .stride = 2, .pad = 1}, 2);
    check_conv((nd_conv_geom){.c = 1, .h = 8, .w = 8, .out_c = 2, .kernel = 5, .stride = 1, .pad = 0}, 2);
    check_conv((nd_conv_geom){.c = 2, .h = 5, .w = 6, .out_c = 2, .kernel = 5, .stride = 1, .pad = 2}, 2);
    check_conv((nd_conv_geom){.c = 4, .h = 6, .w = 6, .out_c = 3, .kernel = 1, .stride = 1, .pad = 0}, 2);
    check_conv((nd_conv_geom){.c = 4, .h = 7, .w = 7, .out_c = 5, .kernel = 1, .stride = 2, .pad = 0}, 2);
    check_conv((nd_conv_geom){.c = 2, .h = 9, .w = 9, .out_c = 3, .kernel = 4, .stride = 3, .pad = 2}, 2);
    /* fewer output than input channels: the forward columns, made again for
     * dw, outgrow the input gradient's and must not overwrite its flipped
     * weights (a bug until the weights moved before the columns); and the
     * peer's 28x28 layer */
    check_conv((nd_conv_geom){.c = 16, .h = 9, .w = 9, .out_c = 4, .kernel = 3, .stride = 1, .pad = 1}, 2);
    check_conv((nd_conv_geom){.c = 8, .h = 28, .w = 28, .out_c = 8, .kernel = 3, .stride = 1, .pad = 1}, 2);
    nd_conv_geom g = {.c = 1, .h = 3, .w = 3, .out_c = 1, .kernel = 5, .stride = 1, .pad = 0};
    assert_int_equal(nd_conv_geom_finish(&g), -1); /* the kernel does not fit */
    g.pad = 1;
    assert_int_equal(nd_conv_geom_finish(&g), 0);
    assert_int_equal(g.out_h, 1);
}

/* Max and average pooling (overlapping windows too) and the global
 * average against loops; max pooling routes each gradient to the first
 * largest value of its window. */
static void check_pool(nd_conv_geom g, int batch) {
    g.out_c = g.c;
    assert_int_equal(nd_conv_geom_finish(&g), 0);
    const size_t in_len = (size_t)g.c * g.h * g.w, out_len = (size_t)g.c * g.out_h * g.out_w;
    float *x = random_floats(batch * in_len, 7), *dout = random_floats(batch * out_len, 8);
    x[0] = x[1]; /* a tie: the first wins */
    float *mx = calloc(batch * out_len, sizeof(float)), *av = calloc(batch * out_len, sizeof(float));
    float *dmx = calloc(batch * in_len, sizeof(float)), *dav = calloc(batch * in_len, sizeof(float));
    double *rm = calloc(batch * in_len, sizeof(double)), *ra = calloc(batch * in_len, sizeof(double));
    int *arg = calloc(batch * out_len, sizeof(int));
    nd_maxpool_forward(mx, arg, x, &g, batch);
    nd_avgpool_forward(av, x, &g, batch);
    nd_maxpool_backward(dmx, dout, arg, &g, batch);
    nd_avgpool_backward(dav, dout, &g, batch);
    double worst = 0.0;
    for (int p = 0; p < batch * g.c; ++p)
        for (int y = 0; y < g.out_h; ++y)
            for (int xo = 0; xo < g.out_w; ++xo) {
                double best = -INFINITY, sum = 0.0;
                size_t arg = 0;
                for (int ki = 0; ki < g.kernel; ++ki)
                    for (int kj = 0; kj < g.kernel; ++kj) {
                        const size_t i = (size_t)p * g.h * g.w + (size_t)(y * g.stride + ki) * g.w + xo * g.stride + kj;
                        sum += x[i];
                        if (x[i] > best) best = x[i], arg = i;
                    }
                const size_t o = (size_t)p * g.out_h * g.out_w + (size_t)y * g.out_w + xo;
                assert_true(mx[o] == (float)best);
                worst = fmax(worst, fabs(av[o] - sum / (g.kernel * g.kernel)));
                rm[arg] += dout[o];
                for (int ki = 0; ki < g.kernel; ++ki)
                    for (int kj = 0; kj < g.kernel; ++kj)
                        ra[(size_t)p * g.h * g.w + (size_t)(y * g.stride + ki) * g.w + xo * g.stride + kj] += dout[o] /
                            (g.kernel * g.kernel);
            }
    for (size_t i = 0; i < batch * in_len; ++i) {
        worst = fmax(worst, fabs(dmx[i] - rm[i]));
        worst = fmax(worst, fabs(dav[i] - ra[i]));
    }
    assert_true(worst < 1e-5);
    /* global average: one value a channel */
    float *gp = calloc(batch * g.c, sizeof(float)), *dg = calloc(batch * in_len, sizeof(float));
    nd_global_avgpool_forward(gp, x, batch, g.c, g.h * g.w);
    nd_global_avgpool_backward(dg, dout, batch, g.c, g.h * g.w);
    for (int p = 0; p < batch * g.c; ++p) {
        double s = 0.0;
        for (int i = 0; i < g.h * g.w; ++i) s += x[(size_t)p * g.h * g.w + i];
        assert_true(fabs(gp[p] - s / (g.h * g.w)) < 1e-5);
        assert_true(fabs(dg[(size_t)p * g.h * g.w + 3] - dout[p] / (g.h * g.w)) < 1e-7);
    }
    free(x), free(dout), free(mx), free(av), free(dmx), free(dav), free(rm), free(ra), free(gp), free(dg), free(arg);
}

static void test_pool_against_loops(void **state) {
    (void)state;
    check_pool((nd_conv_geom){.c = 2, .h = 6, .w = 6, .kernel = 2, .stride = 2}, 3);
    check_pool((nd_conv_geom){.c = 3, .h = 7, .w = 5, .kernel = 3, .stride = 2}, 2); /* overlapping */
    check_pool((nd_conv_geom){.c = 1, .h = 7, .w = 7, .kernel = 2, .stride = 2}, 2); /* a row left over */
}

/* ---- whole networks through the double-precision checker ---------------- */

enum { ROWS = 4, K = 4 };

typedef struct {
    nd_model m;
    float *x, t[ROWS * K];
    int y[ROWS];
} fixture;

static void parse(const char *arch, nd_model_spec *spec) {
    char why[200] = "";
    if (nd_arch_parse(arch, (nd_activation){ND_ACT_RELU, 0.0f}, spec, why, sizeof why) != 0)
        fail_msg("%s: %s", arch, why);
}

static void setup(fixture *f, const char *arch, nd_init_kind init) {
    nd_model_spec spec;
    parse(arch, &spec);
    nd_error err = {0};
    if (nd_model_create(&f->m, &spec, ROWS, &err) != ND_OK) fail_msg("%s: %s", arch, err.msg);
    nd_model_init_params(&f->m, 3, init);
    nd_model_jitter(&f->m, 11, 0.3f);
    f->x = random_floats((size_t)ROWS * spec.input_dim, 12);
    nd_rng rng;
    nd_rng_seed(&rng, 13, 0, 0);
    for (int i = 0; i < ROWS; ++i) f->y[i] = (int)nd_rng_below(&rng, K);
    for (int i = 0; i < ROWS * K; ++i) f->t[i] = (float)nd_rng_normal(&rng);
}

static double check_net(const char *arch, nd_loss_kind loss, nd_init_kind init, int *groups, int *checked) {
    fixture f;
    setup(&f, arch, init);
    const nd_train_pass pass = {.seed = 5, .step = 3};
    nd_model_zero_grad(&f.m);
    const float *out = nd_model_forward(&f.m, f.x, ROWS, &pass);
    nd_loss_apply(loss, nd_model_output_grad(&f.m), out, f.y, f.t, ROWS, K);
    nd_model_backward(&f.m, f.x, ROWS);
    nd_gradcheck_group g[ND_GRADCHECK_MAX_GROUPS];
    *groups = nd_gradcheck_run(&f.m, f.m.grad, f.x, ROWS, loss, f.y, f.t, 20, 1, 1e-5, 1e-2, 0.0, g);
    double worst = 0.0;
    *checked = 0;
    for (int i = 0; i < *groups; ++i) {
        if (!g[i].checked) fail_msg("%s: %s: nothing checked (%d kinks)", arch, g[i].name, g[i].kinks);
        *checked += g[i].checked;
        worst = fmax(worst, g[i].max_rel);
    }
    if (worst > ND_GRADCHECK_FAIL_ABOVE)
        for (int i = 0; i < *groups; ++i)
            print_message("    %s: %d checked, %d at kinks, worst %.2e\n", g[i].name, g[i].checked, g[i].kinks,
                          g[i].max_rel);
    free(f.x);
    nd_model_destroy(&f.m);
    return worst;
}

static const struct {
    const char *arch;
    int groups; /* trained tensors + the L2 penalty */
} nets[] = {
    {"2x6x6-c3k3p1:relu-mp2-5:relu-4", 7},                              /* padding, max pool, flatten */
    {"2x7x7-c4k3s2p1:tanh-ap2-4", 5},                                   /* stride, average pool */
    {"2x6x6-c4k3p1:bn:relu-c4k3p1:bn:elu:cdrop0.3-gap-4", 11},          /* channel bn, channel dropout */
    {"2x6x6-c4k3p1:relu-res(c4k3p1:bn:relu-c4k3p1:bn):relu-gap-4", 13}, /* identity skip */
    {"2x6x6-res(c4k3s2p1:bn:relu-c4k3p1:bn):relu:drop0.2-4", 15},       /* projection with bn, from the input */
    {"2x7x7-c3k3:elu-res(c5k3p1:relu):leaky_relu-mp3s2-4", 9},          /* projection, overlapping max pool */
    {"2x6x6:drop0.1-c2k1-8:relu-res(8:bn:relu-8):relu:drop0.3-4", 13},  /* dense residual */
    {"1x9x8-c3k4s3p2:sigmoid-c2k2:tanh:drop0.2-6:bn:relu-4", 11},       /* odd shapes, dense bn after conv */
};

static void test_gradcheck_conv_nets(void **state) {
    (void)state;
    for (size_t n = 0; n < sizeof nets / sizeof nets[0]; ++n)
        for (int loss = ND_LOSS_SOFTMAX_CE; loss <= ND_LOSS_L2; loss += ND_LOSS_L2 - ND_LOSS_SOFTMAX_CE) {
            int groups, checked;
            const double worst = check_net(nets[n].arch, (nd_loss_kind)loss, ND_INIT_HE, &groups, &checked);
            print_message("  %-58s %-10s %2d groups, %3d values, worst %.2e\n", nets[n].arch,
                          nd_loss_name((nd_loss_kind)loss), groups, checked, worst);
            assert_int_equal(groups, nets[n].groups);
            assert_true(worst <= ND_GRADCHECK_FAIL_ABOVE);
        }
}

/* The checker sees a wrong convolution backward: a weight gradient whose
 * kernel is flipped, and a skip path that loses its gradient. */
static void test_gradcheck_catches_conv_bugs(void **state) {
    (void)state;
    fixture f;
    setup(&f, "2x6x6-c3k3p1:relu-res(c3k3p1:relu):relu-4", ND_INIT_HE);
    const nd_train_pass pass = {.seed = 5, .step = 3};
    nd_model_zero_grad(&f.m);
    const float *out = nd_model_forward(&f.m, f.x, ROWS, &pass);
    nd_loss_apply(ND_LOSS_SOFTMAX_CE, nd_model_output_grad(&f.m), out, f.y, f.t, ROWS, K);
    nd_model_backward(&f.m, f.x, ROWS);
    nd_gradcheck_group g[ND_GRADCHECK_MAX_GROUPS];
    float *w = f.m.grad + f.m.layer[0].w.offset; /* flip each 3x3 kernel of conv0 */
    for (size_t k = 0; k < f.m.layer[0].w.length; k += 9)
        for (int i = 0; i < 4; ++i) {
            const float t = w[k + i];
            w[k + i] = w[k + 8 - i], w[k + 8 - i] = t;
        }
    int n = nd_gradcheck_run(&f.m, f.m.grad, f.x, ROWS, ND_LOSS_SOFTMAX_CE, f.y, f.t, 20, 1, 1e-5, 0, 0, g);
    assert_string_equal(g[0].name, "conv0/W");
    assert_true(g[0].max_rel > 1e-2);
    /* backward again without the skip's share at the block's input */
    nd_model_zero_grad(&f.m);
    out = nd_model_forward(&f.m, f.x, ROWS, &pass);
    nd_loss_apply(ND_LOSS_SOFTMAX_CE, nd_model_output_grad(&f.m), out, f.y, f.t, ROWS, K);
    f.m.layer[1].res_from = 0; /* the block's input is now taken as the model's: no gradient sent down */
    nd_model_backward(&f.m, f.x, ROWS);
    f.m.layer[1].res_from = 1;
    n = nd_gradcheck_run(&f.m, f.m.grad, f.x, ROWS, ND_LOSS_SOFTMAX_CE, f.y, f.t, 20, 1, 1e-5, 0, 0, g);
    assert_true(n >= 2);
    assert_true(g[0].max_rel > 1e-2); /* conv0 misses the skip path's gradient */
    free(f.x);
    nd_model_destroy(&f.m);
}

/* ---- the architecture text ------------------------------------------------ */

static void test_arch_conv_text(void **state) {
    (void)state;
    nd_model_spec s;
    parse("1x28x28-c32k3p1:bn:relu-c32k3p1:bn:relu-mp2-c64k3p1:bn:relu-mp2-fc256:relu:drop0.3-10", &s);
    assert_int_equal(s.input_dim, 784);
    assert_true(s.image.c == 1 && s.image.h == 28 && s.image.w == 28);
    assert_int_equal(s.num_hidden, 6);
    assert_int_equal(s.hidden[0].kind, ND_LAYER_CONV);
    assert_true(s.hidden[0].width == 32 && s.hidden[0].kernel == 3 && s.hidden[0].pad == 1 && s.hidden[0].stride == 1);
    assert_int_equal(s.hidden[2].kind, ND_LAYER_MAXPOOL);
    assert_true(s.hidden[2].kernel == 2 && s.hidden[2].stride == 2);
    assert_int_equal(s.hidden[4].kind, ND_LAYER_MAXPOOL);
    assert_int_equal(s.hidden[5].kind, ND_LAYER_DENSE);
    char text[512];
    nd_arch_format(&s, text, sizeof text);
    assert_string_equal(text, "1x28x28-c32k3p1:bn:relu-c32k3p1:bn:relu-mp2-c64k3p1:bn:relu-mp2-256:relu:drop0.3-10");
    nd_model m;
    nd_error err = {0};
    assert_int_equal(nd_model_create(&m, &s, 2, &err), ND_OK);
    assert_int_equal(m.layer[5].in_dim, 64 * 7 * 7); /* flattened NCHW */
    assert_string_equal(m.tensor[0].name, "conv0/W");
    assert_int_equal(m.tensor[0].ndims, 4);
    assert_true(m.tensor[0].dims[0] == 32 && m.tensor[0].dims[1] == 1 && m.tensor[0].dims[3] == 3);
    nd_model_destroy(&m);

    /* Residual blocks: the canonical text reads back to the same spec. */
    const char *res = "3x32x32-c16k3p1:bn:relu-res(c16k3p1:bn:relu-c16k3p1:bn):relu-res(c32k3s2p1:bn:relu-c32k3p1:bn)"
                      ":relu:cdrop0.1-gap-ap1-10";
    parse(res, &s);
    assert_true(s.hidden[1].res_begin && !s.hidden[1].res_end && s.hidden[2].res_end);
    assert_int_equal(s.hidden[2].act.kind, ND_ACT_IDENTITY); /* inside, before the add */
    assert_int_equal(s.hidden[2].res_act.kind, ND_ACT_RELU);
    assert_true(s.hidden[4].drop_channels && s.hidden[4].drop == 0.1f);
    nd_arch_format(&s, text, sizeof text);
    nd_model_spec back;
    parse(text, &back);
    assert_memory_equal(&s, &back, sizeof s);
    assert_int_equal(nd_model_create(&m, &s, 2, &err), ND_OK);
    assert_true(!m.layer[2].proj && m.layer[4].proj);
    assert_int_equal(m.layer[4].proj_geom.stride, 2);
    assert_true(m.layer[4].proj_bn.channels == 32);
    assert_int_equal(m.layer[6].in_dim, 32); /* gap: 32x1x1 */
    int names = 0;
    for (int t = 0; t < m.num_tensors; ++t) names += !strcmp(m.tensor[t].name, "projbn4/running_var");
    assert_int_equal(names, 1);
    nd_model_destroy(&m);

    static const struct {
        const char *text, *why;
    } bad[] = {{"1x28x28-c32-10", "cOkK"},
               {"1x28x28-c32k3x-10", "unexpected 'x'"},
               {"1x28-10", "CxHxW"},
               {"1x28x28-mp2:relu-10", "no activation"},
               {"1x28x28-mp2:bn-10", "not a pooling layer"},
               {"1x28x28-c8k3:maxout2-10", "maxout is for dense"},
               {"1x28x28-res(c8k3-res(c8k3)-10", "do not nest"},
               {"1x28x28-res(c8k3p1-10", "never closed"},
               {"1x28x28-c8k3p1)-10", "without 'res('"},
               {"1x28x28-res(c8k3p1:drop0.2):relu-10", "goes after its ')'"},
               {"1x28x28-res(c8k3p1):bn-10", "not a residual block's ')'"},
               {"1x28x28-c8k3p1-res(10)", "output group"},
               {"1x28x28-c8k3k3-10", "given twice"},
               {"1x28x28-zz-10", "is not a layer"},
               {"16-32:relu:bn-4", "'bn' after the activation"},
               {"1x28x28-c8k3p1:tanh:bn-10", "write bn first"}};
    char why[200];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        why[0] = '\0';
        assert_int_equal(nd_arch_parse(bad[i].text, (nd_activation){ND_ACT_RELU, 0}, &s, why, sizeof why), -1);
        if (!strstr(why, bad[i].why)) fail_msg("'%s': '%s' lacks '%s'", bad[i].text, why, bad[i].why);
    }
}

/* Nets that parse but do not fit their input: one line naming the layer
 * and the shapes. */
static void test_shapes_refused(void **state) {
    (void)state;
    static const struct {
        const char *text, *why;
    } bad[] = {{"1x5x5-c4k7-10", "layer 1 (c4k7): a 7x7 kernel does not fit its 1x5x5 input"},
               {"1x6x6-mp2-mp2-mp2-10", "layer 3 (mp2): a 2x2 kernel does not fit its 1x1x1 input"},
               {"784-c8k3-10", "layer 1 (c8k3) needs an image input (C x H x W), but its input is 784 flat features"},
               {"1x8x8-16-c8k3-10", "layer 2 (c8k3) needs an image input"},
               {"1x8x8-16:cdrop0.2-10", "channel dropout needs a convolution"},
               {"1x8x8-res(c4k3)-10", "1x8x8 into 4x6x6, which no strided 1x1 projection matches"},
               {"1x8x8-c2k1-8-res(16)-10", "a dense block must keep its width"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        nd_model_spec s;
        parse(bad[i].text, &s);
        nd_model m;
        nd_error err = {0};
        assert_int_equal(nd_model_create(&m, &s, 2, &err), ND_ERR_ARG);
        if (!strstr(err.msg, bad[i].why)) fail_msg("'%s': '%s' lacks '%s'", bad[i].text, err.msg, bad[i].why);
    }
}

/* Channel batch norm: per-channel statistics over samples and pixels, and
 * inference with the running statistics equals the definition. */
static void test_channel_batch_norm(void **state) {
    (void)state;
    enum { B = 3, C = 2, S = 5 };
    float *x = random_floats(B * C * S, 21), xhat[B * C * S], buf[3 * C + 1];
    for (int i = 0; i < B * C * S; ++i) x[i] = 3.0f * x[i] + ((i / S) % C ? 10.0f : -4.0f);
    float keep[B * C * S];
    memcpy(keep, x, sizeof keep);
    const float gamma[C] = {1.5f, 0.5f}, beta[C] = {0.1f, -0.2f};
    assert_int_equal(nd_bn_forward_train(x, xhat, buf, buf + C, gamma, beta, 1e-5f, B, C, S, 0, NULL, NULL), 0);
    for (int c = 0; c < C; ++c) {
        double mean = 0, var = 0;
        for (int i = 0; i < B; ++i)
            for (int s = 0; s < S; ++s) mean += keep[(i * C + c) * S + s];
        mean /= B * S;
        for (int i = 0; i < B; ++i)
            for (int s = 0; s < S; ++s) var += pow(keep[(i * C + c) * S + s] - mean, 2);
        var /= B * S;
        for (int i = 0; i < B; ++i)
            for (int s = 0; s < S; ++s) {
                const double want = gamma[c] * (keep[(i * C + c) * S + s] - mean) / sqrt(var + 1e-5) + beta[c];
                assert_true(fabs(x[(i * C + c) * S + s] - want) < 1e-4);
            }
        assert_true(buf[C + 2 * C] == (float)(B * S)); /* the count per channel */
    }
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_against_loops),  cmocka_unit_test(test_pool_against_loops),
        cmocka_unit_test(test_gradcheck_conv_nets), cmocka_unit_test(test_gradcheck_catches_conv_bugs),
        cmocka_unit_test(test_arch_conv_text),      cmocka_unit_test(test_shapes_refused),
        cmocka_unit_test(test_channel_batch_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
