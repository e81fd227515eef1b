"""The default MCU-sized model of each use case, and the round sizes a board bench uses.

Plain dicts, shared by the agent (which has no numpy) and the service's use cases.
"""

OMNIGLOT_IMAGE = 28
KWS_FRAMES = 32
KWS_COEFFS = 13
KWS_CLASSES = 10


def sine_spec():
    """1-32-32-1 ReLU MLP on x/5; the output layer is local."""
    return {
        "input": [1],
        "layers": [
            {"type": "dense", "units": 32},
            {"type": "relu"},
            {"type": "dense", "units": 32},
            {"type": "relu"},
            {"type": "dense", "units": 1},
        ],
        "loss": "mse",
        "grad_clip": 10.0,
        "local_layers": 1,
    }


def omniglot_spec(ways=5):
    """A small CNN on 28x28 strokes: about 2k parameters and 54k MACs for 5 ways."""
    return {
        "input": [1, OMNIGLOT_IMAGE, OMNIGLOT_IMAGE],
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2},
            {"type": "relu"},
            {"type": "conv2d", "filters": 16, "kernel": 3, "stride": 2},
            {"type": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": ways},
        ],
        "loss": "softmax_ce",
        "local_layers": 1,
    }


def kws_spec():
    """A small CNN on [1, 32, 13] MFCC maps: about 1.7k parameters and 58k MACs.

    conv 8@3x3 -> 8x30x11, maxpool 2 -> 8x15x5, conv 12@3x3 -> 12x13x3, maxpool 2 -> 12x6x1,
    dense 10 (12 filters rather than 16 in the second conv keeps it under ~60k MACs).
    """
    return {
        "input": [1, KWS_FRAMES, KWS_COEFFS],
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 1},
            {"type": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "conv2d", "filters": 12, "kernel": 3, "stride": 1},
            {"type": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": KWS_CLASSES},
        ],
        "loss": "softmax_ce",
        "local_layers": 1,
    }


def occupancy_spec():
    """5-16-16-2 ReLU MLP on the standardised sensor channels."""
    return {
        "input": [5],
        "layers": [
            {"type": "dense", "units": 16},
            {"type": "relu"},
            {"type": "dense", "units": 16},
            {"type": "relu"},
            {"type": "dense", "units": 2},
        ],
        "loss": "softmax_ce",
        "local_layers": 1,
    }


SPECS = {
    "sine": sine_spec,
    "omniglot": omniglot_spec,
    "kws": kws_spec,
    "occupancy": occupancy_spec,
}


def spec_for(use_case):
    """The default spec of a use case by name; ValueError lists the known names."""
    if use_case not in SPECS:
        raise ValueError("unknown use case %r; known: %s" % (use_case, ", ".join(SPECS)))
    return SPECS[use_case]()
