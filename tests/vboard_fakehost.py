"""A scripted host bridge for the virtual board's shims: a unix socket server in the
test, the micropython binary running a snippet with boards/virtual first on its path,
and the frames of boards/virtual/_vboard.py both ways. Lets a test put a host message
at an exact point of the board's run (host_tools/vboard/ is the real bridge)."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from host_tools.gait.engine import micropython_binary
from host_tools.vboard.process import SHIMS

# board -> host
MSG_ADVERTISE, MSG_PAUSED, MSG_FIRST = ord("A"), ord("P"), ord("T")
# host -> board
HOST_CONNECT, HOST_DISCONNECT, HOST_CONTROL = ord("c"), ord("d"), ord("x")


class FakeHost:
    def __init__(self, code: str, env: dict[str, str] | None = None, rows: int = 2000):
        self._dir = tempfile.TemporaryDirectory(prefix="vbhost")
        d = Path(self._dir.name)
        trace = np.arange(rows * 3, dtype="<u2").reshape(-1, 3)
        (d / "t.bin").write_bytes(trace.tobytes())
        path = str(d / "s")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(1)
        full = dict(os.environ)
        for k in list(full):
            if k.startswith("VBOARD_"):
                del full[k]
        full.update({"MICROPYPATH": os.pathsep.join([str(SHIMS), ".frozen"]),
                     "VBOARD_SOCK": path, "VBOARD_TRACE": str(d / "t.bin"),
                     "VBOARD_RATE": "100"})
        full.update(env or {})
        self.proc = subprocess.Popen([micropython_binary(), "-c", code], env=full,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._server.settimeout(10)
        self.conn, _ = self._server.accept()
        self._buf = b""
        self.seen: list[tuple[int, int, bytes]] = []

    def send(self, kind: int, payload: bytes = b"") -> None:
        self.conn.sendall(struct.pack("<HB", len(payload) + 1, kind) + payload)

    def control(self, text: str) -> None:
        self.send(HOST_CONTROL, text.encode())

    def connect_central(self, conn: int = 1) -> None:
        self.send(HOST_CONNECT, struct.pack("<HB", conn, 1) + bytes(range(1, 7)))

    def recv(self, timeout: float) -> tuple[int, int, bytes] | None:
        """The next frame from the board (kind, trace µs, payload), or None."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= 2:
                (n,) = struct.unpack_from("<H", self._buf)
                if len(self._buf) >= 2 + n:
                    body = self._buf[2 : 2 + n]
                    self._buf = self._buf[2 + n :]
                    frame = (body[0], struct.unpack_from("<q", body, 1)[0], body[9:])
                    self.seen.append(frame)
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.conn], [], [], left)
            if r:
                chunk = self.conn.recv(65536)
                if not chunk:
                    return None
                self._buf += chunk

    def expect(self, kind: int, timeout: float = 5.0, trace_us: int | None = None):
        """Skip frames until one of this kind (and trace time) arrives; None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if frame[0] == kind and (trace_us is None or frame[1] == trace_us):
                return frame

    def finish(self, timeout: float = 10.0) -> str:
        """Wait for the snippet to end (killed after timeout); its stdout and stderr."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.close()
        return out.decode() + err.decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        self._server.close()
        self._dir.cleanup()
