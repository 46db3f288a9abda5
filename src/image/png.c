/* A minimal PNG encoder: one IHDR, one zlib-compressed IDAT (filter 0 on
 * every row), IEND. Enough for plots and weight tiles; no palette, no
 * interlace, no ancillary chunks. */
#include "nndist/png.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One chunk: length, type, data, CRC over type and data. */
static int put_chunk(FILE *f, const char type[4], const unsigned char *data, size_t length) {
    unsigned char head[8], tail[4];
    put_u32(head, (uint32_t)length);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (length > 0) crc = crc32(crc, data, (uInt)length);
    put_u32(tail, (uint32_t)crc);
    return fwrite(head, 1, 8, f) == 8 && (length == 0 || fwrite(data, 1, length, f) == length) &&
        fwrite(tail, 1, 4, f) == 4;
}

nd_status nd_png_write(const char *path, const unsigned char *pixels, int width, int height, int channels,
                       nd_error *err) {
    if (width < 1 || height < 1 || width > (1 << 15) || height > (1 << 15) || (channels != 1 && channels != 3))
        return ND_FAIL(err, ND_ERR_ARG, "%s: cannot draw a %dx%d image of %d channels", path, width, height, channels);
    const size_t row = (size_t)width * (size_t)channels + 1; /* the filter byte, then the pixels */
    const size_t raw_size = row * (size_t)height;
    uLongf packed_size = compressBound((uLong)raw_size);
    unsigned char *raw = malloc(raw_size), *packed = malloc(packed_size);
    char tmp[4096];
    if (!raw || !packed) {
        free(raw), free(packed);
        return ND_FAIL(err, ND_ERR_NOMEM, "%s: no memory for a %dx%d image", path, width, height);
    }
    for (int y = 0; y < height; ++y) {
        raw[(size_t)y * row] = 0;
        memcpy(raw + (size_t)y * row + 1, pixels + (size_t)y * (row - 1), row - 1);
    }
    nd_status st = ND_OK;
    if (compress2(packed, &packed_size, raw, (uLong)raw_size, 6) != Z_OK) {
        st = ND_FAIL(err, ND_ERR_STATE, "%s: zlib could not compress the image", path);
        goto done;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        st = ND_FAIL(err, ND_ERR_ARG, "%s: path too long", path);
        goto done;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = ND_FAIL(err, ND_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13];
    put_u32(ihdr, (uint32_t)width);
    put_u32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;                        /* bits per sample */
    ihdr[9] = channels == 1 ? 0 : 2;    /* gray or truecolour */
    ihdr[10] = ihdr[11] = ihdr[12] = 0; /* deflate, adaptive filters, no interlace */
    int ok = fwrite(signature, 1, 8, f) == 8 && put_chunk(f, "IHDR", ihdr, sizeof ihdr) &&
        put_chunk(f, "IDAT", packed, packed_size) && put_chunk(f, "IEND", NULL, 0);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        st = ND_FAIL(err, ND_ERR_IO, "%s: %s", ok ? path : tmp, errno ? strerror(errno) : "write failed");
        remove(tmp);
    }
done:
    free(raw), free(packed);
    return st;
}
