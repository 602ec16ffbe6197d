"""Command-line options around the stages: --recipe, where the CLIP embeddings are, and each stage's flags.

beam_pipeline.options declares them with the rest (`add_stage_arguments`); each stage
declares its own (beam_pipeline/stages/). `expand_recipe` turns `--recipe NAME` into the
flags it stands for before anything is parsed. The rules behind the flags: docs/datacomp.md
and docs/selection.md.
"""

from __future__ import annotations

from typing import Sequence

from beam_pipeline.option_checks import BadValue
from beam_pipeline.stages import STAGES

EMBEDDINGS = ("npz", "columns")

# DataComp's published baselines (mlfoundations/datacomp, baselines.py), as flags. Every
# recipe reads a DataComp pool and leaves MetaCLIP balancing off; a flag given on the
# command line wins over the recipe's (--balance metaclip --metadata M balances the result).
_DATACOMP_POOL = {"input_preset": "datacomp", "balance": "none"}
RECIPES: dict[str, dict[str, str]] = {
    "datacomp-basic": {**_DATACOMP_POOL, "filter": "basic"},
    "datacomp-text": {**_DATACOMP_POOL, "filter": "text"},
    "datacomp-clip-l14-30": {
        **_DATACOMP_POOL,
        "filter": "clip_score",
        "clip_score_field": "clip_l14_similarity_score",
        "clip_score_fraction": "0.3",
    },
    "datacomp-clip-b32-t25": {
        **_DATACOMP_POOL,
        "filter": "clip_score",
        "clip_score_field": "clip_b32_similarity_score",
        "clip_score_threshold": "0.25",
    },
    "datacomp-image": {**_DATACOMP_POOL, "filter": "image", "embeddings": "npz"},
    "datacomp-1b": {
        **_DATACOMP_POOL,
        "filter": "clip_score,image",
        "clip_score_field": "clip_l14_similarity_score",
        "clip_score_fraction": "0.3",
        "embeddings": "npz",
    },
}


def recipe_name(value: str) -> str:
    if value not in RECIPES:
        raise BadValue(f"--recipe must be one of {', '.join(RECIPES)}; got {value!r}")
    return value


def add_stage_arguments(parser, add) -> None:
    """The recipe and embeddings flags, then every stage's; `add(group, flag, check, **kwargs)` as in options.py."""
    stages = parser.add_argument_group("stages (DataComp filters before MetaCLIP balancing: docs/datacomp.md)")
    add(
        stages,
        "--recipe",
        recipe_name,
        default=None,
        metavar="NAME",
        help=f"a published recipe as flags: {', '.join(RECIPES)}; flags given explicitly win (default: none)",
    )
    add(
        stages,
        "--embeddings",
        default=None,
        choices=EMBEDDINGS,
        help="where CLIP embeddings are: npz (a <shard>.npz beside each parquet shard, as DataComp ships them) "
        "or columns (fixed-size-list columns of the parquet) (default: npz when a stage needs them)",
    )
    add(stages, "--image_embedding_key", default="l14_img", help="npz member or column of the image embeddings")
    add(stages, "--text_embedding_key", default="l14_txt", help="npz member or column of the caption embeddings")
    for stage in STAGES:
        stage.add_arguments(stages, add)


def expand_recipe(argv: Sequence[str]) -> list[str]:
    """argv with `--recipe NAME`'s flags put in front of it, less those the command line gives itself.

    Flags given explicitly win: the recipe only fills in what is missing. An unknown
    name is left for the parser, which refuses it with the list of recipes.
    """
    argv = list(argv)
    name = None
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--recipe="):
            name = arg.split("=", 1)[1]
    if name not in RECIPES:
        return argv
    given = {arg.split("=", 1)[0][2:] for arg in argv if arg.startswith("--")}
    implied = []
    for flag, value in RECIPES[name].items():
        if flag not in given:
            implied += [f"--{flag}", value]
    return implied + argv
