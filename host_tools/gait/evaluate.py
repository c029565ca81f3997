"""Detector accuracy on the PhysioNet gait recordings in ../shared/data.

Each foot of each walk becomes a 100 Hz insole trace (host_tools.gait.physionet), the
detector runs over it, and its heel strikes are matched one-to-one against the
reference contacts inside the reference's time span.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host_tools.gait import engine, physionet

NDD_WINDOW_MS = 60.0
PDB_WINDOW_MS = 150.0
# A reference contact this close to the end of a recording (or after it) is not scored:
# the detector confirms a contact 20 ms after the load reaches contact level, which
# itself comes tens of ms after the touch, so no causal detector could report it.
TAIL_MS = 100.0
RATE_HZ = 100  # the rate the recordings are evaluated at unless told otherwise


@dataclass
class FootResult:
    name: str
    database: str
    group: str
    n_ref: int
    n_det: int
    matched: int
    errors_ms: list[float] = field(default_factory=list)  # detected - reference, matched pairs
    cadence_ref: float = 0.0  # strikes per minute of this foot
    cadence_det: float = 0.0
    missed_ms: list[float] = field(default_factory=list)  # reference strikes not found
    extra_ms: list[float] = field(default_factory=list)  # detections with no reference
    source: tuple = ()  # how to load the recording again (see load_source)
    strikes_ms: list[float] = field(default_factory=list)  # every detected contact


def match(det_ms: np.ndarray, ref_ms: np.ndarray, window_ms: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i_det, i_ref) within window, closest pairs first."""
    det_ms = np.asarray(det_ms, dtype=float)
    ref_ms = np.asarray(ref_ms, dtype=float)
    cands = []
    j0 = 0
    for i, t in enumerate(det_ms):
        while j0 < len(ref_ms) and ref_ms[j0] < t - window_ms:
            j0 += 1
        j = j0
        while j < len(ref_ms) and ref_ms[j] <= t + window_ms:
            cands.append((abs(t - ref_ms[j]), i, j))
            j += 1
    cands.sort()
    used_d, used_r, pairs = set(), set(), []
    for _, i, j in cands:
        if i not in used_d and j not in used_r:
            used_d.add(i)
            used_r.add(j)
            pairs.append((i, j))
    pairs.sort()
    return pairs


def score(rec: physionet.Recording, strikes_ms: Iterable[float], window_ms: float) -> FootResult:
    lo, hi = rec.window_ms
    end = len(rec.trace) * 1000.0 / rec.rate_hz - TAIL_MS
    hi = min(hi, end)

    def valid(t: float) -> bool:
        return not any(a <= t <= b for a, b in rec.invalid_ms)

    det = np.asarray(
        [t for t in strikes_ms if lo - window_ms <= t <= hi + window_ms and valid(t)], dtype=float
    )
    ref = np.asarray([t for t in rec.reference_ms if t <= end and valid(t)], dtype=float)
    pairs = match(det, ref, window_ms)
    span_min = max(hi - lo, 1.0) / 60000.0
    hit_det = {i for i, _ in pairs}
    hit_ref = {j for _, j in pairs}
    return FootResult(
        missed_ms=[float(t) for j, t in enumerate(ref) if j not in hit_ref],
        extra_ms=[float(t) for i, t in enumerate(det) if i not in hit_det],
        name=rec.name,
        database=rec.database,
        group=rec.group,
        n_ref=len(ref),
        n_det=len(det),
        matched=len(pairs),
        errors_ms=[float(det[i] - ref[j]) for i, j in pairs],
        cadence_ref=(len(ref) - 1) / span_min if len(ref) > 1 else 0.0,
        cadence_det=max(len([t for t in det if lo <= t <= hi]) - 1, 0) / span_min,
    )


def _run_one(args: tuple) -> FootResult:
    loader, where, side, eng, rate_hz = args
    rec = physionet.resample(load_source((loader, where, side)), rate_hz)
    events = engine.run(rec.trace, rec.rate_hz, eng)
    strikes = [c[0] for c in engine.contacts(events)]
    window = NDD_WINDOW_MS if rec.database == "gaitndd" else PDB_WINDOW_MS
    res = score(rec, strikes, window)
    res.source = (loader, where, side)
    res.strikes_ms = [float(t) for t in strikes]
    return res


def bench_parser(doc: str):
    """An argument parser for a `python -m` accuracy bench: --data and --workers."""
    import argparse

    from host_tools.common import argcheck

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", default="../shared/data", help="folder with gaitndd/ and gaitpdb/")
    p.add_argument("--workers", type=argcheck.int_range(1, 64, "--workers"), default=2,
                   help="parallel processes, 1..64 (default 2)")
    return p


def require_data(p, root: str | Path) -> Path:
    """The data folder, or the parser's one-line error when it holds neither database."""
    root = Path(root)
    if not any((root / d).is_dir() for d in ("gaitndd", "gaitpdb")):
        p.error(f"{root}: no gaitndd/ or gaitpdb/ folder here")
    return root


def load_source(source: tuple) -> physionet.Recording:
    loader, where, side = source
    return physionet.load_ndd(*where, side) if loader == "ndd" else physionet.load_pdb(where, side)


def jobs(
    data_root: Path,
    eng: str,
    databases: tuple[str, ...] = ("gaitndd", "gaitpdb"),
    rate_hz: int = RATE_HZ,
) -> list:
    """(loader, where, side, engine, rate) per foot; load_source takes the first three."""
    out = []
    ndd = Path(data_root) / "gaitndd"
    if "gaitndd" in databases and ndd.exists():
        for rec in physionet.ndd_records(ndd):
            for side in ("left", "right"):
                out.append(("ndd", (ndd, rec), side, eng, rate_hz))
    pdb = Path(data_root) / "gaitpdb"
    if "gaitpdb" in databases and pdb.exists():
        for path in physionet.pdb_files(pdb):
            for side in ("left", "right"):
                out.append(("pdb", path, side, eng, rate_hz))
    return out


def run_all(
    data_root: Path,
    eng: str = "micropython",
    workers: int = 2,
    progress: Callable[[int, int, FootResult], None] | None = None,
    databases: tuple[str, ...] = ("gaitndd", "gaitpdb"),
    rate_hz: int = RATE_HZ,
) -> list[FootResult]:
    todo = jobs(data_root, eng, databases, rate_hz)
    results: list[FootResult] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, res in enumerate(pool.map(_run_one, todo, chunksize=4), start=1):
            results.append(res)
            if progress:
                progress(i, len(todo), res)
    return results


@dataclass
class GroupStats:
    group: str
    feet: int
    n_ref: int
    n_det: int
    matched: int
    sensitivity: float
    precision: float
    median_signed_ms: float
    median_abs_ms: float
    p95_abs_ms: float
    cadence_err_pct: float  # mean over feet of |det - ref| / ref


def summarise(group: str, results: list[FootResult]) -> GroupStats:
    n_ref = sum(r.n_ref for r in results)
    n_det = sum(r.n_det for r in results)
    matched = sum(r.matched for r in results)
    errs = [e for r in results for e in r.errors_ms]
    abs_errs = np.abs(errs) if errs else np.asarray([np.nan])
    cad = [
        abs(r.cadence_det - r.cadence_ref) / r.cadence_ref * 100 for r in results if r.cadence_ref
    ]
    return GroupStats(
        group=group,
        feet=len(results),
        n_ref=n_ref,
        n_det=n_det,
        matched=matched,
        sensitivity=matched / n_ref * 100 if n_ref else float("nan"),
        precision=matched / n_det * 100 if n_det else float("nan"),
        median_signed_ms=float(np.median(errs)) if errs else float("nan"),
        median_abs_ms=float(np.median(abs_errs)),
        p95_abs_ms=float(np.percentile(abs_errs, 95)),
        cadence_err_pct=statistics.fmean(cad) if cad else float("nan"),
    )


def saved_stats(s: GroupStats) -> dict:
    """The figures the accuracy benches save (docs/*.json), rounded as reported."""
    return {
        "feet": s.feet, "n_ref": s.n_ref, "n_det": s.n_det,
        "sensitivity": round(s.sensitivity, 2), "precision": round(s.precision, 2),
        "median_abs_ms": round(s.median_abs_ms, 1), "p95_abs_ms": round(s.p95_abs_ms, 1),
    }


GROUP_ORDER = [
    ("gaitndd", "control"),
    ("gaitndd", "huntington"),
    ("gaitndd", "parkinson"),
    ("gaitndd", "als"),
    ("gaitpdb", "Ga"),
    ("gaitpdb", "Ju"),
]


def table(results: list[FootResult]) -> list[tuple[str, str, GroupStats]]:
    rows = []
    for db, group in GROUP_ORDER:
        sel = [r for r in results if r.database == db and r.group == group]
        if sel:
            rows.append((db, group, summarise(group, sel)))
    for db in ("gaitndd", "gaitpdb"):
        sel = [r for r in results if r.database == db]
        if sel:
            rows.append((db, "all", summarise("all", sel)))
    return rows


HEADER = (
    "| database | group | feet | ref | det | sensitivity % | precision % | median signed ms"
    " | median abs ms | p95 abs ms | cadence err % |"
)


def markdown_table(rows: list[tuple[str, str, GroupStats]]) -> str:
    lines = [HEADER, "|" + "---|" * 11]
    for db, group, s in rows:
        lines.append(
            f"| {db} | {group} | {s.feet} | {s.n_ref} | {s.n_det} | {s.sensitivity:.2f} | "
            f"{s.precision:.2f} | {s.median_signed_ms:+.1f} | {s.median_abs_ms:.1f} | "
            f"{s.p95_abs_ms:.1f} | {s.cadence_err_pct:.2f} |"
        )
    return "\n".join(lines)


def side_table(results: list[FootResult]) -> list[tuple[str, str, GroupStats]]:
    """gaitndd split by foot: the left reference is the authors' own strike times."""
    rows = []
    for side in ("left", "right"):
        sel = [r for r in results if r.database == "gaitndd" and r.name.endswith(side)]
        if sel:
            rows.append(("gaitndd", f"{side} feet", summarise(f"{side} feet", sel)))
    return rows


def worst(results: list[FootResult], n: int = 8) -> list[FootResult]:
    def f1(r: FootResult) -> float:
        return r.matched / max(r.n_ref, 1) + r.matched / max(r.n_det, 1)

    return sorted(results, key=f1)[:n]
