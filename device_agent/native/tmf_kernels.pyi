"""Type stub of the compiled kernels (tmf_kernels.c): float buffers are array('f'), a layer's
geometry the array('i') of device_agent.layers.layer_geometry."""

from array import array
from collections.abc import Sequence

API: int
GEO_LEN: int
MAX_LAYERS: int

def forward(geo: array[int], p: array[float] | None, x: array[float], y: array[float]) -> None: ...
def backward(
    geo: array[int],
    p: array[float] | None,
    x: array[float],
    y: array[float],
    dy: array[float],
    dx: array[float] | None,
    lr: float,
) -> None: ...
def dense_forward(geo: array[int], p: array[float], x: array[float], y: array[float]) -> None: ...
def dense_backward(
    geo: array[int],
    p: array[float],
    x: array[float],
    dy: array[float],
    dx: array[float] | None,
    lr: float,
) -> None: ...
def conv2d_forward(geo: array[int], p: array[float], x: array[float], y: array[float]) -> None: ...
def conv2d_backward(
    geo: array[int],
    p: array[float],
    x: array[float],
    dy: array[float],
    dx: array[float] | None,
    lr: float,
) -> None: ...
def conv2d_input_grad(
    geo: array[int], p: array[float], dy: array[float], dx: array[float]
) -> None: ...
def conv2d_sgd(
    geo: array[int], p: array[float], x: array[float], dy: array[float], lr: float
) -> None: ...
def pool_forward(geo: array[int], x: array[float], y: array[float]) -> None: ...
def pool_backward(geo: array[int], x: array[float], dy: array[float], dx: array[float]) -> None: ...
def activation_forward(geo: array[int], x: array[float], y: array[float]) -> None: ...
def activation_backward(
    geo: array[int], y: array[float], dy: array[float], dx: array[float]
) -> None: ...
def mse(y: array[float], target: array[float], n: int, dy: array[float]) -> float: ...
def softmax_cross_entropy(y: array[float], label: int, n: int, dy: array[float]) -> float: ...
def clip(dy: array[float], n: int, bound: float) -> None: ...
def loss_grad(
    kind: int, y: array[float], target: array[float] | int, n: int, dy: array[float], bound: float
) -> float: ...
def kth_largest(values: array[float], k: int, n: int) -> float: ...
def topk_select(
    delta: array[float], n: int, k: int, scratch: array[float], out: array[int]
) -> int: ...
def delta(
    params: array[float], origin: array[float], n: int, residual: array[float] | None
) -> None: ...
def copy(dst: array[float], src: array[float] | Sequence[float], n: int) -> None: ...
def residual(
    residual: array[float],
    delta: array[float],
    n: int,
    idx: array[int],
    values: array[float],
    k: int,
) -> None: ...

Net = tuple[
    array[int],
    tuple[array[float], ...],
    array[float],
    array[float],
    int,
    array[float] | None,
    float,
]
"""What a Network hands train_step: its layers' geometries end to end, its activation buffers,
its two gradient buffers, the loss code, the MSE target buffer (None for cross-entropy) and the
clip bound."""

def train_step(
    net: Net,
    p: array[float],
    x: array[float] | Sequence[float],
    target: Sequence[float] | int,
    lr: float,
    first: int,
    last: int | None,
) -> float: ...

class Step:
    """train_step with its `net` bound: Step(net)(p, x, target, lr, first[, last])."""

    def __init__(self, net: Net) -> None: ...
    def __call__(
        self,
        p: array[float],
        x: array[float] | Sequence[float],
        target: Sequence[float] | int,
        lr: float,
        first: int,
        last: int | None = None,
    ) -> float: ...
