"""_lib - the ctypes binding of libpicklepool used by the front-end and the
Python worker.

Why ctypes and not an extension module: the front-end makes one foreign call
per chunk of items (pickled by CPython into one buffer), not per item, so a
call's cost (about a microsecond) is noise next to the pickling; and ctypes
needs no compiler, so the package installs offline into any CPython 3.9+
(DESIGN.md gives the measured per-batch cost).

The library is found, in order: $PICKLEPOOL_LIB; the build tree a
``pip install ./python`` was made from (recorded in _where.py); the build
tree this package sits in (python/../build); next to an installed package
(<prefix>/lib); the dynamic linker's search path.  The struct layouts below
mirror include/picklepool/*.h and are checked against the library at load
(pool_opts_init writes its own sizeof).
"""

import ctypes
import os

c_size_t = ctypes.c_size_t
c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
c_double = ctypes.c_double

# pk_err_t codes (include/picklepool/error.h: codes never change value).
ERRNAMES = [
    "OK", "ENOMEM", "EINVAL", "ESYS", "EPICKLE", "ETRUNC", "ELIMIT",
    "EREFUSED", "EUNSUPPORTED", "ETYPE", "EUNHASHABLE", "ENOFUNC", "EFUNC",
    "ECRASHED", "ETIMEDOUT", "ECLOSED", "EINTR", "EPROTO", "EIO",
    "ECANCELED", "EOF",
]
PK = {name: code for code, name in enumerate(ERRNAMES)}


class PkError(ctypes.Structure):
    _fields_ = [("code", c_int), ("sys_errno", c_int),
                ("offset", ctypes.c_longlong), ("opcode", c_int),
                ("msg", ctypes.c_char * 256)]

    def text(self):
        return self.msg.decode("utf-8", "replace")


class PkBuffer(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t), ("readonly", c_int)]


class PoolOpts(ctypes.Structure):
    _fields_ = [("size", c_size_t), ("workers", c_int), ("placement", c_int),
                ("prefetch", c_int), ("chunksize", c_size_t),
                ("timeout", c_double), ("retries", c_int),
                ("maxtasksperchild", c_size_t), ("max_rss", c_size_t),
                ("initializer", c_void_p), ("initarg", c_void_p),
                ("plugins", ctypes.POINTER(c_char_p)), ("nplugins", c_size_t),
                ("topology", c_char_p), ("shm_bytes", c_size_t),
                ("shm_threshold", c_size_t), ("spin_us", c_int),
                ("worker_argv", ctypes.POINTER(c_char_p)),
                ("worker_env", ctypes.POINTER(c_char_p)),
                ("stall_timeout", c_double), ("address", c_char_p),
                ("keys", c_char_p), ("insecure", c_int),
                ("worker_main", c_void_p), ("worker_main_arg", c_void_p),
                ("start_nowait", c_int)]


class CallOpts(ctypes.Structure):
    _fields_ = [("size", c_size_t), ("chunksize", c_size_t),
                ("timeout", c_double)]


class RawItem(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t),
                ("bufs", ctypes.POINTER(PkBuffer)), ("nbufs", c_size_t)]


class RawResult(ctypes.Structure):
    _fields_ = [("index", c_size_t), ("status", c_int), ("data", c_void_p),
                ("len", c_size_t), ("bufs", ctypes.POINTER(PkBuffer)),
                ("nbufs", c_size_t), ("error", c_char_p)]


class RawCall(ctypes.Structure):
    _fields_ = [("call", c_void_p), ("call_len", c_size_t),
                ("item", c_void_p), ("len", c_size_t),
                ("bufs", ctypes.POINTER(PkBuffer)), ("nbufs", c_size_t),
                ("index", c_size_t)]


class RawOut(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("len", c_size_t),
                ("bufs", ctypes.POINTER(PkBuffer)), ("nbufs", c_size_t)]


class WorkerStats(ctypes.Structure):
    _fields_ = [("slot", c_int), ("pid", c_int), ("core", c_int),
                ("cpus", ctypes.c_char * 64), ("items_done", ctypes.c_uint64),
                ("busy_s", c_double), ("restarts", ctypes.c_uint),
                ("lane_items", ctypes.c_uint64)]


RAW_NEXT = ctypes.CFUNCTYPE(c_int, c_void_p, ctypes.POINTER(RawItem))
WORKER_MAIN = ctypes.CFUNCTYPE(c_int, c_void_p)
RAW_FN = ctypes.CFUNCTYPE(c_int, c_void_p, ctypes.POINTER(RawCall),
                          ctypes.POINTER(RawOut), ctypes.POINTER(PkError))


def copy_out(ptr, n):
    """A writable copy of n bytes at ptr, in one memmove."""
    ba = bytearray(n)
    if n:
        ctypes.memmove((ctypes.c_char * n).from_buffer(ba), ptr, n)
    return ba


class _PyBuffer(ctypes.Structure):  # CPython's Py_buffer
    _fields_ = [("buf", c_void_p), ("obj", c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", c_int), ("ndim", c_int), ("format", c_char_p),
                ("shape", c_void_p), ("strides", c_void_p),
                ("suboffsets", c_void_p), ("internal", c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.restype = c_int
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), c_int]
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.restype = None
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]


_EMPTY = ctypes.c_char()


def address_of(view, keep):
    """The address of a buffer's bytes (a contiguous memoryview of a
    PickleBuffer), read-only memory included, without copying: valid while
    view lives, so view is appended to keep.  (ctypes' from_buffer takes
    writable memory only; a read-only array in the shared heap must go by
    reference too.)"""
    keep.append(view)
    if not view.nbytes:  # an empty array's: any valid address will do
        return ctypes.addressof(_EMPTY)
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except TypeError:  # read-only: ask the buffer protocol itself
        pb = _PyBuffer()
        if _get_buffer(view, ctypes.byref(pb), 0) != 0:  # PyBUF_SIMPLE
            raise BufferError("cannot get the address of %r" % (view,))
        try:
            return pb.buf or 0
        finally:
            _release_buffer(ctypes.byref(pb))


def _candidates():
    env = os.environ.get("PICKLEPOOL_LIB")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    try:  # written by `pip install ./python` (python/_build/backend.py)
        from ._where import LIB
        if LIB:
            yield LIB
    except ImportError:
        pass
    build = os.environ.get("PICKLEPOOL_BUILD")
    if build:
        yield os.path.join(build, "libpicklepool.so")
    yield os.path.join(here, "..", "..", "build", "libpicklepool.so")
    # an installed package: <prefix>/lib/pythonX/dist-packages/picklepool
    for up in ("../../../..", "../../.."):
        yield os.path.normpath(os.path.join(here, up, "lib",
                                            "libpicklepool.so"))
    import ctypes.util  # only now: it is slow to import
    found = ctypes.util.find_library("picklepool")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError(
        "picklepool: cannot find libpicklepool.so; looked at: "
        + ", ".join(tried)
        + ". Build it with `make` in the source tree, install it with "
        "`make install`, or set PICKLEPOOL_LIB to its path.")


lib, path = _load()
# The same library, called with the GIL held (a CDLL call releases it):
# only for pool_global_init_main, whose fork must copy this process while
# its thread state is current (worker.py, start_fork_server).
pylib = ctypes.PyDLL(path)


def _fn(name, res, *args, dll=lib):
    f = getattr(dll, name)
    f.restype = res
    f.argtypes = list(args)
    return f


P = ctypes.POINTER
pk_strerror = _fn("pk_strerror", c_char_p, c_int)
pk_version = _fn("pk_version", c_char_p)
pool_global_init = _fn("pool_global_init", c_int, P(PkError))
pool_global_init_main = _fn("pool_global_init_main", c_int, WORKER_MAIN,
                            c_void_p, P(PkError), dll=pylib)
pool_opts_init = _fn("pool_opts_init", None, P(PoolOpts))
pool_call_opts_init = _fn("pool_call_opts_init", None, P(CallOpts))
pool_create = _fn("pool_create", c_int, P(c_void_p), P(PoolOpts), P(PkError))
pool_destroy = _fn("pool_destroy", None, P(c_void_p))
pool_close = _fn("pool_close", c_int, c_void_p)
pool_join = _fn("pool_join", c_int, c_void_p, c_double)
pool_terminate = _fn("pool_terminate", None, c_void_p)
pool_wait_ready = _fn("pool_wait_ready", c_int, c_void_p, c_double,
                      P(PkError))
pool_stats = _fn("pool_stats", c_int, c_void_p, P(WorkerStats), c_size_t,
                 P(c_size_t))
pool_imap_raw = _fn("pool_imap_raw", c_int, c_void_p, c_char_p, c_size_t,
                    RAW_NEXT, c_void_p, c_int, P(CallOpts), P(c_void_p),
                    P(PkError))
pool_iter_next_raw = _fn("pool_iter_next_raw", c_int, c_void_p, P(RawResult),
                         c_double)
pool_iter_free = _fn("pool_iter_free", None, P(c_void_p))
pool_iter_error = _fn("pool_iter_error", c_int, c_void_p, P(PkError))
pool_apply_raw = _fn("pool_apply_raw", c_int, c_void_p, c_char_p, c_size_t,
                     P(RawItem), P(c_void_p), P(PkError))
pool_future_wait_raw = _fn("pool_future_wait_raw", c_int, c_void_p,
                           P(RawResult), c_double)
pool_future_free = _fn("pool_future_free", None, P(c_void_p))
pool_shared_alloc = _fn("pool_shared_alloc", c_int, c_size_t, P(c_void_p),
                        P(PkError))
pool_shared_keep = _fn("pool_shared_keep", c_int, c_void_p, c_size_t,
                       P(PkError))
pool_shared_release = _fn("pool_shared_release", c_int, c_void_p)
pool_shared_contains = _fn("pool_shared_contains", c_int, c_void_p, c_size_t)
pool_shared_usage = _fn("pool_shared_usage", None, P(c_size_t), P(c_size_t))
pool_shared_copies = _fn("pool_shared_copies", None, c_void_p,
                         P(ctypes.c_uint64), P(ctypes.c_uint64))
pool_worker_in_shared = _fn("pool_worker_in_shared", c_int, c_void_p, c_size_t)
pool_worker_serve = _fn("pool_worker_serve", c_int, RAW_FN, c_void_p, P(c_int),
                        P(PkError))


def _check_layout():
    o = PoolOpts()
    pool_opts_init(ctypes.byref(o))
    if o.size != ctypes.sizeof(PoolOpts):
        raise ImportError(
            "picklepool: %s has pool_opts_t of %d bytes, this package expects "
            "%d: the library and the package are from different versions"
            % (path, o.size, ctypes.sizeof(PoolOpts)))
    c = CallOpts()
    pool_call_opts_init(ctypes.byref(c))
    if c.size != ctypes.sizeof(CallOpts):
        raise ImportError("picklepool: pool_call_opts_t differs in %s" % path)


_check_layout()


def errname(code):
    return ERRNAMES[code] if 0 <= code < len(ERRNAMES) else "E%d" % code
