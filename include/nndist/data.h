/* Datasets in HDF5 (layout in data/README.md) and the rank's shard of them.
 *
 * This module and the checkpoint module are the only users of HDF5. Ranks
 * are plain integers here (as in llm.c's loader), so everything is testable
 * without MPI. Every reader validates shapes, dtypes and values before use
 * and reports the first problem as one line naming the file and dataset. */
#ifndef NNDIST_DATA_H
#define NNDIST_DATA_H

#include <stdint.h>

#include "nndist/status.h"

/* Image shapes: image_c, image_h, image_w are one sample as C channels of
 * H x W, all 0 when there is none. Every reader still gives flat rows of
 * D = C * H * W features, a sample in row-major (C, H, W) order: exactly
 * what torch's nn.Flatten makes of an NCHW batch. */

typedef struct {
    long rows;                     /* N */
    int cols;                      /* D, features per row (C * H * W for 4-D x) */
    int x_is_uint8;                /* x stored as uint8 with a `scale` attribute */
    float x_scale;                 /* multiplier applied to uint8 values (1 for float) */
    int target_cols;               /* y is (rows x target_cols) float targets; 0: y is (rows) int labels */
    int image_c, image_h, image_w; /* x stored as N x C x H x W: its C, H, W; all 0 when x is N x D */
} nd_split_info;

typedef struct {
    int num_classes; /* root attribute `num_classes` (labels); 0 with float targets */
    int has_targets; /* /train/y is N x K float: multi-label or regression targets */
    int num_outputs; /* what the model must output: num_classes, or K */
    int has_val, has_test;
    nd_split_info train, val, test;
    int image_c, image_h, image_w; /* of every split's rows: from 4-D x or the root attribute
                                      image_shape; all 0: none */
    long fold_first, fold_rows;    /* nd_dataset_hold_out: /val is /train's rows [first, first + rows)
                                      and train the others; rows 0: the file's own splits */
} nd_dataset_info;

/* One rank's contiguous block of rows of one split. */
typedef struct {
    long first_row; /* global index of x[0] */
    int rows;
    int cols;
    float *x; /* (rows x cols), already scaled to float */
    int *y;   /* (rows) labels in [0, num_classes), or NULL with targets */
    float *t; /* (rows x target_cols) float targets, or NULL with labels */
    int target_cols;
} nd_shard;

/* Opens path, checks the root attribute and every split present (x rank 2,
 * N x D, or rank 4, N x C x H x W, float or uint8; y rank 1 integer labels,
 * with the root attribute num_classes, or rank 2 float targets; equal row
 * counts; test/val with the train column and target counts). A missing
 * /train is an error; /val and /test are optional. The image shape comes
 * from 4-D x or from the root attribute image_shape (3 positive integers
 * C, H, W with C * H * W = D); every 4-D split and the attribute must
 * agree on it. */
nd_status nd_dataset_probe(const char *path, nd_dataset_info *info, nd_error *err);

/* Rows [*first, *first + *count) of n rows for rank of size ranks: the first
 * n % size ranks get one extra row, so counts differ by at most one. */
void nd_shard_range(long n, int rank, int size, long *first, long *count);

/* Reads only this rank's hyperslab of /<split>/x and /<split>/y, checks
 * every label against num_classes and every feature and target for NaN/Inf. */
nd_status nd_shard_read(const char *path, const char *split, int rank, int size, int num_classes, nd_shard *shard,
                        nd_error *err);

/* The same for the first min(head, rows) rows of the split only, cut into
 * size blocks (the clean training metric reads its subset this way); with
 * a fold held out in info, "train" skips its rows (nd_shard_read_info). */
nd_status nd_shard_read_head(const char *path, const nd_dataset_info *info, const char *split, long head, int rank,
                             int size, nd_shard *shard, nd_error *err);

/* The same for the contiguous rows of parts [part_lo, part_hi) of the split
 * cut into `parts` blocks by nd_shard_range (deterministic mode reads the
 * micro-batch blocks it owns this way). */
nd_status nd_shard_read_parts(const char *path, const char *split, int part_lo, int part_hi, int parts, int num_classes,
                              nd_shard *shard, nd_error *err);

void nd_shard_free(nd_shard *shard);

/* Cross-validation (`nndist train --val-fold FOLD/FOLDS`, fold 1-based):
 * fold FOLD of FOLDS contiguous blocks of /train (nd_shard_range's blocks)
 * becomes the validation split of info and the other rows, in file order,
 * its training split. Refused, one line naming path, when the file has its
 * own /val or a split would be empty. */
nd_status nd_dataset_hold_out(nd_dataset_info *info, int fold, int folds, const char *path, nd_error *err);

/* nd_shard_read_parts for a dataset whose info may hold out a fold: split
 * "train" skips the fold's rows, "val" reads them from /train; without a
 * fold (info->fold_rows 0) exactly nd_shard_read_parts. Each rank reads
 * only its rows (two hyperslabs where its block spans the fold). */
nd_status nd_shard_read_info(const char *path, const nd_dataset_info *info, const char *split, int part_lo, int part_hi,
                             int parts, nd_shard *shard, nd_error *err);

/* The path of the newest HDF5 file (dataset or checkpoint) this process
 * opened for reading, "" if none: named by the program's fatal-signal line,
 * since a damaged or hostile file can crash the HDF5 library itself (the
 * fuzzer found one such file: a division by zero in H5Dopen). */
const char *nd_hdf5_last_path(void);

/* Converts the IDX files images/labels (gzipped or not) into /<split> of
 * out (created if absent), x as N x (rows * cols) with the root attribute
 * image_shape = [1, rows, cols]. For split "train" with val_fraction > 0,
 * the last round(val_fraction * N) rows become /val. Fails without touching
 * out if the split is already there or out's image_shape differs. */
nd_status nd_import_idx(const char *images, const char *labels, const char *split, const char *out, double val_fraction,
                        nd_error *err);

typedef struct {
    long rows, test_rows, val_rows;
    int features, classes;
    float separation; /* distance scale of the class centres, in noise std units */
    uint64_t seed;
    int targets; /* > 0: write N x targets float /y instead of labels: multi-label
                    attributes in {0,1} (multilabel = 1) or real values */
    int multilabel;
    int image[3]; /* C, H, W with C H W = features: written as the root attribute image_shape
                     (all 0: none) */
} nd_synth_config;

/* Writes Gaussian blobs (one centre per class, unit noise) as /train,
 * /test and optionally /val of a new file out (it must not exist). */
nd_status nd_synth_write(const nd_synth_config *cfg, const char *out, nd_error *err);

#endif
