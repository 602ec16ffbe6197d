"""The report's top: where the records went, stage by stage, as one picture and a table.

From stats.json alone: its `accounting` (read, rejected, one count per stage fate in the
chain's order, kept; transforms/core/accounting.py) and `filtered_by_filter` (the records
each filter dropped, the first it failed), which splits the `filtered` fate filter by
filter. Each step takes its records from what is left after the steps before it, so the
last step leaves the records kept.
"""

from __future__ import annotations

import html
from typing import NamedTuple, Optional

import numpy as np

from beam_pipeline.report.axes import _axes, _figure, _lay_out, png_bytes

_LEFT = "#55a868"
_DROPPED = "#c44e52"

# The accounting's fate names as the funnel says them; a fate not listed shows under its own name.
FATE_LABELS = {
    "rejected": "rejected (bad input)",
    "filtered": "filtered",
    "balanced_out": "balancing (MetaCLIP draw)",
    "not_image_pick": "per image (another text of the image, or its pick drawn out)",
    "not_selected": "selection (not selected)",
    "deduplicated": "deduplication",
}


class Step(NamedTuple):
    label: str
    dropped: int  # the records this step took
    left: int  # the records left after it


def funnel_steps(stats: dict) -> Optional[list[Step]]:
    """read, rejected, each dedup kind and each filter (or their fate whole), each later fate, kept;
    None without `accounting`."""
    accounting = stats.get("accounting")
    if not isinstance(accounting, dict):
        return None
    left = accounting["read"]
    steps = [Step("read", 0, left)]
    by_filter = stats.get("filtered_by_filter") or {}
    for fate, count in accounting.items():
        if fate in ("read", "kept"):
            continue
        by_kind = stats.get("deduplicated_by_kind") or {}
        if fate == "filtered" and by_filter and sum(by_filter.values()) == count:
            parts = [(f"filter: {name}", dropped) for name, dropped in by_filter.items()]
        elif fate == "deduplicated" and by_kind and sum(by_kind.values()) == count:
            parts = [(f"dedup: {kind}", dropped) for kind, dropped in by_kind.items()]
        else:
            parts = [(FATE_LABELS.get(fate, fate), count)]
        if fate == "not_selected" and stats.get("balance") == "none":
            steps.append(Step("balancing: none", 0, left))
        for label, dropped in parts:
            left -= dropped
            steps.append(Step(label, dropped, left))
    if stats.get("balance") == "none" and not any(step.label == "balancing: none" for step in steps):
        steps.append(Step("balancing: none", 0, left))
    steps.append(Step("kept", 0, accounting["kept"]))
    return steps


def plot_funnel(steps: list[Step]) -> bytes:
    """One bar a step: the records left after it (green), and those it took (red) beside them."""
    names = [step.label for step in steps]
    left = np.array([step.left for step in steps], dtype=np.int64)
    dropped = np.array([step.dropped for step in steps], dtype=np.int64)
    figure = _figure(8.0, 0.9 + 0.42 * len(steps))
    axes = _axes(figure, "Where the records went, stage by stage")
    y = np.arange(len(steps))[::-1]
    axes.barh(y, left, color=_LEFT, label="records left")
    axes.barh(y, dropped, left=left, color=_DROPPED, label="taken by the step")
    for position, step in zip(y, steps, strict=True):
        text = f" {step.left:,}" + (f"  (−{step.dropped:,})" if step.dropped else "")
        axes.text(step.left + step.dropped, position, text, va="center", fontsize=9)
    axes.set_yticks(y, names)
    axes.set_xlabel("records")
    axes.set_xlim(0, max(1, int((left + dropped).max())) * 1.32)
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(loc="lower right", framealpha=0.95, fontsize=9)
    _lay_out(figure, axes)
    return png_bytes(figure)


def funnel_section(steps: list[Step], image_html: str) -> str:
    """The report's first section: the picture, then the same numbers as a table."""
    read = steps[0].left
    rows = "".join(
        f'<tr><td>{html.escape(step.label)}</td><td class="n">{"" if not step.dropped else f"{step.dropped:,}"}</td>'
        f'<td class="n">{step.left:,}</td><td class="n">{(step.left / read if read else 0):.1%}</td></tr>'
        for step in steps
    )
    table = (
        '<table id="funnel"><thead><tr><th>step</th><th class="n">records taken</th>'
        f'<th class="n">records left</th><th class="n">of read</th></tr></thead><tbody>{rows}</tbody></table>'
    )
    return f'<h2 id="where-records-went">Where the records went</h2>{image_html}{table}'
