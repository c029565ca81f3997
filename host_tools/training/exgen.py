"""Synthetic exercise traces with known truth, for tests, demos and ``insole train --sim``.

Every movement is piecewise linear in load, so its start, end and duration are exact
numbers the firmware's estimates can be checked against. Each generator returns an
:class:`ExTrace`: the samples (heel, arch, forefoot read_u16 counts), the rate and a
``truth`` list with one dict per repetition / hold / step.

Common parameters
    rate_hz   sample rate (50..1000)
    noise     standard deviation of white noise added to every channel, counts
    drift     slow offset change of every channel, counts per minute (FSR creep,
              temperature); may be negative
    seed      random seed (noise and sway), so a trace is reproducible
    lead_ms   the session starts with the foot off the insole for this long, then the
              foot is put down over 300 ms (sitting down or stepping on)

Generators
    heel_raises(reps, depth, rise_ms, hold_ms, lower_ms, rest_ms, depths=...)
        Standing on the insole; per rep the heel load falls by ``depth`` (1.0 = heel
        fully off the insole) over rise_ms, stays there hold_ms, returns over lower_ms;
        the forefoot takes the weight the heel gives up. truth: start_ms, rise_ms,
        hold_ms, lower_ms, depth, counted (depth >= 0.8), partial (0.4 < depth < 0.8).
    toe_scrunches(reps, amplitude, press_ms, hold_ms, release_ms, rest_ms, amplitudes=...)
        Seated with the heel resting; the forefoot load changes by ``amplitude`` counts
        (negative: the toes curl and lift the forefoot) and returns. truth: start_ms,
        duration_ms, amplitude.
    balance(holds, hold_ms, lift_ms, down_ms, stand_ms, sway, ends=..., other_foot=False)
        Standing on both feet (this foot carries half), the other foot lifts (this foot
        goes to full load over lift_ms), single-leg stance for hold_ms with the load
        swaying between heel and forefoot by ``sway`` (fraction of the load), then
        either the other foot touches down ("other": back to half over down_ms) or
        the foot is taken off ("collapse": to zero). truth: start_ms (end of the lift),
        duration_ms, end. other_foot=True gives the same session as the other insole
        sees it (for two-insole tests).
    slow_walk(strides_ms, pattern, stance_frac)
        One foot walking: heel-first ("rear") or forefoot-first ("fore") contact.
        truth: strike_ms, stride_ms, pattern.

Run ``python -m host_tools.exgen --help`` to write one as a trace CSV;
``python -m host_tools.exgen accuracy`` prints the firmware's worst timing error over
random sessions (the figures in docs/EXERCISES.md, "Accuracy").
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

RATE_HZ = 100
FLOOR = 600  # unloaded reading of every FSR, counts
STAND = {"heel": 26000, "arch": 7000, "forefoot": 22000}  # standing, counts above FLOOR
SEATED = {"heel": 12000, "arch": 2500, "forefoot": 8000}
SINGLE = {"heel": 23000, "arch": 7000, "forefoot": 20000}  # all weight on this foot
PUT_DOWN_MS = 300
COUNTED_DEPTH = 0.8  # heel raises: documented minimum depth
PARTIAL_DEPTH = 0.4  # deeper than this but short of COUNTED_DEPTH: a partial raise


@dataclass
class ExTrace:
    kind: str
    rate_hz: int
    samples: np.ndarray  # (n, 3) int32
    truth: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)


def _ramp(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """0 before t0, 1 after t1, linear in between."""
    if t1 <= t0:
        return (t >= t0).astype(float)
    return np.clip((t - t0) / (t1 - t0), 0.0, 1.0)


def _pulse(t, start, up_ms, hold_ms, down_ms) -> np.ndarray:
    return _ramp(t, start, start + up_ms) - _ramp(
        t, start + up_ms + hold_ms, start + up_ms + hold_ms + down_ms
    )


def _finish(kind, t, cols, rate_hz, noise, drift, seed, truth, params) -> ExTrace:
    rng = np.random.default_rng(seed)
    out = np.stack(cols, axis=1) + FLOOR + drift * (t / 60000.0)[:, None]
    if noise:
        out = out + rng.normal(0.0, noise, out.shape)
    samples = np.clip(np.round(out), 0, 65535).astype(np.int32)
    return ExTrace(kind, rate_hz, samples, truth, params)


def _check_rate(rate_hz: int) -> None:
    if not 50 <= rate_hz <= 1000:
        raise ValueError("rate_hz must be 50..1000")


def _foot_down(t, lead_ms):
    return _ramp(t, lead_ms, lead_ms + PUT_DOWN_MS)


def _rep_train(sizes, up_ms, hold_ms, down_ms, rest_ms, rate_hz, lead_ms, settle_ms):
    """Foot put down, settled, then one pulse per size: (t, foot_on, pulses, starts)."""
    period = up_ms + hold_ms + down_ms + rest_ms
    first = lead_ms + PUT_DOWN_MS + settle_ms
    end = first + len(sizes) * period + settle_ms
    t = np.arange(0, end, 1000.0 / rate_hz)
    pulses = np.zeros_like(t)
    starts = []
    for i, size in enumerate(sizes):
        s = first + i * period
        pulses += size * _pulse(t, s, up_ms, hold_ms, down_ms)
        starts.append(s)
    return t, _foot_down(t, lead_ms), pulses, starts


def heel_raises(
    reps: int = 10,
    depth: float = 1.0,
    rise_ms: float = 800,
    hold_ms: float = 1000,
    lower_ms: float = 800,
    rest_ms: float = 1500,
    depths: list[float] | None = None,
    noise: float = 150,
    drift: float = 0,
    rate_hz: int = RATE_HZ,
    seed: int = 0,
    lead_ms: float = 1000,
    settle_ms: float = 2000,
) -> ExTrace:
    _check_rate(rate_hz)
    depths = list(depths) if depths is not None else [depth] * reps
    t, on, lift, starts = _rep_train(
        depths, rise_ms, hold_ms, lower_ms, rest_ms, rate_hz, lead_ms, settle_ms
    )
    truth = []
    for s, d in zip(starts, depths, strict=True):
        truth.append(
            {
                "start_ms": s,
                "rise_ms": rise_ms,
                "hold_ms": hold_ms,
                "lower_ms": lower_ms,
                "depth": d,
                "counted": d >= COUNTED_DEPTH,
                "partial": PARTIAL_DEPTH < d < COUNTED_DEPTH,
            }
        )
    heel = on * STAND["heel"] * (1 - lift)
    arch = on * STAND["arch"] * (1 - 0.6 * lift)
    fore = on * (STAND["forefoot"] + 0.8 * STAND["heel"] * lift)
    params = dict(reps=len(depths), rise_ms=rise_ms, hold_ms=hold_ms, lower_ms=lower_ms,
                  rest_ms=rest_ms, noise=noise, drift=drift, seed=seed)
    return _finish("heel-raises", t, [heel, arch, fore], rate_hz, noise, drift, seed, truth,
                   params)


def toe_scrunches(
    reps: int = 12,
    amplitude: float = 5000,
    press_ms: float = 250,
    hold_ms: float = 300,
    release_ms: float = 250,
    rest_ms: float = 700,
    amplitudes: list[float] | None = None,
    noise: float = 100,
    drift: float = 0,
    rate_hz: int = RATE_HZ,
    seed: int = 0,
    lead_ms: float = 1000,
    settle_ms: float = 2000,
) -> ExTrace:
    _check_rate(rate_hz)
    amps = list(amplitudes) if amplitudes is not None else [amplitude] * reps
    t, on, change, starts = _rep_train(
        amps, press_ms, hold_ms, release_ms, rest_ms, rate_hz, lead_ms, settle_ms
    )
    truth = [
        {"start_ms": s, "duration_ms": press_ms + hold_ms + release_ms, "amplitude": a}
        for s, a in zip(starts, amps, strict=True)
    ]
    heel = on * SEATED["heel"]
    arch = on * SEATED["arch"]
    fore = on * SEATED["forefoot"] + change
    params = dict(reps=len(amps), press_ms=press_ms, hold_ms=hold_ms, release_ms=release_ms,
                  rest_ms=rest_ms, noise=noise, drift=drift, seed=seed)
    return _finish("toe-scrunch", t, [heel, arch, fore], rate_hz, noise, drift, seed, truth,
                   params)


def balance(
    holds: int = 3,
    hold_ms: float = 10000,
    lift_ms: float = 400,
    down_ms: float = 300,
    stand_ms: float = 3000,
    sway: float = 0.08,
    ends: list[str] | None = None,
    hold_list: list[float] | None = None,
    noise: float = 150,
    drift: float = 0,
    rate_hz: int = RATE_HZ,
    seed: int = 0,
    lead_ms: float = 1000,
    other_foot: bool = False,
) -> ExTrace:
    _check_rate(rate_hz)
    durations = list(hold_list) if hold_list is not None else [hold_ms] * holds
    ends = list(ends) if ends is not None else ["other"] * len(durations)
    if len(ends) != len(durations) or any(e not in ("other", "collapse") for e in ends):
        raise ValueError("ends: one of 'other' / 'collapse' per hold")
    t0 = lead_ms + PUT_DOWN_MS + stand_ms
    spans = []
    s = t0
    for d, e in zip(durations, ends, strict=True):
        spans.append((s, d, e))
        s += lift_ms + d + down_ms + stand_ms
        if e == "collapse":
            s += 1000 + PUT_DOWN_MS  # off the insole for a second, then back on both feet
    end = s + 500
    t = np.arange(0, end, 1000.0 / rate_hz)
    rng = np.random.default_rng(seed + 1)
    share = 0.5 * _foot_down(t, lead_ms)  # share of body weight on this foot
    truth = []
    for s, d, e in spans:
        up = _pulse(t, s, lift_ms, d, down_ms)
        share += 0.5 * up
        if e == "collapse":
            # after the drop the foot is off the insole for a second, then both feet again
            off0 = s + lift_ms + d + down_ms
            share -= 0.5 * _ramp(t, s + lift_ms + d, off0)
            share += 0.5 * _ramp(t, off0 + 1000, off0 + 1000 + PUT_DOWN_MS)
        truth.append({"start_ms": s + lift_ms, "duration_ms": d, "end": e})
    if other_foot:
        # the same session seen by the other insole: it carries the rest of the weight
        # while this foot is down, and is lifted (no load) during the holds
        share = (1.0 - share) * _foot_down(t, lead_ms)
    # sway: a smooth random shift of load between heel and forefoot (-1..1)
    phases = rng.uniform(0, 2 * np.pi, 3)
    x = (np.sin(2 * np.pi * 0.7 * t / 1000 + phases[0])
         + 0.6 * np.sin(2 * np.pi * 1.9 * t / 1000 + phases[1])
         + 0.3 * np.sin(2 * np.pi * 3.1 * t / 1000 + phases[2])) / 1.9
    w = SINGLE["heel"] + SINGLE["arch"] + SINGLE["forefoot"]
    shift = sway * w * x * np.clip(2 * share - 1, 0, 1)  # sway only while on one foot
    heel = np.maximum(share * SINGLE["heel"] - shift, 0)
    arch = share * SINGLE["arch"]
    fore = np.maximum(share * SINGLE["forefoot"] + shift, 0)
    params = dict(holds=len(durations), lift_ms=lift_ms, down_ms=down_ms, stand_ms=stand_ms,
                  sway=sway, noise=noise, drift=drift, seed=seed)
    return _finish("balance", t, [heel, arch, fore], rate_hz, noise, drift, seed,
                   truth, params)


def slow_walk(
    strides_ms: list[float] | None = None,
    pattern: str = "rear",
    stance_frac: float = 0.62,
    noise: float = 150,
    drift: float = 0,
    rate_hz: int = RATE_HZ,
    seed: int = 0,
    lead_ms: float = 1500,
) -> ExTrace:
    _check_rate(rate_hz)
    if pattern not in ("rear", "fore"):
        raise ValueError("pattern: 'rear' or 'fore'")
    strides = list(strides_ms) if strides_ms is not None else [1300.0] * 20
    t_end = lead_ms + sum(strides) + 1500
    t = np.arange(0, t_end, 1000.0 / rate_hz)
    heel = np.zeros_like(t)
    arch = np.zeros_like(t)
    fore = np.zeros_like(t)
    ramp = 60.0
    truth = []
    s = lead_ms
    for stride in strides:
        st = stride * stance_frac
        if pattern == "rear":
            heel += _pulse(t, s, ramp, 0.55 * st - 2 * ramp, ramp)
            arch += _pulse(t, s + 0.15 * st, ramp, 0.6 * st - 2 * ramp, ramp)
            fore += _pulse(t, s + 0.25 * st, ramp, 0.75 * st - 2 * ramp, ramp)
        else:
            fore += _pulse(t, s, ramp, st - 2 * ramp, ramp)
            arch += _pulse(t, s + 0.1 * st, ramp, 0.6 * st - 2 * ramp, ramp)
            heel += 0.4 * _pulse(t, s + 0.3 * st, ramp, 0.3 * st - 2 * ramp, ramp)
        truth.append({"strike_ms": s, "stride_ms": stride, "pattern": pattern})
        s += stride
    cols = [30000 * heel, 9000 * arch, 24000 * fore]
    params = dict(steps=len(strides), pattern=pattern, stance_frac=stance_frac, noise=noise,
                  drift=drift, seed=seed)
    return _finish("slow-walk", t, cols, rate_hz, noise, drift, seed, truth, params)


def _sessions(kind: str, rate_hz: int, seed: int) -> ExTrace:
    """A random session in the ranges the tests check (docs/EXERCISES.md, "Accuracy")."""
    if kind == "heel-raises":
        rng = np.random.default_rng(seed)
        return heel_raises(
            reps=int(rng.integers(3, 12)), rise_ms=float(rng.uniform(500, 1500)),
            hold_ms=float(rng.uniform(300, 3000)), lower_ms=float(rng.uniform(500, 1500)),
            rest_ms=float(rng.uniform(800, 2500)), noise=float(rng.uniform(0, 150)),
            drift=float(rng.uniform(-400, 400)), rate_hz=rate_hz, seed=seed)
    if kind == "toe-scrunch":
        rng = np.random.default_rng(seed + 10)
        n = int(rng.integers(4, 15))
        return toe_scrunches(
            amplitudes=[float(rng.uniform(4000, 9000) * rng.choice([-1, 1])) for _ in range(n)],
            press_ms=float(rng.uniform(200, 500)), hold_ms=float(rng.uniform(0, 800)),
            release_ms=float(rng.uniform(200, 500)), rest_ms=float(rng.uniform(500, 1500)),
            noise=float(rng.uniform(0, 50)), drift=float(rng.uniform(-300, 300)),
            rate_hz=rate_hz, seed=seed)
    if kind == "balance":
        rng = np.random.default_rng(seed + 20)
        n = int(rng.integers(2, 5))
        return balance(
            hold_list=[float(rng.uniform(3000, 20000)) for _ in range(n)],
            ends=[str(rng.choice(["other", "collapse"])) for _ in range(n)],
            lift_ms=float(rng.uniform(250, 800)), down_ms=float(rng.uniform(200, 500)),
            sway=float(rng.uniform(0.0, 0.15)), noise=float(rng.uniform(0, 150)),
            drift=float(rng.uniform(-300, 300)), rate_hz=rate_hz, seed=seed)
    rng = np.random.default_rng(seed + 30)
    return slow_walk([float(rng.uniform(900, 1800)) for _ in range(10)],
                     pattern=str(rng.choice(["rear", "fore"])),
                     noise=float(rng.uniform(0, 150)), drift=float(rng.uniform(-300, 300)),
                     rate_hz=rate_hz, seed=seed)


# reported times checked against the truth, per kind: (event type, field, truth field)
_TIMES = {
    "heel-raises": ("rep", ("start_ms", "rise_ms", "hold_ms", "lower_ms")),
    "toe-scrunch": ("scrunch", ("start_ms", "duration_ms")),
    "balance": ("hold-end", ("start_ms", "duration_ms")),
    "slow-walk": ("step", ("strike_ms",)),
}


def accuracy(sessions: int = 40, rates: tuple[int, ...] = (50, 100, 200)) -> list[dict]:
    """Worst timing error, in samples, of the firmware's exercise modes (run on CPython)
    over ``sessions`` random generated sessions per kind and rate; ``missed`` counts the
    sessions whose event count was not exact."""
    from host_tools.training import exercises

    rows = []
    for kind, (etype, fields) in _TIMES.items():
        for rate in rates:
            worst = dict.fromkeys(fields, 0.0)
            missed = 0
            for seed in range(sessions):
                tr = _sessions(kind, rate, seed)
                got = [exercises.decode(p) for _, p in
                       exercises.run_cpython(exercises.MODES[kind], tr.samples, rate, 920)]
                got = [e for e in got if e["type"] == etype]
                want = [t for t in tr.truth if t.get("counted", True)]
                if len(got) != len(want):
                    missed += 1
                    continue
                for g, w in zip(got, want, strict=True):
                    for f in fields:
                        err = abs(g[f] - w[f]) * rate / 1000.0
                        worst[f] = max(worst[f], err)
            rows.append({"kind": kind, "rate_hz": rate, "sessions": sessions,
                         "missed": missed, **worst})
    return rows


GENERATORS = {
    "heel-raises": heel_raises,
    "toe-scrunch": toe_scrunches,
    "balance": balance,
    "slow-walk": slow_walk,
}


def write(trace: ExTrace, path: str) -> None:
    """Write as a trace CSV; parameters and truth go into ``#`` comment lines."""
    from host_tools.gait.tracefile import write_trace

    comments = [f"synthetic {trace.kind} trace (host_tools/training/exgen.py)"]
    comments.append("params " + " ".join(f"{k}={v}" for k, v in trace.params.items()))
    for i, row in enumerate(trace.truth, start=1):
        comments.append(f"truth {i} " + " ".join(f"{k}={v}" for k, v in row.items()))
    write_trace(path, trace.samples, trace.rate_hz, comments)


def main(argv: list[str] | None = None) -> int:
    from host_tools.common import argcheck, safeio

    p = argcheck.Parser(
        prog="python -m host_tools.exgen",
        description="Write a synthetic exercise trace CSV (see the module docstring).",
    )
    p.add_argument("kind", choices=sorted(GENERATORS) + ["accuracy"],
                   help="what to generate; 'accuracy' instead prints the firmware's worst "
                        "timing error (samples) over --reps random sessions per kind "
                        "and rate (--rates)")
    p.add_argument("out", nargs="?", help="trace CSV to write")
    p.add_argument("--rates", type=argcheck.rate_list, default=(50, 100, 200),
                   help="accuracy: rates, Hz (comma list, each 50..1000)")
    p.add_argument("--reps", type=argcheck.int_range(1, 10000, "--reps"), default=None,
                   help="repetitions / holds")
    p.add_argument("--depth", type=argcheck.float_range(0, 1, "--depth"), default=None,
                   help="heel raises: 0..1")
    p.add_argument("--hold", type=argcheck.float_range(0, 600000, "--hold", low_open=True),
                   default=None, help="hold time, ms")
    p.add_argument("--noise", type=argcheck.float_range(0, 65535, "--noise"), default=None,
                   help="noise, counts (sd)")
    p.add_argument("--drift", type=argcheck.float_range(-65535, 65535, "--drift"),
                   default=None, help="offset drift, counts/min")
    p.add_argument("--rate", type=argcheck.rate_hz, default=RATE_HZ,
                   help="sample rate, Hz (50..1000)")
    p.add_argument("--seed", type=argcheck.int_range(0, 2**32 - 1, "--seed"), default=0)
    p.add_argument("--stride", type=argcheck.float_range(0, 10000, "--stride", low_open=True),
                   default=None, help="slow walk: stride, ms")
    p.add_argument("--pattern", choices=("rear", "fore"), default=None)
    a = argcheck.parse(p, argv)
    if a is None:
        return 2
    if a.kind == "accuracy":
        for row in accuracy(a.reps or 40, a.rates):
            errs = " ".join(f"{k}={v:.2f}" for k, v in row.items()
                            if k not in ("kind", "rate_hz", "sessions", "missed"))
            print(f"{row['kind']:12s} {row['rate_hz']:5d} Hz  sessions={row['sessions']} "
                  f"missed={row['missed']}  {errs}", flush=True)
        return 0
    if a.out is None:
        print("exgen: error: out: the trace CSV to write is required", file=sys.stderr)
        return 2
    try:
        safeio.output_file(a.out, "out", example=f"{a.kind}.csv")
    except safeio.UsageError as exc:
        print(f"exgen: error: {exc}", file=sys.stderr)
        return 2
    kw: dict = {"rate_hz": a.rate, "seed": a.seed}
    if a.noise is not None:
        kw["noise"] = a.noise
    if a.drift is not None:
        kw["drift"] = a.drift
    if a.kind == "heel-raises":
        kw.update({k: v for k, v in (("reps", a.reps), ("depth", a.depth), ("hold_ms", a.hold))
                   if v is not None})
    elif a.kind == "toe-scrunch":
        kw.update({k: v for k, v in (("reps", a.reps), ("hold_ms", a.hold)) if v is not None})
    elif a.kind == "balance":
        kw.update({k: v for k, v in (("holds", a.reps), ("hold_ms", a.hold)) if v is not None})
    else:
        if a.stride is not None or a.reps is not None:
            kw["strides_ms"] = [a.stride or 1300.0] * (a.reps or 20)
        if a.pattern:
            kw["pattern"] = a.pattern
    try:
        trace = GENERATORS[a.kind](**kw)
    except ValueError as exc:
        print(f"exgen: error: {exc}", file=sys.stderr)
        return 2
    try:
        write(trace, a.out)
    except safeio.UsageError as exc:
        print(f"exgen: error: {exc}", file=sys.stderr)
        return 2
    print(f"{a.out}: {len(trace.samples)} samples at {trace.rate_hz} Hz, "
          f"{len(trace.truth)} {a.kind} items")
    return 0


def run() -> int:
    """``main()`` as a program: ``... accuracy | head`` ends quietly."""
    from host_tools.common.safeio import guarded_stdout

    with guarded_stdout():
        return main()


if __name__ == "__main__":
    sys.exit(run())
