"""picklepool - multiprocessing.Pool on a C runtime: pinned workers that
survive crashes, enforced timeouts, lazy imap, lambdas and closures.

    from picklepool import Pool
    with Pool() as pool:
        print(pool.map(lambda x: x * x, range(10)))

Code written for multiprocessing.Pool runs unchanged with
``from picklepool import Pool``.  Arrays made with ``picklepool.empty``,
``zeros`` or ``asarray`` lie in shared memory that every worker reads in
place: maps pass them without copying (picklepool.shared).  See the README
of the source tree.
"""

from ._lib import pk_version as _pk_version
from .native import native  # eager: the submodule of that name shadows it

__all__ = ["Pool", "native", "AsyncResult", "WorkerCrashed", "RemoteTraceback",
           "RemoteError", "TimeoutError", "Executor", "ProcessPool",
           "empty", "zeros", "asarray", "is_shared", "__version__"]

TimeoutError = TimeoutError  # what a timed-out item raises (the builtin)
__version__ = _pk_version().decode()

# The front-ends load on first use: a Python worker imports this package
# too, and starts faster without them.
_LAZY = {"Pool": "pool", "AsyncResult": "pool", "WorkerCrashed": "pool",
         "RemoteTraceback": "pool", "RemoteError": "pool",
         "Executor": "executor", "ProcessPool": "pathos",
         "empty": "shared", "zeros": "shared", "asarray": "shared",
         "is_shared": "shared"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError("module 'picklepool' has no attribute %r" % name)
    import importlib
    value = getattr(importlib.import_module("." + mod, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
