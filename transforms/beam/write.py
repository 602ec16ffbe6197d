"""Writers whose files are identical whatever the runner, worker count or retry.

Rows are assigned to shards by a hash of their key (or line), gathered per
shard, sorted, and written under a temporary name that is renamed into place
only when complete: a killed run never leaves a partial file under a final
name, and a rerun writes the very same bytes.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.beam.io import write_atomically, write_json_atomically
from transforms.beam.spill import GroupBatchesByShard
from transforms.core.columns import KEPT, KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import shard_indices
from transforms.core.stats import duplicate_keys

# Row order inside every sorted output shard.
SORT_COLUMNS = [(KEY, "ascending"), (SOURCE_FILE, "ascending"), (SOURCE_ROW, "ascending")]


def shard_name(directory: str, shard: int, num_shards: int, suffix: str) -> str:
    return FileSystems.join(directory, f"part-{shard:05d}-of-{num_shards:05d}{suffix}")


def _with_every_shard(pcoll, num_shards: int, label: str):
    """Flatten in one (shard, None) per shard so that empty shards are written too."""
    markers = pcoll.pipeline | f"{label}EveryShard" >> beam.Create([(shard, None) for shard in range(num_shards)])
    return (pcoll, markers) | f"{label}Flatten" >> beam.Flatten()


class _SplitBatchByShardFn(beam.DoFn):
    def __init__(self, num_shards: int, columns: Sequence[str], kept_only: bool):
        self._num_shards = num_shards
        self._columns = list(dict.fromkeys(list(columns) + [KEY, SOURCE_FILE, SOURCE_ROW]))
        self._kept_only = kept_only

    def process(self, batch: pa.RecordBatch):
        rows = np.arange(batch.num_rows)
        if self._kept_only:
            rows = rows[batch.column(KEPT).to_numpy(zero_copy_only=False)]
        if len(rows) == 0:
            return
        shards = shard_indices(batch.column(KEY_HASH).to_numpy()[rows], self._num_shards)
        batch = batch.select(self._columns)
        order = np.argsort(shards, kind="stable")
        sorted_shards, rows = shards[order], rows[order]
        bounds = np.flatnonzero(np.r_[True, sorted_shards[1:] != sorted_shards[:-1], True])
        for start, end in zip(bounds[:-1], bounds[1:]):
            # take() copies the rows (kept ones only: one copy, no filter first),
            # so what crosses the shuffle is just them.
            yield int(sorted_shards[start]), batch.take(pa.array(rows[start:end]))


WRITTEN = "written"
DUPLICATES = "duplicates"


class _WriteParquetShardFn(beam.DoFn):
    def __init__(self, directory: str, num_shards: int, columns: Sequence[str], schema: pa.Schema):
        self._directory = directory
        self._num_shards = num_shards
        self._columns = list(columns)
        self._schema = schema

    def process(self, shard_and_parts):
        shard, parts = shard_and_parts
        path = shard_name(self._directory, shard, self._num_shards, ".parquet")
        if not parts:
            yield write_atomically(path, lambda handle: pq.write_table(self._schema.empty_table(), handle, compression="zstd"))
            return
        table = pa.Table.from_batches(parts)
        order = pc.sort_indices(table, sort_keys=SORT_COLUMNS)
        # Every row of a key lands in the same shard and the shard is sorted,
        # so duplicate keys are adjacent: found here without another shuffle.
        count, examples = duplicate_keys(table.column(KEY).take(order).combine_chunks())
        if count:
            yield beam.pvalue.TaggedOutput(DUPLICATES, {"duplicate_keys": count, "examples": examples})
        table = table.select(self._columns)
        yield write_atomically(path, lambda handle: write_sorted_parquet(handle, table, order, self._schema))


# Rows per Parquet row group: the writer holds one sorted group at a time
# beside the shard, not a sorted copy of the whole shard.
ROW_GROUP_ROWS = 1 << 17


def write_sorted_parquet(handle, table: pa.Table, order: pa.Array, schema: pa.Schema) -> None:
    """`table`'s rows in `order`, as `schema`, zstd Parquet, one row group per ROW_GROUP_ROWS rows."""
    with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        for start in range(0, len(order), ROW_GROUP_ROWS):
            writer.write_table(table.take(order.slice(start, ROW_GROUP_ROWS)).cast(schema), row_group_size=ROW_GROUP_ROWS)


class WriteParquetShards(beam.PTransform):
    """Write batches as `num_shards` sorted Parquet files in `directory`.

    In: batches holding `columns` plus the internal key hash and source
    columns (and the keep flag when `kept_only`). Out: `written`, the paths,
    and `duplicates`, one dict per shard with repeated keys
    (`duplicate_keys`: rows beyond the first of each key, `examples`).
    Each file holds the rows whose key hashes to it, sorted by key, then by
    source file and row. With `spill_dir`, the rows reach their shard's writer
    through files there (transforms.beam.spill), not through the runner's memory.
    """

    def __init__(self, directory: str, num_shards: int, schema: pa.Schema, kept_only: bool = False, spill_dir: Optional[str] = None):
        super().__init__()
        self._directory = directory
        self._num_shards = num_shards
        self._schema = schema
        self._kept_only = kept_only
        self._spill_dir = spill_dir

    def expand(self, batches):
        columns = self._schema.names
        parts = batches | "SplitByShard" >> beam.ParDo(_SplitBatchByShardFn(self._num_shards, columns, self._kept_only))
        return (
            parts
            | "GroupShards" >> GroupBatchesByShard(self._spill_dir, self.label.replace(" ", "") or "rows", self._num_shards)
            | "WriteShards"
            >> beam.ParDo(_WriteParquetShardFn(self._directory, self._num_shards, columns, self._schema)).with_outputs(
                DUPLICATES, main=WRITTEN
            )
        )


def _line_shard(line: str, num_shards: int) -> int:
    digest = hashlib.blake2b(line.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


def _write_lines_shard(shard_and_lines, directory: str, num_shards: int) -> str:
    shard, lines = shard_and_lines
    data = "".join(sorted(line + "\n" for line in lines if line is not None)).encode("utf-8", "surrogatepass")
    return write_atomically(shard_name(directory, shard, num_shards, ".jsonl"), lambda handle: handle.write(data))


class WriteJsonLinesShards(beam.PTransform):
    """Write JSON strings as `num_shards` sorted JSON Lines files in `directory`.

    In: str, one JSON document each. Out: the written paths.
    """

    def __init__(self, directory: str, num_shards: int):
        super().__init__()
        self._directory = directory
        self._num_shards = num_shards

    def expand(self, lines):
        num_shards = self._num_shards
        keyed = lines | "ShardLines" >> beam.Map(lambda line: (_line_shard(line, num_shards), line))
        return (
            _with_every_shard(keyed, num_shards, "Lines")
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.Map(_write_lines_shard, self._directory, num_shards)
        )


class WriteJsonFile(beam.PTransform):
    """Write one JSON document, computed from side inputs, to `path`.

    In: the pipeline root. `make_value(**side_values)` builds the document
    from `side_inputs`, a dict of name -> singleton PCollection. The write
    waits for every PCollection in `after` to be complete (they are side
    inputs it ignores), so a file written last can mark a finished run.
    Out: the path.
    """

    def __init__(self, path: str, make_value: Callable[..., object], side_inputs: Optional[dict] = None, after: Sequence = ()):
        super().__init__()
        self._path = path
        self._make_value = make_value
        self._side_inputs = side_inputs or {}
        self._after = list(after)

    def expand(self, pbegin):
        path, make_value = self._path, self._make_value
        singletons = {name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in self._side_inputs.items()}
        for i, pcoll in enumerate(self._after):
            singletons[f"_after_{i}"] = beam.pvalue.AsList(pcoll)

        def write(target, **values):
            return write_json_atomically(target, make_value(**{k: v for k, v in values.items() if not k.startswith("_after_")}))

        return pbegin | "One" >> beam.Create([path]) | "Write" >> beam.Map(write, **singletons)
