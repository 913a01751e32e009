"""The collector's keyboard page and its suggestion endpoint (Flask test client, real SQLite):
suggestions from the newest published version, and the attacks the endpoint must refuse."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from keyboard.testing import make_keyboard_bundle, write_weights
from server.app import create_app
from server.keyboard import MAX_BODY_BYTES, MAX_TEXT_CHARS
from server.testing import config_dict, make_bundle

TEXTS = ["see you tomorrow at the station", "see you later then", "thanks for the help",
         "are you coming tomorrow", "the train is late again", "i will call you later"] * 5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("kb") / "bundle")
    make_keyboard_bundle(out, TEXTS, cell="cifg", favourite="tomorrow")
    return out


def _client(bundle: str, tmp_path, **collector):
    app = create_app(test_config=config_dict(bundle, str(tmp_path / "state"), collector=collector))
    return app, app.test_client()


def _ask(client, text, **kwargs):
    return client.post("/keyboard/suggest", json={"text": text}, **kwargs)


def test_page_is_static_and_self_contained(bundle, tmp_path):
    _, client = _client(bundle, tmp_path)
    r = client.get("/keyboard")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    page = r.get_data(as_text=True)
    assert not re.search(r'(src|href)\s*=\s*"', page), "the page must load no other file"
    assert sorted(set(re.findall(r'fetch\("([^"]+)"', page))) == ["/keyboard/suggest"]
    assert "innerHTML" not in page, "suggestions are text, never markup"


def test_suggestions_follow_the_newest_version(bundle, tmp_path):
    app, client = _client(bundle, tmp_path)
    r = _ask(client, "see you ")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["model_version"], body["kind"], body["suggestions"][0]["word"]) == (0, "next", "tomorrow")
    assert len(body["suggestions"]) == 3 and body["suggestions"][0]["prob"] > 0.9
    r = _ask(client, "see you la").get_json()
    assert r["kind"] == "completion" and r["prefix"] == "la"
    assert sorted(s["word"] for s in r["suggestions"]) == ["late", "later"]
    assert _ask(client, "at 9:3").get_json()["kind"] == "none"

    # publish version 1 whose favourite is "station": the endpoint answers with it
    from data.tokenizer import Tokenizer
    from keyboard.strip import Keyboard

    kb = Keyboard.load(bundle)
    arrays = [kb.weights.embedding, kb.weights.kernel, kb.weights.recurrent_kernel, kb.weights.bias,
              kb.weights.projection, np.array(kb.weights.output_bias)]
    arrays[-1][Tokenizer(bundle + "/spm.model").word_to_id("tomorrow")] -= 20.0
    arrays[-1][Tokenizer(bundle + "/spm.model").word_to_id("station")] += 20.0
    path = write_weights(str(tmp_path / "v1.npz"), "cifg", arrays)
    store = app.extensions["fedkeys"]["collector"].store
    with store.write() as c:
        store.insert_model(c, 1, 0, path, "x" * 64, 1, time.time(), 0.0, 0.0, {})
    body = _ask(client, "see you ").get_json()
    assert (body["model_version"], body["suggestions"][0]["word"]) == (1, "station")


@pytest.mark.parametrize("send,code,error", [
    (dict(data='{"text": "hi"}', content_type="text/plain"), 400, "bad_request"),   # a cross-site form post
    (dict(json=["hi"]), 400, "bad_request"),
    (dict(json={"text": "hi", "more": 1}), 400, "bad_request"),
    (dict(json={"text": 5}), 400, "bad_request"),
    (dict(json={"text": "a" * (MAX_TEXT_CHARS + 1)}), 400, "bad_request"),
    (dict(data="[" * 1000 + "]" * 1000, content_type="application/json"), 400, "bad_request"),
    (dict(data="{not json", content_type="application/json"), 400, "bad_request"),
    (dict(data=b"\xff\xfe\x00", content_type="application/json"), 400, "bad_request"),
    (dict(json={"text": "x" * (MAX_BODY_BYTES + 10)}), 413, "too_large"),
])
def test_attacks_are_refused(bundle, tmp_path, send, code, error):
    _, client = _client(bundle, tmp_path)
    r = client.post("/keyboard/suggest", **send)
    assert (r.status_code, r.get_json()["error"]) == (code, error), r.get_json()


def test_worst_case_text_is_cheap(bundle, tmp_path):
    """The longest accepted text of characters NFKC expands most (U+FDFA: 18 characters each)."""
    _, client = _client(bundle, tmp_path)
    started = time.perf_counter()
    r = _ask(client, "\ufdfa" * MAX_TEXT_CHARS)
    assert r.status_code == 200 and len(json.dumps(r.get_json())) < 1000
    assert time.perf_counter() - started < 5.0  # generous: a guard against a pathological path, not a timing figure


def test_rate_limited_per_address(bundle, tmp_path):
    _, client = _client(bundle, tmp_path, keyboard_rate_per_s=0.01, keyboard_burst=3)
    codes = [_ask(client, "hi").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = _ask(client, "hi")
    assert r.get_json()["error"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    other = client.post("/keyboard/suggest", json={"text": "hi"}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200


def test_off_and_bundle_without_vocabulary(bundle, tmp_path):
    _, off = _client(bundle, tmp_path, keyboard=False)
    assert off.get("/keyboard").status_code == 404 and _ask(off, "hi").status_code == 404
    fake = str(tmp_path / "fake")
    make_bundle(fake)  # no model description, a fake spm.model
    _, client = _client(fake, tmp_path / "x")
    r = _ask(client, "hi")
    assert r.status_code == 404 and "needs a fedkeys export" in r.get_json()["detail"]


def test_bad_limits_refused(bundle, tmp_path):
    with pytest.raises(ValueError, match="keyboard_"):
        _client(bundle, tmp_path, keyboard_burst=0)
