/* Shared by the MPI tests: the world communicator, a quiet training
 * configuration, and a main that runs cmocka on every rank and fails unless
 * every rank passed. */
#ifndef NNDIST_TEST_MPI_FIXTURE_H
#define NNDIST_TEST_MPI_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "nndist/train.h"

/* Defaults of `nndist train` with data, no progress output, 1 BLAS thread. */
void mpi_base_config(nd_train_config *cfg, const char *data);

/* Collective: rank 0 writes the synthetic set s to path (replacing any
 * earlier file), then every rank waits for it. */
void mpi_synth(nd_comm *world, const char *path, const nd_synth_config *s);

/* Initializes MPI into *world, runs tests, and returns 0 only when every
 * rank passed and the job has exactly `ranks` ranks. */
int mpi_test_main(int argc, char **argv, nd_comm **world, const struct CMUnitTest *tests, size_t count, int ranks);

#endif
