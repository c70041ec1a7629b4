"""picklepool.joblib: the "picklepool" joblib backend.

Checks that the calls really run in picklepool's workers (the worker's main
module is the caller's for a forked worker, picklepool.worker for an exec'd
one, and its pid is one of the pool's), that results
come back in order, that errors and timeouts abort the call and leave the
backend usable, and that scikit-learn's n_jobs gives the results of
n_jobs=1 on it.  Every pool runs in a child interpreter with a time limit
(pyhelpers.run_py).
"""

import pytest

from pyhelpers import library, run_ok  # noqa: F401

pytest.importorskip("joblib")

SETUP = """
import joblib
import picklepool.joblib
from joblib import Parallel, delayed, parallel_backend

def where(i):
    main = sys.modules["__main__"].__spec__
    return i, os.getpid(), main.name if main else None
"""


def test_runs_on_picklepool_workers_in_order():
    run_ok("""
        with parallel_backend("picklepool", n_jobs=2):
            got = Parallel()(delayed(where)(i) for i in range(100))
        assert [i for i, _, _ in got] == list(range(100))
        # an exec'd worker runs picklepool.worker; a forked one is a copy
        # of this process, whose __main__ (python -c) has no spec
        mains = {m for _, _, m in got}
        if os.environ.get("PICKLEPOOL_PYTHON_EXEC"):
            assert mains == {"picklepool.worker"}, got
        else:
            assert mains == {None}, got
        assert os.getpid() not in {pid for _, pid, _ in got}
        with Parallel(n_jobs=2, backend="picklepool") as par:
            got = par(delayed(where)(i) for i in range(20))
            pool_pids = {s["pid"] for s in par._backend._pool.stats()}
            assert {pid for _, pid, _ in got} <= pool_pids, (got, pool_pids)
            assert par(delayed(lambda x: -x)(i) for i in range(3)) == \\
                [0, -1, -2]
        with parallel_backend("picklepool", n_jobs=-1):
            assert Parallel()(delayed(abs)(-i) for i in range(5)) == \\
                [0, 1, 2, 3, 4]
        with parallel_backend("picklepool", n_jobs=1):  # joblib's own loop
            got = Parallel()(delayed(where)(0) for _ in range(2))
            assert {pid for _, pid, _ in got} == {os.getpid()}
        time.sleep(0.2)
        kids, dirs = leftovers()
        assert not dirs, dirs
    """, setup=SETUP, timeout=120)


def test_errors_and_timeouts_abort_the_call():
    run_ok("""
        def boom(x):
            if x == 7:
                raise ValueError("seven")
            return x
        with parallel_backend("picklepool", n_jobs=2):
            try:
                Parallel()(delayed(boom)(i) for i in range(20))
            except ValueError as e:
                assert "seven" in str(e) and "boom" in str(e.__cause__)
            else:
                raise SystemExit("no exception")
        with Parallel(n_jobs=2, backend="picklepool") as par:
            try:
                par(delayed(boom)(i) for i in range(20))
            except ValueError:
                pass
            else:
                raise SystemExit("no exception")
            assert par(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
        # a sleep far past the child's time limit: only an aborted call
        # lets the test end (no timing assertion, which a loaded machine
        # would break)
        try:
            Parallel(n_jobs=2, backend="picklepool", timeout=0.5)(
                delayed(time.sleep)(d) for d in (0, 600))
        except TimeoutError:
            pass
        else:
            raise SystemExit("no timeout")
    """, setup=SETUP, timeout=120)


def test_sklearn_n_jobs_matches_serial():
    pytest.importorskip("sklearn")
    run_ok("""
        import numpy as np
        from sklearn.datasets import load_digits, load_iris
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score
        ran = []  # items the backend's pools ran, read before they stop
        stop = picklepool.joblib.PicklepoolBackend.terminate
        def counting_terminate(self):
            if self._pool is not None:
                ran.append(sum(s["items"] for s in self._pool.stats()))
            stop(self)
        picklepool.joblib.PicklepoolBackend.terminate = counting_terminate

        X, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=1000)
        serial = cross_val_score(model, X, y, cv=4, n_jobs=1)
        with parallel_backend("picklepool", n_jobs=2):
            par = cross_val_score(model, X, y, cv=4, n_jobs=2)
        assert np.array_equal(serial, par), (serial, par)
        assert ran and ran[-1] >= 1, ran

        X, y = load_digits(return_X_y=True)
        def forest(n_jobs):
            f = RandomForestClassifier(n_estimators=16, random_state=0,
                                       n_jobs=n_jobs)
            return f.fit(X, y).predict_proba(X)
        serial = forest(1)
        del ran[:]
        with parallel_backend("picklepool", n_jobs=2):
            par = forest(2)
        assert np.array_equal(serial, par)
        assert ran and ran[0] >= 1, ran  # the trees were fitted there
    """, setup=SETUP, timeout=180)
