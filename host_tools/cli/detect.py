"""Detect heel strikes and steps in a trace with the insole's own detector.

The default engine runs firmware/gait.py inside the real `micropython` binary, the
interpreter the insole uses; `--engine cpython` runs the same file in CPython.
Writes one events-CSV row per step (docs/TRACE_FORMAT.md) to --out, or to stdout.

Exit status: 0 on success, 2 for a malformed trace, bad arguments or an --out that
cannot be written (the file is written atomically: on failure the old one is kept).
"""

from __future__ import annotations

import sys

from host_tools.common import argcheck

HELP = "detect steps in a trace CSV and write the events CSV"


def add_arguments(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="trace CSV (heel,arch,forefoot counts)")
    p.add_argument("--rate", metavar="HZ", type=argcheck.rate_hz,
                   help="sample rate (50..1000); overrides '# rate_hz=' in the file")
    p.add_argument(
        "--engine",
        choices=("micropython", "cpython"),
        default="micropython",
        help="interpreter that runs firmware/gait.py (default: micropython)",
    )
    p.add_argument("--mains", metavar="HZ", type=int, choices=(50, 60), default=50,
                   help="mains frequency whose hum the pre-filter cancels, as the insole's "
                   "SET_MAINS (50 or 60; default 50)")
    p.add_argument("--out", metavar="EVENTS.csv", help="events CSV to write (default: stdout)")


def run(args) -> int:
    from host_tools.cli import UsageError
    from host_tools.common import safeio
    from host_tools.gait import engine, tracefile

    if args.out:
        safeio.output_file(args.out, "--out", example="events.csv")
    try:
        trace = tracefile.read_trace(args.trace)
    except tracefile.TraceError as exc:
        raise UsageError(str(exc)) from None
    rate = args.rate or trace.rate_hz
    if rate is None:
        rate = tracefile.DEFAULT_RATE_HZ
        print(
            f"insole detect: {args.trace} gives no '# rate_hz=', assuming {rate} Hz",
            file=sys.stderr,
        )
    try:
        events = engine.run(trace.samples, rate, args.engine, args.mains)
    except engine.EngineError as exc:
        print(f"insole detect: {exc}", file=sys.stderr)
        return 1
    rows = [tracefile.event_row(s) for s in engine.step_summaries(events)]
    if args.out:
        tracefile.write_events(args.out, rows, "--out")
        strikes = len(engine.contacts(events))
        print(
            f"{len(trace.samples)} samples at {rate} Hz, {args.mains} Hz mains ({args.engine}): "
            f"{strikes} heel strikes, {len(rows)} steps -> {args.out}",
            file=sys.stderr,
        )
    else:
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=tracefile.EVENT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return 0
