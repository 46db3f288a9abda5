/* Private to src/data: the pieces of shard reading that the whole-shard
 * reader (dataset.c) and the streaming reader (stream.c) share. */
#ifndef NNDIST_DATASET_INTERNAL_H
#define NNDIST_DATASET_INTERNAL_H

#include <hdf5.h>

#include "nndist/data.h"

/* Checks /<split>/x and /<split>/y of the open file f and fills info. */
nd_status nd_split_probe(hid_t f, const char *path, const char *split, nd_split_info *info, nd_error *err);

/* Selects rows [first, first+count) of a 1-D or 2-D dataset and reads them
 * as mem_type into buf (count x cols). */
herr_t nd_read_rows(hid_t dset, hid_t mem_type, long first, long count, int cols, void *buf);

/* Labels in range and features and targets finite: checked on the rows a
 * rank holds, so together the ranks check the whole split once. */
nd_status nd_shard_validate(const nd_shard *s, const char *path, const char *split, int num_classes, nd_error *err);

#endif
