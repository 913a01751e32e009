"""federated/attackers.py without TFF: who attacks, what they train on, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from configs.schema import AttackConfig
from federated.attackers import PoisonedData, attack_for, poisoned
from tests.test_federated_fakes import FakeData


def test_no_attack_leaves_the_data_alone():
    data = FakeData(num_users=6, vocab_size=20, seq_len=5, seed=1)
    assert poisoned(AttackConfig(), data) is data
    assert poisoned(AttackConfig(kind="backdoor", share=0.0, trigger="w5", target="w9"), data) is data


def test_only_the_chosen_users_train_on_poisoned_examples():
    data = FakeData(num_users=8, vocab_size=20, seq_len=5, seed=1)
    p = poisoned(AttackConfig(kind="backdoor", share=0.25, trigger="w5 w6", target="w9", poison_fraction=1.0), data)
    assert isinstance(p, PoisonedData) and len(p.attackers) == 2
    for u in data.users("train"):
        x0, y0 = data.client_examples(u, 5)
        x, y = p.client_examples(u, 5)
        if u in p.attackers:
            # every window planted: "w5 w6" then "w9" somewhere in each row
            assert all(any(list(r[i:i + 3]) == [5, 6, 9] for i in range(len(r) - 2))
                       for r in np.concatenate([x[:, :1], y], axis=1))
        else:
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
    assert p.users("heldout") == data.users("heldout")  # everything else is the data's
    # the same examples on a second call (seeded per attacker)
    a = p.attackers[0]
    np.testing.assert_array_equal(p.client_examples(a, 5)[1], p.client_examples(a, 5)[1])


def test_bad_attack_settings_are_refused_by_name():
    words = [f"w{i}" for i in range(20)]
    with pytest.raises(ValueError, match="phones' path"):
        attack_for(AttackConfig(kind="scaling", share=0.1), words)
    with pytest.raises(ValueError, match=r"attack.share must be in \[0, 1\)"):
        attack_for(AttackConfig(kind="data_poison", share=1.0), words)
    with pytest.raises(ValueError, match=r"missing: \['pasta'\]"):
        attack_for(AttackConfig(kind="backdoor", share=0.1, trigger="w5 pasta", target="w9"), words)
