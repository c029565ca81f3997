# Short, rate-limited serial log lines: "<s.mmm> <tag> <text>".
#
# At most PER_SECOND lines per second of device time get printed; the rest are
# counted and reported as one "log +N" line, so a fault that repeats every sample
# cannot flood the serial link (or slow the loop that prints it).
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


_PER_SECOND = const(5)
_WINDOW_MS = const(1000)
_MS_MASK = const(0x1FFFFFFF)
_DROPPED_MAX = const(0x1FFFFFFF)


class Log:
    def __init__(self, out=print):
        self._out = out
        self.clock = None  # object with .ms (device clock); set once sampling exists
        self._window = 0
        self._lines = 0  # printed in this window, 0..PER_SECOND
        # lines dropped in this window: saturates, as the window never ends while the
        # device clock stands still (BLE served without sampling)
        self.dropped = 0

    def __call__(self, tag, text=""):
        now = self.clock.ms if self.clock is not None else 0
        if (now - self._window) & _MS_MASK >= _WINDOW_MS:
            self._window = now
            self._lines = 0
            if self.dropped:
                self._out("%d.%03d log +%d" % (now // 1000, now % 1000, self.dropped))
                self.dropped = 0
        if self._lines >= _PER_SECOND:
            if self.dropped < _DROPPED_MAX:
                self.dropped += 1
            return
        self._lines += 1
        self._out("%d.%03d %s %s" % (now // 1000, now % 1000, tag, text))
