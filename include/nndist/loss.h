/* Losses. Gradients are of the *sum* over the batch (not the mean): ranks
 * add their sums with one allreduce and the trainer divides once by the
 * global batch, so P ranks of batch b equal one rank of batch P*b. */
#ifndef NNDIST_LOSS_H
#define NNDIST_LOSS_H

typedef struct {
    double loss_sum; /* sum over the batch of per-sample loss */
    int correct;     /* samples whose arg-max logit is the label */
} nd_loss_stats;

/* Softmax cross-entropy from logits (batch x classes) and labels (batch),
 * each label in [0, classes). Stable for large logits (log-sum-exp around the
 * row maximum). If dlogits (batch x classes) is not NULL it receives
 * softmax(logits) - onehot(label), row by row. dlogits may alias logits. */
nd_loss_stats nd_softmax_ce(float *dlogits, const float *logits, const int *labels,
                            int batch, int classes);

#endif
