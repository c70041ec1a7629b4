"""Arrays that are never copied, from Python (picklepool.shared, issue 12):
arrays in the shared heap (picklepool.empty / zeros / asarray, and the
Pool methods of the same names) go to native kernels and Python functions
by reference, and results come back as views of the pool's arena, freed
with their last reference; pool.copies() counts what was still copied.

Every pool runs in a child interpreter with a time limit (pyhelpers); no
test asserts a timing.
"""

import pytest

from pyhelpers import library, run_ok  # noqa: F401

pytest.importorskip("numpy")

SETUP = """
    import gc
    import pickle
    import numpy as np
    from picklepool import native, WorkerCrashed
    from picklepool.shared import _block_of, usage

    MIB = 1 << 20
    norm = native("examples.normalize")
    hflip = native("preprocess.hflip")

    def kind(a):  # "heap", "result" (a view of an arena) or None (a copy)
        b = _block_of(a)
        return None if b is None else b.kind

    def normalized(a):
        a64 = a.astype(np.float64)
        return ((a64 - a64.mean()) / a64.std()).astype(np.float32)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def same(a, b):  # dtype, shape, order and values
        assert a.dtype == b.dtype, (a.dtype, b.dtype)
        assert a.shape == b.shape, (a.shape, b.shape)
        assert a.flags.c_contiguous == b.flags.c_contiguous
        assert a.flags.f_contiguous == b.flags.f_contiguous
        assert np.array_equal(a, b)

    def identity(a):
        return a

    def kill_on(a):  # SIGKILLs its worker on the array that starts with -1
        if a.flat[0] == -1:
            os.kill(os.getpid(), signal.SIGKILL)
        return a + 1
"""


def test_empty_zeros_asarray():
    run_ok("""
        assert usage() == (0, 0)
        a = picklepool.empty((3, 5), np.float32)
        assert a.shape == (3, 5) and a.dtype == np.float32
        assert a.flags.c_contiguous and a.flags.writeable
        assert picklepool.is_shared(a) and kind(a) == "heap"
        assert a.ctypes.data % 4096 == 0
        f = picklepool.zeros((4, 6), "int16", order="F")
        assert f.flags.f_contiguous and not f.flags.c_contiguous
        assert not f.any() and picklepool.is_shared(f)
        assert picklepool.empty(7).shape == (7,)
        assert picklepool.empty(0).size == 0  # (both freed at once)
        assert usage()[0] == 2
        for bad, exc in [(dict(dtype=object), TypeError),
                         (dict(order="K"), ValueError)]:
            try:
                picklepool.empty(3, **bad)
            except exc:
                pass
            else:
                raise SystemExit("no %s for %r" % (exc.__name__, bad))
        # views and slices keep the block alive; it goes with the last
        v = a[1:, ::2]
        a[:] = 7
        del a
        gc.collect()
        assert usage()[0] == 2 and (v == 7).all()
        assert not picklepool.is_shared(v)  # not contiguous
        del v, f
        gc.collect()
        assert usage() == (0, 0), usage()

        # asarray: heap arrays as they are, anything else copied once
        plain = np.arange(12.0).reshape(3, 4)
        h = picklepool.asarray(plain)
        assert h is not plain and picklepool.is_shared(h)
        same(h, plain)
        assert picklepool.asarray(h) is h
        rows = h[1:]  # a contiguous view of the heap: as it is
        assert picklepool.asarray(rows) is rows
        cols = h[:, ::2]  # not contiguous: a map would pickle a copy
        assert not picklepool.is_shared(cols)
        assert picklepool.asarray(cols) is not cols
        assert picklepool.asarray(h, order="F") is not h
        ft = picklepool.asarray(np.asfortranarray(plain))
        assert ft.flags.f_contiguous and picklepool.is_shared(ft)
        nc = plain[:, ::2]  # not contiguous: copied, C order
        hn = picklepool.asarray(nc)
        assert hn.flags.c_contiguous and np.array_equal(hn, nc)
        ro = np.arange(5)
        ro.flags.writeable = False
        hro = picklepool.asarray(ro)
        assert not hro.flags.writeable and picklepool.is_shared(hro)
        assert picklepool.asarray([1, 2, 3], dtype=np.uint8).dtype == np.uint8
        assert not picklepool.is_shared(plain)
        assert not picklepool.is_shared([1, 2])
        del h, ft, hn, hro, rows, cols
        gc.collect()
        assert usage() == (0, 0), usage()
        with Pool(1) as p:  # the Pool's methods are the same functions
            x = p.empty((2, 2), np.int32)
            z = p.zeros(3)
            assert picklepool.is_shared(x) and not z.any()
            assert p.asarray(x) is x
    """, setup=SETUP)


def test_native_maps_copy_nothing():
    run_ok("""
        rng = np.random.default_rng(1)
        plain = [rng.standard_normal(MIB // 4 * (i + 1), dtype=np.float32)
                 for i in range(6)]
        heap = [picklepool.asarray(a) for a in plain]
        with Pool(2, plugins=["examples"]) as p:
            for rep in range(3):
                out = p.map(norm, heap)
                for a, b in zip(plain, out):
                    assert kind(b) == "result", kind(b)
                    assert b.flags.writeable and b.dtype == np.float32
                    assert np.allclose(b, normalized(a), atol=1e-4)
            assert p.copies() == {"in": 0, "out": 0}, p.copies()
            # read-only heap arrays go by reference too
            ro = picklepool.asarray(plain[0])
            ro.flags.writeable = False
            assert np.allclose(p.apply(norm, (ro,)), normalized(plain[0]),
                               atol=1e-4)
            assert next(p.imap(norm, [ro])).shape == ro.shape
            assert p.copies() == {"in": 0, "out": 0}, p.copies()
            # plain arrays: copied once into the arena, results still views
            out = p.map(norm, plain)
            assert p.copies() == {"in": sum(a.nbytes for a in plain),
                                  "out": 0}, p.copies()
            assert all(kind(b) == "result" for b in out)
    """, setup=SETUP)


def test_python_maps_take_heap_arrays():
    run_ok("""
        arrays = [picklepool.asarray(np.full((256, 1024), i, np.float32))
                  for i in range(6)]
        with Pool(2) as p:
            out = p.map(lambda a: a * 2, arrays)
            for i, b in enumerate(out):
                assert kind(b) == "result" and b.flags.writeable
                assert b.shape == (256, 1024) and (b == 2 * i).all()
            c = p.copies()
            # nothing copied in; each result copied once, by its worker
            assert c["in"] == 0 and c["out"] == sum(a.nbytes for a in out), c
            # apply lends big buffers too
            assert np.array_equal(p.apply(np.negative, (arrays[3],)),
                                  -arrays[3])
            assert p.copies()["in"] == 0, p.copies()
            small = picklepool.asarray(np.arange(10))  # in band: fast lane
            assert list(p.apply(np.negative, (small,))) == list(-np.arange(10))
    """, setup=SETUP)


def test_python_functions_get_views_of_read_only_heap_arrays():
    # A read-only heap array reaches a Python function as a view of the
    # caller's memory (no copy, also none in the worker); a writable one as
    # a private copy the function may change without touching the caller's.
    run_ok("""
        from picklepool import _lib

        def where(a):
            return (bool(_lib.pool_worker_in_shared(a.ctypes.data, a.nbytes)),
                    a.flags.writeable, float(a.sum()))

        def scribble(a):
            a[...] = -1
            return float(a.sum())

        ro = picklepool.empty((512, 512), np.float32)
        ro[...] = 1
        ro.flags.writeable = False
        rw = picklepool.empty((512, 512), np.float32)
        rw[...] = 1
        with Pool(2) as p:
            assert p.map(where, [ro, rw]) == [(True, False, 512 * 512.0),
                                               (False, True, 512 * 512.0)]
            assert p.map(scribble, [rw]) == [-512 * 512.0]
            assert (rw == 1).all()  # the caller's array is untouched
            kept = p.apply(lambda a: a, (ro,))  # returned: the result's copy
            assert np.array_equal(kept, ro)
            assert p.copies()["in"] == 0, p.copies()
    """, setup=SETUP)


def test_dtypes_shapes_order_flags():
    run_ok("""
        rng = np.random.default_rng(5)
        cases = []
        for dt in ["int8", "uint16", "int32", "int64", "float32", "float64",
                   "complex64", "complex128", "bool"]:
            for shape in [(70000,), (300, 257), (7, 40, 130), (1, 65536)]:
                x = (rng.standard_normal(shape) * 50).astype(dt)
                cases.append(x)
                cases.append(x.copy(order="F"))  # another object
        ro = cases[5].copy()
        ro.flags.writeable = False
        cases.append(ro)
        with Pool(2, plugins=["preprocess"]) as p:
            for src in (cases, [picklepool.asarray(x) for x in cases]):
                back = p.map(identity, src)
                flipped = p.map(hflip, src)
                for x, b, f in zip(src, back, flipped):
                    same(b, x)
                    assert b.flags.writeable == x.flags.writeable
                    same(f, x[..., ::-1].copy(order="K"))
                    assert f.flags.writeable  # a kernel's new array
                    if x.nbytes >= 64 << 10:  # smaller: in the socket
                        assert kind(b) == "result" and kind(f) == "result"
                    else:
                        assert kind(b) is None and kind(f) is None
            # plain arrays of 64 KiB and more were copied once per map
            big = sum(x.nbytes for x in cases if x.nbytes >= 64 << 10)
            assert p.copies()["in"] == 2 * big, (p.copies(), big)
            # non-contiguous arguments: numpy pickles a contiguous copy
            # (in band), and that is what a worker gets
            img = picklepool.asarray(rng.standard_normal((512, 1024),
                                                         dtype=np.float32))
            for nc in (img[:, ::2], img[::3], img.T):
                want = pickle.loads(pickle.dumps(nc, protocol=5))
                same(p.apply(identity, (nc,)), want)
                same(p.map(identity, [nc])[0], want)
                same(p.map(hflip, [nc])[0], want[..., ::-1].copy(order="K"))
            assert p.map(identity, [np.zeros((0, 5))])[0].shape == (0, 5)
    """, setup=SETUP, timeout=120)


def test_results_outlive_their_pool():
    run_ok("""
        rng = np.random.default_rng(2)
        plain = [rng.standard_normal(MIB, dtype=np.float32) for _ in range(4)]
        heap = [picklepool.asarray(a) for a in plain]
        p = Pool(2, plugins=["examples"])
        nat = p.map(norm, heap)
        py = p.map(lambda a: a - 1, heap)
        view = nat[1][10:20]
        p.terminate()
        p.join()
        del p
        gc.collect()
        for a, b, c in zip(plain, nat, py):
            assert kind(b) == "result" and kind(c) == "result"
            assert np.allclose(b, normalized(a), atol=1e-4)
            assert np.array_equal(c, a - 1)
        del nat
        gc.collect()
        assert np.allclose(view, normalized(plain[1])[10:20], atol=1e-4)
        with Pool(1, plugins=["examples"]) as q:  # a closed pool too
            r = q.map(norm, heap[:1])
            q.close()
            q.join()
        assert np.allclose(r[0], normalized(plain[0]), atol=1e-4)
        # and new pools run while those pages are still held
        with Pool(2, plugins=["examples"]) as q:
            again = q.map(norm, heap)
        for a, b in zip(plain, again):
            assert np.allclose(b, normalized(a), atol=1e-4)
        assert np.array_equal(py[3], plain[3] - 1)
    """, setup=SETUP)


def test_results_freed_with_their_last_reference():
    # one worker, one item a map: the next result goes where the last one
    # was (first fit) only when that one was released
    run_ok("""
        a = picklepool.asarray(np.arange(MIB, dtype=np.float32))
        with Pool(1, plugins=["examples"]) as p:
            def one():
                r = next(p.imap(norm, [a]))
                assert kind(r) == "result"
                return r
            r1 = one()
            at = r1.ctypes.data
            del r1
            gc.collect()
            r2 = one()
            assert r2.ctypes.data == at  # r1's memory, released
            v = r2[5:]  # a view keeps it
            del r2
            gc.collect()
            r3 = one()
            assert r3.ctypes.data != at
            assert np.allclose(v, normalized(a)[5:], atol=1e-4)
            del v, r3
            gc.collect()
            assert one().ctypes.data == at
            # dropped while its iterator still holds the batch: freed
            # once, with it (the next results are right, and distinct)
            it = p.imap(norm, [a] * 30)
            kept = []
            for i in range(30):
                r = next(it)
                if i % 3:
                    kept.append(r)
                del r
            want = normalized(a)
            assert all(np.allclose(r, want, atol=1e-4) for r in kept)
            assert len({r.ctypes.data for r in kept}) == len(kept)
    """, setup=SETUP)


def test_rss_flat_over_repeated_maps():
    run_ok("""
        rng = np.random.default_rng(3)
        a = picklepool.asarray(rng.standard_normal(MIB, dtype=np.float32))
        b = picklepool.asarray(rng.standard_normal(MIB // 2))  # 4 MiB f64
        with Pool(2, plugins=["examples"]) as p:
            def step(i):
                r = p.map(norm, [a])[0]
                assert abs(float(r[7]) - float(normalized(a)[7])) < 1e-4
                s = p.apply(np.negative, (b,))
                assert s[i % 100] == -b[i % 100]
            for i in range(50):
                step(i)
            gc.collect()
            before = rss()
            for i in range(500):
                step(i)
            gc.collect()
            after = rss()
            print("RSS after 50 rounds %d KiB, after 550: %d KiB"
                  % (before >> 10, after >> 10))
            assert after - before < 48 * MIB, (before, after)
            assert p.copies()["in"] == 0, p.copies()
        assert usage()[0] == 2
    """, setup=SETUP, timeout=180)


def test_worker_killed_mid_map():
    run_ok("""
        arrays = [picklepool.asarray(np.full(MIB // 4, i, np.float32))
                  for i in range(12)]
        arrays[7][0] = -1  # the poison one
        rng = np.random.default_rng(4)
        rnd = [picklepool.asarray(rng.standard_normal(MIB // 4,
                                                      dtype=np.float32))
               for _ in range(4)]
        with Pool(2, plugins=["examples"]) as p:
            before = p.map(norm, rnd)  # views held across the crash
            got = drain(p.imap(kill_on, arrays, chunksize=3), 12)
            assert shape(got)[7] == "WorkerCrashed", shape(got)
            for i, g in enumerate(got):
                if i != 7:
                    assert kind(g) == "result", (i, kind(g))
                    assert g[1] == i + 1 and g.shape == (MIB // 4,)
            assert "SIGKILL" in str(got[7])
            # the pool goes on, and views taken before the crash still
            # read right after the worker's slot was respawned
            again = p.map(lambda a: a * 3, arrays[:6])
            assert [float(x[1]) for x in again] == [0, 3, 6, 9, 12, 15]
            for a, b in zip(rnd, before):
                assert np.allclose(b, normalized(a), atol=1e-4)
            assert p.copies()["in"] == 0, p.copies()
            # a native worker killed mid-map (examples.crash): only that
            # item fails, the arrays around it come back
            crash = native("examples.crash")
            got = drain(p.imap(crash, [1.0, 2.0, -1.0, 4.0]), 4)
            assert shape(got) == [1.0, 2.0, "WorkerCrashed", 4.0], shape(got)
            assert all(np.allclose(b, normalized(a), atol=1e-4)
                       for a, b in zip(rnd, p.map(norm, rnd)))
        del got, again, before
        gc.collect()
        time.sleep(0.2)
        kids, dirs = leftovers()
        assert not dirs, dirs
    """, setup=SETUP, timeout=120)
