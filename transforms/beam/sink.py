"""WriteShards: the one sharded-file writer behind every `part-*` output.

Elements are split into parts by shard (the format says how: by key hash, line hash
or uid range), gathered per shard (through spill files on local engines,
transforms.beam.spill), and each shard is written by the format under a hidden
temporary name that is renamed into place when complete (write_atomically): a
killed run never leaves a partial file under a final name, and a rerun writes the
very same bytes. Every shard in range(num_shards) gets a file, empty ones included.
As in Beam's `fileio.WriteToFiles`, the sharding and renaming are done once, here,
and a format only says how to split an element and how to write one shard's parts
(`ShardFormat`).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.io import write_atomically
from transforms.beam.spill import GroupBatchesByShard

__all__ = ["ShardFormat", "ShardsWritten", "WriteShards", "shard_name"]

_WRITTEN = "written"
_FIGURES = "figures"


def shard_name(directory: str, shard: int, num_shards: int, suffix: str) -> str:
    return FileSystems.join(directory, f"part-{shard:05d}-of-{num_shards:05d}{suffix}")


class ShardFormat:
    """The format-specific parts of a sharded output; subclasses are pickled into the DoFns."""

    suffix = ""

    def split(self, element, num_shards: int) -> Iterable[tuple[int, object]]:
        """(shard, part) pairs of one element; a part is what `write` gets a list of."""
        raise NotImplementedError

    def write(self, handle, parts: list) -> Optional[dict]:
        """Write one shard's parts (maybe none) to `handle`; return figures for the run's stats, or None."""
        raise NotImplementedError

    def path(self, directory: str, shard: int, num_shards: int) -> str:
        return shard_name(directory, shard, num_shards, self.suffix)


class ShardsWritten(NamedTuple):
    written: PCollection  # [str]: the path of every shard, once written
    figures: PCollection  # [dict]: what `ShardFormat.write` reported (e.g. duplicate keys)


class _SplitFn(beam.DoFn):
    def __init__(self, fmt: ShardFormat, num_shards: int):
        self._format = fmt
        self._num_shards = num_shards

    def process(self, element):
        yield from self._format.split(element, self._num_shards)


class _WriteShardFn(beam.DoFn):
    def __init__(self, fmt: ShardFormat, directory: str, num_shards: int):
        self._format = fmt
        self._directory = directory
        self._num_shards = num_shards

    def process(self, shard_and_parts):
        shard, parts = shard_and_parts
        reported = []
        path = self._format.path(self._directory, shard, self._num_shards)
        write_atomically(path, lambda handle: reported.append(self._format.write(handle, parts)))
        if reported[0]:
            yield beam.pvalue.TaggedOutput(_FIGURES, reported[0])
        yield path


class WriteShards(beam.PTransform):
    """Write elements as `num_shards` files in `directory`, in `fmt`'s format.

    In: whatever `fmt.split` takes. Out: `ShardsWritten`: the paths, and the
    figures the format reported per shard. With `spill_dir`, the parts reach their
    shard's writer through files there (`spill_label` names them), not through the
    runner's memory; only Arrow record batches can be spilled.
    """

    def __init__(
        self,
        directory: str,
        num_shards: int,
        fmt: ShardFormat,
        spill_dir: Optional[str] = None,
        spill_label: str = "rows",
    ):
        super().__init__()
        self._directory = directory
        self._num_shards = num_shards
        self._format = fmt
        self._spill_dir = spill_dir
        self._spill_label = spill_label

    def expand(self, elements: PCollection) -> ShardsWritten:
        fmt, num_shards = self._format, self._num_shards
        written = (
            elements
            | "SplitByShard" >> beam.ParDo(_SplitFn(fmt, num_shards))
            | "GroupShards" >> GroupBatchesByShard(self._spill_dir, self._spill_label, num_shards)
            | "WriteShards"
            >> beam.ParDo(_WriteShardFn(fmt, self._directory, num_shards)).with_outputs(_FIGURES, main=_WRITTEN)
        )
        return ShardsWritten(written[_WRITTEN], written[_FIGURES])
