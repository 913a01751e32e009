"""`fedkeys report`: one self-contained HTML page per run, plots inlined, numbers from summary.json.

The run directories here are written by hand in the formats the stages write (train/metrics.csv
and summary.json, devices/summary.json), so these tests need no TensorFlow.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re

import pytest

from fedkeys.cli import main
from report.html import write_report
from report.runs import load_run

PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["round", "clients", "selected", "dropped", "examples", "train_loss", "top1", "top3", "perplexity",
           "words", "epsilon", "delta", "clip", "seconds"]


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def write_train(d, rounds=4, dp=None, algorithm="fedavg", columns=COLUMNS):
    """A train stage: metrics.csv (evaluated every round), summary.json, config.json."""
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(1, rounds + 1):
        row = {"round": r, "clients": 4 - (r % 2), "selected": 4, "dropped": r % 2, "examples": 40 + r,
               "train_loss": 5.5 - 0.1 * r, "top1": 0.02 * r, "top3": 0.05 * r, "perplexity": 300.0 / r,
               "words": 894.0, "epsilon": "", "delta": "", "clip": "", "seconds": 1.5}
        if dp:
            row.update(epsilon=0.7 * r, delta=1e-3, clip=1.0)
        rows.append({k: v for k, v in row.items() if k in columns})
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    last = rows[-1]
    summary = {"stage": "train", "algorithm": algorithm, "rounds": rounds,
               "final_eval": {**{k: last[k] for k in ("top1", "top3", "perplexity", "words") if k in last},
                              "keystroke_savings": 0.27181},
               "baseline_most_frequent": {"top1": 0.0637583, "top3": 0.1185682, "perplexity": 34.587, "words": 894.0},
               "dp": {"mode": dp or "none", "noise_multiplier": 1.1 if dp else 0.0, "clip_norm": 1.0,
                      "epsilon": last.get("epsilon") or None},
               "weight_names": [f"w{i:03d}" for i in range(7)], "seconds": 12.5}
    write_json(d / "summary.json", summary)
    write_json(d / "config.json", {"preset": "tiny", "train": {"rounds": rounds, "algorithm": algorithm},
                                   "privacy": {"dp": dp or "none"}})
    return summary


def write_devices(d):
    rounds = []
    for i in range(3):
        rounds.append({"index": i, "round": i, "model_version": i + 1, "completed": True, "accepted": 3,
                       "rejected": i % 2, "dropouts": 1, "stragglers": 0, "failed": 0, "examples": 60,
                       "bytes_up": 180396, "bytes_down": 895244, "errors": {"round_closed": i % 2},
                       "eval": {"top1": 0.07 + 0.01 * i, "top3": 0.11 + 0.011 * i, "perplexity": 140.0 - i,
                                "words": 894.0}})
    summary = {"stage": "devices", "rounds": rounds, "rounds_completed": 3, "accepted": 9, "rejected": 1,
               "dropouts": 3, "stragglers": 0, "failed": 0, "bytes_up": 541188, "bytes_down": 2685732}
    write_json(d / "summary.json", summary)
    write_json(d / "config.json", {"preset": "tiny", "devices": {"rounds": 3}})
    return summary


@pytest.fixture
def demo_dir(tmp_path):
    root = tmp_path / "demo"
    write_json(root / "config.json", {"preset": "tiny", "train": {"rounds": 4}})
    write_json(root / "data" / "summary.json", {"stage": "data", "users": 60})
    write_train(root / "train")
    write_train(root / "dp", dp="fixed")
    write_train(root / "central", rounds=3, algorithm="central")
    write_devices(root / "devices")
    return root


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def results(page: str) -> dict[str, list[str]]:
    """The final summary table: model name -> its cells."""
    table = re.search(r'<table class="results">(.*?)</table>', page, re.S).group(1)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    return {html.unescape(r[0]): [html.unescape(c) for c in r[1:]] for r in rows if r}


def test_demo_report_embeds_every_plot_and_matches_summaries(demo_dir):
    path = write_report(str(demo_dir))
    assert path == str(demo_dir / "report.html")
    page = open(path).read()

    pngs = images(page)
    assert len(pngs) == 8  # accuracy, perplexity, epsilon, clients, loss, fleet accuracy, phones, bytes
    assert all(p.startswith(PNG) for p in pngs)
    for key in ("accuracy", "perplexity", "epsilon", "clients", "fleet_accuracy", "fleet_participation", "fleet_bytes"):
        assert f'id="plot-{key}"' in page
    # self-contained: no scripts, stylesheets, fonts or images from anywhere else
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)

    table = results(page)
    train = json.loads((demo_dir / "train" / "summary.json").read_text())
    final = train["final_eval"]
    assert table["federated (fedavg), 4 rounds"][:5] == ["v0", f"{final['top1']:.4f}", f"{final['top3']:.4f}",
                                                         f"{final['keystroke_savings']:.4f}", f"{final['perplexity']:.2f}"]
    base = train["baseline_most_frequent"]
    assert table["most-frequent word"][1:3] == [f"{base['top1']:.4f}", f"{base['top3']:.4f}"]
    dp = json.loads((demo_dir / "dp" / "summary.json").read_text())["final_eval"]
    assert table["federated + DP (fixed, z=1.1), 4 rounds"][1:3] == [f"{dp['top1']:.4f}", f"{dp['top3']:.4f}"]
    assert "centralized, 3 rounds" in table
    fleet = json.loads((demo_dir / "devices" / "summary.json").read_text())
    for r in fleet["rounds"]:
        row = table[f"on-device round {r['round']} ({r.get('reports', r['accepted'])} reports)"]
        assert row[:3] == [f"v{r['model_version']}", f"{r['eval']['top1']:.4f}", f"{r['eval']['top3']:.4f}"]
    # the devices totals appear in its summary table, the resolved config in its own
    assert re.search(r"<td>bytes_up</td><td class=\"num\">541,188</td>", page)
    assert re.search(r"<td>preset</td><td>tiny</td>", page)


def test_single_train_dir_omits_what_it_lacks(tmp_path):
    run = tmp_path / "train"
    write_train(run, columns=["round", "clients", "selected", "dropped", "top1", "top3"])
    page = open(write_report(str(run), str(tmp_path / "out" / "r.html"))).read()
    assert len(images(page)) == 2  # accuracy and clients; no perplexity, epsilon, loss or fleet
    assert 'id="note-perplexity"' in page and 'id="note-epsilon"' in page and 'id="note-fleet_bytes"' in page
    assert "omitted: no model in this run was trained with differential privacy" in page


def test_devices_dir_alone(tmp_path):
    run = tmp_path / "devices"
    write_devices(run)
    page = open(write_report(str(run))).read()
    assert len(images(page)) == 3  # the three on-device figures
    assert 'id="note-accuracy"' in page


def test_labels_and_baselines(demo_dir):
    run = load_run(str(demo_dir))
    assert run.kind == "demo"
    assert [c.label for c in run.curves] == ["federated (fedavg)", "centralized", "federated + DP (fixed, z=1.1)"]
    assert [b.label for b in run.baselines] == ["most-frequent word"]
    assert run.curves[2].column("epsilon") == ([1.0, 2.0, 3.0, 4.0], pytest.approx([0.7, 1.4, 2.1, 2.8]))


def test_cli_writes_and_prints_the_path(demo_dir, tmp_path, capsys):
    out = tmp_path / "elsewhere.html"
    assert main(["report", str(demo_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
