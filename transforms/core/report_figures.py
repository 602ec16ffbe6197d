"""The report's figures from sampled batches, merged exactly, and figures.json.

Pure Python, numpy and pyarrow, no Beam import. A sampled batch (the output of
BalancedSample: `key`, `text`, `entry_ids`, `keep_prob` and the internal key
hash and keep flag) gives one partial `figures` dict; `merge_figures` sums
any number of them. Counts are integers and the examples are "the K smallest
rows by (key hash, key, ...)", so merging is associative and commutative and
the result is the same whatever the runner, bundle sizes or order.

figures.json (`figures_document`), schema "balancebeam.figures/1":

    {
      "schema": "balancebeam.figures/1",
      "matches_per_caption": {
        "labels":   ["0", "1", ..., "49", "50+"],   # entries in the caption's match set
        "captions": [int, ...],                     # accepted captions per bucket
        "kept":     [int, ...]                      # of them, kept
      },
      "caption_length": {
        "edges":    [0, 4, 8, ..., 4096],           # bucket i: edges[i] <= characters < edges[i+1]; last open
        "labels":   ["0-3", "4-7", ..., "4096+"],
        "captions": [int, ...],
        "kept":     [int, ...]
      },
      "examples": {                                 # each: up to K rows, smallest key hash first
        "kept":      [{"key": str, "text": str, "entries": [str], "keep_prob": float}],
        "dropped":   [...],                         # matched (keep_prob > 0) but not drawn
        "unmatched": [...]                          # no entry matched (keep_prob 0)
      },
      "size_vs_threshold": [{"threshold": int, "expected_kept": float}, ...],  # ascending t
      "chosen": {"threshold": int, "target_size": int or null, "expected_kept": float or null, ...}
    }

`text` is cut to TEXT_LIMIT characters (then "…"). `chosen` holds what the
caller passes (extra keys, e.g. per-language thresholds, are kept as given).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, KEY_HASH, TEXT
from transforms.core.expected_size import (
    choose_threshold,
    fixed_to_captions,
    refine_grid,
)

SCHEMA = "balancebeam.figures/1"
MATCH_BUCKETS = 51  # 0 .. 49 entries, then 50+
# Caption length buckets in characters, roughly log-spaced (ratio ~1.25 to 2).
LENGTH_EDGES = (0, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 768, 1024, 2048, 4096)
EXAMPLES = 10  # K: rows per example list
TEXT_LIMIT = 200
EXAMPLE_KINDS = ("kept", "dropped", "unmatched")


def empty_figures() -> dict:
    """The neutral element of `merge_figures`."""
    return {
        "matches_captions": np.zeros(MATCH_BUCKETS, dtype=np.int64),
        "matches_kept": np.zeros(MATCH_BUCKETS, dtype=np.int64),
        "length_captions": np.zeros(len(LENGTH_EDGES), dtype=np.int64),
        "length_kept": np.zeros(len(LENGTH_EDGES), dtype=np.int64),
        **{kind: [] for kind in EXAMPLE_KINDS},
    }


def _layout(list_array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of an Arrow list array, slices included."""
    offsets = list_array.offsets.to_numpy().astype(np.int64)
    flat = list_array.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], flat.astype(np.int64)


def _truncate(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "…"


def _examples(
    batch: pa.RecordBatch, rows: np.ndarray, hashes: np.ndarray, offsets: np.ndarray, flat: np.ndarray, k: int
) -> list[tuple]:
    """The k smallest of `rows` as (key hash, key, text, entry ids, keep_prob) tuples.

    Ordered by the whole tuple, so duplicate keys (same hash, same key) still
    order deterministically; only rows whose hash is within the k smallest
    hashes are turned into Python objects.
    """
    if len(rows) == 0 or k == 0:
        return []
    row_hashes = hashes[rows]
    if len(rows) > k:
        cutoff = np.partition(row_hashes, k - 1)[k - 1]
        rows = rows[row_hashes <= cutoff]
    keys = batch.column(KEY)
    texts = batch.column(TEXT)
    probs = batch.column(KEEP_PROB)
    found = [
        (
            int(hashes[row]),
            keys[row].as_py(),
            _truncate(texts[row].as_py()),
            tuple(flat[offsets[row] : offsets[row + 1]].tolist()),
            float(probs[row].as_py()),
        )
        for row in rows.tolist()
    ]
    return sorted(found)[:k]


def batch_figures(batch: pa.RecordBatch, examples: int = EXAMPLES) -> dict:
    """Histograms and example candidates of one sampled batch (see the module doc)."""
    offsets, flat = _layout(batch.column(ENTRY_IDS))
    matches = np.diff(offsets)
    kept = batch.column(KEPT).to_numpy(zero_copy_only=False).astype(bool)
    keep_prob = batch.column(KEEP_PROB).to_numpy(zero_copy_only=False)
    hashes = batch.column(KEY_HASH).to_numpy(zero_copy_only=False).astype(np.uint64)
    match_bucket = np.minimum(matches, MATCH_BUCKETS - 1)
    lengths = pc.utf8_length(batch.column(TEXT)).to_numpy(zero_copy_only=False).astype(np.int64)
    length_bucket = np.searchsorted(np.array(LENGTH_EDGES), lengths, side="right") - 1
    rows = np.arange(batch.num_rows)
    return {
        "matches_captions": np.bincount(match_bucket, minlength=MATCH_BUCKETS).astype(np.int64),
        "matches_kept": np.bincount(match_bucket[kept], minlength=MATCH_BUCKETS).astype(np.int64),
        "length_captions": np.bincount(length_bucket, minlength=len(LENGTH_EDGES)).astype(np.int64),
        "length_kept": np.bincount(length_bucket[kept], minlength=len(LENGTH_EDGES)).astype(np.int64),
        "kept": _examples(batch, rows[kept], hashes, offsets, flat, examples),
        "dropped": _examples(batch, rows[~kept & (keep_prob > 0)], hashes, offsets, flat, examples),
        "unmatched": _examples(batch, rows[~kept & (keep_prob <= 0)], hashes, offsets, flat, examples),
    }


def merge_figures(parts: Iterable[dict], examples: int = EXAMPLES) -> dict:
    """Sum of partial figures: histograms added, the `examples` smallest rows of each kind kept.

    Associative and commutative, with `empty_figures()` as neutral element; the
    inputs are not modified.
    """
    total = empty_figures()
    for part in parts:
        for name in ("matches_captions", "matches_kept", "length_captions", "length_kept"):
            total[name] = total[name] + part[name]
        for kind in EXAMPLE_KINDS:
            total[kind] = sorted(total[kind] + list(part[kind]))[:examples]
    return total


def kept_entry_ids(batch: pa.RecordBatch) -> np.ndarray:
    """Flat entry ids of the batch's kept captions (one per kept caption and entry).

    Feed them to the same block counting as CountEntries
    (`counting.sparse_block_counts`) to get the "after" counts without a dense
    vector per batch.
    """
    kept = batch.filter(batch.column(KEPT)).column(ENTRY_IDS)
    return _layout(kept)[1]


def kept_entry_counts(batch: pa.RecordBatch, num_entries: int) -> np.ndarray:
    """Captions KEPT that match each entry: int64 vector of length num_entries.

    Dense, so 4 MB per batch with 500k entries; in a pipeline prefer
    `kept_entry_ids` and the block counting.
    """
    return np.bincount(kept_entry_ids(batch), minlength=num_entries).astype(np.int64)


def kept_counts_document(entries: Sequence[str], kept_counts: np.ndarray) -> dict:
    """entry_counts_kept.json: entry -> kept captions, in metadata order (entry_counts.json's format)."""
    if len(entries) != len(kept_counts):
        raise ValueError(f"{len(entries)} entries but {len(kept_counts)} counts")
    return dict(zip(entries, np.asarray(kept_counts, dtype=np.int64).tolist(), strict=True))


def length_labels() -> list[str]:
    """'0-3', '4-7', ..., '4096+' for LENGTH_EDGES."""
    bounds = list(LENGTH_EDGES)
    return [f"{lo}-{hi - 1}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)] + [f"{bounds[-1]}+"]


def _example_rows(rows: Sequence[tuple], entries: Sequence[str]) -> list[dict]:
    return [
        {"key": key, "text": text, "entries": [entries[i] for i in ids], "keep_prob": keep_prob}
        for _hash, key, text, ids, keep_prob in rows
    ]


def figures_document(
    merged: dict, entries: Sequence[str], size_table: Sequence[tuple[int, float]], chosen: dict
) -> dict:
    """figures.json (schema in the module doc): JSON-able, keys in a fixed order."""
    chosen = dict(chosen)
    chosen.setdefault("target_size", None)
    chosen.setdefault("expected_kept", None)
    return {
        "schema": SCHEMA,
        "matches_per_caption": {
            "labels": [str(i) for i in range(MATCH_BUCKETS - 1)] + [f"{MATCH_BUCKETS - 1}+"],
            "captions": np.asarray(merged["matches_captions"]).tolist(),
            "kept": np.asarray(merged["matches_kept"]).tolist(),
        },
        "caption_length": {
            "edges": list(LENGTH_EDGES),
            "labels": length_labels(),
            "captions": np.asarray(merged["length_captions"]).tolist(),
            "kept": np.asarray(merged["length_kept"]).tolist(),
        },
        "examples": {kind: _example_rows(merged[kind], entries) for kind in EXAMPLE_KINDS},
        "size_vs_threshold": [
            {"threshold": int(t), "expected_kept": float(e)} for t, e in sorted(size_table, key=lambda row: row[0])
        ],
        "chosen": chosen,
    }


# --- E(t) tables for figures.json and --target_size (the fixed-point sums of ExpectedSizes) ---


def size_table(grid: np.ndarray, sizes) -> list[tuple[int, float]]:
    """[(t, expected kept)] for figures.json; empty when there was nothing to sum."""
    if sizes is None:
        return []
    return list(zip((int(t) for t in grid), fixed_to_captions(sizes).tolist(), strict=True))


def finer_grid(grid: np.ndarray, sizes, target: int) -> np.ndarray:
    """The second pass's grid: integers inside the coarse grid's bracket around the target."""
    return refine_grid(grid, fixed_to_captions(sizes if sizes is not None else [0] * len(grid)), target)


def threshold_for_target(grid: np.ndarray, sizes, target: int) -> int:
    """The t of the grid whose E(t) is closest to the target size."""
    return choose_threshold(grid, fixed_to_captions(sizes if sizes is not None else [0] * len(grid)), target)
