"""ReshardWebdataset: new webdataset shards holding exactly the kept samples, member for member.

A reshard copies each input shard's kept samples into per-output-shard fragments (tar
members without the archive end) in one pass over that input shard; each output shard is
then the concatenation of its fragments, streamed, plus the archive end. Fragments live
in a hidden `.fragments` folder and are deleted at the end. The pure plan (which kept
sample goes where, shard names, the manifest) is in transforms.handoff.reshard.
"""

from __future__ import annotations

import itertools
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from transforms.beam import metrics
from transforms.beam.handoff.kept import ShardKept, kept_counts
from transforms.beam.io import (
    copy_file,
    delete_quietly,
    remove_empty_local_dir,
    write_atomically,
    write_json_atomically,
)
from transforms.formats.compression import buffered
from transforms.formats.tar import Member, TarSample, iter_tar_samples, tar_end, tar_sample_bytes
from transforms.handoff.reshard import (
    FRAGMENTS,
    MANIFEST,
    fragment_name,
    inputs_of_output_shard,
    num_output_shards,
    output_shard_name,
    reshard_manifest,
    shard_starts,
)
from transforms.images.extra_texts import json_with_captions

__all__ = ["ReshardWebdataset", "with_captions"]


def with_captions(sample: TarSample, texts: list) -> TarSample:
    """The sample with caption_0 (the original), caption_1 ... in its `.json` (one added after its
    members when it had none): what open_clip's --json-text-key and the loaders read."""
    members, found = [], False
    for member in sample.members:
        if member.ext == "json":
            data = json_with_captions(member.data, texts)
            member, found = Member(member.name, member.ext, len(data), data), True
        members.append(member)
    if not found:
        data = json_with_captions(None, texts)
        first = sample.members[0]
        members.append(Member(first.name[: len(first.name) - len(first.ext)] + "json", "json", len(data), data))
    return TarSample(sample.index, sample.key, members)


class _WriteFragmentsFn(beam.DoFn):
    """ShardKept -> fragments (output shard, input index, samples, path), one pass over its tar."""

    def __init__(self, fragments_dir: str, samples_per_shard: int):
        self._dir = fragments_dir
        self._per_shard = samples_per_shard
        self._copied = Metrics.counter(metrics.CURATION, "reshard_samples_copied")
        self._counts_seen = None
        self._starts = None

    def _kept_samples(self, shard: ShardKept, start: int):
        """(global number, sample bytes) of the shard's kept samples, in tar order."""
        path = shard.path
        texts = shard.texts if shard.texts is not None else [None] * len(shard.keys)
        wanted = {
            int(row): (g, key, sample_texts)
            for g, (row, key, sample_texts) in enumerate(zip(shard.rows, shard.keys, texts, strict=True), start)
        }
        found = 0
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            for sample in iter_tar_samples(buffered(handle), lambda index, _: index in wanted):
                if sample.index not in wanted:
                    continue
                number, key, sample_texts = wanted[sample.index]
                if sample.key != key:
                    raise RuntimeError(
                        f"{path} changed during the run: sample {sample.index} is {sample.key!r}, was {key!r}"
                    )
                yield number, tar_sample_bytes(with_captions(sample, sample_texts) if sample_texts else sample)
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
                # write_atomically calls this once, while `group` is the groupby's current group.
                for _, data in group:  # noqa: B031
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
                raise RuntimeError(
                    f"output shard {output}: input {index} should give {samples} samples, its fragment holds {n}"
                )
            pieces.append(path)
        num_shards = num_output_shards(int(kept.sum()), self._per_shard)

        def write(handle):
            length = sum(copy_file(path, handle) for path in pieces)
            handle.write(tar_end(length))

        write_atomically(FileSystems.join(self._dir, output_shard_name(output, num_shards)), write)
        yield output, sum(samples for _, samples in expected)


def _finish_reshard(manifest_path: str, shards, fragments, directory: str, samples_per_shard: int, extra: dict) -> str:
    delete_quietly([path for _, _, _, path in fragments])
    remove_empty_local_dir(FileSystems.join(directory, FRAGMENTS))
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

    def expand(self, per_shard: PCollection[ShardKept]) -> PCollection[str]:
        directory, per_shard_count = self._dir, self._per_shard
        counts = kept_counts(per_shard)
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
            | "OutputShardNumbers"
            >> beam.FlatMap(lambda c: range(num_output_shards(sum(x[2] for x in c), per_shard_count)))
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
