"""keyboard/personalize.py: the split in time, the bias-only SGD step by hand, the summary over
users by hand; model/personalize.py's all-weights strategy (slow: TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from data.special_ids import BOS_ID, EOS_ID, PAD_ID
from keyboard.forward import NWPWeights, softmax
from keyboard.personalize import UserResult, fine_tune_bias, score_user, split_in_time, summarise
from keyboard.testing import random_weights


def test_split_in_time_earlier_to_tune_later_to_score():
    msgs = [[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID], [BOS_ID, 8, 9, 10, EOS_ID], [BOS_ID, 11, EOS_ID]]
    (ex, ey), (lx, ly) = split_in_time(msgs, seq_len=4, train_fraction=0.5)
    assert ex.tolist() == [[BOS_ID, 5, 6, EOS_ID], [BOS_ID, 7, EOS_ID, PAD_ID]]
    assert lx.tolist() == [[BOS_ID, 8, 9, 10], [BOS_ID, 11, EOS_ID, PAD_ID]]
    assert ly[0].tolist() == [8, 9, 10, EOS_ID]
    (ex, _), (lx, _) = split_in_time(msgs, seq_len=4, train_fraction=0.9)  # at least one message to score
    assert len(ex) == 3 and len(lx) == 1
    assert split_in_time(msgs[:1], seq_len=4) is None
    with pytest.raises(ValueError, match="train_fraction"):
        split_in_time(msgs, 4, train_fraction=1.0)


def _flat(bias) -> NWPWeights:
    """Zero embedding: every state is zero, the logits are the output bias."""
    arrays = [np.zeros_like(a) for a in random_weights("lstm", len(bias), 2, 3)]
    arrays[-1] = np.asarray(bias, np.float32)
    return NWPWeights.from_list("lstm", arrays)


def test_bias_step_hand_computed():
    # V = 6, logits = b = 0: p = 1/6 each. One batch, targets [4, 4, 5, PAD]: the gradient is
    # mean over the 3 word targets of (p - onehot) = (1/6 - [0, 0, 0, 0, 2/3, 1/3]).
    w = _flat(np.zeros(6))
    x = np.array([[BOS_ID, 4, 4, 5]])
    y = np.array([[4, 4, 5, PAD_ID]])
    tuned = fine_tune_bias(w, x, y, learning_rate=3.0, epochs=1, batch_size=8)
    expected = -3.0 * (np.full(6, 1 / 6) - np.array([0, 0, 0, 0, 2 / 3, 1 / 3]))
    np.testing.assert_allclose(tuned.output_bias, expected, atol=1e-6)
    assert fine_tune_bias(w, x, y, 3.0, epochs=0, batch_size=8).output_bias.tolist() == [0.0] * 6
    # everything else is the global model's
    assert tuned.embedding is w.embedding and tuned.kernel is w.kernel


def test_bias_fine_tune_lowers_the_users_loss():
    w = NWPWeights.from_list("cifg", random_weights("cifg", 40, 6, 8, seed=4))
    rng = np.random.default_rng(0)
    x = rng.integers(4, 12, size=(10, 5))  # a user who types a few words only
    y = rng.integers(4, 12, size=(10, 5))

    def loss(weights):
        from keyboard.forward import logits

        p = softmax(logits(weights, x))
        return -np.mean(np.log(np.take_along_axis(p, y[..., None], -1)))

    tuned = fine_tune_bias(w, x, y, learning_rate=1.0, epochs=3, batch_size=4)
    assert loss(tuned) < loss(w) - 0.1


def test_score_user_and_summary_by_hand():
    w = _flat([0, 0, 0, 0, 3, 2, 1])
    x = np.array([[BOS_ID, 4, 5]])
    y = np.array([[4, 5, EOS_ID]])  # targets 4 (top-1 hit), 5 (top-2), EOS not counted
    s = score_user(w, x, y, ["<pad>", "<unk>", "<s>", "</s>", "aa", "ab", "b"], keystroke_rows=1)
    assert (s["words"], s["top1"], s["top3"]) == (2, 0.5, 1.0)
    # "aa": strip [aa, ab, b] at j=0 -> saves 1 of 2; "ab": j=0 strip has ab -> saves 1 of 2
    assert s["keystroke_savings"] == pytest.approx(0.5)

    users = [UserResult("u1", {"top1": 0.2}, {"top1": 0.3}), UserResult("u2", {"top1": 0.4}, {"top1": 0.4}),
             UserResult("u3", {"top1": 0.3}, {"top1": 0.2}), UserResult("u4", {"top1": 0.1}, {"top1": 0.3})]
    r = summarise(users)
    assert r["global_top1"] == pytest.approx(0.25) and r["personalized_top1"] == pytest.approx(0.3)
    assert r["relative_gain"] == pytest.approx(0.2)
    assert (r["share_improved"], r["share_unchanged"], r["share_worse"]) == (0.5, 0.25, 0.25)  # u2 ties
    np.testing.assert_allclose(r["gain_quartiles"], np.percentile([0.1, 0.0, -0.1, 0.2], [25, 50, 75]))
    with pytest.raises(ValueError):
        summarise([])


@pytest.mark.slow
def test_all_weights_strategy_is_the_phone_step(tmp_path):
    """`all` fine-tuning runs tflite_export.trainable.sgd_step: one epoch of one batch equals
    one step of the same function on a fresh model, and it moves more than the bias."""
    import configs
    from model.nwp import build_model
    from model.personalize import _AllWeights
    from tflite_export.trainable import sgd_step
    import tensorflow as tf

    cfg = configs.preset("tiny")
    vocab, seq = 40, cfg.data.seq_len
    weights = [v.numpy() for v in build_model(cfg.model, vocab, seq, seed=3).trainable_weights]
    rng = np.random.default_rng(1)
    x = rng.integers(4, vocab, size=(4, seq)).astype(np.int32)
    y = rng.integers(4, vocab, size=(4, seq)).astype(np.int32)
    tuned = _AllWeights(cfg, vocab, seq)(weights, x, y, learning_rate=0.5, epochs=1, batch_size=8)
    ref = build_model(cfg.model, vocab, seq, unroll=True)
    ref.set_weights(weights)
    sgd_step(ref, tf.constant(x), tf.constant(y), tf.constant(0.5))
    for a, b in zip(tuned, ref.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert all(np.any(a != b) for a, b in zip(tuned, weights))


def test_one_scoring_summarised_and_tuned_at_several_thresholds():
    """model.personalize.summarise_users re-summarises a result's per-user rows over the users with
    enough words a side; best_for picks a tuning table's point per threshold (by hand)."""
    from keyboard.cache import CacheParams
    from model.personalize import best_for, summarise_users

    rows = [{"user": "a", "side_words": 5, "global_top1": 0.5, "personalized_top1": 0.25},
            {"user": "b", "side_words": 40, "global_top1": 0.1, "personalized_top1": 0.1},
            {"user": "c", "side_words": 120, "global_top1": 0.1, "personalized_top1": 0.2,
             "global_keystroke_savings": 0.3, "personalized_keystroke_savings": 0.4}]
    every = summarise_users(rows, 0)
    assert every["users"] == 3 and every["global_top1"] == pytest.approx(0.7 / 3)
    assert (every["share_improved"], every["share_unchanged"], every["share_worse"]) == pytest.approx((1 / 3,) * 3)
    assert "global_keystroke_savings" not in every  # not every user was scored for it
    many = summarise_users(rows, 20)
    assert many["users"] == 2 and many["relative_gain"] == pytest.approx(0.3 / 0.2 - 1)
    top = summarise_users(rows, 100)
    assert top["users"] == 1 and top["personalized_keystroke_savings"] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        summarise_users(rows, 200)

    low, high = CacheParams(lam=0.1), CacheParams(lam=0.4)
    table = [{"params": low, "per_user": [{"side_words": 5, "personalized_top1": 0.5},
                                          {"side_words": 120, "personalized_top1": 0.2}]},
             {"params": high, "per_user": [{"side_words": 5, "personalized_top1": 0.1},
                                           {"side_words": 120, "personalized_top1": 0.3}]}]
    assert best_for(table, 1) == low    # means 0.35 against 0.2
    assert best_for(table, 100) == high  # the one user with 120 words: 0.2 against 0.3
    with pytest.raises(ValueError, match="no tuning user has 500"):
        best_for(table, 500)
