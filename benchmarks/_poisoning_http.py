"""benchmarks/poisoning.py's row through the real collector (not a benchmark itself).

The same population, starting weights, recipe, cohorts and attackers as the simulation rows;
here the collector runs under gunicorn on 127.0.0.1 (its own process, attestation required),
phones train with TFLite (device_sim.phone.Phone; attackers device_sim.attacker.AttackingPhone)
and upload over HTTP; the defence is the collector's `train.aggregator`. Privacy mode "none"
with a clip of 1e4 (never binding), as the simulation rows run without a clip.
"""

from __future__ import annotations

import dataclasses
import os
import time


def http_row(env: dict, attack_kind: str, defense: str, share: float, clean_top1) -> dict:
    import numpy as np

    from benchmarks.poisoning import DEFENSES, make_attack
    from device_sim.attacker import AttackingPhone
    from device_sim.attestation import issuer_for_run, transports
    from device_sim.fleet import ModelPool, fetch_published_weights, make_phones, run_devices, tflite_factory
    from federated.sampling import sample_clients
    from fedmath.attacks import choose_attackers
    from model.evaluate import backdoor_success, evaluate
    from model.nwp import weight_names
    from model.weights_io import save_weights
    from server.process import ServerProcess, write_server_config
    from tflite_export.bundle import export_bundle

    cfg, a = env["cfg"], env["args"]
    work = os.path.join(a.workdir, f"http_{int(time.time())}")
    os.makedirs(work)
    k = a.clients_per_round
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, aggregator=DEFENSES[defense]),
        server=dataclasses.replace(cfg.server, goal_count=k, over_selection=1.0),
        privacy=dataclasses.replace(cfg.privacy, mode="none", clip_norm=1e4, noise_multiplier=0.0))
    weights_path = os.path.join(work, "warm.npz")
    save_weights(weights_path, weight_names(env["model"]), env["warm"])
    bundle = os.path.join(work, "bundle")
    export_bundle(cfg, weights_path, os.path.join(env["data"].data_dir, "spm.model"), bundle, inference=False)
    users = sorted(env["clients"])
    cohorts = [sample_clients(users, k, cfg.train.seed, r) for r in range(a.warmup_rounds, a.warmup_rounds + a.rounds)]
    attackers = set(choose_attackers(users, share, seed=cfg.train.seed)) if attack_kind != "none" and share else set()
    attack = make_attack(attack_kind, env["vocab"], env["backdoor"], a.boost)
    needed = sorted({u for c in cohorts for u in c})
    m = cfg.train.max_examples_per_client  # the rows the simulation's clients train on (the plan's cap)
    clients = {u: (env["clients"][u][0][:m], env["clients"][u][1][:m]) for u in needed}
    cfg, issuer = issuer_for_run(cfg)
    phone_transport = transports(issuer)
    path = write_server_config(os.path.join(work, "server.json"), cfg, bundle, os.path.join(work, "state"))
    t0 = time.perf_counter()
    with ServerProcess(path, log_path=os.path.join(work, "server.log")) as srv:
        factory = ModelPool(tflite_factory())
        phones = make_phones(srv.url, clients, factory, seed=cfg.devices.seed, transport_factory=phone_transport)
        for i, u in enumerate(sorted(clients)):
            if u in attackers:
                p = phones[u]
                phones[u] = AttackingPhone(u, p.x, p.y, p.transport, factory, np.random.default_rng([i, 13]),
                                           store=p.store, attack=attack, norm_slack=cfg.server.norm_slack)
        fleet = run_devices(srv.url, clients, rounds=len(cohorts), concurrency=2, cohort=lambda r: cohorts[r],
                            progress=False, phones=phones, transport_factory=phone_transport)
        s = fleet.summary()
        last = max((r["model_version"] for r in s["rounds"] if r["model_version"]), default=0)
        shapes = [w.shape for w in env["warm"]]
        weights = fetch_published_weights(srv.url, last, shapes, transport_factory=phone_transport)
        import requests

        metrics = requests.get(srv.url + "/metrics", timeout=30).text
    flagged = next((float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith("fedkeys_updates_flagged ")), 0.0)
    top1 = evaluate(env["model"], weights, *env["heldout"])["top1"]
    bd = backdoor_success(env["model"], weights, env["backdoor"], env["heldout"][0])
    print(f"  http {attack_kind} {defense} {share}: {s['rounds_completed']} rounds, {s['accepted']} accepted, "
          f"{s['rejected']} rejected; attackers in cohorts {sum(u in attackers for c in cohorts for u in c)}; "
          f"/metrics fedkeys_updates_flagged {flagged:g}; {time.perf_counter() - t0:.0f}s", flush=True)
    return {"attack": attack_kind, "defense": defense, "attackers": share, "top1": round(top1, 4),
            "clean_top1": round(clean_top1, 4) if clean_top1 is not None else None,
            "backdoor_success": round(bd, 4), "path": "http"}
