"""--allow_uids / --deny_uids through the command line: both list formats, a short uid, the order of
the filters a dropped record is charged to, and bad lists refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from uid_list_reference import npy_bytes, uid_rows

from beam_pipeline import curate

SHORT_UID = "abc123"  # not 32 hex digits: in no .npy list


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("uid_lists")
    rng = np.random.default_rng(2028)
    values = [int.from_bytes(rng.bytes(16), "big") for _ in range(240)]
    uids = [f"{v:032x}" for v in values]
    uids[17] = SHORT_UID
    for shard in range(2):
        part = uids[shard * 120 : (shard + 1) * 120]
        table = pa.table(
            {
                "uid": part,
                "url": [f"https://img/{u}" for u in part],
                "text": ["a caption"] * len(part),
                "aesthetic": [float(i % 10) for i in range(shard * 120, (shard + 1) * 120)],
            }
        )
        pq.write_table(table, root / f"{shard:05d}.parquet")
    listed = [v for i, v in enumerate(values) if i % 3 == 0 and i != 17]
    outside = [int.from_bytes(rng.bytes(16), "big") for _ in range(5)]  # listed, not in the pool
    (root / "allow.npy").write_bytes(npy_bytes(uid_rows(listed + outside)))
    denied = [v for i, v in enumerate(values) if i % 4 == 0 and i != 17]
    (root / "deny.npy").write_bytes(npy_bytes(uid_rows(denied)))
    (root / "deny.txt").write_text("\n".join(f"{v:032x}" for v in denied) + "\n")
    (root / "allow.txt").write_text("\n".join([f"{v:032x}" for v in listed] + [SHORT_UID, "not-in-pool"]) + "\n")
    return root, uids, {f"{v:032x}" for v in listed}, {f"{v:032x}" for v in denied}


def _run(root, out, *flags) -> int:
    argv = ["--input", str(root / "*.parquet"), "--input_preset", "datacomp", "--balance", "none"]
    return curate.run(argv + ["--handoff", "none", "--num_shards", "2", "--output_dir", str(out), *flags])


def _kept(out) -> set:
    return set(pq.read_table(out / "subset").column("key").to_pylist())


def _reasons(out) -> dict:
    table = pq.read_table(out / "filtered")
    return dict(zip(table.column("key").to_pylist(), table.column("filter").to_pylist(), strict=True))


@pytest.mark.parametrize("name", ["allow.npy", "allow.txt"])
def test_allow_keeps_exactly_the_listed_records(pool, tmp_path, name):
    root, uids, listed, _ = pool
    out = tmp_path / "out"
    assert _run(root, out, "--allow_uids", str(root / name)) == 0
    expected = listed | ({SHORT_UID} if name == "allow.txt" else set())  # a text list names any key
    assert _kept(out) == expected
    assert _reasons(out) == {uid: "allow_uids" for uid in uids if uid not in expected}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["filtered_by_filter"] == {"allow_uids": len(uids) - len(expected)}
    assert stats["allow_uids"] == {"file": name, "listed": len(listed) + (5 if name == "allow.npy" else 2)}
    assert stats["records_read"] == len(uids) == stats["records_filtered"] + stats["records_kept"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing.npy", "--allow_uids {path} cannot be opened"),
        (lambda root: _write(root / "ints.npy", npy_bytes(np.arange(3))), "must hold a 1-d array of dtype u8,u8"),
    ],
)
def test_a_bad_list_fails_before_any_work_with_one_line(pool, tmp_path, capsys, make, message):
    root, _, _, _ = pool
    path = make(tmp_path)
    assert _run(root, tmp_path / "out", "--allow_uids", str(path)) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and err.count("\n") == 1, err


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_an_npy_list_needs_uid_keys(pool, tmp_path, capsys):
    root, _, _, _ = pool
    (tmp_path / "pool.jsonl").write_text('{"key": "k0", "text": "a dog"}\n{"key": "k1", "text": "a cat"}\n')
    argv = ["--input", str(tmp_path / "pool.jsonl"), "--balance", "none", "--output_dir", str(tmp_path / "out")]
    assert curate.run(argv + ["--allow_uids", str(root / "allow.npy")]) == 2
    err = capsys.readouterr().err
    assert "lists DataComp uids (an .npy), but the input's keys are not uids (e.g. 'k0')" in err, err


@pytest.mark.parametrize("name", ["deny.npy", "deny.txt"])
def test_deny_drops_exactly_the_listed_records_and_keeps_a_short_uid(pool, tmp_path, name):
    root, uids, _, denied = pool
    out = tmp_path / "out"
    assert _run(root, out, "--deny_uids", str(root / name)) == 0
    assert _kept(out) == set(uids) - denied and SHORT_UID in _kept(out)
    assert _reasons(out) == dict.fromkeys(denied, "deny_uids")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["filtered_by_filter"] == {"deny_uids": len(denied)}


def test_a_dropped_record_is_charged_to_the_first_filter_it_fails(pool, tmp_path):
    """allow_uids, then deny_uids, then each --where as given: a record failing several goes to the first."""
    root, uids, listed, denied = pool
    out = tmp_path / "out"
    where = ["--where", "aesthetic >= 3", "--where", "aesthetic < 8"]
    assert _run(root, out, "--deny_uids", str(root / "deny.txt"), *where, "--allow_uids", str(root / "allow.npy")) == 0
    aesthetic = {uid: float(i % 10) for i, uid in enumerate(uids)}
    expected = {}
    for uid in uids:
        for reason, fails in (
            ("allow_uids", uid not in listed),
            ("deny_uids", uid in denied),
            ("where aesthetic >= 3", aesthetic[uid] < 3),
            ("where aesthetic < 8", aesthetic[uid] >= 8),
        ):
            if fails:
                expected[uid] = reason
                break
    assert _reasons(out) == expected and _kept(out) == set(uids) - set(expected)
    stats = json.loads((out / "stats.json").read_text())
    order = ["allow_uids", "deny_uids", "where aesthetic >= 3", "where aesthetic < 8"]
    assert list(stats["filtered_by_filter"]) == order and all(stats["filtered_by_filter"][name] > 0 for name in order)
