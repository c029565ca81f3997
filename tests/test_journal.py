"""The step journal (firmware/journal.py).

What goes in comes back out byte for byte (walks, the real detector's events, random
streams); a power cut at any byte or operation of a write leaves every earlier frame and
none of the cut one; damaged journals open as their valid part with one log line; the
size bound drops the oldest days first; sequence and step numbers carry on across
reboots and are never used twice; a 10-hour walk with no central reads back whole. The
same code runs under the micropython binary: append() and due() allocate nothing
(heap_lock), and a real-file run there writes the very bytes CPython writes.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import fw_fakes as F  # noqa: E402
import journal as J  # noqa: E402
import journal_fs as JF  # noqa: E402
import journal_gen as JG  # noqa: E402
import protocol as FP  # noqa: E402

from host_tools.gait.engine import micropython_binary  # noqa: E402
from tests.mpy import run_micropython  # noqa: E402
from tests.no_memory import no_memory_for  # noqa: E402

MASK = 0x1FFFFFFF
MPY_PATH = [str(FIRMWARE), str(TESTS)]


class Lines:
    """A log callable that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, tag: str, text: str = "") -> None:
        self.lines.append(f"{tag} {text}")


def open_j(fs, log=None, limit=J._LIMIT_BYTES, prefix="journal"):
    return J.Journal(prefix, log if log is not None else Lines(), fs=fs, opener=fs.open,
                     limit_bytes=limit)


class Clock:
    def __init__(self, ms: int = 0) -> None:
        self.ms = ms


def feed(j, events, clock, per_event_ms=370):
    """Append events as the device would, writing whenever due() says so."""
    for seq, pkt in events:
        assert j.append(seq, pkt), seq
        clock.ms += per_event_ms
        if j.due(clock.ms):
            assert j.flush(clock.ms)


def mismatches(j, events):
    out = bytearray(20)
    bad = []
    for seq, pkt in events:
        if not j.read(seq, out) or bytes(out) != pkt:
            bad.append(seq)
    return bad


def mark_frame(seq, step, age=0):
    """A frame with no events: what a boot writes (here: to start near a wrap)."""
    hdr = bytearray(19)
    hdr[0] = 0x4A
    struct.pack_into("<IIII", hdr, 3, seq, step, 0, age)
    ck = [0, 0]
    J._sums(hdr, 0, 19, ck)
    return bytes(hdr) + struct.pack("<HH", *ck)


def walk_events(n_steps, seed=1, seq=0, step=0, **kw):
    w = JG.Walk(seed=seed, seq=seq, step=step, **kw)
    out: list = []
    w.start(out)
    w.steps(n_steps, out)
    return out


# ---- format basics ----


def test_kinds_and_skips_match_protocol_and_batch():
    assert J._FORMAT == FP._EVENT_FORMAT
    assert (J._KIND_STRIKE, J._KIND_STEP, J._KIND_LOAD, J._KIND_START) == (
        FP._KIND_STRIKE, FP._KIND_STEP, FP._KIND_LOAD, FP._KIND_START)
    # a reboot skips at least what an unwritten batch can hold
    assert J._SEQ_SKIP >= J._BATCH_EVENTS and J._STEP_SKIP >= J._BATCH_STEPS
    assert J._SOFT_BYTES + 4 * 21 <= J._BATCH_BYTES
    assert J._FLUSH_MS <= 10000 and J._DAY_MS < 1 << 29 and J._LIMIT_BYTES < 1 << 29


def test_the_frame_writer_shares_the_journals_constants():
    import journal_write as W

    for name in ("_MAGIC", "_HDR", "_MAX_SEGS", "_PARTS", "_DAYS", "_NONE", "_IN_BATCH"):
        assert getattr(W, name) == getattr(J, name), name


def test_a_write_without_memory_for_its_code_waits_in_ram():
    fs = JF.FlashFS()
    j = J.Journal("journal", lambda *a: None, fs=fs, opener=fs.open)
    pkt = bytearray(20)
    FP.pack_start(pkt, j.next_seq, 0, 100, 0, 0)
    assert j.append(j.next_seq, pkt)
    sys.modules.pop("journal_write", None)
    with no_memory_for("journal_write"):
        assert not j.flush(6000) and j.pending == 1
    assert not j.due(7000)  # a failed write waits FLUSH_MS before the next try
    assert j.due(6000 + J._FLUSH_MS) and j.flush(6000 + J._FLUSH_MS) and j.pending == 0
    assert "journal_write" not in sys.modules  # dropped after the write


def test_opening_without_memory_for_the_boot_code_raises_and_leaves_nothing_loaded():
    # app.py then boots without a journal; the flash is not touched
    fs = JF.FlashFS()
    sys.modules.pop("journal_boot", None)
    with no_memory_for("journal_boot"):
        with pytest.raises(MemoryError):
            open_j(fs)
    assert "journal_boot" not in sys.modules and "journal_read" not in sys.modules
    assert fs.files == {}
    j = open_j(fs)  # with the memory there, the same flash opens
    assert j.usable and "journal_boot" not in sys.modules


def test_walk_round_trip_is_byte_exact_and_compact():
    fs = JF.FlashFS()
    j = open_j(fs)
    events = walk_events(3000, seed=3)
    feed(j, events, Clock())
    assert mismatches(j, events[-40:]) == []  # some still in the RAM batch
    assert j.flush(10**6)
    j2 = open_j(fs.reboot())
    assert mismatches(j2, events) == []
    steps = sum(1 for _, p in events if p[1] == FP._KIND_STEP)
    per_step = (fs.total() - 23) / steps  # less the boot mark frame
    # three events in less than two raw packets' worth of flash
    assert per_step < 2 * 20, per_step
    out = bytearray(20)
    assert not j2.read(events[0][0] - 1 & MASK, out)
    assert not j2.read(events[-1][0] + 1, out)


def _detector_events(strides):
    import gaitsynth

    trace = gaitsynth.make(gaitsynth.Walk(strides_ms=strides, noise=30.0, seed=4))
    dev, _ble, _fs = F.build(trace.reshape(-1).tolist())
    dev.run()
    ring = dev.ring
    out = []
    buf = bytearray(20)
    for seq in range(ring.head - ring.count, ring.head):
        ring.copy(seq, buf)
        out.append((seq, bytes(buf)))
    return out, dev.steps


def test_real_detector_events_round_trip():
    strides = [1050.0 + 40 * ((i * 7) % 5) for i in range(150)]
    events, steps = _detector_events(strides)
    assert steps > 140 and len(events) > 3 * 140
    fs = JF.FlashFS()
    j = open_j(fs)
    feed(j, events, Clock(), per_event_ms=360)
    assert j.flush(10**6)
    j2 = open_j(fs.reboot())
    assert mismatches(j2, events) == []
    assert (fs.total() - 23) / steps < 2 * 20
    assert j.last_step == steps  # the journal's step number is the device's


# ---- random streams ----

U32 = st.integers(0, 0xFFFFFFFF)


class Model:
    """What the journal should hold: flushed events, the batch, the numbers."""

    def __init__(self):
        self.flashed: dict[int, bytes] = {}
        self.batch: dict[int, bytes] = {}
        self.seq = 0
        self.step = 0
        self.t = 0
        self.prev = None  # (strike, stance)
        self.flushed_seq = 0
        self.flushed_step = 0

    def take(self, seq, pkt):
        self.batch[seq] = pkt
        self.seq = (seq + 1) & MASK
        if pkt[0] == 1:
            kind = pkt[1]
            u = struct.unpack_from("<III", pkt, 4)
            if kind == FP._KIND_STEP:
                if u[0] < 1 << 29:
                    self.step = u[0]
                if u[1] < 1 << 29:
                    self.t = u[1]
                    self.prev = (u[1], struct.unpack_from("<H", pkt, 12)[0])
                else:
                    self.prev = None
            elif kind == FP._KIND_STRIKE and u[1] < 1 << 29:
                self.t = u[1]
            elif kind == FP._KIND_START:
                if u[0] < 1 << 29:
                    self.step = u[0]
                self.t = 0
                self.prev = None

    def flushed(self):
        self.flashed.update(self.batch)
        self.batch = {}
        self.flushed_seq, self.flushed_step = self.seq, self.step

    def rebooted(self, j):
        self.batch = {}
        self.seq = (self.flushed_seq + J._SEQ_SKIP) & MASK
        self.step = min(self.flushed_step, MASK - J._STEP_SKIP) + J._STEP_SKIP
        self.t = 0
        self.prev = None
        assert j.next_seq == self.seq and j.last_step == self.step
        self.flushed_seq, self.flushed_step = self.seq, self.step  # the boot mark


def _draw_packet(data, m: Model, seq: int) -> bytes:
    b = bytearray(20)
    kind = data.draw(st.sampled_from(["strike", "step", "load", "start", "exercise", "raw",
                                      "reseq"]))
    follows = data.draw(st.booleans()) or data.draw(st.booleans())
    step = (m.step + 1) if follows else data.draw(U32)
    near = data.draw(st.integers(0, 70000))
    t = (m.t + near) & MASK if follows else data.draw(U32)
    if kind == "strike":
        detect = (t + data.draw(st.sampled_from([0, 30, 255, 256, 65535, 65536]))) & MASK
        FP.pack_strike(b, seq, step & 0xFFFFFFFF, t, detect if follows else data.draw(U32))
        if data.draw(st.integers(0, 9)) == 0:
            b[17] = 1  # a non-zero tail byte
    elif kind == "step":
        stance = data.draw(st.integers(0, 0xFFFF))
        if follows and m.prev and data.draw(st.booleans()):
            stride = (t - m.prev[0]) & MASK
            swing = (stride - m.prev[1]) & MASK
            if stride > 0xFFFF or swing > 0xFFFF:
                stride = swing = 0
        else:
            stride = data.draw(st.integers(0, 0xFFFF))
            swing = data.draw(st.sampled_from([0, stride, data.draw(st.integers(0, 0xFFFF))]))
            if data.draw(st.booleans()):
                stride = swing = 0
        struct.pack_into("<BBHIIHHHH", b, 0, 1, FP._KIND_STEP, seq & 0xFFFF, step & 0xFFFFFFFF,
                         t, stance, swing, stride, data.draw(st.integers(0, 0xFFFF)))
    elif kind == "load":
        lstep = m.step if follows else data.draw(U32)
        h = data.draw(st.integers(0, 1100))
        a = data.draw(st.integers(0, 1100))
        f = data.draw(st.sampled_from([1000 - h - a, 999 - h - a, 997 - h - a, 996 - h - a, 0]))
        f = max(0, min(0xFFFF, f))
        FP.pack_load(b, seq, lstep & 0xFFFFFF, data.draw(st.integers(0, 5)),
                     *data.draw(st.tuples(*[st.integers(0, 0xFFFF)] * 3)), h, a, f)
    elif kind == "start":
        FP.pack_start(b, seq, data.draw(U32) if not follows else m.step, 100, 0, 0)
    elif kind == "exercise":
        b[:] = data.draw(st.binary(min_size=20, max_size=20))
        b[0], b[1] = 1, data.draw(st.integers(0x10, 0x13))
        b[2], b[3] = seq & 0xFF, (seq >> 8) & 0xFF
    elif kind == "raw":
        b[:] = data.draw(st.binary(min_size=20, max_size=20))
    else:  # a known kind whose 16-bit sequence number does not match
        FP.pack_strike(b, seq + 1, step & 0xFFFFFFFF, t, t)
    return bytes(b)


def _check_reads(j, m: Model, fs, limit):
    out = bytearray(20)
    oldest = j.oldest_seq
    span = (j.next_seq - oldest) & MASK
    for seq, pkt in list(m.flashed.items()) + list(m.batch.items()):
        if (seq - oldest) & MASK >= span:  # dropped with its day
            assert not j.read(seq, out)
            continue
        assert j.read(seq, out), seq
        assert bytes(out) == pkt, seq
    assert fs.total() <= limit


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.data())
def test_random_streams_come_back_exact(data):
    limit = data.draw(st.sampled_from([4096, 8192, J._LIMIT_BYTES]))
    fs = JF.FlashFS()
    m = Model()
    if data.draw(st.booleans()):  # a journal whose numbers are about to wrap
        m.flushed_seq = (1 << 29) - data.draw(st.integers(1, 300))
        m.flushed_step = data.draw(st.sampled_from([0, 5, (1 << 29) - 3]))
        fs.files["journal.00000.000"] = bytearray(mark_frame(m.flushed_seq, m.flushed_step))
        j = open_j(fs, limit=limit)
        m.rebooted(j)
    else:
        j = open_j(fs, limit=limit)
    clock = 0
    for _ in range(data.draw(st.integers(1, 160))):
        op = data.draw(st.sampled_from(["ev"] * 12 + ["gap", "tick", "flush", "reboot"]))
        if op in ("ev", "gap"):
            seq = m.seq
            if op == "gap":
                seq = (seq + data.draw(st.sampled_from([1, 2, 47, 1 << 20]))) & MASK
            pkt = _draw_packet(data, m, seq)
            if j.append(seq, pkt):
                m.take(seq, pkt)
        elif op == "tick":
            clock += data.draw(st.integers(0, 8000))
            if j.due(clock):
                assert j.flush(clock)
                m.flushed()
        elif op == "flush":
            assert j.flush(clock)
            m.flushed()
        else:
            fs = fs.reboot()
            log = Lines()
            j = open_j(fs, log, limit=limit)
            assert len(log.lines) == 1, log.lines
            m.rebooted(j)
        if data.draw(st.integers(0, 9)) == 0:
            _check_reads(j, m, fs, limit)
    _check_reads(j, m, fs, limit)
    assert j.flush(clock)
    m.flushed()
    fs = fs.reboot()
    j = open_j(fs, limit=limit)
    m.rebooted(j)
    _check_reads(j, m, fs, limit)


# ---- power cuts ----


class RecFS(JF.FlashFS):
    """FlashFS that records where each write and remove falls in bytes and operations."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.timeline: list[tuple] = []

    def remove(self, path):
        self.timeline.append(("remove", path, self.written, self.ops))
        super().remove(path)

    def open(self, path, mode="r"):
        f = super().open(path, mode)
        if f.writing:
            rec = self

            class _Rec:
                def write(self, data):
                    rec.timeline.append(("write", path, rec.written, rec.written + len(data),
                                         rec.ops))
                    return f.write(data)

                def close(self):
                    f.close()

            return _Rec()
        return f


LIMIT_SMALL = 4096


def _scenario(fs, log, n_steps=170, frames=None):
    """Boot, walk, write when due: the frames (events, next_seq, last_step) in write order."""
    j = open_j(fs, log, limit=LIMIT_SMALL)
    if frames is not None:
        frames.append(([], j.next_seq, j.last_step))
    events = walk_events(n_steps, seed=9, seq=j.next_seq, step=j.last_step)
    clock = Clock()
    batch: list = []
    for seq, pkt in events:
        if fs.dead:
            break
        j.append(seq, pkt)
        batch.append((seq, pkt))
        clock.ms += 370
        if j.due(clock.ms) and j.flush(clock.ms) and frames is not None:
            frames.append((batch, j.next_seq, j.last_step))
            batch = []
    return events


def _reference():
    fs = RecFS()
    frames: list = []
    events = _scenario(fs, Lines(), frames=frames)
    writes = [e for e in fs.timeline if e[0] == "write"]
    assert len(writes) == len(frames)
    assert any(e[0] == "remove" for e in fs.timeline), "the scenario must reach the bound"
    assert len({w[1] for w in writes}) >= 3, "and roll to new parts"
    return fs, frames, writes, events


def _expect(frames, writes, timeline, done_write, done_remove):
    removed = {e[1] for e in timeline if e[0] == "remove" and done_remove(e)}
    held: dict[int, bytes] = {}
    seq = step = 0
    found = False
    for (evs, nseq, nstep), w in zip(frames, writes, strict=True):
        if not done_write(w):
            break
        found = True
        seq, step = nseq, nstep
        if w[1] not in removed:
            held.update(evs)
    if found:
        seq, step = (seq + J._SEQ_SKIP) & MASK, step + J._STEP_SKIP
    return held, seq, step


def _check_cut(fs, events, held, seq, step):
    log = Lines()
    fs2 = fs.reboot()
    j = open_j(fs2, log, limit=LIMIT_SMALL)
    assert len(log.lines) == 1 and "unusable" not in log.lines[0], log.lines
    out = bytearray(20)
    for s, pkt in events:
        if s in held:
            assert j.read(s, out) and bytes(out) == pkt, s
        else:
            assert not j.read(s, out), s  # nothing of a cut batch, nothing dropped
    assert (j.next_seq, j.last_step) == (seq, step)
    # it goes on from there: new events, a write, another reboot
    more = walk_events(5, seed=2, seq=j.next_seq, step=j.last_step)
    feed(j, more, Clock())
    assert j.flush(10**6)
    j3 = open_j(fs2.reboot(), limit=LIMIT_SMALL)
    assert mismatches(j3, more) == []
    assert j3.next_seq == (more[-1][0] + 1 + J._SEQ_SKIP) & MASK
    assert fs2.total() <= LIMIT_SMALL


def test_power_cut_at_every_byte_of_a_batch():
    ref, frames, writes, events = _reference()
    # every byte of the boot mark, of the first batch, of the first write to a new part and
    # of the first write that had to drop a day; every 5th byte elsewhere
    first_new_part = next(w for w, p in zip(writes[1:], writes, strict=False) if w[1] != p[1])
    first_drop = next(e for e in ref.timeline if e[0] == "remove")
    after_drop = next(w for w in writes if w[2] >= first_drop[2])
    exhaustive = set()
    for w in (writes[0], writes[1], first_new_part, after_drop):
        exhaustive.update(range(w[2], w[3] + 1))
    cuts = sorted(exhaustive | set(range(0, writes[-1][3] + 1, 5)))
    for k in cuts:
        fs = JF.FlashFS(cut_byte=k)
        _scenario(fs, Lines())
        held, seq, step = _expect(frames, writes, ref.timeline,
                                  lambda w, k=k: w[3] <= k, lambda e, k=k: e[2] <= k)
        _check_cut(fs, events, held, seq, step)
    assert len(cuts) > 600


@pytest.mark.parametrize("junk", [b"\xff" * 9, b"\x00" * 40, b"J\x10\x00" + b"\x00" * 30])
def test_power_cut_leaving_junk_after_the_torn_bytes(junk):
    ref, frames, writes, events = _reference()
    for k in range(writes[1][2], writes[2][3] + 1):
        fs = JF.FlashFS(cut_byte=k, junk=junk)
        _scenario(fs, Lines())
        held, seq, step = _expect(frames, writes, ref.timeline,
                                  lambda w, k=k: w[3] <= k, lambda e, k=k: e[2] <= k)
        _check_cut(fs, events, held, seq, step)


def test_power_cut_at_every_operation():
    ref, frames, writes, events = _reference()
    for m in range(ref.ops + 1):
        fs = JF.FlashFS(cut_op=m)
        _scenario(fs, Lines())
        held, seq, step = _expect(frames, writes, ref.timeline,
                                  lambda w, m=m: w[4] < m, lambda e, m=m: e[3] < m)
        _check_cut(fs, events, held, seq, step)


# ---- reboots ----


def test_reboot_never_reuses_a_number_a_central_may_have_seen():
    fs = JF.FlashFS()
    j = open_j(fs)
    assert (j.next_seq, j.last_step) == (0, 0)
    events = walk_events(30, seed=5)
    clock = Clock()
    feed(j, events, clock)
    assert j.flush(clock.ms)
    # more steps that never reach flash: a central may have had them live
    lost = walk_events(2, seed=6, seq=j.next_seq, step=j.last_step)[1:]
    for seq, pkt in lost:
        assert j.append(seq, pkt)
    top_seq, top_step = lost[-1][0], j.last_step
    for _ in range(3):  # power cut, reboot, power cut again before anything is written
        fs = fs.reboot()
        j = open_j(fs)
        assert (j.next_seq - top_seq) & MASK in range(1, J._SEQ_SKIP + 1)
        assert top_step < j.last_step <= top_step + J._STEP_SKIP
        top_seq, top_step = j.next_seq, j.last_step
    assert mismatches(j, events) == []
    out = bytearray(20)
    assert not any(j.read(s, out) for s, _ in lost)
    # the device carries on counting from the journal: START, then the next step numbers
    more = walk_events(3, seed=7, seq=j.next_seq, step=j.last_step)
    assert struct.unpack_from("<I", more[0][1], 4)[0] == j.last_step
    feed(j, more, clock)
    assert j.last_step == top_step + 3


def test_day_rolls_with_device_time_and_continues_after_reboot():
    fs = JF.FlashFS()
    j = open_j(fs)
    clock = Clock()
    feed(j, walk_events(20, seed=1), clock)
    j.flush(clock.ms)
    for _ in range(23):  # 23 hours of device time, an hour at a time
        clock.ms += 3600 * 1000
        assert not j.due(clock.ms)
    feed(j, walk_events(2, seed=3, seq=j.next_seq, step=j.last_step), clock)
    assert j.flush(clock.ms)  # a write keeps the day's age on flash
    assert len(fs.files) == 1
    fs = fs.reboot()
    j = open_j(fs)
    clock = Clock(5000)  # a new boot: the ms clock starts again
    j.due(clock.ms)
    clock.ms += 3600 * 1000
    j.due(clock.ms)
    feed(j, walk_events(5, seed=2, seq=j.next_seq, step=j.last_step), clock)
    assert j.flush(clock.ms)
    names = sorted(fs.files)
    assert names[0].startswith("journal.00000.") and names[-1] == "journal.00001.000", names


def _walk_days(fs, days, steps_per_day, limit):
    j = open_j(fs, limit=limit)
    clock = Clock()
    log: list = []
    for day in range(days):
        events = walk_events(steps_per_day, seed=day + 1, seq=j.next_seq, step=j.last_step)
        feed(j, events, clock)
        assert j.flush(clock.ms)
        log.append(events)
        assert fs.total() <= limit
        clock.ms += 22 * 3600 * 1000  # the rest of the day, idle
        j.due(clock.ms)
        clock.ms += 2 * 3600 * 1000
        j.due(clock.ms)
    return j, log


def test_size_bound_drops_the_oldest_days_first():
    limit = 24 * 1024
    fs = JF.FlashFS()
    j, days = _walk_days(fs, 6, 300, limit)  # about 7 KB a day
    names = sorted(fs.files)
    kept_days = sorted({int(n.split(".")[1]) for n in names})
    assert kept_days == list(range(kept_days[0], 6)) and kept_days[0] >= 2
    assert j.dropped in (kept_days[0], kept_days[0] + 1)
    if names[0].endswith(".000"):
        assert j.dropped == kept_days[0]  # whole days only
    out = bytearray(20)
    for day, events in enumerate(days):
        if day < kept_days[0]:
            assert not any(j.read(s, out) for s, _ in events)
        elif day > kept_days[0]:
            assert mismatches(j, events) == []
    assert j.oldest_seq == min(s for s, _ in days[kept_days[0]] if j.read(s, out))
    j2 = open_j(fs.reboot(), limit=limit)
    assert j2.dropped == j.dropped
    assert mismatches(j2, days[-1]) == []


def test_a_day_larger_than_the_bound_drops_its_own_oldest_parts():
    limit = 8192
    fs = JF.FlashFS()
    j = open_j(fs, limit=limit)
    events = walk_events(1500, seed=4)
    feed(j, events, Clock())
    assert j.flush(10**6)
    assert fs.total() <= limit and j.dropped == 1
    assert all(n.startswith("journal.00000.") for n in fs.files)
    tail = [e for e in events if (e[0] - j.oldest_seq) & MASK < 1 << 28]
    assert len(tail) > 200 and mismatches(j, tail) == []


# ---- damaged journals ----


def _good_journal(n_steps=400, limit=J._LIMIT_BYTES):
    fs = JF.FlashFS()
    j = open_j(fs, limit=limit)
    events = walk_events(n_steps, seed=8)
    feed(j, events, Clock())
    assert j.flush(10**6)
    return fs, events


def _open_damaged(fs, limit=J._LIMIT_BYTES):
    log = Lines()
    j = open_j(fs, log, limit=limit)
    assert len(log.lines) == 1 and log.lines[0].startswith("jrn "), log.lines
    assert "unusable" not in log.lines[0]
    return j, log.lines[0]


def _valid_prefix(j, events):
    """Events read back must be exact and form a prefix of what was written."""
    out = bytearray(20)
    got = [j.read(s, out) and bytes(out) == p for s, p in events]
    n = got.index(False) if False in got else len(got)
    assert not any(got[n:]), "a hole in what was read back"
    return n


def _still_works(j, fs, limit=J._LIMIT_BYTES):
    more = walk_events(20, seed=11, seq=j.next_seq, step=j.last_step)
    feed(j, more, Clock())
    assert j.flush(10**6)
    j2 = open_j(fs.reboot(), limit=limit)
    assert mismatches(j2, more) == []


def test_garbage_file_opens_empty():
    fs, _ = _good_journal()
    name = sorted(fs.files)[0]
    rnd = random.Random(1)
    fs.files[name] = bytearray(rnd.randrange(256) for _ in range(len(fs.files[name])))
    j, line = _open_damaged(fs)
    assert "unreadable 1" in line and (j.next_seq, j.last_step) == (0, 0)
    _still_works(j, fs)


@pytest.mark.parametrize("cut", [1, 18, 19, 200, 1001, -1])
def test_truncated_journal_keeps_its_valid_prefix(cut):
    fs, events = _good_journal()
    name = sorted(fs.files)[-1]
    del fs.files[name][cut if cut >= 0 else len(fs.files[name]) - 1:]
    j, line = _open_damaged(fs)
    n = _valid_prefix(j, events)
    assert "torn" in line
    if cut > 1000:
        assert n > 0
    _still_works(j, fs)


def test_huge_garbage_part_costs_no_valid_history():
    fs, events = _good_journal()
    rnd = random.Random(2)
    fs.files["journal.00000.007"] = bytearray(rnd.randbytes(3 << 20))
    j, line = _open_damaged(fs)
    assert mismatches(j, events) == []
    assert "journal.00000.007" not in fs.files  # dropped to meet the bound
    assert fs.total() <= J._LIMIT_BYTES
    _still_works(j, fs)


def test_journal_far_over_the_bound_is_cut_to_it_at_boot():
    fs, events = _good_journal(n_steps=1500, limit=65536)
    assert fs.total() > 30000
    j, line = _open_damaged(fs, limit=16384)
    assert "dropped" in line and fs.total() <= 16384
    assert j.dropped >= 1
    out = bytearray(20)
    kept = [s for s, _ in events if j.read(s, out)]
    assert kept and kept[-1] == events[-1][0]
    _still_works(j, fs, limit=16384)


@pytest.mark.parametrize("where", ["newest", "oldest", "only"])
def test_directory_in_place_of_a_part(where):
    if where == "only":
        fs = JF.FlashFS(dirs={"journal.00000.000"})
        events: list = []
    else:
        fs, events = _good_journal(n_steps=1000, limit=65536)
        names = sorted(fs.files)
        if where == "newest":
            fs.dirs.add(f"journal.00000.{int(names[-1][-3:]) + 1:03d}")
        else:
            del fs.files[names[0]]
            fs.dirs.add(names[0])
    j, line = _open_damaged(fs, limit=65536)
    assert "unreadable" in line
    if where == "newest":
        assert mismatches(j, events) == []
    _still_works(j, fs, limit=65536)
    assert not any(n in fs.files for n in fs.dirs)


def test_unlistable_flash_and_foreign_files():
    fs = JF.FlashFS(files={"journal.txt": b"x", "journal.1.2": b"y", "journalx00000.000": b"z",
                           "insole.json": b"{}"})
    fs.fail_listdir = True
    j, line = _open_damaged(fs)
    assert "no dir" in line
    fs.fail_listdir = False
    _still_works(j, fs)
    for name, body in (("journal.txt", b"x"), ("journal.1.2", b"y"), ("insole.json", b"{}")):
        assert fs.files[name] == body  # never touched


def test_bit_flip_in_an_old_part_loses_only_that_frame_on():
    fs, events = _good_journal(n_steps=1500, limit=65536)
    names = sorted(fs.files)
    assert len(names) >= 3
    old = fs.files[names[0]]
    old[len(old) // 2] ^= 0x04
    j, _line = _open_damaged(fs, limit=65536)
    out = bytearray(20)
    got = [j.read(s, out) and bytes(out) == p for s, p in events]
    first_bad = got.index(False)
    assert 0 < first_bad < len(got)
    # the rest of that part is unreadable; every later part reads back whole
    later = got.index(True, first_bad)
    assert all(got[later:])


def test_a_frame_of_an_unknown_record_type_ends_its_part():
    fs, events = _good_journal(n_steps=200)
    name = sorted(fs.files)[-1]
    body = bytearray([0x0E] + [0] * 20)  # a record type this version does not know
    hdr = bytearray(19)
    hdr[0] = 0x4A
    hdr[1], hdr[2] = len(body), 0
    struct.pack_into("<IIII", hdr, 3, events[-1][0] + 1, 0, 0, 0)
    frame = hdr + body
    ck = [0, 0]
    J._sums(frame, 0, len(frame), ck)
    fs.files[name] += frame + struct.pack("<HH", *ck)
    j, line = _open_damaged(fs)
    assert "torn" in line
    assert mismatches(j, events) == []
    _still_works(j, fs)


def _frame_with(body, seq, step=0):
    hdr = bytearray(19)
    hdr[0] = 0x4A
    struct.pack_into("<HIIII", hdr, 1, len(body), seq, step, 0, 0)
    frame = hdr + bytes(body)
    ck = [0, 0]
    J._sums(frame, 0, len(frame), ck)
    return frame + struct.pack("<HH", *ck)


@pytest.mark.parametrize("body", [
    [0x0E] + [0] * 20,  # a record type this version does not know
    [0x23, 0x10, 0x02, 0x20, 0x01],  # a step "derived" from no previous step
    [0x44] + [0] * 6 + [0xE8, 0xFF, 0x0F],  # shares that sum past 1000
    [0x05, 0, 0, 0, 0x20],  # a gap past the clocks
    [0x05, 1, 0],  # a record cut by the end of its frame
], ids=["unknown", "derived", "shares", "gap", "short"])
def test_a_checked_frame_that_does_not_decode_ends_its_part(body):
    fs, events = _good_journal(n_steps=200)
    name = sorted(fs.files)[-1]
    fs.files[name] += _frame_with(body, events[-1][0] + 1)
    j, line = _open_damaged(fs)
    assert "torn" in line
    assert mismatches(j, events) == []
    _still_works(j, fs)


def test_sums_match_a_plain_definition():
    rnd = random.Random(5)
    for n in (0, 1, 19, 300, 700, 4000):
        data = rnd.randbytes(n) if n != 4000 else b"\xff" * n
        s1, s2 = 1, 0
        for byte in data:
            s1 = (s1 + byte) % 65521
            s2 = (s2 + s1) % 65521
        ck = [0, 0]
        J._sums(data, 0, n, ck)
        assert ck == [s1, s2]


def test_a_file_system_that_misbehaves_at_boot_leaves_a_journal_that_writes_nothing():
    class Odd(JF.FlashFS):
        def listdir(self, path=""):
            return [7]  # not a name

    fs = Odd({"journal.00000.000": mark_frame(100, 5)})
    log = Lines()
    j = open_j(fs, log)
    assert len(log.lines) == 1 and "unusable" in log.lines[0]
    events = walk_events(3, seq=j.next_seq, step=j.last_step)
    for seq, pkt in events:
        assert j.append(seq, pkt)
    assert not j.due(0) and j.due(10**6) and not j.flush(10**6)
    assert mismatches(j, events) == []  # still served from RAM
    assert fs.files == {"journal.00000.000": bytearray(mark_frame(100, 5))}


def test_flash_that_takes_no_writes_keeps_the_batch_in_ram_and_counts_refusals():
    fs = JF.FlashFS(cut_op=0)
    log = Lines()
    j = open_j(fs, log)
    assert len(log.lines) == 1 and "not writable" in log.lines[0]
    assert j.dropped == 0 and j.oldest_seq == 0
    events = walk_events(30, seed=2)
    taken = [e for e in events if j.append(*e)]
    assert j.pending == len(taken) and j.refused == len(events) - len(taken) > 0
    assert j.oldest_seq == 0 and mismatches(j, taken) == []
    assert not j.flush(1000)
    assert len(log.lines) == 2 and "write failed" in log.lines[1]
    assert fs.files == {}


def test_appends_the_journal_refuses():
    j = open_j(JF.FlashFS())
    events = walk_events(20, seed=3, extras=False)
    for seq, pkt in events[:10]:
        assert j.append(seq, pkt)
    assert not j.append(events[3][0], events[3][1])  # behind: a number already used
    assert j.refused == 1
    # a batch holds at most _BATCH_STEPS steps
    taken = [e for e in events[10:] if j.append(*e)]
    steps_in = sum(1 for e in events[:10] + taken if e[1][1] == FP._KIND_STEP)
    assert steps_in == J._BATCH_STEPS and j.refused == 1 + len(events) - 10 - len(taken)
    assert j.flush(1000) and j.pending == 0
    assert mismatches(j, events[:10] + taken) == []
    # ... at most _BATCH_EVENTS events (compact strikes fill it by count) ...
    b = bytearray(20)
    n = 0
    while True:
        FP.pack_strike(b, j.next_seq, j.last_step + 1, 1000 + 10 * n, 1000 + 10 * n + 5)
        if not j.append(j.next_seq, b):
            break
        n += 1
    assert n == J._BATCH_EVENTS and j.due(2000)
    assert j.flush(2000)
    # ... and _BATCH_BYTES of records (foreign packets are stored whole)
    n = 0
    while j.append(j.next_seq, bytes(20)):
        n += 1
    assert n == (J._BATCH_BYTES - J._WORST) // 21 + 1 and j.due(3000)


def test_many_parts_are_trimmed_at_boot_and_the_table_rolls():
    files = {}
    for k in range(60):
        files[f"journal.00000.{k:03d}"] = mark_frame(k * 100, k)
    fs = JF.FlashFS(files)
    log = Lines()
    j = open_j(fs, log)
    assert len(log.lines) == 1 and "dropped 13" in log.lines[0]
    # the newest 47 stay (room for one more part in the table of 48)
    assert len(fs.files) == 47 and "journal.00000.012" not in fs.files
    assert j.next_seq == 59 * 100 + J._SEQ_SKIP and j.last_step == 59 + J._STEP_SKIP
    assert j.dropped == 1  # part of day 0 is gone
    events = walk_events(2700, seed=4, seq=j.next_seq, step=j.last_step)
    feed(j, events, Clock())  # two new parts: the second finds the table full
    assert j.flush(10**7)
    assert len(fs.files) == 48 and "journal.00000.013" not in fs.files
    assert "journal.00000.061" in fs.files and mismatches(j, events) == []


def test_short_reads_io_errors_and_a_part_removed_behind_its_back():
    fs, events = _good_journal(n_steps=1200, limit=65536)
    fs = fs.reboot()
    fs.short_reads = 3
    j = open_j(fs, limit=65536)
    assert mismatches(j, events) == []
    names = sorted(fs.files)
    fs.eio.add(names[1])
    j.read(events[0][0], bytearray(20))  # forget the cached frame
    out = bytearray(20)
    got = [j.read(s, out) and bytes(out) == p for s, p in events]
    assert not all(got) and got[0] and got[-1]
    del fs.files[names[2]]
    assert all(j.read(s, out) is False or bytes(out) == p for s, p in events)
    fs.eio.clear()
    j2, line = _open_damaged(fs.reboot(), limit=65536)
    assert mismatches(j2, events[-50:]) == []


# ---- values stay ESP32 small ints ----


def test_every_value_in_the_journal_stays_within_2_29():
    limit = 1 << 29
    seen = {"max": 0}
    jfiles = {J.__file__, str(FIRMWARE / "journal_read.py"), str(FIRMWARE / "journal_boot.py")}

    def check(value, where):
        if isinstance(value, int) and not isinstance(value, bool):
            seen["max"] = max(seen["max"], abs(value))
            assert -limit <= value <= limit, (where, value)

    traced = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename not in jfiles:
            return None
        traced.add(frame.f_code.co_filename)
        for name, value in frame.f_locals.items():
            check(value, (frame.f_code.co_name, name))
        if event == "return":
            check(arg, (frame.f_code.co_name, "return"))
        return tracer

    start = MASK - 200 + J._SEQ_SKIP  # the sequence numbers wrap
    fs = JF.FlashFS({"journal.00000.000": mark_frame(MASK - 200, MASK - 20)})
    events = walk_events(150, seed=12, t0=MASK - 60000)  # and the ms clock
    rnd = random.Random(3)
    stream = []
    for i, (_, pkt) in enumerate(events):
        seq = (start + i) & MASK
        b = bytearray(pkt)
        b[2], b[3] = seq & 0xFF, (seq >> 8) & 0xFF
        if i % 37 == 0:
            b = bytearray(rnd.getrandbits(8) for _ in range(20))
            b[4:8] = b"\xff\xff\xff\xff"
        stream.append((seq, bytes(b)))
    sys.settrace(tracer)
    try:
        j = open_j(fs, limit=8192)
        clock = Clock(MASK - 30000)
        for seq, pkt in stream:
            j.append(seq, pkt)
            clock.ms = (clock.ms + 1400) & MASK
            if j.due(clock.ms):
                j.flush(clock.ms)
        j.flush(clock.ms)
        j2 = open_j(fs.reboot(), limit=8192)
        bad = mismatches(j2, stream[-100:])
    finally:
        sys.settrace(None)
    assert bad == []
    for obj in (j, j2):
        for name, value in vars(obj).items():
            check(value, name)
            if hasattr(value, "typecode"):
                for v in value:
                    check(v, name)
    assert seen["max"] > 1 << 28  # the extremes were reached
    assert traced == jfiles  # writing, the boot scan and reading, all three modules


# ---- a 10-hour walk with no central ----


def test_ten_hour_walk_with_no_central_reads_back_whole(tmp_path):
    prefix = str(tmp_path / "journal")
    lines = Lines()
    j = J.Journal(prefix, lines)
    w = JG.Walk(seed=21, seq=j.next_seq, step=j.last_step)
    events: list = []
    w.start(events)
    w.steps(36000, events)
    clock = Clock()
    writes = 0
    for seq, pkt in events:
        assert j.append(seq, pkt)
        clock.ms += 366  # 3 events in 1.1 s: 36,000 steps take 11 hours
        if j.due(clock.ms):
            assert j.flush(clock.ms)
            writes += 1
    assert j.flush(clock.ms)
    size = sum(f.stat().st_size for f in tmp_path.iterdir())
    j2 = J.Journal(prefix, lines)
    assert mismatches(j2, events) == []
    assert j2.dropped == 0 and j2.oldest_seq == 0
    assert j2.last_step == 36000 + J._STEP_SKIP
    assert size <= J._LIMIT_BYTES and writes * J._FLUSH_MS <= clock.ms


# ---- the micropython binary ----

_HEAP = """
import gc, micropython
from journal import Journal
from journal_fs import FlashFS
import journal_gen as G

def locked(j, ev, i, ms, counts):
    # append and due() under heap_lock until a write is due; locals only
    n = len(ev)
    micropython.heap_lock()
    try:
        while i < n:
            s, p = ev[i]
            if j.append(s, p):
                counts[0] += 1
            i += 1
            ms += 370
            counts[1] = j.dropped + j.next_seq + j.last_step + j.pending + j.refused
            if j.due(ms):
                break
        err = None
    except MemoryError as e:
        err = e
    micropython.heap_unlock()
    return i, ms, err

if %(real)r:
    import os
    j = Journal(%(dir)r + "/journal", lambda tag, text="": None)
else:
    fs = FlashFS()
    j = Journal("journal", lambda tag, text="": None, fs=fs, opener=fs.open)
w = G.Walk(seed=5, seq=j.next_seq, step=j.last_step)
ev = []
w.start(ev)
w.steps(%(steps)d, ev)
counts = [0, 0]
i = ms = flushes = flush_alloc = flush_kept = 0
gc.collect()
gc.disable()
while i < len(ev):
    i, ms, err = locked(j, ev, i, ms, counts)
    if err is not None:
        print("ALLOCATED at", i)
        break
    before = gc.mem_alloc()
    j.flush(ms)
    flush_alloc = max(flush_alloc, gc.mem_alloc() - before)
    flushes += 1
    gc.collect()
    flush_kept = max(flush_kept, gc.mem_alloc() - before)
j.flush(ms)
print("appended", counts[0], "of", len(ev), "flushes", flushes)
print("flush_alloc", flush_alloc)
print("flush_kept", flush_kept)
out = bytearray(20)
gc.collect()
before = gc.mem_alloc()
held = 0
for k in range(600):
    if j.read(ev[k][0], out):
        held += 1
alloc = gc.mem_alloc() - before
ok = 0
for k in range(600):
    if j.read(ev[k][0], out) and bytes(out) == ev[k][1]:
        ok += 1
print("read_alloc", alloc, "reads", held, "ok", ok)
gc.collect()
before = gc.mem_alloc()
j.read(ev[len(ev) // 2][0], out)
print("jump_alloc", gc.mem_alloc() - before)
"""


@pytest.mark.parametrize("real", [False, True], ids=["flashfs", "files"])
def test_append_and_due_allocate_nothing_under_heap_lock(real, tmp_path):
    out = run_micropython(_HEAP % {"steps": 900, "real": real, "dir": str(tmp_path)},
                          path=MPY_PATH)
    assert "ALLOCATED" not in out, out
    words = dict(line.split(None, 1) for line in out.strip().splitlines())
    appended, _, total = words["appended"].split()[:3]
    assert appended == total and int(total) > 2700
    flush_alloc = int(words["flush_alloc"])
    read = words["read_alloc"].split()
    assert read[-1] == "600"  # every read came back exact
    jump = int(words["jump_alloc"])
    if real:  # the fake's own copies count too, so the figures are checked on files
        # a write loads the frame writer's code (journal_write.py, compiled from
        # source here) and drops it: the heap comes back, and no block nears 4 KB
        assert flush_alloc < 4096 and int(words["flush_kept"]) < 256
        assert jump < 1024 and int(read[0]) < 600 * 64


# The same scenario on both interpreters; it prints what it wrote and what it read.
_DIFF = """
import os
from journal import Journal
from journal_fs import FlashFS
import journal_gen as G
from journal import _sums

def digest(data):
    ck = [0, 0]
    _sums(data, 0, len(data), ck)
    return "%%d:%%d:%%d" %% (len(data), ck[0], ck[1])

def run(fs, opener, prefix, listing, content):
    lines = []
    log = lambda tag, text="": lines.append(text)
    j = Journal(prefix, log, fs=fs, opener=opener, limit_bytes=%(limit)d)
    ms = 0
    all_ev = []
    for boot in range(3):
        w = G.Walk(seed=boot + 1, seq=j.next_seq, step=j.last_step)
        ev = []
        w.start(ev)
        w.steps(%(steps)d, ev)
        for s, p in ev:
            j.append(s, p)
            ms += 370
            if j.due(ms):
                j.flush(ms)
        all_ev += ev
        if boot < 2:
            j = Journal(prefix, log, fs=fs, opener=opener, limit_bytes=%(limit)d)
    j.flush(ms)
    j = Journal(prefix, log, fs=fs, opener=opener, limit_bytes=%(limit)d)
    out = bytearray(20)
    ok = 0
    held = 0
    for s, p in all_ev:
        if j.read(s, out):
            held += 1
            if bytes(out) == p:
                ok += 1
    for line in lines:
        print("log", line)
    for name in sorted(listing()):
        print("file", name, digest(content(name)))
    print("read", held, ok, "next", j.next_seq, j.last_step, "dropped", j.dropped)

fs = FlashFS()
run(fs, fs.open, "journal", lambda: fs.listdir(), lambda n: fs.files[n])
d = %(dir)r
def body(n):
    f = open(d + "/" + n, "rb")
    b = f.read()
    f.close()
    return b
run(os, open, d + "/journal", lambda: os.listdir(d), body)
"""


def test_micropython_writes_the_bytes_cpython_writes(tmp_path):
    mp_dir, py_dir = tmp_path / "mp", tmp_path / "py"
    mp_dir.mkdir()
    py_dir.mkdir()
    args = {"limit": 16384, "steps": 400}
    out_mp = run_micropython(_DIFF % dict(args, dir=str(mp_dir)), path=MPY_PATH)
    glb: dict = {}
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(_DIFF % dict(args, dir=str(py_dir)), glb)
    out_py = buf.getvalue().replace(str(py_dir), "DIR")
    out_mp = out_mp.replace(str(mp_dir), "DIR")
    assert out_mp == out_py
    reads = [line.split() for line in out_py.splitlines() if line.startswith("read")]
    assert len(reads) == 2 and all(r[1] == r[2] and int(r[1]) > 1000 for r in reads)
    assert any("dropped" in r and r[-1] != "0" for r in reads)  # the bound was reached
    assert sorted(os.listdir(mp_dir)) == sorted(os.listdir(py_dir))


# Power cuts at every byte of the first writes, on the micropython binary: after each
# cut, what reads back must be exactly the events of the frames written whole.
_CUTS = """
from journal import Journal
from journal_fs import FlashFS
import journal_gen as G
quiet = lambda tag, text="": None

def scenario(fs, ends):
    j = Journal("journal", quiet, fs=fs, opener=fs.open)
    if ends is not None:
        ends.append((fs.written, 0, j.next_seq, j.last_step))
    w = G.Walk(seed=4, seq=j.next_seq, step=j.last_step)
    ev = []
    w.start(ev)
    w.steps(%(steps)d, ev)
    ms = 0
    n = 0
    for s, p in ev:
        if fs.dead:
            break
        j.append(s, p)
        n += 1
        ms += 370
        if j.due(ms) and j.flush(ms) and ends is not None:
            ends.append((fs.written, n, j.next_seq, j.last_step))
    return ev

ends = []
ref = FlashFS()
ev = scenario(ref, ends)
out = bytearray(20)
checked = bad = 0
for k in range(0, ends[%(frames)d][0] + 1):
    fs = FlashFS(cut_byte=k)
    scenario(fs, None)
    fs2 = fs.reboot()
    j = Journal("journal", quiet, fs=fs2, opener=fs2.open)
    whole = [e for e in ends if e[0] <= k]
    held = whole[-1][1] if whole else 0
    for i in range(len(ev)):
        got = j.read(ev[i][0], out)
        if got != (i < held) or (got and bytes(out) != ev[i][1]):
            bad += 1
    if whole:
        if (j.next_seq, j.last_step) != (whole[-1][2] + 48, whole[-1][3] + 12):
            bad += 1
    elif (j.next_seq, j.last_step) != (0, 0):
        bad += 1
    checked += 1
print("cuts", checked, "bad", bad, "frames", %(frames)d, "events", ends[%(frames)d][1])
"""


def test_power_cuts_under_micropython():
    out = run_micropython(_CUTS % {"steps": 60, "frames": 4}, path=MPY_PATH, timeout=600)
    words = out.split()
    assert words[0] == "cuts" and int(words[1]) > 500, out
    assert words[3] == "0", out
    assert int(words[7]) > 40  # the cuts reached into the fourth batch


_KILLED = """
import sys, time
from journal import Journal
import journal_gen as G
d = sys.argv[1] if len(sys.argv) > 1 else %(dir)r
j = Journal(d + "/journal", lambda tag, text="": None)
w = G.Walk(seed=%(seed)d, seq=j.next_seq, step=j.last_step)
ev = []
w.start(ev)
ms = 0
print("go", j.next_seq, j.last_step)
while True:
    for s, p in ev:
        j.append(s, p)
        ms += 370
        if j.due(ms):
            j.flush(ms)
    ev = w.steps(10)
    time.sleep_ms(2)  # a pace that keeps the journal under its bound for a while
"""


def _kill_after(code: str, seconds: float) -> None:
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(MPY_PATH)
    proc = subprocess.Popen([micropython_binary(), "-c", code], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"go")
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _expected_stream(seed, seq, step, n_events):
    w = JG.Walk(seed=seed, seq=seq, step=step)
    ev: list = []
    w.start(ev)
    while len(ev) < n_events:
        ev.extend(w.steps(10))
    return ev[:n_events]


def test_killed_micropython_process_leaves_a_whole_journal(tmp_path):
    rnd = random.Random(7)
    live = tmp_path / "flash"
    live.mkdir()
    base_seq = base_step = 0
    held_before: list = []
    for round_ in range(4):  # four kills of the same board, each at a random moment
        _kill_after(_KILLED % {"dir": str(live), "seed": round_ + 1}, rnd.uniform(0.3, 1.2))
        check = tmp_path / f"check{round_}"
        shutil.copytree(live, check)  # looked at on a copy: opening writes a boot mark
        lines = Lines()
        j = J.Journal(str(check / "journal"), lines)
        assert len(lines.lines) == 1 and "torn" not in lines.lines[0], lines.lines
        assert mismatches(j, held_before) == []  # earlier rounds are untouched
        n_new = (j.next_seq - J._SEQ_SKIP - base_seq) & MASK
        ev = _expected_stream(round_ + 1, base_seq, base_step, n_new)
        assert len(ev) > 300 and mismatches(j, ev) == []
        out = bytearray(20)
        assert not j.read(j.next_seq - 1, out)  # the skipped numbers hold nothing
        held_before += ev
        # the next boot of the board sees what this copy saw
        base_seq, base_step = j.next_seq, j.last_step


# py/map.c hash_allocation_sizes: an attribute table grows only when it is full, and a
# full or nearly full one makes every method call through the instance (j.append(),
# j.due() ...) probe most of it before the class is asked
_MAP_SIZES = (0, 2, 4, 6, 8, 10, 12, 17, 23, 29, 37, 47, 59, 73, 97, 127, 167, 223)


def test_the_journal_keeps_room_in_its_attribute_table_and_adds_nothing_after_boot():
    fs = JF.FlashFS()
    j = open_j(fs, limit=8 * 1024)  # small: writing drops parts too
    names = set(vars(j))
    table = next(s for s in _MAP_SIZES if s >= len(names))
    assert len(names) <= 0.9 * table, (len(names), table)
    events = walk_events(1500, seed=5)
    feed(j, events, Clock())
    assert j.dropped  # the bound made writes drop the oldest parts
    assert mismatches(j, events[-60:]) == []
    j.release()
    fs.dead = True  # a write that fails
    assert j.append(events[-1][0] + 1, events[-1][1]) and not j.flush(10**7)
    assert set(vars(j)) == names
