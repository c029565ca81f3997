"""The virtual insole: the unchanged firmware in the ``micropython`` unix port, on a real
BLE stack (bumble) in this process.

The firmware (``firmware/main.py``) runs in the MicroPython unix port with the shims
of ``boards/virtual`` first on its path: ``machine`` (the ADC reads a recorded trace),
``time`` (a virtual clock), ``bluetooth`` (MicroPython's low-level BLE API) and
``board``. The ``bluetooth`` shim talks over a unix socket to this module, which
serves the GATT table the firmware registered from a bumble ``Device``. A central
on the same radio sees a real GATT server: ATT reads, writes (Control needs an
encrypted link: the central must pair), notifications, MTU exchange and
encryption changes reach the firmware as the same IRQs an ESP32 raises, and the
pairing keys are stored by the firmware (_IRQ_SET_SECRET/_IRQ_GET_SECRET), so bonds
survive a restart on the same ``flash_dir``.

Radio: ``VirtualRadio()`` is bumble's in-process virtual radio (``LocalLink``): any
number of virtual insoles and centrals share it. ``VirtualRadio("usb:0")`` (any
bumble transport string) puts one virtual insole on a real controller instead, so
a phone can connect to it.

Time: the firmware only sees the virtual clock. It moves when the firmware sleeps,
``speed`` times faster than wall time (0 = as fast as the firmware runs). The ADC
returns the trace row for the current virtual time, counted from the first ADC
read (trace time 0). When the trace is exhausted the firmware stops sampling and
the clock stops (``finished()`` returns); ``run_until``/``run_for`` move it on.
Tests use ``paused=True`` and ``run_until`` to place events at exact trace times.

API::

    radio = VirtualRadio()                          # or VirtualRadio("usb:0")
    async with VirtualInsole("walk.csv", side="left", speed=0, radio=radio,
                             paused=True) as vi:
        central = Central(await radio.central())    # radio.central(): a bumble Device
        await central.connect(vi)                   # scan for vi.name, connect, discover
        await central.pair()                        # Control needs encryption
        got = await central.subscribe(protocol.UUID_STEP_EVENT)  # [(trace s, bytes)]
        await vi.run_until(30.0)                    # trace seconds; returns time reached
        await central.write(protocol.UUID_CONTROL, protocol.cmd_backfill(0))
        await vi.run_to_end()                       # trace exhausted (clock stops)
        vi.trace_time, vi.log, vi.notifications    # progress and records
    await radio.close()

Without ``paused`` the clock runs by itself; ``await vi.finished()`` waits for the end
of the trace. ``connect(central_device, vi)`` is the bare version of
``Central.connect`` (returns the bumble Connection).

``VirtualInsole`` also offers ``start()``/``stop()`` (what ``async with`` does),
``run_for(seconds)``, ``pause()``, ``resume()``, ``drain()`` (the clock calls end
with it: what the firmware sent so far has reached the radio), ``set_speed(x)``,
``set_notify_buffers(count, refill_ms)`` and ``fail_notifications(n)`` (the firmware's
``gatts_notify`` then raises ``OSError(ENOMEM)`` like a busy NimBLE), ``value(uuid)``
(a characteristic's current value), ``wait_log(regex)``, ``refused`` (ENOMEM count),
``name``, ``address``, ``handles``, ``connections`` and ``device`` (the bumble
peripheral).
"""

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host_tools.engine import EngineError, micropython_binary
from host_tools.tracefile import DEFAULT_RATE_HZ, TraceError, read_trace

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
SHIMS = ROOT / "boards" / "virtual"
CONFIG_FILE = "insole.json"  # the firmware's config file on its flash (app.CONFIG_PATH)
FIRMWARE_RATES = (50, 400)  # sample rates the firmware's config accepts

# shim -> host (frame: u16 length, u8 type, i64 trace µs, payload); see _vboard.py
MSG_HELLO, MSG_REGISTER, MSG_ADVERTISE = ord("H"), ord("R"), ord("A")
MSG_NOTIFY, MSG_INDICATE, MSG_VALUE = ord("N"), ord("I"), ord("V")
MSG_DISCONNECT, MSG_CONFIG, MSG_PAUSED = ord("D"), ord("C"), ord("P")
MSG_FIRST, MSG_END, MSG_RESET, MSG_REFUSED = ord("T"), ord("E"), ord("X"), ord("O")
MSG_CLOCK = ord("K")  # only carries the trace time, every 100 ms of it
MSG_SECRET = ord("S")  # the firmware's answer to HOST_GET_SECRET
# host -> shim (frame: u16 length, u8 type, payload)
HOST_CONNECT, HOST_DISCONNECT, HOST_WRITE = ord("c"), ord("d"), ord("w")
HOST_MTU, HOST_CONN_UPDATE, HOST_ENCRYPTION = ord("m"), ord("u"), ord("e")
HOST_INDICATE_DONE, HOST_HANDLES, HOST_CONTROL = ord("i"), ord("r"), ord("x")
HOST_GET_SECRET, HOST_SET_SECRET = ord("g"), ord("s")
SEC_PEER = 2  # NimBLE's store type for a peer's security keys

# MicroPython characteristic flags (bluetooth module, NimBLE values)
F_READ, F_WRITE_NR, F_WRITE, F_NOTIFY, F_INDICATE = 0x0002, 0x0004, 0x0008, 0x0010, 0x0020
F_AUX_WRITE, F_READ_ENC, F_READ_AUTHEN, F_READ_AUTHOR = 0x0100, 0x0200, 0x0400, 0x0800
F_WRITE_ENC, F_WRITE_AUTHEN, F_WRITE_AUTHOR = 0x1000, 0x2000, 0x4000


class VBoardError(RuntimeError):
    """The virtual insole could not start or died; the message says why."""


@dataclass
class Notification:
    """One notification or indication the firmware sent."""

    trace_us: int  # trace time when the firmware sent it (µs since the first sample)
    conn: int
    handle: int
    data: bytes
    indicate: bool = False

    @property
    def trace_s(self) -> float:
        return self.trace_us / 1e6


def _uid_for(side: str, index: int) -> bytes:
    return bytes((0x24, 0xD7, 0xEB, 0x10 + index, 0xA0 if side == "left" else 0xB0, 0xC1 + index))


def _address_for(uid: bytes) -> str:
    # the virtual controller's public address (also valid as a random static one)
    b = bytes((uid[0] | 0xC0,)) + uid[1:]
    return ":".join(f"{x:02X}" for x in b)


def bumble_uuid(text: str):
    """The bluetooth shim's UUID text (0x2a53 or dashed 128-bit) as a bumble UUID."""
    from bumble.core import UUID

    if text.startswith("0x"):
        v = int(text, 16)
        return UUID.from_16_bits(v) if v <= 0xFFFF else UUID.from_32_bits(v)
    return UUID(text)


def permissions_for(flags: int):
    """bumble attribute permissions for MicroPython characteristic flags."""
    from bumble.att import Attribute

    P = Attribute.Permissions
    perms = P(0)
    if flags & F_READ:
        perms |= P.READABLE
    if flags & (F_WRITE | F_WRITE_NR | F_AUX_WRITE):
        perms |= P.WRITEABLE
    for bit, perm in ((F_READ_ENC, P.READ_REQUIRES_ENCRYPTION),
                      (F_READ_AUTHEN, P.READ_REQUIRES_AUTHENTICATION),
                      (F_READ_AUTHOR, P.READ_REQUIRES_AUTHORIZATION),
                      (F_WRITE_ENC, P.WRITE_REQUIRES_ENCRYPTION),
                      (F_WRITE_AUTHEN, P.WRITE_REQUIRES_AUTHENTICATION),
                      (F_WRITE_AUTHOR, P.WRITE_REQUIRES_AUTHORIZATION)):
        if flags & bit:
            perms |= perm
    return perms


class VirtualRadio:
    """A radio for virtual insoles and bumble centrals.

    With no transport: bumble's in-process ``LocalLink`` (any number of devices).
    With a transport string (``usb:0``, ``tcp-client:127.0.0.1:1234``, ...): one
    virtual insole advertises through that controller.
    """

    def __init__(self, transport: str | None = None):
        self.transport = transport
        self.link = None
        self._hci = None
        self._devices: list = []
        self._centrals = 0
        if transport is None:
            from bumble.link import LocalLink

            self.link = LocalLink()

    async def device(self, name: str, address: str):
        """A bumble Device (not yet powered on) on this radio."""
        from bumble.device import Device
        from bumble.hci import Address

        if self.link is not None:
            from bumble.controller import Controller
            from bumble.host import Host
            from bumble.transport.common import AsyncPipeSink

            controller = Controller(name, link=self.link, public_address=address)
            dev = Device(name=name, address=Address(address),
                         host=Host(controller, AsyncPipeSink(controller)))
            dev._vboard_controller = controller
        else:
            if self._hci is not None:
                raise VBoardError(f"transport {self.transport} already carries a device")
            from bumble.transport import open_transport

            try:
                self._hci = await open_transport(self.transport)
            except Exception as exc:  # bumble raises several types for a bad spec
                hint = ""
                if self.transport.startswith("usb"):
                    hint = (" (is a Bluetooth USB dongle plugged in, readable by this user "
                            "and not held by the system's Bluetooth service?)")
                raise VBoardError(
                    f"cannot open transport {self.transport!r}: {exc}{hint}") from None
            dev = Device.with_hci(name, Address(address), self._hci.source, self._hci.sink)
        self._devices.append(dev)
        return dev

    async def central(self, name: str = "insole-central", address: str | None = None):
        """A powered-on bumble Device to act as a central on this radio (each call a
        new one, with its own address unless one is given)."""
        if self.link is None:
            raise VBoardError("a central needs the virtual radio (no transport)")
        if address is None:
            self._centrals += 1
            address = f"C0:00:00:00:CE:{self._centrals:02X}"
        from bumble.pairing import PairingConfig, PairingDelegate

        dev = await self.device(name, address)
        # the virtual radio routes LE links by random address: bond under that one
        dev.pairing_config_factory = lambda _conn: PairingConfig(
            identity_address_type=PairingConfig.AddressType.RANDOM,
            delegate=PairingDelegate())
        await dev.power_on()
        return dev

    async def release(self, dev) -> None:
        """Take a device off the radio."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(dev.power_off(), 2)
        controller = getattr(dev, "_vboard_controller", None)
        if controller is not None and self.link is not None:
            with contextlib.suppress(KeyError):
                self.link.remove_controller(controller)
        if dev in self._devices:
            self._devices.remove(dev)

    async def close(self) -> None:
        for dev in list(self._devices):
            await self.release(dev)
        if self._hci is not None:
            with contextlib.suppress(Exception):
                await self._hci.close()
            self._hci = None


async def find(central, name: str | None = None, address: str | None = None,
               timeout: float = 10.0):
    """Scan with a bumble central until an advertiser with this name (or address)
    shows up; returns its bumble Address."""
    from bumble.core import AdvertisingData

    loop = asyncio.get_running_loop()
    got = loop.create_future()

    def on_adv(adv) -> None:
        seen = adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or b""
        if isinstance(seen, bytes):
            seen = seen.decode("utf-8", "replace")
        ok = (name is None or seen == name) and (
            address is None or str(adv.address).split("/")[0] == address)
        if ok and not got.done():
            got.set_result(adv.address)

    central.on("advertisement", on_adv)
    try:
        await central.start_scanning(filter_duplicates=False)
        return await asyncio.wait_for(got, timeout)
    except asyncio.TimeoutError:
        raise VBoardError(f"no advertiser {name or address} seen in {timeout:.0f} s") from None
    finally:
        central.remove_listener("advertisement", on_adv)
        with contextlib.suppress(Exception):
            await central.stop_scanning()


async def connect(central, insole: VirtualInsole, timeout: float = 10.0):
    """Scan for the virtual insole's advertised name and connect; returns the bumble
    Connection (pair with ``await conn.pair()``, GATT with ``bumble.device.Peer(conn)``)."""
    address = await find(central, name=insole.name, timeout=timeout)
    return await asyncio.wait_for(central.connect(address), timeout)


def uuid_key(uuid) -> str:
    """A UUID (16-bit int, text, or bumble UUID) as lower-case dashed 128-bit text."""
    from bumble.core import UUID

    if isinstance(uuid, int):
        uuid = UUID.from_16_bits(uuid)
    elif isinstance(uuid, str):
        uuid = UUID(uuid)
    return str(UUID.from_bytes(uuid.to_bytes(force_128=True))).lower()


class Central:
    """A bumble central's GATT session with one virtual insole, for tests and tools.

        central = Central(await radio.central())
        await central.connect(insole)       # scan by name, connect, discover
        await central.pair()                 # encrypt (Control needs it)
        got = await central.subscribe(protocol.UUID_STEP_EVENT)   # list that fills up
        await central.write(protocol.UUID_CONTROL, protocol.cmd_backfill(0))
        value = await central.read(0x2A19)   # 16-bit UUIDs as ints
        await central.request_mtu(185)
        await central.disconnect()

    ``received[uuid]`` holds every notification of a subscribed characteristic as
    (trace time of the insole when it arrived, bytes).
    """

    def __init__(self, device):
        self.device = device
        self.connection = None
        self.peer = None
        self.insole: VirtualInsole | None = None
        self.characteristics: dict[str, object] = {}
        self.received: dict[str, list[tuple[float, bytes]]] = {}

    async def connect(self, insole: VirtualInsole, timeout: float = 10.0):
        from bumble.device import Peer

        self.insole = insole
        self.connection = await connect(self.device, insole, timeout)
        self.peer = Peer(self.connection)
        await asyncio.wait_for(self.peer.discover_services(), timeout)
        self.characteristics = {}
        for service in self.peer.services:
            await asyncio.wait_for(service.discover_characteristics(), timeout)
            for c in service.characteristics:
                self.characteristics[uuid_key(c.uuid)] = c
        return self.connection

    def characteristic(self, uuid):
        c = self.characteristics.get(uuid_key(uuid))
        if c is None:
            raise VBoardError(f"the insole has no characteristic {uuid}")
        return c

    async def pair(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.connection.pair(), timeout)

    async def subscribe(self, uuid, timeout: float = 10.0) -> list[tuple[float, bytes]]:
        key = uuid_key(uuid)
        got = self.received.setdefault(key, [])

        def on_value(value) -> None:
            got.append((self.insole.trace_time if self.insole else -1.0, bytes(value)))

        await asyncio.wait_for(self.characteristic(uuid).subscribe(on_value), timeout)
        return got

    async def read(self, uuid, timeout: float = 10.0) -> bytes:
        return bytes(await asyncio.wait_for(self.characteristic(uuid).read_value(), timeout))

    async def write(self, uuid, data: bytes, with_response: bool = True,
                    timeout: float = 10.0) -> None:
        await asyncio.wait_for(
            self.characteristic(uuid).write_value(data, with_response=with_response), timeout)

    async def request_mtu(self, mtu: int, timeout: float = 10.0) -> int:
        return await asyncio.wait_for(self.peer.request_mtu(mtu), timeout)

    async def disconnect(self, timeout: float = 10.0) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            await asyncio.wait_for(conn.disconnect(), timeout)


def _keystore_for(insole: VirtualInsole):
    """A bumble KeyStore that keeps the pairing keys with the firmware, through
    _IRQ_SET_SECRET/_IRQ_GET_SECRET, as NimBLE does on an ESP32: bonds then live in
    the board's flash and survive a restart."""
    from bumble.keys import KeyStore, PairingKeys

    class FirmwareKeyStore(KeyStore):
        async def get(self, name: str) -> PairingKeys | None:
            entry = await insole._get_secret(SEC_PEER, 0, name.encode())
            return None if entry is None else PairingKeys.from_dict(entry["keys"])

        async def update(self, name: str, keys: PairingKeys) -> None:
            value = json.dumps({"name": name, "keys": keys.to_dict()}).encode()
            insole._set_secret(SEC_PEER, name.encode(), value)

        async def delete(self, name: str) -> None:
            insole._set_secret(SEC_PEER, name.encode(), None)

        async def get_all(self) -> list[tuple[str, PairingKeys]]:
            out = []
            for index in range(64):  # the firmware keeps far fewer
                entry = await insole._get_secret(SEC_PEER, index, None)
                if entry is None:
                    break
                out.append((entry["name"], PairingKeys.from_dict(entry["keys"])))
            return out

    return FirmwareKeyStore()


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
    """

    def __init__(self, trace, side: str = "left", speed: float = 0.0,
                 radio: VirtualRadio | None = None, *, paused: bool = False,
                 rate_hz: int | None = None, flash_dir: str | Path | None = None,
                 index: int | None = None, on_line: Callable[[str], None] | None = None,
                 firmware_dir: str | Path = FIRMWARE, heap_kb: int | None = None):
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
        self.uid = _uid_for(side, self.index)
        self.address = _address_for(self.uid)
        self.name = ""  # the advertised name, once the firmware advertises
        self.on_line = on_line
        self.firmware_dir = Path(firmware_dir)
        self.heap_kb = heap_kb
        self._flash_arg = flash_dir
        self.flash_dir: Path | None = None
        self.device = None
        self.proc: asyncio.subprocess.Process | None = None
        self.handles: list[list[int]] = []
        self.log: list[tuple[float, str]] = []  # (trace s, serial line)
        self.notifications: list[Notification] = []
        self.refused = 0  # notifications refused with OSError(ENOMEM)
        self.connections: dict[int, object] = {}  # conn handle -> bumble Connection
        self.rows = 0
        self.trace_us = -1  # last trace time the firmware reported (µs)
        self.advertising = False
        self.ble_config: dict = {}
        self._tmp: str | None = None
        self._server = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task] = []
        self._values: dict[int, bytes] = {}
        self._chars: dict[int, tuple] = {}  # value handle -> (attribute, flags)
        self._base_attrs = 0
        self._services: list = []
        self._adv = b""
        self._resp = b""
        self._adv_event = asyncio.Event()
        self._end = asyncio.Event()
        self._exited = asyncio.Event()
        self._paused_at = -1
        self._progress = asyncio.Event()
        self._line_event = asyncio.Event()
        self._stderr = b""
        self.returncode: int | None = None
        self._secret_lock = asyncio.Lock()
        self._own_type = 1  # bumble OwnAddressType.RANDOM until the controller is known
        self._secret_reply: asyncio.Future | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> VirtualInsole:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _load_trace(self) -> tuple[np.ndarray, int]:
        if isinstance(self.trace, (str, Path)):
            try:
                tr = read_trace(self.trace)
            except TraceError as exc:
                raise VBoardError(str(exc)) from None
            rate = tr.rate_hz or self.rate_hz or DEFAULT_RATE_HZ
            samples = tr.samples
        else:
            samples = np.asarray(self.trace)
            rate = self.rate_hz or DEFAULT_RATE_HZ
        if samples.ndim != 2 or samples.shape[1] != 3 or len(samples) == 0:
            raise VBoardError("the trace must hold at least one (heel, arch, forefoot) row")
        if samples.min() < 0 or samples.max() > 65535:
            raise VBoardError("trace values must be within 0..65535")
        return samples, int(rate)

    def _prepare_flash(self, rate: int) -> None:
        if self._flash_arg is None:
            self.flash_dir = Path(self._tmp) / "flash"
        else:
            self.flash_dir = Path(self._flash_arg)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.flash_dir / CONFIG_FILE
        cfg: dict = {}
        if cfg_path.exists():
            with contextlib.suppress(ValueError, OSError):
                loaded = json.loads(cfg_path.read_text())
                if isinstance(loaded, dict):
                    cfg = loaded
        cfg["side"] = "L" if self.side == "left" else "R"
        if FIRMWARE_RATES[0] <= rate <= FIRMWARE_RATES[1]:
            cfg["rate_hz"] = rate
        cfg_path.write_text(json.dumps(cfg))

    async def start(self, timeout: float = 20.0) -> None:
        """Start the firmware and wait until it advertises."""
        samples, rate = self._load_trace()
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
        self._prepare_flash(rate)
        sock = str(Path(self._tmp) / "s")
        self._server = await asyncio.start_unix_server(self._on_client, path=sock)
        self.device = await self.radio.device(f"vboard-{self.side}", self.address)
        self._setup_device()
        await self.device.power_on()
        self._base_attrs = len(self.device.gatt_server.attributes)
        # On a real controller advertise from its public address, as MicroPython on an
        # ESP32 does by default. bumble's virtual radio routes LE links by random
        # addresses, so there (and on a controller without a public address) the
        # insole uses its random static address.
        from bumble.hci import Address, OwnAddressType

        public = self.device.public_address
        if self.radio.link is None and public != Address.ANY:
            self._own_type, addr_type = OwnAddressType.PUBLIC, 0
            self.address = str(public).split("/")[0]
        else:
            self._own_type, addr_type = OwnAddressType.RANDOM, 1
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
        main_py = self.firmware_dir / "main.py"
        if not main_py.exists():
            raise VBoardError(f"{main_py}: no such firmware entry point")
        try:
            cmd = [micropython_binary()]
        except EngineError as exc:
            raise VBoardError(str(exc)) from None
        if self.heap_kb:
            cmd += ["-X", f"heapsize={self.heap_kb}K"]
        cmd.append(str(main_py))
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=str(self.flash_dir), env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._tasks.append(asyncio.ensure_future(self._read_stdout()))
        self._tasks.append(asyncio.ensure_future(self._read_stderr()))
        self._tasks.append(asyncio.ensure_future(self._watch_exit()))
        await self._wait_for(self._adv_event, timeout, "advertising")

    async def stop(self) -> None:
        """Stop the firmware, take the insole off the radio, remove temporary files.
        Connected centrals see a disconnection."""
        try:
            for conn in list(self.connections.values()):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.disconnect(), 2)
        finally:
            self._stop_now()  # also when cancelled: no process or files left behind
        if self.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 5)
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self.device is not None:
            await self.radio.release(self.device)
            self.device = None

    def _stop_now(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        for t in self._tasks:
            t.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._server is not None:
            self._server.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def _wait_for(self, event: asyncio.Event, timeout: float | None, what: str) -> None:
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._exited.wait())]
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if event.is_set():
            return
        if self._exited.is_set():
            raise VBoardError(f"the firmware exited (status {self.returncode}) before "
                              f"{what}:\n{self._tail()}")
        raise VBoardError(f"no {what} within {timeout:.0f} s:\n{self._tail()}")

    def _tail(self) -> str:
        lines = [line for _, line in self.log[-8:]]
        err = self._stderr.decode("utf-8", "replace").strip().splitlines()[-12:]
        return "\n".join(lines + err)

    # ------------------------------------------------------------------ clock
    @property
    def trace_time(self) -> float:
        """The firmware's trace time in seconds (-1 before the first sample)."""
        return self.trace_us / 1e6 if self.trace_us >= 0 else -1.0

    def _control(self, **ctl) -> None:
        self._send(HOST_CONTROL, json.dumps(ctl).encode())

    async def run_until(self, trace_s: float, timeout: float | None = 60.0) -> float:
        """Let the clock run to trace time trace_s and stop there; returns the trace
        time reached. Before the end of the trace it stops there at the latest; once
        the trace has ended the clock runs on past it (the firmware lingers)."""
        limit = int(round(trace_s * 1e6))
        was_ended = self._end.is_set()
        self._paused_at = -1
        if was_ended:
            self._control(limit=limit, past_end=True)
        else:
            self._control(limit=limit)
        await self._until(lambda: self._paused_at >= limit or (
            not was_ended and self._end.is_set()), timeout, f"trace time {trace_s:.3f} s")
        await self.drain()
        return self.trace_time

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until what the firmware sent so far has left this host: bumble's
        outgoing queue is empty and, for a central in this process, the event loop has
        turned a few times to hand the packets over. run_until(), run_for(),
        run_to_end() and pause() end with it."""
        host = self.device.host if self.device is not None else None
        queue = host and (host.le_acl_packet_queue or host.acl_packet_queue)
        deadline = time.monotonic() + timeout
        while queue is not None and queue.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        for _ in range(20):
            await asyncio.sleep(0)

    async def run_for(self, seconds: float, timeout: float | None = 60.0) -> float:
        """run_until(now + seconds)."""
        return await self.run_until(max(self.trace_us, 0) / 1e6 + seconds, timeout)

    async def pause(self, timeout: float | None = 10.0) -> float:
        """Stop the clock now; returns the trace time it stopped at."""
        self._paused_at = -1
        self._control(limit=0)
        await self._until(lambda: self._paused_at >= 0 or self._end.is_set(), timeout,
                          "a stopped clock")
        await self.drain()
        return self.trace_time

    async def _until(self, pred, timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._progress.clear()
            if pred():
                return
            if self._exited.is_set():
                raise VBoardError(f"the firmware exited (status {self.returncode}) before "
                                  f"{what}:\n{self._tail()}")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise VBoardError(f"{what} not reached within {timeout} s "
                                  f"(trace time {self.trace_time:.3f} s)")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)

    def resume(self) -> None:
        """Let the clock run freely (until the trace ends)."""
        self._control(limit=-1)

    def set_speed(self, speed: float) -> None:
        self.speed = float(speed)
        self._control(speed=self.speed)

    def set_notify_buffers(self, count: int, refill_ms: float = 7.5) -> None:
        """Simulate NimBLE's buffer pool: at most `count` notifications in flight, one
        freed every refill_ms of trace time; beyond that gatts_notify raises
        OSError(ENOMEM). count 0 switches the simulation off."""
        self._control(notify_buffers=int(count), refill_us=int(refill_ms * 1000))

    def fail_notifications(self, n: int) -> None:
        """The next n gatts_notify/gatts_indicate calls raise OSError(ENOMEM)."""
        self._control(fail_notify=int(n))

    async def finished(self, timeout: float | None = None) -> None:
        """Wait until the firmware has sampled the whole trace (the clock then stops).
        It does not start a paused clock: see run_to_end()."""
        await self._wait_for(self._end, timeout, "end of trace")

    async def run_to_end(self, timeout: float | None = 60.0) -> float:
        """Let the clock run until the trace is exhausted; returns the trace time."""
        if not self._end.is_set():
            self._control(limit=-1)
            await self.finished(timeout)
        await self.drain()
        return self.trace_time

    def value(self, uuid) -> bytes | None:
        """The current value of the firmware's characteristic `uuid` (text or 16-bit
        int), as a central would read it; None if the firmware has no such value."""
        want = uuid_key(uuid)
        for handle, (attr, _flags) in self._chars.items():
            if uuid_key(attr.type) == want:
                return self._values.get(handle, b"")
        return None

    @property
    def ended(self) -> bool:
        return self._end.is_set()

    async def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """Wait for a serial line matching the regex, looking from line `start` of
        self.log on (len(vi.log) before an action: only lines after it); returns the
        match."""
        rx = re.compile(pattern)
        seen = start
        deadline = time.monotonic() + timeout
        while True:
            for _, line in self.log[seen:]:
                m = rx.search(line)
                if m:
                    return m
            seen = len(self.log)
            left = deadline - time.monotonic()
            if left <= 0 or self._exited.is_set():
                raise VBoardError(f"no serial line matching {pattern!r}:\n{self._tail()}")
            self._line_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._line_event.wait(), min(left, 0.5))

    # ------------------------------------------------------------------ process I/O
    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append((self.trace_time, line))
            self._line_event.set()
            if self.on_line is not None:
                self.on_line(f"{self.trace_time:8.3f} | {line}")

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            self._stderr = (self._stderr + raw)[-8000:]
            if self.on_line is not None:
                self.on_line(f"{self.trace_time:8.3f} ! {raw.decode('utf-8', 'replace').rstrip()}")

    async def _watch_exit(self) -> None:
        assert self.proc
        self.returncode = await self.proc.wait()
        await asyncio.sleep(0.05)  # let the pipes drain into the log
        self._exited.set()
        self._progress.set()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        if self._writer is not None:
            writer.close()
            return
        self._writer = writer
        try:
            while True:
                head = await reader.readexactly(2)
                (length,) = struct.unpack("<H", head)
                body = await reader.readexactly(length)
                kind = body[0]
                (self.trace_us,) = struct.unpack_from("<q", body, 1)
                await self._on_message(kind, body[9:])
                self._progress.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # a bridge fault: shown with the firmware's output
            self._stderr += f"\nbridge error: {exc!r}\n".encode()
            writer.close()
            raise

    def _send(self, kind: int, payload: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        self._writer.write(struct.pack("<HB", len(payload) + 1, kind) + payload)

    # ------------------------------------------------------------------ firmware -> radio
    async def _on_message(self, kind: int, body: bytes) -> None:
        if kind == MSG_NOTIFY or kind == MSG_INDICATE:
            conn_h, handle = struct.unpack_from("<HH", body)
            data = body[4:]
            self.notifications.append(Notification(self.trace_us, conn_h, handle, data,
                                                   kind == MSG_INDICATE))
            conn = self.connections.get(conn_h)
            entry = self._chars.get(handle)
            if conn is None or entry is None:
                return
            if kind == MSG_NOTIFY:
                await self.device.notify_subscriber(conn, entry[0], data, force=True)
            else:
                self._tasks.append(asyncio.ensure_future(self._indicate(conn, handle, data)))
        elif kind == MSG_VALUE:
            handle, update = struct.unpack_from("<HB", body)
            data = body[3:]
            self._values[handle] = data
            entry = self._chars.get(handle)
            if update and entry is not None:
                await self.device.notify_subscribers(entry[0], data)
                if entry[1] & F_INDICATE:
                    self._tasks.append(asyncio.ensure_future(
                        self.device.indicate_subscribers(entry[0], data)))
        elif kind == MSG_REGISTER:
            self._register(json.loads(body))
        elif kind == MSG_ADVERTISE:
            await self._advertise(json.loads(body))
        elif kind == MSG_CONFIG:
            self._config(json.loads(body))
        elif kind == MSG_DISCONNECT:
            (conn_h,) = struct.unpack_from("<H", body)
            conn = self.connections.get(conn_h)
            if conn is not None:
                self._tasks.append(asyncio.ensure_future(conn.disconnect()))
        elif kind == MSG_PAUSED:
            self._paused_at = self.trace_us
        elif kind == MSG_END:
            self._end.set()
        elif kind in (MSG_FIRST, MSG_HELLO):
            pass  # trace time 0 / the link is up: the header's trace time says it all
        elif kind == MSG_SECRET:
            if self._secret_reply is not None and not self._secret_reply.done():
                self._secret_reply.set_result(body[1:] if body[:1] == b"\x01" else None)
        elif kind == MSG_CLOCK:
            pass  # the trace time in its header is all it carries
        elif kind == MSG_REFUSED:
            self.refused += 1
        elif kind == MSG_RESET:
            self.log.append((self.trace_time, "(machine.reset)"))

    async def _get_secret(self, sec_type: int, index: int, key: bytes | None,
                          timeout: float = 5.0) -> dict | None:
        """_IRQ_GET_SECRET in the firmware; its answer as the JSON entry we stored."""
        if self._writer is None or self._exited.is_set():
            return None
        async with self._secret_lock:
            self._secret_reply = asyncio.get_running_loop().create_future()
            self._send(HOST_GET_SECRET, struct.pack("<BBB", sec_type, index, key is not None)
                       + (key or b""))
            try:
                value = await asyncio.wait_for(self._secret_reply, timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                self._secret_reply = None
        if value is None:
            return None
        try:
            entry = json.loads(value)
        except ValueError:
            return None  # not ours: the firmware's store holds something else
        return entry if isinstance(entry, dict) and "keys" in entry else None

    def _set_secret(self, sec_type: int, key: bytes, value: bytes | None) -> None:
        self._send(HOST_SET_SECRET, struct.pack("<BHB", sec_type, len(key), value is not None)
                   + key + (value or b""))

    async def _indicate(self, conn, handle: int, data: bytes) -> None:
        status = 0
        try:
            await self.device.indicate_subscriber(conn, self._chars[handle][0], data, force=True)
        except Exception:  # timeout or link loss: NimBLE reports a non-zero status
            status = 1
        self._send(HOST_INDICATE_DONE, struct.pack("<HHB", conn.handle, handle, status))

    def _register(self, spec: list) -> None:
        from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service

        server = self.device.gatt_server
        if self._services:  # registering again replaces the firmware's services
            del server.attributes[self._base_attrs:]
            server.attributes_by_handle.clear()
            for s in self._services:
                server.services.remove(s)
        self._services = []
        self._chars = {}
        self._values = {}
        objs = []
        for svc_uuid, chars in spec:
            characteristics = []
            per_char = []
            for c_uuid, flags, descs in chars:
                ch = Characteristic(bumble_uuid(c_uuid), Characteristic.Properties(flags & 0x7F),
                                    permissions_for(flags))
                ch.value = CharacteristicValue(read=self._reader(ch, flags),
                                               write=self._writer_for(ch, flags))
                dlist = []
                for d_uuid, d_flags in descs:
                    d = Descriptor(bumble_uuid(d_uuid), permissions_for(d_flags))
                    d.value = CharacteristicValue(read=self._reader(d, d_flags),
                                                  write=self._writer_for(d, d_flags))
                    dlist.append((d, d_flags))
                ch.descriptors = [d for d, _ in dlist]
                characteristics.append(ch)
                per_char.append((ch, flags, dlist))
            service = Service(bumble_uuid(svc_uuid), characteristics)
            server.add_service(service)
            self._services.append(service)
            objs.append(per_char)
        handles = []
        for per_char in objs:
            hs = []
            for ch, flags, dlist in per_char:
                hs.append(ch.handle)
                self._chars[ch.handle] = (ch, flags)
                self._values[ch.handle] = b""
                for d, d_flags in dlist:
                    hs.append(d.handle)
                    self._chars[d.handle] = (d, d_flags)
                    self._values[d.handle] = b""
            handles.append(hs)
        self.handles = handles
        self._send(HOST_HANDLES, json.dumps(handles).encode())

    def _reader(self, attr, flags: int):
        from bumble.att import ATT_READ_NOT_PERMITTED_ERROR, ATT_Error

        def read(_conn) -> bytes:
            if not flags & F_READ:
                raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)
            return self._values.get(attr.handle, b"")

        return read

    def _writer_for(self, attr, flags: int):
        from bumble.att import ATT_WRITE_NOT_PERMITTED_ERROR, ATT_Error

        def write(conn, value: bytes) -> None:
            if not flags & (F_WRITE | F_WRITE_NR | F_AUX_WRITE):
                raise ATT_Error(ATT_WRITE_NOT_PERMITTED_ERROR)
            value = bytes(value)
            self._values[attr.handle] = value
            self._send(HOST_WRITE, struct.pack("<HH", conn.handle, attr.handle) + value)

        return write

    async def _advertise(self, msg: dict) -> None:
        from bumble.core import AdvertisingData
        from bumble.device import AdvertisingType

        if msg.get("adv") is not None:
            self._adv = bytes.fromhex(msg["adv"])
        if msg.get("resp") is not None:
            self._resp = bytes.fromhex(msg["resp"])
        if msg.get("interval_us") is None:
            self.advertising = False
            await self.device.stop_advertising()
            return
        name = AdvertisingData.from_bytes(self._adv).get(AdvertisingData.COMPLETE_LOCAL_NAME)
        if name:
            self.name = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        interval_ms = max(20.0, msg["interval_us"] / 1000)
        kind = (AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE if msg.get("connectable", True)
                else AdvertisingType.UNDIRECTED_SCANNABLE)
        await self.device.start_advertising(
            advertising_type=kind, own_address_type=self._own_type,
            advertising_data=self._adv, scan_response_data=self._resp,
            advertising_interval_min=interval_ms, advertising_interval_max=interval_ms)
        self.advertising = True
        self._adv_event.set()

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

    # ------------------------------------------------------------------ radio -> firmware
    def _setup_device(self) -> None:
        from bumble.pairing import PairingConfig, PairingDelegate

        dev = self.device

        def pairing_config(_conn) -> PairingConfig:
            c = self.ble_config
            return PairingConfig(
                sc=bool(c.get("le_secure", False)), mitm=bool(c.get("mitm", False)),
                bonding=bool(c.get("bond", False)),
                identity_address_type=(PairingConfig.AddressType.PUBLIC
                                       if self._own_type == 0 else
                                       PairingConfig.AddressType.RANDOM),
                delegate=PairingDelegate(io_capability=PairingDelegate.IoCapability(
                    int(c.get("io", 3)))))

        dev.pairing_config_factory = pairing_config
        dev.keystore = _keystore_for(self)
        dev.on("connection", self._on_connection)

    @staticmethod
    def _peer(conn) -> tuple[int, bytes]:
        addr = conn.peer_address
        return int(addr.address_type) & 1, bytes(reversed(bytes(addr)))

    def _on_connection(self, conn) -> None:
        h = conn.handle
        self.connections[h] = conn
        addr_type, addr = self._peer(conn)
        self.advertising = False
        self._send(HOST_CONNECT, struct.pack("<HB", h, addr_type) + addr)

        def on_disconnection(_reason) -> None:
            self.connections.pop(h, None)
            self._send(HOST_DISCONNECT, struct.pack("<HB", h, addr_type) + addr)

        def on_mtu() -> None:
            self._send(HOST_MTU, struct.pack("<HH", h, conn.att_mtu))

        def on_params() -> None:
            p = conn.parameters
            self._send(HOST_CONN_UPDATE, struct.pack(
                "<HHHHB", h, int(round(p.connection_interval / 1.25)), p.peripheral_latency,
                int(round(p.supervision_timeout / 10)), 0))

        def on_encryption() -> None:
            # bumble marks every encrypted LE link authenticated; NimBLE means a
            # MITM-protected key, which a device without input/output never gets
            c = self.ble_config
            enc = bool(conn.encryption)
            auth = enc and bool(c.get("mitm", False)) and int(c.get("io", 3)) != 3
            bonded = enc and bool(c.get("bond", False))
            self._send(HOST_ENCRYPTION, struct.pack(
                "<HBBBB", h, enc, auth, bonded, conn.encryption_key_size or 16))

        conn.on("disconnection", on_disconnection)
        conn.on("connection_att_mtu_update", on_mtu)
        conn.on("connection_parameters_update", on_params)
        conn.on("connection_encryption_change", on_encryption)
