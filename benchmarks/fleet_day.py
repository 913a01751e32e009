"""A simulated day of a 1,000-phone fleet against a real collector process on 127.0.0.1.

    python benchmarks/fleet_day.py [--devices 1000] [--sim-hours 24] [--preset default] [--policy fedbuff]

1. data: the preset's simulated keyboard data with enough users for one phone per training
   user (prepared once into --workdir, reused afterwards);
2. bundle: the phone bundle of the preset's model at its seeded initial weights (or --bundle);
3. server: gunicorn serving the collector for that bundle (its own process, 127.0.0.1);
4. the day: device_sim.day.simulate_day: diurnal availability (fedmath.availability), device
   profiles (speed, bandwidth, latency, RAM), mid-training dropouts, deadline stragglers,
   Retry-After pacing on the simulated clock, TFLite training, clipped (and optionally noised)
   float32 or compressed uploads;
5. every --eval-every-th published version (and the last) is scored on held-out users.

Prints the summary (rounds completed, reports accepted and rejected, dropouts, stragglers,
bytes up and down, epsilon, accuracy of the published versions, eligibility by hour) and ends
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


def _prepare(cfg, workdir: str, devices: int, data_dir: str | None, bundle_dir: str | None):
    from data.prepare import prepare
    from tflite_export.bundle import export_bundle

    if data_dir is None:
        data_dir = os.path.join(workdir, "data")
        train_share = 1.0 - cfg.data.heldout_fraction - cfg.data.proxy_fraction
        users = max(cfg.data.num_users, math.ceil(devices / train_share) + 10)
        data_cfg = dataclasses.replace(cfg.data, num_users=users)
        stamp = os.path.join(data_dir, "bench_config.json")
        same = False
        if os.path.exists(stamp):
            with open(stamp) as f:
                same = json.load(f) == dataclasses.asdict(data_cfg)
        if not same:
            print(f"fleet_day: preparing data for {users} users -> {data_dir}", flush=True)
            prepare(data_cfg, data_dir, progress=False)
            with open(stamp, "w") as f:
                json.dump(dataclasses.asdict(data_cfg), f)
    if bundle_dir is None:
        bundle_dir = os.path.join(workdir, "bundle")
        if not os.path.exists(os.path.join(bundle_dir, "manifest.json")):
            print(f"fleet_day: exporting the {cfg.preset} bundle -> {bundle_dir}", flush=True)
            export_bundle(cfg, None, os.path.join(data_dir, "spm.model"), bundle_dir, inference=False)
    return data_dir, bundle_dir


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--sim-hours", type=float, default=24.0)
    p.add_argument("--start-hour", type=float, default=0.0, help="simulated UTC hour at the start")
    p.add_argument("--speedup", type=float, default=144.0, help="simulated seconds per real second (144: a day in 10 min)")
    p.add_argument("--tick-min", type=float, default=5.0, help="simulated minutes between eligibility updates")
    p.add_argument("--cooldown-min", type=float, default=60.0, help="simulated minutes a phone rests after a session")
    p.add_argument("--deadline-min", type=float, default=2.0, help="simulated session deadline (stragglers give up)")
    p.add_argument("--tokens-per-s", type=float, default=100.0, help="training throughput of a median phone")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    p.add_argument("--encoding", default=None, help="force an update encoding (default: the plan's float32)")
    p.add_argument("--noise-multiplier", type=float, default=None, help="privacy.noise_multiplier (default: preset)")
    p.add_argument("--report-deadline-s", type=float, default=20.0, help="collector reporting window (real seconds)")
    p.add_argument("--policy", default="sync", choices=("sync", "fedbuff"), help="collector.policy")
    p.add_argument("--concurrency-target", type=int, default=0, help="fedbuff: collector.concurrency (0: the round's slots)")
    p.add_argument("--eval-every", type=int, default=10, help="score every N-th published version (0 = none)")
    p.add_argument("--eval-examples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs/bench/fleet_day")
    p.add_argument("--data", default=None, help="a prepared data directory (default: prepare one)")
    p.add_argument("--bundle", default=None, help="a bundle directory (default: export initial weights)")
    args = p.parse_args(argv)

    from configs import resolve
    cfg = resolve(args.preset)
    if args.noise_multiplier is not None:
        cfg = dataclasses.replace(cfg, privacy=dataclasses.replace(cfg.privacy, noise_multiplier=args.noise_multiplier))
    os.makedirs(args.workdir, exist_ok=True)
    t_setup = time.perf_counter()
    data_dir, bundle_dir = _prepare(cfg, args.workdir, args.devices, args.data, args.bundle)

    from data.dataset import FederatedData
    from device_sim.attestation import issuer_for_run, transports
    from device_sim.day import DayConfig, simulate_day
    from device_sim.fleet import fetch_published_weights
    from model.evaluate import evaluate
    from model.nwp import build_model
    from model.weights_io import load_weights
    from server.process import ServerProcess, write_server_config

    data = FederatedData(data_dir)
    users = sorted(data.users("train"))
    if len(users) < args.devices:
        raise SystemExit(f"fleet_day: the data has {len(users)} training users, fewer than --devices {args.devices}")
    users = users[: args.devices]
    seq_len = cfg.data.seq_len
    clients = {u: data.client_examples(u, seq_len, cfg.train.max_examples_per_client) for u in users}
    _, initial = load_weights(os.path.join(bundle_dir, "weights.npz"))
    shapes = [w.shape for w in initial]
    eval_x, eval_y = data.pooled_examples("heldout", seq_len, args.eval_examples)
    keras_model = build_model(cfg.model, int(data.tokenizer.vocab_size), seq_len)

    state_dir = os.path.join(args.workdir, f"server_state_{int(time.time())}")
    cfg = dataclasses.replace(cfg, collector=dataclasses.replace(
        cfg.collector, report_deadline_s=args.report_deadline_s, population=args.devices, policy=args.policy,
        concurrency=args.concurrency_target))
    cfg, issuer = issuer_for_run(cfg)
    phone_transport = transports(issuer)
    config_path = write_server_config(os.path.join(args.workdir, "server.json"), cfg, bundle_dir, state_dir)
    setup_s = time.perf_counter() - t_setup

    day = DayConfig(sim_hours=args.sim_hours, start_hour=args.start_hour, speedup=args.speedup,
                    tick_s=60 * args.tick_min, cooldown_s=60 * args.cooldown_min,
                    deadline_s=60 * args.deadline_min, tokens_per_s=args.tokens_per_s, seed=args.seed)
    base = evaluate(keras_model, initial, eval_x, eval_y)
    evals = {0: base}

    with ServerProcess(config_path, workers=args.workers, threads=args.threads,
                       log_path=os.path.join(args.workdir, "server.log")) as srv:
        def on_version(version: int, hour: float) -> dict | None:
            if args.eval_every and version % args.eval_every == 0:
                ev = evaluate(keras_model, fetch_published_weights(srv.url, version, shapes,
                                                                   transport_factory=phone_transport), eval_x, eval_y)
                evals[version] = ev
                return {"top1": round(ev["top1"], 4), "top3": round(ev["top3"], 4)}
            return None

        rep = simulate_day(srv.url, clients, day, concurrency=args.concurrency, encoding=args.encoding,
                           seq_len=seq_len, on_version=on_version, transport_factory=phone_transport)
        s = rep.summary()
        last = s["versions"][-1]["version"] if s["versions"] else 0
        if last not in evals:
            evals[last] = evaluate(keras_model, fetch_published_weights(srv.url, last, shapes,
                                                                        transport_factory=phone_transport),
                                   eval_x, eval_y)

    elig = [row["eligible"] / args.devices for row in rep.hourly if row["eligible"] is not None]
    print(f"\nfleet_day: {args.devices} phones, {args.sim_hours:g} simulated hours from {args.start_hour:g}:00 UTC, "
          f"{cfg.preset} model ({sum(int(w.size) for w in initial):,} params), wall {rep.wall_s:.0f} s")
    print(f"  devices below {day.availability.min_ram_gb:g} GB RAM (never eligible): {s['devices_below_min_ram']}")
    print(f"  rounds completed {s['rounds_completed']}, abandoned {s['rounds_abandoned']}")
    print(f"  check-ins {s['checkins']}, selected {s['selected']}, accepted {s['accepted']}, rejected {s['rejected']} "
          f"{s['rejections']}, dropouts {s['dropouts']}, stragglers {s['stragglers']}, failed {s['failed']}")
    print(f"  bytes up {s['bytes_up']:,}, bytes down {s['bytes_down']:,}, mean upload payload "
          f"{(s['payload_bytes_mean'] or 0):,.0f} B")
    eps = s["epsilon"]
    print(f"  privacy: mode {s['privacy_mode']}, noise multiplier {s['noise_multiplier']}, "
          f"epsilon {'n/a (no noise)' if eps is None else f'{eps:.3f}'}")
    print("  accuracy on held-out users (version: top-1 / top-3):")
    for v in sorted(evals):
        print(f"    v{v}: {evals[v]['top1']:.4f} / {evals[v]['top3']:.4f}")
    print("  sim hour (UTC)  eligible  check-ins  accepted  dropouts  stragglers  rejected  versions")
    for row in rep.hourly:
        e = "" if row["eligible"] is None else f"{row['eligible'] / args.devices:8.1%}"
        print(f"  {int(row['sim_hour']) % 24:14d}  {e:>8}  {row['checkins']:9d}  {row['accepted']:8d}  "
              f"{row['dropped']:8d}  {row['late']:10d}  {row['rejected']:8d}  {row['versions']:8d}")
    if s["failures"]:
        print(f"  failures: {s['failures']}")

    result = {
        "benchmark": "fleet_day", "policy": args.policy, "devices": args.devices, "sim_hours": args.sim_hours, "preset": cfg.preset,
        "encoding": args.encoding or "float32", "concurrency": args.concurrency, "speedup": args.speedup,
        "rounds_completed": s["rounds_completed"], "rounds_abandoned": s["rounds_abandoned"],
        "checkins": s["checkins"], "accepted": s["accepted"], "rejected": s["rejected"],
        "dropouts": s["dropouts"], "stragglers": s["stragglers"], "failed": s["failed"],
        "bytes_up": s["bytes_up"], "bytes_down": s["bytes_down"], "epsilon": eps,
        "top1_initial": round(base["top1"], 4), "top1_last": round(evals[last]["top1"], 4),
        "top3_last": round(evals[last]["top3"], 4), "last_version": last,
        "eligible_min": round(min(elig), 4) if elig else None, "eligible_max": round(max(elig), 4) if elig else None,
        "wall_s": round(rep.wall_s, 1), "setup_s": round(setup_s, 1),
    }
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump({"result": result, "summary": s, "hourly": rep.hourly,
                   "evals": {str(k): v for k, v in evals.items()}}, f, indent=2, default=float)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
