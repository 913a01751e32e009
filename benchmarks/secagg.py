"""Secure aggregation cost over real HTTP: SecAgg+ rounds against the gunicorn collector
(server/secure_rounds.py) with phones' client side in this process (device_sim/secure.py), next
to a plain round of float32 uploads for the same devices and model size.

    .venv/bin/python benchmarks/secagg.py [--small] [--devices 10,100,1000] [--dropouts 0,0.1,0.3]
        [--sizes default,gboard] [--bits 32,20] [--stage-timeout 120] [--dir DIR]

    --small: 10 devices, dropouts 0 and 0.3, the `default` size, 32 and 20 bits.

Each row is one secure round: `devices` attested phones register, check in, and run the four
stages in lockstep; a share `dropout` of them drops after the masked upload (they never answer
the unmasking stage, so the server must rebuild their self masks from their neighbours' shares;
the graph's degree and threshold are chosen for that dropout rate). Updates are random
(Gaussian directions of L2 norm 0.9, inside the clip norm 1) with the parameter counts of the presets (server.testing.MODEL_SHAPES).

Figures per row:
- client_cpu_s: this process's CPU seconds for the round divided by the devices (a phone's
  work: keys, shares, quantizing, mask expansion, packing, and its HTTP requests);
- server_cpu_s: the gunicorn master's and workers' CPU seconds from the first check-in to the
  published model; plain_server_cpu_s the same for a plain round of float32 uploads by as many
  devices (same size, one run per size and device count); server_cpu_ratio = secure / plain;
  stage_server_cpu_s splits server_cpu_s by the stage the phones were in (the check-ins are in
  server_cpu_s but in no stage; `close` runs from the last unmask message to the published
  model: the unmasking arithmetic, the publication, and the status polls of the idle wait);
- bytes_up, bytes_down: mean bytes per surviving device on the /v1/secagg endpoints (bodies,
  both ways, key and share traffic included, and the secure-stage info the check-in answer
  carries; the rest of the check-in and the model download excluded);
  bytes_ratio = (bytes_up + bytes_down) / the bytes of one float32 upload (wire header included);
- exact: the collector's ring sum (`secagg/r<N>.sum`) equals the sum mod 2^b of the encodings the
  survivors uploaded, value for value.

Prints a table and ends with one JSON line {"benchmark": "secagg", "rows": [...], "exact": bool}.
CPU seconds, not wall time, are the figures: the machine is shared, and a stage waiting on
dropped devices idles for `--stage-timeout` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from device_sim.secure import SecureReport  # noqa: E402
from device_sim.transport import Transport  # noqa: E402
from fedmath.attestation import DeviceIdentity, Issuer  # noqa: E402
from secagg import graph, ring  # noqa: E402
from server.testing import MODEL_SHAPES, ServerProcess, config_dict, make_bundle, random_update, upload_body  # noqa: E402

ELIGIBLE = dict(idle=True, charging=True, unmetered=True, num_examples=5)


def cpu_of(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc] + proc.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def start(root: str, bundle: str, n: int, issuer: Issuer, secagg: dict | None) -> ServerProcess:
    cfg = config_dict(bundle, os.path.join(root, "state"), {"goal_count": n, "over_selection": 1.0},
                      {"mode": "none", "clip_norm": 1.0},
                      {"attestation": "required", "attestation_public_key": issuer.public_hex,
                       "rate_limit_per_s": 1e6, "rate_limit_burst": 1000000, "report_deadline_s": 36000.0},
                      {"aggregator": "uniform_mean", "max_examples_per_client": 100})
    if secagg is not None:
        cfg["secagg"] = secagg
    return ServerProcess(os.path.join(root, "srv"), cfg, workers=1, threads=2)  # started by `with`


def fleet(url: str, n: int, issuer: Issuer, idents: dict) -> dict[str, Transport]:
    links = {}
    for i in range(n):
        d = f"phone-{i:04d}"
        if d not in idents:
            idents[d] = DeviceIdentity.create(d, issuer)
        t = Transport(url, retries=2)  # a keep-alive connection the server closed while idle is retried
        t.register(d, idents[d])
        links[d] = t
    return links


def plain_round(root: str, bundle: str, shapes, n: int, issuer: Issuer, idents: dict, rng) -> dict:
    with start(root, bundle, n, issuer, None) as srv:
        links = fleet(srv.url, n, issuer, idents)
        master = psutil.Process(srv.proc.pid)
        s0 = cpu_of(master)
        rnd = None
        for t in links.values():
            rnd = t.checkin(**ELIGIBLE).round
        update = random_update(shapes, 0.9, rng)
        body = upload_body(rnd, 0, update, 5)
        for t in links.values():
            r = t.upload(rnd, body)
            assert r.accepted, r
        server = cpu_of(master) - s0
        assert next(iter(links.values())).model_info().version == 1
    return {"plain_server_cpu_s": server, "float32_upload_bytes": len(body)}


def secure_round(root: str, bundle: str, shapes, n: int, dropout: float, bits: int, timeout: float,
                 issuer: Issuer, idents: dict, rng) -> dict:
    secagg = {"enabled": True, "bits": bits, "dropout": dropout, "stage_timeout_s": timeout}
    with start(root, bundle, n, issuer, secagg) as srv:
        links = fleet(srv.url, n, issuer, idents)
        master = psutil.Process(srv.proc.pid)
        s0, c0 = cpu_of(master), time.process_time()
        ids = sorted(links)
        checks = {d: links[d].checkin(**ELIGIBLE) for d in ids}
        rnd = {c.round for c in checks.values()}.pop()
        for d, t in links.items():
            t.stats = type(t.stats)()  # count the secure stages only, and the stage info the check-in carried
            t.stats.bytes_down += len(json.dumps(checks[d].secagg, separators=(",", ":")))
        reports = {d: SecureReport(links[d], idents[d], rnd, issuer.public_hex, max_wait_s=10 * timeout + 60,
                                   info=checks[d].secagg) for d in ids}
        stages = {}
        mark = [cpu_of(master)]

        def lap(name: str) -> None:
            now = cpu_of(master)
            stages[name] = now - mark[0]
            mark[0] = now

        for d in ids:
            reports[d].advertise()
        lap("advertise")
        for d in ids:
            reports[d].share()
        lap("share")
        size = sum(int(np.prod(s)) for s in shapes)
        expected = np.zeros(size + 1, np.uint32)
        for d in ids:
            update = random_update(shapes, 0.9, rng)
            q = reports[d].encode(update, 1)
            expected = ring.add_mod(expected, q, bits)
            reports[d].masked(q)
            del q, update
        lap("masked")
        drop = set(rng.choice(ids, size=int(round(dropout * n)), replace=False)) if dropout > 0 else set()
        survivors = [d for d in ids if d not in drop]
        for d in survivors:
            reports[d].unmask()
        lap("unmask")
        client = (time.process_time() - c0) / n
        waiter = links[survivors[0]]
        deadline = time.monotonic() + 10 * timeout + 120
        st = waiter.status()
        if drop and st["rounds_closed"] + st["rounds_abandoned"] == 0:
            time.sleep(timeout)  # idle, not polling: requests would count in the server's CPU
        while True:  # a stage waiting on dropped devices closes at its idle timeout, on a request
            st = waiter.status()
            if st["rounds_closed"] + st["rounds_abandoned"] >= 1 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        lap("close")
        server = cpu_of(master) - s0
        sum_path = os.path.join(root, "state", "secagg", f"r{rnd}.sum")
        got = np.fromfile(sum_path, "<u4") if os.path.exists(sum_path) else None
        exact = got is not None and st["rounds_closed"] == 1 and np.array_equal(got, expected)
        up = [links[d].stats.bytes_up for d in survivors]  # counted since check-in: the stages only
        down = [links[d].stats.bytes_down for d in survivors]
        params = graph.choose(n, dropout)
    return {"client_cpu_s": client, "server_cpu_s": server, "bytes_up": float(np.mean(up)),
            "bytes_down": float(np.mean(down)), "exact": bool(exact), "degree": params.degree,
            "threshold": params.threshold, "survivors": len(survivors),
            "stage_server_cpu_s": stages}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="10 devices, dropouts 0 and 0.3, default size, 32/20 bits")
    ap.add_argument("--devices", default="10,100,1000")
    ap.add_argument("--dropouts", default="0,0.1,0.3")
    ap.add_argument("--sizes", default="default,gboard")
    ap.add_argument("--bits", default="32,20")
    ap.add_argument("--stage-timeout", type=float, default=120.0,
                    help="secagg.stage_timeout_s: idle seconds before a stage closes without its dropped devices "
                         "(longer than any pause of this process between two devices' messages)")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    if args.small:
        args.devices, args.dropouts, args.sizes, args.bits = "10", "0,0.3", "default", "32,20"
    devices = [int(x) for x in args.devices.split(",")]
    dropouts = [float(x) for x in args.dropouts.split(",")]
    sizes = args.sizes.split(",")
    bit_widths = [int(x) for x in args.bits.split(",")]
    work = os.path.abspath(args.dir) if args.dir else tempfile.mkdtemp(prefix="fedkeys-secagg-")
    issuer = Issuer.generate()
    idents: dict = {}
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'size':8s} {'dev':>5s} {'drop':>5s} {'bits':>4s} {'k':>4s} {'t':>4s} {'client s':>9s} "
          f"{'server s':>9s} {'plain s':>8s} {'ratio':>6s} {'up B':>10s} {'down B':>9s} {'bytes x':>7s} exact",
          flush=True)
    try:
        for size in sizes:
            shapes = [s for _, s in MODEL_SHAPES[size]]
            bundle = os.path.join(work, f"bundle-{size}")
            make_bundle(bundle, MODEL_SHAPES[size])
            for n in devices:
                plain = plain_round(os.path.join(work, f"plain-{size}-{n}"), bundle, shapes, n, issuer, idents, rng)
                shutil.rmtree(os.path.join(work, f"plain-{size}-{n}"), ignore_errors=True)
                for dropout in dropouts:
                    for bits in bit_widths:
                        root = os.path.join(work, f"secure-{size}-{n}-{dropout}-{bits}")
                        try:
                            r = secure_round(root, bundle, shapes, n, dropout, bits, args.stage_timeout, issuer,
                                             idents, rng)
                        except Exception as e:  # a failed round is a row that says so, not a lost run
                            print(f"{size} {n} {dropout} {bits}: failed: {e!r}", flush=True)
                            r = {"client_cpu_s": float("nan"), "server_cpu_s": float("nan"), "bytes_up": float("nan"),
                                 "bytes_down": float("nan"), "exact": False, "degree": 0, "threshold": 0,
                                 "survivors": 0, "error": repr(e)}
                        shutil.rmtree(root, ignore_errors=True)
                        row = {"devices": n, "dropout": dropout, "size": size, "bits": bits, **r,
                               "plain_server_cpu_s": plain["plain_server_cpu_s"],
                               "server_cpu_ratio": r["server_cpu_s"] / plain["plain_server_cpu_s"],
                               "float32_upload_bytes": plain["float32_upload_bytes"],
                               "bytes_ratio": (r["bytes_up"] + r["bytes_down"]) / plain["float32_upload_bytes"],
                               "bytes_up_ratio": r["bytes_up"] / plain["float32_upload_bytes"]}
                        rows.append(row)
                        print(f"{size:8s} {n:5d} {dropout:5.2f} {bits:4d} {row['degree']:4d} {row['threshold']:4d} "
                              f"{row['client_cpu_s']:9.3f} {row['server_cpu_s']:9.2f} {row['plain_server_cpu_s']:8.2f} "
                              f"{row['server_cpu_ratio']:6.2f} {row['bytes_up']:10.0f} {row['bytes_down']:9.0f} "
                              f"{row['bytes_ratio']:7.3f} {row['exact']}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = {"benchmark": "secagg", "rows": rows, "exact": all(r["exact"] for r in rows) and bool(rows),
               "cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
