"""host_tools/gait/latency.py: the strike latency the bench prints."""

from __future__ import annotations

import numpy as np
import pytest

from host_tools.gait import latency


def test_the_crossing_is_where_the_loaded_channel_passes_a_quarter_of_its_range():
    trace = np.zeros((400, 3), dtype=np.int64)
    trace[200:, 1] = 8000
    trace[196:200, 1] = [1000, 1900, 2100, 5000]  # 25 % of 8000 is 2000
    assert latency.crossing_near(trace, 205, 100) == 198
    with pytest.raises(ValueError, match="no contact crossing"):
        latency.crossing_near(np.zeros((400, 3), dtype=np.int64), 205, 100)


def test_strikes_go_out_within_3_samples_at_100_hz_and_never_before_the_crossing():
    table = latency.rows(rates=(100, 1000), seconds=30.0)
    assert [r["rate_hz"] for r in table] == [100, 1000]
    assert all(r["strikes"] >= 20 for r in table)
    assert table[0]["max_samples"] <= latency.TARGET_SAMPLES and latency.target_met(table)
    walk = latency.faultbench.looped_walk(1000, 30.0)
    assert min(latency.latencies(walk, 1000)) >= 0
    late = [dict(table[0], max_samples=latency.TARGET_SAMPLES + 1)]
    assert not latency.target_met(late)
