"""Tests marked ``long`` (hours of trace through the virtual board) run only with
``pytest --long`` (or INSOLE_LONG_TESTS=1), so ``make test`` stays short.

Under CPython the firmware's lazy.py collects only the youngest generation when it
drops a module. The full gc.collect() it makes is for MicroPython, where it returns the
module's memory at once; CPython frees a dropped module's reference cycles in its own
collections, and a full one after every command takes tens of ms in a test process that
holds numpy, hypothesis and bumble (most of the Control fuzzing's time). Memory itself
is measured under the micropython binary, where lazy.py runs unchanged."""

from __future__ import annotations

import gc
import os
import sys

import pytest


class _YoungGC:
    @staticmethod
    def collect():
        return gc.collect(0)


def pytest_collection_finish(session):
    lazy = sys.modules.get("lazy")
    where = str(getattr(lazy, "__file__", ""))
    if where.endswith(os.path.join("firmware", "lazy.py")) and getattr(lazy, "gc", None) is gc:
        lazy.gc = _YoungGC


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the tests marked long (minutes each)")


def pytest_configure(config):
    config.addinivalue_line("markers", "long: takes minutes; runs with --long")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long") or os.environ.get("INSOLE_LONG_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long: run with pytest --long")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)
