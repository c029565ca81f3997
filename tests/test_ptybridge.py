"""The pty bridge that stands in for a board's serial port (tests/ptybridge.py)."""

from __future__ import annotations

import errno
import os
import select
import sys
import termios
import time
from pathlib import Path

import pytest

from host_tools.gait.engine import micropython_binary
from tests.ptybridge import PtyBridge

# answers every chunk with its bytes inverted, so an echo of the input would stand out
INVERTER = r"""
import os
while True:
    data = os.read(0, 4096)
    if not data:
        break
    os.write(1, bytes(b ^ 0xFF for b in data))
"""

# reports how its own terminal is set, and talks once after a pause when asked to
TALKER = r"""
import os, termios, time
while True:
    data = os.read(0, 64)
    if not data:
        break
    if data == b"modes":
        iflag, oflag, cflag, lflag = termios.tcgetattr(0)[:4]
        flags = {
            "echo": lflag & termios.ECHO, "icanon": lflag & termios.ICANON,
            "isig": lflag & termios.ISIG, "opost": oflag & termios.OPOST,
            "icrnl": iflag & termios.ICRNL, "ixon": iflag & termios.IXON,
        }
        same = len({os.ttyname(fd) for fd in (0, 1, 2)}) == 1
        report = " ".join(f"{k}={int(bool(v))}" for k, v in flags.items())
        os.write(1, f"{report} one_tty={int(same)}\n".encode())
    elif data == b"later":
        time.sleep(0.3)
        os.write(1, b"said while nobody listened\n")
    elif data == b"quit":
        os.write(1, b"bye\n")
        raise SystemExit(3)
    else:
        os.write(1, b"heard " + data + b"\n")
"""


def python_program(tmp_path: Path, source: str) -> list[str]:
    script = tmp_path / "program.py"
    script.write_text(source)
    return [sys.executable, "-u", str(script)]


def open_port(link: Path) -> int:
    return os.open(link, os.O_RDWR | os.O_NOCTTY)


def read_until(fd: int, done, timeout: float = 5.0) -> bytes:
    """Read from ``fd`` until ``done(data)`` holds; the bytes read."""
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up after {timeout} s with {data!r}"
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 4096)
    return data


def read_for(fd: int, seconds: float) -> bytes:
    """Whatever ``fd`` delivers within ``seconds``."""
    data = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 4096)
    return data


def read_to_hangup(fd: int, timeout: float = 5.0) -> bytes:
    """Read until the other side of the port is gone (EIO or EOF)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"port still there after {timeout} s; read {data!r}"
        if not select.select([fd], [], [], left)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError as exc:
            assert exc.errno == errno.EIO
            return data
        if not chunk:
            return data
        data += chunk


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_every_byte_value_passes_unchanged_both_ways(tmp_path):
    sent = bytes(range(256)) * 8  # Ctrl-C, Ctrl-D, CR, LF, XOFF, DEL and the rest
    with PtyBridge(python_program(tmp_path, INVERTER), tmp_path / "tty") as bridge:
        port = open_port(bridge.link)
        try:
            os.write(port, sent)
            got = read_until(port, lambda d: len(d) >= len(sent))
            assert got == bytes(b ^ 0xFF for b in sent)
            assert read_for(port, 0.3) == b""  # and no echo of what was sent
        finally:
            os.close(port)


def test_both_ends_are_raw_and_the_program_has_one_tty(tmp_path):
    with PtyBridge(python_program(tmp_path, TALKER), tmp_path / "tty") as bridge:
        port = open_port(bridge.link)
        try:
            iflag, oflag, _, lflag = termios.tcgetattr(port)[:4]
            assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
            assert not oflag & termios.OPOST
            assert not iflag & (termios.ICRNL | termios.IXON | termios.ISTRIP)
            os.write(port, b"modes")
            report = read_until(port, lambda d: d.endswith(b"\n"))
            assert report == b"echo=0 icanon=0 isig=0 opost=0 icrnl=0 ixon=0 one_tty=1\n"
        finally:
            os.close(port)


def test_port_can_be_closed_and_opened_again_and_output_meanwhile_is_lost(tmp_path):
    with PtyBridge(python_program(tmp_path, TALKER), tmp_path / "tty") as bridge:
        for word in (b"one", b"two", b"three"):  # one mpremote run after another
            port = open_port(bridge.link)
            os.write(port, word)
            assert read_until(port, lambda d: d.endswith(b"\n")) == b"heard " + word + b"\n"
            os.close(port)
        port = open_port(bridge.link)
        os.write(port, b"later")  # answered 0.3 s on, when the port is closed
        os.close(port)
        time.sleep(1.0)
        port = open_port(bridge.link)
        try:
            os.write(port, b"four")
            got = read_until(port, lambda d: d.endswith(b"four\n"))
            assert got == b"heard four\n"
        finally:
            os.close(port)
        assert bridge.running


def test_program_exit_delivers_its_last_output_then_removes_the_port(tmp_path):
    link = tmp_path / "tty"
    bridge = PtyBridge(python_program(tmp_path, TALKER), link).start()
    try:
        port = open_port(link)
        try:
            os.write(port, b"quit")
            assert read_to_hangup(port) == b"bye\n"
        finally:
            os.close(port)
        assert bridge.wait(5) == 3
        assert not bridge.running
        assert not link.exists() and not link.is_symlink()
    finally:
        bridge.stop()


def test_micropython_repl_through_the_bridge_and_soft_reset_ends_it(tmp_path):
    link = tmp_path / "tty"
    with PtyBridge([micropython_binary(), "-i"], link, cwd=tmp_path) as bridge:
        port = open_port(link)
        try:
            # the banner may come or not, as the port opened before or after it
            os.write(port, b"print('rea' + 'dy')\r")
            read_until(port, lambda d: d.endswith(b"ready\n>>> "))
            os.write(port, b"print(6 * 7)\r")
            out = read_until(port, lambda d: d.endswith(b">>> "))
            # the line once (MicroPython's own echo) and print's bare LF: a cooked pty
            # would echo the line again and turn LF into CR LF
            assert out == b"print(6 * 7)\r\n42\n>>> "
            os.write(port, b"import machine\rmachine.soft_reset()\r")
            read_to_hangup(port)
        finally:
            os.close(port)
        assert bridge.wait(5) == 0
        assert not link.is_symlink()


def test_stop_leaves_no_process_link_or_fd(tmp_path):
    before = open_fds()
    link = tmp_path / "tty"
    bridge = PtyBridge(python_program(tmp_path, INVERTER), link).start()
    proc = bridge.proc
    assert proc is not None and proc.poll() is None
    port = open_port(link)
    try:
        bridge.stop()
        assert read_to_hangup(port) == b""  # the port went away under its user
    finally:
        os.close(port)
    assert proc.poll() is not None
    assert not link.is_symlink()
    assert open_fds() == before


def test_program_that_ignores_its_input_is_signalled_on_stop(tmp_path):
    bridge = PtyBridge(["sleep", "60"], tmp_path / "tty").start()
    proc = bridge.proc
    assert proc is not None
    t0 = time.monotonic()
    bridge.stop()
    assert proc.returncode == -15  # SIGTERM once EOF on stdin did not end it
    assert time.monotonic() - t0 < 5


def test_a_taken_link_fails_without_starting_anything(tmp_path):
    link = tmp_path / "tty"
    link.write_text("someone else's file\n")
    before = open_fds()
    bridge = PtyBridge(python_program(tmp_path, INVERTER), link)
    with pytest.raises(FileExistsError):
        bridge.start()
    assert bridge.proc is None
    assert link.read_text() == "someone else's file\n"
    assert open_fds() == before
