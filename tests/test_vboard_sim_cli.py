"""`insole sim`: the firmware on the virtual board from the command line."""

from __future__ import annotations

from host_tools import cli
from tests.test_vboard import TRACE, reference_events


def test_sim_runs_the_trace_and_reports_the_steps(capsys):
    rc = cli.main(["sim", "--trace", str(TRACE), "--side", "right", "--speed", "0",
                   "--linger", "0.5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "advertising as Insole-R-" in out
    assert "board=Virtual board" in out and "side=R" in out  # the firmware's banner
    steps = len([e for e in reference_events() if e[0] == "S"])
    assert f"run stop samples=9000 steps={steps}" in out
    assert f"firmware status: {steps} steps" in out


def test_sim_rejects_a_bad_trace(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("# rate_hz=100\nheel,arch,forefoot\n1,2,3\n4,x,6\n")
    rc = cli.main(["sim", "--trace", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:4: arch value 'x' is not an integer" in err
