"""WriteShards: the one sharded-file writer behind every `part-*` output.

Elements are split into parts by shard (the format says how: by key hash, line hash
or uid range), gathered per shard (through spill files on local engines,
transforms.beam.spill), and each shard is written by the format under a hidden
temporary name that is renamed into place when complete (write_atomically): a
killed run never leaves a partial file under a final name, and a rerun writes the
very same bytes. Every shard in range(num_shards) gets a file, empty ones included.
As in Beam's `fileio.WriteToFiles`, the sharding and renaming are done once, here,
and a format only says how to split an element and how to write one shard's parts
(`ShardFormat`). Several outputs of the same elements can go through one shuffle
and one stage (`together`): the FnApiRunner runs stages one after another, and
one stage of 2n shards keeps the workers busier than two stages of n.
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.io import write_atomically
from transforms.beam.spill import GroupBatchesByShard, _in_global_window
from transforms.core.accounting import output_name, written_figures
from transforms.core.batches import BatchGatherer, gather_rows

__all__ = ["ShardFormat", "ShardedOutput", "ShardsWritten", "WriteShards", "shard_name"]

_WRITTEN = "written"
_FIGURES = "figures"
_ROWS = "rows"


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

    def rows(self, parts: list) -> int:
        """How many rows `write` writes of these parts (the accounting's count of an output)."""
        return len(parts)

    def path(self, directory: str, shard: int, num_shards: int) -> str:
        return shard_name(directory, shard, num_shards, self.suffix)


class ShardedOutput(NamedTuple):
    """One sharded output: its directory, shard count and format; `label` names its spill files
    (the progress display counts rows by it); `prepare`, if given, turns each element into what
    the format splits."""

    directory: str
    num_shards: int
    format: ShardFormat
    label: str = "rows"
    prepare: Optional[Callable] = None


class ShardsWritten(NamedTuple):
    written: PCollection  # [str]: the path of every shard, once written
    figures: PCollection  # [dict]: what `ShardFormat.write` reported (e.g. duplicate keys)
    rows: PCollection = None  # [Counter]: per shard of every output, the rows written (accounting.written_figures)


class _Keys:
    """The outputs' shards numbered one after another: shard s of output i is key offsets[i] + s."""

    def __init__(self, outputs: Sequence[ShardedOutput]):
        self.outputs = list(outputs)
        self.offsets = [0]
        for output in self.outputs:
            self.offsets.append(self.offsets[-1] + output.num_shards)

    def output_and_shard(self, key: int) -> tuple[int, int]:
        index = bisect.bisect_right(self.offsets, key) - 1
        return index, key - self.offsets[index]

    def labels(self) -> list[str]:
        return [output.label for output in self.outputs for _ in range(output.num_shards)]


class _SplitFn(beam.DoFn):
    """Elements -> (key, part) of every output. Record batches are gathered per output
    (transforms.core.batches: a cut costs per piece) and cut together: which shard a row
    goes to is the format's rule for that row alone, and each shard's writer orders its rows."""

    def __init__(self, keys: _Keys):
        self._keys = keys

    def start_bundle(self):
        rows = gather_rows(self._keys.offsets[-1])
        self._gatherers = [BatchGatherer(rows) for _ in self._keys.outputs]

    def process(self, element):
        for index, output in enumerate(self._keys.outputs):
            prepared = element if output.prepare is None else output.prepare(element)
            ready = self._gatherers[index].add(prepared) if isinstance(prepared, pa.RecordBatch) else [prepared]
            for gathered in ready:
                yield from self._split(index, gathered)

    def finish_bundle(self):
        for index, gatherer in enumerate(self._gatherers):
            for gathered in gatherer.drain():
                for item in self._split(index, gathered):
                    yield _in_global_window(item)

    def _split(self, index: int, prepared):
        output, offset = self._keys.outputs[index], self._keys.offsets[index]
        for shard, part in output.format.split(prepared, output.num_shards):
            yield offset + shard, part


class _WriteShardFn(beam.DoFn):
    def __init__(self, keys: _Keys):
        self._keys = keys

    def process(self, key_and_parts):
        key, parts = key_and_parts
        index, shard = self._keys.output_and_shard(key)
        output = self._keys.outputs[index]
        reported = []
        path = output.format.path(output.directory, shard, output.num_shards)
        write_atomically(path, lambda handle: reported.append(output.format.write(handle, parts)))
        if reported[0] and index == 0:
            yield beam.pvalue.TaggedOutput(_FIGURES, reported[0])
        rows = written_figures(output_name(output.directory), output.format.rows(parts))
        yield beam.pvalue.TaggedOutput(_ROWS, rows)
        yield path


class WriteShards(beam.PTransform):
    """Write elements as `num_shards` files in `directory`, in `fmt`'s format.

    In: whatever `fmt.split` takes. Out: `ShardsWritten`: the paths, the
    figures the format reported per shard, and the rows written per shard of every
    output. With `spill_dir`, the parts reach their shard's writer through files
    there (`spill_label` names them), not through the runner's memory; only Arrow
    record batches can be spilled. `prepare`, if given, turns each element into
    what `fmt` splits. `together`: more outputs of the same elements, written in
    the same shuffle and stage; their paths and rows are in `written` and `rows`
    too, their figures are not reported.
    """

    def __init__(
        self,
        directory: str,
        num_shards: int,
        fmt: ShardFormat,
        spill_dir: Optional[str] = None,
        spill_label: str = "rows",
        prepare: Optional[Callable] = None,
        together: Sequence[ShardedOutput] = (),
    ):
        super().__init__()
        self._keys = _Keys([ShardedOutput(directory, num_shards, fmt, spill_label, prepare), *together])
        self._spill_dir = spill_dir

    def expand(self, elements: PCollection) -> ShardsWritten:
        keys = self._keys
        written = (
            elements
            | "SplitByShard" >> beam.ParDo(_SplitFn(keys))
            | "GroupShards" >> GroupBatchesByShard(self._spill_dir, keys.labels())
            | "WriteShards" >> beam.ParDo(_WriteShardFn(keys)).with_outputs(_FIGURES, _ROWS, main=_WRITTEN)
        )
        return ShardsWritten(written[_WRITTEN], written[_FIGURES], written[_ROWS])
