"""A planned model with preallocated buffers: forward, loss and one fused batch-1 SGD step.

Memory is fixed when the network is built: one activation buffer per layer that changes the
data (activations and flatten run in place, forward and backward), two gradient buffers each as
long as the gradients it holds (gradient_sizes) and a θ_g-sized buffer for a round's Δ. The
scratch of a round's Top-P% selection is a gradient buffer when one is long enough (they hold
nothing after the steps). A round that does not split θ needs both parameter-sized: they are
made the first time and kept (delta_buffer, scratch). Nothing is allocated per sample and no
parameter-sized block per round, which keeps a microcontroller's heap flat and unfragmented.

The kernels are chosen here, once per Network: the compiled module tmf_kernels when it loads
(device_agent/compat.py native_kernels), else the pure-Python ones of layers.py and losses.py.
`KERNELS` says which one this process can use and `KERNELS_WHY` why not the compiled one;
`Network.kernels` which one a network uses.
"""

from device_agent import codec
from device_agent.compat import layer_geometry, native_kernels, native_status
from device_agent.model import Plan

KERNELS, KERNELS_WHY = native_status()
if KERNELS == "python":  # the Python kernels now, before any network's buffers: no hole later
    from device_agent import layers, losses  # noqa: F401
IN_PLACE = ("relu", "tanh", "flatten")
"""Layers whose forward pass and gradient run in place, in the buffer they receive."""
LOSS_CODES = {"mse": 0, "softmax_ce": 1}
"""Losses as the compiled kernels number them (kernels.h)."""


def zeros(n):
    """n float32 zeros (at least one) allocated once (codec.zeros: no same-size temporary)."""
    return codec.zeros(max(1, n))


def gradient_sizes(plan):
    """Floats each of the two gradient buffers needs: backpropagation from the output down to
    the first parameterised layer, the gradient alternating between the two at every layer that
    does not run in place (the loss gradient, the output's size, starts in the first)."""
    need = [0, 0]
    cur = 0
    first = plan.param_layers[0] if plan.param_layers else 0
    for i in range(len(plan.layers) - 1, first - 1, -1):
        layer = plan.layers[i]
        need[cur] = max(need[cur], layer.size_out())
        if i > first and layer.kind not in IN_PLACE:
            cur = 1 - cur
            need[cur] = max(need[cur], layer.size_in())
    return need[0], need[1]


class Network:
    """Runs a Plan on flat float arrays; parameters live outside, in one array('f').

    `native` None uses the compiled kernels when they load, False never, True insists (an
    ImportError saying why when they do not load).
    """

    def __init__(self, plan, native=None):
        if not isinstance(plan, Plan):
            plan = Plan(plan)
        self.plan = plan
        n_in = plan.layers[0].size_in()
        acts = [zeros(n_in)]
        for i, layer in enumerate(plan.layers):
            if i > 0 and layer.kind in IN_PLACE:
                acts.append(acts[-1])
            else:
                acts.append(zeros(layer.size_out()))
        self.acts = tuple(acts)
        self.in_place = [layer.kind in IN_PLACE for layer in plan.layers]
        need_a, need_b = gradient_sizes(plan)
        self.grad_a = zeros(need_a)
        self.grad_b = zeros(need_b)
        self.delta = zeros(plan.n_global)  # a round's θ_g copy, then its Δ (delta_buffer)
        self._own = None  # Top-P%'s scratch when no gradient buffer is long enough (scratch)
        self._choose_kernels(native)

    def _choose_kernels(self, native):
        """Bind the kernel set: the module's functions take a layer's geometry array, the
        pure-Python ones the Layer itself; both have forward, backward and copy."""
        module = None if native is False else native_kernels()
        if native and module is None:
            raise ImportError("tmf_kernels not usable: %s" % (native_status()[1],))
        self.kernels = "python" if module is None else "native"
        self._k = module
        if module is None:  # imported only here: a board with the compiled ones saves the heap
            from device_agent import layers
            from device_agent.losses import loss_and_grad

            self._loss_and_grad = loss_and_grad
            self._forward = layers.forward
            self._backward = layers.backward
            self._copy = layers.copy
        else:
            self._forward = module.forward
            self._backward = module.backward
            self._copy = module.copy
        self._target = None
        self._net = None  # the compiled train_step's view of this network, when it takes it
        self._step = None  # and that function
        if module is None:
            self._layer_args = self.plan.layers
            return
        # every layer's geometry end to end in one array, each layer's a view of its part
        size = module.GEO_LEN
        planned = self.plan.layers
        geos = codec.zeros(size * len(planned), "i")
        for i in range(len(planned)):
            geo = layer_geometry(planned[i])
            for j in range(size):
                geos[i * size + j] = geo[j]
        view = memoryview(geos)
        self._layer_args = [view[i * size : (i + 1) * size] for i in range(len(planned))]
        if self.plan.loss == "mse":  # targets as float32, the form the module reads
            self._target = zeros(self.plan.output_size)
        if len(planned) <= module.MAX_LAYERS:  # the whole step in one call
            self._step = module.train_step
            self._net = (
                geos,
                self.acts,
                self.grad_a,
                self.grad_b,
                LOSS_CODES[self.plan.loss],
                self._target,
                float(self.plan.grad_clip),
            )
            # an instance attribute in front of the method: the call runs no Python frame
            self.train_step = module.Step(self._net)  # type: ignore[method-assign]

    def delta_buffer(self, n):
        """The buffer of a round's θ_g copy, then its Δ: at least n floats (θ_g's length; every
        parameter in a round that does not split θ, grown then, once, and kept)."""
        if len(self.delta) < n:
            self.delta = None  # the old block can go before the new one is made
            self.delta = zeros(n)
        return self.delta

    def scratch(self, n):
        """n floats for Top-P%'s magnitudes after a round's steps: a gradient buffer when one is
        long enough, else a buffer of the network's own, made when first needed and kept."""
        if len(self.grad_a) >= n:
            return self.grad_a
        if len(self.grad_b) >= n:
            return self.grad_b
        if self._own is None or len(self._own) < n:
            self._own = None
            self._own = zeros(n)
        return self._own

    def forward(self, params, x):
        """Run the model on one sample x (sequence of floats); returns the output buffer."""
        acts = self.acts
        self._copy(acts[0], x, len(acts[0]))
        forward = self._forward
        args = self._layer_args
        for i in range(len(args)):
            forward(args[i], params, acts[i], acts[i + 1])
        return acts[-1]

    def loss(self, params, x, target):
        """Loss of one sample without changing anything (uses the gradient buffer as scratch)."""
        return self._loss_grad(self.forward(params, x), target, self.grad_a, 0.0)

    def train_step(self, params, x, target, lr, first, last=None):
        """One online SGD step on sample (x, target); returns the loss before the step.

        Updates the parameterised layers whose index lies in [first, last] (indices into
        plan.layers; last defaults to the output layer) with learning rate lr; layers above
        `first` that are not updated still pass gradients down. Backpropagation stops at `first`.
        """
        step = self._step
        if step is not None:  # the compiled kernels: the same operations, one call
            return step(self._net, params, x, target, lr, first, last)
        args = self._layer_args
        if last is None:
            last = len(args) - 1
        y = self.forward(params, x)
        dy = self.grad_a
        spare = self.grad_b
        loss = self._loss_grad(y, target, dy, self.plan.grad_clip)
        acts = self.acts
        backward = self._backward
        in_place = self.in_place
        for i in range(len(args) - 1, first - 1, -1):
            if i == first:
                backward(args[i], params, acts[i], acts[i + 1], dy, None, lr if i <= last else 0.0)
                break
            if in_place[i]:  # activations and flatten: the gradient stays in its buffer
                backward(args[i], params, acts[i], acts[i + 1], dy, dy, 0.0)
                continue
            backward(args[i], params, acts[i], acts[i + 1], dy, spare, lr if i <= last else 0.0)
            dy, spare = spare, dy
        return loss

    def _loss_grad(self, y, target, dy, bound):
        """The loss of output y against target, its gradient into dy (clipped at bound > 0)."""
        n = self.plan.output_size
        k = self._k
        if k is None:
            return self._loss_and_grad(self.plan.loss, y, target, n, dy, bound)
        if self._target is None:
            return k.loss_grad(LOSS_CODES["softmax_ce"], y, int(target), n, dy, bound)
        k.copy(self._target, target, n)
        return k.loss_grad(LOSS_CODES["mse"], y, self._target, n, dy, bound)

    def copy_into(self, dst, src, n):
        """dst[:n] = src[:n] with this network's kernels (a round's copy of θ_g)."""
        self._copy(dst, src, n)

    def delta_into(self, params, origin, n, residual=None):
        """origin[:n] = params[:n] − origin[:n] (+ residual[:n]): a round's Δ in place, the
        same float32 operations in either kernel set."""
        if self._k is not None:
            self._k.delta(params, origin, n, residual)
            return
        for i in range(n):
            origin[i] = params[i] - origin[i]
            if residual is not None:
                origin[i] += residual[i]

    def residual_into(self, residual, delta, n, idx, values):
        """Error feedback: residual[:n] = delta[:n], then residual[idx[j]] = delta[idx[j]] −
        values[j] for the sent entries (idx ascending indices below n, values as sent)."""
        if self._k is not None:
            self._k.residual(residual, delta, n, idx, values, len(idx))
            return
        for i in range(n):
            residual[i] = delta[i]
        for j in range(len(idx)):
            residual[idx[j]] = delta[idx[j]] - values[j]
