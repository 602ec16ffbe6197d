"""Rows of the arrays in a NumPy `.npz`, read a range at a time without loading the file.

DataComp pools ship, beside each parquet shard `X.parquet`, an `X.npz` of precomputed CLIP
embeddings (`b32_img`, `b32_txt`, `l14_img`, `l14_txt`, ...), one row per sample. For a big
pool one such file is ~3 GB, so the pipeline reads only the rows of its current batch:
- `np.savez` stores members uncompressed (ZIP_STORED), so the rows [a, b) of a member are the
  bytes at `data_start + a * row_bytes`: one seek and one read of (b - a) rows;
- members of `np.savez_compressed` cannot be seeked into; they are decompressed forward, with a
  cursor kept per member so that successive increasing ranges never restart from the start.

No Beam import: the file object is anything seekable and readable (Beam's
`FileSystems.open(path, compression_type=UNCOMPRESSED)` for local files and gs://, a real file,
`io.BytesIO`). Only the zip central directory and the small `.npy` headers are read eagerly.
"""

from __future__ import annotations

import ast
import contextlib
import operator
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Callable, Optional

import numpy as np

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 1 << 20  # a .npy header is a short dict literal; refuse absurd lengths
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length (30 bytes)
_SKIP_CHUNK = 1 << 20  # bytes decompressed and dropped at a time when a stream skips rows
# What a bad zip, a truncated file or a corrupt deflate stream raise from zipfile/struct/zlib.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error, ValueError)


class NpzError(ValueError):
    """An .npz (or one of its members) that cannot be read as rows; the message names the member."""


@dataclass(frozen=True)
class MemberInfo:
    """One array of the .npz: its name without ".npy", and what its .npy header says."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    compressed: bool


@dataclass
class _Header:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    length: int  # bytes of the .npy header: the array's data starts this far into the member
    data_start: Optional[int]  # offset of the data in the zip file, for stored members


@dataclass
class _Cursor:
    stream: IO[bytes]  # the member, decompressed forward
    pos: int  # offset in the decompressed member


def _read_exact(read: Callable[[int], bytes], n: int, what: str) -> bytearray:
    """n bytes from read(), or NpzError: short reads are how a truncated file shows."""
    out = bytearray(n)  # a bytearray, so that np.frombuffer gives a writable array
    view, pos = memoryview(out), 0
    while pos < n:
        chunk = read(n - pos)
        if not chunk:
            raise NpzError(f"{what}: truncated data (wanted {n} bytes, got {pos})")
        view[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    return out


def _read_npy_header(read: Callable[[int], bytes], what: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran_order, header length) from the start of a .npy (versions 1, 2, 3)."""
    lead = _read_exact(read, 8, what)
    if lead[:6] != _NPY_MAGIC or lead[6] not in (1, 2, 3):
        raise NpzError(f"{what}: not a .npy array (magic {bytes(lead)!r})")
    size = struct.Struct("<H" if lead[6] == 1 else "<I")  # the header length's width grew in 2.0
    (length,) = size.unpack(_read_exact(read, size.size, what))
    if length > _MAX_HEADER:
        raise NpzError(f"{what}: .npy header of {length} bytes is too long")
    text = _read_exact(read, length, what).decode("utf8" if lead[6] == 3 else "latin1")
    try:
        header = ast.literal_eval(text)
        dtype = np.lib.format.descr_to_dtype(header["descr"])
        shape = tuple(operator.index(d) for d in header["shape"])
        fortran_order = header["fortran_order"]
    except (ValueError, SyntaxError, KeyError, TypeError) as error:
        raise NpzError(f"{what}: unreadable .npy header {text.strip()!r} ({error})") from error
    if any(d < 0 for d in shape) or not isinstance(fortran_order, bool):
        raise NpzError(f"{what}: invalid .npy header {text.strip()!r}")
    return dtype, shape, fortran_order, 8 + size.size + length


class NpzRows:
    """Rows of the 2-D (or 1-D) arrays of one .npz, read a range at a time."""

    def __init__(self, fileobj: IO[bytes]):
        """Reads only the zip central directory of fileobj (seekable, readable; not closed here)."""
        self._file = fileobj
        try:
            self._zip = zipfile.ZipFile(fileobj)
        except _READ_ERRORS as error:
            raise NpzError(f"not an .npz: not a readable zip file ({error})") from error
        # Arrays are the "<name>.npy" members (what np.load lists); anything else is not an array.
        self._infos = {i.filename[:-4]: i for i in self._zip.infolist() if i.filename.endswith(".npy")}
        self._headers: dict[str, _Header] = {}
        self._cursors: dict[str, _Cursor] = {}

    def members(self) -> dict[str, MemberInfo]:
        """Every array of the file, by name, from its .npy header."""
        headers = {name: self._header(name) for name in self._infos}
        return {name: MemberInfo(name, h.dtype, h.shape, h.data_start is None) for name, h in headers.items()}

    def num_rows(self, name: str) -> int:
        """The length of the member's first axis."""
        return self._row_header(name).shape[0]

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the member: shape (stop - start, *shape[1:]), in the file's dtype."""
        header = self._row_header(name)
        start, stop = operator.index(start), operator.index(stop)
        if not 0 <= start <= stop <= header.shape[0]:
            raise ValueError(f"npz member {name!r}: rows [{start}, {stop}) outside [0, {header.shape[0]})")
        shape = (stop - start, *header.shape[1:])
        row_bytes = header.dtype.itemsize * int(np.prod(header.shape[1:], dtype=np.int64))
        n = (stop - start) * row_bytes
        if n == 0:
            return np.empty(shape, header.dtype)
        what = f"npz member {name!r}"
        with self._errors(name):
            if header.data_start is not None:
                self._file.seek(header.data_start + start * row_bytes)
                data = _read_exact(self._file.read, n, what)
            else:
                data = self._stream_read(name, header.length + start * row_bytes, n, what)
        return np.frombuffer(data, header.dtype).reshape(shape)

    def _stream_read(self, name: str, offset: int, n: int, what: str) -> bytearray:
        """n bytes at offset of a compressed member, moving its forward cursor (restarting only to go back)."""
        cursor = self._cursors.get(name)
        if cursor is None or cursor.pos > offset:  # zip streams only go forward: going back restarts
            cursor = self._cursors[name] = _Cursor(self._zip.open(self._infos[name]), 0)
        while cursor.pos < offset:  # decompress and drop, a bounded chunk at a time
            cursor.pos += len(_read_exact(cursor.stream.read, min(_SKIP_CHUNK, offset - cursor.pos), what))
        data = _read_exact(cursor.stream.read, n, what)
        cursor.pos += n
        return data

    @contextlib.contextmanager
    def _errors(self, name: str):
        """zipfile/zlib/struct/OS errors of one member as an NpzError; a broken stream is dropped."""
        try:
            yield
        except NpzError:
            self._cursors.pop(name, None)
            raise
        except _READ_ERRORS as error:
            self._cursors.pop(name, None)
            if isinstance(error, EOFError):  # zipfile's, without a message, when a deflate stream is cut short
                raise NpzError(f"npz member {name!r}: truncated data (the compressed stream ends early)") from error
            raise NpzError(f"npz member {name!r}: unreadable ({type(error).__name__}: {error})") from error

    def _header(self, name: str) -> _Header:
        if name not in self._infos:
            raise NpzError(f"npz member {name!r} not found; the file has: {', '.join(sorted(self._infos)) or 'none'}")
        if name in self._headers:
            return self._headers[name]
        info, what = self._infos[name], f"npz member {name!r}"
        with self._errors(name):
            if info.compress_type == zipfile.ZIP_STORED:
                # The data offset comes from the LOCAL header: numpy writes it with a zip64 extra
                # field that the central directory's copy of the extra field does not have.
                self._file.seek(info.header_offset)
                signature, name_length, extra_length = _LOCAL_HEADER.unpack(
                    _read_exact(self._file.read, _LOCAL_HEADER.size, what)
                )
                if signature != b"PK\x03\x04":
                    raise NpzError(f"{what}: bad local file header at offset {info.header_offset}")
                member_start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
                self._file.seek(member_start)
                dtype, shape, fortran_order, length = _read_npy_header(self._file.read, what)
                data_start = member_start + length
            else:
                # Parsing the header leaves the stream at the data: it becomes the member's cursor.
                stream = self._zip.open(info)
                dtype, shape, fortran_order, length = _read_npy_header(stream.read, what)
                self._cursors[name], data_start = _Cursor(stream, length), None
        expected = length + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if not dtype.hasobject and info.file_size != expected:
            raise NpzError(f"{what}: {info.file_size} bytes in the zip, its .npy header says {expected}")
        header = self._headers[name] = _Header(dtype, shape, fortran_order, length, data_start)
        return header

    def _row_header(self, name: str) -> _Header:
        """The member's header, if its data can be read as rows."""
        header, what = self._header(name), f"npz member {name!r}"
        if header.dtype.hasobject:
            raise NpzError(f"{what}: object arrays (pickled) are not supported")
        if not header.shape:
            raise NpzError(f"{what}: a 0-d array has no rows")
        if header.fortran_order:
            raise NpzError(f"{what}: Fortran-order arrays are not supported (rows are not contiguous)")
        return header
