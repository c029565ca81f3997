"""Boot never fails because of a file on flash, and the bond store trims whole bonds.

The firmware, unchanged, runs under the micropython binary on the virtual board in
standalone mode (no host bridge: it samples a short trace and exits 0 at its end)
with a temporary directory as its flash holding one damaged settings or bond file.
Each kind of damage is its own test: the firmware boots, logs one line about the
file, renames it to *.bad and samples the whole trace. The two stores are also
checked directly, under CPython and under micropython, and the bond store's
trimming against a model of what it must keep.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
SHIMS = ROOT / "boards" / "virtual"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import bonds as fw_bonds  # noqa: E402
import bonds_load as fw_bonds_load  # noqa: E402
import config as fw_config  # noqa: E402
import fw_fakes as F  # noqa: E402

from host_tools.ble.protocol import BANNER_RE  # noqa: E402
from host_tools.gait.engine import micropython_binary  # noqa: E402
from tests.mpy import run_micropython  # noqa: E402

CONFIG = "insole.json"  # app.CONFIG_PATH
BONDS = "insole_bonds.json"  # app.BONDS_PATH
ROWS = 30  # trace rows: 0.3 s at 100 Hz
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

PEER_A = bytes.fromhex("00a0a1a2a3a4a5")  # ble_addr_t: type 0 (public), address
PEER_B = bytes.fromhex("01b0b1b2b3b4f5")
GOOD_BONDS = json.dumps([
    [10, b"irk".hex(), "11" * 16],
    [1, PEER_A.hex(), "22" * 80],
    [2, PEER_A.hex(), "33" * 80],
])
GOOD_CONFIG = json.dumps(dict(fw_config.DEFAULTS, side="R", name="Anna", stride_cm=150,
                              passkey=123456))


# ---- damaged files -------------------------------------------------------------
# A case: files to put on the flash (name -> bytes, or ("dir",), ("link", target),
# ("mode", bytes, mode)), the problem text the log line must hold, and the names
# that must then be found renamed to *.bad.


def _case(name, files, problem, aside, **kw):
    return pytest.param(files, problem, aside, kw, id=name)


CONFIG_CASES = [
    _case("non_utf8", {CONFIG: b'\xff\xfe{"side": "R"}'}, "not UTF-8", [CONFIG]),
    _case("huge", {CONFIG: b'{"side": "R"' + b" " * 200000 + b"}"}, "over 512 bytes", [CONFIG]),
    _case("truncated", {CONFIG: b'{"side": "R", "rate_'}, "not JSON", [CONFIG]),
    _case("empty", {CONFIG: b""}, "not JSON", [CONFIG]),
    _case("deep_nesting", {CONFIG: b"[" * 255 + b"]" * 255}, "not a JSON object", [CONFIG]),
    _case("null", {CONFIG: b"null"}, "not a JSON object", [CONFIG]),
    _case("array", {CONFIG: b'[{"side": "R"}]'}, "not a JSON object", [CONFIG]),
    _case("utf8_bom", {CONFIG: '\ufeff{"side": "R"}'.encode()}, "not JSON", [CONFIG]),
    _case("nul_bytes", {CONFIG: b"\x00" * 64}, "not JSON", [CONFIG]),
    _case("nan", {CONFIG: b'{"side": "R", "rate_hz": NaN}'}, "not JSON", [CONFIG], mpy_only=True),
    _case("directory", {CONFIG: ("dir",)}, "a directory", [CONFIG]),
    _case("directory_tmp", {CONFIG + ".tmp": ("dir",)}, "a directory", [CONFIG + ".tmp"]),
    _case("no_permission", {CONFIG: ("mode", GOOD_CONFIG.encode(), 0)}, "open error 13",
          [CONFIG], strict_modes=True),
    _case("read_error", {CONFIG: ("link", "/proc/self/mem")}, "read error 5", [CONFIG],
          needs="/proc/self/mem"),
    _case("symlink_loop", {CONFIG: ("link", CONFIG)}, "stat error 40", [CONFIG]),
    _case("bad_with_good_tmp", {CONFIG: b"{{", CONFIG + ".tmp": GOOD_CONFIG.encode()},
          "not JSON", [CONFIG], side="R"),
    _case("older_bad_in_the_way", {CONFIG: b"\xc0", CONFIG + ".bad": b"from an older boot"},
          "not UTF-8", [CONFIG]),
    # readable objects with bad fields: each field takes its default, the file stays
    _case("wrong_types", {CONFIG: b'{"side": 1, "name": ["x"], "rate_hz": "100", '
                                  b'"stride_cm": 1.5, "zero": {"a": 1}}'},
          "bad side name rate_hz stride_cm zero", []),
    _case("out_of_range", {CONFIG: b'{"side": "R", "name": "\\ud800", "stride_cm": -1, '
                                   b'"rate_hz": 100000000000000000000000000000000000000, '
                                   b'"zero": [70000, -1, 1e400]}'},
          "bad name rate_hz stride_cm zero", [], side="R"),
]

_LONG = "ab" * (768 + 1)
BOND_CASES = [
    _case("non_utf8", {BONDS: b"[[2, \"00\", \"\xff\"]]"}, "not UTF-8", [BONDS]),
    _case("huge", {BONDS: b"[" + b" " * fw_bonds._FILE_MAX + b"]"},
          f"over {fw_bonds._FILE_MAX} bytes", [BONDS]),
    _case("truncated", {BONDS: GOOD_BONDS[:-9].encode()}, "not JSON", [BONDS]),
    _case("empty", {BONDS: b""}, "not JSON", [BONDS]),
    _case("deep_nesting", {BONDS: b"[" * 7000 + b"]" * 7000}, "(not JSON|not a row)", [BONDS]),
    _case("empty_object_row", {BONDS: b"[{}]"}, "not a row", [BONDS]),
    _case("float_overflow", {BONDS: b'[[1e400, "0001", "02"]]'}, "wrong types", [BONDS]),
    _case("huge_int", {BONDS: b'[[100000000000000000000000000000, "0001", "02"]]'},
          "not a secret", [BONDS]),
    _case("bool_type", {BONDS: b'[[true, "0001", "02"]]'}, "wrong types", [BONDS]),
    _case("short_row", {BONDS: b'[[2, "0001"]]'}, "not a row", [BONDS]),
    _case("not_hex", {BONDS: b'[[2, "zz01", "02"]]'}, "not hex", [BONDS]),
    _case("odd_hex", {BONDS: b'[[2, "001", "02"]]'}, "not hex", [BONDS]),
    _case("non_ascii_hex", {BONDS: '[[2, "\u00e9\u00e9", "02"]]'.encode()}, "not hex", [BONDS]),
    _case("empty_key", {BONDS: b'[[2, "", "02"]]'}, "not a secret", [BONDS]),
    _case("value_too_long", {BONDS: f'[[2, "0001", "{_LONG}"]]'.encode()}, "too long",
          [BONDS]),
    _case("unknown_type", {BONDS: b'[[3, "0001", "02"]]'}, "not a secret", [BONDS]),
    _case("irk_type_other_key", {BONDS: b'[[10, "0001", "02"]]'}, "not a secret", [BONDS]),
    _case("object", {BONDS: b'{"2": ["0001", "02"]}'}, "not a JSON array", [BONDS]),
    _case("null", {BONDS: b"null"}, "not a JSON array", [BONDS]),
    _case("directory", {BONDS: ("dir",)}, "a directory", [BONDS]),
    _case("directory_tmp", {BONDS + ".tmp": ("dir",)}, "a directory", [BONDS + ".tmp"]),
    _case("no_permission", {BONDS: ("mode", GOOD_BONDS.encode(), 0)}, "open error 13",
          [BONDS], strict_modes=True),
    _case("read_error", {BONDS: ("link", "/proc/self/mem")}, "read error 5", [BONDS],
          needs="/proc/self/mem"),
]


def _put(flash: Path, files: dict) -> None:
    for name, spec in files.items():
        path = flash / name
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        elif spec[0] == "dir":
            path.mkdir()
            (path / "inside").write_text("a file in the way")
        elif spec[0] == "link":
            path.symlink_to(spec[1])
        else:
            path.write_bytes(spec[1])
            path.chmod(spec[2])


def _skip_unless_possible(kw: dict) -> None:
    if kw.get("needs") and not os.path.exists(kw["needs"]):
        pytest.skip(f"{kw['needs']} is not there on this system")


def _check_aside(flash: Path, files: dict, aside: list[str], rewritten: bool = False) -> None:
    """Each damaged name is now name.bad, holding what the damaged file held. With
    rewritten, the firmware may have saved a new, valid bond file since."""
    for name in aside:
        bad = flash / (name + ".bad")
        if rewritten and name == BONDS and os.path.lexists(flash / name):
            rows = json.loads((flash / name).read_text())
            assert fw_bonds_load.parse_rows(rows)[1] is None, rows
        elif name == CONFIG and os.path.isfile(flash / name) and rewritten:
            # a boot without a usable config makes a new passkey and saves it
            cfg = json.loads((flash / name).read_text())
            assert cfg["passkey"] is not None and fw_config.valid("passkey", cfg["passkey"])
        else:
            assert not os.path.lexists(flash / name), name
        assert os.path.lexists(bad), sorted(os.listdir(flash))
        spec = files[name]
        if isinstance(spec, bytes):
            assert bad.read_bytes() == spec
        elif spec[0] == "dir":
            assert (bad / "inside").read_text() == "a file in the way"
        elif spec[0] == "link":
            assert os.readlink(bad) == spec[1]
    for name, spec in files.items():
        if name not in aside and not name.endswith(".bad") and isinstance(spec, bytes):
            if (name == CONFIG and b'"passkey"' not in spec
                    and (flash / name).read_bytes() != spec):
                # saved again at the first boot: the fields it had and a new passkey
                cfg = json.loads((flash / name).read_text())
                assert fw_config.valid("passkey", cfg["passkey"]) and cfg["passkey"] is not None
                continue
            assert (flash / name).read_bytes() == spec  # left alone


# ---- booting the firmware ------------------------------------------------------


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "trace.bin"
    path.write_bytes(struct.pack(f"<{3 * ROWS}H", *([3000, 3100, 2900] * ROWS)))
    return path


@pytest.fixture
def flash(tmp_path):
    d = tmp_path / "flash"
    d.mkdir()
    yield d
    for p in d.iterdir():  # let pytest clean up what a test made unreadable
        if not p.is_symlink():
            p.chmod(0o755)


def _without_dac_override():
    # Root reads any file whatever its mode: drop the capabilities that allow it
    # (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set before exec.
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _boot(flash: Path, trace: Path, strict_modes: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBOARD_")}
    env.update(MICROPYPATH=os.pathsep.join([str(SHIMS), str(FIRMWARE)]),
               VBOARD_TRACE=str(trace), VBOARD_RATE="100")
    cmd = [micropython_binary(), str(FIRMWARE / "main.py")]
    if not (strict_modes and IS_ROOT):
        return subprocess.run(cmd, cwd=flash, env=env, capture_output=True, timeout=30)
    try:
        return subprocess.run(cmd, cwd=flash, env=env, capture_output=True, timeout=30,
                              preexec_fn=_without_dac_override)
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot make root obey file modes here: {e}")


def _booted(proc: subprocess.CompletedProcess, side: str = "L") -> list[str]:
    """The log lines (all but the banner) of a boot that sampled the whole trace."""
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    lines = out.splitlines()
    banner = [x for x in lines if x.startswith("insole ")]
    assert len(banner) == 1, out
    m = re.match(BANNER_RE, banner[0])
    assert m and m["side"] == side, banner
    assert any(re.search(rf" run stop samples={ROWS} ", x) for x in lines), out
    return [x for x in lines if x not in banner]


def _tagged(lines: list[str], tag: str) -> list[str]:
    return [x for x in lines if re.match(rf"^\d+\.\d{{3}} {tag} ", x)]


def test_boot_on_good_files_logs_nothing_about_them(flash, trace_file):
    _put(flash, {CONFIG: GOOD_CONFIG.encode(), BONDS: GOOD_BONDS.encode()})
    lines = _booted(_boot(flash, trace_file), side="R")
    assert _tagged(lines, "cfg") == [] and _tagged(lines, "bond") == []
    # nothing set aside or rewritten; the step journal is the only new file
    assert sorted(f for f in os.listdir(flash) if not f.startswith("journal.")) == sorted(
        [CONFIG, BONDS])
    assert (flash / CONFIG).read_text() == GOOD_CONFIG
    assert json.loads((flash / BONDS).read_text()) == json.loads(GOOD_BONDS)  # IRK kept


def test_boot_on_an_interrupted_save_uses_the_complete_tmp(flash, trace_file):
    _put(flash, {CONFIG + ".tmp": GOOD_CONFIG.encode()})
    lines = _booted(_boot(flash, trace_file), side="R")
    assert _tagged(lines, "cfg") == []
    assert (flash / (CONFIG + ".tmp")).read_text() == GOOD_CONFIG
    assert not [n for n in os.listdir(flash) if n.startswith(CONFIG) and n != CONFIG + ".tmp"]


@pytest.mark.parametrize("files, problem, aside, kw", CONFIG_CASES)
def test_boot_survives_a_damaged_config(flash, trace_file, files, problem, aside, kw):
    _skip_unless_possible(kw)
    _put(flash, files)
    lines = _booted(_boot(flash, trace_file, kw.get("strict_modes", False)), kw.get("side", "L"))
    cfg_lines = _tagged(lines, "cfg")
    assert len(cfg_lines) == 1, lines
    assert re.search(problem, cfg_lines[0]) and cfg_lines[0].endswith(", defaults"), cfg_lines
    for name in aside:
        assert f"{name} (" in cfg_lines[0] and f"kept as {name}.bad" in cfg_lines[0]
    assert _tagged(lines, "bond") == []
    _check_aside(flash, files, aside, rewritten=True)


@pytest.mark.parametrize("files, problem, aside, kw", BOND_CASES)
def test_boot_survives_a_damaged_bond_file(flash, trace_file, files, problem, aside, kw):
    _skip_unless_possible(kw)
    _put(flash, files)
    lines = _booted(_boot(flash, trace_file, kw.get("strict_modes", False)))
    bond_lines = _tagged(lines, "bond")
    assert len(bond_lines) == 1, lines
    assert re.search(problem, bond_lines[0]) and bond_lines[0].endswith(", no bonds")
    assert _tagged(lines, "cfg") == []
    _check_aside(flash, files, aside, rewritten=True)
    # the store works on: active(True) found no IRK and stored a new one (load_irk())
    rows = json.loads((flash / BONDS).read_text())
    assert [(t, k) for t, k, _ in rows] == [(10, b"irk".hex())] and len(rows[0][2]) == 32


# ---- the stores directly: CPython and micropython ------------------------------

_LOG = """
lines = []
def log(tag, text=""):
    lines.append(tag + " " + text)
"""

# Runs unchanged in both interpreters: loads each case directory, prints one JSON
# line per case (what load gave, the log lines, the files left).
_LOAD_ALL = _LOG + """
import json, os
from config import ConfigStore
from bonds import Bonds
top = %r
out = {}
for case in sorted(os.listdir(top)):
    os.chdir(top + "/" + case)
    del lines[:]
    if case.startswith("cfg_"):
        got = ConfigStore(%r, log).load()
    else:
        b = Bonds(%r, log)
        got = [b.peers() != [], b.get(10, 0, b"irk") is not None]
    out[case] = [got, list(lines)]
print(json.dumps(out))
"""


def _direct_cases():
    for prefix, cases in (("cfg_", CONFIG_CASES), ("bond_", BOND_CASES)):
        for p in cases:
            files, problem, aside, kw = p.values
            if kw.get("strict_modes") or kw.get("needs") and not os.path.exists(kw["needs"]):
                continue  # root reads what the mode forbids; covered by the boot tests
            yield prefix + p.id, files, problem, aside, kw


def _load_all(top: Path, interpreter: str) -> dict:
    code = _LOAD_ALL % (str(top), CONFIG, BONDS)
    if interpreter == "micropython":
        return json.loads(run_micropython(code).splitlines()[-1])
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    here = os.getcwd()
    try:
        with redirect_stdout(buf):
            exec(compile(code, "<load_all>", "exec"), {"__name__": "load_all"})
    finally:
        os.chdir(here)
    return json.loads(buf.getvalue().splitlines()[-1])


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_stores_load_every_damaged_kind(tmp_path, interpreter):
    # CPython's json reads NaN; the device's does not
    cases = [c for c in _direct_cases() if interpreter == "micropython" or not c[4].get("mpy_only")]
    for name, files, *_ in cases:
        (tmp_path / name).mkdir()
        _put(tmp_path / name, files)
    got = _load_all(tmp_path, interpreter)
    assert sorted(got) == sorted(c[0] for c in cases)
    for name, files, problem, aside, kw in cases:
        value, lines = got[name]
        assert len(lines) == 1, (name, lines)
        assert re.search(problem, lines[0]), (name, lines)
        if name.startswith("cfg_"):
            assert set(value) == set(fw_config.DEFAULTS), name
            assert all(fw_config.valid(k, v) for k, v in value.items()), name
            assert value["side"] == kw.get("side", "L"), name
        else:
            assert value == [False, False], name
        _check_aside(tmp_path / name, files, aside)


def test_config_save_moves_a_directory_in_place_of_the_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    _put(tmp_path, {CONFIG: GOOD_CONFIG.encode(), CONFIG + ".tmp": ("dir",)})
    store = fw_config.ConfigStore(CONFIG, lambda tag, text="": lines.append(text))
    cfg = store.load()
    assert cfg["side"] == "R" and lines == []  # the .tmp is not read while the file is fine
    assert store.save(dict(cfg, side="L"))
    assert json.loads((tmp_path / CONFIG).read_text())["side"] == "L"
    assert (tmp_path / (CONFIG + ".tmp.bad") / "inside").exists()


def test_config_load_never_raises_on_a_failing_file_system():
    class Broken(F.MemFS):
        def stat(self, path):
            raise MemoryError

    lines: list[str] = []
    fs = Broken({CONFIG: GOOD_CONFIG})
    cfg = fw_config.ConfigStore(CONFIG, lambda tag, text="": lines.append(text), fs=fs,
                                opener=fs.open).load()
    assert cfg == fw_config.DEFAULTS
    assert len(lines) == 1 and "stat: MemoryError" in lines[0]


def test_read_state_caps_what_it_reads_even_when_stat_says_less(tmp_path):
    class Shrunk:
        """os, with a stat() that reports every file as 10 bytes long."""

        def stat(self, path):
            st = list(os.stat(path))
            st[6] = 10
            return tuple(st)

    class Endless:
        """A file that never ends (as a device file can): read() without a size
        would take all memory."""

        def read(self, n=-1):
            if n < 0:
                raise MemoryError
            return b" " * n

        def close(self):
            pass

    opened = []

    def opener(path, mode="r"):
        opened.append(path)
        return Endless()

    path = tmp_path / "grown.json"
    path.write_text(json.dumps(list(range(200))))
    assert fw_config.read_state(str(path), 100, list, Shrunk()) == (None, "over 100 bytes")
    assert fw_config.read_state(str(path), 10000, list, Shrunk())[0] == list(range(200))
    assert fw_config.read_state(str(path), 100, list, Shrunk(), opener) == (None, "over 100 bytes")
    assert opened == [str(path)]
    # what stat() already tells apart is never opened
    assert fw_config.read_state(str(path), 100, list, os, opener) == (None, "over 100 bytes")
    assert fw_config.read_state(str(tmp_path), 100, list, os, opener) == (None, "a directory")
    assert opened == [str(path)]
    assert fw_config.read_state(str(tmp_path / "none.json"), 100, list) == (None, None)


# ---- the bond store --------------------------------------------------------------

_KEYS = [bytes([i % 2, 0xA0 + i, 1, 2, 3, 4, 5]) for i in range(7)]


def _store(tmp_path, lines=None):
    out = lines if lines is not None else []
    return fw_bonds.Bonds(str(tmp_path / BONDS), lambda tag, text="": out.append(text))


def test_bonds_round_trip_and_answer_as_the_stack_asks(tmp_path):
    b = _store(tmp_path)
    assert not b.dirty and b.peers() == []
    assert b.set(10, b"irk", b"I" * 16) is True
    for i, k in enumerate(_KEYS[:3]):
        assert b.set(1, memoryview(k), b"our%d" % i) and b.set(2, k, bytearray(b"peer%d" % i))
    assert b.dirty and b.flush() and not b.dirty
    again = _store(tmp_path)
    assert not again.dirty and again.peers() == _KEYS[:3]
    assert again.get(10, 0, memoryview(b"irk")) == b"I" * 16
    assert [again.get(2, i, None) for i in range(4)] == [b"peer0", b"peer1", b"peer2", None]
    assert again.get(1, 0, _KEYS[1]) == b"our1" and again.get(2, 0, _KEYS[5]) is None
    assert again.set(1, _KEYS[1], None) is True and again.get(1, 0, _KEYS[1]) is None
    # NimBLE deletes until told there is nothing left (ble_store_util_delete_all)
    assert again.set(1, _KEYS[1], None) is False and again.set(1, 12, None) is False
    assert again.get(2, 0, _KEYS[1]) == b"peer1"  # the stack deletes a bond entry by entry


def test_bonds_trim_whole_bonds_oldest_first_and_keep_the_own_irk(tmp_path):
    b = _store(tmp_path)
    b.set(10, b"irk", b"I" * 16)
    for i, k in enumerate(_KEYS):
        b.set(2, k, b"peer%d" % i)
        b.set(1, k, b"our%d" % i)
        b.set(1, _KEYS[0], b"our0")  # rewriting a bond makes it the newest
    assert b.peers() == [_KEYS[4], _KEYS[5], _KEYS[6], _KEYS[0]]
    assert b.get(10, 0, b"irk") == b"I" * 16
    for k in b.peers():
        assert b.get(1, 0, k) is not None and b.get(2, 0, k) is not None  # both halves


def test_bonds_forget_all_keeps_the_own_irk(tmp_path):
    b = _store(tmp_path)
    b.set(10, b"irk", b"I" * 16)
    b.set(2, _KEYS[0], b"peer")
    b.flush()
    b.forget_all()
    assert b.dirty and b.flush()
    again = _store(tmp_path)
    assert again.peers() == [] and again.get(10, 0, b"irk") == b"I" * 16


def test_bonds_refuse_what_they_do_not_keep_and_never_raise(tmp_path):
    b = _store(tmp_path)
    for sec_type, key, value in [(3, b"k", b"v"), (10, b"other", b"v"), (2, b"", b"v"),
                                 (2, b"k" * 33, b"v"), (2, b"k", b"v" * 769), (2, b"k", b""),
                                 (2, None, b"v"), (2, 12, b"v"), (2.5, b"k", b"v"),
                                 (2, b"k", object())]:
        assert b.set(sec_type, key, value) is True  # a False would unpair the oldest peer
    assert not b.dirty and b.peers() == []
    assert b.get(2, 0, object()) is None and b.get(2, "x", None) is None


def test_bonds_older_file_with_more_bonds_is_trimmed_not_discarded(tmp_path):
    rows = [[10, b"irk".hex(), "11" * 16]]
    for i, k in enumerate(_KEYS):  # the old store kept 16 entries
        rows += [[1, k.hex(), f"{i:02x}" * 80], [2, k.hex(), f"{i:02x}" * 80]]
    (tmp_path / BONDS).write_text(json.dumps(rows))
    lines: list[str] = []
    b = _store(tmp_path, lines)
    assert lines == [] and b.peers() == _KEYS[3:] and b.get(10, 0, b"irk") == b"\x11" * 16
    assert b.dirty and b.flush()
    assert len(json.loads((tmp_path / BONDS).read_text())) == 1 + 2 * 4


def test_bonds_flush_failure_is_logged_once_and_retried(tmp_path):
    lines: list[str] = []
    fs = F.MemFS(cut_at=0)  # the flash fails at the first operation
    b = fw_bonds.Bonds(BONDS, lambda tag, text="": lines.append(text), fs=fs, opener=fs.open)
    b.set(2, _KEYS[0], b"peer")
    assert b.flush() is False and b.flush() is False and b.dirty
    assert len(lines) == 1 and lines[0].startswith("save failed")
    fs.dead = False
    fs.cut_at = -1
    assert b.flush() and not b.dirty and json.loads(fs.files[BONDS])[0][0] == 2


def test_bonds_flush_interrupted_anywhere_leaves_old_or_new():
    old = F.MemFS()
    b = fw_bonds.Bonds(BONDS, lambda *a: None, fs=old, opener=old.open)
    b.set(2, _KEYS[0], b"old")
    assert b.flush()
    seen = set()
    for fs_class in (F.MemFS, F.NoReplaceFS):
        for step in range(8):
            for cut in (0, 5, 40):
                fs = fs_class(old.files, cut_at=step, cut_bytes=cut)
                w = fw_bonds.Bonds(BONDS, lambda *a: None, fs=fs, opener=fs.open)
                w.set(2, _KEYS[0], b"new")
                w.flush()
                after = fs_class(fs.files)  # the reboot
                got = fw_bonds.Bonds(BONDS, lambda *a: None, fs=after, opener=after.open)
                value = got.get(2, 0, _KEYS[0])
                assert value in (b"old", b"new"), (fs_class, step, cut, fs.files)
                seen.add(value)
    assert seen == {b"old", b"new"}


def test_bonds_set_during_flush_is_written_by_the_next_flush(tmp_path):
    # the IRQ handler may run between any two lines of flush()
    b = _store(tmp_path)
    b.set(2, _KEYS[0], b"first")

    def opener(path, mode="r"):
        if "w" in mode:
            b.set(2, _KEYS[1], b"during")
        return open(path, mode)

    b._opener = opener
    assert b.flush() and b.dirty
    b._opener = open
    assert b.flush() and not b.dirty
    assert _store(tmp_path).peers() == [_KEYS[0], _KEYS[1]]


class _Model:
    """What the store must hold: every bond whole, the newest _MAX_PEERS of them."""

    def __init__(self):
        self.irk = None
        self.bonds: dict[bytes, dict[int, bytes]] = {}
        self.order: list[bytes] = []  # oldest written first

    def set(self, sec_type, key, value):
        """What the store must answer: True, but False for deleting nothing."""
        if sec_type == 10:
            had = self.irk is not None
            self.irk = value
            return value is not None or had
        if value is None:
            bond = self.bonds.get(key, {})
            had = bond.pop(sec_type, None) is not None
            if not bond and key in self.bonds:
                del self.bonds[key]
                self.order.remove(key)
            return had
        else:
            self.bonds.setdefault(key, {})[sec_type] = value
            if key in self.order:
                self.order.remove(key)
            self.order.append(key)
            while len(self.order) > fw_bonds._MAX_PEERS:
                del self.bonds[self.order.pop(0)]
            return True

    def forget_all(self):
        self.bonds.clear()
        self.order.clear()


_OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([1, 2]), st.sampled_from(_KEYS),
                  st.one_of(st.none(), st.binary(min_size=1, max_size=8))),
        st.tuples(st.just(10), st.just(b"irk"),
                  st.one_of(st.none(), st.binary(min_size=16, max_size=16))),
        st.just("forget"),
        st.just("reboot"),
    ),
    max_size=60,
)


def _same(b, model):
    assert b.peers() == model.order
    assert b.get(10, 0, b"irk") == model.irk
    for k in _KEYS:
        for t in (1, 2):
            assert b.get(t, 0, k) == model.bonds.get(k, {}).get(t)
    for t in (1, 2):
        listed = [b.get(t, i, None) for i in range(len(_KEYS) + 1)]
        want = [model.bonds[k][t] for k in model.order if t in model.bonds[k]]
        assert listed == want + [None] * (len(listed) - len(want))


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_bonds_trim_against_the_model(ops):
    fs = F.MemFS()
    b = fw_bonds.Bonds(BONDS, lambda *a: None, fs=fs, opener=fs.open)
    model = _Model()
    for op in ops:
        if op == "forget":
            b.forget_all()
            model.forget_all()
        elif op == "reboot":
            assert b.flush()
            b = fw_bonds.Bonds(BONDS, lambda *a: None, fs=fs, opener=fs.open)
        else:
            assert b.set(*op) is model.set(*op)
        _same(b, model)
        assert len(json.dumps(b.peers(), default=bytes.hex)) < fw_bonds._FILE_MAX


def test_bonds_behave_alike_under_micropython(tmp_path):
    import random

    rnd = random.Random(9)
    ops = []
    for _ in range(400):
        r = rnd.random()
        if r < 0.02:
            ops.append(["forget"])
        elif r < 0.05:
            ops.append(["reboot"])
        elif r < 0.08:
            ops.append([10, b"irk".hex(), rnd.randbytes(16).hex()])
        else:
            key = rnd.choice(_KEYS).hex()
            value = None if rnd.random() < 0.15 else rnd.randbytes(rnd.randint(1, 90)).hex()
            ops.append([rnd.choice([1, 2]), key, value])
    code = _LOG + """
import binascii, json
from bonds import Bonds
ops = json.loads(%r)
path = %r
b = Bonds(path, log)
trail = []
for op in ops:
    if op[0] == "forget":
        b.forget_all()
    elif op[0] == "reboot":
        b.flush()
        b = Bonds(path, log)
    else:
        v = None if op[2] is None else binascii.unhexlify(op[2])
        trail.append(b.set(op[0], binascii.unhexlify(op[1]), v))
    got = [binascii.hexlify(k).decode() for k in b.peers()]
    got.append([binascii.hexlify(b.get(t, i, None) or b"").decode()
                for t in (1, 2, 10) for i in range(5)])
    trail.append(got)
b.flush()
print(json.dumps([trail, lines, open(path).read()]))
"""
    results = {}
    for interp in ("cpython", "micropython"):
        path = str(tmp_path / f"{interp}.json")
        prog = code % (json.dumps(ops), path)
        if interp == "micropython":
            out = run_micropython(prog)
        else:
            out = subprocess.run([sys.executable, "-c", prog], capture_output=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=str(FIRMWARE))).stdout.decode()
        results[interp] = json.loads(out.splitlines()[-1])
    assert results["cpython"] == results["micropython"]
    trail, lines, text = results["micropython"]
    tables = [t for t in trail if isinstance(t, list)]
    assert lines == [] and max(len(t) - 1 for t in tables) == fw_bonds._MAX_PEERS
    assert {t for t in trail if isinstance(t, bool)} == {True, False}
    assert json.loads(text)  # the final table, as the file holds it
