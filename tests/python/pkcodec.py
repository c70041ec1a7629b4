"""pkcodec - a small ctypes wrapper around build/libpicklepool.so for the tests.

It drives the C pickle codec (include/picklepool/pickle.h) from CPython so the
cross-check suite can compare it with CPython's own pickle module in one
process: a crash in the codec kills pytest, which is the point.

    loads(data, buffers=None, encoding='ASCII', protocol=5) -> bytes
        Decodes `data` in C (with out-of-band `buffers`, borrowed zero-copy)
        and returns the C re-encoding of the decoded graph, everything in band.
    recode(data, protocol=5, oob=False, buffers=None, encoding='ASCII')
        -> (bytes, [buffers])
        Same, but with oob=True (protocol 5) every buffer the encoder offers is
        taken out of band and returned (a copy; bytearray unless read-only).
    inspect(data, buffers=None, encoding='ASCII') -> dict
        Decodes and describes the root (type name, flags, and for ndarrays the
        data address, so tests can check that out-of-band data was borrowed).

Failures raise PkError carrying the code name, offset, opcode and message.

The library is build/libpicklepool.so under $PICKLEPOOL_BUILD (an absolute
path to the build directory, set by `make test`), default <repo>/build.
"""

import ctypes
import os

__all__ = ["PkError", "loads", "recode", "inspect", "lib_path", "load_library"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))

ENCODINGS = {"ascii": 0, "latin1": 1, "latin-1": 1, "bytes": 2}

PK_NDARRAY = 15  # pk_type_t
PK_PICKLEBUFFER = 17

PK_VF_READONLY = 0x01
PK_VF_BORROWED = 0x02
PK_VF_NPSCALAR = 0x04
PK_VF_FORTRAN = 0x08


def lib_path():
    build = os.environ.get("PICKLEPOOL_BUILD") or os.path.join(_REPO, "build")
    return os.path.join(build, "libpicklepool.so")


class PkError(Exception):
    """A picklepool error: .code (e.g. 'EREFUSED'), .offset, .opcode, .message."""

    def __init__(self, code, offset, opcode, message, formatted):
        super().__init__(formatted)
        self.code = code
        self.offset = offset
        self.opcode = opcode
        self.message = message


class _Error(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_int),
        ("sys_errno", ctypes.c_int),
        ("offset", ctypes.c_longlong),
        ("opcode", ctypes.c_int),
        ("msg", ctypes.c_char * 256),
    ]


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
        ("readonly", ctypes.c_int),
    ]


class _LoadOpts(ctypes.Structure):
    _fields_ = [
        ("max_depth", ctypes.c_size_t),
        ("max_memo", ctypes.c_size_t),
        ("max_stack", ctypes.c_size_t),
        ("max_ops", ctypes.c_size_t),
        ("max_bytes", ctypes.c_size_t),
        ("encoding", ctypes.c_int),
        ("buffers", ctypes.POINTER(_Buffer)),
        ("nbuffers", ctypes.c_size_t),
    ]


class _Buf(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_uint8)),
        ("len", ctypes.c_size_t),
        ("cap", ctypes.c_size_t),
    ]


_BUFFER_CB = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
)


class _DumpOpts(ctypes.Structure):
    _fields_ = [
        ("protocol", ctypes.c_int),
        ("buffer_cb", _BUFFER_CB),
        ("buffer_ctx", ctypes.c_void_p),
    ]


class _Value(ctypes.Structure):
    # The head of pk_value_t and the first word of its union.
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("reserved", ctypes.c_uint16),
        ("reserved2", ctypes.c_uint32),
        ("ptr", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
    ]


class _NdArray(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_char),
        ("byteorder", ctypes.c_char),
        ("reserved", ctypes.c_uint16),
        ("itemsize", ctypes.c_uint32),
        ("ndim", ctypes.c_int),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("data", ctypes.c_void_p),
        ("nbytes", ctypes.c_size_t),
    ]


_lib = None


def load_library():
    """Loads (once) and returns the ctypes handle; raises OSError if absent."""
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(lib_path())
    P = ctypes.POINTER
    lib.pk_doc_new.argtypes = [P(ctypes.c_void_p)]
    lib.pk_doc_new.restype = ctypes.c_int
    lib.pk_doc_free.argtypes = [P(ctypes.c_void_p)]
    lib.pk_doc_free.restype = None
    lib.pk_load_opts_init.argtypes = [P(_LoadOpts)]
    lib.pk_load_opts_init.restype = None
    lib.pk_loads.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        P(_LoadOpts),
        P(P(_Value)),
        P(ctypes.c_size_t),
        P(_Error),
    ]
    lib.pk_loads.restype = ctypes.c_int
    if hasattr(lib, "pk_dumps"):  # absent from a decoder-only build
        lib.pk_dumps.argtypes = [P(_Value), P(_DumpOpts), P(_Buf), P(_Error)]
        lib.pk_dumps.restype = ctypes.c_int
        lib.pk_buf_free.argtypes = [P(_Buf)]
        lib.pk_buf_free.restype = None
        lib.pk_dump_opts_init.argtypes = [P(_DumpOpts)]
        lib.pk_dump_opts_init.restype = None
    lib.pk_errname.argtypes = [ctypes.c_int]
    lib.pk_errname.restype = ctypes.c_char_p
    lib.pk_error_format.argtypes = [P(_Error), ctypes.c_char_p, ctypes.c_size_t]
    lib.pk_error_format.restype = ctypes.c_char_p
    lib.pk_type_name.argtypes = [ctypes.c_int]
    lib.pk_type_name.restype = ctypes.c_char_p
    _lib = lib
    return lib


def _raise(lib, rc, err):
    text = ctypes.create_string_buffer(512)
    lib.pk_error_format(ctypes.byref(err), text, len(text))
    name = lib.pk_errname(rc).decode()
    raise PkError(
        name,
        err.offset,
        err.opcode,
        err.msg.decode("utf-8", "replace"),
        "%s: %s" % (name, text.value.decode("utf-8", "replace")),
    )


def _address(buf, keep):
    """(address, length, readonly) of a buffer-protocol object, zero-copy.

    `keep` collects the objects that must outlive the C call."""
    mv = memoryview(buf).cast("B")
    n = mv.nbytes
    if n == 0:
        return 0, 0, int(mv.readonly)
    if not mv.readonly:
        arr = (ctypes.c_char * n).from_buffer(mv)
        keep.append((mv, arr))
        return ctypes.addressof(arr), n, 0
    try:  # read-only: numpy can expose the address without copying
        import numpy

        a = numpy.frombuffer(mv, dtype=numpy.uint8)
        keep.append((mv, a))
        return a.ctypes.data, n, 1
    except ImportError:  # pragma: no cover - Debian's python3 has numpy
        b = bytes(mv)
        keep.append(b)
        return ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value, n, 1


def _decode(lib, doc, data, buffers, encoding, keep):
    opts = _LoadOpts()
    lib.pk_load_opts_init(ctypes.byref(opts))
    try:
        opts.encoding = ENCODINGS[encoding.lower()]
    except KeyError:
        raise ValueError("unknown encoding %r" % (encoding,))
    if buffers is not None:
        bufs = list(buffers)
        arr = (_Buffer * max(1, len(bufs)))()
        for i, b in enumerate(bufs):
            addr, n, ro = _address(b, keep)
            arr[i].data = addr
            arr[i].len = n
            arr[i].readonly = ro
        keep.append(arr)
        opts.buffers = arr
        opts.nbuffers = len(bufs)
    data = bytes(data)
    keep.append(data)
    root = ctypes.POINTER(_Value)()
    consumed = ctypes.c_size_t(0)
    err = _Error()
    rc = lib.pk_loads(
        doc, data, len(data), ctypes.byref(opts), ctypes.byref(root),
        ctypes.byref(consumed), ctypes.byref(err),
    )
    if rc != 0:
        _raise(lib, rc, err)
    return root, consumed.value


def _encode(lib, root, protocol, oob):
    taken = []

    def cb(ctx, data, n, readonly):
        raw = ctypes.string_at(data, n) if n else b""
        taken.append((bytes(raw) if readonly else bytearray(raw), data or 0, n))
        return 1

    opts = _DumpOpts()
    lib.pk_dump_opts_init(ctypes.byref(opts))
    opts.protocol = protocol
    cbp = _BUFFER_CB(cb) if oob else _BUFFER_CB()
    opts.buffer_cb = cbp
    out = _Buf()
    err = _Error()
    try:
        rc = lib.pk_dumps(root, ctypes.byref(opts), ctypes.byref(out), ctypes.byref(err))
        if rc != 0:
            _raise(lib, rc, err)
        return ctypes.string_at(out.data, out.len), taken
    finally:
        lib.pk_buf_free(ctypes.byref(out))


def _with_doc(fn):
    lib = load_library()
    doc = ctypes.c_void_p()
    if lib.pk_doc_new(ctypes.byref(doc)) != 0:
        raise MemoryError("pk_doc_new")
    try:
        return fn(lib, doc)
    finally:
        lib.pk_doc_free(ctypes.byref(doc))


def recode_ex(data, protocol=5, oob=False, buffers=None, encoding="ASCII"):
    """recode() plus details: returns (bytes, [(buffer, c_address, len)], consumed)."""

    def run(lib, doc):
        keep = []
        root, consumed = _decode(lib, doc, data, buffers, encoding, keep)
        out, taken = _encode(lib, root, protocol, oob)
        return out, taken, consumed

    return _with_doc(run)


def recode(data, protocol=5, oob=False, buffers=None, encoding="ASCII"):
    """Decode in C, re-encode at `protocol`; returns (bytes, [buffers])."""
    out, taken, _ = recode_ex(data, protocol, oob, buffers, encoding)
    return out, [t[0] for t in taken]


def loads(data, buffers=None, encoding="ASCII", protocol=5):
    """Decode in C and return the in-band re-encoding at `protocol`."""
    return recode(data, protocol, False, buffers, encoding)[0]


def decode_only(data, buffers=None, encoding="ASCII"):
    """Decode in C and discard the result; returns the bytes consumed."""
    return _with_doc(
        lambda lib, doc: _decode(lib, doc, data, buffers, encoding, [])[1]
    )


def inspect(data, buffers=None, encoding="ASCII"):
    """Decode in C and describe the root value (see module doc)."""

    def run(lib, doc):
        keep = []
        root, consumed = _decode(lib, doc, data, buffers, encoding, keep)
        v = root.contents
        info = {
            "type": lib.pk_type_name(v.type).decode(),
            "type_id": v.type,
            "flags": v.flags,
            "consumed": consumed,
            "buffers": [(_address(b, keep)[0]) for b in (buffers or [])],
        }
        if v.type == PK_NDARRAY and v.ptr:
            nd = ctypes.cast(ctypes.c_void_p(v.ptr), ctypes.POINTER(_NdArray)).contents
            info["data"] = nd.data or 0
            info["nbytes"] = nd.nbytes
            info["ndim"] = nd.ndim
            info["dtype"] = (nd.byteorder + nd.kind).decode() + str(nd.itemsize)
        return info

    return _with_doc(run)
