"""keyboard/: the numpy forward pass on hand-computed numbers, the strip for typed text, the
text-in API on a real (SentencePiece) bundle, and `fedkeys suggest` (also under a pseudo-terminal)."""

from __future__ import annotations

import math
import os
import pty
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from data.text import split_partial
from keyboard.forward import NWPWeights, hidden_states, logits, next_logits, softmax
from keyboard.strip import Keyboard
from keyboard.testing import make_keyboard_bundle, random_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731


def test_lstm_two_steps_hand_computed():
    # V=5, E=1, U=1; gates [i, f, c, o] as Keras' LSTMCell.
    emb = np.array([[0.0], [0.0], [1.0], [2.0], [0.0]])
    k, r, b = np.array([[0.5, -0.5, 1.0, 0.2]]), np.array([[0.3, 0.1, -0.4, 0.6]]), np.array([0.1, 1.0, 0.0, -0.2])
    proj, pb, ob = np.array([[2.0]]), np.array([0.5]), np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    w = NWPWeights.from_list("lstm", [emb, k, r, b, proj, pb, ob])
    # step 1, x = 1 (id 2), h = c = 0
    i1, _f1, g1, o1 = sig(0.6), sig(0.5), math.tanh(1.0), sig(0.0)  # f1 multiplies c0 = 0
    c1 = i1 * g1
    h1 = o1 * math.tanh(c1)
    # step 2, x = 2 (id 3)
    z = [2 * kk + bb + h1 * rr for kk, bb, rr in zip(k[0], b, r[0])]
    c2 = sig(z[1]) * c1 + sig(z[0]) * math.tanh(z[2])
    h2 = sig(z[3]) * math.tanh(c2)
    out = hidden_states(w, np.array([2, 3]))
    np.testing.assert_allclose(out[:, 0], [2 * h1 + 0.5, 2 * h2 + 0.5], rtol=1e-6)
    np.testing.assert_allclose(logits(w, np.array([[2, 3]]))[0, 1], (2 * h2 + 0.5) * emb[:, 0] + ob, rtol=1e-6)


def test_cifg_two_steps_hand_computed():
    # V=5, E=1, U=1; gates [f, c, o], input gate 1 - f, projection P inside the recurrence.
    emb = np.array([[0.0], [0.0], [1.0], [-1.0], [0.5]])
    k, r, b = np.array([[0.4, 1.5, -0.3]]), np.array([[0.2, -0.7, 0.9]]), np.array([1.0, 0.0, 0.1])
    proj, ob = np.array([[1.5]]), np.zeros(5)
    w = NWPWeights.from_list("cifg", [emb, k, r, b, proj, ob])
    f1, g1, o1 = sig(1.4), math.tanh(1.5), sig(-0.2)
    c1 = (1 - f1) * g1
    h1 = o1 * math.tanh(c1) * 1.5
    z = [-kk + bb + h1 * rr for kk, bb, rr in zip(k[0], b, r[0])]
    c2 = sig(z[0]) * c1 + (1 - sig(z[0])) * math.tanh(z[1])
    h2 = sig(z[2]) * math.tanh(c2) * 1.5
    np.testing.assert_allclose(hidden_states(w, np.array([2, 3]))[:, 0], [h1, h2], rtol=1e-6)
    np.testing.assert_allclose(next_logits(w, [2, 3]), h2 * emb[:, 0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_forward_is_causal_and_batched(cell):
    w = NWPWeights.from_list(cell, random_weights(cell, 30, 6, 9, seed=3))
    ids = np.random.default_rng(0).integers(2, 30, size=(3, 7))
    full = logits(w, ids)
    changed = ids.copy()
    changed[:, 4:] = 0
    np.testing.assert_array_equal(logits(w, changed)[:, :4], full[:, :4])
    np.testing.assert_allclose(next_logits(w, ids[1, :5]), full[1, 4], rtol=1e-5, atol=1e-6)


def test_weights_refused_with_what_was_expected():
    arrays = random_weights("lstm", 20, 4, 5)
    with pytest.raises(ValueError, match="6 weight arrays, got 8"):
        NWPWeights.from_list("cifg", arrays + [np.zeros(3)])
    arrays[2] = np.zeros((4, 20), np.float32)
    with pytest.raises(ValueError, match=r"expected shapes .*\(5, 20\)"):
        NWPWeights.from_list("lstm", arrays)
    with pytest.raises(ValueError, match="cell"):
        NWPWeights.from_list("gru", arrays)
    w = NWPWeights.from_list("lstm", random_weights("lstm", 20, 4, 5))
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        next_logits(w, [2, 20])


@pytest.mark.parametrize("text,expected", [
    ("see you", ("see ", "you")),
    ("see you ", ("see you ", "")),
    ("See YOU", ("see ", "you")),
    ("I don\u2019", ("i ", "don'")),
    ("", ("", "")),
    ("thanks!", ("thanks!", "")),
    ("at 9:3", ("at 9:", None)),          # a number in progress
    ("hi @sa", ("hi @", None)),           # a handle in progress
    ("www.goo", ("www.", None)),          # a link in progress
    ("mp3", ("", None)),                  # a word holding a digit is a number
])
def test_split_partial(text, expected):
    assert split_partial(text) == expected


VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "<num>", "the", "then", "there", "you", "your"]
BIAS = [0.0, 5.0, 0.0, 4.0, 6.0, 3.0, 1.0, 2.0, 2.5, 0.5]


@pytest.fixture()
def flat_keyboard() -> Keyboard:
    """A model whose next-word distribution is softmax(BIAS) whatever the context: zero
    embedding, so every state is zero and the logits are the output bias."""
    arrays = [np.zeros_like(a) for a in random_weights("lstm", len(VOCAB), 2, 3)]
    arrays[-1] = np.array(BIAS, np.float32)
    return Keyboard(NWPWeights.from_list("lstm", arrays), VOCAB, seq_len=4)


def test_strip_hides_specials_and_placeholders(flat_keyboard):
    p = softmax(np.array(BIAS))
    strip = flat_keyboard.suggest("hello ")
    assert strip.kind == "next" and strip.words == ["the", "you", "there"]  # not <num>, <unk>, </s>
    assert [s.prob for s in strip.suggestions] == pytest.approx([p[5], p[8], p[7]])
    assert flat_keyboard.suggest("hello th").words == ["the", "there", "then"]
    assert flat_keyboard.suggest("Yo").words == ["you", "your"]
    assert flat_keyboard.suggest("hello th").prefix == "th"
    assert flat_keyboard.suggest("zz").suggestions == ()
    assert flat_keyboard.suggest("at 9:3").kind == "none"
    assert flat_keyboard.completions("the ") == ()


def test_evaluate_hand_computed(flat_keyboard):
    # model.metrics ranks every non-special id: [<num>, the, you, there, ...]. Targets "the" and
    # "you": both top-3, neither top-1. Keystroke savings: both in the first strip, saving
    # 3 - 1 = 2 of 3 letters each.
    r = flat_keyboard.evaluate(["The you!", ""])
    assert (r["words"], r["top1"], r["top3"]) == (2, 0.0, 1.0)
    assert r["keystroke_savings"] == pytest.approx(4 / 6)


def test_context_is_the_last_seq_len_ids(flat_keyboard):
    assert flat_keyboard.context("the the you") == [2, 5, 5, 8]
    assert flat_keyboard.context("you the the you your") == [5, 5, 8, 9]  # last T = 4 of BOS + 5 words
    assert flat_keyboard.context("the zebra") == [2, 5, 1]


TEXTS = ["see you tomorrow at the station", "see you later then", "thanks for the help",
         "are you coming tomorrow", "the train is late again", "i will call you later"] * 5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("kb") / "bundle")
    make_keyboard_bundle(out, TEXTS, cell="cifg", favourite="tomorrow", model_version=4)
    return out


def test_load_bundle_and_run_dirs(bundle, tmp_path):
    kb = Keyboard.load(bundle)
    assert kb.version == 4 and kb.weights.cell == "cifg"
    assert kb.next_words("see you")[0].word == "tomorrow"
    assert sorted(kb.suggest("see you la").words) == ["late", "later"]
    run = tmp_path / "run"
    os.makedirs(run)
    os.symlink(bundle, run / "bundle")
    assert Keyboard.load(str(run)).next_words("x") == kb.next_words("x")
    with pytest.raises(FileNotFoundError, match="expected a bundle"):
        Keyboard.load(str(tmp_path))


def _fedkeys(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; from fedkeys.cli import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'fedkeys suggest imported TensorFlow'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_suggest_prints_three_words_without_tensorflow(bundle):
    done = _fedkeys("suggest", "--bundle", bundle, "see you")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("next words:") and lines[0].split()[2] == "tomorrow"
    assert len(lines[0].split()[2:]) == 6  # three words, three probabilities
    assert lines[1].startswith("completing 'you':")
    bad = _fedkeys("suggest", "--bundle", bundle)
    assert bad.returncode == 2 and "either a text or --interactive" in bad.stderr


def _read_until(fd: int, marker: bytes, timeout_s: float = 60.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout_s
    while marker not in got:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} from the terminal within {timeout_s} s; got {got!r}"
        got += os.read(fd, 4096)
    return got


def test_cli_interactive_under_a_pseudo_terminal(bundle):
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fedkeys.cli", "suggest", "--bundle", bundle, "--interactive"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, close_fds=True)
    os.close(slave)
    try:
        banner = _read_until(master, b"> ")
        assert b"model v4" in banner
        os.write(master, b"see you\n")
        answer = _read_until(master, b"> ")
        assert b"next words:" in answer and b"tomorrow" in answer and b"completing 'you':" in answer
        os.write(master, b"thanks for the \n")
        answer = _read_until(master, b"> ")
        assert b"next words:" in answer and b"completing" not in answer
        os.write(master, b"\x04")  # Ctrl-D: end of input on a terminal
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
