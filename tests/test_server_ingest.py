"""The upload hot path (issue 6): the body read front to back (from gunicorn's socket or any
wsgi.input), a float32 payload received straight into its spool slot and checked in place, the running sum added in chunks, and
memory that does not grow with the number of uploads. Every shortcut must give the same answers,
errors and numbers as the general path it bypasses."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import sqlite3
import threading
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from fedcore.messages import Refusal
from fedmath import encodings, privacy, wire
from fedmath.aggregate import CHUNK, RunningSum, apply_delta
from server.app import create_app
from server.body import BodyBuffers, BodyStream
from server.errors import http_status
from server.testing import (
    ServerProcess,
    config_dict,
    make_bundle,
    random_update,
    upload_body,
)
from server.validation import check_content, l2_norm

ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 8}
MEDIUM = [("embedding", (300, 700)), ("bias", (700,)), ("scalar", (1,))]  # 210,701 values: chunks and a tail
MEDIUM_SHAPES = [s for _, s in MEDIUM]


def config(tmp_path, shapes=MEDIUM, **server):
    bundle = str(tmp_path / "bundle")
    if not os.path.exists(bundle):
        make_bundle(bundle, shapes)
    return config_dict(bundle, str(tmp_path / "state"), server={"goal_count": 3, "over_selection": 1.0, **server},
                       privacy={"mode": "device", "clip_norm": 1.0, "noise_multiplier": 0.0},
                       collector={"rate_limit_per_s": 1000.0, "rate_limit_burst": 1000})


def header_for(body: bytes) -> wire.UploadHeader:
    return wire.unpack(body)[0]


# -- kernels: the same numbers as the whole-array expressions ------------------------------------
@pytest.mark.parametrize("weight", [1.0, 16, 0.37, np.float32(0.3)])
def test_chunked_add_is_bitwise_the_whole_array_formula(weight):
    rng = np.random.default_rng(0)
    shapes = [(3, CHUNK + 5), (7,), ()]
    rs = RunningSum.zeros_like([np.zeros(s) for s in shapes])
    strided = RunningSum([np.zeros((8, 6))[:, ::2]])  # a caller's non-contiguous sum takes the plain path
    ref = [np.zeros(s) for s in shapes]
    strided_ref = np.zeros((8, 3))
    for k in range(3):
        u = [rng.normal(size=s).astype(np.float32 if k != 1 else np.float64) for s in shapes]
        rs.add(u, weight * (k + 1))
        for s, t in zip(ref, u):
            s += weight * (k + 1) * np.asarray(t, dtype=np.float64)
        v = rng.normal(size=(8, 3)).astype(np.float32)
        strided.add([v], weight)
        strided_ref += weight * v.astype(np.float64)
    assert all(np.array_equal(a, b) for a, b in zip(rs.sums, ref))
    assert np.array_equal(strided.sums[0], strided_ref)
    assert rs.count == 3 and rs.total_weight == pytest.approx(6 * float(weight))
    assert [m.dtype for m in rs.mean()] == [np.float32] * 3
    assert all(np.array_equal(m, (s / rs.total_weight).astype(np.float32)) for m, s in zip(rs.mean(), rs.sums))


def test_apply_delta_same_numbers_and_inputs_untouched():
    rng = np.random.default_rng(1)
    for lr in (1.0, 0.7):
        for dm, dd in ((np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64)):
            model = [rng.normal(size=s).astype(dm) for s in ((40, 3), (3,))]
            delta = [rng.normal(size=s).astype(dd) for s in ((40, 3), (3,))]
            before = [m.copy() for m in model]
            out = apply_delta(model, delta, lr)
            ref = [(m + lr * d).astype(np.float32) for m, d in zip(model, delta)]
            assert all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(out, ref))
            assert all(np.array_equal(a, b) for a, b in zip(model, before))


def test_wire_unpack_of_a_memoryview_returns_a_view():
    body = bytearray(upload_body(0, 0, [np.ones(4, np.float32)], 3))
    header, payload = wire.unpack(memoryview(body))
    assert header == wire.unpack(bytes(body))[0] and isinstance(payload, memoryview)
    body[-1] ^= 0xFF
    assert payload[-1] == body[-1]  # no copy was made


@pytest.mark.parametrize("offset", [0, 1, 3])  # payload alignment inside the body
def test_float32_check_in_place_matches_decode(offset):
    rng = np.random.default_rng(2)
    u = random_update(MEDIUM_SHAPES, 0.8, rng)
    payload = encodings.encode_float32(u)
    buf = bytearray(offset + len(payload))
    buf[offset:] = payload
    view = memoryview(buf)[offset:]
    header = wire.UploadHeader(0, 0, 5, "float32", "x")
    kw = {"max_examples": 10, "clip_norm": 1.0, "noise_std": 0.0, "norm_slack": 6.0, "norm_policy": "reject"}
    checked = check_content(header, view, MEDIUM_SHAPES, **kw)
    decoded = encodings.decode_float32(payload, MEDIUM_SHAPES)
    assert all(np.array_equal(a, b) for a, b in zip(checked.update, decoded))
    assert checked.norm == pytest.approx(privacy.global_l2_norm(decoded), rel=1e-12)
    assert np.shares_memory(checked.update[0], np.frombuffer(view, np.uint8))  # views, no copy
    for bad in (np.nan, np.inf, -np.inf):  # first, middle, last value
        for where in (0, len(payload) // 8, len(payload) // 4 - 1):
            flat = np.frombuffer(payload, np.float32).copy()
            flat[where] = bad
            with pytest.raises(Refusal) as e:
                check_content(header, memoryview(flat.tobytes()), MEDIUM_SHAPES, **kw)
            with pytest.raises(encodings.NonFiniteError) as ref:
                encodings.decode_float32(flat.tobytes(), MEDIUM_SHAPES)
            assert (http_status(e.value), e.value.code, e.value.detail) == (400, "non_finite", str(ref.value))
    with pytest.raises(Refusal) as e:
        check_content(header, view[:-4], MEDIUM_SHAPES, **kw)
    assert e.value.code == "bad_payload"
    big = np.full(sum(int(np.prod(s)) for s in MEDIUM_SHAPES), 3e38, np.float32)  # finite, squares overflow float32
    with pytest.raises(Refusal) as e:
        check_content(header, memoryview(big.tobytes()), MEDIUM_SHAPES, **kw)
    assert e.value.code == "norm_too_large"
    assert l2_norm(big) == pytest.approx(3e38 * np.sqrt(big.size), rel=1e-6)


def test_body_buffers_reuse_one_buffer_per_thread_and_drop_large_bodies():
    bodies = BodyBuffers(keep_bytes=1000)
    data = os.urandom(600)
    a = bodies.stream({"wsgi.input": io.BytesIO(data)}, 600).read_all()
    assert bytes(a) == data
    b = bodies.stream({"wsgi.input": io.BytesIO(data[:100])}, 100).read_all()
    assert a.obj is b.obj  # the same buffer
    big = bodies.stream({"wsgi.input": io.BytesIO(os.urandom(2000))}, 2000).read_all()
    assert big.obj is not a.obj and bodies.get(10).obj is a.obj
    with pytest.raises(Exception) as e:  # the client sent less than its Content-Length
        bodies.stream({"wsgi.input": io.BytesIO(data[:50])}, 100).read_all()
    assert getattr(e.value, "code", None) == 400


def test_body_stream_reads_gunicorns_socket_in_pieces_and_leaves_the_next_request():
    """The socket path of BodyStream, on gunicorn's own reader classes over a socket pair: what
    gunicorn read past the headers comes first, a pipelined next request goes back to gunicorn,
    and gunicorn's reader always knows how much of the body is left."""
    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import SocketUnreader

    body, after = os.urandom(300_000), b"POST /next HTTP/1.1\r\n"
    a, b = socket.socketpair()
    with a, b:
        unreader = SocketUnreader(b)
        unreader.unread(body[:1000])  # read ahead with the headers
        reader = LengthReader(unreader, len(body))
        stream = BodyStream({"gunicorn.socket": b, "wsgi.input": Body(reader)}, len(body), BodyBuffers(1 << 20))
        sender = threading.Thread(target=a.sendall, args=(body[1000:] + after,))  # more than a socket buffer
        sender.start()
        first = bytearray(10)
        stream.readinto(memoryview(first))  # inside the read-ahead
        assert bytes(first) == body[:10] and reader.length == len(body) - 10
        middle = bytearray(5000)
        stream.readinto(memoryview(middle))  # the rest of the read-ahead, then the socket
        assert bytes(middle) == body[10:5010] and reader.length == len(body) - 5010
        rest = stream.read_all()  # the whole body's buffer, filled from where the reads stopped
        sender.join()
        assert bytes(rest[5010:]) == body[5010:]
        assert reader.length == 0 and stream.consumed == len(body)
        assert unreader.read(len(after)) == after  # the next request is where gunicorn looks for it
        with pytest.raises(ValueError):
            stream.readinto(memoryview(bytearray(1)))  # nothing is left to read


def test_body_stream_short_body_is_a_400_and_marks_the_connection_unusable():
    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import SocketUnreader

    a, b = socket.socketpair()
    with a, b:
        wsgi_input = Body(LengthReader(SocketUnreader(b), 100))
        stream = BodyStream({"gunicorn.socket": b, "wsgi.input": wsgi_input}, 100, BodyBuffers(1000))
        a.sendall(b"x" * 40)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(Exception) as e:
            stream.read_all()
        assert getattr(e.value, "code", None) == 400 and wsgi_input.failed


def test_received_uploads_are_spooled_in_place_and_publish_the_accepted_numbers(tmp_path):
    """Collector.receive (a float32 payload read into its spool slot) against Collector.accept
    (the whole body in memory, then written to the slot): the same answers, the same spool
    bytes, the same refusals, and bit for bit the same published model; and the slots are
    reused, not one new file per upload."""
    n = 9
    rng = np.random.default_rng(8)
    ups = [random_update(MEDIUM_SHAPES, 0.7, rng) for _ in range(n)]
    bodies = [upload_body(0, 0, u, 1 + i, f"u{i}") for i, u in enumerate(ups)]
    results = []
    for name in ("accept", "receive"):
        cfg = config(tmp_path / name, goal_count=n)
        cfg["collector"]["checkpoint_every"] = 4
        col = create_app(test_config=cfg).extensions["fedkeys"]["collector"]
        for i in range(n + 1):
            col.register(f"d{i}")
            if i < n:
                col.checkin(f"d{i}", ELIGIBLE)
        buffers = BodyBuffers(len(bodies[0]))

        def send(device, body):
            if name == "accept":
                return col.accept(device, 0, memoryview(body))
            return col.receive(device, 0, BodyStream({"wsgi.input": io.BytesIO(body)}, len(body), buffers))

        answers, spooled = [], []
        for i in range(n):
            if i == 2:  # refusals on the way: not selected, stale version, a NaN
                refused = [bodies[i], upload_body(0, 3, ups[i], 1, "stale"), bodies[i]]
                for device, body in zip((f"d{n}", f"d{i}", f"d{i}"), refused[:2]):
                    with pytest.raises(Refusal) as e:
                        send(device, body)
                    answers.append(e.value.code)
                bad = [u.copy() for u in ups[i]]
                bad[0].flat[5] = np.nan
                with pytest.raises(Refusal) as e:
                    send(f"d{i}", upload_body(0, 0, bad, 1, "nan"))
                answers.append(e.value.code)
            answers.append(send(f"d{i}", bodies[i]))
            if i == 5:
                answers.append(send(f"d{i}", bodies[i]))  # a retry: the first answer again
            rec = col.store.get_update(0, f"d{i}")
            if rec.spool is not None:
                with open(os.path.join(col.spool_dir, rec.spool), "rb") as f:
                    spooled.append(f.read())
        assert col.status()["model"]["version"] == 1
        results.append((answers, spooled, col.weights_payload(1)[0], len(os.listdir(col.spool_dir))))
    (a_answers, a_spool, a_model, a_files), (r_answers, r_spool, r_model, r_files) = results
    assert r_answers == a_answers and "not_selected" in a_answers and "non_finite" in a_answers
    assert r_spool == a_spool and len(r_spool) >= 6
    assert r_model == a_model
    assert r_files <= 4 + 2  # a checkpoint's worth of slots (and one a refusal left free), reused


def test_spool_slot_is_never_handed_out_while_a_record_points_at_it(tmp_path):
    """SpoolSlots.acquire asks the store which free slots are referenced; meanwhile another
    thread takes one of them, records an update in it and releases it. The first thread must
    not get that slot (two records would share one file and a replay would add one payload
    twice), and a slot the store says is referenced is never handed out."""
    from server.files import SpoolSlots

    slots = SpoolSlots(str(tmp_path), fsync=False)
    first = slots.acquire(lambda names: set())
    slots.release(first)  # one free, unreferenced slot
    referenced: set[str] = set()
    nested: list[str] = []

    def known(names: list[str]) -> set[str]:
        return {n for n in names if n in referenced}

    def ask(names: list[str]) -> set[str]:
        answer = known(names)
        if not nested:  # another thread's whole upload happens during this question
            other = slots.acquire(known)
            nested.append(other)
            referenced.add(other)  # its record commits
            slots.release(other)
        return answer

    got = slots.acquire(ask)
    assert nested == [first] and got != first, (got, nested)
    asked: list[list[str]] = []
    third = slots.acquire(lambda names: asked.append(names) or known(names))
    assert asked == [[first]] and third not in referenced | {got}  # one question for all free slots
    slots.release(third)
    assert slots.acquire(known) == third  # an unreferenced free slot is reused


def test_spool_view_shows_each_slots_current_bytes_through_kept_mappings(tmp_path, monkeypatch):
    """Checkpoint builds read slots back through mappings kept from one read to the next: one
    worker's slot, rewritten in place by another (its owner, receiving into its own mapping, or
    with pwrite), reads as its new bytes; a missing or cut file is an error, not a crash; and
    no more than `max_read_maps` mappings are kept."""
    from server.files import SpoolSlots

    n = 4 * 1000
    owner, reader = SpoolSlots(str(tmp_path), fsync=False), SpoolSlots(str(tmp_path), fsync=False)
    name = owner.acquire(lambda _: set())
    for fill in (1, 2):
        owner.receive(name, n, lambda view: view.__setitem__(slice(None), bytes([fill]) * n))
        assert bytes(reader.view(name, n)) == bytes([fill]) * n  # the kept mapping, new bytes
    owner.write(name, b"\x07" * n)  # the other way a slot is written: pwrite, same size
    assert bytes(reader.view(name, n)) == b"\x07" * n and bytes(owner.view(name, n)) == b"\x07" * n
    with pytest.raises(FileNotFoundError):
        reader.view("w1-gone-0.bin", n)
    (tmp_path / "cut.bin").write_bytes(b"\x00" * (n - 4))
    with pytest.raises(ValueError):
        reader.view("cut.bin", n)
    monkeypatch.setattr(reader, "max_read_maps", 3)
    for i in range(5):
        (tmp_path / f"s{i}.bin").write_bytes(bytes([i]) * n)
        assert bytes(reader.view(f"s{i}.bin", n)[:1]) == bytes([i])
    assert list(reader._read_maps) == ["s2.bin", "s3.bin", "s4.bin"]


@pytest.mark.parametrize("native", [True, False])
def test_reserve_allocates_the_whole_file_with_or_without_posix_fallocate(tmp_path, monkeypatch, native):
    from server import files

    if not native:  # macOS has no posix_fallocate: zeros are written instead
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    path = str(tmp_path / "slot.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        n = (1 << 20) * 2 + 12345
        os.ftruncate(fd, n)
        files.reserve(fd, n)
        st = os.fstat(fd)
        assert st.st_size == n and st.st_blocks * 512 >= n  # allocated, not sparse
    finally:
        os.close(fd)


# -- the collector -----------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_two_workers_alternating_give_the_single_worker_numbers(tmp_path, workers):
    """Two collectors on one state directory. Told they are alone (workers=1), their stale
    in-memory sums catch up from the spool; told they share it (workers=2), checkpoints are
    built from the spool outside the write lock. Either way the model is bit for bit the one a
    single worker publishes from the same uploads in the same order."""
    n = 10
    rng = np.random.default_rng(3)
    ups = [random_update(MEDIUM_SHAPES, 0.9, rng) for _ in range(n)]
    models = []
    for name, pattern in (("one", "aaaaaaaaaa"), ("two", "aabababbba")):
        cfg = config(tmp_path / name, goal_count=n)
        cfg["collector"]["checkpoint_every"] = 3
        a, b = (create_app(test_config=cfg, workers=workers if name == "two" else 1).extensions["fedkeys"]["collector"]
                for _ in range(2))
        for i in range(n):
            a.register(f"d{i}")
            a.checkin(f"d{i}", ELIGIBLE)
        for i, who in enumerate(pattern):
            (a if who == "a" else b).accept(f"d{i}", 0, memoryview(upload_body(0, 0, ups[i], 1 + i, f"u{i}")))
            rnd = a.store.get_round(0)
            if rnd.state == "open":  # exactly the updates after the checkpoint keep their spool file
                recs = a.store.updates_between(a.store.conn(), 0, 0)
                assert [r.spool is not None for r in recs] == [r.seq > rnd.ckpt_seq for r in recs]
            if name == "two" and i == n - 2:  # before the last upload: checkpoints were written
                assert a.store.get_round(0).ckpt_count >= 6
        assert a.status()["model"]["version"] == 1
        models.append(encodings.decode_float32(a.weights_payload(1)[0], MEDIUM_SHAPES))
    assert all(np.array_equal(x, y) for x, y in zip(*models))


def test_a_checkpoint_build_overtaken_by_the_rounds_close_is_dropped(tmp_path, monkeypatch):
    """Shared mode: a build that finds, at its commit, that the round closed while it read the
    spool (so a slot it read may have been reused) commits nothing, and the model the other
    worker published is exact."""
    n = 8
    rng = np.random.default_rng(5)
    ups = [random_update(MEDIUM_SHAPES, 0.9, rng) for _ in range(n)]
    cfg = config(tmp_path, goal_count=n)
    cfg["collector"]["checkpoint_every"] = 1000  # no build unless called here
    a, b = (create_app(test_config=cfg, workers=2).extensions["fedkeys"]["collector"] for _ in range(2))
    for i in range(n):
        a.register(f"d{i}")
        a.checkin(f"d{i}", ELIGIBLE)
    for i in range(5):
        (a, b)[i % 2].accept(f"d{i}", 0, memoryview(upload_body(0, 0, ups[i], 1 + i, f"u{i}")))
    read = a.sums.read_spool
    closed = []

    def read_while_the_round_closes(name):
        if not closed:
            for i in range(5, n):  # b records the rest and publishes
                closed.append(b.accept(f"d{i}", 0, memoryview(upload_body(0, 0, ups[i], 1 + i, f"u{i}"))))
        return read(name)

    monkeypatch.setattr(a.sums, "read_spool", read_while_the_round_closes)
    a.sums.build_checkpoint(0)
    rnd = a.store.get_round(0)
    assert closed[-1]["round_complete"] and rnd.state == "closed"
    assert (rnd.ckpt_count, rnd.ckpt_path) == (0, None)  # nothing committed by the overtaken build
    got = encodings.decode_float32(a.weights_payload(1)[0], MEDIUM_SHAPES)
    w0 = encodings.decode_float32(a.weights_payload(0)[0], MEDIUM_SHAPES)
    ref = RunningSum.zeros_like(ups[0])
    for i in range(n):
        ref.add(ups[i], 1 + i)
    want = apply_delta(w0, ref.mean(), 1.0)
    assert all(np.array_equal(x, y) for x, y in zip(got, want))


def test_a_checkpoint_build_that_cannot_read_the_spool_commits_nothing_and_raises_nothing(tmp_path, caplog):
    """A build runs after an upload's commit, in that upload's request: a spool file gone under
    it (its round closed and a restarted worker removed the file) must not turn the committed
    upload's answer into a 500."""
    cfg = config(tmp_path, goal_count=8)
    cfg["collector"]["checkpoint_every"] = 1000
    col = create_app(test_config=cfg, workers=2).extensions["fedkeys"]["collector"]
    rng = np.random.default_rng(6)
    for i in range(3):
        col.register(f"d{i}")
        col.checkin(f"d{i}", ELIGIBLE)
        col.accept(f"d{i}", 0, memoryview(upload_body(0, 0, random_update(MEDIUM_SHAPES, 0.5, rng), 2, f"u{i}")))
    os.remove(os.path.join(col.spool_dir, col.store.get_update(0, "d1").spool))
    col.sums.build_checkpoint(0)
    assert col.store.get_round(0).ckpt_count == 0
    assert "checkpoint build for round 0 dropped" in caplog.text


def test_upload_memory_does_not_grow(tmp_path):
    n = 60
    cfg = config(tmp_path, goal_count=n + 1)
    col = create_app(test_config=cfg).extensions["fedkeys"]["collector"]
    body = bytearray(upload_body(0, 0, random_update(MEDIUM_SHAPES, 0.5, np.random.default_rng(4)), 3, "0" * 32))
    k = len(body) - 4 * sum(int(np.prod(s)) for s in MEDIUM_SHAPES)
    for i in range(n):
        col.register(f"d{i}")
        col.checkin(f"d{i}", ELIGIBLE)
    tracemalloc.start()
    try:
        for i in range(n):
            body[:k] = upload_body(0, 0, [], 3, uuid.UUID(int=i).hex)[:k]
            col.accept(f"d{i}", 0, memoryview(body))
            if i == 9:
                after_10 = tracemalloc.get_traced_memory()[0]
        after_n, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert col.store.get_round(0).reports == n
    assert after_n - after_10 < 64 * 1024, (after_10, after_n)
    assert peak - after_n < 3 * 1024 * 1024, (after_n, peak)  # no update-sized temporaries pile up


# -- over a real gunicorn: the socket fast path and its connection ------------------------------
def _request(path: str, token: str, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n").encode() + body


def _responses(sock: socket.socket, count: int) -> list[tuple[int, dict]]:
    f = sock.makefile("rb")

    class Kept:  # one buffered reader for every response on the connection (HTTPResponse closes its own)
        def __getattr__(self, name):
            return getattr(f, name)

        def close(self):
            pass

    class Source:
        def makefile(self, *a, **k):
            return Kept()

    out = []
    for _ in range(count):
        r = http.client.HTTPResponse(Source())  # type: ignore[arg-type]
        r.begin()
        out.append((r.status, json.loads(r.read())))
    return out


@pytest.mark.parametrize("threads", [1, 2])  # server/worker.py's LoopWorker, gunicorn's gthread
def test_two_gunicorn_workers_publish_the_sum_in_recorded_order(tmp_path, threads):
    """Two real worker processes (shared mode: checkpoints folded from the spool outside the
    write lock, every third update) and concurrent uploads over HTTP: the published model is bit
    for bit the FedAvg step over the updates summed in the order the database recorded them."""
    n = 12
    cfg = config(tmp_path, goal_count=n)
    cfg["collector"]["checkpoint_every"] = 3
    rng = np.random.default_rng(9)
    ups = [random_update(MEDIUM_SHAPES, 0.6, rng) for _ in range(n)]
    with ServerProcess(str(tmp_path), cfg, workers=2, threads=threads) as srv:
        s = requests.Session()
        tokens = [s.post(srv.url + "/v1/devices", json={"device_id": f"p{i}"}).json()["token"] for i in range(n)]
        for t in tokens:
            assert s.post(srv.url + "/v1/checkin", json=ELIGIBLE, headers={"Authorization": f"Bearer {t}"}).ok

        def upload(i):
            r = requests.post(srv.url + "/v1/rounds/0/updates", data=upload_body(0, 0, ups[i], 1 + i, f"u{i}"),
                              headers={"Authorization": f"Bearer {tokens[i]}"}, timeout=60)
            return r.status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(upload, range(n))) == [202] * n
        auth = {"Authorization": f"Bearer {tokens[0]}"}
        w0 = encodings.decode_float32(s.get(srv.url + "/v1/model/0/weights", headers=auth).content, MEDIUM_SHAPES)
        w1 = s.get(srv.url + "/v1/model/1/weights", headers=auth).content
    db = sqlite3.connect(os.path.join(cfg["state_dir"], "fedkeys.sqlite3"))
    order = [int(uid[1:]) for (uid,) in db.execute("SELECT upload_id FROM updates WHERE round = 0 ORDER BY seq")]
    folded = db.execute("SELECT ckpt_count FROM rounds WHERE round = 0").fetchone()[0]
    db.close()
    assert folded >= 3  # checkpoints were built on the way
    ref = RunningSum.zeros_like(ups[0])
    for i in order:
        ref.add(ups[i], 1 + i)
    assert sorted(order) == list(range(n))
    assert w1 == encodings.encode_float32(apply_delta(w0, ref.mean(), 1.0))


@pytest.mark.parametrize("threads", [1, 2])
def test_uploads_over_gunicorn_keepalive_pipelining_and_truncation(tmp_path, threads):
    cfg = config(tmp_path, over_selection=1.34)  # 4 selected, the round closes at 3
    with ServerProcess(str(tmp_path), cfg, workers=1, threads=threads) as srv:
        s = requests.Session()
        tokens = [s.post(srv.url + "/v1/devices", json={"device_id": f"p{i}"}).json()["token"] for i in range(4)]
        for t in tokens:
            assert s.post(srv.url + "/v1/checkin", json=ELIGIBLE, headers={"Authorization": f"Bearer {t}"}).ok
        rng = np.random.default_rng(6)
        ups = [random_update(MEDIUM_SHAPES, 0.6, rng) for _ in range(3)]
        bodies = [upload_body(0, 0, u, 2 + i, f"u{i}") for i, u in enumerate(ups)]
        path = "/v1/rounds/0/updates"

        # a client that stops half way: nothing is recorded, the server goes on
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(_request(path, tokens[0], bodies[0][: len(bodies[0]) // 2], len(bodies[0])))
            sock.shutdown(socket.SHUT_WR)
            sock.recv(65536)
        assert s.get(srv.url + "/v1/status").json()["round"]["reports"] == 0

        # keep-alive: a valid upload, a refused one that sent its whole body, another valid one
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
        stale = upload_body(0, 7, ups[1], 2, "stale")  # a float32 body of the right size, refused after it was read
        for token, body, want in ((tokens[0], bodies[0], 202), (tokens[1], b"XXXX" + bodies[1][4:], 400),
                                  (tokens[1], stale, 409), (tokens[1], bodies[1], 202)):
            conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            assert r.status == want, r.read()
            r.read()
        conn.close()

        # two requests in one write: the second starts inside what the first one's read received
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(_request(path, tokens[2], bodies[2]) + _request(path, tokens[3], upload_body(0, 0, ups[0], 2, "u3")))
            (s1, a1), (s2, a2) = _responses(sock, 2)
        assert (s1, a1) == (202, {"accepted": True, "round_complete": True})
        assert (s2, a2["error"]) == (409, "round_closed")

        auth = {"Authorization": f"Bearer {tokens[0]}"}
        w0 = encodings.decode_float32(s.get(srv.url + "/v1/model/0/weights", headers=auth).content, MEDIUM_SHAPES)
        w1 = encodings.decode_float32(s.get(srv.url + "/v1/model/1/weights", headers=auth).content, MEDIUM_SHAPES)
        for t in range(len(MEDIUM_SHAPES)):
            mean = sum((2 + i) * ups[i][t].astype(np.float64) for i in range(3)) / 9
            np.testing.assert_allclose(w1[t], (w0[t] + mean).astype(np.float32), rtol=1e-6, atol=1e-7)
        metrics = s.get(srv.url + "/metrics").text
        assert "fedkeys_updates_accepted_total 3" in metrics
        assert 'fedkeys_updates_rejected_total{error="malformed"} 1' in metrics


def test_single_threaded_worker_serves_others_while_a_connection_sends_nothing(tmp_path):
    """server/worker.py: a connection that is open but silent waits on the poller, not on the
    worker's one thread (gthread would give it its only pool thread for up to 5 s), and a
    kept-alive connection's requests are served one after another on the loop's thread."""
    with ServerProcess(str(tmp_path), config(tmp_path), workers=1, threads=1) as srv:
        silent = [socket.create_connection((srv.host, srv.port)) for _ in range(3)]
        try:
            s = requests.Session()
            for i in range(5):
                r = s.get(srv.url + "/v1/status", timeout=2)  # gthread: ~5 s behind the silent ones
                assert r.status_code == 200 and r.json()["round"]["round"] == 0
            silent[0].sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")  # speaks after all
            status, answer = _responses(silent[0], 1)[0]
            assert status == 200 and answer["round"]["round"] == 0
        finally:
            for sock in silent:
                sock.close()
    with open(os.path.join(str(tmp_path), "gunicorn.log")) as f:
        assert "Using worker: server.worker.LoopWorker" in f.read()
