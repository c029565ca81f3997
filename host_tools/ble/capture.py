"""Capture insole step events over BLE into step logs (see steplog.py).

Two layers:

* A link is the thin transport-specific part: connect, secure (pair/encrypt), read,
  write, subscribe, disconnect, and report a disconnect. ``BleakLink`` drives a real
  adapter through bleak; ``BumbleLink`` drives a bumble central on any bumble transport
  (a USB dongle, or the in-process virtual radio the virtual insoles use). A link only
  moves bytes; it stamps each notification with the host time inside the callback.
* ``InsoleSession`` is everything above: it decodes packets, spots sequence gaps, asks
  the insole for backfill over the Control characteristic, writes one flushed CSV row
  per step, keeps the session file, reconnects with back-off, and keeps the numbers for
  the progress line and the summary. It is the same for every link.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from host_tools.ble import protocol
from host_tools.ble.steplog import SessionMeta, StepLogWriter, log_paths, utc_iso, write_meta
from host_tools.common import liveline
from host_tools.common.safeio import UsageError, describe

Notify = Callable[[bytes, float], None]  # (payload, host receive time)
FIRMWARE_REVISION_UUID = "00002a26-0000-1000-8000-00805f9b34fb"  # Device Information


class LinkError(Exception):
    """The link could not connect, or lost the connection during an operation."""


class CaptureError(Exception):
    """A fault that retrying cannot fix (e.g. the log file already exists)."""


class Link:
    """Transport-specific part of a connection to one insole (bytes in, bytes out)."""

    name: str = ""
    address: str = ""
    transport: str = ""

    def __init__(self) -> None:
        self._on_disconnect: Callable[[], None] | None = None

    def set_disconnected_callback(self, cb: Callable[[], None]) -> None:
        self._on_disconnect = cb

    def _disconnected(self) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect()

    async def connect(self) -> None:
        raise NotImplementedError

    async def secure(self) -> None:
        """Pair / encrypt the link (the Control characteristic requires it)."""
        raise NotImplementedError

    async def read(self, uuid: str) -> bytes:
        raise NotImplementedError

    async def write(self, uuid: str, data: bytes) -> None:
        raise NotImplementedError

    async def subscribe(self, uuid: str, callback: Notify) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- helpers


class Backoff:
    """Reconnect delays: first, 2*first, ... up to limit; reset after a good connection."""

    def __init__(self, first: float = 0.5, limit: float = 10.0):
        self.first = first
        self.limit = limit
        self._next = first

    def next(self) -> float:
        d = self._next
        self._next = min(self.limit, self._next * 2)
        return d

    def reset(self) -> None:
        self._next = self.first


class SeqTracker:
    """Which sequence numbers have been seen between the lowest and highest seen.

    Numbers the insole says hold nothing (``void``: skipped at a reboot) are never
    missing."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.missing: set[int] = set()
        self.void: set[int] = set()
        self.lowest: int | None = None
        self.highest: int | None = None
        self.recovered = 0
        # the lowest missing number, kept as a replay fills the gap from below (a
        # day's replay is 100,000 packets: no min() over the gap for each)
        self._first: int | None = None

    def _expect(self, lo: int, hi: int) -> None:
        self.missing.update(n for n in range(lo, hi) if n not in self.void)
        self._first = None

    def add(self, seq: int) -> bool:
        """Record a number; False if it was already seen (a replay)."""
        if seq in self.seen:
            return False
        self.seen.add(seq)
        if self.highest is None or self.lowest is None:
            self.lowest = self.highest = seq
            return True
        if seq in self.missing:
            self.missing.discard(seq)
            self.recovered += 1
        elif seq > self.highest + 1:
            self._expect(self.highest + 1, seq)
        elif seq < self.lowest - 1:
            self._expect(seq + 1, self.lowest)
        self.highest = max(self.highest, seq)
        self.lowest = min(self.lowest, seq)
        return True

    def start_after(self, n: int) -> None:
        """Numbers from n + 1 on are expected (n itself was before our time)."""
        if self.highest is None:
            self.lowest = self.highest = n
            self.missing.discard(n)

    def expect_up_to(self, last: int) -> None:
        """Numbers up to `last` exist: any above `highest` are missing."""
        if self.highest is not None and last > self.highest:
            self._expect(self.highest + 1, last + 1)
            self.highest = last

    def behind(self, last: int) -> bool:
        """Whether some number up to `last` above `highest` may hold something."""
        top = self.highest if self.highest is not None else 0
        return any(n not in self.void for n in range(top + 1, last + 1))

    def set_void(self, lo: int, hi: int) -> int:
        """Numbers lo..hi-1 hold nothing; returns how many were not known void."""
        new = [n for n in range(lo, hi) if n not in self.void and n not in self.seen]
        self.void.update(new)
        self.missing.difference_update(new)
        return len(new)

    def first_missing(self) -> int | None:
        if not self.missing:
            return None
        f = self._first
        if f is None:
            f = min(self.missing)
        while f not in self.missing:  # numbers only left the set since: look upwards
            f += 1
        self._first = f
        return f

    def shift(self, by: int) -> None:
        """Renumber everything by `by` (the same numbers, counted from elsewhere)."""
        self.seen = {n + by for n in self.seen}
        self.missing = {n + by for n in self.missing}
        self.void = {n + by for n in self.void}
        self._first = None
        if self.lowest is not None and self.highest is not None:
            self.lowest += by
            self.highest += by


def seq_ranges(seqs: Iterable[int]) -> str:
    """'3, 7-9' for [3, 7, 8, 9]."""
    out, run = [], []
    for s in sorted(seqs):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [s]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


# ----------------------------------------------------------------------------- session


@dataclass
class SessionStats:
    steps: int = 0
    backfilled: int = 0
    replays: int = 0
    bad_packets: int = 0
    reconnects: int = 0
    # cadence as the report defines it: the mean over timed strides of 120000 / stride_ms
    cadence_sum: float = 0.0
    cadence_strides: int = 0
    last_stance_ms: int = 0
    state: str = "starting"
    error: str = ""

    def cadence(self) -> float:
        return self.cadence_sum / self.cadence_strides if self.cadence_strides else math.nan


def firmware_text(status: protocol.Status) -> str:
    """Major.minor from a format-1 Status; "" from later formats (Device Information has it)."""
    if status.fw_major is None:
        return ""
    return f"{status.fw_major}.{status.fw_minor}"


SIDE_NAMES = {"L": "left", "R": "right"}


class InsoleSession:
    """Capture one insole through a link until stopped; survives disconnects.

    Every Step Event packet carries a 16-bit sequence number; a step arrives as two
    packets (timing, then load) that share a step number. The session unwraps packet
    numbers, notes any that are missing, asks the insole to replay from the first missing
    one, and writes a step's row as soon as both halves are in.
    """

    def __init__(
        self,
        link: Link,
        out_dir: str | Path,
        side: str | None = None,
        overwrite: bool = False,
        backoff: Backoff | None = None,
        backfill_wait: float = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        self.link = link
        self.out_dir = Path(out_dir)
        self.side = side
        self.overwrite = overwrite
        self.backoff = backoff or Backoff()
        self.backfill_wait = backfill_wait
        self.clock = clock
        self.stats = SessionStats()
        self.packets = SeqTracker()  # unwrapped packet sequence numbers
        self.steps = SeqTracker()  # step numbers logged
        self.unwrap = protocol.SeqUnwrapper()
        self.status: protocol.Status | None = None  # as last read
        self.live_status: protocol.Status | None = None  # as last notified
        self.faults_seen: list[str] = []  # "heel dead", in the order first reported
        self.meta: SessionMeta | None = None
        self.writer: StepLogWriter | None = None
        self.given_up: set[int] = set()  # packets the insole no longer holds
        self._halves: dict[int, list] = {}  # step number -> [Step | None, Load | None]
        self._device_steps = 0  # highest step number the insole has sent since it booted
        self._step_offset = 0  # added to step numbers after an insole restarted from 0
        # the insole's 29-bit sequence numbers (GET_JOURNAL): packet numbers are then
        # the insole's own and BACKFILL names them whole; None with older firmware
        self._head: int | None = None
        self._journal_wait: asyncio.Future | None = None
        self.steps_skipped = 0  # step numbers restarts left unused (boot START)
        self._restarts_unseen = 0  # restarts Status showed whose boot START has not come
        self.journal_dropped = 0  # journal days the insole dropped (GET_JOURNAL)
        self._uptime = -1  # the insole's uptime at the last status read
        self.restarts = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._connected = asyncio.Event()
        self._generation = 0  # counts connections: a late disconnect report is ignored
        self._backfill_asked_at = -math.inf
        self._backfill_pending = False  # a BACKFILL request awaits its reply
        # a replay under way: it runs up to (not including) this packet number, and the
        # last new packet came at this host time; asking again would restart it
        self._replay_end: int | None = None
        self._last_new = -math.inf
        self._last_rx = -math.inf  # host time of the last Step Event packet
        self._secured = False
        self.replies: list[protocol.Reply] = []
        self.log_lines: list[str] = []

    @property
    def label(self) -> str:
        return self.side or self.link.name or self.link.address or "insole"

    def log(self, text: str) -> None:
        self.log_lines.append(f"{self.label}: {text}")

    # --- callbacks from the link (run in the event loop; stamp, then hand off)

    def _on_step(self, data: bytes, t: float) -> None:
        self._last_rx = t
        self._queue.put_nowait(("step", bytes(data), t))

    def _on_status(self, data: bytes, t: float) -> None:
        self._queue.put_nowait(("status", bytes(data), t))

    def _on_control(self, data: bytes, t: float) -> None:
        wait = self._journal_wait
        if wait is not None and not wait.done() and data[:1] == bytes([protocol.OP_GET_JOURNAL]):
            wait.set_result(bytes(data))
        self._queue.put_nowait(("control", bytes(data), t))

    def _on_disconnect(self) -> None:
        self._connected.clear()
        self._queue.put_nowait(("disconnected", self._generation, self.clock()))

    # --- files

    def _open_files(self, status: protocol.Status, firmware: str) -> None:
        reported = SIDE_NAMES[status.side]
        if self.side and reported != self.side:
            self.log(f"insole reports side {reported!r}; logging it as {self.side!r}")
        side = self.side or reported
        self.side = side
        csv_path, meta_path = log_paths(self.out_dir, side)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.writer = StepLogWriter(csv_path, side, overwrite=self.overwrite)
        except FileExistsError:
            raise CaptureError(f"{csv_path} exists (use --overwrite or another --out)") from None
        except OSError as exc:
            raise CaptureError(describe(exc, csv_path)) from None
        self.meta = SessionMeta(
            side=side,
            firmware_version=firmware or firmware_text(status),
            sample_rate_hz=status.rate_hz,
            start_time=utc_iso(self.clock()),
            device_address=self.link.address,
            device_name=self.link.name,
            transport=self.link.transport,
        )
        self._meta_path = meta_path
        try:
            write_meta(meta_path, self.meta)
        except UsageError as exc:  # no log without its session file
            self.writer.close()
            csv_path.unlink(missing_ok=True)
            self.writer = None
            raise CaptureError(str(exc)) from None

    def lost_steps(self) -> list[int]:
        return sorted(self.steps.missing)

    def _note_faults(self, status: protocol.Status) -> None:
        for ch, name in status.channel_faults().items():
            text = f"{ch} {name}"
            if name != "ok" and text not in self.faults_seen:
                self.faults_seen.append(text)

    def sensor_faults_now(self) -> str:
        """The channels the insole reports faulty now ("" when none or not reported)."""
        status = self.live_status or self.status
        if status is None or not status.faults:
            return ""
        return status.faults_text()

    def close(self) -> None:
        """Flush and close the log, record what was lost; safe to call twice."""
        if self.writer is not None:
            self.writer.close()
        if self.meta is not None:
            self.meta.end_time = utc_iso(self.clock())
            self.meta.steps_logged = self.stats.steps
            self.meta.steps_backfilled = self.stats.backfilled
            self.meta.reconnects = self.stats.reconnects
            self.meta.restarts = self.restarts
            self.meta.sensor_faults = list(self.faults_seen)
            self.meta.lost_seqs = self.lost_steps()
            try:
                write_meta(self._meta_path, self.meta)
            except UsageError as exc:  # the session file of the start stays
                self.stats.error = self.stats.error or str(exc)

    # --- packet handling

    def _handle(self, kind: str, data: bytes, t: float) -> None:
        if kind == "step":
            try:
                ev = protocol.decode_event(data)
            except protocol.ProtocolError as exc:
                self.stats.bad_packets += 1
                if self.stats.bad_packets <= 3:
                    self.log(f"undecodable step event ({exc})")
                return
            self._event(ev, t)
        elif kind == "status":
            # display only: a notified total may run ahead of step packets still in flight
            with contextlib.suppress(protocol.ProtocolError):
                self.live_status = protocol.decode_status(data)
                self._note_faults(self.live_status)
        elif kind == "control":
            try:
                reply = protocol.decode_reply(data)
            except protocol.ProtocolError:
                return
            self.replies.append(reply)
            self._reply(reply)

    def _event(self, ev, t: float) -> None:
        full = self.unwrap(ev.seq)
        if not self.packets.add(full):
            self.stats.replays += 1
            return
        self._last_new = self.clock()
        if isinstance(ev, protocol.Start) and (ev.skipped_seq or ev.skipped_steps):
            # a reboot skipped these numbers (its journal's margin for a lost batch);
            # the reboot itself is counted once, here or from Status (_restarted)
            if self._restarts_unseen:
                self._restarts_unseen -= 1
            else:
                self.restarts += 1
            self.packets.set_void(full - ev.skipped_seq, full)
            if ev.skipped_steps and not self._step_offset:
                self.steps_skipped += self.steps.set_void(ev.steps - ev.skipped_steps + 1,
                                                          ev.steps + 1)
        if isinstance(ev, (protocol.Step, protocol.Load)):
            key = ev.step & 0xFFFFFF  # a LOAD carries the low 24 bits of the step number
            pair = self._halves.setdefault(key, [None, None])
            pair[0 if isinstance(ev, protocol.Step) else 1] = ev
            if pair[0] is not None and pair[1] is not None:
                del self._halves[key]
                step, load = pair
                if load.step != step.step:
                    load = dataclasses.replace(load, step=step.step)
                self._write(protocol.event_row(step, load), t, load.strike_corrected)

    def _write(self, row: tuple, t: float, strike_corrected: bool = False) -> None:
        self._device_steps = max(self._device_steps, row[0])
        if self._step_offset:
            row = (row[0] + self._step_offset,) + tuple(row[1:])
        step = row[0]
        known_missing = step in self.steps.missing or (
            self.steps.highest is not None and step < self.steps.highest)
        if not self.steps.add(step):
            self.stats.replays += 1
            return
        assert self.writer is not None
        try:
            self.writer.write(row, t, strike_corrected)
        except OSError as exc:
            raise CaptureError(f"{describe(exc, self.writer.path)}; the {self.writer.rows} "
                               "steps logged before are kept") from None
        self.stats.steps += 1
        if row[6]:
            self.stats.cadence_sum += 120000.0 / row[6]
            self.stats.cadence_strides += 1
        if known_missing:
            self.stats.backfilled += 1
        else:
            self.stats.last_stance_ms = row[4]

    def _reply(self, reply: protocol.Reply) -> None:
        if reply.op == protocol.OP_BACKFILL:
            self._backfill_pending = False
            if reply.data.get("wide") and reply.error in (protocol.ERR_OK, protocol.ERR_PARTIAL):
                # the replay follows this reply in order, from first on: unwrap its
                # packets there, however far behind the head (a day is far more
                # than the 2**15 events 16-bit numbers can tell apart)
                self.unwrap.last = reply.data["first_seq"] - 1
                self._replay_end = reply.data["first_seq"] + reply.data["count"]
            elif "first_seq" in reply.data:
                self._replay_end = self._unwrap_near(reply.data["first_seq"]) + reply.data["count"]
        if reply.op == protocol.OP_GET_JOURNAL:
            self._journal_reply(reply)
            return
        if reply.op != protocol.OP_BACKFILL:
            if not reply.ok:
                self.log(f"command 0x{reply.op:02x} refused: {reply.message}")
            return
        if reply.error == protocol.ERR_PARTIAL and "first_seq" in reply.data:
            # the insole no longer holds anything older than first_seq
            if reply.data.get("wide"):
                first = reply.data["first_seq"]
            else:
                first = self._unwrap_near(reply.data["first_seq"])
            gone = {s for s in self.packets.missing if s < first}
            self.given_up |= gone
            self.packets.missing -= gone
            if gone:
                self.log(f"{len(gone)} events are no longer held by the insole")
        elif not reply.ok:
            self.log(f"backfill refused: {reply.message}")

    def _journal_reply(self, reply: protocol.Reply) -> None:
        if not reply.ok or "dropped_days" not in reply.data:
            return
        if self._head is None:
            self._anchor(reply.data["head"])
        dropped = reply.data["dropped_days"]
        if dropped > self.journal_dropped:
            self.log(f"the insole's journal dropped {dropped} day(s) of its oldest events "
                     "to stay within its flash")
            self.journal_dropped = dropped

    async def _ask_journal(self, timeout: float = 3.0) -> dict | None:
        """GET_JOURNAL: the insole's head and what it holds; None from firmware without
        it (or when no answer comes)."""
        fut = asyncio.get_running_loop().create_future()
        self._journal_wait = fut
        try:
            await self.link.write(protocol.UUID_CONTROL, protocol.cmd_get_journal())
            data = await asyncio.wait_for(fut, timeout)
        except (LinkError, asyncio.TimeoutError):
            return None
        finally:
            self._journal_wait = None
        with contextlib.suppress(protocol.ProtocolError):
            reply = protocol.decode_reply(data)
            if reply.ok and "head" in reply.data:
                return reply.data
        return None

    def _anchor(self, head: int) -> None:
        """From the insole's head on, packet numbers are its own 29-bit ones (BACKFILL
        names them whole). Packets seen before were numbered from the first one's low
        16 bits: renumber them by the multiple of 2**16 that makes them the insole's."""
        self._head = head
        packets = self.packets
        if packets.highest is None:
            packets.start_after(head - 1)  # every later event belongs in the log
            self.unwrap.last = head - 1
            return
        h = packets.highest
        by = (head - 1 - ((head - 1 - h) & 0xFFFF)) - h
        if by:
            packets.shift(by)
            self.given_up = {n + by for n in self.given_up}
            if self.unwrap.last is not None:
                self.unwrap.last += by

    def _follow_head(self, head: int) -> None:
        """A reconnect: the unwrapper follows the insole's head, however far it moved
        while the link was down, and what was made meanwhile is missing."""
        self._head = head
        if self.packets.highest is None:
            self.packets.start_after(head - 1)
        elif head - 1 > self.packets.highest:
            self.packets.expect_up_to(head - 1)
        if self.unwrap.last is None or head - 1 > self.unwrap.last:
            self.unwrap.last = head - 1

    def _unwrap_near(self, seq16: int) -> int:
        ref = self.packets.highest or 0
        delta = (seq16 - ref) & 0xFFFF
        return ref + (delta - 0x10000 if delta >= 0x8000 else delta)

    async def _request_backfill(self, from_seq: int) -> None:
        self._backfill_asked_at = self.clock()
        self._backfill_pending = True
        if self._head is not None:
            cmd = protocol.cmd_backfill_wide(from_seq)  # reaches the whole journal
        else:
            cmd = protocol.cmd_backfill(from_seq)
        try:
            await self.link.write(protocol.UUID_CONTROL, cmd)
        except LinkError as exc:
            self.log(f"backfill request failed: {exc}")

    def _wanted(self, fresh_link: bool = False) -> int | None:
        """First packet to ask for: a gap; or, on a new link (which only receives what is
        made after it connected) or when the insole has more steps than the log, the
        packet after the last one seen."""
        first = self.packets.first_missing()
        if first is not None:
            return first
        behind = self.status is not None and self.steps.behind(
            self.status.steps + self._step_offset)
        if fresh_link or behind:
            return (self.packets.highest + 1) if self.packets.highest is not None else 0
        return None

    async def _maybe_backfill(self, force: bool = False) -> None:
        if not (self._secured and self._connected.is_set()):
            return
        now = self.clock()
        if not force:
            if now - self._backfill_asked_at < self.backfill_wait:
                return
            if self._backfill_pending and now - self._backfill_asked_at < 10 * self.backfill_wait:
                return  # its answer waits behind the notifications on the link
            first = self.packets.first_missing()
            if (self._replay_end is not None and first is not None and first < self._replay_end
                    and now - self._last_new < self.backfill_wait):
                return  # the replay asked for is still coming: asking again restarts it
        wanted = self._wanted(fresh_link=force)
        if wanted is None:
            return
        self.stats.state = "backfilling"
        await self._request_backfill(wanted)

    # --- connection lifecycle

    async def _setup(self) -> None:
        self.stats.state = "connecting"
        self._generation += 1
        self.link.set_disconnected_callback(self._on_disconnect)
        await self.link.connect()
        self._connected.set()
        self.stats.state = "pairing"
        self._secured = True
        pairing_error = ""
        try:
            await self.link.secure()
        except LinkError as exc:
            self._secured = False
            pairing_error = str(exc)
            said = pairing_error if pairing_error.startswith("pairing failed") else (
                f"pairing failed ({exc})")
            self.log(f"{said}; lost steps cannot be recovered")
        try:
            status = protocol.decode_status(await self.link.read(protocol.UUID_STATUS))
        except LinkError:
            if pairing_error:
                # an insole that shares nothing without its bond: retrying cannot help
                raise CaptureError(f"{pairing_error} (the insole shares its steps only "
                                   "with a bonded central)") from None
            raise
        if self._uptime >= 0 and (status.uptime_s < self._uptime
                                  or status.steps < self._device_steps):
            self._restarted(status)
        self._uptime = status.uptime_s
        self.status = status
        self._note_faults(status)
        if self.writer is None:
            try:  # the full version string, where the insole has Device Information
                firmware = (await self.link.read(FIRMWARE_REVISION_UUID)).decode("ascii")
            except (LinkError, UnicodeDecodeError):
                firmware = ""
            self._open_files(status, firmware)
        if self.steps.highest is not None:
            # made while the link was down
            self.steps.expect_up_to(status.steps + self._step_offset)
        else:
            self.steps.start_after(status.steps)  # every later step belongs in the log
        if self._secured:
            await self.link.subscribe(protocol.UUID_CONTROL, self._on_control)
            if self._head is not None:
                # a reconnect: follow the head before any packet arrives (the insole
                # may have made more than 2**15 events while the link was down)
                held = await self._ask_journal()
                if held is not None:
                    self._follow_head(held["head"])
            else:
                # the reply is taken when it comes (a board paused before its first
                # sample answers only once it runs)
                with contextlib.suppress(LinkError):
                    await self.link.write(protocol.UUID_CONTROL, protocol.cmd_get_journal())
        await self.link.subscribe(protocol.UUID_STEP_EVENT, self._on_step)
        await self.link.subscribe(protocol.UUID_STATUS, self._on_status)
        self.stats.state = "connected"
        await self._maybe_backfill(force=True)

    def _restarted(self, status: protocol.Status) -> None:
        """The insole rebooted. With its journal its numbers carry on (a boot START
        names the few it skipped) and nothing needs renumbering. Without one (older
        firmware, or a journal it could not open) its sequence and step numbers start
        again from 0 and its ring is empty: later steps are logged after the ones
        already logged."""
        self.restarts += 1
        if status.steps > 0 and status.steps >= self._device_steps and not self._step_offset:
            self.log("insole restarted; its step numbers carry on")
            self._restarts_unseen += 1  # its boot START, when it comes, is this one
            return
        self._head = None
        self._step_offset = self.steps.highest or 0
        self._device_steps = 0
        self.unwrap = protocol.SeqUnwrapper()
        self.packets = SeqTracker()
        self._halves.clear()
        self.log(f"insole restarted; its steps are logged from step {self._step_offset + 1}")

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, capture, reconnect on loss, until `stop` is set; then close files."""
        try:
            while not stop.is_set():
                try:
                    await self._setup()
                    self.backoff.reset()
                except (LinkError, protocol.ProtocolError) as exc:
                    self._connected.clear()
                    with contextlib.suppress(LinkError):
                        await self.link.disconnect()
                    delay = self.backoff.next()
                    self.stats.state = f"retry in {delay:.1f} s"
                    self.log(f"connect failed: {exc}")
                    await _wait(stop, delay)
                    continue
                await self._pump(stop)
                if not stop.is_set():
                    self.stats.reconnects += 1
                    delay = self.backoff.next()
                    self.stats.state = f"link lost; retry in {delay:.1f} s"
                    await _wait(stop, delay)
        except CaptureError as exc:
            self.stats.error = str(exc)
            self.stats.state = "failed"
            raise
        finally:
            await self._finish()

    async def _pump(self, stop: asyncio.Event) -> None:
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            while True:
                get = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({get, stop_task}, timeout=self.backfill_wait,
                                             return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    kind, data, t = get.result()
                    if kind == "disconnected":
                        if data != self._generation:
                            continue
                        self.stats.state = "link lost"
                        return
                    self._handle(kind, data, t)
                else:
                    get.cancel()
                if stop_task in done:
                    return
                if self.stats.state == "backfilling" and self._wanted() is None:
                    self.stats.state = "connected"
                await self._maybe_backfill()
        finally:
            stop_task.cancel()

    async def drain(self, timeout: float, quiet: float = 0.3) -> None:
        """At the end: (re)connect if need be, read the step total, ask for anything
        missing, and wait until replays have stopped arriving; at most `timeout` s
        without a new packet (a long backfill goes on as long as it makes progress)."""
        deadline = self.clock() + timeout
        seen = len(self.packets.seen)
        while self.clock() < deadline:
            if len(self.packets.seen) != seen:
                seen = len(self.packets.seen)
                deadline = self.clock() + timeout
            if not self._connected.is_set() or self.stats.state not in (
                    "connected", "backfilling"):
                await asyncio.sleep(0.05)  # the run loop is reconnecting
                continue
            busy = (not self._queue.empty() or self._backfill_pending
                    or self.clock() - self._last_rx < quiet)
            if busy:
                await asyncio.sleep(0.05)  # let the pump log what is arriving
                continue
            try:
                self.status = protocol.decode_status(await self.link.read(protocol.UUID_STATUS))
            except (LinkError, protocol.ProtocolError):
                await asyncio.sleep(0.05)
                continue
            if self.steps.highest is not None:
                self.steps.expect_up_to(self.status.steps + self._step_offset)
            if self._wanted() is None or not self._secured:
                return
            await self._maybe_backfill()
            await asyncio.sleep(0.1)

    async def _finish(self) -> None:
        while not self._queue.empty():
            kind, data, t = self._queue.get_nowait()
            if kind != "disconnected" and self.writer is not None and not self.stats.error:
                self._handle(kind, data, t)
        with contextlib.suppress(LinkError, asyncio.TimeoutError):
            await asyncio.wait_for(self.link.disconnect(), 5)
        self._connected.clear()
        self.close()
        if self.stats.state != "failed":
            self.stats.state = "done"

    # --- reporting

    def progress(self, width: int | None = None) -> str:
        """The live line; with ``width``, the most detailed form that fits."""
        s = self.stats
        cad = s.cadence()
        cad_txt = f"{cad:5.1f}" if math.isfinite(cad) else "  -  "
        gap = f"  missing {len(self.steps.missing)}" if self.steps.missing else ""
        faults = self.sensor_faults_now()
        sensor = f"  SENSOR {faults}" if faults else ""
        full = (f"{self.label:>7}: {s.steps:5d} steps  cadence {cad_txt} steps/min  "
                f"last stance {s.last_stance_ms:4d} ms  [{s.state}]{gap}{sensor}")
        if width is None:
            return full
        lost = f" -{len(self.steps.missing)}" if self.steps.missing else ""
        bad = f" !{faults}" if faults else ""  # a channel that cannot be trusted shows
        return liveline.fit([
            full,
            f"{self.label:>5}: {s.steps:4d} steps  {cad_txt}/min  stance "
            f"{s.last_stance_ms:4d} ms  [{s.state}]{lost}{bad}",
            f"{self.label[:1].upper()} {s.steps:4d} st {cad_txt}/min [{s.state}]{lost}{bad}",
            f"{self.label[:1].upper()} {s.steps} [{s.state}]{lost}{' !SENSOR' if faults else ''}",
        ], width)

    def summary(self) -> str:
        s = self.stats
        where = f" -> {self.writer.path}" if self.writer else ""
        lines = [f"{self.label}: {s.steps} steps logged{where}"]
        if s.error:
            lines.append(f"  error: {s.error}")
        if self.faults_seen:
            lines.append(f"  sensor faults reported: {', '.join(self.faults_seen)}"
                         " (steps timed by those channels are less certain)")
            lines.extend(f"  {hint}" for hint in protocol.fault_hints(self.faults_seen))
        if s.reconnects:
            lines.append(f"  reconnects: {s.reconnects}")
        if s.backfilled:
            lines.append(f"  recovered by backfill: {s.backfilled}")
        if self.restarts and self._step_offset:
            lines.append(f"  insole restarted {self.restarts} time(s); steps renumbered after")
        elif self.restarts:
            lines.append(f"  insole restarted {self.restarts} time(s); its numbers carried on"
                         + (f" ({self.steps_skipped} step numbers skipped at restarts hold "
                            "no step the insole kept)" if self.steps_skipped else ""))
        if self.journal_dropped:
            lines.append(f"  the insole's journal dropped {self.journal_dropped} day(s) "
                         "of its oldest events")
        if self.steps.missing:
            lines.append(f"  NOT recovered: {len(self.steps.missing)} steps "
                         f"(step {seq_ranges(self.steps.missing)})")
        elif s.steps:
            lines.append("  no step missing")
        if s.bad_packets:
            lines.append(f"  undecodable packets: {s.bad_packets}")
        return "\n".join(lines)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class Progress:
    """A live line per insole: rewritten in place on a terminal, printed every few seconds
    otherwise (logs, CI)."""

    def __init__(self, sessions: list[InsoleSession], stream=None, interval: float = 0.5,
                 plain_interval: float = 5.0):
        self.sessions = sessions
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else plain_interval
        self._drawn = 0
        self._last: list[str] = []

    def draw(self, final: bool = False) -> None:
        lines = []
        for s in self.sessions:
            lines.extend(s.log_lines)
            s.log_lines.clear()
        if self.tty:
            width = liveline.terminal_width() - 1  # a full row would wrap on some terminals
            status = [s.progress(width) for s in self.sessions]
            self.stream.write(liveline.redraw(self._drawn, lines, status))
            self._drawn = len(status)
        else:
            status = [s.progress() for s in self.sessions]
            out = lines + (status if (status != self._last or final) else [])
            self.stream.write("".join(x + "\n" for x in out))
            self._last = status
        self.stream.flush()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.draw()
            await _wait(stop, self.interval)


async def capture(
    sessions: list[InsoleSession],
    stop: asyncio.Event,
    progress: Progress | None = None,
    until: Awaitable | None = None,
    drain_s: float = 3.0,
) -> None:
    """Run sessions until `stop` is set or `until` completes; then drain and close.

    If `until` fails (e.g. a virtual insole died), the sessions are closed and its
    exception is raised."""
    tasks = [asyncio.ensure_future(s.run(stop)) for s in sessions]
    prog = asyncio.ensure_future(progress.run(stop)) if progress else None
    watch = None
    if until is not None:

        async def _until():
            try:
                await until
                await asyncio.gather(*(s.drain(drain_s) for s in sessions))
            finally:
                stop.set()

        watch = asyncio.ensure_future(_until())
    try:
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if watch is not None:
            if not watch.done():
                watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        if prog is not None:
            await asyncio.gather(prog, return_exceptions=True)
        if progress is not None:
            progress.draw(final=True)
    if watch is not None and not watch.cancelled() and watch.exception() is not None:
        raise watch.exception()
