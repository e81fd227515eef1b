"""Where a device's samples come from: any iterator of (x, y); two are provided here.

x is a sequence of floats of the model's input size, y a class index (int) or a sequence of float
targets. A round uses each sample once and drops it; both sources below reuse one input array, so
a consumer must not keep x past the next sample.

- FileSource: a sample file on flash, replayed in a loop (or once). One sample a line, plain text:
  `y,x1,x2,...,xn` for classification (y an integer class) or `t1;..;tm,x1,...,xn` for regression
  (targets separated by ';'); blank lines and lines starting with '#' are skipped.
  `write_sample_file` writes it.
- SyntheticSource: deterministic random samples of a plan's shapes, for benchmarks and demos
  without a sensor.

A sensor on a board is a small class of its own with `__iter__` and `__next__`.
"""

from device_agent.codec import zeros


class FileSource:
    """Streams the documented text format from a file, one line at a time, looping at the end
    (or stopping there with loop=False)."""

    def __init__(self, path, n_inputs, classification=True, loop=True):
        self.path = path
        self.loop = loop
        self.n_inputs = n_inputs
        self.classification = classification
        self.x = zeros(n_inputs)
        self.f = None
        self.line_no = 0

    def __iter__(self):
        return self

    def __next__(self):
        for _ in range(2 if self.loop else 1):
            line = self._next_line()
            if line is not None:
                return self._parse(line)
        raise StopIteration

    def _next_line(self):
        if self.f is None:
            self.f = open(self.path)
            self.line_no = 0
        while True:
            line = self.f.readline()
            if not line:
                self.f.close()
                self.f = None
                return None
            self.line_no += 1
            line = line.strip()
            if line and not line.startswith("#"):
                return line

    def _parse(self, line):
        parts = line.split(",")
        if len(parts) != self.n_inputs + 1:
            raise ValueError(
                "%s:%d: expected %d inputs, got %d"
                % (self.path, self.line_no, self.n_inputs, len(parts) - 1)
            )
        for i in range(self.n_inputs):
            self.x[i] = float(parts[i + 1])
        if self.classification:
            return self.x, int(parts[0])
        return self.x, [float(t) for t in parts[0].split(";")]


def write_sample_file(path, xs, ys, classification=True):
    """Write samples in FileSource's format (used by simulations, tests and bundling)."""
    with open(path, "w") as f:
        for x, y in zip(xs, ys):
            if classification:
                head = str(int(y))
            else:
                head = ";".join(repr(float(t)) for t in y)
            f.write(head + "," + ",".join(repr(float(v)) for v in x) + "\n")


def make_source(cfg, plan):
    """The data source a config asks for (`data`): a sample file, or synthetic samples."""
    data = cfg["data"] or {}
    if data.get("kind") == "file":
        return FileSource(data["path"], plan.layers[0].size_in(), plan.loss == "softmax_ce")
    return SyntheticSource(plan, int(data.get("seed", 1)))


class SyntheticSource:
    """Deterministic random samples of a plan's shapes (benchmarks, demos without a sensor)."""

    def __init__(self, plan, seed=1):
        from device_agent.rng import XorShift32

        self.plan = plan
        self.rng = XorShift32(seed)
        self.x = zeros(plan.layers[0].size_in())
        self.target = zeros(plan.output_size)

    def __iter__(self):
        return self

    def __next__(self):
        for i in range(len(self.x)):
            self.x[i] = 2.0 * self.rng.uniform() - 1.0
        if self.plan.loss != "mse":
            return self.x, self.rng.below(self.plan.output_size)
        for i in range(len(self.target)):
            self.target[i] = 2.0 * self.rng.uniform() - 1.0
        return self.x, self.target
