"""The report's Dedup section: records each kind removed, a few caption pairs, SemDeDup's figures.

From stats.json (`deduplicated_by_kind`, `judged_by_kind`, `semdedup`) and the first rows of
duplicates/ (its `caption` and `duplicate_of_caption` columns: docs/dedup.md, "Running it").
With `semdedup.eps_curve` ([[eps, fraction removed], ...], one run's per-record scores
read at every eps of a log grid), the curve is drawn with the run's eps marked.
"""

from __future__ import annotations

import html

import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.report.axes import _axes, _figure, _lay_out, _log_scale, png_bytes

EXAMPLES_PER_KIND = 3
_SHARDS_READ = 8  # duplicates/ shards looked at for examples (their first row group each)
_CURVE = "#4c72b0"
_CHOSEN = "#c44e52"


def has_dedup(stats: dict) -> bool:
    return isinstance(stats.get("deduplicated_by_kind"), dict)


def has_eps_curve(stats: dict) -> bool:
    semdedup = stats.get("semdedup")
    return isinstance(semdedup, dict) and bool(semdedup.get("eps_curve"))


def plot_eps_curve(stats: dict) -> bytes:
    """The fraction of the judged records SemDeDup removes at each eps (log x, 1e-4 .. 0.2), the run's eps marked."""
    semdedup = stats["semdedup"]
    curve = np.asarray(semdedup["eps_curve"], dtype=np.float64).reshape(-1, 2)
    eps, removed = curve[:, 0], curve[:, 1]
    figure = _figure(7.5, 4.0)
    axes = _axes(figure, "SemDeDup: fraction removed against eps (from one run's scores)")
    axes.plot(eps, removed, color=_CURVE, marker="o", markersize=3, label="removed at eps")
    marker = eps_marker(curve, semdedup.get("eps"))
    if marker is not None:
        chosen, at = marker
        axes.axvline(chosen, color=_CHOSEN, linestyle="--", linewidth=1)
        axes.plot([chosen], [at], marker="o", color=_CHOSEN, label=f"this run: eps {chosen:g}, {at:.1%} removed")
    _log_scale(axes, "x")
    axes.set_xlim(1e-4, 0.2)
    axes.set_ylim(0, max(0.05, float(removed.max()) * 1.15) if len(removed) else 1)
    axes.set_xlabel("eps (a duplicate: similarity > 1 - eps)")
    axes.set_ylabel("fraction of judged records removed")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", framealpha=0.95)
    _lay_out(figure, axes)
    return png_bytes(figure)


def eps_marker(curve, eps):
    """(eps, fraction removed there) for the run's eps on the curve (interpolated in log eps), or None."""
    curve = np.asarray(curve, dtype=np.float64).reshape(-1, 2)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0 or not len(curve):
        return None
    return eps, float(np.interp(np.log(eps), np.log(curve[:, 0]), curve[:, 1]))


def duplicate_examples(output_dir: str, kinds, per_kind: int = EXAMPLES_PER_KIND) -> dict:
    """{kind: [(caption, duplicate_of_caption, key, duplicate_of)]}: the first rows of duplicates/
    of each kind (its shards in order, the first row group of at most a few): no more is read."""
    found: dict = {kind: [] for kind in kinds}
    try:
        paths = sorted(
            m.path for m in FileSystems.match([FileSystems.join(output_dir, "duplicates", "part-*")])[0].metadata_list
        )
    except Exception:  # noqa: BLE001 - no duplicates/ (an older run): no examples
        return found
    for path in paths[:_SHARDS_READ]:
        with FileSystems.open(path) as handle:
            shard = pq.ParquetFile(handle)
            if shard.metadata.num_row_groups == 0:
                continue
            columns = [
                c
                for c in ("key", "kind", "duplicate_of", "caption", "duplicate_of_caption")
                if c in shard.schema_arrow.names
            ]
            for row in shard.read_row_group(0, columns=columns).to_pylist():
                listed = found.setdefault(row["kind"], [])
                if len(listed) < per_kind:
                    listed.append(
                        (row.get("caption"), row.get("duplicate_of_caption"), row["key"], row["duplicate_of"])
                    )
        if all(len(listed) >= per_kind for listed in found.values()):
            break
    return found


def _text(value) -> str:
    return "<i>-</i>" if value is None else html.escape(str(value))


def dedup_section(stats: dict, examples: dict, curve_html: str) -> str:
    """The Dedup section of report.html."""
    removed = stats["deduplicated_by_kind"]
    judged = stats.get("judged_by_kind", {})
    read = stats.get("records_read") or 0
    rows = "".join(
        f"<tr><td>{html.escape(kind)}</td><td class='n'>{judged.get(kind, 0):,}</td><td class='n'>{count:,}</td>"
        f"<td class='n'>{(count / read if read else 0):.1%}</td></tr>"
        for kind, count in removed.items()
    )
    table = (
        "<table><thead><tr><th>kind (in the order run)</th><th class='n'>judged</th><th class='n'>removed</th>"
        f"<th class='n'>of records read</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    parts = [
        "<h2>Dedup</h2>",
        f"<p>Removed <b>{stats.get('records_deduplicated', 0):,}</b> duplicates before any other stage; each kind "
        "judged the survivors of the one before. Every removed record is in duplicates/ with the key it "
        "duplicates.</p>",
        table,
    ]
    semdedup = stats.get("semdedup")
    if isinstance(semdedup, dict):
        parts.append(_semdedup_table(semdedup))
    parts.append(curve_html)
    pairs = "".join(
        f"<tr><td>{html.escape(kind)}</td><td>{_text(caption)}</td><td>{_text(original)}</td>"
        f"<td><code>{_text(key)}</code></td><td><code>{_text(of)}</code></td></tr>"
        for kind, listed in examples.items()
        for caption, original, key, of in listed
    )
    if pairs:
        parts.append(
            "<h3>Examples</h3><table><thead><tr><th>kind</th><th>removed record's caption</th>"
            "<th>caption of the record it duplicates</th><th>key</th><th>duplicate of</th></tr></thead>"
            f"<tbody>{pairs}</tbody></table>"
        )
    return "".join(parts)


def _semdedup_table(semdedup: dict) -> str:
    """SemDeDup's settings and cluster figures: its scalars, and the cluster size summary's values."""
    rows = []
    for name, value in semdedup.items():
        if name == "eps_curve":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_number(v)}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(_number(v) for v in value[:12]) + (" ..." if len(value) > 12 else "")
        else:
            value = _number(value)
        rows.append(f"<tr><td>{html.escape(name.replace('_', ' '))}</td><td>{html.escape(value)}</td></tr>")
    return f"<h3>SemDeDup</h3><table><tbody>{''.join(rows)}</tbody></table>"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.6g}"
