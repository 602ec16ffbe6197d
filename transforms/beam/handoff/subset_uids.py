"""WriteSubsetUids: DataComp's `subset_uids.npy`, sorted and unique, never gathered in one worker's memory.

The kept uids are split into uid-range buckets (transforms.handoff.uids.uid_buckets);
each bucket is sorted and written as a fragment through the sharded-file sink; the
final file is the .npy header followed by the fragments in bucket order, streamed.
Fragments live in a hidden `.subset_uids` folder and are deleted at the end.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

from transforms.beam.io import (
    copy_file,
    delete_quietly,
    remove_empty_local_dir,
    write_atomically,
)
from transforms.beam.sink import ShardFormat, WriteShards
from transforms.core.columns import KEPT, KEY
from transforms.handoff.uids import (
    UID_DTYPE,
    npy_header,
    pack_uids,
    sorted_unique_uids,
    uid_buckets,
    uids_bytes,
)

__all__ = ["UidBuckets", "WriteSubsetUids"]


class UidBuckets(ShardFormat):
    """Kept uids split by uid range; each bucket sorted and unique, as the rows of the .npy."""

    def split(self, batch: pa.RecordBatch, num_shards: int):
        batch = batch.filter(batch.column(KEPT))
        if batch.num_rows == 0:
            return
        packed = pack_uids(batch.column(KEY).to_pylist())  # raises UidError, naming the key
        buckets = uid_buckets(packed, num_shards)
        for bucket in np.unique(buckets):
            yield int(bucket), packed[buckets == bucket]

    def write(self, handle, parts: list) -> dict:
        uids = sorted_unique_uids(np.concatenate(parts)) if parts else np.zeros(0, UID_DTYPE)
        handle.write(uids_bytes(uids))
        return {"uids": len(uids)}

    def path(self, directory: str, shard: int, num_shards: int) -> str:
        return FileSystems.join(directory, f"part-{shard:05d}.bin")


def _write_npy(path: str, fragments: list[str], counts: list[dict], directory: str) -> str:
    """The .npy header, then every bucket's fragment in bucket order (their names sort so)."""
    fragments = sorted(fragments)

    def write(handle):
        handle.write(npy_header(sum(count["uids"] for count in counts)))
        for fragment in fragments:
            copy_file(fragment, handle)

    write_atomically(path, write)
    delete_quietly(fragments)
    remove_empty_local_dir(directory)
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

    def expand(self, sampled: PCollection[pa.RecordBatch]) -> PCollection[str]:
        directory = self._dir
        fragments = sampled | "SortUidBuckets" >> WriteShards(directory, self._num_buckets, UidBuckets())
        return (
            sampled.pipeline
            | "UidsPath" >> beam.Create([self._path])
            | "WriteUidsNpy"
            >> beam.Map(
                _write_npy,
                fragments=beam.pvalue.AsList(fragments.written),
                counts=beam.pvalue.AsList(fragments.figures),
                directory=directory,
            )
        )
