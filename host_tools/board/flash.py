"""Put a build on a board with mpremote, copying only what changed.

``flash`` compares ``build/<board>/manifest.json`` with SHA-256 hashes computed on
the board itself, then in one mpremote session:

- copies the files whose hash differs (a second flash copies nothing and says so);
- removes files that the previous flash installed and this build no longer has
  (the previous list is kept on the board in ``.insole_manifest.json``), and a
  ``name.py`` that would shadow a freshly installed ``name.mpy``;
- never writes or removes the files the firmware keeps its state in (the settings in
  ``insole.json``: side, name, sample rate, stride length; the BLE bonds; the build
  lists them in its manifest) or any file it did not install itself;
- checks the hashes again, then resets the board and waits for the firmware's
  boot banner (``insole VERSION board=... side=... rate=... name=...``, see
  docs/PROTOCOL.md) and prints the passkey line that follows it (``passkey
  NNNNNN``: the six digits a phone or computer enters to bond, docs/SECURITY.md).
  Without a reset the passkey is read from the board's ``insole.json``.

Resets: ``hard`` (default) runs ``machine.reset()``; ``soft`` sends Ctrl-D to the
REPL (soft reboot: boot.py and main.py run again, the radio is not power-cycled);
``none`` leaves the board at its REPL. The MicroPython unix port (a pty "device"
in the tests) has neither reset, so it needs ``--reset none``.

A board whose firmware armed its watchdog keeps that watchdog running after
mpremote stops the program; on an ESP32 the flash feeds it between files.

``console`` prints what the board writes on its serial port without sending
anything, so the running firmware is not interrupted.

    python -m host_tools.board.flash flash --port /dev/ttyUSB0 --board esp32_devkitc
    python -m host_tools.board.flash console --port /dev/ttyUSB0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from host_tools.board.build import (
    DEVICE_MANIFEST,
    MPY_ARCH_CODES,
    ROOT,
    BuildError,
    load_manifest,
    sha256_file,
)
from host_tools.common.argcheck import seconds
from host_tools.common.safeio import describe

PROBE_MARK = "INSOLE-PROBE "
BANNER_PREFIX = "insole "
PASSKEY_PREFIX = "passkey "  # the line after the banner (firmware/app.py passkey_line)
PASSKEY_WAIT_S = 3.0
BAUD = 115200
MPREMOTE_TIMEOUT_S = 300

# Runs on the board: hash the named files, read the board's manifest and say which
# port and .mpy version this is, as one JSON line.
_PROBE = """\
import sys, os, json, hashlib, binascii
if sys.platform == 'esp32' and %(wdt_ms)d:
    %(feed)s
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    d = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(m[:n])
    f.close()
    return binascii.hexlify(d.digest()).decode()
def _isdir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False
try:
    _m = json.load(open(%(manifest)r))
    _me = ''
except OSError:
    _m, _me = None, 'missing'
except ValueError:
    _m, _me = None, 'corrupt'
_n = set(%(names)r)
if isinstance(_m, dict) and isinstance(_m.get('files'), dict):
    _n.update(_m['files'])
else:
    _m, _me = None, _me or 'corrupt'
print(%(mark)r + json.dumps({
    'platform': sys.platform,
    'machine': getattr(sys.implementation, '_machine', ''),
    'version': '.'.join(str(v) for v in sys.implementation.version[:3]),
    'mpy': getattr(sys.implementation, '_mpy', 0),
    'manifest': _m, 'manifest_error': _me,
    'hashes': dict((p, _h(p)) for p in _n),
    'dirs': dict((p, _isdir(p)) for p in %(dirs)r),
}))
"""

# Feeds a watchdog the firmware armed (or arms one with the firmware's own timeout,
# which the reset at the end clears). A port that refuses a second WDT() is left alone.
_FEED = "try:\n import machine\n machine.WDT(timeout=%d).feed()\nexcept Exception:\n pass"


class FlashError(Exception):
    """The flash cannot go on; the message says why and what to do."""


@dataclass
class Probe:
    platform: str
    machine: str
    version: str
    mpy: int
    manifest: dict | None
    manifest_error: str
    hashes: dict[str, str | None]
    dirs: dict[str, bool] = field(default_factory=dict)

    @property
    def mpy_text(self) -> str:
        return f"{self.mpy & 0xFF}.{(self.mpy >> 8) & 3}"

    @property
    def arch_code(self) -> int:
        return (self.mpy >> 10) & 0x3F


@dataclass
class Plan:
    copy: list[str]
    remove: list[str]  # installed by an earlier flash, gone from this build
    shadowed: list[str]  # name.py that would be imported instead of this build's name.mpy
    mkdirs: list[str]
    kept: list[str]  # preserved files present on the board


def _mpremote_argv(port: str, commands: list[list[str]]) -> list[str]:
    argv = [sys.executable, "-m", "mpremote", "connect", port, "resume"]
    for i, cmd in enumerate(commands):
        if i:
            argv.append("+")
        argv += cmd
    return argv


def mpremote(port: str, commands: list[list[str]], timeout: float = MPREMOTE_TIMEOUT_S) -> str:
    """Run mpremote commands in one session on ``port``; return stdout."""
    argv = _mpremote_argv(port, commands)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError(f"mpremote on {port} gave no answer within {timeout:.0f} s") from None
    if res.returncode != 0:
        detail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-6:]
        raise FlashError(f"mpremote on {port} failed:\n  " + "\n  ".join(detail))
    return res.stdout


def probe(port: str, names: list[str], dirs: list[str], wdt_ms: int = 0) -> Probe:
    """Hash ``names`` (and every file in the board's manifest) on the board."""
    feed = "exec(%r)" % (_FEED % wdt_ms)
    script = _PROBE % {
        "wdt_ms": wdt_ms,
        "feed": feed,
        "manifest": DEVICE_MANIFEST,
        "names": sorted(names),
        "dirs": sorted(dirs),
        "mark": PROBE_MARK,
    }
    out = mpremote(port, [["exec", script]])
    for line in out.splitlines():
        if line.startswith(PROBE_MARK):
            return Probe(**json.loads(line[len(PROBE_MARK) :]))
    raise FlashError(f"the board on {port} did not answer the probe; it printed:\n{out[-800:]}")


def check_compatible(manifest: dict, dev: Probe) -> None:
    """Refuse a build whose .mpy files this board's MicroPython cannot import."""
    want = manifest["mpy_version"]
    major = want.split(".")[0]
    release = manifest["micropython"]
    if not dev.mpy:
        raise FlashError(f"the board runs MicroPython {dev.version} without .mpy support")
    if str(dev.mpy & 0xFF) != major:
        raise FlashError(
            f"the board runs MicroPython {dev.version} (.mpy v{dev.mpy_text}); this build "
            f"needs .mpy v{want}: install MicroPython {release} (see README)"
        )
    native = manifest.get("native_arch")
    if native:
        if dev.mpy_text != want:
            raise FlashError(
                f"the board runs MicroPython {dev.version} (.mpy v{dev.mpy_text}); the native "
                f"code in this build needs exactly v{want}: install MicroPython {release}"
            )
        if dev.arch_code != MPY_ARCH_CODES.get(native):
            raise FlashError(
                f"this build's native code is for {native}, but the board on the port is "
                f"{dev.machine or dev.platform}: build for the right BOARD"
            )


def make_plan(manifest: dict, dev: Probe) -> Plan:
    files: dict[str, str] = manifest["files"]
    preserve = set(manifest.get("preserve", ()))
    clash = sorted(preserve.intersection(files))
    if clash:
        raise FlashError(f"the build would overwrite the board's settings file(s) {clash}")
    copy = sorted(f for f, h in files.items() if dev.hashes.get(f) != h)
    remove = []
    old_files = (dev.manifest or {}).get("files", {})
    for f in sorted(old_files):
        if f not in files and f not in preserve and f != DEVICE_MANIFEST and dev.hashes.get(f):
            remove.append(f)
    shadowed = []
    for f in sorted(files):
        if f.endswith(".mpy"):
            shadow = f[:-4] + ".py"
            if shadow not in preserve and dev.hashes.get(shadow) and shadow not in remove:
                shadowed.append(shadow)
    mkdirs = sorted((d for d, present in dev.dirs.items() if not present), key=len)
    mkdirs = [d for d in mkdirs if any(f.startswith(d + "/") for f in copy)]
    kept = sorted(p for p in preserve if dev.hashes.get(p))
    return Plan(copy, remove, shadowed, mkdirs, kept)


def _parent_dirs(paths) -> list[str]:
    out = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return sorted(out)


def _probe_names(manifest: dict) -> list[str]:
    files = list(manifest["files"])
    shadows = [f[:-4] + ".py" for f in files if f.endswith(".mpy")]
    return sorted(set(files) | set(shadows) | set(manifest.get("preserve", ())))


def flash(
    port: str,
    build_dir: Path,
    reset: str = "hard",
    banner_prefix: str = BANNER_PREFIX,
    banner_timeout: float = 30.0,
    force: bool = False,
    dry_run: bool = False,
    log=print,
) -> dict:
    """Flash ``build_dir`` onto the board on ``port``; return what was done."""
    manifest = load_manifest(build_dir)
    files: dict[str, str] = manifest["files"]
    for f, h in files.items():
        local = build_dir / f
        if not local.exists():
            raise FlashError(f"{local} is missing: run `make build BOARD={manifest['board']}`")
        if sha256_file(local) != h:
            raise FlashError(f"{local} changed since the build: run `make build` again")
    if port.startswith("/") and not Path(port).exists():
        raise FlashError(
            f"{port} does not exist: is the board plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)"
        )
    names = _probe_names(manifest)
    dirs = _parent_dirs(files)
    wdt_ms = int(manifest.get("wdt_timeout_ms") or 0)
    dev = probe(port, names, dirs, wdt_ms)
    log(
        f"flash: {port}: MicroPython {dev.version} ({dev.machine or dev.platform}), "
        f".mpy v{dev.mpy_text}; build {manifest['board']} for MicroPython "
        f"{manifest['micropython']}"
    )
    if reset != "none" and dev.platform == "linux":
        raise FlashError(
            "the board is the MicroPython unix port: it has no reset, so flash it "
            "with --reset none (RESET=none)"
        )
    if force:
        try:
            check_compatible(manifest, dev)
        except FlashError as exc:
            log(f"warning (--force): {exc}")
    else:
        check_compatible(manifest, dev)
    if dev.manifest_error == "corrupt":
        log(f"warning: the board's {DEVICE_MANIFEST} is unreadable: old files stay in place")
    plan = make_plan(manifest, dev)
    before_kept = {p: dev.hashes[p] for p in plan.kept}

    removed = plan.remove + plan.shadowed
    result = {"copied": plan.copy, "removed": removed, "kept": plan.kept, "banner": None}
    if dry_run:
        log(f"would copy {len(plan.copy)}: {' '.join(plan.copy) or '-'}")
        log(f"would remove {len(removed)}: {' '.join(removed) or '-'}")
        return result
    up_to_date = not plan.copy and not removed and (dev.manifest or {}).get("files") == files
    if up_to_date:
        log(f"up to date: nothing copied ({len(files)} files match the build)")
    else:
        _apply(port, build_dir, manifest, plan, feed=dev.platform == "esp32", log=log)
        after = probe(port, names, dirs, wdt_ms)
        bad = sorted(f for f, h in files.items() if after.hashes.get(f) != h)
        if bad:
            raise FlashError(f"after copying, these files do not match the build: {bad}")
        left = sorted(f for f in removed if after.hashes.get(f))
        if left:
            raise FlashError(f"these old files could not be removed: {left}")
        changed = sorted(p for p, h in before_kept.items() if after.hashes.get(p) != h)
        if changed:
            raise FlashError(f"the board's settings file(s) {changed} changed during the flash")
        log(f"verified: {len(files)} files on the board match the build")
    for p in plan.kept:
        log(f"kept {p} (the board's own state) untouched")
    if reset == "none" and dev.platform == "esp32" and wdt_ms:
        log(f"note: a running watchdog resets the board within {wdt_ms} ms (--reset none)")
    if reset != "none":
        banner, passkey = reset_and_read(port, reset, banner_prefix, banner_timeout, log)
        result["banner"] = banner
        if "board=" in banner and f"board={manifest['board_name']} " not in banner:
            log(f"warning: the firmware reports another board than {manifest['board_name']!r}")
    else:
        passkey = read_passkey(port)
    result["passkey"] = passkey
    tell_passkey(passkey, log)
    return result


def _apply(port: str, build_dir: Path, manifest: dict, plan: Plan, feed: bool, log) -> None:
    wdt = int(manifest.get("wdt_timeout_ms") or 0)
    feed_cmd = ["exec", _FEED % wdt] if feed and wdt else None
    cmds: list[list[str]] = [["fs", "mkdir", ":" + d] for d in plan.mkdirs]
    size = 0
    for f in plan.copy:
        if feed_cmd:
            cmds.append(feed_cmd)
        cmds.append(["fs", "cp", "-f", str(build_dir / f), ":" + f])
        size += (build_dir / f).stat().st_size
    for f in plan.remove + plan.shadowed:
        cmds.append(["fs", "rm", ":" + f])
    record = {k: manifest[k] for k in ("board", "micropython", "mpy_version", "files")}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / DEVICE_MANIFEST
        try:
            rec.write_text(json.dumps(record, sort_keys=True))
        except OSError as exc:
            raise FlashError(f"cannot write the flash record: {describe(exc)}") from None
        # Written last: until then the board's old record still names the old files.
        cmds.append(["fs", "cp", "-f", str(rec), ":" + DEVICE_MANIFEST])
        if plan.copy:
            log(f"copying {len(plan.copy)} file(s), {size} bytes: {' '.join(plan.copy)}")
        if plan.remove:
            names = " ".join(plan.remove)
            log(f"removing {len(plan.remove)} file(s) of the previous build: {names}")
        for f in plan.shadowed:
            log(f"removing {f}: MicroPython would import it instead of {f[:-3]}.mpy")
        if not plan.copy and not plan.remove and not plan.shadowed:
            log(f"nothing copied; recording the build in the board's {DEVICE_MANIFEST}")
        try:
            mpremote(port, cmds)
        except FlashError as exc:
            raise FlashError(
                f"{exc}\nthe flash stopped part-way: run it again (files already on the "
                "board are not copied twice; the settings were not touched)"
            ) from None


def _open_serial(port: str):
    import serial

    return serial.Serial(port, BAUD, timeout=0.1)


def wait_for_banner(
    port: str, prefix: str = BANNER_PREFIX, timeout: float = 30.0, ser=None, log=print
) -> str:
    """Read lines from ``port`` until one starts with ``prefix``; return that line.

    A board with native USB drops off the bus while it resets: the port is reopened
    until ``timeout``.
    """
    return wait_for_banner_and(port, prefix, timeout, ser=ser)[0]


def wait_for_banner_and(
    port: str, prefix: str = BANNER_PREFIX, timeout: float = 30.0, ser=None,
    follow: str | None = None, follow_s: float = PASSKEY_WAIT_S,
) -> tuple[str, str | None]:
    """wait_for_banner(), then up to follow_s more for a line starting with
    ``follow``: (banner, that line or None)."""
    import serial

    deadline = time.monotonic() + timeout
    seen: list[str] = []
    buf = b""
    banner = None
    while time.monotonic() < deadline:
        if ser is None:
            try:
                ser = _open_serial(port)
            except (serial.SerialException, OSError):
                time.sleep(0.2)
                continue
        try:
            chunk = ser.read(256)
        except (serial.SerialException, OSError):
            ser.close()
            ser = None
            continue
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").strip("\r\x00")
            if banner is None and line.startswith(prefix):
                banner = line
                if follow is None:
                    if ser is not None:
                        ser.close()
                    return banner, None
                deadline = time.monotonic() + follow_s
            elif banner is not None and line.startswith(follow or "\0"):
                if ser is not None:
                    ser.close()
                return banner, line
            elif line:
                seen.append(line)
    if ser is not None:
        ser.close()
    if banner is not None:
        return banner, None
    tail = "\n  ".join(seen[-8:]) or "(nothing)"
    raise FlashError(
        f"no boot banner (a line starting with {prefix!r}) from {port} within "
        f"{timeout:.0f} s; last lines:\n  {tail}"
    )


def reset_and_wait(port: str, mode: str, prefix: str, timeout: float, log=print) -> str:
    """Reset the board (``hard`` or ``soft``) and return its boot banner line."""
    return reset_and_read(port, mode, prefix, timeout, log)[0]


def reset_and_read(port: str, mode: str, prefix: str, timeout: float,
                   log=print) -> tuple[str, int | None]:
    """reset_and_wait(), and the passkey the firmware prints after the banner."""
    ser = _open_serial(port)
    # stop whatever runs (Ctrl-C), leave a raw REPL if one is left over (Ctrl-B)
    ser.write(b"\r\x03\x03\x02")
    time.sleep(0.3)
    ser.reset_input_buffer()
    if mode == "soft":
        ser.write(b"\x04")
    else:
        ser.write(b"import machine\r\nmachine.reset()\r\n")
    log(f"reset ({mode}); waiting for the boot banner")
    line, after = wait_for_banner_and(port, prefix, timeout, ser=ser, follow=PASSKEY_PREFIX)
    log(f"boot banner: {line}")
    return line, _passkey_of(after)


def _passkey_of(line: str | None) -> int | None:
    if line is None:
        return None
    digits = line[len(PASSKEY_PREFIX):].split(" ", 1)[0]
    return int(digits) if len(digits) == 6 and digits.isdigit() else None


def read_passkey(port: str) -> int | None:
    """The passkey in the board's insole.json (None: the firmware has not made one
    yet, at its first boot, or the file is unreadable)."""
    try:
        text = mpremote(port, [["fs", "cat", ":insole.json"]], timeout=60)
        value = json.loads(text[text.find("{"):]).get("passkey")
    except (FlashError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and 0 <= value <= 999999 else None


def tell_passkey(passkey: int | None, log=print) -> None:
    if passkey is None:
        log("passkey: not made yet (the firmware makes it at its first boot and prints "
            "it on the serial console: python -m host_tools.board.flash console --port PORT)")
    else:
        log(f"passkey {passkey:06d}: enter it to bond a phone or computer "
            "(`insole pair`); write it on the insole's label")


def console(port: str, seconds: float | None = None, out=sys.stdout) -> int:
    """Copy the board's serial output to ``out`` until Ctrl-C (or ``seconds``)."""
    import serial

    end = None if seconds is None else time.monotonic() + seconds
    ser = None
    try:
        while end is None or time.monotonic() < end:
            if ser is None:
                try:
                    ser = _open_serial(port)
                except (serial.SerialException, OSError) as exc:
                    if end is not None and time.monotonic() >= end:
                        break
                    print(f"console: waiting for {port} ({exc})", file=sys.stderr)
                    time.sleep(1.0)
                    continue
            try:
                data = ser.read(256)
            except (serial.SerialException, OSError):
                ser.close()
                ser = None
                continue
            if data:
                out.write(data.decode("utf-8", "replace"))
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if ser is not None:
            ser.close()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument(
        "--board",
        default="esp32_devkitc",
        help="board whose build to flash (default: esp32_devkitc)",
    )
    parser.add_argument(
        "--build-dir", type=Path, default=None, help="build to flash (default: build/BOARD)"
    )
    parser.add_argument(
        "--reset",
        choices=("hard", "soft", "none"),
        default="hard",
        help="how to restart the board afterwards (default: hard)",
    )
    parser.add_argument(
        "--banner-timeout", type=seconds, default=30.0,
        help="seconds to wait for the boot banner"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="flash even when the board's MicroPython cannot import this build's native code",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would change, do nothing")


def run(args: argparse.Namespace) -> int:
    build_dir = args.build_dir or ROOT / "build" / args.board
    flash(
        args.port,
        Path(build_dir),
        reset=args.reset,
        banner_timeout=args.banner_timeout,
        force=args.force,
        dry_run=args.dry_run,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m host_tools.board.flash",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add_arguments(sub.add_parser("flash", help="copy the changed files of a build to a board"))
    p = sub.add_parser("console", help="print the board's serial output (Ctrl-C to stop)")
    p.add_argument("--port", required=True)
    p.add_argument("--seconds", type=seconds, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    try:
        if args.action == "console":
            return console(args.port, args.seconds)
        return run(args)
    except (FlashError, BuildError) as exc:
        print(f"flash: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the local side: a temporary file, the build directory
        print(f"flash: error: {describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
