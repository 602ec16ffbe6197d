"""Run statistics: per-batch figures, summed exactly, and the stats.json document.

All arithmetic is on integers, so the figures do not depend on the order in
which workers add them up (transforms.beam.stats sums them in the pipeline).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, LANGUAGE

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


def rejection_figures(rejection) -> Counter:
    """Figures of one transforms.formats.rejections.Rejection: records and files rejected, per reason."""
    figures = Counter({"records_rejected": rejection.records, f"rejected.{rejection.reason}": rejection.records})
    if rejection.row is None:
        figures["files_rejected"] += 1
    return figures


def duplicate_figures(found: dict) -> Counter:
    return Counter(
        duplicate_keys=found["duplicate_keys"], **{f"duplicate_example.{key}": 1 for key in found["examples"]}
    )


# stats.json's sections, in the order its keys have always had (readers diff the file):
# the run and each stage give figures by section; within a section the stages' come in
# the chain's order and the run's last, a key keeps the place it first had.
STATS_SECTIONS = (
    "records",  # records_read ... files_rejected (the run)
    "dedup",  # records_deduplicated, deduplicated_by_kind, semdedup (--dedup, before the filters)
    "dropped",  # records_filtered, filtered_by_filter (the run, over every stage that drops records)
    "kept",  # what the records at the end are: records_kept (a balancing's counts before it)
    "keys",  # duplicate_keys (the run's shard writers)
    "method",  # how records are kept: threshold and seed, or balance: none
    "files",  # input_files, num_shards (the run)
    "inputs",  # what the stages read: metadata, mode, a selection's seed
    "filters",  # the filters' settings
    "plan",  # what a balancing chose per language
    "found",  # what the stages found: a CLIP-score threshold, the selection's figures
    "by_language",  # records per metadata language
    "accounting",  # every record read, by fate (transforms.core.accounting): the last key
)


def merge_sections(parts: Sequence[dict]) -> dict:
    """stats.json from its parts, each {section: {key: value}} (the stages' in chain order, then the run's).

    Sections are laid out in STATS_SECTIONS' order, any other after them in the order met;
    a key given twice keeps its first place and takes its last value.
    """
    names = list(STATS_SECTIONS)
    for part in parts:
        names += [name for name in part if name not in names]
    document: dict = {}
    for name in names:
        for part in parts:
            document.update(part.get(name, {}))
    return document


def run_sections(
    final: dict, rejected: dict, dropped: dict, reasons: Sequence[str], run: dict, dropped_elsewhere: int = 0
) -> dict:
    """The run's own part of stats.json: what was read, dropped, kept, and the input files.

    `final`: the summed `kept_figures` of the run's final batches plus its shard writers'
    `duplicate_figures`; `rejected`: summed `rejection_figures`; `dropped`: summed
    `filtered_figures` of the records the stages dropped for `reasons` (in their order);
    `run`: input_files and num_shards; `dropped_elsewhere`: the records stages dropped to an
    output of their own (dedup's duplicates/). records_read = rejected + both dropped + accepted.
    """
    accepted = final.get("records_accepted", 0)
    rejected_records = rejected.get("records_rejected", 0)
    by_reason = {key.split(".", 1)[1]: value for key, value in sorted(rejected.items()) if key.startswith("rejected.")}
    sections = {
        "records": {
            "records_read": accepted + rejected_records + dropped.get("records_filtered", 0) + dropped_elsewhere,
            "records_accepted": accepted,
            "records_rejected": rejected_records,
            "rejected_by_reason": by_reason,
            "files_rejected": rejected.get("files_rejected", 0),
        },
        "kept": {"records_kept": final.get("records_kept", 0)},
        "keys": {
            "duplicate_keys": final.get("duplicate_keys", 0),
            "duplicate_key_examples": sorted(k.split(".", 1)[1] for k in final if k.startswith("duplicate_example."))[
                :5
            ],
        },
        "files": run,
    }
    if reasons:
        sections["dropped"] = {
            "records_filtered": dropped.get("records_filtered", 0),
            "filtered_by_filter": {name: dropped.get(f"filtered.{name}", 0) for name in reasons},
        }
    return sections


def balancing_sections(final: dict, counts: np.ndarray, head: np.ndarray) -> dict:
    """MetaCLIP balancing's counts for stats.json's "kept" and "by_language" sections.

    `final`: the summed `batch_figures` of the run's final batches; `head`: which entries
    are head entries (count > their t).
    """
    return {
        "kept": {
            "records_matched": final.get("records_matched", 0),
            "records_kept": final.get("records_kept", 0),
            "expected_kept": round(final.get("keep_prob_fixed", 0) / _PROB_SCALE, 3),
            "entry_matches": final.get("entry_matches", 0),
            "entries": int(len(counts)),
            "entries_matched": int(np.count_nonzero(counts)),
            "entries_over_threshold": int(np.count_nonzero(head)),
            "matches_in_head_entries": int(counts[head].sum()),
        },
        "by_language": _language_figures(final),
    }


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
