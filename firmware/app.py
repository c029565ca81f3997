# The hardware edge: the only firmware module that imports machine, bluetooth and
# board. It builds the device from the board's parts and runs it.
#
# End of input (virtual board): run() stops when board.finished() (optional)
# returns true or an ADC read raises EOFError; then, if the board defines
# LINGER_MS, BLE keeps being served that long without sampling.
import time

import bluetooth
import board
import machine
from ble_insole import BondStore, InsoleBLE
from config import ConfigStore
from device import Insole
from log import Log

CONFIG_PATH = "insole.json"
BONDS_PATH = "insole_bonds.json"


def build(log=None):
    log = log or Log()
    store = ConfigStore(getattr(board, "CONFIG_PATH", CONFIG_PATH), log)
    cfg = store.load()
    uid = machine.unique_id()
    suffix = "%02X%02X" % (uid[-2], uid[-1])
    bonds = BondStore(getattr(board, "BONDS_PATH", BONDS_PATH))
    ble = InsoleBLE(bluetooth.BLE(), bluetooth.UUID, log, board.NAME, bonds)
    return Insole(board.fsr_adcs(), ble, store, cfg, log, time, suffix, board.NAME,
                  battery_mv=board.battery_mv, led=board.status_led(),
                  finished=getattr(board, "finished", None))


def main(max_samples=None):
    """Start the insole; returns the number of samples taken when input ends."""
    dev = build()
    print(dev.banner())
    if board.WDT_TIMEOUT_MS > 0:
        dev.wdt = machine.WDT(timeout=board.WDT_TIMEOUT_MS)
    n = dev.run(max_samples)
    linger = getattr(board, "LINGER_MS", 0)
    if linger:
        dev.idle(linger)
    return n
