"""Per-user shards on disk: `shards/<split>/<user file>.jsonl`, one message per line.

Each line is `{"user": str, "t": float, "text": str}`: `t` is seconds since the simulation
epoch for synthetic users, or the message's line index for JSONL corpora. Lines are in
ascending `t`. A phone in device_sim/ reads exactly its own file, as a phone would hold
only its own keystrokes.

File names: a user id made only of `A-Z a-z 0-9 _ . -` (not starting with `.`) is used as
is; any other id is percent-encoded (`urllib.parse.quote(user, safe="")`, with `.` at the
start encoded as `%2E`), so IRC nicks such as `foo|away` or `[m]x` still give one safe file.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable
from urllib.parse import quote

from data.corpus import Message

_SAFE = re.compile(r"[A-Za-z0-9_.\-]+")


def user_filename(user: str) -> str:
    """The shard file name (without directory) of a user id."""
    if not user:
        raise ValueError("expected a non-empty user id, got ''")
    if _SAFE.fullmatch(user) and not user.startswith("."):
        stem = user
    else:
        stem = quote(user, safe="")
        if stem.startswith("."):
            stem = "%2E" + stem[1:]
    return stem + ".jsonl"


def shard_path(data_dir: str, split: str, user: str) -> str:
    """Path of one user's shard inside a prepared data directory."""
    return os.path.join(data_dir, "shards", split, user_filename(user))


def write_shard(path: str, user: str, messages: Iterable[Message]) -> int:
    """Write one user's messages; return how many were written.

    Raises:
        ValueError: if timestamps decrease.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    count = 0
    last = float("-inf")
    with open(path, "w", encoding="utf-8") as f:
        for t, text in messages:
            if t < last:
                raise ValueError(f"user {user!r}: expected ascending timestamps, got {t} after {last}")
            last = t
            f.write(json.dumps({"user": user, "t": float(t), "text": text}, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_shard(path: str) -> list[Message]:
    """Read one user's `(t, text)` messages back.

    Raises:
        FileNotFoundError: if the shard is missing.
        ValueError: on a malformed line, naming the path and 1-based line number.
    """
    out: list[Message] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                obj = json.loads(line)
                out.append((float(obj["t"]), str(obj["text"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{path}:{lineno}: expected {{\"user\", \"t\", \"text\"}}, got {line[:80]!r} ({e})") from None
    return out


def read_texts(path: str) -> list[str]:
    """Just the message texts of one shard, in order."""
    return [text for _, text in read_shard(path)]
