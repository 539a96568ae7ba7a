"""The benchmark's text table and plot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, float | int) else "-"


#: The table's columns: (header, result key, format, width).
_COLUMNS = (
    ("final_acc", "final_avg_accuracy", ".3f", 9),
    ("forgetting", "forgetting", ".3f", 10),
    ("bwt", "backward_transfer", ".3f", 7),
    ("prequential", "prequential_accuracy", ".3f", 11),
    ("ex/s", "examples_per_second", ".1f", 8),
    ("gap_closure", "gap_closure", ".3f", 11),
)


def _cell(result: Mapping[str, Any], key: str, spec: str) -> str:
    """A figure, with ``±std`` when the result is a mean over seeds."""
    text = _fmt(result.get(key), spec)
    std = result.get("spread", {}).get(key, {}).get("std")
    return f"{text}±{std:{spec}}" if text != "-" and isinstance(std, float | int) else text


def format_table(bench: Mapping[str, Any]) -> str:
    """A short text table of the headline figures per strategy (mean ± std over seeds when
    ``--seeds`` ran more than one)."""
    over_seeds = any("spread" in r for r in bench["results"].values())
    widths = [width + (7 if over_seeds else 0) for _, _, _, width in _COLUMNS]
    head = f"{'strategy':<16} " + " ".join(f"{h:>{w}}" for (h, _, _, _), w in zip(_COLUMNS, widths))
    lines = [head, "-" * len(head)]
    for name, r in bench["results"].items():
        if "error" in r:
            lines.append(f"{name:<16} error: {r['error']}")
            continue
        cells = [_cell(r, key, spec) for _, key, spec, _ in _COLUMNS]
        lines.append(f"{name:<16} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if "seeds" in bench.get("settings", {}):
        lines.append(f"seeds: {bench['settings']['seeds']}; gap closure from the mean accuracies")
    lines += [f"note: {note}" for note in bench.get("notes", [])]
    return "\n".join(lines)


def plot(bench: Mapping[str, Any], path: str | Path) -> None:
    """A PNG of each domain's test accuracy over the stream, one panel per strategy, dashed
    lines at the domain boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(name, r) for name, r in bench["results"].items() if "curve" in r]
    n = max(1, len(runs))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False, sharey=True)
    bounds = [d["boundary"] for d in bench["domains"]]
    for ax, (name, r) in zip(axes.flat, runs):
        xs = r["curve"]["examples"]
        for domain, ys in r["curve"]["accuracy"].items():
            ax.plot(xs, ys, marker="o", markersize=3, label=domain)
        for b in bounds[:-1]:
            ax.axvline(b, color="grey", linestyle="--", linewidth=0.8)
        title = name if r.get("resolved") in (None, name) else f"{name} ({r['resolved']})"
        ax.set_title(f"{title}: final {r['final_avg_accuracy']:.3f}")
        ax.set_xlabel("training examples seen")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.axis("off")
    if runs:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize="small")
    fig.tight_layout(rect=(0, 0.08 if runs else 0, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
