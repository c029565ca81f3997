"""The virtual insole: the firmware's process, its socket, its GATT table, its
connections and its radio presence put together, with the clock that drives it
(see the package docstring for the API)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from host_tools.vboard.access import LinkSecurity
from host_tools.vboard.air import OnAir
from host_tools.vboard.bonds import NimbleStore, store_key
from host_tools.vboard.bridge import BoardLink
from host_tools.vboard.clock import BoardClock
from host_tools.vboard.gatt import GattServer
from host_tools.vboard.pairing import Pairing
from host_tools.vboard.process import (
    FIRMWARE,
    SHIMS,
    FirmwareProcess,
    configured_passkey,
    load_trace,
    prepare_flash,
)
from host_tools.vboard.radio import VirtualRadio
from host_tools.vboard.wire import (
    HOST_FATAL,
    HOST_GET_SECRET,
    HOST_IRQ,
    HOST_SET_SECRET,
    HOST_SYNC,
    MSG_ADVERTISE,
    MSG_CLOCK,
    MSG_CONFIG,
    MSG_DISCONNECT,
    MSG_END,
    MSG_FIRST,
    MSG_HELLO,
    MSG_INDICATE,
    MSG_KEYS,
    MSG_NOTIFY,
    MSG_PASSKEY,
    MSG_PAUSED,
    MSG_READ,
    MSG_REFUSED,
    MSG_REGISTER,
    MSG_RESET,
    MSG_SECRET,
    MSG_SYNCED,
    MSG_VALUE,
    Notification,
    VBoardError,
    encode_irq_value,
)


def uid_for(side: str, index: int) -> bytes:
    return bytes((0x24, 0xD7, 0xEB, 0x10 + index, 0xA0 if side == "left" else 0xB0, 0xC1 + index))


def address_for(uid: bytes) -> str:
    # the virtual controller's public address (also valid as a random static one)
    b = bytes((uid[0] | 0xC0,)) + uid[1:]
    return ":".join(f"{x:02X}" for x in b)


class VirtualInsole:
    """The firmware on the virtual board, replaying a trace, on a bumble radio.

    trace: a trace CSV (docs/TRACE_FORMAT.md) or an (n, 3) array of counts.
    side: "left" or "right", written to the firmware's config before it starts.
    speed: trace seconds per wall second; 0 runs as fast as the firmware can.
    radio: the VirtualRadio to use (default: a new in-process one, ``self.radio``).
    paused: hold the clock at trace time 0 until run_until()/resume().
    rate_hz: the trace's sample rate when the file does not say (default 100).
      The firmware's configured rate is set to it when the firmware accepts it
      (50..400 Hz); otherwise the firmware samples the trace at its own rate.
    flash_dir: the board's flash (config and bond files); default: a temporary
      directory removed by stop().
    index: tells several virtual insoles apart (unique_id, address, name).
    on_line: called with each serial line the firmware prints, prefixed by the
      trace time ("  12.340 | ...").
    passkey: written to the config before it starts (default: the one on the
      flash, or a new one the firmware makes at its first boot); ``passkey`` holds
      the one the firmware printed on its console.
    """

    def __init__(self, trace, side: str = "left", speed: float = 0.0,
                 radio: VirtualRadio | None = None, *, paused: bool = False,
                 rate_hz: int | None = None, flash_dir: str | Path | None = None,
                 index: int | None = None, on_line: Callable[[str], None] | None = None,
                 firmware_dir: str | Path = FIRMWARE, heap_kb: int | None = None,
                 passkey: int | None = None):
        if side not in ("left", "right"):
            raise VBoardError(f"side must be left or right, not {side!r}")
        if speed < 0:
            raise VBoardError("speed must be >= 0")
        self.trace = trace
        self.side = side
        self.speed = float(speed)
        self.radio = radio or VirtualRadio()
        self.paused = paused
        self.rate_hz = rate_hz
        self.index = (0 if side == "left" else 1) if index is None else index
        self.uid = uid_for(side, self.index)
        self.address = address_for(self.uid)
        self.firmware_dir = Path(firmware_dir)
        self.heap_kb = heap_kb
        self._flash_arg = flash_dir
        self._passkey_arg = passkey
        self.flash_dir: Path | None = None
        self.device = None
        self.notifications: list[Notification] = []
        self.refused = 0  # notifications refused with OSError(ENOMEM)
        self.connections: dict[int, object] = {}  # conn handle -> bumble Connection
        self.security: dict[int, LinkSecurity] = {}  # conn handle -> as NimBLE keeps it
        self.rows = 0
        self.trace_us = -1  # last trace time the firmware reported (µs)
        self.ble_config: dict = {}
        self.faults: list[str] = []  # why the BLE stack would be stuck for good
        self._tmp: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.clock = BoardClock(self)
        self.firmware = FirmwareProcess(lambda: self.trace_time, on_line,
                                        on_exit=self.clock.progress.set)
        self.link = BoardLink(self._on_frame, self._bridge_fault,
                              alive=lambda: not self.firmware.exited.is_set())
        self.store = NimbleStore(self)
        self.gatt = GattServer(self)
        self.pairing = Pairing(self)
        self.air = OnAir(self)

    # ------------------------------------------------------------------ parts, by name
    @property
    def proc(self) -> asyncio.subprocess.Process | None:
        return self.firmware.proc

    @property
    def returncode(self) -> int | None:
        return self.firmware.returncode

    @property
    def log(self) -> list[tuple[float, str]]:
        """(trace s, serial line) for every line the firmware printed."""
        return self.firmware.log

    @property
    def handles(self) -> list[list[int]]:
        """The handles of the firmware's characteristics and descriptors, per service."""
        return self.gatt.handles

    @property
    def name(self) -> str:
        """The advertised name, once the firmware advertises."""
        return self.air.name

    @property
    def advertising(self) -> bool:
        return self.air.advertising

    @property
    def in_outage(self) -> bool:
        return self.air.in_outage

    @property
    def outages_begun(self) -> int:
        return self.air.outages_begun

    @property
    def outages_left(self) -> int:
        """Outages scheduled that have not ended yet."""
        return self.air.outages_left

    def schedule_outage(self, at_s: float, seconds: float) -> None:
        """The radio link gone from trace time at_s for `seconds` (OnAir.schedule_outage)."""
        self.air.schedule_outage(at_s, seconds)

    def radio_outage(self, seconds: float) -> None:
        """schedule_outage() from the current trace time."""
        self.air.radio_outage(seconds)

    def spawn(self, coro) -> None:
        """Run coro alongside the board; stop() waits for it."""
        self._tasks.append(asyncio.ensure_future(coro))

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> VirtualInsole:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self, timeout: float = 20.0) -> None:
        """Start the firmware and wait until it advertises."""
        samples, rate = load_trace(self.trace, self.rate_hz)
        self.rows = len(samples)
        self.trace_rate = rate
        self._tmp = tempfile.mkdtemp(prefix="vboard")
        try:
            await self._start(samples, rate, timeout)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, samples: np.ndarray, rate: int, timeout: float) -> None:
        trace_bin = Path(self._tmp) / "trace.bin"
        trace_bin.write_bytes(np.asarray(samples, dtype="<u2").tobytes())
        self.flash_dir = Path(self._tmp) / "flash" if self._flash_arg is None else Path(
            self._flash_arg)
        prepare_flash(self.flash_dir, self.side, rate, self._passkey_arg)
        sock = str(Path(self._tmp) / "s")
        await self.link.listen(sock)
        self.device = await self.radio.device(f"vboard-{self.side}", self.address)
        self.pairing.setup_device()
        await self.device.power_on()
        self.gatt.attach()
        # On a real controller advertise from its public address, as MicroPython on an
        # ESP32 does by default. bumble's virtual radio routes LE links by random
        # addresses, so there (and on a controller without a public address) the
        # insole uses its random static address.
        from bumble.hci import Address, OwnAddressType

        public = self.device.public_address
        if self.radio.link is None and public != Address.ANY:
            self.air.own_type, addr_type = OwnAddressType.PUBLIC, 0
            self.address = str(public).split("/")[0]
        else:
            self.air.own_type, addr_type = OwnAddressType.RANDOM, 1
        env = dict(os.environ)
        env.update({
            "MICROPYPATH": os.pathsep.join([str(SHIMS), ".frozen"]),
            "VBOARD_TRACE": str(trace_bin),
            "VBOARD_RATE": str(rate),
            "VBOARD_SOCK": sock,
            "VBOARD_SPEED": repr(self.speed),
            "VBOARD_UID": self.uid.hex(),
            "VBOARD_MAC": f"{addr_type}:{self.address.replace(':', '')}",
            "VBOARD_LIMIT": "0" if self.paused else "-1",
        })
        self._tasks += await self.firmware.start(self.firmware_dir / "main.py",
                                                 self.flash_dir, env, self.heap_kb)
        await self._wait_for(self.air.advertised, timeout, "advertising")

    async def stop(self) -> None:
        """Stop the firmware, take the insole off the radio, remove temporary files.
        Connected centrals see a disconnection."""
        try:
            for conn in list(self.connections.values()):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.disconnect(), 2)
        finally:
            self._stop_now()  # also when cancelled: no process or files left behind
        await self.firmware.wait()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        await self.link.wait_closed()
        if self.device is not None:
            await self.radio.release(self.device)
            self.device = None

    def _stop_now(self) -> None:
        self.firmware.kill()
        for t in self._tasks:
            t.cancel()
        self.link.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def _wait_for(self, event: asyncio.Event, timeout: float | None, what: str) -> None:
        exited = self.firmware.exited
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(exited.wait())]
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if event.is_set():
            return
        if exited.is_set():
            raise VBoardError(f"the firmware exited (status {self.returncode}) before "
                              f"{what}:\n{self._tail()}")
        raise VBoardError(f"no {what} within {timeout:.0f} s:\n{self._tail()}")

    def _tail(self) -> str:
        return self.firmware.tail()

    def _bridge_fault(self, text: str) -> None:
        self.firmware.stderr += text.encode()

    # ------------------------------------------------------------------ clock
    @property
    def trace_time(self) -> float:
        """The firmware's trace time in seconds (-1 before the first sample)."""
        return self.trace_us / 1e6 if self.trace_us >= 0 else -1.0

    async def run_until(self, trace_s: float, timeout: float | None = 60.0) -> float:
        """Let the clock run to trace time trace_s and stop there (BoardClock.run_until);
        returns the trace time reached."""
        return await self.clock.run_until(trace_s, timeout)

    async def run_for(self, seconds: float, timeout: float | None = 60.0) -> float:
        """run_until(now + seconds)."""
        return await self.clock.run_for(seconds, timeout)

    async def run_to_end(self, timeout: float | None = 60.0) -> float:
        """Let the clock run until the trace is exhausted; returns the trace time."""
        return await self.clock.run_to_end(timeout)

    async def pause(self, timeout: float | None = 10.0) -> float:
        """Stop the clock now; returns the trace time it stopped at."""
        return await self.clock.pause(timeout)

    def resume(self) -> None:
        """Let the clock run freely (until the trace ends)."""
        self.clock.resume()

    async def finished(self, timeout: float | None = None) -> None:
        """Wait until the firmware has sampled the whole trace (the clock then stops).
        It does not start a paused clock: see run_to_end()."""
        await self.clock.finished(timeout)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until what the firmware sent so far has left this host (BoardClock.drain)."""
        await self.clock.drain(timeout)

    def set_speed(self, speed: float) -> None:
        self.clock.set_speed(speed)

    def set_notify_buffers(self, count: int, refill_ms: float = 7.5) -> None:
        """NimBLE's notification buffer pool (BoardClock.set_notify_buffers)."""
        self.clock.set_notify_buffers(count, refill_ms)

    def fail_notifications(self, n: int) -> None:
        """The next n gatts_notify/gatts_indicate calls raise OSError(ENOMEM)."""
        self.clock.fail_notifications(n)

    def value(self, uuid) -> bytes | None:
        """The current value of the firmware's characteristic `uuid` (text or 16-bit
        int), as a central would read it; None if the firmware has no such value."""
        return self.gatt.value(uuid)

    @property
    def passkey(self) -> int | None:
        """The firmware's passkey: the one it printed on its console, else the one
        in the config on its flash (saved before BLE starts), else None."""
        if self.firmware.printed_passkey is not None:
            return self.firmware.printed_passkey
        return configured_passkey(self.flash_dir)

    @property
    def ended(self) -> bool:
        return self.clock.end.is_set()

    async def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """Wait for a serial line matching the regex, looking from line `start` of
        self.log on (len(vi.log) before an action: only lines after it); returns the
        match."""
        return await self.firmware.wait_log(pattern, timeout, start)

    # ------------------------------------------------------------------ firmware -> radio
    async def _on_frame(self, kind: int, trace_us: int, body: bytes) -> None:
        self.trace_us = trace_us
        if self.air.outages:
            await self.air.follow()
        await self._on_message(kind, body)
        self.clock.progress.set()

    async def _on_message(self, kind: int, body: bytes) -> None:
        if kind == MSG_NOTIFY or kind == MSG_INDICATE:
            conn_h, handle = struct.unpack_from("<HH", body)
            data = body[4:]
            self.notifications.append(Notification(self.trace_us, conn_h, handle, data,
                                                   kind == MSG_INDICATE))
            await self.gatt.forward(conn_h, handle, data, kind == MSG_INDICATE)
        elif kind == MSG_VALUE:
            handle, update = struct.unpack_from("<HB", body)
            await self.gatt.set_value(handle, body[3:], bool(update))
        elif kind == MSG_REGISTER:
            self.gatt.register(json.loads(body))
        elif kind == MSG_ADVERTISE:
            await self.air.advertise(json.loads(body))
        elif kind == MSG_CONFIG:
            self._config(json.loads(body))
        elif kind == MSG_DISCONNECT:
            (conn_h,) = struct.unpack_from("<H", body)
            conn = self.connections.get(conn_h)
            if conn is not None:
                self.spawn(conn.disconnect())
        elif kind == MSG_PAUSED:
            self.clock.paused_at = self.trace_us
        elif kind == MSG_END:
            self.clock.end.set()
        elif kind in (MSG_FIRST, MSG_HELLO):
            pass  # trace time 0 / the link is up: the header's trace time says it all
        elif kind == MSG_SECRET:
            self.link.answer(self.link.secret_replies, body)  # <B found/stored> value
        elif kind == MSG_SYNCED:
            self.link.answer(self.link.sync_replies, struct.unpack_from("<IB", body))
        elif kind == MSG_READ:
            self.link.answer(self.link.read_replies, (body[0], body[1], body[2:]))
        elif kind == MSG_PASSKEY:
            conn_h, action, value = struct.unpack_from("<HBI", body)
            self.pairing.passkey_answer(conn_h, (action, value))
        elif kind == MSG_KEYS:
            own = self.store.restored(body)
            if own is not None:
                self.device.irk = own  # the IRK the insole hands out when it pairs
            await self.device.refresh_resolving_list()
        elif kind == MSG_CLOCK:
            pass  # the trace time in its header is all it carries
        elif kind == MSG_REFUSED:
            self.refused += 1
        elif kind == MSG_RESET:
            self.log.append((self.trace_time, "(machine.reset)"))

    def _config(self, cfg: dict) -> None:
        from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC

        self.ble_config.update(cfg)
        if "gap_name" in cfg:
            self.device.name = cfg["gap_name"]
            for attr in self.device.gatt_server.attributes:
                if getattr(attr, "uuid", None) == GATT_DEVICE_NAME_CHARACTERISTIC:
                    attr.value = cfg["gap_name"].encode()[:248]
        if "mtu" in cfg:
            self.device.gatt_server.max_mtu = int(cfg["mtu"])

    # ------------------------------------------------------------------ the firmware's store
    async def _get_secret(self, sec_type: int, index: int, key: bytes | None,
                          timeout: float = 5.0) -> bytes | None:
        """_IRQ_GET_SECRET in the firmware: the value it returned."""
        got = await self.link.ask(self.link.secret_replies, HOST_GET_SECRET,
                                  struct.pack("<BBB", sec_type, index, key is not None)
                                  + (key or b""), timeout)
        return got[1:] if got and got[0] == 1 else None

    async def _set_secret(self, sec_type: int, key: bytes, value: bytes | None,
                          timeout: float = 5.0) -> bool:
        """_IRQ_SET_SECRET in the firmware: whether it says it stored it."""
        got = await self.link.ask(self.link.secret_replies, HOST_SET_SECRET,
                                  struct.pack("<BHB", sec_type, len(key), value is not None)
                                  + key + (value or b""), timeout)
        return bool(got) and got[0] == 1

    def _fatal(self, why: str) -> None:
        """NimBLE's task would spin for ever: record it and stop the board."""
        self.faults.append(why)
        self.link.send(HOST_FATAL, f"vboard: BLE stack stuck: {why}".encode())

    async def _drop_peer(self, address) -> None:
        # ble_gap_unpair: a connection to the unpaired peer is terminated
        key = store_key(address)
        for conn in list(self.connections.values()):
            if store_key(conn.peer_address) == key:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.disconnect(), 2)

    async def wait_stored(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until the keys of `count` pairings have been handed to the firmware
        (a NimBLE store write takes several IRQs); its main loop then writes them."""
        deadline = time.monotonic() + timeout
        while self.store.persisted < count:
            left = deadline - time.monotonic()
            if left <= 0 or self.firmware.exited.is_set():
                raise VBoardError(f"no pairing keys stored within {timeout} s:\n{self._tail()}")
            self.store.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.store.changed.wait(), left)

    # ------------------------------------------------------------------ IRQs
    async def irqs_delivered(self, timeout: float = 30.0) -> tuple[int, bool]:
        """Wait until every host event sent so far has reached the firmware (events
        wait in the board until it gives NimBLE the GIL); returns how many IRQs its
        handler has had, and whether it still has one (an exception removes it)."""
        got = await self.link.ask(self.link.sync_replies, HOST_SYNC, b"", timeout)
        if got is None:
            raise VBoardError(f"events not delivered within {timeout} s:\n{self._tail()}")
        return got[0], bool(got[1])

    def fire_irq(self, event, data) -> None:
        """Deliver an IRQ with any data to the firmware's handler, through the shim
        (so its handler-disable rule applies). data: a tuple (or anything) of ints,
        floats, None, bools, str, bytes, bytearray, memoryview, tuples and lists."""
        self.link.send(HOST_IRQ, json.dumps([event, encode_irq_value(data)]).encode())
