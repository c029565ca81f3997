# Mains-cancelling ADC reads for sample rates up to 6/5 of the mains frequency (60 Hz
# where mains is 50 Hz, 72 Hz where it is 60 Hz).
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
# deadline.
#
# Hot path: read() allocates nothing (sums of four 16-bit reads are small ints).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


# (modes.py chooses these reads for rates up to 6/5 of the mains frequency)
_READS = const(4)
_SHIFT = const(2)  # divide by _READS
_PERIOD_US_X_HZ = const(1000000)  # a mains period, us, times its frequency


class MainsAverage:
    """Three ADC channels, each read four times over one mains period per sample."""

    def __init__(self, read_h, read_a, read_f, clock, mains_hz=50):
        self._rh = read_h
        self._ra = read_a
        self._rf = read_f
        self._clock = clock
        # 5000 us at 50 Hz; 4166 at 60, 0.7 us short of a quarter period (a 0.02 %
        # phase error: what pickup leaves of it is far below the ADC's noise)
        self._gap = _PERIOD_US_X_HZ // (mains_hz * _READS)
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
        n = 1
        while n < _READS:
            at = c.ticks_add(at, gap)  # from the first read: no drift
            left = c.ticks_diff(at, c.ticks_us())
            if left > 0:
                c.sleep_us(left)
            h += rh()
            a += ra()
            f += rf()
            n += 1
        self.a = a >> _SHIFT
        self.f = f >> _SHIFT
        return h >> _SHIFT

    def arch(self):
        return self.a

    def fore(self):
        return self.f
