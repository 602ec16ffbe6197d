"""The pure hand-off functions: DataComp uid packing, the .npy header, reshard plans, file names."""

from __future__ import annotations

import io
import random

import braceexpand
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.handoff.reshard import (
    brace_pattern,
    inputs_of_output_shard,
    kept_key_file_name,
    key_files_need_index,
    num_output_shards,
    output_shards_of_input,
    shard_starts,
)
from transforms.handoff.uids import (
    UidError,
    npy_header,
    pack_uids,
    sorted_unique_uids,
    uid_buckets,
    uids_bytes,
    unpack_uids,
)


def test_uid_packing_is_datacomps():
    rng = random.Random(1)
    uids = [f"{rng.getrandbits(128):032x}" for _ in range(200)] + ["0" * 32, "f" * 32, "0" * 16 + "f" * 16]
    packed = pack_uids(uids)
    assert packed.dtype == np.dtype("u8,u8")
    for uid, row in zip(uids, packed, strict=True):
        assert (int(row["f0"]), int(row["f1"])) == divmod(int(uid, 16), 2**64) == (int(uid[:16], 16), int(uid[16:], 16))
    assert unpack_uids(packed) == uids
    assert packed.tobytes()[:8] == int(uids[0][:16], 16).to_bytes(8, "little")  # little-endian on disk
    ordered = sorted_unique_uids(np.concatenate([packed, packed[:10]]))
    assert unpack_uids(ordered) == sorted(set(uids))
    buckets = uid_buckets(ordered, 7)
    assert np.all(np.diff(buckets) >= 0) and buckets.min() >= 0 and buckets.max() < 7


@pytest.mark.parametrize("bad", ["abc", "g" * 32, "a" * 31, "a" * 33, " " + "a" * 31, "00000001.jpg"])
def test_non_uid_keys_are_refused_with_the_key_named(bad):
    with pytest.raises(UidError, match=f"got {bad!r}"):
        pack_uids(["a" * 32, bad])


@pytest.mark.parametrize("count", [0, 1, 5, 10**9])
def test_npy_header_is_what_np_save_writes(count):
    rows = np.zeros(min(count, 5), dtype=np.dtype("u8,u8"))
    buffer = io.BytesIO()
    np.save(buffer, rows)
    assert npy_header(len(rows)) + uids_bytes(rows) == buffer.getvalue()
    assert len(npy_header(count)) % 64 == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=12), st.integers(1, 15))
def test_reshard_plan_is_contiguous_and_consistent(counts, per_shard):
    starts = shard_starts(counts)
    total = sum(counts)
    n = num_output_shards(total, per_shard)
    by_output = {}
    for index, (start, count) in enumerate(zip(starts, counts, strict=True)):
        for shard, samples in output_shards_of_input(int(start), count, per_shard):
            by_output.setdefault(shard, []).append((index, samples))
    assert sorted(by_output) == list(range(n))  # no gaps
    for shard in range(n):
        pieces = inputs_of_output_shard(shard, starts, counts, per_shard)
        assert pieces == by_output[shard]
        assert sum(s for _, s in pieces) == (per_shard if shard < n - 1 else total - per_shard * (n - 1))


def test_brace_pattern_and_key_file_names():
    assert brace_pattern("gs://b/shards/", 0) is None
    assert brace_pattern("out", 1) == "out/000000.tar"
    assert list(braceexpand.braceexpand(brace_pattern("out", 12))) == [f"out/{i:06d}.tar" for i in range(12)]
    assert brace_pattern("d", 1_000_001) == "d/{0000000..1000000}.tar"
    for paths, names in [
        (["a/000001.tar", "b/000002.tar.gz"], ["000001.txt", "000002.txt"]),
        (["a/x.tar", "b/x.tar"], ["000000-x.txt", "000001-x.txt"]),
    ]:
        with_index = key_files_need_index(paths)
        assert [kept_key_file_name(p, i, with_index) for i, p in enumerate(paths)] == names
