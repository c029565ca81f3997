"""Type-check firmware/ and boards/ against the MicroPython ESP32 stubs (``make lint``).

mypy gets the stub files of the installed ``micropython-esp32-stubs`` and
``micropython-stdlib-stubs`` distributions (gathered into ``build/typings/``) as its
whole world: the stdlib stubs replace CPython's typeshed and the port stubs provide
``machine``, ``bluetooth``, ``micropython`` and friends. The firmware's ``import board``
resolves to ``boards/esp32_devkitc.py``, so the board API the firmware uses is
checked against a real board module. Settings live in ``mypy.ini``.

    python -m host_tools.board.typecheck            # check firmware/ and boards/*.py
    python -m host_tools.board.typecheck FILE...    # check some files with the same setup
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB_DISTRIBUTIONS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")
TYPE_BOARD = "esp32_devkitc.py"  # the board module `import board` is checked against


def gather_stubs(dest: Path) -> Path:
    """Copy the stub files of STUB_DISTRIBUTIONS into a fresh ``dest``; return it."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in STUB_DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"typecheck: {name} is not installed (make venv)") from None
        for f in dist.files or ():
            if f.suffix != ".pyi" and f.name != "VERSIONS":
                continue
            target = dest / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(str(dist.locate_file(f))), target)
    if not (dest / "stdlib" / "VERSIONS").exists():
        raise SystemExit("typecheck: micropython-stdlib-stubs has no stdlib/VERSIONS")
    shutil.copyfile(ROOT / "boards" / TYPE_BOARD, dest / "board.py")
    return dest


def default_targets() -> list[str]:
    firmware = sorted(p for p in (ROOT / "firmware").rglob("*.py") if "__pycache__" not in p.parts)
    boards = sorted((ROOT / "boards").glob("*.py"))  # not boards/virtual/
    return [str(p.relative_to(ROOT)) for p in firmware + boards]


def main(argv: list[str] | None = None) -> int:
    targets = list(sys.argv[1:] if argv is None else argv) or default_targets()
    typings = gather_stubs(ROOT / "build" / "typings")
    env = dict(os.environ)
    env["MYPYPATH"] = os.pathsep.join([str(typings), str(ROOT / "firmware")])
    cmd = [
        sys.executable, "-m", "mypy",
        "--config-file", str(ROOT / "mypy.ini"),
        "--custom-typeshed-dir", str(typings),
        *targets,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
