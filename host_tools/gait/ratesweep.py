"""The PhysioNet evaluation repeated at several insole sample rates.

The detector must not depend on the rate it samples at: every recording is read at
each rate as the insole would read it (host_tools.gait.physionet.resample: linear
interpolation at the read times, and up to 72 Hz each sample the mean of four reads a
quarter of a 50 Hz period apart, which the detector dates 7.5 ms after the tick), run
through the detector
(CPython engine: the same events as the insole's MicroPython) and scored exactly as
`insole evaluate` scores it at 100 Hz.

    python -m host_tools.gait.ratesweep --data ../shared/data --write docs/rates.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from host_tools.gait import evaluate

RATES = (50, 100, 150, 300)


def sweep(data_root: Path, rates=RATES, workers: int = 2, progress=None) -> list[dict]:
    """One row per rate and database (and gaitndd's left feet), the stats of each."""
    rows = []
    for rate in rates:
        results = evaluate.run_all(data_root, "cpython", workers, None, rate_hz=rate)
        for db in ("gaitndd", "gaitpdb"):
            sel = [r for r in results if r.database == db]
            if sel:
                rows.append(_row(rate, db, "all", sel))
            left = [r for r in sel if r.name.endswith("left")]
            if db == "gaitndd" and left:
                rows.append(_row(rate, db, "left feet", left))
        if progress:
            progress(rate)
    return rows


def _row(rate: int, db: str, group: str, results: list[evaluate.FootResult]) -> dict:
    stats = evaluate.saved_stats(evaluate.summarise(group, results))
    return {"rate_hz": rate, "database": db, "group": group, **stats}


def spread(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """Per (database, group): the largest minus the smallest sensitivity and precision."""
    out = {}
    for key in dict.fromkeys((r["database"], r["group"]) for r in rows):
        sel = [r for r in rows if (r["database"], r["group"]) == key]
        sens = [r["sensitivity"] for r in sel]
        prec = [r["precision"] for r in sel]
        out[key] = (round(max(sens) - min(sens), 2), round(max(prec) - min(prec), 2))
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| rate Hz | database | group | ref | det | sensitivity % | precision % |"
        " median abs ms | p95 abs ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["database"], r["group"], r["rate_hz"])):
        lines.append(
            f"| {r['rate_hz']} | {r['database']} | {r['group']} | {r['n_ref']} | {r['n_det']} | "
            f"{r['sensitivity']:.2f} | {r['precision']:.2f} | {r['median_abs_ms']:.1f} | "
            f"{r['p95_abs_ms']:.1f} |"
        )
    rates = sorted({r["rate_hz"] for r in rows})
    parts = [
        f"{db} {group} {s:.2f} / {p:.2f}" for (db, group), (s, p) in spread(rows).items()
    ]
    lines.append("")
    lines.append(
        f"Largest difference between the rates ({', '.join(map(str, rates))} Hz), "
        f"sensitivity / precision in points: {'; '.join(parts)}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import json

    from host_tools.common import safeio

    p = evaluate.bench_parser(__doc__)
    p.add_argument("--rates", default=",".join(map(str, RATES)),
                   help="comma-separated rates in Hz, each 25..1000 (default %(default)s)")
    p.add_argument("--write", metavar="JSON", help="save the rows (docs/rates.json)")
    args = p.parse_args(argv)
    try:
        rates = tuple(int(v) for v in args.rates.split(","))
    except ValueError:
        p.error(f"--rates: {args.rates!r} is not a comma-separated list of whole numbers")
    if not rates or any(not 25 <= r <= 1000 for r in rates):
        p.error(f"--rates: each rate must be 25..1000 Hz, got {args.rates}")
    root = evaluate.require_data(p, args.data)

    def progress(rate: int) -> None:
        print(f"  {rate} Hz done", file=sys.stderr)

    try:
        if args.write:
            safeio.output_file(args.write, "--write", example="rates.json")
        rows = sweep(root, rates, args.workers, progress)
        print(markdown(rows))
        if args.write:
            safeio.write_text(args.write, json.dumps(rows, indent=1) + "\n", "--write")
    except safeio.UsageError as exc:
        print(f"ratesweep: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
