/* Shared by the libFuzzer targets: the input bytes become a file, because
 * the readers under test (like the program) take paths. The file lives in
 * /dev/shm when it exists (tmpfs: no disk traffic per input). */
#ifndef NNDIST_FUZZ_COMMON_H
#define NNDIST_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* Writes data (size) to a per-process scratch file; returns its path or
 * NULL when it cannot be written. */
static const char *fuzz_file(const uint8_t *data, size_t size, const char *suffix) {
    static char path[256];
    snprintf(path, sizeof path, "%s/nndist-fuzz-%d%s", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (int)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    const int ok = fwrite(data, 1, size, f) == size;
    fclose(f);
    return ok ? path : NULL;
}

#endif
