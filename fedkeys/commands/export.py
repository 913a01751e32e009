"""Export a trained run as a phone bundle: trainable.tflite, spm.model, weights, manifest.json.

`fedkeys export RUN_DIR --out BUNDLE [--verify]`; --verify checks TFLite against Keras on
held-out batches and fails if they disagree.
"""

from __future__ import annotations

import argparse
import os

from fedkeys.commands.common import read_summary, stage_config, start, write_summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a directory made by `fedkeys train`")
    p.add_argument("--verify", action="store_true", help="check the TFLite signatures against Keras")


def run(args: argparse.Namespace) -> int:
    cfg = stage_config(args, args.run_dir)
    trained = read_summary(args.run_dir)
    data_dir = trained["data_dir"]
    start(args, cfg)
    from tflite_export.bundle import export_bundle

    manifest = export_bundle(cfg, os.path.join(args.run_dir, "weights.npz"),
                             os.path.join(data_dir, "spm.model"), args.out)
    ops = manifest.get("select_tf_ops", [])
    print(f"export: {len(manifest['files'])} files -> {args.out}")
    print(f"export: Select TF ops in trainable.tflite ({len(ops)}): {', '.join(ops) or 'none'}")
    summary = {"stage": "export", "data_dir": data_dir, "run_dir": os.path.abspath(args.run_dir),
               "manifest": manifest}
    if args.verify:
        from data.dataset import FederatedData
        from tflite_export.verify import verify_bundle

        x, y = FederatedData(data_dir).pooled_examples("heldout", cfg.data.seq_len,
                                                       max_examples=4 * cfg.train.batch_size)
        checks = verify_bundle(args.out, x, y)
        summary["verify"] = checks
        print("export: verify " + ", ".join(f"{k}={v}" for k, v in checks.items()))
        if not checks.get("ok", False):
            write_summary(args.out, summary)
            raise ValueError(f"TFLite export does not match Keras: {checks}")
    write_summary(args.out, summary)
    return 0
