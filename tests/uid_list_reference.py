"""A literal reading of --allow_uids/--deny_uids' .npy lists (docs/datacomp.md), sharing no code with
transforms.filters.uid_lists: a key is listed iff it is 32 hex digits and int(key, 16) equals
f0 * 2**64 + f1 of some row; and the files such lists are, made with numpy itself."""

from __future__ import annotations

import io

import numpy as np


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def uid_rows(values: list[int], dtype="u8,u8") -> np.ndarray:
    rows = np.zeros(len(values), dtype=dtype)
    names = rows.dtype.names
    rows[names[0]] = [v >> 64 for v in values]
    rows[names[1]] = [v & (2**64 - 1) for v in values]
    return rows


def reference_in_npy(key, listed: set[int]) -> bool:
    if not isinstance(key, str) or len(key) != 32 or any(c not in "0123456789abcdefABCDEF" for c in key):
        return False
    return int(key, 16) in listed
