"""The unchanged firmware on the virtual board, seen by a real bumble central over
bumble's virtual radio: the GATT table, step events equal to the detector run in
CPython on the same trace, notification latency in trace time, and RSC cadence.

Trace: tests/data/walk_90s_left.csv (a PhysioNet gaitpdb excerpt; see its header)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from host_tools.ble import protocol
from host_tools.gait import engine
from host_tools.gait.tracefile import read_trace
from host_tools.vboard.central import Central
from host_tools.vboard.gatt import uuid_key
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.radio import VirtualRadio

TRACE = Path(__file__).resolve().parent / "data" / "walk_90s_left.csv"
STRIDE_CM = 140  # the firmware's default stride length (firmware/config.py)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def reference_events(seconds: float | None = None):
    """The detector in CPython over the trace: [("C", contact_ms, seq) | ("S", ...)]."""
    tr = read_trace(TRACE)
    samples = tr.samples if seconds is None else tr.samples[: int(seconds * tr.rate_hz) + 1]
    return engine.run_cpython(samples, tr.rate_hz)


def as_reference(decoded: list) -> list[tuple]:
    """Decoded Step Event packets (strike / step+load pairs) in the reference's shape."""
    out = []
    pending = None
    for ev in decoded:
        if isinstance(ev, protocol.Strike):
            out.append(("C", ev.contact_ms, ev.step))
        elif isinstance(ev, protocol.Step):
            pending = ev
        elif isinstance(ev, protocol.Load):
            s = pending
            assert s is not None and s.seq == (ev.seq - 1) & 0xFFFF, "LOAD without its STEP"
            assert ev.step == s.step & 0xFFFFFF
            out.append(("S", s.step, s.strike_ms, s.toe_off_ms, s.heel_off_ms, s.stance_ms,
                        s.swing_ms, s.stride_ms, ev.pattern, ev.peak_heel, ev.peak_arch,
                        ev.peak_fore, ev.share_heel, ev.share_arch, ev.share_fore))
            pending = None
    return out


async def _connected(vi, radio, pair=True):
    central = Central(await radio.central())
    await central.connect(vi)
    if pair:
        await central.pair()
    return central


def test_gatt_table_has_every_service_and_characteristic():
    from bumble.gatt import GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR as CCCD
    from bumble.gatt import Characteristic

    P = Characteristic.Properties
    expected = {
        protocol.UUID_STEP_EVENT: P.NOTIFY,
        protocol.UUID_STATUS: P.READ | P.NOTIFY,
        protocol.UUID_CONTROL: P.WRITE | P.NOTIFY,
        protocol.UUID_RAW: P.NOTIFY,
        0x2A53: P.NOTIFY,  # RSC Measurement
        0x2A54: P.READ,  # RSC Feature
        0x2A5D: P.READ,  # Sensor Location
        0x2A29: P.READ,  # Manufacturer Name
        0x2A24: P.READ,  # Model Number
        0x2A27: P.READ,  # Hardware Revision
        0x2A26: P.READ,  # Firmware Revision
        0x2A19: P.READ | P.NOTIFY,  # Battery Level
    }
    services = {protocol.UUID_SERVICE: [protocol.UUID_STEP_EVENT, protocol.UUID_STATUS,
                                        protocol.UUID_CONTROL, protocol.UUID_RAW],
                0x1814: [0x2A53, 0x2A54, 0x2A5D],
                0x180A: [0x2A29, 0x2A24, 0x2A27, 0x2A26],
                0x180F: [0x2A19]}

    async def main():
        radio = VirtualRadio()
        async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
            assert vi.name.startswith("Insole-L-")
            central = await _connected(vi, radio, pair=False)
            key = uuid_key
            by_service = {key(s.uuid): [key(c.uuid) for c in s.characteristics]
                          for s in central.peer.services}
            for svc, chars in services.items():
                assert by_service.get(key(svc)) == [key(c) for c in chars], svc
            for uuid, props in expected.items():
                c = central.characteristic(uuid)
                assert c.properties == props, (uuid, c.properties)
                if props & P.NOTIFY:
                    descs = await central.peer.discover_descriptors(c)
                    assert any(d.type == CCCD for d in descs), uuid
            assert await central.read(0x2A54) == bytes((0x07, 0x00))  # stride, distance, run
            assert await central.read(0x2A5D) == bytes((2,))  # in shoe
            assert (await central.read(0x2A26)).decode() == "0.1.0"
            assert 0 <= (await central.read(0x2A19))[0] <= 100
            # the insole's own service needs a bond made with the passkey: the stack
            # refuses Status and Control before the firmware sees them (no stored key
            # for this central: insufficient authentication, NimBLE's choice)
            from bumble.att import (
                ATT_INSUFFICIENT_AUTHENTICATION_ERROR,
                ATT_READ_NOT_PERMITTED_ERROR,
            )
            from bumble.core import ProtocolError

            with pytest.raises(ProtocolError) as err:
                await central.read(protocol.UUID_STATUS)
            assert err.value.error_code == ATT_INSUFFICIENT_AUTHENTICATION_ERROR
            with pytest.raises(ProtocolError) as err:
                await central.write(protocol.UUID_CONTROL, protocol.cmd_zero())
            assert err.value.error_code == ATT_INSUFFICIENT_AUTHENTICATION_ERROR
            with pytest.raises(ProtocolError) as err:  # notify-only: not readable
                await central.read(protocol.UUID_STEP_EVENT)
            assert err.value.error_code == ATT_READ_NOT_PERMITTED_ERROR
            await central.pair()
            await vi.wait_log(r"ble encrypted 1 bonded 1 auth 1")
            await vi.run_for(1.1)  # Status is updated once a second
            status = protocol.decode_status(await central.read(protocol.UUID_STATUS))
            assert (status.side, status.rate_hz, status.encrypted) == ("L", 100, True)
            replies = await central.subscribe(protocol.UUID_CONTROL)
            await central.write(protocol.UUID_CONTROL, protocol.cmd_zero())
            await vi.run_for(0.1)
            assert [protocol.decode_reply(v).error for _, v in replies] == [protocol.ERR_OK]
        await radio.close()

    run(main())


def test_step_events_over_the_radio_equal_the_detector():
    """Connect, pair, subscribe at trace time 0; every strike and step summary the
    central decodes equals the detector's output on the same trace, event for event;
    each strike leaves the firmware in the sample that confirmed it."""

    async def main():
        radio = VirtualRadio()
        async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
            central = await _connected(vi, radio)
            got = await central.subscribe(protocol.UUID_STEP_EVENT)
            end = await vi.run_to_end()
            await vi.run_for(0.5)  # let the last notifications out
            decoded = [protocol.decode_event(v) for _, v in got]
            h_event = central.characteristic(protocol.UUID_STEP_EVENT).handle
            sent = [n for n in vi.notifications if n.handle == h_event]
        await radio.close()
        return end, decoded, sent

    end, decoded, sent = run(main())
    ref = reference_events()
    steps = [e for e in ref if e[0] == "S"]
    assert end == pytest.approx(89.995, abs=0.01)
    assert len(steps) > 60  # the excerpt is a real walk
    assert as_reference(decoded) == ref
    seqs = [e.seq for e in decoded]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps, no repeats
    # latency, in trace time: each strike is notified while the sample that confirmed
    # it (detect_ms) is current, i.e. within one 10 ms sample period
    strikes = [(n.trace_us, protocol.decode_event(n.data)) for n in sent]
    strikes = [(t, e) for t, e in strikes if isinstance(e, protocol.Strike)]
    assert len(strikes) == len([e for e in ref if e[0] == "C"])
    for t, e in strikes:
        assert 0 <= t - e.detect_ms * 1000 < 10000, (t, e)


def test_rsc_measurement_gives_the_cadence_of_the_steps():
    async def main():
        radio = VirtualRadio()
        async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
            central = await _connected(vi, radio, pair=False)
            rsc = await central.subscribe(0x2A53)
            await vi.run_until(40.0)
            await vi.run_for(0.1)
        await radio.close()
        return [protocol.decode_rsc(v) for _, v in rsc]

    got = run(main())
    steps = [e for e in reference_events(40.0) if e[0] == "S"]
    moving = [r for r in got if r.cadence > 0]
    known = [s for s in steps if s[7] > 0]  # steps with a known stride (stride_ms > 0)
    strides = [s[7] for s in known]
    assert len(strides) > 20
    # cadence in steps/min: two steps per stride of one foot
    assert [r.cadence for r in moving] == [min(255, 120000 // s) for s in strides]
    for r, s in zip(moving, known, strict=True):
        # speed in 1/256 m/s from the configured stride length
        assert r.speed_256 == STRIDE_CM * 2560 // s[7]
        assert r.stride_cm == STRIDE_CM
        # running: the foot spent more than half the stride in the air
        assert r.running == (s[6] * 2 > s[7])
    cadences = sorted(r.cadence for r in moving)
    assert 90 <= cadences[len(cadences) // 2] <= 130  # the median is a walking cadence
    # total distance grows by one stride (in dm) per step
    assert got[-1].distance_dm == len(steps) * STRIDE_CM // 10
