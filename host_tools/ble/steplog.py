"""The capture log: one CSV row per step, and a JSON session file beside it.

``DIR/<side>.csv`` holds the events-CSV columns of ``insole detect`` followed by
``host_time`` (Unix time in seconds at which the host received the step, or for a
backfilled step, received the replay), ``side`` and ``strike_corrected`` (1 when the
insole moved the step's strike past a spike to the real contact, so the strike
notification it sent earlier was for the spike; logs from before this column read as 0).
The writer hands every row to the operating system as it comes, so a crash loses at
most the row being written; a row that does not fit on the disk is cut back off, so the
log never ends in half a row, and a log whose header cannot be written is removed. Rows
are written in arrival order; a step recovered by backfill therefore appears after later
steps, and readers sort by ``seq``.

``DIR/<side>.json`` describes the session: firmware version, side, sample rate, start
time, device address and, once capture ends, what was received, recovered and lost.
It is replaced atomically (host_tools/common/safeio.py) every time it changes.

The reader is forgiving on purpose: a damaged log (a truncated last line, a row with
the wrong number of columns, binary garbage from a crashed disk write) yields every
intact row plus a list of problems, each naming the file and line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from host_tools.common import safeio
from host_tools.gait.tracefile import EVENT_COLUMNS, PATTERN_NAMES

LOG_COLUMNS = EVENT_COLUMNS + ("host_time", "side", "strike_corrected")
_OLD_COLUMNS = LOG_COLUMNS[:-1]  # logs written before strike_corrected
SIDES = ("left", "right", "unknown")
META_FORMAT = 1
_MS_LIMIT = 1 << 29  # the device ms clock and sequence numbers stay below 2**29
_SHARE_MAX = 1000


@dataclass(frozen=True)
class StepRow:
    """One step as captured (times in device ms, shares in per-mille)."""

    seq: int
    strike_ms: int
    toe_off_ms: int
    heel_off_ms: int
    stance_ms: int
    swing_ms: int
    stride_ms: int
    pattern: str
    peak_heel: int
    peak_arch: int
    peak_forefoot: int
    share_heel: int
    share_arch: int
    share_forefoot: int
    host_time: float
    side: str
    strike_corrected: bool = False

    def event_values(self) -> tuple:
        """The events-CSV part of the row, in EVENT_COLUMNS order."""
        return tuple(getattr(self, c) for c in EVENT_COLUMNS)


@dataclass(frozen=True)
class LogProblem:
    path: str
    line: int  # 0 when the problem concerns the whole file
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class StepLogError(ValueError):
    """A log that cannot be used at all (missing, unreadable, or no intact row)."""


@dataclass
class SessionMeta:
    side: str
    firmware_version: str = ""
    sample_rate_hz: int = 0
    start_time: str = ""  # ISO 8601, UTC
    device_address: str = ""
    device_name: str = ""
    transport: str = ""
    end_time: str = ""
    steps_logged: int = 0
    steps_backfilled: int = 0
    lost_seqs: list[int] = field(default_factory=list)
    reconnects: int = 0
    restarts: int = 0  # insole reboots during the capture (step numbers continue in the log)
    # sensor channel faults the insole's Status reported during the capture ("heel dead")
    sensor_faults: list[str] = field(default_factory=list)
    format: int = META_FORMAT


def utc_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def log_paths(directory: str | Path, side: str) -> tuple[Path, Path]:
    """(steps CSV, session JSON) for one side inside a capture directory."""
    d = Path(directory)
    return d / f"{side}.csv", d / f"{side}.json"


def write_meta(path: str | Path, meta: SessionMeta) -> None:
    """Write the session file atomically; a UsageError naming it when that fails."""
    safeio.write_text(path, json.dumps(asdict(meta), indent=2) + "\n")


def read_meta(path: str | Path) -> tuple[SessionMeta | None, list[LogProblem]]:
    """Read a session file; a missing or broken one gives None and a problem, not an error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, [LogProblem(str(path), 0, "session file missing")]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", 0)
        return None, [LogProblem(str(path), line, f"session file unreadable: {exc}")]
    if not isinstance(data, dict) or data.get("side") not in SIDES:
        return None, [LogProblem(str(path), 0, "session file lacks a valid 'side'")]
    known = {f.name for f in fields(SessionMeta)}
    try:
        meta = SessionMeta(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        return None, [LogProblem(str(path), 0, f"session file malformed: {exc}")]
    return meta, []


class StepLogWriter:
    """Append steps to ``<side>.csv``, one flushed row at a time."""

    def __init__(self, path: str | Path, side: str, overwrite: bool = False):
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}")
        self.path = Path(path)
        self.side = side
        self.rows = 0
        # unbuffered: each row goes to the operating system whole, by os.write
        self._f = open(self.path, "wb" if overwrite else "xb", buffering=0,
                       opener=lambda name, flags: os.open(name, flags, 0o666))
        self._size = 0
        try:
            self._append(_csv_line(LOG_COLUMNS))
        except OSError:
            # not even the header fits: leave no empty log behind
            self._f.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise

    def _append(self, line: str) -> None:
        data = memoryview(line.encode("utf-8"))
        fd = self._f.fileno()
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)  # no half row at the end
                os.lseek(fd, self._size, os.SEEK_SET)
            raise
        self._size += len(line.encode("utf-8"))

    def write(self, event: tuple, host_time: float, strike_corrected: bool = False) -> StepRow:
        """Write one step: ``event`` in EVENT_COLUMNS order, pattern as a number or name.
        An OSError (a full disk) leaves the log as it was before this row."""
        values = list(event)
        if isinstance(values[7], int):
            values[7] = PATTERN_NAMES[values[7]]
        row = StepRow(*values, host_time=round(host_time, 3), side=self.side,
                      strike_corrected=bool(strike_corrected))
        self._append(_csv_line(values + [f"{row.host_time:.3f}", self.side,
                                         int(row.strike_corrected)]))
        self.rows += 1
        return row

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        if not self._f.closed:
            try:
                os.fsync(self._f.fileno())
            finally:
                self._f.close()

    def __enter__(self) -> StepLogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _csv_line(cells) -> str:
    f = io.StringIO()
    csv.writer(f, lineterminator="\n").writerow(cells)
    return f.getvalue()


def _check_row(cells: list[str]) -> tuple[StepRow | None, str]:
    """Parse one row's cells; return (row, "") or (None, what is wrong)."""
    values: list = []
    for name, cell in zip(LOG_COLUMNS, cells, strict=True):
        cell = cell.strip()
        if name == "pattern":
            if cell not in PATTERN_NAMES:
                return None, f"pattern {cell[:20]!r} is not one of {', '.join(PATTERN_NAMES)}"
            values.append(cell)
        elif name == "strike_corrected":
            if cell not in ("0", "1"):
                return None, f"strike_corrected {cell[:20]!r} is not 0 or 1"
            values.append(cell == "1")
        elif name == "side":
            if cell not in SIDES:
                return None, f"side {cell[:20]!r} is not one of {', '.join(SIDES)}"
            values.append(cell)
        elif name == "host_time":
            try:
                t = float(cell)
            except ValueError:
                return None, f"host_time {cell[:20]!r} is not a number"
            if not 0 <= t < 1e11:
                return None, f"host_time {cell[:20]!r} is out of range"
            values.append(t)
        else:
            try:
                v = int(cell)
            except ValueError:
                return None, f"{name} {cell[:20]!r} is not an integer"
            top = _SHARE_MAX if name.startswith("share_") else _MS_LIMIT
            if not 0 <= v <= top:
                return None, f"{name} {v} is outside 0..{top}"
            values.append(v)
    row = StepRow(*values)
    if row.seq == 0:
        return None, "seq 0 is not a step (steps count from 1)"
    return row, ""


def read_steplog(path: str | Path) -> tuple[list[StepRow], list[LogProblem]]:
    """Read a capture log: (intact rows sorted by seq, problems).

    Every line that parses is kept. A damaged header is reported and the standard
    column order assumed. Raises StepLogError only when the file cannot be read.
    """
    spath = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise StepLogError(f"{spath}: cannot read: {exc.strerror or exc}") from None
    problems: list[LogProblem] = []
    rows: dict[int, StepRow] = {}
    if raw.startswith(b"\xef\xbb\xbf"):  # a spreadsheet's UTF-8 byte-order mark
        raw = raw[3:]
    lines = raw.split(b"\n")
    ends_cleanly = raw.endswith(b"\n")
    if ends_cleanly:
        lines.pop()  # the empty piece after the final newline
    header_seen = False
    old_layout = False
    for lineno, bline in enumerate(lines, start=1):
        last = lineno == len(lines)
        if b"\x00" in bline:
            problems.append(LogProblem(spath, lineno, "binary garbage (NUL bytes), line skipped"))
            continue
        try:
            text = bline.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(LogProblem(spath, lineno, "binary garbage (not UTF-8), line skipped"))
            continue
        text = text.rstrip("\r")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            cells = next(csv.reader(io.StringIO(text)), [])
        except csv.Error as exc:
            problems.append(LogProblem(spath, lineno, f"unreadable line ({exc}), line skipped"))
            continue
        if not header_seen:
            header_seen = True
            head = tuple(c.strip() for c in cells)
            if head in (LOG_COLUMNS, _OLD_COLUMNS):
                old_layout = head == _OLD_COLUMNS
                continue
            if cells and cells[0].strip() == "seq":
                problems.append(
                    LogProblem(spath, lineno, "header does not match the capture log columns")
                )
                continue
            problems.append(
                LogProblem(spath, lineno, "header missing or damaged; assuming standard columns")
            )
        if old_layout and len(cells) == len(_OLD_COLUMNS):
            cells = cells + ["0"]  # a log from before strike_corrected
        if len(cells) != len(LOG_COLUMNS):
            what = f"expected {len(LOG_COLUMNS)} columns, found {len(cells)}"
            if last and not ends_cleanly:
                what = f"truncated last line ({what})"
            problems.append(LogProblem(spath, lineno, what + ", line skipped"))
            continue
        row, err = _check_row(cells)
        if row is None:
            problems.append(LogProblem(spath, lineno, err + ", line skipped"))
            continue
        if row.seq in rows:
            problems.append(LogProblem(spath, lineno, f"duplicate seq {row.seq}, kept the first"))
            continue
        rows[row.seq] = row
    if not header_seen:
        problems.append(LogProblem(spath, 0, "empty log"))
    sides = {r.side for r in rows.values()}
    if len(sides) > 1:
        names = ", ".join(sorted(sides))
        problems.append(LogProblem(spath, 0, f"rows from several sides: {names}"))
    return [rows[s] for s in sorted(rows)], problems


def missing_seqs(rows: list[StepRow]) -> list[int]:
    """Sequence numbers absent between the first and last logged step."""
    have = {r.seq for r in rows}
    if not have:
        return []
    return [s for s in range(min(have), max(have) + 1) if s not in have]
