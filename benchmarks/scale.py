"""Beyond one process: concurrent clients, rounds of 1,000 phones, TFF on remote workers, populations
of a million, and (from benchmarks/_scale_collectors.py) the collector on PostgreSQL across hosts.

(a) One TFF round of `--clients` (1,000) clients of the `default` model, each a phone of a lazily
    generated population of 1,000,000 users (`federated.population`, 30 messages a phone, at most
    16 training windows), chosen by availability at 02:00 UTC: wall and CPU seconds and clients per
    second, on the local worker (clients concurrent, `runtime` defaults) and on 2 `worker_binary`
    processes on loopback (each with half the CPUs), the remote round from the same state and
    cohort, whose weights are compared with the local round's. Beside it, `concurrent_over_sequential`:
    the `default` preset's own round (10 clients of its prepared data) with clients concurrent over
    the same round with one client at a time, median of `--repeats` interleaved rounds
    (`benchmarks/sim_overhead.py`'s measurement). Goal: <= 0.8 on 2 cores.
(b) Peak RSS of a child process that builds a population of 10^4, 10^5 and 10^6 users, selects one
    round's cohort of `--clients` by availability and generates those clients' examples. Goal:
    flat within 20% (max / min <= 1.2).
(c) `benchmarks/_scale_collectors.py`'s `run(small)` when that file is present: updates per
    second into two collector hosts on PostgreSQL and one on SQLite, fuzz and kill checks.

    .venv/bin/python benchmarks/scale.py [--small] [--clients 1000] [--repeats 3]
        [--populations 10000,100000,1000000] [--skip concurrency,round,populations,collectors]
        [--out runs/bench/scale]

`--small`: 100 clients, 1 repeat. Wall times depend on the machine's load (printed with them);
CPU seconds much less. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks._procs import tree_cpu_s  # noqa: E402

NIGHT_S = 2 * 3600.0  # 02:00 UTC: about half the phones are idle on the charger (fedmath/availability.py)
POPULATION = 1_000_000
MESSAGES_PER_PHONE = 30
EXAMPLES_PER_PHONE = 16
# the JSON keys issue 22's acceptance names: present in every run (null for a part skipped)
ISSUE_KEYS = ("concurrent_over_sequential", "round_1000_clients_s", "round_1000_clients_remote_s",
              "population_peak_rss_mb", "postgres_two_hosts_updates_per_s", "sqlite_one_host_updates_per_s",
              "fuzz_5xx", "kill_lost", "kill_double_counted")
COLLECTOR_KEYS = ("postgres_two_hosts_updates_per_s", "sqlite_one_host_updates_per_s", "fuzz_5xx", "kill_lost",
                  "kill_double_counted")


def _tokenizer(root: str):
    from configs.presets import preset
    from data.dataset import FederatedData
    from data.prepare import prepare

    path = os.path.join(root, "data_default")
    if not os.path.exists(os.path.join(path, "summary.json")):
        prepare(preset("default").data, path, progress=False)
    return FederatedData(path).tokenizer


def big_round(clients: int, root: str) -> dict:
    """(a): one round of `clients` phones, locally and on two loopback workers."""
    import numpy as np
    import psutil
    import tensorflow as tf

    from configs.presets import preset
    from configs.schema import RuntimeConfig
    from data.tfdata import client_dataset
    from federated.algorithms import build_process
    from federated.population import LazyPopulation, cohort_examples, select_from_population
    from federated.privacy import check_dp
    from federated.tff_model import initial_weights, model_weights
    from federated.workers import ThreadPlan, WorkerProcess, available_cpus, thread_plan, use_runtime

    cfg = preset("default")
    t, seq = cfg.train, cfg.data.seq_len
    tok = _tokenizer(root)
    pop = LazyPopulation(POPULATION, seed=cfg.data.seed, messages_per_user=MESSAGES_PER_PHONE)
    tic = time.perf_counter()
    draw = select_from_population(pop, clients, 0, start_time_s=NIGHT_S)
    xy = cohort_examples(pop, draw.reporting, tok, seq, EXAMPLES_PER_PHONE)
    prepare_s = time.perf_counter() - tic
    examples = int(sum(x.shape[0] for x, _ in xy))
    print(f"(a) cohort: {len(xy)} phones of {POPULATION:,} ({draw.examined} checked, {draw.eligible_seen} eligible, "
          f"{len(draw.dropped)} dropped), {examples} examples, generated in {prepare_s:.1f} s", flush=True)

    def datasets(part):
        return [client_dataset(x, y, t.batch_size).repeat(t.local_epochs) for x, y in part]

    me = psutil.Process()
    use_runtime(RuntimeConfig())
    process = build_process(cfg, tok.vocab_size, check_dp(cfg.privacy, t, POPULATION))
    state0 = process.set_model_weights(process.initialize(),
                                       model_weights(initial_weights(cfg.model, tok.vocab_size, seq, t.seed)))
    tf.random.set_seed(t.seed)

    def timed_round(label: str) -> tuple[dict, list]:
        process.next(state0, datasets(xy[:4]))  # warm-up: tracing and this context's compilation
        c, w = tree_cpu_s(me), time.perf_counter()
        out = process.next(state0, datasets(xy))
        wall, cpu = time.perf_counter() - w, tree_cpu_s(me) - c
        n = int(out.metrics["client_work"]["train"]["num_examples"])
        print(f"    {label}: {wall:.2f} s wall, {cpu:.2f} CPU s, {len(xy) / wall:.1f} clients/s "
              f"({n} examples trained, load {os.getloadavg()[0]:.1f})", flush=True)
        weights = [np.asarray(v) for v in process.get_model_weights(out.state).trainable]
        return {"s": round(wall, 3), "cpu_s": round(cpu, 3), "clients_per_s": round(len(xy) / wall, 2)}, weights

    local, w_local = timed_round(f"local worker {thread_plan(RuntimeConfig())}")
    cpus = available_cpus()
    half = ThreadPlan(max(1, cpus // 2), 1)
    workers = [WorkerProcess(half) for _ in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        use_runtime(RuntimeConfig(workers=",".join(w.address for w in workers)))
        remote, w_remote = timed_round(f"2 loopback workers {half} each")
    finally:
        for w in workers:
            w.stop()
        use_runtime(RuntimeConfig())
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w_local, w_remote))
    print(f"    max |local - remote| weight after the round: {diff:.2e}", flush=True)
    return {"clients": len(xy), "examples_per_round": examples, "cohort_prepare_s": round(prepare_s, 2),
            "round_1000_clients_s": local["s"], "round_1000_clients_cpu_s": local["cpu_s"],
            "clients_per_s": local["clients_per_s"], "round_1000_clients_remote_s": remote["s"],
            "round_1000_clients_remote_cpu_s": remote["cpu_s"], "clients_per_s_remote": remote["clients_per_s"],
            "remote_max_abs_weight_diff": diff}


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: reset at exec, unlike ru_maxrss, which a child
    started by fork and exec inherits from its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def population_child(size: int, clients: int, root: str, id_list: bool = False) -> dict:
    """(b), run in a fresh process: build, select, generate; report this process's peak RSS.

    `id_list`: also hold the sorted list of every user id, as `federated.sampling`'s samplers
    need: the control that shows the measurement sees what grows with the population.
    """
    from data.persona import user_id
    from federated.population import LazyPopulation, cohort_examples, select_from_population

    tok = _tokenizer(root)
    base = _peak_rss_mb()
    ids = sorted(user_id(i) for i in range(size)) if id_list else []  # noqa: F841 (held on purpose)
    pop = LazyPopulation(size, seed=0, messages_per_user=MESSAGES_PER_PHONE)
    draw = select_from_population(pop, clients, 0, start_time_s=NIGHT_S)
    xy = cohort_examples(pop, draw.reporting, tok, 20, EXAMPLES_PER_PHONE)
    peak = _peak_rss_mb()
    return {"population": size, "peak_rss_mb": round(peak, 1), "rss_before_mb": round(base, 1),
            "clients": len(xy), "examined": draw.examined}


def populations(sizes: list[int], clients: int, root: str) -> tuple[dict, float]:
    """Peak RSS (MB) per population size, and the control's (the largest with its id list)."""
    out, control = {}, 0.0
    for n, id_list in [(n, False) for n in sizes] + [(max(sizes), True)]:
        cmd = [sys.executable, os.path.abspath(__file__), "--population-child", str(n), "--clients", str(clients),
               "--out", root] + (["--id-list"] if id_list else [])
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"population child {n} failed: {r.stderr[-2000:]}")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        if id_list:
            control = row["peak_rss_mb"]
            print(f"(b) control, population {n:,} plus a list of its user ids: peak RSS {control:.1f} MB", flush=True)
            continue
        print(f"(b) population {n:>9,}: peak RSS {row['peak_rss_mb']:.1f} MB (after imports {row['rss_before_mb']:.1f}),"
              f" {row['clients']} clients generated, {row['examined']} phones checked", flush=True)
        out[str(n)] = row["peak_rss_mb"]
    return out, control


def collectors(small: bool) -> dict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_scale_collectors.py")
    if not os.path.exists(path):
        print("(c) collectors: benchmarks/_scale_collectors.py is not in this checkout; reported as null", flush=True)
        return {k: None for k in COLLECTOR_KEYS}
    spec = importlib.util.spec_from_file_location("_scale_collectors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    got = module.run(small)
    missing = [k for k in COLLECTOR_KEYS if k not in got]
    if missing:
        raise RuntimeError(f"_scale_collectors.run() returned no {missing}")
    print("(c) collectors: " + ", ".join(f"{k} {got[k]}" for k in COLLECTOR_KEYS), flush=True)
    return got


def concurrency(repeats: int, root: str) -> dict:
    import sim_overhead  # benchmarks/ is on sys.path as this script's directory

    r = sim_overhead.measure("default", root, repeats)
    print(f"(a) default preset round ({r['clients_per_round']} clients): concurrent {r['tff_round_s']:.2f} s, one "
          f"client at a time {r['tff_sequential_round_s']:.2f} s: ratio {r['concurrent_over_sequential']:.2f} "
          f"(plain loop {r['plain_round_s']:.2f} s; CPU s {r['tff_cpu_s']:.2f} vs {r['tff_sequential_cpu_s']:.2f})",
          flush=True)
    return {"concurrent_over_sequential": r["concurrent_over_sequential"],
            "default_round_concurrent_s": r["tff_round_s"], "default_round_sequential_s": r["tff_sequential_round_s"],
            "default_round_plain_s": r["plain_round_s"], "concurrent_over_plain": r["ratio"],
            "default_round_concurrent_all_s": r["tff_all_s"], "default_round_sequential_all_s": r["tff_sequential_all_s"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="quick check: 100 clients, 1 repeat")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--populations", default="10000,100000,1000000")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: concurrency,round,populations,collectors "
                                               "(part (c) alone: --skip concurrency,round,populations)")
    ap.add_argument("--out", default="runs/bench/scale")
    ap.add_argument("--population-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--id-list", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.population_child:
        print(json.dumps(population_child(args.population_child, args.clients, args.out, args.id_list)))
        return 0
    if args.small:
        args.clients, args.repeats = min(args.clients, 100), 1
    if args.clients < 1:
        raise ValueError(f"--clients must be >= 1, got {args.clients}")
    sizes = [int(x) for x in args.populations.split(",") if x]
    skip = set(args.skip.split(",")) - {""}
    os.makedirs(args.out, exist_ok=True)
    from federated.runtime import install_cleanup
    from federated.workers import available_cpus

    install_cleanup()
    out: dict = {"benchmark": "scale", "small": args.small, "cpus": available_cpus()}
    if "concurrency" not in skip:
        out.update(concurrency(args.repeats, args.out))
    else:
        out["concurrent_over_sequential"] = None
    if "round" not in skip:
        out.update(big_round(args.clients, args.out))
    else:
        out.update(round_1000_clients_s=None, round_1000_clients_remote_s=None)
    if "populations" not in skip:
        rss, control = populations(sizes, args.clients, args.out)
        out["population_peak_rss_mb"] = rss
        out["population_with_id_list_peak_rss_mb"] = control
        out["population_rss_max_over_min"] = round(max(rss.values()) / min(rss.values()), 3)
    else:
        out["population_peak_rss_mb"] = None
    out.update(collectors(args.small) if "collectors" not in skip else {k: None for k in COLLECTOR_KEYS})
    ratio = out.get("concurrent_over_sequential")
    out["goals"] = {"concurrent_over_sequential_max": 0.8, "population_rss_max_over_min": 1.2,
                    "postgres_over_sqlite_min": 0.8,
                    "concurrent_ok": ratio is not None and ratio <= 0.8,
                    "population_flat_ok": out.get("population_rss_max_over_min", 9.0) <= 1.2,
                    "collectors_ok": bool(out.get("collectors_ok"))}  # the ratio and every fault check
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    missing = [k for k in ISSUE_KEYS if k not in out]
    if missing:
        raise RuntimeError(f"scale's JSON lacks the keys issue 22 names: {missing}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
