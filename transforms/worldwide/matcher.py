"""MetaCLIP 2 worldwide mode: matching (`WorldwideMatcher`).

Pure Python and numpy, no Beam import (docs/worldwide.md). A caption is matched
only against its own language's list, with one Aho-Corasick automaton per
language, built lazily the first time a caption of that language shows up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import ahocorasick
import numpy as np

from transforms.core.spacing import space_text
from transforms.worldwide.metadata import LanguageMetadata
from transforms.worldwide.padding import pad_entry_worldwide


def build_worldwide_automaton(entries: Sequence[str], first_id: int) -> ahocorasick.Automaton:
    """Automaton over worldwide-padded entries, valued by global id (`first_id` + index).

    Integer values (STORE_INTS), as in MetaCLIP 1: less memory, faster iteration.
    Worldwide padding is injective (a space is only ever added, and a space is
    never a no-pad character), so no two entries share a key.
    """
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for local_id, entry in enumerate(entries):
        automaton.add_word(pad_entry_worldwide(entry), first_id + local_id)
    automaton.make_automaton()
    return automaton


class WorldwideMatcher:
    """Matches captions against their own language's list; one automaton per language.

    Automata are built on first use and kept, so a worker process holds only
    the languages its captions are in. Safe to share between threads (the
    holder `apache_beam.utils.shared.Shared` keeps per process): building is
    done under a lock, matching only reads.
    """

    def __init__(self, metadata: LanguageMetadata):
        self.metadata = metadata
        self._automata: dict[str, ahocorasick.Automaton | None] = {}
        self._lock = threading.Lock()

    @property
    def built_languages(self) -> tuple[str, ...]:
        """Languages whose automaton this matcher has built, sorted."""
        return tuple(sorted(lang for lang, automaton in self._automata.items() if automaton is not None))

    def automaton(self, language: str) -> ahocorasick.Automaton | None:
        """`language`'s automaton, built now if needed; None for a language without a list."""
        try:
            return self._automata[language]
        except KeyError:
            pass
        with self._lock:
            if language not in self._automata:
                if language in self.metadata.entries:
                    entries = self.metadata.entries[language]
                    self._automata[language] = build_worldwide_automaton(entries, self.metadata.offset(language))
                else:
                    self._automata[language] = None
            return self._automata[language]

    def match(self, text: str, language: str) -> list[int]:
        """Ascending global ids of `language`'s entries found in the spaced text."""
        automaton = self.automaton(language)
        if automaton is None:
            return []
        return sorted({global_id for _, global_id in automaton.iter(space_text(text))})

    def match_batch(self, texts: Sequence[str], languages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Match many captions, each against its (already resolved) language's list.

        Returns (offsets int64 [n + 1], flat global ids int32) in Arrow list
        layout, like `EntryMatcher.match_batch`: caption i's ids are
        `flat[offsets[i]:offsets[i + 1]]`, ascending. Rows are grouped by
        language so each automaton is walked over all of its rows in one tight
        loop (one automaton's tables stay in cache); a batch of one language,
        the common case with a language field, skips the regrouping.
        """
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        rows_by_language: dict[str, list[int]] = {}
        for row, language in enumerate(languages):
            rows_by_language.setdefault(language, []).append(row)
        if len(rows_by_language) == 1:
            (language,) = rows_by_language
            return _match_rows_in_order(self.automaton(language), texts)
        found_per_row: list[list[int]] = [[]] * len(texts)
        for language, rows in rows_by_language.items():
            automaton = self.automaton(language)
            if automaton is None:
                continue
            iterate = automaton.iter
            for row in rows:
                found = {global_id for _, global_id in iterate(space_text(texts[row]))}
                if found:
                    found_per_row[row] = sorted(found)
        lengths = np.fromiter(map(len, found_per_row), dtype=np.int64, count=len(texts))
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((gid for ids in found_per_row for gid in ids), dtype=np.int32, count=int(offsets[-1]))
        return offsets, flat


def _match_rows_in_order(
    automaton: ahocorasick.Automaton | None, texts: Iterable[str]
) -> tuple[np.ndarray, np.ndarray]:
    """All rows against one automaton: the MetaCLIP 1 loop of `EntryMatcher.match_batch`."""
    offsets = [0]
    flat: list[int] = []
    if automaton is None:
        offsets.extend(0 for _ in texts)
    else:
        iterate = automaton.iter
        extend = flat.extend
        append = offsets.append
        for text in texts:
            found = {global_id for _, global_id in iterate(space_text(text))}
            extend(sorted(found) if len(found) > 1 else found)
            append(len(flat))
    return np.asarray(offsets, dtype=np.int64), np.asarray(flat, dtype=np.int32)
