"""The operator's dashboard at `/`: one static page that polls the status API.

The page (templates/dashboard.html: inline CSS and script, no external assets) fetches
`GET /v1/status` and `GET /metrics` every 2 s and shows the open round, model versions,
privacy spent and device counts. It reads nothing else, so it shows only what those public
endpoints already show: aggregate counts, never a device id or token. The route itself touches
no server state.
"""

from __future__ import annotations

import os
from functools import lru_cache

from flask import Blueprint, Response

dashboard = Blueprint("dashboard", __name__)

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

# The page may talk only to this server and load nothing from anywhere else.
CSP = ("default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@lru_cache(maxsize=None)
def _page(name: str) -> bytes:
    with open(os.path.join(TEMPLATES, name), "rb") as f:
        return f.read()


def static_page(name: str, csp: str) -> Response:
    """The self-contained page templates/`name` (read once), under the content policy `csp`."""
    resp = Response(_page(name), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = csp
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@dashboard.get("/")
def index() -> Response:
    return static_page("dashboard.html", CSP)
