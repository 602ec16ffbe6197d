"""The output formats of the run: sorted Parquet shards, sorted JSON Lines shards, one JSON file.

The shards are written through WriteShards (transforms.beam.sink), so their
files are identical whatever the runner, worker count or retry: rows go to a
shard by a hash of their key (or line), each shard is sorted, and every file
is renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.pvalue import PBegin, PCollection

from transforms.beam.io import write_json_atomically
from transforms.beam.sink import ShardFormat, WriteShards
from transforms.core.batches import shard_runs, take_runs
from transforms.core.columns import KEPT, KEY, KEY_HASH, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import shard_indices
from transforms.core.stats import duplicate_keys

__all__ = [
    "SORT_COLUMNS",
    "JsonLinesShards",
    "ParquetShards",
    "WriteJsonFile",
    "WriteJsonFiles",
    "WriteJsonLinesShards",
    "WriteParquetShards",
    "write_sorted_parquet",
]

# Row order inside every sorted output shard.
SORT_COLUMNS = [(KEY, "ascending"), (SOURCE_FILE, "ascending"), (SOURCE_ROW, "ascending")]
# Rows per Parquet row group: the writer holds one sorted group at a time
# beside the shard, not a sorted copy of the whole shard.
ROW_GROUP_ROWS = 1 << 17


def write_sorted_parquet(handle, table: pa.Table, order: pa.Array, schema: pa.Schema) -> None:
    """`table`'s rows in `order`, as `schema`, zstd Parquet, one row group per ROW_GROUP_ROWS rows."""
    with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
        for start in range(0, len(order), ROW_GROUP_ROWS):
            writer.write_table(
                table.take(order.slice(start, ROW_GROUP_ROWS)).cast(schema), row_group_size=ROW_GROUP_ROWS
            )


class ParquetShards(ShardFormat):
    """Batches split by key hash; each shard sorted by key, then source file and row, as zstd Parquet.

    `columns`: the batch columns a shard needs (default: the schema's names);
    `project(table) -> table` turns them into the schema's columns (default: select
    them); `kept_only`: only rows whose keep flag is set. `write` reports the
    shard's repeated keys (`duplicate_keys`: rows beyond the first of each key,
    `examples`): all rows of a key land in one shard and the shard is sorted, so
    they are adjacent, found without another shuffle.
    """

    suffix = ".parquet"

    def __init__(
        self,
        schema: pa.Schema,
        kept_only: bool = False,
        columns: Optional[Sequence[str]] = None,
        project: Optional[Callable[[pa.Table], pa.Table]] = None,
    ):
        self._schema = schema
        self._kept_only = kept_only
        self._columns = list(dict.fromkeys(list(columns or schema.names) + [KEY, SOURCE_FILE, SOURCE_ROW]))
        self._project = project

    def split(self, batch: pa.RecordBatch, num_shards: int):
        rows = np.arange(batch.num_rows)
        if self._kept_only:
            rows = rows[batch.column(KEPT).to_numpy(zero_copy_only=False)]
        if len(rows) == 0:
            return
        order, present, bounds = shard_runs(shard_indices(batch.column(KEY_HASH).to_numpy()[rows], num_shards))
        # take() copies the rows (kept ones only: one copy, no filter first), so what
        # crosses the shuffle is just them.
        yield from take_runs(batch.select(self._columns), rows[order], present, bounds)

    def rows(self, parts: list) -> int:
        return sum(part.num_rows for part in parts)

    def write(self, handle, parts: list) -> Optional[dict]:
        if not parts:
            pq.write_table(self._schema.empty_table(), handle, compression="zstd")
            return None
        table = pa.Table.from_batches(parts)
        order = pc.sort_indices(table, sort_keys=SORT_COLUMNS)
        count, examples = duplicate_keys(table.column(KEY).take(order).combine_chunks())
        table = self._project(table) if self._project else table.select(self._schema.names)
        write_sorted_parquet(handle, table, order, self._schema)
        return {"duplicate_keys": count, "examples": examples} if count else None


class WriteParquetShards(WriteShards):
    """Write batches as `num_shards` sorted Parquet files in `directory` (ParquetShards).

    In: batches holding the schema's columns plus the internal key hash and source
    columns (and the keep flag when `kept_only`). Out: ShardsWritten: `written`,
    the paths, and `figures`, one dict per shard with repeated keys.
    """

    def __init__(
        self,
        directory: str,
        num_shards: int,
        schema: pa.Schema,
        kept_only: bool = False,
        spill_dir: Optional[str] = None,
        spill_label: str = "rows",
    ):
        super().__init__(directory, num_shards, ParquetShards(schema, kept_only), spill_dir, spill_label)


def _line_shard(line: str, num_shards: int) -> int:
    digest = hashlib.blake2b(line.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


class JsonLinesShards(ShardFormat):
    """JSON strings split by a hash of the line; each shard's lines sorted."""

    suffix = ".jsonl"

    def split(self, line: str, num_shards: int):
        yield _line_shard(line, num_shards), line

    def write(self, handle, lines: list) -> None:
        handle.write("".join(sorted(line + "\n" for line in lines)).encode("utf-8", "surrogatepass"))


class WriteJsonLinesShards(WriteShards):
    """Write JSON strings as `num_shards` sorted JSON Lines files in `directory`.

    In: str, one JSON document each. Out: ShardsWritten (the paths, no figures).
    """

    def __init__(self, directory: str, num_shards: int):
        super().__init__(directory, num_shards, JsonLinesShards())


class WriteJsonFiles(beam.PTransform):
    """Write several JSON documents, each computed from side inputs, in one stage.

    In: the pipeline root. `documents`: path -> (make_value, names); the document at
    a path is `make_value(**values)` of the side inputs it names. `side_inputs`: name
    -> singleton PCollection. The writes wait for every PCollection in `after` to be
    complete (side inputs they ignore), so a file written last can mark a finished run.
    A Create of several elements reshuffles them, so the documents are spread over the
    workers and written side by side, where a stage per document would run one after
    the other (each of entry_counts.json and entry_counts_kept.json takes ~0.3 s for
    500k entries). Out: the paths.
    """

    def __init__(self, documents: dict, side_inputs: Optional[dict] = None, after: Sequence = ()):
        super().__init__()
        self._documents = dict(documents)
        self._side_inputs = side_inputs or {}
        self._after = list(after)

    def expand(self, pbegin: PBegin) -> PCollection[str]:
        documents = self._documents
        singletons = {name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in self._side_inputs.items()}
        for i, pcoll in enumerate(self._after):
            singletons[f"_after_{i}"] = beam.pvalue.AsList(pcoll)

        def write(target, **values):
            make_value, names = documents[target]
            return write_json_atomically(target, make_value(**{name: values[name] for name in names}))

        return pbegin | "Documents" >> beam.Create(sorted(documents)) | "Write" >> beam.Map(write, **singletons)


class WriteJsonFile(WriteJsonFiles):
    """WriteJsonFiles of one document: `make_value(**side_values)` of every side input, to `path`."""

    def __init__(
        self, path: str, make_value: Callable[..., object], side_inputs: Optional[dict] = None, after: Sequence = ()
    ):
        side_inputs = side_inputs or {}
        super().__init__({path: (make_value, tuple(side_inputs))}, side_inputs, after)
