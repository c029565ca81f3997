"""`insole config`: the insole's settings over BLE, on the virtual board (the firmware
under the micropython binary, bumble's virtual radio) and on a scripted link for the
insole's refusals."""

from __future__ import annotations

import asyncio
import json

import pytest

from host_tools import cli
from host_tools.ble import protocol
from host_tools.ble.capture import Link
from host_tools.cli import config as cmd_config
from host_tools.cli.pair import Failed
from tests.test_capture_sim import LEFT


def test_settings_go_to_the_virtual_insoles_flash_and_read_back(tmp_path, capsys):
    flash = tmp_path / "board"
    assert cli.main(["config", "--vboard", str(LEFT), "--flash", str(flash),
                     "--side", "right", "--stride", "152", "--mains", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["set side right", "set stride 152 cm", "set mains 60 Hz"]
    assert out[3].endswith(": side=right rate=100 Hz stride=152 cm mains=60 Hz name=Insole")
    saved = json.loads((flash / "insole.json").read_text())
    assert (saved["side"], saved["stride_cm"], saved["mains_hz"]) == ("R", 152, 60)
    # a later start of the same flash holds them (with no setting: only shown); the
    # virtual insole sets its side and rate from its own trace and side at each start
    assert cli.main(["config", "--vboard", str(LEFT), "--flash", str(flash)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith("stride=152 cm mains=60 Hz name=Insole"), out


@pytest.mark.parametrize("argv, says", [
    (["--mains", "55"], "--mains: invalid choice"),
    (["--rate", "500"], "--rate 500 is outside 50..400"),
    (["--stride", "10"], "--stride 10 is outside 30..300"),
    (["--side", "middle"], "--side: invalid choice"),
    (["--name", "A-B"], "name"),
    (["--name", ""], "name"),
    (["--flash", "x"], "--flash goes with --vboard"),
    (["--vboard", "no_such_trace.csv"], "no such trace file"),
])
def test_bad_settings_are_one_line_before_the_radio(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["config", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("insole config: ") and says in err[0], err


class RefusingInsole(Link):
    """Answers every Control command, refusing SET_RATE as a mode that cannot hold it."""

    name = "Insole-L-TEST"
    address = "AA:BB:CC:DD:EE:FF"

    def __init__(self):
        super().__init__()
        self.control = None
        self.writes: list[bytes] = []
        self.disconnected = False

    async def connect(self):
        pass

    async def secure(self):
        pass

    async def subscribe(self, uuid, callback):
        assert uuid == protocol.UUID_CONTROL
        self.control = callback

    async def write(self, uuid, data):
        self.writes.append(bytes(data))
        err = protocol.ERR_TOO_FAST if data[0] == protocol.OP_SET_RATE else protocol.ERR_OK
        self.control(bytes([data[0], err]), 0.0)

    async def disconnect(self):
        self.disconnected = True


def test_a_refused_setting_stops_the_rest_and_says_what_was_set():
    class Args:
        side = None
        name = None
        rate = 300
        stride = None
        mains = 60

    todo = cmd_config.commands(Args)
    # mains comes after rate: the refusal leaves it unsent
    assert [w for w, _ in todo] == ["rate 300 Hz", "mains 60 Hz"]
    Args.side = "left"
    todo = cmd_config.commands(Args)
    link = RefusingInsole()
    done: list[str] = []
    with pytest.raises(Failed, match=r"refused rate 300 Hz: the mode cannot hold that "
                       r"sample rate at this mains setting \(side left set\)"):
        asyncio.run(cmd_config._configure(todo, done)(link))
    assert done == ["side left"]
    assert [w[0] for w in link.writes] == [protocol.OP_SET_SIDE, protocol.OP_SET_RATE]
    assert link.disconnected
