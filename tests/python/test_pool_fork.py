"""Python workers forked from the fork server (picklepool.worker,
pool_global_init_main): each is a copy of the caller taken when its first
pool started the fork server, not an exec'd interpreter.

What that copy must and must not carry: it runs the caller's command line
with the fork server as parent; it sees the sys.path and initializer of the
pool that starts it, not only the snapshot's; the caller's threads, open
descriptors, buffered output, garbage and atexit handlers stay the
caller's; its random generators (random's, numpy's global one) are not
the caller's; it keeps working when the caller had threads (some holding
the GIL) or forked; and a fork server the front-end did not start makes
the pool exec its workers instead.  Tests that hold for exec'd workers too run
both ways (worker_mode).  Every pool runs in a child interpreter with a time
limit (run_ok).
"""

import os

import pytest

from pyhelpers import library, run_ok, run_py, worker_mode  # noqa: F401

FORK_ONLY = pytest.mark.skipif(
    os.environ.get("PICKLEPOOL_PYTHON_EXEC", "0") not in ("", "0"),
    reason="PICKLEPOOL_PYTHON_EXEC asks for exec'd workers")

SETUP = """
import threading

def parent_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def cmdline_of(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read()

def me(_):
    return os.getpid(), threading.active_count(), \\
        [t.name for t in threading.enumerate()]
"""


@FORK_ONLY
def test_workers_are_copies_of_the_caller():
    run_ok("""
        with Pool(2) as p:
            pids = [s["pid"] for s in p.stats()]
            servers = {parent_of(pid) for pid in pids}
            assert len(servers) == 1 and os.getpid() not in servers, servers
            (server,) = servers
            assert parent_of(server) == os.getpid()
            for pid in pids:  # not exec'd: the caller's own command line
                assert cmdline_of(pid) == cmdline_of(os.getpid())
            got = p.map(me, range(8), chunksize=1)
            assert {pid for pid, _, _ in got} <= set(pids), got
            assert all(n == 1 for _, n, _ in got), got
        kids, dirs = leftovers()
        assert not dirs, dirs
    """, setup=SETUP)


def test_exec_mode_runs_the_worker_module():
    run_ok("""
        os.environ["PICKLEPOOL_PYTHON_EXEC"] = "1"
        with Pool(1) as p:
            pid = p.stats()[0]["pid"]
            assert b"picklepool.worker" in cmdline_of(pid), cmdline_of(pid)
            assert p.map(abs, [-3]) == [3]
    """, setup=SETUP)


def test_fork_server_started_plainly_means_exec():
    run_ok("""
        import ctypes
        from picklepool import _lib
        err = _lib.PkError()
        # C code's early init (through CDLL: the GIL released) started the
        # fork server: it cannot run the Python main, so workers are exec'd
        assert _lib.pool_global_init(ctypes.byref(err)) == 0
        with Pool(1) as p:
            pid = p.stats()[0]["pid"]
            assert b"picklepool.worker" in cmdline_of(pid), cmdline_of(pid)
            assert p.map(abs, [-3]) == [3]
    """, setup=SETUP)


@FORK_ONLY
def test_caller_threads_stay_in_the_caller():
    run_ok("""
        stop = threading.Event()
        def spin():  # pure Python: asks for the GIL all the time
            n = 0
            while not stop.is_set():
                n += 1
        lock = threading.Lock()
        lock.acquire()
        threads = [threading.Thread(target=spin, name="spinner-%d" % i)
                   for i in range(2)]
        threads.append(threading.Thread(target=lock.acquire, name="blocked"))
        for t in threads:
            t.start()
        def die_on_3(x):
            if x == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return me(x)
        for _ in range(3):
            with Pool(2) as p:
                got = p.map(me, range(6), chunksize=1)
                assert all(names == ["MainThread"] for _, _, names in got), \\
                    got
                out = list(drain(p.imap(die_on_3, range(6), chunksize=1), 6))
                assert type(out[3]).__name__ == "WorkerCrashed", out
                assert all(o[1] == 1 for i, o in enumerate(out) if i != 3)
        stop.set()
        lock.release()
        for t in threads:
            t.join()
    """, setup=SETUP)


@FORK_ONLY
def test_first_pool_from_a_thread():
    run_ok("""
        res = {}
        def make():
            with Pool(2) as p:
                res["a"] = p.map(me, range(4))
        t = threading.Thread(target=make)
        t.start()
        t.join()
        assert all(n == 1 for _, n, _ in res["a"]), res
        with Pool(2) as p:  # the same fork server, from the main thread
            assert p.map(abs, [-1, -2]) == [1, 2]
    """, setup=SETUP)


@pytest.mark.usefixtures("worker_mode")
def test_sys_path_and_initializer_of_the_pool():
    run_ok("""
        import tempfile
        first = Pool(1)  # the fork server exists before what follows
        assert first.map(abs, [-1]) == [1]
        d = tempfile.mkdtemp()
        with open(os.path.join(d, "ppmod_late.py"), "w") as f:
            f.write("FACTOR = 3\\n"
                    "def triple(x):\\n    return x * FACTOR\\n"
                    "def setup(v):\\n    global FACTOR\\n    FACTOR = v\\n")
        sys.path.insert(0, d)
        import ppmod_late
        with Pool(2) as p:  # triple travels by reference
            assert p.map(ppmod_late.triple, range(4)) == [0, 3, 6, 9]
        def init(v):  # defined after the fork server: travels by value
            ppmod_late.setup(v)
        with Pool(2, initializer=init, initargs=(5,)) as p:
            assert p.map(ppmod_late.triple, range(4), chunksize=1) == \\
                [0, 5, 10, 15]
        first.terminate()
        first.join()
    """)


@pytest.mark.usefixtures("worker_mode")
def test_environment_is_the_fork_servers_plus_the_pools():
    run_ok("""
        os.environ["PP_BEFORE"] = "1"
        first = Pool(1)  # the fork server's environment is taken now
        os.environ["PP_AFTER"] = "1"
        def env(_):
            return (os.environ.get("PP_BEFORE"), os.environ.get("PP_AFTER"),
                    os.environ.get("PYTHONPATH", "").split(os.pathsep),
                    signal.getsignal(signal.SIGINT) is
                    signal.default_int_handler,
                    signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN)
        with Pool(1) as p:
            before, after, path, sigint, sigpipe = p.map(env, [0])[0]
        # exec'd and forked workers alike: what the fork server had, and
        # the pool's own PYTHONPATH (the caller's sys.path now)
        assert (before, after) == ("1", None), (before, after)
        assert os.getcwd() in path, path  # sys.path's "" as exec'd sees it
        assert sigint and sigpipe
        first.terminate()
        first.join()
    """)


@FORK_ONLY
def test_caller_descriptors_output_garbage_and_atexit():
    out = run_py("""
        import atexit, gc, tempfile
        gc.disable()  # the garbage below stays uncollected until the copy
        log = os.path.join(tempfile.mkdtemp(), "del.log")
        class Noisy:
            def __del__(self):
                with open(log, "a") as f:
                    f.write("del in %d\\n" % os.getpid())
        a, b = Noisy(), Noisy()
        a.other, b.other = b, a
        del a, b
        atexit.register(print, "atexit ran")
        r, w = os.pipe()
        print("buffered before the first pool", end="")  # not flushed
        def look(_):
            gc.collect()  # must not finalize the caller's garbage
            return os.readlink("/proc/self/fd/%d" % w)
        with Pool(2, maxtasksperchild=1) as p:  # workers exit often
            assert set(p.map(look, range(6), chunksize=1)) == {"/dev/null"}
            os.close(w)  # the workers do not hold the pipe: it ends
            assert os.read(r, 1) == b""
        gc.enable()
        gc.collect()
        with open(log) as f:
            assert f.read() == "del in %d\\n" % os.getpid() * 2
        print()
        print("ok")
    """)
    assert "ok" in out.splitlines(), out
    assert out.count("buffered before the first pool") == 1, out
    assert out.count("atexit ran") == 1, out


@FORK_ONLY
def test_child_of_the_caller_gets_its_own_fork_server():
    run_ok("""
        with Pool(2) as p:
            assert p.map(abs, [-1]) == [1]
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with Pool(2) as q:
                        got = q.map(me, range(4))
                        ok = all(parent_of(parent_of(w)) == os.getpid()
                                 for w, _, _ in got)
                        code = 0 if ok else 3
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \\
                status
            assert p.map(abs, [-2]) == [2]
    """, setup=SETUP)


@pytest.mark.usefixtures("worker_mode")
def test_random_generators_differ_between_workers():
    pytest.importorskip("numpy")
    run_ok("""
        import random
        import numpy as np
        np.random.seed(1)
        random.seed(1)
        def draw(_):
            return np.random.randint(1 << 62), random.getrandbits(62)
        with Pool(2, maxtasksperchild=1) as p:  # a new worker per item
            got = p.map(draw, range(8), chunksize=1)
        assert len({a for a, _ in got}) == 8, got  # numpy: not the caller's
        assert len({b for _, b in got}) == 8, got  # stdlib random
    """)


@pytest.mark.usefixtures("worker_mode")
def test_numpy_generator_with_a_cached_gaussian_differs_too():
    # one standard_normal() leaves the second Gaussian of the pair cached
    # in numpy's global generator: the copies must not all return it
    pytest.importorskip("numpy")
    run_ok("""
        import numpy as np
        np.random.seed(3)
        np.random.standard_normal()
        assert np.random.get_state()[3] == 1  # a Gaussian is cached
        def draw(_):
            return np.random.standard_normal(), np.random.randint(1 << 62)
        with Pool(2, maxtasksperchild=1) as p:  # a new worker per item
            got = p.map(draw, range(6), chunksize=1)
        assert len({g for g, _ in got}) == 6, got
        assert len({r for _, r in got}) == 6, got
    """)


@FORK_ONLY
def test_main_functions_of_the_snapshot_go_by_reference():
    # A function __main__ had when the fork server copied the caller is in
    # every forked worker: it travels by reference (no cloudpickle needed
    # in the workers); one defined or redefined later goes by value.
    run_ok("""
        import sys
        from picklepool import _protocol, worker

        def early(x):
            return x + 1

        with Pool(2) as p:
            assert p.map(early, range(5)) == [1, 2, 3, 4, 5]
            snap = worker.snapshot_main()
            assert snap.get("early") is early
            ref = _protocol.dump_function(early, snap)
            assert b"cloudpickle" not in ref and b"early" in ref

            def late(x):
                return x * 3
            globals()["late"] = late
            assert p.map(late, range(3)) == [0, 3, 6]  # by value

            def early(x):  # redefined after the copy: by value, new code
                return x - 1
            globals()["early"] = early
            assert p.map(early, range(3)) == [-1, 0, 1]
            assert _protocol.dump_function(early, snap) != ref
        # exec'd workers have none of __main__: every function by value
        os.environ["PICKLEPOOL_PYTHON_EXEC"] = "1"
        with Pool(1) as p:
            assert p.map(late, [2]) == [6]
    """)
