"""pathos - picklepool.ProcessPool: pathos.pools.ProcessPool's API on Pool.

pathos maps take several iterables, zipped (the map stops at the shortest),
and call ``f(*args)``; here that is the Pool's star mode, so each chunk of
argument tuples is one pickle and one foreign call.  Lambdas and closures
travel by value, as pathos's dill sends them.

As in pathos, pools are shared: ProcessPool objects with the same ``id``
(default None), node count and keyword arguments use one Pool, made on
first use; ``close``/``join`` stop it for all of them, and ``clear`` (or
``restart``) forgets it so that the next call starts a fresh one.
"""

import threading
from typing import Any, Callable, Iterable, Iterator, Optional

from . import _protocol
from .pool import AsyncResult, IMapIterator, Pool

__all__ = ["ProcessPool"]

_STATE = {}  # id -> (nodes, kwds, Pool), as pathos's __STATE
_STATE_LOCK = threading.Lock()


class ProcessPool:
    """pathos.pools.ProcessPool on picklepool's Python workers.

    ``ProcessPool(nodes=None, *, id=None, **kwds)``: nodes (also spelled
    ``ncpus`` or ``processes``) defaults to one worker per core the process
    may use; kwds go to picklepool.Pool (initializer, initargs,
    maxtasksperchild, timeout, retries, placement, max_rss).
    """

    def __init__(self, nodes: Optional[int] = None, *, id: Any = None,
                 **kwds: Any) -> None:
        for alias in ("ncpus", "processes"):
            if alias in kwds:
                if nodes is not None:
                    raise TypeError("got multiple values for keyword "
                                    "argument 'nodes'")
                nodes = kwds.pop(alias)
        self._nodes = nodes
        self._id = id
        self._kwds = kwds

    # -- the shared pool

    def _mine(self, entry):
        return (entry is not None and entry[0] == self._nodes and
                entry[1] == self._kwds)

    def _serve(self):
        """The shared Pool, made when there is none for this id; one made
        with other nodes or kwds is closed and joined first, as pathos
        does."""
        with _STATE_LOCK:
            entry = _STATE.get(self._id)
            if self._mine(entry):
                return entry[2]
            if entry is not None:
                entry[2].close()
                entry[2].join()
            pool = Pool(self._nodes, **self._kwds)
            _STATE[self._id] = (self._nodes, dict(self._kwds), pool)
            return pool

    def _current(self):
        with _STATE_LOCK:
            entry = _STATE.get(self._id)
        return entry[2] if self._mine(entry) else None

    def _starmap(self, f, args, chunksize, ordered):
        pool = self._serve()
        raw = pool._rawmap(_protocol.STAR, f, zip(*args), chunksize, ordered)
        return IMapIterator(raw)

    # -- pathos's API

    def map(self, f: Callable[..., Any], *args: Iterable[Any],
            **kwds: Any) -> list:
        """[f(*a) for a in zip(*args)], in parallel, in order; raises the
        first failed item's exception.  kwds: chunksize."""
        return self._serve().starmap(f, zip(*args), **kwds)

    def imap(self, f: Callable[..., Any], *args: Iterable[Any],
             chunksize: int = 1) -> Iterator[Any]:
        """map, lazily: an iterator of the results in order."""
        return self._starmap(f, args, chunksize, True)

    def uimap(self, f: Callable[..., Any], *args: Iterable[Any],
              chunksize: int = 1) -> Iterator[Any]:
        """map, lazily: an iterator of the results as they complete."""
        return self._starmap(f, args, chunksize, False)

    def amap(self, f: Callable[..., Any], *args: Iterable[Any],
             **kwds: Any) -> AsyncResult:
        """map, without waiting: returns an object whose get() returns the
        list.  kwds: chunksize, callback, error_callback."""
        return self._serve().starmap_async(f, zip(*args), **kwds)

    def pipe(self, f: Callable[..., Any], *args: Any, **kwds: Any) -> Any:
        """f(*args, **kwds) in a worker; returns its result."""
        return self._serve().apply(f, args, kwds)

    def apipe(self, f: Callable[..., Any], *args: Any,
              **kwds: Any) -> AsyncResult:
        """pipe, without waiting: returns an object whose get() returns the
        result."""
        return self._serve().apply_async(f, args, kwds)

    def close(self) -> None:
        """No new work on the shared pool; submitted work finishes."""
        pool = self._current()
        if pool is not None:
            pool.close()

    def terminate(self) -> None:
        """Stops the shared pool now; unfinished items fail."""
        pool = self._current()
        if pool is not None:
            pool.terminate()

    def join(self) -> None:
        """Waits for the shared pool's workers to exit, after close() or
        terminate()."""
        pool = self._current()
        if pool is not None:
            pool.join()

    def clear(self) -> None:
        """Closes, joins and forgets the shared pool: the next call starts
        a fresh one."""
        with _STATE_LOCK:
            entry = _STATE.get(self._id)
            if not self._mine(entry):
                return
            del _STATE[self._id]
        entry[2].close()
        entry[2].join()

    def restart(self, force: bool = False) -> None:
        """Starts a fresh pool in place of a closed one (of a running one
        too with force)."""
        pool = self._current()
        if pool is not None and not force and pool._state == "RUN":
            raise ValueError("the pool is still running: close it first, "
                             "or pass force=True")
        if pool is not None and pool._state == "RUN":
            pool.terminate()
        self.clear()
        self._serve()

    @property
    def nodes(self) -> int:
        """The number of workers; setting it makes the next call use a pool
        of that size."""
        if self._nodes is not None:
            return self._nodes
        return self._serve()._processes

    @nodes.setter
    def nodes(self, nodes: int) -> None:
        self._nodes = int(nodes)

    ncpus = nodes

    def __repr__(self):
        return "<pool ProcessPool(ncpus=%s)>" % (
            self._nodes if self._nodes is not None else "*")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.clear()
