"""Show or change an insole's settings over BLE (the Control characteristic).

With no setting given it prints what the insole holds (GET_CONFIG):

  Insole-L-1A2B: side=left rate=100 Hz stride=140 cm mains=50 Hz name=Insole

Each setting given is sent as its own command, in the order below, and the insole
saves it to flash before it answers (docs/PROTOCOL.md, "Control"): a command it
refuses stops the rest, with one line saying which and why, and exit status 2; the
ones before it stay set.

  --side left|right   which foot (the advertised name follows from the next advertising)
  --name NAME         the advertised name's prefix: 1-12 letters, digits, space, _ or .
  --rate HZ           sample rate, 50..400, one the current mode holds (docs/PROTOCOL.md,
                      "Control": exercise modes hold less, and two of them not every
                      rate up to 72 Hz)
  --stride CM         stride length for the RSC speed and distance, 30..300
  --mains 50|60       the local mains frequency, whose hum the detector cancels: 60 in
                      most of the Americas, South Korea, Taiwan and western Japan
                      (docs/HARDWARE.md, "Sample rate and mains pickup")

The link is the one `insole pair` made (bleak by default, --transport for a bumble
transport with its key store, --vboard for the firmware on the virtual board; with
--flash DIR the virtual insole's settings stay in DIR's insole.json, but for its side
and sample rate, which each start sets from the virtual insole's side and trace).

Examples:
  insole config --device Insole-L-1A2B --mains 60
  insole config --transport usb:0 --side right --stride 150
  insole config --vboard --flash out/board --mains 60 --rate 120
"""

from __future__ import annotations

import argparse

from host_tools.common import argcheck

HELP = "show or change an insole's side, name, rate, stride and mains frequency over BLE"


def add_arguments(parser) -> None:
    from host_tools.cli import pair

    pair.add_arguments(parser)
    parser.add_argument("--side", choices=("left", "right"), help="which foot it is under")
    parser.add_argument("--name", help="advertised name prefix (1-12 characters)")
    parser.add_argument("--rate", type=argcheck.int_range(50, 400, "--rate"), metavar="HZ",
                        help="sample rate, 50..400 Hz")
    parser.add_argument("--stride", type=argcheck.int_range(30, 300, "--stride"),
                        metavar="CM", help="stride length, 30..300 cm")
    parser.add_argument("--mains", type=int, choices=(50, 60), metavar="50|60",
                        help="local mains frequency, Hz")


def commands(args) -> list[tuple[str, bytes]]:
    """(what, command) for each setting given, in a fixed order; checked here, so a
    bad value fails before the radio is touched."""
    from host_tools.ble import protocol as P
    from host_tools.cli import UsageError

    out = []
    try:
        if args.side:
            out.append((f"side {args.side}", P.cmd_set_side(args.side)))
        if args.name is not None:
            out.append((f"name {args.name}", P.cmd_set_name(args.name)))
        if args.rate is not None:
            out.append((f"rate {args.rate} Hz", P.cmd_set_rate(args.rate)))
        if args.stride is not None:
            out.append((f"stride {args.stride} cm", P.cmd_set_stride(args.stride)))
        if args.mains is not None:
            out.append((f"mains {args.mains} Hz", P.cmd_set_mains(args.mains)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out


def describe(data: dict) -> str:
    side = {"L": "left", "R": "right"}.get(data.get("side", ""), "?")
    return (f"side={side} rate={data.get('rate_hz')} Hz stride={data.get('stride_cm')} cm "
            f"mains={data.get('mains_hz')} Hz name={data.get('name')}")


def _configure(todo: list[tuple[str, bytes]], done: list[str]):
    async def work(link) -> str:
        import asyncio
        import contextlib

        from host_tools.ble import protocol as P
        from host_tools.ble.capture import LinkError
        from host_tools.ble.control_link import NoReply, command
        from host_tools.cli.pair import Failed

        replies: asyncio.Queue = asyncio.Queue()
        try:
            await link.connect()
            await link.secure()
            await link.subscribe(P.UUID_CONTROL, lambda d, _t: replies.put_nowait(bytes(d)))
            for what, data in todo:
                reply = await command(link, replies, data)
                if not reply.ok:
                    kept = f" ({', '.join(done)} set)" if done else ""
                    raise Failed(f"the insole refused {what}: {reply.message}{kept}")
                done.append(what)
            reply = await command(link, replies, P.cmd_get_config())
            if not reply.ok or "name" not in reply.data:
                raise Failed(f"the insole did not give its settings ({reply.message})")
        except (LinkError, NoReply) as exc:
            kept = f" ({', '.join(done)} set)" if done else ""
            raise Failed(f"{exc}{kept}") from None
        except P.ProtocolError as exc:
            raise Failed(f"the insole's reply is unreadable: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                await link.disconnect()
        return f"{link.name or link.address}: {describe(reply.data)}"

    return work


def run(args: argparse.Namespace) -> int:
    from host_tools.cli import pair

    todo = commands(args)
    done: list[str] = []
    shown, _where = pair.on_insole(args, _configure(todo, done))
    for what in done:
        print(f"set {what}")
    print(shown)
    return 0
