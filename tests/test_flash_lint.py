"""The board-side type check (part of make lint) finds real mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def typecheck(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "host_tools.board.typecheck", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_wrong_machine_and_board_calls_are_reported(tmp_path):
    bad = tmp_path / "bad_edge.py"
    bad.write_text(
        "import board\n"
        "from machine import ADC, Pin\n\n\n"
        "def sample():\n"
        "    adc = ADC(Pin(36), atten=ADC.ATTN_11DB)\n"
        "    return adc.read_u17() + board.battery_volts()\n"
    )
    res = typecheck(bad)
    assert res.returncode == 1
    assert '"ADC" has no attribute "read_u17"' in res.stdout
    assert 'has no attribute "battery_volts"' in res.stdout


def test_correct_board_side_code_passes(tmp_path):
    good = tmp_path / "good_edge.py"
    good.write_text(
        "import time\n\n"
        "import board\n"
        "from micropython import const\n\n"
        "_PERIOD_MS = const(10)\n\n\n"
        "def sample():\n"
        "    heel, arch, fore = board.fsr_adcs()\n"
        "    deadline = time.ticks_add(time.ticks_ms(), _PERIOD_MS)\n"
        "    total = heel.read_u16() + arch.read_u16() + fore.read_u16()\n"
        "    return total, board.battery_mv(), time.ticks_diff(deadline, time.ticks_ms())\n"
    )
    res = typecheck(good)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success" in res.stdout


def test_boards_pass_the_check():
    boards = sorted((ROOT / "boards").glob("esp32*.py"))
    # three boards and the module they share
    assert [b.name for b in boards] == [
        "esp32_common.py", "esp32_devkitc.py", "esp32c3.py", "esp32s3.py"
    ]
    res = typecheck(*boards)
    assert res.returncode == 0, res.stdout + res.stderr
