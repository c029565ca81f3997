"""A serial port made of ptys: a symlinked pty joined to a program's own raw pty.

``PtyBridge(argv, link)`` starts ``argv`` with stdin, stdout and stderr on one pty (a
board has one UART for all three) and offers a second pty, reached through the symlink
``link``, that mpremote or pyserial opens as it opens a USB-serial port. A thread copies
bytes between the two. Both ptys are raw (no echo, no line editing, no CR/LF
translation, Ctrl-C and Ctrl-D are plain bytes), so every byte arrives unchanged.

It behaves as a board on a serial line does:
- what the program writes while nobody has the port open is lost, as on a wire with
  nobody listening (the kernel would otherwise keep it for the next opener);
- closing the port and opening it again (one mpremote run after another) is normal;
- when the program ends (``machine.soft_reset()`` or Ctrl-D on the unix port) its last
  output is delivered, then the port goes away and the symlink with it, as when a
  board is unplugged.

The bridge keeps the program's pty open on its own side too: Linux may drop what a
program wrote just before it exits when its pty hangs up with that exit, so the end
is seen from the process instead (a pidfd), and the pty is read empty after it; the
port then stays until its reader has taken those last bytes, since a hang-up throws
away what is still unread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_CHUNK = 4096
_BACKLOG = 64 * 1024  # stop reading a side while this much waits to go the other way
_CLOSED_POLL_MS = 10  # how often to look whether someone opened the port again
_DRAIN_S = 1.0  # how long the program's last output may take to reach the port
# after the program's end the port stays until its reader has had nothing waiting this long
_TAKEN_S = 0.05
_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


def make_raw(fd: int) -> None:
    """Put the terminal ``fd`` in raw mode with echo off (cfmakeraw(3), plus no echo)."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
    iflag &= ~(
        termios.IGNBRK | termios.BRKINT | termios.IGNPAR | termios.PARMRK | termios.INPCK
        | termios.ISTRIP | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
        | termios.IXOFF | termios.IXANY | termios.IMAXBEL
    )  # fmt: skip
    oflag &= ~termios.OPOST
    lflag &= ~(
        termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL | termios.ICANON
        | termios.ISIG | termios.IEXTEN
    )  # fmt: skip
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])


def _revents(fd: int) -> int:
    """What is pending on ``fd`` right now (POLLHUP on a pty master: nobody has the slave)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return sum(ev for _, ev in poller.poll(0))


def _read(fd: int) -> bytes | None:
    """Up to one chunk from a pty master; None once the other side is gone (EIO or EOF)."""
    try:
        data = os.read(fd, _CHUNK)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno == errno.EIO:  # Linux: the slave side has no opener left
            return None
        raise
    return data or None


def _write(fd: int, pending: bytearray) -> None:
    try:
        done = os.write(fd, pending)
    except BlockingIOError:
        return
    del pending[:done]


class PtyBridge:
    """``with PtyBridge([...], link) as bridge:`` a program behind the port ``link``."""

    def __init__(self, argv: Sequence[str], link: Path, cwd: Path | None = None):
        self.argv = list(argv)
        self.link = Path(link)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.tty_name = ""
        self._port = -1  # master of the pty behind the symlink
        self._program = -1  # master of the program's pty
        self._program_slave = -1  # held, so the program's exit never hangs the pty up
        self._exit_fd = -1  # readable once the program has ended
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None

    def start(self) -> PtyBridge:
        try:
            self._port, port_slave = os.openpty()
            try:
                make_raw(port_slave)  # the settings stay for whoever opens it later
                self.tty_name = os.ttyname(port_slave)
            finally:
                os.close(port_slave)  # from here on, POLLHUP says "nobody has the port open"
            self.link.symlink_to(self.tty_name)
            self._program, program_slave = os.openpty()
            try:
                make_raw(program_slave)
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=program_slave,
                    stdout=program_slave,
                    stderr=program_slave,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            finally:
                self._program_slave = program_slave
            self._exit_fd = os.pidfd_open(self.proc.pid)
            os.set_blocking(self._port, False)
            os.set_blocking(self._program, False)
            self._wake_r, self._wake_w = os.pipe()
            self._thread = threading.Thread(
                target=self._run, name=f"ptybridge {self.link.name}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float) -> int:
        """Wait until the program has ended and the port is gone; its exit status."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"{self.argv[0]} still runs after {timeout} s")
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """End the bridge and the program; the symlink and every fd are gone after it."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(10)
            self._thread = None
        self._close_ptys()
        self._end_program()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> PtyBridge:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        to_port = bytearray()
        to_program = bytearray()
        listening = False  # someone has the port open
        try:
            while True:
                poller = select.poll()
                poller.register(self._wake_r, select.POLLIN)
                poller.register(self._exit_fd, select.POLLIN)
                poller.register(self._program, self._interest(to_port, to_program))
                if listening:  # a closed port reports POLLHUP at once: look at it on a timer
                    poller.register(self._port, self._interest(to_program, to_port))
                events = dict(poller.poll(None if listening else _CLOSED_POLL_MS))
                if self._wake_r in events:
                    return
                if self._exit_fd in events:  # the program has ended: its last words
                    while (data := _read(self._program)):
                        to_port += data
                    if listening:
                        self._drain(to_port)
                        self._until_taken()
                    return
                port = events.get(self._port, 0) if listening else _revents(self._port)
                if port & select.POLLIN and len(to_program) < _BACKLOG:
                    data = _read(self._port)
                    if data is None:
                        port |= select.POLLHUP
                    else:
                        to_program += data
                listening = not port & _HANGUP
                if not listening:
                    to_port.clear()  # nobody on the line
                elif port & select.POLLOUT and to_port:
                    _write(self._port, to_port)
                program = events.get(self._program, 0)
                if program & select.POLLOUT and to_program:
                    _write(self._program, to_program)
                # the program's pty never hangs up (the bridge holds it): its end
                # comes from the pidfd above
                if program & select.POLLIN and len(to_port) < _BACKLOG:
                    data = _read(self._program)
                    if listening and data:
                        to_port += data
        finally:
            self._close_ptys()

    @staticmethod
    def _interest(outgoing: bytearray, incoming: bytearray) -> int:
        """Poll events for one side: read while the other side keeps up, write when due."""
        events = select.POLLIN if len(outgoing) < _BACKLOG else 0
        return events | (select.POLLOUT if incoming else 0)

    def _drain(self, to_port: bytearray) -> None:
        """The program has ended: hand its last words to the port before it goes."""
        deadline = time.monotonic() + _DRAIN_S
        while to_port and time.monotonic() < deadline:
            poller = select.poll()
            poller.register(self._port, select.POLLOUT)
            events = dict(poller.poll(20))
            if events.get(self._port, 0) & _HANGUP:
                return
            if events:
                _write(self._port, to_port)

    def _until_taken(self) -> None:
        """Keep the port until its reader has taken what was written to it: closing the
        master hangs the other side up, and a hang-up flushes its unread input
        (drivers/tty/tty_ldisc.c, tty_ldisc_hangup). Bytes still on their way to it
        (drivers/tty/tty_buffer.c hands them over from a work queue) are not counted
        yet, hence a quiet spell of _TAKEN_S, at most _DRAIN_S."""
        try:
            probe = os.open(self.tty_name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:  # the reader has gone and the port with it
            return
        try:
            deadline = time.monotonic() + _DRAIN_S
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                waiting = struct.unpack("i", fcntl.ioctl(probe, termios.FIONREAD, b"\0" * 4))[0]
                now = time.monotonic()
                if waiting:
                    quiet_since = now
                elif now - quiet_since >= _TAKEN_S:
                    return
                time.sleep(0.005)
        finally:
            os.close(probe)

    def _close_ptys(self) -> None:
        for fd in (self._port, self._program, self._program_slave, self._exit_fd):
            if fd >= 0:
                os.close(fd)
        self._port = self._program = self._program_slave = self._exit_fd = -1
        if self.tty_name and self.link.is_symlink() and os.readlink(self.link) == self.tty_name:
            self.link.unlink()

    def _end_program(self) -> None:
        """Its pty is closed, so the program reads EOF; a signal if it takes no notice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, grace in ((None, 0.5), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if sig is not None:
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue
