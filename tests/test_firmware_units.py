"""Firmware building blocks: wire format, event ring, sampler timing, config file, log.

Each runs under CPython here; the wire-format vectors also run under the micropython
binary, so both interpreters and the host decoder agree byte for byte.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import config as fw_config  # noqa: E402
import control_wire as FW_CONTROL  # noqa: E402
import fw_fakes as F  # noqa: E402
import protocol as FP  # noqa: E402
from log import Log  # noqa: E402
from ring import _SEQ_MASK as SEQ_MASK  # noqa: E402
from ring import EventRing  # noqa: E402
from sampler import Sampler  # noqa: E402

from tests.mpy import run_micropython  # noqa: E402

VECTORS_PATH = TESTS / "vectors" / "protocol.json"
VECTORS = json.loads(VECTORS_PATH.read_text())

# The check runs unchanged in both interpreters: it prints one line per vector.
_VECTOR_CHECK = """
import json, binascii
from array import array
import protocol as P
import control_wire as W
V = json.load(open(%r))
PACK = {"strike": P.pack_strike, "step": P.pack_step, "load": P.pack_load, "start": P.pack_start}
def hx(b):
    return binascii.hexlify(b).decode()
def check(group, name, got, want):
    print(group, name, "ok" if got == want else "MISMATCH %%s != %%s" %% (got, want))
for v in V["events"]:
    b = bytearray(20)
    PACK[v["kind"]](b, **v["fields"])
    check("events", v["name"], hx(b), v["hex"])
for v in V["status"]:
    b = bytearray(20)
    P.pack_status(b, **v["fields"])
    check("status", v["name"], hx(b), v["hex"])
for v in V["raw"]:
    # the device's layout (device.py sample()): an array of u16, the sample index
    # first, sent as its bytes (a little-endian host, as the ESP32)
    b = array("H", [v["fields"]["index"]] + [x for s in v["fields"]["samples"] for x in s])
    check("raw", v["name"], hx(bytes(b)), v["hex"])
for v in V["rsc"]:
    b = bytearray(10)
    P.pack_rsc(b, **v["fields"])
    check("rsc", v["name"], hx(b), v["hex"])
for v in V["commands"]:
    op, err, value = W.parse_command(binascii.unhexlify(v["hex"]))
    if isinstance(value, tuple):
        value = list(value)
    check("commands", v["name"], [op, err, value], [v["op"], v["error"], v["value"]])
for v in V["replies"]:
    f = v["fields"]
    b = bytearray(20)
    if "first_seq" in f:
        n = W.pack_backfill_reply(b, f["error"], f["first_seq"], f["count"], f.get("wide", False))
    elif "head" in f:
        n = W.pack_journal_reply(b, f["head"], f["oldest_seq"], f["dropped_days"],
                                 f["journal_bytes"])
    elif "name" in f:
        n = W.pack_config_reply(b, f["side"], f["rate_hz"], f["stride_cm"], f["mains_hz"],
                                f["name"])
    else:
        n = W.pack_reply(b, f["op"], f["error"])
    check("replies", v["name"], hx(b[:n]), v["hex"])
"""


def _vector_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


def _n_vectors() -> int:
    return sum(len(VECTORS[k]) for k in ("events", "status", "raw", "rsc", "commands", "replies"))


def test_vectors_cpython(capsys):
    exec(_VECTOR_CHECK % str(VECTORS_PATH), {})
    lines = _vector_lines(capsys.readouterr().out)
    assert len(lines) == _n_vectors()
    assert all(line.endswith(" ok") for line in lines), [x for x in lines if "MISMATCH" in x]


def test_vectors_micropython():
    out = run_micropython(_VECTOR_CHECK % str(VECTORS_PATH), path=[str(FIRMWARE)])
    lines = _vector_lines(out)
    assert len(lines) == _n_vectors()
    assert all(line.endswith(" ok") for line in lines), [x for x in lines if "MISMATCH" in x]


def test_packets_fit_default_mtu_and_seq_wraps():
    b = bytearray(FP._EVENT_SIZE)
    FP.pack_strike(b, 0x10005, 1, 2, 3)
    assert len(b) <= 20 and b[2] | b[3] << 8 == 5
    assert FP._RAW_SIZE <= 20 and FP._STATUS_SIZE <= 20 and FP._RSC_SIZE <= 20
    FP.pack_step(b, 1, 1, 100, 10, 0, 0, 99)  # heel-off before strike: marked unknown
    assert b[18:20] == b"\xff\xff"


def test_the_firmwares_private_wire_constants_match_the_host_decoder():
    # private const()s take no RAM on the insole; under CPython they are module
    # attributes, so each is checked against the host's copy here
    import ble_gatt
    import device

    from host_tools.ble import protocol as HP

    assert FP._STATUS_FORMAT == HP.STATUS_FORMAT
    assert FP._STATUS_BATTERY_UNIT_MV == HP.STATUS_BATTERY_UNIT_MV
    assert device._STATUS_JOURNAL_DROPPED == HP.STATUS_JOURNAL_DROPPED
    for name in ("SERVICE", "STEP_EVENT", "STATUS", "CONTROL", "RAW"):
        assert getattr(ble_gatt, "_UUID_" + name) == getattr(HP, "UUID_" + name), name
    flags = device._STATUS_RAW | device._STATUS_ENCRYPTED | device._STATUS_JOURNAL_DROPPED
    b = bytearray(20)
    FP.pack_status(b, 1 | flags | 3 << device._STATUS_MODE_SHIFT, 100, 0, 0, 0, 0, 0, 0, 0)
    s = HP.decode_status(bytes(b))
    assert s.side == "R" and s.raw_streaming and s.encrypted and s.journal_dropped, s
    assert s.mode == 3, s


# modules that keep private const() copies of another module's constants (a const()
# imported from a module would be a global: an interned name and a lookup per use)
_CONST_COPIES = {
    "protocol": ("device", "control", "control_wire", "modes", "config", "ble_insole"),
    "ble_insole": ("device", "ble_gatt"),
    "pairing": ("device",),
    "bonds": ("bonds_load",),
    "journal": ("journal_boot", "journal_write"),
    "device": ("modes", "control"),
}


def test_private_constant_copies_match_their_module():
    import importlib

    from host_tools.ble import protocol as HP

    checked = 0
    for source, users in _CONST_COPIES.items():
        src = vars(importlib.import_module(source))
        for user in users:
            mine = vars(importlib.import_module(user))
            shared = [k for k in mine if k[:2] != "__" and k[:1] == "_" and k[1:2].isupper()
                      and k in src and type(src[k]) is int]
            assert shared, (source, user)
            for k in shared:
                assert mine[k] == src[k], (user, k, source)
                checked += 1
    assert checked >= 80, checked
    # and protocol.py's against the host decoder wherever it names the same thing
    named = [k for k in vars(FP) if k[:1] == "_" and hasattr(HP, k[1:])]
    assert len(named) >= 40, named
    for k in named:
        assert getattr(FP, k) == getattr(HP, k[1:]), k
    import device
    import ring

    assert device._SEQ29 == ring._SEQ_MASK


@given(st.binary(max_size=24))
def test_parse_command_total(data):
    op, err, value = FW_CONTROL.parse_command(data)
    assert err in range(0, 9)
    assert (err == FP._ERR_OK) or value is None
    if err == FP._ERR_OK and op == FP._OP_SET_RATE:
        assert FP._RATE_MIN <= value <= FP._RATE_MAX


def test_backfill_ahead_is_the_upper_half_window():
    for head in (0, 5, 0x1234, 0xFFFF, 0x10000, 0x31234, (1 << 29) - 1):
        ahead = {f: FW_CONTROL.backfill_ahead(f, head) for f in range(0x10000)}
        h16 = head & 0xFFFF
        assert sum(1 for a in ahead.values() if a) == 0x7FFF  # just under half the values
        assert ahead[h16] == 0  # the head itself: nothing missing
        assert ahead[(h16 + 1) & 0xFFFF] == 1
        assert ahead[(h16 + 0x7FFF) & 0xFFFF] == 0x7FFF  # the farthest still ahead
        assert ahead[(h16 + 0x8000) & 0xFFFF] == 0  # 32768 behind
        assert ahead[(h16 - 1) & 0xFFFF] == 0


# ---- ring ----


def test_ring_keeps_last_capacity_events_across_wrap():
    r = EventRing(512, 20)
    r.head = SEQ_MASK - 100  # close to the sequence wrap
    pkt = bytearray(20)
    seqs = []
    for i in range(1300):
        pkt[0] = i & 0xFF
        pkt[19] = (i >> 8) & 0xFF
        seqs.append(r.put(pkt))
    assert r.count == 512
    assert seqs[101] == 0  # wrapped
    out = bytearray(20)
    for i in range(1300 - 512, 1300):
        assert r.held(seqs[i])
        r.copy(seqs[i], out)
        assert out[0] | (out[19] << 8) == i
    assert not r.held(seqs[1300 - 513])
    assert not r.held(r.head)
    assert r.oldest() == seqs[1300 - 512]


def test_ring_refuses_small_or_odd_capacity():
    with pytest.raises(ValueError):
        EventRing(8)
    with pytest.raises(ValueError):
        EventRing(65536)
    with pytest.raises(ValueError):
        EventRing(1000)


# ---- sampler ----


@pytest.mark.parametrize("rate", [50, 100, 200, 300, 400])
def test_sampler_deadlines_exact_on_average(rate):
    clock = F.FakeClock()
    s = Sampler(rate, clock)
    s.wait()
    t0 = clock.us
    for _ in range(rate * 3):
        s.wait()
    elapsed = clock.ticks_diff(clock.us, t0)
    assert elapsed == 3000000  # three seconds to the microsecond, across the tick wrap
    assert s.count == rate * 3 + 1
    assert s.uptime_s == 3 and s.overruns == 0


def test_sampler_late_work_does_not_shift_later_samples():
    clock = F.FakeClock()
    s = Sampler(100, clock)
    s.wait()
    t0 = clock.us
    s.wait()
    clock.work(6000)  # a slow sample (6 ms of a 10 ms period)
    s.wait()
    assert clock.ticks_diff(clock.us, t0) == 20000
    clock.work(25000)  # 2.5 periods late: overrun, then catch up
    s.wait()
    assert s.overruns == 1
    s.wait()
    s.wait()
    assert clock.ticks_diff(clock.us, t0) == 50000 and s.overruns == 1


def test_sampler_resyncs_after_long_stall():
    clock = F.FakeClock()
    s = Sampler(100, clock)
    s.wait()
    clock.work(500000)
    s.wait()
    t = clock.us
    s.wait()
    assert clock.ticks_diff(clock.us, t) == 10000  # one period after the stall, no race
    assert s.overruns == 1


def test_sampler_uptime_wraps_and_overruns_saturate():
    clock = F.FakeClock()
    s = Sampler(100, clock)
    s.wait()
    s.uptime_s = SEQ_MASK  # 2**29 - 1 s
    s.overruns = SEQ_MASK
    for _ in range(100):
        s.wait()
    assert s.uptime_s == 0  # wrapped after 17 years
    clock.work(30000)  # three periods late
    s.wait()
    assert s.overruns == SEQ_MASK  # saturated


def test_sampler_ms_clock_is_sample_count():
    clock = F.FakeClock()
    s = Sampler(300, clock)
    for _ in range(300 * 7):
        s.wait()
    assert s.ms == 7000 and s.uptime_s == 7


# ---- config ----


def _store(fs, log=None):
    return fw_config.ConfigStore("insole.json", log or Log(F.LogSink()), fs=fs, opener=fs.open)


def test_config_defaults_when_missing_and_roundtrip():
    fs = F.MemFS()
    st_ = _store(fs)
    assert st_.load() == fw_config.DEFAULTS
    new = dict(fw_config.DEFAULTS, side="R", name="Anna", rate_hz=200, stride_cm=151)
    assert st_.save(new)
    assert _store(fs).load() == new
    assert set(fs.files) == {"insole.json"}


def test_config_corrupt_file_gives_defaults_and_logs():
    sink = F.LogSink()
    fs = F.MemFS({"insole.json": '{"side": "R", "rate_'})
    assert _store(fs, Log(sink)).load() == fw_config.DEFAULTS
    assert any("cfg unreadable" in line for line in sink.lines)


def test_config_bad_fields_take_defaults():
    sink = F.LogSink()
    text = json.dumps({"side": "X", "name": "A-B", "rate_hz": 1000, "stride_cm": 150,
                       "extra": 1})
    cfg = _store(F.MemFS({"insole.json": text}), Log(sink)).load()
    assert cfg == dict(fw_config.DEFAULTS, stride_cm=150)
    assert sink.lines == ["0.000 cfg bad side name rate_hz, defaults"]  # one line for the file
    for text in ("[1, 2]", '"text"', "null", '{"rate_hz": 100.0, "stride_cm": true}'):
        assert _store(F.MemFS({"insole.json": text})).load() == fw_config.DEFAULTS


def test_config_refuses_to_save_invalid():
    fs = F.MemFS()
    assert not _store(fs).save(dict(fw_config.DEFAULTS, rate_hz=10))
    assert fs.files == {}


OLD = dict(fw_config.DEFAULTS, side="R", stride_cm=120)
NEW = dict(fw_config.DEFAULTS, side="L", name="Bob", rate_hz=200, stride_cm=160)


def _power_cut_cases(fs_class):
    # count the operations of one complete save, then cut at each, at each byte
    probe = fs_class({"insole.json": json.dumps(OLD)})
    assert _store(probe).save(NEW)
    n_steps = probe.steps
    text_len = len(json.dumps(NEW))
    for step in range(n_steps + 1):
        for cut_bytes in range(0, text_len + 1, 7):
            yield step, cut_bytes


@pytest.mark.parametrize("fs_class", [F.MemFS, F.NoReplaceFS])
def test_config_write_interrupted_anywhere_leaves_old_or_new(fs_class):
    seen = set()
    for step, cut_bytes in _power_cut_cases(fs_class):
        fs = fs_class({"insole.json": json.dumps(OLD)}, cut_at=step, cut_bytes=cut_bytes)
        ok = _store(fs).save(NEW)
        # the board reboots: a fresh file system view with the same files
        after = _store(fs_class(fs.files)).load()
        assert after in (OLD, NEW), (step, cut_bytes, fs.files)
        if ok:
            assert after == NEW
        seen.add("new" if after == NEW else "old")
        # and a later save still works from whatever was left
        fs2 = fs_class(fs.files)
        assert _store(fs2).save(NEW) and _store(fs_class(fs2.files)).load() == NEW
    assert seen == {"old", "new"}


@settings(max_examples=200)
@given(st.text(max_size=80))
def test_config_load_never_fails(text):
    cfg = _store(F.MemFS({"insole.json": text})).load()
    assert set(cfg) == set(fw_config.DEFAULTS)
    assert all(fw_config.valid(k, v) for k, v in cfg.items())


# ---- log ----


class _Clock:
    ms = 0


def test_log_is_rate_limited_and_reports_drops():
    sink = F.LogSink()
    log = Log(sink)
    clock = _Clock()
    log.clock = clock
    for i in range(50):
        log("ble", f"x{i}")
    assert len(sink.lines) == 5
    clock.ms = 1500
    log("ble", "later")
    assert sink.lines[5] == "1.500 log +45"
    assert sink.lines[6] == "1.500 ble later"
    assert all(len(line) < 40 for line in sink.lines)


def test_log_drop_count_saturates_while_the_clock_stands_still():
    sink = F.LogSink()
    log = Log(sink)
    log.clock = _Clock()  # BLE served without sampling: device time does not move
    for _ in range(10):
        log("x", "y")
    log.dropped = SEQ_MASK - 2
    for _ in range(10):
        log("x", "y")
    assert log.dropped == SEQ_MASK and len(sink.lines) == 5
    log.clock.ms = 1000
    log("x", "later")
    assert sink.lines[5] == f"1.000 log +{SEQ_MASK}"
