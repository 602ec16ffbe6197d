"""The WordNet stage: MetaCLIP's 86,654 entries on WordNet 3.0, built reproducibly.

Needs a WordNet database: Debian's wordnet-base (/usr/share/wordnet, installed
by scripts/install-system-deps.sh) or nltk's own wordnet data. Never downloads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, shared_file
from transforms.metadata import sources as ms


def _wordnet_or_skip() -> ms.WordNetLocation:
    try:
        return ms.locate_wordnet()
    except ms.SourceError as error:
        pytest.skip(f"no WordNet database here ({error})")


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The same build run twice, at once, in processes with different hash seeds."""
    _wordnet_or_skip()
    root = tmp_path_factory.mktemp("wordnet_build")
    (root / "unigrams.txt").write_text("dog 500\nquokka 150\nrare 3\n")
    (root / "titles.txt").write_text("Quokka_Island 90\nUser:Someone 900\n")
    runs = []
    for seed in ("1", "2"):
        out = root / f"run{seed}"
        out.mkdir()
        command = [
            sys.executable,
            "-m",
            "beam_pipeline.metadata",
            "build",
            "--wordnet",
            "--wiki_unigrams",
            str(root / "unigrams.txt"),
            "--wiki_titles",
            str(root / "titles.txt"),
            "--output",
            str(out / "metadata.json"),
        ]
        env = dict(os.environ, PYTHONHASHSEED=seed)
        runs.append(
            (
                out,
                subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            )
        )
    for _, process in runs:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "wrote" in stdout
    return [out for out, _ in runs]


def test_building_twice_gives_byte_identical_files(two_builds):
    first, second = two_builds
    for name in ("metadata.json", "metadata.sources.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_wordnet_stage_equals_metaclip_reference(two_builds):
    reference = json.loads(gzip.decompress(shared_file("bench", "metadata_wordnet30.json.gz").read_bytes()))
    entries = json.loads((two_builds[0] / "metadata.json").read_bytes())
    sidecar = json.loads((two_builds[0] / "metadata.sources.json").read_bytes())
    blocks = {block["source"]: block for block in sidecar["sources"]}
    if blocks["wordnet"]["wordnet_version"] != "3.0":
        pytest.skip(f"the reference is WordNet 3.0; this WordNet is {blocks['wordnet']['wordnet_version']}")

    wordnet_stage = entries[: blocks["wordnet"]["first_id"] + blocks["wordnet"]["num_entries"]]
    assert len(reference) == 86_654
    assert len(wordnet_stage) == 86_654
    assert set(wordnet_stage) == set(reference)
    assert entries[:100] == sorted(str(i) for i in range(100))  # every block in code-point order
    assert "et al" in wordnet_stage and "" not in wordnet_stage


def test_sidecar_names_the_source_of_every_entry(two_builds):
    entries = json.loads((two_builds[0] / "metadata.json").read_bytes())
    sidecar = json.loads((two_builds[0] / "metadata.sources.json").read_bytes())
    assert sidecar["num_entries"] == len(entries)
    assert sidecar["metadata_sha256"] == hashlib.sha256((two_builds[0] / "metadata.json").read_bytes()).hexdigest()
    assert [b["source"] for b in sidecar["sources"]] == ["numbers", "wordnet", "wiki_unigrams", "wiki_titles"]
    next_id = 0
    for block in sidecar["sources"]:
        assert block["first_id"] == next_id
        next_id += block["num_entries"]
    assert next_id == len(entries)
    blocks = {block["source"]: block for block in sidecar["sources"]}
    # "dog" is a WordNet head name, so it stays there; only new words join the unigram block.
    unigram_ids = range(blocks["wiki_unigrams"]["first_id"], next_id - blocks["wiki_titles"]["num_entries"])
    assert [entries[i] for i in unigram_ids] == ["quokka"]
    assert blocks["wiki_unigrams"]["already_in_earlier_source"] == 1
    assert entries[-1] == "Quokka Island"


def test_nltk_data_dir_is_read_when_nltk_has_wordnet(tmp_path, monkeypatch):
    """A user's nltk_data/corpora/wordnet is used as nltk itself would use it."""
    import nltk.data

    if not os.path.isfile(os.path.join(ms.DEBIAN_WORDNET_DIR, "data.noun")):
        pytest.skip(f"needs {ms.DEBIAN_WORDNET_DIR} (Debian's wordnet-base) to lay out a stand-in nltk_data")
    ms._prepare_nltk_dir(
        ms.DEBIAN_WORDNET_DIR, str(tmp_path)
    )  # nltk_data/corpora/wordnet, as nltk's downloader makes it
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    location = ms.locate_wordnet()
    assert location.kind == "nltk"
    with ms.open_wordnet(location) as reader:
        assert reader.get_version() == "3.0"
        assert ms.head_name(reader.synsets("et_al")[0].name()) == "et al"
        assert "frump" in {ms.head_name(s.name()) for s in reader.synsets("dog")}
