"""Training hand-off formats without Beam: DataComp uids, reshard plans and manifests.

No Beam import: the writers in `handoff_write`, the tests and any script call these.

- DataComp: `subset_uids.npy` is what DataComp's `resharder.py` loads (`np.load`, checked
  against `np.dtype("u8,u8")`) and searches with `np.searchsorted`: one row per kept uid,
  f0 = int(uid[:16], 16), f1 = int(uid[16:32], 16), little-endian, sorted, no repeats.
- Webdataset resharding: kept samples in the global order (input shard, position in
  it) are numbered 0..n-1; sample g goes to output shard g // samples_per_shard, so
  shards are full but the last, and numbered without gaps. An input shard's kept
  samples start at the sum of the kept counts of the shards before it.
"""

from __future__ import annotations

import io
import math
import posixpath
import re
from typing import Iterable, Optional, Sequence

import numpy as np

# --- DataComp uids ---------------------------------------------------------------------

UID_DTYPE = np.dtype([("f0", "<u8"), ("f1", "<u8")])  # == np.dtype("u8,u8") on little-endian machines
_UID = re.compile(r"^[0-9a-fA-F]{32}$")


class UidError(ValueError):
    """A key that is not a DataComp uid (32 hex digits), where one is needed."""


def is_uid(key: object) -> bool:
    return isinstance(key, str) and _UID.match(key) is not None


def check_uids(keys: Iterable[object], where: str = "") -> None:
    """Raise UidError naming the first key that is not a 32-hex uid."""
    for key in keys:
        if not is_uid(key):
            raise UidError(
                f"subset_uids.npy needs every key to be a DataComp uid (32 hex digits), got {key!r}{where}; "
                "take the keys from the uid column (--input_preset datacomp, or --key_field uid), "
                "or leave datacomp out of --handoff"
            )


def pack_uids(keys: Sequence[str]) -> np.ndarray:
    """Keys (32-hex uids) -> array of UID_DTYPE, f0 the first 16 hex digits, f1 the last 16.

    Same order as `keys`; raises UidError on the first key that is not a uid.
    """
    check_uids(keys)
    packed = np.empty(len(keys), dtype=UID_DTYPE)
    if len(keys):
        packed["f0"] = np.fromiter((int(key[:16], 16) for key in keys), dtype=np.uint64, count=len(keys))
        packed["f1"] = np.fromiter((int(key[16:], 16) for key in keys), dtype=np.uint64, count=len(keys))
    return packed


def unpack_uids(packed: np.ndarray) -> list[str]:
    """The inverse of `pack_uids`, in lower-case hex."""
    return [f"{int(a):016x}{int(b):016x}" for a, b in zip(packed["f0"], packed["f1"])]


def sorted_unique_uids(packed: np.ndarray) -> np.ndarray:
    """Sorted by (f0, f1), i.e. by the 128-bit uid, each uid once."""
    return np.unique(np.asarray(packed, dtype=UID_DTYPE))


def uid_buckets(packed: np.ndarray, num_buckets: int) -> np.ndarray:
    """Range bucket of each uid, non-decreasing in the uid: concatenating sorted buckets
    in bucket order gives the whole sorted array (uids are uniform, so buckets are even)."""
    high = np.asarray(packed["f0"], dtype=np.uint64) >> np.uint64(32)
    return ((high * np.uint64(num_buckets)) >> np.uint64(32)).astype(np.int64)


def npy_header(count: int) -> bytes:
    """The .npy header of a 1-d UID_DTYPE array of `count` rows (what np.save writes)."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(UID_DTYPE), "fortran_order": False, "shape": (int(count),)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def uids_bytes(packed: np.ndarray) -> bytes:
    """Rows of UID_DTYPE as stored after the .npy header (little-endian)."""
    return np.ascontiguousarray(packed, dtype=UID_DTYPE).tobytes()


# --- webdataset kept-key lists ---------------------------------------------------------

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


def inputs_of_output_shard(shard: int, starts: Sequence[int], counts: Sequence[int], samples_per_shard: int) -> list[tuple[int, int]]:
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


def reshard_manifest(directory: str, shard_sizes: Sequence[int], samples_per_shard: int, extra: Optional[dict] = None) -> dict:
    """manifest.json of a reshard: the pattern and sample count to train on, and every shard."""
    total = int(sum(shard_sizes))
    pattern = brace_pattern(directory, len(shard_sizes))
    manifest = {
        "train_data": pattern,
        "train_num_samples": total,
        "num_shards": len(shard_sizes),
        "samples_per_shard": samples_per_shard,
        "open_clip_args": (
            ["--dataset-type", "webdataset", "--train-data", pattern, "--train-num-samples", str(total)] if pattern else []
        ),
        "shards": [
            {"url": output_shard_name(i, len(shard_sizes)), "nsamples": int(size)} for i, size in enumerate(shard_sizes)
        ],
        "generator": "balancebeam",
    }
    manifest.update(extra or {})
    return manifest
