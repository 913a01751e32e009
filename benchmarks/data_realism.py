"""How real does the keystroke simulator look? Side by side with two real per-user corpora.

For the simulator (`default` population) and each corpus in ../shared/corpora/ this prints:
messages per user p50/p90/p99 and the skew p99/p50, words per message, mean user-vs-population
JS divergence, heldout OOV rate of the proxy-trained vocabulary (the `default` preset's size,
or `--vocab-size`), the share of held-out word targets that are keyboard placeholders (`<url>`,
`<num>`, ...; data/text.py), and the heldout top-1/top-3 of the central interpolated Kneser-Ney
trigram and most-frequent-word baselines (scored with model/metrics.py). It then checks the simulator against the range the corpora span, and ends
with one JSON line.

    .venv/bin/python benchmarks/data_realism.py
    .venv/bin/python benchmarks/data_realism.py --vocab-size 2000   # the earlier default size
    .venv/bin/python benchmarks/data_realism.py --population 100000   # stats only, streamed
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.presets import preset  # noqa: E402
from configs.schema import DataConfig  # noqa: E402
from data.dataset import FederatedData  # noqa: E402
from data.ngram import KneserNeyTrigram, MostFrequentWord, score  # noqa: E402
from data.prepare import prepare  # noqa: E402
from data.special_ids import EOS_ID, PAD_ID  # noqa: E402
from data.stats import data_stats  # noqa: E402
from data.text import PLACEHOLDERS  # noqa: E402
from model.metrics import NextWordAccumulator  # noqa: E402

CORPORA = ROOT.parent / "shared" / "corpora"
CORPUS_FILES = ("duraspace_irc/duraspace_irc.jsonl.gz", "shakespeare_gutenberg/shakespeare_gutenberg.jsonl.gz")
CHECKED = ("volume_skew", "words_per_message", "js_divergence")  # must sit inside the corpora's range
KN_TOP1_RANGE = (0.08, 0.35)


def measure(name: str, cfg: DataConfig) -> dict[str, Any]:
    """Stats plus central baselines on heldout users for one source."""
    t0 = time.time()
    st = data_stats(cfg, progress=False)
    with tempfile.TemporaryDirectory(prefix="fedkeys_realism_") as tmp:
        prepare(cfg, tmp, progress=False)
        fd = FederatedData(tmp)
        train = [t for u in fd.users("train") for t in fd.tokens(u)]
        x, y = fd.pooled_examples("heldout", cfg.seq_len)
        kn = score(KneserNeyTrigram(fd.tokenizer.vocab_size).fit(train), x, y, NextWordAccumulator((1, 3)))
        mf = score(MostFrequentWord(fd.tokenizer.vocab_size).fit(train), x, y, NextWordAccumulator((1, 3)))
        vocab = fd.tokenizer.vocab_size
        placeholder_ids = [fd.tokenizer.word_to_id(p) for p in PLACEHOLDERS if fd.tokenizer.word_to_id(p) > EOS_ID]
        targets = (y != PAD_ID) & (y != EOS_ID)
        placeholder_share = float(np.isin(y[targets], placeholder_ids).mean()) if targets.any() else 0.0
    mpu = st["messages_per_user"]
    return {
        "name": name, "users": st["users"], "messages": st["messages"], "words": st["words"],
        "msgs_p50": mpu["p50"], "msgs_p90": mpu["p90"], "msgs_p99": mpu["p99"],
        "volume_skew": st["volume_skew_p99_p50"], "words_per_message": st["words_per_message"]["mean"],
        "js_divergence": st["js_divergence_mean"], "oov_rate": st["heldout_oov_rate"], "vocab": vocab,
        "placeholder_share": placeholder_share,
        "kn_top1": kn["top1"], "kn_top3": kn["top3"], "kn_perplexity": kn["perplexity"],
        "mfw_top1": mf["top1"], "mfw_top3": mf["top3"], "heldout_words": kn["words"],
        "seconds": round(time.time() - t0, 1),
    }


ROWS = (("users", "{:.0f}"), ("messages", "{:.0f}"), ("words", "{:.0f}"), ("msgs_p50", "{:.0f}"),
        ("msgs_p90", "{:.0f}"), ("msgs_p99", "{:.0f}"), ("volume_skew", "{:.1f}"),
        ("words_per_message", "{:.1f}"), ("js_divergence", "{:.3f}"), ("oov_rate", "{:.3f}"),
        ("placeholder_share", "{:.3f}"),
        ("vocab", "{:.0f}"), ("kn_top1", "{:.3f}"), ("kn_top3", "{:.3f}"), ("kn_perplexity", "{:.1f}"),
        ("mfw_top1", "{:.3f}"), ("mfw_top3", "{:.3f}"), ("heldout_words", "{:.0f}"), ("seconds", "{:.1f}"))


def table(results: list[dict[str, Any]]) -> str:
    """A plain-text table, one column per source."""
    width = 20
    lines = ["metric".ljust(20) + "".join(r["name"][:width - 1].rjust(width) for r in results)]
    for key, fmt in ROWS:
        lines.append(key.ljust(20) + "".join(fmt.format(r[key]).rjust(width) for r in results))
    return "\n".join(lines)


def checks(sim: dict[str, Any], real: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the simulator sits against the corpora's [min, max] on the checked statistics."""
    out: dict[str, Any] = {}
    for key in CHECKED:
        if not real:
            break
        lo, hi = min(r[key] for r in real), max(r[key] for r in real)
        out[key] = {"sim": sim[key], "range": [lo, hi], "inside": lo <= sim[key] <= hi}
    lo, hi = KN_TOP1_RANGE
    out["kn_top1"] = {"sim": sim["kn_top1"], "range": [lo, hi], "inside": lo <= sim["kn_top1"] <= hi}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=0,
                    help="only stream data stats for this many simulated users (memory check)")
    ap.add_argument("--corpora", default=str(CORPORA), help="folder holding the real corpora")
    ap.add_argument("--vocab-size", type=int, help="vocabulary size (default: the default preset's)")
    args = ap.parse_args(argv)

    base = preset("default").data
    if args.vocab_size:
        base = replace(base, vocab_size=args.vocab_size)
    if args.population:
        t0 = time.time()
        st = data_stats(replace(base, num_users=args.population), progress=True)
        st["seconds"] = round(time.time() - t0, 1)
        print(json.dumps(st))
        return 0

    results = [measure("simulator(default)", base)]
    for rel in CORPUS_FILES:
        path = Path(args.corpora) / rel
        if not path.exists():
            print(f"note: {path} not found, skipped", file=sys.stderr)
            continue
        results.append(measure(rel.split("/")[0], replace(base, source=f"jsonl:{path}")))
    print(table(results))
    verdict = checks(results[0], results[1:])
    print()
    for key, v in verdict.items():
        where = "inside" if v["inside"] else "OUTSIDE"
        print(f"{key:18s} simulator {v['sim']:.3f} {where} [{v['range'][0]:.3f}, {v['range'][1]:.3f}]")
    print(json.dumps({"benchmark": "data_realism", "results": results, "checks": verdict,
                      "all_inside": all(v["inside"] for v in verdict.values())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
