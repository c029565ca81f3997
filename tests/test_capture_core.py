"""The capture layer above the link, driven through an in-memory insole (no radio)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_insole import FakeInsole, FakeLink, same_steps  # noqa: E402
from walk_synth import RATE_HZ, make_steps, synth_trace  # noqa: E402

from host_tools.ble.capture import (  # noqa: E402
    Backoff,
    CaptureError,
    InsoleSession,
    Progress,
    SeqTracker,
    capture,
    seq_ranges,
)
from host_tools.ble.steplog import read_meta, read_steplog  # noqa: E402
from host_tools.gait import engine  # noqa: E402


@pytest.fixture(scope="module")
def summaries():
    trace = synth_trace(make_steps([1100.0, 1080.0, 1130.0] * 20))
    return [tuple(s) for s in engine.step_summaries(engine.run_cpython(trace, RATE_HZ))]


def run_capture(tmp_path, insoles, links=None, drop_at=None, drop_for_s=0.3, side=None,
                stop_after=None, **session_kw):
    async def main():
        ls = links or [FakeLink(i) for i in insoles]
        sessions = [InsoleSession(lk, tmp_path, side=side, backoff=Backoff(0.05, 0.2),
                                  backfill_wait=0.1, **session_kw) for lk in ls]
        stop = asyncio.Event()
        walks = asyncio.gather(*(i.walk(0.01, drop_at, drop_for_s) for i in insoles))
        out = io.StringIO()
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, stop.set)
            await capture(sessions, stop, Progress(sessions, out, plain_interval=0.05))
            walks.cancel()
        else:
            await capture(sessions, stop, Progress(sessions, out, plain_interval=0.05),
                          until=walks, drain_s=2.0)
        return sessions, out.getvalue()

    return asyncio.run(main())


def test_clean_capture_logs_every_step(tmp_path, summaries):
    insole = FakeInsole(summaries)
    (s,), out = run_capture(tmp_path, [insole])
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == []
    assert same_steps([r.event_values() for r in rows], summaries)
    assert all(r.side == "left" for r in rows)
    meta, mp = read_meta(tmp_path / "left.json")
    assert mp == [] and meta.steps_logged == len(summaries) and meta.lost_seqs == []
    assert meta.firmware_version == "0.1.0" and meta.sample_rate_hz == 100
    assert meta.device_address == "00:00:00:00:00:01" and meta.end_time
    assert s.stats.reconnects == 0 and "no step missing" in s.summary()
    assert "left:" in out and "steps" in out and "cadence" in out


def test_drops_reconnect_and_backfill_leave_no_gap(tmp_path, summaries):
    insole = FakeInsole(summaries)
    (s,), out = run_capture(tmp_path, [insole], drop_at={10, 30, 50}, drop_for_s=0.08)
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == []
    assert same_steps([r.event_values() for r in rows], summaries)
    assert s.stats.reconnects == 3
    assert s.stats.backfilled > 0  # steps made while the link was down came by backfill
    assert insole.backfills  # and the session asked for them
    meta, _ = read_meta(tmp_path / "left.json")
    assert meta.lost_seqs == [] and meta.reconnects == 3
    assert "recovered by backfill" in s.summary()


def test_events_gone_from_the_ring_are_reported_lost(tmp_path, summaries):
    # a ring of 9 events holds 3 steps: a long drop loses the older ones for good
    insole = FakeInsole(summaries, ring=9)
    (s,), _ = run_capture(tmp_path, [insole], drop_at={20}, drop_for_s=0.1)
    rows, _ = read_steplog(tmp_path / "left.csv")
    meta, _ = read_meta(tmp_path / "left.json")
    logged = {r.seq for r in rows}
    assert meta.lost_seqs and set(meta.lost_seqs).isdisjoint(logged)
    assert logged | set(meta.lost_seqs) == set(range(1, len(summaries) + 1))
    assert "NOT recovered" in s.summary() and seq_ranges(meta.lost_seqs) in s.summary()


def test_without_pairing_capture_continues_and_reports_losses(tmp_path, summaries):
    insole = FakeInsole(summaries)
    link = FakeLink(insole, secure_ok=False)
    (s,), out = run_capture(tmp_path, [insole], links=[link], drop_at={15}, drop_for_s=0.15)
    rows, _ = read_steplog(tmp_path / "left.csv")
    assert insole.backfills == []
    assert "pairing failed" in out
    meta, _ = read_meta(tmp_path / "left.json")
    assert len(rows) + len(meta.lost_seqs) == len(summaries) and meta.lost_seqs


def test_two_insoles_are_kept_apart(tmp_path, summaries):
    left = FakeInsole(summaries, side="left")
    right = FakeInsole(summaries[:-3], side="right")
    sessions, out = run_capture(tmp_path, [left, right], drop_at={12})
    for side, expect in (("left", summaries), ("right", summaries[:-3])):
        rows, problems = read_steplog(tmp_path / f"{side}.csv")
        assert problems == [] and same_steps([r.event_values() for r in rows], expect)
        assert {r.side for r in rows} == {side}
        assert read_meta(tmp_path / f"{side}.json")[0].side == side
    assert " left:" in out and "right:" in out


def test_stop_mid_walk_closes_files_cleanly(tmp_path, summaries):
    insole = FakeInsole(summaries)
    (s,), _ = run_capture(tmp_path, [insole], stop_after=0.15)
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == [] and 0 < len(rows) < len(summaries)
    meta = json.loads((tmp_path / "left.json").read_text())
    assert meta["end_time"] and meta["steps_logged"] == len(rows)
    assert s.writer._f.closed


def test_existing_log_is_not_overwritten(tmp_path, summaries):
    (tmp_path / "left.csv").write_text("precious\n")
    insole = FakeInsole(summaries[:3])
    with pytest.raises(CaptureError, match="left.csv exists"):
        run_capture(tmp_path, [insole])
    assert (tmp_path / "left.csv").read_text() == "precious\n"
    (s,), _ = run_capture(tmp_path, [FakeInsole(summaries[:3])], overwrite=True)
    assert len(read_steplog(tmp_path / "left.csv")[0]) == 3


def test_side_override_is_logged(tmp_path, summaries):
    insole = FakeInsole(summaries[:4], side="left")
    (s,), out = run_capture(tmp_path, [insole], side="right")
    assert (tmp_path / "right.csv").exists() and not (tmp_path / "left.csv").exists()
    assert "reports side 'left'" in out


def test_seq_tracker():
    t = SeqTracker()
    assert t.add(5) and t.missing == set()
    assert t.add(8) and t.missing == {6, 7}
    assert not t.add(8)
    assert t.add(2) and t.missing == {3, 4, 6, 7}
    assert t.add(6) and t.recovered == 1 and t.first_missing() == 3
    t.expect_up_to(10)
    assert t.missing == {3, 4, 7, 9, 10} and t.highest == 10
    assert seq_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_backoff_doubles_to_a_limit_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_insole_restart_continues_the_log(tmp_path, summaries):
    # 20 steps, then the insole reboots (link lost, ring emptied, numbers from 1 again)
    first, second = summaries[:20], summaries[:15]
    insole = FakeInsole(first)

    async def scenario(session, link):
        while not link.subs:
            await asyncio.sleep(0.005)
        for s in first:
            insole.make_step(s)
            await asyncio.sleep(0.005)
        link.drop(0.1)
        insole.boot()
        for s in second:
            insole.make_step(s)
            await asyncio.sleep(0.005)

    async def main():
        link = FakeLink(insole)
        session = InsoleSession(link, tmp_path, backoff=Backoff(0.05, 0.1), backfill_wait=0.1)
        stop = asyncio.Event()
        await capture([session], stop, until=scenario(session, link), drain_s=2.0)
        return session

    session = asyncio.run(main())
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == [] and [r.seq for r in rows] == list(range(1, 36))
    renumbered = [(s[0] + 20,) + tuple(s[1:]) for s in second]
    assert same_steps([r.event_values() for r in rows], first + renumbered)
    meta, _ = read_meta(tmp_path / "left.json")
    assert meta.restarts == 1 and meta.lost_seqs == []
    assert "restarted" in session.summary()


def test_a_failing_source_stops_the_capture_and_is_reported(tmp_path, summaries):
    insole = FakeInsole(summaries)

    async def dies():
        while insole.link is None or not insole.link.subs:
            await asyncio.sleep(0.005)
        insole.make_step(summaries[0])
        await asyncio.sleep(0.05)
        raise RuntimeError("virtual insole died")

    async def main():
        session = InsoleSession(FakeLink(insole), tmp_path, backoff=Backoff(0.05, 0.1))
        with pytest.raises(RuntimeError, match="died"):
            await asyncio.wait_for(capture([session], asyncio.Event(), until=dies()), 10)
        return session

    session = asyncio.run(main())
    assert session.writer._f.closed and session.stats.state == "done"
    assert len(read_steplog(tmp_path / "left.csv")[0]) == 1


def test_sensor_faults_in_status_show_on_the_live_line_summary_and_session(tmp_path, summaries):
    import struct as _struct

    insole = FakeInsole(summaries, side="L")
    session = InsoleSession(FakeLink(insole), tmp_path, backoff=Backoff(0.05, 0.1))
    # Status format 2 (docs/PROTOCOL.md): heel dead (1), forefoot noisy (4 << 8)
    faulty = _struct.pack("<BBHIIHHHBB", 2, 0, 100, 12, 30, 0, 0, 0x0401, 190, 0)
    session._handle("status", faulty, 0.0)
    assert session.sensor_faults_now() == "heel dead, fore noisy"
    assert "SENSOR heel dead, fore noisy" in session.progress()
    assert "!" in session.progress(width=40)  # the shortest forms still say so
    assert any("sensor faults reported: heel dead, fore noisy" in line
               for line in session.summary().splitlines())
    assert "insole config --mains 60" in session.summary()  # what noisy may mean
    clean = _struct.pack("<BBHIIHHHBB", 2, 0, 100, 13, 31, 0, 0, 0, 190, 0)
    session._handle("status", clean, 0.1)
    assert "SENSOR" not in session.progress()
    assert session.faults_seen == ["heel dead", "fore noisy"]  # the session keeps the record
