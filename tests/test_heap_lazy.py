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
# Control command and a bond file write, the heap after each round.
_ROUNDS = """
import gc, json, sys
import _vboard, machine, bluetooth, time, board
def heap():
    gc.collect()
    return gc.mem_alloc()
base = heap()
import app
dev = app.build()
out = {"boot": heap() - base, "boot_modules": sorted(sys.modules), "rounds": []}
CMDS = (b"\\x0a", b"\\x04\\x8c\\x00", b"\\x08\\x00\\x00", b"\\x0b", b"\\x06", b"\\x07",
        b"\\x05", b"\\x01\\x01", b"\\x02Anna", b"\\x03\\xc8\\x00")
for rnd in range(3):
    for c in CMDS:
        dev._command(c, True)
    dev.ble._bonds.set(2, b"peer-key", b"peer-value-%d" % rnd)
    dev.ble.flush()
    out["rounds"].append(heap() - base)
out["modules"] = sorted(sys.modules)
out["dirty"] = dev.ble._bonds.dirty
out["cfg"] = dev.cfg
print("@@" + json.dumps(out))
"""


def _run(tmp_path: Path) -> dict:
    trace = tmp_path / "trace.bin"
    trace.write_bytes(struct.pack("<HHH", 2000, 2500, 1800) * 500)
    flash = tmp_path / "flash"
    flash.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBOARD_")}
    env.update(MICROPYPATH=os.pathsep.join([str(SHIMS), str(FIRMWARE)]),
               VBOARD_TRACE=str(trace), VBOARD_RATE="100")
    proc = subprocess.run([micropython_binary(), "-X", "heapsize=4M", "-c", _ROUNDS],
                          cwd=flash, env=env, capture_output=True, timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out[-2000:] + proc.stderr.decode()[-2000:]
    line = [x for x in out.splitlines() if x.startswith("@@")][-1]
    return {**json.loads(line[2:]), "flash": flash}


def test_boot_and_commands_leave_the_lazy_modules_out_and_the_heap_comes_back(tmp_path):
    r = _run(tmp_path)
    assert not LAZY & set(r["boot_modules"]), r["boot_modules"]
    assert not LAZY & set(r["modules"]), r["modules"]
    # the commands ran: the settings they changed are on flash, and so is the bond
    saved = json.loads((r["flash"] / "insole.json").read_text())
    assert saved["side"] == "R" and saved["name"] == "Anna" and saved["stride_cm"] == 140
    assert r["cfg"]["rate_hz"] == 200 and saved["rate_hz"] == 200
    bonds = (r["flash"] / "insole_bonds.json").read_text()
    assert not r["dirty"] and b"peer-value-2".hex() in bonds
    first, second, third = r["rounds"]
    # the first round keeps the raw stream's packet queue (16 x 20 bytes) and the
    # names the lazy modules intern; later rounds give everything back
    assert first - r["boot"] < 4096, r
    assert abs(second - first) <= 256 and abs(third - second) <= 256, r


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
