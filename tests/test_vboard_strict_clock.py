"""The virtual clock under a burst of host messages: a new clock limit that reaches
the board while it reads the host's messages in the middle of a sleep must be seen
before the clock stops, or the firmware waits forever at the old limit (the host
then sees "trace time X not reached")."""

from __future__ import annotations

import asyncio
import contextlib
import time

from host_tools.ble import protocol
from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.radio import VirtualRadio
from tests.test_vboard import TRACE

STEPS = 1500
STEP_S = 0.01


async def _steps_under_writes():
    radio = VirtualRadio()
    reached = []
    try:
        async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
            central = Central(await radio.central())
            await central.connect(vi)
            await central.pair()
            replies = await central.subscribe(protocol.UUID_CONTROL)
            done = asyncio.Event()

            async def writer():
                # Control writes race the clock limits: each lands in the board's
                # socket just before, with or after a HOST_CONTROL
                while not done.is_set():
                    await central.write(protocol.UUID_CONTROL, protocol.cmd_get_config(),
                                        with_response=False)
                    await asyncio.sleep(0)

            task = asyncio.ensure_future(writer())
            try:
                t = 0.0
                for _ in range(STEPS):
                    t += STEP_S
                    reached.append(await vi.run_until(t, timeout=10.0))
            finally:
                done.set()
                with contextlib.suppress(Exception):
                    await task
            got = len(replies)
    finally:
        await radio.close()
    return reached, got


def test_clock_limits_arriving_with_writes_never_stall_the_board():
    reached, replies = asyncio.run(asyncio.wait_for(_steps_under_writes(), 120))
    assert len(reached) == STEPS
    for i, t in enumerate(reached, start=1):
        assert abs(t - i * STEP_S) < 1e-6, (i, t)
    assert replies > 0  # the writes did reach the firmware


# ---- the same race, placed exactly with a scripted host ----

_LONG_SLEEP = """
import time, board
h = board.fsr_adcs()[0]
while True:
    h.read_u16()
    time.sleep_ms(1000)
"""


def test_a_limit_that_arrives_during_a_sleep_is_not_missed():
    from tests.vboard_fakehost import MSG_PAUSED, FakeHost

    host = FakeHost(_LONG_SLEEP, env={"VBOARD_LIMIT": "0"})
    try:
        assert host.expect(MSG_PAUSED, trace_us=0) is not None
        # real time: the one-second sleep is stopped at 300 ms, which takes 0.3 s of
        # wall time; a new limit comes in after 0.1 s, while the board waits
        host.control('{"speed": 1, "limit": 300000}')
        time.sleep(0.1)
        host.control('{"limit": 600000}')
        got = host.expect(MSG_PAUSED, timeout=3.0)
        assert got is not None, "the board never reported the clock stopped again"
        assert got[1] == 600000, f"stopped at {got[1]} µs: the limit it had replaced"
    finally:
        out = host.finish(timeout=0.1)
    assert "Traceback" not in out, out
