"""benchmarks/dp_production.py's `--rows` parsing and its noise calibration, by hand."""

import math

import pytest

from benchmarks.dp_production import noise_for_rho, selected_rows


def test_rows_all_and_subset_in_table_order():
    assert len(selected_rows("all")) == 6
    # non-DP first within each form, scratch before pretrained, whatever order they were named in
    assert selected_rows("dp_ftrl:pre,none:pre,none:scratch") == [("none", False), ("none", True),
                                                                  ("dp_ftrl", True)]


@pytest.mark.parametrize("spec", ["dp_ftrl", "ftrl:pre", "none:public"])
def test_rows_refuse_unknown_items(spec):
    with pytest.raises(ValueError, match="MECHANISM:pre\\|scratch"):
        selected_rows(spec)


def test_noise_for_rho_by_hand():
    # 4 rounds per pass, 1 pass: DP-FedAvg rho = 1 / (2 z^2) = 2 -> z = 0.5;
    # DP-FTRL depth ceil(log2(5)) = 3: rho = 3 / (2 z^2) = 2 -> z = sqrt(3/4)
    assert noise_for_rho("none", 2.0, 4, 4) == 0.0
    assert noise_for_rho("dp_fedavg", 2.0, 4, 4) == pytest.approx(0.5)
    assert noise_for_rho("dp_ftrl", 2.0, 4, 4) == pytest.approx(math.sqrt(0.75))
    # two passes double rho at fixed z
    assert noise_for_rho("dp_ftrl", 2.0, 8, 4) == pytest.approx(math.sqrt(1.5))
