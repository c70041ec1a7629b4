"""examples/: the preprocessing pipeline runs end to end in its quick mode
(picklepool, multiprocessing.Pool and the serial loop, one child process
with a time limit) and learns something; its native kernels
(plugins/preprocess.c) agree with their numpy twins.  No timing is
asserted: throughput belongs to the example's output.
"""

import os
import re
import subprocess

import pytest

from pyhelpers import PYTHON, ROOT, env, library, run_ok  # noqa: F401

pytest.importorskip("numpy")
pytest.importorskip("sklearn")
pytest.importorskip("scipy")

PIPELINE = os.path.join(ROOT, "examples", "digits_pipeline.py")


def test_pipeline_quick_run():
    try:
        p = subprocess.run([PYTHON, PIPELINE, "--quick"], env=env(),
                           capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail("the pipeline ran past 240 s:\n%s" % (e.stdout or ""))
    assert p.returncode == 0, p.stdout + p.stderr
    acc = dict(re.findall(r"^(\S+).*accuracy (\d\.\d+)", p.stdout, re.M))
    assert set(acc) == {"picklepool", "multiprocessing.Pool", "serial"}, \
        p.stdout
    for name, a in acc.items():
        assert float(a) > 0.8, (name, p.stdout)
    assert re.search(r"images/s", p.stdout)
    assert "picklepool throughput" in p.stdout


def test_kernels_match_their_numpy_twins():
    run_ok("""
        import numpy as np
        from picklepool import native
        sys.path.insert(0, os.path.join(os.getcwd(), "examples"))
        import digits_pipeline as dp
        rng = np.random.default_rng(0)
        batch = (rng.random((37, 16, 24)) * 16).astype(np.float32)
        batch[3] = 5  # a constant image standardises to zeros
        tasks = [(batch, 11, 2, 0.5, 0.3), (batch, 12, 0, 0.0, 0.0),
                 (batch, 13, 3, 1.0, 0.0), (batch, 2**40, 1, 0.2, 1.0)]
        with Pool(2) as p:
            std = p.apply(native("preprocess.standardize"), (batch,))
            assert np.allclose(std, dp.np_standardize(batch), atol=1e-5)
            assert not std[3].any()
            out = p.map(native("preprocess.augment"), tasks)
            for t, o in zip(tasks, out):
                want = dp.np_augment(t)
                assert o.dtype == np.float32 and o.shape == batch.shape
                assert np.allclose(o, want, atol=1e-5), (t[1:],
                                                         abs(o - want).max())
            assert np.array_equal(out[1], batch)  # no shift, flip or noise
            for bad in [(batch,), (batch, 1, -1), (batch[0], 1),
                        (batch.astype(np.float64), 1), "x"]:
                try:
                    p.apply(native("preprocess.augment"), (bad,))
                except (TypeError, ValueError):
                    pass
                else:
                    raise SystemExit("accepted %r" % (bad,))
            f = dp.featurise(std)
            assert f.shape == (37, 192) and f.dtype == np.float32
    """)
