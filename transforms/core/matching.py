"""Entry matching: which metadata entries a caption contains (MetaCLIP 1).

Pure Python, no Beam import. `EntryMatcher` is the fast path the pipeline runs;
`match_entries_brute_force` is the spec written out literally, kept as the
oracle the tests compare against and the baseline the benchmarks measure.

Two Aho-Corasick libraries give the same match sets (tests/unit/test_matching.py):
- daachorse (the default): a double-array automaton over the UTF-8 bytes of the
  padded entries. Measured here on LAION captions and the 500k list it matches
  ~1.4x faster than pyahocorasick, takes ~60% of its memory, and its automaton
  saves to bytes and loads again in well under 0.1 s (pyahocorasick's pickle:
  ~1.2 s and ~0.3 s), which is what a worker's first and later runs pay.
- pyahocorasick: the design card's library, kept as the reference and fallback
  (`--matcher pyahocorasick`).

A daachorse automaton can be laid out for the text it will scan: given a corpus
of such text when it is built (profile-guided optimisation, daachorse's
`corpus`), it places the states that text visits most next to each other in
memory. The match sets do not change, only where the states sit. A worker that
builds its own automaton profiles it on its first batch; a local first run's
child profiles a local Parquet pool's first captions (beam_pipeline.launcher.prebuild).
Measured on the 500k
list, 2,000 LAION captions profiled and 5,000 others matched
(benchmarks/bench_profile.py, 2026-12-01): the whole match loop 1.11-1.12x
faster, the build 0.2-0.45 s longer.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import ahocorasick
import daachorse
import numpy as np

from transforms.core.spacing import pad_entry, space_text

DAACHORSE = "daachorse"
PYAHOCORASICK = "pyahocorasick"
MATCHERS = (DAACHORSE, PYAHOCORASICK)
# Captions a daachorse build profiles (bench_profile: 500 gave 1.07x, 2,000 1.11x, 5,000 1.08-1.13x).
PROFILE_CAPTIONS = 2000


def build_automaton(entries: Sequence[str]) -> ahocorasick.Automaton:
    """A pyahocorasick automaton over the padded entries, valued by entry id.

    Integer values, not tuples: measured here they take ~45 MB less for 500k
    entries and match ~50% faster (docs/environment-facts.md).
    """
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for entry_id, entry in enumerate(entries):
        automaton.add_word(pad_entry(entry), entry_id)
    automaton.make_automaton()
    return automaton


def utf8_bytes(text: str) -> bytes:
    # surrogatepass: a lone surrogate (JSON can carry "\ud800") becomes its 3-byte
    # form instead of an error. Every code point then has one self-synchronising
    # byte sequence, and a padded entry starts and ends with a space byte, which
    # is never inside a character: a byte match is exactly a character match.
    return text.encode("utf-8", "surrogatepass")


def build_byte_automaton(
    entries: Sequence[str], profile: Sequence[str] = ()
) -> tuple[daachorse.DoubleArrayAhoCorasick, np.ndarray]:
    """A daachorse automaton over the UTF-8 bytes of the padded entries, and each pattern's entry id.

    The patterns go in sorted: daachorse then fills its trie prefix by prefix
    and builds the 500k list in ~1.5 s instead of ~2.2 s in the list's own
    order, and matches as fast (BENCHMARKS.md section 7). A pattern id is a
    position in that order; the array maps it to its entry id.
    `profile`: captions like those it will match (the first PROFILE_CAPTIONS are
    used), spaced as they will be, to lay its states out for them.
    """
    # Padded in the list's order, then sorted: padding in sorted order reaches the
    # strings out of memory order and took ~0.35 s instead of ~0.1 s.
    in_list_order = [utf8_bytes(pad_entry(entry)) for entry in entries]
    order = sorted(range(len(in_list_order)), key=in_list_order.__getitem__)
    patterns = [in_list_order[entry_id] for entry_id in order]
    captions = itertools.islice(profile, PROFILE_CAPTIONS)
    corpus = [utf8_bytes(space_text(text)) for text in captions if isinstance(text, str)]
    automaton = daachorse.DoubleArrayAhoCorasick(patterns, corpus=corpus or None)
    return automaton, np.asarray(order, dtype=np.int32)


def ascending_per_caption(offsets: np.ndarray, ids: np.ndarray, num_entries: int) -> np.ndarray:
    """`ids` (distinct within each caption's slice of `offsets`), sorted within each slice.

    One stable numpy sort of (caption, id) keys for a whole batch: the slices
    are already in caption order, so the sort only has short runs to merge;
    measured at ~0.08 us a caption, against ~0.3 us for Python's sorted() per
    caption. The keys fit in int64 for any batch under 2**32 captions.
    """
    caption = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keys = caption * num_entries + ids
    keys.sort(kind="stable")
    return (keys - caption * num_entries).astype(np.int32)


class EntryMatcher:
    """Matches captions against one metadata list, with daachorse or pyahocorasick.

    Also the holder that `apache_beam.utils.shared.Shared` keeps per worker
    process (neither automaton can be weak-referenced itself), and what the
    machine's automaton cache pickles (a daachorse automaton pickles as its
    serialized double array).
    """

    def __init__(self, entries: Sequence[str], matcher: str = DAACHORSE, profile: Sequence[str] = ()):
        """`profile`: captions like those it will match, for a daachorse automaton's layout
        (build_byte_automaton); pyahocorasick has no such option and ignores them."""
        if matcher not in MATCHERS:
            raise ValueError(f"matcher must be one of {', '.join(MATCHERS)}, not {matcher!r}")
        self.num_entries = len(entries)
        self.matcher = matcher
        self._automaton = None
        self._entry_ids = None  # daachorse: pattern id -> entry id
        if entries:
            if matcher == DAACHORSE:
                self._automaton, self._entry_ids = build_byte_automaton(entries, profile)
            else:
                self._automaton = build_automaton(entries)

    def match(self, text: str) -> list[int]:
        """Ascending ids of the entries whose padded form occurs in the spaced text."""
        _, flat = self.match_batch([text])
        return flat.tolist()

    def match_batch(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Match many captions; return (offsets, flat ids) in Arrow list layout.

        Caption i's ids are ``flat[offsets[i]:offsets[i + 1]]``, ascending.
        This loop is the pipeline's hot path: it stays a plain loop around
        the automaton, with the per-caption work kept to a set (and, for
        pyahocorasick, a sort; daachorse's ids are mapped and sorted for the
        whole batch in numpy), and none for a caption without a match.
        """
        automaton = self._automaton
        offsets = [0]
        flat: list[int] = []
        extend = flat.extend
        append = offsets.append
        if automaton is None:
            for _ in texts:
                append(0)
        elif self.matcher == DAACHORSE:
            find = automaton.find_overlapping
            for text in texts:
                found = find(utf8_bytes(space_text(text)))
                if found:
                    extend({pattern_id for _, _, pattern_id in found})
                append(len(flat))
            # Pattern ids to entry ids, and each caption's ascending, for the whole batch at once.
            offsets_array = np.asarray(offsets, dtype=np.int64)
            entry_ids = self._entry_ids[np.asarray(flat, dtype=np.intp)]
            return offsets_array, ascending_per_caption(offsets_array, entry_ids, self.num_entries)
        else:
            iterate = automaton.iter
            for text in texts:
                ids = {entry_id for _, entry_id in iterate(space_text(text))}
                extend(sorted(ids) if len(ids) > 1 else ids)
                append(len(flat))
        return np.asarray(offsets, dtype=np.int64), np.asarray(flat, dtype=np.int32)


def match_entries_brute_force(text: str, entries: Sequence[str]) -> list[int]:
    """The spec, literally: every entry whose padded form is a substring.

    About 18 captions/s with 500k entries; for tests and benchmarks only.
    """
    spaced = space_text(text)
    return [entry_id for entry_id, entry in enumerate(entries) if pad_entry(entry) in spaced]
