"""The machine-local automaton cache: hits skip the build, anything odd rebuilds."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time

import pytest

from transforms.core.matching import DAACHORSE, MATCHERS, PYAHOCORASICK, EntryMatcher
from transforms.runtime import automaton_cache
from transforms.runtime.automaton_cache import cache_path, cached_matcher

ENTRIES = ["dog", "hot dog", "cat", "golden retriever"]
TEXTS = ["a hot dog stand", "my cat and dog", "golden retriever puppy", "nothing here"]


def _builder(calls: list):
    def build():
        calls.append(1)
        return EntryMatcher(ENTRIES)

    return build


def _matches(matcher: EntryMatcher) -> list:
    return [matcher.match(text) for text in TEXTS]


def test_a_second_load_uses_the_cache_and_matches_the_same(tmp_path):
    calls: list = []
    built = cached_matcher(str(tmp_path), "a" * 64, _builder(calls), num_entries=len(ENTRIES))
    loaded = cached_matcher(str(tmp_path), "a" * 64, _builder(calls), num_entries=len(ENTRIES))
    assert len(calls) == 1
    assert _matches(loaded) == _matches(built) == [[0, 1], [0, 2], [3], []]
    assert os.path.exists(cache_path(str(tmp_path), "a" * 64))


def test_the_cache_directory_is_created_private(tmp_path):
    cached_matcher(str(tmp_path / "new"), "a" * 64, _builder([]))
    assert os.stat(tmp_path / "new").st_mode & 0o077 == 0


def test_other_metadata_gets_its_own_file(tmp_path):
    calls: list = []
    cached_matcher(str(tmp_path), "a" * 64, _builder(calls))
    cached_matcher(str(tmp_path), "b" * 64, _builder(calls))
    assert len(calls) == 2
    assert cache_path(str(tmp_path), "a" * 64) != cache_path(str(tmp_path), "b" * 64)


def test_the_key_changes_with_the_matching_code(tmp_path, monkeypatch):
    before = cache_path(str(tmp_path), "a" * 64)
    monkeypatch.setattr(automaton_cache, "_code_digest", lambda: "padding rules changed")
    assert cache_path(str(tmp_path), "a" * 64) != before


@pytest.mark.parametrize("content", [b"", b"not a pickle", pickle.dumps({"an": "other object"})])
def test_a_bad_cache_file_is_rebuilt_and_replaced(tmp_path, content):
    path = cache_path(str(tmp_path), "a" * 64)
    os.makedirs(tmp_path, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)
    calls: list = []
    matcher = cached_matcher(str(tmp_path), "a" * 64, _builder(calls))
    assert calls == [1] and _matches(matcher)[0] == [0, 1]
    cached_matcher(str(tmp_path), "a" * 64, _builder(calls))
    assert calls == [1]  # replaced by a good file


def test_a_matcher_of_another_size_is_rebuilt(tmp_path):
    cached_matcher(str(tmp_path), "a" * 64, lambda: EntryMatcher(["dog"]))
    calls: list = []
    matcher = cached_matcher(str(tmp_path), "a" * 64, _builder(calls), num_entries=len(ENTRIES))
    assert calls == [1] and matcher.num_entries == len(ENTRIES)


def test_no_cache_dir_builds_every_time(tmp_path):
    calls: list = []
    cached_matcher(None, "a" * 64, _builder(calls))
    cached_matcher(None, "a" * 64, _builder(calls))
    assert calls == [1, 1]


def test_an_unwritable_cache_still_gives_a_matcher(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    matcher = cached_matcher(str(blocker / "cache"), "a" * 64, _builder([]))
    assert _matches(matcher)[1] == [0, 2]


def _lock(path: str, pid: int, host: str = "") -> None:
    with open(path + ".lock", "w") as handle:
        handle.write(f"{host or socket.gethostname()} {pid}")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_builder_is_waited_for_not_duplicated(tmp_path):
    path = cache_path(str(tmp_path), "a" * 64)
    _lock(path, os.getpid())  # this process is alive: a builder at work

    def other_builder():
        time.sleep(0.3)
        cached_matcher(str(tmp_path / "elsewhere"), "a" * 64, _builder([]))
        os.replace(cache_path(str(tmp_path / "elsewhere"), "a" * 64), path)
        os.unlink(path + ".lock")

    thread = threading.Thread(target=other_builder)
    thread.start()
    calls: list = []
    matcher = cached_matcher(str(tmp_path), "a" * 64, _builder(calls))
    thread.join()
    assert calls == [] and _matches(matcher) == [[0, 1], [0, 2], [3], []]


def test_a_builder_that_takes_too_long_is_not_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(automaton_cache, "WAIT_SECONDS", 0.2)
    path = cache_path(str(tmp_path), "a" * 64)
    _lock(path, os.getpid())
    calls: list = []
    matcher = cached_matcher(str(tmp_path), "a" * 64, _builder(calls))
    assert calls == [1] and _matches(matcher)[0] == [0, 1]
    assert not os.path.exists(path) and os.path.exists(path + ".lock")  # left to the other builder


@pytest.mark.parametrize("how", ["dead process", "stale"])
def test_a_dead_builders_lock_is_taken_over(tmp_path, how):
    path = cache_path(str(tmp_path), "a" * 64)
    if how == "dead process":
        _lock(path, _dead_pid())
    else:
        _lock(path, os.getpid(), host="another-host")
        os.utime(path + ".lock", (0, 0))  # a builder that died long ago
    calls: list = []
    cached_matcher(str(tmp_path), "a" * 64, _builder(calls))
    assert calls == [1] and os.path.exists(path) and not os.path.exists(path + ".lock")


def test_pyahocorasick_and_daachorse_matchers_are_cached_apart(tmp_path):
    built = {}
    for name in MATCHERS:
        built[name] = cached_matcher(
            str(tmp_path), "a" * 64, lambda name=name: EntryMatcher(ENTRIES, name), matcher=name
        )
    assert cache_path(str(tmp_path), "a" * 64, DAACHORSE) != cache_path(str(tmp_path), "a" * 64, PYAHOCORASICK)
    for name in MATCHERS:
        loaded = cached_matcher(str(tmp_path), "a" * 64, _builder([]), matcher=name)
        assert loaded.matcher == name and _matches(loaded) == _matches(built[name]) == [[0, 1], [0, 2], [3], []]


def test_only_the_newest_files_are_kept(tmp_path):
    for i in range(automaton_cache.KEEP + 2):
        cached_matcher(str(tmp_path), f"{i:064d}", _builder([]))
        os.utime(cache_path(str(tmp_path), f"{i:064d}"), (1000 + i, 1000 + i))
    kept = sorted(p.name for p in tmp_path.glob("automaton-*.pickle"))
    newest = sorted(
        os.path.basename(cache_path(str(tmp_path), f"{i:064d}")) for i in range(2, automaton_cache.KEEP + 2)
    )
    assert kept == newest


def test_default_cache_dir_follows_the_environment(monkeypatch):
    monkeypatch.setenv("BALANCEBEAM_CACHE_DIR", "/somewhere/cache")
    assert automaton_cache.default_cache_dir() == "/somewhere/cache"
    monkeypatch.delenv("BALANCEBEAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert automaton_cache.default_cache_dir() == "/xdg/balancebeam"
