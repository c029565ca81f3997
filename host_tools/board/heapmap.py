"""Read the heap block map that ``micropython.mem_info(1)`` prints.

MicroPython's gc_dump_alloc_table (py/gc.c) prints one character per heap block,
64 to a line, each line led by the byte offset of its first block: '.' a free
block, '=' a tail block, 'm' a marked one, and for a head block a letter for the
object's type (T tuple, L list, D dict, S str/bytes, A bytearray/array, F float,
B bytecode function, M module, h anything else). Runs of two or more free lines
are abbreviated as "(N lines all free)". An object is its head block and the tail
blocks that follow it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^([0-9a-f]{8}): (.*)$")
_FREE_RUN = re.compile(r"^\s*\((\d+) lines all free\)$")
_BLOCKS_PER_LINE = 64
_HEADS = set("TLDSAFBMh")


@dataclass(frozen=True)
class Block:
    offset: int  # bytes from the start of the heap
    nbytes: int
    kind: str  # the head block's letter


def parse(text: str, block_bytes: int | None = None) -> list[Block]:
    """Every allocated object in one printed map, in heap order.

    block_bytes: bytes per heap block; read from the line offsets when not given.
    """
    rows: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            rows.append((int(m.group(1), 16), m.group(2).rstrip("\n")))
        elif not _FREE_RUN.match(line) and rows and line.strip() and set(line.strip()) <= (
                _HEADS | {".", "=", "m"}):
            raise ValueError(f"unexpected block map line: {line!r}")
    if not rows:
        raise ValueError("no block map in the text")
    if block_bytes is None:
        block_bytes = _block_bytes(rows)
    objects: list[Block] = []
    start = -1
    kind = ""
    count = 0
    prev_end = None
    for off, chars in rows:
        first = off // block_bytes
        if prev_end is not None and first != prev_end and start >= 0:
            # free lines were skipped: an object cannot run across them
            objects.append(Block(start * block_bytes, count * block_bytes, kind))
            start = -1
        for i, c in enumerate(chars):
            b = first + i
            if c == "=":
                if start < 0:
                    raise ValueError(f"tail block without a head at block {b}")
                count += 1
                continue
            if start >= 0:
                objects.append(Block(start * block_bytes, count * block_bytes, kind))
                start = -1
            if c in _HEADS or c == "m":
                start, kind, count = b, c, 1
            elif c != ".":
                raise ValueError(f"unknown block character {c!r}")
        prev_end = first + len(chars)
    if start >= 0:
        objects.append(Block(start * block_bytes, count * block_bytes, kind))
    return objects


def _block_bytes(rows: list[tuple[int, str]]) -> int:
    # the smallest step between two full lines: skipped free lines only lengthen it
    steps = [(b - a) // _BLOCKS_PER_LINE for (a, ca), (b, _) in zip(rows, rows[1:], strict=False)
             if len(ca) == _BLOCKS_PER_LINE and b > a and (b - a) % _BLOCKS_PER_LINE == 0]
    if not steps:
        raise ValueError("cannot tell the block size from the map")
    return min(steps)


def new_objects(before: list[Block], after: list[Block]) -> list[Block]:
    """Objects in `after` that were not in `before` (same place and size)."""
    seen = {(b.offset, b.nbytes) for b in before}
    return [b for b in after if (b.offset, b.nbytes) not in seen]


def maps(output: str) -> dict[str, str]:
    """The maps a bench script printed between "@@MAP name" and "@@END" lines."""
    out: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith("@@MAP "):
            name = line[6:].strip()
            lines = []
        elif line.startswith("@@END") and name is not None:
            out[name] = "\n".join(lines)
            name = None
        elif name is not None:
            lines.append(line)
    return out
