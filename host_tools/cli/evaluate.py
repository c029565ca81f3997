"""Measure the detector against the PhysioNet gait recordings.

Every foot of every walk in DATA/gaitndd and DATA/gaitpdb becomes a 100 Hz insole
trace (or one at --rate HZ); the detector runs over it and its heel strikes are matched
one-to-one with the reference contacts (60 ms window for gaitndd, 150 ms for gaitpdb),
leaving out reference contacts in a recording's last 100 ms. Prints per group:
sensitivity, precision, median signed and absolute heel-strike error, 95th-percentile
absolute error and cadence error. `--write FILE` also writes the accuracy report
(docs/ACCURACY.md) with the method and citations.
"""

from __future__ import annotations

import sys
from pathlib import Path

from host_tools.common import argcheck

HELP = "detector accuracy on the PhysioNet gait recordings"


def add_arguments(p) -> None:
    p.add_argument("--data", default="../shared/data", help="folder with gaitndd/ and gaitpdb/")
    p.add_argument("--engine", choices=("micropython", "cpython"), default="micropython")
    p.add_argument("--workers", type=argcheck.int_range(1, 64, "--workers"), default=2,
                   help="parallel processes, 1..64 (default 2)")
    p.add_argument("--write", metavar="FILE", help="write the markdown report here")
    p.add_argument(
        "--only", choices=("gaitndd", "gaitpdb"), help="evaluate one database only"
    )
    p.add_argument("--rate", type=argcheck.int_range(25, 1000, "--rate"), default=100,
                   metavar="HZ",
                   help="sample rate of the insole traces, 25..1000 (default 100): each "
                        "recording is resampled linearly to it")


def run(args) -> int:
    from host_tools.cli import UsageError
    from host_tools.common import safeio
    from host_tools.gait import evaluate
    from host_tools.gait.accuracy_doc import FIGURE, plot_disagreements, render

    root = Path(args.data)
    dbs = (args.only,) if args.only else ("gaitndd", "gaitpdb")
    if not any((root / d).is_dir() for d in dbs):
        raise UsageError(f"{root}: no {' or '.join(d + '/' for d in dbs)} folder here; "
                         "download them from PhysioNet (README, 'Accuracy data') or "
                         "point --data at them")
    if args.write:
        safeio.output_file(args.write, "--write", example="ACCURACY.md")

    def progress(i: int, n: int, res) -> None:
        if sys.stderr.isatty() or i == n or i % 50 == 0:
            end = "\n" if i == n or not sys.stderr.isatty() else "\r"
            print(f"  {i}/{n} feet ({res.name})".ljust(50), end=end, file=sys.stderr)

    results = evaluate.run_all(root, args.engine, args.workers, progress, dbs, args.rate)
    rows = evaluate.table(results)
    sides = evaluate.side_table(results)
    print(evaluate.markdown_table(rows))
    print()
    print(evaluate.markdown_table(sides))
    if args.write:
        safeio.write_text(
            args.write, render(rows, sides, results, args.engine, args.rate), "--write"
        )
        plot_disagreements(results, Path(args.write).parent / FIGURE)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0
