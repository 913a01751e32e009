"""How large a fleet the virtual-clock day handles: the policies' own cost, training stubbed out.

    python benchmarks/virtual_scale.py [--devices 20000] [--sim-hours 4] [--policies sync,fedbuff] [--small]

`device_sim.virtual_day.simulate` against `fedcore.memory_server` (SyncServer, BufferedServer)
with a trainer that returns a constant one-element delta: what remains is the event loop,
availability, admission, staleness weighting and aggregation, i.e. what the simulation adds on
top of the model's training. Session lengths are those of the `default` preset's phones
(26 local steps, its model's bytes). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import resolve  # noqa: E402
from device_sim.day import DayConfig  # noqa: E402
from device_sim.virtual_day import SessionCost, simulate  # noqa: E402
from fedcore.algorithm import build  # noqa: E402
from fedcore.buffered import BufferedAsync  # noqa: E402
from fedcore.memory_server import BufferedServer, SyncServer  # noqa: E402
from fedcore.messages import ClientUpdate  # noqa: E402
from fedcore.policy import SyncRounds  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=20000)
    p.add_argument("--sim-hours", type=float, default=4.0)
    p.add_argument("--policies", default="sync,fedbuff")
    p.add_argument("--concurrency", type=int, default=0, help="FedBuff (0: devices / 50)")
    p.add_argument("--buffer-size", type=int, default=0, help="FedBuff K (0: concurrency / 4)")
    p.add_argument("--small", action="store_true", help="2,000 phones, 2 simulated hours")
    args = p.parse_args(argv)
    if args.small:
        args.devices, args.sim_hours = 2000, 2.0
    cfg = resolve("default")
    concurrency = args.concurrency or max(1, args.devices // 50)
    k = args.buffer_size or max(1, concurrency // 4)
    phones = {f"phone{i:06d}": 200 for i in range(args.devices)}
    weights = [np.zeros(1, np.float32)]
    algorithm = build(cfg.train)
    train = lambda d, w, t: ClientUpdate([np.full(1, 1e-3, np.float32)], 200)  # noqa: E731
    n_params = 484_967  # the `default` model at its 1,260-user vocabulary (benchmarks/async_vs_sync.py)
    cost = SessionCost(lambda d: cfg.train.local_epochs * math.ceil(200 / cfg.train.batch_size), cfg.train.batch_size,
                       cfg.data.seq_len, 4 * n_params, 4 * n_params)
    day = DayConfig(sim_hours=args.sim_hours, tick_s=300, cooldown_s=3600, seed=0)
    out: dict = {"benchmark": "virtual_scale", "devices": args.devices, "sim_hours": args.sim_hours}
    for name in [x for x in args.policies.split(",") if x]:
        if name == "sync":
            server = SyncServer(algorithm, weights, population=args.devices,
                                policy=SyncRounds(cfg.server.goal_count, cfg.server.over_selection, 300.0))
        else:
            server = BufferedServer(algorithm, weights, population=args.devices,
                                    policy=BufferedAsync(k, concurrency, 20), expires_s=3600.0)
        t0 = time.perf_counter()
        s = simulate(server, phones, train, cost, day, eval_every_s=1e9).summary()
        wall = time.perf_counter() - t0
        out[name] = {"versions": server.version, "checkins": s["checkins"], "updates_accepted": s["updates_accepted"],
                     "updates_wasted": s["updates_wasted"], "dropouts": s["dropouts"], "wall_s": round(wall, 1)}
        print(f"virtual_scale: {name}: {args.devices:,} phones, {args.sim_hours:g} h: {server.version} versions, "
              f"{s['checkins']:,} check-ins, {s['updates_accepted']:,} accepted, {s['updates_wasted']:,} wasted, "
              f"{wall:.1f} s wall", flush=True)
    if "fedbuff" in out:
        out["fedbuff"].update(concurrency=concurrency, buffer_size=k)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
