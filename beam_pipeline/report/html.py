"""report.html (inline CSS, the tables of figures, the PNGs as data URIs; render_html)
and size_vs_threshold.csv (size_csv)."""

from __future__ import annotations

import base64
import html

from beam_pipeline.report.dedup import dedup_section, duplicate_examples, has_dedup
from beam_pipeline.report.filters import filter_section, has_filters
from beam_pipeline.report.funnel import funnel_section, funnel_steps
from beam_pipeline.report.inputs import (
    head_tail,
    head_threshold,
    scalar_threshold,
    top_entries,
)
from beam_pipeline.report.selection import has_selection, selection_section
from beam_pipeline.stage_rows import STAGE_ROWS

_CSS = (
    "\n"
    'body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; '
    "color: #222; margin: 0; background: #f6f6f4; }\n"
    "main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }\n"
    "h1 { font-size: 26px; margin: 0 0 4px; }\n"
    "h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }\n"
    "h3 { font-size: 16px; margin: 22px 0 6px; }\n"
    ".sub { color: #666; margin: 0 0 16px; word-break: break-all; }\n"
    ".lead { font-size: 17px; background: #f0f4fa; border-left: 4px solid #4c72b0; padding: 10px 14px; }\n"
    "figure { margin: 12px 0; }\n"
    "figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }\n"
    "figcaption { color: #555; font-size: 13px; margin-top: 4px; }\n"
    ".grid { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }\n"
    "table { border-collapse: collapse; font-size: 14px; margin: 6px 0 12px; }\n"
    "th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }\n"
    "thead th { background: #f3f3f3; border-bottom: 1px solid #ccc; }\n"
    "td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }\n"
    "table.kv th { font-weight: normal; color: #444; }\n"
    "table.examples { width: 100%; table-layout: fixed; }\n"
    "table.examples th:nth-child(1) { width: 14%; } table.examples th:nth-child(2) { width: 9%; }\n"
    "table.examples th:nth-child(3) { width: 27%; }\n"
    "td.text { max-width: 560px; overflow-wrap: anywhere; }\n"
    "td.entries { color: #444; max-width: 240px; overflow-wrap: anywhere; }\n"
    "td.key { max-width: 170px; overflow-wrap: anywhere; font-family: monospace; font-size: 12px; }\n"
    ".wrap { overflow-x: auto; }\n"
    "details summary { cursor: pointer; color: #4c72b0; }\n"
    "table.kv tr.group th { font-weight: 600; color: #222; padding-top: 10px; }\n"
)


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
    return f"<td>{html.escape(str(value))}</td>"


def _run_rows(stats: dict) -> list[tuple[str, object]]:
    """The run's own rows: what was read and rejected, what each filter dropped, what was kept."""
    rows: list[tuple[str, object]] = [("records read", stats.get("records_read"))]
    rows.append(("records rejected", stats.get("records_rejected")))
    reasons = stats.get("rejected_by_reason") or {}
    if reasons:
        rows.append(("rejected by reason", ", ".join(f"{reason}: {count:,}" for reason, count in reasons.items())))
    if stats.get("files_rejected"):
        rows.append(("files rejected", stats["files_rejected"]))
    rows += [(f"filtered: {name}", count) for name, count in (stats.get("filtered_by_filter") or {}).items()]
    rows.append(("records kept", stats.get("records_kept")))
    if "expected_kept" in stats:
        rows.append(("expected kept (sum of keep_prob)", stats["expected_kept"]))
    duplicates = stats.get("duplicate_keys", 0)
    rows.append(("duplicate keys", duplicates))
    if duplicates:
        rows.append(("duplicate key examples", ", ".join(repr(k) for k in stats.get("duplicate_key_examples", []))))
    rows += [
        ("seed", stats.get("seed")),
        ("input files", stats.get("input_files")),
        ("output shards", stats.get("num_shards")),
    ]
    if stats.get("metadata_sha256"):
        rows.append(("metadata SHA-256", stats["metadata_sha256"]))
    return [(name, value) for name, value in rows if value is not None]


def _stats_table(stats: dict) -> str:
    """The run's rows, then each stage's that ran (beam_pipeline.stage_rows), under its title."""
    groups = [("Run", _run_rows(stats))]
    groups += [(stage.title, stage.rows(stats)) for stage in STAGE_ROWS if stage.ran(stats)]
    parts = []
    for title, rows in groups:
        if not rows:
            continue
        parts.append(f'<tr class="group"><th>{html.escape(title)}</th><td></td></tr>')
        parts += [f"<tr><th>{html.escape(str(name))}</th>{_value_cell(value)}</tr>" for name, value in rows]
    return f'<table class="kv" id="run-figures">{"".join(parts)}</table>'


def _img(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _top_table(rows: list[dict]) -> str:
    body = "".join(
        f'<tr><td class="n">{rank}</td><td class="entry">{html.escape(row["entry"])}</td>'
        f'<td class="n">{_n(row["count"])}</td>'
        f'<td class="n">{_n(row["kept"])}</td><td class="n">{row["p_e"]:.4f}</td></tr>'
        for rank, row in enumerate(rows, 1)
    )
    head = (
        '<thead><tr><th class="n">#</th><th>entry</th><th class="n">captions</th><th class="n">kept</th>'
        '<th class="n">p_e = t / count</th></tr></thead>'
    )
    return f'<table id="top-entries">{head}<tbody>{body}</tbody></table>'


def _examples_table(kind: str, rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    body = "".join(
        f'<tr><td class="key">{html.escape(row["key"])}</td><td class="n">{row["keep_prob"]:.4f}</td>'
        f'<td class="entries">{html.escape(", ".join(row["entries"])) or "&mdash;"}</td>'
        f'<td class="text">{html.escape(row["text"])}</td></tr>'
        for row in rows
    )
    head = '<thead><tr><th>key</th><th class="n">keep_prob</th><th>matched entries</th><th>caption</th></tr></thead>'
    return f'<div class="wrap"><table class="examples" id="examples-{kind}">{head}<tbody>{body}</tbody></table></div>'


def _languages_table(stats: dict) -> str:
    """metaclip2: each language's t (English's is --threshold), with its records."""
    records = stats.get("records_by_language") or {}
    body = "".join(
        f'<tr><td>{html.escape(language)}</td><td class="n">{_n(t)}</td>'
        f'<td class="n">{_n(records.get(language, {}).get("accepted", 0))}</td>'
        f'<td class="n">{_n(records.get(language, {}).get("kept", 0))}</td></tr>'
        for language, t in sorted(stats["thresholds_by_language"].items())
    )
    head = (
        '<thead><tr><th>language</th><th class="n">t</th><th class="n">records</th><th class="n">kept</th></tr></thead>'
    )
    return (
        '<h3>t per language</h3><p class="sub">'
        f"English keeps t = {_n(stats.get('threshold'))}; every other language the t "
        f'whose tail share is closest to English\'s.</p><table id="languages">{head}<tbody>{body}</tbody></table>'
    )


def _size_table(table: list[dict]) -> str:
    body = "".join(
        f'<tr><td class="n">{_n(row["threshold"])}</td><td class="n">{_n(float(row["expected_kept"]))}</td></tr>'
        for row in table
    )
    return (
        '<table id="size-table"><thead><tr><th class="n">t</th><th class="n">expected kept</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _share_text(shares: dict) -> str:
    def share(head, total):
        return f"{head / total:.1%}" if total else "n/a"

    return (
        f'<p id="head-share">Head entries held <b>{share(shares["before_head"], shares["before_total"])}</b> '
        "of all entry matches "
        f"before balancing ({_n(shares['before_head'])} of {_n(shares['before_total'])}) and "
        f"<b>{share(shares['after_head'], shares['after_total'])}</b> after "
        f"({_n(shares['after_head'])} of {_n(shares['after_total'])}).</p>"
    )


def _run_title(stats: dict) -> str:
    if stats.get("balance") == "none":
        return "filters " + ", ".join(stats.get("filters") or []) + ", no balancing"
    return f"t = {stats.get('threshold')}, seed {stats.get('seed')}"


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
        f"<title>Curation report ({html.escape(_run_title(stats))})</title><style>{_CSS}</style></head><body><main>",
        "<h1>Curation report</h1>",
        f'<p class="sub">metadata sha256 {html.escape(str(stats.get("metadata_sha256", ""))[:12])}, '
        f"{_n(stats.get('input_files'))} input files</p>"
        if data.get("balanced", True)
        else f'<p class="sub">{_n(stats.get("input_files"))} input files</p>',
    ]
    if isinstance(read, int) and isinstance(kept, int):
        rate = f" ({kept / read:.1%})" if read else ""
        t_text = f" at t = {threshold:,}" if threshold is not None else ""
        parts.append(f'<p class="lead">Kept <b>{kept:,}</b> of <b>{read:,}</b> records read{rate}{t_text}.')
        if chosen.get("target_size") is not None:
            parts.append(
                f" t was chosen for a target size of {_n(chosen['target_size'])} "
                f"(expected {_n(chosen.get('expected_kept'))})."
            )
        parts.append("</p>")
    steps = funnel_steps(stats)
    if steps:
        caption = "Records left after each stage (green) and those the stage took (red), from stats.json's accounting."
        parts.append(funnel_section(steps, _img("funnel.png", plots["funnel.png"], caption)))
    parts += ["<h2>Run figures</h2>", '<p class="sub">From stats.json.</p>', _stats_table(stats)]
    for applies, section in STAGE_SECTIONS:
        if applies(data):
            parts += section(data, plots)
    parts.append("</main></body></html>\n")
    return "".join(parts)


def _dedup_section(data: dict, plots: dict[str, bytes]) -> list[str]:
    stats = data["stats"]
    examples = duplicate_examples(data["output_dir"], stats["deduplicated_by_kind"])
    curve = ""
    if "semdedup_eps.png" in plots:
        caption = (
            "Fraction of the records SemDeDup judged that it would remove at each eps, from each record's largest "
            "similarity to an earlier member of its cluster (which does not depend on eps); the run's eps marked."
        )
        curve = _img("semdedup_eps.png", plots["semdedup_eps.png"], caption)
    return [dedup_section(stats, examples, curve)]


def _filters_section(data: dict, plots: dict[str, bytes]) -> list[str]:
    caption = "Records each filter dropped, and the records that passed them all."
    return [filter_section(data["stats"], _img("filters.png", plots["filters.png"], caption))]


def _selection_section(data: dict, plots: dict[str, bytes]) -> list[str]:
    caption = "Records per pseudo-class that reached the selection, and those it kept."
    return [selection_section(data["stats"], _img("selection.png", plots["selection.png"], caption))]


def _no_balancing_section(data: dict, plots: dict[str, bytes]) -> list[str]:
    return ["<p>No MetaCLIP balancing in this run (--balance none): every record the filters pass is kept.</p>"]


def _balancing_sections(data: dict, plots: dict[str, bytes]) -> list[str]:
    """MetaCLIP balancing's sections: entry counts, head and tail, captions, E(t), examples."""
    stats, figures = data["stats"], data["figures"]
    threshold = scalar_threshold(stats)
    parts: list[str] = []
    parts.append("<h2>Balancing</h2>")
    parts.append(
        _img(
            "entry_counts.png",
            plots["entry_counts.png"],
            "Captions per entry before (all) and after (kept) balancing, each sorted largest first; "
            "the dashed line is t. Head entries are cut to about t, the tail is untouched.",
        )
    )
    if threshold is not None:
        head_t = head_threshold(data)
        if stats.get("thresholds_by_language"):
            parts.append(_languages_table(stats))
        shares = head_tail(data["counts"], data["kept_counts"], head_t)
        parts.append(_share_text(shares))
        parts.append(
            _img(
                "head_tail_share.png",
                plots["head_tail_share.png"],
                "Share of (caption, entry) matches in head entries (count > t before balancing) and in tail entries.",
            )
        )
        rows = top_entries(data["entries"], data["counts"], data["kept_counts"], head_t)
        parts.append(f"<h3>Top head entries ({len(rows)} of {int((data['counts'] > head_t).sum()):,} over t)</h3>")
        parts.append(
            _top_table(rows) if rows else "<p>No entry has more than t captions: nothing was sampled down.</p>"
        )
    else:
        parts.append("<p>stats.json has no single threshold; head and tail figures are left out.</p>")

    parts.append('<h2>Captions</h2><div class="grid">')
    parts.append(
        _img(
            "matches_per_caption.png",
            plots["matches_per_caption.png"],
            "Entries matched per caption (log scale); captions with no match are never kept.",
        )
    )
    parts.append(
        _img(
            "kept_rate_by_matches.png",
            plots["kept_rate_by_matches.png"],
            "Share of captions kept, by how many entries they match: more entries, more chances to hit a tail entry.",
        )
    )
    parts.append(_img("caption_length.png", plots["caption_length.png"], "Caption length in characters (log scale)."))
    parts.append("</div>")

    table = figures.get("size_vs_threshold") or []
    if table:
        parts.append("<h2>Subset size versus threshold</h2>")
        parts.append(
            _img(
                "size_vs_threshold.png",
                plots["size_vs_threshold.png"],
                "E(t): expected captions kept for each t, exact from the match index (size_vs_threshold.csv).",
            )
        )
        parts.append(f"<details><summary>Table: {len(table)} thresholds</summary>{_size_table(table)}</details>")

    parts.append("<h2>Examples</h2>")
    examples = figures.get("examples") or {}
    for kind, title in (
        ("kept", "Kept"),
        ("dropped", "Dropped by the draw (matched)"),
        ("unmatched", "Not matched (never kept)"),
    ):
        if kind in examples:
            parts.append(f"<h3>{title}</h3>{_examples_table(kind, examples[kind])}")
    return parts


def _balanced(data: dict) -> bool:
    return data.get("balanced", True)


# Each stage's sections of report.html, in the chain's order (beam_pipeline/stages/__init__.py):
# whether the run's files show the stage ran, and its sections from them (the report reads
# files only). The uid lists and --where have theirs in the funnel and the filters section.
STAGE_SECTIONS = (
    (lambda data: has_dedup(data["stats"]), _dedup_section),
    (lambda data: has_filters(data["stats"]), _filters_section),
    (_balanced, _balancing_sections),
    (lambda data: not _balanced(data), _no_balancing_section),
    (lambda data: has_selection(data["stats"]), _selection_section),
)


def size_csv(table: list[dict]) -> str:
    return "threshold,expected_kept\n" + "".join(
        f"{int(row['threshold'])},{float(row['expected_kept'])!r}\n" for row in table
    )
