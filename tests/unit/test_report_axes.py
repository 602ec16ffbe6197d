"""The report's drawing helpers: the rank curve's subset of points, plain log labels, minor tick marks."""

from __future__ import annotations

import numpy as np
import pytest


def _zipf_counts(n: int, seed: int) -> np.ndarray:
    """Sorted (largest first) integer counts with a Zipf head and long runs of ties in the tail."""
    rng = np.random.default_rng(seed)
    counts = np.floor(2e5 / np.arange(1, n + 1) ** rng.uniform(0.8, 1.2)).astype(np.int64) + rng.integers(0, 2, n)
    return np.sort(counts)[::-1]


@pytest.mark.parametrize("n, limit, seed", [(500_000, 3000, 0), (200_000, 3000, 1), (50_000, 600, 2), (3001, 3000, 3)])
def test_rank_subset_draws_the_same_curve_with_at_most_limit_points(n, limit, seed):
    from beam_pipeline.report.plots import rank_subset

    values = _zipf_counts(n, seed)
    kept = rank_subset(values, limit)
    assert len(kept) <= limit and kept[0] == 0 and kept[-1] == n - 1
    assert np.all(np.diff(kept) > 0)  # increasing: the curve is drawn left to right
    # Runs of equal values: each run that has a kept index keeps both its ends (exact plateaus, vertical steps).
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    ends = np.append(starts[1:] - 1, n - 1)
    run = np.searchsorted(starts, kept, side="right") - 1
    assert set(starts[run]) <= set(kept) and set(ends[run]) <= set(kept)
    # Between two kept indices the line is exact (same run, or adjacent ranks) or spans less than one
    # spacing of the log grid: under a pixel across the plot.
    spacing = n ** (1 / (limit // 3 - 1))
    for a, b in zip(kept[:-1].tolist(), kept[1:].tolist(), strict=True):
        assert values[a] == values[b] or b == a + 1 or b + 1 <= (a + 1) * spacing + 1, (a, b)
    # So every run longer than the spacing is drawn with both ends exact.
    long_runs = (ends + 1) >= (starts + 1) * spacing + 1
    assert set(starts[long_runs]) <= set(kept) and set(ends[long_runs]) <= set(kept)


def test_rank_subset_keeps_every_index_up_to_the_limit():
    from beam_pipeline.report.plots import rank_subset

    assert rank_subset(np.array([5, 5, 3]), 3).tolist() == [0, 1, 2]
    assert rank_subset(np.array([], dtype=np.int64)).tolist() == []
    # A step curve with few steps keeps each step's exact corners.
    values = np.repeat([900, 400, 100, 7], [10, 1000, 100_000, 300_000])
    kept = rank_subset(values, 300)
    changes = np.flatnonzero(values[1:] != values[:-1])
    assert set(changes) | set(changes + 1) <= set(kept.tolist()) and len(kept) <= 300


def test_plain_log_labels_read_as_matplotlibs():
    from beam_pipeline.report.axes import plain_log_label

    assert plain_log_label(r"$\mathdefault{10^{4}}$") == "10⁴"
    assert plain_log_label(r"$\mathdefault{10^{0}}$") == "10⁰"
    assert plain_log_label(r"$\mathdefault{10^{-12}}$") == "10⁻¹²"
    assert plain_log_label(r"$\mathdefault{2\times10^{3}}$") == "2×10³"
    assert plain_log_label("") == ""
    # What it does not know how to write stays mathtext.
    assert plain_log_label(r"$\mathdefault{10^{2.50}}$") == r"$\mathdefault{10^{2.50}}$"


def test_minor_ticks_become_marks_only_where_matplotlib_labels_none():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from beam_pipeline.report.axes import _log_scale, _take_unlabelled_minor_ticks

    figure = Figure()
    FigureCanvasAgg(figure)
    wide, narrow = figure.subplots(1, 2)
    wide.plot([1, 2e4], [1, 2e4])
    narrow.plot([1, 2e4], [200, 900])  # y within one decade: matplotlib labels some minor ticks
    for axes in (wide, narrow):
        _log_scale(axes, "x")
        _log_scale(axes, "y")
    assert [axis.axis_name for axis, _locator in _take_unlabelled_minor_ticks(wide)] == ["x", "y"]
    assert [axis.axis_name for axis, _locator in _take_unlabelled_minor_ticks(narrow)] == ["x"]
    assert any(narrow.yaxis.get_minor_formatter().format_ticks(narrow.yaxis.get_minorticklocs()))
