"""picklepool.ProcessPool: pathos.pools.ProcessPool's API on the Python
workers.

Several iterables zipped as pathos zips them (stopping at the shortest),
lambdas and closures by value, imap/uimap/amap/pipe/apipe, exceptions with
their type and the worker's traceback, and pathos's shared pools with
close/join/clear/restart.  Every pool runs in a child interpreter with a
time limit (pyhelpers.run_py).
"""

from pyhelpers import library, run_ok  # noqa: F401

SETUP = """
from picklepool import ProcessPool
"""


def test_maps_over_several_iterables():
    run_ok("""
        def make(n):
            return lambda a, b: (a + b) * n
        p = ProcessPool(nodes=2)
        assert p.nodes == p.ncpus == 2
        assert p.map(make(2), range(10), range(100, 105)) == \\
            [(a + b) * 2 for a, b in zip(range(10), range(100, 105))]
        assert p.map(abs, [-1, -2, 3]) == [1, 2, 3]
        assert p.map(pow, [2, 3], [5, 2], chunksize=1) == [32, 9]
        assert p.map(pow, [], []) == []
        assert list(p.imap(pow, [2, 3, 4], [2, 2])) == [4, 9]
        assert sorted(p.uimap(lambda x: x * x, range(20))) == \\
            [x * x for x in range(20)]
        r = p.amap(lambda a, b: a - b, [5, 6], [1, 1])
        assert r.get(30) == [4, 5] and r.ready() and r.successful()
        assert p.pipe(divmod, 17, 5) == (3, 2)
        assert p.pipe(int, "ff", base=16) == 255
        assert p.apipe(pow, 2, 10).get(30) == 1024
        sq = picklepool.native("examples.square")  # a C kernel
        assert p.map(sq, range(4)) == list(p.imap(sq, range(4))) == \
            [0, 1, 4, 9]
        got = list(p.imap(lambda i: i, iter(range(1000)), chunksize=50))
        assert got == list(range(1000))
        p.close()
        p.join()
        p.clear()
    """, setup=SETUP)


def test_exceptions_keep_type_and_traceback():
    run_ok("""
        def boom(x, y):
            if x == 3:
                raise KeyError("three")
            return x + y
        with ProcessPool(2) as p:
            try:
                p.map(boom, range(6), range(6))
            except KeyError as e:
                assert "boom" in str(e.__cause__), str(e.__cause__)
            else:
                raise SystemExit("no exception")
            got = []
            it = p.imap(boom, range(5), [0] * 5)
            for _ in range(5):
                try:
                    got.append(next(it))
                except KeyError:
                    got.append("err")
            assert got == [0, 1, 2, "err", 4], got
            r = p.amap(boom, [3], [0])
            r.wait(30)
            assert not r.successful()
            try:
                p.apipe(boom, 3, 0).get(30)
            except KeyError:
                pass
            else:
                raise SystemExit("apipe did not raise")
    """, setup=SETUP)


def test_shared_pools_close_join_clear_restart():
    run_ok("""
        a, b = ProcessPool(2), ProcessPool(nodes=2)
        assert a.map(abs, [-1]) == [1]
        pids = {s["pid"] for s in a._serve().stats()}
        assert a._serve() is b._serve()  # one pool, as in pathos
        assert ProcessPool(ncpus=2)._serve() is a._serve()
        other = ProcessPool(2, id="other")
        assert other._serve() is not a._serve()
        other.clear()
        a.close()
        a.join()
        try:
            b.map(abs, [1])
        except ValueError as e:
            assert "not running" in str(e)
        else:
            raise SystemExit("map on a closed pool")
        b.clear()  # forgotten: the next call starts a fresh one
        assert b.map(abs, [-2]) == [2]
        assert not pids & {s["pid"] for s in b._serve().stats()}
        try:
            b.restart()
        except ValueError:
            pass
        else:
            raise SystemExit("restart of a running pool")
        b.close()
        b.restart()
        assert b.pipe(abs, -3) == 3
        c = ProcessPool(1)  # other nodes: the shared pool is replaced
        assert c.map(abs, [-4]) == [4] and len(c._serve().stats()) == 1
        with ProcessPool(1) as d:
            assert d.map(abs, [-5]) == [5]
        try:
            ProcessPool(2, ncpus=2)
        except TypeError:
            pass
        else:
            raise SystemExit("nodes given twice")
        time.sleep(0.2)
        kids, dirs = leftovers()
        assert not dirs, dirs
    """, setup=SETUP)
