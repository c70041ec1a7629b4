"""The Python front-end (python/picklepool): multiprocessing.Pool's API on
the C runtime, with Python workers the runtime starts (forked, or exec'd:
every test runs both ways), pins and supervises.

Every pool runs in a child interpreter with a time limit (run_py), so a
hang fails its test instead of blocking CI, and each child checks that it
leaves no worker process or ipc directory behind.
"""

import os
import signal
import subprocess
import textwrap
import time

import pytest

from pyhelpers import PRELUDE, PYTHON, ROOT, library, run_py  # noqa: F401
from pyhelpers import env as _env
from pyhelpers import worker_mode  # noqa: F401

# Every behaviour holds for workers forked from the fork server and for
# exec'd ones alike.
pytestmark = pytest.mark.usefixtures("worker_mode")


def test_map_family_in_order():
    out = run_py("""
        def square(x):
            return x * x
        with Pool(2) as p:
            assert p.map(square, range(1000)) == [x * x for x in range(1000)]
            for cs in (1, 7, 1000, 5000):
                assert p.map(square, range(100), chunksize=cs) == \\
                    [x * x for x in range(100)]
            assert p.map(square, []) == []
            assert list(p.imap(square, range(50), 3)) == \\
                [x * x for x in range(50)]
            assert sorted(p.imap_unordered(square, range(50), 4)) == \\
                sorted(x * x for x in range(50))
            assert p.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
            assert p.apply(divmod, (17, 5)) == (3, 2)
            assert p.apply(int, ("ff",), {"base": 16}) == 255
            assert p.map_async(square, range(5)).get(30) == [0, 1, 4, 9, 16]
            assert p.starmap_async(pow, [(2, 5)]).get(30) == [32]
            st = p.stats()
            assert len(st) == 2 and sum(s["items"] for s in st) > 0
            assert all(s["pid"] > 0 for s in st)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_lambdas_closures_and_main_functions():
    out = run_py("""
        k = 10
        def add_k(x):
            return x + k
        def make(n):
            return lambda x: x * n
        with Pool(2) as p:
            assert p.map(lambda x: x + 1, [1, 2]) == [2, 3]
            assert p.map(make(3), [1, 2]) == [3, 6]
            assert p.map(add_k, [1]) == [11]
            def later(x):  # defined after the pool was created
                return -x
            assert p.map(later, [4]) == [-4]
        print("ok")
    """)
    assert out.strip() == "ok"


def test_exceptions_keep_type_and_traceback():
    out = run_py("""
        class Custom(Exception):
            pass
        def boom(x):
            if x == 3:
                raise Custom("three is bad")
            if x == 5:
                raise KeyError(x)
            return x
        with Pool(2) as p:
            try:
                p.map(boom, range(10), chunksize=2)
            except Custom as e:
                assert str(e) == "three is bad"
                tb = str(e.__cause__)
                assert "boom" in tb and "Custom" in tb, tb
            else:
                raise SystemExit("no exception")
            got = shape(drain(p.imap(boom, range(7)), 7))
            assert got == [0, 1, 2, "Custom", 4, "KeyError", 6], got
            r = p.apply_async(boom, (3,))
            r.wait(30)
            assert r.ready() and not r.successful()
            try:
                r.get(0)
            except Custom:
                pass
            errs, oks = [], []
            p.apply_async(boom, (5,), error_callback=errs.append).wait(30)
            p.apply_async(boom, (1,), callback=oks.append).wait(30)
            time.sleep(0.1)
            assert len(errs) == 1 and isinstance(errs[0], KeyError)
            assert oks == [1]
        print("ok")
    """)
    assert out.strip() == "ok"


def test_worker_killed_fails_only_its_item():
    out = run_py("""
        def die_on_5(x):
            if x == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return x
        with Pool(2) as p:
            got = drain(p.imap(die_on_5, range(12), chunksize=4), 12)
            e = got[5]
            assert "SIGKILL" in str(e) and "item 5" in str(e), str(e)
            assert shape(got) == [0, 1, 2, 3, 4, "WorkerCrashed"] + \
                list(range(6, 12)), got
            assert p.map(abs, [-1, -2]) == [1, 2]  # still serving
            assert sum(s["restarts"] for s in p.stats()) >= 1
        print("ok")
    """)
    assert out.strip() == "ok"


def test_timeout_fails_only_the_hung_item():
    out = run_py("""
        def hang_on_2(x):
            if x == 2:
                time.sleep(600)  # past the child's limit: must be killed
            return x
        with Pool(2, timeout=0.5) as p:
            got = drain(p.imap(hang_on_2, range(5)), 5)
            assert "item 2" in str(got[2]), str(got[2])
            assert shape(got) == [0, 1, "TimeoutError", 3, 4], got
            try:
                p.apply(hang_on_2, (2,))
            except TimeoutError:
                pass
            else:
                raise SystemExit("apply did not time out")
        print("ok")
    """)
    assert out.strip() == "ok"


def test_imap_is_lazy_on_an_infinite_iterator():
    out = run_py("""
        pulled = [0]
        def counting():
            for i in itertools.count():
                pulled[0] += 1
                yield i
        with Pool(2) as p:
            first = list(itertools.islice(p.imap(abs, counting()), 1000))
            assert first == list(range(1000))
            assert pulled[0] < 100000, pulled[0]  # a bounded window
            got = list(itertools.islice(
                p.imap_unordered(abs, itertools.count(), chunksize=10), 500))
            assert len(got) == 500
        print("ok", pulled[0])
    """)
    assert out.startswith("ok")


def test_numpy_round_trip():
    pytest.importorskip("numpy")
    out = run_py("""
        import numpy as np
        arrays = [np.arange(100000, dtype=np.float32).reshape(100, 1000) + i
                  for i in range(6)]
        arrays.append(np.asfortranarray(np.ones((300, 200), np.int16)))
        with Pool(2) as p:
            back = p.map(lambda a: a, arrays)
            for a, b in zip(arrays, back):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.flags.f_contiguous == b.flags.f_contiguous
                assert np.array_equal(a, b)
            doubled = p.map(lambda a: a * 2, arrays[:2])
            assert np.array_equal(doubled[1], arrays[1] * 2)
            # apply's result comes with out-of-band buffers too
            assert np.array_equal(p.apply(np.negative, (arrays[0],)),
                                  -arrays[0])
            assert np.array_equal(p.apply(np.zeros, (3,)), np.zeros(3))
            # read-only flags travel both ways, as pickle keeps them
            ro = np.arange(1 << 16, dtype=np.int64)
            ro.flags.writeable = False
            seen = p.map(lambda a: a.flags.writeable, [ro, arrays[0]])
            assert seen == [False, True], seen
            back = p.map(lambda a: a, [ro, arrays[0]])
            assert not back[0].flags.writeable and back[1].flags.writeable
            assert np.array_equal(back[0], ro)
        print("ok")
    """)
    assert out.strip() == "ok"


def test_initializer_and_maxtasksperchild():
    out = run_py("""
        state = {}
        def init(v):
            os.environ["PP_INIT"] = str(v)
        def read(_):
            return os.environ.get("PP_INIT"), os.getpid()
        with Pool(2, initializer=init, initargs=(42,)) as p:
            got = p.map(read, range(10), chunksize=1)
            assert all(v == "42" for v, _ in got), got
        with Pool(1, maxtasksperchild=2) as p:
            pids = {pid for _, pid in p.map(read, range(8), chunksize=1)}
            assert len(pids) >= 3, pids
        print("ok")
    """)
    assert out.strip() == "ok"


def test_pool_returns_before_its_workers_and_a_broken_start_fails():
    """Pool() does not wait for its workers (as multiprocessing.Pool):
    stats() does, and shows every pid; workers whose initializer raises
    fail the first call with a clear error instead of hanging (where
    multiprocessing respawns them for ever)."""
    out = run_py("""
        def bad_init():
            raise ValueError("no database")
        with Pool(2) as p:
            assert all(s["pid"] > 0 for s in p.stats())
        p = Pool(2, initializer=bad_init)
        try:
            p.map(abs, range(10))
        except RuntimeError as e:
            assert "start-up" in str(e), e
        else:
            raise AssertionError("a map on workers that cannot start ran")
        try:
            p.apply(abs, (1,))
        except RuntimeError as e:
            assert "start-up" in str(e), e
        else:
            raise AssertionError("an apply on workers that cannot start ran")
        p.terminate()
        p.join()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_max_rss_recycles_workers():
    out = run_py("""
        kept = []
        def grow(_):  # 64 MiB more resident each call, kept
            kept.append(b"x" * (64 << 20))
            return os.getpid()
        with Pool(1, max_rss=150 << 20) as p:
            pids = p.map(grow, range(6), chunksize=1)
            assert len(set(pids)) >= 2, pids  # retired above 150 MiB
            assert sum(s["restarts"] for s in p.stats()) >= 1
        print("ok")
    """)
    assert out.strip() == "ok"


def test_unpicklable_argument_fails_alone():
    out = run_py("""
        import threading
        lock = threading.Lock()
        with Pool(2) as p:
            got = drain(p.imap(lambda x: 1, [1, lock, 3], chunksize=3), 3)
            assert "pickle" in str(got[1]), str(got[1])
            assert shape(got)[::2] == [1, 1], got
            def bad_result(x):
                return threading.Lock()
            try:
                p.map(bad_result, [1])
            except Exception as e:
                assert "pickle" in str(e.__cause__), str(e.__cause__)
            else:
                raise SystemExit("an unpicklable result passed")
        print("ok")
    """)
    assert out.strip() == "ok"


def test_lifecycle():
    out = run_py("""
        p = Pool(2)
        assert p.map(abs, [-1]) == [1]
        p.close()
        try:
            p.map(abs, [1])
        except ValueError:
            pass
        else:
            raise SystemExit("map after close")
        p.join()
        p = Pool(2)
        r = p.map_async(time.sleep, [0.3, 0.3])
        p.close()
        p.join()
        assert r.ready() and r.successful()
        p = Pool(2)
        p.terminate()
        p.join()
        try:
            with Pool(0):
                pass
        except ValueError:
            pass
        time.sleep(0.2)
        kids, dirs = leftovers()
        assert not dirs, dirs
        print("ok")
    """)
    assert out.strip() == "ok"


def test_ctrl_c_interrupts_and_leaves_nothing():
    code = PRELUDE + textwrap.dedent("""
        def slow(x):
            time.sleep(0.2)
            return x
        print("ready", flush=True)
        try:
            with Pool(2) as p:  # 200 s unless Ctrl-C really stops it
                p.map(slow, range(2000))
        except KeyboardInterrupt:
            time.sleep(0.3)
            kids, dirs = leftovers()
            print("interrupted", len(dirs), flush=True)
    """)
    p = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE,
                         text=True, env=_env(), cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=60)[0]  # a hang fails here
    finally:
        p.kill()
    assert out.strip() == "interrupted 0", out


def test_killed_caller_leaves_nothing():
    code = PRELUDE + textwrap.dedent("""
        with Pool(2) as p:
            print(" ".join(str(s["pid"]) for s in p.stats()), flush=True)
            p.map(time.sleep, [30, 30])
    """)
    p = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE,
                         text=True, env=_env(), cwd=ROOT)
    pids = [int(x) for x in p.stdout.readline().split()]
    p.kill()
    p.wait(10)
    deadline = time.time() + 10
    alive = pids
    while alive and time.time() < deadline:
        alive = [x for x in pids if os.path.exists("/proc/%d" % x)]
        time.sleep(0.1)
    assert not alive, alive


def test_missing_library_is_a_clear_error():
    env = _env()
    env["PICKLEPOOL_LIB"] = "/nonexistent/libpicklepool.so"
    p = subprocess.run([PYTHON, "-c", "import picklepool"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "/nonexistent/libpicklepool.so" in p.stderr
    assert "PICKLEPOOL_LIB" in p.stderr


def test_worker_module_refuses_to_run_alone():
    p = subprocess.run([PYTHON, "-m", "picklepool.worker"], env=_env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert "PICKLEPOOL_WORKER" in p.stderr


def test_native_kernels():
    pytest.importorskip("numpy")
    out = run_py("""
        import numpy as np
        from picklepool import native
        norm = native("examples.normalize")
        arrays = [np.random.rand(1 << 18).astype(np.float32) * (i + 2) + i
                  for i in range(6)]
        with Pool(2, plugins=["examples"]) as p:
            out = p.map(norm, arrays)
            for a, b in zip(arrays, out):
                assert b.dtype == np.float32 and b.shape == a.shape
                assert abs(float(b.mean())) < 1e-3
                assert abs(float(b.std()) - 1) < 1e-3
                want = (a - a.astype(np.float64).mean()) / \
                    a.astype(np.float64).std()
                assert np.allclose(b, want, atol=1e-4)
            sq = native("examples.square")
            assert list(p.imap(sq, range(5))) == [0, 1, 4, 9, 16]
            assert p.apply(sq, (7,)) == 49
            try:  # a kernel's TypeError is a TypeError
                p.map(norm, [np.zeros(4, np.float64)])
            except TypeError as e:
                assert "float32" in str(e), str(e)
            else:
                raise SystemExit("no TypeError")
            try:
                sq(3)
            except TypeError:
                pass
            # Python functions still run, in their own workers
            assert p.map(lambda x: x + 1, [1]) == [2]
            try:
                native("nodot")
            except ValueError:
                pass
        # close + join lets native work finish too
        p = Pool(2, plugins=["examples"])
        r = p.map_async(sq, range(6))
        p.close()
        p.join()
        assert r.get(0) == [0, 1, 4, 9, 16, 25]
        print("ok")
    """)
    assert out.strip() == "ok"


def test_apply_round_trips():
    """apply goes through pool_apply_raw (the fast lane when a worker polls:
    how many did is printed, not asserted - that is timing)."""
    out = run_py("""
        with Pool(2) as p:
            for i in range(300):
                assert p.apply(abs, (-i,)) == i
            lanes = sum(s["lane_items"] for s in p.stats())
            try:
                p.apply(lambda x: 1 / x, (0,))
            except ZeroDivisionError:
                pass
            assert p.apply(int, ("11",), {"base": 2}) == 3
        print("ok", lanes)
    """)
    assert out.startswith("ok")


def test_progress_bar_on_a_terminal_only():
    pytest.importorskip("tqdm")
    import pty
    code = PRELUDE + textwrap.dedent("""
        with Pool(2) as p:
            assert p.map(abs, range(-500, 500), progress=True)[0] == 500
            assert len(list(p.imap(abs, range(300), 10, progress=True))) == 300
        print("ok", flush=True)
    """)
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE,
                             stderr=slave, text=True, env=_env(), cwd=ROOT)
        os.close(slave)
        out = p.communicate(timeout=60)[0]
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert out.strip() == "ok"
    assert b"1000/1000" in seen and b"300/300" in seen, seen[-400:]
    # without a terminal: no bar, no complaint
    plain = run_py("""
        with Pool(2) as p:
            p.map(abs, range(10), progress=True)
        print("ok")
    """)
    assert plain.strip() == "ok"
