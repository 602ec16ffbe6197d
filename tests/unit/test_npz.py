"""transforms.formats.npz: rows of .npz members, compared with np.load, and its errors."""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.formats.npz import MemberInfo, NpzError, NpzRows

DTYPES = ["float16", "float32", "float64", "int64", "uint8", ">f4"]


def random_array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random bytes viewed as dtype (NaNs included: results are compared byte for byte)."""
    itemsize = np.dtype(dtype).itemsize
    return rng.integers(0, 256, size=int(np.prod(shape)) * itemsize, dtype=np.uint8).view(dtype).reshape(shape)


def npz_bytes(compressed: bool, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


class CountingFile(io.RawIOBase):
    """A seekable file over bytes that counts what is read through it."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)
        self.bytes_read = 0
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self.bytes_read += len(data)
        self.largest_read = max(self.largest_read, len(data))
        return data


@st.composite
def npz_cases(draw):
    """Arrays (a 1-D or 2-D one of each drawn dtype, possibly 0 rows), saved stored or deflated."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = {}
    for i, dtype in enumerate(draw(st.lists(st.sampled_from(DTYPES), min_size=1, max_size=3))):
        rows = draw(st.integers(0, 40))
        shape = (rows,) if draw(st.booleans()) else (rows, draw(st.integers(1, 9)))
        arrays[f"m{i}_{dtype.replace('>', 'be')}"] = random_array(rng, dtype, shape)
    return arrays, draw(st.booleans())


def open_npz(data: bytes, via: str, directory: str):
    if via == "bytesio":
        return io.BytesIO(data)
    path = os.path.join(directory, "shard.npz")
    with open(path, "wb") as out:
        out.write(data)
    return open(path, "rb")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=npz_cases(), via=st.sampled_from(["bytesio", "file"]), data=st.data())
def test_rows_match_np_load(case, via, data):
    arrays, compressed = case
    content = npz_bytes(compressed, **arrays)
    with tempfile.TemporaryDirectory() as directory, open_npz(content, via, directory) as fileobj:
        expected = np.load(io.BytesIO(content))
        npz = NpzRows(fileobj)
        assert npz.members() == {
            name: MemberInfo(name, array.dtype, array.shape, compressed) for name, array in arrays.items()
        }
        names = list(arrays)
        # Random ranges, in any order and interleaved between members (a cursor may have to go back).
        for _ in range(data.draw(st.integers(1, 6))):
            name = data.draw(st.sampled_from(names))
            n = npz.num_rows(name)
            assert n == expected[name].shape[0]
            a = data.draw(st.integers(0, n))
            b = data.draw(st.integers(a, n))
            assert_same(npz.rows(name, a, b), expected[name][a:b])
        # Successive increasing ranges cover a member exactly (the streaming cursor's use).
        name = data.draw(st.sampled_from(names))
        n = npz.num_rows(name)
        cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
        bounds = [0, *cuts, n]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            assert_same(npz.rows(name, a, b), expected[name][a:b])


def test_numpy_writes_a_zip64_extra_field_only_in_the_local_header():
    """The premise of reading the data offset from the local header, not the central directory."""
    data = npz_bytes(False, a=np.arange(6, dtype=np.float16).reshape(3, 2))
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo("a.npy")
    local_extra = struct.unpack_from("<H", data, info.header_offset + 28)[0]
    assert local_extra > 0 and len(info.extra) != local_extra


def test_a_stored_range_reads_only_its_rows():
    rows, row_bytes = 4000, 512 * 2
    array = random_array(np.random.default_rng(0), "float16", (rows, 512))
    data = npz_bytes(False, b32_img=array, b32_txt=array[::-1].copy())
    fileobj = CountingFile(data)
    npz = NpzRows(fileobj)
    got = npz.rows("b32_txt", 2000, 2010)
    assert_same(got, array[::-1][2000:2010])
    # Central directory + .npy header + 10 rows, out of an 8 MB file.
    assert fileobj.bytes_read < 10 * row_bytes + 2048, fileobj.bytes_read
    assert fileobj.largest_read == 10 * row_bytes
    before = fileobj.bytes_read
    npz.rows("b32_txt", 3990, 4000)
    assert fileobj.bytes_read - before == 10 * row_bytes


def test_successive_compressed_ranges_decompress_the_member_once():
    array = random_array(np.random.default_rng(1), "float32", (2000, 64))  # random: incompressible
    data = npz_bytes(True, l14_img=array)
    compressed_size = zipfile.ZipFile(io.BytesIO(data)).getinfo("l14_img.npy").compress_size
    fileobj = CountingFile(data)
    npz = NpzRows(fileobj)
    for start in range(0, 2000, 200):
        assert_same(npz.rows("l14_img", start, start + 200), array[start : start + 200])
    # Restarting at each range would read ~5.5 times the member.
    assert fileobj.bytes_read < 1.1 * compressed_size + 4096, (fileobj.bytes_read, compressed_size)
    # Going back restarts the stream and still gives the right rows.
    assert_same(npz.rows("l14_img", 10, 20), array[10:20])


def test_a_compressed_range_skips_the_rows_before_it():
    array = random_array(np.random.default_rng(2), "uint8", (3000, 100))
    npz = NpzRows(io.BytesIO(npz_bytes(True, dedup=array)))
    assert_same(npz.rows("dedup", 2500, 2501), array[2500:2501])
    assert_same(npz.rows("dedup", 2501, 3000), array[2501:])


@pytest.mark.parametrize("compressed", [False, True])
def test_missing_member_names_it_and_what_is_there(compressed):
    npz = NpzRows(io.BytesIO(npz_bytes(compressed, b32_img=np.zeros((2, 3)), l14_img=np.zeros((2, 4)))))
    with pytest.raises(NpzError, match=r"'b32_txt' not found; the file has: b32_img, l14_img"):
        npz.rows("b32_txt", 0, 1)
    with pytest.raises(NpzError, match="'nope' not found"):
        npz.num_rows("nope")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 100])
def test_not_a_zip(content):
    with pytest.raises(NpzError, match="not an .npz: not a readable zip file"):
        NpzRows(io.BytesIO(content))


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(compressed, keep):
    data = npz_bytes(compressed, b32_img=np.ones((50, 8), np.float16))
    with pytest.raises(NpzError, match="not a readable zip file"):
        NpzRows(io.BytesIO(data[: int(len(data) * keep)]))


@pytest.mark.parametrize("compressed", [False, True])
def test_data_truncated_after_opening(compressed):
    """The central directory was read, then the member's data is not all there."""
    array = random_array(np.random.default_rng(3), "float16", (20000, 16))
    data = npz_bytes(compressed, b32_img=array)
    fileobj = io.BytesIO(data)
    npz = NpzRows(fileobj)
    assert npz.num_rows("b32_img") == 20000
    fileobj.truncate(len(data) // 2)
    with pytest.raises(NpzError, match=r"npz member 'b32_img': truncated data"):
        npz.rows("b32_img", 0, 20000)


def test_corrupt_deflate_stream():
    data = bytearray(npz_bytes(True, b32_img=np.zeros((500, 16), np.float16)))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("b32_img.npy")
    middle = info.header_offset + 30 + len(info.filename) + 20 + info.compress_size // 2
    data[middle : middle + 8] = b"\xff" * 8
    npz = NpzRows(io.BytesIO(bytes(data)))
    with pytest.raises(NpzError, match=r"npz member 'b32_img': unreadable"):
        npz.rows("b32_img", 0, 500)


@pytest.mark.parametrize("compressed", [False, True])
def test_arrays_without_rows_are_refused(compressed):
    content = npz_bytes(
        compressed,
        fortran=np.asfortranarray(np.ones((3, 4), np.float32)),
        scalar=np.float32(1),
        objects=np.array([{}, None], dtype=object),
        fine=np.ones((3, 4), np.float32),
    )
    npz = NpzRows(io.BytesIO(content))
    assert npz.members()["fortran"] == MemberInfo("fortran", np.dtype("float32"), (3, 4), compressed)
    with pytest.raises(NpzError, match="'fortran': Fortran-order arrays are not supported"):
        npz.rows("fortran", 0, 1)
    with pytest.raises(NpzError, match="'scalar': a 0-d array has no rows"):
        npz.num_rows("scalar")
    with pytest.raises(NpzError, match="'objects': object arrays"):
        npz.rows("objects", 0, 1)
    assert_same(npz.rows("fine", 1, 3), np.ones((2, 4), np.float32))


@pytest.mark.parametrize("start, stop", [(-1, 2), (2, 1), (0, 4), (4, 4)])
def test_rows_out_of_range(start, stop):
    npz = NpzRows(io.BytesIO(npz_bytes(False, a=np.zeros((3, 2)))))
    with pytest.raises(ValueError, match=r"npz member 'a': rows .* outside \[0, 3\)"):
        npz.rows("a", start, stop)


def test_member_shorter_than_its_header_says():
    """A stored member whose data ends before its .npy header's shape: reading on would run into the next member."""
    npy = io.BytesIO()
    np.save(npy, np.ones((10, 4), np.float32))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("short.npy", npy.getvalue()[: -5 * 16])
        archive.writestr("next.npy", npy.getvalue())
    npz = NpzRows(io.BytesIO(buffer.getvalue()))
    with pytest.raises(NpzError, match=r"'short': \d+ bytes in the zip, its .npy header says \d+"):
        npz.rows("short", 5, 10)
    assert npz.num_rows("next") == 10
