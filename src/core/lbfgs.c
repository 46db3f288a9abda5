/* L-BFGS as torch/optim/lbfgs.py (1.13): the same iteration, history
 * update, initial step, line search and stopping tests, in the same order,
 * so that the same problem takes the same path up to rounding. */
#include "nndist/lbfgs.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "nndist/arena.h"

const char *const nd_line_search_names[] =
    {[ND_LINE_SEARCH_STRONG_WOLFE] = "strong_wolfe", [ND_LINE_SEARCH_NONE] = "none", NULL};
const char *const nd_lbfgs_end_names[] = {[ND_LBFGS_MAX_ITER] = "max-iter",
                                          [ND_LBFGS_MAX_EVAL] = "max-eval",
                                          [ND_LBFGS_OPTIMAL] = "optimal",
                                          [ND_LBFGS_NO_DESCENT] = "no-descent",
                                          [ND_LBFGS_NO_PROGRESS] = "no-progress",
                                          [ND_LBFGS_STOPPED] = "stopped",
                                          NULL};

nd_lbfgs_config nd_lbfgs_defaults(void) {
    return (nd_lbfgs_config){.lr = 1.0,
                             .max_iter = 20,
                             .max_eval = 0,
                             .history = 100,
                             .tolerance_grad = 1e-7,
                             .tolerance_change = 1e-9,
                             .line_search = ND_LINE_SEARCH_STRONG_WOLFE,
                             .c1 = 1e-4,
                             .c2 = 0.9,
                             .max_ls = 25};
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += (double)a[i] * b[i];
    return s;
}

static double max_abs(const float *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; ++i) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double sum_abs(const float *a, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += fabs(a[i]);
    return s;
}

/* Rows of the history and work vectors start on 16-float boundaries. */
static size_t stride_of(size_t n) { return (n + 15) / 16 * 16; }

nd_status nd_lbfgs_create(nd_lbfgs *lb, const nd_lbfgs_config *cfg, size_t n, nd_error *err) {
    memset(lb, 0, sizeof *lb);
    lb->cfg = *cfg;
    lb->n = n;
    const size_t m = (size_t)cfg->history, st = stride_of(n);
    lb->buf = nd_buffer_alloc((2 * m + 8) * st);
    lb->rho = nd_buffer_alloc_f64(2 * m);
    if (!lb->buf || !lb->rho) {
        nd_lbfgs_destroy(lb);
        return ND_FAIL(err, ND_ERR_NOMEM, "L-BFGS: cannot allocate %zu pairs of %zu floats (--lbfgs-history)", m, n);
    }
    lb->al = lb->rho + m;
    lb->s = lb->buf;
    lb->y = lb->s + m * st;
    float *v = lb->y + m * st;
    float **work[] = {&lb->d, &lb->g, &lb->prev_g, &lb->x0, &lb->g_new, &lb->g_prev, &lb->g_br[0], &lb->g_br[1]};
    for (size_t i = 0; i < sizeof work / sizeof work[0]; ++i) *work[i] = v + i * st;
    lb->h_diag = 1.0;
    return ND_OK;
}

void nd_lbfgs_destroy(nd_lbfgs *lb) {
    nd_buffer_free(lb->buf);
    nd_buffer_free(lb->rho);
    memset(lb, 0, sizeof *lb);
}

double nd_lbfgs_state_floats(const nd_lbfgs *lb) { return (2.0 * lb->cfg.history + 8.0) * (double)stride_of(lb->n); }

/* The row the next pair goes to, dropping the oldest when full. */
static size_t next_row(nd_lbfgs *lb) {
    const int m = lb->cfg.history;
    if (lb->pairs < m) return (size_t)((lb->head + lb->pairs++) % m);
    const int row = lb->head;
    lb->head = (lb->head + 1) % m;
    return (size_t)row;
}

int nd_lbfgs_push(nd_lbfgs *lb, const float *s, const float *y) {
    const size_t n = lb->n, st = stride_of(n);
    const double ys = dot(y, s, n);
    if (!(ys > 1e-10)) return 0;
    const size_t row = next_row(lb);
    memcpy(lb->s + row * st, s, sizeof(float) * n);
    memcpy(lb->y + row * st, y, sizeof(float) * n);
    lb->rho[row] = 1.0 / ys;
    lb->h_diag = ys / dot(y, y, n);
    return 1;
}

/* The pair of the latest iteration: y = g - prev_g, s = t d, written in
 * place when it is kept (y.s > 1e-10), so a rejected pair costs no copy. */
static void push_latest(nd_lbfgs *lb) {
    const size_t n = lb->n, st = stride_of(n);
    const float t = (float)lb->t;
    double ys = 0.0, yy = 0.0;
    for (size_t i = 0; i < n; ++i) {
        const float yi = lb->g[i] - lb->prev_g[i], si = lb->d[i] * t;
        ys += (double)yi * si;
        yy += (double)yi * yi;
    }
    if (!(ys > 1e-10)) return;
    const size_t row = next_row(lb);
    float *s = lb->s + row * st, *y = lb->y + row * st;
    for (size_t i = 0; i < n; ++i) y[i] = lb->g[i] - lb->prev_g[i], s[i] = lb->d[i] * t;
    lb->rho[row] = 1.0 / ys;
    lb->h_diag = ys / yy;
}

void nd_lbfgs_direction(nd_lbfgs *lb, const float *g, float *dir) {
    const size_t n = lb->n, st = stride_of(n);
    const int m = lb->cfg.history;
    for (size_t i = 0; i < n; ++i) dir[i] = -g[i];
    for (int k = lb->pairs - 1; k >= 0; --k) {
        const size_t row = (size_t)((lb->head + k) % m);
        const float *y = lb->y + row * st;
        lb->al[k] = dot(lb->s + row * st, dir, n) * lb->rho[row];
        const float a = (float)lb->al[k];
        for (size_t i = 0; i < n; ++i) dir[i] -= a * y[i];
    }
    const float h = (float)lb->h_diag;
    for (size_t i = 0; i < n; ++i) dir[i] *= h;
    for (int k = 0; k < lb->pairs; ++k) {
        const size_t row = (size_t)((lb->head + k) % m);
        const float *s = lb->s + row * st;
        const double be = dot(lb->y + row * st, dir, n) * lb->rho[row];
        const float a = (float)(lb->al[k] - be);
        for (size_t i = 0; i < n; ++i) dir[i] += a * s[i];
    }
}

double nd_lbfgs_cubic(double x1, double f1, double g1, double x2, double f2, double g2, const double *bounds) {
    double lo = x1 <= x2 ? x1 : x2, hi = x1 <= x2 ? x2 : x1;
    if (bounds) lo = bounds[0], hi = bounds[1];
    const double d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    const double d2_square = d1 * d1 - g1 * g2;
    if (!(d2_square >= 0.0)) return (lo + hi) / 2.0;
    const double d2 = sqrt(d2_square);
    double t = x1 <= x2 ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
                        : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2));
    /* Python's min(max(t, lo), hi): a NaN t stays NaN, as there. */
    if (lo > t) t = lo;
    if (hi < t) t = hi;
    return t;
}

/* The trial point x0 + t d into param, evaluated into g_new. */
static nd_status trial(nd_lbfgs *lb, float *param, double t, nd_lbfgs_eval_fn eval, void *ctx, double *f,
                       nd_error *err) {
    const float tf = (float)t;
    for (size_t i = 0; i < lb->n; ++i) param[i] = lb->x0[i] + tf * lb->d[i];
    return eval(ctx, param, lb->g_new, f, err);
}

/* PyTorch's _strong_wolfe (lswolfe.lua) from x0 along d: bracket a step
 * that satisfies the strong Wolfe conditions, then zoom in on it. f and g
 * (lb->g) are at x0, gtd = g.d < 0; *t is the first trial. Returns the
 * step taken in *t, its loss in *f and its gradient in lb->g. */
static nd_status strong_wolfe(nd_lbfgs *lb, float *param, nd_lbfgs_eval_fn eval, void *ctx, double *t_io, double *f_io,
                              double gtd, int *evals, nd_error *err) {
    const nd_lbfgs_config *c = &lb->cfg;
    const size_t n = lb->n, bytes = sizeof(float) * n;
    const double f = *f_io, d_norm = max_abs(lb->d, n);
    double t = *t_io, f_new;
    ND_TRY(trial(lb, param, t, eval, ctx, &f_new, err));
    int ls_evals = 1, ls_iter = 0;
    double gtd_new = dot(lb->g_new, lb->d, n);
    double t_prev = 0.0, f_prev = f, gtd_prev = gtd;
    const float *g_prev = lb->g;
    double br[2] = {0.0, 0.0}, br_f[2] = {0.0, 0.0}, br_gtd[2] = {0.0, 0.0};
    int ends = 0; /* bracket points: 1 once a Wolfe point is found, 2 for an interval */
    bool done = false;
    while (ls_iter < c->max_ls) {
        const bool too_high = f_new > f + c->c1 * t * gtd || (ls_iter > 1 && f_new >= f_prev);
        if (too_high || (!(fabs(gtd_new) <= -c->c2 * gtd) && gtd_new >= 0.0)) {
            br[0] = t_prev, br_f[0] = f_prev, br_gtd[0] = gtd_prev;
            br[1] = t, br_f[1] = f_new, br_gtd[1] = gtd_new;
            memcpy(lb->g_br[0], g_prev, bytes);
            memcpy(lb->g_br[1], lb->g_new, bytes);
            ends = 2;
            break;
        }
        if (fabs(gtd_new) <= -c->c2 * gtd) {
            br[0] = t, br_f[0] = f_new;
            memcpy(lb->g_br[0], lb->g_new, bytes);
            ends = 1;
            done = true;
            break;
        }
        /* Extrapolate: between a hundredth past t and ten times t. */
        const double bounds[2] = {t + 0.01 * (t - t_prev), t * 10.0};
        const double tmp = t;
        t = nd_lbfgs_cubic(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds);
        t_prev = tmp, f_prev = f_new, gtd_prev = gtd_new;
        memcpy(lb->g_prev, lb->g_new, bytes);
        g_prev = lb->g_prev;
        ND_TRY(trial(lb, param, t, eval, ctx, &f_new, err));
        ls_evals += 1;
        gtd_new = dot(lb->g_new, lb->d, n);
        ls_iter += 1;
    }
    if (ls_iter == c->max_ls) { /* out of evaluations: the better of the start and the last trial */
        br[0] = 0.0, br_f[0] = f, br_gtd[0] = gtd;
        br[1] = t, br_f[1] = f_new, br_gtd[1] = gtd_new;
        memcpy(lb->g_br[0], lb->g, bytes);
        memcpy(lb->g_br[1], lb->g_new, bytes);
        ends = 2;
    }
    /* Zoom: shrink the interval until a point satisfies the conditions. */
    bool insufficient = false;
    int low = br_f[0] <= br_f[ends - 1] ? 0 : 1, high = 1 - low;
    while (!done && ls_iter < c->max_ls) {
        if (fabs(br[1] - br[0]) * d_norm < c->tolerance_change) break;
        t = nd_lbfgs_cubic(br[0], br_f[0], br_gtd[0], br[1], br_f[1], br_gtd[1], NULL);
        const double bmax = br[0] > br[1] ? br[0] : br[1], bmin = br[0] > br[1] ? br[1] : br[0];
        const double eps = 0.1 * (bmax - bmin);
        /* Too close to an end twice in a row, or at it: a tenth of the interval inside. */
        if ((bmax - t < t - bmin ? bmax - t : t - bmin) < eps) {
            if (insufficient || t >= bmax || t <= bmin) {
                t = fabs(t - bmax) < fabs(t - bmin) ? bmax - eps : bmin + eps;
                insufficient = false;
            } else {
                insufficient = true;
            }
        } else {
            insufficient = false;
        }
        ND_TRY(trial(lb, param, t, eval, ctx, &f_new, err));
        ls_evals += 1;
        gtd_new = dot(lb->g_new, lb->d, n);
        ls_iter += 1;
        if (f_new > f + c->c1 * t * gtd || f_new >= br_f[low]) {
            br[high] = t, br_f[high] = f_new, br_gtd[high] = gtd_new;
            memcpy(lb->g_br[high], lb->g_new, bytes);
            low = br_f[0] <= br_f[1] ? 0 : 1, high = 1 - low;
        } else {
            if (fabs(gtd_new) <= -c->c2 * gtd) {
                done = true;
            } else if (gtd_new * (br[high] - br[low]) >= 0.0) { /* the old low becomes the high end */
                br[high] = br[low], br_f[high] = br_f[low], br_gtd[high] = br_gtd[low];
                float *keep = lb->g_br[high];
                lb->g_br[high] = lb->g_br[low];
                lb->g_br[low] = keep;
            }
            br[low] = t, br_f[low] = f_new, br_gtd[low] = gtd_new;
            memcpy(lb->g_br[low], lb->g_new, bytes);
        }
    }
    *t_io = br[low];
    *f_io = br_f[low];
    memcpy(lb->g, lb->g_br[low], bytes);
    *evals = ls_evals;
    return ND_OK;
}

nd_status nd_lbfgs_step(nd_lbfgs *lb, float *param, nd_lbfgs_eval_fn eval, nd_lbfgs_stop_fn stop, void *ctx,
                        nd_lbfgs_report *report, nd_error *err) {
    const nd_lbfgs_config *c = &lb->cfg;
    const size_t n = lb->n;
    const int max_eval = c->max_eval > 0 ? c->max_eval : c->max_iter * 5 / 4;
    nd_lbfgs_report r = {.end = ND_LBFGS_MAX_ITER, .step = lb->t};
    double loss;
    ND_TRY(eval(ctx, param, lb->g, &loss, err));
    r.evaluations = 1;
    lb->evaluations += 1;
    r.loss_start = r.loss = loss;
    bool optimal = max_abs(lb->g, n) <= c->tolerance_grad;
    if (optimal) r.end = ND_LBFGS_OPTIMAL;
    for (int k = 1; !optimal && k <= c->max_iter; ++k) {
        lb->iterations += 1;
        if (lb->iterations == 1) { /* steepest descent, an empty history */
            for (size_t i = 0; i < n; ++i) lb->d[i] = -lb->g[i];
            lb->pairs = lb->head = 0;
            lb->h_diag = 1.0;
        } else {
            push_latest(lb);
            nd_lbfgs_direction(lb, lb->g, lb->d);
        }
        memcpy(lb->prev_g, lb->g, sizeof(float) * n);
        lb->prev_loss = loss;
        /* The first step ever is scaled to the gradient's size; later ones start at lr. */
        double t = lb->iterations == 1 ? fmin(1.0, 1.0 / sum_abs(lb->g, n)) * c->lr : c->lr;
        lb->t = t;
        const double gtd = dot(lb->g, lb->d, n);
        if (gtd > -c->tolerance_change) {
            r.end = ND_LBFGS_NO_DESCENT;
            break;
        }
        int ls_evals = 0;
        if (c->line_search == ND_LINE_SEARCH_STRONG_WOLFE) {
            memcpy(lb->x0, param, sizeof(float) * n);
            ND_TRY(strong_wolfe(lb, param, eval, ctx, &t, &loss, gtd, &ls_evals, err));
            const float tf = (float)t;
            for (size_t i = 0; i < n; ++i) param[i] = lb->x0[i] + tf * lb->d[i];
            optimal = max_abs(lb->g, n) <= c->tolerance_grad;
        } else {
            const float tf = (float)t;
            for (size_t i = 0; i < n; ++i) param[i] += tf * lb->d[i];
            if (k != c->max_iter) { /* the last point is evaluated by the next step */
                ND_TRY(eval(ctx, param, lb->g, &loss, err));
                optimal = max_abs(lb->g, n) <= c->tolerance_grad;
                ls_evals = 1;
            }
        }
        lb->t = t;
        lb->evaluations += ls_evals;
        r.evaluations += ls_evals;
        r.iterations = k;
        r.loss = loss;
        r.step = t;
        if (k == c->max_iter) break; /* r.end is max-iter */
        if (r.evaluations >= max_eval) {
            r.end = ND_LBFGS_MAX_EVAL;
            break;
        }
        if (optimal) {
            r.end = ND_LBFGS_OPTIMAL;
            break;
        }
        if (max_abs(lb->d, n) * fabs(t) <= c->tolerance_change || fabs(loss - lb->prev_loss) < c->tolerance_change) {
            r.end = ND_LBFGS_NO_PROGRESS;
            break;
        }
        if (stop && stop(ctx)) {
            r.end = ND_LBFGS_STOPPED;
            break;
        }
    }
    if (report) *report = r;
    return ND_OK;
}
