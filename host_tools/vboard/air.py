"""What the radio carries of one virtual insole: its advertising as the firmware
asked for it (gap_advertise), and radio outages that take it off the air for a
while, as walking out of range does."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from host_tools.vboard.wire import VBoardError

if TYPE_CHECKING:
    from host_tools.vboard.insole import VirtualInsole


class OnAir:
    """The insole's advertising and its radio outages."""

    def __init__(self, insole: VirtualInsole):
        self.insole = insole
        self.name = ""  # the advertised name, once the firmware advertises
        self.advertising = False
        self.advertised = asyncio.Event()  # the firmware has asked to advertise
        self.own_type = 1  # bumble OwnAddressType.RANDOM until the controller is known
        self._adv = b""
        self._resp = b""
        self._adv_wanted: dict | None = None  # the firmware's last advertising request
        # radio outages (schedule_outage): [start, end) trace µs, the earliest first
        self.outages: list[list[int]] = []
        self.in_outage = False
        self.outages_begun = 0
        self._cut: set[int] = set()  # connection handles an outage has disconnected

    def schedule_outage(self, at_s: float, seconds: float) -> None:
        """Take the radio link away from trace time at_s for `seconds` of trace time,
        as walking out of range does: connected centrals are disconnected, and while it
        lasts nobody hears the insole advertise, so none can (re)connect. The firmware
        sees the disconnect and keeps advertising; nothing else changes for it."""
        if at_s < 0 or seconds <= 0:
            raise VBoardError("an outage starts at trace time >= 0 and lasts > 0 s")
        start = int(round(at_s * 1e6))
        self.outages.append([start, start + int(round(seconds * 1e6))])
        self.outages.sort()

    @property
    def outages_left(self) -> int:
        """Outages scheduled that have not ended yet."""
        return len(self.outages)

    def radio_outage(self, seconds: float) -> None:
        """schedule_outage() from the current trace time."""
        self.schedule_outage(max(self.insole.trace_us, 0) / 1e6, seconds)

    async def follow(self) -> None:
        # awaited between the board's messages, so its advertising requests and an
        # outage's never overlap
        now = self.insole.trace_us
        if now <= 0:
            return  # the clock has not begun to run (a paused board waits at 0)
        while self.outages and self.outages[0][1] <= now and not self.in_outage:
            self.outages.pop(0)  # wholly passed between two clock reports
        active = bool(self.outages) and self.outages[0][0] <= now < self.outages[0][1]
        if active and not self.in_outage:
            self.in_outage = True
            self.outages_begun += 1
            self.insole.log.append((self.insole.trace_time, "(radio outage begins)"))
            if self.advertising:
                self.advertising = False
                with contextlib.suppress(Exception):
                    await self.insole.device.stop_advertising()
        elif not active and self.in_outage:
            self.in_outage = False
            self.outages.pop(0)
            self._cut.clear()
            self.insole.log.append((self.insole.trace_time, "(radio outage ends)"))
            msg = self._adv_wanted
            if msg is not None and msg.get("interval_us") is not None:
                await self.advertise(msg)
        if self.in_outage:
            for h, conn in list(self.insole.connections.items()):
                if h not in self._cut:  # one made just before it began goes too
                    self._cut.add(h)
                    self.insole.spawn(self._cut_link(conn))

    @staticmethod
    async def _cut_link(conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.disconnect(), 5)

    async def advertise(self, msg: dict) -> None:
        from bumble.core import AdvertisingData
        from bumble.device import AdvertisingType

        if msg.get("adv") is not None:
            self._adv = bytes.fromhex(msg["adv"])
        if msg.get("resp") is not None:
            self._resp = bytes.fromhex(msg["resp"])
        self._adv_wanted = msg
        if msg.get("interval_us") is None:
            self.advertising = False
            await self.insole.device.stop_advertising()
            return
        if self.in_outage:  # the firmware advertises; nobody is in range to hear it
            self.advertised.set()
            return
        name = AdvertisingData.from_bytes(self._adv).get(AdvertisingData.COMPLETE_LOCAL_NAME)
        if name:
            self.name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        interval_ms = max(20.0, msg["interval_us"] / 1000)
        kind = (AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE if msg.get("connectable", True)
                else AdvertisingType.UNDIRECTED_SCANNABLE)
        await self.insole.device.start_advertising(
            advertising_type=kind, own_address_type=self.own_type,
            advertising_data=self._adv, scan_response_data=self._resp,
            advertising_interval_min=interval_ms, advertising_interval_max=interval_ms)
        self.advertising = True
        self.advertised.set()
