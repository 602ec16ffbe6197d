"""The automaton cache runs no one else's code: a planted file is neither trusted nor run.

The attack (issue 29): a pickle whose __reduce__ calls os.system, planted under the
cache's own file name in a directory others may write. Two guards, each tested alone:
the directory and file checks (`unsafe_reason`, `_open_private`) and the unpickler that
makes only a matcher's classes (`_MatcherUnpickler`).
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from transforms.core.matching import MATCHERS, EntryMatcher
from transforms.runtime import automaton_cache
from transforms.runtime.automaton_cache import cache_path, cached_matcher, unsafe_reason

SHA = "b" * 64
ENTRIES = ["dog", "hot dog", "cat"]


class _Planted:
    """What an attacker writes: unpickling it runs a shell command."""

    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def _plant(directory: Path, mark: Path, matcher: str = "daachorse") -> str:
    path = cache_path(str(directory), SHA, matcher)
    Path(path).write_bytes(pickle.dumps(_Planted(mark)))
    return path


def _built(calls: list):
    def build():
        calls.append(1)
        return EntryMatcher(ENTRIES)

    return build


def test_a_planted_pickle_in_a_world_writable_directory_is_not_run(tmp_path):
    cache, mark = tmp_path / "cache", tmp_path / "PWNED"
    cache.mkdir()
    cache.chmod(0o777)
    _plant(cache, mark)
    calls: list = []
    matcher = cached_matcher(str(cache), SHA, _built(calls))
    assert not mark.exists(), "the planted pickle ran its command"
    assert calls == [1] and matcher.match("a hot dog") == [0, 1]


def test_a_planted_matcher_in_a_world_writable_directory_is_not_used(tmp_path):
    # A well-formed matcher of other entries passes the unpickler: only the directory
    # check keeps it from matching this run's captions against another list.
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    path = cache_path(str(cache), SHA)
    Path(path).write_bytes(pickle.dumps(EntryMatcher(["x", "y", "z"]), protocol=pickle.HIGHEST_PROTOCOL))
    os.chmod(path, 0o600)
    calls: list = []
    matcher = cached_matcher(str(cache), SHA, _built(calls), num_entries=len(ENTRIES))
    assert calls == [1] and matcher.match("a hot dog") == [0, 1]


@pytest.mark.parametrize("matcher", MATCHERS)
def test_the_unpickler_refuses_any_callable_but_a_matchers_even_in_a_private_directory(tmp_path, matcher):
    # The file passes the ownership checks (the user's own, 0600 in a 0700 directory):
    # only the unpickler stands between it and its command.
    cache, mark = tmp_path / "cache", tmp_path / "PWNED"
    cache.mkdir(mode=0o700)
    path = _plant(cache, mark, matcher)
    os.chmod(path, 0o600)
    calls: list = []

    def build():
        calls.append(1)
        return EntryMatcher(ENTRIES, matcher)

    cached_matcher(str(cache), SHA, build, matcher=matcher)
    assert not mark.exists(), "the planted pickle ran its command"
    assert calls == [1]
    # and the rebuilt file, a real matcher, loads through the same unpickler
    reloaded = cached_matcher(
        str(cache), SHA, lambda: calls.append(1) or EntryMatcher(ENTRIES, matcher), matcher=matcher
    )
    assert calls == [1] and reloaded.match("my cat") == [2]


def test_a_group_or_world_writable_file_in_a_private_directory_is_not_loaded(tmp_path):
    cache = tmp_path / "cache"
    calls: list = []
    cached_matcher(str(cache), SHA, _built(calls))  # a real matcher file
    path = cache_path(str(cache), SHA)
    for mode in (0o620, 0o602):
        os.chmod(path, mode)
        cached_matcher(str(cache), SHA, _built(calls))
        assert os.stat(path).st_mode & 0o777 == 0o600, "rebuilt and replaced by the user's own file"
    assert len(calls) == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's needs root")
def test_a_file_or_directory_of_another_user_is_refused(tmp_path):
    cache = tmp_path / "cache"
    calls: list = []
    cached_matcher(str(cache), SHA, _built(calls))
    path = cache_path(str(cache), SHA)
    os.chown(path, 65534, 65534)
    cached_matcher(str(cache), SHA, _built(calls))
    assert len(calls) == 2 and os.stat(path).st_uid == 0  # not loaded: rebuilt and replaced
    os.chown(cache, 65534, 65534)
    assert "owned by another user (uid 65534)" in unsafe_reason(str(cache))


def test_which_directories_are_refused(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert unsafe_reason(str(private)) is None
    assert unsafe_reason(str(private / "not" / "made" / "yet")) is None
    for mode in (0o777, 0o770, 0o702):
        private.chmod(mode)
        assert f"may be written by others (mode {mode:04o})" in unsafe_reason(str(private))
    private.chmod(0o700)
    # above it: a world-writable directory without the sticky bit lets anyone rename it away
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "open" / "cache").mkdir(mode=0o700)
    assert "above it may be written by anyone" in unsafe_reason(str(tmp_path / "open" / "cache"))
    assert "above it may be written by anyone" in unsafe_reason(str(tmp_path / "open" / "new"))
    (tmp_path / "open").chmod(0o1777)  # sticky, as /tmp
    assert unsafe_reason(str(tmp_path / "open" / "cache")) is None
    # through a symbolic link: the directory it leads to is judged
    os.symlink(tmp_path / "open", tmp_path / "link")
    (tmp_path / "open" / "cache").chmod(0o777)
    assert "may be written by others" in unsafe_reason(str(tmp_path / "link" / "cache"))
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in unsafe_reason(str(tmp_path / "file"))


def test_the_command_refuses_an_unsafe_cache_dir_before_any_work(tmp_path):
    # The attack of issue 29 on the command line: at d7e9713 the command ran `touch`
    # while loading the "cached automaton" and then finished normally.
    metadata = tmp_path / "metadata.json"
    metadata.write_text('["dog", "cat"]')
    (tmp_path / "pool.jsonl").write_text('{"text": "a dog", "key": "1"}\n')
    cache, mark = tmp_path / "cache", tmp_path / "PWNED"
    cache.mkdir()
    cache.chmod(0o777)
    from transforms.metadata.lists import parse_metadata

    digest = parse_metadata(metadata.read_bytes(), str(metadata)).sha256
    Path(cache_path(str(cache), digest)).write_bytes(pickle.dumps(_Planted(mark)))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "beam_pipeline.curate", "--input", str(tmp_path / "pool.jsonl")]
    command += ["--metadata", str(metadata), "--threshold", "5", "--output_dir", str(out), "--cache_dir", str(cache)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: --cache_dir {cache}: the directory {cache} may be written by others (mode 0777); the next run "
        "would load what another user put there. Use a directory only you can write (chmod 700), or --cache_dir none"
    ]
    assert not mark.exists() and not out.exists()


def test_a_matchers_pickle_names_only_the_allowed_globals():
    # The allow list is complete for both libraries (else every cached file would be rebuilt).
    for matcher in MATCHERS:
        data = pickle.dumps(EntryMatcher(ENTRIES, matcher, ["a hot dog"]), protocol=pickle.HIGHEST_PROTOCOL)
        loaded = automaton_cache._MatcherUnpickler(io.BytesIO(data)).load()
        assert loaded.match("a hot dog") == [0, 1]
