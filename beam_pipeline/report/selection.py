"""The report's selection section: per-class sizes and selections, the objective, the alignment.

From stats.json's `selection` alone (runs with --select covariance).
"""

from __future__ import annotations

import numpy as np

from beam_pipeline.report.axes import _axes, _figure, _lay_out, _log_scale, png_bytes

_POOL = "#4c72b0"
_SELECTED = "#dd8452"
_SHOWN = 60  # classes drawn: the largest ones


def has_selection(stats: dict) -> bool:
    return isinstance(stats.get("selection"), dict)


def plot_selection(stats: dict) -> bytes:
    """Bars per pseudo-class, largest first: records that reached the stage, and those selected."""
    rows = sorted(stats["selection"]["per_class"], key=lambda row: (-row["size"], row["class"]))[:_SHOWN]
    sizes = np.array([row["size"] for row in rows], dtype=np.int64)
    selected = np.array([row["selected"] for row in rows], dtype=np.int64)
    figure = _figure(9.0, 4.2)
    more = len(stats["selection"]["per_class"]) - len(rows)
    title = "Records per pseudo-class: in the stage and selected" + (f" (largest {len(rows)})" if more > 0 else "")
    axes = _axes(figure, title)
    x = np.arange(len(rows))
    axes.bar(x - 0.2, sizes, 0.4, color=_POOL, label=f"reached the stage ({int(sizes.sum()):,})")
    axes.bar(x + 0.2, selected, 0.4, color=_SELECTED, label=f"selected ({int(selected.sum()):,})")
    if len(rows) and sizes.max() > 20 * max(1, sizes.min()):
        _log_scale(axes, "y")
    elif len(rows):
        axes.set_ylim(0, sizes.max() * 1.25)  # room for the legend above the bars
    step = max(1, len(rows) // 20)
    axes.set_xticks(x[::step], [str(row["class"]) for row in rows][::step])
    axes.set_xlabel("class")
    axes.set_ylabel("records")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper right", framealpha=0.95)
    _lay_out(figure, axes)
    return png_bytes(figure)


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def selection_section(stats: dict, image_html: str) -> str:
    """The Selection section of report.html."""
    selection = stats["selection"]
    lines = [
        f"Selected <b>{selection['records_selected']:,}</b> of {selection['records_in']:,} records "
        f"(fraction {selection['fraction']}) in {selection['classes']} pseudo-classes.",
        f"Objective reached: {_number(selection.get('objective_ratio'))} of its maximum per class "
        f"(1 means each class's selection has exactly the class's mean cross-covariance); over the whole "
        f"pool: {_number(selection.get('pool_objective_ratio'))}.",
        f"Mean image-caption cosine: {_number(selection.get('mean_cosine_before'))} before, "
        f"{_number(selection.get('mean_cosine_after'))} after. The objective measures representativeness, "
        "not alignment: combine with --filter clip_score to favour well-aligned pairs.",
    ]
    rows = "".join(
        f"<tr><td class='n'>{row['class']}</td><td class='n'>{row['size']:,}</td><td class='n'>{row['budget']:,}</td>"
        f"<td class='n'>{row['selected']:,}</td><td class='n'>{row['parts']}</td>"
        f"<td class='n'>{_number(row['objective'] / row['objective_max'] if row['objective_max'] else None)}</td></tr>"
        for row in selection["per_class"]
    )
    table = (
        "<details><summary>Per class</summary><table><thead><tr><th class='n'>class</th><th class='n'>size</th>"
        "<th class='n'>budget</th><th class='n'>selected</th><th class='n'>parts</th>"
        f"<th class='n'>objective / max</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )
    listed = "".join(f"<p>{line}</p>" for line in lines)
    return f"<h2>Selection (cross-covariance)</h2>{listed}{image_html}{table}"
