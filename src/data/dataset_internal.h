/* Private to src/data: the pieces of shard reading that the whole-shard
 * reader (dataset.c) and the streaming reader (stream.c) share. */
#ifndef NNDIST_DATASET_INTERNAL_H
#define NNDIST_DATASET_INTERNAL_H

#include <hdf5.h>

#include "nndist/data.h"

/* Checks /<split>/x and /<split>/y of the open file f and fills info. */
nd_status nd_split_probe(hid_t f, const char *path, const char *split, nd_split_info *info, nd_error *err);

/* Selects rows [first, first+count) of a dataset of any rank (all of its
 * other dimensions: a 4-D x gives each row's C x H x W values in row-major
 * order) and reads them as mem_type into buf (count x cols). Fails, reading
 * nothing, unless a row of the dataset holds exactly cols values. */
herr_t nd_read_rows(hid_t dset, hid_t mem_type, long first, long count, int cols, void *buf);

/* Reads the root attribute image_shape of the open file f into shape
 * (C, H, W): *found = 0 if absent; otherwise it must be 3 positive integers
 * (any integer type, any dataspace of 3 values), or the error says what it
 * is. */
nd_status nd_image_shape_read(hid_t f, const char *path, int shape[3], int *found, nd_error *err);

/* Labels in range and features and targets finite: checked on the rows a
 * rank holds, so together the ranks check the whole split once. */
nd_status nd_shard_validate(const nd_shard *s, const char *path, const char *split, int num_classes, nd_error *err);

#endif
