"""The bench's model of MicroPython's interned-name tables (host_tools/cli/bench.py),
checked against the tables the real micropython binary makes."""

from __future__ import annotations

import subprocess

import pytest

from host_tools.cli import bench
from host_tools.gait import engine

# the 64-bit unix port: 8-byte pointer + 2-byte hash + 1-byte length per entry, a
# 48-byte header, 32-byte heap blocks
UNIX64 = {"entry": 11, "header": 48, "block": 32}


def test_tables_double_from_twenty_entries():
    assert bench.name_table_bytes(0) == []
    assert bench.name_table_bytes(20) == [176]  # 24 + 7 * 20 = 164, in 16-byte blocks
    assert bench.name_table_bytes(21) == [176, 304]
    assert bench.name_table_bytes(620) == [176, 304, 592, 1152, 2272]  # 20 + ... + 320
    assert bench.name_table_bytes(621) == [176, 304, 592, 1152, 2272, 4512]


def test_snapshots_are_read_from_qstr_info_lines():
    out = ("noise\n@@QSTR boot\nqstr pool: n_pool=3, n_qstr=50, n_str_data_bytes=400, "
           "n_total_bytes=1500\n@@QSTR cut\n")
    assert bench.name_snapshots(out) == {
        "boot": {"names": 50, "tables": 3, "table_bytes": 1100, "text_bytes": 400}}


@pytest.mark.parametrize("extra", [0, 100, 700])
def test_the_model_matches_the_unix_port(extra, tmp_path):
    # names made at run time by compiling assignments: each v<i> is a new interned name
    code = ("import micropython as u\n"
            f"exec(';'.join('v%d=0' % i for i in range({extra})))\n"
            "print('@@QSTR now'); u.qstr_info()\n")
    out = subprocess.run([engine.micropython_binary(), "-c", code], capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout
    now = bench.name_snapshots(out)["now"]
    tables = bench.name_table_bytes(now["names"], **UNIX64)
    assert len(tables) == now["tables"]
    assert sum(tables) == now["table_bytes"]
