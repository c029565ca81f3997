"""`insole capture` / `insole scan` argument checking (no radio needed)."""

from __future__ import annotations

import pytest

from host_tools import cli


def test_capture_rejects_bad_arguments(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("# rate_hz=100\nheel,arch,forefoot\n1,2,3\n")
    cases = [
        (["--sim", str(tmp_path / "missing.csv")], "no such trace file"),
        (["--sim", f"{trace},{trace},{trace}"], "one or two traces"),
        (["--sim", str(trace), "--transport", "usb:0"], "leave out --transport"),
        (["--sim", str(trace), "--both"], "leave out --transport"),
        (["--device", "Insole-L-0001", "--both"], "use one of them"),
        (["--sim", str(trace), "--speed", "-1"], "argument --speed: speed -1 is outside 0..1000"),
    ]
    for extra, message in cases:
        assert cli.main(["capture", "--out", str(tmp_path / "o"), *extra]) == 2
        assert message in capsys.readouterr().err


def test_capture_will_not_overwrite_logs(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("# rate_hz=100\nheel,arch,forefoot\n1,2,3\n")
    out = tmp_path / "o"
    out.mkdir()
    (out / "left.csv").write_text("keep me\n")
    assert cli.main(["capture", "--sim", str(trace), "--out", str(out)]) == 2
    assert "left.csv exists" in capsys.readouterr().err
    assert (out / "left.csv").read_text() == "keep me\n"


def test_scan_rejects_bad_timeout(capsys):
    assert cli.main(["scan", "--timeout", "0"]) == 2
    assert "argument --timeout: 0 s is not a length of time" in capsys.readouterr().err


def test_help_texts_explain_the_commands(capsys):
    for name, needle in (("capture", "--sim"), ("scan", "RSSI"), ("report", "symmetry")):
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        assert needle in capsys.readouterr().out
