"""The bond store as NimBLE keeps it in MicroPython's secret IRQs: its records
(struct ble_store_value_sec), the walks NimBLE makes over them, and a bumble KeyStore
that answers from the firmware's own store."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from host_tools.vboard.insole import VirtualInsole

# NimBLE's store as MicroPython hands it to the IRQ handler (modbluetooth_nimble.c
# ble_secret_store_*): object types, keys (a ble_addr_t: type + address, LSB first)
# and values (a struct ble_store_value_sec, nimble/host/include/host/ble_store.h)
SEC_OUR, SEC_PEER, SEC_OUR_IRK = 1, 2, 10  # BLE_STORE_OBJ_TYPE_OUR/PEER_SEC, load_irk()
SEC_RECORD_FORMAT = "<B6sBH6xQ16sB16sB16sB5x"  # the struct as GCC lays it out: 80 bytes
MAX_BONDS = 3  # ESP-IDF's CONFIG_BT_NIMBLE_MAX_BONDS default
_STORE_INDEX_WRAP = 256  # struct ble_store_key_sec.idx is a uint8_t
_STORE_LOOP_MAX = 64  # NimBLE loops this long on a store that never says "done": stuck


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


def address_of(key: bytes):
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
            await self.insole._drop_peer(address_of(oldest))
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


def keystore_for(insole: VirtualInsole):
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
            return [(str(address_of(k)).split("/")[0],
                     PairingKeys(address_type=k[0], irk=PairingKeys.Key(irk)))
                    for k, irk in store.resolving.items()]

    return FirmwareKeyStore()
