"""Benchmark the detector under the real micropython binary.

Runs firmware/gait.py over the bundled walking excerpt and prints one JSON line:
us_per_sample (detector cost per sample), baseline_us_per_sample (a loop that only
passes the same three samples to a no-op call), ratio, heap_bytes_per_sample (measured
with gc.mem_alloc over samples that produce no event), detector_heap_bytes (heap the
detector object holds) and heap_locked_run_ok (the whole trace fed under
micropython.heap_lock()). Targets: 0 bytes per sample, ratio <= 4, heap <= 2 KB.
The unix port on a PC is far faster than an ESP32; compare ratios, not microseconds.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from host_tools import argcheck

HELP = "detector speed and memory under the micropython binary (one JSON line)"

DATA = Path(__file__).resolve().parent / "data" / "walk_left.csv"


def add_arguments(p) -> None:
    p.add_argument("--trace", default=str(DATA), help="trace to feed (default: bundled walk)")
    p.add_argument("--repeats", type=argcheck.int_range(1, 1000, "--repeats"), default=5,
                   help="timed runs, 1..1000; the fastest counts")


def run(args) -> int:
    import numpy as np

    from . import engine, tracefile
    from .cli import UsageError

    try:
        trace = tracefile.read_trace(args.trace)
    except tracefile.TraceError as exc:
        raise UsageError(str(exc)) from None
    rate = trace.rate_hz or tracefile.DEFAULT_RATE_HZ
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.bin"
        path.write_bytes(np.asarray(trace.samples, dtype="<u2").tobytes())
        proc = subprocess.run(
            [
                engine.micropython_binary(),
                str(engine.MPY_DIR / "bench_detector.py"),
                str(path),
                str(rate),
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            env=engine.mpy_env(),
            timeout=600,
        )
    if proc.returncode != 0:
        print(proc.stderr)
        return 1
    print(proc.stdout.strip())
    return 0
