/* --ensemble last:K or best:K, a snapshot ensemble: the weights at the
 * end of the last K epochs (or of the K best by the validation metric) are
 * kept, and after the last epoch their ensemble (nd_loss_average_add: the
 * mean of their softmax or sigmoid probabilities, or of their outputs) is
 * evaluated on /val and /test and reported. Every rank keeps the members
 * (sync: the weights are the same on every rank), so the evaluation is
 * collective over the ranks' shards like any other. With --checkpoint-dir,
 * rank 0 writes each member as snapshot-ep<E>.h5, which `nndist eval
 * --checkpoint A,B,...` reads back to the same figures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "../train_internal.h"

struct nd_snapshots {
    int best;           /* 1: the K best by the validation metric; 0: the last K */
    int cap, count;     /* K, and members held so far */
    float *param;       /* (K x num_params) the members' weights */
    int *epoch;         /* (K) the epoch each member ends */
    double *val, *test; /* (K) its validation and test metric at that epoch */
    double *sum;        /* (eval_batch x outputs) what the members average, for one chunk of rows */
    int *order;         /* (K) members by epoch, for the report and the files */
    double test_loss, test_metric, val_loss, val_metric; /* the ensemble's, after the run */
    int evaluated;
    char (*file)[ND_PATH_MAX + 64]; /* (K) the written members, "" if none */
};

nd_status nd_ensemble_create(nd_trainer *tr, nd_error *err) {
    if (!tr->cfg.ensemble[0]) return ND_OK;
    int best = 0, k = 0;
    if (nd_ensemble_parse(tr->cfg.ensemble, &best, &k) != 0) /* checked by the plan */
        return ND_FAIL(err, ND_ERR_ARG, "--ensemble: '%s' is not last:K or best:K", tr->cfg.ensemble);
    if (best && !tr->info.has_val)
        return ND_FAIL(err, ND_ERR_ARG, "--ensemble best:%d: %s has no /val split to rank the epochs by (use last:K)",
                       k, tr->cfg.data);
    nd_snapshots *s = calloc(1, sizeof *s);
    if (!s) return ND_FAIL(err, ND_ERR_NOMEM, "--ensemble: out of memory");
    tr->snapshots = s;
    s->best = best, s->cap = k;
    const int eb = tr->cfg.eval_batch < tr->model.max_batch ? tr->cfg.eval_batch : tr->model.max_batch;
    s->param = nd_buffer_alloc((size_t)k * tr->model.num_params);
    s->epoch = calloc((size_t)k, sizeof(int));
    s->order = calloc((size_t)k, sizeof(int));
    s->val = calloc((size_t)k, sizeof(double));
    s->test = calloc((size_t)k, sizeof(double));
    s->sum = calloc((size_t)eb * tr->info.num_outputs, sizeof(double));
    s->file = calloc((size_t)k, sizeof *s->file);
    if (!s->param || !s->epoch || !s->order || !s->val || !s->test || !s->sum || !s->file)
        return ND_FAIL(err, ND_ERR_NOMEM, "--ensemble %s: cannot allocate %d copies of %zu weights", tr->cfg.ensemble,
                       k, tr->model.num_params);
    return ND_OK;
}

void nd_ensemble_free(nd_trainer *tr) {
    nd_snapshots *s = tr->snapshots;
    if (!s) return;
    nd_buffer_free(s->param);
    free(s->epoch), free(s->order), free(s->val), free(s->test), free(s->sum), free(s->file);
    free(s);
    tr->snapshots = NULL;
}

static bool wanted(const nd_trainer *tr) { return tr->snapshots != NULL; }

/* Keeps the epoch's weights: in the next free slot, else in place of the
 * oldest (last:K) or of the worst, when this epoch is better (best:K). */
static nd_status after_epoch(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err) {
    (void)stop, (void)err;
    nd_snapshots *s = tr->snapshots;
    int slot = s->count;
    if (s->count == s->cap) {
        const int sense = nd_loss_metric_sense(tr->loss);
        slot = 0;
        for (int i = 1; i < s->cap; ++i)
            if (s->best ? sense * s->val[i] < sense * s->val[slot] : s->epoch[i] < s->epoch[slot]) slot = i;
        if (s->best && !(sense * e->val_acc > sense * s->val[slot])) return ND_OK;
    } else {
        s->count += 1;
    }
    memcpy(s->param + (size_t)slot * tr->model.num_params, tr->model.param, sizeof(float) * tr->model.num_params);
    s->epoch[slot] = e->epoch;
    s->val[slot] = e->val_acc;
    s->test[slot] = e->test_acc;
    return ND_OK;
}

/* Collective: loss and metric of the members' ensemble on shard, chunk by
 * chunk (the model's parameter pointer goes through the members). */
static nd_status evaluate(nd_trainer *tr, const nd_shard *shard, double *loss, double *metric, nd_error *err) {
    nd_snapshots *s = tr->snapshots;
    const int eb = tr->cfg.eval_batch < tr->model.max_batch ? tr->cfg.eval_batch : tr->model.max_batch;
    const int cols = tr->info.train.cols, k = tr->info.num_outputs;
    double sums[3] = {0.0, 0.0, (double)shard->rows};
    float *raw = tr->model.param;
    for (int off = 0; off < shard->rows; off += eb) {
        const int nb = shard->rows - off < eb ? shard->rows - off : eb;
        memset(s->sum, 0, sizeof(double) * (size_t)nb * k);
        for (int m = 0; m < s->count; ++m) {
            tr->model.param = s->param + (size_t)s->order[m] * tr->model.num_params;
            const float *out = nd_model_forward(&tr->model, shard->x + (size_t)off * cols, nb, NULL);
            nd_loss_average_add(tr->loss, out, nb, k, s->sum);
        }
        const nd_loss_stats st = nd_loss_of_average(tr->loss, s->sum, s->count, shard->y ? shard->y + off : NULL,
                                                    shard->t ? shard->t + (size_t)off * k : NULL, nb, k, NULL);
        sums[0] += st.loss_sum;
        sums[1] += st.correct;
    }
    tr->model.param = raw;
    ND_TRY(nd_comm_allreduce_sum_f64(tr->comm, sums, 3, err));
    *loss = sums[2] > 0 ? sums[0] / sums[2] : NAN;
    *metric = nd_loss_metric(tr->loss, sums[1], sums[2], k);
    return ND_OK;
}

/* Collective: after the last epoch, the ensemble's figures; rank 0 writes
 * the members with --checkpoint-dir (outcome agreed). */
static nd_status at_end(nd_trainer *tr, nd_error *err) {
    nd_snapshots *s = tr->snapshots;
    if (s->count == 0) return ND_OK;
    for (int i = 0; i < s->count; ++i) s->order[i] = i;
    for (int i = 1; i < s->count; ++i) /* by epoch */
        for (int j = i; j > 0 && s->epoch[s->order[j]] < s->epoch[s->order[j - 1]]; --j) {
            const int t = s->order[j];
            s->order[j] = s->order[j - 1], s->order[j - 1] = t;
        }
    s->val_loss = s->val_metric = s->test_loss = s->test_metric = NAN;
    if (tr->info.has_val) ND_TRY(evaluate(tr, &tr->val, &s->val_loss, &s->val_metric, err));
    if (tr->info.has_test) ND_TRY(evaluate(tr, &tr->test, &s->test_loss, &s->test_metric, err));
    s->evaluated = 1;
    nd_status st = ND_OK;
    for (int m = 0; tr->rank == 0 && tr->cfg.checkpoint_dir[0] && st == ND_OK && m < s->count; ++m) {
        const int i = s->order[m];
        st = nd_train_snapshot_write(tr, s->param + (size_t)i * tr->model.num_params, s->epoch[i], s->test[i],
                                     s->file[i], sizeof s->file[i], err);
    }
    ND_TRY(nd_train_agree(tr, st, err));
    if (tr->report.active) {
        const char *ml = nd_loss_metric_label(tr->loss);
        printf("ensemble of %d snapshots (%s:%d, mean of %s), epochs", s->count, s->best ? "best" : "last", s->cap,
               nd_loss_average_name(tr->loss));
        for (int m = 0; m < s->count; ++m) printf("%s%d", m ? "," : " ", s->epoch[s->order[m]]);
        if (tr->info.has_val) printf(" | val %s %.4f", ml, s->val_metric);
        if (tr->info.has_test) printf(" | test loss %.4f %s %.4f", s->test_loss, ml, s->test_metric);
        printf("\n");
        if (tr->cfg.checkpoint_dir[0])
            printf("ensemble members written to %s/snapshot-ep*.h5\n", tr->cfg.checkpoint_dir);
    }
    return ND_OK;
}

void nd_ensemble_final_line(const nd_trainer *tr, FILE *f) {
    const nd_snapshots *s = tr->snapshots;
    if (s && s->evaluated && tr->info.has_test) fprintf(f, "; ensemble %.4f", s->test_metric);
}

/* The summary's keys: ensemble_test_<metric> and ensemble_val_<metric>
 * (ensemble_test_accuracy for classification), and "ensemble": what it
 * averaged and its members (epoch, their own metrics, file). */
void nd_ensemble_summary(const nd_trainer *tr, FILE *f) {
    const nd_snapshots *s = tr->snapshots;
    if (!s || !s->evaluated) return;
    const char *mn = nd_loss_metric_name(tr->loss);
    const double v[4] = {s->test_metric, s->test_loss, s->val_metric, s->val_loss};
    const char *keys[4] = {"test_%s", "test_loss", "val_%s", "val_loss"};
    for (int i = 0; i < 4; ++i) {
        char key[64], name[80];
        snprintf(key, sizeof key, keys[i], mn);
        snprintf(name, sizeof name, "ensemble_%s", key);
        if (isfinite(v[i])) fprintf(f, ", \"%s\": %.6g", name, v[i]);
        else fprintf(f, ", \"%s\": null", name);
    }
    fprintf(f, ", \"ensemble\": {\"kind\": \"%s\", \"size\": %d, \"averages\": \"%s\", \"members\": [",
            s->best ? "best" : "last", s->cap, nd_loss_average_name(tr->loss));
    for (int m = 0; m < s->count; ++m) {
        const int i = s->order[m];
        fprintf(f, "%s{\"epoch\": %d", m ? ", " : "", s->epoch[i]);
        if (isfinite(s->val[i])) fprintf(f, ", \"val_%s\": %.6g", mn, s->val[i]);
        if (isfinite(s->test[i])) fprintf(f, ", \"test_%s\": %.6g", mn, s->test[i]);
        if (s->file[i][0]) {
            fprintf(f, ", \"file\": ");
            nd_json_string(f, s->file[i]);
        }
        fputc('}', f);
    }
    fputs("]}", f);
}

const nd_observer_part nd_observer_ensemble = {.name = "ensemble",
                                               .wanted = wanted,
                                               .after_epoch = after_epoch,
                                               .at_end = at_end};
