"""The insole's side of its connections, as NimBLE runs it for the firmware: the
pairing (its passkey comes from the firmware through _IRQ_PASSKEY_ACTION), each
link's security state, the access checks that state decides, and the connection
events the firmware hears of."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import TYPE_CHECKING

from host_tools.vboard.access import LinkSecurity, security_error
from host_tools.vboard.bonds import SEC_PEER, keystore_for, store_key
from host_tools.vboard.wire import (
    F_READ_AUTHEN,
    F_READ_ENC,
    F_WRITE_AUTHEN,
    F_WRITE_ENC,
    HOST_CONN_UPDATE,
    HOST_CONNECT,
    HOST_DISCONNECT,
    HOST_ENCRYPTION,
    HOST_MTU,
    HOST_PASSKEY,
    PASSKEY_DISPLAY,
    PASSKEY_INPUT,
    PASSKEY_NUMCMP,
    SM_TIMEOUT_S,
    VBoardError,
)

if TYPE_CHECKING:
    from host_tools.vboard.insole import VirtualInsole


class Pairing:
    """Connections to one virtual insole: pairing, security, connection events."""

    def __init__(self, insole: VirtualInsole):
        self.insole = insole
        self._passkeys: dict[int, asyncio.Future] = {}  # conn -> the firmware's answer
        self.passkey_timeout = SM_TIMEOUT_S

    def link_security(self, conn) -> LinkSecurity:
        return self.insole.security.setdefault(conn.handle, LinkSecurity())

    async def check_access(self, conn, flags: int, is_read: bool) -> None:
        from bumble.att import ATT_Error

        sec = self.link_security(conn)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(sec.settled.wait(), 10)
        if not flags & (F_READ_ENC | F_READ_AUTHEN | F_WRITE_ENC | F_WRITE_AUTHEN):
            return
        has_ltk = False
        if not sec.encrypted:
            rec = await self.insole.store.record(SEC_PEER, 0, store_key(conn.peer_address))
            has_ltk = rec is not None and rec.ltk is not None
        error = security_error(flags, is_read, sec, has_ltk)
        if error:
            raise ATT_Error(error)

    def setup_device(self) -> None:
        from bumble.pairing import PairingConfig, PairingDelegate

        dev = self.insole.device

        pairing = self

        class FirmwareDelegate(PairingDelegate):
            """The insole's part of a pairing comes from the firmware: NimBLE raises
            _IRQ_PASSKEY_ACTION and waits for gap_passkey()."""

            def __init__(self, conn, io):
                super().__init__(io_capability=io)
                self.conn = conn

            async def generate_passkey(self) -> int:  # the insole shows a passkey
                return await pairing._firmware_passkey(self.conn, PASSKEY_DISPLAY, 0)

            async def get_number(self) -> int | None:  # the insole types one
                return await pairing._firmware_passkey(self.conn, PASSKEY_INPUT, 0)

            async def compare_numbers(self, number: int, digits: int) -> bool:
                return bool(await pairing._firmware_passkey(self.conn, PASSKEY_NUMCMP,
                                                           number))

        def pairing_config(conn) -> PairingConfig:
            # ble_hs_cfg.sm_* as the firmware's config() set them (NimBLE's defaults
            # otherwise: no bonding, no MITM, legacy pairing, no input/output)
            c = self.insole.ble_config
            return PairingConfig(
                sc=bool(c.get("le_secure", False)), mitm=bool(c.get("mitm", False)),
                bonding=bool(c.get("bond", False)),
                identity_address_type=(PairingConfig.AddressType.PUBLIC
                                       if self.insole.air.own_type == 0 else
                                       PairingConfig.AddressType.RANDOM),
                delegate=FirmwareDelegate(conn, PairingDelegate.IoCapability(
                    int(c.get("io", 3)))))

        dev.pairing_config_factory = pairing_config
        dev.keystore = keystore_for(self.insole)
        async def long_term_key(handle: int, rand: bytes, ediv: int) -> bytes | None:
            conn = dev.lookup_connection(handle)
            if conn is None:
                return None
            if (ltk := dev.smp_manager.get_long_term_key(conn, rand, ediv)) is not None:
                return ltk  # the pairing in progress
            rec = await self.insole.store.stored_key(conn.peer_address, rand, ediv)
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
        session = self.insole.device.smp_manager.sessions.get(conn.handle)
        if session is not None:
            return bool(session.bonding)
        return bool(self.insole.ble_config.get("bond", False))

    async def _firmware_passkey(self, conn, action: int, number: int) -> int:
        """The firmware's answer to _IRQ_PASSKEY_ACTION (the passkey it shows, or
        1/0 for a numeric comparison). With no answer within passkey_timeout the
        pairing fails, as NimBLE's SMP timer ends it."""
        fut = asyncio.get_running_loop().create_future()
        old = self._passkeys.pop(conn.handle, None)
        if old is not None and not old.done():
            old.cancel()
        self._passkeys[conn.handle] = fut
        self.insole.link.send(HOST_PASSKEY, struct.pack("<HBI", conn.handle, action, number))
        try:
            got = await asyncio.wait_for(asyncio.shield(fut), self.passkey_timeout)
        except asyncio.TimeoutError:
            got = None
        finally:
            if self._passkeys.get(conn.handle) is fut:
                del self._passkeys[conn.handle]
        if got is None or got[0] != action:
            from bumble.smp import ErrorCode

            session = self.insole.device.smp_manager.sessions.get(conn.handle)
            if session is not None:
                session.send_pairing_failed(ErrorCode.UNSPECIFIED_REASON)
            raise VBoardError("the firmware gave no passkey")
        return got[1]

    def passkey_answer(self, conn_handle: int, answer) -> None:
        fut = self._passkeys.get(conn_handle)
        if fut is not None and not fut.done():
            fut.set_result(answer)

    @staticmethod
    def _peer(conn) -> tuple[int, bytes]:
        addr = conn.peer_address
        return int(addr.address_type) & 1, bytes(reversed(bytes(addr)))

    def _on_connection(self, conn) -> None:
        h = conn.handle
        self.insole.connections[h] = conn
        addr_type, addr = self._peer(conn)
        self.insole.air.advertising = False
        self.insole.link.send(HOST_CONNECT, struct.pack("<HB", h, addr_type) + addr)

        def on_disconnection(_reason) -> None:
            self.insole.connections.pop(h, None)
            self.insole.security.pop(h, None)
            self.passkey_answer(h, None)
            self.insole.link.send(HOST_DISCONNECT, struct.pack("<HB", h, addr_type) + addr)

        def on_mtu() -> None:
            self.insole.link.send(HOST_MTU, struct.pack("<HH", h, conn.att_mtu))

        def on_params() -> None:
            p = conn.parameters
            self.insole.link.send(HOST_CONN_UPDATE, struct.pack(
                "<HHHHB", h, int(round(p.connection_interval / 1.25)), p.peripheral_latency,
                int(round(p.supervision_timeout / 10)), 0))

        sec = self.link_security(conn)

        def report() -> None:
            # BLE_GAP_EVENT_ENC_CHANGE -> _IRQ_ENCRYPTION_UPDATE with the link's state
            # (ble_gap_conn_find: desc.sec_state), also after a failed pairing
            self.insole.link.send(HOST_ENCRYPTION, struct.pack(
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
            self.passkey_answer(h, None)
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
