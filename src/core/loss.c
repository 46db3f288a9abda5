#include "nndist/loss.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

const char *const nd_loss_names[] = {[ND_LOSS_SOFTMAX_CE] = "softmax_ce",
                                     [ND_LOSS_HINGE] = "hinge",
                                     [ND_LOSS_SQUARED_HINGE] = "squared_hinge",
                                     [ND_LOSS_SIGMOID_BCE] = "sigmoid_bce",
                                     [ND_LOSS_L2] = "l2",
                                     [ND_LOSS_L1] = "l1",
                                     [ND_LOSS_BINARY_HINGE] = "binary_hinge",
                                     NULL};

int nd_loss_parse(const char *name, nd_loss_kind *kind) {
    for (int k = 0; k < (int)(sizeof nd_loss_names / sizeof nd_loss_names[0]) - 1; ++k)
        if (!strcmp(name, nd_loss_names[k])) {
            *kind = (nd_loss_kind)k;
            return 0;
        }
    return -1;
}

const char *nd_loss_name(nd_loss_kind kind) {
    return (unsigned)kind + 1 < sizeof nd_loss_names / sizeof nd_loss_names[0] ? nd_loss_names[kind] : "?";
}

int nd_loss_takes_targets(nd_loss_kind kind) { return kind >= ND_LOSS_SIGMOID_BCE; }

int nd_loss_multilabel(nd_loss_kind kind) { return kind == ND_LOSS_SIGMOID_BCE || kind == ND_LOSS_BINARY_HINGE; }

double nd_loss_metric(nd_loss_kind kind, double sum, double rows, int k) {
    if (!(rows > 0)) return NAN;
    switch (kind) {
    case ND_LOSS_L2: return sqrt(sum / (rows * k));
    case ND_LOSS_L1: return sum / (rows * k);
    default: return sum / rows;
    }
}

const char *nd_loss_metric_name(nd_loss_kind kind) {
    return kind == ND_LOSS_L2      ? "rmse"
        : kind == ND_LOSS_L1       ? "mae"
        : nd_loss_multilabel(kind) ? "attribute_accuracy"
                                   : "accuracy";
}

const char *nd_loss_metric_label(nd_loss_kind kind) {
    return kind == ND_LOSS_L2 ? "rmse" : kind == ND_LOSS_L1 ? "mae" : nd_loss_multilabel(kind) ? "attr acc" : "acc";
}

int nd_loss_metric_sense(nd_loss_kind kind) { return kind == ND_LOSS_L2 || kind == ND_LOSS_L1 ? -1 : 1; }

double nd_loss_expected_initial(nd_loss_kind kind, int k) {
    switch (kind) {
    case ND_LOSS_SOFTMAX_CE: return log((double)k);
    case ND_LOSS_HINGE:
    case ND_LOSS_SQUARED_HINGE: return k - 1.0; /* every margin is 1 */
    case ND_LOSS_SIGMOID_BCE: return k * log(2.0);
    case ND_LOSS_BINARY_HINGE: return k; /* every margin is 1 */
    default: return NAN;
    }
}

/* One row z (k) of softmax cross-entropy against lam of label y and
 * 1 - lam of label y2 (mixup; plain: y2 = y, lam 1, which gives the same
 * bits); d (k, or NULL) receives the gradient. Stable for large logits
 * (log-sum-exp around the row maximum). */
static void softmax_row(const float *z, int k, int y, int y2, double lam, float *d, nd_loss_stats *st) {
    int arg = 0;
    float zmax = z[0];
    for (int c = 1; c < k; ++c)
        if (z[c] > zmax) zmax = z[c], arg = c;
    double sum = 0.0;
    for (int c = 0; c < k; ++c) sum += exp((double)(z[c] - zmax));
    /* -log softmax_y = log(sum exp(z - zmax)) - (z_y - zmax) */
    const double lse = log(sum);
    st->loss_sum += lam * (lse - (double)(z[y] - zmax)) + (1.0 - lam) * (lse - (double)(z[y2] - zmax));
    st->correct += lam * (arg == y) + (1.0 - lam) * (arg == y2);
    if (!d) return;
    const double inv = 1.0 / sum;
    for (int c = 0; c < k; ++c) d[c] = (float)(exp((double)(z[c] - zmax)) * inv);
    d[y] -= (float)lam;
    d[y2] -= (float)(1.0 - lam);
}

nd_loss_stats nd_softmax_ce(float *dlogits, const float *logits, const int *labels, int batch, int classes) {
    nd_loss_stats st = {0.0, 0.0};
    for (int i = 0; i < batch; ++i)
        softmax_row(logits + (size_t)i * classes, classes, labels[i], labels[i], 1.0,
                    dlogits ? dlogits + (size_t)i * classes : NULL, &st);
    return st;
}

nd_loss_stats nd_loss_apply_mixup(nd_loss_kind kind, float *dout, const float *out, const int *labels, const float *lam,
                                  int batch, int k) {
    nd_loss_stats st = {0.0, 0.0};
    if (kind != ND_LOSS_SOFTMAX_CE) return (nd_loss_stats){NAN, NAN}; /* refused at setup */
    for (int i = 0; i < batch; ++i)
        softmax_row(out + (size_t)i * k, k, labels[i], labels[batch - 1 - i], lam[i],
                    dout ? dout + (size_t)i * k : NULL, &st);
    return st;
}

void nd_softmax_temperature_add(float *p, const float *z, float T, float w, int batch, int k) {
    for (int i = 0; i < batch; ++i) {
        const float *zi = z + (size_t)i * k;
        float *pi = p + (size_t)i * k;
        float zmax = zi[0];
        for (int c = 1; c < k; ++c) zmax = zi[c] > zmax ? zi[c] : zmax;
        double sum = 0.0;
        for (int c = 0; c < k; ++c) sum += exp(((double)zi[c] - zmax) / T);
        for (int c = 0; c < k; ++c) pi[c] += (float)(w * exp(((double)zi[c] - zmax) / T) / sum);
    }
}

nd_loss_stats nd_loss_apply_distill(float *dout, const float *out, const int *labels, const float *soft, float T,
                                    float alpha, int batch, int k) {
    nd_loss_stats st = {0.0, 0.0};
    for (int i = 0; i < batch; ++i) {
        const float *z = out + (size_t)i * k, *p = soft + (size_t)i * k;
        float *d = dout ? dout + (size_t)i * k : NULL;
        nd_loss_stats row = {0.0, 0.0};
        softmax_row(z, k, labels[i], labels[i], 1.0, d, &row); /* the hard part, plain softmax_ce's bits */
        float zmax = z[0];
        for (int c = 1; c < k; ++c) zmax = z[c] > zmax ? z[c] : zmax;
        double sum = 0.0, kl = 0.0;
        for (int c = 0; c < k; ++c) sum += exp(((double)z[c] - zmax) / T);
        const double lse = log(sum);
        for (int c = 0; c < k; ++c) {
            const double logq = ((double)z[c] - zmax) / T - lse; /* log softmax(z / T)_c */
            if (p[c] > 0.0f) kl += p[c] * (log((double)p[c]) - logq);
            /* alpha 0: d * 1 + 0, the same bits */
            if (d) d[c] = d[c] * (1.0f - alpha) + (float)((double)alpha * T * (exp(logq) - p[c]));
        }
        st.loss_sum += (1.0 - alpha) * row.loss_sum + (double)alpha * T * T * kl;
        st.correct += row.correct;
    }
    return st;
}

/* Multiclass SVM (CS231n's Weston-Watkins form), margin 1. */
static nd_loss_stats hinge(float *dout, const float *out, const int *labels, int batch, int k, int squared) {
    nd_loss_stats st = {0.0, 0.0};
    for (int i = 0; i < batch; ++i) {
        const float *z = out + (size_t)i * k;
        const int y = labels[i];
        const float zy = z[y];
        int arg = 0;
        for (int c = 1; c < k; ++c)
            if (z[c] > z[arg]) arg = c;
        st.correct += arg == y;
        double dy = 0.0;
        float *d = dout ? dout + (size_t)i * k : NULL;
        for (int c = 0; c < k; ++c) {
            if (c == y) continue;
            const double margin = (double)z[c] - zy + 1.0;
            const double g = margin > 0 ? (squared ? 2.0 * margin : 1.0) : 0.0;
            if (margin > 0) st.loss_sum += squared ? margin * margin : margin;
            if (d) d[c] = (float)g;
            dy -= g;
        }
        if (d) d[y] = (float)dy;
    }
    return st;
}

static nd_loss_stats with_targets(nd_loss_kind kind, float *dout, const float *out, const float *t, int batch, int k) {
    nd_loss_stats st = {0.0, 0.0};
    for (int i = 0; i < batch; ++i) {
        const float *z = out + (size_t)i * k, *y = t + (size_t)i * k;
        float *d = dout ? dout + (size_t)i * k : NULL;
        int right = 0;
        for (int c = 0; c < k; ++c) {
            const double zc = z[c], yc = y[c], e = zc - yc;
            double g;
            switch (kind) {
            case ND_LOSS_SIGMOID_BCE:
                /* log(1 + e^z) - y z, written to stay finite for large |z| */
                st.loss_sum += fmax(zc, 0.0) - zc * yc + log1p(exp(-fabs(zc)));
                g = (zc >= 0 ? 1.0 / (1.0 + exp(-zc)) : exp(zc) / (1.0 + exp(zc))) - yc;
                right += (zc > 0) == (yc > 0.5);
                break;
            case ND_LOSS_BINARY_HINGE: {
                /* labels +-1 from 0/1; the subgradient 0 at the kink */
                const double sy = 2.0 * yc - 1.0, margin = 1.0 - sy * zc;
                st.loss_sum += margin > 0 ? margin : 0.0;
                g = margin > 0 ? -sy : 0.0;
                right += (zc > 0) == (yc > 0.5);
                break;
            }
            case ND_LOSS_L1:
                st.loss_sum += fabs(e);
                st.correct += fabs(e);
                g = e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0;
                break;
            default: /* L2 */
                st.loss_sum += e * e;
                st.correct += e * e;
                g = 2.0 * e;
            }
            if (d) d[c] = (float)g;
        }
        if (nd_loss_multilabel(kind)) st.correct += (double)right / k;
    }
    return st;
}

nd_loss_stats nd_loss_apply(nd_loss_kind kind, float *dout, const float *out, const int *labels, const float *targets,
                            int batch, int k) {
    switch (kind) {
    case ND_LOSS_SOFTMAX_CE: return nd_softmax_ce(dout, out, labels, batch, k);
    case ND_LOSS_HINGE: return hinge(dout, out, labels, batch, k, 0);
    case ND_LOSS_SQUARED_HINGE: return hinge(dout, out, labels, batch, k, 1);
    default: return with_targets(kind, dout, out, targets, batch, k);
    }
}

void nd_loss_average_add(nd_loss_kind kind, const float *out, int batch, int k, double *sum) {
    for (int i = 0; i < batch; ++i) {
        const float *z = out + (size_t)i * k;
        double *a = sum + (size_t)i * k;
        if (kind == ND_LOSS_SOFTMAX_CE) {
            float zmax = z[0];
            for (int c = 1; c < k; ++c)
                if (z[c] > zmax) zmax = z[c];
            double total = 0.0;
            for (int c = 0; c < k; ++c) total += exp((double)(z[c] - zmax));
            for (int c = 0; c < k; ++c) a[c] += exp((double)(z[c] - zmax)) / total;
        } else if (kind == ND_LOSS_SIGMOID_BCE) {
            for (int c = 0; c < k; ++c) a[c] += 1.0 / (1.0 + exp(-(double)z[c]));
        } else {
            for (int c = 0; c < k; ++c) a[c] += z[c];
        }
    }
}

const char *nd_loss_average_name(nd_loss_kind kind) {
    return kind == ND_LOSS_SOFTMAX_CE                                 ? "softmax probabilities"
        : kind == ND_LOSS_SIGMOID_BCE                                 ? "sigmoid probabilities"
        : nd_loss_takes_targets(kind) && kind != ND_LOSS_BINARY_HINGE ? "outputs"
                                                                      : "scores";
}

nd_loss_stats nd_loss_of_average(nd_loss_kind kind, const double *sum, int members, const int *labels,
                                 const float *targets, int batch, int k, int *predicted) {
    nd_loss_stats st = {0.0, 0.0};
    const double inv = 1.0 / members;
    for (int i = 0; i < batch; ++i) {
        const double *a = sum + (size_t)i * k;
        if (!nd_loss_takes_targets(kind)) {
            const int y = labels[i];
            int arg = 0;
            for (int c = 1; c < k; ++c)
                if (a[c] > a[arg]) arg = c;
            st.correct += arg == y;
            if (predicted) predicted[i] = arg;
            if (kind == ND_LOSS_SOFTMAX_CE) {
                st.loss_sum -= log(fmax(a[y] * inv, 1e-300));
                continue;
            }
            for (int c = 0; c < k; ++c) { /* the hinge of the averaged scores */
                const double margin = c == y ? 0.0 : (a[c] - a[y]) * inv + 1.0;
                if (margin > 0) st.loss_sum += kind == ND_LOSS_SQUARED_HINGE ? margin * margin : margin;
            }
            continue;
        }
        const float *t = targets + (size_t)i * k;
        int right = 0;
        for (int c = 0; c < k; ++c) {
            const double v = a[c] * inv, yc = t[c], e = v - yc;
            if (kind == ND_LOSS_SIGMOID_BCE) {
                st.loss_sum -= yc * log(fmax(v, 1e-300)) + (1.0 - yc) * log(fmax(1.0 - v, 1e-300));
                right += (v > 0.5) == (yc > 0.5);
            } else if (kind == ND_LOSS_BINARY_HINGE) { /* the hinge of the averaged scores */
                const double margin = 1.0 - (2.0 * yc - 1.0) * v;
                st.loss_sum += margin > 0 ? margin : 0.0;
                right += (v > 0) == (yc > 0.5);
            } else if (kind == ND_LOSS_L1) {
                st.loss_sum += fabs(e), st.correct += fabs(e);
            } else {
                st.loss_sum += e * e, st.correct += e * e;
            }
        }
        if (nd_loss_multilabel(kind)) st.correct += (double)right / k;
    }
    return st;
}
