// tmf_kernels: the device agent's training kernels as a MicroPython native module.
//
// Python-facing wrappers around kernels.c. Buffers are array('f'); a layer's geometry is an
// array('i') of GEO_LEN ints built once per layer (device_agent/compat.py layer_geometry):
//   [kind, c, h, w, f, oh, ow, kh, kw, sh, sw, w_off, b_off]
// Each kernel has its own entry point (one layer, one loss), and train_step (or a Step bound to
// a network) runs a whole training step in one call: a call into a native module costs several
// hundred instructions on a Cortex-M, as much as a small layer's arithmetic.
// Every call checks the geometry and that each buffer is long enough for it (a few integer
// operations), so a wrong argument raises TypeError or ValueError instead of writing past an
// array. Nothing is allocated, except the float a loss returns (and the Step object itself).
#include "py/dynruntime.h"
#include "kernels.h"

// The glue runs a few hundred instructions a call: small code leaves a board more heap (the
// module's machine code is loaded into it)
#pragma GCC optimize("Os")

#define API_VERSION (2)
#define GEO_LEN (13)
#define MAX_LAYERS (16) // layers train_step takes (its geometries live on the C stack)

enum { G_KIND, G_C, G_H, G_W, G_F, G_OH, G_OW, G_KH, G_KW, G_SH, G_SW, G_WOFF, G_BOFF };

static size_t mul(size_t a, size_t b) {
    if (a != 0 && b > (size_t)-1 / a) {
        mp_raise_ValueError(MP_ERROR_TEXT("layer geometry overflows"));
    }
    return a * b;
}

static size_t add(size_t a, size_t b) {
    if (b > (size_t)-1 - a) {
        mp_raise_ValueError(MP_ERROR_TEXT("layer geometry overflows"));
    }
    return a + b;
}

static void *buffer(mp_obj_t o, char typecode, size_t need, mp_uint_t flags) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(o, &b, flags);
    if (b.typecode != typecode) {
        mp_raise_TypeError(typecode == 'f' ? MP_ERROR_TEXT("expected an array('f')")
                                           : MP_ERROR_TEXT("expected an array('I')"));
    }
    if (b.len / 4 < need) {
        mp_raise_ValueError(MP_ERROR_TEXT("array too short"));
    }
    return b.buf;
}

static size_t b_len(mp_obj_t o) {
    // floats in an array('f') already checked by floats()
    mp_buffer_info_t b;
    mp_get_buffer_raise(o, &b, MP_BUFFER_READ);
    return b.len / 4;
}

static float *floats(mp_obj_t o, size_t need) {
    return buffer(o, 'f', need, MP_BUFFER_RW);
}

static float *floats_or_null(mp_obj_t o, size_t need) {
    return o == mp_const_none ? NULL : floats(o, need);
}

static size_t count(mp_obj_t o) {
    mp_int_t n = mp_obj_get_int(o);
    if (n < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("negative count"));
    }
    return (size_t)n;
}

static void check_shape(const tmf_geo_t *g) {
    int ok = 0;
    switch (g->kind) {
        case TMF_DENSE:
            ok = g->oh == 1 && g->ow == 1;
            break;
        case TMF_CONV2D:
            ok = g->kh <= g->h && g->kw <= g->w
                && mul(g->oh - 1, g->sh) <= g->h - g->kh && mul(g->ow - 1, g->sw) <= g->w - g->kw;
            break;
        case TMF_MAXPOOL:
        case TMF_AVGPOOL:
            ok = g->f == g->c && mul(g->oh, g->kh) <= g->h && mul(g->ow, g->kw) <= g->w;
            break;
        case TMF_RELU:
        case TMF_TANH:
        case TMF_FLATTEN:
            ok = g->n_in == g->n_out;
            break;
        default:
            mp_raise_ValueError(MP_ERROR_TEXT("unknown layer kind"));
    }
    if (!ok) {
        mp_raise_ValueError(MP_ERROR_TEXT("inconsistent layer geometry"));
    }
}

static void read_geo(const int *v, tmf_geo_t *g) {
    // one layer's GEO_LEN ints, checked
    for (int i = G_C; i <= G_SW; i++) {
        if (v[i] < 1) {
            mp_raise_ValueError(MP_ERROR_TEXT("layer geometry out of range"));
        }
    }
    if (v[G_WOFF] < 0 || v[G_BOFF] < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("layer geometry out of range"));
    }
    g->kind = v[G_KIND];
    g->c = v[G_C];
    g->h = v[G_H];
    g->w = v[G_W];
    g->f = v[G_F];
    g->oh = v[G_OH];
    g->ow = v[G_OW];
    g->kh = v[G_KH];
    g->kw = v[G_KW];
    g->sh = v[G_SH];
    g->sw = v[G_SW];
    g->w_off = v[G_WOFF];
    g->b_off = v[G_BOFF];
    g->n_in = mul(mul(g->c, g->h), g->w);
    g->n_out = mul(mul(g->f, g->oh), g->ow);
    check_shape(g);
}

static const int *geo_ints(mp_obj_t o, size_t *n) {
    // an array('i') of geometries: the number of whole GEO_LEN blocks in *n
    mp_buffer_info_t b;
    mp_get_buffer_raise(o, &b, MP_BUFFER_READ);
    if (b.typecode != 'i' || b.len < GEO_LEN * sizeof(int)) {
        mp_raise_TypeError(MP_ERROR_TEXT("geometry must be an array('i') of 13"));
    }
    *n = b.len / (GEO_LEN * sizeof(int));
    return b.buf;
}

static void load_geo(mp_obj_t o, tmf_geo_t *g) {
    size_t n;
    read_geo(geo_ints(o, &n), g);
}

static void expect(const tmf_geo_t *g, int kind_a, int kind_b) {
    if (g->kind != kind_a && g->kind != kind_b) {
        mp_raise_ValueError(MP_ERROR_TEXT("kernel called with another layer kind"));
    }
}

// ---- layers ----

static size_t param_end(const tmf_geo_t *g) {
    // floats the parameter array needs for the layer's weight and bias blocks (0: none)
    if (g->kind != TMF_DENSE && g->kind != TMF_CONV2D) {
        return 0;
    }
    size_t weights = g->kind == TMF_DENSE ? g->n_in : mul(mul(g->c, g->kh), g->kw);
    size_t end_w = add(g->w_off, mul(g->f, weights));
    size_t end_b = add(g->b_off, g->f);
    return end_w > end_b ? end_w : end_b;
}

static float *params(mp_obj_t o, const tmf_geo_t *g) {
    // the parameter array, long enough for the layer's weight and bias blocks
    return floats(o, param_end(g));
}

static int in_place(int kind) {
    return kind == TMF_RELU || kind == TMF_TANH || kind == TMF_FLATTEN;
}

static void run_forward(const tmf_geo_t *g, const float *p, const float *x, float *y) {
    switch (g->kind) {
        case TMF_DENSE:
            tmf_dense_forward(g, p, x, y);
            break;
        case TMF_CONV2D:
            tmf_conv2d_forward(g, p, x, y);
            break;
        case TMF_MAXPOOL:
        case TMF_AVGPOOL:
            tmf_pool_forward(g, x, y);
            break;
        case TMF_RELU:
        case TMF_TANH:
            tmf_activation_forward(g->kind, x, y, g->n_in);
            break;
        default: // flatten: the same values (the network passes one buffer for both)
            if (x != y) {
                for (size_t i = 0; i < g->n_in; i++) {
                    y[i] = x[i];
                }
            }
    }
}

static void run_backward(const tmf_geo_t *g, float *p, const float *x, const float *y,
    const float *dy, float *dx, float lr) {
    // dx NULL: no input gradient; lr 0: no SGD step (p may be NULL for a layer without one)
    switch (g->kind) {
        case TMF_DENSE:
            tmf_dense_backward(g, p, x, dy, dx, lr);
            return;
        case TMF_CONV2D:
            if (dx != NULL) {
                tmf_conv2d_input_grad(g, p, dy, dx);
            }
            if (lr != 0.0f) {
                tmf_conv2d_sgd(g, p, x, dy, lr);
            }
            return;
        default:
            break;
    }
    if (dx == NULL) {
        return;
    }
    if (g->kind == TMF_MAXPOOL || g->kind == TMF_AVGPOOL) {
        tmf_pool_backward(g, x, dy, dx);
    } else if (g->kind == TMF_RELU || g->kind == TMF_TANH) {
        tmf_activation_backward(g->kind, y, dy, dx, g->n_out);
    } else if (dx != dy) {
        for (size_t i = 0; i < g->n_out; i++) {
            dx[i] = dy[i];
        }
    }
}

static void forward_layer(const tmf_geo_t *g, mp_obj_t p, mp_obj_t x_in, mp_obj_t y_in) {
    const float *x = floats(x_in, g->n_in);
    float *y = floats(y_in, g->n_out);
    run_forward(g, param_end(g) ? params(p, g) : NULL, x, y);
}

static void backward_layer(const tmf_geo_t *g, const mp_obj_t *args) {
    // args: p, x, y, dy, dx (None: stop here), lr
    const float *dy = floats(args[3], g->n_out);
    float *dx = floats_or_null(args[4], g->n_in);
    if (g->kind == TMF_DENSE || g->kind == TMF_CONV2D) {
        float *p = params(args[0], g);
        const float *x = floats(args[1], g->n_in);
        run_backward(g, p, x, NULL, dy, dx, mp_obj_get_float_to_f(args[5]));
    } else if (dx == NULL) {
        return;
    } else if (g->kind == TMF_MAXPOOL || g->kind == TMF_AVGPOOL) {
        run_backward(g, NULL, floats(args[1], g->n_in), NULL, dy, dx, 0.0f);
    } else if (g->kind == TMF_RELU || g->kind == TMF_TANH) {
        run_backward(g, NULL, NULL, floats(args[2], g->n_out), dy, dx, 0.0f);
    } else {
        run_backward(g, NULL, NULL, NULL, dy, dx, 0.0f);
    }
}

// forward(geo, p, x, y): any layer kind
static mp_obj_t forward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    forward_layer(&g, args[1], args[2], args[3]);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(forward_obj, 4, 4, forward);

// backward(geo, p, x, y, dy, dx, lr): any layer kind (x its input, y its output)
static mp_obj_t backward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    backward_layer(&g, args + 1);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(backward_obj, 7, 7, backward);

// dense_forward(geo, p, x, y)
static mp_obj_t dense_forward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_DENSE, TMF_DENSE);
    forward_layer(&g, args[1], args[2], args[3]);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(dense_forward_obj, 4, 4, dense_forward);

// dense_backward(geo, p, x, dy, dx, lr)
static mp_obj_t dense_backward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_DENSE, TMF_DENSE);
    mp_obj_t a[6] = { args[1], args[2], mp_const_none, args[3], args[4], args[5] };
    backward_layer(&g, a);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(dense_backward_obj, 6, 6, dense_backward);

// conv2d_forward(geo, p, x, y)
static mp_obj_t conv2d_forward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_CONV2D, TMF_CONV2D);
    forward_layer(&g, args[1], args[2], args[3]);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(conv2d_forward_obj, 4, 4, conv2d_forward);

// conv2d_backward(geo, p, x, dy, dx, lr): input gradient (old weights), then the SGD step
static mp_obj_t conv2d_backward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_CONV2D, TMF_CONV2D);
    mp_obj_t a[6] = { args[1], args[2], mp_const_none, args[3], args[4], args[5] };
    backward_layer(&g, a);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(conv2d_backward_obj, 6, 6, conv2d_backward);

// conv2d_input_grad(geo, p, dy, dx)
static mp_obj_t conv2d_input_grad(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_CONV2D, TMF_CONV2D);
    float *p = params(args[1], &g);
    tmf_conv2d_input_grad(&g, p, floats(args[2], g.n_out), floats(args[3], g.n_in));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(conv2d_input_grad_obj, 4, 4, conv2d_input_grad);

// conv2d_sgd(geo, p, x, dy, lr)
static mp_obj_t conv2d_sgd(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_CONV2D, TMF_CONV2D);
    float *p = params(args[1], &g);
    const float *x = floats(args[2], g.n_in);
    tmf_conv2d_sgd(&g, p, x, floats(args[3], g.n_out), mp_obj_get_float_to_f(args[4]));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(conv2d_sgd_obj, 5, 5, conv2d_sgd);

// pool_forward(geo, x, y)
static mp_obj_t pool_forward(mp_obj_t geo, mp_obj_t x, mp_obj_t y) {
    tmf_geo_t g;
    load_geo(geo, &g);
    expect(&g, TMF_MAXPOOL, TMF_AVGPOOL);
    forward_layer(&g, mp_const_none, x, y);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(pool_forward_obj, pool_forward);

// pool_backward(geo, x, dy, dx)
static mp_obj_t pool_backward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_MAXPOOL, TMF_AVGPOOL);
    tmf_pool_backward(&g, floats(args[1], g.n_in), floats(args[2], g.n_out),
        floats(args[3], g.n_in));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(pool_backward_obj, 4, 4, pool_backward);

// activation_forward(geo, x, y): relu or tanh; x and y may be one buffer
static mp_obj_t activation_forward(mp_obj_t geo, mp_obj_t x, mp_obj_t y) {
    tmf_geo_t g;
    load_geo(geo, &g);
    expect(&g, TMF_RELU, TMF_TANH);
    forward_layer(&g, mp_const_none, x, y);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(activation_forward_obj, activation_forward);

// activation_backward(geo, y, dy, dx): from the activation's output y
static mp_obj_t activation_backward(size_t n_args, const mp_obj_t *args) {
    tmf_geo_t g;
    load_geo(args[0], &g);
    expect(&g, TMF_RELU, TMF_TANH);
    tmf_activation_backward(g.kind, floats(args[1], g.n_out), floats(args[2], g.n_out),
        floats(args[3], g.n_out), g.n_out);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(activation_backward_obj, 4, 4, activation_backward);

// ---- losses ----

static size_t outputs(mp_obj_t n_in) {
    size_t n = count(n_in);
    if (n == 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("a loss needs at least one output"));
    }
    return n;
}

static float ce(mp_obj_t y, mp_obj_t label_in, size_t n, mp_obj_t dy) {
    mp_int_t label = mp_obj_get_int(label_in);
    if (label < 0 || (size_t)label >= n) {
        mp_raise_ValueError(MP_ERROR_TEXT("class label out of range"));
    }
    return tmf_softmax_ce(floats(y, n), (size_t)label, n, floats(dy, n));
}

// mse(y, target, n, dy) -> loss; target an array('f')
static mp_obj_t mse(size_t n_args, const mp_obj_t *args) {
    size_t n = outputs(args[2]);
    float loss = tmf_mse(floats(args[0], n), floats(args[1], n), n, floats(args[3], n));
    return mp_obj_new_float_from_f(loss);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(mse_obj, 4, 4, mse);

// softmax_cross_entropy(y, label, n, dy) -> loss
static mp_obj_t softmax_cross_entropy(size_t n_args, const mp_obj_t *args) {
    return mp_obj_new_float_from_f(ce(args[0], args[1], outputs(args[2]), args[3]));
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(softmax_cross_entropy_obj, 4, 4, softmax_cross_entropy);

// clip(dy, n, bound)
static mp_obj_t clip(mp_obj_t dy, mp_obj_t n_in, mp_obj_t bound) {
    size_t n = count(n_in);
    tmf_clip(floats(dy, n), n, mp_obj_get_float_to_f(bound));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(clip_obj, clip);

// loss_grad(kind, y, target, n, dy, bound) -> loss; kind 0 = MSE (target an array('f')),
// 1 = softmax cross-entropy (target the class); bound > 0 clips the output gradient
static mp_obj_t loss_grad(size_t n_args, const mp_obj_t *args) {
    size_t n = outputs(args[3]);
    float loss;
    if (mp_obj_get_int(args[0]) == TMF_MSE) {
        loss = tmf_mse(floats(args[1], n), floats(args[2], n), n, floats(args[4], n));
    } else {
        loss = ce(args[1], args[2], n, args[4]);
    }
    float bound = mp_obj_get_float_to_f(args[5]);
    if (bound > 0.0f) {
        tmf_clip(floats(args[4], n), n, bound);
    }
    return mp_obj_new_float_from_f(loss);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(loss_grad_obj, 6, 6, loss_grad);

// ---- Top-P% and the round's vectors ----

// kth_largest(values, k, n) -> the k-th largest of values[:n] (reorders values)
static mp_obj_t kth_largest(mp_obj_t values, mp_obj_t k_in, mp_obj_t n_in) {
    size_t n = count(n_in);
    size_t k = count(k_in);
    if (k < 1 || k > n) {
        mp_raise_ValueError(MP_ERROR_TEXT("need 1 <= k <= n"));
    }
    return mp_obj_new_float_from_f(tmf_kth_largest(floats(values, n), k, n));
}
static MP_DEFINE_CONST_FUN_OBJ_3(kth_largest_obj, kth_largest);

// topk_select(delta, n, k, scratch, out) -> entries written: the k indices of largest |delta|
// among the first n, ascending, ties to the lowest index; scratch receives the magnitudes
static mp_obj_t topk_select(size_t n_args, const mp_obj_t *args) {
    size_t n = count(args[1]);
    size_t k = count(args[2]);
    if (k > n) {
        mp_raise_ValueError(MP_ERROR_TEXT("need k <= n"));
    }
    const float *delta = floats(args[0], n);
    float *scratch = floats(args[3], n);
    uint32_t *out = buffer(args[4], 'I', k, MP_BUFFER_RW);
    if (k == 0) {
        return MP_OBJ_NEW_SMALL_INT(0);
    }
    return mp_obj_new_int((mp_int_t)tmf_select_top_k(delta, n, k, scratch, out));
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(topk_select_obj, 5, 5, topk_select);

// delta(params, origin, n, residual): origin[:n] = params[:n] - origin[:n] (+ residual[:n])
static mp_obj_t delta(size_t n_args, const mp_obj_t *args) {
    size_t n = count(args[2]);
    const float *p = floats(args[0], n);
    float *origin = floats(args[1], n);
    tmf_delta(p, origin, floats_or_null(args[3], n), n);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(delta_obj, 4, 4, delta);

static void fill(float *dst, mp_obj_t src_in, size_t n) {
    // dst[:n] = src[:n]: src an array('f'), a list or tuple, or any sequence of numbers
    mp_buffer_info_t b;
    if (mp_get_buffer(src_in, &b, MP_BUFFER_READ) && b.typecode == 'f') {
        const float *src = floats(src_in, n);
        for (size_t i = 0; i < n; i++) {
            dst[i] = src[i];
        }
        return;
    }
    size_t len;
    mp_obj_t *items;
    const mp_obj_type_t *type = mp_obj_get_type(src_in);
    if (type == &mp_type_list || type == &mp_type_tuple) {
        mp_obj_get_array(src_in, &len, &items);
        if (len < n) {
            mp_raise_ValueError(MP_ERROR_TEXT("sequence too short"));
        }
        for (size_t i = 0; i < n; i++) {
            dst[i] = mp_obj_get_float_to_f(items[i]);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        mp_obj_t v = mp_obj_subscr(src_in, MP_OBJ_NEW_SMALL_INT(i), MP_OBJ_SENTINEL);
        dst[i] = mp_obj_get_float_to_f(v);
    }
}

// copy(dst, src, n): dst[:n] = src[:n]; src an array('f') or any sequence of numbers
static mp_obj_t copy(mp_obj_t dst_in, mp_obj_t src_in, mp_obj_t n_in) {
    size_t n = count(n_in);
    fill(floats(dst_in, n), src_in, n);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_3(copy_obj, copy);

// residual(residual, delta, n, idx, values, k): error feedback after a round, residual[:n] =
// delta[:n] and then, for each of the k sent entries, residual[idx[j]] = delta[idx[j]] -
// values[j] (idx an array('I') of indices below n, values the sent values as array('f'))
static mp_obj_t residual(size_t n_args, const mp_obj_t *args) {
    size_t n = count(args[2]);
    size_t k = count(args[5]);
    float *res = floats(args[0], n);
    const float *d = floats(args[1], n);
    const uint32_t *idx = buffer(args[3], 'I', k, MP_BUFFER_READ);
    const float *values = floats(args[4], k);
    for (size_t j = 0; j < k; j++) {
        if (idx[j] >= n) {
            mp_raise_ValueError(MP_ERROR_TEXT("index out of range"));
        }
    }
    tmf_residual(res, d, n, idx, values, k);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(residual_obj, 6, 6, residual);

// ---- a whole training step ----

// train_step(net, p, x, target, lr, first, last) -> the loss before the step.
// One online SGD step as device_agent/network.py Network.train_step runs it through forward,
// loss_grad and backward, in one call: x copied into the first activation buffer, every layer
// forward, the loss and its (clipped) gradient, then backpropagation from the output down to
// layer `first`, each parameterised layer in [first, last] stepped with lr (last < 0: up to the
// output). `net` is the tuple the Network builds once: (geometries: the layers' geometry arrays
// end to end in one array('i'), acts: a tuple of the layers' count + 1 activation buffers (one
// buffer may stand twice in a row: a layer run in place), grad_a, grad_b, the loss code, the
// MSE target buffer or None, the clip bound). Every geometry and buffer length is checked
// before anything is written.
#define NET_LEN (7)

static mp_obj_t train_step(size_t n_args, const mp_obj_t *args) {
    size_t n_net, n_layers, n_acts;
    mp_obj_t *net, *acts;
    mp_obj_get_array(args[0], &n_net, &net);
    if (n_net != NET_LEN) {
        mp_raise_TypeError(MP_ERROR_TEXT("net must be a tuple of 7"));
    }
    const int *geos = geo_ints(net[0], &n_layers);
    mp_obj_get_array(net[1], &n_acts, &acts);
    if (n_layers == 0 || n_layers > MAX_LAYERS || n_acts != n_layers + 1) {
        mp_raise_ValueError(MP_ERROR_TEXT("need 1 to MAX_LAYERS layers and one more buffer"));
    }
    mp_int_t first = mp_obj_get_int(args[5]);
    mp_int_t last = args[6] == mp_const_none ? -1 : mp_obj_get_int(args[6]);
    if (first < 0 || (size_t)first >= n_layers) {
        mp_raise_ValueError(MP_ERROR_TEXT("first layer out of range"));
    }
    if (last < 0) {
        last = n_layers - 1;
    }
    tmf_geo_t g[MAX_LAYERS];
    float *buf[MAX_LAYERS + 1];
    size_t len[MAX_LAYERS + 1];
    size_t p_need = 0;
    for (size_t i = 0; i <= n_layers; i++) {
        if (i > 0 && acts[i] == acts[i - 1]) { // run in place: the same buffer
            buf[i] = buf[i - 1];
            len[i] = len[i - 1];
            continue;
        }
        mp_buffer_info_t b;
        mp_get_buffer_raise(acts[i], &b, MP_BUFFER_RW);
        if (b.typecode != 'f') {
            mp_raise_TypeError(MP_ERROR_TEXT("expected an array('f')"));
        }
        buf[i] = b.buf;
        len[i] = b.len / 4;
    }
    for (size_t i = 0; i < n_layers; i++) {
        read_geo(geos + i * GEO_LEN, &g[i]);
        if (len[i] < g[i].n_in || len[i + 1] < g[i].n_out) {
            mp_raise_ValueError(MP_ERROR_TEXT("array too short"));
        }
        size_t end = param_end(&g[i]);
        p_need = end > p_need ? end : p_need;
    }
    float *p = floats(args[1], p_need);
    size_t n = g[n_layers - 1].n_out;
    float *dy = floats(net[2], n);
    float *spare = floats(net[3], 1);
    size_t spare_len = b_len(net[3]);
    size_t dy_len = b_len(net[2]);
    mp_int_t kind = mp_obj_get_int(net[4]);
    float bound = mp_obj_get_float_to_f(net[6]);
    float lr = mp_obj_get_float_to_f(args[4]);
    size_t label = 0;
    float *target = NULL;
    if (kind == TMF_MSE) {
        target = floats(net[5], n);
        fill(target, args[3], n);
    } else {
        mp_int_t l = mp_obj_get_int(args[3]);
        if (l < 0 || (size_t)l >= n) {
            mp_raise_ValueError(MP_ERROR_TEXT("class label out of range"));
        }
        label = (size_t)l;
    }
    // the gradient buffers must hold every gradient the backward pass puts in them
    {
        size_t need[2] = { n, 0 };
        int cur = 0;
        for (size_t i = n_layers - 1; i > (size_t)first; i--) {
            if (need[cur] < g[i].n_out) {
                need[cur] = g[i].n_out;
            }
            if (!in_place(g[i].kind)) {
                cur = 1 - cur;
                if (need[cur] < g[i].n_in) {
                    need[cur] = g[i].n_in;
                }
            }
        }
        if (need[cur] < g[first].n_out) {
            need[cur] = g[first].n_out;
        }
        if (dy_len < need[0] || spare_len < need[1]) {
            mp_raise_ValueError(MP_ERROR_TEXT("gradient buffer too short"));
        }
    }
    fill(buf[0], args[2], g[0].n_in);
    for (size_t i = 0; i < n_layers; i++) {
        run_forward(&g[i], p, buf[i], buf[i + 1]);
    }
    const float *y = buf[n_layers];
    float loss = target != NULL ? tmf_mse(y, target, n, dy) : tmf_softmax_ce(y, label, n, dy);
    if (bound > 0.0f) {
        tmf_clip(dy, n, bound);
    }
    for (size_t i = n_layers - 1;; i--) {
        float step = (mp_int_t)i <= last ? lr : 0.0f;
        if (i == (size_t)first) {
            run_backward(&g[i], p, buf[i], buf[i + 1], dy, NULL, step);
            break;
        }
        if (in_place(g[i].kind)) {
            run_backward(&g[i], p, buf[i], buf[i + 1], dy, dy, 0.0f);
            continue;
        }
        run_backward(&g[i], p, buf[i], buf[i + 1], dy, spare, step);
        float *t = dy;
        dy = spare;
        spare = t;
    }
    return mp_obj_new_float_from_f(loss);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(train_step_obj, 7, 7, train_step);

// Step(net): train_step with its `net` bound, called as step(p, x, target, lr, first[, last]).
// A Network keeps one as its train_step: calling it runs no Python frame (one of seven
// arguments is allocated on the heap and freed at every call).
typedef struct {
    mp_obj_base_t base;
    mp_obj_t net;
} step_obj_t;

mp_obj_full_type_t step_type;

static mp_obj_t step_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw,
    const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(args[0], &n, &items);
    if (n != NET_LEN) {
        mp_raise_TypeError(MP_ERROR_TEXT("net must be a tuple of 7"));
    }
    step_obj_t *o = mp_obj_malloc(step_obj_t, type);
    o->net = args[0];
    return MP_OBJ_FROM_PTR(o);
}

static mp_obj_t step_call(mp_obj_t self_in, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 5, 6, false);
    step_obj_t *self = MP_OBJ_TO_PTR(self_in);
    mp_obj_t a[7] = { self->net, args[0], args[1], args[2], args[3], args[4],
                      n_args > 5 ? args[5] : mp_const_none };
    return train_step(7, a);
}

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args) {
    MP_DYNRUNTIME_INIT_ENTRY

    mp_store_global(MP_QSTR_API, MP_OBJ_NEW_SMALL_INT(API_VERSION));
    mp_store_global(MP_QSTR_GEO_LEN, MP_OBJ_NEW_SMALL_INT(GEO_LEN));
    mp_store_global(MP_QSTR_forward, MP_OBJ_FROM_PTR(&forward_obj));
    mp_store_global(MP_QSTR_backward, MP_OBJ_FROM_PTR(&backward_obj));
    mp_store_global(MP_QSTR_dense_forward, MP_OBJ_FROM_PTR(&dense_forward_obj));
    mp_store_global(MP_QSTR_dense_backward, MP_OBJ_FROM_PTR(&dense_backward_obj));
    mp_store_global(MP_QSTR_conv2d_forward, MP_OBJ_FROM_PTR(&conv2d_forward_obj));
    mp_store_global(MP_QSTR_conv2d_backward, MP_OBJ_FROM_PTR(&conv2d_backward_obj));
    mp_store_global(MP_QSTR_conv2d_input_grad, MP_OBJ_FROM_PTR(&conv2d_input_grad_obj));
    mp_store_global(MP_QSTR_conv2d_sgd, MP_OBJ_FROM_PTR(&conv2d_sgd_obj));
    mp_store_global(MP_QSTR_pool_forward, MP_OBJ_FROM_PTR(&pool_forward_obj));
    mp_store_global(MP_QSTR_pool_backward, MP_OBJ_FROM_PTR(&pool_backward_obj));
    mp_store_global(MP_QSTR_activation_forward, MP_OBJ_FROM_PTR(&activation_forward_obj));
    mp_store_global(MP_QSTR_activation_backward, MP_OBJ_FROM_PTR(&activation_backward_obj));
    mp_store_global(MP_QSTR_mse, MP_OBJ_FROM_PTR(&mse_obj));
    mp_store_global(MP_QSTR_softmax_cross_entropy, MP_OBJ_FROM_PTR(&softmax_cross_entropy_obj));
    mp_store_global(MP_QSTR_clip, MP_OBJ_FROM_PTR(&clip_obj));
    mp_store_global(MP_QSTR_loss_grad, MP_OBJ_FROM_PTR(&loss_grad_obj));
    mp_store_global(MP_QSTR_kth_largest, MP_OBJ_FROM_PTR(&kth_largest_obj));
    mp_store_global(MP_QSTR_topk_select, MP_OBJ_FROM_PTR(&topk_select_obj));
    mp_store_global(MP_QSTR_delta, MP_OBJ_FROM_PTR(&delta_obj));
    mp_store_global(MP_QSTR_copy, MP_OBJ_FROM_PTR(&copy_obj));
    mp_store_global(MP_QSTR_residual, MP_OBJ_FROM_PTR(&residual_obj));
    mp_store_global(MP_QSTR_train_step, MP_OBJ_FROM_PTR(&train_step_obj));
    mp_store_global(MP_QSTR_MAX_LAYERS, MP_OBJ_NEW_SMALL_INT(MAX_LAYERS));
    step_type.base.type = (void *)&mp_type_type;
    step_type.flags = MP_TYPE_FLAG_NONE;
    step_type.name = MP_QSTR_Step;
    MP_OBJ_TYPE_SET_SLOT(&step_type, make_new, step_make_new, 0);
    MP_OBJ_TYPE_SET_SLOT(&step_type, call, step_call, 1);
    mp_store_global(MP_QSTR_Step, MP_OBJ_FROM_PTR(&step_type));

    MP_DYNRUNTIME_INIT_EXIT
}
