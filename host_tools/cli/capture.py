"""Capture step events from one or two insoles over BLE into DIR.

Where the insoles are:
  (default)           the computer's Bluetooth adapter, through bleak
  --transport T       a bumble transport, e.g. usb:0 for a USB Bluetooth dongle
  --sim L.csv[,R.csv] one or two virtual insoles (the real firmware running in the
                      micropython binary) replaying recorded traces over a virtual radio;
                      the first trace is the left foot, the second the right

Which insoles: --device NAME|ADDRESS picks one (e.g. Insole-L-1A2B); --both takes one left
and one right insole; otherwise the first insole found.

For each insole, DIR/<side>.csv gets one row per step as it arrives (flushed, so a crash
loses at most the last row): the events columns of `insole detect` plus host_time (Unix
seconds) and side. DIR/<side>.json holds firmware version, side, sample rate, start time
and device address, and at the end what was recovered or lost.

--outage AT:SECONDS (with --sim; repeatable) takes the virtual radio away at trace
second AT for SECONDS of trace time, as walking out of range does: the capture is
disconnected and cannot reconnect until it ends, while the insole walks on and keeps
every step in its flash journal; then capture reconnects and backfills as after a real
loss. `--outage 120:1800` in a 40-minute walk logs exactly what `insole detect` finds.

The insole shares its steps only with a central bonded with its passkey: with bleak the
system's bond is used (`insole pair` makes one); with --transport the bond in the bumble
key store, or a new one made with --passkey N; --sim pairs with the virtual insoles'
own passkeys (or --passkey, to see a wrong one refused). A wrong passkey or a closed
pairing window stops the capture with one line saying so.

A progress line per insole shows steps, cadence, last stance time and the link state.
When the link drops, capture reconnects with back-off and asks the insole (over the
Control characteristic) to replay what it missed; steps it cannot recover are
listed in the summary and in the session file. Ctrl-C, --duration, or the end of the
simulated traces closes the files cleanly and prints a summary.

Examples:
  insole capture --sim host_tools/data/walk_left.csv,host_tools/data/walk_right.csv --out out/sim
  insole capture --sim walk.csv --speed 0 --outage 120:1800 --out out/outage
  insole capture --both --out out/walk1
  insole capture --device Insole-L-1A2B --transport usb:0 --out out/walk2
Then: insole report DIR --html
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

from host_tools.cli.pair import passkey_arg
from host_tools.common import argcheck

HELP = "capture step events from insoles (BLE, USB dongle or virtual) into CSV logs"


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the logs")
    parser.add_argument("--device", metavar="NAME|ADDRESS", help="capture this insole only")
    parser.add_argument("--both", action="store_true", help="capture a left and a right insole")
    parser.add_argument("--transport", metavar="T",
                        help="bumble transport instead of bleak, e.g. usb:0")
    parser.add_argument("--sim", metavar="TRACE[,TRACE]",
                        help="run virtual insoles on these traces (left[,right])")
    parser.add_argument("--speed", type=argcheck.speed, default=20.0, metavar="X",
                        help="--sim replay speed, trace seconds per second, 0..1000; 0 = "
                        "as fast as the firmware runs (default 20)")
    parser.add_argument("--outage", type=outage, action="append", default=[],
                        metavar="AT:SECONDS",
                        help="--sim: no radio link from trace second AT for SECONDS "
                        "(repeatable)")
    parser.add_argument("--duration", type=argcheck.seconds, metavar="S",
                        help="stop after S seconds")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing logs in DIR")
    parser.add_argument("--scan-timeout", type=argcheck.seconds, default=10.0, metavar="S",
                        help="how long to look for an insole (default 10)")
    parser.add_argument("--passkey", type=passkey_arg, metavar="N",
                        help="the insole's 6-digit passkey, to bond when there is no bond yet")


def outage(text: str) -> tuple[float, float]:
    """AT:SECONDS, both trace seconds (AT may be 0)."""
    import argparse

    at, sep, length = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not AT:SECONDS (e.g. 120:1800)")
    return argcheck.seconds_or_zero(at), argcheck.seconds(length)


def _check(args) -> list[Path]:
    from host_tools.ble.steplog import SIDES, log_paths
    from host_tools.cli import UsageError

    if args.sim and (args.transport or args.device or args.both):
        raise UsageError("--sim runs its own virtual insoles and radio; "
                         "leave out --transport, --device and --both")
    if args.outage and not args.sim:
        raise UsageError("--outage takes the virtual radio away: it needs --sim")
    if args.device and args.both:
        raise UsageError("--device picks one insole; --both picks two: use one of them")
    traces: list[Path] = []
    if args.sim:
        traces = [Path(t) for t in args.sim.split(",") if t]
        if not 1 <= len(traces) <= 2:
            raise UsageError("--sim takes one or two traces, comma-separated")
        for t in traces:
            if not t.is_file():
                raise UsageError(f"{t}: no such trace file")
    from host_tools.common import safeio

    safeio.output_dir(args.out, "--out")
    if not args.overwrite:
        out = Path(args.out)
        sides = ["left", "right"][: len(traces)] if traces else list(SIDES)
        if traces or args.both:
            existing = [p for s in sides if (p := log_paths(out, s)[0]).exists()]
            if existing:
                raise UsageError(f"{existing[0]} exists (use --overwrite or another --out)")
    return traces


def run(args) -> int:
    import logging

    from host_tools.cli import UsageError

    logging.getLogger("bumble").setLevel(logging.ERROR)  # its warnings are not for users

    traces = _check(args)
    try:
        return asyncio.run(_main(args, traces))
    except _Fatal as exc:
        raise UsageError(str(exc)) from None


class _Fatal(Exception):
    """Cannot start: reported as a usage error."""


class _SimFailed(Exception):
    """A virtual insole failed while capturing: the logs so far are kept."""


async def _main(args, traces: list[Path]) -> int:
    from host_tools.ble.capture import Backoff, CaptureError, InsoleSession, Progress, capture

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C: close cleanly
    cleanup = []
    until = None
    failure = ""
    try:
        sim_run = None
        if traces:
            links, sides, sim_run, close = await _sim_links(traces, args.speed, args.outage,
                                                            args.passkey)
            cleanup.append(close)
            backoff = Backoff(0.1, 1.0)
        elif args.transport:
            links, sides, close = await _bumble_links(args)
            cleanup.append(close)
            backoff = Backoff()
        else:
            await _bleak_adapter_check()
            links, sides = _bleak_links(args)
            backoff = Backoff()
        sessions = [InsoleSession(link, args.out, side=side, overwrite=args.overwrite,
                                  backoff=backoff) for link, side in zip(links, sides,
                                                                        strict=True)]
        if sim_run is not None:
            until = sim_run(sessions)
        if args.duration:
            loop.call_later(args.duration, stop.set)
        progress = Progress(sessions)
        try:
            await capture(sessions, stop, progress, until=until, drain_s=10.0)
        except CaptureError as exc:
            raise _Fatal(str(exc)) from None
        except _SimFailed as exc:
            failure = str(exc)
    finally:
        for close in cleanup:
            with contextlib.suppress(Exception):
                await close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    print()
    for s in sessions:
        print(s.summary())
    if failure:
        print(f"insole capture: error: {failure}", file=sys.stderr)
        return 1
    failed = [s for s in sessions if s.stats.error or s.writer is None]
    if failed:
        for s in failed:
            print(f"{s.label}: nothing captured ({s.stats.error or 'never connected'})",
                  file=sys.stderr)
        return 1
    return 0


async def _bleak_adapter_check() -> None:
    """Fail at once, as `scan` does, when there is no usable Bluetooth adapter: a
    session would otherwise retry for ever."""
    from bleak import BleakScanner
    from bleak.exc import BleakError

    from host_tools.ble.blelinks import bleak_problem

    try:
        scanner = BleakScanner()
        await scanner.start()
        await scanner.stop()
    except (BleakError, OSError, asyncio.TimeoutError, EOFError) as exc:
        raise _Fatal(f"Bluetooth: {bleak_problem(exc)}") from None


def _bleak_links(args):
    from host_tools.ble.blelinks import BleakLink

    taken: set[str] = set()
    if args.both:
        return ([BleakLink(side=s, taken=taken, scan_timeout=args.scan_timeout,
                           passkey=args.passkey) for s in ("left", "right")], [None, None])
    return [BleakLink(want=args.device, taken=taken, scan_timeout=args.scan_timeout,
                      passkey=args.passkey)], [None]


async def _bumble_links(args):
    from host_tools.ble.blelinks import BumbleLink, bumble_central

    try:
        device, transport = await bumble_central(args.transport)
    except Exception as exc:  # bumble raises many kinds for a missing/busy dongle
        raise _Fatal(f"cannot open bumble transport {args.transport!r}: {exc}") from None
    taken: set[str] = set()
    lock = asyncio.Lock()
    kw = dict(taken=taken, lock=lock, transport=args.transport, scan_timeout=args.scan_timeout,
              passkey=args.passkey)
    if args.both:
        links = [BumbleLink(device, side=s, **kw) for s in ("left", "right")]
    else:
        links = [BumbleLink(device, target=args.device, **kw)]

    async def close():
        await transport.close()

    return links, [None] * len(links), close


async def _sim_links(traces: list[Path], speed: float,
                     outages: list[tuple[float, float]] | None = None,
                     passkey: int | None = None):
    """Start virtual insoles (left, right) on an in-process radio, clocks held at trace
    time 0, with the radio outages scheduled; links to them; and a coroutine factory
    that plays the traces once the capture is listening (and, after them, lets the
    clocks run on until the last outage is over). Each link pairs with its insole's
    own passkey, or with `passkey` when one is given."""
    from host_tools.ble.blelinks import BumbleLink
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio
    from host_tools.vboard.wire import VBoardError

    sides = ["left", "right"][: len(traces)]
    radio = VirtualRadio()
    insoles = [VirtualInsole(str(t), side=s, speed=speed, radio=radio, index=i,
                                    paused=True)
               for i, (t, s) in enumerate(zip(traces, sides, strict=True))]
    lingering: list[asyncio.Task] = []

    async def close():
        for task in lingering:
            task.cancel()
        await asyncio.gather(*lingering, return_exceptions=True)
        for ins in insoles:
            await ins.stop()
        await radio.close()

    try:
        for ins in insoles:
            for at, seconds in outages or []:
                ins.schedule_outage(at, seconds)
            await ins.start()
        central = await radio.central()
    except VBoardError as exc:
        await close()
        raise _Fatal(str(exc)) from None
    taken: set[str] = set()
    lock = asyncio.Lock()
    links = [BumbleLink(central, side=s, taken=taken, lock=lock, transport="virtual",
                        scan_timeout=20.0,
                        passkey=ins.passkey if passkey is None else passkey)
             for s, ins in zip(sides, insoles, strict=True)]

    async def linger(ins) -> None:
        # after the trace the firmware keeps serving BLE while its clock runs on
        while True:
            await ins.run_for(1.0, timeout=None)

    async def play(sessions) -> None:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(
                s.stats.state == "connected" for s in sessions):
            await asyncio.sleep(0.05)
        for ins in insoles:
            ins.resume()
        try:
            await asyncio.gather(*(ins.finished() for ins in insoles))
        except VBoardError as exc:
            raise _SimFailed(str(exc)) from None
        lingering.extend(asyncio.ensure_future(linger(ins)) for ins in insoles)
        # an outage that outlasts the trace ends while the firmware lingers
        while any(ins.outages_left for ins in insoles):
            await asyncio.sleep(0.05)

    return links, sides, play, close
