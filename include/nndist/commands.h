/* The subcommands that main dispatches to (argv: the options after the
 * command words). Non-collective: main runs them on rank 0 only. */
#ifndef NNDIST_COMMANDS_H
#define NNDIST_COMMANDS_H

#include "nndist/status.h"

nd_status nd_cmd_import_idx(int argc, char **argv, nd_error *err);
nd_status nd_cmd_synth(int argc, char **argv, nd_error *err);

#endif
