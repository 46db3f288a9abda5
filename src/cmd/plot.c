/* A line chart on a log10 x axis in an RGB pixel buffer (plot.h): white
 * background, the plot area framed, a light grid at each decade with its
 * label, minor ticks at 2..9, "nice" y ticks, lines drawn with a square
 * brush, vertical markers, a legend, and text in a built-in 5x7 font. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nndist/png.h"

/* 5x7 glyphs, one byte a row (bit 4 = the leftmost column), after the
 * HD44780 character ROM; a character not here is drawn as a blank. */
typedef struct {
    char c;
    unsigned char rows[7];
} glyph;

static const glyph font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}}, {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}}, {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}}, {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x00, 0x0F, 0x11, 0x0F, 0x01, 0x0E}}, {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}}, {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}}, {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}}, {'p', {0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10}},
    {'q', {0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01}}, {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}}, {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}}, {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
};

typedef struct {
    unsigned char *px; /* (h x w x 3) */
    int w, h;
    int clip_x0, clip_y0, clip_x1, clip_y1; /* drawing stays within [x0, x1] x [y0, y1] */
} canvas;

static void put_pixel(canvas *c, int x, int y, const unsigned char rgb[3]) {
    if (x < c->clip_x0 || x > c->clip_x1 || y < c->clip_y0 || y > c->clip_y1) return;
    memcpy(c->px + ((size_t)y * c->w + x) * 3, rgb, 3);
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, const unsigned char rgb[3]) {
    for (int y = y0; y <= y1; ++y)
        for (int x = x0; x <= x1; ++x) put_pixel(c, x, y, rgb);
}

/* A line of width `thick` (a square brush along Bresenham's path). */
static void draw_line(canvas *c, int x0, int y0, int x1, int y1, int thick, const unsigned char rgb[3]) {
    const int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    const int lo = -(thick - 1) / 2, hi = thick / 2;
    int e = dx + dy;
    for (;;) {
        fill_rect(c, x0 + lo, y0 + lo, x0 + hi, y0 + hi, rgb);
        if (x0 == x1 && y0 == y1) return;
        const int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

static const unsigned char *glyph_rows(char ch) {
    if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a'); /* one case */
    for (size_t i = 0; i < sizeof font / sizeof font[0]; ++i)
        if (font[i].c == ch) return font[i].rows;
    return NULL;
}

static int max_int(int a, int b) { return a > b ? a : b; }

int nd_plot_text_width(const char *text) { return 6 * (int)strlen(text) - 1; }

/* text with its top-left corner at (x, y). */
static void draw_text(canvas *c, int x, int y, const char *text, const unsigned char rgb[3]) {
    for (; *text; ++text, x += 6) {
        const unsigned char *rows = glyph_rows(*text);
        for (int r = 0; rows && r < 7; ++r)
            for (int b = 0; b < 5; ++b)
                if (rows[r] & (0x10 >> b)) put_pixel(c, x + b, y + r, rgb);
    }
}

/* A tick label for 10^k: 0.01 .. 100 in full, else 1e-7. */
static void decade_label(int k, char *out, size_t cap) {
    if (k >= -2 && k <= 2) snprintf(out, cap, "%g", pow(10.0, k));
    else snprintf(out, cap, "1e%d", k);
}

/* A step of 1, 2 or 5 x 10^m that cuts span into about `parts`. */
static double nice_step(double span, int parts) {
    const double raw = span / parts, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

enum { MARGIN_LEFT = 58, MARGIN_RIGHT = 16, MARGIN_TOP = 26, MARGIN_BOTTOM = 40 };

nd_status nd_plot_write_png(const nd_plot *p, const char *path, nd_error *err) {
    if (p->width < 200 || p->height < 150 || !(p->x_lo > 0.0) || !(p->x_hi > p->x_lo) || !(p->y_hi > p->y_lo))
        return ND_FAIL(err, ND_ERR_ARG, "plot %s: bad axes (x %g..%g, y %g..%g) or size %dx%d", path, p->x_lo, p->x_hi,
                       p->y_lo, p->y_hi, p->width, p->height);
    canvas c = {.w = p->width, .h = p->height, .clip_x1 = p->width - 1, .clip_y1 = p->height - 1};
    c.px = malloc((size_t)p->width * p->height * 3);
    if (!c.px) return ND_FAIL(err, ND_ERR_NOMEM, "plot %s: cannot allocate %dx%d pixels", path, p->width, p->height);
    memset(c.px, 255, (size_t)p->width * p->height * 3);
    const unsigned char black[3] = {0, 0, 0}, grid[3] = {225, 225, 225}, grey[3] = {90, 90, 90};
    const int x0 = MARGIN_LEFT, x1 = p->width - 1 - MARGIN_RIGHT, y0 = MARGIN_TOP, y1 = p->height - 1 - MARGIN_BOTTOM;
    const double lx0 = log10(p->x_lo), lx1 = log10(p->x_hi);
#define PX(v) (x0 + (int)lround((log10(v) - lx0) / (lx1 - lx0) * (x1 - x0)))
#define PY(v) (y1 - (int)lround(((v)-p->y_lo) / (p->y_hi - p->y_lo) * (y1 - y0)))
    char label[32];
    /* The x axis: a grid line and a label at each decade, minor ticks between. */
    for (int k = (int)ceil(lx0 - 1e-9) - 1; k <= (int)floor(lx1 + 1e-9); ++k)
        for (int m = 1; m <= 9; ++m) {
            const double v = m * pow(10.0, k);
            if (v < p->x_lo * (1 - 1e-9) || v > p->x_hi * (1 + 1e-9)) continue;
            const int x = PX(v);
            if (m == 1) {
                draw_line(&c, x, y0, x, y1, 1, grid);
                draw_line(&c, x, y1, x, y1 + 6, 1, black);
                decade_label(k, label, sizeof label);
                draw_text(&c, x - nd_plot_text_width(label) / 2, y1 + 9, label, black);
            } else {
                draw_line(&c, x, y1, x, y1 + 3, 1, black);
            }
        }
    /* The y axis: about 6 ticks at round values. */
    const double step = nice_step(p->y_hi - p->y_lo, 6);
    for (double v = ceil(p->y_lo / step) * step; v <= p->y_hi + 1e-9 * step; v += step) {
        const int y = PY(v);
        draw_line(&c, x0, y, x1, y, 1, grid);
        draw_line(&c, x0 - 5, y, x0, y, 1, black);
        snprintf(label, sizeof label, "%.3g", fabs(v) < 1e-9 * step ? 0.0 : v);
        draw_text(&c, x0 - 8 - nd_plot_text_width(label), y - 3, label, black);
    }
    if (p->x_label) draw_text(&c, (x0 + x1 - nd_plot_text_width(p->x_label)) / 2, y1 + 26, p->x_label, black);
    if (p->y_label) draw_text(&c, 4, y0 - 16, p->y_label, black);
    if (p->title) draw_text(&c, (x0 + x1 - nd_plot_text_width(p->title)) / 2, 6, p->title, black);
    /* Inside the frame: markers under the series. */
    c.clip_x0 = x0 + 1, c.clip_y0 = y0 + 1, c.clip_x1 = x1 - 1, c.clip_y1 = y1 - 1;
    for (int i = 0; i < p->num_markers; ++i) {
        const nd_plot_marker *mk = &p->markers[i];
        if (!(mk->x >= p->x_lo && mk->x <= p->x_hi)) continue;
        const int x = PX(mk->x);
        for (int y = y0; y <= y1; y += mk->dashed ? 8 : 1) draw_line(&c, x, y, x, mk->dashed ? y + 4 : y, 2, mk->rgb);
    }
    for (int s = 0; s < p->num_series; ++s) {
        const nd_plot_series *se = &p->series[s];
        int have = 0, px0 = 0, py0 = 0;
        for (int i = 0; i < p->n; ++i) {
            const double y = se->y[i], x = p->x[i];
            if (!isfinite(y) || !(x > 0.0)) {
                have = 0;
                continue;
            }
            const double yc = y < p->y_lo ? p->y_lo : y > p->y_hi ? p->y_hi : y; /* clipped to the frame */
            const int px = PX(x), py = PY(yc);
            if (have) draw_line(&c, px0, py0, px, py, se->thick, se->rgb);
            else draw_line(&c, px, py, px, py, se->thick, se->rgb);
            have = 1, px0 = px, py0 = py;
        }
    }
    /* The legend, bottom left inside the frame (a range test starts high on the left and ends low on the right). */
    int rows = 0, widest = 0;
    for (int s = 0; s < p->num_series; ++s)
        if (p->series[s].label) rows++, widest = max_int(widest, nd_plot_text_width(p->series[s].label));
    for (int i = 0; i < p->num_markers; ++i)
        if (p->markers[i].label) rows++, widest = max_int(widest, nd_plot_text_width(p->markers[i].label));
    if (rows) {
        const int lw = widest + 34, lh = rows * 12 + 6, lx = x0 + 6, ly = y1 - 6 - lh;
        const unsigned char white[3] = {255, 255, 255};
        fill_rect(&c, lx, ly, lx + lw, ly + lh, white);
        draw_line(&c, lx, ly, lx + lw, ly, 1, grey), draw_line(&c, lx, ly + lh, lx + lw, ly + lh, 1, grey);
        draw_line(&c, lx, ly, lx, ly + lh, 1, grey), draw_line(&c, lx + lw, ly, lx + lw, ly + lh, 1, grey);
        int row = 0;
        for (int s = 0; s < p->num_series; ++s) {
            if (!p->series[s].label) continue;
            const int y = ly + 6 + 12 * row++;
            draw_line(&c, lx + 6, y + 3, lx + 24, y + 3, p->series[s].thick, p->series[s].rgb);
            draw_text(&c, lx + 30, y, p->series[s].label, black);
        }
        for (int i = 0; i < p->num_markers; ++i) {
            if (!p->markers[i].label) continue;
            const int y = ly + 6 + 12 * row++;
            for (int x = lx + 6; x <= lx + 24; x += p->markers[i].dashed ? 8 : 1)
                draw_line(&c, x, y + 3, p->markers[i].dashed ? x + 4 : x, y + 3, 2, p->markers[i].rgb);
            draw_text(&c, lx + 30, y, p->markers[i].label, black);
        }
    }
    /* The frame last, over everything. */
    c.clip_x0 = 0, c.clip_y0 = 0, c.clip_x1 = p->width - 1, c.clip_y1 = p->height - 1;
    draw_line(&c, x0, y0, x1, y0, 1, black), draw_line(&c, x0, y1, x1, y1, 1, black);
    draw_line(&c, x0, y0, x0, y1, 1, black), draw_line(&c, x1, y0, x1, y1, 1, black);
#undef PX
#undef PY
    const nd_status st = nd_png_write(path, c.px, p->width, p->height, 3, err);
    free(c.px);
    return st;
}
