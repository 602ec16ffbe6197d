"""The report's filter section: records each DataComp filter dropped, as a plot and a table.

From stats.json alone (filtered_by_filter, records_read, clip_score_threshold, lid_model),
for runs with --filter; with --balance none it is the whole report besides the run figures.
"""

from __future__ import annotations

import html

import numpy as np

from beam_pipeline.report.axes import _axes, _figure, _lay_out, png_bytes

_DROPPED = "#c44e52"


def has_filters(stats: dict) -> bool:
    return isinstance(stats.get("filtered_by_filter"), dict)


def plot_filters(stats: dict) -> bytes:
    """Horizontal bars: records dropped by each filter (the first it fails), and the records kept."""
    dropped = stats["filtered_by_filter"]
    names = list(dropped) + ["reached the next stage"]
    values = np.array(list(dropped.values()) + [stats.get("records_accepted", 0)], dtype=np.int64)
    figure = _figure(7.5, 0.9 + 0.45 * len(names))
    axes = _axes(figure, "Records per filter (each counted at the first filter it fails)")
    y = np.arange(len(names))[::-1]
    colors = [_DROPPED] * len(dropped) + ["#55a868"]
    axes.barh(y, values, color=colors)
    for position, value in zip(y, values.tolist(), strict=True):
        axes.text(value, position, f" {value:,}", va="center", fontsize=9)
    axes.set_yticks(y, names)
    axes.set_xlabel("records")
    axes.set_xlim(0, max(1, int(values.max())) * 1.18)
    axes.grid(True, axis="x", alpha=0.3)
    _lay_out(figure, axes)
    return png_bytes(figure)


def filter_section(stats: dict, image_html: str) -> str:
    """The Filters section of report.html: the figure, a table, the threshold and the LID model."""
    read = stats.get("records_read") or 0
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='n'>{count:,}</td>"
        f"<td class='n'>{(count / read if read else 0):.1%}</td></tr>"
        for name, count in stats["filtered_by_filter"].items()
    )
    table = (
        "<table><thead><tr><th>filter</th><th class='n'>dropped (first failed)</th>"
        f"<th class='n'>of records read</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    notes = []
    if "clip_score_threshold" in stats:
        threshold = stats["clip_score_threshold"]
        field = html.escape(str(stats.get("clip_score_field", "")))
        shown = "none: nothing passes" if threshold is None else f"{threshold:.6g}"
        notes.append(f"CLIP-score threshold on {field}: {shown}")
    model = stats.get("lid_model")
    if model:
        approximate = (
            " (the bundled lid.176.ftz, an approximation of DataComp's lid.176.bin)" if model.get("approximate") else ""
        )
        notes.append(f"language ID: {html.escape(str(model.get('name')))}{approximate}")
    listed = "".join(f"<li>{note}</li>" for note in notes)
    return f"<h2>Filters</h2>{image_html}{table}<ul>{listed}</ul>"
