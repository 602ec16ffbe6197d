"""MetaCLIP's metadata sources on hand-made inputs with known answers."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from helpers import REPO
from transforms.metadata import sources as ms
from transforms.metadata.sources import (
    SourceEntries,
    SourceError,
    assemble,
    head_name,
    read_counts,
    read_title_views,
    select_bigrams,
    select_titles,
    select_unigrams,
    tokenize,
)


def test_head_name_cuts_at_the_first_dot():
    assert head_name("et_al..r.01") == "et al"
    assert head_name("dog.n.01") == "dog"
    assert head_name("new_york.n.01") == "new york"
    assert head_name(".22_caliber.a.01") == ""  # dropped later as empty, as MetaCLIP does


def test_tokenize_uses_the_caption_spacing():
    assert tokenize("  the dog, the cat.\tNew York!") == ["the", "dog", ",", "the", "cat", ".", "New", "York", "!"]
    assert tokenize("dog-friendly (dog) U.S.") == ["dog-friendly", "(dog)", "U", ".", "S", "."]


def test_unigram_lines_are_summed_and_thresholded_inclusively():
    lines = ["dog 60\n", "cat\t99\n", "\n", "dog 40\r\n", "the 1000\n", "rare 1\n"]
    counts = read_counts(lines, 1, "unigrams.txt")
    assert counts == {"dog": 100, "cat": 99, "the": 1000, "rare": 1}
    assert select_unigrams(counts) == {"dog", "the"}  # default: count >= 100
    assert select_unigrams(counts, min_count=1) == {"dog", "cat", "the", "rare"}


@pytest.mark.parametrize("line", ["dog\n", "dog x\n", "dog -3\n", "a b 3\n", "dog ²\n", "dog 1.5\n"])
def test_malformed_count_lines_name_the_file_and_line(line):
    with pytest.raises(SourceError, match=r"^unigrams\.txt:2: expected `word count`"):
        read_counts(["ok 1\n", line], 1, "unigrams.txt")


# N = 1024 words in all, so every PMI below is an exact power of two.
WORDS = {"new": 32, "york": 32, "the": 512, "cat": 64, "sat": 64, "zzz": 320}
BIGRAMS = [
    "new york 32\n",  # log2(32 * 1024 / (32 * 32)) = 5
    "the cat 16\n",  # log2(16 * 1024 / (512 * 64)) = -1
    "cat sat 8\n",  # log2(8 * 1024 / (64 * 64)) = 1
    "new zzz 1\n",  # log2(1024 / (32 * 320)) < 0
    "unseen word 50\n",  # a word missing from the unigram counts: left out, as in MetaCLIP
]


def test_bigram_pmi_matches_the_hand_computed_values():
    assert sum(WORDS.values()) == 1024
    bigrams = read_counts(BIGRAMS, 2, "bigrams.txt")
    assert bigrams[("new", "york")] == 32
    assert math.log2(8 * 1024 / (64 * 64)) == 1.0

    selection = select_bigrams(WORDS, bigrams, min_pmi=1.0)
    assert selection.entries == {"new york", "cat sat"}  # PMI 1 is kept: >= is inclusive
    assert (selection.scored, selection.unknown_word, selection.below_min_count) == (4, 1, 0)
    assert select_bigrams(WORDS, bigrams, min_pmi=1.5).entries == {"new york"}
    assert select_bigrams(WORDS, bigrams, min_pmi=-1.0).entries == {"new york", "cat sat", "the cat"}
    assert select_bigrams(WORDS, bigrams).entries == set()  # default 30: unreachable with N = 1024


def test_bigram_min_count_filters_before_scoring():
    bigrams = read_counts(BIGRAMS, 2, "bigrams.txt")
    selection = select_bigrams(WORDS, bigrams, min_pmi=-10.0, min_bigram_count=10)
    assert selection.entries == {"new york", "the cat"}
    assert (selection.scored, selection.below_min_count) == (2, 2)


def test_titles_add_up_views_replace_underscores_and_drop_namespaces():
    lines = [
        "New_York_City 50\n",
        "New_York_City 20\n",  # 70 in all: kept
        "Talk:Foo 1000\n",  # a namespace: dropped
        "Foo 69\n",
        "Bar 70\n",
        "Two words 100\n",  # the last field is the views, the rest is the title
        "_Padded_ 80\n",
    ]
    views = read_title_views(lines, "titles.txt")
    assert views["New York City"] == 70 and views["Two words"] == 100 and views["Padded"] == 80
    assert select_titles(views) == {"New York City", "Bar", "Two words", "Padded"}
    assert select_titles(views, min_views=71) == {"Two words", "Padded"}
    with pytest.raises(SourceError, match=r"^titles\.txt:1: expected `title views`"):
        read_title_views(["Lonely\n"], "titles.txt")


def test_assemble_orders_by_source_then_code_point_and_keeps_first_source():
    entries, blocks = assemble(
        [
            SourceEntries("numbers", set(ms.NUMBERS[:3])),
            SourceEntries("wordnet", {"dog", "cat", "", "1", "Zebra"}),
            SourceEntries("wiki_unigrams", {"dog", "é", ",", "apple"}, {"min_count": 100}),
        ]
    )
    assert entries == ["0", "1", "2", "Zebra", "cat", "dog", "apple", "é"]
    assert [(b["source"], b["first_id"], b["num_entries"]) for b in blocks] == [
        ("numbers", 0, 3),
        ("wordnet", 3, 3),
        ("wiki_unigrams", 6, 2),
    ]
    assert blocks[1]["dropped_empty_or_punctuation"] == 1 and blocks[1]["already_in_earlier_source"] == 1
    assert blocks[2]["dropped_empty_or_punctuation"] == 1 and blocks[2]["already_in_earlier_source"] == 1
    assert blocks[2]["min_count"] == 100


def test_assemble_does_not_depend_on_hash_seeds():
    """Set iteration order changes with PYTHONHASHSEED; the list must not."""
    code = (
        "from transforms.metadata.sources import SourceEntries, assemble\n"
        "print(assemble([SourceEntries('w', {f'w{i}' for i in range(300)})])[0])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=dict(os.environ, PYTHONHASHSEED=seed),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


def test_locate_wordnet_prefers_the_given_dir_then_nltk_then_debian(tmp_path, monkeypatch):
    import nltk.data

    database = tmp_path / "dict"
    database.mkdir()
    (database / "data.noun").write_text("")
    nltk_root = tmp_path / "nltk_data"
    monkeypatch.setattr(nltk.data, "path", [str(nltk_root)])
    monkeypatch.setattr(ms, "DEBIAN_WORDNET_DIR", str(database))

    assert ms.locate_wordnet(str(database)) == ms.WordNetLocation("directory", str(database))
    assert ms.locate_wordnet() == ms.WordNetLocation("directory", str(database))  # the Debian place
    (nltk_root / "corpora" / "wordnet").mkdir(parents=True)
    assert ms.locate_wordnet().kind == "nltk"
    with pytest.raises(SourceError, match="holds no WordNet database"):
        ms.locate_wordnet(str(tmp_path / "elsewhere"))


def test_locate_wordnet_without_any_says_how_to_get_it(tmp_path, monkeypatch):
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(ms, "DEBIAN_WORDNET_DIR", str(tmp_path / "missing"))
    with pytest.raises(SourceError) as error:
        ms.locate_wordnet()
    message = str(error.value)
    assert "\n" not in message and "apt-get install wordnet-base" in message and "--wordnet_dir" in message
