"""benchlib.py - what the Python benchmarks share: the mapped functions and
the timing habits.

The functions live in a module (not in a benchmark's __main__) so that every
pool's workers import them by reference, as a user's module-level functions
would be; bench/pool_peer.py and bench/peers.py both import them from here.

Timing habits: the caller warms up first where a pool keeps state between
runs; repetitions are summarised as the median with the [min-max] spread
(the machine is shared, so the spread matters as much as the median);
latencies are percentiles over every call.
"""

import os
import signal
import statistics
import time


def square(x):
    return x * x


def spin(us):
    """Pure-Python CPU work: a busy loop on time.perf_counter for us
    microseconds."""
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass
    return us


def normalize(a):
    """(a - mean) / std of a float32 array, in float64, as float32: the
    Python twin of the examples.normalize kernel."""
    a64 = a.astype("float64")
    sd = a64.std()
    return ((a64 - a64.mean()) / sd).astype("float32") if sd > 0 else a * 0


def double(a):
    return a * 2


def noop(x=None):
    return x


def die_on(x, poison=7):
    """x, except that the item equal to poison SIGKILLs its own process."""
    if x == poison:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def timed(fn, reps):
    """Seconds taken by each of reps calls of fn()."""
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def spread(xs):
    """(median, min, max) of a list of figures."""
    return statistics.median(xs), min(xs), max(xs)


def percentile(sorted_xs, q):
    """The q-th percentile (0-100, nearest rank below) of a sorted list."""
    return sorted_xs[min(len(sorted_xs) - 1, len(sorted_xs) * q // 100)]
