# Fixed-point gait-event detector for a three-FSR insole.
#
# Hardware-free and integer-only: the same file runs under CPython and MicroPython
# and gives the same events. Feed one sample at a time (heel, arch, forefoot as
# ADC.read_u16() counts); feed() returns a bitmask of the events that sample produced
# and leaves their fields in attributes. feed() allocates nothing, and every value it
# computes stays within +-2**29 (an ESP32 small int).
#
# How it works, per sample:
# 1. Each channel keeps a baseline (swing level: follows dips at once, rises slowly
#    only while the foot is in the air), a peak envelope (follows rises at once,
#    decays towards the baseline over seconds) and a roughness estimate (mean
#    sample-to-sample change). A channel whose span is below _MIN_SPAN counts, or
#    whose roughness is a large part of its span (noise, a loose wire), is ignored,
#    so a dead, saturated or disconnected FSR does not stop the others.
# 2. The composite load is the largest live channel's load as a fraction of its span
#    (0.._FULL), so the earliest-loaded region marks contact and the last unloaded
#    one marks toe-off.
# 3. Contact needs the composite above _ON for _CONFIRM_MS after at least
#    _MIN_SWING_MS below _OFF; the onset is back-dated by interpolating where the
#    composite history crossed _ONSET. A dip below _OFF that is shorter than
#    _MIN_SWING_MS is part of the same stance (no double count).
try:
    import micropython
    from micropython import const
except ImportError:  # CPython

    class micropython:  # noqa: N801  (stands in for the MicroPython module)
        @staticmethod
        def native(f):
            return f

    def const(x):
        return x


from array import array

EV_STRIKE = const(1)  # contact confirmed: contact_ms, contact_seq are set
EV_STEP = const(2)  # toe-off confirmed: the step summary attributes are set

PATTERN_UNKNOWN = const(0)
PATTERN_REAR = const(1)
PATTERN_MID = const(2)
PATTERN_FORE = const(3)
PATTERN_NAMES = ("unknown", "rear", "mid", "fore")

_HEEL = const(0)
_ARCH = const(1)
_FORE = const(2)

_FULL = const(1024)  # composite load scale: 1024 = a channel's whole span
_ON = const(256)  # contact threshold (25 % of span)
_OFF = const(128)  # unloaded threshold (12.5 %): hysteresis against chatter
_ONSET = const(200)  # level whose crossing dates contact and toe-off
_LEAD_MS = const(10)  # the foot touched this long before the _ONSET crossing
_MIN_SPAN = const(2500)  # counts: smaller swings are noise, not footsteps
_ROUGH_K = const(6)  # live only if mean |change| * _ROUGH_K < span
_MIN_SWING_MS = const(160)  # shorter unloaded spells are mid-stance dips
_CONFIRM_MS = const(20)  # contact must hold this long before it is reported
_MAX_STANCE_MS = const(4000)  # longer contacts are standing, not steps
_MAX_STRIDE_MS = const(4000)  # longer gaps restart stride/swing timing
_BASE_UP_MS = const(400)  # baseline rise time constant while unloaded
_BASE_CREEP_MS = const(8000)  # time for the baseline to creep up a whole span
_PEAK_DECAY_MS = const(4000)  # peak envelope decay time constant
_ROUGH_MS = const(1000)  # roughness averaging time constant
_HIST = const(64)  # composite history for back-dating (power of two)
_HIST_MASK = const(63)
_SUB = const(16)  # sub-sample resolution of back-dated times
_SUM_LIMIT = const(0x8000000)  # halve stance sums before they reach 2**27
_MS_MASK = const(0x1FFFFFFF)  # the ms clock wraps at 2**29 (6.2 days)
_SWING = const(0)
_STANCE = const(1)

# Sensor positions along the foot in per-mille of foot length (heel, arch,
# forefoot) for the weighted contact position; strike-index bands after
# Cavanagh & Lafortune 1980: rear < 340, fore >= 680.
_POS_HEEL = const(120)
_POS_ARCH = const(480)
_POS_FORE = const(730)
_REAR_BELOW = const(340)
_FORE_FROM = const(680)


def _shift_for(samples):
    # Smallest shift s with 2**s >= samples: an IIR step of 1/2**s has a time
    # constant of about `samples` samples.
    s = 0
    while (1 << s) < samples:
        s += 1
    return s


class GaitDetector:
    def __init__(self, rate_hz=100):
        if not 50 <= rate_hz <= 1000:
            raise ValueError("rate_hz must be 50..1000")
        self.rate_hz = rate_hz
        self._ms_q = 1000 // rate_hz
        self._ms_r = 1000 % rate_hz
        self._min_swing = max(2, _MIN_SWING_MS * rate_hz // 1000)
        self._confirm = max(1, _CONFIRM_MS * rate_hz // 1000)
        self._base_up = _shift_for(_BASE_UP_MS * rate_hz // 1000)
        self._base_creep = _shift_for(_BASE_CREEP_MS * rate_hz // 1000)
        self._peak_decay = _shift_for(_PEAK_DECAY_MS * rate_hz // 1000)
        self._rough = _shift_for(_ROUGH_MS * rate_hz // 1000)
        # per channel, values in 1/16 count
        self._base = array("i", (0, 0, 0))
        self._peak = array("i", (0, 0, 0))
        self._rough_avg = array("i", (0, 0, 0))
        self._prev = array("i", (0, 0, 0))
        self._norm = array("i", (0, 0, 0))  # this sample's load, 0.._FULL (0 if not live)
        self._load = array("i", (0, 0, 0))  # this sample's load above baseline, counts
        self._live = array("i", (0, 0, 0))
        self._sum = array("i", (0, 0, 0))  # stance load sums (counts / 16)
        self._pk = array("i", (0, 0, 0))  # stance peak loads, counts
        self._hist = array("h", [0] * _HIST)
        # public event fields
        self.contact_ms = 0
        self.contact_seq = 0
        self.steps = 0
        self.seq = 0
        self.strike_ms = 0
        self.toe_off_ms = 0
        self.heel_off_ms = 0
        self.stance_ms = 0
        self.swing_ms = 0
        self.stride_ms = 0
        self.pattern = PATTERN_UNKNOWN
        self.peak_heel = 0
        self.peak_arch = 0
        self.peak_fore = 0
        self.share_heel = 0
        self.share_arch = 0
        self.share_fore = 0
        self.reset()

    def reset(self):
        """Forget all state: the next sample is time 0 and the new baseline."""
        self.now_ms = 0
        self._ms_frac = 0
        self._n = 0  # samples seen (saturates; only compared with small numbers)
        self._h = 0  # history write index
        self._state = _SWING
        self._run = 0  # samples in the current swing (saturating)
        self._on_run = 0  # consecutive samples above _ON while in swing
        self._tracked = False  # current stance began with a confirmed contact
        self._pending = False  # tentative toe-off awaiting _MIN_SWING
        self._toe_ms = 0
        self._toe_low = False  # toe-off already dated by an _ONSET crossing
        self._heel_up = False
        self._heel_off = 0
        self._strike = 0
        self._pattern = PATTERN_UNKNOWN
        self._first = -1  # first channel above _ON in this contact
        self._last_strike = 0
        self._last_toe = 0
        self._have_last = False
        self._since_last = 0  # ms since the last summarised step (saturating)
        self._prev_l = 0
        for c in range(3):
            self._base[c] = -1
            self._peak[c] = 0
            self._rough_avg[c] = 0
            self._prev[c] = 0
            self._norm[c] = 0
            self._load[c] = 0
            self._live[c] = 0
            self._sum[c] = 0
            self._pk[c] = 0
        for i in range(_HIST):
            self._hist[i] = 0

    def zero(self):
        """Take the current readings as the unloaded level (insole off the foot)."""
        for c in range(3):
            self._base[c] = self._prev[c] << 4
            self._peak[c] = self._base[c]
        self._state = _SWING
        self._tracked = False
        self._pending = False

    @micropython.native
    def _channel(self, c, x, swing):
        # Update one channel's baseline, peak, roughness; return its load 0.._FULL.
        x16 = x << 4
        base = self._base[c]
        if base < 0:  # first sample
            base = x16
            self._peak[c] = x16
            self._prev[c] = x
        peak = self._peak[c]
        if x16 < base:
            base += (x16 - base) >> 1
        elif swing and x16 - base < ((peak - base) >> 3):
            # in the air, near the baseline: follow drift of the swing level
            base += (x16 - base) >> self._base_up
        else:
            # anywhere else creep up by a fixed part of the span, so a baseline
            # that started low (or a stuck stance) recovers in seconds
            rise = (peak - base) >> self._base_creep
            if rise > x16 - base:
                rise = x16 - base
            base += rise
        if x16 > peak:
            peak = x16
        else:
            peak -= (peak - base) >> self._peak_decay
        span16 = peak - base
        self._base[c] = base
        self._peak[c] = peak
        d = x - self._prev[c]
        if d < 0:
            d = -d
        self._prev[c] = x
        r = self._rough_avg[c]
        r += ((d << 4) - r) >> self._rough
        self._rough_avg[c] = r
        span = span16 >> 4
        load = (x16 - base) >> 4
        if load < 0:
            load = 0
        self._load[c] = load
        if span < _MIN_SPAN or (r >> 4) * _ROUGH_K >= span:
            self._live[c] = 0
            self._norm[c] = 0
            return 0
        self._live[c] = 1
        n = load * _FULL // span
        if n > _FULL:
            n = _FULL
        self._norm[c] = n
        return n

    @micropython.native
    def feed(self, heel, arch, fore):
        """Take one sample; return 0 or a bitmask of EV_STRIKE / EV_STEP."""
        # the device clock: ms since the first sample, exact for any rate
        if self._n:
            self._ms_frac += self._ms_r
            ms = self.now_ms + self._ms_q
            if self._ms_frac >= self.rate_hz:
                self._ms_frac -= self.rate_hz
                ms += 1
            self.now_ms = ms & _MS_MASK
        if self._n < 0x10000:
            self._n += 1
        swing = self._state == _SWING
        nh = self._channel(_HEEL, heel, swing)
        na = self._channel(_ARCH, arch, swing)
        nf = self._channel(_FORE, fore, swing)
        lc = nh
        if na > lc:
            lc = na
        if nf > lc:
            lc = nf
        prev_l = self._prev_l
        self._prev_l = lc
        self._h = (self._h + 1) & _HIST_MASK
        self._hist[self._h] = lc
        if self._since_last < _MAX_STRIDE_MS:
            self._since_last += self._ms_q
        events = 0
        if swing:
            if self._run < 0x10000:
                self._run += 1
            if self._pending:
                if lc >= _ON:
                    # back above contact level too soon: a mid-stance dip
                    self._pending = False
                    self._state = _STANCE
                    self._stance_sample(nh, na, nf)
                    return 0
                if not self._toe_low and lc < _ONSET and prev_l >= _ONSET:
                    self._toe_ms = self._crossing_ms(prev_l, lc, 0)
                    self._toe_low = True
                if self._run >= self._min_swing:
                    self._pending = False
                    events = self._finish_step()
            if lc >= _ON:
                if self._first < 0:
                    self._first = self._first_loaded(nh, na, nf)
                self._on_run += 1
                if self._on_run >= self._confirm:
                    if self._run - self._on_run >= self._min_swing:
                        events |= self._contact(nh, na, nf)
                    else:
                        # loaded without a clear swing before it (start of
                        # recording mid-step): follow it, report nothing
                        self._tracked = False
                        self._start_stance()
                    self._stance_sample(nh, na, nf)
            else:
                self._on_run = 0
                self._first = -1
            return events
        # stance
        self._stance_sample(nh, na, nf)
        if lc < _OFF:
            self._state = _SWING
            self._run = 0
            self._on_run = 0
            self._first = -1
            self._pending = self._tracked
            self._toe_ms = self._crossing_ms(prev_l, lc, _OFF)
            self._toe_low = False
            if lc < _ONSET <= prev_l:
                self._toe_ms = self._crossing_ms(prev_l, lc, _ONSET)
                self._toe_low = True
        return 0

    def _first_loaded(self, nh, na, nf):
        # Which region reached contact level first; -1 when several did at once.
        count = (nh >= _ON) + (na >= _ON) + (nf >= _ON)
        if count != 1:
            return -1
        if nh >= _ON:
            return _HEEL
        if na >= _ON:
            return _ARCH
        return _FORE

    @micropython.native
    def _crossing_ms(self, a, b, level):
        # Time (ms clock) at which the composite went from a (previous sample) to
        # b (this sample) through level, interpolated to 1/_SUB sample.
        frac = _SUB
        if a != b:
            frac = (a - level) * _SUB // (a - b)
            if frac < 0:
                frac = 0
            elif frac > _SUB:
                frac = _SUB
        back = (_SUB - frac) * 1000 // (_SUB * self.rate_hz)
        return (self.now_ms - back) & _MS_MASK

    def _onset_ms(self):
        # Walk the history back to the last sample below _ONSET; interpolate.
        h = self._h
        steps = 0
        cur = self._hist[h]
        while steps < _HIST - 1:
            prev = self._hist[(h - 1) & _HIST_MASK]
            if prev < _ONSET:
                frac = _SUB
                if cur != prev:
                    frac = (_ONSET - prev) * _SUB // (cur - prev)
                back = (steps + 1) * _SUB - frac
                back_ms = back * 1000 // (_SUB * self.rate_hz) + _LEAD_MS
                return (self.now_ms - back_ms) & _MS_MASK
            h = (h - 1) & _HIST_MASK
            cur = prev
            steps += 1
        return (self.now_ms - steps * 1000 // self.rate_hz) & _MS_MASK

    def _start_stance(self):
        self._state = _STANCE
        self._pending = False
        self._heel_up = False
        self._heel_off = 0
        for c in range(3):
            self._sum[c] = 0
            self._pk[c] = 0

    def _contact(self, nh, na, nf):
        self._start_stance()
        self._tracked = True
        self._strike = self._onset_ms()
        self._pattern = self._strike_pattern(nh, na, nf)
        self.contact_ms = self._strike
        self.contact_seq = self.steps + 1
        return EV_STRIKE

    def _strike_pattern(self, nh, na, nf):
        lh = self._load[_HEEL] if self._live[_HEEL] else 0
        la = self._load[_ARCH] if self._live[_ARCH] else 0
        lf = self._load[_FORE] if self._live[_FORE] else 0
        total = lh + la + lf
        if total <= 0:
            return PATTERN_UNKNOWN
        cop = (_POS_HEEL * lh + _POS_ARCH * la + _POS_FORE * lf) // total
        if cop < _REAR_BELOW:
            pattern = PATTERN_REAR
        elif cop >= _FORE_FROM:
            pattern = PATTERN_FORE
        else:
            pattern = PATTERN_MID
        if pattern == PATTERN_MID:
            # loading order decides when the position is in between
            if self._first == _HEEL and nf < _ON:
                pattern = PATTERN_REAR
            elif self._first == _FORE and nh < _ON:
                pattern = PATTERN_FORE
        return pattern

    @micropython.native
    def _stance_sample(self, nh, na, nf):
        big = False
        for c in range(3):
            if self._live[c]:
                v = self._load[c]
                if v > self._pk[c]:
                    self._pk[c] = v
                s = self._sum[c] + (v >> 4)
                self._sum[c] = s
                if s > _SUM_LIMIT:
                    big = True
        if big:
            for c in range(3):
                self._sum[c] >>= 1
        if self._live[_HEEL]:
            if nh >= _ON:
                self._heel_up = False
            elif nh < _OFF and not self._heel_up:
                self._heel_up = True
                self._heel_off = self.now_ms

    def _finish_step(self):
        # Toe-off confirmed: fill in the step summary.
        if not self._tracked:
            return 0
        self._tracked = False
        stance = (self._toe_ms - self._strike) & _MS_MASK
        if stance > _MAX_STANCE_MS:
            return 0  # standing, not a step
        self.steps += 1
        self.seq = self.steps
        self.strike_ms = self._strike
        self.toe_off_ms = self._toe_ms
        self.stance_ms = stance
        if self._live[_HEEL] and self._heel_up:
            self.heel_off_ms = self._heel_off
        else:
            self.heel_off_ms = self._toe_ms
        if self._have_last:
            stride = (self._strike - self._last_strike) & _MS_MASK
        else:
            stride = _MAX_STRIDE_MS + 1
        if stride <= _MAX_STRIDE_MS:
            self.stride_ms = stride
            self.swing_ms = (self._strike - self._last_toe) & _MS_MASK
        else:
            self.stride_ms = 0
            self.swing_ms = 0
        self._last_strike = self._strike
        self._last_toe = self._toe_ms
        self._have_last = True
        self.pattern = self._pattern
        pk = self._pk
        self.peak_heel = pk[_HEEL]
        self.peak_arch = pk[_ARCH]
        self.peak_fore = pk[_FORE]
        sh = self._sum[_HEEL]
        sa = self._sum[_ARCH]
        sf = self._sum[_FORE]
        total = sh + sa + sf
        while total > 0x80000:  # keep total * 1000 below 2**29
            sh >>= 1
            sa >>= 1
            sf >>= 1
            total = sh + sa + sf
        if total > 0:
            self.share_heel = sh * 1000 // total
            self.share_arch = sa * 1000 // total
            self.share_fore = 1000 - self.share_heel - self.share_arch
        else:
            self.share_heel = 0
            self.share_arch = 0
            self.share_fore = 0
        return EV_STEP

    def summary(self):
        """The last step summary as a tuple in events-CSV column order (allocates)."""
        return (
            self.seq,
            self.strike_ms,
            self.toe_off_ms,
            self.heel_off_ms,
            self.stance_ms,
            self.swing_ms,
            self.stride_ms,
            self.pattern,
            self.peak_heel,
            self.peak_arch,
            self.peak_fore,
            self.share_heel,
            self.share_arch,
            self.share_fore,
        )
