"""make flash against a pty "board": the real mpremote and the MicroPython unix port.

The device is ``micropython -i`` behind a pty bridge (tests/ptybridge.py) in a temporary
directory that stands in for the board's filesystem. The ESP32 build's native code cannot
run there, so these tests flash with ``--force`` (files are only copied and hashed, never
imported) and ``--reset none`` (the unix port has no reset); test_flash_boot.py runs a
flashed tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from flashdev import ROOT, PtyDevice, run_flash  # noqa: E402

from host_tools.board.build import DEVICE_MANIFEST, build  # noqa: E402


def firmware_config_path() -> str:
    """The settings file the firmware itself writes (app.CONFIG_PATH)."""
    m = re.search(r'^CONFIG_PATH = "([^"]+)"', (ROOT / "firmware" / "app.py").read_text(), re.M)
    assert m, "firmware/app.py no longer defines CONFIG_PATH"
    return m.group(1)


CONFIG = firmware_config_path()
NO_HW = ("--reset", "none", "--force")


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The current esp32_devkitc build and an older one that had one more module."""
    base = tmp_path_factory.mktemp("builds")
    current = build("esp32_devkitc", base / "current", log=lambda *_: None)
    old_fw = base / "old_firmware"
    shutil.copytree(ROOT / "firmware", old_fw, ignore=shutil.ignore_patterns("__pycache__"))
    (old_fw / "legacy_filter.py").write_text("# a module the next release dropped\nK = 3\n")
    # and one module whose content differs, as between two releases
    gait = old_fw / "gait.py"
    gait.write_text(gait.read_text() + "\n_OLD_RELEASE = 1\n")
    old = build("esp32_devkitc", base / "old", firmware_dir=old_fw, log=lambda *_: None)
    return {"current": current, "old": old}


@pytest.fixture
def device(tmp_path):
    with PtyDevice(tmp_path / "device") as dev:
        yield dev


def manifest_of(build_dir: Path) -> dict:
    return json.loads((build_dir / "manifest.json").read_text())


def mtimes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def flash_ok(port, build_dir, *extra):
    res = run_flash(port, build_dir, *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_first_flash_puts_the_build_on_the_board(builds, device):
    out = flash_ok(device.port, builds["current"], *NO_HW)
    files = manifest_of(builds["current"])["files"]
    on_board = device.files()
    assert set(on_board) == set(files) | {DEVICE_MANIFEST}
    for name, digest in files.items():
        assert on_board[name] == digest, name
    assert f"copying {len(files)} file(s)" in out
    assert "verified" in out
    record = json.loads((device.root / DEVICE_MANIFEST).read_text())
    assert record["files"] == files
    # the .mpy modules are compiled, boot.py/main.py (when present) stay source
    assert "gait.mpy" in files and "gait.py" not in files
    assert "board.py" in files


def test_second_flash_copies_nothing(builds, device):
    flash_ok(device.port, builds["current"], *NO_HW)
    before = mtimes(device.root)
    out = flash_ok(device.port, builds["current"], *NO_HW)
    assert "up to date: nothing copied" in out
    assert "copying" not in out
    assert mtimes(device.root) == before


def test_config_written_on_the_board_survives_reflash(builds, device):
    preserve = manifest_of(builds["current"])["preserve"]
    assert CONFIG in preserve
    flash_ok(device.port, builds["old"], *NO_HW)
    # the board writes its settings and its BLE bonds (and one half-done atomic save)
    state = {name: json.dumps({"file": name, "side": "R", "stride_cm": 142}) for name in preserve}
    script = "".join(f"f = open({n!r}, 'w')\nf.write({t!r})\nf.close()\n" for n, t in state.items())
    res = device.mpremote("exec", script)
    assert res.returncode == 0, res.stderr
    for name, text in state.items():
        assert (device.root / name).read_text() == text
    before = {name: (device.root / name).stat().st_mtime_ns for name in state}
    out = flash_ok(device.port, builds["current"], *NO_HW)
    assert "copying" in out  # gait.mpy differs between the two builds
    for name, text in state.items():
        assert (device.root / name).read_text() == text
        assert (device.root / name).stat().st_mtime_ns == before[name]
        assert f"kept {name}" in out


def test_stale_files_of_an_older_build_are_removed(builds, device):
    flash_ok(device.port, builds["old"], *NO_HW)
    assert (device.root / "legacy_filter.mpy").exists()
    (device.root / "notes.txt").write_text("the user's own file, in no manifest\n")
    out = flash_ok(device.port, builds["current"], *NO_HW)
    assert not (device.root / "legacy_filter.mpy").exists()
    assert "legacy_filter.mpy" in out
    assert (device.root / "notes.txt").read_text() == "the user's own file, in no manifest\n"
    files = manifest_of(builds["current"])["files"]
    assert set(device.files()) == set(files) | {DEVICE_MANIFEST, "notes.txt"}


def test_source_module_that_would_shadow_an_mpy_is_removed(builds, device):
    (device.root / "gait.py").write_text("raise ImportError('an old source copy')\n")
    out = flash_ok(device.port, builds["current"], *NO_HW)
    assert not (device.root / "gait.py").exists()
    assert "gait.py" in out


def test_file_changed_on_the_board_is_copied_again(builds, device):
    flash_ok(device.port, builds["current"], *NO_HW)
    (device.root / "board.py").write_text("# edited by hand\n")
    out = flash_ok(device.port, builds["current"], *NO_HW)
    assert "copying 1 file(s)" in out and "board.py" in out
    digest = hashlib.sha256((device.root / "board.py").read_bytes()).hexdigest()
    assert digest == manifest_of(builds["current"])["files"]["board.py"]


def test_unix_port_cannot_be_reset_and_nothing_is_copied(builds, device):
    res = run_flash(device.port, builds["current"], "--force")  # default --reset hard
    assert res.returncode == 2
    assert "--reset none" in res.stderr
    assert device.files() == {}


def test_native_code_for_another_cpu_is_refused(builds, device):
    res = run_flash(device.port, builds["current"], "--reset", "none")
    assert res.returncode == 2
    assert "xtensawin" in res.stderr and "BOARD" in res.stderr
    assert device.files() == {}


def test_build_changed_after_make_build_is_refused(builds, device, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(builds["current"], copy)
    (copy / "board.py").write_text("# changed after the build\n")
    res = run_flash(device.port, copy, *NO_HW)
    assert res.returncode == 2
    assert "board.py changed since the build" in res.stderr


def test_make_flash_runs_the_flash_module_with_port_and_board():
    res = subprocess.run(
        ["make", "-n", "flash", "PORT=/dev/ttyACM7", "BOARD=esp32c3", "RESET=soft"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert res.returncode == 0, res.stderr
    assert "host_tools.board.build --board esp32c3" in res.stdout
    assert ("host_tools.board.flash flash --port /dev/ttyACM7 --board esp32c3 --reset soft"
            in res.stdout)


def test_plan_never_touches_settings_or_unknown_files():
    from host_tools.board.flash import FlashError, Probe, make_plan

    manifest = {
        "files": {"board.py": "a1", "gait.mpy": "b2", "app.mpy": "c3"},
        "preserve": ["insole.json", "insole.json.tmp"],
    }
    dev = Probe(
        platform="esp32",
        machine="ESP32 module",
        version="1.29.0",
        mpy=0x2B06,
        manifest={"files": {"board.py": "a1", "old.mpy": "d4", "insole.json": "e5"}},
        manifest_error="",
        hashes={
            "board.py": "a1",  # unchanged
            "gait.mpy": "zz",  # changed
            "app.mpy": None,  # new
            "app.py": "f6",  # shadows app.mpy
            "old.mpy": "d4",  # from the previous build
            "insole.json": "e5",  # settings, even if an old record lists them
            "insole.json.tmp": None,
        },
    )
    plan = make_plan(manifest, dev)
    assert plan.copy == ["app.mpy", "gait.mpy"]
    assert plan.remove == ["old.mpy"]
    assert plan.shadowed == ["app.py"]
    assert plan.kept == ["insole.json"]
    manifest["preserve"].append("board.py")
    with pytest.raises(FlashError, match="settings"):
        make_plan(manifest, dev)


def test_insole_build_and_flash_commands(device, tmp_path, capsys):
    from host_tools import cli

    assert cli.main(["build", "--board", "esp32c3", "--out", str(tmp_path / "b")]) == 0
    build_dir = tmp_path / "b" / "esp32c3"
    args = ["flash", "--port", device.port, "--build-dir", str(build_dir), *NO_HW]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "copying" in out and "up to date: nothing copied" in out
    files = manifest_of(build_dir)["files"]
    assert {k: v for k, v in device.files().items() if k != DEVICE_MANIFEST} == files
    # bad input is a usage error (exit 2) that names what is wrong
    assert (
        cli.main(["flash", "--port", str(tmp_path / "ttyNONE"), "--build-dir", str(build_dir)]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
