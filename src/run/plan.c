/* The options of `nndist train` (defaults, ranges, choices, help) and the
 * plan resolved from them: which exchange and feed a run uses, and whether
 * every option fits their capabilities. */
#include "nndist/plan.h"

#include "nndist/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(type, field) ND_CLI_FIELD(type, nd_train_config, field)
#define R(type, field, range) ND_CLI_RANGED(type, nd_train_config, field, range)
#define E(field, choices) ND_CLI_CHOICE(nd_train_config, field, choices)

const char *const nd_mode_names[] =
    {[ND_MODE_SYNC] = "sync", [ND_MODE_ASYNC] = "async", [ND_MODE_SSP] = "ssp", [ND_MODE_LOCAL] = "local", NULL};
const char *const nd_compress_names[] = {
    [ND_COMPRESS_NONE] = "none", [ND_COMPRESS_FP16] = "fp16",         [ND_COMPRESS_BF16] = "bf16",
    [ND_COMPRESS_TOPK] = "topk", [ND_COMPRESS_POWERSGD] = "powersgd", NULL};
static const char *const bias_names[] = {[ND_BIAS_ZERO] = "zero", [ND_BIAS_PRIORS] = "priors", NULL};
static const char *const on_nan_names[] = {[ND_ON_NAN_STOP] = "stop", [ND_ON_NAN_SKIP] = "skip", NULL};
/* In the order of nd_stop_signals. */
static const char *const fault_signal_names[] = {"term", "int", "usr1", "usr2", NULL};

const nd_cli_option nd_train_options[] = {
    {"config", F(STR, config), "", "read options from FILE (key = value); the command line wins"},
    {"data", F(STR, data), "", "HDF5 dataset (layout: data/README.md) [required]"},
    {"mode", E(mode, nd_mode_names), "sync",
     "sync: allreduce; async: parameter servers; ssp: parameter servers with bounded staleness; local: local SGD, replicas averaged every --sync-every steps"},
    {"servers", R(INT, servers, ">= 1"), "1", "async/ssp: parameter-server ranks (ranks 0..K-1); the rest are workers"},
    {"max-staleness", R(INT, max_staleness, ">= 0"), "0",
     "ssp: a worker may run at most this many updates ahead of the slowest"},
    {"staleness-lr", F(BOOL, staleness_lr), "false",
     "async/ssp: divide the rate by each gradient's staleness (Zhang et al. 2016)"},
    {"overlap", F(BOOL, overlap), "false",
     "async/ssp: compute the next gradient while the exchange is in flight (+1 staleness)"},
    {"sync-every", R(INT, sync_every, "[1, 1000000]"), "8",
     "local: average the replicas' parameters every H steps (and at every epoch's end)"},
    {"sync-warmup", R(LONG, sync_warmup, ">= 0"), "0",
     "local: the first S steps are plain sync steps, local SGD after (post-local SGD)"},
    {"outer-momentum", R(FLOAT, outer_momentum, "[0, 1)"), "0",
     "local: Nesterov momentum of the outer step on the averaged pseudo-gradient (DiLoCo; 0: plain averaging)"},
    {"outer-lr", R(FLOAT, outer_lr, "(0, 10]"), "1",
     "local: the outer step's rate (1 with momentum 0: plain averaging)"},
    {"arch", F(STR, arch), "",
     "whole network, e.g. 784:drop0.2-1024:bn:relu:drop0.3-512:relu-10 (docs/training.md); overrides --hidden and the options below"},
    {"hidden", F(STR, hidden), "512,256", "hidden layer widths, comma-separated ('' for none)"},
    {"act", E(act, nd_act_names), "relu", "hidden activation (identity is refused: it is the output layer's)"},
    {"leaky-alpha", R(FLOAT, leaky_alpha, "(0, 1)"), "0.01", "negative slope of leaky_relu"},
    {"elu-alpha", R(FLOAT, elu_alpha, "> 0"), "1", "elu: the value it saturates to is -alpha"},
    {"maxout-pieces", R(INT, maxout_pieces, "[2, 64]"), "2", "maxout: linear pieces per unit"},
    {"batch-norm", F(BOOL, batch_norm), "false", "batch normalization before every hidden activation"},
    {"sync-bn", F(BOOL, sync_bn), "false", "batch norm statistics over the global batch (all ranks; sync mode)"},
    {"bn-momentum", R(FLOAT, bn_momentum, "(0, 1]"), "0.1", "batch norm running statistics: weight of each new batch"},
    {"bn-eps", R(FLOAT, bn_eps, "> 0"), "1e-5", "batch norm: added to the variance"},
    {"dropout", R(FLOAT, dropout, "[0, 1)"), "0", "drop probability after every hidden activation (inverted dropout)"},
    {"input-dropout", R(FLOAT, input_dropout, "[0, 1)"), "0", "drop probability of the input features"},
    {"dropconnect", R(FLOAT, dropconnect, "[0, 1)"), "0",
     "DropConnect: drop probability of each hidden layer's weights, one mask per step (Wan et al. 2013)"},
    {"init", E(init, nd_init_names), "he",
     "weights: he (normal, sqrt(2/fan_in)), xavier (uniform), lecun (uniform), small (N(0,0.01^2)), zero (no hidden layers)"},
    {"output-bias", E(output_bias, bias_names), "zero",
     "output biases: zero, or priors (log class frequencies of /train; sigmoid_bce: each attribute's log(p/(1-p)))"},
    {"loss", E(loss, nd_loss_names), "softmax_ce",
     "softmax_ce, hinge, squared_hinge (labels); sigmoid_bce, binary_hinge (multi-label), l2, l1 (regression): N x K float /y"},
    {"augment-crop", R(INT, augment_crop, "[0, 64]"), "0",
     "augmentation: a random crop of each training image padded by this many pixels (0: off)"},
    {"augment-flip", F(BOOL, augment_flip), "false",
     "augmentation: mirror each training image left-right with probability 1/2 (wrong for digits and text)"},
    {"cutout", R(INT, cutout, "[0, 1024]"), "0",
     "augmentation: erase a square of this side at a random place (0: off)"},
    {"input-noise", R(FLOAT, input_noise, "[0, 100]"), "0",
     "augmentation: add Gaussian noise of this std to the normalized inputs (0: off; any data)"},
    {"mixup", R(FLOAT, mixup, "[0, 100]"), "0",
     "augmentation: mix pairs of training samples and their labels, lambda ~ Beta(a, a) (0: off; softmax_ce or float targets)"},
    {"teacher", F(STR, teacher), "",
     "distillation: checkpoints of trained networks (comma-separated, up to 8), whose mean softened probabilities the student learns too (softmax_ce)"},
    {"distill-t", R(FLOAT, distill_t, "(0, 1000]"), "4", "distillation: the softmax temperature T"},
    {"distill-alpha", R(FLOAT, distill_alpha, "[0, 1]"), "0.9",
     "distillation: loss = alpha T^2 KL(teachers || student at T) + (1 - alpha) CE(labels)"},
    {"epochs", R(INT, epochs, ">= 1"), "10", "passes over the training split"},
    {"batch", R(INT, batch, ">= 1"), "64", "samples per step on each rank"},
    {"opt", E(opt, nd_opt_names), "momentum",
     "optimizer (formulas in include/nndist/optim.h; lbfgs: full batch, give --lr 1, docs/training.md)"},
    {"lr", R(FLOAT, lr, "> 0"), "0.01", "learning rate at --ref-batch samples per step"},
    {"ref-batch", R(INT, ref_batch, ">= 0"), "0", "batch that --lr is meant for; 0 = --batch (peak = lr*global/ref)"},
    {"momentum", R(FLOAT, momentum, "[0, 1)"), "0.9", "momentum / nesterov coefficient"},
    {"momentum-final", F(FLOAT, momentum_final), "-1", "momentum schedule: move linearly to this value (-1: off)"},
    {"momentum-epochs", R(FLOAT, momentum_epochs, "> 0"), "10", "momentum schedule: epochs to reach --momentum-final"},
    {"beta1", R(FLOAT, beta1, "[0, 1)"), "0.9", "adam first-moment decay"},
    {"beta2", R(FLOAT, beta2, "[0, 1)"), "0.999", "adam second-moment decay"},
    {"eps", R(FLOAT, eps, "> 0"), "1e-8", "epsilon of adam, adamw, adagrad, rmsprop, adadelta"},
    {"rho", R(FLOAT, rho, "[0, 1)"), "0.99", "decay rate of rmsprop and adadelta's averages (adadelta: 0.9-0.95)"},
    {"rmsprop-momentum", R(FLOAT, rmsprop_momentum, "[0, 1)"), "0",
     "rmsprop: momentum of the scaled step, as PyTorch's RMSprop(momentum=) (0: none)"},
    {"warmup-steps", R(LONG, warmup_steps, ">= 0"), "0",
     "steps of linear warmup from --warmup-start x the schedule's rate up to it; the schedule starts after"},
    {"warmup-start", R(FLOAT, warmup_start, "[0, 1)"), "0",
     "warmup: step s runs at the rate x (F + (1-F)(s+1)/W); 0: from zero (its first step at 1/W)"},
    {"warmup-goyal", F(BOOL, warmup_goyal), "false",
     "warmup from --lr to the scaled peak instead (Goyal et al. 2017; nothing to ramp when batch = --ref-batch)"},
    {"lbfgs-history", R(INT, lbfgs_history, "[1, 100000]"), "100",
     "lbfgs: (s, y) pairs kept (2 x this x the parameters in floats)"},
    {"lbfgs-max-iter", R(INT, lbfgs_max_iter, "[1, 1000000]"), "20",
     "lbfgs: iterations per epoch (an epoch is one PyTorch LBFGS.step with this max_iter)"},
    {"lbfgs-max-eval", R(INT, lbfgs_max_eval, ">= 0"), "0",
     "lbfgs: full-batch evaluations per epoch (0: max-iter x 5/4, as PyTorch)"},
    {"lbfgs-line-search", E(lbfgs_line_search, nd_line_search_names), "strong_wolfe",
     "lbfgs: strong_wolfe (PyTorch's line_search_fn), or none: a fixed step of --lr"},
    {"lbfgs-tolerance-grad", R(FLOAT, lbfgs_tolerance_grad, ">= 0"), "1e-7",
     "lbfgs: an epoch ends early once max |gradient| <= this"},
    {"lbfgs-tolerance-change", R(FLOAT, lbfgs_tolerance_change, ">= 0"), "1e-9",
     "lbfgs: ... or once the step or the loss changes by less than this"},
    {"lr-schedule", E(lr_schedule, nd_sched_names), "constant", "the learning rate after the warmup"},
    {"lr-milestones", F(STR, lr_milestones), "", "step: epochs at which the rate is multiplied by --lr-gamma"},
    {"lr-gamma", R(FLOAT, lr_gamma, "(0, 1]"), "0.1", "step and plateau: multiplier"},
    {"lr-k", R(FLOAT, lr_k, ">= 0"), "0.1", "exp, inv, sqrt: decay rate per epoch"},
    {"lr-min", R(FLOAT, lr_min, ">= 0"), "0", "cosine and sgdr: the rate at the bottom"},
    {"sgdr-t0", R(FLOAT, sgdr_t0, "> 0"), "10", "sgdr: first cycle, epochs"},
    {"sgdr-mult", R(FLOAT, sgdr_mult, ">= 1"), "2", "sgdr: cycle growth"},
    {"gbc-tau", R(FLOAT, gbc_tau, ">= 0"), "0", "gbc: epochs to reach the floor (0: the whole run)"},
    {"gbc-floor", R(FLOAT, gbc_floor, "[0, 1]"), "0.01", "gbc: the floor as a fraction of the peak"},
    {"onecycle-pct", R(FLOAT, onecycle_pct, "(0, 1)"), "0.3", "onecycle: fraction of the run spent rising"},
    {"onecycle-div", R(FLOAT, onecycle_div, ">= 1"), "25", "onecycle: start = peak / div"},
    {"onecycle-final-div", R(FLOAT, onecycle_final_div, ">= 1"), "10000", "onecycle: end = start / final-div"},
    {"plateau-patience", R(INT, plateau_patience, ">= 1"), "3", "plateau: epochs without a better validation accuracy"},
    {"weight-decay", R(FLOAT, weight_decay, ">= 0"), "0",
     "L2 penalty 0.5*wd*|w|^2 on weights: added to the gradient; adamw: decoupled"},
    {"regularize-bias", F(BOOL, regularize_bias), "false",
     "apply --weight-decay, --l1 and adamw's decay to biases too"},
    {"l1", R(FLOAT, l1, ">= 0"), "0", "L1 penalty on weights (not biases); with --weight-decay: the elastic net"},
    {"max-norm", R(FLOAT, max_norm, ">= 0"), "0",
     "after each update, scale each neuron's incoming weights to L2 norm <= c (sync; 0 = off)"},
    {"clip-norm", R(FLOAT, clip_norm, ">= 0"), "0", "clip the averaged gradient to this global L2 norm (0 = off)"},
    {"clip-value", R(FLOAT, clip_value, ">= 0"), "0", "clamp each averaged gradient value to [-v, v] (0 = off)"},
    {"early-stop", R(INT, early_stop, ">= 0"), "0",
     "stop after N epochs without a better validation accuracy; end with the best weights"},
    {"ema", R(FLOAT, ema, "[0, 1)"), "0",
     "keep a moving average of the weights with this decay (e.g. 0.999; warmed up: min(D, (1+t)/(10+t)) at update t), evaluated, reported and saved too"},
    {"ensemble", F(STR, ensemble), "",
     "last:K or best:K: a snapshot ensemble of the last K epochs' weights (or the K best by the validation metric), evaluated and reported at the end; with --checkpoint-dir written as snapshot-ep<E>.h5 (sync)"},
    {"seed", F(U64, seed), "1", "seed of initialization and shuffling"},
    {"deterministic", F(BOOL, deterministic), "false", "results independent of the rank count (docs/semantics.md)"},
    {"micro-batches", R(INT, micro_batches, "[1, 65536]"), "8",
     "--deterministic: micro-batches of --batch rows per step (>= ranks)"},
    {"shuffle", F(BOOL, shuffle), "true", "reshuffle each rank's rows every epoch (--no-shuffle: file order)"},
    {"val-fold", F(STR, val_fold), "",
     "FOLD/FOLDS: cross-validation, validate on fold FOLD (contiguous rows) of /train cut in FOLDS, train on the rest (the file must have no /val)"},
    {"normalize", E(normalize, nd_norm_names), "global",
     "features: global or feature (mean/std), minmax (to [-1, 1]) or none"},
    {"eval-batch", R(INT, eval_batch, ">= 1"), "1024", "rows per forward pass during evaluation"},
    {"train-eval-rows", R(LONG, train_eval_rows, ">= -1"), "-1",
     "after each epoch, evaluate the first N rows of /train like /val (inference mode: the gap's train side); -1: as many as /val (else /test) has, 0: off"},
    {"threads", R(INT, threads, "[0, 1024]"), "0", "BLAS threads per rank; 0 = this node's cores / ranks on it"},
    {"bucket-kb", R(INT, bucket_kb, "[0, 1048576]"), "0",
     "sync: allreduce the gradient in buckets of this many KiB during backward, last layer first (0: one allreduce after backward)"},
    {"compress", E(compress, nd_compress_names), "none",
     "sync: the gradient on the wire: fp16 or bf16 (16-bit values, fp32 sums; with --bucket-kb too), or topk / powersgd with error feedback (docs/training.md)"},
    {"topk-ratio", R(FLOAT, topk_ratio, "(0, 1]"), "0.01",
     "--compress topk: the fraction of the gradient's entries each rank sends"},
    {"powersgd-rank", R(INT, powersgd_rank, "[1, 1024]"), "4", "--compress powersgd: the rank of the low-rank factors"},
    {"shard-optimizer", F(BOOL, shard_optimizer), "false",
     "sync: ZeRO-1, each rank keeps the optimizer state of 1/ranks of the parameters (reduce-scatter, update, allgather)"},
    {"stream-mb", R(FLOAT, stream_mb, "[0, 1e9)"), "0",
     "sync: stream the training rows from the file through two windows within this many MB, read in the background (0: load the shard)"},
    {"timeout", R(FLOAT, timeout, "[0, 1e7]"), "300",
     "stall watchdog: end the job when a step's exchange waits longer than this many seconds, naming the ranks that did not arrive (0 = wait forever)"},
    {"on-nan", E(on_nan, on_nan_names), "stop",
     "a step whose loss or gradient is not finite: stop before applying it, or drop it (sync)"},
    {"max-nan-skips", R(INT, max_nan_skips, ">= 0"), "10", "--on-nan skip: stop after this many bad steps in a row"},
    {"checkpoint-dir", F(STR, checkpoint_dir), "",
     "rank 0 writes checkpoints here (each epoch, and see --checkpoint-every)"},
    {"checkpoint-every", R(LONG, checkpoint_every, ">= 0"), "0",
     "also checkpoint every N steps (0: only at epoch ends)"},
    {"keep", R(INT, keep, ">= 1"), "3", "keep the N newest checkpoints (plus the best one)"},
    {"resume", F(STR, resume), "",
     "continue from a checkpoint FILE, or 'auto': the newest valid one in --checkpoint-dir"},
    {"init-from", F(STR, init_from), "",
     "fine-tuning: start from the tensors of checkpoint FILE whose names and shapes match (not its optimizer state); the rest (a new head) initialized as usual"},
    {"freeze", F(STR, freeze), "",
     "fine-tuning: keep the first layers fixed, numbered as the checkpoint's tensors (0-1, 0,1, dense0,dense1); sync allreduce"},
    {"save", F(STR, save), "",
     "write the final model to FILE (a checkpoint, docs/checkpoints.md); default: model.h5 in --checkpoint-dir, else NAME.model.h5 beside --summary (or --metrics) NAME.json, else model-DATE-TIME.h5 here; 'none': no file"},
    {"metrics", F(STR, metrics), "", "write a JSON line per epoch to FILE"},
    {"log-every", R(INT, log_every, ">= 0"), "0",
     "--metrics: also a line every N steps (async: updates applied) with the step's loss and gradient norm (0: off)"},
    {"summary", F(STR, summary), "", "write the run summary (JSON) to FILE"},
    {"progress", E(progress, nd_progress_names), "auto",
     "progress within an epoch (auto: a bar on a terminal, plain lines otherwise)"},
    {"quiet", F(BOOL, quiet), "false",
     "rank 0 prints only the final line (and errors): no configuration, progress or epoch lines"},
    {"print-config", F(BOOL, print_config), "false",
     "print every option's value before training, not only those that differ from the defaults"},
    {"straggle", F(STR, straggle), "",
     "RANK:FACTOR slows RANK's compute FACTOR times (sleeps (FACTOR-1) x its step time)"},
    {"sim-sample", R(INT, sim_sample, ">= 0"), "0",
     "SimGrid build: compute N steps (over all ranks) for real, then replay their mean time (0: compute every step)"},
    {"sim-step-ms", R(FLOAT, sim_step_ms, ">= 0"), "0",
     "SimGrid build: each step's data, forward and backward take MS simulated ms and are not computed (time only; "
     "launch/simulate --calibrate measures it); 0: computed and timed"},
    {"sim-step-cv", R(FLOAT, sim_step_cv, "[0, 10]"), "0",
     "SimGrid build, with --sim-step-ms: each rank's step varies from step to step with this coefficient of variation "
     "(lognormal, mean --sim-step-ms, drawn from the seed, rank and step): the noise a synchronous step waits for"},
    {"sim-update-ms", R(FLOAT, sim_update_ms, ">= 0"), "0",
     "SimGrid build: each optimizer update of the whole model takes MS simulated ms (a slice its share) and is not "
     "computed; 0: computed and timed"},
    {"profile", R(INT, profile, ">= 0"), "0", "sync: rank 0 prints the time of each phase of the first N steps"},
    {"fault-nan-step", R(LONG, fault_nan_step, ">= 0"), "0",
     "testing: make the first worker's (rank 0's in sync) loss NaN at this step (1-based; 0 = never)"},
    {"fault-signal-step", R(LONG, fault_signal_step, ">= 0"), "0",
     "testing: the last rank sends itself --fault-signal during this step (1-based; 0 = never)"},
    {"fault-signal", E(fault_signal, fault_signal_names), "term", "testing: the signal of --fault-signal-step"},
};
/* --help's headings: each starts at its first option, in the table's order. */
const nd_cli_topic nd_train_topics[] = {
    {"config", "Data and mode", false},
    {"arch", "Network", false},
    {"augment-crop", "Augmentation", false},
    {"epochs", "Optimizer", false},
    {"lr-schedule", "Learning-rate schedule", false},
    {"weight-decay", "Regularization, early stopping, weight average", false},
    {"seed", "Reproducibility, data handling, threads", false},
    {"bucket-kb", "Communication and memory", false},
    {"on-nan", "Numerical guard", false},
    {"checkpoint-dir", "Checkpoints and outputs", false},
    {"straggle", "Test and study hooks (--help-all)", true},
};
const int nd_train_num_topics = (int)(sizeof nd_train_topics / sizeof nd_train_topics[0]);

const int nd_train_num_options = (int)(sizeof nd_train_options / sizeof nd_train_options[0]);

nd_status nd_train_config_parse(nd_train_config *cfg, int argc, char **argv, int *help, nd_error *err) {
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

nd_status nd_train_make_schedule(const nd_train_config *c, int global_batch, long steps_per_epoch, nd_lr_schedule *s,
                                 nd_error *err) {
    memset(s, 0, sizeof *s);
    if (c->warmup_goyal && c->warmup_start > 0.0f)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--warmup-goyal: starts at --lr, not with --warmup-start %g (two starting points; give one)",
                       (double)c->warmup_start);
    s->base_lr = c->lr;
    s->ref_batch = c->ref_batch > 0 ? c->ref_batch : c->batch;
    s->global_batch = global_batch;
    s->warmup_steps = c->warmup_steps;
    s->warmup_start = c->warmup_start;
    s->warmup_goyal = c->warmup_goyal;
    s->kind = c->lr_schedule;
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
            return ND_FAIL(err, ND_ERR_ARG,
                           "--lr-milestones: '%s' is not a list of up to %d positive epochs like 30,60",
                           c->lr_milestones, ND_MAX_MILESTONES);
        s->milestones[s->num_milestones++] = (long)(ep * steps_per_epoch + 0.5);
        p = *end ? end + 1 : end;
    }
    if (s->kind == ND_SCHED_STEP && s->num_milestones == 0)
        return ND_FAIL(err, ND_ERR_ARG, "--lr-schedule step: give --lr-milestones (epochs)");
    return ND_OK;
}

/* The default activation of cfg, its alpha set for leaky_relu or elu. */
static nd_activation config_act(const nd_train_config *c) {
    nd_activation a = {c->act, 0.0f};
    a.alpha = a.kind == ND_ACT_ELU ? c->elu_alpha : c->leaky_alpha;
    return a;
}

nd_status nd_train_model_spec(const nd_train_config *c, int input_dim, nd_image_shape image, int k, nd_model_spec *spec,
                              nd_error *err) {
    const nd_activation act = config_act(c);
    if (c->arch[0]) {
        char why[200];
        if (nd_arch_parse(c->arch, act, spec, why, sizeof why) != 0)
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': %s", c->arch, why);
        if (spec->input_dim != input_dim || spec->num_classes != k)
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': takes %d inputs and gives %d outputs, the data has %d and %d",
                           c->arch, spec->input_dim, spec->num_classes, input_dim, k);
        const nd_image_shape a = spec->image;
        if (a.c > 0 && image.c == 0)
            return ND_FAIL(err, ND_ERR_ARG,
                           "--arch '%s': takes %dx%dx%d images, but the data has no image shape (give /train/x as "
                           "N x C x H x W, or the root attribute image_shape; see data/README.md)",
                           c->arch, a.c, a.h, a.w);
        if (a.c > 0 && (a.c != image.c || a.h != image.h || a.w != image.w))
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': takes %dx%dx%d images, the data's are %dx%dx%d", c->arch, a.c,
                           a.h, a.w, image.c, image.h, image.w);
    } else {
        int widths[ND_MAX_LAYERS];
        const int n = nd_parse_widths(c->hidden, widths, ND_MAX_LAYERS - 1);
        if (n < 0) return ND_FAIL(err, ND_ERR_ARG, "--hidden: '%s' is not a list of widths", c->hidden);
        nd_model_spec_plain(spec, input_dim, widths, n, act, k);
        spec->input_drop = c->input_dropout;
        for (int l = 0; l < n; ++l) {
            spec->hidden[l].batch_norm = c->batch_norm;
            spec->hidden[l].drop = c->dropout;
            spec->hidden[l].drop_connect = c->dropconnect;
            if (act.kind == ND_ACT_MAXOUT) spec->hidden[l].pieces = c->maxout_pieces;
        }
    }
    spec->bn_eps = c->bn_eps;
    return ND_OK;
}

/* Parses --straggle "RANK:FACTOR" ("" = none: rank -1, factor 1); 0 or -1. */
static int parse_straggle(const char *text, int *rank, float *factor) {
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

/* Parses --val-fold "FOLD/FOLDS" ("" = none: 0/0); 0 or -1. */
static int parse_val_fold(const char *text, int *fold, int *folds) {
    *fold = *folds = 0;
    if (!text[0]) return 0;
    char *end = NULL;
    long i = strtol(text, &end, 10);
    if (end == text || *end != '/') return -1;
    const char *k = end + 1;
    long n = strtol(k, &end, 10);
    if (end == k || *end || n < 2 || n > 1 << 20 || i < 1 || i > n) return -1;
    *fold = (int)i;
    *folds = (int)n;
    return 0;
}

/* The exchange cfg asks for: each exchange says which options pick it; at
 * most one may be picked, else the plain allreduce. */
static nd_status pick_exchange(const nd_train_config *c, nd_exchange_kind *out, nd_error *err) {
    *out = ND_EXCHANGE_ALLREDUCE;
    for (int k = 0; k < ND_EXCHANGES; ++k) {
        const nd_exchange_caps *b = nd_exchange_caps_of((nd_exchange_kind)k);
        if (!b->chosen || !b->chosen(c)) continue;
        if (*out != ND_EXCHANGE_ALLREDUCE) {
            const nd_exchange_caps *a = nd_exchange_caps_of(*out);
            return ND_FAIL(err, ND_ERR_ARG, "%s: not with %s (the %s and the %s exchange gradients each their own way)",
                           b->chosen_by, a->chosen_by, b->name, a->name);
        }
        *out = (nd_exchange_kind)k;
    }
    return ND_OK;
}

/* One layer of --freeze at *p: a number, or a group name (dense3, conv0). */
static int freeze_layer(const char **p, long *layer) {
    while (**p >= 'a' && **p <= 'z') ++*p;
    char *end;
    *layer = strtol(*p, &end, 10);
    if (end == *p || *layer < 0 || *layer >= ND_MAX_LAYERS) return -1;
    *p = end;
    return 0;
}

int nd_parse_freeze(const char *text, int *layers, char *why, size_t cap) {
    unsigned long long seen = 0; /* bit l: layer l (ND_MAX_LAYERS < 64) */
    *layers = 0;
    if (!*text) return 0;
    for (const char *p = text;;) {
        long lo, hi;
        if (freeze_layer(&p, &lo) != 0) goto bad;
        hi = lo;
        if (*p == '-' && (++p, freeze_layer(&p, &hi) != 0 || hi < lo)) goto bad;
        for (long l = lo; l <= hi; ++l) seen |= 1ull << l;
        if (!*p) break;
        if (*p++ != ',') goto bad;
    }
    while (seen >> *layers & 1u) ++*layers;
    if (seen >> *layers) {
        snprintf(why, cap, "the frozen layers must be the first ones, 0 to N-1 (a frozen base)");
        return -1;
    }
    return 0;
bad:
    snprintf(why, cap, "not a list of layer numbers or ranges like 0-1, 0,1 or dense0,dense1");
    return -1;
}

/* --opt lbfgs against everything that makes the objective random, bends
 * its steps, or needs what the full-batch driver does not keep. */
static nd_status check_lbfgs(const nd_train_config *c, nd_exchange_kind x, nd_error *err) {
    if (c->opt != ND_OPT_LBFGS) return ND_OK;
    if (x != ND_EXCHANGE_ALLREDUCE)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--opt lbfgs: not with %s (each evaluation sums the full-batch gradient in one plain allreduce)",
                       nd_exchange_caps_of(x)->chosen_by);
    bool dropout = c->dropout > 0.0f || c->input_dropout > 0.0f || c->dropconnect > 0.0f, batch_norm = c->batch_norm;
    if (c->arch[0]) {
        nd_model_spec spec;
        char why[200];
        if (nd_arch_parse(c->arch, (nd_activation){c->act, c->leaky_alpha}, &spec, why, sizeof why) == 0) {
            dropout = spec.input_drop > 0.0f, batch_norm = false;
            for (int l = 0; l < spec.num_hidden; ++l)
                dropout |= spec.hidden[l].drop > 0.0f || spec.hidden[l].drop_connect > 0.0f,
                    batch_norm |= spec.hidden[l].batch_norm != 0;
        }
    }
    const struct {
        bool on;
        const char *what, *why;
    } no[] = {
        {c->stream_mb > 0.0f, "--stream-mb", "every evaluation reads the whole shard: it stays in memory"},
        {dropout, "dropout or DropConnect", "random masks would make each evaluation a different function"},
        {batch_norm, "batch norm", "batch statistics make the objective depend on how the rows are chunked"},
        {c->augment_crop || c->augment_flip || c->cutout || c->input_noise > 0.0f || c->mixup > 0.0f, "augmentation",
         "random transforms would make each evaluation a different function"},
        {c->lr_schedule != ND_SCHED_CONSTANT || c->warmup_steps > 0, "an --lr-schedule or --warmup-steps",
         "the line search sets every step"},
        {c->clip_norm > 0.0f || c->clip_value > 0.0f, "gradient clipping",
         "a clipped gradient is not the objective's, and the line search needs the true one"},
        {c->max_norm > 0.0f, "--max-norm", "a projected step leaves the line search's path"},
        {c->l1 > 0.0f, "--l1", "L1 is not differentiable at 0; use --weight-decay"},
        {c->ema > 0.0f, "--ema", "the average follows minibatch steps"},
        {c->freeze[0] != '\0', "--freeze", "the full-batch driver steps every parameter"},
        {c->teacher[0] != '\0', "--teacher", "the full-batch objective has no distillation term"},
        {c->checkpoint_dir[0] || c->resume[0], "--checkpoint-dir or --resume",
         "the L-BFGS history is not checkpointed, and a run without it would take other steps; --save keeps the final model"},
        {c->on_nan == ND_ON_NAN_SKIP, "--on-nan skip",
         "a dropped evaluation would leave the line search without its point"},
        {c->straggle[0] || c->profile > 0 || c->fault_nan_step > 0 || c->fault_signal_step > 0,
         "--straggle, --profile or a --fault-* hook", "they act on minibatch steps"},
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; ++i)
        if (no[i].on) return ND_FAIL(err, ND_ERR_ARG, "--opt lbfgs: not with %s (%s)", no[i].what, no[i].why);
    return ND_OK;
}

/* --mode local: what the replicas' differences between averages rule out. */
static nd_status check_local(const nd_train_config *c, nd_error *err) {
    if (c->ema > 0.0f)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--ema: not with --mode local (between averages each rank would average its own replica)");
    if (c->on_nan == ND_ON_NAN_SKIP)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--on-nan skip: not with --mode local (a dropped step would drop its average, and the "
                       "replicas must be one model at epoch ends and checkpoints)");
    if (c->outer_momentum > 0.0f && (c->checkpoint_dir[0] || c->resume[0]))
        return ND_FAIL(err, ND_ERR_ARG,
                       "--outer-momentum: not with --checkpoint-dir or --resume (its velocity is not checkpointed; "
                       "--outer-momentum 0 resumes exactly)");
    if (c->max_norm > 0.0f && (c->outer_momentum > 0.0f || c->outer_lr != 1.0f))
        return ND_FAIL(err, ND_ERR_ARG,
                       "--max-norm: not with --outer-momentum or --outer-lr (the projection would enter the outer "
                       "step's pseudo-gradient)");
    return ND_OK;
}

/* An option that needs a capability the exchange lacks. */
static nd_status refuse(const char *option, nd_exchange_kind x, const char *why, nd_error *err) {
    return ND_FAIL(err, ND_ERR_ARG, "%s: not with %s (the %s %s)", option, nd_exchange_caps_of(x)->chosen_by,
                   nd_exchange_caps_of(x)->name, why);
}

int nd_ensemble_parse(const char *text, int *best, int *count) {
    char kind[8];
    int k = 0, used = 0;
    if (sscanf(text, "%5[a-z]:%d%n", kind, &k, &used) != 2 || text[used] != '\0') return -1;
    if (strcmp(kind, "last") && strcmp(kind, "best")) return -1;
    if (k < 2 || k > 64) return -1;
    *best = !strcmp(kind, "best");
    *count = k;
    return 0;
}

nd_status nd_train_plan_resolve(const nd_train_config *c, nd_train_plan *plan, nd_error *err) {
    memset(plan, 0, sizeof *plan);
    int widths[ND_MAX_LAYERS];
    if (!c->data[0]) return ND_FAIL(err, ND_ERR_ARG, "--data: no dataset given (an HDF5 file, see data/README.md)");
    ND_TRY(nd_cli_check(nd_train_options, nd_train_num_options, c, err));
    if (parse_straggle(c->straggle, &plan->straggle_rank, &plan->straggle_factor) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--straggle: '%s' is not RANK:FACTOR with RANK >= 0 and FACTOR >= 1",
                       c->straggle);
    if (c->sim_sample > 0 && !nd_comm_simulated())
        return ND_FAIL(err, ND_ERR_ARG, "--sim-sample: only in a SimGrid build (-DNNDIST_SIMGRID=ON, launch/simulate)");
    if ((c->sim_step_ms > 0.0f || c->sim_update_ms > 0.0f) && !nd_comm_simulated())
        return ND_FAIL(err, ND_ERR_ARG, "--sim-%s-ms: only in a SimGrid build (-DNNDIST_SIMGRID=ON, launch/simulate)",
                       c->sim_step_ms > 0.0f ? "step" : "update");
    if (c->sim_step_cv > 0.0f && !(c->sim_step_ms > 0.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--sim-step-cv: only with --sim-step-ms (the mean it varies around)");
    if (c->sim_step_ms > 0.0f && c->sim_sample > 0)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--sim-step-ms and --sim-sample: one or the other (both say what a step costs)");
    if (c->sim_step_ms > 0.0f && c->bucket_kb > 0)
        return ND_FAIL(err, ND_ERR_ARG, "--sim-step-ms: not with --bucket-kb (its buckets start inside the pass)");
    if (c->sim_step_ms > 0.0f && c->sync_bn)
        return ND_FAIL(err, ND_ERR_ARG, "--sim-step-ms: not with --sync-bn (its allreduces are inside the pass)");
    if (c->sim_sample > 0 && c->sync_bn)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--sim-sample: not with --sync-bn (a skipped pass would skip the batch-norm allreduces inside "
                       "it on some ranks only)");
    if (parse_val_fold(c->val_fold, &plan->val_fold, &plan->val_folds) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--val-fold: '%s' is not FOLD/FOLDS with 1 <= FOLD <= FOLDS and FOLDS >= 2",
                       c->val_fold);
    if (nd_parse_widths(c->hidden, widths, ND_MAX_LAYERS - 1) < 0)
        return ND_FAIL(err, ND_ERR_ARG, "--hidden: '%s' is not a list of positive widths like 512,256 (at most %d)",
                       c->hidden, ND_MAX_LAYERS - 1);
    if (c->act == ND_ACT_IDENTITY)
        return ND_FAIL(err, ND_ERR_ARG, "--act: identity is the output layer's; a hidden layer needs a nonlinearity");
    if (c->arch[0]) {
        nd_model_spec probe;
        char why[200];
        if (nd_arch_parse(c->arch, (nd_activation){c->act, c->leaky_alpha}, &probe, why, sizeof why) != 0)
            return ND_FAIL(err, ND_ERR_ARG, "--arch '%s': %s", c->arch, why);
    }
    if (nd_loss_takes_targets(c->loss) && c->loss != ND_LOSS_SIGMOID_BCE && c->output_bias == ND_BIAS_PRIORS)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--output-bias priors: only with a classification loss or sigmoid_bce, not --loss %s",
                       nd_loss_name(c->loss));
    /* A mode's or an exchange's own options, given without it, would be
     * ignored without a word: each is refused instead (the defaults are
     * what the table above parses from its own text). */
    const int ps_mode = c->mode == ND_MODE_ASYNC || c->mode == ND_MODE_SSP;
    const char *mode_name = nd_mode_names[c->mode], *compress_name = nd_compress_names[c->compress];
    if (c->servers != 1 && !ps_mode)
        return ND_FAIL(err, ND_ERR_ARG, "--servers: only with --mode async or ssp, not --mode %s", mode_name);
    if (c->staleness_lr && !ps_mode)
        return ND_FAIL(err, ND_ERR_ARG, "--staleness-lr: only with --mode async or ssp, not --mode %s", mode_name);
    if (c->max_staleness != 0 && c->mode != ND_MODE_SSP)
        return ND_FAIL(err, ND_ERR_ARG, "--max-staleness: only with --mode ssp, not --mode %s", mode_name);
    const struct {
        const char *name;
        int given;
    } local_only[] = {{"--sync-every", c->sync_every != 8},
                      {"--sync-warmup", c->sync_warmup != 0},
                      {"--outer-momentum", c->outer_momentum != 0.0f},
                      {"--outer-lr", c->outer_lr != 1.0f}};
    for (size_t i = 0; i < sizeof local_only / sizeof local_only[0]; ++i)
        if (local_only[i].given && c->mode != ND_MODE_LOCAL)
            return ND_FAIL(err, ND_ERR_ARG, "%s: only with --mode local, not --mode %s", local_only[i].name, mode_name);
    if (c->topk_ratio != 0.01f && c->compress != ND_COMPRESS_TOPK)
        return ND_FAIL(err, ND_ERR_ARG, "--topk-ratio: only with --compress topk, not --compress %s", compress_name);
    if (c->powersgd_rank != 4 && c->compress != ND_COMPRESS_POWERSGD)
        return ND_FAIL(err, ND_ERR_ARG, "--powersgd-rank: only with --compress powersgd, not --compress %s",
                       compress_name);
    if (c->rmsprop_momentum > 0.0f && c->opt != ND_OPT_RMSPROP)
        return ND_FAIL(err, ND_ERR_ARG, "--rmsprop-momentum: only with --opt rmsprop, not --opt %s",
                       nd_opt_name(c->opt));
    if (c->momentum_final != -1.0f && !(c->momentum_final >= 0.0f && c->momentum_final < 1.0f))
        return ND_FAIL(err, ND_ERR_ARG, "--momentum-final: %g must be in [0, 1) (or -1: off)",
                       (double)c->momentum_final);
    nd_lr_schedule probe;
    ND_TRY(nd_train_make_schedule(c, c->batch, 100, &probe, err)); /* milestones; sizes come later */
    if (!strcmp(c->resume, "auto") && !c->checkpoint_dir[0])
        return ND_FAIL(err, ND_ERR_ARG, "--resume auto: needs --checkpoint-dir to look in");
    if (c->log_every > 0 && !c->metrics[0])
        return ND_FAIL(err, ND_ERR_ARG, "--log-every %d: needs --metrics FILE to write the lines to", c->log_every);
    if (c->init_from[0] && c->resume[0] && strcmp(c->resume, "auto"))
        return ND_FAIL(err, ND_ERR_ARG,
                       "--init-from: not with --resume FILE, which brings every weight (--resume auto starts from "
                       "--init-from while the directory has no checkpoint)");
    if (c->teacher[0] && c->loss != ND_LOSS_SOFTMAX_CE)
        return ND_FAIL(err, ND_ERR_ARG, "--teacher: distillation takes --loss softmax_ce, not %s",
                       nd_loss_name(c->loss));
    if (c->teacher[0] && c->mixup > 0.0f)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--teacher: not with --mixup (its loss mixes two labels a row; distillation's takes one)");
    int teachers = 1;
    for (const char *t = c->teacher; *t; ++t) teachers += *t == ',';
    if (teachers > ND_MAX_TEACHERS)
        return ND_FAIL(err, ND_ERR_ARG, "--teacher: %d checkpoints, at most %d", teachers, ND_MAX_TEACHERS);
    int frozen;
    char why[120];
    if (nd_parse_freeze(c->freeze, &frozen, why, sizeof why) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--freeze '%s': %s", c->freeze, why);

    int ens_best, ens_count;
    if (c->ensemble[0] && nd_ensemble_parse(c->ensemble, &ens_best, &ens_count) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--ensemble: '%s' is not last:K or best:K with K in [2, 64]", c->ensemble);
    if (c->compress != ND_COMPRESS_NONE) {
        const char *name = nd_compress_names[c->compress];
        if (c->deterministic)
            return ND_FAIL(err, ND_ERR_ARG,
                           "--compress %s: not with --deterministic (lossy: the rounded sum is not the exact one)",
                           name);
        if (c->mode != ND_MODE_SYNC)
            return ND_FAIL(err, ND_ERR_ARG, "--compress %s: sync mode only (--mode %s sends %s in fp32)", name,
                           nd_mode_names[c->mode], c->mode == ND_MODE_LOCAL ? "its averages" : "whole gradients");
        if (c->bucket_kb > 0 && c->compress != ND_COMPRESS_FP16 && c->compress != ND_COMPRESS_BF16)
            return ND_FAIL(err, ND_ERR_ARG,
                           "--bucket-kb: not with --compress %s (it compresses the whole gradient at once; only fp16 "
                           "and bf16 go in buckets)",
                           name);
    }
    /* The parts, and every option against what they can do. */
    ND_TRY(pick_exchange(c, &plan->exchange, err));
    const nd_exchange_kind x = plan->exchange;
    const nd_exchange_caps *can = nd_exchange_caps_of(x);
    ND_TRY(check_lbfgs(c, x, err));
    if (x == ND_EXCHANGE_LOCAL) ND_TRY(check_local(c, err));
    plan->ssp = c->mode == ND_MODE_SSP;
    plan->feed = x == ND_EXCHANGE_FIXED_POINT ? ND_FEED_BLOCKS : c->stream_mb > 0.0f ? ND_FEED_STREAM : ND_FEED_MEMORY;
    if (c->sync_bn && !can->sync_bn)
        return refuse("--sync-bn", x, "cannot add batch-norm sums across ranks inside a step", err);
    if (c->on_nan == ND_ON_NAN_SKIP && !can->skip_step)
        return refuse("--on-nan skip", x, "cannot drop a step on every rank alike", err);
    if (c->stream_mb > 0.0f && !can->streams) return refuse("--stream-mb", x, "cannot take a streamed feed", err);
    if (c->stream_mb > 0.0f && plan->val_folds)
        return ND_FAIL(err, ND_ERR_ARG, "--val-fold: not with --stream-mb (the streamed feed reads /train whole)");
    if (frozen > 0 && !can->freezes) return refuse("--freeze", x, "cannot leave a frozen base out", err);
    const struct {
        bool on;
        const char *option;
    } whole[] = {{c->max_norm > 0.0f, "--max-norm"},
                 {c->ema > 0.0f && x != ND_EXCHANGE_PARAM_SERVER, "--ema"}, /* async: each server averages its slice */
                 {c->early_stop > 0, "--early-stop"},
                 {c->ensemble[0] != '\0', "--ensemble"},
                 {c->lr_schedule == ND_SCHED_PLATEAU, "--lr-schedule plateau"}};
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; ++i)
        if (whole[i].on && !can->whole_replica)
            return refuse(whole[i].option, x, "leave no rank with every parameter after a step", err);
    return ND_OK;
}
