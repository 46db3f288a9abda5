/* A seeded synthetic set: Gaussian blobs with class labels or, with
 * targets > 0, targets that are functions of x: t_k = x . u_k / sqrt(D)
 * plus a little noise (regression) or its sign as 0/1 (multi-label). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5io.h"
#include "nndist/data.h"
#include "nndist/rng.h"

/* Draws rows samples: label uniform over classes, x = centre[label] + N(0, 1). */
static void draw(float *x, int *y, long rows, int features, int classes, const float *centres, nd_rng *rng) {
    for (long i = 0; i < rows; ++i) {
        int c = (int)nd_rng_below(rng, (uint64_t)classes);
        y[i] = c;
        for (int j = 0; j < features; ++j)
            x[(size_t)i * features + j] = centres[(size_t)c * features + j] + (float)nd_rng_normal(rng);
    }
}

/* t (rows x targets) from x (rows x features) and directions u (targets x features). */
static void draw_targets(float *t, const float *x, long rows, int features, int targets, int multilabel, const float *u,
                         nd_rng *rng) {
    const double norm = 1.0 / sqrt((double)features);
    for (long i = 0; i < rows; ++i)
        for (int k = 0; k < targets; ++k) {
            double v = 0.0;
            for (int j = 0; j < features; ++j) v += (double)x[(size_t)i * features + j] * u[(size_t)k * features + j];
            v *= norm;
            t[(size_t)i * targets + k] = multilabel ? (v > 0.0 ? 1.0f : 0.0f) : (float)(v + 0.1 * nd_rng_normal(rng));
        }
}

nd_status nd_synth_write(const nd_synth_config *cfg, const char *out, nd_error *err) {
    if (cfg->rows <= 0 || cfg->test_rows < 0 || cfg->val_rows < 0 || cfg->features <= 0 || cfg->classes < 2 ||
        !(cfg->separation >= 0.0f) || cfg->targets < 0 || cfg->targets > 4096 ||
        (cfg->image[0] > 0 && (long)cfg->image[0] * cfg->image[1] * cfg->image[2] != cfg->features))
        return ND_FAIL(err, ND_ERR_ARG,
                       "data synth: need --rows > 0, --test-rows >= 0, --val-rows >= 0, --features > 0, "
                       "--classes >= 2, --separation >= 0, 0 <= --targets <= 4096, --image C x H x W = --features");
    if (access(out, F_OK) == 0)
        return ND_FAIL(err, ND_ERR_ARG, "%s: already exists; data synth does not overwrite files", out);
    long most = cfg->rows;
    if (cfg->test_rows > most) most = cfg->test_rows;
    if (cfg->val_rows > most) most = cfg->val_rows;
    float *centres = malloc(sizeof(float) * (size_t)cfg->classes * cfg->features);
    float *x = malloc(sizeof(float) * (size_t)most * cfg->features);
    int *y = malloc(sizeof(int) * (size_t)most);
    float *u = cfg->targets ? malloc(sizeof(float) * (size_t)cfg->targets * cfg->features) : NULL;
    float *t = cfg->targets ? malloc(sizeof(float) * (size_t)most * cfg->targets) : NULL;
    nd_status st = ND_OK;
    hid_t f = H5I_INVALID_HID;
    if (!centres || !x || !y || (cfg->targets && (!u || !t))) {
        st = ND_FAIL(err, ND_ERR_NOMEM, "data synth: cannot allocate %ld x %d floats", most, cfg->features);
        goto done;
    }
    nd_rng rng;
    nd_rng_seed(&rng, cfg->seed, 0x5eed, 0);
    for (size_t i = 0; i < (size_t)cfg->classes * cfg->features; ++i)
        centres[i] = cfg->separation * (float)nd_rng_normal(&rng);
    for (size_t i = 0; i < (size_t)cfg->targets * cfg->features; ++i) u[i] = (float)nd_rng_normal(&rng);
    h5io_quiet();
    f = H5Fcreate(out, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        st = ND_FAIL(err, ND_ERR_IO, "%s: cannot create the file", out);
        goto done;
    }
    if (!cfg->targets && (st = h5io_write_attr_int(f, "num_classes", cfg->classes, out, err)) != ND_OK) goto done;
    if (cfg->image[0] > 0 && (st = h5io_write_attr_ints(f, "image_shape", cfg->image, 3, out, err)) != ND_OK) goto done;
    const char *names[3] = {"train", "test", "val"};
    const long counts[3] = {cfg->rows, cfg->test_rows, cfg->val_rows};
    for (int s = 0; s < 3 && st == ND_OK; ++s) {
        if (counts[s] == 0) continue;
        nd_rng_seed(&rng, cfg->seed, 0x5eed, (uint64_t)s + 1); /* one stream per split */
        draw(x, y, counts[s], cfg->features, cfg->classes, centres, &rng);
        if (t) draw_targets(t, x, counts[s], cfg->features, cfg->targets, cfg->multilabel, u, &rng);
        st = h5io_write_split(f, out, names[s], H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, x, 0.0f, y, t, cfg->targets,
                              counts[s], cfg->features, err);
    }
done:
    if (f >= 0 && H5Fclose(f) < 0 && st == ND_OK) st = ND_FAIL(err, ND_ERR_IO, "%s: cannot close the file", out);
    if (st != ND_OK && f >= 0) unlink(out); /* a half-written file is worse than none */
    free(centres);
    free(x);
    free(y);
    free(u);
    free(t);
    return st;
}
