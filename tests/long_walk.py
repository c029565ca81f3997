"""Long walks (minutes to a whole day) as insole traces, built stride by stride.

gaitsynth.make() evaluates every stride over the whole trace, which is fine for a minute
and hopeless for ten hours; here each stride is drawn only over its own window, with the
same load shape (heel, then arch, then forefoot, raised-cosine ramps). Strides vary a
little, and now and then the walker stands still for a few seconds, so the step detector
sees starts and stops as it does in a day of walking.
"""

from __future__ import annotations

import numpy as np

RATE_HZ = 100
BASE = (2000, 2500, 1800)
AMP = (30000, 9000, 26000)
RAMP_MS = 70.0
STANCE = 0.62
SPANS = ((0.0, 0.55), (0.15, 0.75), (0.25, 1.0))  # heel, arch, forefoot (rearfoot strike)


def walk(seconds: float, seed: int = 0, rate_hz: int = RATE_HZ, pause_every_s: float = 300.0,
         noise: float = 40.0) -> np.ndarray:
    """An (n, 3) uint16 trace of `seconds` of walking with short pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    load = np.zeros((n, 3))
    dt = 1000.0 / rate_hz
    t = 2000.0  # quiet standing first
    end = seconds * 1000.0 - 3000.0
    next_pause = pause_every_s * 1000.0 * rng.uniform(0.5, 1.5)
    while t < end:
        stride = rng.uniform(950.0, 1250.0)
        st = stride * STANCE
        lo = max(0, int(t / dt))
        hi = min(n, int((t + st + RAMP_MS) / dt) + 2)
        tt = np.arange(lo, hi) * dt
        for ch, (a, b) in enumerate(SPANS):
            on, off = t + a * st, t + b * st
            rise = np.clip((tt - on) / RAMP_MS, 0, 1)
            fall = np.clip((off - tt) / RAMP_MS, 0, 1)
            load[lo:hi, ch] += 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))
        t += stride
        if t > next_pause:
            t += rng.uniform(3000.0, 12000.0)  # stands still a while
            next_pause = t + pause_every_s * 1000.0 * rng.uniform(0.5, 1.5)
    x = np.asarray(BASE, float) + load * np.asarray(AMP, float)
    if noise:
        x += rng.normal(0, noise, x.shape)
    return np.clip(np.round(x), 0, 65535).astype(np.uint16)


def write_csv(path, samples: np.ndarray, rate_hz: int = RATE_HZ) -> None:
    """The trace as a trace CSV (docs/TRACE_FORMAT.md), written fast."""
    with open(path, "w") as f:
        f.write(f"# rate_hz={rate_hz}\nheel,arch,forefoot\n")
        np.savetxt(f, samples, fmt="%d", delimiter=",")
