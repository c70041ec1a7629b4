"""Shared pytest setup for the Python tests.

The codec cross-check loads build/libpicklepool.so into this interpreter with
ctypes (see pkcodec.py).  A sanitizer build (`make SANITIZER=address`) links
the .so against libasan, which must be loaded before everything else, so this
file re-executes pytest once with the sanitizer runtime in LD_PRELOAD (and leak
detection off: the interpreter itself never frees everything) when it is not
loaded yet, as in a manual run (`make test` preloads it itself).

Fixtures:
  codec   the pkcodec module with the library loaded; skips when the library
          was not built and no build was requested (PICKLEPOOL_BUILD unset),
          fails when `make test` set PICKLEPOOL_BUILD and it is missing.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pkcodec  # noqa: E402

_REEXEC_GUARD = "PICKLEPOOL_PYTEST_REEXEC"


def _asan_loaded():
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def _sanitizer_preload(so):
    """Path of the libasan the .so needs when it is not loaded yet."""
    if not os.path.exists(so) or os.environ.get(_REEXEC_GUARD) or _asan_loaded():
        return None
    try:
        out = subprocess.run(
            ["ldd", so], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("libasan.so") and "=>" in parts:
            return parts[parts.index("=>") + 1]
    return None


def pytest_configure(config):
    runtime = _sanitizer_preload(pkcodec.lib_path())
    if runtime is None:
        return
    # pytest captures fds 1 and 2 by now: give them back to the new process
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.suspend_global_capture(in_=True)
    env = dict(os.environ)
    env[_REEXEC_GUARD] = "1"
    env["LD_PRELOAD"] = (runtime + " " + env.get("LD_PRELOAD", "")).strip()
    env["ASAN_OPTIONS"] = ":".join(
        filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"])
    )
    argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + list(argv[1:]), env)


@pytest.fixture(scope="session")
def codec():
    try:
        pkcodec.load_library()
    except OSError as e:
        msg = "cannot load %s: %s" % (pkcodec.lib_path(), e)
        if os.environ.get("PICKLEPOOL_BUILD"):
            pytest.fail(msg)
        pytest.skip(msg + " (run `make build/libpicklepool.so`)")
    return pkcodec
