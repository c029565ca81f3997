# The bond file (bonds.py): read at boot, written when the table changed. Imported
# for that and dropped after (lazy.py), with config.py's file code under it, so none
# of it stays in RAM while the insole runs. Main loop and boot only.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import binascii
import json

from bonds import entry_ok, stored
from config import StateFile

# bonds.py's constants, private here (tests/test_firmware_units.py checks the copies)
_FILE_MAX = const(14546)  # bonds._FILE_MAX: every row of a full table
_KEY_MAX = const(32)  # a ble_addr_t is 7 bytes; the virtual board's peer names ~20
_VALUE_MAX = const(768)  # ble_store_value_sec < 100 bytes; the virtual board's JSON ~700


def parse_rows(rows):
    """(table, None) for the file's rows [[sec_type, hex key, hex value], ...],
    oldest first; (None, why) when a row is not one."""
    entries: list = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            return None, "not a row"
        t, k, v = row
        if type(t) is not int or not isinstance(k, str) or not isinstance(v, str):
            return None, "wrong types"
        if len(k) > 2 * _KEY_MAX or len(v) > 2 * _VALUE_MAX:
            return None, "too long"
        try:
            key = binascii.unhexlify(k)
            value = binascii.unhexlify(v)
        except Exception:  # odd length, a non-hex digit, non-ASCII text
            return None, "not hex"
        if not entry_ok(t, key, value):
            return None, "not a secret"
        entries = stored(entries, t, key, value)
    return entries, None


def load(bonds):
    """(table, dirty) from bonds' file: an empty table when there is none or it
    cannot be used (logged once, the file renamed aside); dirty when the table must
    be written back (trimmed, or found in the .tmp)."""
    f = StateFile(bonds.path, _FILE_MAX, bonds._fs, bonds._opener)
    entries: list = []
    dirty = False
    rows = f.load(list)
    if rows is not None:
        table, why = parse_rows(rows)
        if why is not None:
            f.reject(why)
        else:
            entries = table
            dirty = len(table) != len(rows) or f.from_tmp
    if f.problems:
        bonds._log("bond", "unreadable %s, no bonds" % f.report())
    return entries, dirty


def save(bonds, entries):
    """Write entries to bonds' file (raises OSError when the flash refuses)."""
    rows = [[t, binascii.hexlify(k).decode(), binascii.hexlify(v).decode()]
            for t, k, v in entries]
    StateFile(bonds.path, _FILE_MAX, bonds._fs, bonds._opener).save(json.dumps(rows))
