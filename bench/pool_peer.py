"""pool_peer.py - the pool_bench workloads on Python's multiprocessing.Pool.

Run by build/bench/pool_bench (or by hand) with /usr/bin/python3, which has
numpy.  Prints one line per measurement, `name median min max` in seconds
(latencies: `name p50_us p99_us -`), so that pool_bench can put the figures
beside its own:

    python3 bench/pool_peer.py [--workers N] [--reps N] [--quick]
"""

import argparse
import multiprocessing as mp
import os
import sys
import time

from benchlib import (noop, normalize, percentile, spin, spread, square,
                      timed)


def report(name, ts):
    print("%s %.9f %.9f %.9f" % ((name,) + spread(ts)), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    w, reps = args.workers, args.reps
    n_square = 100000 if args.quick else 1000000
    n_spin = 100 if args.quick else 400
    n_arrays = 8 if args.quick else 32
    n_rt = 500 if args.quick else 2000

    ctx = mp.get_context("fork")
    report("startup", timed(lambda: ctx.Pool(w).terminate(), max(reps, 5)))

    with ctx.Pool(w) as pool:
        pool.map(noop, range(w * 4))  # every worker up
        items = list(range(n_square))
        report("square_map", timed(lambda: pool.map(square, items), reps))

        report("spin_serial", timed(lambda: [spin(5000) for _ in range(n_spin)],
                                    1))
        report("spin_map", timed(lambda: pool.map(spin, [5000] * n_spin,
                                                  chunksize=1), reps))
        try:
            import numpy as np
        except ImportError:
            np = None
        if np is not None:
            rng = np.random.default_rng(1)
            arrays = [rng.standard_normal(2 << 20).astype(np.float32)
                      for _ in range(n_arrays)]
            report("normalize_serial",
                   timed(lambda: [normalize(a) for a in arrays], 1))
            report("normalize_map",
                   timed(lambda: pool.map(normalize, arrays, chunksize=1), reps))

        lat = []
        for i in range(n_rt):
            t0 = time.perf_counter()
            pool.apply(square, (i,))
            lat.append(time.perf_counter() - t0)
        lat.sort()
        print("apply_rt %.3f %.3f -" % (percentile(lat, 50) * 1e6,
                                        percentile(lat, 99) * 1e6),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
