"""Run code in the real micropython binary (the unix port) from tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from host_tools.gait.engine import FIRMWARE, micropython_binary

ROOT = Path(__file__).resolve().parent.parent


def run_micropython(
    code: str,
    path: list[str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 120,
) -> str:
    """Run ``code`` with ``path`` (default: firmware/) on MICROPYPATH; return stdout.

    Raises AssertionError with micropython's stderr if it exits non-zero.
    """
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([*(path or [str(FIRMWARE)]), ".frozen"])
    proc = subprocess.run(
        [micropython_binary(), "-c", code],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
    )
    out = proc.stdout.decode()
    if proc.returncode != 0:
        raise AssertionError(
            f"micropython exited {proc.returncode}:\n{out[-2000:]}\n{proc.stderr.decode()[-2000:]}"
        )
    return out
