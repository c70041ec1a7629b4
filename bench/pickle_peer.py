"""pickle_peer.py - the CPython side of bench/pickle_bench.c.

Run by pickle_bench (fork/exec of $PYTHON) as
    pickle_peer.py --dir DIR --reps N [--quick]
For each benchmark payload it builds the object with CPython, writes its
protocol-5 pickle to DIR/<i>.pkl (and, for out-of-band payloads, the buffers
to DIR/<i>.buf<k>), times pickle.loads and pickle.dumps over N repetitions
after one warm-up, and prints one tab-separated line per payload on stdout:

    name  plain  nbuffers  loads_ms,...  dumps_ms,...

`plain` is 1 when the C encoder must reproduce CPython's bytes exactly.  The
garbage collector is off while timing (as in timeit); the result of each
pickle.loads is dropped outside the timed region.
"""

import argparse
import gc
import os
import pickle
import sys
import time


def payloads(quick):
    n = 100_000 if quick else 1_000_000
    mib = 8 if quick else 100
    label = "%dk" % (n // 1000) if n < 1_000_000 else "%dM" % (n // 1_000_000)
    # name, builder, plain, out-of-band
    yield ("%s ints" % label,
           lambda: [(i * 2654435761) % 2**32 - 2**31 for i in range(n)], True, False)
    yield ("%s floats" % label, lambda: [i * 0.37 + 0.1 for i in range(n)], True, False)
    yield ("%s short str" % label, lambda: ["s%07d" % i for i in range(n)], True, False)
    yield ("dict %s str->int" % label,
           lambda: {"k%07d" % i: i for i in range(n)}, True, False)
    yield ("%s (int,float,str)" % label,
           lambda: [(i, i * 0.5, "t%d" % i) for i in range(n)], True, False)
    try:
        import numpy as np
    except ImportError:
        print("pickle_peer: numpy missing, array payloads skipped", file=sys.stderr)
        return
    count = mib * (1 << 20) // 8
    yield ("f64 %d MiB in band" % mib,
           lambda: np.arange(count, dtype="f8"), False, False)
    yield ("f64 %d MiB out of band" % mib,
           lambda: np.arange(count, dtype="f8"), False, True)
    yield ("f64 1 KiB out of band", lambda: np.arange(128, dtype="f8"), False, True)


def timed(fn, reps):
    out = []
    fn()  # warm-up
    for _ in range(reps):
        t0 = time.perf_counter()
        r = fn()
        t1 = time.perf_counter()
        del r
        out.append((t1 - t0) * 1e3)
    return out


def run_one(args, i, name, build, plain, oob):
    obj = build()
    bufs = []
    if oob:
        data = pickle.dumps(obj, 5, buffer_callback=bufs.append)
        raw = [bytearray(b.raw()) for b in bufs]
    else:
        data = pickle.dumps(obj, 5)
        raw = []
    with open(os.path.join(args.dir, "%d.pkl" % i), "wb") as f:
        f.write(data)
    for k, b in enumerate(raw):
        with open(os.path.join(args.dir, "%d.buf%d" % (i, k)), "wb") as f:
            f.write(b)
    del bufs

    def dump_oob():
        sink = []
        return pickle.dumps(obj, 5, buffer_callback=sink.append)

    gc.collect()
    gc.disable()
    try:
        if oob:
            loads = timed(lambda: pickle.loads(data, buffers=raw), args.reps)
            dumps = timed(dump_oob, args.reps)
        else:
            loads = timed(lambda: pickle.loads(data), args.reps)
            dumps = timed(lambda: pickle.dumps(obj, 5), args.reps)
    finally:
        gc.enable()
    print("\t".join([
        name, "1" if plain else "0", str(len(raw)),
        ",".join("%.6f" % t for t in loads),
        ",".join("%.6f" % t for t in dumps),
    ]), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    for i, payload in enumerate(payloads(args.quick)):
        run_one(args, i, *payload)
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
