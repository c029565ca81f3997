"""Raw streaming at 200 Hz over MTU 23 on the virtual board: no packet gaps even when
the stack keeps refusing notifications (NimBLE-style buffer exhaustion), and the
samples are the trace's rows as a 200 Hz ADC reads a 100 Hz recording (each row
twice)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from host_tools.ble import protocol
from host_tools.gait.tracefile import read_trace
from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.radio import VirtualRadio
from tests.test_vboard import TRACE

SECONDS = 10.0
RATE = 200


async def _stream(buffers: int):
    radio = VirtualRadio()
    async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
        if buffers:
            vi.set_notify_buffers(buffers, refill_ms=7.5)
        central = Central(await radio.central())
        await central.connect(vi)
        await central.pair()
        replies = await central.subscribe(protocol.UUID_CONTROL)
        raw = await central.subscribe(protocol.UUID_RAW)
        await central.write(protocol.UUID_CONTROL, protocol.cmd_set_rate(RATE))
        await vi.run_for(0.05)
        await central.write(protocol.UUID_CONTROL, protocol.cmd_raw_start())
        await vi.run_for(SECONDS)
        mtu = central.connection.att_mtu
        refused = vi.refused
    await radio.close()
    return [protocol.decode_reply(v) for _, v in replies], [
        protocol.decode_raw(v) for _, v in raw], mtu, refused


@pytest.mark.parametrize("buffers", [0, 1], ids=["plenty", "one-buffer"])
def test_raw_stream_200hz_has_no_gaps(buffers):
    replies, packets, mtu, refused = asyncio.run(asyncio.wait_for(_stream(buffers), 60))
    assert mtu == 23
    assert [(r.op, r.error) for r in replies] == [(protocol.OP_SET_RATE, protocol.ERR_OK),
                                                 (protocol.OP_RAW_START, protocol.ERR_OK)]
    assert (refused > 0) == (buffers == 1)
    per_packet = len(packets[0].samples)
    assert len(packets) == pytest.approx(SECONDS * RATE / per_packet, abs=2)
    idx = [p.index for p in packets]
    steps = [(b - a) & 0xFFFF for a, b in zip(idx, idx[1:], strict=False)]
    assert set(steps) == {per_packet}, "gap in the packet index"
    # the samples are trace rows, each read twice at 200 Hz: find where they start
    rows = read_trace(TRACE).samples
    got = np.array([s for p in packets for s in p.samples])
    starts = np.flatnonzero((rows == got[0]).all(axis=1))
    matches = []
    for i0 in starts:
        for phase in (0, 1):
            want = rows[i0 + (np.arange(len(got)) + phase) // 2]
            if len(want) == len(got) and (want == got).all():
                matches.append((i0, phase))
    assert matches, "raw samples are not the trace read at 200 Hz"
