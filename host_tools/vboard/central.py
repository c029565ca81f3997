"""A bumble central's side of a virtual insole: find it on the radio, connect, pair
with its passkey, and a GATT session (``Central``) for tests and tools."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from host_tools.vboard.gatt import uuid_key
from host_tools.vboard.wire import VBoardError

if TYPE_CHECKING:
    from host_tools.vboard.insole import VirtualInsole


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
