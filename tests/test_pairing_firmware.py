"""The firmware's side of pairing on fake hardware (tests/fw_fakes.py): the passkey
made at first boot, the pairing window and its gesture in the sampling loop, keys of
unauthenticated pairings dropped, a bond a failed pairing deleted put back, protected
reads refused by the firmware itself, advertising while a connection slot is free."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT / "firmware"), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import config as fw_config  # noqa: E402
import fw_fakes as F  # noqa: E402

from tests.test_pairing_gesture import gesture_trace  # noqa: E402

PEER = F.PEER_KEY  # FakeBLE's central (type 0, address LSB first)


def _flat(trace) -> list[int]:
    return [int(v) for v in np.asarray(trace).ravel()]


def _build(trace, files=None):
    sink = F.LogSink()
    dev, ble, fs = F.build(_flat(trace), files=files, log_out=sink)
    return dev, ble, fs, sink


def test_the_passkey_is_made_once_and_kept():
    rolls = iter([b"\xff\xff\x0f", b"\x00\x00\x00", b"\x07\x00\x00"])  # over, 0, 7
    store_fs = F.MemFS()
    store = fw_config.ConfigStore("insole.json", lambda *a: None, fs=store_fs,
                                  opener=store_fs.open)
    cfg = store.ensure_passkey(store.load(), lambda n: next(rolls))
    assert cfg["passkey"] == 7  # 1048575 and 0 are drawn again
    assert json.loads(store_fs.files["insole.json"])["passkey"] == 7
    again = store.ensure_passkey(store.load(), lambda n: b"\x01\x00\x00")
    assert again["passkey"] == 7
    draws = {fw_config.new_passkey() for _ in range(200)}
    assert len(draws) > 190 and all(0 < v <= 999999 for v in draws)


def test_the_gesture_in_the_sampling_loop_opens_the_window_and_forgets():
    trace = np.concatenate([gesture_trace(6, stand_s=130.0), gesture_trace(12, seed=5)])
    from bonds import Bonds
    from log import Log

    dev, ble, fs, sink = _build(trace)
    store = F.MemFS()
    dev.ble._bonds = Bonds("b.json", Log(F.LogSink()), fs=store, opener=store.open)
    ble.connect()
    assert ble.pair()  # within two minutes of power-on: bonded
    assert dev.ble._bonds.peers() == [PEER]
    dev.run(130 * 100)
    assert not dev.ble.window.open  # two minutes are over
    dev.run()
    lines = [x.split(" ", 1)[1] for x in sink.lines]
    assert "pair window closed (time up)" in lines
    assert "pair window open 120 s (gesture)" in lines
    assert "pair all bonds forgotten" in lines and "pair window open 120 s (forget)" in lines
    assert lines.index("pair window open 120 s (gesture)") < lines.index(
        "pair all bonds forgotten")
    assert ble.kicked == [64]  # the bonded link is ended: its keys are gone
    dev.ble.flush()
    assert dev.ble._bonds.peers() == []
    assert json.loads(store.files["b.json"]) == []  # and the file says so


def test_outside_the_window_the_passkey_is_not_given_and_the_link_ends():
    dev, ble, fs, sink = _build(gesture_trace(0, stand_s=125.0))
    dev.run(122 * 100)
    ble.connect()
    assert not ble.pair()
    assert ble.passkeys == [] and ble.disconnects == 1 and ble.conn is None
    assert any("refused: window closed" in x for x in sink.lines)


def test_three_failed_pairings_close_the_window():
    dev, ble, fs, sink = _build(gesture_trace(0, stand_s=5.0))
    for _ in range(3):
        ble.connect()
        assert not ble.pair(passkey=111111)  # the firmware's is 123456
        dev.service()
        ble.disconnect()
    assert not dev.ble.window.open
    ble.connect()
    assert not ble.pair()  # even with the right one: no passkey given
    assert dev.ble.window.failures == 3 and dev.ble.failed_pairings == 3


def test_just_works_keys_are_dropped_and_a_deleted_bond_comes_back():
    from bonds import Bonds
    from log import Log

    log = Log(F.LogSink())
    fs = F.MemFS()
    dev, ble, _fs, sink = _build(gesture_trace(0, stand_s=3.0))
    radio = dev.ble
    radio._bonds = Bonds("b.json", log, fs=fs, opener=fs.open)
    ble.connect()
    assert ble.pair()  # the owner bonds
    owner = radio._bonds.get(1, 0, PEER)
    assert owner == b"ltk-value"
    ble.disconnect()
    # a stranger with the owner's address: NimBLE's repeat pairing deletes the old
    # bond first, then the pairing goes "just works"
    ble.connect()
    assert ble.handler(F.IRQ_SET_SECRET, (1, PEER, None)) is True
    assert ble.handler(F.IRQ_SET_SECRET, (2, PEER, None)) is True
    assert ble.handler(F.IRQ_SET_SECRET, (1, PEER, None)) is False  # nothing left
    assert not ble.pair(mitm=False)
    assert radio._bonds.get(1, 0, PEER) == owner  # put back
    assert radio._bonds.get(2, 0, PEER) == b"irk-value"
    assert not radio.link_ready(0) and radio.conn == -1
    assert radio._held == [] and radio._undo == []  # nothing of the stranger's kept


def test_protected_reads_are_refused_by_the_firmware_itself():
    dev, ble, fs, sink = _build(gesture_trace(0, stand_s=3.0))
    h_status, h_battery = dev.ble.h_status, dev.ble.h_battery
    ble.connect()
    assert ble.handler(F.IRQ_GATTS_READ_REQUEST, (64, h_status)) == 0x05
    assert ble.handler(F.IRQ_GATTS_READ_REQUEST, (64, h_battery)) == 0
    assert ble.handler(F.IRQ_GATTS_READ_REQUEST, (0xFFFF, h_status)) == 0
    ble.pair()
    assert ble.handler(F.IRQ_GATTS_READ_REQUEST, (64, h_status)) == 0


def test_advertising_goes_on_until_every_connection_slot_is_taken():
    dev, ble, fs, sink = _build(gesture_trace(0, stand_s=3.0))
    adverts = []
    ble.gap_advertise = lambda *a, **k: adverts.append(a)
    for conn in (1, 2, 3):
        ble.handler(F.IRQ_CENTRAL_CONNECT, (conn, 1, b"\x01\x02\x03\x04\x05\x06"))
    assert len(adverts) == 3
    ble.handler(F.IRQ_CENTRAL_CONNECT, (4, 1, b"\x01\x02\x03\x04\x05\x07"))
    dev.service()
    assert len(adverts) == 3  # four links: nothing to offer
    ble.handler(F.IRQ_CENTRAL_DISCONNECT, (2, 1, b"\x01\x02\x03\x04\x05\x06"))
    assert len(adverts) == 4
