"""MetaCLIP 2 worldwide mode: padding, per-language metadata, matching, t per language, language ids."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import matching_cases
from transforms.core.balancing import entry_probabilities
from transforms.core.matching import EntryMatcher
from transforms.core.spacing import WRAPPED_PUNCTUATION
from transforms.metadata.lists import MetadataError
from transforms.worldwide.language_id import LanguageIdentifier, language_identifier
from transforms.worldwide.language_map import LanguageMap
from transforms.worldwide.matcher import WorldwideMatcher
from transforms.worldwide.metadata import (
    LanguageMetadata,
    canonical_json,
    parse_language_metadata_files,
    parse_language_metadata_object,
)
from transforms.worldwide.padding import (
    can_ever_match_worldwide,
    match_entries_brute_force_worldwide,
    pad_entry_worldwide,
)
from transforms.worldwide.thresholds import (
    entry_thresholds,
    language_thresholds,
    tail_share,
    threshold_for_tail_share,
)

# ---------------------------------------------------------------------------
# Padding and the reference cases
# ---------------------------------------------------------------------------


def test_padding_follows_the_spec():
    # Latin, kana and Hangul ends are padded; CJK ideographs, Thai, Lao,
    # Burmese, Khmer, Tibetan and punctuation ends are not.
    assert pad_entry_worldwide("dog") == " dog "
    assert pad_entry_worldwide("タワー") == " タワー "
    assert pad_entry_worldwide("한국") == " 한국 "
    assert pad_entry_worldwide("東京") == "東京"
    assert pad_entry_worldwide("東京タワー") == "東京タワー "
    assert pad_entry_worldwide("タワー東") == " タワー東"
    for no_pad_word in ("แมว", "ແມວ", "ကြောင်", "ឆ្មា", "བོད"):  # Thai, Lao, Burmese, Khmer, Tibetan
        assert pad_entry_worldwide(no_pad_word) == no_pad_word
    assert pad_entry_worldwide("Avatar (film)") == " Avatar (film)"
    assert pad_entry_worldwide("《三体》") == "《三体》"
    assert pad_entry_worldwide("「東京」タワー") == "「東京」タワー "
    assert pad_entry_worldwide("—x～") == "—x～"
    assert pad_entry_worldwide("\u3000x") == " \u3000x "  # the ideographic space is not punctuation
    assert pad_entry_worldwide("") == "  "


def test_every_reference_case_metaclip2():
    metadata, cases = matching_cases()
    # The case list is English's; a one-entry language sorted before it
    # shifts every global id by one, so offsets are exercised too.
    languages = LanguageMetadata.from_lists({"en": metadata, "aa": ["dog"]})
    offset = languages.offset("en")
    assert offset == 1
    matcher = WorldwideMatcher(languages)
    texts = [case["text"] for case in cases]
    offsets, flat = matcher.match_batch(texts, ["en"] * len(texts))
    mixed_offsets, mixed_flat = matcher.match_batch(texts + ["dog"], ["en"] * len(texts) + ["aa"])
    for i, case in enumerate(cases):
        expected = [offset + entry_id for entry_id in case["metaclip2"]]
        assert match_entries_brute_force_worldwide(case["text"], metadata) == case["metaclip2"], case["text"]
        assert matcher.match(case["text"], "en") == expected, case["text"]
        assert flat[offsets[i] : offsets[i + 1]].tolist() == expected, case["text"]
        assert mixed_flat[mixed_offsets[i] : mixed_offsets[i + 1]].tolist() == expected, case["text"]
    assert mixed_flat[mixed_offsets[-2] : mixed_offsets[-1]].tolist() == [0]
    assert flat.dtype == np.int32 and offsets.dtype == np.int64


def test_cjk_entry_matches_inside_a_word_only_in_worldwide_mode():
    entries = ["東京", "タワー", "แมว"]
    assert EntryMatcher(entries).match("東京タワー") == []
    assert match_entries_brute_force_worldwide("東京タワー", entries) == [0]  # kana is padded: タワー needs spaces
    assert match_entries_brute_force_worldwide("東京 タワー", entries) == [0, 1]
    assert match_entries_brute_force_worldwide("แมวดำ", entries) == [2]


# Mixed scripts: Latin, CJK ideographs, kana, Hangul, Thai, ASCII punctuation
# (wrapped and not), full-width marks, spaces, tabs and newlines.
_CHARS = st.sampled_from(
    list("ab ,.;:?!`\t\n-()'") + ["東", "京", "タ", "ー", "한", "ก", "ข", "，", "。", "「", "」", "～", "\u3000"]
)
_TEXTS = st.text(_CHARS, max_size=30)
_ENTRIES = st.lists(st.text(_CHARS, min_size=1, max_size=5), max_size=12, unique=True)
_LANGUAGES = ["en", "ja", "th", "zh"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lists=st.fixed_dictionaries({lang: _ENTRIES for lang in _LANGUAGES}),
    rows=st.lists(st.tuples(_TEXTS, st.sampled_from(_LANGUAGES + ["other"])), min_size=1, max_size=10),
)
def test_worldwide_matcher_equals_brute_force_oracle(lists, rows):
    lists = {lang: entries for lang, entries in lists.items() if entries}
    assume(lists)
    metadata = LanguageMetadata.from_lists(lists)
    matcher = WorldwideMatcher(metadata)
    texts = [text for text, _ in rows]
    languages = [lang for _, lang in rows]
    offsets, flat = matcher.match_batch(texts, languages)
    for i, (text, language) in enumerate(rows):
        if language in lists:
            start = metadata.offset(language)
            expected = [start + j for j in match_entries_brute_force_worldwide(text, lists[language])]
        else:
            expected = []  # no list for this language (e.g. "other" absent): nothing matches
        assert flat[offsets[i] : offsets[i + 1]].tolist() == expected
        assert matcher.match(text, language) == expected
    # Automata are built only for languages that have rows and a list.
    assert set(matcher.built_languages) == {lang for lang in languages if lang in lists}


def _witness_caption(padded: str) -> str:
    """A caption whose spaced form holds `padded`: drop the spaces spacing will put back."""
    dropped = set()
    for i, c in enumerate(padded):
        if c in WRAPPED_PUNCTUATION:
            dropped.update({i - 1, i + 1})
    return "x" + "".join(c for i, c in enumerate(padded) if i not in dropped) + "x"


@settings(max_examples=200, deadline=None)
@given(entry=st.text(_CHARS, max_size=6), text=_TEXTS)
def test_can_ever_match_worldwide_is_exact(entry, text):
    if can_ever_match_worldwide(entry):
        assert match_entries_brute_force_worldwide(_witness_caption(pad_entry_worldwide(entry)), [entry]) == [0]
    else:
        assert match_entries_brute_force_worldwide(text, [entry]) == []


def test_can_ever_match_worldwide_examples():
    assert not can_ever_match_worldwide("3.5") and not can_ever_match_worldwide("U.S.")
    assert not can_ever_match_worldwide("a\tb") and not can_ever_match_worldwide(". .")
    assert can_ever_match_worldwide("a .") and can_ever_match_worldwide("東京") and can_ever_match_worldwide("C++")
    assert match_entries_brute_force_worldwide("a.", ["a ."]) == [0]
    assert not can_ever_match_worldwide(".a")  # "." is unpadded but needs a space after it


# ---------------------------------------------------------------------------
# Per-language metadata
# ---------------------------------------------------------------------------


def test_global_id_space():
    metadata = LanguageMetadata.from_lists({"zh": ["東京", "猫"], "en": ["dog", "cat", "a"], "th": ["แมว"]})
    assert metadata.languages == ("en", "th", "zh")
    assert metadata.offsets == (0, 3, 4) and metadata.num_entries == 6
    assert [metadata.language_of_global_id(i) for i in range(6)] == ["en", "en", "en", "th", "zh", "zh"]
    assert metadata.language_indexes(np.arange(6)).tolist() == [0, 0, 0, 1, 2, 2]
    assert metadata.local_ids(np.array([4, 5]), "zh").tolist() == [0, 1]
    assert metadata.global_entry(5) == ("zh", "猫")
    with pytest.raises(ValueError):
        metadata.local_ids(np.array([2]), "zh")
    with pytest.raises(IndexError):
        metadata.language_of_global_id(6)
    with pytest.raises(KeyError):
        metadata.offset("fr")
    assert pickle.loads(pickle.dumps(metadata)) == metadata


def test_object_and_directory_forms_give_the_same_set_and_digest():
    lists = {"en": ["dog", "cat"], "zh": ["東京"], "zh_yue": ["香港"]}
    from_object = parse_language_metadata_object(json.dumps(lists).encode(), "meta.json")
    from_gzip = parse_language_metadata_object(
        gzip.compress(json.dumps(lists, ensure_ascii=False).encode()), "meta.json.gz"
    )
    from_files = parse_language_metadata_files(
        {
            "gs://bucket/meta/en.json": json.dumps(lists["en"]).encode(),
            "gs://bucket/meta/zh.json.gz": gzip.compress(json.dumps(lists["zh"]).encode()),
            "gs://bucket/meta/zh_yue.json": json.dumps(lists["zh_yue"]).encode(),
        }
    )
    assert from_object == from_gzip == from_files
    assert from_object.sha256 == from_files.sha256 == hashlib.sha256(canonical_json(lists).encode("ascii")).hexdigest()
    assert dict(from_files.entries) == {lang: tuple(entries) for lang, entries in lists.items()}
    reordered = parse_language_metadata_object(
        json.dumps({"en": ["cat", "dog"], "zh": ["東京"], "zh_yue": ["香港"]}).encode(), "m"
    )
    assert reordered.sha256 != from_object.sha256  # ids moved: a different set


@pytest.mark.parametrize(
    "data, message",
    [
        (b'["dog", "cat"]', "the --mode metaclip1 format"),
        (b'"dog"', "must hold a JSON object"),
        (b'{"en": "dog"}', "must map to a JSON list"),
        (b'{"en": ["dog", "dog"]}', "duplicate entries"),
        (b'{"en": ["dog", 3]}', "non-string entries"),
        (b'{"en": []}', "empty list"),
        (b'{"": ["dog"]}', "is not a language code"),
        (b'{"en us": ["dog"]}', "is not a language code"),
        (b'{"../en": ["dog"]}', "is not a language code"),
        (b'{"en": ["dog"], "EN": ["cat"]}', "differ only in case"),
        (b'{"zh_yue": ["a"], "zh-yue": ["b"]}', "differ only in case"),
        (b'{"en": ["dog"], "en": ["cat"]}', "names 'en' twice"),
        (b"{}", "holds no language"),
        (b'{"en": ["dog"', "not valid JSON"),
        (b"\x1f\x8bnot gzip", "not a readable gzip"),
    ],
)
def test_metadata_object_errors(data, message):
    with pytest.raises(MetadataError, match=message) as error:
        parse_language_metadata_object(data, "meta.json")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "holds no"),
        ({"meta/README.md": b"[]"}, "is not named <language>.json"),
        ({"meta/.json": b'["a"]'}, "is not named <language>.json"),
        ({"meta/en.json": b'["a"]', "meta/en.json.gz": gzip.compress(b'["b"]')}, "two lists for language 'en'"),
        ({"meta/en.json": b'{"a": 1}'}, "must hold a JSON list"),
        ({"meta/en.json": b'["a", "a"]'}, "duplicate entries"),
        ({"meta/en.json": b"[]"}, "empty list"),
        ({"meta/e n.json": b'["a"]'}, "is not a language code"),
    ],
)
def test_metadata_directory_errors(files, message):
    with pytest.raises(MetadataError, match=message):
        parse_language_metadata_files(files)


# ---------------------------------------------------------------------------
# Language codes -> metadata languages
# ---------------------------------------------------------------------------

_AVAILABLE = {"en", "zh", "ja", "pt", "zh_yue", "other"}


def test_language_map_parsing():
    assert LanguageMap.parse("zh-cn=zh, zh-TW = zh,").mapping == {"zh-cn": "zh", "zh-tw": "zh"}
    assert LanguageMap.parse('{"zh-cn": "zh", "yue": "zh_yue"}').mapping == {"zh-cn": "zh", "yue": "zh_yue"}
    assert LanguageMap.parse(b'\xef\xbb\xbf{"iw": "he"}').mapping == {"iw": "he"}  # a file's bytes, BOM and all
    assert LanguageMap.parse(None).mapping == {} and LanguageMap.parse("  ").mapping == {}
    for bad, message in [
        ("zh-cn", "not CODE=LANGUAGE"),
        ("a=b=c", "not CODE=LANGUAGE"),
        ("=zh", "empty code"),
        ("a=", "must map to a language"),
        ('{"a": 1}', "must map to a language"),
        ('{"a": ', "not a valid JSON"),
        ("zh-cn=zh,ZH_CN=ja", "mapped twice"),
        ("[1]", "not CODE=LANGUAGE"),
    ]:
        with pytest.raises(ValueError, match=message):
            LanguageMap.parse(bad)


@pytest.mark.parametrize(
    "code, expected",
    [
        ("en", "en"),
        ("zh-cn", "zh"),  # mapped
        ("ZH_CN", "zh"),  # mapped, key matched case/separator-insensitively
        ("yue", "zh_yue"),  # mapped to a listed language
        ("iw", "other"),  # mapped to a language without a list: the default
        ("EN", "en"),  # normalised
        ("zh-yue", "zh_yue"),  # separator-insensitive
        ("zh-Hans", "zh"),  # primary subtag
        ("zh_Hant_TW", "zh"),
        ("pt-BR", "pt"),
        ("ko", "other"),  # not listed: the default
        ("", "other"),
        ("  ", "other"),
        (None, "other"),
    ],
)
def test_language_resolution(code, expected):
    language_map = LanguageMap.parse("zh-cn=zh,yue=zh_yue,iw=he")
    assert language_map.resolve(code, _AVAILABLE, "other") == expected
    assert language_map.resolver(_AVAILABLE, "other")(code) == expected


def test_mapping_wins_over_a_listed_code_and_default_need_not_be_listed():
    assert LanguageMap.parse("ja=zh").resolve("ja", _AVAILABLE, "other") == "zh"
    assert LanguageMap.parse(None).resolve("xx", {"en"}, "other") == "other"  # matches nothing downstream


# ---------------------------------------------------------------------------
# A t per language
# ---------------------------------------------------------------------------


def _metadata_for(counts_by_language: dict[str, list[int]]) -> tuple[LanguageMetadata, np.ndarray]:
    metadata = LanguageMetadata.from_lists(
        {lang: [f"{lang}{i}" for i in range(len(c))] for lang, c in counts_by_language.items()}
    )
    counts = np.concatenate([np.asarray(counts_by_language[lang], dtype=np.int64) for lang in metadata.languages])
    return metadata, counts


def test_language_thresholds_worked_by_hand():
    metadata, counts = _metadata_for(
        {
            # English, t_en = 3: the entries kept whole hold 1 + 2 + 3 = 6 of 20 matches, share 0.30.
            "en": [1, 2, 3, 4, 10],
            # de: total 40. t=5 keeps 5+5 = 10 -> 0.25; t=10: 20 -> 0.50; t=20: 1.0. Closest to 0.30: t = 5.
            "de": [5, 5, 10, 20, 0],
            # fr: total 10. t=1: 4 -> 0.40; t=6: 1.0. Closest: t = 1.
            "fr": [1, 1, 1, 1, 6],
            # ko: total 9. t=2: 2 -> 0.222; t=3: 5 -> 0.556; t=4: 1.0. |0.222-0.3| < |0.556-0.3|: t = 2.
            "ko": [2, 3, 4],
            # xx: English's own counts: t = 3, English's t, with the very same entries kept whole.
            "xx": [1, 2, 3, 4, 10],
            # zz: no caption matched: t_en (it changes nothing).
            "zz": [0, 0, 0],
        }
    )
    thresholds = language_thresholds(counts, metadata, 3)
    assert thresholds == {"en": 3, "de": 5, "fr": 1, "ko": 2, "xx": 2, "zz": 3}
    per_entry = entry_thresholds(metadata, thresholds)
    assert per_entry.dtype == np.int64
    assert per_entry.tolist() == [5] * 5 + [3] * 5 + [1] * 5 + [2] * 3 + [2] * 5 + [3] * 3


def test_same_counts_keep_the_same_entries_whole_when_t_en_is_no_count():
    # English t_en = 5 lies between counts 4 and 10: kept whole 1+2+3+4 = 10 of 20 (0.50).
    # The copy's candidates: t=4 keeps 10 of 20 (0.50) exactly, so t = 4, and
    # p_e = 1 on exactly the same entries as English.
    metadata, counts = _metadata_for({"en": [1, 2, 3, 4, 10], "xx": [1, 2, 3, 4, 10]})
    thresholds = language_thresholds(counts, metadata, 5)
    assert thresholds == {"en": 5, "xx": 4}
    probs = entry_probabilities(counts, entry_thresholds(metadata, thresholds))
    assert (probs[:5] == 1.0).tolist() == (probs[5:] == 1.0).tolist() == [True, True, True, True, False]


def test_exact_ties_go_to_the_smaller_t():
    # English [1, 2], t_en = 2: share (count < 2) 1/3 (not a float).
    # ko [1, 2, 3], total 6: t=1 -> 1/6, t=2 -> 3/6, t=3 -> 1. |1/6 - 1/3| = |1/2 - 1/3| = 1/6: tie -> t = 1.
    # ja [1, 3], total 4: t=1 -> 1/4 (off by 1/12), t=3 -> 1: t = 1.
    metadata, counts = _metadata_for({"en": [1, 2], "ko": [1, 2, 3], "ja": [3, 1]})
    assert language_thresholds(counts, metadata, 2) == {"en": 2, "ko": 1, "ja": 1}


def test_threshold_edge_cases():
    # No English match at all: the share is undefined and every language keeps t_en.
    metadata, counts = _metadata_for({"en": [0, 0], "de": [5, 50]})
    assert language_thresholds(counts, metadata, 7) == {"en": 7, "de": 7}
    # t_en below every English count: share 0; the closest candidate is the smallest count.
    metadata, counts = _metadata_for({"en": [10, 20], "de": [5, 50, 0]})
    assert language_thresholds(counts, metadata, 3) == {"en": 3, "de": 5}
    # t_en above every English count: share 1; t = the largest count keeps everything whole.
    assert language_thresholds(counts, metadata, 100) == {"en": 100, "de": 50}
    with pytest.raises(MetadataError, match="reference language 'en'"):
        language_thresholds(np.array([1, 2]), LanguageMetadata.from_lists({"de": ["a", "b"]}), 3)
    with pytest.raises(ValueError, match="shape"):
        language_thresholds(np.array([1]), metadata, 3)
    with pytest.raises(ValueError, match="undefined"):
        tail_share(np.zeros(3, dtype=np.int64), 1)
    assert tail_share(np.array([1, 2, 3, 4, 10]), 3) == pytest.approx(0.15)  # count < 3: 1 + 2 of 20


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(0, 1_000), min_size=1, max_size=30),
    numerator=st.integers(0, 50),
    extra=st.integers(0, 50),
)
def test_chosen_t_is_the_closest_candidate(counts, numerator, extra):
    """Against an oracle in exact fractions over every distinct positive count."""
    denominator = numerator + extra
    t = threshold_for_tail_share(np.array(counts), numerator, denominator)
    positive = sorted({c for c in counts if c > 0})
    if not positive or denominator == 0:
        assert t is None
        return
    total = sum(counts)
    target = Fraction(numerator, denominator)
    distance = {v: abs(Fraction(sum(c for c in counts if c <= v), total) - target) for v in positive}
    best = min(distance.values())
    assert t == min(v for v in positive if distance[v] == best)


def _reference_style_threshold(counts, t_en_share):
    """MetaCLIP 2's per-language search as its code describes it: cumulative shares over the sorted counts."""
    ordered = np.sort(np.asarray(counts))
    shares = np.cumsum(ordered) / ordered.sum()
    return int(ordered[np.abs(shares - t_en_share).argmin()])


@settings(max_examples=200, deadline=None)
@given(
    english=st.lists(st.integers(1, 10_000), min_size=1, max_size=20, unique=True),
    other=st.lists(st.integers(1, 10_000), min_size=1, max_size=20, unique=True),
    t_en=st.integers(1, 10_000),
)
def test_agrees_with_the_reference_where_it_is_well_defined(english, other, t_en):
    # Well defined: no zero or repeated count, no near-tie in floats.
    english_share = sum(c for c in english if c < t_en) / sum(english)
    shares = np.cumsum(np.sort(other)) / sum(other)
    gaps = np.sort(np.abs(shares - english_share))
    assume(len(gaps) == 1 or gaps[1] - gaps[0] > 1e-9)
    metadata, counts = _metadata_for({"en": english, "xx": other})
    assert language_thresholds(counts, metadata, t_en)["xx"] == _reference_style_threshold(other, english_share)


def test_entry_probabilities_per_entry_thresholds_match_the_single_t_bit_for_bit():
    counts = np.random.default_rng(0).integers(0, 10**7, 10_000)
    single = entry_probabilities(counts, 20_000)
    per_entry = entry_probabilities(counts, np.full(len(counts), 20_000, dtype=np.int64))
    assert single.view(np.int64).tolist() == per_entry.view(np.int64).tolist()
    mixed = entry_probabilities(np.array([5, 5, 40, 40]), np.array([10, 1, 10, 20]))
    assert mixed.tolist() == [1.0, 0.2, 0.25, 0.5]
    with pytest.raises(ValueError):
        entry_probabilities(np.array([1, 2]), np.array([1, 2, 3]))


# ---------------------------------------------------------------------------
# Language identification
# ---------------------------------------------------------------------------

_CLEAR_SENTENCES = {
    "en": ["A golden retriever playing with a ball in the park", "Fresh vegetables for sale at the farmers market"],
    "zh": ["一只金毛猎犬在公园里玩球", "两个孩子正在街上骑自行车", "春节期间的红灯笼"],
    "ja": ["公園でボールで遊ぶゴールデンレトリバー", "二人の子供が通りで自転車に乗っています"],
    "th": ["สุนัขโกลเด้นรีทรีฟเวอร์กำลังเล่นลูกบอลในสวนสาธารณะ", "ผักสดขายที่ตลาดเกษตรกร"],
    "de": ["Frisches Gemüse wird auf dem Bauernmarkt verkauft"],
    "fr": ["Deux enfants font du vélo dans la rue"],
    "ko": ["공원에서 공을 가지고 노는 골든 리트리버"],
    "ru": ["Старый маяк стоит на скалистом утёсе над морем"],
    "ar": ["خضروات طازجة للبيع في سوق المزارعين"],
    "hi": ["दो बच्चे सड़क पर अपनी साइकिल चला रहे हैं"],
}


def test_language_identification_on_clear_sentences():
    identifier = LanguageIdentifier()
    texts = [s for sentences in _CLEAR_SENTENCES.values() for s in sentences]
    expected = [lang for lang, sentences in _CLEAR_SENTENCES.items() for _ in sentences]
    assert identifier.identify(texts) == expected
    assert LanguageIdentifier().identify(texts) == expected  # a second instance, same answers
    # Nothing to identify -> "" (resolved to --default_language); odd input does not raise.
    assert identifier.identify(["", "   ", None])[:2] == ["", ""]
    assert len(identifier.identify(["line one\nline two\r", "bad \ud800 surrogate"])) == 2


def test_language_id_option():
    assert isinstance(language_identifier("auto", None).load(), LanguageIdentifier)
    assert language_identifier("auto", "lang") is None
    assert language_identifier("none", None) is None
    assert isinstance(language_identifier("fasttext-lid176", "lang"), LanguageIdentifier)
    with pytest.raises(ValueError, match="--language_id"):
        language_identifier("cld3", None)


def test_identified_codes_route_through_the_map():
    resolve = LanguageMap.parse(None).resolver({"en", "zh", "ja", "th"}, "other")
    codes = LanguageIdentifier().identify(["東京タワーの夜景", "a red car", "ผักสด", "Старый маяк"])
    assert [resolve(code) for code in codes] == ["ja", "en", "th", "other"]
