"""--per_image: MetaCLIP's per-image curation, after balancing (docs/dedup.md, section 3).

Records with the same url key are one image. Counting stays per caption (the balancing
before it is unchanged, entry_counts.json too); this stage keeps at most one record per
image: the matched text with the smallest text draw, kept with its own keep draw, carrying
every text of its image in `texts`. The rule is transforms.images.per_image (pure); the
transform transforms.beam.per_image.CurateImages. A record the balancing kept whose image
is represented by another of its texts (or not kept, its pick having drawn out) has its
keep flag cleared: fate `not_image_pick`.
"""

from __future__ import annotations

import pyarrow as pa

from beam_pipeline.option_checks import BadValue, UsageError, boolean
from beam_pipeline.stage_rows import per_image_rows
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.per_image import CurateImages
from transforms.core.columns import TEXTS
from transforms.images.per_image import captions_per_image

URL = "url"
# At least this many buckets: the curation step spreads over several workers even on a small run.
BUCKETS = 8


def refuse_per_image_conflicts(args) -> None:
    """--per_image needs MetaCLIP balancing, and already makes one sample per URL (no --dedup url)."""
    if not getattr(args, "per_image", False):
        return
    if getattr(args, "balance", "metaclip") != "metaclip":
        raise BadValue("--per_image curates images with MetaCLIP's probabilities: it needs --balance metaclip")
    if "url" in (args.dedup or ()):  # the kinds --dedup parsed (stages/dedup.py, kind_list)
        raise BadValue("--per_image already makes one sample per URL: drop --dedup url (--dedup text still runs)")


class PerImageCuration(Stage):
    """--per_image: one record per image (url key): its picked text, kept with that text's probability."""

    name = "PerImage"
    main_flag = "--per_image"
    fate = "not_image_pick"
    needs_balancing = True  # MetaCLIP's keep probabilities pick the text (refuse_per_image_conflicts)

    def __init__(self, seed: int, batch_size: int):
        self.seed = seed
        self.batch_size = batch_size

    @classmethod
    def add_arguments(cls, group, add) -> None:
        add(
            group,
            "--per_image",
            boolean("per_image"),
            nargs="?",
            const="true",
            default="false",
            metavar="true|false",
            help="records with the same url (url key) are one image, as in MetaCLIP: counting stays per caption; "
            "balancing keeps at most one record per image (a matched text picked by its draw, kept with its "
            "probability), with every text of the image in a `texts` column (default: false)",
        )

    @classmethod
    def check_arguments(cls, args) -> None:
        refuse_per_image_conflicts(args)

    @classmethod
    def used(cls, args) -> bool:
        return bool(getattr(args, "per_image", False))

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "PerImageCuration":
        if URL not in [name for name, _ in inputs.layout.passthrough]:
            raise UsageError("--per_image groups records by their url: the input has no url column (--url_field)")
        return cls(inputs.seed, inputs.layout.batch_size)

    def subset_fields(self) -> list[pa.Field]:
        return [pa.field(TEXTS, pa.list_(pa.string()))]

    def apply(self, batches, run: RunContext) -> StageOutput:
        curated = batches | self.name >> CurateImages(
            self.seed, max(BUCKETS, run.num_shards), URL, self.batch_size, run.spill_dir
        )
        return StageOutput(curated.batches, {"images": curated.figures})

    def stats(self, figures: dict, final: dict) -> dict:
        images = figures["images"]
        return {
            "kept": {
                "images_read": images.get("images", 0),
                "images_matched": images.get("images_matched", 0),
                "images_kept": images.get("images_kept", 0),
                "captions_per_image": captions_per_image(images),
            }
        }

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return per_image_rows(stats)
