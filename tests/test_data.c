/* Dataset files: shard boundaries, the uint8+scale path, hyperslab reads,
 * IDX import and synthetic sets, image shapes (4-D x or the image_shape
 * attribute), and every kind of bad file named clearly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "fixture.h"
#include "nndist/data.h"
#include "nndist/stream.h"

/* Scan callback: counts rows and notes the last global row seen. */
static nd_status count_rows(void *ctx, const nd_shard *w, nd_error *err) {
    (void)err;
    double *seen = ctx;
    seen[0] += w->rows;
    seen[1] = (double)(w->first_row + w->rows - 1);
    return ND_OK;
}

static void test_shard_range(void **state) {
    (void)state;
    const long ns[] = {10, 7, 1001, 3, 60000};
    const int ps[] = {3, 7, 2, 3, 7};
    for (int c = 0; c < 5; ++c) {
        long next = 0, lo = ns[c], hi = 0;
        for (int r = 0; r < ps[c]; ++r) {
            long first, count;
            nd_shard_range(ns[c], r, ps[c], &first, &count);
            assert_int_equal(first, next); /* contiguous, in rank order */
            next = first + count;
            if (count < lo) lo = count;
            if (count > hi) hi = count;
        }
        assert_int_equal(next, ns[c]); /* every row exactly once */
        assert_true(hi - lo <= 1);     /* balanced */
    }
    long first, count;
    nd_shard_range(10, 0, 3, &first, &count);
    assert_int_equal(count, 4); /* the remainder goes to the first ranks */
    nd_shard_range(10, 2, 3, &first, &count);
    assert_int_equal(first, 7);
    assert_int_equal(count, 3);
}

static void test_uint8_scale_and_hyperslab(void **state) {
    (void)state;
    char path[512];
    fx_path(path, sizeof path, "u8.h5");
    enum { ROWS = 11, COLS = 3 };
    unsigned char x[ROWS * COLS];
    int y[ROWS];
    for (int i = 0; i < ROWS * COLS; ++i) x[i] = (unsigned char)(i * 7);
    for (int i = 0; i < ROWS; ++i) y[i] = i % 4;
    hid_t f = fx_create(path);
    fx_attr_int(f, "num_classes", 4);
    hsize_t xd[2] = {ROWS, COLS}, yd[1] = {ROWS};
    fx_write_u8(f, "/train/x", 2, xd, x, 0.5f);
    fx_write_i32(f, "/train/y", 1, yd, y);
    fx_close(f);

    nd_dataset_info info;
    nd_error err = {0};
    assert_int_equal(nd_dataset_probe(path, &info, &err), ND_OK);
    assert_int_equal(info.num_classes, 4);
    assert_int_equal(info.train.rows, ROWS);
    assert_int_equal(info.train.cols, COLS);
    assert_true(info.train.x_is_uint8);
    assert_float_equal(info.train.x_scale, 0.5f, 0);
    assert_false(info.has_test);

    for (int r = 0; r < 3; ++r) {
        nd_shard s;
        assert_int_equal(nd_shard_read(path, "train", r, 3, 4, &s, &err), ND_OK);
        long first, count;
        nd_shard_range(ROWS, r, 3, &first, &count);
        assert_int_equal(s.first_row, first);
        assert_int_equal(s.rows, count);
        for (int i = 0; i < s.rows; ++i) {
            assert_int_equal(s.y[i], y[first + i]);
            for (int j = 0; j < COLS; ++j) assert_float_equal(s.x[i * COLS + j], 0.5f * x[(first + i) * COLS + j], 0);
        }
        nd_shard_free(&s);
    }
}

/* ---- bad files: each gives one clear message ----------------------------- */

typedef enum {
    BAD_NO_CLASSES,
    BAD_NO_X,
    BAD_NO_Y,
    BAD_ROWS,
    BAD_LABEL,
    BAD_NAN,
    BAD_INF,
    BAD_Y_FLOAT,
    BAD_X_1D,
    BAD_TEST_COLS,
    BAD_CLASSES_VALUE,
    BAD_NOT_HDF5,
    BAD_HUGE_CLAIM,
    BAD_HUGE_CHUNK,
    BAD_X_3D,
    BAD_X_5D,
    BAD_X_4D_ZERO,
    BAD_SHAPE_COUNT,
    BAD_SHAPE_ZERO,
    BAD_SHAPE_NEGATIVE,
    BAD_SHAPE_FLOAT,
    BAD_SHAPE_PRODUCT,
    BAD_SHAPE_VS_X,
    BAD_SPLIT_SHAPES,
    BAD_TEST_4D_COLS
} bad_kind;

/* An unwritten chunked dataset of type and dims (rows extendible), chunks
 * of chunk: its header claims what the file does not hold. */
static void write_unwritten(hid_t f, const char *name, hid_t type, int ndims, const hsize_t *dims,
                            const hsize_t *chunk) {
    hsize_t maxdims[2] = {H5S_UNLIMITED, ndims > 1 ? dims[1] : 0};
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    H5Pset_chunk(dcpl, ndims, chunk);
    hid_t space = H5Screate_simple(ndims, dims, maxdims);
    hid_t d = H5Dcreate2(f, name, type, space, lcpl, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Dclose(d);
    H5Sclose(space);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
}

static void write_bad(const char *path, bad_kind kind) {
    enum { ROWS = 8, COLS = 2 };
    float x[ROWS * COLS];
    int y[ROWS];
    for (int i = 0; i < ROWS * COLS; ++i) x[i] = (float)i;
    for (int i = 0; i < ROWS; ++i) y[i] = i % 3;
    if (kind == BAD_NOT_HDF5) {
        FILE *f = fopen(path, "w");
        fputs("this is not HDF5\n", f);
        fclose(f);
        return;
    }
    if (kind == BAD_LABEL) y[6] = 3;
    if (kind == BAD_NAN) x[13] = NAN;
    if (kind == BAD_INF) x[14] = -INFINITY;
    hid_t f = fx_create(path);
    if (kind != BAD_NO_CLASSES) fx_attr_int(f, "num_classes", kind == BAD_CLASSES_VALUE ? 1 : 3);
    hsize_t xd[2] = {ROWS, COLS}, yd[1] = {kind == BAD_ROWS ? ROWS - 1 : ROWS};
    if (kind == BAD_HUGE_CLAIM) { /* a header claiming 10^12 rows, in a file of a few KB */
        const hsize_t huge[2] = {1000000000000ULL, COLS}, chunk[2] = {1024, COLS};
        write_unwritten(f, "/train/x", H5T_IEEE_F32LE, 2, huge, chunk);
        write_unwritten(f, "/train/y", H5T_STD_I32LE, 1, huge, chunk);
        fx_close(f);
        return;
    }
    if (kind == BAD_HUGE_CHUNK) { /* one chunk of 2 GiB: a read would allocate it whole */
        const hsize_t chunk[2] = {1u << 28, COLS};
        write_unwritten(f, "/train/x", H5T_IEEE_F32LE, 2, xd, chunk);
        fx_write_i32(f, "/train/y", 1, yd, y);
        fx_close(f);
        return;
    }
    /* Image shapes: x of other ranks, and the root attribute image_shape. */
    const hsize_t x3[3] = {ROWS, 1, COLS}, x5[5] = {ROWS, 1, 1, 1, COLS}, x4zero[4] = {ROWS, 1, 0, COLS};
    const hsize_t x4[4] = {ROWS, 1, 1, COLS}, t4[4] = {2, 2, 1, 1}, t4cols[4] = {2, 1, 1, COLS + 1}, t4y[1] = {2};
    if (kind == BAD_SHAPE_COUNT) fx_attr_i64s(f, "image_shape", 2, (long long[]){1, 2});
    if (kind == BAD_SHAPE_ZERO) fx_attr_i64s(f, "image_shape", 3, (long long[]){2, 0, 1});
    if (kind == BAD_SHAPE_NEGATIVE) fx_attr_i64s(f, "image_shape", 3, (long long[]){-1, -1, 2});
    if (kind == BAD_SHAPE_FLOAT) fx_attr_f64s(f, "image_shape", 3, (double[]){1, 1, 2});
    if (kind == BAD_SHAPE_PRODUCT) fx_attr_i64s(f, "image_shape", 3, (long long[]){1, 1, 3});
    if (kind == BAD_SHAPE_VS_X) fx_attr_i64s(f, "image_shape", 3, (long long[]){1, 2, 1});
    if (kind == BAD_SPLIT_SHAPES) {
        fx_write_f32(f, "/test/x", 4, t4, x);
        fx_write_i32(f, "/test/y", 1, t4y, y);
    }
    if (kind == BAD_TEST_4D_COLS) {
        fx_write_f32(f, "/test/x", 4, t4cols, x);
        fx_write_i32(f, "/test/y", 1, t4y, y);
    }
    if (kind == BAD_X_1D) {
        hsize_t flat[1] = {ROWS * COLS};
        fx_write_f32(f, "/train/x", 1, flat, x);
    } else if (kind == BAD_X_3D) {
        fx_write_f32(f, "/train/x", 3, x3, x);
    } else if (kind == BAD_X_5D) {
        fx_write_f32(f, "/train/x", 5, x5, x);
    } else if (kind == BAD_X_4D_ZERO) {
        fx_write_f32(f, "/train/x", 4, x4zero, x);
    } else if (kind == BAD_SHAPE_VS_X || kind == BAD_SPLIT_SHAPES) {
        fx_write_f32(f, "/train/x", 4, x4, x);
    } else if (kind != BAD_NO_X) {
        fx_write_f32(f, "/train/x", 2, xd, x);
    }
    if (kind == BAD_Y_FLOAT) {
        float yf[ROWS] = {0};
        fx_write_f32(f, "/train/y", 1, yd, yf);
    } else if (kind != BAD_NO_Y) {
        fx_write_i32(f, "/train/y", 1, yd, y);
    }
    if (kind == BAD_TEST_COLS) {
        hsize_t td[2] = {2, COLS + 1}, tyd[1] = {2};
        fx_write_f32(f, "/test/x", 2, td, x);
        fx_write_i32(f, "/test/y", 1, tyd, y);
    }
    fx_close(f);
}

/* Probes, then reads both halves as 2 ranks would; the first error must
 * contain needle and name the file. */
static void expect_bad(bad_kind kind, const char *needle) {
    char path[512], name[32];
    snprintf(name, sizeof name, "bad%d.h5", (int)kind);
    fx_path(path, sizeof path, name);
    write_bad(path, kind);
    nd_dataset_info info;
    nd_error err = {0};
    nd_status st = nd_dataset_probe(path, &info, &err);
    for (int r = 0; r < 2 && st == ND_OK; ++r) {
        nd_shard s;
        st = nd_shard_read(path, "train", r, 2, info.num_classes, &s, &err);
        if (st == ND_OK) nd_shard_free(&s);
    }
    assert_int_not_equal(st, ND_OK);
    if (!strstr(err.msg, needle) || !strstr(err.msg, name))
        fail_msg("message '%s' should contain '%s' and the file name", err.msg, needle);
    assert_null(strchr(err.msg, '\n'));
}

static void test_bad_files(void **state) {
    (void)state;
    expect_bad(BAD_NO_CLASSES, "num_classes is missing");
    expect_bad(BAD_CLASSES_VALUE, "num_classes must be an integer >= 2");
    expect_bad(BAD_NO_X, "/train/x is missing");
    expect_bad(BAD_NO_Y, "/train/y is missing");
    expect_bad(BAD_ROWS, "/train/x has 8 rows but /train/y has 7");
    expect_bad(BAD_LABEL, "/train/y[6] = 3 is outside [0, 3)");
    expect_bad(BAD_NAN, "/train/x[6][1] is NaN");
    expect_bad(BAD_INF, "/train/x[7][0] is infinite");
    expect_bad(BAD_Y_FLOAT, "/train/y must be 1-D integer class labels or 2-D float targets");
    expect_bad(BAD_X_1D, "/train/x must be 2-D");
    expect_bad(BAD_TEST_COLS, "/test/x has 3 features but /train/x has 2");
    expect_bad(BAD_NOT_HDF5, "not an HDF5 file");
    expect_bad(BAD_HUGE_CLAIM, "/train/x claims 1000000000000 x 2 values (8e+12 bytes) but the file stores 0 bytes");
    expect_bad(BAD_HUGE_CHUNK, "/train/x: its chunks hold 2.15e+09 bytes each");
    expect_bad(BAD_X_3D, "/train/x must be 2-D (rows x features) or 4-D (rows x C x H x W), it is 3-D");
    expect_bad(BAD_X_5D, "/train/x must be 2-D (rows x features) or 4-D (rows x C x H x W), it is 5-D");
    expect_bad(BAD_X_4D_ZERO, "/train/x has an implausible shape 8 x 1 x 0 x 2");
    expect_bad(BAD_SHAPE_COUNT, "root attribute image_shape must be 3 positive integers (C, H, W), it holds 2 values");
    expect_bad(BAD_SHAPE_ZERO, "root attribute image_shape must be 3 positive integers (C, H, W), it is [2, 0, 1]");
    expect_bad(BAD_SHAPE_NEGATIVE, "image_shape must be 3 positive integers (C, H, W), it is [-1, -1, 2]");
    expect_bad(BAD_SHAPE_FLOAT, "image_shape must be 3 positive integers (C, H, W), it is not of an integer type");
    expect_bad(BAD_SHAPE_PRODUCT,
               "root attribute image_shape 1 x 1 x 3 = 3 values per row but /train/x has 2 features");
    expect_bad(BAD_SHAPE_VS_X,
               "root attribute image_shape 1 x 2 x 1 disagrees with /train/x, which holds 1 x 1 x 2 images");
    expect_bad(BAD_SPLIT_SHAPES, "/test/x holds 2 x 1 x 1 images but /train/x holds 1 x 1 x 2");
    expect_bad(BAD_TEST_4D_COLS, "/test/x has 3 features but /train/x has 2");

    nd_dataset_info info;
    nd_error err = {0};
    assert_int_equal(nd_dataset_probe(NNDIST_TEST_TMP "/does-not-exist.h5", &info, &err), ND_ERR_IO);
    assert_non_null(strstr(err.msg, "does-not-exist.h5: No such file"));
}

/* ---- IDX import ------------------------------------------------------------ */

static void write_idx(const char *path, int gz, int ndims, const unsigned *dims, const unsigned char *v, size_t n) {
    unsigned char head[4 + 12] = {0, 0, 8, (unsigned char)ndims};
    for (int i = 0; i < ndims; ++i) {
        head[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        head[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        head[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        head[7 + 4 * i] = (unsigned char)dims[i];
    }
    if (gz) {
        gzFile g = gzopen(path, "wb");
        gzwrite(g, head, 4 + 4 * ndims);
        gzwrite(g, v, (unsigned)n);
        gzclose(g);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(head, 1, 4 + 4 * ndims, f);
        fwrite(v, 1, n, f);
        fclose(f);
    }
}

static void test_import_idx(void **state) {
    (void)state;
    char img[512], lab[512], out[512], tlab[512];
    fx_path(img, sizeof img, "img.idx.gz");
    fx_path(lab, sizeof lab, "lab.idx");
    fx_path(tlab, sizeof tlab, "lab-short.idx");
    fx_path(out, sizeof out, "imported.h5");
    remove(out);
    enum { N = 20, H = 2, W = 3 };
    unsigned char pix[N * H * W], labels[N];
    for (int i = 0; i < N * H * W; ++i) pix[i] = (unsigned char)(i % 251);
    for (int i = 0; i < N; ++i) labels[i] = (unsigned char)(i % 5);
    const unsigned idims[3] = {N, H, W}, ldims[1] = {N}, short_dims[1] = {N - 1};
    write_idx(img, 1, 3, idims, pix, sizeof pix);
    write_idx(lab, 0, 1, ldims, labels, N);
    write_idx(tlab, 0, 1, short_dims, labels, N - 1);

    nd_error err = {0};
    assert_int_equal(nd_import_idx(img, lab, "train", out, 0.25, &err), ND_OK);
    nd_dataset_info info;
    assert_int_equal(nd_dataset_probe(out, &info, &err), ND_OK);
    assert_int_equal(info.num_classes, 5);
    assert_int_equal(info.train.rows, 15);
    assert_int_equal(info.val.rows, 5);
    assert_int_equal(info.train.cols, H * W);
    assert_true(info.has_val);
    /* x stays N x (H * W); the root attribute image_shape says [1, H, W]. */
    assert_int_equal(info.image_c, 1);
    assert_int_equal(info.image_h, H);
    assert_int_equal(info.image_w, W);
    assert_int_equal(info.train.image_c, 0);
    {
        hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t a = H5Aopen(f, "image_shape", H5P_DEFAULT);
        assert_true(a >= 0);
        hid_t sp = H5Aget_space(a);
        assert_int_equal(H5Sget_simple_extent_npoints(sp), 3);
        int v[3] = {0, 0, 0};
        assert_true(H5Aread(a, H5T_NATIVE_INT, v) >= 0);
        assert_int_equal(v[0], 1);
        assert_int_equal(v[1], H);
        assert_int_equal(v[2], W);
        H5Sclose(sp);
        H5Aclose(a);
        H5Fclose(f);
    }
    nd_shard s;
    assert_int_equal(nd_shard_read(out, "val", 0, 1, 5, &s, &err), ND_OK);
    assert_int_equal(s.y[0], labels[15]);
    assert_float_equal(s.x[1], pix[15 * H * W + 1] / 255.0f, 1e-7);
    nd_shard_free(&s);

    /* The same split again is refused and the file keeps working. */
    assert_int_equal(nd_import_idx(img, lab, "train", out, 0.0, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "already there"));
    assert_int_equal(nd_import_idx(img, lab, "test", out, 0.0, &err), ND_OK);
    assert_int_equal(nd_dataset_probe(out, &info, &err), ND_OK);
    assert_true(info.has_test);
    assert_int_equal(info.image_h, H); /* the test split agreed with the attribute */

    /* A file whose image_shape differs is refused and left as it was. */
    char other[512];
    fx_path(other, sizeof other, "imported-shape.h5");
    hid_t f = fx_create(other);
    fx_attr_i64s(f, "image_shape", 3, (long long[]){1, W, H});
    fx_close(f);
    assert_int_equal(nd_import_idx(img, lab, "train", other, 0.25, &err), ND_ERR_ARG);
    if (!strstr(err.msg, "imported-shape.h5: root attribute image_shape is 1 x 3 x 2 but") ||
        !strstr(err.msg, "holds 1 x 2 x 3 images"))
        fail_msg("message '%s' should name the file and both shapes", err.msg);
    f = H5Fopen(other, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_int_equal(H5Lexists(f, "train", H5P_DEFAULT), 0);
    assert_int_equal(H5Lexists(f, "val", H5P_DEFAULT), 0);
    assert_int_equal(H5Aexists(f, "num_classes"), 0);
    H5Fclose(f);

    /* Mismatched counts and wrong magic are named. */
    fx_path(out, sizeof out, "imported2.h5");
    remove(out);
    assert_int_equal(nd_import_idx(img, tlab, "train", out, 0.0, &err), ND_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "20 images"));
    assert_int_equal(nd_import_idx(lab, lab, "train", out, 0.0, &err), ND_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not an IDX file"));
}

static void test_synth(void **state) {
    (void)state;
    char out[512];
    fx_path(out, sizeof out, "synth.h5");
    remove(out);
    nd_synth_config c = {100, 30, 10, 6, 3, 2.0f, 9, 0, 0, {0, 0, 0}};
    nd_error err = {0};
    assert_int_equal(nd_synth_write(&c, out, &err), ND_OK);
    nd_dataset_info info;
    assert_int_equal(nd_dataset_probe(out, &info, &err), ND_OK);
    assert_int_equal(info.train.rows, 100);
    assert_int_equal(info.test.rows, 30);
    assert_int_equal(info.val.rows, 10);
    assert_int_equal(info.num_classes, 3);
    assert_int_equal(info.image_c, 0);
    /* Never overwrites. */
    assert_int_equal(nd_synth_write(&c, out, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "already exists"));
    /* An image shape is recorded when it holds the features, refused when not. */
    fx_path(out, sizeof out, "synth_img.h5");
    remove(out);
    nd_synth_config img = {50, 10, 0, 12, 3, 2.0f, 9, 0, 0, {3, 2, 2}};
    assert_int_equal(nd_synth_write(&img, out, &err), ND_OK);
    assert_int_equal(nd_dataset_probe(out, &info, &err), ND_OK);
    assert_true(info.image_c == 3 && info.image_h == 2 && info.image_w == 2);
    remove(out);
    img.image[2] = 3;
    assert_int_equal(nd_synth_write(&img, out, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--image C x H x W = --features"));
    /* Float targets: no num_classes needed, N x K read back, 0/1 when multi-label. */
    for (int multilabel = 0; multilabel < 2; ++multilabel) {
        fx_path(out, sizeof out, multilabel ? "synth_ml.h5" : "synth_reg.h5");
        remove(out);
        nd_synth_config t = {100, 30, 0, 6, 3, 2.0f, 9, 4, multilabel, {0, 0, 0}};
        assert_int_equal(nd_synth_write(&t, out, &err), ND_OK);
        assert_int_equal(nd_dataset_probe(out, &info, &err), ND_OK);
        assert_int_equal(info.has_targets, 1);
        assert_int_equal(info.num_outputs, 4);
        assert_int_equal(info.test.target_cols, 4);
        nd_shard sh;
        assert_int_equal(nd_shard_read(out, "train", 1, 2, 0, &sh, &err), ND_OK);
        assert_null(sh.y);
        assert_non_null(sh.t);
        assert_int_equal(sh.rows, 50);
        int ones = 0, fractional = 0;
        for (int i = 0; i < sh.rows * 4; ++i) {
            ones += sh.t[i] == 1.0f;
            fractional += sh.t[i] != 0.0f && sh.t[i] != 1.0f;
        }
        if (multilabel) {
            assert_int_equal(fractional, 0);
            assert_true(ones > 40 && ones < 160); /* signs of random projections: about half */
        } else {
            assert_true(fractional > 150);
        }
        nd_shard_free(&sh);
    }
}

/* The streaming reader: rank 1 of 3 over a file with uint8 features
 * (scaled on read), windows of 7 rows; in any window order each window
 * holds exactly the rows the whole-shard reader gives, normalization is
 * applied once set, a scan sees every row in file order, and a NaN in a
 * window is reported by name when that window is read. */
static void test_stream_windows(void **state) {
    (void)state;
    enum { N = 100, D = 3, CLASSES = 4, W = 7 };
    char path[512], bad[512];
    fx_path(path, sizeof path, "stream.h5");
    fx_path(bad, sizeof bad, "stream-nan.h5");
    unsigned char u8[N * D];
    int y[N];
    for (int i = 0; i < N * D; ++i) u8[i] = (unsigned char)(i * 7 % 251);
    for (int i = 0; i < N; ++i) y[i] = i % CLASSES;
    hid_t f = fx_create(path);
    fx_write_u8(f, "/train/x", 2, (hsize_t[]){N, D}, u8, 0.5f);
    fx_write_i32(f, "/train/y", 1, (hsize_t[]){N}, y);
    fx_attr_int(f, "num_classes", CLASSES);
    fx_close(f);
    nd_error err = {0};
    nd_shard whole;
    assert_int_equal(nd_shard_read(path, "train", 1, 3, CLASSES, &whole, &err), ND_OK);
    nd_stream *s = NULL;
    assert_int_equal(nd_stream_open(path, "train", 1, 3, CLASSES, W, &s, &err), ND_OK);
    assert_int_equal(nd_stream_rows(s), whole.rows);
    assert_int_equal(nd_stream_first_row(s), whole.first_row);
    const int windows = nd_stream_windows(s);
    assert_int_equal(windows, (whole.rows + W - 1) / W);
    assert_int_equal(nd_stream_window_rows(s, windows - 1), whole.rows - (windows - 1) * W);
    assert_int_equal(nd_stream_background(s), 1); /* Debian's HDF5 is thread-safe: reads overlap */
    int order[16];
    for (int pass = 0; pass < 2; ++pass) {
        for (int k = 0; k < windows; ++k) order[k] = pass ? windows - 1 - k : k;
        if (pass == 1) nd_stream_set_normalize(s, (float[]){1.0f, 2.0f, 3.0f}, (float[]){2.0f, 2.0f, 2.0f});
        assert_int_equal(nd_stream_start(s, order, windows, 0, &err), ND_OK);
        for (int k = 0; k < windows; ++k) {
            nd_shard w;
            assert_int_equal(nd_stream_next(s, &w, &err), ND_OK);
            const long off = (long)order[k] * W;
            assert_int_equal(w.first_row, whole.first_row + off);
            assert_int_equal(w.rows, nd_stream_window_rows(s, order[k]));
            for (int i = 0; i < w.rows; ++i) {
                assert_int_equal(w.y[i], whole.y[off + i]);
                for (int j = 0; j < D; ++j) {
                    const float want = whole.x[(off + i) * D + j];
                    assert_true(w.x[i * D + j] == (pass ? (want - (float)(j + 1)) * 2.0f : want));
                }
            }
        }
        nd_shard none;
        assert_int_not_equal(nd_stream_next(s, &none, &err), ND_OK); /* the pass is over */
    }
    /* A pass abandoned after one window, then a scan: every row once, in order. */
    assert_int_equal(nd_stream_start(s, order, windows, 0, &err), ND_OK);
    nd_shard w;
    assert_int_equal(nd_stream_next(s, &w, &err), ND_OK);
    double seen[2] = {0, 0};
    assert_int_equal(nd_stream_scan(s, count_rows, seen, &err), ND_OK);
    assert_true(seen[0] == whole.rows);
    assert_true(seen[1] == whole.first_row + whole.rows - 1); /* the last row seen is the block's last */
    nd_stream_close(s);
    nd_shard_free(&whole);

    float x[N * D];
    for (int i = 0; i < N * D; ++i) x[i] = (float)i;
    x[60 * D + 1] = NAN; /* rank 1's rows are 34..66: window 3 of 7-row windows */
    fx_write_dataset(bad, x, y, N, D, CLASSES, x, y, 0);
    assert_int_equal(nd_stream_open(bad, "train", 1, 3, CLASSES, W, &s, &err), ND_OK);
    for (int k = 0; k < windows; ++k) order[k] = k;
    assert_int_equal(nd_stream_start(s, order, windows, 0, &err), ND_OK);
    nd_status st = ND_OK;
    int k = 0;
    for (; k < windows && st == ND_OK; ++k) st = nd_stream_next(s, &w, &err);
    assert_int_equal(st, ND_ERR_DATA);
    assert_int_equal(k, 4);
    assert_non_null(strstr(err.msg, "/train/x[60][1] is NaN"));
    nd_stream_close(s);
}

/* ---- image shapes ---------------------------------------------------------- */

enum { IM_N = 23, IM_T = 5, IM_C = 2, IM_H = 3, IM_W = 2, IM_D = IM_C * IM_H * IM_W, IM_CLASSES = 3 };

/* The same samples three ways: uint8 N x C x H x W; uint8 N x D with the
 * root attribute image_shape; float32 N x C x H x W chunked 4 rows at a
 * time, with an agreeing image_shape. */
static void write_image_files(char paths[3][512], const unsigned char *u8, const int *y) {
    const char *names[3] = {"image4.h5", "image2.h5", "image4-chunked.h5"};
    const long rows[2] = {IM_N, IM_T};
    const char *xs[2] = {"/train/x", "/test/x"}, *ys[2] = {"/train/y", "/test/y"};
    float f32[IM_N * IM_D];
    for (int i = 0; i < IM_N * IM_D; ++i) f32[i] = 0.5f * u8[i];
    for (int k = 0; k < 3; ++k) {
        fx_path(paths[k], sizeof paths[k], names[k]);
        hid_t f = fx_create(paths[k]);
        fx_attr_int(f, "num_classes", IM_CLASSES);
        if (k > 0) fx_attr_i64s(f, "image_shape", 3, (long long[]){IM_C, IM_H, IM_W});
        for (int s = 0; s < 2; ++s) {
            const hsize_t d4[4] = {(hsize_t)rows[s], IM_C, IM_H, IM_W}, d2[2] = {(hsize_t)rows[s], IM_D};
            const hsize_t chunk[4] = {4, IM_C, IM_H, IM_W}, yd[1] = {(hsize_t)rows[s]};
            if (k == 0) fx_write_u8(f, xs[s], 4, d4, u8, 0.5f);
            else if (k == 1) fx_write_u8(f, xs[s], 2, d2, u8, 0.5f);
            else fx_write_f32_chunked(f, xs[s], 4, d4, chunk, f32);
            fx_write_i32(f, ys[s], 1, yd, y);
        }
        fx_close(f);
    }
}

static void assert_same_shard(const nd_shard *a, const nd_shard *b) {
    assert_int_equal(a->first_row, b->first_row);
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_memory_equal(a->x, b->x, sizeof(float) * (size_t)a->rows * a->cols);
    assert_memory_equal(a->y, b->y, sizeof(int) * (size_t)a->rows);
}

/* --val-fold: fold I of K of /train, read as "val" by any number of ranks,
 * is exactly the I-th block of rows, and "train" is every other row in
 * file order (a rank's block may span the fold: two hyperslabs). Row r's
 * features are r*10 + column, so a row names itself. */
static void test_val_fold(void **state) {
    (void)state;
    char path[512], with_val[512];
    fx_path(path, sizeof path, "folds.h5");
    fx_path(with_val, sizeof with_val, "folds_val.h5");
    enum { ROWS = 23, COLS = 2, CLASSES = 3 };
    float x[ROWS * COLS];
    int y[ROWS];
    for (int r = 0; r < ROWS; ++r) {
        for (int j = 0; j < COLS; ++j) x[r * COLS + j] = (float)(r * 10 + j);
        y[r] = r % CLASSES;
    }
    fx_write_dataset(path, x, y, ROWS, COLS, CLASSES, x, y, 5);
    const int folds = 4, ranks[] = {1, 2, 3, 5};
    for (int fold = 1; fold <= folds; ++fold) {
        nd_dataset_info info;
        nd_error err;
        assert_int_equal(nd_dataset_probe(path, &info, &err), ND_OK);
        assert_int_equal(nd_dataset_hold_out(&info, fold, folds, path, &err), ND_OK);
        long lo, n;
        nd_shard_range(ROWS, fold - 1, folds, &lo, &n);
        assert_true(info.has_val);
        assert_int_equal(info.val.rows, n);
        assert_int_equal(info.train.rows, ROWS - n);
        for (size_t p = 0; p < sizeof ranks / sizeof ranks[0]; ++p) {
            long next_val = lo, next_train = 0;
            for (int r = 0; r < ranks[p]; ++r) {
                nd_shard v, t;
                assert_int_equal(nd_shard_read_info(path, &info, "val", r, r + 1, ranks[p], &v, &err), ND_OK);
                for (int i = 0; i < v.rows; ++i, ++next_val) {
                    assert_float_equal(v.x[i * COLS + 1], next_val * 10 + 1, 0);
                    assert_int_equal(v.y[i], next_val % CLASSES);
                }
                assert_int_equal(nd_shard_read_info(path, &info, "train", r, r + 1, ranks[p], &t, &err), ND_OK);
                for (int i = 0; i < t.rows; ++i, ++next_train) {
                    if (next_train == lo) next_train += n; /* the held-out rows are skipped */
                    assert_float_equal(t.x[i * COLS], next_train * 10, 0);
                    assert_int_equal(t.y[i], next_train % CLASSES);
                }
                nd_shard_free(&v);
                nd_shard_free(&t);
            }
            assert_int_equal(next_val, lo + n);                      /* the fold, whole */
            assert_int_equal(next_train, lo + n < ROWS ? ROWS : lo); /* every other row */
        }
    }
    /* Bad folds, and a file with its own /val, are refused with one line. */
    nd_dataset_info info;
    nd_error err;
    assert_int_equal(nd_dataset_probe(path, &info, &err), ND_OK);
    assert_int_equal(nd_dataset_hold_out(&info, 5, 4, path, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--val-fold 5/4"));
    hid_t f = fx_create(with_val);
    fx_attr_int(f, "num_classes", CLASSES);
    const hsize_t dx[2] = {ROWS, COLS}, dy[1] = {ROWS};
    fx_write_f32(f, "/train/x", 2, dx, x);
    fx_write_i32(f, "/train/y", 1, dy, y);
    fx_write_f32(f, "/val/x", 2, dx, x);
    fx_write_i32(f, "/val/y", 1, dy, y);
    fx_close(f);
    assert_int_equal(nd_dataset_probe(with_val, &info, &err), ND_OK);
    assert_int_equal(nd_dataset_hold_out(&info, 1, 2, with_val, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "has its own /val"));
}

/* A 4-D x and the equivalent 2-D x with image_shape probe alike and give
 * identical shards, parts and streamed windows: flat rows in C, H, W order. */
static void test_image_shape(void **state) {
    (void)state;
    unsigned char u8[IM_N * IM_D];
    int y[IM_N];
    for (int i = 0; i < IM_N * IM_D; ++i) u8[i] = (unsigned char)(i * 13 % 251);
    for (int i = 0; i < IM_N; ++i) y[i] = i % IM_CLASSES;
    char paths[3][512];
    write_image_files(paths, u8, y);
    nd_error err = {0};
    nd_dataset_info info[3];
    for (int k = 0; k < 3; ++k) {
        if (nd_dataset_probe(paths[k], &info[k], &err) != ND_OK) fail_msg("%s", err.msg);
        assert_int_equal(info[k].image_c, IM_C);
        assert_int_equal(info[k].image_h, IM_H);
        assert_int_equal(info[k].image_w, IM_W);
        assert_int_equal(info[k].train.cols, IM_D);
        assert_int_equal(info[k].test.cols, IM_D);
        assert_int_equal(info[k].train.rows, IM_N);
        assert_int_equal(info[k].test.rows, IM_T);
        assert_true(info[k].has_test);
        assert_int_equal(info[k].num_classes, IM_CLASSES);
        /* as stored: 4-D files say so per split */
        assert_int_equal(info[k].train.image_c, k == 1 ? 0 : IM_C);
        assert_int_equal(info[k].test.image_w, k == 1 ? 0 : IM_W);
    }
    assert_true(info[0].train.x_is_uint8 && info[1].train.x_is_uint8 && !info[2].train.x_is_uint8);

    /* No image shape: all 0. */
    char plain[512];
    fx_path(plain, sizeof plain, "image-none.h5");
    float fx[IM_N * IM_D];
    for (int i = 0; i < IM_N * IM_D; ++i) fx[i] = (float)i;
    fx_write_dataset(plain, fx, y, IM_N, IM_D, IM_CLASSES, fx, y, IM_T);
    nd_dataset_info none;
    assert_int_equal(nd_dataset_probe(plain, &none, &err), ND_OK);
    assert_true(none.image_c == 0 && none.image_h == 0 && none.image_w == 0);

    /* Whole shards of 3 ranks, both splits, and parts [1, 3) of 4. */
    const char *splits[2] = {"train", "test"};
    for (int s = 0; s < 2; ++s)
        for (int r = 0; r < 3; ++r) {
            nd_shard sh[3];
            for (int k = 0; k < 3; ++k)
                if (nd_shard_read(paths[k], splits[s], r, 3, IM_CLASSES, &sh[k], &err) != ND_OK)
                    fail_msg("%s", err.msg);
            for (int i = 0; i < sh[0].rows * IM_D; ++i)
                assert_true(sh[0].x[i] == 0.5f * u8[sh[0].first_row * IM_D + i]);
            for (int k = 1; k < 3; ++k) assert_same_shard(&sh[0], &sh[k]);
            for (int k = 0; k < 3; ++k) nd_shard_free(&sh[k]);
        }
    nd_shard parts[3];
    for (int k = 0; k < 3; ++k)
        assert_int_equal(nd_shard_read_parts(paths[k], "train", 1, 3, 4, IM_CLASSES, &parts[k], &err), ND_OK);
    assert_int_equal(parts[0].first_row, 6);
    assert_int_equal(parts[0].rows, 12);
    for (int k = 1; k < 3; ++k) assert_same_shard(&parts[0], &parts[k]);
    for (int k = 0; k < 3; ++k) nd_shard_free(&parts[k]);

    /* Streamed windows of 3 rows of rank 1 of 2, in reverse order. */
    nd_stream *st[3];
    for (int k = 0; k < 3; ++k)
        assert_int_equal(nd_stream_open(paths[k], "train", 1, 2, IM_CLASSES, 3, &st[k], &err), ND_OK);
    const int windows = nd_stream_windows(st[0]);
    assert_int_equal(windows, 4); /* rows 12..22 */
    int order[4];
    for (int w = 0; w < windows; ++w) order[w] = windows - 1 - w;
    for (int k = 0; k < 3; ++k) assert_int_equal(nd_stream_start(st[k], order, windows, 0, &err), ND_OK);
    for (int w = 0; w < windows; ++w) {
        nd_shard win[3];
        for (int k = 0; k < 3; ++k) assert_int_equal(nd_stream_next(st[k], &win[k], &err), ND_OK);
        assert_int_equal(win[0].first_row, 12 + 3 * order[w]);
        for (int i = 0; i < win[0].rows * IM_D; ++i) assert_true(win[0].x[i] == 0.5f * u8[win[0].first_row * IM_D + i]);
        for (int k = 1; k < 3; ++k) assert_same_shard(&win[0], &win[k]);
    }
    for (int k = 0; k < 3; ++k) nd_stream_close(st[k]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_range), cmocka_unit_test(test_uint8_scale_and_hyperslab),
        cmocka_unit_test(test_bad_files),   cmocka_unit_test(test_import_idx),
        cmocka_unit_test(test_synth),       cmocka_unit_test(test_stream_windows),
        cmocka_unit_test(test_image_shape), cmocka_unit_test(test_val_fold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
