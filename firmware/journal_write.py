# The step journal's frame writer (journal.py): sealing the batch into a frame,
# choosing or starting its part, staying under the bound and appending the frame to
# flash. A frame goes out at most every FLUSH_MS, so this code is imported for each
# write and dropped right after (Journal._commit): between writes only the batch
# and what append() needs stay in RAM. Functions take the Journal as jn.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from journal import _module, _put16, _put32, _sums, _u29

# journal.py's constants, private here (tests/test_firmware_units.py checks the copies)
_DAY_MS = const(86400000)  # a journal day: 24 h of device time

_MAGIC = const(0x4A)  # journal.py's, as the constants below (a test checks they agree)
_HDR = const(19)
_MAX_SEGS = const(48)
_AGE = const(6)  # writer state slots
_SINCE = const(8)
_RETRY = const(9)
_CAP = const(10)
_PARTS = const(1000)
_DAYS = const(100000)
_NONE = const(-2)
_IN_BATCH = const(-1)


def commit(jn):
    """Write the batch (or, with no events, a mark frame) as one frame; True when
    it is on flash."""
    if not jn.usable:
        return False
    k = _seal(jn)
    new = not jn._writable or jn._nseg == 0
    if not new and jn._es[_AGE] >= _DAY_MS:
        new = True
    if not new and jn._size[jn._nseg - 1] + k > jn._es[_CAP]:
        new = True
    if new:
        _new_part(jn)
    while jn.size_bytes + k > jn.limit and jn._nseg > 1:
        _drop_oldest(jn)
    last = jn._nseg - 1
    path = jn._path(jn._id[last])
    first = _u29(jn._batch, 3)
    try:
        f = jn._open(path, "wb" if new else "ab")
        try:
            f.write(memoryview(jn._batch)[:k])
        finally:
            f.close()
    except OSError as e:
        jn._writable = False
        jn._size[last] += k
        jn.size_bytes += k
        if jn._boot_drops < 0:  # the boot speaks in one line
            jn._log("jrn", "write failed %s" % e)
        return False
    if jn._end[last] == jn._size[last]:
        jn._end[last] += k
    jn._size[last] += k
    jn.size_bytes += k
    jn._writable = True
    if jn._first[last] < 0:
        jn._first[last] = first
    if jn._cur == _IN_BATCH:
        jn._cur = _NONE
    elif jn._cur == last and jn._cur_next < 0:
        jn._cur_next = first
    jn.pending = 0
    jn._n = 0
    jn._steps = 0
    jn._es[_SINCE] = -1
    jn._es[_RETRY] = 0
    return True


def _seal(jn):
    b = jn._batch
    n = jn._n
    b[0] = _MAGIC
    _put16(b, 1, n)
    _put32(b, 15, jn._es[_AGE])
    end = _HDR + n
    _sums(b, 0, end, jn._ck)
    _put16(b, end, jn._ck[0])
    _put16(b, end + 2, jn._ck[1])
    return end + 4


def _new_part(jn):
    # past every name seen, so a file that could not be removed is never reused
    if jn._top < 0:
        ident = 0
    else:
        ident = jn._top + 1
        if jn._es[_AGE] >= _DAY_MS or ident % _PARTS == 0:
            ident = (ident // _PARTS + (1 if ident % _PARTS else 0)) * _PARTS
        if ident >= _DAYS * _PARTS:
            ident = 0
    jn._top = ident
    if ident % _PARTS == 0:
        jn._es[_AGE] = 0
    if jn._nseg == _MAX_SEGS:
        _drop_oldest(jn)
    n = jn._nseg
    jn._id[n] = ident
    jn._first[n] = -1
    jn._size[n] = 0
    jn._end[n] = 0
    jn._nseg = n + 1
    jn._writable = True


def _drop_oldest(jn):
    try:
        _module("journal_boot").drop(jn, 0)
    finally:
        jn._done_with("journal_boot")
