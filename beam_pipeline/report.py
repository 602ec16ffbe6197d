"""The curation report: plots and a self-contained report.html, from an output directory.

    python -m beam_pipeline.report OUTPUT_DIR

reads stats.json, entry_counts.json, entry_counts_kept.json and figures.json
(local or any Beam filesystem, e.g. gs://) and writes, beside them:

- plots/*.png: sorted entry counts before/after balancing with the line at t,
  head/tail share of matches, matches per caption, kept rate per number of
  matches, caption length, expected subset size versus t;
- size_vs_threshold.csv: threshold,expected_kept;
- report.html: one file that opens offline, the PNGs embedded as data URIs,
  inline CSS, no script and nothing fetched.

Nothing is recomputed from the captions: every figure comes from those four
files, so the report can be rebuilt at any time without rerunning the curation.
A missing input file is a one-line error naming it (exit status 2).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gc
import html
import io
import itertools
import json
import re
import sys
from typing import Optional, Sequence

import numpy as np
import orjson
from apache_beam.io.filesystems import FileSystems

from transforms.beam.io import write_atomically

INPUTS = ("stats.json", "entry_counts.json", "entry_counts_kept.json", "figures.json")
TOP_ENTRIES = 30
_BEFORE = "#4c72b0"  # before balancing / all captions
_AFTER = "#dd8452"  # after balancing / kept

# stats.json figures shown first, in this order, with these labels; any other
# key (later additions, per-language thresholds, ...) follows under its own name.
_STAT_LABELS = (
    ("records_read", "records read"),
    ("records_accepted", "records accepted"),
    ("records_rejected", "records rejected"),
    ("rejected_by_reason", "rejected by reason"),
    ("files_rejected", "files rejected"),
    ("records_matched", "records matched (>= 1 entry)"),
    ("records_kept", "records kept"),
    ("expected_kept", "expected kept (sum of keep_prob)"),
    ("entry_matches", "entry matches (caption, entry pairs)"),
    ("entries", "metadata entries"),
    ("entries_matched", "entries matched"),
    ("entries_over_threshold", "head entries (count > t)"),
    ("matches_in_head_entries", "matches in head entries"),
    ("duplicate_keys", "duplicate keys"),
    ("duplicate_key_examples", "duplicate key examples"),
    ("threshold", "threshold t"),
    ("seed", "seed"),
    ("input_files", "input files"),
    ("num_shards", "output shards"),
    ("metadata_sha256", "metadata SHA-256"),
)


class ReportError(Exception):
    """An output directory the report cannot be built from; the message is one line."""


# ---------------------------------------------------------------- inputs


def _read_json(output_dir: str, name: str):
    path = FileSystems.join(output_dir, name)
    if not FileSystems.exists(path):
        hint = " (a run from before the report existed lacks it: rerun the curation)" if name != "stats.json" else " (not a finished curation run)"
        raise ReportError(f"{path} is missing{hint}")
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        raw = handle.read()
    try:
        # orjson: an entry count file of 500k pairs parses in 0.16 s, not the json
        # module's 0.35 s. What orjson refuses (NaN, integers over 64 bits, invalid
        # JSON) goes to the json module, which accepts what it always did and words the error.
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} is not valid JSON: {error}") from None


def load_inputs(output_dir: str) -> dict:
    """The four input documents, checked for the shape the report relies on."""
    output_dir = output_dir.rstrip("/") or "/"
    docs = {name: _read_json(output_dir, name) for name in INPUTS}
    for name in INPUTS:
        if not isinstance(docs[name], dict):
            raise ReportError(f"{FileSystems.join(output_dir, name)} must hold a JSON object")
    before, after = docs["entry_counts.json"], docs["entry_counts_kept.json"]
    entry_t = None
    if before and all(isinstance(value, dict) for value in before.values()):
        # --mode metaclip2: {language: {entry: count}}; entries shown as "language:entry",
        # each with its language's t. Compared and counted language by language: new
        # dicts keyed "language:entry" doubled the time to load 500k entries.
        by_language = docs["stats.json"].get("thresholds_by_language") or {}
        default_t = docs["stats.json"].get("threshold", 0)
        entry_t = np.repeat(np.array([by_language.get(language, default_t) for language in before], dtype=np.int64),
                            [len(entries) for entries in before.values()])
        same = list(before) == list(after) and all(
            isinstance(after[language], dict) and list(entries) == list(after[language]) for language, entries in before.items()
        )
        entries = [f"{language}:{entry}" for language, language_entries in before.items() for entry in language_entries]
        counts, kept_counts = (itertools.chain.from_iterable(value.values() for value in document.values()) for document in (before, after))
    else:
        entries = list(before)
        same = entries == list(after)  # one list comparison in C, not a Python loop over 500k keys
        counts, kept_counts = before.values(), after.values()
    if not same:
        raise ReportError("entry_counts_kept.json does not list the same entries, in the same order, as entry_counts.json")
    return {
        "output_dir": output_dir,
        "stats": docs["stats.json"],
        "entries": entries,
        "counts": np.fromiter(counts, dtype=np.int64, count=len(entries)),
        "kept_counts": np.fromiter(kept_counts, dtype=np.int64, count=len(entries)),
        "figures": docs["figures.json"],
        "entry_t": entry_t,
    }


def head_threshold(data: dict):
    """What 'head' means: count > t, with one t, or (metaclip2) each entry's language's t."""
    return data["entry_t"] if data.get("entry_t") is not None else scalar_threshold(data["stats"])


def scalar_threshold(stats: dict) -> Optional[int]:
    """The run's single t, or None when stats.json has none (e.g. per-language thresholds)."""
    value = stats.get("threshold")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def head_tail(counts: np.ndarray, kept_counts: np.ndarray, threshold: int) -> dict:
    """Matches in head entries (count > t before balancing) and in the rest, before and after."""
    head = counts > threshold
    return {
        "before_head": int(counts[head].sum()),
        "before_total": int(counts.sum()),
        "after_head": int(kept_counts[head].sum()),
        "after_total": int(kept_counts.sum()),
    }


def top_entries(entries: Sequence[str], counts: np.ndarray, kept_counts: np.ndarray, threshold: int, limit: int = TOP_ENTRIES) -> list[dict]:
    """The largest head entries (count > t), ties in metadata order, with kept count and p_e."""
    entry_t = np.broadcast_to(np.asarray(threshold), counts.shape)  # one t, or one per entry
    order = np.flatnonzero(counts > entry_t)
    order = order[np.argsort(-counts[order], kind="stable")][:limit]
    return [
        {"entry": entries[i], "count": int(counts[i]), "kept": int(kept_counts[i]), "p_e": int(entry_t[i]) / int(counts[i])}
        for i in order.tolist()
    ]


# ---------------------------------------------------------------- plots

_DPI = 110
_PAD = 3 / 72  # inches left between the outermost text and the figure's edge (constrained layout's pad)


def _figure(width: float, height: float):
    # Figure + Agg canvas directly, not pyplot: no global state, no GUI backend.
    # matplotlib is imported here, not at the top, so that importing this module
    # (e.g. from the curate command) costs nothing until a report is drawn.
    # No layout engine: constrained layout measured every artist twice before each
    # draw, a third of the report's time; _fit_margins measures what varies, once.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _axes(figure, title: str):
    axes = figure.add_subplot()
    # An explicit y, where the default already puts it: otherwise every draw measures
    # the y axis once more to lift the title over top tick labels, which no plot here has.
    axes.set_title(title, y=1.0)
    return axes


def _lay_out(figure, axes, outside=None) -> None:
    """Every plot's last step: unlabelled minor ticks as marks, margins fitted (see _fit_margins)."""
    minor = _take_unlabelled_minor_ticks(axes)  # before measuring, which would make their tick objects
    _fit_margins(figure, axes, outside)
    for axis, locator in minor:
        _add_minor_marks(axes, axis, locator())  # where the ticks fall with the axes placed


def _take_unlabelled_minor_ticks(axes) -> list:
    """Turn off the minor ticks of axes' log axes where none has a label; return [(axis, its minor locator)].

    That is a log axis over two decades or more: matplotlib labels none of its minor
    ticks, yet makes an object per tick (three lines, two texts) and updates each
    several times a draw: 160 ticks in the report, 0.15 s. A shorter log axis
    labels some, and keeps its own ticks.
    """
    from matplotlib.ticker import NullLocator

    taken = []
    for axis in (axes.xaxis, axes.yaxis):
        locator = axis.get_minor_locator()
        if axis.get_scale() == "log" and not any(axis.get_minor_formatter().format_ticks(locator())):
            axis.set_minor_locator(NullLocator())
            taken.append((axis, locator))
    return taken


def _add_minor_marks(axes, axis, locations: np.ndarray) -> None:
    """The marks of minor ticks at `locations` as one artist, drawn as matplotlib's own (the plots have no minor grid)."""
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.markers import TICKDOWN, TICKLEFT

    name = axis.axis_name
    zeros = np.zeros(len(locations))
    marks = Line2D(
        *((locations, zeros) if name == "x" else (zeros, locations)),
        transform=axes.get_xaxis_transform("tick1") if name == "x" else axes.get_yaxis_transform("tick1"),
        linestyle="none",
        marker=TICKDOWN if name == "x" else TICKLEFT,  # ticks pointing out, as by default
        markersize=matplotlib.rcParams[f"{name}tick.minor.size"],
        markeredgewidth=matplotlib.rcParams[f"{name}tick.minor.width"],
        color=matplotlib.rcParams[f"{name}tick.color"],
        zorder=axis.get_zorder(),
        clip_on=False,
    )
    axes.add_artist(marks)


def _fit_margins(figure, axes, outside=None) -> None:
    """Margins just wide enough for what is drawn around the axes: constrained layout's result, measured once.

    Above, the title; below, the x axis' tick labels and label; left, the y
    axis'; right, `outside` (an artist right of the axes, such as a legend)
    and any tick label running over the right end. Each is measured from the
    axes' edge, which does not change it, except the y tick labels: which ticks
    there are depends on the axes' height, so they are measured once it is final.
    """
    renderer = figure.canvas.get_renderer()
    width, height = figure.get_size_inches() * figure.dpi  # pixels, like the boxes
    pad = _PAD * figure.dpi
    figure.subplots_adjust(left=0.1, right=0.9, bottom=0.15, top=0.9)  # provisional
    x_box = axes.xaxis.get_tightbbox(renderer)
    above = axes.title.get_window_extent(renderer).y1 - axes.bbox.y1
    figure.subplots_adjust(bottom=(axes.bbox.y0 - x_box.y0 + pad) / height, top=1 - (above + pad) / height)
    left = max(axes.bbox.x0 - axes.yaxis.get_tightbbox(renderer).x0, axes.bbox.x0 - x_box.x0, 0) + pad
    right = max(x_box.x1 - axes.bbox.x1, 0) + pad
    for _ in range(2):  # twice: an outside legend anchored at a fraction of the axes' width moves with it
        if outside is not None:
            right = max(right, outside.get_window_extent(renderer).x1 - axes.bbox.x1 + pad)
        figure.subplots_adjust(left=left / width, right=1 - right / width)


_SUPERSCRIPTS = str.maketrans("0123456789−", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def plain_log_label(label: str) -> str:
    """matplotlib's log tick label in plain text: '$\\mathdefault{2\\times10^{4}}$' -> '2×10⁴'.

    Any other label (one this does not know how to write) is returned as it is.
    """
    match = re.fullmatch(r"\$\\mathdefault\{(.*)\}\$", label)
    if not match:
        return label
    body = match.group(1).replace(r"\times", "×").replace("-", "−")  # mathtext's minus sign
    plain = re.sub(r"\^\{(−?\d+)\}", lambda power: power.group(1).translate(_SUPERSCRIPTS), body)
    return label if any(mark in plain for mark in "\\^{}$") else plain


@functools.cache
def _log_ticking():
    """(formatter, locator) classes for log axes, made on first use: they subclass matplotlib's."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return plain_log_label(super().__call__(x, pos))

    class InViewLogLocator(LogLocator):
        # LogLocator adds a decade of ticks beyond each end of the axis, and matplotlib
        # makes each tick (three lines, two texts) only to leave it undrawn: a fifth of
        # the ticks of a log axis.
        def tick_values(self, vmin, vmax):
            ticks = super().tick_values(vmin, vmax)
            low, high = sorted((vmin, vmax))
            return ticks[(ticks >= low * (1 - 1e-9)) & (ticks <= high * (1 + 1e-9))]

    return PlainLogFormatter, InViewLogLocator


def _log_scale(axes, name: str) -> None:
    """Log scale on axes' x or y axis (`name`): matplotlib's ticks, labels in plain text.

    matplotlib writes the labels in mathtext ($10^{4}$), whose parser takes 0.2 s
    to start and 4 ms a label, a quarter of the report's drawing; '10⁴' in the
    same font reads the same.
    """
    getattr(axes, f"set_{name}scale")("log")
    axis = getattr(axes, f"{name}axis")
    formatter, locator = _log_ticking()
    # What matplotlib's log scale sets (scale.LogScale.set_default_locators_and_formatters).
    axis.set_major_locator(locator(10))
    axis.set_major_formatter(formatter(10))
    axis.set_minor_locator(locator(10, None))
    axis.set_minor_formatter(formatter(10, labelOnlyBase=False))


def _png(figure) -> bytes:
    from PIL import Image

    figure.canvas.draw()
    # RGB, not savefig's RGBA: the figures are opaque, and without the alpha channel
    # the PNGs are 10% smaller and faster to compress; zlib level 3 takes 40% less
    # time than the default 6 for 5% more bytes. No text chunks (software, date):
    # the same figures give the same bytes.
    image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3])
    buffer = io.BytesIO()
    image.save(buffer, format="png", dpi=(figure.dpi, figure.dpi), compress_level=3)
    return buffer.getvalue()


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
    curves = ((counts, "before balancing (all captions)", _BEFORE, 3.2), (kept_counts, "after balancing (kept captions)", _AFTER, 1.4))
    for values, label, color, width in curves:
        ordered = np.sort(values[values > 0])[::-1]
        if len(ordered):
            ranks = rank_subset(ordered)
            axes.plot(ranks + 1, ordered[ranks], color=color, label=f"{label}: {len(ordered):,} entries", linewidth=width)
    if not counts.any():
        axes.text(0.5, 0.5, "no entry matched any caption", ha="center", va="center", transform=axes.transAxes)
        _lay_out(figure, axes)
        return _png(figure)
    if threshold is not None:
        axes.axhline(threshold, color="#c44e52", linestyle="--", linewidth=1.2, label=f"t = {threshold:,}")
    _log_scale(axes, "x")
    _log_scale(axes, "y")
    axes.set_xlabel("entry rank (by captions, largest first)")
    axes.set_ylabel("captions matching the entry")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper right")
    _lay_out(figure, axes)
    return _png(figure)


def plot_head_tail(shares: dict, threshold: int) -> bytes:
    figure = _figure(9.0, 2.6)
    axes = _axes(figure, f"Matches in head and tail entries (t = {threshold:,})")
    rows = (("after", shares["after_head"], shares["after_total"]), ("before", shares["before_head"], shares["before_total"]))
    for y, (_label, head, total) in enumerate(rows):
        head_share = head / total if total else 0.0
        axes.barh(y, head_share, color=_BEFORE, label="head entries (count > t)" if y == 0 else None)
        axes.barh(y, 1 - head_share, left=head_share, color=_AFTER, label="tail entries" if y == 0 else None)
        # Percentages inside the bars, where a bar is wide enough to hold one.
        if total and head_share > 0.07:
            axes.text(head_share / 2, y, f"{head_share:.1%}", ha="center", va="center", color="white", fontweight="bold")
        if total and head_share < 0.93:
            axes.text(head_share + (1 - head_share) / 2, y, f"{1 - head_share:.1%}", ha="center", va="center", color="black", fontweight="bold")
    axes.set_yticks([0, 1], [f"after\n({shares['after_total']:,} matches)", f"before\n({shares['before_total']:,} matches)"])
    axes.set_xlim(0, 1)
    from matplotlib.ticker import PercentFormatter

    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel("share of entry matches")
    legend = axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    _lay_out(figure, axes, outside=legend)
    return _png(figure)


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
    corners = np.stack([np.column_stack(corner) for corner in ((left, bottom), (left, top), (right, top), (right, bottom))], axis=1)
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
    return _png(figure)


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
    return _png(figure)


def plot_size_vs_threshold(table: list[dict], threshold: Optional[int], expected_kept: Optional[float], target: Optional[int]) -> bytes:
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
    return _png(figure)


def make_plots(data: dict) -> dict[str, bytes]:
    """name -> PNG bytes, for every plot the inputs allow."""
    stats, figures = data["stats"], data["figures"]
    threshold = scalar_threshold(stats)
    chosen = figures.get("chosen") or {}
    plots = {"entry_counts.png": plot_entry_counts(data["counts"], data["kept_counts"], threshold)}
    if threshold is not None:
        plots["head_tail_share.png"] = plot_head_tail(head_tail(data["counts"], data["kept_counts"], head_threshold(data)), threshold)
    matches = figures["matches_per_caption"]
    plots["matches_per_caption.png"] = plot_histogram(matches, "Entries matched per caption", "entries matched", 11, rotate=False, trim_start=False)
    plots["kept_rate_by_matches.png"] = plot_kept_rate(matches)
    plots["caption_length.png"] = plot_histogram(figures["caption_length"], "Caption length", "characters", 1, rotate=True, trim_start=True)
    if figures.get("size_vs_threshold"):
        plots["size_vs_threshold.png"] = plot_size_vs_threshold(
            figures["size_vs_threshold"], threshold, stats.get("expected_kept"), chosen.get("target_size")
        )
    return plots


# ---------------------------------------------------------------- html

_CSS = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222; margin: 0; background: #f6f6f4; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 22px 0 6px; }
.sub { color: #666; margin: 0 0 16px; word-break: break-all; }
.lead { font-size: 17px; background: #f0f4fa; border-left: 4px solid #4c72b0; padding: 10px 14px; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
table { border-collapse: collapse; font-size: 14px; margin: 6px 0 12px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; border-bottom: 1px solid #ccc; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { font-weight: normal; color: #444; }
table.examples { width: 100%; table-layout: fixed; }
table.examples th:nth-child(1) { width: 14%; } table.examples th:nth-child(2) { width: 9%; }
table.examples th:nth-child(3) { width: 27%; }
td.text { max-width: 560px; overflow-wrap: anywhere; }
td.entries { color: #444; max-width: 240px; overflow-wrap: anywhere; }
td.key { max-width: 170px; overflow-wrap: anywhere; font-family: monospace; font-size: 12px; }
.wrap { overflow-x: auto; }
details summary { cursor: pointer; color: #4c72b0; }
"""


def _n(value) -> str:
    """Integers with thousands separators; floats with 3 decimals."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def _value_cell(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="n">{_n(value)}</td>'
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {_n(v)}" for k, v in value.items()) or "none"
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value[:10]) + (f", ... ({len(value)} in all)" if len(value) > 10 else "") if value else "none"
    else:
        text = str(value)
    return f"<td>{html.escape(text)}</td>"


def _stats_table(stats: dict) -> str:
    known = dict(_STAT_LABELS)
    keys = [key for key, _ in _STAT_LABELS if key in stats] + [key for key in stats if key not in known]
    rows = "".join(
        f'<tr id="stat-{html.escape(key)}"><th>{html.escape(known.get(key, key))}</th>{_value_cell(stats[key])}</tr>' for key in keys
    )
    return f'<table class="kv" id="run-figures">{rows}</table>'


def _img(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _top_table(rows: list[dict]) -> str:
    body = "".join(
        f'<tr><td class="n">{rank}</td><td class="entry">{html.escape(row["entry"])}</td><td class="n">{_n(row["count"])}</td>'
        f'<td class="n">{_n(row["kept"])}</td><td class="n">{row["p_e"]:.4f}</td></tr>'
        for rank, row in enumerate(rows, 1)
    )
    head = '<thead><tr><th class="n">#</th><th>entry</th><th class="n">captions</th><th class="n">kept</th><th class="n">p_e = t / count</th></tr></thead>'
    return f'<table id="top-entries">{head}<tbody>{body}</tbody></table>'


def _examples_table(kind: str, rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    body = "".join(
        f'<tr><td class="key">{html.escape(row["key"])}</td><td class="n">{row["keep_prob"]:.4f}</td>'
        f'<td class="entries">{html.escape(", ".join(row["entries"])) or "&mdash;"}</td><td class="text">{html.escape(row["text"])}</td></tr>'
        for row in rows
    )
    head = '<thead><tr><th>key</th><th class="n">keep_prob</th><th>matched entries</th><th>caption</th></tr></thead>'
    return f'<div class="wrap"><table class="examples" id="examples-{kind}">{head}<tbody>{body}</tbody></table></div>'


def _languages_table(stats: dict) -> str:
    """metaclip2: each language's t (English's is --threshold), with its records."""
    records = stats.get("records_by_language") or {}
    body = "".join(
        f'<tr><td>{html.escape(language)}</td><td class="n">{_n(t)}</td>'
        f'<td class="n">{_n(records.get(language, {}).get("accepted", 0))}</td><td class="n">{_n(records.get(language, {}).get("kept", 0))}</td></tr>'
        for language, t in sorted(stats["thresholds_by_language"].items())
    )
    head = '<thead><tr><th>language</th><th class="n">t</th><th class="n">records</th><th class="n">kept</th></tr></thead>'
    return (f'<h3>t per language</h3><p class="sub">English keeps t = {_n(stats.get("threshold"))}; every other language the t '
            f'whose tail share is closest to English\'s.</p><table id="languages">{head}<tbody>{body}</tbody></table>')


def _size_table(table: list[dict]) -> str:
    body = "".join(f'<tr><td class="n">{_n(row["threshold"])}</td><td class="n">{_n(float(row["expected_kept"]))}</td></tr>' for row in table)
    return f'<table id="size-table"><thead><tr><th class="n">t</th><th class="n">expected kept</th></tr></thead><tbody>{body}</tbody></table>'


def _share_text(shares: dict) -> str:
    def share(head, total):
        return f"{head / total:.1%}" if total else "n/a"

    return (
        f'<p id="head-share">Head entries held <b>{share(shares["before_head"], shares["before_total"])}</b> of all entry matches '
        f'before balancing ({_n(shares["before_head"])} of {_n(shares["before_total"])}) and '
        f'<b>{share(shares["after_head"], shares["after_total"])}</b> after ({_n(shares["after_head"])} of {_n(shares["after_total"])}).</p>'
    )


def render_html(data: dict, plots: dict[str, bytes]) -> str:
    """report.html: self-contained (data URIs, inline CSS), no script."""
    stats, figures = data["stats"], data["figures"]
    threshold = scalar_threshold(stats)
    chosen = figures.get("chosen") or {}
    read, kept = stats.get("records_read"), stats.get("records_kept")
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No path in the page: a run's outputs are the same bytes wherever they are written.
        f"<title>Curation report (t = {stats.get('threshold')}, seed {stats.get('seed')})</title><style>{_CSS}</style></head><body><main>",
        "<h1>Curation report</h1>",
        f'<p class="sub">metadata sha256 {html.escape(str(stats.get("metadata_sha256", ""))[:12])}, {_n(stats.get("input_files"))} input files</p>',
    ]
    if isinstance(read, int) and isinstance(kept, int):
        rate = f" ({kept / read:.1%})" if read else ""
        t_text = f" at t = {threshold:,}" if threshold is not None else ""
        parts.append(f'<p class="lead">Kept <b>{kept:,}</b> of <b>{read:,}</b> records read{rate}{t_text}.')
        if chosen.get("target_size") is not None:
            parts.append(f" t was chosen for a target size of {_n(chosen['target_size'])} (expected {_n(chosen.get('expected_kept'))}).")
        parts.append("</p>")
    parts += ["<h2>Run figures</h2>", '<p class="sub">From stats.json.</p>', _stats_table(stats)]

    parts.append("<h2>Balancing</h2>")
    parts.append(_img("entry_counts.png", plots["entry_counts.png"], "Captions per entry before (all) and after (kept) balancing, each sorted largest first; the dashed line is t. Head entries are cut to about t, the tail is untouched."))
    if threshold is not None:
        head_t = head_threshold(data)
        if stats.get("thresholds_by_language"):
            parts.append(_languages_table(stats))
        shares = head_tail(data["counts"], data["kept_counts"], head_t)
        parts.append(_share_text(shares))
        parts.append(_img("head_tail_share.png", plots["head_tail_share.png"], "Share of (caption, entry) matches in head entries (count > t before balancing) and in tail entries."))
        rows = top_entries(data["entries"], data["counts"], data["kept_counts"], head_t)
        parts.append(f"<h3>Top head entries ({len(rows)} of {int((data['counts'] > head_t).sum()):,} over t)</h3>")
        parts.append(_top_table(rows) if rows else "<p>No entry has more than t captions: nothing was sampled down.</p>")
    else:
        parts.append("<p>stats.json has no single threshold; head and tail figures are left out.</p>")

    parts.append("<h2>Captions</h2><div class=\"grid\">")
    parts.append(_img("matches_per_caption.png", plots["matches_per_caption.png"], "Entries matched per caption (log scale); captions with no match are never kept."))
    parts.append(_img("kept_rate_by_matches.png", plots["kept_rate_by_matches.png"], "Share of captions kept, by how many entries they match: more entries, more chances to hit a tail entry."))
    parts.append(_img("caption_length.png", plots["caption_length.png"], "Caption length in characters (log scale)."))
    parts.append("</div>")

    table = figures.get("size_vs_threshold") or []
    if table:
        parts.append("<h2>Subset size versus threshold</h2>")
        parts.append(_img("size_vs_threshold.png", plots["size_vs_threshold.png"], "E(t): expected captions kept for each t, exact from the match index (size_vs_threshold.csv)."))
        parts.append(f"<details><summary>Table: {len(table)} thresholds</summary>{_size_table(table)}</details>")

    parts.append("<h2>Examples</h2>")
    examples = figures.get("examples") or {}
    for kind, title in (("kept", "Kept"), ("dropped", "Dropped by the draw (matched)"), ("unmatched", "Not matched (never kept)")):
        if kind in examples:
            parts.append(f"<h3>{title}</h3>{_examples_table(kind, examples[kind])}")
    parts.append("</main></body></html>\n")
    return "".join(parts)


def size_csv(table: list[dict]) -> str:
    return "threshold,expected_kept\n" + "".join(f"{int(row['threshold'])},{float(row['expected_kept'])!r}\n" for row in table)


# ---------------------------------------------------------------- entry points


@contextlib.contextmanager
def _collector_paused():
    """No cyclic garbage collection inside: the report allocates a million objects
    (entry names, matplotlib artists), and the collections this sets off walk every
    object of the process, a whole pipeline's when the curation calls this, to free
    a few figures. 0.1 s of 1.5 s on the 1M-caption run. Collection resumes after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_collector_paused()
def write_report(output_dir: str) -> list[str]:
    """Write plots/*.png, size_vs_threshold.csv and report.html into `output_dir`; return their paths."""
    data = load_inputs(output_dir)
    directory = data["output_dir"]
    plots = make_plots(data)
    written = []
    for name, png in plots.items():
        written.append(write_atomically(FileSystems.join(directory, "plots", name), lambda handle, png=png: handle.write(png)))
    csv = size_csv(data["figures"].get("size_vs_threshold") or []).encode("utf-8")
    written.append(write_atomically(FileSystems.join(directory, "size_vs_threshold.csv"), lambda handle: handle.write(csv)))
    page = render_html(data, plots).encode("utf-8")
    written.append(write_atomically(FileSystems.join(directory, "report.html"), lambda handle: handle.write(page)))
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.report", description="Rebuild report.html and plots/ from a curation output directory.")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="a finished curation's --output_dir (local or any Beam filesystem)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.output_dir)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(written[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
