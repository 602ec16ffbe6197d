"""Real web alt-text (10k LAION captions) against the 500k-entry benchmark metadata.

Checks the pipeline's matches against the spec's brute-force oracle on a
random sample, and its counts against an independent second matcher.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from helpers import shared_file
from transforms.core.spacing import pad_entry, space_text

ORACLE_SAMPLE = 300


@pytest.fixture(scope="module")
def laion_run(tmp_path_factory):
    pool = shared_file("data", "laion400m_sample_10k.parquet")
    metadata_path = shared_file("bench", "metadata_500k.json.gz")
    out = tmp_path_factory.mktemp("laion") / "out"
    assert (
        curate.run(
            [
                "--input",
                str(pool),
                "--text_field",
                "TEXT",
                "--url_field",
                "URL",
                "--metadata",
                str(metadata_path),
                "--threshold",
                "100",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    entries = json.loads(gzip.decompress(metadata_path.read_bytes()))
    texts = pq.read_table(pool).column("TEXT").to_pylist()
    matches = {row["key"]: row["entry_ids"] for row in pq.read_table(out / "matches").to_pylist()}
    return entries, texts, matches, out


def _key(row: int) -> str:
    return f"laion400m_sample_10k.parquet:{row}"


def test_every_record_is_accounted_for(laion_run):
    _, texts, matches, out = laion_run
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_read"] == len(texts) == stats["records_accepted"] + stats["records_rejected"]
    assert len(matches) == stats["records_accepted"]
    assert stats["entries"] == 500_000


def test_sampled_records_equal_the_brute_force_oracle(laion_run):
    entries, texts, matches, _ = laion_run
    padded = [pad_entry(entry) for entry in entries]  # the spec's per-entry loop, padded once
    rows = random.Random(2024).sample([r for r in range(len(texts)) if _key(r) in matches], ORACLE_SAMPLE)
    for row in rows:
        spaced = space_text(texts[row])
        assert matches[_key(row)] == [i for i, p in enumerate(padded) if p in spaced], texts[row]


def first_token_counts(entries, texts) -> Counter:
    """A second matcher, independent of Aho-Corasick: entries indexed by their
    first space-separated token, each candidate checked at every space of the
    spaced caption with the padded-substring rule."""
    by_first_token = defaultdict(list)
    for entry_id, entry in enumerate(entries):
        by_first_token[entry.split(" ", 1)[0]].append((entry_id, entry + " "))
    counts = Counter()
    for text in texts:
        spaced = space_text(text)
        found = set()
        for start in (i + 1 for i, c in enumerate(spaced) if c == " "):
            end = spaced.find(" ", start)
            token = spaced[start:end] if end >= 0 else spaced[start:]
            for entry_id, tail in by_first_token.get(token, ()):
                if spaced.startswith(tail, start):
                    found.add(entry_id)
        counts.update(found)
    return counts


def test_entry_counts_equal_an_independent_implementation(laion_run):
    entries, texts, matches, out = laion_run
    accepted = [t for r, t in enumerate(texts) if _key(r) in matches]
    expected = first_token_counts(entries, accepted)
    counts = json.loads((out / "entry_counts.json").read_text())
    assert list(counts) == entries
    assert {entries[i]: c for i, c in expected.items()} == {e: c for e, c in counts.items() if c}
    assert sum(counts.values()) > 5 * len(accepted)  # real alt-text: several matches a caption
