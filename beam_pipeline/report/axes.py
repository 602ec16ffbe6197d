"""Low-level matplotlib helpers for the report's plots: figures without pyplot, margins
fitted once instead of a layout engine, log axes with plain-text labels, minor tick
marks as one artist, and the PNG encoding."""

from __future__ import annotations

import functools
import io
import re

import numpy as np

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
    """The marks of minor ticks at `locations` as one artist, drawn as matplotlib's own
    (the plots have no minor grid)."""
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


def png_bytes(figure) -> bytes:
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
