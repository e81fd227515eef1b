// Training kernels of the device agent in plain C on float32 buffers (no MicroPython API).
//
// Each function is the C twin of a pure-Python kernel of device_agent/layers.py, losses.py or
// topk.py: same loops, same order of operations, same tie rules. Arithmetic is float32 (as on a
// board with single-precision MicroPython); the unix port of MicroPython accumulates in double,
// so results agree with it to float32 rounding, not bit for bit. Geometry is checked by the
// caller (tmf_kernels.c); these functions trust it.
#ifndef TMF_KERNELS_H
#define TMF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

// A layer's geometry: the Plan's Layer as plain numbers (see layers.layer_geometry).
typedef struct {
    int kind;
    size_t c, h, w;     // input channels, height, width
    size_t f, oh, ow;   // output channels (units, filters), height, width
    size_t kh, kw;      // kernel or pool window
    size_t sh, sw;      // strides
    size_t w_off, b_off; // weight and bias offsets in the parameter array
    size_t n_in, n_out; // c*h*w and f*oh*ow
} tmf_geo_t;

enum {
    TMF_DENSE = 1,
    TMF_CONV2D = 2,
    TMF_MAXPOOL = 3,
    TMF_AVGPOOL = 4,
    TMF_RELU = 5,
    TMF_TANH = 6,
    TMF_FLATTEN = 7,
};

enum { TMF_MSE = 0, TMF_SOFTMAX_CE = 1 };

float tmf_expf(float x);
float tmf_expm1f(float x);
float tmf_logf(float x);
float tmf_tanhf(float x);

void tmf_dense_forward(const tmf_geo_t *g, const float *p, const float *x, float *y);
void tmf_dense_backward(const tmf_geo_t *g, float *p, const float *x, const float *dy, float *dx,
    float lr);
void tmf_conv2d_forward(const tmf_geo_t *g, const float *p, const float *x, float *y);
void tmf_conv2d_input_grad(const tmf_geo_t *g, const float *p, const float *dy, float *dx);
void tmf_conv2d_sgd(const tmf_geo_t *g, float *p, const float *x, const float *dy, float lr);
void tmf_pool_forward(const tmf_geo_t *g, const float *x, float *y);
void tmf_pool_backward(const tmf_geo_t *g, const float *x, const float *dy, float *dx);
void tmf_activation_forward(int kind, const float *x, float *y, size_t n);
void tmf_activation_backward(int kind, const float *y, const float *dy, float *dx, size_t n);

float tmf_mse(const float *y, const float *target, size_t n, float *dy);
float tmf_softmax_ce(const float *y, size_t label, size_t n, float *dy);
void tmf_clip(float *dy, size_t n, float bound);

float tmf_kth_largest(float *values, size_t k, size_t n);
size_t tmf_select_top_k(const float *delta, size_t n, size_t k, float *scratch, uint32_t *out);
void tmf_delta(const float *params, float *origin, const float *residual, size_t n);
// residual[:n] = delta[:n], then residual[idx[j]] = delta[idx[j]] - values[j] (idx[j] < n)
void tmf_residual(float *residual, const float *delta, size_t n, const uint32_t *idx,
    const float *values, size_t k);

#endif // TMF_KERNELS_H
