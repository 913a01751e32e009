"""TFF simulation overhead: wall time of a TFF round / the same clients' training as a plain loop.

For each preset, one round's cohort (`federated.sampling.sample_clients`) is trained three times:
(a) `process.next` of the run's `tff.learning` FedAvg process on a local worker training its
clients concurrently (`runtime` defaults: one client per CPU, one TensorFlow thread each; what
`fedkeys train` runs), (a') the same on a worker training one client at a time with every CPU's
threads (`runtime.client_concurrency=1`), and (b) in one process, a plain
loop of one traced `tf.function` SGD step over each client's `data.tfdata.client_dataset`
batches (same model, masked loss, epochs, batch size) followed by the numpy weighted mean. Both are warmed up first
(tracing excluded); the median over `--repeats` rounds is reported, the three interleaved in each
repeat so that load from other jobs hits them alike. Goals: ratio (concurrent TFF / plain) <= 1.3;
`concurrent_over_sequential` <= 0.8 for `default` on 2 cores.

To say where TFF's extra time goes, each round is also run with every client's dataset emptied
(`take(0)`, same cohort, result discarded): that is the runtime's cost with no training at all
(gRPC to `worker_binary`, the process's four stages, per-client dispatch). CPU seconds of this
process and of its `worker_binary` child are reported beside wall time: on a machine shared with
other jobs they move far less than wall time does.

Usage: .venv/bin/python benchmarks/sim_overhead.py [--presets tiny,default] [--repeats 3]
           [--client-loops iterator,reduce] [--small]
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data(cfg, root: str):
    from data.dataset import FederatedData
    from data.prepare import prepare

    path = os.path.join(root, f"data_{cfg.preset}")
    if not os.path.exists(os.path.join(path, "summary.json")):
        prepare(cfg.data, path, progress=False)
    return FederatedData(path)


def measure(preset_name: str, root: str, repeats: int, client_loop: str = "iterator") -> dict:
    import numpy as np
    import psutil
    import tensorflow as tf

    from benchmarks._procs import tree_cpu_s
    from configs.presets import preset
    from configs.schema import RuntimeConfig
    from federated.algorithms import build_process
    from federated.privacy import check_dp
    from federated.runtime import install_cleanup
    from federated.sampling import sample_clients
    from federated.tff_model import initial_weights, model_weights
    from federated.training import ClientStore
    from federated.workers import thread_plan, use_runtime
    from fedmath.aggregate import weighted_mean
    from model.nwp import build_model, masked_loss

    install_cleanup()
    concurrent, sequential = RuntimeConfig(), RuntimeConfig(client_concurrency=1)
    use_runtime(concurrent)
    cfg = preset(preset_name)
    t = cfg.train
    data = _data(cfg, root)
    vocab, seq = data.tokenizer.vocab_size, cfg.data.seq_len
    users = sorted(data.users("train"))
    store = ClientStore(data, seq, t.max_examples_per_client)
    import tensorflow_federated as tff

    loop = {"iterator": tff.learning.LoopImplementation.DATASET_ITERATOR,
            "reduce": tff.learning.LoopImplementation.DATASET_REDUCE}[client_loop]
    process = build_process(cfg, vocab, check_dp(cfg.privacy, t, len(users)), client_loop=loop)
    init = initial_weights(cfg.model, vocab, seq, t.seed)
    state = process.set_model_weights(process.initialize(), model_weights(init))

    model = build_model(cfg.model, vocab, seq, seed=t.seed)
    lr = tf.constant(t.client_learning_rate, tf.float32)

    spec = tf.TensorSpec([None, seq], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def sgd_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = masked_loss(yb, model(xb, training=True))
        for v, g in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights)):
            v.assign_sub(lr * tf.convert_to_tensor(g))
        return loss

    def local_train(ds):
        # A Python loop over one traced step. (A tf.function taking the dataset as its
        # argument is ~0.5 s per call here whatever the size: too slow to be the baseline.)
        for xb, yb in ds:
            sgd_step(xb, yb)

    def plain_round(glob, clients):
        deltas, rows = [], []
        for u in clients:
            for v, w in zip(model.trainable_weights, glob):
                v.assign(w)
            local_train(store.dataset(u, t.batch_size, t.local_epochs))
            deltas.append([v.numpy() - w for v, w in zip(model.trainable_weights, glob)])
            rows.append(store.examples(u)[0].shape[0])
        return [w + d for w, d in zip(glob, weighted_mean(deltas, rows))]

    def tff_round(st, clients):
        return process.next(st, [store.dataset(u, t.batch_size, t.local_epochs) for u in clients]).state

    def empty_round(st, clients):  # no examples: weighted means would divide by 0, so the state is dropped
        process.next(st, [store.dataset(u, t.batch_size, t.local_epochs).take(0) for u in clients])

    me = psutil.Process()

    def cpu_s() -> float:
        return tree_cpu_s(me)

    def timed(fn, *a):
        c, tic = cpu_s(), time.perf_counter()
        out = fn(*a)
        return out, time.perf_counter() - tic, cpu_s() - c

    cohorts = [sample_clients(users, t.clients_per_round, t.seed, r) for r in range(repeats + 1)]
    for u in {u for c in cohorts for u in c}:
        store.examples(u)  # load data outside the timings
    use_runtime(sequential)
    tff_round(state, cohorts[0])  # warm-up (tracing, worker start) of the sequential worker
    use_runtime(concurrent)
    state = tff_round(state, cohorts[0])
    empty_round(state, cohorts[0])
    glob = plain_round(init, cohorts[0])
    tff_s, plain_s, empty_s, tff_cpu, plain_cpu, empty_cpu, seq_s, seq_cpu = [], [], [], [], [], [], [], []
    for clients in cohorts[1:]:
        _, w, c = timed(empty_round, state, clients)
        empty_s.append(w), empty_cpu.append(c)
        use_runtime(sequential)
        _, w, c = timed(tff_round, state, clients)  # same state and cohort as the concurrent round
        seq_s.append(w), seq_cpu.append(c)
        use_runtime(concurrent)
        state, w, c = timed(tff_round, state, clients)
        tff_s.append(w), tff_cpu.append(c)
        glob, w, c = timed(plain_round, glob, clients)
        plain_s.append(w), plain_cpu.append(c)
    examples = int(np.mean([sum(store.examples(u)[0].shape[0] for u in c) for c in cohorts[1:]]))
    a, b, e = statistics.median(tff_s), statistics.median(plain_s), statistics.median(empty_s)
    sq = statistics.median(seq_s)
    conc, seq_plan = thread_plan(concurrent), thread_plan(sequential)
    med = lambda xs: round(statistics.median(xs), 3)
    return {"preset": preset_name, "client_loop": client_loop, "clients_per_round": t.clients_per_round, "examples_per_round": examples,
            "tff_round_s": round(a, 4), "plain_round_s": round(b, 4), "ratio": round(a / b, 3),
            "tff_sequential_round_s": round(sq, 4), "concurrent_over_sequential": round(a / sq, 3),
            "sequential_over_plain": round(sq / b, 3), "tff_sequential_cpu_s": med(seq_cpu),
            "concurrent_plan": [conc.client_concurrency, conc.intra_op_threads],
            "sequential_plan": [seq_plan.client_concurrency, seq_plan.intra_op_threads],
            "tff_empty_round_s": round(e, 4), "ratio_without_empty_round": round((a - e) / b, 3),
            "tff_cpu_s": med(tff_cpu), "plain_cpu_s": med(plain_cpu), "tff_empty_cpu_s": med(empty_cpu),
            "tff_all_s": [round(x, 4) for x in tff_s], "plain_all_s": [round(x, 4) for x in plain_s],
            "tff_sequential_all_s": [round(x, 4) for x in seq_s]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--client-loops", default="iterator",
                    help="TFF client loops to time, comma-separated: iterator (what fedkeys runs), reduce "
                         "(tff.learning's default DatasetReduce)")
    ap.add_argument("--out", default="runs/bench/sim_overhead")
    ap.add_argument("--small", action="store_true", help="quick check: tiny preset, 2 repeats")
    args = ap.parse_args(argv)
    from federated.workers import available_cpus

    if args.small:
        args.presets, args.repeats = "tiny", 2
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, loop in [(n, lp) for n in args.presets.split(",") for lp in args.client_loops.split(",")]:
        r = measure(name, args.out, args.repeats, loop)
        results.append(r)
        print(f"{name:8s} {loop:8s} clients={r['clients_per_round']:3d} examples/round={r['examples_per_round']:6d} "
              f"TFF {r['tff_round_s']:.3f}s (clients one at a time {r['tff_sequential_round_s']:.3f}s, "
              f"concurrent/sequential {r['concurrent_over_sequential']:.2f})  plain {r['plain_round_s']:.3f}s  "
              f"ratio {r['ratio']:.2f}  "
              f"(TFF with empty datasets {r['tff_empty_round_s']:.3f}s; CPU s TFF {r['tff_cpu_s']:.2f} "
              f"plain {r['plain_cpu_s']:.2f} empty {r['tff_empty_cpu_s']:.2f})", flush=True)
    print(json.dumps({"benchmark": "sim_overhead", "goal_ratio_max": 1.3, "goal_concurrent_over_sequential_max": 0.8,
                      "cpus": available_cpus(), "results": results,
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "ok": all(r["ratio"] <= 1.3 for r in results if r["client_loop"] == "iterator")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
