"""The virtual board's clock, as the host drives it: the firmware only sees virtual
time, which moves when it sleeps, ``speed`` times faster than wall time (0: as fast
as it runs), and stops where the host asks (a paused board waits at trace time 0)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

from host_tools.vboard.wire import HOST_CONTROL, VBoardError

if TYPE_CHECKING:
    from host_tools.vboard.insole import VirtualInsole


class BoardClock:
    """Runs, stops and paces one board's virtual clock (HOST_CONTROL frames)."""

    def __init__(self, insole: VirtualInsole):
        self.insole = insole
        self.paused_at = -1  # trace µs the board last reported stopping at
        self.end = asyncio.Event()  # the trace is exhausted
        self.progress = asyncio.Event()  # set on every frame, and when the board exits

    def control(self, **ctl) -> None:
        self.insole.link.send(HOST_CONTROL, json.dumps(ctl).encode())

    async def run_until(self, trace_s: float, timeout: float | None = 60.0) -> float:
        """Let the clock run to trace time trace_s and stop there; returns the trace
        time reached. Before the end of the trace it stops there at the latest; once
        the trace has ended the clock runs on past it (the firmware lingers)."""
        limit = int(round(trace_s * 1e6))
        was_ended = self.end.is_set()
        self.paused_at = -1
        if was_ended:
            self.control(limit=limit, past_end=True)
        else:
            self.control(limit=limit)
        await self._until(lambda: self.paused_at >= limit or (
            not was_ended and self.end.is_set()), timeout, f"trace time {trace_s:.3f} s")
        await self.drain()
        return self.insole.trace_time

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until what the firmware sent so far has left this host: bumble's
        outgoing queue is empty and, for a central in this process, the event loop has
        turned a few times to hand the packets over. run_until(), run_for(),
        run_to_end() and pause() end with it."""
        host = self.insole.device.host if self.insole.device is not None else None
        queue = host and (host.le_acl_packet_queue or host.acl_packet_queue)
        deadline = time.monotonic() + timeout
        while queue is not None and queue.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        for _ in range(20):
            await asyncio.sleep(0)

    async def run_for(self, seconds: float, timeout: float | None = 60.0) -> float:
        """run_until(now + seconds)."""
        return await self.run_until(max(self.insole.trace_us, 0) / 1e6 + seconds, timeout)

    async def pause(self, timeout: float | None = 10.0) -> float:
        """Stop the clock now; returns the trace time it stopped at."""
        self.paused_at = -1
        self.control(limit=0)
        await self._until(lambda: self.paused_at >= 0 or self.end.is_set(), timeout,
                          "a stopped clock")
        await self.drain()
        return self.insole.trace_time

    async def _until(self, pred, timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.progress.clear()
            if pred():
                return
            if self.insole.firmware.exited.is_set():
                raise VBoardError(f"the firmware exited (status {self.insole.returncode}) before "
                                  f"{what}:\n{self.insole._tail()}")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise VBoardError(f"{what} not reached within {timeout} s "
                                  f"(trace time {self.insole.trace_time:.3f} s)")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.progress.wait(), left)

    def resume(self) -> None:
        """Let the clock run freely (until the trace ends)."""
        self.control(limit=-1)

    def set_speed(self, speed: float) -> None:
        self.insole.speed = float(speed)
        self.control(speed=self.insole.speed)

    def set_notify_buffers(self, count: int, refill_ms: float = 7.5) -> None:
        """Simulate NimBLE's buffer pool: at most `count` notifications in flight, one
        freed every refill_ms of trace time; beyond that gatts_notify raises
        OSError(ENOMEM). count 0 switches the simulation off."""
        self.control(notify_buffers=int(count), refill_us=int(refill_ms * 1000))

    def fail_notifications(self, n: int) -> None:
        """The next n gatts_notify/gatts_indicate calls raise OSError(ENOMEM)."""
        self.control(fail_notify=int(n))

    async def finished(self, timeout: float | None = None) -> None:
        """Wait until the firmware has sampled the whole trace (the clock then stops).
        It does not start a paused clock: see run_to_end()."""
        await self.insole._wait_for(self.end, timeout, "end of trace")

    async def run_to_end(self, timeout: float | None = 60.0) -> float:
        """Let the clock run until the trace is exhausted; returns the trace time."""
        if not self.end.is_set():
            self.control(limit=-1)
            await self.finished(timeout)
        await self.drain()
        return self.insole.trace_time

