"""The reset-and-banner step of make flash, against a scripted serial board.

The real ESP32 reset cannot happen here; a small program behind a pty plays a board
that answers the exact bytes flash sends (Ctrl-C, then ``machine.reset()`` or
Ctrl-D) with boot noise and the firmware's banner line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host_tools.board.flash import FlashError, reset_and_wait, wait_for_banner
from tests.ptybridge import PtyBridge

BOARD_SCRIPT = r"""
import os, sys
seen = b""
def say(text):
    os.write(1, text.encode())
while True:
    b = os.read(0, 1)
    if not b:
        break
    seen += b
    if seen.endswith(b"machine.reset()\r\n"):
        say("ets Jun  8 2016 00:22:57\r\n\r\nrst:0xc (SW_CPU_RESET),boot:0x13\r\n")
        say("insole-ish noise\r\n" + "I (31) boot: ESP-IDF v5.2\r\n")
        say("insole 0.1.0 board=ESP32 DevKitC (WROOM-32) side=L rate=100 ")
        say("name=Insole-L-1A2B\r\n")
    elif b == b"\x04" and b"\x03" in seen:
        say("MPY: soft reboot\r\n")
        say("insole 0.1.0 board=ESP32-C3 DevKitM-1 side=R rate=200 name=Insole-R-00FF\r\n")
"""


@pytest.fixture
def scripted_board(tmp_path):
    script = tmp_path / "board.py"
    script.write_text(BOARD_SCRIPT)
    with PtyBridge([sys.executable, "-u", str(script)], tmp_path / "ttyBOARD") as board:
        yield str(board.link)


BANNERS = {
    "hard": "insole 0.1.0 board=ESP32 DevKitC (WROOM-32) side=L rate=100 name=Insole-L-1A2B",
    "soft": "insole 0.1.0 board=ESP32-C3 DevKitM-1 side=R rate=200 name=Insole-R-00FF",
}


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_reset_waits_for_the_banner_line(scripted_board, mode):
    lines: list[str] = []
    banner = reset_and_wait(scripted_board, mode, "insole ", 10.0, log=lines.append)
    assert banner == BANNERS[mode]
    assert any(line.startswith("boot banner: insole ") for line in lines)


def _pty_pair():
    master, slave = os.openpty()
    return master, os.ttyname(slave), slave


def _later(master, data, delay=0.3):
    # pyserial flushes input when it opens a port: send only once it listens
    t = threading.Timer(delay, os.write, (master, data))
    t.start()
    return t


def test_banner_split_across_writes_after_noise():
    master, name, slave = _pty_pair()
    try:

        def board():
            time.sleep(0.2)
            for part in (b"rst:0x1 (POWERON)\r\nboot: ", b"ok\r\nins", b"ole fw=2.1 side=L\r\n"):
                os.write(master, part)
                time.sleep(0.1)

        t = threading.Thread(target=board)
        t.start()
        assert wait_for_banner(name, "insole ", 5.0) == "insole fw=2.1 side=L"
        t.join()
    finally:
        os.close(master)
        os.close(slave)


def test_no_banner_is_an_error_that_shows_the_last_lines():
    master, name, slave = _pty_pair()
    try:
        t = _later(master, b"Traceback (most recent call last):\r\nImportError: no module 'x'\r\n")
        t0 = time.monotonic()
        with pytest.raises(FlashError) as err:
            wait_for_banner(name, "insole ", 1.0)
        t.join()
        assert time.monotonic() - t0 < 5
        assert "ImportError: no module 'x'" in str(err.value)
        assert "no boot banner" in str(err.value)
    finally:
        os.close(master)
        os.close(slave)


def test_port_that_comes_back_after_reset_is_reopened(tmp_path):
    # Boards with native USB drop off the bus while they reset: the port vanishes
    # and reappears. Here the path only appears after a while.
    master, name, slave = _pty_pair()
    link = tmp_path / "ttyACM0"
    try:

        def board():
            time.sleep(0.5)
            link.symlink_to(name)
            time.sleep(0.3)
            os.write(master, b"insole fw=3 board=esp32s3\r\n")

        t = threading.Thread(target=board)
        t.start()
        assert wait_for_banner(str(link), "insole ", 5.0) == "insole fw=3 board=esp32s3"
        t.join()
    finally:
        os.close(master)
        os.close(slave)


def test_console_prints_what_the_board_sends(tmp_path):
    master, name, slave = _pty_pair()
    done = threading.Event()

    def board():  # keeps talking: the console may take a moment to open the port
        while not done.is_set():
            os.write(master, b"steps=12 overruns=0\r\n")
            time.sleep(0.2)

    t = threading.Thread(target=board)
    t.start()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "host_tools.board.flash", "console", "--port", name,
             "--seconds", "2"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 0, res.stderr
        assert "steps=12 overruns=0" in res.stdout
    finally:
        done.set()
        t.join()
        os.close(master)
        os.close(slave)
