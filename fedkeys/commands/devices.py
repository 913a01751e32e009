"""Run simulated phones against the update collector and score each model version it publishes.

`fedkeys devices --bundle BUNDLE --out DIR` starts a collector (gunicorn on 127.0.0.1) for the
bundle unless --server URL names a running one, then N phones (one per training user) check in,
download the model, train through the TFLite `train` signature, clip, add noise and upload over
HTTP for R rounds. Each published version is scored on held-out users.

With --sim-hours H the phones instead live through H hours of an accelerated simulated clock
(a day in about ten minutes): they become eligible when idle, charging and on an unmetered
network (the availability model in fedmath/availability.py), straggle and drop out, and the
summary counts rounds, reports, dropouts, stragglers and bytes over the day.

With --personalize F each phone trains on the earlier messages of its owner only, keeps its own
fine-tuned weights beside the global ones, and after the rounds both are scored on the later
share F of that owner's messages (device_sim/personal.py).

Phones register with a device key certified by a simulated platform attestation service
(device_sim/attestation.py) when the collector requires it (`collector.attestation`, default
"required"): a collector started here trusts a new issuer, whose secret key is written to
OUT/attestation_issuer.key; with --server, pass the issuer key `fedkeys serve` wrote (--issuer-key).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from fedkeys.commands.common import read_summary, stage_config, start, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="a directory made by `fedkeys export`")
    p.add_argument("--server", help="URL of a running collector (default: start one for the bundle)")
    p.add_argument("--devices", type=int, help="phones (devices.num_devices)")
    p.add_argument("--rounds", type=int, help="rounds to run (devices.rounds)")
    p.add_argument("--concurrency", type=int, help="phones training at once (devices.concurrency)")
    p.add_argument("--sim-hours", type=float, help="run over this many simulated hours instead of --rounds")
    p.add_argument("--encoding", help="update encoding for every phone: float32, int8, topk:F, topk_int8:F")
    p.add_argument("--personalize", type=float, metavar="F",
                   help="hold back the latest share F of each phone owner's messages, keep each phone's own "
                        "fine-tuned weights, and score them against the global model on those (device_sim/personal.py)")
    p.add_argument("--issuer-key", help="secret key of the attestation issuer the collector trusts "
                   "(with --server; `fedkeys serve` writes OUT/attestation_issuer.key)")


def _with_cli_options(cfg, args):
    changes = {k: v for k, v in (("num_devices", args.devices), ("rounds", args.rounds),
                                 ("concurrency", args.concurrency)) if v is not None}
    return dataclasses.replace(cfg, devices=dataclasses.replace(cfg.devices, **changes)) if changes else cfg


def run(args: argparse.Namespace) -> int:
    from device_sim.attestation import issuer_for_run, transports

    cfg = _with_cli_options(stage_config(args, args.bundle), args)
    if args.server and not args.issuer_key and cfg.collector.attestation == "required":
        raise ValueError("--server: the phones need the secret key of the attestation issuer that collector "
                         "trusts (--issuer-key PATH, written by `fedkeys serve`), or --set collector.attestation=off "
                         "when it runs without attestation")
    cfg, issuer = issuer_for_run(cfg, args.issuer_key,
                                 save_to=None if args.server else os.path.join(args.out, "attestation_issuer.key"))
    phone_transport = transports(issuer)
    data_dir = read_summary(args.bundle)["data_dir"]
    start(args, cfg)

    from contextlib import nullcontext

    from data.dataset import FederatedData
    from device_sim.fleet import fetch_published_meta, fetch_published_weights, run_devices
    from fedkeys.commands.evaluate import evaluate_weights, heldout, keystroke_savings
    from server.process import ServerProcess, write_server_config
    from tflite_export.bundle import read_manifest

    data = FederatedData(data_dir)
    users = sorted(data.users("train"))[: cfg.devices.num_devices]
    if len(users) < cfg.server.goal_count and not args.sim_hours:
        raise ValueError(f"{len(users)} phones cannot reach the round goal of {cfg.server.goal_count} reports")
    if args.personalize is not None and not 0.0 < args.personalize < 1.0:
        raise ValueError(f"--personalize must be a share in (0, 1), got {args.personalize}")
    if args.personalize is not None and args.sim_hours:
        raise ValueError("--personalize runs with --rounds, not --sim-hours")
    clients = {u: data.client_examples(u, cfg.data.seq_len, max_examples=cfg.train.max_examples_per_client) for u in users}
    holdout = later_messages(data, users, cfg, args.personalize, clients) if args.personalize else {}
    shapes = [tuple(w["shape"]) for w in read_manifest(args.bundle)["weights"]]
    xy = heldout(cfg, data)

    if args.server:
        server, url = nullcontext(), args.server
    else:
        state = os.path.join(args.out, "server_state")
        if os.path.exists(state):  # a run of this command starts its own collector from round 0
            import shutil

            print(f"devices: removing the previous run's collector state {state}", flush=True)
            shutil.rmtree(state)
        config_path = write_server_config(os.path.join(args.out, "server.json"), cfg, args.bundle, state)
        server = ServerProcess(config_path, cfg.server.host, cfg.server.port, cfg.server.workers,
                               cfg.server.threads, log_path=os.path.join(args.out, "server.log"))
        url = server.url

    scores: dict[int, dict[str, float]] = {}
    published: dict[int, dict[str, Any]] = {}
    latest: tuple[int, Any] | None = None  # the last evaluated (version, weights), for personalization

    def evaluate_version(version: int, sim_hour: float | None = None) -> dict[str, float]:
        nonlocal latest
        weights = fetch_published_weights(url, version, shapes, transport_factory=phone_transport)
        latest = (version, weights)
        scores[version] = {**evaluate_weights(cfg, data, weights, xy), **keystroke_savings(cfg, data, weights, xy)}
        published[version] = fetch_published_meta(url, version, transport_factory=phone_transport)
        return scores[version]

    def score(report) -> None:
        if report.model_version is not None:
            ev = evaluate_version(report.model_version)
            print(f"devices: round {report.round} published v{report.model_version}: "
                  f"top-1 {ev['top1']:.4f}, top-3 {ev['top3']:.4f}", flush=True)

    base: dict[str, Any] = {"stage": "devices", "data_dir": data_dir, "server": url,
                            "bundle_dir": os.path.abspath(args.bundle)}
    if args.sim_hours:
        from device_sim.day import DayConfig, simulate_day

        with server:
            day = simulate_day(url, clients, DayConfig(sim_hours=args.sim_hours, seed=cfg.devices.seed),
                               concurrency=cfg.devices.concurrency, encoding=args.encoding, on_version=evaluate_version,
                               transport_factory=phone_transport)
        summary = {**base, "sim_hours": args.sim_hours, **day.summary()}
        write_summary(args.out, summary)
        print(f"devices: {summary['rounds_completed']} rounds in {args.sim_hours:g} simulated hours, "
              f"{summary['accepted']} accepted, {summary['dropouts']} dropouts, {summary['stragglers']} stragglers, "
              f"{summary['bytes_up']:,} bytes up -> {args.out}")
        return 0
    phones = None
    if holdout:
        from device_sim.fleet import ModelPool, make_phones, tflite_factory

        phones = make_phones(url, clients, ModelPool(tflite_factory()), seed=cfg.devices.seed, encoding=args.encoding,
                             keep_personal=True, transport_factory=phone_transport)
    with server:
        result = run_devices(url, clients, rounds=cfg.devices.rounds, concurrency=cfg.devices.concurrency,
                             seed=cfg.devices.seed, encoding=args.encoding, on_round=score,
                             transport_factory=phone_transport, phones=phones)
    summary = {**base, **result.summary()}
    if phones is not None and latest is not None:
        from device_sim.personal import personalization_report

        version, weights = latest
        pers = personalization_report(phones, weights, holdout, cfg.model.cell, data.tokenizer.words)
        summary["personalization"] = {**pers, "global_version": version, "holdout_share": args.personalize}
        print(f"devices: personalization on {pers['users']} phones ({pers['users_personalized']} with their own "
              f"weights): per-user top-1 global v{version} {pers['global_top1']:.4f}, personal "
              f"{pers['personalized_top1']:.4f} ({pers['relative_gain']:+.1%}), {pers['share_improved']:.0%} improved",
              flush=True)
    for r in summary["rounds"]:
        r["eval"] = scores.get(r["model_version"])
        meta = published.get(r["model_version"]) or {}
        r["reports"] = meta.get("reports")  # updates in the published version (`accepted` counts uploads)
    if published:
        summary["server_algorithm"] = published[max(published)].get("algorithm")
    write_summary(args.out, summary)
    print(f"devices: {summary['rounds_completed']} rounds completed, {summary['accepted']} updates accepted, "
          f"{summary['rejected']} rejected, {summary['bytes_up']:,} bytes up -> {args.out}")
    return 0


def later_messages(data, users, cfg, share: float, clients: dict) -> dict:
    """Split each user's messages in time: `clients[u]` becomes the earlier windows (what the phone
    trains on), and the returned map holds the later `share` (scored, never trained on)."""
    from keyboard.personalize import split_in_time

    holdout = {}
    for u in users:
        halves = split_in_time(data.tokens(u), cfg.data.seq_len, 1.0 - share, cfg.train.max_examples_per_client)
        if halves is None:
            continue  # one message: the phone trains on it, nothing to score
        clients[u], holdout[u] = halves
    if not holdout:
        raise ValueError("--personalize: no phone owner has two messages to split in time")
    return holdout
