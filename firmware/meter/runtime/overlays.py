# Overlays: rarely used modules imported while they are used and let go after, so their code
# takes heap only then (commands are rare, the heap is not). One way to let a module go;
# every overlay, with what it pulls in, is listed in meter/runtime/overlay_table.py.
import sys

from meter.runtime import compat


def unload(name):
    """Let the module `name` (dotted, e.g. "meter.storage.ring") go again: out of
    sys.modules and off its package, so nothing keeps its code alive."""
    sys.modules.pop(name, None)
    dot = name.rfind(".")
    package = sys.modules.get(name[:dot]) if dot > 0 else None
    if package is not None:
        try:
            delattr(package, name[dot + 1:])
        except (AttributeError, KeyError):  # MicroPython says KeyError
            pass


class overlay:  # noqa: N801 - used like a function
    """`with`-less overlay: overlay("meter.x.y").f(...) imports meter.x.y, and the module is
    dropped again as soon as the call returns and the reference goes, so rarely used code
    (connecting, verifying a command) does not stay in RAM. A collection first lets it load
    into the holes the garbage leaves instead of failing on a fragmented heap."""

    def __init__(self, name):
        compat.collect()
        __import__(name)
        self.m = sys.modules[name]
        unload(name)

    def __getattr__(self, attr):
        return getattr(self.m, attr)
