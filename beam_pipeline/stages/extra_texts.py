"""--extra_text_fields a,b,c and --extra_texts GLOB: several texts per sample (LaCLIP's rewrites,
MetaCLIP 1.2's synthetic captions), docs/dedup.md section 3.

The first stage: every record gets `texts` (its caption first, then its extra texts), carried
to subset/, img2dataset/ and the reshard's `.json` (caption_0, caption_1, ...). Matching and
balancing read `text`, the original caption, only. The rules are transforms.images.extra_texts
(pure); the transform transforms.beam.extra_texts.AttachExtraTexts (a keyed join by sample key
for the files). Keeps every record.
"""

from __future__ import annotations

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.option_checks import BadValue, UsageError
from beam_pipeline.stage_rows import extra_texts_rows
from beam_pipeline.stages.assets import column_type
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.extra_texts import AttachExtraTexts
from transforms.core.columns import KEY, TEXT, TEXTS


def field_names(value: str) -> tuple[str, ...]:
    """--extra_text_fields: comma-separated names, each once."""
    names = tuple(name.strip() for name in str(value).split(","))
    if not all(names):
        raise BadValue(f"--extra_text_fields {value!r}: an empty name; give names separated by commas")
    if len(set(names)) < len(names):
        raise BadValue(f"--extra_text_fields {value!r}: a name given twice")
    if TEXT in names or KEY in names or TEXTS in names:
        raise BadValue(f"--extra_text_fields {value!r}: {TEXT}, {KEY} and {TEXTS} are not extra texts")
    return names


def _is_text_column(dtype: pa.DataType) -> bool:
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        dtype = dtype.value_type
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype)


class ExtraTexts(Stage):
    """Every record's `texts`: its caption, then the texts of its extra fields and of the keyed files."""

    name = "ExtraTexts"
    main_flag = "--extra_texts"
    keeps_every_record = True
    fate = ""
    worker_path_flags = ("extra_texts",)

    def __init__(self, fields: tuple[str, ...], paths: tuple[str, ...]):
        self.fields = fields
        self.paths = paths

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--extra_text_fields",
            field_names,
            default=None,
            metavar="A,B,C",
            help="columns (webdataset: .json fields) holding more texts of each sample, a string or a list of "
            "strings each; carried to the hand-offs as `texts` / caption_0 (the original), caption_1 ...; "
            "matching and balancing read the original caption only (default: none)",
        )
        add(
            group,
            "--extra_texts",
            default=None,
            metavar="GLOB",
            help='JSON-lines files of more texts per sample, {"key": SAMPLE_KEY, "texts": [...]} a line, joined '
            "to the pool by sample key (LaCLIP's rewrites: scripts/laclip_rewrites.py); keys no record has and "
            "keys listed twice are counted and written to rejected/ (default: none)",
        )

    @classmethod
    def used(cls, args) -> bool:
        return bool(getattr(args, "extra_text_fields", None) or getattr(args, "extra_texts", None))

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "ExtraTexts":
        fields = tuple(args.extra_text_fields or ())
        for name in fields:
            dtype = column_type(inputs.layout, name, "--extra_text_fields")
            if not _is_text_column(dtype):
                raise UsageError(f"--extra_text_fields {name!r} is {dtype}, not text or a list of texts")
        paths: tuple[str, ...] = ()
        if args.extra_texts:
            try:
                found = FileSystems.match([args.extra_texts])[0].metadata_list
            except Exception as error:  # noqa: BLE001 - one clear line
                raise UsageError(f"--extra_texts {args.extra_texts!r} cannot be listed: {error}") from None
            paths = tuple(sorted(m.path for m in found))
            if not paths:
                raise UsageError(f"--extra_texts {args.extra_texts!r} matches no file")
        return cls(fields, paths)

    def subset_fields(self) -> list[pa.Field]:
        return [pa.field(TEXTS, pa.list_(pa.string()))]

    def apply(self, batches, run: RunContext) -> StageOutput:
        attached = batches | self.name >> AttachExtraTexts(self.fields, self.paths, max(2, run.num_shards))
        return StageOutput(attached.batches, {"texts": attached.figures}, rejected=attached.rejected)

    def stats(self, figures: dict, final: dict) -> dict:
        texts = figures["texts"]
        found = {
            "extra_text_fields": list(self.fields),
            "records_with_extra_texts": texts.get("records_with_extra_texts", 0),
            "extra_texts": texts.get("extra_texts", 0),
        }
        if self.paths:
            found.update(
                extra_texts_files=len(self.paths),
                extra_texts_lines=texts.get("extra_texts_lines", 0),
                records_with_joined_texts=texts.get("records_with_joined_texts", 0),
                extra_texts_keys_not_in_pool=texts.get("extra_texts_keys_not_in_pool", 0),
                extra_texts_keys_listed_twice=texts.get("extra_texts_keys_listed_twice", 0),
            )
        return {"found": found}

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return extra_texts_rows(stats)
