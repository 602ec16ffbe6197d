"""The curation's stages, in the order a record meets them: one line each.

Each is a `Stage` (beam_pipeline/stages/base.py) in a module of its own: its flags,
checks, transform, outputs, stats.json figures and summary rows. `build_curation` runs
the ones a run's flags ask for, in this order. A new stage is a module and a line here
(docs/architecture.md, "Adding a stage").
"""

from __future__ import annotations

from typing import Sequence

from beam_pipeline.option_checks import BadValue
from beam_pipeline.stages.balance import MetaClipBalancing, NoBalancing
from beam_pipeline.stages.base import Stage, StageInputs
from beam_pipeline.stages.datacomp_filters import DataCompFiltering
from beam_pipeline.stages.dedup import Dedup
from beam_pipeline.stages.extra_texts import ExtraTexts
from beam_pipeline.stages.per_image import PerImageCuration
from beam_pipeline.stages.selection import CovarianceSelection
from beam_pipeline.stages.uid_lists import AllowUids, DenyUids
from beam_pipeline.stages.where import Where

STAGES: tuple[type[Stage], ...] = (
    ExtraTexts,  # every record's texts first, so a deduplicated key's texts are not "not in the pool"
    Dedup,  # right after reading: later stages see no duplicate (docs/dedup.md, section 4)
    AllowUids,
    DenyUids,
    Where,
    DataCompFiltering,
    MetaClipBalancing,
    NoBalancing,
    PerImageCuration,
    CovarianceSelection,
)


def check_stage_arguments(args) -> None:
    """Each stage's rules between its flags, then the run's: some stage must change the records."""
    for stage in STAGES:
        stage.check_arguments(args)
    used = [stage for stage in STAGES if stage.used(args)]
    if all(stage.keeps_every_record for stage in used):
        others = [
            stage.main_flag
            for stage in STAGES
            if stage.main_flag and not stage.keeps_every_record and not stage.needs_balancing
        ]
        raise BadValue(
            f"--balance none without {', '.join(others[:-1])} or {others[-1]} would keep every record: "
            "give one, or drop --balance none"
        )


def wanted_embeddings(args) -> tuple[str, ...]:
    """The CLIP embeddings the run's stages read, each once, in the order the stages name them."""
    names: list[str] = []
    for stage in STAGES:
        if stage.used(args):
            names += [name for name in stage.wanted_embeddings(args) if name not in names]
    return tuple(names)


def configure_stages(args, inputs: StageInputs) -> tuple[Stage, ...]:
    """The run's stages, each checked against the input (UsageError, one line)."""
    return tuple(stage.configure(args, inputs) for stage in STAGES if stage.used(args))


def worker_path_flags() -> Sequence[str]:
    """The stage flags naming files the workers read (Dataflow needs them on a shared filesystem)."""
    return [flag for stage in STAGES for flag in stage.worker_path_flags]
