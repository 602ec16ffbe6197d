"""--where through the command line: the kept set, filtered/'s reasons and stats.json against a
per-row reading of the rule (tests/where_reference.py), and bad conditions refused."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from where_reference import reference_first_failed

from beam_pipeline import curate
from transforms.filters.where import parse_condition

WHERE = ["aesthetic > 5", "punsafe < 0.5", "width >= 200"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two parquet shards: scores with nulls, NaN and values at the thresholds."""
    root = tmp_path_factory.mktemp("where")
    rng = np.random.default_rng(28)
    rows = []
    for shard in range(2):
        n = 150
        aesthetic = rng.choice([4.0, 5.0, 5.0000005, 6.5, 8.0, np.nan], size=n).astype(np.float32).tolist()
        aesthetic = [None if i % 17 == 0 else a for i, a in enumerate(aesthetic)]
        punsafe = rng.choice([0.1, 0.49, 0.5, 0.9, np.nan], size=n).tolist()
        width = rng.choice([100, 199, 200, 640], size=n).tolist()
        uids = [f"{shard:02x}{i:030x}" for i in range(n)]
        table = pa.table(
            {
                "uid": uids,
                "url": [f"https://img/{u}.jpg" for u in uids],
                "text": [f"caption {i}" for i in range(n)],
                "aesthetic": pa.array(aesthetic, pa.float32()),
                "punsafe": pa.array(punsafe, pa.float64()),
                "width": pa.array(width, pa.int64()),
                "label": ["x"] * n,
            }
        )
        pq.write_table(table, root / f"{shard:05d}.parquet")
        rows += table.to_pylist()
    return root, rows


def _run(root, out, *flags) -> int:
    argv = ["--input", str(root / "*.parquet"), "--input_preset", "datacomp", "--balance", "none"]
    return curate.run(argv + ["--handoff", "none", "--num_shards", "2", "--output_dir", str(out), *flags])


def test_kept_set_reasons_and_counts_equal_the_reference(pool, tmp_path):
    root, rows = pool
    out = tmp_path / "out"
    flags = [arg for condition in WHERE for arg in ("--where", condition)]
    assert _run(root, out, *flags, "--direct_running_mode=multi_processing", "--direct_num_workers=2") == 0
    conditions = [parse_condition(text) for text in WHERE]
    failed = reference_first_failed(rows, conditions)
    expected_kept = {row["uid"] for row, f in zip(rows, failed, strict=True) if f < 0}
    expected_reason = {row["uid"]: conditions[f].text for row, f in zip(rows, failed, strict=True) if f >= 0}
    assert 0 < len(expected_kept) < len(rows) and len(set(expected_reason.values())) == 3
    assert set(pq.read_table(out / "subset").column("key").to_pylist()) == expected_kept
    filtered = pq.read_table(out / "filtered")
    assert dict(zip(filtered.column("key").to_pylist(), filtered.column("filter").to_pylist(), strict=True)) == (
        expected_reason
    )
    stats = json.loads((out / "stats.json").read_text())
    by_filter = {c.text: sum(1 for r in expected_reason.values() if r == c.text) for c in conditions}
    assert stats["filtered_by_filter"] == by_filter and stats["where"] == WHERE
    assert stats["records_read"] == len(rows) == stats["records_filtered"] + stats["records_accepted"]
    assert stats["records_kept"] == len(expected_kept)


@pytest.mark.parametrize(
    "condition, message",
    [
        ("aesthetics > 5", "--where 'aesthetics > 5': column 'aesthetics' is not a column of the input"),
        ("label == 1", "--where 'label == 1': column 'label' is string, not a number"),
        ("aesthetic >> 5", "--where takes COLUMN OP NUMBER"),
        ("aesthetic > high", "'high' is not a number"),
    ],
)
def test_a_bad_condition_fails_before_any_work_with_one_line(pool, tmp_path, capsys, condition, message):
    root, _ = pool
    assert _run(root, tmp_path / "out", "--where", condition) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
