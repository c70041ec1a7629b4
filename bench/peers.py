"""peers.py - picklepool.Pool beside the Python pools people use today, on
the same workloads, in the same run:

    /usr/bin/python3 bench/peers.py [--reps N] [--workers N] [--quick]
                                    [--only W1,W3,...]

Peers: picklepool.Pool, multiprocessing.Pool (fork),
concurrent.futures.ProcessPoolExecutor, multiprocess.Pool (pathos's engine),
joblib.Parallel (loky) and a serial loop.  Workloads (--only takes their
names; "start" is the start-up row):

  start  a fresh pool and its first tiny map, seconds (3x the repetitions)
  W1     map(square, range(1M)) with each pool's default chunksize, items/s
  W2     400 items of 5 ms pure-Python CPU: serial time / (workers x wall)
  W3     32 x 8 MiB float64 arrays through `a * 2`, MB/s; and 32 x 8 MiB
         float32 arrays through examples.normalize as a native kernel
         (picklepool.native) against the Python normalize on the peers;
         each again with picklepool mapping the same arrays from its
         shared heap (picklepool.asarray, before timing: no copy in), next
         to the peers' plain-array figures, with the bytes copied per item
  W4     sequential apply round trips, p50 and p99 in microseconds
  W5     a worker SIGKILLed mid-map: what each pool does (a child process
         per peer, killed with its process group past a time limit)
  W6     map(lambda x: x + 1, range(1000)): does it work

Every pool is created once (after the start-up row) and warmed up; the
repetitions take turns between peers (round robin, in a rotating order), so
that a noisy moment of this shared machine falls on all of them alike.
Each figure is the median with [min-max] over the repetitions; a ratio is
the peer's time over picklepool's (higher: picklepool is faster).  A peer
that fails or passes its time limit shows that in its cell and the run
goes on.  PYTHONPATH gets this tree's python/ (and bench/) in front, and
PICKLEPOOL_LIB is the tree's build/libpicklepool.so unless already set:
run `make` first.
"""

import argparse
import os
import platform
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _set_paths():
    front = [os.path.join(ROOT, "python"), HERE]
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(front + ([old] if old else []))
    os.environ.setdefault("PICKLEPOOL_LIB",
                          os.path.join(ROOT, "build", "libpicklepool.so"))
    for p in reversed(front):
        if p not in sys.path:
            sys.path.insert(0, p)


_set_paths()

from benchlib import (die_on, double, normalize,  # noqa: E402
                      percentile, spin, spread, square)

MIB = 1 << 20


# ---- the peers -------------------------------------------------------------
#
# Each peer opens a pool of w workers and calls it as a user would: map with
# the default chunksize, apply (or its nearest equivalent), close.  outcomes()
# yields ("ok", value) or ("err", exception) per item as the pool delivers
# them, for W5.


class Peer:
    name = label = ""
    note = ""  # how this peer is called, where a user has choices
    w1_share = 1  # W1 runs on n // w1_share items (see FuturesPeer)

    def open(self, w):
        raise NotImplementedError

    def map(self, h, f, items):
        return h.map(f, items)

    def apply(self, h, f, x):
        return h.apply(f, (x,))

    def lazy(self, h, f, items):
        """The pool's own iterator of results, one item at a time."""
        return h.imap(f, items)

    def outcomes(self, h, f, items):
        it = self.lazy(h, f, items)
        for _ in range(len(items) + 1):
            try:
                yield "ok", next(it)
            except StopIteration:
                return
            except Exception as e:
                yield "err", e

    def close(self, h):
        h.terminate()
        h.join()


class PicklepoolPeer(Peer):
    name, label = "picklepool", "picklepool"

    def open(self, w):
        import picklepool
        return picklepool.Pool(w)


class MpPeer(Peer):
    name, label = "mp", "mp.Pool"
    note = "multiprocessing.get_context('fork').Pool({w})"

    def open(self, w):
        import multiprocessing
        return multiprocessing.get_context("fork").Pool(w)


class MultiprocessPeer(Peer):
    name, label = "multiprocess", "multiprocess"
    note = "multiprocess.Pool({w}) (fork, dill), pathos's engine"

    def open(self, w):
        import multiprocess
        return multiprocess.Pool(w)


class FuturesPeer(Peer):
    name, label = "futures", "futures"
    note = ("concurrent.futures.ProcessPoolExecutor (fork): list(ex.map(f, "
            "items)), apply is submit(f, x).result()")
    # Executor.map sends one task per item by default (chunksize=1): about
    # 10k items/s here, so 1M items would take ~100 s a run.  Its W1 rate is
    # taken on a fiftieth of the items.
    w1_share = 50

    def open(self, w):
        from concurrent.futures import ProcessPoolExecutor
        return ProcessPoolExecutor(max_workers=w)

    def map(self, h, f, items):
        return list(h.map(f, items))

    def apply(self, h, f, x):
        return h.submit(f, x).result()

    def lazy(self, h, f, items):
        return h.map(f, items)

    def close(self, h):
        h.shutdown(wait=True, cancel_futures=True)


class JoblibPeer(Peer):
    name, label = "joblib", "joblib/loky"
    note = ("one `with Parallel(n_jobs={w}, backend='loky')` serves every "
            "call (its documented way to keep its workers), batch_size auto; "
            "apply is a one-item call")

    def open(self, w):
        from joblib import Parallel
        par = Parallel(n_jobs=w, backend="loky")
        par.__enter__()  # one pool for every call, as `with Parallel(...)`
        return par

    def map(self, h, f, items):
        from joblib import delayed
        return h(delayed(f)(x) for x in items)

    def apply(self, h, f, x):
        from joblib import delayed
        return h([delayed(f)(x)])[0]

    def outcomes(self, h, f, items):
        try:
            values = self.map(h, f, items)
        except Exception as e:
            yield "err", e
            return
        for v in values:
            yield "ok", v

    def close(self, h):
        h.__exit__(None, None, None)
        # loky keeps its workers for the next Parallel: stop them, so that
        # the next open() starts a pool as a new program would
        from joblib.externals.loky import reusable_executor
        ex = reusable_executor._executor
        if ex is not None:
            ex.shutdown(wait=True, kill_workers=True)


class SerialPeer(Peer):
    name, label = "serial", "serial loop"

    def open(self, w):
        return None

    def map(self, h, f, items):
        return list(map(f, items))

    def apply(self, h, f, x):
        return f(x)

    def close(self, h):
        pass


PEERS = [PicklepoolPeer(), MpPeer(), FuturesPeer(), MultiprocessPeer(),
         JoblibPeer(), SerialPeer()]
BY_NAME = {p.name: p for p in PEERS}
PP, MP = "picklepool", "mp"


# ---- guards ----------------------------------------------------------------


class CellTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CellTimeout("no answer in the time limit")


class limit:
    """Raises CellTimeout in the main thread after s seconds (every pool's
    blocking wait is interruptible by a signal)."""

    def __init__(self, s):
        self.s = s

    def __enter__(self):
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.s)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)


def describe(e, width=70):
    text = "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[:width - 3] + "..."


# ---- rows and cells --------------------------------------------------------


def si(x):
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return "%.3g%s" % (x / div, suffix)
    return "%.3g" % x


FORMATS = {  # kind -> (format of one figure, higher is better)
    "rate": (si, True),
    "mbs": (lambda x: "%.0f" % x if x >= 100 else "%.3g" % x, True),
    "pct": (lambda x: "%.1f%%" % (x * 100), True),
    "sec": (lambda x: "%.3g" % x, False),
    "us": (lambda x: "%.0f" % x if x >= 100 else "%.3g" % x, False),
}


class Row:
    def __init__(self, label, kind):
        self.label, self.kind = label, kind
        self.values = {}  # peer name -> figures (one per repetition)
        self.text = {}  # peer name -> a cell written out (errors, W5, W6)
        self.main = {}  # peer name -> the figure shown, when not the median

    def figure(self, name):
        if name in self.text or not self.values.get(name):
            return None
        return self.main.get(name, spread(self.values[name])[0])

    def ratio(self, name):
        """The peer's time over picklepool's (higher: picklepool faster)."""
        a, b = self.figure(PP), self.figure(name)
        if a is None or b is None or a <= 0 or b <= 0:
            return None
        return a / b if FORMATS[self.kind][1] else b / a

    def cell(self, name):
        if name in self.text:
            return self.text[name]
        xs = self.values.get(name)
        if not xs:
            return "-"
        fmt = FORMATS[self.kind][0]
        _, lo, hi = spread(xs)
        s = fmt(self.figure(name))
        if len(xs) > 1:
            s += " [%s-%s]" % (fmt(lo), fmt(hi))
        r = self.ratio(name)
        if name != PP and r is not None:
            s += ", %s" % ratio_text(r)
        return s


def pool_copies(h):
    """picklepool's copied bytes so far ({"in", "out"}), or None when this
    picklepool cannot say."""
    try:
        return h.copies()
    except Exception:
        return None


def ratio_text(r):
    return "%.0fx" % r if r >= 100 else "%.3gx" % r


# ---- the run ---------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.w = args.workers
        self.reps = args.reps
        self.quick = args.quick
        self.limit_s = 60 if args.quick else 120
        self.peers = [p for p in PEERS if p.name in args.peers]
        self.pools = {}
        self.broken = {}  # peer name -> why its pool is no longer used
        self.rows = []
        self.keyed = {}  # "W1", "W4p50"... -> its Row
        self.native_skipped = False  # no picklepool.native: no W3 native
        self.notes = []

    def order(self, rep):
        """The peers in a rotating order, so that none is always first."""
        k = rep % len(self.peers)
        return self.peers[k:] + self.peers[:k]

    def guarded(self, row, peer, fn):
        """fn() under the time limit; a failure fills the peer's cell and,
        when its pool may be wedged, retires the pool."""
        if peer.name in self.broken:
            row.text[peer.name] = "skipped (%s)" % self.broken[peer.name]
            return None
        try:
            with limit(self.limit_s):
                return fn()
        except CellTimeout:
            row.text[peer.name] = "FAILED: no answer in %d s" % self.limit_s
            self.retire(peer, "timed out in %s" % row.label.split()[0])
        except Exception as e:
            row.text[peer.name] = "FAILED: " + describe(e)
        return None

    def retire(self, peer, why):
        self.broken[peer.name] = why
        h = self.pools.pop(peer.name, None)
        if h is not None:
            try:
                with limit(10):
                    peer.close(h)
            except BaseException:
                pass

    def row(self, key, label, kind):
        """A new row of the table; targets() finds it by key."""
        r = Row(label, kind)
        self.rows.append(r)
        self.keyed[key] = r
        return r

    # -- start-up

    def startup(self):
        # A start takes ~10 ms and its spread is wide on a shared machine
        # (a fork and the interpreter's after-fork work, in every pool):
        # its median is taken over three times the repetitions.
        reps = 3 * self.reps
        row = self.row("start", "start: new pool + first map of %d items "
                       "(s), %d repetitions" % (2 * self.w, reps), "sec")
        for rep in range(reps):
            for peer in self.order(rep):
                if peer.name == "serial":
                    row.text[peer.name] = "n/a"
                    continue
                if peer.name in row.text:
                    continue

                def once():
                    t0 = time.perf_counter()
                    h = peer.open(self.w)
                    try:
                        peer.map(h, square, range(2 * self.w))
                        return time.perf_counter() - t0
                    finally:
                        peer.close(h)

                t = self.guarded(row, peer, once)
                if t is not None:
                    row.values.setdefault(peer.name, []).append(t)

    def open_pools(self):
        """One pool per peer for W1-W4, each warmed up by a small map."""
        for peer in self.peers:
            row = Row("open", "sec")

            def warm():
                self.pools[peer.name] = peer.open(self.w)
                peer.map(self.pools[peer.name], square, range(8 * self.w))

            self.guarded(row, peer, warm)
            if peer.name in row.text:
                self.retire(peer, "could not open: " + row.text[peer.name])

    def close_pools(self):
        for peer in self.peers:
            if peer.name in self.pools:
                self.retire(peer, "closed")

    # -- W1 to W4: timed maps on the open pools

    def timed_rows(self, row, f, items_for, measure, warm_items=None):
        """Round robin: each repetition runs f over items_for(peer) on every
        peer; measure(peer, seconds) is the figure kept.  warm_items (a
        smaller input) runs once first on every peer."""
        if warm_items is not None:
            for peer in self.peers:
                self.guarded(row, peer, lambda: peer.map(
                    self.pools.get(peer.name), f, warm_items))
        for rep in range(self.reps):
            for peer in self.order(rep):
                if peer.name in row.text:
                    continue
                items = items_for(peer)

                def once():
                    h = self.pools.get(peer.name)
                    t0 = time.perf_counter()
                    out = peer.map(h, f, items)
                    t = time.perf_counter() - t0
                    if len(out) != len(items):
                        raise RuntimeError("%d results for %d items"
                                           % (len(out), len(items)))
                    return t

                t = self.guarded(row, peer, once)
                if t is not None:
                    row.values.setdefault(peer.name, []).append(
                        measure(peer, t))

    def w1(self):
        n = 100_000 if self.quick else 1_000_000
        row = self.row("W1", "W1 map(square, range(%s)), default chunksize "
                       "(items/s)" % si(n), "rate")
        ranges = {p.name: range(n // p.w1_share) for p in self.peers}
        self.timed_rows(row, square, lambda p: ranges[p.name],
                        lambda p, t: len(ranges[p.name]) / t,
                        warm_items=range(n // 50))
        for p in self.peers:
            if p.w1_share > 1:
                self.notes.append(
                    "W1 %s: measured on %s items (its map sends one task "
                    "per item by default; %s would take minutes)"
                    % (p.label, si(n // p.w1_share), si(n)))

    def w2(self):
        n, us = (100 if self.quick else 400), 5000
        row = self.row("W2", "W2 %d x 5 ms spin: parallel efficiency" % n,
                       "pct")
        items = [us] * n
        self.timed_rows(row, spin, lambda p: items, lambda p, t: t,
                        warm_items=[us] * (2 * self.w))
        walls, row.values = row.values, {}
        if not walls.get("serial"):
            self.notes.append("W2: no serial time, so no efficiency")
            return
        base = spread(walls["serial"])[0]
        for name, ts in walls.items():
            if name == "serial":
                med, lo, hi = spread(ts)
                row.text[name] = "%.3f s%s (the baseline)" % (
                    med, " [%.3f-%.3f]" % (lo, hi) if len(ts) > 1 else "")
            else:
                row.values[name] = [base / (self.w * t) for t in ts]

    def w3(self):
        import numpy as np
        n = 8 if self.quick else 32
        rng = np.random.default_rng(1)
        arrays = [rng.standard_normal(MIB) for _ in range(n)]  # 8 MiB f64
        want = double(arrays[0])
        self.w3_rows("W3", "W3 %d x 8 MiB f64 through `a * 2`%%s (MB/s)" % n,
                     {p.name: double for p in self.peers}, arrays,
                     lambda out: np.array_equal(out[0], want))
        self.notes.append(
            "W3 `a * 2`: a Python function in every pool; picklepool's "
            "workers copy each argument out of shared memory before the "
            "call and its result into it after (a Python function may keep "
            "its argument, and allocated its result itself)")

    def w3_native(self):
        import numpy as np
        import picklepool
        n = 8 if self.quick else 32
        rng = np.random.default_rng(2)
        native = getattr(picklepool, "native", None)
        label = "W3 %d x 8 MiB f32 normalize, native%%s (MB/s)" % n
        if native is None:
            self.notes.append(
                "W3 normalize row skipped: this picklepool has no "
                "picklepool.native to map examples.normalize with")
            self.native_skipped = True
            return
        arrays = [rng.standard_normal(2 * MIB, dtype=np.float32)
                  for _ in range(n)]
        fn = {p.name: normalize for p in self.peers}
        try:
            fn[PP] = native("examples.normalize")
        except Exception as e:
            fn[PP] = e
        want = normalize(arrays[0])
        self.w3_rows("W3native", label, fn, arrays,
                     lambda out: np.allclose(out[0], want, atol=1e-4))
        self.notes.append("W3 normalize: float32 arrays (examples.normalize "
                          "takes float32); picklepool maps the C kernel, "
                          "picklepool.native('examples.normalize'), the "
                          "others the numpy function benchlib.normalize")

    def w3_rows(self, key, label, fns, arrays, check):
        """Two rows of MB/s: every peer maps fns[peer] over the plain
        arrays (row key); picklepool maps it again over the same arrays
        placed in its shared heap before timing (picklepool.asarray), a
        row of its own (key + "arena") beside the peers' plain figures,
        which are the only ones they have.  Round robin as timed_rows, one
        untimed warm-up round first; copies per item from pool.copies()
        go into the labels."""
        total = sum(a.nbytes for a in arrays) / 1e6
        plain = self.row(key, label % "", "mbs")
        arena = self.row(key + "arena", label % ", heap arrays", "mbs")
        heap = None
        try:
            import picklepool
            heap = [picklepool.asarray(a) for a in arrays]
        except Exception as e:
            arena.text[PP] = "FAILED: " + describe(e)
        for rows in (plain, arena):
            if isinstance(fns.get(PP), Exception):
                rows.text[PP] = "FAILED: " + describe(fns[PP])
        copied = {}  # row key -> [in, out] bytes over the timed runs
        for rep in range(-1, self.reps):  # rep -1: the warm-up
            for peer in self.order(max(rep, 0)):
                runs = [(plain, arrays)]
                if peer.name == PP and heap is not None:
                    runs.append((arena, heap))
                for row, items in runs:
                    if peer.name in row.text:
                        continue
                    items = items if rep >= 0 else items[:2 * self.w]
                    f = fns[peer.name]
                    h = self.pools.get(peer.name)

                    def once():
                        t0 = time.perf_counter()
                        out = peer.map(h, f, items)
                        t = time.perf_counter() - t0
                        if len(out) != len(items) or not check(out):
                            raise ValueError("wrong results")
                        return t

                    c0 = pool_copies(h) if peer.name == PP else None
                    t = self.guarded(row, peer, once)
                    if t is None or rep < 0:
                        continue
                    row.values.setdefault(peer.name, []).append(total / t)
                    c1 = pool_copies(h) if c0 is not None else None
                    if c1 is not None:
                        acc = copied.setdefault(id(row), [0, 0])
                        acc[0] += c1["in"] - c0["in"]
                        acc[1] += c1["out"] - c0["out"]
        for name in plain.values:
            if name != PP:
                arena.values[name] = list(plain.values[name])
        for name, text in plain.text.items():
            if name != PP:
                arena.text.setdefault(name, text)
        nbytes = sum(a.nbytes for a in arrays) * self.reps
        for row in (plain, arena):
            c = copied.get(id(row))
            if c is not None:
                row.label += " [copies %.2g+%.2g]" % (c[0] / nbytes,
                                                      c[1] / nbytes)
        if key == "W3":
            self.notes.append(
                "W3 heap arrays: picklepool maps the same arrays placed in "
                "its shared heap before timing (picklepool.asarray), read "
                "in place by its workers; the peers have no such thing, so "
                "their cells repeat the plain-array figures.  [copies "
                "in+out]: bytes picklepool copied per item, arguments into "
                "its arena + results into it, over the item's size "
                "(pool.copies())")

    def w4(self):
        n = 500 if self.quick else 2000
        block = max(1, n // self.reps)
        p50 = self.row("W4p50", "W4 %s sequential apply, p50 (us)"
                       % f"{n:,}", "us")
        p99 = self.row("W4p99", "W4 %s sequential apply, p99 (us)"
                       % f"{n:,}", "us")
        lat = {}
        for peer in self.peers:  # warm-up
            if peer.name == "serial":
                continue
            self.guarded(p50, peer, lambda: [
                peer.apply(self.pools.get(peer.name), square, i)
                for i in range(50)])
        for rep in range(self.reps):
            for peer in self.order(rep):
                if peer.name == "serial" or peer.name in p50.text:
                    continue

                def once():
                    h, out = self.pools.get(peer.name), []
                    for i in range(block):
                        t0 = time.perf_counter()
                        peer.apply(h, square, i)
                        out.append((time.perf_counter() - t0) * 1e6)
                    return sorted(out)

                ts = self.guarded(p50, peer, once)
                if ts is None:
                    continue
                lat.setdefault(peer.name, []).extend(ts)
                p50.values.setdefault(peer.name, []).append(percentile(ts, 50))
                p99.values.setdefault(peer.name, []).append(percentile(ts, 99))
        for name, ts in lat.items():
            ts.sort()
            p50.main[name] = percentile(ts, 50)
            p99.main[name] = percentile(ts, 99)
        for r in (p50, p99):
            r.text.setdefault("serial", "n/a (no round trip)")
            for name, t in p50.text.items():
                r.text.setdefault(name, t)
        self.notes.append(
            "W4: percentiles over all %s calls, [min-max] of the same "
            "percentile over the %d blocks of %d calls"
            % (f"{block * self.reps:,}", self.reps, block))

    # -- W5 and W6: a child process per peer

    def children(self, what):
        timeout = (8 if self.quick else 15) if what == "W5" else 60
        if what == "W5":
            row = self.row("W5", "W5 worker SIGKILLed on item 7 of 20", "sec")
        else:
            row = self.row("W6", "W6 map(lambda x: x + 1, range(1000)) works?",
                           "sec")
        for peer in self.peers:
            if what == "W5" and peer.name == "serial":
                row.text[peer.name] = "n/a (would kill the caller)"
                continue
            row.text[peer.name] = run_child(what, peer.name, self.w, timeout)
        return row


def run_child(what, name, w, timeout):
    """Runs this program as `--child WHAT --peer NAME` in a session of its
    own; past timeout the whole process group is killed.  Returns the
    cell's text."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", what,
           "--peer", name, "--workers", str(w)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    hung = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        _killpg(p.pid)
        out, err = p.communicate()
    _killpg(p.pid)  # whatever the pool left behind
    lines = out.splitlines()
    if what == "W6":
        if hung:
            return "no: hung (killed after %d s)" % timeout
        return lines[-1] if lines else "FAILED: %s" % _last(err)
    return w5_verdict(lines, hung, timeout, err)


def _killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return describe(Exception(lines[-1] if lines else "exit without output"))


W5_N, W5_POISON = 20, 7


def w5_verdict(lines, hung, timeout, err):
    ok = sum(1 for ln in lines if ln.startswith("ok "))
    errs = [ln[4:] for ln in lines if ln.startswith("err ")]
    after = [ln for ln in lines if ln.startswith("after ")]
    opened = "open" in lines
    if not opened:
        return "FAILED: " + (_last(err) if not hung else "open hung")
    if "mapped" not in lines:
        if hung:
            return "hung (killed after %d s), %d/%d back" % (
                timeout, ok, W5_N)
        return "FAILED: " + _last(err)
    exc = errs[0].split(":")[0] if errs else ""
    if ok == W5_N - 1 and len(errs) == 1:
        what = "every other item back, %s for item 7" % exc
    elif errs:
        what = "%s for the whole map (%d/%d back)" % (exc, ok, W5_N)
    else:
        what = "no error seen (%d/%d back)" % (ok, W5_N)
    if not after:
        then = "next map hung" if hung else "next map: " + _last(err)
    elif after[0] == "after usable":
        then = "stays usable"
    else:
        why = after[0][len("after err "):]
        then = ("next map: " + why if why.startswith("wrong results")
                else "broke the pool (%s)" % why.split(":")[0])
    return "%s; %s" % (what, then)


def child(what, name, w):
    """The child's side of W5 / W6: one line per event on stdout."""
    peer = BY_NAME[name]
    h = peer.open(w)
    print("open", flush=True)
    if what == "W6":
        try:
            out = peer.map(h, lambda x: x + 1, range(1000))
            print("yes" if list(out) == list(range(1, 1001))
                  else "no: wrong result", flush=True)
        except Exception as e:
            print("no: " + describe(e), flush=True)
        return 0
    for kind, v in peer.outcomes(h, die_on, list(range(W5_N))):
        print("ok %r" % (v,) if kind == "ok" else "err " + describe(v, 50),
              flush=True)
    print("mapped", flush=True)
    try:
        out = list(peer.map(h, square, range(10)))
        if out == [x * x for x in range(10)]:
            print("after usable", flush=True)
        else:
            print("after err wrong results: %d values for 10 items"
                  % len(out), flush=True)
    except Exception as e:
        print("after err " + describe(e, 50), flush=True)
    peer.close(h)
    return 0


# ---- output ----------------------------------------------------------------


def versions():
    out = ["python %s" % platform.python_version()]
    for mod in ("picklepool", "numpy", "multiprocess", "joblib",
                "cloudpickle"):
        try:
            out.append("%s %s" % (mod, __import__(mod).__version__))
        except Exception as e:
            out.append("%s (%s)" % (mod, describe(e, 40)))
    return ", ".join(out)


def table(bench):
    peers = bench.peers
    head = ["workload"] + [p.label for p in peers]
    body = [[r.label] + [r.cell(p.name) for p in peers] for r in bench.rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(wd) for c, wd in
                                 zip(cells, widths)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for b in body:
        print(line(b))


def targets(bench):
    """One line per target: met / NOT met (or why there is no verdict), and
    the figure behind it."""
    out = []
    rows = bench.keyed

    def verdict(ok):
        return "met" if ok else "NOT met"

    def ratio_target(key, want, what):
        r = rows.get(key)
        if r is None:
            return
        x = r.ratio(MP)
        if x is None:
            out.append((what, "no figure", "%s / %s" % (r.cell(PP),
                                                        r.cell(MP))))
        else:
            out.append((what, verdict(x >= want),
                        "%s of mp.Pool" % ratio_text(x)))

    ratio_target("start", 1.0, "start-up: picklepool no slower than mp.Pool")
    ratio_target("W1", 1.5, "W1: picklepool >= 1.5x mp.Pool's items/s")
    if "W2" in rows:
        e = rows["W2"].figure(PP)
        out.append(("W2: picklepool parallel efficiency >= 97%",
                    "no figure" if e is None else verdict(e >= 0.97),
                    rows["W2"].cell(PP)))
    ratio_target("W3", 3.0, "W3: picklepool >= 3x mp.Pool's MB/s, Python "
                 "function")
    ratio_target("W3arena", 3.0, "W3: picklepool >= 3x mp.Pool's MB/s, "
                 "Python function, shared-heap arrays (issue 12)")
    what = "W3: picklepool >= 10x mp.Pool's MB/s, native kernel"
    if bench.native_skipped:
        out.append((what, "skipped", "this picklepool has no native()"))
    ratio_target("W3native", 10.0, what)
    ratio_target("W3nativearena", 10.0, what + ", shared-heap arrays "
                 "(issue 12)")
    ratio_target("W4p50", 2.0, "W4: picklepool p50 <= half mp.Pool's")
    if "W5" in rows:
        c = rows["W5"].cell(PP)
        out.append(("W5: picklepool returns every other item and stays "
                    "usable", verdict(c.startswith("every other item back")
                                      and c.endswith("stays usable")), c))
    if not out:
        print("(no target among the workloads run)")
    for what, v, why in out:
        print("- %s: %s (%s)" % (what, v, why))


WORKLOADS = ["start", "W1", "W2", "W3", "W4", "W5", "W6"]


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions of each timed figure (default 5, "
                    "--quick 3)")
    ap.add_argument("--workers", type=int, default=2,
                    help="workers per pool (default 2: this machine's cores)")
    ap.add_argument("--quick", action="store_true",
                    help="smaller workloads, a ~1 minute smoke run")
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--peers", default=",".join(p.name for p in PEERS),
                    help="comma-separated peers (default all): "
                    + ",".join(p.name for p in PEERS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 3 if args.quick else 5
    if args.reps < 1 or args.workers < 1:
        ap.error("--reps and --workers must be at least 1")
    names = {w.lower(): w for w in WORKLOADS}
    names["startup"] = "start"
    only = args.only.split(",") if args.only else WORKLOADS
    bad = [x for x in only if x.strip().lower() not in names]
    if bad:
        ap.error("unknown workload %s (choose from %s)"
                 % (",".join(bad), ",".join(WORKLOADS)))
    args.only = {names[x.strip().lower()] for x in only}
    args.peers = args.peers.split(",")
    bad = [x for x in args.peers if x not in BY_NAME]
    if bad or PP not in args.peers:
        ap.error("unknown peer %s, or picklepool left out (peers: %s)"
                 % (",".join(bad) or "-", ",".join(BY_NAME)))
    return args


def early_init():
    """The picklepool fork server, started before any other pool starts a
    thread (DESIGN.md: programs with threads call the early init), as the
    first picklepool.Pool starts it: able to fork Python workers (unless
    PICKLEPOOL_PYTHON_EXEC=1 asks for exec'd ones)."""
    from picklepool import worker
    worker.start_fork_server()


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child(args.child, args.peer, args.workers)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    print("# bench/peers.py --reps %d --workers %d%s%s"
          % (args.reps, args.workers, " --quick" if args.quick else "",
             "" if args.only == set(WORKLOADS)
             else " --only " + ",".join(w for w in WORKLOADS
                                        if w in args.only)))
    print("machine: %d CPUs (%s), shared with other jobs and noisy: figures "
          "move between runs; compare the ratios within one run"
          % (os.cpu_count(), cpu_model()))
    print("load average at start: %.2f %.2f %.2f" % load0)
    print(versions())
    print("%d workers per pool, %d repetitions (median [min-max]); ratio = "
          "peer time / picklepool time (higher: picklepool faster)"
          % (args.workers, args.reps), flush=True)
    early_init()
    bench = Bench(args)
    steps = [("start", bench.startup)]
    timed = [("W1", bench.w1), ("W2", bench.w2), ("W3", bench.w3),
             ("W3", bench.w3_native), ("W4", bench.w4)]
    for name, fn in steps:
        if name in args.only:
            progress(name)
            fn()
    if any(name in args.only for name, _ in timed):
        bench.open_pools()
        for i, (name, fn) in enumerate(timed):
            if name in args.only:
                if i == 0 or timed[i - 1][0] != name:
                    progress(name)
                fn()
        bench.close_pools()
    for name in ("W5", "W6"):
        if name in args.only:
            progress(name)
            bench.children(name)
    print()
    table(bench)
    print()
    for peer in bench.peers:
        if peer.note:
            print("%s: %s" % (peer.label, peer.note.format(w=args.workers)))
    for note in bench.notes:
        print("note: " + note)
    for name, why in bench.broken.items():
        if why not in ("closed", "could not open"):
            print("note: %s's pool was retired: %s" % (name, why))
    print()
    targets(bench)
    print()
    print("load average at end: %.2f %.2f %.2f; the run took %.0f s"
          % (os.getloadavg() + (time.perf_counter() - t_start,)))
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def progress(name):
    print("running %s ..." % name, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
