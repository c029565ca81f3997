"""Guided exercise session: prompts, live counts and progress, a summary, and the
session stored in the training history (see `insole history`).

Exercises:
  heel-raises   stand on both feet (a hand on a wall or chair for balance), rise onto the
                balls of the feet, hold, lower slowly. A rep counts when the heel is at
                least 80 % unloaded while the forefoot stays loaded, and comes back down;
                shallower raises are reported as partial. --target: reps (default 15).
  toe-scrunch   sit with the foot flat on a towel, heel down; curl the toes to pull the
                towel in, relax. --target: scrunches (default 20).
  balance       stand on both feet for a few seconds, then lift the other foot and hold.
                Time counts from the lift to the moment the other foot touches down or
                the load collapses. --target: seconds of single-leg stance (default 30).
  slow-walk     walk with the beat: every step is compared with --target steps/min
                (default 90) within --tolerance % and with --pattern (default rear, a
                heel strike), so you can slow down or speed up as told.

Where the insole is:
  (default)     an insole over Bluetooth (the computer's adapter through bleak; the
                first insole found, or --device NAME|ADDRESS; --transport usb:0 for a
                bumble dongle). The session selects the exercise with the Control
                SET_MODE command (over a bond made with the insole's passkey: see
                `insole pair`; --passkey N bonds now), shows
                the insole's exercise events live, and ends at the target, after
                --duration seconds, or on Ctrl-C; the insole is put back to walk mode.
  --vboard TRACE  the real firmware on the virtual board (micropython binary) replaying
                the trace, reached over the virtual radio exactly like a real insole:
                SET_MODE, then the insole's exercise events (--speed: trace seconds per
                second, default 20 here).
  --sim TRACE   replay a recorded or generated trace (see python -m host_tools.exgen)
                through firmware/exercise.py on this computer (--engine cpython, live)
                or in the micropython binary (--engine micropython). --speed 1 replays
                in real time; the default 0 runs as fast as possible.

Ctrl-C ends the session early the same way with every source: the summary is printed
and the session saved, marked as stopped early.

The summary (reps, hold/rise/lower times, balance time and sway, cadence and its
variability, heel-strike share, arch loading) is printed and saved to the history
database (--db, $INSOLE_HISTORY_DB or ~/.local/share/insole/history.db) unless --no-save.
When the database cannot be written (a read-only disk, a full one) the session is kept
in a file instead and the message says how to add it later (`insole history
--add-session FILE`). Event layouts and thresholds: docs/EXERCISES.md.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from host_tools.cli.pair import passkey_arg
from host_tools.common import argcheck, liveline

HELP = "guided exercise session (heel raises, toe scrunches, balance, slow walk)"

DEFAULT_TARGET = {"heel-raises": 15, "toe-scrunch": 20, "balance": 30, "slow-walk": 90}
PROMPTS = {
    "heel-raises": [
        "Stand tall on both feet, a hand on a wall or a chair back for balance.",
        "Rise onto the balls of your feet as high as you can, hold a moment, "
        "lower slowly. Keep your toes on the floor.",
    ],
    "toe-scrunch": [
        "Sit with the foot flat on a towel, heel on the floor.",
        "Curl your toes to pull the towel towards you, then relax them. Heel stays down.",
    ],
    "balance": [
        "Stand on both feet near a wall or chair for a few seconds.",
        "Then lift the other foot and hold still. Put it down when you need to.",
    ],
    "slow-walk": [
        "Walk slowly and upright, landing on your heel.",
        "Each step is checked against the target pace: follow the 'slower'/'faster' cues.",
    ],
}


def add_arguments(parser) -> None:
    parser.add_argument("exercise", choices=list(DEFAULT_TARGET), help="which exercise")
    parser.add_argument("--target", type=argcheck.positive_number, metavar="N",
                        help="reps (1..1000) / seconds (1..3600) / steps per minute "
                        "(20..160), see above")
    parser.add_argument("--tolerance", type=argcheck.int_range(1, 50, "--tolerance"),
                        default=5, metavar="PCT",
                        help="slow walk: on-target band, +-%% of the target, 1..50 "
                        "(default 5)")
    parser.add_argument("--pattern", choices=("rear", "mid", "fore", "any"), default="rear",
                        help="slow walk: wanted strike pattern (default rear)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sim", metavar="TRACE", help="trace CSV to replay as the insole")
    where.add_argument("--device", metavar="NAME|ADDRESS", help="this insole over BLE")
    where.add_argument("--vboard", metavar="TRACE",
                       help="the firmware on the virtual board replaying TRACE, over BLE")
    parser.add_argument("--firmware", metavar="DIR",
                        help="--vboard: run this firmware directory (default firmware/)")
    parser.add_argument("--transport", metavar="T",
                        help="bumble transport instead of bleak, e.g. usb:0")
    parser.add_argument("--duration", type=argcheck.seconds, metavar="S",
                        help="BLE: stop after S seconds (default: at the target or Ctrl-C)")
    parser.add_argument("--scan-timeout", type=argcheck.seconds, default=10.0, metavar="S",
                        help="BLE: how long to look for the insole (default 10)")
    parser.add_argument("--passkey", type=passkey_arg, metavar="N",
                        help="BLE, --vboard: the insole's 6-digit passkey, to bond when "
                        "there is no bond yet (--vboard: default the virtual insole's own)")
    parser.add_argument("--rate", type=argcheck.rate_hz, metavar="HZ",
                        help="sample rate (50..1000) when the trace does not say "
                        "(default 100); a trace's own rate_hz must agree")
    parser.add_argument("--engine", choices=("cpython", "micropython"), default="cpython",
                        help="where firmware/exercise.py runs (default cpython, live)")
    parser.add_argument("--speed", type=argcheck.speed, metavar="X",
                        help="replay speed, 0..1000: 1 = real time, 0 = as fast as possible "
                        "(default 0 for --sim, 20 for --vboard)")
    parser.add_argument("--side", choices=("left", "right"), default="left")
    parser.add_argument("--db", metavar="PATH", help="history database to store the session in")
    parser.add_argument("--no-save", action="store_true", help="do not store the session")


def _bar(done: float, target: float, width: int = 20) -> str:
    """Progress towards the target as a bar and a percentage."""
    frac = 0.0 if target <= 0 else max(0.0, min(1.0, done / target))
    n = round(frac * width)
    return "[" + "#" * n + "-" * (width - n) + f"] {100 * frac:3.0f} %"


class Live:
    """Turns decoded events into one progress line each (and remembers them)."""

    def __init__(self, exercise: str, target: float, out=None):
        self.exercise = exercise
        self.target = target
        self.out = out
        self.events: list[dict] = []
        self.reps = 0
        self.balance_ms = 0
        self.announced = False
        self.stopped_early = False

    def say(self, text: str) -> None:
        stream = self.out or sys.stdout
        if stream.isatty():  # a bar that wraps is worse than a shorter bar
            width = liveline.terminal_width() - 1
            if len(text) > width and "] " in text and "[" in text:
                head, _, rest = text.rpartition("[")
                bar, _, pct = rest.partition("] ")
                room = width - len(head) - len(pct) - 3
                text = f"{head}[{bar[:max(room, 0)]}] {pct}" if room >= 5 else f"{head}{pct}"
            text = text[:width]
        print(text, file=stream, flush=True)

    def event(self, ev: dict) -> None:
        self.events.append(ev)
        t = ev["type"]
        x = self.exercise
        if x == "heel-raises" and t == "rep":
            self.reps = ev["count"]
            self.say(f"  rep {self.reps:3d}  rise {ev['rise_ms'] / 1000:4.1f} s  "
                     f"hold {ev['hold_ms'] / 1000:4.1f} s  lower {ev['lower_ms'] / 1000:4.1f} s"
                     f"  {_bar(self.reps, self.target)}")
        elif x == "heel-raises" and t == "partial":
            self.say(f"  partial raise ({ev['depth_pct']} % unloaded): go higher, "
                     "lift the heel right off")
        elif x == "toe-scrunch" and t == "scrunch":
            self.reps = ev["count"]
            self.say(f"  scrunch {self.reps:3d}  {ev['duration_ms'] / 1000:4.1f} s  "
                     f"{_bar(self.reps, self.target)}")
        elif x == "balance" and t == "hold-start":
            self.say(f"  on one foot ({ev['holds']}) ... hold it")
        elif x == "balance" and t == "sway" and ev["in_hold"]:
            self.say(f"    {ev['elapsed_ms'] / 1000:5.1f} s  sway {ev['sway_path']:4d} "
                     "per-mille/s")
        elif x == "balance" and t == "hold-end":
            if ev["reason"] == "void":
                return
            self.balance_ms += ev["duration_ms"]
            self.say(f"  held {ev['duration_ms'] / 1000:5.1f} s ({ev['reason']})  total "
                     f"{self.balance_ms / 1000:5.1f} s {_bar(self.balance_ms / 1000, self.target)}")
        elif x == "slow-walk" and t == "step":
            cue = {"too fast": "slower", "too slow": "faster", "on target": "good pace"}.get(
                ev["pace"], "...")
            strike = "heel strike" if ev["heel_strike"] else "NOT heel first"
            cad = f"{ev['cadence']:5.1f}/min" if ev["cadence"] else "   --    "
            self.say(f"  step {ev['step']:3d}  {cad}  {cue:9s}  {strike}")


def _summary_lines(summary: dict) -> list[str]:
    labels = {
        "reps": "reps", "partials": "partial raises", "holds": "holds",
        "balance_s": "single-leg time (s)", "longest_s": "longest hold (s)",
        "mean_sway_path": "mean sway (per-mille of foot length / s)",
        "mean_hold_s": "mean hold (s)", "mean_rise_s": "mean rise (s)",
        "mean_lower_s": "mean lowering (s)", "mean_depth_pct": "mean depth (% unloaded)",
        "mean_duration_s": "mean scrunch (s)", "steps": "steps",
        "cadence": "cadence (steps/min)", "cadence_cv_pct": "cadence variability (CV %)",
        "on_target_pct": "steps on target (%)", "heel_strike_pct": "heel strikes (%)",
        "arch_index": "arch loading (% of stance load)", "arch_band": "arch loading band",
        "duration_s": "session length (s)",
    }
    shown = {"arch_index": lambda v: f"{v / 10:.1f}"}  # stored in per-mille
    return [f"  {labels[k]:42s} {shown.get(k, str)(v)}"
            for k, v in summary.items() if k in labels]


def _intro(live: Live, x: str, target: float, unit: str) -> None:
    live.say(f"== {x}: target {target:g} {unit} ==")
    for line in PROMPTS[x]:
        live.say("  " + line)


def _replay(args, live: Live, mode: int, cfg, samples, rate: int, wall0: float) -> float:
    """Feed the trace through the exercise counter; the trace seconds it covered (all
    of them, or up to the Ctrl-C that stopped it)."""
    from host_tools.cli import UsageError
    from host_tools.training import exercises

    index = 0
    try:
        if args.engine == "micropython":
            try:
                packets = exercises.run_micropython(mode, samples, rate, *cfg)
            except exercises.EngineError as exc:
                raise UsageError(str(exc)) from None
        else:
            packets = exercises.iter_cpython(mode, samples, rate, *cfg)
        for index, pkt in packets:
            if args.speed:
                delay = wall0 + index / rate / args.speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            live.event(exercises.decode(pkt))
    except KeyboardInterrupt:
        live.stopped_early = True
        reached = (time.monotonic() - wall0) * args.speed if args.speed else index / rate
        return min(len(samples) / rate, reached)
    return len(samples) / rate


def make_link(args):
    """The BLE link for --device / --transport, and an async closer (or None)."""
    if args.transport:
        from host_tools.ble.blelinks import BumbleLink, bumble_central

        async def open_bumble():
            device, transport = await bumble_central(args.transport)
            link = BumbleLink(device, target=args.device, transport=args.transport,
                              scan_timeout=args.scan_timeout, passkey=args.passkey)
            return link, transport.close

        return open_bumble
    from host_tools.ble.blelinks import BleakLink

    async def open_bleak():
        return BleakLink(want=args.device, scan_timeout=args.scan_timeout,
                         passkey=args.passkey), None

    return open_bleak


def _target_reached(live: Live) -> bool:
    if live.exercise == "slow-walk":
        return False
    done = live.balance_ms / 1000 if live.exercise == "balance" else live.reps
    return done >= live.target


def _stop_on_ctrl_c(live: Live, stop) -> None:
    """In the running event loop: Ctrl-C ends the session early (summary, saved)."""
    import asyncio
    import signal

    def interrupted() -> None:
        live.stopped_early = True
        stop.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted)


def _over_ble(args, live: Live, mode: int, cfg) -> str:
    import asyncio

    from host_tools.ble.train_link import TrainError, run_session
    from host_tools.cli import UsageError

    async def main() -> str:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        _stop_on_ctrl_c(live, stop)

        def on_event(ev: dict) -> None:
            live.event(ev)
            if _target_reached(live):
                live.say("  target reached")
                stop.set()

        if args.duration:
            loop.call_later(args.duration, stop.set)
        try:
            link, close = await make_link(args)()
        except Exception as exc:  # bumble raises many kinds for a missing/busy dongle
            raise UsageError(f"cannot open the Bluetooth transport: {exc}") from None
        live.say("  (looking for the insole; Ctrl-C ends the session)")
        try:
            await run_session(link, mode, cfg, on_event, stop)
        except TrainError as exc:
            raise UsageError(str(exc)) from None
        finally:
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        return f"ble:{link.name or link.address or args.device or 'insole'}"

    return asyncio.run(main())


def _over_vboard(args, live: Live, mode: int, cfg) -> tuple[str, float]:
    import asyncio

    from host_tools.ble.blelinks import BumbleLink
    from host_tools.ble.train_link import TrainError, run_session
    from host_tools.cli import UsageError
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio
    from host_tools.vboard.wire import VBoardError

    speed = 20.0 if args.speed is None else args.speed
    if speed <= 0:
        # flat out, the firmware leaves the radio no time: the link would not come up
        raise UsageError("--vboard needs a --speed above 0 (trace seconds per second)")

    async def main() -> float:
        radio = VirtualRadio()
        kw = {"firmware_dir": args.firmware} if args.firmware else {}
        insole = VirtualInsole(args.vboard, side=args.side, speed=speed, radio=radio,
                                      paused=True, **kw)
        stop = asyncio.Event()
        tasks: list[asyncio.Task] = []
        _stop_on_ctrl_c(live, stop)

        def on_event(ev: dict) -> None:
            live.event(ev)
            if _target_reached(live):
                live.say("  target reached")
                stop.set()

        def on_linked() -> None:
            # the firmware answers Control only while it runs: let its clock creep
            # until the mode is set, so (almost) all of the trace is the exercise
            insole.set_speed(0.05)
            insole.resume()

        async def play() -> None:
            insole.set_speed(speed)
            await insole.finished()
            await asyncio.sleep(0.5)  # the last notifications are still on the way
            stop.set()

        def on_ready() -> None:
            tasks.append(asyncio.ensure_future(play()))

        try:
            await insole.start()
            passkey = insole.passkey if args.passkey is None else args.passkey
            link = BumbleLink(await radio.central(), side=args.side, transport="virtual",
                              scan_timeout=20.0, passkey=passkey)
            live.say(f"  (virtual insole replaying {args.vboard} at {speed:g}x)")
            await run_session(link, mode, cfg, on_event, stop, on_ready, on_linked)
            return insole.trace_time
        except (VBoardError, TrainError) as exc:
            raise UsageError(str(exc)) from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await insole.stop()
            await radio.close()

    return f"vboard:{args.vboard}", asyncio.run(main())


def _keep_session(s, history, problem: str) -> str:
    """The session as a JSON file (current directory, else the temporary one), for a
    database that could not take it; the message to print."""
    import tempfile

    from host_tools.common import safeio

    name = f"insole-session-{s.started_at.strftime('%Y%m%d-%H%M%S')}-{s.kind}.json"
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            path = safeio.write_text(folder / name, history.session_json(s))
        except safeio.UsageError:
            continue
        return (f"session not saved: {problem}; kept in {path}: add it later with "
                f"`insole history --add-session {path}`")
    return f"session not saved: {problem}; it could not be kept in a file either"


def run(args) -> int:
    import sqlite3

    from host_tools.cli import UsageError
    from host_tools.gait.tracefile import TraceError, read_trace
    from host_tools.training import exercises, history

    x = args.exercise
    target = args.target if args.target is not None else DEFAULT_TARGET[x]
    try:
        target = argcheck.target(x, target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.firmware and not args.vboard:
        raise UsageError("--firmware goes with --vboard")
    if (args.sim or args.vboard) and (args.transport or args.duration):
        raise UsageError("--transport and --duration are for a BLE insole, not --sim/--vboard")
    mode = exercises.MODES[x]
    cfg = (round(target * 10) if x == "slow-walk" else 900, args.tolerance,
           exercises.PATTERNS[args.pattern])

    live = Live(x, target)
    unit = {"heel-raises": "reps", "toe-scrunch": "scrunches", "balance": "seconds",
            "slow-walk": "steps/min"}[x]
    started = datetime.now(timezone.utc)
    wall0 = time.monotonic()
    if args.sim:
        try:
            trace = read_trace(args.sim)
        except TraceError as exc:
            raise UsageError(str(exc)) from None
        if args.rate and trace.rate_hz and args.rate != trace.rate_hz:
            raise UsageError(
                f"{args.sim}: the trace says rate_hz={trace.rate_hz}, not {args.rate}")
        rate = trace.rate_hz or args.rate or 100
        _intro(live, x, target, unit)
        live.say(f"  (replaying {args.sim}: {len(trace.samples)} samples at {rate} Hz, "
                 f"engine {args.engine})")
        duration = _replay(args, live, mode, cfg, trace.samples, rate, wall0)
        source = f"sim:{args.sim}"
    elif args.vboard:
        _intro(live, x, target, unit)
        source, duration = _over_vboard(args, live, mode, cfg)
    else:
        _intro(live, x, target, unit)
        source = _over_ble(args, live, mode, cfg)
        duration = time.monotonic() - wall0
    summary = exercises.summarize(mode, live.events, duration)
    if x == "slow-walk":
        summary["target_cadence"] = target
    if live.stopped_early:
        summary["stopped_early"] = True
    live.say("== session summary" + (" (stopped early: Ctrl-C)" if live.stopped_early else "")
             + " ==")
    for line in _summary_lines(summary):
        live.say(line)
    done = {"heel-raises": summary.get("reps", 0), "toe-scrunch": summary.get("reps", 0),
            "balance": summary.get("balance_s", 0.0),
            "slow-walk": summary.get("on_target_pct", 0.0)}[x]
    if x == "slow-walk":
        live.say(f"  {done:g} % of steps within +-{args.tolerance} % of {target:g}/min")
    else:
        live.say(f"  {done:g} of {target:g} {unit}: "
                 + ("target reached, well done" if done >= target else "keep going next time"))
    if args.no_save:
        return 0
    session = history.Session(x, started, duration, args.side, source, summary)
    try:
        conn = history.connect(args.db)
        try:
            sid = history.add_session(conn, session)
        finally:
            conn.close()
    except (history.HistoryError, OSError, sqlite3.Error) as exc:
        raise UsageError(_keep_session(session, history, str(exc))) from None
    live.say(f"  saved as session {sid} in {args.db or history.default_path()} "
             f"({time.monotonic() - wall0:.1f} s)")
    return 0
