"""The four reserved token ids, fixed for every vocabulary fedkeys trains.

They are stored with every model (the SentencePiece model is trained with exactly these
`pad_id`/`unk_id`/`bos_id`/`eos_id`), so a phone bundle, a server payload and an evaluation
agree on what id 0..3 mean without reading the vocabulary file. This module imports nothing,
so numpy-only packages (`model.metrics`, `fedmath`) can use the ids without SentencePiece.
"""

from __future__ import annotations

PAD_ID = 0  # padding: never a target, never suggested
UNK_ID = 1  # an out-of-vocabulary word: a target that is always a miss
BOS_ID = 2  # start of a message: the first input of every message
EOS_ID = 3  # end of a message: never counted as a word target

SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")
SPECIAL_ID_NAMES = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}  # as manifest.json stores them
