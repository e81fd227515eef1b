"""Forward and backward kernels of each layer type on flat float arrays (CHW order).

Every kernel reads and writes preallocated buffers (`array('f')` on the device) and allocates
nothing per call; each is compiled with `@micropython.native` where the port can. Backward
kernels of parameterised layers first write the input gradient with the *old* weights, then
(when `lr` is non-zero) apply the batch-1 SGD step to their own weights in place. That fused
step equals plain SGD exactly and needs no gradient buffer.

`forward` and `backward` run any layer; the compiled module tmf_kernels (device_agent/native/)
has the same two entry points and a C twin of every kernel here, taking the layer as the int
array of `layer_geometry` (device_agent/compat.py) instead of the Layer (network.py picks one set
per Network; with the compiled kernels this module is not even imported).
"""

import math

from device_agent.compat import KIND_CODES, layer_geometry, micropython  # noqa: F401


def forward(layer, p, x, y):
    """Run one layer forward from x into y (activations and flatten may share one buffer)."""
    kind = layer.kind
    if kind == "dense":
        dense_forward(layer, p, x, y)
    elif kind == "conv2d":
        conv2d_forward(layer, p, x, y)
    elif kind in ("maxpool", "avgpool"):
        pool_forward(layer, x, y)
    elif kind in ("relu", "tanh"):
        activation_forward(kind, x, y, layer.size_out())
    elif x is not y:
        copy(y, x, layer.size_out())


def backward(layer, p, x, y, dy, dx, lr):
    """Backpropagate dy (at the layer's output y, input x) into dx when dx is not None, and
    step a parameterised layer's weights when lr != 0 (see the module docstring)."""
    kind = layer.kind
    if kind == "dense":
        dense_backward(layer, p, x, dy, dx, lr)
    elif kind == "conv2d":
        conv2d_backward(layer, p, x, dy, dx, lr)
    elif dx is None:
        return
    elif kind in ("maxpool", "avgpool"):
        pool_backward(layer, x, dy, dx)
    elif kind in ("relu", "tanh"):
        activation_backward(kind, y, dy, dx, layer.size_out())
    else:
        copy(dx, dy, layer.size_out())


@micropython.native
def copy(dst, src, n):
    """dst[:n] = src[:n] (src any sequence of numbers)."""
    for i in range(n):
        dst[i] = src[i]


@micropython.native
def dense_forward(layer, p, x, y):
    """y = W x + b for a dense layer; W is stored row-major (out, in)."""
    n_in = layer.size_in()
    w = layer.w_off
    b = layer.b_off
    for o in range(layer.out_shape[0]):
        s = p[b + o]
        row = w + o * n_in
        for i in range(n_in):
            s += p[row + i] * x[i]
        y[o] = s


@micropython.native
def dense_backward(layer, p, x, dy, dx, lr):
    """Write dx = Wᵀ dy (when dx is given), then W -= lr·dy xᵀ and b -= lr·dy (when lr != 0)."""
    n_in = layer.size_in()
    n_out = layer.out_shape[0]
    w = layer.w_off
    if dx is not None:
        for i in range(n_in):
            dx[i] = 0.0
        for o in range(n_out):
            g = dy[o]
            row = w + o * n_in
            for i in range(n_in):
                dx[i] += p[row + i] * g
    if lr:
        b = layer.b_off
        for o in range(n_out):
            g = lr * dy[o]
            row = w + o * n_in
            for i in range(n_in):
                p[row + i] -= g * x[i]
            p[b + o] -= g


@micropython.native
def conv2d_forward(layer, p, x, y):
    """Valid 2-D convolution with stride; weights are (filters, channels, kh, kw)."""
    c_in, h, w_in = layer.in_shape
    f_out, oh, ow = layer.out_shape
    kh, kw, sh, sw = layer.kh, layer.kw, layer.sh, layer.sw
    plane = h * w_in
    ksize = c_in * kh * kw
    out = 0
    for f in range(f_out):
        wf = layer.w_off + f * ksize
        bias = p[layer.b_off + f]
        for oy in range(oh):
            for ox in range(ow):
                s = bias
                wi = wf
                for c in range(c_in):
                    base = c * plane + oy * sh * w_in + ox * sw
                    for ky in range(kh):
                        xi = base + ky * w_in
                        for _ in range(kw):
                            s += p[wi] * x[xi]
                            wi += 1
                            xi += 1
                y[out] = s
                out += 1


def conv2d_backward(layer, p, x, dy, dx, lr):
    """Input gradient (old weights) into dx when given, then the in-place SGD step when lr != 0."""
    if dx is not None:
        _conv2d_input_grad(layer, p, dy, dx)
    if lr:
        _conv2d_sgd(layer, p, x, dy, lr)


@micropython.native
def _conv2d_input_grad(layer, p, dy, dx):
    c_in, h, w_in = layer.in_shape
    f_out, oh, ow = layer.out_shape
    kh, kw, sh, sw = layer.kh, layer.kw, layer.sh, layer.sw
    plane = h * w_in
    ksize = c_in * kh * kw
    for i in range(c_in * plane):
        dx[i] = 0.0
    o = 0
    for f in range(f_out):
        wf = layer.w_off + f * ksize
        for oy in range(oh):
            for ox in range(ow):
                g = dy[o]
                o += 1
                if g == 0.0:
                    continue
                wi = wf
                for c in range(c_in):
                    base = c * plane + oy * sh * w_in + ox * sw
                    for ky in range(kh):
                        xi = base + ky * w_in
                        for _ in range(kw):
                            dx[xi] += p[wi] * g
                            wi += 1
                            xi += 1


@micropython.native
def _conv2d_sgd(layer, p, x, dy, lr):
    c_in, h, w_in = layer.in_shape
    f_out, oh, ow = layer.out_shape
    kh, kw, sh, sw = layer.kh, layer.kw, layer.sh, layer.sw
    plane = h * w_in
    npos = oh * ow
    wi = layer.w_off
    for f in range(f_out):
        d0 = f * npos
        gb = 0.0
        for j in range(npos):
            gb += dy[d0 + j]
        for c in range(c_in):
            for ky in range(kh):
                for kx in range(kw):
                    s = 0.0
                    d = d0
                    for oy in range(oh):
                        xi = c * plane + (oy * sh + ky) * w_in + kx
                        for _ in range(ow):
                            s += dy[d] * x[xi]
                            d += 1
                            xi += sw
                    p[wi] -= lr * s
                    wi += 1
        p[layer.b_off + f] -= lr * gb


@micropython.native
def pool_forward(layer, x, y):
    """Max or average pooling over non-overlapping windows (stride = size, valid)."""
    c_in, h, w_in = layer.in_shape
    _, oh, ow = layer.out_shape
    ph, pw = layer.kh, layer.kw
    is_max = layer.kind == "maxpool"
    scale = 1.0 / (ph * pw)
    out = 0
    for c in range(c_in):
        for oy in range(oh):
            for ox in range(ow):
                top = c * h * w_in + oy * ph * w_in + ox * pw
                if is_max:
                    y[out] = x[_argmax_window(x, top, ph, pw, w_in)]
                else:
                    s = 0.0
                    for ky in range(ph):
                        row = top + ky * w_in
                        for kx in range(pw):
                            s += x[row + kx]
                    y[out] = s * scale
                out += 1


@micropython.native
def pool_backward(layer, x, dy, dx):
    """Route each output gradient to its window's max (first in scan order) or spread it evenly."""
    c_in, h, w_in = layer.in_shape
    _, oh, ow = layer.out_shape
    ph, pw = layer.kh, layer.kw
    is_max = layer.kind == "maxpool"
    scale = 1.0 / (ph * pw)
    for i in range(c_in * h * w_in):
        dx[i] = 0.0
    o = 0
    for c in range(c_in):
        for oy in range(oh):
            for ox in range(ow):
                top = c * h * w_in + oy * ph * w_in + ox * pw
                g = dy[o]
                o += 1
                if is_max:
                    dx[_argmax_window(x, top, ph, pw, w_in)] = g
                else:
                    for ky in range(ph):
                        row = top + ky * w_in
                        for kx in range(pw):
                            dx[row + kx] = g * scale


@micropython.native
def _argmax_window(x, top, ph, pw, w_in):
    best = top
    for ky in range(ph):
        row = top + ky * w_in
        for kx in range(pw):
            if x[row + kx] > x[best]:
                best = row + kx
    return best


@micropython.native
def activation_forward(kind, x, y, n):
    """ReLU or tanh elementwise; x and y may be the same buffer."""
    if kind == "relu":
        for i in range(n):
            v = x[i]
            y[i] = v if v > 0.0 else 0.0
    else:
        for i in range(n):
            y[i] = math.tanh(x[i])


@micropython.native
def activation_backward(kind, y, dy, dx, n):
    """Gradient through ReLU or tanh from the activation's *output* y (so it can run in place)."""
    if kind == "relu":
        for i in range(n):
            dx[i] = dy[i] if y[i] > 0.0 else 0.0
    else:
        for i in range(n):
            v = y[i]
            dx[i] = dy[i] * (1.0 - v * v)
