/* The stall watchdog's thread (watchdog.c): ends this process with one
 * line when a marked exchange of the step lasts longer than the limit. */
#ifndef NNDIST_WATCHDOG_H
#define NNDIST_WATCHDOG_H

#include "nndist/status.h"

typedef struct nd_watchdog nd_watchdog;

/* Starts the thread; limit <= 0: no watchdog (*out = NULL, and the calls
 * below do nothing). */
nd_status nd_watchdog_start(nd_watchdog **out, int rank, double limit, nd_error *err);

/* The step enters exchange `what` (a string that outlives the call) of
 * step `step`, and leaves it. Cheap: atomic stores. */
void nd_watchdog_enter(nd_watchdog *w, const char *what, long step);
void nd_watchdog_leave(nd_watchdog *w);

void nd_watchdog_stop(nd_watchdog *w);

#endif
