#include "nndist/loss.h"

#include <math.h>
#include <stddef.h>

nd_loss_stats nd_softmax_ce(float *dlogits, const float *logits, const int *labels,
                            int batch, int classes) {
    nd_loss_stats st = {0.0, 0};
    for (int i = 0; i < batch; ++i) {
        const float *z = logits + (size_t)i * classes;
        int arg = 0;
        float zmax = z[0];
        for (int c = 1; c < classes; ++c)
            if (z[c] > zmax) zmax = z[c], arg = c;
        double sum = 0.0;
        for (int c = 0; c < classes; ++c) sum += exp((double)(z[c] - zmax));
        const int y = labels[i];
        /* -log softmax_y = log(sum exp(z - zmax)) - (z_y - zmax) */
        st.loss_sum += log(sum) - (double)(z[y] - zmax);
        st.correct += (arg == y);
        if (dlogits) {
            float *d = dlogits + (size_t)i * classes;
            const double inv = 1.0 / sum;
            for (int c = 0; c < classes; ++c) d[c] = (float)(exp((double)(z[c] - zmax)) * inv);
            d[y] -= 1.0f;
        }
    }
    return st;
}
