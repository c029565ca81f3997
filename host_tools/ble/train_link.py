"""An exercise session over BLE: select the mode with SET_MODE on the Control
characteristic, hand every exercise Step Event to the caller, put the insole back into
walk mode at the end.

Works on any ``host_tools.ble.capture.Link`` (bleak adapter, bumble transport, virtual
insole). The Control characteristic needs an encrypted link, so the link is paired
first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from host_tools.ble import protocol
from host_tools.ble.capture import Link, LinkError
from host_tools.ble.control_link import REPLY_TIMEOUT_S, NoReply, command
from host_tools.training import exercises

EXERCISE_KINDS = range(0x10, 0x20)


class TrainError(Exception):
    """The session could not run (the message says why, for the user)."""


async def _command(link: Link, replies: asyncio.Queue, data: bytes) -> protocol.Reply:
    try:
        return await command(link, replies, data, REPLY_TIMEOUT_S)
    except NoReply as exc:
        raise TrainError(str(exc)) from None


async def run_session(link: Link, mode: int, cfg: tuple[int, int, int],
                      on_event: Callable[[dict], None], stop: asyncio.Event,
                      on_ready: Callable[[], None] | None = None,
                      on_linked: Callable[[], None] | None = None) -> None:
    """Connect, select ``mode``, deliver decoded exercise events until ``stop`` is set.
    ``on_linked`` runs once connected and subscribed, ``on_ready`` once the insole has
    accepted the mode."""
    replies: asyncio.Queue = asyncio.Queue()
    bad: list[str] = []

    def on_step(data: bytes, _t: float) -> None:
        # events after the stop (target reached, Ctrl-C) belong to no session
        if not stop.is_set() and len(data) >= 2 and data[1] in EXERCISE_KINDS:
            try:
                on_event(exercises.decode(bytes(data)))
            except ValueError as exc:  # reported once the session ends
                bad.append(str(exc))

    try:
        await link.connect()
        await link.secure()
    except LinkError as exc:
        raise TrainError(f"cannot connect and pair with the insole: {exc}") from None
    try:
        await link.subscribe(protocol.UUID_CONTROL, lambda d, t: replies.put_nowait(bytes(d)))
        await link.subscribe(protocol.UUID_STEP_EVENT, on_step)
        if on_linked is not None:
            on_linked()
        reply = await _command(link, replies, exercises.set_mode_command(mode, *cfg))
        if not reply.ok:
            raise TrainError(f"the insole refused mode {exercises.MODE_NAMES[mode]} "
                             f"({reply.message}): its firmware may not have exercise modes")
        if on_ready is not None:
            on_ready()
        await stop.wait()
        with contextlib.suppress(TrainError, LinkError):
            await _command(link, replies, exercises.set_mode_command(0))
    except LinkError as exc:
        raise TrainError(f"lost the insole: {exc}") from None
    finally:
        with contextlib.suppress(LinkError, OSError):
            await link.disconnect()
    if bad:
        raise TrainError(f"{len(bad)} undecodable exercise events, first: {bad[0]}")
