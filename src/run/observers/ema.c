/* --ema: a moving average of the weights (Polyak), updated after every
 * step and evaluated after every epoch on /val and /test. */
#include <math.h>

#include "../train_internal.h"

static bool wanted(const nd_trainer *tr) { return tr->ema != NULL; }

/* The decay after `updates` updates: min(decay, (1 + t) / (10 + t)), as
 * TensorFlow's ExponentialMovingAverage with num_updates, so that early
 * on the average follows the weights instead of staying near their
 * initial values (a 0.999 average of a 2000-step run is otherwise half
 * initialization). A function of the step: exact across a resume. */
float nd_ema_decay(float decay, long updates) {
    const float warm = (float)(1.0 + (double)updates) / (float)(10.0 + (double)updates);
    return warm < decay ? warm : decay;
}

static nd_status after_step(nd_trainer *tr, const nd_step_view *v, nd_error *err) {
    (void)v, (void)err;
    const float d = nd_ema_decay(tr->cfg.ema, tr->state.step), keep = 1.0f - d;
    float *restrict a = tr->ema;
    const float *restrict p = tr->model.param;
    /* A frozen base's average is its value (d a + (1 - d) a could move it by an ulp). */
    for (size_t i = tr->model.frozen_end; i < tr->model.num_params; ++i) a[i] = d * a[i] + keep * p[i];
    return ND_OK;
}

/* Collective: the model's parameter pointer is swapped, nothing is copied. */
static nd_status after_epoch(nd_trainer *tr, nd_epoch_stats *e, int *stop, nd_error *err) {
    (void)stop;
    float *raw = tr->model.param;
    double loss;
    nd_status st = ND_OK;
    tr->model.param = tr->ema;
    if (tr->info.has_val) st = nd_trainer_evaluate(tr, &tr->val, &loss, &e->ema_val_acc, err);
    if (st == ND_OK && tr->info.has_test) st = nd_trainer_evaluate(tr, &tr->test, &loss, &e->ema_test_acc, err);
    tr->model.param = raw;
    return st;
}

const nd_observer_part nd_observer_ema = {.name = "ema",
                                          .wanted = wanted,
                                          .after_step = after_step,
                                          .after_epoch = after_epoch};
