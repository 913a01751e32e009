"""Personalization on simulated phones: each phone's own fine-tuned weights against the global
model, on the messages its owner typed after the ones it trained on.

A phone made with `keep_personal` keeps, beside the global weights it downloads, the weights its
last complete local training produced (the TFLite `train` signature's SGD from the global
version it was sent, on its owner's data): the `all` strategy of model/personalize.py, run by the
phones themselves between rounds and never uploaded. `fedkeys devices --personalize F` holds back
the latest share F of each phone owner's messages (data split in time, as
keyboard.personalize.split_in_time does) and, after the rounds, scores both models on them with
the numpy forward pass; the summary is keyboard.personalize.summarise's (Wang et al. 2019).

A phone that was never selected has no personal weights and is scored with the global model on
both sides (no gain); `users_personalized` counts the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from keyboard.forward import NWPWeights
from keyboard.personalize import UserResult, score_user, summarise

Examples = tuple[np.ndarray, np.ndarray]


def personalization_report(phones: Mapping[str, object], global_weights: Sequence[np.ndarray],
                           holdout: Mapping[str, Examples], cell: str, vocabulary: Sequence[str] | None = None,
                           keystroke_rows: int = 8) -> dict:
    """Global against each phone's personal weights on its held-back later windows.

    Args:
        phones: device id -> `device_sim.phone.Phone` (made with keep_personal).
        global_weights: the latest published global model, canonical order.
        holdout: device id -> (x, y) of the owner's later windows, never trained on.
        cell: the model's cell ("lstm" or "cifg").
        vocabulary: the words (for keystroke savings; None skips them).
        keystroke_rows: windows per user scored for keystroke savings.

    Returns:
        summarise(...) plus `users_personalized`, `personal_versions` and `per_user`.

    Raises:
        ValueError: when `holdout` names no phone, or names a phone that does not exist.
    """
    unknown = sorted(set(holdout) - set(phones))
    if unknown or not holdout:
        raise ValueError(f"holdout must name phones of the fleet; unknown: {unknown[:5]}, {len(holdout)} given")
    g = NWPWeights.from_list(cell, global_weights)
    results, versions = [], {}
    for device_id in sorted(holdout):
        x, y = holdout[device_id]
        if len(x) == 0:
            continue
        phone = phones[device_id]
        base = score_user(g, x, y, vocabulary, keystroke_rows)
        personal = getattr(phone, "personal", None)
        if personal is None:
            results.append(UserResult(device_id, base, base))
            continue
        versions[device_id] = phone.personal_version
        mine = score_user(NWPWeights.from_list(cell, personal), x, y, vocabulary, keystroke_rows)
        results.append(UserResult(device_id, base, mine))
    out = summarise(results)
    out.update(users_personalized=len(versions), personal_versions=sorted(set(versions.values())),
               per_user=[{"user": r.user, "global_top1": r.global_scores["top1"],
                          "personalized_top1": r.personalized["top1"]} for r in results])
    return out
