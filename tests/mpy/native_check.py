# Runs every compiled kernel (tmf_kernels) and its pure-Python twin on the same random inputs
# and prints one JSON line per output: {"case", "exact", "native", "python"}; "exact" marks
# outputs that must be bit-identical (selections, copies, comparisons). The caller compares.
# Usage: MICROPYPATH=build/native/x64:. micropython tests/mpy/native_check.py
import json
import math
import sys
from array import array

sys.path.insert(0, ".")
import tmf_kernels as K  # noqa: E402

from device_agent import layers as L  # noqa: E402
from device_agent import losses, topk  # noqa: E402
from device_agent.model import Plan  # noqa: E402
from device_agent.network import Network  # noqa: E402
from device_agent.rng import XorShift32  # noqa: E402

RNG = XorShift32(11)


def rand(n, scale=1.0, zeros=0.0):
    """n floats in [-scale, scale), a share `zeros` of them exactly 0."""
    out = array("f", bytes(4 * n))
    for i in range(n):
        keep = RNG.uniform() >= zeros
        out[i] = (2.0 * RNG.uniform() - 1.0) * scale if keep else 0.0
    return out


def steps(n, values):
    """n floats drawn from a few values: ties for max-pooling and Top-P%."""
    out = array("f", bytes(4 * n))
    for i in range(n):
        out[i] = values[RNG.below(len(values))]
    return out


def show(case, native, python, exact=False):
    print(
        json.dumps({"case": case, "exact": exact, "native": list(native), "python": list(python)})
    )


def layer_of(spec, index=0):
    spec["local_layers"] = 0
    plan = Plan(spec)
    layer = plan.layers[index]
    return plan, layer, L.layer_geometry(layer)


def check_dense():
    plan, layer, geo = layer_of({"input": [7], "layers": [{"type": "dense", "units": 5}]})
    p = rand(plan.n_params)
    x = rand(7, 2.0)
    dy = rand(5)
    ya, yb = array("f", bytes(20)), array("f", bytes(20))
    K.dense_forward(geo, p, x, ya)
    L.dense_forward(layer, p, x, yb)
    show("dense forward", ya, yb)
    pa, pb = array("f", p), array("f", p)
    dxa, dxb = rand(7), rand(7)  # stale contents: the kernels overwrite them
    K.dense_backward(geo, pa, x, dy, dxa, 0.05)
    L.dense_backward(layer, pb, x, dy, dxb, 0.05)
    show("dense input grad", dxa, dxb)
    show("dense sgd", pa, pb)
    before = array("f", pa)
    K.dense_backward(geo, pa, x, dy, None, 0.0)
    show("dense nothing to do", pa, before, True)


CONV = {
    "input": [2, 9, 8],
    "layers": [{"type": "conv2d", "filters": 3, "kernel": [3, 2], "stride": [2, 3]}],
}


def check_conv():
    plan, layer, geo = layer_of(CONV)
    n_out = layer.size_out()
    p = rand(plan.n_params)
    x = rand(layer.size_in(), 3.0)
    dy = rand(n_out, 1.0, 0.3)
    ya, yb = array("f", bytes(4 * n_out)), array("f", bytes(4 * n_out))
    K.conv2d_forward(geo, p, x, ya)
    L.conv2d_forward(layer, p, x, yb)
    show("conv2d forward (strides 2, 3)", ya, yb)
    dxa, dxb = rand(layer.size_in()), rand(layer.size_in())
    K.conv2d_input_grad(geo, p, dy, dxa)
    L.conv2d_backward(layer, p, x, dy, dxb, 0.0)
    show("conv2d input grad", dxa, dxb)
    pa, pb = array("f", p), array("f", p)
    K.conv2d_sgd(geo, pa, x, dy, 0.03)
    L.conv2d_backward(layer, pb, x, dy, None, 0.03)
    show("conv2d sgd", pa, pb)
    pa, pb = array("f", p), array("f", p)
    K.conv2d_backward(geo, pa, x, dy, dxa, 0.03)
    L.conv2d_backward(layer, pb, x, dy, dxb, 0.03)
    show("conv2d backward: input grad", dxa, dxb)
    show("conv2d backward: sgd", pa, pb)


def f32_conv(layer, p, x, dy, lr):
    """The conv2d kernels with every float32 operation rounded as a single-precision board
    rounds it (each product and sum stored into an array('f'): a sum of two float32 values
    computed in double and rounded once is the float32 sum): (y, dx, p after the SGD step)."""
    c_in, h, w_in = layer.in_shape
    f_out, oh, ow = layer.out_shape
    kh, kw, sh, sw = layer.kh, layer.kw, layer.sh, layer.sw
    t = array("f", [0.0, 0.0])
    y = array("f", bytes(4 * f_out * oh * ow))
    dx = array("f", bytes(4 * c_in * h * w_in))
    q = array("f", p)
    lr = array("f", [lr])[0]  # the kernel's float32 learning rate
    out = 0
    for f in range(f_out):
        for oy in range(oh):
            for ox in range(ow):
                t[0] = p[layer.b_off + f]
                wi = layer.w_off + f * c_in * kh * kw
                g = dy[out]
                for c in range(c_in):
                    for ky in range(kh):
                        for kx in range(kw):
                            xi = c * h * w_in + (oy * sh + ky) * w_in + ox * sw + kx
                            t[1] = p[wi] * x[xi]
                            t[0] = t[0] + t[1]
                            if g != 0.0:
                                t[1] = p[wi] * g
                                dx[xi] = dx[xi] + t[1]
                            wi += 1
                y[out] = t[0]
                out += 1
    npos = oh * ow
    for f in range(f_out):
        t[0] = 0.0
        for j in range(npos):
            t[0] = t[0] + dy[f * npos + j]
        gb = t[0]
        for c in range(c_in):
            for ky in range(kh):
                for kx in range(kw):
                    t[0] = 0.0
                    for oy in range(oh):
                        for ox in range(ow):
                            xi = c * h * w_in + (oy * sh + ky) * w_in + ox * sw + kx
                            t[1] = dy[f * npos + oy * ow + ox] * x[xi]
                            t[0] = t[0] + t[1]
                    wi = layer.w_off + ((f * c_in + c) * kh + ky) * kw + kx
                    t[1] = lr * t[0]
                    q[wi] = q[wi] - t[1]
        t[1] = lr * gb
        q[layer.b_off + f] = q[layer.b_off + f] - t[1]
    return y, dx, q


def check_conv3x3():
    """The 3x3 kernels (their own loops in kernels.c) against the Python kernels, and bit for
    bit against the same operations rounded to float32."""
    for stride, shape in ((1, [2, 7, 6]), (2, [3, 9, 8])):
        spec = {
            "input": shape,
            "layers": [{"type": "conv2d", "filters": 3, "kernel": 3, "stride": stride}],
        }
        plan, layer, geo = layer_of(spec)
        n_out = layer.size_out()
        p = rand(plan.n_params)
        x = rand(layer.size_in(), 3.0)
        dy = rand(n_out, 1.0, 0.3)
        ya, yb = array("f", bytes(4 * n_out)), array("f", bytes(4 * n_out))
        K.conv2d_forward(geo, p, x, ya)
        L.conv2d_forward(layer, p, x, yb)
        name = "conv2d 3x3 stride %d" % stride
        show(name + " forward", ya, yb)
        dxa, dxb = rand(layer.size_in()), rand(layer.size_in())
        pa, pb = array("f", p), array("f", p)
        K.conv2d_backward(geo, pa, x, dy, dxa, 0.03)
        L.conv2d_backward(layer, pb, x, dy, dxb, 0.03)
        show(name + " input grad", dxa, dxb)
        show(name + " sgd", pa, pb)
        y32, dx32, p32 = f32_conv(layer, p, x, dy, 0.03)
        show(name + " forward, float32 exact", ya, y32, True)
        show(name + " input grad, float32 exact", dxa, dx32, True)
        show(name + " sgd, float32 exact", pa, p32, True)


def check_pool(kind, size, ties):
    spec = {"input": [2, 7, 9], "layers": [{"type": kind, "size": size}]}
    plan, layer, geo = layer_of(spec)
    n_in, n_out = layer.size_in(), layer.size_out()
    x = steps(n_in, [-1.0, 0.0, 0.5, 2.0]) if ties else rand(n_in, 4.0)
    dy = rand(n_out)
    ya, yb = array("f", bytes(4 * n_out)), array("f", bytes(4 * n_out))
    K.pool_forward(geo, x, ya)
    L.pool_forward(layer, x, yb)
    name = "%s %r%s" % (kind, size, " with ties" if ties else "")
    show(name + " forward", ya, yb, kind == "maxpool")
    dxa, dxb = rand(n_in), rand(n_in)
    K.pool_backward(geo, x, dy, dxa)
    L.pool_backward(layer, x, dy, dxb)
    show(name + " backward", dxa, dxb, kind == "maxpool")


def check_activation(kind):
    spec = {"input": [40], "layers": [{"type": kind}]}
    plan, layer, geo = layer_of(spec)
    x = rand(40, 6.0, 0.1)
    x[0] = -0.0
    dy = rand(40)
    ya, yb = array("f", bytes(160)), array("f", bytes(160))
    K.activation_forward(geo, x, ya)
    L.activation_forward(kind, x, yb, 40)
    show(kind + " forward", ya, yb, kind == "relu")
    inplace = array("f", x)
    K.activation_forward(geo, inplace, inplace)
    show(kind + " forward in place", inplace, ya, True)
    dxa, dxb = rand(40), rand(40)
    K.activation_backward(geo, yb, dy, dxa)
    L.activation_backward(kind, yb, dy, dxb, 40)
    show(kind + " backward", dxa, dxb, kind == "relu")


def check_losses():
    for n, bound in ((3, 0.0), (3, 0.4), (1, 0.0)):
        y, t = rand(n, 3.0), rand(n, 3.0)
        dya, dyb = array("f", bytes(4 * n)), array("f", bytes(4 * n))
        la = K.loss_grad(0, y, t, n, dya, bound)
        lb = losses.loss_and_grad("mse", y, t, n, dyb, bound)
        show("mse n=%d clip=%g" % (n, bound), [la] + list(dya), [lb] + list(dyb))
    for scale, bound in ((2.0, 0.0), (2.0, 0.3), (60.0, 0.0)):
        y = rand(6, scale)
        for label in (0, 3, 5):
            dya, dyb = array("f", bytes(24)), array("f", bytes(24))
            la = K.loss_grad(1, y, label, 6, dya, bound)
            lb = losses.loss_and_grad("softmax_ce", y, label, 6, dyb, bound)
            case = "softmax_ce logits ±%g label %d clip=%g" % (scale, label, bound)
            show(case, [la] + list(dya), [lb] + list(dyb))
    dy = rand(30, 2.0)
    a, b = array("f", dy), array("f", dy)
    K.clip(a, 30, 0.5)
    losses.clip(b, 30, 0.5)
    show("clip", a, b, True)


def check_topk():
    cases = [
        ("ties", steps(200, [0.0, 1.0, -1.0, 2.0, -2.0, 0.5]), (1, 7, 20, 60, 199, 200)),
        ("random", rand(500, 0.01), (1, 50, 499)),
        ("all equal", steps(64, [-0.25, 0.25]), (1, 13, 64)),
    ]
    for name, delta, ks in cases:
        n = len(delta)
        for k in ks:
            sa, sb = array("f", bytes(4 * n)), array("f", bytes(4 * n))
            out = array("I", bytes(4 * k))
            count = K.topk_select(delta, n, k, sa, out)
            want = topk.select_top_k(delta, k, sb, n, native=False)
            show("top-k %s k=%d" % (name, k), [count] + list(out), [k] + list(want), True)
    values = rand(300)
    a = K.kth_largest(array("f", values), 17, 300)
    b = topk.kth_largest(array("f", values), 17, 300)
    show("kth largest", [a], [b], True)


def check_vectors():
    params, origin, residual = rand(33), rand(33), rand(33, 0.1)
    a, b = array("f", origin), array("f", origin)
    K.delta(params, a, 33, residual)
    for i in range(33):
        b[i] = params[i] - b[i]
        b[i] += residual[i]
    show("delta with residual", a, b, True)
    a, b = array("f", origin), array("f", origin)
    K.delta(params, a, 33, None)
    for i in range(33):
        b[i] = params[i] - b[i]
    show("delta", a, b, True)
    dst = array("f", bytes(20))
    K.copy(dst, [1, 2.5, -3, 4, 0.1], 5)
    show("copy from a list", dst, array("f", [1, 2.5, -3, 4, 0.1]), True)


def check_network_vectors():
    plan = Plan({"input": [3], "layers": [{"type": "dense", "units": 2}], "local_layers": 0})
    params, origin, residual = rand(40), rand(40), rand(40, 0.1)
    out = []
    for native in (True, False):
        net = Network(plan, native=native)
        a = array("f", origin)
        net.delta_into(params, a, 40, residual)
        b = array("f", bytes(160))
        net.copy_into(b, a, 40)
        out.append(b)
    show("network delta_into and copy_into", out[0], out[1], True)


STEP_MODELS = (
    (
        "conv",
        {
            "input": [1, 9, 8],
            "layers": [
                {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 1},
                {"type": "relu"},
                {"type": "maxpool", "size": 2},
                {"type": "conv2d", "filters": 2, "kernel": [2, 1], "stride": 1},
                {"type": "tanh"},
                {"type": "flatten"},
                {"type": "dense", "units": 4},
            ],
            "loss": "softmax_ce",
            "grad_clip": 0.3,
            "local_layers": 1,
        },
    ),
    (
        "mse",
        {
            "input": [3],
            "layers": [
                {"type": "dense", "units": 6},
                {"type": "relu"},
                {"type": "dense", "units": 2},
            ],
            "loss": "mse",
            "local_layers": 1,
        },
    ),
)


def sample_of(plan, i):
    x = rand(plan.layers[0].size_in(), 2.0)
    if plan.loss == "mse":
        return list(x), [0.5 - 0.25 * i, 1.0]
    return x, i % plan.output_size


def check_train_step():
    """Network.train_step in one compiled call (tmf_kernels.Step) against the same network
    calling the kernels layer by layer (bit for bit) and against the Python kernels: a
    reconstruction step, a frozen adaptation step (last below the head), a full one."""
    for name, spec in STEP_MODELS:
        plan = Plan(spec)
        head = plan.local_layers[0]
        cases = (("recon", head, None), ("frozen", plan.param_layers[0], head - 1))
        cases += (("full", plan.param_layers[0], None),)
        for case, first, last in cases:
            p0 = rand(plan.n_params, 0.5)
            one, layered, python = Network(plan), Network(plan), Network(plan, native=False)
            layered._step = None  # the method's layer-by-layer path
            pa, pb, pc = array("f", p0), array("f", p0), array("f", p0)
            la, lb, lc = [], [], []
            for i in range(3):
                x, t = sample_of(plan, i)
                la.append(one.train_step(pa, x, t, 0.05, first, last))
                lb.append(Network.train_step(layered, pb, x, t, 0.05, first, last))
                lc.append(python.train_step(pc, x, t, 0.05, first, last))
            what = "train_step %s %s" % (name, case)
            show(what + " one call = layer by layer", la + list(pa), lb + list(pb), True)
            show(what + " one call ~ python", la + list(pa), lc + list(pc))


def check_residual():
    delta = rand(50)
    idx = array("I", [0, 7, 8, 30, 49])
    values = rand(5)
    a, b = rand(50), rand(50)
    nets = (Network(Plan(STEP_MODELS[1][1])), Network(Plan(STEP_MODELS[1][1]), native=False))
    nets[0].residual_into(a, delta, 50, idx, values)
    nets[1].residual_into(b, delta, 50, idx, values)
    show("residual", a, b, True)


def check_errors():
    """A wrong argument raises instead of writing: one line of the errors' type names."""
    plan = Plan(STEP_MODELS[1][1])
    net = Network(plan)
    p = rand(plan.n_params)
    got = []
    attempts = (
        lambda: K.train_step((1, 2), p, [0.0] * 3, [0.0, 0.0], 0.1, 0, None),
        lambda: K.Step((1, 2)),
        lambda: net.train_step(p, [0.0], [0.0, 0.0], 0.1, 0),  # x too short
        lambda: net.train_step(rand(3), [0.0] * 3, [0.0, 0.0], 0.1, 0),  # params too short
        lambda: net.train_step(p, [0.0] * 3, [0.0, 0.0], 0.1, 7),  # first out of range
        lambda: K.residual(rand(4), rand(4), 4, array("I", [4]), rand(1), 1),
    )
    for attempt in attempts:
        try:
            attempt()
            got.append(0)
        except TypeError:
            got.append(1)
        except ValueError:
            got.append(2)
    show("errors raised", got, [1, 1, 2, 2, 2, 2], True)


def check_math():
    # tanh and softmax on a sweep: the caller compares with float64 references
    xs = array("f", [0.0] * 401)
    for i in range(401):
        xs[i] = (i - 200) * 0.05
    for tiny in (1e-9, 2.4e-4, 2.5e-4, 0.17, 0.18, 9.4, 9.6, 30.0):
        xs.append(tiny)
        xs.append(-tiny)
    n = len(xs)
    geo = layer_of({"input": [n], "layers": [{"type": "tanh"}]})[2]
    y = array("f", bytes(4 * n))
    K.activation_forward(geo, xs, y)
    show("tanh sweep", y, [math.tanh(v) for v in xs])
    show("tanh sweep inputs", xs, xs, True)


check_dense()
check_conv()
check_conv3x3()
for pool, size in (("maxpool", 2), ("maxpool", [3, 2]), ("avgpool", [2, 3])):
    check_pool(pool, size, False)
    check_pool(pool, size, True)
check_activation("relu")
check_activation("tanh")
check_losses()
check_topk()
check_vectors()
check_network_vectors()
check_train_step()
check_residual()
check_errors()
check_math()
