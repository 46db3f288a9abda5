/* `nndist eval`: loss, accuracy, per-class accuracy and the confusion
 * matrix of a checkpoint on a split, each rank evaluating its own block of
 * rows (collective over the job); on float targets (regression,
 * multi-label) the loss and its metric (RMSE, MAE, attribute accuracy:
 * nd_loss_metric). Of several checkpoints, each one's figures and those of
 * their ensemble (nd_loss_average_add: the mean of their probabilities,
 * scores or outputs, as the in-run --ensemble computes them). And `nndist info`: what a checkpoint or a
 * dataset file holds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "nndist/blas.h"
#include "nndist/checkpoint.h"
#include "nndist/commands.h"
#include "nndist/data.h"
#include "nndist/loss.h"
#include "nndist/normalize.h"
#include "nndist/train.h"

typedef struct {
    char config[ND_PATH_MAX];
    char checkpoint[ND_PATH_MAX];
    char data[ND_PATH_MAX];
    char split[16];
    bool json;
    int eval_batch;
    int threads;
    char weights[8];
} eval_config;

#define FE(type, field) ND_CLI_FIELD(type, eval_config, field)
static const nd_cli_option eval_options[] = {
    {"config", FE(STR, config), "", "read options from FILE (key = value)"},
    {"checkpoint", FE(STR, checkpoint), "",
     "checkpoint FILE to evaluate, or FILE,FILE,...: each member and their ensemble (the mean of softmax or sigmoid "
     "probabilities, of scores, or of regression outputs) [required]"},
    {"data", FE(STR, data), "", "HDF5 dataset [required]"},
    {"split", FE(STR, split), "test", "split to evaluate: train, val or test"},
    {"json", FE(BOOL, json), "false", "print one JSON object instead of text"},
    {"eval-batch", FE(INT, eval_batch), "1024", "rows per forward pass"},
    {"threads", FE(INT, threads), "1", "BLAS threads per rank"},
    {"weights", FE(STR, weights), "raw",
     "raw, or ema: the moving average a run with --ema saved beside them (each member's)"},
};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Rank 0 probes the checkpoint (it alone reads the file, which may be on
 * its local disk); every rank gets the architecture. */
static nd_status share_spec(nd_comm *comm, const char *path, nd_ckpt_info *info, nd_error *err) {
    nd_status st = ND_OK;
    if (nd_comm_rank(comm) == 0) st = nd_checkpoint_probe(path, info, err);
    ND_TRY(nd_comm_agree(comm, st, err));
    return nd_comm_bcast_bytes(comm, &info->spec, sizeof info->spec, 0, err);
}

/* The split must exist, fit the model's inputs and outputs, and hold what
 * its loss reads (labels, or float targets: nd_loss_takes_targets). */
static nd_status check_split(const char *data, const char *split, const char *ckpt, const nd_model_spec *spec,
                             nd_loss_kind loss, nd_error *err) {
    nd_dataset_info di;
    ND_TRY(nd_dataset_probe(data, &di, err));
    const nd_split_info *si = !strcmp(split, "train") ? &di.train : !strcmp(split, "val") ? &di.val : &di.test;
    const int present = !strcmp(split, "train") || (!strcmp(split, "val") ? di.has_val : di.has_test);
    if (!present) return ND_FAIL(err, ND_ERR_ARG, "%s: split /%s is not in the file", data, split);
    if (si->cols != spec->input_dim)
        return ND_FAIL(err, ND_ERR_ARG, "%s: /%s/x has %d features, the checkpoint's model takes %d", data, split,
                       si->cols, spec->input_dim);
    if (di.has_targets != nd_loss_takes_targets(loss))
        return ND_FAIL(err, ND_ERR_ARG, "%s: trained for %s (%s), but %s /%s/y holds %s", ckpt, nd_loss_name(loss),
                       nd_loss_takes_targets(loss) ? "float targets" : "class labels", data, split,
                       di.has_targets ? "float targets" : "class labels");
    if (di.has_targets) {
        if (si->target_cols != spec->num_classes)
            return ND_FAIL(err, ND_ERR_ARG, "%s: /%s/y has %d targets per row, the checkpoint's model outputs %d", data,
                           split, si->target_cols, spec->num_classes);
        return ND_OK;
    }
    if (di.num_classes != spec->num_classes)
        return ND_FAIL(err, ND_ERR_ARG, "%s: %d classes, the checkpoint's model has %d", data, di.num_classes,
                       spec->num_classes);
    return ND_OK;
}

/* One checkpoint of the ensemble: its path, what it holds, its loss, and
 * its figures on the split (loss sum, metric sum, rows). */
typedef struct {
    char path[ND_PATH_MAX];
    nd_ckpt_info info;
    nd_loss_kind loss;
    double sums[3];
} eval_member;

static void print_class_figures(FILE *f, const double *confusion, int k, int json) {
    for (int i = 0; i < k; ++i) {
        double row = 0;
        for (int j = 0; j < k; ++j) row += confusion[i * k + j];
        if (json) fprintf(f, row > 0 ? "%s%.6g" : "%snull", i ? ", " : "", row > 0 ? confusion[i * k + i] / row : 0.0);
        else fprintf(f, " %d:%.4f", i, row > 0 ? confusion[i * k + i] / row : NAN);
    }
}

/* The metric of figures (loss sum, metric sum, rows) of k outputs. */
static double metric_of(nd_loss_kind loss, const double *sums, int k) {
    return nd_loss_metric(loss, sums[1], sums[2], k);
}

/* Float targets: adds to per_output (k) each output's metric sum for the
 * mean sum / members (sum: batch x k), as nd_loss_of_average counts it:
 * squared or absolute error, or attributes right (p > 0.5, score > 0). */
static void add_per_output(nd_loss_kind loss, const double *sum, int members, const float *targets, int batch, int k,
                           double *per_output) {
    for (int i = 0; i < batch; ++i)
        for (int j = 0; j < k; ++j) {
            const double v = sum[(size_t)i * k + j] / members, t = targets[(size_t)i * k + j];
            per_output[j] += loss == ND_LOSS_L2 ? (v - t) * (v - t)
                : loss == ND_LOSS_L1            ? fabs(v - t)
                : loss == ND_LOSS_SIGMOID_BCE   ? (double)((v > 0.5) == (t > 0.5))
                                                : (double)((v > 0) == (t > 0.5));
        }
}

static void print_text(const eval_config *c, const eval_member *mb, int n, const double *sums, const double *confusion,
                       int k) {
    const double rows = sums[2];
    const nd_loss_kind loss = mb[0].loss;
    const char *mn = nd_loss_metric_name(loss);
    if (n == 1) {
        printf("checkpoint %s on %s /%s: %.0f rows\n", c->checkpoint, c->data, c->split, rows);
    } else {
        printf("%d checkpoints on %s /%s: %.0f rows\n", n, c->data, c->split, rows);
        for (int m = 0; m < n; ++m)
            printf("member %d %s: loss %.4f  %s %.4f\n", m + 1, mb[m].path, mb[m].sums[0] / rows, mn,
                   metric_of(loss, mb[m].sums, k));
        printf("ensemble (mean of %s): ", nd_loss_average_name(mb[0].loss));
    }
    printf("loss %.4f  %s %.4f\n", sums[0] / rows, mn, metric_of(loss, sums, k));
    if (nd_loss_takes_targets(loss)) { /* no classes: each output's metric instead */
        printf("per-output %s:", mn);
        for (int j = 0; j < k; ++j) printf(" %d:%.4f", j, nd_loss_metric(loss, confusion[j], rows, 1));
        printf("\n");
        return;
    }
    printf("per-class accuracy:");
    print_class_figures(stdout, confusion, k, 0);
    printf("\nconfusion matrix (rows: true class, columns: predicted)\n      ");
    for (int j = 0; j < k; ++j) printf("%7d", j);
    for (int i = 0; i < k; ++i) {
        printf("\n%5d ", i);
        for (int j = 0; j < k; ++j) printf("%7.0f", confusion[i * k + j]);
    }
    printf("\n");
}

/* One member: the figures as one checkpoint's; several: the ensemble's,
 * with "members" and "ensemble" (what is averaged). */
static void print_json(const eval_config *c, const eval_member *mb, int n, const double *sums, const double *confusion,
                       int k) {
    const double rows = sums[2];
    const nd_loss_kind loss = mb[0].loss;
    const char *mn = nd_loss_metric_name(loss);
    printf("{\"checkpoint\": ");
    nd_json_string(stdout, c->checkpoint);
    printf(", \"data\": ");
    nd_json_string(stdout, c->data);
    printf(", \"split\": \"%s\", \"rows\": %.0f, \"loss_name\": \"%s\", \"loss\": %.6g, \"%s\": %.6g", c->split, rows,
           nd_loss_name(loss), sums[0] / rows, mn, metric_of(loss, sums, k));
    if (nd_loss_takes_targets(loss)) { /* float targets: no classes */
        printf(", \"per_output_%s\": [", mn);
        for (int j = 0; j < k; ++j) printf("%s%.6g", j ? ", " : "", nd_loss_metric(loss, confusion[j], rows, 1));
        printf("]");
    } else {
        printf(", \"per_class_accuracy\": [");
        print_class_figures(stdout, confusion, k, 1);
        printf("], \"confusion\": [");
        for (int i = 0; i < k; ++i) {
            printf("%s[", i ? ", " : "");
            for (int j = 0; j < k; ++j) printf("%s%.0f", j ? ", " : "", confusion[i * k + j]);
            printf("]");
        }
        printf("]");
    }
    if (n > 1) {
        printf(", \"ensemble\": \"mean of %s\", \"members\": [", nd_loss_average_name(mb[0].loss));
        for (int m = 0; m < n; ++m) {
            printf("%s{\"checkpoint\": ", m ? ", " : "");
            nd_json_string(stdout, mb[m].path);
            printf(", \"loss\": %.6g, \"%s\": %.6g}", mb[m].sums[0] / rows, mn, metric_of(loss, mb[m].sums, k));
        }
        printf("]");
    }
    printf("}\n");
}

/* Splits --checkpoint's comma-separated list into members (at most cap). */
static nd_status split_members(const char *list, eval_member *mb, int cap, int *n, nd_error *err) {
    *n = 0;
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) return ND_FAIL(err, ND_ERR_ARG, "--checkpoint: an empty name in '%s'", list);
        if (*n == cap) return ND_FAIL(err, ND_ERR_ARG, "--checkpoint: more than %d checkpoints", cap);
        memset(&mb[*n], 0, sizeof mb[*n]);
        memcpy(mb[*n].path, p, len < ND_PATH_MAX - 1 ? len : ND_PATH_MAX - 1);
        ++*n;
        if (!e) return ND_OK;
        p = e + 1;
    }
}

/* The member's loss, from its checkpoint ("" in older files: softmax_ce). */
static nd_status member_loss(eval_member *m, nd_error *err) {
    m->loss = ND_LOSS_SOFTMAX_CE;
    if (m->info.meta.loss[0] && nd_loss_parse(m->info.meta.loss, &m->loss) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "%s: unknown loss '%s'", m->path, m->info.meta.loss);
    return ND_OK;
}

#define ND_EVAL_MAX_MEMBERS 64

/* Evaluates member m on the shard's raw rows (normalized chunk by chunk
 * with its own statistics into xb: chunk x cols), adding its figures to
 * m->sums and what the ensemble averages to avg (shard rows x k).
 * Collective (rank 0 reads the file, every rank gets the weights). */
static nd_status eval_member_run(nd_comm *comm, eval_member *m, int use_ema, const nd_shard *shard, int chunk,
                                 float *xb, double *avg, nd_error *err) {
    const int rank = nd_comm_rank(comm), k = m->info.spec.num_classes, cols = m->info.spec.input_dim;
    nd_model model;
    memset(&model, 0, sizeof model);
    float *mean = nd_buffer_alloc((size_t)cols), *inv_std = nd_buffer_alloc((size_t)cols);
    nd_status st = nd_model_create(&model, &m->info.spec, chunk, err);
    if (st == ND_OK && (!mean || !inv_std)) st = ND_FAIL(err, ND_ERR_NOMEM, "eval: out of memory");
    float *ema = st == ND_OK && use_ema && rank == 0 ? nd_buffer_alloc(model.num_params) : NULL;
    if (st == ND_OK && use_ema && rank == 0 && !ema) st = ND_FAIL(err, ND_ERR_NOMEM, "eval: out of memory");
    nd_ckpt_info info = m->info;
    if (st == ND_OK && rank == 0) st = nd_checkpoint_read(m->path, &model, NULL, mean, inv_std, ema, &info, err);
    if (st == ND_OK && use_ema && rank == 0 && !info.has_ema)
        st = ND_FAIL(err, ND_ERR_ARG, "--weights ema: %s holds no /ema (the run had no --ema)", m->path);
    if (st == ND_OK && ema) memcpy(model.param, ema, sizeof(float) * model.num_params); /* evaluate the average */
    nd_buffer_free(ema);
    st = nd_comm_agree(comm, st, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(comm, model.param, model.num_params, 0, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(comm, mean, (size_t)cols, 0, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(comm, inv_std, (size_t)cols, 0, err);
    for (int off = 0; st == ND_OK && off < shard->rows; off += chunk) {
        const int nb = shard->rows - off < chunk ? shard->rows - off : chunk;
        memcpy(xb, shard->x + (size_t)off * cols, sizeof(float) * (size_t)nb * cols);
        nd_normalize_apply(xb, (size_t)nb, cols, mean, inv_std);
        const float *out = nd_model_forward(&model, xb, nb, NULL);
        nd_loss_stats ls = nd_loss_apply(m->loss, NULL, out, shard->y ? shard->y + off : NULL,
                                         shard->t ? shard->t + (size_t)off * k : NULL, nb, k);
        m->sums[0] += ls.loss_sum;
        m->sums[1] += ls.correct;
        nd_loss_average_add(m->loss, out, nb, k, avg + (size_t)off * k);
    }
    m->sums[2] = shard->rows;
    nd_model_destroy(&model);
    nd_buffer_free(mean);
    nd_buffer_free(inv_std);
    return st;
}

nd_status nd_cmd_eval(nd_comm *comm, int argc, char **argv, nd_error *err) {
    eval_config c;
    int help = 0;
    const int rank = nd_comm_rank(comm);
    ND_TRY(nd_cli_parse_command(eval_options, COUNT(eval_options), &c, sizeof c, argc, argv,
                                "usage: [mpirun -np N] nndist eval --checkpoint FILE[,FILE...] --data FILE "
                                "[--split test] [--json]\n"
                                "  labels: loss, accuracy, per-class accuracy, confusion matrix; float targets: loss "
                                "and rmse (l2), mae (l1) or attribute accuracy (sigmoid_bce, binary_hinge), overall "
                                "and per output",
                                rank == 0 ? stdout : NULL, &help, err));
    if (help) return ND_OK;
    if (!c.checkpoint[0] || !c.data[0]) return ND_FAIL(err, ND_ERR_ARG, "eval: --checkpoint and --data are required");
    if (strcmp(c.split, "train") && strcmp(c.split, "val") && strcmp(c.split, "test"))
        return ND_FAIL(err, ND_ERR_ARG, "--split: '%s' is not one of train, val, test", c.split);
    if (strcmp(c.weights, "raw") && strcmp(c.weights, "ema"))
        return ND_FAIL(err, ND_ERR_ARG, "--weights: '%s' is not one of raw, ema", c.weights);
    const int use_ema = !strcmp(c.weights, "ema");
    if (c.eval_batch <= 0 || c.threads <= 0)
        return ND_FAIL(err, ND_ERR_ARG, "--eval-batch and --threads must be positive");
    nd_blas_set_threads(c.threads);
    eval_member *mb = calloc(ND_EVAL_MAX_MEMBERS, sizeof *mb);
    if (!mb) return ND_FAIL(err, ND_ERR_NOMEM, "eval: out of memory");
    int n = 0, conv = 0;
    nd_status st = split_members(c.checkpoint, mb, ND_EVAL_MAX_MEMBERS, &n, err);
    /* Every member must fit the data (its architecture is its own) and
     * share the first one's loss: averaging needs the same kind of output. */
    for (int m = 0; st == ND_OK && m < n; ++m) {
        st = share_spec(comm, mb[m].path, &mb[m].info, err);
        if (st == ND_OK) st = nd_comm_bcast_bytes(comm, &mb[m].info.meta.loss, sizeof mb[m].info.meta.loss, 0, err);
        if (st == ND_OK) st = member_loss(&mb[m], err);
        if (st == ND_OK)
            st = nd_comm_agree(comm, check_split(c.data, c.split, mb[m].path, &mb[m].info.spec, mb[m].loss, err), err);
        if (st == ND_OK && mb[m].loss != mb[0].loss)
            st = ND_FAIL(err, ND_ERR_ARG, "%s: trained for %s, %s for %s: an ensemble averages one kind of output",
                         mb[m].path, nd_loss_name(mb[m].loss), mb[0].path, nd_loss_name(mb[0].loss));
        if (st == ND_OK) conv |= nd_spec_is_convolutional(&mb[m].info.spec);
    }
    if (st != ND_OK) {
        free(mb);
        return st;
    }

    nd_shard shard;
    memset(&shard, 0, sizeof shard);
    const int k = mb[0].info.spec.num_classes, cols = mb[0].info.spec.input_dim;
    /* A convolutional net holds about a megabyte of activations a sample:
     * chunks of at most 128 rows (its GEMMs are per sample anyway). */
    const int chunk = conv && c.eval_batch > 128 ? 128 : c.eval_batch;
    double *counts = calloc((size_t)k * k + 3, sizeof(double)); /* loss, hits, rows, confusion */
    double *member_sums = calloc((size_t)3 * n, sizeof(double));
    float *xb = nd_buffer_alloc((size_t)chunk * cols);
    int *predicted = calloc((size_t)chunk, sizeof(int));
    if (!counts || !member_sums || !xb || !predicted) st = ND_FAIL(err, ND_ERR_NOMEM, "eval: out of memory");
    if (st == ND_OK)
        st = nd_comm_agree(comm, nd_shard_read(c.data, c.split, rank, nd_comm_size(comm), k, &shard, err), err);
    /* What the members average, for every row of this rank's block. */
    double *avg = st == ND_OK ? calloc((size_t)shard.rows * k + 1, sizeof(double)) : NULL;
    st = nd_comm_agree(comm, st == ND_OK && !avg ? ND_FAIL(err, ND_ERR_NOMEM, "eval: out of memory") : st, err);
    for (int m = 0; st == ND_OK && m < n; ++m) st = eval_member_run(comm, &mb[m], use_ema, &shard, chunk, xb, avg, err);
    if (st == ND_OK) {
        double *confusion = counts + 3;
        for (int off = 0; off < shard.rows; off += chunk) {
            const int nb = shard.rows - off < chunk ? shard.rows - off : chunk;
            nd_loss_stats ls = nd_loss_of_average(mb[0].loss, avg + (size_t)off * k, n, shard.y ? shard.y + off : NULL,
                                                  shard.t ? shard.t + (size_t)off * k : NULL, nb, k, predicted);
            counts[0] += ls.loss_sum;
            counts[1] += ls.correct;
            for (int i = 0; shard.y && i < nb; ++i) confusion[shard.y[off + i] * k + predicted[i]] += 1.0;
            if (shard.t) /* in place of the confusion matrix (k <= k * k) */
                add_per_output(mb[0].loss, avg + (size_t)off * k, n, shard.t + (size_t)off * k, nb, k, confusion);
        }
        counts[2] = shard.rows;
        /* One member: its own loss, as a single checkpoint's eval always
         * gave (and its metric on float targets: the training run's). */
        if (n == 1) counts[0] = mb[0].sums[0];
        if (n == 1 && shard.t) counts[1] = mb[0].sums[1];
        for (int m = 0; m < n; ++m) memcpy(member_sums + 3 * m, mb[m].sums, sizeof mb[m].sums);
        st = nd_comm_allreduce_sum_f64(comm, counts, (size_t)k * k + 3, err);
        if (st == ND_OK) st = nd_comm_allreduce_sum_f64(comm, member_sums, (size_t)3 * n, err);
        for (int m = 0; m < n; ++m) memcpy(mb[m].sums, member_sums + 3 * m, sizeof mb[m].sums);
    }
    if (st == ND_OK && rank == 0) {
        if (c.json) print_json(&c, mb, n, counts, counts + 3, k);
        else print_text(&c, mb, n, counts, counts + 3, k);
    }
    nd_shard_free(&shard);
    free(avg);
    free(predicted);
    nd_buffer_free(xb);
    free(member_sums);
    free(counts);
    free(mb);
    return st;
}

static void info_checkpoint(const char *path, const nd_ckpt_info *ci) {
    char arch[512];
    nd_arch_format(&ci->spec, arch, sizeof arch);
    printf("%s: nndist checkpoint, format %d\n", path, ci->format);
    printf("  model       %s\n", arch);
    printf("  optimizer   %s, %ld updates\n", ci->optimizer, ci->optimizer_step);
    printf("  position    step %ld, epoch %d (%ld of its steps done)\n", ci->meta.step, ci->meta.epoch,
           ci->meta.epoch_step);
    printf("  written by  %d ranks, global batch %d\n", ci->meta.world_size, ci->meta.global_batch);
    printf("  checksums   model %s, optimizer %s (as stored; eval verifies them)\n", ci->checksum_model,
           ci->checksum_optimizer);
    if (ci->meta.metric_name[0]) printf("  metric      %s = %.4f\n", ci->meta.metric_name, ci->meta.metric_value);
    nd_model m;
    nd_error ignored = {0};
    if (nd_model_create(&m, &ci->spec, 1, &ignored) == ND_OK) { /* the names --init-from and --freeze go by */
        printf("  tensors:\n");
        for (int t = 0; t < m.num_tensors; ++t) {
            const nd_tensor *T = &m.tensor[t];
            const int first = t == 0 || m.tensor[t - 1].layer != T->layer;
            printf("%s%s ", first ? (t ? "\n    " : "    ") : "", T->name);
            for (int d = 0; d < T->ndims; ++d) printf("%s%d", d ? "x" : "", T->dims[d]);
            printf("%s", t + 1 < m.num_tensors && m.tensor[t + 1].layer == T->layer ? ", " : "");
        }
        printf("\n");
        nd_model_destroy(&m);
    }
    printf("  configuration:\n");
    for (const char *p = ci->meta.config; *p;) {
        const char *e = strchr(p, '\n');
        int len = e ? (int)(e - p) : (int)strlen(p);
        printf("    %.*s\n", len, p);
        p += len + (e ? 1 : 0);
    }
}

static void info_split(const char *name, const nd_split_info *s) {
    if (s->image_c) /* stored as N x C x H x W */
        printf("  /%-5s x %ld x %d x %d x %d %s", name, s->rows, s->image_c, s->image_h, s->image_w,
               s->x_is_uint8 ? "uint8" : "float");
    else printf("  /%-5s x %ld x %d %s", name, s->rows, s->cols, s->x_is_uint8 ? "uint8" : "float");
    if (s->x_is_uint8) printf(" (scale %g)", (double)s->x_scale);
    if (s->target_cols) printf(", y %ld x %d float targets\n", s->rows, s->target_cols);
    else printf(", y %ld labels\n", s->rows);
}

nd_status nd_cmd_info(int argc, char **argv, nd_error *err) {
    if (argc != 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        if (argc == 1) {
            printf("usage: nndist info FILE   (a checkpoint or a dataset)\n");
            return ND_OK;
        }
        return ND_FAIL(err, ND_ERR_ARG, "info: give exactly one file (nndist info FILE)");
    }
    if (nd_checkpoint_is(argv[0])) {
        nd_ckpt_info ci;
        ND_TRY(nd_checkpoint_probe(argv[0], &ci, err));
        info_checkpoint(argv[0], &ci);
        return ND_OK;
    }
    nd_dataset_info di;
    ND_TRY(nd_dataset_probe(argv[0], &di, err));
    if (di.has_targets) printf("%s: dataset, %d float targets per row\n", argv[0], di.num_outputs);
    else printf("%s: dataset, %d classes\n", argv[0], di.num_classes);
    if (di.image_c) printf("  image shape %dx%dx%d (C x H x W)\n", di.image_c, di.image_h, di.image_w);
    info_split("train", &di.train);
    if (di.has_val) info_split("val", &di.val);
    if (di.has_test) info_split("test", &di.test);
    return ND_OK;
}
