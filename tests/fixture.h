/* Test fixtures: write dataset files (good or deliberately broken) with the
 * HDF5 API directly, independent of the code under test. */
#ifndef NNDIST_TEST_FIXTURE_H
#define NNDIST_TEST_FIXTURE_H

#include <hdf5.h>
#include <stdint.h>

hid_t fx_create(const char *path);
void fx_close(hid_t file);
void fx_attr_int(hid_t file, const char *name, int value);
/* 1-D attributes of n values, int64 and float64 as h5py writes a list. */
void fx_attr_i64s(hid_t file, const char *name, int n, const long long *values);
void fx_attr_f64s(hid_t file, const char *name, int n, const double *values);
/* Datasets at full paths ("/train/x"); missing groups are created. */
void fx_write_f32(hid_t file, const char *name, int ndims, const hsize_t *dims, const float *data);
void fx_write_f64(hid_t file, const char *name, int ndims, const hsize_t *dims, const double *data);
void fx_write_i32(hid_t file, const char *name, int ndims, const hsize_t *dims, const int *data);
/* float32, chunked as chunk (ndims values) rather than contiguous. */
void fx_write_f32_chunked(hid_t file, const char *name, int ndims, const hsize_t *dims, const hsize_t *chunk,
                          const float *data);
void fx_write_u8(hid_t file, const char *name, int ndims, const hsize_t *dims, const unsigned char *data, float scale);

/* Gaussian blobs: x (rows x cols), y (rows) over classes, seeded. */
void fx_blobs(float *x, int *y, long rows, int cols, int classes, float separation, uint64_t seed);

/* A well-formed file: /train (rows) and /test (test_rows, 0 for none). */
void fx_write_dataset(const char *path, const float *x, const int *y, long rows, int cols, int classes, const float *tx,
                      const int *ty, long test_rows);

/* A unique scratch path under the build's temp dir: dir/name. */
const char *fx_path(char *buf, size_t cap, const char *name);

#endif
