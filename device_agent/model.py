"""Model specs: from a small JSON-able description to a layer plan with shapes, offsets and costs.

A spec looks like::

    {"input": [1, 28, 28],
     "layers": [{"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2}, {"type": "relu"},
                {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 5}],
     "loss": "softmax_ce", "local_layers": 1}

Activations are flat float arrays in CHW order; a vector of n features is the shape (n, 1, 1).
All parameters live in one flat array: each parameterised layer owns a weight block then a bias
block. An optional "grad_clip" bounds each output gradient of batch-1 SGD (0 = off), which
keeps online training stable on outliers. The last `local_layers` parameterised layers form θ_l
(reconstructed on the device, never sent); the rest, a prefix of the flat array, is θ_g
(meta-learned and shared).

This module is shared by the MicroPython agent and the CPython service, so it uses only what
MicroPython has.
"""

import math

from device_agent.rng import XorShift32

LAYER_TYPES = ("dense", "conv2d", "maxpool", "avgpool", "flatten", "relu", "tanh")
LOSSES = ("mse", "softmax_ce")


class SpecError(ValueError):
    """A model spec that cannot be built; the message says which layer and why."""


class Layer:
    """One planned layer: type, input/output shapes (c, h, w), parameter offsets and MACs."""

    def __init__(self, kind, in_shape, out_shape):
        self.kind = kind
        self.in_shape = in_shape
        self.out_shape = out_shape
        self.w_off = 0
        self.b_off = 0
        self.n_params = 0
        self.kh = 1
        self.kw = 1
        self.sh = 1
        self.sw = 1
        self.macs = 0

    def size_in(self):
        """Number of input activations."""
        c, h, w = self.in_shape
        return c * h * w

    def size_out(self):
        """Number of output activations."""
        c, h, w = self.out_shape
        return c * h * w


class Plan:
    """A built model: its layers, parameter count, global/local split, loss and input shape."""

    def __init__(self, spec):
        _check_spec(spec)
        self.spec = spec
        self.loss = spec.get("loss", "mse")
        self.grad_clip = float(spec.get("grad_clip", 0.0))
        self.input_shape = _as_shape(spec["input"])
        self.layers = []
        shape = self.input_shape
        offset = 0
        for i, desc in enumerate(spec["layers"]):
            layer = _plan_layer(i, desc, shape)
            if layer.n_params:
                layer.w_off = offset
                layer.b_off = offset + layer.n_params - layer.out_shape[0]
                offset += layer.n_params
            self.layers.append(layer)
            shape = layer.out_shape
        self.n_params = offset
        self.output_size = shape[0] * shape[1] * shape[2]
        param_layers = [i for i, lay in enumerate(self.layers) if lay.n_params]
        n_local = int(spec.get("local_layers", 1))
        if n_local < 0 or n_local > len(param_layers):
            raise SpecError(
                "local_layers=%d but the model has %d parameterised layers"
                % (n_local, len(param_layers))
            )
        self.param_layers = param_layers
        self.local_layers = param_layers[len(param_layers) - n_local :] if n_local else []
        if self.local_layers:
            self.n_global = self.layers[self.local_layers[0]].w_off
        else:
            self.n_global = self.n_params

    def n_local(self):
        """Number of parameters in θ_l."""
        return self.n_params - self.n_global

    def max_activation(self):
        """Largest activation buffer the model needs (input included), in floats."""
        best = self.layers[0].size_in() if self.layers else 0
        for layer in self.layers:
            if layer.size_out() > best:
                best = layer.size_out()
        return best

    def forward_macs(self):
        """Multiply-accumulates of one forward pass."""
        total = 0
        for layer in self.layers:
            total += layer.macs
        return total

    def train_step_macs(self, first_trained, last_trained=None):
        """MACs of one batch-1 SGD step that updates param layers first_trained..last_trained.

        Counts the forward pass, the weight gradients of the trained layers and the input
        gradients of every parameterised layer above the lowest trained one (backpropagation
        stops there). Layer indices are positions in `self.layers`.
        """
        if last_trained is None:
            last_trained = len(self.layers) - 1
        total = self.forward_macs()
        for i in range(first_trained, len(self.layers)):
            layer = self.layers[i]
            if not layer.n_params:
                continue
            if i <= last_trained:
                total += layer.macs
            if i > first_trained:
                total += layer.macs
        return total


def _check_spec(spec):
    if not isinstance(spec, dict):
        raise SpecError("a model spec is a dict with 'input' and 'layers'")
    for key in ("input", "layers"):
        if key not in spec:
            raise SpecError("model spec is missing '%s'" % key)
    if spec.get("loss", "mse") not in LOSSES:
        raise SpecError("unknown loss %r; expected one of %s" % (spec.get("loss"), LOSSES))
    if not spec["layers"]:
        raise SpecError("model spec has no layers")


def _as_shape(dims):
    dims = [int(d) for d in dims]
    if len(dims) == 1:
        return (dims[0], 1, 1)
    if len(dims) == 3:
        return (dims[0], dims[1], dims[2])
    raise SpecError("input must be [n] or [channels, height, width], got %r" % (dims,))


def _pair(value, name, index):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError("layer %d: %s must be an int or a pair" % (index, name))
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _plan_layer(i, desc, shape):
    kind = desc.get("type") if isinstance(desc, dict) else None
    if kind not in LAYER_TYPES:
        raise SpecError("layer %d: unknown type %r; supported: %s" % (i, kind, LAYER_TYPES))
    c, h, w = shape
    if kind in ("relu", "tanh"):
        return Layer(kind, shape, shape)
    if kind == "flatten":
        return Layer(kind, shape, (c * h * w, 1, 1))
    if kind == "dense":
        units = int(desc.get("units", 0))
        if units < 1:
            raise SpecError("layer %d: dense needs units >= 1" % i)
        n_in = c * h * w
        layer = Layer(kind, shape, (units, 1, 1))
        layer.n_params = units * n_in + units
        layer.macs = units * n_in
        return layer
    if kind == "conv2d":
        return _plan_conv(i, desc, shape)
    return _plan_pool(i, kind, desc, shape)


def _plan_conv(i, desc, shape):
    c, h, w = shape
    filters = int(desc.get("filters", 0))
    kh, kw = _pair(desc.get("kernel", 3), "kernel", i)
    sh, sw = _pair(desc.get("stride", 1), "stride", i)
    if filters < 1 or kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise SpecError("layer %d: conv2d needs filters, kernel and stride >= 1" % i)
    if kh > h or kw > w:
        raise SpecError("layer %d: kernel %dx%d larger than input %dx%d" % (i, kh, kw, h, w))
    oh = (h - kh) // sh + 1
    ow = (w - kw) // sw + 1
    layer = Layer("conv2d", shape, (filters, oh, ow))
    layer.kh, layer.kw, layer.sh, layer.sw = kh, kw, sh, sw
    layer.n_params = filters * c * kh * kw + filters
    layer.macs = filters * oh * ow * c * kh * kw
    return layer


def _plan_pool(i, kind, desc, shape):
    c, h, w = shape
    ph, pw = _pair(desc.get("size", 2), "size", i)
    if ph < 1 or pw < 1 or ph > h or pw > w:
        raise SpecError("layer %d: pool size %dx%d does not fit input %dx%d" % (i, ph, pw, h, w))
    layer = Layer(kind, shape, (c, h // ph, w // pw))
    layer.kh, layer.kw, layer.sh, layer.sw = ph, pw, ph, pw
    return layer


def fan_in_out(layer):
    """(inputs feeding one output unit, outputs fed by one input unit) of dense or conv2d."""
    if layer.kind == "dense":
        return layer.size_in(), layer.out_shape[0]
    taps = layer.kh * layer.kw
    return layer.in_shape[0] * taps, layer.out_shape[0] * taps


def init_layer(params, layer, rng, zero=False):
    """Fill one layer's parameters: Glorot-uniform weights (or zeros) and zero biases.

    Uses the shared xorshift32 generator so that the agent and the service draw the very same
    initial weights from the same seed.
    """
    n_w = layer.n_params - layer.out_shape[0]
    fan_in, fan_out = fan_in_out(layer)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    for j in range(n_w):
        params[layer.w_off + j] = 0.0 if zero else (2.0 * rng.uniform() - 1.0) * limit
    for j in range(layer.out_shape[0]):
        params[layer.b_off + j] = 0.0


def init_params(plan, params, seed, first=0):
    """Initialise every parameterised layer at index >= `first` from `seed` (deterministic)."""
    rng = XorShift32(seed)
    for i in plan.param_layers:
        if i >= first:
            init_layer(params, plan.layers[i], rng)
