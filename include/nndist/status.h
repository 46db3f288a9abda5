/* Status codes and error records shared by every module.
 *
 * Library functions never print and never exit: they return an nd_status and,
 * on failure, fill an nd_error with one human-readable line (naming the thing
 * and what is wrong) plus the source location that raised it. Only the
 * program's top level decides to print and stop. */
#ifndef NNDIST_STATUS_H
#define NNDIST_STATUS_H

#include <stddef.h>

typedef enum {
    ND_OK = 0,
    ND_ERR_ARG,    /* bad option value or bad argument from the caller */
    ND_ERR_IO,     /* a file could not be opened, read or written */
    ND_ERR_FORMAT, /* a file exists but its content is not what we need */
    ND_ERR_DATA,   /* values out of range: labels, NaN/Inf, sizes */
    ND_ERR_NOMEM,  /* an allocation failed */
    ND_ERR_COMM,   /* the communication layer reported a failure */
    ND_ERR_STATE   /* an internal invariant does not hold */
} nd_status;

typedef struct {
    nd_status code;
    char msg[512];    /* one line, no trailing newline */
    const char *file; /* source location that raised it */
    int line;
} nd_error;

/* Records an error and returns `code`, so call sites can `return ND_FAIL(...)`. */
nd_status nd_fail_at(nd_error *err, nd_status code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define ND_FAIL(err, code, ...) nd_fail_at((err), (code), __FILE__, __LINE__, __VA_ARGS__)

/* Propagates a failure that already filled the error record. */
#define ND_TRY(expr)                              \
    do {                                          \
        nd_status nd_try_s_ = (expr);             \
        if (nd_try_s_ != ND_OK) return nd_try_s_; \
    } while (0)

const char *nd_status_name(nd_status code);

/* Puts context before an error's message ("update 12: " + message); the
 * code and source location stay. Returns err->code for `return`. */
nd_status nd_error_prefix(nd_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears an error record (code ND_OK, empty message). */
void nd_error_clear(nd_error *err);

#endif
