"""The firmware's boot order on the virtual board (standalone micropython, no host):
the watchdog is armed before BLE starts (active(True) may wait 2 s for NimBLE on an
ESP32 and then raise), the IRQ handler is registered before active(True) and the bond
file is loaded by then, so the IRK questions active(True) asks are answered from
flash (modbluetooth_nimble.c load_irk(); MicroPython's ble_bonding_peripheral.py)."""

from __future__ import annotations

import json
import os
import subprocess

from host_tools.gait.engine import FIRMWARE, micropython_binary
from host_tools.vboard.process import SHIMS

BOOT = """
import bluetooth
from _vboard import vboard
order = []
ble = bluetooth.BLE()
real_active, real_irq = ble.active, ble.irq
def active(*a):
    order.append('active wdt=%d' % vboard.wdt_timeout)
    return real_active(*a)
def irq(handler):
    def seen(ev, data):
        got = handler(ev, data)
        if ev in (29, 30):
            order.append('%d %d %s' % (ev, data[0], 'found' if got else 'none'))
        return got
    order.append('irq')
    return real_irq(seen)
ble.active, ble.irq = active, irq
import app
dev = app.build()
print('--- boot order')
for line in order:
    print(line)
"""


def _boot(flash) -> list[str]:
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(SHIMS), str(FIRMWARE), ".frozen"]))
    for var in ("VBOARD_SOCK", "VBOARD_TRACE", "VBOARD_LIMIT"):
        env.pop(var, None)
    proc = subprocess.run([micropython_binary(), "-c", BOOT], capture_output=True, env=env,
                          cwd=flash, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode().splitlines()
    return out[out.index("--- boot order") + 1:]


def test_watchdog_handler_and_bonds_come_before_ble_starts(tmp_path):
    irk = "0123456789abcdef0123456789abcdef"
    (tmp_path / "insole_bonds.json").write_text(json.dumps([[10, b"irk".hex(), irk]]))
    order = _boot(tmp_path)
    assert order[:2] == ["irq", "active wdt=8000"]  # the board's WDT_TIMEOUT_MS
    # active(True): the peer IRKs (none), the own IRK found in the bond file, so no
    # new one is made; then the peer IRKs again
    assert order[2:5] == ["29 2 none", "29 10 found", "29 2 none"]
    assert not [line for line in order if line.startswith("30 ")]


def test_a_first_boot_stores_a_new_irk_through_the_handler(tmp_path):
    order = _boot(tmp_path)
    assert order[:6] == ["irq", "active wdt=8000", "29 2 none", "29 10 none", "30 10 found",
                         "29 2 none"]
