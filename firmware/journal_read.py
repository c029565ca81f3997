# Reading the step journal (journal.py): rebuild event seq from the frame that holds
# it, on flash or in the RAM batch. Loaded by Journal.read() and dropped by
# Journal.release(), with the buffers attach() makes; the boot scan (journal_boot.py)
# checks frames with frame() and run_frame(). Functions take the Journal as jn.
from array import array

from journal import _add29, _advance, _copy, _put16, _put32, _sums, _u16, _u29

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


_MASK = const(0x1FFFFFFF)
_MAGIC = const(0x4A)
_HDR = const(19)
_BATCH_BYTES = const(640)
_BUF = const(_HDR + _BATCH_BYTES + 4 + 21)  # as journal._BUF
_FORMAT = const(1)
_KIND_STRIKE = const(0x01)
_KIND_STEP = const(0x02)
_KIND_LOAD = const(0x03)
_R_RAW = const(0)
_R_EVENT = const(1)
_R_STRIKE = const(2)
_R_STEP = const(3)
_R_LOAD = const(4)
_R_GAP = const(5)
_F_SHORT = const(0x10)
_F_AT_T = const(0x10)
_F_DERIVED = const(0x20)
_F_ZERO = const(0x40)
_F_PACKED = const(0x40)
_SEQ = const(0)
_STEP = const(1)
_T = const(2)
_PSTRIKE = const(3)
_PSTANCE = const(4)
_PREV = const(5)
_NONE = const(-2)
_IN_BATCH = const(-1)


def attach(jn):
    """The reader's buffers: a frame, a frame header, the decoder state, a packet."""
    jn._ds = array("i", [0] * 6)
    jn._rbuf = bytearray(_BUF)
    jn._rmv = memoryview(jn._rbuf)
    jn._hb = bytearray(7)
    jn._hmv = memoryview(jn._hb)
    jn._rhdr = jn._rmv[:_HDR]
    jn._pkt = bytearray(20)


def _decode(src, i, st, out):
    """Rebuild the packet of the record at src[i] into out; the index after it, or -1."""
    tag = src[i]
    typ = tag & 0x0F
    if typ == _R_RAW:
        _copy(out, 0, src, i + 1, 20)
        _advance(st, out)
        return i + 21
    seq = st[_SEQ]
    out[0] = _FORMAT
    out[2] = seq & 0xFF
    out[3] = (seq >> 8) & 0xFF
    if typ == _R_EVENT:
        out[1] = src[i + 1]
        _copy(out, 4, src, i + 2, 16)
        j = i + 18
    elif typ == _R_STRIKE:
        out[1] = _KIND_STRIKE
        c = _add29(st[_T], _u16(src, i + 1))
        if tag & _F_SHORT:
            d = _add29(c, src[i + 3])
            j = i + 4
        else:
            d = _add29(c, _u16(src, i + 3))
            j = i + 5
        _put32(out, 4, st[_STEP] + 1)
        _put32(out, 8, c)
        _put32(out, 12, d)
        for k in range(16, 20):
            out[k] = 0
    elif typ == _R_STEP:
        out[1] = _KIND_STEP
        j = i + 1
        s = st[_T]
        if not tag & _F_AT_T:
            s = _add29(s, _u16(src, j))
            j += 2
        _put32(out, 4, st[_STEP] + 1)
        _put32(out, 8, s)
        out[12] = src[j]
        out[13] = src[j + 1]
        out[18] = src[j + 2]
        out[19] = src[j + 3]
        j += 4
        if tag & _F_ZERO:
            for k in range(14, 18):
                out[k] = 0
        elif tag & _F_DERIVED:
            if not st[_PREV]:
                return -1
            stride = (s - st[_PSTRIKE]) & _MASK
            swing = (stride - st[_PSTANCE]) & _MASK
            if stride > 0xFFFF or swing > 0xFFFF:
                return -1
            _put16(out, 14, swing)
            _put16(out, 16, stride)
        else:
            _copy(out, 14, src, j, 4)
            j += 4
    elif typ == _R_LOAD:
        out[1] = _KIND_LOAD
        step = st[_STEP]
        out[4] = step & 0xFF
        out[5] = (step >> 8) & 0xFF
        out[6] = (step >> 16) & 0xFF
        out[7] = (tag >> 4) & 3
        _copy(out, 8, src, i + 1, 6)
        if tag & _F_PACKED:
            h = src[i + 7] | ((src[i + 8] & 0x03) << 8)
            a = (src[i + 8] >> 2) | ((src[i + 9] & 0x0F) << 6)
            f = 1000 - h - a - ((src[i + 9] >> 4) & 3)
            if f < 0 or src[i + 9] > 0x3F:
                return -1
            _put16(out, 14, h)
            _put16(out, 16, a)
            _put16(out, 18, f)
            j = i + 10
        else:
            _copy(out, 14, src, i + 7, 6)
            j = i + 13
    else:
        return -1
    _advance(st, out)
    return j


def read(jn, seq, out):
    """Fill out (20 bytes) with event seq; False when the journal does not hold it."""
    seq &= _MASK
    base = jn.oldest_seq
    want = (seq - base) & _MASK
    if want >= (jn._es[_SEQ] - base) & _MASK:
        return False
    if jn.pending and (_u29(jn._batch, 3) - base) & _MASK <= want:
        if jn._cur != _IN_BATCH:
            jn._cur = _IN_BATCH
            _rewind(jn, jn._batch)
        return _find(jn, jn._batch, _HDR + jn._n, seq, out)
    i = jn._nseg - 1
    while i >= 0 and (jn._first[i] < 0 or (jn._first[i] - base) & _MASK > want):
        i -= 1
    if i < 0:
        return False
    if jn._cur == i and (_u29(jn._rbuf, 3) - base) & _MASK <= want and (
            jn._cur_next < 0 or want < (jn._cur_next - base) & _MASK):
        return _find(jn, jn._rbuf, _HDR + _u16(jn._rbuf, 1), seq, out)
    try:
        if not _locate(jn, i, base, want):
            jn._cur = _NONE
            return False
    except OSError:
        jn._cur = _NONE
        jn.read_error = True
        return False
    return _find(jn, jn._rbuf, _HDR + _u16(jn._rbuf, 1), seq, out)


def _locate(jn, i, base, want):
    # Load the frame of part i that holds offset want (from the oldest) into rbuf.
    pos = 0
    if jn._cur == i and (_u29(jn._rbuf, 3) - base) & _MASK <= want:
        pos = jn._cur_off
    end = jn._end[i]
    if jn._rpath_id != jn._id[i]:
        jn._rpath = jn._path(jn._id[i])
        jn._rpath_id = jn._id[i]
    f = jn._open(jn._rpath, "rb")
    try:
        if not _peek(jn, f, pos, end):
            return False
        nxt_seq = -1
        while True:
            nxt = pos + _HDR + _u16(jn._hb, 1) + 4
            if not _peek(jn, f, nxt, end):
                nxt_seq = -1
                break
            nxt_seq = _u29(jn._hb, 3)
            if (nxt_seq - base) & _MASK > want:
                break
            pos = nxt
        if not frame(jn, f, pos):
            return False
    finally:
        f.close()
    jn._cur = i
    jn._cur_off = pos
    jn._cur_next = nxt_seq
    _rewind(jn, jn._rbuf)
    return True


def _peek(jn, f, pos, end):
    # the start of the frame header at pos into hb (magic, length, seq)
    if pos + _HDR > end or _fill(jn, f, jn._hmv, pos, 7) < 7:
        return False
    hb = jn._hb
    return hb[0] == _MAGIC and _u16(hb, 1) <= _BATCH_BYTES and hb[6] < 0x20


def _fill(jn, f, mv, pos, n):
    # n bytes at pos into mv (slicing only when mv is longer or a read comes short)
    f.seek(pos)
    got = f.readinto(mv if len(mv) == n else mv[:n])
    while got and got < n:
        k = f.readinto(mv[got:n])
        if not k:
            break
        got += k
    return got or 0


def frame(jn, f, pos):
    # Read and check the frame at pos into rbuf; its length, or 0.
    rb = jn._rbuf
    if _fill(jn, f, jn._rhdr, pos, _HDR) < _HDR or rb[0] != _MAGIC:
        return 0
    n = _u16(rb, 1)
    if n > _BATCH_BYTES or rb[6] >= 0x20 or rb[10] >= 0x20 or rb[14] >= 0x20 or \
            rb[18] >= 0x20:
        return 0
    if _fill(jn, f, jn._rmv[_HDR:_HDR + n + 4], pos + _HDR, n + 4) < n + 4:
        return 0
    _sums(rb, 0, _HDR + n, jn._ck)
    if jn._ck[0] != _u16(rb, _HDR + n) or jn._ck[1] != _u16(rb, _HDR + n + 2):
        return 0
    return _HDR + n + 4


def _rewind(jn, src):
    st = jn._ds
    st[_SEQ] = _u29(src, 3)
    st[_STEP] = _u29(src, 7)
    st[_T] = _u29(src, 11)
    st[_PREV] = 0
    jn._cur_pos = _HDR


def _find(jn, src, end, seq, out):
    # Decode the frame in src up to event seq.
    st = jn._ds
    first = _u29(src, 3)
    want = (seq - first) & _MASK
    if want < (st[_SEQ] - first) & _MASK:
        _rewind(jn, src)
    pos = jn._cur_pos
    pkt = jn._pkt
    while pos < end:
        if src[pos] & 0x0F == _R_GAP:
            gap = _u29(src, pos + 1)
            if gap < 0 or pos + 5 > end:
                break
            st[_SEQ] = _add29(st[_SEQ], gap)
            pos += 5
            jn._cur_pos = pos
            if (st[_SEQ] - first) & _MASK > want:
                return False
            continue
        here = st[_SEQ]
        j = _decode(src, pos, st, pkt)
        if j < 0 or j > end:
            break
        pos = j
        jn._cur_pos = pos
        if here == seq:
            _copy(out, 0, pkt, 0, 20)
            return True
    jn._cur_pos = end
    return False


def run_frame(jn, src, end):
    # Decode a whole frame (reader state); True when its records fill it exactly.
    _rewind(jn, src)
    st = jn._ds
    pos = _HDR
    while pos < end:
        if src[pos] & 0x0F == _R_GAP:
            gap = _u29(src, pos + 1)
            if gap < 0:
                return False
            st[_SEQ] = _add29(st[_SEQ], gap)
            pos += 5
            continue
        pos = _decode(src, pos, st, jn._pkt)
        if pos < 0:
            return False
    return pos == end
