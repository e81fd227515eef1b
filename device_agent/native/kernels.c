// Training kernels of the device agent in plain C (see kernels.h).
//
// The loops follow the pure-Python kernels statement by statement, so that a reader can hold
// the two side by side; the only change is float32 arithmetic. Where a loop is rearranged for
// speed (the 3x3 convolutions, unrolled loops) every value still goes through the same float32
// operations in the same order, so the results are the same bits. exp, log and tanh are written
// here rather than taken from a libm: a native module cannot count on one (soft-float
// Cortex-M0/M3 links libgcc only), and the same code then gives the same bits on every
// architecture (the build turns off fused multiply-add contraction).
#include "kernels.h"

typedef union {
    float f;
    uint32_t u;
} bits_t;

// Unroll a simple loop four times (the sums stay in order: only the loop's own counting goes)
#define UNROLL4 _Pragma("GCC unroll 4")

#define LN2_HI (6.93145751953125e-1f) // ln 2 rounded to 16 bits: k * LN2_HI is exact
#define LN2_LO (1.42860682030941723212e-6f)
#define LOG2E (1.44269504088896341f)
#define EXP_MAX (88.72283935546875f) // largest x with exp(x) finite in float32
#define EXP_MIN (-103.972076416015625f) // exp(x) rounds to 0 below

static float pow2i(int k) {
    // 2^k for -126 <= k <= 127
    bits_t b;
    b.u = (uint32_t)(k + 127) << 23;
    return b.f;
}

static float expm1_poly(float r) {
    // e^r - 1 for |r| <= ln2/2 by its Taylor series to r^8 (truncation below 1e-9 relative)
    float q = 1.0f / 40320.0f;
    q = q * r + 1.0f / 5040.0f;
    q = q * r + 1.0f / 720.0f;
    q = q * r + 1.0f / 120.0f;
    q = q * r + 1.0f / 24.0f;
    q = q * r + 1.0f / 6.0f;
    q = q * r + 0.5f;
    q = q * r + 1.0f;
    return q * r;
}

static int reduce(float x, float *r) {
    // x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: the high part of k ln2 is exact)
    float t = x * LOG2E;
    int k = (int)(t + (t >= 0.0f ? 0.5f : -0.5f));
    *r = (x - (float)k * LN2_HI) - (float)k * LN2_LO;
    return k;
}

static float scale2(float v, int k) {
    // v * 2^k for -150 <= k <= 128, through subnormals at the low end
    if (k > 127) {
        v *= 2.0f;
        k -= 1;
    }
    if (k < -126) {
        v *= pow2i(-64);
        k += 64;
    }
    return v * pow2i(k);
}

float tmf_expf(float x) {
    if (x != x) {
        return x;
    }
    if (x > EXP_MAX) {
        return __builtin_inff();
    }
    if (x < EXP_MIN) {
        return 0.0f;
    }
    float r;
    int k = reduce(x, &r);
    return scale2(expm1_poly(r) + 1.0f, k);
}

float tmf_expm1f(float x) {
    // e^x - 1 for x >= 0 (what tanh needs), accurate relative to the result near 0
    if (x < 0.5f * LN2_HI) {
        return expm1_poly(x);
    }
    if (x > EXP_MAX) {
        return __builtin_inff();
    }
    float r;
    int k = reduce(x, &r);
    if (k > 60) {
        return scale2(expm1_poly(r) + 1.0f, k);
    }
    float two_k = pow2i(k);
    return two_k * expm1_poly(r) + (two_k - 1.0f);
}

static float tanh_series(float x) {
    // tanh by its Taylor series to x^15 for |x| < 0.4 (next term below 1e-9 relative)
    float x2 = x * x;
    float q = -929569.0f / 638512875.0f;
    q = q * x2 + 21844.0f / 6081075.0f;
    q = q * x2 - 1382.0f / 155925.0f;
    q = q * x2 + 62.0f / 2835.0f;
    q = q * x2 - 17.0f / 315.0f;
    q = q * x2 + 2.0f / 15.0f;
    q = q * x2 - 1.0f / 3.0f;
    return x + x * x2 * q;
}

float tmf_tanhf(float x) {
    float a = x < 0.0f ? -x : x;
    float t;
    if (x != x) {
        return x;
    }
    if (a < 0.4f) {
        return tanh_series(x);
    }
    if (a > 9.5f) { // tanh rounds to 1 in float32
        t = 1.0f;
    } else {
        float e = tmf_expm1f(2.0f * a);
        t = e / (e + 2.0f);
    }
    return x < 0.0f ? -t : t;
}

float tmf_logf(float x) {
    // natural log for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s)
    if (!(x > 0.0f)) {
        return x == 0.0f ? -__builtin_inff() : (x - x) / (x - x);
    }
    if (x == __builtin_inff()) {
        return x;
    }
    int e = 0;
    if (x < 1.17549435e-38f) { // subnormal: make it normal first
        x *= 8388608.0f; // 2^23
        e = -23;
    }
    bits_t b;
    b.f = x;
    e += (int)((b.u >> 23) & 0xff) - 127;
    b.u = (b.u & 0x007fffffu) | 0x3f800000u; // m in [1, 2)
    if (b.f > 1.41421356f) {
        b.u -= 0x00800000u; // m / 2
        e += 1;
    }
    float m = b.f;
    float s = (m - 1.0f) / (m + 1.0f);
    float s2 = s * s;
    float poly = 1.0f / 9.0f;
    poly = poly * s2 + 1.0f / 7.0f;
    poly = poly * s2 + 1.0f / 5.0f;
    poly = poly * s2 + 1.0f / 3.0f;
    float log_m = 2.0f * s + 2.0f * s * s2 * poly;
    return (float)e * LN2_HI + (log_m + (float)e * LN2_LO);
}

void tmf_dense_forward(const tmf_geo_t *g, const float *p, const float *x, float *y) {
    size_t n_in = g->n_in;
    for (size_t o = 0; o < g->f; o++) {
        float s = p[g->b_off + o];
        const float *row = p + g->w_off + o * n_in;
        UNROLL4
        for (size_t i = 0; i < n_in; i++) {
            s += row[i] * x[i];
        }
        y[o] = s;
    }
}

void tmf_dense_backward(const tmf_geo_t *g, float *p, const float *x, const float *dy, float *dx,
    float lr) {
    size_t n_in = g->n_in;
    if (dx != NULL) {
        for (size_t i = 0; i < n_in; i++) {
            dx[i] = 0.0f;
        }
        for (size_t o = 0; o < g->f; o++) {
            float gr = dy[o];
            const float *row = p + g->w_off + o * n_in;
            UNROLL4
            for (size_t i = 0; i < n_in; i++) {
                dx[i] += row[i] * gr;
            }
        }
    }
    if (lr != 0.0f) {
        for (size_t o = 0; o < g->f; o++) {
            float gr = lr * dy[o];
            float *row = p + g->w_off + o * n_in;
            UNROLL4
            for (size_t i = 0; i < n_in; i++) {
                row[i] -= gr * x[i];
            }
            p[g->b_off + o] -= gr;
        }
    }
}

// 3x3 convolutions (every conv2d of the default models): the same float32 operations in the
// same order as the general loops below, rearranged so that a filter's nine taps of one channel
// stay in registers while it slides over the image. The forward pass keeps each output's
// partial sum in y between channels (a float32 store and load change nothing), so an output is
// still bias + taps channel by channel, row by row; the input gradient still adds the
// contributions to each input in (filter, output position) order; the weight gradient keeps
// nine sums at once, each over the output positions in order.

#define TAPS(w, v) \
    float w##0 = v[0], w##1 = v[1], w##2 = v[2], w##3 = v[3], w##4 = v[4], w##5 = v[5]; \
    float w##6 = v[6], w##7 = v[7], w##8 = v[8]

static void conv3x3_forward(const tmf_geo_t *g, const float *p, const float *x, float *y) {
    size_t w = g->w, row_step = g->sh * w, sw = g->sw, npos = g->oh * g->ow;
    size_t plane = g->h * w;
    const float *wf = p + g->w_off;
    for (size_t f = 0; f < g->f; f++) {
        float *yf = y + f * npos;
        float bias = p[g->b_off + f];
        for (size_t j = 0; j < npos; j++) {
            yf[j] = bias;
        }
        for (size_t c = 0; c < g->c; c++, wf += 9) {
            TAPS(a, wf);
            const float *xc = x + c * plane;
            float *out = yf;
            for (size_t oy = 0; oy < g->oh; oy++) {
                const float *r0 = xc + oy * row_step;
                const float *r1 = r0 + w;
                const float *r2 = r1 + w;
                for (size_t ox = 0; ox < g->ow; ox++) {
                    float s = *out;
                    s += a0 * r0[0];
                    s += a1 * r0[1];
                    s += a2 * r0[2];
                    s += a3 * r1[0];
                    s += a4 * r1[1];
                    s += a5 * r1[2];
                    s += a6 * r2[0];
                    s += a7 * r2[1];
                    s += a8 * r2[2];
                    *out++ = s;
                    r0 += sw;
                    r1 += sw;
                    r2 += sw;
                }
            }
        }
    }
}

static void conv3x3_input_grad(const tmf_geo_t *g, const float *p, const float *dy, float *dx) {
    size_t w = g->w, row_step = g->sh * w, sw = g->sw, npos = g->oh * g->ow;
    size_t plane = g->h * w;
    const float *wf = p + g->w_off;
    for (size_t f = 0; f < g->f; f++) {
        const float *df = dy + f * npos;
        for (size_t c = 0; c < g->c; c++, wf += 9) {
            TAPS(w, wf);
            float *xc = dx + c * plane;
            const float *d = df;
            for (size_t oy = 0; oy < g->oh; oy++) {
                float *r0 = xc + oy * row_step;
                for (size_t ox = 0; ox < g->ow; ox++, r0 += sw) {
                    float gr = *d++;
                    if (gr == 0.0f) {
                        continue;
                    }
                    float *r1 = r0 + w;
                    float *r2 = r1 + w;
                    r0[0] += w0 * gr;
                    r0[1] += w1 * gr;
                    r0[2] += w2 * gr;
                    r1[0] += w3 * gr;
                    r1[1] += w4 * gr;
                    r1[2] += w5 * gr;
                    r2[0] += w6 * gr;
                    r2[1] += w7 * gr;
                    r2[2] += w8 * gr;
                }
            }
        }
    }
}

static void conv3x3_sgd(const tmf_geo_t *g, float *p, const float *x, const float *dy, float lr) {
    size_t w = g->w, row_step = g->sh * w, sw = g->sw, npos = g->oh * g->ow;
    size_t plane = g->h * w;
    float *wi = p + g->w_off;
    for (size_t f = 0; f < g->f; f++) {
        const float *d0 = dy + f * npos;
        float gb = 0.0f;
        for (size_t j = 0; j < npos; j++) {
            gb += d0[j];
        }
        for (size_t c = 0; c < g->c; c++, wi += 9) {
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
            float s3 = 0.0f, s4 = 0.0f, s5 = 0.0f;
            float s6 = 0.0f, s7 = 0.0f, s8 = 0.0f;
            const float *xc = x + c * plane;
            const float *d = d0;
            for (size_t oy = 0; oy < g->oh; oy++) {
                const float *r0 = xc + oy * row_step;
                const float *r1 = r0 + w;
                const float *r2 = r1 + w;
                for (size_t ox = 0; ox < g->ow; ox++) {
                    float v = *d++;
                    s0 += v * r0[0];
                    s1 += v * r0[1];
                    s2 += v * r0[2];
                    s3 += v * r1[0];
                    s4 += v * r1[1];
                    s5 += v * r1[2];
                    s6 += v * r2[0];
                    s7 += v * r2[1];
                    s8 += v * r2[2];
                    r0 += sw;
                    r1 += sw;
                    r2 += sw;
                }
            }
            wi[0] -= lr * s0;
            wi[1] -= lr * s1;
            wi[2] -= lr * s2;
            wi[3] -= lr * s3;
            wi[4] -= lr * s4;
            wi[5] -= lr * s5;
            wi[6] -= lr * s6;
            wi[7] -= lr * s7;
            wi[8] -= lr * s8;
        }
        p[g->b_off + f] -= lr * gb;
    }
}

void tmf_conv2d_forward(const tmf_geo_t *g, const float *p, const float *x, float *y) {
    if (g->kh == 3 && g->kw == 3) {
        conv3x3_forward(g, p, x, y);
        return;
    }
    size_t plane = g->h * g->w;
    size_t ksize = g->c * g->kh * g->kw;
    size_t out = 0;
    for (size_t f = 0; f < g->f; f++) {
        const float *wf = p + g->w_off + f * ksize;
        float bias = p[g->b_off + f];
        for (size_t oy = 0; oy < g->oh; oy++) {
            for (size_t ox = 0; ox < g->ow; ox++) {
                float s = bias;
                const float *wi = wf;
                for (size_t c = 0; c < g->c; c++) {
                    const float *base = x + c * plane + oy * g->sh * g->w + ox * g->sw;
                    for (size_t ky = 0; ky < g->kh; ky++) {
                        const float *xi = base + ky * g->w;
                        for (size_t kx = 0; kx < g->kw; kx++) {
                            s += *wi++ * *xi++;
                        }
                    }
                }
                y[out++] = s;
            }
        }
    }
}

void tmf_conv2d_input_grad(const tmf_geo_t *g, const float *p, const float *dy, float *dx) {
    size_t plane = g->h * g->w;
    size_t ksize = g->c * g->kh * g->kw;
    for (size_t i = 0; i < g->n_in; i++) {
        dx[i] = 0.0f;
    }
    if (g->kh == 3 && g->kw == 3) {
        conv3x3_input_grad(g, p, dy, dx);
        return;
    }
    size_t o = 0;
    for (size_t f = 0; f < g->f; f++) {
        const float *wf = p + g->w_off + f * ksize;
        for (size_t oy = 0; oy < g->oh; oy++) {
            for (size_t ox = 0; ox < g->ow; ox++) {
                float gr = dy[o++];
                if (gr == 0.0f) {
                    continue;
                }
                const float *wi = wf;
                for (size_t c = 0; c < g->c; c++) {
                    float *base = dx + c * plane + oy * g->sh * g->w + ox * g->sw;
                    for (size_t ky = 0; ky < g->kh; ky++) {
                        float *xi = base + ky * g->w;
                        for (size_t kx = 0; kx < g->kw; kx++) {
                            *xi++ += *wi++ * gr;
                        }
                    }
                }
            }
        }
    }
}

void tmf_conv2d_sgd(const tmf_geo_t *g, float *p, const float *x, const float *dy, float lr) {
    if (g->kh == 3 && g->kw == 3) {
        conv3x3_sgd(g, p, x, dy, lr);
        return;
    }
    size_t plane = g->h * g->w;
    size_t npos = g->oh * g->ow;
    float *wi = p + g->w_off;
    for (size_t f = 0; f < g->f; f++) {
        const float *d0 = dy + f * npos;
        float gb = 0.0f;
        for (size_t j = 0; j < npos; j++) {
            gb += d0[j];
        }
        for (size_t c = 0; c < g->c; c++) {
            for (size_t ky = 0; ky < g->kh; ky++) {
                for (size_t kx = 0; kx < g->kw; kx++) {
                    float s = 0.0f;
                    const float *d = d0;
                    for (size_t oy = 0; oy < g->oh; oy++) {
                        const float *xi = x + c * plane + (oy * g->sh + ky) * g->w + kx;
                        for (size_t ox = 0; ox < g->ow; ox++) {
                            s += *d++ * *xi;
                            xi += g->sw;
                        }
                    }
                    *wi++ -= lr * s;
                }
            }
        }
        p[g->b_off + f] -= lr * gb;
    }
}

static size_t argmax_window(const float *x, size_t top, size_t ph, size_t pw, size_t w) {
    // the first maximum in scan order (a later equal value does not replace it)
    size_t best = top;
    for (size_t ky = 0; ky < ph; ky++) {
        size_t row = top + ky * w;
        for (size_t kx = 0; kx < pw; kx++) {
            if (x[row + kx] > x[best]) {
                best = row + kx;
            }
        }
    }
    return best;
}

static inline size_t argmax_2x2(const float *x, size_t top, size_t w) {
    // argmax_window of a 2x2 window: the same comparisons in the same order
    size_t best = top;
    if (x[top + 1] > x[best]) {
        best = top + 1;
    }
    if (x[top + w] > x[best]) {
        best = top + w;
    }
    if (x[top + w + 1] > x[best]) {
        best = top + w + 1;
    }
    return best;
}

void tmf_pool_forward(const tmf_geo_t *g, const float *x, float *y) {
    size_t ph = g->kh, pw = g->kw, w = g->w;
    int is_max = g->kind == TMF_MAXPOOL;
    float scale = 1.0f / (float)(ph * pw);
    size_t out = 0;
    for (size_t c = 0; c < g->c; c++) {
        for (size_t oy = 0; oy < g->oh; oy++) {
            for (size_t ox = 0; ox < g->ow; ox++) {
                size_t top = c * g->h * w + oy * ph * w + ox * pw;
                if (is_max && ph == 2 && pw == 2) {
                    y[out] = x[argmax_2x2(x, top, w)];
                } else if (is_max) {
                    y[out] = x[argmax_window(x, top, ph, pw, w)];
                } else {
                    float s = 0.0f;
                    for (size_t ky = 0; ky < ph; ky++) {
                        const float *row = x + top + ky * w;
                        for (size_t kx = 0; kx < pw; kx++) {
                            s += row[kx];
                        }
                    }
                    y[out] = s * scale;
                }
                out++;
            }
        }
    }
}

void tmf_pool_backward(const tmf_geo_t *g, const float *x, const float *dy, float *dx) {
    size_t ph = g->kh, pw = g->kw, w = g->w;
    int is_max = g->kind == TMF_MAXPOOL;
    float scale = 1.0f / (float)(ph * pw);
    for (size_t i = 0; i < g->n_in; i++) {
        dx[i] = 0.0f;
    }
    size_t o = 0;
    for (size_t c = 0; c < g->c; c++) {
        for (size_t oy = 0; oy < g->oh; oy++) {
            for (size_t ox = 0; ox < g->ow; ox++) {
                size_t top = c * g->h * w + oy * ph * w + ox * pw;
                float gr = dy[o++];
                if (is_max && ph == 2 && pw == 2) {
                    dx[argmax_2x2(x, top, w)] = gr;
                } else if (is_max) {
                    dx[argmax_window(x, top, ph, pw, w)] = gr;
                } else {
                    for (size_t ky = 0; ky < ph; ky++) {
                        float *row = dx + top + ky * w;
                        for (size_t kx = 0; kx < pw; kx++) {
                            row[kx] = gr * scale;
                        }
                    }
                }
            }
        }
    }
}

void tmf_activation_forward(int kind, const float *x, float *y, size_t n) {
    if (kind == TMF_RELU) {
        UNROLL4
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            y[i] = tmf_tanhf(x[i]);
        }
    }
}

void tmf_activation_backward(int kind, const float *y, const float *dy, float *dx, size_t n) {
    if (kind == TMF_RELU && dx == dy) { // in place: only the gradients of inactive units change
        UNROLL4
        for (size_t i = 0; i < n; i++) {
            if (!(y[i] > 0.0f)) {
                dx[i] = 0.0f;
            }
        }
    } else if (kind == TMF_RELU) {
        for (size_t i = 0; i < n; i++) {
            dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float v = y[i];
            dx[i] = dy[i] * (1.0f - v * v);
        }
    }
}

float tmf_mse(const float *y, const float *target, size_t n, float *dy) {
    float total = 0.0f;
    float fn = (float)n;
    for (size_t i = 0; i < n; i++) {
        float d = y[i] - target[i];
        total += d * d;
        dy[i] = 2.0f * d / fn;
    }
    return total / fn;
}

float tmf_softmax_ce(const float *y, size_t label, size_t n, float *dy) {
    float top = y[0];
    for (size_t i = 1; i < n; i++) {
        if (y[i] > top) {
            top = y[i];
        }
    }
    float z = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float e = tmf_expf(y[i] - top);
        dy[i] = e;
        z += e;
    }
    for (size_t i = 0; i < n; i++) {
        dy[i] /= z;
    }
    float p = dy[label];
    dy[label] -= 1.0f;
    return p > 1e-30f ? -tmf_logf(p) : 69.0f;
}

void tmf_clip(float *dy, size_t n, float bound) {
    for (size_t i = 0; i < n; i++) {
        float v = dy[i];
        if (v > bound) {
            dy[i] = bound;
        } else if (v < -bound) {
            dy[i] = -bound;
        }
    }
}

static float median_of_three(const float *v, size_t lo, size_t hi) {
    float a = v[lo];
    float b = v[(lo + hi) >> 1];
    float c = v[hi];
    if (a > b) {
        float t = a;
        a = b;
        b = t;
    }
    if (b > c) {
        b = c;
    }
    return a > b ? a : b;
}

float tmf_kth_largest(float *v, size_t k, size_t n) {
    // Hoare quickselect, iterative, as topk.kth_largest. The bounds on the scans and the
    // progress check never act on finite values; they keep NaN (where the Python twin raises
    // IndexError or loops) inside the array and the loop finite.
    ptrdiff_t lo = 0;
    ptrdiff_t hi = (ptrdiff_t)n - 1;
    ptrdiff_t target = (ptrdiff_t)k - 1;
    while (lo < hi) {
        float pivot = median_of_three(v, (size_t)lo, (size_t)hi);
        ptrdiff_t i = lo;
        ptrdiff_t j = hi;
        while (i <= j) {
            while (i <= hi && v[i] > pivot) {
                i++;
            }
            while (j >= lo && v[j] < pivot) {
                j--;
            }
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j && j < hi) {
            hi = j;
        } else if (target >= i && i > lo) {
            lo = i;
        } else {
            break;
        }
    }
    return v[target];
}

size_t tmf_select_top_k(const float *delta, size_t n, size_t k, float *scratch, uint32_t *out) {
    for (size_t i = 0; i < n; i++) {
        float v = delta[i];
        scratch[i] = v >= 0.0f ? v : -v;
    }
    float threshold = tmf_kth_largest(scratch, k, n);
    size_t above = 0;
    for (size_t i = 0; i < n; i++) {
        float m = delta[i] >= 0.0f ? delta[i] : -delta[i];
        if (m > threshold) {
            above++;
        }
    }
    size_t ties = k > above ? k - above : 0;
    size_t j = 0;
    for (size_t i = 0; i < n && j < k; i++) {
        float m = delta[i] >= 0.0f ? delta[i] : -delta[i];
        if (m > threshold || (m == threshold && ties > 0)) {
            if (m == threshold) {
                ties--;
            }
            out[j++] = (uint32_t)i;
        }
    }
    return j;
}

void tmf_delta(const float *params, float *origin, const float *residual, size_t n) {
    for (size_t i = 0; i < n; i++) {
        origin[i] = params[i] - origin[i];
        if (residual != NULL) {
            origin[i] += residual[i];
        }
    }
}

void tmf_residual(float *residual, const float *delta, size_t n, const uint32_t *idx,
    const float *values, size_t k) {
    for (size_t i = 0; i < n; i++) {
        residual[i] = delta[i];
    }
    for (size_t j = 0; j < k; j++) {
        residual[idx[j]] = delta[idx[j]] - values[j];
    }
}
