"""The report's SemDeDup section: the fraction removed against eps, and the cluster sizes.

From stats.json's `semdedup` alone (runs with --dedup semantic). The curve is exact for every
eps of its grid (docs/dedup.md, "Choosing eps from one run"): a record's largest similarity
to an earlier member does not depend on eps, so one run answers "what would eps = e remove".
"""

from __future__ import annotations

import html

import numpy as np

from beam_pipeline.report.axes import _axes, _figure, _lay_out, _log_scale, png_bytes

_CURVE = "#4c72b0"
_CHOSEN = "#c44e52"


def has_semdedup(stats: dict) -> bool:
    return isinstance(stats.get("semdedup"), dict) and bool(stats["semdedup"].get("eps_curve"))


def plot_eps_curve(stats: dict) -> bytes:
    """Fraction of judged records removed against eps (log x), the run's eps marked."""
    section = stats["semdedup"]
    eps, removed = (np.array(v, dtype=np.float64) for v in zip(*section["eps_curve"], strict=True))
    chosen = float(section["eps"])
    figure = _figure(7.5, 4.0)
    axes = _axes(figure, "SemDeDup: share of records removed against eps")
    axes.plot(eps, 100 * removed, color=_CURVE, marker="o", markersize=3, linewidth=1.5, label="removed")
    at = float(removed[np.flatnonzero(eps == chosen)[0]]) if (eps == chosen).any() else None
    axes.axvline(chosen, color=_CHOSEN, linestyle="--", linewidth=1.2, label=f"this run's eps = {chosen:g}")
    if at is not None:
        axes.plot([chosen], [100 * at], "o", color=_CHOSEN, markersize=6)
    _log_scale(axes, "x")
    axes.set_xlabel("eps (a duplicate: similarity to an earlier member above 1 - eps)")
    axes.set_ylabel("% of judged records removed")
    axes.set_ylim(0, max(1.0, 100 * float(removed.max()) * 1.15))
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", framealpha=0.95)
    _lay_out(figure, axes)
    return png_bytes(figure)


def semdedup_section(stats: dict, image_html: str) -> str:
    """The SemDeDup section of report.html."""
    section = stats["semdedup"]
    sizes = section.get("cluster_sizes") or {}
    removed = (stats.get("deduplicated_by_kind") or {}).get("semantic")
    judged = (stats.get("judged_by_kind") or {}).get("semantic")
    lines = [
        f"Removed <b>{removed:,}</b> of {judged:,} records judged at eps = {section['eps']:g} "
        f"(keep {html.escape(str(section['keep']))})."
        if isinstance(removed, int) and isinstance(judged, int)
        else f"eps = {section['eps']:g}, keep {html.escape(str(section['keep']))}.",
        f"{section['clusters']:,} clusters ({html.escape(str(section['centroids']))} centroids"
        + (f", {section['iterations']} k-means updates" if "iterations" in section else "")
        + f"); sizes min {sizes.get('min')}, median {sizes.get('median')}, p99 {sizes.get('p99')}, "
        f"max {sizes.get('max')}; {section.get('empty_clusters', 0):,} empty.",
        f"{section.get('parts_split', 0):,} clusters over --max_cluster_size {section.get('max_cluster_size')} "
        "were split into parts deduplicated alone (pairs across parts are never compared: "
        "the split only misses duplicates, docs/dedup.md).",
    ]
    rows = "".join(
        f"<tr><td class='n'>{e:.4g}</td><td class='n'>{100 * f:.3f}%</td></tr>" for e, f in section["eps_curve"]
    )
    table = (
        "<details><summary>The curve as a table</summary><table><thead><tr><th class='n'>eps</th>"
        f"<th class='n'>removed</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )
    listed = "".join(f"<p>{line}</p>" for line in lines)
    return f"<h2>SemDeDup (semantic duplicates)</h2>{listed}{image_html}{table}"
