# Step journal: every Step Event on the board's flash, so a day without a phone loses
# nothing and a reboot carries on counting. docs/PROTOCOL.md ("Step journal on
# flash") is the prose version of the format, docs/HARDWARE.md of its costs and wear.
#
# append() copies an event into a preallocated RAM batch as a compact record (no
# allocation); flush() writes the batch as one frame, at most every FLUSH_MS. A frame:
#   u8 magic, u16 body bytes, u32 seq, u32 step, u32 t, u32 age_ms, body, u16 s1, u16 s2
# seq/step/t are the decoder state at the first record, so every frame decodes on its
# own; s1/s2 are two running sums mod 65521 over header and body. A frame that is cut
# short or damaged fails its length or its sums and ends what is read of its file.
# Records rebuild the 20-byte packets byte for byte, sequence numbers included.
#
# Files are PREFIX.DDDDD.PPP: day DDDDD (24 h of device time), part PPP (a new part
# after a torn tail, or once a part reaches its size cap). Writes only ever append;
# staying under limit_bytes removes the oldest parts, so the oldest days go first.
# At boot the journal skips past what an unwritten batch could have held (SEQ_SKIP
# events, STEP_SKIP steps) and writes that at once, so no number a central may have
# seen is used again.
#
# Only what runs on every append stays loaded. Writing a frame (journal_write.py) is
# imported for each write, at most every FLUSH_MS, and dropped right after; reading
# (journal_read.py, with its frame buffer) is imported by the first read() and
# dropped by release(); the journal's state, the boot scan and removing parts
# (journal_boot.py) are imported for the boot and for a drop, and dropped right after,
# so their code leaves the heap between uses.
import os
import sys

try:
    from micropython import const
except ImportError:  # CPython: it evaluates the class's annotations, MicroPython never
    from typing import Any

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


_FLUSH_MS = const(5000)  # a batch waits at most this long for its write
_DAY_MS = const(86400000)  # a journal day: 24 h of device time
_LIMIT_BYTES = const(1048576)  # default bound on the journal's files
_SEQ_SKIP = const(48)  # = _BATCH_EVENTS: sequence numbers skipped at boot
_STEP_SKIP = const(12)  # = _BATCH_STEPS: step numbers skipped at boot

_MASK = const(0x1FFFFFFF)  # sequence numbers and ms clocks run on 2**29
_HALF = const(0x10000000)  # a difference this large runs backwards
_AGE_CAP = const(172800000)
_MAGIC = const(0x4A)
_HDR = const(19)  # frame header bytes; the two sums follow the body
_BATCH_BYTES = const(640)  # largest frame body
_BATCH_EVENTS = const(48)
_BATCH_STEPS = const(12)
_SOFT_BYTES = const(556)  # due from here: room left for four more raw records
_SOFT_EVENTS = const(40)
_SOFT_STEPS = const(10)
_WORST = const(26)  # a gap record and a raw record
_BUF = const(_HDR + _BATCH_BYTES + 4 + 21)  # + slack: a damaged record never reads past
_MAX_SEGS = const(48)
_SEG_MIN = const(2048)
_SEG_MAX = const(32768)
_PARTS = const(1000)
_DAYS = const(100000)
_SUM_MOD = const(65521)

# the packet fields the records know (protocol.py; a test checks they agree)
_FORMAT = const(1)
_KIND_STRIKE = const(0x01)
_KIND_STEP = const(0x02)
_KIND_LOAD = const(0x03)
_KIND_START = const(0x04)

# record tags: type in the low nibble, flags above
_R_RAW = const(0)  # 20 bytes as they are
_R_EVENT = const(1)  # kind, 16 payload bytes
_R_STRIKE = const(2)  # u16 contact - t, u8/u16 detect - contact
_R_STEP = const(3)  # [u16 strike - t], u16 stance, u16 heel-off, [u16 swing, u16 stride]
_R_LOAD = const(4)  # 3 x u16 peaks, shares (3 packed bytes or 3 x u16)
_R_GAP = const(5)  # u32 sequence numbers skipped
_F_SHORT = const(0x10)  # strike: detect delay in one byte
_F_AT_T = const(0x10)  # step: strike ms equals t
_F_DERIVED = const(0x20)  # step: swing and stride follow from the previous step
_F_ZERO = const(0x40)  # step: swing and stride both 0
_F_PACKED = const(0x40)  # load: shares in 3 bytes (pattern in bits 4-5)

# decoder state (array slots)
_SEQ = const(0)
_STEP = const(1)
_T = const(2)  # ms reference: the last strike
_PSTRIKE = const(3)
_PSTANCE = const(4)
_PREV = const(5)  # the previous step of this frame is known
# the writer's clocks, in the writer state array after the decoder's slots
_AGE = const(6)  # ms of device time into the journal day
_LAST_MS = const(7)  # the clock at the last tick, -1 before the first
_SINCE = const(8)  # ms when due() first saw the batch non-empty, -1 none
_RETRY = const(9)  # 1: the last write failed: wait FLUSH_MS, even when full
_CAP = const(10)  # a part's size cap: a 32nd of the bound, within _SEG_MIN.._SEG_MAX

_NONE = const(-2)
_IN_BATCH = const(-1)


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _u29(b, i):
    # a u32 field, or -1 when it does not fit the 2**29 clocks (never a big int)
    if b[i + 3] >= 0x20:
        return -1
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)


def _add29(a, b):
    # (a + b) mod 2**29 for a, b in [0, 2**29) without passing 2**29 on the way
    if a > _MASK - b:
        return a - (_MASK - b) - 1
    return a + b


def _put16(b, i, v):
    b[i] = v & 0xFF
    b[i + 1] = (v >> 8) & 0xFF


def _put32(b, i, v):
    b[i] = v & 0xFF
    b[i + 1] = (v >> 8) & 0xFF
    b[i + 2] = (v >> 16) & 0xFF
    b[i + 3] = (v >> 24) & 0xFF


def _copy(out, d, src, s, n):
    for k in range(n):
        out[d + k] = src[s + k]


def _sums(b, start, end, out):
    s1 = 1
    s2 = 0
    for i in range(start, end):
        s1 += b[i]
        if s1 >= _SUM_MOD:
            s1 -= _SUM_MOD
        s2 += s1
        if s2 >= _SUM_MOD:
            s2 -= _SUM_MOD
    out[0] = s1
    out[1] = s2


def _advance(st, p):
    # The state after packet p: one rule for the writer and the reader.
    if p[0] == _FORMAT:
        k = p[1]
        if k == _KIND_STRIKE:
            c = _u29(p, 8)
            if c >= 0:
                st[_T] = c
        elif k == _KIND_STEP:
            s = _u29(p, 4)
            if s >= 0:
                st[_STEP] = s
            s = _u29(p, 8)
            if s >= 0:
                st[_T] = s
                st[_PSTRIKE] = s
                st[_PSTANCE] = _u16(p, 12)
                st[_PREV] = 1
            else:
                st[_PREV] = 0
        elif k == _KIND_START:
            s = _u29(p, 4)
            if s >= 0:
                st[_STEP] = s
            st[_T] = 0
            st[_PREV] = 0
    st[_SEQ] = (st[_SEQ] + 1) & _MASK




class Journal:
    """The event journal under path_prefix (e.g. "journal" or "flash/journal").

    Opening never fails: a missing, damaged, cut or foreign journal opens as empty or
    as its valid part, with one log line. fs needs listdir, stat, remove; opener opens
    files in "rb", "ab" and "wb".
    """

    # The state journal_boot.setup() makes (its comments say what each is; the
    # reader's part belongs to journal_read.py). Annotations compile to nothing on
    # MicroPython.
    usable: bool
    refused: int
    read_error: bool
    skipped_seq: int
    skipped_steps: int
    limit: int
    _dir: str
    _base: str
    _id: Any  # the arrays are array("i")
    _first: Any
    _nseg: int
    size_bytes: int  # bytes of the journal's files
    _es: Any
    _batch: bytearray
    _n: int
    pending: int  # events in the batch, in RAM, not yet on flash
    _steps: int
    _cur: int
    _ds: Any
    _rbuf: Any
    _rmv: Any
    _hb: Any
    _hmv: Any
    _rhdr: Any
    _pkt: Any
    _rd: Any

    def __init__(self, path_prefix, log, fs=os, opener=open, limit_bytes=_LIMIT_BYTES,
                 announce=True):
        self._log = log
        # the boot's one line: logged at once (boot_line None while the boot runs), or
        # (announce False) kept in boot_line for the device to log after its banner
        self.boot_line = None if announce else ""
        self._rd = None  # journal_read while loaded (release() and _done_with read it)
        try:
            # the state and the boot scan: boot-only code (journal_boot.py); with no
            # memory for it the MemoryError goes to the caller (app.py boots without)
            _module("journal_boot").setup(self, path_prefix, fs, opener, limit_bytes)
        finally:
            self._done_with("journal_boot")

    # ---- what the device reads ----
    @property
    def next_seq(self):
        """Sequence number the next event gets (boot: past anything used before)."""
        return self._es[_SEQ]

    @property
    def last_step(self):
        """Step number of the last step journaled (boot: past anything used before)."""
        return self._es[_STEP]

    @property
    def oldest_seq(self):
        """Oldest sequence number the journal may hold."""
        for i in range(self._nseg):
            if self._first[i] >= 0:
                return self._first[i]
        if self.pending:
            return _u29(self._batch, 3)
        return self._es[_SEQ]

    @property
    def dropped(self):
        """Journal days dropped, wholly or in part, to stay under the bound."""
        if self._nseg == 0:
            return 0
        ident = self._id[0]
        return ident // _PARTS + (1 if ident % _PARTS else 0)

    # ---- writing ----
    def append(self, seq, packet):
        """Journal event seq (its 20-byte packet). False when refused (counted)."""
        st = self._es
        seq &= _MASK
        gap = (seq - st[_SEQ]) & _MASK
        if gap >= _HALF or self.pending >= _BATCH_EVENTS or self._n > _BATCH_BYTES - _WORST:
            self.refused += 1
            return False
        is_step = packet[0] == _FORMAT and packet[1] == _KIND_STEP
        if is_step and self._steps >= _BATCH_STEPS:
            self.refused += 1
            return False
        if self.pending == 0:
            self._begin(seq)
            gap = 0
        b = self._batch
        i = _HDR + self._n
        if gap:
            b[i] = _R_GAP
            _put32(b, i + 1, gap)
            st[_SEQ] = seq
            i += 5
        j = 0
        if packet[0] == _FORMAT and packet[2] == seq & 0xFF and packet[3] == (seq >> 8) & 0xFF:
            k = packet[1]
            if k == _KIND_STRIKE:
                j = self._strike(b, i, packet)
            elif k == _KIND_STEP:
                j = self._step(b, i, packet)
            elif k == _KIND_LOAD:
                j = self._load(b, i, packet)
            if j == 0:
                b[i] = _R_EVENT
                b[i + 1] = k
                _copy(b, i + 2, packet, 4, 16)
                j = i + 18
        else:
            b[i] = _R_RAW
            _copy(b, i + 1, packet, 0, 20)
            j = i + 21
        self._n = j - _HDR
        _advance(st, packet)
        self.pending += 1
        if is_step:
            self._steps += 1
        return True

    def due(self, now_ms):
        """True when the batch should be written now (call often: allocates nothing)."""
        now = now_ms & _MASK
        self._tick(now)
        if self.pending == 0:
            return False
        st = self._es
        if st[_SINCE] < 0:
            st[_SINCE] = now
        if st[_RETRY]:  # a failing flash is not asked again on every sample
            return (now - st[_SINCE]) & _MASK >= _FLUSH_MS
        if (self._n >= _SOFT_BYTES or self.pending >= _SOFT_EVENTS
                or self._steps >= _SOFT_STEPS):
            return True
        return (now - st[_SINCE]) & _MASK >= _FLUSH_MS

    def flush(self, now_ms):
        """Write the batch as one frame; True when nothing is left in RAM."""
        self._tick(now_ms)
        if self.pending == 0:
            return True
        if self._commit():
            return True
        self._es[_SINCE] = now_ms & _MASK  # try again a FLUSH_MS later
        self._es[_RETRY] = 1
        return False

    def _begin(self, seq):
        st = self._es
        st[_SEQ] = seq & _MASK
        st[_PREV] = 0
        b = self._batch
        _put32(b, 3, st[_SEQ])
        _put32(b, 7, st[_STEP])
        _put32(b, 11, st[_T])
        self._n = 0
        self._steps = 0

    def _strike(self, b, i, p):
        st = self._es
        c = _u29(p, 8)
        d = _u29(p, 12)
        if _u29(p, 4) != st[_STEP] + 1 or c < 0 or d < 0 or p[16] | p[17] | p[18] | p[19]:
            return 0
        dc = (c - st[_T]) & _MASK
        dd = (d - c) & _MASK
        if dc > 0xFFFF or dd > 0xFFFF:
            return 0
        _put16(b, i + 1, dc)
        if dd < 256:
            b[i] = _R_STRIKE | _F_SHORT
            b[i + 3] = dd
            return i + 4
        b[i] = _R_STRIKE
        _put16(b, i + 3, dd)
        return i + 5

    def _step(self, b, i, p):
        st = self._es
        s = _u29(p, 8)
        if _u29(p, 4) != st[_STEP] + 1 or s < 0:
            return 0
        tag = _R_STEP
        j = i + 1
        ds = (s - st[_T]) & _MASK
        if ds == 0:
            tag |= _F_AT_T
        elif ds <= 0xFFFF:
            _put16(b, j, ds)
            j += 2
        else:
            return 0
        b[j] = p[12]
        b[j + 1] = p[13]
        b[j + 2] = p[18]
        b[j + 3] = p[19]
        j += 4
        swing = _u16(p, 14)
        stride = _u16(p, 16)
        if swing == 0 and stride == 0:
            tag |= _F_ZERO
        elif (st[_PREV] and stride == (s - st[_PSTRIKE]) & _MASK
              and swing == (stride - st[_PSTANCE]) & _MASK):
            tag |= _F_DERIVED
        else:
            _copy(b, j, p, 14, 4)
            j += 4
        b[i] = tag
        return j

    def _load(self, b, i, p):
        st = self._es
        step = st[_STEP]
        if (p[4] != step & 0xFF or p[5] != (step >> 8) & 0xFF or p[6] != (step >> 16) & 0xFF
                or p[7] > 3):
            return 0
        tag = _R_LOAD | (p[7] << 4)
        _copy(b, i + 1, p, 8, 6)
        h = _u16(p, 14)
        a = _u16(p, 16)
        r = 1000 - h - a - _u16(p, 18)  # what rounding each share down lost
        if 0 <= r <= 3 and h < 1024 and a < 1024:
            b[i] = tag | _F_PACKED
            b[i + 7] = h & 0xFF
            b[i + 8] = (h >> 8) | ((a & 0x3F) << 2)
            b[i + 9] = (a >> 6) | (r << 4)
            return i + 10
        b[i] = tag
        _copy(b, i + 7, p, 14, 6)
        return i + 13

    def _tick(self, now_ms):
        now = now_ms & _MASK
        st = self._es
        last = st[_LAST_MS]
        if last >= 0:
            d = (now - last) & _MASK
            if d < _HALF:  # a clock that went back restarts the count
                st[_AGE] = min(st[_AGE] + d, _AGE_CAP)
        st[_LAST_MS] = now

    def _commit(self):
        # the frame writer (journal_write.py) is loaded for each frame and dropped
        # after: a frame goes out at most every FLUSH_MS
        try:
            w = _module("journal_write")
        except MemoryError:
            return False  # as a write that failed: the batch waits FLUSH_MS in RAM
        try:
            return w.commit(self)
        finally:
            w = None
            sys.modules.pop("journal_write", None)

    def _path(self, ident):
        name = "%s.%05d.%03d" % (self._base, ident // _PARTS, ident % _PARTS)
        return self._dir + "/" + name if self._dir else name

    # ---- reading (journal_read.py, loaded on demand) ----
    def read(self, seq, out):
        """Fill out (20 bytes) with event seq; False when the journal does not hold it,
        or (read_error set) when it could not look now: no memory for the reading
        code, a file that would not read."""
        self.read_error = False
        rd = self._rd
        if rd is None:
            try:
                rd = _module("journal_read")
                rd.attach(self)
            except MemoryError:
                self.release()
                self.read_error = True
                return False
            self._rd = rd
        return rd.read(self, seq, out)

    @property
    def reading(self):
        """The reading code is loaded (release() drops it)."""
        return self._rd is not None

    def release(self):
        """Drop the reading code and its buffers; the next read() loads them again."""
        self._rd = None
        self._ds = self._rbuf = self._rmv = self._hb = self._hmv = self._rhdr = None
        self._pkt = None
        self._cur = _NONE
        self._done_with("journal_read")

    def _done_with(self, name):
        if name == "journal_read" or self._rd is None:
            sys.modules.pop("journal_read", None)  # journal_boot imports it too
        sys.modules.pop(name, None)


def _module(name):
    mod = sys.modules.get(name)
    return mod if mod is not None else __import__(name)
