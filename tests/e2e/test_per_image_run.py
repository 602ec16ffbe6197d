"""--per_image end to end on a COCO-style pool of real captions (tests/coco_pool.py): the kept records
and their `texts` against a reading of docs/dedup.md section 3 written apart from the pipeline
(tests/dedup_reference.py, no import of transforms), and the same bytes whatever the file split,
batch size, worker count and runner."""

from __future__ import annotations

import argparse
import json

import dedup_reference as ref
import pyarrow.parquet as pq
import pytest
from coco_pool import coco_records, write_coco_pool

from beam_pipeline import curate
from beam_pipeline.option_checks import BadValue
from beam_pipeline.stages.per_image import refuse_per_image_conflicts

SEED = 11


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    records = coco_records(limit=6000)
    three, metadata = write_coco_pool(root / "three", records, files=3)
    five, _ = write_coco_pool(root / "five", records, files=5)
    return records, three, five, metadata, root


def _run(pool_dir, metadata, out, *flags) -> int:
    argv = ["--input", str(pool_dir / "*.parquet"), "--metadata", str(metadata), "--threshold", "15"]
    argv += ["--seed", str(SEED), "--num_shards", "3", "--progress", "0", "--output_dir", str(out), *flags]
    return curate.run(argv)


def _subset(out) -> dict:
    return {row["key"]: row for row in pq.read_table(out / "subset").to_pylist()}


@pytest.fixture(scope="module")
def runs(pool):
    records, three, five, metadata, root = pool
    workers = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert _run(three, metadata, root / "per_image", "--per_image", *workers) == 0
    assert _run(three, metadata, root / "per_caption", *workers) == 0
    return root


def test_kept_images_and_texts_equal_the_reference(pool, runs):
    records, *_ = pool
    per_caption = {row["key"]: row for row in pq.read_table(runs / "per_caption" / "matches").to_pylist()}
    index = {r["key"]: i for i, r in enumerate(records)}
    matched = [bool(per_caption[r["key"]]["entry_ids"]) for r in records]
    probs = [per_caption[r["key"]]["keep_prob"] for r in records]
    want = ref.per_image_literal(
        [ref.url_key(r["url"]) for r in records],
        [r["key"] for r in records],
        matched,
        probs,
        list(range(len(records))),
        SEED,
    )
    kept = {records[p]["key"]: [records[i]["text"] for i in order] for p, is_kept, order in want.values() if is_kept}
    subset = _subset(runs / "per_image")
    assert {key: row["texts"] for key, row in subset.items()} == kept
    assert all(row["text"] == records[index[key]]["text"] == row["texts"][0] for key, row in subset.items())
    several = [texts for texts in kept.values() if len(texts) > 1]
    assert len(kept) > 300 and len(several) > 200  # the pool exercises grouping
    # Counting is per caption, unchanged.
    for name in ("entry_counts.json",):
        assert (runs / "per_image" / name).read_bytes() == (runs / "per_caption" / name).read_bytes()
    stats = json.loads((runs / "per_image" / "stats.json").read_text())
    images_matched = sum(v[0] is not None for v in want.values())
    assert (stats["images_read"], stats["images_matched"], stats["images_kept"]) == (
        len(want),
        images_matched,
        len(kept),
    )
    sizes = {}
    for _, _, order in want.values():
        sizes[str(len(order))] = sizes.get(str(len(order)), 0) + 1
    assert stats["captions_per_image"] == dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))
    accounting = stats["accounting"]
    assert accounting["kept"] == len(kept) == stats["records_kept"]
    assert accounting["read"] == accounting["balanced_out"] + accounting["not_image_pick"] + accounting["kept"]
    # Per caption, an image with several captions could be kept several times.
    per_caption_kept = _subset(runs / "per_caption")
    assert len({ref.url_key(records[index[k]]["url"]) for k in per_caption_kept}) < len(per_caption_kept)


def test_same_bytes_whatever_split_batch_workers_and_runner(pool, runs):
    records, three, five, metadata, root = pool
    portable = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
    variants = {
        "in_memory": (five, ["--batch_size", "257", "--direct_running_mode=in_memory"]),
        "portable": (three, ["--batch_size", "1000", *portable]),
    }
    for label, (pool_dir, flags) in variants.items():
        out = root / label
        assert _run(pool_dir, metadata, out, "--per_image", *flags) == 0
        for directory in ("subset", "matches"):
            for name in sorted(p.name for p in (runs / "per_image" / directory).iterdir()):
                want = (runs / "per_image" / directory / name).read_bytes()
                assert (out / directory / name).read_bytes() == want, (label, directory, name)
        for name in ("entry_counts.json", "entry_counts_kept.json"):
            assert (out / name).read_bytes() == (runs / "per_image" / name).read_bytes(), (label, name)


def test_metaclip2_mode_per_image(pool, tmp_path):
    records, three, five, metadata, root = pool
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "en.json").write_text(metadata.read_text())
    out = tmp_path / "out"
    flags = ["--mode", "metaclip2", "--default_language", "en", "--language_id", "none", "--per_image"]
    assert _run(three, lists, out, *flags) == 0
    stats = json.loads((out / "stats.json").read_text())
    subset = _subset(out)
    assert 0 < stats["images_kept"] == len(subset) < stats["images_matched"] < stats["images_read"]
    urls = [ref.url_key(row["url"]) for row in subset.values() if row["url"]]
    assert len(urls) == len(set(urls))


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--balance", "none"],
            "--per_image curates images with MetaCLIP's probabilities: it needs --balance metaclip",
        ),
        (
            ["--dedup", "url"],
            "--per_image already makes one sample per URL: drop --dedup url (--dedup text still runs)",
        ),
        (
            ["--dedup", "text,url"],
            "--per_image already makes one sample per URL: drop --dedup url (--dedup text still runs)",
        ),
    ],
)
def test_refused_flags(pool, tmp_path, capsys, flags, message):
    _, three, _, metadata, _ = pool
    argv = ["--input", str(three / "*.parquet"), "--output_dir", str(tmp_path / "o"), "--per_image", *flags]
    if "--dedup" in flags:  # a run that would otherwise start: MetaCLIP balancing needs its metadata
        argv += ["--metadata", str(metadata)]
    assert curate.run(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_refuses_dedup_url_and_an_input_without_urls(pool, tmp_path, capsys):
    for dedup in (("url",), ("url", "text")):  # as --dedup's kind_list parses them
        with pytest.raises(BadValue, match="drop --dedup url"):
            refuse_per_image_conflicts(argparse.Namespace(per_image=True, balance="metaclip", dedup=dedup))
    refuse_per_image_conflicts(argparse.Namespace(per_image=True, balance="metaclip", dedup=("text",)))
    refuse_per_image_conflicts(argparse.Namespace(per_image=True, balance="metaclip", dedup=None))
    refuse_per_image_conflicts(argparse.Namespace(per_image=False, balance="none", dedup=("url",)))
    records, _, _, metadata, _ = pool
    no_url = tmp_path / "no_url"
    no_url.mkdir()
    (no_url / "a.jsonl").write_text("".join(json.dumps({"key": r["key"], "text": r["text"]}) + "\n" for r in records))
    argv = ["--input", str(no_url / "*.jsonl"), "--metadata", str(metadata), "--output_dir", str(tmp_path / "o")]
    assert curate.run([*argv, "--per_image"]) == 2
    assert "the input has no url column" in capsys.readouterr().err
