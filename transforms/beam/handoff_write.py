"""Training hand-off writers: webdataset key lists and reshards, DataComp uids, img2dataset lists.

Every writer follows transforms/beam/write.py: files are written under a temporary name and
renamed when complete (`write_atomically`), and their bytes depend only on the data, never
on the runner, worker count or bundle boundaries. The pure parts (tar members, uid packing,
shard plans, manifests) are in `webdataset_files` and `handoff`.

Large outputs are never gathered in one worker's memory:
- a reshard copies each input shard's kept samples into per-output-shard fragments
  (tar members without the archive end) in one pass over that input shard; each output
  shard is then the concatenation of its fragments, streamed, plus the archive end;
- `subset_uids.npy` is sorted in uid-range buckets, each written as a fragment; the
  final file is the .npy header followed by the fragments in bucket order, streamed.
Fragments live in hidden `.fragments`/`.subset_uids` folders and are deleted at the end.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.beam.io import write_atomically, write_json_atomically
from transforms.beam.spill import GroupBatchesByShard
from transforms.beam.write import (
    SORT_COLUMNS,
    _SplitBatchByShardFn,
    _with_every_shard,
    shard_name,
    write_sorted_parquet,
)
from transforms.caption_files import buffered
from transforms.core.columns import KEPT, KEY, SOURCE_FILE, SOURCE_ROW, TEXT, WDS_KEY
from transforms.formats.tar import iter_tar_samples, tar_end, tar_sample_bytes
from transforms.handoff.reshard import (
    FRAGMENTS,
    MANIFEST,
    fragment_name,
    inputs_of_output_shard,
    kept_key_file_name,
    num_output_shards,
    output_shard_name,
    reshard_manifest,
    shard_starts,
)
from transforms.handoff.uids import (
    npy_header,
    pack_uids,
    sorted_unique_uids,
    uid_buckets,
    uids_bytes,
)

_COPY_CHUNK = 16 << 20


def _copy_file(source: str, handle) -> int:
    copied = 0
    with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as fragment:
        while True:
            chunk = fragment.read(_COPY_CHUNK)
            if not chunk:
                return copied
            handle.write(chunk)
            copied += len(chunk)


def _delete_quietly(paths: Sequence[str]) -> None:
    """Delete the files that still exist (a retried step may find some gone already)."""
    existing = [path for path in paths if path and FileSystems.exists(path)]
    if existing:
        FileSystems.delete(existing)


def _remove_empty_local_dir(directory: str) -> None:
    import os

    if "://" not in directory and os.path.isdir(directory) and not os.listdir(directory):
        os.rmdir(directory)


# --- webdataset: kept samples per input shard ------------------------------------------


class ShardKept(NamedTuple):
    """The kept samples of one input shard: positions in the tar (ascending) and __key__s."""

    index: int  # the input shard's index in the run's sorted input list
    path: str
    accepted: int  # records of this shard that reached matching
    rows: np.ndarray  # int64 positions of kept samples
    keys: list  # their webdataset __key__s, same order


class _KeptPositionsFn(beam.DoFn):
    """Sampled batch -> (input index, (accepted, kept rows, kept __key__s)) per input in it."""

    def process(self, batch: pa.RecordBatch):
        files = batch.column(SOURCE_FILE).to_numpy()
        rows = batch.column(SOURCE_ROW).to_numpy()
        kept = batch.column(KEPT).to_numpy(zero_copy_only=False)
        for index in np.unique(files):
            in_file = files == index
            chosen = np.flatnonzero(in_file & kept)
            keys = batch.column(WDS_KEY).take(pa.array(chosen, pa.int64())).to_pylist()
            yield int(index), (int(in_file.sum()), rows[chosen].astype(np.int64), keys)


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
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        keys = [keys[i] for i in order]
        if self._keys_dir is not None:
            data = "".join(key + "\n" for key in keys).encode("utf-8", "surrogateescape")
            name = kept_key_file_name(paths[0], index, self._with_index)
            write_atomically(FileSystems.join(self._keys_dir, name), lambda handle: handle.write(data))
        yield ShardKept(index, paths[0], accepted, rows, keys)


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


def _kept_counts(per_shard):
    """Singleton: [(input index, accepted, kept, path)] for every input shard, by index."""
    return (
        per_shard
        | "KeptCount" >> beam.Map(lambda shard: (shard.index, shard.accepted, len(shard.rows), shard.path))
        | "AllKeptCounts" >> beam.combiners.ToList()
        | "SortKeptCounts" >> beam.Map(sorted)
    )


def shards_document(counts, keys_subdir: str, with_index: bool) -> dict:
    """webdataset/shards.json: per input shard, its kept-keys file and counts."""
    shards = [
        {"shard": path, "keys_file": f"{keys_subdir}/{kept_key_file_name(path, index, with_index)}", "accepted": accepted, "kept": kept}
        for index, accepted, kept, path in counts
    ]
    return {"kept": sum(s["kept"] for s in shards), "accepted": sum(s["accepted"] for s in shards), "shards": shards}


# --- webdataset: resharding --------------------------------------------------------------


class _WriteFragmentsFn(beam.DoFn):
    """ShardKept -> fragments (output shard, input index, samples, path), one pass over its tar."""

    def __init__(self, fragments_dir: str, samples_per_shard: int):
        self._dir = fragments_dir
        self._per_shard = samples_per_shard
        self._copied = Metrics.counter("curation", "reshard_samples_copied")
        self._counts_seen = None
        self._starts = None

    def _kept_samples(self, shard: ShardKept, start: int):
        """(global number, sample bytes) of the shard's kept samples, in tar order."""
        path = shard.path
        wanted = {int(row): (g, key) for g, (row, key) in enumerate(zip(shard.rows, shard.keys), start)}
        found = 0
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            for sample in iter_tar_samples(buffered(handle), lambda index, _: index in wanted):
                if sample.index not in wanted:
                    continue
                number, key = wanted[sample.index]
                if sample.key != key:
                    raise RuntimeError(f"{path} changed during the run: sample {sample.index} is {sample.key!r}, was {key!r}")
                yield number, tar_sample_bytes(sample)
                found += 1
                if found == len(wanted):
                    return  # stop before any fault the first read also stopped at
        raise RuntimeError(f"{path} changed during the run: {len(wanted) - found} kept samples are no longer in it")

    def process(self, shard: ShardKept, counts):
        if len(shard.rows) == 0:
            return
        if counts is not self._counts_seen:  # the same side input object for a whole bundle
            self._counts_seen, self._starts = counts, shard_starts([count[2] for count in counts])
        start = int(self._starts[shard.index])
        per_shard = self._per_shard
        samples = self._kept_samples(shard, start)
        for output, group in itertools.groupby(samples, key=lambda item: item[0] // per_shard):
            written = []

            def write(handle, group=group, written=written):
                for _, data in group:
                    handle.write(data)
                    written.append(1)

            path = FileSystems.join(self._dir, fragment_name(output, shard.index))
            write_atomically(path, write)
            self._copied.inc(len(written))
            yield int(output), shard.index, len(written), path


class _ConcatenateFragmentsFn(beam.DoFn):
    """Output shard number -> its tar: its fragments streamed in input order, then the end."""

    def __init__(self, directory: str, samples_per_shard: int):
        self._dir = directory
        self._per_shard = samples_per_shard
        self._seen = None

    def _plan(self, fragments, counts):
        # Side inputs are the same objects for a whole bundle: index them once, not per shard.
        if self._seen is None or self._seen[0] is not fragments or self._seen[1] is not counts:
            kept = np.array([count[2] for count in counts], dtype=np.int64)
            available = {(o, index): (n, path) for o, index, n, path in fragments}
            self._seen = (fragments, counts, kept, shard_starts(kept), available)
        return self._seen[2:]

    def process(self, output: int, fragments, counts):
        kept, starts, available = self._plan(fragments, counts)
        expected = inputs_of_output_shard(output, starts, kept, self._per_shard)
        pieces = []
        for index, samples in expected:
            n, path = available.get((output, index), (None, None))
            if n != samples:
                raise RuntimeError(f"output shard {output}: input {index} should give {samples} samples, its fragment holds {n}")
            pieces.append(path)
        num_shards = num_output_shards(int(kept.sum()), self._per_shard)

        def write(handle):
            length = sum(_copy_file(path, handle) for path in pieces)
            handle.write(tar_end(length))

        write_atomically(FileSystems.join(self._dir, output_shard_name(output, num_shards)), write)
        yield output, sum(samples for _, samples in expected)


def _finish_reshard(manifest_path: str, shards, fragments, directory: str, samples_per_shard: int, extra: dict) -> str:
    _delete_quietly([path for _, _, _, path in fragments])
    _remove_empty_local_dir(FileSystems.join(directory, FRAGMENTS))
    sizes = [samples for _, samples in sorted(shards)]
    return write_json_atomically(manifest_path, reshard_manifest(directory, sizes, samples_per_shard, extra))


class ReshardWebdataset(beam.PTransform):
    """New webdataset shards holding exactly the kept samples, every member byte for byte.

    In: ShardKept per input shard (`kept_per_shard`). Out: the manifest path, written
    last. Kept samples in (input shard, position) order are numbered 0..n-1 and sample g
    goes to `{g // samples_per_shard:06d}.tar`: full shards but the last, no gaps.
    """

    def __init__(self, directory: str, samples_per_shard: int, extra: Optional[dict] = None):
        super().__init__()
        self._dir = directory
        self._per_shard = samples_per_shard
        self._extra = dict(extra or {})

    def expand(self, per_shard):
        directory, per_shard_count = self._dir, self._per_shard
        counts = _kept_counts(per_shard)
        fragments = (
            per_shard
            | "SpreadInputShards" >> beam.Reshuffle()
            | "CopyKeptSamples"
            >> beam.ParDo(
                _WriteFragmentsFn(FileSystems.join(directory, FRAGMENTS), per_shard_count),
                counts=beam.pvalue.AsSingleton(counts),
            )
        )
        shards = (
            counts
            | "OutputShardNumbers" >> beam.FlatMap(lambda c: range(num_output_shards(sum(x[2] for x in c), per_shard_count)))
            | "SpreadOutputShards" >> beam.Reshuffle()
            | "ConcatenateFragments"
            >> beam.ParDo(
                _ConcatenateFragmentsFn(directory, per_shard_count),
                fragments=beam.pvalue.AsList(fragments),
                counts=beam.pvalue.AsSingleton(counts),
            )
        )
        extra = self._extra
        return (
            per_shard.pipeline
            | "ManifestPath" >> beam.Create([FileSystems.join(directory, MANIFEST)])
            | "WriteManifest"
            >> beam.Map(
                _finish_reshard,
                shards=beam.pvalue.AsList(shards),
                fragments=beam.pvalue.AsList(fragments),
                directory=directory,
                samples_per_shard=per_shard_count,
                extra=extra,
            )
        )


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

    def expand(self, sampled):
        per_shard = kept_per_shard(sampled, self._listed_files, self._keys_dir, self._with_index)
        written = []
        if self._keys_dir is not None:
            shards_json, with_index = self._shards_json, self._with_index
            keys_subdir = self._keys_dir.rstrip("/").rsplit("/", 1)[-1]
            written.append(
                _kept_counts(per_shard)
                | "WriteShardsJson"
                >> beam.Map(lambda counts: write_json_atomically(shards_json, shards_document(counts, keys_subdir, with_index)))
            )
        if self._reshard_dir is not None:
            written.append(per_shard | "Reshard" >> ReshardWebdataset(self._reshard_dir, self._per_shard, self._extra))
        return written


# --- DataComp: subset_uids.npy -------------------------------------------------------------


class _UidBucketsFn(beam.DoFn):
    def __init__(self, num_buckets: int):
        self._num_buckets = num_buckets

    def process(self, batch: pa.RecordBatch):
        batch = batch.filter(batch.column(KEPT))
        if batch.num_rows == 0:
            return
        packed = pack_uids(batch.column(KEY).to_pylist())  # raises UidError, naming the key
        buckets = uid_buckets(packed, self._num_buckets)
        for bucket in np.unique(buckets):
            yield int(bucket), packed[buckets == bucket]


def _write_uid_bucket(bucket_and_parts, directory: str):
    bucket, parts = bucket_and_parts
    parts = [part for part in parts if part is not None]
    if not parts:
        return bucket, 0, None
    uids = sorted_unique_uids(np.concatenate(parts))
    data = uids_bytes(uids)
    path = write_atomically(FileSystems.join(directory, f"part-{bucket:05d}.bin"), lambda handle: handle.write(data))
    return bucket, len(uids), path


def _write_npy(path: str, buckets, directory: str) -> str:
    buckets = sorted(buckets)
    total = sum(count for _, count, _ in buckets)

    def write(handle):
        handle.write(npy_header(total))
        for _, _, part in buckets:
            if part:
                _copy_file(part, handle)

    write_atomically(path, write)
    _delete_quietly([part for _, _, part in buckets])
    _remove_empty_local_dir(directory)
    return path


class WriteSubsetUids(beam.PTransform):
    """`subset_uids.npy` for DataComp's resharder: the kept uids as sorted, unique u8,u8 pairs.

    In: sampled batches whose keys are 32-hex uids (a key that is not one fails the run
    with UidError naming it). Out: the path.
    """

    def __init__(self, path: str, num_buckets: int):
        super().__init__()
        self._path = path
        self._num_buckets = num_buckets
        self._dir = FileSystems.join(path.rsplit("/", 1)[0], ".subset_uids")

    def expand(self, sampled):
        directory = self._dir
        parts = sampled | "PackUids" >> beam.ParDo(_UidBucketsFn(self._num_buckets))
        buckets = (
            _with_every_shard(parts, self._num_buckets, "UidBuckets")
            | "GroupUidBuckets" >> beam.GroupByKey()
            | "SortUidBuckets" >> beam.Map(_write_uid_bucket, directory=directory)
        )
        return (
            sampled.pipeline
            | "UidsPath" >> beam.Create([self._path])
            | "WriteUidsNpy" >> beam.Map(_write_npy, buckets=beam.pvalue.AsList(buckets), directory=directory)
        )


# --- img2dataset: url/caption parquet ---------------------------------------------------

IMG2DATASET_URL = "url"
IMG2DATASET_CAPTION = "caption"
def img2dataset_schema(key_column: str) -> pa.Schema:
    return pa.schema([(IMG2DATASET_URL, pa.string()), (IMG2DATASET_CAPTION, pa.string()), (key_column, pa.string())])


def _write_img2dataset_shard(shard_and_parts, directory: str, num_shards: int, key_column: str) -> str:
    shard, parts = shard_and_parts
    batches = [part for part in parts if part is not None]
    schema = img2dataset_schema(key_column)
    path = shard_name(directory, shard, num_shards, ".parquet")
    if not batches:
        return write_atomically(path, lambda handle: pq.write_table(schema.empty_table(), handle, compression="zstd"))
    table = pa.Table.from_batches(batches)
    order = pc.sort_indices(table, sort_keys=SORT_COLUMNS)
    table = pa.table([table.column("url").cast(pa.string()), table.column(TEXT), table.column(KEY)], schema=schema)
    return write_atomically(path, lambda handle: write_sorted_parquet(handle, table, order, schema))


class WriteImg2datasetShards(beam.PTransform):
    """The kept rows as img2dataset input: `url`, `caption` and the key (`key_column`).

    Sharded and sorted like WriteParquetShards (by key hash; by key, source file and
    row), so the files are the same bytes on every runner. Read them with
    `img2dataset --input_format parquet --url_col url --caption_col caption`.
    """

    def __init__(self, directory: str, num_shards: int, key_column: str, spill_dir: Optional[str] = None):
        super().__init__()
        self._directory = directory
        self._num_shards = num_shards
        self._key_column = key_column
        self._spill_dir = spill_dir

    def expand(self, sampled):
        parts = sampled | "SplitByShard" >> beam.ParDo(_SplitBatchByShardFn(self._num_shards, ["url", TEXT], kept_only=True))
        return (
            parts
            | "GroupShards" >> GroupBatchesByShard(self._spill_dir, "img2dataset", self._num_shards)
            | "WriteShards"
            >> beam.Map(_write_img2dataset_shard, directory=self._directory, num_shards=self._num_shards, key_column=self._key_column)
        )
