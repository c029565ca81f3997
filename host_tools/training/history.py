"""Training history: a local SQLite database of walks and exercise sessions.

Where: ``--db PATH``, else ``$INSOLE_HISTORY_DB``, else
``~/.local/share/insole/history.db`` (``$XDG_DATA_HOME`` is honoured).

Safety: every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``); if anything
fails part-way, or the process dies, SQLite rolls the transaction back and every
session stored earlier is untouched. The database runs in WAL mode, so readers (``insole
history`` while a training session is being saved) never block or see half a write.

Reading never writes: :func:`open_readonly` opens the file read-only and creates
nothing (a missing or empty file simply holds no sessions; only while a writer has its
write-ahead log open does SQLite use its shared-memory index beside it), so ``insole
history`` can show a database on a read-only disk or one another user owns. Only
storing a session (:func:`connect`) creates and migrates the file.

Schema versions (``PRAGMA user_version``), applied in order by :func:`connect`:
    1  sessions(id, started_at, kind, side, duration_s, source, summary JSON)
    2  the metrics that history plots become columns (reps, balance_s, cadence,
       cadence_cv, symmetry, arch_index), filled in from version-1 JSON; index on
       started_at
    3  content_hash: the SHA-256 of an imported walk's step logs, unique, so the same
       capture is stored once however often it is added
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

KINDS = ("walk", "heel-raises", "toe-scrunch", "balance", "slow-walk")
EXERCISE_KINDS = ("heel-raises", "toe-scrunch", "balance", "slow-walk")
METRICS = ("reps", "balance_s", "cadence", "cadence_cv", "symmetry", "arch_index")


class HistoryError(RuntimeError):
    """The database cannot be used (names the file and what is wrong)."""


class DuplicateSession(HistoryError):
    """The session's content is already stored (``existing`` is its id)."""

    def __init__(self, existing: int):
        super().__init__(f"already stored as session {existing}")
        self.existing = existing


def default_path() -> Path:
    env = os.environ.get("INSOLE_HISTORY_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "insole" / "history.db"


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            side TEXT NOT NULL DEFAULT '',
            duration_s REAL NOT NULL DEFAULT 0,
            source TEXT NOT NULL DEFAULT '',
            summary TEXT NOT NULL DEFAULT '{}'
        )"""
    )


def _v2(conn: sqlite3.Connection) -> None:
    for col in METRICS:
        kind = "INTEGER" if col == "reps" else "REAL"
        conn.execute(f"ALTER TABLE sessions ADD COLUMN {col} {kind}")
    conn.execute("CREATE INDEX sessions_started ON sessions(started_at)")
    rows = conn.execute("SELECT id, summary FROM sessions").fetchall()
    for sid, text in rows:
        try:
            summary = json.loads(text or "{}")
        except json.JSONDecodeError:
            summary = {}
        values = [_metric(summary, col) for col in METRICS]
        conn.execute(
            f"UPDATE sessions SET {', '.join(c + ' = ?' for c in METRICS)} WHERE id = ?",
            (*values, sid),
        )


def _v3(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE sessions ADD COLUMN content_hash TEXT")
    conn.execute("CREATE UNIQUE INDEX sessions_content ON sessions(content_hash) "
                 "WHERE content_hash IS NOT NULL")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]
SCHEMA_VERSION = len(MIGRATIONS)


def _metric(summary: dict, col: str):
    """A metric column's value from a session summary dict (None when absent)."""
    keys = {
        "reps": ("reps", "holds"),
        "balance_s": ("balance_s",),
        "cadence": ("cadence",),
        "cadence_cv": ("cadence_cv_pct", "cadence_cv"),
        "symmetry": ("symmetry_pct", "symmetry"),
        "arch_index": ("arch_index",),
    }[col]
    for k in keys:
        v = summary.get(k)
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            return int(v) if col == "reps" else float(v)
    return None


def connect(path: str | Path | None = None, *, upto: int | None = None) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database for writing; ``upto`` stops
    at a version (tests build an older schema with it)."""
    path = Path(path) if path is not None else default_path()
    if path.is_dir():
        raise HistoryError(f"{path}: is a directory; give the database file (e.g. "
                           f"{path / 'history.db'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise HistoryError(f"{path}: cannot open the history database: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, upto)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "readonly" in str(exc):
            raise HistoryError(f"{path}: the history database cannot be written "
                               f"(read-only): {exc}") from None
        raise HistoryError(f"{path}: not a usable history database: {exc}") from None
    return conn


def open_readonly(path: str | Path | None = None) -> sqlite3.Connection | None:
    """Open the database for reading only, creating and changing nothing; None when
    there is nothing to read (no file, an empty file, no sessions table yet)."""
    path = Path(path) if path is not None else default_path()
    if path.is_dir():
        raise HistoryError(f"{path}: is a directory; give the database file")
    try:
        if not path.exists() or path.stat().st_size == 0:
            return None
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read the history database: {exc}") from None
    uri = "file:" + urllib.parse.quote(str(path.resolve()))
    conn = None
    last: sqlite3.Error | None = None
    # With no write-ahead log beside the file every session is in the file itself, and
    # immutable=1 reads it creating nothing (no -shm index). A -wal file means a writer
    # is at work (or died): its commits are in the log, which only mode=ro reads.
    ro, frozen = "?mode=ro", "?mode=ro&immutable=1"
    wal = path.with_name(path.name + "-wal").exists()
    for flags in ((ro, frozen) if wal else (frozen, ro)):
        try:
            conn = sqlite3.connect(uri + flags, uri=True, timeout=10, isolation_level=None)
            version = schema_version(conn)
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            break
        except sqlite3.DatabaseError as exc:
            last = exc
            if conn is not None:
                conn.close()
            conn = None
    if conn is None:
        raise HistoryError(f"{path}: not a usable history database: {last}") from None
    if version > SCHEMA_VERSION:
        conn.close()
        raise HistoryError(f"{path}: not a usable history database: schema version "
                           f"{version} is newer than this program's {SCHEMA_VERSION}")
    if "sessions" not in tables:
        conn.close()
        return None
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> int:
    """Apply the missing migrations, each in its own transaction with its version."""
    target = SCHEMA_VERSION if upto is None else upto
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this program's {SCHEMA_VERSION}")
    while version < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) == version:  # another process may have migrated
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = schema_version(conn)
    return version


@dataclass
class Session:
    kind: str
    started_at: datetime
    duration_s: float = 0.0
    side: str = ""
    source: str = ""
    summary: dict = field(default_factory=dict)
    id: int | None = None
    content_hash: str | None = None  # imported walks: what makes two imports the same

    def metric(self, col: str):
        return _metric(self.summary, col)


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def add_session(conn: sqlite3.Connection, s: Session) -> int:
    """Store one session in one transaction; returns its id."""
    return add_sessions(conn, [s])[0]


def add_sessions(conn: sqlite3.Connection, sessions: Iterable[Session]) -> list[int]:
    """Store several sessions atomically: all of them or (on any error) none."""
    ids = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for s in sessions:
            if s.kind not in KINDS:
                raise ValueError(f"unknown session kind {s.kind!r}")
            if s.content_hash is not None:
                row = conn.execute("SELECT id FROM sessions WHERE content_hash = ?",
                                   (s.content_hash,)).fetchone()
                if row is not None:
                    raise DuplicateSession(int(row[0]))
            values = [s.metric(c) for c in METRICS]
            cur = conn.execute(
                "INSERT INTO sessions (started_at, kind, side, duration_s, source, summary, "
                "content_hash, " + ", ".join(METRICS) + ") VALUES (?, ?, ?, ?, ?, ?, ?"
                + ", ?" * len(METRICS) + ")",
                (_iso(s.started_at), s.kind, s.side, float(s.duration_s), s.source,
                 json.dumps(s.summary, sort_keys=True), s.content_hash, *values),
            )
            ids.append(int(cur.lastrowid))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return ids


def sessions(conn: sqlite3.Connection, since: datetime | None = None,
             kind: str | None = None) -> list[Session]:
    cols = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    hashed = "content_hash" in cols  # read-only views may show an older schema
    q = ("SELECT id, started_at, kind, side, duration_s, source, summary, "
         + ("content_hash" if hashed else "NULL") + " FROM sessions")
    where, args = [], []
    if since is not None:
        where.append("started_at >= ?")
        args.append(_iso(since))
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if where:
        q += " WHERE " + " AND ".join(where)
    out = []
    for sid, started, k, side, dur, source, summary, digest in conn.execute(
            q + " ORDER BY started_at, id", args):
        try:
            data = json.loads(summary or "{}")
        except json.JSONDecodeError:
            data = {}
        out.append(Session(k, datetime.fromisoformat(started), dur, side, source,
                           data if isinstance(data, dict) else {}, sid, digest))
    return out


def content_hash(files: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over (name, bytes) pairs in name order: the identity of a capture."""
    h = hashlib.sha256()
    for name, data in sorted(files):
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def session_json(s: Session) -> str:
    """A session as JSON, for keeping it when the database cannot take it."""
    return json.dumps({"kind": s.kind, "started_at": _iso(s.started_at),
                       "duration_s": s.duration_s, "side": s.side, "source": s.source,
                       "summary": s.summary, "content_hash": s.content_hash},
                      indent=2, sort_keys=True) + "\n"


def session_from_json(text: str) -> Session:
    """The inverse of :func:`session_json` (ValueError when it is not one)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        raise ValueError("not a saved session (no known 'kind')")
    try:
        return Session(data["kind"], datetime.fromisoformat(data["started_at"]),
                       float(data.get("duration_s", 0.0)), str(data.get("side", "")),
                       str(data.get("source", "")), dict(data.get("summary", {})),
                       content_hash=data.get("content_hash"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a saved session ({exc})") from None


# --------------------------------------------------------------- progress
@dataclass
class Period:
    """One day or week. A value is None / nan when the period has no session of the
    kind it comes from (no balance work: no balance time, not 0)."""

    start: date  # first day of the day / ISO week
    sessions: int = 0
    heel_raises: int | None = None
    toe_scrunches: int | None = None
    balance_s: float = math.nan
    slow_walk_cadence: float = math.nan  # mean over slow-walk exercise sessions
    slow_walk_on_target: float = math.nan  # mean % of their steps on the target pace
    cadence: float = math.nan  # mean over walks (captures), steps/min
    cadence_cv: float = math.nan  # mean within-walk CV, %
    symmetry: float = math.nan  # mean |SI| of two-insole walks, %
    arch_index: float = math.nan  # mean arch loading of walks, per-mille of stance load


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def periods(rows: list[Session], by: str = "day") -> list[Period]:
    """Aggregate sessions per local day or ISO week (Monday), oldest first. Walks
    (captures) and slow-walk exercise sessions are kept apart: a slow walk to a beat
    says nothing about someone's usual cadence."""
    groups: dict[date, list[Session]] = {}
    for s in rows:
        d = s.started_at.astimezone().date()
        if by == "week":
            d = d - timedelta(days=d.weekday())
        groups.setdefault(d, []).append(s)
    out = []
    for d in sorted(groups):
        g = groups[d]
        p = Period(d, len(g))
        kinds = {s.kind for s in g}
        if "heel-raises" in kinds:
            p.heel_raises = sum(s.metric("reps") or 0 for s in g if s.kind == "heel-raises")
        if "toe-scrunch" in kinds:
            p.toe_scrunches = sum(s.metric("reps") or 0 for s in g if s.kind == "toe-scrunch")
        if "balance" in kinds:
            p.balance_s = sum(s.metric("balance_s") or 0.0 for s in g if s.kind == "balance")
        slow = [s for s in g if s.kind == "slow-walk"]
        p.slow_walk_cadence = _nanmean([s.metric("cadence") for s in slow])
        p.slow_walk_on_target = _nanmean([s.summary.get("on_target_pct") for s in slow])
        walks = [s for s in g if s.kind == "walk"]
        p.cadence = _nanmean([s.metric("cadence") for s in walks])
        p.cadence_cv = _nanmean([s.metric("cadence_cv") for s in walks])
        p.symmetry = _nanmean([abs(v) for s in walks
                               if (v := s.metric("symmetry")) is not None])
        p.arch_index = _nanmean([s.metric("arch_index") for s in walks])
        out.append(p)
    return out


def streaks(days: Iterable[date], today: date | None = None) -> tuple[int, int]:
    """(current, longest) runs of consecutive days. The current streak counts up to
    today, or up to yesterday when today has no session yet."""
    ds = sorted(set(days))
    if not ds:
        return 0, 0
    longest = run = 1
    for a, b in zip(ds, ds[1:], strict=False):
        run = run + 1 if (b - a).days == 1 else 1
        longest = max(longest, run)
    today = today or date.today()
    current = 0
    day = today if today in ds else today - timedelta(days=1)
    present = set(ds)
    while day in present:
        current += 1
        day -= timedelta(days=1)
    return current, longest
