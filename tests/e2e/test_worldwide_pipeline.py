"""--mode metaclip2 end to end: a mixed-language pool, each caption matched only against its language."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from beam_pipeline import curate
from helpers import write_jsonl
from transforms.core.balancing import entry_probabilities, keep_probability
from transforms.worldwide.metadata import LanguageMetadata
from transforms.worldwide.padding import match_entries_brute_force_worldwide
from transforms.worldwide.thresholds import entry_thresholds, language_thresholds

LISTS = {
    "en": ["dog", "cat", "hot dog", "Tokyo", "tower", "the"],
    "zh": ["东京", "狗", "猫", "塔"],
    "ja": ["東京", "タワー", "犬", "猫"],
    "th": ["แมว", "หมา", "กรุงเทพ"],
}
# Captions of one language often contain another language's entries: they must not match.
CAPTIONS = {
    "en": ["a hot dog in Tokyo", "the cat and the dog", "Tokyo tower at night", "a cat", "the 東京 tower", "dog"],
    "zh": ["东京的狗", "一只猫和一只狗", "东京塔 dog", "猫"],
    "ja": ["東京タワーの夜景", "犬と猫", "東京の犬 cat", "タワー"],
    "th": ["แมวและหมา", "หมา ในกรุงเทพ", "แมว cat"],
}


def _pool(tmp_path, with_field: bool = True):
    records = []
    for language, texts in sorted(CAPTIONS.items()):
        for i, text in enumerate(texts * 20):  # enough captions for some head entries at t = 10
            record = {"key": f"{language}-{i:03d}", "text": text}
            if with_field:
                record["lang"] = language
            records.append(record)
    pool = tmp_path / "pool"
    pool.mkdir()
    write_jsonl(pool / "part-0.jsonl", records[::2])
    write_jsonl(pool / "part-1.jsonl", records[1::2])
    metadata_dir = tmp_path / "metadata"
    metadata_dir.mkdir()
    for language, entries in LISTS.items():
        (metadata_dir / f"{language}.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return pool, metadata_dir, records


def _run(pool, metadata, out, *extra):
    argv = [
        "--input",
        str(pool / "*.jsonl"),
        "--metadata",
        str(metadata),
        "--output_dir",
        str(out),
        "--mode",
        "metaclip2",
        "--threshold",
        "10",
        "--seed",
        "3",
        "--report",
        "false",
        "--progress",
        "0",
        *extra,
    ]
    assert curate.run(argv) == 0


def _matches(out) -> dict:
    rows = {}
    for path in sorted((out / "matches").glob("part-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["key"]] = row
    return rows


def test_each_caption_matches_only_its_language_and_t_follows_english(tmp_path):
    pool, metadata_dir, records = _pool(tmp_path)
    out = tmp_path / "out"
    _run(pool, metadata_dir, out, "--lang_field", "lang")
    matches = _matches(out)
    assert len(matches) == len(records)
    for record in records:
        row = matches[record["key"]]
        assert row["lang"] == record["lang"]
        # The oracle: the spec's per-entry loop over the caption's own language's list only.
        assert row["entry_ids"] == match_entries_brute_force_worldwide(record["text"], LISTS[record["lang"]]), record
    # A Japanese caption never matches the Chinese 东京 (and vice versa): the lists are apart.
    # CJK padding lets 東京 match inside 東京タワー; katakana タワー is padded, so it does not.
    assert matches["ja-000"]["entry_ids"] == [0]
    assert matches["en-004"]["entry_ids"] == [4, 5]  # "the 東京 tower": tower, the; 東京 is not an English entry

    # Counts per (language, entry), and t per language from English's tail share.
    counts_doc = json.loads((out / "entry_counts.json").read_text(encoding="utf-8"))
    assert list(counts_doc) == sorted(LISTS)
    expected_counts = {language: dict.fromkeys(entries, 0) for language, entries in LISTS.items()}
    for record in records:
        for entry_id in matches[record["key"]]["entry_ids"]:
            expected_counts[record["lang"]][LISTS[record["lang"]][entry_id]] += 1
    assert counts_doc == expected_counts
    metadata = LanguageMetadata.from_lists(LISTS)
    counts = np.array(
        [expected_counts[language][entry] for language in metadata.languages for entry in LISTS[language]]
    )
    thresholds = language_thresholds(counts, metadata, 10)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["mode"] == "metaclip2" and stats["threshold"] == 10
    assert stats["thresholds_by_language"] == thresholds
    assert stats["records_by_language"]["th"]["accepted"] == len(CAPTIONS["th"]) * 20
    # keep_prob uses each language's own t.
    probs = entry_probabilities(counts, entry_thresholds(metadata, thresholds))
    for record in records:
        row = matches[record["key"]]
        global_ids = [metadata.offset(record["lang"]) + i for i in row["entry_ids"]]
        assert row["keep_prob"] == keep_probability(global_ids, probs)
    head = probs < 1.0
    assert stats["entries_over_threshold"] == int(head.sum()) > 0


def test_languages_from_the_bundled_model_when_there_is_no_field(tmp_path):
    pool, metadata_dir, records = _pool(tmp_path, with_field=False)
    out = tmp_path / "out"
    _run(pool, metadata_dir, out)  # --language_id auto: the model
    matches = _matches(out)
    # Clear sentences in each script land in their language's list.
    assert matches["zh-001"]["lang"] == "zh" and matches["th-000"]["lang"] == "th"
    assert matches["ja-000"]["lang"] == "ja" and matches["en-001"]["lang"] == "en"


def test_worldwide_option_errors_are_one_line(tmp_path, capsys):
    pool, metadata_dir, _ = _pool(tmp_path)
    base = ["--input", str(pool / "*.jsonl"), "--output_dir", str(tmp_path / "out"), "--mode", "metaclip2"]
    no_english = tmp_path / "no_en.json"
    no_english.write_text(json.dumps({"zh": ["狗"]}, ensure_ascii=False), encoding="utf-8")
    cases = [
        (["--metadata", str(no_english)], "reference language 'en'"),
        (["--metadata", str(metadata_dir), "--lang_field", "language"], "--lang_field 'language' is not a field"),
        (["--metadata", str(metadata_dir), "--language_id", "bogus"], "--language_id"),
        (["--metadata", str(metadata_dir), "--language_map", str(tmp_path / "missing.json")], "--language_map"),
    ]
    for extra, expected in cases:
        assert curate.run(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (extra, err)
