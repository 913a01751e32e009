"""The keyboard vocabulary: a SentencePiece word-level model with fixed special ids.

Gboard's next-word model predicts whole words from a fixed word vocabulary (Hard et al.
2018, "Federated Learning for Mobile Keyboard Prediction", arXiv:1811.03604, uses 10k words),
so fedkeys trains SentencePiece (Kudo and Richardson 2018, arXiv:1808.06226) with
`model_type="word"`: one id per normalised word (data/text.py), the `vocab_size - 4` most
frequent words of the **proxy users only**, every other word mapped to UNK. A word-level
vocabulary makes "the next word" one prediction, so top-k recall is over whole words, and an
out-of-vocabulary word is a target the keyboard can never suggest (a miss; docs/data.md).

Ids 0..3 are fixed (data/special_ids.py) and the trained `spm.model` stores them, so every
bundle that ships the model carries them too. Training is deterministic (one thread, the whole
input, frequency ties broken by the word) and silent (`minloglevel=2`).
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import sentencepiece as spm

from data.special_ids import BOS_ID, EOS_ID, PAD_ID, SPECIAL_PIECES, UNK_ID
from data.text import normalise

__all__ = ["PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "Tokenizer", "train_tokenizer"]

_WORD_MARK = "\u2581"  # SentencePiece's word-boundary marker, prefixed to every word piece
_MIN_VOCAB = len(SPECIAL_PIECES) + 1


def train_tokenizer(texts: Iterable[str], model_prefix: str, vocab_size: int) -> "Tokenizer":
    """Train a word-level SentencePiece model and return it loaded.

    Args:
        texts: raw messages (of proxy users only); each is normalised with data.text first.
        model_prefix: writes `<model_prefix>.model` and `<model_prefix>.vocab`.
        vocab_size: ids in total, the four specials included. If the texts hold fewer
            distinct words, the vocabulary is smaller (never padded with unused ids).

    Returns:
        The trained Tokenizer.

    Raises:
        ValueError: if vocab_size is too small or the texts contain no words.
    """
    if vocab_size < _MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {_MIN_VOCAB} (4 specials + 1 word), got {vocab_size}")
    lines = [line for line in (normalise(t) for t in texts) if line]
    if not lines:
        raise ValueError("cannot train a vocabulary: expected at least one message with words, got none")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,  # in memory: the bytes record no temporary path, so they are reproducible
        model_type="word",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary instead of an error
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_piece=SPECIAL_PIECES[PAD_ID],
        unk_piece=SPECIAL_PIECES[UNK_ID],
        bos_piece=SPECIAL_PIECES[BOS_ID],
        eos_piece=SPECIAL_PIECES[EOS_ID],
        normalization_rule_name="identity",  # data/text.py already normalised
        character_coverage=1.0,
        max_sentence_length=1 << 20,  # long speeches must not be skipped
        max_sentencepiece_length=64,
        split_by_number=False,
        split_by_unicode_script=False,
        input_sentence_size=0,  # use every line: no sampling, so deterministic
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
    with open(model_prefix + ".model", "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    with open(model_prefix + ".vocab", "w", encoding="utf-8") as f:
        for i in range(sp.vocab_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")
    return Tokenizer(model_prefix + ".model")


class Tokenizer:
    """A trained word vocabulary: messages to ids and ids to words.

    Args:
        path: a `spm.model` written by `train_tokenizer`.

    Raises:
        ValueError: if the model's special ids are not PAD=0, UNK=1, BOS=2, EOS=3.
    """

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self._sp = spm.SentencePieceProcessor(model_file=self.path)
        got = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if got != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(f"{self.path}: expected special ids (pad, unk, bos, eos) = (0, 1, 2, 3), got {got}")
        self._words = [self._to_word(self._sp.id_to_piece(i)) for i in range(self._sp.vocab_size())]
        self._index = {w: i for i, w in enumerate(self._words) if i >= len(SPECIAL_PIECES)}

    @staticmethod
    def _to_word(piece: str) -> str:
        return piece[1:] if piece.startswith(_WORD_MARK) else piece

    @property
    def vocab_size(self) -> int:
        """Number of ids, the four specials included."""
        return len(self._words)

    @property
    def words(self) -> list[str]:
        """The word of every id (specials as `<pad>`, `<unk>`, `<s>`, `</s>`)."""
        return list(self._words)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode raw messages as `BOS w1 .. wn EOS`, unknown words as UNK.

        Args:
            texts: raw messages; each is normalised with data.text.

        Returns:
            One id list per message (an empty message gives `[BOS, EOS]`).
        """
        if isinstance(texts, str):
            raise ValueError("encode expects a sequence of messages, got a single str")
        return [[BOS_ID] + self.encode_words(normalise(t).split()) + [EOS_ID] for t in texts]

    def encode_words(self, words: Sequence[str]) -> list[int]:
        """Ids of already-normalised words, without BOS/EOS."""
        get = self._index.get
        return [get(w, UNK_ID) for w in words]

    def word_to_id(self, word: str) -> int:
        """The id of a normalised word, or UNK_ID."""
        return self._index.get(word, UNK_ID)

    def id_to_word(self, i: int) -> str:
        """The word for id `i` (specials as `<pad>`, `<unk>`, `<s>`, `</s>`).

        Raises:
            ValueError: if `i` is outside [0, vocab_size).
        """
        if not 0 <= int(i) < len(self._words):
            raise ValueError(f"id must be in [0, {len(self._words)}), got {i}")
        return self._words[int(i)]

    def decode(self, ids: Sequence[int]) -> str:
        """Words of `ids` joined by spaces, PAD/BOS/EOS left out."""
        return " ".join(self.id_to_word(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID))
