"""No lost steps across a long disconnect: the central drops the link in mid-walk,
stays away for 65 s of trace time, reconnects, pairs again and asks for a backfill
from the event after the last one it got. Together the two sessions hold every
event the detector produced, with no sequence gap, and the firmware's step total
never goes backwards. A second run adds NimBLE-style buffer exhaustion
(OSError(ENOMEM) from gatts_notify) on top, which must not lose events either."""

from __future__ import annotations

import asyncio

import pytest

from host_tools.ble import protocol
from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.radio import VirtualRadio
from tests.test_vboard import TRACE, as_reference, reference_events

DROP_AT = 15.0
BACK_AT = 80.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


async def _session(vi, radio, central_device=None):
    central = Central(central_device or await radio.central())
    await central.connect(vi)
    await central.pair()
    events = await central.subscribe(protocol.UUID_STEP_EVENT)
    replies = await central.subscribe(protocol.UUID_CONTROL)
    status = await central.subscribe(protocol.UUID_STATUS)
    return central, events, replies, status


async def _walk_with_gap(scarce_buffers: bool):
    radio = VirtualRadio()
    async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
        if scarce_buffers:
            # 3 buffers, one freed per 7.5 ms connection interval: bursts hit ENOMEM
            vi.set_notify_buffers(3, refill_ms=7.5)
        central, ev1, _, st1 = await _session(vi, radio)
        await vi.run_until(DROP_AT)
        await vi.run_for(0.2)  # the events of the last sample get out
        first = [protocol.decode_event(v) for _, v in ev1]
        await central.disconnect()
        await vi.wait_log(r"ble disconnect")
        gap_at = vi.trace_time
        await vi.run_until(BACK_AT)
        gap = vi.trace_time - gap_at
        central2, ev2, replies, st2 = await _session(vi, radio, central.device)
        want = (first[-1].seq + 1) & 0xFFFF
        await central2.write(protocol.UUID_CONTROL, protocol.cmd_backfill(want))
        await vi.run_to_end()
        await vi.run_for(1.0)  # let the firmware drain its ring
        second = [protocol.decode_event(v) for _, v in ev2]
        reply = [protocol.decode_reply(v) for _, v in replies]
        statuses = [protocol.decode_status(v) for _, v in st1 + st2]
        refused = vi.refused
    await radio.close()
    return first, second, reply, statuses, gap, refused


@pytest.mark.parametrize("scarce_buffers", [False, True], ids=["plain", "enomem"])
def test_disconnect_reconnect_backfill_loses_nothing(scarce_buffers):
    first, second, reply, statuses, gap, refused = run(_walk_with_gap(scarce_buffers))
    # with scarce buffers the stack really refused notifications (and none otherwise)
    assert (refused > 0) == scarce_buffers
    assert gap > 60.0  # away for over a minute of trace time
    assert reply and reply[0].op == protocol.OP_BACKFILL and reply[0].error == protocol.ERR_OK
    want = (first[-1].seq + 1) & 0xFFFF
    assert reply[0].data["first_seq"] == want
    # the backfill starts right after the last event of the first session
    assert second[0].seq == want
    events = first + second
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "sequence gap or repeat"
    # every strike and step the detector found, in order, none lost or doubled
    assert as_reference(events) == reference_events()
    # the device's total step count never goes backwards
    totals = [s.steps for s in statuses]
    assert totals == sorted(totals) and totals[-1] == len(
        [e for e in reference_events() if e[0] == "S"])
