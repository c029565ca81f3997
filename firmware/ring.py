# Preallocated ring of the last CAPACITY step events, addressed by sequence number.
#
# Every event goes in here first, sent or not, so a central that lost events can
# ask for them again (backfill). Sequence numbers run on a 2**29 clock (ESP32 small
# int) and the capacity divides 2**29, so slot = seq & (capacity - 1) across wraps.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


SEQ_MASK = const(0x1FFFFFFF)
CAPACITY = const(1024)


class EventRing:
    def __init__(self, capacity=CAPACITY, size=20):
        if capacity & (capacity - 1) or capacity < 512:
            raise ValueError("capacity must be a power of two >= 512")
        self.capacity = capacity
        self.size = size
        self._mask = capacity - 1
        self._buf = bytearray(capacity * size)
        self.head = 0  # sequence number the next event gets
        self.count = 0  # events held

    def put(self, packet):
        """Store one packet (size bytes); returns its sequence number."""
        seq = self.head
        off = (seq & self._mask) * self.size
        buf = self._buf
        for i in range(self.size):
            buf[off + i] = packet[i]
        self.head = (seq + 1) & SEQ_MASK
        if self.count < self.capacity:
            self.count += 1
        return seq

    def oldest(self):
        return (self.head - self.count) & SEQ_MASK

    def behind(self, seq):
        """How many events lie from seq up to (not including) head."""
        return (self.head - seq) & SEQ_MASK

    def held(self, seq):
        return 0 < self.behind(seq) <= self.count

    def copy(self, seq, out):
        """Copy event seq (must be held) into out."""
        off = (seq & self._mask) * self.size
        buf = self._buf
        for i in range(self.size):
            out[i] = buf[off + i]
