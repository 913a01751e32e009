"""TFF's own federated text datasets, written as fedkeys JSONL ({"user", "text"} per line).

`fedkeys data --source tff:stackoverflow` (or `tff:shakespeare`) calls `export_tff_source`,
then prepares the JSONL like any other corpus, so TFF's loaders feed the same splits,
vocabulary and metrics as every other source. The loaders download from Google's servers into
a cache directory the first time; without network access they fail, and this module says so.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

from tqdm.auto import tqdm

# source name -> (loader attribute in tff.simulation.datasets, the text feature of an example)
TFF_SOURCES = {"stackoverflow": ("stackoverflow", "tokens"), "shakespeare": ("shakespeare", "snippets")}


def load_tff_train(name: str, cache_dir: str) -> Any:
    """The training ClientData of TFF's `name` dataset, downloaded into `cache_dir` if needed.

    Raises:
        ValueError: an unknown name.
        RuntimeError: the download failed (offline, or the server refused), with what to do.
    """
    if name not in TFF_SOURCES:
        raise ValueError(f"unknown TFF source {name!r}; expected one of {sorted(TFF_SOURCES)}")
    import tensorflow_federated as tff

    module = getattr(tff.simulation.datasets, TFF_SOURCES[name][0])
    os.makedirs(cache_dir, exist_ok=True)
    try:
        return module.load_data(cache_dir=cache_dir)[0]
    except Exception as e:  # urllib, HTTP and file errors all mean the same thing to the user
        raise RuntimeError(
            f"could not load TFF's {name} dataset into {cache_dir}: {type(e).__name__}: {e}. "
            f"This machine may be offline: download it once where the network is reachable "
            f"(the same command with the same --cache-dir), copy the cache directory here, "
            f"or use --source jsonl:PATH with your own per-user text.") from None


def client_data_to_jsonl(client_data: Any, text_key: str, out_path: str, max_users: int = 0,
                         progress: bool = True) -> dict[str, int]:
    """Write every example of every client as one JSONL line; return user and message counts."""
    ids = list(client_data.client_ids)
    if max_users:
        ids = ids[:max_users]
    users = messages = 0
    opener = gzip.open if out_path.endswith(".gz") else open
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with opener(out_path, "wt", encoding="utf-8") as f:
        for cid in tqdm(ids, desc="tff users", disable=not progress):
            users += 1
            for example in client_data.create_tf_dataset_for_client(cid):
                text = example[text_key].numpy().decode("utf-8")
                f.write(json.dumps({"user": cid, "text": text}) + "\n")
                messages += 1
    return {"users": users, "messages": messages}


def export_tff_source(name: str, cache_dir: str, out_path: str, max_users: int = 0) -> str:
    """Load TFF's `name` dataset and write it as JSONL at `out_path`; return the path."""
    client_data = load_tff_train(name, cache_dir)
    client_data_to_jsonl(client_data, TFF_SOURCES[name][1], out_path, max_users)
    return out_path
