/* Runs the nndist program under mpiexec for the program-level tests. */
#ifndef NNDIST_TEST_PROGRAM_H
#define NNDIST_TEST_PROGRAM_H

#include <stddef.h>

/* `timeout -k 5 T mpiexec -n np --oversubscribe nndist <args>`; returns the
 * exit status (124/137: timed out) and the combined output in out. */
int run_nndist(int np, const char *args, char *out, size_t cap, int timeout_s);

/* Reads a whole small file into buf (NUL-terminated); returns its length or -1. */
long read_file(const char *path, char *buf, size_t cap);

/* The number after "key": in a JSON text, or NAN. */
double json_number(const char *json, const char *key);

#endif
