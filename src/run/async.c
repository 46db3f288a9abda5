/* Asynchronous SGD through parameter servers (--mode async) and its bounded
 * staleness variant (--mode ssp).
 *
 * Ranks 0..K-1 are servers, each owning one contiguous slice of the flat
 * parameter arena (and the optimizer state of that slice); the other ranks
 * are workers with a full replica. A worker computes the gradient of its
 * batch on the parameters it holds, sends each slice to its server together
 * with the version of that slice it computed on, and receives the fresh
 * slices back. A server applies every gradient as it arrives with the shared
 * optimizer module, then replies with its current slice.
 *
 * Server 0 also keeps the books: samples applied (an epoch is one training
 * set's worth), staleness statistics, evaluation at each epoch end (after
 * fetching the other servers' slices), the ssp clock bound (it holds back
 * the reply of a worker that is too far ahead) and the end: once the last
 * epoch is reached it answers every worker's next update with "stop"; a
 * stopped worker says goodbye to the other servers, which leave their loop
 * after hearing from every worker. A worker has at most one exchange in
 * flight per server, so nothing is left undelivered.
 *
 * --ema: each server keeps the moving average of its own slice, updated
 * after each update it applies (warmed up by its update count, as sync
 * does by its steps); server 0 gathers the slices with the weights, to
 * evaluate, checkpoint and save it, and every rank gets it at the end.
 *
 * Waiting uses nd_comm_wait_all, which sleeps between polls: a server does
 * not take a core from a worker on the same node. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/arena.h"
#include "train_internal.h"

enum {
    TAG_CTRL = 101,
    TAG_GRAD = 102,
    TAG_REPLY = 103,
    TAG_PARAM = 104,
    TAG_SNAP = 105,
    TAG_SNAP_M = 106,
    TAG_SNAP_V = 107,
    TAG_SNAP_E = 108
};
/* SNAPSHOT: send your slice of the weights; STATE: and of the optimizer state. */
enum { CTRL_UPDATE = 1, CTRL_BYE = 2, CTRL_SNAPSHOT = 3, CTRL_STATE = 4 };
/* Control message, worker (or server 0) to server, as doubles. */
/* CTRL_SIGNAL: a stop signal this worker received or heard of from a
 * server (0: none); server 0 acts on it. */
/* CTRL_NORM: the gradient's norm before clipping, when the worker has it
 * (--clip-norm, or --log-every), else NaN; CTRL_CLIPPED: 1 if clipping
 * changed it. */
enum {
    CTRL_KIND,
    CTRL_VERSION,
    CTRL_SAMPLES,
    CTRL_LOSS,
    CTRL_CORRECT,
    CTRL_SCALE,
    CTRL_SIGNAL,
    CTRL_NORM,
    CTRL_CLIPPED,
    CTRL_LEN
};
/* Reply header, server to worker. REPLY_SIGNAL: a stop signal the server
 * received, passed on by the worker to server 0. */
enum { REPLY_VERSION, REPLY_STOP, REPLY_SIGNAL, REPLY_LEN };

struct nd_async {
    long *slice_off, *slice_len; /* (K) each server's part of the arena */
    /* worker */
    double *ctrl_out;   /* (K x CTRL_LEN) */
    double *reply_in;   /* (K x REPLY_LEN) */
    double *versions;   /* (K) version of each slice this worker holds */
    int heard_signal;   /* a stop signal a server's reply reported */
    double *v_used;     /* (K) versions the gradient being sent was computed on */
    float *spare_param; /* --overlap: (num_params) where fresh slices land */
    float *spare_grad;  /* --overlap: (num_params + ND_GRAD_TAIL) the next gradient */
    nd_request *reqs;   /* (4K) */
    /* server */
    double ctrl_in[CTRL_LEN];
    double *reply_out;      /* (W x REPLY_LEN) */
    float *reply_data;      /* (W x slice length) the slice as sent to each worker */
    nd_request *reply_reqs; /* (2W) sends of reply_out / reply_data in flight */
    long version;           /* updates applied to this server's slice */
    /* server 0 */
    long *clock;       /* (W) updates applied from each worker */
    char *pending;     /* (W) reply held back by the ssp bound */
    char *stopped;     /* (W) told to stop */
    nd_optimizer full; /* server 0 with --checkpoint-dir: the whole arena's optimizer state, gathered */
};

nd_status nd_async_create(nd_trainer *tr, nd_error *err) {
    const int k = tr->num_servers, w = tr->num_workers;
    nd_async *as = calloc(1, sizeof *as);
    if (!as) return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the parameter-server state");
    tr->as = as;
    as->slice_off = calloc((size_t)k, sizeof(long));
    as->slice_len = calloc((size_t)k, sizeof(long));
    as->ctrl_out = calloc((size_t)k * CTRL_LEN, sizeof(double));
    as->reply_in = calloc((size_t)k * REPLY_LEN, sizeof(double));
    as->versions = calloc((size_t)k, sizeof(double));
    as->v_used = calloc((size_t)k, sizeof(double));
    as->reqs = calloc((size_t)4 * k, sizeof(nd_request));
    as->reply_out = calloc((size_t)w * REPLY_LEN, sizeof(double));
    as->reply_reqs = calloc((size_t)2 * w, sizeof(nd_request));
    as->clock = calloc((size_t)w, sizeof(long));
    as->pending = calloc((size_t)w, 1);
    as->stopped = calloc((size_t)w, 1);
    if (!as->slice_off || !as->slice_len || !as->ctrl_out || !as->reply_in || !as->versions || !as->v_used ||
        !as->reqs || !as->reply_out || !as->reply_reqs || !as->clock || !as->pending || !as->stopped)
        return ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate the parameter-server state");
    if (tr->worker_index >= 0 && tr->cfg.overlap) {
        as->spare_param = nd_buffer_alloc(tr->model.num_params);
        as->spare_grad = nd_buffer_alloc(tr->model.num_params + ND_GRAD_TAIL);
        if (!as->spare_param || !as->spare_grad)
            return ND_FAIL(err, ND_ERR_NOMEM, "worker %d: cannot allocate the --overlap buffers", tr->rank);
    }
    if (tr->worker_index < 0) {
        as->reply_data = nd_buffer_alloc((size_t)w * tr->slice.length);
        if (!as->reply_data)
            return ND_FAIL(err, ND_ERR_NOMEM, "server %d: cannot allocate %d reply buffers of %zu floats", tr->rank, w,
                           tr->slice.length);
    }
    for (int s = 0; s < k; ++s) nd_shard_range((long)tr->model.num_params, s, k, &as->slice_off[s], &as->slice_len[s]);
    /* Versions continue from a resumed checkpoint (every server applies
     * every update, so each slice's version is the update count). */
    as->version = tr->state.step;
    for (int j = 0; j < k; ++j) as->versions[j] = (double)tr->state.step;
    if (tr->rank == 0 && tr->cfg.checkpoint_dir[0]) {
        as->full = tr->opt;
        as->full.n = tr->model.num_params;
        as->full.m = tr->opt.m ? nd_buffer_alloc(tr->model.num_params) : NULL;
        as->full.v = tr->opt.v ? nd_buffer_alloc(tr->model.num_params) : NULL;
        if ((tr->opt.m && !as->full.m) || (tr->opt.v && !as->full.v))
            return ND_FAIL(err, ND_ERR_NOMEM, "server 0: cannot allocate the optimizer state for checkpoints");
    }
    return ND_OK;
}

void nd_async_free(nd_trainer *tr) {
    nd_async *as = tr->as;
    if (!as) return;
    free(as->slice_off), free(as->slice_len), free(as->ctrl_out), free(as->reply_in);
    free(as->versions), free(as->reqs), free(as->reply_out), free(as->reply_reqs), free(as->clock);
    nd_buffer_free(as->reply_data);
    free(as->v_used);
    nd_buffer_free(as->full.m);
    nd_buffer_free(as->full.v);
    /* Swapped with the model's by pointer, but each pair is the same kind
     * of buffer: the model frees the two it holds, we free these two. */
    nd_buffer_free(as->spare_param);
    nd_buffer_free(as->spare_grad);
    free(as->pending), free(as->stopped);
    free(as);
    tr->as = NULL;
}

/* This process's stop signal (0: none). */
static int pending_signal(const nd_trainer *tr) { return tr->stop_request ? (int)*tr->stop_request : 0; }

/* ---- worker ---------------------------------------------------------------- */

/* Starts the exchange of the gradient in grad (computed on parameters of
 * versions v_used) with every server; fresh slices will land in into. */
static nd_status worker_start_exchange(nd_trainer *tr, const float *grad, float *into, float scale,
                                       const nd_clip_figures *clip, nd_error *err) {
    nd_async *as = tr->as;
    const nd_model *m = &tr->model;
    for (int j = 0; j < tr->num_servers; ++j) {
        double *c = as->ctrl_out + (size_t)j * CTRL_LEN;
        c[CTRL_KIND] = CTRL_UPDATE;
        c[CTRL_VERSION] = as->v_used[j];
        c[CTRL_SAMPLES] = tr->cfg.batch;
        c[CTRL_LOSS] = grad[m->num_params + ND_TAIL_LOSS];
        c[CTRL_CORRECT] = grad[m->num_params + ND_TAIL_CORRECT];
        c[CTRL_SCALE] = scale;
        c[CTRL_NORM] = clip->before;
        c[CTRL_CLIPPED] = clip->clipped;
        c[CTRL_SIGNAL] = pending_signal(tr) ? pending_signal(tr) : as->heard_signal;
        const size_t off = (size_t)as->slice_off[j], len = (size_t)as->slice_len[j];
        nd_request *r = as->reqs + 4 * j;
        /* Receives first, so the server's reply never waits for a buffer. */
        ND_TRY(nd_comm_irecv_f64(tr->comm, as->reply_in + (size_t)j * REPLY_LEN, REPLY_LEN, j, TAG_REPLY, &r[0], err));
        ND_TRY(nd_comm_irecv_f32(tr->comm, into + off, len, j, TAG_PARAM, &r[1], err));
        ND_TRY(nd_comm_isend_f64(tr->comm, c, CTRL_LEN, j, TAG_CTRL, &r[2], err));
        ND_TRY(nd_comm_isend_f32(tr->comm, grad + off, len, j, TAG_GRAD, &r[3], err));
    }
    return ND_OK;
}

/* Completes the exchange; returns 1 in *stop when server 0 ended the run. */
static nd_status worker_finish_exchange(nd_trainer *tr, int *stop, nd_error *err) {
    nd_async *as = tr->as;
    if (nd_comm_wait_all(as->reqs, 4 * tr->num_servers, NULL, err) != ND_OK)
        return nd_error_prefix(err, "update %ld: the parameter-server exchange: ", tr->state.step);
    for (int j = 0; j < tr->num_servers; ++j) {
        as->versions[j] = as->reply_in[(size_t)j * REPLY_LEN + REPLY_VERSION];
        const int sig = (int)as->reply_in[(size_t)j * REPLY_LEN + REPLY_SIGNAL];
        if (sig) as->heard_signal = sig;
    }
    *stop = as->reply_in[REPLY_STOP] != 0.0; /* server 0 decides the end */
    return ND_OK;
}

static void swap_floats(float **a, float **b) {
    float *t = *a;
    *a = *b;
    *b = t;
}

/* Plain: compute, exchange, repeat. With --overlap the next gradient is
 * computed while the previous exchange is in flight, on the parameters the
 * worker already has (one exchange older): the exchange time is hidden at
 * the price of one more step of staleness. The double buffers are swapped
 * by pointer, never copied. */
static nd_status worker_loop(nd_trainer *tr, nd_error *err) {
    nd_async *as = tr->as;
    nd_model *m = &tr->model;
    const int k = tr->num_servers, overlap = tr->cfg.overlap;
    long s = tr->steps_per_epoch;
    int pass = 0, in_flight = 0, stop = 0;
    while (!stop) {
        if (s == tr->steps_per_epoch) {
            nd_train_order_pass(tr, ++pass);
            s = 0;
        }
        nd_clock clock; /* (phases are a sync figure) */
        nd_clock_start(&clock, tr->state.phase);
        const double t0 = clock.t0;
        nd_train_compute_gradient(tr, &tr->train, tr->order + (s++) * tr->cfg.batch, pass, &clock);
        nd_straggle_sleep(tr, clock.t0 - t0);
        char what[160];
        if (nd_guard_find(&tr->model, 0, NAN, what, sizeof what)) /* caught before it reaches a server */
            return ND_FAIL(err, ND_ERR_DATA, "this worker's update %ld: %s: stopped before sending it",
                           tr->state.step + 1, what);
        /* Batch norm: the running statistics travel as deltas against the
         * parameters this worker holds; the servers add them. */
        if (m->num_trainable < m->num_params)
            nd_model_running_deltas(m, m->param, m->grad, tr->cfg.batch, tr->cfg.bn_momentum);
        nd_clip_figures clip;
        const float scale = nd_penalty_scale_all(&tr->penalty, &tr->model, tr->cfg.batch, tr->cfg.log_every > 0, &clip);
        memcpy(as->v_used, as->versions, sizeof(double) * (size_t)k);
        if (in_flight) {
            ND_TRY(worker_finish_exchange(tr, &stop, err));
            swap_floats(&m->param, &as->spare_param); /* the fresh slices */
            if (stop) break;                          /* this last gradient is dropped */
        }
        ND_TRY(worker_start_exchange(tr, m->grad, overlap ? as->spare_param : m->param, scale, &clip, err));
        tr->state.step += 1; /* updates this worker sent */
        if (overlap) {
            swap_floats(&m->grad, &as->spare_grad); /* the next gradient goes to the other buffer */
            in_flight = 1;
        } else {
            ND_TRY(worker_finish_exchange(tr, &stop, err));
        }
    }
    for (int j = 1; j < k; ++j) {
        double *c = as->ctrl_out + (size_t)j * CTRL_LEN;
        c[CTRL_KIND] = CTRL_BYE;
        ND_TRY(nd_comm_isend_f64(tr->comm, c, CTRL_LEN, j, TAG_CTRL, &as->reqs[j], err));
    }
    return nd_comm_wait_all(as->reqs + 1, k - 1, NULL, err);
}

/* ---- server ------------------------------------------------------------- */

/* Receives the gradient slice of the update announced in ctrl_in and applies
 * it; returns its staleness (versions applied since the worker's copy). */
/* Receives and applies one gradient slice. Server 0 passes `watch` (else
 * NULL) for the epoch's health figures on its slice, and `norm` for the
 * norm of the slice it applies (or NULL). */
static nd_status server_apply(nd_trainer *tr, int src, long *staleness, nd_epoch_stats *watch, double *norm,
                              nd_error *err) {
    nd_async *as = tr->as;
    float *g = tr->model.grad + tr->slice.offset, *p = tr->model.param + tr->slice.offset;
    const size_t lo = tr->slice.offset, end = lo + tr->slice.length;
    const size_t hi = end < tr->model.num_trainable ? end : tr->model.num_trainable; /* its gradient's end */
    nd_request r = {0};
    ND_TRY(nd_comm_irecv_f32(tr->comm, g, tr->slice.length, src, TAG_GRAD, &r, err));
    ND_TRY(nd_comm_wait_all(&r, 1, NULL, err));
    const float applied = (float)as->ctrl_in[CTRL_SCALE];
    if (norm) *norm = hi > lo ? nd_grad_norm(g, hi - lo, applied) : 0.0;
    if (watch) {
        /* What the worker sent is after its penalties and clipping. */
        nd_monitor_gradient(&tr->model, tr->model.grad, applied, lo, hi, watch);
        nd_monitor_save_weights(tr, lo, hi);
    }
    const long stale = as->version - (long)as->ctrl_in[CTRL_VERSION];
    float lr = nd_lr_at(&tr->lr, as->version);
    if (tr->cfg.staleness_lr && stale > 1) lr /= (float)stale; /* Zhang et al. 2016 */
    /* Momentum schedule in epochs of applied updates (one worker batch each). */
    tr->opt.cfg.momentum = nd_momentum_at(tr->cfg.momentum, tr->cfg.momentum_final, tr->cfg.momentum_epochs,
                                          (double)as->version * tr->cfg.batch / (double)tr->info.train.rows);
    /* Running statistics in this slice: added as they are, then zero for the optimizer. */
    nd_model_apply_running(&tr->model, tr->model.param, tr->model.grad, tr->slice.offset,
                           tr->slice.offset + tr->slice.length);
    nd_train_update(tr, p, g, applied, lr);
    if (watch) nd_monitor_after(tr, watch, lo, hi);
    as->version += 1;
    if (tr->ema) { /* this slice's average, after this server's update t = version */
        const float d = nd_ema_decay(tr->cfg.ema, as->version), keep = 1.0f - d;
        float *restrict a = tr->ema + tr->slice.offset;
        const float *restrict w = p;
        for (size_t i = 0; i < tr->slice.length; ++i) a[i] = d * a[i] + keep * w[i];
    }
    *staleness = stale;
    return ND_OK;
}

/* Sends this server's version and slice to worker rank dest, from a copy
 * kept for that worker: the server goes on applying other workers' updates
 * while this one collects its reply, instead of waiting for it. The copy's
 * previous send is long complete (a worker sends its next update only after
 * it has received every reply), so the wait below does not block. */
static nd_status server_reply(nd_trainer *tr, int dest, int stop, nd_error *err) {
    nd_async *as = tr->as;
    const int wi = dest - tr->num_servers;
    nd_request *r = as->reply_reqs + 2 * wi;
    ND_TRY(nd_comm_wait_all(r, 2, NULL, err));
    double *h = as->reply_out + (size_t)wi * REPLY_LEN;
    float *copy = as->reply_data + (size_t)wi * tr->slice.length;
    h[REPLY_VERSION] = (double)as->version;
    h[REPLY_STOP] = stop;
    h[REPLY_SIGNAL] = pending_signal(tr);
    memcpy(copy, tr->model.param + tr->slice.offset, sizeof(float) * tr->slice.length);
    ND_TRY(nd_comm_isend_f64(tr->comm, h, REPLY_LEN, dest, TAG_REPLY, &r[0], err));
    return nd_comm_isend_f32(tr->comm, copy, tr->slice.length, dest, TAG_PARAM, &r[1], err);
}

static nd_status receive_ctrl(nd_trainer *tr, int *src, nd_error *err) {
    nd_request r = {0};
    ND_TRY(nd_comm_irecv_f64(tr->comm, tr->as->ctrl_in, CTRL_LEN, ND_ANY_SOURCE, TAG_CTRL, &r, err));
    if (nd_comm_wait_all(&r, 1, src, err) != ND_OK)
        return nd_error_prefix(err, "server, after update %ld: waiting for the next gradient: ", tr->as->version);
    return ND_OK;
}

/* Sends this server's slice and its average (--ema), and with CTRL_STATE
 * its optimizer state, to server 0. */
static nd_status send_snapshot(nd_trainer *tr, int dest, int kind, nd_error *err) {
    nd_request r[4] = {{0}};
    const size_t len = tr->slice.length;
    ND_TRY(nd_comm_isend_f32(tr->comm, tr->model.param + tr->slice.offset, len, dest, TAG_SNAP, &r[0], err));
    if (tr->ema) ND_TRY(nd_comm_isend_f32(tr->comm, tr->ema + tr->slice.offset, len, dest, TAG_SNAP_E, &r[3], err));
    if (kind == CTRL_STATE && tr->opt.m)
        ND_TRY(nd_comm_isend_f32(tr->comm, tr->opt.m, len, dest, TAG_SNAP_M, &r[1], err));
    if (kind == CTRL_STATE && tr->opt.v)
        ND_TRY(nd_comm_isend_f32(tr->comm, tr->opt.v, len, dest, TAG_SNAP_V, &r[2], err));
    return nd_comm_wait_all(r, 4, NULL, err);
}

/* Servers 1..K-1: apply, reply, hand out snapshots, until every worker left.
 * A snapshot is sent once this server has applied at least as many updates
 * as server 0 had (the update that completed server 0's epoch may still be
 * on its way here), so a checkpoint never mixes older slices in. */
static nd_status server_loop(nd_trainer *tr, nd_error *err) {
    int byes = 0, snap_src = -1, snap_kind = 0;
    long snap_version = 0;
    while (byes < tr->num_workers || snap_src >= 0) {
        int src = -1;
        ND_TRY(receive_ctrl(tr, &src, err));
        const int kind = (int)tr->as->ctrl_in[CTRL_KIND];
        if (kind == CTRL_UPDATE) {
            long stale;
            ND_TRY(server_apply(tr, src, &stale, NULL, NULL, err));
            ND_TRY(server_reply(tr, src, 0, err));
            tr->state.step = tr->as->version;
        } else if (kind == CTRL_BYE) {
            ++byes;
        } else if (kind == CTRL_SNAPSHOT || kind == CTRL_STATE) {
            snap_src = src, snap_kind = kind, snap_version = (long)tr->as->ctrl_in[CTRL_VERSION];
        } else {
            return ND_FAIL(err, ND_ERR_STATE, "server %d: unknown message kind %d from rank %d", tr->rank, kind, src);
        }
        if (snap_src >= 0 && tr->as->version >= snap_version) {
            ND_TRY(send_snapshot(tr, snap_src, snap_kind, err));
            snap_src = -1;
        }
    }
    return nd_comm_wait_all(tr->as->reply_reqs, 2 * tr->num_workers, NULL, err);
}

/* Server 0: fetch the other servers' slices into model.param (and their
 * averages into tr->ema), so the model it evaluates is the servers'
 * current one; with `state`, also their optimizer state into as->full
 * (and its own slice). */
static nd_status gather(nd_trainer *tr, int state, nd_error *err) {
    nd_async *as = tr->as;
    if (state) {
        if (as->full.m) memcpy(as->full.m, tr->opt.m, sizeof(float) * tr->slice.length);
        if (as->full.v) memcpy(as->full.v, tr->opt.v, sizeof(float) * tr->slice.length);
        as->full.step = tr->opt.step;
    }
    for (int j = 1; j < tr->num_servers; ++j) {
        double *c = as->ctrl_out + (size_t)j * CTRL_LEN;
        c[CTRL_KIND] = state ? CTRL_STATE : CTRL_SNAPSHOT;
        c[CTRL_VERSION] = (double)as->version; /* wait until it has applied as many */
        const size_t off = (size_t)as->slice_off[j], len = (size_t)as->slice_len[j];
        nd_request r[5] = {{0}};
        ND_TRY(nd_comm_irecv_f32(tr->comm, tr->model.param + off, len, j, TAG_SNAP, &r[0], err));
        if (tr->ema) ND_TRY(nd_comm_irecv_f32(tr->comm, tr->ema + off, len, j, TAG_SNAP_E, &r[4], err));
        if (state && as->full.m) ND_TRY(nd_comm_irecv_f32(tr->comm, as->full.m + off, len, j, TAG_SNAP_M, &r[1], err));
        if (state && as->full.v) ND_TRY(nd_comm_irecv_f32(tr->comm, as->full.v + off, len, j, TAG_SNAP_V, &r[2], err));
        ND_TRY(nd_comm_isend_f64(tr->comm, c, CTRL_LEN, j, TAG_CTRL, &r[3], err));
        ND_TRY(nd_comm_wait_all(r, 5, NULL, err));
    }
    return ND_OK;
}

/* Server 0: a checkpoint of the servers' current model and state (epoch
 * in progress, samples of it applied, their loss and hits). */
static nd_status server0_checkpoint(nd_trainer *tr, int epoch, double samples, double loss, double correct,
                                    nd_error *err) {
    ND_TRY(gather(tr, 1, err));
    return nd_train_checkpoint_write(tr, &tr->as->full, epoch, (long)(samples / tr->cfg.batch), loss, correct, err);
}

/* Server 0, on a stop signal: records it and checkpoints the servers' model
 * as it stands (epoch in progress, its updates applied and their sums). */
static nd_status nd_async_stop(nd_trainer *tr, int sig, int epoch, long epoch_step, double loss, double correct,
                               nd_error *err) {
    nd_stop_record(tr, sig, epoch, epoch_step, loss, correct);
    if (tr->cfg.checkpoint_dir[0])
        ND_TRY(server0_checkpoint(tr, epoch, (double)epoch_step * tr->cfg.batch, loss, correct, err));
    return ND_OK;
}

/* Server 0 alone: the gathered model on its whole /test and /val, and
 * the gathered average's (--ema) by swapping the parameter pointer. */
static void evaluate_local(nd_trainer *tr, nd_epoch_stats *e) {
    double sums[3];
    e->ema_test_acc = e->ema_val_acc = NAN;
    for (int avg = 0; avg <= (tr->ema != NULL); ++avg) {
        float *raw = tr->model.param;
        if (avg) tr->model.param = tr->ema;
        if (tr->info.has_test) {
            nd_train_eval_sums(tr, &tr->test, sums);
            const double m = nd_loss_metric(tr->loss, sums[1], sums[2], tr->info.num_outputs);
            if (avg) e->ema_test_acc = m;
            else e->test_loss = sums[0] / sums[2], e->test_acc = m;
        }
        if (tr->info.has_val) {
            nd_train_eval_sums(tr, &tr->val, sums);
            const double m = nd_loss_metric(tr->loss, sums[1], sums[2], tr->info.num_outputs);
            if (avg) e->ema_val_acc = m;
            else e->val_loss = sums[0] / sums[2], e->val_acc = m;
        }
        tr->model.param = raw;
    }
    if (tr->train_eval_rows > 0) {
        nd_train_eval_sums(tr, &tr->train_eval, sums);
        e->train_eval_loss = sums[0] / sums[2];
        e->train_eval_acc = nd_loss_metric(tr->loss, sums[1], sums[2], tr->info.num_outputs);
    }
}

static long min_active_clock(const nd_async *as, int w) {
    long lo = -1;
    for (int i = 0; i < w; ++i)
        if (!as->stopped[i] && (lo < 0 || as->clock[i] < lo)) lo = as->clock[i];
    return lo;
}

/* Per-epoch books of server 0. */
typedef struct {
    double loss, correct, samples, stale_sum;
    double fresh; /* samples applied by this process (a resumed epoch started earlier) */
    long stale_max, hist[ND_STALENESS_BUCKETS];
    double t0, eval_seconds;
    long clip_steps, updates; /* updates clipping changed (the workers' word), of those applied */
} epoch_books;

static nd_status server0_loop(nd_trainer *tr, nd_error *err) {
    nd_async *as = tr->as;
    const int w = tr->num_workers, k = tr->num_servers;
    const int ssp = tr->plan.ssp;
    const long bound = tr->cfg.max_staleness;
    const double epoch_rows = (double)tr->info.train.rows;
    const long every = tr->cfg.checkpoint_dir[0] ? tr->cfg.checkpoint_every : 0;
    /* A resumed run continues the books of its checkpoint. */
    int epoch = tr->state.start_epoch - 1, stopping = epoch >= tr->cfg.epochs, stopped = 0;
    double total = epoch * epoch_rows + (double)tr->state.start_epoch_step * tr->cfg.batch;
    double next_end = (epoch + 1) * epoch_rows, eval_total = 0.0;
    epoch_books b = {0};
    nd_epoch_stats health = {0}; /* the health figures of the epoch's last update */
    b.samples = (double)tr->state.start_epoch_step * tr->cfg.batch;
    b.loss = tr->state.start_loss_sum;
    b.correct = tr->state.start_correct;
    const double start = nd_comm_time();
    b.t0 = start;
    while (stopped < w) {
        int src = -1;
        ND_TRY(receive_ctrl(tr, &src, err));
        const int wi = src - k;
        if ((int)as->ctrl_in[CTRL_KIND] != CTRL_UPDATE || wi < 0 || wi >= w)
            return ND_FAIL(err, ND_ERR_STATE, "server 0: unexpected message from rank %d", src);
        long stale;
        /* The epoch's last update, and every --log-every'th, are watched. */
        const int ends = !stopping && total + as->ctrl_in[CTRL_SAMPLES] >= next_end;
        const int logged = tr->cfg.log_every > 0 && (as->version + 1) % tr->cfg.log_every == 0;
        const double worker_norm = as->ctrl_in[CTRL_NORM];
        double slice_norm = NAN;
        if (ends) health = (nd_epoch_stats){0};
        ND_TRY(server_apply(tr, src, &stale, ends ? &health : NULL, ends || logged ? &slice_norm : NULL, err));
        b.clip_steps += as->ctrl_in[CTRL_CLIPPED] != 0.0;
        b.updates += 1;
        /* The norm before clipping: the worker's, else (no clipping) the applied slice's. */
        const int unclipped = tr->cfg.clip_norm <= 0 && tr->cfg.clip_value <= 0;
        const double norm_before = isfinite(worker_norm) ? worker_norm : unclipped ? slice_norm : NAN;
        if (ends) {
            health.grad_norm = norm_before;
            health.grad_norm_clipped = slice_norm;
            health.grad_norm_slice = k > 1 && !isfinite(worker_norm) && unclipped;
        }
        if (logged)
            nd_train_print_step(tr, epoch + 1, as->version, as->ctrl_in[CTRL_LOSS] / as->ctrl_in[CTRL_SAMPLES],
                                nd_lr_at(&tr->lr, as->version - 1), norm_before);
        as->clock[wi] += 1;
        total += as->ctrl_in[CTRL_SAMPLES];
        b.samples += as->ctrl_in[CTRL_SAMPLES];
        b.fresh += as->ctrl_in[CTRL_SAMPLES];
        b.loss += as->ctrl_in[CTRL_LOSS];
        b.correct += as->ctrl_in[CTRL_CORRECT];
        b.stale_sum += (double)stale;
        if (stale > b.stale_max) b.stale_max = stale;
        if (stale > tr->state.staleness_max) tr->state.staleness_max = stale;
        b.hist[stale < ND_STALENESS_BUCKETS - 1 ? stale : ND_STALENESS_BUCKETS - 1] += 1;
        tr->state.step = as->version;
        const int sig = pending_signal(tr) ? pending_signal(tr) : (int)as->ctrl_in[CTRL_SIGNAL];
        if (sig && !stopping) {
            /* A signal on some rank: checkpoint the servers' model now, then
             * every worker hears "stop" at its next reply. */
            const long done = (long)(b.samples / tr->cfg.batch);
            ND_TRY(nd_async_stop(tr, sig, epoch + 1, done, b.loss, b.correct, err));
            stopping = 1;
        }
        if (every > 0 && as->version % every == 0 && !(total >= next_end) && !stopping) {
            const double c0 = nd_comm_time();
            ND_TRY(server0_checkpoint(tr, epoch + 1, b.samples, b.loss, b.correct, err));
            b.eval_seconds += nd_comm_time() - c0; /* checkpoint time is not training time */
        }

        if (!stopping && total >= next_end) {
            /* An epoch's worth applied: evaluate the servers' model. */
            const double now = nd_comm_time();
            nd_epoch_stats e = health;
            e.epoch = ++epoch;
            e.clip_steps = b.clip_steps;
            e.clip_of = b.updates;
            e.train_loss = b.loss / b.samples;
            e.train_acc = nd_loss_metric(tr->loss, b.correct, b.samples, tr->info.num_outputs);
            e.seconds = now - b.t0 - b.eval_seconds;
            e.samples_per_s = b.fresh / e.seconds;
            e.lr = nd_lr_at(&tr->lr, as->version - 1);
            e.has_staleness = 1;
            e.staleness_mean = b.stale_sum / (b.fresh / tr->cfg.batch);
            e.staleness_max = b.stale_max;
            memcpy(e.staleness_hist, b.hist, sizeof b.hist);
            e.test_loss = e.test_acc = e.val_loss = e.val_acc = e.train_eval_loss = e.train_eval_acc = NAN;
            ND_TRY(gather(tr, 0, err));
            evaluate_local(tr, &e);
            tr->state.last = e;
            nd_report_progress_end(&tr->report);
            nd_train_print_epoch(tr, &e);
            if (tr->cfg.checkpoint_dir[0]) ND_TRY(server0_checkpoint(tr, epoch + 1, 0.0, 0.0, 0.0, err));
            const double after = nd_comm_time();
            eval_total += after - now;
            b = (epoch_books){0};
            b.t0 = after;
            next_end += epoch_rows;
            if (epoch == tr->cfg.epochs) stopping = 1;
        } else if (tr->report.active) {
            const double now = nd_comm_time(), el = now - b.t0 - b.eval_seconds;
            const long steps = (long)(epoch_rows / tr->cfg.batch);
            const long done = (long)(b.samples / tr->cfg.batch);
            nd_report_progress(&tr->report, now, epoch + 1, tr->cfg.epochs, done < steps ? done : steps, steps,
                               b.loss / b.samples, b.fresh / el, el / b.fresh * (epoch_rows - b.samples));
        }

        if (stopping) {
            /* Everyone still out gets "stop" at its next reply, held ones now. */
            for (int i = 0; i < w; ++i)
                if (!as->stopped[i] && (i == wi || as->pending[i])) {
                    ND_TRY(server_reply(tr, k + i, 1, err));
                    as->stopped[i] = 1;
                    as->pending[i] = 0;
                    ++stopped;
                }
            continue;
        }
        if (ssp && as->clock[wi] - min_active_clock(as, w) > bound) as->pending[wi] = 1;
        else ND_TRY(server_reply(tr, src, 0, err));
        if (ssp) {
            const long lo = min_active_clock(as, w);
            for (int i = 0; i < w; ++i)
                if (as->pending[i] && as->clock[i] - lo <= bound) {
                    as->pending[i] = 0;
                    ND_TRY(server_reply(tr, k + i, 0, err));
                }
        }
    }
    tr->state.samples_seen = (long)total;
    tr->state.train_seconds = nd_comm_time() - start - eval_total;
    return nd_comm_wait_all(as->reply_reqs, 2 * w, NULL, err);
}

nd_status nd_async_fit(nd_trainer *tr, nd_error *err) {
    nd_async *as = tr->as;
    ND_TRY(nd_comm_barrier(tr->comm, err));
    nd_status st;
    if (tr->rank == 0) st = server0_loop(tr, err);
    else if (tr->worker_index < 0) st = server_loop(tr, err);
    else st = worker_loop(tr, err);
    if (st != ND_OK) return st; /* the caller ends the job: peers may be mid-exchange */
    /* Every rank takes the servers' final slices; server 0 evaluates them. */
    for (int j = 0; j < tr->num_servers; ++j) {
        ND_TRY(nd_comm_bcast_f32(tr->comm, tr->model.param + as->slice_off[j], (size_t)as->slice_len[j], j, err));
        if (tr->ema) ND_TRY(nd_comm_bcast_f32(tr->comm, tr->ema + as->slice_off[j], (size_t)as->slice_len[j], j, err));
    }
    /* The final parameters include the (at most W-1) updates that were in
     * flight when the last epoch ended: evaluate them for the summary (not
     * after a stop signal: the job is to end soon). */
    const int stopped = tr->state.status == ND_RUN_STOPPED_BY_SIGNAL;
    if (tr->rank == 0 && !stopped) evaluate_local(tr, &tr->state.last);
    double t[13] = {tr->state.train_seconds,           (double)tr->state.samples_seen, tr->state.last.test_loss,
                    tr->state.last.test_acc,           tr->state.last.val_loss,        tr->state.last.val_acc,
                    (double)tr->state.staleness_max,   (double)tr->state.stop_signal,  (double)tr->state.stop_epoch,
                    (double)tr->state.stop_epoch_step, (double)tr->state.stop_step,    tr->state.last.ema_test_acc,
                    tr->state.last.ema_val_acc};
    ND_TRY(nd_comm_bcast_f64(tr->comm, t, 13, 0, err));
    tr->state.last.ema_test_acc = t[11], tr->state.last.ema_val_acc = t[12];
    tr->state.staleness_max = (long)t[6];
    tr->state.train_seconds = t[0];
    tr->state.samples_seen = (long)t[1];
    tr->state.last.test_loss = t[2], tr->state.last.test_acc = t[3], tr->state.last.val_loss = t[4],
    tr->state.last.val_acc = t[5];
    tr->state.stop_signal = (int)t[7], tr->state.stop_epoch = (int)t[8], tr->state.stop_epoch_step = (long)t[9];
    tr->state.stop_step = (long)t[10];
    if (tr->state.stop_signal) {
        tr->state.status = ND_RUN_STOPPED_BY_SIGNAL; /* server 0 decided it for every rank */
        return ND_OK;
    }
    tr->state.status = ND_RUN_COMPLETED;
    nd_train_print_done(tr);
    return ND_OK;
}
