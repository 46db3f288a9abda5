#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "nndist/rng.h"

hid_t fx_create(const char *path) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    unlink(path);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "fixture: cannot create %s\n", path);
        abort();
    }
    return f;
}

void fx_close(hid_t file) { H5Fclose(file); }

void fx_attr_int(hid_t file, const char *name, int value) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &value);
    H5Aclose(a);
    H5Sclose(s);
}

static void attr_array(hid_t file, const char *name, hid_t ftype, hid_t mtype, int n, const void *values) {
    const hsize_t dims[1] = {(hsize_t)n};
    hid_t s = H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(file, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, mtype, values);
    H5Aclose(a);
    H5Sclose(s);
}

void fx_attr_i64s(hid_t file, const char *name, int n, const long long *values) {
    attr_array(file, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, n, values);
}

void fx_attr_f64s(hid_t file, const char *name, int n, const double *values) {
    attr_array(file, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, values);
}

/* A dataset of the given shape and types; dcpl H5P_DEFAULT or a chunked layout. */
static hid_t write_any(hid_t file, const char *name, hid_t ftype, hid_t mtype, int ndims, const hsize_t *dims,
                       hid_t dcpl, const void *data) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t s = H5Screate_simple(ndims, dims, NULL);
    hid_t d = H5Dcreate2(file, name, ftype, s, lcpl, dcpl, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "fixture: cannot create %s\n", name);
        abort();
    }
    H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Sclose(s);
    H5Pclose(lcpl);
    return d;
}

void fx_write_f32(hid_t file, const char *name, int ndims, const hsize_t *dims, const float *data) {
    H5Dclose(write_any(file, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ndims, dims, H5P_DEFAULT, data));
}

void fx_write_f64(hid_t file, const char *name, int ndims, const hsize_t *dims, const double *data) {
    H5Dclose(write_any(file, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, ndims, dims, H5P_DEFAULT, data));
}

void fx_write_i32(hid_t file, const char *name, int ndims, const hsize_t *dims, const int *data) {
    H5Dclose(write_any(file, name, H5T_STD_I32LE, H5T_NATIVE_INT, ndims, dims, H5P_DEFAULT, data));
}

void fx_write_f32_chunked(hid_t file, const char *name, int ndims, const hsize_t *dims, const hsize_t *chunk,
                          const float *data) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, ndims, chunk);
    H5Dclose(write_any(file, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ndims, dims, dcpl, data));
    H5Pclose(dcpl);
}

void fx_write_u8(hid_t file, const char *name, int ndims, const hsize_t *dims, const unsigned char *data, float scale) {
    hid_t d = write_any(file, name, H5T_STD_U8LE, H5T_NATIVE_UCHAR, ndims, dims, H5P_DEFAULT, data);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(d, "scale", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_FLOAT, &scale);
    H5Aclose(a);
    H5Sclose(s);
    H5Dclose(d);
}

void fx_blobs(float *x, int *y, long rows, int cols, int classes, float separation, uint64_t seed) {
    nd_rng rng;
    nd_rng_seed(&rng, seed, 77, 0);
    float *centre = malloc(sizeof(float) * (size_t)classes * cols);
    for (long i = 0; i < (long)classes * cols; ++i) centre[i] = separation * (float)nd_rng_normal(&rng);
    for (long i = 0; i < rows; ++i) {
        y[i] = (int)(i % classes);
        for (int j = 0; j < cols; ++j) x[i * cols + j] = centre[y[i] * cols + j] + (float)nd_rng_normal(&rng);
    }
    free(centre);
}

void fx_write_dataset(const char *path, const float *x, const int *y, long rows, int cols, int classes, const float *tx,
                      const int *ty, long test_rows) {
    hid_t f = fx_create(path);
    fx_attr_int(f, "num_classes", classes);
    hsize_t xd[2] = {(hsize_t)rows, (hsize_t)cols}, yd[1] = {(hsize_t)rows};
    fx_write_f32(f, "/train/x", 2, xd, x);
    fx_write_i32(f, "/train/y", 1, yd, y);
    if (test_rows > 0) {
        hsize_t txd[2] = {(hsize_t)test_rows, (hsize_t)cols}, tyd[1] = {(hsize_t)test_rows};
        fx_write_f32(f, "/test/x", 2, txd, tx);
        fx_write_i32(f, "/test/y", 1, tyd, ty);
    }
    fx_close(f);
}

const char *fx_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", NNDIST_TEST_TMP, name);
    return buf;
}
