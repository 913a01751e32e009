"""Per-user text from JSONL files: `{"user": str, "text": str}` per line, gzip or plain.

This is the format of ../shared/corpora/ and the one to export your own keyboard logs to
(`DataConfig.source = "jsonl:PATH"`). Every line must be a JSON object with a string `user`
and a string `text`; blank lines are allowed and skipped. Anything else raises ValueError
naming the file and the 1-based line number: no line is dropped silently.

A user's messages keep file order; the timestamp `t` of a message is its 0-based line index
in the file (docs/data.md), so per-user order and interleaving across users are preserved.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import IO, Iterator

Message = tuple[float, str]  # (t, text)
UserMessages = dict[str, list[Message]]


def _open_text(path: str) -> IO[str]:
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def iter_json_objects(path: str) -> Iterator[tuple[int, dict]]:
    """Yield `(1-based line number, object)` for every non-blank line of a JSONL file.

    Args:
        path: gzip (detected by its magic bytes) or plain UTF-8 JSONL.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: on an unreadable line, invalid JSON or a non-object, naming the path and line.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    with _open_text(path) as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except (UnicodeDecodeError, EOFError, OSError) as e:
                raise ValueError(f"{path}:{lineno + 1}: unreadable line ({e})") from None
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def iter_jsonl(path: str) -> Iterator[tuple[int, str, str]]:
    """Yield `(line_index, user, text)` for every non-blank line of a {"user","text"} JSONL file.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: on a malformed line, naming the path and the 1-based line number.
    """
    for index, (lineno, obj) in enumerate(iter_json_objects(path)):
        user, text = obj.get("user"), obj.get("text")
        if not isinstance(user, str) or not user:
            raise ValueError(f"{path}:{lineno}: expected a non-empty string 'user', got {user!r}")
        if not isinstance(text, str):
            raise ValueError(f"{path}:{lineno}: expected a string 'text', got {text!r}")
        yield index, user, text


def load_jsonl(path: str, min_messages: int = 1, max_users: int = 0,
               max_messages_per_user: int = 0) -> UserMessages:
    """Load a JSONL corpus grouped by user, with the DataConfig filters applied.

    Args:
        path: the corpus file.
        min_messages: drop users with fewer messages than this (after the per-user cap).
        max_users: keep at most this many users (0 = all): the first ones in order of their
            first message in the file, after `min_messages`, so the choice is deterministic.
        max_messages_per_user: keep each user's first this-many messages (0 = all).

    Returns:
        `{user: [(t, text), ...]}` in order of first appearance.

    Raises:
        ValueError: on a malformed line or a negative filter value.
    """
    for name, value in (("min_messages", min_messages), ("max_users", max_users),
                        ("max_messages_per_user", max_messages_per_user)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    users: UserMessages = {}
    for index, user, text in iter_jsonl(path):
        msgs = users.setdefault(user, [])
        if not max_messages_per_user or len(msgs) < max_messages_per_user:
            msgs.append((float(index), text))
    kept: UserMessages = {}
    for user, msgs in users.items():
        if len(msgs) >= min_messages:
            kept[user] = msgs
            if max_users and len(kept) >= max_users:
                break
    return kept
