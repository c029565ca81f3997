"""`insole capture --sim TRACE --outage AT:SECONDS`: the virtual radio goes away while the
insole walks on, and the capture still logs exactly the steps `insole detect` finds on the
same trace, because the insole kept them in its flash journal and backfills them after the
reconnect (the whole 29-bit sequence numbers, far beyond the 16-bit BACKFILL's reach).

The walks are generated (tests/long_walk.py) and replayed at speed 0. The 40-minute walk
with a 30-minute outage takes about 30 s; the 10-hour walk with no central until its end
(36,000 s, about 32,000 steps and 96,000 events) takes about 2.5 minutes and is marked
long (`pytest --long`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import long_walk  # noqa: E402

from host_tools import cli  # noqa: E402
from host_tools.ble.steplog import read_meta, read_steplog  # noqa: E402
from host_tools.gait.tracefile import EVENT_COLUMNS, read_events  # noqa: E402


def _detect(trace: Path, tmp: Path) -> list[tuple]:
    out = tmp / "detected.csv"
    assert cli.main(["detect", str(trace), "--out", str(out)]) == 0
    return [tuple(r[c] for c in EVENT_COLUMNS) for r in read_events(out)]


def _capture_with_outage(tmp: Path, seconds: float, outage: str, seed: int, capsys):
    trace = tmp / "walk.csv"
    long_walk.write_csv(trace, long_walk.walk(seconds, seed=seed))
    want = _detect(trace, tmp)
    out = tmp / "cap"
    assert cli.main(["capture", "--sim", str(trace), "--speed", "0", "--outage", outage,
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows, problems = read_steplog(out / "left.csv")
    assert problems == []
    meta, meta_problems = read_meta(out / "left.json")
    assert meta_problems == []
    return want, [r.event_values() for r in rows], meta, text


def test_a_thirty_minute_outage_in_a_forty_minute_walk_loses_no_step(tmp_path, capsys):
    want, got, meta, text = _capture_with_outage(tmp_path, 2400, "120:1800", 7, capsys)
    assert len(want) > 2000
    assert got == want  # event for event, in order
    assert meta.lost_seqs == [] and meta.reconnects == 1 and meta.restarts == 0
    # most of the walk came by backfill: 30 of its 40 minutes
    assert meta.steps_backfilled > 0.7 * len(want)
    assert f"left: {len(want)} steps logged" in text and "no step missing" in text


@pytest.mark.long
def test_a_ten_hour_walk_with_no_central_until_its_end_loses_no_step(tmp_path, capsys):
    # the link is gone from the first sample to the end of the walk: every step is
    # in the journal only (about 32,000 steps, 96,000 events: beyond 16-bit numbers)
    want, got, meta, text = _capture_with_outage(tmp_path, 36000, "0:36000", 11, capsys)
    assert len(want) > 30000
    assert got == want
    assert meta.lost_seqs == [] and meta.steps_backfilled == len(want)
    assert "no step missing" in text


@pytest.mark.parametrize("value, needle", [
    ("120", "is not AT:SECONDS"),
    ("120:0", "not a length of time"),
    ("-1:10", "outside 0.."),
    ("x:10", "not a number"),
    ("10:nan", "not a finite number"),
])
def test_outage_argument_is_checked_in_one_line(value, needle, tmp_path, capsys):
    trace = tmp_path / "t.csv"
    long_walk.write_csv(trace, long_walk.walk(20, seed=1))
    argv = ["capture", "--sim", str(trace), "--out", str(tmp_path / "o"), f"--outage={value}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--outage" in err and needle in err, err
    assert not (tmp_path / "o").exists()


def test_outage_needs_the_virtual_radio(tmp_path, capsys):
    assert cli.main(["capture", "--out", str(tmp_path / "o"), "--outage", "10:20"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--outage" in err and "--sim" in err, err
