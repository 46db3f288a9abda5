/* The subcommands that main dispatches to (argv: the options after the
 * command words). */
#ifndef NNDIST_COMMANDS_H
#define NNDIST_COMMANDS_H

#include "nndist/comm.h"
#include "nndist/status.h"

/* Not collective: main runs these on rank 0 only. */
nd_status nd_cmd_import_idx(int argc, char **argv, nd_error *err);
nd_status nd_cmd_synth(int argc, char **argv, nd_error *err);
nd_status nd_cmd_info(int argc, char **argv, nd_error *err);
nd_status nd_cmd_schedule(int argc, char **argv, nd_error *err);
nd_status nd_cmd_sanity(int argc, char **argv, nd_error *err);
nd_status nd_cmd_gradcheck(int argc, char **argv, nd_error *err);
nd_status nd_cmd_show_weights(int argc, char **argv, nd_error *err);

/* Collective over comm: every rank evaluates its block of the split. */
nd_status nd_cmd_eval(nd_comm *comm, int argc, char **argv, nd_error *err);

/* Collective over comm: the machine's limits for a model's shapes (GEMM
 * rate on every rank, allreduce time of its gradient). */
nd_status nd_cmd_bench(nd_comm *comm, int argc, char **argv, nd_error *err);

/* Collective over comm: the learning-rate range test (train's options and
 * its own). *agreed = 0 when a failure may be this rank's alone (a training
 * step's): the caller must end the whole job. */
nd_status nd_cmd_lr_find(nd_comm *comm, int argc, char **argv, int *agreed, nd_error *err);

#endif
