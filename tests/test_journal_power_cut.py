"""Power cuts on the virtual board: the firmware process is killed (SIGKILL) at random
moments of a walk, three times, and started again on the same flash directory, each time
walking on with the next part of the walk. At the end a central bonds and backfills from
sequence number 0 with the 29-bit BACKFILL. What each boot journaled comes back: at most
the batch not yet written when the power went is lost (fewer than 12 steps, made in the
last seconds before the cut); sequence and step numbers carry on across every reboot, and
each boot's START names the numbers it skipped. About 20 s.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT / "firmware"), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import gait  # noqa: E402
import long_walk  # noqa: E402

from host_tools.ble import protocol as HP  # noqa: E402

KILLS = 3
SEGMENT_S = 90  # trace seconds per boot
BATCH_S = 7.0  # a batch is written 5 s after its first event; + detection and clock lag


def _rows(trace: np.ndarray, base: int) -> list[tuple]:
    det = gait.GaitDetector(100)
    out = []
    for h, a, f in trace.tolist():
        if det.feed(h, a, f) & gait.EV_STEP:
            row = det.summary()
            out.append((row[0] + base,) + tuple(row[1:]))
    return out


async def _walk_and_cut(segment, flash: Path, radio, rng: random.Random) -> float:
    """One boot on `flash` that is killed mid-walk; the trace time it reached."""
    from host_tools.vboard.insole import VirtualInsole

    vi = VirtualInsole(segment, side="left", speed=0, radio=radio, paused=True,
                              flash_dir=flash)
    await vi.start()
    try:
        await vi.run_until(rng.uniform(20.0, SEGMENT_S - 10.0))
        vi.resume()  # and cut it a few milliseconds later, wherever the firmware is
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        vi.proc.kill()
        await vi.proc.wait()
        return vi.trace_time
    finally:
        await vi.stop()


async def _last_boot_and_backfill(segment, flash: Path, radio):
    from host_tools.vboard.central import Central
    from host_tools.vboard.insole import VirtualInsole

    vi = VirtualInsole(segment, side="left", speed=0, radio=radio, paused=True,
                              flash_dir=flash)
    await vi.start()
    try:
        central = Central(await radio.central())
        await central.connect(vi)
        await central.pair()
        got = await central.subscribe(HP.UUID_STEP_EVENT)
        replies = await central.subscribe(HP.UUID_CONTROL)
        await vi.run_to_end()
        await central.write(HP.UUID_CONTROL, HP.cmd_backfill_wide(0))
        quiet = 0
        seen = -1
        while quiet < 10:  # until nothing new has come for a second of trace time
            await vi.run_for(0.1)
            quiet = quiet + 1 if len(got) == seen else 0
            seen = len(got)
        boot_lines = [line for _, line in vi.log if " jrn " in line]
        return [d for _, d in got], [HP.decode_reply(d) for _, d in replies], boot_lines
    finally:
        await vi.stop()
        await radio.close()


def test_killed_at_random_moments_the_journal_keeps_all_but_the_last_batch(tmp_path):
    from host_tools.vboard.radio import VirtualRadio

    rng = random.Random(2024)
    walk = long_walk.walk(SEGMENT_S * (KILLS + 1), seed=5)
    segments = [walk[i * SEGMENT_S * 100:(i + 1) * SEGMENT_S * 100] for i in range(KILLS + 1)]
    flash = tmp_path / "flash"

    async def main():
        radio = VirtualRadio()
        cuts = [await _walk_and_cut(segments[i], flash, radio, rng) for i in range(KILLS)]
        return cuts, await _last_boot_and_backfill(segments[-1], flash, radio)

    cuts, (packets, replies, boot_lines) = asyncio.run(main())
    assert replies[0].ok and replies[0].data["first_seq"] == 0 and replies[0].data["wide"]
    events = {}
    for d in packets:
        ev = HP.decode_event(d)
        events.setdefault(ev.seq, ev)  # live and replayed: the same packet
    starts = [ev for _, ev in sorted(events.items()) if isinstance(ev, HP.Start)]
    assert len(starts) == KILLS + 1
    # numbers carry on: each boot starts past everything the one before made
    assert starts[0].seq == 0 and (starts[0].skipped_seq, starts[0].skipped_steps) == (0, 0)
    for before, boot in zip(starts, starts[1:], strict=False):
        assert (boot.skipped_seq, boot.skipped_steps) == (48, 12)
        made = [s for s in events if before.seq <= s < boot.seq]
        assert boot.seq - boot.skipped_seq >= max(made) + 1 - 48  # at most a batch lost
        assert boot.steps >= before.steps
    joiner = HP.StepJoiner()
    for ev in events.values():
        joiner.add(ev)
    got_rows = joiner.rows()
    for i, start in enumerate(starts):
        end = starts[i + 1].steps - starts[i + 1].skipped_steps if i < KILLS else 1 << 29
        mine = [r for r in got_rows if start.steps < r[0] <= end]
        want = _rows(segments[i], start.steps)
        if i == KILLS:
            assert mine == want and len(want) > 60  # the last boot ran to the end
            continue
        # a prefix of the boot's walk, missing at most the steps of the unwritten batch
        assert mine == want[:len(mine)], i
        before_cut = [r for r in want if r[2] < (cuts[i] - BATCH_S) * 1000]
        assert len(before_cut) <= len(mine) <= len(before_cut) + 12, (i, cuts[i])
    # the journal opened each time; a write the kill tore is found and left alone
    assert len([x for x in boot_lines if " parts " in x]) == 1  # the last boot's line
