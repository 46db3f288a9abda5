/* Optimizers over flat arrays. The same code updates a whole replica in sync
 * mode and one parameter slice on a server in async mode: it only ever sees
 * n floats of parameters, gradients and state.
 *
 * Conventions (CS231n):
 *   sgd       x -= lr * g
 *   momentum  v = mu*v - lr*g;              x += v
 *   nesterov  v_prev = v; v = mu*v - lr*g;  x += -mu*v_prev + (1+mu)*v
 *   adam      m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
 *             x -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
 *   adamw     adam, plus decoupled weight decay x -= lr*wd*x where
 *             decay_mask is 1 (Loshchilov & Hutter; PyTorch's AdamW)
 *   adagrad   m += g^2;                     x -= lr * g / (sqrt(m) + eps)
 *   rmsprop   m = rho*m + (1-rho)*g^2;      x -= lr * g / (sqrt(m) + eps)
 *             with rmsprop_momentum mu_r > 0 (PyTorch's RMSprop momentum,
 *             centered=False): v = mu_r*v + g/(sqrt(m)+eps);  x -= lr * v
 *   adadelta  m = rho*m + (1-rho)*g^2;  d = sqrt(v+eps)/sqrt(m+eps) * g;
 *             v = rho*v + (1-rho)*d^2;  x -= lr * d        (Zeiler 2012)
 *   lbfgs     full-batch L-BFGS with a line search (include/nndist/lbfgs.h);
 *             nd_optimizer_step leaves param alone
 * where g = grad_scale * grad, so the caller can fold the 1/global-batch
 * average and a global-norm clip factor into the step without another pass. */
#ifndef NNDIST_OPTIM_H
#define NNDIST_OPTIM_H

#include <stddef.h>

#include "nndist/status.h"

typedef enum {
    ND_OPT_SGD = 0,
    ND_OPT_MOMENTUM,
    ND_OPT_NESTEROV,
    ND_OPT_ADAM,
    ND_OPT_ADAMW,
    ND_OPT_ADAGRAD,
    ND_OPT_RMSPROP,
    ND_OPT_ADADELTA,
    ND_OPT_LBFGS /* full batch, its own driver (nndist/lbfgs.h): never stepped here */
} nd_opt_kind;

typedef struct {
    nd_opt_kind kind;
    float momentum;          /* mu, momentum and nesterov (the caller may change it between steps) */
    float beta1, beta2, eps; /* adam, adamw; eps also adagrad, rmsprop, adadelta */
    float rho;               /* rmsprop and adadelta decay rate */
    float rmsprop_momentum;  /* rmsprop: momentum of the scaled step (0: none, and no v buffer) */
    float weight_decay;      /* adamw: decoupled decay */
} nd_opt_config;

typedef struct {
    nd_opt_config cfg;
    size_t n;
    long step;               /* updates applied so far (Adam's t after the step) */
    float *m;                /* (n) velocity, first moment or squared-gradient average; NULL for sgd */
    float *v;                /* (n) second moment (adam, adamw), squared-update average (adadelta)
                                or momentum buffer (rmsprop with rmsprop_momentum > 0) */
    const float *decay_mask; /* (n) adamw: 1 where weights decay, 0 for biases; NULL: all decay */
    size_t first;            /* a step updates [first, n): before it (a frozen base) values and state stay */
} nd_optimizer;

/* Returns 0 and sets *kind for "sgd", "momentum", "nesterov", "adam",
 * "adamw", "adagrad", "rmsprop", "adadelta", "lbfgs"; -1 otherwise. */
int nd_opt_parse(const char *name, nd_opt_kind *kind);
/* The names of the optimizers, indexed by nd_opt_kind, NULL-terminated. */
extern const char *const nd_opt_names[];
const char *nd_opt_name(nd_opt_kind kind);

/* Allocates the state for n parameters (zeroed). */
nd_status nd_optimizer_create(nd_optimizer *opt, const nd_opt_config *cfg, size_t n, nd_error *err);
void nd_optimizer_destroy(nd_optimizer *opt);

/* Floats of state held: n for each of m and v the optimizer keeps. */
double nd_optimizer_state_floats(const nd_optimizer *opt);

/* One update of param (n) from grad (n) * grad_scale with learning rate lr. */
void nd_optimizer_step(nd_optimizer *opt, float *param, const float *grad, float grad_scale, float lr);

#endif
