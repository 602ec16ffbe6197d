"""ReadCaptions: caption shards in, Arrow record batches and rejections out."""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PBegin, PCollection

from transforms.beam import metrics
from transforms.core.accounting import read_figures
from transforms.formats.compression import decompressed
from transforms.formats.embeddings import (
    EmbeddingSource,
    NpzEmbeddings,
    npz_path,
    split_bad_vectors,
    split_missing_embeddings,
)
from transforms.formats.layout import InputLayout, listable_names
from transforms.formats.readers import read_caption_file
from transforms.formats.rejections import EMBEDDINGS_MISSING, UNREADABLE_FILE, Rejection, strict_error

__all__ = ["Read", "ReadCaptions"]

BATCHES = "batches"
REJECTED = "rejected"
COUNTED = "counted"


class _ReadCaptionFileFn(beam.DoFn):
    """(file index, path) -> batches (main output), Rejections (REJECTED) and, once per
    file, the records read from it, rejected ones included (COUNTED: the accounting's `read`).

    With `strict`, the first rejection raises StrictRejectionError instead.
    """

    def __init__(self, layout: InputLayout, strict: bool = False, embeddings: Optional[EmbeddingSource] = None):
        self._layout = layout
        self._strict = strict
        self._embeddings = embeddings
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
            yield beam.pvalue.TaggedOutput(COUNTED, read_figures(0))
            return
        self._files.inc()
        read = 0  # counted here, as the file's reader gives them: the accounting's `read`
        with fileobj, contextlib.ExitStack() as stack:
            attach = self._embeddings_for(path, fileobj, stack)
            if isinstance(attach, Rejection):
                yield self._rejection(attach)
                yield beam.pvalue.TaggedOutput(COUNTED, read_figures(attach.records))
                return
            stream = fileobj if self._layout.format == "parquet" else decompressed(fileobj, path)
            for item in read_caption_file(stream, path, file_index, self._layout):
                if isinstance(item, pa.RecordBatch):
                    read += item.num_rows
                    self._records.inc(item.num_rows)
                    batch, rejections = attach(item)
                    for rejection in rejections:
                        yield self._rejection(rejection, read_before=True)
                    if batch is not None:
                        yield batch
                else:
                    read += item.records
                    yield self._rejection(item)
        yield beam.pvalue.TaggedOutput(COUNTED, read_figures(read))

    def _embeddings_for(self, path: str, fileobj, stack: contextlib.ExitStack):
        """batch -> (batch with its embeddings, rejections); or a whole-file Rejection
        when the shard's npz is missing or cannot serve its rows."""
        source = self._embeddings
        if source is None:
            return lambda batch: (batch, [])
        columns = {name: source.column(name) for name in source.names}
        if source.kind == "columns":

            def checked_columns(batch):
                batch, rejections = split_missing_embeddings(batch, source.names, path)
                if batch is None:
                    return batch, rejections
                batch, bad = split_bad_vectors(batch, columns, path)
                return batch, rejections + bad

            return checked_columns
        rows = pq.ParquetFile(fileobj).metadata.num_rows
        fileobj.seek(0)
        npz = npz_path(path)
        try:
            handle = stack.enter_context(FileSystems.open(npz, compression_type=CompressionTypes.UNCOMPRESSED))
        except Exception as error:  # noqa: BLE001 - a missing or unopenable npz: the shard cannot be filtered
            return Rejection(path, None, EMBEDDINGS_MISSING, {"npz": npz, "error": str(error)}, records=rows)
        embeddings = NpzEmbeddings(handle, source.names, npz)
        problem = embeddings.problem(rows)
        if problem is not None:
            reason, detail = problem
            return Rejection(path, None, reason, detail, records=rows)
        return lambda batch: split_bad_vectors(embeddings.attach(batch), columns, path)

    def _rejection(self, rejection: Rejection, read_before: bool = False):
        """Count a rejection in the metrics and route it to REJECTED (or raise, strict).

        `read_before`: a row of a batch already counted as read (an embedding it lacks).
        """
        if self._strict:
            raise strict_error(rejection)
        if not read_before:
            self._records.inc(rejection.records)
        self._rejected.inc(rejection.records)
        Metrics.counter(metrics.REJECTED_RECORDS, rejection.reason).inc(rejection.records)
        if rejection.row is None:
            self._files_rejected.inc()
            Metrics.counter(metrics.REJECTED_FILES, rejection.reason).inc()
        return beam.pvalue.TaggedOutput(REJECTED, rejection)


class _SortedUnique(beam.CombineFn):
    """Paths -> one sorted list, each path once (several patterns may match a file)."""

    def create_accumulator(self):
        return set()

    def add_input(self, accumulator, path):
        accumulator.add(path)
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            merged |= other
        return merged

    def extract_output(self, accumulator):
        return sorted(accumulator)


class Read(NamedTuple):
    """What ReadCaptions hands on."""

    batches: PCollection  # [pa.RecordBatch]: key, text, source columns, the layout's pass-through columns
    rejected: PCollection  # [Rejection]: each unusable record or file
    listed_files: PCollection  # [(file index, path)]: every input file
    counted: PCollection  # [Counter]: per file, the records read (transforms.core.accounting.read_figures)


class ReadCaptions(beam.PTransform):
    """Read caption files into batches.

    In: the pipeline root. Out: `Read`: `batches` (pa.RecordBatch of key, text,
    source columns and the layout's pass-through columns), `rejected` (Rejection
    for each unusable record or file) and `listed_files`.
    `patterns`: paths, globs or brace patterns (the --input values), listed inside the
    pipeline and numbered in sorted order; files are the unit of parallelism.
    With `strict`, the first rejected record or file fails the run with a
    `transforms.formats.rejections.StrictRejectionError` (`rejections.strict_failure` finds its
    one-line message in whatever the runner raises).
    Beam metrics: "curation" files_read, records_read, records_rejected,
    files_rejected; per reject reason, "rejected" (records) and "rejected_files".
    With `embeddings` (transforms.formats.embeddings), each batch carries its rows' CLIP
    embeddings: from the npz beside each parquet shard (a shard whose npz is missing or
    holds another number of rows is rejected whole), or checked in their columns.
    A row whose vector holds NaN or infinity, or is all zeros, in any embedding the run
    reads is rejected (bad_embedding_vector / zero_embedding_vector), so no stage sees one.
    `counted`: per file, the records read (rejected ones included), for the accounting.
    `listed_files` is the PCollection of (file index, path): writers that need
    every input file use it; the job graph holds only the patterns (Dataflow refuses
    graphs over 10 MB).
    """

    def __init__(
        self,
        patterns: Sequence[str],
        layout: InputLayout,
        strict: bool = False,
        embeddings: Optional[EmbeddingSource] = None,
    ):
        super().__init__()
        self._patterns = list(patterns)
        self._layout = layout
        self._strict = strict
        self._embeddings = embeddings

    def expand(self, pbegin: PBegin) -> Read:
        # The files are listed inside the pipeline, from the patterns: the job graph holds
        # the patterns, not the list, so its size does not grow with the number of files
        # (Dataflow refuses graphs over 10 MB: ~100k paths). Sorted and numbered once, as
        # the launcher listed them.
        listed_files = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "ExpandBraces" >> beam.FlatMap(listable_names)
            | "MatchFiles" >> fileio.MatchAll()
            | "FilePaths" >> beam.Map(lambda metadata: metadata.path)
            | "SortedPaths" >> beam.CombineGlobally(_SortedUnique())
            | "NumberFiles" >> beam.FlatMap(lambda paths: list(enumerate(paths)))
        )
        parsed = (
            listed_files
            # Spread the files over workers before the expensive per-file work.
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseFiles"
            >> beam.ParDo(_ReadCaptionFileFn(self._layout, self._strict, self._embeddings)).with_outputs(
                REJECTED, COUNTED, main=BATCHES
            )
        )
        return Read(parsed[BATCHES], parsed[REJECTED], listed_files, parsed[COUNTED])
