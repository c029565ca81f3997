"""Readers for the PhysioNet gait databases and their conversion to insole traces.

gaitndd (Hausdorff et al. 2000): one FSR signal per foot, WFDB format 212, 300 Hz.
gaitpdb (Yogev 2005, Hausdorff 2007): eight force sensors per foot in newtons, 100 Hz.

A trace is what the firmware's ADC would read: three columns (heel, arch, forefoot)
of ``read_u16()`` counts 0..65535.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

NDD_RATE_HZ = 300
NDD_INVALID = -2048
PDB_RATE_HZ = 100
PDB_FULL_SCALE_N = 1200.0
U16_MAX = 65535

# gaitpdb columns (0-based) emulating a 3-FSR insole: heel L1, arch L5, forefoot L7.
PDB_COLUMNS = {"left": (1, 5, 7), "right": (9, 13, 15)}
PDB_TOTAL = {"left": 17, "right": 18}

NDD_GROUPS = {"control": "control", "hunt": "huntington", "park": "parkinson", "als": "als"}


def read_format212(path: Path) -> np.ndarray:
    """Decode a single-signal WFDB format-212 file into signed 12-bit samples."""
    raw = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    raw = raw[: len(raw) // 3 * 3].reshape(-1, 3).astype(np.int32)
    s0 = raw[:, 0] | ((raw[:, 1] & 0x0F) << 8)
    s1 = raw[:, 2] | ((raw[:, 1] & 0xF0) << 4)
    out = np.empty(len(raw) * 2, dtype=np.int32)
    out[0::2] = s0
    out[1::2] = s1
    out[out > 2047] -= 4096
    return out


def ndd_to_counts(signal: np.ndarray, step: int = 3) -> np.ndarray:
    """gaitndd FSR values -> read_u16 counts at 100 Hz: every third sample, no averaging.

    v maps to (v + 2048) * 16; an invalid sample (-2048) maps to 0, which is what a
    disconnected FSR divider reads on a real board.
    """
    picked = signal[::step].astype(np.int64)
    counts = np.clip((picked + 2048) * 16, 0, U16_MAX)
    counts[picked == NDD_INVALID] = 0
    return counts.astype(np.int32)


def newtons_to_counts(force: np.ndarray) -> np.ndarray:
    """gaitpdb newtons -> counts, 1200 N = 65535, clipped."""
    counts = np.round(np.asarray(force, dtype=float) * (U16_MAX / PDB_FULL_SCALE_N))
    return np.clip(counts, 0, U16_MAX).astype(np.int32)


@dataclass
class Recording:
    """One foot of one walk, ready for the detector."""

    name: str  # e.g. "hunt1-left" or "GaCo01_01-right"
    database: str  # "gaitndd" or "gaitpdb"
    group: str  # control / huntington / parkinson / als / Ga / Ju
    side: str
    rate_hz: int
    trace: np.ndarray  # shape (n, 3): heel, arch, forefoot counts
    reference_ms: np.ndarray  # reference initial contacts, ms from the first sample
    window_ms: tuple[float, float]  # only compare events inside this span
    # spans (ms) where the recording itself is invalid (a dead sensor): not compared
    invalid_ms: list[tuple[float, float]] = field(default_factory=list)


def resample(rec: Recording, rate_hz: int, mains_hz: int = 50) -> Recording:
    """The same recording as an insole sampling at ``rate_hz`` would have read it.

    Each column is interpolated linearly at the insole's read times and rounded to
    whole counts, as an ADC reads them; the reference and spans, in ms, stay. Above
    72 Hz a sample is one read at its tick (at a lower rate than the recording's, where
    the ratio is whole, every k-th sample). Up to 72 Hz it is the mean of four reads a
    quarter of a mains period apart from its tick on, rounded down (firmware/mains.py;
    the period is ``mains_hz``'s or 60 Hz's as firmware/gait.py reads_hz() says), so it
    stands for 3/8 of that period after its tick, as on the insole. The acquisition is
    the fault bench's model (faultbench.read_hz(), read_gap_s(), samples_of()).
    """
    # imported here: faultbench imports this module (through evaluate)
    from host_tools.gait import faultbench

    if rate_hz == rec.rate_hz:
        return rec
    n = len(rec.trace)
    if not n:
        return replace(rec, rate_hz=rate_hz)
    t_in = np.arange(n) * 1000.0 / rec.rate_hz
    n_out = int((n - 1) * rate_hz // rec.rate_hz) + 1
    t_out = np.arange(n_out) * 1000.0 / rate_hz
    hz = faultbench.read_hz(rate_hz, mains_hz)
    gap_ms = faultbench.read_gap_s(hz) * 1000.0 if hz else 0.0
    reads = np.stack([
        np.rint(np.stack([np.interp(t_out + k * gap_ms, t_in, rec.trace[:, c])
                          for c in range(rec.trace.shape[1])], axis=1)).astype(np.int64)
        for k in range(faultbench.AVERAGE_READS if hz else 1)
    ])
    trace = faultbench.samples_of(reads).astype(rec.trace.dtype)
    return replace(rec, rate_hz=rate_hz, trace=trace)


def ndd_group(record: str) -> str:
    for prefix, group in NDD_GROUPS.items():
        if record.startswith(prefix):
            return group
    raise ValueError(f"unknown gaitndd record {record!r}")


def _spikes_as_below(below: np.ndarray, hold: int) -> np.ndarray:
    """``below`` with every spell above shorter than ``hold`` samples counted as below."""
    below = below.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[1], below.astype(np.int8), [1]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if b - a < hold:
            below[a:b] = True
    return below


def _crossing_times_ms(
    counts: np.ndarray, rate_hz: int, frac: float, hold_s: float = 0.1
) -> np.ndarray:
    """Offline rising crossings of ``frac`` of the local range (min..max over 3 s around).

    The local range follows slow baseline drift. A crossing counts only after the signal
    spent 100 ms below the level, so ripples on a rising edge count once, and only when
    the signal then stays above it for ``hold_s``: a spell above the level that is
    shorter (a one-sample spike in late swing, as control5's right FSR has before each
    contact from 262 s on) counts as below, so the rise after it is the crossing.
    """
    x = np.asarray(counts, dtype=float)
    half = int(1.5 * rate_hz)
    pad = np.pad(x, half, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1)[: len(x)]
    lo, hi = win.min(axis=1), win.max(axis=1)
    level = lo + frac * (hi - lo)
    below = _spikes_as_below(x < level, max(1, int(round(hold_s * rate_hz))))
    quiet = max(1, rate_hz // 10)
    run = np.zeros(len(x), dtype=int)
    for i in range(1, len(x)):
        run[i] = run[i - 1] + 1 if below[i - 1] else 0
    idx = np.nonzero(~below[1:] & below[:-1] & (run[1:] >= quiet) & (hi - lo > 2000)[1:])[0] + 1
    return idx * 1000.0 / rate_hz


def ndd_reference(ts: np.ndarray, side: str, counts: np.ndarray, rate_hz: int) -> np.ndarray:
    """Reference heel strikes (ms) for one foot of a gaitndd record.

    Left: the ``.ts`` column 1 itself. Right: column 3 holds the right strides, the
    intervals between right heel strikes. The series has no absolute time and skips a
    stride here and there (its sum falls short of the walk's length), so a running sum
    drifts. Instead each right strike is predicted from the previous one plus the
    authors' stride and placed on the signal's rising crossing of 15 % of its local
    range, 10 ms earlier (the relation column 1 has to the left signal), when one lies
    within 100 ms of the prediction, or is the next rise within a third of a stride of
    it (a prediction that stood would sit on a loaded foot); otherwise the prediction
    stands, and after two such misses the chain re-anchors on the nearest crossing. The
    authors' strides decide which rises are strikes; the signal gives their times.
    """
    if side == "left":
        return ts[:, 0] * 1000.0
    crossings = _crossing_times_ms(counts, rate_hz, 0.15) - 10.0
    start = ts[0, 0] * 1000.0
    strides = ts[:, 2] * 1000.0
    if len(crossings) == 0:
        return np.concatenate([[0.0], np.cumsum(strides[1:])]) + start
    # The row holding a stride is not always the row of the strike that ends it:
    # try the pairings one or two rows apart and keep the one the signal agrees with.
    best, best_cost = None, np.inf
    for shift in (0, -1, 1, -2, 2):  # on a tie, the pairing as the file gives it
        lo = max(1, 1 + shift)
        steps = strides[lo : len(strides) + min(0, shift)]
        rel = np.concatenate([[0.0], np.cumsum(steps)])
        out, cost = _chain_strides(rel, crossings, start, strides)
        if cost < best_cost:
            best, best_cost = out, cost
    assert best is not None
    return best


SNAP_MS = 100.0  # a crossing this near the prediction is the strike
SNAP_STRIDES = 0.35  # ... and so is the next crossing within this part of a stride


def _chain_strides(
    rel: np.ndarray, crossings: np.ndarray, start: float, strides: np.ndarray
) -> tuple[np.ndarray, float]:
    """Chain the strides from the first crossing; snap each strike to a crossing near it.

    Each strike is predicted from the previous one plus the authors' stride. The signal
    crossing nearest the prediction gives its time when it lies within SNAP_MS, or
    within SNAP_STRIDES of the median stride and after the previous strike (a third of a
    stride cannot reach the strikes either side); otherwise the prediction stands, and
    after two such misses the chain re-anchors on a crossing within half a stride.
    Returns the strikes and the mean distance of predictions to crossings.
    """

    def nearest(t: float) -> float:
        k = int(np.searchsorted(crossings, t))
        best = np.inf
        for j in (k - 1, k):
            if 0 <= j < len(crossings) and abs(crossings[j] - t) < abs(best):
                best = crossings[j] - t
        return float(best)

    first = crossings[(crossings >= start - 100) & (crossings <= start + 1500)]
    prev = float(first[0]) if len(first) else start + float(rel[0])
    out = np.empty_like(rel)
    residuals: list[float] = []
    out[0] = prev
    misses = 0
    stride = float(np.median(strides))
    for i in range(1, len(rel)):
        pred = prev + float(rel[i] - rel[i - 1])
        r = nearest(pred)
        residuals.append(min(abs(r), 300.0))
        after_prev = pred + r > prev + 1.0  # never the crossing the last strike took
        near = abs(r) <= SNAP_MS or (after_prev and abs(r) < SNAP_STRIDES * stride)
        if near or (misses >= 2 and abs(r) < stride / 2):
            prev = pred + r  # a skipped stride is re-acquired after two misses
            misses = 0
        else:
            prev = pred
            misses += 1
        out[i] = prev
    return out, float(np.mean(residuals)) if residuals else 0.0


def invalid_spans_ms(
    invalid: np.ndarray, rate_hz: int, margin_ms: float = 2000.0
) -> list[tuple[float, float]]:
    """Runs of invalid samples as (start, end) ms, widened by a margin either side."""
    spans: list[tuple[float, float]] = []
    idx = np.flatnonzero(invalid)
    if not len(idx):
        return spans
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    for a, b in zip(starts, ends, strict=True):
        lo = a * 1000.0 / rate_hz - margin_ms
        hi = (b + 1) * 1000.0 / rate_hz + margin_ms
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return spans


def load_ndd(root: Path, record: str, side: str) -> Recording:
    root = Path(root)
    ext = "let" if side == "left" else "rit"
    signal = read_format212(root / f"{record}.{ext}")
    counts = ndd_to_counts(signal)
    ts = np.loadtxt(root / f"{record}.ts", ndmin=2)
    rate = NDD_RATE_HZ // 3
    ref = ndd_reference(ts, side, counts, rate)
    trace = np.stack([counts, counts, counts], axis=1)
    invalid = invalid_spans_ms(signal == NDD_INVALID, NDD_RATE_HZ)
    return Recording(
        name=f"{record}-{side}",
        database="gaitndd",
        group=ndd_group(record),
        side=side,
        rate_hz=rate,
        trace=trace,
        reference_ms=ref,
        window_ms=(float(ref[0]), float(ref[-1])),
        invalid_ms=invalid,
    )


def read_pdb(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, ndmin=2)


def pdb_onsets_ms(
    total_n: np.ndarray,
    rate_hz: int,
    level_n: float = 20.0,
    floor_s: float = 2.0,
    hold_s: float = 0.1,
    swing_frac: float = 0.1,
    range_s: float = 1.5,
    stance_n: float = 100.0,
) -> np.ndarray:
    """Reference contacts: the total force's rise out of each swing.

    A swing is a spell of at least 100 ms below the swing line: ``level_n`` or
    ``swing_frac`` of the local range, whichever is more, above the floor. The floor is
    the lowest force within ``floor_s`` either side, the range runs from it to the
    highest force within ``range_s`` either side; so a swing is judged against the
    stances around it, and a swing that stays at 50 N (a sensor offset, a toe that drags)
    is still one when a deeper swing nearby sets the floor near 0. A spell above the line
    shorter than ``hold_s`` (a one-sample spike of one sensor in the air) counts as
    below. A swing must come after a stance: within the second before it, the force was at
    least ``stance_n`` above the swing's lowest value (quiet standing at the start of a
    walk, or one from the recording's first sample, is not a swing). The contact is where
    the force last rises through ``level_n`` above that swing's own lowest value on its way
    into the stance, interpolated between the two samples around the rise.
    """
    x = np.asarray(total_n, dtype=float)
    n = len(x)
    if n == 0:
        return np.zeros(0)

    def around(fn, half: int) -> np.ndarray:
        padded = np.pad(x, half, mode="edge")
        return fn(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)

    floor = around(np.min, max(1, int(floor_s * rate_hz)))
    top = around(np.max, max(1, int(range_s * rate_hz)))
    swing_line = floor + np.maximum(level_n, swing_frac * (top - floor))
    below = _spikes_as_below(x < swing_line, max(1, int(round(hold_s * rate_hz))))
    runs = np.flatnonzero(np.diff(np.concatenate([[0], below.astype(np.int8), [0]])))
    out = []
    for a, b in zip(runs[::2], runs[1::2], strict=True):
        if b >= n or b - a < max(1, rate_hz // 10) or a == 0:
            continue  # the walk ends in it, too short for a swing, or no start seen
        low = x[a:b].min()
        if x[max(0, a - rate_hz) : a].max() < low + stance_n:
            continue  # no stance before it: quiet standing
        line = low + level_n
        j = b
        while j < n and x[j] < line:
            j += 1
        if j == n:
            continue
        while x[j - 1] >= line:
            j -= 1
        lo, hi = x[j - 1] - line, x[j] - line
        out.append((j - 1 - lo / (hi - lo)) * 1000.0 / rate_hz)
    return np.asarray(out)


def load_pdb(path: Path, side: str) -> Recording:
    path = Path(path)
    data = read_pdb(path)
    cols = PDB_COLUMNS[side]
    trace = np.stack([newtons_to_counts(data[:, c]) for c in cols], axis=1)
    ref = pdb_onsets_ms(data[:, PDB_TOTAL[side]], PDB_RATE_HZ)
    name = path.name.split(".")[0]
    n_ms = len(data) * 1000.0 / PDB_RATE_HZ
    return Recording(
        name=f"{name}-{side}",
        database="gaitpdb",
        group=name[:2],
        side=side,
        rate_hz=PDB_RATE_HZ,
        trace=trace,
        reference_ms=ref,
        window_ms=(float(ref[0]) if len(ref) else 0.0, float(ref[-1]) if len(ref) else n_ms),
    )


def ndd_records(root: Path) -> list[str]:
    return [r.strip() for r in (Path(root) / "RECORDS").read_text().split() if r.strip()]


def pdb_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("*.txt.gz"))
