"""The real collector in this process: the phones' HTTP transport without a socket.

For benchmarks and tests that ask an algorithmic question (what does an encoding cost in
accuracy?) rather than a systems one, the HTTP hop adds nothing but time. `InProcessCollector`
builds the collector's Flask app (`server.app.create_app`, the code gunicorn serves) over a
state directory of its own, and `transport()` returns the ordinary `device_sim.transport.Transport`
whose requests session hands each request to that app through `WsgiAdapter` instead of a
connection. Same routes, validation, round lifecycle, aggregation, server optimizer and spool;
only the socket and the WSGI server are left out.
"""

from __future__ import annotations

import tempfile
from typing import Any, Optional
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from configs.schema import RunConfig
from device_sim.transport import Transport

URL = "http://inprocess.fedkeys"  # never resolved: the session's adapter answers for it


class WsgiAdapter(BaseAdapter):
    """A requests transport adapter that calls a WSGI app in this process."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        from werkzeug.test import EnvironBuilder, run_wsgi_app

        url = urlsplit(request.url or "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        environ = EnvironBuilder(path=url.path, query_string=url.query, method=request.method or "GET",
                                 headers=headers, data=body).get_environ()
        app_iter, status, resp_headers = run_wsgi_app(self.app, environ, buffered=True)
        try:
            content = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        resp = requests.Response()
        resp.status_code = int(status.split(" ", 1)[0])
        resp.reason = status.split(" ", 1)[1] if " " in status else ""
        resp.headers = CaseInsensitiveDict(dict(resp_headers))
        resp._content = content
        resp.url = request.url or ""
        resp.request = request
        resp.encoding = "utf-8"
        return resp

    def close(self) -> None:
        pass


class InProcessCollector:
    """The collector app for `cfg` over `bundle_dir`, in this process (see the module docstring).

    Args:
        cfg: the run's config; its server, collector, privacy and train sections configure the
            collector exactly as `fedkeys serve` would.
        bundle_dir: a phone bundle (manifest.json, weights.npz, trainable.tflite).
        state_dir: the collector's state (default: a temporary directory removed by `close`).
    """

    def __init__(self, cfg: RunConfig, bundle_dir: str, state_dir: Optional[str] = None) -> None:
        from device_sim.attestation import Keystore, issuer_for_run
        from server.app import create_app
        from server.process import server_config_dict

        self._tmp = tempfile.TemporaryDirectory(prefix="fedkeys-collector-") if state_dir is None else None
        self.state_dir = state_dir or self._tmp.name  # type: ignore[union-attr]
        cfg, issuer = issuer_for_run(cfg)  # phones' certificates, when the collector requires them
        self.keystore = Keystore(issuer) if issuer is not None else None
        self.app = create_app(test_config=server_config_dict(cfg, bundle_dir, self.state_dir), workers=1)
        self.collector = self.app.extensions["fedkeys"]["collector"]
        self.url = URL

    def transport(self, url: str = URL) -> Transport:
        """A phone's transport to this collector (the signature of run_devices' transport_factory)."""
        session = requests.Session()
        t = Transport(url, session=session, retries=0,
                      identities=self.keystore.identity if self.keystore is not None else None)
        session.mount(URL, WsgiAdapter(self.app))  # longer than Transport's "http://" mount: wins
        return t

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "InProcessCollector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
