"""The virtual board's time and machine shims inside the real micropython binary
(standalone: no host bridge): ESP32 ticks arithmetic and wrap, the trace read by
virtual time, soft timers, the end of the trace, and no allocation on the paths the
firmware's sampling loop uses."""

from __future__ import annotations

import numpy as np
import pytest

from host_tools.vboard.process import SHIMS
from tests.mpy import run_micropython

RATE = 100


@pytest.fixture()
def trace(tmp_path, monkeypatch):
    rows = np.arange(60 * 3, dtype="<u2").reshape(-1, 3) * 7  # row i = (21i, 21i+7, 21i+14)
    path = tmp_path / "t.bin"
    path.write_bytes(rows.tobytes())
    monkeypatch.setenv("VBOARD_TRACE", str(path))
    monkeypatch.setenv("VBOARD_RATE", str(RATE))
    for var in ("VBOARD_SOCK", "VBOARD_TICKS0", "VBOARD_LIMIT", "VBOARD_SPEED"):
        monkeypatch.delenv(var, raising=False)
    return rows


def mpy(code: str) -> list[str]:
    return run_micropython(code, path=[str(SHIMS)]).split()


def test_ticks_wrap_like_an_esp32(trace):
    out = mpy(
        "import time\n"
        "a = time.ticks_us(); m = time.ticks_ms()\n"
        "time.sleep_us(10000001)\n"
        "b = time.ticks_us()\n"
        "print(a, b, time.ticks_diff(b, a), time.ticks_diff(a, b))\n"
        "print(time.ticks_add(2**30 - 1, 1), time.ticks_add(0, -1))\n"
        "time.sleep_ms(5); print(time.ticks_diff(time.ticks_ms(), m))\n"
        "time.sleep(0.25); print(time.ticks_diff(time.ticks_ms(), m))\n"
    )
    a, b, fwd, back = map(int, out[:4])
    assert a == 2**30 - 10_000_000  # boots 10 s before the wrap
    assert b == 1  # wrapped
    assert (fwd, back) == (10_000_001, -10_000_001)
    assert out[4:6] == ["0", str(2**30 - 1)]
    assert out[6:8] == [str(10_000 + 5), str(10_000 + 255)]


def test_adc_reads_the_row_of_the_virtual_time(trace):
    out = mpy(
        "import time, machine, board\n"
        "h, a, f = board.fsr_adcs()\n"
        "time.sleep_ms(3)\n"  # before the first read: trace time starts at the first read
        "print(h.read_u16(), a.read_u16(), f.read_u16())\n"
        "for step in (10000, 4000, 2000, 4000, 490000):\n"
        "    time.sleep_us(step); print(h.read_u16(), board.finished())\n"
        "print(machine.unique_id().hex(), len(machine.unique_id()))\n"
    )
    assert out[:3] == ["0", "7", "14"]
    # 10 ms -> row 1; 14 ms -> row 1 (nearest); 16 ms -> row 2; 20 ms -> row 2; 510 ms -> 51
    assert out[3:13] == ["21", "False", "21", "False", "42", "False", "42", "False",
                         str(51 * 21), "False"]
    assert out[14] == "6"


def test_end_of_trace_stops_a_standalone_board(trace):
    out = run_micropython(
        "import time, board\n"
        "h = board.fsr_adcs()[0]\n"
        "n = 0\n"
        "while not board.finished():\n"  # the firmware's order: check, wait, sample
        "    if n: time.sleep_ms(10)\n"
        "    h.read_u16(); n += 1\n"
        "print('rows', n)\n"
        "time.sleep_ms(10)\n"
        "print('not reached')\n",
        path=[str(SHIMS)],
    )
    assert "rows 60" in out
    assert "vboard: end of trace at 595 ms" in out
    assert "not reached" not in out


def test_soft_timer_fires_at_virtual_times(trace):
    out = mpy(
        "import time, machine\n"
        "t0 = time.ticks_ms(); seen = []\n"
        "tim = machine.Timer(0)\n"
        "tim.init(period=30, mode=machine.Timer.PERIODIC,"
        " callback=lambda t: seen.append(time.ticks_diff(time.ticks_ms(), t0)))\n"
        "time.sleep_ms(100); tim.deinit(); time.sleep_ms(100)\n"
        "print(*seen)\n"
    )
    assert out == ["30", "60", "90"]


def test_sampling_path_allocates_nothing(trace):
    out = mpy(
        "import time, micropython, board\n"
        "def loop(h, a, f):\n"
        "    h.read_u16()\n"
        "    d = time.ticks_add(time.ticks_us(), 10000)\n"
        "    n = 0\n"
        "    micropython.heap_lock()\n"
        "    while n < 20:\n"
        "        time.sleep_us(time.ticks_diff(d, time.ticks_us()))\n"
        "        x = h.read_u16() + a.read_u16() + f.read_u16()\n"
        "        d = time.ticks_add(d, 10000)\n"
        "        n += 1\n"
        "    micropython.heap_unlock()\n"
        "    return x\n"
        "print('ok', loop(*board.fsr_adcs()))\n"
    )
    assert out == ["ok", str(20 * 63 + 21)]
