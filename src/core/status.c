#include "nndist/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

nd_status nd_fail_at(nd_error *err, nd_status code, const char *file, int line,
                     const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* Keep the record to one line whatever the caller formatted. */
        for (char *p = err->msg; *p; ++p)
            if (*p == '\n' || *p == '\r') *p = ' ';
        err->code = code;
        err->file = file;
        err->line = line;
    }
    return code;
}

const char *nd_status_name(nd_status code) {
    switch (code) {
    case ND_OK: return "ok";
    case ND_ERR_ARG: return "bad argument";
    case ND_ERR_IO: return "i/o error";
    case ND_ERR_FORMAT: return "bad format";
    case ND_ERR_DATA: return "bad data";
    case ND_ERR_NOMEM: return "out of memory";
    case ND_ERR_COMM: return "communication error";
    case ND_ERR_STATE: return "internal error";
    }
    return "unknown";
}

void nd_error_clear(nd_error *err) {
    memset(err, 0, sizeof *err);
}
