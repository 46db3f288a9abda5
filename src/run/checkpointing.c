/* The trainer's side of checkpoints: where and when rank 0 writes them, and
 * resuming from one (read by rank 0, broadcast to every replica). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nndist/arena.h"
#include "nndist/checkpoint.h"
#include "train_internal.h"
#include "nndist/watchdog.h"

/* The resolved configuration as `key = value` lines, for the file. */
static void config_text(const nd_trainer *tr, char *out, size_t cap) {
    FILE *f = fmemopen(out, cap, "w");
    if (!f) {
        out[0] = '\0';
        return;
    }
    nd_cli_print(nd_train_options, nd_train_num_options, &tr->cfg, f, "");
    fclose(f);
    out[cap - 1] = '\0';
}

static void fill_meta(const nd_trainer *tr, nd_ckpt_meta *m, int epoch, long epoch_step, double loss_sum,
                      double correct) {
    memset(m, 0, sizeof *m);
    m->step = tr->state.step;
    m->epoch = epoch;
    m->epoch_step = epoch_step;
    m->epoch_loss_sum = loss_sum;
    m->epoch_correct = correct;
    m->world_size = tr->size;
    m->global_batch = tr->global_batch;
    m->plateau_scale = tr->lr.plateau_scale;
    m->plateau_best = tr->state.plateau_best;
    m->plateau_bad = tr->state.plateau_bad;
    config_text(tr, m->config, sizeof m->config);
    /* What a reader outside nndist needs to prepare the inputs alike. */
    m->input_scale = tr->info.train.x_scale;
    m->input_uint8 = tr->info.train.x_is_uint8;
    snprintf(m->normalization, sizeof m->normalization, "%s", nd_norm_name(tr->norm));
    snprintf(m->loss, sizeof m->loss, "%s", nd_loss_name(tr->loss));
}

/* How many ranks hold a slice of the optimizer state (ranks 0..K-1, split
 * by nd_shard_range over the arena): the servers in async mode, every rank
 * with --shard-optimizer; 0 when every replica holds all of it. */
static int state_owners(const nd_trainer *tr) {
    return tr->async ? tr->num_servers : tr->slice.length < tr->model.num_params ? tr->size : 0;
}

/* Rank 0's full-arena state (m, v) and the owners' slices: `to_owners`
 * sends each owner its slice of full (resume), otherwise rank 0 collects
 * them into full (a checkpoint). Collective over the owners and rank 0. */
static nd_status move_state(nd_trainer *tr, float *const full[2], int to_owners, nd_error *err) {
    float *mine[2] = {tr->opt.m, tr->opt.v};
    const int owners = state_owners(tr);
    for (int k = 0; k < owners; ++k) {
        long off, len;
        nd_shard_range((long)tr->model.num_params, k, owners, &off, &len);
        for (int i = 0; i < 2; ++i) {
            if (!full[i] && !(tr->rank == k && mine[i])) continue; /* no such state */
            if (tr->rank == 0 && k == 0) {
                if (to_owners) memcpy(mine[i], full[i] + off, sizeof(float) * (size_t)len);
                else memcpy(full[i] + off, mine[i], sizeof(float) * (size_t)len);
            } else if (tr->rank == 0 || tr->rank == k) {
                nd_request r = {0};
                const int sends = (tr->rank == 0) == to_owners;
                float *buf = tr->rank == 0 ? full[i] + off : mine[i];
                if (sends)
                    ND_TRY(nd_comm_isend_f32(tr->comm, buf, (size_t)len, tr->rank == 0 ? k : 0, 900 + i, &r, err));
                else ND_TRY(nd_comm_irecv_f32(tr->comm, buf, (size_t)len, tr->rank == 0 ? k : 0, 900 + i, &r, err));
                ND_TRY(nd_comm_wait_all(&r, 1, NULL, err));
            }
        }
    }
    return ND_OK;
}

/* Rank 0: a full-arena view of the optimizer over new buffers when the
 * state is sliced (free with free_view), else the optimizer itself. */
static nd_status full_view(nd_trainer *tr, nd_optimizer *view, nd_error *err) {
    *view = tr->opt;
    if (!state_owners(tr)) return ND_OK;
    const size_t n = tr->model.num_params;
    view->n = n;
    view->m = tr->opt.m ? nd_buffer_alloc(n) : NULL;
    view->v = tr->opt.v ? nd_buffer_alloc(n) : NULL;
    if ((tr->opt.m && !view->m) || (tr->opt.v && !view->v))
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the whole optimizer state (%zu floats)", n);
    return ND_OK;
}

static void free_view(nd_trainer *tr, nd_optimizer *view) {
    if (tr->async || !state_owners(tr)) return; /* the only sliced state gather_view collects */
    nd_buffer_free(view->m);
    nd_buffer_free(view->v);
}

/* Sync with --shard-optimizer: the collective part of a checkpoint; rank 0
 * ends with the whole state in *view (others: unused). */
static nd_status gather_view(nd_trainer *tr, nd_optimizer *view, nd_error *err) {
    *view = tr->opt;
    if (tr->async || !state_owners(tr)) return ND_OK; /* (async servers send theirs through the protocol: async.c) */
    nd_status st = tr->rank == 0 ? full_view(tr, view, err) : ND_OK;
    ND_TRY(nd_train_agree(tr, st, err));
    float *full[2] = {tr->rank == 0 ? view->m : NULL, tr->rank == 0 ? view->v : NULL};
    st = move_state(tr, full, 0, err);
    if (st != ND_OK && tr->rank == 0) free_view(tr, view);
    return st;
}

/* Rank 0 loads path into the model, optimizer and statistics; the others
 * receive them (in async mode each server its slice of the optimizer
 * state). Collective. */
static nd_status load(nd_trainer *tr, const char *path, nd_error *err) {
    nd_ckpt_info info;
    memset(&info, 0, sizeof info);
    nd_status st = ND_OK;
    const size_t n = tr->model.num_params, cols = (size_t)tr->info.train.cols;
    float *full[2] = {NULL, NULL};
    nd_optimizer view; /* sliced state: a full-arena view over temporary buffers */
    if (tr->rank == 0) {
        st = full_view(tr, &view, err);
        if (state_owners(tr)) full[0] = view.m, full[1] = view.v;
        if (st == ND_OK)
            st = nd_checkpoint_read(path, &tr->model, &view, tr->norm_mean, tr->norm_inv_std, tr->ema, &info, err);
    }
    st = nd_train_agree(tr, st, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, tr->model.param, n, 0, err);
    if (st == ND_OK && state_owners(tr)) st = move_state(tr, full, 1, err);
    if (st == ND_OK && !state_owners(tr) && tr->opt.m) st = nd_comm_bcast_f32(tr->comm, tr->opt.m, n, 0, err);
    if (st == ND_OK && !state_owners(tr) && tr->opt.v) st = nd_comm_bcast_f32(tr->comm, tr->opt.v, n, 0, err);
    nd_buffer_free(full[0]);
    nd_buffer_free(full[1]);
    ND_TRY(st);
    if (tr->ema) ND_TRY(nd_comm_bcast_f32(tr->comm, tr->ema, n, 0, err));
    ND_TRY(nd_comm_bcast_f32(tr->comm, tr->norm_mean, cols, 0, err));
    ND_TRY(nd_comm_bcast_f32(tr->comm, tr->norm_inv_std, cols, 0, err));
    double v[11] = {(double)info.meta.step,      info.meta.epoch,         (double)info.meta.epoch_step,
                    info.meta.epoch_loss_sum,    info.meta.epoch_correct, info.meta.global_batch,
                    (double)info.optimizer_step, info.meta.world_size,    info.meta.plateau_scale,
                    info.meta.plateau_best,      info.meta.plateau_bad};
    ND_TRY(nd_comm_bcast_f64(tr->comm, v, 11, 0, err));
    tr->state.plateau_scale = v[8];
    tr->state.plateau_best = v[9];
    tr->state.plateau_bad = (int)v[10];
    tr->state.step = (long)v[0];
    tr->opt.step = (long)v[6];
    tr->state.start_epoch = (int)v[1];
    tr->state.start_epoch_step = (long)v[2];
    tr->state.start_loss_sum = v[3];
    tr->state.start_correct = v[4];
    const int old_batch = (int)v[5];
    if (old_batch != tr->global_batch && tr->state.start_epoch_step > 0) {
        /* Another rank count or batch: continue after the same number of the
         * epoch's samples (the order of the rest differs: each rank
         * shuffles its own shard). The epoch's train loss then mixes both. */
        tr->state.start_epoch_step = tr->state.start_epoch_step * old_batch / tr->global_batch;
        if (tr->state.start_epoch_step > tr->steps_per_epoch) tr->state.start_epoch_step = tr->steps_per_epoch;
    }
    if (tr->rank == 0)
        printf(
            "nndist train: resuming from %s: step %ld, epoch %d after %ld of its steps (written by %d ranks, global batch %d)\n",
            path, tr->state.step, tr->state.start_epoch, tr->state.start_epoch_step, (int)v[7], old_batch);
    return ND_OK;
}

/* mkdir -p: 0 on success (or if it exists). */
static int make_dirs(const char *path) {
    char p[ND_PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *c = p + 1; *c; ++c) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) return -1;
        *c = '/';
    }
    return mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

/* 1 if a file can be created in dir: a read-only mount or a directory
 * without permission is found now, not at the first checkpoint an hour in.
 * (access() alone is not enough: root passes it on any permission bits.) */
static int writable_dir(const char *dir) {
    char probe[ND_PATH_MAX + 64];
    snprintf(probe, sizeof probe, "%s/.nndist-write-test.%ld", dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return 0;
    close(fd);
    unlink(probe);
    return 1;
}

/* 1 if something exists at path that a run must not replace: anything but
 * an nndist checkpoint (a dataset, a summary, a directory, ...). */
static int foreign_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    return !S_ISREG(sb.st_mode) || !nd_checkpoint_is(path);
}

/* The directory part of path into dir ("." when there is none). */
static void dir_of(const char *path, char *dir, size_t cap) {
    snprintf(dir, cap, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
}

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* --save's default (docs/checkpoints.md): model.h5 in --checkpoint-dir
 * (the run's own directory; a rerun or resume replaces its model); else
 * NAME.model.h5 beside --summary NAME.json (or --metrics), as the summary
 * itself is replaced by a rerun; else (and when that directory is missing,
 * which --summary reports itself) model-DATE-TIME[-N].h5 in the working
 * directory, a new name each run, so that a run without outputs never
 * replaces another's model. 0, or -1 if the path does not fit. */
static int default_save(const nd_train_config *c, char *out, size_t cap) {
    const char *beside = c->summary[0] ? c->summary : c->metrics;
    char dir[ND_PATH_MAX];
    dir_of(beside, dir, sizeof dir);
    int len;
    if (c->checkpoint_dir[0]) {
        len = snprintf(out, cap, "%s/model.h5", c->checkpoint_dir);
    } else if (beside[0] && is_dir(dir)) {
        const char *slash = strrchr(beside, '/'), *dot = strrchr(beside, '.');
        const int stem = dot && dot > (slash ? slash + 1 : beside) ? (int)(dot - beside) : (int)strlen(beside);
        len = snprintf(out, cap, "%.*s.model.h5", stem, beside);
    } else {
        char stamp[32];
        const time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        len = snprintf(out, cap, "model-%s.h5", stamp);
        struct stat sb;
        for (int k = 2; k < 1000 && lstat(out, &sb) == 0; ++k) len = snprintf(out, cap, "model-%s-%d.h5", stamp, k);
    }
    return len >= 0 && (size_t)len < cap ? 0 : -1;
}

/* Rank 0: resolves --save into c->save and checks that the file can be
 * written there at the end of the run. */
static nd_status check_save(nd_train_config *c, nd_error *err) {
    if (!strcmp(c->save, "none")) return ND_OK;
    const int given = c->save[0] != '\0';
    if (!given && default_save(c, c->save, sizeof c->save) != 0)
        return ND_FAIL(err, ND_ERR_ARG, "--save: the default path is too long (give --save FILE)");
    const char *how = given ? "" : " (the default: give --save FILE or --save none)";
    char dir[ND_PATH_MAX];
    dir_of(c->save, dir, sizeof dir);
    if (c->save[strlen(c->save) - 1] == '/')
        return ND_FAIL(err, ND_ERR_ARG, "--save %s: give a file name, not a directory", c->save);
    if (!is_dir(dir)) return ND_FAIL(err, ND_ERR_IO, "--save %s%s: directory %s does not exist", c->save, how, dir);
    if (foreign_file(c->save))
        return ND_FAIL(err, ND_ERR_IO, "--save %s%s: the file exists and is not an nndist checkpoint; not replacing it",
                       c->save, how);
    if (!writable_dir(dir)) return ND_FAIL(err, ND_ERR_IO, "--save %s%s: cannot write in %s", c->save, how, dir);
    return ND_OK;
}

nd_status nd_train_checkpoint_setup(nd_trainer *tr, int *resumed, nd_error *err) {
    nd_train_config *c = &tr->cfg;
    *resumed = 0;
    nd_status st = ND_OK;
    if (tr->rank == 0 && c->checkpoint_dir[0] && make_dirs(c->checkpoint_dir) != 0)
        st = ND_FAIL(err, ND_ERR_IO, "--checkpoint-dir %s: %s", c->checkpoint_dir, strerror(errno));
    else if (tr->rank == 0 && c->checkpoint_dir[0] && !writable_dir(c->checkpoint_dir))
        st = ND_FAIL(err, ND_ERR_IO, "--checkpoint-dir %s: cannot write there (%s)", c->checkpoint_dir,
                     strerror(errno));
    else if (tr->rank == 0) st = check_save(c, err);
    ND_TRY(nd_train_agree(tr, st, err));
    ND_TRY(nd_train_lock_dir(tr, err)); /* before --resume auto picks a checkpoint another run may still write */
    /* Rank 0 named the file (a default may hold the time): one name everywhere. */
    ND_TRY(nd_comm_bcast_bytes(tr->comm, c->save, sizeof c->save, 0, err));
    if (!c->resume[0]) return ND_OK;
    char path[ND_PATH_MAX + 64];
    int found = 1;
    if (!strcmp(c->resume, "auto")) {
        if (tr->rank == 0) st = nd_checkpoint_latest(c->checkpoint_dir, path, sizeof path, &found, err);
        ND_TRY(nd_train_agree(tr, st, err));
        double f = found;
        ND_TRY(nd_comm_bcast_f64(tr->comm, &f, 1, 0, err));
        if (!f) {
            if (tr->rank == 0) printf("nndist train: no checkpoint in %s yet, starting fresh\n", c->checkpoint_dir);
            return ND_OK;
        }
    } else {
        snprintf(path, sizeof path, "%s", c->resume);
    }
    ND_TRY(load(tr, path, err));
    *resumed = 1;
    return ND_OK;
}

nd_status nd_train_checkpoint_write(nd_trainer *tr, const nd_optimizer *opt, int epoch, long epoch_step,
                                    double loss_sum, double correct, nd_error *err) {
    nd_ckpt_meta meta;
    char path[ND_PATH_MAX + 64];
    fill_meta(tr, &meta, epoch, epoch_step, loss_sum, correct);
    nd_checkpoint_name(path, sizeof path, tr->cfg.checkpoint_dir, tr->state.step);
    ND_TRY(nd_checkpoint_write(path, &tr->model, opt, tr->norm_mean, tr->norm_inv_std, tr->ema, &meta, err));
    ND_TRY(nd_checkpoint_prune(tr->cfg.checkpoint_dir, tr->cfg.keep, err));
    return nd_checkpoint_link_latest(tr->cfg.checkpoint_dir, err); /* after pruning: never left dangling */
}

static nd_status save_now(nd_trainer *tr, int epoch, long epoch_step, double loss_sum, double correct, nd_error *err) {
    nd_optimizer view;
    ND_TRY(gather_view(tr, &view, err));
    nd_status st = ND_OK;
    if (tr->rank == 0) {
        st = nd_train_checkpoint_write(tr, &view, epoch, epoch_step, loss_sum, correct, err);
        free_view(tr, &view);
    }
    return nd_train_agree(tr, st, err);
}

/* Removes best-*.h5 of dir except keep_name. */
static void remove_other_best(const char *dir, const char *keep_name) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "best-", 5) || !strstr(e->d_name, ".h5") || strstr(e->d_name, ".tmp.")) continue;
        if (!strcmp(e->d_name, keep_name)) continue;
        char p[ND_PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static nd_status epoch_now(nd_trainer *tr, const nd_epoch_stats *e, int best, nd_error *err) {
    /* The epoch is done: the file says "epoch e + 1, nothing of it yet". */
    ND_TRY(save_now(tr, e->epoch + 1, 0, 0.0, 0.0, err));
    if (!best) return ND_OK;
    nd_optimizer view;
    ND_TRY(gather_view(tr, &view, err));
    nd_status st = ND_OK;
    if (tr->rank == 0) {
        nd_ckpt_meta meta;
        char name[96], path[ND_PATH_MAX + 128];
        fill_meta(tr, &meta, e->epoch + 1, 0, 0.0, 0.0);
        snprintf(meta.metric_name, sizeof meta.metric_name, "val_%s", nd_loss_metric_name(tr->loss));
        meta.metric_value = e->val_acc;
        snprintf(name, sizeof name, "best-ep%03d-val%.4f.h5", e->epoch, e->val_acc);
        snprintf(path, sizeof path, "%s/%s", tr->cfg.checkpoint_dir, name);
        st = nd_checkpoint_write(path, &tr->model, &view, tr->norm_mean, tr->norm_inv_std, tr->ema, &meta, err);
        free_view(tr, &view);
        if (st == ND_OK) remove_other_best(tr->cfg.checkpoint_dir, name);
    }
    return nd_train_agree(tr, st, err);
}

/* The stall watchdog watches a checkpoint whole: rank 0 writing it (a hung
 * file system) and the others waiting for its verdict (rank 0 stopped). */
static const char *const checkpoint_what = "the checkpoint (rank 0 writes it, the others wait for its verdict)";

nd_status nd_train_checkpoint_save(nd_trainer *tr, int epoch, long epoch_step, double loss_sum, double correct,
                                   nd_error *err) {
    nd_watchdog_enter(tr->watchdog, checkpoint_what, tr->state.step);
    const nd_status st = save_now(tr, epoch, epoch_step, loss_sum, correct, err);
    nd_watchdog_leave(tr->watchdog);
    return st;
}

nd_status nd_train_checkpoint_epoch(nd_trainer *tr, const nd_epoch_stats *e, int best, nd_error *err) {
    nd_watchdog_enter(tr->watchdog, checkpoint_what, tr->state.step);
    const nd_status st = epoch_now(tr, e, best, err);
    nd_watchdog_leave(tr->watchdog);
    return st;
}

nd_status nd_train_snapshot_write(nd_trainer *tr, const float *param, int epoch, double test, char *path, size_t cap,
                                  nd_error *err) {
    nd_ckpt_meta meta;
    fill_meta(tr, &meta, epoch + 1, 0, 0.0, 0.0);
    if (isfinite(test)) {
        snprintf(meta.metric_name, sizeof meta.metric_name, "test_%s", nd_loss_metric_name(tr->loss));
        meta.metric_value = test;
    }
    snprintf(path, cap, "%s/snapshot-ep%03d.h5", tr->cfg.checkpoint_dir, epoch);
    /* The member's weights, without optimizer state or average: a file to evaluate. */
    nd_model view = tr->model;
    view.param = (float *)param;
    if (nd_checkpoint_write(path, &view, NULL, tr->norm_mean, tr->norm_inv_std, NULL, &meta, err) != ND_OK)
        return nd_error_prefix(err, "--ensemble: ");
    return ND_OK;
}

/* Rank 0 writes the model file; the others wait for its verdict. */
static nd_status save_model(nd_trainer *tr, nd_error *err) {
    nd_status st = ND_OK;
    if (tr->rank == 0) {
        const char *path = tr->cfg.save;
        nd_ckpt_meta meta;
        const nd_epoch_stats *last = &tr->state.last;
        fill_meta(tr, &meta, last->epoch + 1, 0, 0.0, 0.0);
        if (isfinite(last->test_acc)) {
            snprintf(meta.metric_name, sizeof meta.metric_name, "test_%s", nd_loss_metric_name(tr->loss));
            meta.metric_value = last->test_acc;
        }
        /* Checked at setup; checked again, as the run may have been long. */
        if (foreign_file(path))
            st = ND_FAIL(err, ND_ERR_IO, "--save %s: the file exists and is not an nndist checkpoint; not replacing it",
                         path);
        /* No optimizer state: a file to use, not to resume (ckpt-step*.h5
         * are for that), and in async mode the state is on the servers. */
        if (st == ND_OK &&
            nd_checkpoint_write(path, &tr->model, NULL, tr->norm_mean, tr->norm_inv_std, tr->ema, &meta, err) != ND_OK)
            st = nd_error_prefix(err, "--save: ");
        if (st == ND_OK && tr->report.active) printf("nndist train: model saved to %s\n", path);
    }
    return nd_train_agree(tr, st, err);
}

nd_status nd_train_save_model(nd_trainer *tr, nd_error *err) {
    if (!tr->cfg.save[0] || !strcmp(tr->cfg.save, "none")) return ND_OK;
    nd_watchdog_enter(tr->watchdog, "the model file (rank 0 writes it, the others wait for its verdict)",
                      tr->state.step);
    const nd_status st = save_model(tr, err);
    nd_watchdog_leave(tr->watchdog);
    return st;
}

/* "10x64" from a tensor's dimensions. */
static void dims_text(const int *dims, int ndims, char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (int d = 0; d < ndims && used < cap; ++d)
        used += (size_t)snprintf(out + used, cap - used, "%s%d", d ? "x" : "", dims[d]);
}

/* Rank 0: copies into tr->model each tensor of src of the same name and
 * shape, and says in one line what was loaded and what was kept fresh. */
static nd_status copy_matching(nd_trainer *tr, const nd_model *src, int with_stats, int *head_loaded, nd_error *err) {
    nd_model *m = &tr->model;
    int loaded = 0, used = 0;
    char fresh[1024] = "";
    size_t len = 0;
    *head_loaded = 0;
    for (int t = 0; t < m->num_tensors; ++t) {
        const nd_tensor *T = &m->tensor[t];
        const nd_tensor *S = NULL;
        for (int u = 0; u < src->num_tensors && !S; ++u)
            if (!strcmp(src->tensor[u].name, T->name)) S = &src->tensor[u];
        const int same = S && S->ndims == T->ndims && !memcmp(S->dims, T->dims, sizeof(int) * (size_t)T->ndims);
        if (same) {
            memcpy(m->param + T->span.offset, src->param + S->span.offset, sizeof(float) * T->span.length);
            loaded += 1;
            *head_loaded |= T->layer == m->num_layers - 1 && T->role == ND_TENSOR_BIAS;
            continue;
        }
        char a[48] = "new", b[48];
        if (S) dims_text(S->dims, S->ndims, a, sizeof a);
        dims_text(T->dims, T->ndims, b, sizeof b);
        if (len < sizeof fresh)
            len += (size_t)snprintf(fresh + len, sizeof fresh - len, "%s%s %s -> %s", len ? ", " : "", T->name, a, b);
    }
    for (int u = 0; u < src->num_tensors; ++u)
        for (int t = 0; t < m->num_tensors; ++t) used += !strcmp(src->tensor[u].name, m->tensor[t].name);
    if (loaded == 0) {
        char arch[512];
        nd_arch_format(&src->spec, arch, sizeof arch);
        return ND_FAIL(err, ND_ERR_ARG, "--init-from %s: no tensor has this network's names and shapes (it holds %s)",
                       tr->cfg.init_from, arch);
    }
    if (!tr->cfg.quiet)
        printf("nndist train: --init-from %s: %d of %d tensors loaded%s%s%s; %s\n", tr->cfg.init_from, loaded,
               m->num_tensors, len ? ", kept fresh: " : "", fresh,
               src->num_tensors > used ? " (some of the file's unused)" : "",
               with_stats ? "its normalization statistics" : "fresh normalization statistics (another input width)");
    return ND_OK;
}

/* Rank 0's part of --init-from: the checkpoint read whole (its checksums
 * verified) into a network of its own architecture, then copied over.
 * flags[0]: its normalization statistics were taken (the input width is
 * the same: the loaded layers expect their inputs scaled as in their
 * training, even if the new data would scale otherwise); flags[1]: the
 * output bias was loaded (no --output-bias priors over it). */
static nd_status read_init(nd_trainer *tr, double flags[2], nd_error *err) {
    const char *path = tr->cfg.init_from;
    nd_ckpt_info info;
    ND_TRY(nd_checkpoint_probe(path, &info, err));
    nd_model src;
    ND_TRY(nd_model_create(&src, &info.spec, 1, err));
    const size_t cols = (size_t)info.spec.input_dim;
    float *mean = nd_buffer_alloc(cols), *inv_std = nd_buffer_alloc(cols);
    nd_status st = mean && inv_std ? ND_OK
                                   : ND_FAIL(err, ND_ERR_NOMEM, "--init-from: cannot allocate %zu floats", cols);
    if (st == ND_OK) st = nd_checkpoint_read(path, &src, NULL, mean, inv_std, NULL, &info, err);
    const int with_stats = info.spec.input_dim == tr->info.train.cols;
    int head = 0;
    if (st == ND_OK) st = copy_matching(tr, &src, with_stats, &head, err);
    if (st == ND_OK && with_stats) {
        memcpy(tr->norm_mean, mean, sizeof(float) * cols);
        memcpy(tr->norm_inv_std, inv_std, sizeof(float) * cols);
    }
    flags[0] = with_stats;
    flags[1] = head;
    nd_buffer_free(mean);
    nd_buffer_free(inv_std);
    nd_model_destroy(&src);
    return st;
}

nd_status nd_train_init_from(nd_trainer *tr, int *have_stats, int *head_loaded, nd_error *err) {
    double flags[2] = {0.0, 0.0};
    ND_TRY(nd_train_agree(tr, tr->rank == 0 ? read_init(tr, flags, err) : ND_OK, err));
    ND_TRY(nd_comm_bcast_f64(tr->comm, flags, 2, 0, err));
    *have_stats = flags[0] != 0.0;
    *head_loaded = flags[1] != 0.0;
    if (!*have_stats) return ND_OK;
    ND_TRY(nd_comm_bcast_f32(tr->comm, tr->norm_mean, (size_t)tr->info.train.cols, 0, err));
    return nd_comm_bcast_f32(tr->comm, tr->norm_inv_std, (size_t)tr->info.train.cols, 0, err);
}

/* Rank 0: the teacher at path must fit the student's data and loss. */
static nd_status check_teacher(const nd_trainer *tr, const char *path, const nd_ckpt_info *info, nd_error *err) {
    if (info->spec.input_dim != tr->info.train.cols || info->spec.num_classes != tr->info.num_outputs)
        return ND_FAIL(err, ND_ERR_ARG, "--teacher %s: %d inputs and %d classes, this data has %d and %d", path,
                       info->spec.input_dim, info->spec.num_classes, tr->info.train.cols, tr->info.num_outputs);
    if (info->meta.loss[0] && strcmp(info->meta.loss, "softmax_ce"))
        return ND_FAIL(err, ND_ERR_ARG, "--teacher %s: trained for --loss %s; distillation needs softmax_ce", path,
                       info->meta.loss);
    const float theirs = info->meta.input_scale > 0.0f ? info->meta.input_scale : 1.0f; /* 0: unknown, 1 */
    const float ours = tr->info.train.x_scale > 0.0f ? tr->info.train.x_scale : 1.0f;
    if (theirs != ours)
        return ND_FAIL(err, ND_ERR_ARG, "--teacher %s: trained on data of scale %g, this data has %g", path,
                       (double)theirs, (double)ours);
    return ND_OK;
}

/* Collective: one teacher into T. */
static nd_status load_teacher(nd_trainer *tr, const char *path, nd_teacher *T, nd_error *err) {
    const int cols = tr->info.train.cols;
    nd_ckpt_info info;
    memset(&info, 0, sizeof info);
    nd_status st = ND_OK;
    if (tr->rank == 0) st = nd_checkpoint_probe(path, &info, err);
    if (st == ND_OK && tr->rank == 0) st = check_teacher(tr, path, &info, err);
    ND_TRY(nd_train_agree(tr, st, err));
    ND_TRY(nd_comm_bcast_bytes(tr->comm, &info.spec, sizeof info.spec, 0, err));
    ND_TRY(nd_train_agree(tr, nd_model_create(&T->model, &info.spec, tr->cfg.batch, err), err));
    float *mean = nd_buffer_alloc((size_t)cols), *inv_std = nd_buffer_alloc((size_t)cols);
    st = mean && inv_std ? ND_OK : ND_FAIL(err, ND_ERR_NOMEM, "--teacher: cannot allocate %d floats", cols);
    if (st == ND_OK && tr->rank == 0) st = nd_checkpoint_read(path, &T->model, NULL, mean, inv_std, NULL, &info, err);
    st = nd_train_agree(tr, st, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, T->model.param, T->model.num_params, 0, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, mean, (size_t)cols, 0, err);
    if (st == ND_OK) st = nd_comm_bcast_f32(tr->comm, inv_std, (size_t)cols, 0, err);
    const int same = st == ND_OK && !memcmp(mean, tr->norm_mean, sizeof(float) * (size_t)cols) &&
        !memcmp(inv_std, tr->norm_inv_std, sizeof(float) * (size_t)cols);
    if (st == ND_OK && !same) {
        /* x = (raw - mean_s) inv_s, so (raw - mean_t) inv_t = x inv_t / inv_s + (mean_s - mean_t) inv_t */
        T->scale = nd_buffer_alloc((size_t)cols);
        T->shift = nd_buffer_alloc((size_t)cols);
        st = nd_train_agree(tr,
                            T->scale && T->shift ? ND_OK
                                                 : ND_FAIL(err, ND_ERR_NOMEM, "--teacher: cannot allocate its map"),
                            err);
        for (int j = 0; st == ND_OK && j < cols; ++j) {
            T->scale[j] = inv_std[j] / tr->norm_inv_std[j];
            T->shift[j] = (tr->norm_mean[j] - mean[j]) * inv_std[j];
        }
    }
    if (st == ND_OK && tr->rank == 0 && !tr->cfg.quiet) {
        char arch[512];
        nd_arch_format(&info.spec, arch, sizeof arch);
        printf("nndist train: teacher %s: %s, %zu parameters, %s normalization\n", path, arch, T->model.num_weights,
               same ? "the same" : "its own");
    }
    nd_buffer_free(mean);
    nd_buffer_free(inv_std);
    return st;
}

nd_status nd_train_load_teachers(nd_trainer *tr, nd_error *err) {
    const nd_train_config *c = &tr->cfg;
    if (!c->teacher[0]) return ND_OK;
    int n = 1;
    for (const char *p = c->teacher; *p; ++p) n += *p == ',';
    tr->teachers = calloc((size_t)n, sizeof *tr->teachers);
    tr->teacher_x = nd_buffer_alloc((size_t)c->batch * tr->info.train.cols);
    tr->soft = nd_buffer_alloc((size_t)c->batch * tr->info.num_outputs);
    ND_TRY(nd_train_agree(tr,
                          tr->teachers && tr->teacher_x && tr->soft
                              ? ND_OK
                              : ND_FAIL(err, ND_ERR_NOMEM, "--teacher: cannot allocate the distillation buffers"),
                          err));
    const char *p = c->teacher;
    for (int t = 0; t < n; ++t) {
        const char *e = strchr(p, ',');
        char path[ND_PATH_MAX];
        snprintf(path, sizeof path, "%.*s", e ? (int)(e - p) : (int)strlen(p), p);
        tr->num_teachers = t + 1; /* what nd_trainer_free releases */
        ND_TRY(load_teacher(tr, path, &tr->teachers[t], err));
        p = e ? e + 1 : p + strlen(p);
    }
    return ND_OK;
}
