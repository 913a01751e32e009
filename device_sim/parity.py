"""Parity: the deployment path (TFLite phones + collector over HTTP) computes what TFF computes.

    same initial weights (build_model seed = train.seed)
      |-- TFF:    federated.training.run_federated, uniform cohorts sample_clients(users, K, seed, r)
      |-- phones: device_sim.fleet.run_devices with cohort = the same sample_clients(...), in order,
      |           against a gunicorn collector with goal_count = K and over_selection = 1.0
    same local epochs, batch size, client learning rate, example cap, server optimizer (one
    `train` section read by both); no noise, float32 uploads
      -> compare the two weight lists after R rounds (max |difference|)

The cases (`CASES`): every server optimizer the algorithm core has (fedavg, fedavgm, fedadam,
fedyogi) with a clip no update reaches and example weighting, and `fedavg_clipped`, where a clip
binds on most clients: TFF clips in its aggregator (`privacy.dp = "fixed"` at z = 0, which divides
the clipped sum by the cohort size) and the phones clip before uploading to a collector that
weighs every update the same (`train.aggregator = "uniform_mean"`).

Only the order of float additions differs (the collector sums updates as they arrive, in
float64), so the two models agree to float32 rounding accumulated over R rounds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import numpy as np

from configs.schema import RunConfig

PARITY_CLIP = 1e6  # a clip bound no update reaches

# name -> (train overrides, clip norm or None). Adaptive optimizers at server rate 0.01: at the
# rate 1.0 of the SGD cases a first Adam step moves every weight by about 1 whatever its delta.
CASES: dict[str, tuple[dict[str, Any], float | None]] = {
    "fedavg": ({"algorithm": "fedavg", "server_momentum": 0.0}, None),
    "fedavgm": ({"algorithm": "fedavgm", "server_momentum": 0.9}, None),
    "fedadam": ({"algorithm": "fedadam", "server_learning_rate": 0.01}, None),
    "fedyogi": ({"algorithm": "fedyogi", "server_learning_rate": 0.01}, None),
    "fedavg_clipped": ({"algorithm": "fedavg", "server_momentum": 0.0}, 0.05),
    # Each client step's gradient clipped (train.client_grad_clip) at a norm that binds.
    "fedavg_gradclip": ({"algorithm": "fedavg", "server_momentum": 0.0, "client_grad_clip": 0.2}, None),
}


def parity_config(cfg: RunConfig, rounds: int, clip_norm: float | None = None) -> RunConfig:
    """`cfg` with both paths set to compute the same thing (see the module docstring).

    Args:
        clip_norm: None: no clipping (a bound no update reaches), example weighting. A number:
            every update clipped to it and weighted the same, in TFF and on the collector.

    Raises:
        ValueError: fedprox (its proximal term is client work the phones do not run), or an
            aggregator other than the two means (TFF runs only those).
    """
    t = cfg.train
    if t.algorithm == "fedprox":
        raise ValueError("parity needs a client step the phones run: train.algorithm 'fedprox' adds a proximal "
                         "term they do not")
    if t.aggregator not in ("auto", "weighted_mean", "uniform_mean"):
        raise ValueError(f"parity needs an aggregator TFF runs (weighted_mean or uniform_mean), got {t.aggregator!r}")
    clipped = clip_norm is not None
    train = dataclasses.replace(t, rounds=rounds, selection="uniform", client_momentum=0.0,
                                eval_every=rounds, checkpoint_every=0, tensorboard=False,
                                aggregator="uniform_mean" if clipped else "weighted_mean")
    server = dataclasses.replace(cfg.server, goal_count=t.clients_per_round, over_selection=1.0)
    if clipped:
        privacy = dataclasses.replace(cfg.privacy, mode="device", dp="fixed", noise_multiplier=0.0,
                                      clip_norm=float(clip_norm))
    else:
        privacy = dataclasses.replace(cfg.privacy, mode="none", dp="none", noise_multiplier=0.0,
                                      clip_norm=PARITY_CLIP)
    return dataclasses.replace(cfg, train=train, server=server, privacy=privacy)


def case_config(cfg: RunConfig, case: str, rounds: int) -> RunConfig:
    """`parity_config` for one of `CASES`."""
    if case not in CASES:
        raise ValueError(f"unknown parity case {case!r}; expected one of {sorted(CASES)}")
    overrides, clip = CASES[case]
    return parity_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides)), rounds, clip)


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(np.shape(x) != np.shape(y) for x, y in zip(a, b)):
        raise ValueError(f"weight lists differ in structure: {[np.shape(x) for x in a]} vs {[np.shape(y) for y in b]}")
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b))


def check_bundle_start(bundle_dir: str, cfg: RunConfig, vocab_size: int, init: list[np.ndarray]) -> None:
    """Raise ValueError unless the bundle in `bundle_dir` is what `run_parity` would export for
    this config: the same model, sizes, client learning rate and, exactly, these initial weights."""
    from model.weights_io import load_weights
    from tflite_export.bundle import WEIGHTS, read_manifest

    m = read_manifest(bundle_dir)
    want = {"model": dataclasses.asdict(cfg.model), "vocab_size": vocab_size, "seq_len": cfg.data.seq_len,
            "batch_size": cfg.train.batch_size, "learning_rate": float(cfg.train.client_learning_rate)}
    differ = sorted(k for k, v in want.items() if m.get(k) != v)
    if differ:
        raise ValueError(f"{bundle_dir}: the bundle's {', '.join(differ)} differ from this parity run's")
    _, arrays = load_weights(os.path.join(bundle_dir, WEIGHTS))
    if len(arrays) != len(init) or any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(arrays, init)):
        raise ValueError(f"{bundle_dir}: the bundle's weights are not this run's seeded initial weights")


def run_parity(cfg: RunConfig, data_dir: str, out_dir: str, rounds: int = 3, concurrency: int = 2,
               progress: bool = False, clip_norm: float | None = None,
               bundle_from: str | None = None) -> dict[str, Any]:
    """Train R rounds both ways from the same start and compare; writes out_dir/parity.json.

    `cfg` is used as given after `parity_config(cfg, rounds, clip_norm)`. `bundle_from`: a bundle
    already exported for this start (another case's out_dir/bundle; `check_bundle_start` must
    pass) is copied instead of converting the model again.

    Returns:
        {"rounds", "max_abs_diff", "max_abs_change_from_initial", "clipped_fraction" (updates
        longer than the clip before clipping), "algorithm" (what the collector ran), "tff_seconds",
        "devices_seconds", "cohorts", "fleet"}.
    """
    import time

    from data.dataset import FederatedData
    from device_sim.attestation import issuer_for_run, transports
    from device_sim.fleet import fetch_published_weights, run_devices
    from federated.sampling import sample_clients
    from federated.tff_model import initial_weights
    from federated.training import run_federated
    from model.nwp import build_model, weight_names
    from model.weights_io import load_weights, save_weights
    from server.process import ServerProcess, write_server_config
    from tflite_export.bundle import export_bundle

    cfg = parity_config(cfg, rounds, clip_norm)
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
    if bundle_from is None:
        export_bundle(cfg, init_path, os.path.join(data_dir, "spm.model"), bundle_dir, inference=False)
    else:
        check_bundle_start(bundle_from, cfg, vocab, init)
        shutil.copytree(bundle_from, bundle_dir, dirs_exist_ok=True)

    t0 = time.perf_counter()
    run_federated(cfg, data, os.path.join(out_dir, "tff"), progress=progress)
    tff_s = time.perf_counter() - t0
    _, tff_weights = load_weights(os.path.join(out_dir, "tff", "weights.npz"))

    cohorts = [sample_clients(users, k, seed, r) for r in range(rounds)]
    needed = sorted({u for c in cohorts for u in c})
    cap = cfg.train.max_examples_per_client
    clients = {u: data.client_examples(u, seq_len, cap) for u in needed}
    cfg, issuer = issuer_for_run(cfg)
    phone_transport = transports(issuer)
    config_path = write_server_config(os.path.join(out_dir, "server.json"), cfg, bundle_dir,
                                      os.path.join(out_dir, "server_state"))
    t0 = time.perf_counter()
    with ServerProcess(config_path, workers=1, threads=4, log_path=os.path.join(out_dir, "server.log")) as srv:
        fleet = run_devices(srv.url, clients, rounds=rounds, concurrency=concurrency, seed=seed,
                            encoding="float32", error_feedback=False, cohort=lambda r: cohorts[r],
                            progress=progress, transport_factory=phone_transport)
        summary = fleet.summary()
        if summary["rounds_completed"] != rounds:
            raise RuntimeError(f"the collector published {summary['rounds_completed']} of {rounds} versions: {summary}")
        final_version = summary["rounds"][-1]["model_version"]
        device_weights = fetch_published_weights(srv.url, final_version, [w.shape for w in tff_weights],
                                                 transport_factory=phone_transport)
        with open(os.path.join(out_dir, "server_state", "models", f"v{final_version}.json")) as f:
            algorithm = json.load(f).get("algorithm")
    dev_s = time.perf_counter() - t0
    norms = [o["update_norm"] for o in fleet.outcomes() if o["update_norm"] is not None]
    clipped = float(np.mean([n > cfg.privacy.clip_norm for n in norms])) if norms else 0.0

    result = {
        "rounds": rounds, "clients_per_round": k, "cohorts": cohorts,
        "max_abs_diff": max_abs_diff(device_weights, tff_weights),
        "max_abs_change_from_initial": max_abs_diff(device_weights, init),
        "clip_norm": clip_norm, "clipped_fraction": clipped, "algorithm": algorithm,
        "update_norms": [round(float(n), 6) for n in sorted(norms)],
        "tff_seconds": round(tff_s, 2), "devices_seconds": round(dev_s, 2),
        "fleet": {k2: v for k2, v in summary.items() if k2 != "rounds"},
    }
    with open(os.path.join(out_dir, "parity.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return result
