"""Cross-covariance selection as a stage: --select covariance and its flags (docs/selection.md).

The selection is transforms.beam.select.CovarianceSelect (its pieces transforms.selection):
of the records that reach it, it keeps round(f x N), clearing the keep flag of the others.
"""

from __future__ import annotations

import dataclasses

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.option_checks import BadValue, UsageError, integer, number
from beam_pipeline.stage_rows import selection_rows
from beam_pipeline.stages.assets import npy_header, open_asset
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.select import CovarianceSelect
from transforms.selection.stage import SelectSpec

SELECTS = ("covariance",)
# Exact greedy costs O(k n d) per class: a class above this many records is split by key hash
# into parts of about this size (docs/selection.md has the cost and the approximation).
DEFAULT_MAX_CLASS_SIZE = 20000


class CovarianceSelection(Stage):
    """--select covariance: a subset preserving the image-caption cross-covariance per pseudo-class."""

    name = "Select"
    fate = "not_selected"
    main_flag = "--select"
    worker_path_flags = ("class_embeddings",)

    def __init__(self, spec: SelectSpec, embedding_keys: tuple[str, str]):
        self.spec = spec
        self.embedding_keys = embedding_keys

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--select",
            default=None,
            choices=SELECTS,
            help="a selection after balancing: covariance (a subset preserving the image-caption cross-covariance "
            "per pseudo-class, docs/selection.md) (default: none)",
        )
        add(
            group,
            "--select_fraction",
            number("select_fraction", 0, 1),
            default=None,
            metavar="F",
            help="--select: keep round(F x N) of the N records that reach the stage",
        )
        add(
            group,
            "--class_embeddings",
            default=None,
            metavar="FILE.npy",
            help="--select: K x d zero-shot class text embeddings (same CLIP model as the image embeddings); "
            "a record's class is its image embedding's argmax over them (default: one class)",
        )
        add(
            group,
            "--max_class_size",
            integer("max_class_size", 1),
            default=str(DEFAULT_MAX_CLASS_SIZE),
            metavar="N",
            help=f"--select: larger classes are split by key hash into parts of about N, each selected alone "
            f"(default: {DEFAULT_MAX_CLASS_SIZE})",
        )

    @classmethod
    def check_arguments(cls, args) -> None:
        if args.select is None:
            for name in ("select_fraction", "class_embeddings"):
                if getattr(args, name) is not None:
                    raise BadValue(f"--{name} is for --select covariance")
        elif args.select_fraction is None:
            raise BadValue("--select covariance needs --select_fraction F (the share of the records to keep)")

    @classmethod
    def used(cls, args) -> bool:
        return args.select is not None

    @classmethod
    def wanted_embeddings(cls, args) -> tuple[str, ...]:
        return (args.image_embedding_key, args.text_embedding_key) if args.select else ()

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "CovarianceSelection":
        if args.class_embeddings:
            _check_class_embeddings(args.class_embeddings, inputs.embedding_width)
        embeddings = inputs.embeddings
        spec = SelectSpec(
            fraction=args.select_fraction,
            seed=inputs.seed,
            image_column=embeddings.column(args.image_embedding_key),
            text_column=embeddings.column(args.text_embedding_key),
            class_embeddings=args.class_embeddings,
            max_class_size=args.max_class_size,
        )
        return cls(spec, (args.image_embedding_key, args.text_embedding_key))

    def apply(self, batches, run: RunContext) -> StageOutput:
        # The selection's member blocks wait in files on local engines (transforms.beam.select_parts).
        spill_dir = run.spill_dir and FileSystems.join(run.spill_dir, "select")
        selected = batches | self.name >> CovarianceSelect(dataclasses.replace(self.spec, spill_dir=spill_dir))
        return StageOutput(selected.batches, {"selection": selected.figures})

    def stats(self, figures: dict, final: dict) -> dict:
        # The seed: the selection's tie keys depend on it (a balancing before it may have named it).
        return {"inputs": {"seed": self.spec.seed}, "found": {"selection": figures["selection"]}}

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return selection_rows(stats)


def _check_class_embeddings(path: str, width: int) -> None:
    name = f"--class_embeddings {path}"
    with open_asset(path, "--class_embeddings") as handle:
        header = npy_header(handle, name)
    if len(header.shape) != 2 or header.dtype.kind != "f" or header.shape[0] == 0:
        raise UsageError(f"{name} must hold a K x d float array; it holds {header.dtype} {header.shape}")
    if width > 0 and header.shape[1] != width:
        raise UsageError(f"{name}: class embeddings are {header.shape[1]}-d but the image embeddings are {width}-d")
