# The hardware edge: the only firmware module that imports machine, bluetooth and
# board. It builds the device from the board's parts and runs it.
#
# Boot order: the watchdog comes first, so a boot that hangs (on an ESP32
# active(True) may wait 2 s for NimBLE and then raise) ends in a reset, not in a
# dead insole; it is fed after each step, and each step takes well under its
# timeout. The bond store is loaded before BLE starts, because active(True) asks
# for the device's IRK and the bonded peers' IRKs right away (see ble_insole.py).
#
# End of input (virtual board): run() stops when board.finished() (optional)
# returns true or an ADC read raises EOFError; then, if the board defines
# LINGER_MS, BLE keeps being served that long without sampling.
import time

import bluetooth
import board
import machine
from ble_insole import InsoleBLE
from bonds import Bonds
from config import ConfigStore
from device import Insole
from log import Log

CONFIG_PATH = "insole.json"
BONDS_PATH = "insole_bonds.json"


def _feed(wdt):
    if wdt is not None:
        wdt.feed()


def build(log=None):
    log = log or Log()
    wdt = None
    if board.WDT_TIMEOUT_MS > 0:
        wdt = machine.WDT(timeout=board.WDT_TIMEOUT_MS)
    store = ConfigStore(getattr(board, "CONFIG_PATH", CONFIG_PATH), log)
    cfg = store.load()
    _feed(wdt)
    uid = machine.unique_id()
    suffix = "%02X%02X" % (uid[-2], uid[-1])
    bonds = Bonds(getattr(board, "BONDS_PATH", BONDS_PATH), log)
    _feed(wdt)
    ble = InsoleBLE(bluetooth.BLE(), bluetooth.UUID, log, board.NAME, bonds)
    _feed(wdt)
    return Insole(board.fsr_adcs(), ble, store, cfg, log, time, suffix, board.NAME,
                  battery_mv=board.battery_mv, led=board.status_led(), wdt=wdt,
                  finished=getattr(board, "finished", None))


def main(max_samples=None):
    """Start the insole; returns the number of samples taken when input ends."""
    dev = build()
    print(dev.banner())
    n = dev.run(max_samples)
    linger = getattr(board, "LINGER_MS", 0)
    if linger:
        dev.idle(linger)
    return n
