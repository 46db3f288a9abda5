/* For tests/torch_conv_check.py: runs one convolution or pooling layer of
 * nndist's core on what the script writes and writes the results back, so
 * that the script can put them beside PyTorch's nn.Conv2d / MaxPool2d /
 * AvgPool2d on the same numbers.
 *   conv_io IN OUT
 * IN: 9 int32 (kind: 0 conv, 1 max pool, 2 average pool; batch, c, h, w,
 * out_c, kernel, stride, pad), then float32 x (batch c h w), and for a
 * convolution w (out_c c k k) and b (out_c), then dout (batch out_c oh ow).
 * OUT: float32 out, dx, and for a convolution dw, db. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "nndist/layers.h"

static float *read_floats(FILE *f, size_t n) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    if (!v || fread(v, sizeof(float), n, f) != n) {
        fprintf(stderr, "conv_io: short input\n");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    int32_t h[9];
    if (!in || !out || fread(h, sizeof h, 1, in) != 1) return 2;
    const int kind = h[0], batch = h[1];
    nd_conv_geom g = {
        .c = h[2], .h = h[3], .w = h[4], .out_c = kind ? h[2] : h[5], .kernel = h[6], .stride = h[7], .pad = h[8]};
    if (nd_conv_geom_finish(&g) != 0) return 3;
    const size_t nx = (size_t)batch * g.c * g.h * g.w, ny = (size_t)batch * g.out_c * g.out_h * g.out_w;
    const size_t nw = (size_t)g.out_c * g.c * g.kernel * g.kernel;
    float *x = read_floats(in, nx), *w = kind ? NULL : read_floats(in, nw), *b = kind ? NULL : read_floats(in, g.out_c);
    float *dout = read_floats(in, ny);
    float *y = calloc(ny, sizeof(float)), *dx = calloc(nx, sizeof(float)), *dw = calloc(nw, sizeof(float));
    float *db = calloc((size_t)g.out_c, sizeof(float)), *col = calloc(nd_conv_scratch_floats(&g) + 1, sizeof(float));
    int *arg = calloc(ny, sizeof(int));
    const nd_activation identity = {ND_ACT_IDENTITY, 0.0f};
    if (kind == 0) {
        nd_conv_forward(y, x, w, b, identity, col, &g, batch);
        nd_conv_backward_bias(dout, y, db, identity, &g, batch);
        nd_conv_backward(dx, dw, dout, x, w, col, &g, batch);
    } else if (kind == 1) {
        nd_maxpool_forward(y, arg, x, &g, batch);
        nd_maxpool_backward(dx, dout, arg, &g, batch);
    } else {
        nd_avgpool_forward(y, x, &g, batch);
        nd_avgpool_backward(dx, dout, &g, batch);
    }
    fwrite(y, sizeof(float), ny, out);
    fwrite(dx, sizeof(float), nx, out);
    if (kind == 0) {
        fwrite(dw, sizeof(float), nw, out);
        fwrite(db, sizeof(float), (size_t)g.out_c, out);
    }
    free(x), free(w), free(b), free(dout), free(y), free(dx), free(dw), free(db), free(col), free(arg);
    fclose(in);
    return fclose(out) == 0 ? 0 : 1;
}
