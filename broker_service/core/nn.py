"""The agent's model maths, vectorised with numpy: batched forward, backward and SGD.

Same plan, same parameter layout and same formulas as `device_agent.layers` (parity-tested), but
over a batch and in float32 (or float64 for gradient checks). The server uses it to evaluate
meta-initialisations and to simulate many devices fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from device_agent.model import Layer, Plan


@dataclass
class Trace:
    """What backward needs from a forward pass: the input of every layer and the output."""

    inputs: list[np.ndarray]
    output: np.ndarray


class NumpyNet:
    """A Plan run on batches: x has shape (batch, C, H, W) or (batch, n)."""

    def __init__(self, spec_or_plan: dict | Plan, dtype: type = np.float32):
        self.plan = spec_or_plan if isinstance(spec_or_plan, Plan) else Plan(spec_or_plan)
        self.dtype = dtype

    def forward(self, params: np.ndarray, x: np.ndarray) -> Trace:
        """Run the model on a batch; returns the trace (layer inputs and the output)."""
        a = np.asarray(x, dtype=self.dtype).reshape((len(x),) + self.plan.input_shape)
        inputs = []
        for layer in self.plan.layers:
            inputs.append(a)
            a = _forward(layer, params, a)
        return Trace(inputs, a.reshape(len(a), -1))

    def predict(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Network outputs of shape (batch, outputs)."""
        return self.forward(params, x).output

    def loss_and_output_grad(self, out: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample losses (batch,) and dL_i/d out for each sample (not divided by batch)."""
        losses, grad = loss_and_grad(self.plan.loss, out, y)
        bound = self.plan.grad_clip
        return losses, (np.clip(grad, -bound, bound) if bound > 0 else grad)

    def gradient(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, first: int = 0
    ) -> tuple[float, np.ndarray]:
        """Mean loss over the batch and its gradient (flat, like params) for layers >= first.

        Gradients of layers below `first` are left at zero and backpropagation stops there.
        """
        trace = self.forward(params, x)
        losses, dy = self.loss_and_output_grad(trace.output, y)
        dy = dy / len(losses)
        grad = np.zeros_like(params, dtype=self.dtype)
        layers = self.plan.layers
        for i in range(len(layers) - 1, first - 1, -1):
            layer = layers[i]
            need_dx = i > first
            dy = dy.reshape((len(dy),) + layer.out_shape)
            dy = _backward(layer, params, trace.inputs[i], dy, grad, need_dx)
            if dy is None:
                break
        return float(losses.mean()), grad

    def sgd_step(
        self,
        params: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        lr: float,
        first: int,
        last: int | None = None,
    ) -> float:
        """One SGD step in place on layers first..last (indices into plan.layers); returns loss.

        With a batch of one sample this is exactly the agent's `Network.train_step`.
        """
        loss, grad = self.gradient(params, x, y, first)
        lo = self.plan.layers[first].w_off
        hi = self.plan.n_params if last is None else _end_offset(self.plan, last)
        params[lo:hi] -= self.dtype(lr) * grad[lo:hi]
        return loss


def _end_offset(plan: Plan, last: int) -> int:
    end = 0
    for i in plan.param_layers:
        if i <= last:
            layer = plan.layers[i]
            end = layer.w_off + layer.n_params
    return end


def loss_and_grad(kind: str, out: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample losses and output gradients, 'mse' or 'softmax_ce' (as device_agent.losses)."""
    if kind == "mse":
        diff = out - np.asarray(y, dtype=out.dtype).reshape(out.shape)
        n = out.shape[1]
        return (diff * diff).mean(axis=1), diff * out.dtype.type(2.0 / n)
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    z = out - out.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    losses = -np.log(np.maximum(p[rows, labels], 1e-30))
    grad = p.copy()
    grad[rows, labels] -= 1.0
    return losses, grad


def _weights(layer: Layer, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_w = layer.n_params - layer.out_shape[0]
    w = params[layer.w_off : layer.w_off + n_w]
    b = params[layer.b_off : layer.b_off + layer.out_shape[0]]
    if layer.kind == "dense":
        return w.reshape(layer.out_shape[0], layer.size_in()), b
    c = layer.in_shape[0]
    return w.reshape(layer.out_shape[0], c, layer.kh, layer.kw), b


def _windows(layer: Layer, a: np.ndarray) -> np.ndarray:
    """(batch, C, OH, OW, kh, kw) view of the kernel windows at the layer's stride."""
    _, oh, ow = layer.out_shape
    win = sliding_window_view(a, (layer.kh, layer.kw), axis=(2, 3))
    return win[:, :, : oh * layer.sh : layer.sh, : ow * layer.sw : layer.sw]


def _columns(layer: Layer, a: np.ndarray) -> np.ndarray:
    """The kernel windows as rows (im2col): shape (batch · OH · OW, C · kh · kw), so that a
    convolution is one matrix product (faster than einsum on the small batches used here)."""
    win = _windows(layer, a).transpose(0, 2, 3, 1, 4, 5)
    return win.reshape(-1, a.shape[1] * layer.kh * layer.kw)


def _pool_blocks(layer: Layer, a: np.ndarray) -> np.ndarray:
    """(batch, C, OH, kh, OW, kw) view of a pooling layer's non-overlapping blocks (the pool's
    stride is its size; rows and columns past the last whole block are dropped)."""
    b, c = a.shape[:2]
    _, oh, ow = layer.out_shape
    return a[:, :, : oh * layer.kh, : ow * layer.kw].reshape(b, c, oh, layer.kh, ow, layer.kw)


def _forward(layer: Layer, params: np.ndarray, a: np.ndarray) -> np.ndarray:
    kind = layer.kind
    if kind == "dense":
        w, b = _weights(layer, params)
        return a.reshape(len(a), -1) @ w.T + b
    if kind == "conv2d":
        w, b = _weights(layer, params)
        _, oh, ow = layer.out_shape
        out = _columns(layer, a) @ w.reshape(len(w), -1).T + b
        return out.reshape(len(a), oh, ow, len(w)).transpose(0, 3, 1, 2)
    if kind in ("maxpool", "avgpool"):
        win = _pool_blocks(layer, a)
        return win.max(axis=(3, 5)) if kind == "maxpool" else win.mean(axis=(3, 5))
    if kind == "relu":
        return np.maximum(a, 0)
    if kind == "tanh":
        return np.tanh(a)
    return a.reshape((len(a),) + layer.out_shape)


def _backward(
    layer: Layer, params: np.ndarray, a: np.ndarray, dy: np.ndarray, grad: np.ndarray, need_dx: bool
) -> np.ndarray | None:
    """Accumulate this layer's parameter gradient into grad; return dL/d input (or None)."""
    kind = layer.kind
    if kind == "dense":
        return _dense_backward(layer, params, a, dy, grad, need_dx)
    if kind == "conv2d":
        return _conv_backward(layer, params, a, dy, grad, need_dx)
    if not need_dx:
        return None
    a = a.reshape(dy.shape) if kind in ("relu", "tanh") else a
    if kind == "relu":
        return dy * (a > 0)
    if kind == "tanh":
        t = np.tanh(a)
        return dy * (1 - t * t)
    if kind in ("maxpool", "avgpool"):
        return _pool_backward(layer, a, dy)
    return dy.reshape(a.shape)


def _dense_backward(layer, params, a, dy, grad, need_dx):
    w, _ = _weights(layer, params)
    flat = a.reshape(len(a), -1)
    g = dy.reshape(len(dy), -1)
    n_w = w.size
    grad[layer.w_off : layer.w_off + n_w] += (g.T @ flat).reshape(-1)
    grad[layer.b_off : layer.b_off + layer.out_shape[0]] += g.sum(axis=0)
    return (g @ w).reshape(a.shape) if need_dx else None


def _conv_backward(layer, params, a, dy, grad, need_dx):
    w, _ = _weights(layer, params)
    f = len(w)
    rows = dy.transpose(0, 2, 3, 1).reshape(-1, f)
    n_w = w.size
    grad[layer.w_off : layer.w_off + n_w] += (rows.T @ _columns(layer, a)).reshape(-1)
    grad[layer.b_off : layer.b_off + layer.out_shape[0]] += rows.sum(axis=0)
    if not need_dx:
        return None
    _, oh, ow = layer.out_shape
    dcols = (rows @ w.reshape(f, -1)).reshape(len(a), oh, ow, a.shape[1], layer.kh, layer.kw)
    dx = np.zeros_like(a)
    for ky in range(layer.kh):
        for kx in range(layer.kw):
            dx[:, :, ky : ky + oh * layer.sh : layer.sh, kx : kx + ow * layer.sw : layer.sw] += (
                dcols[:, :, :, :, ky, kx].transpose(0, 3, 1, 2)
            )
    return dx


def _pool_backward(layer: Layer, a: np.ndarray, dy: np.ndarray) -> np.ndarray:
    b, c = a.shape[:2]
    _, oh, ow = layer.out_shape
    ph, pw = layer.kh, layer.kw
    dx = np.zeros_like(a)
    grad = dy[:, :, :, None, :, None]
    if layer.kind == "avgpool":
        spread = np.broadcast_to(grad / (ph * pw), (b, c, oh, ph, ow, pw))
    else:
        blocks = _pool_blocks(layer, a).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, oh, ow, ph * pw)
        first = blocks.argmax(axis=-1)  # the first maximum takes the gradient, as on the device
        onehot = first[..., None] == np.arange(ph * pw)
        spread = (onehot * dy[..., None]).reshape(b, c, oh, ow, ph, pw).transpose(0, 1, 2, 4, 3, 5)
    dx[:, :, : oh * ph, : ow * pw] = spread.reshape(b, c, oh * ph, ow * pw)
    return dx
