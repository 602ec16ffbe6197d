"""The kept samples of each webdataset input shard, gathered from the sampled batches.

What both webdataset hand-offs start from: the kept-keys lists (transforms.beam.handoff.webdataset)
and the reshard (transforms.beam.handoff.reshard).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.beam.io import (
    write_atomically,
)
from transforms.core.columns import KEPT, SOURCE_FILE, SOURCE_ROW, TEXTS, WDS_KEY
from transforms.handoff.reshard import (
    kept_key_file_name,
)

__all__ = ["ShardKept", "kept_counts", "kept_per_shard"]


class ShardKept(NamedTuple):
    """The kept samples of one input shard: positions in the tar (ascending) and __key__s."""

    index: int  # the input shard's index in the run's sorted input list
    path: str
    accepted: int  # records of this shard that reached matching
    rows: np.ndarray  # int64 positions of kept samples
    keys: list  # their webdataset __key__s, same order
    texts: Optional[list] = None  # their `texts` (caption_0, caption_1 ... of the reshard's .json); None: none


class _KeptPositionsFn(beam.DoFn):
    """Sampled batch -> (input index, (accepted, kept rows, kept __key__s)) per input in it."""

    def process(self, batch: pa.RecordBatch):
        files = batch.column(SOURCE_FILE).to_numpy()
        rows = batch.column(SOURCE_ROW).to_numpy()
        kept = batch.column(KEPT).to_numpy(zero_copy_only=False)
        for index in np.unique(files):
            in_file = files == index
            chosen = np.flatnonzero(in_file & kept)
            taken = pa.array(chosen, pa.int64())
            keys = batch.column(WDS_KEY).take(taken).to_pylist()
            texts = batch.column(TEXTS).take(taken).to_pylist() if TEXTS in batch.schema.names else None
            yield int(index), (int(in_file.sum()), rows[chosen].astype(np.int64), keys, texts)


class _GatherShardFn(beam.DoFn):
    """(input index, [its path, parts...]) -> ShardKept sorted by position; writes its kept-keys file."""

    def __init__(self, keys_dir: Optional[str], with_index: bool):
        self._keys_dir = keys_dir
        self._with_index = with_index

    def process(self, index_and_parts):
        index, parts = index_and_parts
        paths = [part for part in parts if isinstance(part, str)]
        parts = [part for part in parts if not isinstance(part, str)]
        accepted = sum(part[0] for part in parts)
        rows = np.concatenate([part[1] for part in parts]) if parts else np.zeros(0, np.int64)
        keys = [key for part in parts for key in part[2]]
        with_texts = any(part[3] is not None for part in parts)
        texts = [t for part in parts for t in (part[3] or [None] * len(part[2]))] if with_texts else None
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        keys = [keys[i] for i in order]
        texts = [texts[i] for i in order] if with_texts else None
        if self._keys_dir is not None:
            data = "".join(key + "\n" for key in keys).encode("utf-8", "surrogateescape")
            name = kept_key_file_name(paths[0], index, self._with_index)
            write_atomically(FileSystems.join(self._keys_dir, name), lambda handle: handle.write(data))
        yield ShardKept(index, paths[0], accepted, rows, keys, texts)


def kept_per_shard(sampled, listed_files, keys_dir: Optional[str], with_index: bool):
    """ShardKept for every input shard (also those with nothing kept).

    `listed_files`: (input index, path) for every input (ReadCaptions.listed_files).
    """
    parts = sampled | "KeptPositions" >> beam.ParDo(_KeptPositionsFn())
    return (
        (parts, listed_files)
        | "WithEveryInputShard" >> beam.Flatten()
        | "GroupByInputShard" >> beam.GroupByKey()
        | "GatherInputShard" >> beam.ParDo(_GatherShardFn(keys_dir, with_index))
    )


def kept_counts(per_shard):
    """Singleton: [(input index, accepted, kept, path)] for every input shard, by index."""
    return (
        per_shard
        | "KeptCount" >> beam.Map(lambda shard: (shard.index, shard.accepted, len(shard.rows), shard.path))
        | "AllKeptCounts" >> beam.combiners.ToList()
        | "SortKeptCounts" >> beam.Map(sorted)
    )
