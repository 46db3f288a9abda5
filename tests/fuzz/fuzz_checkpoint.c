/* libFuzzer target: the checkpoint reader on arbitrary bytes. A probe that
 * accepts the file gives an architecture; a model of it is built (as
 * --resume and eval do) and read, checksums and all. Failure is fine; a
 * crash, an out-of-bounds access or an absurd allocation is not. */
#include <stdlib.h>

#include "fuzz_common.h"
#include "nndist/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, ".h5");
    if (!path) return 0;
    nd_ckpt_info info;
    nd_error err = {0};
    if (nd_checkpoint_probe(path, &info, &err) != ND_OK) return 0;
    nd_model model;
    if (nd_model_create(&model, &info.spec, 1, &err) != ND_OK) return 0;
    nd_opt_config oc = {0};
    nd_optimizer opt = {0};
    const int with_opt = nd_opt_parse(info.optimizer, &oc.kind) == 0 &&
        nd_optimizer_create(&opt, &oc, model.num_params, &err) == ND_OK;
    float *mean = calloc((size_t)info.spec.input_dim, sizeof(float));
    float *inv = calloc((size_t)info.spec.input_dim, sizeof(float));
    float *ema = calloc(model.num_params, sizeof(float));
    if (mean && inv && ema) nd_checkpoint_read(path, &model, with_opt ? &opt : NULL, mean, inv, ema, &info, &err);
    free(mean), free(inv), free(ema);
    if (with_opt) nd_optimizer_destroy(&opt);
    nd_model_destroy(&model);
    return 0;
}
