"""pool - picklepool.Pool: multiprocessing.Pool's API on the C runtime.

Thin over C (STYLE.md 16): scheduling, supervision (pinning, respawn, poison
items, timeouts, recycling), ordering and transport are the C runtime's; this
module pickles chunks of arguments with CPython, hands them to a raw map
(``pool_imap_raw``) of Python workers (picklepool.worker), and turns the
chunks' results back into values and exceptions.

A chunk whose worker dies (or that runs past its deadline) is run again one
argument at a time, so that only the guilty argument fails, with
``WorkerCrashed`` (naming the signal) or ``TimeoutError``.
"""

import ctypes
import itertools
import os
import pickle
import sys
import threading
import time

from . import _lib, _protocol, worker
from . import shared as _shared
from .native import dumps_item, exception_of, native

__all__ = ["Pool", "AsyncResult", "WorkerCrashed", "RemoteTraceback"]

_PLACEMENTS = {"compact": 0, "spread": 1, "none": 2}
_POLL_S = 0.1  # how often a blocked call looks at Python's signals
_CHUNK_MAX = 32768  # arguments in a chunk of the default chunksize


class WorkerCrashed(Exception):
    """The worker running this item died (a signal, the OOM killer, an exit)
    every time it was tried; the message names how."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker, attached as
    the ``__cause__`` of the exception re-raised in the caller."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


class RemoteError(Exception):
    """An exception raised in a worker that could not be pickled back: its
    type name and message."""


def _rebuild(err):
    obj, typename, msg, tb = err
    exc = obj if isinstance(obj, BaseException) else RemoteError(
        "%s: %s" % (typename, msg))
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _raise(code, err, what="picklepool"):
    raise RuntimeError("%s: %s (%s)" % (what, err.text(), _lib.errname(code)))


def _result(res, native=False):
    """The object a successful raw result carries: a chunk's (values,
    errors) from a Python worker, or a native kernel's value.  Its large
    buffers are views of the pool's arena, not copies (shared.py)."""
    rbufs = [_shared.result_buffer(res.bufs[k].data, res.bufs[k].len)
             for k in range(res.nbufs)]
    raw = ctypes.string_at(res.data, res.len)
    if native:  # the C codec's plain pickle
        return pickle.loads(raw, buffers=rbufs)
    return _protocol.unpack(raw, rbufs)


def _buffer_table(bufs, alive):
    """The PkBuffer table of pickle buffers, for a raw item: their memory
    is lent, not copied (a map passes an array of the shared heap by
    reference); what must outlive the call is appended to alive."""
    table = (_lib.PkBuffer * max(1, len(bufs)))()
    alive.append(table)
    for k, b in enumerate(bufs):
        raw = b.raw()
        table[k].data = _lib.address_of(raw, alive)
        table[k].len = raw.nbytes
        table[k].readonly = 1
    return table


# An apply whose buffers add up to less than this is pickled in band, so
# that it may take an idle worker's fast lane (which carries no buffers).
_APPLY_INBAND_MAX = 64 << 10


def _failure(status, msg, index=None):
    """The error tuple of an item the runtime failed with status (a name
    of _lib.ERRNAMES); index names the argument when the runtime's item was
    exactly that one."""
    if index is not None and status in ("ECRASHED", "ETIMEDOUT"):
        msg = "%s (item %d)" % (msg, index)
    if status == "ECRASHED":
        exc = WorkerCrashed(msg)
    elif status == "ETIMEDOUT":
        exc = TimeoutError(msg)
    else:
        exc = RuntimeError("picklepool: %s: %s" % (status, msg))
    return (exc, type(exc).__name__, msg, msg)


class _Handle:
    """The C pool, destroyed when the Pool is done with it and no iterator
    still refers to it (pool_destroy must not race a live iterator)."""

    def __init__(self, ptr):
        self.ptr = ptr
        self.refs = 1
        self.lock = threading.Lock()

    def ref(self):
        with self.lock:
            if self.refs == 0:
                raise ValueError("Pool not running")
            self.refs += 1

    def unref(self):
        with self.lock:
            self.refs -= 1
            last = self.refs == 0
        if last:
            _lib.pool_destroy(ctypes.byref(self.ptr))


def _copies_of(handles):
    """(in, out): pool_shared_copies summed over the C pools of handles
    (those destroyed meanwhile are skipped)."""
    i, o = ctypes.c_uint64(0), ctypes.c_uint64(0)
    tin = tout = 0
    for h in handles:
        try:
            h.ref()  # not destroyed while we read it
        except ValueError:
            continue
        try:
            _lib.pool_shared_copies(h.ptr, ctypes.byref(i), ctypes.byref(o))
            tin += i.value
            tout += o.value
        finally:
            h.unref()
    return tin, tout


class _RawMap:
    """One raw map over chunks of arguments: an iterator of
    (index, ok, value-or-error-tuple) per argument."""

    def __init__(self, pool, frame, iterable, chunksize, ordered,
                 timeout=None, base=0, handle=None, native=False):
        self._pool = pool
        # native: one argument a wire item, pickled alone for the C codec
        # of native workers (native.py), results are plain pickles
        self._native = native
        self._local = {}  # wire index -> error made here (native only)
        self._frame = frame
        # A range is sent as sub-ranges: a few bytes a chunk instead of a
        # pickled list, and the worker iterates it as it would the list.
        self._range = iterable if (isinstance(iterable, range)
                                   and not native) else None
        self._src = iter(iterable)
        self._chunksize = max(1, int(chunksize))
        self._timeout = timeout
        self._chunks = {}  # wire index -> (first argument, count, buffers)
        self._nchunks = 0
        self._nargs = base  # index of the next argument
        self._base = base
        self._input_error = None
        self._it = ctypes.c_void_p()
        self._cb = _lib.RAW_NEXT(self._next)  # must outlive the iterator
        co = _lib.CallOpts()
        _lib.pool_call_opts_init(ctypes.byref(co))
        if timeout is not None:
            co.timeout = timeout if timeout > 0 else -1.0
        if timeout is not None or pool._maxtasks or self._chunksize > 1:
            # deadlines and recycling count the runtime's items, which are
            # our chunks: one chunk a batch keeps both per chunk; and a
            # chunk of several arguments is batch enough (the runtime's
            # first batches of 4 would give one worker 4 chunks at once,
            # and the caller would unpickle their results only at the end)
            co.chunksize = 1
        err = _lib.PkError()
        handle = handle or pool._handle
        if handle is None:
            raise ValueError("Pool not running")
        handle.ref()
        self._handle = handle
        rc = _lib.pool_imap_raw(handle.ptr, frame, len(frame), self._cb,
                                None, 1 if ordered else 0, ctypes.byref(co),
                                ctypes.byref(self._it), ctypes.byref(err))
        if rc != 0:
            self._handle.unref()
            self._handle = None
            if self._input_error is not None:
                raise self._input_error
            if rc == _lib.PK["ECLOSED"]:
                raise ValueError("Pool not running")
            _raise(rc, err)

    # -- the input side: called by C from pool_imap_raw / pool_iter_next_raw

    def _next(self, ctx, item_p):
        try:
            if self._range is not None:
                pos = self._nargs - self._base
                chunk = self._range[pos:pos + self._chunksize]
            else:
                chunk = list(itertools.islice(self._src, self._chunksize))
            if not chunk:
                return _lib.PK["EOF"]
            bufs = []
            if self._native:
                try:
                    data = dumps_item(chunk[0], bufs.append)
                except Exception as e:  # fails alone, here
                    bufs = []
                    data = pickle.dumps(None, protocol=5)
                    self._local[self._nchunks] = _protocol.error_of(
                        e, "cannot pickle the argument")[1]
            else:
                data, bufs = _protocol.pack(
                    chunk, fallback=lambda: self._badchunk(chunk))
            alive = []  # what C may read until the chunk's outcome
            table = _buffer_table(bufs, alive)
            it = item_p.contents
            it.data = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p)
            it.len = len(data)
            it.bufs = table
            it.nbufs = len(bufs)
            self._chunks[self._nchunks] = (self._nargs, len(chunk), data,
                                           bufs, alive)
            self._nchunks += 1
            self._nargs += len(chunk)
            return 0
        except BaseException as e:  # the input raised: the map stops
            self._input_error = e
            return _lib.PK["EFUNC"]

    @staticmethod
    def _badchunk(chunk):
        args, bad = [], {}
        for i, a in enumerate(chunk):
            try:
                pickle.dumps(a, protocol=5)
                args.append(a)
            except Exception as e:
                args.append(None)
                bad[i] = ("cannot pickle the argument: %s: %s"
                          % (type(e).__name__, e))
        return _protocol.BadChunk(args, bad)

    # -- the output side

    def __iter__(self):
        return self

    def next_chunk(self, timeout=None):
        """The next chunk's outcomes as (first, values, errors): values[i]
        is argument first+i's result, errors {i: error tuple} the failed
        ones.  Raises StopIteration at the end, TimeoutError when timeout
        passes."""
        res = _lib.RawResult()
        waited = 0.0
        while True:
            if self._it is None or not self._it:
                raise StopIteration
            step = _POLL_S if timeout is None else min(_POLL_S,
                                                       timeout - waited)
            rc = _lib.pool_iter_next_raw(self._it, ctypes.byref(res),
                                         max(step, 0.0))
            if rc == 0:
                return self._outcomes(res)
            if rc == _lib.PK["ETIMEDOUT"]:
                waited += step
                if timeout is not None and waited >= timeout:
                    raise TimeoutError
                continue
            why = _lib.PkError()  # say, why the pool broke
            _lib.pool_iter_error(self._it, ctypes.byref(why))
            self.close()
            if rc == _lib.PK["EOF"]:
                raise StopIteration
            if self._input_error is not None:
                e, self._input_error = self._input_error, None
                raise e
            raise RuntimeError("picklepool: the map stopped: %s (%s)"
                               % (why.text(), _lib.errname(rc)))

    def _outcomes(self, res):
        first, count, data, bufs, _alive = self._chunks.pop(res.index)
        local = self._local.pop(res.index, None)
        if local is not None:
            return first, [None], {0: local}
        if res.status == 0:
            got = _result(res, self._native)
            if self._native:
                return first, [got], {}
            values, errors = got
            return first, values, errors
        msg = (res.error or b"").decode("utf-8", "replace")
        status = _lib.errname(res.status)
        if self._native and status not in ("ECRASHED", "ETIMEDOUT"):
            exc = exception_of(msg)
            return first, [None], {0: (exc, type(exc).__name__, msg, msg)}
        if status in ("ECRASHED", "ETIMEDOUT") and count > 1:
            return self._one_by_one(
                first, _protocol.unpack(data, [b.raw() for b in bufs]))
        # the runtime counts chunks: name the argument when it was alone
        err = _failure(status, msg, first if count == 1 else None)
        return first, [None] * count, dict.fromkeys(range(count), err)

    def _one_by_one(self, first, args):
        """Runs a failed chunk's arguments again, each alone."""
        if type(args) is _protocol.BadChunk:
            args = args.args  # its bad ones fail again, as they did
        sub = _RawMap(self._pool, self._frame, args, 1, True, self._timeout,
                      base=first)
        values, errors = [], {}
        try:
            for f, v, e in sub.chunks():
                for i, err in e.items():
                    errors[f - first + i] = err
                values.extend(v)
        finally:
            sub.close()
        return first, values, errors

    def chunks(self):
        try:
            while True:
                try:
                    yield self.next_chunk()
                except StopIteration:
                    return
        finally:
            self.close()

    def close(self):
        if self._it:
            _lib.pool_iter_free(ctypes.byref(self._it))
        self._it = None
        self._chunks.clear()
        if self._handle is not None:
            self._handle.unref()
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _len_or_none(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None


def _star_error(fn):
    raise TypeError("native kernel %s takes one argument: use map, not "
                    "starmap with several" % fn.name)


def _native_apply_arg(fn, a):
    args, kwds = a
    if kwds or len(args) != 1:
        raise TypeError("native kernel %s takes one positional argument"
                        % fn.name)
    return args[0]


def _progress(total, enabled):
    """A tqdm bar when asked for and a terminal is attached, else None."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        sys.stderr.write("picklepool: progress=True needs tqdm (Debian: "
                         "python3-tqdm); no bar shown\n")
        return None
    return tqdm(total=total, unit="item")


class IMapIterator:
    """What Pool.imap and imap_unordered return: an iterator, with
    ``next(timeout)`` as multiprocessing's has."""

    def __init__(self, rawmap, bar=None):
        self._raw = rawmap
        self._values = []
        self._errors = {}
        self._pos = 0
        self._bar = bar

    def __iter__(self):
        return self

    def next(self, timeout=None):
        while self._pos >= len(self._values):
            try:
                _, self._values, self._errors = self._raw.next_chunk(timeout)
                self._pos = 0
                if self._bar is not None:
                    self._bar.update(len(self._values))
            except TimeoutError:
                raise  # the map goes on: call again
            except BaseException:  # the end, an error, Ctrl-C: it is over
                self.close()
                raise
        i = self._pos
        self._pos += 1
        if i in self._errors:
            raise _rebuild(self._errors[i])
        return self._values[i]

    __next__ = next

    def close(self):
        self._raw.close()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class AsyncResult:
    """multiprocessing.pool.AsyncResult: get, wait, ready, successful; the
    callbacks run in the thread that collected the result."""

    def __init__(self, callback=None, error_callback=None):
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._ok = None
        self._value = None

    def _set(self, ok, value):
        self._ok, self._value = ok, value
        try:
            if ok and self._callback is not None:
                self._callback(value)
            elif not ok and self._error_callback is not None:
                self._error_callback(value)
        finally:
            self._event.set()

    def ready(self):
        return self._event.is_set()

    def successful(self):
        if not self.ready():
            raise ValueError("%r not ready" % self)
        return self._ok

    def wait(self, timeout=None):
        self._event.wait(timeout)

    def get(self, timeout=None):
        if not self._event.wait(timeout):
            raise TimeoutError
        if self._ok:
            return self._value
        raise self._value


class Pool:
    """A pool of Python worker processes with multiprocessing.Pool's API.

    ``Pool(processes=None, initializer=None, initargs=(),
    maxtasksperchild=None, *, placement="compact", timeout=None,
    retries=2, max_rss=None)``: processes defaults to one per core the
    process may use, each worker pinned to its core (placement "compact",
    "spread" or "none").  Extras over multiprocessing: ``timeout`` (seconds
    an item may run before its worker is killed and the item fails with
    TimeoutError), ``retries`` (worker deaths an item may survive before it
    fails with WorkerCrashed), ``max_rss`` (bytes; a worker above it is
    recycled).  Functions may be lambdas, closures or defined in __main__:
    they are pickled by value with cloudpickle (or dill).

    ``address="tcp://HOST:PORT"`` makes a remote pool: the work runs on the
    hosts (``picklepool worker --python PATH``) of the ``picklepool serve``
    master there, with ``keys`` the key directory (this machine's key pair
    and the master's ``master.pub``) or ``insecure=True`` for plain tcp;
    ``processes`` then only sizes chunks (default 16 remote workers).  A
    client whose key the master refuses gets RuntimeError within seconds.
    """

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, *, placement="compact", timeout=None,
                 retries=2, max_rss=None, plugins=(), address=None,
                 keys=None, insecure=False):
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if placement not in _PLACEMENTS:
            raise ValueError("placement must be one of %s, not %r"
                             % (", ".join(_PLACEMENTS), placement))
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or
                maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._timeout = timeout
        self._maxtasks = maxtasksperchild or 0
        self._plugins = [str(p) for p in plugins]
        # a remote pool: the work runs on the hosts of a `picklepool serve`
        self._remote = None
        if address is not None:
            if initializer is not None or maxtasksperchild or max_rss:
                raise ValueError("a remote pool (address=) takes no "
                                 "initializer, maxtasksperchild or max_rss: "
                                 "those belong to the hosts")
            self._remote = (os.fsencode(address),
                            None if keys is None else
                            os.fsencode(os.path.abspath(keys)),
                            1 if insecure else 0)
        self._lock = threading.Lock()
        self._natives = {}  # plugins -> _Handle of a pool of native workers
        self._frames = {}   # (mode, func) -> its call frame
        self._copied = {"in": 0, "out": 0}  # of pools already destroyed
        # Workers are forks of this process's copy, taken now if this is
        # the first pool (worker.py); the exec'd command is the fallback.
        forked = worker.start_fork_server()
        self._forked = forked and self._remote is None  # workers: our copies
        o = _lib.PoolOpts()
        _lib.pool_opts_init(ctypes.byref(o))
        o.workers = processes or 0
        o.placement = _PLACEMENTS[placement]
        o.retries = retries
        o.maxtasksperchild = maxtasksperchild or 0
        o.max_rss = max_rss or 0
        # -S: no site module (PYTHONPATH below carries this interpreter's
        # whole sys.path), which starts the worker faster
        argv = [sys.executable, "-S", "-m", "picklepool.worker"]
        env = _protocol.worker_env()
        if initializer is not None:
            env.append("%s=%s" % (_protocol.INIT_ENV,
                                  _protocol.dump_initializer(initializer,
                                                             initargs)))
        c_argv = (ctypes.c_char_p * (len(argv) + 1))(
            *[os.fsencode(a) for a in argv], None)
        c_env = (ctypes.c_char_p * (len(env) + 1))(
            *[os.fsencode(e) for e in env], None)
        o.worker_argv = c_argv
        o.worker_env = c_env
        if self._remote is not None:
            o.workers = 0
            o.worker_argv = o.worker_env = None
            self._set_remote(o)
        elif forked:
            o.worker_main = ctypes.cast(worker.FORK_MAIN,
                                        ctypes.c_void_p).value
        # As multiprocessing.Pool: return while the workers start, so that
        # they start while the caller prepares its first call.
        o.start_nowait = 1
        self._ready = False
        self._native_opts = (o.workers, o.placement, o.retries,
                             o.maxtasksperchild, o.max_rss)
        self._handle = self._create(o, "cannot start the pool")
        n = ctypes.c_size_t(0)
        _lib.pool_stats(self._handle.ptr, None, 0, ctypes.byref(n))
        # a remote pool's one local worker forwards to many: chunks are
        # sized for `processes` remote workers (default 16)
        self._processes = (processes or 16) if self._remote else n.value
        self._state = "RUN"
        self._threads = []

    # -- helpers

    def _set_remote(self, o):
        o.address, o.keys, o.insecure = self._remote

    @staticmethod
    def _create(o, what, plugins=()):
        names = [os.fsencode(p) for p in plugins]
        c_plugins = (ctypes.c_char_p * max(1, len(names)))(*names)
        if names:
            o.plugins = c_plugins
            o.nplugins = len(names)
        ptr = ctypes.c_void_p()
        err = _lib.PkError()
        rc = _lib.pool_create(ctypes.byref(ptr), ctypes.byref(o),
                              ctypes.byref(err))
        if rc != 0:
            _raise(rc, err, what)
        return _Handle(ptr)

    def _native_handle(self, fn):
        """The pool of native workers that has fn's plugin, made on first
        use with the same size, placement and limits."""
        plugins = tuple(dict.fromkeys(self._plugins + [fn.plugin]))
        with self._lock:
            h = self._natives.get(plugins)
            if h is None:
                o = _lib.PoolOpts()
                _lib.pool_opts_init(ctypes.byref(o))
                (o.workers, o.placement, o.retries, o.maxtasksperchild,
                 o.max_rss) = self._native_opts
                o.start_nowait = 1  # its first map waits for them
                if self._remote is not None:  # the hosts have the plugins
                    self._set_remote(o)
                    plugins = ()
                h = self._create(o, "cannot start native workers for %s"
                                 % fn.name, plugins)
                self._natives[plugins] = h
            return h

    def _check_running(self):
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _chunksize_for(self, n, chunksize):
        if chunksize is not None:
            if chunksize < 1:
                raise ValueError("Chunksize must be 1+, not %r" % chunksize)
            return chunksize
        # multiprocessing's four chunks a worker, at most _CHUNK_MAX
        # arguments each: the caller unpickles a chunk's results while the
        # workers run the next ones, and waits for the first and after the
        # last one alone, so a long map of cheap items goes faster in more
        # chunks (1M squares: 8 chunks 121 ms, 32 chunks 110 ms)
        c, extra = divmod(n, self._processes * 4)
        return min(c + 1 if extra else max(c, 1), _CHUNK_MAX)

    def _rawmap(self, mode, func, iterable, chunksize, ordered):
        self._check_running()
        if isinstance(func, native):
            if mode == _protocol.STAR:
                iterable = (a[0] if len(a) == 1 else _star_error(func)
                            for a in iterable)
            elif mode == _protocol.APPLY:
                iterable = (_native_apply_arg(func, a) for a in iterable)
            return _RawMap(self, func.frame(), iterable, 1, ordered,
                           self._timeout, handle=self._native_handle(func),
                           native=True)
        frame = self._frame(mode, func)
        return _RawMap(self, frame, iterable, chunksize, ordered,
                       self._timeout)

    def _collect(self, mode, func, iterable, chunksize, progress=False):
        return self._finish(*self._submit(mode, func, iterable, chunksize),
                            progress)

    def _submit(self, mode, func, iterable, chunksize):
        """Starts a whole map now (the *_async calls submit before they
        return, as multiprocessing's do): (raw map, number of items)."""
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        raw = self._rawmap(mode, func, items,
                           self._chunksize_for(len(items), chunksize), True)
        return raw, len(items)

    def _finish(self, raw, n, progress=False):
        """Collects a submitted map in order; raises the first error."""
        out = [None] * n
        first_err = None
        bar = _progress(n, progress)
        try:
            for first, values, errors in raw.chunks():
                out[first:first + len(values)] = values
                if bar is not None:
                    bar.update(len(values))
                for i, err in errors.items():
                    if first_err is None or first + i < first_err[0]:
                        first_err = (first + i, err)
        finally:
            if bar is not None:
                bar.close()
        if first_err is not None:
            raise _rebuild(first_err[1])
        return out

    def _async(self, fn, callback, error_callback):
        """An AsyncResult set by fn() run in a thread; fn only collects:
        the work was submitted by the caller before."""
        res = AsyncResult(callback, error_callback)

        def run():
            try:
                value = fn()
            except BaseException as e:
                res._set(False, e)
            else:
                res._set(True, value)

        t = threading.Thread(target=run, daemon=True,
                             name="picklepool-result")
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()
        return res

    # -- multiprocessing.Pool's API

    def apply(self, func, args=(), kwds={}):
        """func(*args, **kwds) in a worker; returns its result."""
        self._check_running()
        if isinstance(func, native) or self._timeout is not None:
            return self._collect(_protocol.APPLY, func,
                                 [(tuple(args), dict(kwds))], 1)[0]
        return self._apply_fast(func, tuple(args), dict(kwds))

    def _frame(self, mode, func):
        """The call frame of func, pickled once per function."""
        try:
            return self._frames[(mode, func)]
        except (KeyError, TypeError):
            frame = _protocol.dump_call(
                mode, func,
                worker.snapshot_main() if self._forked else None)
            try:
                if len(self._frames) > 256:
                    self._frames.clear()
                self._frames[(mode, func)] = frame
            except TypeError:  # unhashable callable
                pass
            return frame

    def _apply_fast(self, func, args, kwds):
        """One call through pool_apply_raw: an idle worker's fast lane when
        one polls, the scheduler otherwise.  A call with small buffers (or
        none) is pickled in band (CPython's own pickle), so nothing is
        borrowed; big ones are lent, as a map's (shared-heap arrays by
        reference), until the result is back."""
        frame = self._frame(_protocol.APPLY, func)
        try:
            data, bufs = _protocol.pack([(args, kwds)])
            if sum(b.raw().nbytes for b in bufs) < _APPLY_INBAND_MAX:
                data, bufs = _protocol.pack([(args, kwds)], inband=True)
        except Exception:
            return self._collect(_protocol.APPLY, func, [(args, kwds)], 1)[0]
        item = _lib.RawItem()
        item.data = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p)
        item.len = len(data)
        alive = [data, bufs]  # lent to C until the future is freed
        if bufs:
            item.bufs = _buffer_table(bufs, alive)
            item.nbufs = len(bufs)
        h = self._handle
        if h is None:
            raise ValueError("Pool not running")
        h.ref()
        fut = ctypes.c_void_p()
        err = _lib.PkError()
        try:
            rc = _lib.pool_apply_raw(h.ptr, frame, len(frame),
                                     ctypes.byref(item), ctypes.byref(fut),
                                     ctypes.byref(err))
            if rc != 0:
                if rc == _lib.PK["ECLOSED"]:
                    raise ValueError("Pool not running")
                _raise(rc, err)
            res = _lib.RawResult()
            try:
                while True:
                    rc = _lib.pool_future_wait_raw(fut, ctypes.byref(res),
                                                   _POLL_S)
                    if rc != _lib.PK["ETIMEDOUT"]:
                        break
                if rc != 0:
                    raise RuntimeError("picklepool: apply: %s"
                                       % _lib.errname(rc))
                if res.status == 0:
                    values, errors = _result(res)
                    if errors:
                        raise _rebuild(errors[0])
                    return values[0]
                err = _failure(_lib.errname(res.status),
                               (res.error or b"").decode("utf-8", "replace"),
                               0)
            finally:
                _lib.pool_future_free(ctypes.byref(fut))
        finally:
            h.unref()
        raise err[0]

    def apply_async(self, func, args=(), kwds={}, callback=None,
                    error_callback=None):
        """apply, without waiting: returns an AsyncResult."""
        self._check_running()
        sub = self._submit(_protocol.APPLY, func, [(tuple(args), dict(kwds))],
                           1)
        return self._async(lambda: self._finish(*sub)[0], callback,
                           error_callback)

    def map(self, func, iterable, chunksize=None, *, progress=False):
        """[func(x) for x in iterable], in parallel, in order; raises the
        first item's exception.  progress=True shows a tqdm bar when a
        terminal is attached."""
        return self._collect(_protocol.MAP, func, iterable, chunksize,
                             progress)

    def map_async(self, func, iterable, chunksize=None, callback=None,
                  error_callback=None):
        """map, without waiting: returns an AsyncResult."""
        self._check_running()
        sub = self._submit(_protocol.MAP, func, iterable, chunksize)
        return self._async(lambda: self._finish(*sub), callback,
                           error_callback)

    def starmap(self, func, iterable, chunksize=None, *, progress=False):
        """[func(*args) for args in iterable], in parallel, in order."""
        return self._collect(_protocol.STAR, func, iterable, chunksize,
                             progress)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        """starmap, without waiting: returns an AsyncResult."""
        self._check_running()
        sub = self._submit(_protocol.STAR, func, iterable, chunksize)
        return self._async(lambda: self._finish(*sub), callback,
                           error_callback)

    def imap(self, func, iterable, chunksize=1, *, progress=False):
        """A lazy map in order: input is consumed with a bounded window."""
        return IMapIterator(
            self._rawmap(_protocol.MAP, func, iterable, chunksize, True),
            _progress(_len_or_none(iterable), progress))

    def imap_unordered(self, func, iterable, chunksize=1, *, progress=False):
        """A lazy map, results as they complete."""
        return IMapIterator(
            self._rawmap(_protocol.MAP, func, iterable, chunksize, False),
            _progress(_len_or_none(iterable), progress))

    def _wait_ready(self, limit=60.0):
        """Until every worker has started once (the pool does not wait for
        them when it is made: start_nowait), so that stats() shows their
        pids (a pool whose workers keep dying at start-up, or that was
        terminated meanwhile, shows what it has)."""
        if self._ready:
            return
        err = _lib.PkError()
        end = time.monotonic() + limit
        while True:  # in steps, so that Ctrl-C is seen
            rc = _lib.pool_wait_ready(self._handle.ptr, _POLL_S,
                                      ctypes.byref(err))
            if rc != _lib.PK["ETIMEDOUT"] or time.monotonic() > end:
                break
        self._ready = rc == 0

    def stats(self):
        """Per worker: slot, pid, core, cpus, items, busy seconds,
        restarts."""
        self._wait_ready()
        n = self._processes
        arr = (_lib.WorkerStats * n)()
        got = ctypes.c_size_t(0)
        _lib.pool_stats(self._handle.ptr, arr, n, ctypes.byref(got))
        return [dict(slot=s.slot, pid=s.pid, core=s.core,
                     cpus=s.cpus.decode(), items=s.items_done,
                     busy_s=s.busy_s, restarts=s.restarts,
                     lane_items=s.lane_items) for s in arr]

    # -- arrays the workers read where they are (shared.py)

    def empty(self, shape, dtype=float, order="C"):
        """A numpy array in the shared heap (picklepool.empty): every
        worker of every pool reads it in place, so maps pass it, its
        slices and its views without copying.  Freed when the last
        reference to it goes."""
        return _shared.empty(shape, dtype, order)

    def zeros(self, shape, dtype=float, order="C"):
        """empty(), filled with zeros (picklepool.zeros)."""
        return _shared.zeros(shape, dtype, order)

    def asarray(self, a, dtype=None, order=None):
        """a in the shared heap, copied there once unless it is there
        already or is a map's result view (picklepool.asarray)."""
        return _shared.asarray(a, dtype, order)

    def copies(self):
        """Bytes of out-of-band buffers copied so far by this pool's
        Python and native workers together: {"in": bytes of arguments
        copied into an arena (not in the shared heap), "out": bytes of
        results copied into an arena (not built there)}.  Buffers under
        64 KiB, which travel in the socket's frames, are not counted."""
        with self._lock:
            handles = list(self._natives.values())
        if self._handle is not None:
            handles.append(self._handle)
        i, o = _copies_of(handles)
        return {"in": self._copied["in"] + i, "out": self._copied["out"] + o}

    def close(self):
        """No new work; submitted work finishes."""
        if self._state == "RUN":
            self._state = "CLOSE"
            _lib.pool_close(self._handle.ptr)
            with self._lock:
                for n in self._natives.values():
                    _lib.pool_close(n.ptr)

    def terminate(self):
        """Stops everything now; unfinished items fail."""
        if self._state in ("RUN", "CLOSE"):
            self._state = "TERMINATE"
            if self._handle is not None:  # None: joined already
                _lib.pool_terminate(self._handle.ptr)
            self._release()

    def join(self):
        """Waits for the workers to exit, after close() or terminate()."""
        if self._state == "RUN":
            raise ValueError("Pool is still running")
        for t in list(self._threads):
            t.join()
        with self._lock:
            handles = list(self._natives.values())
        if self._handle is not None:
            handles.append(self._handle)
        for h in handles:  # native workers finish their work too
            while _lib.pool_join(h.ptr, _POLL_S) == _lib.PK["ETIMEDOUT"]:
                pass
        self._release()

    def _release(self):
        h, self._handle = self._handle, None
        natives, self._natives = list(self._natives.values()), {}
        i, o = _copies_of(natives + ([h] if h is not None else []))
        self._copied["in"] += i
        self._copied["out"] += o
        for n in natives:
            _lib.pool_terminate(n.ptr)
            n.unref()
        if h is not None:
            h.unref()  # destroyed now, or when its last iterator is freed

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __del__(self):
        try:
            if getattr(self, "_state", None) in ("RUN", "CLOSE"):
                self.terminate()
        except Exception:
            pass

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between "
                                  "processes or pickled")
