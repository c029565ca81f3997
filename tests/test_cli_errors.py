"""Every command against every kind of bad input: one line on stderr, exit status 2, no
traceback, and nothing half written (host_tools/common/safeio.py, host_tools/common/argcheck.py)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from host_tools import cli
from host_tools.ble.steplog import SessionMeta, StepLogWriter, log_paths, read_steplog, write_meta
from host_tools.gait import engine
from host_tools.training import exgen, history

ROOT = Path(__file__).resolve().parent.parent
WALK = ROOT / "host_tools" / "data" / "walk_left.csv"
WALK_R = ROOT / "host_tools" / "data" / "walk_right.csv"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err


def leftovers(directory: Path) -> list[Path]:
    """Temporary, probe, partial or empty files a failed write would leave behind."""
    if not directory.exists():
        return []
    return [p for p in directory.rglob("*") if p.is_file() and (
        p.name.endswith((".tmp", ".part")) or p.name.startswith(".insole-probe")
        or p.stat().st_size == 0)]


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory) -> Path:
    """A small two-foot capture log, as `insole capture` writes it."""
    d = tmp_path_factory.mktemp("walk")
    for side, stride in (("left", 1100.0), ("right", 1150.0)):
        tr = exgen.slow_walk([stride] * 12, noise=40, seed=5)
        steps = engine.step_summaries(engine.run_cpython(tr.samples, tr.rate_hz))
        csv_path, meta_path = log_paths(d, side)
        with StepLogWriter(csv_path, side) as w:
            for i, row in enumerate(steps):
                w.write(row, 1_700_000_000 + i)
        write_meta(meta_path, SessionMeta(side=side, firmware_version="test",
                                          sample_rate_hz=100))
    return d


@pytest.fixture(scope="module")
def raises_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tr") / "hr.csv"
    exgen.write(exgen.heel_raises(reps=3), str(path))
    return path


@pytest.fixture
def db_with_session(tmp_path) -> Path:
    db = tmp_path / "h.db"
    conn = history.connect(db)
    history.add_session(conn, history.Session("heel-raises", datetime.now(timezone.utc), 60,
                                              "left", "t", {"reps": 12}))
    conn.close()
    return db


# ------------------------------------------------------------------- bad numbers

BAD_NUMBERS = [
    # (command line before the option, option, bad values)
    (["detect", str(WALK)], "--rate", ["nan", "inf", "-1", "0", "49", "1001", "2.5", "x"]),
    (["sim", "--trace", str(WALK)], "--rate", ["nan", "0", "49", "1001", "x"]),
    (["sim", "--trace", str(WALK)], "--speed", ["nan", "inf", "-inf", "-1", "1001", "x"]),
    (["sim", "--trace", str(WALK)], "--linger", ["nan", "inf", "-1"]),
    (["capture", "--out", "o", "--sim", str(WALK)], "--speed", ["nan", "inf", "-1", "1e9"]),
    (["capture", "--out", "o", "--both"], "--duration", ["nan", "inf", "-1", "0", "x"]),
    (["capture", "--out", "o", "--both"], "--scan-timeout", ["nan", "-1", "0"]),
    (["train", "heel-raises", "--sim", str(WALK)], "--rate", ["nan", "0", "49", "1001"]),
    (["train", "heel-raises", "--sim", str(WALK)], "--speed", ["nan", "inf", "-1", "1001"]),
    (["train", "heel-raises"], "--duration", ["nan", "inf", "-1", "0"]),
    (["train", "heel-raises"], "--scan-timeout", ["nan", "0"]),
    (["train", "heel-raises", "--sim", str(WALK)], "--target", ["nan", "inf", "-1", "0", "x"]),
    (["train", "slow-walk", "--sim", str(WALK)], "--tolerance", ["nan", "0", "51", "2.5"]),
    (["scan"], "--timeout", ["nan", "inf", "-1", "0"]),
    (["evaluate"], "--workers", ["nan", "0", "-1", "65"]),
    (["evaluate"], "--rate", ["nan", "24", "1001", "99.5"]),
    (["bench"], "--repeats", ["nan", "0", "-1"]),
    (["history"], "--days", ["nan", "-1", "1.5"]),
    (["flash", "--port", "/dev/null"], "--banner-timeout", ["nan", "inf", "0", "-1"]),
]


@pytest.mark.parametrize(
    "before, option, value",
    [(b, o, v) for b, o, values in BAD_NUMBERS for v in values],
    ids=lambda x: x if isinstance(x, str) and not x.startswith("/") else None,
)
def test_bad_numbers_are_one_line_and_exit_2(before, option, value, capsys, tmp_path,
                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*before, option, value]) == 2
    one_line_error(capsys.readouterr().err, f"argument {option}:", "--help")
    assert not (tmp_path / "o").exists()  # refused before anything was made


@pytest.mark.parametrize("argv, needle", [
    (["train", "heel-raises", "--target", "2.5"], "whole number 1..1000, not 2.5"),
    (["train", "toe-scrunch", "--target", "1001"], "1..1000, not 1001"),
    (["train", "balance", "--target", "4000"], "1..3600"),
    (["train", "slow-walk", "--target", "161"], "20..160"),
    (["train", "slow-walk", "--target", "19"], "20..160"),
])
def test_targets_are_checked_per_exercise(argv, needle, raises_trace, capsys):
    assert cli.main([*argv, "--sim", str(raises_trace), "--no-save"]) == 2
    one_line_error(capsys.readouterr().err, needle)


@pytest.mark.parametrize("argv", [
    ["--rate", "0"], ["--depth", "1.5"], ["--depth", "nan"], ["--reps", "0"],
    ["--hold", "0"], ["--hold", "-1"], ["--noise", "-1"], ["--stride", "0"],
    ["--drift", "inf"], ["--rates", "100,0"],
])
def test_exgen_checks_its_numbers(argv, tmp_path, capsys):
    assert exgen.main(["heel-raises", str(tmp_path / "x.csv"), *argv]) == 2
    one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "x.csv").exists()


def test_the_same_rate_check_in_every_command(capsys, raises_trace):
    messages = set()
    for argv in (["detect", str(WALK)], ["sim", "--trace", str(WALK)],
                 ["train", "heel-raises", "--sim", str(raises_trace)]):
        assert cli.main([*argv, "--rate", "1001"]) == 2
        err = capsys.readouterr().err
        messages.add(err.split("argument --rate:", 1)[1].split("(see")[0].strip())
    assert messages == {"sample rate 1001 Hz is outside 50..1000"}
    assert exgen.main(["heel-raises", "x.csv", "--rate", "1001"]) == 2
    assert "sample rate 1001 Hz is outside 50..1000" in capsys.readouterr().err


# ------------------------------------------------------------------- bad paths

def _file_outputs(capture_dir, raises_trace, db):
    """(name, argv builder given a path that should be a file) for every file output."""
    return {
        "detect --out": lambda p: ["detect", str(WALK), "--engine", "cpython", "--out", str(p)],
        "history --html": lambda p: ["history", "--db", str(db), "--html", str(p)],
        "evaluate --write": lambda p: ["evaluate", "--data", str(ROOT.parent / "shared" / "data"),
                                       "--write", str(p)],
        "exgen out": lambda p: ["exgen", "heel-raises", str(p)],
    }


def _dir_outputs(capture_dir, raises_trace, db):
    """(name, argv builder given a path that should be a directory) for every dir output."""
    return {
        "capture --out": lambda p: ["capture", "--sim", str(WALK), "--out", str(p)],
        "report --plots": lambda p: ["report", str(capture_dir), "--plots", str(p)],
        "history --plots": lambda p: ["history", "--db", str(db), "--plots", str(p)],
        "build --out": lambda p: ["build", "--board", "esp32s3", "--out", str(p)],
        "sim --flash": lambda p: ["sim", "--trace", str(WALK), "--flash", str(p)],
    }


def run_cli(argv: list[str]) -> int:
    if argv[0] == "exgen":
        return exgen.main(argv[1:])
    return cli.main(argv)


FILE_OUTPUTS = ["detect --out", "history --html", "evaluate --write", "exgen out"]
DIR_OUTPUTS = ["capture --out", "report --plots", "history --plots", "build --out",
               "sim --flash"]


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_a_directory_where_a_file_is_wanted(name, tmp_path, capture_dir, raises_trace,
                                            db_with_session, capsys):
    if name == "evaluate --write" and not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("no ../shared/data (PhysioNet) here")
    target = tmp_path / "adir"
    target.mkdir()
    argv = _file_outputs(capture_dir, raises_trace, db_with_session)[name](target)
    assert run_cli(argv) == 2
    one_line_error(capsys.readouterr().err, str(target), "is a directory", "give a file name")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", FILE_OUTPUTS)
def test_a_file_where_a_parent_directory_is_wanted(name, tmp_path, capture_dir, raises_trace,
                                                   db_with_session, capsys):
    if name == "evaluate --write" and not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("no ../shared/data (PhysioNet) here")
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    argv = _file_outputs(capture_dir, raises_trace, db_with_session)[name](blocker / "x.out")
    assert run_cli(argv) == 2
    one_line_error(capsys.readouterr().err, f"{blocker} is a file, not a directory")
    assert blocker.read_text() == "keep me\n"


@pytest.mark.parametrize("name", DIR_OUTPUTS)
def test_a_file_where_a_directory_is_wanted(name, tmp_path, capture_dir, raises_trace,
                                            db_with_session, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    argv = _dir_outputs(capture_dir, raises_trace, db_with_session)[name](blocker)
    assert run_cli(argv) == 2
    one_line_error(capsys.readouterr().err, str(blocker), "is a file, not a directory")
    assert blocker.read_text() == "keep me\n"


@pytest.mark.parametrize("name", ["detect --out", "history --html", "exgen out"])
def test_missing_parent_directories_are_created(name, tmp_path, capture_dir, raises_trace,
                                                db_with_session, capsys):
    target = tmp_path / "new" / "deeper" / "out.file"
    argv = _file_outputs(capture_dir, raises_trace, db_with_session)[name](target)
    assert run_cli(argv) == 0
    assert target.stat().st_size > 100
    assert leftovers(tmp_path / "new") == []


def test_report_plots_into_a_missing_directory(tmp_path, capture_dir, capsys):
    out = tmp_path / "a" / "b"
    assert cli.main(["report", str(capture_dir), "--plots", str(out), "--html"]) == 0
    assert (out / "report.html").stat().st_size > 10_000 and (out / "report.json").exists()


class FakeFs:
    """Refuse (read-only file system) or fill up (no space) everything under a
    directory, in this process: the operating system calls the writers use."""

    def __init__(self, monkeypatch, root: Path, err: int):
        self.root = Path(root).resolve()
        self.err = err
        self.fds: set[int] = set()
        real_open, real_mkdir, real_write = os.open, os.mkdir, os.write

        def inside(path) -> bool:
            try:
                return Path(os.fspath(path)).resolve().is_relative_to(self.root)
            except (TypeError, ValueError):
                return False

        def refuse(path):
            raise OSError(err, os.strerror(err), os.fspath(path))

        def fake_open(path, flags, *a, **k):
            writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if err == errno.EROFS and writing and inside(path):
                refuse(path)
            fd = real_open(path, flags, *a, **k)
            if writing and inside(path):
                self.fds.add(fd)
            return fd

        def fake_mkdir(path, *a, **k):
            if err == errno.EROFS and inside(path):
                refuse(path)
            return real_mkdir(path, *a, **k)

        def fake_write(fd, data):
            if err == errno.ENOSPC and fd in self.fds:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "write", fake_write)


def _unwritable_cases(capture_dir, raises_trace, db):
    """(name, argv, the directory that cannot be written, what must stay as it was)."""
    return {
        "detect --out": lambda d: ["detect", str(WALK), "--engine", "cpython",
                                   "--out", str(d / "events.csv")],
        "report": lambda d: ["report", str(capture_dir), "--plots", str(d), "--html"],
        "history --html": lambda d: ["history", "--db", str(db), "--html", str(d / "h.html")],
        "history --plots": lambda d: ["history", "--db", str(db), "--plots", str(d)],
        "exgen out": lambda d: ["exgen", "heel-raises", str(d / "hr.csv")],
        "capture --out": lambda d: ["capture", "--sim", str(WALK), "--out", str(d / "cap"),
                                    "--speed", "0"],
        "sim --flash": lambda d: ["sim", "--trace", str(WALK), "--flash", str(d / "flash")],
    }


UNWRITABLE = ["detect --out", "report", "history --html", "history --plots", "exgen out",
              "capture --out", "sim --flash"]


@pytest.mark.parametrize("name", UNWRITABLE)
def test_a_read_only_file_system(name, tmp_path, capture_dir, raises_trace,
                                 db_with_session, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "events.csv").write_text("old\n")
    argv = _unwritable_cases(capture_dir, raises_trace, db_with_session)[name](ro)
    FakeFs(monkeypatch, ro, errno.EROFS)
    assert run_cli(argv) == 2
    one_line_error(capsys.readouterr().err, "read-only file system",
                   "choose a place that can be written")
    assert sorted(p.name for p in ro.iterdir()) == ["events.csv"]
    assert (ro / "events.csv").read_text() == "old\n"


@pytest.mark.parametrize("name", ["detect --out", "report", "history --html",
                                  "history --plots", "exgen out", "capture --out"])
def test_a_full_disk_leaves_the_old_file_or_none(name, tmp_path, capture_dir, raises_trace,
                                                 db_with_session, capsys, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    for old in ("events.csv", "report.json", "h.html", "hr.csv", "cadence.png"):
        (full / old).write_text("old\n")
    before = {p.name: p.read_text() for p in full.iterdir()}
    argv = _unwritable_cases(capture_dir, raises_trace, db_with_session)[name](full)
    FakeFs(monkeypatch, full, errno.ENOSPC)
    assert run_cli(argv) == 2
    one_line_error(capsys.readouterr().err, "no space left on the device",
                   "free some space or write elsewhere")
    assert leftovers(full) == []
    assert {p.name: p.read_text() for p in full.iterdir() if p.is_file()} == before
    if name == "capture --out":
        assert not list((full / "cap").iterdir())  # no header-only log, no session file


def test_a_full_disk_mid_capture_keeps_every_whole_row(tmp_path, monkeypatch):
    out = tmp_path / "cap"
    out.mkdir()
    fs = FakeFs(monkeypatch, out, 0)  # records the log's descriptor; full once it is open
    w = StepLogWriter(out / "left.csv", "left")
    steps = engine.step_summaries(engine.run_cpython(exgen.slow_walk([1100.0] * 6).samples,
                                                     100))
    w.write(steps[0], 1.7e9)
    w.write(steps[1], 1.7e9 + 1)
    fs.err = errno.ENOSPC
    real = os.write

    def half_then_full(fd, data):  # the disk takes part of the row, then is full
        if fd in fs.fds:
            real(fd, bytes(data[:7]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        w.write(steps[2], 1.7e9 + 2)
    w.close()
    rows, problems = read_steplog(out / "left.csv")
    assert problems == [] and [r.seq for r in rows] == [1, 2]  # no half row at the end


def test_a_full_disk_during_a_build_keeps_the_previous_build(tmp_path, capsys, monkeypatch):
    assert cli.main(["build", "--board", "esp32s3", "--out", str(tmp_path)]) == 0
    manifest = (tmp_path / "esp32s3" / "manifest.json").read_text()
    capsys.readouterr()

    def full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    assert cli.main(["build", "--board", "esp32s3", "--out", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "no space left on the device",
                   "previous build")
    assert (tmp_path / "esp32s3" / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["esp32s3"]  # no half tree left


# ------------------------------------------------------------------- traces

@pytest.mark.parametrize("argv", [
    ["detect", "{t}", "--engine", "cpython"],
    ["train", "balance", "--sim", "{t}", "--no-save"],
    ["sim", "--trace", "{t}"],
    ["bench", "--trace", "{t}"],
])
def test_a_header_only_trace_is_refused_everywhere(argv, tmp_path, capsys):
    t = tmp_path / "empty.csv"
    t.write_text("# rate_hz=100\nheel,arch,forefoot\n")
    assert cli.main([a.replace("{t}", str(t)) for a in argv]) == 2
    one_line_error(capsys.readouterr().err, f"{t}: no samples after the header line")


def test_a_byte_order_mark_is_accepted(tmp_path, capsys, raises_trace):
    plain = tmp_path / "plain.csv"
    bom = tmp_path / "bom.csv"
    assert cli.main(["detect", str(WALK), "--engine", "cpython", "--out", str(plain)]) == 0
    bom.write_bytes(b"\xef\xbb\xbf" + WALK.read_bytes())
    out = tmp_path / "e.csv"
    assert cli.main(["detect", str(bom), "--engine", "cpython", "--out", str(out)]) == 0
    assert out.read_text() == plain.read_text()
    bom_hr = tmp_path / "hr.csv"
    bom_hr.write_bytes(b"\xef\xbb\xbf" + raises_trace.read_bytes())
    assert cli.main(["train", "heel-raises", "--sim", str(bom_hr), "--no-save"]) == 0
    assert "3 of 15 reps" in capsys.readouterr().out
    log = tmp_path / "cap"
    log.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    with StepLogWriter(src / "left.csv", "left") as w:
        for i, row in enumerate(engine.step_summaries(engine.run_cpython(
                exgen.slow_walk([1100.0] * 8).samples, 100))):
            w.write(row, 1.7e9 + i)
    (log / "left.csv").write_bytes(b"\xef\xbb\xbf" + (src / "left.csv").read_bytes())
    rows, problems = read_steplog(log / "left.csv")
    assert problems == [] and len(rows) == 8


def test_capture_with_no_bluetooth_adapter_fails_at_once(tmp_path, capsys, monkeypatch):
    import bleak

    class NoAdapter:
        async def start(self):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

        async def stop(self):
            pass

    monkeypatch.setattr(bleak, "BleakScanner", NoAdapter)
    assert cli.main(["capture", "--both", "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys.readouterr().err, "no usable Bluetooth adapter")


# ------------------------------------------------------------------- streams

def _pipe_into_head(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run `insole ARGV | head -1`: read one line, then close the pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", *argv], cwd=cwd,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first, err
    return subprocess.CompletedProcess(argv, proc.returncode, first, err)


def test_piping_into_head_is_quiet_and_finishes_the_work(tmp_path, capture_dir,
                                                         raises_trace, db_with_session):
    big = tmp_path / "big.csv"  # enough output to outrun any pipe buffer
    samples = [x for x in WALK.read_text().splitlines() if x[:1].isdigit()]
    big.write_text(WALK.read_text() + "".join(x + "\n" for x in samples * 9))
    cases = [
        ["detect", str(big), "--engine", "cpython"],
        ["report", str(capture_dir), "--steps", "--no-plots"],
        ["history", "--db", str(db_with_session)],
        ["train", "heel-raises", "--sim", str(raises_trace), "--db", str(db_with_session)],
    ]
    (capture_dir / "report.json").unlink(missing_ok=True)
    for argv in cases:
        done = _pipe_into_head(argv, tmp_path)
        assert done.returncode == 0, (argv, done.stderr)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert (capture_dir / "report.json").exists()  # report went on after the pipe closed
    conn = history.connect(db_with_session)
    assert [s.kind for s in history.sessions(conn)] == ["heel-raises", "heel-raises"]


def test_a_full_standard_output(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "host_tools.cli", "detect", str(WALK),
                               "--engine", "cpython"], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    one_line_error(done.stderr, "standard output: no space left on the device")


# ------------------------------------------------------------------- Ctrl-C in train

def test_ctrl_c_ends_train_with_a_summary_and_a_saved_session(tmp_path, raises_trace):
    db = tmp_path / "h.db"
    long = tmp_path / "long.csv"
    exgen.write(exgen.heel_raises(reps=40), str(long))
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "train", "heel-raises",
                             "--sim", str(long), "--speed", "10", "--db", str(db)],
                            env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "  rep   2" not in seen:  # two reps done, then Ctrl-C
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            seen += line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "session summary (stopped early: Ctrl-C)" in out and "saved as session" in out
    (s,) = history.sessions(history.connect(db))
    assert s.summary["stopped_early"] is True
    assert 2 <= s.metric("reps") < 40
    assert 0 < s.duration_s < len(exgen.heel_raises(reps=40).samples) / 100


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"insole {metadata.version('insole')}\n"
    done = subprocess.run([sys.executable, "-m", "host_tools.cli", "--version"],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("insole 0.")
