"""LaCLIP's rewrite files (one rewrite a line, in the training CSV's row order) turned into
--extra_texts by transforms.images.laclip, and joined to the right records by a real run."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq

from beam_pipeline import curate
from transforms.images.laclip import main


def test_rewrites_join_the_rows_they_were_written_for(tmp_path, capsys):
    captions = [f"a photo of thing number {i}, a cat or a dog" for i in range(40)]
    pool = tmp_path / "pool"
    pool.mkdir()
    with open(pool / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "caption"])
        writer.writerows([f"http://x/{i}.jpg", text] for i, text in enumerate(captions))
    (tmp_path / "chatgpt.txt").write_text("".join(f"chatgpt rewrite {i}\n" for i in range(40)))
    (tmp_path / "bard.txt").write_text("".join(("" if i == 5 else f"bard rewrite {i}") + "\n" for i in range(40)))
    out = tmp_path / "rewrites.jsonl"
    rewrites = [str(tmp_path / "chatgpt.txt"), str(tmp_path / "bard.txt")]
    assert (
        main(["--csv", str(pool / "train.csv"), "--file_key", "train.csv", "--rewrites", *rewrites, "--out", str(out)])
        == 0
    )
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["cat", "dog", "photo"]))
    argv = ["--input", str(pool / "*.csv"), "--text_field", "caption", "--url_field", "url"]
    argv += ["--metadata", str(metadata), "--threshold", "100", "--extra_texts", str(out)]
    assert curate.run([*argv, "--output_dir", str(tmp_path / "run"), "--progress", "0"]) == 0
    subset = pq.read_table(tmp_path / "run" / "subset").to_pylist()
    assert len(subset) == 40
    for row in subset:
        i = captions.index(row["text"])
        want = [captions[i], f"chatgpt rewrite {i}"] + ([] if i == 5 else [f"bard rewrite {i}"])
        assert row["texts"] == want
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["records_with_joined_texts"] == 40 and stats["extra_texts_keys_not_in_pool"] == 0
    # A file a line short fails at once.
    (tmp_path / "short.txt").write_text("".join(f"r{i}\n" for i in range(39)))
    argv = ["--csv", str(pool / "train.csv"), "--file_key", "train.csv", "--rewrites", str(tmp_path / "short.txt")]
    assert main([*argv, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "has 39 lines, the CSV 40 rows" in capsys.readouterr().err
