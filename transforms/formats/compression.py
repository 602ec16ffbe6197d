"""Decompression: compressed input files read as Beam's CompressionTypes.AUTO would, but checked.

No Beam import. `decompressed` raises at the end of a truncated compressed stream (Beam's
CompressedFile would not notice); `buffered` makes any readable file object line-iterable.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import IO


class _RawReader(io.RawIOBase):
    """Adapts a file object with only read() (Beam's CompressedFile) to io's stack."""

    def __init__(self, fileobj):
        self._fileobj = fileobj

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._fileobj.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def buffered(fileobj) -> IO[bytes]:
    """A buffered, line-iterable binary stream over any readable file object."""
    if isinstance(fileobj, (io.BufferedIOBase, io.BytesIO)):
        return fileobj
    return io.BufferedReader(_RawReader(fileobj), buffer_size=1 << 20)


def _decompressor_factory(path: str):
    """A function making a fresh decompressor for the file's suffix, or None (not compressed).

    The suffixes and codecs are those of Beam's CompressionTypes.AUTO.
    """
    name = path.lower()
    if name.endswith(".gz"):
        return lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)
    if name.endswith(".bz2"):
        return bz2.BZ2Decompressor
    if name.endswith((".xz", ".lzma")):
        return lzma.LZMADecompressor
    if name.endswith(".deflate"):
        return zlib.decompressobj
    if name.endswith((".zst", ".zstd")):
        import zstandard  # Beam's own dependency; imported here so that importing this module stays light

        return lambda: zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
    return None


class _CheckedDecompressor(io.RawIOBase):
    """Decompresses a stream as Beam's CompressedFile does (concatenated members too),
    but raises EOFError when the file ends inside a compressed stream.

    Beam's CompressedFile returns a truncated .gz/.bz2/.zst as if it were whole: the cut
    would pass unnoticed, its last line a malformed record at best.
    """

    _CHUNK = 1 << 20

    def __init__(self, raw, make_decompressor):
        self._raw = raw
        self._make = make_decompressor
        self._decompressor = make_decompressor()
        self._fed = False  # whether the current decompressor has seen any input
        self._pending = memoryview(b"")
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._finished:
            self._pending = memoryview(self._decompress_more())
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _decompress_more(self) -> bytes:
        decompressor = self._decompressor
        if decompressor.eof and decompressor.unused_data:
            data = decompressor.unused_data  # another member (gzip) or frame (zstd) follows
        else:
            data = self._raw.read(self._CHUNK)
            if not data:
                self._finished = True
                if self._fed and not decompressor.eof:
                    raise EOFError("compressed stream ends before its end marker: the file is truncated")
                return b""
        if decompressor.eof:
            self._decompressor = decompressor = self._make()
            self._fed = False
        self._fed = True
        return decompressor.decompress(data)


def decompressed(fileobj, path: str) -> IO[bytes]:
    """The file's content, decompressed by the suffix of `path` (.gz, .bz2, .xz, .lzma,
    .zst, .zstd, .deflate) like Beam's CompressionTypes.AUTO; a truncated compressed
    stream raises EOFError when its end is read. Other files are returned as they are."""
    make = _decompressor_factory(path)
    if make is None:
        return fileobj
    return io.BufferedReader(_CheckedDecompressor(fileobj, make), buffer_size=1 << 20)


def is_empty(fileobj) -> bool:
    """Whether the stream holds no byte at all, without consuming any."""
    if hasattr(fileobj, "peek"):
        return not fileobj.peek(1)
    position = fileobj.tell()
    first = fileobj.read(1)
    fileobj.seek(position)
    return not first
