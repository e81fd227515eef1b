"""A planned model with preallocated buffers: forward, loss and one fused batch-1 SGD step.

Memory is fixed when the network is built: one activation buffer per layer that changes the
data (activations and flatten run in place), two gradient buffers of the largest activation, and
two parameter-sized buffers for a round's Δ and its Top-P% selection. Nothing is allocated per
sample and no parameter-sized block per round, which keeps a microcontroller's heap flat and
unfragmented.
"""

from array import array

from device_agent import layers as L
from device_agent.losses import loss_and_grad
from device_agent.model import Plan


class Network:
    """Runs a Plan on flat float arrays; parameters live outside, in one array('f')."""

    def __init__(self, plan):
        if not isinstance(plan, Plan):
            plan = Plan(plan)
        self.plan = plan
        n_in = plan.layers[0].size_in()
        self.acts = [array("f", bytes(4 * n_in))]
        for i, layer in enumerate(plan.layers):
            if i > 0 and layer.kind in ("relu", "tanh", "flatten"):
                self.acts.append(self.acts[-1])
            else:
                self.acts.append(array("f", bytes(4 * layer.size_out())))
        size = plan.max_activation()
        self.grad_a = array("f", bytes(4 * size))
        self.grad_b = array("f", bytes(4 * size))
        self.delta = array("f", bytes(4 * plan.n_params))  # a round's θ_g copy, then its Δ
        self.magnitudes = array("f", bytes(4 * plan.n_params))  # |Δ|, reordered by Top-P%

    def forward(self, params, x):
        """Run the model on one sample x (sequence of floats); returns the output buffer."""
        buf = self.acts[0]
        for i in range(len(buf)):
            buf[i] = x[i]
        for i, layer in enumerate(self.plan.layers):
            src = self.acts[i]
            dst = self.acts[i + 1]
            kind = layer.kind
            if kind == "dense":
                L.dense_forward(layer, params, src, dst)
            elif kind == "conv2d":
                L.conv2d_forward(layer, params, src, dst)
            elif kind in ("maxpool", "avgpool"):
                L.pool_forward(layer, src, dst)
            elif kind in ("relu", "tanh"):
                L.activation_forward(kind, src, dst, layer.size_out())
        return self.acts[-1]

    def loss(self, params, x, target):
        """Loss of one sample without changing anything (uses the gradient buffer as scratch)."""
        y = self.forward(params, x)
        return loss_and_grad(self.plan.loss, y, target, self.plan.output_size, self.grad_a)

    def train_step(self, params, x, target, lr, first, last=None):
        """One online SGD step on sample (x, target); returns the loss before the step.

        Updates the parameterised layers whose index lies in [first, last] (indices into
        plan.layers; last defaults to the output layer) with learning rate lr; layers above
        `first` that are not updated still pass gradients down. Backpropagation stops at `first`.
        """
        layers = self.plan.layers
        if last is None:
            last = len(layers) - 1
        y = self.forward(params, x)
        dy = self.grad_a
        spare = self.grad_b
        loss = loss_and_grad(
            self.plan.loss, y, target, self.plan.output_size, dy, self.plan.grad_clip
        )
        for i in range(len(layers) - 1, first - 1, -1):
            layer = layers[i]
            dx = spare if i > first else None
            self._backward_layer(i, layer, params, dy, dx, lr if i <= last else 0.0)
            if dx is None:
                break
            dy, spare = dx, dy
        return loss

    def _backward_layer(self, i, layer, params, dy, dx, lr):
        kind = layer.kind
        x = self.acts[i]
        if kind == "dense":
            L.dense_backward(layer, params, x, dy, dx, lr)
        elif kind == "conv2d":
            L.conv2d_backward(layer, params, x, dy, dx, lr)
        elif dx is None:
            return
        elif kind in ("maxpool", "avgpool"):
            L.pool_backward(layer, x, dy, dx)
        elif kind in ("relu", "tanh"):
            L.activation_backward(kind, self.acts[i + 1], dy, dx, layer.size_out())
        else:
            for j in range(layer.size_out()):
                dx[j] = dy[j]
