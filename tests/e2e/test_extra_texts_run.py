"""Several captions per image end to end (docs/dedup.md section 3): extra texts from columns
(a string and a list column), from webdataset `.json` fields and from keyed JSON-lines files
(keys of no record, keys listed twice, bad lines); every hand-off carries them (subset/,
img2dataset/, the reshard's .json read back with the webdataset library), and the training
side's text choice draws among them."""

from __future__ import annotations

import json

import dedup_reference as ref
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from coco_pool import coco_metadata, coco_records, write_coco_webdataset

from beam_pipeline import curate
from transforms.handoff.text_choice import TextChoice, chosen_indices

SEED = 4


def _run(inputs, metadata, out, *flags) -> int:
    argv = ["--input", inputs, "--metadata", str(metadata), "--threshold", "15", "--seed", str(SEED)]
    return curate.run(argv + ["--num_shards", "2", "--progress", "0", "--output_dir", str(out), *flags])


@pytest.fixture(scope="module")
def parquet_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("extra")
    records = coco_records(limit=2000)
    for i, r in enumerate(records):
        r["alt"] = f"alt text {i}" if i % 3 else None  # a null value is no text
        r["more"] = [f"more {i}a", "", f"more {i}b"] if i % 2 else []
    (root / "pool").mkdir()
    pq.write_table(pa.Table.from_pylist(records[:1000]), root / "pool" / "a.parquet")
    pq.write_table(pa.Table.from_pylist(records[1000:]), root / "pool" / "b.parquet")
    lines = [json.dumps({"key": r["key"], "texts": [f"rewrite of {r['key']}"]}) for r in records[::4]]
    lines += [json.dumps({"key": records[0]["key"], "texts": ["listed twice"]})]
    lines += [json.dumps({"key": "no-such-key", "texts": ["x"]}), "not json", json.dumps({"key": 3, "texts": []})]
    (root / "rw").mkdir()
    (root / "rw" / "part-0.jsonl").write_text("\n".join(lines[:300]) + "\n")
    (root / "rw" / "part-1.jsonl").write_text("\n".join(lines[300:]) + "\n")
    metadata = root / "metadata.json"
    metadata.write_text(json.dumps(coco_metadata(records)))
    return root, records, metadata


def _expected_texts(r, joined):
    texts = [r["text"]] + ([r["alt"]] if r["alt"] else []) + [t for t in r["more"] if t]
    return texts + joined.get(r["key"], [])


def test_columns_and_keyed_files_reach_subset_and_img2dataset(parquet_pool, capsys):
    root, records, metadata = parquet_pool
    out = root / "out"
    flags = ["--extra_text_fields", "alt,more", "--extra_texts", str(root / "rw" / "*.jsonl")]
    flags += ["--handoff", "img2dataset", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert _run(str(root / "pool" / "*.parquet"), metadata, out, *flags) == 0
    joined = {r["key"]: [f"rewrite of {r['key']}"] for r in records[::4]}
    subset = pq.read_table(out / "subset").to_pylist()
    assert len(subset) > 50
    for row in subset:
        r = next(x for x in records if x["key"] == row["key"])
        assert row["texts"] == _expected_texts(r, joined), row["key"]
    img2dataset = {row["source_key"]: row["texts"] for row in pq.read_table(out / "img2dataset").to_pylist()}
    assert img2dataset == {row["key"]: row["texts"] for row in subset}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["extra_texts_lines"] == len(records[::4]) + 2 and stats["records_with_joined_texts"] == len(joined)
    assert stats["extra_texts_keys_not_in_pool"] == 1 and stats["extra_texts_keys_listed_twice"] == 1
    assert stats["records_with_extra_texts"] == sum(len(_expected_texts(r, joined)) > 1 for r in records)
    rejected = [json.loads(line) for p in sorted((out / "rejected").glob("*.jsonl")) for line in p.open()]
    reasons = sorted((r["reason"], r["records"]) for r in rejected)
    assert reasons == [
        ("extra_texts_bad_line", 0),
        ("extra_texts_bad_line", 0),
        ("extra_texts_key_listed_twice", 0),
        ("extra_texts_key_not_in_pool", 0),
    ]
    assert stats["accounting"]["read"] == len(records) and stats["records_rejected"] == 0
    # Matching and balancing read the original caption only: the same kept keys without extra texts.
    plain = root / "plain"
    assert _run(str(root / "pool" / "*.parquet"), metadata, plain) == 0
    assert sorted(pq.read_table(plain / "subset").column("key").to_pylist()) == sorted(row["key"] for row in subset)
    assert (plain / "entry_counts.json").read_bytes() == (out / "entry_counts.json").read_bytes()
    printed = capsys.readouterr().out
    assert "extra-texts keys not in the pool" in printed and '"source_key", "texts"' in printed


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--extra_text_fields", "alt,,more"], "an empty name"),
        (["--extra_text_fields", "alt,alt"], "a name given twice"),
        (["--extra_text_fields", "nope"], "--extra_text_fields 'nope' is not a column of the input"),
        (["--extra_texts", "/no/such/*.jsonl"], "matches no file"),
    ],
)
def test_bad_flags_fail_fast(parquet_pool, tmp_path, capsys, flags, message):
    root, _, metadata = parquet_pool
    assert _run(str(root / "pool" / "*.parquet"), metadata, tmp_path / "o", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_webdataset_json_fields_per_image_reshard_and_the_loader(tmp_path):
    records = coco_records(limit=1500)
    pool = write_coco_webdataset(tmp_path / "wds", records, files=2)
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(coco_metadata(records)))
    out, reshard = tmp_path / "out", tmp_path / "reshard"
    flags = ["--url_field", "url", "--extra_text_fields", "rewrites", "--per_image", "--reshard_dir", str(reshard)]
    assert _run(str(pool / "*.tar"), metadata, out, *flags, "--samples_per_shard", "100") == 0
    # The reference: the image's records in `texts` order, each giving its caption then its rewrites.
    matches = {row["key"]: row for row in pq.read_table(out / "matches").to_pylist()}
    want = ref.per_image_literal(
        [ref.url_key(r["url"]) for r in records],
        [r["key"] for r in records],
        [bool(matches[r["key"]]["entry_ids"]) for r in records],
        [matches[r["key"]]["keep_prob"] for r in records],
        list(range(len(records))),
        SEED,
    )

    def texts_of(i):
        r = records[i]
        return [r["text"], f"a photo: {r['text'][:40]}", f"rewritten {r['key']}"]

    kept = {records[p]["key"]: [t for i in order for t in texts_of(i)] for p, k, order in want.values() if k}
    read_back = {}
    shards = sorted(str(p) for p in reshard.glob("*.tar"))
    for sample in wds.WebDataset(shards, shardshuffle=False):
        meta = json.loads(sample["json"])
        read_back[sample["__key__"]] = [meta[f"caption_{i}"] for i in range(len(kept[sample["__key__"]]))]
        assert f"caption_{len(kept[sample['__key__']])}" not in meta
        assert sample["txt"].decode() == meta["caption_0"] and "url" in meta  # the other fields, untouched
    assert read_back == kept and len(kept) > 40
    # The loader draws among them: per epoch, the text chosen by (seed, epoch, key).
    choice = TextChoice(seed=0, epoch=0)
    seen = {key: set() for key in kept}
    for epoch in range(12):
        choice.epoch = epoch
        for sample in wds.WebDataset(shards, shardshuffle=False).map(choice):
            key = sample["__key__"]
            index = chosen_indices([key], [len(kept[key])], 0, epoch)[0]
            assert sample["txt"].decode() == kept[key][index]
            seen[key].add(index)
    assert np.mean([len(s) > 1 for s in seen.values()]) > 0.9
