"""Rows of a `.npy` file read a range at a time: the header parsed once, then a seek per range.

No Beam import. The image filter's user assets are .npy files that can be large (ImageNet-1k
features: 1.28M x 768); the pipeline reads them in row ranges spread over workers
rather than loading them whole on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy_format


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def read_npy_header(fileobj, name: str) -> NpyHeader:
    """The shape, dtype and data offset of a .npy; ValueError with one line when it is not a C-order numeric array."""
    try:
        version = npy_format.read_magic(fileobj)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(fileobj)
        else:  # 2.0 (large headers); 3.0 (utf-8 field names) has no public reader
            shape, fortran_order, dtype = npy_format._read_array_header(fileobj, version)
    except Exception as error:  # noqa: BLE001 - numpy raises several kinds for a file that is not .npy
        raise ValueError(f"{name} is not a .npy file: {error}") from None
    if fortran_order or dtype.hasobject:
        raise ValueError(f"{name}: a C-order numeric array is needed (got fortran_order={fortran_order}, {dtype})")
    return NpyHeader(tuple(shape), dtype, fileobj.tell())


def read_npy_rows(fileobj, header: NpyHeader, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of the array, in the file's dtype."""
    if not 0 <= start <= stop <= header.shape[0]:
        raise ValueError(f"rows [{start}, {stop}) outside an array of {header.shape[0]} rows")
    fileobj.seek(header.data_offset + start * header.row_bytes)
    count = (stop - start) * header.row_bytes
    data = fileobj.read(count)
    if len(data) != count:
        raise ValueError(f"the .npy ends early: {len(data)} of {count} bytes at row {start}")
    return np.frombuffer(data, dtype=header.dtype).reshape((stop - start,) + header.shape[1:])
