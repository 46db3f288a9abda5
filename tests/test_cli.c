/* Option parsing: values, booleans, --name=value, config files, the
 * command line overriding the file, and clear errors for bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "nndist/train.h"

static nd_status parse(nd_train_config *c, nd_error *err, int argc, char **argv) {
    int help = 0;
    memset(err, 0, sizeof *err);
    return nd_train_config_parse(c, argc, argv, &help, err);
}

static void test_defaults_and_values(void **state) {
    (void)state;
    nd_train_config c;
    nd_error err;
    char *argv[] = {"--data", "d.h5",   "--lr=0.05", "--batch", "256",  "--no-shuffle",   "--hidden",
                    "128",    "--seed", "42",        "--opt",   "adam", "--warmup_steps", "100"};
    assert_int_equal(parse(&c, &err, 14, argv), ND_OK);
    assert_string_equal(c.data, "d.h5");
    assert_float_equal(c.lr, 0.05f, 0);
    assert_int_equal(c.batch, 256);
    assert_false(c.shuffle);
    assert_string_equal(c.hidden, "128");
    assert_int_equal(c.seed, 42);
    assert_int_equal(c.opt, ND_OPT_ADAM);
    assert_int_equal(c.warmup_steps, 100);
    assert_int_equal(c.epochs, 10);          /* default */
    assert_float_equal(c.momentum, 0.9f, 0); /* default */
    assert_int_equal(c.mode, ND_MODE_SYNC);  /* default */
    nd_train_plan plan;
    assert_int_equal(nd_train_plan_resolve(&c, &plan, &err), ND_OK);
    assert_int_equal(plan.exchange, ND_EXCHANGE_ALLREDUCE);
    assert_int_equal(plan.feed, ND_FEED_MEMORY);
    assert_int_equal(plan.straggle_rank, -1);
}

static void test_bad_values(void **state) {
    (void)state;
    nd_train_config c;
    nd_error err;
    char *a1[] = {"--batch", "12x"};
    assert_int_equal(parse(&c, &err, 2, a1), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--batch"));
    char *a2[] = {"--lr", "nan"};
    assert_int_equal(parse(&c, &err, 2, a2), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--lr"));
    char *a3[] = {"--learning-rate", "0.1"};
    assert_int_equal(parse(&c, &err, 2, a3), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown option '--learning-rate'"));
    char *a4[] = {"--epochs"};
    assert_int_equal(parse(&c, &err, 1, a4), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "missing value"));
    char *a5[] = {"--seed", "-1"};
    assert_int_equal(parse(&c, &err, 2, a5), ND_ERR_ARG);
    char *a6[] = {"stray"};
    assert_int_equal(parse(&c, &err, 1, a6), ND_ERR_ARG);
    /* A near miss is named; something far from every option is not. */
    char *a7[] = {"--epoch", "3"};
    assert_int_equal(parse(&c, &err, 2, a7), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown option '--epoch': did you mean --epochs?"));
    char *a8[] = {"--checkpointdir", "d"};
    assert_int_equal(parse(&c, &err, 2, a8), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "did you mean --checkpoint-dir?"));
    char *a9[] = {"--zzz", "1"};
    assert_int_equal(parse(&c, &err, 2, a9), ND_ERR_ARG);
    assert_null(strstr(err.msg, "did you mean"));
}

/* Refused by the parser (a name that is no choice) or by the plan (a
 * range, a text, a combination), with needle in the message. */
static void expect_refused(int argc, char **argv, const char *needle) {
    nd_train_config c;
    nd_train_plan plan;
    nd_error err;
    nd_status st = parse(&c, &err, argc, argv);
    if (st == ND_OK) st = nd_train_plan_resolve(&c, &plan, &err);
    assert_int_equal(st, ND_ERR_ARG);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void expect_invalid(const char *name, const char *value, const char *needle) {
    char opt[64];
    snprintf(opt, sizeof opt, "--%s", name);
    char *argv[] = {"--data", "d.h5", opt, (char *)value};
    expect_refused(4, argv, needle);
}

static void test_validation(void **state) {
    (void)state;
    expect_invalid("batch", "0", "--batch: 0 must be >= 1");
    expect_invalid("dropout", "1", "--dropout: 1 must be in [0, 1)");
    expect_invalid("opt", "rmsprop2", "--opt: 'rmsprop2' is not one of sgd, momentum, nesterov, adam");
    expect_invalid("act", "identity", "--act: identity is the output layer's");
    expect_invalid("epochs", "-3", "--epochs");
    expect_invalid("lr", "0", "--lr");
    expect_invalid("lr", "-0.1", "--lr");
    expect_invalid("opt", "rmsprop2", "--opt: 'rmsprop2'");
    expect_invalid("act", "gelu", "--act");
    expect_invalid("hidden", "512,,256", "--hidden");
    expect_invalid("hidden", "512,-1", "--hidden");
    expect_invalid("momentum", "1.5", "--momentum");
    expect_invalid("mode", "hogwild", "--mode: 'hogwild'");
    expect_invalid("straggle", "1:0.5", "--straggle");
    expect_invalid("straggle", "one:2", "--straggle");
    expect_invalid("servers", "0", "--servers");
    expect_invalid("clip-norm", "-1", "--clip-norm");
    nd_train_config c;
    nd_train_plan plan;
    nd_error err;
    assert_int_equal(parse(&c, &err, 0, NULL), ND_OK);
    assert_int_equal(nd_train_plan_resolve(&c, &plan, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--data"));
    /* A struct filled by hand is checked against the same ranges. */
    assert_int_equal(parse(&c, &err, 0, NULL), ND_OK);
    snprintf(c.data, sizeof c.data, "d.h5");
    c.ema = 1.0f;
    assert_int_equal(nd_train_plan_resolve(&c, &plan, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--ema: 1 must be in [0, 1)"));
}

/* The plan: which exchange and feed the options pick, and every option
 * refused where its exchange lacks the capability it needs. */
static void test_plan_parts_and_capabilities(void **state) {
    (void)state;
    struct {
        const char *args[4];
        nd_exchange_kind exchange;
        nd_feed_kind feed;
    } picks[] = {
        {{"--bucket-kb", "64"}, ND_EXCHANGE_BUCKETS, ND_FEED_MEMORY},
        {{"--shard-optimizer", "--stream-mb", "8"}, ND_EXCHANGE_ZERO, ND_FEED_STREAM},
        {{"--deterministic"}, ND_EXCHANGE_FIXED_POINT, ND_FEED_BLOCKS},
        {{"--mode", "ssp"}, ND_EXCHANGE_PARAM_SERVER, ND_FEED_MEMORY},
        {{"--compress", "bf16"}, ND_EXCHANGE_WIRE16, ND_FEED_MEMORY},
        {{"--compress", "fp16", "--bucket-kb", "64"}, ND_EXCHANGE_WIRE16, ND_FEED_MEMORY},
        {{"--mode", "local", "--stream-mb", "8"}, ND_EXCHANGE_LOCAL, ND_FEED_STREAM},
    };
    for (size_t i = 0; i < sizeof picks / sizeof picks[0]; ++i) {
        char *argv[6] = {"--data", "d.h5"};
        int argc = 2;
        while (argc - 2 < 4 && picks[i].args[argc - 2]) argv[argc] = (char *)picks[i].args[argc - 2], ++argc;
        nd_train_config c;
        nd_train_plan plan;
        nd_error err;
        assert_int_equal(parse(&c, &err, argc, argv), ND_OK);
        assert_int_equal(nd_train_plan_resolve(&c, &plan, &err), ND_OK);
        assert_int_equal(plan.exchange, picks[i].exchange);
        assert_int_equal(plan.feed, picks[i].feed);
        assert_int_equal(plan.ssp, c.mode == ND_MODE_SSP);
    }
    char *two_exchanges[] = {"--data", "d.h5", "--bucket-kb", "4", "--shard-optimizer"};
    expect_refused(5, two_exchanges, "--shard-optimizer: not with --bucket-kb");
    char *async_buckets[] = {"--data", "d.h5", "--mode", "async", "--bucket-kb", "4"};
    expect_refused(6, async_buckets, "--mode async/ssp: not with --bucket-kb");
    char *sync_bn[] = {"--data", "d.h5", "--mode", "async", "--sync-bn"};
    expect_refused(5, sync_bn, "--sync-bn: not with --mode async/ssp (the parameter servers cannot add batch-norm");
    char *det_bn[] = {"--data", "d.h5", "--deterministic", "--sync-bn"};
    expect_refused(4, det_bn, "--sync-bn: not with --deterministic");
    /* lossy: refused where the sum must be exact; the servers send fp32 */
    char *det_bf16[] = {"--data", "d.h5", "--deterministic", "--compress", "bf16"};
    expect_refused(5, det_bf16, "--compress bf16: not with --deterministic (lossy");
    char *async_fp16[] = {"--data", "d.h5", "--mode", "async", "--compress", "fp16"};
    expect_refused(6, async_fp16, "--compress fp16: sync mode only");
    char *zero_fp16[] = {"--data", "d.h5", "--shard-optimizer", "--compress", "fp16"};
    expect_refused(5, zero_fp16, "not with --shard-optimizer");
    /* --mode local: what differing replicas rule out, each in one line */
    char *local_bn[] = {"--data", "d.h5", "--mode", "local", "--sync-bn"};
    expect_refused(5, local_bn, "--sync-bn: not with --mode local (the local SGD cannot add batch-norm");
    char *local_zero[] = {"--data", "d.h5", "--mode", "local", "--shard-optimizer"};
    expect_refused(5, local_zero, "--mode local: not with --shard-optimizer");
    char *local_det[] = {"--data", "d.h5", "--mode", "local", "--deterministic"};
    expect_refused(5, local_det, "--mode local: not with --deterministic");
    char *local_buckets[] = {"--data", "d.h5", "--mode", "local", "--bucket-kb", "4"};
    expect_refused(6, local_buckets, "--mode local: not with --bucket-kb");
    char *local_lbfgs[] = {"--data", "d.h5", "--mode", "local", "--opt", "lbfgs"};
    expect_refused(6, local_lbfgs, "--opt lbfgs: not with --mode local");
    char *local_ema[] = {"--data", "d.h5", "--mode", "local", "--ema", "0.9"};
    expect_refused(6, local_ema, "--ema: not with --mode local");
    char *local_outer[] = {"--data", "d.h5", "--mode", "local", "--outer-momentum", "0.9", "--resume", "c.h5"};
    expect_refused(8, local_outer, "--outer-momentum: not with --checkpoint-dir or --resume");
    char *local_skip[] = {"--data", "d.h5", "--mode", "local", "--on-nan", "skip"};
    expect_refused(6, local_skip, "--on-nan skip: not with --mode local (a dropped step would drop its average");
    char *local_every[] = {"--data", "d.h5", "--mode", "local", "--sync-every", "0"};
    expect_refused(6, local_every, "--sync-every: 0 must be in [1, 1000000]");
    /* a mode's or an exchange's own options without it: refused, not ignored */
    char *sync_every[] = {"--data", "d.h5", "--sync-every", "4"};
    expect_refused(4, sync_every, "--sync-every: only with --mode local, not --mode sync");
    char *outer_lr[] = {"--data", "d.h5", "--mode", "async", "--outer-lr", "0.7"};
    expect_refused(6, outer_lr, "--outer-lr: only with --mode local, not --mode async");
    char *staleness[] = {"--data", "d.h5", "--mode", "async", "--max-staleness", "2"};
    expect_refused(6, staleness, "--max-staleness: only with --mode ssp, not --mode async");
    char *servers[] = {"--data", "d.h5", "--servers", "2"};
    expect_refused(4, servers, "--servers: only with --mode async or ssp, not --mode sync");
    char *topk[] = {"--data", "d.h5", "--compress", "bf16", "--topk-ratio", "0.1"};
    expect_refused(6, topk, "--topk-ratio: only with --compress topk, not --compress bf16");
    char *rank[] = {"--data", "d.h5", "--powersgd-rank", "2"};
    expect_refused(4, rank, "--powersgd-rank: only with --compress powersgd, not --compress none");
    char *skip[] = {"--data", "d.h5", "--mode", "ssp", "--on-nan", "skip"};
    expect_refused(6, skip, "--on-nan skip: not with --mode async/ssp");
    char *stream[] = {"--data", "d.h5", "--deterministic", "--stream-mb", "4"};
    expect_refused(5, stream, "--stream-mb: not with --deterministic");
    char *ensemble[] = {"--data", "d.h5", "--mode", "async", "--ensemble", "last:3"};
    expect_refused(6, ensemble, "--ensemble: not with --mode async/ssp");
    char *ensemble_k[] = {"--data", "d.h5", "--ensemble", "best:65"};
    expect_refused(4, ensemble_k, "--ensemble: 'best:65' is not last:K or best:K with K in [2, 64]");
    char *ensemble_kind[] = {"--data", "d.h5", "--ensemble", "first:3"};
    expect_refused(4, ensemble_kind, "--ensemble: 'first:3'");
    { /* async keeps the average on its servers (issue 16) */
        nd_train_config c;
        nd_train_plan plan;
        nd_error err;
        char *async_ema[] = {"--data", "d.h5", "--mode", "async", "--ema", "0.9"};
        assert_int_equal(parse(&c, &err, 6, async_ema), ND_OK);
        assert_int_equal(nd_train_plan_resolve(&c, &plan, &err), ND_OK);
    }
    char *plateau[] = {"--data", "d.h5", "--mode", "async", "--lr-schedule", "plateau"};
    expect_refused(6, plateau, "--lr-schedule plateau: not with --mode async/ssp");
}

static void test_config_file(void **state) {
    (void)state;
    const char *path = NNDIST_TEST_TMP "/cli.cfg";
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# a comment\n\ndata = from_file.h5\nlr = 0.2   # trailing comment\nbatch=32\n"
          "warmup_steps = 7\nshuffle = false\n",
          f);
    fclose(f);
    nd_train_config c;
    nd_error err;
    char *argv[] = {"--batch", "16", "--config", (char *)path};
    assert_int_equal(parse(&c, &err, 4, argv), ND_OK);
    assert_string_equal(c.data, "from_file.h5");
    assert_float_equal(c.lr, 0.2f, 0);
    assert_int_equal(c.batch, 16); /* the command line wins, wherever --config stands */
    assert_int_equal(c.warmup_steps, 7);
    assert_false(c.shuffle);

    f = fopen(path, "w");
    fputs("lr = 0.1\nbogus = 3\n", f);
    fclose(f);
    assert_int_equal(parse(&c, &err, 4, argv), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "cli.cfg:2"));
    assert_non_null(strstr(err.msg, "bogus"));

    char *missing[] = {"--config", NNDIST_TEST_TMP "/no-such.cfg"};
    assert_int_equal(parse(&c, &err, 2, missing), ND_ERR_IO);
    assert_non_null(strstr(err.msg, "no-such.cfg"));
}

static void test_widths(void **state) {
    (void)state;
    int w[4];
    assert_int_equal(nd_parse_widths("512,256", w, 4), 2);
    assert_int_equal(w[0], 512);
    assert_int_equal(w[1], 256);
    assert_int_equal(nd_parse_widths("", w, 4), 0);
    assert_int_equal(nd_parse_widths("1,2,3,4,5", w, 4), -1);
    assert_int_equal(nd_parse_widths("0", w, 4), -1);
    assert_int_equal(nd_parse_widths("12a", w, 4), -1);
}

static void test_resolved_config_round_trips(void **state) {
    (void)state;
    /* What rank 0 prints is a valid config file giving the same values. */
    nd_train_config a, b;
    nd_error err;
    char *argv[] = {"--data", "x.h5",  "--lr",     "0.01",   "--eps", "1e-7",       "--clip-norm",
                    "2.5",    "--opt", "adadelta", "--mode", "ssp",   "--progress", "none"};
    assert_int_equal(parse(&a, &err, 14, argv), ND_OK);
    const char *path = NNDIST_TEST_TMP "/resolved.cfg";
    FILE *f = fopen(path, "w");
    nd_cli_print(nd_train_options, nd_train_num_options, &a, f, "");
    fclose(f);
    char *argv2[] = {"--config", (char *)path};
    assert_int_equal(parse(&b, &err, 2, argv2), ND_OK);
    assert_memory_equal(&a.lr, &b.lr, sizeof a.lr);
    assert_memory_equal(&a.eps, &b.eps, sizeof a.eps);
    assert_memory_equal(&a.clip_norm, &b.clip_norm, sizeof a.clip_norm);
    assert_string_equal(a.data, b.data);
    assert_int_equal(b.opt, ND_OPT_ADADELTA);
    assert_int_equal(b.mode, ND_MODE_SSP);
    assert_int_equal(b.progress, ND_PROGRESS_NONE);
}

/* The row of option name in the Markdown table md ("" if none), copied to row. */
static void markdown_row(const char *md, const char *name, char *row, size_t cap) {
    char key[64];
    snprintf(key, sizeof key, "\n| `--%s", name);
    row[0] = '\0';
    for (const char *p = strstr(md, key); p; p = strstr(p + 1, key)) {
        const char c = p[strlen(key)];
        if (c != ' ' && c != '`') continue; /* --lr, not --lr-gamma */
        const char *end = strchr(p + 1, '\n');
        size_t len = end ? (size_t)(end - p - 1) : strlen(p + 1);
        if (len >= cap) len = cap - 1;
        memcpy(row, p + 1, len);
        row[len] = '\0';
        return;
    }
}

/* `nndist train --help --markdown` (docs/options.md): one well-formed row
 * per option, with the choices and ranges of the table. */
static void test_markdown_table(void **state) {
    (void)state;
    static char md[1 << 16];
    FILE *f = fmemopen(md, sizeof md - 1, "w");
    assert_non_null(f);
    nd_cli_markdown(nd_train_options, nd_train_num_options, f);
    assert_false(ferror(f));
    const long size = ftell(f);
    fclose(f);
    assert_true(size > 0 && size < (long)sizeof md - 1); /* not cut short */
    md[size] = '\0';
    const char *header = "| option | default | meaning |\n|---|---|---|\n";
    assert_int_equal(strncmp(md, header, strlen(header)), 0);
    int rows = 0;
    for (const char *line = md; *line;) {
        const char *end = strchr(line, '\n');
        assert_non_null(end);
        if (!strncmp(line, "| `--", 5)) {
            ++rows;
            int pipes = 0; /* unescaped: the cell borders only */
            for (const char *p = line; p < end; ++p) pipes += *p == '|' && (p == line || p[-1] != '\\');
            if (pipes != 4) fail_msg("%d cell borders in: %.*s", pipes, (int)(end - line), line);
        }
        line = end + 1;
    }
    assert_int_equal(rows, nd_train_num_options);
    char row[1024];
    markdown_row(md, "opt", row, sizeof row);
    assert_non_null(strstr(row, "| `--opt V` | `momentum` |"));
    assert_non_null(strstr(row, "one of: `sgd`, `momentum`, `nesterov`, `adam`, `adamw`"));
    markdown_row(md, "dropout", row, sizeof row);
    assert_non_null(strstr(row, "| `0` |"));
    assert_non_null(strstr(row, "must be in [0, 1) |"));
    markdown_row(md, "batch", row, sizeof row);
    assert_non_null(strstr(row, "must be >= 1 |"));
    markdown_row(md, "shuffle", row, sizeof row);
    assert_non_null(strstr(row, "| `--shuffle` / `--no-shuffle` | `true` |"));
    markdown_row(md, "batch-norm", row, sizeof row);
    assert_non_null(strstr(row, "| `--batch-norm` | `false` |")); /* no --no- for an option off by default */
    markdown_row(md, "weight-decay", row, sizeof row);
    assert_non_null(strstr(row, "0.5\\*wd\\*\\|w\\|^2")); /* not emphasis, not a cell border */
}

/* --opt lbfgs: accepted plain, with its options; each thing that would
 * make the objective random, bend the steps or need what it does not keep
 * refused in one line naming it. */
static void test_lbfgs_refusals(void **state) {
    (void)state;
    nd_train_config c;
    nd_train_plan plan;
    nd_error err = {0};
    char *ok[] = {"--data", "d.h5",           "--opt", "lbfgs",  "--lbfgs-history", "5", "--lbfgs-line-search",
                  "none",   "--weight-decay", "1e-3",  "--arch", "8-4:tanh-3"};
    assert_int_equal(parse(&c, &err, 12, ok), ND_OK);
    assert_int_equal(nd_train_plan_resolve(&c, &plan, &err), ND_OK);
    assert_int_equal(c.opt, ND_OPT_LBFGS);
    assert_int_equal(c.lbfgs_history, 5);
    assert_int_equal(c.lbfgs_line_search, ND_LINE_SEARCH_NONE);
    const struct {
        const char *a, *b, *needle;
    } no[] = {
        {"--mode", "async", "--opt lbfgs: not with --mode async/ssp"},
        {"--bucket-kb", "4", "--opt lbfgs: not with --bucket-kb"},
        {"--shard-optimizer", NULL, "--opt lbfgs: not with --shard-optimizer"},
        {"--deterministic", NULL, "--opt lbfgs: not with --deterministic"},
        {"--stream-mb", "4", "--opt lbfgs: not with --stream-mb"},
        {"--dropout", "0.5", "--opt lbfgs: not with dropout"},
        {"--arch", "8:drop0.1-3", "--opt lbfgs: not with dropout"},
        {"--batch-norm", NULL, "--opt lbfgs: not with batch norm"},
        {"--arch", "8-4:bn:relu-3", "--opt lbfgs: not with batch norm"},
        {"--mixup", "0.2", "--opt lbfgs: not with augmentation"},
        {"--lr-schedule", "cosine", "--opt lbfgs: not with an --lr-schedule"},
        {"--clip-norm", "1", "--opt lbfgs: not with gradient clipping"},
        {"--max-norm", "3", "--opt lbfgs: not with --max-norm"},
        {"--l1", "1e-4", "--opt lbfgs: not with --l1"},
        {"--ema", "0.9", "--opt lbfgs: not with --ema"},
        {"--freeze", "0", "--opt lbfgs: not with --freeze"},
        {"--teacher", "t.h5", "--opt lbfgs: not with --teacher"},
        {"--dropconnect", "0.3", "--opt lbfgs: not with dropout or DropConnect"},
        {"--checkpoint-dir", "ck", "--opt lbfgs: not with --checkpoint-dir"},
        {"--on-nan", "skip", "--opt lbfgs: not with --on-nan skip"},
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; ++i) {
        char *argv[] = {"--data", "d.h5", "--opt", "lbfgs", (char *)no[i].a, (char *)no[i].b};
        expect_refused(no[i].b ? 6 : 5, argv, no[i].needle);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lbfgs_refusals),
        cmocka_unit_test(test_defaults_and_values),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_widths),
        cmocka_unit_test(test_resolved_config_round_trips),
        cmocka_unit_test(test_plan_parts_and_capabilities),
        cmocka_unit_test(test_markdown_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
