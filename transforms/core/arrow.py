"""Arrow helpers the semantics share: the flat layout of a list column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def list_layout(list_array: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of an Arrow list array, slices included."""
    offsets = list_array.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], list_array.flatten().to_numpy(zero_copy_only=False)
