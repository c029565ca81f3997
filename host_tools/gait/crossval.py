"""Leave-groups-out cross-validation of the detector's constants.

A small grid of candidate constant sets is run over every recording (firmware/gait.py
with the constants substituted in its source, CPython engine: the same events as the
insole's MicroPython). For each held-out group (gaitndd: control, huntington,
parkinson, als; gaitpdb: Ga, Ju), the candidate that scores best on the other groups
of the same database is chosen and scored on the held-out group only. The held-out
results pooled over the folds are the cross-validated figures.

    python -m host_tools.gait.crossval --data ../shared/data --write docs/crossval.json
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType

from host_tools.gait import engine, evaluate

# The constants cross-validated and their candidate values (the shipped value is one).
GRID = {
    "_AIR_MEAN": (48, 64, 96),
    "_MIN_SWING_MS": (110, 130, 150),
    "_SWING_NUM": (5, 6),
    "_WEAK_SPAN": (600, 1200),  # 1200 (= _MIN_SPAN): no lower floor for a weak region
}


def candidates() -> list[dict[str, int]]:
    keys = sorted(GRID)
    combos = itertools.product(*(GRID[k] for k in keys))
    return [dict(zip(keys, vals, strict=True)) for vals in combos]


def shipped() -> dict[str, int]:
    src = (engine.FIRMWARE / "gait.py").read_text()
    out = {}
    for name in GRID:
        m = re.search(rf"^{name} = const\((\d+)\)", src, re.M)
        assert m, name
        out[name] = int(m.group(1))
    return out


def variant_module(consts: dict[str, int]) -> ModuleType:
    """firmware/gait.py with the given constants substituted."""
    src = (engine.FIRMWARE / "gait.py").read_text()
    for name, value in consts.items():
        src, n = re.subn(rf"^{name} = const\(\d+\)", f"{name} = const({value})", src, flags=re.M)
        if n != 1:
            raise ValueError(f"constant {name} not found once in gait.py")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
        path = f.name
    spec = importlib.util.spec_from_file_location("_gait_variant", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Path(path).unlink()
    return module


def _run(args: tuple) -> list[tuple[int, evaluate.FootResult]]:
    jobs, cands = args
    out = []
    mods = [variant_module(c) for c in cands]
    for job in jobs:
        rec = evaluate.load_source(job[:3])
        window = evaluate.NDD_WINDOW_MS if rec.database == "gaitndd" else evaluate.PDB_WINDOW_MS
        for k, mod in enumerate(mods):
            events = engine.run_cpython(rec.trace, rec.rate_hz, mod)
            res = evaluate.score(rec, [c[0] for c in engine.contacts(events)], window)
            out.append((k, res))
    return out


def run_grid(data_root: Path, cands: list[dict[str, int]], workers: int = 2):
    """Per candidate, the FootResults of every recording."""
    todo = evaluate.jobs(data_root, "cpython")
    chunks = [todo[i::workers * 4] for i in range(workers * 4)]
    per: list[list[evaluate.FootResult]] = [[] for _ in cands]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(_run, [(c, cands) for c in chunks]):
            for k, res in part:
                per[k].append(res)
    return per


def _score(results: list[evaluate.FootResult]) -> float:
    s = evaluate.summarise("x", results)
    return s.sensitivity + s.precision


FOLDS = {"gaitndd": ("control", "huntington", "parkinson", "als"), "gaitpdb": ("Ga", "Ju")}


def best_candidate(cands: list[dict[str, int]], results_of, prefer=None) -> int:
    """Index of the candidate whose results (results_of(k)) score highest; on a tie the
    `prefer` set (the shipped constants), then the earliest."""
    return max(range(len(cands)), key=lambda k: (_score(results_of(k)), cands[k] == prefer))


def crossvalidate(
    per: list[list[evaluate.FootResult]],
    cands: list[dict[str, int]],
    prefer: dict[str, int] | None = None,
) -> dict:
    """Each fold's choice and its held-out scores, pooled. On a tie in the training
    score the `prefer` set (the shipped constants) is chosen, then the earliest
    candidate: a fold leaves the shipped value only when its training groups score
    another one higher."""
    out: dict = {"folds": [], "rows": []}
    pooled: dict[str, list[evaluate.FootResult]] = {}
    for db, groups in FOLDS.items():
        for held in groups:
            def train(k, db=db, held=held):
                return [r for r in per[k] if r.database == db and r.group != held]

            if not train(0):
                continue
            best = best_candidate(cands, train, prefer)
            test = [r for r in per[best] if r.database == db and r.group == held]
            pooled.setdefault(db, []).extend(test)
            s = evaluate.summarise(held, test)
            out["folds"].append({"database": db, "held_out": held, "chosen": cands[best],
                                 **evaluate.saved_stats(s)})
    for db, results in pooled.items():
        out["rows"].append({"database": db, "group": "all (held out)",
                            **evaluate.saved_stats(evaluate.summarise("all", results))})
        left = [r for r in results if r.name.endswith("left")]
        if db == "gaitndd" and left:
            out["rows"].append({"database": db, "group": "left feet (held out)",
                                **evaluate.saved_stats(evaluate.summarise("left", left))})
    return out


def markdown(cv: dict) -> str:
    lines = [
        "| database | held out | chosen constants | feet | ref | det | sensitivity % |"
        " precision % | median abs ms | p95 abs ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in cv["folds"] + cv["rows"]:
        chosen = ", ".join(f"{k}={v}" for k, v in f.get("chosen", {}).items()) or "-"
        lines.append(
            f"| {f['database']} | {f.get('held_out', f.get('group'))} | {chosen} | {f['feet']} | "
            f"{f['n_ref']} | {f['n_det']} | {f['sensitivity']:.2f} | {f['precision']:.2f} | "
            f"{f['median_abs_ms']:.1f} | {f['p95_abs_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from host_tools.common import safeio

    p = evaluate.bench_parser(__doc__)
    p.add_argument("--write", metavar="JSON", help="save the result (docs/crossval.json)")
    args = p.parse_args(argv)
    evaluate.require_data(p, args.data)
    try:
        if args.write:
            safeio.output_file(args.write, "--write", example="crossval.json")
        return _main(args)
    except safeio.UsageError as exc:
        print(f"crossval: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    from host_tools.common import safeio

    cands = candidates()
    per = run_grid(Path(args.data), cands, args.workers)
    ship = shipped()
    cv = crossvalidate(per, cands, ship)
    cv["grid"] = {k: list(v) for k, v in GRID.items()}
    cv["shipped"] = ship
    # in-sample: the candidate best over every recording, per database (ties as above)
    cv["in_sample_best"] = {
        db: cands[best_candidate(
            cands, lambda k, db=db: [r for r in per[k] if r.database == db], ship)]
        for db in FOLDS
    }
    print(markdown(cv))
    print("in-sample best:", cv["in_sample_best"], "shipped:", cv["shipped"], file=sys.stderr)
    if args.write:
        safeio.write_text(args.write, json.dumps(cv, indent=1) + "\n", "--write")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
