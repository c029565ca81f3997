"""Imports that fail for want of memory, as a module import does on a full heap."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_memory_for(module: str) -> Iterator[None]:
    """Inside the block importing ``module`` raises MemoryError; other imports work."""
    real = builtins.__import__

    def short_of_memory(name, *args, **kw):
        if name == module:
            raise MemoryError
        return real(name, *args, **kw)

    builtins.__import__ = short_of_memory
    try:
        yield
    finally:
        builtins.__import__ = real
