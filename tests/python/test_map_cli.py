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
import signal
import subprocess
import sys
import time

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
    check_failure(out[1], ValueError, "item 1:", "second")
    check_failure(out[0], ValueError, "item 0:", "first")


def test_timeout_is_an_exception_in_place(tmp_path):
    proc, out = run_map("examples.sleep", [0.01, 10, 0.02], tmp_path,
                        "--timeout", "0.5")
    assert proc.returncode == EXIT_ITEMS_FAILED
    assert out[0] == 0.01 and out[2] == 0.02
    check_failure(out[1], TimeoutError, "item 1:")


def test_unknown_function(tmp_path):
    # One error for the call, naming the function and the plugins loaded;
    # no output, no per-item errors.
    proc, out = run_map("examples.no_such_thing", [1, 2, 3], tmp_path)
    assert proc.returncode == 1
    assert out is None
    err = proc.stderr.decode()
    assert err.count("no_such_thing") == 1, err
    assert "examples.no_such_thing is not registered" in err
    assert "plugins loaded: " in err and "examples.so" in err


def test_unknown_module_names_where_plugins_were_looked_for(tmp_path):
    env = dict(os.environ, PICKLEPOOL_PLUGIN_PATH=str(tmp_path / "extra"))
    src = tmp_path / "in.pkl"
    src.write_bytes(pickle.dumps([1]))
    proc = subprocess.run([CLI, "map", "nomod.f", str(src), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=env)
    assert proc.returncode == 1
    assert "nomod.f is not registered" in proc.stderr
    assert "no plugin 'nomod': looked for nomod.so in " in proc.stderr
    assert str(tmp_path / "extra") in proc.stderr
    assert os.path.join(BUILD, "plugins") in proc.stderr or \
        os.path.realpath(os.path.join(BUILD, "plugins")) in proc.stderr


def test_plugin_by_name(tmp_path):
    proc, out = run_map("examples.square", [3], tmp_path, "--plugin", "examples")
    assert proc.returncode == 0 and out == [9], proc.stderr
    (tmp_path / "out.pkl").unlink()
    proc, out = run_map("examples.square", [3], tmp_path, "--plugin", "nope")
    assert proc.returncode == 1 and out is None
    assert b"no plugin 'nope': looked for nope.so in " in proc.stderr


def test_list_examples():
    proc = subprocess.run([CLI, "map", "--list"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    for fn in ("square", "spin", "sleep", "normalize", "crash", "fail"):
        line = [ln for ln in proc.stdout.splitlines()
                if ln.strip().startswith("examples.%s(" % fn)]
        assert len(line) == 1 and len(line[0].split(None, 1)[1]) > 10, proc.stdout


def test_kernel_type_error_is_a_type_error(tmp_path):
    proc, out = run_map("examples.square", [2, "x", 3], tmp_path)
    assert proc.returncode == EXIT_ITEMS_FAILED
    check_failure(out[1], TypeError, "item 1:", "square() expects an int, got str")
    assert "TypeError" not in str(out[1])


def test_messages_do_not_repeat_the_item(tmp_path):
    proc, out = run_map("examples.sleep", [0.01, 30, 0.02], tmp_path,
                        "--timeout", "0.5")
    assert proc.returncode == EXIT_ITEMS_FAILED
    assert str(out[1]).count("item 1") == 1, str(out[1])
    assert proc.stderr.decode().count("item 1") == 1, proc.stderr


def test_encoding_for_python2_str(tmp_path):
    src, dst = tmp_path / "py2.pkl", tmp_path / "o.pkl"
    src.write_bytes(b"(lp0\nS'caf\xe9'\np1\na.")  # Python 2 ['caf\xe9']
    proc = subprocess.run([CLI, "map", "examples.fail", str(src), str(dst)],
                          capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 1 and b"ASCII" in proc.stderr.upper()
    proc = subprocess.run([CLI, "map", "--encoding", "latin1", "examples.fail",
                           str(src), str(dst)], capture_output=True,
                          timeout=TIMEOUT)
    assert proc.returncode == EXIT_ITEMS_FAILED, proc.stderr
    out = pickle.loads(dst.read_bytes())
    check_failure(out[0], ValueError, "caf\xe9")


def test_worker_limits_agree_with_topo(tmp_path):
    topo = subprocess.run([CLI, "topo", "--workers", "257"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    proc, _ = run_map("examples.square", [1], tmp_path, "--workers", "257")
    assert topo.returncode == 2 and proc.returncode == 2
    assert "from 1 to 256" in topo.stderr and b"from 1 to 256" in proc.stderr
    proc, out = run_map("examples.square", [1], tmp_path, "--workers", "2")
    assert proc.returncode == 0 and out == [1]


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


def _stream_peak_rss_mb(tmp_path, n, size, suffix=""):
    """Peak RSS (MB) of `map --stream examples.normalize` over n float32
    arrays of `size` elements (gzipped when suffix is ".gz"); checks the
    first result."""
    np = pytest.importorskip("numpy")
    src, dst = tmp_path / ("in.pkls" + suffix), tmp_path / "out.pkls"
    a = np.arange(size, dtype=np.float32)
    opener = (lambda p, m: gzip.open(p, m, compresslevel=1)) if suffix else open
    with opener(src, "wb") as f:
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


def test_compressed_stream_memory_is_bounded(tmp_path):
    """The same through gzip: the input is decompressed as it is read, not
    whole first (issue 15)."""
    if os.environ.get("PICKLEPOOL_SANITIZER") == "address":
        pytest.skip("ASan's quarantine keeps freed memory resident; the "
                    "bound is checked in the plain build")
    small = _stream_peak_rss_mb(tmp_path, 640, 4096, ".gz")
    large = _stream_peak_rss_mb(tmp_path, 12800, 4096, ".gz")
    assert large - small < 64, (
        "peak RSS %.0f MB for 10 MB of gzipped input, %.0f MB for 200 MB"
        % (small, large))


def test_stream_item_over_the_limit(tmp_path):
    src, dst = tmp_path / "in.pkls.gz", tmp_path / "out.pkls"
    with gzip.open(src, "wb") as f:
        pickle.dump(1, f)
        pickle.dump(bytes(3 << 20), f)
    proc = subprocess.run(
        [CLI, "map", "--stream", "--max-input", "1M", "examples.square",
         str(src), str(dst)], capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    assert b"input limit of 1.0 MiB" in proc.stderr, proc.stderr
    assert b"--max-input" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.pkls.gz"]


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


# ---- OUT, interrupts and leftovers (issue 15) -------------------------------


def _sleep_input(tmp_path, stream, n=4, secs=30.0):
    src = tmp_path / ("in.pkls" if stream else "in.pkl")
    with open(src, "wb") as f:
        if stream:
            for _ in range(n):
                pickle.dump(secs, f)
        else:
            pickle.dump([secs] * n, f)
    return src


def test_list_mode_checks_out_before_the_work(tmp_path):
    """An OUT that cannot be written fails at once, not after the map."""
    src = _sleep_input(tmp_path, False)
    for out in ["/nonexistent/out.pkl", str(tmp_path / "no" / "out.pkl")]:
        t0 = time.monotonic()
        proc = subprocess.run([CLI, "map", "examples.sleep", str(src), out],
                              capture_output=True, timeout=20)
        assert proc.returncode == 1, proc.stderr
        assert out.encode() in proc.stderr
        assert time.monotonic() - t0 < 10


def test_map_out_through_symlinks_and_devices(tmp_path):
    src = tmp_path / "in.pkl"
    src.write_bytes(pickle.dumps([1, 2, 3]))
    dev = tmp_path / "devlink"
    dev.symlink_to("/dev/null")
    link = tmp_path / "link.pkl"
    link.symlink_to("target.pkl")
    for stream in ([], ["--stream"]):
        if stream:
            with open(src, "wb") as f:
                for x in [1, 2, 3]:
                    pickle.dump(x, f)
        for out in (dev, link):
            proc = subprocess.run([CLI, "map", *stream, "examples.square",
                                   str(src), str(out)],
                                  capture_output=True, timeout=TIMEOUT)
            assert proc.returncode == 0, proc.stderr
        assert os.path.islink(dev) and os.readlink(dev) == "/dev/null"
        assert os.path.islink(link)
        with open(tmp_path / "target.pkl", "rb") as f:
            got = [pickle.load(f)] if not stream else [
                pickle.load(f) for _ in range(3)]
        assert got == ([[1, 4, 9]] if not stream else [1, 4, 9])


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_out_as_it_was(tmp_path, stream, sig):
    """SIGINT / SIGTERM mid-map: one line saying so, OUT as it was, no
    temporary left, and the process ends by that signal."""
    src = _sleep_input(tmp_path, stream)
    out = tmp_path / "out.pkl"
    out.write_bytes(b"old")
    proc = subprocess.Popen(
        [CLI, "map", *(["--stream"] if stream else []), "examples.sleep",
         str(src), str(out)], stderr=subprocess.PIPE)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -sig, err
    name = signal.Signals(sig).name
    assert err == ("picklepool: interrupted by %s; %s left as it was\n"
                   % (name, out)).encode(), err
    assert out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, "out.pkl"])


def test_sigkill_leaves_no_temporary(tmp_path):
    """Output being written has no name until it is complete, so even a
    SIGKILL leaves nothing beside OUT, in either mode."""
    for stream in (True, False):
        src = _sleep_input(tmp_path, stream, n=2, secs=1.0)
        proc = subprocess.Popen(
            [CLI, "map", *(["--stream"] if stream else []), "examples.sleep",
             str(src), str(tmp_path / "out.pkl")], stderr=subprocess.PIPE)
        time.sleep(0.5)
        assert sorted(os.listdir(tmp_path)) == [src.name]
        proc.kill()
        proc.communicate(timeout=30)
        time.sleep(0.2)
        assert sorted(os.listdir(tmp_path)) == [src.name]
        src.unlink()


def test_broken_pool_message_is_not_doubled(tmp_path):
    """The fork server killed mid-map: one line that says what happened,
    not "worker crashed: worker crashed"."""
    src = _sleep_input(tmp_path, True)
    proc = subprocess.Popen(
        [CLI, "map", "--stream", "examples.sleep", str(src),
         str(tmp_path / "out.pkl")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    for pid in _children(proc.pid):  # the fork server
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.count(b"\n") == 1, err
    assert b"worker crashed: worker crashed" not in err
    assert b"fork server" in err
    assert sorted(os.listdir(tmp_path)) == [src.name]


def test_option_ranges(tmp_path):
    def run(*args):
        return subprocess.run([CLI, "map", *args, "examples.square",
                               str(tmp_path / "missing"), "o"],
                              capture_output=True, timeout=TIMEOUT)
    proc = run("--timeout", "1e300")
    assert proc.returncode == 2 and b"up to 1e+09" in proc.stderr, proc.stderr
    assert b">= 0" not in proc.stderr
    assert run("--timeout", "1e9").returncode == 1  # accepted: IN is missing
    proc = run("--workers", "257")
    assert proc.returncode == 2 and b"1 to 256" in proc.stderr, proc.stderr
    assert run("--workers", "256").returncode == 1
    proc = subprocess.run([CLI, "topo", "--workers", "257"],
                          capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and b"1 to 256" in proc.stderr, proc.stderr



if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
