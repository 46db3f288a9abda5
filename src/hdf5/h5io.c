#include "h5io.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void h5io_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
    char *out;
    size_t cap;
} cause_text;

/* Innermost entry first: the system's message where a file driver quotes
 * one, otherwise the innermost description. */
static herr_t take_cause(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    cause_text *c = data;
    const char *quoted = e->desc ? strstr(e->desc, "error message = '") : NULL;
    if (quoted) {
        quoted += strlen("error message = '");
        snprintf(c->out, c->cap, "%.*s", (int)strcspn(quoted, "'"), quoted);
        return 1; /* stop the walk */
    }
    if (!c->out[0] && e->desc && e->desc[0]) snprintf(c->out, c->cap, "HDF5: %s", e->desc);
    return 0;
}

void h5io_cause(char *out, size_t cap) {
    if (cap == 0) return;
    out[0] = '\0';
    cause_text c = {out, cap};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_cause, &c);
}

/* The newest file this process has open for reading, for the fatal-signal
 * line (nd_hdf5_last_path): a damaged or hostile file can crash the HDF5
 * library itself, but a crash while no file is open is not the file's
 * doing. Written around each open and close; a handler only reads it. */
static char last_path[4096];
static int open_reads;

const char *nd_hdf5_last_path(void) { return last_path; }

hid_t h5io_open(const char *path, int writable, nd_error *err) {
    h5io_quiet();
    snprintf(last_path, sizeof last_path, "%s", path); /* H5Fopen itself reads the file */
    hid_t f = H5I_INVALID_HID;
    if (access(path, writable ? (R_OK | W_OK) : R_OK) != 0) {
        ND_FAIL(err, ND_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (H5Fis_hdf5(path) <= 0) {
        ND_FAIL(err, ND_ERR_FORMAT, "%s: not an HDF5 file", path);
    } else {
        f = H5Fopen(path, writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) ND_FAIL(err, ND_ERR_IO, "%s: HDF5 cannot open the file (damaged or locked?)", path);
    }
    if (f >= 0 && !writable) open_reads += 1;
    else if (open_reads == 0) last_path[0] = '\0';
    return f;
}

void h5io_close(hid_t f) {
    unsigned intent = 0;
    const int reading = H5Fget_intent(f, &intent) >= 0 && intent == H5F_ACC_RDONLY;
    H5Fclose(f);
    if (reading && open_reads > 0 && --open_reads == 0) last_path[0] = '\0';
}

int h5io_exists(hid_t file, const char *name) {
    char part[512];
    size_t len = strlen(name);
    if (len >= sizeof part) return 0;
    /* Check "/a", then "/a/b", ...: H5Lexists fails on a missing parent. */
    for (size_t i = 1; i <= len; ++i) {
        if (name[i] != '/' && name[i] != '\0') continue;
        memcpy(part, name, i);
        part[i] = '\0';
        if (H5Lexists(file, part, H5P_DEFAULT) <= 0) return 0;
    }
    return H5Oexists_by_name(file, name, H5P_DEFAULT) > 0;
}

nd_status h5io_shape(hid_t dset, const char *path, const char *name, int *ndims, hsize_t dims[2], nd_error *err) {
    hid_t space = H5Dget_space(dset);
    if (space < 0) return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s: cannot read the dataspace", path, name);
    int nd = H5Sget_simple_extent_ndims(space);
    nd_status st = ND_OK;
    if (nd < 0 || nd > 2) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s has %d dimensions, expected 1 or 2", path, name, nd);
    } else {
        dims[0] = dims[1] = 0;
        H5Sget_simple_extent_dims(space, dims, NULL);
        *ndims = nd;
    }
    H5Sclose(space);
    return st;
}

nd_status h5io_read_attr_double(hid_t obj, const char *attr, const char *path, const char *where, double *value,
                                int *found, nd_error *err) {
    *found = 0;
    if (H5Aexists(obj, attr) <= 0) return ND_OK;
    hid_t a = H5Aopen(obj, attr, H5P_DEFAULT);
    if (a < 0) return ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute %s of %s cannot be opened", path, attr, where);
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    H5T_class_t cls = H5Tget_class(type);
    hssize_t npoints = H5Sget_simple_extent_npoints(space);
    nd_status st = ND_OK;
    if ((cls != H5T_INTEGER && cls != H5T_FLOAT) || npoints != 1)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute %s of %s must be one number", path, attr, where);
    else if (H5Aread(a, H5T_NATIVE_DOUBLE, value) < 0)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute %s of %s cannot be read", path, attr, where);
    else *found = 1;
    H5Tclose(type);
    H5Sclose(space);
    H5Aclose(a);
    return st;
}

/* Writes attr of obj: n values (n 0: one scalar) stored as ftype, read from
 * memory as mtype; an existing attribute of that name is replaced. */
static nd_status write_attr(hid_t obj, const char *attr, hid_t ftype, hid_t mtype, const void *value, int n,
                            const char *path, nd_error *err) {
    if (H5Aexists(obj, attr) > 0) H5Adelete(obj, attr);
    const hsize_t dims[1] = {(hsize_t)n};
    hid_t space = n > 0 ? H5Screate_simple(1, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, attr, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a >= 0 ? H5Awrite(a, mtype, value) : -1;
    char cause[160] = "";
    if (rc < 0) h5io_cause(cause, sizeof cause);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    if (rc < 0) return ND_FAIL(err, ND_ERR_IO, "%s: cannot write attribute %s (%s)", path, attr, cause);
    return ND_OK;
}

nd_status h5io_write_attr_int(hid_t obj, const char *attr, int value, const char *path, nd_error *err) {
    return write_attr(obj, attr, H5T_NATIVE_INT, H5T_NATIVE_INT, &value, 0, path, err);
}

nd_status h5io_write_attr_double(hid_t obj, const char *attr, double value, const char *path, nd_error *err) {
    return write_attr(obj, attr, H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE, &value, 0, path, err);
}

nd_status h5io_write_attr_float(hid_t obj, const char *attr, float value, const char *path, nd_error *err) {
    return write_attr(obj, attr, H5T_NATIVE_FLOAT, H5T_NATIVE_FLOAT, &value, 0, path, err);
}

nd_status h5io_write_attr_ints(hid_t obj, const char *attr, const int *values, int n, const char *path, nd_error *err) {
    return write_attr(obj, attr, H5T_STD_I32LE, H5T_NATIVE_INT, values, n, path, err);
}

nd_status h5io_write_rows(hid_t group, const char *name, hid_t file_type, hid_t mem_type, int ndims,
                          const hsize_t *dims, const void *buf, const char *path, nd_error *err) {
    hsize_t chunk[2] = {dims[0], ndims > 1 ? dims[1] : 1};
    /* About 1 MiB chunks along the rows, so a rank's hyperslab touches only
     * the chunks holding its rows. */
    size_t row_bytes = (size_t)H5Tget_size(file_type) * (ndims > 1 ? dims[1] : 1);
    hsize_t rows_per_chunk = row_bytes ? (1u << 20) / row_bytes : 1;
    if (rows_per_chunk < 1) rows_per_chunk = 1;
    if (chunk[0] > rows_per_chunk) chunk[0] = rows_per_chunk;
    if (chunk[0] == 0) chunk[0] = 1;
    hid_t space = H5Screate_simple(ndims, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, ndims, chunk);
    hid_t d = H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t rc = -1;
    if (d >= 0) rc = dims[0] ? H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : 0;
    char cause[160] = "";
    if (rc < 0) h5io_cause(cause, sizeof cause);
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (rc < 0) return ND_FAIL(err, ND_ERR_IO, "%s: cannot write dataset %s (%s)", path, name, cause);
    return ND_OK;
}

nd_status h5io_write_split(hid_t file, const char *path, const char *split, hid_t x_file_type, hid_t x_mem_type,
                           const void *x, float x_scale, const int *y, const float *t, int target_cols, long rows,
                           long cols, nd_error *err) {
    char gname[32];
    snprintf(gname, sizeof gname, "/%s", split);
    hid_t g = H5Gcreate2(file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return ND_FAIL(err, ND_ERR_IO, "%s: cannot create group %s", path, gname);
    hsize_t xd[2] = {(hsize_t)rows, (hsize_t)cols}, yd[1] = {(hsize_t)rows};
    nd_status st = h5io_write_rows(g, "x", x_file_type, x_mem_type, 2, xd, x, path, err);
    if (st == ND_OK && x_scale > 0.0f) {
        hid_t dx = H5Dopen2(g, "x", H5P_DEFAULT);
        st = h5io_write_attr_float(dx, "scale", x_scale, path, err);
        H5Dclose(dx);
    }
    const hsize_t td[2] = {(hsize_t)rows, (hsize_t)target_cols};
    if (st == ND_OK && t) st = h5io_write_rows(g, "y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, td, t, path, err);
    else if (st == ND_OK) st = h5io_write_rows(g, "y", H5T_STD_I32LE, H5T_NATIVE_INT, 1, yd, y, path, err);
    H5Gclose(g);
    return st;
}

nd_status h5io_read_attr_string(hid_t obj, const char *attr, const char *path, char *out, size_t cap, int *found,
                                nd_error *err) {
    *found = 0;
    out[0] = '\0';
    if (H5Aexists(obj, attr) <= 0) return ND_OK;
    hid_t a = H5Aopen(obj, attr, H5P_DEFAULT);
    hid_t type = a >= 0 ? H5Aget_type(a) : -1, space = a >= 0 ? H5Aget_space(a) : -1;
    nd_status st = ND_OK;
    /* One string: an array of them would overrun out. */
    if (a < 0 || type < 0 || H5Tget_class(type) != H5T_STRING || space < 0 ||
        H5Sget_simple_extent_npoints(space) != 1) {
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute %s must be one string", path, attr);
    } else {
        /* HDF5 converts no string between ASCII and UTF-8: read in the
         * file's character set. */
        const H5T_cset_t cset = H5Tget_cset(type);
        const int variable = H5Tis_variable_str(type) > 0;
        const size_t len = variable ? 0 : H5Tget_size(type);
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_cset(mem, cset);
        if (variable) {
            char *v = NULL;
            H5Tset_size(mem, H5T_VARIABLE);
            if (H5Aread(a, mem, &v) < 0) st = ND_FAIL(err, ND_ERR_FORMAT, "%s: cannot read attribute %s", path, attr);
            else if (v && strlen(v) >= cap)
                st = ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute %s is longer than %zu bytes", path, attr, cap - 1);
            else snprintf(out, cap, "%s", v ? v : ""), *found = 1;
            if (v) H5free_memory(v);
        } else if (len >= cap) {
            st = ND_FAIL(err, ND_ERR_FORMAT, "%s: attribute %s is longer than %zu bytes", path, attr, cap - 1);
        } else {
            H5Tset_size(mem, len + 1);
            H5Tset_strpad(mem, H5T_STR_NULLTERM);
            if (H5Aread(a, mem, out) < 0) st = ND_FAIL(err, ND_ERR_FORMAT, "%s: cannot read attribute %s", path, attr);
            else *found = 1;
            out[len] = '\0';
        }
        H5Tclose(mem);
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (a >= 0) H5Aclose(a);
    return st;
}

/* Variable-length UTF-8: h5py gives str for it, bytes for fixed-length. */
static hid_t utf8_type(void) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}

nd_status h5io_write_attr_string(hid_t obj, const char *attr, const char *value, const char *path, nd_error *err) {
    hid_t type = utf8_type();
    nd_status st = write_attr(obj, attr, type, type, &value, 0, path, err);
    H5Tclose(type);
    return st;
}

nd_status h5io_write_attr_strings(hid_t obj, const char *attr, const char *const *values, int n, const char *path,
                                  nd_error *err) {
    hid_t type = utf8_type();
    nd_status st = write_attr(obj, attr, type, type, values, n, path, err);
    H5Tclose(type);
    return st;
}

hid_t h5io_group(hid_t file, const char *name, const char *path, nd_error *err) {
    if (h5io_exists(file, name)) {
        hid_t g = H5Gopen2(file, name, H5P_DEFAULT);
        if (g < 0) ND_FAIL(err, ND_ERR_FORMAT, "%s: %s is not a group", path, name);
        return g;
    }
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(file, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (g < 0) {
        char cause[160];
        h5io_cause(cause, sizeof cause);
        ND_FAIL(err, ND_ERR_IO, "%s: cannot create group %s (%s)", path, name, cause);
    }
    return g;
}

nd_status h5io_write_array(hid_t file, const char *name, int ndims, const hsize_t *dims, const float *data,
                           const char *path, nd_error *err) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t space = H5Screate_simple(ndims, dims, NULL);
    hid_t d = H5Dcreate2(file, name, H5T_IEEE_F32LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d >= 0 ? H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : -1;
    char cause[160] = "";
    if (rc < 0) h5io_cause(cause, sizeof cause);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    H5Pclose(lcpl);
    if (rc < 0) return ND_FAIL(err, ND_ERR_IO, "%s: cannot write %s (%s)", path, name, cause);
    return ND_OK;
}

nd_status h5io_read_array(hid_t file, const char *name, int ndims, const hsize_t *dims, float *data, const char *path,
                          nd_error *err) {
    if (!h5io_exists(file, name)) return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s is missing", path, name);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return ND_FAIL(err, ND_ERR_FORMAT, "%s: %s is not a readable dataset", path, name);
    /* Up to 4 dimensions (a convolution's weights); the shape must be the
     * expected one exactly. */
    hsize_t got[4] = {0, 0, 0, 0};
    hid_t space = H5Dget_space(d);
    const int nd = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    if (nd >= 0 && nd <= 4) H5Sget_simple_extent_dims(space, got, NULL);
    if (space >= 0) H5Sclose(space);
    int same = nd == ndims;
    for (int i = 0; same && i < ndims; ++i) same = got[i] == dims[i];
    nd_status st = ND_OK;
    if (!same) {
        char want[96], have[96];
        size_t u = 0, v = 0;
        for (int i = 0; i < ndims && u < sizeof want; ++i)
            u += (size_t)snprintf(want + u, sizeof want - u, "%s%llu", i ? " x " : "", (unsigned long long)dims[i]);
        if (nd < 0 || nd > 4) snprintf(have, sizeof have, "%d dimensions", nd);
        else
            for (int i = 0; i < nd && v < sizeof have; ++i)
                v += (size_t)snprintf(have + v, sizeof have - v, "%s%llu", i ? " x " : "", (unsigned long long)got[i]);
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: %s has shape %s, expected %s", path, name, nd == 0 ? "scalar" : have,
                     want);
    }
    if (st == ND_OK && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        st = ND_FAIL(err, ND_ERR_FORMAT, "%s: cannot read %s (damaged file?)", path, name);
    H5Dclose(d);
    return st;
}
