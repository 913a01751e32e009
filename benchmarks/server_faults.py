"""Fault tolerance of the collector, over real HTTP (gunicorn on 127.0.0.1).

(a) fuzz: a clean round run twice from the same initial state, once alone and once with
    `--fuzz` (default 10,000) hostile requests mixed in from several threads (malformed headers
    and bodies, wrong shapes and dtypes, NaN and Inf, oversized bodies, bad tokens, replays,
    stale versions, wrong rounds, unselected devices, junk check-ins and paths). Passes when no
    answer is 5xx, every hostile upload is refused (or, for an exact replay, answered as the
    original without being counted), and the published model is bit for bit the clean one.
(b) crash: devices register, check in and upload (retrying until answered) while the whole
    server (master and workers) is SIGKILLed `--kills` (default 20) times at random moments and
    restarted on the same state directory. Passes when the round completes, exactly goal_count
    updates are recorded, one per device, and the published model equals, bit for bit, the
    FedAvg step over those updates recomputed here in the recorded order.

    .venv/bin/python benchmarks/server_faults.py [--fuzz 10000] [--kills 20] [--workers 2] [--threads 4] [--seed 0]

`run_round` and `crash_round` also run several collector hosts over one PostgreSQL database and
one state directory (`hosts`, `database`; benchmarks/_scale_collectors.py): requests then
alternate between the hosts (a device whose host is down goes to another), and only the first
host is killed.

`--threads 1` runs single-threaded workers (server/worker.py, what server_ingest.py measures).

Prints figures and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fedmath import encodings, wire  # noqa: E402
from fedmath.aggregate import RunningSum, apply_delta  # noqa: E402
from server.storage import open_store  # noqa: E402
from server.testing import (  # noqa: E402
    ServerProcess,
    config_dict,
    make_bundle,
    random_update,
    upload_body,
)

SHAPES = [("embedding", (200, 16)), ("kernel", (16, 64)), ("recurrent", (16, 64)), ("bias", (64,)), ("out", (200,))]
SH = [s for _, s in SHAPES]
DIM = sum(int(np.prod(s)) for s in SH)
ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 20}


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_cfg(root: str, goal: int, max_body: int, checkpoint_every: int, database: str = "") -> dict:
    bundle = os.path.join(root, "bundle")
    make_bundle(bundle, SHAPES, seed=1)
    return config_dict(bundle, os.path.join(root, "state"),
                       server={"goal_count": goal, "over_selection": 1.5, "max_body_bytes": max_body},
                       privacy={"mode": "device", "clip_norm": 1.0, "noise_multiplier": 0.5},
                       train={"max_examples_per_client": 64},
                       collector={"rate_limit_per_s": 1e6, "rate_limit_burst": 10**6, "register_rate_per_s": 1e6,
                                  "register_burst": 10**6, "report_deadline_s": 3600, "checkpoint_every": checkpoint_every,
                                  "population": 1000, "database": database})


def start_hosts(root: str, cfg: dict, hosts: int, workers: int, threads: int) -> list[ServerProcess]:
    """`hosts` collectors on one config (one state directory, one database), each in its own folder."""
    return [ServerProcess(root if hosts == 1 else os.path.join(root, f"host{h}"), cfg, workers=workers,
                          threads=threads).start() for h in range(hosts)]


def recorded_updates(cfg: dict, sql: str) -> list:
    """Rows of a query on the collector's store (SQLite in the state directory, or PostgreSQL)."""
    store = open_store(cfg["collector"]["database"], cfg["state_dir"], fsync=False)
    try:
        return [tuple(r) for r in store.conn().execute(sql).fetchall()]
    finally:
        store.close()


def clean_updates(goal: int, seed: int) -> list[tuple[list[np.ndarray], int, str]]:
    rng = np.random.default_rng(seed)
    return [(random_update(SH, 0.9, rng), int(rng.integers(1, 64)), f"clean-{i}") for i in range(goal)]


def model_bytes(url: str, token: str, version: int) -> bytes:
    r = requests.get(f"{url}/v1/model/{version}/weights", headers=auth(token), timeout=30)
    r.raise_for_status()
    return r.content


# -- (a) fuzz ------------------------------------------------------------------------------------

class Fuzzer:
    """Hostile requests; `expect` says which answers are acceptable for each."""

    def __init__(self, url: str, selected_attackers: list[str], idle_attackers: list[str], clean_tokens: list[str],
                 clean_bodies: list[bytes], max_body: int, seed: int) -> None:
        self.url = url
        self.sel = selected_attackers
        self.idle = idle_attackers
        self.clean_tokens = clean_tokens
        self.clean_bodies = clean_bodies
        self.max_body = max_body
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.good = random_update(SH, 0.5, self.nrng)
        self.payload = encodings.encode_float32(self.good)
        self.kinds = [m for m in dir(self) if m.startswith("f_")]
        self.accepted: list[int] = []  # clean devices whose upload was accepted (appended by the round)

    def body(self, **over) -> bytes:
        h = {"round": 0, "model_version": 0, "num_examples": 10, "encoding": "float32", "upload_id": uuid.uuid4().hex}
        h.update(over.pop("header", {}))
        payload = over.pop("payload", self.payload)
        raw = json.dumps(h).encode()
        return wire.MAGIC + len(raw).to_bytes(4, "little") + raw + payload

    def up(self, token: str | None, body: bytes, round_number: int = 0, **extra) -> tuple:
        headers = auth(token) if token else {}
        headers.update(extra.pop("headers", {}))
        return ("POST", f"/v1/rounds/{round_number}/updates", headers, body)

    # every f_* returns (method, path, headers, data) and the set of statuses it may get
    def f_garbage(self):
        n = self.rng.choice([0, 1, 7, 8, 100, 5000])
        return self.up(self.rng.choice(self.sel), self.nrng.bytes(n)), {400}

    def f_bad_magic(self):
        b = bytearray(self.body())
        b[self.rng.randrange(4)] ^= 0xFF
        return self.up(self.rng.choice(self.sel), bytes(b)), {400}

    def f_header_length_lies(self):
        b = bytearray(self.body())
        b[4:8] = self.rng.choice([0, 3, 4097, 2**31, 2**32 - 1]).to_bytes(4, "little")
        return self.up(self.rng.choice(self.sel), bytes(b)), {400}

    def f_header_junk(self):
        junk = self.rng.choice([b"{", b"[]", b"null", b"\xff\xfe", b'{"round": 0}', b'{"round": "0"}' * 3,
                                json.dumps({"round": 0, "model_version": 0, "num_examples": 1, "encoding": "float32",
                                            "upload_id": "x", "extra": 1}).encode()])
        return self.up(self.rng.choice(self.sel), wire.MAGIC + len(junk).to_bytes(4, "little") + junk + self.payload), {400}

    def f_header_types(self):
        field, value = self.rng.choice([("round", "0"), ("round", 0.0), ("model_version", True), ("num_examples", None),
                                        ("num_examples", 0), ("num_examples", -5), ("round", -1), ("model_version", 2**70), ("encoding", 7), ("upload_id", ""),
                                        ("upload_id", "u" * 200), ("num_examples", 10**30)])
        return self.up(self.rng.choice(self.sel), self.body(header={field: value})), {400}

    def f_examples_cap(self):
        return self.up(self.rng.choice(self.sel), self.body(header={"num_examples": self.rng.choice([65, 1000, 2**40])})), {400}

    def f_wrong_shape(self):
        cut = self.rng.choice([-4, -1, 4, 8, -len(self.payload) // 2])
        payload = self.payload[:cut] if cut < 0 else self.payload + b"\0" * cut
        return self.up(self.rng.choice(self.sel), self.body(payload=payload)), {400}

    def f_wrong_dtype(self):
        payload = b"".join(g.astype(self.rng.choice([np.float64, np.float16])).tobytes() for g in self.good)
        return self.up(self.rng.choice(self.sel), self.body(payload=payload)), {400, 413}

    def f_non_finite(self):
        bad = [g.copy() for g in self.good]
        t = self.rng.randrange(len(bad))
        bad[t].flat[self.rng.randrange(bad[t].size)] = self.rng.choice([np.nan, np.inf, -np.inf])
        return self.up(self.rng.choice(self.sel), self.body(payload=encodings.encode_float32(bad))), {400}

    def f_norm(self):
        big = [g * self.rng.choice([50.0, 1e3, 1e30]) for g in self.good]
        return self.up(self.rng.choice(self.sel), self.body(payload=encodings.encode_float32(big))), {400}

    def f_encoding(self):
        return self.up(self.rng.choice(self.sel), self.body(header={"encoding": self.rng.choice(["int8", "topk", "gzip", "F32"])})), {400}

    def f_oversized(self):
        return self.up(self.rng.choice(self.sel), b"FKU1" + b"\0" * (self.max_body + self.rng.randrange(1, 5000))), {413}

    def f_bad_token(self):
        last = "A" if self.sel[0][-1] != "A" else "B"  # a changed last character (an unchanged one is the real token)
        token = self.rng.choice([None, "forged", "x" * 600, self.sel[0][:-1] + last])
        headers = {"Authorization": self.rng.choice(["Basic abc", "Bearer", "bearer " + self.sel[0]])} if token is None else {}
        return self.up(token, self.body(), headers=headers), {401}

    def f_stale_version(self):
        return self.up(self.rng.choice(self.sel), self.body(header={"model_version": self.rng.choice([1, 5, -1])})), {400, 409}

    def f_wrong_round(self):
        r = self.rng.choice([1, 2, 10**6, 2**63 - 1, 2**64])
        return self.up(self.rng.choice(self.sel), self.body(header={"round": r}), round_number=r), {400, 403, 404, 409}

    def f_round_mismatch(self):
        return self.up(self.rng.choice(self.sel), self.body(header={"round": 3}), round_number=0), {400}

    def f_not_selected(self):
        return self.up(self.rng.choice(self.idle), self.body()), {403}

    def f_bitflip_unselected(self):
        b = bytearray(self.body())
        for _ in range(self.rng.randrange(1, 20)):
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8)
        return self.up(self.rng.choice(self.idle), bytes(b)), {400, 403}

    def f_replay_clean(self):
        """A clean device's accepted upload replayed (a captured body and token): the exact body
        gets the first answer and is not counted again; under another upload_id it is a duplicate."""
        if not self.accepted:
            return self.f_stale_version()
        i = self.rng.choice(self.accepted)
        b = self.clean_bodies[i]
        if self.rng.random() < 0.5:
            return self.up(self.clean_tokens[i], b), {202}
        h, p = wire.unpack(b)
        forged = self.body(header={"upload_id": "replay-" + uuid.uuid4().hex[:8], "num_examples": h.num_examples},
                           payload=bytes(p))
        return self.up(self.clean_tokens[i], forged), {409}

    def f_replay_attacker_to_other_round(self):
        # 409 while round 0 is open (round 1 does not exist yet), 403 once round 1 is open
        return self.up(self.rng.choice(self.sel), self.body(header={"round": 1}), round_number=1), {403, 409}

    def f_checkin_junk(self):
        body = self.rng.choice([b"{}", b"[]", b"nope", b'{"idle": "yes"}', b'{"idle": true, "charging": true,'
                                b' "unmetered": true, "num_examples": -1}', b"\xff" * 10])
        return ("POST", "/v1/checkin", {**auth(self.rng.choice(self.idle)), "Content-Type": "application/json"},
                body), {400, 503}

    def f_register_junk(self):
        body = self.rng.choice([b"{}", b'{"device_id": 5}', b'{"device_id": ""}', b"null", b"\x00\x01",
                                json.dumps({"device_id": "d" * 500}).encode()])
        return ("POST", "/v1/devices", {"Content-Type": "application/json"}, body), {400}

    def f_paths(self):
        method, path, ok = self.rng.choice([
            ("GET", "/v1/model/99999999999999999999999/weights", {404}), ("GET", "/v1/model/-1/weights", {404}),
            ("GET", "/v1/bundle/..%2F..%2Fetc%2Fpasswd", {404}), ("GET", "/v1/bundle/weights.npz", {404}),
            ("DELETE", "/v1/status", {405}), ("GET", "/v1/rounds/0/updates", {405}), ("PUT", "/v1/devices", {405}),
            ("GET", "/v1/model/0/weights", {200}), ("GET", "/v1/status", {200}), ("GET", "/metrics", {200}),
            ("GET", "/v1/nope", {404}), ("POST", "/v1/rounds/abc/updates", {404})])
        return (method, path, auth(self.rng.choice(self.sel)), b""), ok

    def next(self):
        return getattr(self, self.rng.choice(self.kinds))()


def send(session: requests.Session, base: str, req) -> tuple[int, dict]:
    method, path, headers, data = req
    r = session.request(method, base + path, headers=headers, data=data, timeout=60)
    try:
        body = r.json()
    except ValueError:
        body = {}
    return r.status_code, body


def run_round(root: str, goal: int, n_fuzz: int, workers: int, seed: int, server_threads: int, hosts: int = 1,
              database: str = "") -> dict:
    max_body = 4 * DIM + 4096
    cfg = make_cfg(root, goal, max_body, checkpoint_every=8, database=database)
    srvs = start_hosts(root, cfg, hosts, workers, server_threads)
    srv, urls = srvs[0], [h.url for h in srvs]
    try:
        s = requests.Session()
        reg = lambda d: s.post(srv.url + "/v1/devices", json={"device_id": d}, timeout=30).json()["token"]  # noqa: E731
        clean = [reg(f"clean-{i}") for i in range(goal)]
        slots = int(np.ceil(goal * 1.5 - 1e-9))
        sel_att = [reg(f"attacker-sel-{i}") for i in range(slots - goal)]
        idle_att = [reg(f"attacker-idle-{i}") for i in range(4)]
        for k, t in enumerate(clean + sel_att):
            assert s.post(urls[k % hosts] + "/v1/checkin", json=ELIGIBLE, headers=auth(t), timeout=30).status_code == 200
        ups = clean_updates(goal, seed)
        bodies = [upload_body(0, 0, u, n, uid) for u, n, uid in ups]
        statuses: Counter = Counter()
        unexpected: list[str] = []
        lock = threading.Lock()
        closing = threading.Event()  # set just before the last clean upload: round 0 closes
        sent = [0]
        t0 = time.perf_counter()
        if n_fuzz:
            fuzzer = Fuzzer(srv.url, sel_att, idle_att, clean, bodies, max_body, seed)
            per_clean = n_fuzz // goal
            gen_lock = threading.Lock()

            def hostile(count, base):
                sess = requests.Session()
                for _ in range(count):
                    with gen_lock:
                        req, ok = fuzzer.next()
                    code, body = send(sess, base, req)
                    with lock:
                        statuses[code] += 1
                        sent[0] += 1
                        late = closing.is_set() and code == 409 and body.get("error") == "round_closed"
                        if (code not in ok and not late) or (code >= 400 and not body.get("error")):
                            unexpected.append(f"{req[0]} {req[1]} -> {code} {body}")
            threads = 4
            pool = ThreadPoolExecutor(threads)
            futures = [pool.submit(hostile, n_fuzz // threads + (1 if t < n_fuzz % threads else 0), urls[t % hosts])
                       for t in range(threads)]
        answers = []
        for i, body in enumerate(bodies):
            if n_fuzz:  # pace the clean uploads so the hostile traffic surrounds every one of them
                while sent[0] < per_clean * i and not all(f.done() for f in futures):
                    time.sleep(0.005)
            if i == len(bodies) - 1:
                closing.set()
            r = s.post(f"{urls[i % hosts]}/v1/rounds/0/updates", data=body, headers=auth(clean[i]), timeout=60)
            assert r.status_code == 202, (f"clean upload {i}: {r.text}", unexpected[:5])
            answers.append(r.json()["round_complete"])
            if n_fuzz:
                with gen_lock:
                    fuzzer.accepted.append(i)
            # an exact retry of an accepted upload: the same answer, counted once
            r2 = s.post(f"{urls[(i + 1) % hosts]}/v1/rounds/0/updates", data=body, headers=auth(clean[i]), timeout=60)
            assert r2.status_code == 202 and r2.json() == r.json()
        if n_fuzz:
            for f in futures:
                f.result()
            pool.shutdown()
        dt = time.perf_counter() - t0
        assert answers[-1] and not any(answers[:-1])
        status = s.get(urls[-1] + "/v1/status", timeout=30).json()
        model = model_bytes(srv.url, clean[0], 1)
        metrics = s.get(srv.url + "/metrics", timeout=30).text
        return {"sha256": hashlib.sha256(model).hexdigest(), "statuses": dict(statuses), "unexpected": unexpected,
                "fuzz_requests": sent[0], "seconds": dt, "reports": status["rounds_closed"], "metrics_ok":
                "fedkeys_updates_rejected_total" in metrics}
    finally:
        for h in srvs:
            h.stop()


# -- (b) crash -----------------------------------------------------------------------------------

def crash_round(root: str, goal: int, kills: int, workers: int, seed: int, server_threads: int, hosts: int = 1,
                database: str = "") -> dict:
    cfg = make_cfg(root, goal, 4 * DIM + 4096, checkpoint_every=4, database=database)
    srvs = start_hosts(root, cfg, hosts, workers, server_threads)
    srv, urls = srvs[0], [h.url for h in srvs]  # srv: the host that is killed
    url = srv.url
    ups = clean_updates(goal, seed + 1)
    progress = [0]  # upload attempts sent
    lock = threading.Lock()
    outcomes: list[dict] = []
    retries = Counter()

    def call(sess, method, path, **kw):
        while True:
            sess.turn = getattr(sess, "turn", -1) + 1  # each request to the next host
            try:
                r = sess.request(method, urls[sess.turn % hosts] + path, timeout=30, **kw)
            except requests.RequestException:
                retries["connection"] += 1
                time.sleep(0.05)
                continue
            if r.status_code >= 500 and r.status_code != 503:
                retries[f"http_{r.status_code}"] += 1
                time.sleep(0.05)
                continue
            return r

    def device(i: int) -> None:
        sess = requests.Session()
        update, n, uid = ups[i]
        token = call(sess, "POST", "/v1/devices", json={"device_id": f"dev-{i}"}).json()["token"]
        while True:
            r = call(sess, "POST", "/v1/checkin", json=ELIGIBLE, headers=auth(token))
            if r.status_code == 401:  # a registration whose answer was lost to a kill: register again
                token = call(sess, "POST", "/v1/devices", json={"device_id": f"dev-{i}"}).json()["token"]
                continue
            if r.status_code == 200:
                break
            time.sleep(0.05)
        body = upload_body(0, 0, update, n, uid)
        while True:
            with lock:
                progress[0] += 1
            r = call(sess, "POST", "/v1/rounds/0/updates", data=body, headers=auth(token))
            if r.status_code == 401:
                token = call(sess, "POST", "/v1/devices", json={"device_id": f"dev-{i}"}).json()["token"]
                continue
            if r.status_code in (202, 409):
                outcomes.append({"device": i, "status": r.status_code, "body": r.json()})
                return
            raise AssertionError(f"device {i}: {r.status_code} {r.text}")

    rng = random.Random(seed)
    kill_log = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(device, i) for i in range(goal)]
        for k in range(kills):
            target = progress[0] + rng.randint(1, 3)
            t_wait = time.time() + 10
            while progress[0] < target and time.time() < t_wait:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
            reports = recorded_updates(cfg, "SELECT COUNT(*) FROM updates WHERE round = 0")[0][0]
            srv.kill()
            kill_log.append({"kill": k + 1, "upload_attempts": progress[0], "recorded_before_kill": reports})
            srv.start()
        for f in futures:
            f.result()
    dt = time.perf_counter() - t0
    try:
        s = requests.Session()
        token = s.post(url + "/v1/devices", json={"device_id": "checker"}).json()["token"]
        status = s.get(url + "/v1/status").json()
        w0 = encodings.decode_float32(model_bytes(url, token, 0), SH)
        w1 = model_bytes(url, token, 1)
    finally:
        for h in srvs:
            h.stop()
    rows = recorded_updates(cfg, "SELECT device_id, upload_id, num_examples, weight FROM updates WHERE round = 0"
                                 " ORDER BY seq")
    by_uid = {uid: (u, n) for u, n, uid in ups}
    rs = RunningSum([np.zeros(s, np.float64) for s in SH])
    for _, uid, n, weight in rows:  # recompute in the recorded order, as the server sums
        rs.add(by_uid[uid][0], weight)
    expected = apply_delta(w0, rs.mean(), 1.0)
    exact = encodings.encode_float32(expected) == w1
    devices = [r[0] for r in rows]
    acked_lost = sum(o["status"] == 202 and f"dev-{o['device']}" not in set(devices) for o in outcomes)
    return {"acked_lost": acked_lost, "hosts": hosts, "kills": len(kill_log), "kills_during_round": sum(k["recorded_before_kill"] < goal for k in kill_log),
            "seconds": dt, "recorded": len(rows), "unique_devices": len(set(devices)),
            "goal": goal, "accepted_answers": sum(o["status"] == 202 for o in outcomes),
            "round_closed": status["rounds_closed"] == 1 and status["model"]["version"] == 1,
            "model_exact": bool(exact), "retries": dict(retries), "kill_log": kill_log}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fuzz", type=int, default=10_000)
    p.add_argument("--goal", type=int, default=40)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--crash-goal", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4, help="threads per worker (1: server/worker.py's LoopWorker)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="fedkeys-faults-")
    try:
        clean = run_round(os.path.join(base, "clean"), args.goal, 0, args.workers, args.seed, args.threads)
        fuzzed = run_round(os.path.join(base, "fuzzed"), args.goal, args.fuzz, args.workers, args.seed, args.threads)
        n5xx = sum(v for k, v in fuzzed["statuses"].items() if k >= 500)
        same = clean["sha256"] == fuzzed["sha256"]
        print(f"(a) fuzz: {fuzzed['fuzz_requests']} hostile requests around a {args.goal}-report round in "
              f"{fuzzed['seconds']:.1f} s ({fuzzed['fuzz_requests'] / fuzzed['seconds']:.0f} req/s), "
              f"{args.workers} workers")
        print(f"    statuses: {dict(sorted(fuzzed['statuses'].items()))}; 5xx: {n5xx}; unexpected answers: "
              f"{len(fuzzed['unexpected'])}")
        for u in fuzzed["unexpected"][:5]:
            print("     ", u)
        print(f"    published model bit-identical to the clean round's: {same} ({fuzzed['sha256'][:16]})")
        crash = crash_round(os.path.join(base, "crash"), args.crash_goal, args.kills, args.workers, args.seed, args.threads)
        ok_crash = (crash["recorded"] == crash["goal"] == crash["unique_devices"] and crash["round_closed"]
                    and crash["acked_lost"] == 0
                    and crash["model_exact"] and crash["accepted_answers"] == crash["goal"])
        print(f"(b) crash: {crash['kills']} SIGKILLs ({crash['kills_during_round']} before the round had all its "
              f"reports) of master and workers during a {crash['goal']}-report round "
              f"({crash['seconds']:.1f} s); recorded updates {crash['recorded']} from {crash['unique_devices']} devices; "
              f"202 answers {crash['accepted_answers']}; round closed {crash['round_closed']}; "
              f"model equals the recomputed FedAvg step bit for bit: {crash['model_exact']}")
        print(f"    client retries: {crash['retries']}; recorded at each kill: "
              + ",".join(str(k["recorded_before_kill"]) for k in crash["kill_log"]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ok = n5xx == 0 and not fuzzed["unexpected"] and same and ok_crash
    summary = {"benchmark": "server_faults", "ok": ok, "fuzz_requests": fuzzed["fuzz_requests"], "fuzz_5xx": n5xx,
               "fuzz_unexpected": len(fuzzed["unexpected"]), "fuzz_statuses": fuzzed["statuses"],
               "model_bit_identical": same, "kills": crash["kills"], "kills_during_round": crash["kills_during_round"], "crash_recorded": crash["recorded"],
               "crash_acked_lost": crash["acked_lost"],
               "crash_goal": crash["goal"], "crash_unique_devices": crash["unique_devices"],
               "crash_model_exact": crash["model_exact"], "crash_round_closed": crash["round_closed"],
               "workers": args.workers, "threads": args.threads, "cpus": os.cpu_count()}
    print(json.dumps(summary))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
