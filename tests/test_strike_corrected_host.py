"""The step summary's strike-corrected flag on the host: decoder, capture log, capture."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import gaitsynth  # noqa: E402
from fake_insole import FakeInsole, FakeLink  # noqa: E402

from host_tools.ble import protocol as P  # noqa: E402
from host_tools.ble.capture import Backoff, InsoleSession, Progress, capture  # noqa: E402
from host_tools.ble.steplog import StepLogWriter, read_steplog  # noqa: E402
from host_tools.gait import engine  # noqa: E402

FW = engine.load_firmware_module("protocol")


def _load_packet(pattern, corrected):
    buf = bytearray(20)
    FW.pack_load(buf, 5, 3, pattern, 100, 200, 300, 400, 300, 299, strike_corrected=corrected)
    return bytes(buf)


def test_flag_and_pattern_share_byte_7_without_mixing():
    for pattern in range(4):
        for corrected in (False, True):
            raw = _load_packet(pattern, corrected)
            assert raw[7] == pattern | (0x80 if corrected else 0)
            ev = P.decode_event(raw)
            assert (ev.pattern, ev.strike_corrected) == (pattern, corrected)


def _spike_summaries():
    # the detector's own summaries of a walk with a heel spike before the seventh contact
    w = gaitsynth.Walk(strides_ms=[1100.0] * 12)
    trace = gaitsynth.make(w).astype(np.int64)
    first = int(w.contacts_ms()[6] - 220) // 10
    trace[first : first + 3, 0] += 12000
    gait = engine.load_firmware_module()
    det = gait.GaitDetector(100)
    out = []
    for h, a, f in trace.tolist():
        if det.feed(h, a, f) & gait.EV_STEP:
            out.append((det.summary(), det.strike_corrected))
    return out


class _SpikeInsole(FakeInsole):
    """A FakeInsole whose LOAD packets carry the detector's strike-corrected flag."""

    def __init__(self, flagged):
        super().__init__([s for s, _ in flagged])
        self.corrected = {s[0] for s, corrected in flagged if corrected}


def test_capture_log_carries_the_flag(tmp_path):
    flagged = _spike_summaries()
    assert [s[0] for s, c in flagged if c] == [7]
    insole = _SpikeInsole(flagged)

    async def main():
        session = InsoleSession(FakeLink(insole), tmp_path, backoff=Backoff(0.05, 0.2),
                                backfill_wait=0.1)
        walks = asyncio.gather(insole.walk(0.01, None, 0.3))
        await capture([session], asyncio.Event(), Progress([session], io.StringIO(),
                      plain_interval=0.05), until=walks, drain_s=2.0)

    asyncio.run(main())
    rows, problems = read_steplog(tmp_path / "left.csv")
    assert problems == [] and len(rows) == 12
    assert [r.seq for r in rows if r.strike_corrected] == [7]
    assert rows[6].strike_ms == flagged[6][0][1]
    header = (tmp_path / "left.csv").read_text().splitlines()[0]
    assert header.endswith(",host_time,side,strike_corrected")


def test_logs_from_before_the_flag_still_read(tmp_path):
    summaries = [s for s, _ in _spike_summaries()]
    p = tmp_path / "left.csv"
    with StepLogWriter(p, "left") as w:
        for k, s in enumerate(summaries):
            w.write(s, 1.7e9 + k, strike_corrected=k == 6)
    new_rows, problems = read_steplog(p)
    assert problems == [] and [r.strike_corrected for r in new_rows].count(True) == 1
    # the same log as an older host wrote it: no strike_corrected column at all
    lines = p.read_text().splitlines()
    p.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in lines))
    old_rows, problems = read_steplog(p)
    assert problems == [] and len(old_rows) == len(summaries)
    assert not any(r.strike_corrected for r in old_rows)
    assert [r.event_values() for r in old_rows] == [r.event_values() for r in new_rows]
    # in a current log a row without the flag column is damage, not an old row
    p.write_text("\n".join(lines[:3] + [lines[3].rsplit(",", 1)[0]] + lines[4:]) + "\n")
    rows, problems = read_steplog(p)
    assert len(rows) == len(summaries) - 1 and "expected 17 columns" in str(problems[0])
