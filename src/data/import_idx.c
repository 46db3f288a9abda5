/* IDX (MNIST-style) files to the HDF5 dataset layout. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset_internal.h"
#include "h5io.h"
#include "nndist/data.h"

/* What nndist reads per row (MAX_COLS of dataset.c). */
#define MAX_IMAGE_VALUES (1 << 24)

typedef struct {
    int ndims;
    uint32_t dims[3];
    size_t count;          /* product of dims */
    unsigned char *values; /* (count) uint8 payload */
} idx_array;

/* Reads a whole IDX file of unsigned bytes; gzread reads plain files too. */
static nd_status idx_read(const char *path, int want_ndims, idx_array *a, nd_error *err) {
    memset(a, 0, sizeof *a);
    gzFile g = gzopen(path, "rb");
    if (!g) return ND_FAIL(err, ND_ERR_IO, "%s: %s", path, errno ? strerror(errno) : "cannot open");
    unsigned char head[4], dim[4];
    nd_status st = ND_OK;
    if (gzread(g, head, 4) != 4) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: too short to be an IDX file", path);
        goto done;
    }
    /* Magic: two zero bytes, type 0x08 (unsigned byte), number of dimensions. */
    if (head[0] != 0 || head[1] != 0 || head[2] != 0x08 || head[3] != want_ndims) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: not an IDX file of %d-D unsigned bytes (magic %02x %02x %02x %02x)", path,
                     want_ndims, head[0], head[1], head[2], head[3]);
        goto done;
    }
    a->ndims = want_ndims;
    a->count = 1;
    for (int i = 0; i < want_ndims; ++i) {
        if (gzread(g, dim, 4) != 4) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: header ends early", path);
            goto done;
        }
        a->dims[i] = (uint32_t)dim[0] << 24 | (uint32_t)dim[1] << 16 | (uint32_t)dim[2] << 8 | dim[3];
        if (a->dims[i] == 0 || a->count > (SIZE_MAX >> 1) / a->dims[i] || a->count * a->dims[i] > (1ull << 34)) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: implausible dimension %u", path, a->dims[i]);
            goto done;
        }
        a->count *= a->dims[i];
    }
    a->values = malloc(a->count);
    if (!a->values) {
        st = ND_FAIL(err, ND_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, a->count);
        goto done;
    }
    size_t got = 0;
    while (got < a->count) {
        size_t want = a->count - got > (1u << 30) ? (1u << 30) : a->count - got;
        int n = gzread(g, a->values + got, (unsigned)want);
        if (n <= 0) break;
        got += (size_t)n;
    }
    if (got != a->count)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: holds %zu of the %zu values its header promises", path, got, a->count);
done:
    gzclose(g);
    if (st != ND_OK) {
        free(a->values);
        a->values = NULL;
    }
    return st;
}

nd_status nd_import_idx(const char *images, const char *labels, const char *split, const char *out, double val_fraction,
                        nd_error *err) {
    if (strcmp(split, "train") && strcmp(split, "test") && strcmp(split, "val"))
        return ND_FAIL(err, ND_ERR_ARG, "--split: '%s' must be train, val or test", split);
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return ND_FAIL(err, ND_ERR_ARG, "--val-fraction: %g must be in [0, 1)", val_fraction);
    if (val_fraction > 0.0 && strcmp(split, "train"))
        return ND_FAIL(err, ND_ERR_ARG, "--val-fraction: only a train split can give up rows to /val");
    idx_array img, lab;
    ND_TRY(idx_read(images, 3, &img, err));
    nd_status st = idx_read(labels, 1, &lab, err);
    int *y = NULL, existed = 1;
    hid_t f = H5I_INVALID_HID;
    if (st != ND_OK) goto done;
    if (lab.dims[0] != img.dims[0]) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s holds %u images but %s holds %u labels", images, img.dims[0], labels,
                     lab.dims[0]);
        goto done;
    }
    if ((uint64_t)img.dims[1] * img.dims[2] > MAX_IMAGE_VALUES) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: images of %u x %u pixels are more than the %d features a row may hold",
                     images, img.dims[1], img.dims[2], MAX_IMAGE_VALUES);
        goto done;
    }
    const int image[3] = {1, (int)img.dims[1], (int)img.dims[2]}; /* C, H, W */
    const long n = img.dims[0];
    y = malloc(sizeof(int) * (size_t)n);
    if (!y) {
        st = ND_FAIL(err, ND_ERR_NOMEM, "cannot allocate %ld labels", n);
        goto done;
    }
    int max_label = 0;
    for (long i = 0; i < n; ++i) {
        y[i] = lab.values[i];
        if (y[i] > max_label) max_label = y[i];
    }

    h5io_quiet();
    existed = access(out, F_OK) == 0;
    f = existed ? h5io_open(out, 1, err) : H5Fcreate(out, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        if (!existed) ND_FAIL(err, ND_ERR_IO, "%s: cannot create the file", out);
        st = err->code;
        goto done;
    }
    /* Refuse before writing anything, so an existing file is left whole. */
    const char *targets[2] = {split, val_fraction > 0.0 ? "val" : NULL};
    for (int i = 0; i < 2; ++i) {
        char gname[32];
        if (!targets[i]) continue;
        snprintf(gname, sizeof gname, "/%s", targets[i]);
        if (h5io_exists(f, gname)) {
            st = ND_FAIL(err, ND_ERR_ARG, "%s: split %s is already there (remove the file to re-import)", out, gname);
            goto done;
        }
    }
    /* The images must be the shape the file's other splits are. */
    int had[3], found = 0;
    if ((st = nd_image_shape_read(f, out, had, &found, err)) != ND_OK) goto done;
    if (found && (had[0] != image[0] || had[1] != image[1] || had[2] != image[2])) {
        st = ND_FAIL(err, ND_ERR_ARG,
                     "%s: root attribute image_shape is %d x %d x %d but %s holds 1 x %d x %d images (remove the file "
                     "to re-import)",
                     out, had[0], had[1], had[2], images, image[1], image[2]);
        goto done;
    }
    const long nval = (long)llround(val_fraction * (double)n);
    if (val_fraction > 0.0 && (nval < 1 || nval >= n)) {
        st = ND_FAIL(err, ND_ERR_ARG, "--val-fraction: %g of %ld rows leaves an empty split", val_fraction, n);
        goto done;
    }
    double classes = 0.0;
    if ((st = h5io_read_attr_double(f, "num_classes", out, "/", &classes, &found, err)) != ND_OK) goto done;
    if (!found || classes < max_label + 1) classes = max_label + 1;
    if ((st = h5io_write_attr_int(f, "num_classes", (int)classes, out, err)) != ND_OK) goto done;
    if ((st = h5io_write_attr_ints(f, "image_shape", image, 3, out, err)) != ND_OK) goto done;
    const long cols = (long)(img.count / img.dims[0]);
    st = h5io_write_split(f, out, split, H5T_STD_U8LE, H5T_NATIVE_UCHAR, img.values, 1.0f / 255.0f, y, NULL, 0,
                          n - nval, cols, err);
    if (st == ND_OK && nval > 0)
        st = h5io_write_split(f, out, "val", H5T_STD_U8LE, H5T_NATIVE_UCHAR, img.values + (size_t)(n - nval) * cols,
                              1.0f / 255.0f, y + (n - nval), NULL, 0, nval, cols, err);
done:
    if (f >= 0 && H5Fclose(f) < 0 && st == ND_OK) st = ND_FAIL(err, ND_ERR_IO, "%s: cannot close the file", out);
    if (st != ND_OK && f >= 0 && !existed) unlink(out); /* no half-written new file */
    free(y);
    free(img.values);
    free(lab.values);
    return st;
}
