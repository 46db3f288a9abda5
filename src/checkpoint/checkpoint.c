/* Checkpoint files: layout in checkpoint.h. */
#include "nndist/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5io.h"
#include "nndist/layers.h"

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const void *data, size_t bytes) {
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

void nd_spec_hidden_text(const nd_model_spec *spec, char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (int l = 0; l < spec->num_hidden && used < cap; ++l) /* pooling keeps its channels: 0 */
        used += (size_t)snprintf(out + used, cap - used, "%s%d", l ? "," : "", spec->hidden[l].width);
}

void nd_checkpoint_name(char *out, size_t cap, const char *dir, long step) {
    snprintf(out, cap, "%s/ckpt-step%08ld.h5", dir, step);
}

/* Every array of the arena by the model's tensor names (dense<l>/{W,b},
 * conv<l>/{W,b}, bn<l>/..., proj<l>/..., projbn<l>/...), in the table's
 * order, which is also the checksum's. */
static nd_status move_layer_arrays(hid_t f, const char *path, int writing, const nd_model *model, const char *group,
                                   float *base, uint64_t *h, nd_error *err) {
    for (int t = 0; t < model->num_tensors; ++t) {
        const nd_tensor *T = &model->tensor[t];
        hsize_t dims[4];
        for (int d = 0; d < T->ndims; ++d) dims[d] = (hsize_t)T->dims[d];
        char name[112];
        snprintf(name, sizeof name, "%s/%s", group, T->name);
        float *data = base + T->span.offset;
        if (writing) ND_TRY(h5io_write_array(f, name, T->ndims, dims, data, path, err));
        else ND_TRY(h5io_read_array(f, name, T->ndims, dims, data, path, err));
        *h = fnv1a(*h, data, sizeof(float) * T->span.length);
    }
    return ND_OK;
}

/* Writes (or reads) every array. Three checksums: the model (weights and
 * normalization: all that inference needs), the optimizer state and the
 * weight average, so each reader verifies exactly what it loads. */
static nd_status move_arrays(hid_t f, const char *path, int writing, const nd_model *model, const nd_optimizer *opt,
                             float *mean, float *inv_std, float *ema, uint64_t hash[3], nd_error *err) {
    hash[0] = hash[1] = hash[2] = FNV_OFFSET;
    if (ema) ND_TRY(move_layer_arrays(f, path, writing, model, "/ema", ema, &hash[2], err));
    ND_TRY(move_layer_arrays(f, path, writing, model, "/model", model->param, &hash[0], err));
    const hsize_t d[1] = {(hsize_t)model->spec.input_dim};
    float *norm[2] = {mean, inv_std};
    const char *names[2] = {"/normalization/mean", "/normalization/inv_std"};
    for (int i = 0; i < 2; ++i) {
        if (writing) ND_TRY(h5io_write_array(f, names[i], 1, d, norm[i], path, err));
        else ND_TRY(h5io_read_array(f, names[i], 1, d, norm[i], path, err));
        hash[0] = fnv1a(hash[0], norm[i], sizeof(float) * d[0]);
    }
    if (opt && opt->m) ND_TRY(move_layer_arrays(f, path, writing, model, "/optimizer/m", opt->m, &hash[1], err));
    if (opt && opt->v) ND_TRY(move_layer_arrays(f, path, writing, model, "/optimizer/v", opt->v, &hash[1], err));
    return ND_OK;
}

/* The group that describes layer l: its weights' group (dense<l>, conv<l>)
 * or, for pooling, a group of its own holding only attributes. */
static void layer_group(const nd_layer *L, int l, char *out, size_t cap) {
    static const char *const prefix[] = {[ND_LAYER_DENSE] = "dense",
                                         [ND_LAYER_CONV] = "conv",
                                         [ND_LAYER_MAXPOOL] = "maxpool",
                                         [ND_LAYER_AVGPOOL] = "avgpool",
                                         [ND_LAYER_GLOBAL_POOL] = "gap"};
    snprintf(out, cap, "%s%d", prefix[L->kind], l);
}

static const char *layer_type(nd_layer_kind kind) {
    static const char *const names[] = {[ND_LAYER_DENSE] = "dense",
                                        [ND_LAYER_CONV] = "conv",
                                        [ND_LAYER_MAXPOOL] = "maxpool",
                                        [ND_LAYER_AVGPOOL] = "avgpool",
                                        [ND_LAYER_GLOBAL_POOL] = "global_avgpool"};
    return names[kind];
}

/* A shape attribute: [C, H, W] for an image, [D] for flat features. */
static nd_status write_shape(hid_t g, const char *attr, nd_image_shape s, int flat, const char *path, nd_error *err) {
    const int image[3] = {s.c, s.h, s.w};
    return s.c > 0 ? h5io_write_attr_ints(g, attr, image, 3, path, err)
                   : h5io_write_attr_ints(g, attr, &flat, 1, path, err);
}

/* An activation as a name and its parameter (leaky_relu's slope, elu's
 * alpha; 0 for the others). */
static nd_status write_act(hid_t g, const char *attr, nd_activation act, const char *path, nd_error *err) {
    char alpha[64];
    snprintf(alpha, sizeof alpha, "%s_alpha", attr);
    ND_TRY(h5io_write_attr_string(g, attr, nd_activation_name(act.kind), path, err));
    const int has_alpha = act.kind == ND_ACT_LEAKY_RELU || act.kind == ND_ACT_ELU;
    return h5io_write_attr_float(g, alpha, has_alpha ? act.alpha : 0.0f, path, err);
}

/* The attributes of one group, opened (or created) at /model/<name>. */
typedef nd_status (*group_attrs_fn)(hid_t g, const nd_model *m, int l, const char *path, nd_error *err);

static nd_status with_group(hid_t f, const char *name, group_attrs_fn fn, const nd_model *m, int l, const char *path,
                            nd_error *err) {
    char full[96];
    snprintf(full, sizeof full, "/model/%s", name);
    hid_t g = h5io_group(f, full, path, err);
    if (g < 0) return err->code;
    const nd_status st = fn(g, m, l, path, err);
    H5Gclose(g);
    return st;
}

static nd_status bn_attrs(hid_t g, const nd_bn_site *bn, int l, float eps, const char *path, nd_error *err) {
    ND_TRY(h5io_write_attr_string(g, "type", "batch_norm", path, err));
    ND_TRY(h5io_write_attr_int(g, "layer", l, path, err));
    ND_TRY(h5io_write_attr_int(g, "channels", bn->channels, path, err));
    ND_TRY(h5io_write_attr_int(g, "spatial", bn->spatial, path, err)); /* values per channel and sample */
    return h5io_write_attr_float(g, "eps", eps, path, err);
}

static float bn_eps(const nd_model *m) { return m->spec.bn_eps > 0.0f ? m->spec.bn_eps : 1e-5f; }

static nd_status layer_bn_attrs(hid_t g, const nd_model *m, int l, const char *path, nd_error *err) {
    return bn_attrs(g, &m->layer[l].bn, l, bn_eps(m), path, err);
}

static nd_status proj_bn_attrs(hid_t g, const nd_model *m, int l, const char *path, nd_error *err) {
    return bn_attrs(g, &m->layer[l].proj_bn, l, bn_eps(m), path, err);
}

/* The skip path of the block ending at layer l: a 1x1 convolution. */
static nd_status proj_attrs(hid_t g, const nd_model *m, int l, const char *path, nd_error *err) {
    const nd_layer *L = &m->layer[l];
    const nd_conv_geom *pg = &L->proj_geom;
    char bn[32] = "";
    if (L->proj_bn.channels) snprintf(bn, sizeof bn, "projbn%d", l);
    ND_TRY(h5io_write_attr_string(g, "type", "conv", path, err));
    ND_TRY(h5io_write_attr_int(g, "layer", l, path, err));
    ND_TRY(write_shape(g, "in_shape", (nd_image_shape){pg->c, pg->h, pg->w}, 0, path, err));
    ND_TRY(write_shape(g, "out_shape", (nd_image_shape){pg->out_c, pg->out_h, pg->out_w}, 0, path, err));
    ND_TRY(h5io_write_attr_int(g, "kernel", 1, path, err));
    ND_TRY(h5io_write_attr_int(g, "stride", pg->stride, path, err));
    ND_TRY(h5io_write_attr_int(g, "padding", 0, path, err));
    return h5io_write_attr_string(g, "batch_norm", bn, path, err);
}

/* Layer l in order: linear part (type), batch_norm, activation (maxout:
 * over maxout_pieces adjacent outputs), the residual add, dropout
 * (training only). Every attribute is written for every type, so a reader
 * needs no defaults. */
static nd_status layer_attrs(hid_t g, const nd_model *m, int l, const char *path, nd_error *err) {
    const nd_layer *L = &m->layer[l];
    const int hidden = l < m->spec.num_hidden,
              windowed = L->kind == ND_LAYER_CONV || L->kind == ND_LAYER_MAXPOOL ||
        L->kind == ND_LAYER_AVGPOOL; /* global pooling: the whole plane, no window */
    const int conv_like = L->kind != ND_LAYER_DENSE;
    char bn[32] = "", proj[32] = "";
    if (L->batch_norm) snprintf(bn, sizeof bn, "bn%d", l);
    if (L->proj) snprintf(proj, sizeof proj, "proj%d", l);
    ND_TRY(h5io_write_attr_string(g, "type", layer_type(L->kind), path, err));
    ND_TRY(h5io_write_attr_int(g, "layer", l, path, err));
    ND_TRY(write_shape(g, "in_shape", L->in_shape, L->in_dim, path, err));
    ND_TRY(write_shape(g, "out_shape", conv_like ? L->out_shape : (nd_image_shape){0, 0, 0}, L->width, path, err));
    ND_TRY(h5io_write_attr_int(g, "kernel", windowed ? L->geom.kernel : 0, path, err));
    ND_TRY(h5io_write_attr_int(g, "stride", windowed ? L->geom.stride : 0, path, err));
    ND_TRY(h5io_write_attr_int(g, "padding", windowed ? L->geom.pad : 0, path, err));
    ND_TRY(h5io_write_attr_string(g, "batch_norm", bn, path, err));
    ND_TRY(write_act(g, "activation", L->act, path, err));
    ND_TRY(h5io_write_attr_int(g, "maxout_pieces", L->pieces, path, err));
    ND_TRY(h5io_write_attr_int(g, "residual_begin", hidden && m->spec.hidden[l].res_begin, path, err));
    ND_TRY(h5io_write_attr_int(g, "residual_from", L->res_from, path, err));
    ND_TRY(h5io_write_attr_string(g, "residual_projection", proj, path, err));
    ND_TRY(write_act(g, "residual_activation", L->res_from >= 0 ? L->res_act : (nd_activation){ND_ACT_IDENTITY, 0.0f},
                     path, err));
    ND_TRY(h5io_write_attr_float(g, "dropout", L->drop, path, err));
    return h5io_write_attr_int(g, "dropout_channels", L->drop_channels, path, err);
}

/* Every layer's description (docs/checkpoints.md); the root attribute
 * `layers` lists their groups in forward order. */
static nd_status write_layer_attrs(hid_t f, const char *path, const nd_model *m, nd_error *err) {
    char names[ND_MAX_LAYERS][32];
    const char *list[ND_MAX_LAYERS];
    for (int l = 0; l < m->num_layers; ++l) {
        const nd_layer *L = &m->layer[l];
        char name[32];
        layer_group(L, l, names[l], sizeof names[l]);
        list[l] = names[l];
        ND_TRY(with_group(f, names[l], layer_attrs, m, l, path, err));
        snprintf(name, sizeof name, "bn%d", l);
        if (L->batch_norm) ND_TRY(with_group(f, name, layer_bn_attrs, m, l, path, err));
        snprintf(name, sizeof name, "proj%d", l);
        if (L->proj) ND_TRY(with_group(f, name, proj_attrs, m, l, path, err));
        snprintf(name, sizeof name, "projbn%d", l);
        if (L->proj_bn.channels) ND_TRY(with_group(f, name, proj_bn_attrs, m, l, path, err));
    }
    return h5io_write_attr_strings(f, "layers", list, m->num_layers, path, err);
}

static nd_status write_attrs(hid_t f, const char *path, const nd_model *model, const nd_optimizer *opt,
                             const nd_ckpt_meta *meta, const uint64_t hash[3], int has_ema, nd_error *err) {
    char hidden[256], arch[512], hex[3][32];
    nd_spec_hidden_text(&model->spec, hidden, sizeof hidden);
    nd_arch_format(&model->spec, arch, sizeof arch);
    for (int i = 0; i < 3; ++i) snprintf(hex[i], sizeof hex[i], "%016" PRIx64, hash[i]);
    if (has_ema) ND_TRY(h5io_write_attr_string(f, "checksum_ema", hex[2], path, err));
    ND_TRY(h5io_write_attr_int(f, "format_version", ND_CKPT_FORMAT, path, err));
    ND_TRY(write_layer_attrs(f, path, model, err));
    ND_TRY(write_shape(f, "input_shape", model->spec.image, model->spec.input_dim, path, err));
    ND_TRY(h5io_write_attr_string(f, "input_dtype", meta->input_uint8 ? "uint8" : "float32", path, err));
    ND_TRY(h5io_write_attr_float(f, "input_scale", meta->input_scale > 0.0f ? meta->input_scale : 1.0f, path, err));
    ND_TRY(h5io_write_attr_float(f, "input_dropout", model->spec.input_drop, path, err));
    ND_TRY(h5io_write_attr_string(f, "normalization", meta->normalization, path, err));
    ND_TRY(h5io_write_attr_string(f, "loss", meta->loss, path, err));
    ND_TRY(h5io_write_attr_int(f, "input_dim", model->spec.input_dim, path, err));
    ND_TRY(h5io_write_attr_string(f, "hidden", hidden, path, err));
    ND_TRY(h5io_write_attr_string(f, "arch", arch, path, err));
    ND_TRY(h5io_write_attr_float(f, "bn_eps", model->spec.bn_eps, path, err));
    ND_TRY(h5io_write_attr_int(f, "num_classes", model->spec.num_classes, path, err));
    const nd_activation act = model->spec.num_hidden ? model->spec.hidden[0].act : (nd_activation){ND_ACT_RELU, 0};
    ND_TRY(h5io_write_attr_string(f, "activation", nd_activation_name(act.kind), path, err));
    ND_TRY(h5io_write_attr_float(f, "activation_alpha", act.alpha, path, err));
    ND_TRY(h5io_write_attr_string(f, "optimizer", opt ? nd_opt_name(opt->cfg.kind) : "none", path, err));
    ND_TRY(h5io_write_attr_double(f, "optimizer_step", opt ? (double)opt->step : 0.0, path, err));
    ND_TRY(h5io_write_attr_double(f, "step", (double)meta->step, path, err));
    ND_TRY(h5io_write_attr_int(f, "epoch", meta->epoch, path, err));
    ND_TRY(h5io_write_attr_double(f, "epoch_step", (double)meta->epoch_step, path, err));
    ND_TRY(h5io_write_attr_double(f, "epoch_loss_sum", meta->epoch_loss_sum, path, err));
    ND_TRY(h5io_write_attr_double(f, "epoch_correct", meta->epoch_correct, path, err));
    ND_TRY(h5io_write_attr_int(f, "world_size", meta->world_size, path, err));
    ND_TRY(h5io_write_attr_int(f, "global_batch", meta->global_batch, path, err));
    ND_TRY(h5io_write_attr_double(f, "plateau_scale", meta->plateau_scale, path, err));
    ND_TRY(h5io_write_attr_double(f, "plateau_best", meta->plateau_best, path, err));
    ND_TRY(h5io_write_attr_int(f, "plateau_bad", meta->plateau_bad, path, err));
    ND_TRY(h5io_write_attr_string(f, "metric_name", meta->metric_name, path, err));
    ND_TRY(h5io_write_attr_double(f, "metric_value", meta->metric_value, path, err));
    ND_TRY(h5io_write_attr_string(f, "config", meta->config, path, err));
    ND_TRY(h5io_write_attr_string(f, "checksum_optimizer", hex[1], path, err));
    return h5io_write_attr_string(f, "checksum_model", hex[0], path, err);
}

/* fsync of a file or directory by name. */
static int sync_path(const char *p, int flags) {
    int fd = open(p, flags);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

nd_status nd_checkpoint_write(const char *path, const nd_model *model, const nd_optimizer *opt, const float *mean,
                              const float *inv_std, const float *ema, const nd_ckpt_meta *meta, nd_error *err) {
    if (opt && opt->n != 0 && opt->n != model->num_params)
        return ND_FAIL(err, ND_ERR_STATE, "%s: optimizer state covers %zu of %zu parameters", path, opt->n,
                       model->num_params);
    char dir[4096], tmp[4400];
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    h5io_quiet();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return ND_FAIL(err, ND_ERR_IO, "checkpoint not written, the earlier ones are untouched: cannot create %s (%s)",
                       tmp, strerror(errno));
    uint64_t hash[3];
    nd_status st = move_arrays(f, tmp, 1, model, opt, (float *)mean, (float *)inv_std, (float *)ema, hash, err);
    if (st == ND_OK) st = write_attrs(f, tmp, model, opt, meta, hash, ema != NULL, err);
    if (H5Fclose(f) < 0 && st == ND_OK) {
        char cause[160];
        h5io_cause(cause, sizeof cause);
        st = ND_FAIL(err, ND_ERR_IO, "checkpoint %s: cannot finish writing it (%s)", tmp, cause);
    }
    if (st == ND_OK && sync_path(tmp, O_RDONLY) != 0)
        st = ND_FAIL(err, ND_ERR_IO, "checkpoint %s: fsync failed (%s)", tmp, strerror(errno));
    if (st == ND_OK && rename(tmp, path) != 0)
        st = ND_FAIL(err, ND_ERR_IO, "checkpoint %s: rename failed (%s)", path, strerror(errno));
    if (st != ND_OK) {
        unlink(tmp); /* the previous checkpoint, if any, is untouched */
        return nd_error_prefix(err, "checkpoint not written, the earlier ones are untouched: ");
    }
    sync_path(dirname(dir), O_RDONLY | O_DIRECTORY); /* make the rename itself durable */
    return ND_OK;
}

static nd_status read_number(hid_t f, const char *path, const char *attr, double *v, nd_error *err) {
    int found = 0;
    ND_TRY(h5io_read_attr_double(f, attr, path, "/", v, &found, err));
    if (!found) return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: attribute %s is missing", path, attr);
    return ND_OK;
}

/* A whole number in [lo, hi]: a hostile file's 1e300 never reaches a cast. */
static nd_status read_count(hid_t f, const char *path, const char *attr, double lo, double hi, double *v,
                            nd_error *err) {
    ND_TRY(read_number(f, path, attr, v, err));
    if (!(*v >= lo && *v <= hi) || *v != floor(*v))
        return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: attribute %s = %g is not a whole number in [%g, %g]", path,
                       attr, *v, lo, hi);
    return ND_OK;
}

static nd_status read_text(hid_t f, const char *path, const char *attr, char *out, size_t cap, nd_error *err) {
    int found = 0;
    ND_TRY(h5io_read_attr_string(f, attr, path, out, cap, &found, err));
    if (!found) return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: attribute %s is missing", path, attr);
    return ND_OK;
}

static nd_status probe_open(hid_t f, const char *path, nd_ckpt_info *info, nd_error *err) {
    memset(info, 0, sizeof *info);
    double v;
    int found = 0;
    ND_TRY(h5io_read_attr_double(f, "format_version", path, "/", &v, &found, err));
    if (!found || !h5io_exists(f, "/model"))
        return ND_FAIL(err, ND_ERR_FORMAT, "%s: not an nndist checkpoint (no format_version or /model)", path);
    if (!(v >= 0 && v <= 1e6)) v = -1; /* named as it is below, never cast out of range */
    info->format = (int)v;
    /* Format 2 differs only in what a reader outside nndist needs (layer
     * attributes, the input's scale) and in its string type, which the
     * string reader takes either way. */
    if (info->format < ND_CKPT_FORMAT_OLDEST || info->format > ND_CKPT_FORMAT)
        return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: format version %d, this nndist reads version %d or %d", path,
                       info->format, ND_CKPT_FORMAT_OLDEST, ND_CKPT_FORMAT);
    nd_model_spec *s = &info->spec;
    char arch[512], why[200];
    ND_TRY(read_text(f, path, "arch", arch, sizeof arch, err));
    if (nd_arch_parse(arch, (nd_activation){ND_ACT_RELU, 0.0f}, s, why, sizeof why) != 0)
        return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: architecture '%s': %s", path, arch, why);
    /* Checkpoints store their arrays whole and uncompressed, so the weights
     * the architecture claims must fit in the file: a damaged or hostile
     * header cannot make a reader allocate gigabytes for a small file. */
    double claimed = 0.0;
    int in = s->input_dim;
    for (int l = 0; l <= s->num_hidden; ++l) { /* a lower bound: dense and conv weights */
        const int last = l == s->num_hidden;
        const nd_hidden_spec *h = last ? NULL : &s->hidden[l];
        if (last || h->kind == ND_LAYER_DENSE) {
            const double out = last ? s->num_classes : (double)h->width * h->pieces;
            claimed += (in + 1.0) * out + (!last && h->batch_norm ? 4.0 * out : 0.0);
            in = last ? 0 : h->width;
        } else if (h->kind == ND_LAYER_CONV) {
            claimed += (double)h->width * h->kernel * h->kernel + h->width;
            in = h->width; /* at least one pixel a channel */
        }
    }
    struct stat fs;
    if (stat(path, &fs) == 0 && claimed * sizeof(float) > (double)fs.st_size)
        return ND_FAIL(err, ND_ERR_FORMAT,
                       "checkpoint %s: its architecture '%s' needs %.0f bytes of weights, but the "
                       "file has %lld bytes (damaged?)",
                       path, arch, claimed * sizeof(float), (long long)fs.st_size);
    ND_TRY(read_number(f, path, "bn_eps", &v, err));
    s->bn_eps = (float)v;
    if (!(s->bn_eps > 0.0f)) return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: bn_eps %g is not positive", path, v);
    ND_TRY(read_text(f, path, "optimizer", info->optimizer, sizeof info->optimizer, err));
    const double big = 1e15; /* steps, epochs and sizes beyond this are a damaged file, not a run */
    ND_TRY(read_count(f, path, "optimizer_step", 0, big, &v, err));
    info->optimizer_step = (long)v;
    nd_ckpt_meta *m = &info->meta;
    ND_TRY(read_count(f, path, "step", 0, big, &v, err));
    m->step = (long)v;
    ND_TRY(read_count(f, path, "epoch", 0, INT32_MAX, &v, err));
    m->epoch = (int)v;
    ND_TRY(read_count(f, path, "epoch_step", 0, big, &v, err));
    m->epoch_step = (long)v;
    ND_TRY(read_number(f, path, "epoch_loss_sum", &m->epoch_loss_sum, err));
    ND_TRY(read_number(f, path, "epoch_correct", &m->epoch_correct, err));
    ND_TRY(read_count(f, path, "world_size", 1, INT32_MAX, &v, err));
    m->world_size = (int)v;
    ND_TRY(read_count(f, path, "global_batch", 1, INT32_MAX, &v, err));
    m->global_batch = (int)v;
    ND_TRY(read_number(f, path, "plateau_scale", &m->plateau_scale, err));
    ND_TRY(read_number(f, path, "plateau_best", &m->plateau_best, err));
    ND_TRY(read_count(f, path, "plateau_bad", 0, INT32_MAX, &v, err));
    m->plateau_bad = (int)v;
    ND_TRY(read_text(f, path, "metric_name", m->metric_name, sizeof m->metric_name, err));
    ND_TRY(read_number(f, path, "metric_value", &m->metric_value, err));
    if (info->format >= 3) { /* how the inputs were prepared */
        ND_TRY(read_number(f, path, "input_scale", &v, err));
        m->input_scale = (float)v;
        if (!(m->input_scale > 0.0f && isfinite(m->input_scale)))
            return ND_FAIL(err, ND_ERR_FORMAT, "checkpoint %s: input_scale %g is not a positive number", path, v);
        char dtype[16];
        ND_TRY(read_text(f, path, "input_dtype", dtype, sizeof dtype, err));
        m->input_uint8 = !strcmp(dtype, "uint8");
        ND_TRY(read_text(f, path, "normalization", m->normalization, sizeof m->normalization, err));
        ND_TRY(read_text(f, path, "loss", m->loss, sizeof m->loss, err));
    }
    ND_TRY(read_text(f, path, "checksum_model", info->checksum_model, sizeof info->checksum_model, err));
    ND_TRY(read_text(f, path, "checksum_optimizer", info->checksum_optimizer, sizeof info->checksum_optimizer, err));
    return read_text(f, path, "config", m->config, sizeof m->config, err);
}

nd_status nd_checkpoint_probe(const char *path, nd_ckpt_info *info, nd_error *err) {
    hid_t f = h5io_open(path, 0, err);
    if (f < 0) return err->code;
    nd_status st = probe_open(f, path, info, err);
    h5io_close(f);
    return st;
}

int nd_checkpoint_is(const char *path) {
    nd_error ignored = {0};
    hid_t f = h5io_open(path, 0, &ignored);
    if (f < 0) return 0;
    const int yes = h5io_exists(f, "/model");
    h5io_close(f);
    return yes;
}

/* One line naming the first difference between two architectures. */
static nd_status compare_specs(const char *path, const nd_model_spec *ck, const nd_model_spec *run, nd_error *err) {
    char a[512], b[512];
    nd_arch_format(ck, a, sizeof a);
    nd_arch_format(run, b, sizeof b);
    if (ck->input_dim != run->input_dim)
        return ND_FAIL(err, ND_ERR_ARG, "checkpoint %s: %d input features, this run's data has %d", path, ck->input_dim,
                       run->input_dim);
    if (ck->num_classes != run->num_classes)
        return ND_FAIL(err, ND_ERR_ARG, "checkpoint %s: %d outputs, this run's data has %d", path, ck->num_classes,
                       run->num_classes);
    if (strcmp(a, b)) return ND_FAIL(err, ND_ERR_ARG, "checkpoint %s: architecture %s, this run has %s", path, a, b);
    return ND_OK;
}

nd_status nd_checkpoint_read(const char *path, nd_model *model, nd_optimizer *opt, float *mean, float *inv_std,
                             float *ema, nd_ckpt_info *info, nd_error *err) {
    hid_t f = h5io_open(path, 0, err);
    if (f < 0) return err->code;
    nd_status st = probe_open(f, path, info, err);
    if (st == ND_OK) st = compare_specs(path, &info->spec, &model->spec, err);
    if (st == ND_OK && opt && strcmp(info->optimizer, nd_opt_name(opt->cfg.kind)))
        st = ND_FAIL(err, ND_ERR_ARG, "checkpoint %s: optimizer %s, this run has --opt %s", path, info->optimizer,
                     nd_opt_name(opt->cfg.kind));
    /* rmsprop keeps a second buffer only with momentum: a file without it
     * cannot resume a run with it, nor the reverse. */
    if (st == ND_OK && opt && (opt->v != NULL) != h5io_exists(f, "/optimizer/v"))
        st = ND_FAIL(err, ND_ERR_ARG, "checkpoint %s: optimizer state %s /optimizer/v, this run's --opt %s %s it%s",
                     path, opt->v ? "without" : "with", nd_opt_name(opt->cfg.kind), opt->v ? "needs" : "has no use for",
                     opt->cfg.kind == ND_OPT_RMSPROP ? " (--rmsprop-momentum differs)" : "");
    /* Weights averaged only if the file has them; otherwise the caller starts
     * the average from the weights (info->has_ema tells). */
    if (st == ND_OK) info->has_ema = h5io_exists(f, "/ema");
    uint64_t hash[3];
    if (st == ND_OK) st = move_arrays(f, path, 0, model, opt, mean, inv_std, info->has_ema ? ema : NULL, hash, err);
    char stored[3][32] = {"", "", ""}, computed[3][32];
    if (st == ND_OK) st = read_text(f, path, "checksum_model", stored[0], sizeof stored[0], err);
    if (st == ND_OK) st = read_text(f, path, "checksum_optimizer", stored[1], sizeof stored[1], err);
    if (st == ND_OK && ema && info->has_ema) st = read_text(f, path, "checksum_ema", stored[2], sizeof stored[2], err);
    h5io_close(f);
    if (st != ND_OK) return st;
    const char *what[3] = {"model", "optimizer state", "weight average"};
    const int check[3] = {1, opt != NULL, ema && info->has_ema};
    for (int i = 0; i < 3; ++i) {
        if (!check[i]) continue;
        snprintf(computed[i], sizeof computed[i], "%016" PRIx64, hash[i]);
        if (strcmp(stored[i], computed[i]))
            return ND_FAIL(err, ND_ERR_FORMAT,
                           "checkpoint %s: %s checksum mismatch (stored %s, read %s): the file is damaged", path,
                           what[i], stored[i], computed[i]);
    }
    if (ema && !info->has_ema) memcpy(ema, model->param, sizeof(float) * model->num_params);
    if (opt) opt->step = info->optimizer_step;
    return ND_OK;
}

/* Step number of a "ckpt-step<N>.h5" name, or -1. */
static long step_of(const char *name) {
    long step;
    char tail[8];
    if (sscanf(name, "ckpt-step%ld%7s", &step, tail) != 2 || strcmp(tail, ".h5")) return -1;
    return step;
}

/* Sorted (descending) steps of the checkpoints in dir; returns the count. */
static int list_steps(const char *dir, long *steps, int cap) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long s = step_of(e->d_name);
        if (s < 0) continue;
        if (n < cap) steps[n++] = s;
        else {
            /* Keep the largest cap steps. */
            int lo = 0;
            for (int i = 1; i < n; ++i)
                if (steps[i] < steps[lo]) lo = i;
            if (s > steps[lo]) steps[lo] = s;
        }
    }
    closedir(d);
    for (int i = 1; i < n; ++i) /* insertion sort, descending */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; --j) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return n;
}

nd_status nd_checkpoint_latest(const char *dir, char *path, size_t cap, int *found, nd_error *err) {
    long steps[64];
    *found = 0;
    int n = list_steps(dir, steps, 64);
    if (n < 0) return ND_FAIL(err, ND_ERR_IO, "--resume auto: cannot read directory %s (%s)", dir, strerror(errno));
    for (int i = 0; i < n; ++i) {
        nd_ckpt_info info;
        nd_error ignored = {0};
        nd_checkpoint_name(path, cap, dir, steps[i]);
        if (nd_checkpoint_probe(path, &info, &ignored) == ND_OK) {
            *found = 1;
            return ND_OK;
        }
    }
    return ND_OK;
}

/* Temporaries left by a writer that died before its rename (not ours). */
static void remove_stale_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char mine[32];
    snprintf(mine, sizeof mine, ".tmp.%ld", (long)getpid());
    for (struct dirent *e; (e = readdir(d));) {
        const char *t = strstr(e->d_name, ".h5.tmp."), *link = "latest.tmp.";
        const int stale_link = !strncmp(e->d_name, link, strlen(link)) && strcmp(e->d_name + 6, mine);
        if (!stale_link && (strncmp(e->d_name, "ckpt-step", 9) || !t || !strcmp(t + 3, mine))) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

nd_status nd_checkpoint_prune(const char *dir, int keep, nd_error *err) {
    long steps[256];
    int n = list_steps(dir, steps, 256);
    if (n < 0) return ND_FAIL(err, ND_ERR_IO, "checkpoint directory %s: %s", dir, strerror(errno));
    remove_stale_temporaries(dir);
    for (int i = keep; i < n; ++i) {
        char p[4200];
        nd_checkpoint_name(p, sizeof p, dir, steps[i]);
        unlink(p);
    }
    return ND_OK;
}

nd_status nd_checkpoint_link_latest(const char *dir, nd_error *err) {
    long newest;
    const int n = list_steps(dir, &newest, 1);
    if (n < 0) return ND_FAIL(err, ND_ERR_IO, "checkpoint directory %s: %s", dir, strerror(errno));
    char link[4200], tmp[4300], target[64], now[64];
    snprintf(link, sizeof link, "%s/latest", dir);
    struct stat sb;
    const int exists = lstat(link, &sb) == 0;
    if (exists && !S_ISLNK(sb.st_mode)) return ND_OK; /* not ours to replace */
    if (n == 0) {
        if (exists) unlink(link);
        return ND_OK;
    }
    snprintf(target, sizeof target, "ckpt-step%08ld.h5", newest); /* relative: the directory may move */
    const ssize_t len = exists ? readlink(link, now, sizeof now - 1) : -1;
    if (len > 0 && (now[len] = '\0', !strcmp(now, target))) return ND_OK;
    snprintf(tmp, sizeof tmp, "%s/latest.tmp.%ld", dir, (long)getpid());
    unlink(tmp); /* left by a failed attempt of this process */
    if (symlink(target, tmp) != 0) {
        if (errno == EPERM || errno == EOPNOTSUPP) return ND_OK; /* a file system without symbolic links */
        return ND_FAIL(err, ND_ERR_IO, "checkpoint directory %s: cannot create the link latest (%s)", dir,
                       strerror(errno));
    }
    if (rename(tmp, link) != 0) {
        const int e = errno;
        unlink(tmp);
        return ND_FAIL(err, ND_ERR_IO, "checkpoint directory %s: cannot replace the link latest (%s)", dir,
                       strerror(e));
    }
    return ND_OK;
}
