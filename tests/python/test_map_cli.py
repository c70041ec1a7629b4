"""`picklepool map` end to end: CPython pickles in, CPython unpickles out.

Runs build/picklepool (under $PICKLEPOOL_BUILD, default <repo>/build) with the
examples plugin on lists and streams written by CPython's pickle and numpy,
and reads the results back with pickle.load: values in input order, failed
items as builtins exception instances in place, exit status 3 when some item
failed.  Skips the whole module when the CLI, its `map` command or the plugin
has not been built.
"""

import gzip
import lzma
import os
import pickle
import pty
import subprocess
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
BUILD = os.environ.get("PICKLEPOOL_BUILD") or os.path.join(_REPO, "build")
CLI = os.path.join(BUILD, "picklepool")
PLUGIN = os.path.join(BUILD, "plugins", "examples.so")

# Under `make test` (PICKLEPOOL_BUILD set) a missing binary, plugin or `map`
# command is a failure; by hand, before `make`, the module is skipped.
_missing = pytest.fail if os.environ.get("PICKLEPOOL_BUILD") else pytest.skip
if not (os.access(CLI, os.X_OK) and os.path.exists(PLUGIN)):
    _missing("needs %s and %s (run `make`)" % (CLI, PLUGIN),
             **({} if _missing is pytest.fail else {"allow_module_level": True}))
if subprocess.run([CLI, "map", "--help"], capture_output=True,
                  timeout=30).returncode != 0:
    _missing("this build of picklepool has no `map` command",
             **({} if _missing is pytest.fail else {"allow_module_level": True}))

TIMEOUT = 120
EXIT_ITEMS_FAILED = 3


def run_map(target, items, tmp_path, *opts, suffix=".pkl", out_suffix=".pkl"):
    """Pickles `items` as one list, maps `target` over it; returns
    (completed process, results or None)."""
    src = tmp_path / ("in" + suffix)
    dst = tmp_path / ("out" + out_suffix)
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(suffix[-3:], open)
    with opener(src, "wb") as f:
        pickle.dump(list(items), f, protocol=5)
    proc = subprocess.run(
        [CLI, "map", *opts, target, str(src), str(dst)],
        capture_output=True, timeout=TIMEOUT,
    )
    results = None
    if dst.exists():
        opener = {".gz": gzip.open, ".xz": lzma.open}.get(out_suffix[-3:], open)
        with opener(dst, "rb") as f:
            results = pickle.load(f)
    return proc, results


def check_failure(x, kind, *needles):
    """x is the in-place marker of a failed item of the given kind."""
    assert isinstance(x, BaseException), repr(x)
    assert type(x) is kind, repr(x)
    assert str(x).startswith("picklepool: item "), str(x)
    for n in needles:
        assert n in str(x), str(x)


def test_square_list_in_order(tmp_path):
    items = list(range(-500, 20000))
    proc, out = run_map("examples.square", items, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out == [x * x for x in items]
    assert proc.stderr == b""  # no progress when stderr is not a terminal


def test_options_and_compression(tmp_path):
    items = list(range(3000))
    proc, out = run_map(
        "examples.square", items, tmp_path,
        "--workers", "3", "--placement", "spread", "--chunksize=7",
        "--timeout", "30", "--plugin", PLUGIN,
        suffix=".pkl.gz", out_suffix=".pkl.xz",
    )
    assert proc.returncode == 0, proc.stderr
    assert out == [x * x for x in items]


def test_normalize_numpy_arrays(tmp_path):
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    arrays = [
        (rng.standard_normal(n) * (i + 1) + i).astype(np.float32)
        for i, n in enumerate([1, 2, 100, 4096, 100003, 262144])
    ]
    arrays.append(np.arange(24, dtype=np.float32).reshape(4, 6))
    proc, out = run_map("examples.normalize", arrays, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(out) == len(arrays)
    for a, b in zip(arrays, out):
        assert isinstance(b, np.ndarray)
        assert b.dtype == np.float32 and b.shape == a.shape
        a64 = a.astype(np.float64)
        sd = a64.std()
        want = (a64 - a64.mean()) / sd if sd > 0 else np.zeros_like(a64)
        np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-5)


def test_crash_is_an_exception_in_place(tmp_path):
    items = [1, 2, -1, 4, 5]
    proc, out = run_map("examples.crash", items, tmp_path)
    assert proc.returncode == EXIT_ITEMS_FAILED, proc.stderr
    assert len(out) == 5
    assert [out[i] for i in (0, 1, 3, 4)] == [1, 2, 4, 5]
    assert b"item 2" in proc.stderr
    check_failure(out[2], RuntimeError, "item 2:", "SIGKILL")


def test_function_error_is_an_exception_in_place(tmp_path):
    proc, out = run_map("examples.fail", ["first", "second"], tmp_path)
    assert proc.returncode == EXIT_ITEMS_FAILED
    check_failure(out[1], RuntimeError, "item 1:", "second")
    check_failure(out[0], RuntimeError, "item 0:", "first")


def test_timeout_is_an_exception_in_place(tmp_path):
    proc, out = run_map("examples.sleep", [0.01, 10, 0.02], tmp_path,
                        "--timeout", "0.5")
    assert proc.returncode == EXIT_ITEMS_FAILED
    assert out[0] == 0.01 and out[2] == 0.02
    check_failure(out[1], TimeoutError, "item 1:")


def test_unknown_function(tmp_path):
    proc, out = run_map("examples.no_such_thing", [1, 2, 3], tmp_path)
    assert proc.returncode == EXIT_ITEMS_FAILED
    assert b"no_such_thing" in proc.stderr
    assert len(out) == 3
    for i, x in enumerate(out):
        check_failure(x, LookupError, "item %d:" % i, "no_such_thing")


def test_stream_100k(tmp_path):
    n = 100000
    src, dst = tmp_path / "in.pkls", tmp_path / "out.pkls"
    with open(src, "wb") as f:
        for i in range(n):
            pickle.dump(i - 1000, f)
    proc = subprocess.run(
        [CLI, "map", "--stream", "examples.square", str(src), str(dst)],
        capture_output=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    got = []
    with open(dst, "rb") as f:
        while True:
            try:
                got.append(pickle.load(f))
            except EOFError:
                break
    assert got == [(i - 1000) ** 2 for i in range(n)]


def test_stream_failures_and_compression(tmp_path):
    src, dst = tmp_path / "in.pkls.gz", tmp_path / "out.pkls.gz"
    with gzip.open(src, "wb") as f:
        for x in [3, -1, 5, 7]:
            pickle.dump(x, f, protocol=2)
    proc = subprocess.run(
        [CLI, "map", "--stream", "examples.crash", str(src), str(dst)],
        capture_output=True, timeout=TIMEOUT,
    )
    assert proc.returncode == EXIT_ITEMS_FAILED, proc.stderr
    got = []
    with gzip.open(dst, "rb") as f:
        while True:
            try:
                got.append(pickle.load(f))
            except EOFError:
                break
    assert len(got) == 4
    assert [got[0], got[2], got[3]] == [3, 5, 7]
    check_failure(got[1], RuntimeError, "item 1:", "SIGKILL")


def _stream_peak_rss_mb(tmp_path, n, size):
    """Peak RSS (MB) of `map --stream examples.normalize` over n float32
    arrays of `size` elements; checks the first result."""
    np = pytest.importorskip("numpy")
    src, dst = tmp_path / "in.pkls", tmp_path / "out.pkls"
    a = np.arange(size, dtype=np.float32)
    with open(src, "wb") as f:
        for i in range(n):
            pickle.dump(a + i, f, protocol=5)
    proc = subprocess.Popen(
        [CLI, "map", "--stream", "examples.normalize", str(src), str(dst)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 0, err
    assert os.path.getsize(dst) > n * size * 4
    with open(dst, "rb") as f:
        first = pickle.load(f)
    np.testing.assert_allclose(first, (a - a.mean()) / a.std(), rtol=1e-5,
                               atol=1e-5)
    src.unlink()
    dst.unlink()
    return usage.ru_maxrss / 1024


def test_stream_memory_is_bounded(tmp_path):
    """10 MB and then 200 MB of 16 KiB arrays through --stream: the peak RSS
    (master, fork server and workers: the largest) grows far less than the
    input does."""
    if os.environ.get("PICKLEPOOL_SANITIZER") == "address":
        pytest.skip("ASan's quarantine keeps freed memory resident; the "
                    "bound is checked in the plain build")
    small = _stream_peak_rss_mb(tmp_path, 640, 4096)
    large = _stream_peak_rss_mb(tmp_path, 12800, 4096)
    assert large - small < 64, (
        "peak RSS %.0f MB for 10 MB of input, %.0f MB for 200 MB"
        % (small, large))


def test_progress_only_on_a_terminal(tmp_path):
    src, dst = tmp_path / "in.pkl", tmp_path / "out.pkl"
    with open(src, "wb") as f:
        pickle.dump(list(range(50000)), f)
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [CLI, "map", "examples.square", str(src), str(dst)],
            stdout=subprocess.DEVNULL, stderr=slave, timeout=TIMEOUT,
        )
        os.close(slave)
        slave = -1
        text = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            text += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert b"50000/50000 items" in text, text
    assert b"items/s" in text


def test_usage_and_io_errors(tmp_path):
    proc = subprocess.run([CLI, "map", "examples.square"], capture_output=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr.startswith(b"picklepool: ")
    proc = subprocess.run([CLI, "map", "--workers", "zero", "examples.square",
                           "a", "b"], capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and b"--workers" in proc.stderr
    missing = tmp_path / "missing.pkl"
    proc = subprocess.run(
        [CLI, "map", "examples.square", str(missing), str(tmp_path / "o")],
        capture_output=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 1
    assert proc.stderr.count(b"\n") == 1 and b"missing.pkl" in proc.stderr
    assert not (tmp_path / "o").exists()
    bad = tmp_path / "notalist.pkl"
    bad.write_bytes(pickle.dumps({"a": 1}))
    proc = subprocess.run(
        [CLI, "map", "examples.square", str(bad), str(tmp_path / "o")],
        capture_output=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 1 and b"list" in proc.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
