/* Probing a dataset file and reading one rank's shard of a split. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset_internal.h"
#include "h5io.h"
#include "nndist/arena.h"
#include "nndist/data.h"

/* Larger claims are treated as a damaged or hostile header, not data. */
#define MAX_ROWS (1L << 40)
#define MAX_COLS (1 << 24)

void nd_shard_range(long n, int rank, int size, long *first, long *count) {
    long base = n / size, extra = n % size;
    *first = rank * base + (rank < extra ? rank : extra);
    *count = base + (rank < extra ? 1 : 0);
}

/* Deflate, the one filter Debian's HDF5 brings, shrinks data at most about
 * 1032:1 (all zeros); beyond that a header's claim is not data. */
#define MAX_COMPRESSION 1100.0
#define MAX_CHUNK_BYTES (1u << 30)

/* The values the header of d claims (rows x cols of type) must be in the
 * file: a damaged or hostile header claiming 10^12 rows, whose size
 * product would overflow, is refused here before anything is allocated.
 * Also a chunk layout must be sane: every chunk dimension at least 1 and a
 * chunk (read and allocated whole by HDF5) at most 1 GiB. */
static nd_status check_storage(hid_t d, hid_t type, const char *path, const char *name, hsize_t rows, hsize_t cols,
                               nd_error *err) {
    const size_t esize = H5Tget_size(type);
    const double claimed = (double)rows * (double)cols * (double)esize; /* a double cannot overflow here */
    const double stored = (double)H5Dget_storage_size(d);
    hid_t dcpl = H5Dget_create_plist(d);
    if (dcpl < 0) return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s: cannot read its storage properties", path, name);
    const H5D_layout_t layout = H5Pget_layout(dcpl);
    const int filters = H5Pget_nfilters(dcpl);
    hsize_t chunk[H5S_MAX_RANK];
    const int chunk_rank = layout == H5D_CHUNKED ? H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk) : 0;
    H5Pclose(dcpl);
    if (layout < 0 || filters < 0 || chunk_rank < 0)
        return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s: its storage layout is unreadable", path, name);
    double chunk_bytes = (double)esize;
    for (int i = 0; i < chunk_rank; ++i) {
        if (chunk[i] == 0) return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s: chunk dimension %d is 0", path, name, i);
        chunk_bytes *= (double)chunk[i];
    }
    if (chunk_bytes > MAX_CHUNK_BYTES)
        return ND_FAIL(err, ND_ERR_FORMAT,
                       "%s: %s: its chunks hold %.3g bytes each, over the 1 GiB nndist reads at once", path, name,
                       chunk_bytes);
    const double bound = filters > 0 ? MAX_COMPRESSION : 1.0;
    if (claimed > stored * bound)
        return ND_FAIL(err, ND_ERR_FORMAT,
                       "%s: %s claims %llu x %llu values (%.3g bytes) but the file stores %.0f bytes of it%s (damaged, "
                       "truncated or never written)",
                       path, name, (unsigned long long)rows, (unsigned long long)cols, claimed, stored,
                       filters > 0 ? ", too little even compressed" : "");
    return ND_OK;
}

/* The rank of x into *ndims and, for ranks up to 4, its dimensions into
 * dims; other ranks are refused by the caller, which names them. */
static nd_status x_shape(hid_t dset, const char *path, const char *name, int *ndims, hsize_t dims[4], nd_error *err) {
    hid_t space = H5Dget_space(dset);
    if (space < 0) return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s: cannot read the dataspace", path, name);
    const int nd = H5Sget_simple_extent_ndims(space);
    hsize_t all[H5S_MAX_RANK];
    nd_status st = ND_OK;
    if (nd < 0 || nd > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, all, NULL) != nd) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s: its dataspace is unreadable", path, name);
    } else {
        *ndims = nd;
        for (int i = 0; i < 4; ++i) dims[i] = i < nd ? all[i] : 0;
    }
    H5Sclose(space);
    return st;
}

static int same_shape(const int a[3], const int b[3]) { return a[0] == b[0] && a[1] == b[1] && a[2] == b[2]; }

nd_status nd_image_shape_read(hid_t f, const char *path, int shape[3], int *found, nd_error *err) {
    static const char what[] = "root attribute image_shape must be 3 positive integers (C, H, W)";
    shape[0] = shape[1] = shape[2] = 0;
    *found = 0;
    if (H5Aexists(f, "image_shape") <= 0) return ND_OK;
    hid_t a = H5Aopen(f, "image_shape", H5P_DEFAULT);
    hid_t type = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID, space = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
    const hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    long long v[3] = {0, 0, 0};
    nd_status st = ND_OK;
    if (a < 0 || type < 0 || space < 0 || n < 0)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: root attribute image_shape cannot be opened", path);
    else if (H5Tget_class(type) != H5T_INTEGER)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s, it is not of an integer type", path, what);
    else if (n != 3)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s, it holds %lld value%s", path, what, (long long)n, n == 1 ? "" : "s");
    else if (H5Aread(a, H5T_NATIVE_LLONG, v) < 0)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: root attribute image_shape cannot be read", path);
    else if (v[0] < 1 || v[1] < 1 || v[2] < 1 || v[0] > MAX_COLS || v[1] > MAX_COLS || v[2] > MAX_COLS)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s, it is [%lld, %lld, %lld]", path, what, v[0], v[1], v[2]);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (a >= 0) H5Aclose(a);
    if (st != ND_OK) return st;
    for (int i = 0; i < 3; ++i) shape[i] = (int)v[i];
    *found = 1;
    return ND_OK;
}

/* The dataset's image shape: every 4-D split and the root attribute
 * image_shape must agree on it, and it must hold D values. */
static nd_status probe_image(hid_t f, const char *path, nd_dataset_info *info, nd_error *err) {
    const nd_split_info *splits[3] = {&info->train, info->has_val ? &info->val : NULL,
                                      info->has_test ? &info->test : NULL};
    static const char *const names[3] = {"train", "val", "test"};
    const char *from = NULL; /* the first 4-D split */
    int image[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) {
        const nd_split_info *si = splits[i];
        if (!si || !si->image_c) continue;
        const int own[3] = {si->image_c, si->image_h, si->image_w};
        if (!from) {
            memcpy(image, own, sizeof image);
            from = names[i];
        } else if (!same_shape(own, image)) {
            return ND_FAIL(err, ND_ERR_FORMAT, "%s: /%s/x holds %d x %d x %d images but /%s/x holds %d x %d x %d", path,
                           names[i], own[0], own[1], own[2], from, image[0], image[1], image[2]);
        }
    }
    int attr[3], found = 0;
    ND_TRY(nd_image_shape_read(f, path, attr, &found, err));
    if (found) {
        const double values = (double)attr[0] * attr[1] * attr[2];
        if (values != (double)info->train.cols)
            return ND_FAIL(err, ND_ERR_FORMAT,
                           "%s: root attribute image_shape %d x %d x %d = %.0f values per row but /train/x has %d "
                           "features",
                           path, attr[0], attr[1], attr[2], values, info->train.cols);
        if (from && !same_shape(attr, image))
            return ND_FAIL(err, ND_ERR_FORMAT,
                           "%s: root attribute image_shape %d x %d x %d disagrees with /%s/x, which holds %d x %d x %d "
                           "images",
                           path, attr[0], attr[1], attr[2], from, image[0], image[1], image[2]);
        memcpy(image, attr, sizeof image);
    }
    info->image_c = image[0], info->image_h = image[1], info->image_w = image[2];
    return ND_OK;
}

nd_status nd_split_probe(hid_t f, const char *path, const char *split, nd_split_info *info, nd_error *err) {
    char xname[64], yname[64];
    snprintf(xname, sizeof xname, "/%s/x", split);
    snprintf(yname, sizeof yname, "/%s/y", split);
    if (!h5io_exists(f, xname)) return ND_FAIL(err, ND_ERR_FORMAT, "%s: dataset %s is missing", path, xname);
    if (!h5io_exists(f, yname)) return ND_FAIL(err, ND_ERR_FORMAT, "%s: dataset %s is missing", path, yname);

    nd_status st = ND_OK;
    hid_t dx = H5Dopen2(f, xname, H5P_DEFAULT), dy = H5Dopen2(f, yname, H5P_DEFAULT);
    hid_t tx = dx >= 0 ? H5Dget_type(dx) : -1, ty = dy >= 0 ? H5Dget_type(dy) : -1;
    int ndx = 0, ndy = 0;
    hsize_t xd[4], yd[2], cols = 0;
    info->image_c = info->image_h = info->image_w = 0;
    if (dx < 0 || dy < 0 || tx < 0 || ty < 0) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s or %s is not a readable dataset", path, xname, yname);
        goto done;
    }
    if ((st = x_shape(dx, path, xname, &ndx, xd, err)) != ND_OK) goto done;
    if ((st = h5io_shape(dy, path, yname, &ndy, yd, err)) != ND_OK) goto done;
    if (ndx != 2 && ndx != 4) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s must be 2-D (rows x features) or 4-D (rows x C x H x W), it is %d-D",
                     path, xname, ndx);
        goto done;
    }
    /* D = C * H * W for 4-D x, every factor and the product at most MAX_COLS. */
    int plausible = xd[0] <= (hsize_t)MAX_ROWS;
    cols = 1;
    for (int i = 1; i < ndx && plausible; ++i) {
        plausible = xd[i] >= 1 && xd[i] <= (hsize_t)MAX_COLS && cols * xd[i] <= (hsize_t)MAX_COLS;
        cols *= xd[i];
    }
    if (!plausible) {
        if (ndx == 2)
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s has an implausible shape %llu x %llu", path, xname,
                         (unsigned long long)xd[0], (unsigned long long)xd[1]);
        else
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s has an implausible shape %llu x %llu x %llu x %llu", path, xname,
                         (unsigned long long)xd[0], (unsigned long long)xd[1], (unsigned long long)xd[2],
                         (unsigned long long)xd[3]);
        goto done;
    }
    H5T_class_t xc = H5Tget_class(tx);
    info->x_is_uint8 = xc == H5T_INTEGER && H5Tget_size(tx) == 1 && H5Tget_sign(tx) == H5T_SGN_NONE;
    if (xc != H5T_FLOAT && !info->x_is_uint8) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s must be float32/float64 or uint8 with a 'scale' attribute", path,
                     xname);
        goto done;
    }
    info->x_scale = 1.0f;
    if (info->x_is_uint8) {
        double scale = 1.0;
        int found = 0;
        if ((st = h5io_read_attr_double(dx, "scale", path, xname, &scale, &found, err)) != ND_OK) goto done;
        if (found && !(isfinite(scale) && scale > 0.0)) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute scale of %s must be a positive number, it is %g", path,
                         xname, scale);
            goto done;
        }
        info->x_scale = (float)scale;
    }
    const int float_targets = ndy == 2 && H5Tget_class(ty) == H5T_FLOAT;
    if (!float_targets && (ndy != 1 || H5Tget_class(ty) != H5T_INTEGER)) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s must be 1-D integer class labels or 2-D float targets (got %d-D %s)",
                     path, yname, ndy, H5Tget_class(ty) == H5T_FLOAT ? "float" : "non-integer");
        goto done;
    }
    if (float_targets && (yd[1] == 0 || yd[1] > (hsize_t)MAX_COLS)) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s has an implausible %llu targets per row", path, yname,
                     (unsigned long long)yd[1]);
        goto done;
    }
    info->target_cols = float_targets ? (int)yd[1] : 0;
    if (yd[0] != xd[0]) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s has %llu rows but %s has %llu", path, xname, (unsigned long long)xd[0],
                     yname, (unsigned long long)yd[0]);
        goto done;
    }
    if ((st = check_storage(dx, tx, path, xname, xd[0], cols, err)) != ND_OK) goto done;
    if ((st = check_storage(dy, ty, path, yname, yd[0], float_targets ? yd[1] : 1, err)) != ND_OK) goto done;
    info->rows = (long)xd[0];
    info->cols = (int)cols;
    if (ndx == 4) info->image_c = (int)xd[1], info->image_h = (int)xd[2], info->image_w = (int)xd[3];
done:
    if (tx >= 0) H5Tclose(tx);
    if (ty >= 0) H5Tclose(ty);
    if (dx >= 0) H5Dclose(dx);
    if (dy >= 0) H5Dclose(dy);
    return st;
}

nd_status nd_dataset_probe(const char *path, nd_dataset_info *info, nd_error *err) {
    memset(info, 0, sizeof *info);
    hid_t f = h5io_open(path, 0, err);
    if (f < 0) return err->code;
    nd_status st = ND_OK;
    double classes = 0.0;
    int found = 0;
    if (!h5io_exists(f, "/train")) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: group /train is missing", path);
        goto done;
    }
    if ((st = nd_split_probe(f, path, "train", &info->train, err)) != ND_OK) goto done;
    info->has_targets = info->train.target_cols > 0;
    info->num_outputs = info->train.target_cols;
    if (!info->has_targets) { /* labels need their class count */
        if ((st = h5io_read_attr_double(f, "num_classes", path, "/", &classes, &found, err)) != ND_OK) goto done;
        if (!found) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: root attribute num_classes is missing", path);
            goto done;
        }
        if (!(classes >= 2 && classes <= 1e6 && classes == floor(classes))) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: num_classes must be an integer >= 2, it is %g", path, classes);
            goto done;
        }
        info->num_classes = info->num_outputs = (int)classes;
    }
    if (info->train.rows == 0) {
        st = ND_FAIL(err, ND_ERR_DATA, "%s: /train has no rows", path);
        goto done;
    }
    static const char *const others[2] = {"val", "test"};
    for (int i = 0; i < 2; ++i) {
        char group[16];
        snprintf(group, sizeof group, "/%s", others[i]);
        if (!h5io_exists(f, group)) continue;
        nd_split_info *si = i == 0 ? &info->val : &info->test;
        if ((st = nd_split_probe(f, path, others[i], si, err)) != ND_OK) goto done;
        if (si->cols != info->train.cols) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: /%s/x has %d features but /train/x has %d", path, others[i], si->cols,
                         info->train.cols);
            goto done;
        }
        if (si->target_cols != info->train.target_cols) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: /%s/y has %d targets per row but /train/y has %d", path, others[i],
                         si->target_cols, info->train.target_cols);
            goto done;
        }
        *(i == 0 ? &info->has_val : &info->has_test) = 1;
    }
    st = probe_image(f, path, info, err);
done:
    h5io_close(f);
    return st;
}

void nd_shard_free(nd_shard *shard) {
    nd_buffer_free(shard->x);
    nd_buffer_free(shard->y);
    nd_buffer_free(shard->t);
    memset(shard, 0, sizeof *shard);
}

/* Rows [first, first + count) of a dataset whose rows [skip_at, skip_at +
 * skip_rows) are left out (their row numbers taken by the rows after them):
 * one hyperslab, or two where the block spans the skipped rows. */
static herr_t read_rows_skipping(hid_t dset, hid_t mem_type, long first, long count, long skip_at, long skip_rows,
                                 int cols, void *buf) {
    hid_t fspace = H5Dget_space(dset);
    if (fspace < 0) return -1;
    const int nd = H5Sget_simple_extent_ndims(fspace);
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0}, cnt[H5S_MAX_RANK];
    herr_t rc = nd >= 1 && nd <= H5S_MAX_RANK && H5Sget_simple_extent_dims(fspace, dims, NULL) == nd ? 0 : -1;
    /* Rows over every other dimension in full. */
    hsize_t per_row = 1;
    for (int i = 1; rc >= 0 && i < nd; ++i) {
        cnt[i] = dims[i];
        per_row *= dims[i];
    }
    if (rc >= 0 && per_row != (hsize_t)cols) rc = -1; /* buf holds count x cols */
    const long before = skip_rows <= 0 || first + count <= skip_at ? count : first < skip_at ? skip_at - first : 0;
    H5S_seloper_t op = H5S_SELECT_SET;
    if (rc >= 0 && before > 0) { /* the rows before the skipped ones */
        start[0] = (hsize_t)first;
        cnt[0] = (hsize_t)before;
        rc = H5Sselect_hyperslab(fspace, op, start, NULL, cnt, NULL);
        op = H5S_SELECT_OR;
    }
    if (rc >= 0 && before < count) { /* the rows after them, shifted past them */
        start[0] = (hsize_t)(first + before + skip_rows);
        cnt[0] = (hsize_t)(count - before);
        rc = H5Sselect_hyperslab(fspace, op, start, NULL, cnt, NULL);
    }
    cnt[0] = (hsize_t)count;
    hid_t mspace = rc >= 0 ? H5Screate_simple(nd, cnt, NULL) : H5I_INVALID_HID;
    if (rc >= 0 && mspace < 0) rc = -1;
    if (rc >= 0 && count > 0) rc = H5Dread(dset, mem_type, mspace, fspace, H5P_DEFAULT, buf);
    if (mspace >= 0) H5Sclose(mspace);
    H5Sclose(fspace);
    return rc;
}

herr_t nd_read_rows(hid_t dset, hid_t mem_type, long first, long count, int cols, void *buf) {
    return read_rows_skipping(dset, mem_type, first, count, 0, 0, cols, buf);
}

nd_status nd_shard_validate(const nd_shard *s, const char *path, const char *split, int num_classes, nd_error *err) {
    for (int i = 0; s->y && i < s->rows; ++i)
        if (s->y[i] < 0 || s->y[i] >= num_classes)
            return ND_FAIL(err, ND_ERR_DATA, "%s: /%s/y[%ld] = %d is outside [0, %d) (num_classes)", path, split,
                           s->first_row + i, s->y[i], num_classes);
    const size_t n = (size_t)s->rows * s->cols;
    for (size_t i = 0; i < n; ++i)
        if (!isfinite(s->x[i]))
            return ND_FAIL(err, ND_ERR_DATA, "%s: /%s/x[%ld][%zu] is %s", path, split,
                           s->first_row + (long)(i / s->cols), i % s->cols, isnan(s->x[i]) ? "NaN" : "infinite");
    const size_t nt = (size_t)s->rows * s->target_cols;
    for (size_t i = 0; s->t && i < nt; ++i)
        if (!isfinite(s->t[i]))
            return ND_FAIL(err, ND_ERR_DATA, "%s: /%s/y[%ld][%zu] is %s", path, split,
                           s->first_row + (long)(i / s->target_cols), i % s->target_cols,
                           isnan(s->t[i]) ? "NaN" : "infinite");
    return ND_OK;
}

nd_status nd_shard_read(const char *path, const char *split, int rank, int size, int num_classes, nd_shard *shard,
                        nd_error *err) {
    return nd_shard_read_parts(path, split, rank, rank + 1, size, num_classes, shard, err);
}

static nd_status read_head_parts(const char *path, const nd_dataset_info *di, const char *split, long head, int part_lo,
                                 int part_hi, int parts, nd_shard *shard, nd_error *err);

nd_status nd_shard_read_parts(const char *path, const char *split, int part_lo, int part_hi, int parts, int num_classes,
                              nd_shard *shard, nd_error *err) {
    const nd_dataset_info plain = {.num_classes = num_classes};
    return nd_shard_read_info(path, &plain, split, part_lo, part_hi, parts, shard, err);
}

nd_status nd_dataset_hold_out(nd_dataset_info *info, int fold, int folds, const char *path, nd_error *err) {
    if (info->has_val)
        return ND_FAIL(err, ND_ERR_ARG,
                       "--val-fold: %s has its own /val; cross-validation folds come from /train alone", path);
    if (!(folds >= 2 && fold >= 1 && fold <= folds))
        return ND_FAIL(err, ND_ERR_ARG, "--val-fold %d/%d: give FOLD/FOLDS with 1 <= FOLD <= FOLDS and FOLDS >= 2",
                       fold, folds);
    if (info->train.rows < folds)
        return ND_FAIL(err, ND_ERR_DATA, "--val-fold %d/%d: %s /train has %ld rows, fewer than the folds", fold, folds,
                       path, info->train.rows);
    nd_shard_range(info->train.rows, fold - 1, folds, &info->fold_first, &info->fold_rows);
    info->val = info->train;
    info->val.rows = info->fold_rows;
    info->train.rows -= info->fold_rows;
    info->has_val = 1;
    return ND_OK;
}

nd_status nd_shard_read_info(const char *path, const nd_dataset_info *di, const char *split, int part_lo, int part_hi,
                             int parts, nd_shard *shard, nd_error *err) {
    return read_head_parts(path, di, split, LONG_MAX, part_lo, part_hi, parts, shard, err);
}

nd_status nd_shard_read_head(const char *path, const nd_dataset_info *di, const char *split, long head, int rank,
                             int size, nd_shard *shard, nd_error *err) {
    return read_head_parts(path, di, split, head, rank, rank + 1, size, shard, err);
}

/* Parts [part_lo, part_hi) of the split's first min(head, rows) rows (a
 * held-out fold's rows skipped in "train"). */
static nd_status read_head_parts(const char *path, const nd_dataset_info *di, const char *split, long head, int part_lo,
                                 int part_hi, int parts, nd_shard *shard, nd_error *err) {
    const int rank = part_lo; /* named in messages */
    const int num_classes = di->num_classes;
    memset(shard, 0, sizeof *shard);
    /* With a fold held out, "val" is its block of /train and "train" the
     * rest of /train with the block skipped. */
    const int fold_val = di->fold_rows > 0 && !strcmp(split, "val");
    const int fold_train = di->fold_rows > 0 && !strcmp(split, "train");
    const char *group = fold_val ? "train" : split;
    hid_t f = h5io_open(path, 0, err);
    if (f < 0) return err->code;
    nd_split_info info;
    nd_status st = nd_split_probe(f, path, group, &info, err);
    hid_t dx = -1, dy = -1;
    if (st != ND_OK) goto done;
    if (fold_val) info.rows = di->fold_rows;
    if (fold_train) info.rows -= di->fold_rows;
    const long skip_at = fold_train ? di->fold_first : 0, skip_rows = fold_train ? di->fold_rows : 0;
    long first, count, last_first, last_count;
    if (info.rows > head) info.rows = head; /* the first rows only (a fold's skipped) */
    nd_shard_range(info.rows, part_lo, parts, &first, &count);
    nd_shard_range(info.rows, part_hi - 1, parts, &last_first, &last_count);
    count = last_first + last_count - first; /* parts [part_lo, part_hi) are contiguous */
    if (fold_val) first += di->fold_first;   /* rows of /train */
    if (count > INT_MAX || (size_t)count > SIZE_MAX / sizeof(float) / (size_t)info.cols) {
        st = ND_FAIL(err, ND_ERR_DATA, "%s: /%s: rank %d would hold %ld rows, too many for memory", path, split, rank,
                     count);
        goto done;
    }
    shard->first_row = first;
    shard->rows = (int)count;
    shard->cols = info.cols;
    shard->target_cols = info.target_cols;
    shard->x = nd_buffer_alloc((size_t)count * info.cols);
    if (info.target_cols) shard->t = nd_buffer_alloc((size_t)count * info.target_cols);
    else shard->y = nd_buffer_alloc_i32((size_t)count);
    if (!shard->x || !(shard->y || shard->t)) {
        st = ND_FAIL(err, ND_ERR_NOMEM, "%s: /%s: cannot allocate %ld x %d floats for rank %d", path, split, count,
                     info.cols, rank);
        goto done;
    }
    char name[64];
    snprintf(name, sizeof name, "/%s/x", group);
    dx = H5Dopen2(f, name, H5P_DEFAULT);
    /* HDF5 converts uint8 or float64 to float on read. */
    if (dx < 0 || read_rows_skipping(dx, H5T_NATIVE_FLOAT, first, count, skip_at, skip_rows, info.cols, shard->x) < 0) {
        st = ND_FAIL(err, ND_ERR_IO, "%s: cannot read rows %ld..%ld of %s", path, first, first + count, name);
        goto done;
    }
    snprintf(name, sizeof name, "/%s/y", group);
    dy = H5Dopen2(f, name, H5P_DEFAULT);
    if (dy < 0 ||
        (info.target_cols
             ? read_rows_skipping(dy, H5T_NATIVE_FLOAT, first, count, skip_at, skip_rows, info.target_cols, shard->t)
             : read_rows_skipping(dy, H5T_NATIVE_INT, first, count, skip_at, skip_rows, 1, shard->y)) < 0) {
        st = ND_FAIL(err, ND_ERR_IO, "%s: cannot read rows %ld..%ld of %s", path, first, first + count, name);
        goto done;
    }
    if (info.x_scale != 1.0f)
        for (size_t i = 0; i < (size_t)count * info.cols; ++i) shard->x[i] *= info.x_scale;
    st = nd_shard_validate(shard, path, group, num_classes, err); /* row numbers past a skipped fold are shifted */
done:
    if (dx >= 0) H5Dclose(dx);
    if (dy >= 0) H5Dclose(dy);
    h5io_close(f);
    if (st != ND_OK) nd_shard_free(shard);
    return st;
}
