"""DataComp's filters over one batch: which filter, if any, each record fails first.

No Beam import: transforms.beam.filters runs `first_failed` on every batch, and the
tests call it directly. The rules themselves are in caption_rules (basic, image caption
part), text_entities (text), clip_score and clusters (image); language ID in language.
docs/datacomp.md, "The rules", has them exactly, and the order.

Each filter only looks at the records still alive after the ones before it, so the
expensive parts (language ID, the centroid argmax) run on fewer rows: DataComp-1B's
image filter sees only the 30% that pass the CLIP-score threshold. The decision is
the same as computing every flag for every row and AND-ing them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from transforms.core.columns import TEXT
from transforms.filters.caption_rules import basic_flags, image_caption_flags
from transforms.filters.clip_score import keep_flags

FILTERS = ("basic", "text", "clip_score", "image")
PASSED = -1  # first_failed's value for a record every filter keeps


@dataclasses.dataclass(frozen=True)
class FilterSpec:
    """The filters a run applies and what each needs; small and picklable (workers get it).

    Large assets (the LID model, WordNet, the centroids) are named here by path and
    loaded once per worker process by the Beam side.
    """

    filters: tuple[str, ...]
    lid_model: Optional[str] = None  # None: the bundled lid.176.ftz (approximate)
    lid_identity: tuple = ()  # (file name, sha256, approximate): what stats.json names
    width_field: str = "original_width"
    height_field: str = "original_height"
    wnid_offsets: frozenset = frozenset()
    clip_score_field: str = "clip_l14_similarity_score"
    clip_score_fraction: Optional[float] = None
    clip_score_threshold: Optional[float] = None
    clip_score_dtype: str = "float32"  # the score column's float type: the radix select's key width
    image_column: Optional[str] = None  # the batch column of image embeddings (image filter)
    centroids: Optional[str] = None
    target_clusters: Optional[str] = None
    feature_rows: int = 0  # >0: target_clusters holds that many ImageNet feature rows to assign

    def __post_init__(self):
        unknown = [name for name in self.filters if name not in FILTERS]
        if unknown:
            raise ValueError(f"unknown filters {unknown}; expected some of {', '.join(FILTERS)}")
        object.__setattr__(self, "filters", tuple(name for name in FILTERS if name in self.filters))

    @property
    def needs_language(self) -> bool:
        return bool({"basic", "text", "image"} & set(self.filters))

    @property
    def needs_threshold_pass(self) -> bool:
        """Whether the CLIP-score threshold comes from the pool (a fraction) rather than the command line."""
        return "clip_score" in self.filters and self.clip_score_fraction is not None


@dataclasses.dataclass
class FilterTools:
    """What the filters use, loaded: `languages(texts)`, `contains_entity(text)`,
    `nearest(embeddings)` (centroid ids), the target cluster set, the score threshold."""

    languages: Optional[Callable[[Sequence[str]], list]] = None
    contains_entity: Optional[Callable[[str], bool]] = None
    nearest: Optional[Callable[[np.ndarray], np.ndarray]] = None
    targets: Optional[np.ndarray] = None  # sorted cluster ids
    threshold: Optional[float] = None


def _int_column(batch: pa.RecordBatch, name: str) -> list:
    return batch.column(name).to_pylist()


def first_failed(
    batch: pa.RecordBatch,
    spec: FilterSpec,
    tools: FilterTools,
    embeddings: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> np.ndarray:
    """Per row, the index in FILTERS of the first filter it fails, or PASSED (int8).

    `embeddings(rows)`: the image embeddings of those rows of the batch (image filter).
    """
    n = batch.num_rows
    result = np.full(n, PASSED, dtype=np.int8)
    alive = np.arange(n)
    texts = batch.column(TEXT).to_pylist()
    languages: dict[int, str] = {}

    def language_of(rows: np.ndarray) -> list:
        missing = [int(i) for i in rows if int(i) not in languages]
        if missing:
            for i, language in zip(missing, tools.languages([texts[i] for i in missing]), strict=True):
                languages[i] = language
        return [languages[int(i)] for i in rows]

    for name in spec.filters:
        if len(alive) == 0:
            break
        if name == "basic":
            widths = _int_column(batch, spec.width_field)
            heights = _int_column(batch, spec.height_field)
            keep = basic_flags(
                [texts[i] for i in alive],
                language_of(alive),
                [widths[i] for i in alive],
                [heights[i] for i in alive],
            )
        elif name == "text":
            keep = np.array([language == "en" for language in language_of(alive)], dtype=bool)
            candidates = alive[keep]
            keep[keep] = [tools.contains_entity(texts[i]) for i in candidates]
        elif name == "clip_score":
            scores = batch.column(spec.clip_score_field).to_numpy(zero_copy_only=False)
            keep = keep_flags(np.asarray(scores, dtype=np.float64)[alive], tools.threshold)
        else:  # image: DataComp's caption part, then the centroid argmax of the survivors
            keep = np.asarray(image_caption_flags([texts[i] for i in alive], language_of(alive)), dtype=bool)
            candidates = alive[keep]
            if len(candidates):
                clusters = tools.nearest(embeddings(candidates))
                keep[keep] = np.isin(clusters, tools.targets)
        keep = np.asarray(keep, dtype=bool)
        result[alive[~keep]] = FILTERS.index(name)
        alive = alive[keep]
    return result
