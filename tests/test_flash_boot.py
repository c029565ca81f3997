"""The flashed tree boots: make flash onto a pty "board", then start what landed on it.

The virtual board's build (``.mpy`` compiled for this host's CPU, the board file and the
machine/bluetooth/time shims) is flashed with the real mpremote onto the MicroPython unix
port behind a pty. Then the virtual board (host_tools/vboard/) starts ``main.py`` from
that device directory, with the device directory as the board's flash: the firmware
modules it imports are the flashed ``.mpy`` files (firmware/ is not on its path). A bumble
central pairs, subscribes and decodes the step events, which must equal the detector run
in CPython on the same trace, event for event.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from flashdev import ROOT, PtyDevice, run_flash  # noqa: E402

from host_tools.ble import protocol  # noqa: E402
from host_tools.board.build import DEVICE_MANIFEST, build, read_mpy_header  # noqa: E402
from host_tools.gait import engine  # noqa: E402
from host_tools.gait.tracefile import read_trace  # noqa: E402
from host_tools.vboard.central import Central  # noqa: E402
from host_tools.vboard.insole import VirtualInsole  # noqa: E402
from host_tools.vboard.radio import VirtualRadio  # noqa: E402

TRACE = Path(__file__).resolve().parent / "data" / "walk_90s_left.csv"
SECONDS = 30.0  # the first half minute of the walk keeps the test short


def as_reference(decoded: list) -> list[tuple]:
    """Decoded Step Event packets (strike, step + load) in engine.run_cpython's shape."""
    out, pending = [], None
    for ev in decoded:
        if isinstance(ev, protocol.Strike):
            out.append(("C", ev.contact_ms, ev.step))
        elif isinstance(ev, protocol.Step):
            pending = ev
        elif isinstance(ev, protocol.Load):
            s = pending
            assert s is not None, "LOAD without its STEP"
            out.append(("S", s.step, s.strike_ms, s.toe_off_ms, s.heel_off_ms, s.stance_ms,
                        s.swing_ms, s.stride_ms, ev.pattern, ev.peak_heel, ev.peak_arch,
                        ev.peak_fore, ev.share_heel, ev.share_arch, ev.share_fore))  # fmt: skip
            pending = None
    return out


def test_flashed_tree_boots_on_the_virtual_board_and_emits_step_events(tmp_path):
    build_dir = build("virtual", tmp_path / "build", log=lambda *_: None)
    manifest = json.loads((build_dir / "manifest.json").read_text())
    root = tmp_path / "device"
    with PtyDevice(root) as dev:
        # no --force: the build's native code is for this host, like the unix port
        res = run_flash(dev.port, build_dir, "--reset", "none")
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"copying {len(manifest['files'])} file(s)" in res.stdout
    on_board = sorted(p.name for p in root.iterdir())
    assert on_board == sorted([*manifest["files"], DEVICE_MANIFEST])
    # the firmware on the board is compiled: only main.py of it is source
    fw_modules = [p.stem for p in (ROOT / "firmware").glob("*.py") if p.name != "main.py"]
    assert fw_modules and all((root / f"{m}.mpy").exists() for m in fw_modules)
    assert not any((root / f"{m}.py").exists() for m in fw_modules)
    assert read_mpy_header(root / "gait.mpy")["arch"] == manifest["native_arch"]

    async def main():
        radio = VirtualRadio()
        vi = VirtualInsole(
            TRACE, radio=radio, paused=True, firmware_dir=root, flash_dir=root
        )
        async with vi:
            central = Central(await radio.central())
            await central.connect(vi)
            await central.pair()
            got = await central.subscribe(protocol.UUID_STEP_EVENT)
            await vi.run_until(SECONDS)
            await vi.run_for(0.5)  # let the last notifications out
            log = [line for _, line in vi.log]
        await radio.close()
        return [protocol.decode_event(v) for _, v in got], log

    decoded, log = asyncio.run(asyncio.wait_for(main(), 120))
    banners = [line for line in log if line.startswith("insole ")]
    assert len(banners) == 1, log[:5]
    assert f"board={manifest['board_name']} " in banners[0]

    tr = read_trace(TRACE)

    def reference(seconds: float) -> list[tuple]:
        return engine.run_cpython(tr.samples[: int(seconds * tr.rate_hz) + 1], tr.rate_hz)

    got = as_reference(decoded)
    assert len([e for e in got if e[0] == "S"]) >= 15  # half a minute of real walking
    # all the detector finds in the first SECONDS, and nothing it would not find by
    # one second later (the run went half a second past SECONDS)
    early, late = reference(SECONDS), reference(SECONDS + 1.0)
    assert got[: len(early)] == early
    assert got == late[: len(got)]
