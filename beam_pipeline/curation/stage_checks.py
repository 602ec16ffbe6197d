"""Checks of the filter stage's options against the input and the user's assets: one line each, before any work.

`stages_of` builds the run's FilterSpec, EmbeddingSource and SelectSpec: the columns the filters
read are in the input, the LID model loads, the wnid list parses, the centroids and the
embeddings have the same width, the target clusters are cluster ids (or features).
Reads headers and small files only; writes nothing.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.options import UsageError
from beam_pipeline.stage_options import StageArgs
from transforms.beam.io import local_copy
from transforms.filters.clusters import read_cluster_spec, resolve_target_clusters
from transforms.filters.datacomp import FilterSpec
from transforms.filters.language import FastTextLid, load_check
from transforms.filters.text_entities import read_wnids
from transforms.formats.embeddings import EmbeddingSource, npz_path
from transforms.formats.layout import InputLayout
from transforms.formats.npy import read_npy_header
from transforms.formats.npz import NpzError, NpzRows
from transforms.selection.stage import SelectSpec

RAW = CompressionTypes.UNCOMPRESSED


def _open(path: str, flag: str):
    try:
        return FileSystems.open(path, compression_type=RAW)
    except Exception as error:  # noqa: BLE001 - missing, unreadable, no credentials
        raise UsageError(f"{flag} {path} cannot be opened: {error}") from None


def _column_type(layout: InputLayout, name: str, flag: str) -> pa.DataType:
    for column, dtype in layout.passthrough:
        if column == name:
            return dtype
    columns = ", ".join(column for column, _ in layout.passthrough)
    raise UsageError(f"{flag} {name!r} is not a column of the input (columns: {columns})")


def _numeric(layout: InputLayout, name: str, flag: str, kinds) -> None:
    dtype = _column_type(layout, name, flag)
    if not any(kind(dtype) for kind in kinds):
        raise UsageError(f"{flag} {name!r} must be a {'float' if len(kinds) == 1 else 'numeric'} column; it is {dtype}")


def _embedding_width(kind: str, layout: InputLayout, paths: Sequence[str], name: str) -> int:
    """The width d of embedding `name` (-1 when a variable-size list column does not tell):
    from the first shard's npz header, or the column's type."""
    if kind == "columns":
        dtype = _column_type(layout, name, "--image_embedding_key")
        if not (pa.types.is_fixed_size_list(dtype) or pa.types.is_list(dtype) or pa.types.is_large_list(dtype)):
            raise UsageError(f"--embeddings columns: column {name!r} must be a list of floats; it is {dtype}")
        return dtype.list_size if pa.types.is_fixed_size_list(dtype) else -1
    npz = npz_path(paths[0])
    with _open(npz, "--embeddings npz: the npz beside the first shard,") as handle:
        try:
            members = NpzRows(handle).members()
        except NpzError as error:
            raise UsageError(f"--embeddings npz: {npz}: {error}") from None
    if name not in members or len(members[name].shape) != 2:
        raise UsageError(
            f"--image_embedding_key {name!r} is not a 2-D array of {npz} (members: {', '.join(sorted(members))})"
        )
    return members[name].shape[1]


def _wnids(path: str) -> frozenset:
    with _open(path, "--imagenet_wnids") as handle:
        lines = handle.read().decode("utf-8", "replace").splitlines()
    try:
        offsets = read_wnids(lines, name=f"--imagenet_wnids {path}")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not offsets:
        raise UsageError(f"--imagenet_wnids {path} lists no synset id")
    return offsets


def _image_assets(stages: StageArgs, width: int) -> tuple[Optional[tuple], int]:
    """(the target clusters if given as ids, else None; the ImageNet feature rows to assign, else 0)."""
    with _open(stages.centroids, "--centroids") as handle:
        try:
            header = read_npy_header(handle, f"--centroids {stages.centroids}")
        except ValueError as error:
            raise UsageError(str(error)) from None
    if len(header.shape) != 2 or header.dtype.kind != "f":
        raise UsageError(f"--centroids {stages.centroids} must hold a K x d float array; it holds {header.shape}")
    clusters, dims = header.shape
    if width > 0 and dims != width:
        raise UsageError(f"--centroids are {dims}-d but the image embeddings are {width}-d")
    name = f"--target_clusters {stages.target_clusters}"
    with _open(stages.target_clusters, "--target_clusters") as handle:
        features = _features_header(handle, name)
        if features is None:  # cluster ids: a short list, read and checked now
            handle.seek(0)
            try:
                ids = resolve_target_clusters(read_cluster_spec(handle, name), np.zeros((clusters, 1)), name)
            except ValueError as error:
                raise UsageError(str(error)) from None
            return tuple(int(i) for i in ids), 0
    rows, feature_dims = features
    if feature_dims != dims:
        raise UsageError(f"{name}: features are {feature_dims}-d but the centroids are {dims}-d")
    if rows == 0:
        raise UsageError(f"{name} holds no feature rows")
    return None, rows


def _features_header(handle, name: str) -> Optional[tuple[int, int]]:
    """(rows, d) when the file is a .npy of 2-D floats (ImageNet features, assigned in the
    pipeline: 1.28M x 768 is too big to read here); None for anything else (cluster ids)."""
    if handle.read(6) != b"\x93NUMPY":
        return None
    handle.seek(0)
    try:
        header = read_npy_header(handle, name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if len(header.shape) == 2 and header.dtype.kind == "f":
        return header.shape
    return None


@dataclasses.dataclass(frozen=True)
class Stages:
    """The stages around balancing, checked: filters, where the embeddings are, the selection."""

    filters: Optional[FilterSpec] = None
    embeddings: Optional[EmbeddingSource] = None
    target_clusters: Optional[tuple] = None  # the image filter's clusters when given as ids
    select: Optional[SelectSpec] = None


def stages_of(stages: StageArgs, layout: InputLayout, paths: Sequence[str], seed: int) -> Stages:
    """The run's stages from their flags, each asset checked against the input."""
    if not stages.needs_embeddings:
        return Stages(filters=_filter_spec(stages, layout, None, 0))
    if layout.format != "parquet":
        raise UsageError(
            f"CLIP embeddings are read beside parquet shards (DataComp's pools); the input is {layout.format}"
        )
    kind = stages.embeddings or "npz"
    names = (stages.image_embedding_key,) + ((stages.text_embedding_key,) if stages.select else ())
    embeddings = EmbeddingSource(kind, names)
    widths = [_embedding_width(kind, layout, paths, name) for name in names]
    targets, feature_rows = _image_assets(stages, widths[0]) if "image" in stages.filter else (None, 0)
    filters = _filter_spec(stages, layout, embeddings.column(stages.image_embedding_key), feature_rows)
    select = None
    if stages.select:
        if stages.class_embeddings:
            _check_class_embeddings(stages.class_embeddings, widths[0])
        select = SelectSpec(
            fraction=stages.select_fraction,
            seed=seed,
            image_column=embeddings.column(stages.image_embedding_key),
            text_column=embeddings.column(stages.text_embedding_key),
            class_embeddings=stages.class_embeddings,
            max_class_size=stages.max_class_size,
        )
    return Stages(filters, embeddings, targets, select)


def _check_class_embeddings(path: str, width: int) -> None:
    name = f"--class_embeddings {path}"
    with _open(path, "--class_embeddings") as handle:
        try:
            header = read_npy_header(handle, name)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if len(header.shape) != 2 or header.dtype.kind != "f" or header.shape[0] == 0:
        raise UsageError(f"{name} must hold a K x d float array; it holds {header.dtype} {header.shape}")
    if width > 0 and header.shape[1] != width:
        raise UsageError(f"{name}: class embeddings are {header.shape[1]}-d but the image embeddings are {width}-d")


def _filter_spec(
    stages: StageArgs, layout: InputLayout, image_column: Optional[str], feature_rows: int
) -> Optional[FilterSpec]:
    """The FilterSpec of --filter, or None without it."""
    filters = stages.filter
    if not filters:
        return None
    if layout.format != "parquet" and {"basic", "clip_score"} & set(filters):
        raise UsageError(f"--filter {','.join(filters)} reads DataComp's parquet pool; the input is {layout.format}")
    if "basic" in filters:
        for name, flag in ((stages.width_field, "--width_field"), (stages.height_field, "--height_field")):
            _numeric(layout, name, flag, (pa.types.is_integer, pa.types.is_floating))
    score_dtype = "float32"
    if "clip_score" in filters:
        _numeric(layout, stages.clip_score_field, "--clip_score_field", (pa.types.is_floating,))
        score_type = _column_type(layout, stages.clip_score_field, "--clip_score_field")
        score_dtype = {16: "float16", 32: "float32"}.get(score_type.bit_width, "float64")
    wnids = _wnids(stages.imagenet_wnids) if "text" in filters else frozenset()
    lid_identity = ()
    if stages.lid_model or {"basic", "text", "image"} & set(filters):
        try:
            local = None if stages.lid_model is None else local_copy(stages.lid_model)
            load_check(local)
        except Exception as error:  # noqa: BLE001 - missing, unreadable, not a model: one line
            raise UsageError(f"--lid_model: {error}") from None
        model = FastTextLid(local)
        lid_identity = (posixpath.basename(stages.lid_model or model.name), model.sha256, model.approximate)
    return FilterSpec(
        filters=filters,
        lid_model=stages.lid_model,
        lid_identity=lid_identity,
        width_field=stages.width_field,
        height_field=stages.height_field,
        wnid_offsets=wnids,
        clip_score_field=stages.clip_score_field,
        clip_score_fraction=stages.clip_score_fraction,
        clip_score_threshold=stages.clip_score_threshold,
        clip_score_dtype=score_dtype,
        image_column=image_column,
        centroids=stages.centroids,
        target_clusters=stages.target_clusters,
        feature_rows=feature_rows,
    )
