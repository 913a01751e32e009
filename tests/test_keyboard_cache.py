"""keyboard/cache.py: the user's word cache by hand (counts, the bigram estimate with its unigram
prior, the evidence-weighted mix), and that scoring never sees the word being predicted."""

from __future__ import annotations

import numpy as np
import pytest

from data.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from keyboard.cache import CacheParams, WordCache, cached_log_probs


def test_counts_and_bigram_estimate_by_hand():
    c = WordCache(8, CacheParams(lam=0.5, kappa=1.0, n0=2.0))
    for prev, word in [(BOS_ID, 4), (4, 5), (BOS_ID, 4), (4, 6), (6, UNK_ID), (6, PAD_ID)]:
        c.add(prev, word)
    assert c.total == 4 and c.unigram.tolist() == [0, 0, 0, 0, 2, 1, 1, 0]  # UNK and PAD not counted
    # after 4: bigrams {5: 1, 6: 1}, prior kappa * unigram / N = [.., 0.5, 0.25, 0.25, 0]
    p = c.probabilities(4)
    np.testing.assert_allclose(p, np.array([0, 0, 0, 0, 0.5, 1.25, 1.25, 0]) / 3.0)
    # an unseen previous word: the unigram distribution alone
    np.testing.assert_allclose(c.probabilities(7), [0, 0, 0, 0, 0.5, 0.25, 0.25, 0])
    # lam_u = lam * N / (N + n0) = 0.5 * 4 / 6
    assert c.weight() == pytest.approx(1 / 3)
    g = np.full(8, 1 / 8)
    np.testing.assert_allclose(c.mix(g, 4), (2 / 3) * g + (1 / 3) * p)
    assert c.mix(g, 4).sum() == pytest.approx(1.0)


def test_empty_cache_keeps_the_global_model():
    c = WordCache(6)
    assert c.weight() == 0.0 and not c.probabilities(4).any()
    g = np.array([0.1, 0.1, 0.1, 0.1, 0.4, 0.2])
    np.testing.assert_array_equal(c.mix(g, 4), g)


def test_scoring_learns_only_from_the_past():
    vocab = 10
    x = np.array([[BOS_ID, 7, 7, 7]])
    y = np.array([[7, 7, 7, EOS_ID]])
    g = np.full((1, 4, vocab), 1 / vocab)
    c = WordCache(vocab, CacheParams(lam=0.5, kappa=1.0, n0=0.0))
    lp = np.exp(cached_log_probs(g, x, y, c))
    # the first 7 is scored before anything is counted: the global model alone
    np.testing.assert_allclose(lp[0, 0], g[0, 0])
    # then the cache holds one 7: lam_u = 0.5, p_cache(7 | 7) = (0 + 1 * 1) / (0 + 1) = 1
    assert lp[0, 1, 7] == pytest.approx(0.5 * 0.1 + 0.5 * 1.0)
    assert c.total == 4  # three 7s and the EOS, counted after each was scored
    # changing a later target changes no earlier position
    y2 = y.copy()
    y2[0, 2] = 8
    lp2 = np.exp(cached_log_probs(g, x, y2, WordCache(vocab, CacheParams(lam=0.5, kappa=1.0, n0=0.0))))
    np.testing.assert_allclose(lp2[0, :3], lp[0, :3])
    # without learning, the cache scores from what it held before
    frozen = WordCache(vocab, CacheParams(lam=0.5, kappa=1.0, n0=0.0))
    np.testing.assert_allclose(np.exp(cached_log_probs(g, x, y, frozen, learn=False)), g)


def test_pad_positions_keep_the_global_distribution():
    x = np.array([[BOS_ID, 4, PAD_ID]])
    y = np.array([[4, 5, PAD_ID]])
    g = np.full((1, 3, 6), 1 / 6)
    c = WordCache(6)
    c.add(BOS_ID, 4)
    lp = np.exp(cached_log_probs(g, x, y, c))
    np.testing.assert_allclose(lp[0, 2], g[0, 2])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="lam"):
        CacheParams(lam=1.0)
    with pytest.raises(ValueError, match="kappa"):
        CacheParams(kappa=0.0)
    with pytest.raises(ValueError, match="n0"):
        CacheParams(n0=-1.0)
    with pytest.raises(ValueError, match="ids must be in"):
        WordCache(5).add(BOS_ID, 9)
    with pytest.raises(ValueError, match="shapes"):
        cached_log_probs(np.zeros((1, 2, 5)), np.zeros((1, 3), int), np.zeros((1, 3), int), WordCache(5))


def test_cache_strategy_in_the_personalization_evaluation():
    """model.personalize with `cache`: a user who keeps typing a word the global model never ranks
    first gains from their cache; a user below `min_words` is not scored."""
    from types import SimpleNamespace

    from keyboard.testing import random_weights
    from model.personalize import evaluate_personalization

    vocab = 10
    arrays = [np.zeros_like(a) for a in random_weights("lstm", vocab, 2, 3)]
    arrays[-1] = np.array([0, 0, 0, 0, 2.0, 1, 1, 1, 1, 1], np.float32)  # the global model: always 4
    messages = {"fan": [[BOS_ID, 7, 7, 4, EOS_ID]] * 6, "brief": [[BOS_ID, 7, EOS_ID]] * 2}
    data = SimpleNamespace(tokenizer=SimpleNamespace(words=[f"w{i}" for i in range(vocab)], vocab_size=vocab),
                           users=lambda split: list(messages), tokens=lambda user: messages[user])
    cfg = SimpleNamespace(model=SimpleNamespace(cell="lstm"), data=SimpleNamespace(seq_len=4),
                          train=SimpleNamespace(client_learning_rate=0.1, batch_size=4))
    out = evaluate_personalization(cfg, data, arrays, ["none", "cache"], keystroke_rows=0,
                                   cache=CacheParams(lam=0.6, kappa=1.0, n0=0.0))
    assert out["cache"]["users"] == 2
    fan = {r["user"]: r for r in out["cache"]["per_user"]}["fan"]
    assert fan["global_top1"] == pytest.approx(1 / 3)  # only the 4s, one word in three
    assert fan["personalized_top1"] > fan["global_top1"]
    # "brief" has 1 word on each side: excluded at min_words=3, "fan" (9 words a side) kept
    kept = evaluate_personalization(cfg, data, arrays, ["cache"], keystroke_rows=0, min_words=3)
    assert [r["user"] for r in kept["cache"]["per_user"]] == ["fan"] and kept["cache"]["min_words"] == 3
    # the same scores, summarised over everyone beside the filtered summary
    assert kept["cache"]["all_users"]["users"] == 2
    assert kept["cache"]["all_users"]["personalized_top1"] == pytest.approx(
        evaluate_personalization(cfg, data, arrays, ["cache"], keystroke_rows=0)["cache"]["personalized_top1"])
    # tuning reuses each user's global distribution across the grid and finds what the evaluation finds
    from model.personalize import tune_cache

    grid = [CacheParams(lam=0.0), CacheParams(lam=0.6, kappa=1.0, n0=0.0)]
    best, table = tune_cache(cfg, data, arrays, grid, split="proxy")
    assert best == grid[1] and [r["users"] for r in table] == [2, 2]
    for params, row in zip(grid, table):
        ref = evaluate_personalization(cfg, data, arrays, ["cache"], keystroke_rows=0, cache=params)["cache"]
        assert row["personalized_top1"] == pytest.approx(ref["personalized_top1"])
        assert row["global_top1"] == pytest.approx(ref["global_top1"])
    with pytest.raises(ValueError, match="no proxy user has 100 words"):
        tune_cache(cfg, data, arrays, grid, min_words=100)


def test_bias_cache_is_the_cache_over_the_fine_tuned_bias():
    """`bias_cache`: with no cache weight it is `bias`, with no bias step it is `cache`, and in
    between it is the cache mixed into the fine-tuned model (checked at one position by hand)."""
    from types import SimpleNamespace

    from keyboard.personalize import fine_tune_bias
    from keyboard.forward import NWPWeights, logits, softmax
    from keyboard.testing import random_weights
    from model.personalize import evaluate_personalization, tune_cache

    vocab = 10
    arrays = [np.zeros_like(a) for a in random_weights("lstm", vocab, 2, 3)]
    arrays[-1] = np.array([0, 0, 0, 0, 2.0, 1, 1, 1, 1, 1], np.float32)  # logits = the bias: always 4
    messages = {"fan": [[BOS_ID, 7, 8, 4, EOS_ID]] * 4, "brief": [[BOS_ID, 7, EOS_ID]] * 2}
    data = SimpleNamespace(tokenizer=SimpleNamespace(words=[f"w{i}" for i in range(vocab)], vocab_size=vocab),
                           users=lambda split: list(messages), tokens=lambda user: messages[user])
    cfg = SimpleNamespace(model=SimpleNamespace(cell="lstm"), data=SimpleNamespace(seq_len=4),
                          train=SimpleNamespace(client_learning_rate=0.1, batch_size=4))
    params = CacheParams(lam=0.5, kappa=1.0, n0=0.0)

    def per_user(strategies, lr, cache, bias_cache=None):
        out = evaluate_personalization(cfg, data, arrays, strategies, epochs=1, learning_rate=lr, keystroke_rows=0,
                                       cache=cache, bias_cache=bias_cache)
        return {s: [r["personalized_top1"] for r in out[s]["per_user"]] for s in strategies}

    off = per_user(["bias", "bias_cache"], 2.0, params, CacheParams(lam=0.0))
    assert off["bias_cache"] == off["bias"]
    no_step = per_user(["cache", "bias_cache"], 0.0, params)
    assert no_step["bias_cache"] == no_step["cache"]
    both = evaluate_personalization(cfg, data, arrays, ["bias_cache"], epochs=1, learning_rate=2.0, keystroke_rows=0,
                                    cache=CacheParams(), bias_cache=params)["bias_cache"]
    assert both["cache"] == {"lam": 0.5, "kappa": 1.0, "n0": 0.0}  # its own numbers, not `cache`'s

    # "fan": earlier 2 messages, later 2; one window each side is [BOS 7 8 4] -> [7 8 4 EOS].
    # One step (batch of 2 windows, 6 word targets + 2 EOS): b -= 2 * mean(softmax(b) - onehot).
    b = arrays[-1].astype(np.float64)
    p = np.exp(b) / np.exp(b).sum()
    grad = p - np.array([0, 0, 0, 2, 2, 0, 0, 2, 2, 0]) / 8  # two each of EOS(3), 4, 7, 8 among 8 targets
    tuned = b - 2.0 * grad
    w = NWPWeights.from_list("lstm", arrays)
    ex = np.array([[BOS_ID, 7, 8, 4]] * 2)
    ey = np.array([[7, 8, 4, EOS_ID]] * 2)
    np.testing.assert_allclose(fine_tune_bias(w, ex, ey, 2.0, 1, 4).output_bias, tuned, rtol=1e-6)
    # the later part's first target, 7 after BOS: the cache holds 8 targets (N = 8), c(BOS) = 2,
    # c(BOS, 7) = 2: p_cache(7 | BOS) = (2 + 1 * 2 / 8) / (2 + 1) = 0.75; lam_u = 0.5
    q = softmax(logits(w.replace_output_bias(tuned.astype(np.float32)), ex[:1]))[0, 0]
    cache = _filled(vocab, params, ex, ey)
    assert cache.probabilities(BOS_ID)[7] == pytest.approx(0.75)
    mixed = 0.5 * q + 0.5 * cache.probabilities(BOS_ID)
    assert int(np.argmax(mixed[4:])) + 4 == 7 and int(np.argmax(q[4:])) + 4 != 7  # the cache flips this word
    # and the evaluation does what this hand computation says: the logits are the bias alone (every
    # other weight is zero), so q holds at each position and the cache, by the same counts, flips
    # 8 after 7 and 4 after 8 too: bias_cache gets all three later words of "fan", bias one at most
    out = evaluate_personalization(cfg, data, arrays, ["bias", "bias_cache"], epochs=1, learning_rate=2.0,
                                   keystroke_rows=0, cache=params, bias_cache=params)
    fan = {s: next(r["personalized_top1"] for r in out[s]["per_user"] if r["user"] == "fan") for s in out}
    assert fan["bias_cache"] == 1.0 and fan["bias"] <= 1 / 3
    # tuning over the fine-tuned model finds what the evaluation finds
    grid = [CacheParams(lam=0.0), params]
    best, table = tune_cache(cfg, data, arrays, grid, split="proxy", base="bias", learning_rate=2.0, epochs=1)
    for point, row in zip(grid, table):
        ref = evaluate_personalization(cfg, data, arrays, ["bias_cache"], epochs=1, learning_rate=2.0, keystroke_rows=0,
                                       bias_cache=point)["bias_cache"]
        assert row["personalized_top1"] == pytest.approx(ref["personalized_top1"])
        assert row["global_top1"] == pytest.approx(ref["global_top1"])
    with pytest.raises(ValueError, match="base must be one of"):
        tune_cache(cfg, data, arrays, grid, base="adapter")


def _filled(vocab: int, params: CacheParams, x: np.ndarray, y: np.ndarray) -> WordCache:
    c = WordCache(vocab, params)
    c.add_windows(x, y)
    return c
