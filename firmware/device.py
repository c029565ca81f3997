# The insole as a device: sampling loop, detector, event delivery, commands.
#
# Hardware-free: the ADCs, the BLE server, the clock and the config store are
# passed in (app.py builds them from the board), so the same code runs on an
# ESP32, on the virtual board and under the tests. One sample that produces no
# event allocates nothing (tests prove it under micropython.heap_lock()).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import exercise
import protocol as P
from ble_insole import SENT
from gait import EV_STEP, EV_STRIKE, GaitDetector
from ring import SEQ_MASK as _SEQ29
from ring import EventRing
from sampler import Sampler

_BURST = const(4)  # notifications per sample at most, per queue
_RAW_QUEUE = const(16)  # raw packets waiting for the radio
_BATTERY_EVERY_S = const(10)
_RSC_IDLE_MS = const(4000)  # no step for this long: speed and cadence are 0
_BATT_EMPTY_MV = const(3300)
_BATT_FULL_MV = const(4200)
_DIST_LIMIT_CM = const(0x1FFFFFFF)
_MS_MASK = const(0x1FFFFFFF)  # detector ms clock


class Insole:
    def __init__(self, adcs, ble, store, cfg, log, clock, uid_suffix, board_name="",
                 battery_mv=None, led=None, wdt=None, finished=None):
        self._adc_h, self._adc_a, self._adc_f = adcs
        self.ble = ble
        self._store = store
        self.cfg = cfg
        self._log = log
        self._clock = clock
        self._suffix = uid_suffix
        self._battery_fn = battery_mv
        self._led = led
        self._led_onoff = led is not None and hasattr(led, "on")
        self.board_name = board_name
        self.wdt = wdt
        self._finished = finished
        self.sampler = Sampler(cfg["rate_hz"], clock)
        log.clock = self.sampler
        self.det = self._new_detector()
        self.mode = P.MODE_WALK
        self._mode_args = (P.MODE_WALK, 0, 0, 0)  # SET_MODE's parsed arguments
        self.ex = None  # the exercise counter while an exercise mode is on
        self._step_base = 0  # steps of earlier detectors (rate changes)
        self.ring = EventRing()
        self._pkt = bytearray(P.EVENT_SIZE)  # event being built
        self._tx = bytearray(P.EVENT_SIZE)  # event being notified
        self._next_tx = 0  # next event sequence number to notify
        self._delivered = 0  # sequence number after the last delivered event
        self._links = ble.links
        self._reply = None  # Control reply still to be sent (bytes)
        self._reply_buf = bytearray(P.REPLY_MAX)
        self.raw_on = False
        self._raw = [bytearray(P.RAW_SIZE) for _ in range(_RAW_QUEUE)]
        self._raw_head = 0  # packets filled
        self._raw_tail = 0  # packets sent
        self._raw_slot = 0  # samples in the packet being filled
        self.raw_lost = 0
        self._status = bytearray(P.STATUS_SIZE)
        self._status_s = -1
        self._battery_mv = 0
        self._battery = bytearray(1)
        self._rsc = bytearray(P.RSC_SIZE)
        self._dist_cm = 0
        self._last_step_ms = 0
        self._moving = False
        self.ble.set_name(self.adv_name())
        self._emit_start()
        self._update_status()
        self.ble.advertise()

    # ---- identity ----
    def adv_name(self):
        return "%s-%s-%s" % (self.cfg["name"], self.cfg["side"], self._suffix)

    def banner(self):
        return P.BANNER.format(P.VERSION, self.board_name, self.cfg["side"],
                               self.cfg["rate_hz"], self.adv_name())

    @property
    def steps(self):
        return self._step_base + self.det.steps

    # ---- the loop ----
    def run(self, max_samples=None):
        """Sample until max_samples, board finished() or EOFError from an ADC.

        Returns the number of samples taken.
        """
        n = self.loop(max_samples)
        self._log("run", "stop samples=%d steps=%d" % (n, self.steps))
        return n

    def loop(self, max_samples=None):
        """run() without the closing log line: allocates nothing while no event comes."""
        n = 0
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
            n += 1
        return n

    def idle(self, ms, period_ms=10):
        """Serve BLE (commands, backfill, status) for ms without sampling."""
        clock = self._clock
        end = clock.ticks_add(clock.ticks_ms(), ms)
        while clock.ticks_diff(end, clock.ticks_ms()) > 0:
            if self.wdt is not None:
                self.wdt.feed()
            self.service()
            clock.sleep_ms(period_ms)

    def sample(self):
        """Take and process one sample (the hot path)."""
        h = self._adc_h.read_u16()
        a = self._adc_a.read_u16()
        f = self._adc_f.read_u16()
        ex = self.ex
        if ex is None:
            ev = self.det.feed(h, a, f)
            if ev:
                self._events(ev)
        else:
            ev = ex.feed(h, a, f)
            if ev:
                self._exercise_events(ex, ev)
        if self.raw_on:
            self._raw_sample(h, a, f)
        self.service()

    def service(self):
        """Everything but sampling: link changes, commands, notifications, status."""
        ble = self.ble
        if ble.links != self._links:
            # a new central: it gets events from now on and asks for older ones
            self._links = ble.links
            self._next_tx = self.ring.head
        if not ble.connected and self.raw_on:
            self.raw_on = False
        if self._reply is not None:
            if ble.reply(self._reply) == SENT or not ble.connected:
                self._reply = None
        if self._reply is None:
            cmd = ble.next_command()
            if cmd is not None:
                self._command(cmd[0], cmd[1])
        if ble.connected:
            self._pump_events()
            if self._raw_tail != self._raw_head:
                self._pump_raw()
        if self.sampler.uptime_s != self._status_s:
            self._second()

    # ---- step events ----
    def _events(self, ev):
        d = self.det
        pkt = self._pkt
        if ev & EV_STEP:  # the previous step ends before the next one starts
            step = self._step_base + d.seq
            P.pack_step(pkt, self.ring.head, step, d.strike_ms, d.stance_ms, d.swing_ms,
                        d.stride_ms, d.heel_off_ms)
            self.ring.put(pkt)
            P.pack_load(pkt, self.ring.head, step, d.pattern, d.peak_heel, d.peak_arch,
                        d.peak_fore, d.share_heel, d.share_arch, d.share_fore)
            self.ring.put(pkt)
            self._led_set(0)
            self._rsc_step()
        if ev & EV_STRIKE:
            P.pack_strike(pkt, self.ring.head, self._step_base + d.contact_seq, d.contact_ms,
                          d.now_ms)
            self.ring.put(pkt)
            self._led_set(1)

    def _exercise_events(self, ex, ev):
        bit = 1
        while bit <= exercise.EV_COACH:
            if ev & bit:
                ex.pack(bit, self._pkt, self.ring.head)
                self.ring.put(self._pkt)
            bit <<= 1

    def _emit_start(self):
        side = P.SIDE_RIGHT if self.cfg["side"] == "R" else P.SIDE_LEFT
        P.pack_start(self._pkt, self.ring.head, self.steps, self.cfg["rate_hz"], side,
                     self.mode)
        self.ring.put(self._pkt)

    def _pump_events(self):
        ring = self.ring
        sent = 0
        while self._next_tx != ring.head and sent < _BURST:
            seq = self._next_tx
            if not ring.held(seq):
                # overwritten while it waited: nothing older can be sent any more
                self._log("ring", "lost %d" % (ring.behind(seq) - ring.count))
                seq = ring.oldest()
            ring.copy(seq, self._tx)
            if self.ble.notify(self.ble.h_event, self._tx) != SENT:
                return
            self._next_tx = (seq + 1) & _SEQ29
            if ring.behind(self._next_tx) < ring.behind(self._delivered):
                self._delivered = self._next_tx
            sent += 1

    def _backfill(self, first16):
        ring = self.ring
        back = (ring.head - first16) & P.SEQ_MASK
        err = P.ERR_OK
        if back > ring.count:
            back = ring.count
            err = P.ERR_PARTIAL
        first = (ring.head - back) & _SEQ29
        self._next_tx = first
        n = P.pack_backfill_reply(self._reply_buf, err, first, back)
        return bytes(self._reply_buf[:n])

    def buffered(self):
        """Events made since the last one delivered."""
        return min(self.ring.behind(self._delivered), self.ring.count)

    # ---- raw stream ----
    def _raw_sample(self, h, a, f):
        pkt = self._raw[self._raw_head % _RAW_QUEUE]
        slot = self._raw_slot
        if slot == 0:
            P.pack_raw_index(pkt, self.sampler.count)
        P.pack_raw_sample(pkt, slot, h, a, f)
        slot += 1
        if slot == P.RAW_PER_PACKET:
            slot = 0
            self._raw_head += 1
            if self._raw_head - self._raw_tail >= _RAW_QUEUE:
                # the slot to fill next still holds the oldest unsent packet
                self._raw_tail += 1  # drop the oldest; the index gap shows it
                self.raw_lost = min(self.raw_lost + 1, 0xFFFF)
                self._log("raw", "lost %d" % self.raw_lost)
        self._raw_slot = slot

    def _pump_raw(self):
        sent = 0
        while self._raw_tail != self._raw_head and sent < _BURST:
            if self.ble.notify(self.ble.h_raw, self._raw[self._raw_tail % _RAW_QUEUE]) != SENT:
                return
            self._raw_tail += 1
            sent += 1
        if self._raw_tail >= _RAW_QUEUE:  # keep the counters small, slots unchanged
            self._raw_tail -= _RAW_QUEUE
            self._raw_head -= _RAW_QUEUE

    def _raw_start(self):
        self.raw_on = True
        self._raw_slot = 0
        self._raw_head = self._raw_tail = 0

    # ---- once a second ----
    def _second(self):
        self._status_s = self.sampler.uptime_s
        if self._battery_fn is not None and self._status_s % _BATTERY_EVERY_S == 0:
            self._battery_mv = self._battery_fn()
            self._battery[0] = self.battery_percent()
            self.ble.publish(self.ble.h_battery, self._battery)
        if self._moving and (self.det.now_ms - self._last_step_ms) & _MS_MASK > _RSC_IDLE_MS:
            self._moving = False
            self._publish_rsc(False, 0, 0)
        self._update_status()

    def _update_status(self):
        flags = (1 if self.cfg["side"] == "R" else 0) | (self.mode << P.STATUS_MODE_SHIFT)
        if self.raw_on:
            flags |= P.STATUS_RAW
        if self.ble.encrypted:
            flags |= P.STATUS_ENCRYPTED
        P.pack_status(self._status, flags, self.sampler.rate_hz, self.steps,
                      self.sampler.uptime_s, self.sampler.overruns, self._battery_mv,
                      self.buffered())
        self.ble.publish(self.ble.h_status, self._status)

    def battery_percent(self):
        mv = self._battery_mv
        if mv <= 0:
            return 100  # no battery sense: powered from USB
        pct = (mv - _BATT_EMPTY_MV) * 100 // (_BATT_FULL_MV - _BATT_EMPTY_MV)
        return max(0, min(100, pct))

    # ---- Running Speed and Cadence ----
    def _rsc_step(self):
        d = self.det
        stride_cm = self.cfg["stride_cm"]
        if self._dist_cm < _DIST_LIMIT_CM - stride_cm:
            self._dist_cm += stride_cm
        self._last_step_ms = d.now_ms
        stride = d.stride_ms
        if stride <= 0:
            return
        self._moving = True
        cadence = min(255, 120000 // stride)  # two steps per stride of one foot
        # running: the foot was in the air for more than half of the stride (swing_ms
        # and stride_ms describe the same stride: previous strike to this one)
        self._publish_rsc(d.swing_ms * 2 > stride, stride_cm * 2560 // stride, cadence)

    def _publish_rsc(self, running, speed_256, cadence):
        P.pack_rsc(self._rsc, running, min(speed_256, 0xFFFF), cadence, self.cfg["stride_cm"],
                   self._dist_cm // 10)
        self.ble.publish(self.ble.h_rsc, self._rsc)

    # ---- Control ----
    def _command(self, data, encrypted):
        if not encrypted:
            op = data[0] if data else 0
            self._send_reply(bytes((op, P.ERR_NOT_ENCRYPTED)))
            return
        op, err, value = P.parse_command(data)
        if err != P.ERR_OK:
            self._send_reply(bytes((op, err)))
            return
        if op == P.OP_BACKFILL:
            self._send_reply(self._backfill(value))
            return
        if op == P.OP_GET_CONFIG:
            side = P.SIDE_RIGHT if self.cfg["side"] == "R" else P.SIDE_LEFT
            n = P.pack_config_reply(self._reply_buf, side, self.cfg["rate_hz"],
                                    self.cfg["stride_cm"], self.cfg["name"])
            self._send_reply(bytes(self._reply_buf[:n]))
            return
        if op == P.OP_SET_SIDE:
            err = self._change("side", "R" if value == P.SIDE_RIGHT else "L")
        elif op == P.OP_SET_NAME:
            err = self._change("name", value)
        elif op == P.OP_SET_RATE:
            err = self._change("rate_hz", value)
            if err == P.ERR_OK:
                self._restart_detector()
        elif op == P.OP_SET_STRIDE:
            err = self._change("stride_cm", value)
        elif op == P.OP_ZERO:
            # kept in the config, so the zero survives a reboot and a re-flash
            self.det.zero()
            err = self._change("zero", list(self.det.zero_levels()))
        elif op == P.OP_RAW_START:
            self._raw_start()
        elif op == P.OP_RAW_STOP:
            self.raw_on = False
        elif op == P.OP_SET_MODE:
            self.mode = value[0]
            self._mode_args = value
            self._new_exercise()
            self._emit_start()
        self._log("cmd", "%d -> %d" % (op, err))
        self._send_reply(bytes((op, err)))

    def _change(self, key, value):
        new = dict(self.cfg)
        new[key] = value
        if not self._store.save(new):
            return P.ERR_STORAGE
        self.cfg = new
        if key in ("side", "name"):
            self.ble.set_name(self.adv_name())
            if not self.ble.connected:
                self.ble.advertise()
        return P.ERR_OK

    def _new_detector(self):
        det = GaitDetector(self.cfg["rate_hz"])
        zero = self.cfg.get("zero")
        if zero:
            det.set_zero(zero[0], zero[1], zero[2])
        return det

    def _new_exercise(self):
        mode, target, tol, pattern = self._mode_args
        self.ex = None
        if mode != P.MODE_WALK:
            self.ex = exercise.create(mode, self.cfg["rate_hz"], target, tol, pattern)

    def _restart_detector(self):
        self._step_base += self.det.steps
        rate = self.cfg["rate_hz"]
        self.det = self._new_detector()
        self._new_exercise()  # an exercise counter follows the new rate too
        self.sampler.set_rate(rate)
        self._moving = False
        self._emit_start()

    def _send_reply(self, data):
        if self.ble.reply(data) != SENT and self.ble.connected:
            self._reply = data  # retried on the next samples

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
