"""Top-P% selection: the k entries of largest magnitude, ties broken by lowest index.

Needs one scratch array of n magnitudes (O(n) extra memory) and an iterative quickselect
(average O(n), no recursion, no full sort). Indices come out in ascending order, ready for the
gap encoding of the codec.

select_top_k runs in the compiled kernels (tmf_kernels.topk_select, the same algorithm and tie
rule) when they are loaded and allowed (device_agent/compat.py), in Python otherwise.
"""

from array import array

from device_agent.compat import native_kernels


def top_k_count(n, percent):
    """How many of n entries Top-P% keeps: ceil(n·P/100), at least 1 when n > 0, at most n."""
    if n <= 0:
        return 0
    k = int(n * percent / 100.0)
    if k * 100.0 < n * percent:
        k += 1
    return max(1, min(n, k))


def kth_largest(values, k, n=None):
    """The k-th largest of the first n (default: all) entries of `values` (an array it may
    reorder), 1 <= k <= n."""
    lo = 0
    hi = (len(values) if n is None else n) - 1
    target = k - 1
    while lo < hi:
        pivot = _median_of_three(values, lo, hi)
        i = lo
        j = hi
        while i <= j:
            while values[i] > pivot:
                i += 1
            while values[j] < pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return values[target]


def _median_of_three(values, lo, hi):
    a = values[lo]
    b = values[(lo + hi) >> 1]
    c = values[hi]
    if a > b:
        a, b = b, a
    if b > c:
        b = c
    return a if a > b else b


def select_top_k(delta, k, scratch=None, n=None, native=None):
    """Indices (array 'I', ascending) of the k entries of delta[:n] with the largest |value|.

    Among entries equal to the k-th magnitude the lowest indices win. `scratch` may be a
    preallocated array('f') of at least n entries to avoid allocating the magnitudes; n defaults
    to len(delta). `native` False keeps it in Python; otherwise the compiled kernels take
    array('f') inputs when they are loaded.
    """
    if n is None:
        n = len(delta)
    if scratch is None:
        scratch = array("f", bytes(4 * n))
    out = array("I", bytes(4 * k))
    kernels = None if native is False else native_kernels()
    if kernels is not None:
        try:
            kernels.topk_select(delta, n, k, scratch, out)
            return out
        except TypeError:  # not float32 arrays: the Python loop below reads any sequence
            pass
    return _select_python(delta, k, scratch, n, out)


def _select_python(delta, k, scratch, n, out):
    for i in range(n):
        v = delta[i]
        scratch[i] = v if v >= 0.0 else -v
    threshold = kth_largest(scratch, k, n)
    above = 0
    for i in range(n):
        if abs(delta[i]) > threshold:
            above += 1
    ties = k - above
    j = 0
    for i in range(n):
        m = abs(delta[i])
        if m > threshold or (m == threshold and ties > 0):
            if m == threshold:
                ties -= 1
            out[j] = i
            j += 1
    return out
