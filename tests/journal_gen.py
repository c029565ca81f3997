# Step Event streams as the insole makes them, for the journal tests. Runs under CPython
# and under the micropython binary (every value stays within +-2**29), so both
# interpreters can journal the very same packets.
#
# A walk: per step a STRIKE, later its STEP and LOAD, with the detector's timing
# relations (stride = strike - previous strike, swing = stride - previous stance); now
# and then a contact that never becomes a step, a detector restart (START), an
# exercise event, a foreign packet, a long confirmation delay, an unknown heel-off.
import protocol as P

MASK = 0x1FFFFFFF
# protocol.py's private constants (tests/test_journal.py checks them)
EVENT_FORMAT = 1
KIND_EXERCISE_FIRST = 0x10
MODE_WALK = 0


class Rand:
    """A small linear congruential generator (values below 2**23)."""

    def __init__(self, seed):
        self.x = seed % 65537 or 1

    def below(self, n):
        self.x = (self.x * 75 + 74) % 65537
        return self.x % n

    def between(self, lo, hi):
        return lo + self.below(hi - lo + 1)


class Walk:
    """Events of a walk, continuing from seq and step (as after a reboot)."""

    def __init__(self, seed=1, seq=0, step=0, t0=2000, extras=True, rate_hz=100):
        self.r = Rand(seed)
        self.seq = seq
        self.step = step
        self.t = t0  # detector ms of the next contact
        self.extras = extras
        self.rate_hz = rate_hz
        self.prev = None  # (strike, stance) of the previous step
        self.buf = bytearray(20)

    def _out(self, out):
        out.append((self.seq, bytes(self.buf)))
        self.seq = (self.seq + 1) & MASK

    def start(self, out):
        P.pack_start(self.buf, self.seq, self.step, self.rate_hz, 0, MODE_WALK)
        self._out(out)

    def steps(self, n, out=None):
        """Append the events of n more steps to out (a list of (seq, packet)); return it."""
        if out is None:
            out = []
        r = self.r
        b = self.buf
        for _ in range(n):
            if self.extras and r.below(60) == 0:  # a contact that never becomes a step
                P.pack_strike(b, self.seq, self.step + 1, self.t, (self.t + 40) & MASK)
                self._out(out)
                self.t = (self.t + r.between(1500, 4000)) & MASK
                self.prev = None
            c = self.t
            delay = r.between(20, 120) if r.below(30) else r.between(256, 3000)
            P.pack_strike(b, self.seq, self.step + 1, c, (c + delay) & MASK)
            self._out(out)
            stance = r.between(540, 760)
            if self.prev is None:
                swing = stride = 0
            else:
                stride = (c - self.prev[0]) & MASK
                swing = (stride - self.prev[1]) & MASK
                if stride > 0xFFFF or swing > 0xFFFF:
                    swing = stride = 0
            heel = (c + stance - r.between(80, 300)) & MASK
            if self.extras and r.below(25) == 0:
                heel = (c + 70000) & MASK  # heel-off unknown: sent as 0xFFFF
            self.step += 1
            P.pack_step(b, self.seq, self.step, c, stance, swing, stride, heel)
            self._out(out)
            h = r.between(250, 600)
            a = r.between(0, 1000 - h)
            f = max(0, 1000 - h - a - r.below(3))
            if self.extras and r.below(40) == 0:
                h = a = f = 0  # no channel was live
            P.pack_load(b, self.seq, self.step, r.below(4), r.below(65536), r.below(65536),
                        r.below(65536), h, a, f)
            self._out(out)
            self.prev = (c, stance)
            self.t = (c + r.between(950, 1250)) & MASK
            if self.extras:
                self._extras(out)
        return out

    def _extras(self, out):
        r = self.r
        b = self.buf
        k = r.below(400)
        if k == 0:  # a rate change: the detector clock restarts
            self.t = r.between(800, 3000)
            self.prev = None
            self.start(out)
        elif k < 4:  # an exercise event
            for i in range(20):
                b[i] = r.below(256)
            b[0] = EVENT_FORMAT
            b[1] = KIND_EXERCISE_FIRST + r.below(4)
            b[2] = self.seq & 0xFF
            b[3] = (self.seq >> 8) & 0xFF
            self._out(out)
        elif k == 4:  # a packet of another format
            for i in range(20):
                b[i] = r.below(256)
            b[0] = 2
            self._out(out)
