"""Run statistics: per-batch figures, summed exactly, and the stats.json document.

All arithmetic is on integers, so the figures do not depend on the order in
which workers add them up (transforms.beam.stats sums them in the pipeline).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, LANGUAGE
from transforms.formats.rejections import Rejection

# keep_prob summed in fixed point: exact and order independent.
_PROB_SCALE = 1 << 40


def batch_figures(batch: pa.RecordBatch) -> Counter:
    """Figures of one sampled batch."""
    offsets = batch.column(ENTRY_IDS).offsets.to_numpy()
    keep_prob = batch.column(KEEP_PROB).to_numpy()
    figures = Counter(
        records_accepted=batch.num_rows,
        records_matched=int((np.diff(offsets) > 0).sum()),
        records_kept=int(np.count_nonzero(batch.column(KEPT).to_numpy(zero_copy_only=False))),
        entry_matches=int(offsets[-1] - offsets[0]),
        keep_prob_fixed=int(np.rint(keep_prob * _PROB_SCALE).astype(np.int64).sum()),
    )
    if LANGUAGE in batch.schema.names:  # --mode metaclip2: records per metadata language
        languages = batch.column(LANGUAGE)
        kept = batch.column(KEPT)
        for name, rows in zip(*_value_counts(languages), strict=True):
            figures[f"language.{name}.accepted"] += rows
        for name, rows in zip(*_value_counts(languages.filter(kept)), strict=True):
            figures[f"language.{name}.kept"] += rows
    return figures


def _value_counts(array: pa.Array) -> tuple[list, list]:
    counted = pc.value_counts(array)
    return counted.field("values").to_pylist(), counted.field("counts").to_pylist()


def kept_figures(batch: pa.RecordBatch) -> Counter:
    """Figures of one batch that reaches the end without MetaCLIP balancing (--balance none):
    every record is kept, unless a selection after it cleared the flag."""
    kept = int(np.count_nonzero(batch.column(KEPT).to_numpy(zero_copy_only=False)))
    return Counter(records_accepted=batch.num_rows, records_kept=kept)


def filtered_figures(batch: pa.RecordBatch, column: str = "filter") -> Counter:
    """Figures of one batch of filtered records: how many, and per first failed filter."""
    figures = Counter(records_filtered=batch.num_rows)
    for name, rows in zip(*_value_counts(batch.column(column)), strict=True):
        figures[f"filtered.{name}"] += rows
    return figures


def filter_run_figures(spec) -> dict:
    """stats.json's description of the filter stage (a transforms.filters.datacomp.FilterSpec)."""
    figures: dict = {"filters": list(spec.filters)}
    if spec.lid_identity:
        name, sha256, approximate = spec.lid_identity
        figures["lid_model"] = {"name": name, "sha256": sha256, "approximate": approximate}
    if "clip_score" in spec.filters:
        figures["clip_score_field"] = spec.clip_score_field
        if spec.clip_score_fraction is not None:
            figures["clip_score_fraction"] = spec.clip_score_fraction
    return figures


def rejection_figures(rejection: Rejection) -> Counter:
    figures = Counter({"records_rejected": rejection.records, f"rejected.{rejection.reason}": rejection.records})
    if rejection.row is None:
        figures["files_rejected"] += 1
    return figures


def duplicate_figures(found: dict) -> Counter:
    return Counter(
        duplicate_keys=found["duplicate_keys"], **{f"duplicate_example.{key}": 1 for key in found["examples"]}
    )


def stats_document(
    batch: dict,
    rejected: dict,
    counts: Optional[np.ndarray],
    run: dict,
    head: np.ndarray = None,
    filtered: Optional[dict] = None,
    filters: Sequence[str] = (),
) -> dict:
    """stats.json: the run's figures, keys in a fixed order.

    `head`: which entries are head entries (count > their t; with a t per
    language in metaclip2 mode); by default count > run["threshold"].
    `counts` None: no MetaCLIP balancing (--balance none), no entry figures.
    `filtered`: the summed `filtered_figures` of a run with `filters`;
    records_read = records_rejected + records_filtered + records_accepted.
    """
    accepted = batch.get("records_accepted", 0)
    rejected_records = rejected.get("records_rejected", 0)
    filtered = filtered or {}
    by_reason = {key.split(".", 1)[1]: value for key, value in sorted(rejected.items()) if key.startswith("rejected.")}
    document = {
        "records_read": accepted + rejected_records + filtered.get("records_filtered", 0),
        "records_accepted": accepted,
        "records_rejected": rejected_records,
        "rejected_by_reason": by_reason,
        "files_rejected": rejected.get("files_rejected", 0),
    }
    if filters:
        document["records_filtered"] = filtered.get("records_filtered", 0)
        document["filtered_by_filter"] = {name: filtered.get(f"filtered.{name}", 0) for name in filters}
    if counts is None:
        document["records_kept"] = batch.get("records_kept", 0)
    else:
        if head is None:
            head = counts > run["threshold"]
        document.update(
            {
                "records_matched": batch.get("records_matched", 0),
                "records_kept": batch.get("records_kept", 0),
                "expected_kept": round(batch.get("keep_prob_fixed", 0) / _PROB_SCALE, 3),
                "entry_matches": batch.get("entry_matches", 0),
                "entries": int(len(counts)),
                "entries_matched": int(np.count_nonzero(counts)),
                "entries_over_threshold": int(np.count_nonzero(head)),
                "matches_in_head_entries": int(counts[head].sum()),
            }
        )
    document["duplicate_keys"] = batch.get("duplicate_keys", 0)
    document["duplicate_key_examples"] = sorted(
        k.split(".", 1)[1] for k in batch if k.startswith("duplicate_example.")
    )[:5]
    return {**document, **run, **_language_figures(batch)}


def _language_figures(batch: dict) -> dict:
    """records_by_language: {language: {accepted, kept}} (metaclip2 only), sorted by language."""
    per_language: dict = {}
    for name, value in batch.items():
        if name.startswith("language."):
            language, figure = name[len("language.") :].rsplit(".", 1)
            per_language.setdefault(language, {"accepted": 0, "kept": 0})[figure] = value
    return {"records_by_language": dict(sorted(per_language.items()))} if per_language else {}


_DUPLICATE_EXAMPLES = 5


def duplicate_keys(sorted_keys: pa.Array) -> tuple[int, list[str]]:
    """(rows whose key equals the previous row's, a few such keys) of a sorted key column."""
    if len(sorted_keys) < 2:
        return 0, []
    repeated = pc.equal(sorted_keys.slice(1), sorted_keys.slice(0, len(sorted_keys) - 1)).fill_null(False)
    count = pc.sum(repeated).as_py() or 0
    examples = pc.unique(sorted_keys.slice(1).filter(repeated)).to_pylist()[:_DUPLICATE_EXAMPLES] if count else []
    return count, examples
