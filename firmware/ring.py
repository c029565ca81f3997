# Preallocated ring of the last CAPACITY step events, addressed by sequence number.
#
# Every event goes in here first, sent or not, so a central that lost events can
# ask for them again (backfill). Sequence numbers run on a 2**29 clock (ESP32 small
# int) and the capacity divides 2**29, so slot = seq & (capacity - 1) across wraps.
# The buffer is one block of capacity * size bytes: the device picks the capacity
# (device.Insole ring_capacity) from what the radio and the flash journal need.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


_SEQ_MASK = const(0x1FFFFFFF)
_CAPACITY = const(1024)
_CAPACITY_MIN = const(16)
_CAPACITY_MAX = const(32768)  # BACKFILL reaches at most 32768 events behind the head


class EventRing:
    def __init__(self, capacity=_CAPACITY, size=20):
        if capacity & (capacity - 1) or not _CAPACITY_MIN <= capacity <= _CAPACITY_MAX:
            raise ValueError("capacity must be a power of two, 16..32768")
        self.capacity = capacity
        self.size = size
        self._mask = capacity - 1
        self._buf = bytearray(capacity * size)
        self.head = 0  # sequence number the next event gets (wraps at 2**29)
        self.count = 0  # events held (saturates at capacity)

    def put(self, packet):
        """Store one packet (size bytes); returns its sequence number."""
        seq = self.head
        off = (seq & self._mask) * self.size
        buf = self._buf
        for i in range(self.size):
            buf[off + i] = packet[i]
        self.head = (seq + 1) & _SEQ_MASK
        if self.count < self.capacity:
            self.count += 1
        return seq

    def oldest(self):
        return (self.head - self.count) & _SEQ_MASK

    def behind(self, seq):
        """How many events lie from seq up to (not including) head."""
        return (self.head - seq) & _SEQ_MASK

    def held(self, seq):
        return 0 < self.behind(seq) <= self.count

    def copy(self, seq, out):
        """Copy event seq (must be held) into out."""
        off = (seq & self._mask) * self.size
        buf = self._buf
        for i in range(self.size):
            out[i] = buf[off + i]
