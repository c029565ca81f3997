"""The device with its step journal (firmware/device.py + firmware/journal.py), on the fake
BLE stack and the fake flash of tests/journal_fs.py.

A walk far longer than the RAM ring with no central comes back whole through one wide
BACKFILL; sequence and step numbers carry on across a power cut, and the boot START names
the numbers it skipped; a flash that takes no writes leaves the ring as the only store and
Status counts what it loses; a journal over its bound drops its oldest day, says so in
Status and GET_JOURNAL, and counts the undelivered events it took along. The no-event
sample stays allocation-free with a journal, under micropython.heap_lock().
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import fw_fakes as F  # noqa: E402
import gait  # noqa: E402
import gaitsynth  # noqa: E402
import journal_fs as JF  # noqa: E402

from host_tools.ble import protocol as HP  # noqa: E402
from tests.mpy import run_micropython  # noqa: E402

MASK = 0x1FFFFFFF


def build(samples, fs, limit=None, sink=None, clock=None):
    """An Insole with a journal on fs (journal_fs.FlashFS), as app.build() makes it."""
    from ble_insole import InsoleBLE
    from config import ConfigStore
    from device import Insole
    from journal import _LIMIT_BYTES as LIMIT_BYTES
    from journal import Journal
    from log import Log
    from pairing import PairingWindow

    log = Log(sink if sink is not None else F.LogSink())
    cfg_fs = F.MemFS()
    store = ConfigStore("insole.json", log, fs=cfg_fs, opener=cfg_fs.open)
    cfg = store.ensure_passkey(store.load(), lambda n: b"\x40\xe2\x01"[:n])
    clock = clock or F.FakeClock()
    j = Journal("journal", log, fs=fs, opener=fs.open, limit_bytes=limit or LIMIT_BYTES)
    ble = F.FakeBLE()
    radio = InsoleBLE(ble, F.UUID, log, "Test Board", passkey=cfg["passkey"],
                      window=PairingWindow(clock, log))
    dev = Insole(F.trace_adcs(samples), radio, store, cfg, log, clock, "1A2B", "Test Board",
                 battery_mv=lambda: 3750, journal=j)
    radio.open_window("power-on")
    return dev, ble


def _walk(strides: int, stride_ms: int = 1000) -> np.ndarray:
    return gaitsynth.make(gaitsynth.Walk(strides_ms=[stride_ms] * strides)).astype(np.int64)


def _flat(trace: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(trace).ravel()]


def _detector_rows(trace: np.ndarray, step_base: int = 0) -> list[tuple]:
    det = gait.GaitDetector(100)
    rows = []
    for h, a, f in trace.tolist():
        if det.feed(h, a, f) & gait.EV_STEP:
            row = det.summary()
            rows.append((row[0] + step_base,) + tuple(row[1:]))
    return rows


def _connect(ble, dev):
    ble.connect()
    dev.ble.open_window("gesture")  # the wearer opens it: new bonds only then
    assert ble.pair()  # with the passkey: Control and the events need that bond
    for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_control):
        ble.subscribe(h)


def _command(ble, dev, data: bytes) -> HP.Reply:
    assert ble.write(dev.ble.h_control, data) == 0
    dev.service()
    (reply,) = ble.take(dev.ble.h_control)
    return HP.decode_reply(reply)


def _drain(dev, ble, most: int = 200000) -> list[bytes]:
    got = []
    for _ in range(most):
        dev.service()
        if dev._tx_at[dev._slot] == dev.ring.head:
            break
    got += ble.take(dev.ble.h_event)
    return got


def _rows(packets: list[bytes]) -> list[tuple]:
    joiner = HP.StepJoiner()
    for d in packets:
        joiner.add(HP.decode_event(d))
    return joiner.rows()


def test_a_walk_far_longer_than_the_ring_comes_back_whole():
    trace = _walk(300)  # 5 min: about 900 events, 7 times the ring
    fs = JF.FlashFS()
    dev, ble = build(_flat(trace), fs)
    assert dev.ring.capacity == 128 and dev.ring.head == 1  # a new journal: the START is 0
    first = dev.ring.head - 1  # the boot START
    dev.run()
    rows = _detector_rows(trace)
    assert len(rows) > 250 and dev.ring.behind(first) > 6 * dev.ring.capacity
    assert dev.lost == 0 and dev.journal.refused == 0 and fs.total() > 5000
    _connect(ble, dev)
    r = _command(ble, dev, HP.cmd_backfill_wide(first))
    assert (r.error, r.data) == (HP.ERR_OK, {"first_seq": first, "count": dev.ring.head - first,
                                             "wide": True})
    got = _drain(dev, ble)
    assert [HP.decode_event(d).seq for d in got] == [s & 0xFFFF for s in
                                                     range(first, dev.ring.head)]
    assert _rows(got) == rows
    dev._update_status()  # the trace has ended: no second ticks any more
    status = HP.decode_status(ble.gatts_read(dev.ble.h_status))
    assert (status.lost, status.buffered, status.journal_dropped) == (0, 0, False)
    # the 16-bit form reaches the same events (here within its 32768)
    r = _command(ble, dev, HP.cmd_backfill(first))
    assert r.ok and r.data == {"first_seq": first & 0xFFFF, "count": dev.ring.head - first}
    assert _rows(_drain(dev, ble)) == rows


def test_numbers_carry_on_across_a_power_cut_and_the_boot_start_says_what_it_skipped():
    a, b = _walk(40), _walk(30)
    fs = JF.FlashFS()
    dev, ble = build(_flat(a), fs)
    _connect(ble, dev)
    done = 0
    while done < 3000 or dev.journal.pending < 3:  # cut mid-walk, a batch in RAM
        done += dev.run(7)
    live = ble.take(dev.ble.h_event)
    head_a, steps_a = dev.ring.head, dev.steps
    assert steps_a == len(_detector_rows(a[:done])) > 20
    journaled = dev.journal.next_seq - dev.journal.pending
    fs2 = fs.reboot()  # power cut: the RAM batch is gone
    dev2, ble2 = build(_flat(b), fs2)
    pkt = bytearray(20)
    dev2.ring.copy(dev2.ring.head - 1, pkt)
    boot_start = HP.decode_event(bytes(pkt))
    assert isinstance(boot_start, HP.Start)
    # past every number used before, even those only a live central saw
    assert dev2.ring.head - 1 >= head_a and dev2.steps >= steps_a
    assert boot_start.skipped_seq == 48 and boot_start.skipped_steps == 12
    assert boot_start.steps == dev2.steps and dev2.steps - 12 <= steps_a
    dev2.run()
    _connect(ble2, dev2)
    r = _command(ble2, dev2, HP.cmd_backfill_wide(0))
    assert r.ok and r.data["first_seq"] == 0
    replay = _drain(dev2, ble2)
    seqs = [HP.SeqUnwrapper()(HP.decode_event(d).seq) for d in replay[:1]]
    assert seqs == [0]
    unwrap = HP.SeqUnwrapper()
    got = {unwrap(HP.decode_event(d).seq): d for d in replay}
    # everything journaled before the cut comes back as it was sent live ...
    live_by_seq = {HP.decode_event(d).seq: d for d in live}
    for seq in range(1, journaled):
        assert got[seq] == live_by_seq[seq & 0xFFFF]
    # ... the lost batch and the skipped numbers hold nothing; then the second walk
    skipped = set(range(journaled, dev2.ring.head)) - set(got)
    assert skipped == set(range(journaled, journaled + 48)) and head_a <= journaled + 48
    assert _rows(live) == _detector_rows(a[:done])
    rows_b = _detector_rows(b, step_base=boot_start.steps)
    assert [r for r in _rows(list(got.values())) if r[0] > boot_start.steps] == rows_b


def test_a_flash_that_takes_no_writes_leaves_the_ring_and_counts_what_it_loses():
    trace = _walk(100)
    fs = JF.FlashFS(cut_op=0)
    sink = F.LogSink()
    dev, ble = build(_flat(trace), fs, sink=sink)
    assert any("not writable" in x for x in sink.lines)
    dev.run()
    j, ring = dev.journal, dev.ring
    # the RAM batch kept the first events (the flash refused them), the ring the newest
    # 128; every event in between is lost, and counted
    assert j.pending == 48 and j.next_seq < ring.oldest() and j.refused > 0
    assert dev.lost == ring.head - ring.capacity - j.pending > 100
    out = bytearray(20)
    in_batch = [s for s in range(j.next_seq) if j.read(s, out)]
    assert len(in_batch) == j.pending
    _connect(ble, dev)
    r = _command(ble, dev, HP.cmd_backfill_wide(0))
    assert r.ok and r.data["count"] == ring.head
    got = [HP.decode_event(d).seq for d in _drain(dev, ble)]
    assert got == in_batch + [s & 0xFFFF for s in range(ring.oldest(), ring.head)]
    # asked for the numbers in between, the insole says they are gone
    r = _command(ble, dev, HP.cmd_backfill_wide(j.next_seq))
    assert (r.error, r.data["first_seq"]) == (HP.ERR_PARTIAL, ring.oldest())
    assert len(_drain(dev, ble)) == ring.capacity
    dev._update_status()
    assert HP.decode_status(ble.gatts_read(dev.ble.h_status)).lost == dev.lost


def test_a_journal_over_its_bound_drops_its_oldest_day_and_says_so():
    trace = _walk(400)
    fs = JF.FlashFS()
    dev, ble = build(_flat(trace), fs, limit=4096)
    dev.run()
    j = dev.journal
    assert j.dropped >= 1 and fs.total() <= 4096
    dev._update_status()
    status = HP.decode_status(ble.gatts_read(dev.ble.h_status))
    assert status.journal_dropped
    # the undelivered events of the dropped parts are lost, and counted
    assert dev.lost == j.oldest_seq > 0 and status.lost == dev.lost
    _connect(ble, dev)
    r = _command(ble, dev, HP.cmd_get_journal())
    assert r.ok and r.data == {"head": dev.ring.head, "oldest_seq": j.oldest_seq,
                               "dropped_days": j.dropped, "journal_bytes": j.size_bytes}
    r = _command(ble, dev, HP.cmd_backfill_wide(0))
    assert r.error == HP.ERR_PARTIAL and r.data["first_seq"] == j.oldest_seq
    assert r.data["count"] == dev.ring.head - j.oldest_seq
    got = _drain(dev, ble)
    assert len(got) == r.data["count"]


def test_backfill_wide_ahead_and_out_of_range():
    dev, ble = build(_flat(_walk(3)), JF.FlashFS())
    dev.run()
    _connect(ble, dev)
    head = dev.ring.head
    r = _command(ble, dev, HP.cmd_backfill_wide(head + 5))
    assert (r.error, r.data) == (HP.ERR_NOT_YET, {"first_seq": head, "count": 0, "wide": True})
    r = _command(ble, dev, HP.cmd_backfill_wide(head))
    assert (r.error, r.data["count"]) == (HP.ERR_OK, 0)
    r = _command(ble, dev, bytes([HP.OP_BACKFILL, 0, 0, 0, 0x20]))  # 2**29: not a number
    assert r.error == HP.ERR_OUT_OF_RANGE
    r = _command(ble, dev, bytes([HP.OP_BACKFILL, 0, 0, 0]))
    assert r.error == HP.ERR_BAD_LENGTH


_HEAP = """
import micropython, gc
from array import array
import fw_fakes as F
import journal_fs as JF
from ble_insole import InsoleBLE
from config import ConfigStore
from device import Insole
from journal import Journal
from log import Log
from pairing import PairingWindow
n = 4000
samples = array("H", [2000, 2500, 1800] * n)
log = Log(F.LogSink())
cfg_fs = F.MemFS()
store = ConfigStore("insole.json", log, fs=cfg_fs, opener=cfg_fs.open)
cfg = store.ensure_passkey(store.load(), lambda n: b"\x40\xe2\x01"[:n])
fs = JF.FlashFS()
j = Journal("journal", log, fs=fs, opener=fs.open)
ble = F.FakeBLE()
clock = F.FakeClock()
radio = InsoleBLE(ble, F.UUID, log, "B", passkey=cfg["passkey"], window=PairingWindow(clock, log))
dev = Insole(F.trace_adcs(samples), radio, store, cfg, log, clock, "1A2B", "B",
             battery_mv=lambda: 3750, journal=j)
radio.open_window("power-on")
ble.connect(); ble.pair()
for h in (dev.ble.h_event, dev.ble.h_status):
    ble.subscribe(h)
ble.record = False
dev.run(1200)   # the boot START written, first status, battery
print("pending", j.pending)
gc.collect()
micropython.heap_lock()
try:
    taken = dev.loop(1500)
    err = None
except MemoryError as e:
    err = e
micropython.heap_unlock()
print("quiet", taken if err is None else "ALLOCATED")
"""


def test_no_event_samples_allocate_nothing_with_a_journal():
    out = run_micropython(_HEAP, path=[str(FIRMWARE), str(TESTS)])
    lines = dict(x.split(" ", 1) for x in out.splitlines() if x.strip())
    assert lines["pending"] == "0", out  # the START went to flash: nothing to write
    assert lines["quiet"] == "1500", out
