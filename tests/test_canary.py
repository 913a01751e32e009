"""The canary audit's pieces (model/canary.py): the format, planting and exposure by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data.special_ids import BOS_ID, EOS_ID
from model.canary import CanaryData, CanaryFormat, exposures, plant


def test_format_enumerates_its_space_in_mixed_radix():
    fmt = CanaryFormat(prefix=(7, 8), choices=(10, 11, 12), slots=2)
    assert fmt.size == 9
    assert fmt.sequence(0) == [BOS_ID, 7, 8, 10, 10, EOS_ID]
    assert fmt.sequence(5) == [BOS_ID, 7, 8, 12, 11, EOS_ID]  # 5 = 2 + 1*3
    assert len({tuple(fmt.sequence(i)) for i in range(9)}) == 9


def test_exposure_by_hand():
    lp = np.array([5.0, 1.0, 3.0, 7.0, 2.0, 6.0, 4.0, 8.0])  # |R| = 8: log2 |R| = 3
    rank_based, extrapolated = exposures(lp, [1, 2, 7])  # ranks 1, 3, 8
    np.testing.assert_allclose(rank_based, [3.0, 3 - math.log2(3), 0.0])
    assert extrapolated[0] > extrapolated[1] > extrapolated[2] > 0  # the likelier, the more exposed


class _Data:
    def tokens(self, user_id):
        return [[BOS_ID, 50, EOS_ID]]

    def users(self, split):
        return [f"u{i}" for i in range(8)]


def test_planting_puts_canaries_first_and_spreads_repetitions():
    fmt = CanaryFormat(prefix=(7,), choices=(10, 11, 12, 13), slots=2)
    canaries = plant(fmt, _Data().users("train"), [(4, 1), (4, 2)], per_config=1, seed=0)
    assert [c.repetitions for c in canaries] == [4, 4] and [len(c.users) for c in canaries] == [1, 2]
    assert len({u for c in canaries for u in c.users}) == 3  # distinct users
    audited = CanaryData(_Data(), fmt, canaries)
    one = audited.tokens(canaries[0].users[0])
    assert one[:4] == [fmt.sequence(canaries[0].index)] * 4 and one[4] == [BOS_ID, 50, EOS_ID]
    assert audited.tokens(canaries[1].users[1])[:2] == [fmt.sequence(canaries[1].index)] * 2
    x, _ = audited.client_examples(canaries[0].users[0], seq_len=5, max_examples=2)
    assert x.shape == (2, 5) and list(x[0][:4]) == fmt.sequence(canaries[0].index)[:4]
    with pytest.raises(ValueError, match="spread evenly"):
        plant(fmt, _Data().users("train"), [(5, 2)], per_config=1)
