# The insole as a device: sampling loop, detector, event delivery, commands.
#
# Hardware-free: the ADCs, the BLE server, the clock and the config store are
# passed in (app.py builds them from the board), so the same code runs on an
# ESP32, on the virtual board and under the tests. One sample that produces no
# event allocates nothing (tests prove it under micropython.heap_lock()).
#
# The BLE IRQ handler (ble_insole.py) runs between any two lines of this code on
# an ESP32: it changes the links (ble.link_conn, link_auth, link_gen) and queues
# Control writes. So each of those is read once where a decision depends on it,
# a send that finds the link gone is retried or dropped, never counted as done,
# and a new link is taken up before the first command that may have come over it.
#
# Several centrals at once (ble_insole.MAX_LINKS slots): every link with an
# authenticated key gets its own event stream (a cursor into the ring and the
# journal), its own Control replies and its own BACKFILL; the raw stream belongs to
# the central that started it. A link without such a key gets none of it.
#
# Every counter stays within +-2**29 (an ESP32 small int): each says whether it
# wraps or saturates.
#
# Load only what runs: walk mode needs the detector alone. An exercise mode's
# counter module (and exbase.py under it) is imported when SET_MODE selects the
# mode and dropped from sys.modules when the mode ends, so its code and tables
# leave the heap with it; that code (modes.py) is loaded only for SET_MODE and
# SET_RATE, and at boot, where it sets the device up (Insole.__init__). The Control
# commands (control.py) are loaded for each command and dropped after in the same
# way (lazy.py). Each mode has a highest
# sample rate it can hold on a 240 MHz ESP32 (MAX_RATE_HZ, from `make bench`;
# docs/HARDWARE.md): SET_RATE and SET_MODE refuse a combination above it.
try:
    from micropython import const
except ImportError:  # CPython: it evaluates the class's annotations, MicroPython never
    from typing import Any

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import sys

import lazy
import protocol as P
from gait import EV_STEP, EV_STRIKE
from pairing import TapGesture  # noqa: F401  # resident: modes.setup() makes the
from ring import EventRing  # noqa: F401  # gesture, the ring and the sampler
from sampler import Sampler  # noqa: F401

# Other modules' constants, private copies here: a const() imported from a module is
# a global, an interned name and a dictionary lookup per use; a private one is
# neither (tests/test_firmware_units.py checks every copy against its module's)
_ERR_NOT_ENCRYPTED = const(0x04)  # protocol.py
_ERR_NO_MEMORY = const(0x0B)
_MAX_LINKS = const(4)  # ble_insole.py: link slots
_SENT = const(0)  # ... ble.notify_link() and reply_link() results
_NO_MEMORY = const(2)
_GESTURE_PAIR = const(1)  # pairing.py: TapGesture.feed() results
_GESTURE_FORGET = const(2)
_SEQ29 = const(0x1FFFFFFF)  # ring.py: sequence numbers run on 2**29

_BURST = const(4)  # notifications per sample at most, per queue
_RAW_QUEUE = const(16)  # raw packets waiting for the radio (a power of two: masked)
_RAW_PER_PACKET = const(3)  # protocol.RAW_PER_PACKET
_GESTURE_N = const(0)  # Insole._counts: samples since the gesture was last fed
_RAW_AT = const(1)  # ... where the next raw sample goes in its packet, in u16s
_DIST_CM = const(2)  # ... the RSC total distance, cm (saturates)
_LAST_STEP_MS = const(3)  # ... the detector's clock at the last step
_DUE = const(4)  # ... service() has work waiting (1) or may be skipped (0)
_BLE_SEEN = const(5)  # ... ble.changes at the last service()
_STATUS_S = const(6)  # ... uptime_s of the last once-a-second work
_GESTURE_STEP = const(7)  # ... the gesture is fed every this many samples
_OWED = const(8)  # ... Control replies waiting for a buffer
_J_CHECK = const(9)  # ... ask the journal whether its batch is due
_J_OLDEST = const(10)  # ... journal.oldest_seq, read after each write (it loops)
_RAW_LAST = const(1 + 3 * (_RAW_PER_PACKET - 1))  # a packet's last sample, in u16s
_LITTLE_ENDIAN = sys.byteorder == "little"  # an array("H") holds the protocol's order
_BATTERY_EVERY_S = const(10)
_RSC_IDLE_MS = const(4000)  # no step for this long: speed and cadence are 0
_BATT_EMPTY_MV = const(3300)
_BATT_FULL_MV = const(4200)
_DIST_LIMIT_CM = const(0x1FFFFFFF)
_MS_MASK = const(0x1FFFFFFF)  # detector ms clock
_S_MASK = const(0x1FFFFFFF)  # sampler uptime_s wraps here
_COUNT_MAX = const(0x1FFFFFFF)  # saturating counters stop here
_BATT_MAX_MV = const(0xFFFF)
_LOGGED_LOST = const(0)  # Insole._logged: the lost total last logged
_LOGGED_RAW_LOST = const(1)  # ... the raw_lost total last logged
_LOGGED_LOST_S = const(2)  # ... uptime of the last loss line
_LOGGED_BATTERY_S = const(3)  # ... uptime of the last battery line
_LOST_LOG_EVERY_S = const(10)  # "ring lost" line at most this often
_BATTERY_LOG_EVERY_S = const(60)  # "battery failed" line at most this often
_EV_LAST = const(64)  # the exercise counters' highest event bit (exbase.EV_COACH)
_HALF29 = const(0x10000000)  # a sequence difference this large runs backwards
# Status flags (docs/PROTOCOL.md, "Status"): bit 0 the right insole, then these
_STATUS_RAW = const(0x02)  # raw streaming on
_STATUS_ENCRYPTED = const(0x04)  # the primary link is encrypted
_STATUS_JOURNAL_DROPPED = const(0x08)  # the journal dropped days (how many: GET_JOURNAL)
_STATUS_MODE_SHIFT = const(4)  # bits 4..7: the mode

# highest sample rate (Hz) each mode holds on a 240 MHz ESP32, by mode number: a step
# below the bench's estimates (`make bench`, esp32_estimate, three runs: walk 950,
# heel raise 350, toe scrunch 450, balance 250, slow walk 700-800), and never above
# protocol.RATE_MAX
MAX_RATE_HZ = (400, 300, 400, 250, 400)


class Insole:
    # The device's state, set up by modes.setup() (boot-only code, dropped after: its
    # comments say what each is). Annotations compile to nothing on MicroPython.
    adcs: list
    ble: Any
    cfg: dict
    sampler: Any
    det: Any
    ex: Any
    ring: Any
    journal: Any
    gesture: Any
    wdt: Any
    board_name: str
    mode: int
    lost: int
    raw_lost: int
    battery_errors: int
    raw_on: bool
    _counts: Any  # the arrays are array("i"), _raw_fill array("H")
    _tx_at: Any
    _gen: Any
    _logged: Any
    _raw_fill: Any
    _jbits: bytearray
    _pkt: bytearray
    _tx: bytearray
    _reply_buf: bytearray
    _status: bytearray
    _battery: bytearray
    _rsc: bytearray
    _read_h: Any
    _read_a: Any
    _read_f: Any
    _mains: Any
    _store: Any
    _log: Any
    _clock: Any
    _battery_fn: Any
    _led: Any
    _finished: Any
    _suffix: str
    _led_onoff: bool
    _moving: bool
    _mode_args: tuple
    _counter_mode: int
    _counter_modules: list
    _step_base: int
    _slot: int
    _delivered: int
    _replies: list
    _raw: list
    _raw_link: int
    _raw_tail: int
    _raw_queued: int
    _battery_mv: int

    def __init__(self, adcs, ble, store, cfg, log, clock, uid_suffix, board_name="",
                 battery_mv=None, led=None, wdt=None, finished=None,
                 ring_capacity=None, journal=None):
        # boot-only code: modes.py sets the device up, and is dropped after (lazy.py)
        lazy.run("modes", "setup", self, adcs, ble, store, cfg, log, clock, uid_suffix,
                 board_name, battery_mv, led, wdt, finished, ring_capacity, journal)

    # ---- identity ----
    def adv_name(self):
        return "%s-%s-%s" % (self.cfg["name"], self.cfg["side"], self._suffix)

    def banner(self):
        # the serial line printed once at start-up; tools wait for it (docs/PROTOCOL.md)
        return "insole {} board={} side={} rate={} name={}".format(
            P.VERSION, self.board_name, self.cfg["side"],
                               self.cfg["rate_hz"], self.adv_name())

    @property
    def steps(self):
        return self._total(self.det.steps)

    def _total(self, n):
        """Step number n of the current detector counted from boot (saturates)."""
        base = self._step_base
        return base + n if n < _COUNT_MAX - base else _COUNT_MAX

    # ---- the loop ----
    def run(self, max_samples=None):
        """Sample until max_samples, board finished() or EOFError from an ADC.

        Returns the number of samples taken (saturating at 2**29 - 1).
        """
        j = self.journal
        if j is not None and j.boot_line:  # what the journal found at boot
            self._log("jrn", j.boot_line)
            j.boot_line = ""
        n = self.loop(max_samples)
        self._log("run", "stop samples=%d steps=%d" % (n, self.steps))
        return n

    def loop(self, max_samples=None):
        """run() without the closing log line: allocates nothing while no event comes."""
        if max_samples is not None and max_samples > _COUNT_MAX:
            raise ValueError("max_samples above 2**29 - 1")
        n = 0  # samples taken: saturates, so a loop that runs for ever stays a small int
        finished = self._finished
        wdt = self.wdt
        while max_samples is None or n < max_samples:
            if finished is not None and finished():
                break
            self.sampler.wait()
            if wdt is not None:
                wdt.feed()
            try:
                self.sample()
            except EOFError:
                break
            if n < _COUNT_MAX:
                n += 1
        return n

    def idle(self, ms, period_ms=10):
        """Serve BLE (commands, backfill, status) for ms without sampling."""
        clock = self._clock
        end = clock.ticks_add(clock.ticks_ms(), ms)
        while clock.ticks_diff(end, clock.ticks_ms()) > 0:
            if self.wdt is not None:
                self.wdt.feed()
            self._counts[_J_CHECK] = self.journal is not None  # no sampling: no second ticks
            self.service()
            clock.sleep_ms(period_ms)

    def sample(self):
        """Take and process one sample (the hot path)."""
        h = self._read_h()
        a = self._read_a()
        f = self._read_f()
        ex = self.ex
        if ex is None:
            ev = self.det.feed(h, a, f)
            if ev:
                self._events(ev)
        else:
            ev = ex.feed(h, a, f)
            if ev:
                bit = 1
                while bit <= _EV_LAST:
                    if ev & bit:
                        ex.pack(bit, self._pkt, self.ring.head)
                        self._put(self._pkt)
                    bit <<= 1
        counts = self._counts
        n = counts[_GESTURE_N] + 1
        if n >= counts[_GESTURE_STEP]:
            n = 0
            g = self.gesture.feed(h, a, f)
            if g:
                # the wearer's foot gesture (pairing.py): open the pairing window, or
                # forget every bond (which opens it too)
                if g == _GESTURE_PAIR:
                    self.ble.open_window("gesture")
                elif g == _GESTURE_FORGET:
                    try:  # its code is loaded for it (ble_gatt.py)
                        lazy.run("ble_gatt", "forget_all", self.ble)
                    except MemoryError:
                        pass  # no room for it now: the wearer repeats the gesture
                counts[_DUE] = 1  # the bond file and the window: ble.flush()
        counts[_GESTURE_N] = n
        if self.raw_on:
            # one raw sample into the packet being filled (inline: every sample):
            # three array stores cost a quarter of a struct.pack_into
            i = counts[_RAW_AT]
            if i == 1:
                # a new packet in the queue slot after the waiting ones, stamped with
                # the index of its first sample
                pkt = self._raw[(self._raw_tail + self._raw_queued) & (_RAW_QUEUE - 1)]
                self._raw_fill = pkt
                pkt[0] = self.sampler.count & 0xFFFF
            else:
                pkt = self._raw_fill
            pkt[i] = h
            pkt[i + 1] = a
            pkt[i + 2] = f
            if i < _RAW_LAST:
                counts[_RAW_AT] = i + 3
            else:
                # the packet is full: straight to its central when nothing waits
                # before it and no IRQ came since service() last looked at the links
                # (so the link is still the one that asked; the stack copies the
                # data, so its queue slot is free again); else it stays queued, for
                # service()
                counts[_RAW_AT] = 1
                if not _LITTLE_ENDIAN:  # a big-endian host: the protocol's order by hand
                    for k in range(len(pkt)):
                        x = pkt[k]
                        pkt[k] = (x & 0xFF) << 8 | x >> 8
                link = self._raw_link
                ble = self.ble
                if self._raw_queued or link < 0 or ble.changes != counts[_BLE_SEEN] \
                        or ble.notify_link(link, ble.h_raw, pkt) != _SENT:
                    counts[_DUE] = 1
                    if self._raw_queued < _RAW_QUEUE - 1:
                        self._raw_queued += 1
                    else:
                        # the slot to fill next holds the oldest unsent packet: drop
                        # that one (the index gap shows it); the queue stays full
                        self._raw_tail = (self._raw_tail + 1) % _RAW_QUEUE
                        self.raw_lost = min(self.raw_lost + 1, 0xFFFF)  # logged now and then
        # most samples leave nothing to send and hear nothing from the radio: then
        # these three reads are all the service they need
        if counts[_DUE] or self.ble.changes != counts[_BLE_SEEN] \
                or self.sampler.uptime_s != counts[_STATUS_S]:
            self.service()

    def service(self):
        """Everything but sampling: link changes, commands, notifications, status."""
        ble = self.ble
        # read before the state it stands for: an IRQ from here on moves it again
        self._counts[_BLE_SEEN] = ble.changes
        self._counts[_DUE] = 0
        ble.flush()  # what the IRQ handler left for the main loop: bond file, advertising
        ready = ble.ready  # read once: bit per slot with an authenticated link
        waiting = False
        if ready or self.raw_on or self._counts[_OWED]:
            waiting = self._links(ready)
        if waiting:
            self._counts[_DUE] = 1  # a reply still waits for a buffer: retried next sample
        else:
            cmd = ble.next_link_command()
            if cmd is not None:
                # its write came after its link became authenticated, so link_gen
                # already counts that central: take it up before answering
                slot = cmd[1]
                if ble.link_gen[slot] != self._gen[slot]:
                    self._follow_link(slot)
                self._slot = slot
                self._command(cmd[0], True)
                self._counts[_DUE] = 1  # another command may wait behind it
                ready = ble.ready
        # events (and the raw stream) to each authenticated link
        if ready:
            head = self.ring.head
            tx_at = self._tx_at
            i = 0
            while ready:
                if ready & 1:
                    if tx_at[i] != head:
                        self._pump_events(i)
                        if tx_at[i] != head:
                            self._counts[_DUE] = 1  # a burst's worth sent, or no buffer
                    if self._raw_link == i and self._raw_queued:
                        raw = self._raw
                        sent = 0
                        while self._raw_queued and sent < _BURST:
                            tail = self._raw_tail
                            if ble.notify_link(i, ble.h_raw, raw[tail]) != _SENT:
                                break
                            self._raw_tail = (tail + 1) % _RAW_QUEUE
                            self._raw_queued -= 1
                            sent += 1
                        if self._raw_queued:
                            self._counts[_DUE] = 1
                ready >>= 1
                i += 1
        j = self.journal
        if j is not None and j.reading:
            # no stream of a link still reads from the journal: its reading code goes
            ring = self.ring
            head = ring.head
            for i in range(_MAX_LINKS):
                seq = self._tx_at[i]
                if self.ble.link_conn[i] >= 0 and seq != head and not ring.held(seq):
                    self._counts[_DUE] = 1  # looked at again on the next sample
                    break
            else:
                j.release()
        if self._counts[_J_CHECK]:  # new events, a second gone, or idle(): the batch may be due
            self._journal_tick()
        if self.sampler.uptime_s != self._counts[_STATUS_S]:
            self._second()

    def _links(self, ready):
        """Take up new centrals, drop what belonged to the ones gone, retry replies
        that met a full stack; True while a reply still waits for a buffer."""
        ble = self.ble
        replies = self._replies
        waiting = False
        for i in range(_MAX_LINKS):
            if not ready >> i & 1:
                if self._raw_link == i:
                    self.raw_on = False
                    self._raw_link = -1
                if replies[i] is not None:
                    replies[i] = None  # its central has gone
                    self._counts[_OWED] -= 1
                continue
            if ble.link_gen[i] != self._gen[i]:
                self._follow_link(i)
            if replies[i] is not None:
                if ble.reply_link(i, replies[i]) != _NO_MEMORY:
                    replies[i] = None
                    self._counts[_OWED] -= 1
                else:
                    waiting = True
        if self.raw_on and self._raw_link < 0:
            self.raw_on = False
        return waiting

    def _follow_link(self, slot):
        # a new authenticated central in slot: it gets events from now on and asks
        # for older ones; the previous one's reply and raw stream end with its link
        self._gen[slot] = self.ble.link_gen[slot]
        self._tx_at[slot] = self.ring.head
        if self._replies[slot] is not None:
            self._replies[slot] = None
            self._counts[_OWED] -= 1
        if self._raw_link == slot:
            self.raw_on = False
            self._raw_link = -1
            self._raw_queued = 0

    # ---- step events ----
    def _events(self, ev):
        d = self.det
        pkt = self._pkt
        if ev & EV_STEP:  # the previous step ends before the next one starts
            step = self._total(d.seq)
            P.pack_step(pkt, self.ring.head, step, d.strike_ms, d.stance_ms, d.swing_ms,
                        d.stride_ms, d.heel_off_ms)
            self._put(pkt)
            P.pack_load(pkt, self.ring.head, step, d.pattern, d.peak_heel, d.peak_arch,
                        d.peak_fore, d.share_heel, d.share_arch, d.share_fore, d.strike_corrected)
            self._put(pkt)
            self._led_set(0)
            # Running Speed and Cadence
            stride_cm = self.cfg["stride_cm"]
            counts = self._counts
            if counts[_DIST_CM] < _DIST_LIMIT_CM - stride_cm:
                counts[_DIST_CM] += stride_cm
            counts[_LAST_STEP_MS] = d.now_ms
            stride = d.stride_ms
            if stride > 0:
                self._moving = True
                cadence = min(255, 120000 // stride)  # two steps per stride of one foot
                # running: the foot was in the air for more than half of the stride
                # (swing_ms and stride_ms describe the same stride: previous strike to
                # this one)
                self._publish_rsc(d.swing_ms * 2 > stride, stride_cm * 2560 // stride,
                                  cadence)
        if ev & EV_STRIKE:
            P.pack_strike(pkt, self.ring.head, self._total(d.contact_seq), d.contact_ms,
                          d.now_ms)
            self._put(pkt)
            self._led_set(1)

    def _put(self, packet):
        ring = self.ring
        seq = ring.head
        cap = ring.capacity
        slot = seq & (cap - 1)
        bit = 1 << (slot & 7)
        bits = self._jbits
        if ring.count == cap and ring.behind(self._delivered) >= cap:
            # this put overwrites the undelivered event seq - cap: lost for good
            # unless the journal has it
            if not bits[slot >> 3] & bit:
                if self._delivered == (seq - cap) & _SEQ29:
                    self._delivered = (seq - cap + 1) & _SEQ29
                if self.lost < _COUNT_MAX:
                    self.lost += 1
        ring.put(packet)
        self._counts[_DUE] = 1  # to every link's stream
        j = self.journal
        if j is not None and j.append(seq, packet):
            bits[slot >> 3] |= bit
            self._counts[_J_CHECK] = 1
        else:
            bits[slot >> 3] &= ~bit & 0xFF

    def _oldest_held(self):
        """The oldest sequence number the ring or the journal holds."""
        ring = self.ring
        oldest = ring.oldest()
        if self.journal is not None:
            back = ring.behind(self._counts[_J_OLDEST])
            if ring.behind(oldest) < back < _HALF29:
                return self._counts[_J_OLDEST]
        return oldest

    def _journal_tick(self):
        self._counts[_J_CHECK] = 0
        # the batch clock is ticks, which also run while idle() serves BLE
        ms = self._clock.ticks_ms() & _MS_MASK
        j = self.journal
        if not j.due(ms) or not j.flush(ms):
            return
        self._counts[_J_OLDEST] = j.oldest_seq
        oldest = self._oldest_held()
        ring = self.ring
        gone = ring.behind(self._delivered) - ring.behind(oldest)
        if gone > 0:
            # the journal dropped its oldest day with events no central has had
            self._delivered = oldest
            self.lost = min(self.lost + gone, _COUNT_MAX)

    def _pump_events(self, slot):
        ring = self.ring
        ble = self.ble
        tx = self._tx
        cursor = self._tx_at
        sent = 0
        while cursor[slot] != ring.head and sent < _BURST:
            seq = cursor[slot]
            sent += 1
            if ring.held(seq):
                ring.copy(seq, tx)
            else:
                oldest = self._oldest_held()
                if ring.behind(seq) > ring.behind(oldest):
                    # gone while it waited (counted in lost if it was undelivered): go
                    # on from the oldest held, and remember that, so a failed send
                    # below does not meet the same gap again
                    cursor[slot] = oldest
                    continue
                j = self.journal
                if ring.behind(seq) <= ring.behind(j.next_seq):
                    # past the journal's end (its flash refused them): none until the
                    # ring's oldest
                    cursor[slot] = ring.oldest()
                    continue
                if not j.read(seq, tx):
                    # a number that holds no event (skipped at a reboot, refused by a
                    # failing flash, or unreadable now): go on with the next one
                    self._advance_tx(slot, seq)
                    continue
            if ble.notify_link(slot, ble.h_event, tx) != _SENT:
                break  # no link (it may have dropped since service() looked) or no buffer
            self._advance_tx(slot, seq)

    def _advance_tx(self, slot, seq):
        ring = self.ring
        seq = (seq + 1) & _SEQ29
        self._tx_at[slot] = seq
        if ring.behind(seq) < ring.behind(self._delivered):
            self._delivered = seq

    def buffered(self):
        """Events newer than the newest one delivered (all of them still held)."""
        ring = self.ring
        return min(ring.behind(self._delivered), ring.behind(self._oldest_held()))

    # ---- raw stream ----
    # ---- once a second ----
    def _second(self):
        now = self._counts[_STATUS_S] = self.sampler.uptime_s
        if self.journal is not None:
            self._journal_tick()  # the batch's 5 s, checked once a second
        logged = self._logged
        if self._battery_fn is not None and now % _BATTERY_EVERY_S == 0:
            try:
                # on an ESP32 ADC.read_uv() raises when the eFuse calibration fails
                mv = max(0, min(int(self._battery_fn()), _BATT_MAX_MV))
            except Exception as e:  # any failure: keep the last good value
                if self.battery_errors < _COUNT_MAX:
                    self.battery_errors += 1
                if (now - logged[_LOGGED_BATTERY_S]) & _S_MASK >= _BATTERY_LOG_EVERY_S:
                    logged[_LOGGED_BATTERY_S] = now
                    self._log("batt", "read failed (%d): %r" % (self.battery_errors, e))
            else:
                self._battery_mv = mv
                # percent of the range from empty to full; no battery sense (0 mV):
                # powered from USB, 100
                pct = (mv - _BATT_EMPTY_MV) * 100 // (_BATT_FULL_MV - _BATT_EMPTY_MV)
                self._battery[0] = max(0, min(100, pct)) if mv > 0 else 100
                self.ble.publish(self.ble.h_battery, self._battery)
        if self._moving and (self.det.now_ms - self._counts[_LAST_STEP_MS]) & _MS_MASK \
                > _RSC_IDLE_MS:
            self._moving = False
            self._publish_rsc(False, 0, 0)
        if (now - logged[_LOGGED_LOST_S]) & _S_MASK >= _LOST_LOG_EVERY_S:
            # running totals, at most one line each per _LOST_LOG_EVERY_S: a link that
            # cannot keep up loses something every few samples, and the log must not
            if self.lost != logged[_LOGGED_LOST]:
                logged[_LOGGED_LOST] = self.lost
                logged[_LOGGED_LOST_S] = now
                self._log("ring", "lost %d" % self.lost)
            if self.raw_lost != logged[_LOGGED_RAW_LOST]:
                logged[_LOGGED_RAW_LOST] = self.raw_lost
                logged[_LOGGED_LOST_S] = now
                self._log("raw", "lost %d" % self.raw_lost)
        self._update_status()

    def _update_status(self):
        flags = (1 if self.cfg["side"] == "R" else 0) | (self.mode << _STATUS_MODE_SHIFT)
        if self.raw_on:
            flags |= _STATUS_RAW
        if self.ble.encrypted:
            flags |= _STATUS_ENCRYPTED
        if self.journal is not None and self.journal.dropped:
            flags |= _STATUS_JOURNAL_DROPPED
        faults = getattr(self.det, "faults", 0)
        if self._mains is not None:
            faults = self._mains.faults(faults)  # hum at the other mains frequency
        P.pack_status(self._status, flags, self.sampler.rate_hz, self.steps,
                      self.sampler.uptime_s, self.sampler.overruns, self.lost,
                      faults, self._battery_mv, self.buffered())
        self.ble.publish(self.ble.h_status, self._status)

    # ---- Running Speed and Cadence (a step's part: _events) ----
    def _publish_rsc(self, running, speed_256, cadence):
        P.pack_rsc(self._rsc, running, min(speed_256, 0xFFFF), cadence, self.cfg["stride_cm"],
                   self._counts[_DIST_CM] // 10)
        self.ble.publish(self.ble.h_rsc, self._rsc)

    # ---- Control ----
    def _command(self, data, encrypted):
        """Answer one Control write: control.py carries it out, loaded for it and
        dropped after (lazy.py)."""
        op = data[0] if data else 0
        if not encrypted:
            reply = bytes((op, _ERR_NOT_ENCRYPTED))
        else:
            try:
                reply = lazy.run("control", "command", self, data)
            except MemoryError:
                # no room for the command's code now: the central may ask again
                reply = bytes((op, _ERR_NO_MEMORY))
        slot = self._slot
        self._counts[_DUE] = 1  # what the command changed: status, the raw stream, retries
        if self.ble.reply_link(slot, reply) == _NO_MEMORY:
            if self._replies[slot] is None:
                self._counts[_OWED] += 1
            self._replies[slot] = reply  # retried on the next samples while the link lasts

    def _led_set(self, on):
        led = self._led
        if led is None:
            return
        if not self._led_onoff:
            led.value(on)
        elif on:
            led.on()
        else:
            led.off()
