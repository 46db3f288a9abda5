#include "mpi_fixture.h"

#include <stdio.h>

void mpi_base_config(nd_train_config *cfg, const char *data) {
    int help = 0;
    nd_error err = {0};
    char *none[] = {NULL};
    nd_train_config_parse(cfg, 0, none, &help, &err);
    snprintf(cfg->data, sizeof cfg->data, "%s", data);
    cfg->progress = ND_PROGRESS_NONE;
    cfg->threads = 1;
}

void mpi_synth(nd_comm *world, const char *path, const nd_synth_config *s) {
    nd_error err = {0};
    if (nd_comm_rank(world) == 0) {
        remove(path);
        if (nd_synth_write(s, path, &err) != ND_OK) fprintf(stderr, "mpi_synth: %s\n", err.msg);
    }
    nd_comm_barrier(world, &err);
}

int mpi_test_main(int argc, char **argv, nd_comm **world, const struct CMUnitTest *tests, size_t count, int ranks) {
    nd_error err = {0};
    if (nd_comm_init(&argc, &argv, world, &err) != ND_OK) return 1;
    int failed = _cmocka_run_group_tests("mpi", tests, count, NULL, NULL);
    /* Every rank must have passed: sum the failure counts. */
    double total = failed;
    nd_comm_allreduce_sum_f64(*world, &total, 1, &err);
    const int size = nd_comm_size(*world);
    if (size != ranks) fprintf(stderr, "this test needs exactly %d ranks, it has %d\n", ranks, size);
    nd_comm_free(*world);
    nd_comm_finalize();
    return total != 0 || size != ranks ? 1 : 0;
}
