"""host_tools.ble.protocol against the shared byte vectors (tests/vectors/protocol.json)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host_tools.ble import protocol as P

VECTORS = json.loads((Path(__file__).parent / "vectors" / "protocol.json").read_text())


def _ids(group):
    return [v["name"] for v in VECTORS[group]]


@pytest.mark.parametrize("vec", VECTORS["events"], ids=_ids("events"))
def test_decode_events(vec):
    ev = P.decode_event(bytes.fromhex(vec["hex"]))
    assert ev.kind == vec["kind"]
    for name, value in vec["fields"].items():
        if name == "heel_off_ms":
            assert ev.heel_off_ms == value
        else:
            assert getattr(ev, name) == value, name
    if ev.kind == "step":
        f = vec["fields"]
        assert ev.toe_off_ms == f["strike_ms"] + f["stance_ms"]


def _check_status_flags(s: P.Status, flags: int) -> None:
    assert s.side == ("R" if flags & 1 else "L")
    assert s.raw_streaming == bool(flags & 2)
    assert s.encrypted == bool(flags & 4)
    assert s.mode == flags >> 4
    assert s.journal_dropped == bool(flags & P.STATUS_JOURNAL_DROPPED)


@pytest.mark.parametrize("vec", VECTORS["status"], ids=_ids("status"))
def test_decode_status(vec):
    s = P.decode_status(bytes.fromhex(vec["hex"]))
    # fields as the firmware packs them; "decoded" where the wire rounds or saturates
    want = dict(vec["fields"], **vec.get("decoded", {}))
    _check_status_flags(s, want.pop("flags"))
    assert s.format == 2 and s.fw_major is None
    for name, value in want.items():
        assert getattr(s, name) == value, name


@pytest.mark.parametrize("vec", VECTORS["status_v1"], ids=_ids("status_v1"))
def test_decode_status_format_1(vec):
    s = P.decode_status(bytes.fromhex(vec["hex"]))
    want = dict(vec["fields"])
    _check_status_flags(s, want.pop("flags"))
    assert s.format == 1 and (s.lost, s.faults) == (None, None)
    for name, value in want.items():
        assert getattr(s, name) == value, name
    assert s.faults_text() == "not reported"


def test_status_channel_faults():
    vec = next(v for v in VECTORS["status"] if v["fields"]["faults"] == 0x0401)
    s = P.decode_status(bytes.fromhex(vec["hex"]))
    assert s.channel_faults() == {"heel": "dead", "arch": "ok", "fore": "noisy"}
    assert s.faults_text() == "heel dead, fore noisy"
    every = P.Status("L", False, False, 0, 100, 0, 0, 0, 0, 0, lost=0, faults=0x0532)
    assert every.channel_faults() == {"heel": "saturated", "arch": "stuck", "fore": "jumps"}
    assert P.Status("L", False, False, 0, 100, 0, 0, 0, 0, 0, faults=0x0009).channel_faults()[
        "heel"] == "fault 9"
    assert P.Status("L", False, False, 0, 100, 0, 0, 0, 0, 0, faults=0).faults_text() == "ok"
    vec = next(v for v in VECTORS["status"] if v["fields"]["faults"] == 0x0606)
    s = P.decode_status(bytes.fromhex(vec["hex"]))
    assert s.faults_text() == "heel wrong-mains, fore wrong-mains"
    assert P.fault_hints(["heel wrong-mains", "arch noisy"]) == [P.NOISY_HINT,
                                                                 P.WRONG_MAINS_HINT]
    assert P.fault_hints(["heel wrong-mains"]) == [P.WRONG_MAINS_HINT]
    assert P.fault_hints(["heel dead"]) == []


@pytest.mark.parametrize("vec", VECTORS["raw"], ids=_ids("raw"))
def test_decode_raw(vec):
    r = P.decode_raw(bytes.fromhex(vec["hex"]))
    assert r.index == vec["fields"]["index"]
    assert [list(s) for s in r.samples] == vec["fields"]["samples"]


@pytest.mark.parametrize("vec", VECTORS["rsc"], ids=_ids("rsc"))
def test_decode_rsc(vec):
    r = P.decode_rsc(bytes.fromhex(vec["hex"]))
    f = vec["fields"]
    assert (r.speed_256, r.cadence, r.running) == (f["speed_256"], f["cadence"], f["running"])
    assert (r.stride_cm, r.distance_dm) == (f["stride_cm"], f["distance_dm"])


def test_decode_rsc_without_optional_fields():
    # a stock collector must cope with the minimal form too
    r = P.decode_rsc(bytes([0x04, 0x00, 0x02, 90]))
    assert (r.speed_mps, r.cadence, r.running, r.stride_cm, r.distance_dm) == (2.0, 90, True,
                                                                               None, None)


@pytest.mark.parametrize("vec", VECTORS["replies"], ids=_ids("replies"))
def test_decode_replies(vec):
    r = P.decode_reply(bytes.fromhex(vec["hex"]))
    f = dict(vec["fields"])
    assert (r.op, r.error) == (f.pop("op"), f.pop("error"))
    if "side" in f:
        f["side"] = P.SIDES[f["side"]]
    assert r.data == f


_ENCODERS = {
    P.OP_SET_SIDE: P.cmd_set_side,
    P.OP_SET_NAME: P.cmd_set_name,
    P.OP_SET_RATE: P.cmd_set_rate,
    P.OP_SET_STRIDE: P.cmd_set_stride,
    P.OP_BACKFILL: P.cmd_backfill,
    P.OP_SET_MAINS: P.cmd_set_mains,
    # slow walk (mode 4) carries target x10, tolerance % and pattern
    P.OP_SET_MODE: lambda v: P.cmd_set_mode(
        v[0], struct.pack("<HBB", *v[1:]) if v[0] == 4 else b""
    ),
}


_VALID = [v for v in VECTORS["commands"] if v["error"] == P.ERR_OK]


@pytest.mark.parametrize("vec", _VALID, ids=[v["name"] for v in _VALID])
def test_encode_valid_commands(vec):
    op, value = vec["op"], vec["value"]
    enc = _ENCODERS.get(op)
    if op == P.OP_BACKFILL and len(vec["hex"]) == 10:
        enc = P.cmd_backfill_wide  # the 29-bit form
    if enc is None:
        simple = {P.OP_ZERO: P.cmd_zero, P.OP_RAW_START: P.cmd_raw_start,
                  P.OP_RAW_STOP: P.cmd_raw_stop, P.OP_GET_CONFIG: P.cmd_get_config,
                  P.OP_GET_JOURNAL: P.cmd_get_journal}
        data = simple[op]()
    else:
        data = enc(value)
    assert data.hex() == vec["hex"]


def test_encoders_refuse_out_of_range():
    for bad in (lambda: P.cmd_set_rate(49), lambda: P.cmd_set_rate(401),
                lambda: P.cmd_set_stride(29), lambda: P.cmd_set_side("middle"),
                lambda: P.cmd_set_name("A-B"), lambda: P.cmd_set_name(""),
                lambda: P.cmd_set_name("x" * 13), lambda: P.cmd_set_mode("dance"),
                lambda: P.cmd_set_mains(55), lambda: P.cmd_set_mains(60.0),
                lambda: P.cmd_set_mains(True)):
        with pytest.raises(ValueError):
            bad()
    assert P.cmd_set_side("right") == bytes([1, 1])
    assert P.cmd_set_mode("heel_raise") == bytes([9, 1])


def test_bad_payloads_raise_protocol_error():
    with pytest.raises(P.ProtocolError, match="19 bytes"):
        P.decode_event(bytes(19))
    with pytest.raises(P.ProtocolError, match="format 2"):
        P.decode_event(bytes([2, 1]) + bytes(18))
    with pytest.raises(P.ProtocolError):
        P.decode_status(bytes(10))
    with pytest.raises(P.ProtocolError, match="format 3"):
        P.decode_status(bytes([3]) + bytes(19))
    with pytest.raises(P.ProtocolError):
        P.decode_rsc(bytes([1, 0, 0, 0, 5]))  # stride flagged but cut short


def test_exercise_kinds_decode_as_other():
    data = bytes([1, 0x10, 5, 0]) + bytes(range(16))
    ev = P.decode_event(data)
    assert isinstance(ev, P.OtherEvent)
    assert (ev.seq, ev.kind_code, ev.payload) == (5, 0x10, bytes(range(16)))


@given(st.lists(st.integers(0, 40), min_size=1, max_size=200))
def test_seq_unwrapper_follows_wraps(gaps):
    unwrap = P.SeqUnwrapper()
    full = 65530
    assert unwrap(full & 0xFFFF) == full
    for g in gaps:
        full += g
        assert unwrap(full & 0xFFFF) == full
    # a replay from a little earlier is not a wrap
    assert unwrap((full - 100) & 0xFFFF) == full - 100
    assert unwrap((full + 1) & 0xFFFF) == full + 1


def test_step_joiner_builds_rows_in_order():
    step = P.decode_event(bytes.fromhex(VECTORS["events"][1]["hex"]))
    load = P.decode_event(bytes.fromhex(VECTORS["events"][2]["hex"]))
    j = P.StepJoiner()
    j.add(load)
    j.add(step)
    j.add(step)  # duplicate from a backfill
    assert j.rows() == [(21, 10230, 10870, 10700, 640, 420, 1070, 1, 41000, 9000, 30500, 412,
                         121, 466)]


def test_banner_regex_matches_documented_line():
    doc = (Path(__file__).parents[1] / "docs" / "PROTOCOL.md").read_text()
    line = next(s.strip() for s in doc.splitlines() if s.strip().startswith("insole 0.1.0 "))
    m = re.match(P.BANNER_RE, line)
    assert m and m["board"] == "ESP32 DevKitC (WROOM-32)" and m["name"] == "Insole-L-1A2B"


def test_doc_examples_are_vectors():
    # every worked hex example in docs/PROTOCOL.md is one of the checked vectors
    doc = (Path(__file__).parents[1] / "docs" / "PROTOCOL.md").read_text()
    examples = {m.replace(" ", "") for m in re.findall(r"`((?:[0-9a-f]{2} ){5,}[0-9a-f]{2})`", doc)}
    known = {v["hex"] for group in ("events", "status", "status_v1", "raw", "rsc", "replies",
                                    "commands")
             for v in VECTORS[group]}
    assert examples and examples <= known, examples - known
