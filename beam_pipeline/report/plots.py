"""The report's plots, one function per PNG, and make_plots, which draws every one the
inputs allow (the matplotlib helpers they share are in axes.py)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from beam_pipeline.report.axes import _axes, _figure, _lay_out, _log_scale, png_bytes
from beam_pipeline.report.dedup import has_eps_curve, plot_eps_curve
from beam_pipeline.report.filters import has_filters, plot_filters
from beam_pipeline.report.funnel import funnel_steps, plot_funnel
from beam_pipeline.report.inputs import head_tail, head_threshold, scalar_threshold
from beam_pipeline.report.selection import has_selection, plot_selection

_BEFORE = "#4c72b0"  # before balancing / all captions
_AFTER = "#dd8452"  # after balancing / kept


def rank_subset(values: np.ndarray, limit: int = 3000) -> np.ndarray:
    """Indices of `values` (sorted, largest first) that draw them over a log rank axis: at most `limit`.

    Every index when there are at most `limit`. Otherwise limit // 3 ranks spread
    evenly on the log scale, the first and last among them, each with the first and
    last index of its run of equal values: a plateau of the counts keeps its exact
    ends, so its steps stay vertical. Runs between two spread ranks, shorter than
    the spacing (1.3% of the rank for 500k entries, under a pixel), are cut across.
    """
    values = np.asarray(values)
    n = len(values)
    if n <= limit:
        return np.arange(n)
    spread = np.unique(np.rint(np.geomspace(1, n, limit // 3)).astype(np.int64) - 1)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    ends = np.append(starts[1:] - 1, n - 1)
    runs = np.searchsorted(starts, spread, side="right") - 1
    return np.unique(np.concatenate((spread, starts[runs], ends[runs])))


def plot_entry_counts(counts: np.ndarray, kept_counts: np.ndarray, threshold: Optional[int]) -> bytes:
    figure = _figure(9.0, 4.6)
    axes = _axes(figure, "Captions per entry, sorted")
    # "before" drawn wider, beneath: in the tail the two curves coincide, and both stay visible.
    curves = (
        (counts, "before balancing (all captions)", _BEFORE, 3.2),
        (kept_counts, "after balancing (kept captions)", _AFTER, 1.4),
    )
    for values, label, color, width in curves:
        ordered = np.sort(values[values > 0])[::-1]
        if len(ordered):
            ranks = rank_subset(ordered)
            axes.plot(
                ranks + 1, ordered[ranks], color=color, label=f"{label}: {len(ordered):,} entries", linewidth=width
            )
    if not counts.any():
        axes.text(0.5, 0.5, "no entry matched any caption", ha="center", va="center", transform=axes.transAxes)
        _lay_out(figure, axes)
        return png_bytes(figure)
    if threshold is not None:
        axes.axhline(threshold, color="#c44e52", linestyle="--", linewidth=1.2, label=f"t = {threshold:,}")
    _log_scale(axes, "x")
    _log_scale(axes, "y")
    axes.set_xlabel("entry rank (by captions, largest first)")
    axes.set_ylabel("captions matching the entry")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper right")
    _lay_out(figure, axes)
    return png_bytes(figure)


def plot_head_tail(shares: dict, threshold: int) -> bytes:
    figure = _figure(9.0, 2.6)
    axes = _axes(figure, f"Matches in head and tail entries (t = {threshold:,})")
    rows = (
        ("after", shares["after_head"], shares["after_total"]),
        ("before", shares["before_head"], shares["before_total"]),
    )
    for y, (_label, head, total) in enumerate(rows):
        head_share = head / total if total else 0.0
        axes.barh(y, head_share, color=_BEFORE, label="head entries (count > t)" if y == 0 else None)
        axes.barh(y, 1 - head_share, left=head_share, color=_AFTER, label="tail entries" if y == 0 else None)
        # Percentages inside the bars, where a bar is wide enough to hold one.
        if total and head_share > 0.07:
            axes.text(
                head_share / 2, y, f"{head_share:.1%}", ha="center", va="center", color="white", fontweight="bold"
            )
        if total and head_share < 0.93:
            axes.text(
                head_share + (1 - head_share) / 2,
                y,
                f"{1 - head_share:.1%}",
                ha="center",
                va="center",
                color="black",
                fontweight="bold",
            )
    axes.set_yticks(
        [0, 1], [f"after\n({shares['after_total']:,} matches)", f"before\n({shares['before_total']:,} matches)"]
    )
    axes.set_xlim(0, 1)
    from matplotlib.ticker import PercentFormatter

    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel("share of entry matches")
    legend = axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    _lay_out(figure, axes, outside=legend)
    return png_bytes(figure)


def _bucket_range(values: Sequence[int], minimum: int, trim_start: bool) -> tuple[int, int]:
    """[start, end) of the buckets worth drawing: up to the last non-empty one (at least
    `minimum` buckets), and from the first non-empty one if `trim_start`."""
    nonzero = np.flatnonzero(np.asarray(values))
    end = min(len(values), max(minimum, int(nonzero[-1]) + 1 if len(nonzero) else 0))
    start = int(nonzero[0]) if trim_start and len(nonzero) else 0
    return start, end


def _label_step(count: int, rotate: bool) -> int:
    """Label every step-th of `count` buckets: rotated labels fit about 20 to a plot; upright
    ones (up to "50+") at most 14, every 1, 2, 5, 10, 20, ... buckets, so they keep clear of each other."""
    if rotate:
        return max(1, count // 20)
    return next(step for step in (m * 10**e for e in range(9) for m in (1, 2, 5)) if count <= 14 * step)


def _bars(axes, x: np.ndarray, heights: np.ndarray, width: float, color: str, label: str) -> None:
    """Bars from 0 up to `heights`, centred on `x`: what axes.bar draws, as one artist.

    axes.bar makes a patch per bar: 102 for the matches histogram took 50 ms to
    make and 15 ms to draw.
    """
    from matplotlib.collections import PolyCollection

    left, right = x - width / 2, x + width / 2
    bottom, top = np.zeros(len(x)), np.asarray(heights, dtype=np.float64)
    corners = np.stack(
        [np.column_stack(corner) for corner in ((left, bottom), (left, top), (right, top), (right, bottom))], axis=1
    )
    bars = PolyCollection(corners, facecolors=color, edgecolors="none", linewidths=0, label=label)
    bars.sticky_edges.y.append(0)  # as axes.bar: on a linear scale the bars stand on the x axis
    axes.add_collection(bars)


def plot_histogram(section: dict, title: str, xlabel: str, min_buckets: int, rotate: bool, trim_start: bool) -> bytes:
    """Captions and kept captions per bucket, side by side, log y."""
    start, end = _bucket_range(section["captions"], min_buckets, trim_start)
    labels = section["labels"][start:end]
    captions = np.asarray(section["captions"][start:end])
    kept = np.asarray(section["kept"][start:end])
    figure = _figure(6.0, 3.8)
    axes = _axes(figure, title)
    x = np.arange(len(labels))
    _bars(axes, x - 0.2, captions, 0.4, _BEFORE, f"all captions ({int(captions.sum()):,})")
    _bars(axes, x + 0.2, kept, 0.4, _AFTER, f"kept ({int(kept.sum()):,})")
    if captions.any():
        _log_scale(axes, "y")
    step = _label_step(len(labels), rotate)
    axes.set_xticks(x[::step], labels[::step], rotation=45 if rotate else 0, ha="right" if rotate else "center")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("captions")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend()
    _lay_out(figure, axes)
    return png_bytes(figure)


def plot_kept_rate(section: dict) -> bytes:
    _start, end = _bucket_range(section["captions"], 2, trim_start=False)
    captions = np.asarray(section["captions"][:end], dtype=np.float64)
    kept = np.asarray(section["kept"][:end], dtype=np.float64)
    present = captions > 0
    x = np.arange(end)
    figure = _figure(6.0, 3.8)
    axes = _axes(figure, "Kept rate per number of matched entries")
    axes.plot(x[present], kept[present] / captions[present], marker="o", color=_AFTER)
    step = _label_step(end, rotate=False)
    axes.set_xticks(x[::step], section["labels"][:end][::step])
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("entries matched by the caption")
    axes.set_ylabel("kept / captions")
    axes.grid(True, alpha=0.3)
    _lay_out(figure, axes)
    return png_bytes(figure)


def plot_size_vs_threshold(
    table: list[dict], threshold: Optional[int], expected_kept: Optional[float], target: Optional[int]
) -> bytes:
    figure = _figure(9.0, 4.4)
    axes = _axes(figure, "Expected subset size versus threshold")
    t = [row["threshold"] for row in table]
    e = [row["expected_kept"] for row in table]
    axes.plot(t, e, marker=".", color=_BEFORE, label="E(t) = sum of keep probabilities")
    if threshold is not None:
        axes.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1.2, label=f"this run: t = {threshold:,}")
        if expected_kept is not None:
            axes.plot([threshold], [expected_kept], marker="o", color="#c44e52", markersize=8)
    if target is not None:
        axes.axhline(target, color="#55a868", linestyle=":", linewidth=1.5, label=f"target size {target:,}")
    if t and min(t) > 0:
        _log_scale(axes, "x")
    from matplotlib.ticker import FuncFormatter

    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    axes.set_xlabel("threshold t")
    axes.set_ylabel("expected captions kept")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower right")
    _lay_out(figure, axes)
    return png_bytes(figure)


def make_plots(data: dict) -> dict[str, bytes]:
    """name -> PNG bytes, for every plot the inputs allow."""
    stats, figures = data["stats"], data["figures"]
    steps = funnel_steps(stats)
    filters = {"funnel.png": plot_funnel(steps)} if steps else {}
    if has_eps_curve(stats):
        filters["semdedup_eps.png"] = plot_eps_curve(stats)
    if has_filters(stats):
        filters["filters.png"] = plot_filters(stats)
    if has_selection(stats):
        filters["selection.png"] = plot_selection(stats)
    if not data.get("balanced", True):
        return filters
    threshold = scalar_threshold(stats)
    chosen = figures.get("chosen") or {}
    plots = {**filters, "entry_counts.png": plot_entry_counts(data["counts"], data["kept_counts"], threshold)}
    if threshold is not None:
        plots["head_tail_share.png"] = plot_head_tail(
            head_tail(data["counts"], data["kept_counts"], head_threshold(data)), threshold
        )
    matches = figures["matches_per_caption"]
    plots["matches_per_caption.png"] = plot_histogram(
        matches, "Entries matched per caption", "entries matched", 11, rotate=False, trim_start=False
    )
    plots["kept_rate_by_matches.png"] = plot_kept_rate(matches)
    plots["caption_length.png"] = plot_histogram(
        figures["caption_length"], "Caption length", "characters", 1, rotate=True, trim_start=True
    )
    if figures.get("size_vs_threshold"):
        plots["size_vs_threshold.png"] = plot_size_vs_threshold(
            figures["size_vs_threshold"], threshold, stats.get("expected_kept"), chosen.get("target_size")
        )
    return plots
