"""The unix socket the board's shims connect to (``VBOARD_SOCK``, the other end is
boards/virtual/_vboard.py): frames from the board (u16 length, u8 type, i64 trace µs,
payload), frames to it (u16 length, u8 type, payload), and requests it answers in
the order they were sent."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import Awaitable, Callable


class BoardLink:
    """One board's socket.

    on_frame(kind, trace_us, payload): awaited for each frame, one at a time.
    on_fault(text): a frame handler raised; the text goes with the firmware's output.
    alive(): whether the board can still answer a request.
    """

    def __init__(self, on_frame: Callable[[int, int, bytes], Awaitable[None]],
                 on_fault: Callable[[str], None], alive: Callable[[], bool]):
        self.on_frame = on_frame
        self.on_fault = on_fault
        self.alive = alive
        self._server = None
        self._writer: asyncio.StreamWriter | None = None
        # answers of the board, in the order it gives them
        self.secret_replies: collections.deque[asyncio.Future] = collections.deque()
        self.read_replies: collections.deque[asyncio.Future] = collections.deque()
        self.sync_replies: collections.deque[asyncio.Future] = collections.deque()

    async def listen(self, path: str) -> None:
        self._server = await asyncio.start_unix_server(self._on_client, path=path)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        if self._writer is not None:
            writer.close()
            return
        self._writer = writer
        try:
            while True:
                head = await reader.readexactly(2)
                (length,) = struct.unpack("<H", head)
                body = await reader.readexactly(length)
                (trace_us,) = struct.unpack_from("<q", body, 1)
                await self.on_frame(body[0], trace_us, body[9:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # a bridge fault: shown with the firmware's output
            self.on_fault(f"\nbridge error: {exc!r}\n")
            writer.close()
            raise

    def send(self, kind: int, payload: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        self._writer.write(struct.pack("<HB", len(payload) + 1, kind) + payload)

    @staticmethod
    def answer(waiting: collections.deque, value) -> None:
        # a request that timed out keeps its place, so later answers stay matched
        if waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(value)

    async def ask(self, waiting: collections.deque, kind: int, payload: bytes,
                  timeout: float):
        """Send a request the board answers in order; its answer, or None."""
        if self._writer is None or not self.alive():
            return None
        fut = asyncio.get_running_loop().create_future()
        waiting.append(fut)
        self.send(kind, payload)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
