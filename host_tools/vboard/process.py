"""The firmware's process: ``firmware/main.py`` in the MicroPython unix port with the
shims of ``boards/virtual`` first on its path, the trace it replays, the flash
directory it boots from, and its serial console kept as a log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from host_tools.gait.engine import EngineError, micropython_binary
from host_tools.gait.tracefile import DEFAULT_RATE_HZ, TraceError, read_trace
from host_tools.vboard.wire import VBoardError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
SHIMS = ROOT / "boards" / "virtual"
CONFIG_FILE = "insole.json"  # the firmware's config file on its flash (app.CONFIG_PATH)
FIRMWARE_RATES = (50, 400)  # sample rates the firmware's config accepts
PASSKEY_RE = re.compile(r"^passkey (\d{6})\b")  # the firmware's console line (app.py)


def load_trace(trace, rate_hz: int | None) -> tuple[np.ndarray, int]:
    """A trace CSV path or an (n, 3) array as (samples, rate); rate_hz when the file
    does not say."""
    if isinstance(trace, (str, Path)):
        try:
            tr = read_trace(trace)
        except TraceError as exc:
            raise VBoardError(str(exc)) from None
        rate = tr.rate_hz or rate_hz or DEFAULT_RATE_HZ
        samples = tr.samples
    else:
        samples = np.asarray(trace)
        rate = rate_hz or DEFAULT_RATE_HZ
    if samples.ndim != 2 or samples.shape[1] != 3 or len(samples) == 0:
        raise VBoardError("the trace must hold at least one (heel, arch, forefoot) row")
    if samples.min() < 0 or samples.max() > 65535:
        raise VBoardError("trace values must be within 0..65535")
    return samples, int(rate)


def prepare_flash(flash_dir: Path, side: str, rate: int, passkey: int | None) -> None:
    """Write the side (and the passkey, and the rate when the firmware accepts it)
    into the config on the board's flash, keeping what else it holds."""
    flash_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = flash_dir / CONFIG_FILE
    cfg: dict = {}
    if cfg_path.exists():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(cfg_path.read_text())
            if isinstance(loaded, dict):
                cfg = loaded
    cfg["side"] = "L" if side == "left" else "R"
    if passkey is not None:
        cfg["passkey"] = int(passkey)
    if FIRMWARE_RATES[0] <= rate <= FIRMWARE_RATES[1]:
        cfg["rate_hz"] = rate
    cfg_path.write_text(json.dumps(cfg))


def configured_passkey(flash_dir: Path | None) -> int | None:
    """The passkey in the config on the flash (saved before BLE starts), or None."""
    if flash_dir is not None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            value = json.loads((flash_dir / CONFIG_FILE).read_text())["passkey"]
            if isinstance(value, int):
                return value
    return None


class FirmwareProcess:
    """The micropython process running the firmware, and what it printed.

    trace_time: the board's trace time in seconds, stamped on each log line.
    on_line: called with each console line, prefixed by the trace time.
    on_exit: called once the process has ended and its output is in the log.
    """

    def __init__(self, trace_time: Callable[[], float],
                 on_line: Callable[[str], None] | None = None,
                 on_exit: Callable[[], None] | None = None):
        self.trace_time = trace_time
        self.on_line = on_line
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[tuple[float, str]] = []  # (trace s, serial line)
        self.stderr = b""  # its last 8000 bytes, and bridge faults
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.printed_passkey: int | None = None
        self._line_event = asyncio.Event()

    async def start(self, main_py: Path, flash_dir: Path, env: dict,
                    heap_kb: int | None) -> list[asyncio.Task]:
        """Start the firmware; returns the tasks that follow its output and exit."""
        if not main_py.exists():
            raise VBoardError(f"{main_py}: no such firmware entry point")
        try:
            cmd = [micropython_binary()]
        except EngineError as exc:
            raise VBoardError(str(exc)) from None
        if heap_kb:
            cmd += ["-X", f"heapsize={heap_kb}K"]
        cmd.append(str(main_py))
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=str(flash_dir), env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return [asyncio.ensure_future(self._read_stdout()),
                asyncio.ensure_future(self._read_stderr()),
                asyncio.ensure_future(self._watch_exit())]

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), timeout)

    def tail(self) -> str:
        """The last console lines and standard error, for an error message."""
        lines = [line for _, line in self.log[-8:]]
        err = self.stderr.decode("utf-8", "replace").strip().splitlines()[-12:]
        return "\n".join(lines + err)

    async def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """Wait for a console line matching the regex, looking from line `start` of
        the log on; returns the match."""
        rx = re.compile(pattern)
        seen = start
        deadline = time.monotonic() + timeout
        while True:
            for _, line in self.log[seen:]:
                m = rx.search(line)
                if m:
                    return m
            seen = len(self.log)
            left = deadline - time.monotonic()
            if left <= 0 or self.exited.is_set():
                raise VBoardError(f"no serial line matching {pattern!r}:\n{self.tail()}")
            self._line_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._line_event.wait(), min(left, 0.5))

    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            m = PASSKEY_RE.match(line)
            if m:
                self.printed_passkey = int(m.group(1))
            now = self.trace_time()
            self.log.append((now, line))
            self._line_event.set()
            if self.on_line is not None:
                self.on_line(f"{now:8.3f} | {line}")

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for raw in self.proc.stderr:
            self.stderr = (self.stderr + raw)[-8000:]
            if self.on_line is not None:
                self.on_line(f"{self.trace_time():8.3f} ! "
                             f"{raw.decode('utf-8', 'replace').rstrip()}")

    async def _watch_exit(self) -> None:
        assert self.proc
        self.returncode = await self.proc.wait()
        await asyncio.sleep(0.05)  # let the pipes drain into the log
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit()
