"""A serial "device" for flash tests: the MicroPython unix port behind a pty.

socat joins a pty (the "serial port", reached through a symlink) to ``micropython -i``
running in a directory that plays the board's flash filesystem. mpremote talks to it
exactly as to a USB-serial board (raw REPL, ``resume``); the one thing it cannot do
is reset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from host_tools.engine import micropython_binary

ROOT = Path(__file__).resolve().parent.parent


class PtyDevice:
    """``with PtyDevice(root) as dev:`` gives ``dev.port`` for mpremote."""

    def __init__(self, root: Path, link: Path | None = None):
        self.root = Path(root)
        self.link = Path(link or self.root.parent / f"{self.root.name}.tty")
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> str:
        return str(self.link)

    def start(self) -> PtyDevice:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (apt-get install socat; .ci/run does it)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                socat,
                f"PTY,link={self.link},rawer",
                f"EXEC:{micropython_binary()} -i,pty,rawer",
            ],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self.link.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"socat did not create {self.link}: {err}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

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
    """``python -m host_tools.flash flash`` (what ``make flash`` runs), captured."""
    return subprocess.run(
        [
            sys.executable, "-m", "host_tools.flash", "flash",
            "--port", port, "--build-dir", str(build_dir), *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip
