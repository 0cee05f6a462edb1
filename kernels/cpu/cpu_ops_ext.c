/*
 * cpu_ops_ext.c - CPU ops for architectures beyond Llama (see cpu_ext.h).
 *
 * These are elementwise or per-row and cost little next to the matmuls
 * around them, so they run on the calling thread in plain C: every output
 * is computed the same way whatever the thread count or batch size.
 */
#include <math.h>
#include <string.h>

#include "cpu_ext.h"
#include "cpu_impl.h"
#include "st_log.h"

/* ---- rope ---- */

/* YaRN's correction range: the dimension pairs whose wavelength fits
 * n_rot times into the original context (ggml's rope_yarn_corr_dims). */
static double yarn_corr_dim(int n_dims, int n_ctx_orig, double n_rot, double base)
{
    return n_dims * log(n_ctx_orig / (n_rot * 2.0 * M_PI)) / (2.0 * log(base));
}

#define ROPE_MAX_PAIRS 2048

void st_cpu_rope_ex(void *ctx, const st_rope_args_t *r)
{
    float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
    const int half = r->rope_dim / 2;
    double lo = 0, hi = 0;
    (void)ctx;

    if (half <= 0 || half > ROPE_MAX_PAIRS || r->offset + r->rope_dim > r->head_stride) {
        st_error("kernels", "rope_ex: rope_dim %d at offset %d does not fit a head of %d",
                 r->rope_dim, r->offset, r->head_stride);
        return;
    }
    if (r->ext_factor != 0.0f) {
        lo = floor(yarn_corr_dim(r->rope_dim, r->n_ctx_orig, r->beta_fast, r->theta));
        hi = ceil(yarn_corr_dim(r->rope_dim, r->n_ctx_orig, r->beta_slow, r->theta));
        lo = fmax(0.0, lo);
        hi = fmin(r->rope_dim - 1.0, hi);
    }
    const double inv_base = pow((double)r->theta, -2.0 / (double)r->rope_dim);
    for (int i = 0; i < r->n; i++) {
        double f = (double)r->pos[i];
        /* Angles in double (they reach thousands of radians), the base
         * power as a running product as in the plain rope op. */
        for (int j = 0; j < half; j++) {
            double extrap = f, interp = f * r->freq_scale, th = interp;
            if (r->ext_factor != 0.0f) {
                double y = (j - lo) / fmax(0.001, hi - lo);
                double ramp = (1.0 - fmin(1.0, fmax(0.0, y))) * r->ext_factor;
                th = interp * (1.0 - ramp) + extrap * ramp;
            }
            cs[j] = (float)(cos(th) * r->mscale);
            sn[j] = (float)(sin(th) * r->mscale);
            f *= inv_base;
        }
        float *row = r->x + (size_t)i * r->row_stride;
        for (int h = 0; h < r->n_heads; h++) {
            float *v = row + (size_t)h * r->head_stride + r->offset;
            if (r->neox) {
                for (int j = 0; j < half; j++) {
                    float x0 = v[j], x1 = v[j + half];
                    v[j] = x0 * cs[j] - x1 * sn[j];
                    v[j + half] = x0 * sn[j] + x1 * cs[j];
                }
            } else {
                for (int j = 0; j < half; j++) {
                    float x0 = v[2 * j], x1 = v[2 * j + 1];
                    v[2 * j] = x0 * cs[j] - x1 * sn[j];
                    v[2 * j + 1] = x0 * sn[j] + x1 * cs[j];
                }
            }
        }
    }
}

/* ---- elementwise ---- */

void st_cpu_add_row(void *ctx, float *x, const st_tensor_t *b, int n, int dim)
{
    const st_cpu_kernels_t *k = st_cpu_ctx_kernels(ctx);
    if (b->type != ST_DTYPE_F32 || b->ne[0] < (uint64_t)dim) {
        st_error("kernels", "add_row: bias '%s' is %s[%llu], need f32[%d]",
                 b->name ? b->name : "?", st_dtype_name(b->type), (unsigned long long)b->ne[0],
                 dim);
        return;
    }
    for (int i = 0; i < n; i++)
        k->add(x + (size_t)i * dim, b->data, (size_t)dim);
}

/* GELU with the tanh approximation (Gemma's gelu_pytorch_tanh), in float. */
void st_cpu_scale(void *ctx, float *x, float a, size_t n)
{
    (void)ctx;
    for (size_t j = 0; j < n; j++)
        x[j] *= a;
}

void st_cpu_softcap(void *ctx, float *x, float c, size_t n)
{
    (void)ctx;
    for (size_t j = 0; j < n; j++)
        x[j] = c * tanhf(x[j] / c);
}

void st_cpu_copy2d(void *ctx, float *dst, int dst_stride, const float *src, int src_stride,
                   int rows, int cols)
{
    (void)ctx;
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * dst_stride, src + (size_t)r * src_stride,
               (size_t)cols * sizeof(float));
}

void st_cpu_axpy(void *ctx, float *x, float a, const float *y, size_t n)
{
    const st_cpu_kernels_t *k = st_cpu_ctx_kernels(ctx);
    k->axpby(x, 1.0f, y, a, (int)n);
}
