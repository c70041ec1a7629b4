"""_protocol - what the caller and the Python worker put in the bytes the C
runtime carries for them (raw maps, picklepool/worker.h).

One wire item is a chunk of arguments, so one CPython pickle and one foreign
call serve many items, as multiprocessing's chunks do; a chunk that kills its
worker or times out is run again one argument at a time by the caller
(pool.py), so only the guilty argument fails.

- call frame: ``pickle((PROTOCOL, mode, fpickle))`` where fpickle is the
  function pickled by reference (importable functions, builtins, native
  kernels) or by value (lambdas, closures, functions of ``__main__``) with
  cloudpickle, or dill when cloudpickle is missing;
- item: ``pickle(list of arguments)`` at protocol 5 with out-of-band buffers;
- result: ``pickle(list of (True, value) | (False, error))``, where error is
  ``(exception or None, type name, message, traceback text)``.
"""

import io
import os
import pickle

PROTOCOL = 1
INIT_ENV = "PICKLEPOOL_PY_INIT"

MAP, STAR, APPLY = "map", "star", "apply"


def _byvalue_pickler():
    try:
        import cloudpickle
        return cloudpickle.dumps
    except ImportError:
        pass
    try:
        import dill
        return dill.dumps
    except ImportError:
        return None


def dumps(obj, buffer_callback=None):
    """pickle.dumps at protocol 5, or by value (cloudpickle) for what plain
    pickle cannot name, such as classes and functions of the caller's
    __main__ (they come back as the caller's own)."""
    try:
        return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
    except Exception:
        byvalue = _byvalue_pickler()
        if byvalue is None:
            raise
        return byvalue(obj, protocol=5, buffer_callback=buffer_callback)


def pack(obj, fallback=None, inband=False):
    """The bytes of obj for the other side, and its out-of-band buffers:
    a tiny pickle of the buffers' read-only flags, then obj's pickle at
    protocol 5 (by value where plain pickle cannot name something).  When
    obj cannot be pickled and fallback is given, fallback() is packed
    instead.  inband: no buffer goes out of band."""
    bufs = []
    cb = None if inband else bufs.append
    try:
        body = dumps(obj, cb)
    except Exception:
        if fallback is None:
            raise
        bufs = []
        body = dumps(fallback(), cb)
    flags = bytes(1 if b.raw().readonly else 0 for b in bufs)
    return pickle.dumps(flags, protocol=5) + body, bufs


def unpack(data, raws):
    """What pack made, from its bytes and copies of its buffers (writable
    bytearrays): read-only buffers come back read-only, so arrays keep
    their flags."""
    return unpack_with(data, lambda k, readonly: (
        memoryview(raws[k]).toreadonly() if readonly else raws[k]))


def unpack_with(data, buffer):
    """unpack, taking buffer k from buffer(k, readonly): a read-only
    buffer must come back read-only."""
    f = io.BytesIO(data)
    flags = pickle.load(f)
    bufs = [buffer(k, bool(ro)) for k, ro in enumerate(flags)]
    return pickle.Unpickler(f, buffers=bufs).load()


def dump_function(func, forked_main=None):
    """The pickle of func: by reference when that works (and the worker
    can import it: not from __main__, which is not the worker's, unless it
    is one of forked_main's functions, which forked workers copied), else
    by value."""
    module = getattr(func, "__module__", None)
    if (module == "__main__" and forked_main and
            forked_main.get(getattr(func, "__qualname__", None)) is func):
        try:
            return pickle.dumps(func, protocol=5)
        except Exception:
            pass
    if module != "__main__":
        try:
            data = pickle.dumps(func, protocol=5)
            if pickle.loads(data) is func:
                return data
        except Exception:
            pass
    byvalue = _byvalue_pickler()
    if byvalue is None:
        raise pickle.PicklingError(
            "cannot pickle %r by reference, and neither cloudpickle nor dill "
            "is installed to pickle it by value: install python3-cloudpickle "
            "(Debian) or cloudpickle" % (func,))
    return byvalue(func, protocol=5)


def dump_call(mode, func, forked_main=None):
    return pickle.dumps((PROTOCOL, mode, dump_function(func, forked_main)),
                        protocol=5)


def load_call(frame):
    version, mode, fpickle = pickle.loads(frame)
    if version != PROTOCOL or mode not in (MAP, STAR, APPLY):
        raise ValueError("unknown call frame version %r or mode %r"
                         % (version, mode))
    return mode, pickle.loads(fpickle)


def error_of(exc, context=None):
    """The error tuple of an exception raised here, picklable or not."""
    import traceback  # only when something failed
    tb = "".join(traceback.format_exception(type(exc), exc,
                                            exc.__traceback__))
    if context:
        tb = "%s:\n%s" % (context, tb)
    try:
        pickle.loads(dumps(exc))
        obj = exc
    except Exception:
        obj = None
    exc.__traceback__ = None
    return (False, (obj, type(exc).__qualname__, str(exc), tb))


class BadChunk:
    """A chunk some of whose arguments the caller could not pickle: `args`
    with None in their places, and `bad` mapping their offsets to the
    caller's message.  The worker fails those alone."""

    def __init__(self, args, bad):
        self.args = args
        self.bad = bad


def _call(mode, func):
    """The per-argument call of a mode, as a one-argument function."""
    if mode == MAP:
        return func
    if mode == STAR:
        return lambda a: func(*a)
    return lambda a: func(*a[0], **a[1])


def run(mode, func, args):
    """Runs a chunk: (values, errors), values[i] the result of argument i
    (None where it failed) and errors {i: error tuple}."""
    bad = {}
    if type(args) is BadChunk:
        bad = {i: (None, "PicklingError", m, m) for i, m in args.bad.items()}
        args = args.args
    call = _call(mode, func)
    values = []
    append = values.append
    errors = {}
    it = iter(args)
    while True:
        try:
            if bad:
                for a in it:
                    i = len(values)
                    append(None if i in bad else call(a))
            else:
                # extend keeps what map produced before an exception, and
                # the loop goes on after the argument that raised
                values.extend(map(call, it))
            break
        except BaseException as e:  # that argument's error, whatever it is
            errors[len(values)] = error_of(e)[1]
            append(None)
    errors.update(bad)
    return values, errors


def dump_results(results):
    """pack() of run()'s (values, errors) (arrays go out of band, through
    the shared arena, not the socket); values that cannot be pickled
    become errors of their own."""
    try:
        return pack(results)
    except Exception:
        pass
    values, errors = results
    values = list(values)
    for i, v in enumerate(values):
        try:
            dumps(v)
        except Exception as e:
            values[i] = None
            errors[i] = error_of(e, "cannot pickle the result")[1]
    return pack((values, errors))


def dump_initializer(initializer, initargs):
    import base64
    data = pickle.dumps((PROTOCOL, dump_function(initializer), tuple(initargs)),
                        protocol=5)
    return base64.b64encode(data).decode("ascii")


def run_initializer(text):
    import base64
    version, fpickle, initargs = pickle.loads(base64.b64decode(text))
    pickle.loads(fpickle)(*initargs)


def worker_env():
    """What a Python worker needs in its environment to import what the
    caller can (its sys.path, and this package's library)."""
    from . import _lib
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    import sys
    path = [here] + [p or os.getcwd() for p in sys.path]
    return ["PYTHONPATH=" + os.pathsep.join(path),
            "PICKLEPOOL_LIB=" + os.path.abspath(_lib.path)]
