"""Bond this computer with an insole, using the insole's 6-digit passkey.

The insole shares its step data, Status and Control only with a central that bonded
with its passkey (docs/SECURITY.md). The passkey is made at the insole's first boot;
`insole flash` prints it, the insole prints it on its serial console, and it belongs
on a label on the insole. New bonds are taken for 2 minutes after the insole is
switched on, or after the pairing gesture: stand on the ball of the foot and tap the
heel on the floor 6 times quickly, then hold the heel up for a second.

Where the insole is:
  (default)        the computer's Bluetooth adapter, through bleak. The operating
                   system does the pairing: enter the passkey when it asks (Linux:
                   keep `bluetoothctl` with `agent on` running). The system keeps the
                   bond for `insole capture` and `insole train`.
  --transport T    a bumble transport, e.g. usb:0: this command types the passkey and
                   keeps the bond in a key store (--keystore, default
                   ~/.local/share/insole/bumble_keys.json or $INSOLE_KEYS) that capture
                   and train with the same --transport use.
  --vboard TRACE   the firmware on the virtual board (micropython binary) replaying
                   TRACE, on a virtual radio in this process; --flash DIR keeps its
                   flash (config with the passkey, bonds). Without --passkey the
                   virtual insole's own is used, as its owner would read it from the
                   label.

Without --passkey (bleak: only for the message; bumble: needed) it is asked for on a
terminal. A wrong passkey, a closed pairing window or a central that cannot enter a
passkey ends with one line saying so, and exit status 2.

Examples:
  insole pair --transport usb:0 --device Insole-L-1A2B --passkey 123456
  insole pair --vboard host_tools/data/walk_left.csv --flash out/board
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from host_tools.common import argcheck

HELP = "bond with an insole using its 6-digit passkey (bleak, bumble or the virtual insole)"
DEFAULT_TRACE = Path(__file__).resolve().parents[1] / "data" / "walk_left.csv"


def passkey_arg(text: str) -> int:
    """argparse type: six decimal digits (leading zeros may be left out)."""
    t = text.strip()
    if not t.isdigit() or len(t) > 6:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a passkey: 6 digits, 000000..999999")
    return int(t)


def add_arguments(parser) -> None:
    parser.add_argument("--device", metavar="NAME|ADDRESS", help="this insole (default: the "
                        "first one found)")
    parser.add_argument("--passkey", type=passkey_arg, metavar="N",
                        help="the insole's 6-digit passkey")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--transport", metavar="T",
                       help="bumble transport instead of bleak, e.g. usb:0")
    where.add_argument("--vboard", metavar="TRACE", nargs="?", const=str(DEFAULT_TRACE),
                       help="the virtual insole replaying TRACE (default: the bundled "
                       "left-foot walk)")
    parser.add_argument("--flash", metavar="DIR", help="--vboard: the board's flash directory")
    parser.add_argument("--keystore", metavar="FILE",
                        help="--transport: where bonds are kept (default "
                        "~/.local/share/insole/bumble_keys.json)")
    parser.add_argument("--scan-timeout", type=argcheck.seconds, default=10.0, metavar="S",
                        help="how long to look for the insole (default 10)")


def _ask_passkey() -> int | None:
    if not sys.stdin.isatty():
        return None
    text = input("passkey of the insole (6 digits, on its label): ")
    try:
        return passkey_arg(text)
    except argparse.ArgumentTypeError as exc:
        from host_tools.cli import UsageError

        raise UsageError(str(exc)) from None


class Failed(Exception):
    """What went wrong on the way to the insole, in words for the user."""


async def _bond(link) -> str:
    """Connect, secure, prove the bond by reading Status; what was bonded."""
    from host_tools.ble import protocol
    from host_tools.ble.capture import LinkError

    try:
        await link.connect()
        await link.secure()
        status = protocol.decode_status(await link.read(protocol.UUID_STATUS))
    except LinkError as exc:
        raise Failed(str(exc)) from None
    except protocol.ProtocolError as exc:
        raise Failed(f"the insole's Status is unreadable: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            await link.disconnect()
    side = {"L": "left", "R": "right"}[status.side]
    return f"{link.name or link.address} ({link.address}, {side})"


def check_link_arguments(args) -> None:
    """The --flash / --keystore / --vboard / --device combinations that make sense."""
    from host_tools.cli import UsageError

    if args.flash and not args.vboard:
        raise UsageError("--flash goes with --vboard")
    if args.keystore and not args.transport:
        raise UsageError("--keystore goes with --transport (bleak's bonds are the system's)")
    if args.vboard and args.device:
        raise UsageError("--vboard runs its own insole: leave out --device")


def on_insole(args, work):
    """Run ``await work(link)`` on the insole that args name (bleak, a bumble transport
    or the virtual insole); returns (its result, where the bond is kept). Failed
    becomes a UsageError: one line, exit status 2."""
    import logging

    from host_tools.cli import UsageError

    logging.getLogger("bumble").setLevel(logging.ERROR)  # its warnings are not for users
    check_link_arguments(args)
    try:
        if args.vboard:
            return asyncio.run(_on_vboard(args, work))
        if args.transport:
            passkey = args.passkey if args.passkey is not None else _ask_passkey()
            return asyncio.run(_on_bumble(args, passkey, work))
        return asyncio.run(_on_bleak(args, work))
    except Failed as exc:
        raise UsageError(str(exc)) from None


def run(args) -> int:
    what, where = on_insole(args, _bond)
    print(f"bonded with {what}; {where}")
    return 0


async def _on_bumble(args, passkey: int | None, work):
    from host_tools.ble.blelinks import BumbleLink, bumble_central, keystore_path

    store = Path(args.keystore) if args.keystore else keystore_path()
    try:
        device, transport = await bumble_central(args.transport, keystore=store)
    except Exception as exc:  # bumble raises many kinds for a missing/busy dongle
        raise Failed(f"cannot open bumble transport {args.transport!r}: {exc}") from None
    try:
        link = BumbleLink(device, target=args.device, transport=args.transport,
                          scan_timeout=args.scan_timeout, passkey=passkey)
        what = await work(link)
    finally:
        with contextlib.suppress(Exception):
            await transport.close()
    return what, f"keys in {store}"


async def _on_bleak(args, work):
    from host_tools.ble.blelinks import BleakLink

    if args.passkey is not None:
        print(f"enter the passkey {args.passkey:06d} when the system asks for it")
    else:
        print("enter the insole's passkey when the system asks for it")
    link = BleakLink(want=args.device, scan_timeout=args.scan_timeout, passkey=args.passkey)
    return await work(link), "the system keeps the bond"


async def _on_vboard(args, work):
    from host_tools.ble.blelinks import BumbleLink
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio
    from host_tools.vboard.wire import VBoardError

    trace = Path(args.vboard)
    if not trace.is_file():
        raise Failed(f"{trace}: no such trace file")
    radio = VirtualRadio()
    insole = VirtualInsole(str(trace), radio=radio, speed=1.0, flash_dir=args.flash)
    try:
        try:
            await insole.start()
        except VBoardError as exc:
            raise Failed(str(exc)) from None
        passkey = args.passkey if args.passkey is not None else insole.passkey
        link = BumbleLink(await radio.central(), transport="virtual",
                          scan_timeout=args.scan_timeout, passkey=passkey)
        what = await work(link)
        # the firmware's main loop writes the bond file soon after the keys came
        with contextlib.suppress(VBoardError):
            await insole.wait_stored(timeout=10)
        await asyncio.sleep(0.5)
    finally:
        await insole.stop()
        await radio.close()
    where = f"the bond is on its flash {args.flash}" if args.flash else "flash not kept"
    return what, where
