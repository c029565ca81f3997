"""Heel-strike notification latency at each sample rate.

The bundled walk (host_tools/data/walk_left.csv), looped and resampled to each rate as
the fault bench does, is fed to firmware/gait.py; for each strike the detector reports,
the latency is the number of samples between the trace's own contact crossing (the
most-loaded channel, scaled to its range over the 3 s around it, rising through 25 %,
the detector's contact level; found without the detector) and the sample whose feed()
returned the strike. The first two strikes are left out: the detector learns each
channel's range from them. The pre-filter (one mains period) and the confirmation
(_CONFIRM_MS) make up most of it, so at high rates the latency is more samples but no
more milliseconds.
"""

from __future__ import annotations

import numpy as np

from host_tools.gait import engine, faultbench

RATES = (50, 100, 150, 250, 300, 1000)
CONTACT_LEVEL = 0.25  # firmware/gait.py _ON / _FULL
LEARN_STRIKES = 2
WINDOW_S = 1.5  # each side of a strike: the range the crossing is scaled to
TARGET_RATE_HZ = 100
TARGET_SAMPLES = 3


def crossing_near(trace: np.ndarray, k: int, rate_hz: int) -> int:
    """The trace's contact crossing nearest sample k (see the module's text)."""
    half = int(WINDOW_S * rate_hz)
    a = max(0, k - half)
    w = trace[a : k + half].astype(float)
    lo, hi = w.min(axis=0), w.max(axis=0)
    comp = ((w - lo) / np.maximum(hi - lo, 1.0)).max(axis=1)
    ups = np.flatnonzero((comp[1:] >= CONTACT_LEVEL) & (comp[:-1] < CONTACT_LEVEL)) + 1
    if not len(ups):
        raise ValueError(f"no contact crossing within {WINDOW_S} s of sample {k}")
    return a + int(ups[np.argmin(np.abs(ups + a - k))])


def latencies(trace: np.ndarray, rate_hz: int, mains_hz: int = 50) -> list[int]:
    """Samples from each strike's crossing to its notification, after the first two."""
    gait = engine.load_firmware_module()
    det = gait.GaitDetector(rate_hz, mains_hz)
    notified = [i for i, (h, a, f) in enumerate(trace.tolist())
                if det.feed(h, a, f) & gait.EV_STRIKE]
    return [k - crossing_near(trace, k, rate_hz) for k in notified[LEARN_STRIKES:]]


def rows(rates=RATES, seconds: float = 60.0) -> list[dict]:
    """Per rate: strikes measured, median and largest latency in samples and in ms."""
    out = []
    for rate in rates:
        lat = latencies(faultbench.looped_walk(rate, seconds), rate)
        worst = max(lat)
        out.append({
            "rate_hz": rate,
            "strikes": len(lat),
            "median_samples": float(np.median(lat)),
            "max_samples": worst,
            "max_ms": round(worst * 1000 / rate, 1),
        })
    return out


def target_met(table: list[dict]) -> bool:
    """Within TARGET_SAMPLES of the crossing at TARGET_RATE_HZ (the rate it is set at)."""
    return all(r["max_samples"] <= TARGET_SAMPLES
               for r in table if r["rate_hz"] == TARGET_RATE_HZ)
