# The step journal's state, boot scan and part removal (journal.py): imported for the
# boot and for a drop, and dropped from sys.modules right after. Functions take the
# Journal as jn.
from array import array

import journal_read as _R
from journal import _add29, _copy, _u29

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


# journal.py's constants, private here (tests/test_firmware_units.py checks the copies)
_SEQ_SKIP = const(48)  # = _BATCH_EVENTS: sequence numbers skipped at boot
_STEP_SKIP = const(12)  # = _BATCH_STEPS: step numbers skipped at boot

_MASK = const(0x1FFFFFFF)
_HDR = const(19)
_MAX_SEGS = const(48)
_AGE = const(6)  # writer state slots
_CAP = const(10)
_SEG_MIN = const(2048)
_SEG_MAX = const(32768)
_BATCH_BYTES = const(640)
_BUF = const(_HDR + _BATCH_BYTES + 4 + 21)
_PARTS = const(1000)
_AGE_CAP = const(172800000)
_SEQ = const(0)
_STEP = const(1)
_T = const(2)
_PREV = const(5)
_NONE = const(-2)


def setup(jn, path_prefix, fs, opener, limit_bytes):
    """Journal.__init__ after its log settings: the journal's state, then the boot
    scan (boot()); what fails in the scan turns the journal off, with one line."""
    jn._fs = fs
    jn._open = opener
    cut = path_prefix.rfind("/")
    jn._dir = path_prefix[:cut] if cut >= 0 else ""
    jn._base = path_prefix[cut + 1:]
    jn.limit = max(limit_bytes, 2 * _SEG_MIN)
    jn.refused = 0  # events append() could not take
    jn._id = array("i", [0] * _MAX_SEGS)  # day * 1000 + part, oldest first
    jn._first = array("i", [0] * _MAX_SEGS)  # seq of the first frame, -1 unreadable
    jn._size = array("i", [0] * _MAX_SEGS)  # bytes on flash
    jn._end = array("i", [0] * _MAX_SEGS)  # bytes trusted for reading
    jn._nseg = 0
    jn._top = -1  # highest part name seen
    jn.size_bytes = 0  # bytes of the journal's files
    jn._writable = False  # the newest part ends cleanly: frames may follow
    # writer state: the decoder's at the batch's end, the writer's clocks, a part's cap
    cap = max(_SEG_MIN, min(_SEG_MAX, jn.limit // 32))
    jn._es = array("i", [0, 0, 0, 0, 0, 0, 0, -1, -1, 0, cap])
    jn._ck = array("i", [0, 0])
    jn._batch = bytearray(_BUF)
    jn._n = 0  # body bytes in the batch
    jn.pending = 0  # events in the batch (RAM, not yet on flash)
    jn._steps = 0
    # what the boot found, for the device (plain values: they never change after)
    jn.skipped_seq = 0  # sequence numbers left unused before next_seq: 0 or SEQ_SKIP
    jn.skipped_steps = 0  # step numbers left unused up to last_step: 0 or STEP_SKIP
    jn.usable = True  # False when opening failed: the journal then writes nothing
    # journal_read while loaded (Journal.__init__ set _rd), and its buffers (attach)
    jn._ds = jn._rbuf = jn._rmv = jn._hb = jn._hmv = jn._rhdr = None
    jn._pkt = None
    jn.read_error = False  # the last read() could not look (memory, I/O)
    jn._rpath = ""  # path of the part last read, and its name
    jn._rpath_id = -1
    jn._cur = _NONE  # what the reader holds: a part's frame, the batch, nothing
    jn._cur_off = 0  # that frame's offset in its file
    jn._cur_next = -1  # seq of the next frame in the same part, -1 none known
    jn._cur_pos = 0  # decoding position in the frame
    jn._boot_drops = 0  # parts the boot dropped; -1 after the boot (it speaks in one line)
    try:
        boot(jn)
    except Exception as e:  # a journal must never stop a boot
        jn.usable = False  # and writes nothing it does not understand
        _say_boot(jn, "unusable, not written: %r" % e)
    finally:
        jn.release()
    jn._boot_drops = -1
    if jn.boot_line is None:  # logged already
        jn.boot_line = ""


def boot(jn):
    _R.attach(jn)  # the scan checks frames in the reader's buffers
    notes: list = []
    ids = _list(jn, notes)
    while len(ids) > _MAX_SEGS - 1:  # room for the part a boot may start
        _remove_quiet(jn, ids.pop(0), notes)
    for ident in ids:
        _add(jn, ident)
        jn._top = ident
    newest = jn._nseg - 1
    found = False
    end = 0
    i = newest
    while i >= 0:
        end, found = _scan(jn, i)
        if found:
            jn._end[i] = end
            break
        i -= 1
    torn = 0
    if newest >= 0:
        torn = jn._size[newest] - (end if found and i == newest else 0)
    jn._writable = found and i == newest and torn == 0 and end < jn._es[_CAP]
    bad = 0
    for i in range(jn._nseg):
        if jn._first[i] < 0:
            bad += 1
    st = jn._es
    jn.skipped_seq = _SEQ_SKIP if found else 0
    jn.skipped_steps = _STEP_SKIP if found else 0
    if found:
        st[_SEQ] = _add29(st[_SEQ], _SEQ_SKIP)
        st[_STEP] = min(st[_STEP], _MASK - _STEP_SKIP) + _STEP_SKIP
    else:
        for k in range(6):
            st[k] = 0
    st[_T] = 0
    st[_PREV] = 0
    while jn.size_bytes + _HDR + 4 > jn.limit and jn._nseg > 1:
        # over the bound: what cannot be read goes before the oldest days
        at = 0
        for k in range(jn._nseg):
            if jn._first[k] < 0:
                at = k
                break
        drop(jn, at)
    jn._begin(st[_SEQ])
    ok = jn._commit()
    line = "%d parts %d B seq %d..%d step %d" % (
        jn._nseg, jn.size_bytes, jn.oldest_seq, st[_SEQ], st[_STEP])
    if torn:
        line += " torn %d B" % torn
    if bad:
        line += " unreadable %d" % bad
    if jn._boot_drops:
        line += " dropped %d" % jn._boot_drops
    for note in notes:
        line += " " + note
    if not ok:
        line += " not writable"
    _say_boot(jn, line)


def _list(jn, notes):
    base = jn._base
    ids: list = []
    try:
        names = jn._fs.listdir(jn._dir) if jn._dir else jn._fs.listdir()
    except OSError:
        notes.append("no dir")
        return ids
    for name in names:
        rest = name[len(base) + 1:]
        if (len(name) != len(base) + 10 or not name.startswith(base)
                or name[len(base)] != "." or rest[5] != "."):
            continue
        day = rest[:5]
        part = rest[6:]
        if day.isdigit() and part.isdigit():
            ids.append(int(day) * _PARTS + int(part))
    ids.sort()
    return ids


def _remove_quiet(jn, ident, notes):
    jn._top = max(jn._top, ident)
    try:
        jn._fs.remove(jn._path(ident))
        jn._boot_drops += 1
    except OSError:
        notes.append("stuck " + jn._path(ident))


def _add(jn, ident):
    n = jn._nseg
    jn._id[n] = ident
    jn._first[n] = -1
    jn._nseg = n + 1
    path = jn._path(ident)
    try:
        info = jn._fs.stat(path)
        size = 0 if info[0] & 0x4000 else info[6]
    except OSError:
        size = 0
    jn._size[n] = size
    jn._end[n] = size
    jn.size_bytes += size
    if size == 0:
        return
    try:
        f = jn._open(path, "rb")
        try:
            if _R.frame(jn, f, 0):
                jn._first[n] = _u29(jn._rbuf, 3)
        finally:
            f.close()
    except OSError:
        pass


def _scan(jn, i):
    # Walk part i's frames: (end of the valid ones, found any); leaves the state after
    # its last frame in the writer state.
    if jn._first[i] < 0:
        return 0, False
    pos = 0
    found = False
    try:
        f = jn._open(jn._path(jn._id[i]), "rb")
        try:
            while True:
                k = _R.frame(jn, f, pos)
                if not k or not _R.run_frame(jn, jn._rbuf, k - 4):
                    break
                found = True
                _copy(jn._es, 0, jn._ds, 0, 6)
                jn._es[_AGE] = min(_u29(jn._rbuf, 15), _AGE_CAP)
                pos += k
        finally:
            f.close()
    except OSError:
        pass
    return pos, found


def drop(jn, at):
    path = jn._path(jn._id[at])
    gone = "dropped"
    try:
        jn._fs.remove(path)
    except OSError:
        gone = "forgot unremovable"
    if jn._boot_drops >= 0:  # at boot: counted in its line
        jn._boot_drops += 1
    else:
        jn._log("jrn", "%s %s" % (gone, path))
    jn.size_bytes -= jn._size[at]
    n = jn._nseg - 1
    for i in range(at, n):
        jn._id[i] = jn._id[i + 1]
        jn._first[i] = jn._first[i + 1]
        jn._size[i] = jn._size[i + 1]
        jn._end[i] = jn._end[i + 1]
    jn._nseg = n
    jn._cur = _NONE


def _say_boot(jn, text):
    # the boot's one line: logged now, or kept in boot_line for the device to log
    if jn.boot_line is None:
        jn._log("jrn", text)
    else:
        jn.boot_line = text
