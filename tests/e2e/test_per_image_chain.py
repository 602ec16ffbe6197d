"""--per_image in the whole chain (demo scene: --where, --filter clip_score, MetaCLIP balancing,
--select covariance), where images have several records: the filters run before it, the
selection after it sees one kept record per kept image, and the accounting adds up."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from beam_pipeline.demo_scene import scene_flags, write_scene
from transforms.dedup.keys import url_key

WORDS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "flower", "chair", "horse", "cup", "book"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    scene = write_scene(root, WORDS, records=3000)
    for path in sorted(scene.pool.glob("*.parquet")):  # every 3 records of a shard: one image
        table = pq.read_table(path)
        urls = [f"https://img.example/{path.stem}-{i // 3}.jpg" for i in range(table.num_rows)]
        table = table.set_column(table.schema.get_field_index("url"), "url", [urls])
        pq.write_table(table, path)
    return root, scene


def _without(flags, *names):
    out, skip = [], 0
    for flag in flags:
        if skip:
            skip -= 1
        elif flag in names:
            skip = 1
        else:
            out.append(flag)
    return out


def test_selection_sees_one_record_per_kept_image(scene):
    root, sc = scene
    full = root / "full"
    assert curate.run([*scene_flags(sc, full), "--per_image", "--progress", "0"]) == 0
    unselected = root / "unselected"
    flags = _without(scene_flags(sc, unselected), "--select", "--select_fraction", "--class_embeddings")
    assert curate.run([*flags, "--per_image", "--progress", "0"]) == 0
    picks = pq.read_table(unselected / "subset").to_pylist()
    selected = pq.read_table(full / "subset").to_pylist()
    urls = [url_key(row["url"]) for row in picks]
    assert len(urls) == len(set(urls)) > 100  # one record per kept image
    assert {row["key"] for row in selected} <= {row["key"] for row in picks}
    stats = json.loads((full / "stats.json").read_text())
    assert stats["images_kept"] == len(picks) and stats["records_kept"] == len(selected) == round(0.5 * len(picks))
    accounting = stats["accounting"]
    assert list(accounting) == [
        "read",
        "rejected",
        "filtered",
        "balanced_out",
        "not_image_pick",
        "not_selected",
        "kept",
    ]
    assert accounting["read"] == sum(v for k, v in accounting.items() if k != "read")
    assert all(len(row["texts"]) >= 1 and row["texts"][0] == row["text"] for row in selected)
