"""Training progress over days or weeks from the history database.

The table has one row per day (or ISO week with --by week): sessions, heel raises, toe
scrunches, single-leg balance time, the slow-walk exercise (its cadence and the share of
steps on the target pace), and for walks recorded with `insole capture`: cadence and
its variability (mean within-walk CV), left/right symmetry (mean |SI| of stance time,
two-insole walks, SI = 100 (L - R) / mean(L, R)) and arch loading (mean share of the
stance load on the arch sensor, %; bands in docs/EXERCISES.md). A "-" means no session
of that kind in the period. Below it: the current and the longest streak of consecutive
days with at least one session.

--plots DIR writes history_exercise.png (reps and balance time) and history_walking.png
(cadence and CV, symmetry, arch loading with its bands); --html PATH writes one
self-contained page with the table and the plots.

--add-capture DIR stores a walk recorded with `insole capture --out DIR` (both feet when
present); the same logs are stored once, however often they are added. --add-session
FILE stores a session that `insole train` kept in a file because the database could not
be written.

Showing the history only reads the database: nothing is created or changed, and a
database on a read-only disk can be shown.

Database: --db PATH, else $INSOLE_HISTORY_DB, else ~/.local/share/insole/history.db.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from host_tools.common import argcheck, safeio
from host_tools.common.safeio import UsageError

HELP = "progress over days and weeks: reps, balance, cadence, symmetry, arch index, streaks"

COLUMNS = ("period", "sessions", "heel raises", "toe scrunches", "balance s",
           "slow walk /min", "on pace %", "cadence", "CV %", "|SI| %", "arch %")


def add_arguments(parser) -> None:
    parser.add_argument("--db", metavar="PATH", help="history database")
    parser.add_argument("--by", choices=("day", "week"), default="day", help="group by")
    parser.add_argument("--days", type=argcheck.int_range(0, 36500, "--days"), default=0,
                        metavar="N", help="only the last N days (default 0: everything)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--html", metavar="PATH", help="write an HTML page with table and plots")
    parser.add_argument("--add-capture", metavar="DIR",
                        help="store the walk in a capture directory first")
    parser.add_argument("--at", metavar="ISO-TIME",
                        help="with --add-capture: when the walk was (default: the time "
                        "its session file gives, else the log file's)")
    parser.add_argument("--add-session", metavar="FILE",
                        help="store a session kept in a file by `insole train`")


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def table_rows(periods, by: str) -> list[list[str]]:
    rows = []
    for p in periods:
        label = p.start.isoformat() if by == "day" else f"week of {p.start.isoformat()}"
        rows.append([label, str(p.sessions), _f(p.heel_raises, 0), _f(p.toe_scrunches, 0),
                     _f(p.balance_s), _f(p.slow_walk_cadence), _f(p.slow_walk_on_target, 0),
                     _f(p.cadence), _f(p.cadence_cv, 2), _f(p.symmetry),
                     _f(p.arch_index / 10)])
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
    """A walk session from a capture directory (uses host_tools.gait.report). Its
    content_hash is that of the step logs, so the same walk is recognised again."""
    from host_tools.ble.steplog import log_paths
    from host_tools.gait.report import build_report
    from host_tools.training.history import Session, content_hash

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
        "arch_index": round(10 * mean("share_arch"), 1),  # report gives %, the database ‰
    }
    si = rep.symmetry.get("stance_ms_mean")
    if si is not None and math.isfinite(si):
        summary["symmetry_pct"] = round(si, 2)
    summary = {k: v for k, v in summary.items()
               if not (isinstance(v, float) and math.isnan(v))}
    if at:
        started = datetime.fromisoformat(at)
    elif rep.started is not None:
        started = rep.started
    else:
        logs = [p for p in Path(directory).glob("*.csv")]
        started = datetime.fromtimestamp(min(p.stat().st_mtime for p in logs), timezone.utc)
    duration = max(f.duration_s for f in feet)
    digest = content_hash((side, log_paths(directory, side)[0].read_bytes())
                          for side in rep.feet)
    return Session("walk", started, duration, "+".join(sorted(rep.feet)),
                   f"capture:{directory}", summary, content_hash=digest)


def _date_axis(ax, periods, by: str) -> None:
    """Dates on the x axis spanning the data (at least a week), one label per tick."""
    import matplotlib.dates as mdates

    first, last = periods[0].start, periods[-1].start
    pad = timedelta(days=1 if by == "day" else 7)
    lo, hi = first - pad, last + pad
    if (hi - lo).days < 7:
        extra = timedelta(days=(7 - (hi - lo).days) / 2)
        lo, hi = lo - extra, hi + extra
    ax.set_xlim(lo, hi)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def exercise_figure(periods, by: str, plt):
    x = [p.start for p in periods]
    width = 0.8 if by == "day" else 5.6
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    hr = [p.heel_raises or 0 for p in periods]
    ts = [p.toe_scrunches or 0 for p in periods]
    ax1.bar(x, hr, width, label="heel raises", color="#3b6ea5")
    ax1.bar(x, ts, width, bottom=hr, label="toe scrunches", color="#e39b3b")
    ax1.set_ylabel("reps")
    ax1.set_title(f"Exercise per {by}")
    ax1.legend(loc="upper left")
    bal = [(p.start, p.balance_s) for p in periods if math.isfinite(p.balance_s)]
    ax2.bar([a for a, _ in bal], [b for _, b in bal], width, color="#4c9a5b")
    ax2.set_ylabel("single-leg time (s)")
    for ax in (ax1, ax2):
        ax.grid(axis="y", alpha=0.3)
    _date_axis(ax2, periods, by)
    fig.tight_layout()
    return fig


def walking_figure(periods, by: str, plt):
    from host_tools.training.exercises import ARCH_HIGH_ABOVE, ARCH_LOW_BELOW

    def series(attr, scale=1.0):
        # only the periods that have the value, so the line joins them across gaps
        pts = [(p.start, getattr(p, attr) * scale) for p in periods
               if math.isfinite(getattr(p, attr))]
        return [a for a, _ in pts], [b for _, b in pts]

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    ax1.plot(*series("cadence"), "o-", color="#3b6ea5", label="walks")
    ax1.plot(*series("slow_walk_cadence"), "^:", color="#6f9fd8", label="slow-walk exercise")
    ax1.set_ylabel("cadence (steps/min)")
    ax1.legend(loc="upper left", fontsize=8)
    axc = ax1.twinx()
    axc.plot(*series("cadence_cv"), "s--", color="#7a7a7a", label="CV")
    axc.set_ylabel("walk cadence CV (%, dashed)", color="#555555")
    ax1.set_title(f"Walking per {by}")
    ax2.plot(*series("symmetry"), "o-", color="#7a4ca0")
    ax2.set_ylabel("left/right |SI| (%)")
    ax2.axhline(10, color="#999", ls=":", lw=1)
    ax2.set_ylim(bottom=0)
    ax3.axhspan(0, ARCH_LOW_BELOW / 10, color="#f3e0c8", label="low arch loading")
    ax3.axhspan(ARCH_HIGH_ABOVE / 10, 50, color="#d5e4f3", label="high arch loading")
    ax3.plot(*series("arch_index", 0.1), "o-", color="#333")
    ax3.set_ylim(0, 50)
    ax3.set_ylabel("arch loading (% of stance load)")
    ax3.legend(loc="upper left", fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    _date_axis(ax3, periods, by)
    fig.tight_layout()
    return fig


def write_plots(periods, by: str, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    safeio.ensure_dir(out_dir)
    paths = []
    for name, make in (("history_exercise.png", exercise_figure),
                       ("history_walking.png", walking_figure)):
        fig = make(periods, by, plt)
        try:
            paths.append(safeio.save_figure(fig, out_dir / name))
        finally:
            plt.close(fig)
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
    return safeio.write_text(path, "".join(parts))


def _store(args, history, s, what: str) -> None:
    """Store one session (creating the database if need be)."""
    try:
        conn = history.connect(args.db)
    except history.HistoryError as exc:
        raise UsageError(str(exc)) from None
    try:
        sid = history.add_session(conn, s)
        print(f"stored {what} as session {sid}")
    except history.DuplicateSession as exc:
        print(f"{what}: already stored as session {exc.existing} (same content); "
              "nothing added")
    finally:
        conn.close()


def run(args) -> int:
    from host_tools.training import history

    if args.at and not args.add_capture:
        raise UsageError("--at only goes with --add-capture")
    where = args.db or history.default_path()
    if args.db and (args.add_capture or args.add_session):
        safeio.output_file(args.db, "--db", example="history.db")
    if args.html:
        safeio.output_file(args.html, "--html", example="history.html")
    if args.plots:
        safeio.output_dir(args.plots, "--plots")
    if args.add_capture:
        from host_tools.gait.report import ReportError

        try:
            s = capture_session(args.add_capture, args.at)
        except (ReportError, ValueError, OSError) as exc:
            raise UsageError(f"{args.add_capture}: {exc}") from None
        _store(args, history, s, f"walk from {args.add_capture}")
    if args.add_session:
        try:
            s = history.session_from_json(Path(args.add_session).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(safeio.describe(exc, args.add_session, "--add-session")) from None
        except ValueError as exc:
            raise UsageError(f"--add-session {args.add_session}: {exc}") from None
        _store(args, history, s, f"{s.kind} session from {args.add_session}")
    since = None
    if args.days:
        since = datetime.now(timezone.utc) - timedelta(days=args.days)
    try:
        conn = history.open_readonly(args.db)
    except history.HistoryError as exc:
        raise UsageError(str(exc)) from None
    rows_s = []
    if conn is not None:
        try:
            rows_s = history.sessions(conn, since=since)
        except sqlite3.Error as exc:
            raise UsageError(f"{where}: {exc}") from None
        finally:
            conn.close()
    if not rows_s:
        print(f"no sessions in {where} yet: "
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
