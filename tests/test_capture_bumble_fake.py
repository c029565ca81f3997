"""BumbleLink end to end over bumble's in-process virtual radio, against a GATT server
that serves the in-memory insole: scan, connect, pair, encrypted backfill writes,
notifications, a peripheral-side disconnect."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bumble_fake import PASSKEY, BumbleFakeInsole, make_link_and_central  # noqa: E402
from fake_insole import FakeInsole, same_steps  # noqa: E402
from walk_synth import RATE_HZ, make_steps, synth_trace  # noqa: E402

from host_tools.ble.blelinks import BumbleLink, bumble_scan  # noqa: E402
from host_tools.ble.capture import Backoff, InsoleSession, capture  # noqa: E402
from host_tools.ble.steplog import read_meta, read_steplog  # noqa: E402
from host_tools.gait import engine  # noqa: E402


@pytest.fixture(scope="module")
def summaries():
    trace = synth_trace(make_steps([1100.0, 1050.0] * 12))
    return [tuple(s) for s in engine.step_summaries(engine.run_cpython(trace, RATE_HZ))]


async def _walk(fake: BumbleFakeInsole, summaries, kick_at=(), pace=0.01, session=None):
    while fake.connection is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # let the capture subscribe
    for s in summaries:
        if s[0] in kick_at:
            while session.stats.state != "connected":  # the capture is streaming again
                await asyncio.sleep(0.01)
            await fake.kick()
        fake.insole.make_step(s)
        await asyncio.sleep(pace)


def run(tmp_path, feet, kick_at=()):
    async def main():
        link, central = make_link_and_central()
        fakes = [BumbleFakeInsole(link, FakeInsole(summ, side=side), i + 1)
                 for i, (side, summ) in enumerate(feet)]
        for f in fakes:
            await f.start()
        await central.power_on()
        found = await bumble_scan(central, 0.5)
        taken: set[str] = set()
        lock = asyncio.Lock()
        sessions = [InsoleSession(BumbleLink(central, side=side, taken=taken, lock=lock,
                                             transport="bumble-local", passkey=PASSKEY),
                                  tmp_path, backoff=Backoff(0.1, 0.5), backfill_wait=0.2)
                    for side, _ in feet]
        stop = asyncio.Event()
        walks = asyncio.gather(*(_walk(f, summ, kick_at, session=s) for f, (_, summ), s in zip(
            fakes, feet, sessions, strict=True)))
        await asyncio.wait_for(capture(sessions, stop, until=walks, drain_s=5.0), 60)
        return sessions, fakes, found

    return asyncio.run(main())


def test_capture_over_bumble(tmp_path, summaries):
    (s,), (fake,), found = run(tmp_path, [("left", summaries)])
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == [] and same_steps([r.event_values() for r in rows], summaries)
    assert fake.insole.backfills  # the encrypted Control write went through
    meta, _ = read_meta(tmp_path / "left.json")
    assert meta.device_name == "Insole-L-0001" and meta.transport == "bumble-local"
    assert meta.device_address.startswith("F0:00:00:00:00:01")
    assert [f.name for f in found] == ["Insole-L-0001"] and found[0].side == "left"


def test_peripheral_disconnect_then_backfill(tmp_path, summaries):
    (s,), (fake,), _ = run(tmp_path, [("left", summaries)], kick_at={8, 16})
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == [] and same_steps([r.event_values() for r in rows], summaries)
    assert s.stats.reconnects == 2
    assert read_meta(tmp_path / "left.json")[0].lost_seqs == []


def test_two_insoles_one_central(tmp_path, summaries):
    sessions, fakes, _ = run(tmp_path, [("left", summaries), ("right", summaries[:-2])])
    for side, want in (("left", summaries), ("right", summaries[:-2])):
        rows, problems = read_steplog(tmp_path / f"{side}.csv")
        assert problems == [] and same_steps([r.event_values() for r in rows], want)
        assert {r.side for r in rows} == {side}


def test_scan_lists_insoles_with_side_and_firmware(summaries):
    from host_tools.cli.scan import format_table, scan_bumble

    async def main():
        link, central = make_link_and_central()
        fakes = [BumbleFakeInsole(link, FakeInsole(summaries, side=s), i + 1)
                 for i, s in enumerate(("left", "right"))]
        for f in fakes:
            await f.start()
        await central.power_on()
        return await asyncio.wait_for(scan_bumble(central, 0.6), 30)

    found = asyncio.run(main())
    assert sorted((f.name, f.side, f.firmware) for f in found) == [
        ("Insole-L-0001", "left", "0.1.0"), ("Insole-R-0002", "right", "0.1.0")]
    table = format_table(found).splitlines()
    assert table[0].split() == ["NAME", "SIDE", "ADDRESS", "RSSI", "FIRMWARE"]
    assert any("Insole-R-0002" in line and "right" in line for line in table[1:])
