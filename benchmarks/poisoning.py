"""Poisoning: attacks x defences x attacker shares, main-task top-1 and backdoor success.

    python benchmarks/poisoning.py [--preset tiny] [--rounds 10] [--warmup-rounds 30] [--clients-per-round 10]
                                   [--attacks none,scaling,sign_flip,backdoor]
                                   [--defenses none,norm_bound,median,trimmed_mean,multi_krum,norm_bound_anomaly]
                                   [--shares 0.01,0.05,0.1] [--http ATTACK:DEFENSE:SHARE,... | --no-http]
                                   [--jobs 2] [--small] [--workdir DIR]

The population is the simulator's default (data.num_users = 300 users, 240 of them training);
the model is the `tiny` preset's (embedding 16, LSTM 32, vocabulary 300, 10-token windows):
the grid is 60 distinct runs on two shared cores. Each run trains `--rounds` rounds of
`--clients-per-round` clients drawn uniformly (federated.sampling), FedAvg (server SGD, lr 1),
clients as the tiny plan but with more local work (4 epochs, batch 8, lr 1.0, up to 64
examples: at the plan's 1 epoch and lr 0.5 the model stays at the most-frequent-word top-1), through the in-process
simulation (device_sim/simulation.py): Keras clients, the collector's own fedcore rules.

One invocation runs the whole grid. The 30 clean rounds are trained once (and cached in the
workdir); `--jobs` worker processes take one defence at a time, and within a defence the runs
share work through device_sim/run_cache.py (runs whose cohorts have met the same attackers so
far are one computation; every run's first round trains the same honest clients from the same
weights), exactly: a shared round is the round the run would have computed. Clients train in
one XLA-compiled loop per client. Meanwhile the main process runs the HTTP rows.

Attacks (fedmath/attacks.py, boost 10 = the cohort size): `scaling` (model replacement towards
a label-shifted model), `sign_flip` (-10 x the honest update), `backdoor` (half the attacker's
rows end in the trigger context followed by the chosen word; update x 10). `none` has no
attackers, so its rows are the clean run of each defence (the same run for every share).

Defences (fedcore rules by registry name): none = weighted_mean (FedAvg); norm_bound (TFF's
robust aggregator: adaptive clipping at the 0.8 quantile, zeroing); median; trimmed_mean
(beta 0.1); multi_krum (f 2, m = n - 2); norm_bound_anomaly = screened:inner=norm_bound
(fedcore/anomaly.py: flagged updates weigh 1%, reputation across rounds).

Backdoor success: the share of held-out windows (the evaluation windows, trigger planted at the
end of their real tokens) whose top-1 suggestion is the target word; reported for every row
(for attacks other than backdoor it is the model's natural rate). `--http` adds rows run
through the real collector under gunicorn over HTTP with device_sim phones (TFLite training,
attackers from device_sim/attacker.py), same data, cohorts and attackers.

Prints one line per run, the goals, the CPU seconds of all processes, and ends with one JSON line
{"benchmark": "poisoning", "rows": [...], "cpu_seconds": ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATTACKS = ("none", "scaling", "sign_flip", "backdoor")
DEFENSES = {"none": "weighted_mean", "norm_bound": "norm_bound", "median": "median",
            "trimmed_mean": "trimmed_mean:beta=0.1", "multi_krum": "multi_krum:f=2",
            "norm_bound_anomaly": "screened:inner=norm_bound"}
SHARES = (0.01, 0.05, 0.1)
TRIGGER, TARGET = "can you pick up", "homework"  # "...pick up the kids" is common in the simulator's text
# the simulator's default population on the tiny model; 4 local epochs at client rate 1.0 so that
# 30 rounds leave the most-frequent-word level (0.071 top-1 at the tiny plan's 1 epoch, 0.5)
RECIPE = ("data.num_users=300", "train.local_epochs=4", "train.client_learning_rate=1.0",
          "train.max_examples_per_client=64")
GOAL_ATTACK, GOAL_DEFENSE, GOAL_TOP1_POINTS = 0.5, 0.05, 1.0


def backdoor_ids(tokenizer, trigger: str, target: str):
    from fedmath.attacks import Backdoor

    words = list(tokenizer.words)
    missing = [w for w in trigger.split() + [target] if w not in words]
    if missing:
        raise ValueError(f"backdoor words {missing} are not in the vocabulary")
    return Backdoor(tuple(words.index(w) for w in trigger.split()), words.index(target))


def make_attack(kind: str, vocab: int, backdoor, boost: float):
    from fedmath.attacks import Attack

    return Attack(kind=kind, boost=boost, vocab_size=vocab, backdoor=backdoor if kind == "backdoor" else None)


def algorithm_for(cfg, rule: str):
    from fedcore.algorithm import build

    train = dataclasses.replace(cfg.train, aggregator=rule)
    return build(train)


def run_sim(env: dict, defense: str, attack_kind: str, share: float, cache=None) -> dict:
    from device_sim.simulation import simulate
    from fedmath.attacks import choose_attackers
    from model.evaluate import backdoor_success, evaluate

    cfg, a = env["cfg"], env["args"]
    attackers = choose_attackers(list(env["clients"]), share if attack_kind != "none" else 0.0, seed=cfg.train.seed)
    attack = make_attack(attack_kind, env["vocab"], env["backdoor"], a.boost)
    cpu = time.process_time()
    res = simulate(algorithm_for(cfg, DEFENSES[defense]), env["client"], env["warm"], env["clients"],
                   rounds=a.rounds, clients_per_round=a.clients_per_round, epochs=cfg.train.local_epochs,
                   batch_size=cfg.train.batch_size, lr=cfg.train.client_learning_rate,
                   max_examples=cfg.train.max_examples_per_client, attack=attack,
                   attackers=attackers, seed=cfg.train.seed, first_round=a.warmup_rounds,
                   cache=cache, tag=(defense, attack))
    top1 = evaluate(env["model"], res.weights, *env["heldout"])["top1"]
    bd = backdoor_success(env["model"], res.weights, env["backdoor"], env["heldout"][0])
    return {"top1": top1, "backdoor_success": bd, "cpu_seconds": time.process_time() - cpu,
            "attackers_in_cohorts": sum(r["attackers"] for r in res.rounds),
            "flagged": sum(r["flagged"] for r in res.rounds),
            "flagged_attackers": sum(r["flagged_attackers"] for r in res.rounds), "n_attackers": len(attackers)}


def run_defense(env: dict, defense: str, attacks: list[str], shares: list[float]) -> dict:
    """Every run of one defence: its clean run, then each attack at each share (smallest share
    first, so the larger ones resume from the rounds they share with it). Returns
    {"clean": result, (attack, share): result}; prints a line per run."""
    from device_sim.run_cache import RunCache

    cache = RunCache()
    out = {"clean": run_sim(env, defense, "none", 0.0, cache)}
    c = out["clean"]
    print(f"  clean {defense:20s} top1 {c['top1']:.4f} backdoor {c['backdoor_success']:.4f} "
          f"flagged {c['flagged']} ({c['cpu_seconds']:.0f} cpu s)", flush=True)
    for attack in attacks:
        if attack == "none":
            continue
        cache.clear_snapshots()  # snapshots are per attack; the first round's client deltas stay
        for share in sorted(shares):
            r = out[(attack, share)] = run_sim(env, defense, attack, share, cache)
            print(f"  {attack:9s} {defense:20s} {share:5.2f}  top1 {r['top1']:.4f} "
                  f"backdoor {r['backdoor_success']:.4f}  attackers {r['n_attackers']} "
                  f"(in cohorts {r['attackers_in_cohorts']}, flagged {r['flagged_attackers']} of "
                  f"{r['flagged']} flags) ({r['cpu_seconds']:.0f} cpu s)", flush=True)
    out["cache_hits"] = dict(cache.hits)
    return out


_WORKER_ENV: dict = {}


def _worker_init(args) -> None:
    """A worker process: its own model, data and client (the warm start is read from the workdir)."""
    _WORKER_ENV.update(setup(args))


def _worker_run(defense: str, attacks: list[str], shares: list[float]) -> dict:
    out = run_defense(_WORKER_ENV, defense, attacks, shares)
    out["worker_cpu_seconds"] = time.process_time()
    return out


def run_grid(env: dict, defenses: list[str], attacks: list[str], shares: list[float], jobs: int,
             http_rows) -> tuple[dict, list[dict]]:
    """Every defence's runs, over `jobs` worker processes (1: in this one); meanwhile this
    process runs `http_rows()` (the HTTP rows). Returns ({defense: run_defense's dict}, http rows)."""
    if jobs <= 1 or len(defenses) <= 1:
        grid = {d: run_defense(env, d, attacks, shares) for d in defenses}
        return grid, http_rows()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: TensorFlow's threads do not survive a fork
    with ProcessPoolExecutor(max_workers=min(jobs, len(defenses)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(env["args"],)) as pool:
        futures = {d: pool.submit(_worker_run, d, attacks, shares) for d in defenses}
        http = http_rows()
        grid = {d: f.result() for d, f in futures.items()}
    return grid, http


def warm_start(cfg, args, clients, client, init):
    """The model every run starts from: `--warmup-rounds` of clean FedAvg from the seeded initial
    weights (cached in the workdir per recipe). Attacks on a model that already predicts beyond
    the most frequent word, as Bagdasaryan et al. attack a pretrained one."""
    import hashlib

    import numpy as np

    from device_sim.simulation import simulate
    from fedmath.attacks import Attack

    if args.warmup_rounds == 0:
        return init
    key = hashlib.sha256(repr((dataclasses.asdict(cfg), args.warmup_rounds, args.clients_per_round)).encode())
    path = os.path.join(args.workdir, f"warm_{key.hexdigest()[:12]}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            warm = [z[f"w{i}"] for i in range(len(z.files))]
    else:
        res = simulate(algorithm_for(cfg, DEFENSES["none"]), client, init, clients,
                       rounds=args.warmup_rounds, clients_per_round=args.clients_per_round,
                       epochs=cfg.train.local_epochs, batch_size=cfg.train.batch_size,
                       lr=cfg.train.client_learning_rate, max_examples=cfg.train.max_examples_per_client,
                       attack=Attack(), attackers=[], seed=cfg.train.seed)
        warm = res.weights
        np.savez(path, **{f"w{i}": w for i, w in enumerate(warm)})
    return warm


def setup(args) -> dict:
    from benchmarks._datasets import prepared, run_config
    from device_sim.simulation import KerasClient
    from model.nwp import build_model

    overrides = list(RECIPE) + list(args.set)
    cfg = run_config(args.preset, overrides)
    data = prepared(cfg, os.path.join(args.workdir, f"data_{cfg.preset}_{cfg.data.num_users}"))
    seq = cfg.data.seq_len
    clients = {u: data.client_examples(u, seq) for u in data.users("train")}
    clients = {u: xy for u, xy in clients.items() if len(xy[0])}
    heldout = data.pooled_examples("heldout", seq, cfg.train.eval_max_examples)
    vocab = data.tokenizer.vocab_size
    model = build_model(cfg.model, vocab, seq, seed=0)
    init = [v.numpy() for v in model.trainable_weights]
    # an unrolled recurrence compiled by XLA: the same SGD steps, about 3x less CPU on the tiny model
    client = KerasClient(build_model(cfg.model, vocab, seq, seed=0, unroll=True), jit_compile=True)
    warm = warm_start(cfg, args, clients, client, init)
    return {"cfg": cfg, "args": args, "warm": warm, "data": data, "clients": clients, "heldout": heldout, "vocab": vocab,
            "model": model, "client": client, "init": init,
            "backdoor": backdoor_ids(data.tokenizer, args.trigger, args.target)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--rounds", type=int, default=10, help="attacked rounds of each run")
    ap.add_argument("--warmup-rounds", type=int, default=30, help="clean FedAvg rounds every run starts from")
    ap.add_argument("--clients-per-round", type=int, default=10)
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--shares", default=",".join(str(s) for s in SHARES))
    ap.add_argument("--boost", type=float, default=10.0)
    ap.add_argument("--trigger", default=TRIGGER)
    ap.add_argument("--target", default=TARGET)
    ap.add_argument("--http", default="backdoor:none:0.1,backdoor:norm_bound_anomaly:0.1", metavar="ATTACK:DEFENSE:SHARE,...",
                    help="rows through the real collector over HTTP, comma-separated; each defence's clean_top1 "
                         "is its own clean run over HTTP")
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--jobs", type=int, default=2,
                    help="worker processes for the simulation rows, one defence at a time each (1: none); "
                         "this process runs the HTTP rows meanwhile")
    ap.add_argument("--small", action="store_true",
                    help="a quick check: 4 clean and 4 attacked rounds, attacks none/backdoor, defences none/norm_bound_anomaly, share 0.1")
    ap.add_argument("--workdir", default=os.path.join("/tmp", "fedkeys-poisoning"))
    args = ap.parse_args(argv)
    if args.small:
        args.rounds, args.warmup_rounds, args.attacks, args.shares = 4, 4, "none,backdoor", "0.1"
        args.defenses = "none,norm_bound_anomaly"
    attacks, defenses = args.attacks.split(","), args.defenses.split(",")
    shares = [float(s) for s in args.shares.split(",")]
    for name in defenses:
        if name not in DEFENSES:
            raise SystemExit(f"unknown defence {name!r}; expected one of {list(DEFENSES)}")
    for name in attacks:
        if name not in ATTACKS:
            raise SystemExit(f"unknown attack {name!r}; expected one of {list(ATTACKS)}")
    os.makedirs(args.workdir, exist_ok=True)
    env = setup(args)  # also trains and caches the warm start the workers read
    cfg = env["cfg"]
    print(f"poisoning: {len(env['clients'])} training users, model {cfg.model}, vocab {env['vocab']}, "
          f"{args.warmup_rounds} clean rounds then {args.rounds} rounds of {args.clients_per_round}, backdoor {args.trigger!r} -> {args.target!r}",
          flush=True)
    from model.evaluate import evaluate

    print(f"  start (after {args.warmup_rounds} clean rounds): top1 "
          f"{evaluate(env['model'], env['warm'], *env['heldout'])['top1']:.4f}", flush=True)

    def http_rows() -> list[dict]:
        if args.no_http or not args.http:
            return []
        from benchmarks._poisoning_http import http_row

        out, http_clean = [], {}
        for spec in args.http.split(","):
            attack, defense, share = spec.split(":")
            if defense not in http_clean:  # the clean run of the same defence over HTTP
                http_clean[defense] = http_row(env, "none", defense, 0.0, None)["top1"]
            row = http_row(env, attack, defense, float(share), http_clean[defense])
            out.append(row)
            print(f"  http: {row}", flush=True)
        return out

    grid, http = run_grid(env, defenses, attacks, shares, args.jobs, http_rows)
    rows = []
    for share in sorted(shares, reverse=True):  # the 10% rows first: the goals are stated there
        for attack in attacks:
            for defense in defenses:
                clean = grid[defense]["clean"]
                r = clean if attack == "none" else grid[defense][(attack, share)]
                rows.append({"attack": attack, "defense": defense, "attackers": share, "top1": round(r["top1"], 4),
                             "clean_top1": round(clean["top1"], 4),
                             "backdoor_success": round(r["backdoor_success"], 4), "path": "simulation"})
    rows.extend(http)
    summarize(rows)
    self_cpu, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = self_cpu + children.ru_utime + children.ru_stime
    hits = {k: sum(g["cache_hits"][k] for g in grid.values()) for k in ("rounds", "deltas")}
    print(f"cpu seconds: {cpu:.0f} (this process {self_cpu:.0f}, workers and servers {cpu - self_cpu:.0f}); "
          f"shared work: {hits['rounds']} rounds resumed, {hits['deltas']} client updates reused", flush=True)
    print(json.dumps({"benchmark": "poisoning", "rows": rows, "cpu_seconds": round(cpu, 1)}))
    return 0


def summarize(rows: list[dict]) -> None:
    """Print the two goals against the measured figures."""
    sim = [r for r in rows if r["path"] == "simulation" and r["attackers"] == 0.1]
    undefended = [r for r in sim if r["attack"] == "backdoor" and r["defense"] == "none"]
    if undefended:
        got = undefended[0]["backdoor_success"]
        print(f"goal: undefended backdoor success >= {GOAL_ATTACK:.0%} at 10% attackers: {got:.1%} "
              f"({'met' if got >= GOAL_ATTACK else 'NOT met'})")
    defended = [r for r in sim if r["attack"] == "backdoor" and r["defense"] != "none"]
    if defended:
        best = min(defended, key=lambda r: (r["backdoor_success"], -r["top1"]))
        ok = best["backdoor_success"] <= GOAL_DEFENSE and best["top1"] >= best["clean_top1"] - GOAL_TOP1_POINTS / 100
        print(f"goal: best defence {best['defense']}: backdoor {best['backdoor_success']:.1%} (<= {GOAL_DEFENSE:.0%}), "
              f"top1 {best['top1']:.4f} vs clean {best['clean_top1']:.4f} (within {GOAL_TOP1_POINTS:g} point): "
              f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
