"""The two transport-specific links under ``insole capture`` and ``insole scan``.

``BleakLink``: the computer's own Bluetooth adapter through bleak (BlueZ, CoreBluetooth,
WinRT). ``BumbleLink``: a bumble central, on a bumble transport such as a USB dongle
(``usb:0``) or the virtual radio the virtual insoles use. Both only move bytes: every
notification is stamped with the host time inside the callback and handed up; everything
else (sequence gaps, backfill, files) lives in host_tools.ble.capture.

The insole bonds only with a central that enters its six-digit passkey (LE Secure
Connections with MITM protection, docs/SECURITY.md). ``BumbleLink`` types the passkey
it is given and keeps the keys in a bumble key store (``keystore_path()``), so later
sessions encrypt with the bond; bleak leaves pairing to the operating system, whose
pairing agent asks for the passkey. ``pairing_problem()`` turns a failed pairing into
one line that says what to do.

bumble and bleak are imported inside functions, so ``insole --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from host_tools.ble import protocol
from host_tools.ble.capture import FIRMWARE_REVISION_UUID, Link, LinkError, Notify

NAME_RE = re.compile(r"-(?P<side>[LR])-[0-9A-F]{4}$")
RSC_UUID = "00001814-0000-1000-8000-00805f9b34fb"
CONNECT_TIMEOUT_S = 15.0
ENCRYPT_TIMEOUT_S = 5.0
PASSKEY_MAX = 999999
NEEDS_PASSKEY = ("the insole bonds only with its 6-digit passkey: give it with --passkey N "
                 "(printed by `insole flash`, on the serial console and on the insole's label)")
WRONG_PASSKEY = "pairing failed: the insole refused the passkey (check the 6 digits)"
WINDOW_CLOSED = ("the insole ended the link while pairing: its pairing window is closed. "
                 "Switch it off and on (or, standing on the ball of the foot, tap the heel "
                 "6 times, then hold the heel up for a second) and pair within 2 minutes")
NOT_AUTHENTICATED = ("pairing gave no passkey-protected bond (\"just works\"): the insole "
                     "shares its step data only with a central that entered its passkey")


def keystore_path() -> Path:
    """Where the bumble links keep their bonds: $INSOLE_KEYS, else
    ~/.local/share/insole/bumble_keys.json."""
    env = os.environ.get("INSOLE_KEYS")
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "insole" / "bumble_keys.json"


def pairing_problem(exc: BaseException) -> str:
    """A failed pairing in words, with what to do about it."""
    from bumble.core import ProtocolError
    from bumble.smp import ErrorCode

    if isinstance(exc, ProtocolError) and exc.error_namespace == "smp":
        code = exc.error_code
        if code in (ErrorCode.CONFIRM_VALUE_FAILED, ErrorCode.PASSKEY_ENTRY_FAILED,
                    ErrorCode.DHKEY_CHECK_FAILED):
            return WRONG_PASSKEY
        if code == ErrorCode.AUTHENTICATION_REQUIREMENTS:
            return NOT_AUTHENTICATED
        return f"pairing failed: {getattr(code, 'name', code)}"
    return f"pairing failed: {exc or type(exc).__name__}"


def check_passkey(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= PASSKEY_MAX:
        raise ValueError("a passkey has 6 digits, 000000..999999")
    return value


def passkey_pairing(device, passkey: int | None) -> None:
    """Make the bumble central `device` pair with LE Secure Connections, MITM
    protection and bonding, typing `passkey` when the insole asks for it."""
    from bumble.pairing import PairingConfig, PairingDelegate

    class Keyboard(PairingDelegate):
        async def get_number(self) -> int | None:
            return passkey  # None: the pairing is refused (no passkey to type)

    device.pairing_config_factory = lambda _conn: PairingConfig(
        sc=True, mitm=True, bonding=True,
        identity_address_type=PairingConfig.AddressType.RANDOM,
        delegate=Keyboard(io_capability=PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY))


@dataclass
class Found:
    """One insole seen while scanning."""

    name: str
    address: str
    rssi: int | None
    side: str  # left / right / ?
    firmware: str = ""
    handle: object = None  # bleak BLEDevice or bumble Address, for connecting


def side_from_name(name: str) -> str:
    m = NAME_RE.search(name or "")
    return {"L": "left", "R": "right"}[m.group("side")] if m else "?"


def looks_like_insole(name: str | None, service_uuids) -> bool:
    uuids = {str(u).lower() for u in (service_uuids or ())}
    return bool(NAME_RE.search(name or "")) or protocol.UUID_SERVICE in uuids or (
        RSC_UUID in uuids and bool(name))


def matches(found: Found, want: str | None) -> bool:
    """--device NAME|ADDRESS (case-insensitive); None matches any insole."""
    if not want:
        return True
    w = want.lower()
    return found.name.lower() == w or found.address.lower() == w


# ----------------------------------------------------------------------------- bleak


def _bleak_errors():
    from bleak.exc import BleakError

    return (BleakError, OSError, asyncio.TimeoutError, EOFError)


def bleak_problem(exc: BaseException) -> str:
    """A bleak failure in words; OSError here means no adapter / no BlueZ (D-Bus)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        return f"no usable Bluetooth adapter (on Linux: is bluetoothd running?): {text}"
    return text


async def bleak_scan(timeout: float) -> list[Found]:
    from bleak import BleakScanner

    seen = await BleakScanner.discover(timeout=timeout, return_adv=True)
    out = []
    for device, adv in seen.values():
        name = adv.local_name or device.name or ""
        if looks_like_insole(name, adv.service_uuids):
            out.append(Found(name, device.address, adv.rssi, side_from_name(name),
                             handle=device))
    return sorted(out, key=lambda f: -(f.rssi or -999))


class BleakLink(Link):
    """A real adapter through bleak. `want` is a name or address; the first insole
    matching it (and not in `taken`) is used."""

    transport = "bleak"

    def __init__(self, want: str | None = None, side: str | None = None,
                 taken: set[str] | None = None, scan_timeout: float = 10.0, device=None,
                 passkey: int | None = None):
        super().__init__()
        self.passkey = passkey  # for the message: the system's agent asks for it
        self.want = want
        self.want_side = side
        self.taken = taken if taken is not None else set()
        self.scan_timeout = scan_timeout
        self.device = device  # a BLEDevice from a scan, if already known
        if device is not None:
            self.address = device.address
            self.name = device.name or ""
        self.client = None

    def _accept(self, device, adv) -> bool:
        name = adv.local_name or device.name or ""
        if device.address in self.taken - {self.address}:
            return False
        if self.address:  # reconnect: the same insole only
            return device.address == self.address
        if not looks_like_insole(name, adv.service_uuids):
            return False
        f = Found(name, device.address, adv.rssi, side_from_name(name))
        return matches(f, self.want) and (not self.want_side or f.side == self.want_side)

    async def connect(self) -> None:
        from bleak import BleakClient, BleakScanner

        try:
            device = self.device
            if device is None or self.client is not None:  # rescan when reconnecting
                device = await BleakScanner.find_device_by_filter(self._accept,
                                                                  timeout=self.scan_timeout)
            if device is None:
                raise LinkError(f"no insole matching {self.want or 'any'} found")
            self.device = device
            self.address = device.address
            self.name = device.name or self.name
            self.taken.add(device.address)
            self.client = BleakClient(device, disconnected_callback=lambda _c: self._disconnected(),
                                      timeout=CONNECT_TIMEOUT_S)
            await self.client.connect()
        except _bleak_errors() as exc:
            raise LinkError(bleak_problem(exc)) from None

    async def secure(self) -> None:
        """Pair through the operating system (a bond it holds already is used as it
        is): its pairing agent asks for the passkey."""
        try:
            await self.client.pair()
        except NotImplementedError:
            pass  # CoreBluetooth pairs by itself on the first encrypted write
        except _bleak_errors() as exc:
            text = str(exc) or type(exc).__name__
            if "Authentication" in text or "auth" in text.lower():
                key = f" {self.passkey:06d}" if self.passkey is not None else ""
                raise LinkError(f"{WRONG_PASSKEY}, or no pairing agent asked for it: "
                                f"enter the passkey{key} when the system asks "
                                "(Linux: run `bluetoothctl`, then `agent on`)") from None
            raise LinkError(text) from None

    async def read(self, uuid: str) -> bytes:
        try:
            return bytes(await self.client.read_gatt_char(uuid))
        except _bleak_errors() as exc:
            raise LinkError(str(exc) or type(exc).__name__) from None

    async def write(self, uuid: str, data: bytes) -> None:
        try:
            await self.client.write_gatt_char(uuid, data, response=True)
        except _bleak_errors() as exc:
            raise LinkError(str(exc) or type(exc).__name__) from None

    async def subscribe(self, uuid: str, callback: Notify) -> None:
        def on_notify(_char, data: bytearray) -> None:
            callback(bytes(data), time.time())  # stamp on arrival, hand off at once

        try:
            await self.client.start_notify(uuid, on_notify)
        except _bleak_errors() as exc:
            raise LinkError(str(exc) or type(exc).__name__) from None

    async def disconnect(self) -> None:
        if self.client is not None:
            with contextlib.suppress(*_bleak_errors()):
                await self.client.disconnect()


# ----------------------------------------------------------------------------- bumble


@contextlib.contextmanager
def _as_link_error(what: str):
    from bumble.core import BaseBumbleError

    try:
        yield
    except (BaseBumbleError, OSError, asyncio.TimeoutError, ConnectionError, EOFError) as exc:
        raise LinkError(f"{what}: {exc or type(exc).__name__}") from None


async def bumble_central(transport_name: str, address: str = "C0:FF:EE:00:00:01",
                         keystore: Path | None = None):
    """Open a bumble transport and power on a central Device on it: (device, transport).
    Its bonds are kept in `keystore` (default keystore_path()), one namespace per
    controller address, so a later session encrypts with them."""
    from bumble.device import Device
    from bumble.hci import Address
    from bumble.keys import JsonKeyStore
    from bumble.transport import open_transport_or_link

    transport = await open_transport_or_link(transport_name)
    device = Device.with_hci("insole-capture", Address(address), transport.source,
                             transport.sink)
    await device.power_on()
    path = keystore or keystore_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    device.keystore = JsonKeyStore.from_device(device, str(path))
    return device, transport


async def bumble_scan(device, timeout: float) -> list[Found]:
    """Listen to advertisements on a powered-on bumble Device for `timeout` seconds."""
    from bumble.core import AdvertisingData

    found: dict[str, Found] = {}

    def on_adv(adv) -> None:
        data = adv.data
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
            AdvertisingData.SHORTENED_LOCAL_NAME) or ""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        uuids = []
        for t in (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                  AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                  AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                  AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS):
            uuids += [_uuid_text(u) for u in (data.get(t) or [])]
        key = str(adv.address)
        prev = found.get(key)
        name = name or (prev.name if prev else "")
        if prev is None and not looks_like_insole(name, uuids):
            return
        if prev is None or not prev.name:
            found[key] = Found(name, key.split("/")[0], adv.rssi, side_from_name(name),
                               handle=adv.address)
        elif adv.rssi is not None:
            prev.rssi = adv.rssi

    device.on("advertisement", on_adv)
    try:
        await device.start_scanning(filter_duplicates=False)
        await asyncio.sleep(timeout)
        await device.stop_scanning()
    finally:
        device.remove_listener("advertisement", on_adv)
    return sorted(found.values(), key=lambda f: -(f.rssi or -999))


def _uuid_text(u) -> str:
    """bumble UUID -> the lower-case 128-bit text form."""
    text = u.to_hex_str("-").lower() if hasattr(u, "to_hex_str") else str(u).lower()
    if len(text) == 4:
        return f"0000{text}-0000-1000-8000-00805f9b34fb"
    return text


class BumbleLink(Link):
    """A bumble central Device (shared by several links) connecting to one insole.

    `target` is a name, an address, or None for any insole of `side`; the first match not
    already `taken` by another link on the same device is used.
    """

    def __init__(self, device, target: str | None = None, side: str | None = None,
                 taken: set[str] | None = None, transport: str = "bumble",
                 scan_timeout: float = 10.0, lock: asyncio.Lock | None = None,
                 passkey: int | None = None):
        super().__init__()
        self.device = device
        self.passkey = passkey  # typed when the insole asks; None: only a stored bond
        self.target = target
        self.want_side = side
        self.taken = taken if taken is not None else set()
        self.transport = transport
        self.scan_timeout = scan_timeout
        self.lock = lock or asyncio.Lock()  # bumble allows one pending LE connection
        self.connection = None
        self.peer = None
        self.peer_address = None
        self._gone: asyncio.Future | None = None  # completes when the connection drops
        self._chars: dict[str, object] = {}

    async def _find(self):
        if self.peer_address is not None:
            return self.peer_address
        deadline = time.monotonic() + self.scan_timeout
        while time.monotonic() < deadline:
            for f in await bumble_scan(self.device, 0.3):
                if f.address in self.taken or not matches(f, self.target):
                    continue
                if self.want_side and f.side != self.want_side:
                    continue
                self.taken.add(f.address)
                self.name = f.name
                self.address = f.address
                return f.handle
        raise LinkError(f"no insole matching {self.target or self.want_side or 'any'} found")

    async def _op(self, what: str, coro, timeout: float = CONNECT_TIMEOUT_S):
        """Run one GATT operation as its own task. bumble cancels a pending request when
        the link drops; that becomes a LinkError here, while cancelling the caller still
        cancels the caller."""
        task = asyncio.ensure_future(coro)
        waits = {task} if self._gone is None else {task, self._gone}
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task not in done:
            task.cancel()
            if self._gone is not None and self._gone.done():
                raise LinkError(f"{what}: link lost")
            raise LinkError(f"{what}: no answer in {timeout:.0f} s")
        if task.cancelled():
            raise LinkError(f"{what}: link lost")
        with _as_link_error(what):
            return task.result()

    async def connect(self) -> None:
        from bumble.device import Peer

        self._gone = None
        async with self.lock:
            self.peer_address = await self._op("scan", self._find(), self.scan_timeout + 5)
            conn = await self._op("connect", self.device.connect(
                self.peer_address, timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S + 5)
        gone = asyncio.get_running_loop().create_future()

        def on_disconnection(*_) -> None:
            if not gone.done():
                gone.set_result(None)
            self._disconnected()

        conn.on("disconnection", on_disconnection)
        self._gone = gone
        self.connection = conn
        self.peer = Peer(conn)
        await self._op("service discovery", self._discover())

    async def _discover(self) -> None:
        await self.peer.discover_services()
        self._chars = {}
        for service in self.peer.services:
            await service.discover_characteristics()
            for c in service.characteristics:
                self._chars[_uuid_text(c.uuid)] = c
        missing = [u for u in (protocol.UUID_STEP_EVENT, protocol.UUID_STATUS,
                               protocol.UUID_CONTROL) if u not in self._chars]
        if missing:
            raise LinkError(f"{self.name or self.address} lacks the insole service")

    def _char(self, uuid: str):
        c = self._chars.get(uuid.lower())
        if c is None or self.connection is None:
            raise LinkError(f"no characteristic {uuid} (not connected)")
        return c

    async def secure(self) -> None:
        """Encrypt with the bond in the device's key store when it holds a
        passkey-protected one; otherwise pair with the passkey (the insole then
        keeps the new bond, and the key store too)."""
        conn = self.connection
        if conn is None:
            raise LinkError("pairing: not connected")
        store = self.device.keystore
        keys = await store.get(str(conn.peer_address)) if store is not None else None
        key = keys and (keys.ltk or keys.ltk_central)
        if key is not None and key.authenticated:
            try:
                await self._op("encryption", conn.encrypt(), ENCRYPT_TIMEOUT_S)
                return
            except LinkError:
                if self.connection is None or self._gone is None or self._gone.done():
                    raise
                # the insole no longer knows the bond (forgotten): pair again
        if self.passkey is None:
            raise LinkError(NEEDS_PASSKEY)
        passkey_pairing(self.device, self.passkey)
        task = asyncio.ensure_future(conn.pair())
        waits = {task} if self._gone is None else {task, self._gone}
        done, _ = await asyncio.wait(waits, timeout=CONNECT_TIMEOUT_S + 30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            if self._gone is not None and self._gone.done():
                raise LinkError(WINDOW_CLOSED)
            raise LinkError("pairing: no answer from the insole")
        if task.cancelled():
            raise LinkError(WINDOW_CLOSED)
        exc = task.exception()
        if exc is not None:
            if self._gone is not None and self._gone.done():
                raise LinkError(WINDOW_CLOSED)
            raise LinkError(pairing_problem(exc))

    async def read(self, uuid: str) -> bytes:
        return bytes(await self._op("read", self._char(uuid).read_value()))

    async def write(self, uuid: str, data: bytes) -> None:
        await self._op("write", self._char(uuid).write_value(data, with_response=True))

    async def subscribe(self, uuid: str, callback: Notify) -> None:
        def on_notify(value: bytes) -> None:
            callback(bytes(value), time.time())  # stamp on arrival, hand off at once

        await self._op("subscribe", self._char(uuid).subscribe(on_notify))

    async def disconnect(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.disconnect(), 5)


async def read_firmware(link: Link, timeout: float = 8.0) -> str:
    """Connect, read Device Information > Firmware Revision (else Status), disconnect."""
    try:
        await asyncio.wait_for(link.connect(), timeout)
        try:
            return (await link.read(FIRMWARE_REVISION_UUID)).decode("utf-8", "replace")
        except LinkError:
            s = protocol.decode_status(await link.read(protocol.UUID_STATUS))
            return f"{s.fw_major}.{s.fw_minor}" if s.fw_major is not None else "?"
    except (LinkError, asyncio.TimeoutError, protocol.ProtocolError):
        return "?"
    finally:
        with contextlib.suppress(Exception):
            await link.disconnect()

