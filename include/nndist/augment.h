/* Data augmentation of training samples (CS231n: "almost always a good
 * idea"): random crops of the zero-padded image, horizontal flips, cutout,
 * Gaussian input noise, and mixup of pairs of samples.
 *
 * Every draw is a pure function of (seed, epoch, global sample index), so
 * a resumed, streamed or --deterministic run augments each sample exactly
 * as an uninterrupted one on any number of ranks. Applied to normalized
 * rows, as the PyTorch peer does: the padding and the cut-out square hold
 * 0, the mean. Never applied to /val or /test. */
#ifndef NNDIST_AUGMENT_H
#define NNDIST_AUGMENT_H

#include <stdint.h>

#include "nndist/model.h"

typedef struct {
    int crop_pad; /* a random h x w crop of the image padded by this many pixels of 0 (0: off) */
    int flip;     /* mirror left-right with probability 1/2 */
    int cutout;   /* zero a square of this side at a random centre, clipped at the border
                     (DeVries & Taylor 2017; 0: off) */
    float noise;  /* add N(0, noise^2) to every value (0: off); needs no image */
    float mixup;  /* mix pairs of samples with lambda ~ Beta(mixup, mixup) (Zhang et al. 2018; 0: off) */
} nd_augment_config;

/* 1 if any per-sample transform (crop, flip, cutout, noise) is on. */
int nd_augment_per_sample(const nd_augment_config *a);

/* Transforms one sample x (cols values; an image of shape c x h x w when
 * crop, flip or cutout is on) in place. scratch holds cols floats. */
void nd_augment_sample(float *x, float *scratch, int cols, nd_image_shape shape, const nd_augment_config *a,
                       uint64_t seed, int epoch, long sample);

/* Mixup within a batch: row i is mixed with row batch-1-i (its partner;
 * the rows are already shuffled), x_i = lam_i x_i + (1 - lam_i) x_partner
 * for x (batch x cols) and, if not NULL, the float targets t (batch x k).
 * lam (batch) receives each row's lambda, drawn by (seed, epoch,
 * row_ids[i]); the label losses read the partner's label from the same
 * pairing (nd_loss_apply_mixup). An odd batch's middle row stays as it is. */
void nd_mixup_batch(float *x, int cols, float *t, int k, float *lam, const long *row_ids, int batch, float alpha,
                    uint64_t seed, int epoch);

#endif
