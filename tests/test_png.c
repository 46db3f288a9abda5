/* The PNG writer: the file is read back independently (chunk walk, CRCs,
 * zlib inflate of IDAT) and its pixels compared with what was drawn; and
 * `nndist show-weights`: a checkpoint's first-layer weights as tiles,
 * each pixel its weight scaled per tile to 0..255. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cmocka.h>

#include "nndist/checkpoint.h"
#include "nndist/commands.h"
#include "nndist/model.h"
#include "nndist/png.h"

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads path back into pixels (height x width x channels), asserting the
 * signature, the chunk order and every CRC. */
static void read_back(const char *path, int width, int height, int channels, unsigned char *pixels) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static unsigned char file[1 << 20];
    size_t size = fread(file, 1, sizeof file, f);
    fclose(f);
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_true(size > 8);
    assert_memory_equal(file, signature, 8);
    size_t at = 8;
    const char *order[] = {"IHDR", "IDAT", "IEND"};
    const unsigned char *idat = NULL;
    size_t idat_size = 0;
    for (int c = 0; c < 3; ++c) {
        assert_true(at + 12 <= size);
        uint32_t length = get_u32(file + at);
        assert_memory_equal(file + at + 4, order[c], 4);
        uLong crc = crc32(0L, file + at + 4, 4 + length);
        assert_int_equal(get_u32(file + at + 8 + length), (uint32_t)crc);
        if (c == 0) {
            assert_int_equal(get_u32(file + at + 8), (uint32_t)width);
            assert_int_equal(get_u32(file + at + 12), (uint32_t)height);
            assert_int_equal(file[at + 16], 8);
            assert_int_equal(file[at + 17], channels == 1 ? 0 : 2);
        }
        if (c == 1) idat = file + at + 8, idat_size = length;
        at += 12 + length;
    }
    assert_int_equal(at, size);
    const size_t row = (size_t)width * (size_t)channels + 1;
    uLongf raw_size = (uLongf)(row * (size_t)height);
    unsigned char *raw = malloc(raw_size);
    assert_int_equal(uncompress(raw, &raw_size, idat, idat_size), Z_OK);
    assert_int_equal(raw_size, row * (size_t)height);
    for (int y = 0; y < height; ++y) {
        assert_int_equal(raw[(size_t)y * row], 0); /* filter: none */
        memcpy(pixels + (size_t)y * (row - 1), raw + (size_t)y * row + 1, row - 1);
    }
    free(raw);
}

static void roundtrip(int width, int height, int channels) {
    const size_t n = (size_t)width * (size_t)height * (size_t)channels;
    unsigned char *drawn = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; ++i) drawn[i] = (unsigned char)((i * 37u + i / 7u) & 0xffu);
    char path[512];
    snprintf(path, sizeof path, "%s/png_%dx%dx%d.png", NNDIST_TEST_TMP, width, height, channels);
    nd_error err = {0};
    assert_int_equal(nd_png_write(path, drawn, width, height, channels, &err), ND_OK);
    read_back(path, width, height, channels, back);
    assert_memory_equal(drawn, back, n);
    free(drawn), free(back);
}

static void test_gray_and_rgb(void **state) {
    (void)state;
    roundtrip(1, 1, 1);
    roundtrip(28, 28, 1);
    roundtrip(97, 13, 3);
}

static void test_refuses_bad_shapes_and_keeps_old_file(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/png_keep.png", NNDIST_TEST_TMP);
    unsigned char px[12] = {0};
    nd_error err = {0};
    assert_int_equal(nd_png_write(path, px, 2, 2, 3, &err), ND_OK);
    struct stat before;
    assert_int_equal(stat(path, &before), 0);
    assert_int_equal(nd_png_write(path, px, 2, 2, 2, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "2 channels"));
    assert_int_equal(nd_png_write(path, px, 0, 2, 1, &err), ND_ERR_ARG);
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_size, after.st_size);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.png", NNDIST_TEST_TMP);
    assert_int_equal(nd_png_write(missing, px, 2, 2, 1, &err), ND_ERR_IO);
    assert_non_null(strstr(err.msg, "x.png.tmp"));
}

/* A checkpoint of arch with weights sin(j) at path. */
static void write_model(const char *arch, const char *path, nd_model *m) {
    nd_model_spec spec;
    char why[128];
    assert_int_equal(nd_arch_parse(arch, (nd_activation){ND_ACT_RELU, 0.0f}, &spec, why, sizeof why), 0);
    nd_error err = {0};
    assert_int_equal(nd_model_create(m, &spec, 1, &err), ND_OK);
    for (size_t j = 0; j < m->num_params; ++j) m->param[j] = (float)sin((double)j * 0.7);
    /* Normalization statistics of the input's width (a 3x6x6 image has 108). */
    float *mean = calloc((size_t)spec.input_dim, sizeof(float)), *inv_std = malloc(sizeof(float) * spec.input_dim);
    assert_non_null(mean);
    assert_non_null(inv_std);
    for (int i = 0; i < spec.input_dim; ++i) inv_std[i] = 1.0f;
    nd_ckpt_meta meta = {.world_size = 1, .global_batch = 1};
    assert_int_equal(nd_checkpoint_write(path, m, NULL, mean, inv_std, NULL, &meta, &err), ND_OK);
    free(mean), free(inv_std);
}

static nd_status show(const char *ckpt, const char *png, const char *more, nd_error *err) {
    char zoom[] = "--zoom", two[] = "2", out[] = "--out", layer[] = "--layer";
    char a0[512], a2[512], extra[16];
    snprintf(a0, sizeof a0, "%s", ckpt);
    snprintf(a2, sizeof a2, "%s", png);
    snprintf(extra, sizeof extra, "%s", more ? more : "");
    char *argv[] = {a0, out, a2, zoom, two, layer, extra, NULL};
    return nd_cmd_show_weights(more ? 7 : 5, argv, err);
}

/* Tile t's pixel (y, x) of plane p holds its weight scaled by the tile's own min and max. */
static void check_tiles(const nd_model *m, int l, const unsigned char *px, int width, int cols, int n, int c, int h,
                        int w, int zoom) {
    const float *W = m->param + m->layer[l].w.offset;
    const int plane = h * w;
    for (int t = 0; t < n; ++t) {
        const float *tile = W + (size_t)t * c * plane;
        float lo = tile[0], hi = tile[0];
        for (int k = 0; k < c * plane; ++k) lo = fminf(lo, tile[k]), hi = fmaxf(hi, tile[k]);
        const int y0 = (t / cols) * (h * zoom + 1), x0 = (t % cols) * (w * zoom + 1);
        for (int y = 0; y < h * zoom; ++y)
            for (int x = 0; x < w * zoom; ++x)
                for (int p = 0; p < c; ++p) {
                    const float v = tile[p * plane + (y / zoom) * w + x / zoom];
                    const long want = lround(((double)v - lo) / ((double)hi - lo) * 255.0);
                    assert_int_equal(px[((size_t)(y0 + y) * width + x0 + x) * c + p], want);
                }
        if (t % cols) /* the separator left of the tile is black */
            assert_int_equal(px[((size_t)y0 * width + x0 - 1) * c], 0);
    }
}

static void test_show_weights_dense(void **state) {
    (void)state;
    char ckpt[512], png[512];
    snprintf(ckpt, sizeof ckpt, "%s/show_dense.h5", NNDIST_TEST_TMP);
    snprintf(png, sizeof png, "%s/show_dense.png", NNDIST_TEST_TMP);
    nd_model m;
    write_model("1x4x4-5:relu-3", ckpt, &m);
    nd_error err = {0};
    assert_int_equal(show(ckpt, png, NULL, &err), ND_OK);
    /* 5 units of 4x4 at zoom 2: 3 columns, 2 rows of 8x8 tiles, 1-pixel separators. */
    const int width = 3 * 9 - 1, height = 2 * 9 - 1;
    unsigned char px[26 * 17];
    read_back(png, width, height, 1, px);
    check_tiles(&m, 0, px, width, 3, 5, 1, 4, 4, 2);
    /* The second layer's inputs are hidden units, not an image. */
    assert_int_equal(show(ckpt, png, "2", &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--layer 2"));
    assert_int_equal(show(ckpt, png, "3", &err), ND_ERR_ARG);
    nd_model_destroy(&m);
    /* Flat features that are not a square have no shape to draw. */
    write_model("12-5:relu-3", ckpt, &m);
    assert_int_equal(show(ckpt, png, NULL, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "no image shape"));
    nd_model_destroy(&m);
}

static void test_show_weights_conv_rgb(void **state) {
    (void)state;
    char ckpt[512], png[512];
    snprintf(ckpt, sizeof ckpt, "%s/show_conv.h5", NNDIST_TEST_TMP);
    snprintf(png, sizeof png, "%s/show_conv.png", NNDIST_TEST_TMP);
    nd_model m;
    write_model("3x6x6-c4k3p1:relu-gap-2", ckpt, &m);
    nd_error err = {0};
    assert_int_equal(show(ckpt, png, NULL, &err), ND_OK);
    /* 4 RGB filters of 3x3 at zoom 2: 2 x 2 tiles of 6x6. */
    const int width = 2 * 7 - 1, height = 2 * 7 - 1;
    unsigned char px[13 * 13 * 3];
    read_back(png, width, height, 3, px);
    check_tiles(&m, 0, px, width, 2, 4, 3, 3, 3, 2);
    nd_model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gray_and_rgb),
        cmocka_unit_test(test_refuses_bad_shapes_and_keeps_old_file),
        cmocka_unit_test(test_show_weights_dense),
        cmocka_unit_test(test_show_weights_conv_rgb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
