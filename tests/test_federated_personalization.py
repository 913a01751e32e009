"""federated/personalization.py: TFF's personalization evaluation gives, user by user, the same
global and personalized top-1 as model/personalize.py's numpy (`bias`) and Keras (`all`) paths
(slow: TFF)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.test_federated_fakes import FakeData

pytestmark = pytest.mark.slow

SEQ = 6


def test_tff_personalization_matches_the_numpy_and_keras_paths():
    import configs
    from federated.personalization import personalization_eval
    from federated.tff_model import initial_weights
    from model.personalize import evaluate_personalization

    cfg = configs.preset("tiny")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seq_len=SEQ),
                              train=dataclasses.replace(cfg.train, batch_size=4))
    data = FakeData(num_users=8, vocab_size=20, seq_len=SEQ, seed=2, messages=(4, 9))
    weights = initial_weights(cfg.model, 20, SEQ, seed=3)
    got = personalization_eval(cfg, data, weights, ["bias", "all"], epochs=2, learning_rate=0.5)
    ref = evaluate_personalization(cfg, data, weights, ["bias", "all"], epochs=2, learning_rate=0.5,
                                   keystroke_rows=0)
    for s in ("bias", "all"):
        assert got[s]["users"] == ref[s]["users"] == 2 and got[s]["path"] == "tff"
        mine = {u["user"]: u for u in got[s]["per_user"]}
        for r in ref[s]["per_user"]:
            m = mine[r["user"]]
            assert m["global_top1"] == pytest.approx(r["global_top1"], abs=1e-12)
            # one word of slack: float order differs between the paths, an exact tie could flip
            assert m["personalized_top1"] == pytest.approx(r["personalized_top1"], abs=1.0 / r["words"] + 1e-12)
        assert got[s]["personalized_top1"] != got[s]["global_top1"]  # the fine-tuning moved something
    with pytest.raises(ValueError, match="strategies"):
        personalization_eval(cfg, data, weights, ["cache"])
