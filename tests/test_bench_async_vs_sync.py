"""benchmarks/async_vs_sync.py end to end in its `--stub-training` form (zero updates, no top-1)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))


@pytest.mark.slow
def test_stub_training_counts_the_fleet_and_the_sync_round_times(tmp_path):
    import async_vs_sync

    out = async_vs_sync.main(["--small", "--stub-training", "--sim-hours", "1",
                              "--workdir", str(tmp_path / "w")])
    assert out["stub_training"] and out["concurrency"] == 110  # 10 x the sync round's 11 slots
    sync, fedbuff = out["sync"], out["fedbuff"]
    for s in (sync, fedbuff):
        assert s["updates_trained"] == s["updates_accepted"] + s["updates_wasted"]
        assert s["admitted"] >= s["updates_trained"] + s["dropouts"]
    rt = sync["round_times"]
    assert rt["rounds"] >= sync["versions"] >= 1
    assert rt["never_filled"] < rt["rounds"]  # 200 phones at night fill most rounds
    assert 0 <= rt["mean_fill_s"] <= rt["mean_round_s"] <= 300.0  # the sync deadline
    assert sum(fedbuff["staleness"].values()) == fedbuff["updates_accepted"]
    assert fedbuff["updates_wasted"] == 0  # max staleness 100 refuses nothing in an hour of 200 phones


def test_the_server_step_is_chosen_on_validation_top1_first_of_ties():
    from async_vs_sync import choose_by_validation

    assert choose_by_validation({0.25: 0.10, 0.5: 0.21, 1.0: 0.18}) == 0.5
    assert choose_by_validation({0.5: 0.2, 1.0: 0.2}) == 0.5


def test_a_grid_with_stub_training_is_refused(tmp_path):
    import async_vs_sync

    with pytest.raises(SystemExit, match="needs trained runs"):
        async_vs_sync.main(["--small", "--stub-training", "--server-lr-grid", "0.5,1.0",
                            "--workdir", str(tmp_path / "w")])
