"""ExactDedup: the url and text kinds of `--dedup` (docs/dedup.md, section 1).

In: record batches (key, text, source columns; `url` for the url kind). Out: `KindOutput`
(transforms.beam.dedup_kinds): the surviving records, one duplicates row per record
removed, and the kind's figures. The rules are transforms.dedup.keys and
transforms.dedup.exact (pure); this module spreads them so that no worker holds more than
one key group:

    candidates   batch -> (dedup key, (draw, file, row, sample key, text)) per record
                 with a key (keys.url_keys / text_keys, exact.candidates' draws)
    groups       GroupByKey on the dedup key: each group's members once, on one worker;
                 exact.group_duplicates finds its survivor (the smallest (draw, file, row))
                 and every other member, a duplicate of it
    by file      the duplicates, grouped by input file into sorted row arrays (small: only
                 duplicates travel), a multimap side input each batch looks its files up in
    remove       the batches (kept on disk meanwhile on local engines, transforms.beam.spill)
                 less their duplicates; the duplicates as rows of DUPLICATES_SCHEMA plus
                 `caption` and `duplicate_of_caption` (the survivor's text)

Why one GroupByKey rather than CombinePerKey(min) and a join back: both shuffle every
candidate once to find the minimum, but the join back shuffles them all a second time to
find who lost; grouping once finds both, and a group is only the candidates (a few tens of
bytes each), never the records. The result is a minimum over (draw, file, row) of each
group, so it does not depend on file splits, batch size, bundles, workers or runner.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsMultiMap, PCollection

from transforms.beam.dedup_kinds import KindOutput
from transforms.beam.spill import LoadBatches, StoreBatches
from transforms.beam.stats import SumFigures
from transforms.core.columns import KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW, TEXT
from transforms.core.hashing import key_hashes
from transforms.dedup.exact import group_duplicates, survivor_draws
from transforms.dedup.keys import text_keys, url_keys

__all__ = ["CAPTION", "DUPLICATE_OF_CAPTION", "EXACT_KINDS", "ExactDedup", "URL"]

URL = "url"  # the batch column of a record's URL (the reader's name for --url_field)
EXACT_KINDS = {"url": (URL, url_keys), "text": (TEXT, text_keys)}
CAPTION = "caption"  # duplicates/: the removed record's text
DUPLICATE_OF_CAPTION = "duplicate_of_caption"  # duplicates/: the text of the record it duplicates
_FIGURES = "figures"
_DUPLICATES = "duplicates"


class _CandidatesFn(beam.DoFn):
    """A batch -> (dedup key, (draw, file, row, sample key, text)) for each record with a key."""

    def __init__(self, kind: str, seed: int):
        self._column, self._keys = EXACT_KINDS[kind]
        self._seed = seed

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        dedup_keys = self._keys(batch.column(self._column))
        has_key = [i for i, k in enumerate(dedup_keys) if k is not None]
        if not has_key:
            return
        index = pa.array(has_key, pa.int64())
        sample_keys = batch.column(KEY).take(index).to_pylist()
        draws = survivor_draws(sample_keys, self._seed).tolist()
        files = batch.column(SOURCE_FILE).take(index).to_pylist()
        rows = batch.column(SOURCE_ROW).take(index).to_pylist()
        texts = batch.column(TEXT).take(index).to_pylist()
        yield from zip(
            [dedup_keys[i] for i in has_key], zip(draws, files, rows, sample_keys, texts, strict=True), strict=True
        )


def _duplicates_by_file(item):
    """(dedup key, its members) -> (file, (row, survivor's key, survivor's text)) per duplicate."""
    _, members = item
    for member, survivor in group_duplicates(members):
        yield member[1], (member[2], survivor[3], survivor[4])


def _pack_file(item):
    """(file, its duplicates) -> (file, (sorted rows, survivor keys, survivor texts)) in row order."""
    source_file, found = item
    found = sorted(found)
    rows = np.fromiter((row for row, _, _ in found), dtype=np.int64, count=len(found))
    return source_file, (rows, [key for _, key, _ in found], [text for _, _, text in found])


class _RemoveFn(beam.DoFn):
    """A batch, the packed duplicates by file -> the batch less its duplicates, and their rows."""

    def __init__(self, kind: str):
        self._kind = kind

    def process(self, batch: pa.RecordBatch, duplicates_by_file):
        n = batch.num_rows
        yield beam.pvalue.TaggedOutput(_FIGURES, Counter(judged=n))
        if n == 0:
            return
        files = batch.column(SOURCE_FILE).to_numpy().astype(np.int64)
        rows = batch.column(SOURCE_ROW).to_numpy().astype(np.int64)
        hit = np.zeros(n, dtype=bool)
        survivor = np.full(n, -1, dtype=np.int64)  # index into the found lists below
        keys_of, texts_of = [], []
        for source_file in np.unique(files).tolist():
            for found_rows, found_keys, found_texts in duplicates_by_file[source_file]:
                mine = np.flatnonzero(files == source_file)
                at = np.searchsorted(found_rows, rows[mine])
                inside = at < len(found_rows)
                match = np.zeros(len(mine), dtype=bool)
                match[inside] = found_rows[at[inside]] == rows[mine][inside]
                hit[mine[match]] = True
                survivor[mine[match]] = at[match] + len(keys_of)
                keys_of += found_keys
                texts_of += found_texts
        if not hit.any():
            yield batch
            return
        removed = np.flatnonzero(hit)
        if len(removed) < n:
            yield batch.filter(pa.array(~hit))
        yield beam.pvalue.TaggedOutput(_FIGURES, Counter(deduplicated=len(removed)))
        yield beam.pvalue.TaggedOutput(_DUPLICATES, self._rows(batch, removed, survivor[removed], keys_of, texts_of))

    def _rows(self, batch, removed, survivors, keys_of, texts_of) -> pa.RecordBatch:
        index = pa.array(removed)
        keys = batch.column(KEY).take(index)
        picked = survivors.tolist()
        return pa.RecordBatch.from_arrays(
            [
                keys,
                pa.array([self._kind] * len(removed), pa.string()),
                pa.array([keys_of[i] for i in picked], pa.string()),
                pa.array(np.ones(len(removed))),
                batch.column(TEXT).take(index),
                pa.array([texts_of[i] for i in picked], pa.string()),
                batch.column(SOURCE_FILE).take(index),
                batch.column(SOURCE_ROW).take(index),
                pa.array(key_hashes(keys.to_pylist()), pa.uint64()),
            ],
            names=[KEY, "kind", "duplicate_of", "similarity", CAPTION, DUPLICATE_OF_CAPTION]
            + [SOURCE_FILE, SOURCE_ROW, KEY_HASH],
        )


def _kind_figures(summed: dict) -> dict:
    return {"judged": int(summed.get("judged", 0)), "deduplicated": int(summed.get("deduplicated", 0))}


class ExactDedup(beam.PTransform):
    """One exact kind (`url` or `text`) of docs/dedup.md, section 1; see the module docstring.

    In: record batches (`url` column for kind url). Out: KindOutput: survivors (the input's
    schema), duplicates (key, kind, duplicate_of, similarity 1.0, caption,
    duplicate_of_caption, source columns, key hash), figures {"judged", "deduplicated"}.
    `spill_dir`: where the batches wait for the groups on local engines (None: in the runner).
    """

    def __init__(self, kind: str, seed: int, spill_dir: Optional[str] = None):
        super().__init__()
        if kind not in EXACT_KINDS:
            raise ValueError(f"exact dedup kinds are {', '.join(EXACT_KINDS)}; got {kind!r}")
        self._kind = kind
        self._seed = seed
        self._spill_dir = spill_dir

    def expand(self, batches: PCollection[pa.RecordBatch]) -> KindOutput:
        kind, spill = self._kind, self._spill_dir
        label = f"Dedup{kind.title()}"
        duplicates_by_file = (
            batches
            | "Candidates" >> beam.ParDo(_CandidatesFn(kind, self._seed))
            | "GroupByDedupKey" >> beam.GroupByKey()
            | "GroupDuplicates" >> beam.FlatMap(_duplicates_by_file)
            | "GroupByFile" >> beam.GroupByKey()
            | "PackByFile" >> beam.Map(_pack_file)
        )
        removed = (
            batches
            | "StoreBatches" >> StoreBatches(spill and FileSystems.join(spill, label.lower()), label)
            | "LoadBatches" >> LoadBatches(spill)
            | "RemoveDuplicates"
            >> beam.ParDo(_RemoveFn(kind), AsMultiMap(duplicates_by_file)).with_outputs(
                _FIGURES, _DUPLICATES, main="survivors"
            )
        )
        figures = (
            removed[_FIGURES]
            | "SumFigures" >> beam.CombineGlobally(SumFigures())
            | "KindFigures" >> beam.Map(_kind_figures)
        )
        return KindOutput(removed["survivors"], removed[_DUPLICATES], figures)
