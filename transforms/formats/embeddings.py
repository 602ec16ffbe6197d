"""CLIP embeddings beside the captions: a DataComp `.npz` per parquet shard, or list columns.

No Beam import. DataComp ships, beside each pool shard `X.parquet`, an `X.npz` with the
same rows in the same order (docs/datacomp.md, "Embeddings"); a 12.8B pool's npz is ~3 GB,
so `NpzEmbeddings` reads only the rows of the batch at hand (transforms.formats.npz
seeks into the stored member). The rows are attached to the batch as internal
fixed-size-list<float32> columns (float16 widens to float32 exactly), which no writer
writes. With `--embeddings columns` they are columns of the parquet itself.

A batch's rows are those the reader accepted (SOURCE_ROW), increasing within a file,
so one range read per batch serves them all.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from transforms.core.columns import SOURCE_ROW
from transforms.formats.npz import NpzError, NpzRows
from transforms.formats.rejections import (
    BAD_EMBEDDING_VECTOR,
    EMBEDDINGS_ROW_MISMATCH,
    EMBEDDINGS_UNREADABLE,
    MISSING_EMBEDDING,
    ZERO_EMBEDDING_VECTOR,
    Rejection,
)

EMBEDDING_PREFIX = "__embedding."


def embedding_column(name: str) -> str:
    """The internal batch column that holds the npz member `name`."""
    return EMBEDDING_PREFIX + name


@dataclass(frozen=True)
class EmbeddingSource:
    """Where a run's embeddings are: `kind` npz (members `names` of the npz beside each
    shard) or columns (parquet columns `names`)."""

    kind: str
    names: tuple[str, ...]

    def column(self, name: str) -> str:
        """The batch column holding embedding `name`."""
        return embedding_column(name) if self.kind == "npz" else name


def without_npz_embeddings(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch less the internal npz embedding columns (once no stage needs them: they are
    most of a batch's bytes, and no writer writes them)."""
    names = [name for name in batch.schema.names if not name.startswith(EMBEDDING_PREFIX)]
    return batch if len(names) == batch.num_columns else batch.select(names)


def npz_path(path: str) -> str:
    """The npz beside a parquet shard: `a/b/000001.parquet` -> `a/b/000001.npz`."""
    root, _ = posixpath.splitext(path)
    return root + ".npz"


def as_fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """An (n, d) array as a fixed-size-list<float32> column."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def embedding_matrix(batch: pa.RecordBatch, column: str) -> np.ndarray:
    """The (n, d) float32 matrix of a list column of `batch` (fixed-size or variable, rows of one length)."""
    array = batch.column(column)
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        values = array.flatten()
    else:
        lengths = np.diff(array.offsets.to_numpy())
        width = int(lengths[0]) if len(lengths) else 0
        values = array.flatten()
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(array), width)


class NpzEmbeddings:
    """The members `names` of one shard's npz, attached to that shard's batches.

    `problem(parquet_rows)` says, before any row is read, why the npz cannot serve
    the shard (a member missing, not 2-D, or a row count that differs), or None.
    """

    def __init__(self, fileobj, names: Sequence[str], path: str):
        self._npz = NpzRows(fileobj)
        self._names = tuple(names)
        self._path = path

    def problem(self, parquet_rows: int) -> Optional[tuple[str, dict]]:
        """(reason, detail) when the npz cannot serve a shard of `parquet_rows` rows; None when it can."""
        try:
            members = self._npz.members()
        except NpzError as error:
            return EMBEDDINGS_UNREADABLE, {"npz": self._path, "error": str(error)}
        for name in self._names:
            info = members.get(name)
            if info is None or len(info.shape) != 2:
                found = {n: list(m.shape) for n, m in members.items()}
                return EMBEDDINGS_UNREADABLE, {"npz": self._path, "member": name, "members": found}
            if info.shape[0] != parquet_rows:
                detail = {"npz": self._path, "member": name, "npz_rows": info.shape[0], "parquet_rows": parquet_rows}
                return EMBEDDINGS_ROW_MISMATCH, detail
        return None

    def attach(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`batch` plus one internal column per member, holding each row's vector."""
        rows = batch.column(SOURCE_ROW).to_numpy()
        if len(rows) == 0:
            return batch
        first, last = int(rows.min()), int(rows.max()) + 1
        for name in self._names:
            block = self._npz.rows(name, first, last)
            batch = batch.append_column(embedding_column(name), as_fixed_size_list(block[rows - first]))
        return batch


def split_missing_embeddings(
    batch: pa.RecordBatch, columns: Sequence[str], path: str
) -> tuple[Optional[pa.RecordBatch], list[Rejection]]:
    """--embeddings columns: (the rows whose every embedding column holds a vector of the
    column's common length, a `missing_embedding` rejection for each other row)."""
    bad = np.zeros(batch.num_rows, dtype=bool)
    for column in columns:
        array = batch.column(column)
        bad |= np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if not pa.types.is_fixed_size_list(array.type):
            lengths = array.value_lengths().fill_null(-1).to_numpy()
            present = lengths[lengths >= 0]
            width = np.bincount(present).argmax() if len(present) else 0
            bad |= lengths != width
    if not bad.any():
        return batch, []
    rows = batch.column(SOURCE_ROW).to_numpy()
    keys = batch.column(0).to_pylist()
    rejections = [
        Rejection(path, int(rows[i]), MISSING_EMBEDDING, {"key": keys[i], "columns": list(columns)})
        for i in np.flatnonzero(bad).tolist()
    ]
    kept = batch.filter(pa.array(~bad))
    return (kept if kept.num_rows else None), rejections


def bad_vector_reasons(matrix: np.ndarray) -> np.ndarray:
    """Per row of an (n, d) matrix: BAD_EMBEDDING_VECTOR (a NaN or infinity), ZERO_EMBEDDING_VECTOR
    (all zeros: it has no direction to normalise) or "" (a usable vector)."""
    reasons = np.full(len(matrix), "", dtype=object)
    zero = ~np.any(matrix != 0, axis=1)
    reasons[zero] = ZERO_EMBEDDING_VECTOR
    reasons[~np.isfinite(matrix).all(axis=1)] = BAD_EMBEDDING_VECTOR  # NaN != 0: never "zero" too
    return reasons


def split_bad_vectors(
    batch: pa.RecordBatch, columns: Mapping[str, str], path: str
) -> tuple[Optional[pa.RecordBatch], list[Rejection]]:
    """(the rows whose every embedding holds a usable vector, a rejection for each other row).

    `columns`: embedding name -> the batch column holding it; a row is rejected for the first
    embedding, in this order, whose vector is bad (`bad_vector_reasons`), named in `raw`.
    """
    reason = np.full(batch.num_rows, "", dtype=object)
    embedding = np.full(batch.num_rows, "", dtype=object)
    for name, column in columns.items():
        found = bad_vector_reasons(embedding_matrix(batch, column))
        new = (reason == "") & (found != "")
        reason[new], embedding[new] = found[new], name
    bad = reason != ""
    if not bad.any():
        return batch, []
    rows = batch.column(SOURCE_ROW).to_numpy()
    keys = batch.column(0).to_pylist()
    rejections = [
        Rejection(path, int(rows[i]), reason[i], {"key": keys[i], "embedding": embedding[i]})
        for i in np.flatnonzero(bad).tolist()
    ]
    kept = batch.filter(pa.array(~bad))
    return (kept if kept.num_rows else None), rejections
