# Benchmark of firmware/gait.py under the micropython binary.
# argv: TRACE.bin RATE_HZ REPEATS. Prints one JSON line.
import gc
import json
import sys
import time
from array import array

import micropython
from gait import GaitDetector


def noop(h, a, f):
    return 0


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    buf = array("H", raw)
    return buf, len(buf) // 3


def timed(fn, buf, n, repeats):
    # one run per repeat; keep the fastest (least disturbed) per-sample time
    best = 0
    for _ in range(repeats):
        gc.collect()
        t0 = time.ticks_us()
        fn(buf, n)
        dt = time.ticks_diff(time.ticks_us(), t0)
        if best == 0 or dt < best:
            best = dt
    return best / n


def main():
    buf, n = load(sys.argv[1])
    rate = int(sys.argv[2])
    repeats = int(sys.argv[3])

    det = GaitDetector(rate)
    feed = det.feed

    def run_detector(b, count):
        for i in range(0, 3 * count, 3):
            feed(b[i], b[i + 1], b[i + 2])

    def run_baseline(b, count):
        for i in range(0, 3 * count, 3):
            noop(b[i], b[i + 1], b[i + 2])

    det_us = timed(run_detector, buf, n, repeats)
    base_us = timed(run_baseline, buf, n, repeats)

    # heap per sample: samples that produce no event, counted by gc.mem_alloc
    det.reset()
    quiet = 0
    gc.collect()
    gc.disable()
    alloc = 0
    for i in range(0, 3 * n, 3):
        m0 = gc.mem_alloc()
        ev = feed(buf[i], buf[i + 1], buf[i + 2])
        m1 = gc.mem_alloc()
        if not ev:
            alloc += m1 - m0
            quiet += 1
    gc.enable()

    # and the direct proof: the same samples under heap_lock
    det.reset()
    locked_ok = 1
    for i in range(0, 3 * n, 3):
        micropython.heap_lock()
        try:
            feed(buf[i], buf[i + 1], buf[i + 2])
        except MemoryError:
            locked_ok = 0
        micropython.heap_unlock()
        if not locked_ok:
            break

    gc.collect()
    before = gc.mem_alloc()
    d2 = GaitDetector(rate)
    gc.collect()
    size = gc.mem_alloc() - before
    d2.reset()

    print(
        json.dumps(
            {
                "samples": n,
                "us_per_sample": round(det_us, 3),
                "baseline_us_per_sample": round(base_us, 3),
                "ratio": round(det_us / base_us, 2),
                "heap_bytes_per_sample": alloc / quiet if quiet else 0,
                "detector_heap_bytes": size,
                "heap_locked_run_ok": bool(locked_ok),
            }
        )
    )


main()
