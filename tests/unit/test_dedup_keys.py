"""The exact-dedup keys against hand cases (docs/dedup.md, "Keys"), and the purpose draws."""

from __future__ import annotations

import dedup_reference as ref
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.core.hashing import key_hashes, uniform_draws
from transforms.dedup.keys import (
    purpose_bits,
    purpose_draws,
    text_key,
    text_key_array,
    text_keys,
    url_key,
    url_key_array,
    url_keys,
)

URL_CASES = [
    ("http://example.com/a.jpg", "example.com/a.jpg"),
    ("https://example.com/a.jpg", "example.com/a.jpg"),
    ("https://www.example.com/a.jpg", "example.com/a.jpg"),
    ("http://www.example.com/", "example.com"),
    ("www.example.com/a.jpg", "www.example.com/a.jpg"),  # `www.` only goes with the scheme
    ("HTTP://example.com/a.jpg", "HTTP://example.com/a.jpg"),  # the pattern is case sensitive
    ("ftp://example.com/a.jpg", "ftp://example.com/a.jpg"),
    ("https://example.com/a b\tc.jpg", "example.com/abc.jpg"),  # MetaCLIP: tabs and spaces go
    (" https://www.example.com/a.jpg ", "example.com/a.jpg"),  # before the scheme rule
    ("https://example.com/a\n.jpg", "example.com/a\n.jpg"),  # newlines stay
    ("https://example.com/a.jpg?utm_source=x&b=1", "example.com/a.jpg"),
    ("https://example.com/a.jpg?ref=abc", "example.com/a.jpg"),
    ("https://example.com/a.jpg?referrer=abc", "example.com/a.jpg"),  # `ref` is a prefix
    ("https://example.com/a.jpg?feed=rss", "example.com/a.jpg"),
    ("https://example.com/a.jpg?id=1&utm_source=x", "example.com/a.jpg?id=1&utm_source=x"),  # only right after `?`
    ("https://example.com/a.jpg?size=2", "example.com/a.jpg?size=2"),
    ("https://example.com/?ref=x/", "example.com"),  # query gone, then the slashes
    ("https://example.com/dir///", "example.com/dir"),
    ("https://example.com/x?a=http://www.b.com/", "example.com/x?a=b.com"),  # every scheme occurrence
    ("https://example.com/a.jpg?ref=1\nmore", "example.com/a.jpg\nmore"),  # `.` stops at a newline
    ("https://", None),
    ("https://www./", None),
    ("  \t ", None),
    ("", None),
    ("/", None),
    (None, None),
]


@pytest.mark.parametrize(("url", "expected"), URL_CASES)
def test_url_key_hand_cases(url, expected):
    assert url_key(url) == expected


TEXT_CASES = [
    ("A Dog", "a dog"),
    ("  a\tdog \n on\r\nthe  grass ", "a dog on the grass"),
    ("A\u00a0dog", "a dog"),  # str.split() splits on Unicode white space
    ("a\u200bdog", "a\u200bdog"),  # a zero-width space is not white space
    ("ÉCOLE", "école"),
    ("İstanbul", "i̇stanbul"),  # str.lower, not Arrow's
    ("Straße", "straße"),  # lower, not casefold
    ("dog.", "dog."),
    ("", None),
    (" \t\n ", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_text_key_hand_cases(text, expected):
    assert text_key(text) == expected


def test_column_functions_take_arrow_columns_and_keep_nulls():
    urls = pa.chunked_array([["https://www.a.com/x/", None], ["", "http://a.com/x?utm_x=1"]])
    assert url_keys(urls) == ["a.com/x", None, None, "a.com/x"]
    assert text_keys(pa.array(["A  b", None, " "])) == ["a b", None, None]
    assert url_keys(["http://a.com"]) == ["a.com"]


_SPACES = "".join(chr(i) for i in range(0x110000) if chr(i).isspace())
_CAPTION_CHARS = st.one_of(
    st.characters(max_codepoint=127),  # every ASCII character, control characters included
    st.sampled_from(list(_SPACES + "AZaz\u00e9\u00c9\u0130\u00df\u03a3\u03c3\u1e9e\x00")),
    st.characters(exclude_categories=("Cs",)),  # any other, but lone surrogates: not UTF-8, never in a column
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=_CAPTION_CHARS, max_size=30)), max_size=20))
def test_text_key_array_equals_text_key_one_by_one(texts):
    """The Arrow path (all-ASCII captions) and the Python path (the rest) give text_key's
    answer, mixed in one column, chunked or not."""
    want = [text_key(t) for t in texts]
    assert text_key_array(pa.array(texts, pa.string())).to_pylist() == want
    half = len(texts) // 2
    chunked = pa.chunked_array([pa.array(texts[:half], pa.string()), pa.array(texts[half:], pa.string())])
    assert text_keys(chunked) == want


_URL_PARTS = st.one_of(
    st.sampled_from(["http://", "https://", "HTTP://", "www.", "?utm_", "?ref", "?feed", "?", "&utm_x", "/", "//"]),
    st.sampled_from(list("\t\n\r /.:?&=#aZ\u00e9\u4e2d\x00")),
    st.characters(exclude_categories=("Cs",)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(_URL_PARTS, max_size=10).map("".join)), max_size=16))
def test_url_key_array_equals_url_key_one_by_one(urls):
    """Arrow's RE2 and Python's re agree on the url key's patterns: schemes repeated or
    overlapping, queries before and after newlines, tabs, spaces, any Unicode."""
    want = [url_key(u) for u in urls]
    assert url_key_array(pa.array(urls, pa.string())).to_pylist() == want
    assert url_keys(urls) == want


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(alphabet=st.sampled_from(list("htps:/w.?utm_reffed \t\nAZé\u00a0x")), max_size=40)))
def test_keys_equal_the_literal_reading(value):
    assert url_key(value) == ref.url_key(value)
    assert text_key(value) == ref.text_key(value)


def test_purpose_draws_are_the_written_out_draw_of_key_nul_purpose():
    keys = ["a", "b", "ü", ""]
    got = purpose_draws(keys, 7, "dedup")
    assert list(got) == [ref.draw(7, k + "\x00dedup") for k in keys]
    assert list(purpose_draws(keys, 7, None)) == list(uniform_draws(key_hashes(keys), 7))
    assert list(purpose_bits(keys, 7, "order") >> 11) == [int(ref.draw(7, k + "\x00order") * 2**53) for k in keys]
    assert list(purpose_draws(keys, 7, "text")) != list(purpose_draws(keys, 7, "order"))
