"""TFF's dataset loaders: conversion tested on local ClientData; the download fails clearly offline."""

import gzip
import json

import pytest

pytestmark = pytest.mark.slow


def test_client_data_to_jsonl_writes_every_example(tmp_path):
    import collections

    import tensorflow_federated as tff

    from federated.datasets import client_data_to_jsonl

    data = tff.simulation.datasets.TestClientData({
        "alice": collections.OrderedDict(tokens=[b"hello there", b"how are you"]),
        "bob": collections.OrderedDict(tokens=[b"fine thanks"]),
    })
    out = tmp_path / "so.jsonl.gz"
    counts = client_data_to_jsonl(data, "tokens", str(out), progress=False)
    assert counts == {"users": 2, "messages": 3}
    lines = [json.loads(line) for line in gzip.open(out, "rt")]
    assert lines == [{"user": "alice", "text": "hello there"}, {"user": "alice", "text": "how are you"},
                     {"user": "bob", "text": "fine thanks"}]


def test_unknown_source_and_failed_download_say_what_to_do(tmp_path, monkeypatch):
    import tensorflow_federated as tff

    from federated.datasets import load_tff_train

    with pytest.raises(ValueError, match="expected one of"):
        load_tff_train("reddit", str(tmp_path))

    def offline(cache_dir=None):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tff.simulation.datasets.shakespeare, "load_data", offline)
    with pytest.raises(RuntimeError, match="may be offline.*jsonl:PATH"):
        load_tff_train("shakespeare", str(tmp_path / "cache"))
