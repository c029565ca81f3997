# Test doubles for the firmware's hardware edge. Runs under CPython and under the
# micropython binary, so the same scenario can be played on both.
#
# FakeBLE models the part of MicroPython's bluetooth.BLE the firmware uses, with
# the real IRQ codes and argument shapes, plus the central's side: connect, pair
# (NimBLE's order: _IRQ_PASSKEY_ACTION, the firmware's gap_passkey(), the keys
# through _IRQ_SET_SECRET, then _IRQ_ENCRYPTION_UPDATE), write (refused with ATT
# 0x0F / 0x05 as NimBLE's ble_att_svr_check_perms does for _FLAG_WRITE_ENCRYPTED /
# _FLAG_WRITE_AUTHENTICATED), subscribe, MTU, ENOMEM injection.
# Value storage copies into preallocated buffers so that the firmware's hot path
# can be run under micropython.heap_lock().
from array import array

IRQ_CENTRAL_CONNECT = 1
IRQ_CENTRAL_DISCONNECT = 2
IRQ_GATTS_WRITE = 3
IRQ_GATTS_READ_REQUEST = 4
IRQ_MTU_EXCHANGED = 21
IRQ_CONNECTION_UPDATE = 27
IRQ_ENCRYPTION_UPDATE = 28
IRQ_GET_SECRET = 29
IRQ_SET_SECRET = 30
IRQ_PASSKEY_ACTION = 31
PASSKEY_DISPLAY = 3

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020
FLAG_WRITE_ENCRYPTED = 0x1000
FLAG_WRITE_AUTHENTICATED = 0x2000
FLAG_READ_AUTHENTICATED = 0x0400

ATT_WRITE_NOT_PERMITTED = 0x03
ATT_INSUFFICIENT_ENCRYPTION = 0x0F
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
PEER_KEY = b"\x00\x66\x55\x44\x33\x22\x11"  # store key of the central 11:22:33:44:55:66
ENOMEM = 12
ENOTCONN = 128


class UUID:
    def __init__(self, value):
        if isinstance(value, str):
            value = value.lower()
        self.value = value

    def __eq__(self, other):
        return isinstance(other, UUID) and self.value == other.value

    def __hash__(self):
        return hash(self.value)

    def __repr__(self):
        if isinstance(self.value, int):
            return f"UUID(0x{self.value:04x})"
        return f"UUID({self.value!r})"


class FakeBLE:
    def __init__(self):
        self.is_active = False
        self.handler = None
        self.settings = {}
        self.services = []  # [(service uuid, [(uuid, flags, value handle), ...])]
        self.values = {}  # value handle -> bytearray
        self.lengths = {}  # value handle -> current value length
        self.flags = {}
        self.uuids = {}
        self.buffer_size = {}
        self.advertising = None  # (interval_us, adv_data, resp_data) while advertising
        self.adv_count = 0
        self.conn = None
        self.encrypted = False
        self.authenticated = False
        self.passkeys = []  # (conn, action, passkey) the firmware gave with gap_passkey
        self.disconnects = 0  # gap_disconnect() calls that ended a link
        self.kicked = []  # links gap_disconnect() ended, not yet reported
        self.mtu = 23
        self.subscribed = set()
        self.notes = []  # (handle, bytes) notifications the central received
        self.record = True
        self.nomem_next = 0  # the next N notifications raise OSError(ENOMEM)
        self.secrets_seen = 0

    # ---- the bluetooth.BLE API ----
    def active(self, value=None):
        if value is not None:
            self.is_active = bool(value)
        return self.is_active

    def config(self, *args, **kwargs):
        if args:
            return self.settings[args[0]]
        for k in kwargs:
            if k not in ("gap_name", "bond", "le_secure", "mitm", "io", "mtu", "rxbuf"):
                raise ValueError("unknown config " + k)
            self.settings[k] = kwargs[k]
        return None

    def irq(self, handler):
        self.handler = handler

    def gatts_register_services(self, services):
        # handles as NimBLE numbers them: service, then per characteristic a
        # declaration and a value handle, plus a CCCD for notify/indicate
        h = 1
        out = []
        for svc_uuid, chars in services:
            h += 1
            handles = []
            entry = []
            for uuid, flags in chars:
                h += 1
                value_handle = h
                h += 1
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    h += 1
                self.flags[value_handle] = flags
                self.uuids[value_handle] = uuid
                self.values[value_handle] = bytearray(20)
                self.lengths[value_handle] = 0
                self.buffer_size[value_handle] = 20
                handles.append(value_handle)
                entry.append((uuid, flags, value_handle))
            self.services.append((svc_uuid, entry))
            out.append(tuple(handles))
        return tuple(out)

    def gatts_set_buffer(self, handle, size, append=False):
        self.buffer_size[handle] = size
        if size > len(self.values[handle]):
            self.values[handle] = bytearray(size)

    def gatts_write(self, handle, data, send_update=False):
        self._store(handle, data)
        if send_update and self.conn is not None and handle in self.subscribed:
            self._deliver(handle, data)

    def gatts_read(self, handle):
        return bytes(self.values[handle][: self.lengths[handle]])

    def gatts_notify(self, conn, handle, data=None):
        if self.nomem_next > 0:
            self.nomem_next -= 1
            raise OSError(ENOMEM)
        if conn != self.conn:
            raise OSError(ENOTCONN)
        if data is None:
            data = self.gatts_read(handle)
        self._deliver(handle, data)

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        if interval_us is None:
            self.advertising = None
            return
        self.advertising = (interval_us, bytes(adv_data), bytes(resp_data))
        self.adv_count += 1

    def gap_disconnect(self, conn):
        # ble_gap_terminate: the disconnect IRQ comes later, never inside the call
        if conn == self.conn:
            self.kicked.append(conn)
            return True
        return False

    def deliver_kicks(self):
        """The disconnects gap_disconnect() asked for reach the firmware."""
        kicked, self.kicked = self.kicked, []
        for conn in kicked:
            if conn == self.conn:
                self.disconnects += 1
                self.disconnect()

    def gap_passkey(self, conn, action, passkey):
        self.passkeys.append((conn, action, passkey))

    # ---- storage that does not allocate when the size is unchanged ----
    def _store(self, handle, data):
        buf = self.values[handle]
        n = len(data)
        if n > len(buf):
            buf = bytearray(n)
            self.values[handle] = buf
        for i in range(n):
            buf[i] = data[i]
        self.lengths[handle] = n

    def _deliver(self, handle, data):
        if self.record:
            self.notes.append((handle, bytes(data[: self.mtu - 3])))  # ESP32 truncates

    # ---- the central's side ----
    def connect(self, conn=64):
        self.conn = conn
        self.encrypted = False
        self.authenticated = False
        self.mtu = 23
        self.subscribed = set()
        self.advertising = None  # a connection ends connectable advertising
        self.handler(IRQ_CENTRAL_CONNECT, (conn, 0, b"\x11\x22\x33\x44\x55\x66"))

    def disconnect(self):
        conn = self.conn
        self.conn = None
        self.encrypted = False
        self.authenticated = False
        self.handler(IRQ_CENTRAL_DISCONNECT, (conn, 0, b"\x11\x22\x33\x44\x55\x66"))

    def pair(self, passkey=None, mitm=True):
        """The central pairs: with MITM (it types `passkey`; None types the one the
        firmware gives) or "just works". Returns True when the link is encrypted
        with an authenticated key afterwards."""
        conn = self.conn
        if mitm:
            self.passkeys = []
            self.handler(IRQ_PASSKEY_ACTION, (conn, PASSKEY_DISPLAY, 0))
            self.deliver_kicks()
            if self.conn != conn:
                return False  # the firmware ended the link
            given = [p for c, a, p in self.passkeys if c == conn and a == PASSKEY_DISPLAY]
            typed = given[0] if passkey is None and given else passkey
            if not given or typed != given[0]:
                # a confirm value mismatch: nothing stored, the state is unchanged
                self.handler(IRQ_ENCRYPTION_UPDATE, (conn, int(self.encrypted),
                                                     int(self.authenticated), 0, 0))
                return False
        self.encrypted = True
        self.authenticated = mitm
        # NimBLE stores the keys first (the bond's two records, under the central's
        # address as a ble_addr_t: type, then the address LSB first), then reports
        self.handler(IRQ_SET_SECRET, (1, PEER_KEY, b"ltk-value"))
        self.handler(IRQ_SET_SECRET, (2, PEER_KEY, b"irk-value"))
        self.secrets_seen += 1
        self.handler(IRQ_ENCRYPTION_UPDATE, (conn, 1, int(mitm), 1, 16))
        return mitm

    def exchange_mtu(self, mtu):
        self.mtu = mtu
        self.handler(IRQ_MTU_EXCHANGED, (self.conn, mtu))

    def subscribe(self, handle):
        self.subscribed.add(handle)

    def write(self, handle, data):
        """A central's ATT write: returns 0 or the ATT error the stack would send."""
        flags = self.flags.get(handle, 0)
        if not flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE):
            return ATT_WRITE_NOT_PERMITTED
        if flags & (FLAG_WRITE_ENCRYPTED | FLAG_WRITE_AUTHENTICATED) and not self.encrypted:
            return ATT_INSUFFICIENT_AUTHENTICATION  # no stored key for this central
        if flags & FLAG_WRITE_AUTHENTICATED and not self.authenticated:
            return ATT_INSUFFICIENT_AUTHENTICATION
        self._store(handle, bytes(data[: self.buffer_size[handle]]))
        self.handler(IRQ_GATTS_WRITE, (self.conn, handle))
        return 0

    def inject_write(self, handle, data):
        """A write delivered past the stack's encryption check (firmware must refuse)."""
        self._store(handle, bytes(data))
        self.handler(IRQ_GATTS_WRITE, (self.conn, handle))

    def take(self, handle):
        """Notifications received on handle since the last take()."""
        got = [d for h, d in self.notes if h == handle]
        self.notes = [(h, d) for h, d in self.notes if h != handle]
        return got


_TICKS_MASK = 0x3FFFFFFF  # ticks wrap at 2**30 on the ESP32
_TICKS_HALF = 0x20000000


def _ticks_plus(t, d):
    """(t + d) mod 2**30 for a ticks value t and -2**29 < d < 2**29, without a sum
    that leaves the small ints of a 31-bit port (|v| < 2**30)."""
    if d >= 0:
        room = _TICKS_MASK - t
        return t + d if d <= room else d - room - 1
    t += d
    return t if t >= 0 else (t + _TICKS_MASK) + 1


class FakeClock:
    """time.ticks_* as on the ESP32 (extmod/modtime.c): ticks_us and ticks_ms each
    wrap at 2**30, ticks_add refuses |delta| >= 2**29. Time moves only by sleeping or
    by work(). Both counters start 5 s before their wrap, so every test crosses it.
    No value computed here leaves the small ints of a 31-bit port, so the fake
    allocates no more than the device's time module under micropython.heap_lock()."""

    def __init__(self, start_us=0x3FB3B4C0, start_ms=0x3FFFEC78):
        self.us = start_us  # 2**30 - 5000000
        self.ms = start_ms  # 2**30 - 5000
        self._us_in_ms = 0  # µs towards the next ms tick (0..999)

    def ticks_us(self):
        return self.us

    def ticks_ms(self):
        return self.ms

    def ticks_add(self, t, delta):
        if not -_TICKS_HALF < delta < _TICKS_HALF:
            raise OverflowError("ticks interval overflow")
        return _ticks_plus(t, delta)

    def ticks_diff(self, a, b):
        d = a - b  # both in [0, 2**30): d is a small int
        if d >= _TICKS_HALF:
            return (d - _TICKS_HALF) - _TICKS_HALF
        if d < -_TICKS_HALF:
            return (d + _TICKS_HALF) + _TICKS_HALF
        return d

    def sleep_us(self, us):
        if us > 0:
            self.work(us)

    def sleep_ms(self, ms):
        while ms > 0:  # in steps whose µs stay below 2**29
            step = ms if ms < 500000 else 500000
            self.work(step * 1000)
            ms -= step

    def work(self, us):
        """Let us µs pass (the time a sample's work takes, or a sleep)."""
        while us > 0:
            step = us if us < _TICKS_HALF else _TICKS_HALF - 1
            us -= step
            self.us = _ticks_plus(self.us, step)
            frac = self._us_in_ms + step
            self._us_in_ms = frac % 1000
            self.ms = _ticks_plus(self.ms, frac // 1000)


class FakeADC:
    """One channel of a recorded trace; EOFError after the last sample."""

    def __init__(self, values):
        self.values = values
        self.i = 0

    def read_u16(self):
        i = self.i
        if i >= len(self.values):
            raise EOFError
        self.i = i + 1
        return self.values[i]


def trace_adcs(samples):
    """(heel, arch, fore) FakeADCs from a flat array of interleaved samples."""
    n = len(samples) // 3
    chans = (array("H", [0] * n), array("H", [0] * n), array("H", [0] * n))
    for i in range(n):
        for c in range(3):
            chans[c][i] = samples[3 * i + c]
    return tuple(FakeADC(ch) for ch in chans)


class MemFS:
    """A flash file system in a dict, with a power cut at a chosen operation.

    Each open/write/close/rename/remove is one step; a write may be cut after
    cut_bytes bytes. After the cut every operation raises OSError.
    """

    def __init__(self, files=None, cut_at=-1, cut_bytes=0):
        self.files = dict(files or {})
        self.cut_at = cut_at
        self.cut_bytes = cut_bytes
        self.steps = 0
        self.dead = False

    def _step(self):
        if self.dead:
            raise OSError(5)
        if self.steps == self.cut_at:
            self.dead = True
            return True
        self.steps += 1
        return False

    def open(self, path, mode="r"):
        if self._step():
            raise OSError(5)
        if "w" in mode:
            self.files[path] = ""
            return _MemFile(self, path, True)
        if path not in self.files:
            raise OSError(2)
        return _MemFile(self, path, False)

    def rename(self, old, new):
        if self._step():
            raise OSError(5)
        if old not in self.files:
            raise OSError(2)
        self.files[new] = self.files.pop(old)

    def remove(self, path):
        if self._step():
            raise OSError(5)
        if path not in self.files:
            raise OSError(2)
        del self.files[path]

    def stat(self, path):
        if path not in self.files:
            raise OSError(2)
        return (0x8000, 0, 0, 0, 0, 0, len(self.files[path]), 0, 0, 0)  # a regular file


class NoReplaceFS(MemFS):
    """A file system whose rename refuses an existing target (as FAT does)."""

    def rename(self, old, new):
        if new in self.files and not self.dead:
            raise OSError(17)
        MemFS.rename(self, old, new)


class _MemFile:
    def __init__(self, fs, path, writing):
        self.fs = fs
        self.path = path
        self.writing = writing

    def write(self, text):
        fs = self.fs
        if fs.dead:
            raise OSError(5)
        if fs.steps == fs.cut_at:
            fs.files[self.path] += text[: fs.cut_bytes]
            fs.dead = True
            raise OSError(5)
        fs.steps += 1
        fs.files[self.path] += text
        return len(text)

    def read(self, n=-1):
        if self.fs.dead:
            raise OSError(5)
        text = self.fs.files[self.path]
        return text if n < 0 else text[:n]

    def close(self):
        pass  # closing cannot lose what write() already stored in this model


class LogSink:
    def __init__(self):
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)


class Led:
    def __init__(self):
        self.state = 0

    def on(self):
        self.state = 1

    def off(self):
        self.state = 0


def build(samples, files=None, log_out=None, clock=None, fs=None, led=None):
    """An Insole on fake hardware playing samples (flat heel, arch, fore, ...).

    Returns (device, ble, fs). firmware/ must be on sys.path.
    """
    from ble_insole import InsoleBLE
    from config import ConfigStore
    from device import Insole
    from log import Log
    from pairing import PairingWindow

    log = Log(log_out or LogSink())
    fs = fs or MemFS(files)
    store = ConfigStore("insole.json", log, fs=fs, opener=fs.open)
    cfg = store.ensure_passkey(store.load(), lambda n: b"\x40\xe2\x01"[:n])  # 123456
    clock = clock or FakeClock()
    ble = FakeBLE()
    radio = InsoleBLE(ble, UUID, log, "Test Board", passkey=cfg["passkey"],
                      window=PairingWindow(clock, log))
    dev = Insole(trace_adcs(samples), radio, store, cfg, log, clock, "1A2B",
                 "Test Board", battery_mv=lambda: 3750, led=led)
    radio.open_window("power-on")
    return dev, ble, fs
