"""picklepool - multiprocessing.Pool on a C runtime: pinned workers that
survive crashes, enforced timeouts, lazy imap, lambdas and closures.

    from picklepool import Pool
    with Pool() as pool:
        print(pool.map(lambda x: x * x, range(10)))

Code written for multiprocessing.Pool runs unchanged with
``from picklepool import Pool``.  See the README of the source tree.
"""

from ._lib import pk_version as _pk_version
from .native import native
from .pool import AsyncResult, Pool, RemoteError, RemoteTraceback, WorkerCrashed
from .executor import Executor
from .pathos import ProcessPool

__all__ = ["Pool", "native", "AsyncResult", "WorkerCrashed", "RemoteTraceback",
           "RemoteError", "TimeoutError", "__version__"]
__all__ += ["Executor", "ProcessPool"]

TimeoutError = TimeoutError  # what a timed-out item raises (the builtin)
__version__ = _pk_version().decode()
