"""`insole history` only reads; captures stored once; sessions kept when the database
cannot take them; walks apart from the slow-walk exercise; date axes for short spans."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from host_tools.ble.steplog import StepLogWriter
from host_tools.cli import main
from host_tools.gait import engine
from host_tools.training import exgen, history

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)


def _walk(d: Path) -> Path:
    d.mkdir()
    for side, stride in (("left", 1100.0), ("right", 1150.0)):
        tr = exgen.slow_walk([stride] * 20, noise=60, seed=2)
        steps = engine.step_summaries(engine.run_cpython(tr.samples, tr.rate_hz))
        with StepLogWriter(d / f"{side}.csv", side) as w:
            for i, row in enumerate(steps):
                w.write(row, 1_700_000_000 + i)
    return d


def test_viewing_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "h.db"
    assert main(["history", "--db", str(missing)]) == 0
    assert "no sessions" in capsys.readouterr().out
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert main(["history", "--db", str(empty)]) == 0
    assert empty.read_bytes() == b"" and sorted(os.listdir(tmp_path)) == ["empty.db"]


def test_viewing_changes_nothing_in_an_existing_database(tmp_path, capsys):
    db = tmp_path / "h.db"
    conn = history.connect(db)
    history.add_session(conn, history.Session("heel-raises", NOW, 60, "left", "t",
                                              {"reps": 9}))
    conn.close()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert main(["history", "--db", str(db)]) == 0
    assert "9" in capsys.readouterr().out
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert after == before


def test_an_older_schema_is_shown_without_migrating(tmp_path, capsys):
    db = tmp_path / "old.db"
    old = history.connect(db, upto=1)
    old.execute("INSERT INTO sessions (started_at, kind, summary) VALUES (?, ?, ?)",
                (NOW.isoformat(), "toe-scrunch", '{"reps": 17}'))
    old.close()
    assert main(["history", "--db", str(db)]) == 0
    assert " 17 " in capsys.readouterr().out
    check = history.open_readonly(db)
    assert history.schema_version(check) == 1  # still the old schema
    check.close()


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="needs POSIX users")
def test_a_read_only_database_can_be_viewed(tmp_path):
    """As a user who may not write the file or its directory (root writes anything, so
    as root the check runs as the unprivileged 'nobody')."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop to an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="insole-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "h.db"
        conn = history.connect(db)
        history.add_session(conn, history.Session("balance", NOW, 60, "left", "t",
                                                  {"holds": 2, "balance_s": 31.5}))
        conn.close()
        db.chmod(0o444)
        folder.chmod(0o555)
        cmd = [sys.executable, "-m", "host_tools.cli", "history", "--db", str(db)]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/",
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert done.returncode == 0, done.stderr
        assert "31.5" in done.stdout
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_a_capture_is_stored_once(tmp_path, capsys):
    db = tmp_path / "h.db"
    walk = _walk(tmp_path / "walk")
    assert main(["history", "--db", str(db), "--add-capture", str(walk)]) == 0
    assert "stored walk" in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(walk, copy)  # the same logs under another name
    for d in (walk, copy):
        assert main(["history", "--db", str(db), "--add-capture", str(d)]) == 0
        assert "already stored as session 1 (same content); nothing added" in \
            capsys.readouterr().out
    conn = history.connect(db)
    assert [s.kind for s in history.sessions(conn)] == ["walk"]


def test_a_session_the_database_cannot_take_is_kept_and_added_later(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "ts.csv"
    exgen.write(exgen.toe_scrunches(reps=4), str(trace))
    blocked = tmp_path / "afile"
    blocked.write_text("not a directory\n")
    assert main(["train", "toe-scrunch", "--sim", str(trace), "--db",
                 str(blocked / "h.db")]) == 2
    err = capsys.readouterr().err
    assert "session not saved" in err and "add it later with" in err
    (kept,) = tmp_path.glob("insole-session-*-toe-scrunch.json")
    db = tmp_path / "h.db"
    assert main(["history", "--db", str(db), "--add-session", str(kept)]) == 0
    assert "stored toe-scrunch session" in capsys.readouterr().out
    (s,) = history.sessions(history.connect(db))
    assert s.kind == "toe-scrunch" and s.metric("reps") == 4


def test_walks_and_slow_walk_sessions_are_apart_and_gaps_are_blank(tmp_path, capsys):
    db = tmp_path / "h.db"
    conn = history.connect(db)
    history.add_sessions(conn, [
        history.Session("walk", NOW, 60, "left+right", "c", {"cadence": 110.0}),
        history.Session("slow-walk", NOW, 60, "left", "t",
                        {"cadence": 80.0, "on_target_pct": 75.0}),
        history.Session("heel-raises", NOW - timedelta(days=1), 60, "left", "t",
                        {"reps": 12}),
    ])
    conn.close()
    assert main(["history", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split("  ")
    head = [h.strip() for h in head if h.strip()]
    rows = {line.split()[0]: line.split() for line in lines[2:] if line[:1].isdigit()}
    today = NOW.astimezone().date().isoformat()
    yesterday = (NOW.astimezone().date() - timedelta(days=1)).isoformat()
    t = dict(zip(head, rows[today], strict=True))
    assert t["cadence"] == "110.0" and t["slow walk /min"] == "80.0" and t["on pace %"] == "75"
    assert t["balance s"] == "-" and t["heel raises"] == "-"
    y = dict(zip(head, rows[yesterday], strict=True))
    assert y["heel raises"] == "12" and y["balance s"] == "-" and y["cadence"] == "-"


@pytest.mark.parametrize("days", [1, 3])
def test_a_short_span_gets_a_short_date_axis(days):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from host_tools.cli.history import exercise_figure, walking_figure

    rows = [history.Session("walk", NOW - timedelta(days=d), 60, "left", "c",
                            {"cadence": 100.0 + d}) for d in range(days)]
    periods = history.periods(rows)
    for make in (exercise_figure, walking_figure):
        fig = make(periods, "day", plt)
        lo, hi = (mdates.num2date(x) for x in fig.axes[-1].get_xlim())
        plt.close(fig)
        assert 6 <= (hi - lo).days <= 10  # about a week, not years
