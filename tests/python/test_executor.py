"""picklepool.Executor: concurrent.futures' Executor on the Python workers.

Real Futures (wait, as_completed, cancel), map over several iterables in
chunks with a deadline counted from the call, exceptions with their type and
the worker's traceback, a killed worker failing only its call, shutdown with
and without waiting or cancelling.  Every executor runs in a child
interpreter with a time limit (pyhelpers.run_py).
"""

from pyhelpers import library, run_ok  # noqa: F401

SETUP = """
import concurrent.futures as cf
from picklepool import Executor, WorkerCrashed
"""


def test_submit_map_wait_as_completed():
    run_ok("""
        k = 3
        def add_k(x, y=0):
            return x + y + k
        with Executor(2) as ex:
            assert isinstance(ex, cf.Executor)
            fs = [ex.submit(pow, 2, i) for i in range(200)]
            assert all(isinstance(f, cf.Future) for f in fs)
            assert [f.result(30) for f in fs] == [2 ** i for i in range(200)]
            assert ex.submit(add_k, 1, y=10).result(30) == 14
            assert ex.submit(lambda: "by value").result(30) == "by value"
            fs = [ex.submit(time.sleep, d) for d in (0.3, 0.0, 0.1)]
            assert set(cf.as_completed(fs, timeout=30)) == set(fs)
            done, pending = cf.wait(fs, timeout=30)
            assert len(done) == 3 and not pending
            f = ex.submit(time.sleep, 0.5)
            done, pending = cf.wait([f], timeout=0.05)
            assert pending == {f} and not done
            for cs in (1, 3, 1000):
                got = list(ex.map(lambda a, b: a * b, range(50), range(30),
                                  chunksize=cs))
                assert got == [i * i for i in range(30)], (cs, got)
            assert list(ex.map(abs, [])) == []
            assert list(ex.map(add_k, [1, 2], [10, 20])) == [14, 25]
            sq = picklepool.native("examples.square")  # a C kernel
            assert ex.submit(sq, 7).result(30) == 49
            assert list(ex.map(sq, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
        assert f.done()  # leaving the block waited for it
    """, setup=SETUP)


def test_exceptions_keep_type_and_traceback():
    run_ok("""
        class Custom(Exception):
            pass
        def boom(x):
            if x == 3:
                raise Custom("three is bad")
            return x
        with Executor(2) as ex:
            f = ex.submit(boom, 3)
            e = f.exception(30)
            assert type(e) is Custom and str(e) == "three is bad", repr(e)
            tb = str(e.__cause__)
            assert "boom" in tb and "three is bad" in tb, tb
            try:
                f.result()
            except Custom:
                pass
            else:
                raise SystemExit("result() did not raise")
            got = []
            try:
                for v in ex.map(boom, range(10), chunksize=2):
                    got.append(v)
            except Custom as e:
                assert "boom" in str(e.__cause__)
            else:
                raise SystemExit("map did not raise")
            assert got == [0, 1, 2], got
            assert ex.submit(boom, 1).result(30) == 1  # still serving
    """, setup=SETUP)


def test_killed_worker_fails_only_its_call():
    run_ok("""
        def die_on_5(x):
            if x == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return x
        with Executor(2, retries=0) as ex:
            fs = [ex.submit(die_on_5, i) for i in range(8)]
            cf.wait(fs, timeout=30)
            e = fs[5].exception()
            assert isinstance(e, WorkerCrashed) and "SIGKILL" in str(e), e
            assert [f.result() for i, f in enumerate(fs) if i != 5] == \\
                [0, 1, 2, 3, 4, 6, 7]
            it = ex.map(die_on_5, range(8), chunksize=4)
            assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
            try:
                next(it)
            except WorkerCrashed as e:
                assert "SIGKILL" in str(e), str(e)
            else:
                raise SystemExit("no WorkerCrashed")
            assert ex.submit(abs, -1).result(30) == 1
    """, setup=SETUP)


def test_timeouts():
    run_ok("""
        # sleeps far past the child's time limit: only a deadline that
        # works, and a shutdown that does not wait for cancelled calls, let
        # the test end (timings themselves are not asserted)
        with Executor(2) as ex:
            it = ex.map(time.sleep, [0, 600, 0], timeout=0.5)
            assert next(it) is None
            try:
                next(it)
            except TimeoutError:
                pass
            else:
                raise SystemExit("map did not time out")
            f = ex.submit(time.sleep, 1)
            try:
                f.result(timeout=0.2)
            except cf.TimeoutError:  # the builtin TimeoutError since 3.11
                pass
            else:
                raise SystemExit("result() did not time out")
        with Executor(1, timeout=0.5) as ex:
            f = ex.submit(time.sleep, 600)
            assert isinstance(f.exception(20), TimeoutError), f.exception()
            assert ex.submit(abs, -2).result(20) == 2
    """, timeout=120, setup=SETUP)


def test_cancel_and_shutdown():
    run_ok("""
        ex = Executor(1)
        first = ex.submit(time.sleep, 0.5)
        while not first.running():
            time.sleep(0.01)
        fs = [ex.submit(time.sleep, 0.2) for _ in range(6)]
        assert fs[-1].cancel() and fs[-1].cancelled()
        done, pending = cf.wait(fs, timeout=30)
        assert not pending and fs[-1] in done
        assert all(f.result() is None for f in fs[:-1])
        first = ex.submit(time.sleep, 0.3)
        while not first.running():
            time.sleep(0.01)
        fs = [ex.submit(time.sleep, 0.2) for _ in range(8)]
        ex.shutdown(wait=True, cancel_futures=True)
        assert first.result() is None and all(f.done() for f in fs)
        # a second dispatcher may have taken one call before the shutdown
        assert sum(f.cancelled() for f in fs) >= 7, fs
        for call in (lambda: ex.submit(abs, 1), lambda: ex.map(abs, [1])):
            try:
                call()
            except RuntimeError as e:
                assert "shutdown" in str(e)
            else:
                raise SystemExit("work accepted after shutdown")
        ex.shutdown()  # twice is harmless

        ex = Executor(2)
        fs = [ex.submit(time.sleep, 0.2) for _ in range(4)]
        ex.shutdown(wait=False)  # returns while they run
        assert not all(f.done() for f in fs)
        assert all(f.result(30) is None for f in fs)  # still ran

        ex = Executor(2)  # dropped without shutdown: collected, nothing hangs
        assert ex.submit(abs, -1).result(30) == 1
        del ex
        import gc
        for _ in range(100):  # a raw map's ctypes callback is a cycle
            time.sleep(0.1)
            gc.collect()
            kids, dirs = leftovers()
            if not dirs:
                break
        assert not dirs, dirs
        try:
            Executor(0)
        except ValueError:
            pass
        else:
            raise SystemExit("Executor(0) accepted")
    """, setup=SETUP)


def test_initializer_and_max_tasks_per_child():
    run_ok("""
        def init(v):
            os.environ["PP_INIT"] = str(v)
        def read(_):
            return os.environ.get("PP_INIT"), os.getpid()
        with Executor(2, initializer=init, initargs=(7,)) as ex:
            assert {v for v, _ in ex.map(read, range(6))} == {"7"}
        with Executor(1, max_tasks_per_child=1) as ex:
            pids = {ex.submit(read, i).result(30)[1] for i in range(3)}
            assert len(pids) == 3, pids
    """, setup=SETUP)
