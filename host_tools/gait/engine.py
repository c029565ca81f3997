"""Run the firmware detector over a trace: in CPython, or in the real micropython binary.

Both engines execute the same file, firmware/gait.py. Their results are a list of
events in the order the detector produced them: ("C", contact_ms, contact_seq) for a
heel strike and ("S", seq, strike_ms, ...) for a step summary; with faults=True also
("F", sample, faults) after each sample at which the faults word changed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
MPY_DIR = ROOT / "host_tools" / "mpy"

Event = tuple


class EngineError(RuntimeError):
    pass


def micropython_binary() -> str:
    """The unix-port ``micropython`` next to this interpreter, else the one on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise EngineError("the micropython binary is not installed (run `make venv`)")
    return found


def load_firmware_module(name: str = "gait", firmware_dir: Path = FIRMWARE) -> ModuleType:
    """Import a firmware module fresh from its file (CPython engine)."""
    spec = importlib.util.spec_from_file_location(f"_fw_{name}", firmware_dir / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cpython(
    samples: np.ndarray,
    rate_hz: int,
    gait: ModuleType | None = None,
    mains_hz: int = 50,
    faults: bool = False,
) -> list[Event]:
    gait = gait or load_firmware_module()
    det = gait.GaitDetector(rate_hz, mains_hz)
    out: list[Event] = []
    feed = det.feed
    word = 0
    for i, (h, a, f) in enumerate(np.asarray(samples, dtype=np.int64).tolist()):
        ev = feed(h, a, f)
        if ev:
            if ev & gait.EV_STEP:
                out.append(("S", *det.summary()))
            if ev & gait.EV_STRIKE:
                out.append(("C", det.contact_ms, det.contact_seq))
        if faults:
            w = det.faults
            if w != word:
                word = w
                out.append(("F", i, word))
    return out


def mpy_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([str(FIRMWARE), str(MPY_DIR), ".frozen"])
    return env


def run_micropython(
    samples: np.ndarray,
    rate_hz: int,
    timeout: float = 600,
    mains_hz: int = 50,
    faults: bool = False,
) -> list[Event]:
    data = np.asarray(samples, dtype="<u2").reshape(-1, 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.bin"
        path.write_bytes(data.tobytes())
        proc = subprocess.run(
            [micropython_binary(), str(MPY_DIR / "run_detector.py"), str(path), str(rate_hz),
             str(mains_hz), *(["faults"] if faults else [])],
            capture_output=True,
            text=True,
            env=mpy_env(),
            timeout=timeout,
        )
    if proc.returncode != 0:
        raise EngineError(f"micropython failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    out: list[Event] = []
    for line in proc.stdout.splitlines():
        kind, *vals = line.split(",")
        out.append((kind, *(int(v) for v in vals)))
    return out


def run(
    samples: np.ndarray, rate_hz: int, engine: str = "micropython", mains_hz: int = 50
) -> list[Event]:
    if engine == "micropython":
        return run_micropython(samples, rate_hz, mains_hz=mains_hz)
    if engine == "cpython":
        return run_cpython(samples, rate_hz, mains_hz=mains_hz)
    raise EngineError(f"unknown engine {engine!r}")


def step_summaries(events: list[Event]) -> list[tuple[int, ...]]:
    return [tuple(e[1:]) for e in events if e[0] == "S"]


def contacts(events: list[Event]) -> list[tuple[int, int]]:
    return [(e[1], e[2]) for e in events if e[0] == "C"]
