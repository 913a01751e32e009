"""Server time per suggestion of the collector's keyboard endpoint (`POST /keyboard/suggest`),
for the `default` and `gboard` model sizes, on one core.

    .venv/bin/python benchmarks/keyboard_latency.py [--small] [--sizes default,gboard]
        [--requests 2000] [--core 0]

Per size: a bundle with the preset's model (cell, embedding width, units, T) and vocabulary
size (made-up words, `keyboard.testing`: random weights, a real SentencePiece vocabulary),
served by `server.app.create_app` in this process; the process is pinned to one core and
numpy's BLAS to one thread. The requests replay typing: messages of random vocabulary words,
one request per keystroke (every prefix, so completions of partial words and next words after
spaces), with contexts up to T words. Two figures per size: `view` is the time inside the view
function (rate limiter, body checks, newest-version lookup in SQLite, normalisation, numpy
forward pass, ranking), `request` the whole WSGI request through Flask's test client (routing,
JSON answer, the app's counters; what gunicorn adds is its HTTP parsing), both as wall time
and as the CPU time of the request (`cpu`: what other jobs on a shared machine disturb least). The goal (issue 21)
is p99 <= 20 ms per suggestion on one core for `gboard`, judged on `request`. Prints a table
and ends with one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads its BLAS
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import string  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import resolve  # noqa: E402
from keyboard.testing import make_keyboard_bundle  # noqa: E402
from server.app import create_app  # noqa: E402
from server.testing import config_dict  # noqa: E402

GOAL_P99_MS = 20.0


def made_up_words(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(letters, size=int(rng.integers(2, 10)))))
    return sorted(out)


def keystrokes(lexicon: list[str], messages: int, seq_len: int, seed: int) -> list[str]:
    """Every prefix of `messages` made-up messages: what a page posts as a person types."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(messages):
        text = " ".join(lexicon[i] for i in rng.integers(0, len(lexicon), size=int(rng.integers(3, seq_len + 5))))
        out += [text[:j] for j in range(1, len(text) + 1)]
    return out


def measure(size: str, requests: int, root: str) -> dict:
    cfg = resolve(size)
    lexicon = made_up_words(cfg.data.vocab_size, seed=1)
    texts = [" ".join(lexicon[i::97]) for i in range(97)]  # every word at least once
    bundle = os.path.join(root, size, "bundle")
    started = time.perf_counter()
    make_keyboard_bundle(bundle, texts, cell=cfg.model.cell, width=cfg.model.embedding_dim,
                         units=cfg.model.lstm_units, seq_len=cfg.data.seq_len, vocab_size=cfg.data.vocab_size,
                         seed=2)
    made_s = time.perf_counter() - started
    app = create_app(test_config=config_dict(bundle, os.path.join(root, size, "state"),
                                             collector={"keyboard_rate_per_s": 1e9, "keyboard_burst": 10**9}))
    client = app.test_client()
    typed = keystrokes(lexicon, messages=requests // 40 + 1, seq_len=cfg.data.seq_len, seed=3)[:requests]
    for text in typed[:20]:  # warm-up: the model is loaded on the first request
        assert client.post("/keyboard/suggest", json={"text": text}).status_code == 200
    request_ms, view_ms, cpu_ms = [], [], []
    for text in typed:
        t, c = time.perf_counter(), time.thread_time()
        r = client.post("/keyboard/suggest", json={"text": text})
        request_ms.append(1000 * (time.perf_counter() - t))
        cpu_ms.append(1000 * (time.thread_time() - c))
        assert r.status_code == 200, r.get_json()
        view_ms.append(r.get_json()["server_ms"])
    q = lambda a, p: float(np.percentile(a, p))  # noqa: E731
    return {"size": size, "cell": cfg.model.cell, "vocab_size": app.extensions["fedkeys_keyboard"]["models"]
            .latest(app.extensions["fedkeys"]["collector"].store).weights.vocab_size,
            "embedding_dim": cfg.model.embedding_dim, "units": cfg.model.lstm_units, "seq_len": cfg.data.seq_len,
            "requests": len(typed), "p50_ms": round(q(request_ms, 50), 3), "p99_ms": round(q(request_ms, 99), 3),
            "view_p50_ms": round(q(view_ms, 50), 3), "view_p99_ms": round(q(view_ms, 99), 3),
            "cpu_p50_ms": round(q(cpu_ms, 50), 3), "cpu_p99_ms": round(q(cpu_ms, 99), 3),
            "bundle_s": round(made_s, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="200 requests per size (a quick check)")
    ap.add_argument("--sizes", default="default,gboard")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--core", type=int, default=0, help="the one CPU to pin to")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    requests = 200 if args.small else args.requests
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for size in args.sizes.split(","):
            rows.append(measure(size, requests, root))
    print(f"{'size':<8} {'cell':<5} {'V':>6} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'view p50':>8} {'view p99':>8} {'cpu p50':>7} {'cpu p99':>7}")
    for r in rows:
        print(f"{r['size']:<8} {r['cell']:<5} {r['vocab_size']:>6} {r['requests']:>8} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['view_p50_ms']:>8.2f} {r['view_p99_ms']:>8.2f} {r['cpu_p50_ms']:>7.2f} "
              f"{r['cpu_p99_ms']:>7.2f}")
    gboard = [r for r in rows if r["size"] == "gboard"]
    met = bool(gboard) and gboard[0]["p99_ms"] <= GOAL_P99_MS
    print(f"goal: gboard p99 <= {GOAL_P99_MS} ms on one core: {'met' if met else 'not met' if gboard else 'not measured'}")
    print(json.dumps({"benchmark": "keyboard_latency", "cores": 1, "goal_p99_ms": GOAL_P99_MS,
                      "goal_met": met if gboard else None, "load_average": os.getloadavg()[0], "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
