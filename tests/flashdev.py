"""A serial "device" for flash tests: the MicroPython unix port behind a pty.

A pty bridge (tests/ptybridge.py) joins a pty (the "serial port", reached through a
symlink) to ``micropython -i`` running in a directory that plays the board's flash
filesystem. mpremote talks to it exactly as to a USB-serial board (raw REPL,
``resume``); the one thing it cannot do is reset.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from host_tools.gait.engine import micropython_binary
from tests.ptybridge import PtyBridge

ROOT = Path(__file__).resolve().parent.parent


class PtyDevice:
    """``with PtyDevice(root) as dev:`` gives ``dev.port`` for mpremote."""

    def __init__(self, root: Path, link: Path | None = None):
        self.root = Path(root)
        self.link = Path(link or self.root.parent / f"{self.root.name}.tty")
        self.bridge: PtyBridge | None = None

    @property
    def port(self) -> str:
        return str(self.link)

    def start(self) -> PtyDevice:
        self.root.mkdir(parents=True, exist_ok=True)
        self.bridge = PtyBridge([micropython_binary(), "-i"], self.link, cwd=self.root).start()
        return self

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        self.bridge = None

    def __enter__(self) -> PtyDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def files(self) -> dict[str, str]:
        """Every file under the device root, relative path -> SHA-256."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[p.relative_to(self.root).as_posix()] = digest
        return out

    def mpremote(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", self.port, "resume", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def run_flash(port: str, build_dir: Path, *extra: str, timeout: float = 120):
    """``python -m host_tools.board.flash flash`` (what ``make flash`` runs), captured."""
    return subprocess.run(
        [
            sys.executable, "-m", "host_tools.board.flash", "flash",
            "--port", port, "--build-dir", str(build_dir), *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip
