"""Kneser-Ney trigram and most-frequent-word baselines on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from data.ngram import KneserNeyTrigram, MostFrequentWord, score

# BOS=2 EOS=3 a=4 b=5 c=6, V=7. Two messages: "a b", "a c".
CORPUS = [[2, 4, 5, 3], [2, 4, 6, 3]]
V = 7


def test_kn_hand_computed():
    """Worked by hand (Chen and Goodman 1998, eq. 17):

    trigrams (S=window start): (S,BOS,a)=2, (BOS,a,b)=(a,b,EOS)=(BOS,a,c)=(a,c,EOS)=1
      -> n1=4, n2=1, D3=4/6.  continuation N1+(. v w) all 1 -> D2=5/5 clipped to 0.95.
    N1+(. w): a=1 b=1 c=1 EOS=2 -> D1=3/5, total 5, 4 seen; uniform mass 0.6*4/5/7.
    P1(a) = 0.4/5 + 2.4/35 = 0.1485714;  P1(EOS) = 1.4/5 + 2.4/35 = 0.3485714
    P2(a|BOS) = 0.05 + 0.95 P1(a) = 0.1911429;  P2(b|a) = 0.05/2 + 0.95 P1(b) = 0.1661429
    P3(a|S BOS) = (2 - 2/3)/2 + (2/3)(1/2) P2(a|BOS) = 0.7303810
    P3(b|BOS a) = (1 - 2/3)/2 + (2/3)(2/2) P2(b|a) = 0.2774286
    P(EOS | window starting at b) = P2(EOS|b) = 0.05 + 0.95 P1(EOS) = 0.3811429
    """
    lm = KneserNeyTrigram(V).fit(CORPUS)
    assert lm.d3 == pytest.approx(2 / 3) and lm.d2 == pytest.approx(0.95) and lm.d1 == pytest.approx(0.6)
    np.testing.assert_allclose(lm.p1[[4, 3]], [0.1485714, 0.3485714], atol=1e-6)
    p = np.exp(lm.log_probs(np.array([[2, 4]])).astype(np.float64))
    assert p[0, 0, 4] == pytest.approx(0.7303810, abs=1e-6)
    assert p[0, 1, 5] == pytest.approx(0.2774286, abs=1e-6)
    assert p[0, 1, 5] == pytest.approx(p[0, 1, 6])
    q = np.exp(lm.log_probs(np.array([[5]])).astype(np.float64))
    assert q[0, 0, 3] == pytest.approx(0.3811429, abs=1e-6)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)


def test_kn_distributions_normalised_on_random_data():
    rng = np.random.default_rng(0)
    corpus = [[2] + rng.integers(4, 30, size=rng.integers(1, 12)).tolist() + [3] for _ in range(200)]
    lm = KneserNeyTrigram(30).fit(corpus)
    x = rng.integers(1, 30, size=(3, 6))
    np.testing.assert_allclose(np.exp(lm.log_probs(x).astype(np.float64)).sum(-1), 1.0, atol=1e-5)


def test_most_frequent_word():
    # targets a,b,EOS,a,c,EOS + add-one: counts 1,1,1,3,3,2,2 of 13
    mf = MostFrequentWord(V).fit(CORPUS)
    np.testing.assert_allclose(np.exp(mf.log_probs(np.zeros((1, 2), dtype=np.int32))[0, 0]),
                               np.array([1, 1, 1, 3, 3, 2, 2]) / 13, rtol=1e-6)


def test_scored_with_shared_metric():
    metrics = pytest.importorskip("model.metrics")
    corpus = CORPUS + [[2, 4, 5, 3]]  # "a b" twice, "a c" once
    lm = KneserNeyTrigram(V).fit(corpus)
    # x = BOS a b, y = a b EOS: "a" is top-1 after BOS and "b" after "BOS a";
    # EOS is not a target -> 2 words, both top-1 hits.
    x = np.array([[2, 4, 5]], dtype=np.int32)
    y = np.array([[4, 5, 3]], dtype=np.int32)
    got = score(lm, x, y, metrics.NextWordAccumulator(ks=(1, 3)), chunk=1)
    assert got["words"] == 2 and got["top1"] == 1.0
    mf = MostFrequentWord(V).fit(corpus)
    got = score(mf, x, y, metrics.NextWordAccumulator(ks=(1,)))
    assert got["top1"] == 0.5  # always suggests "a"


def test_errors():
    with pytest.raises(ValueError, match="exceed 4"):
        KneserNeyTrigram(4)
    with pytest.raises(ValueError, match="before fit"):
        KneserNeyTrigram(V).log_probs(np.zeros((1, 1), dtype=np.int32))
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        KneserNeyTrigram(V).fit([[2, 9, 3]])
