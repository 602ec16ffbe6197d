"""The WordNet rule of DataComp's `text` filter (docs/datacomp.md, "The rules").

A caption passes when some token of `text.split()` (punctuation stays attached)
has WordNet synsets and the first one's offset is an ImageNet-21k id. nltk's
`synsets(tok)` lower-cases, then tries noun, verb, adjective and adverb in that
order, each with morphy's forms; the first synset is the first offset listed in
the index for the first part of speech and form that have any. `EntityMatcher`
reads that offset from the reader's index directly, without building Synset
objects (tested equal to `reader.synsets(tok)[0].offset()` on real tokens), and
caches it per token. No Beam import; the reader comes from
`transforms.metadata.sources.open_wordnet` (WordNet 3.0).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

_WNID = re.compile(r"n([0-9]{8})")
# nltk's wordnet.POS_LIST, the order `synsets(tok)` (no pos) lists synsets in.
_POS_ORDER = ("n", "v", "a", "r")
MAX_CACHED_TOKENS = 1_000_000


def read_wnids(lines: Iterable[str], name: str = "--imagenet_wnids") -> frozenset[int]:
    """ImageNet ids, one `nXXXXXXXX` (8 digits) per line, as WordNet offsets `int(XXXXXXXX)`.

    Blank lines and white space around an id are allowed; anything else raises
    a one-line ValueError naming `name`, the line number and the text.
    """
    offsets = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        match = _WNID.fullmatch(text)
        if match is None:
            raise ValueError(f"{name} line {number}: {text[:80]!r} is not a WordNet id like n02084071")
        offsets.add(int(match.group(1)))
    return frozenset(offsets)


class EntityMatcher:
    """`contains_entity(text)`: DataComp's `does_contain_text_entity` for one caption.

    `reader` is an nltk WordNetCorpusReader; `offsets` the ImageNet-21k ids (read_wnids).
    """

    def __init__(self, reader, offsets: Iterable[int], max_cached_tokens: int = MAX_CACHED_TOKENS):
        self._reader = reader
        self._offsets = frozenset(offsets)
        self._max_cached = max_cached_tokens
        # token -> is its first synset's offset an id? Captions repeat tokens a lot.
        self._cache: dict[str, bool] = {}
        # The fast path uses two private members of nltk's reader (present from
        # nltk 3.2 to 3.10 at least); without them, the public synsets() is used.
        self._index = getattr(reader, "_lemma_pos_offset_map", None)
        self._morphy = getattr(reader, "_morphy", None)

    def first_offset(self, token: str) -> Optional[int]:
        """`reader.synsets(token)[0].offset()`, or None where there is no synset."""
        if self._index is None or self._morphy is None:
            synsets = self._reader.synsets(token)
            return synsets[0].offset() if synsets else None
        lemma = token.lower()
        index = self._index
        for pos in _POS_ORDER:
            for form in self._morphy(lemma, pos, True):
                # morphy returns forms that are in the index; `.get`, not `[]`, so
                # that a defaultdict index never grows.
                offsets = index.get(form, {}).get(pos)
                if offsets:
                    return offsets[0]
        return None

    def _is_entity(self, token: str) -> bool:
        known = self._cache.get(token)
        if known is None:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()  # bounded memory; simpler and cheaper than an LRU at this size
            known = self.first_offset(token) in self._offsets
            self._cache[token] = known
        return known

    def contains_entity(self, text: Optional[str]) -> bool:
        """Whether some token of `text.split()` has a first synset among the ids (None: False)."""
        if not text:
            return False
        return any(self._is_entity(token) for token in text.split())
