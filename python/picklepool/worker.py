"""picklepool.worker - the Python worker: ``python -m picklepool.worker``.

A pool of Python workers execs this module in each worker process (the C
runtime's fork server starts, pins and supervises it, exactly as a native
worker).  It serves the pool through ``pool_worker_serve``: the C worker loop
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
import os
import pickle
import sys

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


def _handle(ctx, call_p, out_p, err_p):
    """pool_raw_fn: never raises (ctypes would swallow it)."""
    global _keep
    try:
        c = call_p.contents
        frame = ctypes.string_at(c.call, c.call_len)
        bufs = [_lib.copy_out(c.bufs[k].data, c.bufs[k].len)
                for k in range(c.nbufs)]
        args = _protocol.unpack(ctypes.string_at(c.item, c.len), bufs)
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


def main():
    init = os.environ.pop(_protocol.INIT_ENV, None)
    if init:
        _protocol.run_initializer(init)
    handler = _lib.RAW_FN(_handle)
    status = ctypes.c_int(1)
    err = _lib.PkError()
    rc = _lib.pool_worker_serve(handler, None, ctypes.byref(status),
                                ctypes.byref(err))
    if rc != 0:
        sys.stderr.write("picklepool.worker: %s\n" % err.text())
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status.value)


if __name__ == "__main__":
    main()
