"""ReadCaptions: caption shards in, Arrow record batches and rejections out."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PBegin, PCollection

from transforms.beam import metrics
from transforms.formats.compression import decompressed
from transforms.formats.layout import InputLayout
from transforms.formats.readers import read_caption_file
from transforms.formats.rejections import UNREADABLE_FILE, Rejection, strict_error

__all__ = ["Read", "ReadCaptions"]

BATCHES = "batches"
REJECTED = "rejected"


class _ReadCaptionFileFn(beam.DoFn):
    """(file index, path) -> batches (main output) and Rejections (REJECTED).

    With `strict`, the first rejection raises StrictRejectionError instead.
    """

    def __init__(self, layout: InputLayout, strict: bool = False):
        self._layout = layout
        self._strict = strict
        self._files = Metrics.counter(metrics.CURATION, "files_read")
        self._records = Metrics.counter(metrics.CURATION, "records_read")
        self._rejected = Metrics.counter(metrics.CURATION, "records_rejected")
        self._files_rejected = Metrics.counter(metrics.CURATION, "files_rejected")

    def process(self, indexed_path):
        file_index, path = indexed_path
        # Opened raw: Parquet needs random access, and the text formats are decompressed
        # by `decompressed`, which, unlike Beam's CompressionTypes.AUTO, notices a truncated
        # .gz/.bz2/.zst file.
        try:
            fileobj = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        except Exception as error:  # noqa: BLE001 - a file that vanished or cannot be opened
            yield self._rejection(Rejection(path, None, UNREADABLE_FILE, f"{type(error).__name__}: {error}", records=0))
            return
        self._files.inc()
        with fileobj:
            stream = fileobj if self._layout.format == "parquet" else decompressed(fileobj, path)
            for item in read_caption_file(stream, path, file_index, self._layout):
                if isinstance(item, pa.RecordBatch):
                    self._records.inc(item.num_rows)
                    yield item
                else:
                    yield self._rejection(item)

    def _rejection(self, rejection: Rejection):
        """Count a rejection in the metrics and route it to REJECTED (or raise, strict)."""
        if self._strict:
            raise strict_error(rejection)
        self._records.inc(rejection.records)
        self._rejected.inc(rejection.records)
        Metrics.counter(metrics.REJECTED_RECORDS, rejection.reason).inc(rejection.records)
        if rejection.row is None:
            self._files_rejected.inc()
            Metrics.counter(metrics.REJECTED_FILES, rejection.reason).inc()
        return beam.pvalue.TaggedOutput(REJECTED, rejection)


class Read(NamedTuple):
    """What ReadCaptions hands on."""

    batches: PCollection  # [pa.RecordBatch]: key, text, source columns, the layout's pass-through columns
    rejected: PCollection  # [Rejection]: each unusable record or file
    listed_files: PCollection  # [(file index, path)]: every input file


class ReadCaptions(beam.PTransform):
    """Read caption files into batches.

    In: the pipeline root. Out: `Read`: `batches` (pa.RecordBatch of key, text,
    source columns and the layout's pass-through columns), `rejected` (Rejection
    for each unusable record or file) and `listed_files`.
    The file list is fixed before the run; files are the unit of parallelism.
    With `strict`, the first rejected record or file fails the run with a
    `transforms.formats.rejections.StrictRejectionError` (`rejections.strict_failure` finds its
    one-line message in whatever the runner raises).
    Beam metrics: "curation" files_read, records_read, records_rejected,
    files_rejected; per reject reason, "rejected" (records) and "rejected_files".
    `listed_files` is the PCollection of (file index, path): writers that need
    every input file use it instead of embedding the list once more in the job
    graph (Dataflow refuses graphs over 10 MB).
    """

    def __init__(self, paths: Sequence[str], layout: InputLayout, strict: bool = False):
        super().__init__()
        self._paths = list(paths)
        self._layout = layout
        self._strict = strict

    def expand(self, pbegin: PBegin) -> Read:
        listed_files = pbegin | "ListFiles" >> beam.Create(list(enumerate(self._paths)))
        parsed = (
            listed_files
            # Spread the files over workers before the expensive per-file work.
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseFiles"
            >> beam.ParDo(_ReadCaptionFileFn(self._layout, self._strict)).with_outputs(REJECTED, main=BATCHES)
        )
        return Read(parsed[BATCHES], parsed[REJECTED], listed_files)
