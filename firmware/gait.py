# Fixed-point gait-event detector for a three-FSR insole.
#
# Hardware-free and integer-only: the same file runs under CPython and MicroPython
# and gives the same events. Feed one sample at a time (heel, arch, forefoot as
# ADC.read_u16() counts); feed() returns a bitmask of the events that sample produced
# and leaves their fields in attributes. feed() allocates nothing, and every value it
# computes stays within +-2**29 (an ESP32 small int).
#
# How it works, per sample:
# 0. Each raw reading is checked for faults (still for _STUCK_MS: dead near 0,
#    saturated near full scale, stuck when held loaded while another channel moves;
#    single-sample jumps; noise) and then averaged over whole mains periods (mains_hz,
#    50 or 60 Hz): one on a clean signal, more (up to _LONG_MS) while the noise left
#    after one period (the residual: change over one period, in which pickup cancels)
#    is large against the span of any channel that walks. Where samples do not span
#    whole periods (rates between multiples of the mains frequency) pickup stays in the
#    residual although the filter removes it, so a channel's noise is the smaller of the
#    residual and what the filter's output measurably leaves, and the filter only takes
#    lengths at least as near whole periods, per tap, as every shorter one; there it
#    starts at its longest and may shorten after _SETTLE_MS. A faulty
#    channel is left out at once and learned afresh when it recovers; the codes are in
#    `faults`. Above 72 Hz (one ADC read per sample) the raw readings' change over two
#    lags, one that cancels hum at the other mains frequency and one that keeps it,
#    also says when the setting is wrong (hum_lags(); `faults` reports it as code 6).
# 1. Each channel keeps a baseline (swing level: follows dips at once, follows drift
#    while the foot is in the air, otherwise creeps up slowly, and slower still
#    within a stance, which must not lift the swing level), a peak envelope
#    (follows rises at once, decays towards the baseline over seconds) and a roughness
#    estimate (mean sample-to-sample change). A channel whose span is below _MIN_SPAN
#    counts (_WEAK_SPAN while another region spans twice _MIN_SPAN or more: a high arch
#    barely loads its FSR), or whose roughness or noise level (running median of
#    |change|) is a large part of its span, is ignored, so a dead, saturated or
#    disconnected FSR does not stop the others. Loads count from a noise margin above
#    the baseline (a few noise levels, or twice the height the reading rides at in the
#    air).
# 2. The composite load is the largest live channel's load as a fraction of its span
#    (0.._FULL): the earliest-loaded region marks contact, the last one toe-off. A
#    channel whose raw sample-to-sample noise rivals its span (a weak region under
#    noise or mains pickup) has its load judged against _FLOOR_K noise levels
#    instead, at most the strongest span: pickup on a weak region is not weight.
# 3. Contact needs the composite above _ON for _CONFIRM_MS after at least
#    _MIN_SWING_MS below _OFF; its onset is back-dated to where the composite history
#    first crossed _ONSET in the rise that led to it (a shelf on the way up does not
#    delay it), less _LEAD_MS. An unloaded spell is part of the same stance, not a
#    swing, when it is shorter than _MIN_SWING_MS (a sagging FSR), when the
#    forefoot has not loaded yet in this stance (the heel came off before the
#    forefoot went down) or, once the walker's rhythm is known, when it is short
#    for their swings and comes early in the stride: a mid-stance dip is never a
#    second step. One sample below _OFF is not enough either: the spell's mean
#    composite must also come down to near what the composite reads in the air
#    (nearer where raw noise or pickup rivals the span); a weak region, whose raw
#    noise rivals a span under half the strongest, is left out of that mean and of
#    the swing level, since pickup riding on it in the air is no load. A contact
#    that collapses at once and stays unloaded as long as a swing before the foot
#    loads again was a spike, when it bore little of the stance's load: the step
#    summary dates the strike to the contact after it and says so (strike_corrected).
# 4. Event times are true times on the device clock. Up to 72 Hz a sample is the mean
#    of four reads a quarter of a mains period apart, taken from its tick on
#    (reads_hz(), firmware/mains.py): it stands for 3/8 of that period after its tick
#    (7.5 ms at 50 Hz, 6.25 ms at 60 Hz), which every back-dated time adds back.
#
# The per-sample work is feed(), one viper method over a preallocated int32 state
# array; the rare transitions (contact, toe-off, step summary) run as plain methods.
try:
    import micropython
    from micropython import const
except ImportError:  # CPython: the same code, interpreted

    class micropython:  # type: ignore[no-redef]  # noqa: N801  (stands in for the module)
        @staticmethod
        def viper(f):
            return f

        @staticmethod
        def native(f):
            return f

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x

    def ptr32(buf):  # viper's pointer casts; an array indexes the same way
        return buf

    def ptr16(buf):
        return buf


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

_F_OK = const(0)
_F_DEAD = const(1)
_F_SAT = const(2)
_F_STUCK = const(3)
_F_NOISY = const(4)
_F_JUMPS = const(5)
_FULL = const(1024)  # composite load scale: 1024 = a channel's whole span
_ON = const(256)  # contact threshold (25 % of span)
_OFF = const(128)  # unloaded threshold (12.5 %): hysteresis against chatter
_ONSET = const(200)  # level whose crossing dates contact and toe-off
_LEAD_MS = const(10)  # the foot touched this long before the _ONSET crossing
_MIN_SPAN = const(1200)  # counts: smaller swings are noise, not footsteps
_WEAK_SPAN = const(600)  # ... but a region this big counts while another one walks
_MIN_SWING_MS = const(110)  # shorter unloaded spells are mid-stance dips (cross-validated)
# Once the walker's rhythm is known, an unloaded spell shorter than 5/8 of the usual
# swing that ends before 3/5 of the usual stride is a dip as well.
_SWING_NUM = const(5)
_SWING_SHIFT = const(6)  # 5/8 of (swing x 8) = x 5 >> 6
_DYN_MAX_MS = const(300)  # ... but never asks a swing to last longer than this
_WALK_STRIDE_MS = const(2500)  # longer strides (pauses, turns) teach no rhythm
_STRIDE_NUM = const(3)
_STRIDE_DEN = const(40)  # since < 3/5 of (stride x 8) <=> since x 40 < stride x 3
_HEEL_GAP_MS = const(400)  # longest heel-off-to-forefoot gap taken as one stance
# A foot in the air reads its swing level: an unloaded spell whose mean composite
# stays half the unload line or more above that level never got there (a foot that
# turns or shuffles on the ground) and is part of the stance; where noise or pickup
# rivals the span (it crosses the line in a shallow mid-stance dip), 5/16 of it.
_AIR_MEAN = const(64)
_SPELL_MEAN = const(40)
_CONFIRM_MS = const(20)  # contact must hold this long before it is reported
# A confirmed contact whose load is gone again within _SPIKE_MS of its strike, for at
# least _MIN_SWING_MS, and which bore under 1/_SPIKE_SHARE of the stance's peak load was
# a spike: the step's strike moves to the contact after it (flagged in the summary; the
# strike notification has gone out already).
_SPIKE_MS = const(60)
_SPIKE_SHARE = const(2)
_MAX_STANCE_MS = const(4000)  # longer contacts are standing, not steps
_MAX_STRIDE_MS = const(4000)  # longer gaps restart stride/swing timing
_BASE_UP_MS = const(400)  # baseline time constant while unloaded
_BASE_CREEP_MS = const(8000)  # time for the baseline to creep up a whole span
# ... four times slower within a stance (up to _MAX_STANCE_MS): a baseline that crept
# up under a long stance would make its mid-stance dip look like a swing
_STANCE_CREEP_SHIFT = const(2)
_PEAK_DECAY_MS = const(4000)  # peak envelope decay time constant
_ROUGH_MS = const(1000)  # roughness averaging time constant
_HIST = const(64)  # composite history for back-dating (power of two)
_HIST_MASK = const(63)
_SUB = const(16)  # sub-sample resolution of back-dated times
_SUM_LIMIT = const(0x8000000)  # halve stance sums before they pass 2**27
_SAT = const(0x10000)  # saturating counters stop here
_MS_MASK = const(0x1FFFFFFF)  # the ms clock wraps at 2**29 (6.2 days)
_HALF_MS = const(0x10000000)  # ms clock differences below this run forward
_COUNT_MAX = const(0x1FFFFFFF)  # step counts saturate here, as the device's totals do
_SWING = const(0)
_STANCE = const(1)
_RING = const(20)  # pre-filter taps per channel at most (20 ms at 1000 Hz)
_OUTS = const(60)  # the rings of filtered readings follow the three raw ones
_LONG_MS = const(80)  # a noisy signal is averaged over up to this long
_RESID_SPAN = const(12)  # a live span is at least this many filtered residual noise levels
_FLOOR_K = const(16)  # a load counts against at least this many raw noise levels
_WALK_SPAN = const(4800)  # counts: a span this big is footsteps, not noise (sets the filter)
_CLEAR = const(16)  # wanted: residual noise under 1/_CLEAR of the strongest span
_NOISE_K = const(3)  # loads count from this many noise levels above the baseline
_NOISE_SPAN = const(12)  # a live channel's span is at least this many noise levels
_BAND_K = const(2)  # ... and loads count from twice the swing band (ripple, pickup)
_STILL = const(64)  # counts: a reading that moves less than this is still
_STUCK_MS = const(1000)  # a reading still this long is dead, saturated or stuck
_LOW = const(1024)  # still at or below this: dead (open divider, shorted to ground)
_HIGH = const(64511)  # still at or above this: saturated (shorted to the supply)
_SMALL_MS = const(2000)  # no span this long while another channel walks: dead
_SPIKE = const(16384)  # counts: a sample this far from both neighbours is a jump
_JUMP_HIT = const(256)  # jump score per jump; it decays over about two seconds
_JUMP_ON = const(384)  # two jumps close together: the channel jumps
_JUMP_MS = const(2000)
_SETTLE_MS = const(2000)  # the pre-filter starts long and shortens only after this
# Rates up to 6/5 of a mains frequency take each sample as four reads' mean (reads_hz())
_READS_UP_TO_PER_5 = const(6)
# such a sample stands for 3/8 of a read period after its tick: this over the read
# frequency, in 1/_SUB ms (375 ms x _SUB)
_READS_LATE = const(6000)
_MAINS_EU = const(50)  # the two mains frequencies, Hz (config.py)
_MAINS_US = const(60)
# Hum at the other mains frequency (a wrong setting) is checked here above the rates
# whose samples are four reads' means (mains.py checks those reads)
_HUM_NEAR = const(20)  # a lag cancels hum within 1/_HUM_NEAR of a period (2 sin(pi/20) = 0.31)
_HUM_KEEP = const(6)  # ... and keeps it when 1/_HUM_KEEP of a period or more off (2 sin(pi/6) = 1)
_HUM_K = const(4)  # wrong: the residual it keeps is this many times the one it cancels
_HUM_SPAN = const(8)  # ... and at least 1/_HUM_SPAN of the channel's span and of _MIN_SPAN
# (a quantised reading that steps every two or three samples on a small span, 100-150
# counts, is no hum worth a report)

FAULT_OK = const(0)
FAULT_DEAD = const(1)
FAULT_SATURATED = const(2)
FAULT_STUCK = const(3)
FAULT_NOISY = const(4)
FAULT_JUMPS = const(5)
FAULT_WRONG_MAINS = const(6)  # hum at the other mains frequency (also firmware/mains.py's)
FAULT_NAMES = ("ok", "dead", "saturated", "stuck", "noisy", "jumps", "wrong-mains")

# Sensor positions along the foot in per-mille of foot length (heel, arch,
# forefoot) for the weighted contact position; strike-index bands after
# Cavanagh & Lafortune 1980: rear < 340, fore >= 680.
_POS_HEEL = const(120)
_POS_ARCH = const(480)
_POS_FORE = const(730)
_REAR_BELOW = const(340)
_FORE_FROM = const(680)

# Layout of the state array: three per-channel blocks, then scalars. Every entry
# stays non-negative: viper loads ptr32 words unsigned on 64-bit ports and signed
# on 32-bit ones, and both agree only for 0..2**31-1.
_BASE = const(0)  # baseline, 1/16 count
_PEAK = const(3)  # peak envelope, 1/16 count
_STILLS = const(6)  # channels still for _STUCK_MS, as of the previous sample
_LIVES = const(7)  # channels live, as of the previous sample
_ROOT = const(8)  # sqrt(filter taps), 1/16
_PREV = const(9)  # previous raw value
_NORM = const(12)  # load 0.._FULL (0 when not live)
_LOAD = const(15)  # load above baseline, counts
_LIVE = const(18)  # 1 when the channel is trusted
_SUM = const(21)  # stance load sums, counts/16
_PK = const(24)  # stance peak loads, counts
_NOW = const(27)  # device clock, ms since the first sample
_FRAC = const(28)  # clock remainder, 1/rate ms
_SEEN = const(29)  # samples seen (saturating)
_HIDX = const(30)  # history write index
_STATE = const(31)
_RUN = const(32)  # samples since the swing began (saturating)
_ONRUN = const(33)  # consecutive samples above _ON in swing
_PENDING = const(34)  # tentative toe-off awaiting _MIN_SWING
_TRACKED = const(35)  # this stance began with a confirmed contact
_TOE = const(36)  # tentative toe-off time, ms
_TOELOW = const(37)  # toe-off already dated by an _ONSET crossing
_HEELUP = const(38)
_HEELOFF = const(39)
_FIRST = const(40)  # first channel above _ON in this contact, or _NOBODY
_PREVL = const(41)  # previous composite
_MSQ = const(42)  # whole ms per sample
_MSR = const(43)  # ms remainder per sample, 1/rate ms
_RATE = const(44)
_MINSW = const(45)  # _MIN_SWING_MS in samples
_CONF = const(46)  # _CONFIRM_MS in samples
_SH_UP = const(47)  # IIR shifts
_SH_CREEP = const(48)
_SH_DECAY = const(49)
_SH_ROUGH = const(50)
_SINCE = const(51)  # samples since the last contact (saturating)
_SWEMA = const(52)  # typical swing, samples x 8 (0 = not known yet)
_STEMA = const(53)  # typical stride, samples x 8 (0 = not known yet)
_DYN = const(54)  # swing length that confirms a toe-off, samples
_ZSET = const(55)  # baselines were set by zero(), not by the first sample
_FOREUP = const(56)  # the forefoot carried load in this stance
_GAPMAX = const(57)  # _HEEL_GAP_MS in samples
_RESID = const(58)  # noise mains cannot explain: median |raw(t) - raw(t - period)|, 1/16
_RSUM = const(61)  # pre-filter sums, counts
_RAW = const(64)  # previous raw reading
_RAW2 = const(67)  # the one before
_ANCHOR = const(70)  # where the current still spell began, counts
_QUIET = const(73)  # samples the reading has been still (saturating)
_JUMP = const(76)  # jump score
_SMALL = const(79)  # samples without a span while another channel is live
_CODE = const(82)  # fault code
_RIDX = const(85)  # pre-filter ring position
_FLEN = const(86)  # pre-filter taps
_DELAY = const(87)  # pre-filter delay, 1/_SUB sample
_STUCKN = const(88)  # _STUCK_MS in samples
_SMALLN = const(89)  # _SMALL_MS in samples
_SH_NZ = const(90)
_SH_JUMP = const(91)
_BAND = const(92)  # swing band: mean height above the baseline in the air, 1/16 count
_BTAPS = const(95)  # base taps: one mains period
_MAXLEN = const(96)  # longest filter, taps
_SPMAX = const(97)  # largest live span, counts (previous sample)
_RAWNZ = const(98)  # raw noise: running median of |raw change|, 1/16 count
_SMS = const(101)  # strike of the current stance, ms
_EARLY = const(102)  # the tentative toe-off came within _SPIKE_MS of the strike
_SPK = const(103)  # largest load of the collapsed contact, counts (0: none in this stance)
_SPIKE_N = const(104)  # samples from the collapsed contact to the one after it
_ALT = const(105)  # strike of the contact after it, ms
_ALTPAT = const(106)  # ... and its strike pattern
_CORR = const(107)  # the last step summary's strike was moved there
_SPELL = const(108)  # composite summed over the tentative swing so far
_AIRL = const(109)  # swing level of the composite: its mean in the air, 1/16
_ROUGH = const(110)  # the strongest live channel's raw noise rivals its span
_FRES = const(111)  # noise the filter leaves: median |filtered(t) - filtered(t - taps)|, 1/16
_STANCEN = const(114)  # _MAX_STANCE_MS in samples
_GOOD = const(115)  # filter lengths that span mains periods best: bit n - 1 for n taps
_SETTLEN = const(116)  # _SETTLE_MS in samples
_HUMN = const(117)  # lag (samples) that cancels hum at the other mains frequency (0: no check)
_HUMM = const(118)  # ... and one that cancels the setting's at least as well and keeps it
_HRN = const(119)  # median |raw(t) - raw(t - _HUMN)|, 1/16 count
_HRM = const(122)  # ... - _HUMM)| (_HRN + 3: feed() indexes both from _HRN)
_LATE = const(125)  # a sample stands for this long after its tick, 1/_SUB ms (reads_hz())
_NSTATE = const(126)

_NOBODY = const(3)  # no single channel loaded first

# what the per-sample core asks the slow path to do
_DO_CONTACT = const(1)
_DO_UNTRACKED = const(2)
_DO_FINISH = const(4)
_DO_REDATE = const(8)


def shift_for(samples):
    # Smallest shift s with 2**s >= samples: an IIR step of 1/2**s has a time
    # constant of about `samples` samples.
    s = 0
    while (1 << s) < samples:
        s += 1
    return s


def reads_hz(rate, mains):
    """The mains frequency whose quarter periods space a sample's four reads at this
    rate and setting (firmware/mains.py), or 0 for one read per sample: the setting's
    own up to 6/5 of it (60 Hz where mains is 50 Hz, 72 Hz where it is 60 Hz), at which
    the pre-filter could not span whole periods within its longest length; and 60 Hz
    from there to 72 Hz whatever the setting, where a 50 Hz period does not fit in a
    sample and 60 Hz hum (an insole left at 50 Hz) would alias into the gait's band."""
    if rate * 5 <= mains * _READS_UP_TO_PER_5:
        return mains
    if rate * 5 <= _MAINS_US * _READS_UP_TO_PER_5:
        return _MAINS_US
    return 0


def _crossing_ms(s, a, b, level):
    # Clock time at which the composite went from a (previous sample) to b (this
    # sample) through level, interpolated to 1/_SUB sample. Bytecode, as is
    # _first_loaded(): called at transitions only, it keeps native code in budget.
    frac = _SUB
    if a != b:
        frac = (a - level) * _SUB // (a - b)
        if frac < 0:
            frac = 0
        elif frac > _SUB:
            frac = _SUB
    # back from the tick: the pre-filter's delay added, the averaged reads' lateness
    # taken off (the floor of a floor over _SUB is the floor of the whole: exact, and
    # the one division it was when nothing is late); negative for a time after the tick
    back = ((_SUB - frac + s[_DELAY]) * 1000 // s[_RATE] - s[_LATE]) // _SUB
    return (s[_NOW] - back) & _MS_MASK


def _first_loaded(s):
    # Which region reached contact level first; _NOBODY when several did at once.
    count = 0
    first = _NOBODY
    c = 0
    while c < 3:
        if s[_NORM + c] >= _ON:
            count += 1
            first = c
        c += 1
    if count != 1:
        return _NOBODY
    return first


def _off_period(n, hz, rate):
    # how far n samples are from a whole number of periods at hz, 1/rate period
    r = n * hz % rate
    return min(r, rate - r)


def hum_lags(rate, mains):
    """The wrong-mains check's lags, samples (0, 0: none at this rate). Hum at the
    other mains frequency cancels in raw(t) - raw(t - n); m keeps it (a sixth of a
    period off or more) and cancels the setting's hum at least as well as n does, so
    that hum at the setting never makes the change over m the larger, and noise or
    gait moves both about alike. A channel whose change over m is _HUM_K times that
    over n, and large against its span, carries hum the pre-filter does not expect.
    None at 130 Hz, for example: a lag that cancels 60 Hz there (13) cancels 50 too."""
    other = _MAINS_EU + _MAINS_US - mains
    n = 0
    for k in range(1, _RING + 1):
        d = _off_period(k, other, rate)
        if d * _HUM_NEAR <= rate and (n == 0 or d < _off_period(n, other, rate)):
            n = k
    if n == 0:
        return (0, 0)
    m = 0
    for k in range(1, _RING + 1):
        d = _off_period(k, other, rate)
        if d * _HUM_KEEP < rate or _off_period(k, mains, rate) > _off_period(n, mains, rate):
            continue
        best = _off_period(m, other, rate) if m else -1
        if d > best or (d == best and abs(k - n) < abs(m - n)):
            m = k
    if m == 0:
        return (0, 0)
    return (n, m)


def _root16(n):
    # 16 x the square root of n, rounded down (n small)
    r = 0
    while (r + 1) * (r + 1) <= n * 256:
        r += 1
    return r


def _toward(avg, x):
    # asymmetric average: halfway down at once, an eighth of the way up
    if x < avg:
        return avg + ((x - avg) >> 1)
    return avg + ((x - avg) >> 3)


class GaitDetector:
    def __init__(self, rate_hz=100, mains_hz=50):
        if not 50 <= rate_hz <= 1000:
            raise ValueError("rate_hz must be 50..1000")
        if type(mains_hz) is not int or (mains_hz != _MAINS_EU and mains_hz != _MAINS_US):
            raise ValueError("mains_hz must be 50 or 60")
        self.rate_hz = rate_hz
        self.mains_hz = mains_hz
        self._st = array("i", [0] * _NSTATE)
        # composite history and reading rings hold 0..65535: half-words
        self._hist = array("H", [0] * _HIST)
        self._ring = array("H", [0] * (6 * _RING))
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
        self._strike = 0
        self._pattern = PATTERN_UNKNOWN
        self._last_strike = 0
        self._last_toe = 0
        self._have_last = False
        self.reset()

    @property
    def faults(self):
        """Fault code per channel, 4 bits each: heel bits 0-3, arch 4-7, forefoot 8-11
        (FAULT_OK, FAULT_DEAD, FAULT_SATURATED, FAULT_STUCK, FAULT_NOISY, FAULT_JUMPS;
        above 72 Hz FAULT_WRONG_MAINS in place of ok or noisy: see hum_lags())."""
        st = self._st
        word = 0
        c = 0
        while c < 3:
            code = st[_CODE + c]
            if st[_HUMN] and (code == _F_OK or code == _F_NOISY):
                # what the other frequency's hum leaves, against what cancels it
                kept = st[_HRM + c]
                if kept > _HUM_K * st[_HRN + c] and kept * _HUM_SPAN > _MIN_SPAN << 4 and \
                        kept * _HUM_SPAN > st[_PEAK + c] - st[_BASE + c]:
                    code = FAULT_WRONG_MAINS
            word |= code << (4 * c)
            c += 1
        return word

    @property
    def strike_corrected(self):
        """The last step summary's strike is a later contact than its strike event
        reported (that contact collapsed at once: a spike, not a footfall)."""
        return self._st[_CORR] != 0

    @property
    def now_ms(self):
        """Device clock: ms since the first sample (wraps at 2**29)."""
        return self._st[_NOW]

    def reset(self):
        """Forget all state: the next sample is time 0 and the new baseline."""
        st = self._st
        for i in range(_NSTATE):
            st[i] = 0
        st[_FIRST] = _NOBODY
        st[_STATE] = _SWING
        rate = self.rate_hz
        st[_RATE] = rate
        st[_MSQ] = 1000 // rate
        st[_MSR] = 1000 % rate
        st[_MINSW] = max(2, _MIN_SWING_MS * rate // 1000)
        st[_DYN] = st[_MINSW]
        st[_GAPMAX] = _HEEL_GAP_MS * rate // 1000
        st[_CONF] = max(1, _CONFIRM_MS * rate // 1000)
        st[_SH_UP] = shift_for(_BASE_UP_MS * rate // 1000)
        st[_SH_CREEP] = shift_for(_BASE_CREEP_MS * rate // 1000)
        st[_SH_DECAY] = shift_for(_PEAK_DECAY_MS * rate // 1000)
        st[_SH_ROUGH] = shift_for(_ROUGH_MS * rate // 1000)
        st[_SH_NZ] = shift_for(_ROUGH_MS * rate // 4000)
        st[_SH_JUMP] = shift_for(_JUMP_MS * rate // 1000)
        # the base filter: one mains period, rounded down to whole samples
        mains = self.mains_hz
        taps = max(1, rate // mains)
        st[_BTAPS] = taps
        # A filter of n taps spans n x mains / rate mains periods. Keep the lengths at
        # least as near whole periods, per tap, as every shorter one: the multiples of
        # one period at multiples of the mains frequency; at 120 Hz with 50 Hz mains
        # 2-5 and 7 taps, so that pickup, which asks for the longest, gets 7 (2.92
        # periods) rather than 8 (3.35).
        good = 0
        best_d = 1
        best_n = 0
        for n in range(1, _RING + 1):
            d = n * mains % rate
            d = min(d, rate - d)
            if d == 0 or d * best_n <= best_d * n:
                good |= 1 << (n - 1)
                best_d = d
                best_n = n
        st[_GOOD] = good
        longest = min(_RING, max(taps, _LONG_MS * rate // 1000))
        while not (good >> (longest - 1)) & 1:
            longest -= 1
        st[_MAXLEN] = longest
        # Where one period of whole samples is no whole number of mains periods (75
        # or 80 Hz with 50 Hz mains: one tap), pickup passes the base filter, and
        # until the noise estimates have settled (they rise from 0 over seconds) it
        # would be learnt into the baselines and peaks (a span it widened takes
        # seconds to fade): start with the longest filter there, and shorten it only
        # after _SETTLE_MS.
        first = longest if taps * mains % rate else taps
        st[_FLEN] = first
        st[_DELAY] = (first - 1) * _SUB // 2
        st[_ROOT] = _root16(first)
        st[_STUCKN] = _STUCK_MS * rate // 1000
        st[_SMALLN] = _SMALL_MS * rate // 1000
        st[_STANCEN] = _MAX_STANCE_MS * rate // 1000
        st[_SETTLEN] = _SETTLE_MS * rate // 1000
        read = reads_hz(rate, mains)
        st[_LATE] = _READS_LATE // read if read else 0
        lags = (0, 0) if read else hum_lags(rate, mains)
        st[_HUMN] = lags[0]
        st[_HUMM] = lags[1]
        for i in range(6 * _RING):
            self._ring[i] = 0
        for i in range(_HIST):
            self._hist[i] = 0
        self._have_last = False

    def zero(self):
        """Take the current readings as the unloaded level (insole off the foot)."""
        st = self._st
        self.set_zero(st[_PREV + _HEEL], st[_PREV + _ARCH], st[_PREV + _FORE])

    def set_zero(self, heel, arch, fore):
        """Use these counts as the unloaded level, e.g. a zero saved before a reboot."""
        st = self._st
        for c, level in ((_HEEL, heel), (_ARCH, arch), (_FORE, fore)):
            st[_BASE + c] = min(max(level, 0), 0xFFFF) << 4
            st[_PEAK + c] = st[_BASE + c]
        st[_ZSET] = 1
        st[_STATE] = _SWING
        st[_TRACKED] = 0
        st[_PENDING] = 0

    def zero_levels(self):
        """The unloaded level now in use, counts (heel, arch, forefoot); allocates."""
        st = self._st
        return (st[_BASE] >> 4, st[_BASE + 1] >> 4, st[_BASE + 2] >> 4)

    @micropython.viper
    def feed(self, heel: int, arch: int, fore: int) -> int:
        """Take one sample; return 0 or a bitmask of EV_STRIKE / EV_STEP."""
        # Channel tracking, composite and state machine run here, in viper, with
        # no allocation; the rare transitions go to _slow().
        st = self._st
        s = ptr32(st)
        hs = ptr16(self._hist)
        fresh = s[_SEEN] == 0
        if not fresh:
            frac = s[_FRAC] + s[_MSR]
            ms = s[_NOW] + s[_MSQ]
            if frac >= s[_RATE]:
                frac -= s[_RATE]
                ms += 1
            s[_FRAC] = frac
            s[_NOW] = ms & _MS_MASK
        if s[_SEEN] < _SAT:
            s[_SEEN] = s[_SEEN] + 1
        if s[_SINCE] < _SAT:
            s[_SINCE] = s[_SINCE] + 1
        swing = s[_STATE] == _SWING
        rg = ptr16(self._ring)
        taps = s[_FLEN]
        bt = s[_BTAPS]
        ri = s[_RIDX]
        stuck_n = s[_STUCKN]
        # where the samples one mains period and one filter length ago sit in the rings
        old_b = ri - bt
        if old_b < 0:
            old_b += _RING
        old_l = ri - taps
        if old_l < 0:
            old_l += _RING
        hum = s[_HUMN] != 0
        spmax = 0
        spprev = s[_SPMAX]
        # a lightly loaded region (a high arch) is worth reading while the foot walks
        minsp = _MIN_SPAN
        if spprev >= 2 * _MIN_SPAN:
            minsp = _WEAK_SPAN
        sh_nz = s[_SH_NZ]
        sh_up = s[_SH_UP]
        sh_creep = s[_SH_CREEP]
        if not swing and s[_SINCE] < s[_STANCEN]:
            sh_creep += _STANCE_CREEP_SHIFT
        sh_decay = s[_SH_DECAY]
        root = s[_ROOT]
        in_air = swing and s[_RUN] >= s[_MINSW]
        # channels still at the previous sample, and channels live: a channel is only
        # called stuck or dead while another one still moves and sees steps
        stills = s[_STILLS]
        lives = s[_LIVES]
        now_stills = 0
        now_lives = 0
        lc = 0
        # the composite without weak regions (raw noise rivals a span under half the
        # strongest): what the spell-mean rule and the swing level read, because
        # pickup riding on a weak region in the air is no load
        lq = 0
        firm = 0
        big = 0
        c = 0
        while c < 3:
            raw = heel
            if c == 1:
                raw = arch
            elif c == 2:
                raw = fore
            ring0 = c * _RING
            if fresh:
                k = 0
                while k < _RING:
                    rg[ring0 + k] = raw
                    rg[ring0 + _OUTS + k] = raw
                    k += 1
                s[_RSUM + c] = raw * taps
                s[_RAW + c] = raw
                s[_RAW2 + c] = raw
                s[_ANCHOR + c] = raw
            # fault evidence from the raw reading: stillness and single-sample jumps
            q = s[_QUIET + c]
            others = stills
            if q >= stuck_n:
                others -= 1
            dq = raw - s[_ANCHOR + c]
            if dq >= 0 - _STILL and dq <= _STILL:
                if q < _SAT:
                    q += 1
            else:
                s[_ANCHOR + c] = raw
                q = 0
            s[_QUIET + c] = q
            if q >= stuck_n:
                now_stills += 1
            p1 = s[_RAW + c]
            up = p1 - s[_RAW2 + c]
            back = p1 - raw
            j = s[_JUMP + c]
            j -= j >> s[_SH_JUMP]
            if (up > _SPIKE and back > _SPIKE) or (up < -_SPIKE and back < -_SPIKE):
                j += _JUMP_HIT
                if j > _SAT:
                    j = _SAT
            s[_JUMP + c] = j
            s[_RAW2 + c] = p1
            s[_RAW + c] = raw
            # raw noise: a running median of |change| before any filtering
            if back < 0:
                back = 0 - back
            back = back << 4
            rn = s[_RAWNZ + c]
            if back > rn:
                rn += (rn >> sh_nz) + 16
            elif back < rn:
                rn -= (rn >> sh_nz) + 16
                if rn < 0:
                    rn = 0
            s[_RAWNZ + c] = rn
            # pre-filter: mean over whole mains periods (nulls mains and its harmonics),
            # one period unless the residual noise calls for more
            t = s[_RSUM + c] + raw - rg[ring0 + old_l]
            s[_RSUM + c] = t
            # residual noise: change over one mains period (pickup cancels), a running
            # median; one period of averaging leaves about residual / sqrt(taps)
            e = raw - rg[ring0 + old_b]
            # the wrong-mains check's running medians of |raw(t) - raw(t - lag)| for
            # its two lags (hum_lags()), read before the ring's oldest slot (a lag may
            # be the ring's whole length) takes this sample
            k = 0
            while hum and k < 2:
                old = ri - s[_HUMN + k]
                if old < 0:
                    old += _RING
                d = raw - rg[ring0 + old]
                if d < 0:
                    d = 0 - d
                d = d << 4
                i = _HRN + 3 * k + c
                h = s[i]
                if d > h:
                    h += (h >> sh_nz) + 16
                elif d < h:
                    h -= (h >> sh_nz) + 16
                    if h < 0:
                        h = 0
                s[i] = h
                k += 1
            rg[ring0 + ri] = raw
            if e < 0:
                e = 0 - e
            e16 = e << 4
            rz = s[_RESID + c]
            if e16 > rz:
                rz += (rz >> sh_nz) + 16
            elif e16 < rz:
                rz -= (rz >> sh_nz) + 16
                if rz < 0:
                    rz = 0
            s[_RESID + c] = rz
            x = t // taps
            # the noise the filter leaves, measured: change of its output over one
            # filter length (independent windows), a running median
            e = x - rg[ring0 + _OUTS + old_l]
            rg[ring0 + _OUTS + ri] = x
            if e < 0:
                e = 0 - e
            e16 = e << 4
            fz = s[_FRES + c]
            if e16 > fz:
                fz += (fz >> sh_nz) + 16
            elif e16 < fz:
                fz -= (fz >> sh_nz) + 16
                if fz < 0:
                    fz = 0
            s[_FRES + c] = fz
            # Noise is at most the smaller of two estimates: the residual (it counts
            # pickup the filter removes where samples do not span whole mains periods)
            # and the filter's measured leftover x sqrt(taps) (it counts the gait's own
            # slope, which the residual over one period barely sees).
            fz = fz * root >> 4
            if fz < rz:
                rz = fz
            x16 = x << 4
            base = s[_BASE + c]
            peak = s[_PEAK + c]
            if fresh:
                if not s[_ZSET]:
                    base = x16
                peak = x16 if x16 > base else base
                s[_PREV + c] = x
            if x16 < base:
                base += (x16 - base) >> 1
            elif swing and x16 - base < ((peak - base) >> 3):
                # in the air, near the baseline: follow drift of the swing level
                base += (x16 - base) >> sh_up
            else:
                # elsewhere creep up by a fixed part of the span, so a baseline that
                # started low (or a stuck stance) recovers in seconds
                rise = (peak - base) >> sh_creep
                if rise > x16 - base:
                    rise = x16 - base
                base += rise
            if x16 > peak:
                peak = x16
            else:
                peak -= (peak - base) >> sh_decay
            s[_PREV + c] = x
            # noise level of the filtered reading: the residual's share per tap (a
            # running median of |change| over the filter, which steady gait barely moves)
            nz = rz // taps
            span16 = peak - base
            band = s[_BAND + c]
            if in_air and x16 - base < (span16 >> 2):
                # well into a swing: how high the unloaded reading rides above the baseline
                band += ((x16 - base) - band) >> s[_SH_ROUGH]
                if band < 0:
                    band = 0
                s[_BAND + c] = band
            span = span16 >> 4
            load = (x16 - base) >> 4
            if load < 0:
                load = 0
            s[_LOAD + c] = load
            # what the channel is worth: a fault code, 0 when it can be trusted
            code = _F_OK
            if q >= stuck_n:
                if raw <= _LOW:
                    code = _F_DEAD
                elif raw >= _HIGH:
                    code = _F_SAT
                elif others < 2 and x16 - base > (span16 >> 3):
                    # held loaded while another channel moves: it would hold the stance
                    code = _F_STUCK
            if code == _F_OK and span >= minsp:
                # the noise the filter leaves (residual / sqrt(taps)) against the span
                if nz * _NOISE_SPAN > span16 or (rz >> 4) * (_RESID_SPAN * 16) > span * root:
                    code = _F_NOISY
                elif j >= _JUMP_ON:
                    code = _F_JUMPS
            small = s[_SMALL + c]
            if span < minsp and lives - s[_LIVE + c] > 0:
                if small < _SAT:
                    small += 1
            else:
                small = 0
            s[_SMALL + c] = small
            if code == _F_OK and small >= s[_SMALLN]:
                code = _F_DEAD
            was = s[_CODE + c]
            if code != was:
                if was == _F_STUCK or was == _F_SAT:
                    # back from a stuck or shorted reading: learn the channel afresh
                    base = x16
                    peak = x16
                s[_CODE + c] = code
            s[_BASE + c] = base
            s[_PEAK + c] = peak
            span = (peak - base) >> 4
            live = code == _F_OK and span >= minsp
            if live:
                now_lives += 1
                if span > spmax:
                    spmax = span
            if not swing and live:
                # stance: per-region peak and load sum (halved together near 2**27)
                if load > s[_PK + c]:
                    s[_PK + c] = load
                t = s[_SUM + c] + (load >> 4)
                s[_SUM + c] = t
                if t > _SUM_LIMIT:
                    big = 1
            if not live:
                s[_LIVE + c] = 0
                s[_NORM + c] = 0
            else:
                s[_LIVE + c] = 1
                # loads count from a few noise levels above the baseline
                margin = nz * _NOISE_K
                if band * _BAND_K > margin:
                    margin = band * _BAND_K
                if margin > (span16 >> 1):
                    margin = span16 >> 1
                eff = (x16 - base - margin) >> 4
                # a load counts against the channel's span, or, for a channel whose
                # raw noise rivals its span, against that noise (as far as the
                # strongest span): pickup and noise on a weak region are not weight
                den = (peak - base - margin) >> 4
                fl = (rn >> 4) * _FLOOR_K
                if fl > spprev:
                    fl = spprev
                fl -= margin >> 4
                weak = 0
                if den < fl:
                    den = fl
                    weak = 1
                n = 0
                if eff > 0:
                    n = eff * _FULL // den
                if n > _FULL:
                    n = _FULL
                s[_NORM + c] = n
                if n > lc:
                    lc = n
                if not weak or span * 2 >= spprev:
                    firm += 1
                    if n > lq:
                        lq = n
            c += 1
        if firm == 0:
            lq = lc
        ri += 1
        if ri >= _RING:
            ri = 0
        s[_RIDX] = ri
        s[_SPMAX] = spmax
        s[_STILLS] = now_stills
        s[_LIVES] = now_lives
        walk = 0
        if ri == 0:
            # once per turn of the ring: does raw noise or pickup rival the strongest
            # live channel's span, and what does the composite read in the air
            rough = 0
            best = 0
            r = 0
            rq = 0
            nq = 0
            c = 0
            while c < 3:
                sp = (s[_PEAK + c] - s[_BASE + c]) >> 4
                if sp >= _WALK_SPAN:
                    # residual noise against the span, x _CLEAR x 64, of the live
                    # channels that walk; when no live one walks, of those dropped as
                    # noisy if two or more walk (one alone may be a broken sensor),
                    # or a filter too short for the pickup would drop every channel
                    # and never lengthen
                    rc = (s[_RESID + c] >> 4) * _CLEAR * 64 // sp
                    if s[_LIVE + c]:
                        walk = 1
                        if rc > r:
                            r = rc
                    elif s[_CODE + c] == _F_NOISY:
                        nq += 1
                        if rc > rq:
                            rq = rc
                if s[_LIVE + c] and sp > best:
                    best = sp
                    rough = 0
                    if (s[_RAWNZ + c] >> 4) * _FLOOR_K >= sp:
                        rough = 1
                c += 1
            s[_ROUGH] = rough
            if not walk and nq >= 2:
                walk = 1
                r = rq
            if in_air:
                sh = s[_SH_ROUGH] - 4  # a turn is about 16 samples: about a second
                if sh < 1:
                    sh = 1
                air = s[_AIRL]
                s[_AIRL] = air + (((lq << 4) - air) >> sh)
        if ri == 0 and walk:
            # once per turn of the ring, the filter length: the shortest good one
            # (near whole mains periods) that leaves the noise in every live channel
            # that walks under 1/_CLEAR of its span (noise falls as sqrt(taps));
            # lengthen at once, shorten only well below the need (hysteresis)
            if r > 512:
                r = 512
            need = r * r // 4096 + 1
            if need < bt:
                need = bt
            good = s[_GOOD]
            longest = s[_MAXLEN]
            while need < longest and not (good >> (need - 1)) & 1:
                need += 1
            if need > longest:
                need = longest
            if need > taps or (need + bt < taps and s[_SEEN] >= s[_SETTLEN]):
                self._set_taps(need)
        prev_l = s[_PREVL]
        s[_PREVL] = lc
        h = (s[_HIDX] + 1) & _HIST_MASK
        s[_HIDX] = h
        hs[h] = lc
        if not swing:
            if big:
                s[_SUM] = s[_SUM] >> 1
                s[_SUM + 1] = s[_SUM + 1] >> 1
                s[_SUM + 2] = s[_SUM + 2] >> 1
            if s[_LIVE + _HEEL]:
                # heel-off: the heel's last drop below _OFF in this stance
                nh = s[_NORM + _HEEL]
                if nh >= _ON:
                    s[_HEELUP] = 0
                elif nh < _OFF and not s[_HEELUP]:
                    s[_HEELUP] = 1
                    s[_HEELOFF] = int(_crossing_ms(st, _SUB, _SUB, 0))
            if s[_NORM + _FORE] >= _ON:
                s[_FOREUP] = 1
            if lc < _OFF:
                # tentative toe-off: a swing must now last _MIN_SWING_MS
                s[_STATE] = _SWING
                s[_RUN] = 0
                s[_ONRUN] = 0
                s[_FIRST] = _NOBODY
                s[_PENDING] = s[_TRACKED]
                level = _OFF
                s[_TOELOW] = 0
                if lc < _ONSET and prev_l >= _ONSET:
                    level = _ONSET
                    s[_TOELOW] = 1
                s[_TOE] = int(_crossing_ms(st, prev_l, lc, level))
                s[_EARLY] = 0
                s[_SPELL] = 0
                if s[_TRACKED] and (s[_TOE] - s[_SMS]) & _MS_MASK < _SPIKE_MS:
                    s[_EARLY] = 1
            return 0
        if s[_RUN] < _SAT:
            s[_RUN] = s[_RUN] + 1
        todo = 0
        if s[_PENDING]:
            # one sample below the unload line is no swing when the spell's mean never
            # came down near the swing level: within _AIR_MEAN of it, or _SPELL_MEAN
            # under noise or pickup that rivals the span (a shallow dip it carried down)
            if s[_RUN] < _SAT and lc < _ON:
                s[_SPELL] = s[_SPELL] + lq
            lift = _AIR_MEAN
            if s[_ROUGH]:
                lift = _SPELL_MEAN
            shallow = 0
            if s[_SPELL] >= s[_RUN] * ((s[_AIRL] >> 4) + lift):
                shallow = 1
            if lc >= _ON:
                run = s[_RUN]
                # Loaded again soon after unloading. Too short to be any swing, or short
                # for this walker's swings while this stride is still young: a dip in
                # the stance (heel off before the forefoot loads, or a sagging FSR).
                # A live forefoot that never loaded means the foot has not rolled
                # over yet: the heel came off before the forefoot went down.
                unrolled = s[_FOREUP] == 0 and s[_LIVE + _FORE] != 0
                if (
                    run < s[_MINSW]
                    or shallow
                    or (unrolled and run < s[_GAPMAX])
                    or (run < s[_DYN] and s[_SINCE] * _STRIDE_DEN < s[_STEMA] * _STRIDE_NUM)
                ):
                    s[_PENDING] = 0
                    s[_STATE] = _STANCE
                    if s[_EARLY] and run >= s[_MINSW]:
                        # the contact collapsed at once and the foot was unloaded
                        # as long as a swing: perhaps a spike, and this the contact
                        return int(self._slow(_DO_REDATE))
                    return 0
                s[_PENDING] = 0
                todo = _DO_FINISH
            else:
                if not s[_TOELOW] and lc < _ONSET and prev_l >= _ONSET:
                    s[_TOE] = int(_crossing_ms(st, prev_l, lc, _ONSET))
                    s[_TOELOW] = 1
                # a foot that has not rolled over may still put the forefoot down
                wait = s[_DYN]
                if s[_FOREUP] == 0 and s[_LIVE + _FORE] != 0:
                    wait = s[_GAPMAX]
                if s[_RUN] >= wait and not shallow:
                    s[_PENDING] = 0
                    todo = _DO_FINISH
        if lc >= _ON:
            if s[_FIRST] == _NOBODY:
                s[_FIRST] = int(_first_loaded(st))
            s[_ONRUN] = s[_ONRUN] + 1
            if s[_ONRUN] >= s[_CONF]:
                if s[_RUN] - s[_ONRUN] >= s[_MINSW]:
                    todo |= _DO_CONTACT
                else:
                    # loaded with no clear swing before it (recording began mid-step)
                    todo |= _DO_UNTRACKED
        else:
            s[_ONRUN] = 0
            s[_FIRST] = _NOBODY
        if todo:
            return int(self._slow(todo))
        return 0

    @micropython.viper
    def _set_taps(self, n: int):
        # New filter length: rebuild each channel's running sum from its ring.
        s = ptr32(self._st)
        rg = ptr16(self._ring)
        last = s[_RIDX] - 1
        c = 0
        while c < 3:
            t = 0
            k = 0
            while k < n:
                i = last - k
                if i < 0:
                    i += _RING
                t += rg[c * _RING + i]
                k += 1
            s[_RSUM + c] = t
            c += 1
        s[_FLEN] = n
        s[_DELAY] = (n - 1) * _SUB // 2
        s[_ROOT] = int(_root16(n))

    def _slow(self, todo):
        # The rare transitions the per-sample core hands over.
        events = 0
        if todo & _DO_REDATE:
            self._redate()
            return 0
        if todo & _DO_FINISH:
            events = self._finish_step()
        if todo & _DO_CONTACT:
            events |= self._contact()
        elif todo & _DO_UNTRACKED:
            self._start_stance()
            self._st[_TRACKED] = 0
        return events

    def _onset_ms(self):
        # The contact's rise began after the last sample below _OFF: date it where
        # that rise first crossed _ONSET (a shelf on the way up does not delay the
        # strike), interpolated, less _LEAD_MS.
        st = self._st
        hist = self._hist
        h = st[_HIDX]
        k = 1
        while k < _HIST - 1 and hist[(h - k) & _HIST_MASK] >= _OFF:
            k += 1
        j = k - 1
        while j > 0 and hist[(h - j) & _HIST_MASK] < _ONSET:
            j -= 1
        cur = hist[(h - j) & _HIST_MASK]
        prev = hist[(h - j - 1) & _HIST_MASK]
        back = (_HIST - 1) * _SUB
        if prev < _ONSET:
            frac = _SUB
            if cur != prev:
                frac = (_ONSET - prev) * _SUB // (cur - prev)
            back = (j + 1) * _SUB - frac
        # as in _crossing_ms()
        back = ((back + st[_DELAY]) * 1000 // self.rate_hz - st[_LATE]) // _SUB + _LEAD_MS
        return (st[_NOW] - back) & _MS_MASK

    def _start_stance(self):
        st = self._st
        st[_STATE] = _STANCE
        st[_PENDING] = 0
        st[_HEELUP] = 0
        st[_HEELOFF] = 0
        st[_FOREUP] = 0
        st[_EARLY] = 0
        st[_SPK] = 0
        for c in range(3):
            st[_SUM + c] = 0
            st[_PK + c] = 0

    def _contact(self):
        st = self._st
        self._learn_rhythm(st)
        self._start_stance()
        st[_TRACKED] = 1
        self._strike = self._onset_ms()
        st[_SMS] = self._strike
        self._pattern = self._strike_pattern()
        self.contact_ms = self._strike
        self.contact_seq = self.steps + 1 if self.steps < _COUNT_MAX else _COUNT_MAX
        return EV_STRIKE

    def _redate(self):
        # The stance's contact collapsed at once and the foot loads again now: this
        # may be the real contact. The step summary decides, once the stance's peak
        # shows whether the first contact bore weight (see _finish_step).
        st = self._st
        pk = st[_PK]
        for c in (_ARCH, _FORE):
            if st[_PK + c] > pk:
                pk = st[_PK + c]
        st[_SPK] = pk
        st[_SPIKE_N] = st[_SINCE]
        st[_FIRST] = int(_first_loaded(st))
        st[_ALT] = self._onset_ms()
        st[_SMS] = st[_ALT]
        st[_ALTPAT] = self._strike_pattern()
        st[_FIRST] = _NOBODY

    def _learn_rhythm(self, st):
        # Typical stride and swing (in samples x 8) from walking strides only; a
        # contact after a pause restarts the estimate.
        since = st[_SINCE]
        st[_SINCE] = 0
        limit = _MAX_STRIDE_MS * self.rate_hz // 1000
        if not self._have_last or since > limit or st[_SEEN] < since:
            st[_STEMA] = 0
            st[_SWEMA] = 0
            st[_DYN] = st[_MINSW]
            return
        swing = st[_RUN] - st[_ONRUN]
        if since > _WALK_STRIDE_MS * self.rate_hz // 1000:
            return
        if st[_STEMA] == 0:
            st[_STEMA] = since << 3
            st[_SWEMA] = swing << 3
        else:
            # quick to shorten, slow to lengthen: too long an estimate would merge
            # real steps, too short a one only lets a rare dip through
            st[_STEMA] = _toward(st[_STEMA], since << 3)
            st[_SWEMA] = _toward(st[_SWEMA], swing << 3)
        dyn = (st[_SWEMA] * _SWING_NUM) >> _SWING_SHIFT
        dyn_max = _DYN_MAX_MS * self.rate_hz // 1000
        st[_DYN] = max(st[_MINSW], min(dyn, dyn_max))

    def _strike_pattern(self):
        # Weighted contact position from the loads now, refined by loading order.
        st = self._st
        lh = st[_LOAD + _HEEL] if st[_LIVE + _HEEL] else 0
        la = st[_LOAD + _ARCH] if st[_LIVE + _ARCH] else 0
        lf = st[_LOAD + _FORE] if st[_LIVE + _FORE] else 0
        total = lh + la + lf
        if total <= 0:
            return PATTERN_UNKNOWN
        cop = (_POS_HEEL * lh + _POS_ARCH * la + _POS_FORE * lf) // total
        if cop < _REAR_BELOW:
            return PATTERN_REAR
        if cop >= _FORE_FROM:
            return PATTERN_FORE
        first = st[_FIRST]
        if first == _HEEL and st[_NORM + _FORE] < _ON:
            return PATTERN_REAR
        if first == _FORE and st[_NORM + _HEEL] < _ON:
            return PATTERN_FORE
        return PATTERN_MID

    def _finish_step(self):
        # Toe-off confirmed: fill in the step summary.
        st = self._st
        if not st[_TRACKED]:
            return 0
        st[_TRACKED] = 0
        toe = st[_TOE]
        stance = (toe - self._strike) & _MS_MASK
        if stance > _MAX_STANCE_MS:
            return 0  # standing, not a step
        if self.steps < _COUNT_MAX:
            self.steps += 1
        self.seq = self.steps
        corrected = False
        if st[_SPK]:
            pk = st[_PK]
            for c in (_ARCH, _FORE):
                if st[_PK + c] > pk:
                    pk = st[_PK + c]
            if st[_SPK] * _SPIKE_SHARE < pk:
                # the collapsed contact bore a small part of the stance's load: a
                # spike, and the step began with the contact after it
                corrected = True
                self._strike = st[_ALT]
                self._pattern = st[_ALTPAT]
                stance = (toe - self._strike) & _MS_MASK
                # the next stride counts from this contact
                st[_SINCE] = max(0, st[_SINCE] - st[_SPIKE_N])
        self.strike_ms = self._strike
        st[_CORR] = 1 if corrected else 0
        self.toe_off_ms = toe
        self.stance_ms = stance
        if st[_LIVE + _HEEL] and st[_HEELUP] and (toe - st[_HEELOFF]) & _MS_MASK < _HALF_MS:
            self.heel_off_ms = st[_HEELOFF]
        else:
            # no heel-off seen, or dated to the very sample whose interpolated toe-off
            # lies a fraction of a sample earlier: the heel left with the toes
            self.heel_off_ms = toe
        if corrected and (self.heel_off_ms - self._strike) & _MS_MASK >= _HALF_MS:
            # the heel came off after the spike and did not load again
            self.heel_off_ms = self._strike
        stride = _MAX_STRIDE_MS + 1
        if self._have_last:
            stride = (self._strike - self._last_strike) & _MS_MASK
        if stride <= _MAX_STRIDE_MS:
            self.stride_ms = stride
            self.swing_ms = (self._strike - self._last_toe) & _MS_MASK
        else:
            self.stride_ms = 0
            self.swing_ms = 0
        self._last_strike = self._strike
        self._last_toe = toe
        self._have_last = True
        self.pattern = self._pattern
        self.peak_heel = st[_PK + _HEEL]
        self.peak_arch = st[_PK + _ARCH]
        self.peak_fore = st[_PK + _FORE]
        sh = st[_SUM + _HEEL]
        sa = st[_SUM + _ARCH]
        sf = st[_SUM + _FORE]
        total = sh + sa + sf
        while total > 0x80000:  # keep sum * 1000 below 2**29
            sh >>= 1
            sa >>= 1
            sf >>= 1
            total = sh + sa + sf
        if total > 0:
            self.share_heel = sh * 1000 // total
            self.share_arch = sa * 1000 // total
            self.share_fore = sf * 1000 // total
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
