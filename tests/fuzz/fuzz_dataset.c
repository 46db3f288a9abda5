/* libFuzzer target: the dataset reader on arbitrary bytes. Whatever the
 * file claims (dtypes, ranks, dimensions, 10^12 rows, attributes), probing
 * and reading a shard must either succeed or return an error: no crash, no
 * out-of-bounds access, no absurd allocation. */
#include "fuzz_common.h"
#include "nndist/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size, ".h5");
    if (!path) return 0;
    nd_dataset_info info;
    nd_error err = {0};
    if (nd_dataset_probe(path, &info, &err) != ND_OK) return 0;
    const char *splits[3] = {"train", "val", "test"};
    const int present[3] = {1, info.has_val, info.has_test};
    for (int s = 0; s < 3; ++s) {
        if (!present[s]) continue;
        for (int part = 0; part < 2; ++part) { /* rank 0 and 1 of 2 */
            nd_shard sh;
            if (nd_shard_read(path, splits[s], part, 2, info.num_classes, &sh, &err) == ND_OK) nd_shard_free(&sh);
        }
    }
    return 0;
}
