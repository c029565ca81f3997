"""BleakLink is a thin mapping onto bleak's API: run the capture session through it with
bleak's scanner and client replaced by stand-ins wired to the in-memory insole."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import bleak
import bleak.exc
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_insole import FakeInsole, same_steps  # noqa: E402
from walk_synth import RATE_HZ, make_steps, synth_trace  # noqa: E402

from host_tools.ble.blelinks import BleakLink  # noqa: E402
from host_tools.ble.capture import Backoff, InsoleSession, capture  # noqa: E402
from host_tools.ble.protocol import UUID_CONTROL, UUID_SERVICE, UUID_STATUS  # noqa: E402
from host_tools.ble.steplog import read_meta, read_steplog  # noqa: E402
from host_tools.gait import engine  # noqa: E402


class StandInClient:
    """What BleakLink may use of BleakClient, answered by a FakeInsole."""

    instances: list = []

    def __init__(self, device, disconnected_callback=None, timeout=30.0, **_kw):
        assert not isinstance(device, str), "pass a BLEDevice, not an address string"
        self.device = device
        self.on_gone = disconnected_callback
        self.insole: FakeInsole = device.insole
        self.connected = False
        self.paired = False
        self.subs: dict = {}
        self.notify_times: list[float] = []
        StandInClient.instances.append(self)

    # the FakeInsole link protocol
    def deliver(self, uuid, data):
        cb = self.subs.get(uuid)
        if self.connected and cb is not None:
            cb(SimpleNamespace(uuid=uuid), bytearray(data))

    async def connect(self):
        self.connected = True
        self.insole.link = self

    async def pair(self):
        self.paired = True

    async def read_gatt_char(self, uuid):
        if uuid != UUID_STATUS:
            raise bleak.exc.BleakError(f"Characteristic {uuid} was not found!")
        return bytearray(self.insole.status())

    async def write_gatt_char(self, uuid, data, response=None):
        assert uuid == UUID_CONTROL and response is True and self.paired
        self.deliver(UUID_CONTROL, self.insole.control(bytes(data)))

    async def start_notify(self, uuid, callback):
        def stamped(char, data):
            self.notify_times.append(time.time())
            callback(char, data)

        self.subs[uuid] = stamped

    async def disconnect(self):
        was, self.connected = self.connected, False
        self.subs.clear()
        if was and self.on_gone:
            self.on_gone(self)

    def drop(self):
        """The adapter reports the link lost."""
        asyncio.get_running_loop().call_soon(self.disconnect_now)

    def disconnect_now(self):
        self.connected = False
        self.subs.clear()
        self.on_gone(self)

    @property
    def subs_ready(self):
        return bool(self.subs)


@pytest.fixture()
def stand_ins(monkeypatch):
    trace = synth_trace(make_steps([1100.0, 1060.0] * 10))
    summaries = [tuple(s) for s in engine.step_summaries(engine.run_cpython(trace, RATE_HZ))]
    insole = FakeInsole(summaries)
    device = SimpleNamespace(address="24:D7:EB:10:1A:2B", name="Insole-L-1A2B", insole=insole)
    adv = SimpleNamespace(local_name="Insole-L-1A2B", service_uuids=[UUID_SERVICE], rssi=-60)
    other = SimpleNamespace(address="11:22:33:44:55:66", name="Headphones", insole=None)
    other_adv = SimpleNamespace(local_name="Headphones", service_uuids=[], rssi=-40)

    async def find_device_by_filter(filterfunc, timeout=10.0, **_kw):
        for d, a in ((other, other_adv), (device, adv)):
            if filterfunc(d, a):
                return d
        return None

    monkeypatch.setattr(bleak.BleakScanner, "find_device_by_filter",
                        staticmethod(find_device_by_filter))
    monkeypatch.setattr(bleak, "BleakClient", StandInClient)
    StandInClient.instances = []
    return insole, summaries


def test_session_through_bleak_link(tmp_path, stand_ins):
    insole, summaries = stand_ins

    async def main():
        link = BleakLink(want="insole-l-1a2b")  # names match case-insensitively
        session = InsoleSession(link, tmp_path, backoff=Backoff(0.05, 0.1), backfill_wait=0.1)
        stop = asyncio.Event()

        async def walk():
            while not StandInClient.instances or not StandInClient.instances[-1].subs_ready:
                await asyncio.sleep(0.005)
            for s in summaries:
                if s[0] == 8:
                    StandInClient.instances[-1].drop()
                insole.make_step(s)
                await asyncio.sleep(0.01)

        await asyncio.wait_for(capture([session], stop, until=walk(), drain_s=3), 30)
        return session

    session = asyncio.run(main())
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == [] and same_steps([r.event_values() for r in rows], summaries)
    assert session.stats.reconnects == 1 and session.stats.backfilled > 0
    meta, _ = read_meta(tmp_path / "left.json")
    assert meta.device_address == "24:D7:EB:10:1A:2B" and meta.transport == "bleak"
    first = StandInClient.instances[0]
    assert first.paired and first.notify_times
    # host_time is taken in the notify callback, not when the row is written
    t0 = min(r.host_time for r in rows)
    assert abs(t0 - first.notify_times[0]) < 0.05


def test_bleak_link_reports_no_insole(monkeypatch):
    async def nothing(filterfunc, timeout=10.0, **_kw):
        return None

    monkeypatch.setattr(bleak.BleakScanner, "find_device_by_filter", staticmethod(nothing))
    from host_tools.ble.capture import LinkError

    with pytest.raises(LinkError, match="no insole matching Insole-R-0000"):
        asyncio.run(BleakLink(want="Insole-R-0000", scan_timeout=0.1).connect())
