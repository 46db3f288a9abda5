/* Shared by the fault-matrix tests that leave checkpoints behind: does the
 * newest one load whole (every checksum verified by nd_checkpoint_read)? */
#ifndef NNDIST_FAULT_CHECKPOINT_H
#define NNDIST_FAULT_CHECKPOINT_H

#include <stdio.h>
#include <string.h>

#include "nndist/checkpoint.h"

/* 1 if dir has a checkpoint and the newest loads; its path into newest
 * (cap chars), its step into *step, else the reason into why (1024 chars). */
static int fault_newest_loads(const char *dir, char *newest, size_t cap, long *step, char *why) {
    nd_error err = {0};
    nd_ckpt_info info;
    memset(&info, 0, sizeof info);
    int found = 0, loads = 0;
    *step = -1;
    snprintf(newest, cap, "none");
    if (nd_checkpoint_latest(dir, newest, cap, &found, &err) != ND_OK || !found) {
        snprintf(why, 1024, "no checkpoint in %.400s %.500s", dir, err.msg);
        return 0;
    }
    if (nd_checkpoint_probe(newest, &info, &err) == ND_OK) {
        *step = info.meta.step;
        nd_model m;
        nd_opt_config oc = {0};
        nd_optimizer opt;
        float mean[1024], inv[1024];
        nd_opt_parse(info.optimizer, &oc.kind);
        if (info.spec.input_dim <= 1024 && nd_model_create(&m, &info.spec, 1, &err) == ND_OK) {
            if (nd_optimizer_create(&opt, &oc, m.num_params, &err) == ND_OK) {
                loads = nd_checkpoint_read(newest, &m, &opt, mean, inv, NULL, &info, &err) == ND_OK;
                nd_optimizer_destroy(&opt);
            }
            nd_model_destroy(&m);
        }
    }
    snprintf(why, 1024, "%s", loads ? "" : err.msg);
    return loads;
}

#endif
