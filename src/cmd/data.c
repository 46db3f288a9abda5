/* `nndist data import-idx` and `nndist data synth`: option tables and runs. */
#include <string.h>

#include "nndist/commands.h"
#include "nndist/data.h"
#include "nndist/train.h"

typedef struct {
    char config[ND_PATH_MAX];
    char images[ND_PATH_MAX];
    char labels[ND_PATH_MAX];
    char split[16];
    char out[ND_PATH_MAX];
    float val_fraction;
} import_config;

#define FI(type, field) ND_CLI_FIELD(type, import_config, field)
static const nd_cli_option import_options[] = {
    {"config", FI(STR, config), "", "read options from FILE (key = value)"},
    {"images", FI(STR, images), "", "IDX image file, gzipped or not [required]"},
    {"labels", FI(STR, labels), "", "IDX label file, gzipped or not [required]"},
    {"split", FI(STR, split), "train", "split to write: train, val or test"},
    {"out", FI(STR, out), "", "HDF5 file to create or add the split to [required]"},
    {"val-fraction", FI(FLOAT, val_fraction), "0", "with --split train: last fraction of rows becomes /val"},
};

typedef struct {
    char config[ND_PATH_MAX];
    char out[ND_PATH_MAX];
    long rows, test_rows, val_rows;
    int features, classes, targets;
    bool multilabel;
    float separation;
    uint64_t seed;
    char image[64];
} synth_config;

#define FS(type, field) ND_CLI_FIELD(type, synth_config, field)
static const nd_cli_option synth_options[] = {
    {"config", FS(STR, config), "", "read options from FILE (key = value)"},
    {"out", FS(STR, out), "", "HDF5 file to create (must not exist) [required]"},
    {"rows", FS(LONG, rows), "4096", "training rows"},
    {"test-rows", FS(LONG, test_rows), "1024", "test rows (0: no /test)"},
    {"val-rows", FS(LONG, val_rows), "0", "validation rows (0: no /val)"},
    {"features", FS(INT, features), "32", "features per row"},
    {"classes", FS(INT, classes), "4", "classes (one Gaussian blob each)"},
    {"separation", FS(FLOAT, separation), "3", "std of the class centres, in units of the noise std"},
    {"targets", FS(INT, targets), "0", "K > 0: y is N x K float targets (x . u_k / sqrt(D) + noise) instead of labels"},
    {"multilabel", FS(BOOL, multilabel), "false", "with --targets: 0/1 attributes (the sign of x . u_k)"},
    {"seed", FS(U64, seed), "1", "seed"},
    {"image", FS(STR, image), "", "CxHxW: record the rows as images of this shape (C H W = --features)"},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

nd_status nd_cmd_import_idx(int argc, char **argv, nd_error *err) {
    import_config c;
    int help = 0;
    ND_TRY(nd_cli_parse_command(import_options, COUNT(import_options), &c, sizeof c, argc, argv,
                                "usage: nndist data import-idx --images F --labels F --split train|val|test --out FILE "
                                "[--val-fraction f]",
                                stdout, &help, err));
    if (help) return ND_OK;
    if (!c.images[0] || !c.labels[0] || !c.out[0])
        return ND_FAIL(err, ND_ERR_ARG, "data import-idx: --images, --labels and --out are required");
    ND_TRY(nd_import_idx(c.images, c.labels, c.split, c.out, c.val_fraction, err));
    printf("wrote /%s%s to %s\n", c.split, c.val_fraction > 0 ? " and /val" : "", c.out);
    return ND_OK;
}

nd_status nd_cmd_synth(int argc, char **argv, nd_error *err) {
    synth_config c;
    int help = 0;
    ND_TRY(nd_cli_parse_command(synth_options, COUNT(synth_options), &c, sizeof c, argc, argv,
                                "usage: nndist data synth --out FILE [options]", stdout, &help, err));
    if (help) return ND_OK;
    if (!c.out[0]) return ND_FAIL(err, ND_ERR_ARG, "data synth: --out is required");
    nd_synth_config s = {.rows = c.rows,
                         .test_rows = c.test_rows,
                         .val_rows = c.val_rows,
                         .features = c.features,
                         .classes = c.classes,
                         .separation = c.separation,
                         .seed = c.seed,
                         .targets = c.targets,
                         .multilabel = c.multilabel};
    char tail;
    if (c.image[0] &&
        (sscanf(c.image, "%dx%dx%d%c", &s.image[0], &s.image[1], &s.image[2], &tail) != 3 || s.image[0] <= 0 ||
         s.image[1] <= 0 || s.image[2] <= 0))
        return ND_FAIL(err, ND_ERR_ARG, "data synth: --image '%s' is not CxHxW with positive sizes, like 1x28x28",
                       c.image);
    ND_TRY(nd_synth_write(&s, c.out, err));
    printf("wrote %ld train, %ld val, %ld test rows of %d features, %d classes to %s\n", c.rows, c.val_rows,
           c.test_rows, c.features, c.classes, c.out);
    return ND_OK;
}
