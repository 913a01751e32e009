"""Synchronous rounds against FedBuff on the same simulated day of phones (virtual clock).

    python benchmarks/async_vs_sync.py [--devices 1000] [--sim-hours 24] [--small]

Both runs use the same phones (profiles, availability, dropouts: fedmath.availability), the
same data, the same `default` model from its seeded initial weights, the same client training
(the phones' step, `tflite_export.trainable.sgd_step`: plain SGD on `masked_loss`, each step's
gradient clipped at train.client_grad_clip), the same clipping and device noise per
published sum (privacy.noise_multiplier, each device adding z*C/sqrt(reports per version)),
the same aggregation rule and server algorithm (train section: FedAvgM for `default`) unless
`--<policy>-server-lr` / `--<policy>-server-momentum` set a policy's own step (the JSON records
each policy's `server_optimizer`), and the same session-cost model
(`device_sim.day.session_seconds`). Only the round policy differs:

- sync: `SyncRounds(goal_count, over_selection, --sync-deadline-s)`, as the collector runs it;
- fedbuff: `BufferedAsync(K = goal_count, --concurrency, --max-staleness, --staleness)`.

The simulation is `device_sim.virtual_day.simulate` (discrete events, no HTTP). The target is
the sync run's final held-out top-1 minus one point; hours_to_target is the first evaluation
(every --eval-min simulated minutes) at or above it. Each evaluation also scores the proxy users
(`val_top1`: no phone trains on them), on which a policy's server step is chosen
(`--sync-server-lr`, `--fedbuff-server-lr`); the held-out top-1 only judges the goal.
`--stub-training` replaces training with zero updates: the same fleet, admissions, waste,
staleness and sync round times (waiting for slots to fill, then for the cohort's reports) in
seconds of wall time, with no top-1. `--stop-when-decided` ends FedBuff's day once the goal
(speedup_to_target >= 2.5) is out of reach; `--cost-probe N` estimates a trained run's CPU from
N phones' updates and the stub counts. A line per evaluation logs a long run's progress. Ends
with one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


GOAL_SPEEDUP = 2.5  # the goal: FedBuff reaches the target in at most sync's hours / 2.5


def goal_missed_at(hour: float, reached: bool, sync_hours: float) -> bool:
    """Whether FedBuff, not at the target by this evaluation, can no longer meet the goal: its
    hours_to_target (the first evaluation at the target) would be at least this hour, so
    sync_hours / hours_to_target < GOAL_SPEEDUP whatever the rest of the day does."""
    return not reached and hour > sync_hours / GOAL_SPEEDUP - 1e-9


def _trainer(cfg, vocab_size: int, clients, noise_std: float, seed: int, pad_last: bool = False):
    """device, start weights, ticket -> clipped, noised ClientUpdate (the phone's work); `pad_last`
    pads the short last batch with PAD rows as the phone does (the same step, more rows)."""
    import numpy as np
    import tensorflow as tf

    from data.sequences import batches
    from fedcore.messages import ClientUpdate
    from fedmath import availability as av
    from fedmath.privacy import add_gaussian_noise, clip_by_global_norm
    from model.nwp import build_model
    from tflite_export.trainable import sgd_step

    # the phones' own step: the unrolled graph (model.nwp.UnrolledRNN), the loss through the
    # written-out output-layer gradient (masked_step_loss) and each step's gradient clipped at
    # train.client_grad_clip, as the plan's `train` signature runs it
    model = build_model(cfg.model, vocab_size, cfg.data.seq_len, unroll=True)
    lr = tf.constant(cfg.train.client_learning_rate, tf.float32)
    clip = tf.constant(cfg.train.client_grad_clip, tf.float32)
    spec = tf.TensorSpec([None, cfg.data.seq_len], tf.int32)

    # no data-dependent control flow to convert (AutoGraph only warns on this closure)
    @tf.function(input_signature=[spec, spec], autograph=False)
    def step(xb, yb):
        return sgd_step(model, xb, yb, lr, clip)

    def train(device: str, weights, ticket) -> ClientUpdate:
        x, y = clients[device]
        for v, w in zip(model.trainable_weights, weights):
            v.assign(w)
        for _ in range(cfg.train.local_epochs):
            # the short last batch as it is: all-PAD rows add nothing to the loss (masked_loss), so
            # the phone's padded step is the same step, and skipping them saves 18% of the rows
            for xb, yb in batches(x, y, cfg.train.batch_size, pad_last=pad_last):
                step(xb, yb)
        delta = [v.numpy() - w for v, w in zip(model.trainable_weights, weights)]
        delta, _ = clip_by_global_norm(delta, cfg.privacy.clip_norm)
        if noise_std > 0:
            rng = np.random.default_rng([seed, av._key(device) & 0xFFFFFFFF, int(ticket.issued_at)])
            delta = add_gaussian_noise(delta, noise_std, rng)
        return ClientUpdate(delta, int(x.shape[0]), device, ticket.version)

    return train


def _stub_trainer(shapes: list[tuple[int, ...]], examples: dict):
    """A zero update of the right shapes: the fleet and the policy without the model's training
    (`--stub-training`: updates, versions and round times, no top-1)."""
    import numpy as np

    from fedcore.messages import ClientUpdate

    zeros = [np.zeros(s, np.float32) for s in shapes]
    return lambda device, weights, ticket: ClientUpdate(zeros, examples[device], device, ticket.version)


def choose_by_validation(val_top1: dict[float, float]) -> float:
    """The server learning rate whose run ended with the best validation top-1 (ties: the first
    in grid order), so the held-out users never choose a setting."""
    return max(val_top1, key=lambda lr: val_top1[lr])


def server_algorithm(name: str, cfg, args, dp_noise: bool):
    """The policy's server algorithm: the preset's (`default`: FedAvgM, Nesterov 0.9, lr 1.0) with
    `--<policy>-server-lr` and `--<policy>-server-momentum` replacing its step and momentum when
    given (momentum 0 is plain server SGD, the step of FedBuff's Algorithm 1)."""
    from fedcore.algorithm import build

    train = cfg.train
    server_lr = args.fedbuff_server_lr if name == "fedbuff" else args.sync_server_lr
    if server_lr > 0:
        train = dataclasses.replace(train, server_learning_rate=server_lr)
    momentum = args.fedbuff_server_momentum if name == "fedbuff" else args.sync_server_momentum
    if momentum >= 0:
        train = dataclasses.replace(train, server_momentum=momentum)
    return build(train, dp_noise=dp_noise)


def recorded_server_optimizer(name: str, cfg, run: dict) -> dict:
    """The server optimizer a saved run used: as it recorded it, or rebuilt from its arguments
    (runs saved before the record existed; their momentum was the preset's)."""
    if run.get("server_optimizer"):
        return run["server_optimizer"]
    a = argparse.Namespace(**dict({"sync_server_momentum": -1.0, "fedbuff_server_momentum": -1.0}, **run["args"]))
    return server_algorithm(name, cfg, a, dp_noise=cfg.privacy.noise_multiplier > 0).describe()["server_optimizer"]


def run_policy(name: str, cfg, args, initial, clients, examples, evaluate_fn, vocab_size: int,
               stop=None) -> dict:
    from device_sim.day import DayConfig
    from device_sim.virtual_day import SessionCost, simulate
    from fedcore.buffered import BufferedAsync, StalenessWeight
    from fedcore.memory_server import BufferedServer, SyncServer
    from fedcore.policy import SyncRounds
    from fedmath.privacy import device_noise_std

    goal = cfg.server.goal_count
    z = cfg.privacy.noise_multiplier
    noise_std = device_noise_std(z, cfg.privacy.clip_norm, goal) if z > 0 else 0.0
    algorithm = server_algorithm(name, cfg, args, dp_noise=noise_std > 0)
    common = dict(algorithm=algorithm, weights=[w.copy() for w in initial], population=len(clients),
                  noise_multiplier=z)
    if name == "sync":
        server = SyncServer(**common, policy=SyncRounds(goal, cfg.server.over_selection, args.sync_deadline_s))
    else:
        policy = BufferedAsync(goal, args.concurrency, args.max_staleness, StalenessWeight.parse(args.staleness))
        server = BufferedServer(**common, policy=policy, expires_s=args.ticket_expiry_s,
                                normalize=args.fedbuff_normalize)
    n_params = sum(int(w.size) for w in initial)
    bs = cfg.train.batch_size
    cost = SessionCost(steps=lambda d: cfg.train.local_epochs * math.ceil(examples[d] / bs), batch_size=bs,
                       seq_len=cfg.data.seq_len, download_bytes=4 * n_params, upload_bytes=4 * n_params)
    day = DayConfig(sim_hours=args.sim_hours, start_hour=args.start_hour, tick_s=60 * args.tick_min,
                    cooldown_s=60 * args.cooldown_min, tokens_per_s=args.tokens_per_s, seed=args.seed)
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(entry: dict) -> bool:  # one line per evaluation: a long run's log
        print(f"  {name} {entry} wall {time.perf_counter() - t0:.0f} s cpu {time.process_time() - c0:.0f} s",
              flush=True)
        return bool(stop and stop(entry))

    trainer = (_stub_trainer([w.shape for w in initial], examples) if args.stub_training
               else _trainer(cfg, vocab_size, clients, noise_std, args.seed))
    rep = simulate(server, examples, trainer, cost, day, retry_s=args.retry_s, eval_every_s=60 * args.eval_min,
                   on_eval=None if args.stub_training else evaluate_fn, on_progress=progress)
    s = rep.summary()
    s.update(policy=(dict(server.policy.describe(), normalize=server.normalize) if name == "fedbuff"
                     else dataclasses.asdict(server.policy)),
             server_learning_rate=algorithm.learning_rate, server_optimizer=algorithm.describe()["server_optimizer"],
             versions=server.version, evals=rep.evals,
             final_top1=rep.evals[-1].get("top1"), final_val_top1=rep.evals[-1].get("val_top1"),
             round_times=server.round_time_summary() if name == "sync" else None,
             epsilon=server.published[-1].epsilon if server.published else None,
             rounds_abandoned=getattr(server, "abandoned", 0), wall_s=round(time.perf_counter() - t0, 1),
             cpu_s=round(time.process_time() - c0, 1))
    if s["stopped_at_hour"] is not None:  # ended early: no final top-1 of the day
        s.update(final_top1=None, final_val_top1=None)
        print(f"async_vs_sync: {name}: stopped at {s['stopped_at_hour']:g} h, the goal missed", flush=True)
    top1 = "-" if s["final_top1"] is None else f"{s['final_top1']:.4f}"
    print(f"async_vs_sync: {name}: {server.version} versions, {s['admitted']} admitted, {s['not_admitted']} "
          f"turned away, {s['updates_trained']} trained, {s['updates_accepted']} accepted, {s['updates_wasted']} "
          f"wasted, {s['dropouts']} dropouts, final top-1 {top1}, {s['wall_s']:.0f} s", flush=True)
    if s["round_times"]:
        print(f"  sync round times (simulated s): {s['round_times']}", flush=True)
    return s


def cost_probe(args, cfg, users, initial, clients, vocab: int, evaluate_fn) -> dict:
    """CPU seconds of one trained update and one evaluation, measured, times the counts of the
    `--stub-training` runs of the same day (the simulation trains exactly the updates that
    count, so a stub run's counts are the trained run's): the trained run's cost, estimated."""
    train = _trainer(cfg, vocab, clients, 0.0, args.seed)
    ticket = type("Ticket", (), {"version": 0, "issued_at": 0.0})
    train(users[0], initial, ticket)  # traces the step
    evaluate_fn(initial)
    # phones spread over the fleet (sizes vary 1 to 256 examples): CPU per local step, times the
    # fleet's mean steps per update
    stride = max(1, (len(users) - 1) // args.cost_probe)
    probe = users[1::stride][: args.cost_probe]
    bs, epochs = cfg.train.batch_size, cfg.train.local_epochs
    steps = {u: epochs * math.ceil(clients[u][0].shape[0] / bs) for u in users}
    c0 = time.process_time()
    for u in probe:
        train(u, initial, ticket)
    per_step = (time.process_time() - c0) / sum(steps[u] for u in probe)
    fleet_steps = sum(steps.values()) / len(steps)
    per_update = per_step * fleet_steps
    c0 = time.process_time()
    evaluate_fn(initial)
    per_eval = time.process_time() - c0
    evals = math.floor(60 * args.sim_hours / args.eval_min + 1e-9) + 1
    out = {"benchmark": "async_vs_sync", "cost_probe": len(probe), "cpu_s_per_step": round(per_step, 4),
           "mean_steps": round(fleet_steps, 2), "cpu_s_per_update": round(per_update, 3),
           "cpu_s_per_eval": round(per_eval, 2), "devices": len(users), "sim_hours": args.sim_hours}
    for name in ("sync", "fedbuff"):
        path = os.path.join(args.workdir, f"run_{name}_stub.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            stub = json.load(f)
        a = stub["args"]
        if (a["devices"], a["sim_hours"]) != (args.devices, args.sim_hours):
            print(f"async_vs_sync: {path} is another day ({a['devices']} phones, {a['sim_hours']} h): not used")
            continue
        trained = stub["updates_accepted"] + stub["discarded_with_abandoned_rounds"]  # what the run trains
        out[name] = {"updates_to_train": trained, "cpu_s": round(trained * per_update + evals * per_eval)}
    print(f"async_vs_sync: cost probe: {per_step:.4f} CPU s per local step ({len(probe)} phones), "
          f"{fleet_steps:.2f} steps per update in the fleet: {per_update:.3f} CPU s per update, "
          f"{per_eval:.2f} CPU s per evaluation; estimates {out}", flush=True)
    print(json.dumps(out))
    return out


def default_concurrency(cfg) -> int:
    """FedBuff's phones training at once when --concurrency is 0: twice the buffer K, so about two
    buffers are in flight and most updates are 1 or 2 versions stale, where the sync run's own
    server step (FedAvgM, Nesterov 0.9) stays stable. Chosen on the 4,000-phone day's proxy-user
    val_top1 over 11, 16, 24 and 110 (docs/decisions.md); 110 (10 x the round's slots) kept about
    14 buffers in flight, and momentum on buffers 10 versions stale diverged."""
    return 2 * cfg.server.goal_count


def parser() -> argparse.ArgumentParser:
    """The benchmark's options; their defaults are the simulated day both policies run
    (benchmarks/fedbuff_quadratic.py replays the same day from them)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--sim-hours", type=float, default=24.0)
    p.add_argument("--start-hour", type=float, default=0.0)
    p.add_argument("--tick-min", type=float, default=5.0)
    p.add_argument("--cooldown-min", type=float, default=60.0)
    p.add_argument("--tokens-per-s", type=float, default=100.0, help="training throughput of a median phone")
    p.add_argument("--retry-s", type=float, default=60.0, help="simulated wait of a phone turned away")
    p.add_argument("--sync-deadline-s", type=float, default=300.0, help="sync reporting window (simulated s)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="FedBuff: phones training at once (0: twice the buffer K: two buffers in flight)")
    p.add_argument("--max-staleness", type=int, default=100, help="FedBuff: refuse older updates (NVFlare's 100)")
    p.add_argument("--staleness", default="polynomial:a=0.5")
    p.add_argument("--fedbuff-normalize", default="scaled", choices=("scaled", "unscaled"),
                   help="divide the buffer's s(tau)-weighted sum by the scaled weights (the collector's) or by "
                        "the unscaled ones (FedBuff's Algorithm 1: stale buffers take shrunken steps)")
    p.add_argument("--ticket-expiry-s", type=float, default=3600.0)
    p.add_argument("--eval-min", type=float, default=30.0, help="simulated minutes between evaluations")
    p.add_argument("--eval-examples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/bench/async_vs_sync")
    p.add_argument("--data", default=None, help="a prepared data directory (default: prepare one)")
    p.add_argument("--fedbuff-server-lr", type=float, default=0.0,
                   help="FedBuff's server learning rate (0: train.server_learning_rate)")
    p.add_argument("--sync-server-lr", type=float, default=0.0,
                   help="sync's server learning rate (0: train.server_learning_rate)")
    p.add_argument("--fedbuff-server-momentum", type=float, default=-1.0,
                   help="FedBuff's server momentum (-1: train.server_momentum; 0: plain server SGD)")
    p.add_argument("--sync-server-momentum", type=float, default=-1.0,
                   help="sync's server momentum (-1: train.server_momentum)")
    p.add_argument("--server-lr-grid", default="",
                   help="comma-separated server learning rates run for each policy; each keeps the one with "
                        "the best final val_top1 (the same grid and choice rule for both)")
    p.add_argument("--val-examples", type=int, default=1000,
                   help="validation windows from the proxy users (no phone trains on them): val_top1, "
                        "what a server step is chosen on; the held-out top-1 decides the goal")
    p.add_argument("--stub-training", action="store_true",
                   help="zero updates, no evaluation: the fleet and policies' counts and round times only")
    p.add_argument("--policies", default="sync,fedbuff",
                   help="runs to simulate now; the other is read from WORKDIR/run_<name>.json of an earlier call")
    p.add_argument("--small", action="store_true", help="200 phones, 3 simulated hours (a quick check)")
    p.add_argument("--stop-when-decided", action="store_true",
                   help="end FedBuff's day at the first evaluation from sync's hours_to_target / 2.5 on that "
                        "has not reached the target (the goal is missed whatever follows); sync runs first, "
                        "in this call or read from WORKDIR/run_sync.json")
    p.add_argument("--cost-probe", type=int, default=0, metavar="N",
                   help="time N phones' updates and one evaluation, then estimate the trained run's CPU "
                        "from the --stub-training counts of the same day in WORKDIR; no simulation")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    grid = [float(x) for x in args.server_lr_grid.split(",") if x] if args.server_lr_grid else []
    if grid and args.stub_training:
        raise SystemExit("async_vs_sync: --server-lr-grid needs trained runs (its choice is on validation top-1)")
    if args.small:
        args.devices, args.sim_hours, args.eval_min = min(args.devices, 200), min(args.sim_hours, 3.0), 30.0
        args.workdir = args.workdir.rstrip("/") + "_small"

    import numpy as np
    import tensorflow as tf

    from configs import resolve
    from data.dataset import FederatedData
    from device_sim.virtual_day import hours_to_target
    from fleet_day import _prepare
    from model.evaluate import evaluate
    from model.nwp import build_model

    cfg = resolve(args.preset)
    if args.concurrency <= 0:
        args.concurrency = default_concurrency(cfg)
    os.makedirs(args.workdir, exist_ok=True)
    data_dir, _ = _prepare(cfg, args.workdir, args.devices, args.data, bundle_dir="-")
    data = FederatedData(data_dir)
    users = sorted(data.users("train"))[: args.devices]
    if len(users) < args.devices:
        raise SystemExit(f"async_vs_sync: {len(users)} training users, fewer than --devices {args.devices}")
    seq_len = cfg.data.seq_len
    clients = {u: data.client_examples(u, seq_len, cfg.train.max_examples_per_client) for u in users}
    examples = {u: int(xy[0].shape[0]) for u, xy in clients.items()}
    vocab = int(data.tokenizer.vocab_size)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    eval_model = build_model(cfg.model, vocab, seq_len)
    initial = [np.asarray(w.numpy(), np.float32) for w in eval_model.trainable_weights]
    ex, ey = data.pooled_examples("heldout", seq_len, args.eval_examples)
    vx, vy = data.pooled_examples("proxy", seq_len, args.val_examples)

    def evaluate_fn(weights) -> dict:
        r, v = evaluate(eval_model, weights, ex, ey), evaluate(eval_model, weights, vx, vy)
        return {"top1": round(float(r["top1"]), 4), "val_top1": round(float(v["top1"]), 4)}

    print(f"async_vs_sync: {len(users)} phones, {args.sim_hours:g} simulated hours, {cfg.preset} model "
          f"from initial weights ({sum(w.size for w in initial):,} params), concurrency {args.concurrency}",
          flush=True)
    if args.cost_probe:
        return cost_probe(args, cfg, users, initial, clients, vocab, evaluate_fn)
    wanted = [x for x in args.policies.split(",") if x]
    if not set(wanted) <= {"sync", "fedbuff"}:
        raise SystemExit(f"async_vs_sync: --policies takes sync and/or fedbuff, got {args.policies!r}")
    runs = {}
    for name in sorted(("sync", "fedbuff"), key=lambda x: x not in wanted):  # those to run first
        path = os.path.join(args.workdir, f"run_{name}{'_stub' if args.stub_training else ''}.json")
        if name in wanted and grid:
            tried = {}
            for lr in grid:  # the same grid for both policies, chosen on the proxy users only
                setattr(args, f"{name}_server_lr", lr)
                tried[lr] = run_policy(name, cfg, args, initial, clients, examples, evaluate_fn, vocab)
            best = choose_by_validation({lr: r["final_val_top1"] for lr, r in tried.items()})
            setattr(args, f"{name}_server_lr", best)
            runs[name] = dict(tried[best], lr_grid={str(lr): {"final_val_top1": r["final_val_top1"],
                                                           "final_top1": r["final_top1"]} for lr, r in tried.items()})
            print(f"async_vs_sync: {name}: server lr {best:g} chosen on validation top-1 from {runs[name]['lr_grid']}")
            with open(path, "w") as f:
                json.dump(dict(runs[name], args=vars(args)), f, indent=2, default=float)
        elif name in wanted:
            stop = None
            if name == "fedbuff" and args.stop_when_decided and not args.stub_training:
                if "sync" not in runs:
                    with open(os.path.join(args.workdir, "run_sync.json")) as f:
                        runs["sync"] = json.load(f)
                sync_target = runs["sync"]["final_top1"] - 0.01
                sync_hours = hours_to_target(runs["sync"]["evals"], "top1", sync_target)
                seen = {"reached": False}

                def stop(entry: dict) -> bool:
                    seen["reached"] = seen["reached"] or entry["top1"] >= sync_target
                    return goal_missed_at(entry["hour"], seen["reached"], sync_hours)
            runs[name] = run_policy(name, cfg, args, initial, clients, examples, evaluate_fn, vocab, stop)
            with open(path, "w") as f:
                json.dump(dict(runs[name], args=vars(args)), f, indent=2, default=float)
        elif name not in runs and not os.path.exists(path):
            print(f"async_vs_sync: {name} has not run in {args.workdir} yet (run it with --policies {name} and the "
                  f"same --workdir); the comparison is pending", flush=True)
        elif name not in runs:
            with open(path) as f:
                runs[name] = json.load(f)
            print(f"async_vs_sync: {name} read from {path} (its arguments: {runs[name]['args']})")
    missing = [name for name in ("sync", "fedbuff") if name not in runs]
    if missing:  # one policy's half of the day: its own figures, no comparison yet
        out = {"benchmark": "async_vs_sync", "devices": len(users), "sim_hours": args.sim_hours,
               "stub_training": bool(args.stub_training), "pending": missing, "speedup_to_target": None,
               "goal_met": None}
        for name, s in runs.items():
            out[name] = {k: s.get(k) for k in ("final_top1", "updates_trained", "updates_accepted", "updates_wasted",
                                               "dropouts", "bytes_up", "versions", "wall_s")}
        print(json.dumps(out))
        return out
    runs = {name: runs[name] for name in ("sync", "fedbuff")}
    if args.stub_training:
        out = {"benchmark": "async_vs_sync", "stub_training": True, "devices": len(users),
               "sim_hours": args.sim_hours, "concurrency": args.concurrency}
        for name, s in runs.items():
            out[name] = {k: s[k] for k in ("versions", "admitted", "not_admitted", "updates_trained",
                                           "updates_accepted", "updates_wasted", "dropouts", "staleness", "wall_s")}
        out["sync"]["round_times"] = runs["sync"]["round_times"]
        print(json.dumps(out))
        return out
    target = runs["sync"]["final_top1"] - 0.01
    out: dict = {"benchmark": "async_vs_sync", "devices": len(users), "sim_hours": args.sim_hours,
                 "preset": cfg.preset, "start": "initial weights", "target_top1": round(target, 4)}
    for name, s in runs.items():
        h = hours_to_target(s["evals"], "top1", target)
        out[name] = {"hours_to_target": h, "final_top1": s["final_top1"], "updates_trained": s["updates_trained"],
                     "updates_accepted": s["updates_accepted"], "updates_wasted": s["updates_wasted"],
                     "dropouts": s["dropouts"], "bytes_up": s["bytes_up"], "bytes_down": s["bytes_down"],
                     "versions": s["versions"], "epsilon": s["epsilon"], "wall_s": s["wall_s"],
                     "server_optimizer": recorded_server_optimizer(name, cfg, s)}
        print(f"  {name}: top-1 by hour " + ", ".join(f"{e['hour']:g}h {e['top1']:.4f}" for e in s["evals"]))
        if name == "fedbuff":
            out[name]["normalize"] = (s.get("policy") or {}).get("normalize", "scaled")
            print(f"  fedbuff staleness of accepted updates: {s['staleness']}")
    hs, hf = out["sync"]["hours_to_target"], out["fedbuff"]["hours_to_target"]
    out["speedup_to_target"] = round(hs / hf, 3) if hs and hf else None
    ff = out["fedbuff"]["final_top1"]
    out["top1_gap"] = None if ff is None else round(ff - out["sync"]["final_top1"], 4)
    out["fedbuff"]["stopped_at_hour"] = runs["fedbuff"].get("stopped_at_hour")
    out["goal_met"] = bool(out["speedup_to_target"] and out["speedup_to_target"] >= GOAL_SPEEDUP
                           and out["top1_gap"] is not None and out["top1_gap"] >= -0.01)
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump({"result": out, "runs": runs}, f, indent=2, default=float)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
