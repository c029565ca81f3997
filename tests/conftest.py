"""Tests marked ``long`` (hours of trace through the virtual board) run only with
``pytest --long`` (or INSOLE_LONG_TESTS=1), so ``make test`` stays short."""

from __future__ import annotations

import os

import pytest


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
