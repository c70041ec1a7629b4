"""shared - numpy arrays that a pool's workers read where they are.

The C runtime keeps one shared heap per process (include/picklepool/
shared.h) that every worker of every pool maps.  An array whose data lies
there travels to the workers as an offset, never as bytes:

    import picklepool
    a = picklepool.empty((32, 1 << 20), dtype="float32")   # or pool.empty
    a[:] = ...                                    # fill it in place
    with picklepool.Pool(plugins=["examples"]) as pool:
        out = pool.map(picklepool.native("examples.normalize"), a)

Results come back the other way without a copy when a worker built them in
its pool's shared arena (a native kernel's large arrays always are; a
Python function's large results are copied into it once, by the worker):
the array handed to the caller is a view of that memory, kept alive
(pool_shared_keep) until its last reference goes away, even after the pool
is gone.

Who owns what: a _Block owns one allocation (a heap block, or a kept result
view) and releases it (pool_shared_release) when it is collected; the
memory objects made over it (a ctypes array, a memoryview, the numpy arrays
and every view or slice of them) keep the _Block alive through their base
chain.  Nothing is released in a forked child: the heap's bookkeeping is
the creating process's.
"""

import ctypes
import operator
import os

from . import _lib

__all__ = ["empty", "zeros", "asarray", "is_shared", "usage"]

# Result buffers below this are copied: a view costs more than the copy.
VIEW_MIN_BYTES = 4096


class _Block:
    """One allocation of shared memory, released with the last reference
    to it (see the module's docstring)."""

    __slots__ = ("ptr", "nbytes", "kind", "pid")
    _release = _lib.pool_shared_release  # reachable at interpreter exit
    _getpid = os.getpid

    def __init__(self, ptr, nbytes, kind):
        self.ptr = ptr
        self.nbytes = nbytes
        self.kind = kind  # "heap" or "result"
        self.pid = os.getpid()

    def memory(self, readonly=False):
        """A memoryview ('B' format) of the whole block that keeps the
        block alive."""
        n = max(self.nbytes, 1)  # a 0-byte block still has a page
        buf = (ctypes.c_ubyte * n).from_address(self.ptr)
        buf._pp_block = self
        mv = memoryview(buf).cast("B")
        if self.nbytes == 0:
            mv = mv[:0]
        return mv.toreadonly() if readonly else mv

    def __del__(self):
        ptr, self.ptr = self.ptr, None
        if ptr and self.pid == self._getpid():
            self._release(ptr)

    def __repr__(self):
        return "<picklepool shared %s block of %d bytes at %#x>" % (
            self.kind, self.nbytes, self.ptr or 0)


def _np():
    import numpy
    return numpy


def _alloc(nbytes):
    ptr = ctypes.c_void_p()
    err = _lib.PkError()
    rc = _lib.pool_shared_alloc(max(nbytes, 1), ctypes.byref(ptr),
                                ctypes.byref(err))
    if rc == _lib.PK["ENOMEM"]:
        raise MemoryError("picklepool: " + err.text())
    if rc != 0:
        raise RuntimeError("picklepool: %s (%s)" % (err.text(),
                                                   _lib.errname(rc)))
    return _Block(ptr.value, nbytes, "heap")


def _shape(shape):
    try:
        return (operator.index(shape),)
    except TypeError:
        return tuple(operator.index(n) for n in shape)


def empty(shape, dtype=float, order="C"):
    """A new numpy array in the shared heap, contents undefined, like
    numpy.empty: maps read it in place (no copy into any pool).

    shape: int or tuple of ints; dtype: any numpy dtype without Python
    objects in it; order: "C" (row major) or "F" (column major).  The
    memory is freed when the array and every view of it are gone.  Raises
    MemoryError when the heap is full (PICKLEPOOL_SHARED_BYTES, read once
    per process, sets its size; default 16 GiB of address space, costing
    only the pages in use)."""
    np = _np()
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise TypeError("picklepool.empty: dtype %s holds Python objects, "
                        "which cannot be shared between processes" % dt)
    if order not in ("C", "F"):
        raise ValueError("order must be 'C' or 'F', not %r" % (order,))
    shape = _shape(shape)
    if any(n < 0 for n in shape):
        raise ValueError("negative dimensions are not allowed")
    count = 1
    for n in shape:
        count *= n
    block = _alloc(count * dt.itemsize)
    return np.ndarray(shape, dt, buffer=block.memory(), order=order)


def zeros(shape, dtype=float, order="C"):
    """empty(), filled with zeros (the heap reuses its pages, so new memory
    is not zero by itself)."""
    a = empty(shape, dtype, order)
    a.fill(0)
    return a


def _block_of(a):
    """The _Block an array's memory belongs to, or None."""
    np = _np()
    b = a
    for _ in range(64):  # base chains are short; never loop for ever
        if isinstance(b, np.ndarray):
            b = b.base
        elif isinstance(b, memoryview):
            b = b.obj
        else:
            return getattr(b, "_pp_block", None)
    return None


def is_shared(a):
    """Whether a map passes the numpy array a without copying it: it is
    contiguous (C or Fortran order: numpy pickles other arrays as a copy)
    and its elements lie in one block of the shared heap."""
    np = _np()
    if not isinstance(a, np.ndarray) or not (a.flags.c_contiguous or
                                             a.flags.f_contiguous):
        return False
    return a.nbytes > 0 and bool(_lib.pool_shared_contains(
        a.__array_interface__["data"][0], a.nbytes))


def asarray(a, dtype=None, order=None):
    """a as a numpy array that maps pass without copying it into a pool.

    An array already in the shared heap (empty, zeros, asarray, or a view
    of one) with the dtype asked for is returned as it is, and so is a
    result a map returned as a view of its pool's arena (pass it to
    another map and it is copied once, into that pool's arena: only the
    heap is mapped by every pool).  Anything else is copied into the heap
    once: order "C", "F", or None (F when a is Fortran-contiguous only,
    else C); a read-only array gives a read-only copy."""
    np = _np()
    if isinstance(a, np.ndarray) and (dtype is None or
                                      np.dtype(dtype) == a.dtype):
        c, f = a.flags.c_contiguous, a.flags.f_contiguous
        ok_order = (c or f) if order is None else (c if order == "C" else
                                                   f if order == "F" else
                                                   False)
        if ok_order and (is_shared(a) or _block_of(a) is not None):
            return a
    src = np.asarray(a, dtype=dtype)
    if order is None:
        order = ("F" if src.flags.f_contiguous and not src.flags.c_contiguous
                 else "C")
    out = empty(src.shape, src.dtype, order)
    np.copyto(out, src, casting="no")
    if not src.flags.writeable:
        out.flags.writeable = False
    return out


def usage():
    """(blocks, bytes) of the shared heap in use now, by this process's
    arrays (whole pages)."""
    blocks, nbytes = ctypes.c_size_t(0), ctypes.c_size_t(0)
    _lib.pool_shared_usage(ctypes.byref(blocks), ctypes.byref(nbytes))
    return blocks.value, nbytes.value


def result_buffer(ptr, nbytes, readonly=False):
    """A result buffer a raw map delivered at ptr: a view of its pool's
    arena, taken over (pool_shared_keep) and released when the last
    reference to it goes, or, when it is not in an arena (small buffers
    travel through the socket), a writable copy."""
    if nbytes >= VIEW_MIN_BYTES:
        err = _lib.PkError()
        if _lib.pool_shared_keep(ptr, nbytes, ctypes.byref(err)) == 0:
            return _Block(ptr, nbytes, "result").memory(readonly)
    return _lib.copy_out(ptr, nbytes)
