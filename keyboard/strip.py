"""Typed text in, the suggestion strip out: what a keyboard shows, from a bundle or a run.

    from keyboard.strip import Keyboard
    kb = Keyboard.load("runs/demo/bundle")        # a bundle, or a run directory
    kb.suggest("see you").words                   # the strip for the text as typed
    kb.next_words("see you")                      # top-3 next words, with probabilities
    kb.completions("see yo")                      # top-3 vocabulary words starting with "yo"
    kb.evaluate(["see you tomorrow", ...])        # top-1, top-3, keystroke savings

The text goes through the phone's contract (docs/phone.md): `data.text` normalisation, then
the bundle's `spm.model` word ids, `BOS w1 .. wn`, the last T ids when longer. The strip never
shows a special id or a placeholder (`<num>`, `<url>`, ...). Probabilities are the model's
full-softmax probabilities (not renormalised over the strip), as the `suggest` TFLite
signature returns them. The forward pass is `keyboard.forward` (numpy), so nothing here
imports TensorFlow.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from data.special_ids import BOS_ID, SPECIAL_IDS, UNK_ID
from data.text import PLACEHOLDERS, split_partial, words as text_words
from keyboard.forward import NWPWeights, next_logits, softmax

SLOTS = 3  # a keyboard's strip shows three words


@dataclass(frozen=True)
class Suggestion:
    word: str
    prob: float


@dataclass(frozen=True)
class Strip:
    """What the strip shows for some typed text.

    kind: "next" (the text ends between words), "completion" (of `prefix`, the word being
    typed), or "none" (a link, handle or number is being typed: nothing to offer).
    """

    kind: str
    prefix: str
    suggestions: tuple[Suggestion, ...]

    @property
    def words(self) -> list[str]:
        return [s.word for s in self.suggestions]


class Keyboard:
    """The next-word model with its vocabulary, answering for typed text.

    Args:
        weights: the model's weights (`keyboard.forward.NWPWeights`).
        vocabulary: the word of every id (`Tokenizer.words`), specials included.
        seq_len: T, the longest context the model sees (the bundle's `seq_len`).
        version: the model version, when known (shown by the page and the CLI).
    """

    def __init__(self, weights: NWPWeights, vocabulary: Sequence[str], seq_len: int,
                 version: int | None = None) -> None:
        if len(vocabulary) != weights.vocab_size:
            raise ValueError(f"the vocabulary has {len(vocabulary)} words, the model {weights.vocab_size} ids")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.weights = weights
        self.vocabulary = list(vocabulary)
        self.seq_len = int(seq_len)
        self.version = version
        self._index = {w: i for i, w in enumerate(self.vocabulary) if i not in SPECIAL_IDS}
        hidden = set(SPECIAL_IDS) | {self._index[p] for p in PLACEHOLDERS if p in self._index}
        self.showable = np.ones(weights.vocab_size, bool)
        self.showable[sorted(hidden)] = False
        # words sorted, so the words starting with a prefix are one bisect range
        shown = sorted((w, i) for i, w in enumerate(self.vocabulary) if self.showable[i])
        self._sorted_words = [w for w, _ in shown]
        self._sorted_ids = np.asarray([i for _, i in shown], np.int64)

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> "Keyboard":
        """A bundle directory (manifest.json), a run directory holding `bundle/`, or a run
        directory of `fedkeys train` (weights.npz, config.json, its data's spm.model).

        Raises:
            FileNotFoundError: when `path` is none of these.
            ValueError: when the files do not fit together.
        """
        for bundle in (path, os.path.join(path, "bundle")):
            if os.path.isfile(os.path.join(bundle, "manifest.json")):
                return cls.from_bundle(bundle)
        if os.path.isfile(os.path.join(path, "weights.npz")) and os.path.isfile(os.path.join(path, "config.json")):
            return cls.from_run(path)
        raise FileNotFoundError(f"{path}: expected a bundle (manifest.json), a run directory with bundle/, "
                                "or a `fedkeys train` output (weights.npz and config.json)")

    @classmethod
    def from_bundle(cls, bundle_dir: str, weights_path: str | None = None,
                    version: int | None = None) -> "Keyboard":
        """From a phone bundle (manifest.json, weights.npz, spm.model); `weights_path` replaces
        the bundle's weights (the collector's latest published version)."""
        from data.tokenizer import Tokenizer
        from model.weights_io import load_weights

        with open(os.path.join(bundle_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        model = manifest.get("model")
        if not isinstance(model, dict) or "cell" not in model or "seq_len" not in manifest:
            raise ValueError(f"{bundle_dir}/manifest.json: expected 'model' with 'cell' and 'seq_len', "
                             f"got keys {sorted(manifest)}")
        names = [spec["name"] for spec in manifest["weights"]]
        got, arrays = load_weights(weights_path or os.path.join(bundle_dir, manifest.get("weights_file", "weights.npz")))
        if got != names:
            raise ValueError(f"weights: expected the manifest's names {names}, got {got}")
        tok = Tokenizer(os.path.join(bundle_dir, manifest.get("tokenizer", "spm.model")))
        return cls(NWPWeights.from_list(model["cell"], arrays), tok.words, int(manifest["seq_len"]),
                   manifest.get("model_version") if version is None else version)

    @classmethod
    def from_run(cls, run_dir: str) -> "Keyboard":
        """From a `fedkeys train` output: weights.npz, config.json, and its data's spm.model."""
        from configs import read_config
        from data.tokenizer import Tokenizer
        from model.weights_io import load_weights

        cfg = read_config(run_dir)
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
            data_dir = json.load(f)["data_dir"]
        _, arrays = load_weights(os.path.join(run_dir, "weights.npz"))
        tok = Tokenizer(os.path.join(data_dir, "spm.model"))
        return cls(NWPWeights.from_list(cfg.model.cell, arrays), tok.words, cfg.data.seq_len)

    # -- text to ids ---------------------------------------------------------------------------
    def ids(self, words: Iterable[str]) -> list[int]:
        """`BOS w1 .. wn` for normalised words, unknown words as UNK (Tokenizer.encode_words)."""
        get = self._index.get
        return [BOS_ID] + [get(w, UNK_ID) for w in words]

    def context(self, text: str) -> list[int]:
        """The ids the phone feeds `suggest` for complete words typed: the last T of BOS w1 .. wn."""
        return self.ids(text_words(text))[-self.seq_len:]

    def probabilities(self, text: str) -> np.ndarray:
        """Full-softmax probabilities [V] of the next word after `text` (taken as complete words)."""
        return softmax(next_logits(self.weights, self.context(text)))

    # -- the strip -----------------------------------------------------------------------------
    def _top(self, probs: np.ndarray, ids: np.ndarray, k: int) -> tuple[Suggestion, ...]:
        p = probs[ids]
        top = np.argpartition(-p, k - 1)[:k] if len(p) > k else np.arange(len(p))
        top = top[np.argsort(-p[top], kind="stable")]
        return tuple(Suggestion(self.vocabulary[int(ids[j])], float(p[j])) for j in top)

    def next_words(self, text: str, k: int = SLOTS) -> tuple[Suggestion, ...]:
        """The k most probable showable next words after `text`, best first."""
        return self._top(self.probabilities(text), np.flatnonzero(self.showable), k)

    def matching(self, prefix: str) -> np.ndarray:
        """Ids of the showable words that start with `prefix` (normalised)."""
        lo = bisect.bisect_left(self._sorted_words, prefix)
        hi = bisect.bisect_left(self._sorted_words, prefix + "\U0010ffff")
        return self._sorted_ids[lo:hi]

    def completions(self, text: str, k: int = SLOTS) -> tuple[Suggestion, ...]:
        """The k most probable showable words starting with the word being typed at the end of
        `text`, given the words before it; () when the text does not end inside a word."""
        before, partial = split_partial(text)
        if not partial:
            return ()
        ids = self.matching(partial)
        if ids.size == 0:
            return ()
        return self._top(self.probabilities(before), ids, k)

    def suggest(self, text: str, k: int = SLOTS) -> Strip:
        """The strip for `text` as typed: completions inside a word, next words after one."""
        before, partial = split_partial(text)
        if partial is None:
            return Strip("none", "", ())
        if partial == "":
            return Strip("next", "", self.next_words(text, k))
        ids = self.matching(partial)
        found = self._top(self.probabilities(before), ids, k) if ids.size else ()
        return Strip("completion", partial, found)

    def evaluate(self, texts: Iterable[str], slots: int = SLOTS) -> dict[str, float]:
        """Top-1, top-`slots` recall and keystroke savings over every word of `texts`.

        The definitions of `model.metrics` (UNK targets are misses, EOS is not a target), each
        word predicted from the message before it (the last T ids), as a phone would.
        """
        from keyboard.forward import logits as all_logits
        from model.metrics import KeystrokeSavings, NextWordAccumulator

        acc = NextWordAccumulator(ks=(1, slots))
        ks = KeystrokeSavings(self.vocabulary, slots=slots)
        for text in texts:
            ids = self.ids(text_words(text))
            if len(ids) < 2:
                continue
            targets = np.asarray(ids[1:], np.int64)
            head = min(len(ids) - 1, self.seq_len)  # positions whose whole history fits in T
            rows = [all_logits(self.weights, np.asarray(ids[:head]))]
            rows += [next_logits(self.weights, ids[t + 1 - self.seq_len:t + 1]) for t in range(head, len(ids) - 1)]
            z = np.vstack([r.reshape(-1, self.weights.vocab_size) for r in rows])
            acc.update_logits(z, targets)
            ks.update_logits(z, targets)
        return {**acc.result(), **ks.result()}
