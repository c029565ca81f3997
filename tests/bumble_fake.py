"""FakeInsole (tests/fake_insole.py) behind a real bumble GATT server on a LocalLink.

It checks BumbleLink itself: scanning by name, connecting, pairing with the insole's
passkey (LE Secure Connections, MITM: the fake "displays" PASSKEY as the firmware does),
an encrypted Control write, notifications, and a disconnect from the peripheral side.
"""

from __future__ import annotations

import asyncio

from fake_insole import FW, FakeInsole

from host_tools.ble.protocol import UUID_CONTROL, UUID_SERVICE, UUID_STATUS, UUID_STEP_EVENT

PASSKEY = 123456


def make_link_and_central():
    """(LocalLink, central Device) on a fresh virtual radio."""
    from bumble.controller import Controller
    from bumble.device import Device
    from bumble.hci import Address
    from bumble.host import Host
    from bumble.link import LocalLink
    from bumble.transport.common import AsyncPipeSink

    link = LocalLink()
    ctl = Controller("central", link=link, public_address="C0:00:00:00:00:01")
    central = Device(address=Address("C0:00:00:00:00:01"), host=Host(ctl, AsyncPipeSink(ctl)))
    return link, central


class BumbleFakeInsole:
    """Advertises as Insole-L-000n; serves Step Event, Status, Control (encrypted write)."""

    def __init__(self, link, insole: FakeInsole, index: int = 1):
        from bumble.controller import Controller
        from bumble.core import AdvertisingData
        from bumble.device import Device
        from bumble.gatt import (
            GATT_DEVICE_INFORMATION_SERVICE,
            GATT_FIRMWARE_REVISION_STRING_CHARACTERISTIC,
            Characteristic,
            CharacteristicValue,
            Service,
        )
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        self.insole = insole
        addr = f"F0:00:00:00:00:{index:02X}"
        ctl = Controller(f"insole{index}", link=link, public_address=addr)
        self.device = Device(address=Address(addr), host=Host(ctl, AsyncPipeSink(ctl)))
        from bumble.pairing import PairingConfig, PairingDelegate

        class Display(PairingDelegate):
            async def generate_passkey(self) -> int:
                return PASSKEY

        self.device.pairing_config_factory = lambda _conn: PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=Display(
                io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY))
        self.name = f"Insole-{insole.side[0].upper()}-000{index}"
        props = Characteristic.Properties
        perms = Characteristic.Permissions
        self.step = Characteristic(UUID_STEP_EVENT, props.NOTIFY, perms.READABLE, b"")
        self.status = Characteristic(UUID_STATUS, props.READ | props.NOTIFY, perms.READABLE,
                                     CharacteristicValue(read=lambda _c: insole.status()))
        self.control = Characteristic(
            UUID_CONTROL, props.WRITE | props.NOTIFY,
            perms.WRITE_REQUIRES_ENCRYPTION,
            CharacteristicValue(write=self._on_control))
        self.device.add_service(Service(UUID_SERVICE, [self.step, self.status, self.control]))
        # the firmware version lives here only (Status format 2 has none)
        self.device.add_service(Service(GATT_DEVICE_INFORMATION_SERVICE, [Characteristic(
            GATT_FIRMWARE_REVISION_STRING_CHARACTERISTIC, props.READ, perms.READABLE,
            FW.VERSION.encode())]))
        self.device.advertising_data = bytes(AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
        ]))
        self._out: asyncio.Queue = asyncio.Queue()
        self.connection = None
        insole.link = self  # FakeInsole delivers through deliver()
        self.device.on("connection", self._on_connection)

    # FakeInsole's link protocol
    @property
    def connected(self) -> bool:
        return self.connection is not None

    @property
    def subs(self) -> bool:
        return self.connected

    def deliver(self, uuid: str, data: bytes) -> None:
        char = self.step if uuid == UUID_STEP_EVENT else self.control
        self._out.put_nowait((char, data))

    def _on_control(self, _conn, value: bytes) -> None:
        self.deliver(UUID_CONTROL, self.insole.control(bytes(value)))

    def _on_connection(self, conn) -> None:
        self.connection = conn

        def gone(*_):
            self.connection = None

        conn.on("disconnection", gone)

    async def start(self) -> None:
        await self.device.power_on()
        await self.device.start_advertising(auto_restart=True, advertising_interval_min=100,
                                            advertising_interval_max=100)
        asyncio.get_running_loop().create_task(self._sender())

    async def _sender(self) -> None:
        while True:  # one task keeps notifications in order
            char, data = await self._out.get()
            if self.connection is not None:
                await self.device.notify_subscribers(char, data)

    async def kick(self) -> None:
        """Drop the connection from the insole's side."""
        if self.connection is not None:
            await self.connection.disconnect()
