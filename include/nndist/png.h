/* PNG images for the commands that draw (weights as tiles, a rate-finder's
 * curve): 8-bit gray or RGB, written atomically. The only zlib user for
 * output, behind this one call. */
#ifndef NNDIST_PNG_H
#define NNDIST_PNG_H

#include "nndist/status.h"

/* Writes pixels (height x width x channels bytes, rows top to bottom;
 * channels 1 = gray, 3 = RGB) to path as a PNG, through path.tmp and a
 * rename, so an existing file is replaced whole or not at all. */
nd_status nd_png_write(const char *path, const unsigned char *pixels, int width, int height, int channels,
                       nd_error *err);

#endif
