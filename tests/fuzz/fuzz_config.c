/* libFuzzer target: the `--config FILE` reader and the checks that follow
 * it, on arbitrary bytes: `key = value` lines of every shape and length. */
#include "fuzz_common.h"
#include "nndist/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, ".ini");
    if (!path) return 0;
    nd_train_config cfg;
    nd_error err = {0};
    if (nd_cli_defaults(nd_train_options, nd_train_num_options, &cfg, &err) != ND_OK) return 0;
    if (nd_cli_read_file(nd_train_options, nd_train_num_options, &cfg, path, &err) != ND_OK) return 0;
    nd_train_plan plan;
    nd_train_plan_resolve(&cfg, &plan, &err);
    return 0;
}
