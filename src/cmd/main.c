/* nndist: turns the command line into a configuration and runs it. This is
 * the only place that decides to stop the program. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nndist/commands.h"
#include "nndist/comm.h"
#include "nndist/data.h"
#include "nndist/train.h"

#define NNDIST_VERSION "0.1.0"

static void usage(FILE *out) {
    fprintf(out,
            "nndist " NNDIST_VERSION " - data-parallel neural-network training over MPI\n"
            "usage: [mpirun -np N] nndist <command> [options]\n"
            "commands:\n"
            "  train                 train a network, MLP or convolutional (sync, async, ssp)\n"
            "  data import-idx       add a split from IDX files (e.g. Fashion-MNIST) to an HDF5 dataset\n"
            "  data synth            write a seeded synthetic classification dataset\n"
            "  eval                  loss, accuracy, per-class accuracy, confusion matrix of a checkpoint\n"
            "  info FILE             describe a checkpoint or a dataset\n"
            "  show-weights CKPT     draw the first layer's weights (or conv filters) as a PNG grid of tiles\n"
            "  schedule --steps N    print the learning rate of every step (CSV) for train options\n"
            "  lr-find               learning-rate range test: loss against a rising rate, a suggested --lr\n"
            "  sanity                checks before training: initial loss, regularization, overfit 20 examples\n"
            "  gradcheck             backprop against centred differences in double, per parameter group\n"
            "  bench                 the machine's limits for a model: GEMM GFLOP/s, gradient allreduce time\n"
            "  help [CMD [SUB]]      this text, or a command's options (as nndist CMD --help)\n");
}

/* A fatal signal (a crash in the HDF5 library on a hostile file, or a bug)
 * still ends with one line naming the rank and the file open for reading
 * (if one is: a crash elsewhere is not the file's), and
 * exit status 70 rather than a signal; only async-signal-safe calls here. */
static int crash_rank = -1;

static void put(const char *s) {
    size_t n = 0;
    while (s[n]) ++n;
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w, n -= (size_t)w;
    }
}

/* crash_rank in decimal, without printf (not async-signal-safe). */
static void put_rank(void) {
    char rank[16] = "?";
    int r = crash_rank, i = (int)sizeof rank - 1;
    rank[i] = '\0';
    do rank[--i] = (char)('0' + r % 10), r /= 10;
    while (r > 0 && i > 0);
    put(crash_rank >= 0 ? rank + i : "?");
}

static void on_fatal_signal(int sig) {
    put("nndist: error: rank ");
    put_rank();
    put(sig == SIGFPE        ? ": arithmetic fault (SIGFPE)"
            : sig == SIGBUS  ? ": bus error (SIGBUS)"
            : sig == SIGILL  ? ": illegal instruction (SIGILL): this CPU lacks an instruction the program was built "
                               "for (NNDIST_NATIVE or NNDIST_ARCH on another machine?); rebuild without them"
            : sig == SIGABRT ? ": aborted (SIGABRT: a library found its memory damaged)"
                             : ": segmentation fault (SIGSEGV)");
    const char *last = nd_hdf5_last_path(); /* "" when no file is open for reading */
    if (last[0] && sig != SIGILL) {
        put("; a file open for reading: ");
        put(last);
        put(" (a damaged or hostile HDF5 file can crash the HDF5 library)");
    }
    put("\n");
    _exit(70);
}

/* A stop request (SIGTERM, SIGINT, SIGUSR1, SIGUSR2): the handler only
 * records the signal; the trainer reads it at each step and the ranks stop
 * together after a checkpoint (nd_trainer_watch_stop). A signal handler
 * cannot reach anything else, so these are the program's only mutable
 * globals; the handler runs with the four signals blocked, so it never
 * interrupts itself. A second request while stopping ends the process at
 * once. */
static volatile sig_atomic_t stop_signal;
static long stop_since_ms; /* CLOCK_MONOTONIC of the first request */

static long monotonic_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* async-signal-safe */
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void on_stop_signal(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    if (!stop_signal) {
        const int saved = errno;
        stop_since_ms = monotonic_ms(); /* before the flag: another thread's repeat reads both */
        stop_signal = sig;
        errno = saved;
        return;
    }
    /* The same request delivered twice is not a second one: the launcher
     * (our parent) forwards SIGUSR1/2 that scancel also sends every process
     * directly, and answers a SIGTERM or SIGINT of its own with a SIGTERM to
     * every rank a second later (docs/clusters.md). */
    if ((info && info->si_pid == getppid()) || (sig == stop_signal && monotonic_ms() - stop_since_ms < 2000)) return;
    put("nndist: rank ");
    put_rank();
    put(": a second signal while stopping: exiting now (the newest checkpoint is the last one completed)\n");
    _exit(128 + sig);
}

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_stop_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART; /* file reads and writes go on */
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < ND_STOP_SIGNALS; ++i) sigaddset(&sa.sa_mask, nd_stop_signals[i]);
    for (int i = 0; i < ND_STOP_SIGNALS; ++i) sigaction(nd_stop_signals[i], &sa, NULL);
}

static void install_fatal_handlers(int rank) {
    crash_rank = rank;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = SA_RESETHAND;
    const int sigs[5] = {SIGSEGV, SIGFPE, SIGBUS, SIGILL, SIGABRT};
    for (int i = 0; i < 5; ++i) sigaction(sigs[i], &sa, NULL);
}

/* One line on stderr for the rank that found the problem. */
static void report_error(const nd_error *err) {
    if (err->msg[0]) fprintf(stderr, "nndist: error: %s\n", err->msg);
}

static int run_train(nd_comm *comm, int argc, char **argv) {
    nd_error err = {0};
    nd_train_config cfg;
    int help = 0;
    nd_status st = nd_train_config_parse(&cfg, argc, argv, &help, &err);
    if (st == ND_OK && help) {
        int markdown = 0; /* --help --markdown: the table of docs/options.md */
        for (int i = 0; i < argc; ++i) markdown |= !strcmp(argv[i], "--markdown");
        if (nd_comm_rank(comm) == 0 && markdown) nd_cli_markdown(nd_train_options, nd_train_num_options, stdout);
        else if (nd_comm_rank(comm) == 0) {
            printf(
                "usage: [mpirun -np N] nndist train --data FILE [options]  (--help --markdown: as a Markdown table)\n");
            nd_cli_help(nd_train_options, nd_train_num_options, nd_train_topics, nd_train_num_topics, stdout,
                        help == 2);
        }
        return 0;
    }
    if (st != ND_OK) {
        /* Every rank parsed the same argv and failed alike: rank 0 speaks. */
        if (nd_comm_rank(comm) == 0) report_error(&err);
        return 2;
    }
    nd_trainer *tr = NULL;
    install_stop_handlers(); /* a signal during setup stops the run after its first step */
    st = nd_trainer_setup(&tr, &cfg, comm, &err);
    if (st != ND_OK) {
        /* Setup agreed on the failure: every rank is here, none in a collective. */
        report_error(&err);
        nd_trainer_write_failed_summary(tr, err.msg, 0); /* if it had said "running" */
        nd_trainer_free(tr);
        return err.code == ND_ERR_ARG ? 2 : 1;
    }
    nd_trainer_watch_stop(tr, &stop_signal);
    st = nd_trainer_fit(tr, &err);
    if (st == ND_OK) st = nd_train_save_model(tr, &err); /* also after a stop: the weights of that step */
    if (st != ND_OK && nd_trainer_result(tr).agreed_failure &&
        nd_trainer_result(tr).status == ND_RUN_STOPPED_BY_SIGNAL) {
        /* The stop's checkpoint is what a rerun needs: a model file that
         * cannot be written is reported but does not undo the stop. */
        report_error(&err);
        st = ND_OK;
    }
    if (st != ND_OK && nd_trainer_result(tr).agreed_failure) {
        /* Every rank stopped at the same verdict (the numerical guard, a
         * model file that cannot be written): no rank is left in a
         * collective, so the job ends normally. */
        report_error(&err);
        nd_trainer_write_failed_summary(tr, err.msg, 0);
        nd_trainer_free(tr);
        return 1;
    }
    if (st != ND_OK) {
        /* A failure inside training may be on one rank only: end the whole job. */
        char line[sizeof err.msg + 32];
        snprintf(line, sizeof line, "rank %d: %s", nd_comm_rank(comm), err.msg[0] ? err.msg : "training failed");
        fprintf(stderr, "nndist: error: %s\n", line);
        nd_trainer_write_failed_summary(tr, line, 1);
        fflush(NULL);
        nd_comm_abort(comm, 1);
    }
    const nd_train_result r = nd_trainer_result(tr);
    st = nd_trainer_write_summary(tr, &err);
    report_error(&err);
    if (r.status == ND_RUN_STOPPED_BY_SIGNAL && nd_comm_rank(comm) == 0) {
        char where[ND_PATH_MAX + 96];
        if (r.stop_checkpoint[0])
            snprintf(where, sizeof where, "checkpoint %s; rerun with --resume auto", r.stop_checkpoint);
        else snprintf(where, sizeof where, "no checkpoint (no --checkpoint-dir): a rerun starts afresh");
        fflush(stdout);
        fprintf(stderr, "nndist: stopped by %s at %s %ld (epoch %d, %.0f%% through); %s\n",
                nd_stop_signal_name(r.stop_signal),
                cfg.mode == ND_MODE_ASYNC || cfg.mode == ND_MODE_SSP ? "update" : "step", r.stop_step, r.stop_epoch,
                100.0 * r.stop_fraction, where);
    }
    nd_trainer_free(tr);
    if (st != ND_OK) return 1;
    return r.status == ND_RUN_STOPPED_BY_SIGNAL ? ND_EXIT_STOPPED : 0;
}

/* The range test trains like train: a failure inside a step may be one
 * rank's alone, and then the whole job ends. */
static int run_lr_find(nd_comm *comm, int argc, char **argv) {
    nd_error err = {0};
    int agreed = 1;
    const nd_status st = nd_cmd_lr_find(comm, argc, argv, &agreed, &err);
    if (st != ND_OK && !agreed) {
        fprintf(stderr, "nndist: error: rank %d: %s\n", nd_comm_rank(comm), err.msg[0] ? err.msg : "lr-find failed");
        fflush(NULL);
        nd_comm_abort(comm, 1);
    }
    report_error(&err);
    return st == ND_OK ? 0 : (err.code == ND_ERR_ARG ? 2 : 1);
}

/* Data commands write files: only rank 0 works, the others wait for its verdict. */
static int run_on_rank0(nd_comm *comm, nd_status (*cmd)(int, char **, nd_error *), int argc, char **argv) {
    nd_error err = {0};
    nd_status st = ND_OK;
    if (nd_comm_rank(comm) == 0) {
        st = cmd(argc, argv, &err);
        report_error(&err);
    }
    int first = nd_comm_first_failed(comm, st != ND_OK);
    return first < 0 ? 0 : (err.code == ND_ERR_ARG || first != 0 ? 2 : 1);
}

int main(int argc, char **argv) {
    /* `nndist help CMD [SUB]` is `nndist CMD [SUB] --help`. */
    char *asked[5] = {argv[0], NULL, NULL, NULL, NULL};
    if (argc >= 3 && argc <= 4 && !strcmp(argv[1], "help")) {
        int k = 1;
        for (int i = 2; i < argc; ++i) asked[k++] = argv[i];
        asked[k++] = "--help";
        argc = k, argv = asked;
    }
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "data") && (argc < 3 || argv[2][0] == '-')) {
        /* `nndist data`, `nndist data --help`: the subcommands. */
        const int asked_help = argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"));
        fprintf(asked_help ? stdout : stderr,
                "usage: nndist data <subcommand> [options]   ('nndist data SUB --help' lists its options)\n"
                "  import-idx    add a split from IDX files (e.g. Fashion-MNIST) to an HDF5 dataset\n"
                "  synth         write a seeded synthetic classification dataset\n");
        return asked_help ? 0 : 2;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("nndist " NNDIST_VERSION "\n");
        return 0;
    }
    nd_comm *world = NULL;
    nd_error err = {0};
    if (nd_comm_init(&argc, &argv, &world, &err) != ND_OK) {
        report_error(&err);
        return 1;
    }
    install_fatal_handlers(nd_comm_rank(world));
    if (nd_comm_check_launch(world, &err) != ND_OK) {
        /* Every copy is alone: each says it, once. */
        report_error(&err);
        nd_comm_free(world);
        nd_comm_finalize();
        return 2;
    }
    int rc;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train")) {
        rc = run_train(world, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "data") && argc >= 3 && !strcmp(argv[2], "import-idx")) {
        rc = run_on_rank0(world, nd_cmd_import_idx, argc - 3, argv + 3);
    } else if (!strcmp(cmd, "eval")) {
        nd_error e = {0};
        nd_status st = nd_cmd_eval(world, argc - 2, argv + 2, &e);
        report_error(&e);
        rc = st == ND_OK ? 0 : (e.code == ND_ERR_ARG ? 2 : 1);
    } else if (!strcmp(cmd, "bench")) {
        nd_error e = {0};
        nd_status st = nd_cmd_bench(world, argc - 2, argv + 2, &e);
        if (e.code == ND_ERR_ARG && nd_comm_rank(world) != 0) e.msg[0] = '\0'; /* every rank parsed alike */
        report_error(&e);
        rc = st == ND_OK ? 0 : (e.code == ND_ERR_ARG ? 2 : 1);
    } else if (!strcmp(cmd, "lr-find")) {
        rc = run_lr_find(world, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "schedule")) {
        rc = run_on_rank0(world, nd_cmd_schedule, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "sanity")) {
        rc = run_on_rank0(world, nd_cmd_sanity, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "gradcheck")) {
        rc = run_on_rank0(world, nd_cmd_gradcheck, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "show-weights")) {
        rc = run_on_rank0(world, nd_cmd_show_weights, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "info")) {
        rc = run_on_rank0(world, nd_cmd_info, argc - 2, argv + 2);
    } else if (!strcmp(cmd, "data") && argc >= 3 && !strcmp(argv[2], "synth")) {
        rc = run_on_rank0(world, nd_cmd_synth, argc - 3, argv + 3);
    } else {
        if (nd_comm_rank(world) == 0) {
            fprintf(stderr, "nndist: error: unknown command '%s%s%s' (try: nndist help)\n", cmd,
                    argc >= 3 && !strcmp(cmd, "data") ? " " : "", argc >= 3 && !strcmp(cmd, "data") ? argv[2] : "");
        }
        rc = 2;
    }
    nd_comm_free(world);
    nd_comm_finalize();
    return rc;
}
