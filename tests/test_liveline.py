"""Live capture lines: fit the terminal, redraw in place, plain when not a terminal."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_insole import FakeInsole, FakeLink  # noqa: E402

from host_tools.ble.capture import InsoleSession, Progress  # noqa: E402
from host_tools.common import liveline  # noqa: E402

ESC = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _sessions(tmp_path, n=2):
    out = []
    for i, side in enumerate(("left", "right")[:n]):
        s = InsoleSession(FakeLink(FakeInsole([])), tmp_path, side=side)
        s.stats.steps = 1234
        s.stats.cadence_sum, s.stats.cadence_strides = 96.1 * 10, 10
        s.stats.last_stance_ms = 723
        s.stats.state = "connected" if i else "link lost; retry in 2.0 s"
        out.append(s)
    return out


def test_every_width_fits(tmp_path, monkeypatch):
    sessions = _sessions(tmp_path)
    for width in (200, 100, 80, 60, 40, 30, 20):
        monkeypatch.setenv("COLUMNS", str(width))
        tty = Tty()
        p = Progress(sessions, tty)
        p.draw()
        p.draw()
        for line in ESC.sub("", tty.getvalue()).replace("\r", "\n").splitlines():
            assert len(line) <= width - 1, (width, line)
        # the second draw climbs exactly over the two lines of the first
        assert tty.getvalue().count("\x1b[2F") == 1
        assert tty.getvalue().count("\x1b[K") == 4


def test_the_most_detailed_form_that_fits(tmp_path):
    left = _sessions(tmp_path, 1)[0]
    assert left.progress(200) == left.progress()
    assert "cadence" in left.progress(200) and "last stance" in left.progress(200)
    medium = left.progress(70)
    assert "96.1/min" in medium and "[link lost; retry in 2.0 s]" in medium
    assert left.progress(50).startswith("L 1234 st  96.1/min [link lost")
    assert left.progress(36) == "L 1234 [link lost; retry in 2.0 s]"
    assert left.progress(20) == "L 1234 [link lost; r"


def test_plain_lines_when_not_a_terminal(tmp_path):
    out = io.StringIO()
    sessions = _sessions(tmp_path)
    p = Progress(sessions, out)
    p.draw()
    p.draw()  # nothing changed: nothing printed again
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.splitlines() == [s.progress() for s in sessions]


def test_redraw_keeps_messages_above_the_block():
    text = liveline.redraw(2, ["left: reconnected"], ["a", "b"])
    assert text == "\x1b[2F\rleft: reconnected\x1b[K\n\ra\x1b[K\n\rb\x1b[K\n"
    assert liveline.fit(["long version", "short"], 6) == "short"
    assert liveline.fit(["long version", "still long"], 4) == "stil"
