# Mains-cancelling ADC reads for sample rates of 60 Hz and below.
#
# The detector's pre-filter averages whole 20 ms mains periods, which needs at least two
# samples per period. Below that one read per sample turns 50 Hz pickup into a slow
# wave (50.2 Hz read at 50 Hz is a 0.2 Hz wave, at 60 Hz a 10 Hz one, inside the gait's
# own band) that nothing after the ADC can tell from the foot. So at these rates each
# sample is the mean of four reads 5 ms apart, one mains period: pickup averages out
# before it can alias, even where the ADC clips its negative half on an unloaded FSR
# (two reads half a period apart would not do: clipped pickup averages to a constant
# only over a whole period). The reads take 15 ms of the sample period (16.7 ms at
# 60 Hz); a sample stands for the middle of them, 7.5 ms after its deadline.
#
# Hot path: read() allocates nothing (sums of four 16-bit reads are small ints).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


_MAINS_UP_TO_HZ = const(60)  # rates at or below this average over one mains period
_READS = const(4)
_SHIFT = const(2)  # divide by _READS
_GAP_US = const(5000)  # 20 ms mains period / _READS


class MainsAverage:
    """Three ADC channels, each read four times over one mains period per sample."""

    def __init__(self, read_h, read_a, read_f, clock):
        self._rh = read_h
        self._ra = read_a
        self._rf = read_f
        self._clock = clock
        self.a = 0
        self.f = 0

    def heel(self):
        """Take the sample's reads (15 ms); return the heel, keep arch and forefoot."""
        c = self._clock
        rh = self._rh
        ra = self._ra
        rf = self._rf
        at = c.ticks_us()
        h = rh()
        a = ra()
        f = rf()
        n = 1
        while n < _READS:
            at = c.ticks_add(at, _GAP_US)  # from the first read: no drift
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
