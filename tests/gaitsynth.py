"""Synthetic insole traces with known heel strikes, for detector tests.

A step loads heel, then arch, then forefoot with smooth ramps; the true contact is the
moment the heel starts to load. Options add noise, baseline drift, a mid-stance dip
and faulty channels, so each property the detector promises can be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Walk:
    rate_hz: int = 100
    strides_ms: list[float] = field(default_factory=lambda: [1100.0] * 20)
    stance_frac: float = 0.62
    start_ms: float = 2000.0
    tail_ms: float = 2000.0
    base: tuple[int, int, int] = (2000, 2500, 1800)
    amp: tuple[int, int, int] = (30000, 9000, 26000)
    ramp_ms: float = 70.0
    noise: float = 0.0  # gaussian noise sd, counts
    drift_per_s: float = 0.0  # baseline drift, counts per second (all channels)
    dip: float = 0.0  # mid-stance dip depth as a fraction of load (0..1)
    strike_order: str = "rear"  # rear: heel first; fore: forefoot first
    seed: int = 0

    def contacts_ms(self) -> list[float]:
        t = self.start_ms
        out = []
        for s in self.strides_ms:
            out.append(t)
            t += s
        return out


def _pulse(t: np.ndarray, on: float, off: float, ramp: float) -> np.ndarray:
    rise = np.clip((t - on) / ramp, 0, 1)
    fall = np.clip((off - t) / ramp, 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))


def make(w: Walk) -> np.ndarray:
    contacts = w.contacts_ms()
    end = contacts[-1] + w.strides_ms[-1] * w.stance_frac + w.tail_ms
    t = np.arange(0, end, 1000.0 / w.rate_hz)
    load = np.zeros((len(t), 3))
    for c0, stride in zip(contacts, w.strides_ms, strict=True):
        st = stride * w.stance_frac
        if w.strike_order == "rear":
            spans = [(0.0, 0.55), (0.15, 0.75), (0.25, 1.0)]
        else:
            spans = [(0.2, 0.6), (0.1, 0.8), (0.0, 1.0)]
        for ch, (a, b) in enumerate(spans):
            load[:, ch] += _pulse(t, c0 + a * st, c0 + b * st, w.ramp_ms)
        if w.dip:
            mid = c0 + 0.45 * st
            load *= 1 - w.dip * np.exp(-(((t - mid) / (0.06 * st)) ** 2))[:, None]
    x = np.asarray(w.base, float) + load * np.asarray(w.amp, float)
    x += w.drift_per_s * (t / 1000.0)[:, None]
    if w.noise:
        x += np.random.default_rng(w.seed).normal(0, w.noise, x.shape)
    return np.clip(np.round(x), 0, 65535).astype(np.int32)
