"""Hierarchical aggregation: 1 root and 4 edge collectors against one flat collector.

    python benchmarks/hierarchy.py [--devices 32] [--edges 4] [--rounds 3] [--small]

Every collector is its own gunicorn process on 127.0.0.1 (server.testing.ServerProcess). The
same devices send the same updates (seeded random deltas of the `default` model's shapes, with
norms under the clip) to the flat collector (goal_count = devices) and, device i to edge i % E,
to the edges (goal_count = devices / E each; collector.upstream = the root), whose root has
goal_count = E and aggregates the edges' partials as clients (server/edge.py). Each device
registers once, then every round checks in, downloads the model it was handed and uploads.

Prints, per layout: requests and bytes (both directions) at the root or flat collector per
round, end-to-end seconds per round; and the largest difference between the two published
models after the last round. Ends with one JSON line (max_abs_diff, root_requests_ratio and
root_bytes_ratio: the root's load per round over the flat collector's; fan-in = devices / E).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from fedmath import encodings  # noqa: E402
from server.testing import MODEL_SHAPES, ServerProcess, config_dict, make_bundle, random_update, upload_body  # noqa: E402

ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 10}


class Device:
    """A scripted phone that counts its requests and bytes."""

    def __init__(self, url: str, device_id: str) -> None:
        self.url, self.device_id, self.s = url, device_id, requests.Session()
        self.requests = self.bytes = 0
        self.h = {"Authorization": f"Bearer {self._call('POST', '/v1/devices', json={'device_id': device_id}).json()['token']}"}

    def _call(self, method: str, path: str, **kw) -> requests.Response:
        r = self.s.request(method, self.url + path, timeout=600, **kw)
        self.requests += 1
        self.bytes += len(r.request.body or b"") + len(r.content)
        return r

    def session(self, update, n: int, shapes) -> int:
        r = self._call("POST", "/v1/checkin", json=ELIGIBLE, headers=self.h)
        r.raise_for_status()
        plan = r.json()["plan"]
        w = self._call("GET", f"/v1/model/{plan['model_version']}/weights", headers=self.h)
        assert len(w.content) == 4 * sum(int(np.prod(s)) for s in shapes)
        body = upload_body(plan["round"], plan["model_version"], update, n, f"{self.device_id}-r{plan['round']}")
        return self._call("POST", f"/v1/rounds/{plan['round']}/updates", data=body, headers=self.h).status_code


def _config(bundle: str, state: str, goal: int, **collector) -> dict:
    return config_dict(bundle, state, {"goal_count": goal, "over_selection": 1.0, "threads": 8},
                       {"mode": "none", "clip_norm": 1.0},
                       {"report_deadline_s": 3600.0, **collector},
                       {"aggregator": "weighted_mean", "max_examples_per_client": 0})


def _run(urls: list[str], args, shapes) -> dict:
    """All devices over all rounds; device i talks to urls[i % len(urls)]."""
    devices = [Device(urls[i % len(urls)], f"phone{i:03d}") for i in range(args.devices)]
    round_s = []
    with ThreadPoolExecutor(max_workers=args.devices) as pool:  # an edge's last upload waits for the root
        for r in range(args.rounds):
            rng = np.random.default_rng([args.seed, r])
            ups = [random_update(shapes, float(rng.uniform(0.1, 0.9)), rng) for _ in devices]
            t0 = time.perf_counter()
            codes = list(pool.map(lambda i: devices[i].session(ups[i], 1 + (7 * i + r) % 50, shapes),
                                  range(len(devices))))
            round_s.append(time.perf_counter() - t0)
            assert codes == [202] * len(devices), codes
    return {"device_requests": sum(d.requests for d in devices), "device_bytes": sum(d.bytes for d in devices),
            "round_s": round_s}


def _final(url: str, version: int, shapes):
    d = Device(url, f"reader-{time.time_ns()}")
    return encodings.decode_float32(d._call("GET", f"/v1/model/{version}/weights", headers=d.h).content, shapes)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=32)
    p.add_argument("--edges", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model", default="default", choices=sorted(MODEL_SHAPES), help="fake bundle shapes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/bench/hierarchy")
    p.add_argument("--small", action="store_true", help="8 devices, 2 rounds, the tiny shapes")
    args = p.parse_args(argv)
    if args.small:
        args.devices, args.rounds, args.model = 8, 2, "tiny"
    if args.devices % args.edges:
        raise SystemExit(f"hierarchy: --devices {args.devices} must be a multiple of --edges {args.edges}")
    args.workdir = os.path.abspath(args.workdir)  # the configs name directories relative to themselves
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    bundle = os.path.join(args.workdir, "bundle")
    make_bundle(bundle, MODEL_SHAPES[args.model])
    shapes = [s for _, s in MODEL_SHAPES[args.model]]
    fan_in = args.devices // args.edges
    w = args.workdir

    with ServerProcess(os.path.join(w, "flat"), _config(bundle, os.path.join(w, "flat/state"), args.devices),
                       threads=8) as flat:
        flat_run = _run([flat.url], args, shapes)
        flat_w = _final(flat.url, args.rounds, shapes)
    with ServerProcess(os.path.join(w, "root"), _config(bundle, os.path.join(w, "root/state"), args.edges),
                       threads=8) as root:
        edges = [ServerProcess(os.path.join(w, f"edge{e}"),
                               _config(bundle, os.path.join(w, f"edge{e}/state"), fan_in, upstream=root.url,
                                       upstream_device_id=f"edge{e}"), threads=8) for e in range(args.edges)]
        try:
            for e in edges:
                e.start()
            tree_run = _run([e.url for e in edges], args, shapes)
            up = [requests.get(e.url + "/v1/status").json()["upstream"] for e in edges]
            root_w = _final(root.url, args.rounds, shapes)
        finally:
            for e in edges:
                e.stop()

    diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(root_w, flat_w))
    root_requests = sum(u["requests"] for u in up) / args.rounds
    root_bytes = sum(u["bytes_up"] + u["bytes_down"] for u in up) / args.rounds
    flat_requests = flat_run["device_requests"] / args.rounds
    flat_bytes = flat_run["device_bytes"] / args.rounds
    n_params = sum(int(np.prod(s)) for s in shapes)
    print(f"hierarchy: {args.devices} devices, {args.edges} edges (fan-in {fan_in}), {args.rounds} rounds, "
          f"{args.model} shapes ({n_params:,} params)")
    print(f"  flat: {flat_requests:.1f} requests, {flat_bytes / 1e6:.2f} MB per round at the collector; "
          f"round seconds {[round(x, 2) for x in flat_run['round_s']]}")
    print(f"  two-level: {root_requests:.1f} requests, {root_bytes / 1e6:.2f} MB per round at the root "
          f"(edges' upstream calls, their polls for the root's version included); "
          f"round seconds {[round(x, 2) for x in tree_run['round_s']]}")
    print(f"  max |flat - two-level| after {args.rounds} rounds: {diff:.3g}")
    result = {"benchmark": "hierarchy", "devices": args.devices, "edges": args.edges, "fan_in": fan_in,
              "rounds": args.rounds, "model": args.model, "max_abs_diff": diff,
              "root_requests_ratio": round(root_requests / flat_requests, 4),
              "root_bytes_ratio": round(root_bytes / flat_bytes, 4),
              "flat_requests_per_round": flat_requests, "root_requests_per_round": root_requests,
              "flat_bytes_per_round": int(flat_bytes), "root_bytes_per_round": int(root_bytes),
              "flat_round_s": round(float(np.mean(flat_run["round_s"])), 3),
              "two_level_round_s": round(float(np.mean(tree_run["round_s"])), 3)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
