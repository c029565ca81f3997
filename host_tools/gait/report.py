"""Gait summary, plots and HTML page from capture logs (``<side>.csv`` in a directory).

What each figure means is written out for readers in DEFINITIONS below (it is also
the "Definitions" section of the HTML page); REFERENCES holds the healthy-adult ranges
a value is compared with, each with its source. Strides the detector could not time
(the first step, or the first after a pause over 4 s) count as steps but not in
cadence, stride, stance or swing figures. FSR insoles time steps well but measure force
poorly, so load is given only as shares of the stance load.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from host_tools.ble.protocol import fault_hints
from host_tools.ble.steplog import SIDES, LogProblem, StepRow, log_paths, read_meta, read_steplog
from host_tools.common import safeio

PATTERNS = ("rear", "mid", "fore", "unknown")
MS_WRAP = 1 << 29
# left blue, right orange (a pair colour-blind readers tell apart); red only ever means
# "outside the reference range", and never without a written mark as well
SIDE_COLOURS = {"left": "#1f5fa8", "right": "#e08214", "unknown": "#555555"}
WARN_COLOUR = "#b00020"
REGION_COLOURS = {"heel": "#3d5a80", "arch": "#ee964b", "forefoot": "#5aa469"}
PATTERN_COLOURS = {"rear": "#3d5a80", "mid": "#ee964b", "fore": "#5aa469", "unknown": "#b0b0b0"}
SI_FLAG = 10.0  # |SI| above this is marked where no published band applies
ARCH_LABEL = "Arch loading (% of stance load)"  # the one name (history, train, docs)
SI_METRICS = (
    ("steps", "Steps"),
    ("cadence_mean", "Cadence (steps/min)"),
    ("stride_ms_mean", "Stride time (ms)"),
    ("stance_ms_mean", "Stance time (ms)"),
    ("swing_ms_mean", "Swing time (ms)"),
    ("stance_pct", "Stance (% of cycle)"),
    ("share_heel", "Heel load share (%)"),
    ("share_arch", ARCH_LABEL),
    ("share_forefoot", "Forefoot load share (%)"),
)
OUTLIER_Z = 3.5  # modified z-score above which a stride or stance is marked an outlier


@dataclass(frozen=True)
class Reference:
    """A healthy-adult range for one figure, with where it comes from."""

    key: str  # FootStats attribute, or "si:" + a SI_METRICS key
    label: str
    low: float | None
    high: float | None
    unit: str
    source: str
    note: str = ""

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g}-{self.high:g}{self.unit}"
        if self.high is not None:
            return f"up to {self.high:g}{self.unit}"
        return f"at least {self.low:g}{self.unit}"

    def check(self, value: float) -> str:
        """'' inside the range (or no value), 'low' or 'high' outside it."""
        if not math.isfinite(value):
            return ""
        v = abs(value) if self.key.startswith("si:") else value
        if self.low is not None and v < self.low:
            return "low"
        if self.high is not None and v > self.high:
            return "high"
        return ""


REFERENCES = (
    Reference("cadence_mean", "Cadence", 100, 120, " steps/min",
              "Winter DA. The Biomechanics and Motor Control of Human Gait: Normal, Elderly "
              "and Pathological, 2nd ed. University of Waterloo Press, 1991",
              "natural walking speed of healthy adults; slower walking lowers it"),
    Reference("stance_pct", "Stance (% of cycle)", 55, 65, " %",
              "Perry J, Burnfield JM. Gait Analysis: Normal and Pathological Function, "
              "2nd ed. SLACK, 2010",
              "about 60 % stance and 40 % swing at a comfortable speed; the band allows "
              "5 points either way for speed and for insoles, which read stance a little "
              "long"),
    Reference("stride_cv", "Stride-time variability (CV)", None, 3.0, " %",
              "Hausdorff JM, Zemany L, Peng C-K, Goldberger AL. Maturation of gait "
              "dynamics: stride-to-stride variability and its temporal organization in "
              "children. J Appl Physiol 1999;86:1040-1047",
              "healthy young adults 1.3 % (SE 0.1) over several minutes of walking; the "
              "flag is set at 3 %, more than twice that, since short walks with turns "
              "and starts vary more"),
    Reference("si:stance_ms_mean", "Stance time symmetry |SI|", None, 4.9, " %",
              "Patterson KK, Parafianowicz I, Danells CJ, et al. Gait asymmetry in "
              "community-ambulating stroke survivors. Arch Phys Med Rehabil "
              "2008;89:304-310",
              "their healthy-control limit is a stance-time ratio of 1.05, which is an SI "
              "of 4.9 %; SI itself is from Robinson RO, Herzog W, Nigg BM, J Manipulative "
              "Physiol Ther 1987;10:172-176"),
    Reference("si:swing_ms_mean", "Swing time symmetry |SI|", None, 5.8, " %",
              "Patterson KK, Parafianowicz I, Danells CJ, et al. Gait asymmetry in "
              "community-ambulating stroke survivors. Arch Phys Med Rehabil "
              "2008;89:304-310",
              "their healthy-control limit is a swing-time ratio of 1.06, an SI of 5.8 %"),
)

DEFINITIONS = (
    ("Step", "one contact of one foot with the ground, from heel strike to toe-off."),
    ("Stride", "from one heel strike of a foot to the next heel strike of the same foot: "
     "two steps, one with each foot."),
    ("Cadence", "steps per minute. Each stride is two steps, so a stride of 1.2 s is a "
     "cadence of 100 steps per minute. The report gives the average over all timed "
     "strides and how much it varied (CV); the live capture line shows the same average "
     "so far."),
    ("Stance and swing", "stance is the time the foot is on the ground, swing the time it "
     "is in the air before the next strike; together they make the stride (the gait "
     "cycle), so they are also given as shares of it."),
    ("Variability (SD, CV)", "the standard deviation is the typical distance of a stride "
     "from the average; the coefficient of variation (CV) is that distance as a "
     "percentage of the average. Steady walking has a small CV."),
    ("Strike pattern", "which part of the foot lands first: rearfoot (heel), midfoot or "
     "forefoot."),
    ("Load shares", "of all the load the insole felt during a stance, the part under the "
     "heel, the arch and the forefoot, averaged over steps."),
    ("Arch loading", "the arch sensor's share of the stance load, in % (also in the "
     "training history). A high value means the midfoot carries load (a flat-foot "
     "pattern), a low one that it barely touches the ground (a high-arch pattern); "
     "bands in docs/EXERCISES.md."),
    ("Symmetry index (SI)", "the difference between left and right as a percentage of "
     "their average: SI = 100 x (left - right) / mean of the two. 0 is perfectly "
     "symmetric; positive means the left value is larger."),
    ("Outlier", f"a stride or stance far from the others: more than {OUTLIER_Z:g} times "
     "the median absolute deviation (scaled to an SD) from the median, the modified "
     "z-score of Iglewicz and Hoaglin (1993). Outliers are ringed on the plots and "
     "marked in the per-step table; a missed step, a pause or a turn makes one."),
)


@dataclass
class FootStats:
    side: str
    steps: int
    timed_strides: int
    missing_seqs: int
    duration_s: float
    cadence_mean: float
    cadence_cv: float
    stride_ms_mean: float
    stride_ms_sd: float
    stride_cv: float
    stance_ms_mean: float
    swing_ms_mean: float
    stance_pct: float
    swing_pct: float
    pattern_pct: dict[str, float]
    share_heel: float
    share_arch: float
    share_forefoot: float
    arch_loading: float  # arch peak / sum of the three peaks, %: report.json only
    first_host_time: float = math.nan  # Unix time the first and last rows arrived
    last_host_time: float = math.nan
    stride_outliers: list[int] = field(default_factory=list)  # step numbers
    stance_outliers: list[int] = field(default_factory=list)
    firmware_version: str = ""
    device_address: str = ""
    start_time: str = ""  # the session file's start and end (ISO 8601, UTC)
    end_time: str = ""
    sensor_faults: list[str] = field(default_factory=list)  # from the session file


@dataclass
class Report:
    directory: str
    feet: dict[str, FootStats]
    symmetry: dict[str, float]
    problems: list[str] = field(default_factory=list)
    rows: dict[str, list[StepRow]] = field(default_factory=dict, repr=False)
    plots: list[Path] = field(default_factory=list)

    @property
    def started(self) -> datetime | None:
        """When the walk began: the earliest session start (or first row) of any foot."""
        times = []
        for f in self.feet.values():
            if f.start_time:
                with contextlib.suppress(ValueError):
                    times.append(datetime.fromisoformat(f.start_time.replace("Z", "+00:00")))
            elif math.isfinite(f.first_host_time):
                times.append(datetime.fromtimestamp(f.first_host_time, timezone.utc))
        return min(times) if times else None

    @property
    def walk_s(self) -> float:
        """Seconds of walking: first to last heel strike of the foot that walked longest."""
        return max(f.duration_s for f in self.feet.values())

    def flags(self) -> list[tuple[Reference, str, float, str]]:
        """(reference, side or 'L/R', value, 'low'/'high') for every value outside."""
        out = []
        for ref in REFERENCES:
            if ref.key.startswith("si:"):
                v = self.symmetry.get(ref.key[3:], math.nan)
                if (d := ref.check(v)):
                    out.append((ref, "L/R", v, d))
                continue
            for side, f in self.feet.items():
                v = float(getattr(f, ref.key))
                if (d := ref.check(v)):
                    out.append((ref, side, v, d))
        return out


class ReportError(ValueError):
    pass


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _cv(x: np.ndarray) -> float:
    """Coefficient of variation in % (sample SD / mean); nan for fewer than two values."""
    if len(x) < 2 or np.mean(x) == 0:
        return math.nan
    return float(np.std(x, ddof=1) / np.mean(x) * 100.0)


def strike_seconds(rows: list[StepRow]) -> np.ndarray:
    """Strike times in seconds from the first logged strike, unwrapping the 2**29 ms
    clock; where the insole's clock restarted (a reboot), the host receive times bridge."""
    ms = np.array([r.strike_ms for r in rows], dtype=np.int64)
    if not len(ms):
        return np.zeros(0)
    steps = np.diff(ms)
    steps[steps < -(MS_WRAP // 2)] += MS_WRAP
    host = np.diff(np.array([r.host_time for r in rows], dtype=float)) * 1000.0
    restart = steps < 0
    steps = np.where(restart, np.maximum(host, 0.0), steps)
    return np.concatenate([[0], np.cumsum(steps)]) / 1000.0


def outliers(values: np.ndarray) -> np.ndarray:
    """Which values have a modified z-score (0.6745 (x - median) / MAD) over OUTLIER_Z."""
    if len(values) < 5:
        return np.zeros(len(values), dtype=bool)
    med = np.median(values)
    mad = np.median(np.abs(values - med))
    if mad > 0:
        return np.abs(0.6745 * (values - med) / mad) > OUTLIER_Z
    # more than half the values equal: Iglewicz and Hoaglin's mean-deviation form
    mean_ad = np.mean(np.abs(values - med))
    if mean_ad == 0:
        return np.zeros(len(values), dtype=bool)
    return np.abs((values - med) / (1.253314 * mean_ad)) > OUTLIER_Z


def foot_stats(side: str, rows: list[StepRow]) -> FootStats:
    timed = [r for r in rows if r.stride_ms > 0]
    stride = np.array([r.stride_ms for r in timed], dtype=float)
    swing = np.array([r.swing_ms for r in timed], dtype=float)
    cadence = 120000.0 / stride if len(stride) else np.zeros(0)
    swing_pct = swing / stride * 100.0 if len(stride) else np.zeros(0)
    stance_all = np.array([r.stance_ms for r in rows], dtype=float)
    patterns = [r.pattern for r in rows]
    n = len(rows)
    pattern_pct = {p: (100.0 * patterns.count(p) / n if n else math.nan) for p in PATTERNS}
    peaks = np.array([(r.peak_heel, r.peak_arch, r.peak_forefoot) for r in rows], dtype=float)
    peak_tot = peaks.sum(axis=1) if n else np.zeros(0)
    arch_loading = peaks[peak_tot > 0, 1] / peak_tot[peak_tot > 0] * 100.0 if n else np.zeros(0)
    seqs = [r.seq for r in rows]
    t = strike_seconds(rows)
    return FootStats(
        side=side,
        steps=n,
        timed_strides=len(timed),
        missing_seqs=(max(seqs) - min(seqs) + 1 - n) if n else 0,
        duration_s=float(t[-1]) if n else 0.0,
        cadence_mean=_mean(cadence),
        cadence_cv=_cv(cadence),
        stride_ms_mean=_mean(stride),
        stride_ms_sd=float(np.std(stride, ddof=1)) if len(stride) > 1 else math.nan,
        stride_cv=_cv(stride),
        stance_ms_mean=_mean(stance_all),
        swing_ms_mean=_mean(swing),
        stance_pct=100.0 - _mean(swing_pct) if len(swing_pct) else math.nan,
        swing_pct=_mean(swing_pct),
        pattern_pct=pattern_pct,
        share_heel=_mean(np.array([r.share_heel for r in rows])) / 10.0,
        share_arch=_mean(np.array([r.share_arch for r in rows])) / 10.0,
        share_forefoot=_mean(np.array([r.share_forefoot for r in rows])) / 10.0,
        arch_loading=_mean(arch_loading),
        first_host_time=min(r.host_time for r in rows) if n else math.nan,
        last_host_time=max(r.host_time for r in rows) if n else math.nan,
        stride_outliers=[r.seq for r, o in zip(timed, outliers(stride), strict=True) if o],
        stance_outliers=[r.seq for r, o in zip(rows, outliers(stance_all), strict=True) if o],
    )


def symmetry_index(left: float, right: float) -> float:
    if not (math.isfinite(left) and math.isfinite(right)) or left + right == 0:
        return math.nan
    return 100.0 * (left - right) / ((left + right) / 2.0)


def build_report(directory: str | Path) -> Report:
    """Read every ``<side>.csv`` in a directory and compute the summary."""
    d = Path(directory)
    if not d.is_dir():
        raise ReportError(f"{d}: no such directory")
    problems: list[LogProblem] = []
    feet: dict[str, FootStats] = {}
    all_rows: dict[str, list[StepRow]] = {}
    for side in SIDES:
        csv_path, meta_path = log_paths(d, side)
        if not csv_path.exists():
            continue
        rows, probs = read_steplog(csv_path)
        problems += probs
        wrong = [r for r in rows if r.side != side]
        if wrong:
            problems.append(
                LogProblem(str(csv_path), 0, f"{len(wrong)} rows name another side, not used")
            )
            rows = [r for r in rows if r.side == side]
        meta, mprobs = read_meta(meta_path)
        problems += mprobs
        if meta is not None and meta.side != side:
            problems.append(LogProblem(str(meta_path), 0, f"session side is {meta.side!r}"))
        if not rows:
            problems.append(LogProblem(str(csv_path), 0, "no intact step rows"))
            continue
        stats = foot_stats(side, rows)
        if meta is not None:
            stats.firmware_version = meta.firmware_version
            stats.device_address = meta.device_address
            stats.start_time = meta.start_time
            stats.end_time = meta.end_time
            listed = meta.sensor_faults if isinstance(meta.sensor_faults, list) else []
            stats.sensor_faults = [x for x in listed if isinstance(x, str)]
        feet[side] = stats
        all_rows[side] = rows
    if not feet:
        listed = ", ".join(f"{s}.csv" for s in SIDES)
        msgs = "; ".join(str(p) for p in problems)
        raise ReportError(f"{d}: no usable capture log ({listed})" + (f": {msgs}" if msgs else ""))
    symmetry: dict[str, float] = {}
    if "left" in feet and "right" in feet:
        left, right = asdict(feet["left"]), asdict(feet["right"])
        for key, _label in SI_METRICS:
            symmetry[key] = symmetry_index(float(left[key]), float(right[key]))
    return Report(str(d), feet, symmetry, [str(p) for p in problems], all_rows)


# ----------------------------------------------------------------------------- text


def _fmt(v: float, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    text = f"{v:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0"


def walk_line(rep: Report) -> str:
    """'Walk of 2026-03-02 08:00 (UTC+01:00), 58.3 s, 94 steps' for the report's head."""
    steps = sum(f.steps for f in rep.feet.values())
    when = "unknown time"
    if rep.started is not None:
        local = rep.started.astimezone()
        offset = local.isoformat()[-6:]  # +HH:MM
        when = f"{local:%Y-%m-%d %H:%M:%S} (UTC{offset})"
    return f"Walk of {when}: {rep.walk_s:.1f} s of walking, {steps} steps"


def summary_rows(rep: Report) -> tuple[list[str], list[list[str]]]:
    """(column headings, rows of cells) for the summary table."""
    sides = [s for s in SIDES if s in rep.feet]
    head = ["", *sides] + (["SI %"] if rep.symmetry else [])

    def line(label: str, key: str | None, render) -> list[str]:
        cells = [label] + [render(rep.feet[s]) for s in sides]
        if rep.symmetry:
            cells.append(_fmt(rep.symmetry.get(key, math.nan)) if key else "")
        return cells

    def pm(mean: float, cv: float, unit: str = "") -> str:
        return f"{_fmt(mean)}{unit} (CV {_fmt(cv)} %)"

    body = [
        line("Steps", "steps", lambda f: f"{f.steps}" + (f" ({f.missing_seqs} missing)"
                                                       if f.missing_seqs else "")),
        line("Duration (s)", None, lambda f: _fmt(f.duration_s)),
        line("Cadence (steps/min)", "cadence_mean", lambda f: pm(f.cadence_mean, f.cadence_cv)),
        line("Stride time (ms)", "stride_ms_mean",
             lambda f: f"{_fmt(f.stride_ms_mean, 0)} (SD {_fmt(f.stride_ms_sd, 0)})"),
        line("Stride-time variability (CV %)", None, lambda f: _fmt(f.stride_cv, 2)),
        line("Stance time (ms)", "stance_ms_mean", lambda f: _fmt(f.stance_ms_mean, 0)),
        line("Swing time (ms)", "swing_ms_mean", lambda f: _fmt(f.swing_ms_mean, 0)),
        line("Stance / swing (% of cycle)", "stance_pct",
             lambda f: f"{_fmt(f.stance_pct)} / {_fmt(f.swing_pct)}"),
        line("Strike rear / mid / fore (%)", None,
             lambda f: " / ".join(_fmt(f.pattern_pct[p], 0) for p in PATTERNS[:3])
             + (f" (+{_fmt(f.pattern_pct['unknown'], 0)} unknown)"
                if f.pattern_pct["unknown"] else "")),
        line("Load heel / arch / fore (%)", None,
             lambda f: f"{_fmt(f.share_heel)} / {_fmt(f.share_arch)} / {_fmt(f.share_forefoot)}"),
        line("Heel load share (%)", "share_heel", lambda f: _fmt(f.share_heel)),
        line(ARCH_LABEL, "share_arch", lambda f: _fmt(f.share_arch)),
        line("Forefoot load share (%)", "share_forefoot", lambda f: _fmt(f.share_forefoot)),
    ]
    return head, body


def _table(table: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = []
    for i, r in enumerate(table):
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                             for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def reference_lines(rep: Report) -> list[str]:
    """One line per reference range, with OUTSIDE where a value is not in it."""
    found = {(ref.key, side): (v, d) for ref, side, v, d in rep.flags()}
    out = []
    for ref in REFERENCES:
        if ref.key.startswith("si:"):
            if not rep.symmetry:
                continue
            v = rep.symmetry.get(ref.key[3:], math.nan)
            verdict = "OUTSIDE (higher)" if (ref.key, "L/R") in found else "within"
            out.append(f"  {ref.label}: {ref.text()}: {_fmt(abs(v))} % {verdict}")
            continue
        parts = []
        for side, f in rep.feet.items():
            v = float(getattr(f, ref.key))
            mark = found.get((ref.key, side))
            parts.append(f"{side} {_fmt(v, 2 if ref.key == 'stride_cv' else 1)}"
                         + (f" OUTSIDE ({'lower' if mark[1] == 'low' else 'higher'})"
                            if mark else ""))
        out.append(f"  {ref.label}: {ref.text()}: " + ", ".join(parts))
    return out


def fault_lines(rep: Report) -> list[str]:
    """One line per foot whose insole reported a sensor channel it cannot trust, and
    what a noisy one may mean."""
    out = [f"Sensor faults on the {side} insole during the walk: {', '.join(f.sensor_faults)}"
           " (steps and loads from those channels are less certain)"
           for side, f in rep.feet.items() if f.sensor_faults]
    return out + fault_hints(x for f in rep.feet.values() for x in f.sensor_faults)


def format_summary(rep: Report) -> str:
    head, body = summary_rows(rep)
    lines = [walk_line(rep), *fault_lines(rep), *_table([head, *body])]
    lines.append("Healthy-adult reference ranges (sources in report.html):")
    lines += reference_lines(rep)
    return "\n".join(lines)


STEP_HEAD = ["step", "t (s)", "stance", "swing", "stride", "strike", "heel/arch/fore %", ""]


def step_rows(rep: Report, side: str) -> list[list[str]]:
    """The per-step table of one foot (times in ms); outliers marked in the last cell."""
    f = rep.feet[side]
    rows = rep.rows[side]
    t = strike_seconds(rows)
    out = []
    for r, ts in zip(rows, t, strict=True):
        marks = []
        if r.seq in f.stride_outliers:
            marks.append("stride outlier")
        if r.seq in f.stance_outliers:
            marks.append("stance outlier")
        out.append([str(r.seq), f"{ts:.2f}", str(r.stance_ms),
                    str(r.swing_ms) if r.stride_ms else "-",
                    str(r.stride_ms) if r.stride_ms else "-", r.pattern,
                    f"{r.share_heel / 10:.0f}/{r.share_arch / 10:.0f}/{r.share_forefoot / 10:.0f}",
                    ", ".join(marks)])
    return out


def format_steps(rep: Report) -> str:
    """Per-step tables, the feet side by side."""
    blocks = []
    for side in rep.rows:
        lines = _table([STEP_HEAD, *step_rows(rep, side)])
        blocks.append([f"{side} foot", *lines])
    width = [max(len(x) for x in b) for b in blocks]
    depth = max(len(b) for b in blocks)
    out = []
    for i in range(depth):
        cells = [(b[i] if i < len(b) else "").ljust(w) for b, w in zip(blocks, width,
                                                                      strict=True)]
        out.append("   ".join(cells).rstrip())
    return "\n".join(out)


def report_json(rep: Report) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    data = {
        "directory": rep.directory,
        "walk": {"started": rep.started.isoformat() if rep.started else None,
                 "walking_s": clean(rep.walk_s)},
        "feet": {s: clean(asdict(f)) for s, f in rep.feet.items()},
        "symmetry_index_pct": clean(rep.symmetry),
        "outside_reference": [{"figure": ref.label, "side": side, "value": clean(v),
                               "range": ref.text(), "direction": d, "source": ref.source}
                              for ref, side, v, d in rep.flags()],
        "problems": rep.problems,
    }
    return json.dumps(data, indent=2) + "\n"


# ----------------------------------------------------------------------------- plots


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e4e4e4", linewidth=0.8)
    ax.set_axisbelow(True)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)


def _running_median(y: np.ndarray, n: int) -> np.ndarray:
    """Centred running median over n values (fewer at the ends): robust to a missed step."""
    half = n // 2
    return np.array([np.median(y[max(0, i - half): i + half + 1]) for i in range(len(y))])


def plot_cadence(rep: Report, path: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    for side, rows in rep.rows.items():
        t = strike_seconds(rows)
        keep = np.array([r.stride_ms > 0 for r in rows])
        if not keep.any():
            continue
        cad = 120000.0 / np.array([r.stride_ms for r in rows], dtype=float)[keep]
        colour = SIDE_COLOURS[side]
        ax.plot(t[keep], cad, ".", ms=4, color=colour, alpha=0.45)
        ax.plot(t[keep], _running_median(cad, 9), "-", lw=1.8, color=colour,
                label=f"{side}: mean {rep.feet[side].cadence_mean:.1f}")
        odd = np.array([r.seq in rep.feet[side].stride_outliers for r in rows])[keep]
        if odd.any():
            ax.plot(t[keep][odd], cad[odd], "o", ms=9, mfc="none", mec=colour, mew=1.4,
                    label=f"{side}: outlier stride")
    ref = REFERENCES[0]
    ax.axhspan(ref.low, ref.high, color="#e9f2e9", zorder=0,
               label=f"healthy adults {ref.text()}")
    _style(ax, "Cadence per stride (dots) and 9-stride running median; outliers ringed",
           "time since the first logged step (s)",
           "cadence (steps/min)")
    ax.legend(frameon=False, loc="lower right", fontsize=8, ncols=2)
    safeio.save_figure(fig, path)
    plt.close(fig)


def plot_stance_swing(rep: Report, path: Path, plt) -> None:
    sides = list(rep.rows)
    fig, axes = plt.subplots(1, len(sides), figsize=(4.8 * len(sides) + 0.6, 3.4),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, side in zip(axes[0], sides, strict=True):
        rows = rep.rows[side]
        seq = np.array([r.seq for r in rows])
        stance = np.array([r.stance_ms for r in rows], dtype=float)
        swing = np.array([r.swing_ms if r.stride_ms else np.nan for r in rows], dtype=float)
        ax.plot(seq, stance, "-o", ms=2.5, lw=1, color="#3d5a80", label="stance")
        ax.plot(seq, swing, "-o", ms=2.5, lw=1, color="#ee964b", label="swing")
        odd = np.array([r.seq in rep.feet[side].stance_outliers for r in rows])
        if odd.any():
            ax.plot(seq[odd], stance[odd], "o", ms=9, mfc="none", mec="#222222", mew=1.2,
                    label="outlier")
        _style(ax, f"{side} foot: stance and swing per step", "step (sequence number)", "ms")
        ax.legend(frameon=False, loc="upper right", ncols=3, fontsize=8)
    safeio.save_figure(fig, path)
    plt.close(fig)


def plot_load_share(rep: Report, path: Path, plt) -> None:
    sides = list(rep.rows)
    fig, axes = plt.subplots(1, len(sides), figsize=(4.8 * len(sides) + 0.6, 3.6),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, side in zip(axes[0], sides, strict=True):
        rows = rep.rows[side]
        seq = np.array([r.seq for r in rows])
        shares = np.array([(r.share_heel, r.share_arch, r.share_forefoot) for r in rows],
                          dtype=float).T / 10.0
        labels = [f"{name} {val:.0f} %" for name, val in
                  zip(("heel", "arch", "forefoot"), shares.mean(axis=1), strict=True)]
        ax.stackplot(seq, shares, colors=list(REGION_COLOURS.values()), labels=labels,
                     alpha=0.9, step="mid")
        ax.set_ylim(0, 100)
        ax.margins(x=0)
        _style(ax, f"{side} foot: share of stance load", "step (sequence number)",
               "% of stance load")
        ax.legend(frameon=True, framealpha=0.85, loc="lower left", fontsize=8, ncols=3)
    safeio.save_figure(fig, path)
    plt.close(fig)


def plot_strike_pattern(rep: Report, path: Path, plt) -> None:
    sides = list(rep.feet)
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.8 * len(sides)), layout="constrained")
    for i, side in enumerate(sides):
        left = 0.0
        for p in PATTERNS:
            v = rep.feet[side].pattern_pct[p]
            if not v:
                continue
            ax.barh(i, v, left=left, color=PATTERN_COLOURS[p], edgecolor="white",
                    label=p if i == 0 or p not in ax.get_legend_handles_labels()[1] else None)
            if v >= 6:
                ax.text(left + v / 2, i, f"{p} {v:.0f} %", ha="center", va="center",
                        color="white", fontsize=9, fontweight="bold")
            left += v
    ax.set_yticks(range(len(sides)), [f"{s} ({rep.feet[s].steps} steps)" for s in sides])
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    _style(ax, "Foot-strike pattern (share of steps)", "% of steps", "")
    ax.grid(axis="y", visible=False)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    safeio.save_figure(fig, path)
    plt.close(fig)


def plot_left_right(rep: Report, path: Path, plt) -> None:
    metrics = [m for m in SI_METRICS if m[0] != "steps"]
    cols = 4
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(10, 2.5 * nrows), layout="constrained")
    left, right = asdict(rep.feet["left"]), asdict(rep.feet["right"])
    for ax, (key, label) in zip(axes.flat, metrics, strict=False):
        vals = [left[key], right[key]]
        bars = ax.bar(["L", "R"], vals, color=[SIDE_COLOURS["left"], SIDE_COLOURS["right"]],
                      width=0.6)
        ax.bar_label(bars, fmt="%.1f" if max(vals) < 200 else "%.0f", fontsize=8)
        si = rep.symmetry.get(key, math.nan)
        limit = next((r.high for r in REFERENCES if r.key == f"si:{key}"), SI_FLAG)
        uneven = math.isfinite(si) and abs(si) > limit
        ax.set_title(f"{label}\nSI {_fmt(si)} %" + (" (!) uneven" if uneven else ""),
                     fontsize=9, color=WARN_COLOUR if uneven else "#222222",
                     fontweight="bold" if uneven else "normal")
        ax.margins(y=0.18)
        ax.tick_params(labelsize=8)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle("Left (blue) vs right (orange); SI = 100 (L - R) / mean, 0 = symmetric\n"
                 "(!) uneven: |SI| above its reference (stance 4.9 %, swing 5.8 %, "
                 f"others {SI_FLAG:.0f} %)", fontsize=10)
    safeio.save_figure(fig, path)
    plt.close(fig)


def write_plots(rep: Report, out_dir: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = safeio.ensure_dir(out_dir or rep.directory)
    jobs = [
        ("cadence.png", plot_cadence),
        ("stance_swing.png", plot_stance_swing),
        ("load_share.png", plot_load_share),
        ("strike_pattern.png", plot_strike_pattern),
    ]
    if rep.symmetry:
        jobs.append(("left_right.png", plot_left_right))
    paths = []
    for name, fn in jobs:
        p = out / name
        fn(rep, p, plt)
        paths.append(p)
    rep.plots = paths
    return paths


# ----------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1020px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em}
.warn{color:#b00020;font-weight:600}
table{border-collapse:collapse;font-size:.92em}
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}
.problems{color:#8a1c1c}.note{color:#555;font-size:.9em}
td.note{text-align:left;max-width:30em}
.walk{font-size:1.05em;margin:.2em 0 1em}
.flag{color:#b00020;font-weight:bold}
.left{color:#1f5fa8}.right{color:#b35f00}
.sides{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
details{margin:.8em 0}summary{cursor:pointer;font-weight:bold}
dt{font-weight:bold;margin-top:.5em}dd{margin-left:1.2em}
.steps td,.steps th{padding:.15em .5em;font-size:.88em}
"""


def _reference_table(rep: Report) -> list[str]:
    esc = html.escape
    found = {(ref.key, side): d for ref, side, _v, d in rep.flags()}
    sides = list(rep.feet)
    parts = ["<table><tr><th>figure</th><th>healthy adults</th>"]
    parts += [f"<th class='{esc(s)}'>{esc(s)}</th>" for s in sides]
    parts.append("<th>source</th></tr>")
    for ref in REFERENCES:
        is_si = ref.key.startswith("si:")
        if is_si and not rep.symmetry:
            continue
        cells = []
        for side in (["L/R"] if is_si else sides):
            if is_si:
                v = abs(rep.symmetry.get(ref.key[3:], math.nan))
            else:
                v = float(getattr(rep.feet[side], ref.key))
            d = found.get((ref.key, side))
            text = _fmt(v, 2 if ref.key == "stride_cv" else 1)
            if d:
                word = "below the range" if d == "low" else "above the range"
                text = f"<span class='flag'>{esc(text)} (!) {word}</span>"
            else:
                text = esc(text) + " within"
            span = f" colspan='{len(sides)}'" if is_si else ""
            cells.append(f"<td{span}>{text}</td>")
        parts.append(f"<tr><td>{esc(ref.label)}</td><td>{esc(ref.text())}</td>"
                     + "".join(cells)
                     + f"<td class='note'>{esc(ref.source)}. {esc(ref.note)}</td></tr>")
    parts.append("</table>")
    return parts


def _step_tables(rep: Report) -> list[str]:
    esc = html.escape
    n = sum(len(r) for r in rep.rows.values())
    parts = [f"<details><summary>Per-step table ({n} steps; times in ms)</summary>"
             "<div class='sides'>"]
    for side in rep.rows:
        parts.append(f"<div><h3 class='{esc(side)}'>{esc(side)} foot</h3>"
                     "<table class='steps'><tr>"
                     + "".join(f"<th>{esc(h)}</th>" for h in STEP_HEAD) + "</tr>")
        for row in step_rows(rep, side):
            mark = row[-1]
            cells = "".join(f"<td>{esc(c)}</td>" for c in row[:-1])
            cells += f"<td class='flag'>{esc(mark)}</td>" if mark else "<td></td>"
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table></div>")
    parts.append("</div></details>")
    return parts


def write_html(rep: Report, path: str | Path) -> Path:
    """One self-contained page: the walk, summary table with left and right side by side,
    reference ranges and flags, the per-step table (folded), plots embedded as base64,
    definitions and problems."""
    head, body = summary_rows(rep)
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Insole gait report: {esc(rep.directory)}</title><style>{_CSS}</style></head>",
        "<body><h1>Insole gait report</h1>",
        f"<p class='walk'>{esc(walk_line(rep))}</p>",
        "".join(f"<p class='warn'>{esc(line)}</p>" for line in fault_lines(rep)),
        f"<p class='note'>Logs in {esc(rep.directory)}; ",
        ", ".join(
            f"{s}: firmware {esc(f.firmware_version or '?')}, {esc(f.device_address or '?')}"
            for s, f in rep.feet.items()
        ),
        "</p><h2>Summary</h2><table><tr>",
        "".join(f"<th class='{esc(h)}'>{esc(h)}</th>" for h in head),
        "</tr>",
    ]
    for r in body:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    flagged = rep.flags()
    parts.append("<h2>Compared with healthy adults</h2>")
    parts.append(f"<p>{len(flagged)} value(s) outside the reference range, marked (!)."
                 if flagged else "<p>Every value is within its reference range.")
    parts.append(" The ranges describe healthy adults walking at their own pace in a "
                 "laboratory; they are a guide for reading this walk, not a diagnosis.</p>")
    parts += _reference_table(rep)
    parts += _step_tables(rep)
    if rep.problems:
        parts.append("<h2>Problems in the logs</h2><ul class='problems'>")
        parts += [f"<li>{esc(p)}</li>" for p in rep.problems]
        parts.append("</ul><p class='note'>Every intact row was still used.</p>")
    parts.append("<h2>Plots</h2>")
    for p in rep.plots:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(p.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Definitions</h2><dl>")
    for term, text in DEFINITIONS:
        parts.append(f"<dt>{esc(term)}</dt><dd>{esc(text)}</dd>")
    parts.append("</dl><p class='note'>Strides the insole could not time (the first step, "
                 "or the first after a pause of over 4 s) count as steps but not in the "
                 "stride, cadence, stance and swing figures. FSR insoles time steps well "
                 "but measure force poorly, so load is shown only as shares.</p>")
    parts.append("</body></html>\n")
    return safeio.write_text(path, "".join(parts))
