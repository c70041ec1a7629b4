"""native - C kernels from Python: ``picklepool.native("examples.normalize")``.

A native kernel is a C function a plugin registers (include/picklepool/
registry.h).  Used as the function of any Pool map call, its arguments are
pickled by CPython (protocol 5, arrays out of band through the shared
arena) and decoded by picklepool's C codec in a *native* worker: no Python
runs there.  The Pool keeps a second set of workers for this, native ones
forked from the fork server with the plugins loaded, made on first use.

    from picklepool import Pool, native
    normalize = native("examples.normalize")
    with Pool(plugins=["examples"]) as pool:
        out = pool.map(normalize, arrays)

Errors come back as the exception the kernel names ("TypeError: ..."
raises TypeError; an unknown name raises RuntimeError with the message).
"""

import builtins
import pickle

__all__ = ["native"]


class native:
    """A native kernel ``module.func`` of a plugin, for Pool map calls.

    ``plugin`` is the plugin that registers it: a name found in the plugin
    directories ("examples", the bundled one) or a path to a .so; by
    default the module's name.  Calling it directly runs nothing: it is
    meant for a Pool.
    """

    def __init__(self, name: str, *, plugin: str = None):
        module, dot, func = name.rpartition(".")
        if not dot or not module or not func:
            raise ValueError("a native kernel is named 'module.func', not %r"
                             % (name,))
        self.module = module
        self.func = func
        self.plugin = plugin or module

    @property
    def name(self) -> str:
        return "%s.%s" % (self.module, self.func)

    def frame(self) -> bytes:
        """The call frame native workers read: a pickled global."""
        return (b"\x80\x02c" + self.module.encode() + b"\n" +
                self.func.encode() + b"\n.")

    def __call__(self, *args, **kwargs):
        raise TypeError("native kernel %s runs in a Pool's workers: use it "
                        "as the function of pool.map / imap / apply"
                        % self.name)

    def __repr__(self):
        return "native(%r, plugin=%r)" % (self.name, self.plugin)

    def __reduce__(self):
        return (native, (self.name,), {"plugin": self.plugin})

    def __setstate__(self, state):
        self.plugin = state["plugin"]


def exception_of(message: str) -> BaseException:
    """The exception a kernel's message names ("ValueError: bad"), as
    picklepool's CLI does: a builtins exception class, else RuntimeError."""
    head, sep, rest = message.partition(": ")
    cls = getattr(builtins, head, None) if sep else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(rest)
        except Exception:
            pass
    return RuntimeError(message)


def dumps_item(arg, buffer_callback):
    """An argument as a native worker reads it."""
    return pickle.dumps(arg, protocol=5, buffer_callback=buffer_callback)
