"""Benchmark the firmware under the real micropython binary: detector, memory, CPU.

One run prints JSON lines (docs/HARDWARE.md, "Memory and CPU budget", explains each):

- ``detector``: firmware/gait.py over the bundled walk: us_per_sample, a baseline loop
  that passes the same samples to a no-op call, their ratio, heap per sample and
  whether the whole trace runs under micropython.heap_lock().
- ``memory``: the .mpy build on the virtual board, ``app.build()`` in walk mode with
  the board's shims imported first and not counted: firmware_heap_boot_bytes with the
  event ring at its default capacity and at 64 events, the heap with each exercise
  mode running, and after going back to walk mode.
- ``largest_block``: the biggest single allocation made after boot, from heap block
  maps (``micropython.mem_info(1)``) taken with the collector off while samples,
  commands and every exercise mode run.
- ``name_tables``: MicroPython's interned-name tables (py/qstr.c): names and table
  bytes after the shims, at boot, in each mode and after; every name the firmware's
  modules can intern (imported without the shims); and the tables an ESP32 would make
  for the same names, which starts with none of the virtual board's.
- ``native_code``: executable memory the ESP32 build's native and viper code takes
  (xtensawin .mpy files, read by host_tools/board/mpyinfo.py): at boot and per mode.
- ``cpu``: the per-sample loop (three ADC reads, detector or counter, service() with
  a connected, subscribed central on tests/fw_fakes.py's fake radio), idle and while
  streaming raw, as a ratio to a loop that only reads the three ADCs, per mode; and
  the estimated highest sample rate each mode holds on a 240 MHz ESP32.
- ``strike_latency``: per sample rate, how many samples after the bundled walk's own
  contact crossing the detector reports each strike (host_tools/gait/latency.py).
- ``targets``: each target and whether it is met.

64-bit figures are the unix port's; the 32-bit estimate beside each scales the
object part by a factor measured once on a 32-bit build of the same port (or comes
from ``--micropython32 BINARY`` when given). The unix port on a PC is far faster
than an ESP32: compare ratios, not microseconds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from host_tools.common import argcheck

HELP = "detector, memory and CPU budget under the micropython binary (JSON lines)"

DATA = Path(__file__).resolve().parents[1] / "data" / "walk_left.csv"
TESTS = Path(__file__).resolve().parents[2] / "tests"

# 32-bit heap per 64-bit heap for everything but byte buffers: measured with a 32-bit
# build of the unix port (the micropython tree at v1.29, CFLAGS -m32) on this bench's
# memory run, (63056 - 20560) / (80832 - 20640) with the 1024-event ring.
OBJECT_RATIO_32 = 0.71
# Published ESP32 figures (micropython/micropython issue 7495): ~35 us per ADC read()
# plus ticks_us() in a viper loop, and 1730 us (bytecode) / 895 us (viper) for
# "for i in range(200): data[i] = i" on an array. Both are taken as 240 MHz figures
# although the thread ran at least part of its tests at the default 160 MHz: that
# makes the estimates conservative.
ESP32_ADC_READ_US = 35.0
ESP32_FILL_BYTECODE_US = 1730 / 200
ESP32_FILL_VIPER_US = 895 / 200
CPU_SHARE = 0.5  # of each sample period the loop may take; the rest: BLE, GC, sleep
RATE_STEP = 50
TARGET_HEAP_BOOT = 40 * 1024
TARGET_HEAP_BOOT_32 = 30 * 1024
TARGET_LARGEST_BLOCK = 4 * 1024
TARGET_NATIVE = 12 * 1024
TARGET_WALK_RATIO = 6.0
# An ESP32's interned-name tables (py/qstr.c qstr_add): the first one made at run time
# has 20 entries (twice the frozen pool's allocation, which tools/mpy-tool.py caps at
# 10) and each next one twice the last. An entry is a 4-byte pointer, a 2-byte hash
# (MICROPY_QSTR_BYTES_IN_HASH at the ESP32's EXTRA_FEATURES level) and a 1-byte
# length, after a 24-byte header; heap blocks are 16 bytes.
ESP32_FIRST_NAME_TABLE = 20
ESP32_NAME_ENTRY_BYTES = 7
ESP32_NAME_TABLE_HEADER = 24
ESP32_BLOCK = 16
MODES = {0: "walk", 1: "heel_raise", 2: "toe_scrunch", 3: "balance", 4: "slow_walk"}


def add_arguments(p) -> None:
    p.add_argument("--trace", default=str(DATA), help="trace to feed (default: bundled walk)")
    p.add_argument("--repeats", type=argcheck.int_range(1, 1000, "--repeats"), default=5,
                   help="timed detector runs, 1..1000; the fastest counts")
    p.add_argument("--micropython32", default=None, metavar="BINARY",
                   help="a 32-bit build of the unix port: measure the 32-bit heap too")


def _run(cmd, env, cwd=None, timeout=900) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def write_traces(trace, out: Path) -> None:
    """walk.bin (the trace, at least 60 s) and mode1..4.bin (generated exercises)."""
    import numpy as np

    from host_tools.training import exgen

    walk = np.asarray(trace.samples, dtype="<u2")
    while len(walk) < 6000:
        walk = np.concatenate([walk, walk])
    (out / "walk.bin").write_bytes(walk.tobytes())
    gens = {1: exgen.heel_raises(reps=8), 2: exgen.toe_scrunches(reps=8),
            3: exgen.balance(holds=2, ends=["other", "collapse"]),
            4: exgen.slow_walk([1200.0] * 12)}
    for mode, tr in gens.items():
        (out / f"mode{mode}.bin").write_bytes(np.asarray(tr.samples, dtype="<u2").tobytes())


def _memory(binary: str, build: Path, traces: Path, heapsize: str) -> tuple[list[dict], str]:
    import os

    from host_tools.gait import engine

    env = dict(os.environ)
    env["MICROPYPATH"] = str(build)
    env["VBOARD_TRACE"] = str(traces / "walk.bin")
    for k in ("VBOARD_SOCK", "VBOARD_LINGER_MS"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory() as flash:
        out = _run([binary, "-X", f"heapsize={heapsize}",
                    str(engine.MPY_DIR / "bench_device.py"), "memory", str(traces)],
                   env, cwd=flash)
    return _json_lines(out), out


_QSTR_INFO = re.compile(r"n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), "
                        r"n_total_bytes=(\d+)")


def name_snapshots(output: str) -> dict[str, dict]:
    """Every "@@QSTR name" snapshot: names interned, tables and their bytes."""
    snaps: dict[str, dict] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("@@QSTR "):
            m = _QSTR_INFO.search(lines[i + 1])
            if m:
                pools, names, text, total = map(int, m.groups())
                snaps[line.split()[1]] = {"names": names, "tables": pools,
                                          "table_bytes": total - text, "text_bytes": text}
    return snaps


def name_table_bytes(names: int, first: int = ESP32_FIRST_NAME_TABLE,
                     entry: int = ESP32_NAME_ENTRY_BYTES,
                     header: int = ESP32_NAME_TABLE_HEADER,
                     block: int = ESP32_BLOCK) -> list[int]:
    """Heap bytes of each interned-name table made for this many run-time names (the
    defaults are an ESP32's; a 64-bit unix port has 11-byte entries, a 48-byte header
    and 32-byte blocks)."""
    tables: list[int] = []
    alloc, room = first, 0
    while room < names:
        tables.append(-(-(header + entry * alloc) // block) * block)
        room += alloc
        alloc *= 2
    return tables


def firmware_names(binary: str, build: Path) -> int:
    """Every name the firmware's modules intern, imported without the shims (app.py,
    which needs them, is left out: a dozen names; so is exercise.py, the modes' public
    namespace for the host tools, which the device never imports)."""
    import os

    mods = sorted(p.stem for p in build.glob("*.mpy") if p.stem not in ("app", "exercise"))
    code = ("import sys, micropython as u\nprint('@@QSTR start'); u.qstr_info()\n"
            "for m in sys.argv[1:]: __import__(m)\nprint('@@QSTR all'); u.qstr_info()\n")
    env = dict(os.environ)
    env["MICROPYPATH"] = str(build)
    with tempfile.TemporaryDirectory() as cwd:
        snaps = name_snapshots(_run([binary, "-c", code, *mods], env, cwd=cwd))
    return snaps["all"]["names"] - snaps["start"]["names"]


def name_tables(output: str, all_names: int) -> dict:
    """The name_tables section: the unix port's as measured, an ESP32's as modelled."""
    snaps = name_snapshots(output)
    shims = snaps["shims"]
    unix = {k: {"firmware_names": v["names"] - shims["names"],
                "table_bytes_since_shims": v["table_bytes"] - shims["table_bytes"]}
            for k, v in snaps.items() if k not in ("start", "shims")}
    at_boot = unix["boot"]["firmware_names"]
    boot_tables = name_table_bytes(at_boot)
    ever = name_table_bytes(max(all_names, at_boot))
    return {
        "section": "name_tables",
        "unix_names_before_firmware": shims["names"],
        "unix": unix,
        "firmware_names_all_modules": all_names,
        "esp32_tables_at_boot_bytes": boot_tables,
        "esp32_tables_after_boot_bytes": ever[len(boot_tables):],
        "method": "ESP32 tables for the names the firmware interns by boot on the unix port "
                  "(a lower bound: names the shims interned first are not counted) and for "
                  "every name of its modules (an upper bound), from an empty run-time pool",
    }


def largest_after_boot(output: str) -> dict:
    from host_tools.board import heapmap

    maps = heapmap.maps(output)
    boot = heapmap.parse(maps["boot"])
    at_boot = {b.offset: b for b in boot}
    best = None
    where = ""
    grown = 0
    for name, text in maps.items():
        if name in ("shims", "boot"):
            continue
        for b in heapmap.new_objects(boot, heapmap.parse(text)):
            old = at_boot.get(b.offset)
            if old is not None and old.kind == b.kind and old.nbytes < b.nbytes:
                # the same block extended in place (realloc without moving: the qstr
                # string chunk); it never needed a large free run
                grown = max(grown, b.nbytes - old.nbytes)
                continue
            if best is None or b.nbytes > best.nbytes:
                best, where = b, name
    return {"largest_block_bytes": best.nbytes if best else 0,
            "largest_block_kind": best.kind if best else "", "largest_block_phase": where,
            "largest_growth_in_place_bytes": grown}


def native_code(esp_build: Path, boot_modules: list[str], mode_modules: dict) -> dict:
    from host_tools.board import mpyinfo

    per_module = {}
    functions = []
    for p in sorted(esp_build.glob("*.mpy")):
        m = mpyinfo.parse_file(p)
        per_module[p.stem] = m.exec_bytes()
        for rc in m.native():
            functions.append({"module": p.stem, "kind": rc.kind_name, "name": rc.name,
                              "exec_bytes": mpyinfo.exec_bytes(rc.length)})
    boot = sum(per_module.get(m, 0) for m in boot_modules)
    modes = {k: boot + sum(per_module.get(m, 0) for m in mods) for k, mods in mode_modules.items()}
    return {"native_code_bytes": boot, "native_code_mode_bytes": modes,
            "native_code_all_modules_bytes": sum(per_module.values()),
            "native_functions": functions}


def esp32_estimates(cpu_rows: list[dict]) -> dict:
    """us per sample and the highest rate each mode holds on a 240 MHz ESP32.

    The unix port's time for the loop minus its bare ADC loop, scaled by how much
    slower the ESP32 ran a published loop (taken with the same run's timing of that
    loop; the larger of its bytecode and viper factors), plus three ADC reads."""
    out = {}
    for row in cpu_rows:
        k = max(ESP32_FILL_BYTECODE_US / row["fill_bytecode_us_per_iter"],
                ESP32_FILL_VIPER_US / row["fill_viper_us_per_iter"])
        work = max(row["streaming_us"] - row["bare_adc_us"], 0.0)
        us = 3 * ESP32_ADC_READ_US + work * k
        hz = int(CPU_SHARE * 1e6 / us) // RATE_STEP * RATE_STEP
        out[MODES[row["mode"]]] = {"esp32_per_unix_us": round(k, 1), "us_per_sample": round(us),
                                   "max_rate_hz": hz}
    return out


def firmware_max_rates() -> tuple[int, ...]:
    """device.MAX_RATE_HZ, read from the source (the module needs the firmware's path)."""
    import ast

    from host_tools.gait import engine

    tree = ast.parse((engine.FIRMWARE / "device.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "MAX_RATE_HZ" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("firmware/device.py has no MAX_RATE_HZ")


def device_budget(trace, micropython32: str | None = None) -> list[dict]:
    """Every memory and CPU figure of the bench (one dict per JSON line)."""
    import os

    from host_tools.board import build as fwbuild
    from host_tools.gait import engine

    binary = engine.micropython_binary()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        traces = tmp_path / "traces"
        traces.mkdir()
        write_traces(trace, traces)
        vb = fwbuild.build("virtual", tmp_path / "build", log=lambda *_: None)
        esp = fwbuild.build("esp32_devkitc", tmp_path / "build", log=lambda *_: None)
        mem, out = _memory(binary, vb, traces, "8M")
        boot = next(r for r in mem if r["section"] == "memory")
        modes = next(r for r in mem if r["section"] == "memory_modes")
        ring = boot["ring_bytes"]
        obj = boot["firmware_heap_boot_bytes"] - ring
        ring64 = 64 * 20 + 32  # the buffer and the bytearray header, the same on 32 bits
        est = {
            "firmware_heap_boot_bytes_32bit": ring + round(obj * OBJECT_RATIO_32),
            "firmware_heap_boot_ring64_bytes_32bit": round(
                ring64 + (boot["firmware_heap_boot_ring64_bytes"] - ring64) * OBJECT_RATIO_32),
            "mode_heap_bytes_32bit": {
                k: ring + round((v - ring) * OBJECT_RATIO_32)
                for k, v in modes["mode_heap_bytes"].items()},
            "estimate_32bit": f"ring buffer as is, the rest x {OBJECT_RATIO_32} "
                              "(measured once on a 32-bit unix build)",
        }
        if micropython32:
            vb32 = tmp_path / "build32"
            shutil.copytree(vb, vb32)
            for src in sorted((fwbuild.ROOT / "firmware").glob("*.py")):
                if src.name in fwbuild.SOURCE_ONLY:
                    continue
                fwbuild._compile(src, src.name, vb32 / (src.stem + ".mpy"), "x86")
            mem32, _ = _memory(micropython32, vb32, traces, "4M")
            b32 = next(r for r in mem32 if r["section"] == "memory")
            m32 = next(r for r in mem32 if r["section"] == "memory_modes")
            est.update({"measured_32bit_boot_bytes": b32["firmware_heap_boot_bytes"],
                        "measured_32bit_boot_ring64_bytes": b32["firmware_heap_boot_ring64_bytes"],
                        "measured_32bit_mode_heap_bytes": m32["mode_heap_bytes"]})
        names = name_tables(out, firmware_names(binary, vb))
        # the 32-bit estimate again with the name tables an ESP32 makes (at boot) in
        # place of the unix port's, which the shims' names made larger
        unix_tables = names["unix"]["boot"]["table_bytes_since_shims"]
        est["firmware_heap_boot_bytes_esp32"] = (
            ring + round((obj - unix_tables) * OBJECT_RATIO_32)
            + sum(names["esp32_tables_at_boot_bytes"]))
        est["estimate_esp32"] = ("the 32-bit estimate with the modelled ESP32 name tables "
                                 "(section name_tables) in place of the unix port's")
        boot.update(est)
        rows.append(boot)
        modes_row = dict(modes)
        rows.append(modes_row)
        rows.append(names)
        largest = largest_after_boot(out)
        largest["largest_block_bytes_32bit"] = (
            f"at most {largest['largest_block_bytes']} (object blocks halve, buffers do not)")
        rows.append({"section": "largest_block", **largest})
        boot_mods = boot["modules"]
        mode_mods = {k: [m for m in v if m not in boot_mods]
                     for k, v in modes.get("mode_modules", {}).items()}
        native = {"section": "native_code",
                  "arch": "xtensawin (ESP32 executable memory; no 64-bit figure)",
                  **native_code(esp, boot_mods, mode_mods)}
        rows.append(native)
        cpu_dir = tmp_path / "cpu"
        cpu_dir.mkdir()
        for f in vb.glob("*.mpy"):
            shutil.copy(f, cpu_dir / f.name)
        env = dict(os.environ)
        env["MICROPYPATH"] = os.pathsep.join([str(cpu_dir), str(TESTS)])
        cpu = _json_lines(_run([binary, str(engine.MPY_DIR / "bench_device.py"), "cpu",
                                str(traces)], env, cwd=tmp))
    cpu_rows = [r for r in cpu if r["section"] == "cpu" and "error" not in r]
    for r in cpu:
        if r["section"] == "cpu":
            r["mode"] = MODES[r["mode"]] if isinstance(r["mode"], int) else r["mode"]
            for key in ("bare_adc_us", "idle_us", "streaming_us", "idle_ratio",
                        "streaming_ratio", "fill_bytecode_us_per_iter",
                        "fill_viper_us_per_iter"):
                if key in r:
                    r[key] = round(r[key], 3)
            rows.append(r)
    for r in cpu_rows:
        r["mode"] = next(k for k, v in MODES.items() if v == r["mode"])
    esp = esp32_estimates(cpu_rows)
    fw_rates = firmware_max_rates()
    rows.append({"section": "esp32_estimate", **esp,
                 "firmware_max_rate_hz": dict(zip(MODES.values(), fw_rates, strict=True)),
                 "method": "3 ADC reads at 35 us + (loop - bare ADC loop) on the unix port "
                           "x esp32_per_unix_us; a mode holds a rate whose loop takes at "
                           f"most {CPU_SHARE:.0%} of its period"})
    from host_tools.gait import latency

    strike_latency = latency.rows()
    rows.append({"section": "strike_latency", "rates": strike_latency,
                 "method": "samples from the trace's own 25 % crossing to the strike "
                           "(first two strikes left out), CPython engine"})
    walk_cpu = next(r for r in cpu_rows if r["mode"] == 0)
    checks = {
        "heap_boot_ring64_le_40KB": boot["firmware_heap_boot_ring64_bytes"] <= TARGET_HEAP_BOOT,
        "heap_boot_ring64_32bit_le_30KB":
            est["firmware_heap_boot_ring64_bytes_32bit"] <= TARGET_HEAP_BOOT_32,
        "largest_block_le_4KB": largest["largest_block_bytes"] <= TARGET_LARGEST_BLOCK,
        "native_code_le_12KB": native["native_code_bytes"] <= TARGET_NATIVE
        and all(v <= TARGET_NATIVE for v in native["native_code_mode_bytes"].values()),
        "walk_idle_ratio_le_6": walk_cpu["idle_ratio"] <= TARGET_WALK_RATIO,
        "walk_streaming_ratio_le_6": walk_cpu["streaming_ratio"] <= TARGET_WALK_RATIO,
        "firmware_rates_within_estimate": all(
            fw <= esp[MODES[m]]["max_rate_hz"] for m, fw in enumerate(fw_rates)),
        "heap_returns_after_modes": modes["walk_after_modes_bytes"]
        <= modes["walk_after_commands_bytes"] + 4096,
        "strike_within_3_samples_at_100hz": latency.target_met(strike_latency),
    }
    rows.append({"section": "targets", **checks})
    return rows


def run(args) -> int:
    import numpy as np

    from host_tools.cli import UsageError
    from host_tools.gait import engine, tracefile

    try:
        trace = tracefile.read_trace(args.trace)
    except tracefile.TraceError as exc:
        raise UsageError(str(exc)) from None
    rate = trace.rate_hz or tracefile.DEFAULT_RATE_HZ
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.bin"
        path.write_bytes(np.asarray(trace.samples, dtype="<u2").tobytes())
        proc = subprocess.run(
            [
                engine.micropython_binary(),
                str(engine.MPY_DIR / "bench_detector.py"),
                str(path),
                str(rate),
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            env=engine.mpy_env(),
            timeout=600,
        )
    if proc.returncode != 0:
        print(proc.stderr)
        return 1
    line = json.loads(proc.stdout.strip())
    print(json.dumps({"section": "detector", **line}))
    try:
        rows = device_budget(trace, args.micropython32)
    except RuntimeError as exc:
        print(exc)
        return 1
    for row in rows:
        print(json.dumps(row))
    return 0
