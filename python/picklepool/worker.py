"""picklepool.worker - the Python worker: forked from the caller's copy, or
``python -m picklepool.worker``.

The C runtime's fork server starts, pins and supervises each worker of a
pool, exactly as a native worker.  By default the fork server is a copy of
this process (start_fork_server: pool_global_init_main, called with the GIL
held) and each worker a fork of it that runs ``_forked_main`` - the
interpreter is already there, with what the caller had imported by then.
Where that fork server is not available (PICKLEPOOL_PYTHON_EXEC=1, or a
fork server started otherwise) each worker execs this module instead.
Either way it serves the pool through ``pool_worker_serve``: the C worker loop
receives batches, keeps the scoreboard current (so a crash names its item
and timeouts are enforced), and hands each item's bytes to ``_handle``
below, which runs the Python side of the protocol in ``_protocol``:

- the call frame is a pickle of ``(PROTOCOL, mode, function pickle)``;
  the function is unpickled once per worker per function (cached by the
  frame's bytes) - with cloudpickle when the caller sent it by value;
- an item is a pickle (protocol 5, out-of-band buffers) of a chunk: a list of
  arguments;
- the result is a pickle of a list with one ``(True, value)`` or
  ``(False, error)`` per argument.

Not for direct use: it exits with status 2 and a message when no pool
started it.
"""

import ctypes
import gc
import os
import pickle
import sys
import types

import _signal

from . import _lib, _protocol

_keep = None  # the last result: bytes, buffers, table; alive until the next
              # call (the C loop copies them before)
_func_cache = (None, None, None)  # (frame bytes, mode, function)


def _load_call(frame):
    global _func_cache
    if _func_cache[0] == frame:
        return _func_cache[1], _func_cache[2]
    mode, func = _protocol.load_call(frame)
    _func_cache = (frame, mode, func)
    return mode, func


def _arg_buffer(b, readonly):
    """An argument's out-of-band buffer: a view, without a copy, of a
    read-only array in the caller's shared heap (it stays as it is while
    the caller keeps it: the function may keep it too); otherwise a private
    copy, since the arena block is reused once the batch is done and the
    function may keep or (when writable) modify its argument."""
    if readonly and b.len and _lib.pool_worker_in_shared(b.data, b.len):
        return memoryview((ctypes.c_char * b.len).from_address(b.data)).cast(
            "B").toreadonly()
    raw = _lib.copy_out(b.data, b.len)
    return memoryview(raw).toreadonly() if readonly else raw


def _handle(ctx, call_p, out_p, err_p):
    """pool_raw_fn: never raises (ctypes would swallow it)."""
    global _keep
    try:
        c = call_p.contents
        frame = ctypes.string_at(c.call, c.call_len)
        args = _protocol.unpack_with(ctypes.string_at(c.item, c.len),
                                     lambda k, ro: _arg_buffer(c.bufs[k], ro))
        try:
            mode, func = _load_call(frame)
        except BaseException as e:  # the function cannot be loaded here
            bad = _protocol.error_of(e, "cannot load the function in the "
                                        "worker")[1]
            if type(args) is _protocol.BadChunk:
                args = args.args
            results = ([None] * len(args), dict.fromkeys(range(len(args)), bad))
        else:
            results = _protocol.run(mode, func, args)
        data, rbufs = _protocol.dump_results(results)
        table = (_lib.PkBuffer * max(1, len(rbufs)))()
        views = [b.raw() for b in rbufs]
        copies = []  # of read-only memory, which ctypes cannot address
        for k, mv in enumerate(views):
            table[k].data = _lib.address_of(mv, copies)
            table[k].len = mv.nbytes
            table[k].readonly = 1
        _keep = (data, rbufs, views, copies, table)
        out = out_p.contents
        out.data = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p)
        out.len = len(data)
        out.bufs = table
        out.nbufs = len(rbufs)
        return 0
    except BaseException as e:  # noqa: B902 - nothing may escape
        msg = ("picklepool worker: %s: %s" % (type(e).__name__, e)).encode(
            "utf-8", "replace")[:255]
        err_p.contents.msg = msg
        return _lib.PK["EFUNC"]


_HANDLER = _lib.RAW_FN(_handle)  # made once: a forked worker has it already


def _serve(init):
    """Runs the pool's initializer (init: its text, or None), then the
    worker loop; the exit status."""
    if init:
        _protocol.run_initializer(init)
    status = ctypes.c_int(1)
    err = _lib.PkError()
    rc = _lib.pool_worker_serve(_HANDLER, None, ctypes.byref(status),
                                ctypes.byref(err))
    if rc != 0:
        sys.stderr.write("picklepool.worker: %s\n" % err.text())
        return 2
    return status.value


def _exit(status):
    """Ends the worker as the pool expects: no atexit handler (some are the
    caller's), no finalisation, the standard streams flushed."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:  # noqa: B902 - exiting whatever happened
            pass
    os._exit(status)


def main():
    """``python -m picklepool.worker``: an exec'd worker."""
    _exit(_serve(os.environ.pop(_protocol.INIT_ENV, None)))


# ---- workers forked from the fork server ------------------------------------
#
# The fork server is a copy of this process taken inside start_fork_server,
# between PyOS_BeforeFork and PyOS_AfterFork_Parent and with the GIL held:
# what os.fork() copies.  A worker is a fork of that copy; the fork server
# calls PyOS_AfterFork_Child in it (the at_fork hook, from C: the copied GIL
# may show another thread's switch request, and bytecode run before it could
# wait for that thread for ever), then _forked_main through ctypes.

_getenv = ctypes.CDLL(None).getenv
_getenv.restype = ctypes.c_char_p
_getenv.argtypes = [ctypes.c_char_p]
try:
    _AFTER_FORK_CHILD = ctypes.cast(ctypes.pythonapi.PyOS_AfterFork_Child,
                                    ctypes.c_void_p).value
except (AttributeError, OSError, ValueError):  # no CPython C API: exec
    _AFTER_FORK_CHILD = None
_started = None  # the pid whose fork server runs _forked_main
_snapshot_env = {}  # worker_env() as bytes when the fork server was made
# The functions __main__ had when the fork server was made: forked workers
# have them too, so they travel by reference (snapshot_main()).
_snapshot_main = {}
# (numpy.random, the address of its global generator's state) in the fork
# server's copy, for _reseed; None without numpy.random then
_np_state = None


def _adopt_environment():
    """os.environ is the caller's copy from when the fork server was made:
    bring in the pool's worker_env, which the fork server set in the C
    environment (subprocesses get that one), put the caller's sys.path of
    the pool's creation (its PYTHONPATH) in front of the copied one, and
    return the initializer's text (or None).  Cheap where nothing changed
    since the snapshot (the usual case): the fewer of the copied objects
    and code a worker touches before it serves, the fewer pages it copies.
    os.environ's mapping is updated without putenv: the C environment has
    the values already."""
    data = os.environ._data
    for key, snap in _snapshot_env.items():
        v = _getenv(key)
        if v is not None:
            data[key] = v
            if key == b"PYTHONPATH" and v != snap:
                front = [os.fsdecode(p) for p in v.split(os.pathsep.encode())
                         if p]
                sys.path[:] = front + [p for p in sys.path if p not in front]
    init = _getenv(_protocol.INIT_ENV.encode())
    if init is None:
        return None
    os.unsetenv(_protocol.INIT_ENV)  # as an exec'd worker pops it
    return init.decode("ascii")


def _reset_signals():
    """The handlers a fresh interpreter installs (the fork server set every
    disposition to the default; handlers of the caller's are not run).
    Through _signal: signal.signal's enum conversions cost more here than
    the system calls."""
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(_signal, name):
            _signal.signal(getattr(_signal, name), _signal.SIG_IGN)


def _np_state_address():
    """Where numpy's global generator (a plain MT19937 with no Gaussian
    cached) keeps its state {uint32 key[624]; int pos}, checked against
    get_state(); None when numpy.random is not imported or is otherwise.
    Taken for the fork server's copy: the same address in every worker."""
    nprandom = sys.modules.get("numpy.random")
    if nprandom is None:
        return None
    try:
        rs = nprandom.mtrand._rand
        name, key, pos, has_gauss = rs.get_state()[:4]
        addr = rs._bit_generator.ctypes.state_address
        if (name != "MT19937" or has_gauss or len(key) != 624 or
                ctypes.c_uint32.from_address(addr).value != key[0] or
                ctypes.c_uint32.from_address(addr + 4 * 623).value != key[623]
                or ctypes.c_int.from_address(addr + 4 * 624).value != pos):
            return None
        return addr
    except Exception:  # another numpy, another generator
        return None


def _reseed():
    """Fresh entropy for numpy's global generator, as an exec'd worker's
    has: a copy's would repeat the caller's sequence in every worker (the
    standard random module reseeds itself after a fork; numpy does not)."""
    nprandom = sys.modules.get("numpy.random")
    if nprandom is None:
        return
    if _np_state is not None and nprandom is _np_state[0]:
        # in place: a whole MT19937 state from the system's entropy, as
        # seed() makes one, in microseconds instead of the ~0.5 ms that
        # seed() or set_state() take in a fresh fork (every worker's
        # start-up waits for it)
        addr = _np_state[1]
        ctypes.memmove(addr, os.urandom(4 * 624), 4 * 624)
        ctypes.c_int.from_address(addr + 4 * 624).value = 624
        return
    try:
        words = sys.modules["numpy"].frombuffer(os.urandom(624 * 4),
                                                dtype="uint32")
        nprandom.set_state(("MT19937", words, 624))
    except Exception:  # a numpy without the legacy global generator
        try:
            nprandom.seed()
        except Exception:
            pass


def _forked_main(arg):
    """The worker main (pool_worker_main_fn) of a forked worker; never
    returns."""
    status = 2
    try:
        # The caller's objects are never collected here: finalizers of its
        # garbage (files, pools) are the caller's, and leaving the copied
        # heap alone keeps its pages shared.
        gc.freeze()
        _reset_signals()
        _reseed()
        status = _serve(_adopt_environment())
    except BaseException:  # noqa: B902 - a worker must end, not unwind
        try:
            import traceback
            traceback.print_exc()
        except BaseException:  # noqa: B902
            pass
    _exit(status)


FORK_MAIN = _lib.WORKER_MAIN(_forked_main)  # alive as long as the module


def start_fork_server():
    """Starts the C runtime's fork server, once per process, as a copy of
    this process that can fork Python workers (pool_global_init_main).  Call
    it before the first pool: a fork server that already runs (made by a
    pool of this process, or by C code) cannot, and pools then exec their
    workers.  Returns whether pools should ask for forked workers: False
    when PICKLEPOOL_PYTHON_EXEC is set to a non-empty value other than 0,
    or on an interpreter without CPython's fork API."""
    global _started
    if (os.environ.get("PICKLEPOOL_PYTHON_EXEC", "0") not in ("", "0") or
            _AFTER_FORK_CHILD is None):
        return False
    pid = os.getpid()
    if _started == pid:
        return True
    # What os.fork() does around fork(), so that the copy holds no buffered
    # output and its locks are in the state the child hooks expect.
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (AttributeError, OSError, ValueError):
            pass
    for kv in _protocol.worker_env():  # what pools will mostly set again
        k, _, v = kv.partition("=")
        _snapshot_env[os.fsencode(k)] = os.fsencode(v)
    global _np_state
    addr = _np_state_address()
    _np_state = None if addr is None else (sys.modules["numpy.random"], addr)
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    try:
        err = _lib.PkError()
        rc = _lib.pool_global_init_main(FORK_MAIN, _AFTER_FORK_CHILD,
                                        ctypes.byref(err))
    finally:
        api.PyOS_AfterFork_Parent()
    if rc != 0:
        return False  # pool_create says why, starting a plain one
    _started = pid
    main = sys.modules.get("__main__")
    _snapshot_main.clear()
    _snapshot_main.update(
        (k, v) for k, v in vars(main).items()
        if isinstance(v, types.FunctionType) and
        getattr(v, "__module__", None) == "__main__") if main else None
    return True


def snapshot_main():
    """{name: function} of __main__ as the fork server copied it (empty
    when this process's pools do not fork their workers): a function still
    bound to its name there exists in every forked worker, so it can be
    pickled by reference instead of by value."""
    return _snapshot_main if _started == os.getpid() else {}


if __name__ == "__main__":
    main()
