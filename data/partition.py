"""Partitioners: give a corpus without user ids a federated (per-client) structure.

Three schemes, each a pure function from records to `{client_id: [record indices]}`:

- `iid`: a seeded shuffle dealt into `num_clients` near-equal shards: the unrealistic
  best case, useful as a control (McMahan et al. 2017, arXiv:1602.05629, sec. 3).
- `dirichlet`: for every label (a topic, a category, a source), its records are split among
  the clients with proportions drawn from Dirichlet(alpha): small alpha gives each client a
  few labels, large alpha approaches IID (Hsu, Qi and Brown 2019, arXiv:1909.06335).
- `natural`: one client per value of a natural key (an author, a thread, a play), as LEAF
  builds Shakespeare and Stack Overflow clients (Caldas et al. 2018, arXiv:1812.01097).

`partition_jsonl` applies one of them to a JSONL file of `{"text", ...}` records and writes
`{"user", "text"}` lines, the input of `DataConfig.source = "jsonl:PATH"`.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from data.corpus import iter_json_objects

Partition = dict[str, list[int]]  # client id -> record indices, ascending
SCHEMES = ("iid", "dirichlet", "natural")


def client_name(i: int) -> str:
    """Client id of the i-th synthetic client."""
    return f"client{i:05d}"


def iid(num_records: int, num_clients: int, seed: int) -> Partition:
    """Deal a seeded permutation of the records round-robin into `num_clients` shards.

    Raises:
        ValueError: if num_clients < 1 or there are fewer records than clients.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_records < num_clients:
        raise ValueError(f"need at least one record per client: {num_clients} clients, got {num_records} records")
    perm = np.random.default_rng([seed, 0x11D]).permutation(num_records)
    return {client_name(c): sorted(perm[c::num_clients].tolist()) for c in range(num_clients)}


def dirichlet(labels: Sequence[Any], num_clients: int, alpha: float, seed: int) -> Partition:
    """Split each label's records among clients with Dirichlet(alpha) proportions.

    Args:
        labels: one label per record (any hashable).
        num_clients: number of clients.
        alpha: concentration (> 0); small = each client sees few labels.
        seed: seed of the proportions and of the order within a label.

    Returns:
        A partition; clients that received no record are left out.

    Raises:
        ValueError: if num_clients < 1 or alpha <= 0.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng([seed, 0xD1])
    groups: dict[Any, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    owned: list[list[int]] = [[] for _ in range(num_clients)]
    for label in sorted(groups, key=repr):
        idx = rng.permutation(np.array(groups[label]))
        share = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.round(np.cumsum(share)[:-1] * len(idx)).astype(int)
        for c, part in enumerate(np.split(idx, cuts)):
            owned[c].extend(part.tolist())
    return {client_name(c): sorted(ix) for c, ix in enumerate(owned) if ix}


def natural(keys: Sequence[str]) -> Partition:
    """One client per distinct key, named by the key, records in file order.

    Raises:
        ValueError: if a key is empty or not a str.
    """
    out: Partition = {}
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key:
            raise ValueError(f"record {i}: expected a non-empty string key, got {key!r}")
        out.setdefault(key, []).append(i)
    return out


def partition_jsonl(in_path: str, out_path: str, scheme: str, field: str = "", num_clients: int = 100,
                    alpha: float = 0.5, seed: int = 0) -> dict[str, int]:
    """Partition a JSONL file of records with a `text` field into `{"user", "text"}` lines.

    Args:
        in_path: JSONL, one object per line with a string `text` (and `field` for
            `dirichlet`/`natural`).
        out_path: where to write the per-user JSONL (plain text).
        scheme: "iid", "dirichlet" (labels from `field`) or "natural" (client ids from `field`).
        field: the record key holding the label or natural id.
        num_clients: clients for iid and dirichlet.
        alpha: Dirichlet concentration.
        seed: partition seed.

    Returns:
        `{"records": .., "clients": ..}`.

    Raises:
        ValueError: on an unknown scheme, a missing field, or a malformed line (with its number).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}")
    if scheme != "iid" and not field:
        raise ValueError(f"scheme {scheme!r} needs field=<record key>, got none")
    texts: list[str] = []
    values: list[Any] = []
    for lineno, obj in iter_json_objects(in_path):
        if not isinstance(obj.get("text"), str):
            raise ValueError(f"{in_path}:{lineno}: expected an object with a string 'text', got keys {sorted(obj)}")
        if field and field not in obj:
            raise ValueError(f"{in_path}:{lineno}: expected field {field!r}, got keys {sorted(obj)}")
        texts.append(obj["text"])
        values.append(obj.get(field))
    if scheme == "iid":
        parts = iid(len(texts), num_clients, seed)
    elif scheme == "dirichlet":
        parts = dirichlet([json.dumps(v, sort_keys=True) for v in values], num_clients, alpha, seed)
    else:
        parts = natural([str(v) for v in values])
    owner = {i: user for user, ix in parts.items() for i in ix}
    with open(out_path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"user": owner[i], "text": text}, ensure_ascii=False) + "\n")
    return {"records": len(texts), "clients": len(parts)}
