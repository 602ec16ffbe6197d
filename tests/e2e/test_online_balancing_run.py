"""Online balancing on a real run's match index, and in a webdataset training loop.

The draw itself is tested in tests/unit/test_online_balancing.py."""

from __future__ import annotations

import json
import multiprocessing
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from beam_pipeline import curate
from helpers import write_jsonl
from transforms.core.balancing import keep_decisions
from transforms.handoff.online_balancing import (
    EpochFilter,
    MatchIndex,
    OnlineBalancing,
    webdataset_select,
)


def test_match_index_of_a_real_run_and_a_webdataset_loop(tmp_path):
    rng = np.random.default_rng(1)
    words = ["dog", "cat", "photo", "zebu"]
    records = [{"key": f"{i:06d}", "text": " ".join(rng.choice(words, 2))} for i in range(400)]
    write_jsonl(tmp_path / "pool.jsonl", records)
    (tmp_path / "md.json").write_text(json.dumps(words))
    out = tmp_path / "out"
    assert (
        curate.run(
            [
                "--input",
                str(tmp_path / "pool.jsonl"),
                "--metadata",
                str(tmp_path / "md.json"),
                "--threshold",
                "60",
                "--seed",
                "9",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    index = MatchIndex.read(str(out))
    stats = json.loads((out / "stats.json").read_text())
    assert len(index) == stats["records_accepted"] == 400
    assert round(OnlineBalancing(index, 9).expected_epoch_size, 3) == pytest.approx(stats["expected_kept"], abs=1e-3)
    # The same functions with the run's own seed reproduce the offline subset exactly.
    offline = {k for k, keep in zip(index.keys, keep_decisions(index.keep_probs, index.hashes, 9), strict=True) if keep}
    assert offline == set(pq.read_table(out / "subset").column("key").to_pylist())

    # A webdataset pipeline filtered per epoch, the epoch shared as open_clip shares it.
    with wds.TarWriter(str(tmp_path / "000000.tar")) as sink:
        for record in records:
            sink.write({"__key__": record["key"], "txt": record["text"], "cls": "0"})
    balancing = OnlineBalancing(index, seed=9)
    epoch = multiprocessing.Value("i", 0)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList([str(tmp_path / "000000.tar")]),
        wds.tarfile_to_samples(),
        webdataset_select(balancing, epoch),
    )
    seen = []
    for e in range(3):
        epoch.value = e
        seen.append([sample["__key__"] for sample in pipeline])
        assert seen[-1] == balancing.epoch_keys(e)
    assert seen[0] != seen[1] != seen[2]
    restored = pickle.loads(pickle.dumps(EpochFilter(balancing, 2)))  # DataLoader workers get a copy
    assert [r["key"] for r in records if restored({"__key__": r["key"]})] == seen[2]
