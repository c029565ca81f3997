"""The training-history database: migrations, transactions, concurrent readers."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from host_tools.training import history as H

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def _session(i: int, kind: str = "heel-raises", **summary) -> H.Session:
    summary = summary or {"reps": 10 + i}
    return H.Session(kind, T0 + timedelta(days=i), 60.0 + i, "left", "test", summary)


def test_migrates_an_empty_file(tmp_path):
    db = tmp_path / "h.db"
    db.write_bytes(b"")
    conn = H.connect(db)
    assert H.schema_version(conn) == H.SCHEMA_VERSION == 3
    cols = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    assert set(H.METRICS) <= cols
    assert H.sessions(conn) == []
    sid = H.add_session(conn, _session(0))
    assert [s.id for s in H.sessions(conn)] == [sid]


def test_creates_missing_directories_and_honours_the_environment(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "history.db"
    monkeypatch.setenv("INSOLE_HISTORY_DB", str(target))
    assert H.default_path() == target
    H.connect().close()
    assert target.exists()
    monkeypatch.delenv("INSOLE_HISTORY_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert H.default_path() == tmp_path / "xdg" / "insole" / "history.db"


def test_migrates_from_the_previous_schema_keeping_sessions(tmp_path):
    db = tmp_path / "h.db"
    old = H.connect(db, upto=1)
    assert H.schema_version(old) == 1
    rows = [
        ("2026-03-01T08:00:00+00:00", "heel-raises", json.dumps({"reps": 12})),
        ("2026-03-02T08:00:00+00:00", "balance", json.dumps({"holds": 3, "balance_s": 41.5})),
        ("2026-03-03T08:00:00+00:00", "walk", json.dumps(
            {"cadence": 104.2, "cadence_cv_pct": 2.5, "symmetry_pct": -3.0,
             "arch_index": 130.0})),
        ("2026-03-04T08:00:00+00:00", "walk", "not json"),
    ]
    old.executemany("INSERT INTO sessions (started_at, kind, summary) VALUES (?, ?, ?)", rows)
    old.close()
    conn = H.connect(db)
    assert H.schema_version(conn) == 3
    got = conn.execute(
        "SELECT kind, reps, balance_s, cadence, cadence_cv, symmetry, arch_index "
        "FROM sessions ORDER BY started_at").fetchall()
    assert got == [
        ("heel-raises", 12, None, None, None, None, None),
        ("balance", 3, 41.5, None, None, None, None),
        ("walk", None, None, 104.2, 2.5, -3.0, 130.0),
        ("walk", None, None, None, None, None, None),
    ]


def test_refuses_a_newer_schema_and_a_non_database(tmp_path):
    db = tmp_path / "h.db"
    conn = H.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(H.HistoryError, match="newer"):
        H.connect(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(H.HistoryError, match=str(junk)):
        H.connect(junk)


def test_a_failed_write_loses_nothing(tmp_path):
    conn = H.connect(tmp_path / "h.db")
    first = H.add_sessions(conn, [_session(0), _session(1)])
    with pytest.raises(ValueError):
        H.add_sessions(conn, [_session(2), H.Session("jogging", T0)])  # 2nd is bad
    with pytest.raises(TypeError):
        H.add_session(conn, _session(3, reps=object()))  # summary not JSON-able
    assert [s.id for s in H.sessions(conn)] == first
    assert H.add_session(conn, _session(4)) > max(first)  # still writable


CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from host_tools.training import history as H
from datetime import datetime, timezone
conn = H.connect({db!r})
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO sessions (started_at, kind) VALUES ('2026-04-01T00:00:00+00:00', 'walk')")
conn.execute("UPDATE sessions SET reps = -1")
print("mid-transaction", flush=True)
os._exit(3)  # the process dies before COMMIT
"""


def test_a_write_interrupted_mid_transaction_keeps_earlier_sessions(tmp_path):
    db = tmp_path / "h.db"
    conn = H.connect(db)
    ids = H.add_sessions(conn, [_session(i) for i in range(5)])
    conn.close()
    proc = subprocess.run([sys.executable, "-c", CRASH.format(root=str(ROOT), db=str(db))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "mid-transaction" in proc.stdout
    conn = H.connect(db)
    got = H.sessions(conn)
    assert [s.id for s in got] == ids
    assert [s.metric("reps") for s in got] == [10, 11, 12, 13, 14]
    assert conn.execute("SELECT count(*) FROM sessions WHERE reps = -1").fetchone()[0] == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    H.add_session(conn, _session(9))  # the lock died with the process


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from host_tools.training import history as H
from datetime import datetime, timedelta, timezone
conn = H.connect({db!r})
t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
for i in range({n}):
    H.add_sessions(conn, [H.Session("toe-scrunch", t0 + timedelta(hours=i), 30.0, "right",
                                    "w", {{"reps": i, "pad": "x" * 2000}}) for _ in range(3)])
print("done", flush=True)
"""


def test_concurrent_readers_see_whole_transactions(tmp_path):
    db = tmp_path / "h.db"
    H.connect(db).close()
    n = 40
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), db=str(db), n=n)],
        stdout=subprocess.PIPE, text=True)
    errors: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(3)]

    def reader(k: int) -> None:
        try:
            conn = H.connect(db)
            done = False
            while not done:
                done = writer.poll() is not None  # one more read after the writer ends
                rows = H.sessions(conn, kind="toe-scrunch")
                # each write adds three sessions in one transaction: never a part
                assert len(rows) % 3 == 0
                assert all(len(r.summary["pad"]) == 2000 for r in rows)
                seen[k].append(len(rows))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    out, _ = writer.communicate(timeout=120)
    for t in threads:
        t.join(timeout=60)
    assert writer.returncode == 0 and "done" in out
    assert not errors, errors
    for counts in seen:
        assert counts == sorted(counts)  # readers never go back in time
        assert counts[-1] == 3 * n
    # the readers really did overlap the writer: some saw a partly filled table
    assert any(0 < c < 3 * n for counts in seen for c in counts)
    conn = H.connect(db)
    assert len(H.sessions(conn)) == 3 * n


def test_periods_and_streaks():
    rows = [
        _session(0, "heel-raises", reps=10),
        _session(0, "balance", holds=2, balance_s=30.0),
        _session(1, "toe-scrunch", reps=15),
        _session(1, "walk", cadence=100.0, cadence_cv_pct=2.0, symmetry_pct=-4.0,
                 arch_index=120.0),
        _session(1, "slow-walk", cadence=90.0, cadence_cv_pct=4.0, arch_index=140.0),
        _session(3, "heel-raises", reps=12),
    ]
    days = H.periods(rows)
    assert [p.sessions for p in days] == [2, 3, 1]
    assert days[0].heel_raises == 10 and days[0].balance_s == 30.0
    assert days[1].toe_scrunches == 15
    # walks and the slow-walk exercise are kept apart
    assert days[1].cadence == pytest.approx(100.0)
    assert days[1].cadence_cv == pytest.approx(2.0)
    assert days[1].symmetry == pytest.approx(4.0)
    assert days[1].arch_index == pytest.approx(120.0)
    assert days[1].slow_walk_cadence == pytest.approx(90.0)
    # no session of a kind in a period: no value, not 0
    assert days[1].heel_raises is None and math.isnan(days[1].balance_s)
    assert days[0].toe_scrunches is None and math.isnan(days[0].cadence)
    weeks = H.periods(rows, by="week")
    assert sum(p.sessions for p in weeks) == 6
    assert all(p.start.weekday() == 0 for p in weeks)
    d0 = date(2026, 3, 1)
    run = [d0 + timedelta(days=i) for i in (0, 1, 2, 5, 6, 7, 8, 10)]
    assert H.streaks(run, today=date(2026, 3, 11)) == (1, 4)
    assert H.streaks(run, today=date(2026, 3, 12)) == (1, 4)  # today not trained yet
    assert H.streaks(run, today=date(2026, 3, 13)) == (0, 4)
    assert H.streaks([], today=d0) == (0, 0)


def test_sqlite_rolls_back_an_open_transaction_on_close(tmp_path):
    # the property the crash test relies on, checked without a subprocess
    conn = H.connect(tmp_path / "h.db")
    H.add_session(conn, _session(0))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM sessions")
    conn.close()
    assert len(H.sessions(H.connect(tmp_path / "h.db"))) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
