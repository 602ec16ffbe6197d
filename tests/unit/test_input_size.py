"""Output shards are sized by the caption data a writer holds, not by bytes on disk."""

from __future__ import annotations

import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipeline.curation import config as curation_config
from helpers import prepared_config
from transforms.formats.input_size import (
    data_bytes,
    gzip_uncompressed_bytes,
    parquet_column_bytes,
    sample_paths,
)


def _open(path):
    return open(path, "rb")


def _parquet(path, rows: int, text: str, extra_bytes: int = 0):
    columns = {"key": [f"k{i:07d}" for i in range(rows)], "text": [text] * rows}
    if extra_bytes:
        columns["embedding"] = [os.urandom(extra_bytes) for _ in range(rows)]
    pq.write_table(pa.table(columns), path, compression="zstd")


def test_sample_paths_spread_over_the_list():
    paths = [f"p{i}" for i in range(10)]
    assert sample_paths(paths, 4) == ["p0", "p2", "p5", "p7"]
    assert sample_paths(paths[:3], 4) == paths[:3]


def test_parquet_bytes_are_the_in_memory_bytes_of_the_columns_read(tmp_path):
    path = tmp_path / "a.parquet"
    _parquet(path, 20_000, "the same caption, repeated, compresses to nothing " * 2, extra_bytes=64)
    in_memory = pq.read_table(path, columns=["key", "text"]).nbytes
    with open(path, "rb") as handle:
        estimate = parquet_column_bytes(handle, ["text", "key", "no_such_column"])
    assert abs(estimate - in_memory) <= 0.02 * in_memory
    with open(path, "rb") as handle:
        assert parquet_column_bytes(handle, ["absent"]) == 0


def test_data_bytes_extrapolates_the_sampled_files(tmp_path):
    paths = []
    for i in range(8):
        path = tmp_path / f"part-{i}.parquet"
        _parquet(path, 5_000, f"caption {i} " * 8)
        paths.append(str(path))
    sizes = {path: os.path.getsize(path) for path in paths}
    truth = sum(pq.read_table(path, columns=["key", "text"]).nbytes for path in paths)
    estimate = data_bytes(paths, sizes, "parquet", ["key", "text"], _open)
    assert abs(estimate - truth) <= 0.05 * truth


def test_gzip_text_counts_uncompressed_bytes(tmp_path):
    data = b'{"text": "a caption"}\n' * 10_000
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(data))
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        assert gzip_uncompressed_bytes(handle, size) == len(data)
    assert data_bytes([str(path)], {str(path): size}, "jsonl", ["text"], _open) == len(data)


def test_plain_files_and_unreadable_samples_count_their_size(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(b"x" * 1000)
    assert data_bytes([str(plain)], {str(plain): 1000}, "jsonl", ["text"], _open) == 1000
    broken = tmp_path / "b.parquet"
    broken.write_bytes(b"PAR1 not really")
    assert data_bytes([str(broken)], {str(broken): 15}, "parquet", ["text"], _open) == 15


def test_the_curation_gives_a_shard_per_64_mib_of_caption_data(tmp_path, monkeypatch):
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(4):
        _parquet(pool / f"part-{i}.parquet", 20_000, "a dog on a beach " * 4)
    in_memory = sum(pq.read_table(pool / f"part-{i}.parquet", columns=["key", "text"]).nbytes for i in range(4))
    metadata = tmp_path / "metadata.json"
    metadata.write_text('["dog", "beach"]')
    monkeypatch.setattr(curation_config, "BYTES_PER_SHARD", in_memory // 5)
    config, _ = prepared_config(
        ["--input", str(pool / "*.parquet"), "--metadata", str(metadata), "--output_dir", str(tmp_path / "out")]
    )
    assert config.num_shards in (5, 6)
    on_disk = sum(os.path.getsize(pool / f"part-{i}.parquet") for i in range(4))
    assert on_disk < in_memory // 5  # sized by disk bytes it would have been 1 shard
