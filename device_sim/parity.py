"""Parity: the deployment path (TFLite phones + collector over HTTP) computes what TFF computes.

    same initial weights (build_model seed = train.seed)
      |-- TFF:    federated.training.run_federated, uniform cohorts sample_clients(users, K, seed, r)
      |-- phones: device_sim.fleet.run_devices with cohort = the same sample_clients(...), in order,
      |           against a gunicorn collector with goal_count = K and over_selection = 1.0
    same local epochs, batch size, client learning rate, example cap; no clipping that binds,
    no noise, float32 uploads, example-weighted FedAvg, server learning rate as TFF's
      -> compare the two weight lists after R rounds (max |difference|)

Only the order of float additions differs (the collector sums updates as they arrive, in
float64), so the two models agree to float32 rounding accumulated over R rounds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from configs.schema import RunConfig

PARITY_CLIP = 1e6  # a clip bound no update reaches: parity runs without clipping


def parity_config(cfg: RunConfig, rounds: int) -> RunConfig:
    """`cfg` with both paths set to compute the same thing (see the module docstring).

    Raises:
        ValueError: an algorithm other than plain FedAvg (the collector runs server SGD).
    """
    t = cfg.train
    if t.algorithm != "fedavg":
        raise ValueError(f"parity needs train.algorithm 'fedavg' (server SGD on the mean delta), got {t.algorithm!r}")
    train = dataclasses.replace(t, rounds=rounds, selection="uniform", client_momentum=0.0,
                                eval_every=rounds, checkpoint_every=0, tensorboard=False)
    server = dataclasses.replace(cfg.server, goal_count=t.clients_per_round, over_selection=1.0,
                                 local_epochs=t.local_epochs, batch_size=t.batch_size,
                                 learning_rate=t.client_learning_rate,
                                 server_learning_rate=t.server_learning_rate,
                                 max_examples=t.max_examples_per_client or cfg.server.max_examples)
    privacy = dataclasses.replace(cfg.privacy, mode="none", dp="none", noise_multiplier=0.0, clip_norm=PARITY_CLIP)
    return dataclasses.replace(cfg, train=train, server=server, privacy=privacy)


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(np.shape(x) != np.shape(y) for x, y in zip(a, b)):
        raise ValueError(f"weight lists differ in structure: {[np.shape(x) for x in a]} vs {[np.shape(y) for y in b]}")
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))


def run_parity(cfg: RunConfig, data_dir: str, out_dir: str, rounds: int = 3, concurrency: int = 2,
               progress: bool = False) -> dict[str, Any]:
    """Train R rounds both ways from the same start and compare; writes out_dir/parity.json.

    Returns:
        {"rounds", "max_abs_diff", "per_round" (phones vs TFF after each round is not available
        from TFF's driver, so only the final comparison), "tff_seconds", "devices_seconds",
        "cohorts", "fleet"}.
    """
    import time

    from data.dataset import FederatedData
    from device_sim.fleet import fetch_published_weights, run_devices
    from federated.sampling import sample_clients
    from federated.tff_model import initial_weights
    from federated.training import run_federated
    from server.process import ServerProcess, write_server_config
    from model.nwp import build_model, weight_names
    from model.weights_io import load_weights, save_weights
    from tflite_export.bundle import export_bundle

    cfg = parity_config(cfg, rounds)
    os.makedirs(out_dir, exist_ok=True)
    data = FederatedData(data_dir)
    vocab, seq_len, seed = int(data.tokenizer.vocab_size), cfg.data.seq_len, cfg.train.seed
    users = sorted(data.users("train"))
    k = cfg.train.clients_per_round

    # The common start: the seeded initial weights, exported as the phones' bundle (version 0).
    init = initial_weights(cfg.model, vocab, seq_len, seed)
    names = weight_names(build_model(cfg.model, vocab, seq_len, seed=seed))
    init_path = save_weights(os.path.join(out_dir, "initial.npz"), names, init)
    bundle_dir = os.path.join(out_dir, "bundle")
    export_bundle(cfg, init_path, os.path.join(data_dir, "spm.model"), bundle_dir, inference=False)

    t0 = time.perf_counter()
    run_federated(cfg, data, os.path.join(out_dir, "tff"), progress=progress)
    tff_s = time.perf_counter() - t0
    _, tff_weights = load_weights(os.path.join(out_dir, "tff", "weights.npz"))

    cohorts = [sample_clients(users, k, seed, r) for r in range(rounds)]
    needed = sorted({u for c in cohorts for u in c})
    cap = cfg.train.max_examples_per_client
    clients = {u: data.client_examples(u, seq_len, cap) for u in needed}
    config_path = write_server_config(os.path.join(out_dir, "server.json"), cfg.server, cfg.privacy,
                                      bundle_dir, os.path.join(out_dir, "server_state"))
    t0 = time.perf_counter()
    with ServerProcess(config_path, workers=1, threads=4, log_path=os.path.join(out_dir, "server.log")) as srv:
        fleet = run_devices(srv.url, clients, rounds=rounds, concurrency=concurrency, seed=seed,
                            encoding="float32", error_feedback=False, cohort=lambda r: cohorts[r],
                            progress=progress)
        summary = fleet.summary()
        if summary["rounds_completed"] != rounds:
            raise RuntimeError(f"the collector published {summary['rounds_completed']} of {rounds} versions: {summary}")
        final_version = summary["rounds"][-1]["model_version"]
        device_weights = fetch_published_weights(srv.url, final_version, [w.shape for w in tff_weights])
    dev_s = time.perf_counter() - t0

    result = {
        "rounds": rounds, "clients_per_round": k, "cohorts": cohorts,
        "max_abs_diff": max_abs_diff(device_weights, tff_weights),
        "max_abs_change_from_initial": max_abs_diff(device_weights, init),
        "tff_seconds": round(tff_s, 2), "devices_seconds": round(dev_s, 2),
        "fleet": {k2: v for k2, v in summary.items() if k2 != "rounds"},
    }
    with open(os.path.join(out_dir, "parity.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return result
