"""Code that runs at boot only or rarely leaves RAM after its use (docs/HARDWARE.md,
"Memory and CPU budget"): the constructors' code (modes.py, ble_gatt.py,
journal_boot.py), config.py and the bond file code (bonds_load.py), the GATT
table (ble_gatt.py), the Control commands (control.py with control_wire.py and
modes.py) and the journal's frame writer (journal_write.py) are imported for their
use and dropped again (firmware/lazy.py), and the heap comes back each time."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

from host_tools.ble import protocol as HP
from host_tools.gait.engine import micropython_binary

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
SHIMS = ROOT / "boards" / "virtual"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import fw_fakes as F  # noqa: E402

from tests.no_memory import no_memory_for  # noqa: E402

LAZY = {"config", "bonds_load", "ble_gatt", "control", "control_wire", "modes",
        "journal_write", "journal_boot"}

# The virtual board's build from source: boot, then three rounds of every kind of
# Control command and a bond file write, the heap after each round. Each heap()
# also prints the interned names' pools (micropython.qstr_info()): those stay by
# design, and how far they grow depends on the length of the module paths (each
# module's __file__ is interned), so they are counted apart. The collector scans
# the C stack and each running frame's whole value stack, where a slot written
# before and not since can still point at a dropped module's code: the work runs
# in functions that have returned before heap() collects, so the top level holds
# only what it names. Where a C frame's stale slot lands still depends on where
# each block lies, which the path lengths and the code move: a slot can keep one
# dropped block (seen: 2 to 8 KB) in one heap layout and not in the next. So the
# script runs in three layouts (a live bytearray of PAD bytes shifts every block
# after it) and the heap figures are taken from the median one: a leak of the
# firmware's shows in every layout.
_ROUNDS = """
import gc, json, micropython, sys
import _vboard, machine, bluetooth, time, board
_pad = bytearray(PAD)
CMDS = (b"\\x0a", b"\\x04\\x8c\\x00", b"\\x08\\x00\\x00", b"\\x0b", b"\\x06", b"\\x07",
        b"\\x05", b"\\x01\\x01", b"\\x02Anna", b"\\x03\\xc8\\x00")
def heap():
    gc.collect()
    micropython.qstr_info()
    return gc.mem_alloc()
def boot():
    import app
    return app.build()
def commands(dev, rnd):
    for c in CMDS:
        dev._command(c, True)
    dev.ble._bonds.set(2, b"peer-key", b"peer-value-%d" % rnd)
    dev.ble.flush()
base = heap()
dev = boot()
out = {"boot": heap() - base, "boot_modules": sorted(sys.modules), "rounds": []}
for rnd in range(3):
    commands(dev, rnd)
    out["rounds"].append(heap() - base)
out["modules"] = sorted(sys.modules)
out["dirty"] = dev.ble._bonds.dirty
out["cfg"] = dev.cfg
print("@@" + json.dumps(out))
"""


_PADS = (0, 96, 224)


def _run(tmp_path: Path, pad: int) -> dict:
    trace = tmp_path / "trace.bin"
    trace.write_bytes(struct.pack("<HHH", 2000, 2500, 1800) * 500)
    flash = tmp_path / "flash"
    flash.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBOARD_")}
    env.update(MICROPYPATH=os.pathsep.join([str(SHIMS), str(FIRMWARE)]),
               VBOARD_TRACE=str(trace), VBOARD_RATE="100")
    proc = subprocess.run([micropython_binary(), "-X", "heapsize=4M", "-c",
                           _ROUNDS.replace("PAD", str(pad))],
                          cwd=flash, env=env, capture_output=True, timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out[-2000:] + proc.stderr.decode()[-2000:]
    line = [x for x in out.splitlines() if x.startswith("@@")][-1]
    names = [int(x.rsplit("n_total_bytes=", 1)[1]) for x in out.splitlines()
             if x.startswith("qstr pool:")]
    assert len(names) == 5, out[-2000:]  # base, boot and three rounds
    return {**json.loads(line[2:]), "flash": flash, "names": [n - names[0] for n in names[1:]]}


def test_boot_and_commands_leave_the_lazy_modules_out_and_the_heap_comes_back(tmp_path):
    growth = []  # per layout: (first round - boot, largest change between rounds)
    for pad in _PADS:
        where = tmp_path / str(pad)
        where.mkdir()
        r = _run(where, pad)
        assert not LAZY & set(r["boot_modules"]), r["boot_modules"]
        assert not LAZY & set(r["modules"]), r["modules"]
        # the commands ran: the settings they changed are on flash, and so is the bond
        saved = json.loads((r["flash"] / "insole.json").read_text())
        assert saved["side"] == "R" and saved["name"] == "Anna" and saved["stride_cm"] == 140
        assert r["cfg"]["rate_hz"] == 200 and saved["rate_hz"] == 200
        bonds = (r["flash"] / "insole_bonds.json").read_text()
        assert not r["dirty"] and b"peer-value-2".hex() in bonds
        # the heap without the interned names' pools
        heaps = [r["boot"], *r["rounds"]]
        boot, first, second, third = (h - n for h, n in zip(heaps, r["names"], strict=True))
        growth.append((first - boot, max(abs(second - first), abs(third - second))))
    first_round, between = (sorted(g)[1] for g in zip(*growth, strict=True))
    # the first round keeps the raw stream's packet queue (16 x 20 bytes) and its
    # state; later rounds give everything back
    assert first_round < 3072, growth
    assert between <= 256, growth


def test_a_command_without_memory_for_its_code_is_answered_and_the_insole_runs_on(monkeypatch):
    dev, ble, _ = F.build([2000, 2500, 1800] * 400)
    ble.connect()
    ble.pair()
    ble.subscribe(dev.ble.h_control)
    monkeypatch.delitem(sys.modules, "control", raising=False)  # as on the device
    with no_memory_for("control"):
        assert ble.write(dev.ble.h_control, HP.cmd_get_config()) == 0
        dev.service()
    (reply,) = ble.take(dev.ble.h_control)
    assert HP.decode_reply(reply).error == HP.ERR_NO_MEMORY
    assert "control" not in sys.modules
    dev.run(100)
    assert ble.write(dev.ble.h_control, HP.cmd_get_config()) == 0
    dev.service()
    (reply,) = ble.take(dev.ble.h_control)
    assert HP.decode_reply(reply).ok
