/* The parameter servers (--mode async/ssp) as an exchange: only their
 * capabilities live here, for the plan's checks. They do not run the sync
 * loop: servers own slices of the parameters and apply each worker's
 * gradient as it arrives, driven by nd_async_fit (async.c). */
#include "../exchange.h"

static bool chosen(const nd_train_config *c) { return c->mode == ND_MODE_ASYNC || c->mode == ND_MODE_SSP; }

const nd_exchange_part nd_exchange_param_server = {
    /* servers apply each worker's gradient as it comes and hold one slice each */
    .caps = {.name = "parameter servers",
             .chosen_by = "--mode async/ssp",
             .chosen = chosen,
             .sync_bn = false,
             .skip_step = false,
             .whole_replica = false,
             .streams = false,
             .sliced = false},
};
