"""The virtual insole: the unchanged firmware in the ``micropython`` unix port, on a real
BLE stack (bumble) in this process.

The firmware (``firmware/main.py``) runs in the MicroPython unix port with the shims
of ``boards/virtual`` first on its path: ``machine`` (the ADC reads a recorded trace),
``time`` (a virtual clock), ``bluetooth`` (MicroPython's low-level BLE API) and
``board``. The ``bluetooth`` shim talks over a unix socket to this module, which
serves the GATT table the firmware registered from a bumble ``Device``. A central
on the same radio sees a real GATT server: ATT reads (each one an
_IRQ_GATTS_READ_REQUEST the firmware may refuse), writes, notifications, MTU exchange,
pairing (the firmware's passkey through _IRQ_PASSKEY_ACTION and gap_passkey()) and
encryption changes reach the firmware as the same IRQs an ESP32 raises, and the
characteristic flags are checked as NimBLE checks them (an authenticated key is a
MITM-protected one: the insole service needs a bond made with the passkey). The
pairing keys are kept by the firmware as NimBLE keeps them (``NimbleStore``: its
records, keys and store walks through _IRQ_SET_SECRET/_IRQ_GET_SECRET), so bonds
survive a restart on the same ``flash_dir``, also with a central that uses a
resolvable private address.

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
        await central.pair()                        # with vi.passkey: the insole service
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
``wait_stored()`` (a pairing's keys have reached the firmware), ``fire_irq(event,
data)`` (any IRQ with any data, for fuzzing), ``irqs_delivered()`` (all events sent
so far reached the handler: how many it got, and whether it is still set),
``faults`` (why NimBLE would be stuck: the board is then stopped),
``schedule_outage(at_s, seconds)`` and ``radio_outage(seconds)`` (the radio link gone
for that much trace time, as out of range: centrals are disconnected and nobody hears the
insole advertise; ``in_outage``, ``outages_left``), ``name``,
``address``, ``handles``, ``connections`` and ``device`` (the bumble peripheral).
``radio.central(private=True)`` is a central with LE privacy (an RPA from its own
IRK); ``VirtualRadio.new_private_address(dev)`` gives it a fresh one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
MSG_SECRET = ord("S")  # the firmware's answer to HOST_GET_SECRET / HOST_SET_SECRET
MSG_KEYS = ord("Y")  # active(True)'s store reads: [own IRK (16)] + 80-byte peer records
MSG_READ = ord("Q")  # <BB denied, ATT error> value: the answer to HOST_READ
MSG_SYNCED = ord("Z")  # <IB IRQs raised so far, handler set>: the answer to HOST_SYNC
# host -> shim (frame: u16 length, u8 type, payload)
HOST_CONNECT, HOST_DISCONNECT, HOST_WRITE = ord("c"), ord("d"), ord("w")
HOST_MTU, HOST_CONN_UPDATE, HOST_ENCRYPTION = ord("m"), ord("u"), ord("e")
HOST_INDICATE_DONE, HOST_HANDLES, HOST_CONTROL = ord("i"), ord("r"), ord("x")
HOST_GET_SECRET, HOST_SET_SECRET = ord("g"), ord("s")
HOST_READ, HOST_IRQ, HOST_FATAL, HOST_SYNC = ord("q"), ord("j"), ord("f"), ord("y")
HOST_PASSKEY = ord("k")  # <HBI conn, action, number>: _IRQ_PASSKEY_ACTION
MSG_PASSKEY = ord("W")  # <HBI conn, action, passkey>: what the firmware's gap_passkey() gave
# passkey actions (modbluetooth.h MP_BLUETOOTH_PASSKEY_ACTION_*, NimBLE BLE_SM_IOACT_*)
PASSKEY_INPUT, PASSKEY_DISPLAY, PASSKEY_NUMCMP = 2, 3, 4
SM_TIMEOUT_S = 30.0  # BLE_SM_TIMEOUT_MS: NimBLE ends a pairing that waits longer
# ATT errors NimBLE's ble_att_svr_check_perms answers
ATT_INSUFFICIENT_AUTHEN, ATT_INSUFFICIENT_ENC = 0x05, 0x0F

# NimBLE's store as MicroPython hands it to the IRQ handler (modbluetooth_nimble.c
# ble_secret_store_*): object types, keys (a ble_addr_t: type + address, LSB first)
# and values (a struct ble_store_value_sec, nimble/host/include/host/ble_store.h)
SEC_OUR, SEC_PEER, SEC_OUR_IRK = 1, 2, 10  # BLE_STORE_OBJ_TYPE_OUR/PEER_SEC, load_irk()
SEC_RECORD_FORMAT = "<B6sBH6xQ16sB16sB16sB5x"  # the struct as GCC lays it out: 80 bytes
MAX_BONDS = 3  # ESP-IDF's CONFIG_BT_NIMBLE_MAX_BONDS default
PASSKEY_RE = re.compile(r"^passkey (\d{6})\b")  # the firmware's console line (app.py)
_STORE_INDEX_WRAP = 256  # struct ble_store_key_sec.idx is a uint8_t
_STORE_LOOP_MAX = 64  # NimBLE loops this long on a store that never says "done": stuck

# MicroPython characteristic flags (bluetooth module, NimBLE values)
F_READ, F_WRITE_NR, F_WRITE, F_NOTIFY, F_INDICATE = 0x0002, 0x0004, 0x0008, 0x0010, 0x0020
F_AUX_WRITE, F_READ_ENC, F_READ_AUTHEN, F_READ_AUTHOR = 0x0100, 0x0200, 0x0400, 0x0800
F_WRITE_ENC, F_WRITE_AUTHEN, F_WRITE_AUTHOR = 0x1000, 0x2000, 0x4000


def _encode_irq_value(value):
    """A HOST_IRQ value as [kind, payload] (boards/virtual/bluetooth.py _decode)."""
    if value is None:
        return ["n"]
    if value is True or value is False:
        return ["T" if value else "F"]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, float):
        return ["f", value]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, bytes):
        return ["b", value.hex()]
    if isinstance(value, bytearray):
        return ["a", bytes(value).hex()]
    if isinstance(value, memoryview):
        return ["m", bytes(value).hex()]
    if isinstance(value, tuple):
        return ["t", [_encode_irq_value(v) for v in value]]
    if isinstance(value, list):
        return ["l", [_encode_irq_value(v) for v in value]]
    raise TypeError(f"no IRQ encoding for {type(value).__name__}")


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
    """bumble attribute permissions for MicroPython characteristic flags: readable
    and writeable only. The security flags are checked by the bridge itself, as
    NimBLE does (``security_error``): bumble counts every encrypted LE link as
    authenticated, NimBLE only one whose key was made with MITM protection."""
    from bumble.att import Attribute

    P = Attribute.Permissions
    perms = P(0)
    if flags & F_READ:
        perms |= P.READABLE
    if flags & (F_WRITE | F_WRITE_NR | F_AUX_WRITE):
        perms |= P.WRITEABLE
    return perms


def cccd_flags(flags: int) -> int:
    """The security flags of a characteristic's CCCD: writing it switches the
    notifications on, so it asks what the characteristic asks (NimBLE ble_gatts.c
    ble_gatts_register_clt_cfg_dsc: encryption and authentication are inherited,
    authorisation is not)."""
    out = F_READ | F_WRITE
    if flags & (F_READ_ENC | F_WRITE_ENC):
        out |= F_WRITE_ENC
    if flags & (F_READ_AUTHEN | F_WRITE_AUTHEN):
        out |= F_WRITE_AUTHEN
    return out


@dataclass
class LinkSecurity:
    """A connection's security state as NimBLE keeps it (struct ble_gap_sec_state)."""

    encrypted: bool = False
    authenticated: bool = False
    bonded: bool = False
    key_size: int = 0
    pairing: bool = False  # a pairing is under way (its encryption is not reported yet)
    restore_authenticated: bool = False  # the stored key this link asked for
    # cleared while a finished pairing's keys go to the firmware: NimBLE stores them
    # and reports the encryption before it handles the next ATT request
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.settled.set()


def security_error(flags: int, is_read: bool, sec: LinkSecurity, has_ltk: bool) -> int:
    """The ATT error NimBLE answers for this access, 0 when it is allowed
    (ble_att_svr_check_perms, BLE_SM_SC_ONLY off). Read/write permission itself is
    checked before. has_ltk: the store holds an LTK for the peer, which makes an
    unencrypted access "insufficient encryption" (re-encrypt) rather than
    "insufficient authentication" (pair)."""
    enc = flags & (F_READ_ENC if is_read else F_WRITE_ENC)
    authen = flags & (F_READ_AUTHEN if is_read else F_WRITE_AUTHEN)
    if (enc or authen) and not sec.encrypted:
        return ATT_INSUFFICIENT_ENC if has_ltk else ATT_INSUFFICIENT_AUTHEN
    if authen and not sec.authenticated:
        return ATT_INSUFFICIENT_AUTHEN
    return 0


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

    async def central(self, name: str = "insole-central", address: str | None = None,
                      private: bool = False):
        """A powered-on bumble Device to act as a central on this radio (each call a
        new one, with its own address unless one is given). private: it connects from
        a resolvable private address made with its own IRK, as phones do, and hands
        out that IRK with its identity (the random static address) when it pairs."""
        if self.link is None:
            raise VBoardError("a central needs the virtual radio (no transport)")
        if address is None:
            self._centrals += 1
            address = f"C0:00:00:00:CE:{self._centrals:02X}"
        from bumble.pairing import PairingConfig, PairingDelegate

        dev = await self.device(name, address)
        if private:
            dev.irk = os.urandom(16)
            dev.le_privacy_enabled = True  # power_on() takes an RPA from dev.irk
        # the virtual radio routes LE links by random address: bond under that one
        dev.pairing_config_factory = lambda _conn: PairingConfig(
            identity_address_type=PairingConfig.AddressType.RANDOM,
            delegate=PairingDelegate())
        await dev.power_on()
        return dev

    @staticmethod
    async def new_private_address(dev):
        """Give a private central a fresh resolvable private address (as a phone does
        every few minutes); returns it."""
        from bumble.hci import Address, HCI_LE_Set_Random_Address_Command

        rpa = Address.generate_private_address(dev.irk)
        await dev.send_command(HCI_LE_Set_Random_Address_Command(random_address=rpa))
        dev.random_address = rpa
        return rpa

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


def use_passkey(device, passkey: int | None) -> None:
    """Make a bumble central pair with LE Secure Connections and MITM protection,
    typing `passkey` when the peripheral shows one (None: it cannot type one, and
    pairs "just works")."""
    from bumble.pairing import PairingConfig, PairingDelegate

    class Keyboard(PairingDelegate):
        async def get_number(self) -> int | None:
            return passkey

    io = (PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY if passkey is not None
          else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT)
    device.pairing_config_factory = lambda _conn: PairingConfig(
        sc=True, mitm=passkey is not None, bonding=True,
        identity_address_type=PairingConfig.AddressType.RANDOM,
        delegate=Keyboard(io_capability=io))


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
        await central.pair()                 # bond with the insole's passkey (vi.passkey)
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

    async def pair(self, passkey: int | None = None, timeout: float = 10.0) -> None:
        """Pair and bond as a central with a keyboard, entering `passkey` when the
        insole asks for it (default: the insole's own, vi.passkey, which its owner
        knows from the label or the serial console)."""
        if passkey is None and self.insole is not None:
            passkey = self.insole.passkey
        use_passkey(self.device, passkey)
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


@dataclass
class SecRecord:
    """A struct ble_store_value_sec: what NimBLE stores per bonded peer, once as "our"
    keys (SEC_OUR: the LTK the insole gave, and its IRK) and once as the peer's
    (SEC_PEER: the central's IRK and, with LE Secure Connections, the same LTK)."""

    addr_type: int  # 0 public, 1 random (an identity address)
    addr: bytes  # 6 bytes, least significant first (ble_addr_t.val)
    key_size: int = 16
    ediv: int = 0
    rand: int = 0
    ltk: bytes | None = None
    irk: bytes | None = None
    csrk: bytes | None = None
    authenticated: bool = False
    sc: bool = False

    @property
    def key(self) -> bytes:
        """The store key NimBLE passes to _IRQ_*_SECRET for this peer."""
        return bytes((self.addr_type,)) + self.addr

    def pack(self) -> bytes:
        flags = ((self.csrk is not None) | (self.authenticated << 1) | (self.sc << 2))
        return struct.pack(SEC_RECORD_FORMAT, self.addr_type, self.addr, self.key_size,
                           self.ediv, self.rand, self.ltk or bytes(16), self.ltk is not None,
                           self.irk or bytes(16), self.irk is not None,
                           self.csrk or bytes(16), flags)

    @classmethod
    def unpack(cls, data: bytes) -> SecRecord | None:
        """The record, or None when data is not one (NimBLE: ENOENT)."""
        if len(data) != struct.calcsize(SEC_RECORD_FORMAT):
            return None
        (addr_type, addr, key_size, ediv, rand, ltk, has_ltk, irk, has_irk, csrk,
         flags) = struct.unpack(SEC_RECORD_FORMAT, data)
        return cls(addr_type, addr, key_size, ediv, rand, ltk if has_ltk & 1 else None,
                   irk if has_irk & 1 else None, csrk if flags & 1 else None,
                   bool(flags & 2), bool(flags & 4))


def store_key(address) -> bytes:
    """A bumble Address (or its text) as NimBLE's store key (ble_addr_t)."""
    from bumble.hci import Address

    if isinstance(address, str):
        address = Address(address)
    return bytes((int(address.address_type) & 1,)) + bytes(address)


def _address_of(key: bytes):
    from bumble.hci import Address

    return Address(key[1:7], Address.RANDOM_DEVICE_ADDRESS if key[0] & 1
                   else Address.PUBLIC_DEVICE_ADDRESS)


class NimbleStore:
    """The bond store as NimBLE drives it through MicroPython's secret IRQs, with
    bumble doing the pairing. Each step names the NimBLE code it follows:

    - pairing done (ble_sm_persist_keys): a peer that was bonded already loses its
      old bond first (ble_sm_chk_repeat_pairing, then MicroPython's
      BLE_GAP_EVENT_REPEAT_PAIRING: ble_store_util_delete_peer), the records are
      counted (ble_sm_chk_store_overflow), then SET_SECRET(1) and SET_SECRET(2);
      a refused write unpairs the oldest peer and tries again
      (ble_store_util_status_rr -> ble_gap_unpair_oldest_peer);
    - a delete repeats until the handler says there is nothing left
      (ble_store_util_delete_all), so a handler that answers True to every delete
      leaves NimBLE's task spinning: the board is then stopped as stuck;
    - reconnection (ble_sm_retrieve_ltk): GET_SECRET(1, 0, key) and the LTK only if
      ediv and rand match;
    - the resolving list: the peer IRKs active(True) read (MSG_KEYS) plus those of
      new bonds (ble_store_write_peer_sec -> ble_hs_pvcy_add_entry).
    """

    def __init__(self, insole: VirtualInsole):
        self.insole = insole
        self.resolving: dict[bytes, bytes] = {}  # store key -> peer IRK
        self.persisted = 0  # pairings whose keys went through to the firmware
        self.changed = asyncio.Event()

    async def get(self, sec_type: int, index: int, key: bytes | None) -> bytes | None:
        return await self.insole._get_secret(sec_type, index, key)

    async def record(self, sec_type: int, index: int, key: bytes | None) -> SecRecord | None:
        value = await self.get(sec_type, index, key)
        return None if value is None else SecRecord.unpack(value)

    async def count(self, sec_type: int) -> int:
        # ble_store_util_count -> ble_store_iterate
        n = 0
        while await self.record(sec_type, n % _STORE_INDEX_WRAP, None) is not None:
            n += 1
            if n >= _STORE_INDEX_WRAP:
                self.insole._fatal("ble_store_iterate never ends: the store answers every "
                                   f"index of type {sec_type}")
                break
        return n

    async def delete_all(self, sec_type: int, key: bytes) -> None:
        for _ in range(_STORE_LOOP_MAX):
            if not await self.insole._set_secret(sec_type, key, None):
                return
        self.insole._fatal(f"ble_store_util_delete_all never ends: the handler keeps "
                           f"answering True to deleting type {sec_type} key {key.hex()}")

    async def delete_peer(self, key: bytes) -> None:
        # ble_store_util_delete_peer (the CCCD records never reach MicroPython)
        await self.delete_all(SEC_OUR, key)
        await self.delete_all(SEC_PEER, key)
        self.resolving.pop(key, None)

    async def oldest_peer(self) -> bytes | None:
        # ble_store_util_bonded_peers(max_peers=1) iterates SEC_OUR until a second peer
        first = None
        for index in range(_STORE_INDEX_WRAP):
            rec = await self.record(SEC_OUR, index, None)
            if rec is None or (first is not None and rec.key != first):
                break
            first = rec.key
        return first

    async def write(self, sec_type: int, rec: SecRecord) -> bool:
        # ble_store_write: on BLE_HS_ESTORE_CAP the status callback makes room
        for _ in range(_STORE_LOOP_MAX):
            if await self.insole._set_secret(sec_type, rec.key, rec.pack()):
                return True
            oldest = await self.oldest_peer()
            if oldest is None:
                return False  # ble_gap_unpair_oldest_peer: BLE_HS_ENOENT
            await self.insole._drop_peer(_address_of(oldest))
            await self.delete_peer(oldest)
        self.insole._fatal("ble_store_write never succeeds")
        return False

    async def persist(self, name: str, keys) -> None:
        key = store_key(name)
        for _ in range(_STORE_LOOP_MAX):
            if await self.record(SEC_PEER, 0, key) is None:
                break
            await self.delete_peer(key)
        else:
            self.insole._fatal("ble_sm_chk_repeat_pairing never ends: the old bond stays")
        await self.count(SEC_PEER)
        await self.count(SEC_OUR)
        our, peer = self.records(key, keys)
        if await self.write(SEC_OUR, our) and await self.write(SEC_PEER, peer):
            if peer.irk is not None:
                self.resolving[key] = peer.irk
        self.persisted += 1
        self.changed.set()

    def records(self, key: bytes, keys) -> tuple[SecRecord, SecRecord]:
        """bumble's PairingKeys (the insole as responder) as NimBLE's two records
        (ble_sm_fill_store_value)."""
        sc = keys.ltk is not None
        ours = keys.ltk if sc else keys.ltk_peripheral
        theirs = keys.ltk if sc else keys.ltk_central
        auth = bool(ours.authenticated) if ours is not None else False

        def rec(ltk, irk, csrk) -> SecRecord:
            return SecRecord(key[0], key[1:7], 16,
                             (ltk.ediv or 0) if ltk is not None and not sc else 0,
                             int.from_bytes(ltk.rand or bytes(8), "little")
                             if ltk is not None and not sc else 0,
                             ltk.value if ltk is not None else None, irk, csrk, auth, sc)

        device = self.insole.device
        return (rec(ours, device.irk if device is not None else None, None),
                rec(theirs, keys.irk.value if keys.irk else None,
                    keys.csrk.value if keys.csrk else None))

    async def stored_key(self, address, rand: bytes, ediv: int) -> SecRecord | None:
        # ble_sm_ltk_req_rx -> ble_sm_retrieve_ltk
        rec = await self.record(SEC_OUR, 0, store_key(address))
        if rec is None or rec.ediv != ediv or rec.rand != int.from_bytes(rand, "little"):
            return None
        return rec if rec.ltk is not None else None

    def restored(self, body: bytes) -> bytes | None:
        """MSG_KEYS: the resolving list active(True) restored; returns the own IRK."""
        size = struct.calcsize(SEC_RECORD_FORMAT)
        own = body[: len(body) % size] or None
        self.resolving = {}
        for i in range(len(own or b""), len(body), size):
            rec = SecRecord.unpack(body[i : i + size])
            if rec is not None and rec.irk is not None:
                self.resolving[rec.key] = rec.irk
        return own


def _keystore_for(insole: VirtualInsole):
    """A bumble KeyStore over NimbleStore: bumble's questions answered the way NimBLE
    answers them on an ESP32, from the firmware's own store."""
    from bumble.keys import KeyStore, PairingKeys

    store = insole.store

    class FirmwareKeyStore(KeyStore):
        async def get(self, name: str) -> PairingKeys | None:
            rec = await store.record(SEC_OUR, 0, store_key(name))
            if rec is None or rec.ltk is None:
                return None
            key = PairingKeys.Key(rec.ltk, rec.authenticated)
            if rec.sc:
                return PairingKeys(address_type=rec.addr_type, ltk=key)
            key.ediv, key.rand = rec.ediv, rec.rand.to_bytes(8, "little")
            return PairingKeys(address_type=rec.addr_type, ltk_peripheral=key)

        async def update(self, name: str, keys: PairingKeys) -> None:
            for sec in insole.security.values():
                if sec.pairing:
                    sec.settled.clear()  # its ATT requests wait for the report
            await store.persist(name, keys)

        async def delete(self, name: str) -> None:
            await store.delete_peer(store_key(name))

        async def get_all(self) -> list[tuple[str, PairingKeys]]:
            # the resolving list (ble_hs_pvcy), not a walk of the store
            return [(str(_address_of(k)).split("/")[0],
                     PairingKeys(address_type=k[0], irk=PairingKeys.Key(irk)))
                    for k, irk in store.resolving.items()]

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
        self._own_type = 1  # bumble OwnAddressType.RANDOM until the controller is known
        # answers of the board, in the order it gives them
        self._secret_replies: collections.deque[asyncio.Future] = collections.deque()
        self._read_replies: collections.deque[asyncio.Future] = collections.deque()
        self._sync_replies: collections.deque[asyncio.Future] = collections.deque()
        self.store = NimbleStore(self)
        self.faults: list[str] = []  # why the BLE stack would be stuck for good
        # radio outages (schedule_outage): [start, end) trace µs, the earliest first
        self._outages: list[list[int]] = []
        self.in_outage = False
        self.outages_begun = 0
        self._cut: set[int] = set()  # connection handles an outage has disconnected
        self._adv_wanted: dict | None = None  # the firmware's last advertising request
        self.security: dict[int, LinkSecurity] = {}  # conn handle -> as NimBLE keeps it
        self._passkeys: dict[int, asyncio.Future] = {}  # conn -> the firmware's answer
        self.passkey_timeout = SM_TIMEOUT_S
        self._printed_passkey: int | None = None
        self._passkey_arg = passkey

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
        if self._passkey_arg is not None:
            cfg["passkey"] = int(self._passkey_arg)
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

    # ------------------------------------------------------------------ radio outages
    def schedule_outage(self, at_s: float, seconds: float) -> None:
        """Take the radio link away from trace time at_s for `seconds` of trace time,
        as walking out of range does: connected centrals are disconnected, and while it
        lasts nobody hears the insole advertise, so none can (re)connect. The firmware
        sees the disconnect and keeps advertising; nothing else changes for it."""
        if at_s < 0 or seconds <= 0:
            raise VBoardError("an outage starts at trace time >= 0 and lasts > 0 s")
        start = int(round(at_s * 1e6))
        self._outages.append([start, start + int(round(seconds * 1e6))])
        self._outages.sort()

    @property
    def outages_left(self) -> int:
        """Outages scheduled that have not ended yet."""
        return len(self._outages)

    def radio_outage(self, seconds: float) -> None:
        """schedule_outage() from the current trace time."""
        self.schedule_outage(max(self.trace_us, 0) / 1e6, seconds)

    async def _follow_outages(self) -> None:
        # awaited between the board's messages, so its advertising requests and an
        # outage's never overlap
        now = self.trace_us
        if now <= 0:
            return  # the clock has not begun to run (a paused board waits at 0)
        while self._outages and self._outages[0][1] <= now and not self.in_outage:
            self._outages.pop(0)  # wholly passed between two clock reports
        active = bool(self._outages) and self._outages[0][0] <= now < self._outages[0][1]
        if active and not self.in_outage:
            self.in_outage = True
            self.outages_begun += 1
            self.log.append((self.trace_time, "(radio outage begins)"))
            if self.advertising:
                self.advertising = False
                with contextlib.suppress(Exception):
                    await self.device.stop_advertising()
        elif not active and self.in_outage:
            self.in_outage = False
            self._outages.pop(0)
            self._cut.clear()
            self.log.append((self.trace_time, "(radio outage ends)"))
            msg = self._adv_wanted
            if msg is not None and msg.get("interval_us") is not None:
                await self._advertise(msg)
        if self.in_outage:
            for h, conn in list(self.connections.items()):
                if h not in self._cut:  # one made just before it began goes too
                    self._cut.add(h)
                    self._tasks.append(asyncio.ensure_future(self._cut_link(conn)))

    @staticmethod
    async def _cut_link(conn) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.disconnect(), 5)

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
    def passkey(self) -> int | None:
        """The firmware's passkey: the one it printed on its console, else the one
        in the config on its flash (saved before BLE starts), else None."""
        if self._printed_passkey is not None:
            return self._printed_passkey
        if self.flash_dir is not None:
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                value = json.loads((self.flash_dir / CONFIG_FILE).read_text())["passkey"]
                if isinstance(value, int):
                    return value
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
            m = PASSKEY_RE.match(line)
            if m:
                self._printed_passkey = int(m.group(1))
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
                if self._outages:
                    await self._follow_outages()
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
            self._answer(self._secret_replies, body)  # <B found/stored> value
        elif kind == MSG_SYNCED:
            self._answer(self._sync_replies, struct.unpack_from("<IB", body))
        elif kind == MSG_READ:
            self._answer(self._read_replies, (body[0], body[1], body[2:]))
        elif kind == MSG_PASSKEY:
            conn_h, action, value = struct.unpack_from("<HBI", body)
            self._passkey_answer(conn_h, (action, value))
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

    @staticmethod
    def _answer(waiting: collections.deque, value) -> None:
        # a request that timed out keeps its place, so later answers stay matched
        if waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(value)

    async def _ask(self, waiting: collections.deque, kind: int, payload: bytes,
                   timeout: float):
        """Send a request the board answers in order; its answer, or None."""
        if self._writer is None or self._exited.is_set():
            return None
        fut = asyncio.get_running_loop().create_future()
        waiting.append(fut)
        self._send(kind, payload)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None

    async def _get_secret(self, sec_type: int, index: int, key: bytes | None,
                          timeout: float = 5.0) -> bytes | None:
        """_IRQ_GET_SECRET in the firmware: the value it returned."""
        got = await self._ask(self._secret_replies, HOST_GET_SECRET,
                              struct.pack("<BBB", sec_type, index, key is not None)
                              + (key or b""), timeout)
        return got[1:] if got and got[0] == 1 else None

    async def _set_secret(self, sec_type: int, key: bytes, value: bytes | None,
                          timeout: float = 5.0) -> bool:
        """_IRQ_SET_SECRET in the firmware: whether it says it stored it."""
        got = await self._ask(self._secret_replies, HOST_SET_SECRET,
                              struct.pack("<BHB", sec_type, len(key), value is not None)
                              + key + (value or b""), timeout)
        return bool(got) and got[0] == 1

    def _fatal(self, why: str) -> None:
        """NimBLE's task would spin for ever: record it and stop the board."""
        self.faults.append(why)
        self._send(HOST_FATAL, f"vboard: BLE stack stuck: {why}".encode())

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
            if left <= 0 or self._exited.is_set():
                raise VBoardError(f"no pairing keys stored within {timeout} s:\n{self._tail()}")
            self.store.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.store.changed.wait(), left)

    async def irqs_delivered(self, timeout: float = 30.0) -> tuple[int, bool]:
        """Wait until every host event sent so far has reached the firmware (events
        wait in the board until it gives NimBLE the GIL); returns how many IRQs its
        handler has had, and whether it still has one (an exception removes it)."""
        got = await self._ask(self._sync_replies, HOST_SYNC, b"", timeout)
        if got is None:
            raise VBoardError(f"events not delivered within {timeout} s:\n{self._tail()}")
        return got[0], bool(got[1])

    def fire_irq(self, event, data) -> None:
        """Deliver an IRQ with any data to the firmware's handler, through the shim
        (so its handler-disable rule applies). data: a tuple (or anything) of ints,
        floats, None, bools, str, bytes, bytearray, memoryview, tuples and lists."""
        self._send(HOST_IRQ, json.dumps([event, _encode_irq_value(data)]).encode())

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
            for ch, flags, _ in per_char:
                self._guard_cccd(server, ch, flags)
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

    def link_security(self, conn) -> LinkSecurity:
        return self.security.setdefault(conn.handle, LinkSecurity())

    async def _check_access(self, conn, flags: int, is_read: bool) -> None:
        from bumble.att import ATT_Error

        sec = self.link_security(conn)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(sec.settled.wait(), 10)
        if not flags & (F_READ_ENC | F_READ_AUTHEN | F_WRITE_ENC | F_WRITE_AUTHEN):
            return
        has_ltk = False
        if not sec.encrypted:
            rec = await self.store.record(SEC_PEER, 0, store_key(conn.peer_address))
            has_ltk = rec is not None and rec.ltk is not None
        error = security_error(flags, is_read, sec, has_ltk)
        if error:
            raise ATT_Error(error)

    def _guard_cccd(self, server, ch, flags: int) -> None:
        """The CCCD bumble added for ch asks for the security ch asks for."""
        from bumble.att import AttributeValueV2, is_enhanced_bearer
        from bumble.gatt import GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR as CCCD

        want = cccd_flags(flags)
        if not want & (F_WRITE_ENC | F_WRITE_AUTHEN):
            return
        for attr in server.attributes:
            if (attr.type == CCCD and ch.handle < attr.handle <= ch.end_group_handle
                    and isinstance(attr.value, AttributeValueV2)):
                inner = attr.value

                async def write(bearer, value, inner=inner):
                    conn = bearer.connection if is_enhanced_bearer(bearer) else bearer
                    await self._check_access(conn, want, False)
                    result = inner.write(bearer, value)
                    if asyncio.iscoroutine(result):
                        await result

                attr.value = AttributeValueV2(inner._read, write=write)

    def _reader(self, attr, flags: int):
        from bumble.att import ATT_READ_NOT_PERMITTED_ERROR, ATT_UNLIKELY_ERROR_ERROR, ATT_Error

        async def read(conn) -> bytes:
            if not flags & F_READ:
                raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)
            await self._check_access(conn, flags, True)
            # characteristic_access_cb -> _IRQ_GATTS_READ_REQUEST: the handler may
            # refuse the read (its int is the ATT error) or write the value first
            got = await self._ask(self._read_replies, HOST_READ,
                                  struct.pack("<HH", conn.handle, attr.handle), 5.0)
            if got is None:
                raise ATT_Error(ATT_UNLIKELY_ERROR_ERROR)
            denied, error, value = got
            if denied:
                raise ATT_Error(error)
            self._values[attr.handle] = value
            return value

        return read

    def _writer_for(self, attr, flags: int):
        from bumble.att import ATT_WRITE_NOT_PERMITTED_ERROR, ATT_Error

        async def write(conn, value: bytes) -> None:
            if not flags & (F_WRITE | F_WRITE_NR | F_AUX_WRITE):
                raise ATT_Error(ATT_WRITE_NOT_PERMITTED_ERROR)
            await self._check_access(conn, flags, False)
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
        self._adv_wanted = msg
        if msg.get("interval_us") is None:
            self.advertising = False
            await self.device.stop_advertising()
            return
        if self.in_outage:  # the firmware advertises; nobody is in range to hear it
            self._adv_event.set()
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

        insole = self

        class FirmwareDelegate(PairingDelegate):
            """The insole's part of a pairing comes from the firmware: NimBLE raises
            _IRQ_PASSKEY_ACTION and waits for gap_passkey()."""

            def __init__(self, conn, io):
                super().__init__(io_capability=io)
                self.conn = conn

            async def generate_passkey(self) -> int:  # the insole shows a passkey
                return await insole._firmware_passkey(self.conn, PASSKEY_DISPLAY, 0)

            async def get_number(self) -> int | None:  # the insole types one
                return await insole._firmware_passkey(self.conn, PASSKEY_INPUT, 0)

            async def compare_numbers(self, number: int, digits: int) -> bool:
                return bool(await insole._firmware_passkey(self.conn, PASSKEY_NUMCMP,
                                                           number))

        def pairing_config(conn) -> PairingConfig:
            # ble_hs_cfg.sm_* as the firmware's config() set them (NimBLE's defaults
            # otherwise: no bonding, no MITM, legacy pairing, no input/output)
            c = self.ble_config
            return PairingConfig(
                sc=bool(c.get("le_secure", False)), mitm=bool(c.get("mitm", False)),
                bonding=bool(c.get("bond", False)),
                identity_address_type=(PairingConfig.AddressType.PUBLIC
                                       if self._own_type == 0 else
                                       PairingConfig.AddressType.RANDOM),
                delegate=FirmwareDelegate(conn, PairingDelegate.IoCapability(
                    int(c.get("io", 3)))))

        dev.pairing_config_factory = pairing_config
        dev.keystore = _keystore_for(self)
        async def long_term_key(handle: int, rand: bytes, ediv: int) -> bytes | None:
            conn = dev.lookup_connection(handle)
            if conn is None:
                return None
            if (ltk := dev.smp_manager.get_long_term_key(conn, rand, ediv)) is not None:
                return ltk  # the pairing in progress
            rec = await self.store.stored_key(conn.peer_address, rand, ediv)
            if rec is None:
                return None
            # ble_sm_ltk_restore_exec: the link is as authenticated as its stored key
            self.link_security(conn).restore_authenticated = rec.authenticated
            return rec.ltk

        dev.get_long_term_key = long_term_key
        dev.host.long_term_key_provider = long_term_key  # bound when the host was made
        dev.on("connection", self._on_connection)

    def _bonding(self, conn) -> bool:
        # BLE_SM_PROC_F_BONDING: both sides asked for bonding
        session = self.device.smp_manager.sessions.get(conn.handle)
        if session is not None:
            return bool(session.bonding)
        return bool(self.ble_config.get("bond", False))

    async def _firmware_passkey(self, conn, action: int, number: int) -> int:
        """The firmware's answer to _IRQ_PASSKEY_ACTION (the passkey it shows, or
        1/0 for a numeric comparison). With no answer within passkey_timeout the
        pairing fails, as NimBLE's SMP timer ends it."""
        fut = asyncio.get_running_loop().create_future()
        old = self._passkeys.pop(conn.handle, None)
        if old is not None and not old.done():
            old.cancel()
        self._passkeys[conn.handle] = fut
        self._send(HOST_PASSKEY, struct.pack("<HBI", conn.handle, action, number))
        try:
            got = await asyncio.wait_for(asyncio.shield(fut), self.passkey_timeout)
        except asyncio.TimeoutError:
            got = None
        finally:
            if self._passkeys.get(conn.handle) is fut:
                del self._passkeys[conn.handle]
        if got is None or got[0] != action:
            from bumble.smp import ErrorCode

            session = self.device.smp_manager.sessions.get(conn.handle)
            if session is not None:
                session.send_pairing_failed(ErrorCode.UNSPECIFIED_REASON)
            raise VBoardError("the firmware gave no passkey")
        return got[1]

    def _passkey_answer(self, conn_handle: int, answer) -> None:
        fut = self._passkeys.get(conn_handle)
        if fut is not None and not fut.done():
            fut.set_result(answer)

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
            self.security.pop(h, None)
            self._passkey_answer(h, None)
            self._send(HOST_DISCONNECT, struct.pack("<HB", h, addr_type) + addr)

        def on_mtu() -> None:
            self._send(HOST_MTU, struct.pack("<HH", h, conn.att_mtu))

        def on_params() -> None:
            p = conn.parameters
            self._send(HOST_CONN_UPDATE, struct.pack(
                "<HHHHB", h, int(round(p.connection_interval / 1.25)), p.peripheral_latency,
                int(round(p.supervision_timeout / 10)), 0))

        sec = self.link_security(conn)

        def report() -> None:
            # BLE_GAP_EVENT_ENC_CHANGE -> _IRQ_ENCRYPTION_UPDATE with the link's state
            # (ble_gap_conn_find: desc.sec_state), also after a failed pairing
            self._send(HOST_ENCRYPTION, struct.pack(
                "<HBBBB", h, sec.encrypted, sec.authenticated, sec.bonded, sec.key_size))
            sec.settled.set()

        def on_pairing_start() -> None:
            sec.pairing = True

        def on_pairing(keys) -> None:
            # NimBLE stores the keys first, then reports the encryption
            # (ble_sm_process_result); bumble's keystore update ran before this event.
            # "authenticated" is a MITM-protected key (BLE_SM_PROC_F_AUTHENTICATED),
            # not bumble's connection.authenticated, which every encrypted link gets
            key = keys.ltk or keys.ltk_peripheral
            sec.pairing = False
            sec.encrypted = bool(conn.encryption)
            sec.authenticated = sec.encrypted and key is not None and bool(key.authenticated)
            sec.bonded = sec.encrypted and self._bonding(conn)
            sec.key_size = conn.encryption_key_size or 16
            report()

        def on_pairing_failure(_reason) -> None:
            sec.pairing = False
            self._passkey_answer(h, None)
            report()

        def on_encryption() -> None:
            if sec.pairing:
                return  # NimBLE reports a pairing's encryption when it is over
            # a bonded central restored the link with a stored key (ENC_RESTORE)
            sec.encrypted = bool(conn.encryption)
            sec.authenticated = sec.encrypted and sec.restore_authenticated
            sec.bonded = sec.encrypted
            sec.key_size = conn.encryption_key_size or 16 if sec.encrypted else 0
            report()

        conn.on("pairing_start", on_pairing_start)
        conn.on("pairing", on_pairing)
        conn.on("pairing_failure", on_pairing_failure)
        conn.on("disconnection", on_disconnection)
        conn.on("connection_att_mtu_update", on_mtu)
        conn.on("connection_parameters_update", on_params)
        conn.on("connection_encryption_change", on_encryption)
