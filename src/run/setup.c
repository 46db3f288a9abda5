/* Setup of a run: the plan, the shards this rank reads, normalization,
 * the model and its optimizer, the exchange and the feed, resuming from a
 * checkpoint, and the trainer's teardown. Collective: on error every rank
 * returns the same failure, and only the rank that found it carries the
 * message. */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nndist/blas.h"
#include "nndist/loss.h"
#include "train_internal.h"

/* The node's cores shared among the ranks on it, never more than this
 * process may run on (mpirun binds ranks to cores by default). */
static int auto_threads(const nd_comm *comm) {
    /* Under SimGrid, SMPI times each rank's own thread only: BLAS on it. */
    if (nd_comm_simulated()) return 1;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int per_rank = (int)(online > 0 ? online : 1) / nd_comm_local_size(comm);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < per_rank) per_rank = CPU_COUNT(&set);
    return per_rank < 1 ? 1 : per_rank;
}

/* Multi-label targets must be probabilities; the other checks are the
 * data module's (labels in range, values finite). */
static nd_status check_targets(const nd_trainer *tr, nd_error *err) {
    if (!nd_loss_multilabel(tr->loss)) return ND_OK;
    const nd_shard *splits[3] = {&tr->train, &tr->val, &tr->test};
    const char *names[3] = {"train", "val", "test"};
    for (int s = 0; s < 3; ++s) {
        const nd_shard *sh = splits[s];
        for (size_t i = 0; sh->t && i < (size_t)sh->rows * sh->target_cols; ++i)
            if (!(sh->t[i] >= 0.0f && sh->t[i] <= 1.0f))
                return ND_FAIL(err, ND_ERR_DATA, "%s: /%s/y[%ld][%zu] = %g: --loss %s needs targets in [0, 1]",
                               tr->cfg.data, names[s], sh->first_row + (long)(i / sh->target_cols), i % sh->target_cols,
                               (double)sh->t[i], nd_loss_name(tr->loss));
    }
    return ND_OK;
}

/* The augmentation options against the data and the loss. */
static nd_status check_augment(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    tr->image = (nd_image_shape){tr->info.image_c, tr->info.image_h, tr->info.image_w};
    tr->augment = (nd_augment_config){.crop_pad = c->augment_crop,
                                      .flip = c->augment_flip,
                                      .cutout = c->cutout,
                                      .noise = c->input_noise,
                                      .mixup = c->mixup};
    const char *needs_image = c->augment_crop ? "--augment-crop"
        : c->augment_flip                     ? "--augment-flip"
        : c->cutout                           ? "--cutout"
                                              : NULL;
    if (needs_image && tr->image.c == 0)
        return ND_FAIL(err, ND_ERR_ARG,
                       "%s: %s has no image shape (give /train/x as N x C x H x W, or the root attribute image_shape; "
                       "see data/README.md); --input-noise works on any data",
                       needs_image, c->data);
    if (c->mixup > 0.0f && !nd_loss_takes_targets(c->loss) && c->loss != ND_LOSS_SOFTMAX_CE)
        return ND_FAIL(err, ND_ERR_ARG, "--mixup: takes softmax_ce or a loss of float targets, not --loss %s",
                       nd_loss_name(c->loss));
    return ND_OK;
}

/* Sync: every rank reads its block of every split. Async: the workers share
 * the training rows; server 0 evaluates, so it reads /test and /val whole. */
static nd_status read_shards(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    /* Rank 0 looks at the file first: a file bad enough to crash the HDF5
     * library then crashes one rank, which says so in one line, while the
     * others wait here to be ended. */
    nd_status probed = tr->rank == 0 ? nd_dataset_probe(c->data, &tr->info, err) : ND_OK;
    ND_TRY(nd_train_agree(tr, probed, err));
    if (tr->rank != 0) ND_TRY(nd_dataset_probe(c->data, &tr->info, err));
    if (tr->plan.val_folds) /* every rank alike: the same file, the same verdict */
        ND_TRY(nd_dataset_hold_out(&tr->info, tr->plan.val_fold, tr->plan.val_folds, c->data, err));
    if (nd_loss_takes_targets(tr->loss) != tr->info.has_targets)
        return ND_FAIL(err, ND_ERR_ARG, "--loss %s needs %s, but %s /train/y holds %s", nd_loss_name(c->loss),
                       tr->info.has_targets ? "class labels" : "float targets (N x K)", c->data,
                       tr->info.has_targets ? "float targets" : "class labels");
    ND_TRY(check_augment(tr, err));
    if (tr->info.train.rows < tr->num_workers)
        return ND_FAIL(err, ND_ERR_DATA, "%s: /train has %ld rows, fewer than the %d %s", c->data, tr->info.train.rows,
                       tr->num_workers, tr->async ? "workers" : "ranks");
    const int k = tr->info.num_classes;
    tr->train.cols = tr->test.cols = tr->val.cols = tr->info.train.cols;
    ND_TRY(tr->feeder->open(tr, err));
    const int eval_part = tr->async ? (tr->rank == 0 ? 0 : -1) : tr->rank;
    const int eval_parts = tr->async ? 1 : tr->size;
    if (eval_part < 0) return ND_OK;
    if (tr->info.has_test) ND_TRY(nd_shard_read(c->data, "test", eval_part, eval_parts, k, &tr->test, err));
    if (tr->info.has_val)
        ND_TRY(nd_shard_read_info(c->data, &tr->info, "val", eval_part, eval_part + 1, eval_parts, &tr->val, err));
    /* The clean training metric's rows: a copy, so any feed (streamed too) can be evaluated alike. */
    const long like = tr->info.has_val ? tr->info.val.rows : tr->info.has_test ? tr->info.test.rows : 0;
    const long want = c->train_eval_rows < 0 ? like : c->train_eval_rows;
    tr->train_eval_rows = want < tr->info.train.rows ? want : tr->info.train.rows;
    tr->train_eval.cols = tr->info.train.cols;
    if (tr->train_eval_rows > 0)
        ND_TRY(nd_shard_read_head(c->data, &tr->info, "train", tr->train_eval_rows, eval_part, eval_parts,
                                  &tr->train_eval, err));
    return check_targets(tr, err);
}

/* Collective: statistics over every rank's training rows (unless a resumed
 * checkpoint brought them), applied to every split this rank holds. */
static nd_status normalize_splits(nd_trainer *tr, int have_stats, nd_error *err) {
    const int cols = tr->info.train.cols;
    nd_status st = ND_OK;
    const nd_feed_part *feed = tr->feeder;
    if (!have_stats && (tr->norm == ND_NORM_NONE || nd_loss_multilabel(tr->loss)))
        /* A pass that checks every row before training where no statistics
         * pass reads them (values, labels, a multi-label target range: a
         * streamed shard is read only now). */
        st = nd_train_agree(tr, feed->scan(tr, ND_SCAN_CHECK, NULL, err), err);
    if (st != ND_OK) return st;
    if (!have_stats && tr->norm == ND_NORM_MINMAX) {
        /* One max-reduction of (max, -min): exact in any order. */
        double *range = nd_buffer_alloc_f64(2 * (size_t)cols);
        st = nd_train_agree(tr, range ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate feature ranges"), err);
        if (st == ND_OK) {
            for (size_t j = 0; j < 2 * (size_t)cols; ++j) range[j] = -INFINITY;
            st = nd_train_agree(tr, feed->scan(tr, ND_SCAN_RANGE, range, err), err);
            if (st == ND_OK) st = nd_comm_allreduce_max_f64(tr->comm, range, 2 * (size_t)cols, err);
        }
        if (st == ND_OK) nd_range_finish(range, cols, tr->norm_mean, tr->norm_inv_std);
        nd_buffer_free(range);
    } else if (!have_stats) {
        double *sums = nd_buffer_alloc_f64(2 * (size_t)cols + 1);
        st = nd_train_agree(tr, sums ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate normalization sums"), err);
        if (st == ND_OK && feed->exact_stats) {
            st = feed->exact_stats(tr, sums, err);
        } else if (st == ND_OK) {
            st = nd_train_agree(tr, feed->scan(tr, ND_SCAN_STATS, sums, err), err);
            if (st == ND_OK) st = nd_comm_allreduce_sum_f64(tr->comm, sums, 2 * (size_t)cols + 1, err);
        }
        if (st == ND_OK) nd_stats_finish(sums, cols, tr->norm, tr->norm_mean, tr->norm_inv_std);
        nd_buffer_free(sums);
        /* MPI does not promise bitwise-equal allreduce results on every rank;
         * rank 0's statistics make the normalized data identical everywhere. */
        if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, tr->norm_mean, (size_t)cols, 0, err);
        if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, tr->norm_inv_std, (size_t)cols, 0, err);
    }
    if (st == ND_OK && feed->normalization_ready) feed->normalization_ready(tr);
    if (st == ND_OK) {
        nd_shard *splits[4] = {&tr->train, &tr->test, &tr->val, &tr->train_eval};
        for (int i = 0; i < 4; ++i)
            if (splits[i]->x)
                nd_normalize_apply(splits[i]->x, (size_t)splits[i]->rows, cols, tr->norm_mean, tr->norm_inv_std);
    }
    return st;
}

/* Collective: rank 0's tr->hosts lists the job's hosts in rank order, each
 * once, with its rank count ("node1 (4 ranks), node2 (4 ranks)"). */
static nd_status gather_hosts(nd_trainer *tr, nd_error *err) {
    enum { NAME = 64 };
    char mine[NAME] = "";
    if (gethostname(mine, sizeof mine - 1) != 0) snprintf(mine, sizeof mine, "?");
    char *all = tr->rank == 0 ? calloc((size_t)tr->size, NAME) : NULL;
    nd_status st = tr->rank == 0 && !all ? ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the host names") : ND_OK;
    ND_TRY(nd_train_agree(tr, st, err));
    st = nd_comm_gather_bytes(tr->comm, mine, NAME, all, 0, err);
    if (st == ND_OK && tr->rank == 0) {
        size_t used = 0;
        tr->hosts[0] = '\0';
        for (int r = 0; r < tr->size; ++r) {
            const char *h = all + (size_t)r * NAME;
            int seen = 0, count = 0;
            for (int q = 0; q < tr->size; ++q) {
                seen |= q < r && !strcmp(all + (size_t)q * NAME, h);
                count += !strcmp(all + (size_t)q * NAME, h);
            }
            if (seen || used >= sizeof tr->hosts - 1) continue;
            used += (size_t)snprintf(tr->hosts + used, sizeof tr->hosts - used, "%s%s (%d rank%s)", used ? ", " : "", h,
                                     count, count == 1 ? "" : "s");
        }
    }
    free(all);
    return st;
}

/* Collective: every rank runs the same number of steps per epoch, set by the
 * smallest shard, so no rank waits in an allreduce another never calls.
 * (Servers hold no training rows and do not count.) */
static nd_status agree_steps(nd_trainer *tr, nd_error *err) {
    const int has = tr->worker_index >= 0;
    long v[2] = {has ? tr->train.rows / tr->cfg.batch : LONG_MAX, has ? tr->train.rows : LONG_MAX};
    ND_TRY(nd_comm_allreduce_min_long(tr->comm, v, 2, err));
    if (tr->feeder->steps_per_epoch) v[0] = tr->feeder->steps_per_epoch(tr, &v[1]);
    tr->steps_per_epoch = v[0];
    if (v[0] == 0) {
        nd_status st = ND_FAIL(err, ND_ERR_ARG,
                               "--batch %d: the smallest shard has only %ld rows (%ld training rows over %d %s); "
                               "use a smaller batch",
                               tr->cfg.batch, v[1], tr->info.train.rows, tr->num_workers,
                               tr->async ? "workers" : "ranks");
        return nd_train_agree(tr, st, err); /* every rank fails; rank 0 reports */
    }
    return ND_OK;
}

/* The sync exchange the plan chose (on one rank buckets and slices are
 * pointless: the plain allreduce) and its buffers. Collective. */
static nd_status create_exchange(nd_trainer *tr, nd_error *err) {
    nd_exchange_kind kind = tr->plan.exchange;
    if (tr->size == 1 && (kind == ND_EXCHANGE_BUCKETS || kind == ND_EXCHANGE_ZERO)) kind = ND_EXCHANGE_ALLREDUCE;
    nd_exchange *x = &tr->exchange;
    x->part = nd_exchange_parts[kind];
    x->env = (nd_exchange_env){.model = &tr->model,
                               .comm = tr->comm,
                               .penalty = &tr->penalty,
                               .cfg = &tr->cfg,
                               .rank = tr->rank,
                               .size = tr->size,
                               .tail = ND_TAIL_USED,
                               .lo = tr->model.frozen_end};
    return x->part->create ? x->part->create(&x->self, &x->env, err) : ND_OK;
}

/* Where updates are applied and the optimizer state lives: each server's
 * slice in async mode (nowhere on a worker), the exchange's slice (ZeRO),
 * else the whole arena. */
static nd_span update_slice(const nd_trainer *tr) {
    const size_t n = tr->model.num_params;
    if (tr->async) {
        long off = 0, len = 0;
        if (tr->worker_index < 0) nd_shard_range((long)n, tr->rank, tr->num_servers, &off, &len);
        return (nd_span){(size_t)off, (size_t)len};
    }
    const nd_exchange *x = &tr->exchange;
    return x->part->slice ? x->part->slice(x->self, &x->env) : (nd_span){0, n};
}

static nd_status build_model(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    nd_model_spec spec;
    const nd_image_shape image = {tr->info.image_c, tr->info.image_h, tr->info.image_w};
    ND_TRY(nd_train_model_spec(c, tr->train.cols, image, tr->info.num_outputs, &spec, err));
    /* Evaluation goes through the model in chunks of up to max_batch rows.
     * A convolutional net holds about a megabyte of activations a sample,
     * so its chunks are the training batch, not --eval-batch: a batch of
     * 1024 would take a gigabyte for nothing (its GEMMs are per sample). */
    const int max_batch = c->batch > c->eval_batch || nd_spec_is_convolutional(&spec) ? c->batch : c->eval_batch;
    ND_TRY(nd_model_create(&tr->model, &spec, max_batch, err));
    int frozen = 0;
    char why[120];
    (void)nd_parse_freeze(c->freeze, &frozen, why, sizeof why); /* checked by the plan */
    if (frozen >= tr->model.num_layers)
        return ND_FAIL(err, ND_ERR_ARG, "--freeze '%s': the network has layers 0 to %d; the output layer %d must %s",
                       c->freeze, tr->model.num_layers - 1, tr->model.num_layers - 1, "stay trainable");
    ND_TRY(nd_model_freeze(&tr->model, frozen, err));
    nd_opt_config oc = {0};
    oc.kind = c->opt;
    oc.momentum = c->momentum;
    oc.beta1 = c->beta1;
    oc.beta2 = c->beta2;
    oc.eps = c->eps;
    oc.rho = c->rho;
    oc.rmsprop_momentum = c->rmsprop_momentum;
    oc.weight_decay = oc.kind == ND_OPT_ADAMW ? c->weight_decay : 0.0f;
    tr->penalty = (nd_penalty){.weight_decay = oc.kind == ND_OPT_ADAMW ? 0.0f
                                                                       : c->weight_decay, /* adamw decays itself */
                               .l1 = c->l1,
                               .clip_value = c->clip_value,
                               .clip_norm = c->clip_norm,
                               .regularize_bias = c->regularize_bias};
    if (!tr->async) ND_TRY(nd_train_agree(tr, create_exchange(tr, err), err));
    else tr->exchange.part = nd_exchange_parts[ND_EXCHANGE_PARAM_SERVER]; /* its capabilities; async.c drives */
    tr->slice = update_slice(tr);
    ND_TRY(nd_optimizer_create(&tr->opt, &oc, tr->slice.length, err));
    tr->opt.first = tr->model.frozen_end; /* only the allreduce freezes: its slice is the whole arena */
    tr->exchange.env.opt = &tr->opt;      /* --mode local averages it at epoch ends */
    tr->exchange.env.steps_per_epoch = tr->steps_per_epoch;
    if (oc.kind == ND_OPT_LBFGS) ND_TRY(nd_lbfgs_create_for(tr, err));
    if (oc.kind == ND_OPT_ADAMW) {
        /* Decoupled decay on weights only: a mask over the arena, viewed
         * from this rank's slice. */
        if (!(tr->decay_mask = nd_buffer_alloc(tr->model.num_params)))
            return ND_FAIL(err, ND_ERR_NOMEM, "adamw: cannot allocate the decay mask");
        for (int t = 0; t < tr->model.num_tensors; ++t) {
            const nd_span s = tr->model.tensor[t].span;
            if (nd_penalty_covers(&tr->penalty, &tr->model.tensor[t]))
                for (size_t i = 0; i < s.length; ++i) tr->decay_mask[s.offset + i] = 1.0f;
        }
        tr->opt.decay_mask = tr->decay_mask + tr->slice.offset;
    }
    /* The row order of the shard, or of one window when streaming. */
    const nd_feed_part *feed = tr->feeder;
    tr->order = nd_buffer_alloc_i32((size_t)(feed->order_rows ? feed->order_rows(tr) : tr->train.rows));
    if (feed->alloc) ND_TRY(feed->alloc(tr, err));
    tr->xb = nd_buffer_alloc((size_t)c->batch * tr->train.cols);
    if (tr->info.has_targets) tr->tb = nd_buffer_alloc((size_t)c->batch * tr->info.num_outputs);
    else tr->yb = nd_buffer_alloc_i32((size_t)c->batch);
    tr->row_ids = calloc((size_t)c->batch, sizeof(long));
    if (nd_augment_per_sample(&tr->augment)) tr->augment_scratch = nd_buffer_alloc((size_t)tr->train.cols);
    if (tr->augment.mixup > 0.0f) tr->mixup_lam = nd_buffer_alloc((size_t)c->batch);
    if (!tr->order || !tr->xb || !(tr->yb || tr->tb) || !tr->row_ids ||
        (nd_augment_per_sample(&tr->augment) && !tr->augment_scratch) || (tr->augment.mixup > 0.0f && !tr->mixup_lam))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate batch buffers for %d x %d", c->batch, tr->train.cols);
    if (c->ema > 0.0f && !(tr->ema = nd_buffer_alloc(tr->model.num_params)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--ema: cannot allocate %zu floats", tr->model.num_params);
    ND_TRY(nd_ensemble_create(tr, err));
    if (c->early_stop > 0) {
        if (!tr->info.has_val)
            return ND_FAIL(err, ND_ERR_ARG, "--early-stop: %s has no /val split to watch (import with --val-fraction)",
                           c->data);
        if (!(tr->best_param = nd_buffer_alloc(tr->model.num_params)))
            return ND_FAIL(err, ND_ERR_NOMEM, "--early-stop: cannot allocate %zu floats", tr->model.num_params);
    }
    if ((!tr->async || tr->rank == 0) && !(tr->monitor_prev = nd_buffer_alloc(tr->model.num_params)))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the monitoring copy of the weights");
    tr->norm = c->normalize;
    tr->norm_mean = nd_buffer_alloc((size_t)tr->info.train.cols);
    tr->norm_inv_std = nd_buffer_alloc((size_t)tr->info.train.cols);
    if (!tr->norm_mean || !tr->norm_inv_std)
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate normalization statistics");
    if (tr->rank == 0) nd_model_init_params(&tr->model, c->seed, c->init);
    return ND_OK;
}

/* Collective: class counts (sigmoid_bce: positives per attribute, and the
 * rows) of the whole training split, then rank 0 sets the output biases
 * (the broadcast that follows shares them). */
static nd_status set_bias_priors(nd_trainer *tr, nd_error *err) {
    const int k = tr->info.num_outputs + 1;
    double *counts = calloc((size_t)k, sizeof(double));
    nd_status st = nd_train_agree(tr, counts ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate class counts"), err);
    if (st != ND_OK) {
        free(counts);
        return st;
    }
    st = nd_train_agree(tr, tr->feeder->scan(tr, ND_SCAN_COUNTS, counts, err), err);
    if (st == ND_OK) st = nd_comm_allreduce_sum_f64(tr->comm, counts, (size_t)k, err);
    if (st == ND_OK && tr->rank == 0 && tr->info.has_targets) nd_model_bias_log_odds(&tr->model, counts, counts[k - 1]);
    else if (st == ND_OK && tr->rank == 0) nd_model_bias_priors(&tr->model, counts);
    free(counts);
    return st;
}

/* Rank 0: one line on stderr when dropout comes before a regression loss:
 * it changes the variance of what the output layer sees, so inference's
 * outputs land off the scale they were trained to (CS231n advises against
 * it). Names the last layer that drops. */
static void warn_dropout_regression(const nd_trainer *tr) {
    if (!nd_loss_takes_targets(tr->loss) || nd_loss_multilabel(tr->loss)) return;
    const nd_model_spec *s = &tr->model.spec;
    int last = s->input_drop > 0.0f ? 0 : -1; /* 0: the input, l+1: hidden layer l */
    for (int l = 0; l < s->num_hidden; ++l)
        if (s->hidden[l].drop > 0.0f) last = l + 1;
    if (last < 0) return;
    char where[48] = "the input";
    if (last > 0) snprintf(where, sizeof where, "hidden layer %d", last);
    fprintf(stderr,
            "nndist: warning: dropout (last on %s) before --loss %s: it changes the variance the output layer "
            "sees, so outputs at inference drift from their trained scale; regression usually goes without it\n",
            where, nd_loss_name(tr->loss));
}

static void print_setup(const nd_trainer *tr) {
    FILE *out = tr->report.out;
    const nd_model *m = &tr->model;
    if (tr->cfg.print_config) {
        fprintf(out, "nndist train: resolved configuration\n");
        nd_cli_print(nd_train_options, nd_train_num_options, &tr->cfg, out, "  ");
    } else {
        /* The options set; every value is in --print-config, the summary and the checkpoints. */
        nd_train_config defaults;
        nd_error ignored = {0};
        (void)nd_cli_defaults(nd_train_options, nd_train_num_options, &defaults, &ignored);
        fprintf(out, "nndist train: options set (--print-config shows all)\n");
        if (!nd_cli_print_changed(nd_train_options, nd_train_num_options, &tr->cfg, &defaults, out, "  "))
            fprintf(out, "  (none)\n");
    }
    /* Each line fits 80 columns (the architecture aside). */
    if (tr->lbfgs)
        fprintf(out, "  # %d rank%s x %d BLAS thread%s, L-BFGS on the full batch of %ld rows, history %d, lr %g\n",
                tr->size, tr->size == 1 ? "" : "s", tr->threads, tr->threads == 1 ? "" : "s", tr->info.train.rows,
                tr->cfg.lbfgs_history, (double)tr->cfg.lr);
    else if (tr->async)
        fprintf(out, "  # %d ranks: %d server(s), %d worker(s) x %d BLAS threads, batch %d, peak lr %.6g\n", tr->size,
                tr->num_servers, tr->num_workers, tr->threads, tr->global_batch, (double)nd_lr_peak(&tr->lr));
    else
        fprintf(out, "  # %d rank%s x %d BLAS thread%s, global batch %d, %ld steps/epoch, peak lr %.6g\n", tr->size,
                tr->size == 1 ? "" : "s", tr->threads, tr->threads == 1 ? "" : "s", tr->global_batch,
                tr->steps_per_epoch, (double)nd_lr_peak(&tr->lr));
    if (tr->plan.exchange == ND_EXCHANGE_LOCAL)
        fprintf(out, "  # local SGD: average every %d steps (after %ld sync), outer momentum %g lr %g\n",
                tr->cfg.sync_every, tr->cfg.sync_warmup, (double)tr->cfg.outer_momentum, (double)tr->cfg.outer_lr);
    fprintf(out, "  # data: %ld train, %ld val, %ld test rows; %d features, %d %s\n", tr->info.train.rows,
            tr->info.val.rows, tr->info.test.rows, tr->train.cols, tr->info.num_outputs,
            tr->info.has_targets ? "targets" : "classes");
    char arch[512];
    nd_arch_format(&m->spec, arch, sizeof arch);
    fprintf(out, "  # model %s: %zu parameters, loss %s\n", arch, m->num_weights, nd_loss_name(tr->loss));
    if (m->frozen_layers > 0)
        fprintf(out, "  # frozen: layers 0-%d, %zu floats not trained, exchanged or back-propagated through\n",
                m->frozen_layers - 1, m->frozen_end);
    const double state_mb = nd_optimizer_state_floats(&tr->opt) * sizeof(float) / 1048576.0;
    fprintf(out, "  # per rank: activations %.1f MB for %d rows", m->workspace_floats * sizeof(float) / 1048576.0,
            m->max_batch);
    if (m->col_floats) fprintf(out, " (conv scratch %.2f MB)", m->col_floats * sizeof(float) / 1048576.0);
    if (tr->lbfgs) fprintf(out, ", L-BFGS state %.2f MB", nd_lbfgs_state_floats(tr->lbfgs) * sizeof(float) / 1048576.0);
    else if (!tr->async) fprintf(out, ", optimizer state %.2f MB", state_mb);
    fputc('\n', out);
    if (!tr->async && tr->slice.length < tr->model.num_params && tr->slice.length > 0)
        fprintf(out, "  # optimizer state sharded over %d ranks (unsharded: %.2f MB a rank)\n", tr->size,
                state_mb * (double)m->num_params / (double)tr->slice.length);
    fflush(out);
}

nd_status nd_trainer_setup(nd_trainer **out, const nd_train_config *cfg, nd_comm *comm, nd_error *err) {
    nd_trainer *tr = *out = calloc(1, sizeof *tr);
    ND_TRY(nd_comm_agree(comm, tr ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the trainer"), err));
    tr->cfg = *cfg;
    tr->comm = comm;
    tr->rank = nd_comm_rank(comm);
    tr->size = nd_comm_size(comm);
    ND_TRY(nd_train_agree(tr, nd_train_plan_resolve(cfg, &tr->plan, err), err));
    tr->loss = cfg->loss;
    tr->async = tr->plan.exchange == ND_EXCHANGE_PARAM_SERVER;
    tr->num_servers = tr->async ? cfg->servers : 0;
    tr->num_workers = tr->size - tr->num_servers;
    tr->worker_index = tr->rank - tr->num_servers;
    if (tr->async && tr->num_workers < 1)
        return nd_train_agree(tr,
                              ND_FAIL(err, ND_ERR_ARG,
                                      "--mode %s with --servers %d needs at least %d ranks, this job has %d: launch it "
                                      "with `mpirun -np %d nndist train ...` (or srun -n %d)",
                                      nd_mode_names[cfg->mode], cfg->servers, cfg->servers + 1, tr->size,
                                      cfg->servers + 1, cfg->servers + 1),
                              err);
    tr->threads = cfg->threads > 0 ? cfg->threads : auto_threads(comm);
    nd_blas_set_threads(tr->threads);
    tr->feeder = nd_feed_parts[tr->plan.feed]; /* async workers: the memory feed */
    ND_TRY(nd_train_agree(tr, read_shards(tr, err), err));
    ND_TRY(agree_steps(tr, err));
    ND_TRY(nd_train_agree(tr, build_model(tr, err), err));
    /* An update is one worker's batch in async mode, all ranks' in sync
     * mode, M micro-batches in deterministic mode. */
    tr->global_batch = tr->async           ? cfg->batch
        : tr->feeder->global_micro_batches ? cfg->batch * tr->feeder->global_micro_batches(tr)
                                           : cfg->batch * tr->size;
    if (tr->lbfgs) tr->global_batch = (int)tr->info.train.rows, tr->steps_per_epoch = cfg->lbfgs_max_iter;
    tr->state.start_epoch = 1;
    /* No epoch finished yet: its figures are unknown, not 0 (summaries written before one ends). */
    tr->state.last.train_loss = tr->state.last.train_acc = NAN;
    tr->state.last.test_loss = tr->state.last.test_acc = tr->state.last.val_loss = tr->state.last.val_acc = NAN;
    tr->state.last.train_eval_loss = tr->state.last.train_eval_acc = NAN;
    tr->state.plateau_best = -INFINITY;
    tr->state.plateau_scale = 1.0;
    int resumed = 0;
    ND_TRY(nd_train_checkpoint_setup(tr, &resumed, err)); /* may load weights, state, statistics */
    int init_stats = 0, head_loaded = 0;
    if (!resumed && cfg->init_from[0]) ND_TRY(nd_train_init_from(tr, &init_stats, &head_loaded, err));
    ND_TRY(normalize_splits(tr, resumed || init_stats, err));
    ND_TRY(nd_train_load_teachers(tr, err));
    if (!resumed && !head_loaded && cfg->output_bias == ND_BIAS_PRIORS) ND_TRY(set_bias_priors(tr, err));
    if (!resumed) {
        ND_TRY(nd_comm_bcast_f32(comm, tr->model.param, tr->model.num_params, 0, err));
        if (tr->ema) memcpy(tr->ema, tr->model.param, sizeof(float) * tr->model.num_params);
    }
    if (tr->async) ND_TRY(nd_train_agree(tr, nd_async_create(tr, err), err));
    /* An async epoch is one training set's worth of worker batches. */
    const long per_epoch = tr->async ? tr->info.train.rows / cfg->batch : tr->steps_per_epoch;
    ND_TRY(nd_train_agree(tr, nd_train_make_schedule(cfg, tr->global_batch, per_epoch, &tr->lr, err), err));
    char why[256];
    if (tr->rank == 0 && nd_lr_warmup_issue(&tr->lr, why, sizeof why))
        fprintf(stderr, "nndist train: warning: %s\n", why);
    if (tr->lr.kind == ND_SCHED_PLATEAU && !tr->info.has_val)
        return nd_train_agree(
            tr, ND_FAIL(err, ND_ERR_ARG, "--lr-schedule plateau: %s has no /val split to watch", cfg->data), err);
    tr->lr.plateau_scale = tr->state.plateau_scale; /* 1, or where a resumed run stood */
    ND_TRY(gather_hosts(tr, err));
    tr->start_time = (double)time(NULL);
    ND_TRY(nd_train_summary_begin(tr, err));
    /* Opened last: a run that fails its checks leaves an earlier metrics file alone. */
    ND_TRY(nd_train_agree(tr,
                          nd_report_open(&tr->report, tr->rank == 0, cfg->progress, cfg->metrics,
                                         resumed ? tr->state.start_epoch : 0, tr->state.step, err),
                          err));
    if (cfg->quiet) tr->report.quiet = 1, tr->report.progress = ND_PROGRESS_NONE;
    if (tr->rank == 0) warn_dropout_regression(tr);
    if (tr->rank == 0 && !cfg->quiet) print_setup(tr);
    /* The watchdog covers the training steps' exchanges from here on. */
    nd_comm_set_timeout(comm, cfg->timeout);
    if (tr->size > 1) ND_TRY(nd_train_agree(tr, nd_watchdog_start(&tr->watchdog, tr->rank, cfg->timeout, err), err));
    tr->exchange.env.watchdog = tr->watchdog;
    for (int o = 0; !tr->async && o < nd_num_observer_parts && tr->num_observers < ND_MAX_OBSERVERS; ++o)
        if (nd_observer_parts[o]->wanted(tr)) tr->observers[tr->num_observers++] = nd_observer_parts[o];
    return ND_OK;
}

nd_train_result nd_trainer_result(const nd_trainer *tr) {
    return (nd_train_result){.model = &tr->model,
                             .steps = tr->state.step,
                             .steps_per_epoch = tr->steps_per_epoch,
                             .samples_seen = tr->state.samples_seen,
                             .gradient_buckets = tr->state.gradient_buckets,
                             .optimizer_state_floats = (size_t)(nd_optimizer_state_floats(&tr->opt) +
                                                                (tr->lbfgs ? nd_lbfgs_state_floats(tr->lbfgs) : 0.0)),
                             .stream_windows = tr->feed.reader ? nd_stream_windows(tr->feed.reader) : 0,
                             .worker_index = tr->worker_index,
                             .staleness_max = tr->state.staleness_max,
                             .nan_skips = tr->state.nan_skips,
                             .nan_consecutive = tr->state.nan_consecutive,
                             .agreed_failure = tr->state.agreed_failure,
                             .best_epoch = tr->state.best_epoch,
                             .best_val = tr->state.best_val,
                             .last = tr->state.last,
                             .status = tr->state.status,
                             .stop_signal = tr->state.stop_signal,
                             .stop_epoch = tr->state.stop_epoch,
                             .stop_step = tr->state.stop_step,
                             .stop_fraction = nd_stop_fraction(tr),
                             .stop_checkpoint = tr->state.stop_checkpoint};
}

void nd_trainer_free(nd_trainer *tr) {
    if (!tr) return;
    if (tr->comm) nd_comm_set_timeout(tr->comm, 0.0);
    nd_watchdog_stop(tr->watchdog);
    nd_train_unlock_dir(tr);
    nd_async_free(tr);
    if (tr->feeder && tr->feeder->close) tr->feeder->close(tr);
    if (tr->exchange.part && tr->exchange.part->destroy) tr->exchange.part->destroy(tr->exchange.self);
    nd_report_close(&tr->report);
    nd_shard_free(&tr->train);
    nd_shard_free(&tr->test);
    nd_shard_free(&tr->val);
    nd_shard_free(&tr->train_eval);
    nd_buffer_free(tr->ema);
    nd_buffer_free(tr->best_param);
    nd_ensemble_free(tr);
    nd_buffer_free(tr->decay_mask);
    nd_buffer_free(tr->monitor_prev);
    nd_buffer_free(tr->norm_mean);
    nd_buffer_free(tr->norm_inv_std);
    nd_model_destroy(&tr->model);
    nd_optimizer_destroy(&tr->opt);
    nd_lbfgs_free(tr);
    nd_buffer_free(tr->order);
    nd_buffer_free(tr->xb);
    nd_buffer_free(tr->yb);
    nd_buffer_free(tr->tb);
    free(tr->row_ids);
    nd_buffer_free(tr->augment_scratch);
    nd_buffer_free(tr->mixup_lam);
    for (int t = 0; t < tr->num_teachers; ++t) {
        nd_model_destroy(&tr->teachers[t].model);
        nd_buffer_free(tr->teachers[t].scale);
        nd_buffer_free(tr->teachers[t].shift);
    }
    free(tr->teachers);
    nd_buffer_free(tr->teacher_x);
    nd_buffer_free(tr->soft);
    free(tr);
}
