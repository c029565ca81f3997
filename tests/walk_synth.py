"""A synthetic walk with known step times, for checking captures and reports.

Each step loads the heel first, then the arch, then the forefoot, with raised-cosine
ramps, so the true strike, heel-off and toe-off times are known to the millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE_HZ = 100
BASE = 3000
AMP = {"heel": 30000, "arch": 9000, "forefoot": 24000}
RAMP_MS = 60


@dataclass
class Step:
    strike_ms: float  # heel starts to load
    stance_ms: float  # until the forefoot is unloaded


def _pulse(t: np.ndarray, on: float, off: float) -> np.ndarray:
    """0..1: raised-cosine rise from `on`, flat, raised-cosine fall ending at `off`."""
    rise = np.clip((t - on) / RAMP_MS, 0, 1)
    fall = np.clip((off - t) / RAMP_MS, 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))


def make_steps(strides_ms: list[float], stance_frac: float = 0.62, start_ms: float = 1500):
    steps, t = [], start_ms
    for stride in strides_ms:
        steps.append(Step(t, stride * stance_frac))
        t += stride
    return steps


def synth_trace(steps: list[Step], tail_ms: float = 1500, rate_hz: int = RATE_HZ,
                arch_amp: int | None = None) -> np.ndarray:
    end = steps[-1].strike_ms + steps[-1].stance_ms + tail_ms
    t = np.arange(0, end, 1000.0 / rate_hz)
    heel = np.zeros_like(t)
    arch = np.zeros_like(t)
    fore = np.zeros_like(t)
    for s in steps:
        heel += _pulse(t, s.strike_ms, s.strike_ms + 0.55 * s.stance_ms)
        arch += _pulse(t, s.strike_ms + 0.15 * s.stance_ms, s.strike_ms + 0.75 * s.stance_ms)
        fore += _pulse(t, s.strike_ms + 0.25 * s.stance_ms, s.strike_ms + s.stance_ms)
    a_amp = AMP["arch"] if arch_amp is None else arch_amp
    cols = [BASE + AMP["heel"] * heel, BASE + a_amp * arch, BASE + AMP["forefoot"] * fore]
    return np.clip(np.round(np.stack(cols, axis=1)), 0, 65535).astype(np.int32)
