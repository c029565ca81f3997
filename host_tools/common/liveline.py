"""Live status lines that fit the terminal.

On a terminal a block of status lines (one per insole) is redrawn in place: the cursor
goes back up over the block, and each line is written from column 0 (``\\r``) and ends
by clearing the rest of the row (``ESC [K``), so a shorter line leaves nothing of the
longer one behind. Every line is cut to the terminal's width less one column: a line
that wrapped would take two rows and the next redraw would climb one row short. Lines
that scroll away (messages) are written above the block. Anywhere else (a file, a pipe,
CI) the lines are plain, one per change.
"""

from __future__ import annotations

import shutil

CLEAR_EOL = "\x1b[K"


def terminal_width(default: int = 80) -> int:
    """Columns of the terminal ($COLUMNS wins, as shutil decides), at least 20."""
    return max(20, shutil.get_terminal_size((default, 24)).columns)


def fit(variants: list[str], width: int) -> str:
    """The first (longest, most detailed) variant that fits ``width`` columns; the
    last one cut to ``width`` when none does."""
    for text in variants:
        if len(text) <= width:
            return text
    return variants[-1][:width]


def up(rows: int) -> str:
    """Cursor up ``rows`` rows, to column 0."""
    return f"\x1b[{rows}F" if rows else "\r"


def redraw(previous_rows: int, messages: list[str], status: list[str]) -> str:
    """Terminal text that replaces a status block of ``previous_rows`` rows with
    ``messages`` (kept) followed by ``status`` (the new block)."""
    out = [up(previous_rows)] if previous_rows else []
    out += [f"\r{line}{CLEAR_EOL}\n" for line in messages + status]
    return "".join(out)
