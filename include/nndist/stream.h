/* Streaming shard reader, for training splits bigger than memory.
 *
 * A rank's block of /<split> (the same rows nd_shard_read would give it) is
 * cut into windows of `window_rows` consecutive rows. During training a
 * background thread reads the next window of the pass (in the order the
 * caller gives) while the current one is used, converts, checks and
 * normalizes it: double buffering, so two windows are all the memory the
 * split takes, whatever its size. Shuffling happens within a window and in
 * the order of the windows (the caller's order).
 *
 * Ranks are plain integers here; nothing is collective. Not thread-safe
 * itself: one caller thread per stream. */
#ifndef NNDIST_STREAM_H
#define NNDIST_STREAM_H

#include "nndist/data.h"
#include "nndist/status.h"

typedef struct nd_stream nd_stream;

/* Opens path's /<split> for rank `part` of `parts` with windows of
 * window_rows (>= 1) rows and allocates the two window buffers. Reads
 * nothing yet. */
nd_status nd_stream_open(const char *path, const char *split, int part, int parts, int num_classes, long window_rows,
                         nd_stream **out, nd_error *err);
void nd_stream_close(nd_stream *s);

/* This rank's rows and first global row; the number of windows and the
 * rows of window w (all window_rows but perhaps the last). */
long nd_stream_rows(const nd_stream *s);
long nd_stream_first_row(const nd_stream *s);
int nd_stream_windows(const nd_stream *s);
long nd_stream_window_rows(const nd_stream *s, int w);

/* 1 when windows are read in the background (HDF5 is thread-safe), 0 when
 * nd_stream_next reads them itself. */
int nd_stream_background(const nd_stream *s);

/* Reads every window in file order, now, and calls fn on each (scaled and
 * checked, not normalized): statistics and checks before training. Must not
 * run while a pass is under way. */
nd_status nd_stream_scan(nd_stream *s, nd_status (*fn)(void *ctx, const nd_shard *window, nd_error *err), void *ctx,
                         nd_error *err);

/* From now on each window is normalized as it is read: x = (x - mean) *
 * inv_std, both (cols) and copied. */
void nd_stream_set_normalize(nd_stream *s, const float *mean, const float *inv_std);

/* Begins a pass over the windows order[first .. count) (order stays the
 * caller's and must not change during the pass); the read of
 * order[first] starts at once. An unfinished earlier pass is abandoned. */
nd_status nd_stream_start(nd_stream *s, const int *order, int count, int first, nd_error *err);

/* The pass's next window in *window (a view, valid until the next call):
 * waits for its read, then starts reading the one after it. */
nd_status nd_stream_next(nd_stream *s, nd_shard *window, nd_error *err);

#endif
