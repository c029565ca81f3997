# Code that runs rarely is not kept in RAM: a module is imported when it is needed
# and dropped from sys.modules after its use, so its code and tables leave the heap
# (the names it interned stay, once). Boot-only code (config.py's file handling,
# loading the bond file) and the Control commands (control.py) work this way.
#
# Main loop and boot only: an import allocates, so never from an IRQ handler.
import gc
import sys


def load(name):
    """Import module name for one use; returns (module, what to drop())."""
    before = list(sys.modules)
    failed = True
    try:
        __import__(name)
        failed = False
    finally:
        added = [m for m in sys.modules if m not in before]
        if failed:
            drop(added)  # what a failed import left
    return sys.modules[name], added


def drop(names):
    """Forget the modules load() added (none when the module was loaded already)."""
    for name in names:
        sys.modules.pop(name, None)
    if names:
        gc.collect()  # return their memory now, before anything else settles there


def run(name, fn, *args):
    """fn(*args) of module name, imported for this call and dropped after."""
    mod, added = load(name)
    try:
        f = getattr(mod, fn)
        mod = None  # no reference left when drop() collects
        result = f(*args)
        f = None
        return result
    finally:
        drop(added)
