"""`make install` into a temporary prefix, as a new user follows the README.

Installs, checks `pkg-config --cflags` adds nothing but the prefix, builds
the README's C example with pkg-config and runs it, runs the installed
`picklepool` (plugins found in the installed plugin directory, not the
tree), then `make uninstall` and checks that nothing is left.
"""

import os
import re
import shutil
import subprocess

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
BUILD = os.environ.get("PICKLEPOOL_BUILD") or os.path.join(_REPO, "build")

if os.environ.get("PICKLEPOOL_SANITIZER"):
    pytest.skip("install test runs on the plain build", allow_module_level=True)
if shutil.which("pkg-config") is None or shutil.which("cc") is None:
    pytest.skip("needs pkg-config and cc", allow_module_level=True)


def readme_c_example():
    text = open(os.path.join(_REPO, "README.md")).read()
    m = re.search(r"## Quick example in C\n.*?```c\n(.*?)```", text, re.S)
    assert m, "README has no C example"
    return m.group(1)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    pre = tmp_path_factory.mktemp("prefix")
    p = subprocess.run(["make", "--no-print-directory", "-C", _REPO, "install",
                        "PREFIX=%s" % pre, "BUILD=%s" % BUILD],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    # Not root or not a system prefix: install says what to run instead.
    assert "ldconfig" in p.stdout, p.stdout
    return pre


def env_for(pre):
    env = dict(os.environ, PKG_CONFIG_PATH=str(pre / "lib" / "pkgconfig"))
    env.pop("PICKLEPOOL_PLUGIN_PATH", None)
    return env


def test_pkg_config_cflags_are_only_the_prefix(prefix):
    out = subprocess.run(["pkg-config", "--cflags", "picklepool"],
                         capture_output=True, text=True, env=env_for(prefix),
                         check=True).stdout.split()
    assert out == ["-I%s" % (prefix / "include")], out


def test_readme_c_example_builds_and_runs(prefix, tmp_path):
    env = env_for(prefix)
    src = tmp_path / "ex.c"
    src.write_text(readme_c_example())
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "picklepool"],
                           capture_output=True, text=True, env=env,
                           check=True).stdout.split()
    exe = tmp_path / "ex"
    p = subprocess.run(["cc", str(src), *flags, "-rdynamic", "-o", str(exe)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    # What the README says to run for a prefix the loader does not know.
    env["LD_LIBRARY_PATH"] = str(prefix / "lib")
    p = subprocess.run([str(exe)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "cube(999) = 997002999\n"


def test_installed_cli_finds_installed_plugins(prefix, tmp_path):
    cli = str(prefix / "bin" / "picklepool")
    env = env_for(prefix)
    p = subprocess.run([cli, "map", "--list"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert str(prefix / "lib" / "picklepool" / "plugins" / "examples.so") in p.stdout
    p = subprocess.run([cli, "demo", "--arrays", "4", "--mib", "1", "--runs",
                        "1", "--workers", "1"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


def test_uninstall_leaves_nothing(prefix):
    p = subprocess.run(["make", "--no-print-directory", "-C", _REPO,
                        "uninstall", "PREFIX=%s" % prefix, "BUILD=%s" % BUILD],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    left = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs]
    assert left == [], left
