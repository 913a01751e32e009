"""One self-contained HTML report of a run: plots inlined as base64 PNG, inline CSS, no scripts.

    write_report(run_dir, out_path=None) -> path

reads `run_dir` with `report.runs.load_run`, draws `report.plots.all_plots` and writes
RUN_DIR/report.html (or `out_path`). The page opens offline: it references no file, font or
script outside itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
from html import escape
from typing import Any, Iterable, Optional, Sequence

from report.plots import Plot, all_plots
from report.runs import Run, Stage, fleet_rounds, load_run

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0; }
main { max-width: 980px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.meta { color: #666; font-size: 12px; } .note { color: #666; font-style: italic; margin: 4px 0; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 8px 0 20px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
"""


def _fmt(v: Any) -> str:
    """Numbers as the tables show them: accuracies to 4 decimals, big counts with separators."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v.is_integer() and abs(v) < 1e15:
            return _fmt(int(v))
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


class _Num(str):
    """A number already formatted (right-aligned like the others)."""


def _score(v: Any, digits: int) -> str:
    return _Num(f"{v:.{digits}f}") if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, _Num)) and not isinstance(v, bool)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = "".join(f'<td class="num">{escape(_fmt(c))}</td>' if _is_num(c) else f"<td>{escape(_fmt(c))}</td>"
                        for c in r)
        body.append(f"<tr>{cells}</tr>")
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _results(run: Run) -> str:
    if not run.results:
        return '<p class="note">No evaluated model in this run.</p>'
    rows = [(r.model, r.version, _score(r.scores.get("top1"), 4), _score(r.scores.get("top3"), 4),
             _score(r.scores.get("keystroke_savings"), 4), _score(r.scores.get("perplexity"), 2), r.source)
            for r in run.results]
    return _table(("model", "version", "top-1", "top-3", "keystroke savings", "perplexity", "from"), rows, "results")


def _figure(p: Plot) -> str:
    if p.png is None:
        return f'<h3>{escape(p.title)}</h3><p class="note" id="note-{p.key}">{escape(p.note)}</p>'
    data = base64.b64encode(p.png).decode("ascii")
    caption = f"<figcaption>{escape(p.note)}</figcaption>" if p.note else ""
    return (f'<h3>{escape(p.title)}</h3><figure id="plot-{p.key}"><img alt="{escape(p.title)}" '
            f'src="data:image/png;base64,{data}">{caption}</figure>')


def _flatten(d: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys (three levels); long lists and deeper structures as a count."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v and depth < 2:
            out += _flatten(v, f"{prefix}{k}.", depth + 1)
        elif isinstance(v, dict) and v:
            out.append((f"{prefix}{k}", f"{{{len(v)} fields}}"))
        elif isinstance(v, list) and (len(v) > 8 or any(isinstance(x, (dict, list)) for x in v)):
            out.append((f"{prefix}{k}", f"[{len(v)} items]"))
        elif isinstance(v, str) and len(v) > 160:
            out.append((f"{prefix}{k}", v[:157] + "..."))
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _fleet_table(stage: Stage) -> str:
    rounds = fleet_rounds(stage)
    if not rounds:
        return ""
    cols = ("round", "model_version", "accepted", "rejected", "dropouts", "stragglers", "failed", "examples",
            "bytes_up", "bytes_down")
    present = [c for c in cols if any(c in r for r in rounds)]
    rows = []
    for r in rounds:
        ev = r.get("eval") if isinstance(r.get("eval"), dict) else {}
        rows.append([r.get(c) for c in present] + [ev.get("top1"), ev.get("top3"), r.get("errors") or ""])
    return "<h3>Per on-device round</h3>" + _table([*present, "top-1", "top-3", "errors"], rows, "fleet-rounds")


def _summaries(run: Run) -> str:
    parts = []
    for st in run.stages:
        if not st.summary:
            continue
        name = "summary.json" if st.name == "." else f"{st.name}/summary.json"
        opened = " open" if st.kind in ("demo", "train", "devices", "evaluate") or st.metrics else ""
        parts.append(f'<details{opened}><summary>{escape(name)}</summary>'
                     f'{_table(("field", "value"), _flatten(st.summary), "summary")}'
                     f"{_fleet_table(st) if st.kind == 'devices' else ''}</details>")
    return "".join(parts) or '<p class="note">No summary.json in this run.</p>'


def _config(run: Run) -> str:
    if run.config is None:
        return '<p class="note">No config.json in this run.</p>'
    parts = [_table(("field", "value"), _flatten(run.config), "config")]
    for st in run.stages:  # stage configs that differ from the one shown (e.g. train's own settings)
        if st.config is not None and st.config is not run.config and st.config != run.config:
            diff = [(k, v) for k, v in _flatten(st.config) if dict(_flatten(run.config)).get(k, object()) != v]
            if diff:
                parts.append(f"<details><summary>{escape(st.name)}/config.json differs in {len(diff)} fields"
                             f"</summary>{_table(('field', 'value'), diff)}</details>")
    return "".join(parts)


def render(run: Run, plots: Optional[list[Plot]] = None) -> str:
    """The report page for `run` as one HTML string."""
    plots = all_plots(run) if plots is None else plots
    preset = (run.config or {}).get("preset", "?")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in run.notes)
    stages = ", ".join(st.name for st in run.stages if st.name != ".") or run.kind
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>fedkeys report: {escape(os.path.basename(os.path.abspath(run.root)))}</title><style>{CSS}</style></head>
<body><main>
<h1>fedkeys run report</h1>
<p class="meta">{escape(os.path.abspath(run.root))} &middot; {escape(run.kind)} run, preset {escape(str(preset))}
 &middot; stages: {escape(stages)} &middot; written {now}</p>
{notes}
<h2>Results</h2>
{_results(run)}
<h2>Curves</h2>
{''.join(_figure(p) for p in plots)}
<h2>Final summaries</h2>
{_summaries(run)}
<h2>Resolved config</h2>
{_config(run)}
</main></body></html>
"""


def write_report(run_dir: str, out_path: Optional[str] = None) -> str:
    """Write the report of `run_dir` to `out_path` (default RUN_DIR/report.html); return its path."""
    run = load_run(run_dir)
    path = out_path or os.path.join(run_dir, "report.html")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(run))
    return path
