"""Trace and events CSV files (format: docs/TRACE_FORMAT.md).

A trace is what the insole's ADC read: lines starting with ``#`` are comments
(``# rate_hz=N`` gives the sample rate), the first other line is a header that
names ``heel``, ``arch`` and ``forefoot`` among its columns, and every further line
holds integers 0..65535. Extra columns are ignored. A UTF-8 byte-order mark (what
spreadsheets put at the start of a CSV export) is skipped. A trace needs at least one
sample.

Files are written atomically (host_tools/common/safeio.py): a failure leaves the old file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host_tools.common import safeio
from host_tools.common.argcheck import MAX_RATE_HZ, MIN_RATE_HZ

CHANNELS = ("heel", "arch", "forefoot")
U16_MAX = 65535
DEFAULT_RATE_HZ = 100

EVENT_COLUMNS = (
    "seq",
    "strike_ms",
    "toe_off_ms",
    "heel_off_ms",
    "stance_ms",
    "swing_ms",
    "stride_ms",
    "pattern",
    "peak_heel",
    "peak_arch",
    "peak_forefoot",
    "share_heel",
    "share_arch",
    "share_forefoot",
)
PATTERN_NAMES = ("unknown", "rear", "mid", "fore")

_RATE_RE = re.compile(r"^#\s*rate_hz\s*=\s*(\S+)\s*$")


class TraceError(ValueError):
    """A malformed trace: the message names the file and line."""


@dataclass
class Trace:
    rate_hz: int | None  # from ``# rate_hz=N``; None when the file does not say
    samples: np.ndarray  # (n, 3) int32: heel, arch, forefoot
    path: str = ""
    comments: tuple[str, ...] = ()


def _fail(path: str, line: int, what: str) -> TraceError:
    return TraceError(f"{path}:{line}: {what}")


def parse_rate(text: str, where: str = "--rate") -> int:
    try:
        rate = int(text)
    except ValueError:
        raise TraceError(f"{where}: sample rate {text!r} is not a whole number") from None
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise TraceError(f"{where}: sample rate {rate} Hz is outside {MIN_RATE_HZ}..{MAX_RATE_HZ}")
    return rate


def read_trace(path: str | Path) -> Trace:
    """Read and validate a trace CSV; raise TraceError naming the line on any fault."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(path, line, "not text (invalid UTF-8)") from None
    rate: int | None = None
    comments: list[str] = []
    columns: tuple[int, int, int] | None = None
    width = 0
    rows: list[tuple[int, int, int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped)
            m = _RATE_RE.match(stripped)
            if m:
                rate = parse_rate(m.group(1), f"{path}:{lineno}")
            continue
        cells = [c.strip() for c in stripped.split(",")]
        if columns is None:
            names = [c.lower() for c in cells]
            missing = [c for c in CHANNELS if c not in names]
            if missing:
                raise _fail(
                    path,
                    lineno,
                    f"header must name heel,arch,forefoot; missing {','.join(missing)} "
                    f"(got {stripped[:60]!r})",
                )
            columns = (names.index("heel"), names.index("arch"), names.index("forefoot"))
            width = len(cells)
            continue
        if len(cells) != width:
            raise _fail(path, lineno, f"expected {width} columns, found {len(cells)}")
        values = []
        for name, idx in zip(CHANNELS, columns, strict=True):
            cell = cells[idx]
            try:
                v = int(cell)
            except ValueError:
                raise _fail(path, lineno, f"{name} value {cell[:20]!r} is not an integer") from None
            if not 0 <= v <= U16_MAX:
                raise _fail(path, lineno, f"{name} value {v} is outside 0..65535")
            values.append(v)
        rows.append((values[0], values[1], values[2]))
    if columns is None:
        raise TraceError(f"{path}: no header line (heel,arch,forefoot) found")
    if not rows:
        raise TraceError(f"{path}: no samples after the header line")
    samples = np.asarray(rows, dtype=np.int32).reshape(-1, 3)
    return Trace(rate, samples, path, tuple(comments))


def write_trace(
    path: str | Path,
    samples: np.ndarray | Sequence[Sequence[int]],
    rate_hz: int,
    comments: Iterable[str] = (),
) -> None:
    samples = np.asarray(samples, dtype=np.int64)
    if samples.ndim != 2 or samples.shape[1] != 3:
        raise ValueError("samples must have shape (n, 3)")
    if samples.size and (samples.min() < 0 or samples.max() > U16_MAX):
        raise ValueError("samples must be within 0..65535")
    with safeio.atomic_file(path) as f:
        for c in comments:
            f.write(f"# {c}\n")
        f.write(f"# rate_hz={int(rate_hz)}\n")
        f.write("heel,arch,forefoot\n")
        for h, a, fo in samples.tolist():
            f.write(f"{h},{a},{fo}\n")


def event_row(summary: Sequence[int]) -> dict[str, int | str]:
    """One detector step summary (GaitDetector.summary() order) as an events-CSV row."""
    row: dict[str, int | str] = dict(zip(EVENT_COLUMNS, (int(v) for v in summary), strict=True))
    row["pattern"] = PATTERN_NAMES[int(summary[7])]
    return row


def events_text(rows: Iterable[dict]) -> str:
    """The events CSV for ``rows`` (header first), as text."""
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=EVENT_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return f.getvalue()


def write_events(path: str | Path, rows: Iterable[dict], option: str | None = None) -> int:
    rows = list(rows)
    safeio.write_text(path, events_text(rows), option)
    return len(rows)


def read_events(path: str | Path) -> list[dict[str, int | str]]:
    """Read an events CSV written by write_events (strict: raises TraceError on a bad line)."""
    path = str(path)
    out: list[dict[str, int | str]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in EVENT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}:1: events header lacks {','.join(missing)}")
        for r in reader:
            row: dict[str, int | str] = {}
            for c in EVENT_COLUMNS:
                v = r[c]
                if c == "pattern":
                    row[c] = v
                    continue
                try:
                    row[c] = int(v)
                except (TypeError, ValueError):
                    where = f"{path}:{reader.line_num}"
                    raise TraceError(f"{where}: {c} {v!r} is not an integer") from None
            out.append(row)
    return out
