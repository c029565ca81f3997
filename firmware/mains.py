# Mains-cancelling ADC reads for sample rates up to 6/5 of 60 Hz (72 Hz), and a check
# that the hum is at the frequency they cancel.
#
# The detector's pre-filter averages whole mains periods (20 ms, or 16.7 ms at 60 Hz),
# which needs samples that span them within its longest filter. Below that one read
# per sample turns pickup into a slow wave (50.2 Hz read at 50 Hz is a 0.2 Hz wave, at
# 60 Hz a 10 Hz one, inside the gait's own band) that nothing after the ADC can tell
# from the foot. So at these rates each sample is the mean of four reads a quarter of
# a mains period apart (5 ms, or 4.17 ms): pickup averages out before it can alias,
# even where the ADC clips its negative half on an unloaded FSR (two reads half a
# period apart would not do: clipped pickup averages to a constant only over a whole
# period). The reads take three quarters of a mains period (with 50 Hz mains 15 ms of
# the 16.7-20 ms sample period at 50-60 Hz; with 60 Hz mains 12.5 ms of 13.9-20 ms at
# 50-72 Hz); a sample stands for the middle of them, 3/8 of a mains period after its
# deadline (the detector dates its events so: gait.reads_hz()). From 61 to 72 Hz the
# reads are 60 Hz ones whatever the setting (gait.reads_hz()): a 50 Hz period does not
# fit, and there 60 Hz hum would alias into the gait's band.
#
# The check (MainsCheck): for hum at the frequency the reads cancel, r0 - r1 + r2 - r3
# of a sample's four reads is zero while no read clips; a ramp of the load puts -2 x
# its rise per read in it (taken out with the slope of the samples around it), noise
# puts in as much of either sign. Hum at the other frequency puts in about its own
# amplitude, which changes slowly from sample to sample exactly where it aliases into
# the gait's band (sample rates near its frequency). So the mean agreement of two
# neighbouring samples' combinations (the smaller magnitude, negative for opposite
# signs), over samples whose reads do not clip, is about zero for noise and a few
# counts for a clean walk, and the hum's size for the other frequency: above
# _FLAG_ON the channel's Status code says so ("wrong mains").
#
# Hot path: heel() allocates nothing (sums of four 16-bit reads are small ints), and
# the check of a sample runs in the next one's first wait between reads, not after them.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from array import array

# (modes.py chooses these reads for rates up to 72 Hz)
_READS = const(4)
_SHIFT = const(2)  # divide by _READS
_PERIOD_US_X_HZ = const(1000000)  # a mains period, us, times its frequency
_LOW = const(3277)  # a read at or below 5 % of full scale may be clipped (or in the
_HIGH = const(62258)  # ADC's bend near 0 V), and at or above 95 %
_LEAK = const(9)  # the agreement is a running mean over about 2**9 sample pairs
_FLAG_ON = const(576)  # counts of mean agreement: hum the reads do not cancel (3 %
# noise, SD 2000 counts, keeps it under 300 on the fault bench)
_FLAG_OFF = const(288)  # ... and below this it has gone (hysteresis)
_F_NOISY = const(4)  # the detector's Status codes (gait.py) this one may replace
_F_MAINS = const(6)  # Status fault code: hum at the other mains frequency
_CODE_MASK = const(0xF)
# MainsCheck's per-channel state, _N ints per channel in one array
_M1 = const(0)  # the previous sample's mean (-1: none yet)
_M2 = const(1)  # the one before it
_Q1 = const(2)  # the previous sample's combination
_OK1 = const(3)  # ... taken from reads that do not clip
_QC = const(4)  # the combination of the sample before, its slope taken out
_OKC = const(5)
_ACC = const(6)  # running sum of agreements, 2**_LEAK x their mean
_N = const(7)


class MainsCheck:
    """Is there hum on a channel that four reads a quarter of a mains period apart do
    not cancel? `wrong` has bit c set for each channel c (0 heel, 1 arch, 2 fore)
    where there is."""

    def __init__(self, rate_hz, gap_us):
        # r0 - r1 + r2 - r3 of a ramp is -2 x its rise per read: the rise over the
        # two sample periods around it, x gap_us x rate_hz / 2e6
        self._slope = gap_us * rate_hz // 1000
        self._v = array("i", [0] * (3 * _N))
        self.wrong = 0
        c = 0
        while c < 3:
            self._v[c * _N + _M1] = -1
            self._v[c * _N + _M2] = -1
            c += 1

    def sample(self, c, q, m, ok):
        """Channel c's sample: q = r0 - r1 + r2 - r3 of its reads, m their mean, ok
        when none of them clips."""
        v = self._v
        i = c * _N
        m2 = v[i + _M2]
        v[i + _M2] = v[i + _M1]
        v[i + _M1] = m
        # the previous sample's combination, less what the load's slope put in it
        valid = v[i + _OK1] and m2 >= 0
        qc = v[i + _Q1] + (m - m2) * self._slope // 1000
        v[i + _Q1] = q
        v[i + _OK1] = ok
        if valid and v[i + _OKC]:
            qp = v[i + _QC]
            a1 = qc if qc >= 0 else -qc
            a2 = qp if qp >= 0 else -qp
            agree = a1 if a1 < a2 else a2
            if (qc ^ qp) < 0:  # opposite signs
                agree = -agree
            acc = v[i + _ACC]
            acc += agree - (acc >> _LEAK)
            v[i + _ACC] = acc
            mean = acc >> _LEAK
            if mean > _FLAG_ON:
                self.wrong |= 1 << c
            elif mean < _FLAG_OFF:
                self.wrong &= ~(1 << c)
        v[i + _QC] = qc
        v[i + _OKC] = valid

    def faults(self, word):
        """The Status faults word (4 bits per channel, gait.py) with code 6 for each
        channel the hum makes wrong: in place of ok or noisy (what such hum looks
        like to the detector), not of a hardware fault."""
        wrong = self.wrong
        c = 0
        while c < 3:
            if wrong >> c & 1:
                sh = 4 * c
                code = word >> sh & _CODE_MASK
                if code == 0 or code == _F_NOISY:
                    word = (word & ~(_CODE_MASK << sh)) | (_F_MAINS << sh)
            c += 1
        return word


class MainsAverage:
    """Three ADC channels, each read four times over one mains period per sample."""

    def __init__(self, read_h, read_a, read_f, clock, mains_hz=50, rate_hz=50):
        self._rh = read_h
        self._ra = read_a
        self._rf = read_f
        self._clock = clock
        # 5000 us at 50 Hz; 4166 at 60, 0.7 us short of a quarter period (a 0.02 %
        # phase error: what pickup leaves of it is far below the ADC's noise)
        self._gap = _PERIOD_US_X_HZ // (mains_hz * _READS)
        self.check = MainsCheck(rate_hz, self._gap)
        # the last sample's q, mean and ok per channel, for the check to take in the
        # next sample's first wait (a mean of -1 says there is none yet)
        self._last = array("i", [0, -1, 0, 0, -1, 0, 0, -1, 0])
        self.a = 0
        self.f = 0

    def heel(self):
        """Take the sample's reads (3/4 of a mains period); return the heel, keep arch
        and forefoot."""
        c = self._clock
        rh = self._rh
        ra = self._ra
        rf = self._rf
        gap = self._gap
        at = c.ticks_us()
        h = rh()
        a = ra()
        f = rf()
        # the check of the last sample runs here, in time the reads wait anyway
        last = self._last
        k = self.check
        k.sample(0, last[0], last[1], last[2])
        k.sample(1, last[3], last[4], last[5])
        k.sample(2, last[6], last[7], last[8])
        # r0 - r1 + r2 - r3 per channel, and the extremes of its reads
        qh = h
        qa = a
        qf = f
        lo_h = hi_h = h
        lo_a = hi_a = a
        lo_f = hi_f = f
        n = 1
        while n < _READS:
            at = c.ticks_add(at, gap)  # from the first read: no drift
            left = c.ticks_diff(at, c.ticks_us())
            if left > 0:
                c.sleep_us(left)
            x = rh()
            h += x
            qh += -x if n & 1 else x
            if x < lo_h:
                lo_h = x
            elif x > hi_h:
                hi_h = x
            x = ra()
            a += x
            qa += -x if n & 1 else x
            if x < lo_a:
                lo_a = x
            elif x > hi_a:
                hi_a = x
            x = rf()
            f += x
            qf += -x if n & 1 else x
            if x < lo_f:
                lo_f = x
            elif x > hi_f:
                hi_f = x
            n += 1
        h >>= _SHIFT
        a >>= _SHIFT
        f >>= _SHIFT
        self.a = a
        self.f = f
        last[0] = qh
        last[1] = h
        last[2] = lo_h > _LOW and hi_h < _HIGH
        last[3] = qa
        last[4] = a
        last[5] = lo_a > _LOW and hi_a < _HIGH
        last[6] = qf
        last[7] = f
        last[8] = lo_f > _LOW and hi_f < _HIGH
        return h

    def arch(self):
        return self.a

    def fore(self):
        return self.f
