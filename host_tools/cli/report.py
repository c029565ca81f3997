"""Summarise a capture directory: gait table, PNG plots and, with --html, one web page.

DIR is what `insole capture --out DIR` wrote: left.csv / right.csv (one row per step)
with left.json / right.json beside them. The summary starts with the date, time and
length of the walk and gives, per foot and side by side: steps, cadence (mean and CV),
stride time and its variability, stance and swing time and their share of the gait
cycle, the foot-strike pattern split, the heel / arch / forefoot load shares (arch
loading, % of stance load) and, with both feet, left/right symmetry indices
SI = 100 (L - R) / mean(L, R). Below it each figure is compared with a healthy-adult
range (cadence, stance % of cycle, stride-time CV, stance and swing symmetry), with a
plain OUTSIDE where a value is not in it; report.html names the sources. --steps also
prints the per-step table.

Plots are written into DIR (or --plots): cadence.png, stance_swing.png, load_share.png,
strike_pattern.png and, with both feet, left_right.png; outlying strides and stances
are ringed. --html also writes report.html, a single self-contained page with the
plots embedded, the reference ranges, the per-step table (folded) and definitions in
words. report.json holds the numbers. Every file is written atomically.

A damaged log (truncated line, wrong columns, binary garbage) is reported with file and
line, and every intact row is still used.
"""

from __future__ import annotations

import sys

HELP = "gait summary, PNG plots and an HTML page from a capture directory"


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", help="capture directory (from insole capture --out)")
    parser.add_argument("--html", action="store_true", help="also write DIR/report.html")
    parser.add_argument("--plots", metavar="OUTDIR", help="write plots here instead of DIR")
    parser.add_argument("--no-plots", action="store_true", help="only print the summary")
    parser.add_argument("--steps", action="store_true",
                        help="also print the per-step table (left and right side by side)")


def run(args) -> int:
    from host_tools.cli import UsageError
    from host_tools.common import safeio
    from host_tools.gait.report import (
        ReportError,
        build_report,
        format_steps,
        format_summary,
        report_json,
        write_html,
        write_plots,
    )

    try:
        rep = build_report(args.dir)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    out = safeio.output_dir(args.plots or args.dir, "--plots" if args.plots else None)
    for p in rep.problems:
        print(f"warning: {p}", file=sys.stderr)
    print(format_summary(rep))
    if args.steps:
        print()
        print(format_steps(rep))
    safeio.write_text(out / "report.json", report_json(rep))
    if not args.no_plots or args.html:
        paths = write_plots(rep, out)
        print(f"plots: {', '.join(str(p) for p in paths)}")
    if args.html:
        print(f"html:  {write_html(rep, out / 'report.html')}")
    return 0
