"""Next-word metrics on hand-computed cases (docs/metrics.md has the same worked example)."""

import math

import numpy as np
import pytest

from data.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from model.metrics import NextWordAccumulator, suggestions


def _logits(rows):
    """rows: list of dicts {token_id: logit}; everything else is -10."""
    out = np.full((len(rows), 8), -10.0)
    for i, r in enumerate(rows):
        for t, v in r.items():
            out[i, t] = v
    return out


def test_strip_never_shows_special_ids():
    scores = _logits([{UNK_ID: 9, EOS_ID: 8, PAD_ID: 7, BOS_ID: 6, 4: 1, 5: 2, 6: 3, 7: 0}])
    assert suggestions(scores, 3)[0].tolist() == [6, 5, 4]


def test_topk_recall_hand_computed():
    # targets: 4 (rank 1), 5 (rank 2), UNK (a miss even though UNK scores highest), EOS and PAD (not counted)
    logits = _logits([
        {4: 5, 5: 4, 6: 3},
        {4: 5, 5: 4, 6: 3},
        {UNK_ID: 9, 4: 5, 5: 4, 6: 3},
        {4: 5},
        {4: 5},
    ])
    y = np.array([4, 5, UNK_ID, EOS_ID, PAD_ID])
    acc = NextWordAccumulator(ks=(1, 3))
    acc.update_logits(logits, y)
    r = acc.result()
    assert r["words"] == 3
    assert r["top1"] == pytest.approx(1 / 3)
    assert r["top3"] == pytest.approx(2 / 3)


def test_perplexity_hand_computed():
    # Two targets with uniform logits over 8 ids: p = 1/8 each, perplexity = 8.
    acc = NextWordAccumulator()
    acc.update_logits(np.zeros((2, 8)), np.array([4, 5]))
    assert acc.result()["perplexity"] == pytest.approx(8.0)
    # One target with p = e^2 / (e^2 + 7): perplexity = 1/p.
    acc = NextWordAccumulator()
    logits = np.zeros((1, 8))
    logits[0, 4] = 2.0
    acc.update_logits(logits, np.array([4]))
    assert acc.result()["perplexity"] == pytest.approx((math.e**2 + 7) / math.e**2)


def test_accumulates_across_batches_and_3d_input():
    acc = NextWordAccumulator()
    logits = np.zeros((2, 3, 8))
    logits[..., 6] = 1.0
    y = np.array([[6, 6, PAD_ID], [5, EOS_ID, PAD_ID]])
    acc.update_logits(logits, y)
    acc.update_logits(logits, y)
    r = acc.result()
    assert r["words"] == 6 and r["top1"] == pytest.approx(4 / 6)


def test_rejects_mismatched_shapes_and_bad_k():
    acc = NextWordAccumulator()
    with pytest.raises(ValueError, match="do not match"):
        acc.update_logits(np.zeros((2, 8)), np.zeros(3, int))
    with pytest.raises(ValueError, match="k must be"):
        suggestions(np.zeros((1, 8)), 5)


def test_keystroke_savings_hand_computed():
    from model.metrics import KeystrokeSavings

    #        0      1      2      3      4       5      6       7
    words = ["<p>", "<u>", "<s>", "</s>", "the", "then", "they", "hello"]
    ks = KeystrokeSavings(words, slots=1)
    # Scores: "then" > "the" > "they" > "hello".
    row = np.array([0, 9, 0, 0, 3.0, 4.0, 2.0, 1.0])
    # Target "the" (3 letters): j=0 strip ["then"]; j=1 prefix "t" -> ["then"]; j=2 prefix "th" -> ["then"]:
    # never offered with one slot -> 0 saved of 3.
    # Target "hello" (5 letters): j=0 -> ["then"]; j=1 prefix "h" -> ["hello"]: tapped after 2 keystrokes,
    # 3 saved of 5.
    # Target UNK: 0 saved of 5 (unk_letters). Target EOS: not counted.
    ks.update_logits(np.stack([row, row, row, row]), np.array([4, 7, 1, 3]))
    r = ks.result()
    assert r["letters"] == 3 + 5 + 5
    assert r["keystroke_savings"] == pytest.approx(3 / 13)
    # With a three-slot strip "the" is offered before any letter: 3 - 1 = 2 saved.
    ks3 = KeystrokeSavings(words, slots=3)
    ks3.update_logits(row[None], np.array([4]))
    assert ks3.result()["keystroke_savings"] == pytest.approx(2 / 3)


def test_keystroke_savings_rejects_vocabulary_mismatch():
    from model.metrics import KeystrokeSavings

    with pytest.raises(ValueError, match="vocabulary has 2 words"):
        KeystrokeSavings(["a", "b"]).update_logits(np.zeros((1, 8)), np.array([4]))
