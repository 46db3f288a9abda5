/* Synchronous data-parallel training: every rank holds a replica, computes
 * the gradient of its own batch, one allreduce sums the gradients (with the
 * step's loss and hit count riding in the buffer's tail), and every replica
 * applies the same update. */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "nndist/blas.h"
#include "nndist/loss.h"
#include "nndist/regularize.h"
#include "nndist/rng.h"
#include "nndist/train.h"
#include "grad_buckets.h"
#include "watchdog.h"
#include "train_internal.h"

const char *const nd_phase_names[ND_PHASES] = {"data", "forward", "backward", "wait", "comm", "update"};

/* `, "phase_seconds": {"data": s, ...}` */
static void print_phases(FILE *f, const double *phase) {
    fprintf(f, ", \"phase_seconds\": {");
    for (int p = 0; p < ND_PHASES; ++p) fprintf(f, "%s\"%s\": %.6g", p ? ", " : "", nd_phase_names[p], phase[p]);
    fputc('}', f);
}

/* Adds the time since *t0 to phase p and restarts the clock. */
static void phase_tick(nd_trainer *tr, nd_phase p, double *t0) {
    const double now = nd_comm_time();
    tr->phase[p] += now - *t0;
    *t0 = now;
}

nd_status nd_train_agree(nd_trainer *tr, nd_status st, nd_error *err) {
    int agreed = 0;
    st = nd_comm_agree_verdict(tr->comm, st, &agreed, err);
    if (agreed) tr->agreed_failure = 1; /* every rank stops here: the job can end normally */
    return st;
}

/* The node's cores shared among the ranks on it, never more than this
 * process may run on (mpirun binds ranks to cores by default). */
static int auto_threads(const nd_comm *comm) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int per_rank = (int)(online > 0 ? online : 1) / nd_comm_local_size(comm);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) < per_rank)
        per_rank = CPU_COUNT(&set);
    return per_rank < 1 ? 1 : per_rank;
}

/* Multi-label targets must be probabilities; the other checks are the
 * data module's (labels in range, values finite). */
static nd_status check_targets(const nd_trainer *tr, nd_error *err) {
    if (tr->loss != ND_LOSS_SIGMOID_BCE) return ND_OK;
    const nd_shard *splits[3] = {&tr->train, &tr->val, &tr->test};
    const char *names[3] = {"train", "val", "test"};
    for (int s = 0; s < 3; ++s) {
        const nd_shard *sh = splits[s];
        for (size_t i = 0; sh->t && i < (size_t)sh->rows * sh->target_cols; ++i)
            if (!(sh->t[i] >= 0.0f && sh->t[i] <= 1.0f))
                return ND_FAIL(err, ND_ERR_DATA, "%s: /%s/y[%ld][%zu] = %g: --loss sigmoid_bce needs targets in [0, 1]",
                               tr->cfg.data, names[s], sh->first_row + (long)(i / sh->target_cols),
                               i % sh->target_cols, (double)sh->t[i]);
    }
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
    if (nd_loss_takes_targets(tr->loss) != tr->info.has_targets)
        return ND_FAIL(err, ND_ERR_ARG, "--loss %s needs %s, but %s /train/y holds %s", nd_loss_name(c->loss),
                       tr->info.has_targets ? "class labels" : "float targets (N x K)", c->data,
                       tr->info.has_targets ? "float targets" : "class labels");
    if (tr->info.train.rows < tr->num_workers)
        return ND_FAIL(err, ND_ERR_DATA, "%s: /train has %ld rows, fewer than the %d %s", c->data,
                       tr->info.train.rows, tr->num_workers, tr->async ? "workers" : "ranks");
    const int k = tr->info.num_classes;
    tr->train.cols = tr->test.cols = tr->val.cols = tr->info.train.cols;
    if (c->deterministic) {
        if (tr->info.train.rows < c->micro_batches)
            return ND_FAIL(err, ND_ERR_DATA, "%s: /train has %ld rows, fewer than the %d micro-batches", c->data,
                           tr->info.train.rows, c->micro_batches);
        ND_TRY(nd_det_create(tr, err));
        ND_TRY(nd_det_read_train(tr, err));
    } else if (tr->worker_index >= 0 && c->stream_mb > 0.0f) {
        ND_TRY(nd_train_stream_open(tr, err));
    } else if (tr->worker_index >= 0) {
        ND_TRY(nd_shard_read(c->data, "train", tr->worker_index, tr->num_workers, k, &tr->train, err));
    }
    const int eval_part = tr->async ? (tr->rank == 0 ? 0 : -1) : tr->rank;
    const int eval_parts = tr->async ? 1 : tr->size;
    if (eval_part < 0) return ND_OK;
    if (tr->info.has_test) ND_TRY(nd_shard_read(c->data, "test", eval_part, eval_parts, k, &tr->test, err));
    if (tr->info.has_val) ND_TRY(nd_shard_read(c->data, "val", eval_part, eval_parts, k, &tr->val, err));
    return check_targets(tr, err);
}

/* Collective: statistics over every rank's training rows (unless a resumed
 * checkpoint brought them), applied to every split this rank holds. */
static nd_status normalize_splits(nd_trainer *tr, int have_stats, nd_error *err) {
    const int cols = tr->info.train.cols;
    nd_status st = ND_OK;
    nd_stream *reader = tr->feed.reader;
    if (reader && !have_stats && (tr->norm == ND_NORM_NONE || tr->loss == ND_LOSS_SIGMOID_BCE))
        /* A pass that checks every window before training (values, labels,
         * sigmoid_bce's target range); the statistics passes below check
         * values and labels as they read. */
        st = nd_train_agree(tr, nd_train_stream_scan(tr, ND_SCAN_CHECK, NULL, err), err);
    if (st != ND_OK) return st;
    if (!have_stats && tr->norm == ND_NORM_MINMAX) {
        /* One max-reduction of (max, -min): exact in any order. */
        double *range = nd_buffer_alloc_f64(2 * (size_t)cols);
        st = nd_train_agree(tr, range ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate feature ranges"), err);
        if (st == ND_OK) {
            for (size_t j = 0; j < 2 * (size_t)cols; ++j) range[j] = -INFINITY;
            if (reader) st = nd_train_agree(tr, nd_train_stream_scan(tr, ND_SCAN_RANGE, range, err), err);
            else nd_range_accumulate(range, tr->train.x, (size_t)tr->train.rows, cols);
            if (st == ND_OK) st = nd_comm_allreduce_max_f64(tr->comm, range, 2 * (size_t)cols, err);
        }
        if (st == ND_OK) nd_range_finish(range, cols, tr->norm_mean, tr->norm_inv_std);
        nd_buffer_free(range);
    } else if (!have_stats) {
        double *sums = nd_buffer_alloc_f64(2 * (size_t)cols + 1);
        st = nd_train_agree(tr, sums ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate normalization sums"), err);
        if (st == ND_OK && tr->det) {
            st = nd_det_stats(tr, sums, err);
        } else if (st == ND_OK) {
            if (reader) st = nd_train_agree(tr, nd_train_stream_scan(tr, ND_SCAN_STATS, sums, err), err);
            else nd_stats_accumulate(sums, tr->train.x, (size_t)tr->train.rows, cols);
            if (st == ND_OK) st = nd_comm_allreduce_sum_f64(tr->comm, sums, 2 * (size_t)cols + 1, err);
        }
        if (st == ND_OK) nd_stats_finish(sums, cols, tr->norm, tr->norm_mean, tr->norm_inv_std);
        nd_buffer_free(sums);
        /* MPI does not promise bitwise-equal allreduce results on every rank;
         * rank 0's statistics make the normalized data identical everywhere. */
        if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, tr->norm_mean, (size_t)cols, 0, err);
        if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, tr->norm_inv_std, (size_t)cols, 0, err);
    }
    if (st == ND_OK && reader && tr->norm != ND_NORM_NONE) nd_stream_set_normalize(reader, tr->norm_mean, tr->norm_inv_std);
    if (st == ND_OK) {
        nd_shard *splits[3] = {&tr->train, &tr->test, &tr->val};
        for (int i = 0; i < 3; ++i)
            if (splits[i]->x)
                nd_normalize_apply(splits[i]->x, (size_t)splits[i]->rows, cols, tr->norm_mean, tr->norm_inv_std);
    }
    return st;
}

/* Collective: every rank runs the same number of steps per epoch, set by the
 * smallest shard, so no rank waits in an allreduce another never calls.
 * (Servers hold no training rows and do not count.) */
static nd_status agree_steps(nd_trainer *tr, nd_error *err) {
    const int has = tr->worker_index >= 0;
    long v[2] = {has ? tr->train.rows / tr->cfg.batch : LONG_MAX, has ? tr->train.rows : LONG_MAX};
    ND_TRY(nd_comm_allreduce_min_long(tr->comm, v, 2, err));
    if (tr->det) v[0] = nd_det_steps_per_epoch(tr), v[1] = tr->info.train.rows / tr->cfg.micro_batches;
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

/* --shard-optimizer on more than one rank (on one, the slice is everything). */
static int sharded(const nd_trainer *tr) { return !tr->async && tr->cfg.shard_optimizer && tr->size > 1; }

static nd_status build_model(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    nd_model_spec spec;
    ND_TRY(nd_train_model_spec(c, tr->train.cols, tr->info.num_outputs, &spec, err));
    const int max_batch = c->batch > c->eval_batch ? c->batch : c->eval_batch;
    ND_TRY(nd_model_create(&tr->model, &spec, max_batch, err));
    nd_opt_config oc = {0};
    oc.kind = c->opt;
    oc.momentum = c->momentum;
    oc.beta1 = c->beta1;
    oc.beta2 = c->beta2;
    oc.eps = c->eps;
    oc.rho = c->rho;
    oc.weight_decay = oc.kind == ND_OPT_ADAMW ? c->weight_decay : 0.0f;
    /* The optimizer state lives where updates are applied: every replica in
     * sync mode, each server's slice in async mode, nowhere on a worker. */
    if (tr->async || sharded(tr)) {
        long off = 0, len = 0;
        if (tr->worker_index < 0) nd_shard_range((long)tr->model.num_params, tr->rank, tr->num_servers, &off, &len);
        else if (sharded(tr)) nd_shard_range((long)tr->model.num_params, tr->rank, tr->size, &off, &len);
        tr->slice = (nd_span){(size_t)off, (size_t)len};
    } else {
        tr->slice = (nd_span){0, tr->model.num_params};
    }
    ND_TRY(nd_optimizer_create(&tr->opt, &oc, tr->slice.length, err));
    if (oc.kind == ND_OPT_ADAMW) {
        /* Decoupled decay on weights only: a mask over the arena, viewed
         * from this rank's slice. */
        if (!(tr->decay_mask = nd_buffer_alloc(tr->model.num_params)))
            return ND_FAIL(err, ND_ERR_NOMEM, "adamw: cannot allocate the decay mask");
        for (int l = 0; l < tr->model.num_layers; ++l) {
            nd_span spans[2];
            for (int k = nd_train_regularized(tr, l, spans); k-- > 0;)
                for (size_t i = 0; i < spans[k].length; ++i) tr->decay_mask[spans[k].offset + i] = 1.0f;
        }
        tr->opt.decay_mask = tr->decay_mask + tr->slice.offset;
    }
    /* The row order of the shard, or of one window when streaming. */
    tr->order = nd_buffer_alloc_i32((size_t)(tr->feed.reader ? tr->feed.window_rows : tr->train.rows));
    if (tr->feed.reader) ND_TRY(nd_train_stream_alloc(tr, err));
    tr->xb = nd_buffer_alloc((size_t)c->batch * tr->train.cols);
    if (tr->info.has_targets) tr->tb = nd_buffer_alloc((size_t)c->batch * tr->info.num_outputs);
    else tr->yb = nd_buffer_alloc_i32((size_t)c->batch);
    tr->row_ids = calloc((size_t)c->batch, sizeof(long));
    if (!tr->order || !tr->xb || !(tr->yb || tr->tb) || !tr->row_ids)
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate batch buffers for %d x %d", c->batch, tr->train.cols);
    if (c->ema > 0.0f && !(tr->ema = nd_buffer_alloc(tr->model.num_params)))
        return ND_FAIL(err, ND_ERR_NOMEM, "--ema: cannot allocate %zu floats", tr->model.num_params);
    if (c->early_stop > 0) {
        if (!tr->info.has_val)
            return ND_FAIL(err, ND_ERR_ARG, "--early-stop: %s has no /val split to watch (import with --val-fraction)",
                           c->data);
        if (!(tr->best_param = nd_buffer_alloc(tr->model.num_params)))
            return ND_FAIL(err, ND_ERR_NOMEM, "--early-stop: cannot allocate %zu floats", tr->model.num_params);
    }
    if (!tr->async && !(tr->monitor_prev = nd_buffer_alloc(tr->model.num_params)))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the monitoring copy of the weights");
    tr->norm = c->normalize;
    tr->norm_mean = nd_buffer_alloc((size_t)tr->info.train.cols);
    tr->norm_inv_std = nd_buffer_alloc((size_t)tr->info.train.cols);
    if (!tr->norm_mean || !tr->norm_inv_std)
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate normalization statistics");
    if (tr->rank == 0) nd_model_init_params(&tr->model, c->seed, c->init);
    return ND_OK;
}

/* Collective: class counts of the whole training split, then rank 0 sets
 * the output biases (the broadcast that follows shares them). */
static nd_status set_bias_priors(nd_trainer *tr, nd_error *err) {
    const int k = tr->info.num_classes;
    double *counts = calloc((size_t)k, sizeof(double));
    nd_status st = nd_train_agree(tr, counts ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate class counts"), err);
    if (st != ND_OK) {
        free(counts);
        return st;
    }
    if (tr->feed.reader) st = nd_train_agree(tr, nd_train_stream_scan(tr, ND_SCAN_COUNTS, counts, err), err);
    else
        for (int i = 0; i < tr->train.rows; ++i) counts[tr->train.y[i]] += 1.0;
    if (st == ND_OK) st = nd_comm_allreduce_sum_f64(tr->comm, counts, (size_t)k, err);
    if (st == ND_OK && tr->rank == 0) nd_model_bias_priors(&tr->model, counts);
    free(counts);
    return st;
}

static nd_status create_buckets(nd_trainer *tr, nd_error *err) {
    if (!(tr->buckets = calloc(1, sizeof *tr->buckets)))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the gradient buckets");
    const size_t floats = (size_t)tr->cfg.bucket_kb * 1024 / sizeof(float);
    return nd_buckets_create(tr->buckets, tr->comm, tr->model.num_params + ND_TAIL_USED, floats,
                             tr->model.num_layers, err);
}

static void print_setup(const nd_trainer *tr) {
    FILE *out = tr->report.out;
    const nd_model *m = &tr->model;
    fprintf(out, "nndist train: resolved configuration\n");
    nd_cli_print(nd_train_options, nd_train_num_options, &tr->cfg, out, "  ");
    if (tr->async)
        fprintf(out, "  # ranks %d (%d server(s), %d worker(s)), BLAS threads per rank %d, batch per update %d, peak lr %.6g\n",
                tr->size, tr->num_servers, tr->num_workers, tr->threads, tr->global_batch,
                (double)nd_lr_peak(&tr->lr));
    else
        fprintf(out, "  # ranks %d, BLAS threads per rank %d, global batch %d, peak lr %.6g\n", tr->size,
                tr->threads, tr->global_batch, (double)nd_lr_peak(&tr->lr));
    fprintf(out, "  # data %ld train / %ld val / %ld test rows, %d features, %d %s; %ld steps per epoch\n",
            tr->info.train.rows, tr->info.val.rows, tr->info.test.rows, tr->train.cols, tr->info.num_outputs,
            tr->info.has_targets ? "targets" : "classes", tr->steps_per_epoch);
    char arch[512];
    nd_arch_format(&m->spec, arch, sizeof arch);
    fprintf(out, "  # model %s, %zu parameters, loss %s\n", arch, m->num_weights, nd_loss_name(tr->loss));
    const double state_mb = nd_optimizer_state_floats(&tr->opt) * sizeof(float) / 1048576.0;
    if (tr->zero && tr->slice.length > 0)
        fprintf(out, "  # optimizer state %.2f MB per rank, sharded over %d ranks (unsharded: %.2f MB, saves %.2f MB)\n",
                state_mb, tr->size, state_mb * (double)m->num_params / (double)tr->slice.length,
                state_mb * ((double)m->num_params / (double)tr->slice.length - 1.0));
    else if (!tr->async)
        fprintf(out, "  # optimizer state %.2f MB per rank\n", state_mb);
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
    tr->straggle_rank = tr->plan.straggle_rank;
    tr->straggle_factor = tr->plan.straggle_factor;
    if (tr->async && tr->num_workers < 1)
        return nd_train_agree(tr, ND_FAIL(err, ND_ERR_ARG,
                                          "--mode %s with --servers %d needs at least %d ranks, this job has %d",
                                          nd_mode_names[cfg->mode], cfg->servers, cfg->servers + 1, tr->size),
                              err);
    tr->threads = cfg->threads > 0 ? cfg->threads : auto_threads(comm);
    nd_blas_set_threads(tr->threads);
    ND_TRY(nd_train_agree(tr, read_shards(tr, err), err));
    ND_TRY(agree_steps(tr, err));
    ND_TRY(nd_train_agree(tr, build_model(tr, err), err));
    if (tr->det) ND_TRY(nd_train_agree(tr, nd_det_alloc(tr, err), err));
    if (sharded(tr)) ND_TRY(nd_train_agree(tr, nd_zero_create(tr, err), err));
    else if (!tr->async && !tr->det && tr->size > 1 && cfg->bucket_kb > 0)
        ND_TRY(nd_train_agree(tr, create_buckets(tr, err), err));
    /* An update is one worker's batch in async mode, all ranks' in sync
     * mode, M micro-batches in deterministic mode. */
    tr->global_batch = tr->async ? cfg->batch : tr->det ? cfg->batch * cfg->micro_batches : cfg->batch * tr->size;
    tr->start_epoch = 1;
    tr->plateau_best = -INFINITY;
    tr->plateau_scale = 1.0;
    int resumed = 0;
    ND_TRY(nd_train_checkpoint_setup(tr, &resumed, err)); /* may load weights, state, statistics */
    ND_TRY(normalize_splits(tr, resumed, err));
    if (!resumed && cfg->output_bias == ND_BIAS_PRIORS) ND_TRY(set_bias_priors(tr, err));
    if (!resumed) {
        ND_TRY(nd_comm_bcast_f32(comm, tr->model.param, tr->model.num_params, 0, err));
        if (tr->ema) memcpy(tr->ema, tr->model.param, sizeof(float) * tr->model.num_params);
    }
    if (tr->async) ND_TRY(nd_train_agree(tr, nd_async_create(tr, err), err));
    /* An async epoch is one training set's worth of worker batches. */
    const long per_epoch = tr->async ? tr->info.train.rows / cfg->batch : tr->steps_per_epoch;
    ND_TRY(nd_train_agree(tr, nd_train_make_schedule(cfg, tr->global_batch, per_epoch, &tr->lr, err), err));
    if (tr->lr.kind == ND_SCHED_PLATEAU && !tr->info.has_val)
        return nd_train_agree(tr, ND_FAIL(err, ND_ERR_ARG, "--lr-schedule plateau: %s has no /val split to watch",
                                          cfg->data), err);
    tr->lr.plateau_scale = tr->plateau_scale; /* 1, or where a resumed run stood */
    /* Opened last: a run that fails its checks leaves an earlier metrics file alone. */
    ND_TRY(nd_train_agree(tr, nd_report_open(&tr->report, tr->rank == 0, cfg->progress, cfg->metrics, err), err));
    if (tr->rank == 0) print_setup(tr);
    /* The watchdog covers the training steps' exchanges from here on. */
    nd_comm_set_timeout(comm, cfg->timeout);
    if (tr->size > 1) ND_TRY(nd_train_agree(tr, nd_watchdog_start(&tr->watchdog, tr->rank, cfg->timeout, err), err));
    return ND_OK;
}

nd_train_result nd_trainer_result(const nd_trainer *tr) {
    return (nd_train_result){.model = &tr->model,
                             .steps = tr->step,
                             .steps_per_epoch = tr->steps_per_epoch,
                             .samples_seen = tr->samples_seen,
                             .gradient_buckets = tr->gradient_buckets,
                             .optimizer_state_floats = (size_t)nd_optimizer_state_floats(&tr->opt),
                             .stream_windows = tr->feed.reader ? nd_stream_windows(tr->feed.reader) : 0,
                             .worker_index = tr->worker_index,
                             .staleness_max = tr->staleness_max,
                             .nan_skips = tr->nan_skips,
                             .nan_consecutive = tr->nan_consecutive,
                             .agreed_failure = tr->agreed_failure,
                             .best_epoch = tr->best_epoch,
                             .best_val = tr->best_val,
                             .last = tr->last};
}

void nd_trainer_free(nd_trainer *tr) {
    if (!tr) return;
    if (tr->comm) nd_comm_set_timeout(tr->comm, 0.0);
    nd_watchdog_stop(tr->watchdog);
    nd_async_free(tr);
    nd_det_free(tr);
    nd_zero_free(tr);
    if (tr->buckets) nd_buckets_free(tr->buckets);
    free(tr->buckets);
    nd_report_close(&tr->report);
    nd_stream_close(tr->feed.reader);
    free(tr->feed.window_order);
    nd_shard_free(&tr->train);
    nd_shard_free(&tr->test);
    nd_shard_free(&tr->val);
    nd_buffer_free(tr->ema);
    nd_buffer_free(tr->best_param);
    nd_buffer_free(tr->decay_mask);
    nd_buffer_free(tr->monitor_prev);
    nd_buffer_free(tr->norm_mean);
    nd_buffer_free(tr->norm_inv_std);
    nd_model_destroy(&tr->model);
    nd_optimizer_destroy(&tr->opt);
    nd_buffer_free(tr->order);
    nd_buffer_free(tr->xb);
    nd_buffer_free(tr->yb);
    nd_buffer_free(tr->tb);
    free(tr->row_ids);
    free(tr);
}

int nd_train_regularized(const nd_trainer *tr, int l, nd_span spans[2]) {
    const nd_dense_layer *L = &tr->model.layer[l];
    spans[0] = L->w;
    spans[1] = L->b;
    return tr->cfg.regularize_bias ? 2 : 1;
}

/* Penalties and value clipping of model.grad (a sum over `samples`) over
 * grad[lo, hi) of the trainable prefix; returns the factor the optimizer
 * must still apply (1/samples, or 1 after value clipping), without the
 * norm clip. One pass each for the optional parts. */
float nd_train_grad_penalize(nd_trainer *tr, int samples, size_t lo, size_t hi) {
    nd_model *m = &tr->model;
    const nd_train_config *c = &tr->cfg;
    if (hi > m->num_trainable) hi = m->num_trainable; /* the running statistics are not gradients */
    float scale = 1.0f / (float)samples;
    for (int l = 0; l < m->num_layers; ++l) {
        nd_span spans[2];
        for (int k = nd_train_regularized(tr, l, spans); k-- > 0;) {
            const size_t a = spans[k].offset > lo ? spans[k].offset : lo;
            const size_t b = spans[k].offset + spans[k].length < hi ? spans[k].offset + spans[k].length : hi;
            if (a >= b) continue;
            float *g = m->grad + a;
            const float *p = m->param + a;
            /* g is a sum over the batch, so the penalties are scaled up to match. */
            if (c->weight_decay > 0.0f && tr->opt.cfg.kind != ND_OPT_ADAMW) /* adamw decays in the optimizer */
                nd_reg_l2(g, p, b - a, c->weight_decay * (float)samples);
            if (c->l1 > 0.0f) nd_reg_l1(g, p, b - a, c->l1 * (float)samples);
        }
    }
    if (c->clip_value > 0.0f && lo < hi) {
        nd_clip_by_value(m->grad + lo, hi - lo, scale, c->clip_value);
        scale = 1.0f;
    }
    return scale;
}

/* Average (by `samples`), regularize and clip the summed gradient in
 * model.grad; returns the factor the optimizer must still apply. Averaging
 * and the norm-clip factor are folded into the returned scale. */
float nd_train_grad_scale(nd_trainer *tr, int samples) {
    nd_model *m = &tr->model;
    float scale = nd_train_grad_penalize(tr, samples, 0, m->num_trainable);
    if (tr->cfg.clip_norm > 0.0f)
        scale *= nd_clip_norm_factor(nd_grad_norm(m->grad, m->num_trainable, scale), tr->cfg.clip_norm);
    return scale;
}

/* --sync-bn's hook: the model adds batch-norm sums across ranks through it,
 * in the middle of forward and backward: a rank frozen there would hold the
 * others inside it, so the watchdog times it. */
static int reduce_over_ranks(void *ctx, float *buf, size_t n) {
    nd_trainer *tr = ctx;
    nd_error ignored = {0};
    nd_watchdog_enter(tr->watchdog, "a --sync-bn batch-norm allreduce", tr->step + 1);
    const nd_status st = nd_comm_allreduce_sum_f32(tr->comm, buf, n, &ignored);
    nd_watchdog_leave(tr->watchdog);
    return st == ND_OK ? 0 : -1;
}

void nd_train_batch_gradient(nd_trainer *tr, const int *idx) {
    nd_model *m = &tr->model;
    const int b = tr->cfg.batch, cols = tr->train.cols, k = tr->info.num_outputs;
    const nd_shard *src = tr->feed.reader ? &tr->feed.window : &tr->train; /* idx indexes its rows */
    double t0 = nd_comm_time();
    for (int i = 0; i < b; ++i) {
        memcpy(tr->xb + (size_t)i * cols, src->x + (size_t)idx[i] * cols, sizeof(float) * cols);
        if (tr->tb) memcpy(tr->tb + (size_t)i * k, src->t + (size_t)idx[i] * k, sizeof(float) * k);
        else tr->yb[i] = src->y[idx[i]];
        tr->row_ids[i] = src->first_row + idx[i];
    }
    /* Zeroed first: a training forward leaves batch-norm sums in the gradient. */
    nd_model_zero_grad(m);
    phase_tick(tr, ND_PHASE_DATA, &t0);
    nd_grad_buckets *buckets = tr->buckets;
    const nd_train_pass pass = {.seed = tr->cfg.seed, .step = tr->step, .row_ids = tr->row_ids,
                                .reduce = tr->cfg.sync_bn ? reduce_over_ranks : NULL, .reduce_ctx = tr,
                                .grad_ready = buckets ? nd_buckets_ready : NULL, .ready_ctx = buckets};
    const float *out = nd_model_forward(m, tr->xb, b, &pass);
    nd_loss_stats ls = nd_loss_apply(tr->loss, nd_model_output_grad(m), out, tr->yb, tr->tb, b, k);
    m->grad[m->num_params + ND_TAIL_LOSS] = (float)ls.loss_sum;
    m->grad[m->num_params + ND_TAIL_CORRECT] = (float)ls.correct;
    if (tr->cfg.fault_nan_step == tr->step + 1 && tr->worker_index == 0) /* --fault-nan-step: exercise the guard */
        m->grad[m->num_params + ND_TAIL_LOSS] = NAN;
    /* The running statistics and the tail are final: the first bucket. */
    if (buckets) nd_buckets_begin(buckets, m->grad, m->num_trainable, m->num_params + ND_TAIL_USED);
    phase_tick(tr, ND_PHASE_FORWARD, &t0);
    nd_model_backward(m, tr->xb, b);
    phase_tick(tr, ND_PHASE_BACKWARD, &t0);
}

/* Step s of the current order; a --straggle rank then sleeps (factor - 1)
 * times the time this took. */
void nd_train_compute_gradient(nd_trainer *tr, long s) {
    const double t0 = nd_comm_time();
    nd_train_batch_gradient(tr, tr->feed.reader ? tr->feed.idx : tr->order + s * tr->cfg.batch);
    if (tr->rank == tr->straggle_rank) {
        const double extra = (tr->straggle_factor - 1.0) * (nd_comm_time() - t0);
        struct timespec ts = {(time_t)extra, (long)((extra - (double)(time_t)extra) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* The order of pass `pass` over this rank's rows is a function of (seed,
 * pass, rank) alone. */
void nd_train_order_pass(nd_trainer *tr, int pass) {
    for (int i = 0; i < tr->train.rows; ++i) tr->order[i] = i;
    if (!tr->cfg.shuffle) return;
    nd_rng rng;
    nd_rng_seed(&rng, tr->cfg.seed, 0x5u << 20 | (uint64_t)pass, (uint64_t)tr->rank);
    nd_rng_shuffle_i32(&rng, tr->order, (size_t)tr->train.rows);
}

void nd_train_eval_sums(nd_trainer *tr, const nd_shard *shard, double sums[3]) {
    const int eb = tr->cfg.eval_batch, cols = tr->info.train.cols, k = tr->info.num_outputs;
    sums[0] = sums[1] = 0.0;
    sums[2] = (double)shard->rows;
    for (int off = 0; off < shard->rows; off += eb) {
        const int nb = shard->rows - off < eb ? shard->rows - off : eb;
        const float *out = nd_model_forward(&tr->model, shard->x + (size_t)off * cols, nb, NULL);
        nd_loss_stats st = nd_loss_apply(tr->loss, NULL, out, shard->y ? shard->y + off : NULL,
                                         shard->t ? shard->t + (size_t)off * k : NULL, nb, k);
        sums[0] += st.loss_sum;
        sums[1] += st.correct;
    }
}

nd_status nd_trainer_evaluate(nd_trainer *tr, const nd_shard *shard, double *loss, double *acc,
                              nd_error *err) {
    double sums[3];
    nd_train_eval_sums(tr, shard, sums);
    nd_watchdog_enter(tr->watchdog, "the evaluation's sums", tr->step);
    ND_TRY(nd_comm_allreduce_sum_f64(tr->comm, sums, 3, err));
    nd_watchdog_leave(tr->watchdog);
    *loss = sums[2] > 0 ? sums[0] / sums[2] : NAN;
    *acc = nd_loss_metric(tr->loss, sums[1], sums[2], tr->info.num_outputs);
    return ND_OK;
}

void nd_train_print_epoch(nd_trainer *tr, const nd_epoch_stats *e) {
    nd_report *r = &tr->report;
    if (!r->active) return;
    const char *ml = nd_loss_metric_label(tr->loss), *mn = nd_loss_metric_name(tr->loss);
    fprintf(r->out, "epoch %3d/%d  train loss %.4f %s %.4f", e->epoch, tr->cfg.epochs, e->train_loss, ml,
            e->train_acc);
    if (tr->info.has_val) fprintf(r->out, " | val loss %.4f %s %.4f", e->val_loss, ml, e->val_acc);
    if (tr->info.has_test) fprintf(r->out, " | test loss %.4f %s %.4f", e->test_loss, ml, e->test_acc);
    fprintf(r->out, " | lr %.5g | %.0f samples/s | %.2f s", e->lr, e->samples_per_s, e->seconds);
    if (e->has_staleness) fprintf(r->out, " | staleness mean %.2f max %ld", e->staleness_mean, e->staleness_max);
    if (e->nan_skips) fprintf(r->out, " | %ld non-finite steps skipped", e->nan_skips);
    if (e->has_monitor) {
        double worst = 0;
        for (int l = 0; l < tr->model.num_layers; ++l) worst = fmax(worst, e->update_ratio[l]);
        fprintf(r->out, " | grad norm %.3g update/weight <= %.1e", e->grad_norm, worst);
    }
    if (tr->ema) {
        if (tr->info.has_val) fprintf(r->out, " | ema val %s %.4f", ml, e->ema_val_acc);
        if (tr->info.has_test) fprintf(r->out, " | ema test %s %.4f", ml, e->ema_test_acc);
    }
    fputc('\n', r->out);
    fflush(r->out);
    if (r->metrics) {
        fprintf(r->metrics,
                "{\"epoch\": %d, \"step\": %ld, \"train_loss\": %.6g, \"train_%s\": %.6g, "
                "\"lr\": %.6g, \"seconds\": %.6g, \"samples_per_s\": %.6g",
                e->epoch, tr->step, e->train_loss, mn, e->train_acc, e->lr, e->seconds, e->samples_per_s);
        if (tr->info.has_val)
            fprintf(r->metrics, ", \"val_loss\": %.6g, \"val_%s\": %.6g, \"gap_%s\": %.6g", e->val_loss, mn,
                    e->val_acc, mn, e->train_acc - e->val_acc);
        if (tr->info.has_test)
            fprintf(r->metrics, ", \"test_loss\": %.6g, \"test_%s\": %.6g", e->test_loss, mn, e->test_acc);
        if (tr->ema && tr->info.has_val) fprintf(r->metrics, ", \"ema_val_%s\": %.6g", mn, e->ema_val_acc);
        if (tr->ema && tr->info.has_test) fprintf(r->metrics, ", \"ema_test_%s\": %.6g", mn, e->ema_test_acc);
        if (!tr->async) print_phases(r->metrics, e->phase);
        if (!tr->async) fprintf(r->metrics, ", \"nan_skips\": %ld", e->nan_skips);
        if (e->has_monitor) {
            fprintf(r->metrics, ", \"grad_norm\": %.6g, \"layers\": [", e->grad_norm);
            for (int l = 0; l < tr->model.num_layers; ++l)
                fprintf(r->metrics,
                        "%s{\"update_ratio\": %.6g, \"dead_fraction\": %.6g, \"act_mean\": %.6g, \"act_std\": %.6g}",
                        l ? ", " : "", e->update_ratio[l], e->dead_frac[l], e->act_mean[l], e->act_std[l]);
            fputc(']', r->metrics);
        }
        if (e->has_staleness) {
            fprintf(r->metrics, ", \"staleness_mean\": %.6g, \"staleness_max\": %ld, \"staleness_hist\": [",
                    e->staleness_mean, e->staleness_max);
            for (int i = 0; i < ND_STALENESS_BUCKETS; ++i)
                fprintf(r->metrics, "%s%ld", i ? ", " : "", e->staleness_hist[i]);
            fputc(']', r->metrics);
        }
        fputs("}\n", r->metrics);
        fflush(r->metrics);
    }
}

static void json_number(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

static void write_summary(FILE *f, const void *ctx) {
    const nd_trainer *tr = ctx;
    const nd_epoch_stats *e = &tr->last;
    fprintf(f, "{\"mode\": \"%s\", \"np\": %d, \"batch_per_rank\": %d, \"global_batch\": %d", nd_mode_names[tr->cfg.mode],
            tr->size, tr->cfg.batch, tr->global_batch);
    fprintf(f, ", \"epochs\": %d, \"steps\": %ld, \"threads_per_rank\": %d", e->epoch, tr->step, tr->threads);
    json_number(f, "train_seconds", tr->train_seconds);
    json_number(f, "samples_per_s", tr->train_seconds > 0 ? tr->samples_seen / tr->train_seconds : NAN);
    json_number(f, "train_loss", e->train_loss);
    /* Classification fills the *_accuracy keys; other losses leave them
     * null and add their own metric's keys. */
    const int acc = tr->loss <= ND_LOSS_SQUARED_HINGE;
    const char *mn = nd_loss_metric_name(tr->loss);
    char key[64];
    json_number(f, "train_accuracy", acc ? e->train_acc : NAN);
    json_number(f, "val_loss", e->val_loss);
    json_number(f, "val_accuracy", acc ? e->val_acc : NAN);
    json_number(f, "test_accuracy", acc ? e->test_acc : NAN);
    json_number(f, "test_loss", e->test_loss);
    if (!acc) {
        const char *splits[3] = {"train", "val", "test"};
        const double values[3] = {e->train_acc, e->val_acc, e->test_acc};
        for (int i = 0; i < 3; ++i) {
            snprintf(key, sizeof key, "%s_%s", splits[i], mn);
            json_number(f, key, values[i]);
        }
    }
    fprintf(f, ", \"loss\": \"%s\"", nd_loss_name(tr->loss));
    if (!tr->async) print_phases(f, tr->phase_total); /* rank 0's training time by phase (sync) */
    const double *mb = tr->memory_mb;
    fprintf(f, ", \"memory_mb\": {\"peak_rss\": %.1f, \"shards\": %.1f, \"parameters\": %.2f, \"activations\": %.2f, "
               "\"optimizer_state\": %.2f}",
            mb[0], mb[1], mb[2], mb[3], mb[4]);
    if (tr->buckets) fprintf(f, ", \"gradient_buckets\": %ld", tr->gradient_buckets);
    if (!tr->async) fprintf(f, ", \"nan_skips\": %ld", tr->nan_skips);
    fprintf(f, ", \"parameters\": %zu, \"config\": {", tr->model.num_weights);
    nd_cli_print_json(nd_train_options, nd_train_num_options, &tr->cfg, f);
    fputs("}}\n", f);
}

/* Epoch-end health figures (not collective: every replica holds the same
 * weights and gradient; the activations are rank 0's last batch). */
static void monitor_before(nd_trainer *tr, nd_epoch_stats *e, double grad_norm) {
    const nd_model *m = &tr->model;
    e->has_monitor = 1;
    e->grad_norm = grad_norm;
    memcpy(tr->monitor_prev, m->param, sizeof(float) * m->num_params);
    const int b = tr->cfg.batch;
    for (int l = 0; l < m->num_layers; ++l) {
        const int w = m->layer[l].width;
        const float *a = nd_model_activation(m, l);
        double sum = 0, sq = 0;
        int dead = 0;
        for (int j = 0; j < w; ++j) {
            int alive = 0;
            for (int i = 0; i < b; ++i) {
                const float v = a[(size_t)i * w + j];
                sum += v, sq += (double)v * v;
                alive |= v != 0.0f;
            }
            dead += !alive;
        }
        const double n = (double)b * w, mean = sum / n;
        e->act_mean[l] = mean;
        e->act_std[l] = sqrt(fmax(sq / n - mean * mean, 0.0));
        e->dead_frac[l] = (double)dead / w;
    }
}

static void monitor_after(nd_trainer *tr, nd_epoch_stats *e) {
    const nd_model *m = &tr->model;
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_span w = m->layer[l].w;
        double du = 0, ww = 0;
        for (size_t i = w.offset; i < w.offset + w.length; ++i) {
            const double d = (double)m->param[i] - tr->monitor_prev[i];
            du += d * d;
            ww += (double)tr->monitor_prev[i] * tr->monitor_prev[i];
        }
        e->update_ratio[l] = ww > 0 ? sqrt(du / ww) : NAN;
    }
}

/* Collective: one epoch of steps; fills loss/accuracy sums and seconds. */
static nd_status run_epoch(nd_trainer *tr, int epoch, nd_epoch_stats *e, nd_error *err) {
    nd_model *m = &tr->model;
    const size_t n = m->num_params;
    const long steps = tr->steps_per_epoch;
    const int resuming = epoch == tr->start_epoch;
    const long first = resuming ? tr->start_epoch_step : 0;
    double loss_sum = resuming ? tr->start_loss_sum : 0.0, correct = resuming ? tr->start_correct : 0.0;
    const long every = tr->cfg.checkpoint_every;
    if (tr->det) nd_det_order_pass(tr, epoch);
    else if (tr->feed.reader) ND_TRY(nd_train_stream_epoch(tr, epoch, first, err));
    else nd_train_order_pass(tr, epoch);
    nd_watchdog_enter(tr->watchdog, "the epoch's start barrier", tr->step);
    ND_TRY(nd_comm_barrier(tr->comm, err)); /* start the clock together, as the peer does */
    nd_watchdog_leave(tr->watchdog);
    double t0 = nd_comm_time(), paused = 0.0;
    memset(tr->phase, 0, sizeof tr->phase);
    for (long s = first; s < steps; ++s) {
        double before[ND_PHASES], tp = nd_comm_time();
        memcpy(before, tr->phase, sizeof before);
        if (tr->det) {
            /* compute phases tick inside; the rest of the step gradient is the exchange */
            ND_TRY(nd_det_step_gradient(tr, s, err));
            double inside = 0.0;
            for (int p = 0; p < ND_PHASES; ++p) inside += tr->phase[p] - before[p];
            const double now = nd_comm_time();
            tr->phase[ND_PHASE_COMM] += now - tp - inside;
            tp = now;
        } else {
            if (tr->feed.reader) { /* waiting for the reader counts as data time */
                double td = nd_comm_time();
                ND_TRY(nd_train_stream_batch(tr, err));
                phase_tick(tr, ND_PHASE_DATA, &td);
            }
            nd_train_compute_gradient(tr, s);
            if (m->pass_failed) return ND_FAIL(err, ND_ERR_COMM, "rank %d: --sync-bn: a batch-norm allreduce failed", tr->rank);
            tp = nd_comm_time();
            /* A barrier first splits the exchange's time in two: waiting
             * for the slowest rank's compute (imbalance, the "wait" phase)
             * and the transfer itself ("comm"), as Horovod's timeline
             * separates negotiation from the allreduce. It costs one
             * latency (microseconds). Buckets are on the wire before
             * backward ends, so there comm is all that backward did not hide. */
            if (!tr->buckets && tr->size > 1) { /* also the stall watchdog's checkpoint (--timeout) */
                ND_TRY(nd_comm_arrive(tr->comm, tr->step + 1, "gradient exchange", err));
                phase_tick(tr, ND_PHASE_WAIT, &tp);
            }
            /* Blocking collectives have no time limit of their own: the
             * watchdog's thread times them (the buckets' waits are timed). */
            nd_watchdog_enter(tr->watchdog, "the gradient allreduce (every rank had arrived)", tr->step + 1);
            if (tr->zero) ND_TRY(nd_zero_reduce(tr, err));
            else if (tr->buckets) ND_TRY(nd_buckets_finish(tr->buckets, err));
            else ND_TRY(nd_comm_allreduce_sum_f32(tr->comm, m->grad, n + ND_TAIL_USED, err));
            nd_watchdog_leave(tr->watchdog);
            phase_tick(tr, ND_PHASE_COMM, &tp);
        }
        const int last = s == steps - 1;
        float scale = 1.0f;
        double grad_norm = NAN;
        /* ZeRO: each rank holds a slice; the global norm is the guard's evidence. */
        if (tr->zero) {
            nd_watchdog_enter(tr->watchdog, "the gradient norm's allreduce", tr->step + 1);
            ND_TRY(nd_zero_grad_scale(tr, tr->global_batch, 1, &scale, &grad_norm, err));
            nd_watchdog_leave(tr->watchdog);
        }
        char what[160];
        if (nd_guard_find(tr, grad_norm, what, sizeof what)) {
            ND_TRY(nd_guard_bad_step(tr, what, err)); /* stops, or: */
            e->nan_skips += 1;                        /* dropped; its batch is used up */
            tr->step += 1;
            phase_tick(tr, ND_PHASE_UPDATE, &tp);
            continue;
        }
        tr->nan_consecutive = 0;
        if (m->num_trainable < n) { /* batch norm: the global batch's statistics update every replica alike */
            nd_model_running_deltas(m, m->param, m->grad, tr->global_batch, tr->cfg.bn_momentum);
            nd_model_apply_running(m, m->param, m->grad, 0, n);
        }
        loss_sum += m->grad[n + ND_TAIL_LOSS];
        correct += m->grad[n + ND_TAIL_CORRECT];
        if (!tr->zero) scale = nd_train_grad_scale(tr, tr->global_batch);
        tr->opt.cfg.momentum = nd_momentum_at(tr->cfg.momentum, tr->cfg.momentum_final, tr->cfg.momentum_epochs,
                                              (double)tr->step / (double)tr->steps_per_epoch);
        if (last) monitor_before(tr, e, tr->zero ? grad_norm : nd_grad_norm(m->grad, n, scale));
        const size_t lo = tr->slice.offset; /* everything, or this rank's slice with --shard-optimizer */
        nd_optimizer_step(&tr->opt, m->param + lo, m->grad + lo, scale, nd_lr_at(&tr->lr, tr->step));
        if (tr->zero) {
            phase_tick(tr, ND_PHASE_UPDATE, &tp);
            nd_watchdog_enter(tr->watchdog, "the parameter allgather", tr->step + 1);
            ND_TRY(nd_zero_gather(tr, err));
            nd_watchdog_leave(tr->watchdog);
            phase_tick(tr, ND_PHASE_COMM, &tp);
        }
        if (tr->cfg.max_norm > 0.0f)
            for (int l = 0; l < m->num_layers; ++l)
                nd_reg_max_norm(m->param + m->layer[l].w.offset, m->layer[l].out_dim, m->layer[l].in_dim,
                                tr->cfg.max_norm);
        if (last) monitor_after(tr, e);
        tr->step += 1;
        if (tr->ema) {
            const float d = tr->cfg.ema, keep = 1.0f - d;
            float *restrict a = tr->ema;
            const float *restrict p = m->param;
            for (size_t i = 0; i < n; ++i) a[i] = d * a[i] + keep * p[i];
        }
        phase_tick(tr, ND_PHASE_UPDATE, &tp);
        if (tr->step <= tr->cfg.profile && tr->report.active) { /* the run's first N steps */
            fprintf(tr->report.out, "profile step %ld:", tr->step);
            for (int p = 0; p < ND_PHASES; ++p)
                fprintf(tr->report.out, " %s %.3f ms", nd_phase_names[p], 1e3 * (tr->phase[p] - before[p]));
            fputc('\n', tr->report.out);
        }
        if (every > 0 && tr->cfg.checkpoint_dir[0] && tr->step % every == 0) {
            const double c0 = nd_comm_time();
            ND_TRY(nd_train_checkpoint_save(tr, epoch, s + 1, loss_sum, correct, err));
            paused += nd_comm_time() - c0; /* checkpoint time is not training time */
        }
        if (tr->report.active) {
            const double now = nd_comm_time(), el = now - t0 - paused;
            const double done = (double)(s + 1) * tr->global_batch;
            nd_report_progress(&tr->report, now, epoch, tr->cfg.epochs, s + 1, steps, loss_sum / done,
                               done / el, el / (s + 1 - first) * (steps - s - 1));
        }
    }
    double seconds = nd_comm_time() - t0 - paused;
    if (tr->buckets) tr->gradient_buckets = tr->buckets->started;
    nd_report_progress_end(&tr->report);
    nd_watchdog_enter(tr->watchdog, "the epoch's time reduction", tr->step);
    ND_TRY(nd_comm_allreduce_max_f64(tr->comm, &seconds, 1, err)); /* the slowest rank sets the pace */
    nd_watchdog_leave(tr->watchdog);
    const double samples = (double)steps * tr->global_batch, run = (double)(steps - first) * tr->global_batch;
    e->epoch = epoch;
    e->train_loss = loss_sum / samples;
    e->train_acc = nd_loss_metric(tr->loss, correct, samples, tr->info.num_outputs);
    e->seconds = seconds;
    e->samples_per_s = run / seconds;
    for (int p = 0; p < ND_PHASES; ++p) e->phase[p] = tr->phase[p], tr->phase_total[p] += tr->phase[p];
    e->lr = nd_lr_at(&tr->lr, tr->step > 0 ? tr->step - 1 : 0);
    tr->train_seconds += seconds;
    tr->samples_seen += (long)run;
    return ND_OK;
}

/* Collective: test and validation accuracy of the averaged weights (the
 * model's parameter pointer is swapped, nothing is copied). */
static nd_status evaluate_average(nd_trainer *tr, nd_epoch_stats *e, nd_error *err) {
    float *raw = tr->model.param;
    double loss;
    nd_status st = ND_OK;
    tr->model.param = tr->ema;
    if (tr->info.has_val) st = nd_trainer_evaluate(tr, &tr->val, &loss, &e->ema_val_acc, err);
    if (st == ND_OK && tr->info.has_test) st = nd_trainer_evaluate(tr, &tr->test, &loss, &e->ema_test_acc, err);
    tr->model.param = raw;
    return st;
}

/* Same on every rank (validation accuracy is reduced). Records whether
 * this epoch has the best validation accuracy so far (the best-checkpoint
 * copy and early stopping both follow it), keeps its weights for
 * --early-stop, and says whether patience ran out. */
static int note_validation(nd_trainer *tr, const nd_epoch_stats *e, int *improved) {
    const int sense = nd_loss_metric_sense(tr->loss); /* RMSE and MAE: lower is better */
    *improved = tr->info.has_val && (tr->best_epoch == 0 || sense * e->val_acc > sense * tr->best_val);
    if (*improved) {
        tr->best_val = e->val_acc;
        tr->best_epoch = e->epoch;
        tr->epochs_without_gain = 0;
        if (tr->best_param) memcpy(tr->best_param, tr->model.param, sizeof(float) * tr->model.num_params);
        return 0;
    }
    if (!tr->best_param || ++tr->epochs_without_gain < tr->cfg.early_stop) return 0;
    if (tr->report.active)
        printf("early stop after epoch %d: validation %s has not improved for %d epochs (best %.4f at epoch %d)\n",
               e->epoch, nd_loss_metric_name(tr->loss), tr->epochs_without_gain, tr->best_val, tr->best_epoch);
    return 1;
}

void nd_train_print_done(nd_trainer *tr) {
    if (!tr->report.active) return;
    const nd_epoch_stats *e = &tr->last;
    fprintf(tr->report.out, "done: %d epochs, %ld %s, %.2f s training, %.0f samples/s", e->epoch, tr->step,
            tr->async ? "updates" : "steps", tr->train_seconds,
            tr->train_seconds > 0 ? tr->samples_seen / tr->train_seconds : 0.0);
    if (tr->info.has_test)
        fprintf(tr->report.out, "; final test %s %.4f (loss %.4f)",
                tr->loss <= ND_LOSS_SQUARED_HINGE ? "accuracy" : nd_loss_metric_name(tr->loss), e->test_acc, e->test_loss);
    fputc('\n', tr->report.out);
    fflush(tr->report.out);
}

nd_status nd_trainer_fit(nd_trainer *tr, nd_error *err) {
    if (tr->async) return nd_async_fit(tr, err);
    for (int epoch = tr->start_epoch; epoch <= tr->cfg.epochs; ++epoch) {
        nd_epoch_stats e = {0};
        e.test_loss = e.test_acc = e.val_loss = e.val_acc = NAN;
        ND_TRY(run_epoch(tr, epoch, &e, err));
        if (tr->info.has_val) ND_TRY(nd_trainer_evaluate(tr, &tr->val, &e.val_loss, &e.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &e.test_loss, &e.test_acc, err));
        e.ema_test_acc = e.ema_val_acc = NAN;
        if (tr->ema) ND_TRY(evaluate_average(tr, &e, err));
        tr->last = e;
        nd_train_print_epoch(tr, &e);
        int improved;
        const int stop = note_validation(tr, &e, &improved);
        if (tr->cfg.checkpoint_dir[0]) ND_TRY(nd_train_checkpoint_epoch(tr, &e, improved, err));
        if (tr->lr.kind == ND_SCHED_PLATEAU)
            nd_lr_plateau_update(&tr->lr, nd_loss_metric_sense(tr->loss) * e.val_acc, &tr->plateau_best, &tr->plateau_bad,
                                 tr->cfg.plateau_patience);
        if (stop) break;
    }
    if (tr->best_param && tr->best_epoch > 0 && tr->best_epoch != tr->last.epoch) {
        /* End with the best weights: the final evaluation and summary are theirs. */
        memcpy(tr->model.param, tr->best_param, sizeof(float) * tr->model.num_params);
        ND_TRY(nd_trainer_evaluate(tr, &tr->val, &tr->last.val_loss, &tr->last.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &tr->last.test_loss, &tr->last.test_acc, err));
        if (tr->report.active)
            printf("early stop: restored the weights of epoch %d (val %s %.4f)\n", tr->best_epoch,
                   nd_loss_metric_name(tr->loss), tr->last.val_acc);
    }
    if (tr->start_epoch > tr->cfg.epochs) {
        /* Resumed from the end of a finished run: report what it holds. */
        tr->last.epoch = tr->cfg.epochs;
        tr->last.test_loss = tr->last.test_acc = tr->last.val_loss = tr->last.val_acc = NAN;
        if (tr->info.has_val) ND_TRY(nd_trainer_evaluate(tr, &tr->val, &tr->last.val_loss, &tr->last.val_acc, err));
        if (tr->info.has_test) ND_TRY(nd_trainer_evaluate(tr, &tr->test, &tr->last.test_loss, &tr->last.test_acc, err));
    }
    nd_train_print_done(tr);
    return ND_OK;
}

/* Bytes of one split's rows held here (features and labels or targets). */
static double shard_bytes(const nd_shard *s) {
    return (double)s->rows * ((double)s->cols * sizeof(float) + (s->target_cols ? (double)s->target_cols * sizeof(float) : sizeof(int)));
}

/* Collective: this job's largest per-rank figures, in MB: peak resident
 * memory, the data shards, one copy of the parameters, the activation
 * workspace and batch buffers; so the summary shows what the peak is made of. */
static nd_status measure_memory(nd_trainer *tr, nd_error *err) {
    struct rusage ru;
    double *mb = tr->memory_mb;
    mb[0] = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : NAN; /* Linux: KiB */
    nd_shard held = tr->train; /* streaming: the two windows are what is held */
    if (tr->feed.reader) held.rows = (int)(2 * tr->feed.window_rows);
    mb[1] = (shard_bytes(&held) + shard_bytes(&tr->val) + shard_bytes(&tr->test)) / 1048576.0;
    mb[2] = (double)tr->model.num_params * sizeof(float) / 1048576.0;
    mb[3] = ((double)tr->model.workspace_floats + (double)tr->cfg.batch * (tr->train.cols + tr->info.num_outputs)) *
            sizeof(float) / 1048576.0;
    mb[4] = nd_optimizer_state_floats(&tr->opt) * sizeof(float) / 1048576.0;
    return nd_comm_allreduce_max_f64(tr->comm, mb, 5, err);
}

nd_status nd_trainer_write_summary(nd_trainer *tr, nd_error *err) {
    ND_TRY(measure_memory(tr, err));
    nd_status st = ND_OK;
    if (tr->rank == 0 && tr->cfg.summary[0])
        st = nd_write_file_atomic(tr->cfg.summary, write_summary, tr, err);
    return nd_train_agree(tr, st, err);
}
