"""`pip install ./python` works offline, into a venv, and the installed
package finds the library of the tree it was built from."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")


def test_pip_install_offline_into_a_venv(tmp_path):
    build = os.environ.get("PICKLEPOOL_BUILD", os.path.join(ROOT, "build"))
    if not os.path.exists(os.path.join(build, "libpicklepool.so")):
        pytest.skip("library not built")
    if os.path.abspath(build) != os.path.join(ROOT, "build"):
        pytest.skip("the package records the tree's build/, not %s" % build)
    venv = tmp_path / "venv"
    r = subprocess.run([PYTHON, "-m", "venv", "--system-site-packages",
                        str(venv)], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        pytest.skip("no venv module: %s" % r.stderr.strip()[-200:])
    env = {k: v for k, v in os.environ.items()
           if k not in ("PICKLEPOOL_LIB", "PYTHONPATH")}
    env["PIP_NO_INDEX"] = "1"  # offline: nothing may come from an index
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index",
                        os.path.join(ROOT, "python")], capture_output=True,
                       text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    code = ("import picklepool, sys\n"
            "assert picklepool.__file__.startswith(sys.prefix)\n"
            "with picklepool.Pool(2) as p:\n"
            "    print(p.map(lambda x: x * 3, range(4)))\n")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code],
                       capture_output=True, text=True, timeout=120, env=env,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 3, 6, 9]"
