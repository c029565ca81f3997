"""The host side of pairing: `insole pair`, capture and train with a passkey, the
passkey after a flash. A wrong passkey, a missing one or a closed pairing window end
with one clear line and exit status 2."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import pytest

from host_tools import cli
from host_tools.ble import blelinks
from host_tools.board.flash import reset_and_read
from tests.ptybridge import PtyBridge
from tests.test_capture_sim import LEFT


def _one_error_line(err: str, command: str) -> str:
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"insole {command}: error: ")
    return lines[0]


def test_pair_with_the_virtual_insole_keeps_the_bond_on_its_flash(tmp_path, capsys):
    flash = tmp_path / "board"
    assert cli.main(["pair", "--vboard", str(LEFT), "--flash", str(flash)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"bonded with Insole-L-[0-9A-F]{4} \(.*, left\)", out)
    rows = json.loads((flash / "insole_bonds.json").read_text())
    assert sorted({t for t, _, _ in rows}) == [1, 2, 10]  # both records of one bond, IRK
    passkey = json.loads((flash / "insole.json").read_text())["passkey"]
    # the same flash again, with the passkey typed: the insole keeps one bond for us
    assert cli.main(["pair", "--vboard", str(LEFT), "--flash", str(flash),
                     "--passkey", f"{passkey:06d}"]) == 0
    capsys.readouterr()
    wrong = (passkey + 7) % 1000000
    assert cli.main(["pair", "--vboard", str(LEFT), "--flash", str(flash),
                     "--passkey", f"{wrong:06d}"]) == 2
    line = _one_error_line(capsys.readouterr().err, "pair")
    assert "refused the passkey" in line


@pytest.mark.parametrize("argv, says", [
    (["pair", "--passkey", "12a"], "is not a passkey"),
    (["pair", "--passkey", "1234567"], "is not a passkey"),
    (["pair", "--flash", "x"], "--flash goes with --vboard"),
    (["pair", "--keystore", "k.json"], "--keystore goes with --transport"),
    (["capture", "--sim", str(LEFT), "--out", "o", "--passkey", "-1"], "is not a passkey"),
])
def test_pair_arguments_are_checked(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert says in capsys.readouterr().err


def test_capture_with_a_wrong_passkey_stops_with_one_line(tmp_path, capsys):
    assert cli.main(["capture", "--sim", str(LEFT), "--speed", "0", "--passkey", "000001",
                     "--out", str(tmp_path / "cap")]) == 2
    # (the virtual insole makes a random passkey: 000001 is it once in a million runs)
    line = _one_error_line(capsys.readouterr().err, "capture")
    assert "refused the passkey" in line


def test_train_on_the_virtual_board_with_a_wrong_passkey(tmp_path, capsys):
    from host_tools.training import exgen

    path = tmp_path / "hr.csv"
    exgen.write(exgen.heel_raises(reps=2), str(path))
    rc = cli.main(["train", "heel-raises", "--vboard", str(path), "--no-save",
                   "--passkey", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    line = _one_error_line(err, "train")
    assert "refused the passkey" in line


def test_pairing_problems_in_words():
    from bumble.core import ProtocolError
    from bumble.smp import ErrorCode

    def smp(code):
        return ProtocolError(code, "smp", code.name)

    assert blelinks.pairing_problem(smp(ErrorCode.CONFIRM_VALUE_FAILED)) == blelinks.WRONG_PASSKEY
    assert blelinks.pairing_problem(smp(ErrorCode.DHKEY_CHECK_FAILED)) == blelinks.WRONG_PASSKEY
    assert blelinks.pairing_problem(
        smp(ErrorCode.AUTHENTICATION_REQUIREMENTS)) == blelinks.NOT_AUTHENTICATED
    assert "PAIRING_NOT_SUPPORTED" in blelinks.pairing_problem(
        smp(ErrorCode.PAIRING_NOT_SUPPORTED))


def test_a_bumble_link_without_passkey_or_bond_says_what_to_give():
    from host_tools.ble.capture import LinkError

    class Conn:
        peer_address = "E4:D7:EB:10:A0:C1"

    class Store:
        async def get(self, _name):
            return None

    class Dev:
        keystore = Store()

    link = blelinks.BumbleLink(Dev())
    link.connection = Conn()
    with pytest.raises(LinkError) as err:
        asyncio.run(link.secure())
    assert str(err.value) == blelinks.NEEDS_PASSKEY


def test_bleak_authentication_failure_names_the_passkey():
    from bleak.exc import BleakError

    from host_tools.ble.capture import LinkError

    class Client:
        async def pair(self):
            raise BleakError("org.bluez.Error.AuthenticationFailed")

    link = blelinks.BleakLink(passkey=42)
    link.client = Client()
    with pytest.raises(LinkError) as err:
        asyncio.run(link.secure())
    assert "refused the passkey" in str(err.value) and "000042" in str(err.value)


BOARD = r"""
import os
seen = b""
while True:
    b = os.read(0, 1)
    if not b:
        break
    seen += b
    if seen.endswith(b"machine.reset()\r\n"):
        os.write(1, b"rst:0xc (SW_CPU_RESET)\r\n0.000 jrn 1 parts 23 B\r\n")
        os.write(1, b"insole 0.1.0 board=ESP32 DevKitC (WROOM-32) side=L rate=100 "
                    b"name=Insole-L-1A2B\r\n")
        os.write(1, b"passkey 004217 (enter it when a phone or computer pairs)\r\n")
"""


def test_the_flash_reads_the_passkey_after_the_banner(tmp_path):
    script = tmp_path / "board.py"
    script.write_text(BOARD)
    lines: list[str] = []
    with PtyBridge([sys.executable, "-u", str(script)], tmp_path / "ttyBOARD") as board:
        banner, passkey = reset_and_read(str(board.link), "hard", "insole ", 10.0,
                                         log=lines.append)
    assert banner.startswith("insole 0.1.0 board=ESP32 DevKitC")
    assert passkey == 4217
