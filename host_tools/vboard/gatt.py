"""The firmware's GATT table, served from the insole's bumble device: the services
it registers (gatts_register_services), reads that ask the firmware first
(_IRQ_GATTS_READ_REQUEST), writes it is told of, and the values, notifications and
indications it sends."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import TYPE_CHECKING

from host_tools.vboard.access import cccd_flags, permissions_for
from host_tools.vboard.wire import (
    F_AUX_WRITE,
    F_INDICATE,
    F_READ,
    F_WRITE,
    F_WRITE_AUTHEN,
    F_WRITE_ENC,
    F_WRITE_NR,
    HOST_HANDLES,
    HOST_INDICATE_DONE,
    HOST_READ,
    HOST_WRITE,
)

if TYPE_CHECKING:
    from host_tools.vboard.insole import VirtualInsole


def bumble_uuid(text: str):
    """The bluetooth shim's UUID text (0x2a53 or dashed 128-bit) as a bumble UUID."""
    from bumble.core import UUID

    if text.startswith("0x"):
        v = int(text, 16)
        return UUID.from_16_bits(v) if v <= 0xFFFF else UUID.from_32_bits(v)
    return UUID(text)


def uuid_key(uuid) -> str:
    """A UUID (16-bit int, text, or bumble UUID) as lower-case dashed 128-bit text."""
    from bumble.core import UUID

    if isinstance(uuid, int):
        uuid = UUID.from_16_bits(uuid)
    elif isinstance(uuid, str):
        uuid = UUID(uuid)
    return str(UUID.from_bytes(uuid.to_bytes(force_128=True))).lower()


class GattServer:
    """The firmware's services on one virtual insole's bumble device."""

    def __init__(self, insole: VirtualInsole):
        self.insole = insole
        self.handles: list[list[int]] = []
        self._values: dict[int, bytes] = {}
        self._chars: dict[int, tuple] = {}  # value handle -> (attribute, flags)
        self._base_attrs = 0
        self._services: list = []

    def attach(self) -> None:
        """The device is on: what it serves so far is bumble's own (GAP, GATT)."""
        self._base_attrs = len(self.insole.device.gatt_server.attributes)

    def value(self, uuid) -> bytes | None:
        """The current value of characteristic `uuid`, or None."""
        want = uuid_key(uuid)
        for handle, (attr, _flags) in self._chars.items():
            if uuid_key(attr.type) == want:
                return self._values.get(handle, b"")
        return None

    async def forward(self, conn_h: int, handle: int, data: bytes, indicate: bool) -> None:
        """gatts_notify / gatts_indicate: to the connection, if it is still there."""
        conn = self.insole.connections.get(conn_h)
        entry = self._chars.get(handle)
        if conn is None or entry is None:
            return
        if not indicate:
            await self.insole.device.notify_subscriber(conn, entry[0], data, force=True)
        else:
            self.insole.spawn(self._indicate(conn, handle, data))

    async def set_value(self, handle: int, data: bytes, update: bool) -> None:
        """gatts_write, with send_update: subscribers hear of it."""
        self._values[handle] = data
        entry = self._chars.get(handle)
        if update and entry is not None:
            device = self.insole.device
            await device.notify_subscribers(entry[0], data)
            if entry[1] & F_INDICATE:
                self.insole.spawn(device.indicate_subscribers(entry[0], data))

    async def _indicate(self, conn, handle: int, data: bytes) -> None:
        status = 0
        try:
            await self.insole.device.indicate_subscriber(conn, self._chars[handle][0], data,
                                                       force=True)
        except Exception:  # timeout or link loss: NimBLE reports a non-zero status
            status = 1
        self.insole.link.send(HOST_INDICATE_DONE, struct.pack("<HHB", conn.handle, handle, status))

    def register(self, spec: list) -> None:
        from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service

        server = self.insole.device.gatt_server
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
        self.insole.link.send(HOST_HANDLES, json.dumps(handles).encode())

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
                    await self.insole.pairing.check_access(conn, want, False)
                    result = inner.write(bearer, value)
                    if asyncio.iscoroutine(result):
                        await result

                attr.value = AttributeValueV2(inner._read, write=write)

    def _reader(self, attr, flags: int):
        from bumble.att import ATT_READ_NOT_PERMITTED_ERROR, ATT_UNLIKELY_ERROR_ERROR, ATT_Error

        async def read(conn) -> bytes:
            if not flags & F_READ:
                raise ATT_Error(ATT_READ_NOT_PERMITTED_ERROR)
            await self.insole.pairing.check_access(conn, flags, True)
            # characteristic_access_cb -> _IRQ_GATTS_READ_REQUEST: the handler may
            # refuse the read (its int is the ATT error) or write the value first
            link = self.insole.link
            got = await link.ask(link.read_replies, HOST_READ,
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
            await self.insole.pairing.check_access(conn, flags, False)
            value = bytes(value)
            self._values[attr.handle] = value
            self.insole.link.send(HOST_WRITE, struct.pack("<HH", conn.handle, attr.handle) + value)

        return write
