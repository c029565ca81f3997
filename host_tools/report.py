"""Gait summary, plots and HTML page from capture logs (``<side>.csv`` in a directory).

Definitions (per foot; a stride runs from one strike of a foot to its next strike):
- cadence: 120000 / stride_ms steps per minute (two steps per stride), mean and CV;
- swing %: swing_ms / stride_ms of the cycle ending at this strike, stance % = 100 - swing %
  (the detector's swing_ms is the swing before this strike, so the two add up exactly);
- stride-time variability: SD and CV (SD / mean) of stride_ms;
- load shares: mean of the per-step heel / arch / forefoot shares of stance load;
- arch-loading share: arch peak / (heel + arch + forefoot peaks), mean over steps; a high
  value means the midfoot bears load (flat foot), a low one that it barely touches (high arch);
- symmetry index SI = 100 * (L - R) / ((L + R) / 2) (Robinson et al. 1987); 0 = symmetric,
  positive = left larger.
Strides the detector could not time (stride_ms 0: first step, or after a pause > 4 s)
count as steps but not in cadence, stride, stance or swing figures. FSR insoles measure
timing well but absolute force poorly, so loads are reported only as shares.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from host_tools.steplog import SIDES, LogProblem, StepRow, log_paths, read_meta, read_steplog

PATTERNS = ("rear", "mid", "fore", "unknown")
MS_WRAP = 1 << 29
SIDE_COLOURS = {"left": "#1f5fa8", "right": "#d1495b", "unknown": "#555555"}
REGION_COLOURS = {"heel": "#3d5a80", "arch": "#ee964b", "forefoot": "#5aa469"}
PATTERN_COLOURS = {"rear": "#3d5a80", "mid": "#ee964b", "fore": "#5aa469", "unknown": "#b0b0b0"}
SI_FLAG = 10.0  # |SI| above this is marked: a common threshold for clear asymmetry
SI_METRICS = (
    ("steps", "Steps"),
    ("cadence_mean", "Cadence (steps/min)"),
    ("stride_ms_mean", "Stride time (ms)"),
    ("stance_ms_mean", "Stance time (ms)"),
    ("swing_ms_mean", "Swing time (ms)"),
    ("stance_pct", "Stance (% of cycle)"),
    ("share_heel", "Heel load share (%)"),
    ("share_arch", "Arch load share (%)"),
    ("share_forefoot", "Forefoot load share (%)"),
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
    arch_loading: float
    firmware_version: str = ""
    device_address: str = ""


@dataclass
class Report:
    directory: str
    feet: dict[str, FootStats]
    symmetry: dict[str, float]
    problems: list[str] = field(default_factory=list)
    rows: dict[str, list[StepRow]] = field(default_factory=dict, repr=False)
    plots: list[Path] = field(default_factory=list)


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
        line("Arch load share (%)", "share_arch", lambda f: _fmt(f.share_arch)),
        line("Forefoot load share (%)", "share_forefoot", lambda f: _fmt(f.share_forefoot)),
        line("Arch-loading share (% of peak)", None, lambda f: _fmt(f.arch_loading)),
    ]
    return head, body


def format_summary(rep: Report) -> str:
    head, body = summary_rows(rep)
    table = [head, *body]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    out = []
    for i, r in enumerate(table):
        out.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                             for j, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
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
        "feet": {s: clean(asdict(f)) for s, f in rep.feet.items()},
        "symmetry_index_pct": clean(rep.symmetry),
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
    _style(ax, "Cadence per stride (dots) and 9-stride running median",
           "time since the first logged step (s)",
           "cadence (steps/min)")
    ax.legend(frameon=False, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stance_swing(rep: Report, path: Path, plt) -> None:
    sides = list(rep.rows)
    fig, axes = plt.subplots(len(sides), 1, figsize=(9, 2.8 * len(sides)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for ax, side in zip(axes[:, 0], sides, strict=True):
        rows = rep.rows[side]
        seq = np.array([r.seq for r in rows])
        stance = np.array([r.stance_ms for r in rows], dtype=float)
        swing = np.array([r.swing_ms if r.stride_ms else np.nan for r in rows], dtype=float)
        ax.plot(seq, stance, "-o", ms=2.5, lw=1, color="#3d5a80", label="stance")
        ax.plot(seq, swing, "-o", ms=2.5, lw=1, color="#ee964b", label="swing")
        _style(ax, f"{side} foot: stance and swing per step", "", "ms")
        ax.legend(frameon=False, loc="upper right", ncols=2)
    axes[-1, 0].set_xlabel("step (sequence number)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_load_share(rep: Report, path: Path, plt) -> None:
    sides = list(rep.rows)
    fig, axes = plt.subplots(len(sides), 1, figsize=(9, 2.8 * len(sides)), squeeze=False,
                             sharex=True, layout="constrained")
    for ax, side in zip(axes[:, 0], sides, strict=True):
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
        _style(ax, f"{side} foot: share of stance load per region", "", "% of load")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1, 0].set_xlabel("step (sequence number)")
    fig.savefig(path, dpi=110)
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
    fig.savefig(path, dpi=110)
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
        uneven = math.isfinite(si) and abs(si) > SI_FLAG
        ax.set_title(f"{label}\nSI {_fmt(si)} %", fontsize=9,
                     color="#b00020" if uneven else "#222222",
                     fontweight="bold" if uneven else "normal")
        ax.margins(y=0.18)
        ax.tick_params(labelsize=8)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"Left vs right (SI = 100 (L - R) / mean; 0 = symmetric; "
                 f"|SI| > {SI_FLAG:.0f} % in red)", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(rep: Report, out_dir: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir or rep.directory)
    out.mkdir(parents=True, exist_ok=True)
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
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.92em}
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}
.problems{color:#8a1c1c}.note{color:#555;font-size:.9em}
"""


def write_html(rep: Report, path: str | Path) -> Path:
    """One self-contained page: summary table, problems, and the plots embedded as base64."""
    head, body = summary_rows(rep)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Insole gait report: {esc(rep.directory)}</title><style>{_CSS}</style></head>",
        f"<body><h1>Insole gait report</h1><p class='note'>Logs in {esc(rep.directory)}; ",
        ", ".join(
            f"{s}: firmware {esc(f.firmware_version or '?')}, {esc(f.device_address or '?')}"
            for s, f in rep.feet.items()
        ),
        "</p><h2>Summary</h2><table><tr>",
        "".join(f"<th>{esc(h)}</th>" for h in head),
        "</tr>",
    ]
    for r in body:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    if rep.problems:
        parts.append("<h2>Problems in the logs</h2><ul class='problems'>")
        parts += [f"<li>{esc(p)}</li>" for p in rep.problems]
        parts.append("</ul><p class='note'>Every intact row was still used.</p>")
    parts.append("<h2>Plots</h2>")
    for p in rep.plots:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(p.stem)}' src='data:image/png;base64,{data}'>")
    doc = (__doc__ or "").split("Definitions", 1)[-1]
    parts.append(f"<h2>Definitions</h2><pre class='note'>Definitions{esc(doc)}</pre>")
    parts.append("</body></html>\n")
    path = Path(path)
    path.write_text("".join(parts))
    return path
