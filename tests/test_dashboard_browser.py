"""The server dashboard in a real browser: a gunicorn collector, a few uploads over HTTP, then
headless Chromium loads `/`, runs its script (which polls /v1/status and /metrics) and must
show the round's counts. A screenshot is left in the test's output directory.

Needs Debian's `chromium` (`make test` and `.ci/run` install it); skipped when it is missing.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import requests

from configs import PrivacyConfig, resolve
from server.process import ServerProcess, write_server_config
from server.app import create_app
from server.testing import TINY_SHAPES, config_dict, make_bundle, random_update, upload_body

SHAPES = [s for _, s in TINY_SHAPES]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1200,900"]
# Virtual time: the page's first poll (and a second one 2 s later) completes before the DOM is taken.
BUDGET_MS = 5000


def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.skip(f"headless Chromium not found at {path}: `apt-get install chromium` "
                    "(make test and .ci/run install it when missing)")
    return path


def browse(url: str, profile: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}", *args, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium exited with {done.returncode}: {done.stderr[-2000:]}"
    return done


def text_of(dom: str, element_id: str) -> str:
    """The text inside the element with this id (elements the page fills have no children)."""
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert m, f"no element #{element_id} in the dumped DOM"
    return html.unescape(m.group(1)).strip()


def table_rows(dom: str, tbody_id: str) -> dict[str, str]:
    m = re.search(rf'<tbody id="{tbody_id}">(.*?)</tbody>', dom, re.S)
    assert m, f"no table body #{tbody_id} in the dumped DOM"
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)]
    return {html.unescape(c[0]): html.unescape(c[1]) for c in cells if len(c) >= 2}


def drive_two_rounds(url: str) -> None:
    """Round 0 reaches its goal (3 reports, publishes v1); round 1 gets 2 reports and 1 malformed upload."""
    s = requests.Session()
    heads = []
    for i in range(4):
        r = s.post(url + "/v1/devices", json={"device_id": f"browser-phone-{i}"})
        assert r.status_code == 201, r.text
        heads.append({"Authorization": f"Bearer {r.json()['token']}"})
    conditions = {"idle": True, "charging": True, "unmetered": True, "num_examples": 8}
    rng = np.random.default_rng(0)
    for round_number, version, reporters in ((0, 0, 3), (1, 1, 2)):
        for h in heads:
            r = s.post(url + "/v1/checkin", json=conditions, headers=h)
            assert r.status_code == 200, r.text
            assert r.json()["plan"]["round"] == round_number
        for h in heads[:reporters]:
            body = upload_body(round_number, version, random_update(SHAPES, 0.5, rng), 8)
            r = s.post(f"{url}/v1/rounds/{round_number}/updates", data=body, headers=h)
            assert r.status_code == 202, r.text
    r = s.post(url + "/v1/rounds/1/updates", data=b"not a wire upload", headers=heads[3])
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    status = s.get(url + "/v1/status").json()
    assert (status["round"]["round"], status["round"]["reports"], status["model"]["version"]) == (1, 2, 1)


def test_dashboard_page_reads_only_the_status_api(tmp_path):
    """Fast, no browser: the page is static, loads nothing from elsewhere and fetches only
    /v1/status and /metrics."""
    make_bundle(str(tmp_path / "bundle"))
    client = create_app(test_config=config_dict(str(tmp_path / "bundle"), str(tmp_path / "state"))).test_client()
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    page = r.get_data(as_text=True)
    assert not re.search(r'(src|href)\s*=\s*"', page), "the dashboard must load no other file"
    assert sorted(set(re.findall(r'fetch\("([^"]+)"', page))) == ["/metrics", "/v1/status"]
    assert client.post("/").status_code == 405


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_shows_round_counts(tmp_path):
    chromium()
    bundle = tmp_path / "bundle"
    make_bundle(str(bundle))
    tiny = resolve("tiny")
    server_cfg = dataclasses.replace(tiny.server, goal_count=3, over_selection=1.34, port=0, workers=1)
    privacy = PrivacyConfig(mode="device", clip_norm=1.0, noise_multiplier=0.0)
    cfg = dataclasses.replace(tiny, server=server_cfg, privacy=privacy,  # scripted phones: no certificates
                              collector=dataclasses.replace(tiny.collector, attestation="off"))
    config = write_server_config(str(tmp_path / "server.json"), cfg, str(bundle), str(tmp_path / "state"))
    server = ServerProcess(config, workers=1, threads=4, log_path=str(tmp_path / "server.log"))
    server.start(timeout_s=90)
    try:
        page = requests.get(server.url + "/")
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert not re.search(r'(src|href)="(https?:)?//', page.text), "the dashboard must load no external assets"

        drive_two_rounds(server.url)

        dom = browse(server.url + "/", str(tmp_path / "profile"), "--dump-dom").stdout
        shot = tmp_path / "dashboard.png"
        browse(server.url + "/", str(tmp_path / "profile"), f"--screenshot={shot}")
    finally:
        server.stop()

    assert text_of(dom, "conn") == "live", "the page's fetch of /v1/status did not succeed"
    assert text_of(dom, "round-number") == "1"
    assert text_of(dom, "round-reports") == "2"
    assert text_of(dom, "round-goal") == "3"
    assert text_of(dom, "round-selected") == "4"  # checked in
    assert text_of(dom, "round-slots") == "5"  # ceil(3 * 1.34)
    assert text_of(dom, "round-state") == "open"
    assert text_of(dom, "round-deadline").endswith(")")  # a time and "(in ...)" once devices checked in
    assert text_of(dom, "model-version") == "v1"
    assert text_of(dom, "rounds-closed") == "1"
    assert text_of(dom, "devices") == "4"
    assert text_of(dom, "accepted-total") == "5"
    assert text_of(dom, "rejected-total") == "1"
    assert table_rows(dom, "rejected") == {"malformed": "1"}
    assert table_rows(dom, "checkin-results").get("accepted") == "8"
    assert "v1" in table_rows(dom, "versions")
    assert "browser-phone" not in dom, "the dashboard must show no per-device data"

    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no screenshot written"
    print(f"dashboard screenshot: {shot}")
