"""List nearby insoles: name, side, address, signal strength (RSSI) and firmware version.

Listens for advertisements (default 5 s) through the computer's Bluetooth adapter (bleak),
or with --transport through a bumble transport such as a USB dongle (usb:0). An insole
advertises as Insole-L-XXXX or Insole-R-XXXX (left/right, XXXX from its chip id) with the
Running Speed and Cadence service. To show the firmware version, scan connects to each
insole briefly and reads Device Information > Firmware Revision; --no-connect skips that.

On Linux, BlueZ caches an insole's GATT table: after flashing firmware with changed
services, run `bluetoothctl remove ADDRESS` once.
"""

from __future__ import annotations

import asyncio

from host_tools.common import argcheck

HELP = "list nearby insoles (name, side, address, RSSI, firmware version)"


def add_arguments(parser) -> None:
    parser.add_argument("--timeout", type=argcheck.seconds, default=5.0, metavar="S",
                        help="seconds to listen (default 5)")
    parser.add_argument("--transport", metavar="T", help="bumble transport, e.g. usb:0")
    parser.add_argument("--no-connect", action="store_true",
                        help="do not connect to read the firmware version")


def format_table(found) -> str:
    head = ("NAME", "SIDE", "ADDRESS", "RSSI", "FIRMWARE")
    rows = [head] + [(f.name, f.side, f.address, "" if f.rssi is None else str(f.rssi),
                      f.firmware or "-") for f in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def run(args) -> int:
    import logging

    from host_tools.cli import UsageError

    logging.getLogger("bumble").setLevel(logging.ERROR)  # its warnings are not for users

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    try:
        found = asyncio.run(_scan(args))
    except _Fatal as exc:
        raise UsageError(str(exc)) from None
    if not found:
        print(f"no insole found in {args.timeout:g} s (is it powered and advertising?)")
        return 1
    print(format_table(found))
    return 0


class _Fatal(Exception):
    pass


async def _scan(args):
    from host_tools.ble import blelinks

    if args.transport:
        try:
            device, transport = await blelinks.bumble_central(args.transport)
        except Exception as exc:  # bumble raises many kinds for a missing/busy dongle
            raise _Fatal(f"cannot open bumble transport {args.transport!r}: {exc}") from None
        try:
            return await scan_bumble(device, args.timeout, not args.no_connect)
        finally:
            await transport.close()
    try:
        found = await blelinks.bleak_scan(args.timeout)
    except Exception as exc:  # no adapter, adapter off, permissions
        raise _Fatal(f"Bluetooth scan failed: {blelinks.bleak_problem(exc)}") from None
    if not args.no_connect:
        for f in found:
            f.firmware = await blelinks.read_firmware(blelinks.BleakLink(device=f.handle))
    return found


async def scan_bumble(device, timeout: float, connect: bool = True):
    """Scan on a powered-on bumble Device; optionally read each insole's firmware version."""
    from host_tools.ble import blelinks

    found = await blelinks.bumble_scan(device, timeout)
    if connect:
        for f in found:
            link = blelinks.BumbleLink(device, target=f.address)
            link.peer_address, link.name, link.address = f.handle, f.name, f.address
            f.firmware = await blelinks.read_firmware(link)
    return found
