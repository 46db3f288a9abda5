/* Private to src/cmd: a line chart on a log10 x axis, drawn into an RGB
 * pixel buffer with a built-in 5x7 bitmap font and written as PNG
 * (nd_png_write). Enough for a rate finder's curve: a few series over
 * shared x values, vertical markers, decade ticks, axis labels. */
#ifndef NNDIST_PLOT_H
#define NNDIST_PLOT_H

#include "nndist/status.h"

#define ND_PLOT_MAX_SERIES 4
#define ND_PLOT_MAX_MARKERS 4

typedef struct {
    const double *y; /* (n) one value per x; non-finite values break the line */
    unsigned char rgb[3];
    int thick;         /* line width in pixels (1 or more) */
    const char *label; /* in the legend (NULL: none) */
} nd_plot_series;

typedef struct {
    double x; /* > 0 */
    unsigned char rgb[3];
    int dashed;
    const char *label; /* in the legend (NULL: none) */
} nd_plot_marker;

typedef struct {
    int width, height; /* pixels */
    const double *x;   /* (n) > 0, drawn on a log10 axis */
    int n;
    double x_lo, x_hi; /* the axis' ends (0 < x_lo < x_hi) */
    double y_lo, y_hi; /* the y axis' ends (y_lo < y_hi); values outside are clipped */
    nd_plot_series series[ND_PLOT_MAX_SERIES];
    int num_series;
    nd_plot_marker markers[ND_PLOT_MAX_MARKERS];
    int num_markers;
    const char *x_label, *y_label, *title; /* NULL: none */
} nd_plot;

/* Draws p and writes it to path (RGB PNG of p->width x p->height,
 * replaced atomically). */
nd_status nd_plot_write_png(const nd_plot *p, const char *path, nd_error *err);

/* The text's width in pixels at the font's scale 1 (6 a character). */
int nd_plot_text_width(const char *text);

#endif
