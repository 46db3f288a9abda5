/* Full-batch L-BFGS over a flat parameter array, written to follow
 * PyTorch's torch.optim.LBFGS (torch/optim/lbfgs.py, 1.13) step for step,
 * so a run can be compared with it like for like: one nd_lbfgs_step is one
 * call of LBFGS.step(closure), up to max_iter iterations of the two-loop
 * recursion over the last `history` pairs (s, y), each followed by a
 * strong-Wolfe line search (cubic interpolation and zoom, lswolfe.lua) or a
 * fixed step of lr; the history and the last direction carry over to the
 * next call. Directions and pairs are floats; dot products and scalars are
 * doubles.
 *
 * The objective is the caller's: a callback evaluates the loss and its
 * gradient at the parameters, so this module knows nothing of data, models
 * or ranks. Everything is allocated at creation: a step allocates nothing. */
#ifndef NNDIST_LBFGS_H
#define NNDIST_LBFGS_H

#include <stddef.h>

#include "nndist/status.h"

typedef enum { ND_LINE_SEARCH_STRONG_WOLFE = 0, ND_LINE_SEARCH_NONE } nd_line_search_kind;
/* "strong_wolfe", "none": indexed by nd_line_search_kind, NULL-terminated. */
extern const char *const nd_line_search_names[];

typedef struct {
    double lr;                       /* the first trial step of each line search (PyTorch's lr, default 1) */
    int max_iter;                    /* iterations per nd_lbfgs_step (20) */
    int max_eval;                    /* evaluations per step; 0: max_iter * 5 / 4, as PyTorch */
    int history;                     /* pairs kept (100) */
    double tolerance_grad;           /* stop when max |g| <= this (1e-7) */
    double tolerance_change;         /* stop when the step or the loss changes by less (1e-9) */
    nd_line_search_kind line_search; /* strong_wolfe, or none: a fixed step of lr */
    double c1, c2;                   /* sufficient decrease and curvature constants (1e-4, 0.9) */
    int max_ls;                      /* line-search evaluations per iteration (25) */
} nd_lbfgs_config;

/* PyTorch's defaults (with the strong-Wolfe line search). */
nd_lbfgs_config nd_lbfgs_defaults(void);

/* Evaluates the objective at param (n): *loss and grad (n). */
typedef nd_status (*nd_lbfgs_eval_fn)(void *ctx, const float *param, float *grad, double *loss, nd_error *err);
/* Asked after each finished iteration: nonzero ends the step there. */
typedef int (*nd_lbfgs_stop_fn)(void *ctx);

/* Why a step ended. */
typedef enum {
    ND_LBFGS_MAX_ITER = 0, /* max_iter iterations */
    ND_LBFGS_MAX_EVAL,     /* max_eval evaluations */
    ND_LBFGS_OPTIMAL,      /* max |g| <= tolerance_grad */
    ND_LBFGS_NO_DESCENT,   /* g.d > -tolerance_change: no downhill direction left */
    ND_LBFGS_NO_PROGRESS,  /* the step or the loss changed by less than tolerance_change */
    ND_LBFGS_STOPPED       /* the stop callback asked */
} nd_lbfgs_end;
extern const char *const nd_lbfgs_end_names[];

/* One step's account. */
typedef struct {
    int iterations, evaluations;
    double loss_start; /* at the parameters the step began from (PyTorch's return value) */
    double loss;       /* the latest evaluated loss: at the final parameters, except after a last
                          fixed step (line search none), which is not evaluated */
    double step;       /* the last step length t */
    nd_lbfgs_end end;
} nd_lbfgs_report;

typedef struct {
    nd_lbfgs_config cfg;
    size_t n;
    float *s, *y;     /* (history x n) ring of steps and gradient changes; pair i (0 the oldest) in row
                         (head + i) % history */
    double *rho, *al; /* (history) 1 / y.s of each row; the two-loop's alphas */
    int head, pairs;
    float *d;         /* (n) the latest direction */
    float *g;         /* (n) the gradient at the current parameters */
    float *prev_g;    /* (n) the gradient where the latest iteration began */
    float *x0;        /* (n) line search: the parameters it started from */
    float *g_new;     /* (n) line search: the latest evaluation */
    float *g_prev;    /* (n) line search: the previous trial's gradient */
    float *g_br[2];   /* (n) line search: the gradients at the bracket's ends */
    double t, h_diag; /* the latest step length; the initial inverse Hessian's scale */
    double prev_loss;
    long iterations, evaluations; /* over every step so far */
    float *buf;                   /* owns every array above */
} nd_lbfgs;

/* Allocates the state for n parameters; the config must be valid. */
nd_status nd_lbfgs_create(nd_lbfgs *lb, const nd_lbfgs_config *cfg, size_t n, nd_error *err);
void nd_lbfgs_destroy(nd_lbfgs *lb);
/* Floats held (history pairs and work vectors). */
double nd_lbfgs_state_floats(const nd_lbfgs *lb);

/* One step (PyTorch's LBFGS.step): evaluates at param (n), then up to
 * max_iter iterations, moving param; eval is called with param holding
 * the point to evaluate, and param holds the new iterate on return. report
 * may be NULL, stop may be NULL. A failing eval ends the step with its
 * status (param then holds the failing trial point). */
nd_status nd_lbfgs_step(nd_lbfgs *lb, float *param, nd_lbfgs_eval_fn eval, nd_lbfgs_stop_fn stop, void *ctx,
                        nd_lbfgs_report *report, nd_error *err);

/* The two-loop recursion: dir (n) = -H g for g (n), H the L-BFGS inverse
 * Hessian of the pairs held (h_diag I when none). dir may not alias g. */
void nd_lbfgs_direction(nd_lbfgs *lb, const float *g, float *dir);

/* Adds the pair (s, y) (n each) when y.s > 1e-10 (returns 1), dropping the
 * oldest when full, and sets h_diag = y.s / y.y; else returns 0. */
int nd_lbfgs_push(nd_lbfgs *lb, const float *s, const float *y);

/* PyTorch's cubic interpolation of the minimum between (x1, f1, g1) and
 * (x2, f2, g2), clamped to bounds (2: low, high; NULL: the interval of x1
 * and x2); the middle of the bounds when the cubic has no minimum. */
double nd_lbfgs_cubic(double x1, double f1, double g1, double x2, double f2, double g2, const double *bounds);

#endif
