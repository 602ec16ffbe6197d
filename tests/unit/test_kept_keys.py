"""KeptKeys: the kept samples of each input shard, looked up by shard URL and __key__."""

from __future__ import annotations

import json

import pytest

from transforms.handoff.kept_keys import KeptKeys


def _output(tmp_path, shards: dict[str, list[str]]):
    """A curation's webdataset/ hand-off for `shards` (input path -> kept keys), as the pipeline writes it."""
    folder = tmp_path / "out" / "webdataset"
    (folder / "kept_keys").mkdir(parents=True)
    listed = []
    for index, (shard, keys) in enumerate(shards.items()):
        name = f"kept_keys/{index:06d}-{shard.rsplit('/', 1)[1][: -len('.tar')]}.txt"
        (folder / name).write_bytes("".join(key + "\n" for key in keys).encode("utf-8", "surrogateescape"))
        listed.append({"shard": shard, "keys_file": name, "accepted": 10, "kept": len(keys)})
    (folder / "shards.json").write_text(json.dumps({"kept": 0, "accepted": 0, "shards": listed}))
    return tmp_path / "out"


def test_same_named_shards_in_two_folders_keep_their_own_keys(tmp_path):
    out = _output(tmp_path, {"/pool/a/000000.tar": ["k1", "k2"], "/pool/b/000000.tar": ["k3"]})
    kept = KeptKeys.read(str(out))
    assert kept.keys("/pool/a/000000.tar") == {"k1", "k2"} and kept.keys("/pool/b/000000.tar") == {"k3"}
    # Read from elsewhere (another mount, a bucket): matched below the inputs' common folder.
    assert kept.keeps("gs://bucket/copy/a/000000.tar", "k1")
    assert not kept.keeps("gs://bucket/copy/b/000000.tar", "k1")
    assert kept.shard("file:///mnt/pool/b/000000.tar") == "/pool/b/000000.tar"
    with pytest.raises(KeyError, match="not one of the curation's 2 input shards"):
        kept.keys("/elsewhere/000000.tar")  # a base name alone is ambiguous: never guessed


def test_keys_with_spaces_and_odd_bytes_are_kept_whole(tmp_path):
    keys = ["a key with spaces", " leading", "trailing ", "tab\there", "\udcff raw byte", ""]
    out = _output(tmp_path, {"/pool/000001.tar": keys})
    kept = KeptKeys.read(str(out))
    assert kept.keys("/pool/000001.tar") == frozenset(keys)
    assert kept({"__url__": "/pool/000001.tar", "__key__": "a key with spaces"})
    assert not kept({"__url__": "/pool/000001.tar", "__key__": "a"})


def test_the_longest_matching_path_wins(tmp_path):
    out = _output(tmp_path, {"/p/x/0.tar": ["short"], "/p/a/x/0.tar": ["long"]})
    kept = KeptKeys.read(str(out))
    assert kept.keys("/q/a/x/0.tar") == {"long"} and kept.keys("/q/x/0.tar") == {"short"}
