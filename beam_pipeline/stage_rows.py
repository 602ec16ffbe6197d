"""Each stage's rows of figures, formatted from stats.json alone: no Beam, nothing but the dict.

A stage's `summary_rows` (the table a local run prints) returns its function here, and the
report's "Run figures" table (beam_pipeline/report) shows the same rows under the stage's
name, found through `STAGE_ROWS`: the report reads files only, so it cannot ask the
configured stages (their modules import Beam). A new stage with figures worth a line adds
its function and a line to `STAGE_ROWS`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

Rows = list[tuple[str, object]]


def datacomp_filter_rows(stats: dict) -> Rows:
    """--filter: the CLIP-score threshold it found, the language-ID model it used."""
    rows: Rows = []
    if "clip_score_threshold" in stats:
        threshold = stats["clip_score_threshold"]
        rows.append(("clip score threshold", "none (nothing kept)" if threshold is None else f"{threshold:.6g}"))
    model = stats.get("lid_model")
    if model:
        approximate = " (bundled approximation of lid.176.bin)" if model["approximate"] else ""
        rows.append(("language ID", model["name"] + approximate))
    return rows


def metaclip_rows(stats: dict) -> Rows:
    """--balance metaclip: matches, kept, entries, head entries (and the chosen t, each language's)."""
    per_language = bool(stats.get("thresholds_by_language"))
    rows: Rows = [
        ("matched (>= 1 entry)", stats["records_matched"]),
        ("kept", stats["records_kept"]),
        ("entries matched", f"{stats['entries_matched']} of {stats['entries']}"),
        (
            "head entries (count > their language's t)"
            if per_language
            else f"head entries (count > {stats['threshold']})",
            stats["entries_over_threshold"],
        ),
    ]
    if stats.get("target_size") is not None:
        rows.insert(
            0,
            (
                f"t chosen for --target_size {stats['target_size']:,}",
                f"{stats['threshold']:,} (expected size {stats['expected_kept']:,.0f})",
            ),
        )
    if per_language:
        shown = sorted(stats["thresholds_by_language"].items(), key=lambda item: item[0] != "en")[:8]
        more = len(stats["thresholds_by_language"]) - len(shown)
        listed = ", ".join(f"{lang} {t}" for lang, t in shown)
        rows.append(("t per language", listed + (f", ... ({more} more in stats.json)" if more > 0 else "")))
    return rows


def metaclip_report_rows(stats: dict) -> Rows:
    """The report's rows of MetaCLIP balancing: t, then the summary's rows with the match figures beside them."""
    threshold = stats.get("threshold")
    if isinstance(threshold, dict):
        threshold = ", ".join(f"{language}: {t:,}" for language, t in threshold.items())
    rows: Rows = [("mode", stats.get("mode")), ("threshold t", threshold)]
    if "records_matched" in stats:
        rows += [row for row in metaclip_rows(stats) if row[0] != "kept"]  # kept: the run's row
    rows += [
        ("entry matches (caption, entry pairs)", stats.get("entry_matches")),
        ("matches in head entries", stats.get("matches_in_head_entries")),
    ]
    return [(name, value) for name, value in rows if value is not None]


def no_balancing_rows(stats: dict) -> Rows:
    return [("balancing", "none: every record that reaches it is kept")]


def selection_rows(stats: dict) -> Rows:
    """--select covariance: how many it selected, the objective, the image-caption cosines."""
    selection = stats["selection"]
    ratio = selection.get("objective_ratio")
    before, after = selection.get("mean_cosine_before"), selection.get("mean_cosine_after")
    return [
        (
            "selected (covariance)",
            f"{selection['records_selected']:,} of {selection['records_in']:,} in {selection['classes']} classes",
        ),
        ("objective reached", "-" if ratio is None else f"{ratio:.4f} of its maximum"),
        ("image-caption cosine", _cosines(before, after)),
    ]


def _cosines(before, after) -> str:
    """The mean image-caption cosine before and after; None where there were no records (after: none selected)."""
    if before is None:
        return "-"
    return f"{before:.4f} before, " + ("- after (none selected)" if after is None else f"{after:.4f} after")


def uid_list_rows(flag: str) -> Callable[[dict], Rows]:
    def rows(stats: dict) -> Rows:
        listed = stats[flag]
        return [(f"--{flag}", f"{listed['file']} ({listed['listed']:,} listed)")]

    return rows


def where_rows(stats: dict) -> Rows:
    return [("--where", condition) for condition in stats["where"]]


def dedup_rows(stats: dict) -> Rows:
    """--dedup: a row per kind (removed of judged), then SemDeDup's eps and clusters when it ran."""
    judged = stats.get("judged_by_kind", {})
    rows: Rows = []
    for kind, removed in stats["deduplicated_by_kind"].items():
        of = f" of {judged[kind]:,} judged" if kind in judged else ""
        rows.append((f"deduplicated ({kind})", f"{removed:,}{of}"))
    semdedup = stats.get("semdedup")
    if isinstance(semdedup, dict):
        clusters = semdedup.get("clusters")
        centroids = semdedup.get("centroids", "")
        rows.append(("SemDeDup eps, keep", f"{semdedup.get('eps')}, {semdedup.get('keep', '-')}"))
        rows.append(("SemDeDup clusters", f"{clusters:,} ({centroids})" if isinstance(clusters, int) else "-"))
        largest = semdedup.get("largest_cluster")
        if largest is not None:
            rows.append(("largest cluster", f"{largest:,} (parts split: {semdedup.get('parts_split', 0):,})"))
    return rows


class StageRows(NamedTuple):
    """A stage's rows in the report: its title, whether stats.json shows it ran, its rows."""

    title: str
    ran: Callable[[dict], bool]
    rows: Callable[[dict], Rows]


# In the chain's order (beam_pipeline/stages/__init__.py).
def extra_texts_rows(stats: dict) -> Rows:
    """--extra_text_fields / --extra_texts: records given more texts; keys of no record, keys listed twice."""
    rows: Rows = [
        ("records with extra texts", stats["records_with_extra_texts"]),
        ("extra texts", stats["extra_texts"]),
    ]
    if "extra_texts_lines" in stats:
        rows += [
            ("extra-texts lines (files)", f"{stats['extra_texts_lines']:,} ({stats['extra_texts_files']})"),
            ("records joined to extra texts", stats["records_with_joined_texts"]),
            ("extra-texts keys not in the pool", stats["extra_texts_keys_not_in_pool"]),
            ("extra-texts keys listed twice (later ones unused)", stats["extra_texts_keys_listed_twice"]),
        ]
    return rows


def per_image_rows(stats: dict) -> Rows:
    """--per_image: images read, matched and kept, and how many captions an image had."""
    sizes = stats.get("captions_per_image", {})
    shown = ", ".join(f"{size}: {images:,}" for size, images in list(sizes.items())[:8])
    more = f" (+{len(sizes) - 8} larger sizes)" if len(sizes) > 8 else ""
    return [
        ("images (url keys)", stats["images_read"]),
        ("images matched", stats["images_matched"]),
        ("images kept", stats["images_kept"]),
        ("captions per image: images", shown + more),
    ]


STAGE_ROWS: tuple[StageRows, ...] = (
    StageRows("Extra texts", lambda stats: "records_with_extra_texts" in stats, extra_texts_rows),
    StageRows("Dedup", lambda stats: isinstance(stats.get("deduplicated_by_kind"), dict), dedup_rows),
    StageRows("Allow list", lambda stats: isinstance(stats.get("allow_uids"), dict), uid_list_rows("allow_uids")),
    StageRows("Deny list", lambda stats: isinstance(stats.get("deny_uids"), dict), uid_list_rows("deny_uids")),
    StageRows("Where", lambda stats: bool(stats.get("where")), where_rows),
    StageRows("DataComp filters", lambda stats: bool(stats.get("filters")), datacomp_filter_rows),
    StageRows("MetaCLIP balancing", lambda stats: "threshold" in stats, metaclip_report_rows),
    StageRows("Balancing", lambda stats: stats.get("balance") == "none", no_balancing_rows),
    StageRows("Per image", lambda stats: "images_kept" in stats, per_image_rows),
    StageRows("Selection", lambda stats: isinstance(stats.get("selection"), dict), selection_rows),
)
