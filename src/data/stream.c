/* The streaming shard reader (see nndist/stream.h): one background thread
 * per stream reads the next window while the trainer uses the current one.
 * The thread only ever writes the buffer the caller is not using; a mutex
 * and a condition variable hand requests and results across. */
#include "nndist/stream.h"

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset_internal.h"
#include "h5io.h"
#include "nndist/arena.h"
#include "nndist/normalize.h"

struct nd_stream {
    char path[4096], split[16];
    nd_split_info info;
    int num_classes;
    long first, rows, window_rows; /* this rank's block and the window size */
    int windows;
    hid_t file, dx, dy;
    float *mean, *inv_std; /* (cols) normalization applied to each read window once `normalize` is set */
    int normalize;
    nd_shard buf[2]; /* the two windows: x (window_rows x cols), y or t */
    int background;  /* a reader thread runs */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* guarded by mu: the request in flight and its outcome */
    int req_window, req_buf; /* -1: none waiting to be taken */
    int busy, quit;
    nd_status req_st;
    nd_error req_err;
    /* the caller's pass */
    const int *order;
    int count, pos; /* order[pos] is the window being read (pending) */
    int pending, pending_window, pending_buf;
};

long nd_stream_rows(const nd_stream *s) { return s->rows; }
long nd_stream_first_row(const nd_stream *s) { return s->first; }
int nd_stream_windows(const nd_stream *s) { return s->windows; }
int nd_stream_background(const nd_stream *s) { return s->background; }

long nd_stream_window_rows(const nd_stream *s, int w) {
    const long start = (long)w * s->window_rows;
    return s->rows - start < s->window_rows ? s->rows - start : s->window_rows;
}

/* Reads window w into buffer b: converted to float, scaled, checked and
 * (normalize) normalized. Runs on the reader thread or the caller's. */
static nd_status read_window(nd_stream *s, int w, int b, int normalize, nd_error *err) {
    nd_shard *sh = &s->buf[b];
    const long first = s->first + (long)w * s->window_rows, count = nd_stream_window_rows(s, w);
    sh->first_row = first;
    sh->rows = (int)count;
    if (nd_read_rows(s->dx, H5T_NATIVE_FLOAT, first, count, s->info.cols, sh->x) < 0)
        return ND_FAIL(err, ND_ERR_IO, "%s: cannot read rows %ld..%ld of /%s/x", s->path, first, first + count,
                       s->split);
    if ((s->info.target_cols ? nd_read_rows(s->dy, H5T_NATIVE_FLOAT, first, count, s->info.target_cols, sh->t)
                             : nd_read_rows(s->dy, H5T_NATIVE_INT, first, count, 1, sh->y)) < 0)
        return ND_FAIL(err, ND_ERR_IO, "%s: cannot read rows %ld..%ld of /%s/y", s->path, first, first + count,
                       s->split);
    const size_t n = (size_t)count * s->info.cols;
    if (s->info.x_scale != 1.0f)
        for (size_t i = 0; i < n; ++i) sh->x[i] *= s->info.x_scale;
    ND_TRY(nd_shard_validate(sh, s->path, s->split, s->num_classes, err));
    if (normalize && s->normalize) nd_normalize_apply(sh->x, (size_t)count, s->info.cols, s->mean, s->inv_std);
    return ND_OK;
}

static void *reader_main(void *arg) {
    nd_stream *s = arg;
    h5io_quiet(); /* HDF5's error printing is set per thread */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->req_window < 0 && !s->quit) pthread_cond_wait(&s->cv, &s->mu);
        if (s->quit) break;
        const int w = s->req_window, b = s->req_buf;
        s->req_window = -1;
        pthread_mutex_unlock(&s->mu);
        nd_error e = {0};
        const nd_status st = read_window(s, w, b, 1, &e);
        pthread_mutex_lock(&s->mu);
        s->req_st = st;
        s->req_err = e;
        s->busy = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Starts reading window w into buffer b (in the background when possible). */
static void request(nd_stream *s, int w, int b) {
    s->pending = 1, s->pending_window = w, s->pending_buf = b;
    if (!s->background) return; /* read when waited for */
    pthread_mutex_lock(&s->mu);
    s->req_window = w, s->req_buf = b, s->busy = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Waits for the pending read, if any; its outcome. */
static nd_status wait_read(nd_stream *s, nd_error *err) {
    if (!s->pending) return ND_OK;
    s->pending = 0;
    if (!s->background) return read_window(s, s->pending_window, s->pending_buf, 1, err);
    pthread_mutex_lock(&s->mu);
    while (s->busy) pthread_cond_wait(&s->cv, &s->mu);
    const nd_status st = s->req_st;
    if (st != ND_OK) *err = s->req_err;
    pthread_mutex_unlock(&s->mu);
    return st;
}

nd_status nd_stream_open(const char *path, const char *split, int part, int parts, int num_classes, long window_rows,
                         nd_stream **out, nd_error *err) {
    *out = NULL;
    if (window_rows < 1) return ND_FAIL(err, ND_ERR_ARG, "stream: windows must hold at least one row");
    nd_stream *s = calloc(1, sizeof *s);
    if (!s) return ND_FAIL(err, ND_ERR_NOMEM, "stream: cannot allocate its state");
    s->file = s->dx = s->dy = H5I_INVALID_HID;
    s->req_window = -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    snprintf(s->split, sizeof s->split, "%s", split);
    s->num_classes = num_classes;
    nd_status st = ND_OK;
    if ((s->file = h5io_open(path, 0, err)) < 0) {
        st = err->code;
        goto fail;
    }
    if ((st = nd_split_probe(s->file, path, split, &s->info, err)) != ND_OK) goto fail;
    nd_shard_range(s->info.rows, part, parts, &s->first, &s->rows);
    s->window_rows = window_rows < s->rows ? window_rows : (s->rows > 0 ? s->rows : 1);
    if (s->window_rows > INT_MAX || (size_t)s->window_rows > SIZE_MAX / sizeof(float) / (size_t)s->info.cols) {
        st = ND_FAIL(err, ND_ERR_ARG, "%s: /%s: windows of %ld rows are too large", path, split, s->window_rows);
        goto fail;
    }
    s->windows = (int)((s->rows + s->window_rows - 1) / s->window_rows);
    char name[64];
    snprintf(name, sizeof name, "/%s/x", split);
    s->dx = H5Dopen2(s->file, name, H5P_DEFAULT);
    snprintf(name, sizeof name, "/%s/y", split);
    s->dy = H5Dopen2(s->file, name, H5P_DEFAULT);
    if (s->dx < 0 || s->dy < 0) {
        st = ND_FAIL(err, ND_ERR_IO, "%s: cannot open /%s/x and /%s/y", path, split, split);
        goto fail;
    }
    const size_t wr = (size_t)s->window_rows;
    for (int b = 0; b < 2; ++b) {
        nd_shard *sh = &s->buf[b];
        sh->cols = s->info.cols;
        sh->target_cols = s->info.target_cols;
        sh->x = nd_buffer_alloc(wr * (size_t)s->info.cols);
        if (s->info.target_cols) sh->t = nd_buffer_alloc(wr * (size_t)s->info.target_cols);
        else sh->y = nd_buffer_alloc_i32(wr);
        if (!sh->x || !(sh->y || sh->t)) {
            st = ND_FAIL(err, ND_ERR_NOMEM, "%s: /%s: cannot allocate two windows of %ld x %d floats", path, split,
                         s->window_rows, s->info.cols);
            goto fail;
        }
    }
    /* Allocated now, so that setting the statistics later cannot fail. */
    s->mean = malloc(sizeof(float) * (size_t)s->info.cols);
    s->inv_std = malloc(sizeof(float) * (size_t)s->info.cols);
    if (!s->mean || !s->inv_std) {
        st = ND_FAIL(err, ND_ERR_NOMEM, "%s: /%s: cannot allocate normalization statistics", path, split);
        goto fail;
    }
    /* A library built without thread safety could not serve a reader
     * thread beside checkpoint writes: then windows are read on demand. */
    hbool_t safe = 0;
#ifndef ND_SIMGRID /* SMPI runs every rank in one OS thread: no reader thread, read on demand */
    H5is_library_threadsafe(&safe);
#endif
    if (safe) {
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        if (pthread_create(&s->thread, NULL, reader_main, s) == 0) {
            s->background = 1;
        } else {
            pthread_mutex_destroy(&s->mu);
            pthread_cond_destroy(&s->cv);
        }
    }
    *out = s;
    return ND_OK;
fail:
    nd_stream_close(s);
    return st;
}

void nd_stream_close(nd_stream *s) {
    if (!s) return;
    if (s->background) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    if (s->dx >= 0) H5Dclose(s->dx);
    if (s->dy >= 0) H5Dclose(s->dy);
    if (s->file >= 0) h5io_close(s->file);
    for (int b = 0; b < 2; ++b) {
        nd_buffer_free(s->buf[b].x);
        nd_buffer_free(s->buf[b].y);
        nd_buffer_free(s->buf[b].t);
    }
    free(s->mean);
    free(s->inv_std);
    free(s);
}

nd_status nd_stream_scan(nd_stream *s, nd_status (*fn)(void *ctx, const nd_shard *window, nd_error *err), void *ctx,
                         nd_error *err) {
    nd_error ignored = {0};
    wait_read(s, &ignored); /* an abandoned read's outcome does not matter */
    for (int w = 0; w < s->windows; ++w) {
        ND_TRY(read_window(s, w, 0, 0, err));
        ND_TRY(fn(ctx, &s->buf[0], err));
    }
    return ND_OK;
}

void nd_stream_set_normalize(nd_stream *s, const float *mean, const float *inv_std) {
    const size_t bytes = sizeof(float) * (size_t)s->info.cols;
    memcpy(s->mean, mean, bytes);
    memcpy(s->inv_std, inv_std, bytes);
    s->normalize = 1;
}

nd_status nd_stream_start(nd_stream *s, const int *order, int count, int first, nd_error *err) {
    nd_error ignored = {0};
    wait_read(s, &ignored); /* abandon the last pass's read-ahead */
    for (int i = 0; i < count; ++i)
        if (order[i] < 0 || order[i] >= s->windows)
            return ND_FAIL(err, ND_ERR_ARG, "stream: window %d of the order is not one of the %d windows", order[i],
                           s->windows);
    s->order = order, s->count = count, s->pos = first;
    if (first < count) request(s, order[first], 0);
    return ND_OK;
}

nd_status nd_stream_next(nd_stream *s, nd_shard *window, nd_error *err) {
    if (!s->pending) return ND_FAIL(err, ND_ERR_STATE, "stream: the pass over /%s has no window left", s->split);
    const int b = s->pending_buf;
    ND_TRY(wait_read(s, err));
    s->pos += 1;
    if (s->pos < s->count) request(s, s->order[s->pos], 1 - b);
    *window = s->buf[b];
    return ND_OK;
}
