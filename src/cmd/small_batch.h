/* Private to src/run: the few hundred training rows and the model that
 * `nndist sanity` and `nndist gradcheck` work on, on one rank. */
#ifndef NNDIST_SMALL_BATCH_H
#define NNDIST_SMALL_BATCH_H

#include "nndist/train.h"

typedef struct {
    nd_train_config cfg;
    nd_dataset_info info;
    nd_shard sh;        /* about `rows` rows of /train, normalized as --normalize says */
    nd_model_spec spec; /* the network of cfg */
    nd_loss_kind loss;
    int k; /* model outputs */
} nd_small_batch;

/* Parses train options (usage on --help sets *help), reads the rows and
 * normalizes them with their own statistics. With base (a checkpoint's
 * configuration, `key = value` lines), its options come between the
 * defaults and argv, and the rows are left as read: the caller normalizes
 * them with the checkpoint's statistics. */
nd_status nd_small_batch_load(nd_small_batch *s, int argc, char **argv, const char *usage, int rows, const char *base,
                              int *help, nd_error *err);
void nd_small_batch_free(nd_small_batch *s);

/* Creates *m for spec with room for `rows` rows and initializes it as
 * --init and --seed say. On failure nothing needs freeing. */
nd_status nd_small_batch_model(const nd_small_batch *s, const nd_model_spec *spec, int rows, nd_model *m,
                               nd_error *err);

/* A training pass over rows 0..batch-1 with the configured seed. */
nd_train_pass nd_small_batch_pass(const nd_small_batch *s);

/* Labels or targets of row `first` on. */
const int *nd_small_batch_labels(const nd_small_batch *s, int first);
const float *nd_small_batch_targets(const nd_small_batch *s, int first);

#endif
