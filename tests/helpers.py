"""Helpers the tests share: where ../shared is, a local Beam runner without Prism, small pools, a prepared run."""

from __future__ import annotations

import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def demo_pool_command(pool: Path, metadata: Path, out: Path, *extra: str) -> list[str]:
    """The curate command over a make_demo_data pool (t = 300, 4 shards), as a user runs it."""
    return [
        sys.executable,
        "-m",
        "beam_pipeline.curate",
        "--input",
        str(pool / "*.jsonl"),
        "--metadata",
        str(metadata),
        "--threshold",
        "300",
        "--num_shards",
        "4",
        "--output_dir",
        str(out),
        *extra,
    ]


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


class _Tables(HTMLParser):
    """report.html's cell texts of every <table id=...>, and every tag and attribute seen."""

    def __init__(self):
        super().__init__()
        self.tables, self.tags, self.attributes = {}, [], []
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += attrs
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def number(text: str) -> float:
    return float(text.replace(",", ""))
