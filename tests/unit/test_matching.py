"""Spacing and matching against the reference cases, and on any text against a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import matching_cases
from transforms.core.matching import MATCHERS, EntryMatcher, ascending_per_caption, match_entries_brute_force
from transforms.core.spacing import SPACED_WHITESPACE, WRAPPED_PUNCTUATION, can_ever_match, space_text


def test_spacing_follows_the_spec_steps():
    assert space_text("a golden retriever!") == " a golden retriever !  "
    assert space_text("  dog  ") == " dog "
    assert space_text("hot\tdog\nx\ry") == " hot dog x y "
    assert space_text(",.;:?!`") == "  ,  .  ;  :  ?  !  `  "
    # Nothing else changes: case, other punctuation, repeated spaces, unicode.
    assert space_text("Dog's (e-mail) / A&B +  x") == " Dog's (e-mail) / A&B +  x "
    assert space_text("\u00a0café\u3000") == " café "  # str.strip() strips Unicode spaces


@pytest.mark.parametrize("name", MATCHERS)
def test_every_reference_case_metaclip1(name):
    metadata, cases = matching_cases()
    matcher = EntryMatcher(metadata, name)
    for case in cases:
        assert matcher.match(case["text"]) == case["metaclip1"], case["text"]
        assert match_entries_brute_force(case["text"], metadata) == case["metaclip1"], case["text"]


@pytest.mark.parametrize("name", MATCHERS)
def test_batch_matching_equals_single_matching(name):
    metadata, cases = matching_cases()
    matcher = EntryMatcher(metadata, name)
    texts = [case["text"] for case in cases]
    offsets, flat = matcher.match_batch(texts)
    assert offsets[0] == 0 and len(offsets) == len(texts) + 1
    for i, case in enumerate(cases):
        assert flat[offsets[i] : offsets[i + 1]].tolist() == case["metaclip1"]
    assert flat.dtype == np.int32


@pytest.mark.parametrize("name", MATCHERS)
def test_can_ever_match_agrees_with_matching(name):
    assert not can_ever_match("3.5") and not can_ever_match("U.S.") and not can_ever_match("a\tb")
    assert can_ever_match("a .") and EntryMatcher(["a ."], name).match("a.") == [0]
    assert can_ever_match("dog") and can_ever_match("C++")


# Small alphabets make overlaps, nesting, repeated spaces and punctuation common.
_CHARS = st.sampled_from(list("ab ,.;:?!`\t\n\r-'") + ["é", "東", "京", "\u00a0", "Ω", "🙂"])
_TEXTS = st.text(_CHARS, max_size=40)
_ENTRIES = st.lists(st.text(_CHARS, min_size=0, max_size=6), max_size=25, unique=True)


@pytest.mark.parametrize("name", MATCHERS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=_ENTRIES, texts=st.lists(_TEXTS, min_size=1, max_size=8))
def test_automaton_equals_brute_force_oracle(entries, texts, name):
    matcher = EntryMatcher(entries, name)
    offsets, flat = matcher.match_batch(texts)
    for i, text in enumerate(texts):
        expected = match_entries_brute_force(text, entries)
        assert matcher.match(text) == expected
        assert flat[offsets[i] : offsets[i + 1]].tolist() == expected


@pytest.mark.parametrize("name", MATCHERS)
@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.sampled_from(["new", "york", "city", "hot", "dog", "a", "the"]), min_size=1, max_size=12),
    seps=st.lists(st.sampled_from([" ", "  ", ", ", ". ", "\t", "! "]), min_size=12, max_size=12),
)
def test_overlapping_multiword_entries(words, seps, name):
    entries = ["new york", "york city", "new york city", "hot dog", "a", "hot", "dog", "the the", "the"]
    text = "".join(w + s for w, s in zip(words, seps, strict=False))  # seps: one per word, the rest unused
    assert EntryMatcher(entries, name).match(text) == match_entries_brute_force(text, entries)


# Pieces that stress the spacing and the automaton: separators, white space str.strip()
# removes (NEL, U+2028, U+3000, U+001C), NUL, lone surrogates (JSON can carry "\ud800"),
# astral characters, and entry-like words.
_PIECES = [
    "dog",
    "hot dog",
    "a",
    " ",
    "  ",
    ",",
    ".",
    "!",
    "`",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\ud800",
    "\udfff",
    "\U0001f642",
    "é",
    "東京",
    "\u00a0",
    "\u3000",
    "\u2028",
    "\x85",
    "\x1c",
    "C++",
    "'",
]


_ANY_CHAR = st.characters(codec=None, exclude_categories=())


_PIECE_TEXT = st.lists(st.sampled_from(_PIECES) | st.text(_ANY_CHAR, max_size=3), max_size=12).map("".join)


_ENTRIES = st.lists(_PIECE_TEXT.filter(lambda e: len(e) <= 12), max_size=20, unique=True)


_HUGE = st.builds(lambda piece, n: piece * n, st.sampled_from(_PIECES + ["dog ", "a, "]), st.integers(500, 20_000))


_TEXTS = st.lists(_PIECE_TEXT | st.text(_ANY_CHAR, max_size=40) | _HUGE, min_size=1, max_size=6)


@pytest.mark.parametrize("name", MATCHERS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=_ENTRIES, texts=_TEXTS)
def test_matcher_on_any_text_equals_the_brute_force_oracle(entries, texts, name):
    matcher = EntryMatcher(entries, name)
    offsets, flat = matcher.match_batch(texts)
    assert len(offsets) == len(texts) + 1
    for i, text in enumerate(texts):
        expected = match_entries_brute_force(text, entries)
        assert matcher.match(text) == expected
        assert flat[offsets[i] : offsets[i + 1]].tolist() == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=_ENTRIES, texts=_TEXTS, profile=_TEXTS)
def test_a_profiled_layout_matches_as_the_brute_force_oracle(entries, texts, profile):
    """daachorse laid out for a corpus (the captions it profiled, here unrelated ones or the very texts)."""
    for corpus in (profile, texts):
        matcher = EntryMatcher(entries, "daachorse", profile=corpus)
        offsets, flat = matcher.match_batch(texts)
        for i, text in enumerate(texts):
            assert flat[offsets[i] : offsets[i + 1]].tolist() == match_entries_brute_force(text, entries)


def test_the_profile_changes_the_layout_only():
    metadata, cases = matching_cases()
    texts = [case["text"] for case in cases]
    plain, profiled = EntryMatcher(metadata, "daachorse"), EntryMatcher(metadata, "daachorse", profile=texts)
    assert plain._automaton.serialize() != profiled._automaton.serialize()
    assert [profiled.match(text) for text in texts] == [case["metaclip1"] for case in cases]
    # pyahocorasick has no layout to profile, and takes the same arguments.
    assert EntryMatcher(metadata, "pyahocorasick", profile=texts).match(texts[0]) == cases[0]["metaclip1"]


@given(
    captions=st.lists(st.sets(st.integers(0, 499_999), max_size=12).map(list), max_size=30),
)
def test_ids_are_sorted_within_each_caption_and_nowhere_else(captions):
    """The batch sort daachorse's ids go through, against sorted() per caption."""
    offsets = np.cumsum([0] + [len(ids) for ids in captions], dtype=np.int64)
    flat = np.asarray([i for ids in captions for i in ids], dtype=np.int32)
    result = ascending_per_caption(offsets, flat, 500_000)
    assert result.dtype == np.int32
    assert [result[offsets[i] : offsets[i + 1]].tolist() for i in range(len(captions))] == [
        sorted(ids) for ids in captions
    ]


def test_entry_ids_survive_the_sorted_build():
    """The automaton is built from the entries in sorted order; ids stay the list's own."""
    entries = ["zebra", "apple", "zebra crossing", "mango", "a"]
    for name in MATCHERS:
        assert EntryMatcher(entries, name).match("a zebra crossing, apple and mango") == [0, 1, 2, 3, 4]
        assert EntryMatcher(entries, name).match("zebra") == [0]


def _spacing_by_the_spec(text: str) -> str:
    """docs/curation-spec.md section 2, one character at a time: the oracle of space_text."""
    out = []
    for char in " " + text.strip() + " ":
        if char in WRAPPED_PUNCTUATION:
            out.append(f" {char} ")
        elif char in SPACED_WHITESPACE:
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(text=_PIECE_TEXT | st.text(_ANY_CHAR, max_size=60))
def test_spacing_equals_the_spec_character_by_character(text):
    assert space_text(text) == _spacing_by_the_spec(text)


def test_an_unknown_matcher_is_refused():
    with pytest.raises(ValueError, match="daachorse, pyahocorasick"):
        EntryMatcher(["dog"], "hyperscan")
