#include "feed.h"

/* The table: one entry per feed. */
const nd_feed_part *const nd_feed_parts[ND_FEEDS] = {
    [ND_FEED_MEMORY] = &nd_feed_memory,
    [ND_FEED_STREAM] = &nd_feed_stream,
    [ND_FEED_BLOCKS] = &nd_feed_blocks,
};
