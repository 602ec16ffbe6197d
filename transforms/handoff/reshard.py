"""Webdataset hand-off plans without Beam: kept-key file names, reshard plans, manifests.

No Beam import: the writers in `transforms.beam.handoff.webdataset`, the tests and any
script call these. Resharding: kept samples in the global order (input shard, position
in it) are numbered 0..n-1; sample g goes to output shard g // samples_per_shard, so
shards are full but the last, and numbered without gaps. An input shard's kept samples
start at the sum of the kept counts of the shards before it.
"""

from __future__ import annotations

import math
import posixpath
from typing import Optional, Sequence

import numpy as np

_TAR_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tar")


def shard_stem(path: str) -> str:
    """`gs://b/pool/000123.tar` -> `000123`."""
    name = posixpath.basename(path)
    for suffix in _TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def key_files_need_index(paths: Sequence[str]) -> bool:
    """Whether two inputs share a stem, so kept-keys file names must carry the input index."""
    stems = [shard_stem(path) for path in paths]
    return len(set(stems)) < len(stems)


def kept_key_file_name(path: str, index: int, with_index: bool) -> str:
    """The kept-keys file of an input shard: `<stem>.txt`, or `<index, 6 digits>-<stem>.txt`
    for every input when two inputs share a stem (`key_files_need_index`)."""
    stem = shard_stem(path)
    return f"{index:06d}-{stem}.txt" if with_index else f"{stem}.txt"


# --- resharding --------------------------------------------------------------------------

MANIFEST = "manifest.json"
RESHARD_MARKER = ".balancebeam-reshard"
FRAGMENTS = ".fragments"


def shard_starts(kept_counts: Sequence[int]) -> np.ndarray:
    """Global number of each input shard's first kept sample (an exclusive cumulative sum)."""
    counts = np.asarray(kept_counts, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts


def num_output_shards(total: int, samples_per_shard: int) -> int:
    return math.ceil(total / samples_per_shard) if total else 0


def shard_name_width(num_shards: int) -> int:
    """Digits of output shard names: 6, more only past 999,999 shards."""
    return max(6, len(str(max(num_shards - 1, 0))))


def output_shard_name(shard: int, num_shards: int) -> str:
    return f"{shard:0{shard_name_width(num_shards)}d}.tar"


def fragment_name(output_shard: int, input_index: int) -> str:
    return f"{output_shard:09d}-{input_index:09d}.part"


def output_shards_of_input(start: int, count: int, samples_per_shard: int) -> list[tuple[int, int]]:
    """(output shard, samples) that an input shard's `count` kept samples from `start` fill."""
    pieces = []
    position, end = start, start + count
    while position < end:
        shard = position // samples_per_shard
        stop = min(end, (shard + 1) * samples_per_shard)
        pieces.append((shard, stop - position))
        position = stop
    return pieces


def inputs_of_output_shard(
    shard: int, starts: Sequence[int], counts: Sequence[int], samples_per_shard: int
) -> list[tuple[int, int]]:
    """(input index, samples) that fill output `shard`, in input order (binary search: the
    starts and ends of input shards are non-decreasing)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = starts + np.asarray(counts, dtype=np.int64)
    low, high = shard * samples_per_shard, (shard + 1) * samples_per_shard
    first = int(np.searchsorted(ends, low, side="right"))
    last = int(np.searchsorted(starts, high, side="left"))
    pieces = []
    for index in range(first, last):
        overlap = int(min(high, ends[index]) - max(low, starts[index]))
        if overlap > 0:
            pieces.append((index, overlap))
    return pieces


def brace_pattern(directory: str, num_shards: int) -> Optional[str]:
    """The URL pattern of shards 0..n-1 in `directory`, as open_clip's --train-data takes it."""
    if num_shards == 0:
        return None
    width = shard_name_width(num_shards)
    if num_shards == 1:
        name = f"{0:0{width}d}.tar"
    else:
        name = f"{{{0:0{width}d}..{num_shards - 1:0{width}d}}}.tar"
    return f"{directory.rstrip('/')}/{name}"


def reshard_manifest(
    directory: str, shard_sizes: Sequence[int], samples_per_shard: int, extra: Optional[dict] = None
) -> dict:
    """manifest.json of a reshard: the pattern and sample count to train on, and every shard."""
    total = int(sum(shard_sizes))
    pattern = brace_pattern(directory, len(shard_sizes))
    manifest = {
        "train_data": pattern,
        "train_num_samples": total,
        "num_shards": len(shard_sizes),
        "samples_per_shard": samples_per_shard,
        "open_clip_args": (
            ["--dataset-type", "webdataset", "--train-data", pattern, "--train-num-samples", str(total)]
            if pattern
            else []
        ),
        "shards": [
            {"url": output_shard_name(i, len(shard_sizes)), "nsamples": int(size)} for i, size in enumerate(shard_sizes)
        ],
        "generator": "balancebeam",
    }
    manifest.update(extra or {})
    return manifest
