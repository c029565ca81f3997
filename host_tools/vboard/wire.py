"""What the virtual board and this host say to each other over the unix socket
(boards/virtual/_vboard.py is the other end), the characteristic flags the firmware
registers, and the records the bridge keeps of it."""

from __future__ import annotations

from dataclasses import dataclass

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

# MicroPython characteristic flags (bluetooth module, NimBLE values)
F_READ, F_WRITE_NR, F_WRITE, F_NOTIFY, F_INDICATE = 0x0002, 0x0004, 0x0008, 0x0010, 0x0020
F_AUX_WRITE, F_READ_ENC, F_READ_AUTHEN, F_READ_AUTHOR = 0x0100, 0x0200, 0x0400, 0x0800
F_WRITE_ENC, F_WRITE_AUTHEN, F_WRITE_AUTHOR = 0x1000, 0x2000, 0x4000


def encode_irq_value(value):
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
        return ["t", [encode_irq_value(v) for v in value]]
    if isinstance(value, list):
        return ["l", [encode_irq_value(v) for v in value]]
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
