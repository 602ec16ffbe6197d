"""Report figures (merge order independence) and the report built from an output directory.

The output directory is made here from a synthetic pool with the real balancing
functions; stats.json's figures are computed independently, caption by caption,
and the report's numbers must equal them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers import REPO, number, parse
from transforms.core.balancing import (
    entry_probabilities,
    keep_decisions,
    keep_probabilities,
    keep_probability,
)
from transforms.core.columns import ENTRY_IDS, KEEP_PROB, KEPT, KEY, KEY_HASH, TEXT
from transforms.core.expected_size import (
    add_fixed,
    expected_sizes_fixed,
    fixed_to_captions,
    threshold_grid,
)
from transforms.core.hashing import key_hashes, uniform_draws
from transforms.core.report_figures import (
    EXAMPLES,
    batch_figures,
    empty_figures,
    figures_document,
    kept_counts_document,
    kept_entry_counts,
    merge_figures,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- a synthetic run


def synthetic_pool(captions: int, entries: int, seed: int):
    """(metadata, [(key, text, sorted entry ids)]): Zipf-popular entries, words as captions."""
    rng = random.Random(seed)
    metadata = [f"w{i:04d}" for i in range(entries)]
    weights = [1.0 / (i + 1) ** 1.05 for i in range(entries)]
    fillers = ["a", "photo", "of", "the", "with", "in", "and"]  # never entries
    pool = []
    for row in range(captions):
        size = rng.choice([0, 1, 1, 2, 2, 3, 4, 6, 9])
        ids = sorted(set(rng.choices(range(entries), weights, k=size)))
        words = [metadata[i] for i in ids] + rng.choices(fillers, k=rng.randint(1, 3 + 40 * (row % 50 == 0)))
        rng.shuffle(words)
        pool.append((f"k{rng.getrandbits(40):010x}", " ".join(words), ids))
    return metadata, pool


def sampled_batches(pool, counts, threshold: int, seed: int, batch_rows: int):
    """Arrow batches as BalancedSample emits them, in pieces of batch_rows."""
    probs = entry_probabilities(counts, threshold)
    batches = []
    for start in range(0, len(pool), batch_rows):
        rows = pool[start : start + batch_rows]
        ids = pa.array([r[2] for r in rows], pa.list_(pa.int32()))
        offsets = ids.offsets.to_numpy().astype(np.int64)
        keep_prob = keep_probabilities(offsets, ids.flatten().to_numpy(), probs)
        hashes = key_hashes([r[0] for r in rows])
        kept = keep_decisions(keep_prob, hashes, seed)
        batches.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array([r[0] for r in rows]),
                    pa.array([r[1] for r in rows]),
                    ids,
                    pa.array(keep_prob),
                    pa.array(hashes, pa.uint64()),
                    pa.array(kept),
                ],
                names=[KEY, TEXT, ENTRY_IDS, KEEP_PROB, KEY_HASH, KEPT],
            )
        )
    return batches


def independent_stats(pool, counts, threshold: int, seed: int, rejected: int) -> dict:
    """stats.json's figures, caption by caption with the scalar functions."""
    probs = entry_probabilities(counts, threshold)
    keep = [keep_probability(ids, probs) for _key, _text, ids in pool]
    draws = uniform_draws(key_hashes([key for key, _text, _ids in pool]), seed)
    kept = sum(1 for p, u in zip(keep, draws, strict=True) if u < p)
    head = [c for c in counts.tolist() if c > threshold]
    return {
        "records_read": len(pool) + rejected,
        "records_accepted": len(pool),
        "records_rejected": rejected,
        "rejected_by_reason": {"empty_text": rejected},
        "files_rejected": 0,
        "records_matched": sum(1 for _k, _t, ids in pool if ids),
        "records_kept": kept,
        "expected_kept": round(sum(int(np.rint(p * 2**40)) for p in keep) / 2**40, 3),
        "entry_matches": sum(len(ids) for _k, _t, ids in pool),
        "entries": len(counts),
        "entries_matched": sum(1 for c in counts.tolist() if c),
        "entries_over_threshold": len(head),
        "matches_in_head_entries": sum(head),
        "duplicate_keys": 0,
        "duplicate_key_examples": [],
        "threshold": threshold,
        "seed": seed,
        "input_files": 3,
        "num_shards": 2,
        "metadata_sha256": "0" * 64,
        # A key the report does not know (MetaCLIP 2 will add some): shown, not fatal.
        "thresholds_by_language": {"en": threshold, "de": 7},
    }


def build_output_dir(
    directory: Path, captions: int = 3000, entries: int = 300, threshold: int = 60, seed: int = 11, target_size=None
) -> dict:
    """A curation output directory with the four files the report reads."""
    metadata, pool = synthetic_pool(captions, entries, seed=5)
    counts = np.bincount([i for _k, _t, ids in pool for i in ids], minlength=entries).astype(np.int64)
    batches = sampled_batches(pool, counts, threshold, seed, batch_rows=512)
    stats = independent_stats(pool, counts, threshold, seed, rejected=17)
    grid = threshold_grid(counts, 32, extra=[threshold])
    fixed = [0] * len(grid)
    kept_counts = np.zeros(entries, dtype=np.int64)
    for batch in batches:
        offsets = batch.column(ENTRY_IDS).offsets.to_numpy()
        fixed = add_fixed(
            fixed, expected_sizes_fixed(offsets, batch.column(ENTRY_IDS).flatten().to_numpy(), counts, grid)
        )
        kept_counts += kept_entry_counts(batch, entries)
    table = list(zip(grid.tolist(), fixed_to_captions(fixed).tolist(), strict=True))
    merged = merge_figures(batch_figures(batch) for batch in batches)
    chosen = {"threshold": threshold, "target_size": target_size, "expected_kept": stats["expected_kept"]}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "entry_counts.json").write_text(json.dumps(dict(zip(metadata, counts.tolist(), strict=True))))
    (directory / "entry_counts_kept.json").write_text(json.dumps(kept_counts_document(metadata, kept_counts)))
    (directory / "figures.json").write_text(json.dumps(figures_document(merged, metadata, table, chosen)))
    (directory / "stats.json").write_text(json.dumps(stats))
    return {
        "metadata": metadata,
        "pool": pool,
        "counts": counts,
        "batches": batches,
        "stats": stats,
        "kept_counts": kept_counts,
        "table": table,
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("out")
    built = build_output_dir(directory, target_size=1000)
    from beam_pipeline.report import write_report

    built["written"] = write_report(str(directory))
    built["dir"] = directory
    return built


# ---------------------------------------------------------------- figures


def test_merge_is_independent_of_order_and_grouping():
    _metadata, pool = synthetic_pool(1200, 80, seed=9)
    counts = np.bincount([i for _k, _t, ids in pool for i in ids], minlength=80).astype(np.int64)
    parts = [batch_figures(b) for b in sampled_batches(pool, counts, 25, 3, batch_rows=100)]
    flat = merge_figures(parts)
    shuffled = parts[:]
    random.Random(1).shuffle(shuffled)
    tree = merge_figures([merge_figures(shuffled[:5]), empty_figures(), merge_figures(shuffled[5:])])
    for name in flat:
        assert (
            np.array_equal(flat[name], tree[name]) if isinstance(flat[name], np.ndarray) else flat[name] == tree[name]
        )
    # The same as one batch of everything.
    whole = batch_figures(sampled_batches(pool, counts, 25, 3, batch_rows=len(pool))[0])
    for name in flat:
        assert (
            np.array_equal(flat[name], whole[name]) if isinstance(flat[name], np.ndarray) else flat[name] == whole[name]
        )


def test_examples_are_the_smallest_key_hashes_of_each_kind():
    _metadata, pool = synthetic_pool(1500, 80, seed=4)
    counts = np.bincount([i for _k, _t, ids in pool for i in ids], minlength=80).astype(np.int64)
    batches = sampled_batches(pool, counts, 25, 3, batch_rows=128)
    merged = merge_figures(batch_figures(b) for b in batches)
    rows = [
        row
        for b in batches
        for row in zip(*(b.column(c).to_pylist() for c in (KEY_HASH, KEY, KEPT, KEEP_PROB, ENTRY_IDS)), strict=True)
    ]
    for kind, keep in (
        ("kept", lambda r: r[2]),
        ("dropped", lambda r: not r[2] and r[3] > 0),
        ("unmatched", lambda r: r[3] == 0),
    ):
        expected = sorted((h, k) for h, k, *_rest in filter(keep, rows))[:EXAMPLES]
        assert [(h, k) for h, k, *_rest in merged[kind]] == expected
        assert len(expected) == EXAMPLES
    assert all(len(text) <= 201 for _h, _k, text, _ids, _p in merged["kept"])


def test_histograms_and_kept_counts_equal_the_pool(run):
    figures = json.loads((run["dir"] / "figures.json").read_text())
    stats = run["stats"]
    matches = figures["matches_per_caption"]
    assert sum(matches["captions"]) == stats["records_accepted"]
    assert sum(matches["kept"]) == stats["records_kept"]
    assert matches["captions"][0] == stats["records_accepted"] - stats["records_matched"]
    assert matches["kept"][0] == 0
    assert matches["captions"][3] == sum(1 for _k, _t, ids in run["pool"] if len(ids) == 3)
    length = figures["caption_length"]
    assert sum(length["captions"]) == stats["records_accepted"] and sum(length["kept"]) == stats["records_kept"]
    assert len(length["labels"]) == len(length["edges"]) == len(length["captions"])
    assert int(run["kept_counts"].sum()) == sum(len(ids) for ids, kept in _kept_rows(run) if kept)
    # The size table holds the run's t, and there E(t) is stats.json's expected_kept.
    at_t = [row["expected_kept"] for row in figures["size_vs_threshold"] if row["threshold"] == stats["threshold"]]
    assert at_t and round(at_t[0], 3) == stats["expected_kept"]
    assert figures["chosen"] == {"threshold": 60, "target_size": 1000, "expected_kept": stats["expected_kept"]}
    assert figures["examples"]["kept"][0]["entries"] == [
        run["metadata"][i] for i in _example_ids(run, figures["examples"]["kept"][0]["key"])
    ]


def _kept_rows(run):
    for batch in run["batches"]:
        yield from zip(batch.column(ENTRY_IDS).to_pylist(), batch.column(KEPT).to_pylist(), strict=True)


def _example_ids(run, key):
    return next(ids for k, _t, ids in run["pool"] if k == key)


# ---------------------------------------------------------------- the report


def test_files_are_written_and_pngs_are_pngs(run):
    directory = run["dir"]
    names = {Path(p).relative_to(directory).as_posix() for p in run["written"]}
    plots = {
        "entry_counts",
        "head_tail_share",
        "matches_per_caption",
        "kept_rate_by_matches",
        "caption_length",
        "size_vs_threshold",
    }
    assert names == {f"plots/{p}.png" for p in plots} | {"size_vs_threshold.csv", "report.html"}
    for name in plots:
        data = (directory / "plots" / f"{name}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert not [p.name for p in directory.rglob(".*")]  # no temporary files left
    csv = (directory / "size_vs_threshold.csv").read_text().splitlines()
    assert csv[0] == "threshold,expected_kept"
    assert [(int(t), float(e)) for t, e in (line.split(",") for line in csv[1:])] == run["table"]


def test_report_is_self_contained(run):
    page = (run["dir"] / "report.html").read_text(encoding="utf-8")
    parsed = parse(page)
    assert "http://" not in page and "https://" not in page and "url(" not in page and "@import" not in page
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    sources = [value for name, value in parsed.attributes if name in ("src", "href", "srcset", "data")]
    assert len(sources) == 6 and all(value.startswith("data:image/png;base64,") for value in sources)


def test_report_numbers_equal_stats_and_entry_counts(run):
    stats = run["stats"]
    parsed = parse((run["dir"] / "report.html").read_text(encoding="utf-8"))
    figures = {row[0]: row[1] for row in parsed.tables["run-figures"]}
    assert number(figures["records read"]) == stats["records_read"]
    assert number(figures["records kept"]) == stats["records_kept"]
    assert number(figures["matched (>= 1 entry)"]) == stats["records_matched"]
    assert number(figures["threshold t"]) == stats["threshold"]
    assert number(figures["expected kept (sum of keep_prob)"]) == stats["expected_kept"]
    assert number(figures["matches in head entries"]) == stats["matches_in_head_entries"]
    assert figures["t per language"] == "en 60, de 7"
    # Top head entries: the largest counts, in order, with their kept counts and p_e.
    counts, kept, t = run["counts"], run["kept_counts"], stats["threshold"]
    order = sorted((i for i in range(len(counts)) if counts[i] > t), key=lambda i: (-counts[i], i))[:30]
    rows = parsed.tables["top-entries"][1:]
    assert len(rows) == min(30, stats["entries_over_threshold"]) > 5
    for row, i in zip(rows, order, strict=True):
        assert row[1] == run["metadata"][i]
        assert number(row[2]) == counts[i] and number(row[3]) == kept[i]
        assert number(row[4]) == pytest.approx(t / counts[i], abs=5e-5)
    # Head share of matches, before: stats.json's matches_in_head_entries / entry_matches.
    share = stats["matches_in_head_entries"] / stats["entry_matches"]
    assert f"<b>{share:.1%}</b> of all entry matches" in (run["dir"] / "report.html").read_text(encoding="utf-8")
    kept_rows = parsed.tables["examples-kept"][1:]
    assert len(kept_rows) == EXAMPLES and all(0 < number(row[1]) <= 1 for row in kept_rows)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "beam_pipeline.report", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_rebuilds_the_report_and_refuses_a_run_without_figures(tmp_path, run):
    directory = tmp_path / "out"
    directory.mkdir()
    for name in ("stats.json", "entry_counts.json", "entry_counts_kept.json", "figures.json"):
        (directory / name).write_bytes((run["dir"] / name).read_bytes())
    done = _cli(str(directory))
    assert done.returncode == 0, done.stderr
    assert (directory / "report.html").read_bytes() == (run["dir"] / "report.html").read_bytes().replace(
        str(run["dir"]).encode(), str(directory).encode()
    )
    assert (directory / "plots" / "entry_counts.png").read_bytes() == (
        run["dir"] / "plots" / "entry_counts.png"
    ).read_bytes()

    (directory / "figures.json").unlink()
    done = _cli(str(directory))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "figures.json is missing" in lines[0] and lines[0].startswith("error: ")


def test_a_run_without_matches_and_per_language_thresholds_still_reports(tmp_path):
    """Degenerate figures (nothing matched, nothing kept) and a non-scalar threshold draw without error."""
    metadata = ["cat", "dog"]
    batch = sampled_batches(
        [("a", "no entry here", []), ("b", "nor here", [])], np.zeros(2, dtype=np.int64), 5, 0, batch_rows=10
    )[0]
    merged = merge_figures([batch_figures(batch)])
    stats = {"records_read": 2, "records_kept": 0, "threshold": {"en": 5, "de": 2}, "expected_kept": 0.0}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    (tmp_path / "entry_counts.json").write_text(json.dumps({"cat": 0, "dog": 0}))
    (tmp_path / "entry_counts_kept.json").write_text(
        json.dumps(kept_counts_document(metadata, kept_entry_counts(batch, 2)))
    )
    (tmp_path / "figures.json").write_text(
        json.dumps(figures_document(merged, metadata, [(1, 0.0)], {"threshold": None}))
    )
    from beam_pipeline.report import write_report

    written = write_report(str(tmp_path))
    assert "plots/head_tail_share.png" not in {Path(p).relative_to(tmp_path).as_posix() for p in written}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "no single threshold" in page and "nor here" in page
    assert ["threshold t", "en: 5, de: 2"] in parse(page).tables["run-figures"]


def test_inputs_orjson_refuses_still_load_and_invalid_json_is_one_line(tmp_path, run):
    from beam_pipeline.report.inputs import ReportError, load_inputs

    for name in ("entry_counts.json", "entry_counts_kept.json", "figures.json"):
        (tmp_path / name).write_bytes((run["dir"] / name).read_bytes())
    stats = dict(run["stats"], big=2**70)  # beyond 64 bits: orjson refuses it, the json module does not
    (tmp_path / "stats.json").write_text(json.dumps(stats).replace('"seed": 11', '"seed": NaN'))
    loaded = load_inputs(str(tmp_path))["stats"]
    assert loaded["big"] == 2**70 and loaded["seed"] != loaded["seed"]
    (tmp_path / "stats.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"stats\.json is not valid JSON"):
        load_inputs(str(tmp_path))


def test_metaclip2_counts_load_language_by_language(tmp_path, run):
    from beam_pipeline.report.inputs import ReportError, load_inputs

    (tmp_path / "figures.json").write_bytes((run["dir"] / "figures.json").read_bytes())
    (tmp_path / "stats.json").write_text(json.dumps({"threshold": 50, "thresholds_by_language": {"en": 50, "de": 7}}))
    before = {"en": {"cat": 80, "dog": 3}, "de": {"Hund": 9}, "fr": {"chat": 60}}
    after = {"en": {"cat": 49, "dog": 3}, "de": {"Hund": 7}, "fr": {"chat": 50}}
    (tmp_path / "entry_counts.json").write_text(json.dumps(before))
    (tmp_path / "entry_counts_kept.json").write_text(json.dumps(after))
    data = load_inputs(str(tmp_path))
    assert data["entries"] == ["en:cat", "en:dog", "de:Hund", "fr:chat"]
    assert data["counts"].tolist() == [80, 3, 9, 60] and data["kept_counts"].tolist() == [49, 3, 7, 50]
    assert data["entry_t"].tolist() == [50, 50, 7, 50]  # a language without its own t has English's
    for wrong in (
        {"en": {"dog": 3, "cat": 49}, "de": {"Hund": 7}, "fr": {"chat": 50}},
        {"en": {"cat": 49, "dog": 3}, "de": 7, "fr": {"chat": 50}},
        {"de": {"Hund": 7}, "en": {"cat": 49, "dog": 3}, "fr": {"chat": 50}},
    ):
        (tmp_path / "entry_counts_kept.json").write_text(json.dumps(wrong))
        with pytest.raises(ReportError, match="same entries, in the same order"):
            load_inputs(str(tmp_path))
