"""The report's figures, drawn with matplotlib's Agg renderer into PNG bytes.

Each `plot_*` function takes a `report.runs.Run` and returns a `Plot`: the PNG, or no PNG and a
note saying which file or column was missing. Figures are made with `matplotlib.figure.Figure`
directly (no pyplot), so no global backend or figure state is touched.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from matplotlib.figure import Figure

from report.runs import Curve, Run, _finite, fleet_rounds

WIDTH, HEIGHT, DPI = 7.5, 3.4, 100
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
BASELINE_STYLES = ((0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 3)))


@dataclass
class Plot:
    key: str  # stable id used in the HTML (e.g. "accuracy")
    title: str
    png: Optional[bytes]
    note: str = ""  # why there is no plot, or what to read from it


def _png(fig: Figure, rect: tuple[float, float, float, float] | None = None) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout(rect=rect)
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _color(run: Run, curve: Curve) -> str:
    """The same color for a model in every figure."""
    return COLORS[next(i for i, c in enumerate(run.curves) if c is curve) % len(COLORS)]


def _integer_x(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    lo, hi = ax.get_xlim()
    if hi - lo < 2:  # one round: no fractional ticks around it
        mid = (lo + hi) / 2
        ax.set_xlim(mid - 1, mid + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_accuracy(run: Run) -> Plot:
    """Top-1 and top-3 against rounds for every model trained over rounds; baselines as lines."""
    curves = [c for c in run.curves if c.column("top1")[0]]
    if not curves:
        return Plot("accuracy", "Next-word accuracy against rounds", None,
                    "omitted: no metrics.csv with a top1 column in this run")
    fig = Figure(figsize=(WIDTH, HEIGHT + 0.4))
    for i, metric in enumerate(("top1", "top3")):
        ax = fig.add_subplot(1, 2, i + 1)
        for c in curves:
            xs, ys = c.column(metric)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, color=_color(run, c), label=c.label)
        for j, b in enumerate(run.baselines):
            if _finite(b.scores.get(metric)):
                ax.axhline(b.scores[metric], color="0.35", lw=1.2, ls=BASELINE_STYLES[j % len(BASELINE_STYLES)],
                           label=b.label)
        ax.set_title(f"top-{metric[-1]}", fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        _integer_x(ax)
        if i == 0:
            ax.set_ylabel("held-out accuracy")
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return Plot("accuracy", "Next-word accuracy against rounds", _png(fig, rect=(0, 0.1, 1, 1)),
                "held-out users, whole words; horizontal lines are models without rounds")


def _curve_plot(run: Run, key: str, title: str, column: str, ylabel: str, missing: str,
                log: bool = False) -> Plot:
    curves = [c for c in run.curves if c.column(column)[0]]
    if not curves:
        return Plot(key, title, None, missing)
    fig = Figure(figsize=(WIDTH, HEIGHT))
    ax = fig.add_subplot(1, 1, 1)
    for c in curves:
        xs, ys = c.column(column)
        ax.plot(xs, ys, marker="o", ms=3, color=_color(run, c), label=c.label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _integer_x(ax)
    ax.legend(fontsize=8)
    return Plot(key, title, _png(fig))


def plot_perplexity(run: Run) -> Plot:
    return _curve_plot(run, "perplexity", "Perplexity against rounds", "perplexity", "perplexity (log)",
                       "omitted: no perplexity column in this run's metrics.csv", log=True)


def plot_epsilon(run: Run) -> Plot:
    plot = _curve_plot(run, "epsilon", "Privacy spent (epsilon) against rounds", "epsilon", "epsilon",
                       "omitted: no model in this run was trained with differential privacy "
                       "(metrics.csv has no epsilon values)")
    deltas = sorted({r["delta"] for c in run.curves for r in c.rows if _finite(r.get("delta"))})
    if plot.png is not None and deltas:
        plot.note = "at delta " + ", ".join(f"{d:.3g}" for d in deltas)
    return plot


def plot_loss(run: Run) -> Plot:
    return _curve_plot(run, "loss", "Training loss against rounds", "train_loss", "mean client loss",
                       "omitted: no train_loss column in this run's metrics.csv")


def plot_clients(run: Run) -> Plot:
    """Clients selected, reported and dropped per round of each simulated (TFF) run."""
    series = (("selected", "selected"), ("clients", "reported"), ("dropped", "dropped"))
    curves = [c for c in run.curves if any(c.column(col)[0] for col, _ in series)]
    if not curves:
        return Plot("clients", "Clients per round (simulation)", None,
                    "omitted: metrics.csv has no selected / clients / dropped columns")
    fig = Figure(figsize=(WIDTH, HEIGHT))
    ax = fig.add_subplot(1, 1, 1)
    styles = ("-", "--", ":")
    for j, c in enumerate(curves):
        for (col, name), ls in zip(series, styles):
            xs, ys = c.column(col)
            if xs:
                label = name if len(curves) == 1 else f"{c.label}: {name}"
                ax.plot(xs, ys, ls=ls, marker="o", ms=3, color=COLORS[(j * 3 + styles.index(ls)) % len(COLORS)],
                        label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("clients")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _integer_x(ax)
    ax.legend(fontsize=8)
    return Plot("clients", "Clients per round (simulation)", _png(fig),
                "reported = clients whose update went into the average")


def _bars(ax, labels: Sequence[str], stacks: Sequence[tuple[str, Sequence[float]]]) -> None:
    bottom = [0.0] * len(labels)
    x = list(range(len(labels)))
    for j, (name, values) in enumerate(stacks):
        ax.bar(x, values, bottom=bottom, color=COLORS[j % len(COLORS)], label=name, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(x, labels)
    _pad_x(ax, len(labels))


def _pad_x(ax, n: int, slots: int = 6) -> None:
    """Keep bars narrow when there are only a few rounds."""
    pad = max(0.0, (slots - n) / 2)
    ax.set_xlim(-0.5 - pad, n - 0.5 + pad)


def _fleet_labels(rounds: list[dict[str, Any]]) -> list[str]:
    return [str(r.get("round", i)) for i, r in enumerate(rounds)]


def plot_fleet_accuracy(run: Run) -> Plot:
    """Top-1 / top-3 of each model version the collector published, after each on-device round."""
    title = "On-device rounds: accuracy of each published model"
    rounds = [r for r in fleet_rounds(run.fleet) if isinstance(r.get("eval"), dict)
              and _finite(r["eval"].get("top1"))]
    if not rounds:
        return Plot("fleet_accuracy", title, None, "omitted: no devices stage with scored rounds in this run"
                    if run.fleet is None else "omitted: devices/summary.json has no scored rounds")
    start = next((c for c in run.curves if c.stage.name == "train"), None)
    xs = [0] if start is not None else []
    top = {m: ([(start.stage.summary or {}).get("final_eval", {}).get(m)] if start is not None else [])
           for m in ("top1", "top3")}
    for i, r in enumerate(rounds):
        xs.append(i + 1)
        for m in top:
            top[m].append(r["eval"].get(m))
    fig = Figure(figsize=(WIDTH, HEIGHT))
    ax = fig.add_subplot(1, 1, 1)
    for j, m in enumerate(("top1", "top3")):
        pts = [(x, y) for x, y in zip(xs, top[m]) if _finite(y)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, color=COLORS[j],
                    label=f"top-{m[-1]}")
    for j, b in enumerate(run.baselines):
        if _finite(b.scores.get("top1")):
            ax.axhline(b.scores["top1"], color="0.35", lw=1.2, ls=BASELINE_STYLES[j % len(BASELINE_STYLES)],
                       label=f"{b.label} (top-1)")
    ax.set_xlabel("on-device round (0 = the exported TFF model)" if start is not None else "on-device round")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _integer_x(ax)
    ax.legend(fontsize=8)
    return Plot("fleet_accuracy", title, _png(fig), "each point is the model version published after that round")


def plot_fleet_participation(run: Run) -> Plot:
    """Phones per on-device round by outcome: accepted, rejected, dropped out, late."""
    title = "On-device rounds: phones by outcome"
    rounds = fleet_rounds(run.fleet)
    outcomes = (("accepted", "accepted"), ("rejected", "rejected"), ("dropouts", "dropped out"),
                ("stragglers", "late"), ("failed", "failed"))
    present = [(k, name) for k, name in outcomes
               if any(_finite(r.get(k)) for r in rounds) and (k == "accepted" or any(r.get(k) for r in rounds))]
    if not rounds or not present:
        return Plot("fleet_participation", title, None,
                    "omitted: no devices stage in this run" if run.fleet is None
                    else "omitted: devices/summary.json rounds carry no outcome counts")
    fig = Figure(figsize=(WIDTH, HEIGHT))
    ax = fig.add_subplot(1, 1, 1)
    stacks = [(name, [float(r.get(k) or 0) for r in rounds]) for k, name in present]
    _bars(ax, _fleet_labels(rounds), stacks)
    ax.set_ylim(0, 1.35 * max(1.0, max(sum(v) for v in zip(*(vals for _, vals in stacks)))))  # room for the legend
    ax.set_xlabel("server round")
    ax.set_ylabel("phones")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=len(present), loc="upper center")
    return Plot("fleet_participation", title, _png(fig),
                "phones that were turned away at check-in (not selected, not eligible) are not counted")


def _participants(r: dict[str, Any]) -> float:
    return float(sum(r.get(k) or 0 for k in ("accepted", "rejected", "dropouts", "stragglers", "failed")
                     if _finite(r.get(k))))


def plot_fleet_bytes(run: Run) -> Plot:
    """Bytes up and down per participating phone in each on-device round."""
    title = "On-device rounds: bytes per participating phone"
    rounds = [r for r in fleet_rounds(run.fleet) if _finite(r.get("bytes_up")) or _finite(r.get("bytes_down"))]
    if not rounds:
        return Plot("fleet_bytes", title, None, "omitted: no devices stage in this run" if run.fleet is None
                    else "omitted: devices/summary.json rounds carry no bytes_up / bytes_down")
    per: Callable[[dict[str, Any], str], float] = \
        lambda r, k: float(r.get(k) or 0) / 1024 / max(_participants(r), 1.0)  # noqa: E731
    fig = Figure(figsize=(WIDTH, HEIGHT))
    ax = fig.add_subplot(1, 1, 1)
    x = list(range(len(rounds)))
    ax.bar([i - 0.18 for i in x], [per(r, "bytes_down") for r in rounds], width=0.36, color=COLORS[0],
           label="down (model)")
    ax.bar([i + 0.18 for i in x], [per(r, "bytes_up") for r in rounds], width=0.36, color=COLORS[1],
           label="up (update)")
    ax.set_xticks(x, _fleet_labels(rounds))
    _pad_x(ax, len(rounds))
    ax.set_xlabel("server round")
    ax.set_ylabel("KiB per phone")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return Plot("fleet_bytes", title, _png(fig),
                "round totals divided by the phones that were selected (accepted, rejected, dropped, late, failed)")


PLOTS: tuple[Callable[[Run], Plot], ...] = (plot_accuracy, plot_perplexity, plot_epsilon, plot_clients, plot_loss,
                                            plot_fleet_accuracy, plot_fleet_participation, plot_fleet_bytes)


def all_plots(run: Run) -> list[Plot]:
    return [f(run) for f in PLOTS]
