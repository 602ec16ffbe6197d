"""DataComp's filters as a stage: --filter basic,text,clip_score,image and their flags (docs/datacomp.md).

The rules are transforms.filters (pure); the transform is transforms.beam.filters.DataCompFilters.
A dropped record goes to filtered/ with the first filter it fails; the clip_score
fraction threshold is taken over every record that reaches this stage.
"""

from __future__ import annotations

import posixpath
from typing import Optional

import numpy as np
import pyarrow as pa

from beam_pipeline.option_checks import BadValue, UsageError, number
from beam_pipeline.stage_rows import datacomp_filter_rows
from beam_pipeline.stages.assets import check_numeric, column_type, npy_header, open_asset
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.filters import DataCompFilters
from transforms.beam.io import local_copy
from transforms.filters.clusters import read_cluster_spec, resolve_target_clusters
from transforms.filters.datacomp import FILTERS, FilterSpec
from transforms.filters.language import FastTextLid, load_check
from transforms.filters.text_entities import read_wnids

DEFAULT_CLIP_SCORE_FIELD = "clip_l14_similarity_score"
DEFAULT_WIDTH_FIELD, DEFAULT_HEIGHT_FIELD = "original_width", "original_height"
# The filters that read a caption's language (fastText LID): --lid_model is for them.
LANGUAGE_FILTERS = ("basic", "text", "image")


def filter_list(value: str) -> tuple[str, ...]:
    """--filter: comma-separated names, returned in the stages' order (FILTERS)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FILTERS]
    if unknown or not names:
        raise BadValue(f"--filter takes a comma-separated list of {', '.join(FILTERS)}; got {value!r}")
    return tuple(name for name in FILTERS if name in names)


class DataCompFiltering(Stage):
    """--filter: DataComp's basic, text, clip_score and image filters, in that order."""

    name = "Filter"
    main_flag = "--filter"
    worker_path_flags = ("lid_model", "centroids", "target_clusters")

    def __init__(self, spec: FilterSpec, targets: Optional[tuple]):
        self.spec = spec
        self.targets = targets  # the image filter's clusters when given as ids (else computed from features)
        self.reasons = spec.filters
        self.embedding_keys = ()

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--filter",
            filter_list,
            default=None,
            metavar="LIST",
            help=f"DataComp filters, comma-separated, applied in the order {', '.join(FILTERS)} (default: none)",
        )
        add(
            group,
            "--lid_model",
            default=None,
            metavar="FILE",
            help="fastText language-ID model for the filters (DataComp uses lid.176.bin); default: the bundled "
            "lid.176.ftz, an approximation that stats.json names",
        )
        for flag, default, what in (
            ("--width_field", DEFAULT_WIDTH_FIELD, "width"),
            ("--height_field", DEFAULT_HEIGHT_FIELD, "height"),
        ):
            add(group, flag, default=default, help=f"column of the image {what} (default: {default})")
        add(
            group,
            "--imagenet_wnids",
            default=None,
            metavar="FILE",
            help="text filter: ImageNet-21k synset ids, one nXXXXXXXX a line (DataComp's imagenet21k_wnids.txt)",
        )
        add(
            group,
            "--clip_score_field",
            default=DEFAULT_CLIP_SCORE_FIELD,
            help=f"clip_score filter: the score column (default: {DEFAULT_CLIP_SCORE_FIELD})",
        )
        add(
            group,
            "--clip_score_fraction",
            number("clip_score_fraction", 0, 1),
            default=None,
            metavar="F",
            help="clip_score filter: keep the top fraction F of the pool by score, ties at the threshold kept",
        )
        add(
            group,
            "--clip_score_threshold",
            number("clip_score_threshold"),
            default=None,
            metavar="T",
            help="clip_score filter: keep records with score >= T",
        )
        add(
            group,
            "--centroids",
            default=None,
            metavar="FILE.npy",
            help="image filter: the pool's cluster centroids, K x d floats (DataComp's L/14 centroids as .npy)",
        )
        add(
            group,
            "--target_clusters",
            default=None,
            metavar="FILE",
            help="image filter: the clusters to keep, integers (.npy or text), or ImageNet-1k image features "
            "(an n x d float .npy) whose nearest clusters are computed in the pipeline",
        )

    @classmethod
    def check_arguments(cls, args) -> None:
        filters = args.filter or ()
        if "clip_score" in filters:
            if (args.clip_score_fraction is None) == (args.clip_score_threshold is None):
                raise BadValue("--filter clip_score needs one of --clip_score_fraction F or --clip_score_threshold T")
        elif args.clip_score_fraction is not None or args.clip_score_threshold is not None:
            raise BadValue("--clip_score_fraction/--clip_score_threshold are for --filter clip_score")
        if "text" in filters and not args.imagenet_wnids:
            raise BadValue("--filter text needs --imagenet_wnids FILE (ImageNet-21k synset ids, one nXXXXXXXX a line)")
        if "image" in filters and not (args.centroids and args.target_clusters):
            raise BadValue("--filter image needs --centroids FILE.npy and --target_clusters FILE")
        if "image" not in filters and (args.centroids or args.target_clusters):
            raise BadValue("--centroids/--target_clusters are for --filter image")
        if "text" not in filters and args.imagenet_wnids:
            raise BadValue("--imagenet_wnids is for --filter text")
        if args.lid_model and not (set(LANGUAGE_FILTERS) & set(filters)):
            raise BadValue("--lid_model is for --filter basic, text or image")

    @classmethod
    def used(cls, args) -> bool:
        return bool(args.filter)

    @classmethod
    def wanted_embeddings(cls, args) -> tuple[str, ...]:
        return (args.image_embedding_key,) if "image" in (args.filter or ()) else ()

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "DataCompFiltering":
        filters = args.filter
        layout = inputs.layout
        if layout.format != "parquet" and {"basic", "clip_score"} & set(filters):
            names = ",".join(filters)
            raise UsageError(f"--filter {names} reads DataComp's parquet pool; the input is {layout.format}")
        targets, feature_rows = None, 0
        if "image" in filters:
            targets, feature_rows = _image_assets(args, inputs.embedding_width)
        if "basic" in filters:
            for name, flag in ((args.width_field, "--width_field"), (args.height_field, "--height_field")):
                check_numeric(layout, name, flag, (pa.types.is_integer, pa.types.is_floating))
        score_dtype = "float32"
        if "clip_score" in filters:
            check_numeric(layout, args.clip_score_field, "--clip_score_field", (pa.types.is_floating,))
            score_type = column_type(layout, args.clip_score_field, "--clip_score_field")
            score_dtype = {16: "float16", 32: "float32"}.get(score_type.bit_width, "float64")
        wnids = _wnids(args.imagenet_wnids) if "text" in filters else frozenset()
        lid_identity = ()
        if args.lid_model or set(LANGUAGE_FILTERS) & set(filters):
            try:
                local = None if args.lid_model is None else local_copy(args.lid_model)
                load_check(local)
            except Exception as error:  # noqa: BLE001 - missing, unreadable, not a model: one line
                raise UsageError(f"--lid_model: {error}") from None
            model = FastTextLid(local)
            lid_identity = (posixpath.basename(args.lid_model or model.name), model.sha256, model.approximate)
        image_column = inputs.embeddings.column(args.image_embedding_key) if inputs.embeddings else None
        spec = FilterSpec(
            filters=filters,
            lid_model=args.lid_model,
            lid_identity=lid_identity,
            width_field=args.width_field,
            height_field=args.height_field,
            wnid_offsets=wnids,
            clip_score_field=args.clip_score_field,
            clip_score_fraction=args.clip_score_fraction,
            clip_score_threshold=args.clip_score_threshold,
            clip_score_dtype=score_dtype,
            image_column=image_column,
            centroids=args.centroids,
            target_clusters=args.target_clusters,
            feature_rows=feature_rows,
        )
        stage = cls(spec, targets)
        stage.embedding_keys = (args.image_embedding_key,) if "image" in filters else ()
        return stage

    def apply(self, batches, run: RunContext) -> StageOutput:
        targets = self.targets and np.asarray(self.targets, dtype=np.int64)
        filtered = batches | self.name >> DataCompFilters(self.spec, targets)
        figures = {} if filtered.threshold is None else {"clip_threshold": filtered.threshold}
        return StageOutput(filtered.batches, figures, filtered.filtered)

    def stats(self, figures: dict, final: dict) -> dict:
        spec = self.spec
        settings: dict = {"filters": list(spec.filters)}
        if spec.lid_identity:
            name, sha256, approximate = spec.lid_identity
            settings["lid_model"] = {"name": name, "sha256": sha256, "approximate": approximate}
        if "clip_score" in spec.filters:
            settings["clip_score_field"] = spec.clip_score_field
            if spec.clip_score_fraction is not None:
                settings["clip_score_fraction"] = spec.clip_score_fraction
        sections = {"filters": settings}
        if "clip_threshold" in figures:
            threshold = figures["clip_threshold"]  # NaN (nothing kept) as null, which JSON can hold
            sections["found"] = {"clip_score_threshold": None if threshold != threshold else float(threshold)}
        return sections

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return datacomp_filter_rows(stats)


def _wnids(path: str) -> frozenset:
    with open_asset(path, "--imagenet_wnids") as handle:
        lines = handle.read().decode("utf-8", "replace").splitlines()
    try:
        offsets = read_wnids(lines, name=f"--imagenet_wnids {path}")
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not offsets:
        raise UsageError(f"--imagenet_wnids {path} lists no synset id")
    return offsets


def _image_assets(args, width: int) -> tuple[Optional[tuple], int]:
    """(the target clusters if given as ids, else None; the ImageNet feature rows to assign, else 0)."""
    with open_asset(args.centroids, "--centroids") as handle:
        header = npy_header(handle, f"--centroids {args.centroids}")
    if len(header.shape) != 2 or header.dtype.kind != "f":
        raise UsageError(f"--centroids {args.centroids} must hold a K x d float array; it holds {header.shape}")
    clusters, dims = header.shape
    if width > 0 and dims != width:
        raise UsageError(f"--centroids are {dims}-d but the image embeddings are {width}-d")
    name = f"--target_clusters {args.target_clusters}"
    with open_asset(args.target_clusters, "--target_clusters") as handle:
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
    header = npy_header(handle, name)
    if len(header.shape) == 2 and header.dtype.kind == "f":
        return header.shape
    return None
