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
import control_wire as FW_CONTROL  # noqa: E402
import device as fw_device  # noqa: E402
import fw_fakes as F  # noqa: E402
import gait  # noqa: E402
import gaitsynth  # noqa: E402
import modes  # noqa: E402
import protocol as FP  # noqa: E402

from host_tools.ble import protocol as HP  # noqa: E402
from host_tools.gait import latency  # noqa: E402
from tests.mpy import run_micropython  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "gaitpdb" / "GaCo01_01.txt.gz"


def _real_trace(seconds: int) -> np.ndarray:
    if not DATA.exists():
        pytest.skip("needs ../shared/data (PhysioNet gaitpdb)")
    from host_tools.gait.physionet import load_pdb

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
    # the insole's own service needs an authenticated link (docs/SECURITY.md)
    (HP.UUID_SERVICE, [(HP.UUID_STEP_EVENT, F.FLAG_NOTIFY | F.FLAG_READ_AUTHENTICATED),
                       (HP.UUID_STATUS,
                        F.FLAG_READ | F.FLAG_NOTIFY | F.FLAG_READ_AUTHENTICATED),
                       (HP.UUID_CONTROL,
                        F.FLAG_WRITE | F.FLAG_WRITE_AUTHENTICATED | F.FLAG_NOTIFY),
                       (HP.UUID_RAW, F.FLAG_NOTIFY | F.FLAG_READ_AUTHENTICATED)]),
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
    # passkey pairing with MITM protection: the insole "displays" its fixed passkey
    assert ble.settings["bond"] is True and ble.settings["io"] == 0
    assert ble.settings["mitm"] is True and ble.settings["le_secure"] is True


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
    # advertising goes on while a connection slot is free (no lock-out)
    assert _ad_fields(ble.advertising[1])[0x09] == b"Insole-L-1A2B"
    # longest name, other side: advertised at once
    assert _command(ble, dev, HP.cmd_set_name("A" * 12)).ok
    assert _command(ble, dev, HP.cmd_set_side("R")).ok
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


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_heel_strike_notified_within_3_samples(source):
    if source == "synthetic":
        trace = _synth(strides_ms=[1050] * 25, ramp_ms=30)
    else:
        trace = _real_trace(60)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    heel = dev.adcs[0]
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
    # (the crossing as host_tools/gait/latency.py finds it, without the detector)
    late = [k - latency.crossing_near(trace, k, 100) for k in stamps[2:]]
    assert all(0 <= d <= 3 for d in late), late


def test_step_after_a_spike_carries_the_corrected_strike_and_flag():
    # a brief heel spike 220 ms before the seventh contact, unloaded around it
    w = gaitsynth.Walk(strides_ms=[1100.0] * 12)
    trace = gaitsynth.make(w).astype(np.int64)
    first = int(w.contacts_ms()[6] - 220) // 10
    trace[first : first + 3, 0] += 12000
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    dev.run()
    evs = _decode_all(ble.take(dev.ble.h_event))
    strikes = {e.step: e for e in evs if e.kind == "strike"}
    steps = {e.step: e for e in evs if e.kind == "step"}
    loads = {e.step: e for e in evs if e.kind == "load"}
    assert sorted(steps) == list(range(1, 13)) and sorted(loads) == sorted(steps)
    # the STRIKE went out for the spike; the STEP has the real contact, its LOAD the flag
    assert abs(strikes[7].contact_ms - first * 10) <= 25
    assert abs(steps[7].strike_ms - w.contacts_ms()[6]) <= 20
    assert [n for n in loads if loads[n].strike_corrected] == [7]
    assert loads[7].pattern == gait.PATTERN_REAR  # the flag leaves the pattern bits alone


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
    start = dev.adcs[0].i
    rng = np.random.default_rng(7)
    for _ in range(len(trace) - 1000):  # stream all but the last 5 s
        dev.run(1)
        if nomem and rng.random() < 0.2:
            ble.nomem_next = int(rng.integers(1, 6))  # the stack is short of buffers
    for _ in range(3):
        dev.service()  # let queued packets out
    packets = [HP.decode_raw(d) for d in ble.take(dev.ble.h_raw)]
    streamed = dev.adcs[0].i - start
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
    assert st_.battery_mv == 3760 and st_.encrypted and st_.overruns == 0  # 20 mV steps
    assert (st_.lost, st_.faults, st_.buffered) == (0, 0, 0)
    assert ble.gatts_read(dev.ble.h_battery) == bytes([50])  # 3750 mV: half-way
    assert HP.decode_status(ble.take(dev.ble.h_status)[-1]) == st_


# ---- Control ----


def _walking_device(fs=None):
    """A connected, bonded insole 12 s into a 30-step walk: (dev, ble, fs, steps)."""
    dev, ble, fs = F.build(_flat(_synth(strides_ms=[1000] * 30)), fs=fs)
    _connect(ble, dev)
    dev.run(1200)
    assert dev.steps > 5
    return dev, ble, fs, dev.steps


def test_commands_change_config_and_device():
    dev, ble, fs, steps_before = _walking_device()
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
    assert r.data == {"side": "L", "rate_hz": 200, "stride_cm": 155, "mains_hz": 50,
                      "name": "Insole"}
    assert json.loads(fs.files["insole.json"]) == dict(
        fw_config.DEFAULTS, rate_hz=200, stride_cm=155, zero=list(dev.det.zero_levels()),
        passkey=dev.cfg["passkey"])
    dev.run(500)
    # steps keep counting across the detector restart
    assert dev.steps >= steps_before
    steps = [e.step for e in _decode_all(ble.take(dev.ble.h_event)) if e.kind == "step"]
    assert steps == sorted(steps) and (not steps or steps[0] == steps_before + 1)


def test_set_mains_restarts_the_detector_on_the_new_mains_and_survives_a_reboot():
    import gait

    dev, ble, fs, steps_before = _walking_device()
    assert dev.det.mains_hz == 50
    assert dev.det._st[gait._MAXLEN] == 8
    ble.take(dev.ble.h_event)
    assert _command(ble, dev, HP.cmd_set_mains(60)).ok
    assert dev.det.mains_hz == 60 and dev.cfg["mains_hz"] == 60
    # 100 Hz with 60 Hz mains: the pre-filter may lengthen to 5 taps, three periods
    # (8, four 50 Hz periods, before)
    assert dev.det._st[gait._MAXLEN] == 5
    start = [e for e in _decode_all(ble.take(dev.ble.h_event)) if e.kind == "start"]
    assert start and start[-1].steps == steps_before
    assert json.loads(fs.files["insole.json"])["mains_hz"] == 60
    r = _command(ble, dev, HP.cmd_get_config())
    assert r.data["mains_hz"] == 60
    # what SET_MAINS refuses changes nothing
    for bad in (bytes([0x0C, 55]), bytes([0x0C]), bytes([0x0C, 60, 0])):
        assert not _command(ble, dev, bad).ok
    assert dev.cfg["mains_hz"] == 60 and dev.det.mains_hz == 60
    dev.run(500)
    assert dev.steps > steps_before  # still walking
    # a reboot builds the detector on the saved mains
    dev2, _, _, _ = _walking_device(fs)
    assert dev2.cfg["mains_hz"] == 60 and dev2.det.mains_hz == 60


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
    saved = dict(fs.files)  # the config with the passkey made at first boot
    assert ble.write(dev.ble.h_control, HP.cmd_set_rate(200)) == F.ATT_INSUFFICIENT_AUTHENTICATION
    dev.service()
    assert ble.take(dev.ble.h_control) == []
    # should a write get past the stack, the firmware refuses it too: nothing changes
    # and a link without an authenticated key gets no notification
    ble.inject_write(dev.ble.h_control, HP.cmd_set_rate(200))
    dev.service()
    assert ble.take(dev.ble.h_control) == []
    assert dev.cfg["rate_hz"] == 100 and fs.files == saved
    ble.pair()
    assert _command(ble, dev, HP.cmd_set_rate(200)).ok


_write = st.one_of(
    st.binary(max_size=22),
    st.builds(lambda op, rest: bytes([op]) + rest, st.integers(0, 13), st.binary(max_size=14)),
    st.sampled_from([HP.cmd_set_rate(50), HP.cmd_set_rate(400), HP.cmd_set_side("R"),
                     HP.cmd_set_name("Zed"), HP.cmd_backfill(0), HP.cmd_raw_start(),
                     HP.cmd_zero(), HP.cmd_set_stride(300), HP.cmd_set_mains(60)]),
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
            assert att == F.ATT_INSUFFICIENT_AUTHENTICATION
        dev.service()
        replies = [HP.decode_reply(r) for r in ble.take(dev.ble.h_control)]
        if att:
            assert replies == [] and dev.cfg == before
        else:
            assert len(replies) == 1
            op, err, _ = FW_CONTROL.parse_command(data)
            assert replies[0].op == op
            if err != HP.ERR_OK:
                assert replies[0].error == err
            else:
                assert replies[0].error in (HP.ERR_OK, HP.ERR_PARTIAL, HP.ERR_NOT_YET)
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
dev.run(1000)
# 60 Hz mains, then 60 Hz sampling: four reads 4166 us apart per sample
ble.write(dev.ble.h_control, bytes([0x0C, 60]))
ble.write(dev.ble.h_control, bytes([0x0A]))
dev.run(500)
ble.write(dev.ble.h_control, bytes([3, 60, 0]))
dev.run(10)
t0 = dev._clock.ticks_us()
dev._read_h()
took = dev._clock.ticks_diff(dev._clock.ticks_us(), t0)
print("mains", dev.det.mains_hz, dev.cfg["rate_hz"], took)
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
    assert "mains 60 60 12498" in cp  # four reads 4166 us apart
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
        dev._command(b"\x06", True)  # RAW_START
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
    values = struct.unpack("<BBHIIHHHBB", bytes(ble.gatts_read(dev.ble.h_status)))
    assert values[0] == HP.STATUS_FORMAT and max(values) < 1 << 29


def test_bonding_keys_survive_a_reboot(tmp_path):
    from ble_insole import InsoleBLE
    from bonds import Bonds
    from log import Log
    from pairing import PairingWindow

    path = str(tmp_path / "bonds.json")
    peer = F.PEER_KEY  # the fake central's store key
    ble = F.FakeBLE()
    log = Log(F.LogSink())
    radio = InsoleBLE(ble, F.UUID, log, "B", Bonds(path, log), passkey=123456,
                      window=PairingWindow(F.FakeClock(), log))
    radio.open_window("power-on")
    ble.connect()
    assert ble.pair()  # the stack hands over the new keys with _IRQ_SET_SECRET
    radio.flush()  # the main loop writes the bond file
    ble2 = F.FakeBLE()  # after a reboot
    radio2 = InsoleBLE(ble2, F.UUID, Log(F.LogSink()), "B", Bonds(path, Log(F.LogSink())))
    assert ble2.handler(F.IRQ_GET_SECRET, (1, 0, None)) == b"ltk-value"
    assert ble2.handler(F.IRQ_GET_SECRET, (1, 0, peer)) == b"ltk-value"
    assert ble2.handler(F.IRQ_GET_SECRET, (1, 1, None)) is None
    assert ble2.handler(F.IRQ_GET_SECRET, (2, 0, None)) == b"irk-value"
    assert ble2.handler(F.IRQ_GET_SECRET, (2, 1, None)) is None
    assert ble2.handler(F.IRQ_SET_SECRET, (1, peer, None)) is True  # forget it
    radio2.flush()
    assert Bonds(path, Log(F.LogSink())).get(1, 0, None) is None


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


# ---- faults the device must survive ----


def _flat_trace(seconds: int, rate: int = 100) -> list[int]:
    return [2000, 2500, 1800] * (seconds * rate)


def test_battery_read_that_raises_keeps_last_value_and_logs_rarely():
    sink = F.LogSink()
    dev, ble, _ = F.build(_flat_trace(125), log_out=sink)
    _connect(ble, dev)
    reads = []

    def flaky():
        reads.append(1)
        if len(reads) > 1:  # the first read works, every later one fails
            raise OSError(22)  # read_uv(): eFuse calibration error
        return 3900

    dev._battery_fn = flaky
    assert dev.run() == 12500
    assert len(reads) == 13  # one read every 10 s, from 0 s to 120 s
    st_ = HP.decode_status(ble.gatts_read(dev.ble.h_status))
    assert st_.battery_mv == 3900 and ble.gatts_read(dev.ble.h_battery) == bytes([66])
    assert dev.battery_errors == 12
    failed = [x for x in sink.lines if " batt read failed" in x]
    assert len(failed) == 2 and "(1)" in failed[0] and "(7)" in failed[1]  # once a minute


def test_battery_function_returning_junk_is_clamped_or_refused():
    dev, ble, _ = F.build(_flat_trace(25))
    values = iter([None, -40, 10 ** 9])
    dev._battery_fn = lambda: next(values)
    dev.run()
    assert dev.battery_errors == 1  # None
    assert dev._battery_mv == 0xFFFF  # -40 gave 0, then 10**9 is clamped
    assert HP.decode_status(ble.gatts_read(dev.ble.h_status)).battery_mv == 5100


def test_loop_sample_count_saturates(monkeypatch):
    import device

    dev, _, _ = F.build(_flat_trace(1))
    monkeypatch.setattr(device, "_COUNT_MAX", 40)  # the constant is a plain global here
    assert dev.loop() == 40  # 100 samples taken, the count stopped at its ceiling
    assert dev.adcs[0].i == 100
    with pytest.raises(ValueError):
        dev.loop(41)


def test_steps_saturate():
    dev, _, _ = F.build(_flat_trace(1))
    dev._step_base = (1 << 29) - 3
    dev.det.steps = 2
    assert dev.steps == (1 << 29) - 1
    dev.det.steps = 10
    assert dev.steps == (1 << 29) - 1 and dev._total(1) == (1 << 29) - 2
    modes.restart_detector(dev)
    assert dev._step_base == (1 << 29) - 1 and dev.steps == (1 << 29) - 1


def _fill(dev, n):
    pkt = bytearray(20)
    for _ in range(n):
        FP.pack_start(pkt, dev.ring.head, 0, 100, 0, 0)
        dev._put(pkt)


def test_status_lost_counts_past_the_ring_size_and_saturates():
    dev, ble, _ = F.build(_flat_trace(10))
    _fill(dev, 3000)  # nobody connected: all but the newest 1024 of 3001 are gone
    dev.run(100)
    st_ = HP.decode_status(ble.gatts_read(dev.ble.h_status))
    assert dev.lost == 3001 - 1024 and st_.lost == 3001 - 1024
    assert st_.buffered == 255 and dev.buffered() == 1024
    _connect(ble, dev)
    r = _command(ble, dev, HP.cmd_backfill(0))
    assert r.error == HP.ERR_PARTIAL and r.data["count"] == 1024
    for _ in range(300):
        dev.service()
    assert dev.buffered() == 0 and len(ble.take(dev.ble.h_event)) == 1024
    _fill(dev, 1100)  # delivered ones are not lost; 1100 new, 1024 held, 76 gone
    assert dev.lost == 3001 - 1024 + 76
    dev.lost = (1 << 29) - 3
    _fill(dev, 10)
    assert dev.lost == (1 << 29) - 1  # saturates
    dev.run(100)
    assert HP.decode_status(ble.gatts_read(dev.ble.h_status)).lost == 0xFFFF


def test_ring_lost_log_is_rate_limited():
    # a link starved of buffers while the ring overflows: before, one line per sample
    sink = F.LogSink()
    dev, ble, _ = F.build(_flat_trace(31), log_out=sink)
    _connect(ble, dev)
    ble.nomem_next = 1 << 28
    _fill(dev, 1100)
    for _ in range(3000):  # 30 s, one new event every sample
        _fill(dev, 1)
        dev.loop(1)
    assert dev.lost > 3000 and dev._tx_at[dev._slot] == dev.ring.oldest()
    lost = [x for x in sink.lines if " ring lost " in x]
    assert 3 <= len(lost) <= 4, lost  # at most once every 10 s
    assert lost[-1].endswith(f" ring lost {dev._logged[fw_device._LOGGED_LOST]}")
    assert "log +" not in " ".join(sink.lines)  # the log's own limit never had to act


def test_raw_queue_counters_stay_bounded_when_the_stack_never_frees_a_buffer():
    sink = F.LogSink()
    dev, ble, _ = F.build(_flat_trace(21), log_out=sink)
    _connect(ble, dev)
    assert _command(ble, dev, HP.cmd_raw_start()).ok
    ble.nomem_next = 1 << 28
    dev.raw_lost = 0xFFFF - 100
    for _ in range(2000):
        dev.loop(1)
        assert 0 <= dev._raw_tail < 16 and 0 <= dev._raw_queued <= 15
    assert dev.raw_lost == 0xFFFF  # saturated
    assert len([x for x in sink.lines if " raw lost " in x]) <= 3
    ble.nomem_next = 0
    dev.run(5)
    packets = [HP.decode_raw(d) for d in ble.take(dev.ble.h_raw)]
    assert len(packets) >= 15  # the queue drains once the stack has buffers again
    gaps = {(b.index - a.index) & 0xFFFF for a, b in zip(packets, packets[1:], strict=False)}
    assert gaps == {3}


# ---- BACKFILL: the 16-bit first sequence against the 29-bit head ----


def _device_at_head(head: int, held: int):
    """A device whose ring holds `held` events ending just before `head`, connected."""
    dev, ble, _ = F.build(_flat_trace(2))
    dev.ring.head = (head - held) & 0x1FFFFFFF
    dev.ring.count = 0
    dev._delivered = dev.ring.head
    _fill(dev, held)
    assert dev.ring.head == head and dev.ring.count == min(held, 1024)
    _connect(ble, dev)
    dev.service()
    ble.take(dev.ble.h_event)
    return dev, ble


def _replayed(dev, ble) -> list[int]:
    for _ in range(300):
        dev.service()
    return [HP.decode_event(d).seq for d in ble.take(dev.ble.h_event)]


_DOC_BACKFILLS = [  # docs/PROTOCOL.md, head 0x00031234 with a full ring
    ("083012", "080030120400", list(range(0x1230, 0x1234))),
    ("083412", "080034120000", []),
    ("083512", "080934120000", []),
    ("083392", "080934120000", []),
    ("083492", "0807340e0004", [(0x0E34 + i) & 0xFFFF for i in range(1024)]),
    ("080000", "0807340e0004", [(0x0E34 + i) & 0xFFFF for i in range(1024)]),
]


@pytest.mark.parametrize(("write", "reply", "seqs"), _DOC_BACKFILLS,
                         ids=[w for w, _, _ in _DOC_BACKFILLS])
def test_backfill_worked_examples(write, reply, seqs):
    dev, ble = _device_at_head(0x31234, 1100)
    ble.write(dev.ble.h_control, bytes.fromhex(write))
    dev.service()
    assert [r.hex() for r in ble.take(dev.ble.h_control)] == [reply]
    assert _replayed(dev, ble) == seqs


def test_backfill_across_the_16_bit_wrap_and_before_boot():
    dev, ble = _device_at_head(0x20005, 50)
    assert _command(ble, dev, bytes.fromhex("08fbff")).data == {"first_seq": 0xFFFB, "count": 10}
    assert _replayed(dev, ble) == [0xFFFB, 0xFFFC, 0xFFFD, 0xFFFE, 0xFFFF, 0, 1, 2, 3, 4]
    dev, ble, _ = F.build(_flat_trace(2))
    _fill(dev, 4)  # events 0..4 with the boot START
    _connect(ble, dev)
    r = _command(ble, dev, bytes.fromhex("08f0ff"))
    assert (r.error, r.data) == (HP.ERR_PARTIAL, {"first_seq": 0, "count": 5})
    assert _replayed(dev, ble) == [0, 1, 2, 3, 4]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 29) - 1), st.integers(1, 1100), st.integers(0, 0xFFFF))
def test_backfill_reply_follows_the_half_window_rule(head, held, first16):
    dev, ble, _ = F.build(_flat_trace(1))
    dev.ring.head = head
    dev.ring.count = min(held, 1024)
    before = dev._tx_at[dev._slot]
    import control

    r = HP.decode_reply(control.backfill(dev, first16))
    d = (first16 - head) & 0xFFFF
    if 1 <= d <= 0x7FFF:
        assert (r.error, r.data) == (HP.ERR_NOT_YET, {"first_seq": head & 0xFFFF, "count": 0})
        assert dev._tx_at[dev._slot] == before  # nothing replayed, delivery unchanged
        return
    back = (0x10000 - d) & 0xFFFF
    if back <= dev.ring.count:
        assert (r.error, r.data["count"]) == (HP.ERR_OK, back)
        assert r.data["first_seq"] == first16
    else:
        assert (r.error, r.data["count"]) == (HP.ERR_PARTIAL, dev.ring.count)
        assert r.data["first_seq"] == dev.ring.oldest() & 0xFFFF
    assert dev._tx_at[dev._slot] == (head - r.data["count"]) & 0x1FFFFFFF


def test_backfill_ahead_of_a_rebooted_insole_is_not_yet():
    # the central saw events up to 4000 before the insole rebooted; it asks for 4001
    trace = _synth(strides_ms=[1000] * 12)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    dev.run(500)
    ble.take(dev.ble.h_event)
    r = _command(ble, dev, HP.cmd_backfill(4001))
    assert r.error == HP.ERR_NOT_YET and r.data == {"first_seq": dev.ring.head, "count": 0}
    assert r.message.startswith("backfill from an event")
    dev.run()
    seqs = [HP.decode_event(d).seq for d in ble.take(dev.ble.h_event)]
    assert seqs == list(range(seqs[0], dev.ring.head)) and len(seqs) > 10  # live, no replay


# ---- IRQs between any two lines of the loop ----


def _walk_then_away(strides=12):
    trace = _synth(strides_ms=[1000] * strides)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    dev.run(600)
    got = ble.take(dev.ble.h_event)
    ble.disconnect()
    dev.run(400)  # events made while nobody listens
    return trace, dev, ble, got


def _irq_before_next_command(dev, irqs):
    """Run irqs() once, as IRQs landing after service() has looked at the link and
    before it takes the next Control write."""
    take = dev.ble.next_link_command
    fired = []

    def hooked():
        if not fired:
            fired.append(True)
            irqs()
        return take()

    dev.ble.next_link_command = hooked


def test_new_central_and_its_backfill_arriving_mid_service():
    trace, dev, ble, got = _walk_then_away()
    last = HP.decode_event(got[-1]).seq

    def reconnect_and_ask():
        _connect(ble, dev)
        assert ble.write(dev.ble.h_control, HP.cmd_backfill(last + 1)) == 0

    _irq_before_next_command(dev, reconnect_and_ask)
    dev.service()
    (reply,) = ble.take(dev.ble.h_control)
    r = HP.decode_reply(reply)
    assert r.ok and r.data["first_seq"] == last + 1 and r.data["count"] > 5
    dev.run()
    evs = _decode_all(got + ble.take(dev.ble.h_event))
    # the replay was not cancelled when the loop noticed the new link afterwards
    assert sorted({e.seq for e in evs}) == list(range(1, dev.ring.head))
    joiner = HP.StepJoiner()
    for e in evs:
        joiner.add(e)
    rows, _ = _detector_rows(trace)
    assert joiner.rows() == rows and len(rows) >= 10


def test_raw_start_from_a_new_central_arriving_mid_service():
    _trace, dev, ble, _got = _walk_then_away()

    def reconnect_and_start_raw():
        _connect(ble, dev)
        ble.write(dev.ble.h_control, HP.cmd_raw_start())

    _irq_before_next_command(dev, reconnect_and_start_raw)
    dev.service()
    assert HP.decode_reply(ble.take(dev.ble.h_control)[0]).ok
    dev.run(30)
    assert dev.raw_on and len(ble.take(dev.ble.h_raw)) >= 9


def test_a_reply_owed_to_a_central_that_left_is_not_sent_to_the_next():
    dev, ble, _ = F.build(_flat_trace(3))
    _connect(ble, dev)
    dev.run(5)
    ble.nomem_next = 1  # the reply waits for a buffer
    assert ble.write(dev.ble.h_control, HP.cmd_get_config()) == 0
    dev.service()
    assert dev._replies[dev._slot] is not None and ble.take(dev.ble.h_control) == []
    ble.disconnect()  # both IRQs land between two samples
    _connect(ble, dev)
    dev.run(5)
    assert ble.take(dev.ble.h_control) == [] and dev._replies[dev._slot] is None
    assert _command(ble, dev, HP.cmd_get_config()).ok  # the new central is served


def test_raw_stream_and_its_queue_end_with_the_link():
    dev, ble, _ = F.build(_flat_trace(3))
    _connect(ble, dev)
    assert _command(ble, dev, HP.cmd_raw_start()).ok
    ble.nomem_next = 1 << 28
    dev.run(30)  # packets queue up behind a starved stack
    assert dev._raw_queued > 0
    ble.disconnect()
    _connect(ble, dev)
    ble.nomem_next = 0
    dev.run(30)
    assert not dev.raw_on and ble.take(dev.ble.h_raw) == []  # nothing the new one did not ask for


def test_disconnect_between_the_link_check_and_the_notify_loses_nothing():
    trace = _synth(strides_ms=[1000] * 8)
    dev, ble, _ = F.build(_flat(trace))
    _connect(ble, dev)
    notify = ble.gatts_notify
    cut = []

    def drop_first(conn, handle, data=None):
        if handle == dev.ble.h_event and not cut:
            cut.append(HP.decode_event(data).seq)
            ble.disconnect()  # the IRQ runs inside the call, before the stack sends
        return notify(conn, handle, data)  # raises: the link is gone

    ble.gatts_notify = drop_first
    dev.run(400)
    got = ble.take(dev.ble.h_event)
    assert cut and dev._tx_at[dev._slot] == cut[0]  # the unsent event is still next
    _connect(ble, dev)
    last = HP.decode_event(got[-1]).seq if got else 0
    assert _command(ble, dev, HP.cmd_backfill(last + 1)).ok
    dev.run()
    seqs = {HP.decode_event(d).seq for d in got + ble.take(dev.ble.h_event)}
    assert seqs == set(range(1, dev.ring.head))


class _IrqStorm:
    """Fires random central actions (connect, pair, MTU, Control writes, disconnect) as
    IRQs at random lines of firmware/device.py, the way the ESP32 switches threads."""

    WRITES = (HP.cmd_raw_start(), HP.cmd_raw_stop(), HP.cmd_get_config(), HP.cmd_set_stride(140))

    def __init__(self, dev, ble, seed, rate):
        import random

        self.dev, self.ble = dev, ble
        self.rng = random.Random(seed)
        self.rate = rate
        self.fired = 0
        self.writes: list[bytes] = []
        self.file = str(FIRMWARE / "device.py")
        self._busy = False

    def tracer(self, frame, event, arg):
        if frame.f_code.co_filename != self.file:
            return None
        return self._line

    def _line(self, frame, event, arg):
        if event == "line" and not self._busy and self.rng.random() < self.rate:
            self._busy = True
            try:
                self._irq()
            finally:
                self._busy = False
        return self._line

    def _irq(self):
        ble, dev, rng = self.ble, self.dev, self.rng
        self.fired += 1
        if ble.conn is None:
            ble.connect(conn=rng.choice((1, 2, 64)))
            for h in (dev.ble.h_event, dev.ble.h_status, dev.ble.h_control, dev.ble.h_raw):
                ble.subscribe(h)
            return
        roll = rng.random()
        if roll < 0.15:
            ble.disconnect()
        elif roll < 0.3 and not ble.encrypted:
            ble.pair()
        elif roll < 0.4:
            ble.exchange_mtu(rng.randrange(23, 248))
        elif roll < 0.5:
            ble.handler(F.IRQ_CONNECTION_UPDATE, (ble.conn, rng.randrange(6, 3200), 0, 400, 0))
        elif roll < 0.6:
            ble.nomem_next = rng.randrange(0, 4)
        else:
            head = dev.ring.head
            if roll < 0.7:  # near the head, behind and ahead of it
                data = HP.cmd_backfill(rng.randrange(max(0, head - 40), head + 4))
            elif roll < 0.75:
                data = HP.cmd_backfill(rng.randrange(0, 0x10000))
            else:
                data = rng.choice(self.WRITES)
            if ble.write(dev.ble.h_control, data) == 0:
                self.writes.append(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_irq_storm_at_every_line_leaves_a_consistent_insole(seed):
    trace = _synth(strides_ms=[1000] * 25)
    samples = trace.tolist()
    dev, ble, _ = F.build(_flat(trace))
    storm = _IrqStorm(dev, ble, seed, rate=0.01)
    sys.settrace(storm.tracer)
    try:
        dev.run()
        dev.idle(100)
    finally:
        sys.settrace(None)
    assert storm.fired > 500 and storm.writes
    out = bytearray(20)
    for handle, data in ble.notes:
        if handle == dev.ble.h_event:  # every event sent is the ring's event of that number
            dev.ring.copy(HP.decode_event(data).seq, out)
            assert data == bytes(out)
        elif handle == dev.ble.h_raw:  # every raw packet holds the samples its index names
            p = HP.decode_raw(data)
            assert [list(s) for s in p.samples] == samples[p.index - 1 : p.index + 2]
        elif handle == dev.ble.h_control:
            r = HP.decode_reply(data)
            assert r.op in {w[0] for w in storm.writes}
        elif handle == dev.ble.h_status:
            HP.decode_status(data)
    # the storm is over: a fresh central gets every event back, in order
    if ble.conn is not None:
        ble.disconnect()
    for _ in range(8):
        dev.service()  # writes still queued are answered to nobody
    ble.nomem_next = 0
    ble.notes = []
    _connect(ble, dev)
    r = _command(ble, dev, HP.cmd_backfill(0))
    assert r.ok and r.data == {"first_seq": 0, "count": dev.ring.head}
    for _ in range(300):
        dev.service()
    evs = _decode_all(ble.take(dev.ble.h_event))
    assert [e.seq for e in evs] == list(range(dev.ring.head))
    joiner = HP.StepJoiner()
    for e in evs:
        joiner.add(e)
    rows, _ = _detector_rows(trace)
    assert joiner.rows() == rows and len(rows) >= 20


# ---- the counters on both interpreters ----

_COUNTERS = """
import binascii
from array import array
import fw_fakes as F
import protocol as P
def fill(dev, n):
    pkt = bytearray(20)
    for _ in range(n):
        P.pack_start(pkt, dev.ring.head, 0, 100, 0, 0)
        dev._put(pkt)
dev, ble, fs = F.build(array("H", [2000, 2500, 1800] * 2500))
fill(dev, 3000)
dev.loop(100)
st = ble.gatts_read(dev.ble.h_status)
print("lost", dev.lost, st[14] | st[15] << 8)
dev.lost = (1 << 29) - 3
fill(dev, 10)
print("lost_max", dev.lost)
ble.connect(); ble.pair()
dev.service()
dev._command(b"\x06", True)  # RAW_START
ble.nomem_next = 1 << 28
top = 0
for _ in range(600):
    dev.loop(1)
    top = max(top, dev._raw_tail, dev._raw_queued)
print("raw", top, dev.raw_lost)
ble.nomem_next = 0
s = dev.sampler
s.uptime_s = (1 << 29) - 1
s._ms_in_s = 990
dev.loop(1)
print("uptime", s.uptime_s, dev._counts[STATUS_S])
log = dev._log
log._window = log.clock.ms
log._lines = 5
log.dropped = (1 << 29) - 3
for _ in range(20):
    log("t", "x")
print("dropped", log.dropped)
dev._step_base = (1 << 29) - 3
dev.det.steps = 7
print("steps", dev.steps)
def broken():
    raise OSError(22)
dev._battery_fn = broken
s.uptime_s = 9
s._ms_in_s = 990
dev.loop(1)
print("battery", dev.battery_errors, dev._battery_mv)
dev.ring.head = 0x31234
import control
print("ahead", binascii.hexlify(control.backfill(dev, 0x1235)).decode())
print("behind", binascii.hexlify(control.backfill(dev, 0x9234)).decode())
""".replace("STATUS_S", str(fw_device._STATUS_S))
# (the index of a private const(): no attribute of the module under MicroPython)


def test_counters_wrap_or_saturate_on_both_interpreters():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(_COUNTERS, {})
    cp = buf.getvalue()
    mp = run_micropython(_COUNTERS, path=[str(FIRMWARE), str(TESTS)])
    assert mp == cp
    got = dict(line.split(" ", 1) for line in cp.splitlines())
    assert got["lost"] == "1977 1977"  # 3001 events made, 1024 held
    assert got["lost_max"] == str((1 << 29) - 1)
    top, raw_lost = map(int, got["raw"].split())
    assert top == 15 and raw_lost > 150  # the queue stays within its 16 slots
    assert got["uptime"] == "0 0"  # wrapped, and the once-a-second work saw the tick
    assert got["dropped"] == str((1 << 29) - 1)
    assert got["steps"] == str((1 << 29) - 1)
    assert got["battery"] == "1 3750"  # the read failed: the last good value stays
    assert got["ahead"] == "080934120000" and got["behind"] == "0807340e0004"


# ---- centrals coming and going, even across races with the IRQ handler ----

def test_a_central_without_a_bond_does_not_replace_the_paired_one():
    dev, ble, _ = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    _connect(ble, dev)
    adverts = []
    ble.gap_advertise = lambda *a, **k: adverts.append(a)
    # a second central gets in (advertising goes on while a slot is free) ...
    ble.handler(F.IRQ_CENTRAL_CONNECT, (65, 0, b"\x01\x02\x03\x04\x05\x06"))
    assert dev.ble.conn == 64 and len(adverts) == 1  # ... and does not take the events
    ble.handler(F.IRQ_CENTRAL_DISCONNECT, (64, 0, b"\x11\x22\x33\x44\x55\x66"))
    assert len(adverts) == 2 and dev.ble.conn == -1
    ble.handler(F.IRQ_CENTRAL_DISCONNECT, (65, 0, b"\x01\x02\x03\x04\x05\x06"))
    assert len(adverts) == 3 and dev.ble.conn == -1


def test_control_writes_of_a_central_that_left_are_not_carried_out_for_the_next():
    dev, ble, _ = F.build(_flat(_synth(strides_ms=[1000] * 2)))
    _connect(ble, dev)
    name_before = dev.cfg["name"]
    assert ble.write(dev.ble.h_control, HP.cmd_set_name("Stranger")) == 0
    ble.disconnect()  # before the sampling loop took the write
    ble.connect(conn=70)
    ble.pair()
    dev.service()
    assert dev.cfg["name"] == name_before
    assert ble.take(dev.ble.h_control) == []
    # the new central's own writes go through
    assert _command(ble, dev, HP.cmd_set_name("Owner")).error == HP.ERR_OK
    assert dev.cfg["name"] == "Owner"
