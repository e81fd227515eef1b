"""A tiny deterministic PRNG (xorshift32) that gives identical streams on MicroPython and CPython.

Used for weight initialisation and sample order, so that a simulated device and a real board
started from the same seed do the same arithmetic.
"""


class XorShift32:
    """Marsaglia's xorshift32; `uniform()` returns floats in [0, 1) with 24 bits of precision."""

    def __init__(self, seed):
        self.state = (int(seed) * 2654435761 + 1) & 0xFFFFFFFF or 0x9E3779B9
        for _ in range(4):
            self.next_u32()

    def next_u32(self):
        """Advance and return the next 32-bit unsigned integer."""
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def uniform(self):
        """A float in [0, 1), exactly representable in float32."""
        return (self.next_u32() >> 8) / 16777216.0

    def below(self, n):
        """An integer in [0, n)."""
        return self.next_u32() % n
