"""Training progress over days or weeks from the history database.

The table has one row per day (or ISO week with --by week): sessions, heel raises, toe
scrunches, single-leg balance time, walking cadence and its variability (mean
within-session CV), left/right symmetry (mean |SI| of stance time, two-insole walks,
SI = 100 (L - R) / mean(L, R)) and the arch-loading index (mean arch share of stance
load, per-mille; bands in docs/EXERCISES.md). Below it: the current and the longest
streak of consecutive days with at least one session.

--plots DIR writes history_exercise.png (reps and balance time) and history_walking.png
(cadence and CV, symmetry, arch-loading index with its bands); --html PATH writes one
self-contained page with the table and the plots.

Walks come in two ways: `insole train slow-walk` stores them itself, and --add-capture
DIR stores a walk recorded with `insole capture --out DIR` (both feet when present).

Database: --db PATH, else $INSOLE_HISTORY_DB, else ~/.local/share/insole/history.db.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

HELP = "progress over days and weeks: reps, balance, cadence, symmetry, arch index, streaks"

COLUMNS = ("period", "sessions", "heel raises", "toe scrunches", "balance s", "cadence",
           "CV %", "|SI| %", "arch ‰")


def add_arguments(parser) -> None:
    parser.add_argument("--db", metavar="PATH", help="history database")
    parser.add_argument("--by", choices=("day", "week"), default="day", help="group by")
    parser.add_argument("--days", type=int, default=0, metavar="N",
                        help="only the last N days (default: everything)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--html", metavar="PATH", help="write an HTML page with table and plots")
    parser.add_argument("--add-capture", metavar="DIR",
                        help="store the walk in a capture directory first")
    parser.add_argument("--at", metavar="ISO-TIME",
                        help="with --add-capture: when the walk was (default: log file time)")


def _f(v: float, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table_rows(periods, by: str) -> list[list[str]]:
    rows = []
    for p in periods:
        label = p.start.isoformat() if by == "day" else f"week of {p.start.isoformat()}"
        rows.append([label, str(p.sessions), str(p.heel_raises), str(p.toe_scrunches),
                     _f(p.balance_s), _f(p.cadence), _f(p.cadence_cv, 2), _f(p.symmetry),
                     _f(p.arch_index, 0)])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(COLUMNS)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in
                     enumerate(zip(COLUMNS, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                             enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def capture_session(directory: str, at: str | None):
    """A walk session from a capture directory (uses host_tools.report)."""
    from host_tools.history import Session
    from host_tools.report import build_report

    rep = build_report(directory)
    feet = list(rep.feet.values())
    n = sum(f.steps for f in feet)

    def mean(attr):
        vals = [getattr(f, attr) for f in feet if math.isfinite(getattr(f, attr))]
        return sum(vals) / len(vals) if vals else math.nan

    summary = {
        "steps": n,
        "feet": sorted(rep.feet),
        "cadence": round(mean("cadence_mean"), 2),
        "cadence_cv_pct": round(mean("cadence_cv"), 2),
        "arch_index": round(10 * mean("share_arch"), 1),  # report gives %, history per-mille
    }
    si = rep.symmetry.get("stance_ms_mean")
    if si is not None and math.isfinite(si):
        summary["symmetry_pct"] = round(si, 2)
    summary = {k: v for k, v in summary.items()
               if not (isinstance(v, float) and math.isnan(v))}
    if at:
        started = datetime.fromisoformat(at)
    else:
        logs = [p for p in Path(directory).glob("*.csv")]
        started = datetime.fromtimestamp(min(p.stat().st_mtime for p in logs), timezone.utc)
    duration = max(f.duration_s for f in feet)
    return Session("walk", started, duration, "+".join(sorted(rep.feet)),
                   f"capture:{directory}", summary)


def write_plots(periods, by: str, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from host_tools.training import ARCH_HIGH_ABOVE, ARCH_LOW_BELOW

    out_dir.mkdir(parents=True, exist_ok=True)
    x = [p.start for p in periods]
    width = 0.8 if by == "day" else 5.6
    paths = []

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    hr = [p.heel_raises for p in periods]
    ts = [p.toe_scrunches for p in periods]
    ax1.bar(x, hr, width, label="heel raises", color="#3b6ea5")
    ax1.bar(x, ts, width, bottom=hr, label="toe scrunches", color="#e39b3b")
    ax1.set_ylabel("reps")
    ax1.set_title(f"Exercise per {by}")
    ax1.legend(loc="upper left")
    ax2.bar(x, [p.balance_s for p in periods], width, color="#4c9a5b")
    ax2.set_ylabel("single-leg time (s)")
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = out_dir / "history_exercise.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    def series(attr):
        # only the periods that have the value, so the line joins them across gaps
        pts = [(p.start, getattr(p, attr)) for p in periods
               if math.isfinite(getattr(p, attr))]
        return [a for a, _ in pts], [b for _, b in pts]

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax1.plot(*series("cadence"), "o-", color="#3b6ea5", label="cadence")
    ax1.set_ylabel("cadence (steps/min)")
    axc = ax1.twinx()
    axc.plot(*series("cadence_cv"), "s--", color="#b5523b", label="CV")
    axc.set_ylabel("cadence CV (%)", color="#b5523b")
    ax1.set_title(f"Walking per {by}")
    ax2.plot(*series("symmetry"), "o-", color="#7a4ca0")
    ax2.set_ylabel("left/right |SI| (%)")
    ax2.axhline(10, color="#999", ls=":", lw=1)
    ax3.axhspan(0, ARCH_LOW_BELOW, color="#f3e0c8", label="low arch loading")
    ax2.set_ylim(bottom=0)
    ax3.axhspan(ARCH_HIGH_ABOVE, 500, color="#d5e4f3", label="high arch loading")
    ax3.plot(*series("arch_index"), "o-", color="#333")
    ax3.set_ylim(0, 500)
    ax3.set_ylabel("arch index (‰ of stance load)")
    ax3.legend(loc="upper left", fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = out_dir / "history_walking.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def write_html(rows, streak, plots, path: Path) -> Path:
    import base64
    import html

    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Training history"
             "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>"
             "</head><body><h1>Training history</h1><table><tr>"]
    parts += [f"<th>{esc(h)}</th>" for h in COLUMNS]
    parts.append("</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append(f"</table><p>Streak: {streak[0]} day(s) now, longest {streak[1]}.</p>")
    for p in plots:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        parts.append(f"<img alt='{esc(p.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def run(args) -> int:
    import sqlite3

    from host_tools import history
    from host_tools.cli import UsageError

    if args.at and not args.add_capture:
        raise UsageError("--at only goes with --add-capture")
    try:
        conn = history.connect(args.db)
    except history.HistoryError as exc:
        raise UsageError(str(exc)) from None
    try:
        if args.add_capture:
            from host_tools.report import ReportError

            try:
                s = capture_session(args.add_capture, args.at)
            except (ReportError, ValueError, OSError) as exc:
                raise UsageError(f"{args.add_capture}: {exc}") from None
            sid = history.add_session(conn, s)
            print(f"stored walk from {args.add_capture} as session {sid}")
        since = None
        if args.days:
            since = datetime.now(timezone.utc) - timedelta(days=args.days)
        rows_s = history.sessions(conn, since=since)
    except sqlite3.Error as exc:
        raise UsageError(f"{args.db or history.default_path()}: {exc}") from None
    finally:
        conn.close()
    if not rows_s:
        print(f"no sessions in {args.db or history.default_path()} yet: "
              "try `insole train heel-raises --sim TRACE`")
        return 0
    periods = history.periods(rows_s, args.by)
    rows = table_rows(periods, args.by)
    print(format_table(rows))
    days = [s.started_at.astimezone().date() for s in rows_s]
    streak = history.streaks(days)
    print(f"\nstreak: {streak[0]} day(s) now, longest {streak[1]} day(s); "
          f"{len(rows_s)} sessions")
    plots: list[Path] = []
    if args.plots or args.html:
        out = Path(args.plots) if args.plots else Path(args.html).parent
        plots = write_plots(periods, args.by, out)
        for p in plots:
            print(f"wrote {p}")
    if args.html:
        print(f"wrote {write_html(rows, streak, plots, Path(args.html))}")
    return 0
