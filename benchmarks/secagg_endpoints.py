"""Where a secure round's server CPU goes, per endpoint: the collector's Flask app in this process
(`server.app.create_app`, the code gunicorn serves), driven by the phones of benchmarks/secagg.py
(device_sim/secure.py) through `device_sim.inprocess.WsgiAdapter`, next to a plain round of
float32 uploads by as many devices.

    .venv/bin/python benchmarks/secagg_endpoints.py [--small] [--devices 30] [--dropout 0.3]
        [--bits 20] [--size default] [--profile 0]

    --small: 10 devices, the `tiny` size.

Server CPU is this thread's CPU time inside each request (the WSGI app and werkzeug's test
environ; no socket, no gunicorn), summed per endpoint; the unmasking and the publication run
in the request that finds the unmask stage timed out (a status poll here, as in
benchmarks/secagg.py). Phones' work (keys, shares, masking) is outside every figure. A share
`--dropout` of the devices drops after the masked upload; the graph's degree and threshold
follow from devices and dropout (`secagg.graph.choose`): 200 devices at 30% dropout already
have the 1,000-device degree (k = 136), so the `tiny` size (no vector cost) at 200 devices shows
the per-request cost of the 1,000-device row in under a minute. `--profile N` prints cProfile's
top N functions of the secure round's requests by internal time.

Figures are CPU seconds of one thread on a shared machine: compare runs made side by side.
Prints a table and ends with one JSON line {"benchmark": "secagg_endpoints", ...}.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import json
import os
import pstats
import shutil
import sys
import tempfile
import time

import numpy as np
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from device_sim.inprocess import URL, WsgiAdapter  # noqa: E402
from device_sim.secure import SecureReport  # noqa: E402
from device_sim.transport import Transport  # noqa: E402
from fedmath.attestation import DeviceIdentity, Issuer  # noqa: E402
from secagg import graph  # noqa: E402
from server.app import create_app  # noqa: E402
from server.testing import MODEL_SHAPES, config_dict, make_bundle, random_update, upload_body  # noqa: E402

ELIGIBLE = dict(idle=True, charging=True, unmetered=True, num_examples=5)


class TimedAdapter(WsgiAdapter):
    """The in-process adapter, adding each request's thread CPU to its endpoint's total."""

    def __init__(self, app, cpu: collections.Counter, count: collections.Counter, prof: cProfile.Profile | None):
        super().__init__(app)
        self.cpu, self.count, self.prof = cpu, count, prof

    def send(self, request, **kw):
        parts = (request.path_url or "").split("?")[0].split("/")[2:]
        key = f"{request.method} " + "/".join(p for p in parts if not p.isdigit())
        t0 = time.thread_time()
        if self.prof is not None:
            self.prof.enable()
        try:
            return super().send(request, **kw)
        finally:
            if self.prof is not None:
                self.prof.disable()
            self.cpu[key] += time.thread_time() - t0
            self.count[key] += 1


def one_round(work: str, size: str, n: int, dropout: float, bits: int, secure: bool, issuer: Issuer,
              idents: dict, profile: bool) -> dict:
    shapes = [s for _, s in MODEL_SHAPES[size]]
    bundle = os.path.join(work, "bundle")
    if not os.path.isdir(bundle):
        make_bundle(bundle, MODEL_SHAPES[size])
    state = os.path.join(work, "secure" if secure else "plain")
    cfg = config_dict(bundle, state, {"goal_count": n, "over_selection": 1.0}, {"mode": "none", "clip_norm": 1.0},
                      {"attestation": "required", "attestation_public_key": issuer.public_hex,
                       "rate_limit_per_s": 1e6, "rate_limit_burst": 1000000, "report_deadline_s": 36000.0},
                      {"aggregator": "uniform_mean", "max_examples_per_client": 100})
    if secure:
        cfg["secagg"] = {"enabled": True, "bits": bits, "dropout": dropout, "stage_timeout_s": 1.0}
    app = create_app(test_config=cfg, workers=1)
    cpu: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    prof = cProfile.Profile() if profile else None
    links = {}
    for i in range(n):
        d = f"phone-{i:04d}"
        idents.setdefault(d, DeviceIdentity.create(d, issuer))
        session = requests.Session()
        t = Transport(URL, session=session, retries=0)
        session.mount(URL, TimedAdapter(app, cpu, count, None))
        t.register(d, idents[d])
        links[d] = t
    for t in links.values():  # registrations are in neither round's figure
        t.session.get_adapter(URL).prof = prof
    cpu.clear()
    count.clear()
    rng = np.random.default_rng(0)
    ids = sorted(links)
    checks = {d: links[d].checkin(**ELIGIBLE) for d in ids}
    rnd = {c.round for c in checks.values()}.pop()
    if not secure:
        body = upload_body(rnd, 0, random_update(shapes, 0.9, rng), 5)
        for d in ids:
            assert links[d].upload(rnd, body).accepted
    else:
        reports = {d: SecureReport(links[d], idents[d], rnd, issuer.public_hex, max_wait_s=60, info=checks[d].secagg)
                   for d in ids}
        for d in ids:
            reports[d].advertise()
        for d in ids:
            reports[d].share()
        for d in ids:
            reports[d].masked(reports[d].encode(random_update(shapes, 0.9, rng), 1))
        drop = set(rng.choice(ids, size=int(round(dropout * n)), replace=False)) if dropout > 0 else set()
        survivors = [d for d in ids if d not in drop]
        for d in survivors:
            reports[d].unmask()
        time.sleep(1.2)  # past the unmask stage's idle timeout: the next request closes it
    for _ in range(40):
        st = links[ids[0]].status()
        if st["rounds_closed"] + st["rounds_abandoned"]:
            break
        time.sleep(0.5)
    if st["rounds_closed"] != 1:
        raise RuntimeError(f"the round did not publish: {st}")
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(profile)
    return {"server_cpu_s": sum(cpu.values()),
            "endpoints": {k: {"requests": count[k], "cpu_ms_per_request": 1000 * cpu[k] / count[k]}
                          for k in sorted(cpu, key=lambda k: -cpu[k])}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="10 devices, the tiny size")
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--size", default="default", choices=sorted(MODEL_SHAPES))
    ap.add_argument("--profile", type=int, default=0, help="print cProfile's top N functions of the secure round")
    args = ap.parse_args(argv)
    if args.small:
        args.devices, args.size = 10, "tiny"
    work = tempfile.mkdtemp(prefix="fedkeys-secagg-endpoints-")
    issuer, idents = Issuer.generate(), {}
    load = os.getloadavg()[0]
    try:
        plain = one_round(work, args.size, args.devices, args.dropout, args.bits, False, issuer, idents, False)
        secure = one_round(work, args.size, args.devices, args.dropout, args.bits, True, issuer, idents,
                           args.profile > 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = args.devices
    params = graph.choose(n, args.dropout)
    print(f"{args.size}, {n} devices, dropout {args.dropout}, b = {args.bits}, k = {params.degree}, "
          f"t = {params.threshold}")
    for name, r in (("plain", plain), ("secure", secure)):
        print(f"{name}: server {r['server_cpu_s']:.3f} s ({1000 * r['server_cpu_s'] / n:.2f} ms per device)")
        for k, e in r["endpoints"].items():
            print(f"  {k:28s} {e['requests']:5d} requests {e['cpu_ms_per_request']:8.2f} ms each")
    ratio = secure["server_cpu_s"] / plain["server_cpu_s"]
    print(f"secure / plain: {ratio:.2f}")
    summary = {"benchmark": "secagg_endpoints", "devices": n, "dropout": args.dropout, "bits": args.bits,
               "size": args.size, "degree": params.degree, "threshold": params.threshold,
               "server_cpu_s": secure["server_cpu_s"], "plain_server_cpu_s": plain["server_cpu_s"],
               "server_cpu_ratio": ratio, "endpoints": secure["endpoints"], "plain_endpoints": plain["endpoints"],
               "load_before": load, "load_after": os.getloadavg()[0]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
