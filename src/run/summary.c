/* What rank 0 tells about a run: the epoch line, the --metrics JSON line,
 * the final line, and the --summary file with the memory it used. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nndist/loss.h"
#include "train_internal.h"

/* NNDIST_GIT_DESCRIBE: git describe of the source at build time (generated
 * by cmake/version.cmake), or the release number outside a git checkout. */
#include "nd_version.h"
#define ND_VERSION_TEXT NNDIST_GIT_DESCRIBE

const char *const nd_phase_names[ND_PHASES] = {"data", "forward", "backward", "wait", "comm", "update"};

/* `, "phase_seconds": {"data": s, ...}` */
static void print_phases(FILE *f, const double *phase) {
    fprintf(f, ", \"phase_seconds\": {");
    for (int p = 0; p < ND_PHASES; ++p) fprintf(f, "%s\"%s\": %.6g", p ? ", " : "", nd_phase_names[p], phase[p]);
    fputc('}', f);
}

double nd_train_gap(const nd_trainer *tr, const nd_epoch_stats *e) {
    return (tr->train_eval_rows > 0 ? e->train_eval_acc : e->train_acc) - e->val_acc;
}

/* The full epoch line, without its newline. */
static void write_epoch_line(FILE *f, nd_trainer *tr, const nd_epoch_stats *e, const char *ml) {
    fprintf(f, "epoch %3d/%d  train loss %.4f %s %.4f", e->epoch, tr->cfg.epochs, e->train_loss, ml, e->train_acc);
    if (tr->train_eval_rows > 0) fprintf(f, " (clean %.4f)", e->train_eval_acc);
    if (tr->info.has_val) fprintf(f, " | val loss %.4f %s %.4f", e->val_loss, ml, e->val_acc);
    if (tr->info.has_test) fprintf(f, " | test loss %.4f %s %.4f", e->test_loss, ml, e->test_acc);
    fprintf(f, " | lr %.5g | %.0f samples/s | %.2f s", e->lr, e->samples_per_s, e->seconds);
    if (e->has_staleness) fprintf(f, " | staleness mean %.2f max %ld", e->staleness_mean, e->staleness_max);
    if (e->nan_skips) fprintf(f, " | %ld non-finite steps skipped", e->nan_skips);
    if (e->has_monitor) {
        double worst = 0;
        for (int l = 0; l < tr->model.num_layers; ++l) worst = fmax(worst, e->update_ratio[l]);
        fprintf(f, " | grad norm %.3g update/weight <= %.1e", e->grad_norm, worst);
    }
    if ((tr->cfg.clip_norm > 0 || tr->cfg.clip_value > 0) && e->clip_of > 0)
        fprintf(f, " | clipped %.0f%%", 100.0 * (double)e->clip_steps / (double)e->clip_of);
    if (tr->ema) {
        if (tr->info.has_val) fprintf(f, " | ema val %s %.4f", ml, e->ema_val_acc);
        if (tr->info.has_test) fprintf(f, " | ema test %s %.4f", ml, e->ema_test_acc);
    }
}

/* The epoch line on rank 0's output. On a terminal too narrow for the
 * full line (about 180 columns) a short one, so it does not wrap: the
 * metrics file and a redirected output keep every figure. */
static void print_epoch_line(nd_trainer *tr, const nd_epoch_stats *e, const char *ml) {
    nd_report *r = &tr->report;
    char line[1024] = "";
    FILE *f = fmemopen(line, sizeof line, "w");
    if (f) {
        write_epoch_line(f, tr, e, ml);
        fclose(f);
    }
    if (r->width <= 0 || (int)strlen(line) < r->width) {
        fprintf(r->out, "%s\n", line);
    } else {
        fprintf(r->out, "epoch %d/%d loss %.4f %s %.4f", e->epoch, tr->cfg.epochs, e->train_loss, ml, e->train_acc);
        if (tr->info.has_val) fprintf(r->out, " | val %.4f %.4f", e->val_loss, e->val_acc);
        if (tr->info.has_test) fprintf(r->out, " | test %.4f %.4f", e->test_loss, e->test_acc);
        fprintf(r->out, " | %.1f s\n", e->seconds);
    }
    fflush(r->out);
}

/* A number, or null when it is not finite (JSON has no NaN). */
static void number(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, "\"%s\": %.6g", key, v);
    else fprintf(f, "\"%s\": null", key);
}

static void print_histogram(FILE *f, const char *key, const nd_histogram *h) {
    fprintf(f, ", \"%s\": {", key);
    number(f, "lo", h->lo);
    fputs(", ", f);
    number(f, "hi", h->hi);
    fputs(", \"counts\": [", f);
    for (int i = 0; i < ND_HIST_BINS; ++i) fprintf(f, "%s%ld", i ? ", " : "", h->count[i]);
    fputs("]}", f);
}

/* `, "grad_norm": .., "grad_norm_clipped": .., "layers": [{..}, ..]` */
static void print_monitor(FILE *f, const nd_model *m, const nd_epoch_stats *e) {
    fputs(", ", f);
    number(f, "grad_norm", e->grad_norm);
    fputs(", ", f);
    number(f, "grad_norm_clipped", e->grad_norm_clipped);
    if (e->grad_norm_slice) fputs(", \"grad_norm_of\": \"server 0's slice\"", f);
    fputs(", \"layers\": [", f);
    for (int l = 0; l < m->num_layers; ++l) {
        fputs(l ? ", {" : "{", f);
        number(f, "update_ratio", e->update_ratio[l]);
        fputs(", ", f);
        number(f, "grad_norm", e->layer_grad_norm[l]);
        if (e->has_activations) {
            fprintf(f, ", \"dead_fraction\": %.6g, \"act_mean\": %.6g, \"act_std\": %.6g, ", e->dead_frac[l],
                    e->act_mean[l], e->act_std[l]);
            number(f, "saturation", e->saturation[l]);
            print_histogram(f, "act_hist", &e->act_hist[l]);
        }
        if (isfinite(e->layer_grad_norm[l])) print_histogram(f, "grad_hist", &e->grad_hist[l]);
        fputc('}', f);
    }
    fputc(']', f);
}

void nd_train_print_step(nd_trainer *tr, int epoch, long step, double loss, double lr, double grad_norm) {
    FILE *f = tr->report.metrics;
    if (!tr->report.active || !f) return;
    fprintf(f, "{\"epoch\": %d, \"step\": %ld, \"kind\": \"step\", ", epoch, step);
    number(f, "loss", loss);
    fprintf(f, ", \"lr\": %.6g, ", lr);
    number(f, "grad_norm", grad_norm);
    fputs("}\n", f);
    fflush(f); /* a reader following the file sees each step as it comes */
}

void nd_train_print_epoch(nd_trainer *tr, const nd_epoch_stats *e) {
    nd_report *r = &tr->report;
    if (!r->active) return;
    const char *ml = nd_loss_metric_label(tr->loss), *mn = nd_loss_metric_name(tr->loss);
    if (!r->quiet) print_epoch_line(tr, e, ml);
    if (r->metrics) {
        fprintf(r->metrics,
                "{\"epoch\": %d, \"step\": %ld, \"kind\": \"epoch\", \"train_loss\": %.6g, \"train_%s\": %.6g, "
                "\"lr\": %.6g, \"seconds\": %.6g, \"samples_per_s\": %.6g",
                e->epoch, tr->state.step, e->train_loss, mn, e->train_acc, e->lr, e->seconds, e->samples_per_s);
        if (tr->train_eval_rows > 0)
            fprintf(r->metrics, ", \"train_eval_loss\": %.6g, \"train_eval_%s\": %.6g", e->train_eval_loss, mn,
                    e->train_eval_acc);
        if (tr->info.has_val)
            fprintf(r->metrics, ", \"val_loss\": %.6g, \"val_%s\": %.6g, \"gap_%s\": %.6g", e->val_loss, mn, e->val_acc,
                    mn, nd_train_gap(tr, e));
        if (tr->info.has_test)
            fprintf(r->metrics, ", \"test_loss\": %.6g, \"test_%s\": %.6g", e->test_loss, mn, e->test_acc);
        if (tr->ema && tr->info.has_val) fprintf(r->metrics, ", \"ema_val_%s\": %.6g", mn, e->ema_val_acc);
        if (tr->ema && tr->info.has_test) fprintf(r->metrics, ", \"ema_test_%s\": %.6g", mn, e->ema_test_acc);
        if (!tr->async) print_phases(r->metrics, e->phase);
        if (!tr->async) fprintf(r->metrics, ", \"nan_skips\": %ld", e->nan_skips);
        if ((tr->cfg.clip_norm > 0 || tr->cfg.clip_value > 0) && e->clip_of > 0)
            fprintf(r->metrics, ", \"clip_steps\": %ld, \"clip_fraction\": %.6g", e->clip_steps,
                    (double)e->clip_steps / (double)e->clip_of);
        if (e->has_monitor) print_monitor(r->metrics, &tr->model, e);
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

/* `, "key": "text"` with JSON escapes. */
static void json_text(FILE *f, const char *key, const char *text) {
    fprintf(f, ", \"%s\": \"", key);
    for (const unsigned char *c = (const unsigned char *)text; *c; ++c) {
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
    fputc('"', f);
}

/* `, "key": "2026-11-28T12:00:00Z"` */
static void json_time(FILE *f, const char *key, double seconds) {
    char text[32] = "";
    const time_t t = (time_t)seconds;
    struct tm utc;
    if (gmtime_r(&t, &utc)) strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    json_text(f, key, text);
}

static void write_summary(FILE *f, const void *ctx) {
    const nd_trainer *tr = ctx;
    const nd_epoch_stats *e = &tr->state.last;
    fprintf(f, "{\"status\": \"%s\"", nd_run_status_names[tr->state.status]);
    json_text(f, "reason", tr->state.reason);
    json_text(f, "version", ND_VERSION_TEXT);
    json_text(f, "hosts", tr->hosts);
    json_time(f, "start_time", tr->start_time);
    if (tr->state.status != ND_RUN_RUNNING) json_time(f, "end_time", (double)time(NULL));
    if (tr->state.status == ND_RUN_STOPPED_BY_SIGNAL) {
        fprintf(f, ", \"stop\": {\"signal\": \"%s\", \"step\": %ld, \"epoch\": %d, \"fraction\": %.4f",
                nd_stop_signal_name(tr->state.stop_signal), tr->state.stop_step, tr->state.stop_epoch,
                nd_stop_fraction(tr));
        json_text(f, "checkpoint", tr->state.stop_checkpoint);
        fputc('}', f);
    }
    fprintf(f, ", \"mode\": \"%s\", \"np\": %d, \"batch_per_rank\": %d, \"global_batch\": %d",
            nd_mode_names[tr->cfg.mode], tr->size, tr->cfg.batch, tr->global_batch);
    fprintf(f, ", \"epochs\": %d, \"steps\": %ld, \"threads_per_rank\": %d", e->epoch, tr->state.step, tr->threads);
    json_number(f, "train_seconds", tr->state.train_seconds);
    json_number(f, "samples_per_s",
                tr->state.train_seconds > 0 ? tr->state.samples_seen / tr->state.train_seconds : NAN);
    json_number(f, "train_loss", e->train_loss);
    /* Classification fills the *_accuracy keys; other losses leave them
     * null and add their own metric's keys. */
    const int acc = tr->loss <= ND_LOSS_SQUARED_HINGE;
    const char *mn = nd_loss_metric_name(tr->loss);
    char key[64];
    json_number(f, "train_accuracy", acc ? e->train_acc : NAN);
    if (tr->train_eval_rows > 0) { /* the first N rows of /train in inference mode, the gap's train side */
        fprintf(f, ", \"train_eval_rows\": %ld", tr->train_eval_rows);
        json_number(f, "train_eval_loss", e->train_eval_loss);
        json_number(f, "train_eval_accuracy", acc ? e->train_eval_acc : NAN);
    }
    json_number(f, "val_loss", e->val_loss);
    json_number(f, "val_accuracy", acc ? e->val_acc : NAN);
    json_number(f, "test_accuracy", acc ? e->test_acc : NAN);
    json_number(f, "test_loss", e->test_loss);
    if (tr->ema) { /* the weight average (--ema) at the last finished epoch */
        json_number(f, "ema_val_accuracy", acc ? e->ema_val_acc : NAN);
        json_number(f, "ema_test_accuracy", acc ? e->ema_test_acc : NAN);
    }
    if (tr->info.has_val) {
        snprintf(key, sizeof key, "gap_%s", mn);
        json_number(f, key, nd_train_gap(tr, e));
    }
    if (!acc) {
        const char *splits[4] = {"train", "val", "test", "train_eval"};
        const double values[4] = {e->train_acc, e->val_acc, e->test_acc, e->train_eval_acc};
        for (int i = 0; i < 3 + (tr->train_eval_rows > 0); ++i) {
            snprintf(key, sizeof key, "%s_%s", splits[i], mn);
            json_number(f, key, values[i]);
        }
    }
    nd_ensemble_summary(tr, f); /* --ensemble: the snapshot ensemble's figures and members */
    fprintf(f, ", \"loss\": \"%s\"", nd_loss_name(tr->loss));
    if (!tr->async) print_phases(f, tr->state.phase_total); /* rank 0's training time by phase (sync) */
    const double *mb = tr->memory_mb;
    fprintf(f,
            ", \"memory_mb\": {\"peak_rss\": %.1f, \"shards\": %.1f, \"parameters\": %.2f, \"activations\": %.2f, "
            "\"optimizer_state\": %.2f}",
            mb[0], mb[1], mb[2], mb[3], mb[4]);
    if (tr->exchange.part && tr->exchange.part->messages)
        fprintf(f, ", \"gradient_buckets\": %ld", tr->state.gradient_buckets);
    /* Bytes this rank put on the wire per step of this run (samples_seen
     * counts the run's finished steps); lbfgs's evaluations do not go
     * through the exchange part. */
    const nd_exchange *x = &tr->exchange;
    const long run_steps = tr->global_batch > 0 ? tr->state.samples_seen / tr->global_batch : 0;
    if (!tr->async && !tr->lbfgs && x->part && x->part->wire_bytes && x->self && run_steps > 0)
        fprintf(f, ", \"bytes_per_step\": %.0f", (double)x->part->wire_bytes(x->self, &x->env) / (double)run_steps);
    if (!tr->async) fprintf(f, ", \"nan_skips\": %ld", tr->state.nan_skips);
    fprintf(f, ", \"parameters\": %zu, \"config\": {", tr->model.num_weights);
    nd_cli_print_json(nd_train_options, nd_train_num_options, &tr->cfg, f);
    fputs("}}\n", f);
}

void nd_train_print_done(nd_trainer *tr) {
    if (!tr->report.active) return;
    const nd_epoch_stats *e = &tr->state.last;
    const int head = fprintf(tr->report.out, "done: %d epochs, %ld %s, %.2f s training, %.0f samples/s", e->epoch,
                             tr->state.step, tr->async ? "updates" : "steps", tr->state.train_seconds,
                             tr->state.train_seconds > 0 ? tr->state.samples_seen / tr->state.train_seconds : 0.0);
    if (tr->info.has_test) {
        char tail[96];
        const int n = snprintf(tail, sizeof tail, "final test %s %.4f (loss %.4f)",
                               tr->loss <= ND_LOSS_SQUARED_HINGE ? "accuracy" : nd_loss_metric_name(tr->loss),
                               e->test_acc, e->test_loss);
        /* On a narrow terminal the result goes on a line of its own rather than wrap. */
        const int split = tr->report.width > 0 && head + 2 + n >= tr->report.width;
        fprintf(tr->report.out, "%s%s", split ? "\n" : "; ", tail);
        if (tr->ema && tr->loss <= ND_LOSS_SQUARED_HINGE) fprintf(tr->report.out, "; ema %.4f", e->ema_test_acc);
        nd_ensemble_final_line(tr, tr->report.out);
    }
    fputc('\n', tr->report.out);
    fflush(tr->report.out);
}

/* Bytes of one split's rows held here (features and labels or targets). */
static double shard_bytes(const nd_shard *s) {
    return (double)s->rows *
        ((double)s->cols * sizeof(float) + (s->target_cols ? (double)s->target_cols * sizeof(float) : sizeof(int)));
}

/* Collective: this job's largest per-rank figures, in MB: peak resident
 * memory, the data shards, one copy of the parameters, the activation
 * workspace and batch buffers; so the summary shows what the peak is made of. */
static nd_status measure_memory(nd_trainer *tr, nd_error *err) {
    struct rusage ru;
    double *mb = tr->memory_mb;
    mb[0] = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : NAN; /* Linux: KiB */
    nd_shard held = tr->train; /* streaming: the two windows are what is held */
    if (tr->feeder->held_rows) held.rows = (int)tr->feeder->held_rows(tr);
    mb[1] = (shard_bytes(&held) + shard_bytes(&tr->val) + shard_bytes(&tr->test) + shard_bytes(&tr->train_eval)) /
        1048576.0;
    mb[2] = (double)tr->model.num_params * sizeof(float) / 1048576.0;
    mb[3] = ((double)tr->model.workspace_floats + (double)tr->cfg.batch * (tr->train.cols + tr->info.num_outputs)) *
        sizeof(float) / 1048576.0;
    mb[4] = (nd_optimizer_state_floats(&tr->opt) + (tr->lbfgs ? nd_lbfgs_state_floats(tr->lbfgs) : 0.0)) *
        sizeof(float) / 1048576.0;
    return nd_comm_allreduce_max_f64(tr->comm, mb, 5, err);
}

nd_status nd_trainer_write_summary(nd_trainer *tr, nd_error *err) {
    ND_TRY(measure_memory(tr, err));
    nd_status st = ND_OK;
    if (tr->rank == 0 && tr->cfg.summary[0]) st = nd_write_file_atomic(tr->cfg.summary, write_summary, tr, err);
    return nd_train_agree(tr, st, err);
}

nd_status nd_train_summary_begin(nd_trainer *tr, nd_error *err) {
    nd_status st = ND_OK;
    tr->state.status = ND_RUN_RUNNING;
    if (tr->rank == 0 && tr->cfg.summary[0]) st = nd_write_file_atomic(tr->cfg.summary, write_summary, tr, err);
    if (st != ND_OK) nd_error_prefix(err, "--summary: ");
    return nd_train_agree(tr, st, err);
}

void nd_trainer_write_failed_summary(nd_trainer *tr, const char *reason, int alone) {
    if (!tr || tr->start_time == 0.0) return; /* setup did not get that far */
    if (tr->state.status != ND_RUN_STOPPED_ON_NAN) tr->state.status = ND_RUN_FAILED;
    if (reason && reason[0]) snprintf(tr->state.reason, sizeof tr->state.reason, "%s", reason);
    nd_error ignored = {0};
    if ((alone || tr->rank == 0) && tr->cfg.summary[0])
        (void)nd_write_file_atomic(tr->cfg.summary, write_summary, tr, &ignored);
    if (alone) nd_train_unlock_dir(tr); /* the job is about to be aborted: free the directory */
}
