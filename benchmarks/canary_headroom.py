"""How much one participation can memorize: a canary user's own local steps, before averaging.

The canary audit (benchmarks/canary_exposure.py) asks a non-DP run to reach an exposure 10 bits
above the reference median for canaries repeated 25 times in one user. Under `epoch` selection a
user takes part once per pass, takes one client step (dp_production.py's `--batch-size 32
--max-examples 32`), and its update enters the server's mean with weight about 1/m (times the
server momentum's 1 / (1 - 0.9) over the following rounds). This script measures that ceiling
without TFF: from dp_production.py's pretrained weights it runs the phones' step (plain SGD,
gradient clipped to global norm 1.0, lr 0.5) on the canary user's 32 windows, 25 of them the
canary (Carlini et al. 2019's exposure against 1,000 never-inserted sequences of the same
format), and scores the canary after k local steps with the local delta applied in full (a
cohort of one) and at `--scale` (about 10 / m, what FedAvgM makes of it in a cohort of m).

Ends with one JSON line {"benchmark": "canary_headroom", "rows": [...]}.

Usage: .venv/bin/python benchmarks/canary_headroom.py [--small] [dp_production.py's options]
       [--steps 1,5] [--scale 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.dp_production import arguments, population, pretrain, small  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments(ap)
    ap.add_argument("--steps", default="1,5", help="local step counts to score, comma-separated")
    ap.add_argument("--scale", type=float, default=0.05, help="share of the local delta a cohort passes on")
    ap.add_argument("--repetitions", type=int, default=25)
    args = small(ap.parse_args(argv))

    import numpy as np
    import tensorflow as tf

    from configs.presets import preset
    from data.sequences import examples
    from model.canary import default_format, exposures, log_perplexities
    from model.nwp import build_model, masked_loss
    from model.weights_io import load_weights

    data, n = population(args)
    _, w0 = load_weights(os.path.join(pretrain(args, data, n), "weights.npz"))
    cfg, vocab, seq_len = preset("default"), int(data.tokenizer.vocab_size), preset("default").data.seq_len
    fmt = default_format(vocab, seed=20)  # the audit's format (federated/audit.py's seed)
    rng = np.random.default_rng(20)
    refs = [int(i) for i in rng.choice(fmt.size, 1000, replace=False)]
    canary = int(rng.integers(fmt.size))
    user = sorted(data.users("train"))[7]
    x, y = examples([fmt.sequence(canary)] * args.repetitions + data.tokens(user), seq_len, args.max_examples)
    model = build_model(cfg.model, vocab, seq_len, seed=0)
    model.set_weights(list(w0))

    def score(weights) -> dict:
        e, _ = exposures(log_perplexities(cfg.model, vocab, weights, fmt), [canary] + refs)
        return {"exposure": float(e[0]), "reference_median": float(np.median(e[1:])),
                "reference_p95": float(np.percentile(e[1:], 95))}

    rows = [{"local_steps": 0, "scale": 1.0, **score(w0)}]
    wanted = sorted(int(k) for k in args.steps.split(","))
    for k in range(1, wanted[-1] + 1):
        with tf.GradientTape() as tape:
            loss = masked_loss(y, model(x, training=True))
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, model.trainable_weights), 1.0)
        for v, g in zip(model.trainable_weights, grads):
            v.assign_sub(args.client_lr * g)
        if k in wanted:
            delta = [v.numpy() - w for v, w in zip(model.trainable_weights, w0)]
            for s in (1.0, args.scale):
                rows.append({"local_steps": k, "scale": s, **score([w + s * d for w, d in zip(w0, delta)])})
    for r in rows:
        print(f"{r['local_steps']:2d} local step(s), delta x {r['scale']:.2f}: canary ({args.repetitions}x in "
              f"{len(x)} windows) exposure {r['exposure']:.2f} bits; references median {r['reference_median']:.2f}, "
              f"p95 {r['reference_p95']:.2f}", flush=True)
    print(json.dumps({"benchmark": "canary_headroom", "small": args.small, "population": n, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
