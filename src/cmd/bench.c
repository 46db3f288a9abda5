/* `nndist bench`: the machine's limits for a model, measured on the spot,
 * so a training run's throughput can be read against them (launch/bench):
 *   - the GEMM rate of the model's own shapes (forward, weight gradient,
 *     input gradient of every layer) on every rank at once, as in training;
 *   - the time of a bare in-place MPI_Allreduce of the model's gradient
 *     (with a barrier before each, so rank skew is not counted), and of the
 *     same bytes as non-blocking buckets;
 *   - the latency (a 1-float ping-pong) and the one-way time of the whole
 *     gradient between ranks 0 and 1 (half a ping-pong of it), what the
 *     alpha-beta model of a network is fitted to (docs/scaling.md). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/blas.h"
#include "nndist/cli.h"
#include "nndist/commands.h"
#include "nndist/model.h"
#include "nndist/rng.h"
#include "nndist/train.h"

typedef struct {
    char arch[512];
    char hidden[256];
    int inputs, outputs, batch, threads, bucket_kb, iters;
    float seconds;
    bool p2p_only;
} bench_config;

#define F(type_, f) ND_CLI_FIELD(type_, bench_config, f)
static const nd_cli_option bench_options[] = {
    {"arch", F(STR, arch), "",
     "the model whose shapes are measured, as train's --arch (convolutional nets too); overrides the next three"},
    {"hidden", F(STR, hidden), "512,256", "hidden layer widths of the model whose shapes are measured"},
    {"inputs", F(INT, inputs), "784", "input features"},
    {"outputs", F(INT, outputs), "10", "output width"},
    {"batch", F(INT, batch), "64", "rows per rank (the GEMM's batch dimension)"},
    {"threads", F(INT, threads), "1", "BLAS threads per rank"},
    {"seconds", F(FLOAT, seconds), "0.3", "time spent on each GEMM shape"},
    {"iters", F(INT, iters), "200", "allreduce repetitions (the median is reported)"},
    {"bucket-kb", F(INT, bucket_kb), "256",
     "bucket size of the non-blocking allreduce measured beside the blocking one"},
    {"p2p-only", F(BOOL, p2p_only), "false",
     "measure only the point-to-point latency and transfer time between ranks 0 and 1 (a quick probe of a network)"},
};
#undef F
enum { NUM_OPTIONS = (int)(sizeof bench_options / sizeof bench_options[0]) };

/* 64 MB: more than this machine's L2 and L3 caches hold. */
#define COLD_FLOATS ((size_t)16 << 20)

/* The best of this many timings is what the rates report: on a shared
 * machine another process steals time from some of them, never adds it. */
enum { TRIALS = 5 };

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds per call of f(arg): the fastest of TRIALS timings of about
 * budget / TRIALS seconds each (at least 3 calls), after one warm-up call. */
static double time_call(void (*f)(void *), void *arg, double budget) {
    f(arg);
    double best = 0.0;
    for (int trial = 0; trial < TRIALS; ++trial) {
        long calls = 0;
        const double t0 = nd_comm_time();
        double el;
        do {
            f(arg);
            ++calls;
            el = nd_comm_time() - t0;
        } while (el < budget / TRIALS || calls < 3);
        if (trial == 0 || el / (double)calls < best) best = el / (double)calls;
    }
    return best;
}

/* C (m x n) = op(A) op(B), k deep, as one call for time_call. */
typedef struct {
    bool ta, tb;
    int m, n, k, lda, ldb, ldc;
    const float *a, *b;
    float *c;
} gemm_call;

static void gemm_once(void *arg) {
    const gemm_call *g = arg;
    nd_sgemm(g->ta, g->tb, g->m, g->n, g->k, 1.0f, g->a, g->lda, g->b, g->ldb, 0.0f, g->c, g->ldc);
}

/* Seconds per call of that GEMM; a, b, c are large enough. */
static double time_gemm(bool ta, bool tb, int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc, double budget) {
    gemm_call g = {ta, tb, m, n, k, lda, ldb, ldc, a, b, c};
    return time_call(gemm_once, &g, budget);
}

/* One convolution layer's kernels as training runs them. */
typedef struct {
    const nd_model *m;
    const nd_layer *L;
    int batch, first;
    float *x, *y, *z, *dw;
} conv_call;

static void conv_forward(void *arg) {
    const conv_call *c = arg;
    nd_conv_forward(c->y, c->x, c->m->param + c->L->w.offset, c->m->param + c->L->b.offset, c->L->act, c->m->col,
                    &c->L->geom, c->batch);
}

static void conv_backward(void *arg) { /* the weight gradient, and the input gradient but in the first layer */
    const conv_call *c = arg;
    nd_conv_backward(c->first ? NULL : c->z, c->dw, c->y, c->x, c->m->param + c->L->w.offset, c->m->col, &c->L->geom,
                     c->batch);
}

/* GFLOP/s of one training step's GEMMs on this rank; prints each shape on
 * rank 0, and for a convolution the rate of its whole kernels (im2col and
 * col2im included) against its GEMMs alone. x (batch x widest), y and z are
 * scratch of the same size. */
static double gemm_rate(const nd_model *m, int batch, double budget, float *x, float *y, float *z, int verbose) {
    double flops = 0.0, seconds = 0.0;
    const char *names[3] = {"forward", "weight-grad", "input-grad"};
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        const float *w = m->param + L->w.offset;
        float *dw = m->grad + L->w.offset;
        double t[3] = {0, 0, 0}, f = 0.0;
        int shape[3][3];
        if (L->kind == ND_LAYER_DENSE) {
            const int in = L->in_dim, out = L->out_dim;
            f = 2.0 * batch * in * out;
            t[0] = time_gemm(false, true, batch, out, in, x, in, w, in, y, out, budget);  /* z = x w^T */
            t[1] = time_gemm(true, false, out, in, batch, y, out, x, in, dw, in, budget); /* dw = dz^T x */
            t[2] = l > 0 ? time_gemm(false, false, batch, in, out, y, out, w, in, z, in, budget) : 0.0; /* dx = dz w */
            const int d[3][3] = {{batch, out, in}, {out, in, batch}, {batch, in, out}};
            memcpy(shape, d, sizeof d);
        } else if (L->kind == ND_LAYER_CONV) {
            /* One GEMM per sample, as nd_conv_forward and nd_conv_backward. */
            const int o = L->geom.out_c, ckk = L->fan_in, sp = L->geom.out_h * L->geom.out_w;
            f = 2.0 * batch * o * ckk * sp;
            t[0] = batch * time_gemm(false, false, o, sp, ckk, w, ckk, x, sp, y, sp, budget / batch);
            t[1] = batch * time_gemm(false, true, o, ckk, sp, y, sp, x, sp, dw, ckk, budget / batch);
            t[2] = l > 0 ? batch * time_gemm(true, false, ckk, sp, o, w, ckk, y, sp, z, sp, budget / batch) : 0.0;
            const int d[3][3] = {{o, sp, ckk}, {o, ckk, sp}, {ckk, sp, o}};
            memcpy(shape, d, sizeof d);
            conv_call c = {m, L, batch, l == 0, x, y, z, dw};
            const double kf = time_call(conv_forward, &c, budget), kb = time_call(conv_backward, &c, budget);
            if (verbose)
                printf("conv layer %d %dx%dx%d -> %dx%dx%d: whole kernels %.1f GFLOP/s forward (%.0f%% of its GEMMs'), "
                       "%.1f backward (%.0f%%)\n",
                       l, L->geom.c, L->geom.h, L->geom.w, o, L->geom.out_h, L->geom.out_w, f / kf * 1e-9,
                       100.0 * t[0] / kf, (l > 0 ? 2 : 1) * f / kb * 1e-9, 100.0 * (t[1] + t[2]) / kb);
        }
        for (int k = 0; k < 3; ++k) {
            if (t[k] == 0.0) continue;
            flops += f, seconds += t[k];
            if (verbose)
                printf("gemm layer %d %-11s %4d x %4d x %4d%s: %7.1f GFLOP/s\n", l, names[k], shape[k][0], shape[k][1],
                       shape[k][2], L->kind == ND_LAYER_CONV ? " per sample" : "", f / t[k] * 1e-9);
        }
    }
    return flops / seconds * 1e-9;
}

/* Median milliseconds of an in-place allreduce of buf (n): blocking, or as
 * non-blocking buckets of `bucket` floats all started, then waited for.
 * Leaves the timings (seconds) sorted in times (iters).
 * With `cold` (n_cold floats) each round first writes that much elsewhere,
 * as a training step's GEMMs do, so buf is no longer in the caches. */
static nd_status allreduce_ms(nd_comm *comm, float *buf, size_t n, size_t bucket, nd_request *reqs, int iters,
                              float *cold, size_t n_cold, double *times, double *ms, nd_error *err) {
    for (int i = -10; i < iters; ++i) { /* 10 warm-up rounds */
        if (cold) memset(cold, i & 0xff, n_cold * sizeof(float));
        ND_TRY(nd_comm_barrier(comm, err));
        const double t0 = nd_comm_time();
        if (bucket == 0) {
            ND_TRY(nd_comm_allreduce_sum_f32(comm, buf, n, err));
        } else {
            int count = 0;
            for (size_t top = n; top > 0; top = top > bucket ? top - bucket : 0) {
                const size_t lo = top > bucket ? top - bucket : 0;
                ND_TRY(nd_comm_iallreduce_sum_f32(comm, buf + lo, top - lo, &reqs[count++], err));
            }
            ND_TRY(nd_comm_wait_all_busy(reqs, count, err));
        }
        if (i >= 0) times[i] = nd_comm_time() - t0;
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    *ms = 1e3 * times[iters / 2];
    return ND_OK;
}

/* Median and fastest seconds of a one-way transfer of buf (n) from rank 0
 * to rank 1: half of a ping-pong in which rank 1 sends the same n floats
 * back. The other ranks only wait. Collective (ends with a barrier). */
static nd_status p2p_seconds(nd_comm *comm, float *buf, size_t n, int iters, double *times, double seconds[2],
                             nd_error *err) {
    const int rank = nd_comm_rank(comm);
    nd_request req;
    for (int i = -5; i < iters && rank < 2; ++i) { /* 5 warm-up rounds */
        const double t0 = nd_comm_time();
        for (int leg = 0; leg < 2; ++leg) {
            if ((leg == 0) == (rank == 0)) ND_TRY(nd_comm_isend_f32(comm, buf, n, 1 - rank, 17, &req, err));
            else ND_TRY(nd_comm_irecv_f32(comm, buf, n, 1 - rank, 17, &req, err));
            ND_TRY(nd_comm_wait_all_busy(&req, 1, err));
        }
        if (i >= 0) times[i] = 0.5 * (nd_comm_time() - t0);
    }
    if (rank < 2) qsort(times, (size_t)iters, sizeof *times, cmp_double);
    seconds[0] = rank < 2 ? times[iters / 2] : 0.0;
    seconds[1] = rank < 2 ? times[0] : 0.0;
    return nd_comm_barrier(comm, err);
}

/* Median milliseconds of the node's shared-memory sum of n floats (what
 * the plain exchange uses when every rank is on one node), warm and with
 * the caches flushed first as above; both 0 when it cannot be made (ranks
 * on several nodes). Collective. */
static nd_status node_sum_ms(nd_comm *comm, size_t n, int iters, float *cold, size_t n_cold, double *times,
                             double ms[2], nd_error *err) {
    nd_node_sum *sum = NULL;
    ms[0] = ms[1] = 0.0;
    ND_TRY(nd_node_sum_create(comm, n, &sum, err));
    if (!sum) return ND_OK;
    float *buf = nd_node_sum_buffer(sum);
    for (size_t i = 0; i < n; ++i) buf[i] = 1e-3f * (float)(i % 1000);
    nd_status st = ND_OK;
    for (int pass = 0; pass < 2 && st == ND_OK; ++pass) {
        for (int i = -10; i < iters && st == ND_OK; ++i) {
            if (pass) memset(cold, i & 0xff, n_cold * sizeof(float));
            st = nd_comm_barrier(comm, err);
            const double t0 = nd_comm_time();
            if (st == ND_OK) st = nd_node_sum_arrive(sum, i, "bench", err);
            if (st == ND_OK) st = nd_node_sum_reduce(sum, 0, n, i, err);
            if (i >= 0) times[i] = nd_comm_time() - t0;
            for (size_t k = 0; k < n; k += 4096) buf[k] = 1.0f; /* finite: sums of sums would overflow */
        }
        qsort(times, (size_t)iters, sizeof *times, cmp_double);
        ms[pass] = 1e3 * times[iters / 2];
    }
    nd_node_sum_free(sum);
    return st;
}

/* Median microseconds of a plain barrier, and of the step's arrival
 * barrier with the stall watchdog on (what --timeout adds to a step). */
static nd_status barrier_us(nd_comm *comm, int iters, double *times, double us[2], nd_error *err) {
    for (int kind = 0; kind < 2; ++kind) {
        nd_comm_set_timeout(comm, kind ? 300.0 : 0.0);
        for (int i = -10; i < iters; ++i) {
            const double t0 = nd_comm_time();
            ND_TRY(kind ? nd_comm_arrive(comm, i + 20, "bench", err) : nd_comm_barrier(comm, err));
            if (i >= 0) times[i] = nd_comm_time() - t0;
        }
        qsort(times, (size_t)iters, sizeof *times, cmp_double);
        us[kind] = 1e6 * times[iters / 2];
    }
    nd_comm_set_timeout(comm, 0.0);
    return ND_OK;
}

nd_status nd_cmd_bench(nd_comm *comm, int argc, char **argv, nd_error *err) {
    const int rank = nd_comm_rank(comm), size = nd_comm_size(comm);
    bench_config c;
    int help = 0;
    ND_TRY(nd_cli_parse_command(bench_options, NUM_OPTIONS, &c, sizeof c, argc, argv,
                                "usage: [mpirun -np N] nndist bench [options]\n"
                                "GEMM GFLOP/s of the model's shapes on every rank, and the median time of an\n"
                                "allreduce of its gradient; the last line is JSON",
                                rank == 0 ? stdout : NULL, &help, err));
    if (help) return ND_OK;
    int widths[ND_MAX_LAYERS];
    const int hidden = nd_parse_widths(c.hidden, widths, ND_MAX_LAYERS - 1);
    if (hidden < 0) return ND_FAIL(err, ND_ERR_ARG, "--hidden: '%s' is not a list of positive widths", c.hidden);
    char why[200];
    nd_model_spec spec;
    nd_model_spec_plain(&spec, c.inputs, widths, hidden, (nd_activation){ND_ACT_RELU, 0.0f}, c.outputs);
    if (c.arch[0] && nd_arch_parse(c.arch, (nd_activation){ND_ACT_RELU, 0.0f}, &spec, why, sizeof why) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': %s", c.arch, why);
    if (c.batch < 1 || c.threads < 1 || c.iters < 1 || !(c.seconds > 0.0f) || c.bucket_kb < 1)
        return ND_FAIL(err, ND_ERR_ARG,
                       "bench: --batch, --threads, --iters, --seconds and --bucket-kb must be positive");
    nd_model m;
    nd_status st = nd_model_create(&m, &spec, c.batch, err);
    const size_t widest = (size_t)c.batch * (size_t)m.max_width;
    const size_t n = m.num_params + 2; /* the gradient and the step's loss/hit tail, as in training */
    const size_t bucket = (size_t)c.bucket_kb * 1024 / sizeof(float);
    const int nreq = (int)(n / bucket) + 2;
    float *x = st == ND_OK ? nd_buffer_alloc(widest) : NULL, *y = x ? nd_buffer_alloc(widest) : NULL;
    float *z = y ? nd_buffer_alloc(widest) : NULL;
    double *times = calloc((size_t)c.iters, sizeof(double));
    nd_request *reqs = calloc((size_t)nreq, sizeof *reqs);
    float *cold = size > 1 ? nd_buffer_alloc(COLD_FLOATS) : NULL;
    if (st == ND_OK && (!z || !times || !reqs || (size > 1 && !cold)))
        st = ND_FAIL(err, ND_ERR_NOMEM, "bench: cannot allocate buffers");
    st = nd_comm_agree(comm, st, err);
    double lat[2] = {0.0, 0.0}, p2p[2] = {0.0, 0.0}; /* seconds, median and fastest: 1 float, the gradient */
    if (st == ND_OK) {
        nd_blas_set_threads(c.threads);
        nd_model_init_params(&m, 1, ND_INIT_HE);
        nd_rng rng;
        nd_rng_seed(&rng, 7, 0xbe4c, (uint64_t)rank);
        for (size_t i = 0; i < widest; ++i) x[i] = (float)nd_rng_uniform(&rng), y[i] = (float)nd_rng_uniform(&rng);
        if (size > 1) st = p2p_seconds(comm, m.grad, 1, c.iters, times, lat, err);
        if (st == ND_OK && size > 1) st = p2p_seconds(comm, m.grad, n, c.iters, times, p2p, err);
        if (st == ND_OK && rank == 0 && size > 1)
            printf("p2p: latency %.1f us (half a 1-float ping-pong), the gradient (%.2f MB) one way in %.3f ms: "
                   "%.2f Gbit/s (median of %d, ranks 0 and 1; fastest %.1f us, %.3f ms)\n",
                   1e6 * lat[0], 4e-6 * (double)n, 1e3 * p2p[0], 32e-9 * (double)n / (p2p[0] - lat[0]), c.iters,
                   1e6 * lat[1], 1e3 * p2p[1]);
    }
    if (st == ND_OK && !c.p2p_only) {
        const double fps = nd_model_train_flops_per_sample(&m);
        double rate[2];
        rate[0] = gemm_rate(&m, c.batch, c.seconds, x, y, z, rank == 0);
        rate[1] = -rate[0];
        double sum = rate[0];
        st = nd_comm_allreduce_sum_f64(comm, &sum, 1, err);
        if (st == ND_OK) st = nd_comm_allreduce_max_f64(comm, &rate[1], 1, err); /* -min */
        double blocking = 0.0, blocking_min = 0.0, bucketed = 0.0, cold_ms = 0.0;
        if (st == ND_OK && size > 1)
            st = allreduce_ms(comm, m.grad, n, 0, reqs, c.iters, NULL, 0, times, &blocking, err);
        if (st == ND_OK && size > 1) blocking_min = 1e3 * times[0];
        if (st == ND_OK && size > 1)
            st = allreduce_ms(comm, m.grad, n, bucket, reqs, c.iters, NULL, 0, times, &bucketed, err);
        if (st == ND_OK && size > 1)
            st = allreduce_ms(comm, m.grad, n, 0, reqs, c.iters, cold, COLD_FLOATS, times, &cold_ms, err);
        double shm[2] = {0.0, 0.0};
        if (st == ND_OK && size > 1) st = node_sum_ms(comm, n, c.iters, cold, COLD_FLOATS, times, shm, err);
        double bar[2] = {0.0, 0.0};
        if (st == ND_OK && size > 1) st = barrier_us(comm, c.iters, times, bar, err);
        if (st == ND_OK && rank == 0) {
            const double mean = sum / size;
            printf("model %zu parameters, %.0f GEMM FLOPs per training sample\n", m.num_weights, fps);
            printf("gemm: %.1f GFLOP/s per rank (mean of %d ranks, slowest %.1f) with %d BLAS thread(s): "
                   "compute-bound rate %.0f samples/s per rank\n",
                   mean, size, -rate[1], c.threads, mean * 1e9 / fps);
            if (size > 1)
                printf("allreduce of %zu floats (%.2f MB) over %d ranks: %.3f ms blocking, %.3f ms as %zu-KiB "
                       "non-blocking buckets, %.3f ms blocking with the caches flushed first (median of %d)\n",
                       n, 4e-6 * (double)n, size, blocking, bucketed, bucket * sizeof(float) / 1024, cold_ms, c.iters);
            if (size > 1 && shm[0] > 0.0)
                printf("shared-memory sum of the same floats (one node, what sync uses): %.3f ms, %.3f ms with the "
                       "caches flushed first\n",
                       shm[0], shm[1]);
            if (size > 1)
                printf("barrier: %.1f us plain, %.1f us as the step's arrival with the stall watchdog on\n", bar[0],
                       bar[1]);
            printf("{\"ranks\": %d, \"threads\": %d, \"batch\": %d, \"parameters\": %zu, \"flops_per_sample\": %.0f, "
                   "\"gemm_gflops\": %.2f, \"gemm_gflops_min\": %.2f, \"compute_bound_samples_per_s\": %.0f, "
                   "\"gradient_bytes\": %zu, \"allreduce_ms\": %.4f, \"bucketed_allreduce_ms\": %.4f, "
                   "\"cold_allreduce_ms\": %.4f, \"node_sum_ms\": %.4f, \"cold_node_sum_ms\": %.4f, "
                   "\"barrier_us\": %.2f, \"arrival_us\": %.2f, "
                   "\"p2p_latency_us\": %.2f, \"p2p_ms\": %.4f, \"allreduce_min_ms\": %.4f, "
                   "\"p2p_latency_min_us\": %.2f, \"p2p_min_ms\": %.4f}\n",
                   size, c.threads, c.batch, m.num_weights, fps, mean, -rate[1], mean * 1e9 / fps, n * sizeof(float),
                   blocking, bucketed, cold_ms, shm[0], shm[1], bar[0], bar[1], 1e6 * lat[0], 1e3 * p2p[0],
                   blocking_min, 1e6 * lat[1], 1e3 * p2p[1]);
            fflush(stdout);
        }
    }
    free(reqs);
    free(times);
    nd_buffer_free(cold);
    nd_buffer_free(x);
    nd_buffer_free(y);
    nd_buffer_free(z);
    nd_model_destroy(&m);
    return st;
}
