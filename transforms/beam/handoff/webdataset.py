"""WebdatasetHandoff: the kept `__key__`s of every input tar shard, webdataset/shards.json, and a reshard.

Files are written under a temporary name and renamed when complete, and their bytes
depend only on the data, never on the runner, worker count or bundle boundaries.
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.pvalue import PCollection

from transforms.beam.handoff.kept import kept_counts, kept_per_shard
from transforms.beam.handoff.reshard import ReshardWebdataset
from transforms.beam.io import (
    write_json_atomically,
)
from transforms.handoff.reshard import (
    kept_key_file_name,
)

__all__ = ["WebdatasetHandoff", "shards_document"]


def shards_document(counts, keys_subdir: str, with_index: bool) -> dict:
    """webdataset/shards.json: per input shard, its kept-keys file and counts."""
    shards = [
        {
            "shard": path,
            "keys_file": f"{keys_subdir}/{kept_key_file_name(path, index, with_index)}",
            "accepted": accepted,
            "kept": kept,
        }
        for index, accepted, kept, path in counts
    ]
    return {"kept": sum(s["kept"] for s in shards), "accepted": sum(s["accepted"] for s in shards), "shards": shards}


class WebdatasetHandoff(beam.PTransform):
    """Kept-keys lists per input shard (+ webdataset/shards.json) and/or a reshard.

    In: sampled batches of a webdataset input; `listed_files`, (input index, path) of
    every input. Out: a list of PCollections whose completion means the outputs are
    written (for stats.json's `after`).
    """

    def __init__(
        self,
        listed_files,
        keys_dir: Optional[str],
        with_index: bool,
        shards_json: Optional[str],
        reshard_dir: Optional[str],
        samples_per_shard: int,
        manifest_extra: Optional[dict] = None,
    ):
        super().__init__()
        self._listed_files = listed_files
        self._keys_dir = keys_dir
        self._with_index = with_index
        self._shards_json = shards_json
        self._reshard_dir = reshard_dir
        self._per_shard = samples_per_shard
        self._extra = manifest_extra

    def expand(self, sampled: PCollection[pa.RecordBatch]) -> list:
        per_shard = kept_per_shard(sampled, self._listed_files, self._keys_dir, self._with_index)
        written = []
        if self._keys_dir is not None:
            shards_json, with_index = self._shards_json, self._with_index
            keys_subdir = self._keys_dir.rstrip("/").rsplit("/", 1)[-1]
            written.append(
                kept_counts(per_shard)
                | "WriteShardsJson"
                >> beam.Map(
                    lambda counts: write_json_atomically(shards_json, shards_document(counts, keys_subdir, with_index))
                )
            )
        if self._reshard_dir is not None:
            written.append(per_shard | "Reshard" >> ReshardWebdataset(self._reshard_dir, self._per_shard, self._extra))
        return written
