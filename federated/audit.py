"""The canary audit through the TFF simulation: plant canaries, train, measure their exposure.

`run_audit` inserts canaries (model/canary.py; Carlini et al. 2019) into chosen training users'
histories, runs `federated.training.run_federated` on that data with the run's own config (DP or
not), then scores every sequence of the canaries' format under the trained model and reports each
(repetitions, users) group's exposure beside the exposures of never-inserted sequences of the
same format. `fedkeys audit` and benchmarks/canary_exposure.py both call it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from configs.schema import RunConfig

PLAN: tuple[tuple[int, int], ...] = ((1, 1), (5, 1), (25, 1), (25, 5))  # (repetitions, users)


def run_audit(cfg: RunConfig, data: Any, out_dir: str, plan: Sequence[tuple[int, int]] = PLAN,
              per_config: int = 3, references: int = 1000, seed: int = 20, progress: bool = True,
              init_from: str | None = None) -> dict:
    """Train `cfg` on `data` with canaries planted; write audit.json beside the run; return it.

    `init_from` starts the federated run from pretrained weights (`run_federated`'s), so the audit
    can measure the model a pretrained production run would ship.

    Returns:
        {"summary": the training summary, "rows": one per (repetitions, users) with
        repetitions, users, exposure (mean rank-based, bits), exposure_max, exposures,
        exposure_extrapolated, reference_median, reference_p95, space}.

    Raises:
        ValueError: as `model.canary.plant` (too few users, uneven spread).
    """
    from federated.training import run_federated
    from model.canary import CanaryData, default_format, exposures, log_perplexities, plant
    from model.weights_io import load_weights

    vocab = int(data.tokenizer.vocab_size)
    fmt = default_format(vocab, seed=seed)
    canaries = plant(fmt, data.users("train"), plan, per_config, seed=seed)
    planted = {c.index for c in canaries}
    rng = np.random.default_rng(seed + 1)
    refs = [int(i) for i in rng.choice(fmt.size, size=references + len(planted), replace=False)
            if i not in planted][:references]
    summary = run_federated(cfg, CanaryData(data, fmt, canaries), out_dir, progress=progress, init_from=init_from)
    _, weights = load_weights(os.path.join(out_dir, "weights.npz"))
    lp = log_perplexities(cfg.model, vocab, weights, fmt)
    ref_exp, _ = exposures(lp, refs)
    median, p95 = float(np.median(ref_exp)), float(np.percentile(ref_exp, 95))
    rows = []
    for reps, users in plan:
        group = [c for c in canaries if c.repetitions == reps and len(c.users) == users]
        exp, ext = exposures(lp, [c.index for c in group])
        rows.append({"repetitions": reps, "users": users, "exposure": float(np.mean(exp)),
                     "exposure_max": float(np.max(exp)), "exposures": [round(float(e), 3) for e in exp],
                     "exposure_extrapolated": float(np.mean(ext)), "reference_median": median,
                     "reference_p95": p95, "space": fmt.size})
    result = {"summary": summary, "rows": rows, "reference_exposures": [round(float(e), 4) for e in ref_exp],
              "canaries": [{"index": c.index, "repetitions": c.repetitions, "users": c.users} for c in canaries]}
    with open(os.path.join(out_dir, "audit.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
        f.write("\n")
    return result
