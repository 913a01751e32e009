"""Canary exposure (Carlini et al. 2019) without DP and with DP-FTRL, through the TFF simulation.

Canaries of a fixed format (model/canary.py: three fixed words, then three words each from 30
candidates, |R| = 27,000 sequences, every one scored) are inserted at the front of chosen
training users' histories 1, 5 or 25 times in one user, and 25 times spread over 5 users (5
each); the population, cohort and rounds are dp_production.py's (same options), and the DP run
is its DP-FTRL row (rho = --rho, no sampling amplification). Each canary's exposure, rank-based
and extrapolated, is compared with the exposures of 1,000 never-inserted sequences of R.

Goals (issue 20): without DP, canaries repeated 25 times in one user reach an exposure at least
10 bits above the reference median; with DP every canary's exposure lies within the reference
95th percentile. That DP goal is printed literally and beside it as a statistical test
(fedmath/canary_stats.py): n canaries exceed a p95 by chance with probability 1 - 0.95^n, so the
count above it is compared with the n * 0.05 expected, and the Bonferroni form asks every canary
to lie within the p(100 - 5/n). Ends with one JSON line {"benchmark": "canary_exposure", "rows": [...]}.

`--pretrained` starts both runs from dp_production.py's pretrained weights (the same proxy-user
pretraining, cached under its `--out`, as is the population), which is the form of its DP-FTRL
row that meets its goal. A finished audit with the same config is read back from disk, so
mechanisms run in parallel processes (`--mechanisms none`, `--mechanisms dp_ftrl`) are joined by
a last call naming them all.

Usage: .venv/bin/python benchmarks/canary_exposure.py [--small] [--pretrained] [dp_production.py's options]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.dp_production import arguments, noise_for_rho, population, pretrain, run_config, small  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments(ap)
    ap.add_argument("--per-config", type=int, default=3, help="canaries per (repetitions, users)")
    ap.add_argument("--mechanisms", default="none,dp_ftrl")
    ap.add_argument("--pretrained", action="store_true", help="start from dp_production.py's pretrained weights")
    args = small(ap.parse_args(argv))
    audit_dir = args.out.replace("dp_production", "canary_exposure")

    from configs.io import finished_result
    from federated.audit import run_audit
    from federated.runtime import install_cleanup
    from fedmath.canary_stats import within_reference

    install_cleanup()
    data, n = population(args)  # shared with dp_production.py (same --out): one population on disk
    init_from = pretrain(args, data, n) if args.pretrained else None
    rows, tests = [], {}
    for mechanism in args.mechanisms.split(","):
        per_pass = n // args.cohort
        z = noise_for_rho(mechanism, args.rho, per_pass * args.passes, per_pass)
        cfg = run_config(args, n, mechanism, z)
        out = os.path.join(audit_dir, f"u{args.users}_c{args.cohort}_p{args.passes}_pc{args.per_config}_{mechanism}_"
                                      f"{'pre' if init_from else 'scratch'}")
        result = finished_result(out, cfg, "audit.json")  # the same audit, finished: reused
        if result is None:
            result = run_audit(cfg, data, out, per_config=args.per_config, progress=not args.quiet,
                               init_from=init_from)
        s = result["summary"]
        if mechanism != "none":  # the DP goal, literally and as a multiple-comparison test
            tests[mechanism] = within_reference([e for r in result["rows"] for e in r["exposures"]],
                                                result["reference_exposures"])
        for r in result["rows"]:
            row = {"mechanism": mechanism, **r, "pretrained": bool(init_from), "population": n, "cohort": args.cohort,
                   "rounds": cfg.train.rounds, "noise_multiplier": z, "rho": s["dp"]["rho"], "top1": s["final_eval"]["top1"]}
            rows.append(row)
            print(f"{mechanism:8s} {r['repetitions']:2d}x in {r['users']} user(s): exposure {r['exposure']:.2f} bits "
                  f"(max {r['exposure_max']:.2f}; extrapolated {r['exposure_extrapolated']:.2f}); references "
                  f"median {r['reference_median']:.2f}, p95 {r['reference_p95']:.2f}  [N={n}, m={args.cohort}, "
                  f"T={cfg.train.rounds}, z={z:.3f}, rho {row['rho']}, top1 {row['top1']:.4f}]", flush=True)
    for r in rows:
        if r["mechanism"] == "none" and (r["repetitions"], r["users"]) == (25, 1):
            ok = r["exposure"] >= r["reference_median"] + 10
            print(f"goal (non-DP 25x one user >= median + 10 bits): {r['exposure']:.2f} vs "
                  f"{r['reference_median'] + 10:.2f}: {'met' if ok else 'NOT met'}", flush=True)
    for mechanism, t in tests.items():
        print(f"goal ({mechanism}: every canary within the reference p95), literally: "
              f"{'met' if t['literal_ok'] else 'NOT met'} ({t['above']} of {t['n']} above {t['threshold']:.2f}; "
              f"by chance alone at least one is above with probability {t['chance_literal_fails']:.2f})", flush=True)
        print(f"  statistical reading: {t['above']} above the p95 against {t['expected_above']:.2f} expected by "
              f"chance, P(>= {t['above']} | no memorization) = {t['p_at_least_above']:.3f}; Bonferroni (every "
              f"canary within the p{t['bonferroni_percentile']:.2f} = {t['bonferroni_threshold']:.2f}): "
              f"{'met' if t['bonferroni_ok'] else 'NOT met'} ({t['bonferroni_above']} above)", flush=True)
    print(json.dumps({"benchmark": "canary_exposure", "small": args.small, "rows": rows, "dp_tests": tests}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
