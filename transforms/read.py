"""ReadCaptions: caption shards in, Arrow record batches and rejections out."""

from __future__ import annotations

from typing import Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.caption_files import InputLayout, Rejection, read_caption_file

BATCHES = "batches"
REJECTED = "rejected"


class _ReadCaptionFileFn(beam.DoFn):
    """(file index, path) -> batches (main output) and Rejections (REJECTED)."""

    def __init__(self, layout: InputLayout):
        self._layout = layout
        self._files = Metrics.counter("curation", "files_read")
        self._records = Metrics.counter("curation", "records_read")
        self._rejected = Metrics.counter("curation", "records_rejected")

    def process(self, indexed_path):
        file_index, path = indexed_path
        # Parquet needs random access, so it is opened raw; the text formats
        # are decompressed on the fly according to their extension.
        compression = CompressionTypes.UNCOMPRESSED if self._layout.format == "parquet" else CompressionTypes.AUTO
        try:
            fileobj = FileSystems.open(path, compression_type=compression)
        except Exception as error:  # noqa: BLE001 - a file that vanished or cannot be opened
            rejection = Rejection(path, None, "unreadable_file", f"{type(error).__name__}: {error}", records=0)
            yield beam.pvalue.TaggedOutput(REJECTED, rejection)
            return
        self._files.inc()
        with fileobj:
            for item in read_caption_file(fileobj, path, file_index, self._layout):
                if isinstance(item, pa.RecordBatch):
                    self._records.inc(item.num_rows)
                    yield item
                else:
                    self._records.inc(item.records)
                    self._rejected.inc(item.records)
                    yield beam.pvalue.TaggedOutput(REJECTED, item)


class ReadCaptions(beam.PTransform):
    """Read caption files into batches.

    In: the pipeline root. Out: a tuple-like with `batches` (pa.RecordBatch of
    key, text, source columns and the layout's pass-through columns) and
    `rejected` (Rejection for each unusable record or file).
    The file list is fixed before the run; files are the unit of parallelism.
    Once applied, `listed_files` is the PCollection of (file index, path): writers
    that need every input file use it instead of embedding the list once more in
    the job graph (Dataflow refuses graphs over 10 MB).
    """

    def __init__(self, paths: Sequence[str], layout: InputLayout):
        super().__init__()
        self._paths = list(paths)
        self._layout = layout
        self.listed_files = None

    def expand(self, pbegin):
        self.listed_files = pbegin | "ListFiles" >> beam.Create(list(enumerate(self._paths)))
        return (
            self.listed_files
            # Spread the files over workers before the expensive per-file work.
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseFiles" >> beam.ParDo(_ReadCaptionFileFn(self._layout)).with_outputs(REJECTED, main=BATCHES)
        )
