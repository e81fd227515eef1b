"""Losses and their gradients with respect to the network output (batch size 1)."""

import math


def mse(y, target, n, dy):
    """Mean squared error over the n outputs; writes dL/dy into dy and returns the loss."""
    total = 0.0
    for i in range(n):
        d = y[i] - target[i]
        total += d * d
        dy[i] = 2.0 * d / n
    return total / n


def softmax_cross_entropy(y, label, n, dy):
    """Softmax cross-entropy of logits y against class `label`; dy = softmax(y) − onehot."""
    top = y[0]
    for i in range(1, n):
        if y[i] > top:
            top = y[i]
    z = 0.0
    for i in range(n):
        e = math.exp(y[i] - top)
        dy[i] = e
        z += e
    for i in range(n):
        dy[i] /= z
    p = dy[label]
    dy[label] -= 1.0
    return -math.log(p) if p > 1e-30 else 69.0


def clip(dy, n, bound):
    """Clip each output gradient to [-bound, bound] (Huber-style bound on one sample's pull)."""
    for i in range(n):
        g = dy[i]
        if g > bound:
            dy[i] = bound
        elif g < -bound:
            dy[i] = -bound


def loss_and_grad(kind, y, target, n, dy, bound=0.0):
    """Dispatch on the spec's loss name; `bound` > 0 clips the output gradient (spec grad_clip)."""
    if kind != "mse":
        return _clipped(softmax_cross_entropy(y, int(target), n, dy), dy, n, bound)
    return _clipped(mse(y, target, n, dy), dy, n, bound)


def _clipped(loss, dy, n, bound):
    if bound > 0.0:
        clip(dy, n, bound)
    return loss
