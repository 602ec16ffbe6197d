"""Helpers the tests share: where ../shared is, a local Beam runner without Prism, small pools, a prepared run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def shared_file(*parts: str) -> Path:
    """A file of ../shared, or a skip with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared test data, beside the checkout); it is absent here")
    return path


def matching_cases():
    """(metadata list, [case dicts]) from ../shared/data/matching_cases.jsonl."""
    lines = shared_file("data", "matching_cases.jsonl").read_text(encoding="utf-8").splitlines()
    metadata = json.loads(lines[0])["metadata"]
    return metadata, [json.loads(line) for line in lines[1:] if line.strip()]


def local_runner():
    """The Python FnApiRunner: what the CLI uses for DirectRunner, no download attempt."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def beam_test_pipeline():
    from apache_beam.testing.test_pipeline import TestPipeline

    return TestPipeline(runner=local_runner())


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def corrupt_row_group(data: bytes, group: int) -> bytes:
    """A Parquet file's bytes with every column chunk of one row group overwritten; the footer intact."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    corrupt = bytearray(data)
    for column in range(metadata.num_columns):
        chunk = metadata.row_group(group).column(column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        corrupt[start : start + chunk.total_compressed_size] = b"\xab" * chunk.total_compressed_size
    return bytes(corrupt)


def prepared_config(argv: list[str]):
    """(CurationConfig, PipelineOptions) of a command line, checked as `curate.run` checks it (no file is cleared)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.curation.config import prepare
    from beam_pipeline.options import parse_curation_args

    args, _ = parse_curation_args(argv)
    options = PipelineOptions(argv)
    return prepare(args, options), options
