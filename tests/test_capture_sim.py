"""Capture from virtual insoles: the unchanged firmware in the micropython binary on
bumble's in-process virtual radio (host_tools/vboard/), through the same capture code
a real insole uses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_tools import cli
from host_tools.ble.steplog import read_meta, read_steplog
from host_tools.gait.tracefile import EVENT_COLUMNS, read_events, read_trace, write_trace

ROOT = Path(__file__).resolve().parent.parent
LEFT = ROOT / "host_tools" / "data" / "walk_left.csv"
RIGHT = ROOT / "host_tools" / "data" / "walk_right.csv"


def detect(trace: Path, tmp: Path) -> list[tuple]:
    """`insole detect TRACE --out EVENTS.csv`, as event tuples."""
    out = tmp / f"{trace.stem}.events.csv"
    assert cli.main(["detect", str(trace), "--out", str(out)]) == 0
    return [tuple(r[c] for c in EVENT_COLUMNS) for r in read_events(out)]


def captured(path: Path) -> list[tuple]:
    rows, problems = read_steplog(path)
    assert problems == []
    return [r.event_values() for r in rows]


def test_both_feet_capture_equals_detect_and_reports(tmp_path, capsys):
    out = tmp_path / "cap"
    assert cli.main(["capture", "--sim", f"{LEFT},{RIGHT}", "--speed", "0",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "left: 47 steps logged" in text and "right: 47 steps logged" in text
    for side, trace in (("left", LEFT), ("right", RIGHT)):
        want = detect(trace, tmp_path)
        assert len(want) == 47
        assert captured(out / f"{side}.csv") == want  # event for event
        rows, _ = read_steplog(out / f"{side}.csv")
        assert {r.side for r in rows} == {side}
        meta, problems = read_meta(out / f"{side}.json")
        assert problems == [] and meta.side == side and meta.lost_seqs == []
        assert meta.firmware_version == "0.1.0" and meta.sample_rate_hz == 100
        assert meta.device_name == f"Insole-{side[0].upper()}-" + meta.device_address[-5:].replace(
            ":", "")
    assert cli.main(["report", str(out), "--html"]) == 0
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    summary = json.loads((out / "report.json").read_text())
    assert summary["feet"]["left"]["steps"] == 47 and summary["symmetry_index_pct"]


def test_forced_disconnect_mid_trace_is_backfilled(tmp_path):
    from host_tools.ble.blelinks import BumbleLink
    from host_tools.ble.capture import Backoff, InsoleSession, capture
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio

    async def main():
        radio = VirtualRadio()
        vi = VirtualInsole(str(LEFT), side="left", speed=0, radio=radio, paused=True)
        await vi.start()
        central = await radio.central()
        # a slow first retry keeps the link down while the walk goes on
        session = InsoleSession(BumbleLink(central, side="left", transport="virtual",
                                           passkey=vi.passkey),
                                tmp_path, backoff=Backoff(2.0, 2.0))
        stop = asyncio.Event()
        lingering = []

        async def scenario():
            while session.stats.state != "connected":
                await asyncio.sleep(0.02)
            await vi.run_until(15.0)
            for conn in list(vi.connections.values()):
                await conn.disconnect()  # the insole drops the link mid-walk
            await vi.run_until(45.0)  # 30 s of walking with nobody listening
            assert session.stats.state != "connected"
            while session.stats.state != "connected":
                await asyncio.sleep(0.02)
            vi.resume()
            await vi.finished(timeout=60)

            async def linger():
                while True:
                    await vi.run_for(1.0, timeout=None)

            lingering.append(asyncio.ensure_future(linger()))

        try:
            await asyncio.wait_for(capture([session], stop, until=scenario(), drain_s=10), 120)
        finally:
            for t in lingering:
                t.cancel()
            await asyncio.gather(*lingering, return_exceptions=True)
            await vi.stop()
            await radio.close()
        return session

    session = asyncio.run(main())
    assert session.stats.reconnects == 1
    assert session.stats.backfilled >= 20  # the steps of those 30 s came by backfill
    assert captured(tmp_path / "left.csv") == detect(LEFT, tmp_path)  # no gap, nothing lost
    meta, _ = read_meta(tmp_path / "left.json")
    assert meta.lost_seqs == [] and meta.reconnects == 1 and meta.steps_backfilled >= 20


def test_ctrl_c_closes_the_logs_cleanly(tmp_path):
    # a 20 s excerpt at 1x speed; interrupted after a few steps
    tr = read_trace(LEFT)
    trace = tmp_path / "short.csv"
    write_trace(trace, tr.samples[:2000], tr.rate_hz)
    out = tmp_path / "cap"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "capture", "--sim",
                             str(trace), "--speed", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (out / "left.csv").exists() and len(read_steplog(out / "left.csv")[0]) >= 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no steps logged within 60 s")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"steps logged" in stdout
    rows, problems = read_steplog(out / "left.csv")
    assert problems == [] and len(rows) >= 3
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    meta, _ = read_meta(out / "left.json")
    assert meta.end_time and meta.steps_logged == len(rows)


def test_scan_finds_virtual_insoles_with_firmware_version():
    from host_tools.cli.scan import format_table, scan_bumble
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio

    async def main():
        radio = VirtualRadio()
        insoles = [VirtualInsole(str(t), side=s, radio=radio, index=i, paused=True)
                   for i, (t, s) in enumerate(((LEFT, "left"), (RIGHT, "right")))]
        try:
            for vi in insoles:
                await vi.start()
            central = await radio.central()
            found = await asyncio.wait_for(scan_bumble(central, 1.0), 60)
            return found, [vi.name for vi in insoles]
        finally:
            for vi in insoles:
                await vi.stop()
            await radio.close()

    found, names = asyncio.run(main())
    assert sorted(f.name for f in found) == sorted(names)
    assert sorted((f.side, f.firmware) for f in found) == [("left", "0.1.0"), ("right", "0.1.0")]
    assert all(f.address.count(":") == 5 for f in found)
    assert "FIRMWARE" in format_table(found)
