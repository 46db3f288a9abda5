/* Losses. Gradients are of the *sum* over the batch (not the mean): ranks
 * add their sums with one allreduce and the trainer divides once by the
 * global batch, so P ranks of batch b equal one rank of batch P*b.
 *
 * Classification losses read int labels (batch) in [0, k); the others read
 * float targets (batch x k). Each also sums the metric that fits it. */
#ifndef NNDIST_LOSS_H
#define NNDIST_LOSS_H

typedef enum {
    ND_LOSS_SOFTMAX_CE = 0, /* -log softmax(z)_y                        metric: hits */
    ND_LOSS_HINGE,          /* sum_{j!=y} max(0, z_j - z_y + 1) (Weston-Watkins)   hits */
    ND_LOSS_SQUARED_HINGE,  /* sum_{j!=y} max(0, z_j - z_y + 1)^2                  hits */
    ND_LOSS_SIGMOID_BCE,    /* sum_k BCE(sigmoid(z_k), t_k), t in {0,1}: multi-label;
                               metric: attributes right / k, summed over rows */
    ND_LOSS_L2,             /* sum_k (z_k - t_k)^2             metric: squared error (RMSE) */
    ND_LOSS_L1,             /* sum_k |z_k - t_k|               metric: absolute error (MAE) */
    ND_LOSS_BINARY_HINGE    /* sum_k max(0, 1 - (2 t_k - 1) z_k), t in {0,1}: multi-label
                               SVM, one per attribute; metric as sigmoid_bce's */
} nd_loss_kind;

typedef struct {
    double loss_sum; /* sum over the batch of per-sample loss */
    double correct;  /* the metric's sum: hits (classification), per-row attribute accuracy
                        (multi-label), squared or absolute error (regression) */
} nd_loss_stats;

/* "softmax_ce", "hinge", "squared_hinge", "sigmoid_bce", "l2", "l1",
 * "binary_hinge"; 0 or -1. */
int nd_loss_parse(const char *name, nd_loss_kind *kind);
/* The names of the losses, indexed by nd_loss_kind, NULL-terminated. */
extern const char *const nd_loss_names[];
const char *nd_loss_name(nd_loss_kind kind);

/* The metric of a loss from its summed value (nd_loss_stats.correct) over
 * `rows` rows of k outputs: accuracy, attribute accuracy, RMSE or MAE. */
double nd_loss_metric(nd_loss_kind kind, double sum, double rows, int k);

/* Its name in JSON keys ("accuracy", "attribute_accuracy", "rmse", "mae"),
 * its short label in the epoch line ("acc", "attr acc", "rmse", "mae"), and
 * +1 if higher is better, -1 if lower is. */
const char *nd_loss_metric_name(nd_loss_kind kind);
const char *nd_loss_metric_label(nd_loss_kind kind);
int nd_loss_metric_sense(nd_loss_kind kind);

/* 1 if the loss reads float targets (batch x k) rather than labels. */
int nd_loss_takes_targets(nd_loss_kind kind);
/* 1 if the loss reads multi-label targets: attributes in [0, 1] (sigmoid_bce,
 * binary_hinge), its metric the attribute accuracy. */
int nd_loss_multilabel(nd_loss_kind kind);

/* The loss at initialization for a model whose outputs are all 0: what
 * `nndist sanity` expects (ln k, k - 1, k ln 2, k); NaN for regression. */
double nd_loss_expected_initial(nd_loss_kind kind, int k);

/* Loss of out (batch x k) against labels (batch) or targets (batch x k);
 * if dout (batch x k) is not NULL it receives dL/dout. dout may alias out. */
nd_loss_stats nd_loss_apply(nd_loss_kind kind, float *dout, const float *out, const int *labels, const float *targets,
                            int batch, int k);

/* Mixup's loss for labels (softmax_ce only): row i's loss is lam_i times
 * its label's plus (1 - lam_i) times the label of its partner, row
 * batch-1-i (nd_mixup_batch); dout likewise. Its hits are lam-weighted. */
nd_loss_stats nd_loss_apply_mixup(nd_loss_kind kind, float *dout, const float *out, const int *labels, const float *lam,
                                  int batch, int k);

/* Knowledge distillation (Hinton et al. 2015), softmax_ce only: row i's
 * loss is (1 - alpha) CE(z_i, label_i) + alpha T^2 KL(soft_i || softmax(z_i / T)),
 * soft (batch x k) the teachers' softened probabilities (rows summing to 1).
 * dout (batch x k, or NULL; not aliasing out) receives
 * (1 - alpha) (softmax(z) - onehot) + alpha T (softmax(z / T) - soft): the
 * T^2 keeps the soft part's gradient on the scale of the hard part's as T
 * grows. alpha 0 gives nd_softmax_ce's bits. Hits count the labels. */
nd_loss_stats nd_loss_apply_distill(float *dout, const float *out, const int *labels, const float *soft, float T,
                                    float alpha, int batch, int k);

/* softmax(z / T) of each row of z (batch x k) into p (batch x k), added
 * with weight w (p += w softmax(z / T)): the mean of several teachers'. */
void nd_softmax_temperature_add(float *p, const float *z, float T, float w, int batch, int k);

/* Softmax cross-entropy from logits (batch x classes) and labels (batch),
 * each label in [0, classes). Stable for large logits (log-sum-exp around the
 * row maximum). If dlogits (batch x classes) is not NULL it receives
 * softmax(logits) - onehot(label), row by row. dlogits may alias logits. */
nd_loss_stats nd_softmax_ce(float *dlogits, const float *logits, const int *labels, int batch, int classes);

/* Ensembles (nndist eval over several checkpoints, --ensemble): what the
 * members' outputs are averaged as: softmax probabilities (softmax_ce),
 * sigmoid probabilities (sigmoid_bce), the outputs themselves (hinge,
 * squared hinge and binary_hinge scores, l2/l1 predictions). Adds that of out (batch x k)
 * to sum (batch x k). */
void nd_loss_average_add(nd_loss_kind kind, const float *out, int batch, int k, double *sum);
/* "softmax probabilities", "sigmoid probabilities", "scores", "outputs". */
const char *nd_loss_average_name(nd_loss_kind kind);

/* Loss and metric of the average sum / members (sum: batch x k, from
 * nd_loss_average_add): the negative log-likelihood of the averaged
 * probabilities (softmax_ce; probabilities clamped at 1e-300), their
 * binary cross-entropy (sigmoid_bce), else the loss of the averaged
 * outputs (scores for hinge, squared hinge, binary_hinge); hits by the
 * largest average, attributes by p > 0.5 (binary_hinge: score > 0). predicted
 * (batch, or NULL) receives each row's class (labels only). */
nd_loss_stats nd_loss_of_average(nd_loss_kind kind, const double *sum, int members, const int *labels,
                                 const float *targets, int batch, int k, int *predicted);

#endif
