"""`insole detect`: trace parsing, both engines, events CSV, clear errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from host_tools.cli import main
from host_tools.cli.bench import DATA as WALK
from host_tools.gait import tracefile


def test_both_engines_write_the_same_events_csv(tmp_path):
    out_mp = tmp_path / "mp.csv"
    out_cp = tmp_path / "cp.csv"
    assert main(["detect", str(WALK), "--out", str(out_mp)]) == 0
    assert main(["detect", str(WALK), "--engine", "cpython", "--out", str(out_cp)]) == 0
    assert out_mp.read_text() == out_cp.read_text()
    rows = list(csv.DictReader(out_mp.open()))
    assert tuple(rows[0].keys()) == tracefile.EVENT_COLUMNS
    assert len(rows) > 30
    assert {r["pattern"] for r in rows} <= {"rear", "mid", "fore", "unknown"}
    assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))


def test_rate_option_overrides_the_file(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    main(["detect", str(WALK), "--engine", "cpython", "--out", str(a)])
    main(["detect", str(WALK), "--engine", "cpython", "--rate", "200", "--out", str(b)])
    ra, rb = tracefile.read_events(a), tracefile.read_events(b)
    # same samples read as 200 Hz: every time about halves (the fixed 10 ms lead and
    # the detector's constants in ms keep it from being exact, and may add or drop a
    # step where the walk is ambiguous)
    assert abs(len(ra) - len(rb)) <= 1
    halved = np.asarray([int(x["strike_ms"]) / 2 for x in ra])
    near = [np.abs(halved - int(y["strike_ms"])).min() for y in rb]
    assert sum(d <= 12 for d in near) >= len(rb) - 1


def test_mains_option_sets_the_detectors_mains(tmp_path, capsys):
    from host_tools.gait import engine, faultbench

    samples = faultbench.disturb(faultbench.looped_walk(100, 60.0), 100, "mains", seed=3,
                                 mains_hz=60.2)
    p = tmp_path / "hum.csv"
    tracefile.write_trace(p, samples, 100)
    out50, out60 = tmp_path / "50.csv", tmp_path / "60.csv"
    cpython = ["detect", str(p), "--engine", "cpython"]
    assert main([*cpython, "--out", str(out50)]) == 0
    assert main([*cpython, "--mains", "60", "--out", str(out60)]) == 0
    assert "60 Hz mains" in capsys.readouterr().err
    want = engine.step_summaries(engine.run_cpython(samples, 100, mains_hz=60))
    assert [int(r["strike_ms"]) for r in tracefile.read_events(out60)] == [s[1] for s in want]
    assert out50.read_text() != out60.read_text()
    assert main(["detect", str(p), "--mains", "55"]) == 2
    assert "--mains" in capsys.readouterr().err


def test_extra_columns_and_comments_are_ignored(tmp_path):
    src = tracefile.read_trace(WALK)
    p = tmp_path / "t.csv"
    with p.open("w") as f:
        f.write("# recorded somewhere\n# rate_hz=100\nt_ms,forefoot,heel,x,arch\n")
        for i, (h, a, fo) in enumerate(src.samples.tolist()):
            f.write(f"{i * 10},{fo},{h},7,{a}\n")
    out = tmp_path / "e.csv"
    ref = tmp_path / "r.csv"
    assert main(["detect", str(p), "--engine", "cpython", "--out", str(out)]) == 0
    main(["detect", str(WALK), "--engine", "cpython", "--out", str(ref)])
    assert out.read_text() == ref.read_text()


@pytest.mark.parametrize(
    "body, where, what",
    [
        ("heel,arch,forefoot\n1,2,3\n4,x,6\n", ":3:", "arch value 'x' is not an integer"),
        ("heel,arch,forefoot\n1,2,70000\n", ":2:", "outside 0..65535"),
        ("heel,arch,forefoot\n1,2,-1\n", ":2:", "outside 0..65535"),
        ("heel,arch,forefoot\n1,2,3\n4,5\n", ":3:", "expected 3 columns, found 2"),
        ("heel,arch,toes\n1,2,3\n", ":1:", "missing forefoot"),
        ("# rate_hz=fast\nheel,arch,forefoot\n", ":1:", "not a whole number"),
        ("# rate_hz=5000\nheel,arch,forefoot\n", ":1:", "outside 50..1000"),
        ("# only comments\n", "", "no header line"),
    ],
)
def test_malformed_trace_names_the_line_and_exits_2(tmp_path, capsys, body, where, what):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    assert main(["detect", str(p), "--engine", "cpython"]) == 2
    err = capsys.readouterr().err
    assert f"{p}{where}" in err and what in err, err


def test_binary_garbage_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "garbage.csv"
    p.write_bytes(b"heel,arch,forefoot\n1,2,3\n\xff\xfe\x00\x81junk\n")
    assert main(["detect", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{p}:3:" in err and "not text" in err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "host_tools.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for cmd in ("detect", "evaluate", "bench"):
        assert cmd in out.stdout
