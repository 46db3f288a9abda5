/* The PNG writer: the file is read back independently (chunk walk, CRCs,
 * zlib inflate of IDAT) and its pixels compared with what was drawn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cmocka.h>

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gray_and_rgb),
        cmocka_unit_test(test_refuses_bad_shapes_and_keeps_old_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
