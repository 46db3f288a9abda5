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
    char *argv[] = {"--data", "d.h5", "--lr=0.05", "--batch", "256", "--no-shuffle", "--hidden", "128",
                    "--seed", "42", "--opt", "adam", "--warmup_steps", "100"};
    assert_int_equal(parse(&c, &err, 14, argv), ND_OK);
    assert_string_equal(c.data, "d.h5");
    assert_float_equal(c.lr, 0.05f, 0);
    assert_int_equal(c.batch, 256);
    assert_false(c.shuffle);
    assert_string_equal(c.hidden, "128");
    assert_int_equal(c.seed, 42);
    assert_string_equal(c.opt, "adam");
    assert_int_equal(c.warmup_steps, 100);
    assert_int_equal(c.epochs, 10);           /* default */
    assert_float_equal(c.momentum, 0.9f, 0); /* default */
    assert_int_equal(nd_train_config_validate(&c, &err), ND_OK);
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
}

static void expect_invalid(const char *name, const char *value, const char *needle) {
    nd_train_config c;
    nd_error err;
    char opt[64];
    snprintf(opt, sizeof opt, "--%s", name);
    char *argv[] = {"--data", "d.h5", opt, (char *)value};
    assert_int_equal(parse(&c, &err, 4, argv), ND_OK);
    assert_int_equal(nd_train_config_validate(&c, &err), ND_ERR_ARG);
    if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void test_validation(void **state) {
    (void)state;
    expect_invalid("batch", "0", "--batch: 0 must be positive");
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
    nd_error err;
    assert_int_equal(parse(&c, &err, 0, NULL), ND_OK);
    assert_int_equal(nd_train_config_validate(&c, &err), ND_ERR_ARG);
    assert_non_null(strstr(err.msg, "--data"));
}

static void test_config_file(void **state) {
    (void)state;
    const char *path = NNDIST_TEST_TMP "/cli.cfg";
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# a comment\n\ndata = from_file.h5\nlr = 0.2   # trailing comment\nbatch=32\n"
          "warmup_steps = 7\nshuffle = false\n", f);
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
    char *argv[] = {"--data", "x.h5", "--lr", "0.01", "--eps", "1e-7", "--clip-norm", "2.5"};
    assert_int_equal(parse(&a, &err, 8, argv), ND_OK);
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
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_values), cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_validation),          cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_widths),              cmocka_unit_test(test_resolved_config_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
