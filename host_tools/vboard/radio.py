"""The radio virtual insoles and bumble centrals share: bumble's in-process virtual
radio (``LocalLink``), or one real controller through a bumble transport."""

from __future__ import annotations

import asyncio
import contextlib
import os

from host_tools.vboard.wire import VBoardError


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
