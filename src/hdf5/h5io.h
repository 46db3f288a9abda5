/* Private HDF5 helpers shared by the data and checkpoint modules: checked
 * opens and reads that turn HDF5's error stack into one line. */
#ifndef NNDIST_H5IO_H
#define NNDIST_H5IO_H

#include <hdf5.h>

#include "nndist/status.h"

/* Silences HDF5's automatic error printing for this process; our callers
 * report errors themselves. */
void h5io_quiet(void);

/* Why the HDF5 call that just failed failed, from the library's error stack
 * (the system's message, e.g. "No space left on device", where it has one):
 * call it before any other HDF5 call, which would clear the stack. "" if
 * the stack is empty. out: cap chars. */
void h5io_cause(char *out, size_t cap);

/* Opens an existing file read-only (or read-write), with a clear message for
 * a missing or non-HDF5 file. Returns a file id or H5I_INVALID_HID. */
hid_t h5io_open(const char *path, int writable, nd_error *err);
/* Closes a file of h5io_open (the fatal-signal line stops naming it once
 * no file is open for reading). */
void h5io_close(hid_t f);

/* 1 if the object at `name` (e.g. "/train/x") exists, 0 otherwise; every
 * intermediate group is checked first, as H5Lexists requires. */
int h5io_exists(hid_t file, const char *name);

/* Shape of a dataset: rank into *ndims, up to 2 dims into dims. */
nd_status h5io_shape(hid_t dset, const char *path, const char *name, int *ndims, hsize_t dims[2], nd_error *err);

/* Reads a scalar numeric attribute of obj as double; *found = 0 if absent. */
nd_status h5io_read_attr_double(hid_t obj, const char *attr, const char *path, const char *where, double *value,
                                int *found, nd_error *err);

/* Writes a scalar attribute (native int or float). */
nd_status h5io_write_attr_int(hid_t obj, const char *attr, int value, const char *path, nd_error *err);
nd_status h5io_write_attr_double(hid_t obj, const char *attr, double value, const char *path, nd_error *err);
nd_status h5io_write_attr_float(hid_t obj, const char *attr, float value, const char *path, nd_error *err);

/* Writes a 1-D attribute of n integers (stored as int32), e.g. image_shape. */
nd_status h5io_write_attr_ints(hid_t obj, const char *attr, const int *values, int n, const char *path, nd_error *err);

/* Creates a chunked dataset of `type` (ndims 1 or 2, dims) chunked along the
 * rows and writes buf (memory type mem_type) into it. */
nd_status h5io_write_rows(hid_t group, const char *name, hid_t file_type, hid_t mem_type, int ndims,
                          const hsize_t *dims, const void *buf, const char *path, nd_error *err);

/* Reads a scalar string attribute into out (cap bytes, NUL-terminated);
 * *found = 0 if absent. Fixed-length (as format-2 checkpoints store them)
 * and variable-length strings, ASCII or UTF-8, are read. Longer values are
 * an error. */
nd_status h5io_read_attr_string(hid_t obj, const char *attr, const char *path, char *out, size_t cap, int *found,
                                nd_error *err);

/* Writes a scalar variable-length UTF-8 string attribute: what h5py writes
 * for a str, and reads back as a str (a fixed-length one comes back as
 * bytes). */
nd_status h5io_write_attr_string(hid_t obj, const char *attr, const char *value, const char *path, nd_error *err);

/* Writes a 1-D attribute of n variable-length UTF-8 strings (values: n
 * pointers); h5py reads it as an array of str. */
nd_status h5io_write_attr_strings(hid_t obj, const char *attr, const char *const *values, int n, const char *path,
                                  nd_error *err);

/* Opens the group at a full path such as "/model/maxpool1", creating it
 * (and missing parents) if absent. Returns a group id (close with
 * H5Gclose) or H5I_INVALID_HID with err filled. */
hid_t h5io_group(hid_t file, const char *name, const char *path, nd_error *err);

/* Writes a contiguous float32 array (ndims 1 or 2) at a full path such as
 * "/model/dense0/W", creating missing groups. */
nd_status h5io_write_array(hid_t file, const char *name, int ndims, const hsize_t *dims, const float *data,
                           const char *path, nd_error *err);

/* Reads the float32 array at name into data after checking that its shape
 * is exactly (ndims, dims). */
nd_status h5io_read_array(hid_t file, const char *name, int ndims, const hsize_t *dims, float *data, const char *path,
                          nd_error *err);

/* Creates group /<split> with x (rows x cols, stored as x_file_type from
 * x_mem_type values) and y: labels y (rows, int32), or if t is not NULL
 * float targets t (rows x target_cols). x_scale > 0 adds the `scale`
 * attribute that uint8 features carry. */
nd_status h5io_write_split(hid_t file, const char *path, const char *split, hid_t x_file_type, hid_t x_mem_type,
                           const void *x, float x_scale, const int *y, const float *t, int target_cols, long rows,
                           long cols, nd_error *err);

#endif
