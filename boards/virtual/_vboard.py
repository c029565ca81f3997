# Core of the virtual board: one virtual clock, the recorded trace and the link to
# the host bridge (host_tools/vboard/bridge.py). The `time`, `machine` and `bluetooth`
# shims in this directory are thin faces of the single VBoard object made here.
#
# Runs under the MicroPython unix port only. Configuration comes from environment
# variables set by the host bridge:
#   VBOARD_TRACE   binary trace: little-endian uint16 triples (heel, arch, forefoot)
#   VBOARD_RATE    trace sample rate in Hz (default 100)
#   VBOARD_SOCK    unix socket of the host bridge; unset = standalone (no radio)
#   VBOARD_SPEED   trace seconds per wall second; 0 = as fast as possible
#   VBOARD_UID     machine.unique_id() as hex (6 bytes)
#   VBOARD_MAC     BLE config("mac"): "<addr_type>:<hex address>" (default 0:VBOARD_UID)
#   VBOARD_TICKS0  ticks_us() at boot (default: 10 s before the 2**30 wrap)
#   VBOARD_LIMIT   pause the clock this many trace-µs after the first sample (-1: none)
#   VBOARD_LINGER_MS  board.LINGER_MS: how long the firmware serves BLE after the trace
#   VBOARD_BATTERY_MV the cell behind the battery divider (default 3900; 0 = none)
#   VBOARD_ADC_EFUSE  0: no ADC calibration in eFuse, read_uv() raises OSError
#   VBOARD_RESET_CAUSE machine.reset_cause() of this boot (default 1, PWRON_RESET)
#   VBOARD_IRQ_SEED   seed of the IRQ hand-over pattern (see irq_point; 0 = off)
#
# Time only moves when the firmware sleeps (time.sleep*, machine.idle/lightsleep).
# The ADC returns the trace row that belongs to the current virtual time, counted
# from the first ADC read (trace time 0).
#
# BLE events from the host become IRQs where an ESP32 would run them. NimBLE calls
# the handler from its own task once it holds the GIL (extmod/modbluetooth.c
# invoke_irq_handler, MICROPY_PY_BLUETOOTH_USE_SYNC_EVENTS_WITH_INTERLOCK), and the
# main thread gives the GIL up every 32 jumps of bytecode (py/vm.c,
# MICROPY_PY_THREAD_GIL_VM_DIVISOR in ports/esp32/mpconfigport.h) and while it
# sleeps in mp_hal_delay_ms (ports/esp32/mphalport.c), not in mp_hal_delay_us,
# which spins holding it. So events are queued as they are read and handed over in
# time.sleep_ms()/sleep(), machine.idle(), at a seeded pseudo-random pick of clock
# calls and ADC reads (irq_point), and while the host holds the clock; never inside
# a handler or a timer callback (both run with the scheduler locked).
import json
import os
import select
import socket
import struct
import sys

import utime

TICKS_PERIOD = 1 << 30  # ESP32 ticks_ms/ticks_us wrap period
TICKS_MASK = TICKS_PERIOD - 1
_CACHE_ROWS = 512
_RX_MAX = 4096
_CLOCK_EVERY_US = 100000
_RNG_MASK = 0x1FFFFFFF  # the hand-over pattern: a 29-bit xorshift (10, 9, 13), full period
_RNG_LO10 = _RNG_MASK >> 10  # masks keep every shifted value under 2**29
_RNG_LO13 = _RNG_MASK >> 13
_IRQ_SEED = 0x0B5E55ED  # the default seed: a repeatable suite

# shim -> host message types (frame: u16 length, u8 type, i64 virtual µs, payload)
MSG_HELLO = 72  # H json
MSG_REGISTER = 82  # R json services; host answers MSG_HANDLES
MSG_ADVERTISE = 65  # A json
MSG_NOTIFY = 78  # N <HH conn, handle> data
MSG_INDICATE = 73  # I <HH conn, handle> data
MSG_VALUE = 86  # V <HB handle, send_update> data
MSG_DISCONNECT = 68  # D <H conn>
MSG_CONFIG = 67  # C json
MSG_PAUSED = 80  # P (clock reached the host's limit)
MSG_FIRST = 84  # T (first ADC read: trace time 0)
MSG_END = 69  # E (trace exhausted, clock stopped)
MSG_RESET = 88  # X machine.reset()
MSG_REFUSED = 79  # O gatts_notify/indicate raised OSError(ENOMEM)
MSG_CLOCK = 75  # K the clock moved on (sent every _CLOCK_EVERY_US of virtual time)
MSG_SECRET = 83  # S <B found> value: the firmware's answer to HOST_GET_SECRET
# host -> shim message types (frame: u16 length, u8 type, payload)
HOST_CONNECT = 99  # c <HB6s conn, addr_type, addr>
HOST_DISCONNECT = 100  # d <HB6s>
HOST_WRITE = 119  # w <HH conn, handle> data
HOST_MTU = 109  # m <HH conn, mtu>
HOST_CONN_UPDATE = 117  # u <HHHHB conn, interval, latency, timeout, status>
HOST_ENCRYPTION = 101  # e <HBBBB conn, encrypted, authenticated, bonded, key_size>
HOST_INDICATE_DONE = 105  # i <HHB conn, handle, status>
HOST_HANDLES = 114  # r json
HOST_CONTROL = 120  # x json {"speed", "limit", "notify_buffers", "refill_us", "fail_notify"}
HOST_GET_SECRET = 103  # g <BBB sec_type, index, has_key> key: _IRQ_GET_SECRET
HOST_SET_SECRET = 115  # s <BHB sec_type, key_len, has_value> key value: _IRQ_SET_SECRET


def mp_int(value):
    """A machine-word int argument as mp_obj_get_int() takes it (py/obj.c): ints and
    bools only, within a 32-bit word on the ESP32; anything else raises as there."""
    if value is True or value is False:
        return int(value)
    if not isinstance(value, int):
        raise TypeError("can't convert %s to int" % type(value).__name__)
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise OverflowError("overflow converting long int to machine word")
    return value


class VBoard:
    def __init__(self):
        env = os.getenv
        self.rate = int(env("VBOARD_RATE") or 100)
        self.speed = float(env("VBOARD_SPEED") or 0)
        self.now = 0  # virtual µs since boot
        self.ticks0 = int(env("VBOARD_TICKS0") or (TICKS_PERIOD - 10000000))
        self.t0 = -1  # virtual µs of the first ADC read (trace time 0)
        lim = int(env("VBOARD_LIMIT") or -1)
        self.limit = lim  # trace µs the clock may not pass; -1 = none
        self.past_end = False  # the host let the clock run on after the trace
        self.last_row = -1  # highest trace row read so far
        uid = env("VBOARD_UID") or "24d7eb10a0c1"
        self.uid = bytes(int(uid[i : i + 2], 16) for i in range(0, 12, 2))
        mac = env("VBOARD_MAC") or "0:" + uid
        self.mac = (int(mac[0]), bytes(int(mac[i : i + 2], 16) for i in range(2, 14, 2)))
        self.ble = None  # the bluetooth shim's state object
        self.timers = []  # machine.Timer objects with a due time
        self.wdt_timeout = 0
        self.wdt_fed = 0
        self.paused_reported = False
        self.end_reported = False
        self._clock_sent = 0
        self.reset_cause = int(env("VBOARD_RESET_CAUSE") or 1)
        self.adc_efuse = (env("VBOARD_ADC_EFUSE") or "1") != "0"
        self.battery_mv = int(env("VBOARD_BATTERY_MV") or 3900)
        # IRQs: host events waiting for the GIL, and who holds the scheduler lock
        seed = env("VBOARD_IRQ_SEED")
        self._rng = (_IRQ_SEED if seed is None or seed == "" else int(seed)) & _RNG_MASK
        self._pending = []
        self._locked = False
        # trace
        self.rows = 0
        self._trace = None
        path = env("VBOARD_TRACE")
        if path:
            self._trace = open(path, "rb")
            self.rows = os.stat(path)[6] // 6
        self._cache = bytearray(_CACHE_ROWS * 6)
        self._cache_first = -1
        self._cache_rows = 0
        # host link
        self.sock = None
        self.poller = None
        self._rx = bytearray(_RX_MAX)
        self._rxmv = memoryview(self._rx)
        self._rxlen = 0
        self._hdr = bytearray(11)
        self._reply = None
        self._wall0 = utime.ticks_us()
        self._virt0 = 0
        sock_path = env("VBOARD_SOCK")
        if sock_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(struct.pack("H", socket.AF_UNIX) + sock_path.encode() + b"\0")
            s.setblocking(False)
            self.sock = s
            self.poller = select.poll()
            self.poller.register(s, select.POLLIN)
            self.send_json(MSG_HELLO, {"rows": self.rows, "rate": self.rate, "uid": uid})

    # ---- clock -------------------------------------------------------------
    def ticks_us(self):
        return (self.ticks0 + self.now) & TICKS_MASK

    def ticks_ms(self):
        return ((self.ticks0 + self.now) // 1000) & TICKS_MASK

    def trace_us(self):
        """Virtual µs since the first sample (negative before it)."""
        if self.t0 < 0:
            return -1
        return self.now - self.t0

    def _stop_at(self):
        # Absolute virtual µs the clock may not pass, or -1.
        if self.t0 < 0:
            return -1
        stop = -1
        if self.limit >= 0:
            stop = self.t0 + self.limit
        if self.rows and not self.past_end:
            # the last row is read up to half a period after its time
            end = self.t0 + ((self.rows - 1) * 1000000 + 500000) // self.rate
            if stop < 0 or end < stop:
                stop = end
        return stop

    def _at_end(self):
        if not self.rows or self.past_end or self.t0 < 0:
            return False
        return self.now >= self.t0 + ((self.rows - 1) * 1000000 + 500000) // self.rate

    def _step_to(self, target):
        # How far the clock may move towards target in one step: not past the
        # host's limit or the end of the trace, and not past a timer's due time.
        step_to = target
        stop = self._stop_at()
        if 0 <= stop < step_to:
            step_to = stop
        for t in self.timers:
            if 0 <= t.due < step_to:
                step_to = t.due
        return step_to

    def sleep_us(self, us, gil=False):
        """Advance virtual time by us, pacing against wall time. gil: the sleep
        gives the GIL up (sleep_ms, idle), so IRQs are handed over during it."""
        if us < 0:
            us = 0
        target = self.now + us
        while True:
            step_to = self._step_to(target)
            self._pace(step_to, gil)
            # _pace read the host's messages: a limit that came with them counts
            # for this step already (an old limit here stops the clock for good)
            again = self._step_to(target)
            if again < step_to:
                step_to = again
            if step_to > self.now:
                self.now = step_to
            self._run_timers()
            self._check_wdt()
            if self.sock is not None and self.now - self._clock_sent >= _CLOCK_EVERY_US:
                self._clock_sent = self.now
                self.send(MSG_CLOCK, b"")
            if self.now >= target:
                return
            stop = self._stop_at()
            if 0 <= stop <= self.now:
                # blocked at the limit or the end of the trace: wait for the host
                self._blocked()

    def _pace(self, step_to, gil):
        # Wait (in wall time) until step_to is due at the current speed,
        # reading host messages meanwhile and, with the GIL given up, raising them.
        if self.speed <= 0:
            self.poll(0)
            if gil:
                self.deliver(True)
            return
        while True:
            gone = utime.ticks_diff(utime.ticks_us(), self._wall0)
            if gone > 100000000:  # move the anchor before ticks_diff could wrap
                self._wall0 = utime.ticks_add(self._wall0, gone)
                self._virt0 += int(gone * self.speed)
                gone = 0
            due = int((step_to - self._virt0) / self.speed)
            left = due - gone
            if left < -500000:  # far behind: do not try to catch up in a burst
                self._wall0 = utime.ticks_us()
                self._virt0 = step_to
                left = 0
            if left <= 0:
                self.poll(0)
                if gil:
                    self.deliver(True)
                return
            self.poll(left // 1000 if left >= 1000 else 1)
            if gil:
                self.deliver(True)

    def _reanchor(self):
        self._wall0 = utime.ticks_us()
        self._virt0 = self.now

    def _blocked(self):
        at_end = self._at_end()
        if at_end and not self.end_reported:
            self.end_reported = True
            self.send(MSG_END, b"")
        elif not at_end and not self.paused_reported:
            self.paused_reported = True
            self.send(MSG_PAUSED, b"")
        if self.sock is None:
            if at_end:
                print("vboard: end of trace at %d ms" % (self.trace_us() // 1000))
                sys.exit(0)
            raise RuntimeError("clock limit reached without a host")
        # The host holds the clock (a debugger's pause): events still come in,
        # also those read during a sleep_us() that ran into the limit.
        self.deliver(True)
        self.poll(-1)
        self.deliver(True)
        self._reanchor()

    def _run_timers(self):
        if not self.timers or self._locked:
            return
        # soft timers run from the scheduler, which is locked meanwhile
        # (py/scheduler.c mp_sched_run_pending): no IRQ inside a callback
        self._locked = True
        try:
            for t in list(self.timers):
                while 0 <= t.due <= self.now:
                    t.fire()
        finally:
            self._locked = False

    # ---- IRQ hand-over -----------------------------------------------------
    def irq_roll(self):
        """The next step of the hand-over pattern (1..2**29-1; 0 when switched off)."""
        x = self._rng
        if x:
            x ^= (x & _RNG_LO10) << 10
            x ^= x >> 9
            x ^= (x & _RNG_LO13) << 13
            self._rng = x
        return x

    def irq_point(self):
        """A clock call or an ADC read: a point between two lines where the main
        thread may give the GIL to NimBLE. One in four such points does; there the
        waiting events (one, or all of them) are raised. Time does not move."""
        if self.sock is None:
            return
        x = self.irq_roll()
        if x & 3 or not x:
            return
        self.poll(0)
        self.deliver(x & 4)

    def deliver(self, everything):
        """Raise waiting host events as IRQs: all of them, or the first one."""
        if self._locked or self.ble is None:
            return
        pending = self._pending
        while pending:
            kind, body = pending.pop(0)
            self._locked = True
            try:
                self.ble._host_event(kind, body)
            finally:
                self._locked = False
            if not everything:
                return

    def _check_wdt(self):
        if self.wdt_timeout and self.now - self.wdt_fed > self.wdt_timeout * 1000:
            print("vboard: watchdog expired")
            self.reset()

    def reset(self):
        self.send(MSG_RESET, b"")
        sys.exit(3)

    # ---- trace -------------------------------------------------------------
    def adc(self, channel):
        """The trace value of channel (0 heel, 1 arch, 2 forefoot, -1 none) now."""
        if self.t0 < 0:
            self.t0 = self.now
            self.send(MSG_FIRST, b"")
        if not self.rows or channel < 0:
            return 0
        idx = ((self.now - self.t0) * self.rate + 500000) // 1000000
        if idx >= self.rows:
            raise EOFError("end of trace")
        if idx > self.last_row:
            self.last_row = idx
        first = self._cache_first
        if first < 0 or idx < first or idx >= first + self._cache_rows:
            self._trace.seek(idx * 6)
            n = self._trace.readinto(self._cache)
            self._cache_first = idx
            self._cache_rows = (n or 0) // 6
            first = idx
        off = (idx - first) * 6 + channel * 2
        c = self._cache
        return c[off] | (c[off + 1] << 8)

    def finished(self):
        """True once the last trace row has been read."""
        return self.rows > 0 and self.last_row >= self.rows - 1

    # ---- host link ---------------------------------------------------------
    def send(self, kind, payload, head=b""):
        if self.sock is None:
            return
        hdr = self._hdr
        struct.pack_into("<HBq", hdr, 0, 9 + len(head) + len(payload), kind, self.trace_us())
        self._write(hdr)
        if head:
            self._write(head)
        if payload:
            self._write(payload)

    def send_json(self, kind, obj):
        self.send(kind, json.dumps(obj).encode())

    def _write(self, data):
        mv = memoryview(data)
        while len(mv):
            try:
                n = self.sock.write(mv)
            except OSError as e:
                if e.errno == 11:  # EAGAIN
                    n = None
                else:
                    raise
            if n is None:
                p = select.poll()
                p.register(self.sock, select.POLLOUT)
                p.poll(100)
                continue
            mv = mv[n:]

    def request(self, kind, obj):
        """Send a JSON request and wait for the host's JSON answer."""
        if self.sock is None:
            return None
        self._reply = None
        self.send_json(kind, obj)
        while self._reply is None:
            self.poll(-1)
        r = self._reply
        self._reply = None
        return r

    def poll(self, timeout_ms):
        """Read and dispatch host messages; wait up to timeout_ms (-1: until one)."""
        if self.sock is None:
            return
        ready = False
        for _ in self.poller.ipoll(timeout_ms):
            ready = True
        while ready:
            try:
                n = self.sock.readinto(self._rxmv[self._rxlen :])
            except OSError as e:
                if e.errno != 11:  # EAGAIN: drained
                    raise
                n = None
            if n is None:
                return
            if n == 0:
                print("vboard: host closed the link")
                sys.exit(0)
            self._rxlen += n
            self._dispatch()

    def _dispatch(self):
        buf = self._rx
        pos = 0
        while self._rxlen - pos >= 3:
            length = buf[pos] | (buf[pos + 1] << 8)
            if self._rxlen - pos - 2 < length:
                break
            kind = buf[pos + 2]
            body = bytes(buf[pos + 3 : pos + 2 + length])
            pos += 2 + length
            self._handle(kind, body)
        if pos:
            rest = self._rxlen - pos
            buf[0:rest] = buf[pos : self._rxlen]
            self._rxlen = rest

    def _handle(self, kind, body):
        if kind == HOST_CONTROL:
            ctl = json.loads(body.decode())
            if "speed" in ctl:
                self.speed = float(ctl["speed"])
            if "limit" in ctl:
                self.limit = int(ctl["limit"])
                self.paused_reported = False
            if "past_end" in ctl:
                self.past_end = bool(ctl["past_end"])
            if self.ble is not None:
                self.ble._control(ctl)
            self._reanchor()
            return
        if kind == HOST_HANDLES:
            self._reply = json.loads(body.decode())
            return
        if self.ble is not None:
            self._pending.append((kind, body))  # an IRQ once NimBLE gets the GIL


vboard = VBoard()
