# The BLE stack's secret store: pairing keys (bonds) and the device's own IRK, in
# RAM for the stack and in a JSON file on flash, so a bonded phone reconnects
# after a reboot.
#
# What MicroPython's NimBLE binding stores (extmod/nimble/modbluetooth_nimble.c,
# with the type numbers of nimble/host/include/host/ble_store.h):
# - ble_secret_store_write()/_delete(): sec_type BLE_STORE_OBJ_TYPE_OUR_SEC (1) or
#   BLE_STORE_OBJ_TYPE_PEER_SEC (2); key = the peer's identity address, a ble_addr_t
#   (7 bytes: address type, then the address); value = a struct
#   ble_store_value_sec (under 100 bytes). Deleting passes value None.
# - ble_secret_store_read(): the same types by key; PEER_SEC also without a key, by
#   index, to walk every peer.
# - load_irk(), at every active(True): sec_type SECRET_TYPE_OUR_IRK (10), key b"irk",
#   16 bytes. When it is missing a new IRK is made and stored, and every bonded
#   phone then sees a stranger.
# The virtual board hands over sec_type 2 with its host stack's name for the peer
# as the key and that stack's keys as JSON as the value (boards/virtual/bluetooth.py).
#
# A bond is everything stored under one peer key. The table keeps at most
# _MAX_PEERS bonds: storing one more drops the oldest bond (the one written least
# recently) whole, never a part of one and never the own IRK.
#
# Threads: get() and set() run in the BLE IRQ handler, which on the ESP32 may run
# between any two bytecodes of the main loop; flush() and forget_all() run in the
# main loop. The table is never changed in place: set() builds a new list and
# stores it with one assignment, so flush() always writes a consistent table.
#
# Only the table and what the IRQ handler needs stay in RAM: reading the file
# (bonds_load.py) runs at boot, and the file code (config.py) is loaded for each
# read or write and dropped after (lazy.py).
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import lazy

_SEC_OUR = const(1)  # BLE_STORE_OBJ_TYPE_OUR_SEC
_SEC_PEER = const(2)  # BLE_STORE_OBJ_TYPE_PEER_SEC
_SEC_OUR_IRK = const(10)  # SECRET_TYPE_OUR_IRK
_OUR_IRK_KEY = const(b"irk")

_MAX_PEERS = const(4)
_MAX_ENTRIES = const(2 * _MAX_PEERS + 1)  # our and the peer's keys per bond, and the IRK
_KEY_MAX = const(32)  # a ble_addr_t is 7 bytes; the virtual board's peer names ~20
_VALUE_MAX = const(768)  # ble_store_value_sec < 100 bytes; the virtual board's JSON ~700
# a file row: [10, "<hex key>", "<hex value>"] and its separator
_ROW_MAX = const(2 * (_KEY_MAX + _VALUE_MAX) + 16)
_FILE_MAX = const(_MAX_ENTRIES * _ROW_MAX + 2)
_BUFFERS = (bytes, bytearray, memoryview)  # what the binding passes as keys and values


def is_own_irk(sec_type, key):
    return sec_type == _SEC_OUR_IRK and key == _OUR_IRK_KEY


def entry_ok(sec_type, key, value):
    """True for an entry the store keeps (key and value as bytes)."""
    if not 0 < len(key) <= _KEY_MAX or not 0 < len(value) <= _VALUE_MAX:
        return False
    return sec_type in (_SEC_OUR, _SEC_PEER) or is_own_irk(sec_type, key)


def _peers(entries):
    """The peer keys in entries, oldest first."""
    keys = []
    for t, k, _ in entries:
        if not is_own_irk(t, k) and k not in keys:
            keys.append(k)
    return keys


def stored(entries, sec_type, key, value):
    """entries (oldest first, each bond's entries together) with (sec_type, key)
    set to value, or removed when value is None; a written bond becomes the
    newest, and the oldest bonds go while there are more than _MAX_PEERS."""
    # loops, not comprehensions: each comprehension is code of its own in RAM
    irk = is_own_irk(sec_type, key)
    rest = []
    bond = []
    for e in entries:
        if value is None:
            if e[0] != sec_type or e[1] != key:
                rest.append(e)
        elif irk:
            if not is_own_irk(e[0], e[1]):
                rest.append(e)
        elif e[1] != key or is_own_irk(e[0], e[1]):
            rest.append(e)
        elif e[0] != sec_type:
            bond.append(e)
    if value is None:
        return rest
    out = rest + bond
    out.append((sec_type, key, value))
    peers = [] if irk else _peers(out)
    if len(peers) > _MAX_PEERS:
        gone = peers[: len(peers) - _MAX_PEERS]
        keep = []
        for e in out:
            if is_own_irk(e[0], e[1]) or e[1] not in gone:
                keep.append(e)
        out = keep
    return out


class Bonds:
    def __init__(self, path, log, fs=os, opener=open):
        """Load the file at path now. Never raises: a file that cannot be used gives
        no bonds, one log line, and is renamed to path.bad."""
        self.path = path
        self._log = log
        self._fs = fs
        self._opener = opener
        self._entries = []  # (sec_type, key, value), oldest first; replaced, never changed
        self.dirty = False  # changed since the last flush()
        self._failing = False  # the last flush() failed (logged once)
        try:
            self._entries, self.dirty = lazy.run("bonds_load", "load", self)
        except Exception as e:  # the flash or the heap failing under us
            self._entries = []
            self._log("bond", "load failed (%s), no bonds" % type(e).__name__)

    def peers(self):
        """The bonded peers' keys, oldest first."""
        return _peers(self._entries)

    def get(self, sec_type, index, key):
        """The stored value (bytes) or None, as _IRQ_GET_SECRET answers: with key None
        the index-th entry of sec_type, else the entry of sec_type under key."""
        try:
            if key is not None:
                if not isinstance(key, _BUFFERS):
                    return None
                key = bytes(key)
            i = 0
            for t, k, v in self._entries:
                if t != sec_type:
                    continue
                if key is None:
                    if i == index:
                        return v
                    i += 1
                elif k == key:
                    return v
        except Exception:
            pass
        return None

    def set(self, sec_type, key, value):
        """Store value under (sec_type, key), or delete the entry when value is None,
        in RAM only (the BLE IRQ handler calls this; flush() writes the file).
        The answer goes back to NimBLE (ble_secret_store_write/_delete):
        - a store answers True, always: on False ble_store_write() unpairs the oldest
          peer and tries again (ble_store_util_status_rr), until no bond is left. An
          entry this store does not keep (a type the binding never uses, a key or
          value over the caps) is left out;
        - a delete answers whether there was such an entry: ble_store_util_delete_all()
          deletes again for as long as the answer is True.
        Never raises."""
        deleting = value is None
        try:
            if not isinstance(key, _BUFFERS) or not (deleting or isinstance(value, _BUFFERS)):
                return not deleting  # bytes(n) of an int would make n zero bytes
            key = bytes(key)
            if not deleting:
                value = bytes(value)
                if not entry_ok(sec_type, key, value):
                    return True
            old = self._entries
            new = stored(old, sec_type, key, value)
            if new == old:
                return not deleting
            self._entries = new
            self.dirty = True
            return True
        except Exception:
            return not deleting

    def forget_all(self):
        """Drop every bond, keep the device's own IRK (main loop)."""
        while True:
            old = self._entries
            keep = []
            for e in old:
                if is_own_irk(e[0], e[1]):
                    keep.append(e)
            if self._entries is old:  # no set() from the IRQ handler meanwhile
                self._entries = keep
                break
        self.dirty = True

    def flush(self):
        """Write the file when something changed (main loop only). True when the
        file now holds the table; a failure is logged once and retried next time."""
        if not self.dirty:
            return True
        self.dirty = False  # before taking the table: a set() from now on sets it again
        entries = self._entries
        try:
            lazy.run("bonds_load", "save", self, entries)
        except Exception as e:
            self.dirty = True
            if not self._failing:
                self._failing = True
                self._log("bond", "save failed (%s)" % (e,))
            return False
        self._failing = False
        return True
