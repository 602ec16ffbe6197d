"""Webdataset tar parsing and writing without Beam, checked against the webdataset library."""

from __future__ import annotations

import gzip
import io
import tarfile

import braceexpand
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from webdataset import tariterators

from transforms.formats.layout import InputLayout, infer_format
from transforms.formats.readers import probe_layout, read_caption_file
from transforms.formats.rejections import (
    INVALID_UTF8,
    MALFORMED_JSON,
    MISSING_TEXT,
    NO_CAPTION_MEMBER,
    UNREADABLE_FILE,
    Rejection,
)
from transforms.formats.tar import (
    expand_braces,
    iter_tar_samples,
    split_member_name,
    tar_end,
    tar_member_bytes,
    write_tar,
)


def tar_bytes(members, directories=()) -> bytes:
    """A tar written by Python's tarfile (not by the code under test)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in directories:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ODD_TAR_MEMBERS = [
    ("__meta__", b"skipped"),
    ("a/0001.JPG", b"\xff\xd8 image"),
    ("a/0001.txt", b"a dog"),
    ("a/0001.seg.png", b"png"),
    ("a/0002.txt", b"a cat"),
    ("noextension", b"not a member"),
    ("a/0002.json", b'{"caption": "x"}'),
    ("b.c/0003.txt", b"dotted dir"),
    ("__keys__/x.txt", b"skipped too"),
    ("0004.txt", b"last"),
]


def _webdataset_samples(data: bytes):
    files = tariterators.tar_file_expander([{"url": "t", "stream": io.BytesIO(data)}])
    return [
        (sample["__key__"], sorted(k for k in sample if not k.startswith("__")))
        for sample in tariterators.group_by_keys(files)
    ]


def test_samples_are_grouped_as_webdataset_groups_them():
    data = tar_bytes(ODD_TAR_MEMBERS, directories=["a"])
    ours = [(s.key, sorted(s.extensions())) for s in iter_tar_samples(io.BytesIO(data), lambda i, e: True)]
    assert ours == _webdataset_samples(data)
    assert ours[0] == ("a/0001", ["jpg", "seg.png", "txt"])  # extension lower-cased, split at the first dot
    assert split_member_name("b.c/0003.txt") == ("b.c/0003", "txt") and split_member_name("plain") == (None, None)


def test_only_the_asked_members_are_read():
    data = tar_bytes(ODD_TAR_MEMBERS)
    asked = []
    samples = list(iter_tar_samples(io.BytesIO(data), lambda i, ext: asked.append((i, ext)) or ext == "txt"))
    assert [s.index for s in samples] == [0, 1, 2, 3]
    image = samples[0].member("jpg")
    assert image.data is None and image.size == len(b"\xff\xd8 image") and image.name == "a/0001.JPG"
    assert samples[0].member("txt").data == b"a dog"
    assert (0, "jpg") in asked and (1, "json") in asked


def test_a_repeated_extension_starts_a_new_sample_with_the_same_key():
    data = tar_bytes([("k.txt", b"1"), ("k.jpg", b"i"), ("k.txt", b"2")])
    samples = list(iter_tar_samples(io.BytesIO(data), lambda i, e: True))
    assert [(s.index, s.key, s.extensions()) for s in samples] == [(0, "k", ["txt", "jpg"]), (1, "k", ["txt"])]


def test_written_members_read_back_byte_for_byte_with_fixed_metadata():
    names = ["x/0001.jpg", "é" * 120 + ".txt", "k.json"]  # a long non-ASCII name needs a PAX header
    payloads = [bytes(range(256)) * 3, "légende".encode(), b"{}"]
    buffer = io.BytesIO()
    size = write_tar(buffer, [tar_member_bytes(n, d) for n, d in zip(names, payloads, strict=True)])
    data = buffer.getvalue()
    assert size == len(data) and len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == names
        assert [tar.extractfile(m).read() for m in members] == payloads
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    again = io.BytesIO()
    write_tar(again, [tar_member_bytes(n, d) for n, d in zip(names, payloads, strict=True)])
    assert again.getvalue() == data
    assert tar_end(0) == b"\0" * tarfile.RECORDSIZE


@pytest.mark.parametrize(
    "pattern",
    [
        "shards/{000000..000009}.tar",
        "{0..10}",
        "{8..10}",
        "{008..10}",
        "{10..8}",
        "a{1..7..3}b",
        "{a,b}{1..2}",
        "x{a,{b,c}}y",
        "{a}",
        "{}",
        "{,a}",
        "{a..d}",
        "gs://b/{00..02}/{x,y}.tar",
        "no braces",
        "{a}{1,2}",
    ],
)
def test_brace_expansion_matches_braceexpand(pattern):
    assert expand_braces(pattern) == list(braceexpand.braceexpand(pattern))
    assert expand_braces("a{unclosed") == ["a{unclosed"]  # braceexpand raises; a path may hold a brace


def _read(data: bytes, **options):
    layout = probe_layout(io.BytesIO(data), "webdataset", **{"text_field": ".txt", **options})
    batches, rejections = [], []
    for item in read_caption_file(io.BytesIO(data), "pool/000007.tar", 2, layout):
        (rejections if isinstance(item, Rejection) else batches).append(item)
    rows = [row for batch in batches for row in pa.Table.from_batches([batch]).to_pylist()]
    return layout, rows, rejections


def test_webdataset_reader_keys_captions_and_rejections():
    members = [
        ("s0.jpg", b"img"),
        ("s0.txt", b"a dog"),
        ("s0.json", b'{"uid": "u0", "url": "http://0", "caption": "json dog"}'),
        ("s1.jpg", b"img"),
        ("s1.json", b'{"uid": "u1"}'),  # no .txt
        ("s2.txt", b"bad \xff"),
        ("s3.txt", b"   "),
        ("s4.txt", b"a cat"),
        ("s4.json", b"{broken"),
    ]
    layout, rows, rejected = _read(tar_bytes(members))
    assert layout.passthrough == (("shard", pa.string()), ("wds_key", pa.string()))
    assert [(r["key"], r["text"], r["shard"], r["wds_key"], r["__source_file"], r["__source_row"]) for r in rows] == [
        ("s0", "a dog", "pool/000007.tar", "s0", 2, 0),
        ("s4", "a cat", "pool/000007.tar", "s4", 2, 4),
    ]
    assert [(r.row, r.reason) for r in rejected] == [(1, NO_CAPTION_MEMBER), (2, INVALID_UTF8), (3, "empty_text")]
    assert rejected[0].raw == {"__key__": "s1", "members": ["jpg", "json"]}

    # Caption and key from the .json member (a DataComp shard: --key_field uid), url too.
    layout, rows, rejected = _read(tar_bytes(members), text_field="caption", key_field="uid", url_field="url")
    assert [(r["key"], r["text"], r["url"], r["wds_key"]) for r in rows] == [("u0", "json dog", "http://0", "s0")]
    assert [(r.row, r.reason) for r in rejected] == [
        (1, MISSING_TEXT),
        (2, NO_CAPTION_MEMBER),
        (3, NO_CAPTION_MEMBER),
        (4, MALFORMED_JSON),
    ]


def test_truncated_tar_keeps_the_samples_before_the_fault():
    data = tar_bytes([(f"{i:04d}.txt", f"caption {i}".encode()) for i in range(20)])
    items = list(
        read_caption_file(
            io.BytesIO(data[: 512 * 21]),
            "cut.tar",
            0,
            InputLayout(
                format="webdataset", text_field=".txt", passthrough=(("shard", pa.string()), ("wds_key", pa.string()))
            ),
        )
    )
    batches = [i for i in items if isinstance(i, pa.RecordBatch)]
    assert [r.reason for r in items if isinstance(r, Rejection)] == [UNREADABLE_FILE]
    assert 0 < sum(b.num_rows for b in batches) < 20


def test_format_inference_and_probe():
    assert [infer_format(p) for p in ["a/000001.tar", "b.tar.gz", "c.TAR"]] == ["webdataset"] * 3
    with pytest.raises(tarfile.ReadError):
        probe_layout(io.BytesIO(b"not a tar at all" * 64), "webdataset", text_field=".txt")
    assert probe_layout(io.BytesIO(tar_bytes([])), "webdataset", text_field=".txt") is None
    packed = gzip.compress(tar_bytes([("k.txt", b"a dog")]))  # a .tar.gz read as a stream
    _, rows, _ = _read(packed)
    assert [(r["key"], r["text"]) for r in rows] == [("k", "a dog")]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_webdataset_reader_never_raises_on_arbitrary_bytes(data):
    layout = InputLayout(
        format="webdataset", text_field=".txt", passthrough=(("shard", pa.string()), ("wds_key", pa.string()))
    )
    for item in read_caption_file(io.BytesIO(data), "fuzz.tar", 0, layout):
        assert isinstance(item, (pa.RecordBatch, Rejection))
