"""Copy a board build onto a board with mpremote (what `make flash` runs).

Only files whose SHA-256 differs from the board's copy are written, so a second flash
copies nothing and says so. Files a previous flash installed that the new build no
longer has are removed. The firmware's settings (insole.json: side, name, sample
rate, stride length) and BLE bonds are never written or removed, nor is any file the flash
did not install. Afterwards the board is reset and the flash waits for the firmware's
boot banner line.

Run `insole build --board BOARD` (or `make build`) first. On a board with nothing but
MicroPython on it, install MicroPython first (README: "Install MicroPython").

    insole flash --port /dev/ttyUSB0 --board esp32_devkitc
    insole flash --port /dev/ttyACM0 --board esp32c3 --reset soft
    insole flash --port /dev/ttyUSB0 --dry-run
"""

from __future__ import annotations

import argparse

HELP = "copy the changed files of a build to a board over USB serial (mpremote)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from host_tools.board import flash

    flash.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from host_tools.board import flash
    from host_tools.board.build import BuildError
    from host_tools.cli import UsageError

    try:
        return flash.run(args)
    except (flash.FlashError, BuildError) as exc:
        raise UsageError(str(exc)) from None
