"""Control commands over a BLE link: write one command, wait for its reply.

The insole answers every Control write with exactly one notification on the same
characteristic (docs/PROTOCOL.md, "Control"); the caller subscribes to Control with
a queue and passes it here. Works on any ``host_tools.ble.capture.Link``.
"""

from __future__ import annotations

import asyncio

from host_tools.ble import protocol
from host_tools.ble.capture import Link

REPLY_TIMEOUT_S = 5.0


class NoReply(Exception):
    """The insole did not answer a command in time (the message says which)."""


async def command(link: Link, replies: asyncio.Queue, data: bytes,
                  timeout: float = REPLY_TIMEOUT_S) -> protocol.Reply:
    """Write one Control command; its reply (replies to other commands are skipped)."""
    await link.write(protocol.UUID_CONTROL, data)
    try:
        while True:
            reply = protocol.decode_reply(await asyncio.wait_for(replies.get(), timeout))
            if reply.op == data[0]:
                return reply
    except asyncio.TimeoutError:
        raise NoReply(f"the insole did not answer command 0x{data[0]:02x} within "
                      f"{timeout:g} s") from None
