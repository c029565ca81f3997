"""Exercise sessions on the host: run firmware/exercise.py over a trace, decode the
exercise Step Event packets and summarise a session.

The engines run the very file that goes on the insole: ``cpython`` imports it here,
``micropython`` runs it in the unix-port binary (host_tools/mpy/run_exercise.py).
Both produce the same list of ``(sample_index, packet)`` pairs, where each packet is
the 20-byte Step Event the insole would notify (layouts in docs/EXERCISES.md).
"""

from __future__ import annotations

import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from host_tools.gait.engine import FIRMWARE, MPY_DIR, EngineError, micropython_binary, mpy_env

MODES = {"heel-raises": 1, "toe-scrunch": 2, "balance": 3, "slow-walk": 4}
MODE_NAMES = {v: k for k, v in MODES.items()}
PATTERNS = {"any": 0, "rear": 1, "mid": 2, "fore": 3}
PATTERN_NAMES = ("unknown", "rear", "mid", "fore")
BITS = (1, 2, 4, 8, 16, 32, 64)

KIND_HEEL_RAISE = 0x10
KIND_TOE_SCRUNCH = 0x11
KIND_BALANCE = 0x12
KIND_COACHED_STEP = 0x13
PACE_NAMES = ("unknown", "too slow", "on target", "too fast")
END_NAMES = {1: "other foot down", 2: "load collapsed", 3: "void"}
BAL_SUBS = {0: "contact", 1: "hold-start", 2: "hold-end", 3: "sway"}

_cache: dict[str, ModuleType] = {}


# firmware/exercise.py and the modules it imports, in import order
EXERCISE_MODULES = ("gait", "exbase", "heelraise", "toescrunch", "balance", "slowwalk",
                    "exercise")


def _load(name: str, transform: Callable[[str], object] | None = None,
          extra: dict | None = None) -> ModuleType:
    """One firmware module from its file, under a private name; ``transform`` may
    turn the source into a code object and ``extra`` seeds the module's globals (the
    tests' instrumented copy)."""
    path = FIRMWARE / f"{name}.py"
    module = ModuleType(f"_fw_{name}")
    module.__file__ = str(path)
    module.__dict__.update(extra or {})
    source = path.read_text()
    code = transform(source) if transform else compile(source, str(path), "exec")
    exec(code, module.__dict__)  # our own firmware file
    return module


def load_exercise(transform: Callable[[str], object] | None = None,
                  extra: dict | None = None,
                  names: tuple[str, ...] = EXERCISE_MODULES) -> ModuleType:
    """Import firmware/exercise.py with its firmware imports (which use plain module
    names, as on the board) without leaving those names in sys.modules."""
    saved = {n: sys.modules.get(n) for n in names}
    try:
        module = None
        for name in names:
            if name == "gait":  # the detector has its own checks (tests/test_gait_mpy.py)
                module = _load(name)
            else:
                module = _load(name, transform, extra)
            sys.modules[name] = module
        assert module is not None
        return module
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def firmware_module() -> ModuleType:
    """firmware/exercise.py imported into this process (cached)."""
    if "exercise" not in _cache:
        _cache["exercise"] = load_exercise()
    return _cache["exercise"]


def iter_cpython(mode: int, samples: np.ndarray, rate_hz: int, target_x10: int = 900,
                 tol_pct: int = 5, pattern: int = 1) -> Iterator[tuple[int, bytes]]:
    """Feed the samples one by one; yield (sample index, packet) as events occur."""
    ex = firmware_module()
    counter = ex.create(mode, rate_hz, target_x10, tol_pct, pattern)
    pkt = bytearray(20)
    seq = 0
    for i, (h, a, f) in enumerate(np.asarray(samples, dtype=np.int64).tolist()):
        ev = counter.feed(h, a, f)
        if ev:
            for bit in BITS:
                if ev & bit:
                    counter.pack(bit, pkt, seq)
                    seq += 1
                    yield i, bytes(pkt)


def run_cpython(mode, samples, rate_hz, target_x10=900, tol_pct=5, pattern=1):
    return list(iter_cpython(mode, samples, rate_hz, target_x10, tol_pct, pattern))


def run_micropython(mode, samples, rate_hz, target_x10=900, tol_pct=5, pattern=1,
                    timeout: float = 600) -> list[tuple[int, bytes]]:
    data = np.asarray(samples, dtype="<u2").reshape(-1, 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.bin"
        path.write_bytes(data.tobytes())
        args = [str(v) for v in (rate_hz, mode, target_x10, tol_pct, pattern)]
        proc = subprocess.run(
            [micropython_binary(), str(MPY_DIR / "run_exercise.py"), str(path), *args],
            capture_output=True, text=True, env=mpy_env(), timeout=timeout,
        )
    if proc.returncode != 0:
        raise EngineError(f"micropython failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    out = []
    for line in proc.stdout.splitlines():
        idx, hexed = line.split(",")
        out.append((int(idx), bytes.fromhex(hexed)))
    return out


def decode(pkt: bytes) -> dict:
    """One exercise Step Event packet as a dict (raises ValueError if it is not one)."""
    if len(pkt) != 20 or pkt[0] != 1:
        raise ValueError(f"not a format-1 Step Event packet: {pkt.hex()}")
    kind = pkt[1]
    if kind == KIND_HEEL_RAISE:
        (_, _, seq, flags, depth, count, start, rise, hold, lower, partials) = struct.unpack(
            "<BBHBBHIHHHH", pkt)
        return {"type": "partial" if flags & 1 else "rep", "seq": seq, "depth_pct": depth,
                "count": count, "start_ms": start, "rise_ms": rise, "hold_ms": hold,
                "lower_ms": lower, "partials": partials}
    if kind == KIND_TOE_SCRUNCH:
        (_, _, seq, flags, _, count, start, dur, peak, interval, _) = struct.unpack(
            "<BBHBBHIHHHH", pkt)
        return {"type": "scrunch", "seq": seq, "count": count, "start_ms": start,
                "duration_ms": dur, "peak": -peak if flags & 1 else peak,
                "interval_ms": interval}
    if kind == KIND_BALANCE:
        sub = pkt[4]
        if sub == 0:
            (_, _, seq, _, on, t, total) = struct.unpack("<BBHBBIH", pkt[:12])
            return {"type": "contact", "seq": seq, "on": bool(on), "t_ms": t, "total": total}
        if sub == 1:
            (_, _, seq, _, _, holds, start, level) = struct.unpack("<BBHBBHIH", pkt[:14])
            return {"type": "hold-start", "seq": seq, "holds": holds, "start_ms": start,
                    "level": level}
        if sub == 2:
            (_, _, seq, _, reason, holds, start, dur, path, rng) = struct.unpack(
                "<BBHBBHIIHH", pkt)
            return {"type": "hold-end", "seq": seq, "holds": holds, "start_ms": start,
                    "duration_ms": dur, "reason": END_NAMES.get(reason, str(reason)),
                    "sway_path": path, "sway_range": rng}
        if sub == 3:
            (_, _, seq, _, in_hold, t, elapsed, path, rng, cop) = struct.unpack(
                "<BBHBBIIHHH", pkt)
            return {"type": "sway", "seq": seq, "in_hold": bool(in_hold), "t_ms": t,
                    "elapsed_ms": elapsed, "sway_path": path, "sway_range": rng, "cop": cop}
        raise ValueError(f"unknown balance sub-event {sub}")
    if kind == KIND_COACHED_STEP:
        (_, _, seq, flags, pattern, step, strike, stride, cad, stance, arch) = struct.unpack(
            "<BBHBBHIHHHH", pkt)
        return {"type": "step", "seq": seq, "step": step, "strike_ms": strike,
                "stride_ms": stride, "cadence": cad / 10.0, "stance_ms": stance,
                "share_arch": arch, "pattern": PATTERN_NAMES[pattern & 3],
                "pace": PACE_NAMES[flags & 3], "heel_strike": bool(flags & 4),
                "pattern_ok": bool(flags & 8)}
    raise ValueError(f"packet kind 0x{kind:02x} is not an exercise event")


def set_mode_command(mode: int, target_x10: int = 900, tol_pct: int = 5,
                     pattern: int = 1) -> bytes:
    """The Control write that selects an exercise mode (layout in docs/EXERCISES.md)."""
    op_set_mode = 0x09
    if mode == MODES["slow-walk"]:
        return struct.pack("<BBHBB", op_set_mode, mode, target_x10, tol_pct, pattern)
    return bytes((op_set_mode, mode))


def arch_band(share_permille: float) -> str:
    """Interpretation band of a session's mean arch share (docs/EXERCISES.md)."""
    if share_permille < ARCH_LOW_BELOW:
        return "low arch loading (high-arch pattern)"
    if share_permille > ARCH_HIGH_ABOVE:
        return "high arch loading (low-arch / flat-foot pattern)"
    return "typical"


# Bands in per-mille of stance load on the arch sensor: the 10th and 90th percentiles
# of the per-walk mean in the gaitpdb control walks (derivation in docs/EXERCISES.md).
ARCH_LOW_BELOW = 25
ARCH_HIGH_ABOVE = 410


def summarize(mode: int, events: list[dict], duration_s: float) -> dict:
    """Session summary for the history database and the printout."""
    out: dict = {"mode": MODE_NAMES[mode], "duration_s": round(duration_s, 1)}
    if mode == MODES["heel-raises"]:
        reps = [e for e in events if e["type"] == "rep"]
        out["reps"] = len(reps)
        out["partials"] = sum(1 for e in events if e["type"] == "partial")
        if reps:
            out["mean_hold_s"] = round(statistics.mean(e["hold_ms"] for e in reps) / 1000, 2)
            out["mean_rise_s"] = round(statistics.mean(e["rise_ms"] for e in reps) / 1000, 2)
            out["mean_lower_s"] = round(statistics.mean(e["lower_ms"] for e in reps) / 1000, 2)
            out["mean_depth_pct"] = round(statistics.mean(e["depth_pct"] for e in reps), 1)
    elif mode == MODES["toe-scrunch"]:
        reps = [e for e in events if e["type"] == "scrunch"]
        out["reps"] = len(reps)
        if reps:
            out["mean_duration_s"] = round(
                statistics.mean(e["duration_ms"] for e in reps) / 1000, 2)
    elif mode == MODES["balance"]:
        holds = [e for e in events if e["type"] == "hold-end" and e["reason"] != "void"]
        out["holds"] = len(holds)
        out["balance_s"] = round(sum(e["duration_ms"] for e in holds) / 1000, 1)
        out["longest_s"] = round(max((e["duration_ms"] for e in holds), default=0) / 1000, 1)
        if holds:
            out["mean_sway_path"] = round(statistics.mean(e["sway_path"] for e in holds), 1)
    else:
        steps = [e for e in events if e["type"] == "step"]
        out["steps"] = len(steps)
        cad = [e["cadence"] for e in steps if e["cadence"] > 0]
        if cad:
            out["cadence"] = round(statistics.mean(cad), 1)
            out["cadence_cv_pct"] = round(
                100 * statistics.pstdev(cad) / statistics.mean(cad), 2) if len(cad) > 1 else 0.0
            out["on_target_pct"] = round(
                100 * sum(e["pace"] == "on target" for e in steps) / len(steps), 1)
        if steps:
            out["heel_strike_pct"] = round(100 * sum(e["heel_strike"] for e in steps)
                                           / len(steps), 1)
            arch = [e["share_arch"] for e in steps if e["share_arch"] > 0]
            if arch:
                out["arch_index"] = round(statistics.mean(arch), 1)
                out["arch_band"] = arch_band(out["arch_index"])
    return out


def combine_balance(a: list[dict], b: list[dict], min_ms: int = 2000) -> list[dict]:
    """Single-leg holds from two insoles' balance events on a common clock.

    ``a`` and ``b`` are decoded events of the two feet (their contact sub-events are
    used). A hold on foot A is a span where A is in contact and B is not; it ends when B
    touches down ("other foot down") or A loses contact ("load collapsed"). Spans
    shorter than ``min_ms`` (a step) are left out, as on the insole.
    """
    changes = sorted(
        [(e["t_ms"], 0, e["on"]) for e in a if e["type"] == "contact"]
        + [(e["t_ms"], 1, e["on"]) for e in b if e["type"] == "contact"])
    on = [False, False]
    holds: list[dict] = []
    open_hold: tuple[int, int] | None = None  # (foot, start)
    for t, foot, state in changes:
        on[foot] = state
        single = on[0] != on[1]
        if open_hold and not (single and on[open_hold[0]]):
            f, start = open_hold
            reason = "load collapsed" if not on[f] else "other foot down"
            if t - start >= min_ms:
                holds.append({"foot": "ab"[f], "start_ms": start, "duration_ms": t - start,
                              "reason": reason})
            open_hold = None
        if single and open_hold is None:
            open_hold = (0 if on[0] else 1, t)
    return holds

