"""Noise and sensor-fault bench for the step detector.

The bundled walk (host_tools/data/walk_left.csv, 100 Hz) is looped to eight minutes,
resampled to each rate, and run clean and with one disturbance at a time:

- ``noise``: Gaussian noise of SD 2000 counts (3 % of full scale) on every channel;
- ``mains``: 50 Hz pickup of amplitude 4000 counts (6 %) on every channel, random phase
  per channel, with the mains frequency 0.2 Hz off nominal so that it does not alias
  to a constant at 50 or 100 Hz (``--mains-hz 60.2``: 60 Hz mains, the insole set to
  it with SET_MAINS);
- ``wrong-mains``: the same pickup at the other mains frequency (60.2 Hz, or 50.2 Hz
  with ``--mains-hz 60.2``), the insole left at its setting;
- ``heel-saturated`` / ``heel-stuck`` / ``heel-dead``: half-way through, the heel reads
  full scale, holds the value it had, or reads 0 for the rest of the walk.

The insole's acquisition is modelled: each ADC read is clipped to 0..65535, and at
rates up to 6/5 of the mains frequency (60 Hz for 50 Hz mains, 72 Hz for 60), and with
60 Hz spacing up to 72 Hz whatever the setting, a sample is the mean of four reads a
quarter of a mains period apart (firmware/mains.py, gait.reads_hz()), each read with
its own noise and the pickup at its own time; those reads also feed the insole's hum
check (mains.py MainsCheck), whose verdict joins the detector's ``faults`` as Status
carries them; above 72 Hz the detector checks the setting itself (gait.py
hum_lags()). The detector and the reads are set to the mains frequency nearest the
``mains`` pickup's (50 or 60 Hz: the config's mains_hz).

``--bias COUNTS`` models an insole built with a bias resistor from 3V3 to each ADC pin
(docs/HARDWARE.md): every read of the walk sits COUNTS above 0 when unloaded and the
walk's range shrinks to fit below full scale (an affine map, before any disturbance),
so that pickup and noise in the swing no longer clip at the ADC's floor.

Noise and pickup are random: each is run with several draws (SEEDS: the noise, and the
pickup's phase per channel), each draw a row of its own.

Each disturbed run is matched one-to-one against the clean run's heel strikes (60 ms).
Targets: >= 98 % of the clean run's steps found and <= 2 % extra; for noise the matched
strikes within 60 ms; for a faulty heel (which cannot date the contact it no longer
sees) steps are counted, every clean step from 2 s after the fault on is found (but
for one whose arch and forefoot would load after the recording ends), and
the detector's ``faults`` word names the heel's fault. No case but ``wrong-mains`` may
report a wrong mains setting (code 6); ``wrong-mains`` meets the targets, or reports a
channel wrong-mains (6) or noisy (4, whose hint names the setting): a setting that
loses steps is never silent.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host_tools.gait import engine, evaluate, tracefile

WALK = Path(__file__).resolve().parents[1] / "data" / "walk_left.csv"
# multiples of 50 Hz, where the pre-filter spans whole mains periods, and rates between
RATES = (50, 60, 75, 80, 100, 120, 150, 250, 300, 1000)
LOOP_S = 480.0
NOISE_SD = 2000.0
MAINS_AMP = 4000.0
MAINS_HZ = 50.2
MATCH_MS = 60.0
FAULT_MATCH_MS = 300.0  # a faulty heel: the step, dated by the arch or forefoot
RECOVER_MS = 2000.0
FOUND_MIN = 98.0
EXTRA_MAX = 2.0
FAULT_CODES = {"heel-saturated": 2, "heel-stuck": 3, "heel-dead": 1}
SEEDS = (0, 1, 2)  # draws of the random disturbances (noise, pickup phases)
RANDOM_CASES = ("noise", "mains", "wrong-mains")
WRONG_MAINS = 6  # Status fault code (firmware/mains.py _F_MAINS)
NOISY = 4  # ... and the detector's (firmware/gait.py _F_NOISY)


# firmware/mains.py (and gait.reads_hz): four reads over one mains period per sample
AVERAGE_READS = 4
AVERAGE_UP_TO_PER_5 = 6
MAINS_SETTINGS = (50, 60)
FULL_SCALE = 65535
BIAS_MAX = 20000  # counts: a bias above a third of full scale leaves too little span
BIAS_SUGGESTED = 6000  # counts: docs/HARDWARE.md's 6.8 kOhm bias resistor


def setting(pickup_hz: float) -> int:
    """The insole's mains setting (config mains_hz) for pickup at this frequency."""
    return 60 if pickup_hz >= 55.0 else 50


def other_mains(pickup_hz: float) -> float:
    """Pickup at the other mains frequency, as far off nominal (60.2 for 50.2)."""
    return pickup_hz + (10.0 if setting(pickup_hz) == 50 else -10.0)


def average_up_to_hz(mains: int) -> int:
    """Highest rate whose samples average four reads spaced for this mains frequency
    (firmware/gait.py reads_hz())."""
    return mains * AVERAGE_UP_TO_PER_5 // 5


def read_hz(rate_hz: int, mains: int) -> int:
    """The mains frequency whose quarter periods space the four reads of a sample at
    this rate and setting, 0 for one read (firmware/gait.py reads_hz()): the setting
    up to 6/5 of it, then 60 Hz up to 72 Hz."""
    if rate_hz <= average_up_to_hz(mains):
        return mains
    if rate_hz <= average_up_to_hz(MAINS_SETTINGS[-1]):
        return MAINS_SETTINGS[-1]
    return 0


def read_gap_s(mains: int) -> float:
    """Time between the four reads of a sample: a quarter of a mains period, in whole
    microseconds as the insole waits (firmware/mains.py)."""
    return (1_000_000 // (mains * AVERAGE_READS)) / 1e6


def looped_walk(rate_hz: int, seconds: float = LOOP_S, offset_s: float = 0.0) -> np.ndarray:
    """The bundled walk repeated to `seconds`, linearly resampled to rate_hz (each
    sample offset_s after its tick)."""
    trace = tracefile.read_trace(WALK)
    src = np.asarray(trace.samples, dtype=float)
    src_rate = trace.rate_hz or tracefile.DEFAULT_RATE_HZ
    reps = int(np.ceil(seconds * src_rate / len(src)))
    whole = np.concatenate([src] * reps)
    t_src = np.arange(len(whole)) / src_rate
    t = np.arange(0, min(seconds, t_src[-1]), 1.0 / rate_hz)
    cols = [np.interp(t + offset_s, t_src, whole[:, k]) for k in range(3)]
    return np.round(np.stack(cols, axis=1)).astype(np.int64)


def biased(walk: np.ndarray, bias: int) -> np.ndarray:
    """The walk as an insole with a bias resistor reads it: `bias` counts when unloaded,
    the range compressed so that full scale stays full scale."""
    if not 0 <= bias <= BIAS_MAX:
        raise ValueError(f"bias must be 0..{BIAS_MAX} counts")
    return bias + walk * (FULL_SCALE - bias) // FULL_SCALE


def disturb(
    clean: np.ndarray,
    rate_hz: int,
    case: str,
    seed: int = 0,
    read: int = 0,
    mains_hz: float = MAINS_HZ,
    gap_s: float = 0.0,
) -> np.ndarray:
    """One ADC read per sample of `clean` under `case`; read k of a sample is taken
    k x gap_s after its tick (its own noise, the pickup at its own time)."""
    rng = np.random.default_rng(seed)
    x = clean.astype(float)
    half = len(x) // 2
    if case == "noise":
        if read:
            rng = np.random.default_rng([seed, read])
        x = x + rng.normal(0.0, NOISE_SD, x.shape)
    elif case in ("mains", "wrong-mains"):
        hz = mains_hz if case == "mains" else other_mains(mains_hz)
        t = np.arange(len(x)) / rate_hz + read * gap_s
        phase = rng.uniform(0, 2 * np.pi, 3)
        x = x + MAINS_AMP * np.sin(2 * np.pi * hz * t[:, None] + phase[None, :])
    elif case == "heel-saturated":
        x[half:, 0] = FULL_SCALE
    elif case == "heel-stuck":
        x[half:, 0] = x[half, 0]
    elif case == "heel-dead":
        x[half:, 0] = 0
    elif case != "clean":
        raise ValueError(case)
    return np.clip(np.round(x), 0, FULL_SCALE).astype(np.int64)


def acquired_reads(
    rate_hz: int,
    case: str,
    seed: int = 0,
    seconds: float = LOOP_S,
    mains_hz: float = MAINS_HZ,
    bias: int = 0,
) -> np.ndarray:
    """The ADC reads the insole takes of the looped walk under `case`: reads x samples
    x channels (one read per sample, or four: firmware/gait.py reads_hz()); `bias`:
    see biased()."""
    hz = read_hz(rate_hz, setting(mains_hz))
    gap = read_gap_s(hz) if hz else 0.0
    return np.stack([
        disturb(
            biased(looped_walk(rate_hz, seconds, offset_s=k * gap), bias),
            rate_hz, case, seed, read=k, mains_hz=mains_hz, gap_s=gap,
        )
        for k in range(AVERAGE_READS if hz else 1)
    ])


def acquired(
    rate_hz: int,
    case: str,
    seed: int = 0,
    seconds: float = LOOP_S,
    mains_hz: float = MAINS_HZ,
    bias: int = 0,
) -> np.ndarray:
    """The samples the insole takes of the looped walk under `case`."""
    return samples_of(acquired_reads(rate_hz, case, seed, seconds, mains_hz, bias))


def samples_of(reads: np.ndarray) -> np.ndarray:
    """Each sample as the insole takes it from its reads (acquired_reads()): their mean,
    rounded down as firmware/mains.py shifts it."""
    return reads.sum(axis=0) // len(reads)


def hum_check(reads: np.ndarray, rate_hz: int, mains: int):
    """firmware/mains.py's MainsCheck, fed the reads (acquired_reads()) as the insole
    feeds it; None where the samples take one read (there is no check)."""
    hz = read_hz(rate_hz, mains)
    if not hz:
        return None
    mod = engine.load_firmware_module("mains")
    check = mod.MainsCheck(rate_hz, round(read_gap_s(hz) * 1e6))
    q = (reads[0] - reads[1] + reads[2] - reads[3]).tolist()
    m = samples_of(reads).tolist()
    ok = ((reads.min(axis=0) > mod._LOW) & (reads.max(axis=0) < mod._HIGH)).tolist()
    for qs, ms, oks in zip(q, m, ok, strict=True):
        for c in range(3):
            check.sample(c, qs[c], ms[c], oks[c])
    return check


@dataclass
class CaseResult:
    rate_hz: int
    case: str
    clean_steps: int
    found_pct: float
    extra_pct: float
    p95_ms: float
    missed_after_recovery: int
    faults: int
    seed: int = 0  # the draw of a random disturbance
    bias: int = 0  # counts the unloaded reads sit above 0 (biased())

    @property
    def met(self) -> bool:
        ok = self.found_pct >= FOUND_MIN and self.extra_pct <= EXTRA_MAX
        codes = [(self.faults >> (4 * c)) & 0xF for c in range(3)]
        wrong = WRONG_MAINS in codes
        if self.case == "wrong-mains":
            # harmless, or never silent: wrong mains (the reads' check up to 72 Hz,
            # the detector's hum_lags() check above)
            # or noisy (the pre-filter's residual, whose hint names the setting)
            return ok or wrong or NOISY in codes
        ok = ok and not wrong  # hum at the setting's own frequency is no wrong setting
        if self.case in FAULT_CODES:
            ok = ok and self.missed_after_recovery == 0
            ok = ok and (self.faults & 0xF) == FAULT_CODES[self.case]
        return ok


def _strikes_and_faults(
    samples: np.ndarray, rate_hz: int, mains: int = 50
) -> tuple[list[float], int]:
    gait = engine.load_firmware_module()
    det = gait.GaitDetector(rate_hz, mains)
    strikes: list[float] = []
    for h, a, f in samples.tolist():
        if det.feed(h, a, f) & gait.EV_STRIKE:
            strikes.append(float(det.contact_ms))
    return strikes, det.faults


def clean_run(
    rate_hz: int, mains_hz: float = MAINS_HZ, bias: int = 0
) -> tuple[int, list[float]]:
    """The clean run every case is matched against: its length in samples, its strikes."""
    clean = acquired(rate_hz, "clean", mains_hz=mains_hz, bias=bias)
    strikes, _ = _strikes_and_faults(clean, rate_hz, setting(mains_hz))
    return len(clean), strikes


def run_case(
    rate_hz: int,
    case: str,
    clean: tuple[int, list[float]] | None = None,
    seed: int = 0,
    mains_hz: float = MAINS_HZ,
    bias: int = 0,
) -> CaseResult:
    """One disturbed run against the clean one (clean_run(), made here when not given).
    `faults` is the word Status would carry: the detector's, with the hum check's."""
    mains = setting(mains_hz)
    if clean is None:
        clean = clean_run(rate_hz, mains_hz, bias)
    n_clean, clean_strikes = clean
    reads = acquired_reads(rate_hz, case, seed, mains_hz=mains_hz, bias=bias)
    found, faults = _strikes_and_faults(samples_of(reads), rate_hz, mains)
    check = hum_check(reads, rate_hz, mains)
    if check is not None:
        faults = check.faults(faults)
    ref = np.asarray(clean_strikes)
    det = np.asarray(found)
    pairs = evaluate.match(det, ref, FAULT_MATCH_MS if case in FAULT_CODES else MATCH_MS)
    n = max(len(ref), 1)
    errs = np.abs([det[i] - ref[j] for i, j in pairs]) if pairs else np.asarray([np.nan])
    fault_ms = (n_clean // 2) * 1000.0 / rate_hz
    # a heel strike this close to the end cannot be seen without the heel
    last_ms = (n_clean - 1) * 1000.0 / rate_hz - FAULT_MATCH_MS
    hit = {j for _, j in pairs}
    missed_late = sum(
        1 for j, t in enumerate(ref) if fault_ms + RECOVER_MS <= t <= last_ms and j not in hit
    )
    if case not in FAULT_CODES:
        missed_late = 0
    return CaseResult(
        rate_hz=rate_hz,
        case=case,
        clean_steps=len(ref),
        found_pct=len(pairs) / n * 100,
        extra_pct=(len(det) - len(pairs)) / n * 100,
        p95_ms=float(np.percentile(errs, 95)),
        missed_after_recovery=missed_late,
        faults=faults,
        seed=seed,
        bias=bias,
    )


CASES = ("noise", "mains", "wrong-mains", "heel-saturated", "heel-stuck", "heel-dead")


def _one(args: tuple[int, tuple[str, ...], tuple[int, ...], float, int]) -> list[CaseResult]:
    rate, cases, seeds, mains_hz, bias = args
    clean = clean_run(rate, mains_hz, bias)
    return [
        run_case(rate, case, clean, seed, mains_hz, bias)
        for case in cases
        for seed in (seeds if case in RANDOM_CASES else (0,))
    ]


def run_all(
    rates=RATES,
    cases=CASES,
    workers: int = 2,
    seeds=SEEDS,
    mains_hz: float = MAINS_HZ,
    bias: int = 0,
) -> list[CaseResult]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = [(r, tuple(cases), tuple(seeds), mains_hz, bias) for r in rates]
        out = pool.map(_one, jobs)
        return [res for chunk in out for res in chunk]


def from_rows(rows: list[dict]) -> list[CaseResult]:
    """CaseResults back from the saved JSON rows."""
    return [CaseResult(**{k: v for k, v in r.items() if k != "met"}) for r in rows]


def report(results: list[CaseResult]) -> str:
    lines = [
        "| rate Hz | case | draw | clean steps | found % | extra % | p95 ms | missed after 2 s"
        " | faults | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        draw = str(r.seed) if r.case in RANDOM_CASES else "-"
        lines.append(
            f"| {r.rate_hz} | {r.case} | {draw} | {r.clean_steps} | {r.found_pct:.2f} | "
            f"{r.extra_pct:.2f} | {r.p95_ms:.1f} | {r.missed_after_recovery} | "
            f"0x{r.faults:03x} | {'yes' if r.met else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from host_tools.common import argcheck

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default=",".join(str(r) for r in RATES))
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--seeds", default=",".join(str(s) for s in SEEDS),
                   help="draws of noise and pickup (default %(default)s)")
    p.add_argument("--mains-hz", type=float, default=MAINS_HZ, metavar="HZ",
                   help="frequency of the pickup (default %(default)s; 60.2 for 60 Hz mains;"
                   " the insole is set to the nearer of 50 and 60 Hz)")
    p.add_argument("--bias", type=argcheck.int_range(0, BIAS_MAX, "--bias"), default=0,
                   metavar="COUNTS", help="model a bias resistor: unloaded reads sit this"
                   " many counts above 0 (default 0; docs/HARDWARE.md's resistor: about"
                   f" {BIAS_SUGGESTED})")
    p.add_argument("--workers", type=argcheck.int_range(1, 64, "--workers"), default=2)
    p.add_argument("--write", metavar="JSON", help="save the results (docs/faultbench.json)")
    args = p.parse_args(argv)
    try:
        rates = [int(r) for r in args.rates.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error("--rates and --seeds take comma-separated whole numbers")
    if any(not 25 <= r <= 1000 for r in rates) or any(s < 0 for s in seeds):
        p.error("--rates: each 25..1000 Hz; --seeds: each 0 or more")
    if not 40.0 <= args.mains_hz <= 70.0:
        p.error("--mains-hz: 40..70 Hz (the pickup of 50 or 60 Hz mains)")
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown {', '.join(unknown)} (known: {', '.join(CASES)})")
    results = run_all(rates, cases, args.workers, seeds, args.mains_hz, args.bias)
    print(report(results))
    if args.write:
        import json

        from host_tools.common import safeio

        rows = [dict(vars(r), met=r.met) for r in results]
        try:
            safeio.write_text(args.write, json.dumps(rows, indent=1) + "\n", "--write")
        except safeio.UsageError as exc:
            print(f"faultbench: {exc}", file=sys.stderr)
            return 2
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
