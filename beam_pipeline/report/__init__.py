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

The package: inputs (the four files read and checked, head/tail figures), axes
(low-level matplotlib helpers) and plots (the PNGs), html (report.html and the
CSV); here, write_report, which the curation calls, and main, the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from typing import Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.report.html import render_html, size_csv
from beam_pipeline.report.inputs import ReportError, load_inputs
from beam_pipeline.report.plots import make_plots
from transforms.beam.io import write_atomically


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
        written.append(
            write_atomically(FileSystems.join(directory, "plots", name), lambda handle, png=png: handle.write(png))
        )
    if data["balanced"]:  # E(t) exists only with MetaCLIP balancing
        csv = size_csv(data["figures"].get("size_vs_threshold") or []).encode("utf-8")
        written.append(
            write_atomically(FileSystems.join(directory, "size_vs_threshold.csv"), lambda handle: handle.write(csv))
        )
    page = render_html(data, plots).encode("utf-8")
    written.append(write_atomically(FileSystems.join(directory, "report.html"), lambda handle: handle.write(page)))
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline.report",
        description="Rebuild report.html and plots/ from a curation output directory.",
    )
    parser.add_argument(
        "output_dir", metavar="OUTPUT_DIR", help="a finished curation's --output_dir (local or any Beam filesystem)"
    )
    args = parser.parse_args(argv)
    try:
        written = write_report(args.output_dir)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(written[-1])
    return 0
