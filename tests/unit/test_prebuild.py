"""The first run's automaton build beside the launcher: it fills the cache the workers read, or does nothing."""

from __future__ import annotations

import hashlib
import json
import os

from transforms.core.matching import DAACHORSE, PYAHOCORASICK
from transforms.runtime import automaton_cache, prebuild

ENTRIES = ["dog", "hot dog", "cat"]


def _metadata(tmp_path, entries=ENTRIES):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_child_builds_the_matcher_the_workers_then_load(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    monkeypatch.chdir(tmp_path)  # a user curating from their own folder, not the repository
    child = prebuild.start(cache, path, sha, DAACHORSE)
    assert child is not None and child.wait(timeout=120) == 0
    assert os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE))
    calls = []
    matcher = automaton_cache.cached_matcher(cache, sha, lambda: calls.append(1), num_entries=3, matcher=DAACHORSE)
    assert calls == [] and matcher.match("a hot dog and a cat") == [0, 1, 2]
    assert not os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE) + ".lock")


def test_nothing_to_start_for_a_cached_matcher_or_a_remote_list(tmp_path):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    assert prebuild.main([cache, path, sha, PYAHOCORASICK]) == 0
    assert prebuild.start(cache, path, sha, PYAHOCORASICK) is None  # already there
    assert prebuild.start(cache, "gs://bucket/metadata.json", sha, DAACHORSE) is None


def test_a_list_changed_since_the_checks_builds_nothing(tmp_path):
    path, sha = _metadata(tmp_path)
    _metadata(tmp_path, ENTRIES + ["bird"])  # the file changes after the run's checks
    cache = str(tmp_path / "cache")
    assert prebuild.main([cache, path, sha, DAACHORSE]) == 0
    assert not os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE))
    assert os.listdir(cache) == []  # and no lock left behind


def test_a_builder_at_work_is_left_alone(tmp_path):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    target = automaton_cache.cache_path(cache, sha, DAACHORSE)
    lock = automaton_cache.take_lock(target)  # this (live) process holds it
    assert prebuild.main([cache, path, sha, DAACHORSE]) == 0
    assert not os.path.exists(target) and os.path.exists(lock)
