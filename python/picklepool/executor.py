"""executor - picklepool.Executor: concurrent.futures' Executor on a Pool.

``submit`` returns real ``concurrent.futures.Future`` objects, so
``concurrent.futures.wait`` and ``as_completed`` take them.  A submitted
call waits in a queue, where ``Future.cancel`` can still take it back, until
one of a few dispatcher threads (one per worker, and one more so that a
worker finds its next call waiting) runs it with ``Pool.apply``: the C
runtime schedules, pins, supervises and times it out as every other call.

``map`` is one raw map over chunks of argument tuples (one pickle and one
foreign call per chunk) that a thread of its own collects as chunks come
back, so that, as with ProcessPoolExecutor, the work runs whether or not
the iterator is read, and ``timeout`` counts from the call to ``map``.

Unlike ProcessPoolExecutor, a worker's death does not break the executor:
the call it was running is retried (``retries``) and then fails alone with
``WorkerCrashed``; the others go on.
"""

import collections
import concurrent.futures
import queue
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Optional

from . import _protocol
from .native import native
from .pool import Pool, _RawMap, _rebuild

__all__ = ["Executor"]

_POLL_S = 0.1  # how often a map's collector looks whether it was cancelled


def _dispatch(calls, pool):
    """A dispatcher thread: runs queued calls one at a time until it takes
    a None.  Holds no reference to the executor, so that an executor
    dropped without shutdown() can still be collected (see _stop)."""
    while True:
        call = calls.get()
        if call is None:
            return
        fut, fn, args, kwargs = call
        del call
        if fut.set_running_or_notify_cancel():
            try:
                value = pool.apply(fn, args, kwargs)
            except BaseException as e:  # the call's outcome, whatever it is
                fut.set_exception(e)
            else:
                fut.set_result(value)
        del fut, fn, args, kwargs


def _stop(calls, n):
    """Lets n dispatchers finish the queued calls and exit."""
    for _ in range(n):
        calls.put(None)


class _MapRun:
    """One Executor.map: a collector thread reads the raw map's chunks, in
    input order, into a queue that the iterator reads."""

    def __init__(self, pool, fn, items, chunksize):
        if isinstance(fn, native):  # its own workers, an argument a batch
            self._raw = pool._rawmap(_protocol.STAR, fn, items, 1, True)
        else:
            # Each chunk its own batch, as each is its own task in
            # ProcessPoolExecutor, so that a chunk's results come back when
            # it is done, not when the runtime's batch is: _RawMap does that
            # for any timeout, and reads a timeout of 0 as none.
            pool._check_running()
            self._raw = _RawMap(pool,
                                _protocol.dump_call(_protocol.STAR, fn),
                                items, chunksize, True, pool._timeout or 0)
        self._chunks = collections.deque()
        self._cond = threading.Condition()
        self._done = False
        self._error = None  # what stopped the map as a whole
        self._cancelled = False
        self.thread = threading.Thread(target=self._collect, daemon=True,
                                       name="picklepool-executor-map")
        self.thread.start()

    def _collect(self):
        try:
            while not self._cancelled:
                try:
                    chunk = self._raw.next_chunk(_POLL_S)
                except TimeoutError:
                    continue
                except StopIteration:
                    break
                with self._cond:
                    self._chunks.append(chunk)
                    self._cond.notify_all()
        except BaseException as e:
            self._error = e
        finally:
            self._raw.close()  # here, not in cancel(): one thread reads it
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def cancel(self):
        """Items not started yet will not run (the collector frees the
        raw map, which cancels them)."""
        self._cancelled = True

    def results(self, deadline):
        try:
            while True:
                with self._cond:
                    while not self._chunks and not self._done:
                        if deadline is None:
                            self._cond.wait()
                            continue
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError
                        self._cond.wait(left)
                    if not self._chunks:
                        if self._error is not None:
                            raise self._error
                        return
                    _, values, errors = self._chunks.popleft()
                for i, value in enumerate(values):
                    if i in errors:
                        raise _rebuild(errors[i])
                    yield value
                del values, errors
        finally:
            self.cancel()


class Executor(concurrent.futures.Executor):
    """concurrent.futures' Executor on picklepool's Python workers.

    ``Executor(max_workers=None, *, initializer=None, initargs=(),
    max_tasks_per_child=None, timeout=None, retries=2,
    placement="compact", max_rss=None, plugins=())``: max_workers
    defaults to one worker per core the process may use, each pinned to
    its core.  The keyword arguments are those of ProcessPoolExecutor and
    picklepool.Pool:
    ``timeout`` (seconds a call may run before its worker is killed and
    the call fails with TimeoutError), ``retries`` (worker deaths a call may
    survive before it fails with WorkerCrashed), ``placement`` ("compact",
    "spread" or "none"), ``max_rss`` (bytes; a worker above it is
    recycled), ``plugins`` (for native kernels: picklepool.native).
    Functions may be lambdas, closures or defined in __main__.
    """

    def __init__(self, max_workers: Optional[int] = None, *,
                 initializer: Optional[Callable[..., Any]] = None,
                 initargs: tuple = (),
                 max_tasks_per_child: Optional[int] = None,
                 timeout: Optional[float] = None, retries: int = 2,
                 placement: str = "compact",
                 max_rss: Optional[int] = None,
                 plugins: Iterable[str] = ()) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_child is not None and (
                not isinstance(max_tasks_per_child, int) or
                max_tasks_per_child < 1):
            raise ValueError("max_tasks_per_child must be >= 1")
        self._pool = Pool(max_workers, initializer, initargs,
                          max_tasks_per_child, placement=placement,
                          timeout=timeout, retries=retries, max_rss=max_rss,
                          plugins=plugins)
        self._max_workers = self._pool._processes
        self._calls = queue.SimpleQueue()  # (future, fn, args, kwargs)
        self._lock = threading.Lock()
        self._threads = []  # dispatchers and map collectors
        self._dispatchers = 0
        self._maps = weakref.WeakSet()
        self._shutdown = False
        self._finish = None

    def _check_open(self):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future:
        """Schedules fn(*args, **kwargs) in a worker; returns its Future."""
        with self._lock:
            self._check_open()
            fut = concurrent.futures.Future()
            self._calls.put((fut, fn, args, kwargs))
            if not self._dispatchers:
                self._dispatchers = self._max_workers + 1
                for _ in range(self._dispatchers):
                    self._start(_dispatch, self._calls, self._pool)
                self._finish = weakref.finalize(self, _stop, self._calls,
                                                self._dispatchers)
        return fut

    def _start(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True,
                             name="picklepool-executor")
        self._threads.append(t)
        t.start()

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """fn(*args) for args in zip(*iterables), run at once in chunks of
        chunksize; returns an iterator of the results in order, which
        raises an item's exception when it reaches that item, and
        TimeoutError when a result is not there timeout seconds after the
        call to map."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        deadline = None if timeout is None else time.monotonic() + timeout
        items = list(zip(*iterables))
        with self._lock:
            self._check_open()
            run = _MapRun(self._pool, fn, items, chunksize)
            self._threads.append(run.thread)
            self._maps.add(run)
        return run.results(deadline)

    def shutdown(self, wait: bool = True, *,
                 cancel_futures: bool = False) -> None:
        """No new calls; with cancel_futures, calls (and map items) not
        started yet are cancelled; with wait, returns when the rest have
        finished and the workers have exited (else that happens in the
        background)."""
        with self._lock:
            first = not self._shutdown
            self._shutdown = True
            if cancel_futures:
                stops = 0  # a shutdown before this one queued them
                while True:
                    try:
                        call = self._calls.get_nowait()
                    except queue.Empty:
                        break
                    if call is None:
                        stops += 1
                    else:
                        call[0].cancel()
                _stop(self._calls, stops)
                for run in list(self._maps):
                    run.cancel()
            if first and self._finish is not None:
                self._finish()  # the dispatchers' stop marks, queued last
        if wait:
            self._close()
        elif first:
            threading.Thread(target=self._close, daemon=True,
                             name="picklepool-executor-shutdown").start()

    def _close(self):
        for t in list(self._threads):
            t.join()
        self._pool.close()
        self._pool.join()
