"""picklepool.joblib - a joblib parallel backend named "picklepool".

Importing this module registers it::

    import joblib
    import picklepool.joblib  # noqa: F401

    with joblib.parallel_backend("picklepool", n_jobs=2):
        joblib.Parallel()(joblib.delayed(f)(i) for i in range(10))

and scikit-learn's ``n_jobs`` runs on it inside such a block.  The backend
is joblib's multiprocessing backend with picklepool.Pool in place of
multiprocessing's: joblib batches calls (auto-batching) and hands each
batch to ``Pool.apply_async``; the workers are pinned, respawned and timed
out by the C runtime.  ``parallel_backend``'s keyword arguments after
n_jobs go to the Pool (placement, timeout, retries, initializer, ...).

Calls that need shared memory (``require="sharedmem"``) fall back to
joblib's threads, as with every process backend.
"""

from typing import Any, Callable, Optional

import joblib
from joblib.parallel import (AutoBatchingMixin, FallbackToBackend,
                             ParallelBackendBase, SequentialBackend)

from .pool import AsyncResult, Pool

__all__ = ["PicklepoolBackend"]


class PicklepoolBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ParallelBackendBase on a picklepool.Pool, made by
    configure() and stopped by terminate()."""

    supports_timeout = True
    # joblib >= 1.3 asks: results are fetched by Parallel's own thread
    supports_retrieve_callback = False

    def __init__(self, nesting_level: Optional[int] = None,
                 inner_max_num_threads: Optional[int] = None,
                 **pool_args: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._pool_args = pool_args  # parallel_backend's extra keywords
        self._pool = None

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        """n_jobs as joblib counts it: -1 every core, -2 all but one, ..."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(joblib.cpu_count() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: Optional[int] = 1, parallel: Any = None,
                  prefer: Optional[str] = None,
                  require: Optional[str] = None, **parallel_args: Any) -> int:
        """Starts a Pool of n_jobs workers; returns n_jobs.  One job runs
        in the caller (joblib's sequential backend).  Parallel's other
        arguments (for multiprocessing's memmaps and context) do not apply:
        arrays travel pickled, out of band."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(
                SequentialBackend(nesting_level=self.nesting_level))
        self._pool = Pool(n_jobs, **self._pool_args)
        self.parallel = parallel
        return n_jobs

    def apply_async(self, func: Callable[[], Any],
                    callback: Optional[Callable[[Any], Any]] = None
                    ) -> AsyncResult:
        """Runs one batch of calls in a worker; callback gets its list of
        results when it succeeded."""
        return self._pool.apply_async(func, callback=callback)

    def terminate(self) -> None:
        """Stops the workers now."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Stops the workers after a failed call; with ensure_ready, starts
        a fresh pool for the next one."""
        self.terminate()
        # Batches Parallel took from the failed call's input ahead of time
        # wait in its _ready_batches queue, which joblib (1.2) keeps across
        # calls: the next call on the same Parallel would run them first and
        # return their results with its own.  They belong to the failed call.
        ready = getattr(self.parallel, "_ready_batches", None)
        while ready is not None and not ready.empty():
            try:
                ready.get(block=False)
            except Exception:  # queue.Empty: another thread took the last
                break
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs,
                           parallel=self.parallel,
                           **self.parallel._backend_args)


joblib.register_parallel_backend("picklepool", PicklepoolBackend)
