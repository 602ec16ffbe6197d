"""DataComp's `subset_uids.npy`, without Beam: uid checks, packing, sorting and the file's bytes.

No Beam import: the writer in `transforms.beam.handoff.subset_uids`, the tests and any
script call these. `subset_uids.npy` is what DataComp's `resharder.py` loads (`np.load`,
checked against `np.dtype("u8,u8")`) and searches with `np.searchsorted`: one row per
kept uid, f0 = int(uid[:16], 16), f1 = int(uid[16:32], 16), little-endian, sorted, no
repeats.
"""

from __future__ import annotations

import io
import re
from typing import Iterable, Sequence

import numpy as np

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
    return [f"{int(a):016x}{int(b):016x}" for a, b in zip(packed["f0"], packed["f1"], strict=True)]


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
