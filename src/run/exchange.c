#include "exchange.h"

/* The table: one entry per exchange, a line each. */
/* clang-format off */
const nd_exchange_part *const nd_exchange_parts[ND_EXCHANGES] = {
    [ND_EXCHANGE_ALLREDUCE] = &nd_exchange_allreduce,
    [ND_EXCHANGE_BUCKETS] = &nd_exchange_buckets,
    [ND_EXCHANGE_ZERO] = &nd_exchange_zero,
    [ND_EXCHANGE_FIXED_POINT] = &nd_exchange_fixed_point,
    [ND_EXCHANGE_TOPK] = &nd_exchange_topk,
    [ND_EXCHANGE_POWERSGD] = &nd_exchange_powersgd,
    [ND_EXCHANGE_LOCAL] = &nd_exchange_local,
    [ND_EXCHANGE_PARAM_SERVER] = &nd_exchange_param_server,
    [ND_EXCHANGE_WIRE16] = &nd_exchange_wire16,
};
/* clang-format on */

const nd_exchange_caps *nd_exchange_caps_of(nd_exchange_kind kind) { return &nd_exchange_parts[kind]->caps; }
