"""Shared helpers of the tests of the Python front-end: every pool runs in a
child interpreter with a time limit (run_py), so a hang fails its test
instead of blocking CI, and each child can check that it leaves no worker
process or ipc directory behind (leftovers() in PRELUDE).

A test module imports what it uses, the `library` fixture included (it is
autouse: importing it is enough to skip or fail the module when the library
is missing), and `worker_mode` to run its tests with forked and with exec'd
workers:

    from pyhelpers import PRELUDE, library, run_ok, run_py  # noqa: F401
"""

import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")

# a TMPDIR of our own, so that leftovers() sees these tests' ipc directories
# only (other programs may run pools meanwhile); made afresh per module
_TMP = os.path.join(tempfile.gettempdir(), "pp-pytest-%d" % os.getpid())


def env():
    """The environment of a child interpreter: this tree's package and
    library, and the private TMPDIR."""
    e = dict(os.environ)
    e["TMPDIR"] = _TMP
    e["PYTHONPATH"] = os.path.join(ROOT, "python")
    build = os.environ.get("PICKLEPOOL_BUILD", os.path.join(ROOT, "build"))
    e["PICKLEPOOL_LIB"] = os.path.join(os.path.abspath(build),
                                       "libpicklepool.so")
    return e


@pytest.fixture(scope="module", autouse=True)
def library():
    """Skips the module when the library was not built (fails it when
    `make test` asked for a build), and gives it a fresh TMPDIR."""
    lib = env()["PICKLEPOOL_LIB"]
    if not os.path.exists(lib):
        if os.environ.get("PICKLEPOOL_BUILD"):
            pytest.fail("%s is missing" % lib)
        pytest.skip("%s not built" % lib)
    os.makedirs(_TMP, exist_ok=True)
    yield
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(params=["fork", "exec"])
def worker_mode(request, monkeypatch):
    """Runs a test once per way a pool starts its Python workers: forked
    from the fork server (the default) and exec'd (PICKLEPOOL_PYTHON_EXEC=1,
    also what a fork server started without the Python front-end gives).
    A module opts in with pytestmark = pytest.mark.usefixtures(...)."""
    if request.param == "exec":
        monkeypatch.setenv("PICKLEPOOL_PYTHON_EXEC", "1")
    else:
        monkeypatch.delenv("PICKLEPOOL_PYTHON_EXEC", raising=False)
    return request.param


PRELUDE = textwrap.dedent("""
    import os, sys, time, signal, itertools, glob
    import picklepool
    from picklepool import Pool

    def leftovers():
        # children from /proc, not ps: under make SANITIZER=address the
        # environment preloads libasan, and ps hangs with it
        kids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/stat" % pid) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid():
                kids.append(pid)
        dirs = glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                      "picklepool-*"))
        return kids, dirs

    def drain(it, n):  # n results of an iterator: values, or exceptions
        got = []
        for _ in range(n):
            try:
                got.append(next(it))
            except StopIteration:
                raise
            except Exception as e:
                got.append(e)
        return got

    def shape(got):  # the values, each exception as its class name
        return [type(g).__name__ if isinstance(g, Exception) else g
                for g in got]
""")


def run_py(body, timeout=60, expect_rc=0, setup=""):
    """Runs PRELUDE + setup + body in a fresh interpreter; returns its
    stdout.  setup is a module's own prelude (its imports, say)."""
    code = PRELUDE + textwrap.dedent(setup) + textwrap.dedent(body)
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                       timeout=timeout, env=env(), cwd=ROOT)
    if p.returncode != expect_rc:
        pytest.fail("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s"
                    % (p.returncode, expect_rc, p.stdout, p.stderr))
    return p.stdout


def run_ok(body, timeout=60, setup=""):
    """run_py, and checks that the body ran to its end (it prints "ok"
    after the body's last line)."""
    out = run_py(textwrap.dedent(body) + '\nprint("ok")\n', timeout,
                 setup=setup)
    assert out.splitlines()[-1:] == ["ok"], out
