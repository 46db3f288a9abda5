/* What the files of src/comm share beyond nndist/comm.h: the MPI
 * communicator behind an nd_comm and its watchdog time. */
#ifndef NNDIST_COMM_INTERNAL_H
#define NNDIST_COMM_INTERNAL_H

#include <mpi.h>

#include "nndist/comm.h"

MPI_Comm nd_comm_mpi(const nd_comm *comm);
/* Seconds (nd_comm_set_timeout; 0: wait forever). */
double nd_comm_timeout(const nd_comm *comm);

#endif
