"""libpicklepool.so as Python's ctypes sees it: version, exports, plugins.

The library exports exactly the functions its public headers declare (see
scripts/check_exports.py), so ctypes finds pk_version but no pk__* helper,
and pk_version() agrees with include/picklepool/version.h.  Plugins are built
without linking libpicklepool and resolve their pk_* / pool_* calls in the
global symbol scope: a Python process must load the library with
RTLD_GLOBAL for pool_plugin_load to work.  ctypes' default, RTLD_LOCAL,
keeps the library out of that scope and the plugin fails to load with an
undefined symbol; the last test records that (an expected failure).  Each
plugin case runs in a fresh interpreter, since a library loaded once with
RTLD_GLOBAL stays global for the life of the process.
"""

import ctypes
import os
import re
import subprocess
import sys

import pytest

import pkcodec

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
VERSION_H = os.path.join(_REPO, "include", "picklepool", "version.h")
LIB = pkcodec.lib_path()
PLUGIN = os.path.join(os.path.dirname(LIB), "plugins", "examples.so")

# Under `make test` (PICKLEPOOL_BUILD set) a missing library or plugin is a
# failure; by hand, before `make`, the module is skipped.
_missing = pytest.fail if os.environ.get("PICKLEPOOL_BUILD") else pytest.skip
if not (os.path.exists(LIB) and os.path.exists(PLUGIN)):
    _missing("needs %s and %s (run `make`)" % (LIB, PLUGIN),
             **({} if _missing is pytest.fail else {"allow_module_level": True}))

# Loads the library in the given mode, loads the examples plugin and calls
# examples.square(7) in this process; prints the result or the error.
CHILD = r"""
import ctypes, sys

lib_path, plugin, mode = sys.argv[1:4]
lib = ctypes.CDLL(lib_path, mode=getattr(ctypes, mode))

class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("sys_errno", ctypes.c_int),
                ("offset", ctypes.c_longlong), ("opcode", ctypes.c_int),
                ("msg", ctypes.c_char * 256)]

vp, P = ctypes.c_void_p, ctypes.POINTER
lib.pool_plugin_load.argtypes = [ctypes.c_char_p, P(Error)]
lib.pk_doc_new.argtypes = [P(vp)]
lib.pk_doc_free.argtypes = [P(vp)]
lib.pk_doc_free.restype = None
lib.pk_tuple_new.argtypes = [vp, ctypes.c_size_t]
lib.pk_tuple_new.restype = vp
lib.pk_int.argtypes = [vp, ctypes.c_int64]
lib.pk_int.restype = vp
lib.pk_tuple_set.argtypes = [vp, ctypes.c_size_t, vp]
lib.pk_tuple_set.restype = None
lib.pool_call_local.argtypes = [ctypes.c_char_p, ctypes.c_char_p, vp, vp, vp,
                                P(vp), P(Error)]
lib.pk_as_int.argtypes = [vp, P(ctypes.c_int64)]

err = Error()
if lib.pool_plugin_load(plugin.encode(), ctypes.byref(err)) != 0:
    sys.exit("pool_plugin_load: " + err.msg.decode())
doc = vp()
assert lib.pk_doc_new(ctypes.byref(doc)) == 0
args = lib.pk_tuple_new(doc, 1)
lib.pk_tuple_set(args, 0, lib.pk_int(doc, 7))
res, n = vp(), ctypes.c_int64()
if lib.pool_call_local(b"examples", b"square", doc, args, None,
                       ctypes.byref(res), ctypes.byref(err)) != 0:
    sys.exit("pool_call_local: " + err.msg.decode())
assert lib.pk_as_int(res, ctypes.byref(n)) == 0
lib.pk_doc_free(ctypes.byref(doc))
print(n.value)
"""


def run_child(mode):
    return subprocess.run([sys.executable, "-c", CHILD, LIB, PLUGIN, mode],
                          capture_output=True, text=True, timeout=60)


def header_version():
    with open(VERSION_H) as f:
        text = f.read()
    parts = [int(re.search(r"^#define PK_VERSION_%s (\d+)$" % p, text,
                           re.M).group(1))
             for p in ("MAJOR", "MINOR", "PATCH")]
    return parts


def test_version_matches_header():
    lib = ctypes.CDLL(LIB)
    lib.pk_version.restype = ctypes.c_char_p
    major, minor, patch = header_version()
    assert lib.pk_version().decode() == "%d.%d.%d" % (major, minor, patch)
    assert lib.pk_version_number() == major * 10000 + minor * 100 + patch


def test_only_public_symbols():
    lib = ctypes.CDLL(LIB)
    for name in ("pk_version", "pk_loads", "pool_map", "pool_plugin_load"):
        assert hasattr(lib, name), name
    for name in ("pk__malloc", "pk__err", "pool__registry_plugins"):
        assert not hasattr(lib, name), name


def test_plugin_with_rtld_global():
    r = run_child("RTLD_GLOBAL")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "49"


def test_plugin_with_rtld_local():
    """ctypes' default: pool_plugin_load promotes the library to the global
    scope, where plugins resolve its API."""
    r = run_child("RTLD_LOCAL")
    assert "undefined symbol" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
