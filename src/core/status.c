#include "nndist/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

nd_status nd_fail_at(nd_error *err, nd_status code, const char *file, int line, const char *fmt, ...) {
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

void nd_error_clear(nd_error *err) { memset(err, 0, sizeof *err); }

nd_status nd_error_prefix(nd_error *err, const char *fmt, ...) {
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (len < 0) return err->code;
    size_t used = (size_t)len < sizeof msg ? (size_t)len : sizeof msg - 1;
    size_t rest = strlen(err->msg); /* the message, cut if the whole does not fit */
    if (rest > sizeof msg - 1 - used) rest = sizeof msg - 1 - used;
    memcpy(msg + used, err->msg, rest);
    msg[used + rest] = '\0';
    memcpy(err->msg, msg, sizeof msg);
    return err->code;
}
