"""The Beam counting job: text lines in, unigram and bigram counts out."""

from __future__ import annotations

import json

import pytest
from apache_beam import Create
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline import metadata
from helpers import beam_test_pipeline
from transforms.beam.word_counts import CountWords

LINES = [
    "the cat sat on the mat.",
    "the cat, the dog!",
    "  New York  is big ",
    "",
]
UNIGRAMS = [
    ("the", 4),
    ("cat", 2),
    ("sat", 1),
    ("on", 1),
    ("mat", 1),
    (".", 1),
    (",", 1),
    ("dog", 1),
    ("!", 1),
    ("New", 1),
    ("York", 1),
    ("is", 1),
    ("big", 1),
]
# Adjacent words of one line: "mat ." ends line 1, so no bigram joins it to line 2's "the".
BIGRAMS = [
    (("the", "cat"), 2),
    (("cat", "sat"), 1),
    (("sat", "on"), 1),
    (("on", "the"), 1),
    (("the", "mat"), 1),
    (("mat", "."), 1),
    (("cat", ","), 1),
    ((",", "the"), 1),
    (("the", "dog"), 1),
    (("dog", "!"), 1),
    (("New", "York"), 1),
    (("York", "is"), 1),
    (("is", "big"), 1),
]


@pytest.mark.parametrize("max_keys", [200_000, 3])  # 3: flushes inside bundles too
def test_count_words_counts_unigrams_and_bigrams(max_keys):
    with beam_test_pipeline() as pipeline:
        counts = pipeline | Create(LINES * 2) | CountWords(max_keys_per_bundle=max_keys)
        assert_that(counts["unigrams"], equal_to([(w, 2 * n) for w, n in UNIGRAMS]), label="unigrams")
        assert_that(counts["bigrams"], equal_to([(b, 2 * n) for b, n in BIGRAMS]), label="bigrams")


def test_count_words_drops_rare_bigrams_only():
    with beam_test_pipeline() as pipeline:
        counts = pipeline | Create(LINES) | CountWords(min_bigram_count=2)
        assert_that(counts["unigrams"], equal_to(UNIGRAMS), label="unigrams")
        assert_that(counts["bigrams"], equal_to([(("the", "cat"), 2)]), label="bigrams")


def _count_files(directory, name):
    return sorted(line for path in directory.glob(f"{name}-*.txt") for line in path.read_text().splitlines())


def test_count_command_writes_what_build_reads(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n".join(LINES[:2]) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(LINES[2:]) + "\n")
    out = tmp_path / "counts"
    argv = ["count", "--input", str(tmp_path / "a.txt"), "--input", str(tmp_path / "b.txt"), "--output_dir", str(out)]
    assert metadata.run(argv) == 0
    assert _count_files(out, "unigrams") == sorted(f"{w} {n}" for w, n in UNIGRAMS)
    assert _count_files(out, "bigrams") == sorted(f"{a} {b} {n}" for (a, b), n in BIGRAMS)

    # Old shards would be globbed together with new ones: refused unless --overwrite.
    capsys.readouterr()
    assert metadata.run(argv) == 2
    assert "already holds count files" in capsys.readouterr().err
    assert metadata.run(argv + ["--overwrite", "--num_shards", "2"]) == 0
    assert len(list(out.glob("unigrams-*.txt"))) == 2
    assert _count_files(out, "unigrams") == sorted(f"{w} {n}" for w, n in UNIGRAMS)

    output = tmp_path / "metadata.json"
    assert (
        metadata.run(
            [
                "build",
                "--wiki_unigrams",
                str(out / "unigrams-*.txt"),
                "--min_unigram_count",
                "2",
                "--wiki_bigrams",
                str(out / "bigrams-*.txt"),
                "--min_pmi",
                "3",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    # N = 17 words: PMI("New York") = log2(17) > 3 is kept; PMI("the cat") = log2(17 * 2 / 8) < 3 is not.
    # Unigrams: "the" (4) and "cat" (2); the bigrams of words seen once have PMI log2(17) too.
    entries = json.loads(output.read_text())
    assert entries[:2] == ["cat", "the"]
    assert "New York" in entries and "is big" in entries and "the cat" not in entries
    sidecar = json.loads((tmp_path / "metadata.sources.json").read_text())
    assert [b["source"] for b in sidecar["sources"]] == ["wiki_unigrams", "wiki_bigrams"]
    assert sidecar["sources"][1]["total_words"] == 17


def test_count_command_rejects_unknown_options(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x\n")
    argv = ["count", "--input", str(tmp_path / "a.txt"), "--output_dir", str(tmp_path / "o"), "--min_bigram_cont", "3"]
    assert metadata.run(argv) == 2
    assert capsys.readouterr().err.strip() == "error: unrecognised option --min_bigram_cont"
    assert metadata.run(["count", "--input", str(tmp_path / "none*.txt"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "matches no file" in capsys.readouterr().err
