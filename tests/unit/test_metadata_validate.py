"""`validate` on lists with every kind of problem, and the command line's exit codes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from beam_pipeline import metadata
from helpers import REPO
from transforms.metadata.checks import check_entries
from transforms.metadata.lists import (
    MetadataError,
    id_corrupting_problems,
    parse_metadata,
)

EVERY_PROBLEM = ["dog", "dog", 7, None, "", " cat", "3.5", "a\tb", "tab\t", "a .", "ok", "dog"]


def test_check_entries_finds_every_kind_of_problem():
    findings = {f.kind: f for f in check_entries(EVERY_PROBLEM)}
    assert set(findings) == {"non_string", "duplicate", "empty", "white_space", "never_matches"}

    assert findings["non_string"].severity == "error" and findings["non_string"].count == 2
    assert findings["non_string"].examples == ["id 2: 7 (int)", "id 3: None (NoneType)"]
    assert findings["duplicate"].severity == "error" and findings["duplicate"].count == 2
    assert findings["duplicate"].examples == ["'dog' at ids 0, 1, 11"]
    # The errors are worded by the very check that makes the curation refuse the file.
    assert [findings["non_string"].message, findings["duplicate"].message] == id_corrupting_problems(EVERY_PROBLEM)

    assert findings["empty"].severity == "warning" and findings["empty"].examples == ["id 4: ''"]
    assert findings["white_space"].examples == ["id 5: ' cat'", "id 8: 'tab\\t'"]
    # "a ." can match ("a." is spaced to "a ."); "3.5" and tabs never can.
    assert findings["never_matches"].examples == ["id 6: '3.5'", "id 7: 'a\\tb'", "id 8: 'tab\\t'"]
    assert check_entries(["dog", "hot dog", "a ."]) == []


def test_check_entries_limits_examples():
    findings = check_entries([f" {i}" for i in range(20)], max_examples=3)
    assert [(f.kind, f.count, len(f.examples)) for f in findings] == [("white_space", 20, 3)]


def _validate(path):
    process = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.metadata", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return process.returncode, process.stdout, process.stderr


def test_validate_command_exit_codes(tmp_path):
    clean = tmp_path / "clean.json.gz"
    clean.write_bytes(gzip.compress(json.dumps(["dog", "hot dog", "a ."]).encode()))
    code, out, err = _validate(clean)
    assert (code, err) == (0, "")
    assert "3 entries" in out and out.rstrip().endswith("OK: no problem found")

    warned = tmp_path / "warned.json"
    warned.write_text(json.dumps(["dog", "", " cat", "U.S."]))
    code, out, err = _validate(warned)
    assert (code, err) == (0, "")
    assert "warning: 1 empty entry (it matches" in out and "id 3: 'U.S.'" in out and "OK with warnings (3 kinds)" in out

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(EVERY_PROBLEM))
    code, out, err = _validate(broken)
    assert (code, err) == (1, "")
    with pytest.raises(MetadataError) as refusal:
        parse_metadata(broken.read_bytes(), str(broken))
    assert out.rstrip().endswith(f"INVALID: {refusal.value}")  # the curation's own message
    assert "error: 2 non-string entries" in out and "error: 2 duplicate entries" in out
    assert "warning: 3 entries that can never match" in out

    code, out, err = _validate(tmp_path / "missing.json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: cannot read") and "Traceback" not in err


@pytest.mark.parametrize(
    "content, words",
    [
        (b'["dog",', "not valid JSON"),
        (b'{"dog": 1}', "not a JSON dict"),
        (b"[]", "empty list"),
    ],
)
def test_validate_refuses_what_is_not_a_list_of_strings(tmp_path, capsys, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert metadata.run(["validate", str(path)]) == 1
    assert words in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["build", "--output", "m.json"], "at least one source"),
        (["build", "--wiki_bigrams", "b.txt", "--output", "m.json"], "needs --wiki_unigrams"),
        (["build", "--wiki_unigrams", "{tmp}/none.txt", "--output", "m.json"], "matches no file"),
        (["build", "--wiki_unigrams", "{tmp}/bad.txt", "--output", "{tmp}/m.json"], "bad.txt:2: expected `word count`"),
        (
            ["build", "--wiki_unigrams", "{tmp}/bad.txt", "--min_unigram_count", "-1", "--output", "m.json"],
            "invalid non-negative integer value",
        ),
        (["build", "--wiki_unigrams", "{tmp}/bad.txt", "--output", "{tmp}/no/such/dir/m.json"], "does not exist"),
        (["build", "--wordnet_dir", "{tmp}", "--output", "{tmp}/m.json"], "holds no WordNet database"),
        (["build", "--wordnet", "--output", "m.json", "--runner", "x"], "unrecognised arguments"),
        (["validate"], "required: FILE"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_commands_fail_with_one_line(tmp_path, capsys, argv, words):
    (tmp_path / "bad.txt").write_text("dog 1\ncat\n")
    assert metadata.run([arg.format(tmp=tmp_path) for arg in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and words in captured.err
    assert not (tmp_path / "m.json").exists()


def test_build_error_from_the_shell_has_no_traceback(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.metadata", "build", "--output", str(tmp_path / "m.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr.startswith("error: build needs at least one source") and process.stderr.count("\n") == 1


def test_a_list_checked_when_the_run_started_is_not_checked_again():
    import hashlib

    from transforms.metadata.lists import MetadataError, parse_metadata

    data = b'["dog", "dog"]'
    with pytest.raises(MetadataError, match="duplicate"):
        parse_metadata(data, "m.json")
    with pytest.raises(MetadataError, match="duplicate"):
        parse_metadata(data, "m.json", checked_sha256="0" * 64)  # another list's digest: checked
    assert parse_metadata(data, "m.json", checked_sha256=hashlib.sha256(data).hexdigest()).entries == ["dog", "dog"]


def test_build_says_why_a_source_added_no_entry(tmp_path, capsys):
    """None selected (below --min_pmi) is not 'all already in earlier sources' (issue 34, item 8)."""
    (tmp_path / "uni.txt").write_text("dog 100\ncat 100\nhot 100\n")
    (tmp_path / "bi.txt").write_text("hot dog 1\n")  # PMI log2(1 * 300 / 10000) < 30
    argv = ["build", "--wiki_unigrams", str(tmp_path / "uni.txt"), "--wiki_bigrams", str(tmp_path / "bi.txt")]
    assert metadata.run(argv + ["--output", str(tmp_path / "m.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["wiki_bigrams", "0", "entries", "(none", "passed", "the", "thresholds)"]
    # Every word a second time: the unigram source adds nothing new after the first.
    (tmp_path / "more.txt").write_text("dog 100\n")
    argv = ["build", "--wiki_unigrams", str(tmp_path / "more.txt"), "--wiki_titles", str(tmp_path / "t.txt")]
    (tmp_path / "t.txt").write_text("dog 100\n")
    assert metadata.run(argv + ["--output", str(tmp_path / "m2.json")]) == 0
    assert "wiki_titles            0 entries  (all already in earlier sources)" in capsys.readouterr().out
