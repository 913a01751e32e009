"""Hostile input at the collector's door: deeply nested JSON (registration, check-in, the upload
header), malformed `Transfer-Encoding: chunked` framing, header strings SQLite cannot store.

Each gets a 4xx with a JSON `{error, detail}` body, and a 500 never carries the exception's
text. Real HTTP against gunicorn (both worker classes) where the behaviour is gunicorn's: it
parses the chunk framing while the app reads the body, and closes the connection after a
framing error. Flask's test client elsewhere. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import struct
import time

import pytest

from fedmath import wire
from server.app import create_app
from server.testing import TINY_SHAPES, ServerProcess, config_dict, make_bundle

DIM = sum(math.prod(s) for _, s in TINY_SHAPES)
JSON_TYPE = {"Content-Type": "application/json"}


def nested(depth: int, leaf: str = '"x"') -> str:
    return "[" * depth + leaf + "]" * depth


def upload_body(header_text: str) -> bytes:
    """A wire body whose header is `header_text` as given, with a float32 payload of the right size."""
    raw = header_text.encode()
    return wire.MAGIC + struct.pack("<I", len(raw)) + raw + bytes(4 * DIM)


def header_text(**over) -> str:
    fields = {"round": 0, "model_version": 0, "num_examples": 1, "encoding": "float32", "upload_id": "u1"}
    return json.dumps({**fields, **over})


# -- fedmath.wire -------------------------------------------------------------------------------

def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def test_nesting_exceeds_counts_json_depth_exactly():
    """Brackets, quotes and backslashes inside strings do not count; every limit around the true
    depth gives the right answer (random documents, both ASCII-escaped and raw)."""
    rng = random.Random(0)
    alphabet = '[]{}"\\,: ab\u225b\u2028'

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(5)))

    def value(d: int):
        if d > 6 or rng.random() < 0.3:
            return rng.choice([1, 2.5, None, True, text()])
        if rng.random() < 0.5:
            return [value(d + 1) for _ in range(rng.randrange(3))]
        return {text(): value(d + 1) for _ in range(rng.randrange(3))}

    for _ in range(500):
        v = value(0)
        doc = json.dumps(v, ensure_ascii=rng.random() < 0.5)
        depth = _depth(v)
        for limit in range(8):
            assert wire.nesting_exceeds(doc, limit) == (depth > limit), (doc, limit)


def test_nesting_exceeds_is_linear_on_hostile_text():
    for doc in ('"\\"' * 30000, '"' + "\\" * 60000, "[" * 65536, '["\\\\' * 16000):
        t0 = time.perf_counter()
        wire.nesting_exceeds(doc, 8)
        assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("depth", [wire.MAX_HEADER_DEPTH + 1, 990, 2000])
def test_wire_refuses_a_deep_header_before_parsing_it(depth):
    with pytest.raises(wire.WireError, match="nests arrays or objects"):
        wire.unpack(upload_body('{"round": %s}' % nested(depth, "0")))


@pytest.mark.parametrize("field, value", [("upload_id", "\ud800"), ("upload_id", "a\x00b"), ("encoding", "\udfff")])
def test_wire_refuses_unprintable_header_strings(field, value):
    with pytest.raises(wire.WireError, match=f"{field}.*printable"):
        wire.unpack(upload_body(header_text(**{field: value})))


# -- the app, through Flask's test client -------------------------------------------------------

@pytest.fixture
def app(tmp_path):
    make_bundle(str(tmp_path / "bundle"))
    return create_app(test_config=config_dict(str(tmp_path / "bundle"), str(tmp_path / "state")))


@pytest.fixture
def client(app):
    return app.test_client()


def device(client, name: str) -> dict:
    r = client.post("/v1/devices", json={"device_id": name})
    assert r.status_code == 201, r.json
    return {"Authorization": f"Bearer {r.json['token']}"}


@pytest.mark.parametrize("doc", [
    '{"device_id": %s}' % nested(20000),
    nested(20000),
    '{"a": ' * 5000 + "1" + "}" * 5000,
    '{"device_id": %s}' % nested(990),  # just under the recursion limit: parsed, then echoed in the error
], ids=["device_id-20000", "top-level-20000", "objects-5000", "device_id-990"])
def test_deeply_nested_registration_is_400(client, doc):
    r = client.post("/v1/devices", data=doc, headers=JSON_TYPE)
    assert r.status_code == 400 and r.json == {"error": "bad_request", "detail": r.json["detail"]}
    assert "nests arrays or objects" in r.json["detail"]


def test_json_body_above_its_limit_is_413(client):
    r = client.post("/v1/devices", data='{"device_id": %s}' % nested(100000), headers=JSON_TYPE)
    assert r.status_code == 413 and r.json["error"] == "too_large"


def test_deeply_nested_checkin_is_400(client):
    auth = device(client, "phone")
    for doc in ('{"idle": %s}' % nested(5000), nested(5000)):
        r = client.post("/v1/checkin", data=doc, headers={**auth, **JSON_TYPE})
        assert r.status_code == 400 and r.json["error"] == "bad_request", r.json


@pytest.mark.parametrize("header", ['{"round": %s}' % nested(2000, "0"), nested(2000, "0")], ids=["field", "top-level"])
def test_deeply_nested_upload_header_is_400_malformed(client, header):
    r = client.post("/v1/rounds/0/updates", data=upload_body(header), headers=device(client, "phone"))
    assert r.status_code == 400 and r.json["error"] == "malformed"
    assert "nests arrays or objects" in r.json["detail"]


def test_upload_id_sqlite_cannot_store_is_400_not_500(client):
    auth = device(client, "phone")
    ok = {"idle": True, "charging": True, "unmetered": True, "num_examples": 5}
    assert client.post("/v1/checkin", json=ok, headers=auth).status_code == 200
    r = client.post("/v1/rounds/0/updates", data=upload_body(header_text(upload_id="\ud800")), headers=auth)
    assert r.status_code == 400 and r.json["error"] == "malformed", r.json


def test_a_500_body_does_not_carry_the_exception_text(app, client, caplog):
    def boom():
        raise RuntimeError("secret /var/lib/fedkeys path and SQL")

    app.add_url_rule("/boom", view_func=boom)
    with caplog.at_level(logging.ERROR, logger="fedkeys.server"):
        r = client.get("/boom")
    assert r.status_code == 500 and r.json["error"] == "internal"
    assert "secret" not in r.get_data(as_text=True) and "RuntimeError" not in r.get_data(as_text=True)
    incident = r.json["detail"].split()[2]  # "internal error <id> (the server log has it)"
    assert incident in caplog.text and "secret /var/lib/fedkeys" in caplog.text  # the log keeps it


# -- real HTTP through gunicorn -----------------------------------------------------------------

@pytest.fixture(scope="module", params=[1, 4], ids=["loop-worker", "gthread"])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    make_bundle(str(root / "bundle"))
    with ServerProcess(str(root), config_dict(str(root / "bundle"), str(root / "state")),
                       threads=request.param) as proc:
        yield proc


def exchange(port: int, data: bytes, shut_write: bool = True, timeout: float = 10.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (bounded by timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading it all: read the answer
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not piece:
                break
            out += piece
        return out


def parse(response: bytes) -> tuple[int, str, dict]:
    """Status, content type and JSON body of one HTTP response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    n = int({k.lower(): v for k, v in headers.items()}.get("content-length", len(body)))
    return int(lines[0].split()[1]), ctype, json.loads(body[:n]) if ctype == "application/json" else {}


def request_bytes(path: str, headers: dict, *, body: bytes | None = None, chunked: bytes | None = None,
                  close: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if close:
        lines.append("Connection: close")
    if chunked is not None:
        return ("\r\n".join([*lines, "Transfer-Encoding: chunked"]) + "\r\n\r\n").encode() + chunked
    return ("\r\n".join([*lines, f"Content-Length: {len(body or b'')}"]) + "\r\n\r\n").encode() + (body or b"")


def http_device(server, name: str) -> dict:
    data = json.dumps({"device_id": name}).encode()
    status, _, body = parse(exchange(server.port, request_bytes("/v1/devices", JSON_TYPE, body=data)))
    assert status == 201, body
    return {"Authorization": f"Bearer {body['token']}"}


BAD_FRAMING = {
    "size not hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "empty size": b"\r\n{}\r\n0\r\n\r\n",
    "negative size": b"-2\r\n{}\r\n0\r\n\r\n",
    "0x prefix": b"0x2\r\n{}\r\n0\r\n\r\n",
    "space before size": b" 2\r\n{}\r\n0\r\n\r\n",
    "non-ASCII digits": "\uff12".encode() + b"\r\n{}\r\n0\r\n\r\n",
    "extension a=b=c": b"2;a=b=c\r\n{}\r\n0\r\n\r\n",
    "extension control char": b"2;a\x01b\r\n{}\r\n0\r\n\r\n",
    "extension quoted NUL": b'2;a="\x00"\r\n{}\r\n0\r\n\r\n',
    "extension bare CR": b"2;a\rb\r\n{}\r\n0\r\n\r\n",
    "extension bare LF": b"2;a\nb\r\n{}\r\n0\r\n\r\n",
    # gunicorn stops reading a size line once it holds more than 8190 bytes without its end;
    # nothing follows, so no unread bytes turn its close into a reset that could lose the answer
    "size line over 8190 bytes": b"2;" + b"a" * 8300,
    "bad chunk terminator": b"2\r\n{}XX0\r\n\r\n",
    "bad trailer": b"2\r\n{}\r\n0\r\nno colon here\r\n\r\n",
}


@pytest.mark.parametrize("endpoint", ["register", "checkin", "upload"])
@pytest.mark.parametrize("case", sorted(BAD_FRAMING))
def test_malformed_chunked_framing_is_400_json(server, endpoint, case):
    path, headers = {"register": ("/v1/devices", JSON_TYPE),
                     "checkin": ("/v1/checkin", {**JSON_TYPE, **http_device(server, f"c-{case}")}),
                     "upload": ("/v1/rounds/0/updates", http_device(server, f"u-{case}"))}[endpoint]
    status, ctype, body = parse(exchange(server.port, request_bytes(path, headers, chunked=BAD_FRAMING[case])))
    assert (status, ctype, body.get("error")) == (400, "application/json", "bad_framing"), body
    assert "chunked framing is malformed" in body["detail"]


def test_well_formed_chunked_registration_still_works(server):
    doc = b'{"device_id": "chunky"}'
    framed = b"5;name=value\r\n" + doc[:5] + b"\r\n%x\r\n" % (len(doc) - 5) + doc[5:] + b"\r\n0\r\n\r\n"
    status, _, body = parse(exchange(server.port, request_bytes("/v1/devices", JSON_TYPE, chunked=framed)))
    assert status == 201 and body["device_id"] == "chunky"


def test_chunked_body_cut_short_is_400_incomplete(server):
    """A chunk size of 2**128 - 1 (read a MiB at a time, never allocated), then end of stream."""
    cut = b"f" * 32 + b"\r\n" + b'{"device_id": "x"}'
    status, ctype, body = parse(exchange(server.port, request_bytes("/v1/devices", JSON_TYPE, chunked=cut)))
    assert (status, ctype, body.get("error")) == (400, "application/json", "incomplete_body"), body


def test_upload_cut_short_of_its_content_length_is_400_incomplete(server):
    """fedkeys' own body reader (server/body.py): the float32 fast path and the header read."""
    full = upload_body(header_text())
    for sent in (len(full) - 10, 12):
        head = request_bytes("/v1/rounds/0/updates", http_device(server, f"short-{sent}"), body=full)
        status, _, body = parse(exchange(server.port, head[: len(head) - len(full) + sent]))
        assert (status, body.get("error")) == (400, "incomplete_body"), body
        assert f"ended after {sent} of its {len(full)} bytes" in body["detail"]


def test_connection_closes_after_a_framing_error(server):
    """Where a next request would start is unknown: the pipelined one is not read as one."""
    bad = request_bytes("/v1/devices", JSON_TYPE, chunked=b"zz\r\n", close=False)
    follow = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    out = exchange(server.port, bad + follow, shut_write=False)
    assert out.count(b"HTTP/1.1 ") == 1 and parse(out)[2]["error"] == "bad_framing"


@pytest.mark.parametrize("depth", [30000, 5000, 990])
def test_deeply_nested_registration_over_http(server, depth):
    """Bodies under the 64 KiB JSON limit (a larger one is 413 before it is read, and gunicorn
    closes a connection with that much unread, so the answer can be lost to a reset)."""
    doc = ('{"device_id": %s}' % nested(depth)).encode()
    status, ctype, body = parse(exchange(server.port, request_bytes("/v1/devices", JSON_TYPE, body=doc)))
    assert (status, ctype, body["error"]) == (400, "application/json", "bad_request")
    assert "nests arrays or objects" in body["detail"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_deeply_nested_upload_header_over_http(server, framing):
    body = upload_body('{"round": %s}' % nested(2000, "0"))
    auth = http_device(server, f"deep-{framing}")
    raw = (request_bytes("/v1/rounds/0/updates", auth, body=body) if framing == "content-length" else
           request_bytes("/v1/rounds/0/updates", auth, chunked=b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"))
    status, _, answer = parse(exchange(server.port, raw))
    assert (status, answer["error"]) == (400, "malformed") and "nests" in answer["detail"]


def test_no_traceback_in_the_server_log(server):
    """Runs after the other real-HTTP tests of its server: none of them reached the 500 handler
    or crashed a worker."""
    status, _, _ = parse(exchange(server.port, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert status == 200
    with open(os.path.join(server.root, "gunicorn.log")) as f:
        log = f.read()
    assert "Traceback" not in log and "internal error" not in log


def test_error_details_echo_at_most_a_short_prefix_of_a_clients_value(tmp_path):
    from server.testing import config_dict, make_bundle

    bundle = str(tmp_path / "bundle")
    make_bundle(bundle)
    from server.app import create_app

    client = create_app(test_config=config_dict(bundle, str(tmp_path / "state"))).test_client()
    resp = client.post("/v1/devices", json={"device_id": "x" * 5000})
    assert resp.status_code == 400 and len(resp.get_json()["detail"]) < 200
    assert "5,002 characters" in resp.get_json()["detail"]


@pytest.mark.parametrize("headers", [
    {"Content-Length": "5", "Transfer-Encoding": "chunked"},  # request smuggling shape
    {"Transfer-Encoding": "gzip"},
    {"Bad Header Name": "x"},
])
def test_requests_gunicorn_refuses_itself_still_get_json(server, headers):
    """gunicorn answers these before the app runs; server/worker.py makes it answer in JSON."""
    lines = ["POST /v1/devices HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    got_status, ctype, body = parse(exchange(server.port, "\r\n".join(lines).encode() + b"hello"))
    assert got_status in (400, 501) and ctype == "application/json", (got_status, ctype)
    assert set(body) == {"error", "detail"} and body["error"] in ("bad_request", "not_implemented")
