# The hardware edge: the only firmware module that imports machine, bluetooth and
# board. It builds the device from the board's parts and runs it.
#
# Boot order: the watchdog comes first, so a boot that hangs (on an ESP32
# active(True) may wait 2 s for NimBLE and then raise) ends in a reset, not in a
# dead insole; it is fed after each step, and each step takes well under its
# timeout. The bond store is loaded before BLE starts, because active(True) asks
# for the device's IRK and the bonded peers' IRKs right away (see ble_insole.py).
# The passkey is made at first boot (config.py) and printed on the serial console
# after the banner; the pairing window opens with BLE (docs/SECURITY.md).
# The config file's code (config.py) runs at boot and is dropped after (lazy.py);
# a setting changed over BLE loads it again for the write (Settings).
# The step journal (journal.py) opens before the device is made: sequence and step
# numbers carry on from it. Its files sit next to the config file unless the board
# names a JOURNAL_PATH prefix (docs/HARDWARE.md, "Step journal").
#
# End of input (virtual board): run() stops when board.finished() (optional)
# returns true or an ADC read raises EOFError; then, if the board defines
# LINGER_MS, BLE keeps being served that long without sampling.
import time

import bluetooth
import board
import lazy
import machine
from ble_insole import InsoleBLE
from bonds import Bonds
from device import Insole
from journal import Journal
from log import Log
from pairing import PairingWindow

CONFIG_PATH = "insole.json"
BONDS_PATH = "insole_bonds.json"


def journal_path(config_path):
    """The journal's path prefix: in the config file's directory (files
    journal.DDDDD.PPP)."""
    return config_path[:config_path.rfind("/") + 1] + "journal"


class Settings:
    """The device's config store (its save()): config.py is loaded for each write
    and dropped after, so it takes no RAM while the insole runs."""

    def __init__(self, path, log):
        self.path = path
        self._log = log

    def save(self, cfg):
        return lazy.run("config", "save_config", self.path, self._log, cfg)


def _feed(wdt):
    if wdt is not None:
        wdt.feed()


def build(log=None):
    log = log or Log()
    wdt = None
    if board.WDT_TIMEOUT_MS > 0:
        wdt = machine.WDT(timeout=board.WDT_TIMEOUT_MS)
    config_path = getattr(board, "CONFIG_PATH", CONFIG_PATH)
    cfg = lazy.run("config", "boot_config", config_path, log)
    _feed(wdt)
    uid = machine.unique_id()
    suffix = "%02X%02X" % (uid[-2], uid[-1])
    bonds = Bonds(getattr(board, "BONDS_PATH", BONDS_PATH), log)
    _feed(wdt)
    ble = InsoleBLE(bluetooth.BLE(), bluetooth.UUID, log, board.NAME, bonds,
                    passkey=cfg["passkey"], window=PairingWindow(time, log))
    _feed(wdt)
    # its boot line follows the banner (Insole.run logs it)
    try:
        journal = Journal(getattr(board, "JOURNAL_PATH", journal_path(config_path)), log,
                          announce=False)
    except MemoryError:  # no room for its boot code: the ring keeps the events
        journal = None
        log("jrn", "no memory to open, not written")
    _feed(wdt)
    return Insole(board.fsr_adcs(), ble, Settings(config_path, log), cfg, log, time, suffix,
                  board.NAME, battery_mv=board.battery_mv, led=board.status_led(), wdt=wdt,
                  finished=getattr(board, "finished", None), journal=journal)


def passkey_line(passkey):
    """The serial line that tells the passkey (host_tools.board.flash reads it)."""
    return "passkey %06d (enter it when a phone or computer pairs)" % passkey


def main(max_samples=None):
    """Start the insole; returns the number of samples taken when input ends."""
    dev = build()
    print(dev.banner())
    print(passkey_line(dev.cfg["passkey"]))
    dev.ble.open_window("power-on")  # new bonds for two minutes from now
    n = dev.run(max_samples)
    linger = getattr(board, "LINGER_MS", 0)
    if linger:
        dev.idle(linger)
    return n
