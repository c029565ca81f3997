"""`insole train` and `insole history` end to end on generated traces."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from host_tools.ble.steplog import StepLogWriter
from host_tools.cli import main
from host_tools.gait import engine
from host_tools.training import exgen, history


@pytest.fixture
def traces(tmp_path):
    out = {}
    for kind, tr in (("heel-raises", exgen.heel_raises(depths=[1, 1, 0.5, 1, 1, 1])),
                     ("toe-scrunch", exgen.toe_scrunches(reps=7)),
                     ("balance", exgen.balance(hold_list=[6000, 9000])),
                     ("slow-walk", exgen.slow_walk([1300.0] * 10 + [1000.0] * 5))):
        path = tmp_path / f"{kind}.csv"
        exgen.write(tr, str(path))
        out[kind] = path
    return out


def test_train_heel_raises_counts_prints_and_stores(traces, tmp_path, capsys):
    db = tmp_path / "h.db"
    assert main(["train", "heel-raises", "--sim", str(traces["heel-raises"]), "--db", str(db),
                 "--target", "5"]) == 0
    out = capsys.readouterr().out
    assert "Rise onto the balls of your feet" in out  # the prompt
    assert out.count("  rep ") == 5 and "partial raise (5" in out
    assert "5 of 5 reps: target reached" in out
    (s,) = history.sessions(history.connect(db))
    assert s.kind == "heel-raises" and s.metric("reps") == 5
    assert s.summary["partials"] == 1 and abs(s.summary["mean_hold_s"] - 1.0) < 0.05


@pytest.mark.parametrize("engine_name", ["cpython", "micropython"])
def test_train_every_exercise_on_both_engines(traces, tmp_path, capsys, engine_name):
    db = tmp_path / "h.db"
    for kind, path in traces.items():
        args = ["train", kind, "--sim", str(path), "--db", str(db), "--engine", engine_name]
        if kind == "slow-walk":
            args += ["--target", "92"]
        assert main(args) == 0
    out = capsys.readouterr().out
    rows = {s.kind: s for s in history.sessions(history.connect(db))}
    assert rows["heel-raises"].metric("reps") == 5
    assert rows["toe-scrunch"].metric("reps") == 7
    assert rows["balance"].summary["holds"] == 2
    assert abs(rows["balance"].metric("balance_s") - 15.0) < 0.1
    walk = rows["slow-walk"].summary
    assert walk["steps"] == 15 and walk["heel_strike_pct"] == 100.0
    assert 60 < walk["on_target_pct"] < 70  # 9 of 14 timed strides at 92.3/min
    cues = [line.split()[3] for line in out.splitlines() if line.startswith("  step ")]
    assert cues[1:10] == ["good"] * 9
    assert cues[11:] == ["slower"] * 4  # 1000 ms strides: 120/min, too fast


def test_train_rejects_bad_input_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("# rate_hz=100\nheel,arch,forefoot\n1,2,3\n4,x,6\n")
    assert main(["train", "balance", "--sim", str(bad), "--no-save"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4" in err and "arch" in err
    assert main(["train", "slow-walk", "--sim", str(bad), "--target", "300"]) == 2
    assert "cadence" in capsys.readouterr().err
    assert main(["train", "heel-raises", "--sim", str(tmp_path / "none.csv")]) == 2


def test_a_session_that_cannot_be_saved_is_an_error_not_a_crash(traces, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the session is kept instead
    db = tmp_path / "h.db"
    db.write_bytes(b"garbage" * 200)
    assert main(["train", "toe-scrunch", "--sim", str(traces["toe-scrunch"]),
                 "--db", str(db)]) == 2
    cap = capsys.readouterr()
    assert "scrunch   7" in cap.out  # the session itself ran and was shown
    assert "not saved" in cap.err and str(db) in cap.err
    (kept,) = tmp_path.glob("insole-session-*-toe-scrunch.json")
    assert f"kept in {kept}" in cap.err


def _capture_dir(tmp_path: Path) -> Path:
    d = tmp_path / "walk"
    d.mkdir()
    for side, stride in (("left", 1100.0), ("right", 1150.0)):
        tr = exgen.slow_walk([stride] * 30, noise=80, seed=3)
        steps = engine.step_summaries(engine.run_cpython(tr.samples, tr.rate_hz))
        with StepLogWriter(d / f"{side}.csv", side) as w:
            for i, row in enumerate(steps):
                w.write(row, 1_700_000_000 + i)
    return d


def test_history_table_streaks_plots_html_and_capture_import(traces, tmp_path, capsys):
    db = tmp_path / "h.db"
    conn = history.connect(db)
    from datetime import datetime, timedelta, timezone

    today = datetime.now(timezone.utc).replace(hour=12)
    history.add_sessions(conn, [
        history.Session("heel-raises", today - timedelta(days=d), 60, "left", "t",
                        {"reps": 10 + d}) for d in (0, 1, 2, 4)
    ] + [history.Session("balance", today - timedelta(days=1), 60, "left", "t",
                         {"holds": 2, "balance_s": 25.5})])
    conn.close()
    cap = _capture_dir(tmp_path)
    assert main(["history", "--db", str(db), "--add-capture", str(cap),
                 "--at", (today - timedelta(days=2)).isoformat(),
                 "--plots", str(tmp_path / "plots"), "--html", str(tmp_path / "h.html")]) == 0
    out = capsys.readouterr().out
    assert "stored walk" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("period"))
    assert "heel raises" in header and "arch" in header
    assert "streak: 3 day(s) now, longest 3 day(s)" in out
    walk = [s for s in history.sessions(history.connect(db)) if s.kind == "walk"][0]
    assert walk.side == "left+right"
    assert 100 < walk.metric("cadence") < 112  # 1100 / 1150 ms strides: 109 / 104 per min
    assert walk.metric("symmetry") is not None and math.isfinite(walk.metric("symmetry"))
    for name in ("history_exercise.png", "history_walking.png"):
        p = tmp_path / "plots" / name
        assert p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "h.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "25.5" in page
    assert main(["history", "--db", str(db), "--by", "week"]) == 0
    assert "week of" in capsys.readouterr().out


def test_history_on_an_empty_database_and_bad_options(tmp_path, capsys):
    assert main(["history", "--db", str(tmp_path / "e.db")]) == 0
    assert "no sessions" in capsys.readouterr().out
    assert main(["history", "--db", str(tmp_path / "e.db"), "--at", "2026-01-01"]) == 2
    assert main(["history", "--db", str(tmp_path / "e.db"),
                 "--add-capture", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
