"""Build the files for a board under build/BOARD/ (what `make build` runs).

Firmware modules are compiled to .mpy with mpy-cross for the board's CPU
(-march=xtensawin for the ESP32 and ESP32-S3, rv32imc for the ESP32-C3); boot.py and
main.py stay source and boards/BOARD.py becomes board.py. build/BOARD/manifest.json
records every file's SHA-256, the MicroPython release the .mpy files target and the
firmware's own state files, which `insole flash` never touches.

    insole build --board esp32s3
"""

from __future__ import annotations

import argparse

HELP = "compile the firmware for a board into build/BOARD/ (mpy-cross, manifest)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from host_tools.board import build

    build.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from host_tools.board import build
    from host_tools.cli import UsageError
    from host_tools.common import safeio

    if args.out is not None:
        safeio.output_dir(args.out, "--out")
    try:
        return build.run(args)
    except build.BuildError as exc:
        raise UsageError(str(exc)) from None
