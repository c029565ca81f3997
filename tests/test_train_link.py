"""`insole train` over a BLE link: SET_MODE, live exercise events, back to walk mode.

The link is a stand-in for host_tools.ble.capture.Link that answers like the insole
protocol (docs/PROTOCOL.md, docs/EXERCISES.md): a Control reply per command and, once
an exercise mode is set, the Step Event packets that firmware/exercise.py produces for
a generated trace."""

from __future__ import annotations

import asyncio
import struct

import pytest

from host_tools.ble import protocol
from host_tools.ble.capture import Link
from host_tools.cli import main
from host_tools.cli import train as cmd_train
from host_tools.training import exercises, exgen, history


class ScriptedInsole(Link):
    name = "Insole-L-TEST"
    address = "AA:BB:CC:DD:EE:FF"

    def __init__(self, traces: dict[int, exgen.ExTrace], accept: bool = True):
        super().__init__()
        self.traces = traces
        self.accept = accept
        self.subs: dict[str, object] = {}
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self._task = None

    async def connect(self):
        self.events.append("connect")

    async def secure(self):
        self.events.append("secure")

    async def read(self, uuid):
        raise AssertionError("not used")

    async def subscribe(self, uuid, callback):
        self.subs[uuid] = callback

    async def write(self, uuid, data):
        assert uuid == protocol.UUID_CONTROL
        self.writes.append(bytes(data))
        op = data[0]
        if op == protocol.OP_SET_MODE and data[1] != 0 and not self.accept:
            err = protocol.ERR_UNSUPPORTED
        else:
            err = protocol.ERR_OK
        self.subs[protocol.UUID_CONTROL](bytes([op, err]), 0.0)
        if op == protocol.OP_SET_MODE and err == protocol.ERR_OK and data[1] != 0:
            self._task = asyncio.get_running_loop().create_task(self._stream(data))

    async def _stream(self, cmd: bytes):
        mode = cmd[1]
        tr = self.traces[mode]
        cfg = struct.unpack("<HBB", cmd[2:6]) if mode == 4 else ()
        notify = self.subs[protocol.UUID_STEP_EVENT]
        notify(bytes([1, protocol.KIND_START]) + bytes(18), 0.0)  # not an exercise event
        for _, pkt in exercises.iter_cpython(mode, tr.samples, tr.rate_hz, *cfg):
            notify(pkt, 0.0)
            await asyncio.sleep(0)

    async def disconnect(self):
        self.events.append("disconnect")
        if self._task:
            self._task.cancel()


@pytest.fixture
def insole(monkeypatch):
    traces = {1: exgen.heel_raises(reps=8), 3: exgen.balance(hold_list=[4000, 5000]),
              4: exgen.slow_walk([1300.0] * 6)}
    made: list[ScriptedInsole] = []

    def factory(accept=True):
        def make_link(_args):
            async def open_link():
                link = ScriptedInsole(traces, accept)
                made.append(link)
                return link, None
            return open_link
        return make_link

    monkeypatch.setattr(cmd_train, "make_link", factory())
    return made, factory, monkeypatch


def test_heel_raises_over_ble_stop_at_the_target(insole, tmp_path, capsys):
    made, _, _ = insole
    db = tmp_path / "h.db"
    assert main(["train", "heel-raises", "--target", "5", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.count("  rep ") == 5 and "target reached" in out
    link = made[0]
    assert link.events[:2] == ["connect", "secure"] and link.events[-1] == "disconnect"
    assert link.writes == [bytes([protocol.OP_SET_MODE, 1]), bytes([protocol.OP_SET_MODE, 0])]
    (s,) = history.sessions(history.connect(db))
    assert s.metric("reps") == 5 and s.source == "ble:Insole-L-TEST"


def test_slow_walk_over_ble_sends_the_target_and_runs_for_the_duration(insole, tmp_path,
                                                                        capsys):
    made, _, _ = insole
    assert main(["train", "slow-walk", "--target", "92.3", "--tolerance", "3",
                 "--pattern", "rear", "--duration", "0.5", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert made[0].writes[0] == bytes([protocol.OP_SET_MODE, 4]) + struct.pack("<HBB", 923, 3, 1)
    assert out.count("  step ") == 6 and "good pace" in out


def test_balance_over_ble_and_a_refusing_insole(insole, tmp_path, capsys):
    made, factory, monkeypatch = insole
    assert main(["train", "balance", "--target", "9", "--no-save"]) == 0
    assert "target reached" in capsys.readouterr().out
    monkeypatch.setattr(cmd_train, "make_link", factory(accept=False))
    assert main(["train", "toe-scrunch", "--no-save"]) == 2
    err = capsys.readouterr().err
    assert "refused mode toe-scrunch" in err and "not supported" in err
    assert made[-1].events[-1] == "disconnect"


def test_sim_and_ble_options_do_not_mix(tmp_path, capsys):
    tr = tmp_path / "t.csv"
    exgen.write(exgen.heel_raises(reps=1), str(tr))
    assert main(["train", "heel-raises", "--sim", str(tr), "--duration", "3"]) == 2
    assert "--duration" in capsys.readouterr().err


def test_train_against_the_firmware_on_the_virtual_board(tmp_path, capsys):
    # The real BLE path: firmware/ in the micropython binary on the virtual radio; the
    # counts must be those of the local engine.
    tr = exgen.heel_raises(reps=4)
    path = tmp_path / "hr.csv"
    exgen.write(tr, str(path))
    rc = None
    for _attempt in range(2):  # the virtual radio's discovery can stall: one retry
        rc = main(["train", "heel-raises", "--vboard", str(path), "--no-save"])
        cap = capsys.readouterr()
        if "service discovery" not in cap.err:
            break
    assert rc == 0 and cap.out.count("  rep ") == 4
