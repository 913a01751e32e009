"""The keyboard page in a real browser, served by a gunicorn collector: type a prefix, read the
strip, tap suggestions, check the text box; a screenshot is left in the test's directory.

Chromium is driven over the DevTools pipe (tests/cdp_pipe.py). Needs Debian's `chromium`
(`make test` installs it); skipped when it is missing.
"""

from __future__ import annotations

import dataclasses
import http.client
import json

import pytest
import requests

from configs import resolve
from keyboard.testing import make_keyboard_bundle
from server.keyboard import MAX_BODY_BYTES
from server.process import ServerProcess, write_server_config
from tests.cdp_pipe import Browser
from tests.test_dashboard_browser import CHROMIUM_FLAGS, chromium
from tests.test_server_keyboard import TEXTS

KIND = "document.getElementById('kind').textContent"
STRIP = "[0, 1, 2].map(i => document.getElementById('s' + i).dataset.word || '')"


@pytest.fixture()
def collector(tmp_path):
    bundle = tmp_path / "bundle"
    make_keyboard_bundle(str(bundle), TEXTS, cell="cifg", favourite="tomorrow")
    tiny = resolve("tiny")
    cfg = dataclasses.replace(tiny, server=dataclasses.replace(tiny.server, port=0, workers=1),
                              collector=dataclasses.replace(tiny.collector, attestation="off"))
    config = write_server_config(str(tmp_path / "server.json"), cfg, str(bundle), str(tmp_path / "state"))
    server = ServerProcess(config, workers=1, threads=4, log_path=str(tmp_path / "server.log"))
    server.start(timeout_s=90)
    try:
        yield server
    finally:
        server.stop()


def test_chunked_oversized_body_refused_over_http(collector):
    """Over a real connection: a chunked body (no Content-Length) longer than the limit is 413."""
    conn = http.client.HTTPConnection(collector.url.split("//")[1], timeout=30)
    chunks = (b" " * 4096 for _ in range(64))  # 256 KiB offered
    conn.request("POST", "/keyboard/suggest", body=chunks, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"] == "too_large"
    assert MAX_BODY_BYTES < 64 * 4096
    conn.close()
    assert requests.post(collector.url + "/keyboard/suggest", json={"text": "hi"}).status_code == 200


@pytest.mark.browser
@pytest.mark.slow
def test_type_read_the_strip_and_tap(collector, tmp_path):
    browser = Browser(chromium(), CHROMIUM_FLAGS, str(tmp_path / "profile"))
    shot = tmp_path / "keyboard.png"
    try:
        browser.page("Page.navigate", url=collector.url + "/keyboard")
        browser.wait_for("document.getElementById('conn') && document.getElementById('conn').textContent === 'live'")
        browser.evaluate("document.getElementById('text').focus()")

        browser.type_text("See yo")
        strip = json.loads(browser.wait_for(f"(() => {{ const s = {STRIP}; return {KIND} === 'completing \u201cyo\u201d' && JSON.stringify(s); }})()"))
        assert strip[0] == "you", strip
        browser.click("#s0")  # tap "you": the partial word is replaced
        assert browser.wait_for("document.getElementById('text').value === 'See you ' && 'ok'")
        strip = json.loads(browser.wait_for(f"(() => {{ const s = {STRIP}; return {KIND} === 'next word' && JSON.stringify(s); }})()"))
        assert strip[0] == "tomorrow" and len([w for w in strip if w]) == 3, strip
        browser.click("#s0")  # tap "tomorrow": appended after the space
        assert browser.wait_for("document.getElementById('text').value === 'See you tomorrow ' && 'ok'")
        assert browser.evaluate("document.getElementById('version').textContent") == "v0"
        browser.screenshot(str(shot))
    finally:
        browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no screenshot written"
    print(f"keyboard screenshot: {shot}")
