"""--allow_uids / --deny_uids: is each record's key in a list of sample keys (docs/datacomp.md).

No Beam import. A list is a DataComp subset file (`.npy` of dtype u8,u8: a uid's 128
bits as two uint64, f0 the first 16 hex digits, as `subset_uids.npy` is written and
DataComp's and DFN's published subsets are) or a text file of keys, one a line. Against an
`.npy` list a key is looked up as a uid: one that is not 32 hex digits is in no such list
(allow drops it, deny keeps it). Text lists compare keys as they are (whitespace around a
line is not part of it; blank lines are skipped).
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from transforms.handoff.uids import UID_DTYPE, is_uid

NPY_MAGIC = b"\x93NUMPY"


class UidList:
    """A list of keys, loaded once (per worker process), asked about a batch's keys at a time."""

    def __init__(self, uids: np.ndarray = None, keys: frozenset = None):
        self._uids = uids  # sorted unique UID_DTYPE (an .npy list), or None
        self._keys = keys  # the keys of a text list, or None

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> "UidList":
        """The list in `data` (an .npy subset file or text); ValueError with one line if it is neither."""
        if data.startswith(NPY_MAGIC):
            try:
                array = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as error:
                raise ValueError(f"{name}: not a readable .npy file: {error}") from None
            if array.ndim != 1 or array.dtype.names is None or len(array.dtype.names) != 2:
                raise ValueError(f"{name} must hold a 1-d array of dtype u8,u8 (DataComp uids); it holds {array.dtype}")
            if any(array.dtype[i] != np.dtype("<u8") for i in range(2)):
                raise ValueError(f"{name} must hold a 1-d array of dtype u8,u8 (DataComp uids); it holds {array.dtype}")
            packed = np.empty(len(array), dtype=UID_DTYPE)
            packed["f0"], packed["f1"] = array[array.dtype.names[0]], array[array.dtype.names[1]]
            return cls(uids=np.unique(packed))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{name} is neither an .npy uid array nor UTF-8 text (one key a line)") from None
        return cls(keys=frozenset(line.strip() for line in text.splitlines() if line.strip()))

    @property
    def is_uid_array(self) -> bool:
        return self._uids is not None

    def __len__(self) -> int:
        return len(self._uids) if self._uids is not None else len(self._keys)

    def contains(self, keys: Sequence[object]) -> np.ndarray:
        """A bool per key: listed or not."""
        if self._keys is not None:
            return np.fromiter((key in self._keys for key in keys), dtype=bool, count=len(keys))
        uid = np.fromiter((is_uid(key) for key in keys), dtype=bool, count=len(keys))
        found = np.zeros(len(keys), dtype=bool)
        rows = np.flatnonzero(uid)
        if len(rows) == 0 or len(self._uids) == 0:
            return found
        packed = np.empty(len(rows), dtype=UID_DTYPE)
        packed["f0"] = np.fromiter((int(keys[i][:16], 16) for i in rows), dtype=np.uint64, count=len(rows))
        packed["f1"] = np.fromiter((int(keys[i][16:], 16) for i in rows), dtype=np.uint64, count=len(rows))
        at = np.minimum(np.searchsorted(self._uids, packed), len(self._uids) - 1)
        found[rows] = self._uids[at] == packed
        return found
