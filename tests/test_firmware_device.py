"""The insole firmware as a device, on a fake BLE stack: GATT table, advertising, step
events, backfill after a long disconnect, ENOMEM, latency, RSC, raw stream, Control.

Most scenarios run under CPython; the same scenario under the micropython binary must
send the very same notifications (differential), and the no-event hot path is proved
allocation-free there with micropython.heap_lock().
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import config as fw_config  # noqa: E402
import fw_fakes as F  # noqa: E402
import gait  # noqa: E402
import gaitsynth  # noqa: E402
import protocol as FP  # noqa: E402

from host_tools import protocol as HP  # noqa: E402
from tests.mpy import run_micropython  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gaitpdb" / "GaCo01_01.txt.gz"


def _real_trace(seconds: int) -> np.ndarray:
    if not DATA.exists():
        pytest.skip("needs ../shared/data (PhysioNet gaitpdb)")
    from host_tools.physionet import load_pdb

    rec = load_pdb(DATA, "left")
    assert rec.rate_hz == 100
    return rec.trace[: seconds * 100].astype(np.int64)


def _synth(**kw) -> np.ndarray:
    return gaitsynth.make(gaitsynth.Walk(**kw)).astype(np.int64)


def _flat(trace: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(trace).ravel()]


def _connect(ble, dev, pair=True):
    ble.connect()
    if pair:
        ble.pair()
    for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_control, dev.ble.h_raw,
              dev.ble.h_rsc, dev.ble.h_battery):
        ble.subscribe(h)


def _command(ble, dev, data: bytes) -> HP.Reply:
    assert ble.write(dev.ble.h_control, data) == 0
    dev.service()
    replies = ble.take(dev.ble.h_control)
    assert len(replies) == 1, replies
    return HP.decode_reply(replies[0])


def _detector_rows(trace: np.ndarray, rate: int = 100):
    det = gait.GaitDetector(rate)
    rows, contacts = [], []
    for h, a, f in trace.tolist():
        ev = det.feed(h, a, f)
        if ev & gait.EV_STEP:
            rows.append(det.summary())
        if ev & gait.EV_STRIKE:
            contacts.append((det.contact_seq, det.contact_ms))
    return rows, contacts


def _decode_all(notes):
    return [HP.decode_event(d) for d in notes]


# ---- GATT table and advertising ----

EXPECTED_TABLE = [
    (HP.UUID_SERVICE, [(HP.UUID_STEP_EVENT, F.FLAG_NOTIFY),
                       (HP.UUID_STATUS, F.FLAG_READ | F.FLAG_NOTIFY),
                       (HP.UUID_CONTROL, F.FLAG_WRITE | F.FLAG_WRITE_ENCRYPTED | F.FLAG_NOTIFY),
                       (HP.UUID_RAW, F.FLAG_NOTIFY)]),
    (0x1814, [(0x2A53, F.FLAG_NOTIFY), (0x2A54, F.FLAG_READ), (0x2A5D, F.FLAG_READ)]),
    (0x180A, [(0x2A29, F.FLAG_READ), (0x2A24, F.FLAG_READ), (0x2A27, F.FLAG_READ),
              (0x2A26, F.FLAG_READ)]),
    (0x180F, [(0x2A19, F.FLAG_READ | F.FLAG_NOTIFY)]),
]


def test_gatt_table_and_static_values():
    dev, ble, _ = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    table = [(s.value, [(u.value, fl) for u, fl, _h in chars]) for s, chars in ble.services]
    assert table == EXPECTED_TABLE
    by_uuid = {u.value: h for _s, chars in ble.services for u, _f, h in chars}
    assert ble.gatts_read(by_uuid[0x2A54]) == b"\x07\x00"  # stride, distance, walk/run
    assert ble.gatts_read(by_uuid[0x2A5D]) == b"\x02"  # in shoe
    assert ble.gatts_read(by_uuid[0x2A29]) == b"Open Insole"
    assert ble.gatts_read(by_uuid[0x2A26]) == b"0.1.0"
    assert ble.gatts_read(by_uuid[0x2A27]) == b"Test Board"
    status = HP.decode_status(ble.gatts_read(by_uuid[HP.UUID_STATUS]))
    assert (status.side, status.rate_hz, status.steps) == ("L", 100, 0)
    assert ble.settings["bond"] is True and ble.settings["io"] == 3


def _ad_fields(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        n = data[i]
        out[data[i + 1]] = data[i + 2 : i + 1 + n]
        i += 1 + n
    assert i == len(data)
    return out


def test_advertising_payload_and_readvertise():
    dev, ble, _ = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    interval, adv, resp = ble.advertising
    assert len(adv) <= 31 and len(resp) <= 31 and interval == 100000
    ad = _ad_fields(adv)
    assert ad[0x01] == b"\x06" and ad[0x09] == b"Insole-L-1A2B" and ad[0x03] == b"\x14\x18"
    rs = _ad_fields(resp)
    assert rs[0x07] == bytes(reversed(bytes.fromhex(HP.UUID_SERVICE.replace("-", ""))))
    assert rs[0x19] == b"\x43\x04"
    _connect(ble, dev)
    assert ble.advertising is None
    # longest name, other side: takes effect from the next advertising
    assert _command(ble, dev, HP.cmd_set_name("A" * 12)).ok
    assert _command(ble, dev, HP.cmd_set_side("R")).ok
    assert ble.advertising is None
    ble.disconnect()
    interval, adv, resp = ble.advertising
    assert _ad_fields(adv)[0x09] == b"AAAAAAAAAAAA-R-1A2B" and len(adv) <= 31
    assert ble.settings["gap_name"] == "AAAAAAAAAAAA-R-1A2B"
    assert dev.banner() == ("insole 0.1.0 board=Test Board side=R rate=100 "
                            "name=AAAAAAAAAAAA-R-1A2B")
    assert re.match(HP.BANNER_RE, dev.banner())


# ---- step events ----


def test_step_events_equal_detector_on_real_walk():
    trace = _real_trace(60)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    assert dev.run() == len(trace)
    evs = _decode_all(ble.take(dev.ble.h_event))
    rows, contacts = _detector_rows(trace)
    assert len(rows) > 30
    joiner = HP.StepJoiner()
    for e in evs:
        joiner.add(e)
    assert joiner.rows() == rows
    assert [(e.step, e.contact_ms) for e in evs if e.kind == "strike"] == contacts
    seqs = [e.seq for e in evs]
    assert seqs == list(range(1, len(evs) + 1))  # START (seq 0) was before the connection
    # each step's LOAD is the packet right after its STEP
    for i, e in enumerate(evs):
        if e.kind == "step":
            assert evs[i + 1].kind == "load" and evs[i + 1].step == e.step


def test_disconnect_over_a_minute_then_backfill_loses_nothing():
    trace = _real_trace(150)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    got, statuses = [], []
    dev.run(2000)  # 20 s of walking
    got += ble.take(dev.ble.h_event)
    ble.disconnect()
    dev.run(7000)  # 70 s away, still walking
    assert HP.decode_status(ble.gatts_read(dev.ble.h_status)).buffered > 40
    _connect(ble, dev)
    last = HP.SeqUnwrapper()
    seen = [last(HP.decode_event(d).seq) for d in got]
    reply = _command(ble, dev, HP.cmd_backfill(seen[-1] + 1))
    assert reply.ok and reply.data["first_seq"] == seen[-1] + 1
    while True:
        n = dev.run(100)
        got += ble.take(dev.ble.h_event)
        statuses += [HP.decode_status(d) for d in ble.take(dev.ble.h_status)]
        if n < 100:
            break
    unwrap = HP.SeqUnwrapper()
    evs = {}
    for d in got:
        e = HP.decode_event(d)
        evs[unwrap(e.seq)] = e
    assert sorted(evs) == list(range(1, max(evs) + 1))  # no sequence gap
    joiner = HP.StepJoiner()
    for e in evs.values():
        joiner.add(e)
    rows, _ = _detector_rows(trace)
    assert joiner.rows() == rows and len(rows) > 80  # no lost step
    steps = [s.steps for s in statuses]
    assert steps == sorted(steps) and steps[-1] == len(rows)
    assert statuses[-1].buffered == 0


def test_enomem_delays_but_never_drops():
    trace = _real_trace(40)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    got = []
    i = 0
    while dev.run(25) == 25:
        i += 1
        if i % 3 == 0:
            ble.nomem_next = 5  # the stack runs out of buffers for a while
        got += ble.take(dev.ble.h_event)
    dev.idle(200)  # the input has ended: the queue drains
    got += ble.take(dev.ble.h_event)
    assert dev.ble.nomem > 20
    seqs = [HP.decode_event(d).seq for d in got]
    assert seqs == list(range(1, len(seqs) + 1))  # in order, none twice, none lost
    rows, _ = _detector_rows(trace)
    joiner = HP.StepJoiner()
    for d in got:
        joiner.add(HP.decode_event(d))
    assert joiner.rows() == rows


def test_backfill_from_beyond_the_ring_is_partial():
    dev, ble, _ = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    pkt = bytearray(20)
    for _ in range(1500):
        dev.ring.put(pkt)
    _connect(ble, dev)
    r = _command(ble, dev, HP.cmd_backfill(0))
    assert r.error == HP.ERR_PARTIAL
    assert r.data == {"first_seq": (1501 - 1024) & 0xFFFF, "count": 1024}
    r = _command(ble, dev, HP.cmd_backfill(1501 - 10))
    assert r.ok and r.data == {"first_seq": 1491, "count": 10}
    assert dev.ring.capacity >= 512


def _crossing_near(trace: np.ndarray, k: int) -> int:
    """The trace's own contact crossing nearest sample k: where the most-loaded channel,
    scaled to its range over the surrounding 3 s, rises through 25 % (the detector's
    contact level), found without the detector."""
    a = max(0, k - 150)
    w = trace[a : k + 150].astype(float)
    lo, hi = w.min(axis=0), w.max(axis=0)
    comp = ((w - lo) / np.maximum(hi - lo, 1)).max(axis=1)
    ups = [a + i for i in range(1, len(comp)) if comp[i] >= 0.25 > comp[i - 1]]
    return min(ups, key=lambda i: abs(i - k))


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_heel_strike_notified_within_3_samples(source):
    if source == "synthetic":
        trace = _synth(strides_ms=[1050] * 25, ramp_ms=30)
    else:
        trace = _real_trace(60)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    heel = dev._adc_h
    stamps = []
    deliver = ble._deliver

    def stamped(handle, data):
        if handle == dev.ble.h_event and data[1] == HP.KIND_STRIKE:
            stamps.append(heel.i - 1)  # index of the sample being processed
        deliver(handle, data)

    ble._deliver = stamped
    dev.run()
    # the firmware adds no delay: notified in the very sample the detector confirms
    det = gait.GaitDetector(100)
    confirmed = [i for i, (h, a, f) in enumerate(trace.tolist()) if det.feed(h, a, f) & 1]
    assert stamps == confirmed and len(stamps) > 20
    # and in trace time, within 3 samples of the contact crossing (after the first
    # two steps, while the detector learns the signal's range)
    late = [k - _crossing_near(trace, k) for k in stamps[2:]]
    assert all(0 <= d <= 3 for d in late), late


# ---- RSC, status, raw stream ----


def test_rsc_reports_cadence_speed_and_idle():
    strides = [1100] * 12 + [900] * 12
    trace = _synth(strides_ms=strides, tail_ms=6000)
    dev, ble, fs = F.build(_flat(trace), files={"insole.json": json.dumps(
        dict(fw_config.DEFAULTS, stride_cm=150))})
    _connect(ble, dev)
    dev.run()
    rsc = [HP.decode_rsc(d) for d in ble.take(dev.ble.h_rsc)]
    evs = [e for e in _decode_all(ble.take(dev.ble.h_event)) if e.kind == "step"]
    moving = rsc[:-1]
    assert len(moving) == len(evs) - 1  # the first step has no stride time yet
    for m, e in zip(moving, evs[1:], strict=True):
        assert m.cadence == 120000 // e.stride_ms
        assert m.speed_256 == 150 * 2560 // e.stride_ms
        assert m.stride_cm == 150 and not m.running
    assert 107 <= moving[5].cadence <= 111 and 131 <= moving[-1].cadence <= 135
    assert moving[-1].distance_dm == len(evs) * 15
    assert (rsc[-1].speed_256, rsc[-1].cadence) == (0, 0)  # stopped walking


def test_running_bit_from_flight_phase():
    trace = _synth(strides_ms=[700] * 12, stance_frac=0.38, ramp_ms=30)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    dev.run()
    rsc = [HP.decode_rsc(d) for d in ble.take(dev.ble.h_rsc)]
    assert sum(r.running for r in rsc) >= 8


@pytest.mark.parametrize("nomem", [False, True])
def test_raw_stream_200hz_no_gaps_at_mtu_23(nomem):
    trace = _synth(rate_hz=200, strides_ms=[1000] * 12, noise=300.0)  # every sample differs
    dev, ble, _ = F.build(_flat(trace), files={"insole.json": json.dumps(
        dict(fw_config.DEFAULTS, rate_hz=200))})
    _connect(ble, dev)
    assert ble.mtu == 23
    assert _command(ble, dev, HP.cmd_raw_start()).ok
    start = dev._adc_h.i
    rng = np.random.default_rng(7)
    for _ in range(len(trace) - 1000):  # stream all but the last 5 s
        dev.run(1)
        if nomem and rng.random() < 0.2:
            ble.nomem_next = int(rng.integers(1, 6))  # the stack is short of buffers
    for _ in range(3):
        dev.service()  # let queued packets out
    packets = [HP.decode_raw(d) for d in ble.take(dev.ble.h_raw)]
    streamed = dev._adc_h.i - start
    assert len(packets) == streamed // 3 and streamed > 2000
    first = packets[0].index
    samples = [s for p in packets for s in p.samples]
    for k, p in enumerate(packets):
        assert p.index == (first + 3 * k) & 0xFFFF  # no gap
    got = np.array(samples)
    assert (got == trace[start : start + len(samples)]).all()
    assert dev.raw_lost == 0
    assert HP.decode_status(ble.gatts_read(dev.ble.h_status)).raw_streaming
    ble.nomem_next = 0
    dev.run(1)
    ble.take(dev.ble.h_raw)
    assert _command(ble, dev, HP.cmd_raw_stop()).ok
    assert dev.run(300) == 300
    assert not dev.raw_on and ble.take(dev.ble.h_raw) == []


def test_status_counts_steps_uptime_battery():
    trace = _synth(strides_ms=[1000] * 10)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    dev.run()
    st_ = HP.decode_status(ble.gatts_read(dev.ble.h_status))
    assert st_.steps == 10 and st_.uptime_s == len(trace) // 100
    assert st_.battery_mv == 3750 and st_.encrypted and st_.overruns == 0
    assert ble.gatts_read(dev.ble.h_battery) == bytes([50])  # 3750 mV: half-way
    assert HP.decode_status(ble.take(dev.ble.h_status)[-1]) == st_


# ---- Control ----


def test_commands_change_config_and_device():
    trace = _synth(strides_ms=[1000] * 30)
    dev, ble, fs = F.build(_flat(trace))
    _connect(ble, dev)
    dev.run(1200)
    steps_before = dev.steps
    assert steps_before > 5
    assert _command(ble, dev, HP.cmd_set_rate(200)).ok
    assert dev.sampler.rate_hz == 200 and dev.det.rate_hz == 200
    start = [e for e in _decode_all(ble.take(dev.ble.h_event)) if e.kind == "start"]
    assert start and start[-1].steps == steps_before and start[-1].rate_hz == 200
    assert _command(ble, dev, HP.cmd_set_stride(155)).ok
    assert _command(ble, dev, HP.cmd_zero()).ok
    assert _command(ble, dev, HP.cmd_set_mode("walk")).ok
    assert _command(ble, dev, HP.cmd_set_mode("heel_raise")).ok
    assert dev.mode == 1 and dev.ex is not None
    assert _command(ble, dev, HP.cmd_set_mode("walk")).ok
    assert dev.ex is None
    assert _command(ble, dev, bytes([0x09, 7])).error == HP.ERR_OUT_OF_RANGE
    r = _command(ble, dev, HP.cmd_get_config())
    assert r.data == {"side": "L", "rate_hz": 200, "stride_cm": 155, "name": "Insole"}
    assert json.loads(fs.files["insole.json"]) == dict(
        fw_config.DEFAULTS, rate_hz=200, stride_cm=155, zero=list(dev.det.zero_levels())
    )
    dev.run(500)
    # steps keep counting across the detector restart
    assert dev.steps >= steps_before
    steps = [e.step for e in _decode_all(ble.take(dev.ble.h_event)) if e.kind == "step"]
    assert steps == sorted(steps) and (not steps or steps[0] == steps_before + 1)


def test_failed_save_leaves_config_untouched():
    dev, ble, fs = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    _connect(ble, dev)
    fs.dead = True  # flash write fails
    r = _command(ble, dev, HP.cmd_set_rate(200))
    assert r.error == HP.ERR_STORAGE
    assert dev.cfg["rate_hz"] == 100 and dev.sampler.rate_hz == 100


def test_unencrypted_writes_are_refused():
    dev, ble, fs = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    _connect(ble, dev, pair=False)
    assert ble.write(dev.ble.h_control, HP.cmd_set_rate(200)) == F.ATT_INSUFFICIENT_ENCRYPTION
    dev.service()
    assert ble.take(dev.ble.h_control) == []
    # should a write get past the stack, the firmware refuses it too
    ble.inject_write(dev.ble.h_control, HP.cmd_set_rate(200))
    dev.service()
    (reply,) = ble.take(dev.ble.h_control)
    assert HP.decode_reply(reply).error == HP.ERR_NOT_ENCRYPTED
    assert dev.cfg["rate_hz"] == 100 and fs.files == {}
    ble.pair()
    assert _command(ble, dev, HP.cmd_set_rate(200)).ok


_write = st.one_of(
    st.binary(max_size=22),
    st.builds(lambda op, rest: bytes([op]) + rest, st.integers(0, 12), st.binary(max_size=14)),
    st.sampled_from([HP.cmd_set_rate(50), HP.cmd_set_rate(400), HP.cmd_set_side("R"),
                     HP.cmd_set_name("Zed"), HP.cmd_backfill(0), HP.cmd_raw_start(),
                     HP.cmd_zero(), HP.cmd_set_stride(300)]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_write, st.booleans(), st.integers(0, 30)), max_size=12))
def test_control_fuzzing_never_crashes_or_corrupts(writes):
    dev, ble, fs = F.build(_flat(_synth(strides_ms=[1000] * 8)))
    _connect(ble, dev, pair=False)
    for data, encrypted, samples in writes:
        if encrypted and not ble.encrypted:
            ble.pair()
        before = dict(dev.cfg)
        att = ble.write(dev.ble.h_control, data)
        if not ble.encrypted:
            assert att == F.ATT_INSUFFICIENT_ENCRYPTION
        dev.service()
        replies = [HP.decode_reply(r) for r in ble.take(dev.ble.h_control)]
        if att:
            assert replies == [] and dev.cfg == before
        else:
            assert len(replies) == 1
            op, err, _ = FP.parse_command(data)
            assert replies[0].op == op
            if err != HP.ERR_OK:
                assert replies[0].error == err
            else:
                assert replies[0].error in (HP.ERR_OK, HP.ERR_PARTIAL)
            if replies[0].error != HP.ERR_OK:
                assert dev.cfg == before
        dev.run(samples)
        # the file on flash always loads to exactly the running config
        loaded = fw_config.ConfigStore("insole.json", dev._log, fs=fs, opener=fs.open).load()
        assert loaded == dev.cfg
        assert all(fw_config.valid(k, v) for k, v in dev.cfg.items())


# ---- the same scenario under micropython ----

_SCENARIO = """
import sys, binascii
from array import array
import fw_fakes as F
with open(%(trace)r, "rb") as f:
    samples = array("H", f.read())
dev, ble, fs = F.build(samples)
ble.connect(); ble.pair()
for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_control, dev.ble.h_rsc, dev.ble.h_raw):
    ble.subscribe(h)
dev.run(1500)
ble.nomem_next = 3
dev.run(1500)
ble.disconnect()
dev.run(1000)
ble.connect(); ble.pair()
for h in (dev.ble.h_event, dev.ble.h_control, dev.ble.h_rsc, dev.ble.h_raw):
    ble.subscribe(h)
ble.write(dev.ble.h_control, bytes([8, 0, 0]))
ble.write(dev.ble.h_control, bytes([6]))
dev.run()
for h, d in ble.notes:
    print(h, binascii.hexlify(d).decode())
print("steps", dev.steps)
"""


def _scenario_cpython(trace_path: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(_SCENARIO % {"trace": trace_path}, {})
    return buf.getvalue()


def test_same_notifications_under_micropython(tmp_path):
    trace = _real_trace(60)
    path = tmp_path / "trace.bin"
    path.write_bytes(trace.astype("<u2").tobytes())
    cp = _scenario_cpython(str(path))
    mp = run_micropython(_SCENARIO % {"trace": str(path)}, path=[str(FIRMWARE), str(TESTS)])
    assert cp.count("\n") > 200
    assert mp == cp


_HEAP = """
import micropython, gc
from array import array
import fw_fakes as F
n = %(n)d
samples = array("H", [2000, 2500, 1800] * n)
dev, ble, fs = F.build(samples)
ble.connect(); ble.pair()
for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_rsc, dev.ble.h_raw, dev.ble.h_battery):
    ble.subscribe(h)
ble.record = False
dev.run(1200)                  # warm up: first status, battery, ...
for raw in (False, True):
    if raw:
        dev._raw_start()
    gc.collect()
    before = gc.mem_alloc()
    micropython.heap_lock()
    try:
        taken = dev.loop(1500)  # 15 s: includes status and battery updates
        err = None
    except MemoryError as e:
        err = e
    micropython.heap_unlock()
    print("raw" if raw else "quiet", taken if err is None else "ALLOCATED", gc.mem_alloc() - before)
"""


def test_hot_path_allocates_nothing_under_heap_lock():
    out = run_micropython(_HEAP % {"n": 6000}, path=[str(FIRMWARE), str(TESTS)])
    lines = out.split("\n")
    quiet = next(x for x in lines if x.startswith("quiet")).split()
    raw = next(x for x in lines if x.startswith("raw")).split()
    assert quiet[1] == "1500", out
    assert raw[1] == "1500", out


# ---- app.py / main.py on fake machine, bluetooth and board modules ----

_FAKE_MODULES = {
    "machine.py": """
from fw_fakes import FakeADC
WDTS = []
class WDT:
    def __init__(self, timeout):
        self.timeout = timeout
        self.fed = 0
        WDTS.append(self)
    def feed(self):
        self.fed += 1
def unique_id():
    return b"\\x24\\x0a\\xc4\\x12\\xab\\xcd"
""",
    "bluetooth.py": """
from fw_fakes import FakeBLE, UUID
_ble = FakeBLE()
def BLE():
    return _ble
""",
    "board.py": """
from array import array
from fw_fakes import FakeADC, Led
NAME = "Fake Board"
WDT_TIMEOUT_MS = %(wdt)d
HAS_BLE = True
CONFIG_PATH = %(cfg)r
_n = %(n)d
_chans = (FakeADC(array("H", [3000] * _n)), FakeADC(array("H", [3100] * _n)),
          FakeADC(array("H", [2900] * _n)))
def fsr_adcs():
    return _chans
def battery_mv():
    return 0
def status_led():
    return Led()
%(extra)s
""",
}


@pytest.mark.parametrize("variant", ["eof", "finished"])
def test_main_runs_on_micropython_until_input_ends(tmp_path, variant):
    extra = ""
    n = 250
    if variant == "finished":
        extra = "def finished():\n    return _chans[0].i >= 120\nLINGER_MS = 50\n"
    cfg = tmp_path / "insole.json"
    cfg.write_text(json.dumps(dict(fw_config.DEFAULTS, side="R", rate_hz=200)))
    for name, text in _FAKE_MODULES.items():
        (tmp_path / name).write_text(
            text % {"wdt": 8000, "cfg": str(cfg), "n": n, "extra": extra}
            if name == "board.py" else text)
    code = ("import main\nimport machine, app\nprint('wdt', machine.WDTS[0].timeout, "
            "machine.WDTS[0].fed)\n")
    out = run_micropython(code, path=[str(tmp_path), str(FIRMWARE), str(TESTS)])
    lines = out.splitlines()
    assert lines[0] == "insole 0.1.0 board=Fake Board side=R rate=200 name=Insole-R-ABCD"
    assert re.match(HP.BANNER_RE, lines[0])
    taken = 120 if variant == "finished" else n
    assert any(f"run stop samples={taken} steps=0" in x for x in lines), out
    wdt = lines[-1].split()
    assert wdt[:2] == ["wdt", "8000"] and int(wdt[2]) >= taken


def test_integers_stay_small_on_long_runs():
    # counters that grow with time wrap or saturate below 2**29
    dev, ble, _ = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    dev.ring.head = (1 << 29) - 2
    pkt = bytearray(20)
    for _ in range(5):
        dev.ring.put(pkt)
    assert dev.ring.head == 3
    s = dev.sampler
    s.count = s.ms = (1 << 29) - 1
    s.wait()
    assert s.count == 0 and 0 <= s.ms < 20
    values = struct.unpack("<BBBBHIIHHH", bytes(ble.gatts_read(dev.ble.h_status)))
    assert max(values) < 1 << 29


def test_bonding_keys_survive_a_reboot(tmp_path):
    from ble_insole import BondStore, InsoleBLE
    from log import Log

    path = str(tmp_path / "bonds.json")
    ble = F.FakeBLE()
    InsoleBLE(ble, F.UUID, Log(F.LogSink()), "B", BondStore(path))
    ble.connect()
    ble.pair()  # the stack hands over the new keys with _IRQ_SET_SECRET
    ble2 = F.FakeBLE()  # after a reboot
    InsoleBLE(ble2, F.UUID, Log(F.LogSink()), "B", BondStore(path))
    assert ble2.handler(F.IRQ_GET_SECRET, (1, 0, None)) == b"ltk-value"
    assert ble2.handler(F.IRQ_GET_SECRET, (1, 0, b"peer-key")) == b"ltk-value"
    assert ble2.handler(F.IRQ_GET_SECRET, (1, 1, None)) is None
    assert ble2.handler(F.IRQ_GET_SECRET, (2, 0, None)) is None
    assert ble2.handler(F.IRQ_SET_SECRET, (1, b"peer-key", None)) is True  # forget it
    assert BondStore(path).load() == []


def test_led_lit_during_stance():
    led = F.Led()
    trace = _synth(strides_ms=[1000] * 3)
    dev, ble, _ = F.build(_flat(trace), led=led)
    states = []
    while dev.run(1) == 1:
        states.append(led.state)
    on = [i for i in range(1, len(states)) if states[i] > states[i - 1]]
    off = [i for i in range(1, len(states)) if states[i] < states[i - 1]]
    assert len(on) == 3 and len(off) == 3
    assert all(a < b for a, b in zip(on, off, strict=True))


def test_zero_calibration_survives_a_reboot():
    # the insole lies unloaded at a raised level (e.g. a preloaded sensor), is zeroed,
    # and the zero is what a rebooted insole starts from
    unloaded = np.tile([[7000, 5000, 6000]], (300, 1))
    dev, ble, fs = F.build(_flat(unloaded))
    _connect(ble, dev)
    dev.run(200)
    assert _command(ble, dev, HP.cmd_zero()).ok
    saved = json.loads(fs.files["insole.json"])["zero"]
    assert saved == [7000, 5000, 6000]
    # reboot on the same flash, first sample already loaded: the zero still holds
    loaded = np.tile([[30000, 9000, 25000]], (5, 1))
    dev2, _, _ = F.build(_flat(loaded), fs=fs)
    assert dev2.det.zero_levels() == (7000, 5000, 6000)
    dev2.run(3)
    assert dev2.det.zero_levels()[0] <= 7000 + 100
