#include "observer.h"

/* The order matters: a straggler sleeps first (its peers then wait for
 * it at the next exchange), the average is evaluated before the epoch line prints
 * it, and the best epoch is known before the checkpoint copies it. */
const nd_observer_part *const nd_observer_parts[] = {
    &nd_observer_straggle, &nd_observer_ema,        &nd_observer_profile, &nd_observer_report,
    &nd_observer_best,     &nd_observer_checkpoint, &nd_observer_plateau, &nd_observer_ensemble,
};
const int nd_num_observer_parts = (int)(sizeof nd_observer_parts / sizeof nd_observer_parts[0]);
