"""Command-line options of the stages around MetaCLIP balancing: DataComp filters, --balance, recipes.

beam_pipeline.options declares them with the rest (`add_stage_arguments`) and parses
them into `StageArgs`; `expand_recipe` turns `--recipe NAME` into the flags it stands for
before anything is parsed. The rules behind the flags: docs/datacomp.md and
../shared/docs/selection-spec.md.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from beam_pipeline.option_checks import BadValue, integer, number

# In the order a record meets them: a filtered record is charged to the first it fails.
FILTERS = ("basic", "text", "clip_score", "image")
BALANCES = ("metaclip", "none")
EMBEDDINGS = ("npz", "columns")
SELECTS = ("covariance",)
# Exact greedy costs O(k n d) per class: a class above this many records is split by key hash
# into parts of about this size (docs/selection.md has the cost and the approximation).
DEFAULT_MAX_CLASS_SIZE = 20000

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


def filter_list(value: str) -> tuple[str, ...]:
    """--filter: comma-separated names, returned in the stages' order (FILTERS)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FILTERS]
    if unknown or not names:
        raise BadValue(f"--filter takes a comma-separated list of {', '.join(FILTERS)}; got {value!r}")
    return tuple(name for name in FILTERS if name in names)


def recipe_name(value: str) -> str:
    if value not in RECIPES:
        raise BadValue(f"--recipe must be one of {', '.join(RECIPES)}; got {value!r}")
    return value


def add_stage_arguments(parser, add) -> None:
    """The filter, balance and recipe flags; `add(group, flag, check, **kwargs)` as in options.py."""
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
        "--filter",
        filter_list,
        default=None,
        metavar="LIST",
        help=f"DataComp filters, comma-separated, applied in the order {', '.join(FILTERS)} (default: none)",
    )
    add(
        stages,
        "--balance",
        default="metaclip",
        choices=BALANCES,
        help="metaclip: MetaCLIP balancing (needs --metadata); none: keep every record the filters pass "
        "(default: metaclip)",
    )
    add(
        stages,
        "--lid_model",
        default=None,
        metavar="FILE",
        help="fastText language-ID model for the filters (DataComp uses lid.176.bin); default: the bundled "
        "lid.176.ftz, an approximation that stats.json names",
    )
    add(stages, "--width_field", default="original_width", help="column of the image width (default: original_width)")
    add(
        stages,
        "--height_field",
        default="original_height",
        help="column of the image height (default: original_height)",
    )
    add(
        stages,
        "--imagenet_wnids",
        default=None,
        metavar="FILE",
        help="text filter: ImageNet-21k synset ids, one nXXXXXXXX a line (DataComp's imagenet21k_wnids.txt)",
    )
    add(
        stages,
        "--clip_score_field",
        default="clip_l14_similarity_score",
        help="clip_score filter: the score column (default: clip_l14_similarity_score)",
    )
    add(
        stages,
        "--clip_score_fraction",
        number("clip_score_fraction", 0, 1),
        default=None,
        metavar="F",
        help="clip_score filter: keep the top fraction F of the pool by score, ties at the threshold kept",
    )
    add(
        stages,
        "--clip_score_threshold",
        number("clip_score_threshold"),
        default=None,
        metavar="T",
        help="clip_score filter: keep records with score >= T",
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
    add(
        stages,
        "--centroids",
        default=None,
        metavar="FILE.npy",
        help="image filter: the pool's cluster centroids, K x d floats (DataComp's L/14 centroids as .npy)",
    )
    add(
        stages,
        "--target_clusters",
        default=None,
        metavar="FILE",
        help="image filter: the clusters to keep, integers (.npy or text), or ImageNet-1k image features "
        "(an n x d float .npy) whose nearest clusters are computed in the pipeline",
    )
    add(
        stages,
        "--select",
        default=None,
        choices=SELECTS,
        help="a selection after balancing: covariance (a subset preserving the image-caption cross-covariance "
        "per pseudo-class, docs/selection.md) (default: none)",
    )
    add(
        stages,
        "--select_fraction",
        number("select_fraction", 0, 1),
        default=None,
        metavar="F",
        help="--select: keep round(F x N) of the N records that reach the stage",
    )
    add(
        stages,
        "--class_embeddings",
        default=None,
        metavar="FILE.npy",
        help="--select: K x d zero-shot class text embeddings (same CLIP model as the image embeddings); "
        "a record's class is its image embedding's argmax over them (default: one class)",
    )
    add(
        stages,
        "--max_class_size",
        integer("max_class_size", 1),
        default=str(DEFAULT_MAX_CLASS_SIZE),
        metavar="N",
        help=f"--select: larger classes are split by key hash into parts of about N, each selected alone "
        f"(default: {DEFAULT_MAX_CLASS_SIZE})",
    )


@dataclasses.dataclass(frozen=True)
class StageArgs:
    """The stage flags, parsed and checked."""

    recipe: Optional[str] = None
    filter: tuple[str, ...] = ()
    balance: str = "metaclip"
    lid_model: Optional[str] = None
    width_field: str = "original_width"
    height_field: str = "original_height"
    imagenet_wnids: Optional[str] = None
    clip_score_field: str = "clip_l14_similarity_score"
    clip_score_fraction: Optional[float] = None
    clip_score_threshold: Optional[float] = None
    embeddings: Optional[str] = None
    image_embedding_key: str = "l14_img"
    text_embedding_key: str = "l14_txt"
    centroids: Optional[str] = None
    target_clusters: Optional[str] = None
    select: Optional[str] = None
    select_fraction: Optional[float] = None
    class_embeddings: Optional[str] = None
    max_class_size: int = DEFAULT_MAX_CLASS_SIZE

    @classmethod
    def from_namespace(cls, args) -> "StageArgs":
        values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}
        values["filter"] = values["filter"] or ()
        return cls(**values)

    @property
    def needs_embeddings(self) -> bool:
        return "image" in self.filter or self.select is not None


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


def check_stage_combinations(args) -> None:
    """What no single stage flag can check. Raises BadValue with one line."""
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
    if args.lid_model and not ({"basic", "text", "image"} & set(filters)):
        raise BadValue("--lid_model is for --filter basic, text or image")
    if args.select is None:
        for name in ("select_fraction", "class_embeddings"):
            if getattr(args, name) is not None:
                raise BadValue(f"--{name} is for --select covariance")
    elif args.select_fraction is None:
        raise BadValue("--select covariance needs --select_fraction F (the share of the records to keep)")
    if args.balance == "none" and not filters and args.select is None:
        raise BadValue(
            "--balance none without --filter or --select would keep every record: give one, or drop --balance none"
        )
