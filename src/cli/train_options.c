/* The options of `nndist train`: defaults, help and validation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/sched.h"

#include "nndist/train.h"

#define F(type, field) ND_CLI_FIELD(type, nd_train_config, field)

const nd_cli_option nd_train_options[] = {
    {"config", F(STR, config), "", "read options from FILE (key = value); the command line wins"},
    {"data", F(STR, data), "", "HDF5 dataset (layout: data/README.md) [required]"},
    {"mode", F(STR, mode), "sync", "sync (allreduce), async (parameter servers) or ssp (bounded staleness)"},
    {"servers", F(INT, servers), "1", "async/ssp: parameter-server ranks (ranks 0..K-1); the rest are workers"},
    {"max-staleness", F(INT, max_staleness), "0", "ssp: a worker may run at most this many updates ahead of the slowest"},
    {"staleness-lr", F(BOOL, staleness_lr), "false", "async/ssp: divide the rate by each gradient's staleness (Zhang et al. 2016)"},
    {"overlap", F(BOOL, overlap), "false", "async/ssp: compute the next gradient while the exchange is in flight (+1 staleness)"},
    {"straggle", F(STR, straggle), "", "RANK:FACTOR slows RANK's compute FACTOR times (sleeps (FACTOR-1) x its step time)"},
    {"arch", F(STR, arch), "",
     "whole network, e.g. 784:drop0.2-1024:bn:relu:drop0.3-512:relu-10 (README); overrides --hidden and the options below"},
    {"hidden", F(STR, hidden), "512,256", "hidden layer widths, comma-separated ('' for none)"},
    {"act", F(STR, act), "relu", "hidden activation: relu, leaky_relu, elu, tanh, sigmoid, maxout"},
    {"leaky-alpha", F(FLOAT, leaky_alpha), "0.01", "negative slope of leaky_relu"},
    {"elu-alpha", F(FLOAT, elu_alpha), "1", "elu: the value it saturates to is -alpha"},
    {"maxout-pieces", F(INT, maxout_pieces), "2", "maxout: linear pieces per unit"},
    {"batch-norm", F(BOOL, batch_norm), "false", "batch normalization before every hidden activation"},
    {"sync-bn", F(BOOL, sync_bn), "false", "batch norm statistics over the global batch (all ranks; sync mode)"},
    {"bn-momentum", F(FLOAT, bn_momentum), "0.1", "batch norm running statistics: weight of each new batch"},
    {"bn-eps", F(FLOAT, bn_eps), "1e-5", "batch norm: added to the variance"},
    {"dropout", F(FLOAT, dropout), "0", "drop probability after every hidden activation (inverted dropout)"},
    {"input-dropout", F(FLOAT, input_dropout), "0", "drop probability of the input features"},
    {"init", F(STR, init), "he", "weights: he (normal, sqrt(2/fan_in)), xavier (uniform), lecun (uniform), small (N(0,0.01^2))"},
    {"output-bias", F(STR, output_bias), "zero", "output biases: zero, or priors (log class frequencies of /train)"},
    {"loss", F(STR, loss), "softmax_ce",
     "softmax_ce, hinge, squared_hinge (labels); sigmoid_bce (multi-label), l2, l1 (regression): N x K float /y"},
    {"epochs", F(INT, epochs), "10", "passes over the training split"},
    {"batch", F(INT, batch), "64", "samples per step on each rank"},
    {"opt", F(STR, opt), "momentum", "optimizer: sgd, momentum, nesterov, adam, adamw, adagrad, rmsprop, adadelta"},
    {"lr", F(FLOAT, lr), "0.01", "learning rate at --ref-batch samples per step"},
    {"ref-batch", F(INT, ref_batch), "0", "batch that --lr is meant for; 0 = --batch (peak = lr*global/ref)"},
    {"momentum", F(FLOAT, momentum), "0.9", "momentum / nesterov coefficient"},
    {"momentum-final", F(FLOAT, momentum_final), "-1", "momentum schedule: move linearly to this value (-1: off)"},
    {"momentum-epochs", F(FLOAT, momentum_epochs), "10", "momentum schedule: epochs to reach --momentum-final"},
    {"beta1", F(FLOAT, beta1), "0.9", "adam first-moment decay"},
    {"beta2", F(FLOAT, beta2), "0.999", "adam second-moment decay"},
    {"eps", F(FLOAT, eps), "1e-8", "epsilon of adam, adamw, adagrad, rmsprop, adadelta"},
    {"rho", F(FLOAT, rho), "0.99", "decay rate of rmsprop and adadelta's averages (adadelta: 0.9-0.95)"},
    {"warmup-steps", F(LONG, warmup_steps), "0", "steps of linear warmup from --lr to the scaled peak"},
    {"lr-schedule", F(STR, lr_schedule), "constant",
     "after warmup: constant, step, exp, inv, sqrt, invsqrt, linear, cosine, sgdr, gbc, plateau, onecycle"},
    {"lr-milestones", F(STR, lr_milestones), "", "step: epochs at which the rate is multiplied by --lr-gamma"},
    {"lr-gamma", F(FLOAT, lr_gamma), "0.1", "step and plateau: multiplier"},
    {"lr-k", F(FLOAT, lr_k), "0.1", "exp, inv, sqrt: decay rate per epoch"},
    {"lr-min", F(FLOAT, lr_min), "0", "cosine and sgdr: the rate at the bottom"},
    {"sgdr-t0", F(FLOAT, sgdr_t0), "10", "sgdr: first cycle, epochs"},
    {"sgdr-mult", F(FLOAT, sgdr_mult), "2", "sgdr: cycle growth"},
    {"gbc-tau", F(FLOAT, gbc_tau), "0", "gbc: epochs to reach the floor (0: the whole run)"},
    {"gbc-floor", F(FLOAT, gbc_floor), "0.01", "gbc: the floor as a fraction of the peak"},
    {"onecycle-pct", F(FLOAT, onecycle_pct), "0.3", "onecycle: fraction of the run spent rising"},
    {"onecycle-div", F(FLOAT, onecycle_div), "25", "onecycle: start = peak / div"},
    {"onecycle-final-div", F(FLOAT, onecycle_final_div), "10000", "onecycle: end = start / final-div"},
    {"plateau-patience", F(INT, plateau_patience), "3", "plateau: epochs without a better validation accuracy"},
    {"clip-norm", F(FLOAT, clip_norm), "0", "clip the averaged gradient to this global L2 norm (0 = off)"},
    {"clip-value", F(FLOAT, clip_value), "0", "clamp each averaged gradient value to [-v, v] (0 = off)"},
    {"weight-decay", F(FLOAT, weight_decay), "0", "L2 penalty 0.5*wd*|w|^2 on weights: added to the gradient; adamw: decoupled"},
    {"regularize-bias", F(BOOL, regularize_bias), "false", "apply --weight-decay, --l1 and adamw's decay to biases too"},
    {"seed", F(U64, seed), "1", "seed of initialization and shuffling"},
    {"deterministic", F(BOOL, deterministic), "false", "results independent of the rank count (sync; see README)"},
    {"micro-batches", F(INT, micro_batches), "8", "--deterministic: micro-batches of --batch rows per step (>= ranks)"},
    {"shuffle", F(BOOL, shuffle), "true", "reshuffle each rank's rows every epoch (--no-shuffle: file order)"},
    {"normalize", F(STR, normalize), "global", "features: global or feature (mean/std), minmax (to [-1, 1]) or none"},
    {"eval-batch", F(INT, eval_batch), "1024", "rows per forward pass during evaluation"},
    {"threads", F(INT, threads), "0", "BLAS threads per rank; 0 = this node's cores / ranks on it"},
    {"progress", F(STR, progress), "auto", "progress within an epoch: auto, bar, plain, none"},
    {"bucket-kb", F(INT, bucket_kb), "0", "sync: allreduce the gradient in buckets of this many KiB during backward, last layer first (0: one allreduce after backward)"},
    {"shard-optimizer", F(BOOL, shard_optimizer), "false", "sync: ZeRO-1, each rank keeps the optimizer state of 1/ranks of the parameters (reduce-scatter, update, allgather)"},
    {"stream-mb", F(FLOAT, stream_mb), "0", "sync: stream the training rows from the file through two windows within this many MB, read in the background (0: load the shard)"},
    {"timeout", F(FLOAT, timeout), "300", "stall watchdog: end the job when a step's exchange waits longer than this many seconds, naming the ranks that did not arrive (0 = wait forever)"},
    {"on-nan", F(STR, on_nan), "stop", "a step whose loss or gradient is not finite: stop before applying it (stop), or drop it (skip; sync)"},
    {"max-nan-skips", F(INT, max_nan_skips), "10", "--on-nan skip: stop after this many bad steps in a row"},
    {"fault-nan-step", F(LONG, fault_nan_step), "0", "testing: make the first worker's (rank 0's in sync) loss NaN at this step (1-based; 0 = never)"},
    {"profile", F(INT, profile), "0", "sync: rank 0 prints the time of each phase of the first N steps"},
    {"l1", F(FLOAT, l1), "0", "L1 penalty on weights (not biases); with --weight-decay: the elastic net"},
    {"max-norm", F(FLOAT, max_norm), "0", "after each update, scale each neuron's incoming weights to L2 norm <= c (sync; 0 = off)"},
    {"early-stop", F(INT, early_stop), "0", "stop after N epochs without a better validation accuracy; end with the best weights"},
    {"ema", F(FLOAT, ema), "0", "keep a moving average of the weights with this decay (e.g. 0.999), evaluated and saved too"},
    {"checkpoint-dir", F(STR, checkpoint_dir), "", "rank 0 writes checkpoints here (each epoch, and see --checkpoint-every)"},
    {"checkpoint-every", F(LONG, checkpoint_every), "0", "also checkpoint every N steps (0: only at epoch ends)"},
    {"keep", F(INT, keep), "3", "keep the N newest checkpoints (plus the best one)"},
    {"resume", F(STR, resume), "", "continue from a checkpoint FILE, or 'auto': the newest valid one in --checkpoint-dir"},
    {"metrics", F(STR, metrics), "", "write a JSON line per epoch to FILE"},
    {"summary", F(STR, summary), "", "write the run summary (JSON) to FILE"},
};
const int nd_train_num_options = (int)(sizeof nd_train_options / sizeof nd_train_options[0]);

nd_status nd_train_config_parse(nd_train_config *cfg, int argc, char **argv, int *help,
                                nd_error *err) {
    memset(cfg, 0, sizeof *cfg);
    ND_TRY(nd_cli_defaults(nd_train_options, nd_train_num_options, cfg, err));
    return nd_cli_parse(nd_train_options, nd_train_num_options, cfg, argc, argv, help, err);
}

int nd_parse_widths(const char *text, int *widths, int max) {
    int n = 0;
    const char *p = text;
    while (*p == ' ') ++p;
    if (!*p) return 0;
    for (;;) {
        if (*p < '0' || *p > '9') return -1;
        long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > 1 << 24) return -1;
        }
        if (v <= 0 || n == max) return -1;
        widths[n++] = (int)v;
        if (!*p) return n;
        if (*p++ != ',') return -1;
    }
}

nd_status nd_train_make_schedule(const nd_train_config *c, int global_batch, long steps_per_epoch,
                                 nd_lr_schedule *s, nd_error *err) {
    memset(s, 0, sizeof *s);
    s->base_lr = c->lr;
    s->ref_batch = c->ref_batch > 0 ? c->ref_batch : c->batch;
    s->global_batch = global_batch;
    s->warmup_steps = c->warmup_steps;
    if (nd_sched_parse(c->lr_schedule, &s->kind) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--lr-schedule: '%s' is not one of constant, step, exp, inv, sqrt, invsqrt, "
                                        "linear, cosine, sgdr, gbc, plateau, onecycle", c->lr_schedule);
    s->steps_per_epoch = steps_per_epoch;
    s->total_steps = (long)c->epochs * steps_per_epoch;
    s->gamma = c->lr_gamma;
    s->k = c->lr_k;
    s->lr_min = c->lr_min;
    s->sgdr_t0 = c->sgdr_t0;
    s->sgdr_mult = c->sgdr_mult;
    s->gbc_floor = c->gbc_floor;
    s->gbc_tau = c->gbc_tau > 0 ? (long)(c->gbc_tau * steps_per_epoch) : s->total_steps - c->warmup_steps;
    s->onecycle_pct = c->onecycle_pct;
    s->onecycle_div = c->onecycle_div;
    s->onecycle_final_div = c->onecycle_final_div;
    s->plateau_scale = 1.0;
    const char *p = c->lr_milestones;
    while (*p) {
        char *end;
        double ep = strtod(p, &end);
        if (end == p || ep <= 0 || s->num_milestones == ND_MAX_MILESTONES || (*end && *end != ','))
            return ND_FAIL(err, ND_ERR_ARG, "--lr-milestones: '%s' is not a list of up to %d positive epochs like 30,60",
                           c->lr_milestones, ND_MAX_MILESTONES);
        s->milestones[s->num_milestones++] = (long)(ep * steps_per_epoch + 0.5);
        p = *end ? end + 1 : end;
    }
    if (s->kind == ND_SCHED_STEP && s->num_milestones == 0)
        return ND_FAIL(err, ND_ERR_ARG, "--lr-schedule step: give --lr-milestones (epochs)");
    if (!(s->gamma > 0.0f && s->gamma <= 1.0f)) return ND_FAIL(err, ND_ERR_ARG, "--lr-gamma: %g must be in (0, 1]", (double)s->gamma);
    if (!(s->k >= 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--lr-k: %g must be >= 0", (double)s->k);
    if (!(s->lr_min >= 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--lr-min: %g must be >= 0", (double)s->lr_min);
    if (!(s->sgdr_t0 > 0.0f && s->sgdr_mult >= 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--sgdr-t0 must be > 0 and --sgdr-mult >= 1");
    if (!(s->gbc_floor >= 0.0f && s->gbc_floor <= 1.0f) || c->gbc_tau < 0.0f)
        return ND_FAIL(err, ND_ERR_ARG, "--gbc-floor must be in [0, 1] and --gbc-tau >= 0");
    if (!(s->onecycle_pct > 0.0f && s->onecycle_pct < 1.0f && s->onecycle_div >= 1.0f && s->onecycle_final_div >= 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--onecycle-pct must be in (0, 1), --onecycle-div and --onecycle-final-div >= 1");
    if (c->plateau_patience < 1)
        return ND_FAIL(err, ND_ERR_ARG, "--plateau-patience: %d must be at least 1", c->plateau_patience);
    return ND_OK;
}

/* The default activation of cfg, its alpha set for leaky_relu or elu. */
static nd_activation config_act(const nd_train_config *c) {
    nd_activation a = {ND_ACT_RELU, 0.0f};
    nd_activation_parse(c->act, &a.kind);
    a.alpha = a.kind == ND_ACT_ELU ? c->elu_alpha : c->leaky_alpha;
    return a;
}

nd_status nd_train_model_spec(const nd_train_config *c, int input_dim, int k, nd_model_spec *spec, nd_error *err) {
    const nd_activation act = config_act(c);
    if (c->arch[0]) {
        char why[200];
        if (nd_arch_parse(c->arch, act, spec, why, sizeof why) != 0)
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': %s", c->arch, why);
        if (spec->input_dim != input_dim || spec->num_classes != k)
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': takes %d inputs and gives %d outputs, the data has %d and %d",
                           c->arch, spec->input_dim, spec->num_classes, input_dim, k);
    } else {
        int widths[ND_MAX_LAYERS];
        const int n = nd_parse_widths(c->hidden, widths, ND_MAX_LAYERS - 1);
        if (n < 0) return ND_FAIL(err, ND_ERR_ARG, "--hidden: '%s' is not a list of widths", c->hidden);
        nd_model_spec_plain(spec, input_dim, widths, n, act, k);
        spec->input_drop = c->input_dropout;
        for (int l = 0; l < n; ++l) {
            spec->hidden[l].batch_norm = c->batch_norm;
            spec->hidden[l].drop = c->dropout;
            if (act.kind == ND_ACT_MAXOUT) spec->hidden[l].pieces = c->maxout_pieces;
        }
    }
    spec->bn_eps = c->bn_eps;
    return ND_OK;
}

int nd_parse_straggle(const char *text, int *rank, float *factor) {
    *rank = -1;
    *factor = 1.0f;
    if (!text[0]) return 0;
    char *end = NULL;
    long r = strtol(text, &end, 10);
    if (end == text || *end != ':' || r < 0 || r > 1 << 24) return -1;
    const char *f = end + 1;
    double v = strtod(f, &end);
    if (end == f || *end || !(v >= 1.0 && v <= 1000.0)) return -1;
    *rank = (int)r;
    *factor = (float)v;
    return 0;
}

nd_status nd_train_config_validate(const nd_train_config *c, nd_error *err) {
    int widths[ND_MAX_LAYERS];
    nd_act_kind act;
    nd_opt_kind opt;
    nd_norm_kind norm;
    if (!c->data[0]) return ND_FAIL(err, ND_ERR_ARG, "--data: no dataset given (an HDF5 file, see data/README.md)");
    if (strcmp(c->mode, "sync") && strcmp(c->mode, "async") && strcmp(c->mode, "ssp"))
        return ND_FAIL(err, ND_ERR_ARG, "--mode: '%s' is not one of sync, async, ssp", c->mode);
    if (c->servers < 1) return ND_FAIL(err, ND_ERR_ARG, "--servers: %d must be at least 1", c->servers);
    if (c->max_staleness < 0)
        return ND_FAIL(err, ND_ERR_ARG, "--max-staleness: %d must be >= 0", c->max_staleness);
    int straggle_rank;
    float straggle_factor;
    if (nd_parse_straggle(c->straggle, &straggle_rank, &straggle_factor) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--straggle: '%s' is not RANK:FACTOR with RANK >= 0 and FACTOR >= 1",
                       c->straggle);
    if (nd_parse_widths(c->hidden, widths, ND_MAX_LAYERS - 1) < 0)
        return ND_FAIL(err, ND_ERR_ARG, "--hidden: '%s' is not a list of positive widths like 512,256 (at most %d)",
                       c->hidden, ND_MAX_LAYERS - 1);
    if (nd_activation_parse(c->act, &act) != 0 || act == ND_ACT_IDENTITY)
        return ND_FAIL(err, ND_ERR_ARG, "--act: '%s' is not one of relu, leaky_relu, elu, tanh, sigmoid, maxout", c->act);
    if (!(c->leaky_alpha > 0.0f && c->leaky_alpha < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--leaky-alpha: %g must be in (0, 1)", (double)c->leaky_alpha);
    if (!(c->elu_alpha > 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--elu-alpha: %g must be positive", (double)c->elu_alpha);
    if (c->maxout_pieces < 2 || c->maxout_pieces > 64)
        return ND_FAIL(err, ND_ERR_ARG, "--maxout-pieces: %d must be in [2, 64]", c->maxout_pieces);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--dropout: %g must be a probability in [0, 1)", (double)c->dropout);
    if (!(c->input_dropout >= 0.0f && c->input_dropout < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--input-dropout: %g must be a probability in [0, 1)", (double)c->input_dropout);
    if (!(c->bn_momentum > 0.0f && c->bn_momentum <= 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--bn-momentum: %g must be in (0, 1]", (double)c->bn_momentum);
    if (!(c->bn_eps > 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--bn-eps: %g must be positive", (double)c->bn_eps);
    if (c->sync_bn && (strcmp(c->mode, "sync") || c->deterministic))
        return ND_FAIL(err, ND_ERR_ARG, "--sync-bn: only with --mode sync without --deterministic "
                                        "(deterministic mode normalizes each fixed micro-batch)");
    if (c->arch[0]) {
        nd_model_spec probe;
        char why[200];
        if (nd_arch_parse(c->arch, (nd_activation){act, c->leaky_alpha}, &probe, why, sizeof why) != 0)
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': %s", c->arch, why);
    }
    nd_init_kind init;
    if (nd_init_parse(c->init, &init) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--init: '%s' is not one of he, xavier, lecun, small", c->init);
    if (strcmp(c->output_bias, "zero") && strcmp(c->output_bias, "priors"))
        return ND_FAIL(err, ND_ERR_ARG, "--output-bias: '%s' is not one of zero, priors", c->output_bias);
    nd_loss_kind loss;
    if (nd_loss_parse(c->loss, &loss) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--loss: '%s' is not one of softmax_ce, hinge, squared_hinge, sigmoid_bce, l2, l1",
                       c->loss);
    if (nd_loss_takes_targets(loss) && !strcmp(c->output_bias, "priors"))
        return ND_FAIL(err, ND_ERR_ARG, "--output-bias priors: only with a classification loss, not --loss %s", c->loss);
    if (c->epochs <= 0) return ND_FAIL(err, ND_ERR_ARG, "--epochs: %d must be positive", c->epochs);
    if (c->batch <= 0) return ND_FAIL(err, ND_ERR_ARG, "--batch: %d must be positive", c->batch);
    if (c->eval_batch <= 0) return ND_FAIL(err, ND_ERR_ARG, "--eval-batch: %d must be positive", c->eval_batch);
    if (nd_opt_parse(c->opt, &opt) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--opt: '%s' is not one of sgd, momentum, nesterov, adam, adamw, adagrad, rmsprop, adadelta",
                       c->opt);
    if (!(c->lr > 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--lr: %g must be positive", (double)c->lr);
    if (c->ref_batch < 0) return ND_FAIL(err, ND_ERR_ARG, "--ref-batch: %d must be >= 0", c->ref_batch);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--momentum: %g must be in [0, 1)", (double)c->momentum);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--beta1: %g must be in [0, 1)", (double)c->beta1);
    if (!(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--beta2: %g must be in [0, 1)", (double)c->beta2);
    if (!(c->eps > 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--eps: %g must be positive", (double)c->eps);
    if (!(c->rho >= 0.0f && c->rho < 1.0f)) return ND_FAIL(err, ND_ERR_ARG, "--rho: %g must be in [0, 1)", (double)c->rho);
    if (c->momentum_final != -1.0f && !(c->momentum_final >= 0.0f && c->momentum_final < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--momentum-final: %g must be in [0, 1) (or -1: off)", (double)c->momentum_final);
    if (!(c->momentum_epochs > 0.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--momentum-epochs: %g must be positive", (double)c->momentum_epochs);
    if (c->warmup_steps < 0) return ND_FAIL(err, ND_ERR_ARG, "--warmup-steps: %ld must be >= 0", c->warmup_steps);
    if (c->clip_norm < 0.0f) return ND_FAIL(err, ND_ERR_ARG, "--clip-norm: %g must be >= 0", (double)c->clip_norm);
    if (c->clip_value < 0.0f) return ND_FAIL(err, ND_ERR_ARG, "--clip-value: %g must be >= 0", (double)c->clip_value);
    if (c->weight_decay < 0.0f)
        return ND_FAIL(err, ND_ERR_ARG, "--weight-decay: %g must be >= 0", (double)c->weight_decay);
    if (nd_norm_parse(c->normalize, &norm) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--normalize: '%s' is not one of global, feature, minmax, none", c->normalize);
    if (c->bucket_kb < 0 || c->bucket_kb > 1 << 20)
        return ND_FAIL(err, ND_ERR_ARG, "--bucket-kb: %d must be in [0, 1048576]", c->bucket_kb);
    if (c->bucket_kb > 0 && (strcmp(c->mode, "sync") || c->deterministic || c->shard_optimizer))
        return ND_FAIL(err, ND_ERR_ARG, "--bucket-kb: only with --mode sync, without --deterministic or "
                                        "--shard-optimizer (they exchange gradients their own way)");
    if (c->shard_optimizer && (strcmp(c->mode, "sync") || c->deterministic))
        return ND_FAIL(err, ND_ERR_ARG, "--shard-optimizer: only with --mode sync without --deterministic "
                                        "(async servers already hold one slice each)");
    if (!(c->stream_mb >= 0.0f && c->stream_mb < 1e9f))
        return ND_FAIL(err, ND_ERR_ARG, "--stream-mb: %g must be >= 0 (MB)", (double)c->stream_mb);
    if (c->stream_mb > 0.0f && (strcmp(c->mode, "sync") || c->deterministic))
        return ND_FAIL(err, ND_ERR_ARG, "--stream-mb: only with --mode sync without --deterministic in this version");
    if (!(c->timeout >= 0.0f && c->timeout <= 1e7f))
        return ND_FAIL(err, ND_ERR_ARG, "--timeout: %g must be between 0 (off) and 1e7 seconds", (double)c->timeout);
    if (strcmp(c->on_nan, "stop") && strcmp(c->on_nan, "skip"))
        return ND_FAIL(err, ND_ERR_ARG, "--on-nan: '%s' is not one of stop, skip", c->on_nan);
    if (!strcmp(c->on_nan, "skip") && strcmp(c->mode, "sync"))
        return ND_FAIL(err, ND_ERR_ARG, "--on-nan skip: only with --mode sync (async servers apply gradients as they come)");
    if (c->max_nan_skips < 0) return ND_FAIL(err, ND_ERR_ARG, "--max-nan-skips: %d must be >= 0", c->max_nan_skips);
    if (c->fault_nan_step < 0) return ND_FAIL(err, ND_ERR_ARG, "--fault-nan-step: %ld must be >= 0", c->fault_nan_step);
    if (c->profile < 0) return ND_FAIL(err, ND_ERR_ARG, "--profile: %d must be >= 0", c->profile);
    if (c->threads < 0 || c->threads > 1024)
        return ND_FAIL(err, ND_ERR_ARG, "--threads: %d must be in [0, 1024]", c->threads);
    if (strcmp(c->progress, "auto") && strcmp(c->progress, "bar") && strcmp(c->progress, "plain") &&
        strcmp(c->progress, "none"))
        return ND_FAIL(err, ND_ERR_ARG, "--progress: '%s' is not one of auto, bar, plain, none", c->progress);
    if (c->deterministic && strcmp(c->mode, "sync"))
        return ND_FAIL(err, ND_ERR_ARG, "--deterministic: only with --mode sync");
    if (c->micro_batches < 1 || c->micro_batches > 1 << 16)
        return ND_FAIL(err, ND_ERR_ARG, "--micro-batches: %d must be in [1, 65536]", c->micro_batches);
    nd_lr_schedule probe;
    ND_TRY(nd_train_make_schedule(c, c->batch, 100, &probe, err)); /* names and values; sizes come later */
    if (probe.kind == ND_SCHED_PLATEAU && strcmp(c->mode, "sync"))
        return ND_FAIL(err, ND_ERR_ARG, "--lr-schedule plateau: only with --mode sync in this version");
    if (!(c->l1 >= 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--l1: %g must be >= 0", (double)c->l1);
    if (!(c->max_norm >= 0.0f)) return ND_FAIL(err, ND_ERR_ARG, "--max-norm: %g must be >= 0", (double)c->max_norm);
    if (c->max_norm > 0.0f && strcmp(c->mode, "sync"))
        return ND_FAIL(err, ND_ERR_ARG, "--max-norm: only with --mode sync (a server's slice may split a neuron)");
    if (c->early_stop < 0) return ND_FAIL(err, ND_ERR_ARG, "--early-stop: %d must be >= 0", c->early_stop);
    if (!(c->ema >= 0.0f && c->ema < 1.0f)) return ND_FAIL(err, ND_ERR_ARG, "--ema: %g must be in [0, 1)", (double)c->ema);
    if ((c->early_stop || c->ema > 0.0f) && strcmp(c->mode, "sync"))
        return ND_FAIL(err, ND_ERR_ARG, "--early-stop/--ema: only with --mode sync in this version");
    if (c->checkpoint_every < 0)
        return ND_FAIL(err, ND_ERR_ARG, "--checkpoint-every: %ld must be >= 0", c->checkpoint_every);
    if (c->keep < 1) return ND_FAIL(err, ND_ERR_ARG, "--keep: %d must be at least 1", c->keep);
    if (!strcmp(c->resume, "auto") && !c->checkpoint_dir[0])
        return ND_FAIL(err, ND_ERR_ARG, "--resume auto: needs --checkpoint-dir to look in");
    return ND_OK;
}
