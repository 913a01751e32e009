"""FedBuff's server step on a quadratic stand-in: the async_vs_sync day's arrivals, the model cheap.

    python benchmarks/fedbuff_quadratic.py [--devices 4000] [--sim-hours 0.5] [--concurrency 0] [--small]

`benchmarks/async_vs_sync.py` costs about 0.8 CPU s per trained update, so a server step cannot
be searched there. This runs the same virtual-clock day (device_sim.virtual_day: the phones'
profiles, availability, dropouts, session lengths from their real example counts; SyncRounds and
BufferedAsync with the benchmark's K = 8, its default concurrency or --concurrency, max
staleness 100, polynomial s(tau) = 1/sqrt(1 + tau)), so every version, arrival and staleness is
the trained run's, but each phone's update is exact local gradient descent on its own quadratic

    f_i(w) = 1/2 sum_j lam_j (w_j - c_ij)^2,  c_i = c* + sigma xi_i,  lam_j log-uniform in [0.02, 1]

(2 epochs of its batches at step 0.5, then clipped at privacy.clip_norm as the phones clip),
and the score is the population loss f(w) = 1/2 sum_j lam_j (w_j - c*_j)^2 relative to f(w0).
It isolates what the server step does with stale buffers: the delayed-gradient instability of
heavy momentum (Mitliagkas et al. 2016, "Asynchrony begets momentum": staleness itself acts as
momentum, so explicit momentum on top of it overshoots) against FedBuff's plain server SGD
(Nguyen et al. 2022, Algorithm 1). A quadratic has no plateau and no oscillating softmax, so it
bounds what is possible, not what the LSTM does: it says which steps are unstable for sure.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (policy, server lr, server momentum, FedBuff's normalization, staleness weight): sync at the
# `default` preset's FedAvgM; FedBuff at that step and at the deciding run's (Nesterov 0.9,
# lr 0.5), plain server SGD on a grid, and the sync step with FedBuff's Algorithm 1 normalization
# (stale buffers shrink by their mean s(tau))
P5, P1 = "polynomial:a=0.5", "polynomial:a=1"
STEPS = [("sync", 1.0, 0.9, "", ""), ("fedbuff", 1.0, 0.9, "scaled", P5), ("fedbuff", 0.5, 0.9, "scaled", P5),
         ("fedbuff", 1.0, 0.0, "scaled", P5), ("fedbuff", 0.5, 0.0, "scaled", P5), ("fedbuff", 0.25, 0.0, "scaled", P5),
         ("fedbuff", 0.1, 0.0, "scaled", P5),
         ("fedbuff", 1.0, 0.9, "unscaled", P5), ("fedbuff", 0.5, 0.9, "unscaled", P5),
         ("fedbuff", 1.0, 0.9, "unscaled", P1), ("fedbuff", 0.5, 0.9, "unscaled", P1)]


def example_counts(args, cfg) -> dict[str, int]:
    """Training examples per phone of the async_vs_sync data (cached in the work directory)."""
    path = os.path.join(args.workdir, f"examples_{args.devices}.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from data.dataset import FederatedData
    from fleet_day import _prepare

    data_dir, _ = _prepare(cfg, args.workdir, args.devices, args.data, bundle_dir="-")
    data = FederatedData(data_dir)
    users = sorted(data.users("train"))[: args.devices]
    counts = {u: int(data.client_examples(u, cfg.data.seq_len, cfg.train.max_examples_per_client)[0].shape[0])
              for u in users}
    with open(path, "w") as f:
        json.dump(counts, f)
    return counts


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from async_vs_sync import default_concurrency, parser as day_parser
    from configs import resolve
    from device_sim.day import DayConfig
    from device_sim.virtual_day import SessionCost, simulate
    from fedcore.algorithm import build
    from fedcore.buffered import BufferedAsync, StalenessWeight
    from fedcore.memory_server import BufferedServer, SyncServer
    from fedcore.messages import ClientUpdate
    from fedcore.policy import SyncRounds
    from fedmath import availability as av
    from fedmath.privacy import clip_by_global_norm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=4000)
    p.add_argument("--sim-hours", type=float, default=0.5)
    p.add_argument("--eval-min", type=float, default=10.0)
    p.add_argument("--dims", type=int, default=64)
    p.add_argument("--sigma", type=float, default=1.0, help="spread of the phones' optima around c*")
    p.add_argument("--workdir", default="runs/bench/async_vs_sync_4000")
    p.add_argument("--data", default=None, help="a prepared data directory (default: the workdir's)")
    p.add_argument("--small", action="store_true", help="1,000 phones, 0.5 simulated hours")
    p.add_argument("--concurrency", type=int, default=0,
                   help="FedBuff's phones training at once (0: async_vs_sync's default rule)")
    args = p.parse_args(argv)
    if args.small:
        args.devices, args.sim_hours = 1000, 0.5
        args.workdir = args.workdir.rstrip("/") + "_small"
    os.makedirs(args.workdir, exist_ok=True)
    cfg = resolve("default")
    ex = example_counts(args, cfg)
    rng = np.random.default_rng(0)
    lam = np.exp(rng.uniform(math.log(0.02), 0.0, args.dims)).astype(np.float32)
    cstar = rng.normal(0.0, 3.0, args.dims).astype(np.float32)
    optima = {u: cstar + args.sigma * np.random.default_rng([1, av._key(u) & 0xFFFFFFFF]).normal(
        0.0, 1.0, args.dims).astype(np.float32) for u in ex}
    bs, epochs = cfg.train.batch_size, cfg.train.local_epochs

    def loss(w) -> float:
        return float(0.5 * np.sum(lam * (w[0] - cstar) ** 2))

    def train(u: str, w, ticket) -> ClientUpdate:
        steps = epochs * math.ceil(ex[u] / bs)  # local GD at step 0.5 contracts each coordinate
        delta = (1.0 - (1.0 - 0.5 * lam) ** steps) * (optima[u] - w[0])
        delta, _ = clip_by_global_norm([delta.astype(np.float32)], cfg.privacy.clip_norm)
        return ClientUpdate(delta, ex[u], u, ticket.version)

    n_params = 676_847  # the `default` model at the 4,000-phone data's vocabulary: the sessions' bytes
    cost = SessionCost(lambda u: epochs * math.ceil(ex[u] / bs), bs, cfg.data.seq_len, 4 * n_params, 4 * n_params)
    d = day_parser().parse_args([])  # async_vs_sync's day and policies, as its defaults run them
    day = DayConfig(sim_hours=args.sim_hours, start_hour=d.start_hour, tick_s=60 * d.tick_min,
                    cooldown_s=60 * d.cooldown_min, tokens_per_s=d.tokens_per_s, seed=d.seed)
    w0 = [np.zeros(args.dims, np.float32)]
    concurrency = args.concurrency or default_concurrency(cfg)
    out: dict = {"benchmark": "fedbuff_quadratic", "devices": len(ex), "sim_hours": args.sim_hours,
                 "concurrency": concurrency, "runs": {}}
    for name, lr, m, norm, weight in STEPS:
        alg = build(dataclasses.replace(cfg.train, server_learning_rate=lr, server_momentum=m), dp_noise=True)
        if name == "sync":
            server = SyncServer(alg, [w.copy() for w in w0], population=len(ex),
                                policy=SyncRounds(cfg.server.goal_count, cfg.server.over_selection, d.sync_deadline_s))
        else:
            policy = BufferedAsync(cfg.server.goal_count, concurrency, d.max_staleness, StalenessWeight.parse(weight))
            server = BufferedServer(alg, [w.copy() for w in w0], population=len(ex), expires_s=d.ticket_expiry_s,
                                    normalize=norm, policy=policy)
        rep = simulate(server, ex, train, cost, day, retry_s=d.retry_s, eval_every_s=60 * args.eval_min,
                       on_eval=lambda w: {"rel_loss": round(loss(w) / loss(w0), 4)})
        key = f"{name} lr {lr:g} momentum {m:g}" + (f" {norm} {weight}" if norm else "")
        out["runs"][key] = {"versions": server.version, "rel_loss_by_hour": {f"{e['hour']:g}": e["rel_loss"]
                                                                            for e in rep.evals}}
        print(f"fedbuff_quadratic: {key}: " + ", ".join(f"{e['hour']:g} h v{e['version']} {e['rel_loss']:.4f}"
                                                        for e in rep.evals), flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
