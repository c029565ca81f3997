"""Run the insole firmware on the virtual board, replaying a recorded trace.

The unchanged firmware (firmware/main.py) runs in the micropython binary (the unix
port) with the virtual board's shims: its ADC reads the trace, its clock is a virtual
one, and its BLE peripheral is served by a real BLE stack (bumble) in this process.
The firmware's serial lines are printed with the trace time in front; a progress
line every few seconds shows the trace time, the firmware's step total (from its
Status characteristic) and whether a central is connected.

Without --transport the insole advertises on an in-process virtual radio (nothing
outside this process can connect; useful to watch the firmware run). With
--transport usb:0 (or any bumble transport: serial:/dev/ttyACM0, hci-socket:0, ...)
it advertises through that Bluetooth controller, so a phone app (nRF Connect, nRF
Toolbox's RSC profile) can connect to it. After the trace the firmware keeps serving
BLE for --linger seconds.

Examples:
  insole sim --trace host_tools/data/walk_left.csv --speed 20
  insole sim --trace walk.csv --side right --transport usb:0 --linger 600
"""

from __future__ import annotations

import asyncio
import time

from host_tools.common import argcheck, safeio
from host_tools.common.safeio import UsageError

HELP = "run the firmware on the virtual board, replaying a trace over BLE"
PROGRESS_EVERY_S = 2.0


def add_arguments(parser) -> None:
    parser.add_argument("--trace", required=True, metavar="TRACE",
                        help="trace CSV to replay (docs/TRACE_FORMAT.md)")
    parser.add_argument("--side", choices=("left", "right"), default="left",
                        help="the insole's side, written to its config (default left)")
    parser.add_argument("--speed", type=argcheck.speed, default=1.0, metavar="X",
                        help="trace seconds per wall second, 0..1000; 0 = as fast as "
                             "possible (default 1: real time)")
    parser.add_argument("--transport", metavar="T",
                        help="bumble transport of a real controller, e.g. usb:0 "
                             "(default: an in-process virtual radio)")
    parser.add_argument("--rate", type=argcheck.rate_hz, metavar="HZ",
                        help="the trace's sample rate (50..1000) if the file does not say "
                             "(default 100); a file's own rate_hz must agree")
    parser.add_argument("--linger", type=argcheck.seconds_or_zero, default=5.0, metavar="S",
                        help="trace seconds to keep serving BLE after the trace (default 5)")
    parser.add_argument("--flash", metavar="DIR",
                        help="directory kept as the board's flash (config, bonds); "
                             "default: a temporary one")
    parser.add_argument("--quiet", action="store_true", help="no firmware serial lines")


def run(args) -> int:
    from host_tools.gait.tracefile import TraceError, read_trace

    if args.flash:
        safeio.output_dir(args.flash, "--flash")
    try:
        trace = read_trace(args.trace)
    except TraceError as exc:
        raise UsageError(str(exc)) from None
    if args.rate and trace.rate_hz and args.rate != trace.rate_hz:
        raise UsageError(f"{args.trace}: the trace says rate_hz={trace.rate_hz}, not "
                         f"{args.rate} (leave out --rate)")
    if trace.rate_hz is None and args.rate is None:
        print(f"{args.trace}: no '# rate_hz=' line; assuming 100 Hz (use --rate)")
    return asyncio.run(_sim(args, trace))


async def _sim(args, trace) -> int:
    from host_tools.ble import protocol
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio
    from host_tools.vboard.wire import VBoardError

    rate = trace.rate_hz or args.rate or 100
    duration = len(trace.samples) / rate
    on_line = None if args.quiet else print
    radio = VirtualRadio(args.transport)
    vi = VirtualInsole(trace.samples, side=args.side, speed=args.speed, radio=radio,
                              rate_hz=rate, flash_dir=args.flash, on_line=on_line)
    where = args.transport or "the in-process virtual radio"
    try:
        await vi.start()
        print(f"advertising as {vi.name} ({vi.address}) on {where}; "
              f"{duration:.1f} s of trace at {rate} Hz, speed {args.speed:g}")
        progress = asyncio.ensure_future(_progress(vi, protocol, duration))
        try:
            await vi.finished()
            print(f"trace finished at {vi.trace_time:.1f} s; serving BLE for {args.linger:g} s")
            if args.linger > 0:
                await vi.run_for(args.linger, timeout=None)
        finally:
            progress.cancel()
        _summary(vi, protocol)
        return 0
    except VBoardError as exc:
        print(f"insole sim: {exc}")
        return 1
    finally:
        await vi.stop()
        await radio.close()


async def _progress(vi, protocol, duration: float) -> None:
    start = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        status = vi.value(protocol.UUID_STATUS)
        steps = protocol.decode_status(status).steps if status and len(status) == 20 else 0
        link = f"{len(vi.connections)} central(s)" if vi.connections else "no central"
        print(f"[{time.monotonic() - start:6.1f} s] trace {max(vi.trace_time, 0):.1f}/"
              f"{duration:.1f} s, {steps} steps, {link}, "
              f"{len(vi.notifications)} notifications sent")


def _summary(vi, protocol) -> None:
    status = vi.value(protocol.UUID_STATUS)
    if status and len(status) == 20:
        s = protocol.decode_status(status)
        print(f"firmware status: {s.steps} steps, uptime {s.uptime_s} s, "
              f"{s.overruns} overruns, {s.buffered} events not delivered, "
              f"{s.lost} lost to ring overflow, channels {s.faults_text()}")
